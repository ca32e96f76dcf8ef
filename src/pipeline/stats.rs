//! Counters a job updates and a progress display polls, the completion report written
//! as objects finish, and the final report.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::Mode;
use super::latency::LatencyHistogram;
use crate::keys::PoolStats;
use crate::store::{ByteBudget, ObjectId, S3Stats};

/// Failures kept for the report; beyond this only the count grows (the completion
/// report has every one).
const MAX_REPORTED_FAILURES: usize = 10_000;
/// Skipped entries kept for the report.
const MAX_REPORTED_SKIPS: usize = 1_000;

/// Live counters of one job.
#[derive(Default)]
pub struct Stats {
    /// Entries found by listing so far (after filters), including those skipped.
    pub objects_planned: AtomicU64,
    /// Bytes found by listing so far (sizes a manifest does not give count as 0).
    pub bytes_planned: AtomicU64,
    /// Whether listing has finished (so `objects_planned` is the total).
    pub listing_done: AtomicBool,
    /// Objects written (or verified) successfully.
    pub objects_ok: AtomicU64,
    /// Objects that failed.
    pub objects_failed: AtomicU64,
    /// Objects not written because the destination changed underneath (in-place).
    pub objects_conflict: AtomicU64,
    /// Entries deliberately not processed (already done, not regular files, ...).
    pub objects_skipped: AtomicU64,
    /// Bytes read from sources that completed.
    pub bytes_in: AtomicU64,
    /// Bytes written to destinations that completed.
    pub bytes_out: AtomicU64,
    /// Stale partial outputs of killed runs removed from the destination.
    pub partials_removed: AtomicU64,
    /// Partial outputs found that a live job is writing (left alone).
    pub partials_in_use: AtomicU64,
    /// Stale partial outputs that could not be removed.
    pub partials_not_removed: AtomicU64,
    /// How long each completed object took, from its start to its output committed.
    pub latency: LatencyHistogram,
    /// Fingerprints of the data keys of the messages rewrapped (or, in a dry run, to be).
    data_keys_seen: Mutex<HashSet<[u8; 32]>>,
    /// `scan`: objects and bytes by what protects them.
    inventory: Mutex<std::collections::BTreeMap<crate::ops::Protection, (u64, u64)>>,
    keys: OnceLock<Arc<PoolStats>>,
    s3: OnceLock<Arc<S3Stats>>,
    budget: OnceLock<ByteBudget>,
    failures: Mutex<Vec<Failure>>,
    skipped: Mutex<Vec<Failure>>,
    completion: Mutex<Option<csv::Writer<Box<dyn Write + Send>>>>,
    /// The job's wrapping keys, for log lines (see [`Stats::label_keys`]).
    keys_named: OnceLock<Vec<String>>,
}

/// How one object ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Written or verified.
    Succeeded,
    /// Failed.
    Failed,
    /// Left alone on purpose.
    Skipped,
    /// The object changed underneath an in-place write; the new data was kept.
    Conflict,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Conflict => "conflict",
        }
    }
}

impl Stats {
    /// Stats that also write one CSV row per finished object to `out`, as S3 Batch
    /// Operations' completion reports do: `bucket,key,version_id,status,error_code,message`.
    pub fn with_completion_report(out: Box<dyn Write + Send>) -> Self {
        let stats = Self::default();
        *stats.completion.lock().expect("not poisoned") = Some(
            csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out),
        );
        stats
    }

    pub(super) fn plan(&self, size: Option<u64>) {
        self.objects_planned.fetch_add(1, Relaxed);
        self.bytes_planned.fetch_add(size.unwrap_or(0), Relaxed);
    }

    /// Writes the object's completion row (and log line); `bytes`: read and written,
    /// for a success.
    fn record(
        &self,
        id: &ObjectId,
        status: Status,
        code: &str,
        message: &str,
        bytes: Option<(u64, u64)>,
    ) {
        if crate::events::enabled() {
            self.log_outcome(id, status, code, message, bytes);
        }
        let mut guard = self.completion.lock().expect("not poisoned");
        if let Some(w) = guard.as_mut() {
            let (bucket, key, version) = id.report_fields();
            // A failing report file must not fail the job; the JSON report still counts.
            // Flushed line by line (one write each), so the file holds only whole lines
            // when the process is killed.
            let _ = w.write_record([
                bucket.as_str(),
                key.as_str(),
                version.as_str(),
                status.as_str(),
                code,
                &crate::escape::text(message),
            ]);
            let _ = w.flush();
        }
    }

    /// Counts a scanned object of `size` bytes under its protection.
    pub(super) fn scanned(&self, protection: crate::ops::Protection, size: u64) {
        let mut inventory = self.inventory.lock().expect("not poisoned");
        let tally = inventory.entry(protection).or_default();
        tally.0 += 1;
        tally.1 += size;
    }

    /// Counts a message's data key, by its fingerprint, once however many share it.
    pub(super) fn saw_data_key(&self, fingerprint: [u8; 32]) {
        self.data_keys_seen
            .lock()
            .expect("not poisoned")
            .insert(fingerprint);
    }

    pub(super) fn succeed(&self, id: &ObjectId, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        self.objects_ok.fetch_add(1, Relaxed);
        self.record(id, Status::Succeeded, "", "", Some((bytes_in, bytes_out)));
    }

    /// Names the wrapping keys of the job's messages in each object's log line: the
    /// key references (`--key`) as given, the first one generating the data keys.
    pub fn label_keys(&self, keys: Vec<String>) {
        let _ = self.keys_named.set(keys);
    }

    /// The object's outcome as a log line: `event` `object`, with its name, status,
    /// error code, the step and error, bytes, and the job's wrapping keys.
    fn log_outcome(
        &self,
        id: &ObjectId,
        status: Status,
        code: &str,
        message: &str,
        bytes: Option<(u64, u64)>,
    ) {
        use serde_json::{Value, json};
        let (bucket, key, version) = id.report_fields();
        let mut fields = serde_json::Map::new();
        fields.insert("object".into(), Value::String(id.to_string()));
        if !bucket.is_empty() {
            fields.insert("bucket".into(), crate::events::untrusted(&bucket));
            fields.insert("key".into(), crate::events::untrusted(&key));
        }
        if !version.is_empty() {
            fields.insert("version".into(), crate::events::untrusted(&version));
        }
        fields.insert("status".into(), json!(status.as_str()));
        if !code.is_empty() {
            fields.insert("code".into(), json!(code));
        }
        if !message.is_empty() {
            // Failures' messages start with the step that failed: `read: ...`.
            if let Some((step, _)) = message.split_once(": ")
                && !step.contains(' ')
            {
                fields.insert("action".into(), crate::events::untrusted(step));
            }
            fields.insert("message".into(), crate::events::untrusted(message));
        }
        if let Some((bytes_in, bytes_out)) = bytes {
            fields.insert("bytes_in".into(), json!(bytes_in));
            fields.insert("bytes_out".into(), json!(bytes_out));
        }
        if let Some(keys) = self.keys_named.get() {
            fields.insert("wrapping_keys".into(), json!(keys));
        }
        crate::events::emit("object", fields);
    }

    pub(super) fn fail(&self, id: &ObjectId, code: &str, error: String) {
        self.record(id, Status::Failed, code, &error, None);
        self.objects_failed.fetch_add(1, Relaxed);
        keep(&self.failures, MAX_REPORTED_FAILURES, id, || error);
    }

    pub(super) fn conflict(&self, id: &ObjectId, error: String) {
        self.record(id, Status::Conflict, "PreconditionFailed", &error, None);
        self.objects_conflict.fetch_add(1, Relaxed);
        keep(&self.failures, MAX_REPORTED_FAILURES, id, || {
            format!("conflict: {error}")
        });
    }

    pub(super) fn skip(&self, id: &ObjectId, reason: &str) {
        self.record(id, Status::Skipped, "", reason, None);
        self.objects_skipped.fetch_add(1, Relaxed);
        keep(&self.skipped, MAX_REPORTED_SKIPS, id, || reason.to_string());
    }

    /// Records what the cleanup of the destination's stale partial outputs found; one
    /// that could not be removed is a failure of the job (it may hold plaintext).
    pub(super) fn cleaned(&self, found: crate::store::PartialCleanup) {
        self.partials_removed.fetch_add(found.removed, Relaxed);
        self.partials_in_use.fetch_add(found.in_use, Relaxed);
        for (path, error) in found.not_removed {
            self.partials_not_removed.fetch_add(1, Relaxed);
            let id = ObjectId::Local(path);
            let message = format!(
                "a partial output left by an interrupted run could not be removed: {error}; \
                 it may hold a plaintext prefix, remove it by hand"
            );
            self.record(
                &id,
                Status::Failed,
                "StalePartialNotRemoved",
                &message,
                None,
            );
            keep(&self.failures, MAX_REPORTED_FAILURES, &id, || message);
        }
    }

    pub(super) fn attach_key_stats(&self, keys: Arc<PoolStats>) {
        let _ = self.keys.set(keys);
    }

    pub(super) fn attach_s3(&self, s3: Arc<S3Stats>, budget: ByteBudget) {
        let _ = self.s3.set(s3);
        let _ = self.budget.set(budget);
    }

    /// Counters of the job's data-key pool and decrypt cache.
    pub fn key_stats(&self) -> Option<&PoolStats> {
        self.keys.get().map(Arc::as_ref)
    }

    /// Counters of the job's S3 requests.
    pub fn s3_stats(&self) -> Option<&S3Stats> {
        self.s3.get().map(Arc::as_ref)
    }

    /// Data keys obtained from keyrings: generated (encrypt) plus unwrapped (decrypt).
    pub fn data_keys(&self) -> u64 {
        self.key_stats().map_or(0, |k| k.data_keys.load(Relaxed))
    }

    /// Objects finished so far (succeeded, failed, conflicted or skipped).
    pub fn objects_done(&self) -> u64 {
        self.objects_ok.load(Relaxed)
            + self.objects_failed.load(Relaxed)
            + self.objects_conflict.load(Relaxed)
            + self.objects_skipped.load(Relaxed)
    }

    /// Objects that did not succeed (failed or conflicted).
    pub fn objects_unsuccessful(&self) -> u64 {
        self.objects_failed.load(Relaxed) + self.objects_conflict.load(Relaxed)
    }

    pub(super) fn report(
        &self,
        mode: Mode,
        elapsed: Duration,
        dry_run: bool,
        interrupted: bool,
    ) -> Report {
        if let Some(w) = self.completion.lock().expect("not poisoned").as_mut() {
            let _ = w.flush();
        }
        let mut failures = self.failures.lock().expect("not poisoned").clone();
        failures.sort_by(|a, b| a.path.cmp(&b.path));
        let failed = self.objects_failed.load(Relaxed);
        let conflicts = self.objects_conflict.load(Relaxed);
        let partials_not_removed = self.partials_not_removed.load(Relaxed);
        let mut inventory: Vec<InventoryRow> = self
            .inventory
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(p, (objects, bytes))| InventoryRow {
                server_side: p.server_side.clone(),
                client_side: p.client_side.clone(),
                objects: *objects,
                bytes: *bytes,
            })
            .collect();
        inventory.sort_by_key(|r| std::cmp::Reverse(r.objects));
        Report {
            shard: None,
            mode,
            dry_run,
            interrupted,
            objects: ObjectCounts {
                planned: self.objects_planned.load(Relaxed),
                ok: self.objects_ok.load(Relaxed),
                failed,
                conflicts,
                skipped: self.objects_skipped.load(Relaxed),
            },
            bytes_planned: self.bytes_planned.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            elapsed_s: elapsed.as_secs_f64(),
            data_keys: self.data_keys(),
            latency: Latency::of(&self.latency),
            distinct_data_keys: (mode == Mode::Rewrap)
                .then(|| self.data_keys_seen.lock().expect("not poisoned").len() as u64),
            cache: self
                .key_stats()
                .map_or_else(CacheCounts::default, |k| CacheCounts {
                    hits: k.hits.load(Relaxed),
                    misses: k.misses.load(Relaxed),
                    prefetches: k.prefetches.load(Relaxed),
                }),
            s3: self.s3_stats().map(|s| S3Counts {
                requests: s.requests.load(Relaxed),
                retries: s.retry.retries.load(Relaxed),
                slowdowns: s.retry.throttled.load(Relaxed),
                uploads_aborted: s.uploads_aborted.load(Relaxed),
                objects_restarted: s.objects_restarted.load(Relaxed),
                stale_upload_checks_failed: s.stale_upload_checks_failed.load(Relaxed),
                budget_bytes: self.budget.get().map_or(0, ByteBudget::total),
                peak_in_flight_bytes: self.budget.get().map_or(0, ByteBudget::peak),
                bytes_received: s.bytes_received.load(Relaxed),
                bytes_sent: s.bytes_sent.load(Relaxed),
                bytes_copied: s.bytes_copied.load(Relaxed),
            }),
            peak_rss_bytes: peak_rss(),
            stale_partials: PartialCounts {
                removed: self.partials_removed.load(Relaxed),
                in_use: self.partials_in_use.load(Relaxed),
                not_removed: partials_not_removed,
            },
            failures_omitted: (failed + conflicts + partials_not_removed)
                .saturating_sub(failures.len() as u64),
            failures,
            skipped: self.skipped.lock().expect("not poisoned").clone(),
            inventory,
        }
    }
}

/// Adds an entry to a report list unless it already holds `max`: the completion
/// report has every object, the JSON report the first ones. `message` is only made
/// for entries kept: a resumed job skips millions.
fn keep(list: &Mutex<Vec<Failure>>, max: usize, id: &ObjectId, message: impl FnOnce() -> String) {
    let mut list = list.lock().expect("not poisoned");
    if list.len() < max {
        list.push(Failure::new(id, message()));
    }
}

/// The process's peak resident memory (Linux), for reports.
pub(crate) fn peak_rss() -> Option<u64> {
    peak_rss_since_reset()
}

/// Starts [`peak_rss`] over from the resident memory now (Linux: `/proc/self/clear_refs`,
/// value 5), so a benchmark can give each phase its own peak. Whether it worked is in
/// the return value; where it did not, `peak_rss` stays the process's lifetime peak.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_since_reset() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One object that failed or was skipped.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// The object: a path, or `s3://bucket/key`.
    pub path: String,
    /// Its bucket (empty for local files).
    pub bucket: String,
    /// Its key (the path for local files).
    pub key: String,
    /// Its version ID, if known.
    pub version: String,
    /// What went wrong, or why it was skipped.
    pub error: String,
}

impl Failure {
    fn new(id: &ObjectId, error: String) -> Self {
        let (bucket, key, version) = id.report_fields();
        Self {
            path: id.to_string(),
            bucket,
            key,
            version,
            error,
        }
    }
}

/// Per-object latency percentiles, in milliseconds (each exact to within 6%).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Objects measured.
    pub objects: u64,
    /// Half the objects took at most this.
    pub p50_ms: f64,
    /// 99% of the objects took at most this.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
}

impl Latency {
    fn of(histogram: &LatencyHistogram) -> Option<Self> {
        let ms = |q: f64| histogram.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
        Some(Self {
            objects: histogram.count(),
            p50_ms: ms(0.5)?,
            p99_ms: ms(0.99)?,
            max_ms: ms(1.0)?,
        })
    }
}

/// Object totals.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ObjectCounts {
    /// Found by listing (after filters), including those skipped.
    pub planned: u64,
    /// Completed.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Changed underneath an in-place write, left as the other writer made it.
    pub conflicts: u64,
    /// Not processed on purpose (already done, not a regular file, ...).
    pub skipped: u64,
}

/// S3 request totals and memory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct S3Counts {
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries after throttling or transient failures.
    pub retries: u64,
    /// Responses that were 503 SlowDown.
    pub slowdowns: u64,
    /// Multipart uploads aborted (failed objects, stale uploads of killed runs).
    pub uploads_aborted: u64,
    /// Objects written again from their start after a streamed part upload failed
    /// (a streamed part cannot be sent twice).
    pub objects_restarted: u64,
    /// Objects whose stale uploads could not be looked for (no
    /// s3:ListBucketMultipartUploads, or a server without it); written all the same.
    pub stale_upload_checks_failed: u64,
    /// The in-flight byte budget.
    pub budget_bytes: u64,
    /// Most bytes in flight at once.
    pub peak_in_flight_bytes: u64,
    /// Body bytes received from S3 (GetObject).
    pub bytes_received: u64,
    /// Body bytes sent to S3 (PutObject, UploadPart).
    pub bytes_sent: u64,
    /// Bytes S3 copied itself (UploadPartCopy), never through sealpipe.
    pub bytes_copied: u64,
}

/// What a job did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// What the job did to each object.
    pub mode: Mode,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Whether the job was stopped before every object was processed.
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
    /// Per-object latency of the completed objects, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Rewrap: distinct data keys among the messages (each costs one unwrap and one wrap
    /// per new key); a dry run counts them before any KMS call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_data_keys: Option<u64>,
    /// Data-key pool (encrypt) and decrypt-cache counters.
    pub cache: CacheCounts,
    /// S3 counters, when S3 was used.
    pub s3: Option<S3Counts>,
    /// Peak resident memory of the process, where the OS tells.
    pub peak_rss_bytes: Option<u64>,
    /// Partial outputs that killed runs left in a local destination.
    pub stale_partials: PartialCounts,
    /// Failed and conflicted objects, with their errors (the first 10,000).
    pub failures: Vec<Failure>,
    /// Failures beyond those listed.
    pub failures_omitted: u64,
    /// Skipped entries and the reasons (the first 1,000).
    pub skipped: Vec<Failure>,
    /// The share of the listed objects this job took (`--shard`): the counts above are
    /// of that share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<super::Shard>,
    /// `scan`: objects and bytes by what protects them, most objects first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryRow>,
}

/// One kind of protection among the scanned objects.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InventoryRow {
    /// Server-side encryption: `none`, `SSE-S3`, `SSE-KMS KEY`, `SSE-C`, ...
    pub server_side: String,
    /// In the bytes: `none recognised`, `ESDK 0x0478 by KEYS`, `S3EC v3 ...`, ...
    pub client_side: String,
    /// How many objects.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Report {
    /// Whether every planned object completed or was skipped on purpose.
    pub fn all_succeeded(&self) -> bool {
        self.objects.failed == 0
            && self.objects.conflicts == 0
            && self.stale_partials.not_removed == 0
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

/// What the cleanup of a local destination found: `.sealpipe-*.partial` files that
/// killed runs left (they may hold plaintext prefixes).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartialCounts {
    /// Removed (in a dry run: would be removed).
    pub removed: u64,
    /// Locked by a live job writing them, left alone.
    pub in_use: u64,
    /// Could not be removed (each is also in `failures`).
    pub not_removed: u64,
}
