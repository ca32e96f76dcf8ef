//! S3 objects: streamed listing, parallel ranged reads, multipart writes, metadata and
//! tags, all inside one [`ByteBudget`].
//!
//! Readers and sinks are blocking (`Read`, `Write`) because the codec is; they must be
//! driven from blocking threads (`spawn_blocking`), never from async tasks. Requests run
//! on the tokio runtime, so downloads ahead of the reader and uploads behind the writer
//! proceed while frames are sealed.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    ByteBudget, ListItem, Listed, ObjectId, ObjectMeta, ObjectSink, Precondition, Reservation,
    SourceObject,
};
use crate::retry::{RetryPolicy, RetryStats, Transience, classify_sdk_error};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// ...each at least this large, except the last.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Bytes of a body's start kept in [`SourceObject::head`].
const HEAD_BYTES: usize = 4096;

/// How objects are transferred and written.
#[derive(Clone, Debug)]
pub struct S3Settings {
    /// Bytes per ranged GET and per uploaded part (at least 5 MiB). Objects that fit
    /// take one GET and one PUT.
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
    /// Objects whose stale uploads could not be looked for (permission or server
    /// support missing); they were written all the same.
    pub stale_upload_checks_failed: AtomicU64,
}

/// A failed S3 request, naming the action and the object.
#[derive(Debug, thiserror::Error)]
#[error("S3 {action} {object}: {code}: {message}{hint}")]
pub struct S3Error {
    /// The S3 API action (`GetObject`, `PutObject`, ...).
    pub action: &'static str,
    /// The object (or bucket and prefix) it was about.
    pub object: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// S3 error code (`AccessDenied`, `NoSuchKey`, `PreconditionFailed`, ...).
    pub code: String,
    /// S3's message, or the transport error.
    pub message: String,
    hint: String,
}

impl S3Error {
    /// Whether a conditional request found the object changed (HTTP 412): in-place
    /// jobs report this as a conflict.
    pub fn is_precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code == "PreconditionFailed"
    }

    /// Finds an `S3Error` inside an I/O error (readers and sinks report through
    /// `io::Error`).
    pub fn in_io(e: &io::Error) -> Option<&S3Error> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<S3Error>())
    }

    /// Whether S3 refused the request for lack of permission: `AccessDenied`, or a
    /// bare 403 (HEAD responses have no body to carry a code). Other 403 codes
    /// (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, ...) are not about policies.
    fn is_access_denied(&self) -> bool {
        self.code == "AccessDenied" || (self.status == Some(403) && self.code == "HTTP 403")
    }

    fn new(
        action: &'static str,
        object: &dyn std::fmt::Display,
        code: &str,
        message: String,
    ) -> Self {
        Self {
            action,
            object: object.to_string(),
            status: None,
            code: code.to_string(),
            message,
            hint: String::new(),
        }
    }
}

/// Metadata from a GetObject or HeadObject response (the two types share accessors).
macro_rules! object_meta {
    ($out:expr) => {
        ObjectMeta {
            content_type: $out.content_type().map(str::to_string),
            cache_control: $out.cache_control().map(str::to_string),
            content_disposition: $out.content_disposition().map(str::to_string),
            content_encoding: $out.content_encoding().map(str::to_string),
            content_language: $out.content_language().map(str::to_string),
            expires: $out.expires_string().map(str::to_string),
            user: user_metadata($out.metadata()),
            tags: Vec::new(),
            mode: None,
        }
    };
}

/// Sets metadata and write options on a PutObject or CreateMultipartUpload request
/// (the two builders share setters).
macro_rules! with_meta {
    ($request:expr, $meta:expr, $settings:expr) => {{
        let meta: &ObjectMeta = $meta;
        let settings: &S3Settings = $settings;
        let mut r = $request
            .set_content_type(meta.content_type.clone())
            .set_cache_control(meta.cache_control.clone())
            .set_content_disposition(meta.content_disposition.clone())
            .set_content_encoding(meta.content_encoding.clone())
            .set_content_language(meta.content_language.clone())
            .set_expires(meta.expires.as_deref().and_then(http_date))
            .set_metadata(Some(meta.user.clone().into_iter().collect()))
            .set_tagging((!meta.tags.is_empty()).then(|| tagging(&meta.tags)))
            .set_storage_class(settings.storage_class.as_deref().map(StorageClass::from))
            .set_ssekms_key_id(settings.sse_kms_key_id.clone());
        if let Some(sse) = &settings.server_side_encryption {
            let sse = ServerSideEncryption::from(sse.as_str());
            r = r.bucket_key_enabled(sse == ServerSideEncryption::AwsKms);
            r = r.server_side_encryption(sse);
        }
        r
    }};
}

/// What `action` needs in IAM terms, for AccessDenied hints.
fn permission(action: &str) -> &'static str {
    match action {
        "ListObjectsV2" => "s3:ListBucket",
        "GetObject" | "HeadObject" => "s3:GetObject (s3:GetObjectVersion for versions)",
        "GetObjectTagging" => "s3:GetObjectTagging",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        _ => "s3:PutObject (s3:PutObjectTagging with tags)",
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    action: &'static str,
    object: &dyn std::fmt::Display,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> (Transience, S3Error) {
    let transience = classify_sdk_error(
        &err,
        &[
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
        ],
        &["InternalError", "RequestTimeout", "ServiceUnavailable"],
    );
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (code, message) = match &err {
        SdkError::ServiceError(e) => (
            e.err()
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", status.unwrap_or_default())),
            e.err().message().unwrap_or("(no message)").to_string(),
        ),
        other => ("request failed".to_string(), error_chain(other)),
    };
    let mut e = S3Error::new(action, object, &code, message);
    e.status = status;
    if e.is_access_denied() {
        // [`retried`] appends the caller: finding it takes a request.
        e.hint = format!(
            " (the credentials need {}; check the IAM policy and the bucket policy)",
            permission(action)
        );
    }
    (transience, e)
}

/// Awaits one attempt of a request and classifies its failure for [`retried`].
async fn send<T, E>(
    attempt: impl Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
    action: &'static str,
    object: &(dyn std::fmt::Display + Sync),
) -> Result<T, (Transience, S3Error)>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    attempt.await.map_err(|e| classify(action, object, e))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The S3 side of a job: client, settings, budget and counters.
#[derive(Clone)]
pub struct S3Store {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    settings: S3Settings,
    budget: ByteBudget,
    stats: Arc<S3Stats>,
    runtime: Handle,
}

/// What `s3://bucket/name` turned out to be.
#[derive(Debug)]
pub enum SourceShape {
    /// An object of exactly that key.
    Single(Listed),
    /// Objects below this prefix (ends with `/`, or empty for the whole bucket).
    Prefix(String),
}

impl S3Store {
    /// A store on `client`; must be created inside the tokio runtime that will run its
    /// requests.
    pub fn new(client: Client, settings: S3Settings, budget: ByteBudget) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
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
    /// as long as the object is processed: one part to read (source on S3) and one to
    /// write (destination on S3), sized down for small objects. Reserving both at once
    /// is what keeps objects from each holding half of what they need.
    pub async fn reserve_object(&self, read: Option<u64>, write: Option<u64>) -> Reservation {
        let part = self.shared.settings.part_size;
        let read = read.map_or(0, |size| size.clamp(1, part));
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

    /// Lists every object below `prefix`, page by page, sending each as it arrives;
    /// `relative` is the key minus the prefix. Folder markers (empty keys ending in `/`)
    /// are skipped. Stops early if the receiver is gone.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        out: &mpsc::Sender<ListItem>,
    ) -> Result<(), S3Error> {
        let what = format!("s3://{bucket}/{prefix}");
        let mut token: Option<String> = None;
        loop {
            let page = retried(&self.shared, || {
                let request = self
                    .shared
                    .client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_continuation_token(token.clone());
                let what = &what;
                send(request.send(), "ListObjectsV2", what)
            })
            .await?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let size = object.size().and_then(|s| u64::try_from(s).ok());
                let id = ObjectId::s3(bucket, key, None);
                let item = if key.ends_with('/') && size == Some(0) {
                    ListItem::Skipped {
                        id,
                        reason: "folder marker (empty object whose key ends in /)".into(),
                    }
                } else {
                    ListItem::Object(Listed {
                        relative: key.strip_prefix(prefix).unwrap_or(key).into(),
                        size,
                        etag: object.e_tag().map(unquote),
                        id,
                    })
                };
                if out.send(item).await.is_err() {
                    return Ok(());
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() || page.is_truncated() != Some(true) {
                return Ok(());
            }
        }
    }

    /// Size, ETag, version and metadata of an object, or `None` if it does not exist.
    pub async fn head(&self, id: &ObjectId) -> Result<Option<Head>, S3Error> {
        let (bucket, key, version) = s3_parts(id);
        let result = retried(&self.shared, || {
            let request = self
                .shared
                .client
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

    /// Opens an object for reading: fetches its first part (which brings size, ETag,
    /// version and metadata), its tags if it has any, and starts reading ahead. Every
    /// later range is conditional on the same ETag (and version), so an object replaced
    /// mid-read fails instead of mixing two versions.
    ///
    /// The caller holds the object's base reservation ([`reserve_object`](Self::reserve_object)).
    /// Blocks; call from a blocking thread.
    pub fn open(&self, id: &ObjectId) -> Result<SourceObject, S3Error> {
        let shared = &self.shared;
        let part = shared.settings.part_size;
        let first = shared
            .runtime
            .block_on(retried(shared, || get(shared, id, Some((0, part)), None)))?;
        let mut meta = first.meta.expect("the first GET reads metadata");
        if first.tag_count > 0 {
            meta.tags = shared.runtime.block_on(self.tags(id))?;
        }
        let etag = first.etag.clone().unwrap_or_default();
        let (bucket, key, _) = s3_parts(id);
        // Later ranges name the version read first, when the bucket has versions.
        let pinned = ObjectId::s3(bucket, key, first.version.clone());
        let head = first.body.prefix(HEAD_BYTES);
        let mut reader = S3Reader {
            shared: self.shared.clone(),
            id: pinned,
            etag: etag.clone(),
            size: first.size,
            next_offset: first.body.len() as u64,
            current: first.body,
            current_reservation: None,
            pending: VecDeque::new(),
            base_free: false,
        };
        reader.read_ahead();
        Ok(SourceObject {
            size: reader.size,
            etag,
            version: first.version,
            meta,
            head,
            reader: Box::new(reader),
        })
    }

    async fn tags(&self, id: &ObjectId) -> Result<Vec<(String, String)>, S3Error> {
        let (bucket, key, version) = s3_parts(id);
        let out = retried(&self.shared, || {
            let request = self
                .shared
                .client
                .get_object_tagging()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_string));
            send(request.send(), "GetObjectTagging", id)
        })
        .await?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    /// Starts writing `bucket/key`. Objects smaller than a part are sent with one
    /// PutObject on commit; larger ones become multipart uploads (after aborting any
    /// upload a killed run left for the same key), aborted unless committed.
    ///
    /// `size_hint` (the expected output size) sizes the first buffer and the parts: an
    /// object too large for 10,000 parts of the configured size gets larger parts.
    /// Blocks while waiting for budget; call from a blocking thread.
    pub fn sink(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        precondition: Precondition,
        size_hint: u64,
    ) -> S3Sink {
        let part_size = self.part_size_for(size_hint);
        S3Sink {
            shared: self.shared.clone(),
            id: ObjectId::s3(bucket, key, None),
            meta,
            precondition,
            part_size,
            buf: Vec::with_capacity(size_hint.min(part_size) as usize),
            buf_reservation: None,
            written: 0,
            base_free: false,
            upload_id: None,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            committed: false,
        }
    }
}

/// One GET's result.
struct Got {
    /// Present on the first GET only.
    meta: Option<ObjectMeta>,
    size: u64,
    etag: Option<String>,
    version: Option<String>,
    tag_count: i32,
    body: Segments,
}

/// A response body as the network delivered it: a list of buffers, never copied into
/// one (that copy would briefly double the memory of every range in flight).
#[derive(Default)]
struct Segments {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Segments {
    fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: VecDeque<Bytes> = parts.into_iter().filter(|b| !b.is_empty()).collect();
        let len = parts.iter().map(Bytes::len).sum();
        Self { parts, len }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the first `n` bytes (or fewer) out.
    fn prefix(&self, n: usize) -> Bytes {
        let mut out = Vec::with_capacity(n.min(self.len));
        for part in &self.parts {
            let take = (n - out.len()).min(part.len());
            out.extend_from_slice(&part[..take]);
            if out.len() == n {
                break;
            }
        }
        Bytes::from(out)
    }

    /// Moves up to `buf.len()` bytes into `buf`.
    fn read_into(&mut self, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            let n = (buf.len() - done).min(front.len());
            buf[done..done + n].copy_from_slice(&front[..n]);
            bytes::Buf::advance(front, n);
            if front.is_empty() {
                self.parts.pop_front();
            }
            done += n;
        }
        self.len -= done;
        done
    }
}

/// GETs `range` (offset, length) of an object, body included, so a connection reset
/// mid-body is retried like any other transient failure. The first range of an object
/// also brings its metadata; an empty object has no byte 0, so that one is asked again
/// without a range.
async fn get(
    shared: &Shared,
    id: &ObjectId,
    range: Option<(u64, u64)>,
    if_match: Option<&str>,
) -> Result<Got, (Transience, S3Error)> {
    let (bucket, key, version) = s3_parts(id);
    let request = |range: Option<(u64, u64)>| {
        shared
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .set_if_match(if_match.map(str::to_string))
            .set_range(range.map(|(start, len)| format!("bytes={start}-{}", start + len - 1)))
            .send()
    };
    let out = match request(range).await {
        Err(e)
            if range.is_some_and(|(start, _)| start == 0)
                && e.raw_response().is_some_and(|r| r.status().as_u16() == 416) =>
        {
            request(None).await
        }
        other => other,
    }
    .map_err(|e| classify("GetObject", id, e))?;
    let first = range.is_none_or(|(start, _)| start == 0);
    let meta = first.then(|| object_meta!(out));
    let size = total_size(out.content_range(), out.content_length());
    let out_range = out.content_range().map(str::to_string);
    let etag = out.e_tag().map(unquote);
    let version = out.version_id().map(str::to_string);
    let tag_count = out.tag_count().unwrap_or(0);
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| body_error("GetObject", id, &e))?
        .into_segments();
    let body = Segments::new(body);
    // A range must arrive whole: a short body means the connection broke quietly.
    if let (Some((start, len)), Some(_)) = (range, out_range)
        && body.len() as u64 != len.min(size.saturating_sub(start))
    {
        return Err(body_error_msg(
            "GetObject",
            id,
            "response body shorter than the range",
        ));
    }
    Ok(Got {
        meta,
        size,
        etag,
        version,
        tag_count,
        body,
    })
}

fn user_metadata(
    m: Option<&std::collections::HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// A request running on the runtime, and the budget its bytes hold (`None`: the
/// object's base reservation).
type InFlight<T> = (JoinHandle<Result<T, S3Error>>, Option<Reservation>);

/// Reads an object as consecutive ranges, fetched ahead in parallel.
struct S3Reader {
    shared: Arc<Shared>,
    id: ObjectId,
    etag: String,
    size: u64,
    next_offset: u64,
    current: Segments,
    /// The budget `current` holds, or `None` when it is the object's base part.
    current_reservation: Option<Reservation>,
    /// Ranges being fetched, in order, and whether each uses the base reservation (or
    /// holds its own).
    pending: VecDeque<InFlight<Got>>,
    base_free: bool,
}

impl S3Reader {
    /// Starts fetching more ranges while there are ranges left, read-ahead slots, and
    /// budget: the base reservation first, then whatever is free now.
    fn read_ahead(&mut self) {
        let settings = &self.shared.settings;
        while self.pending.len() < settings.read_ahead.max(1) && self.next_offset < self.size {
            let len = settings.part_size.min(self.size - self.next_offset);
            let extra = if self.base_free {
                self.base_free = false;
                None
            } else {
                match self.shared.budget.try_reserve(len) {
                    Some(r) => Some(r),
                    None => break,
                }
            };
            let (shared, id, etag, offset) = (
                self.shared.clone(),
                self.id.clone(),
                self.etag.clone(),
                self.next_offset,
            );
            let task = self.shared.runtime.spawn(async move {
                retried(&shared, || {
                    get(&shared, &id, Some((offset, len)), Some(&etag))
                })
                .await
            });
            self.pending.push_back((task, extra));
            self.next_offset += len;
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            // Drained: its budget goes back, to the object's base or to the job.
            if self.current_reservation.take().is_none() {
                self.base_free = true;
            }
            self.read_ahead();
            let Some((task, extra)) = self.pending.pop_front() else {
                return Ok(0);
            };
            let got = self
                .shared
                .runtime
                .block_on(task)
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
            self.current = got.body;
            self.current_reservation = extra;
            self.read_ahead();
        }
        Ok(self.current.read_into(buf))
    }
}

impl Drop for S3Reader {
    fn drop(&mut self) {
        for (task, _) in &self.pending {
            task.abort();
        }
    }
}

/// An object being written to S3; see [`S3Store::sink`].
pub struct S3Sink {
    shared: Arc<Shared>,
    id: ObjectId,
    meta: ObjectMeta,
    precondition: Precondition,
    part_size: u64,
    buf: Vec<u8>,
    /// The budget `buf` holds, or `None` when it is the object's base part.
    buf_reservation: Option<Reservation>,
    written: u64,
    base_free: bool,
    upload_id: Option<String>,
    in_flight: VecDeque<InFlight<CompletedPart>>,
    parts: Vec<CompletedPart>,
    committed: bool,
}

impl S3Sink {
    fn bucket_key(&self) -> (&str, &str) {
        let (bucket, key, _) = s3_parts(&self.id);
        (bucket, key)
    }

    /// Sends the full buffer as the next part and finds budget for the next buffer:
    /// the base reservation if free, else free budget, else the oldest upload's.
    fn send_part(&mut self) -> io::Result<()> {
        if self.upload_id.is_none() {
            let id = self
                .shared
                .runtime
                .block_on(self.create_upload())
                .map_err(io::Error::other)?;
            self.upload_id = Some(id);
        }
        let number = i32::try_from(self.parts.len() + self.in_flight.len() + 1)
            .expect("part numbers stay below 10,000");
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let reservation = self.buf_reservation.take();
        let (shared, id, upload_id) = (
            self.shared.clone(),
            self.id.clone(),
            self.upload_id.clone().expect("created above"),
        );
        let task = self.shared.runtime.spawn(async move {
            let (bucket, key, _) = s3_parts(&id);
            retried(&shared, || {
                let request = shared
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body.clone()));
                let id = &id;
                async move {
                    let out = request
                        .send()
                        .await
                        .map_err(|e| classify("UploadPart", id, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                        .build())
                }
            })
            .await
        });
        self.in_flight.push_back((task, reservation));
        // Budget for the next buffer.
        loop {
            let limit = self.shared.settings.uploads_in_flight.max(1);
            if self.in_flight.len() < limit {
                if self.base_free {
                    self.base_free = false;
                    break;
                }
                if let Some(r) = self.shared.budget.try_reserve(self.part_size) {
                    self.buf_reservation = Some(r);
                    break;
                }
            }
            self.wait_oldest()?;
        }
        self.buf = Vec::with_capacity(self.part_size as usize);
        Ok(())
    }

    /// Waits for the oldest part upload and takes back its budget.
    fn wait_oldest(&mut self) -> io::Result<()> {
        let (task, reservation) = self
            .in_flight
            .pop_front()
            .expect("a buffer without budget implies an upload in flight");
        let part = self
            .shared
            .runtime
            .block_on(task)
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        self.parts.push(part);
        if reservation.is_none() {
            self.base_free = true;
        }
        Ok(())
    }

    async fn create_upload(&self) -> Result<String, S3Error> {
        let (bucket, key) = self.bucket_key();
        // Housekeeping, not a condition of the write: credentials without
        // s3:ListBucketMultipartUploads, or servers without the action, still write.
        if self.abort_stale_uploads().await.is_err() {
            self.shared
                .stats
                .stale_upload_checks_failed
                .fetch_add(1, Relaxed);
        }
        let settings = &self.shared.settings;
        let out = retried(&self.shared, || {
            let request = with_meta!(
                self.shared
                    .client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32),
                &self.meta,
                settings
            );
            send(request.send(), "CreateMultipartUpload", &self.id)
        })
        .await?;
        out.upload_id().map(str::to_string).ok_or_else(|| {
            S3Error::new(
                "CreateMultipartUpload",
                &self.id,
                "no upload ID",
                "the response named no upload".into(),
            )
        })
    }

    /// Aborts multipart uploads to exactly this key that are not ours: only a run that
    /// was killed (it could not abort its own) leaves them, and they cost storage.
    async fn abort_stale_uploads(&self) -> Result<(), S3Error> {
        let (bucket, key) = self.bucket_key();
        let out = retried_quietly(&self.shared, || {
            let request = self
                .shared
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(key);
            send(request.send(), "ListMultipartUploads", &self.id)
        })
        .await?;
        for upload in out.uploads() {
            if upload.key() == Some(key)
                && let Some(upload_id) = upload.upload_id()
            {
                abort_upload(&self.shared, &self.id, upload_id).await?;
            }
        }
        Ok(())
    }

    fn put(&mut self) -> Result<(), S3Error> {
        let body = Bytes::from(std::mem::take(&mut self.buf));
        let this = &*self;
        let (bucket, key) = this.bucket_key();
        let settings = &this.shared.settings;
        this.shared.runtime.block_on(retried(&this.shared, || {
            let request = with_meta!(
                this.shared.client.put_object().bucket(bucket).key(key),
                &this.meta,
                settings
            )
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_if_match(if_match(&this.precondition))
            .body(ByteStream::from(body.clone()));
            send(request.send(), "PutObject", &this.id)
        }))?;
        Ok(())
    }

    fn complete(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        self.parts.sort_by_key(|p| p.part_number());
        let this = &*self;
        let (bucket, key) = this.bucket_key();
        let upload_id = this
            .upload_id
            .clone()
            .expect("multipart uploads have an ID");
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(this.parts.clone()))
            .build();
        this.shared
            .runtime
            .block_on(retried(&this.shared, || {
                let request = this
                    .shared
                    .client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(parts.clone())
                    .set_if_match(if_match(&this.precondition));
                send(request.send(), "CompleteMultipartUpload", &this.id)
            }))
            .map_err(io::Error::other)?;
        Ok(())
    }
}

fn if_match(p: &Precondition) -> Option<String> {
    match p {
        Precondition::None => None,
        Precondition::IfMatch(etag) => Some(format!("\"{etag}\"")),
    }
}

async fn abort_upload(shared: &Shared, id: &ObjectId, upload_id: &str) -> Result<(), S3Error> {
    let (bucket, key, _) = s3_parts(id);
    let result = retried_quietly(shared, || {
        let request = shared
            .client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id);
        send(request.send(), "AbortMultipartUpload", id)
    })
    .await;
    match result {
        Ok(_) => {
            shared.stats.uploads_aborted.fetch_add(1, Relaxed);
            Ok(())
        }
        // Already gone (completed or aborted by someone else): nothing to clean.
        Err(e) if e.status == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Write for S3Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.part_size as usize - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() as u64 == self.part_size {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectSink for S3Sink {
    fn commit(mut self: Box<Self>) -> Result<u64, crate::Error> {
        match self.upload_id {
            None => self.put().map_err(io::Error::other)?,
            Some(_) => self.complete()?,
        }
        self.committed = true;
        Ok(self.written)
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        if self.committed {
            return;
        }
        for (task, _) in &self.in_flight {
            task.abort();
        }
        // Best effort: a failure here leaves an upload that the next run for this key
        // (or a bucket lifecycle rule) aborts.
        let _ = self
            .shared
            .runtime
            .block_on(abort_upload(&self.shared, &self.id, &upload_id));
    }
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

/// Runs a request with the retry policy. An `AccessDenied` that ends it names the
/// caller (see [`crate::aws::caller_hint`]).
async fn retried<T, Fut>(shared: &Shared, call: impl FnMut() -> Fut) -> Result<T, S3Error>
where
    Fut: Future<Output = Result<T, (Transience, S3Error)>>,
{
    let mut result = retried_quietly(shared, call).await;
    if let Err(e) = &mut result
        && e.is_access_denied()
    {
        let caller =
            crate::aws::caller_hint(|| crate::aws::sts_client_for_s3(shared.client.config())).await;
        e.hint.push_str(&caller);
    }
    result
}

/// [`retried`] without naming the caller, for housekeeping whose failure is counted and
/// passed over (stale upload cleanup, aborting a failed upload): a run that succeeds
/// must not send a `GetCallerIdentity` it never reports.
async fn retried_quietly<T, Fut>(
    shared: &Shared,
    mut call: impl FnMut() -> Fut,
) -> Result<T, S3Error>
where
    Fut: Future<Output = Result<T, (Transience, S3Error)>>,
{
    shared
        .settings
        .retry
        .run(
            &shared.stats.retry,
            |e: &(Transience, S3Error)| e.0,
            || {
                shared.stats.requests.fetch_add(1, Relaxed);
                call()
            },
        )
        .await
        .map_err(|e| e.1)
}

fn body_error(
    action: &'static str,
    object: &dyn std::fmt::Display,
    e: &dyn std::error::Error,
) -> (Transience, S3Error) {
    // The connection broke while the body streamed (reset, timeout): try again.
    (
        Transience::Transient,
        S3Error::new(action, object, "body read failed", error_chain(e)),
    )
}

fn body_error_msg(
    action: &'static str,
    object: &dyn std::fmt::Display,
    msg: &str,
) -> (Transience, S3Error) {
    (
        Transience::Transient,
        S3Error::new(action, object, "body read failed", msg.to_string()),
    )
}

fn s3_parts(id: &ObjectId) -> (&str, &str, Option<&str>) {
    match id {
        ObjectId::S3 {
            bucket,
            key,
            version,
        } => (bucket, key, version.as_deref()),
        ObjectId::Local(_) => unreachable!("S3 operations take S3 objects"),
    }
}

fn http_date(s: &str) -> Option<aws_smithy_types::DateTime> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate).ok()
}

/// Tags as the `x-amz-tagging` header wants them: a URL query string.
fn tagging(tags: &[(String, String)]) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const QUERY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// The whole object's size from `Content-Range: bytes 0-N/TOTAL`, else the body length.
fn total_size(content_range: Option<&str>, content_length: Option<i64>) -> u64 {
    content_range
        .and_then(|r| r.rsplit('/').next())
        .and_then(|t| t.parse().ok())
        .or_else(|| content_length.and_then(|l| u64::try_from(l).ok()))
        .unwrap_or(0)
}
