//! sealpipe's own user metadata on the objects it writes: which format, made from which
//! source (ETag and version), how long the plaintext is, and which keys wrap the data
//! key. A re-run uses it to recognise finished work without a journal.

use crate::format::EncryptedDataKey;
use crate::keys::wrapping_key_name;
use crate::store::ObjectMeta;

/// Present on every object sealpipe encrypted.
pub const FORMAT_KEY: &str = "sealpipe-format";
/// The format written.
pub const FORMAT: &str = "aws-esdk-v2";
const SOURCE_ETAG: &str = "sealpipe-source-etag";
const SOURCE_VERSION: &str = "sealpipe-source-version";
const PLAINTEXT_LENGTH: &str = "sealpipe-plaintext-length";
const WRAPPING_KEYS: &str = "sealpipe-wrapping-keys";

/// What the marker records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// ETag of the object the output was made from (a size-and-mtime fingerprint for
    /// local files).
    pub source_etag: String,
    /// Its version ID, on versioned buckets.
    pub source_version: Option<String>,
    /// Plaintext bytes in the message.
    pub plaintext_length: Option<u64>,
    /// Key ARNs (KMS) or `namespace/name` (raw AES) that wrap the data key.
    pub wrapping_keys: Vec<String>,
}

impl Marker {
    /// Reads the marker from metadata, if sealpipe wrote one.
    pub fn read(meta: &ObjectMeta) -> Option<Self> {
        let user = &meta.user;
        user.get(FORMAT_KEY)?;
        Some(Self {
            source_etag: user.get(SOURCE_ETAG).cloned().unwrap_or_default(),
            source_version: user.get(SOURCE_VERSION).cloned(),
            plaintext_length: user.get(PLAINTEXT_LENGTH).and_then(|v| v.parse().ok()),
            wrapping_keys: user
                .get(WRAPPING_KEYS)
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        })
    }

    /// Whether this output was made from exactly that source object. Versions are
    /// compared when both sides know one (a listing does not say which version it saw;
    /// the ETag then decides).
    pub fn made_from(&self, etag: &str, version: Option<&str>) -> bool {
        let same_version = match (self.source_version.as_deref(), version) {
            (Some(ours), Some(theirs)) => ours == theirs,
            _ => true,
        };
        !self.source_etag.is_empty() && self.source_etag == etag && same_version
    }

    /// Adds the marker to `meta`'s user metadata (replacing an older one).
    pub fn write(&self, meta: &mut ObjectMeta) {
        strip(meta);
        let user = &mut meta.user;
        user.insert(FORMAT_KEY.into(), FORMAT.into());
        user.insert(SOURCE_ETAG.into(), self.source_etag.clone());
        if let Some(v) = &self.source_version {
            user.insert(SOURCE_VERSION.into(), v.clone());
        }
        if let Some(n) = self.plaintext_length {
            user.insert(PLAINTEXT_LENGTH.into(), n.to_string());
        }
        user.insert(WRAPPING_KEYS.into(), self.wrapping_keys.join(","));
    }
}

/// Removes sealpipe's metadata, leaving the original.
pub fn strip(meta: &mut ObjectMeta) {
    meta.user.retain(|k, _| !k.starts_with("sealpipe-"));
}

/// Names of the keys that wrap a message's data key, as the marker records them.
pub fn wrapping_key_names(edks: &[EncryptedDataKey]) -> Vec<String> {
    edks.iter()
        .map(|edk| recorded_name(&wrapping_key_name(edk)))
        .collect()
}

/// A key name as the marker records it. Metadata travels in HTTP headers: keep it
/// ASCII and free of the separator.
pub fn recorded_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != ',' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_round_trips_and_strips_cleanly() {
        let mut meta = ObjectMeta::default();
        meta.user.insert("owner".into(), "team-a".into());
        let marker = Marker {
            source_etag: "abc".into(),
            source_version: Some("v1".into()),
            plaintext_length: Some(42),
            wrapping_keys: vec!["arn:aws:kms:us-east-1:111122223333:key/k".into()],
        };
        marker.write(&mut meta);
        assert_eq!(Marker::read(&meta), Some(marker.clone()));
        assert!(marker.made_from("abc", Some("v1")));
        assert!(!marker.made_from("abc", Some("v2")));
        assert!(!marker.made_from("abd", Some("v1")));
        assert!(marker.made_from("abc", None), "listings carry no version");
        strip(&mut meta);
        assert_eq!(meta.user.len(), 1);
        assert_eq!(Marker::read(&meta), None);
    }
}
