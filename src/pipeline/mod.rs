//! Jobs over many objects: list the source as a stream, then encrypt, decrypt,
//! re-encrypt or verify each object on a bounded number of workers, write outputs that
//! appear only when whole, and account for every object.
//!
//! Failures are recorded per object and never stop the job (unless `fail_fast`); the
//! caller decides what they mean (the CLI turns them into exit code 1). Statistics are
//! plain atomics that a progress display can poll without slowing the workers.

mod filter;
mod job;
mod latency;
mod merge;
mod object;
mod plan;
mod presence;
mod s3ec;
mod shard;
mod standing;
mod stats;

use std::io::{self, Read};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};

pub use crate::bridge::Cancel;
pub use filter::ObjectFilter;
pub use job::{Job, Keys, Mode, Opening, Output, Rewrapping, Sealing, Source, SourceFormat, Work};
pub use latency::LatencyHistogram;
pub use merge::{CompletionRow, Merged, NotOneJob, merge};
pub use object::Finished;
pub use shard::{MAX_SHARDS, Shard, ShardBy};
pub use standing::StandingJob;
pub(crate) use stats::reset_peak_rss;
pub use stats::{
    CacheCounts, Failure, InventoryRow, Latency, ObjectCounts, PartialCounts, Report, S3Counts,
    Stats,
};

use crate::Error;
use crate::bridge::{self, ChunkReader};
use crate::escape;
use crate::format::EncryptionContext;
use crate::keys::{DataKeyPool, DecryptCache, Keyring, PoolStats, Rewrapper};
use crate::ops::{self, Opener, Sealer};
use crate::store::{self, ListItem, Listed, Location, ObjectId, S3Store};
use crate::stream::{DecryptOptions, EncryptOptions, HeaderNonce};

/// Most objects processed at once: each is a task and a share of the byte budget, and
/// the semaphore that counts them has a ceiling of its own.
pub const MAX_CONCURRENCY: usize = 65_536;

/// What writing messages takes once a job runs: a warm pool of data keys.
struct Sealed {
    pool: DataKeyPool,
    context: EncryptionContext,
    options: EncryptOptions,
}

impl Sealed {
    fn sealer(&self) -> Sealer<'_> {
        Sealer {
            pool: &self.pool,
            context: &self.context,
            options: &self.options,
        }
    }
}

/// What reading messages takes once a job runs: the keyring and a cache of what it
/// unwrapped.
struct Opened {
    keyring: Arc<dyn Keyring>,
    cache: DecryptCache,
    options: DecryptOptions,
    reproduced_context: EncryptionContext,
    source_format: SourceFormat,
}

impl Opened {
    fn opener(&self) -> Opener<'_> {
        Opener {
            keyring: self.keyring.as_ref(),
            cache: &self.cache,
            options: &self.options,
            reproduced_context: &self.reproduced_context,
        }
    }
}

/// What rewrapping takes once a job runs: both key sides with their caches, and for
/// signed messages, if asked, what re-encrypting them takes.
struct Rewrapped {
    rewrapper: Rewrapper,
    options: DecryptOptions,
    reproduced_context: EncryptionContext,
    signed: Option<(Opened, Sealed)>,
    copy_above: u64,
    header_nonce: HeaderNonce,
}

impl Rewrapped {
    fn keys<'a>(
        &'a self,
        saw_data_key: &'a (dyn Fn([u8; 32]) + Sync),
        new_key_names: Option<&'a [String]>,
    ) -> ops::Rewrap<'a> {
        ops::Rewrap {
            rewrapper: &self.rewrapper,
            options: &self.options,
            reproduced_context: &self.reproduced_context,
            saw_data_key,
            new_key_names,
            header_nonce: self.header_nonce,
        }
    }

    fn signed(&self) -> ops::Signed<'_> {
        match &self.signed {
            Some((opened, sealed)) => ops::Signed::Reencrypt(opened.opener(), sealed.sealer()),
            None => ops::Signed::Refuse,
        }
    }
}

/// A job's work, ready to run: what [`Work`] describes, with keys loaded.
enum Running {
    /// Plans only: no keys.
    DryRun,
    Encrypt(Sealed),
    Decrypt(Opened),
    Verify(Opened),
    Reencrypt(Opened, Sealed),
    Rewrap(Box<Rewrapped>),
    /// Reads metadata and first bytes only: no keys.
    Scan,
}

impl Running {
    /// Waits for data keys still being fetched ahead, so the job's counts are final.
    async fn settle(&self) {
        let pool = match self {
            Running::Encrypt(sealed) | Running::Reencrypt(_, sealed) => &sealed.pool,
            Running::Rewrap(r) => match &r.signed {
                Some((_, sealed)) => &sealed.pool,
                None => return,
            },
            Running::DryRun | Running::Decrypt(_) | Running::Verify(_) | Running::Scan => return,
        };
        pool.settle().await;
    }
}

/// Everything a worker needs, shared by all workers of a job.
struct Context {
    job: Job,
    plan: plan::Plan,
    running: Running,
    stats: Arc<Stats>,
    cancel: Cancel,
}

/// The keyring behind `keys`; `refusal` says what is missing when none was loaded.
fn loaded(keys: &Keys, refusal: &str) -> Result<Arc<dyn Keyring>, Error> {
    match keys {
        Keys::Loaded(keyring) => Ok(keyring.clone()),
        Keys::NotLoaded => Err(Error::Config(refusal.into())),
    }
}

/// Loads what `job`'s work needs: data keys come from a pool, where one serves many
/// messages (each message still derives its own content key from a fresh message ID),
/// refreshed before it runs out. The first one is fetched now, so unusable keys stop
/// the job before any object is touched.
async fn start(job: &Job) -> Result<(Running, Arc<PoolStats>), Error> {
    if job.dry_run {
        return Ok((Running::DryRun, Arc::default()));
    }
    if let Work::Rewrap { from, to, .. } = &job.work {
        return start_rewrap(from, to);
    }
    let mut key_stats = Arc::default();
    let mut seal = None;
    if let Some(sealing) = job.work.sealing() {
        let keyring = loaded(&sealing.keys, plan::NO_WRAPPING_KEY)?;
        let pool = DataKeyPool::new(keyring, sealing.suite, sealing.pool_limits.clone());
        pool.warm_up(&sealing.context).await?;
        key_stats = pool.stats().clone();
        seal = Some(Sealed {
            pool,
            context: sealing.context.clone(),
            options: sealing.options.clone(),
        });
    }
    let running = match (&job.work, seal) {
        (Work::Encrypt { .. }, Some(sealed)) => Running::Encrypt(sealed),
        (Work::Decrypt { from, .. }, _) => Running::Decrypt(open(from, &key_stats)?),
        (Work::Verify { from }, _) => Running::Verify(open(from, &key_stats)?),
        (Work::Scan, _) => Running::Scan,
        (Work::Reencrypt { from, .. }, Some(sealed)) => {
            Running::Reencrypt(open(from, &key_stats)?, sealed)
        }
        (Work::Encrypt { .. } | Work::Reencrypt { .. } | Work::Rewrap { .. }, None) => {
            return Err(Error::Internal(
                "a job that writes messages has no sealing".into(),
            ));
        }
        (Work::Rewrap { .. }, Some(_)) => {
            return Err(Error::Internal("a rewrap job started as another".into()));
        }
    };
    Ok((running, key_stats))
}

/// What reading messages with `opening` takes: its keyring and a cache of data keys.
fn open(opening: &Opening, key_stats: &Arc<PoolStats>) -> Result<Opened, Error> {
    Ok(Opened {
        keyring: loaded(&opening.keys, plan::NO_UNWRAPPING_KEY)?,
        cache: DecryptCache::new(
            DecryptCache::DEFAULT_CAPACITY,
            opening.cache_max_age,
            key_stats.clone(),
        ),
        options: opening.options.clone(),
        reproduced_context: opening.reproduced_context.clone(),
        source_format: opening.source_format,
    })
}

/// A rewrap's keys: no data key is fetched ahead, since a rewrap makes none (signed
/// messages re-encrypted on request take theirs when the first one comes).
fn start_rewrap(from: &Opening, to: &Rewrapping) -> Result<(Running, Arc<PoolStats>), Error> {
    let key_stats: Arc<PoolStats> = Arc::default();
    let old = loaded(&from.keys, plan::NO_UNWRAPPING_KEY)?;
    let new = to
        .new_keys
        .as_ref()
        .map(|keys| loaded(keys, plan::NO_WRAPPING_KEY))
        .transpose()?;
    let rewrapper = Rewrapper::new(
        old,
        new,
        to.keep.clone(),
        (DecryptCache::DEFAULT_CAPACITY, from.cache_max_age),
        key_stats.clone(),
    );
    let signed = match &to.reencrypt_signed {
        Some(sealing) => {
            let keyring = loaded(&sealing.keys, plan::NO_WRAPPING_KEY)?;
            let sealed = Sealed {
                pool: DataKeyPool::new(keyring, sealing.suite, sealing.pool_limits.clone()),
                context: sealing.context.clone(),
                options: sealing.options.clone(),
            };
            Some((open(from, &key_stats)?, sealed))
        }
        None => None,
    };
    let running = Rewrapped {
        rewrapper,
        options: from.options.clone(),
        reproduced_context: from.reproduced_context.clone(),
        signed,
        copy_above: to.copy_above,
        header_nonce: to.header_nonce,
    };
    Ok((Running::Rewrap(Box::new(running)), key_stats))
}

/// Runs `job`, updating `stats` as objects complete, until done or `cancel`led.
///
/// Returns `Err` only when the job cannot start (unreadable source, destination inside
/// the source, keys unusable); object failures are in the report.
pub async fn run(job: Job, stats: Arc<Stats>, cancel: Cancel) -> Result<Report, Error> {
    let started = Instant::now();
    if job.source == Source::Tasks {
        return Err(Error::Internal(
            "a job of tasks handed over one at a time runs as a StandingJob".into(),
        ));
    }
    if let Some(sealing) = job.work.sealing() {
        sealing.options.validate()?;
    }
    let plan = plan::Plan::new(&job).await?;
    // Killed runs leave partial outputs (plaintext prefixes, for decrypt) that only a
    // later run can remove; this one does, beside its own work. Live jobs' partial
    // files are locked and left alone.
    let cleanup = plan.partial_cleanup_root(&job).map(|(root, recursive)| {
        let dry_run = job.dry_run;
        bridge::blocking("the partial-output cleanup", move || {
            store::remove_stale_partials(&root, recursive, dry_run)
        })
    });
    let cleanup = cleanup.map(tokio::spawn);
    if let Some(s3) = &job.s3 {
        stats.attach_s3(s3.stats().clone(), s3.budget().clone());
    }
    let (running, key_stats) = start(&job).await?;
    stats.attach_key_stats(key_stats);
    let concurrency = job.concurrency.clamp(1, MAX_CONCURRENCY);
    let ctx = Arc::new(Context {
        job,
        plan,
        running,
        stats: stats.clone(),
        cancel: cancel.clone(),
    });
    if let Some(root) = lane_source(&ctx.job) {
        let listing = list_in_batches(root.clone(), &ctx.plan);
        run_on_lanes(ctx.clone(), listing, concurrency).await?;
    } else {
        let mut listing = list(&ctx.job, &ctx.plan, &cancel);
        run_as_tasks(&ctx, &mut listing, concurrency).await?;
        drop(listing);
    }
    stats.listing_done.store(true, Ordering::Relaxed);
    ctx.running.settle().await;
    if let Some(cleanup) = cleanup {
        let found = cleanup
            .await
            .map_err(|e| Error::Internal(format!("the partial-output cleanup panicked: {e}")))??;
        stats.cleaned(found);
    }
    let stopped = cancel.is_cancelled();
    let mut report = stats.report(ctx.job.mode(), started.elapsed(), ctx.job.dry_run, stopped);
    report.shard = ctx.job.shard;
    Ok(report)
}

/// Lanes (threads that each run whole operations) at most: a job's concurrency beyond
/// this runs on as many lanes, each waiting for files in turn.
const MAX_LANES: usize = 128;

/// The local source of a job that runs on lanes ([`bridge::Lane`]): one whose every
/// body and sink is a local file, so nothing an operation waits on is filled by a
/// runtime task.
fn lane_source(job: &Job) -> Option<&std::path::PathBuf> {
    let Source::Location(Location::Local(root)) = &job.source else {
        return None;
    };
    let local_output = matches!(job.destination(), None | Some(Location::Local(_)));
    (job.s3.is_none() && local_output).then_some(root)
}

/// The listed object `item` names, if it is to be processed; skipped, invalid and
/// filtered items are accounted for here.
fn admit(ctx: &Context, item: ListItem) -> Option<Listed> {
    let stats = &ctx.stats;
    let divided_by_listing = ctx.job.shard.is_some_and(|s| {
        s.by() == ShardBy::Prefix && matches!(ctx.plan.shape, plan::Shape::Prefix(_))
    });
    let listed = match item {
        ListItem::Object(listed) => listed,
        ListItem::Skipped { id, reason } => {
            // What a listing passes over (folder markers, links) has no share of its
            // own: the first shard reports it, so merged reports count it once. Under
            // prefix division the listing already kept only this shard's.
            if ctx.job.shard.is_some_and(|s| s.index() > 0) && !divided_by_listing {
                return None;
            }
            stats.plan(None);
            stats.skip(&id, &reason);
            return None;
        }
        ListItem::Invalid { id, code, error } => {
            // Counted like an object, so the totals add up: what could not be
            // listed is a failure, never a silent gap.
            stats.plan(None);
            stats.fail(&id, code, error);
            return None;
        }
    };
    if !ctx.job.filter.accepts(listed.relative.as_path()) {
        return None;
    }
    // Divided by prefix, the listing of a prefix took this shard's share itself; a
    // single object is divided by hash all the same.
    if let Some(shard) = &ctx.job.shard
        && !divided_by_listing
        && !shard.owns(&listed.id, &listed.relative)
    {
        return None;
    }
    stats.plan(listed.size);
    Some(listed)
}

/// Whether to start no more objects: the job was stopped, or fails fast and an object
/// failed. Checked once a worker is free, so a failure that finished meanwhile counts;
/// objects in flight finish cleanly.
fn stopping(ctx: &Context) -> bool {
    ctx.cancel.is_cancelled() || (ctx.job.fail_fast && ctx.stats.objects_unsuccessful() > 0)
}

/// Processes the listing's objects as tasks, at most `concurrency` at once.
async fn run_as_tasks(
    ctx: &Arc<Context>,
    listing: &mut mpsc::Receiver<ListItem>,
    concurrency: usize,
) -> Result<(), Error> {
    let mut destination = destination_cursor(&ctx.job, &ctx.plan);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(item) = listing.recv().await {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let Some(listed) = admit(ctx, item) else {
            continue;
        };
        // Only a job with a cursor needs the output's name here.
        let presence = match &mut destination {
            Some(cursor) => match ctx.plan.target(&ctx.job, &listed) {
                Ok(plan::Target::S3 { key, .. }) => cursor.presence(&key).await,
                _ => presence::Presence::Unknown,
            },
            None => presence::Presence::Unknown,
        };
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the worker semaphore closed".into()))?;
        if stopping(ctx) {
            break;
        }
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _permit = permit;
            object::process(&ctx, listed, presence).await;
        });
        // Reap finished tasks as we go so the set stays small on huge jobs.
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| Error::Internal(format!("a worker panicked: {e}")))?;
        }
    }
    // Progress can tell the last objects from a listing still under way.
    ctx.stats.listing_done.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Internal(format!("a worker panicked: {e}")))?;
    }
    Ok(())
}

/// Processes the listing's objects on `concurrency` lanes (at most [`MAX_LANES`]), each
/// taking the next listed object once it finished the last.
async fn run_on_lanes(
    ctx: Arc<Context>,
    listing: mpsc::Receiver<Vec<ListItem>>,
    concurrency: usize,
) -> Result<(), Error> {
    let listing = bridge::SharedBatches::new(listing);
    bridge::lanes(concurrency.min(MAX_LANES), move |lane| {
        loop {
            let Some(item) = listing.next() else {
                ctx.stats.listing_done.store(true, Ordering::Relaxed);
                break;
            };
            if ctx.cancel.is_cancelled() {
                break;
            }
            let Some(listed) = admit(&ctx, item) else {
                continue;
            };
            if stopping(&ctx) {
                break;
            }
            lane.block_on(object::process(&ctx, listed, presence::Presence::Unknown));
        }
    })
    .await
}

/// A cursor over the destination's listing, for jobs that would otherwise ask S3
/// about each output before writing it: jobs that write messages to an S3 prefix, not
/// in place (see [`presence`]).
fn destination_cursor(job: &Job, plan: &plan::Plan) -> Option<presence::DestinationCursor> {
    let s3 = job.s3.as_ref()?;
    if !job.mode().writes_messages() || matches!(plan.shape, plan::Shape::Single(_)) {
        return None;
    }
    let Some(Location::S3 { bucket, prefix }) = job.destination() else {
        return None;
    };
    // Outputs are `prefix` + name when it is empty or ends in `/`, else `prefix/name`.
    let below = if prefix.is_empty() || prefix.ends_with('/') {
        prefix.clone()
    } else {
        format!("{prefix}/")
    };
    Some(presence::DestinationCursor::start(s3, bucket, &below))
}

/// Streams the source's objects: local trees as they are walked, S3 listings page by
/// page, manifests line by line. Never all of them in memory.
fn list(job: &Job, plan: &plan::Plan, cancel: &Cancel) -> mpsc::Receiver<ListItem> {
    let (tx, rx) = mpsc::channel(1024);
    match (&job.source, &plan.shape) {
        (_, plan::Shape::Single(listed)) => {
            let listed = listed.clone();
            tokio::spawn(async move {
                let _ = tx.send(ListItem::Object(listed)).await;
            });
        }
        (Source::Location(Location::Local(root)), _) => {
            let root = root.clone();
            tokio::spawn(bridge::blocking("listing a directory", move || {
                walk_local(root, |item| bridge::send_blocking(&tx, item));
            }));
        }
        (Source::Location(Location::S3 { bucket, .. }), plan::Shape::Prefix(prefix)) => {
            let (s3, bucket, prefix) = (job.s3.clone(), bucket.clone(), prefix.clone());
            let by_prefix = job.shard.filter(|s| s.by() == ShardBy::Prefix);
            tokio::spawn(async move {
                let listed = match (&s3, by_prefix) {
                    (Some(s3), None) => s3
                        .list(&bucket, &prefix, &tx)
                        .await
                        .map_err(|e| e.to_string()),
                    (Some(s3), Some(shard)) => list_prefix_range(s3, &bucket, &prefix, shard, &tx)
                        .await
                        .map_err(|e| e.to_string()),
                    (None, _) => Err("no S3 store in the job".to_string()),
                };
                if let Err(e) = listed {
                    let _ = tx
                        .send(ListItem::Invalid {
                            id: ObjectId::s3(&bucket, &prefix, None),
                            code: "ListingFailed",
                            error: format!(
                                "listing stopped, retries exhausted: {e}; objects listed \
                                 after this point were not processed"
                            ),
                        })
                        .await;
                }
            });
        }
        (Source::Manifest(location), _) => {
            let (location, s3, cancel) = (location.clone(), job.s3.clone(), cancel.clone());
            tokio::spawn(async move {
                let id = manifest_id(&location);
                let failed = match open_manifest(&location, s3.as_ref(), cancel).await {
                    Ok(reader) => {
                        let lines = tx.clone();
                        bridge::blocking("reading a manifest", move || {
                            list_manifest(reader, &location, &lines);
                        })
                        .await
                        .err()
                        .map(|e| e.to_string())
                    }
                    Err(error) => Some(error),
                };
                if let Some(error) = failed {
                    let _ = tx
                        .send(ListItem::Invalid {
                            id,
                            code: "ManifestUnreadable",
                            error,
                        })
                        .await;
                }
            });
        }
        // Never listed: `run` refuses such jobs.
        (Source::Tasks, _) => {}
        (
            Source::Location(Location::S3 { bucket, prefix }),
            plan::Shape::Tree | plan::Shape::Manifest,
        ) => {
            let id = ObjectId::s3(bucket, prefix, None);
            tokio::spawn(async move {
                let _ = tx
                    .send(ListItem::Invalid {
                        id,
                        code: "ListingFailed",
                        error: "an S3 source resolved to neither an object nor a prefix".into(),
                    })
                    .await;
            });
        }
    }
    rx
}

/// Lists the share of `bucket/root` that `shard` (divided by prefix) takes: the
/// prefixes one level below `root` are split into `count` contiguous ranges, and this
/// shard lists only those of its range, whole; objects directly below `root` are
/// divided by hash. The level is listed twice, once to count its prefixes and once to
/// go through them in key order, so nothing but the prefixes' names is held.
async fn list_prefix_range(
    s3: &S3Store,
    bucket: &str,
    root: &str,
    shard: Shard,
    out: &mpsc::Sender<ListItem>,
) -> Result<(), store::S3Error> {
    let mut prefixes: Vec<String> = Vec::new();
    {
        let (tx, mut level) = mpsc::channel(1024);
        // Owns the sender, so the receiver ends when the listing does.
        let listing = async move { s3.list_level(bucket, root, root, &tx).await };
        let collect = async {
            while let Some(entry) = level.recv().await {
                if let store::LevelEntry::Prefix(p) = entry {
                    prefixes.push(p);
                }
            }
        };
        let (listed, ()) = tokio::join!(listing, collect);
        listed?;
    }
    let mine = &prefixes[shard.range_of(prefixes.len())];
    let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
        return list_level_objects(s3, bucket, root, shard, None, out).await;
    };
    list_level_objects(s3, bucket, root, shard, Some((first, last)), out).await
}

/// Goes through the level below `root` in key order: its objects of `shard`'s hash
/// share, and, for the prefixes from `range.0` to `range.1`, everything below them.
async fn list_level_objects(
    s3: &S3Store,
    bucket: &str,
    root: &str,
    shard: Shard,
    range: Option<(&String, &String)>,
    out: &mpsc::Sender<ListItem>,
) -> Result<(), store::S3Error> {
    let (tx, mut level) = mpsc::channel(1024);
    let listing = async move { s3.list_level(bucket, root, root, &tx).await };
    let go_through = async {
        while let Some(entry) = level.recv().await {
            match entry {
                store::LevelEntry::Object(ListItem::Object(listed))
                    if !shard.owns(&listed.id, &listed.relative) => {}
                // Passed over directly below the root (a folder marker): the first
                // shard reports it, once.
                store::LevelEntry::Object(ListItem::Skipped { .. }) if shard.index() > 0 => {}
                store::LevelEntry::Object(item) => {
                    if out.send(item).await.is_err() {
                        return Ok(());
                    }
                }
                store::LevelEntry::Prefix(p) => {
                    if range.is_some_and(|(first, last)| &p >= first && &p <= last) {
                        s3.list_under(bucket, root, &p, out).await?;
                    }
                }
            }
        }
        Ok(())
    };
    let (listed, walked) = tokio::join!(listing, go_through);
    walked?;
    listed
}

/// Walks the local tree at `root`, handing each item to `emit`; a source that cannot be
/// listed at all is one invalid item.
fn walk_local(root: std::path::PathBuf, mut emit: impl FnMut(ListItem) -> ControlFlow<()>) {
    if let Err(e) = store::list_local(&root, &mut emit) {
        let _ = emit(ListItem::Invalid {
            id: ObjectId::Local(root),
            code: "ListingFailed",
            error: format!("cannot list the source: {e}"),
        });
    }
}

/// Items a lane-run listing sends at once.
const LISTING_BATCH: usize = 256;

/// The listing of a job that runs on lanes: the local file or tree at `root`, in
/// batches of up to [`LISTING_BATCH`] items.
fn list_in_batches(root: std::path::PathBuf, plan: &plan::Plan) -> mpsc::Receiver<Vec<ListItem>> {
    let (tx, rx) = mpsc::channel(8);
    if let plan::Shape::Single(listed) = &plan.shape {
        let listed = listed.clone();
        tokio::spawn(async move {
            let _ = tx.send(vec![ListItem::Object(listed)]).await;
        });
        return rx;
    }
    tokio::spawn(bridge::blocking("listing a directory", move || {
        let mut batch = Vec::with_capacity(LISTING_BATCH);
        walk_local(root, |item| {
            batch.push(item);
            if batch.len() < LISTING_BATCH {
                return ControlFlow::Continue(());
            }
            bridge::send_blocking(&tx, std::mem::take(&mut batch))
        });
        if !batch.is_empty() {
            let _ = bridge::send_blocking(&tx, batch);
        }
    }));
    rx
}

/// Opens a manifest for reading line by line.
async fn open_manifest(
    location: &Location,
    s3: Option<&S3Store>,
    cancel: Cancel,
) -> Result<Box<dyn Read + Send>, String> {
    match location {
        Location::Local(path) => std::fs::File::open(path)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(|e| format!("cannot open manifest {}: {e}", escape::path(path))),
        Location::S3 { bucket, prefix } => {
            let s3 = s3.ok_or("an S3 manifest needs an S3 store")?;
            let source = s3
                .open(&ObjectId::s3(bucket, prefix, None))
                .await
                .map_err(|e| format!("cannot read manifest: {e}"))?;
            Ok(Box::new(ChunkReader::new(
                source.body,
                bytes::Bytes::new(),
                cancel,
            )))
        }
    }
}

/// Sends every entry of a manifest on, an invalid line as a failure of its own.
fn list_manifest(reader: Box<dyn Read + Send>, location: &Location, tx: &mpsc::Sender<ListItem>) {
    for entry in store::read_manifest(io::BufReader::new(reader)) {
        let item = match entry {
            Ok(e) => ListItem::Object(Listed {
                relative: e.key.clone().into(),
                id: ObjectId::S3 {
                    bucket: e.bucket,
                    key: e.key,
                    version: e.version,
                },
                size: None,
                etag: None,
            }),
            Err(error) => ListItem::Invalid {
                id: manifest_id(location),
                code: "InvalidManifestLine",
                error,
            },
        };
        if bridge::send_blocking(tx, item).is_break() {
            break;
        }
    }
}

/// The manifest itself, as reports name it.
fn manifest_id(location: &Location) -> ObjectId {
    match location {
        Location::Local(path) => ObjectId::Local(path.clone()),
        Location::S3 { bucket, prefix } => ObjectId::s3(bucket, prefix, None),
    }
}
