//! A writer of legacy (v1, non-committing) messages, which sealpipe itself refuses to
//! write, built from the public format API. Shared by the property tests (through
//! `tests/common`) and the fuzz crate (which includes this file by path), so hostile-input
//! tests reach the v1 header, the non-framed body and the legacy signatures.

use sealpipe::crypto::{AeadBackend, AeadKey, MessageHasher, derive_message_keys};
use sealpipe::format::{
    BodyAad, ContentKind, ContentType, FrameHeader, HeaderAuth, HeaderBody, IV_LEN, MessageVersion,
    encode_footer, frame_iv,
};
use sealpipe::keys::EncryptionMaterials;

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
        suite: suite.into(),
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
