//! AES-GCM behind one narrow seam, with two interchangeable backends.
//!
//! `ring` is the fast default (assembly with AES-NI/VAES and CLMUL). RustCrypto's
//! `aes-gcm` is the portable backend and the only one with AES-192, which three legacy
//! suites need; when `ring` is chosen for a 24-byte key, `aes-gcm` serves that key.
//! Both produce identical bytes (the differential test in `tests/` checks it).

use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, Aes128Gcm, Aes256Gcm, AesGcm, KeyInit, Nonce, Tag};

use crate::format::{IV_LEN, TAG_LEN};

/// Which AES-GCM implementation to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AeadBackend {
    /// `ring`: hand-written assembly; fastest on x86-64 and aarch64.
    #[default]
    Ring,
    /// RustCrypto `aes-gcm`: pure Rust, zeroizes its key schedule on drop.
    RustCrypto,
}

impl std::str::FromStr for AeadBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ring" => Ok(Self::Ring),
            "rustcrypto" => Ok(Self::RustCrypto),
            other => Err(format!(
                "unknown AEAD backend {other:?} (expected ring or rustcrypto)"
            )),
        }
    }
}

impl std::fmt::Display for AeadBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ring => "ring",
            Self::RustCrypto => "rustcrypto",
        })
    }
}

/// The tag did not verify: the ciphertext, AAD, IV or key is not the one sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authentication tag mismatch")]
pub struct AuthFailed;

type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, U12>;

enum Cipher {
    Ring(Box<ring::aead::LessSafeKey>),
    Aes128(Box<Aes128Gcm>),
    Aes192(Box<Aes192Gcm>),
    Aes256(Box<Aes256Gcm>),
}

/// An AES-GCM key ready to seal and open, shareable across threads.
pub struct AeadKey(Cipher);

impl AeadKey {
    /// Prepares `key` (16, 24 or 32 bytes) for the backend. Panics on other lengths:
    /// callers pass suite-derived keys whose length the suite fixes.
    pub fn new(backend: AeadBackend, key: &[u8]) -> Self {
        let cipher = match (backend, key.len()) {
            (AeadBackend::Ring, 16 | 32) => {
                let alg = if key.len() == 16 {
                    &ring::aead::AES_128_GCM
                } else {
                    &ring::aead::AES_256_GCM
                };
                let unbound =
                    ring::aead::UnboundKey::new(alg, key).expect("key length checked above");
                Cipher::Ring(Box::new(ring::aead::LessSafeKey::new(unbound)))
            }
            (_, 16) => Cipher::Aes128(Box::new(
                Aes128Gcm::new_from_slice(key).expect("length checked"),
            )),
            (_, 24) => Cipher::Aes192(Box::new(
                Aes192Gcm::new_from_slice(key).expect("length checked"),
            )),
            (_, 32) => Cipher::Aes256(Box::new(
                Aes256Gcm::new_from_slice(key).expect("length checked"),
            )),
            (_, n) => panic!("AES-GCM key of {n} bytes"),
        };
        Self(cipher)
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(&self, iv: &[u8; IV_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::<U12>::from(*iv);
        // Both backends only fail for inputs longer than GCM allows (2^36 - 32 bytes),
        // which the format layer never produces.
        const TOO_LONG: &str = "AES-GCM input within the format's limits";
        match &self.0 {
            Cipher::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(*iv),
                        ring::aead::Aad::from(aad),
                        buf,
                    )
                    .expect(TOO_LONG);
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                out
            }
            Cipher::Aes128(c) => c
                .encrypt_inout_detached(&nonce, aad, buf.into())
                .expect(TOO_LONG)
                .into(),
            Cipher::Aes192(c) => c
                .encrypt_inout_detached(&nonce, aad, buf.into())
                .expect(TOO_LONG)
                .into(),
            Cipher::Aes256(c) => c
                .encrypt_inout_detached(&nonce, aad, buf.into())
                .expect(TOO_LONG)
                .into(),
        }
    }

    /// Verifies `tag` and decrypts `buf` in place. On failure `buf` holds no plaintext
    /// that a caller should use (`ring` leaves it unspecified; callers discard it).
    pub fn open_in_place(
        &self,
        iv: &[u8; IV_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        let nonce = Nonce::<U12>::from(*iv);
        let rc_tag = Tag::from(*tag);
        match &self.0 {
            Cipher::Ring(k) => k
                .open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(*iv),
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::from(*tag),
                    buf,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| AuthFailed),
            Cipher::Aes128(c) => c
                .decrypt_inout_detached(&nonce, aad, buf.into(), &rc_tag)
                .map_err(|_| AuthFailed),
            Cipher::Aes192(c) => c
                .decrypt_inout_detached(&nonce, aad, buf.into(), &rc_tag)
                .map_err(|_| AuthFailed),
            Cipher::Aes256(c) => c
                .decrypt_inout_detached(&nonce, aad, buf.into(), &rc_tag)
                .map_err(|_| AuthFailed),
        }
    }
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}
