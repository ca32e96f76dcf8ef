//! Reading objects the Amazon S3 Encryption Client wrote (S3EC: the Java, Go, .NET and
//! Python clients), so jobs can decrypt, verify and re-encrypt them into ESDK messages.
//!
//! Pure like [`format`](crate::format): the envelope from metadata (and instruction
//! files), and the content opened from a reader into a writer. Unwrapping the data key
//! is a keyring's ([`Keyring::on_decrypt_s3ec`](crate::keys::Keyring::on_decrypt_s3ec)),
//! fetching objects and instruction files the pipeline's.

mod content;
mod envelope;

pub use content::{ContentDecryptor, MAX_PLAINTEXT, TAG_LEN};
pub use envelope::{
    COMMITTING_SUITE_ID, Commitment, ContentCipher, Envelope, Found, GCM_IV_LEN, Generation,
    INSTRUCTION_SUFFIX, MAX_INSTRUCTION_FILE, MESSAGE_ID_LEN, Wrap, find, has_envelope_keys, strip,
    with_instruction_file,
};

/// Why an S3EC object cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3ecError {
    /// The metadata is missing a key, holds a malformed value, or mixes formats.
    #[error("S3 Encryption Client metadata: {0}")]
    Metadata(String),
    /// The instruction file is not one.
    #[error("S3 Encryption Client instruction file: {0}")]
    InstructionFile(String),
    /// A part of the format sealpipe does not read, named.
    #[error("not supported in S3 Encryption Client objects: {0}")]
    Unsupported(String),
    /// The content does not commit to its key and the policy reads only content that
    /// does.
    #[error(
        "the object is S3 Encryption Client {generation} content ({cipher}), which does not \
         commit to its key; policy {policy} refuses it (--commitment-policy \
         require-encrypt-allow-decrypt reads it)"
    )]
    NotCommitting {
        /// The envelope's generation.
        generation: Generation,
        /// Its content cipher's name.
        cipher: &'static str,
        /// The policy in force.
        policy: crate::CommitmentPolicy,
    },
    /// The stored context is not what it must be.
    #[error("S3 Encryption Client encryption context: {0}")]
    Context(String),
    /// The content's GCM tag did not verify.
    #[error(
        "the object's AES-GCM tag did not verify (tampered or corrupt content, or a data \
         key that is not this object's)"
    )]
    ContentAuthentication,
}
