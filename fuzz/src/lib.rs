//! Shared pieces of the fuzz targets: the fixed data key `decrypt_message` decrypts
//! with, and a generator of seed messages under that key for all eleven suites (v2
//! through sealpipe's own writer, v1 through a small legacy writer built from the
//! public format API, since sealpipe refuses to write non-committing suites).
//!
//! With a fixed key the fuzzer can get past key commitment and the header tag when it
//! mutates a seed, and reach frame parsing, the final frame, the footer and the
//! signature.

use sealpipe::crypto::{
    AeadBackend, AeadKey, DataKey, MessageHasher, SigningKey, derive_message_keys,
};
use sealpipe::format::{
    AlgorithmSuite, BodyAad, ContentKind, ContentType, EncryptedDataKey, EncryptionContext,
    FrameHeader, Header, HeaderAuth, HeaderBody, IV_LEN, MessageVersion, PUBLIC_KEY_CONTEXT_KEY,
    encode_footer, frame_iv,
};
use sealpipe::keys::{DecryptionMaterials, EncryptionMaterials};
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
        data_key: data_key(&header.body.suite),
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
    EncryptionMaterials {
        suite,
        context,
        required_context_keys: Default::default(),
        data_key: Some(data_key(&suite)),
        encrypted_data_keys: vec![EncryptedDataKey {
            provider_id: "fuzz".into(),
            provider_info: b"fixed-data-key".to_vec(),
            ciphertext: vec![0; 48],
        }],
        signing_key,
    }
}

/// Writes a v1 message (framed or not), signed when the suite signs.
pub fn legacy_message(
    materials: &EncryptionMaterials,
    content_type: ContentType,
    frame_length: u32,
    plaintext: &[u8],
) -> Vec<u8> {
    let suite = materials.suite;
    assert_eq!(suite.version, MessageVersion::V1);
    let message_id: Vec<u8> = (0..16u8)
        .map(|i| i.wrapping_mul(37) ^ suite.id as u8)
        .collect();
    let body = HeaderBody {
        suite,
        message_id: message_id.clone(),
        context: materials.stored_context(),
        encrypted_data_keys: materials.encrypted_data_keys.clone(),
        content_type,
        frame_length,
        suite_data: Vec::new(),
    };
    let keys = derive_message_keys(&suite, materials.data_key.as_ref().unwrap(), &message_id);
    let key = AeadKey::new(AeadBackend::RustCrypto, &keys.content_key);
    let mut out = body.encode().unwrap();
    let mut aad = out.clone();
    aad.extend_from_slice(&materials.authenticate_only_context().serialize().unwrap());
    let iv = [0u8; IV_LEN];
    let tag = key.seal_in_place(&iv, &aad, &mut []);
    HeaderAuth { iv, tag }.encode(suite.version, &mut out);
    let seal = |out: &mut Vec<u8>, kind, seq, content: &[u8]| {
        let start = out.len();
        out.extend_from_slice(content);
        let aad = BodyAad::new(&message_id, kind, seq, content.len() as u64);
        let tag = key.seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut out[start..]);
        out.extend_from_slice(&tag);
    };
    match content_type {
        ContentType::NonFramed => {
            out.extend_from_slice(&frame_iv(1));
            out.extend_from_slice(&(plaintext.len() as u64).to_be_bytes());
            seal(&mut out, ContentKind::SingleBlock, 1, plaintext);
        }
        ContentType::Framed => {
            let l = frame_length as usize;
            let full = plaintext.len() / l;
            for (i, frame) in plaintext.chunks(l).take(full).enumerate() {
                let seq = i as u32 + 1;
                let mut head = [0u8; 4 + IV_LEN];
                FrameHeader::encode_regular(seq, &mut head);
                out.extend_from_slice(&head);
                seal(&mut out, ContentKind::Frame, seq, frame);
            }
            let seq = full as u32 + 1;
            let last = &plaintext[full * l..];
            FrameHeader::encode_final(seq, last.len() as u32, &mut out);
            seal(&mut out, ContentKind::FinalFrame, seq, last);
        }
    }
    if let (Some(signer), Some(curve)) = (&materials.signing_key, suite.signature) {
        let mut hasher = MessageHasher::new(curve);
        hasher.update(&out);
        encode_footer(&signer.sign(hasher).unwrap(), &mut out);
    }
    out
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
