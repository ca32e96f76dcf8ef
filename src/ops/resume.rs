//! Whether an object needs doing at all: a previous run may have finished it (its
//! output carries sealpipe's marker for this very source), or an in-place job may find
//! it encrypted already.

use super::Failed;
use super::marker::Marker;
use crate::format::{DecodeError, DecodeLimits, Header};
use crate::store::{ObjectId, ObjectMeta, S3Store, SourceInfo};

/// Why `output` on S3 is finished work for the source with `etag` (and `version`): it
/// carries the marker of an output made from exactly that source. `None` when it does
/// not exist or was made from something else. Only S3 outputs carry the marker.
pub async fn finished_by_earlier_run(
    s3: &S3Store,
    output: &ObjectId,
    etag: &str,
    version: Option<&str>,
) -> Result<Option<String>, Failed> {
    let head = s3
        .head(output)
        .await
        .map_err(|e| Failed::new("check destination", e))?;
    Ok(head
        .and_then(|h| Marker::read(&h.meta))
        .filter(|m| m.made_from(etag, version))
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

/// Whether an object's first bytes parse as an ESDK header (or its beginning).
fn looks_like_message(head: &[u8]) -> bool {
    !head.is_empty()
        && matches!(
            Header::decode(head, &DecodeLimits::default()),
            Ok(_) | Err(DecodeError::Truncated { .. })
        )
}
