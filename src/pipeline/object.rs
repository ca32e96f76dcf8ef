//! One object, start to finish: skip it if a previous run finished it, open it, turn it
//! into its output, and commit the output only when every byte is authentic and
//! written. Runs on a blocking thread.

use std::io;
use std::sync::Arc;

use super::marker::{self, Marker};
use super::plan::Target;
use super::{Cancellable, Context, Mode};
use crate::Error;
use crate::format::{DecodeError, DecodeLimits, Header};
use crate::keys::EncryptionMaterials;
use crate::store::{
    self, Listed, LocalSink, ObjectId, ObjectMeta, ObjectSink, Precondition, S3Error, SourceObject,
};
use crate::stream::{self, EncryptingWriter};

/// How an object ended, when it did not fail.
enum Outcome {
    Done {
        bytes_in: u64,
        bytes_out: u64,
    },
    Skipped(String),
    /// Dry run: it would be processed.
    Planned,
}

/// Why an object failed: an error code for the completion report, a message that names
/// the step, and whether an in-place write found the object changed.
struct Failed {
    code: String,
    message: String,
    conflict: bool,
}

impl Failed {
    fn new(step: &str, e: impl Into<Error>) -> Self {
        let e = e.into();
        let s3 = match e.root() {
            Error::S3(s3) => Some(s3),
            Error::Io(io) => S3Error::in_io(io),
            _ => None,
        };
        let changed = match e.root() {
            Error::Io(io) => store::SourceChanged::in_io(io).is_some(),
            _ => false,
        };
        let code = match (s3, e.root()) {
            (Some(s3), _) => s3.code.clone(),
            (None, _) if changed => "SourceChanged".into(),
            (None, e) if e.is_authentication_failure() => "AuthenticationFailed".into(),
            (None, Error::Keyring(_)) => "KeyringError".into(),
            (None, Error::Decode(_) | Error::Truncated(_) | Error::TrailingData) => {
                "NotAValidMessage".into()
            }
            (None, Error::Io(_)) => "IOError".into(),
            (None, _) => "Error".into(),
        };
        Self {
            conflict: s3.is_some_and(S3Error::is_precondition_failed),
            code,
            message: format!("{step}: {e}"),
        }
    }
}

pub(super) fn process(ctx: &Context, listed: Listed) {
    let stats = &ctx.stats;
    match process_object(ctx, &listed) {
        Ok(Outcome::Done {
            bytes_in,
            bytes_out,
        }) => stats.succeed(&listed.id, bytes_in, bytes_out),
        Ok(Outcome::Skipped(reason)) => stats.skip(&listed.id, &reason),
        Ok(Outcome::Planned) => {}
        Err(f) if f.conflict && ctx.job.in_place => stats.conflict(
            &listed.id,
            format!(
                "{}; the object changed while sealpipe worked on it and was left as the \
                 other writer made it",
                f.message
            ),
        ),
        // Not in place, a failed precondition is a ranged read that found the object
        // replaced since its first range.
        Err(f) if f.conflict => stats.fail(
            &listed.id,
            &f.code,
            format!(
                "{}; the object changed while it was read, a re-run takes the new version",
                f.message
            ),
        ),
        Err(f) => stats.fail(&listed.id, &f.code, f.message),
    }
}

fn process_object(ctx: &Context, listed: &Listed) -> Result<Outcome, Failed> {
    let job = &ctx.job;
    let target = ctx.plan.target(job, listed).map_err(|m| Failed {
        code: "InvalidName".into(),
        message: m,
        conflict: false,
    })?;
    if !job.in_place
        && let Some(why) = replaces_source(&listed.id, &target)
    {
        return Err(Failed {
            code: "WouldReplaceSource".into(),
            message: why,
            conflict: false,
        });
    }
    // Resume: an output made from this very source is finished work. Manifests (and
    // some S3-compatible listings) give no ETag: a HEAD of the source is much cheaper
    // than the first ranged GET for finding it.
    let resumable =
        job.mode.writes_messages() && !job.in_place && matches!(target, Target::S3 { .. });
    let mut resume_checked = false;
    if resumable {
        let known = match (&listed.etag, &job.s3, &listed.id) {
            (Some(etag), ..) => Some((etag.clone(), version_of(&listed.id).map(str::to_string))),
            (None, Some(s3), ObjectId::S3 { .. }) => ctx
                .runtime
                .block_on(s3.head(&listed.id))
                .map_err(|e| Failed::new("read", e))?
                .map(|h| (h.etag, h.version)),
            _ => None,
        };
        if let Some((etag, version)) = known {
            if let Some(reason) = finished_by_earlier_run(ctx, &target, &etag, version.as_deref())?
            {
                return Ok(Outcome::Skipped(reason));
            }
            resume_checked = true;
        }
    }
    if job.dry_run {
        return dry_run(ctx, listed);
    }
    // The object's minimum working set in the byte budget, held until it is done.
    let _budget = match &job.s3 {
        Some(s3) => {
            let size = listed.size.unwrap_or(s3.settings().part_size);
            let read = matches!(listed.id, ObjectId::S3 { .. }).then_some(size);
            let write = matches!(target, Target::S3 { .. }).then_some(size);
            Some(ctx.runtime.block_on(s3.reserve_object(read, write)))
        }
        None => None,
    };
    let source = open(ctx, listed).map_err(|e| Failed::new("read", e))?;
    if resumable
        && !resume_checked
        && let Some(reason) =
            finished_by_earlier_run(ctx, &target, &source.etag, source.version.as_deref())?
    {
        return Ok(Outcome::Skipped(reason));
    }
    if job.in_place && job.mode == Mode::Encrypt {
        if Marker::read(&source.meta).is_some() {
            return Ok(Outcome::Skipped(ALREADY_ENCRYPTED.into()));
        }
        if looks_like_message(&source.head) {
            return Ok(Outcome::Skipped(
                "already an AWS Encryption SDK message (header recognised)".into(),
            ));
        }
    }
    let precondition = if job.in_place {
        Precondition::IfMatch(source.etag.clone())
    } else {
        Precondition::None
    };
    match job.mode {
        Mode::Encrypt => encrypt(ctx, source, &target, precondition),
        Mode::Decrypt | Mode::Verify => decrypt(ctx, source, &target, precondition),
        Mode::Reencrypt => reencrypt(ctx, source, &target, precondition),
    }
}

/// What a dry run can tell without reading bodies or using keys: sizes a manifest did
/// not give, and (in place) objects already encrypted.
fn dry_run(ctx: &Context, listed: &Listed) -> Result<Outcome, Failed> {
    let job = &ctx.job;
    let in_place_encrypt = job.in_place && job.mode == Mode::Encrypt;
    let (Some(s3), ObjectId::S3 { .. }) = (&job.s3, &listed.id) else {
        return Ok(Outcome::Planned);
    };
    if listed.size.is_some() && !in_place_encrypt {
        return Ok(Outcome::Planned);
    }
    let Some(head) = ctx
        .runtime
        .block_on(s3.head(&listed.id))
        .map_err(|e| Failed::new("read", e))?
    else {
        return Ok(Outcome::Planned);
    };
    if listed.size.is_none() {
        ctx.stats
            .bytes_planned
            .fetch_add(head.size, std::sync::atomic::Ordering::Relaxed);
    }
    if in_place_encrypt && Marker::read(&head.meta).is_some() {
        return Ok(Outcome::Skipped(ALREADY_ENCRYPTED.into()));
    }
    Ok(Outcome::Planned)
}

/// Why writing `target` would replace the source object itself, if it would. The plan
/// refuses such layouts up front where it can; this is the last line, for what only
/// shows per object: manifests naming objects under the destination, hard links, bind
/// mounts, directories swapped for symbolic links mid-run.
fn replaces_source(source: &ObjectId, target: &Target) -> Option<String> {
    let same = match (source, target) {
        (ObjectId::Local(src), Target::Local(out)) => store::same_file(src, out),
        (ObjectId::S3 { bucket, key, .. }, Target::S3 { bucket: b, key: k }) => {
            bucket == b && key == k
        }
        _ => false,
    };
    same.then(|| {
        "its output would replace the source itself; nothing was written (only \
         --in-place replaces sources, and only on S3)"
            .to_string()
    })
}

const ALREADY_ENCRYPTED: &str = "already encrypted by sealpipe (its marker metadata is present)";

fn version_of(id: &ObjectId) -> Option<&str> {
    match id {
        ObjectId::S3 { version, .. } => version.as_deref(),
        ObjectId::Local(_) => None,
    }
}

/// Whether the destination already holds the output of this exact source (a previous
/// run finished it). Only S3 destinations carry the marker.
fn finished_by_earlier_run(
    ctx: &Context,
    target: &Target,
    etag: &str,
    version: Option<&str>,
) -> Result<Option<String>, Failed> {
    let (Target::S3 { .. }, Some(s3), Some(id)) = (target, &ctx.job.s3, target.id()) else {
        return Ok(None);
    };
    let head = ctx
        .runtime
        .block_on(s3.head(&id))
        .map_err(|e| Failed::new("check destination", e))?;
    Ok(head
        .and_then(|h| Marker::read(&h.meta))
        .filter(|m| m.made_from(etag, version))
        .map(|_| format!("already done: {id} carries sealpipe's marker for source ETag {etag}")))
}

/// Whether an object's first bytes parse as an ESDK header (or its beginning).
fn looks_like_message(head: &[u8]) -> bool {
    !head.is_empty()
        && matches!(
            Header::decode(head, &DecodeLimits::default()),
            Ok(_) | Err(DecodeError::Truncated { .. })
        )
}

fn open(ctx: &Context, listed: &Listed) -> Result<SourceObject, Error> {
    match (&listed.id, &ctx.job.s3) {
        (ObjectId::Local(path), _) => Ok(store::open_local(path)?),
        (ObjectId::S3 { .. }, Some(s3)) => Ok(s3.open(&listed.id)?),
        (ObjectId::S3 { .. }, None) => unreachable!("S3 jobs have a store"),
    }
}

fn sink(
    ctx: &Context,
    target: &Target,
    meta: ObjectMeta,
    precondition: Precondition,
    size_hint: u64,
) -> Result<Box<dyn ObjectSink>, Failed> {
    match (target, &ctx.job.s3) {
        (Target::Local(path), _) => Ok(Box::new(
            LocalSink::create(path, meta.mode).map_err(|e| Failed::new("write", e))?,
        )),
        (Target::S3 { bucket, key }, Some(s3)) => Ok(Box::new(s3.sink(
            bucket,
            key,
            meta,
            precondition,
            size_hint,
        ))),
        (Target::S3 { .. }, None) => unreachable!("S3 jobs have a store"),
        (Target::Discard, _) => Ok(Box::new(Discard(0))),
    }
}

/// `verify`'s sink: counts and forgets.
struct Discard(u64);

impl io::Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectSink for Discard {
    fn commit(self: Box<Self>) -> Result<u64, Error> {
        Ok(self.0)
    }
}

/// A message's size for `plaintext` bytes, roughly (frame overhead plus a header).
fn message_size_hint(ctx: &Context, plaintext: u64) -> u64 {
    let frame = u64::from(ctx.job.encrypt.frame_length.max(1));
    plaintext + plaintext.div_ceil(frame) * 32 + 4096
}

fn materials(ctx: &Context, size: u64) -> Result<Arc<EncryptionMaterials>, Failed> {
    let pool = ctx
        .pool
        .as_ref()
        .expect("jobs that write messages have a pool");
    ctx.runtime
        .block_on(pool.materials(&ctx.job.context, size))
        .map_err(|e| Failed::new("data key", e))
}

fn encrypt(
    ctx: &Context,
    source: SourceObject,
    target: &Target,
    precondition: Precondition,
) -> Result<Outcome, Failed> {
    let materials = materials(ctx, source.size)?;
    let marker = Marker {
        source_etag: source.etag.clone(),
        source_version: source.version.clone(),
        plaintext_length: Some(source.size),
        wrapping_keys: marker::wrapping_key_names(&materials.encrypted_data_keys),
    };
    let mut writer = message_writer(ctx, &source, marker, &materials, target, precondition)?;
    let mut input = Cancellable {
        inner: source.reader,
        cancel: ctx.cancel.clone(),
    };
    writer
        .copy_from(&mut input)
        .map_err(|e| Failed::new("encrypt", e))?;
    let (out, summary) = writer.finish().map_err(|e| Failed::new("encrypt", e))?;
    let written = out.commit().map_err(|e| Failed::new("write", e))?;
    Ok(Outcome::Done {
        bytes_in: summary.plaintext_bytes,
        bytes_out: written,
    })
}

/// The writer of a new message for `source` at `target`: the source's metadata plus
/// sealpipe's `marker`.
fn message_writer(
    ctx: &Context,
    source: &SourceObject,
    marker: Marker,
    materials: &EncryptionMaterials,
    target: &Target,
    precondition: Precondition,
) -> Result<EncryptingWriter<Box<dyn ObjectSink>>, Failed> {
    let mut meta = source.meta.clone();
    marker.write(&mut meta);
    let plaintext = marker.plaintext_length.unwrap_or(source.size);
    let out = sink(
        ctx,
        target,
        meta,
        precondition,
        message_size_hint(ctx, plaintext),
    )?;
    EncryptingWriter::new(out, materials, &ctx.job.encrypt).map_err(|e| Failed::new("encrypt", e))
}

/// Decrypts into `target` (or nowhere, for `verify`). Frames are released only after
/// their tags verify, and the output is committed only after the whole message (and its
/// signature) did, so a tampered object never leaves partial plaintext behind.
fn decrypt(
    ctx: &Context,
    source: SourceObject,
    target: &Target,
    precondition: Precondition,
) -> Result<Outcome, Failed> {
    let marker = Marker::read(&source.meta);
    let mut meta = source.meta.clone();
    marker::strip(&mut meta);
    let hint = marker
        .as_ref()
        .and_then(|m| m.plaintext_length)
        .unwrap_or(source.size);
    let mut out = sink(ctx, target, meta, precondition, hint)?;
    // The whole message was read to get here: what came in is the ciphertext.
    let bytes_in = source.size;
    let plaintext_len = open_message(ctx, source, &mut out)?;
    check_length(marker.as_ref(), plaintext_len)?;
    let written = out.commit().map_err(|e| Failed::new("write", e))?;
    Ok(Outcome::Done {
        bytes_in,
        bytes_out: written,
    })
}

/// Decrypts the old message straight into a new one: the plaintext never rests
/// anywhere, and the new message is committed only if the old one was authentic.
fn reencrypt(
    ctx: &Context,
    source: SourceObject,
    target: &Target,
    precondition: Precondition,
) -> Result<Outcome, Failed> {
    let old = Marker::read(&source.meta);
    let expected = old
        .as_ref()
        .and_then(|m| m.plaintext_length)
        .unwrap_or(source.size);
    let materials = materials(ctx, expected)?;
    let wrapping_keys = marker::wrapping_key_names(&materials.encrypted_data_keys);
    if ctx.job.in_place
        && old
            .as_ref()
            .is_some_and(|m| m.wrapping_keys == wrapping_keys)
    {
        return Ok(Outcome::Skipped(format!(
            "already wrapped by the target keys ({})",
            wrapping_keys.join(", ")
        )));
    }
    let marker = Marker {
        source_etag: source.etag.clone(),
        source_version: source.version.clone(),
        plaintext_length: old.as_ref().and_then(|m| m.plaintext_length),
        wrapping_keys,
    };
    let mut writer = message_writer(ctx, &source, marker, &materials, target, precondition)?;
    let bytes_in = source.size;
    let plaintext_len = open_message(ctx, source, &mut writer)?;
    check_length(old.as_ref(), plaintext_len)?;
    let (out, _) = writer.finish().map_err(|e| Failed::new("encrypt", e))?;
    let written = out.commit().map_err(|e| Failed::new("write", e))?;
    Ok(Outcome::Done {
        bytes_in,
        bytes_out: written,
    })
}

/// Decrypts `source` into `out`; returns the plaintext length.
fn open_message(
    ctx: &Context,
    source: SourceObject,
    out: &mut impl io::Write,
) -> Result<u64, Failed> {
    let job = &ctx.job;
    let keyring = job
        .unwrap_keyring
        .as_ref()
        .expect("jobs that read messages have a keyring");
    let mut input = Cancellable {
        inner: source.reader,
        cancel: ctx.cancel.clone(),
    };
    let (_, plaintext_len) = stream::decrypt_with(&mut input, out, &job.decrypt, |header| {
        ctx.runtime.block_on(ctx.decrypt_cache.materials(
            keyring.as_ref(),
            &header.body,
            &job.reproduced_context,
        ))
    })
    .map_err(|e| Failed::new("decrypt", e))?;
    Ok(plaintext_len)
}

/// The marker's plaintext length is not authenticated, but a mismatch means the
/// metadata and the body do not belong together: refuse rather than guess.
fn check_length(marker: Option<&Marker>, actual: u64) -> Result<(), Failed> {
    match marker.and_then(|m| m.plaintext_length) {
        Some(expected) if expected != actual => Err(Failed {
            code: "LengthMismatch".into(),
            message: format!(
                "decrypt: the message holds {actual} plaintext bytes but the object's \
                 sealpipe-plaintext-length metadata says {expected}"
            ),
            conflict: false,
        }),
        _ => Ok(()),
    }
}
