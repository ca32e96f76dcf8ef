//! What a job is: what it does to each object (with exactly the keys and options that
//! takes), where objects come from and go, and how many run at once.

use std::sync::Arc;
use std::time::Duration;

use super::ObjectFilter;
use crate::format::{AlgorithmSuite, EncryptionContext};
use crate::keys::{KeepPolicy, Keyring, PoolLimits};
use crate::store::{Location, S3Store};
use crate::stream::{DecryptOptions, EncryptOptions, HeaderNonce};

/// What a job does to each object, named for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plaintext in, ESDK messages out.
    Encrypt,
    /// ESDK messages in, plaintext out.
    Decrypt,
    /// ESDK messages in, new ESDK messages out: a fresh data key under the new wrapping
    /// keys, the current suite (upgrading legacy and signed messages).
    Reencrypt,
    /// ESDK messages in, nothing out: every tag and signature checked.
    Verify,
    /// ESDK messages in, the same messages out with new encrypted data keys: the data
    /// key rewrapped, the body copied unchanged.
    Rewrap,
    /// Any objects in, nothing out: what protects each (server-side encryption, ESDK
    /// suite and keys, S3 Encryption Client envelope), counted by kind.
    Scan,
}

impl Mode {
    /// Whether objects are written as ESDK messages.
    pub fn writes_messages(self) -> bool {
        matches!(self, Mode::Encrypt | Mode::Reencrypt | Mode::Rewrap)
    }
}

/// A job's keys: loaded for a run; a dry run uses none and loads none, so an unreadable
/// key file or missing credentials do not stop it.
#[derive(Clone)]
pub enum Keys {
    /// Ready to wrap or unwrap data keys.
    Loaded(Arc<dyn Keyring>),
    /// Not loaded: only a dry run may have these.
    NotLoaded,
}

/// How new messages are written.
#[derive(Clone)]
pub struct Sealing {
    /// Wraps new data keys.
    pub keys: Keys,
    /// The suite of new messages.
    pub suite: AlgorithmSuite,
    /// The encryption context bound to every message.
    pub context: EncryptionContext,
    /// Frame length, AES-GCM implementation.
    pub options: EncryptOptions,
    /// When pooled data keys are replaced.
    pub pool_limits: PoolLimits,
}

/// How existing messages are read.
#[derive(Clone)]
pub struct Opening {
    /// Unwraps data keys.
    pub keys: Keys,
    /// Commitment policy and limits.
    pub options: DecryptOptions,
    /// Context pairs a message must carry (and supplies for authenticate-only pairs).
    pub reproduced_context: EncryptionContext,
    /// How long an unwrapped data key stays cached for later messages.
    pub cache_max_age: Duration,
    /// Which format sources are in: ESDK messages, S3 Encryption Client objects, or
    /// either, told apart by metadata and first bytes.
    pub source_format: SourceFormat,
}

/// Which format a job's sources are in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceFormat {
    /// ESDK messages or S3 Encryption Client objects, each told by its metadata (and
    /// an instruction file, for an S3 object that is no ESDK message).
    #[default]
    Auto,
    /// ESDK messages only: S3EC metadata is ignored.
    Esdk,
    /// S3 Encryption Client objects only: one without envelope metadata must have an
    /// instruction file.
    S3ec,
}

impl std::str::FromStr for SourceFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "esdk" => Ok(Self::Esdk),
            "s3ec" => Ok(Self::S3ec),
            other => Err(format!(
                "unknown source format {:?} (expected auto, esdk or s3ec)",
                crate::escape::text(other)
            )),
        }
    }
}

/// How messages get their new encrypted data keys.
#[derive(Clone)]
pub struct Rewrapping {
    /// Wraps each data key under the new keys; `None` when the rewrap only drops keys.
    pub new_keys: Option<Keys>,
    /// Which existing encrypted data keys stay.
    pub keep: KeepPolicy,
    /// The new keys' names as sealpipe's marker records them (key ARNs, raw AES
    /// `namespace/name`), when every key reference says its name (aliases and key IDs
    /// name no ARN until KMS answers). A re-run skips a destination made from the same
    /// source that already carries all of them, and an in-place one skips, before any
    /// KMS call, a message already wrapped by exactly the keys the rewrap would leave.
    pub expected_keys: Option<Vec<String>>,
    /// Signed messages cannot be rewrapped: with this they are re-encrypted instead
    /// (a fresh data key under the new keys), else they fail.
    pub reencrypt_signed: Option<Sealing>,
    /// S3 objects larger than this are copied by S3 (UploadPartCopy) rather than read;
    /// smaller ones are rewritten whole.
    pub copy_above: u64,
    /// Whether v2 headers may be tagged again under their fixed nonce (see
    /// [`HeaderNonce`]); v1 headers always get a fresh one.
    pub header_nonce: HeaderNonce,
}

/// Where a job that writes outputs puts them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Into this file, directory, S3 object or prefix, mirroring the source's names.
    To(Location),
    /// Over each S3 source object, conditionally on the ETag that was read.
    InPlace,
}

/// What a job does to each object, with what that takes: keys and options to read
/// messages, to write them, or both, and where outputs go (`verify` writes none).
#[derive(Clone)]
pub enum Work {
    /// Plaintext in, messages out.
    Encrypt {
        /// How the messages are written.
        to: Sealing,
        /// Where.
        output: Output,
    },
    /// Messages in, plaintext out.
    Decrypt {
        /// How the messages are read.
        from: Opening,
        /// Where the plaintext goes.
        output: Output,
    },
    /// Messages in, new messages out.
    Reencrypt {
        /// How the old messages are read.
        from: Opening,
        /// How the new ones are written.
        to: Sealing,
        /// Where.
        output: Output,
    },
    /// Messages in, nothing out.
    Verify {
        /// How the messages are read.
        from: Opening,
    },
    /// Objects in, an inventory of their protection out; no keys.
    Scan,
    /// Messages in, the same messages with new encrypted data keys out.
    Rewrap {
        /// How the old messages are read (the old keys unwrap).
        from: Opening,
        /// The new keys, and what stays.
        to: Rewrapping,
        /// Where.
        output: Output,
    },
}

impl Work {
    /// The mode, as reports name it.
    pub fn mode(&self) -> Mode {
        match self {
            Work::Encrypt { .. } => Mode::Encrypt,
            Work::Decrypt { .. } => Mode::Decrypt,
            Work::Reencrypt { .. } => Mode::Reencrypt,
            Work::Verify { .. } => Mode::Verify,
            Work::Rewrap { .. } => Mode::Rewrap,
            Work::Scan => Mode::Scan,
        }
    }

    /// How messages are written, for jobs that write them.
    pub fn sealing(&self) -> Option<&Sealing> {
        match self {
            Work::Encrypt { to, .. } | Work::Reencrypt { to, .. } => Some(to),
            Work::Rewrap { to, .. } => to.reencrypt_signed.as_ref(),
            Work::Decrypt { .. } | Work::Verify { .. } | Work::Scan => None,
        }
    }

    /// How messages are read, for jobs that read them.
    pub fn opening(&self) -> Option<&Opening> {
        match self {
            Work::Decrypt { from, .. }
            | Work::Verify { from }
            | Work::Reencrypt { from, .. }
            | Work::Rewrap { from, .. } => Some(from),
            Work::Encrypt { .. } | Work::Scan => None,
        }
    }

    /// Where outputs go; `None` for `verify` and `scan`.
    pub fn output(&self) -> Option<&Output> {
        match self {
            Work::Encrypt { output, .. }
            | Work::Decrypt { output, .. }
            | Work::Reencrypt { output, .. }
            | Work::Rewrap { output, .. } => Some(output),
            Work::Verify { .. } | Work::Scan => None,
        }
    }
}

/// Where a job's objects come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A file, directory, S3 object or S3 prefix.
    Location(Location),
    /// A CSV manifest (local or on S3) of `bucket,key[,version_id]`.
    Manifest(Location),
    /// S3 objects handed over one at a time, as S3 Batch Operations invokes a Lambda
    /// function with its tasks: a [`StandingJob`](super::StandingJob) runs them, each as
    /// a manifest entry would be.
    Tasks,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Location(location) => write!(f, "{location}"),
            Source::Manifest(location) => write!(f, "manifest {location}"),
            Source::Tasks => f.write_str("S3 Batch Operations tasks"),
        }
    }
}

/// A job: what it does, a source, a destination, and how it runs.
#[derive(Clone)]
pub struct Job {
    /// What is done to each object.
    pub work: Work,
    /// Where objects come from.
    pub source: Source,
    /// Which listed objects are processed.
    pub filter: ObjectFilter,
    /// This worker's share of them, when the job is split among several.
    pub shard: Option<super::Shard>,
    /// Objects processed at once (1 to [`MAX_CONCURRENCY`](super::MAX_CONCURRENCY)).
    pub concurrency: usize,
    /// Plan only: list, check what is done, count; write nothing, call no keyring.
    pub dry_run: bool,
    /// Stop starting objects after the first failure.
    pub fail_fast: bool,
    /// S3 access, when the source, destination or manifest is on S3.
    pub s3: Option<S3Store>,
}

impl Job {
    /// What is done to each object, as reports name it.
    pub fn mode(&self) -> Mode {
        self.work.mode()
    }

    /// Where outputs go, unless in place or nowhere (`verify`).
    pub fn destination(&self) -> Option<&Location> {
        match self.work.output() {
            Some(Output::To(location)) => Some(location),
            Some(Output::InPlace) | None => None,
        }
    }

    /// Whether each S3 object is replaced with its output.
    pub fn in_place(&self) -> bool {
        self.work.output() == Some(&Output::InPlace)
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("mode", &self.mode())
            .field("source", &self.source)
            .field("output", &self.work.output())
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}
