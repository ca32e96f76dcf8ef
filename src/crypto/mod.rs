//! Cryptographic primitives: AES-GCM backends, key derivation and commitment, ECDSA
//! footers, and zeroizing key types. Nothing here knows the message layout.

mod aead;
mod kdf;
mod secret;
mod signature;

pub use aead::{AeadBackend, AeadKey, AuthFailed};
pub use kdf::{MessageKeys, commitment_matches, derive_message_keys};
pub use secret::{DataKey, Secret32};
pub use signature::{MessageHasher, SignatureError, SigningKey, VerifyingKey};

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}
