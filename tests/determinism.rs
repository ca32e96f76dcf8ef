//! Output bytes depend only on the inputs (materials, message ID, options), never on the
//! number of threads; and the two AES-GCM backends agree bit for bit.

mod common;

use std::io::Write;

use sealpipe::crypto::{AeadBackend, AeadKey};
use sealpipe::format::{AlgorithmSuite, EncryptionContext};
use sealpipe::keys::EncryptionMaterials;
use sealpipe::stream::{self, EncryptOptions, EncryptingWriter};

fn seal_with_threads(
    threads: usize,
    materials: &EncryptionMaterials,
    frame_length: u32,
    plaintext: &[u8],
) -> Vec<Vec<u8>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let id = [0x5Au8; 32];
    let mut outputs = Vec::new();
    for aead in [AeadBackend::Ring, AeadBackend::RustCrypto] {
        // A small batch forces many batches, and so many parallel splits.
        let options = EncryptOptions {
            frame_length,
            aead,
            batch_bytes: 64 * 1024,
        };
        pool.install(|| {
            let mut whole = Vec::new();
            stream::encrypt_to_vec(materials, &options, Some(id), plaintext, &mut whole).unwrap();
            let mut w =
                EncryptingWriter::with_message_id(Vec::new(), materials, &options, Some(id))
                    .unwrap();
            for chunk in plaintext.chunks(7777) {
                w.write_all(chunk).unwrap();
            }
            let (streamed, summary) = w.finish().unwrap();
            assert_eq!(summary.plaintext_bytes, plaintext.len() as u64);
            assert_eq!(summary.message_bytes, streamed.len() as u64);
            outputs.push(whole);
            outputs.push(streamed);
            // Read into the frames' places: whole vectored reads (a cursor fills every
            // buffer it is given) and jagged ones that stop anywhere inside a frame.
            for step in [usize::MAX, 1000, 65_537] {
                let mut w =
                    EncryptingWriter::with_message_id(Vec::new(), materials, &options, Some(id))
                        .unwrap();
                let mut reader = Jagged {
                    data: plaintext,
                    step,
                };
                w.copy_from(&mut reader).unwrap();
                let (copied, summary) = w.finish().unwrap();
                assert_eq!(summary.plaintext_bytes, plaintext.len() as u64);
                outputs.push(copied);
            }
        });
    }
    outputs
}

/// A reader whose vectored reads return at most `step` bytes, spread over the buffers.
struct Jagged<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Jagged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read_vectored(&mut [std::io::IoSliceMut::new(buf)])
    }

    fn read_vectored(&mut self, bufs: &mut [std::io::IoSliceMut<'_>]) -> std::io::Result<usize> {
        let mut n = 0;
        for buf in bufs {
            let take = buf.len().min(self.data.len()).min(self.step - n);
            buf[..take].copy_from_slice(&self.data[..take]);
            self.data = &self.data[take..];
            n += take;
            if n == self.step || self.data.is_empty() {
                break;
            }
        }
        Ok(n)
    }
}

#[test]
fn output_does_not_depend_on_thread_count_or_backend() {
    let plaintext = common::pseudo_random(1_000_003, 11);
    let keyring = common::raw_keyring("ns", "name", &[3u8; 32]);
    let ctx: EncryptionContext = [("k", "v")].into_iter().collect();
    let materials = common::materials(
        keyring.as_ref(),
        AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        ctx,
    );
    for frame_length in [1000, 4096, 65536] {
        let reference = seal_with_threads(1, &materials, frame_length, &plaintext);
        // Every variant (in-memory/streaming x ring/rustcrypto) is identical.
        assert!(
            reference.windows(2).all(|w| w[0] == w[1]),
            "frame {frame_length}"
        );
        for threads in [2, 3, 8] {
            let other = seal_with_threads(threads, &materials, frame_length, &plaintext);
            assert!(
                other == reference,
                "{threads} threads, frame {frame_length}: output differs"
            );
        }
        let (_, decrypted) = common::decrypt(
            keyring.as_ref(),
            &Default::default(),
            &Default::default(),
            &reference[0],
        )
        .unwrap();
        assert!(decrypted == plaintext);
    }
}

#[test]
fn signed_messages_are_reproducible_too() {
    // ECDSA signatures are deterministic (RFC 6979) for a given signing key and message.
    let plaintext = common::pseudo_random(200_000, 12);
    let suite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384;
    let keyring = common::raw_keyring("ns", "name", &[3u8; 32]);
    let materials = common::materials(keyring.as_ref(), suite, EncryptionContext::new());
    let seal = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let options = EncryptOptions {
            frame_length: 4096,
            batch_bytes: 16 * 1024,
            ..Default::default()
        };
        let mut out = Vec::new();
        pool.install(|| {
            stream::encrypt_to_vec(&materials, &options, Some([1; 32]), &plaintext, &mut out)
        })
        .unwrap();
        out
    };
    assert!(
        seal(1) == seal(4),
        "signed output differs between 1 and 4 threads"
    );
}

#[test]
fn ring_and_rustcrypto_agree_on_random_inputs() {
    for (case, key_len) in [16usize, 32].iter().cycle().take(200).enumerate() {
        let key = common::pseudo_random(*key_len, case as u64 + 1);
        let iv: [u8; 12] = common::pseudo_random(12, case as u64 + 1000)
            .try_into()
            .unwrap();
        let aad = common::pseudo_random(case % 97, case as u64 + 2000);
        let plaintext = common::pseudo_random(case * 37 % 5000, case as u64 + 3000);
        let ring = AeadKey::new(AeadBackend::Ring, &key);
        let rc = AeadKey::new(AeadBackend::RustCrypto, &key);
        let (mut a, mut b) = (plaintext.clone(), plaintext.clone());
        let tag_a = ring.seal_in_place(&iv, &aad, &mut a);
        let tag_b = rc.seal_in_place(&iv, &aad, &mut b);
        assert_eq!((a.clone(), tag_a), (b, tag_b), "case {case}");
        // Each opens the other's output; a flipped tag bit fails on both.
        let mut c = a.clone();
        rc.open_in_place(&iv, &aad, &mut c, &tag_a).unwrap();
        assert_eq!(c, plaintext);
        let mut bad = tag_a;
        bad[case % 16] ^= 1;
        assert!(ring.open_in_place(&iv, &aad, &mut a.clone(), &bad).is_err());
        assert!(rc.open_in_place(&iv, &aad, &mut a, &bad).is_err());
    }
}

#[test]
fn aes_192_works_on_both_backend_settings() {
    // ring has no AES-192; asking for it transparently uses aes-gcm.
    let key = [9u8; 24];
    let iv = [0u8; 12];
    let mut a = b"legacy suites".to_vec();
    let mut b = a.clone();
    let ta = AeadKey::new(AeadBackend::Ring, &key).seal_in_place(&iv, b"", &mut a);
    let tb = AeadKey::new(AeadBackend::RustCrypto, &key).seal_in_place(&iv, b"", &mut b);
    assert_eq!((a, ta), (b, tb));
}
