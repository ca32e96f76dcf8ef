//! Per-message key derivation and key commitment.

use hkdf::Hkdf;
use sha2::{Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::secret::DataKey;
use crate::format::{AlgorithmSuite, Kdf};

const DERIVE_KEY_LABEL: &[u8] = b"DERIVEKEY";
const COMMIT_KEY_LABEL: &[u8] = b"COMMITKEY";

/// The keys one message uses.
pub struct MessageKeys {
    /// The AES-GCM key for the header tag and the body.
    pub content_key: Zeroizing<Vec<u8>>,
    /// The commitment written in (and checked against) the header; committing suites only.
    pub commitment: Option<[u8; 32]>,
}

/// Derives a message's keys from its data key and message ID.
///
/// The caller guarantees `data_key.len() == suite.key_len`.
pub fn derive_message_keys(
    suite: &AlgorithmSuite,
    data_key: &DataKey,
    message_id: &[u8],
) -> MessageKeys {
    let ikm = data_key.as_bytes();
    let mut content_key = Zeroizing::new(vec![0u8; suite.key_len]);
    let suite_id = suite.id.to_be_bytes();
    const LEN_OK: &str = "HKDF output length is far below 255 hash lengths";
    let commitment = match suite.kdf {
        Kdf::Identity => {
            content_key.copy_from_slice(ikm);
            None
        }
        Kdf::HkdfSha256 => {
            Hkdf::<Sha256>::new(None, ikm)
                .expand_multi_info(&[&suite_id, message_id], &mut content_key)
                .expect(LEN_OK);
            None
        }
        Kdf::HkdfSha384 => {
            Hkdf::<Sha384>::new(None, ikm)
                .expand_multi_info(&[&suite_id, message_id], &mut content_key)
                .expect(LEN_OK);
            None
        }
        Kdf::HkdfSha512Committing => {
            // One extract, two expands: the commitment info has no suite prefix.
            let prk = Hkdf::<Sha512>::new(Some(message_id), ikm);
            prk.expand_multi_info(&[&suite_id, DERIVE_KEY_LABEL], &mut content_key)
                .expect(LEN_OK);
            let mut commit = [0u8; 32];
            prk.expand(COMMIT_KEY_LABEL, &mut commit).expect(LEN_OK);
            Some(commit)
        }
    };
    MessageKeys {
        content_key,
        commitment,
    }
}

/// Compares a computed commitment with the header's in constant time.
pub fn commitment_matches(expected: &[u8; 32], from_header: &[u8]) -> bool {
    from_header.len() == 32 && bool::from(expected.ct_eq(from_header))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Commitment vector #1 (esdk-format.md §5.2).
    #[test]
    fn committing_kdf_matches_the_reference_check_value() {
        let key = DataKey::new(
            hex::decode("fa9ebec213d5c3d90ead82d914c4412769fa5658ba4ffed39230e8b92fb6e6cd")
                .unwrap(),
        );
        let id = hex::decode("4dfbd1314d9d55925b817232c5e36d6e3e5e230f018930e2c2c1f243f67dc179")
            .unwrap();
        let keys = derive_message_keys(
            &AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            &key,
            &id,
        );
        assert_eq!(
            hex::encode(&*keys.content_key),
            "57aef7d35c8c26d9348f139cdd025e05a73ab8ac4edd7ca55ad90a4d899453e3"
        );
        assert_eq!(
            hex::encode(keys.commitment.unwrap()),
            "17cf08f733db51049f3a5ccb5effae218dbe9bf13a8f63ccb1b81e1d51ff2f4c"
        );
    }
}
