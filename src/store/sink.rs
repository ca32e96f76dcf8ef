//! Where an output goes: a sink lends buffers, takes them back filled, in order, and
//! makes the output visible only on commit.

use std::ops::Range;

use bytes::BytesMut;

use super::{BoxFuture, ObjectId};
use crate::Error;

/// How a write must relate to what is at the destination now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// Replace only the object with this ETag (in-place jobs: never overwrite a
    /// concurrent writer).
    IfMatch(String),
    /// Write only where no object is (`If-None-Match: *`): for outputs the
    /// destination's listing did not have, so one that appeared since (a killed run's
    /// late upload, another worker) is never written over unseen.
    IfAbsent,
}

/// What an output holds, for how it is protected in transit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// An ESDK message: it authenticates itself, every byte.
    Message,
    /// Plaintext: nothing but the transport protects it.
    Plaintext,
}

/// An output being written.
///
/// The writer asks for a buffer ([`lend`](Self::lend)), fills it to its capacity (the
/// last one may be shorter) and gives it back ([`put`](Self::put)); the sink writes or
/// uploads it, possibly while the next one fills. Lending is where a sink waits for room
/// (the byte budget, uploads in flight), so memory stays bounded whatever the writer does.
///
/// Nothing appears at the destination before [`commit`](Self::commit). A sink given
/// up on is [`abort`](Self::abort)ed: a staged file is removed, a multipart upload
/// aborted. Dropping one without either cleans up as far as it can without waiting.
pub trait Sink: Send {
    /// A buffer to fill, empty, with room for at least one byte.
    fn lend(&mut self) -> BoxFuture<'_, Result<BytesMut, Error>>;

    /// Takes a filled buffer: the next bytes of the output. A whole small output may
    /// also come in a buffer that was not lent; the object's own share of the budget
    /// covers it.
    fn put(&mut self, filled: BytesMut) -> BoxFuture<'_, Result<(), Error>>;

    /// Appends bytes `range` of the object `from` (which must still have the ETag or
    /// fingerprint `etag`), copied by the store itself where it can: S3 copies parts
    /// server-side (UploadPartCopy), a local file is copied by the kernel. The bytes
    /// never pass through sealpipe. Sinks that cannot copy from `from` say so.
    fn copy_range<'a>(
        &'a mut self,
        from: &'a ObjectId,
        etag: &'a str,
        range: Range<u64>,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Makes the output visible, complete, with its metadata. Returns its size.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<u64, Error>>;

    /// A writer for the codec's own thread, when writing blocks on nothing but a local
    /// disk: then the codec writes straight through it instead of filling lent buffers.
    /// What it writes is part of the output like what is put.
    fn blocking_writer(&mut self) -> Option<&mut (dyn std::io::Write + Send)> {
        None
    }

    /// Gives the output up and removes every trace of it.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;

    /// Promises, before the first buffer is lent, that at least `bytes` will be
    /// written unless writing fails: a sink may then send the output's start before
    /// it is all made (S3 streams large parts). Committing fewer bytes fails.
    fn expect_at_least(&mut self, _bytes: u64) {}
}

/// `verify`'s sink: counts and forgets.
#[derive(Debug, Default)]
pub struct Discard {
    written: u64,
    spare: Option<BytesMut>,
}

impl std::io::Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`Discard`] lends: large enough that handing buffers over costs nothing.
const DISCARD_BUFFER: usize = 1 << 20;

impl Sink for Discard {
    fn lend(&mut self) -> BoxFuture<'_, Result<BytesMut, Error>> {
        let buf = self
            .spare
            .take()
            .unwrap_or_else(|| BytesMut::with_capacity(DISCARD_BUFFER));
        Box::pin(async move { Ok(buf) })
    }

    fn put(&mut self, mut filled: BytesMut) -> BoxFuture<'_, Result<(), Error>> {
        self.written += filled.len() as u64;
        filled.clear();
        self.spare = Some(filled);
        Box::pin(async { Ok(()) })
    }

    fn copy_range<'a>(
        &'a mut self,
        _: &'a ObjectId,
        _: &'a str,
        range: Range<u64>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.written += range.end.saturating_sub(range.start);
        Box::pin(async { Ok(()) })
    }

    fn blocking_writer(&mut self) -> Option<&mut (dyn std::io::Write + Send)> {
        Some(self)
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<u64, Error>> {
        let written = self.written;
        Box::pin(async move { Ok(written) })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
