//! Shared pieces of the fuzz targets: the fixed data key `decrypt_message` decrypts
//! with, and a generator of seed messages under that key for all eleven suites (v2
//! through sealpipe's own writer, v1 through a small legacy writer built from the
//! public format API, since sealpipe refuses to write non-committing suites).
//!
//! With a fixed key the fuzzer can get past key commitment and the header tag when it
//! mutates a seed, and reach frame parsing, the final frame, the footer and the
//! signature.

use sealpipe::crypto::{DataKey, SigningKey};
use sealpipe::format::{
    AlgorithmSuite, ContentType, EncryptedDataKey, EncryptionContext, Header, MessageVersion,
    PUBLIC_KEY_CONTEXT_KEY,
};
use sealpipe::keys::{DecryptionMaterials, EncryptionMaterials};

#[path = "../../tests/common/legacy.rs"]
mod legacy;
pub use legacy::legacy_message;
use sealpipe::stream::{self, EncryptOptions};

/// The data key of every message `decrypt_message` can fully decrypt; a suite uses its
/// first `key_len` bytes.
pub const FIXED_DATA_KEY: [u8; 32] = *b"sealpipe fuzzing data key 32 byt";

/// The fixed data key, cut to the suite's key length.
pub fn data_key(suite: &AlgorithmSuite) -> DataKey {
    DataKey::new(FIXED_DATA_KEY[..suite.key_len].to_vec())
}

/// Decryption materials for any header: the fixed key, no authenticate-only pairs.
pub fn materials_for(header: &Header) -> DecryptionMaterials {
    DecryptionMaterials {
        // Called after the policy check, which refuses unknown suites; an empty key
        // would fail the length check anyway.
        data_key: header
            .body
            .suite
            .known()
            .map_or_else(|| DataKey::new(Vec::new()), |s| data_key(&s)),
        authenticate_only_context: EncryptionContext::new(),
    }
}

/// Encryption materials under the fixed key, with a placeholder EDK (nothing unwraps it;
/// `decrypt_message` never asks a keyring).
pub fn encryption_materials(suite: AlgorithmSuite, pairs: &[(&str, &str)]) -> EncryptionMaterials {
    let mut context: EncryptionContext = pairs.iter().copied().collect();
    let signing_key = suite.signature.map(|curve| {
        let key = SigningKey::generate(curve).expect("OS random numbers");
        context.insert(PUBLIC_KEY_CONTEXT_KEY, key.public_key_base64());
        key
    });
    EncryptionMaterials::new(
        suite,
        context,
        Default::default(),
        Some(data_key(&suite)),
        vec![EncryptedDataKey {
            provider_id: "fuzz".into(),
            provider_info: b"fixed-data-key".to_vec(),
            ciphertext: vec![0; 48],
        }],
        signing_key,
    )
}

/// Small valid messages under [`FIXED_DATA_KEY`]: every suite, framed with several frame
/// lengths (ragged and exact-multiple plaintexts), and non-framed for v1 suites.
pub fn seed_messages() -> Vec<(String, Vec<u8>)> {
    let plaintext: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
    let pairs: &[&[(&str, &str)]] = &[&[], &[("purpose", "fuzz"), ("ключ", "值")]];
    let mut seeds = Vec::new();
    for suite in AlgorithmSuite::ALL {
        for (p, pairs) in pairs.iter().enumerate() {
            let m = encryption_materials(suite, pairs);
            for (frame_length, len) in [(16u32, 0usize), (16, 40), (20, 40), (64, 200), (4096, 10)]
            {
                let pt = &plaintext[..len];
                let message = match suite.version {
                    MessageVersion::V2 => {
                        let options = EncryptOptions {
                            frame_length,
                            ..Default::default()
                        };
                        let mut out = Vec::new();
                        stream::encrypt_to_vec(&m, &options, Some([0x5A; 32]), pt, &mut out)
                            .unwrap();
                        out
                    }
                    MessageVersion::V1 => legacy_message(&m, ContentType::Framed, frame_length, pt),
                };
                seeds.push((
                    format!("seed-{:04x}-ctx{p}-framed-{frame_length}-{len}", suite.id),
                    message,
                ));
            }
            if suite.version == MessageVersion::V1 {
                for len in [0, 33] {
                    seeds.push((
                        format!("seed-{:04x}-ctx{p}-nonframed-{len}", suite.id),
                        legacy_message(&m, ContentType::NonFramed, 0, &plaintext[..len]),
                    ));
                }
            }
        }
    }
    seeds
}
