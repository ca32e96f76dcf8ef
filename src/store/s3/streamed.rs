//! A part upload whose body is sent while it is being made: the writer hands chunks
//! through a short channel, so a part of any size holds a few chunks of memory, not
//! the whole part.
//!
//! The price is that the body exists only once: the request cannot be sent again by
//! itself. A failed streamed part fails the object with [`S3Error::restart`] set, and
//! the object is processed again from its start (sealing is deterministic only within
//! one message, and a new attempt is a new message).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use crate::store::BufferPool;

/// Chunks queued per streamed part, besides the one the writer fills and the one the
/// connection is sending: enough that sealing and sending overlap.
pub(super) const QUEUED_CHUNKS: usize = 2;

/// Bytes per chunk of a streamed part.
pub(super) const CHUNK: usize = 8 << 20;

/// The body of one streamed part: exactly `left` bytes, arriving through a channel.
pub(super) struct PartBody {
    chunks: mpsc::Receiver<Bytes>,
    left: u64,
    /// The chunk handed to the connection last: once the next one is asked for, the
    /// connection has usually let it go, and its buffer goes back to the pool.
    sent: Option<Bytes>,
    buffers: BufferPool,
}

/// The body ended before its declared length: the writer stopped early.
#[derive(Debug, thiserror::Error)]
#[error("the part's bytes ended {0} bytes before its declared length")]
pub(super) struct EndedShort(u64);

impl PartBody {
    /// A body of exactly `len` bytes, and the sender the writer feeds it through.
    pub(super) fn new(len: u64, buffers: BufferPool) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, chunks) = mpsc::channel(QUEUED_CHUNKS);
        (
            tx,
            Self {
                chunks,
                left: len,
                sent: None,
                buffers,
            },
        )
    }

    fn recycle(&mut self) {
        if let Some(chunk) = self.sent.take()
            && let Ok(buf) = chunk.try_into_mut()
        {
            self.buffers.give(buf);
        }
    }
}

impl Body for PartBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            self.recycle();
            return Poll::Ready(None);
        }
        match self.chunks.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => {
                self.recycle();
                // The writer never sends more than the part holds; were it to, the
                // request would be longer than its Content-Length: cut it there.
                let chunk = if chunk.len() as u64 > self.left {
                    chunk.slice(..self.left as usize)
                } else {
                    chunk
                };
                self.left -= chunk.len() as u64;
                self.sent = Some(chunk.clone());
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(Box::new(EndedShort(self.left))))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_part_body_yields_its_declared_bytes_and_refuses_to_end_short() {
        let (tx, mut body) = PartBody::new(10, BufferPool::new(1 << 20));
        assert_eq!(body.size_hint().exact(), Some(10));
        tx.send(Bytes::from_static(b"hello")).await.unwrap();
        tx.send(Bytes::from_static(b"world, and more"))
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        // Cut at the declared length, never longer than Content-Length says.
        assert_eq!(got, b"helloworld");
        assert!(body.is_end_stream());

        let (tx, mut body) = PartBody::new(10, BufferPool::new(1 << 20));
        tx.send(Bytes::from_static(b"four")).await.unwrap();
        drop(tx);
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("6 bytes before"), "{err}");
    }
}
