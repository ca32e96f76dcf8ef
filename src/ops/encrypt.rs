//! Encrypting one object: a data key from the pool, a new message whose frames are
//! sealed on rayon as the source's chunks arrive, committed once whole.

use std::sync::Arc;

use bytes::Bytes;

use super::marker::{self, Marker};
use super::{Failed, IN_MEMORY, MakeSink, Outcome, in_memory_work, run_through, write_whole};
use crate::Error;
use crate::bridge::Cancel;
use crate::format::EncryptionContext;
use crate::keys::{DataKeyPool, EncryptionMaterials};
use crate::store::{ObjectMeta, Payload, SourceInfo, SourceObject};
use crate::stream::{EncryptOptions, EncryptingWriter, INLINE_BYTES, encrypt_to_vec};

/// What writing a message needs: where data keys come from, the context bound to each
/// message, and how messages are laid out.
#[derive(Clone, Copy)]
pub struct Sealer<'a> {
    /// Data keys, shared by many messages.
    pub pool: &'a DataKeyPool,
    /// The encryption context of every message.
    pub context: &'a EncryptionContext,
    /// Frame length, AES-GCM implementation, batch size.
    pub options: &'a EncryptOptions,
}

impl Sealer<'_> {
    /// Materials for a message of about `plaintext` bytes.
    pub(super) async fn materials(
        &self,
        plaintext: u64,
    ) -> Result<Arc<EncryptionMaterials>, Failed> {
        self.pool
            .materials(self.context, plaintext)
            .await
            .map_err(|e| Failed::new("data key", e))
    }

    /// A message's size for `plaintext` bytes, roughly (frame overhead plus a header).
    pub(super) fn message_size_hint(&self, plaintext: u64) -> u64 {
        let frame = u64::from(self.options.frame_length.max(1));
        plaintext + plaintext.div_ceil(frame) * 32 + 4096
    }

    /// The least a message for `plaintext` bytes can be: each whole frame adds at least
    /// its sequence number, IV and tag; the header and the final frame only add more.
    pub(super) fn message_size_floor(&self, plaintext: u64) -> u64 {
        match u64::from(self.options.frame_length) {
            0 => plaintext,
            frame => plaintext + plaintext / frame * 32,
        }
    }

    /// Seals `plaintext`, held in memory, as one message and writes it whole to the
    /// sink `out` makes for `meta`. Returns the message's size. The message is sealed
    /// into the buffer the sink lends, so its pages are reused from earlier objects
    /// rather than faulted in for each one.
    pub(super) async fn seal_whole(
        &self,
        materials: Arc<EncryptionMaterials>,
        plaintext: impl AsRef<[u8]> + Send + 'static,
        meta: ObjectMeta,
        out: &dyn MakeSink,
    ) -> Result<u64, Failed> {
        let hint = self.message_size_hint(plaintext.as_ref().len() as u64);
        // Signing takes an ECDSA signature, about a millisecond: not on a runtime thread.
        let small = plaintext.as_ref().len() < INLINE_BYTES && materials.signing_key.is_none();
        let mut sink = out
            .make(meta, Payload::Message, hint)
            .await
            .map_err(|e| Failed::new("write", e))?;
        let lent = match sink.lend().await {
            Ok(buf) => Vec::from(buf),
            Err(e) => {
                sink.abort().await;
                return Err(Failed::new("write", e));
            }
        };
        let options = self.options.clone();
        let seal = move || {
            let mut message = lent;
            encrypt_to_vec(&materials, &options, None, plaintext.as_ref(), &mut message)?;
            Ok(message)
        };
        let sealed = if small {
            // Sealed right here, without the pool (`INLINE_BYTES`): microseconds, less
            // than a hand-off to a blocking thread would cost.
            seal().map_err(|e| Failed::new("encrypt", e))
        } else {
            in_memory_work("encrypt", seal).await
        };
        match sealed {
            Ok(message) => write_whole(sink, message).await,
            Err(failed) => {
                sink.abort().await;
                Err(failed)
            }
        }
    }

    /// The new message's metadata: the source's plus sealpipe's marker.
    pub(super) fn output_meta(
        source: &SourceInfo,
        materials: &EncryptionMaterials,
        plaintext_length: Option<u64>,
    ) -> ObjectMeta {
        let marker = Marker {
            source_etag: source.etag.clone(),
            source_version: source.version.clone(),
            plaintext_length,
            wrapping_keys: marker::wrapping_key_names(&materials.encrypted_data_keys),
        };
        let mut meta = source.meta.clone();
        marker.write(&mut meta);
        meta
    }
}

/// Encrypts `source` into one new message, written to the sink `out` makes.
pub async fn encrypt(
    sealer: Sealer<'_>,
    source: SourceObject,
    out: &dyn MakeSink,
    cancel: &Cancel,
) -> Result<Outcome, Failed> {
    let size = source.info.size;
    let materials = sealer.materials(size).await?;
    let meta = Sealer::output_meta(&source.info, &materials, Some(size));
    let mut body = source.body;
    if let Some(whole) = body.take_if_in_memory(IN_MEMORY) {
        if cancel.is_cancelled() {
            return Err(Failed::new("encrypt", Error::Cancelled));
        }
        if whole.len() as u64 != size {
            return Err(Failed::with_code(
                "IOError",
                format!("read: {} bytes arrived of {size}", whole.len()),
            ));
        }
        let bytes_out = sealer.seal_whole(materials, whole, meta, out).await?;
        return Ok(Outcome::Done {
            bytes_in: size,
            bytes_out,
        });
    }
    let mut sink = out
        .make(meta, Payload::Message, sealer.message_size_hint(size))
        .await
        .map_err(|e| Failed::new("write", e))?;
    // The source's size is known (and pinned by its ETag): so is most of the message's.
    sink.expect_at_least(sealer.message_size_floor(size));
    let options = sealer.options.clone();
    let (plaintext_bytes, bytes_out) = run_through(
        "encrypt",
        (body, Bytes::new(), cancel),
        sink,
        Box::new(move |reader, writer| {
            let mut message = EncryptingWriter::new(writer, &materials, &options)?;
            message.copy_from(reader)?;
            let (_, summary) = message.finish()?;
            Ok(summary.plaintext_bytes)
        }),
        |_| Ok(()),
    )
    .await?;
    Ok(Outcome::Done {
        bytes_in: plaintext_bytes,
        bytes_out,
    })
}
