//! What a source is once opened: the object's description, and its body as a stream of
//! chunks pulled by an async task.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::ObjectMeta;
use crate::Error;
use crate::bridge::BlockingRead;

/// A boxed future, so store traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An object's body: chunks in order, `None` at the end. A body checks its own length
/// (an S3 range that came back short, a file that changed), so `None` means complete.
pub trait Body: Send {
    /// The next chunk, or `None` once the whole body was returned.
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, Error>>;

    /// The rest of the body, if it is all in memory already (a small S3 object arrives
    /// whole with its first GET) and at most `limit` bytes: small objects are then
    /// processed at once, without streaming them through the bridge.
    fn take_if_in_memory(&mut self, limit: usize) -> Option<Bytes> {
        let _ = limit;
        None
    }

    /// The rest of this body as a reader for the codec's own thread, when reading it
    /// blocks on nothing but a local disk (a file): then it is read straight into the
    /// codec's buffers, without a pump, chunks or copies between them. Bodies that
    /// wait on the network stay bodies.
    fn into_blocking(self: Box<Self>) -> Result<Box<dyn BlockingRead>, Box<dyn Body>>;
}

/// What is known of an opened object before its body is read.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// Its size in bytes.
    pub size: u64,
    /// ETag (S3) or fingerprint (local) of exactly the bytes being read.
    pub etag: String,
    /// Version ID, on versioned buckets.
    pub version: Option<String>,
    /// Metadata and tags.
    pub meta: ObjectMeta,
    /// The first bytes of the body, when already fetched (S3): enough to recognise a
    /// message header without another request. The body still yields them.
    pub head: Bytes,
    /// How S3 encrypts the object at rest (`None` for local files).
    pub server_side: Option<ServerSide>,
}

/// An S3 object's server-side encryption, as GetObject and HeadObject report it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSide {
    /// `AES256` (SSE-S3), `aws:kms` (SSE-KMS), `aws:kms:dsse` (DSSE-KMS); `None` when
    /// S3 reports none.
    pub algorithm: Option<String>,
    /// The KMS key of SSE-KMS and DSSE-KMS.
    pub kms_key: Option<String>,
    /// Whether an S3 Bucket Key makes the object's data keys.
    pub bucket_key: bool,
    /// SSE-C's algorithm, when the object's key was given by its writer.
    pub customer_algorithm: Option<String>,
}

/// An object opened for reading.
pub struct SourceObject {
    /// What is known of it.
    pub info: SourceInfo,
    /// The body.
    pub body: Box<dyn Body>,
}
