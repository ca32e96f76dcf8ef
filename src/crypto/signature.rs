//! ECDSA footers: key generation, the public key in the encryption context, and
//! sign/verify over a running hash of the whole message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ecdsa_core::signature::hazmat::{PrehashSigner, PrehashVerifier};
use sha2::{Digest, Sha256, Sha384};

use crate::format::SignatureCurve;

use p256::ecdsa as ecdsa_core;

/// The running hash a signature covers: every byte before the footer.
#[derive(Clone)]
pub enum MessageHasher {
    /// For P-256 (suite 0x0214).
    Sha256(Sha256),
    /// For P-384.
    Sha384(Sha384),
}

impl MessageHasher {
    /// A fresh hasher for `curve`.
    pub fn new(curve: SignatureCurve) -> Self {
        match curve {
            SignatureCurve::P256 => Self::Sha256(Sha256::new()),
            SignatureCurve::P384 => Self::Sha384(Sha384::new()),
        }
    }

    /// Feeds message bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Sha384(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::Sha384(h) => h.finalize().to_vec(),
        }
    }
}

/// The signature did not verify, or the key or signature could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(&'static str);

/// A per-message-set ECDSA signing key. Its scalar is zeroized on drop by the curve
/// crates.
#[derive(Clone)]
pub enum SigningKey {
    /// P-256.
    P256(p256::ecdsa::SigningKey),
    /// P-384.
    P384(p384::ecdsa::SigningKey),
}

impl SigningKey {
    /// A fresh random key on `curve`.
    pub fn generate(curve: SignatureCurve) -> Result<Self, getrandom::Error> {
        // Rejection sampling over uniformly random field-sized strings: a draw outside
        // [1, n) is vanishingly rare and simply retried.
        loop {
            let key = match curve {
                SignatureCurve::P256 => {
                    let mut b = zeroize::Zeroizing::new([0u8; 32]);
                    getrandom::fill(&mut *b)?;
                    p256::ecdsa::SigningKey::from_slice(&*b)
                        .ok()
                        .map(Self::P256)
                }
                SignatureCurve::P384 => {
                    let mut b = zeroize::Zeroizing::new([0u8; 48]);
                    getrandom::fill(&mut *b)?;
                    p384::ecdsa::SigningKey::from_slice(&*b)
                        .ok()
                        .map(Self::P384)
                }
            };
            if let Some(key) = key {
                return Ok(key);
            }
        }
    }

    /// The curve of this key.
    pub fn curve(&self) -> SignatureCurve {
        match self {
            Self::P256(_) => SignatureCurve::P256,
            Self::P384(_) => SignatureCurve::P384,
        }
    }

    /// The value stored under `aws-crypto-public-key`: Base64 of the compressed point.
    pub fn public_key_base64(&self) -> String {
        let point = match self {
            Self::P256(k) => k.verifying_key().to_sec1_point(true).as_bytes().to_vec(),
            Self::P384(k) => k.verifying_key().to_sec1_point(true).as_bytes().to_vec(),
        };
        BASE64.encode(point)
    }

    /// Signs the hashed message; returns the DER signature.
    pub fn sign(&self, hasher: MessageHasher) -> Result<Vec<u8>, SignatureError> {
        let digest = hasher.finish();
        let fail = |_| SignatureError("ECDSA signing failed");
        Ok(match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
                sig.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(&digest).map_err(fail)?;
                sig.to_der().as_bytes().to_vec()
            }
        })
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, redacted)", self.curve())
    }
}

/// The verification key of a signed message.
#[derive(Clone, Debug)]
pub enum VerifyingKey {
    /// P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// P-384.
    P384(p384::ecdsa::VerifyingKey),
}

impl VerifyingKey {
    /// Decodes the Base64 compressed point from the encryption context.
    pub fn from_base64(curve: SignatureCurve, value: &str) -> Result<Self, SignatureError> {
        let bytes = BASE64
            .decode(value)
            .map_err(|_| SignatureError("aws-crypto-public-key is not valid Base64"))?;
        let bad = |_| SignatureError("aws-crypto-public-key is not a point on the suite's curve");
        Ok(match curve {
            SignatureCurve::P256 => {
                Self::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes).map_err(bad)?)
            }
            SignatureCurve::P384 => {
                Self::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&bytes).map_err(bad)?)
            }
        })
    }

    /// Verifies a DER signature over the hashed message. Any DER length is accepted and
    /// high-S values are not rejected: other ESDKs write both.
    pub fn verify(&self, hasher: MessageHasher, der: &[u8]) -> Result<(), SignatureError> {
        let digest = hasher.finish();
        let malformed = |_| SignatureError("footer signature is not a valid DER ECDSA signature");
        let mismatch = |_| SignatureError("footer signature does not verify");
        match self {
            Self::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(der).map_err(malformed)?;
                k.verify_prehash(&digest, &sig).map_err(mismatch)
            }
            Self::P384(k) => {
                let sig = p384::ecdsa::Signature::from_der(der).map_err(malformed)?;
                k.verify_prehash(&digest, &sig).map_err(mismatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_on_both_curves() {
        for curve in [SignatureCurve::P256, SignatureCurve::P384] {
            let key = SigningKey::generate(curve).unwrap();
            let vk = VerifyingKey::from_base64(curve, &key.public_key_base64()).unwrap();
            let mut h = MessageHasher::new(curve);
            h.update(b"message bytes");
            let sig = key.sign(h.clone()).unwrap();
            vk.verify(h, &sig).unwrap();
            let mut other = MessageHasher::new(curve);
            other.update(b"other bytes");
            assert!(vk.verify(other, &sig).is_err());
        }
    }

    #[test]
    fn compressed_public_keys_have_the_documented_lengths() {
        let p384 = SigningKey::generate(SignatureCurve::P384).unwrap();
        assert_eq!(p384.public_key_base64().len(), 68);
        let p256 = SigningKey::generate(SignatureCurve::P256).unwrap();
        assert_eq!(p256.public_key_base64().len(), 44);
    }
}
