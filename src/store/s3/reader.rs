//! Reading an object: the first ranged GET brings its metadata, later ranges are
//! fetched ahead in parallel within the byte budget, each conditional on the first
//! response's ETag.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::error::{S3Error, classify, error_chain};
use super::meta::{object_meta, server_side, unquote, user_metadata};
use super::request::{InFlight, retried, send};
use super::{S3Store, Shared, s3_parts};
use crate::retry::Transience;
use crate::store::{Body, BoxFuture, ObjectId, ObjectMeta, Reservation, SourceInfo, SourceObject};

/// Bytes of a body's start kept in [`SourceObject::head`].
const HEAD_BYTES: usize = 4096;
/// The largest chunk a body hands on (slices of the range's buffer, not copies).
const CHUNK: usize = 1 << 20;

/// One GET's result.
struct Got {
    /// Present on the first GET only.
    meta: Option<ObjectMeta>,
    server_side: crate::store::ServerSide,
    size: u64,
    etag: Option<String>,
    version: Option<String>,
    tag_count: i32,
    body: Segments,
}

/// A response body: the buffers it is held in, consumed from the front.
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

    /// Takes every segment, as one buffer.
    fn take_all(&mut self) -> Bytes {
        let bytes = match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop_front().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                for part in self.parts.drain(..) {
                    all.extend_from_slice(&part);
                }
                all.freeze()
            }
        };
        self.len = 0;
        bytes
    }

    /// Takes the next chunk: the first segment, at most [`CHUNK`] bytes of it. A range
    /// arrives as one buffer; handed on whole, the few chunks a body may have queued
    /// toward the codec would each be a part, outside the budget.
    fn pop(&mut self) -> Option<Bytes> {
        let front = self.parts.front_mut()?;
        let chunk = if front.len() > CHUNK {
            front.split_to(CHUNK)
        } else {
            self.parts.pop_front()?
        };
        self.len -= chunk.len();
        Some(chunk)
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
    let client = shared.client(bucket).await;
    let request = |range: Option<(u64, u64)>| {
        client
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
    let server_side = server_side!(out);
    let size = total_size(out.content_range(), out.content_length());
    let out_range = out.content_range().map(str::to_string);
    let etag = out.e_tag().map(unquote);
    let version = out.version_id().map(str::to_string);
    let tag_count = out.tag_count().unwrap_or(0);
    // Into one buffer of the announced length, chunk by chunk as the network delivers
    // them. Keeping the chunks themselves would hold on to the larger buffers they
    // were cut from: measured, a 4 GiB object read in 64 MiB ranges peaked 180 MiB
    // above the byte budget that way, which this copy (a memcpy per byte) avoids.
    // What was asked bounds what is taken, whatever the server announces or sends.
    let asked = range.map_or(shared.settings.read_range(), |(_, len)| len);
    let limit = usize::try_from(asked).unwrap_or(usize::MAX);
    let announced = out
        .content_length()
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(0);
    let mut whole = BytesMut::with_capacity(announced.min(limit));
    let mut stream = out.body;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| body_error("GetObject", id, &e))?
    {
        // A server that ignores ranges answers the same way every time: no retry.
        if whole.len() + chunk.len() > limit {
            return Err((
                Transience::Permanent,
                S3Error::new(
                    "GetObject",
                    id,
                    "InvalidResponse",
                    format!(
                        "the response body is longer than the {asked} bytes asked for \
                         (does the server ignore Range?)"
                    ),
                ),
            ));
        }
        whole.extend_from_slice(&chunk);
    }
    let body = Segments::new([whole.freeze()]);
    shared
        .stats
        .bytes_received
        .fetch_add(body.len() as u64, std::sync::atomic::Ordering::Relaxed);
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
        server_side,
        size,
        etag,
        version,
        tag_count,
        body,
    })
}

/// An object's body as consecutive ranges, fetched ahead in parallel.
struct S3Body {
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
    /// Ranges are fetched only when the reader needs them, one at a time: for a body
    /// that will mostly not be read (a rewrap copies it server-side).
    on_demand: bool,
}

/// Bytes of ranges fetched ahead of the reader, per object, at most (whatever
/// `read_ahead` says): four default 8 MiB ranges, three of the largest.
const READ_AHEAD_BYTES: u64 = 96 * 1024 * 1024;

impl S3Body {
    /// Starts fetching more ranges while there are ranges left, read-ahead slots, and
    /// budget: the base reservation first, then whatever is free now.
    fn read_ahead(&mut self) {
        let settings = &self.shared.settings;
        let ahead = if self.on_demand {
            usize::from(self.current.len() == 0)
        } else {
            // Large ranges fetched ahead are memory no one uses yet: a few suffice.
            let fit = (READ_AHEAD_BYTES / settings.read_range().max(1)).max(1);
            settings.read_ahead.max(1).min(fit as usize)
        };
        while self.pending.len() < ahead && self.next_offset < self.size {
            let len = settings.read_range().min(self.size - self.next_offset);
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

    async fn next(&mut self) -> Result<Option<Bytes>, S3Error> {
        loop {
            if let Some(segment) = self.current.pop() {
                return Ok(Some(segment));
            }
            // Drained: its budget goes back, to the object's base or to the job.
            if self.current_reservation.take().is_none() {
                self.base_free = true;
            }
            self.read_ahead();
            let Some((task, extra)) = self.pending.pop_front() else {
                return Ok(None);
            };
            let got = task.await.map_err(|e| {
                S3Error::new(
                    "GetObject",
                    &self.id,
                    "Internal",
                    format!("the download task stopped: {e}"),
                )
            })??;
            self.current = got.body;
            self.current_reservation = extra;
            self.read_ahead();
        }
    }
}

impl Body for S3Body {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, crate::Error>> {
        Box::pin(async move { Ok(self.next().await?) })
    }

    fn into_blocking(
        self: Box<Self>,
    ) -> Result<Box<dyn crate::bridge::BlockingRead>, Box<dyn Body>> {
        // Its ranges arrive over the network: it stays a body, pumped ahead.
        Err(self)
    }

    fn take_if_in_memory(&mut self, limit: usize) -> Option<Bytes> {
        let whole =
            self.pending.is_empty() && self.next_offset >= self.size && self.current.len <= limit;
        whole.then(|| self.current.take_all())
    }
}

impl Drop for S3Body {
    fn drop(&mut self) {
        for (task, _) in &self.pending {
            task.abort();
        }
    }
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

/// How a body is fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAhead {
    /// Part-size ranges, several ahead of the reader: for bodies read whole.
    Parts,
    /// The first `first` bytes (at most a part), then one part-size range at a time
    /// when the reader asks: for bodies read only in part.
    OnDemand {
        /// Bytes of the first GET.
        first: u64,
    },
}

/// The whole object's size from `Content-Range: bytes 0-N/TOTAL`, else the body length.
fn total_size(content_range: Option<&str>, content_length: Option<i64>) -> u64 {
    content_range
        .and_then(|r| r.rsplit('/').next())
        .and_then(|t| t.parse().ok())
        .or_else(|| content_length.and_then(|l| u64::try_from(l).ok()))
        .unwrap_or(0)
}

impl S3Store {
    /// Opens an object for reading: fetches its first part (which brings size, ETag,
    /// version and metadata), its tags if it has any, and starts reading ahead. Every
    /// later range is conditional on the same ETag (and version), so an object replaced
    /// mid-read fails instead of mixing two versions.
    ///
    /// The caller holds the object's base reservation ([`reserve_object`](Self::reserve_object)).
    pub async fn open(&self, id: &ObjectId) -> Result<SourceObject, S3Error> {
        self.open_with(id, ReadAhead::Parts).await
    }

    /// [`open`](Self::open), reading ahead as `read_ahead` says.
    pub async fn open_with(
        &self,
        id: &ObjectId,
        read_ahead: ReadAhead,
    ) -> Result<SourceObject, S3Error> {
        super::s3_only("GetObject", id)?;
        let shared = &self.shared;
        let part = shared.settings.read_range();
        let (first_len, on_demand) = match read_ahead {
            ReadAhead::Parts => (part, false),
            ReadAhead::OnDemand { first } => (first.clamp(1, part), true),
        };
        let first = retried(shared, || get(shared, id, Some((0, first_len)), None)).await?;
        let mut meta = first.meta.unwrap_or_default();
        if first.tag_count > 0 {
            meta.tags = self.tags(id).await?;
        }
        let etag = first.etag.clone().unwrap_or_default();
        let (bucket, key, _) = s3_parts(id);
        // Later ranges name the version read first, when the bucket has versions.
        let pinned = ObjectId::s3(bucket, key, first.version.clone());
        let head = first.body.prefix(HEAD_BYTES);
        let mut body = S3Body {
            shared: self.shared.clone(),
            id: pinned,
            etag: etag.clone(),
            size: first.size,
            next_offset: first.body.len() as u64,
            current: first.body,
            current_reservation: None,
            pending: VecDeque::new(),
            base_free: false,
            on_demand,
        };
        body.read_ahead();
        Ok(SourceObject {
            info: SourceInfo {
                size: body.size,
                etag,
                version: first.version,
                meta,
                head,
                server_side: Some(first.server_side),
            },
            body: Box::new(body),
        })
    }

    /// The whole body and metadata of a small object (an S3 Encryption Client
    /// instruction file), or `None` if it does not exist; an object larger than
    /// `limit` is refused after reading no more than `limit + 1` bytes of it.
    pub async fn get_small(
        &self,
        id: &ObjectId,
        limit: usize,
    ) -> Result<Option<(Bytes, ObjectMeta)>, S3Error> {
        super::s3_only("GetObject", id)?;
        let shared = &self.shared;
        let got = match retried(shared, || {
            get(shared, id, Some((0, limit as u64 + 1)), None)
        })
        .await
        {
            Ok(got) => got,
            Err(e) if e.status == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        if got.size > limit as u64 {
            return Err(S3Error::new(
                "GetObject",
                id,
                "TooLarge",
                format!("it holds {} bytes, more than the {limit} it may", got.size),
            ));
        }
        Ok(Some((got.body.prefix(limit), got.meta.unwrap_or_default())))
    }

    async fn tags(&self, id: &ObjectId) -> Result<Vec<(String, String)>, S3Error> {
        let (bucket, key, version) = s3_parts(id);
        let client = self.shared.client(bucket).await;
        let out = retried(&self.shared, || {
            let request = client
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
}
