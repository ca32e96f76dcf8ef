//! Local files: listing a source tree as it is walked, reading files, and writing
//! outputs that appear only when whole.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::{ListItem, Listed, ObjectId, ObjectMeta, ObjectSink, SourceObject};

/// Lists `source` (a single file, or every regular file below a directory, in sorted
/// order), handing each entry to `emit` as it is found. Entries that are not regular
/// files (symlinks, sockets, devices) are reported as skipped: never followed.
pub fn list_local(
    source: &Path,
    mut emit: impl FnMut(ListItem) -> ControlFlow<()>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(source)?;
    if meta.is_file() {
        let name = source.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "source has no file name")
        })?;
        let _ = emit(ListItem::Object(listed(source, name.as_ref(), &meta)?));
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is neither a file nor a directory", source.display()),
        ));
    }
    for entry in walkdir::WalkDir::new(source).sort_by_file_name() {
        let entry = entry.map_err(io::Error::other)?;
        let ft = entry.file_type();
        if ft.is_dir() {
            continue;
        }
        let id = ObjectId::Local(entry.path().to_path_buf());
        let item = if !ft.is_file() {
            ListItem::Skipped {
                id,
                reason: "not a regular file (not followed)".into(),
            }
        } else {
            let relative = entry
                .path()
                .strip_prefix(source)
                .expect("walkdir yields paths below its root");
            let meta = entry.metadata().map_err(io::Error::other)?;
            match listed(entry.path(), relative, &meta) {
                Ok(l) => ListItem::Object(l),
                Err(e) => ListItem::Skipped {
                    id,
                    reason: e.to_string(),
                },
            }
        };
        if emit(item).is_break() {
            break;
        }
    }
    Ok(())
}

fn listed(path: &Path, relative: &Path, meta: &fs::Metadata) -> io::Result<Listed> {
    // Destinations may be S3 keys, which are UTF-8, `/`-separated.
    let relative = relative
        .to_str()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "file name is not valid UTF-8 (cannot name an object after it)",
            )
        })?
        .replace(std::path::MAIN_SEPARATOR, "/");
    Ok(Listed {
        id: ObjectId::Local(path.to_path_buf()),
        relative,
        size: Some(meta.len()),
        etag: Some(fingerprint(meta)),
    })
}

/// Local files have no ETag; size and modification time stand in for one, so a re-run
/// recognises outputs made from the same file.
fn fingerprint(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("local-{}-{mtime}", meta.len())
}

/// Opens a file to read.
pub fn open_local(path: &Path) -> io::Result<SourceObject> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(SourceObject {
        size: meta.len(),
        etag: fingerprint(&meta),
        version: None,
        meta: ObjectMeta {
            mode: unix_mode(&meta),
            ..Default::default()
        },
        head: bytes::Bytes::new(),
        reader: Box::new(BufReader::with_capacity(256 * 1024, file)),
    })
}

#[cfg(unix)]
fn unix_mode(meta: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode())
}

#[cfg(not(unix))]
fn unix_mode(_: &fs::Metadata) -> Option<u32> {
    None
}

/// An output being written under a temporary name in its destination directory. It
/// replaces the destination only on [`commit`](Self::commit); dropped, it is removed, so
/// a failure never leaves partial output behind.
pub struct StagedFile {
    temp: tempfile::NamedTempFile,
    destination: PathBuf,
}

impl StagedFile {
    /// Creates the temporary file (and missing parent directories).
    ///
    /// An existing destination must be a regular file: renaming over a device, pipe,
    /// socket or symbolic link would replace that node itself (think `/dev/null`).
    pub fn create(destination: &Path) -> io::Result<Self> {
        if let Ok(meta) = fs::symlink_metadata(destination)
            && !meta.is_file()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "destination {} exists and is not a regular file; sealpipe replaces \
                     only regular files",
                    destination.display()
                ),
            ));
        }
        let parent = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::create_dir_all(parent)?;
        let temp = tempfile::Builder::new()
            .prefix(".sealpipe-")
            .suffix(".partial")
            .tempfile_in(parent)?;
        Ok(Self {
            temp,
            destination: destination.to_path_buf(),
        })
    }

    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Gives the output the permission bits `mode` and moves it to its final name
    /// atomically.
    pub fn commit(self, mode: Option<u32>) -> io::Result<()> {
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            self.temp
                .as_file()
                .set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        self.temp
            .persist(&self.destination)
            .map(drop)
            .map_err(|e| e.error)
    }
}

/// A local destination file, written through a buffer and committed atomically.
pub struct LocalSink {
    staged: StagedFile,
    out: BufWriter<File>,
    mode: Option<u32>,
}

impl LocalSink {
    /// Starts the output for `destination`; it gets the permission bits `mode`.
    pub fn create(destination: &Path, mode: Option<u32>) -> io::Result<Self> {
        let mut staged = StagedFile::create(destination)?;
        let out = BufWriter::with_capacity(256 * 1024, staged.file().try_clone()?);
        Ok(Self { staged, out, mode })
    }
}

impl Write for LocalSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ObjectSink for LocalSink {
    fn commit(mut self: Box<Self>) -> Result<u64, crate::Error> {
        self.out.flush()?;
        let size = self.staged.file().metadata()?.len();
        self.staged.commit(self.mode)?;
        Ok(size)
    }
}
