//! Throughput measurement in memory, shared by `sealpipe bench` and `benches/seal.rs`.
//!
//! The figure that matters is the ratio between sealing whole messages on all cores and
//! the *AES-GCM ceiling*: one core sealing frames in a tight loop with the same backend,
//! times the number of cores. Everything a message adds on top of raw AES-GCM (framing,
//! copies, scheduling, the header) shows up as the gap between the two.
//!
//! Two more references explain that gap:
//! - the *parallel ceiling*: every thread sealing in its own tight loop at the same
//!   time. When it is well below the single-core ceiling times the threads, the cores
//!   are not independent (SMT siblings, a busy host, a neighbour on the VM), and no
//!   message can reach the ratio's 100%;
//! - the *copy bandwidth*: all threads copying the same number of bytes from one buffer
//!   to another. Writing a message from a plaintext buffer moves at least those bytes
//!   through memory, so when AES-GCM is faster than memory (VAES on a small VM) the copy
//!   bandwidth, not the AES-GCM ceiling, is the real limit.
//!
//! Small messages have few frames, so one message cannot keep every core busy; like the
//! pipeline, the benchmark then seals many messages at once (one round is at least
//! 64 MiB of plaintext).
//!
//! Every figure is the *median* over many timed rounds, so a neighbour that steals a
//! core now and then moves it less than it would move a mean. A neighbour that keeps a
//! core busy still halves the wall-clock figures; on Linux the result therefore also
//! gives sealing and opening per CPU-second the process used (all its threads), which
//! such a neighbour does not change: `seal_cpu_ratio` compares that with one core's
//! ceiling, and equals `seal_ratio` on an idle machine where the threads scale.

mod target;
mod workload;

pub use target::{S3Target, Target, is_in_memory};
pub use workload::{
    BenchKeys, Mix, ModeResult, Phase, WorkloadConfig, WorkloadResult, run_workload,
};

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;
use crate::crypto::{AeadBackend, AeadKey, DataKey};
use crate::format::{AlgorithmSuite, BodyAad, ContentKind, EncryptionContext, frame_iv};
use crate::keys::{DecryptionMaterials, EncryptionMaterials, RawAesKeyring, encryption_materials};
use crate::stream::{self, DecryptOptions, EncryptOptions};

/// The largest message [`seal_throughput`] accepts: it holds about four copies of
/// `max(message_size, 64 MiB)` bytes of messages at once.
pub const MAX_MESSAGE_SIZE: usize = 1 << 30;
/// The longest frame [`seal_throughput`] accepts: every thread of the ceilings holds
/// one.
pub const MAX_FRAME_LENGTH: u32 = 64 << 20;
/// The most threads [`seal_throughput`] starts.
pub const MAX_THREADS: usize = 1024;
/// The longest [`BenchConfig::min_time`]: one hour per figure.
pub const MAX_MIN_TIME: Duration = Duration::from_secs(3600);
/// Messages sealed at once in a round, still many per thread: small messages would
/// otherwise be tens of millions (64 MiB of one-byte messages), each with its own
/// header and buffers.
const MAX_MESSAGES_PER_ROUND: usize = 1 << 12;
/// Frames per thread and timed round in the ceilings: tiny frames would otherwise
/// make a round tens of millions of seals long.
const MAX_FRAMES_PER_ROUND: usize = 1 << 16;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Plaintext bytes per message.
    pub message_size: usize,
    /// Frame length.
    pub frame_length: u32,
    /// AES-GCM backend.
    pub aead: AeadBackend,
    /// Threads sealing in parallel; 0 means one per core.
    pub threads: usize,
    /// Minimum time to measure each figure.
    pub min_time: Duration,
    /// Suite of the messages.
    pub suite: AlgorithmSuite,
}

impl Default for BenchConfig {
    /// 64 MiB messages in 64 KiB frames, `ring`, all cores, 2 s per figure, suite
    /// 0x0478 (the default of `sealpipe encrypt`).
    fn default() -> Self {
        Self {
            message_size: 64 << 20,
            frame_length: stream::DEFAULT_FRAME_LENGTH,
            aead: AeadBackend::default(),
            threads: 0,
            min_time: Duration::from_secs(2),
            suite: AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        }
    }
}

/// Measured figures, all in plaintext bytes per second.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// Plaintext bytes per message.
    pub message_size: usize,
    /// Frame length.
    pub frame_length: u32,
    /// AES-GCM backend.
    pub aead: String,
    /// Suite.
    pub suite: String,
    /// Threads used.
    pub threads: usize,
    /// Whole messages sealed per second, times their size.
    pub seal_bytes_per_sec: f64,
    /// Whole messages authenticated and decrypted per second, times their size.
    pub open_bytes_per_sec: f64,
    /// One core sealing frames in a tight loop.
    pub single_core_ceiling_bytes_per_sec: f64,
    /// The single-core ceiling times `threads`.
    pub ceiling_bytes_per_sec: f64,
    /// `seal_bytes_per_sec / ceiling_bytes_per_sec`.
    pub seal_ratio: f64,
    /// `open_bytes_per_sec / ceiling_bytes_per_sec`.
    pub open_ratio: f64,
    /// Every thread sealing frames in its own tight loop, all at once.
    pub parallel_ceiling_bytes_per_sec: f64,
    /// `parallel_ceiling_bytes_per_sec / single_core_ceiling_bytes_per_sec`: how many
    /// independent cores the threads behave as (`threads` on an idle machine).
    pub effective_cores: f64,
    /// Plaintext sealed per CPU-second of the process (all threads), where the OS tells
    /// (Linux); unlike the wall-clock figures, independent of how much of each core
    /// other processes take.
    pub seal_bytes_per_cpu_sec: Option<f64>,
    /// Plaintext opened per CPU-second of the process (all threads), where known.
    pub open_bytes_per_cpu_sec: Option<f64>,
    /// `seal_bytes_per_cpu_sec / single_core_ceiling_bytes_per_sec`: the share of the
    /// AES-GCM ceiling each core's time spent sealing achieves.
    pub seal_cpu_ratio: Option<f64>,
    /// All threads copying message-sized buffers: the memory-bound limit.
    pub copy_bytes_per_sec: f64,
    /// `seal_bytes_per_sec / copy_bytes_per_sec`.
    pub seal_to_copy_ratio: f64,
    /// Messages sealed at once in each round.
    pub messages_per_round: usize,
    /// Messages sealed during the measurement.
    pub seal_iterations: u64,
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = |b: f64| b / f64::from(1u32 << 30);
        writeln!(
            f,
            "messages of {} bytes, frame {} bytes, suite {}, aead {}, {} threads",
            self.message_size, self.frame_length, self.suite, self.aead, self.threads
        )?;
        writeln!(
            f,
            "  AES-GCM ceiling   {:>7.2} GiB/s  ({:.2} GiB/s per core x {})",
            gib(self.ceiling_bytes_per_sec),
            gib(self.single_core_ceiling_bytes_per_sec),
            self.threads
        )?;
        writeln!(
            f,
            "  all threads       {:>7.2} GiB/s  (AES-GCM loops at once: {:.2} independent cores)",
            gib(self.parallel_ceiling_bytes_per_sec),
            self.effective_cores
        )?;
        writeln!(
            f,
            "  copy bandwidth    {:>7.2} GiB/s  (memcpy of the same bytes, all threads)",
            gib(self.copy_bytes_per_sec)
        )?;
        writeln!(
            f,
            "  seal messages     {:>7.2} GiB/s  {:>5.1}% of the ceiling, {:.1}% of copy bandwidth \
             ({} at once)",
            gib(self.seal_bytes_per_sec),
            self.seal_ratio * 100.0,
            self.seal_to_copy_ratio * 100.0,
            self.messages_per_round
        )?;
        write!(
            f,
            "  open messages     {:>7.2} GiB/s  {:>5.1}% of the ceiling",
            gib(self.open_bytes_per_sec),
            self.open_ratio * 100.0
        )?;
        if let (Some(seal), Some(open), Some(ratio)) = (
            self.seal_bytes_per_cpu_sec,
            self.open_bytes_per_cpu_sec,
            self.seal_cpu_ratio,
        ) {
            write!(
                f,
                "\n  per CPU-second    seal {:.2} GiB/s ({:.1}% of one core's ceiling), open \
                 {:.2} GiB/s",
                gib(seal),
                ratio * 100.0,
                gib(open)
            )?;
        }
        Ok(())
    }
}

/// Bytes per second one core seals with `aead`, frame after frame, in place: the
/// single-core AES-GCM ceiling for frames of `frame_length` bytes.
///
/// The frame buffer is reused, so it stays in cache and the loop measures AES-GCM, not
/// memory; each frame gets its own IV and the AAD a real frame has ([`BodyAad`]).
pub fn aead_ceiling(aead: AeadBackend, frame_length: u32, min_time: Duration) -> f64 {
    let key = AeadKey::new(aead, &[7u8; 32]);
    let message_id = [1u8; 32];
    // A u32 always fits a usize on the platforms we build for (32 and 64 bits).
    let l = frame_length.max(1) as usize;
    // One timed round is about 1 MiB of frames.
    let frames = ((1 << 20) / l).clamp(1, MAX_FRAMES_PER_ROUND);
    let mut buf = vec![0x5Au8; l];
    let mut seq = 1u32;
    let round = measure(min_time, || {
        for _ in 0..frames {
            let aad = BodyAad::new(&message_id, ContentKind::Frame, seq, l as u64);
            std::hint::black_box(key.seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut buf));
            seq = seq.wrapping_add(1).max(1);
        }
    });
    (frames * l) as f64 / round.median.as_secs_f64()
}

/// Bytes per second all threads of `pool` seal together, each in its own tight loop
/// like [`aead_ceiling`]. Each timed round ends when the slowest thread is done, so a
/// thread that does not get its core shows here.
fn parallel_ceiling(
    pool: &rayon::ThreadPool,
    aead: AeadBackend,
    frame_length: u32,
    min_time: Duration,
) -> f64 {
    let key = AeadKey::new(aead, &[7u8; 32]);
    let message_id = [1u8; 32];
    let l = frame_length.max(1) as usize;
    // About 32 MiB per thread and round (a few milliseconds), so waking the threads
    // costs little.
    let frames = ((32 << 20) / l).clamp(1, MAX_FRAMES_PER_ROUND);
    let round = || {
        pool.broadcast(|ctx| {
            let mut buf = vec![0x5Au8; l];
            for i in 0..frames {
                // Distinct per thread while they fit; a benchmark's IVs need not be
                // unique, only its arithmetic must not overflow.
                let seq = ((ctx.index() * frames + i) as u32).wrapping_add(1).max(1);
                let aad = BodyAad::new(&message_id, ContentKind::Frame, seq, l as u64);
                std::hint::black_box(key.seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut buf));
            }
        });
    };
    round();
    let rounds = measure(min_time, round);
    (pool.current_num_threads() * frames * l) as f64 / rounds.median.as_secs_f64()
}

/// Materials for benchmarks: a random Raw AES wrapping key, as a job would have.
pub fn bench_materials(suite: AlgorithmSuite) -> Result<EncryptionMaterials, Error> {
    let wrapping = DataKey::random(32)?;
    let keyring = RawAesKeyring::new(
        "sealpipe-bench",
        "bench",
        wrapping.as_bytes().to_vec().into(),
    )
    .map_err(Error::Internal)?;
    // The Raw AES keyring completes without suspending, so one poll suffices and the
    // benchmark needs no async runtime (it may be called from inside one).
    let mut future = std::pin::pin!(encryption_materials(
        &keyring,
        suite,
        EncryptionContext::new(),
        Default::default(),
    ));
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => Err(Error::Internal("the raw AES keyring suspended".into())),
    }
}

/// Plaintext per measured round: small messages are sealed many at a time.
const ROUND_BYTES: usize = 64 << 20;

/// Seals (and opens) `config.message_size`-byte messages on a dedicated pool and
/// compares with the AES-GCM ceiling and the copy bandwidth.
///
/// Materials are built once; every round reuses the same output buffers (after a
/// warm-up round that faults their pages in), so the figures are those of sealing, not
/// of the allocator or the kernel. Opening goes through [`stream::decrypt_with`] into
/// reused buffers, with the data key the sealing materials carry.
pub fn seal_throughput(config: &BenchConfig) -> Result<BenchResult, Error> {
    use rayon::prelude::*;

    if !(1..=MAX_MESSAGE_SIZE).contains(&config.message_size) {
        return Err(Error::Config(format!(
            "benchmark messages must be 1 to {MAX_MESSAGE_SIZE} bytes, not {}",
            config.message_size
        )));
    }
    if !(1..=MAX_FRAME_LENGTH).contains(&config.frame_length) {
        return Err(Error::Config(format!(
            "benchmark frames must be 1 to {MAX_FRAME_LENGTH} bytes, not {}",
            config.frame_length
        )));
    }
    if config.threads > MAX_THREADS {
        return Err(Error::Config(format!(
            "the benchmark uses at most {MAX_THREADS} threads, not {}",
            config.threads
        )));
    }
    if config.min_time > MAX_MIN_TIME {
        return Err(Error::Config(format!(
            "the benchmark measures each figure for at most {} s",
            MAX_MIN_TIME.as_secs()
        )));
    }

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build()
        .map_err(|e| Error::Resource {
            what: "the benchmark's thread pool",
            reason: e.to_string(),
        })?;
    let threads = pool.current_num_threads();
    let materials = bench_materials(config.suite)?;
    let options = EncryptOptions {
        frame_length: config.frame_length,
        aead: config.aead,
        ..Default::default()
    };
    options.validate()?;
    let per_round = (ROUND_BYTES / config.message_size).clamp(1, MAX_MESSAGES_PER_ROUND);
    let plaintexts: Vec<Vec<u8>> = (0..per_round)
        // Never zero: calloc'd zero pages all map to one physical page and read for free.
        // Any byte will do, so `as u8` may drop the high bits.
        .map(|i| vec![(i as u8) | 0x5A; config.message_size])
        .collect();
    let round_bytes = (per_round * config.message_size) as f64;

    let mut messages: Vec<Vec<u8>> = vec![Vec::new(); per_round];
    let mut seal_round = || -> Result<(), Error> {
        pool.install(|| {
            messages
                .par_iter_mut()
                .zip(plaintexts.par_iter())
                .try_for_each(|(out, p)| stream::encrypt_to_vec(&materials, &options, None, p, out))
        })
    };
    // Warm up: fault in the output buffers, spin up the pool.
    seal_round()?;
    let seal = measure_fallible(config.min_time, &mut seal_round)?;

    let decrypt_options = DecryptOptions {
        aead: config.aead,
        ..Default::default()
    };
    let data_key = materials
        .data_key
        .clone()
        .ok_or_else(|| Error::Internal("the benchmark materials carry no data key".into()))?;
    let mut outputs: Vec<Vec<u8>> = vec![Vec::with_capacity(config.message_size); per_round];
    let mut open_round = || -> Result<(), Error> {
        pool.install(|| {
            outputs
                .par_iter_mut()
                .zip(messages.par_iter())
                .try_for_each(|(out, m)| {
                    out.clear();
                    stream::decrypt_with(&mut &m[..], out, &decrypt_options, |_| {
                        Ok(DecryptionMaterials {
                            data_key: data_key.clone(),
                            authenticate_only_context: EncryptionContext::new(),
                        })
                    })
                    .map(drop)
                })
        })
    };
    open_round()?;
    let open = measure_fallible(config.min_time, &mut open_round)?;
    if outputs.first().is_some_and(|o| o[..] != plaintexts[0][..]) {
        return Err(Error::Internal("the benchmark's round trip differs".into()));
    }

    let copy_rate = copy_bandwidth(&pool, &plaintexts, config.min_time / 2);

    // The tight loops are steady: half the time gives the same figure.
    let single = aead_ceiling(config.aead, config.frame_length, config.min_time / 2);
    let parallel = parallel_ceiling(&pool, config.aead, config.frame_length, config.min_time / 2);
    let ceiling = single * threads as f64;
    let rate = |r: &Rounds| round_bytes / r.median.as_secs_f64();
    let (seal_rate, open_rate) = (rate(&seal), rate(&open));
    let cpu_rate = |r: &Rounds| {
        r.cpu
            .map(|t| r.count as f64 * round_bytes / t.as_secs_f64())
    };
    let (seal_cpu, open_cpu) = (cpu_rate(&seal), cpu_rate(&open));
    Ok(BenchResult {
        message_size: config.message_size,
        frame_length: config.frame_length,
        aead: config.aead.to_string(),
        suite: config.suite.to_string(),
        threads,
        seal_bytes_per_sec: seal_rate,
        open_bytes_per_sec: open_rate,
        single_core_ceiling_bytes_per_sec: single,
        ceiling_bytes_per_sec: ceiling,
        seal_ratio: seal_rate / ceiling,
        open_ratio: open_rate / ceiling,
        parallel_ceiling_bytes_per_sec: parallel,
        effective_cores: parallel / single,
        seal_bytes_per_cpu_sec: seal_cpu,
        open_bytes_per_cpu_sec: open_cpu,
        seal_cpu_ratio: seal_cpu.map(|r| r / single),
        copy_bytes_per_sec: copy_rate,
        seal_to_copy_ratio: seal_rate / copy_rate,
        messages_per_round: per_round,
        seal_iterations: seal.count * per_round as u64,
    })
}

/// Bytes per second all threads of `pool` copy from `sources` into buffers of the same
/// sizes, in 1 MiB pieces: the memory-bound limit of anything that writes every byte
/// once.
fn copy_bandwidth(pool: &rayon::ThreadPool, sources: &[Vec<u8>], min_time: Duration) -> f64 {
    use rayon::prelude::*;

    // Non-zero, so that every page is really mapped before the timed copies.
    let mut copies: Vec<Vec<u8>> = sources.iter().map(|s| vec![1u8; s.len()]).collect();
    let mut copy_round = || {
        pool.install(|| {
            copies
                .par_iter_mut()
                .zip(sources.par_iter())
                .for_each(|(c, p)| {
                    c.par_chunks_mut(1 << 20)
                        .zip(p.par_chunks(1 << 20))
                        .for_each(|(d, s)| d.copy_from_slice(s))
                })
        })
    };
    copy_round();
    let copy = measure(min_time, copy_round);
    let bytes: usize = sources.iter().map(Vec::len).sum();
    bytes as f64 / copy.median.as_secs_f64()
}

/// The limits a workload is compared with, besides its plain copy: the AES-GCM ceiling
/// (one core sealing 64 KiB frames in a tight loop, times the cores) and the memory
/// copy bandwidth of all cores, each measured for about `min_time`.
pub fn machine_limits(min_time: Duration) -> Result<MachineLimits, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .build()
        .map_err(|e| Error::Resource {
            what: "the benchmark's thread pool",
            reason: e.to_string(),
        })?;
    let cores = pool.current_num_threads();
    let one_core = aead_ceiling(
        AeadBackend::default(),
        stream::DEFAULT_FRAME_LENGTH,
        min_time,
    );
    let sources: Vec<Vec<u8>> = (0..cores * 2)
        .map(|i| vec![(i as u8) | 0x5A; 32 << 20])
        .collect();
    Ok(MachineLimits {
        cores,
        aead_one_core_mb_per_s: one_core / 1e6,
        aead_all_cores_mb_per_s: one_core * cores as f64 / 1e6,
        memory_copy_mb_per_s: copy_bandwidth(&pool, &sources, min_time) / 1e6,
    })
}

/// What the machine can do at most, whatever is sealed: see [`machine_limits`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct MachineLimits {
    /// Threads of the pool the ceilings ran on: one per core.
    pub cores: usize,
    /// One core sealing 64 KiB frames with the default backend, MB (10^6) per second.
    pub aead_one_core_mb_per_s: f64,
    /// That times `cores`.
    pub aead_all_cores_mb_per_s: f64,
    /// All cores copying 32 MiB buffers, MB per second.
    pub memory_copy_mb_per_s: f64,
}

/// Timed rounds of one operation.
struct Rounds {
    /// How many rounds ran.
    count: u64,
    /// The median round's duration.
    median: Duration,
    /// CPU time the whole process used during the rounds, where the OS tells.
    cpu: Option<Duration>,
}

/// Runs `op` until `min_time` has passed (and at least five times), timing each run.
fn measure(min_time: Duration, mut op: impl FnMut()) -> Rounds {
    let cpu_start = process_cpu_time();
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || start.elapsed() < min_time {
        let t = Instant::now();
        op();
        times.push(t.elapsed());
    }
    let cpu = cpu_start
        .zip(process_cpu_time())
        .map(|(a, b)| b.saturating_sub(a));
    times.sort_unstable();
    // At least five runs, so the median exists.
    Rounds {
        count: times.len() as u64,
        median: times[times.len() / 2],
        cpu: cpu.filter(|t| !t.is_zero()),
    }
}

/// CPU time used so far by all the threads of this process: the first field of each
/// thread's `/proc/self/task/*/schedstat` (nanoseconds on a CPU). `None` elsewhere than
/// Linux. Threads that exit between two readings drop out of the difference, so callers
/// only compare readings while the pool's threads are alive.
fn process_cpu_time() -> Option<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

/// [`measure`] for an operation that may fail: stops at the first error.
fn measure_fallible(
    min_time: Duration,
    mut op: impl FnMut() -> Result<(), Error>,
) -> Result<Rounds, Error> {
    let mut failure = None;
    let rounds = measure(min_time, || {
        if failure.is_none()
            && let Err(e) = op()
        {
            failure = Some(e);
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(rounds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_every_figure_and_round_trips() {
        let config = BenchConfig {
            message_size: 100_000,
            frame_length: 4096,
            threads: 2,
            min_time: Duration::from_millis(1),
            ..Default::default()
        };
        let r = seal_throughput(&config).unwrap();
        assert_eq!((r.threads, r.messages_per_round), (2, (64 << 20) / 100_000));
        for figure in [
            r.seal_bytes_per_sec,
            r.open_bytes_per_sec,
            r.single_core_ceiling_bytes_per_sec,
            r.parallel_ceiling_bytes_per_sec,
            r.copy_bytes_per_sec,
        ] {
            assert!(figure.is_finite() && figure > 0.0, "{r:#?}");
        }
        assert_eq!(
            r.ceiling_bytes_per_sec,
            2.0 * r.single_core_ceiling_bytes_per_sec
        );
        let text = r.to_string();
        assert!(text.contains("% of the ceiling"), "{text}");
        assert!(serde_json::to_value(&r).unwrap()["seal_ratio"].is_f64());
    }
}
