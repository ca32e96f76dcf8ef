//! Throughput measurement in memory, shared by `sealpipe bench` and `benches/seal.rs`.
//!
//! The figure that matters is the ratio between sealing whole messages on all cores and
//! the *AES-GCM ceiling*: one core sealing frames in a tight loop with the same backend,
//! times the number of cores. Everything a message adds on top of raw AES-GCM (framing,
//! copies, scheduling, the header) shows up as the gap between the two.
//!
//! A second reference is the *copy bandwidth*: all cores copying the same number of
//! bytes from one buffer to another. Writing a message from a plaintext buffer moves at
//! least those bytes through memory, so when AES-GCM is faster than memory (VAES on a
//! small VM) the copy bandwidth, not the AES-GCM ceiling, is the real limit.
//!
//! Small messages have few frames, so one message cannot keep every core busy; like the
//! pipeline, the benchmark then seals many messages at once (one round is at least
//! 64 MiB of plaintext).

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;
use crate::crypto::{AeadBackend, AeadKey, DataKey};
use crate::format::{AlgorithmSuite, BodyAad, ContentKind, EncryptionContext, frame_iv};
use crate::keys::{DecryptionMaterials, EncryptionMaterials, RawAesKeyring, encryption_materials};
use crate::stream::{self, DecryptOptions, EncryptOptions};

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
        )
    }
}

/// Bytes per second one core seals with `aead`, frame after frame, in place.
pub fn aead_ceiling(aead: AeadBackend, frame_length: u32, min_time: Duration) -> f64 {
    let key = AeadKey::new(aead, &[7u8; 32]);
    let message_id = [1u8; 32];
    let l = frame_length as usize;
    // About 1 MiB of frames, reused, so the loop measures AES-GCM rather than memory.
    let frames = (1 << 20) / l.max(1) + 1;
    let mut buf = vec![0x5Au8; l];
    let mut seq = 1u32;
    let (iterations, elapsed) = measure(min_time, || {
        for _ in 0..frames {
            let aad = BodyAad::new(&message_id, ContentKind::Frame, seq, l as u64);
            std::hint::black_box(key.seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut buf));
            seq = seq.wrapping_add(1).max(1);
        }
    });
    (iterations * frames as u64 * l as u64) as f64 / elapsed.as_secs_f64()
}

/// Materials for benchmarks: a random Raw AES wrapping key, as a job would have.
pub fn bench_materials(suite: AlgorithmSuite) -> Result<EncryptionMaterials, Error> {
    let wrapping = DataKey::random(32)?;
    let keyring = RawAesKeyring::new(
        "sealpipe-bench",
        "bench",
        wrapping.as_bytes().to_vec().into(),
    )
    .map_err(Error::Config)?;
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
        std::task::Poll::Pending => Err(Error::Config("the raw AES keyring suspended".into())),
    }
}

/// Plaintext per measured round: small messages are sealed many at a time.
const ROUND_BYTES: usize = 64 << 20;

/// Seals (and opens) `config.message_size`-byte messages on a dedicated pool and
/// compares with the AES-GCM ceiling and the copy bandwidth.
pub fn seal_throughput(config: &BenchConfig) -> Result<BenchResult, Error> {
    use rayon::prelude::*;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the thread pool: {e}")))?;
    let threads = pool.current_num_threads();
    let materials = bench_materials(config.suite)?;
    let options = EncryptOptions {
        frame_length: config.frame_length,
        aead: config.aead,
        ..Default::default()
    };
    let per_round = (ROUND_BYTES / config.message_size.max(1)).max(1);
    let plaintexts: Vec<Vec<u8>> = (0..per_round)
        // Never zero: calloc'd zero pages all map to one physical page and read for free.
        .map(|i| vec![(i as u8) | 0x5A; config.message_size])
        .collect();
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
    let (seal_rounds, seal_time) = measure_fallible(config.min_time, seal_round)?;

    let decrypt_options = DecryptOptions {
        aead: config.aead,
        ..Default::default()
    };
    let data_key = materials
        .data_key
        .clone()
        .expect("materials carry a data key");
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
    let (open_rounds, open_time) = measure_fallible(config.min_time, open_round)?;

    let mut copies: Vec<Vec<u8>> = vec![vec![0u8; config.message_size]; per_round];
    let (copy_rounds, copy_time) = measure(config.min_time / 2, || {
        pool.install(|| {
            copies
                .par_iter_mut()
                .zip(plaintexts.par_iter())
                .for_each(|(c, p)| {
                    c.par_chunks_mut(1 << 20)
                        .zip(p.par_chunks(1 << 20))
                        .for_each(|(d, s)| d.copy_from_slice(s))
                })
        })
    });

    let single = aead_ceiling(config.aead, config.frame_length, config.min_time);
    let ceiling = single * threads as f64;
    let round = (per_round * config.message_size) as f64;
    let rate = |rounds: u64, time: Duration| rounds as f64 * round / time.as_secs_f64();
    let (seal, open, copy) = (
        rate(seal_rounds, seal_time),
        rate(open_rounds, open_time),
        rate(copy_rounds, copy_time),
    );
    Ok(BenchResult {
        message_size: config.message_size,
        frame_length: config.frame_length,
        aead: config.aead.to_string(),
        suite: config.suite.to_string(),
        threads,
        seal_bytes_per_sec: seal,
        open_bytes_per_sec: open,
        single_core_ceiling_bytes_per_sec: single,
        ceiling_bytes_per_sec: ceiling,
        seal_ratio: seal / ceiling,
        open_ratio: open / ceiling,
        copy_bytes_per_sec: copy,
        seal_to_copy_ratio: seal / copy,
        messages_per_round: per_round,
        seal_iterations: seal_rounds * per_round as u64,
    })
}

/// [`measure`] for an operation that can fail; the first failure ends the measurement.
fn measure_fallible(
    min_time: Duration,
    mut op: impl FnMut() -> Result<(), Error>,
) -> Result<(u64, Duration), Error> {
    let mut failure = None;
    let measured = measure(min_time, || {
        if failure.is_none()
            && let Err(e) = op()
        {
            failure = Some(e);
        }
    });
    failure.map_or(Ok(measured), Err)
}

/// Runs `op` until `min_time` has passed (at least three times); returns the count and
/// the time taken.
fn measure(min_time: Duration, mut op: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0u64;
    while n < 3 || start.elapsed() < min_time {
        op();
        n += 1;
    }
    (n, start.elapsed())
}
