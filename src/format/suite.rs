//! The ESDK algorithm suites: the eleven that messages may carry, and their parameters.

use std::fmt;

/// How the per-message content key is derived from the data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kdf {
    /// The data key is the content key (legacy suites 0x0014/0x0046/0x0078).
    Identity,
    /// HKDF-SHA256 with no salt and info = suite ID || message ID (v1).
    HkdfSha256,
    /// HKDF-SHA384 with no salt and info = suite ID || message ID (v1).
    HkdfSha384,
    /// HKDF-SHA512 with salt = message ID, plus a commitment key (v2).
    HkdfSha512Committing,
}

/// The curve of a signing suite's ECDSA footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCurve {
    /// ECDSA P-256 with SHA-256 (suite 0x0214).
    P256,
    /// ECDSA P-384 with SHA-384 (suites 0x0346, 0x0378, 0x0578).
    P384,
}

/// The message format version a suite belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageVersion {
    /// Version 1.0: 16-byte message IDs, no key commitment.
    V1,
    /// Version 2.0: 32-byte message IDs, key commitment.
    V2,
}

impl MessageVersion {
    /// The version byte that opens a header.
    pub fn byte(self) -> u8 {
        match self {
            MessageVersion::V1 => 0x01,
            MessageVersion::V2 => 0x02,
        }
    }

    /// Length of the message ID in bytes.
    pub fn message_id_len(self) -> usize {
        match self {
            MessageVersion::V1 => 16,
            MessageVersion::V2 => 32,
        }
    }
}

/// One ESDK algorithm suite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AlgorithmSuite {
    /// The two-byte identifier written in the header.
    pub id: u16,
    /// The header version that carries this suite.
    pub version: MessageVersion,
    /// AES key length in bytes (16, 24 or 32); also the data key length.
    pub key_len: usize,
    /// Key derivation.
    pub kdf: Kdf,
    /// The footer signature, if any.
    pub signature: Option<SignatureCurve>,
}

impl AlgorithmSuite {
    /// AES-256-GCM, HKDF-SHA512, key commitment, no signature. sealpipe's default.
    pub const AES_256_GCM_HKDF_SHA512_COMMIT_KEY: Self = Self::new(
        0x0478,
        MessageVersion::V2,
        32,
        Kdf::HkdfSha512Committing,
        None,
    );
    /// AES-256-GCM, HKDF-SHA512, key commitment, ECDSA P-384 footer.
    pub const AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384: Self = Self::new(
        0x0578,
        MessageVersion::V2,
        32,
        Kdf::HkdfSha512Committing,
        Some(SignatureCurve::P384),
    );

    const fn new(
        id: u16,
        version: MessageVersion,
        key_len: usize,
        kdf: Kdf,
        signature: Option<SignatureCurve>,
    ) -> Self {
        Self {
            id,
            version,
            key_len,
            kdf,
            signature,
        }
    }

    /// Every suite an ESDK message may carry.
    pub const ALL: [AlgorithmSuite; 11] = {
        use Kdf::*;
        use MessageVersion::*;
        use SignatureCurve::*;
        [
            Self::new(0x0014, V1, 16, Identity, None),
            Self::new(0x0046, V1, 24, Identity, None),
            Self::new(0x0078, V1, 32, Identity, None),
            Self::new(0x0114, V1, 16, HkdfSha256, None),
            Self::new(0x0146, V1, 24, HkdfSha256, None),
            Self::new(0x0178, V1, 32, HkdfSha256, None),
            Self::new(0x0214, V1, 16, HkdfSha256, Some(P256)),
            Self::new(0x0346, V1, 24, HkdfSha384, Some(P384)),
            Self::new(0x0378, V1, 32, HkdfSha384, Some(P384)),
            Self::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            Self::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
        ]
    };

    /// Looks a suite up by its identifier.
    pub fn from_id(id: u16) -> Option<AlgorithmSuite> {
        Self::ALL.iter().copied().find(|s| s.id == id)
    }

    /// The suite's name in the ESDK specification.
    pub fn name(&self) -> &'static str {
        match self.id {
            0x0014 => "AES_128_GCM_IV12_TAG16_NO_KDF",
            0x0046 => "AES_192_GCM_IV12_TAG16_NO_KDF",
            0x0078 => "AES_256_GCM_IV12_TAG16_NO_KDF",
            0x0114 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256",
            0x0146 => "AES_192_GCM_IV12_TAG16_HKDF_SHA256",
            0x0178 => "AES_256_GCM_IV12_TAG16_HKDF_SHA256",
            0x0214 => "AES_128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256",
            0x0346 => "AES_192_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
            0x0378 => "AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384",
            0x0478 => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            0x0578 => "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
            _ => "UNKNOWN",
        }
    }

    /// Whether the suite commits to its data key (v2 suites).
    pub fn is_committing(&self) -> bool {
        self.kdf == Kdf::HkdfSha512Committing
    }

    /// Length of the algorithm suite data field in a v2 header (the commitment key).
    pub fn suite_data_len(&self) -> usize {
        if self.is_committing() { 32 } else { 0 }
    }

    /// Whether this suite can safely serve many messages with one data key. Identity-KDF
    /// suites would reuse (key, IV) pairs, so they never may.
    pub fn derives_per_message_key(&self) -> bool {
        self.kdf != Kdf::Identity
    }
}

impl fmt::Debug for AlgorithmSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlgorithmSuite(0x{:04X})", self.id)
    }
}

impl fmt::Display for AlgorithmSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.id)
    }
}

/// Length of the suite data in a v2 header whose suite this build does not know. Every
/// v2 suite the specification defines (the ESDK's and the database SDK's) commits to its
/// key with 32 bytes of suite data, so the v2 layout stays decodable for future suites.
const V2_UNKNOWN_SUITE_DATA_LEN: usize = 32;

/// The algorithm suite a header names, as written: its ID and the header version that
/// carries it. The ID need not be one this build knows.
///
/// The header layout depends on the version byte, not on the suite, so a header naming
/// an unknown suite still decodes: `inspect` can show it and a rewrap can carry it. Only
/// policy refuses it, through [`known`](Self::known) (rustls keeps unknown codes the
/// same way).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderSuite {
    /// The two-byte identifier in the header.
    pub id: u16,
    /// The header's version.
    pub version: MessageVersion,
}

impl HeaderSuite {
    /// The suite, if this build knows the ID and it belongs to the header's version.
    pub fn known(&self) -> Option<AlgorithmSuite> {
        AlgorithmSuite::from_id(self.id).filter(|s| s.version == self.version)
    }

    /// Whether the ID is a known suite of the *other* version: a header that contradicts
    /// itself, unlike an unknown ID.
    pub(super) fn is_misplaced(&self) -> bool {
        self.known().is_none() && AlgorithmSuite::from_id(self.id).is_some()
    }

    /// The suite's name in the ESDK specification, or `UNKNOWN`.
    pub fn name(&self) -> &'static str {
        self.known().map_or("UNKNOWN", |s| s.name())
    }

    /// Length of the algorithm suite data field in the header.
    pub fn suite_data_len(&self) -> usize {
        match (self.known(), self.version) {
            (Some(suite), _) => suite.suite_data_len(),
            (None, MessageVersion::V1) => 0,
            (None, MessageVersion::V2) => V2_UNKNOWN_SUITE_DATA_LEN,
        }
    }
}

impl From<AlgorithmSuite> for HeaderSuite {
    fn from(suite: AlgorithmSuite) -> Self {
        Self {
            id: suite.id,
            version: suite.version,
        }
    }
}

impl PartialEq<AlgorithmSuite> for HeaderSuite {
    fn eq(&self, other: &AlgorithmSuite) -> bool {
        *self == HeaderSuite::from(*other)
    }
}

impl fmt::Debug for HeaderSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeaderSuite(0x{:04X}, {:?})", self.id, self.version)
    }
}

impl fmt::Display for HeaderSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_is_found_by_its_id_and_ids_are_unique() {
        for s in AlgorithmSuite::ALL {
            assert_eq!(AlgorithmSuite::from_id(s.id), Some(s));
            assert_eq!(s.version == MessageVersion::V2, s.is_committing());
        }
        assert_eq!(AlgorithmSuite::from_id(0x0000), None);
        assert_eq!(AlgorithmSuite::from_id(0x6700), None);
    }

    #[test]
    fn header_suites_know_only_the_suites_of_their_version() {
        for s in AlgorithmSuite::ALL {
            let named = HeaderSuite::from(s);
            assert_eq!((named.known(), named.name()), (Some(s), s.name()));
            assert_eq!(named.suite_data_len(), s.suite_data_len());
            let other = match s.version {
                MessageVersion::V1 => MessageVersion::V2,
                MessageVersion::V2 => MessageVersion::V1,
            };
            let misplaced = HeaderSuite {
                version: other,
                ..named
            };
            assert_eq!(misplaced.known(), None);
        }
        let unknown = HeaderSuite {
            id: 0x1234,
            version: MessageVersion::V2,
        };
        assert_eq!((unknown.known(), unknown.name()), (None, "UNKNOWN"));
        assert_eq!(unknown.suite_data_len(), V2_UNKNOWN_SUITE_DATA_LEN);
        assert_eq!(unknown.to_string(), "0x1234");
    }
}
