//! Opening an S3EC object's content: one AES-256-GCM over the whole object, its tag in
//! the last 16 bytes.
//!
//! No AEAD interface opens a GCM message in pieces, and an object can be many GiB, so
//! this is GCM written out from its parts: AES-CTR from the counter after J0 decrypts,
//! GHASH over the AAD and the ciphertext authenticates, and the tag is compared in
//! constant time at the end. Plaintext flows to the writer before the tag is checked;
//! callers write it only to an output that is committed after `decrypt` returns `Ok`
//! (a staged file, an uncompleted multipart upload), like every other read here.

use std::io::{Read, Write};

use aes::Aes256;
use ctr::cipher::{BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher};
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use hkdf::Hkdf;
use sha2::Sha512;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::S3ecError;
use super::envelope::{COMMITTING_SUITE_ID, ContentCipher, Envelope, GCM_IV_LEN, MESSAGE_ID_LEN};
use crate::Error;
use crate::crypto::DataKey;

/// Length of the GCM tag the clients write.
pub const TAG_LEN: usize = 16;

/// GCM's limit on one message's plaintext: 2^32 - 2 blocks of 16 bytes.
pub const MAX_PLAINTEXT: u64 = ((1 << 32) - 2) * 16;

/// How much ciphertext is decrypted per step.
const STEP: usize = 1 << 20;

type Aes256Ctr = ctr::Ctr32BE<Aes256>;

/// Opens one object's content with its data key.
pub struct ContentDecryptor {
    ctr: Aes256Ctr,
    ghash: GHash,
    /// E_K(J0): what GHASH's result is masked with to make the tag.
    tag_mask: [u8; 16],
    aad_len: u64,
}

impl ContentDecryptor {
    /// Prepares to open content `envelope` describes with the unwrapped `data_key`:
    /// for the committing suite, derives the content key and checks the commitment
    /// (in constant time) before anything is decrypted.
    pub fn new(envelope: &Envelope, data_key: &DataKey) -> Result<Self, Error> {
        if data_key.len() != 32 {
            return Err(S3ecError::Unsupported(format!(
                "a {}-byte data key (S3EC content keys are 32 bytes)",
                data_key.len()
            ))
            .into());
        }
        match envelope.cipher {
            ContentCipher::AesCbc => Err(S3ecError::Unsupported(
                "AES/CBC content: the legacy unauthenticated mode of the first S3 \
                 Encryption Client, which nothing can tell apart from tampered content"
                    .into(),
            )
            .into()),
            ContentCipher::AesGcm => {
                let iv: [u8; GCM_IV_LEN] = envelope.iv.as_slice().try_into().map_err(|_| {
                    S3ecError::Metadata(format!("an IV of {} bytes", envelope.iv.len()))
                })?;
                Ok(Self::gcm(data_key.as_bytes(), &iv, &[]))
            }
            ContentCipher::CommittingAesGcm => {
                let commitment = envelope.commitment.as_ref().ok_or_else(|| {
                    S3ecError::Metadata("a committing envelope without its commitment".into())
                })?;
                let hkdf = Hkdf::<Sha512>::new(Some(&commitment.message_id), data_key.as_bytes());
                let mut key = Zeroizing::new([0u8; 32]);
                let mut derived = [0u8; MESSAGE_ID_LEN];
                let info = |label: &[u8]| [&COMMITTING_SUITE_ID[..], label].concat();
                hkdf.expand(&info(b"DERIVEKEY"), key.as_mut())
                    .and_then(|()| hkdf.expand(&info(b"COMMITKEY"), &mut derived))
                    .map_err(|_| Error::Internal("HKDF output length".into()))?;
                if !bool::from(derived.ct_eq(&commitment.value)) {
                    return Err(Error::CommitmentMismatch);
                }
                Ok(Self::gcm(
                    key.as_ref(),
                    &[1; GCM_IV_LEN],
                    &COMMITTING_SUITE_ID,
                ))
            }
        }
    }

    fn gcm(key: &[u8], iv: &[u8; GCM_IV_LEN], aad: &[u8]) -> Self {
        let aes = Aes256::new_from_slice(key).expect("a 32-byte key");
        let mut h = ghash::Key::default();
        aes.encrypt_block(&mut h);
        let mut ghash = GHash::new(&h);
        ghash.update_padded(aad);
        // J0 = IV || 0^31 || 1; the tag mask is E_K(J0), content starts at J0 + 1.
        let mut j0 = [0u8; 16];
        j0[..GCM_IV_LEN].copy_from_slice(iv);
        j0[15] = 1;
        let mut mask = ghash::Block::from(j0);
        aes.encrypt_block(&mut mask);
        let mut counter = j0;
        counter[15] = 2;
        Self {
            ctr: Aes256Ctr::new(&key.try_into().expect("32 bytes"), &counter.into()),
            ghash,
            tag_mask: mask.into(),
            aad_len: aad.len() as u64,
        }
    }

    /// Decrypts the whole content from `reader` (ciphertext, then the tag) into
    /// `writer`; returns the plaintext's length once the tag verified. On `Err` the
    /// writer holds unauthenticated plaintext its owner must discard.
    pub fn decrypt(mut self, reader: &mut dyn Read, writer: &mut dyn Write) -> Result<u64, Error> {
        // The last TAG_LEN bytes read are always held back: the tag, once the body ends.
        let mut buf = vec![0u8; STEP + 2 * TAG_LEN];
        let mut held = 0;
        let mut total: u64 = 0;
        loop {
            let filled = held + read_up_to(reader, &mut buf[held..])?;
            let at_end = filled < buf.len();
            if at_end && filled < TAG_LEN {
                return Err(Error::Truncated(format!(
                    "the object holds {} bytes, fewer than its {TAG_LEN}-byte GCM tag",
                    total + filled as u64
                )));
            }
            // Whole blocks only, until the end: GHASH pads only its last block.
            let mut ready = filled.saturating_sub(TAG_LEN);
            if !at_end {
                ready -= ready % 16;
            }
            let chunk = &mut buf[..ready];
            total += ready as u64;
            if total > MAX_PLAINTEXT {
                return Err(Error::TooLarge(
                    "an AES-GCM object larger than GCM allows (64 GiB)",
                ));
            }
            self.ghash.update_padded(chunk);
            self.ctr.apply_keystream(chunk);
            writer.write_all(chunk)?;
            buf.copy_within(ready..filled, 0);
            held = filled - ready;
            if at_end {
                break;
            }
        }
        let mut lengths = [0u8; 16];
        lengths[..8].copy_from_slice(&(self.aad_len * 8).to_be_bytes());
        lengths[8..].copy_from_slice(&(total * 8).to_be_bytes());
        self.ghash.update_padded(&lengths);
        let mut expected: [u8; 16] = self.ghash.finalize().into();
        for (e, m) in expected.iter_mut().zip(self.tag_mask) {
            *e ^= m;
        }
        if bool::from(expected.ct_eq(&buf[..TAG_LEN])) {
            Ok(total)
        } else {
            Err(S3ecError::ContentAuthentication.into())
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns how much it read.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3ec::envelope::{Commitment, Generation, Wrap};
    use aes_gcm::aead::{Aead, Payload};
    use aes_gcm::{Aes256Gcm, Nonce};

    fn envelope(cipher: ContentCipher, commitment: Option<Commitment>) -> Envelope {
        Envelope {
            generation: Generation::V2,
            wrap: Wrap::KmsContext,
            cipher,
            encrypted_key: Vec::new(),
            context: Default::default(),
            iv: (0..12).collect(),
            commitment,
            instruction_file: false,
            plaintext_length: None,
        }
    }

    /// A reader that returns at most `n` bytes per call, to cross every boundary.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn open(e: &Envelope, key: &DataKey, sealed: &[u8], step: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let len = ContentDecryptor::new(e, key)?.decrypt(&mut Dribble(sealed, step), &mut out)?;
        assert_eq!(len, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn opens_what_aes_gcm_sealed_at_every_length() {
        let key = DataKey::new((100..132).collect());
        let gcm = Aes256Gcm::new_from_slice(key.as_bytes()).unwrap();
        let e = envelope(ContentCipher::AesGcm, None);
        for len in [
            0,
            1,
            15,
            16,
            17,
            31,
            32,
            33,
            1000,
            STEP - 1,
            STEP,
            STEP + 17,
            3 * STEP + 5,
        ] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = gcm
                .encrypt(&Nonce::try_from(&e.iv[..]).unwrap(), &plaintext[..])
                .unwrap();
            for step in [1 << 30, 7, 16] {
                if len > 100_000 && step < 100 {
                    continue;
                }
                assert_eq!(
                    open(&e, &key, &sealed, step).unwrap(),
                    plaintext,
                    "{len} {step}"
                );
            }
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last / 2] ^= 1;
            assert!(matches!(
                open(&e, &key, &bad, 1 << 30),
                Err(Error::S3ec(S3ecError::ContentAuthentication))
            ));
            if len > 0 {
                // One byte short: the tag moves and no longer verifies.
                assert!(open(&e, &key, &sealed[..sealed.len() - 1], 1 << 30).is_err());
            }
        }
        assert!(matches!(
            open(&e, &key, &[0; 15], 1 << 30),
            Err(Error::Truncated(_))
        ));
    }

    #[test]
    fn committing_content_derives_its_key_and_checks_the_commitment() {
        let key = DataKey::new((0..32).collect());
        let message_id = [9u8; MESSAGE_ID_LEN];
        let hkdf = Hkdf::<Sha512>::new(Some(&message_id), key.as_bytes());
        let mut content_key = [0u8; 32];
        let mut value = [0u8; MESSAGE_ID_LEN];
        hkdf.expand(b"\x00\x73DERIVEKEY", &mut content_key).unwrap();
        hkdf.expand(b"\x00\x73COMMITKEY", &mut value).unwrap();
        let sealed = Aes256Gcm::new_from_slice(&content_key)
            .unwrap()
            .encrypt(
                &Nonce::from([1; 12]),
                Payload {
                    msg: b"committed",
                    aad: &[0, 0x73],
                },
            )
            .unwrap();
        let e = envelope(
            ContentCipher::CommittingAesGcm,
            Some(Commitment { message_id, value }),
        );
        assert_eq!(open(&e, &key, &sealed, 3).unwrap(), b"committed");
        let mut wrong = e.clone();
        wrong.commitment.as_mut().unwrap().value[0] ^= 1;
        assert!(matches!(
            open(&wrong, &key, &sealed, 3),
            Err(Error::CommitmentMismatch)
        ));
        let other_key = DataKey::new(vec![1; 32]);
        assert!(matches!(
            open(&e, &other_key, &sealed, 3),
            Err(Error::CommitmentMismatch)
        ));
        assert!(matches!(
            open(&envelope(ContentCipher::AesCbc, None), &key, &sealed, 3),
            Err(Error::S3ec(S3ecError::Unsupported(_)))
        ));
    }
}
