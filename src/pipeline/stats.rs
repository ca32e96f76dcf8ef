//! Counters a job updates and a progress display polls, and the final report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::Mode;
use crate::keys::PoolStats;

/// Live counters of one job.
#[derive(Debug, Default)]
pub struct Stats {
    /// Objects found by listing.
    pub objects_planned: AtomicU64,
    /// Bytes found by listing.
    pub bytes_planned: AtomicU64,
    /// Objects written successfully.
    pub objects_ok: AtomicU64,
    /// Objects that failed.
    pub objects_failed: AtomicU64,
    /// Entries deliberately not processed.
    pub objects_skipped: AtomicU64,
    /// Bytes read from sources that completed.
    pub bytes_in: AtomicU64,
    /// Bytes written to destinations that completed.
    pub bytes_out: AtomicU64,
    keys: OnceLock<Arc<PoolStats>>,
    failures: Mutex<Vec<Failure>>,
    skipped: Mutex<Vec<Failure>>,
}

impl Stats {
    pub(super) fn plan(&self, objects: u64, bytes: u64) {
        self.objects_planned.store(objects, Relaxed);
        self.bytes_planned.store(bytes, Relaxed);
    }

    pub(super) fn succeed(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        self.objects_ok.fetch_add(1, Relaxed);
    }

    pub(super) fn fail(&self, path: String, error: String) {
        self.failures
            .lock()
            .expect("not poisoned")
            .push(Failure { path, error });
        self.objects_failed.fetch_add(1, Relaxed);
    }

    pub(super) fn skip(&self, path: String, reason: &str) {
        self.skipped.lock().expect("not poisoned").push(Failure {
            path,
            error: reason.to_string(),
        });
        self.objects_skipped.fetch_add(1, Relaxed);
    }

    pub(super) fn attach_key_stats(&self, keys: Arc<PoolStats>) {
        let _ = self.keys.set(keys);
    }

    /// Counters of the job's data-key pool and decrypt cache.
    pub fn key_stats(&self) -> Option<&PoolStats> {
        self.keys.get().map(Arc::as_ref)
    }

    /// Data keys obtained from keyrings: generated (encrypt) plus unwrapped (decrypt).
    pub fn data_keys(&self) -> u64 {
        self.key_stats().map_or(0, |k| k.data_keys.load(Relaxed))
    }

    /// Objects finished so far (ok, failed or skipped).
    pub fn objects_done(&self) -> u64 {
        self.objects_ok.load(Relaxed) + self.objects_failed.load(Relaxed)
    }

    pub(super) fn report(
        &self,
        mode: Mode,
        elapsed: Duration,
        dry_run: bool,
        interrupted: bool,
    ) -> Report {
        let mut failures = self.failures.lock().expect("not poisoned").clone();
        failures.sort_by(|a, b| a.path.cmp(&b.path));
        Report {
            mode,
            dry_run,
            interrupted,
            objects: ObjectCounts {
                planned: self.objects_planned.load(Relaxed),
                ok: self.objects_ok.load(Relaxed),
                failed: self.objects_failed.load(Relaxed),
                skipped: self.objects_skipped.load(Relaxed),
            },
            bytes_planned: self.bytes_planned.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            elapsed_s: elapsed.as_secs_f64(),
            data_keys: self.data_keys(),
            cache: self
                .key_stats()
                .map_or_else(CacheCounts::default, |k| CacheCounts {
                    hits: k.hits.load(Relaxed),
                    misses: k.misses.load(Relaxed),
                    prefetches: k.prefetches.load(Relaxed),
                }),
            failures,
            skipped: self.skipped.lock().expect("not poisoned").clone(),
        }
    }
}

/// One object that failed or was skipped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The source path.
    pub path: String,
    /// What went wrong, or why it was skipped.
    pub error: String,
}

/// Object totals.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectCounts {
    /// Found by listing.
    pub planned: u64,
    /// Completed.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Not processed on purpose.
    pub skipped: u64,
}

/// What a job did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Encrypt or decrypt.
    pub mode: Mode,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Whether the job was cancelled before every object was processed.
    pub interrupted: bool,
    /// Object totals.
    pub objects: ObjectCounts,
    /// Source bytes found by listing.
    pub bytes_planned: u64,
    /// Bytes read from completed objects.
    pub bytes_in: u64,
    /// Bytes written for completed objects.
    pub bytes_out: u64,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Data keys obtained from keyrings (generated to encrypt, unwrapped to decrypt).
    pub data_keys: u64,
    /// Data-key pool (encrypt) and decrypt-cache counters.
    pub cache: CacheCounts,
    /// Each failed object and its error.
    pub failures: Vec<Failure>,
    /// Each skipped entry and the reason.
    pub skipped: Vec<Failure>,
}

impl Report {
    /// Whether every planned object completed.
    pub fn all_succeeded(&self) -> bool {
        self.objects.failed == 0
    }
}

/// How often pooled or cached data keys served a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheCounts {
    /// Messages served by existing materials or a cached data key.
    pub hits: u64,
    /// Messages that waited for a keyring call.
    pub misses: u64,
    /// Materials fetched in the background before they were needed.
    pub prefetches: u64,
}
