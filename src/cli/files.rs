//! The few files the command line itself reads and writes: small inputs (key files,
//! the config file), read with a size bound and only when they are regular files, and
//! reports, written so that they are either whole or absent.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sealpipe::escape;

/// The largest config file read (a job file is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads all of `path` into `buf`, refusing anything but a regular file (a symlink to
/// one is fine: Kubernetes mounts secrets that way) and anything over `max` bytes.
///
/// The open is non-blocking, so a FIFO cannot hang us before the check; the type is
/// then taken from the open descriptor, not the name, so nothing can be swapped in
/// between; and at most `max + 1` bytes are read, so `/dev/zero` or a huge file costs
/// nothing. `buf` gets its whole capacity up front and never reallocates, so a secret
/// read into a zeroizing buffer leaves no stray copy behind.
pub fn read_small_file(path: &Path, max: u64, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let shown = escape::path(path);
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options
        .open(path)
        .with_context(|| format!("cannot open {shown}"))?;
    let kind = file
        .metadata()
        .with_context(|| format!("cannot stat {shown}"))?
        .file_type();
    if !kind.is_file() {
        bail!("{shown} is {}, not a regular file", describe(&kind));
    }
    // `max` is a small constant, so the capacity is allocatable.
    let capacity = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
    buf.clear();
    buf.reserve_exact(capacity);
    file.take(max.saturating_add(1))
        .read_to_end(buf)
        .with_context(|| format!("cannot read {shown}"))?;
    if buf.len() as u64 > max {
        bail!("{shown} is larger than {max} bytes");
    }
    Ok(())
}

fn describe(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// A report file that appears whole or not at all: it is written to a temporary file
/// in the destination's directory, created when the job starts (so an unwritable
/// place is found before any object is processed), and renamed over the destination
/// when done. Dropped without [`ReportFile::commit`], the temporary file is removed.
///
/// A destination that exists and is not a regular file (`/dev/stdout`, a FIFO, a
/// symbolic link) is written through, never renamed over: a rename would replace the
/// node itself, and `--report /dev/full` once turned that device into a JSON file.
pub struct ReportFile {
    path: PathBuf,
    target: ReportTarget,
}

enum ReportTarget {
    /// A regular file (or none yet): staged and renamed into place, as outputs are
    /// (a killed run's staged report is cleaned up like any partial output).
    Staged(sealpipe::store::StagedFile),
    /// Something else that exists, opened for writing up front.
    Through(File),
}

impl ReportFile {
    /// Checks that a report can be written at `path` and reserves its temporary file
    /// (or opens the special file it names).
    pub fn prepare(path: &Path) -> anyhow::Result<Self> {
        let shown = escape::path(path);
        if path.is_dir() {
            bail!("report {shown} is a directory; give a file name");
        }
        let existing = std::fs::symlink_metadata(path).ok();
        if existing.is_some_and(|m| !m.is_file()) {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .with_context(|| format!("cannot write report {shown}"))?;
            return Ok(Self {
                path: path.to_path_buf(),
                target: ReportTarget::Through(file),
            });
        }
        parent_dir(path).with_context(|| format!("cannot write report {shown}"))?;
        let staged = sealpipe::store::StagedFile::create(path, sealpipe::store::output_mode(None))
            .with_context(|| format!("cannot write report {shown}"))?;
        Ok(Self {
            path: path.to_path_buf(),
            target: ReportTarget::Staged(staged),
        })
    }

    /// Where the report goes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` and moves it into place.
    pub fn commit(self, value: &serde_json::Value) -> anyhow::Result<()> {
        let text = super::json::to_string_pretty(value)?;
        self.commit_text(&text)
    }

    /// Writes `text` and moves it into place.
    pub fn commit_text(self, text: &str) -> anyhow::Result<()> {
        let shown = escape::path(&self.path);
        match self.target {
            ReportTarget::Through(mut file) => file
                .write_all(text.as_bytes())
                .and_then(|()| file.flush())
                .with_context(|| format!("cannot write report {shown}")),
            ReportTarget::Staged(mut staged) => {
                let file = staged.file();
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
                    .and_then(|()| staged.commit())
                    .with_context(|| format!("cannot write report {shown}"))
            }
        }
    }
}

/// Creates the completion report (a CSV the library appends a line to per object).
/// The `File` itself is returned, unbuffered: the library flushes each line, so the
/// file holds only whole lines whenever the process stops.
pub fn create_completion_report(path: &Path) -> anyhow::Result<File> {
    let shown = escape::path(path);
    parent_dir(path).with_context(|| format!("cannot create completion report {shown}"))?;
    File::create(path).with_context(|| format!("cannot create completion report {shown}"))
}

/// The directory `path` goes in, created if missing.
fn parent_dir(path: &Path) -> anyhow::Result<PathBuf> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => {
            if parent.exists() && !parent.is_dir() {
                bail!("{} is not a directory", escape::path(parent));
            }
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory {}", escape::path(parent)))?;
            Ok(parent.to_path_buf())
        }
        None => Ok(PathBuf::from(".")),
    }
}
