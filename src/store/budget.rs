//! One budget of in-flight bytes for a whole job: downloaded chunks not yet consumed
//! and parts not yet uploaded, across all objects, whatever their sizes and number.
//!
//! Each object reserves its minimum working set (one chunk to read, one part to write)
//! before it starts, with a blocking wait; that alone guarantees progress. Read-ahead
//! and parallel part uploads only take what is free at the moment (`try_reserve`), so
//! objects never wait on each other while holding bytes: no deadlock, whatever the mix.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits count KiB, so a `u32` request covers up to 4 TiB.
const UNIT: u64 = 1024;

/// The shared budget.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    total_units: u64,
    in_use: AtomicU64,
    peak: AtomicU64,
}

/// Bytes held against the budget; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    units: u64,
    budget: Arc<Inner>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.units, Relaxed);
    }
}

impl ByteBudget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: u64) -> Self {
        let total_units = (bytes / UNIT).max(1);
        Self {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(total_units as usize)),
                total_units,
                in_use: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            }),
        }
    }

    /// The budget in bytes.
    pub fn total(&self) -> u64 {
        self.inner.total_units * UNIT
    }

    /// Largest number of bytes held at once so far.
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Relaxed) * UNIT
    }

    fn units(&self, bytes: u64) -> u32 {
        bytes
            .div_ceil(UNIT)
            .clamp(1, self.inner.total_units)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    fn held(&self, permit: OwnedSemaphorePermit, units: u32) -> Reservation {
        let units = u64::from(units);
        let now = self.inner.in_use.fetch_add(units, Relaxed) + units;
        self.inner.peak.fetch_max(now, Relaxed);
        Reservation {
            _permit: permit,
            units,
            budget: self.inner.clone(),
        }
    }

    /// Waits until `bytes` are free and holds them. A request larger than the whole
    /// budget holds the whole budget.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let units = self.units(bytes);
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        self.held(permit, units)
    }

    /// Holds `bytes` if they are free now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let units = self.units(bytes);
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_many_owned(units)
            .ok()?;
        Some(self.held(permit, units))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_are_returned_and_the_peak_kept() {
        let budget = ByteBudget::new(10 * 1024);
        let a = budget.reserve(6 * 1024).await;
        assert!(budget.try_reserve(5 * 1024).is_none());
        let b = budget.try_reserve(4 * 1024).expect("4 KiB free");
        drop(a);
        drop(b);
        assert!(budget.try_reserve(10 * 1024).is_some());
        assert_eq!(budget.peak(), 10 * 1024);
        // Larger than the budget: takes all of it rather than waiting forever.
        let all = budget.reserve(1 << 40).await;
        assert!(budget.try_reserve(1).is_none());
        drop(all);
    }
}
