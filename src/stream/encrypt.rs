//! Writing messages: the header, frames sealed in parallel batches, the final frame and
//! the footer.

use std::io::{self, Read, Write};

use rayon::prelude::*;

use super::{EncryptOptions, INLINE_BYTES, min_frames_per_task};
use crate::Error;
use crate::crypto::{AeadKey, MessageHasher, SigningKey, derive_message_keys, random_bytes};
use crate::format::{
    BodyAad, ContentKind, FINAL_FRAME_OVERHEAD, FrameHeader, IV_LEN, REGULAR_FRAME_OVERHEAD,
    TAG_LEN, encode_footer, frame_iv,
};
use crate::keys::EncryptionMaterials;

/// The last sequence number a regular frame may carry: `0xFFFFFFFF` is the final-frame
/// marker, so only the final frame can use it.
const MAX_REGULAR_SEQ: u64 = u32::MAX as u64 - 1;

/// Seals one message's frames in order; owns the content key and the running signature
/// hash.
struct FrameSealer {
    message_id: Vec<u8>,
    key: AeadKey,
    frame_length: usize,
    next_seq: u64,
    signer: Option<(SigningKey, MessageHasher)>,
}

impl FrameSealer {
    /// Derives the message keys and builds the authenticated header.
    fn start(
        materials: &EncryptionMaterials,
        options: &EncryptOptions,
        message_id: Option<[u8; 32]>,
    ) -> Result<(Self, Vec<u8>), Error> {
        options.validate()?;
        let suite = materials.suite;
        if !suite.is_committing() {
            return Err(Error::Config(format!(
                "sealpipe writes only key-committing suites (0x0478, 0x0578), not {suite}"
            )));
        }
        let data_key = materials
            .data_key
            .as_ref()
            .filter(|k| k.len() == suite.key_len)
            .ok_or_else(|| {
                Error::Config("materials carry no data key of the suite's length".into())
            })?;
        let message_id = match message_id {
            Some(id) => id,
            None => {
                let mut id = [0u8; 32];
                random_bytes(&mut id)?;
                id
            }
        };
        let keys = derive_message_keys(&suite, data_key, &message_id);
        // Everything but the message ID, frame length and commitment was encoded once for
        // the materials; a message only patches those in and computes its tag.
        let shared = materials.shared_header()?;
        let auth_only = &shared.authenticate_only;
        let mut header = Vec::with_capacity(shared.template.len() + auth_only.len() + TAG_LEN);
        let commitment = keys.commitment.as_ref().map_or(&[][..], |c| &c[..]);
        shared
            .template
            .encode(&message_id, options.frame_length, commitment, &mut header)?;
        let body_len = header.len();
        // The tag's AAD is the body followed by the authenticate-only pairs: built in
        // place, then cut back to the body before the tag is appended.
        header.extend_from_slice(auth_only);
        let key = AeadKey::new(options.aead, &keys.content_key);
        let tag = key.seal_in_place(&[0u8; IV_LEN], &header, &mut []);
        header.truncate(body_len);
        header.extend_from_slice(&tag);
        let signer = match (&materials.signing_key, suite.signature) {
            (Some(k), Some(curve)) if k.curve() == curve => {
                let mut hasher = MessageHasher::new(curve);
                hasher.update(&header);
                Some((k.clone(), hasher))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "the signing key does not match the suite's signature algorithm".into(),
                ));
            }
        };
        Ok((
            Self {
                message_id: message_id.to_vec(),
                key,
                frame_length: options.frame_length as usize,
                next_seq: 1,
                signer,
            },
            header,
        ))
    }

    /// Seals `plaintext` (a whole number of frames) as regular frames into `out`, which
    /// must be exactly `frames * (frame_length + 32)` bytes.
    fn seal_regular(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<(), Error> {
        let l = self.frame_length;
        let frames = plaintext.len() / l;
        debug_assert_eq!(plaintext.len() % l, 0);
        debug_assert_eq!(out.len(), frames * (l + REGULAR_FRAME_OVERHEAD));
        let first = self.next_seq;
        if first + frames as u64 - 1 > MAX_REGULAR_SEQ {
            return Err(Error::TooLarge("a message holds at most 2^32 - 1 frames"));
        }
        let (key, message_id) = (&self.key, &self.message_id[..]);
        let seal = |i: usize, (slot, pt): (&mut [u8], &[u8])| {
            let seq = (first + i as u64) as u32;
            let (head, rest) = slot.split_at_mut(4 + IV_LEN);
            FrameHeader::encode_regular(seq, head.try_into().expect("4 + IV bytes"));
            let (content, tag) = rest.split_at_mut(l);
            content.copy_from_slice(pt);
            let aad = BodyAad::new(message_id, ContentKind::Frame, seq, l as u64);
            tag.copy_from_slice(&key.seal_in_place(&frame_iv(seq), aad.as_bytes(), content));
        };
        if plaintext.len() < INLINE_BYTES {
            // Never the pool: see `INLINE_BYTES`.
            out.chunks_mut(l + REGULAR_FRAME_OVERHEAD)
                .zip(plaintext.chunks(l))
                .enumerate()
                .for_each(|(i, frame)| seal(i, frame));
        } else {
            out.par_chunks_mut(l + REGULAR_FRAME_OVERHEAD)
                .zip(plaintext.par_chunks(l))
                .with_min_len(min_frames_per_task(l))
                .enumerate()
                .for_each(|(i, frame)| seal(i, frame));
        }
        self.next_seq += frames as u64;
        if let Some((_, hasher)) = &mut self.signer {
            hasher.update(out);
        }
        Ok(())
    }

    /// Seals the regular frames laid out in `out` (a whole number of slots of
    /// `frame_length + 32` bytes), whose content is in place already: writes their
    /// headers and tags, encrypts the content where it is.
    fn seal_slots(&mut self, out: &mut [u8], pool: bool) -> Result<(), Error> {
        let l = self.frame_length;
        let stride = l + REGULAR_FRAME_OVERHEAD;
        let frames = out.len() / stride;
        debug_assert_eq!(out.len() % stride, 0);
        let first = self.next_seq;
        if first + frames as u64 > MAX_REGULAR_SEQ + 1 {
            return Err(Error::TooLarge("a message holds at most 2^32 - 1 frames"));
        }
        let (key, message_id) = (&self.key, &self.message_id[..]);
        let seal = |i: usize, slot: &mut [u8]| {
            let seq = (first + i as u64) as u32;
            let (head, rest) = slot.split_at_mut(4 + IV_LEN);
            FrameHeader::encode_regular(seq, head.try_into().expect("4 + IV bytes"));
            let (content, tag) = rest.split_at_mut(l);
            let aad = BodyAad::new(message_id, ContentKind::Frame, seq, l as u64);
            tag.copy_from_slice(&key.seal_in_place(&frame_iv(seq), aad.as_bytes(), content));
        };
        if frames * l < INLINE_BYTES || !pool {
            // Never the pool: see `INLINE_BYTES`, `pool_is_worth_it`.
            out.chunks_mut(stride)
                .enumerate()
                .for_each(|(i, slot)| seal(i, slot));
        } else {
            out.par_chunks_mut(stride)
                .with_min_len(min_frames_per_task(l))
                .enumerate()
                .for_each(|(i, slot)| seal(i, slot));
        }
        self.next_seq += frames as u64;
        if let Some((_, hasher)) = &mut self.signer {
            hasher.update(out);
        }
        Ok(())
    }

    /// Appends `plaintext` (a whole number of frames, less than [`INLINE_BYTES`]) to
    /// `out` as regular frames, sealed on this thread: nothing is zeroed first.
    fn append_regular(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        debug_assert!(plaintext.len() < INLINE_BYTES);
        let l = self.frame_length;
        let frames = plaintext.len() / l;
        if self.next_seq + frames as u64 > MAX_REGULAR_SEQ + 1 {
            return Err(Error::TooLarge("a message holds at most 2^32 - 1 frames"));
        }
        let start = out.len();
        for pt in plaintext.chunks_exact(l) {
            let seq = self.next_seq as u32;
            let mut head = [0u8; 4 + IV_LEN];
            FrameHeader::encode_regular(seq, &mut head);
            out.extend_from_slice(&head);
            let content = out.len();
            out.extend_from_slice(pt);
            let aad = BodyAad::new(&self.message_id, ContentKind::Frame, seq, l as u64);
            let tag = self
                .key
                .seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut out[content..]);
            out.extend_from_slice(&tag);
            self.next_seq += 1;
        }
        if let Some((_, hasher)) = &mut self.signer {
            hasher.update(&out[start..]);
        }
        Ok(())
    }

    /// Appends the final frame and, for signing suites, the footer.
    ///
    /// The final frame is always shorter than a full frame: a plaintext that is an exact
    /// multiple of the frame length ends with an empty final frame. The specification
    /// prefers a full final frame there, but the Python ESDK (3.x) rejects one as
    /// "Invalid final frame length", and every ESDK accepts the empty form.
    fn seal_final(mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        debug_assert!(plaintext.len() < self.frame_length);
        let seq = u32::try_from(self.next_seq)
            .map_err(|_| Error::TooLarge("a message holds at most 2^32 - 1 frames"))?;
        let start = out.len();
        FrameHeader::encode_final(seq, plaintext.len() as u32, out);
        let content_start = out.len();
        out.extend_from_slice(plaintext);
        let aad = BodyAad::new(
            &self.message_id,
            ContentKind::FinalFrame,
            seq,
            plaintext.len() as u64,
        );
        let tag = self
            .key
            .seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut out[content_start..]);
        out.extend_from_slice(&tag);
        if let Some((key, mut hasher)) = self.signer.take() {
            hasher.update(&out[start..]);
            encode_footer(&key.sign(hasher)?, out);
        }
        Ok(())
    }
}

/// Encrypts a whole in-memory plaintext into one message, sealing frames on the rayon
/// pool. `message_id` is for reproducible output (tests); pass `None` for a random one.
///
/// `out` is overwritten. Reusing it across calls avoids faulting in fresh pages.
pub fn encrypt_to_vec(
    materials: &EncryptionMaterials,
    options: &EncryptOptions,
    message_id: Option<[u8; 32]>,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let (mut sealer, header) = FrameSealer::start(materials, options, message_id)?;
    let l = options.frame_length as usize;
    let regular = plaintext.len() / l;
    let (body, last) = plaintext.split_at(regular * l);
    let frames_len = regular * (l + REGULAR_FRAME_OVERHEAD);
    let total = header.len() + frames_len + FINAL_FRAME_OVERHEAD + last.len();
    if plaintext.len() < INLINE_BYTES {
        // Small: appended frame by frame on this thread, never the pool.
        out.clear();
        out.reserve(total);
        out.extend_from_slice(&header);
        sealer.append_regular(body, out)?;
        return sealer.seal_final(last, out);
    }
    if out.len() < total {
        if out.capacity() >= total {
            // A reused buffer: its pages are mapped already, so zeroing it costs less
            // than faulting in fresh ones.
            out.resize(total, 0);
        } else {
            // A fresh zeroed allocation comes from the OS lazily; pages are faulted in
            // by the threads that seal into them.
            *out = vec![0u8; total];
        }
    }
    out.truncate(header.len() + frames_len);
    out[..header.len()].copy_from_slice(&header);
    sealer.seal_regular(body, &mut out[header.len()..])?;
    sealer.seal_final(last, out)
}

/// A [`Write`] that encrypts everything written to it into one message on `inner`.
///
/// Call [`finish`](Self::finish) at the end: it writes the final frame (and footer);
/// dropping the writer without it leaves an incomplete message that no reader accepts.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    sealer: Option<FrameSealer>,
    /// Plaintext not yet sealed: `pending[..filled]`.
    pending: Vec<u8>,
    filled: usize,
    /// Plaintext bytes sealed per batch (whole frames).
    batch_len: usize,
    out: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
    /// Counted among the messages written or read in batches.
    _batching: super::Batching,
}

impl<W: Write> EncryptingWriter<W> {
    /// Starts a message on `inner`, writing its header immediately.
    pub fn new(
        inner: W,
        materials: &EncryptionMaterials,
        options: &EncryptOptions,
    ) -> Result<Self, Error> {
        Self::with_message_id(inner, materials, options, None)
    }

    /// Like [`new`](Self::new), with a chosen message ID (for reproducible output).
    pub fn with_message_id(
        mut inner: W,
        materials: &EncryptionMaterials,
        options: &EncryptOptions,
        message_id: Option<[u8; 32]>,
    ) -> Result<Self, Error> {
        let (sealer, header) = FrameSealer::start(materials, options, message_id)?;
        inner.write_all(&header)?;
        let batch_len = options.frames_per_batch() * options.frame_length as usize;
        Ok(Self {
            inner,
            sealer: Some(sealer),
            pending: Vec::new(),
            filled: 0,
            batch_len,
            out: Vec::new(),
            bytes_in: 0,
            bytes_out: header.len() as u64,
            _batching: super::Batching::start(),
        })
    }

    /// Reads `reader` to its end, encrypting as it goes. Reads go straight into the
    /// frames' places in the batch being sealed (one vectored read fills many), so the
    /// plaintext is never copied within this process: it is sealed where it was read.
    pub fn copy_from<R: Read>(&mut self, reader: &mut R) -> io::Result<u64> {
        if self.filled > 0 {
            // Plaintext written before is pending: it goes first, the ordinary way.
            return self.copy_through_pending(reader);
        }
        let sealer = self.sealer.as_mut().expect("not finished");
        let l = sealer.frame_length;
        let stride = l + REGULAR_FRAME_OVERHEAD;
        let frames = self.batch_len / l;
        self.out.resize(frames * stride, 0);
        let mut total = 0u64;
        loop {
            let mut got = 0;
            while got < self.batch_len {
                match read_into_slots(reader, &mut self.out, got, l) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            total += got as u64;
            self.bytes_in += got as u64;
            if got < self.batch_len {
                // The input ended: what was read goes to `finish`, which seals the last
                // frames, from the pending buffer.
                if self.pending.len() < got {
                    self.pending.resize(got, 0);
                }
                for (i, pt) in self.pending[..got].chunks_mut(l).enumerate() {
                    let at = i * stride + 4 + IV_LEN;
                    pt.copy_from_slice(&self.out[at..at + pt.len()]);
                }
                self.filled = got;
                return Ok(total);
            }
            sealer
                .seal_slots(&mut self.out, super::pool_is_worth_it())
                .map_err(io::Error::other)?;
            self.inner.write_all(&self.out)?;
            self.bytes_out += self.out.len() as u64;
        }
    }

    /// [`copy_from`](Self::copy_from) behind pending plaintext: read into the pending
    /// buffer, sealed from there.
    fn copy_through_pending<R: Read>(&mut self, reader: &mut R) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            self.reserve_pending();
            let n = match reader.read(&mut self.pending[self.filled..]) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.filled += n;
            total += n as u64;
            self.bytes_in += n as u64;
            self.seal_full_batches()?;
        }
    }

    /// Grows the pending buffer (up to one batch) so a read has room.
    fn reserve_pending(&mut self) {
        if self.filled < self.pending.len() {
            return;
        }
        let grown = (self.pending.len() * 2).clamp(64 * 1024, self.batch_len.max(64 * 1024));
        self.pending.resize(grown, 0);
    }

    /// Seals whole batches as soon as they are pending. Their frames are never the last
    /// one: a message whose length is a multiple of the frame length ends with an empty
    /// final frame (see `finish`), so nothing needs holding back.
    fn seal_full_batches(&mut self) -> io::Result<()> {
        while self.filled >= self.batch_len {
            let sealer = self.sealer.as_mut().expect("not finished");
            let frames = self.batch_len / sealer.frame_length;
            let out_len = frames * (sealer.frame_length + REGULAR_FRAME_OVERHEAD);
            self.out.resize(out_len, 0);
            sealer
                .seal_regular(&self.pending[..self.batch_len], &mut self.out)
                .map_err(io::Error::other)?;
            self.inner.write_all(&self.out)?;
            self.bytes_out += out_len as u64;
            self.pending.copy_within(self.batch_len..self.filled, 0);
            self.filled -= self.batch_len;
        }
        Ok(())
    }

    /// Seals what is left as the last frames, writes the footer, flushes, and returns the
    /// inner writer.
    pub fn finish(mut self) -> Result<(W, EncryptSummary), Error> {
        let sealer = self.sealer.take().expect("finish is called once");
        let mut sealer = sealer;
        let l = sealer.frame_length;
        let rest = &self.pending[..self.filled];
        let regular = rest.len() / l;
        let (body, last) = rest.split_at(regular * l);
        self.out.resize(regular * (l + REGULAR_FRAME_OVERHEAD), 0);
        sealer.seal_regular(body, &mut self.out)?;
        sealer.seal_final(last, &mut self.out)?;
        self.inner.write_all(&self.out)?;
        self.inner.flush()?;
        self.bytes_out += self.out.len() as u64;
        Ok((
            self.inner,
            EncryptSummary {
                plaintext_bytes: self.bytes_in,
                message_bytes: self.bytes_out,
            },
        ))
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let written = buf.len();
        while !buf.is_empty() {
            self.reserve_pending();
            let n = buf.len().min(self.pending.len() - self.filled);
            self.pending[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
            self.filled += n;
            self.bytes_in += n as u64;
            buf = &buf[n..];
            self.seal_full_batches()?;
        }
        Ok(written)
    }

    /// Flushes the inner writer. Pending plaintext stays pending: frames are sealed only
    /// when full, or at [`finish`](Self::finish).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads into the content places of the regular frames laid out in `out` (slots of
/// `l + 32` bytes), continuing at plaintext byte `at` of the batch: one vectored read
/// over every place left. Returns the bytes read.
fn read_into_slots<R: Read>(
    reader: &mut R,
    out: &mut [u8],
    at: usize,
    l: usize,
) -> io::Result<usize> {
    let stride = l + REGULAR_FRAME_OVERHEAD;
    let (first, offset) = (at / l, at % l);
    let mut places: Vec<io::IoSliceMut<'_>> = out[first * stride..]
        .chunks_mut(stride)
        .enumerate()
        .map(|(i, slot)| {
            let skip = if i == 0 { offset } else { 0 };
            io::IoSliceMut::new(&mut slot[4 + IV_LEN + skip..4 + IV_LEN + l])
        })
        .collect();
    reader.read_vectored(&mut places)
}

/// Sizes of one written message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncryptSummary {
    /// Plaintext bytes consumed.
    pub plaintext_bytes: u64,
    /// Message bytes written (header, frames, footer).
    pub message_bytes: u64,
}

/// Encrypts all of `reader` into one message on `writer`.
pub fn encrypt_stream<R: Read, W: Write>(
    materials: &EncryptionMaterials,
    options: &EncryptOptions,
    reader: &mut R,
    writer: W,
) -> Result<EncryptSummary, Error> {
    let mut enc = EncryptingWriter::new(writer, materials, options)?;
    enc.copy_from(reader)?;
    Ok(enc.finish()?.1)
}

const _: () = assert!(TAG_LEN == 16);
