//! Decrypting (or verifying) one object: its header read and checked against the policy
//! before any key is asked for, the data key unwrapped (or found in the cache), then
//! frames opened on rayon as the chunks arrive. Each frame is released only after its
//! tag verified, and the output is committed only after the whole message (and its
//! signature) did, so a tampered object never leaves partial plaintext behind.

use bytes::Bytes;

use super::marker::{self, Marker};
use super::{
    Failed, IN_MEMORY, MakeSink, Outcome, header, in_memory_work, run_through, write_whole,
};
use crate::bridge::Cancel;
use crate::format::{EncryptionContext, Header};
use crate::keys::{DecryptCache, Keyring};
use crate::store::{Body, Discard, ObjectMeta, Payload, Sink, SourceObject};
use crate::stream::{self, DecryptOptions, MessageDecryptor};

/// What reading a message needs: the keys that may unwrap its data key, the cache of
/// keys unwrapped before, and the policy and limits.
#[derive(Clone, Copy)]
pub struct Opener<'a> {
    /// Unwraps data keys.
    pub keyring: &'a dyn Keyring,
    /// Data keys unwrapped earlier in the job, by encrypted data keys and context.
    pub cache: &'a DecryptCache,
    /// Commitment policy, limits against hostile input, AES-GCM implementation.
    pub options: &'a DecryptOptions,
    /// Context pairs the message must carry (and authenticate-only pairs it needs).
    pub reproduced_context: &'a EncryptionContext,
}

impl Opener<'_> {
    /// Reads the header from `body` and makes it ready to decrypt: policy checked, data
    /// key unwrapped, key commitment and header tag verified. Returns the decryptor and
    /// the body bytes that arrived with the header.
    pub(super) async fn open(
        &self,
        body: &mut dyn Body,
    ) -> Result<(MessageDecryptor, Bytes), Failed> {
        let (header, rest) = header::read(body, &self.options.limits)
            .await
            .map_err(|e| Failed::new("decrypt", e))?;
        Ok((self.unlock(header).await?, rest))
    }

    /// Makes a message whose header was read already ready to decrypt: policy checked,
    /// data key unwrapped, key commitment and header tag verified.
    pub(super) async fn unlock(&self, header: Header) -> Result<MessageDecryptor, Failed> {
        stream::check_policy(&header, self.options).map_err(|e| Failed::new("decrypt", e))?;
        let materials = self
            .cache
            .materials(self.keyring, &header.body, self.reproduced_context)
            .await
            .map_err(|e| Failed::new("decrypt", e))?;
        MessageDecryptor::new(header, &materials, self.options)
            .map_err(|e| Failed::new("decrypt", e))
    }
}

/// Decrypts `source` into the sink `out` makes.
pub async fn decrypt(
    opener: Opener<'_>,
    source: SourceObject,
    out: &dyn MakeSink,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let marker = Marker::read(&source.info.meta);
    let mut meta = source.info.meta.clone();
    marker::strip(&mut meta);
    let hint = marker
        .as_ref()
        .and_then(|m| m.plaintext_length)
        .unwrap_or(source.info.size);
    let bytes_in = source.info.size;
    let mut body = source.body;
    let (decryptor, rest) = opener.open(body.as_mut()).await?;
    if let Some(tail) = body.take_if_in_memory(IN_MEMORY) {
        // Opened in memory: nothing is written before every tag verified.
        let (len, plaintext) = open_whole(decryptor, rest, tail).await?;
        check_length(marker.as_ref(), len)?;
        let sink = out
            .make(meta, Payload::Plaintext, len)
            .await
            .map_err(|e| Failed::new("write", e))?;
        let bytes_out = write_whole(sink, plaintext).await?;
        return Ok(Outcome::Done {
            bytes_in,
            bytes_out,
        });
    }
    let mut sink = out
        .make(meta, Payload::Plaintext, hint)
        .await
        .map_err(|e| Failed::new("write", e))?;
    // The marker's length is checked once every frame verified; a shorter message
    // fails the output, which is never completed either way.
    if let Some(len) = marker.as_ref().and_then(|m| m.plaintext_length) {
        sink.expect_at_least(len);
    }
    let (_, bytes_out) = run_through(
        "decrypt",
        (body, rest, cancel),
        sink,
        Box::new(move |reader, mut writer| decryptor.decrypt(reader, &mut writer)),
        |plaintext_len| check_length(marker.as_ref(), *plaintext_len),
    )
    .await?;
    // The whole message was read to get here: what came in is the ciphertext.
    Ok(Outcome::Done {
        bytes_in,
        bytes_out,
    })
}

/// Opens a message whose body is all in memory (`rest`, what came with the header, then
/// `tail`): its plaintext and length, nothing written anywhere before every tag verified.
pub(super) async fn open_whole(
    decryptor: MessageDecryptor,
    rest: Bytes,
    tail: Bytes,
) -> Result<(u64, Vec<u8>), Failed> {
    // Verifying a signature takes about a millisecond: not on a runtime thread.
    let signed = decryptor
        .header()
        .body
        .suite
        .known()
        .is_none_or(|suite| suite.signature.is_some());
    let small = rest.len() + tail.len() < stream::INLINE_BYTES && !signed;
    let open = move || {
        let mut body = std::io::Read::chain(std::io::Cursor::new(rest), std::io::Cursor::new(tail));
        let mut plaintext = Vec::new();
        let len = decryptor.decrypt(&mut body, &mut plaintext)?;
        Ok((len, plaintext))
    };
    if small {
        // Opened right here, without the pool (`INLINE_BYTES`): microseconds, less
        // than a hand-off to a blocking thread would cost.
        open().map_err(|e| Failed::new("decrypt", e))
    } else {
        in_memory_work("decrypt", open).await
    }
}

/// Checks every tag and signature of `source` and writes nothing.
pub async fn verify(
    opener: Opener<'_>,
    source: SourceObject,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    decrypt(opener, source, &Nowhere, cancel).await
}

/// `verify`'s destination.
pub(super) struct Nowhere;

impl MakeSink for Nowhere {
    fn make(
        &self,
        _: ObjectMeta,
        _: Payload,
        _: u64,
    ) -> crate::store::BoxFuture<'_, Result<Box<dyn Sink>, crate::Error>> {
        Box::pin(async { Ok(Box::new(Discard::default()) as Box<dyn Sink>) })
    }
}

/// The marker's plaintext length is not authenticated, but a mismatch means the
/// metadata and the body do not belong together: refuse rather than guess.
pub(super) fn check_length(marker: Option<&Marker>, actual: u64) -> Result<(), Failed> {
    match marker.and_then(|m| m.plaintext_length) {
        Some(expected) if expected != actual => Err(Failed::with_code(
            "LengthMismatch",
            format!(
                "decrypt: the message holds {actual} plaintext bytes but the object's \
                 sealpipe-plaintext-length metadata says {expected}"
            ),
        )),
        _ => Ok(()),
    }
}
