//! One object within a job: where its output goes, whether it may be written there,
//! whether an earlier run finished it, its share of the byte budget; then the operation
//! in `crate::ops` that the job's work names, and its outcome in the statistics.

use std::sync::atomic::Ordering::Relaxed;

use super::plan::Target;
use super::presence::Presence;
use super::s3ec::{self, Reading};
use super::{Context, Job, Opening, Rewrapping, Running, Work};
use crate::Error;
use crate::keys::data_key_fingerprint;
use crate::ops::{self, BodyCopy, Failed, MakeSink, Outcome, marker, resume};
use crate::store::{
    self, BoxFuture, Discard, Listed, LocalSink, MIN_PART_SIZE, ObjectId, ObjectMeta, Payload,
    Precondition, ReadAhead, S3Store, Sink, SourceInfo, SourceObject,
};
use crate::stream;

/// Objects up to this size are fetched rather than looked at (HEAD) to learn their ETag
/// when the listing gave none: a first run then makes one request fewer per object, and
/// a re-run pays at most a MiB of transfer for what a HEAD would have told.
const SMALL_OBJECT: u64 = 1024 * 1024;

/// What became of one object, as the statistics recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Its output is committed.
    Succeeded,
    /// Nothing needed doing, and why (an earlier run finished it, ...).
    Skipped(String),
    /// A dry run's "would be processed".
    WouldProcess,
    /// It failed: the report's code and message, and whether the same work may
    /// succeed later ([`crate::Error::is_transient`]).
    Failed {
        /// The completion report's error code.
        code: String,
        /// What failed, starting with the step.
        message: String,
        /// Whether the same work may succeed later.
        transient: bool,
    },
}

pub(super) async fn process(ctx: &Context, listed: Listed, destination: Presence) -> Finished {
    let stats = &ctx.stats;
    let started = std::time::Instant::now();
    let (code, message, transient) = match process_object(ctx, &listed, destination).await {
        Ok(Some(Outcome::Done {
            bytes_in,
            bytes_out,
        })) => {
            stats.latency.record(started.elapsed());
            stats.succeed(&listed.id, bytes_in, bytes_out);
            return Finished::Succeeded;
        }
        Ok(Some(Outcome::Skipped(reason))) => {
            stats.skip(&listed.id, &reason);
            return Finished::Skipped(reason);
        }
        Ok(None) => return Finished::WouldProcess,
        Err(f) if f.conflict && ctx.job.in_place() => {
            let message = format!(
                "{}; the object changed while sealpipe worked on it and was left as the \
                 other writer made it",
                f.message
            );
            stats.conflict(&listed.id, message.clone());
            ("PreconditionFailed".to_string(), message, false)
        }
        // Not in place, a failed precondition is a ranged read that found the object
        // replaced since its first range: reading it again takes the new version.
        Err(f) if f.conflict => {
            let message = format!(
                "{}; the object changed while it was read, a re-run takes the new version",
                f.message
            );
            stats.fail(&listed.id, &f.code, message.clone());
            (f.code, message, true)
        }
        Err(f) => {
            stats.fail(&listed.id, &f.code, f.message.clone());
            (f.code, f.message, f.transient)
        }
    };
    Finished::Failed {
        code,
        message,
        transient,
    }
}

/// Processes one object; `None` is a dry run's "would be processed". `destination` is
/// what the destination's listing said of the output.
///
/// An output the listing did not have is written only where nothing is (S3's
/// `If-None-Match: *`), and needs no HEAD first. Refused, it appeared after the
/// listing (a killed run's upload that completed late, another worker): the object is
/// then processed as when nothing is known, so the HEAD decides whether that output is
/// finished work.
///
/// A transient failure that the request's own retries could not cover (a streamed
/// part upload: its bytes are gone once sent) processes the object again from its
/// start, up to [`RESTARTS`] times; the failed upload was aborted, so nothing of it
/// remains.
async fn process_object(
    ctx: &Context,
    listed: &Listed,
    destination: Presence,
) -> Result<Option<Outcome>, Failed> {
    let mut restarts = 0;
    loop {
        let done = match attempt(ctx, listed, destination).await {
            Err(f) if f.conflict && destination == Presence::Absent => {
                attempt(ctx, listed, Presence::Unknown).await
            }
            done => done,
        };
        match done {
            Err(f) if f.restart && restarts < RESTARTS && !ctx.cancel.is_cancelled() => {
                restarts += 1;
                if let Some(s3) = &ctx.job.s3 {
                    s3.stats().objects_restarted.fetch_add(1, Relaxed);
                }
                crate::retry::backoff_sleep(RESTART_DELAY * restarts).await;
            }
            done => return done,
        }
    }
}

/// How often one object is processed again after failures only that can retry.
const RESTARTS: u32 = 2;
/// The wait before the first of them; the second waits twice as long.
const RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// One attempt at [`process_object`].
async fn attempt(
    ctx: &Context,
    listed: &Listed,
    destination: Presence,
) -> Result<Option<Outcome>, Failed> {
    let job = &ctx.job;
    let target = ctx
        .plan
        .target(job, listed)
        .map_err(|m| Failed::with_code("InvalidName", m))?;
    if !job.in_place()
        && let Some(why) = replaces_source(&listed.id, &target)
    {
        return Err(Failed::with_code("WouldReplaceSource", why));
    }
    // Resume: an output made from this very source is finished work. Manifests (and
    // some S3-compatible listings) give no ETag: a HEAD of the source finds it, much
    // cheaper than the first ranged GET of a large object. A small object's GET costs
    // what a HEAD does, so its ETag comes with its body instead, one request fewer.
    let resume_in = match (&target, &job.s3) {
        (Target::S3 { .. }, Some(s3)) if job.mode().writes_messages() && !job.in_place() => {
            target.id().map(|output| (s3, output))
        }
        _ => None,
    };
    // A rewrap's output is finished only if it carries the keys the rewrap leaves.
    let dropped: Vec<String>;
    let wanted = match &job.work {
        Work::Rewrap { to, .. } => {
            dropped = to
                .keep
                .drop
                .iter()
                .map(|k| marker::recorded_name(k))
                .collect();
            resume::KeysWanted {
                present: to.expected_keys.as_deref().unwrap_or_default(),
                absent: &dropped,
                // Moving (nothing kept) wants exactly the new keys, when all are named.
                only: !to.keep.keep_existing
                    && to.keep.drop.is_empty()
                    && to.expected_keys.is_some(),
            }
        }
        _ => resume::KeysWanted::default(),
    };
    // An output the destination's listing did not have is no earlier run's work.
    let absent = resume_in.is_some() && destination == Presence::Absent;
    let mut resume_checked = absent;
    if let Some((s3, output)) = &resume_in
        && !resume_checked
    {
        let known = match (&listed.etag, &listed.id) {
            (Some(etag), id) => Some((etag.clone(), version_of(id).map(str::to_string))),
            (None, ObjectId::S3 { .. }) if listed.size.is_some_and(|n| n <= SMALL_OBJECT) => None,
            (None, ObjectId::S3 { .. }) => s3
                .head(&listed.id)
                .await
                .map_err(|e| Failed::new("read", e))?
                .map(|h| (h.etag, h.version)),
            (None, ObjectId::Local(_)) => None,
        };
        if let Some((etag, version)) = known {
            if let Some(reason) =
                resume::finished_by_earlier_run(s3, output, (&etag, version.as_deref()), wanted)
                    .await?
            {
                return Ok(Some(Outcome::Skipped(reason)));
            }
            resume_checked = true;
        }
    }
    if job.dry_run {
        return dry_run(ctx, listed).await;
    }
    if let Running::Scan = ctx.running {
        return scan(ctx, listed).await;
    }
    // The object's minimum working set in the byte budget, held until it is done.
    let _budget = match &job.s3 {
        Some(s3) => {
            let size = listed.size.unwrap_or(s3.settings().part_size);
            let read = matches!(listed.id, ObjectId::S3 { .. }).then_some(size);
            let write = matches!(target, Target::S3 { .. }).then_some(size);
            Some(s3.reserve_object(read, write).await)
        }
        None => None,
    };
    let read_ahead = match &ctx.running {
        Running::Rewrap(r) if copies_on_s3(listed, &target, r.copy_above) => ReadAhead::OnDemand {
            first: REWRAP_FIRST_GET,
        },
        _ => ReadAhead::Parts,
    };
    let source = open(ctx, listed, read_ahead)
        .await
        .map_err(|e| Failed::new("read", e))?;
    if let Some((s3, output)) = &resume_in
        && !resume_checked
        && let Some(reason) = resume::finished_by_earlier_run(
            s3,
            output,
            (&source.info.etag, source.info.version.as_deref()),
            wanted,
        )
        .await?
    {
        return Ok(Some(Outcome::Skipped(reason)));
    }
    let out = Output {
        target: &target,
        source: &listed.id,
        s3: job.s3.as_ref(),
        precondition: if job.in_place() {
            Precondition::IfMatch(source.info.etag.clone())
        } else if absent {
            Precondition::IfAbsent
        } else {
            Precondition::None
        },
    };
    let cancel = &ctx.cancel;
    let outcome = match &ctx.running {
        Running::Encrypt(sealed) => {
            if job.in_place()
                && let Some(reason) = resume::already_encrypted(&source.info)
            {
                return Ok(Some(Outcome::Skipped(reason)));
            }
            ops::encrypt(sealed.sealer(), source, &out, cancel).await
        }
        Running::Decrypt(opened) | Running::Verify(opened) | Running::Reencrypt(opened, _) => {
            let s3 = job.s3.as_ref();
            let envelope =
                match s3ec::reading(s3, &listed.id, &source.info, opened.source_format).await? {
                    Reading::Esdk => None,
                    Reading::S3ec(envelope) => Some(envelope),
                    Reading::InstructionFile => {
                        return Ok(Some(Outcome::Skipped(
                            "an S3 Encryption Client instruction file: read with its object".into(),
                        )));
                    }
                };
            let opener = opened.opener();
            match (&ctx.running, envelope) {
                (Running::Decrypt(_), None) => ops::decrypt(opener, source, &out, cancel).await,
                (Running::Decrypt(_), Some(e)) => {
                    ops::decrypt_s3ec(opener, &e, source, &out, cancel).await
                }
                (Running::Verify(_), None) => ops::verify(opener, source, cancel).await,
                (Running::Verify(_), Some(e)) => ops::verify_s3ec(opener, &e, source, cancel).await,
                (Running::Reencrypt(_, sealed), None) => {
                    let skip_if_wrapped = job.in_place();
                    let sealer = sealed.sealer();
                    ops::reencrypt(opener, sealer, source, &out, skip_if_wrapped, cancel).await
                }
                (Running::Reencrypt(_, sealed), Some(e)) => {
                    ops::reencrypt_s3ec(opener, sealed.sealer(), &e, source, &out, cancel).await
                }
                _ => Err(Failed::with_code(
                    "Error",
                    "internal error: a job that reads messages changed its work".into(),
                )),
            }
        }
        Running::Rewrap(r) => {
            let copy = body_copy(&listed.id, &target, &source.info, r.copy_above);
            let saw = |fingerprint| ctx.stats.saw_data_key(fingerprint);
            let keys = r.keys(&saw, expected_keys(job));
            ops::rewrap(
                keys,
                source,
                &copy,
                r.signed(),
                &out,
                job.in_place(),
                cancel,
            )
            .await
        }
        Running::DryRun => return dry_run(ctx, listed).await,
        Running::Scan => return scan(ctx, listed).await,
    };
    outcome.map(Some)
}

/// The first GET of a scanned object: its metadata and enough bytes for most ESDK
/// headers (a longer one is read on).
const SCAN_FIRST_GET: u64 = 4096;

/// Scans one object into the job's inventory: one GET of its first bytes, which brings
/// metadata and server-side encryption too.
async fn scan(ctx: &Context, listed: &Listed) -> Result<Option<Outcome>, Failed> {
    let _budget = match (&ctx.job.s3, &listed.id) {
        (Some(s3), ObjectId::S3 { .. }) => {
            Some(s3.reserve_object(Some(SCAN_FIRST_GET), None).await)
        }
        _ => None,
    };
    let opened = open(
        ctx,
        listed,
        ReadAhead::OnDemand {
            first: SCAN_FIRST_GET,
        },
    )
    .await;
    let (protection, size) = match opened {
        Ok(source) => {
            let size = source.info.size;
            let limits = stream::DecryptOptions::default().limits;
            (ops::scan(source, &limits).await?, size)
        }
        // S3 refuses to serve an SSE-C object, even its metadata, without its key.
        Err(Error::S3(e)) if e.code == "InvalidRequest" && e.message.contains("Server Side") => (
            ops::Protection {
                server_side: "SSE-C".into(),
                client_side: "unknown (an SSE-C object is read only with its key)".into(),
            },
            listed.size.unwrap_or(0),
        ),
        Err(e) => return Err(Failed::new("read", e)),
    };
    ctx.stats.scanned(protection, size);
    Ok(Some(Outcome::Done {
        bytes_in: size.min(SCAN_FIRST_GET),
        bytes_out: 0,
    }))
}

/// What a dry run can tell without reading bodies or using keys: sizes a manifest did
/// not give, and (in place) objects already encrypted.
async fn dry_run(ctx: &Context, listed: &Listed) -> Result<Option<Outcome>, Failed> {
    let job = &ctx.job;
    if let Work::Rewrap { from, to, .. } = &job.work {
        return plan_rewrap(ctx, listed, from, to).await;
    }
    let in_place_encrypt = job.in_place() && job.mode() == super::Mode::Encrypt;
    let (Some(s3), ObjectId::S3 { .. }) = (&job.s3, &listed.id) else {
        return Ok(None);
    };
    if listed.size.is_some() && !in_place_encrypt {
        return Ok(None);
    }
    let Some(head) = s3
        .head(&listed.id)
        .await
        .map_err(|e| Failed::new("read", e))?
    else {
        return Ok(None);
    };
    if listed.size.is_none() {
        ctx.stats
            .bytes_planned
            .fetch_add(head.size, std::sync::atomic::Ordering::Relaxed);
    }
    if in_place_encrypt && let Some(reason) = resume::marked_encrypted(&head.meta) {
        return Ok(Some(Outcome::Skipped(reason)));
    }
    Ok(None)
}

/// A rewrap's plan reads each header (a small ranged GET on S3) and no key: it counts
/// the distinct data keys, so the KMS calls of the run are known, and finds the
/// messages a rewrap would refuse.
async fn plan_rewrap(
    ctx: &Context,
    listed: &Listed,
    from: &Opening,
    to: &Rewrapping,
) -> Result<Option<Outcome>, Failed> {
    let mut source = open(
        ctx,
        listed,
        ReadAhead::OnDemand {
            first: PLAN_FIRST_GET,
        },
    )
    .await
    .map_err(|e| Failed::new("read", e))?;
    if listed.size.is_none() {
        ctx.stats
            .bytes_planned
            .fetch_add(source.info.size, std::sync::atomic::Ordering::Relaxed);
    }
    let (header, _) = ops::read_header(source.body.as_mut(), &from.options.limits)
        .await
        .map_err(|e| Failed::new("read header", e))?;
    // What the run decides from the header alone, in the run's order.
    let suite =
        stream::check_policy(&header, &from.options).map_err(|e| Failed::new("rewrap", e))?;
    if suite.signature.is_some() {
        return match to.reencrypt_signed {
            Some(_) => Ok(None),
            None => Err(Failed::new("rewrap", Error::SignedMessage { suite })),
        };
    }
    if ctx.job.in_place()
        && let Some(new) = &to.expected_keys
        && let Some(reason) = ops::wrapped_as_wanted(&header.body, &to.keep, new)
    {
        return Ok(Some(Outcome::Skipped(reason)));
    }
    stream::check_rewrappable(&suite, to.header_nonce).map_err(|e| Failed::new("rewrap", e))?;
    to.keep
        .check_leaves_a_key(&header.body, to.new_keys.is_some())
        .map_err(|e| Failed::new("rewrap", e))?;
    let fingerprint = data_key_fingerprint(&header.body, &from.reproduced_context)
        .map_err(|e| Failed::new("rewrap", e))?;
    ctx.stats.saw_data_key(fingerprint);
    Ok(None)
}

/// The names of a rewrap's new keys, if every one is known before KMS answers.
fn expected_keys(job: &Job) -> Option<&[String]> {
    match &job.work {
        Work::Rewrap { to, .. } => to.expected_keys.as_deref(),
        _ => None,
    }
}

/// Bytes of a plan's first GET: enough for nearly every header.
const PLAN_FIRST_GET: u64 = 64 * 1024;

/// Why writing `target` would replace the S3 source object itself, if it would. The
/// plan refuses such layouts up front where it can; this is the last line, for what
/// only shows per object: manifests naming objects under the destination. A local
/// output is checked by its commit instead ([`LocalSink::sparing`]), only where its
/// name is taken (hard links, bind mounts, directories swapped for symbolic links
/// mid-run): a look per object here would cost every new output a lookup.
fn replaces_source(source: &ObjectId, target: &Target) -> Option<String> {
    let same = match (source, target) {
        (ObjectId::S3 { bucket, key, .. }, Target::S3 { bucket: b, key: k }) => {
            bucket == b && key == k
        }
        _ => false,
    };
    same.then(|| store::WouldReplaceSource.to_string())
}

fn version_of(id: &ObjectId) -> Option<&str> {
    match id {
        ObjectId::S3 { version, .. } => version.as_deref(),
        ObjectId::Local(_) => None,
    }
}

/// Bytes of a rewrap's first GET when S3 will copy the body: S3's minimum part, which
/// the new header and the body's first bytes make up, plus room for a header that
/// shrinks (a dropped key) and a large one.
const REWRAP_FIRST_GET: u64 = MIN_PART_SIZE + 256 * 1024;

/// Whether a rewrap of `listed` to `target` may have S3 copy the body: both on S3, and
/// the object larger than `copy_above` (or of a size the listing did not give).
fn copies_on_s3(listed: &Listed, target: &Target, copy_above: u64) -> bool {
    matches!(listed.id, ObjectId::S3 { .. })
        && matches!(target, Target::S3 { .. })
        && listed.size.is_none_or(|size| size > copy_above)
}

/// Local files larger than this have the kernel copy their body; smaller ones are
/// copied on one thread with the header, which costs fewer hand-offs than the copy saves.
const LOCAL_COPY_ABOVE: u64 = 1 << 20;

/// How a rewrap moves the body of the object `info` describes from `source` to
/// `target`: S3 copies it from the version that was read when both are on S3 and it is
/// large; the kernel copies large local files; anything else streams through.
fn body_copy(source: &ObjectId, target: &Target, info: &SourceInfo, copy_above: u64) -> BodyCopy {
    match (source, target) {
        (ObjectId::S3 { bucket, key, .. }, Target::S3 { .. }) if info.size > copy_above => {
            BodyCopy::s3(ObjectId::s3(bucket, key, info.version.clone()))
        }
        (ObjectId::Local(path), Target::Local(_)) if info.size > LOCAL_COPY_ABOVE => {
            BodyCopy::local(ObjectId::Local(path.clone()))
        }
        _ => BodyCopy::Stream,
    }
}

async fn open(
    ctx: &Context,
    listed: &Listed,
    read_ahead: ReadAhead,
) -> Result<SourceObject, Error> {
    match (&listed.id, &ctx.job.s3) {
        (ObjectId::Local(path), _) => store::open_local(path).await,
        (ObjectId::S3 { .. }, Some(s3)) => Ok(s3.open_with(&listed.id, read_ahead).await?),
        (ObjectId::S3 { .. }, None) => Err(Error::Internal(
            "an S3 object in a job without an S3 store".into(),
        )),
    }
}

/// Where one object's output goes, and under which condition.
struct Output<'a> {
    target: &'a Target,
    /// The object's source, which a local output must never replace.
    source: &'a ObjectId,
    s3: Option<&'a S3Store>,
    precondition: Precondition,
}

impl MakeSink for Output<'_> {
    fn make(
        &self,
        meta: ObjectMeta,
        payload: Payload,
        size_hint: u64,
    ) -> BoxFuture<'_, Result<Box<dyn Sink>, Error>> {
        Box::pin(async move {
            let sink: Box<dyn Sink> = match (self.target, self.s3) {
                (Target::Local(path), _) => {
                    let sink = LocalSink::new(path, meta.mode, size_hint);
                    match self.source {
                        ObjectId::Local(source) => Box::new(sink.sparing(source)),
                        ObjectId::S3 { .. } => Box::new(sink),
                    }
                }
                (Target::S3 { bucket, key }, Some(s3)) => Box::new(s3.sink(
                    bucket,
                    key,
                    meta,
                    self.precondition.clone(),
                    payload,
                    size_hint,
                )),
                (Target::S3 { .. }, None) => {
                    return Err(Error::Internal(
                        "an S3 destination in a job without an S3 store".into(),
                    ));
                }
                (Target::Discard, _) => Box::new(Discard::default()),
            };
            Ok(sink)
        })
    }
}
