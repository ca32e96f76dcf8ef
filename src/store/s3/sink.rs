//! Writing an object: one PutObject when the output fits in a part, else a multipart
//! upload (parts in flight within the byte budget) completed only on commit and aborted
//! otherwise.
//!
//! Parts up to [`STREAM_PARTS_ABOVE`] are filled whole, then uploaded, so each can be
//! sent again by the request's own retries. Larger parts of an output whose size is
//! known to reach them are streamed while they are made ([`super::streamed`]): memory
//! stays a few chunks per object at any part size.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use aws_sdk_s3::config::StalledStreamProtectionConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::error::{S3Error, classify};
use super::meta::{http_date, tagging, with_meta};
use super::request::{retried, retried_quietly, send};
use super::streamed::{CHUNK, PartBody};
use super::{MIN_PART_SIZE, S3Settings, S3Store, Shared, s3_parts};
use crate::store::{BoxFuture, ObjectId, ObjectMeta, Payload, Precondition, Reservation, Sink};

/// Bytes per copied part, unless parts are larger. A part S3 copies itself costs one
/// request whatever its size, and sealpipe holds no buffer for it: fewer, larger parts
/// are fewer requests, while 64 MiB still spreads a 300 MiB body over five copies that
/// run at once.
const COPY_PART_SIZE: u64 = 64 * 1024 * 1024;

/// Parts larger than this are streamed when the output is known to fill them: holding
/// two of them whole (one uploading, one filling) would take more memory than a whole
/// job should, while smaller parts keep the retries that only a held body allows.
pub(super) const STREAM_PARTS_ABOVE: u64 = 16 * 1024 * 1024;

/// How long a streamed part may go without the server taking a byte of it.
const SERVER_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// An object being written to S3; see [`S3Store::sink`].
pub struct S3Sink {
    shared: Arc<Shared>,
    id: ObjectId,
    meta: ObjectMeta,
    precondition: Precondition,
    /// Whether bodies go without a payload signature (see [`Payload`]).
    unsigned: bool,
    part_size: u64,
    /// Capacity of the first buffer: the expected output, up to a part.
    first_capacity: usize,
    /// Whether the first buffer (covered by the base reservation) was lent.
    lent_first: bool,
    /// The budget of the buffer lent now.
    lent_budget: Held,
    /// Bytes given back but not yet sent: a whole output smaller than a part (sent with
    /// PutObject on commit), or the start of a part.
    pending: Option<(BytesMut, Held)>,
    written: u64,
    base_free: bool,
    upload_id: Option<String>,
    in_flight: VecDeque<(PartUpload, Held)>,
    parts: Vec<CompletedPart>,
    /// A copied part shorter than S3's minimum was the last one: nothing may follow.
    ended_short: bool,
    /// Output bytes before this offset go out in streamed parts (0: none do).
    stream_end: u64,
    /// The streamed part being fed, if one is.
    streaming: Option<Streaming>,
    /// Committed or aborted: nothing left for `Drop` to clean.
    settled: bool,
}

/// A part being uploaded: it returns the completed part and its buffer, for reuse.
type PartUpload = JoinHandle<Result<(CompletedPart, Bytes), S3Error>>;

/// A streamed part still taking bytes.
struct Streaming {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    /// Bytes it still takes.
    left: u64,
}

/// The budget a buffer holds.
#[derive(Debug)]
enum Held {
    /// The object's base reservation (its first buffer, then reused).
    Base,
    /// Budget reserved for this buffer, returned when it is dropped.
    Extra(#[expect(dead_code, reason = "held for its drop")] Reservation),
    /// Nothing: the remainder of a first buffer that outgrew the expected output size,
    /// under a part.
    Unaccounted,
}

impl S3Sink {
    fn bucket_key(&self) -> (&str, &str) {
        let (bucket, key, _) = s3_parts(&self.id);
        (bucket, key)
    }

    /// A buffer for the next bytes: what is pending (grown to a part), else a pooled
    /// part-size buffer once there is budget for it: the base reservation if free, else
    /// free budget, else the oldest upload's.
    async fn next_buffer(&mut self) -> Result<BytesMut, S3Error> {
        let part = self.part_size as usize;
        if self.written < self.stream_end {
            // A chunk of a streamed part, never past the part's end. The object's base
            // reservation covers the few chunks a streamed part holds.
            let left = match &self.streaming {
                Some(s) => s.left,
                None => self.next_streamed_len(),
            };
            self.lent_budget = Held::Unaccounted;
            return Ok(self.shared.buffers.take(CHUNK.min(left as usize)));
        }
        if let Some((mut buf, held)) = self.pending.take() {
            buf.reserve(part.saturating_sub(buf.len()));
            self.lent_budget = held;
            // Lent again with its bytes in it: they come back counted with the rest.
            self.written -= buf.len() as u64;
            return Ok(buf);
        }
        if !std::mem::replace(&mut self.lent_first, true) {
            // The object's base reservation covers its first buffer.
            self.lent_budget = Held::Base;
            return Ok(self.shared.buffers.take(self.first_capacity));
        }
        loop {
            let limit = self.shared.settings.uploads_in_flight.max(1);
            if self.in_flight.len() < limit {
                if self.base_free {
                    self.base_free = false;
                    self.lent_budget = Held::Base;
                    break;
                }
                if let Some(r) = self.shared.budget.try_reserve(self.part_size) {
                    self.lent_budget = Held::Extra(r);
                    break;
                }
            }
            self.wait_oldest().await?;
        }
        Ok(self.shared.buffers.take(part))
    }

    /// Takes back the bytes of a lent buffer; sends every whole part.
    async fn take_back(&mut self, filled: BytesMut) -> Result<(), S3Error> {
        if self.ended_short && !filled.is_empty() {
            return Err(self.refused("nothing can follow a copied part shorter than 5 MiB"));
        }
        let mut buf = filled;
        while self.written < self.stream_end && !buf.is_empty() {
            self.stream_out(&mut buf).await?;
        }
        self.written += buf.len() as u64;
        let mut held = std::mem::replace(&mut self.lent_budget, Held::Unaccounted);
        let part = self.part_size as usize;
        while buf.len() >= part {
            let rest = buf.split_off(part);
            // A remainder only follows a buffer that outgrew a part (the first one, when
            // the output is larger than expected); it holds no budget of its own.
            let this = std::mem::replace(&mut held, Held::Unaccounted);
            self.send_part(buf, this).await?;
            buf = rest;
        }
        if buf.is_empty() {
            self.release(held);
        } else {
            self.pending = Some((buf, held));
        }
        Ok(())
    }

    /// Starts the multipart upload, unless it is started.
    async fn ensure_upload(&mut self) -> Result<(), S3Error> {
        if self.upload_id.is_none() {
            self.upload_id = Some(self.create_upload().await?);
        }
        Ok(())
    }

    /// The number of the part to be sent next: parts done, in flight, plus one.
    fn next_part_number(&self) -> i32 {
        i32::try_from(self.parts.len() + self.in_flight.len() + 1)
            .expect("part numbers stay below 10,000")
    }

    /// Sends `body` as the next part (starting the upload first), holding `reservation`
    /// until it is uploaded.
    async fn send_part(&mut self, body: BytesMut, held: Held) -> Result<(), S3Error> {
        self.ensure_upload().await?;
        let number = self.next_part_number();
        let body = body.freeze();
        let (shared, id, upload_id) = (
            self.shared.clone(),
            self.id.clone(),
            self.upload_id.clone().expect("created above"),
        );
        let unsigned = self.unsigned;
        let task = self.shared.runtime.spawn(async move {
            let (bucket, key, _) = s3_parts(&id);
            let client = shared.client(bucket).await;
            let part = retried(&shared, || {
                let request = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .body(ByteStream::from(body.clone()))
                    .customize();
                let request = if unsigned {
                    request.disable_payload_signing()
                } else {
                    request
                };
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
            .await?;
            shared
                .stats
                .bytes_sent
                .fetch_add(body.len() as u64, Relaxed);
            Ok((part, body))
        });
        self.in_flight.push_back((task, held));
        Ok(())
    }

    /// The length of the next streamed part: a whole part, or what is left before
    /// `stream_end` (never under S3's minimum: [`Self::expect_at_least`] sees to it).
    fn next_streamed_len(&self) -> u64 {
        self.part_size.min(self.stream_end - self.written)
    }

    /// Sends the start of `buf` into the streamed part (starting one first if none is
    /// being fed), as much as the part still takes; leaves the rest in `buf`.
    async fn stream_out(&mut self, buf: &mut BytesMut) -> Result<(), S3Error> {
        if self.streaming.is_none() {
            self.start_streamed_part().await?;
        }
        let streaming = self.streaming.as_mut().expect("started above");
        let take = buf.len().min(streaming.left as usize);
        let chunk = buf.split_to(take).freeze();
        streaming.left -= take as u64;
        let ended = streaming.left == 0;
        // A full queue for this long is a server that stopped reading: the SDK's own
        // stall protection is off for streamed parts (it would count the writer's
        // pauses, a slow source, as the server's).
        let sent = match tokio::time::timeout(SERVER_STALL, streaming.chunks.send(chunk)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.streaming = None;
                if let Some((task, _)) = self.in_flight.pop_back() {
                    task.abort();
                }
                let mut e = S3Error::new(
                    "UploadPart",
                    &self.id,
                    "RequestTimeout",
                    format!(
                        "the server took no bytes of a streamed part for {} s (only \
                         processing the object again retries it)",
                        SERVER_STALL.as_secs()
                    ),
                );
                (e.restart, e.transient) = (true, true);
                return Err(e);
            }
        };
        self.written += take as u64;
        if ended || !sent {
            // Dropping the sender ends nothing early: the body ends at its length.
            self.streaming = None;
        }
        if !sent {
            // The upload stopped taking bytes: it failed, and says why.
            return Err(self.streamed_failure().await);
        }
        Ok(())
    }

    /// Starts the next part as a streamed upload of its known length.
    async fn start_streamed_part(&mut self) -> Result<(), S3Error> {
        self.ensure_upload().await?;
        while self.in_flight.len() >= self.shared.settings.uploads_in_flight.max(1) {
            self.wait_oldest().await?;
        }
        let len = self.next_streamed_len();
        let number = self.next_part_number();
        let (chunks, body) = PartBody::new(len, self.shared.buffers.clone());
        let (shared, id) = (self.shared.clone(), self.id.clone());
        let upload_id = self.upload_id.clone().expect("created above");
        let task = self.shared.runtime.spawn(async move {
            let (bucket, key, _) = s3_parts(&id);
            let client = shared.client(bucket).await;
            // One attempt: the body is gone once sent. Payload signing needs the whole
            // body first, so streamed bodies are never signed: only messages, or any
            // body over TLS, are streamed (see `plan_streaming`).
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(len as i64)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from_body_1_x(body))
                .customize()
                .config_override(
                    aws_sdk_s3::Config::builder().stalled_stream_protection(
                        StalledStreamProtectionConfig::enabled()
                            .upload_enabled(false)
                            .build(),
                    ),
                )
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| {
                    let (transience, mut e) = classify("UploadPart", &id, e);
                    e.restart = transience != crate::retry::Transience::Permanent;
                    e.message
                        .push_str(" (a streamed part, sent once: only processing the object again retries it)");
                    e
                })?;
            shared.stats.bytes_sent.fetch_add(len, Relaxed);
            let part = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .build();
            Ok((part, Bytes::new()))
        });
        self.in_flight.push_back((task, Held::Unaccounted));
        self.streaming = Some(Streaming { chunks, left: len });
        Ok(())
    }

    /// Why the streamed part being fed stopped: its upload's error.
    async fn streamed_failure(&mut self) -> S3Error {
        match self.in_flight.pop_back() {
            Some((task, _)) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => self.refused_upload("the part upload ended before its bytes did"),
                Err(e) => self.refused_upload(&format!("the upload task stopped: {e}")),
            },
            None => self.refused_upload("no upload was taking the part's bytes"),
        }
    }

    fn refused_upload(&self, why: &str) -> S3Error {
        S3Error::new("UploadPart", &self.id, "Internal", why.to_string())
    }

    /// Appends `range` of `from` as parts copied by S3 itself (UploadPartCopy),
    /// conditional on the source's `etag`: the bytes never pass through sealpipe.
    ///
    /// S3 wants every part but the last to hold at least 5 MiB: what was put before must
    /// be nothing or at least that much, and a copy that ends with a shorter part ends
    /// the output.
    async fn copy_in(
        &mut self,
        from: &ObjectId,
        etag: &str,
        range: std::ops::Range<u64>,
    ) -> Result<(), S3Error> {
        let ObjectId::S3 {
            bucket,
            key,
            version,
        } = from
        else {
            return Err(self.refused("S3 copies parts only from S3 objects"));
        };
        if self.ended_short {
            return Err(self.refused("nothing can follow a copied part shorter than 5 MiB"));
        }
        if let Some((buf, held)) = self.pending.take() {
            if (buf.len() as u64) < MIN_PART_SIZE {
                return Err(self.refused(
                    "bytes written before a copied range must make a part of at least 5 MiB",
                ));
            }
            self.send_part(buf, held).await?;
        }
        self.ensure_upload().await?;
        let mut source = format!(
            "{bucket}/{}",
            percent_encoding::utf8_percent_encode(key, COPY_SOURCE_KEY)
        );
        if let Some(v) = version {
            source.push_str("?versionId=");
            source.push_str(&percent_encoding::utf8_percent_encode(v, COPY_SOURCE_KEY).to_string());
        }
        let mut start = range.start;
        let copy_part = self.part_size.max(COPY_PART_SIZE);
        while start < range.end {
            let mut len = copy_part.min(range.end - start);
            // Never leave a remainder under the minimum for a part of its own.
            if range.end - start - len < MIN_PART_SIZE {
                len = range.end - start;
            }
            if len < MIN_PART_SIZE {
                self.ended_short = true;
            }
            // Uploads in flight stay within the per-object limit; copies hold no budget.
            while self.in_flight.len() >= self.shared.settings.uploads_in_flight.max(1) {
                self.wait_oldest().await?;
            }
            self.copy_part(&source, etag, start, len);
            self.written += len;
            start += len;
        }
        Ok(())
    }

    /// Starts copying `len` bytes at `start` of `source` as the next part.
    fn copy_part(&mut self, source: &str, etag: &str, start: u64, len: u64) {
        let number = self.next_part_number();
        let (shared, id) = (self.shared.clone(), self.id.clone());
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let (source, if_match) = (source.to_string(), format!("\"{etag}\""));
        let task = self.shared.runtime.spawn(async move {
            let (bucket, key, _) = s3_parts(&id);
            let client = shared.client(bucket).await;
            let part = retried(&shared, || {
                let request = client
                    .upload_part_copy()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_if_match(&if_match)
                    .copy_source_range(format!("bytes={start}-{}", start + len - 1));
                let id = &id;
                async move {
                    let out = request
                        .send()
                        .await
                        .map_err(|e| classify("UploadPartCopy", id, e))?;
                    let result = out.copy_part_result();
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(result.and_then(|r| r.e_tag()).map(str::to_string))
                        .set_checksum_crc32(
                            result.and_then(|r| r.checksum_crc32()).map(str::to_string),
                        )
                        .build())
                }
            })
            .await?;
            shared.stats.bytes_copied.fetch_add(len, Relaxed);
            Ok((part, Bytes::new()))
        });
        self.in_flight.push_back((task, Held::Unaccounted));
    }

    fn refused(&self, why: &str) -> S3Error {
        S3Error::new(
            "UploadPartCopy",
            &self.id,
            "InvalidRequest",
            why.to_string(),
        )
    }

    /// Gives a buffer's budget back: the base to this object, the rest to the job.
    fn release(&mut self, held: Held) {
        if matches!(held, Held::Base) {
            self.base_free = true;
        }
    }

    /// Waits for the oldest part upload, takes back its budget and its buffer.
    async fn wait_oldest(&mut self) -> Result<(), S3Error> {
        let Some((task, held)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (part, body) = task.await.map_err(|e| {
            S3Error::new(
                "UploadPart",
                &self.id,
                "Internal",
                format!("the upload task stopped: {e}"),
            )
        })??;
        self.parts.push(part);
        if let Ok(buf) = body.try_into_mut() {
            self.shared.buffers.give(buf);
        }
        self.release(held);
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
        let client = self.shared.client(bucket).await;
        let out = retried(&self.shared, || {
            let request = with_meta!(
                client
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
        let client = self.shared.client(bucket).await;
        let out = retried_quietly(&self.shared, || {
            let request = client.list_multipart_uploads().bucket(bucket).prefix(key);
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

    async fn put(&mut self) -> Result<(), S3Error> {
        let body = self
            .pending
            .take()
            .map(|(buf, _)| buf.freeze())
            .unwrap_or_default();
        let (bucket, key) = self.bucket_key();
        let settings = &self.shared.settings;
        let client = self.shared.client(bucket).await;
        retried(&self.shared, || {
            let request = with_meta!(
                client.put_object().bucket(bucket).key(key),
                &self.meta,
                settings
            )
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_if_match(if_match(&self.precondition))
            .set_if_none_match(if_none_match(&self.precondition))
            .body(ByteStream::from(body.clone()))
            .customize();
            let request = if self.unsigned {
                request.disable_payload_signing()
            } else {
                request
            };
            send(request.send(), "PutObject", &self.id)
        })
        .await?;
        let sent = body.len() as u64;
        self.shared.stats.bytes_sent.fetch_add(sent, Relaxed);
        if let Ok(buf) = body.try_into_mut() {
            self.shared.buffers.give(buf);
        }
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), S3Error> {
        if self.streaming.take().is_some() {
            // The writer promised more than it wrote: the streamed part cannot be
            // completed short, and its upload fails now that its body ended early.
            let _ = self.streamed_failure().await;
            return Err(S3Error::new(
                "UploadPart",
                &self.id,
                "IncompleteBody",
                format!(
                    "the output ended at {} bytes, before the {} its streamed parts were sent \
                     as (the source changed while it was read?)",
                    self.written, self.stream_end
                ),
            ));
        }
        if let Some((buf, held)) = self.pending.take() {
            self.send_part(buf, held).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        self.parts.sort_by_key(|p| p.part_number());
        let (bucket, key) = self.bucket_key();
        let upload_id = self
            .upload_id
            .clone()
            .expect("multipart uploads have an ID");
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(self.parts.clone()))
            .build();
        let client = self.shared.client(bucket).await;
        retried(&self.shared, || {
            let request = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(parts.clone())
                .set_if_match(if_match(&self.precondition))
                .set_if_none_match(if_none_match(&self.precondition));
            send(request.send(), "CompleteMultipartUpload", &self.id)
        })
        .await?;
        Ok(())
    }

    /// Stops uploads in flight and aborts the multipart upload, if one was started.
    async fn abandon(&mut self) {
        self.settled = true;
        self.streaming = None;
        for (task, _) in self.in_flight.drain(..) {
            task.abort();
        }
        if let Some(upload_id) = self.upload_id.take() {
            // Best effort: a failure here leaves an upload that the next run for this
            // key (or a bucket lifecycle rule) aborts.
            let _ = abort_upload(&self.shared, &self.id, &upload_id).await;
        }
    }
}

fn if_match(p: &Precondition) -> Option<String> {
    match p {
        Precondition::None | Precondition::IfAbsent => None,
        Precondition::IfMatch(etag) => Some(format!("\"{etag}\"")),
    }
}

fn if_none_match(p: &Precondition) -> Option<String> {
    (p == &Precondition::IfAbsent).then(|| "*".to_string())
}

async fn abort_upload(shared: &Shared, id: &ObjectId, upload_id: &str) -> Result<(), S3Error> {
    let (bucket, key, _) = s3_parts(id);
    let client = shared.client(bucket).await;
    let result = retried_quietly(shared, || {
        let request = client
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

/// What a key keeps unescaped in `x-amz-copy-source`: unreserved characters and `/`.
const COPY_SOURCE_KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

impl Sink for S3Sink {
    fn lend(&mut self) -> BoxFuture<'_, Result<BytesMut, crate::Error>> {
        Box::pin(async move { Ok(self.next_buffer().await?) })
    }

    fn put(&mut self, filled: BytesMut) -> BoxFuture<'_, Result<(), crate::Error>> {
        Box::pin(async move { Ok(self.take_back(filled).await?) })
    }

    fn copy_range<'a>(
        &'a mut self,
        from: &'a ObjectId,
        etag: &'a str,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'a, Result<(), crate::Error>> {
        Box::pin(async move { Ok(self.copy_in(from, etag, range).await?) })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, crate::Error>> {
        Box::pin(async move {
            let result = match self.upload_id {
                None => self.put().await,
                Some(_) => self.complete().await,
            };
            match result {
                Ok(()) => {
                    self.settled = true;
                    Ok(self.written)
                }
                Err(e) => {
                    self.abandon().await;
                    Err(e.into())
                }
            }
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.abandon().await })
    }

    fn expect_at_least(&mut self, bytes: u64) {
        self.plan_streaming(bytes);
    }
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for (task, _) in &self.in_flight {
            task.abort();
        }
        // Neither committed nor aborted (its writer panicked, or the job was torn
        // down): abort the upload without waiting for it.
        if let Some(upload_id) = self.upload_id.take() {
            let (shared, id) = (self.shared.clone(), self.id.clone());
            self.shared.runtime.spawn(async move {
                let _ = abort_upload(&shared, &id, &upload_id).await;
            });
        }
    }
}

impl S3Store {
    /// Starts writing `bucket/key`. Objects smaller than a part are sent with one
    /// PutObject on commit; larger ones become multipart uploads (after aborting any
    /// upload a killed run left for the same key), aborted unless committed.
    ///
    /// `size_hint` (the expected output size) sizes the first buffer and the parts: an
    /// object too large for 10,000 parts of the configured size gets larger parts.
    pub fn sink(
        &self,
        bucket: &str,
        key: &str,
        meta: ObjectMeta,
        precondition: Precondition,
        payload: Payload,
        size_hint: u64,
    ) -> S3Sink {
        let part_size = self.part_size_for(size_hint);
        S3Sink {
            shared: self.shared.clone(),
            id: ObjectId::s3(bucket, key, None),
            meta,
            precondition,
            // Every body carries a CRC32 checksum against corruption. Over TLS, or when
            // the body is a message (any change to it fails decryption, and `verify`
            // finds it), hashing it again for SigV4 adds nothing; plaintext sent over
            // plain HTTP keeps its signature, the only thing protecting it in transit.
            unsigned: payload == Payload::Message || !self.shared.plain_http,
            part_size,
            first_capacity: size_hint.clamp(1, part_size) as usize,
            lent_first: false,
            lent_budget: Held::Unaccounted,
            pending: None,
            written: 0,
            base_free: false,
            upload_id: None,
            in_flight: VecDeque::new(),
            parts: Vec::new(),
            ended_short: false,
            stream_end: 0,
            streaming: None,
            settled: false,
        }
    }
}

impl S3Sink {
    /// Streams the parts that an output of at least `bytes` is sure to fill, when
    /// parts are large (above [`STREAM_PARTS_ABOVE`]) and the body needs no payload
    /// signature; the rest (at most the difference, a few KiB for a message whose
    /// header size was guessed) is held and sent as before.
    fn plan_streaming(&mut self, bytes: u64) {
        if self.part_size <= STREAM_PARTS_ABOVE
            || !self.unsigned
            || self.written > 0
            || self.lent_first
            || bytes < self.part_size
        {
            return;
        }
        let tail = bytes % self.part_size;
        self.stream_end = if tail >= MIN_PART_SIZE {
            bytes
        } else {
            bytes - tail
        };
        // The base reservation's write share is not lent for streamed parts: the
        // held remainder may use it.
        self.lent_first = true;
        self.base_free = true;
    }
}
