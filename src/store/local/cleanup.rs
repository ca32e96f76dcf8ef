//! Removing the partial outputs that killed runs left behind.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::{STALE_WITHOUT_LOCKS, is_partial_name, own_prefix};

/// What [`remove_stale_partials`] found.
#[derive(Debug, Default)]
pub struct PartialCleanup {
    /// Stale partial outputs removed (or, in a dry run, that would be).
    pub removed: u64,
    /// Partial outputs a live process is writing (locked), left alone.
    pub in_use: u64,
    /// Stale partial outputs that could not be removed, and why.
    pub not_removed: Vec<(PathBuf, io::Error)>,
}

/// Removes the temporary outputs that killed runs left anywhere below `root` (a
/// directory, or a single output's directory when `recursive` is false): plaintext
/// prefixes of decrypted files, among others. A partial file whose lock can be taken
/// has no live writer; one that is locked belongs to a running job and is left alone
/// (where the file system has no locks, one untouched for an hour is taken for stale).
/// With `dry_run`, counts without removing.
pub fn remove_stale_partials(root: &Path, recursive: bool, dry_run: bool) -> PartialCleanup {
    let mut found = PartialCleanup::default();
    if !root.is_dir() {
        return found;
    }
    let depth = if recursive { usize::MAX } else { 1 };
    let walk = walkdir::WalkDir::new(root).max_depth(depth).into_iter();
    for entry in walk.filter_map(Result::ok) {
        let name = entry.file_name();
        if !entry.file_type().is_file()
            || !is_partial_name(name)
            || name.as_encoded_bytes().starts_with(own_prefix().as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let file = match File::open(path) {
            Ok(f) => f,
            // Committed or removed by its writer meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                found.not_removed.push((path.to_path_buf(), e));
                continue;
            }
        };
        let stale = match file.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            // No locks on this file system: judge by age.
            Err(fs::TryLockError::Error(_)) => file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_WITHOUT_LOCKS),
        };
        if !stale {
            found.in_use += 1;
        } else if dry_run {
            found.removed += 1;
        } else {
            // Removed while locked, so no writer can be starting on it meanwhile.
            match fs::remove_file(path) {
                Ok(()) => found.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => found.not_removed.push((path.to_path_buf(), e)),
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StagedFile;

    #[test]
    fn stale_partials_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        fs::create_dir_all(&nested).unwrap();
        // Left by a killed run: no lock.
        fs::write(nested.join(".sealpipe-dead01.partial"), b"plaintext prefix").unwrap();
        fs::write(dir.path().join(".sealpipe-dead02.partial"), b"x").unwrap();
        fs::write(dir.path().join("kept.txt"), b"not ours").unwrap();
        // Another process's live one, locked.
        let other = dir.path().join(".sealpipe-0ther-live.partial");
        fs::write(&other, b"y").unwrap();
        let other_writer = File::open(&other).unwrap();
        other_writer.lock().unwrap();
        // This process's own: live, so passed over and not even counted.
        let live = StagedFile::create_named(&dir.path().join("out.bin"), 0o600).unwrap();

        let dry = remove_stale_partials(dir.path(), true, true);
        assert_eq!((dry.removed, dry.in_use), (2, 1));
        assert!(nested.join(".sealpipe-dead01.partial").exists());

        let top_only = remove_stale_partials(dir.path(), false, false);
        assert_eq!((top_only.removed, top_only.in_use), (1, 1));
        let all = remove_stale_partials(dir.path(), true, false);
        assert_eq!((all.removed, all.in_use), (1, 1));
        assert!(all.not_removed.is_empty());
        assert!(!nested.join(".sealpipe-dead01.partial").exists());
        assert!(dir.path().join("kept.txt").exists());

        live.commit().unwrap();
        assert!(dir.path().join("out.bin").exists());
        drop(other_writer);
        let after = remove_stale_partials(dir.path(), true, false);
        assert_eq!((after.removed, after.in_use), (1, 0));
        assert!(remove_stale_partials(dir.path(), true, false).removed == 0);
    }
}
