//! Rewrapping one object: its data key recovered with the old keys and wrapped under the
//! new ones, a new header with those encrypted data keys and a new header tag, then the
//! body as it was, byte for byte. The body is never decrypted: it is copied, by S3 or the
//! kernel where they can (see [`BodyCopy`]), so a large object moves with a few MiB
//! through sealpipe.
//!
//! The old header is authenticated before anything is written (key commitment and tag);
//! the body is not, since nothing reads it: `verify` with the new keys checks every
//! frame afterwards, and the README's migration does exactly that.
//!
//! A v2 header is tagged again under its fixed nonce only when the caller accepts the
//! reuse ([`HeaderNonce`], and `crate::stream`'s rewrap module for why it matters).

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use super::encrypt::Sealer;
use super::marker::{self, Marker};
use super::reencrypt::{Opened, seal_opened};
use super::{Failed, MakeSink, Opener, Outcome, header, run_through};
use crate::Error;
use crate::bridge::Cancel;
use crate::format::{EncryptedDataKey, EncryptionContext, HeaderBody, RESERVED_PREFIX};
use crate::keys::{KeepPolicy, Rewrapper, data_key_fingerprint};
use crate::store::{Body, MIN_PART_SIZE, ObjectId, Payload, Sink, SourceObject};
use crate::stream::{self, DecryptOptions, HeaderNonce};

/// What rewrapping takes: the keys on both sides, and how messages are read.
#[derive(Clone, Copy)]
pub struct Rewrap<'a> {
    /// Recovers data keys with the old keys, wraps them under the new ones.
    pub rewrapper: &'a Rewrapper,
    /// Commitment policy and limits for the messages read.
    pub options: &'a DecryptOptions,
    /// Context pairs a message must carry (and authenticate-only pairs it needs).
    pub reproduced_context: &'a EncryptionContext,
    /// Told each rewrapped message's data key fingerprint, for the report's count of
    /// distinct data keys.
    pub saw_data_key: &'a (dyn Fn([u8; 32]) + Sync),
    /// The new keys' names as the marker records them, when all are known before KMS
    /// answers (no alias among them): an in-place re-run then skips without a KMS call.
    pub new_key_names: Option<&'a [String]>,
    /// Whether v2 headers may be tagged again under their fixed nonce.
    pub header_nonce: HeaderNonce,
}

/// How the body gets from the source to the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyCopy {
    /// Through sealpipe, chunk by chunk (an S3 object to a local file or back, and S3
    /// objects too small for a copy to pay).
    Stream,
    /// By the store itself from `from` (the source, its version pinned): S3's
    /// UploadPartCopy, after a first part of the new header and the body's first bytes
    /// (S3 wants 5 MiB before a copied part); the kernel for local files.
    Copy {
        /// The source object.
        from: ObjectId,
        /// Bytes the first part must hold before a range can be copied.
        first_part: u64,
    },
}

impl BodyCopy {
    /// Copied by S3 from `from`: the first part is S3's minimum.
    pub fn s3(from: ObjectId) -> Self {
        Self::Copy {
            from,
            first_part: MIN_PART_SIZE,
        }
    }

    /// Copied by the kernel from the local file `from`.
    pub fn local(from: ObjectId) -> Self {
        Self::Copy {
            from,
            first_part: 0,
        }
    }
}

/// What to do with a signed message, whose header only its writer could sign again.
#[derive(Clone, Copy)]
pub enum Signed<'a> {
    /// Fail it, naming `reencrypt`.
    Refuse,
    /// Re-encrypt it under a fresh data key of the sealer's, reading it with the opener.
    Reencrypt(Opener<'a>, Sealer<'a>),
}

/// Rewraps `source` into the sink `out` makes, the body moved as `copy` says. With
/// `skip_if_already_wrapped` (in place), a message already wrapped by exactly the keys
/// the rewrap would leave is skipped.
pub async fn rewrap(
    keys: Rewrap<'_>,
    source: SourceObject,
    copy: &BodyCopy,
    signed: Signed<'_>,
    out: &dyn MakeSink,
    skip_if_already_wrapped: bool,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let SourceObject { info, mut body } = source;
    let (header, rest) = header::read(body.as_mut(), &keys.options.limits)
        .await
        .map_err(|e| Failed::new("read header", e))?;
    let suite =
        stream::check_policy(&header, keys.options).map_err(|e| Failed::new("rewrap", e))?;
    if suite.signature.is_some() {
        return match signed {
            Signed::Refuse => Err(Failed::new("rewrap", Error::SignedMessage { suite })),
            Signed::Reencrypt(opener, sealer) => {
                // The new message keeps the old one's context (reproduced pairs become
                // stored ones), less the reserved signing key of the old suite.
                let mut context: EncryptionContext = header
                    .body
                    .context
                    .iter()
                    .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
                    .collect();
                for (k, v) in keys.reproduced_context.iter() {
                    context.insert(k, v);
                }
                let sealer = Sealer {
                    context: &context,
                    ..sealer
                };
                let decryptor = opener.unlock(header).await?;
                let opened = Opened {
                    decryptor,
                    rest,
                    body,
                };
                let materials = sealer.materials(info.size).await?;
                seal_opened(opened, &info, sealer, materials, out, cancel).await
            }
        };
    }
    if skip_if_already_wrapped
        && let Some(new) = keys.new_key_names
        && let Some(reason) = wrapped_as_wanted(&header.body, keys.rewrapper.keep(), new)
    {
        return Ok(Outcome::Skipped(reason));
    }
    // Refusals the header alone decides come before any KMS call.
    stream::check_rewrappable(&suite, keys.header_nonce).map_err(|e| Failed::new("rewrap", e))?;
    if let Ok(fingerprint) = data_key_fingerprint(&header.body, keys.reproduced_context) {
        (keys.saw_data_key)(fingerprint);
    }
    let rewrapped = keys
        .rewrapper
        .rewrap(&header.body, keys.reproduced_context)
        .await
        .map_err(|e| Failed::new("rewrap", e))?;
    let new_keys = marker::wrapping_key_names(&rewrapped.encrypted_data_keys);
    if skip_if_already_wrapped {
        let old_keys = marker::wrapping_key_names(&header.body.encrypted_data_keys);
        let set = |names: &[String]| names.iter().cloned().collect::<BTreeSet<_>>();
        if set(&old_keys) == set(&new_keys) {
            return Ok(Outcome::Skipped(format!(
                "already wrapped by exactly the target keys ({})",
                new_keys.join(", ")
            )));
        }
    }
    let new_header = stream::rewrap_header(
        &header,
        &rewrapped.materials,
        &rewrapped.encrypted_data_keys,
        keys.options,
        keys.header_nonce,
    )
    .map_err(|e| Failed::new("rewrap", e))?;
    drop(rewrapped);
    let body_start = header.len() as u64;
    let body_len = info.size.checked_sub(body_start).ok_or_else(|| {
        Failed::with_code(
            "NotAValidMessage",
            "rewrap: the object is shorter than its header".into(),
        )
    })?;
    let mut meta = info.meta.clone();
    let old = Marker::read(&meta);
    Marker {
        source_etag: info.etag.clone(),
        source_version: info.version.clone(),
        plaintext_length: old.and_then(|m| m.plaintext_length),
        wrapping_keys: new_keys,
    }
    .write(&mut meta);
    let size = new_header.len() as u64 + body_len;
    let mut sink = out
        .make(meta, Payload::Message, size)
        .await
        .map_err(|e| Failed::new("write", e))?;
    let bytes_out = match copy {
        // Through sealpipe: the header, then the body's bytes, on the codec's side of
        // the bridge (a local file is read and written on one thread); committed only
        // once the whole body was copied.
        BodyCopy::Stream => {
            let work: super::Work<u64> = Box::new(move |reader, writer| {
                writer.write_all(&new_header)?;
                copy_all(reader, writer)
            });
            let accept = |copied: &u64| match *copied == body_len {
                true => Ok(()),
                false => Err(Failed::with_code(
                    "LengthMismatch",
                    format!("read: the body held {copied} bytes, {body_len} were expected"),
                )),
            };
            run_through("rewrap", (body, rest, cancel), sink, work, accept)
                .await?
                .1
        }
        BodyCopy::Copy { from, first_part } => {
            let moved = copy_body(
                sink.as_mut(),
                (new_header, rest, body),
                (from, *first_part),
                (&info.etag, body_start, info.size),
                cancel,
            )
            .await;
            if let Err(e) = moved {
                sink.abort().await;
                return Err(e);
            }
            sink.commit().await.map_err(|e| Failed::new("write", e))?
        }
    };
    if bytes_out != size {
        // Committed already: say so rather than leave a wrong output unreported.
        return Err(Failed::with_code(
            "LengthMismatch",
            format!("write: the output holds {bytes_out} bytes, {size} were expected"),
        ));
    }
    Ok(Outcome::Done {
        bytes_in: info.size,
        bytes_out,
    })
}

/// Why the message whose header is `header` needs no rewrap, if it needs none: it is
/// wrapped by exactly the keys the rewrap would leave, those `keep` keeps and the new
/// ones, named `new` as the marker records them. Decided from the header alone, before
/// any KMS call.
pub fn wrapped_as_wanted(header: &HeaderBody, keep: &KeepPolicy, new: &[String]) -> Option<String> {
    let set = |names: Vec<String>| names.into_iter().collect::<BTreeSet<_>>();
    let now = set(marker::wrapping_key_names(&header.encrypted_data_keys));
    let kept: Vec<EncryptedDataKey> = keep
        .kept(&header.encrypted_data_keys)
        .into_iter()
        .cloned()
        .collect();
    let mut wanted = set(marker::wrapping_key_names(&kept));
    wanted.extend(new.iter().cloned());
    (now == wanted).then(|| {
        format!(
            "already wrapped by exactly the target keys ({})",
            now.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Writes the new header and the body's first bytes (`first_part` in all, what S3 wants
/// before a copied part), then has the store copy the rest of the body from `from`.
/// `at` is the source's ETag, where its body starts, and its size.
async fn copy_body(
    sink: &mut dyn Sink,
    (new_header, rest, mut body): (Vec<u8>, Bytes, Box<dyn Body>),
    (from, first_part): (&ObjectId, u64),
    (etag, body_start, size): (&str, u64, u64),
    cancel: &Cancel,
) -> Result<(), Failed> {
    let write = |e: Error| Failed::new("write", e);
    let want = (first_part as usize).saturating_sub(new_header.len());
    let mut first = BytesMut::with_capacity(new_header.len() + want);
    first.extend_from_slice(&new_header);
    let mut taken = 0u64;
    let mut pending = Some(rest);
    while taken < want as u64 {
        let chunk = match pending.take() {
            Some(chunk) => chunk,
            None => match body
                .next_chunk()
                .await
                .map_err(|e| Failed::new("read", e))?
            {
                Some(chunk) => chunk,
                None => break,
            },
        };
        let n = chunk.len().min(want - taken as usize);
        first.extend_from_slice(&chunk[..n]);
        taken += n as u64;
    }
    drop(body);
    sink.put(first).await.map_err(write)?;
    stopped(cancel)?;
    let copied_from = body_start + taken;
    if copied_from < size {
        sink.copy_range(from, etag, copied_from..size)
            .await
            .map_err(write)?;
    }
    Ok(())
}

/// Copies what is left of `reader` to `writer`; returns the bytes copied.
fn copy_all(reader: &mut dyn std::io::Read, writer: &mut dyn std::io::Write) -> Result<u64, Error> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        writer.write_all(&buf[..n])?;
        copied += n as u64;
    }
}

/// Bytes per read and write of a body copied through sealpipe.
const COPY_BUFFER: usize = 256 * 1024;

/// Fails when the job was cancelled: a long body stops between buffers.
fn stopped(cancel: &Cancel) -> Result<(), Failed> {
    if cancel.is_cancelled() {
        Err(Failed::new("rewrap", Error::Cancelled))
    } else {
        Ok(())
    }
}
