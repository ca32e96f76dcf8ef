//! Whether an object needs doing at all: a previous run may have finished it (its
//! output carries sealpipe's marker for this very source), or an in-place job may find
//! it encrypted already.

use super::Failed;
use super::marker::Marker;
use crate::format::{AlgorithmSuite, DecodeError, DecodeLimits, Header};
use crate::store::{ObjectId, ObjectMeta, S3Store, SourceInfo};

/// Which wrapping keys a finished output must carry, as its marker names them: every
/// key of `present`, none of `absent`, and with `only`, nothing else. A rewrap that
/// moves to new keys wants exactly those; one that keeps or drops keys wants the new
/// ones and none of those dropped (the kept ones are the source's, whose ETag matched).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeysWanted<'a> {
    /// Keys the output must carry.
    pub present: &'a [String],
    /// Keys it must not carry.
    pub absent: &'a [String],
    /// Whether it may carry no other key.
    pub only: bool,
}

impl KeysWanted<'_> {
    fn accepts(&self, carried: &[String]) -> bool {
        self.present.iter().all(|k| carried.contains(k))
            && !self.absent.iter().any(|k| carried.contains(k))
            && (!self.only || carried.iter().all(|k| self.present.contains(k)))
    }
}

/// Why `output` on S3 is finished work for the source with `etag` (and `version`): it
/// carries the marker of an output made from exactly that source, wrapped by the keys
/// `wanted` asks for. `None` when it does not exist or was made from something else.
/// Only S3 outputs carry the marker.
pub async fn finished_by_earlier_run(
    s3: &S3Store,
    output: &ObjectId,
    (etag, version): (&str, Option<&str>),
    wanted: KeysWanted<'_>,
) -> Result<Option<String>, Failed> {
    let head = s3
        .head(output)
        .await
        .map_err(|e| Failed::new("check destination", e))?;
    Ok(head
        .and_then(|h| Marker::read(&h.meta))
        .filter(|m| m.made_from(etag, version))
        .filter(|m| wanted.accepts(&m.wrapping_keys))
        .map(|_| {
            format!("already done: {output} carries sealpipe's marker for source ETag {etag}")
        }))
}

/// Why an object opened for in-place encryption is encrypted already, if it is: it
/// carries the marker, or its first bytes parse as an ESDK header.
pub fn already_encrypted(source: &SourceInfo) -> Option<String> {
    if let Some(reason) = marked_encrypted(&source.meta) {
        return Some(reason);
    }
    looks_like_message(&source.head)
        .then(|| "already an AWS Encryption SDK message (header recognised)".to_string())
}

/// Why an object with `meta` is encrypted already, if its marker says so.
pub fn marked_encrypted(meta: &ObjectMeta) -> Option<String> {
    Marker::read(meta)
        .map(|_| "already encrypted by sealpipe (its marker metadata is present)".to_string())
}

/// Whether an object's first bytes parse as an ESDK header of a known suite (or as the
/// beginning of one). A header naming a suite no ESDK defines is not taken for a
/// message: that would leave a plaintext unencrypted because its first bytes happen to
/// fit the layout.
fn looks_like_message(head: &[u8]) -> bool {
    match Header::decode(head, &DecodeLimits::default()) {
        Ok((header, _)) => header.body.suite.known().is_some(),
        Err(DecodeError::Truncated { .. }) => !head.is_empty() && known_suite_prefix(head),
        Err(_) => false,
    }
}

/// Whether a header too short to decode still starts as one of a known suite: a version
/// byte, then (v1: after the type byte 0x80) the ID of a suite defined for it.
fn known_suite_prefix(head: &[u8]) -> bool {
    let id_at = match head.first() {
        Some(0x01) => 2,
        Some(0x02) => 1,
        _ => return false,
    };
    if id_at == 2 && head.get(1).is_some_and(|t| *t != 0x80) {
        return false;
    }
    match head.get(id_at..id_at + 2) {
        Some(id) => AlgorithmSuite::from_id(u16::from_be_bytes([id[0], id[1]]))
            .is_some_and(|suite| suite.version.byte() == head[0]),
        // Too short to tell: decoding said it could still be a header.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_outputs_carry_the_wanted_keys_and_none_dropped() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (new, old) = (names(&["new"]), names(&["old"]));
        let moved = KeysWanted {
            present: &new,
            absent: &[],
            only: true,
        };
        assert!(moved.accepts(&names(&["new"])));
        assert!(
            !moved.accepts(&names(&["new", "old"])),
            "the old key must be gone"
        );
        assert!(!moved.accepts(&names(&["old"])));
        let dropped = KeysWanted {
            present: &new,
            absent: &old,
            only: false,
        };
        assert!(dropped.accepts(&names(&["new", "other"])));
        assert!(!dropped.accepts(&names(&["new", "old"])));
        assert!(KeysWanted::default().accepts(&names(&["anything"])));
    }

    #[test]
    fn only_headers_of_known_suites_look_like_messages() {
        let v2 = [0x02, 0x04, 0x78];
        let v1 = [0x01, 0x80, 0x00, 0x14];
        for (head, expected) in [
            (&v2[..], true),
            (&v1[..], true),
            (&[0x02][..], true),
            (&[0x02, 0x12, 0x34][..], false),
            (&[0x01, 0x80, 0x12, 0x34][..], false),
            (&[0x01, 0x81, 0x00, 0x14][..], false),
            // A v1 suite in a v2 header.
            (&[0x02, 0x00, 0x14][..], false),
            (&b"plain text"[..], false),
            (&[][..], false),
        ] {
            assert_eq!(looks_like_message(head), expected, "{head:02x?}");
        }
    }
}
