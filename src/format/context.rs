//! The encryption context and its canonical serialization.
//!
//! The same serialization appears in the header (after a `u16` total length), in the Raw
//! AES keyring's wrapping AAD and in the header-authentication AAD for
//! authenticate-only pairs. An empty context serializes to zero bytes: no count field.

use std::collections::BTreeMap;

use super::codec::{Reader, put_u16_prefixed};
use super::{DecodeError, EncodeError};

/// Prefix reserved for keys the ESDK itself writes; callers may not use it.
pub const RESERVED_PREFIX: &str = "aws-crypto-";

/// The context key under which signing suites store the verification key.
pub const PUBLIC_KEY_CONTEXT_KEY: &str = "aws-crypto-public-key";

/// An encryption context: UTF-8 key/value pairs bound to the message as AAD.
///
/// A `BTreeMap<String, String>` iterates in the byte order of the keys' UTF-8
/// encodings, which is exactly the canonical order the format requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pairs, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Adds or replaces a pair.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(key.into(), value.into())
    }

    /// Removes a pair.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pairs as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// The first key that uses the reserved `aws-crypto-` prefix, if any.
    pub fn reserved_key(&self) -> Option<&str> {
        self.0
            .keys()
            .map(String::as_str)
            .find(|k| k.starts_with(RESERVED_PREFIX))
    }

    /// Canonical serialization: empty for an empty context, otherwise
    /// `count || (key_len || key || value_len || value)*` in key order.
    pub fn serialize(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        if self.0.is_empty() {
            return Ok(out);
        }
        let count = u16::try_from(self.0.len()).map_err(|_| EncodeError::TooLong {
            what: "encryption context pair count",
            len: self.0.len(),
            max: u16::MAX as usize,
        })?;
        out.extend_from_slice(&count.to_be_bytes());
        for (k, v) in &self.0 {
            put_u16_prefixed(&mut out, k.as_bytes(), "encryption context key")?;
            put_u16_prefixed(&mut out, v.as_bytes(), "encryption context value")?;
        }
        if out.len() > u16::MAX as usize {
            return Err(EncodeError::TooLong {
                what: "serialized encryption context",
                len: out.len(),
                max: u16::MAX as usize,
            });
        }
        Ok(out)
    }

    /// Parses a serialization produced by [`serialize`](Self::serialize). The whole
    /// slice must be consumed; duplicate keys, empty count and invalid UTF-8 are errors.
    ///
    /// Pairs are accepted in any order, as the C and JavaScript SDKs accept them: the
    /// header tag and signature cover the bytes received, never a re-encoding, so order
    /// cannot be used to alter what was authenticated (fuzzing found this leniency;
    /// see `fuzz/README.md`).
    pub fn deserialize(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut map = BTreeMap::new();
        if bytes.is_empty() {
            return Ok(Self(map));
        }
        let mut r = Reader::new(bytes);
        let count = r
            .u16()
            .map_err(|_| DecodeError::Malformed("encryption context count"))?;
        if count == 0 {
            return Err(DecodeError::Malformed(
                "encryption context has a zero pair count but a non-zero length",
            ));
        }
        for _ in 0..count {
            let key = utf8(
                r.u16_prefixed(),
                "an encryption context key runs past the context's length",
                "an encryption context key is not valid UTF-8",
            )?;
            let value = utf8(
                r.u16_prefixed(),
                "an encryption context value runs past the context's length",
                "an encryption context value is not valid UTF-8",
            )?;
            if map.insert(key, value).is_some() {
                return Err(DecodeError::Malformed("duplicate encryption context key"));
            }
        }
        if r.remaining() != 0 {
            return Err(DecodeError::Malformed(
                "encryption context length does not match its pairs",
            ));
        }
        Ok(Self(map))
    }
}

fn utf8(
    bytes: Result<&[u8], DecodeError>,
    short: &'static str,
    not_utf8: &'static str,
) -> Result<String, DecodeError> {
    // Inside the context's own length, running short is malformation, not truncation.
    let bytes = bytes.map_err(|_| DecodeError::Malformed(short))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed(not_utf8))
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EncryptionContext {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl From<BTreeMap<String, String>> for EncryptionContext {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_context_serializes_to_nothing() {
        assert!(EncryptionContext::new().serialize().unwrap().is_empty());
        assert_eq!(
            EncryptionContext::deserialize(&[]).unwrap(),
            EncryptionContext::new()
        );
    }

    #[test]
    fn pairs_are_sorted_by_utf8_bytes() {
        let ec: EncryptionContext = [("b", "2"), ("a", "1"), ("é", "3"), ("Z", "0")]
            .into_iter()
            .collect();
        let bytes = ec.serialize().unwrap();
        assert_eq!(&bytes[..2], &[0, 4]);
        assert_eq!(&bytes[2..7], &[0, 1, b'Z', 0, 1]);
        assert_eq!(EncryptionContext::deserialize(&bytes).unwrap(), ec);
    }

    #[test]
    fn duplicates_and_trailing_bytes_are_rejected() {
        let dup = [0, 2, 0, 1, b'a', 0, 0, 0, 1, b'a', 0, 0];
        assert!(EncryptionContext::deserialize(&dup).is_err());
        let trailing = [0, 1, 0, 1, b'a', 0, 0, 9];
        assert!(EncryptionContext::deserialize(&trailing).is_err());
        assert!(EncryptionContext::deserialize(&[0, 0]).is_err());
    }
}
