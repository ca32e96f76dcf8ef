//! Encrypting and decrypting whole messages over readers and writers.
//!
//! # Parallel frames, sequential bytes
//!
//! A message's frames are independent AES-GCM invocations (each has its own IV and AAD),
//! so they can be sealed or opened on any thread in any order; only their position in
//! the output is fixed. Both directions therefore work in *batches*: a batch of frames is
//! laid out at a fixed stride in one buffer (every regular frame has the same size), the
//! rayon pool seals or opens the slots in parallel, and the buffer is then written in
//! order. Output bytes do not depend on the number of threads.
//!
//! The final frame is always held back: the writer only knows a frame is the last one
//! when the input ends ([`EncryptingWriter::finish`]); the reader releases the last
//! frame of a signed message only once the signature verifies. The writer's final frame
//! is always shorter than a full frame (empty for exact multiples), the one form every
//! ESDK reads; the reader accepts a full final frame too.

mod decrypt;
mod encrypt;
mod rewrap;

pub(crate) use decrypt::check_policy;
pub use decrypt::{HeaderStep, MessageDecryptor, decrypt_with, header_step, read_header};
pub use encrypt::{EncryptSummary, EncryptingWriter, encrypt_stream, encrypt_to_vec};
pub use rewrap::{HeaderNonce, check_rewrappable, rewrap_header};

use crate::crypto::AeadBackend;
use crate::format::{DecodeLimits, MAX_FRAME_LENGTH};

/// Which suites encryption may use and decryption may accept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CommitmentPolicy {
    /// Write key-committing messages; read only key-committing messages.
    #[default]
    RequireEncryptRequireDecrypt,
    /// Write key-committing messages; also read legacy (v1) messages.
    RequireEncryptAllowDecrypt,
}

impl CommitmentPolicy {
    /// Whether a message in `suite` may be decrypted.
    pub fn allows_decrypt(self, suite: &crate::format::AlgorithmSuite) -> bool {
        suite.is_committing() || self == Self::RequireEncryptAllowDecrypt
    }
}

impl std::fmt::Display for CommitmentPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RequireEncryptRequireDecrypt => "require-encrypt-require-decrypt",
            Self::RequireEncryptAllowDecrypt => "require-encrypt-allow-decrypt",
        })
    }
}

impl std::str::FromStr for CommitmentPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "require-encrypt-require-decrypt" => Ok(Self::RequireEncryptRequireDecrypt),
            "require-encrypt-allow-decrypt" => Ok(Self::RequireEncryptAllowDecrypt),
            other => Err(format!(
                "unknown commitment policy {other:?} (expected require-encrypt-require-decrypt \
                 or require-encrypt-allow-decrypt)"
            )),
        }
    }
}

/// Default plaintext bytes per frame: large enough that the 32 bytes of framing cost
/// 0.05%, small enough that a batch spreads over many cores.
pub const DEFAULT_FRAME_LENGTH: u32 = 64 * 1024;

/// Default plaintext bytes sealed or opened per parallel batch. Small enough that a
/// batch stays in cache between being read, sealed or opened, and written out (a batch
/// that spills to memory costs extra passes over DRAM); see [`frames_per_batch`] for the
/// lower bound that keeps every thread busy.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;

/// Upper bound of a batch when frames are large: memory, not parallelism, decides.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Frames per batch: about `batch_bytes` of plaintext, but at least two frames per
/// thread of the current rayon pool so large frames still spread over every core, as
/// long as that stays under 64 MiB. A frame must be held whole to be sealed or opened,
/// so a frame larger than that is a batch of its own.
pub(crate) fn frames_per_batch(batch_bytes: usize, frame_length: u32) -> usize {
    let frame_length = frame_length.max(1) as usize;
    let by_bytes = batch_bytes / frame_length;
    let for_threads = (2 * rayon::current_num_threads()).min(MAX_BATCH_BYTES / frame_length);
    by_bytes.max(for_threads).max(1)
}

/// How messages are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptOptions {
    /// Plaintext bytes per frame, 1 ..= 2^31 - 1.
    pub frame_length: u32,
    /// AES-GCM implementation.
    pub aead: AeadBackend,
    /// Plaintext bytes per parallel batch (rounded to whole frames, at least one).
    pub batch_bytes: usize,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        Self {
            frame_length: DEFAULT_FRAME_LENGTH,
            aead: AeadBackend::default(),
            batch_bytes: DEFAULT_BATCH_BYTES,
        }
    }
}

impl EncryptOptions {
    /// Checks the options before any object is touched.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.frame_length == 0 || self.frame_length > MAX_FRAME_LENGTH {
            return Err(crate::Error::Config(format!(
                "frame length must be between 1 and {MAX_FRAME_LENGTH} bytes, not {}",
                self.frame_length
            )));
        }
        Ok(())
    }

    fn frames_per_batch(&self) -> usize {
        frames_per_batch(self.batch_bytes, self.frame_length)
    }
}

/// How messages are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecryptOptions {
    /// Which suites are acceptable.
    pub commitment_policy: CommitmentPolicy,
    /// Bounds against hostile input.
    pub limits: DecodeLimits,
    /// AES-GCM implementation.
    pub aead: AeadBackend,
}

/// Work below this many bytes per rayon task is not worth splitting further.
const MIN_BYTES_PER_TASK: usize = 64 * 1024;

/// Messages with less plaintext than this are sealed ([`encrypt_to_vec`]) and, with
/// less message than this, opened ([`MessageDecryptor::decrypt`]) on the calling
/// thread alone, without the rayon pool: below two tasks' worth of frames the pool
/// would do the work on one thread anyway, after a hand-off and a wake-up that cost
/// more than the work. So they may run on any thread, a runtime's included.
pub const INLINE_BYTES: usize = 2 * MIN_BYTES_PER_TASK;

/// Messages being written or read in batches right now, in this process.
static BATCHED_MESSAGES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a message in [`BATCHED_MESSAGES`] while it lives.
struct Batching;

impl Batching {
    fn start() -> Self {
        BATCHED_MESSAGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        BATCHED_MESSAGES.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether a batch should go to the pool: not when at least as many messages as the
/// pool has threads are being written or read at once. Then each thread that drives a
/// message (reading, sealing or opening, writing) keeps a core busy on its own, and
/// handing every batch to the pool would only add wake-ups and waits (futex and
/// `sched_yield` time) for no extra parallelism. A message alone, or one of few, still
/// spreads over every core.
fn pool_is_worth_it() -> bool {
    BATCHED_MESSAGES.load(std::sync::atomic::Ordering::Relaxed) < rayon::current_num_threads()
}

fn min_frames_per_task(frame_length: usize) -> usize {
    (MIN_BYTES_PER_TASK / frame_length.max(1)).max(1)
}
