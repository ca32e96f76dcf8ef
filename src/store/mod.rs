//! Object sources and sinks: local files and directory trees, and S3 buckets.
//!
//! A source yields [`Listed`] objects and opens each as a [`SourceObject`]: what is
//! known of it, and a [`Body`] of chunks. A [`Sink`] lends buffers, takes them back
//! filled, and makes its output appear only on [`commit`](Sink::commit). Both are
//! async; the codec meets them in `crate::bridge`. Nothing here knows about encryption.

mod budget;
mod buffers;
mod local;
mod manifest;
mod s3;
mod sink;
mod source;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

pub use budget::{ByteBudget, Reservation};
pub use buffers::BufferPool;
pub use local::{
    LocalSink, PartialCleanup, SourceChanged, StagedFile, WouldReplaceSource, is_partial_name,
    list_local, open_local, output_mode, remove_stale_partials, same_file,
};
pub use manifest::{ManifestEntry, read_manifest, url_decode_key};
pub use s3::{
    Head, LevelEntry, MIN_PART_SIZE, ReadAhead, S3Error, S3Settings, S3Sink, S3Stats, S3Store,
    SourceShape,
};
pub use sink::{Discard, Payload, Precondition, Sink};
pub use source::{Body, BoxFuture, ServerSide, SourceInfo, SourceObject};

/// Where objects are read from or written to, as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file or directory.
    Local(PathBuf),
    /// `s3://bucket/prefix`: a single object or every object below a prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// Key or key prefix; may be empty.
        prefix: String,
    },
}

impl Location {
    /// Parses `s3://bucket[/prefix]`, or takes anything else as a local path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(rest) = s.strip_prefix("s3://") else {
            return Ok(Location::Local(PathBuf::from(s)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "{s:?}: no bucket name (expected s3://BUCKET[/PREFIX])"
            ));
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// Whether this is an S3 location.
    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => f.write_str(&crate::escape::path(p)),
            Location::S3 { bucket, prefix } => write!(
                f,
                "s3://{}/{}",
                crate::escape::name(bucket.as_bytes()),
                crate::escape::name(prefix.as_bytes())
            ),
        }
    }
}

/// One object's identity: what errors and reports name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// A local file.
    Local(PathBuf),
    /// An S3 object, at a specific version when known.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The version ID, for versioned buckets and manifests that name one.
        version: Option<String>,
    },
}

impl ObjectId {
    /// An S3 object's identity.
    pub fn s3(bucket: &str, key: &str, version: Option<String>) -> Self {
        ObjectId::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version,
        }
    }

    /// `(bucket, key, version)` for reports; local files have an empty bucket and their
    /// path as the key. S3 keys are exact; a local path is exact when it is UTF-8 and
    /// escaped losslessly ([`escape::name`](crate::escape::name)) otherwise.
    pub fn report_fields(&self) -> (String, String, String) {
        match self {
            ObjectId::Local(p) => (
                String::new(),
                p.to_str()
                    .map_or_else(|| crate::escape::path(p), str::to_string),
                String::new(),
            ),
            ObjectId::S3 {
                bucket,
                key,
                version,
            } => (
                bucket.clone(),
                key.clone(),
                version.clone().unwrap_or_default(),
            ),
        }
    }
}

/// Names objects for people and logs: escaped losslessly, so a name holding control
/// characters, line breaks or bytes that are not UTF-8 is printed exactly and safely.
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::escape::name;
        match self {
            ObjectId::Local(p) => f.write_str(&crate::escape::path(p)),
            ObjectId::S3 {
                bucket,
                key,
                version: None,
            } => write!(
                f,
                "s3://{}/{}",
                name(bucket.as_bytes()),
                name(key.as_bytes())
            ),
            ObjectId::S3 {
                bucket,
                key,
                version: Some(v),
            } => write!(
                f,
                "s3://{}/{} (version {})",
                name(bucket.as_bytes()),
                name(key.as_bytes()),
                name(v.as_bytes())
            ),
        }
    }
}

/// An object's name below the source root, `/`-separated: the part a destination
/// mirrors. S3 keys are UTF-8; a local file's name may be any bytes the file system
/// holds, and is carried exactly, so a local destination can reproduce it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelativeName(OsString);

impl RelativeName {
    /// The name as UTF-8, if it is (always, for S3 keys).
    pub fn to_str(&self) -> Option<&str> {
        self.0.to_str()
    }

    /// The name as the OS holds it.
    pub fn as_os_str(&self) -> &OsStr {
        &self.0
    }

    /// The name as a relative path (for glob matching, which works on bytes).
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl From<String> for RelativeName {
    fn from(s: String) -> Self {
        Self(s.into())
    }
}

impl From<&str> for RelativeName {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

impl From<OsString> for RelativeName {
    fn from(s: OsString) -> Self {
        Self(s)
    }
}

impl fmt::Display for RelativeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::escape::path(self.as_path()))
    }
}

/// An object found by listing (or named by a manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The object.
    pub id: ObjectId,
    /// Its name below the source root: the part a destination mirrors.
    pub relative: RelativeName,
    /// Size when listed; manifests do not say.
    pub size: Option<u64>,
    /// ETag when listed (S3), or a size-and-mtime fingerprint (local files).
    pub etag: Option<String>,
}

/// What listing yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListItem {
    /// An object to process.
    Object(Listed),
    /// An entry that could not be listed or named (a bad manifest line, a failed
    /// listing page, a directory that cannot be read): a failure of the job, counted
    /// and reported like a failed object, while listing goes on where it can.
    Invalid {
        /// What it was: the directory, the prefix, the manifest.
        id: ObjectId,
        /// A code for the completion report (`ListingFailed`, `InvalidManifestLine`).
        code: &'static str,
        /// Why it failed, and what was left out because of it.
        error: String,
    },
    /// An entry deliberately left alone, and why.
    Skipped {
        /// The entry.
        id: ObjectId,
        /// Why it is not processed.
        reason: String,
    },
}

/// Object metadata that travels with the bytes. For local files only the permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Expires`, as an HTTP date.
    pub expires: Option<String>,
    /// User metadata (`x-amz-meta-*`), keys in lower case.
    pub user: BTreeMap<String, String>,
    /// Object tags, in order.
    pub tags: Vec<(String, String)>,
    /// Unix permission bits of a local file.
    pub mode: Option<u32>,
}

/// Whether `relative` (an S3 key or a file's name below the source root) can become a
/// path below a local directory without escaping it: no empty, `.` or `..` components,
/// not absolute, no NUL.
pub fn safe_relative_path(relative: &RelativeName) -> Option<PathBuf> {
    let bytes = relative.as_os_str().as_encoded_bytes();
    if bytes.is_empty() || bytes[0] == b'/' || bytes.contains(&0) {
        return None;
    }
    let mut path = PathBuf::new();
    for part in bytes.split(|b| *b == b'/') {
        if part.is_empty() || part == b"." || part == b".." {
            return None;
        }
        path.push(os_str_from(part));
    }
    Some(path)
}

#[cfg(unix)]
fn os_str_from(bytes: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes)
}

#[cfg(not(unix))]
fn os_str_from(bytes: &[u8]) -> &OsStr {
    // Elsewhere names come from UTF-8 (S3 keys, and local names are listed as UTF-8).
    OsStr::new(std::str::from_utf8(bytes).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("s3://b/a/b/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "a/b/".into()
            }
        );
        assert_eq!(
            Location::parse("s3://b").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert!(Location::parse("s3:///x").is_err());
        assert_eq!(
            Location::parse("dir/x").unwrap(),
            Location::Local("dir/x".into())
        );
    }

    #[test]
    fn keys_never_escape_a_local_destination() {
        assert_eq!(
            safe_relative_path(&"a/b.txt".into()),
            Some(PathBuf::from("a/b.txt"))
        );
        for bad in [
            "",
            "/etc/passwd",
            "a/../../x",
            "..",
            "a//b",
            "./a",
            "a/",
            "a\0b",
        ] {
            assert_eq!(safe_relative_path(&bad.into()), None, "{bad:?}");
        }
    }
}
