//! Where a workload's objects are made and processed: a local directory (on disk, or in
//! memory when it is on a tmpfs), or a prefix of an S3 bucket. Each target also runs
//! the workload's limit: the plain copy of the same objects, moved the way a tool would
//! move them if nothing had to be encrypted. For a directory that is read and write,
//! one file after the other, as `cp -r` does; for S3 a GET and a PUT of every object
//! through the same client, settings and concurrency as the job.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::Error;
use crate::aws::S3Client;
use crate::bridge;
use crate::crypto::random_bytes;
use crate::store::{
    ByteBudget, ListItem, Location, ObjectMeta, Payload, Precondition, S3Settings, S3Store, Sink,
};

/// Where a workload runs.
#[derive(Clone, Debug)]
pub enum Target {
    /// A directory: the run's files are made in a new directory below it.
    Local(PathBuf),
    /// A bucket and prefix: the run's objects are made below a new prefix in it.
    S3(Box<S3Target>),
}

/// An S3 bucket and prefix, and the client that reaches it.
#[derive(Clone, Debug)]
pub struct S3Target {
    /// The client (endpoint, credentials, region).
    pub client: S3Client,
    /// Part size, retries: as a job would use them.
    pub settings: S3Settings,
    /// The byte budget of every phase, as `--max-in-flight` is a job's.
    pub max_in_flight: u64,
    /// The bucket.
    pub bucket: String,
    /// Key prefix: empty, or ending in `/`.
    pub prefix: String,
}

impl S3Target {
    /// A store on this target's client, with counters of its own.
    fn store(&self) -> S3Store {
        S3Store::new(
            self.client.clone(),
            self.settings.clone(),
            ByteBudget::new(self.max_in_flight),
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(dir) => f.write_str(&crate::escape::path(dir)),
            Self::S3(s3) => write!(
                f,
                "s3://{}/{}",
                crate::escape::text(&s3.bucket),
                crate::escape::text(&s3.prefix)
            ),
        }
    }
}

/// The part of a target that one run owns, named after the process: the tree, the
/// plain copy, and the outputs of each mode are made (and removed) below it.
pub(super) enum Area {
    Local(PathBuf),
    S3 {
        target: Box<S3Target>,
        prefix: String,
    },
}

impl Area {
    pub(super) fn new(target: &Target, run: &str) -> Self {
        match target {
            Target::Local(dir) => Self::Local(dir.join(run)),
            Target::S3(s3) => Self::S3 {
                prefix: format!("{}{run}/", s3.prefix),
                target: s3.clone(),
            },
        }
    }

    /// Where the part called `name` (`tree`, `encrypted`, ...) is.
    pub(super) fn location(&self, name: &str) -> Location {
        match self {
            Self::Local(dir) => Location::Local(dir.join(name)),
            Self::S3 { target, prefix } => Location::S3 {
                bucket: target.bucket.clone(),
                prefix: format!("{prefix}{name}/"),
            },
        }
    }

    /// A store for one phase, with counters of its own; `None` for a directory.
    pub(super) fn store(&self) -> Option<S3Store> {
        match self {
            Self::Local(_) => None,
            Self::S3 { target, .. } => Some(target.store()),
        }
    }

    /// Writes the tree: an object of random bytes per size, 100 to a directory.
    pub(super) async fn write_tree(&self, sizes: &[u64], concurrency: usize) -> Result<(), Error> {
        match self {
            Self::Local(dir) => {
                let (tree, sizes) = (dir.join("tree"), sizes.to_vec());
                bridge::blocking("writing the benchmark's tree", move || {
                    write_local_tree(&tree, &sizes)
                })
                .await?
            }
            Self::S3 { target, prefix } => {
                let store = target.store();
                let mut tasks = JoinSet::new();
                for (i, &size) in sizes.iter().enumerate() {
                    if tasks.len() >= concurrency.max(1) {
                        join_one(&mut tasks).await?;
                    }
                    let (store, bucket) = (store.clone(), target.bucket.clone());
                    let key = format!("{prefix}tree/{}", object_name(i));
                    tasks.spawn(async move { put_random(&store, &bucket, &key, size).await });
                }
                while !tasks.is_empty() {
                    join_one(&mut tasks).await?;
                }
                Ok(())
            }
        }
    }

    /// Copies the part `from` to `to` without encrypting anything: the limit of the
    /// workload. Returns the S3 requests it took (0 for a directory).
    pub(super) async fn plain_copy(
        &self,
        from: &str,
        to: &str,
        concurrency: usize,
    ) -> Result<u64, Error> {
        match self {
            Self::Local(dir) => {
                let (from, to) = (dir.join(from), dir.join(to));
                bridge::blocking("copying the benchmark's tree", move || {
                    std::fs::create_dir_all(&to)?;
                    copy_local_tree(&from, &to)
                })
                .await??;
                Ok(0)
            }
            Self::S3 { target, prefix } => {
                let store = target.store();
                let (listed_tx, mut listed) = mpsc::channel(1024);
                let lister = {
                    let (store, bucket, from) = (
                        store.clone(),
                        target.bucket.clone(),
                        format!("{prefix}{from}/"),
                    );
                    tokio::spawn(async move { store.list(&bucket, &from, &listed_tx).await })
                };
                let mut tasks = JoinSet::new();
                while let Some(item) = listed.recv().await {
                    let ListItem::Object(object) = item else {
                        continue;
                    };
                    if tasks.len() >= concurrency.max(1) {
                        join_one(&mut tasks).await?;
                    }
                    let store = store.clone();
                    let bucket = target.bucket.clone();
                    let key = format!("{prefix}{to}/{}", object.relative);
                    tasks.spawn(async move {
                        let size = object.size.unwrap_or(0);
                        let _held = store.reserve_object(Some(size), Some(size)).await;
                        let source = store.open(&object.id).await?;
                        let size = source.info.size;
                        // Sent as a job sends its messages: over plain HTTP a
                        // plaintext body would also be hashed for its signature,
                        // work the limit must not carry when the job does not.
                        let mut sink: Box<dyn Sink> = Box::new(store.sink(
                            &bucket,
                            &key,
                            ObjectMeta::default(),
                            Precondition::None,
                            Payload::Message,
                            size,
                        ));
                        let mut body = source.body;
                        let mut next = body.next_chunk().await?;
                        while let Some(chunk) = next.take() {
                            let mut buf = sink.lend().await?;
                            next = fill(&mut buf, chunk, &mut *body).await?;
                            sink.put(buf).await?;
                        }
                        let written = sink.commit().await?;
                        if written != size {
                            return Err(Error::Internal(format!(
                                "the benchmark's plain copy of {key} wrote {written} of {size} bytes"
                            )));
                        }
                        Ok(())
                    });
                }
                while !tasks.is_empty() {
                    join_one(&mut tasks).await?;
                }
                lister
                    .await
                    .map_err(|e| Error::Internal(format!("the benchmark's listing: {e}")))??;
                Ok(store.stats().requests.load(Relaxed))
            }
        }
    }

    /// Removes the part `name`; failures are ignored (this is cleanup).
    pub(super) async fn remove(&self, name: &str) {
        let _ = self.remove_below(name).await;
    }

    /// Removes everything the run made.
    pub(super) async fn remove_all(&self) {
        let _ = self.remove_below("").await;
    }

    async fn remove_below(&self, name: &str) -> Result<(), Error> {
        match self {
            Self::Local(dir) => {
                let path = if name.is_empty() {
                    dir.clone()
                } else {
                    dir.join(name)
                };
                bridge::blocking("removing the benchmark's files", move || {
                    std::fs::remove_dir_all(path)
                })
                .await??;
                Ok(())
            }
            Self::S3 { target, prefix } => {
                let store = target.store();
                let below = if name.is_empty() {
                    prefix.clone()
                } else {
                    format!("{prefix}{name}/")
                };
                let (tx, mut rx) = mpsc::channel(1024);
                let lister = {
                    let (store, bucket) = (store.clone(), target.bucket.clone());
                    tokio::spawn(async move { store.list(&bucket, &below, &tx).await })
                };
                let mut keys = Vec::new();
                while let Some(item) = rx.recv().await {
                    let id = match item {
                        ListItem::Object(o) => o.id,
                        ListItem::Skipped { id, .. } | ListItem::Invalid { id, .. } => id,
                    };
                    if let crate::store::ObjectId::S3 { key, .. } = id {
                        keys.push(key);
                    }
                }
                lister
                    .await
                    .map_err(|e| Error::Internal(format!("the benchmark's listing: {e}")))??;
                store.delete_objects(&target.bucket, &keys).await?;
                Ok(())
            }
        }
    }
}

/// The name of object `i` below the tree: 100 to a directory, so that no directory
/// of a large workload holds tens of thousands of entries.
fn object_name(i: usize) -> String {
    format!("d{:04}/o{i:06}", i / 100)
}

/// Waits for one task of `tasks` and passes its failure on.
async fn join_one(tasks: &mut JoinSet<Result<(), Error>>) -> Result<(), Error> {
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(Error::Internal(format!("a benchmark task ended: {e}"))),
        None => Ok(()),
    }
}

/// Fills `buf` to its capacity from `chunk` and then `body`; returns what is left of
/// the body's bytes for the next buffer, `None` at its end.
async fn fill(
    buf: &mut BytesMut,
    mut chunk: Bytes,
    body: &mut dyn crate::store::Body,
) -> Result<Option<Bytes>, Error> {
    loop {
        let room = buf.capacity() - buf.len();
        if chunk.len() >= room {
            buf.extend_from_slice(&chunk.split_to(room));
            return Ok(if chunk.is_empty() {
                body.next_chunk().await?
            } else {
                Some(chunk)
            });
        }
        buf.extend_from_slice(&chunk);
        match body.next_chunk().await? {
            Some(c) => chunk = c,
            None => return Ok(None),
        }
    }
}

/// Writes `size` random bytes to `bucket/key`.
async fn put_random(store: &S3Store, bucket: &str, key: &str, size: u64) -> Result<(), Error> {
    let _held = store.reserve_object(None, Some(size)).await;
    let mut sink: Box<dyn Sink> = Box::new(store.sink(
        bucket,
        key,
        ObjectMeta::default(),
        Precondition::None,
        Payload::Plaintext,
        size,
    ));
    let mut left = size;
    while left > 0 {
        let mut buf = sink.lend().await?;
        let n = (buf.capacity() as u64).min(left) as usize;
        buf.resize(n, 0);
        random_bytes(&mut buf)?;
        left -= n as u64;
        sink.put(buf).await?;
    }
    sink.commit().await?;
    Ok(())
}

/// Writes `sizes.len()` files of random bytes below `root`.
fn write_local_tree(root: &Path, sizes: &[u64]) -> Result<(), Error> {
    let mut buf = vec![0u8; 1 << 20];
    for (i, &size) in sizes.iter().enumerate() {
        let path = root.join(object_name(i));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            random_bytes(&mut buf[..n])?;
            std::io::Write::write_all(&mut file, &buf[..n])?;
            left -= n as u64;
        }
        std::io::Write::flush(&mut file)?;
    }
    Ok(())
}

/// Copies the tree `from` to `to`, one file after the other.
fn copy_local_tree(from: &Path, to: &Path) -> Result<(), Error> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_local_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Whether `dir` is on a tmpfs (memory), from `/proc/self/mounts`: the longest mount
/// point that contains it decides. `false` where that cannot be read.
pub fn is_in_memory(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            // Mount points escape spaces as \040; benchmarks do not run below those.
            dir.starts_with(point)
                .then_some((point.len(), kind == "tmpfs"))
        })
        .max_by_key(|&(len, _)| len)
        .is_some_and(|(_, tmpfs)| tmpfs)
}
