//! Operations on ONE object: encrypt, decrypt (and verify), re-encrypt, and the resume
//! and skip decisions. Each takes exactly what it needs (keys or a pool, options, an
//! opened source, a way to make its sink) and knows nothing of listings, concurrency or
//! reports: those are `pipeline`'s. New uses (rewrap, an HTTP service, benchmarks) are
//! new callers of these, with other sources and sinks.
//!
//! Every operation follows one rule: the output is committed only when every byte of it
//! is written and, when reading a message, every tag and signature verified; any other
//! end aborts it, so nothing partial appears anywhere.

mod decrypt;
mod encrypt;
mod header;
pub mod marker;
mod reencrypt;
pub mod resume;
mod rewrap;
mod s3ec;
mod scan;

pub use decrypt::{Opener, decrypt, verify};
pub use encrypt::{Sealer, encrypt};
pub use header::read as read_header;
pub use reencrypt::reencrypt;
pub use rewrap::{BodyCopy, Rewrap, Signed, rewrap, wrapped_as_wanted};
pub use s3ec::{decrypt_s3ec, reencrypt_s3ec, verify_s3ec};
pub use scan::{Protection, scan, server_side};

use std::io::Write;

use crate::Error;
use crate::bridge::{self, BlockingRead, Cancel, PartWriter};
use crate::store::{Body, BoxFuture, ObjectMeta, Payload, Sink};

/// How an operation on one object ended, when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The output is committed.
    Done {
        /// Bytes read from the source.
        bytes_in: u64,
        /// Bytes of the committed output.
        bytes_out: u64,
    },
    /// Nothing needed doing, and why.
    Skipped(String),
}

/// Why an operation on one object failed: a code for the completion report, a message
/// that names the step, and whether a conditional write found the object changed.
#[derive(Debug)]
pub struct Failed {
    /// `AccessDenied`, `AuthenticationFailed`, `NotAValidMessage`, ...
    pub code: String,
    /// What failed, starting with the step (`read`, `encrypt`, `write`, ...).
    pub message: String,
    /// A conditional request found the object changed (HTTP 412).
    pub conflict: bool,
    /// A transient failure that only processing the object again from the start can
    /// retry (a streamed part upload, whose bytes are gone).
    pub restart: bool,
    /// The same work may succeed later ([`Error::is_transient`]).
    pub transient: bool,
}

impl Failed {
    /// A failure of `step`, classified by its root cause.
    pub fn new(step: &str, e: impl Into<Error>) -> Self {
        let e = e.into();
        let root = e.root();
        let code = match root {
            Error::S3(s3) => s3.code.clone(),
            Error::SourceChanged(_) => "SourceChanged".into(),
            Error::WouldReplaceSource(_) => "WouldReplaceSource".into(),
            Error::Cancelled => "Cancelled".into(),
            Error::SignedMessage { .. } => "SignedMessage".into(),
            Error::NoKeyLeft(_) => "NoKeyLeft".into(),
            Error::HeaderNonceReuse { .. } => "HeaderNonceReuse".into(),
            Error::TooManyDataKeys { .. } => "TooManyDataKeys".into(),
            e if e.is_authentication_failure() => "AuthenticationFailed".into(),
            Error::Keyring(_) => "KeyringError".into(),
            Error::Decode(_) | Error::Truncated(_) | Error::TrailingData => {
                "NotAValidMessage".into()
            }
            Error::Io(_) => "IOError".into(),
            Error::S3ec(e) => match e {
                crate::s3ec::S3ecError::Metadata(_)
                | crate::s3ec::S3ecError::InstructionFile(_) => "InvalidS3ecMetadata".into(),
                crate::s3ec::S3ecError::Unsupported(_) => "UnsupportedFormat".into(),
                crate::s3ec::S3ecError::NotCommitting { .. } => "CommitmentPolicy".into(),
                crate::s3ec::S3ecError::Context(_) => "ContextMismatch".into(),
                _ => "Error".into(),
            },
            _ => "Error".into(),
        };
        Self {
            conflict: matches!(root, Error::S3(s3) if s3.is_precondition_failed()),
            restart: matches!(root, Error::S3(s3) if s3.restart),
            transient: e.is_transient(),
            code,
            message: format!("{step}: {e}"),
        }
    }

    /// A failure with its own code.
    pub fn with_code(code: &str, message: String) -> Self {
        Self {
            code: code.into(),
            message,
            conflict: false,
            restart: false,
            transient: false,
        }
    }
}

/// Makes an operation's sink, once it knows the output's metadata and about how large
/// it will be: the caller decides where outputs go (a file, an S3 key, nowhere) and
/// under which condition.
pub trait MakeSink: Sync {
    /// The sink for an output with `meta`, holding `payload`, of about `size_hint` bytes.
    fn make(
        &self,
        meta: ObjectMeta,
        payload: Payload,
        size_hint: u64,
    ) -> BoxFuture<'_, Result<Box<dyn Sink>, Error>>;
}

/// Objects up to this size that arrived whole with their first request (a GET of a
/// part brings an object that fits in it) are sealed or opened in memory, as one
/// buffer: no channels, no pump tasks, no copy into a pending buffer.
const IN_MEMORY: usize = 8 << 20;

/// Runs `work` on bytes held in memory, on a blocking thread: the codec uses rayon,
/// and a runtime thread waiting on the pool could wait on a pool thread that waits on
/// the runtime (a body's chunks arrive through it): a deadlock.
async fn in_memory_work<T: Send + 'static>(
    step: &'static str,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Failed> {
    bridge::codec(step, work)
        .await
        .and_then(|r| r)
        .map_err(|e| Failed::new(step, e))
}

/// Writes a whole output, made in memory, to `sink` and commits it; aborts it if that
/// fails. Returns the output's size.
async fn write_whole(mut sink: Box<dyn Sink>, output: Vec<u8>) -> Result<u64, Failed> {
    let buf = bytes::Bytes::from(output)
        .try_into_mut()
        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
    if let Err(e) = sink.put(buf).await {
        sink.abort().await;
        return Err(Failed::new("write", e));
    }
    sink.commit().await.map_err(|e| Failed::new("write", e))
}

/// The codec's side of a run: the body as a reader, the output as a writer.
type Work<T> =
    Box<dyn FnOnce(&mut Box<dyn BlockingRead>, &mut dyn Write) -> Result<T, Error> + Send>;

/// Runs `work` (the codec, on a blocking thread) from `body` (after `prefix`, bytes
/// already taken from it) into `sink`; commits the sink if everything succeeded and
/// `accept` agrees with what the work returned, else aborts it. The first cause wins:
/// the source's own error, then the sink's, then the codec's. `step` names the work in
/// messages. Returns what the work returned and the size of the committed output.
///
/// Local files are read and written on the codec's thread itself; bodies and sinks
/// that wait on the network are bridged by a pump on each side.
async fn run_through<T: Send + 'static>(
    step: &'static str,
    (body, prefix, cancel): (Box<dyn Body>, bytes::Bytes, &Cancel),
    mut sink: Box<dyn Sink>,
    work: Work<T>,
    accept: impl FnOnce(&T) -> Result<(), Failed>,
) -> Result<(T, u64), Failed> {
    let mut reader = bridge::reader(body, prefix, cancel.clone());
    let (ran, sink, pumped) = if sink.blocking_writer().is_some() {
        let ran = bridge::codec(step, move || {
            let result = match sink.blocking_writer() {
                Some(writer) => work(&mut reader, writer).and_then(|t| {
                    writer.flush()?;
                    Ok(t)
                }),
                None => Err(Error::Internal(
                    "a local output stopped taking writes".into(),
                )),
            };
            (reader.take_failure(), result, sink)
        })
        .await;
        match ran {
            Ok((failure, result, sink)) => (Ok((failure, result)), sink, Ok(())),
            // The sink went down with the thread; dropping it removed its staged file.
            Err(panicked) => return Err(Failed::new(step, panicked)),
        }
    } else {
        let (writer, pump) = PartWriter::new(sink);
        let ran = bridge::codec(step, move || {
            let mut writer = writer;
            let result = work(&mut reader, &mut writer).and_then(|t| {
                writer.finish()?;
                Ok(t)
            });
            (reader.take_failure(), result)
        })
        .await;
        let (sink, pumped) = bridge::join_sink(pump)
            .await
            .map_err(|e| Failed::new("write", e))?;
        (ran, sink, pumped)
    };
    let failed = match ran {
        Err(panicked) => Failed::new(step, panicked),
        Ok((Some(source), _)) => Failed::new("read", source),
        Ok((None, result)) => match (pumped, result) {
            (Err(e), _) => Failed::new("write", e),
            (Ok(()), Err(e)) => Failed::new(step, e),
            (Ok(()), Ok(done)) => match accept(&done) {
                Ok(()) => {
                    let written = sink.commit().await.map_err(|e| Failed::new("write", e))?;
                    return Ok((done, written));
                }
                Err(refused) => refused,
            },
        },
    };
    sink.abort().await;
    Err(failed)
}
