//! S3 objects: streamed listing, parallel ranged reads, multipart writes, metadata and
//! tags, all inside one [`ByteBudget`].
//!
//! Bodies and sinks are async ([`Body`](super::Body), [`Sink`](super::Sink)): requests
//! run on the tokio runtime, so downloads ahead of the reader and uploads behind the
//! writer proceed while frames are sealed; the codec meets them in `crate::bridge`.
//!
//! One file per concept: this one holds the store (client, settings, counters, HEAD and
//! the source's shape); `request` sends and retries requests; `error` names their
//! failures; `listing` streams ListObjectsV2; `reader` reads an object as ranges;
//! `sink` writes one with PutObject or a multipart upload; `meta` carries metadata
//! and tags across; `delete` removes the objects a benchmark made.

mod delete;
mod error;
mod listing;
pub use listing::LevelEntry;
mod meta;
mod reader;
mod regions;
mod request;
mod sink;
mod streamed;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use aws_sdk_s3::Client;
use tokio::runtime::Handle;

pub use error::S3Error;
pub use reader::ReadAhead;
pub use sink::S3Sink;

use super::{BufferPool, ByteBudget, Listed, ObjectId, ObjectMeta, Reservation};
use crate::retry::{RetryPolicy, RetryStats};
use meta::{object_meta, unquote, user_metadata};
use request::{retried, send};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// ...each at least this large, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The largest ranged GET. Reads are not parts: a larger range buys nothing once a
/// request's overhead is amortized, and each range in flight is held whole.
pub const MAX_READ_RANGE: u64 = 32 * 1024 * 1024;

/// How objects are transferred and written.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// Bytes per uploaded part (at least 5 MiB), and per ranged GET up to
    /// [`MAX_READ_RANGE`]. Objects that fit take one GET and one PUT.
    pub part_size: u64,
    /// Ranged GETs in flight ahead of the reader, per object, while the budget allows.
    pub read_ahead: usize,
    /// Part uploads in flight behind the writer, per object, while the budget allows.
    pub uploads_in_flight: usize,
    /// Storage class of written objects (`STANDARD`, `INTELLIGENT_TIERING`, ...).
    pub storage_class: Option<String>,
    /// Server-side encryption of written objects, on top of sealpipe's own:
    /// `aws:kms` (with an S3 Bucket Key) or `AES256`.
    pub server_side_encryption: Option<String>,
    /// KMS key for `aws:kms` server-side encryption (else the bucket's default).
    pub sse_kms_key_id: Option<String>,
    /// Retries of throttled (503 SlowDown) and failed (5xx, reset) requests.
    pub retry: RetryPolicy,
}

impl S3Settings {
    /// Bytes per ranged GET.
    pub fn read_range(&self) -> u64 {
        self.part_size.min(MAX_READ_RANGE)
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            read_ahead: 4,
            uploads_in_flight: 4,
            storage_class: None,
            server_side_encryption: None,
            sse_kms_key_id: None,
            // S3 asks bulk clients to slow down by design; more retries than for KMS, in
            // the same total time.
            retry: RetryPolicy {
                max_retries: 15,
                ..RetryPolicy::default()
            },
        }
    }
}

/// Request counters, for progress and reports.
#[derive(Debug, Default)]
pub struct S3Stats {
    /// Requests sent, retries included.
    pub requests: AtomicU64,
    /// Retries, and how many failures were 503 SlowDown.
    pub retry: RetryStats,
    /// Multipart uploads aborted: our own failed ones and stale ones left by a killed run.
    pub uploads_aborted: AtomicU64,
    /// Objects written again from their start after a streamed part failed.
    pub objects_restarted: AtomicU64,
    /// Objects whose stale uploads could not be looked for (permission or server
    /// support missing); they were written all the same.
    pub stale_upload_checks_failed: AtomicU64,
    /// Body bytes received (GetObject), retried requests included.
    pub bytes_received: AtomicU64,
    /// Body bytes sent (PutObject, UploadPart) in requests that succeeded.
    pub bytes_sent: AtomicU64,
    /// Bytes S3 copied itself (UploadPartCopy): written, never through sealpipe.
    pub bytes_copied: AtomicU64,
}

/// The S3 side of a job: client, settings, budget and counters.
#[derive(Clone)]
pub struct S3Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// A client per bucket region; see [`Shared::client`].
    clients: regions::RegionalClients,
    /// What `client` was built from: the STS lookup of a denied caller needs it.
    base: aws_config::SdkConfig,
    settings: S3Settings,
    budget: ByteBudget,
    /// Part buffers, reused across objects.
    buffers: BufferPool,
    /// Whether requests go over plain HTTP.
    plain_http: bool,
    stats: Arc<S3Stats>,
    runtime: Handle,
}

impl Shared {
    /// The client for requests about `bucket`: one in the bucket's region.
    async fn client(&self, bucket: &str) -> Client {
        self.clients
            .for_bucket(bucket, &self.settings.retry, &self.stats)
            .await
    }
}

/// What `s3://bucket/name` turned out to be.
#[derive(Debug)]
pub enum SourceShape {
    /// An object of exactly that key.
    Single(Listed),
    /// Objects below this prefix (ends with `/`, or empty for the whole bucket).
    Prefix(String),
}

/// What HEAD says about an object.
#[derive(Clone, Debug)]
pub struct Head {
    /// Size in bytes.
    pub size: u64,
    /// ETag, unquoted.
    pub etag: String,
    /// Version ID on versioned buckets.
    pub version: Option<String>,
    /// Metadata (without tags).
    pub meta: ObjectMeta,
}

/// Bucket, key and version of an S3 object. The store's public operations refuse
/// local files first ([`s3_only`]); were one to get this far, its empty bucket name
/// makes the request fail, never the process.
fn s3_parts(id: &ObjectId) -> (&str, &str, Option<&str>) {
    match id {
        ObjectId::S3 {
            bucket,
            key,
            version,
        } => (bucket, key, version.as_deref()),
        ObjectId::Local(_) => ("", "", None),
    }
}

/// Refuses a local file where an S3 object is needed.
fn s3_only(action: &'static str, id: &ObjectId) -> Result<(), S3Error> {
    match id {
        ObjectId::S3 { .. } => Ok(()),
        ObjectId::Local(_) => Err(S3Error::new(
            action,
            id,
            "NotAnS3Object",
            "a local file was given where an S3 object is needed".into(),
        )),
    }
}

impl S3Store {
    /// A store on the client `s3`; must be created inside the tokio runtime that will
    /// run its requests.
    pub fn new(s3: crate::aws::S3Client, settings: S3Settings, budget: ByteBudget) -> Self {
        // Idle buffers sit outside the budget, so few are kept: an eighth of it, at most
        // 32 MiB (four default parts). Larger parts are allocated per part, and the
        // allocator returns them to the system when freed.
        let idle = usize::try_from((budget.total() / 8).min(32 << 20)).unwrap_or(usize::MAX);
        Self {
            shared: Arc::new(Shared {
                clients: regions::RegionalClients::new(s3.client),
                base: s3.base,
                plain_http: s3.plain_http,
                buffers: BufferPool::new(idle),
                settings,
                budget,
                stats: Arc::default(),
                runtime: Handle::current(),
            }),
        }
    }

    /// Request counters.
    pub fn stats(&self) -> &Arc<S3Stats> {
        &self.shared.stats
    }

    /// The in-flight byte budget.
    pub fn budget(&self) -> &ByteBudget {
        &self.shared.budget
    }

    /// The settings.
    pub fn settings(&self) -> &S3Settings {
        &self.shared.settings
    }

    /// Part size for an output of about `size`: the configured one, or larger when
    /// 10,000 parts would not hold it.
    fn part_size_for(&self, size: u64) -> u64 {
        let needed = size.div_ceil(MAX_PARTS - 1).next_multiple_of(1024 * 1024);
        self.shared.settings.part_size.max(needed)
    }

    /// Waits until the budget holds an object's minimum working set, and holds it for
    /// as long as the object is processed: one range to read (source on S3) and one to
    /// write (destination on S3), sized down for small objects. Reserving both at once
    /// is what keeps objects from each holding half of what they need.
    pub async fn reserve_object(&self, read: Option<u64>, write: Option<u64>) -> Reservation {
        let range = self.shared.settings.read_range();
        let read = read.map_or(0, |size| size.clamp(1, range));
        let write = write.map_or(0, |size| size.clamp(1, self.part_size_for(size)));
        self.shared.budget.reserve(read + write).await
    }

    /// Decides whether `s3://bucket/name` is one object or a prefix, the way a path is
    /// a file or a directory: `name` is an object if one has exactly that key,
    /// otherwise the prefix `name/`. An empty name or one ending in `/` is a prefix.
    pub async fn resolve_source(&self, bucket: &str, name: &str) -> Result<SourceShape, S3Error> {
        if name.is_empty() || name.ends_with('/') {
            return Ok(SourceShape::Prefix(name.to_string()));
        }
        let id = ObjectId::s3(bucket, name, None);
        Ok(match self.head(&id).await? {
            Some(head) => SourceShape::Single(Listed {
                relative: name.rsplit('/').next().unwrap_or(name).into(),
                size: Some(head.size),
                etag: Some(head.etag),
                id,
            }),
            None => SourceShape::Prefix(format!("{name}/")),
        })
    }
    /// Size, ETag, version and metadata of an object, or `None` if it does not exist.
    pub async fn head(&self, id: &ObjectId) -> Result<Option<Head>, S3Error> {
        s3_only("HeadObject", id)?;
        let (bucket, key, version) = s3_parts(id);
        let client = self.shared.client(bucket).await;
        let result = retried(&self.shared, || {
            let request = client
                .head_object()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_string));
            send(request.send(), "HeadObject", id)
        })
        .await;
        match result {
            Ok(out) => Ok(Some(Head {
                size: out
                    .content_length()
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(0),
                etag: out.e_tag().map(unquote).unwrap_or_default(),
                version: out.version_id().map(str::to_string),
                meta: object_meta!(out),
            })),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
