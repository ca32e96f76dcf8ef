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
}

enum Staged {
    /// In no directory yet.
    Unnamed(File),
    /// Under a temporary, locked name.
    Named(tempfile::NamedTempFile),
}

impl StagedFile {
    /// Creates the file to write (mode 0600, and missing parent directories).
    ///
    /// An existing destination must be a regular file: renaming over a device, pipe,
    /// socket or symbolic link would replace that node itself (think `/dev/null`).
    pub fn create(destination: &Path) -> io::Result<Self> {
        Self::create_as(destination, true)
    }

    /// Like [`create`](Self::create), always under a temporary name.
    pub fn create_named(destination: &Path) -> io::Result<Self> {
        Self::create_as(destination, false)
    }

    fn create_as(destination: &Path, unnamed: bool) -> io::Result<Self> {
        if let Ok(meta) = fs::symlink_metadata(destination)
            && !meta.is_file()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "destination {} exists and is not a regular file; sealpipe replaces \
                     only regular files",
                    crate::escape::path(destination)
                ),
            ));
        }
        let parent = parent_of(destination);
        let mut created_parent = false;
        loop {
            match try_create(parent, unnamed) {
                Ok(Some(staged)) => {
                    return Ok(Self {
                        staged,
                        destination: destination.to_path_buf(),
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

    /// Gives the output the permission bits `mode` and moves it to its final name
    /// atomically.
    pub fn commit(self, mode: u32) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = match &self.staged {
                Staged::Unnamed(file) => file,
                Staged::Named(temp) => temp.as_file(),
            };
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        match self.staged {
            Staged::Named(temp) => temp
                .persist(&self.destination)
                .map(drop)
                .map_err(|e| e.error),
            Staged::Unnamed(file) => link_unnamed(file, &self.destination),
        }
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
fn try_create(parent: &Path, unnamed: bool) -> io::Result<Option<Staged>> {
    if unnamed && let Some(file) = create_unnamed(parent)? {
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

/// An unnamed file in `parent`, or `None` where there are none: the file system does
/// not have them, or `/proc` (through which one is linked) is missing.
#[cfg(target_os = "linux")]
fn create_unnamed(parent: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    static LINKABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*LINKABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return Ok(None);
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
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
fn create_unnamed(_: &Path) -> io::Result<Option<File>> {
    Ok(None)
}

/// Gives the unnamed `file` the name `destination`. `linkat` never replaces a name, so
/// over an existing destination the file is linked under a temporary name (locked, as
/// named outputs are) and renamed over it.
#[cfg(target_os = "linux")]
fn link_unnamed(file: File, destination: &Path) -> io::Result<()> {
    match link(&file, destination) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        linked => return linked,
    }
    let _ = file.lock();
    tempfile::Builder::new()
        .prefix(own_prefix())
        .suffix(PARTIAL_SUFFIX)
        .make_in(parent_of(destination), |temp| link(&file, temp))?
        .persist(destination)
        .map(drop)
        .map_err(|e| e.error)
}

/// Links the open, unnamed `file` as `name`, through its `/proc/self/fd` entry (linking
/// the descriptor itself, `AT_EMPTY_PATH`, needs a capability).
#[cfg(target_os = "linux")]
fn link(file: &File, name: &Path) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let entry = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        entry.as_str(),
        rustix::fs::CWD,
        name,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_: File, _: &Path) -> io::Result<()> {
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
        for make in [StagedFile::create, StagedFile::create_named] {
            let mut staged = make(&destination).unwrap();
            staged.file().write_all(b"dropped").unwrap();
            drop(staged);
            assert_eq!(entries(dir.path()), ["a", "a/b"]);

            for contents in [&b"first"[..], b"second, over the first"] {
                let mut staged = make(&destination).unwrap();
                staged.file().write_all(contents).unwrap();
                assert_ne!(fs::read(&destination).ok().as_deref(), Some(contents));
                staged.commit(0o640).unwrap();
                assert_eq!(fs::read(&destination).unwrap(), contents);
                assert_eq!(entries(dir.path()), ["a", "a/b", "a/b/out.bin"]);
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = fs::metadata(&destination).unwrap().permissions().mode();
                assert_eq!(mode & 0o7777, 0o640);
            }
            fs::remove_file(&destination).unwrap();
        }
    }

    /// On Linux with a local file system, outputs are unnamed until committed.
    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_an_output_has_no_name_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let staged = StagedFile::create(&dir.path().join("out.bin")).unwrap();
        assert!(matches!(staged.staged, Staged::Unnamed(_)));
        assert!(entries(dir.path()).is_empty());
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
