//! The AWS Encryption SDK message format: a pure codec.
//!
//! Bytes in, structs out; no I/O, no keys. The stream layer (`crate::stream`) drives these
//! functions over readers and writers, and the crypto layer supplies the tags.

mod body;
mod codec;
mod context;
mod header;
mod suite;

pub use body::{
    BodyAad, ContentKind, FINAL_FRAME_MARKER, FINAL_FRAME_OVERHEAD, FrameHeader, FrameStart,
    MAX_NON_FRAMED_CONTENT, REGULAR_FRAME_OVERHEAD, SingleBlockHeader, decode_footer,
    encode_footer, frame_iv,
};
pub use context::{EncryptionContext, PUBLIC_KEY_CONTEXT_KEY, RESERVED_PREFIX};
pub use header::{
    ContentType, EncryptedDataKey, Header, HeaderAuth, HeaderBody, HeaderTemplate, IV_LEN, TAG_LEN,
};
pub use suite::{AlgorithmSuite, HeaderSuite, Kdf, MessageVersion, SignatureCurve};

/// The largest frame length sealpipe writes, and the default upper bound on read.
/// Python's ESDK rejects anything larger, so staying under it keeps messages portable.
pub const MAX_FRAME_LENGTH: u32 = i32::MAX as u32;

/// Bounds applied while decoding untrusted messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// More encrypted data keys than this fail as soon as the count is read. Each one
    /// may cost a KMS call, so a hostile message could otherwise buy many.
    pub max_encrypted_data_keys: u16,
    /// A header longer than this is rejected before it is fully read.
    pub max_header_len: usize,
    /// Frame lengths above this are rejected; it also bounds non-framed content, which
    /// must be held in memory whole before its tag can be checked.
    pub max_frame_length: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            // Real messages carry one key per wrapping key: a handful.
            max_encrypted_data_keys: 16,
            // The context is at most 64 KiB; 16 EDKs of KMS size are a few KiB.
            max_header_len: 1 << 20,
            max_frame_length: MAX_FRAME_LENGTH,
        }
    }
}

/// Why bytes could not be decoded as an ESDK message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended early; at least `needed` bytes in total are required.
    #[error("message is truncated (needed at least {needed} bytes)")]
    Truncated {
        /// Total bytes needed from the start of the structure.
        needed: usize,
    },
    /// The first byte is not a known version. Unlike an unknown suite, this cannot be
    /// decoded into a header: the version decides the layout of everything after it, so
    /// nothing but the byte itself can be reported.
    #[error("not an ESDK message: unknown version byte 0x{0:02X}")]
    UnsupportedVersion(u8),
    /// The header lists more encrypted data keys than allowed.
    #[error("message has {count} encrypted data keys; the limit is {max}")]
    TooManyEncryptedDataKeys {
        /// Count in the header.
        count: u16,
        /// Configured limit.
        max: u16,
    },
    /// The header is longer than allowed.
    #[error("header is longer than the limit of {max} bytes")]
    HeaderTooLong {
        /// Configured limit.
        max: usize,
    },
    /// A frame (or the non-framed content) is longer than allowed.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLong {
        /// Declared length.
        len: u64,
        /// Configured limit.
        max: u32,
    },
    /// A field breaks the format's rules.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Why a structure could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A variable-length field does not fit its length prefix.
    #[error("{what} is {len} bytes; the format allows at most {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Fields are inconsistent with each other.
    #[error("cannot encode header: {0}")]
    Invalid(&'static str),
}
