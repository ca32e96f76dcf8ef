//! Reading messages in two phases: [`read_header`] parses the header without any key,
//! so the caller can check policy and ask a keyring for the data key; then a
//! [`MessageDecryptor`] authenticates the header and decrypts the body.

use std::io::{self, Read, Write};

use rayon::prelude::*;

use super::{DecryptOptions, frames_per_batch, min_frames_per_task};
use crate::Error;
use crate::crypto::{
    AeadKey, MessageHasher, VerifyingKey, commitment_matches, derive_message_keys,
};
use crate::format::{
    AlgorithmSuite, BodyAad, ContentKind, ContentType, DecodeError, DecodeLimits, FrameHeader,
    FrameStart, Header, IV_LEN, PUBLIC_KEY_CONTEXT_KEY, REGULAR_FRAME_OVERHEAD, SingleBlockHeader,
    TAG_LEN, decode_footer,
};
use crate::keys::DecryptionMaterials;

/// Plaintext bytes opened per parallel batch: smaller than sealing's
/// ([`DEFAULT_BATCH_BYTES`](super::DEFAULT_BATCH_BYTES)) because every byte opened is
/// copied twice (read into its batch, then written out) and AES-GCM runs in between:
/// three batches in flight must stay in each core's cache, or all three passes go to
/// memory. With 64 KiB frames on 2 cores, 1 MiB batches opened about 2.7 GiB per
/// CPU-second and 256 KiB batches about 3.3 to 3.9 (`sealpipe bench`); memory copies,
/// not AES-GCM, are most of the work. [`frames_per_batch`] still keeps every thread
/// busy.
const OPEN_BATCH_BYTES: usize = 256 * 1024;

/// Batches smaller than this are opened on the reading thread, not handed to the pool:
/// below two tasks' worth of frames the pool would open them on one thread anyway.
const INLINE_BATCH_BYTES: usize = super::INLINE_BYTES;

/// Reads and parses a message header from `reader`.
///
/// Returns the header and any bytes read past it (the start of the body); chain them in
/// front of `reader` for [`MessageDecryptor::decrypt`]. Reads at most
/// `limits.max_header_len` bytes plus one read's worth.
pub fn read_header<R: Read>(
    reader: &mut R,
    limits: &DecodeLimits,
) -> Result<(Header, Vec<u8>), Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut at_end = false;
    loop {
        match header_step(&buf, limits, at_end)? {
            HeaderStep::Done(header, used) => return Ok((header, buf.split_off(used))),
            HeaderStep::ReadUntil(target) => {
                while buf.len() < target {
                    let n = read_some(reader, &mut chunk)?;
                    if n == 0 {
                        at_end = true;
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// What reading a header into a buffer needs next: the decoder's verdict on what is
/// buffered, for [`read_header`] here and for readers of async bodies.
#[derive(Debug)]
pub enum HeaderStep {
    /// The header, and how many bytes of the buffer it took.
    Done(Header, usize),
    /// Read until the buffer holds this many bytes (or the input ends), then ask again.
    ReadUntil(usize),
}

/// Decodes the header in `buf` if it is whole, else says how much to buffer before the
/// next attempt. `at_end`: the input has nothing more.
///
/// Every attempt decodes from the first byte again, so attempts must be few: each one
/// waits for what the decoder needs and at least doubles what is buffered. The work
/// stays linear in the header's length (a 4 MB header took 1.2 s when every 4 KiB read
/// meant a new attempt). At most `limits.max_header_len + 1` bytes are asked for.
pub fn header_step(buf: &[u8], limits: &DecodeLimits, at_end: bool) -> Result<HeaderStep, Error> {
    let too_long = || -> Error {
        DecodeError::HeaderTooLong {
            max: limits.max_header_len,
        }
        .into()
    };
    match Header::decode(buf, limits) {
        Ok((_, used)) if used > limits.max_header_len => Err(too_long()),
        Ok((header, used)) => Ok(HeaderStep::Done(header, used)),
        Err(DecodeError::Truncated { .. }) if buf.len() > limits.max_header_len => Err(too_long()),
        Err(DecodeError::Truncated { needed }) if at_end => Err(Error::Truncated(format!(
            "input ends inside the header ({} of at least {needed} bytes)",
            buf.len()
        ))),
        Err(DecodeError::Truncated { needed }) => Ok(HeaderStep::ReadUntil(
            needed
                .max(buf.len().saturating_mul(2))
                .max(buf.len() + 1)
                .min(limits.max_header_len.saturating_add(1)),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Checks a parsed header against the decryption policy, before any key is fetched.
///
/// Refuses suites this build does not know (the format layer keeps them representable),
/// and returns the known suite. Also enforces that signing suites carry the verification
/// key in the context and other suites do not, so a malformed message never costs a
/// keyring call.
pub(crate) fn check_policy(
    header: &Header,
    options: &DecryptOptions,
) -> Result<AlgorithmSuite, Error> {
    let named = header.body.suite;
    let suite = named
        .known()
        .ok_or(Error::UnsupportedSuite { id: named.id })?;
    if !options.commitment_policy.allows_decrypt(&suite) {
        return Err(Error::CommitmentPolicy {
            suite,
            policy: options.commitment_policy,
        });
    }
    match (
        suite.signature.is_some(),
        header.body.context.contains_key(PUBLIC_KEY_CONTEXT_KEY),
    ) {
        (true, false) => Err(Error::Context(format!(
            "suite {suite} signs, but the context has no {PUBLIC_KEY_CONTEXT_KEY}"
        ))),
        (false, true) => Err(Error::Context(format!(
            "suite {suite} does not sign, but the context has {PUBLIC_KEY_CONTEXT_KEY}"
        ))),
        _ => Ok(suite),
    }
}

/// Decrypts one message's body once its header has been authenticated.
pub struct MessageDecryptor {
    header: Header,
    key: AeadKey,
    verifier: Option<(VerifyingKey, MessageHasher)>,
    max_frame_length: u32,
}

impl MessageDecryptor {
    /// Checks the policy, the key commitment and the header tag.
    pub fn new(
        header: Header,
        materials: &DecryptionMaterials,
        options: &DecryptOptions,
    ) -> Result<Self, Error> {
        let suite = check_policy(&header, options)?;
        let body = &header.body;
        if materials.data_key.len() != suite.key_len {
            return Err(Error::Config(format!(
                "data key is {} bytes; suite {suite} needs {}",
                materials.data_key.len(),
                suite.key_len
            )));
        }
        let keys = derive_message_keys(&suite, &materials.data_key, &body.message_id);
        if let Some(expected) = &keys.commitment {
            // Before anything else is trusted: a message that decrypts differently under
            // different keys stops here.
            if !commitment_matches(expected, &body.suite_data) {
                return Err(Error::CommitmentMismatch);
            }
        }
        let key = AeadKey::new(options.aead, &keys.content_key);
        let mut aad = header.body_bytes.clone();
        aad.extend_from_slice(&materials.authenticate_only_context.serialize()?);
        key.open_in_place(&header.auth.iv, &aad, &mut [], &header.auth.tag)
            .map_err(|_| Error::HeaderAuthentication)?;
        let verifier = match suite.signature {
            Some(curve) => {
                // Present: `check_policy` above requires it for signing suites.
                let value = body.context.get(PUBLIC_KEY_CONTEXT_KEY).unwrap_or_default();
                let mut hasher = MessageHasher::new(curve);
                hasher.update(&header.to_bytes());
                Some((VerifyingKey::from_base64(curve, value)?, hasher))
            }
            None => None,
        };
        Ok(Self {
            header,
            key,
            verifier,
            max_frame_length: options.limits.max_frame_length,
        })
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decrypts the body from `body` into `out` and returns the plaintext length.
    ///
    /// Each frame is written only after its tag verifies; the final frame of a signed
    /// message only after the signature verifies. `out` still receives the plaintext of
    /// earlier frames before a later frame fails, so write to a temporary destination and
    /// publish it only when this returns `Ok` (the CLI and pipeline do).
    ///
    /// `body` is `Send` because it is read on another thread than `out` is written on.
    pub fn decrypt<R: Read + Send, W: Write>(
        mut self,
        body: &mut R,
        out: &mut W,
    ) -> Result<u64, Error> {
        let plaintext_len = match self.header.body.content_type {
            ContentType::Framed => self.decrypt_frames(body, out)?,
            ContentType::NonFramed => self.decrypt_single_block(body, out)?,
        };
        Ok(plaintext_len)
    }

    fn decrypt_frames<R: Read + Send, W: Write>(
        &mut self,
        body: &mut R,
        out: &mut W,
    ) -> Result<u64, Error> {
        let frame_length = self.header.body.frame_length;
        let l = frame_length as usize;
        let stride = l + REGULAR_FRAME_OVERHEAD;
        let per_batch = frames_per_batch(OPEN_BATCH_BYTES, frame_length);
        let message_id = self.header.body.message_id.clone();
        let mut frames = FrameReader {
            frame_length,
            stride,
            batch_len: per_batch * stride,
            expected: 1,
            rest: Vec::new(),
        };
        // Three batches in flight: `done` (opened, being written), `cur` (being opened on
        // the pool) and `next` (being read). Writing and reading run on this thread while
        // the pool opens, so the copies overlap AES-GCM instead of alternating with it.
        // Both stay off the pool: `body` and `out` may wait on the network (a source's
        // chunks still arriving, a sink's buffer still uploading), and a pool thread
        // blocked on I/O is a core that opens nothing, for every message in flight.
        let _batching = super::Batching::start();
        let (mut done, mut cur, mut next) = (Batch::default(), Batch::default(), Batch::default());
        frames.read_batch(body, &mut cur, &mut self.verifier)?;
        let mut written = 0u64;
        loop {
            let key = &self.key;
            let cur_last = cur.last;
            let mut opened = Ok(());
            let mut wrote = Ok(0);
            let mut read = Ok(());
            if cur.frames * stride < INLINE_BATCH_BYTES || !super::pool_is_worth_it() {
                // Too little to open for a pool thread to be worth waking: small messages
                // (most have no regular frame at all) would each pay a hand-off and a
                // wake-up for nothing. Likewise when other messages keep every core busy
                // (`pool_is_worth_it`).
                opened = cur.open(key, &message_id, frame_length);
                wrote = done.write_contents(out, stride, l);
                if !cur_last && wrote.is_ok() {
                    read = frames.read_batch(body, &mut next, &mut self.verifier);
                }
            } else {
                rayon::in_place_scope(|scope| {
                    let (cur, opened) = (&mut cur, &mut opened);
                    let message_id = &message_id;
                    scope.spawn(move |_| {
                        *opened = cur.open(key, message_id, frame_length);
                    });
                    wrote = done.write_contents(out, stride, l);
                    if !cur_last && wrote.is_ok() {
                        read = frames.read_batch(body, &mut next, &mut self.verifier);
                    }
                });
            }
            opened?;
            written += wrote?;
            read?;
            std::mem::swap(&mut done, &mut cur);
            if done.last {
                written += done.write_contents(out, stride, l)?;
                let mut body = io::Cursor::new(std::mem::take(&mut frames.rest)).chain(body);
                let plaintext = self.read_final_frame(&mut body, frames.expected)?;
                self.finish(&mut body)?;
                out.write_all(&plaintext)?;
                return Ok(written + plaintext.len() as u64);
            }
            std::mem::swap(&mut cur, &mut next);
        }
    }

    /// Reads and opens the final frame: `body` starts at its marker.
    fn read_final_frame<R: Read>(&mut self, body: &mut R, expected: u64) -> Result<Vec<u8>, Error> {
        let mut head = [0u8; FrameHeader::FINAL_LEN];
        read_exact_or_truncated(body, &mut head, || {
            "input ends inside the final frame header".into()
        })?;
        let (fh, _) = FrameHeader::decode(&head, self.header.body.frame_length)?;
        if u64::from(fh.seq) != expected {
            return Err(Error::FrameSequence {
                expected,
                found: fh.seq,
            });
        }
        let len = fh.content_len(self.header.body.frame_length) as usize;
        self.read_and_open(body, &head, len, ContentKind::FinalFrame, fh.seq, &fh.iv)
    }

    /// Reads `len` content bytes and their tag after the already-read `head`, feeds both
    /// to the signature hash, and opens them (the final frame or the non-framed body).
    fn read_and_open<R: Read>(
        &mut self,
        body: &mut R,
        head: &[u8],
        len: usize,
        kind: ContentKind,
        seq: u32,
        iv: &[u8; IV_LEN],
    ) -> Result<Vec<u8>, Error> {
        let mut content = Vec::new();
        read_bounded(body, &mut content, len + TAG_LEN, || {
            format!("input ends inside frame {seq}")
        })?;
        if let Some((_, hasher)) = &mut self.verifier {
            hasher.update(head);
            hasher.update(&content);
        }
        let tag: [u8; TAG_LEN] = content[len..].try_into().expect("tag bytes");
        content.truncate(len);
        let aad = BodyAad::new(&self.header.body.message_id, kind, seq, len as u64);
        self.key
            .open_in_place(iv, aad.as_bytes(), &mut content, &tag)
            .map_err(|_| Error::FrameAuthentication { seq })?;
        Ok(content)
    }

    fn decrypt_single_block<R: Read, W: Write>(
        &mut self,
        body: &mut R,
        out: &mut W,
    ) -> Result<u64, Error> {
        let mut head = [0u8; SingleBlockHeader::LEN];
        read_exact_or_truncated(body, &mut head, || {
            "input ends inside the body header".into()
        })?;
        let block = SingleBlockHeader::decode(&head)?;
        // The whole content must be held before its single tag can be checked, so it is
        // bounded like a frame.
        let max = u64::from(self.max_frame_length);
        if block.content_len > max {
            return Err(DecodeError::FrameTooLong {
                len: block.content_len,
                max: max as u32,
            }
            .into());
        }
        let len = block.content_len as usize;
        let content =
            self.read_and_open(body, &head, len, ContentKind::SingleBlock, 1, &block.iv)?;
        self.finish(body)?;
        out.write_all(&content)?;
        Ok(len as u64)
    }

    /// Verifies the footer (signed suites) and that nothing follows the message.
    fn finish<R: Read>(&mut self, body: &mut R) -> Result<(), Error> {
        if let Some((key, hasher)) = self.verifier.take() {
            let mut len = [0u8; 2];
            read_exact_or_truncated(body, &mut len, || "input ends before the footer".into())?;
            let mut footer = len.to_vec();
            read_bounded(body, &mut footer, u16::from_be_bytes(len) as usize, || {
                "input ends inside the footer".into()
            })?;
            let (signature, _) = decode_footer(&footer)?;
            key.verify(hasher, signature)?;
        }
        let mut probe = [0u8; 1];
        if read_some(body, &mut probe)? != 0 {
            return Err(Error::TrailingData);
        }
        Ok(())
    }
}

/// Regular frames as read from the message, laid out at a fixed stride.
#[derive(Default)]
struct Batch {
    /// The frames are `buf[..frames * stride]`. The buffer grows with what was read and
    /// is kept from batch to batch, so it is neither cleared nor reallocated.
    buf: Vec<u8>,
    frames: usize,
    /// Whether the final frame follows these frames.
    last: bool,
}

impl Batch {
    /// Opens every frame in place on the rayon pool.
    fn open(&mut self, key: &AeadKey, message_id: &[u8], frame_length: u32) -> Result<(), Error> {
        let l = frame_length as usize;
        let stride = l + REGULAR_FRAME_OVERHEAD;
        self.buf[..self.frames * stride]
            .par_chunks_mut(stride)
            .with_min_len(min_frames_per_task(l))
            .try_for_each(|slot| {
                // Checked when the batch was read; decoding again costs a few bytes.
                let (fh, head_len) = FrameHeader::decode(slot, frame_length)?;
                let (content, tag) = slot[head_len..].split_at_mut(l);
                let tag: &[u8; TAG_LEN] = (&*tag).try_into().expect("a slot ends with a tag");
                let aad = BodyAad::new(message_id, ContentKind::Frame, fh.seq, l as u64);
                key.open_in_place(&fh.iv, aad.as_bytes(), content, tag)
                    .map_err(|_| Error::FrameAuthentication { seq: fh.seq })
            })
    }

    /// Writes the content of every (opened) frame; returns the bytes written.
    fn write_contents<W: Write>(&self, out: &mut W, stride: usize, l: usize) -> io::Result<u64> {
        for slot in self.buf[..self.frames * stride].chunks(stride) {
            out.write_all(&slot[FrameHeader::REGULAR_LEN..FrameHeader::REGULAR_LEN + l])?;
        }
        Ok((self.frames * l) as u64)
    }
}

/// Reads the regular frames of a message a batch at a time, checking their headers.
struct FrameReader {
    frame_length: u32,
    stride: usize,
    /// Bytes read per batch: a whole number of regular frames.
    batch_len: usize,
    /// The sequence number the next frame must carry.
    expected: u64,
    /// What was read past the last regular frame: the start of the final frame.
    rest: Vec<u8>,
}

impl FrameReader {
    /// Fills `batch` with the next regular frames in one bulk read, straight into their
    /// slots, and feeds them to the signature hash. Stops at the final frame, leaving
    /// the bytes read from it on in `self.rest`.
    fn read_batch<R: Read>(
        &mut self,
        body: &mut R,
        batch: &mut Batch,
        verifier: &mut Option<(VerifyingKey, MessageHasher)>,
    ) -> Result<(), Error> {
        let n = fill(body, &mut batch.buf, self.batch_len)?;
        let ended = n < self.batch_len;
        let bytes = &batch.buf[..n];
        let mut at = 0;
        batch.last = loop {
            let slot = &bytes[at..];
            if slot.len() >= self.stride {
                let (fh, _) = FrameHeader::decode(slot, self.frame_length)?;
                if fh.final_len.is_some() {
                    break true;
                }
                self.check_seq(fh.seq)?;
                at += self.stride;
                continue;
            }
            if !ended {
                // A full read is a whole number of slots, all consumed.
                break false;
            }
            match FrameStart::decode(slot) {
                Ok(FrameStart::Final) => break true,
                Ok(FrameStart::Regular(seq)) => {
                    self.check_seq(seq)?;
                    return Err(Error::Truncated(format!("input ends inside frame {seq}")));
                }
                Err(_) => {
                    return Err(Error::Truncated(format!(
                        "input ends after frame {} without a final frame",
                        self.expected - 1
                    )));
                }
            }
        };
        batch.frames = at / self.stride;
        if batch.last {
            self.rest = bytes[at..].to_vec();
        }
        if let Some((_, hasher)) = verifier {
            hasher.update(&bytes[..at]);
        }
        Ok(())
    }

    fn check_seq(&mut self, seq: u32) -> Result<(), Error> {
        if u64::from(seq) != self.expected {
            return Err(Error::FrameSequence {
                expected: self.expected,
                found: seq,
            });
        }
        self.expected += 1;
        Ok(())
    }
}

/// The smallest buffer a batch read starts with.
const MIN_READ: usize = 16 * 1024;

/// Reads into `buf[..target]` until it is full or the input ends; returns the bytes
/// read. `buf` grows with the bytes actually read (doubling), so a short message costs
/// no more than about twice its size in zeroed memory, however large its frames.
fn fill<R: Read>(body: &mut R, buf: &mut Vec<u8>, target: usize) -> Result<usize, Error> {
    let mut filled = 0;
    while filled < target {
        if filled == buf.len() {
            let grown = buf.len().saturating_mul(2).clamp(MIN_READ, target);
            buf.resize(grown, 0);
        }
        let end = buf.len().min(target);
        match body.read(&mut buf[filled..end]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

/// Decrypts one message from `input` to `out`: reads the header, checks the policy,
/// asks `materials_for` for the data key (the keyring step), then authenticates and
/// decrypts. Returns the header and the plaintext length.
pub fn decrypt_with<R: Read + Send, W: Write>(
    input: &mut R,
    out: &mut W,
    options: &DecryptOptions,
    materials_for: impl FnOnce(&Header) -> Result<DecryptionMaterials, Error>,
) -> Result<(Header, u64), Error> {
    let (header, rest) = read_header(input, &options.limits)?;
    check_policy(&header, options)?;
    let materials = materials_for(&header)?;
    let decryptor = MessageDecryptor::new(header, &materials, options)?;
    let header = decryptor.header().clone();
    let mut body = io::Cursor::new(rest).chain(input);
    let len = decryptor.decrypt(&mut body, out)?;
    Ok((header, len))
}

fn read_some<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn read_exact_or_truncated<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated(what()),
        _ => Error::Io(e),
    })
}

/// Appends exactly `len` bytes to `buf`. Memory grows with the bytes actually read, so a
/// hostile length cannot make us allocate more than the input really holds.
fn read_bounded<R: Read>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    len: usize,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    let before = buf.len();
    reader.take(len as u64).read_to_end(buf)?;
    if buf.len() - before != len {
        return Err(Error::Truncated(what()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::bench_materials;
    use crate::format::{EncryptionContext, MessageVersion};
    use crate::stream::{EncryptOptions, encrypt_to_vec};

    fn message() -> (Vec<u8>, crate::crypto::DataKey) {
        let materials =
            bench_materials(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY).unwrap();
        let mut out = Vec::new();
        encrypt_to_vec(
            &materials,
            &EncryptOptions::default(),
            None,
            b"hello",
            &mut out,
        )
        .unwrap();
        (out, materials.data_key.unwrap())
    }

    fn decrypt(message: &[u8], key: &crate::crypto::DataKey) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        decrypt_with(
            &mut &message[..],
            &mut out,
            &DecryptOptions::default(),
            |_| {
                Ok(DecryptionMaterials {
                    data_key: key.clone(),
                    authenticate_only_context: EncryptionContext::new(),
                })
            },
        )?;
        Ok(out)
    }

    #[test]
    fn an_unknown_suite_decodes_but_decryption_refuses_it_before_any_key() {
        let (mut message, key) = message();
        assert_eq!(decrypt(&message, &key).unwrap(), b"hello");
        message[1..3].copy_from_slice(&0x1234u16.to_be_bytes());
        let (header, _) = read_header(&mut &message[..], &DecodeLimits::default()).unwrap();
        assert_eq!(
            (header.body.suite.id, header.body.suite.known()),
            (0x1234, None)
        );
        assert_eq!(header.body.suite.version, MessageVersion::V2);
        let err = decrypt_with(
            &mut &message[..],
            &mut Vec::new(),
            &DecryptOptions::default(),
            |_| -> Result<DecryptionMaterials, Error> {
                panic!("the keyring is asked for an unknown suite")
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedSuite { id: 0x1234 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "unsupported algorithm suite 0x1234: not one of the ESDK suites sealpipe reads"
        );
    }

    #[test]
    fn an_unknown_version_byte_is_refused_naming_the_byte() {
        let (mut message, key) = message();
        message[0] = 0x03;
        let err = decrypt(&message, &key).unwrap_err();
        assert!(
            matches!(err, Error::Decode(DecodeError::UnsupportedVersion(0x03))),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "not an ESDK message: unknown version byte 0x03"
        );
    }
}
