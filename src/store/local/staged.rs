//! Outputs written where no one sees them, given their destination's name only when
//! whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{PARTIAL_SUFFIX, own_prefix};

/// An output being written beside its destination. It replaces the destination only on
/// [`commit`](Self::commit); dropped, it is gone, so a failure never leaves partial
/// output behind.
///
/// On Linux it is an unnamed file (`O_TMPFILE`) in the destination's directory: until
/// it is linked under the destination's name it is in no directory at all, so a
/// crash, even `kill -9` or a power cut, leaves nothing behind (the file system frees
/// it), and creating it changes no directory. Where the file system has no unnamed
/// files (some FUSE and network ones), or elsewhere, it is a temporary name instead,
/// locked by its writer while it exists (see [`remove_stale_partials`]).
///
/// [`remove_stale_partials`]: super::remove_stale_partials
pub struct StagedFile {
    staged: Staged,
    destination: PathBuf,
    /// The permission bits the output gets on commit.
    mode: u32,
}

enum Staged {
    /// In no directory yet, and so readable by no one else: it has its final mode
    /// from the start (one `fchmod` fewer per output).
    Unnamed(File),
    /// Under a temporary, locked name, mode 0600 until committed.
    Named(tempfile::NamedTempFile),
}

impl StagedFile {
    /// Creates the file to write (and missing parent directories); on commit it gets
    /// the permission bits `mode` (already filtered by the umask, as
    /// [`output_mode`](super::output_mode) does).
    ///
    /// An existing destination must be a regular file: renaming over a device, pipe,
    /// socket or symbolic link would replace that node itself (think `/dev/null`). The
    /// commit checks, when the name turns out to be taken: most destinations do not
    /// exist, and looking first would cost a call per output.
    pub fn create(destination: &Path, mode: u32) -> io::Result<Self> {
        Self::create_as(destination, mode, true)
    }

    /// Like [`create`](Self::create), always under a temporary name.
    pub fn create_named(destination: &Path, mode: u32) -> io::Result<Self> {
        Self::create_as(destination, mode, false)
    }

    fn create_as(destination: &Path, mode: u32, unnamed: bool) -> io::Result<Self> {
        if !unnamed {
            // A rename replaces whatever has the name: look before writing anything.
            regular_or_absent(destination, None)?;
        }
        let parent = parent_of(destination);
        let mut created_parent = false;
        loop {
            match try_create(parent, mode, unnamed) {
                Ok(Some(staged)) => {
                    return Ok(Self {
                        staged,
                        destination: destination.to_path_buf(),
                        mode,
                    });
                }
                // Removed by a cleaner before it was locked: make another.
                Ok(None) => {}
                // Most outputs go to directories that exist (earlier outputs made
                // them): looking first would cost a call per output.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !created_parent => {
                    fs::create_dir_all(parent).map_err(|e| in_directory(parent, e))?;
                    created_parent = true;
                }
                Err(e) => return Err(in_directory(parent, e)),
            }
        }
    }

    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        match &mut self.staged {
            Staged::Unnamed(file) => file,
            Staged::Named(temp) => temp.as_file_mut(),
        }
    }

    /// Gives the output its permission bits and moves it to its final name atomically.
    pub fn commit(self) -> io::Result<()> {
        self.commit_sparing(None)
    }

    /// Like [`commit`](Self::commit), but refuses ([`WouldReplaceSource`]) to replace
    /// the file `source` is, under whatever name (a hard link, a bind mount). Checked
    /// only when the destination's name turns out to be taken, so a new output costs
    /// no look at all, and checked last, as near the replacement as it can be.
    pub fn commit_sparing(self, source: Option<&Path>) -> io::Result<()> {
        let replaceable = |destination: &Path| regular_or_absent(destination, source);
        match self.staged {
            Staged::Named(temp) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    temp.as_file()
                        .set_permissions(fs::Permissions::from_mode(self.mode))?;
                }
                replaceable(&self.destination)?;
                temp.persist(&self.destination)
                    .map(drop)
                    .map_err(|e| e.error)
            }
            Staged::Unnamed(file) => link_unnamed(file, &self.destination, replaceable),
        }
    }
}

/// An output that would have replaced its own source.
#[derive(Debug, thiserror::Error)]
#[error(
    "its output would replace the source itself; nothing was written (only --in-place \
     replaces sources, and only on S3)"
)]
pub struct WouldReplaceSource;

/// Fails unless `destination` is a regular file other than `source`, or does not exist.
fn regular_or_absent(destination: &Path, source: Option<&Path>) -> io::Result<()> {
    match fs::symlink_metadata(destination) {
        Ok(_) if source.is_some_and(|s| super::same_file(s, destination)) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            WouldReplaceSource,
        )),
        Ok(meta) if !meta.is_file() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "destination {} exists and is not a regular file; sealpipe replaces only \
                 regular files",
                crate::escape::path(destination)
            ),
        )),
        _ => Ok(()),
    }
}

/// `e`, saying that the output could not be created in `directory`: the error alone
/// names neither, and the object it fails is named by its source.
fn in_directory(directory: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cannot create an output in {}: {e}",
            crate::escape::path(directory)
        ),
    )
}

fn parent_of(destination: &Path) -> &Path {
    match destination.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A file to write in `parent`: unnamed if asked and possible, else under a temporary
/// name; `None` if a cleaner removed the named one first.
fn try_create(parent: &Path, mode: u32, unnamed: bool) -> io::Result<Option<Staged>> {
    if unnamed && let Some(file) = create_unnamed(parent, mode)? {
        return Ok(Some(Staged::Unnamed(file)));
    }
    Ok(create_named(parent)?.map(Staged::Named))
}

/// A temporary name in `parent`, locked; `None` if a cleaner removed it first.
fn create_named(parent: &Path) -> io::Result<Option<tempfile::NamedTempFile>> {
    let temp = tempfile::Builder::new()
        .prefix(own_prefix())
        .suffix(PARTIAL_SUFFIX)
        .tempfile_in(parent)?;
    // Some file systems (some FUSE and network ones) have no locks; there the output
    // is written all the same, and cleaners judge its age instead.
    let _ = temp.as_file().lock();
    // A cleaner may have found the file between its creation and the lock, taken it
    // for stale and removed it: then this one is no longer in the directory.
    Ok(still_linked(temp.as_file())?.then_some(temp))
}

#[cfg(unix)]
fn still_linked(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink() > 0)
}

#[cfg(not(unix))]
fn still_linked(_: &File) -> io::Result<bool> {
    Ok(true)
}

/// An unnamed file in `parent` with the permission bits `mode`, or `None` where there
/// are none: the file system does not have them, or they cannot be linked (below).
#[cfg(target_os = "linux")]
fn create_unnamed(parent: &Path, mode: u32) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    if !linkable() {
        return Ok(None);
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc::O_TMPFILE)
        .open(parent);
    match opened {
        Ok(file) => Ok(Some(file)),
        // Kernels and file systems without O_TMPFILE refuse it in one of these ways.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn create_unnamed(_: &Path, _: u32) -> io::Result<Option<File>> {
    Ok(None)
}

/// Gives the unnamed `file` the name `destination`. `linkat` never replaces a name, so
/// over an existing destination (a regular file: see [`StagedFile::create`]) the file
/// is linked under a temporary name (locked, as named outputs are) and renamed over it.
#[cfg(target_os = "linux")]
fn link_unnamed(
    file: File,
    destination: &Path,
    replaceable: impl Fn(&Path) -> io::Result<()>,
) -> io::Result<()> {
    match link(&file, destination) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        linked => return linked,
    }
    replaceable(destination)?;
    let _ = file.lock();
    tempfile::Builder::new()
        .prefix(own_prefix())
        .suffix(PARTIAL_SUFFIX)
        .make_in(parent_of(destination), |temp| link(&file, temp))?
        .persist(destination)
        .map(drop)
        .map_err(|e| e.error)
}

/// Whether unnamed files can be linked by their descriptor (`linkat(fd, "",
/// AT_EMPTY_PATH)`): Linux 6.10 and later let the file's opener do it; before, it
/// needed `CAP_DAC_READ_SEARCH`. Cleared at the first refusal: from then on they are
/// linked through their `/proc/self/fd` entries, which any kernel with `/proc` allows
/// at the cost of a walk through procfs per output.
#[cfg(target_os = "linux")]
static BY_DESCRIPTOR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether unnamed files can be linked at all; where not, outputs get temporary names.
#[cfg(target_os = "linux")]
fn linkable() -> bool {
    use std::sync::atomic::Ordering;
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    BY_DESCRIPTOR.load(Ordering::Relaxed)
        || *PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Links the open, unnamed `file` as `name`: by its descriptor where the kernel allows
/// it, else through its `/proc/self/fd` entry.
#[cfg(target_os = "linux")]
fn link(file: &File, name: &Path) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    let by_descriptor = BY_DESCRIPTOR.load(Ordering::Relaxed);
    if by_descriptor {
        match link_by_descriptor(file, name) {
            // How kernels before 6.10 refuse an unprivileged caller.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {}
            linked => return linked.map_err(io::Error::from),
        }
    }
    link_through_proc(file, name)?;
    if by_descriptor {
        // The refusal was the kernel's, not about `name`: /proc linked it.
        BY_DESCRIPTOR.store(false, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn link_by_descriptor(file: &File, name: &Path) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    linkat(file, "", CWD, name, AtFlags::EMPTY_PATH)
}

#[cfg(target_os = "linux")]
fn link_through_proc(file: &File, name: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    use std::os::unix::io::AsRawFd;
    let entry = format!("/proc/self/fd/{}", file.as_raw_fd());
    Ok(linkat(
        CWD,
        entry.as_str(),
        CWD,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_: File, _: &Path, _: impl Fn(&Path) -> io::Result<()>) -> io::Result<()> {
    Err(io::Error::other("unnamed files exist only on Linux"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing of an output is visible before its commit, and a dropped one leaves
    /// nothing; over an existing file the commit replaces it.
    #[test]
    fn outputs_appear_whole_or_not_at_all() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("a/b/out.bin");
        let mode = super::super::output_mode(Some(0o640));
        for make in [StagedFile::create, StagedFile::create_named] {
            let mut staged = make(&destination, mode).unwrap();
            staged.file().write_all(b"dropped").unwrap();
            drop(staged);
            assert_eq!(entries(dir.path()), ["a", "a/b"]);

            for contents in [&b"first"[..], b"second, over the first"] {
                let mut staged = make(&destination, mode).unwrap();
                staged.file().write_all(contents).unwrap();
                assert_ne!(fs::read(&destination).ok().as_deref(), Some(contents));
                staged.commit().unwrap();
                assert_eq!(fs::read(&destination).unwrap(), contents);
                assert_eq!(entries(dir.path()), ["a", "a/b", "a/b/out.bin"]);
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let got = fs::metadata(&destination).unwrap().permissions().mode();
                assert_eq!(got & 0o7777, mode);
            }
            fs::remove_file(&destination).unwrap();
        }
    }

    /// On Linux with a local file system, outputs are unnamed until committed.
    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_an_output_has_no_name_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let staged = StagedFile::create(&dir.path().join("out.bin"), 0o600).unwrap();
        assert!(matches!(staged.staged, Staged::Unnamed(_)));
        assert!(entries(dir.path()).is_empty());
    }

    /// A destination that is not a regular file is refused and left as it was, whether
    /// it is found at creation (temporary names) or only at the commit (unnamed files).
    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_replaced() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"kept").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let directory = dir.path().join("directory");
        fs::create_dir(&directory).unwrap();
        for destination in [&link, &dangling, &directory] {
            let named = StagedFile::create_named(destination, 0o600);
            assert!(named.is_err(), "{}", destination.display());
            let mut staged = StagedFile::create(destination, 0o600).unwrap();
            staged.file().write_all(b"new").unwrap();
            let refused = staged.commit().unwrap_err().to_string();
            assert!(refused.contains("not a regular file"), "{refused}");
        }
        assert_eq!(fs::read(&link).unwrap(), b"kept");
        assert!(fs::symlink_metadata(&dangling).unwrap().is_symlink());
        assert!(fs::read_dir(&directory).unwrap().next().is_none());
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["dangling", "directory", "link", "target"]);
    }

    /// Both ways of linking an unnamed file give it its name and contents (the second
    /// is what kernels before 6.10 leave an unprivileged process).
    #[cfg(target_os = "linux")]
    #[test]
    fn unnamed_files_link_by_descriptor_and_through_proc() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        for (name, by_descriptor) in [("descriptor", true), ("proc", false)] {
            let mut file = create_unnamed(dir.path(), 0o600).unwrap().unwrap();
            file.write_all(name.as_bytes()).unwrap();
            let path = dir.path().join(name);
            if by_descriptor {
                link_by_descriptor(&file, &path).unwrap();
            } else {
                link_through_proc(&file, &path).unwrap();
            }
            assert_eq!(fs::read(&path).unwrap(), name.as_bytes());
        }
    }

    fn entries(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                found.push(path.strip_prefix(root).unwrap().display().to_string());
                if path.is_dir() {
                    dirs.push(path);
                }
            }
        }
        found.sort();
        found
    }
}
