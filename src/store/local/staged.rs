//! Outputs written under a temporary, locked name beside their destination, renamed
//! into place only when whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{PARTIAL_SUFFIX, own_prefix};

/// An output being written under a temporary name in its destination directory. It
/// replaces the destination only on [`commit`](Self::commit); dropped, it is removed, so
/// a failure never leaves partial output behind. While it exists its writer holds an
/// exclusive lock on it (see [`remove_stale_partials`]).
pub struct StagedFile {
    temp: tempfile::NamedTempFile,
    destination: PathBuf,
}

impl StagedFile {
    /// Creates the temporary file (mode 0600, and missing parent directories).
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
                    crate::escape::path(destination)
                ),
            ));
        }
        let parent = match destination.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut created_parent = false;
        loop {
            let temp = match tempfile::Builder::new()
                .prefix(own_prefix())
                .suffix(PARTIAL_SUFFIX)
                .tempfile_in(parent)
            {
                Ok(temp) => temp,
                // Most outputs go to directories that exist (earlier outputs made
                // them): looking first would cost a call per output.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !created_parent => {
                    fs::create_dir_all(parent)?;
                    created_parent = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Some file systems (some FUSE and network ones) have no locks; there the
            // output is written all the same, and cleaners judge its age instead.
            let _ = temp.as_file().lock();
            // A cleaner may have found the file between its creation and the lock,
            // taken it for stale and removed it: then this one is no longer in the
            // directory, and a new one is needed.
            if still_linked(temp.as_file())? {
                return Ok(Self {
                    temp,
                    destination: destination.to_path_buf(),
                });
            }
        }
    }

    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Gives the output the permission bits `mode` and moves it to its final name
    /// atomically.
    pub fn commit(self, mode: u32) -> io::Result<()> {
        #[cfg(unix)]
        {
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

#[cfg(unix)]
fn still_linked(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink() > 0)
}

#[cfg(not(unix))]
fn still_linked(_: &File) -> io::Result<bool> {
    Ok(true)
}
