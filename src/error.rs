//! The library's error type.
//!
//! Authentication failures are deliberately terse: they say which check failed (header,
//! which frame, commitment, signature) but never echo key material or plaintext.

use crate::crypto::SignatureError;
use crate::format::{AlgorithmSuite, DecodeError, EncodeError};
use crate::keys::KeyringError;

/// Everything that can go wrong while encrypting or decrypting a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a well-formed ESDK message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A structure could not be serialized (a field is too long for its prefix).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Reading or writing failed. Not a `source`: the message already carries it, and
    /// printing the chain would say it twice.
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    /// An S3 request failed (after retries).
    #[error(transparent)]
    S3(#[from] crate::store::S3Error),
    /// A local source changed while it was read.
    #[error(transparent)]
    SourceChanged(#[from] crate::store::SourceChanged),
    /// An output would have replaced its own source (a hard link, a bind mount): it
    /// was not written.
    #[error(transparent)]
    WouldReplaceSource(#[from] crate::store::WouldReplaceSource),
    /// A store cannot do what was asked (copy a range from another kind of store).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A signed message cannot have its data keys rewrapped: the footer signature covers
    /// the header, and only the writer's private key could sign the new one.
    #[error(
        "suite {suite} signs the header in the footer, so its data keys cannot be rewrapped \
         without the writer's signing key; re-encrypt it instead (sealpipe reencrypt, or \
         rewrap --reencrypt-signed)"
    )]
    SignedMessage {
        /// The message's suite.
        suite: AlgorithmSuite,
    },
    /// A v2 message's header tag uses a fixed nonce (all zeros) under a key derived from
    /// the data key and the message ID: a second tag over a different header, the same
    /// key and nonce, lets anyone holding both headers recover the GCM authentication key
    /// of the message and forge its frames. Refused unless the caller accepts that.
    #[error(
        "suite {suite} (message format v2) computes its header tag with a fixed AES-GCM \
         nonce, so a rewrapped header would be authenticated under the same key and nonce \
         as the original: whoever holds both headers could forge this message's frames. \
         Re-encrypt it (sealpipe reencrypt), or accept that risk with \
         --allow-header-nonce-reuse (README: \"The nonce of a v2 header\")"
    )]
    HeaderNonceReuse {
        /// The message's suite.
        suite: AlgorithmSuite,
    },
    /// A rewrapped header would carry more encrypted data keys than readers accept.
    #[error(
        "the rewrapped message would carry {count} encrypted data keys; readers refuse more \
         than {max} by default"
    )]
    TooManyDataKeys {
        /// Keys the new header would carry.
        count: usize,
        /// The readers' limit.
        max: u16,
    },
    /// A rewrap would leave a message with no encrypted data key.
    #[error("{0}")]
    NoKeyLeft(String),
    /// The job was cancelled while the object was in flight.
    #[error("the job was cancelled before this object was finished")]
    Cancelled,
    /// A keyring could not produce or recover the data key.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The suite is refused by the commitment policy.
    #[error(
        "algorithm suite {suite} does not commit to its key; policy {policy} refuses it \
         (require-encrypt-allow-decrypt reads such legacy messages)"
    )]
    CommitmentPolicy {
        /// The refused suite.
        suite: AlgorithmSuite,
        /// The policy in force.
        policy: crate::CommitmentPolicy,
    },
    /// The data key does not produce the header's commitment: the message was built to
    /// decrypt differently under different keys, or it is corrupt.
    #[error("key commitment mismatch: the data key does not match the message's commitment")]
    CommitmentMismatch,
    /// The header tag did not verify.
    #[error(
        "header authentication failed (wrong key, wrong encryption context, or tampered header)"
    )]
    HeaderAuthentication,
    /// A frame's tag did not verify.
    #[error("frame {seq} failed authentication (tampered or corrupt body)")]
    FrameAuthentication {
        /// Sequence number of the frame (1 for non-framed content).
        seq: u32,
    },
    /// Frames are out of order, missing or duplicated.
    #[error("frame sequence broken: expected frame {expected}, found {found}")]
    FrameSequence {
        /// What the next frame should have been.
        expected: u64,
        /// What it was.
        found: u32,
    },
    /// The message ended early.
    #[error("message is truncated: {0}")]
    Truncated(String),
    /// Bytes follow the end of the message.
    #[error("unexpected data after the end of the message")]
    TrailingData,
    /// The footer signature is missing, malformed or wrong.
    #[error("signature: {0}")]
    Signature(#[from] SignatureError),
    /// The encryption context is not acceptable.
    #[error("encryption context: {0}")]
    Context(String),
    /// Options do not make sense together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The message would exceed a format limit (frame count, content length).
    #[error("message too large: {0}")]
    TooLarge(&'static str),
    /// An error shared by every caller that waited for the same keyring call.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
    /// Something that cannot happen did: a task of the job panicked, a benchmark's
    /// round trip came back different, a local keyring suspended. A bug in sealpipe,
    /// not a problem of configuration or input.
    #[error("internal error (a bug in sealpipe, please report it): {0}")]
    Internal(String),
    /// The operating system would not give a resource (threads for a pool).
    #[error("cannot get {what}: {reason}")]
    Resource {
        /// What was asked for.
        what: &'static str,
        /// Why the OS refused.
        reason: String,
    },
    /// The operating system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(getrandom::Error),
    /// An object of the S3 Encryption Client cannot be read.
    #[error(transparent)]
    S3ec(#[from] crate::s3ec::S3ecError),
    /// The header names an algorithm suite this build does not know. The header itself
    /// decodes (`inspect` shows it); decryption refuses it before any key is fetched.
    #[error("unsupported algorithm suite 0x{id:04X}: not one of the ESDK suites sealpipe reads")]
    UnsupportedSuite {
        /// The suite ID in the header.
        id: u16,
    },
}

impl Error {
    /// The error itself, or the one a [`Shared`](Error::Shared) wraps: what callers
    /// classify.
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(inner) => inner.root(),
            other => other,
        }
    }

    /// Whether the same work may succeed later: throttling, timeouts or service faults
    /// that outlasted the retries, or a process told to stop. What S3 Batch
    /// Operations retries (`TemporaryFailure`); everything else fails for good.
    pub fn is_transient(&self) -> bool {
        match self.root() {
            Error::S3(e) => e.transient || e.restart,
            Error::Keyring(e) => e.is_transient(),
            Error::Cancelled => true,
            _ => false,
        }
    }

    /// Whether this error means the message is not authentic (as opposed to unreadable,
    /// unsupported or an I/O problem).
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self.root(),
            Error::CommitmentMismatch
                | Error::HeaderAuthentication
                | Error::FrameAuthentication { .. }
                | Error::Signature(_)
                | Error::S3ec(crate::s3ec::S3ecError::ContentAuthentication)
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        // A local commit refuses a replacement of the source as an I/O error (that is
        // what the file system answers it with): it is its own kind of failure.
        if e.get_ref()
            .is_some_and(|inner| inner.is::<crate::store::WouldReplaceSource>())
        {
            return Error::WouldReplaceSource(crate::store::WouldReplaceSource);
        }
        Error::Io(e)
    }
}

impl From<getrandom::Error> for Error {
    fn from(e: getrandom::Error) -> Self {
        Error::Random(e)
    }
}
