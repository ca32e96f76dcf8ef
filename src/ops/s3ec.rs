//! Decrypting, verifying and re-encrypting one object the S3 Encryption Client wrote.
//!
//! The same rule as for ESDK messages: the output is committed only once the content's
//! one GCM tag (at the very end of the object) verified, so a tampered object leaves
//! nothing behind. Each object's data key costs one keyring call (a KMS `Decrypt`):
//! S3EC gives every object its own data key, and nothing can share it. Re-encrypting
//! turns the object into an ESDK message under a pooled data key.

use std::io::Cursor;

use bytes::Bytes;

use super::encrypt::Sealer;
use super::marker;
use super::{Failed, IN_MEMORY, MakeSink, Outcome, in_memory_work, run_through, write_whole};
use crate::bridge::Cancel;
use crate::keys::KeyringError;
use crate::s3ec::{self, ContentDecryptor, Envelope, S3ecError, TAG_LEN, Wrap};
use crate::store::{ObjectMeta, Payload, SourceInfo, SourceObject};
use crate::stream::{EncryptingWriter, INLINE_BYTES};
use crate::{CommitmentPolicy, Error};

use super::decrypt::Opener;

/// Checks `envelope` against the policy and the context the job requires, recovers its
/// data key and makes the content ready to open.
async fn unlock(opener: &Opener<'_>, envelope: &Envelope) -> Result<ContentDecryptor, Failed> {
    let fail = |e: Error| Failed::new("decrypt", e);
    // Refused before any key is asked for: nothing can tell CBC content from tampered.
    if envelope.cipher == s3ec::ContentCipher::AesCbc {
        return Err(fail(
            S3ecError::Unsupported(
                "AES/CBC content: the legacy unauthenticated mode of the first S3 \
                 Encryption Client, which nothing can tell apart from tampered content"
                    .into(),
            )
            .into(),
        ));
    }
    let policy = opener.options.commitment_policy;
    if !envelope.cipher.commits() && policy == CommitmentPolicy::RequireEncryptRequireDecrypt {
        return Err(fail(
            S3ecError::NotCommitting {
                generation: envelope.generation,
                cipher: envelope.cipher.name(),
                policy,
            }
            .into(),
        ));
    }
    check_context(opener, envelope).map_err(|e| fail(e.into()))?;
    let key = match opener.keyring.on_decrypt_s3ec(envelope).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return Err(fail(
                KeyringError::NoMatchingKey {
                    available: format!(
                        "an S3 Encryption Client data key wrapped with {} (no configured key \
                         does that wrap)",
                        envelope.wrap
                    ),
                    tried: String::new(),
                    transient: false,
                }
                .into(),
            ));
        }
        Err(e) => return Err(fail(e.into())),
    };
    ContentDecryptor::new(envelope, &key).map_err(fail)
}

/// The S3EC context rules: `kms+context` stores the content cipher's name under
/// `aws:x-amz-cek-alg`, and it must be this envelope's (KMS authenticates the context,
/// but not against the metadata that chose the cipher); pairs the job requires must be
/// in the stored context, as for ESDK messages. The legacy `kms` wrap has no context of
/// its own to require pairs of.
fn check_context(opener: &Opener<'_>, envelope: &Envelope) -> Result<(), S3ecError> {
    const CEK_ALG: &str = "aws:x-amz-cek-alg";
    let required = opener.reproduced_context;
    match envelope.wrap {
        Wrap::KmsContext => {
            let stored = envelope.context.get(CEK_ALG).map(String::as_str);
            if stored != Some(envelope.cipher.name()) {
                return Err(S3ecError::Context(format!(
                    "{CEK_ALG} is {}, but the content is {}",
                    stored.map_or_else(|| "missing".into(), crate::escape::text),
                    envelope.cipher.name()
                )));
            }
        }
        Wrap::Kms if !required.is_empty() => {
            return Err(S3ecError::Context(
                "the legacy kms wrap binds no encryption context, so it cannot carry the \
                 pairs this job requires"
                    .into(),
            ));
        }
        _ => {}
    }
    for (key, value) in required.iter() {
        if key == CEK_ALG {
            return Err(S3ecError::Context(format!(
                "{CEK_ALG} is reserved by the S3 Encryption Client"
            )));
        }
        if envelope.context.get(key).map(String::as_str) != Some(value) {
            return Err(S3ecError::Context(format!(
                "the object's context does not hold {}={}",
                crate::escape::text(key),
                crate::escape::text(value)
            )));
        }
    }
    Ok(())
}

/// The plaintext's length: the object less its tag.
fn plaintext_length(info: &SourceInfo) -> Result<u64, Failed> {
    info.size.checked_sub(TAG_LEN as u64).ok_or_else(|| {
        Failed::new(
            "decrypt",
            Error::Truncated(format!(
                "the object holds {} bytes, fewer than its {TAG_LEN}-byte GCM tag",
                info.size
            )),
        )
    })
}

/// What travels from the source to an output: its metadata without the envelope (it
/// describes the old ciphertext) and without sealpipe's marker.
fn carried_meta(info: &SourceInfo) -> ObjectMeta {
    let mut meta = info.meta.clone();
    s3ec::strip(&mut meta.user);
    marker::strip(&mut meta);
    meta
}

/// `x-amz-unencrypted-content-length` is not authenticated; one that disagrees with
/// the object means metadata and body do not belong together.
fn check_length(envelope: &Envelope, actual: u64) -> Result<(), Failed> {
    match envelope.plaintext_length {
        Some(said) if said != actual => Err(Failed::with_code(
            "LengthMismatch",
            format!(
                "decrypt: the object holds {actual} plaintext bytes but its \
                 x-amz-unencrypted-content-length says {said}"
            ),
        )),
        _ => Ok(()),
    }
}

/// Opens content held in memory; nothing is written before its tag verified.
async fn open_whole(decryptor: ContentDecryptor, sealed: Bytes) -> Result<Vec<u8>, Failed> {
    // Microseconds below INLINE_BYTES: less than a hand-off to a blocking thread.
    let small = sealed.len() < INLINE_BYTES;
    let open = move || {
        let mut plaintext = Vec::with_capacity(sealed.len());
        decryptor.decrypt(&mut Cursor::new(sealed), &mut plaintext)?;
        Ok(plaintext)
    };
    if small {
        open().map_err(|e| Failed::new("decrypt", e))
    } else {
        in_memory_work("decrypt", open).await
    }
}

/// Decrypts `source`, an S3EC object `envelope` describes, into the sink `out` makes.
pub async fn decrypt_s3ec(
    opener: Opener<'_>,
    envelope: &Envelope,
    source: SourceObject,
    out: &dyn MakeSink,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let expected = plaintext_length(&source.info)?;
    check_length(envelope, expected)?;
    let decryptor = unlock(&opener, envelope).await?;
    let meta = carried_meta(&source.info);
    let bytes_in = source.info.size;
    let mut body = source.body;
    if let Some(whole) = body.take_if_in_memory(IN_MEMORY) {
        let plaintext = open_whole(decryptor, whole).await?;
        let sink = out
            .make(meta, Payload::Plaintext, plaintext.len() as u64)
            .await
            .map_err(|e| Failed::new("write", e))?;
        let bytes_out = write_whole(sink, plaintext).await?;
        return Ok(Outcome::Done {
            bytes_in,
            bytes_out,
        });
    }
    let mut sink = out
        .make(meta, Payload::Plaintext, expected)
        .await
        .map_err(|e| Failed::new("write", e))?;
    sink.expect_at_least(expected);
    let (_, bytes_out) = run_through(
        "decrypt",
        (body, Bytes::new(), cancel),
        sink,
        Box::new(move |reader, mut writer| decryptor.decrypt(reader, &mut writer)),
        |_| Ok(()),
    )
    .await?;
    Ok(Outcome::Done {
        bytes_in,
        bytes_out,
    })
}

/// Checks the tag of `source`, an S3EC object, and writes nothing.
pub async fn verify_s3ec(
    opener: Opener<'_>,
    envelope: &Envelope,
    source: SourceObject,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    decrypt_s3ec(opener, envelope, source, &super::decrypt::Nowhere, cancel).await
}

/// Re-encrypts `source`, an S3EC object, into a new ESDK message from `sealer`.
pub async fn reencrypt_s3ec(
    opener: Opener<'_>,
    sealer: Sealer<'_>,
    envelope: &Envelope,
    source: SourceObject,
    out: &dyn MakeSink,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let expected = plaintext_length(&source.info)?;
    check_length(envelope, expected)?;
    let decryptor = unlock(&opener, envelope).await?;
    let materials = sealer.materials(expected).await?;
    let info = SourceInfo {
        meta: carried_meta(&source.info),
        ..source.info.clone()
    };
    let meta = Sealer::output_meta(&info, &materials, Some(expected));
    let bytes_in = info.size;
    let mut body = source.body;
    if let Some(whole) = body.take_if_in_memory(IN_MEMORY) {
        let plaintext = open_whole(decryptor, whole).await?;
        let bytes_out = sealer.seal_whole(materials, plaintext, meta, out).await?;
        return Ok(Outcome::Done {
            bytes_in,
            bytes_out,
        });
    }
    let mut sink = out
        .make(meta, Payload::Message, sealer.message_size_hint(expected))
        .await
        .map_err(|e| Failed::new("write", e))?;
    sink.expect_at_least(sealer.message_size_floor(expected));
    let options = sealer.options.clone();
    let (_, bytes_out) = run_through(
        "reencrypt",
        (body, Bytes::new(), cancel),
        sink,
        Box::new(move |reader, writer| {
            let mut message = EncryptingWriter::new(writer, &materials, &options)?;
            let plaintext_len = decryptor.decrypt(reader, &mut message)?;
            message.finish()?;
            Ok(plaintext_len)
        }),
        |_| Ok(()),
    )
    .await?;
    Ok(Outcome::Done {
        bytes_in,
        bytes_out,
    })
}
