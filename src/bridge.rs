//! The one place where async tasks and blocking work meet.
//!
//! Requests (S3, KMS) and file reads and writes run as tokio tasks; sealing and opening
//! frames runs on rayon, driven from a blocking thread, because the codec is synchronous
//! (`Read`, `Write`). The two sides meet only here, through bounded channels:
//! - a source's chunks flow from a pump task to a [`ChunkReader`];
//! - a sink lends buffers that a [`PartWriter`] fills and hands back to a pump task,
//!   which gives them to the sink.
//!
//! - a [`Lane`] is a blocking thread that drives whole operations on local files itself,
//!   so blocking work inside them needs no hand-off at all.
//!
//! A closed channel means the other side stopped; only an explicit end marker means a
//! body is complete, so a pump that died can never look like a short object. Errors
//! travel typed, beside the bytes, never inside an `io::Error`. Nothing outside this
//! file calls `blocking_recv`, `blocking_send` or `block_on`, and nothing here blocks a
//! runtime thread.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::store::{Body, Sink};

/// Chunks a [`ChunkReader`] may hold ahead of the codec. Each is at most one network
/// segment or one file read, so this bounds what waits outside the byte budget.
const CHUNKS_AHEAD: usize = 4;

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

/// Codec runs (sealing or opening a message) on blocking threads at once, whatever the
/// job's concurrency. Each waits on its body and its sink, whose file reads and writes
/// need blocking threads of their own: tokio has 512, so at most 128 codec runs keep
/// room for two file operations each and the rest of the job.
const CODEC_RUNS: usize = 128;

static CODEC_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CODEC_RUNS);

/// Runs the codec over a message (it uses rayon and may wait on channels of this
/// module) on a blocking thread, once one of [`CODEC_RUNS`] slots is free. Never call
/// rayon from a runtime thread: the pool's threads may be waiting on the runtime.
pub async fn codec<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    if ON_LANE.get() {
        // Lanes are few and bounded; each runs one codec at a time.
        return inline(what, work);
    }
    let _slot = CODEC_SLOTS
        .acquire()
        .await
        .map_err(|_| Error::Internal("the codec slots closed".into()))?;
    blocking(what, work).await
}

/// Runs short blocking work (file system calls) on tokio's blocking threads and waits
/// for it without blocking the runtime. `what` names the work if it panics.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    if ON_LANE.get() {
        return inline(what, work);
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("{what} panicked: {e}")))
}

thread_local! {
    /// Set while a lane runs on this thread: blocking work runs here, handed to no one.
    static ON_LANE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Blocking work run on a lane's own thread; a panic fails the work, as it would on a
/// blocking thread, not the lane.
fn inline<T>(what: &'static str, work: impl FnOnce() -> T) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::Internal(format!("{what} panicked: {message}"))
    })
}

/// A blocking thread that drives async operations one at a time, to completion, on
/// itself. Inside one, [`blocking`] and [`codec`] run their work right there.
///
/// Each hand-off between threads is a wake-up and a context switch, tens of
/// microseconds on a virtual machine: a small local file passed from the runtime to a
/// blocking thread to open it, to seal it and to commit it cost more in hand-offs than
/// in work. On a lane it costs none. Only for operations whose bodies and sinks are all
/// local files: a lane is inside the runtime while it drives one, so it must never wait
/// on a channel that a task fills ([`ChunkReader`] does).
pub struct Lane {
    runtime: tokio::runtime::Handle,
}

impl Lane {
    /// Runs `operation` to completion on this lane's thread.
    pub fn block_on<F: std::future::Future>(&self, operation: F) -> F::Output {
        self.runtime.block_on(operation)
    }
}

/// Runs `count` lanes, each calling `lane` once on a blocking thread of its own (it
/// loops over work until there is no more), and waits for all of them.
pub async fn lanes(
    count: usize,
    lane: impl Fn(&Lane) + Send + Sync + 'static,
) -> Result<(), Error> {
    let lane = Arc::new(lane);
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..count.max(1) {
        let (lane, runtime) = (lane.clone(), tokio::runtime::Handle::current());
        running.spawn_blocking(move || {
            // Blocking threads are reused: the mark goes with the lane, even a
            // panicking one.
            struct Marked;
            impl Drop for Marked {
                fn drop(&mut self) {
                    ON_LANE.set(false);
                }
            }
            ON_LANE.set(true);
            let _marked = Marked;
            lane(&Lane { runtime });
        });
    }
    while let Some(done) = running.join_next().await {
        done.map_err(|e| Error::Internal(format!("a lane panicked: {e}")))?;
    }
    Ok(())
}

/// A body read on the codec's thread. When a read fails because the source did, the
/// source's own typed error is kept: take it with
/// [`take_failure`](Self::take_failure) and prefer it to whatever the codec made of
/// the failed read.
pub trait BlockingRead: Read + Send {
    /// The source's own error, if a read failed because of it.
    fn take_failure(&mut self) -> Option<Error>;
}

/// Bytes already taken from a body (with its header), then the body, stopping when the
/// job is cancelled.
pub struct Prefixed {
    prefix: Bytes,
    inner: Box<dyn BlockingRead>,
    cancel: Cancel,
    cancelled: bool,
}

impl Prefixed {
    /// `prefix`, then `inner`.
    pub fn new(prefix: Bytes, inner: Box<dyn BlockingRead>, cancel: Cancel) -> Self {
        Self {
            prefix,
            inner,
            cancel,
            cancelled: false,
        }
    }
}

impl Read for Prefixed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.prefix.is_empty() {
            let n = buf.len().min(self.prefix.len());
            buf[..n].copy_from_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Ok(n);
        }
        if self.cancel.is_cancelled() {
            self.cancelled = true;
            return Err(io::Error::other(Error::Cancelled.to_string()));
        }
        self.inner.read(buf)
    }

    /// Vectored once the prefix is used up, so a local file fills many frames with one
    /// system call.
    fn read_vectored(&mut self, bufs: &mut [io::IoSliceMut<'_>]) -> io::Result<usize> {
        if !self.prefix.is_empty() {
            return match bufs.iter_mut().find(|b| !b.is_empty()) {
                Some(buf) => self.read(buf),
                None => Ok(0),
            };
        }
        if self.cancel.is_cancelled() {
            self.cancelled = true;
            return Err(io::Error::other(Error::Cancelled.to_string()));
        }
        self.inner.read_vectored(bufs)
    }
}

impl BlockingRead for Prefixed {
    fn take_failure(&mut self) -> Option<Error> {
        if std::mem::take(&mut self.cancelled) {
            return Some(Error::Cancelled);
        }
        self.inner.take_failure()
    }
}

/// A body as a reader for the codec's thread: read there directly when it can be
/// ([`Body::into_blocking`]), else pumped ahead as chunks ([`ChunkReader`]).
pub fn reader(body: Box<dyn Body>, prefix: Bytes, cancel: Cancel) -> Box<dyn BlockingRead> {
    match body.into_blocking() {
        Ok(inner) => Box::new(Prefixed::new(prefix, inner, cancel)),
        Err(body) => Box::new(ChunkReader::new(body, prefix, cancel)),
    }
}

/// What flows from a body's pump to its reader.
enum Chunk {
    Data(Bytes),
    End,
    Failed(Error),
}

/// A body as a blocking [`Read`]: bytes arrive from a pump task that pulls the body's
/// chunks (ranged GETs) ahead of the codec. A failed read keeps the source's typed
/// error ([`BlockingRead`]).
pub struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
    failure: Option<Error>,
    cancel: Cancel,
    pump: JoinHandle<()>,
}

impl ChunkReader {
    /// Starts pumping `body` (after `prefix`, bytes already taken from it). Call from
    /// within the runtime.
    pub fn new(mut body: Box<dyn Body>, prefix: Bytes, cancel: Cancel) -> Self {
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let pump = tokio::spawn(async move {
            loop {
                let chunk = match body.next_chunk().await {
                    Ok(Some(bytes)) if bytes.is_empty() => continue,
                    Ok(Some(bytes)) => Chunk::Data(bytes),
                    Ok(None) => Chunk::End,
                    Err(e) => Chunk::Failed(e),
                };
                let last = !matches!(chunk, Chunk::Data(_));
                if tx.send(chunk).await.is_err() || last {
                    return;
                }
            }
        });
        Self {
            rx,
            current: prefix,
            ended: false,
            failure: None,
            cancel,
            pump,
        }
    }

    /// Stops the pump from elsewhere (the request this reader serves was dropped): the
    /// reader then fails at its next read instead of waiting on the body.
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.pump.abort_handle()
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let message = e.to_string();
        self.failure = Some(e);
        io::Error::other(message)
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            if self.cancel.is_cancelled() {
                return Err(self.fail(Error::Cancelled));
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed(e)) => return Err(self.fail(e)),
                None => {
                    return Err(self.fail(Error::Internal(
                        "a source stopped without reaching its end".into(),
                    )));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

impl BlockingRead for ChunkReader {
    fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }
}

impl Drop for ChunkReader {
    fn drop(&mut self) {
        // The body's own drop stops its requests in flight.
        self.pump.abort();
    }
}

/// A filled buffer on its way to the sink.
struct Filled {
    buf: BytesMut,
    last: bool,
}

/// A [`Write`] into buffers a [`Sink`] lends: each is filled to its capacity, then
/// handed back to the sink (which uploads or writes it while the next one fills).
///
/// [`finish`](Self::finish) hands over the last buffer; then the pump returns the sink,
/// and only the caller decides whether to commit it.
pub struct PartWriter {
    buf: Option<BytesMut>,
    full: mpsc::Sender<Filled>,
    empty: mpsc::Receiver<BytesMut>,
    written: u64,
    failed: bool,
}

/// The pump behind a [`PartWriter`]: resolves to the sink once the last buffer is in
/// it, or to the sink and the error that stopped it.
pub type SinkPump = JoinHandle<(Box<dyn Sink>, Result<(), Error>)>;

impl PartWriter {
    /// Starts feeding `sink`. Call from within the runtime.
    pub fn new(mut sink: Box<dyn Sink>) -> (Self, SinkPump) {
        let (full_tx, mut full_rx) = mpsc::channel::<Filled>(1);
        let (empty_tx, empty_rx) = mpsc::channel::<BytesMut>(1);
        let pump = tokio::spawn(async move {
            loop {
                let buf = match sink.lend().await {
                    Ok(buf) => buf,
                    Err(e) => return (sink, Err(e)),
                };
                if empty_tx.send(buf).await.is_err() {
                    // The writer is gone without finishing: the caller aborts.
                    return (sink, Ok(()));
                }
                let Some(filled) = full_rx.recv().await else {
                    return (sink, Ok(()));
                };
                if let Err(e) = sink.put(filled.buf).await {
                    return (sink, Err(e));
                }
                if filled.last {
                    return (sink, Ok(()));
                }
            }
        });
        let writer = Self {
            buf: None,
            full: full_tx,
            empty: empty_rx,
            written: 0,
            failed: false,
        };
        (writer, pump)
    }

    /// Bytes written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Hands the last buffer (possibly empty) to the sink.
    pub fn finish(mut self) -> io::Result<u64> {
        let buf = self.take_buffer()?;
        self.send(buf, true)?;
        Ok(self.written)
    }

    fn take_buffer(&mut self) -> io::Result<BytesMut> {
        match self.buf.take() {
            Some(buf) => Ok(buf),
            None => self.empty.blocking_recv().ok_or_else(|| self.sink_gone()),
        }
    }

    fn send(&mut self, buf: BytesMut, last: bool) -> io::Result<()> {
        self.full
            .blocking_send(Filled { buf, last })
            .map_err(|_| self.sink_gone())
    }

    /// The sink's pump stopped: its error is in the pump's result.
    fn sink_gone(&mut self) -> io::Error {
        self.failed = true;
        io::Error::other("the destination stopped accepting data")
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.failed {
            return Err(io::Error::other("the destination stopped accepting data"));
        }
        let mut buf = self.take_buffer()?;
        let room = buf.capacity() - buf.len();
        let n = data.len().min(room);
        buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if buf.len() == buf.capacity() {
            self.send(buf, false)?;
        } else {
            self.buf = Some(buf);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Ends a sink's pump: the sink, and the first error of the pump or of the work that
/// fed it. A pump that panicked has lost the sink; its drop cleans up what it can.
pub async fn join_sink(pump: SinkPump) -> Result<(Box<dyn Sink>, Result<(), Error>), Error> {
    pump.await
        .map_err(|e| Error::Internal(format!("a destination's writer panicked: {e}")))
}

/// Sends items from blocking work (a directory walk, a manifest read line by line) into
/// an async channel, waiting while it is full. `Break` once the receiver is gone.
pub fn send_blocking<T>(tx: &mpsc::Sender<T>, item: T) -> std::ops::ControlFlow<()> {
    match tx.blocking_send(item) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        Err(_) => std::ops::ControlFlow::Break(()),
    }
}

/// Items that several lanes take one at a time from a channel of batches: a lane waits
/// on the channel (never on a runtime thread) only when the batch at hand is used up,
/// and its producer is woken once a batch, not once an item.
pub struct SharedBatches<T> {
    inner: std::sync::Mutex<(mpsc::Receiver<Vec<T>>, std::vec::IntoIter<T>)>,
}

impl<T> SharedBatches<T> {
    /// Items from `batches`, to share.
    pub fn new(batches: mpsc::Receiver<Vec<T>>) -> Self {
        Self {
            inner: std::sync::Mutex::new((batches, Vec::new().into_iter())),
        }
    }

    /// The next item, waiting for the next batch if needed; `None` once the channel is
    /// closed and drained.
    pub fn next(&self) -> Option<T> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (batches, batch) = &mut *inner;
        loop {
            if let Some(item) = batch.next() {
                return Some(item);
            }
            *batch = batches.blocking_recv()?.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes sharing batches take every item exactly once, and all of them end once
    /// the channel is closed and drained.
    #[test]
    fn shared_batches_hand_out_every_item_once() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let (tx, rx) = mpsc::channel(2);
        let shared = Arc::new(SharedBatches::new(rx));
        let producer = runtime.spawn(async move {
            for start in (0..10_000u32).step_by(97) {
                let batch: Vec<u32> = (start..(start + 97).min(10_000)).collect();
                tx.send(batch).await.unwrap();
            }
        });
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || std::iter::from_fn(|| shared.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u32> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        runtime.block_on(producer).unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }

    /// On a lane, blocking work runs on the lane's own thread, and a panic in it fails
    /// that work, not the lane.
    #[test]
    fn lanes_run_blocking_work_inline_and_contain_its_panics() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = seen.clone();
        runtime
            .block_on(lanes(3, move |lane| {
                let here = std::thread::current().id();
                let ran_on = lane.block_on(blocking("a test", || std::thread::current().id()));
                let panicked = lane.block_on(blocking("a test", || -> u8 { panic!("boom") }));
                recorded
                    .lock()
                    .unwrap()
                    .push((ran_on.unwrap() == here, panicked.unwrap_err().to_string()));
            }))
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for (inline, error) in seen.iter() {
            assert!(*inline);
            assert!(error.contains("a test panicked: boom"), "{error}");
        }
        // Off a lane, blocking work still goes to a blocking thread.
        let caller = std::thread::current().id();
        let ran_on = runtime
            .block_on(blocking("a test", || std::thread::current().id()))
            .unwrap();
        assert_ne!(ran_on, caller);
    }
}
