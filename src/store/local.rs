//! Local files: listing a source tree, and writing outputs that appear only when whole.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// One file to process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalObject {
    /// Path relative to the source root (the file name when the source is a file).
    pub relative: PathBuf,
    /// Path to read.
    pub path: PathBuf,
    /// Size when listed.
    pub size: u64,
}

/// What listing found besides regular files.
#[derive(Debug, Default)]
pub struct Listing {
    /// Regular files, in a stable (sorted) order.
    pub objects: Vec<LocalObject>,
    /// Entries that are not regular files (symlinks, sockets, devices): never followed.
    pub skipped: Vec<PathBuf>,
}

/// Lists `source`: a single file, or every regular file below a directory.
pub fn list_local(source: &Path) -> io::Result<Listing> {
    let meta = fs::symlink_metadata(source)?;
    let mut listing = Listing::default();
    if meta.is_file() {
        let name = source.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "source has no file name")
        })?;
        listing.objects.push(LocalObject {
            relative: PathBuf::from(name),
            path: source.to_path_buf(),
            size: meta.len(),
        });
        return Ok(listing);
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
        if !ft.is_file() {
            listing.skipped.push(entry.path().to_path_buf());
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(source)
            .expect("walkdir yields paths below its root")
            .to_path_buf();
        listing.objects.push(LocalObject {
            relative,
            path: entry.path().to_path_buf(),
            size: entry.metadata().map_err(io::Error::other)?.len(),
        });
    }
    Ok(listing)
}

/// Where the output for `object` goes. A file source with a destination that is an
/// existing directory lands inside it under the same name; a directory source mirrors
/// its tree under `destination`.
pub fn plan_destination(source: &Path, destination: &Path, object: &LocalObject) -> PathBuf {
    if source.is_file() && !destination.is_dir() {
        destination.to_path_buf()
    } else {
        destination.join(&object.relative)
    }
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

    /// Gives the output `permissions` and moves it to its final name atomically.
    pub fn commit(self, permissions: Option<fs::Permissions>) -> io::Result<()> {
        if let Some(p) = permissions {
            self.temp.as_file().set_permissions(p)?;
        }
        self.temp
            .persist(&self.destination)
            .map(drop)
            .map_err(|e| e.error)
    }
}
