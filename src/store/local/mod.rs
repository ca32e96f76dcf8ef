//! Local files: listing a source tree as it is walked, reading files, and writing
//! outputs that appear only when whole.
//!
//! What this module promises, and how:
//! - **Nothing is left out silently.** A directory that cannot be read (removed
//!   mid-run, no permission, a path too long) is reported as a failure of that subtree
//!   and the walk goes on; names that are not UTF-8 are listed like any other.
//! - **A source is read as it was when opened.** A file that grows, shrinks or is
//!   modified while it is read fails with [`SourceChanged`] instead of producing a
//!   message of something that never existed.
//! - **Outputs appear only whole.** An output is written to a temporary
//!   `.sealpipe-*.partial` file beside its destination and renamed into place on
//!   commit. The writer holds an exclusive lock on that file while it lives, so after a
//!   crash (`kill -9` cannot be caught) the next run over the destination can tell a
//!   stale partial file, which it removes, from one a live run is writing, which it leaves.
//!   Listings never take partial files for sources.
//! - **Outputs never gain privileges.** An output gets the source's read, write and
//!   execute bits only, filtered by the umask ([`output_mode`]).
//!
//! One file per concept: `listing` walks trees, `reader` reads files as bodies,
//! `staged` writes outputs under temporary names, `sink` is the output as a [`Sink`],
//! `cleanup` removes what killed runs left, `mode` decides permission bits.

mod cleanup;
mod listing;
mod mode;
mod reader;
mod sink;
mod staged;

use std::ffi::OsStr;
use std::fs;
use std::sync::OnceLock;

pub use cleanup::{PartialCleanup, remove_stale_partials};
pub use listing::list_local;
pub use mode::{output_mode, same_file};
pub use reader::{SourceChanged, open_local};
pub use sink::LocalSink;
pub use staged::{StagedFile, WouldReplaceSource};

#[cfg(doc)]
use super::Sink;

/// Where locks are not available, a partial output untouched for this long is taken
/// for stale: live writers write continuously, and a stall this long fails the object
/// anyway (S3 read timeouts are a minute).
pub(super) const STALE_WITHOUT_LOCKS: std::time::Duration = std::time::Duration::from_secs(3600);

/// Temporary outputs are named `.sealpipe-XXXXXX.partial`.
pub(super) const PARTIAL_PREFIX: &str = ".sealpipe-";
pub(super) const PARTIAL_SUFFIX: &str = ".partial";

/// This process's partial outputs are named `.sealpipe-TAG-XXXXXX.partial`, with a
/// random tag, so its own cleaner (which runs while the job writes) passes over them:
/// they are live, and their writers remove them if they fail.
pub(super) fn own_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let mut tag = [0u8; 4];
        // Without randomness the tag is still distinct from other live processes'.
        if crate::crypto::random_bytes(&mut tag).is_err() {
            tag = std::process::id().to_be_bytes();
        }
        format!("{PARTIAL_PREFIX}{}-", hex::encode(tag))
    })
}

/// Whether a file name is one of sealpipe's temporary outputs.
pub fn is_partial_name(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.len() > PARTIAL_PREFIX.len() + PARTIAL_SUFFIX.len()
        && name.starts_with(PARTIAL_PREFIX.as_bytes())
        && name.ends_with(PARTIAL_SUFFIX.as_bytes())
}

/// Local files have no ETag; size and modification time stand in for one, so a re-run
/// recognises outputs made from the same file.
pub(super) fn fingerprint(meta: &fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("local-{}-{mtime}", meta.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names() {
        for yes in [".sealpipe-abc123.partial", ".sealpipe-x.partial"] {
            assert!(is_partial_name(OsStr::new(yes)), "{yes}");
        }
        for no in [
            ".sealpipe-.partial",
            "sealpipe-a.partial",
            ".sealpipe-a",
            "a.partial",
        ] {
            assert!(!is_partial_name(OsStr::new(no)), "{no}");
        }
    }
}
