//! Listing a local source as it is walked: regular files in sorted order, everything
//! else skipped with a reason, unreadable directories reported and passed over.

use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::path::Path;

use super::{fingerprint, is_partial_name};
use crate::store::{ListItem, Listed, ObjectId, RelativeName};

/// Lists `source` (a single file, or every regular file below a directory, in sorted
/// order), handing each entry to `emit` as it is found.
///
/// Entries that are not regular files (symlinks, sockets, devices) and sealpipe's own
/// temporary files are reported as skipped, never followed or read. A directory that
/// cannot be read is reported as [`ListItem::Invalid`] and the walk continues with the
/// rest of the tree. Fails only when `source` itself is not a file or a directory.
pub fn list_local(
    source: &Path,
    mut emit: impl FnMut(ListItem) -> ControlFlow<()>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(source)?;
    if meta.is_file() {
        let name = source.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "source has no file name")
        })?;
        let _ = emit(ListItem::Object(listed(source, Path::new(name), &meta)));
        return Ok(());
    }
    if meta.file_type().is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is a symbolic link; sealpipe never follows symbolic links: give the \
                 path it points to",
                crate::escape::path(source)
            ),
        ));
    }
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is neither a regular file nor a directory (a device, FIFO or socket)",
                crate::escape::path(source)
            ),
        ));
    }
    for entry in walkdir::WalkDir::new(source).sort_by_file_name() {
        let item = match entry {
            Ok(entry) if entry.file_type().is_dir() => continue,
            Ok(entry) => list_entry(source, &entry),
            Err(e) => unlistable(source, &e),
        };
        if emit(item).is_break() {
            break;
        }
    }
    Ok(())
}

/// One walked entry that is not a directory.
fn list_entry(source: &Path, entry: &walkdir::DirEntry) -> ListItem {
    let id = ObjectId::Local(entry.path().to_path_buf());
    if !entry.file_type().is_file() {
        return ListItem::Skipped {
            id,
            reason: "not a regular file (not followed)".into(),
        };
    }
    if is_partial_name(entry.file_name()) {
        return ListItem::Skipped {
            id,
            reason: "a temporary file of an unfinished sealpipe output (left by an \
                     interrupted run); never read as a source"
                .into(),
        };
    }
    // walkdir yields paths below its root.
    let relative = entry.path().strip_prefix(source).unwrap_or(entry.path());
    match entry.metadata() {
        Ok(meta) => ListItem::Object(listed(entry.path(), relative, &meta)),
        Err(e) => ListItem::Invalid {
            id,
            code: "ListingFailed",
            error: format!("cannot read the file's metadata: {}", walk_cause(&e)),
        },
    }
}

/// A walk error: a directory that could not be read, so nothing below it is listed.
fn unlistable(source: &Path, e: &walkdir::Error) -> ListItem {
    let path = e.path().unwrap_or(source).to_path_buf();
    ListItem::Invalid {
        id: ObjectId::Local(path),
        code: "ListingFailed",
        error: format!(
            "cannot list this directory: {}; nothing below it was processed",
            walk_cause(e)
        ),
    }
}

/// The OS error behind a walk error, without walkdir's repetition of the path.
fn walk_cause(e: &walkdir::Error) -> String {
    match e.io_error() {
        Some(io) => io.to_string(),
        None => e.to_string(),
    }
}

fn listed(path: &Path, relative: &Path, meta: &fs::Metadata) -> Listed {
    // Destinations mirror names with `/` separators (S3 keys); on Unix the bytes are
    // kept exactly, whatever they are.
    #[cfg(unix)]
    let relative = RelativeName::from(relative.as_os_str().to_os_string());
    #[cfg(not(unix))]
    let relative = RelativeName::from(
        relative
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/"),
    );
    Listed {
        id: ObjectId::Local(path.to_path_buf()),
        relative,
        size: Some(meta.len()),
        etag: Some(fingerprint(meta)),
    }
}
