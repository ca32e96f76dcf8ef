//! Jobs over many objects: list the source as a stream, then encrypt, decrypt,
//! re-encrypt or verify each object on a bounded number of workers, write outputs that
//! appear only when whole, and account for every object.
//!
//! Failures are recorded per object and never stop the job (unless `fail_fast`); the
//! caller decides what they mean (the CLI turns them into exit code 1). Statistics are
//! plain atomics that a progress display can poll without slowing the workers.

mod filter;
pub mod marker;
mod object;
mod plan;
mod stats;

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};

pub use filter::ObjectFilter;
pub use stats::{CacheCounts, Failure, ObjectCounts, PartialCounts, Report, S3Counts, Stats};

use crate::Error;
use crate::escape;
use crate::format::{AlgorithmSuite, EncryptionContext};
use crate::keys::{DataKeyPool, DecryptCache, Keyring, PoolLimits};
use crate::store::{self, ListItem, Listed, Location, ObjectId, S3Store};
use crate::stream::{DecryptOptions, EncryptOptions};

/// Most objects processed at once: each is a blocking thread and a share of the byte
/// budget, and the semaphore that counts them has a ceiling of its own.
pub const MAX_CONCURRENCY: usize = 65_536;

/// What a job does to each object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plaintext in, ESDK messages out.
    Encrypt,
    /// ESDK messages in, plaintext out.
    Decrypt,
    /// ESDK messages in, new ESDK messages out: a fresh data key under the new wrapping
    /// keys, the current suite (upgrading legacy and signed messages).
    Reencrypt,
    /// ESDK messages in, nothing out: every tag and signature checked.
    Verify,
}

impl Mode {
    /// Whether objects are read as ESDK messages.
    pub fn reads_messages(self) -> bool {
        self != Mode::Encrypt
    }

    /// Whether objects are written as ESDK messages.
    pub fn writes_messages(self) -> bool {
        matches!(self, Mode::Encrypt | Mode::Reencrypt)
    }
}

/// Where a job's objects come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file, directory, S3 object or S3 prefix.
    Location(Location),
    /// A CSV manifest (local or on S3) of `bucket,key[,version_id]`.
    Manifest(Location),
}

/// A job: a source, a destination, keys and options.
#[derive(Clone)]
pub struct Job {
    /// What is done to each object.
    pub mode: Mode,
    /// Where objects come from.
    pub source: Source,
    /// Where outputs go: `None` for `verify`, and for in-place jobs.
    pub destination: Option<Location>,
    /// Replace each S3 object with its output, conditionally on its ETag.
    pub in_place: bool,
    /// Which listed objects are processed.
    pub filter: ObjectFilter,
    /// Wraps new data keys (encrypt, reencrypt).
    pub wrap_keyring: Option<Arc<dyn Keyring>>,
    /// Unwraps data keys of existing messages (decrypt, reencrypt, verify).
    pub unwrap_keyring: Option<Arc<dyn Keyring>>,
    /// Suite for encryption.
    pub suite: AlgorithmSuite,
    /// Encryption context bound to every message written.
    pub context: EncryptionContext,
    /// How messages are written.
    pub encrypt: EncryptOptions,
    /// How messages are read.
    pub decrypt: DecryptOptions,
    /// Context pairs a reader expects (and supplies for authenticate-only pairs).
    pub reproduced_context: EncryptionContext,
    /// When pooled data keys are replaced (encrypt), and how long unwrapped data keys
    /// stay cached (decrypt: `max_age`).
    pub pool_limits: PoolLimits,
    /// Objects processed at once (1 to [`MAX_CONCURRENCY`]).
    pub concurrency: usize,
    /// Plan only: list, check what is done, count; write nothing, call no keyring.
    pub dry_run: bool,
    /// Stop starting objects after the first failure.
    pub fail_fast: bool,
    /// S3 access, when the source, destination or manifest is on S3.
    pub s3: Option<S3Store>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("mode", &self.mode)
            .field("source", &self.source)
            .field("destination", &self.destination)
            .field("in_place", &self.in_place)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Asks a running job to stop: no new object starts, objects in flight fail at their next
/// read (so their partial outputs are removed), and the report says `interrupted`.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Requests the stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A reader that fails once the job is cancelled.
struct Cancellable<R> {
    inner: R,
    cancel: Cancel,
}

impl<R: Read> Read for Cancellable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.is_cancelled() {
            // Not `Interrupted`: read loops retry that kind.
            return Err(io::Error::other("job cancelled"));
        }
        self.inner.read(buf)
    }
}

/// Everything a worker needs, shared by all workers of a job.
struct Context {
    job: Job,
    plan: plan::Plan,
    pool: Option<DataKeyPool>,
    decrypt_cache: DecryptCache,
    stats: Arc<Stats>,
    cancel: Cancel,
    runtime: tokio::runtime::Handle,
}

/// Runs `job`, updating `stats` as objects complete, until done or `cancel`led.
///
/// Returns `Err` only when the job cannot start (unreadable source, destination inside
/// the source, keys unusable); object failures are in the report.
pub async fn run(job: Job, stats: Arc<Stats>, cancel: Cancel) -> Result<Report, Error> {
    let started = Instant::now();
    if job.mode.writes_messages() {
        job.encrypt.validate()?;
    }
    let plan = plan::Plan::new(&job).await?;
    // Killed runs leave partial outputs (plaintext prefixes, for decrypt) that only a
    // later run can remove; this one does, beside its own work. Live jobs' partial
    // files are locked and left alone.
    let cleanup = plan.partial_cleanup_root(&job).map(|(root, recursive)| {
        let dry_run = job.dry_run;
        tokio::task::spawn_blocking(move || store::remove_stale_partials(&root, recursive, dry_run))
    });
    if let Some(s3) = &job.s3 {
        stats.attach_s3(s3.stats().clone(), s3.budget().clone());
    }
    let pool = match (
        &job.wrap_keyring,
        job.mode.writes_messages() && !job.dry_run,
    ) {
        (Some(keyring), true) => {
            // Data keys come from a pool: one serves many messages (each message still
            // derives its own content key from a fresh message ID), refreshed before it
            // runs out. The first one is fetched now, so unusable keys stop the job
            // before any object is touched.
            let pool = DataKeyPool::new(keyring.clone(), job.suite, job.pool_limits.clone());
            pool.warm_up(&job.context).await?;
            Some(pool)
        }
        _ => None,
    };
    let key_stats = pool
        .as_ref()
        .map_or_else(Arc::default, |p| p.stats().clone());
    stats.attach_key_stats(key_stats.clone());
    let decrypt_cache = DecryptCache::new(4096, job.pool_limits.max_age, key_stats);
    let mut listing = list(&job, &plan);
    let concurrency = job.concurrency.clamp(1, MAX_CONCURRENCY);
    let ctx = Arc::new(Context {
        job,
        plan,
        pool,
        decrypt_cache,
        stats: stats.clone(),
        cancel: cancel.clone(),
        runtime: tokio::runtime::Handle::current(),
    });
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(item) = listing.recv().await {
        if cancel.is_cancelled() {
            break;
        }
        let listed = match item {
            ListItem::Object(listed) => listed,
            ListItem::Skipped { id, reason } => {
                stats.plan(None);
                stats.skip(&id, &reason);
                continue;
            }
            ListItem::Invalid { id, code, error } => {
                // Counted like an object, so the totals add up: what could not be
                // listed is a failure, never a silent gap.
                stats.plan(None);
                stats.fail(&id, code, error);
                continue;
            }
        };
        if !ctx.job.filter.accepts(listed.relative.as_path()) {
            continue;
        }
        stats.plan(listed.size);
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        // Checked once a worker is free, so a failure that finished meanwhile counts.
        // Fail fast starts nothing new but lets objects in flight finish cleanly.
        if cancel.is_cancelled() || (ctx.job.fail_fast && stats.objects_unsuccessful() > 0) {
            break;
        }
        let ctx = ctx.clone();
        tasks.spawn_blocking(move || {
            let _permit = permit;
            object::process(&ctx, listed);
        });
        // Reap finished tasks as we go so the set stays small on huge jobs.
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| Error::Internal(format!("a worker panicked: {e}")))?;
        }
    }
    drop(listing);
    stats.listing_done.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Internal(format!("a worker panicked: {e}")))?;
    }
    if let Some(cleanup) = cleanup {
        let found = cleanup
            .await
            .map_err(|e| Error::Internal(format!("the partial-output cleanup panicked: {e}")))?;
        stats.cleaned(found);
    }
    let stopped = cancel.is_cancelled();
    Ok(stats.report(ctx.job.mode, started.elapsed(), ctx.job.dry_run, stopped))
}

/// Streams the source's objects: local trees as they are walked, S3 listings page by
/// page, manifests line by line. Never all of them in memory.
fn list(job: &Job, plan: &plan::Plan) -> mpsc::Receiver<ListItem> {
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
            tokio::task::spawn_blocking(move || {
                let result = store::list_local(&root, |item| match tx.blocking_send(item) {
                    Ok(()) => std::ops::ControlFlow::Continue(()),
                    Err(_) => std::ops::ControlFlow::Break(()),
                });
                if let Err(e) = result {
                    let _ = tx.blocking_send(ListItem::Invalid {
                        id: ObjectId::Local(root),
                        code: "ListingFailed",
                        error: format!("cannot list the source: {e}"),
                    });
                }
            });
        }
        (Source::Location(Location::S3 { bucket, .. }), plan::Shape::Prefix(prefix)) => {
            let s3 = job.s3.clone().expect("S3 jobs have a store");
            let (bucket, prefix) = (bucket.clone(), prefix.clone());
            tokio::spawn(async move {
                if let Err(e) = s3.list(&bucket, &prefix, &tx).await {
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
            let (location, s3) = (location.clone(), job.s3.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(error) = list_manifest(&location, s3.as_ref(), &tx) {
                    let _ = tx.blocking_send(ListItem::Invalid {
                        id: manifest_id(&location),
                        code: "ManifestUnreadable",
                        error,
                    });
                }
            });
        }
        (Source::Location(Location::S3 { .. }), plan::Shape::Tree | plan::Shape::Manifest) => {
            unreachable!("S3 sources resolve to a single object or a prefix")
        }
    }
    rx
}

fn list_manifest(
    location: &Location,
    s3: Option<&S3Store>,
    tx: &mpsc::Sender<ListItem>,
) -> Result<(), String> {
    let reader: Box<dyn Read + Send> = match location {
        Location::Local(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot open manifest {}: {e}", escape::path(path)))?,
        ),
        Location::S3 { bucket, prefix } => {
            let s3 = s3.expect("S3 manifests come with a store");
            s3.open(&ObjectId::s3(bucket, prefix, None))
                .map_err(|e| format!("cannot read manifest: {e}"))?
                .reader
        }
    };
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
        if tx.blocking_send(item).is_err() {
            break;
        }
    }
    Ok(())
}

/// The manifest itself, as reports name it.
fn manifest_id(location: &Location) -> ObjectId {
    match location {
        Location::Local(path) => ObjectId::Local(path.clone()),
        Location::S3 { bucket, prefix } => ObjectId::s3(bucket, prefix, None),
    }
}
