//! Part buffers, reused: a multipart upload fills one part-size buffer per part, and a
//! job fills thousands. Allocating each anew costs page faults and leaves the allocator
//! holding freed memory it rarely returns, so peak memory grows well past the byte
//! budget with large parts. Buffers come back here once their upload is done.
//!
//! The pool only keeps what it is given back, up to a ceiling; the byte budget still
//! decides how many buffers are in use at once.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;

/// A shared free list of buffers.
#[derive(Clone, Debug)]
pub struct BufferPool {
    inner: Arc<Mutex<Free>>,
}

#[derive(Debug)]
struct Free {
    buffers: Vec<BytesMut>,
    bytes: usize,
    max_bytes: usize,
}

impl BufferPool {
    /// A pool keeping at most `max_bytes` of idle buffers.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Free {
                buffers: Vec::new(),
                bytes: 0,
                max_bytes,
            })),
        }
    }

    /// An empty buffer with room for `capacity` bytes: an idle one at least that large
    /// (and not more than twice, so small writes do not pin large buffers), else a new
    /// one.
    pub fn take(&self, capacity: usize) -> BytesMut {
        let mut free = self.lock();
        let found = free
            .buffers
            .iter()
            .position(|b| b.capacity() >= capacity && b.capacity() / 2 <= capacity);
        match found {
            Some(i) => {
                let buf = free.buffers.swap_remove(i);
                free.bytes -= buf.capacity();
                buf
            }
            None => BytesMut::with_capacity(capacity.max(1)),
        }
    }

    /// Returns a buffer for reuse (or frees it, when the pool is full).
    pub fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let mut free = self.lock();
        if free.bytes + buf.capacity() <= free.max_bytes {
            free.bytes += buf.capacity();
            free.buffers.push(buf);
        }
    }

    /// Bytes held idle.
    pub fn idle_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic while holding the lock leaves a consistent list (every operation
        // completes before it can panic), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_within_a_size_class_and_the_pool_is_bounded() {
        let pool = BufferPool::new(3 << 20);
        let a = pool.take(1 << 20);
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        // Same class: the same allocation comes back, empty.
        let b = pool.take((1 << 20) - 10);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.is_empty());
        pool.give(b);
        // Far smaller: a new small buffer, the large one stays idle.
        let small = pool.take(4096);
        assert!(small.capacity() < 1 << 20);
        assert_eq!(pool.idle_bytes(), 1 << 20);
        // Beyond the ceiling, given-back buffers are freed.
        pool.give(BytesMut::with_capacity(2 << 20));
        pool.give(BytesMut::with_capacity(2 << 20));
        assert_eq!(pool.idle_bytes(), 3 << 20);
    }
}
