//! Bodies between HTTP and the codec: a request body as a [`store::Body`](Body) with a
//! size limit and an idle timeout; a response body fed by the codec's thread; and the
//! buffer that holds decrypted plaintext (in memory, then in an unnamed file) until the
//! whole message has authenticated.

use std::io::{self, Seek, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use tokio::sync::mpsc;

use super::error::ApiError;
use crate::Error;
use crate::bridge::BlockingRead;
use crate::store::{Body, BoxFuture};

/// How long a body may take: `idle` at most between two chunks, and all of it done by
/// `deadline` (the request's).
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// The longest silence.
    pub idle: Duration,
    /// When the whole request must be done.
    pub deadline: tokio::time::Instant,
}

impl Pace {
    /// How long the next wait may be, and whether it is the deadline that bounds it.
    fn next_wait(&self) -> (Duration, bool) {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        if left < self.idle {
            (left, true)
        } else {
            (self.idle, false)
        }
    }
}

/// Why a request body stopped, kept for the answer: the codec only sees an I/O error.
pub type BodyFailure = Arc<Mutex<Option<ApiError>>>;

/// A request body, chunk by chunk, that fails past `limit` bytes or after `idle` of
/// silence, and records why in `failure`.
pub struct RequestBody {
    inner: axum::body::Body,
    limit: u64,
    received: u64,
    pace: Pace,
    failure: BodyFailure,
    counted: Arc<super::metrics::Metrics>,
}

impl RequestBody {
    /// Wraps `inner`.
    pub fn new(
        inner: axum::body::Body,
        limit: u64,
        pace: Pace,
        counted: Arc<super::metrics::Metrics>,
    ) -> (Self, BodyFailure) {
        let failure = BodyFailure::default();
        let body = Self {
            inner,
            limit,
            received: 0,
            pace,
            failure: failure.clone(),
            counted,
        };
        (body, failure)
    }

    fn fail(&self, e: ApiError) -> Error {
        let io = io::Error::other(e.message.clone());
        *self.failure.lock().expect("not poisoned") = Some(e);
        Error::Io(io)
    }

    /// The next data chunk, or `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut self.inner).poll_frame(cx));
            let (wait, at_deadline) = self.pace.next_wait();
            let frame = match tokio::time::timeout(wait, next).await {
                Err(_) if at_deadline => {
                    return Err(self.fail(ApiError::new(
                        axum::http::StatusCode::REQUEST_TIMEOUT,
                        "RequestTimeout",
                        "the request body did not arrive within the request timeout",
                    )));
                }
                Err(_) => {
                    return Err(self.fail(ApiError::body_timeout(self.pace.idle)));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(self.fail(ApiError::bad_request(
                        "BodyReadFailed",
                        format!("the request body could not be read: {e}"),
                    )));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            self.received += data.len() as u64;
            self.counted
                .request_bytes
                .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if self.received > self.limit {
                return Err(self.fail(ApiError::too_large(self.limit)));
            }
            return Ok(Some(data));
        }
    }

    /// The whole body, in memory (the body's limit bounds it).
    pub async fn collect(&mut self) -> Result<Bytes, Error> {
        let mut first = None;
        let mut all = BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            match first.take() {
                None if all.is_empty() => first = Some(chunk),
                None => all.extend_from_slice(&chunk),
                Some(previous) => {
                    all.extend_from_slice(&previous);
                    all.extend_from_slice(&chunk);
                }
            }
        }
        Ok(match first {
            // One chunk: no copy.
            Some(chunk) => chunk,
            None => all.freeze(),
        })
    }
}

impl Body for RequestBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(self.chunk())
    }

    fn into_blocking(self: Box<Self>) -> Result<Box<dyn BlockingRead>, Box<dyn Body>> {
        Err(self)
    }
}

/// A response body whose chunks come from a channel; an `Err` aborts the response (the
/// client sees a truncated transfer, never a clean end).
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// Set by [`ChannelWriter::finish`]: a writer dropped without it (its work failed
    /// or panicked) ends the body with an error, not a clean end.
    finished: Arc<AtomicBool>,
    counted: Arc<super::metrics::Metrics>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.counted
                    .response_bytes
                    .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if self.finished.load(Ordering::Acquire) => Poll::Ready(None),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::other(
                "the response could not be completed",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Chunks of the response body at most this large are sent at once.
const RESPONSE_CHUNK: usize = 256 * 1024;

/// The writing end of a [`ChannelBody`], for the codec's blocking thread.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    finished: Arc<AtomicBool>,
    /// The runtime the response is sent from, and how long a client may leave the
    /// response unread: a client that stops reading must not hold the codec's thread
    /// (and its slot) forever.
    runtime: tokio::runtime::Handle,
    pace: Pace,
}

/// A response body and the writer that feeds it, which gives up once the client has
/// read nothing for `idle`. Call from within the runtime.
pub fn channel(counted: Arc<super::metrics::Metrics>, pace: Pace) -> (ChannelWriter, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    let finished = Arc::new(AtomicBool::new(false));
    (
        ChannelWriter {
            tx,
            buf: BytesMut::new(),
            finished: finished.clone(),
            runtime: tokio::runtime::Handle::current(),
            pace,
        },
        ChannelBody {
            rx,
            finished,
            counted,
        },
    )
}

impl ChannelWriter {
    fn send(&mut self, item: io::Result<Bytes>) -> io::Result<()> {
        let (tx, (wait, _)) = (&self.tx, self.pace.next_wait());
        match self
            .runtime
            .block_on(async { tokio::time::timeout(wait, tx.send(item)).await })
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client closed the connection",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client did not read the response in time ({} s)",
                    wait.as_secs_f64()
                ),
            )),
        }
    }

    /// Ends the response cleanly: what is buffered goes out, then the end.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.finished.store(true, Ordering::Release);
        Ok(())
    }

    /// Ends the response as failed: the client sees the transfer cut short.
    pub fn abort(self, why: &str) {
        // Dropped unfinished, the body ends with an error anyway; this names why, if
        // there is room.
        let _ = self.tx.try_send(Err(io::Error::other(why.to_string())));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= RESPONSE_CHUNK {
            let chunk = self.buf.split().freeze();
            self.send(Ok(chunk))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Ok(chunk))?;
        }
        Ok(())
    }
}

/// Decrypted plaintext held back until the message has authenticated: in memory up to
/// a limit, then in an unnamed temporary file (gone with its descriptor, so a crash
/// leaves no plaintext behind), or refused past the limit if there is nowhere to spill.
pub enum Held {
    /// Small enough for memory.
    Memory(
        zeroize::Zeroizing<Vec<u8>>,
        usize,
        Option<std::path::PathBuf>,
    ),
    /// Spilled.
    File(std::fs::File, u64),
}

impl Held {
    /// An empty buffer that holds `max_in_memory` bytes before it spills to `spill_dir`.
    pub fn new(max_in_memory: usize, spill_dir: Option<std::path::PathBuf>) -> Self {
        Held::Memory(Default::default(), max_in_memory, spill_dir)
    }
}

/// The error a [`Held`] buffer gives past its limit with nowhere to spill.
pub const HELD_FULL: &str = "decrypted plaintext exceeds the in-memory limit and spilling is off";

impl Write for Held {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Held::Memory(v, limit, dir) => {
                if v.len() + data.len() <= *limit {
                    v.extend_from_slice(data);
                    return Ok(data.len());
                }
                let Some(dir) = dir.as_ref() else {
                    return Err(io::Error::new(io::ErrorKind::StorageFull, HELD_FULL));
                };
                let mut file = tempfile::tempfile_in(dir)?;
                file.write_all(&v[..])?;
                file.write_all(data)?;
                let n = (v.len() + data.len()) as u64;
                *self = Held::File(file, n);
                Ok(data.len())
            }
            Held::File(file, n) => {
                file.write_all(data)?;
                *n += data.len() as u64;
                Ok(data.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Held {
    /// The held plaintext as a response body: memory as it is, a file read back in
    /// chunks on a blocking thread.
    pub fn into_body(
        self,
        counted: Arc<super::metrics::Metrics>,
        pace: Pace,
        slot: impl Send + 'static,
    ) -> axum::body::Body {
        match self {
            Held::Memory(mut v, _, _) => {
                // Handed to the response as it is: hyper owns it from here.
                let v = std::mem::take(&mut *v);
                counted
                    .response_bytes
                    .fetch_add(v.len() as u64, std::sync::atomic::Ordering::Relaxed);
                axum::body::Body::from(v)
            }
            Held::File(mut file, _) => {
                let (mut writer, body) = channel(counted, pace);
                tokio::task::spawn_blocking(move || {
                    // The request counts against the cap until its plaintext is sent.
                    let _slot = slot;
                    let copied = file
                        .seek(io::SeekFrom::Start(0))
                        .and_then(|_| io::copy(&mut file, &mut writer));
                    match copied {
                        Ok(_) => {
                            let _ = writer.finish();
                        }
                        Err(e) => writer.abort(&e.to_string()),
                    }
                });
                axum::body::Body::new(body)
            }
        }
    }
}
