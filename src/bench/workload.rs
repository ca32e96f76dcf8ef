//! Workloads: a tree of objects drawn from a size distribution, written to a target (a
//! local directory, memory, or an S3 prefix), then processed by the real pipeline in
//! each mode (encrypt, decrypt, reencrypt, rewrap, verify), beside the limits measured
//! in the same run: the plain copy of the same objects on the same target, the AES-GCM
//! ceiling and the memory copy bandwidth. Keys are Raw AES keys made for the run unless
//! the caller brings a keyring (KMS), so KMS is only measured when asked for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::target::{Area, Target};
use super::{MachineLimits, machine_limits};
use crate::Error;
use crate::crypto::{AeadBackend, DataKey};
use crate::format::{AlgorithmSuite, EncryptionContext};
use crate::keys::{KeepPolicy, Keyring, PoolLimits, RawAesKeyring};
use crate::pipeline::{
    self, Cancel, Job, Keys, Mode, ObjectFilter, Opening, Output, Report, Rewrapping, Sealing,
    Source, Stats, Work,
};
use crate::stream::{DecryptOptions, EncryptOptions, HeaderNonce};

/// The objects of a workload.
#[derive(Clone, Debug, PartialEq)]
pub enum Mix {
    /// 10,000 objects of 4 KiB.
    Small,
    /// 1,000 objects of 1 MiB.
    Medium,
    /// 2 objects of 1 GiB.
    Large,
    /// 2,000 objects whose sizes are drawn from a log-normal distribution (median
    /// 64 KiB, most between 2 KiB and 2 MiB, at most 256 MiB), as file trees and buckets
    /// tend to be: many small objects, most bytes in a few large ones.
    Mixed,
    /// `objects` objects of sizes log-uniform between `min` and `max` bytes.
    Sizes {
        /// How many.
        objects: u64,
        /// The smallest size.
        min: u64,
        /// The largest size.
        max: u64,
    },
}

impl Mix {
    /// Parses `small`, `medium`, `large` or `mixed`.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "small" => Self::Small,
            "medium" => Self::Medium,
            "large" => Self::Large,
            "mixed" => Self::Mixed,
            _ => return None,
        })
    }

    /// The object sizes, always the same for the same mix.
    pub fn sizes(&self) -> Vec<u64> {
        let mut rng = SplitMix(0x5EA1_F1FE);
        match *self {
            Self::Small => vec![4 << 10; 10_000],
            Self::Medium => vec![1 << 20; 1_000],
            Self::Large => vec![1 << 30; 2],
            Self::Mixed => (0..2_000)
                .map(|_| {
                    let normal = rng.normal();
                    let size = (64.0 * 1024.0 * (normal * 1.5).exp()) as u64;
                    size.clamp(1, 256 << 20)
                })
                .collect(),
            Self::Sizes { objects, min, max } => {
                let (lo, hi) = ((min.max(1) as f64).ln(), (max.max(min).max(1) as f64).ln());
                (0..objects)
                    .map(|_| (lo + (hi - lo) * rng.unit()).exp().round() as u64)
                    .collect()
            }
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Small => f.write_str("small (10,000 x 4 KiB)"),
            Self::Medium => f.write_str("medium (1,000 x 1 MiB)"),
            Self::Large => f.write_str("large (2 x 1 GiB)"),
            Self::Mixed => f.write_str("mixed (2,000, log-normal around 64 KiB)"),
            Self::Sizes { objects, min, max } => {
                write!(f, "{objects} objects of {min} to {max} bytes")
            }
        }
    }
}

/// A small deterministic generator for sizes (not for keys or data).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (1.0 - self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// The objects.
    pub mix: Mix,
    /// Where the tree and every output are made (below a prefix or directory of the
    /// run's own, removed at the end).
    pub target: Target,
    /// The modes, in order; each reads what encrypt wrote (encrypt always runs first).
    pub modes: Vec<Mode>,
    /// Objects at once, in every phase (the plain copy on S3 included).
    pub concurrency: usize,
    /// Keyrings to encrypt with and to re-encrypt or rewrap to (KMS keys, say), in
    /// place of two Raw AES keys made for the run; with the KMS counters they feed.
    pub keys: Option<BenchKeys>,
    /// The data-key pool's limits, as a job's.
    pub pool_limits: PoolLimits,
    /// The AES-GCM backend of every mode (the limits use the default one).
    pub aead: AeadBackend,
}

/// Keyrings a workload uses instead of its own Raw AES keys.
#[derive(Clone)]
pub struct BenchKeys {
    /// Encrypt wraps with these; decrypt and verify unwrap with them.
    pub first: Arc<dyn Keyring>,
    /// Reencrypt and rewrap move messages to these.
    pub second: Arc<dyn Keyring>,
    /// Reads the KMS calls made so far (all actions), if the keyrings call KMS.
    pub kms_calls: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

impl std::fmt::Debug for BenchKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchKeys")
            .field("first", &self.first.describe())
            .field("second", &self.second.describe())
            .finish_non_exhaustive()
    }
}

/// What a workload is doing, for progress.
pub enum Phase {
    /// Writing the tree of random objects (not measured).
    Tree,
    /// Measuring the AES-GCM ceiling and the memory copy bandwidth.
    Limits,
    /// The plain copy of the tree.
    Copy,
    /// A mode, with the job's live counters.
    Mode(Mode, Arc<Stats>),
}

/// One mode over the workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeResult {
    /// The mode.
    pub mode: Mode,
    /// Objects processed.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Megabytes (10^6) read per second.
    pub mb_per_s: f64,
    /// Objects per second.
    pub objects_per_s: f64,
    /// Per-object latency: median and 99th percentile, milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// CPU seconds of the process in user and kernel mode.
    pub cpu_user_s: f64,
    /// See `cpu_user_s`.
    pub cpu_sys_s: f64,
    /// CPU seconds per gigabyte (10^9) read.
    pub cpu_s_per_gb: f64,
    /// Data keys obtained from the keyring.
    pub data_keys: u64,
    /// KMS requests of this mode (0 with the run's own Raw AES keys).
    pub kms_calls: u64,
    /// Messages served by a pooled or cached data key, of all that asked for one.
    pub pool_hit_rate: f64,
    /// S3 requests of this mode, retries included (S3 targets).
    pub s3_requests: Option<u64>,
    /// The plain copy's time divided by this mode's: 1.0 is as fast as copying.
    pub of_copy: f64,
    /// This mode's MB/s over the AES-GCM ceiling of all cores.
    pub of_aead: f64,
    /// This mode's MB/s over the memory copy bandwidth.
    pub of_memory_copy: f64,
    /// The process's peak resident memory during this mode, bytes (during the whole
    /// run where the system cannot start the peak over).
    pub peak_rss_bytes: Option<u64>,
}

/// A workload's results.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadResult {
    /// What was run.
    pub mix: String,
    /// Where.
    pub target: String,
    /// Objects in the tree.
    pub objects: u64,
    /// Bytes in the tree.
    pub bytes: u64,
    /// What the plain copy is: `cp -r` (read + write, one file after the other) or
    /// `GET+PUT` (every object through the same S3 client, settings and concurrency).
    pub copy: &'static str,
    /// The plain copy's wall seconds.
    pub copy_seconds: f64,
    /// Megabytes per second of that copy.
    pub copy_mb_per_s: f64,
    /// S3 requests of the plain copy (S3 targets).
    pub copy_s3_requests: Option<u64>,
    /// The AES-GCM ceiling and memory copy bandwidth, measured in the same run.
    pub limits: MachineLimits,
    /// Each mode.
    pub modes: Vec<ModeResult>,
    /// The highest of the modes' peak resident memory, bytes: the tree's writing and
    /// the limits' buffers left out where the system can start the peak over.
    pub peak_rss_bytes: Option<u64>,
}

/// CPU seconds of this process so far, every thread's, exited ones too: user, system.
/// From `/proc/self/stat`, whose times are in USER_HZ, 100 per second on Linux; (0, 0)
/// elsewhere.
fn cpu_seconds() -> (f64, f64) {
    const USER_HZ: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // After the command name (in parentheses, possibly with spaces): state is field 3,
    // utime field 14, stime field 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / USER_HZ, ticks(12) / USER_HZ)
}

/// A Raw AES keyring with a fresh random key, for the run only.
fn fresh_keyring(name: &str) -> Result<Arc<dyn Keyring>, Error> {
    let key = DataKey::random(32)?;
    let keyring = RawAesKeyring::new("sealpipe-bench", name, key.as_bytes().to_vec().into())
        .map_err(Error::Internal)?;
    Ok(Arc::new(keyring))
}

/// The job of `mode` over the workload in `area`: encrypt reads the tree, every other
/// mode the encrypted one.
fn job(
    mode: Mode,
    area: &Area,
    (old, new): (&Arc<dyn Keyring>, &Arc<dyn Keyring>),
    config: &WorkloadConfig,
) -> Job {
    let sealing = |keys: &Arc<dyn Keyring>| Sealing {
        keys: Keys::Loaded(keys.clone()),
        suite: AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        context: EncryptionContext::new(),
        options: EncryptOptions {
            aead: config.aead,
            ..EncryptOptions::default()
        },
        pool_limits: config.pool_limits.clone(),
    };
    let opening = Opening {
        keys: Keys::Loaded(old.clone()),
        options: DecryptOptions {
            aead: config.aead,
            ..DecryptOptions::default()
        },
        reproduced_context: EncryptionContext::new(),
        cache_max_age: config.pool_limits.max_age,
        source_format: Default::default(),
    };
    let output = |name: &str| Output::To(area.location(name));
    let (work, source) = match mode {
        Mode::Scan => (Work::Scan, "encrypted"),
        Mode::Encrypt => (
            Work::Encrypt {
                to: sealing(old),
                output: output("encrypted"),
            },
            "tree",
        ),
        Mode::Decrypt => (
            Work::Decrypt {
                from: opening,
                output: output("out"),
            },
            "encrypted",
        ),
        Mode::Reencrypt => (
            Work::Reencrypt {
                from: opening,
                to: sealing(new),
                output: output("out"),
            },
            "encrypted",
        ),
        // What a rewrap costs; the benchmark's messages are its own, so the reuse of a
        // v2 header's nonce exposes nothing.
        Mode::Rewrap => (
            Work::Rewrap {
                from: opening,
                to: Rewrapping {
                    new_keys: Some(Keys::Loaded(new.clone())),
                    keep: KeepPolicy::default(),
                    expected_keys: None,
                    reencrypt_signed: None,
                    copy_above: u64::MAX,
                    header_nonce: HeaderNonce::AllowReuse,
                },
                output: output("out"),
            },
            "encrypted",
        ),
        Mode::Verify => (Work::Verify { from: opening }, "encrypted"),
    };
    Job {
        work,
        source: Source::Location(area.location(source)),
        filter: ObjectFilter::default(),
        shard: None,
        concurrency: config.concurrency,
        dry_run: false,
        fail_fast: false,
        s3: area.store(),
    }
}

/// Runs `config`: writes the tree, measures the limits and the plain copy, then runs
/// each mode, `progress` told of each phase as it starts. Everything the run made is
/// removed at the end, whether it succeeded or not.
///
/// `cancel` stops it between phases and inside each mode (the job's objects in flight
/// finish or are abandoned as a job's are); the run then ends with
/// [`Error::Cancelled`] after removing what it made.
pub async fn run_workload(
    config: &WorkloadConfig,
    cancel: &Cancel,
    mut progress: impl FnMut(Phase),
) -> Result<WorkloadResult, Error> {
    let area = Area::new(
        &config.target,
        &format!("sealpipe-bench-{}", std::process::id()),
    );
    let result = measure(config, &area, cancel, &mut progress).await;
    area.remove_all().await;
    result
}

/// `Err(Cancelled)` once `cancel` was asked for.
fn check(cancel: &Cancel) -> Result<(), Error> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

async fn measure(
    config: &WorkloadConfig,
    area: &Area,
    cancel: &Cancel,
    progress: &mut impl FnMut(Phase),
) -> Result<WorkloadResult, Error> {
    let sizes = config.mix.sizes();
    let bytes: u64 = sizes.iter().sum();
    progress(Phase::Tree);
    area.write_tree(&sizes, config.concurrency).await?;
    check(cancel)?;
    progress(Phase::Limits);
    let limits = crate::bridge::blocking("measuring the machine's limits", || {
        machine_limits(Duration::from_millis(500))
    })
    .await??;
    check(cancel)?;
    progress(Phase::Copy);
    let started = Instant::now();
    let copy_requests = area.plain_copy("tree", "copy", config.concurrency).await?;
    let copy_seconds = started.elapsed().as_secs_f64();
    area.remove("copy").await;
    check(cancel)?;
    let (keys, kms_calls) = match &config.keys {
        Some(k) => ((k.first.clone(), k.second.clone()), k.kms_calls.clone()),
        None => ((fresh_keyring("old")?, fresh_keyring("new")?), None),
    };
    let kms_now = || kms_calls.as_ref().map_or(0, |f| f());
    let mut modes = config.modes.clone();
    modes.retain(|m| *m != Mode::Encrypt);
    modes.insert(0, Mode::Encrypt);
    let mut results = Vec::new();
    let mut peak_rss: Option<u64> = None;
    for mode in modes {
        let job = job(mode, area, (&keys.0, &keys.1), config);
        let stats = Arc::new(Stats::default());
        progress(Phase::Mode(mode, stats.clone()));
        let per_mode_peak = pipeline::reset_peak_rss();
        let (cpu_before, kms_before) = (cpu_seconds(), kms_now());
        let report = Box::pin(pipeline::run(job, stats, cancel.clone())).await?;
        check(cancel)?;
        let (cpu_after, kms_after) = (cpu_seconds(), kms_now());
        if report.objects.ok != sizes.len() as u64 {
            let first = report
                .failures
                .first()
                .map_or(String::new(), |f| format!(": {}: {}", f.path, f.error));
            return Err(Error::Internal(format!(
                "the benchmark's {mode:?} processed {} of {} objects ({} failed){first}",
                report.objects.ok,
                sizes.len(),
                report.objects.failed
            )));
        }
        let mut result = mode_result(
            mode,
            &report,
            (cpu_before, cpu_after),
            copy_seconds,
            &limits,
        );
        result.kms_calls = kms_after - kms_before;
        result.peak_rss_bytes = report.peak_rss_bytes;
        peak_rss = match (peak_rss, report.peak_rss_bytes) {
            (Some(a), Some(b)) if per_mode_peak => Some(a.max(b)),
            (_, b) => b,
        };
        results.push(result);
        if mode != Mode::Encrypt {
            area.remove("out").await;
        }
    }
    Ok(WorkloadResult {
        mix: config.mix.to_string(),
        target: config.target.to_string(),
        objects: sizes.len() as u64,
        bytes,
        copy: match config.target {
            Target::Local(_) => "cp -r",
            Target::S3(_) => "GET+PUT",
        },
        copy_seconds,
        copy_mb_per_s: bytes as f64 / 1e6 / copy_seconds.max(1e-9),
        copy_s3_requests: matches!(config.target, Target::S3(_)).then_some(copy_requests),
        limits,
        modes: results,
        peak_rss_bytes: peak_rss,
    })
}

fn mode_result(
    mode: Mode,
    report: &Report,
    (before, after): ((f64, f64), (f64, f64)),
    copy_seconds: f64,
    limits: &MachineLimits,
) -> ModeResult {
    let seconds = report.elapsed_s.max(1e-9);
    let (user, sys) = (after.0 - before.0, after.1 - before.1);
    let latency = report.latency.as_ref();
    let asked = report.cache.hits + report.cache.misses;
    let mb_per_s = report.bytes_in as f64 / 1e6 / seconds;
    ModeResult {
        mode,
        objects: report.objects.ok,
        bytes: report.bytes_in,
        seconds,
        mb_per_s,
        objects_per_s: report.objects.ok as f64 / seconds,
        p50_ms: latency.map_or(0.0, |l| l.p50_ms),
        p99_ms: latency.map_or(0.0, |l| l.p99_ms),
        cpu_user_s: user,
        cpu_sys_s: sys,
        cpu_s_per_gb: (user + sys) / (report.bytes_in as f64 / 1e9).max(1e-9),
        data_keys: report.data_keys,
        kms_calls: 0,
        pool_hit_rate: if asked == 0 {
            1.0
        } else {
            report.cache.hits as f64 / asked as f64
        },
        s3_requests: report.s3.as_ref().map(|s| s.requests),
        of_copy: copy_seconds / seconds,
        of_aead: mb_per_s / limits.aead_all_cores_mb_per_s.max(1e-9),
        of_memory_copy: mb_per_s / limits.memory_copy_mb_per_s.max(1e-9),
        peak_rss_bytes: None,
    }
}

impl std::fmt::Display for WorkloadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "workload: {}: {} objects, {:.1} MB, on {}",
            self.mix,
            self.objects,
            self.bytes as f64 / 1e6,
            self.target,
        )?;
        let l = &self.limits;
        writeln!(
            f,
            "limits:   plain copy ({}): {:.3} s, {:.0} MB/s; AES-GCM ceiling: {:.0} MB/s \
             ({} cores x {:.0}); memory copy: {:.0} MB/s",
            self.copy,
            self.copy_seconds,
            self.copy_mb_per_s,
            l.aead_all_cores_mb_per_s,
            l.cores,
            l.aead_one_core_mb_per_s,
            l.memory_copy_mb_per_s
        )?;
        writeln!(
            f,
            "{:<10} {:>8} {:>8} {:>9} {:>8} {:>8} {:>13} {:>8} {:>5} {:>4} {:>5} {:>7} {:>7} {:>7} {:>7}",
            "mode",
            "seconds",
            "MB/s",
            "objects/s",
            "p50 ms",
            "p99 ms",
            "CPU s usr/sys",
            "CPU s/GB",
            "keys",
            "KMS",
            "hits",
            "RSS MiB",
            "of copy",
            "of AES",
            "of mem",
        )?;
        for m in &self.modes {
            writeln!(
                f,
                "{:<10} {:>8.3} {:>8.0} {:>9.0} {:>8.2} {:>8.2} {:>6.2}/{:<6.2} {:>8.2} {:>5} {:>4} {:>4.0}% {:>7} {:>6.2}x {:>6.2}x {:>6.2}x",
                format!("{:?}", m.mode).to_lowercase(),
                m.seconds,
                m.mb_per_s,
                m.objects_per_s,
                m.p50_ms,
                m.p99_ms,
                m.cpu_user_s,
                m.cpu_sys_s,
                m.cpu_s_per_gb,
                m.data_keys,
                m.kms_calls,
                m.pool_hit_rate * 100.0,
                m.peak_rss_bytes
                    .map_or("-".to_string(), |b| (b >> 20).to_string()),
                m.of_copy,
                m.of_aead,
                m.of_memory_copy,
            )?;
        }
        if let Some(rss) = self.peak_rss_bytes {
            write!(f, "peak RSS: {:.0} MiB", rss as f64 / (1u64 << 20) as f64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_have_the_sizes_they_say() {
        assert_eq!(Mix::Small.sizes(), vec![4096; 10_000]);
        assert_eq!(Mix::Large.sizes().iter().sum::<u64>(), 2 << 30);
        let mixed = Mix::Mixed.sizes();
        assert_eq!(mixed, Mix::Mixed.sizes(), "the same sizes every run");
        let mut sorted = mixed.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        assert!((32 << 10..=128 << 10).contains(&median), "median {median}");
        assert!(sorted.iter().all(|&s| (1..=256 << 20).contains(&s)));
        let custom = Mix::Sizes {
            objects: 500,
            min: 100,
            max: 1_000_000,
        }
        .sizes();
        assert_eq!(custom.len(), 500);
        assert!(custom.iter().all(|&s| (100..=1_000_000).contains(&s)));
    }
}
