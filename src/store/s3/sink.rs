//! Writing an object: one PutObject when the output fits in a part, else a multipart
//! upload (parts in flight within the byte budget) completed only on commit and aborted
//! otherwise.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use bytes::Bytes;

use super::error::{S3Error, classify};
use super::meta::{http_date, tagging, with_meta};
use super::request::{InFlight, retried, retried_quietly, send};
use super::{S3Settings, S3Store, Shared, s3_parts};
use crate::store::{ObjectId, ObjectMeta, ObjectSink, Precondition, Reservation};

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

impl S3Store {
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
