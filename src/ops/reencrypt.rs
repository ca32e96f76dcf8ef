//! Re-encrypting one object: the old message is opened straight into a new one under a
//! fresh data key, so the plaintext never rests anywhere, and the new message is
//! committed only if the old one was authentic.

use super::decrypt::{Opener, check_length, open_whole};
use super::encrypt::Sealer;
use super::marker::{self, Marker};
use super::{Failed, IN_MEMORY, MakeSink, Outcome, run_through};
use crate::bridge::Cancel;
use std::sync::Arc;

use bytes::Bytes;

use crate::keys::EncryptionMaterials;
use crate::store::{Body, Payload, SourceInfo, SourceObject};
use crate::stream::{EncryptingWriter, MessageDecryptor};

/// Re-encrypts `source` (a message `opener` can read) into a new message from `sealer`.
/// With `skip_if_already_wrapped`, an object whose marker names exactly the keys
/// `sealer` wraps with is skipped (in-place jobs: never twice).
pub async fn reencrypt(
    opener: Opener<'_>,
    sealer: Sealer<'_>,
    source: SourceObject,
    out: &dyn MakeSink,
    skip_if_already_wrapped: bool,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let old = Marker::read(&source.info.meta);
    let expected = old
        .as_ref()
        .and_then(|m| m.plaintext_length)
        .unwrap_or(source.info.size);
    let materials = sealer.materials(expected).await?;
    let wrapping_keys = marker::wrapping_key_names(&materials.encrypted_data_keys);
    if skip_if_already_wrapped
        && old
            .as_ref()
            .is_some_and(|m| m.wrapping_keys == wrapping_keys)
    {
        return Ok(Outcome::Skipped(format!(
            "already wrapped by the target keys ({})",
            wrapping_keys.join(", ")
        )));
    }
    let mut body = source.body;
    let (decryptor, rest) = opener.open(body.as_mut()).await?;
    let opened = Opened {
        decryptor,
        rest,
        body,
    };
    seal_opened(opened, &source.info, sealer, materials, out, cancel).await
}

/// A message whose header was read and authenticated: what remains of reading it.
pub(super) struct Opened {
    /// Ready to open the body.
    pub(super) decryptor: MessageDecryptor,
    /// Body bytes that arrived with the header.
    pub(super) rest: Bytes,
    /// The rest of the body.
    pub(super) body: Box<dyn Body>,
}

/// Re-encrypts an opened message of the source `info` describes, with a fresh data key
/// of the sealer's (`materials`, already taken from its pool).
pub(super) async fn seal_opened(
    opened: Opened,
    info: &SourceInfo,
    sealer: Sealer<'_>,
    materials: Arc<EncryptionMaterials>,
    out: &dyn MakeSink,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let old = Marker::read(&info.meta);
    let expected = old
        .as_ref()
        .and_then(|m| m.plaintext_length)
        .unwrap_or(info.size);
    let plaintext_length = old.as_ref().and_then(|m| m.plaintext_length);
    let meta = Sealer::output_meta(info, &materials, plaintext_length);
    let bytes_in = info.size;
    let Opened {
        decryptor,
        rest,
        mut body,
    } = opened;
    if let Some(tail) = body.take_if_in_memory(IN_MEMORY) {
        let (plaintext_len, plaintext) = open_whole(decryptor, rest, tail).await?;
        check_length(old.as_ref(), plaintext_len)?;
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
    // A plaintext length the source's marker records is checked once the message is
    // opened; until then it bounds the new message from below.
    if let Some(len) = plaintext_length {
        sink.expect_at_least(sealer.message_size_floor(len));
    }
    let options = sealer.options.clone();
    let (_, bytes_out) = run_through(
        "reencrypt",
        (body, rest, cancel),
        sink,
        Box::new(move |reader, writer| {
            let mut message = EncryptingWriter::new(writer, &materials, &options)?;
            let plaintext_len = decryptor.decrypt(reader, &mut message)?;
            message.finish()?;
            Ok(plaintext_len)
        }),
        |plaintext_len| check_length(old.as_ref(), *plaintext_len),
    )
    .await?;
    Ok(Outcome::Done {
        bytes_in,
        bytes_out,
    })
}
