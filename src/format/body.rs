//! Frames, the non-framed body, the body AAD and the footer.
//!
//! These functions parse and write the small fixed parts around the encrypted content;
//! the content itself is handled by the stream layer, which never needs to hold more
//! than a batch of frames.

use super::DecodeError;
use super::codec::Reader;
use super::header::{IV_LEN, TAG_LEN};

/// Marks the final frame in place of a sequence number.
pub const FINAL_FRAME_MARKER: u32 = 0xFFFF_FFFF;

/// The largest plaintext a single AES-GCM invocation may protect: 2^36 - 32 bytes.
pub const MAX_NON_FRAMED_CONTENT: u64 = (1 << 36) - 32;

/// Bytes a regular frame adds around its content: sequence number, IV and tag.
pub const REGULAR_FRAME_OVERHEAD: usize = 4 + IV_LEN + TAG_LEN;

/// Bytes a final frame adds around its content: marker, sequence number, IV, length, tag.
pub const FINAL_FRAME_OVERHEAD: usize = 4 + 4 + IV_LEN + 4 + TAG_LEN;

/// Which AAD string a piece of content uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    /// Any frame but the last.
    Frame,
    /// The last frame.
    FinalFrame,
    /// The whole content of a non-framed message.
    SingleBlock,
}

impl ContentKind {
    fn aad_string(self) -> &'static [u8] {
        match self {
            ContentKind::Frame => b"AWSKMSEncryptionClient Frame",
            ContentKind::FinalFrame => b"AWSKMSEncryptionClient Final Frame",
            ContentKind::SingleBlock => b"AWSKMSEncryptionClient Single Block",
        }
    }
}

/// The canonical IV for a sequence number: eight zero bytes, then the number.
pub fn frame_iv(seq: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[8..].copy_from_slice(&seq.to_be_bytes());
    iv
}

/// The per-frame additional authenticated data, built on the stack.
///
/// `message_id || content string || seq (u32) || content length (u64)`: at most
/// 32 + 35 + 4 + 8 = 79 bytes.
#[derive(Clone, Copy)]
pub struct BodyAad {
    buf: [u8; 80],
    len: usize,
}

impl BodyAad {
    /// The AAD for one frame (or the single block).
    pub fn new(message_id: &[u8], kind: ContentKind, seq: u32, content_len: u64) -> Self {
        let mut buf = [0u8; 80];
        let mut len = 0;
        for part in [
            message_id,
            kind.aad_string(),
            &seq.to_be_bytes(),
            &content_len.to_be_bytes(),
        ] {
            buf[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        Self { buf, len }
    }

    /// The AAD bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The first four bytes of a frame: a regular frame's sequence number, or the marker
/// that opens the final frame. A reader needs only these to know which frame layout
/// follows (and, at the end of its input, which frame was cut short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameStart {
    /// A regular frame with this sequence number.
    Regular(u32),
    /// The final frame; its sequence number follows.
    Final,
}

impl FrameStart {
    /// Encoded length.
    pub const LEN: usize = 4;

    /// Decodes the start of a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::read(&mut Reader::new(bytes))
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u32()? {
            FINAL_FRAME_MARKER => FrameStart::Final,
            seq => FrameStart::Regular(seq),
        })
    }
}

/// The fields in front of a frame's encrypted content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sequence number, from 1.
    pub seq: u32,
    /// The IV stored in the frame (decrypt with this one, not a recomputed one).
    pub iv: [u8; IV_LEN],
    /// `None` for a regular frame; the content length for the final frame.
    pub final_len: Option<u32>,
}

impl FrameHeader {
    /// Encoded length of a regular frame's header: sequence number and IV.
    pub const REGULAR_LEN: usize = 4 + IV_LEN;
    /// Encoded length of the final frame's header: marker, sequence number, IV, length.
    pub const FINAL_LEN: usize = 4 + 4 + IV_LEN + 4;

    /// Writes a regular frame's header.
    pub fn encode_regular(seq: u32, out: &mut [u8; Self::REGULAR_LEN]) {
        out[..4].copy_from_slice(&seq.to_be_bytes());
        out[4..].copy_from_slice(&frame_iv(seq));
    }

    /// Writes a final frame's header.
    pub fn encode_final(seq: u32, content_len: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&FINAL_FRAME_MARKER.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&frame_iv(seq));
        out.extend_from_slice(&content_len.to_be_bytes());
    }

    /// Decodes a frame header, checking it against the header's frame length. Returns
    /// the header and its length in bytes, or `Truncated` if `bytes` is too short.
    pub fn decode(bytes: &[u8], frame_length: u32) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let (seq, is_final) = match FrameStart::read(&mut r)? {
            FrameStart::Regular(seq) => (seq, false),
            FrameStart::Final => (r.u32()?, true),
        };
        let iv = r.array()?;
        let final_len = if is_final {
            let len = r.u32()?;
            if len > frame_length {
                return Err(DecodeError::Malformed(
                    "final frame is longer than the frame length",
                ));
            }
            Some(len)
        } else {
            None
        };
        Ok((Self { seq, iv, final_len }, r.position()))
    }

    /// Plaintext bytes in this frame.
    pub fn content_len(&self, frame_length: u32) -> u32 {
        self.final_len.unwrap_or(frame_length)
    }
}

/// The fields in front of a non-framed body's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SingleBlockHeader {
    /// The IV.
    pub iv: [u8; IV_LEN],
    /// Content length in bytes.
    pub content_len: u64,
}

impl SingleBlockHeader {
    /// Encoded length.
    pub const LEN: usize = IV_LEN + 8;

    /// Appends the IV and length (sealpipe never writes non-framed bodies; tests build
    /// legacy messages with this).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.content_len.to_be_bytes());
    }

    /// Decodes the IV and length of a non-framed body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let iv = r.array()?;
        let content_len = r.u64()?;
        if content_len > MAX_NON_FRAMED_CONTENT {
            return Err(DecodeError::Malformed(
                "non-framed content is longer than AES-GCM allows",
            ));
        }
        Ok(Self { iv, content_len })
    }
}

/// Encodes a footer: `u16 length || DER signature`.
pub fn encode_footer(signature: &[u8], out: &mut Vec<u8>) {
    // DER ECDSA signatures are at most 104 bytes for P-384.
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(signature);
}

/// Decodes a footer, returning the signature bytes and the footer's length.
pub fn decode_footer(bytes: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    let mut r = Reader::new(bytes);
    let sig = r.u16_prefixed()?;
    Ok((sig, r.position()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_layout_matches_the_spec() {
        let id = [7u8; 32];
        let aad = BodyAad::new(&id, ContentKind::FinalFrame, 3, 14);
        let b = aad.as_bytes();
        assert_eq!(b.len(), 32 + 34 + 4 + 8);
        assert_eq!(&b[32..66], b"AWSKMSEncryptionClient Final Frame");
        assert_eq!(&b[66..70], &[0, 0, 0, 3]);
        assert_eq!(&b[70..], &14u64.to_be_bytes());
        let single = BodyAad::new(&id, ContentKind::SingleBlock, 1, 0);
        assert_eq!(single.as_bytes().len(), 79);
    }

    #[test]
    fn final_frame_longer_than_frame_length_is_rejected() {
        let mut hdr = Vec::new();
        FrameHeader::encode_final(1, 100, &mut hdr);
        assert!(FrameHeader::decode(&hdr, 99).is_err());
        let (fh, n) = FrameHeader::decode(&hdr, 100).unwrap();
        assert_eq!(
            (fh.seq, fh.final_len, n),
            (1, Some(100), FrameHeader::FINAL_LEN)
        );
    }

    #[test]
    fn frame_headers_round_trip_and_every_prefix_is_truncated() {
        let mut regular = [0u8; FrameHeader::REGULAR_LEN];
        FrameHeader::encode_regular(7, &mut regular);
        let mut last = Vec::new();
        FrameHeader::encode_final(8, 5, &mut last);
        for (bytes, expected) in [
            (&regular[..], (7, None, FrameStart::Regular(7))),
            (&last[..], (8, Some(5), FrameStart::Final)),
        ] {
            let (fh, n) = FrameHeader::decode(bytes, 10).unwrap();
            assert_eq!(
                (fh.seq, fh.final_len, n),
                (expected.0, expected.1, bytes.len())
            );
            assert_eq!(fh.iv, frame_iv(expected.0));
            assert_eq!(FrameStart::decode(bytes), Ok(expected.2));
            for cut in 0..bytes.len() {
                assert!(matches!(
                    FrameHeader::decode(&bytes[..cut], 10),
                    Err(DecodeError::Truncated { .. })
                ));
            }
        }
    }

    #[test]
    fn single_block_header_round_trips() {
        let block = SingleBlockHeader {
            iv: frame_iv(1),
            content_len: 42,
        };
        let mut out = Vec::new();
        block.encode(&mut out);
        assert_eq!(out.len(), SingleBlockHeader::LEN);
        assert_eq!(SingleBlockHeader::decode(&out), Ok(block));
    }
}
