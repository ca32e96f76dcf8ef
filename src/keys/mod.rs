//! Keyrings: who wraps and unwraps data keys.
//!
//! A keyring sees materials on the way in (encrypt: generate or wrap the data key) and
//! the header's encrypted data keys on the way out (decrypt: recover the data key).
//! Keyring calls are asynchronous because the AWS KMS keyring is a network client;
//! the local keyrings complete immediately.

mod kms;
mod materials;
mod multi;
mod pool;
mod raw_aes;
mod rewrap;

use std::future::Future;
use std::pin::Pin;

pub use kms::{
    DiscoveryFilter, KMS_PROVIDER_ID, KmsArn, KmsClients, KmsContext, KmsDiscoveryKeyring,
    KmsKeyring, KmsStats,
};
pub use materials::{
    DecryptionMaterials, EncryptionMaterials, decryption_materials, encryption_materials,
};
pub use multi::MultiKeyring;
pub use pool::{DataKeyPool, DecryptCache, PoolLimits, PoolStats};
pub use raw_aes::{RawAesKeyring, raw_aes_key_name};
pub use rewrap::{KeepPolicy, Rewrapped, Rewrapper, data_key_fingerprint};

use crate::crypto::DataKey;
use crate::format::{AlgorithmSuite, EncryptedDataKey, EncryptionContext};

/// What a keyring call returns.
pub type KeyringFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KeyringError>> + Send + 'a>>;

/// What a keyring is asked to unwrap.
#[derive(Debug)]
pub struct DecryptRequest<'a> {
    /// The message's suite; the recovered key must be `suite.key_len` bytes.
    pub suite: AlgorithmSuite,
    /// The full encryption context: the header's plus any reproduced pairs.
    pub context: &'a EncryptionContext,
    /// The header's encrypted data keys, in header order.
    pub encrypted_data_keys: &'a [EncryptedDataKey],
}

/// Wraps and unwraps data keys.
pub trait Keyring: Send + Sync + std::fmt::Debug {
    /// Adds an encrypted data key to `materials`, first generating the data key if there
    /// is none yet (the generator role).
    fn on_encrypt<'a>(
        &'a self,
        materials: EncryptionMaterials,
    ) -> KeyringFuture<'a, EncryptionMaterials>;

    /// Recovers the data key from one of the encrypted data keys. `Ok(None)` means none
    /// of them is this keyring's; `Err` means one was, but unwrapping it failed.
    fn on_decrypt<'a>(
        &'a self,
        request: &'a DecryptRequest<'a>,
    ) -> KeyringFuture<'a, Option<DataKey>>;

    /// Recovers the data key of an object the S3 Encryption Client wrote, from its
    /// envelope. `Ok(None)` means the envelope's wrap is not one this keyring does.
    fn on_decrypt_s3ec<'a>(
        &'a self,
        envelope: &'a crate::s3ec::Envelope,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        let _ = envelope;
        Box::pin(async { Ok(None) })
    }

    /// A short description for messages and reports, e.g. `raw-aes:ns:name`.
    fn describe(&self) -> String;
}

/// Why a keyring failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A key could not wrap the data key.
    #[error("{keyring}: cannot wrap the data key: {reason}")]
    Wrap {
        /// Which keyring.
        keyring: String,
        /// Why.
        reason: String,
    },
    /// An encrypted data key that belongs to this keyring did not unwrap.
    #[error("{keyring}: cannot unwrap the data key: {reason}")]
    Unwrap {
        /// Which keyring.
        keyring: String,
        /// Why.
        reason: String,
        /// Some key failed in a way that may pass (throttled, timed out).
        transient: bool,
    },
    /// No keyring could recover the data key.
    #[error("no configured key can decrypt this message; it was encrypted for: {available}{tried}")]
    NoMatchingKey {
        /// The encrypted data keys' providers, for the user to compare with their keys.
        available: String,
        /// Errors from keys that matched but failed, if any.
        tried: String,
        /// One of those failures may pass (throttled, timed out): the same message
        /// may decrypt later.
        transient: bool,
    },
    /// A KMS call failed.
    #[error("KMS {action} with key {key} failed: {code}: {message}")]
    Kms {
        /// The KMS action, e.g. `GenerateDataKey`.
        action: &'static str,
        /// The key identifier or ARN used.
        key: String,
        /// The KMS error code, e.g. `AccessDeniedException`.
        code: String,
        /// KMS's message and what to check.
        message: String,
        /// Throttling, a timeout or a KMS-side fault that outlasted the retries: the
        /// same call may succeed later.
        transient: bool,
    },
    /// The random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(#[from] getrandom::Error),
}

impl KeyringError {
    /// Whether the same call may succeed later: a KMS call throttled, timed out or
    /// failed on the service's side after its retries.
    pub fn is_transient(&self) -> bool {
        match self {
            KeyringError::Kms { transient, .. }
            | KeyringError::Unwrap { transient, .. }
            | KeyringError::NoMatchingKey { transient, .. } => *transient,
            KeyringError::Wrap { .. } | KeyringError::Random(_) => false,
        }
    }
}

/// The key that wrapped an EDK: the KMS key ARN, or `namespace/key-name` for raw AES
/// (any other provider: `provider-id/provider-info`). These bytes come from the
/// message, so they are escaped: a crafted header cannot put control characters or
/// line breaks into an error line or a report.
pub fn wrapping_key_name(edk: &EncryptedDataKey) -> String {
    let info = raw_aes::raw_aes_key_name(&edk.provider_info).unwrap_or(&edk.provider_info);
    let info = crate::escape::bytes(info);
    if edk.provider_id == kms::KMS_PROVIDER_ID {
        info
    } else {
        format!("{}/{info}", crate::escape::text(&edk.provider_id))
    }
}

/// A readable list of an EDK list's providers: `namespace/key-name` or the KMS ARN.
pub fn describe_encrypted_data_keys(edks: &[EncryptedDataKey]) -> String {
    edks.iter()
        .map(wrapping_key_name)
        .collect::<Vec<_>>()
        .join(", ")
}
