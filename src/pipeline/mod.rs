//! Jobs over many objects: list the source, encrypt or decrypt each object on a bounded
//! number of workers, write outputs atomically, and account for every object.
//!
//! Failures are recorded per object and never stop the job; the caller decides what
//! they mean (the CLI turns them into exit code 1). Statistics are plain atomics that a
//! progress display can poll without slowing the workers.

mod stats;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

pub use stats::{Failure, ObjectCounts, Report, Stats};

use crate::Error;
use crate::format::{AlgorithmSuite, EncryptionContext};
use crate::keys::{DataKeyPool, DecryptCache, EncryptionMaterials, Keyring, PoolLimits};
use crate::store::{self, LocalObject, StagedFile};
use crate::stream::{self, DecryptOptions, EncryptOptions, EncryptingWriter};

/// What a job does to each object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plaintext in, ESDK messages out.
    Encrypt,
    /// ESDK messages in, plaintext out.
    Decrypt,
}

/// A job: a source, a destination, keys and options.
#[derive(Debug, Clone)]
pub struct Job {
    /// Encrypt or decrypt.
    pub mode: Mode,
    /// A file or a directory tree.
    pub source: PathBuf,
    /// A file, or the root of the mirrored tree.
    pub destination: PathBuf,
    /// Wraps (encrypt) or unwraps (decrypt) data keys.
    pub keyring: Arc<dyn Keyring>,
    /// Suite for encryption.
    pub suite: AlgorithmSuite,
    /// Encryption context bound to every message of the job.
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
    /// Objects processed at once.
    pub concurrency: usize,
    /// Plan only: list and count, write nothing, call no keyring.
    pub dry_run: bool,
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

/// Runs `job`, updating `stats` as objects complete, until done or `cancel`led.
///
/// Returns `Err` only when the job cannot start (unreadable source, destination inside
/// the source, keys unusable); object failures are in the report.
pub async fn run(job: Arc<Job>, stats: Arc<Stats>, cancel: Cancel) -> Result<Report, Error> {
    let started = Instant::now();
    check_paths(&job.source, &job.destination)?;
    if job.mode == Mode::Encrypt {
        job.encrypt.validate()?;
    }
    let listing = store::list_local(&job.source)
        .map_err(|e| Error::Config(format!("cannot list source {}: {e}", job.source.display())))?;
    stats.plan(
        listing.objects.len() as u64,
        listing.objects.iter().map(|o| o.size).sum(),
    );
    for path in &listing.skipped {
        stats.skip(
            path.display().to_string(),
            "not a regular file (not followed)",
        );
    }
    if job.dry_run {
        return Ok(stats.report(job.mode, started.elapsed(), true, false));
    }
    // Data keys come from a pool: one serves many messages (each message still derives
    // its own content key from a fresh message ID), refreshed before it runs out.
    let pool = Arc::new(DataKeyPool::new(
        job.keyring.clone(),
        job.suite,
        job.pool_limits.clone(),
    ));
    stats.attach_key_stats(pool.stats().clone());
    if job.mode == Mode::Encrypt && !listing.objects.is_empty() {
        pool.warm_up(&job.context).await?;
    }
    let decrypt_cache = Arc::new(DecryptCache::new(
        4096,
        job.pool_limits.max_age,
        pool.stats().clone(),
    ));
    let permits = Arc::new(Semaphore::new(job.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let runtime = tokio::runtime::Handle::current();
    for object in listing.objects {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        if cancel.is_cancelled() {
            break;
        }
        let materials = match job.mode {
            Mode::Encrypt => match pool.materials(&job.context, object.size).await {
                Ok(m) => Some(m),
                Err(e) => {
                    stats.fail(object.path.display().to_string(), e.to_string());
                    continue;
                }
            },
            Mode::Decrypt => None,
        };
        let (job, stats, decrypt_cache, runtime, cancel) = (
            job.clone(),
            stats.clone(),
            decrypt_cache.clone(),
            runtime.clone(),
            cancel.clone(),
        );
        tasks.spawn_blocking(move || {
            let _permit = permit;
            let destination = store::plan_destination(&job.source, &job.destination, &object);
            let result = match &materials {
                Some(materials) => {
                    encrypt_object(&object, &destination, materials, &job.encrypt, cancel)
                }
                None => decrypt_object(
                    &object,
                    &destination,
                    &job,
                    &decrypt_cache,
                    &runtime,
                    cancel,
                ),
            };
            match result {
                Ok((bytes_in, bytes_out)) => stats.succeed(bytes_in, bytes_out),
                Err(e) => stats.fail(object.path.display().to_string(), e.to_string()),
            }
        });
        // Reap finished tasks as we go so the set stays small on huge trees.
        while let Some(done) = tasks.try_join_next() {
            done.map_err(|e| Error::Config(format!("worker panicked: {e}")))?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::Config(format!("worker panicked: {e}")))?;
    }
    Ok(stats.report(job.mode, started.elapsed(), false, cancel.is_cancelled()))
}

/// Refuses layouts that would read our own output or overwrite the input.
fn check_paths(source: &Path, destination: &Path) -> Result<(), Error> {
    let src = source
        .canonicalize()
        .map_err(|e| Error::Config(format!("source {} is not readable: {e}", source.display())))?;
    // The destination may not exist yet: resolve its nearest existing ancestor.
    let mut dst = destination.to_path_buf();
    let mut tail = Vec::new();
    while !dst.exists() {
        match (dst.parent(), dst.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_owned());
                dst = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
            }
            _ => break,
        }
    }
    let mut dst = dst.canonicalize().unwrap_or(dst);
    dst.extend(tail.iter().rev());
    if dst == src {
        return Err(Error::Config(format!(
            "destination {} is the source itself; write to another path",
            destination.display()
        )));
    }
    if src.is_dir() && dst.starts_with(&src) {
        return Err(Error::Config(format!(
            "destination {} is inside the source directory {}; a re-run would process the outputs",
            destination.display(),
            source.display()
        )));
    }
    Ok(())
}

fn encrypt_object(
    object: &LocalObject,
    destination: &Path,
    materials: &EncryptionMaterials,
    options: &EncryptOptions,
    cancel: Cancel,
) -> Result<(u64, u64), Error> {
    let source = File::open(&object.path)?;
    let permissions = source.metadata()?.permissions();
    let mut staged = StagedFile::create(destination)?;
    let mut writer = EncryptingWriter::new(BufWriter::new(staged.file()), materials, options)?;
    let mut source = Cancellable {
        inner: BufReader::with_capacity(256 * 1024, source),
        cancel,
    };
    writer.copy_from(&mut source)?;
    let (mut out, summary) = writer.finish()?;
    out.flush()?;
    drop(out);
    staged.commit(Some(permissions))?;
    Ok((summary.plaintext_bytes, summary.message_bytes))
}

fn decrypt_object(
    object: &LocalObject,
    destination: &Path,
    job: &Job,
    cache: &DecryptCache,
    runtime: &tokio::runtime::Handle,
    cancel: Cancel,
) -> Result<(u64, u64), Error> {
    let source = File::open(&object.path)?;
    let permissions = source.metadata()?.permissions();
    let mut staged = StagedFile::create(destination)?;
    let mut out = BufWriter::new(staged.file());
    let mut input = Cancellable {
        inner: BufReader::with_capacity(256 * 1024, source),
        cancel,
    };
    let (_, plaintext_len) = stream::decrypt_with(&mut input, &mut out, &job.decrypt, |header| {
        runtime.block_on(cache.materials(
            job.keyring.as_ref(),
            &header.body,
            &job.reproduced_context,
        ))
    })?;
    out.flush()?;
    drop(out);
    // Only now, with every tag (and the signature) verified, does the plaintext appear.
    staged.commit(Some(permissions))?;
    Ok((object.size, plaintext_len))
}
