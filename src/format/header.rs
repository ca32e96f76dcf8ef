//! The message header: body, encrypted data keys and authentication field.
//!
//! Decoding keeps the exact bytes that were received, because the header tag and the
//! signature cover those bytes, never a re-encoding of them.

use super::codec::{Reader, put_u16_prefixed};
use super::context::EncryptionContext;
use super::suite::{HeaderSuite, MessageVersion};
use super::{DecodeError, DecodeLimits, EncodeError};

/// The v1 "type" byte: customer authenticated encrypted data.
const V1_TYPE: u8 = 0x80;
/// The only IV length a v1 header may declare.
const V1_IV_LEN: u8 = 12;

/// Length of the AES-GCM IV for every suite.
pub const IV_LEN: usize = 12;
/// Length of the AES-GCM tag for every suite.
pub const TAG_LEN: usize = 16;

/// How the body is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// One AES-GCM invocation over the whole content (legacy; read only).
    NonFramed,
    /// A sequence of frames.
    Framed,
}

impl ContentType {
    fn byte(self) -> u8 {
        match self {
            ContentType::NonFramed => 0x01,
            ContentType::Framed => 0x02,
        }
    }
}

/// One encrypted copy of the data key, as a keyring wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptedDataKey {
    /// Who can unwrap it: `aws-kms`, or a Raw AES keyring's namespace.
    pub provider_id: String,
    /// Provider-specific: a key ARN, or a Raw AES key name with its IV.
    pub provider_info: Vec<u8>,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}

impl EncryptedDataKey {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u16_prefixed(out, self.provider_id.as_bytes(), "provider ID")?;
        put_u16_prefixed(out, &self.provider_info, "provider info")?;
        put_u16_prefixed(out, &self.ciphertext, "encrypted data key")
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let provider_id = String::from_utf8(r.u16_prefixed()?.to_vec())
            .map_err(|_| DecodeError::Malformed("provider ID is not UTF-8"))?;
        let provider_info = r.u16_prefixed()?.to_vec();
        let ciphertext = r.u16_prefixed()?.to_vec();
        Ok(Self {
            provider_id,
            provider_info,
            ciphertext,
        })
    }
}

/// The header fields covered by the header authentication tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderBody {
    /// The suite as the header names it (possibly one this build does not know); its
    /// version decides the header layout. Policy code refuses unknown suites.
    pub suite: HeaderSuite,
    /// 16 bytes (v1) or 32 bytes (v2), random per message.
    pub message_id: Vec<u8>,
    /// The stored encryption context (without authenticate-only pairs).
    pub context: EncryptionContext,
    /// At least one.
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    /// Framed or not.
    pub content_type: ContentType,
    /// Plaintext bytes per frame; 0 for non-framed content.
    pub frame_length: u32,
    /// The commitment key for committing suites; empty otherwise.
    pub suite_data: Vec<u8>,
}

impl HeaderBody {
    /// The serialized header body.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let v = self.suite.version;
        if self.message_id.len() != v.message_id_len() {
            return Err(EncodeError::Invalid(
                "message ID length does not match the version",
            ));
        }
        if self.suite.is_misplaced() {
            return Err(EncodeError::Invalid(
                "algorithm suite does not belong to the header version",
            ));
        }
        if self.suite_data.len() != self.suite.suite_data_len() {
            return Err(EncodeError::Invalid(
                "suite data length does not match the suite",
            ));
        }
        if self.encrypted_data_keys.is_empty() {
            return Err(EncodeError::Invalid(
                "a message needs at least one encrypted data key",
            ));
        }
        if (self.content_type == ContentType::Framed) != (self.frame_length > 0) {
            return Err(EncodeError::Invalid(
                "frame length must be non-zero exactly when the content is framed",
            ));
        }
        let mut out = Vec::with_capacity(256);
        out.push(v.byte());
        if v == MessageVersion::V1 {
            out.push(V1_TYPE);
        }
        out.extend_from_slice(&self.suite.id.to_be_bytes());
        out.extend_from_slice(&self.message_id);
        put_u16_prefixed(&mut out, &self.context.serialize()?, "encryption context")?;
        let count =
            u16::try_from(self.encrypted_data_keys.len()).map_err(|_| EncodeError::TooLong {
                what: "encrypted data key count",
                len: self.encrypted_data_keys.len(),
                max: u16::MAX as usize,
            })?;
        out.extend_from_slice(&count.to_be_bytes());
        for edk in &self.encrypted_data_keys {
            edk.encode(&mut out)?;
        }
        out.push(self.content_type.byte());
        if v == MessageVersion::V1 {
            out.extend_from_slice(&[0, 0, 0, 0]);
            out.push(V1_IV_LEN);
        }
        out.extend_from_slice(&self.frame_length.to_be_bytes());
        out.extend_from_slice(&self.suite_data);
        Ok(out)
    }

    fn read(r: &mut Reader<'_>, limits: &DecodeLimits) -> Result<Self, DecodeError> {
        let version = match r.u8()? {
            0x01 => MessageVersion::V1,
            0x02 => MessageVersion::V2,
            other => return Err(DecodeError::UnsupportedVersion(other)),
        };
        if version == MessageVersion::V1 {
            let ty = r.u8()?;
            if ty != V1_TYPE {
                return Err(DecodeError::Malformed("v1 header type is not 0x80"));
            }
        }
        let suite = HeaderSuite {
            id: r.u16()?,
            version,
        };
        // An unknown ID stays representable (policy refuses it); a known suite in the
        // other version's layout contradicts itself.
        if suite.is_misplaced() {
            return Err(DecodeError::Malformed(
                "algorithm suite does not belong to the header version",
            ));
        }
        let message_id = r.take(version.message_id_len())?.to_vec();
        let context = EncryptionContext::deserialize(r.u16_prefixed()?)?;
        let edk_count = r.u16()?;
        if edk_count == 0 {
            return Err(DecodeError::Malformed("no encrypted data keys"));
        }
        if edk_count > limits.max_encrypted_data_keys {
            return Err(DecodeError::TooManyEncryptedDataKeys {
                count: edk_count,
                max: limits.max_encrypted_data_keys,
            });
        }
        let mut encrypted_data_keys = Vec::with_capacity(edk_count as usize);
        for _ in 0..edk_count {
            encrypted_data_keys.push(EncryptedDataKey::read(r)?);
        }
        let content_type = match r.u8()? {
            0x01 => ContentType::NonFramed,
            0x02 => ContentType::Framed,
            _ => return Err(DecodeError::Malformed("unknown content type")),
        };
        if version == MessageVersion::V1 {
            if r.u32()? != 0 {
                return Err(DecodeError::Malformed("v1 reserved field is not zero"));
            }
            if r.u8()? != V1_IV_LEN {
                return Err(DecodeError::Malformed("v1 IV length is not 12"));
            }
        }
        let frame_length = r.u32()?;
        match content_type {
            ContentType::NonFramed if frame_length != 0 => {
                return Err(DecodeError::Malformed(
                    "non-framed content with a non-zero frame length",
                ));
            }
            ContentType::Framed if frame_length == 0 => {
                return Err(DecodeError::Malformed("framed content with frame length 0"));
            }
            ContentType::Framed if frame_length > limits.max_frame_length => {
                return Err(DecodeError::FrameTooLong {
                    len: frame_length as u64,
                    max: limits.max_frame_length,
                });
            }
            _ => {}
        }
        let suite_data = r.take(suite.suite_data_len())?.to_vec();
        Ok(Self {
            suite,
            message_id,
            context,
            encrypted_data_keys,
            content_type,
            frame_length,
            suite_data,
        })
    }
}

/// A header body encoded once for many messages that differ only in their message ID,
/// frame length and suite data (the commitment).
///
/// Everything else (the stored context, the encrypted data keys, their length prefixes)
/// depends only on the data key's materials, so a pooled data key encodes it once and
/// each message patches its own fields in: the bytes are those [`HeaderBody::encode`]
/// gives for the same fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTemplate {
    /// An encoded body; its message ID, frame length and suite data are overwritten.
    bytes: Vec<u8>,
    suite: HeaderSuite,
    content_type: ContentType,
}

impl HeaderTemplate {
    /// Encodes `body`; its message ID, frame length and suite data are placeholders
    /// (they must have valid lengths, and the frame length must suit the content type).
    pub fn new(body: &HeaderBody) -> Result<Self, EncodeError> {
        Ok(Self {
            bytes: body.encode()?,
            suite: body.suite,
            content_type: body.content_type,
        })
    }

    /// Appends the header body of one message to `out`.
    pub fn encode(
        &self,
        message_id: &[u8],
        frame_length: u32,
        suite_data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let version = self.suite.version;
        if message_id.len() != version.message_id_len() {
            return Err(EncodeError::Invalid(
                "message ID length does not match the version",
            ));
        }
        if suite_data.len() != self.suite.suite_data_len() {
            return Err(EncodeError::Invalid(
                "suite data length does not match the suite",
            ));
        }
        if (self.content_type == ContentType::Framed) != (frame_length > 0) {
            return Err(EncodeError::Invalid(
                "frame length must be non-zero exactly when the content is framed",
            ));
        }
        // The message ID follows the version (and v1's type byte) and the suite ID; the
        // frame length and suite data end the body.
        let id_at = match version {
            MessageVersion::V1 => 4,
            MessageVersion::V2 => 3,
        };
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let body = &mut out[start..];
        let data_at = body.len() - suite_data.len();
        body[id_at..id_at + message_id.len()].copy_from_slice(message_id);
        body[data_at - 4..data_at].copy_from_slice(&frame_length.to_be_bytes());
        body[data_at..].copy_from_slice(suite_data);
        Ok(())
    }

    /// Length of every header body encoded from this template.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a header body has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The header authentication field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderAuth {
    /// The GCM IV: written in v1 (always zeros), implicit zeros in v2.
    pub iv: [u8; IV_LEN],
    /// The GCM tag over the header body.
    pub tag: [u8; TAG_LEN],
}

impl HeaderAuth {
    /// Serialized form for the given version.
    pub fn encode(&self, version: MessageVersion, out: &mut Vec<u8>) {
        if version == MessageVersion::V1 {
            out.extend_from_slice(&self.iv);
        }
        out.extend_from_slice(&self.tag);
    }
}

/// A decoded header, with the bytes it was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The parsed fields.
    pub body: HeaderBody,
    /// The exact header-body bytes received (the header tag's AAD).
    pub body_bytes: Vec<u8>,
    /// The authentication field.
    pub auth: HeaderAuth,
}

impl Header {
    /// Decodes a header from the start of `bytes`, returning it and the number of bytes it
    /// occupied. Returns [`DecodeError::Truncated`] when `bytes` ends before the header
    /// does, so a stream reader can fetch more and try again.
    pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(bytes);
        let body = HeaderBody::read(&mut r, limits)?;
        let body_len = r.position();
        let iv = match body.suite.version {
            MessageVersion::V1 => r.array()?,
            MessageVersion::V2 => [0u8; IV_LEN],
        };
        let tag = r.array()?;
        Ok((
            Self {
                body,
                body_bytes: bytes[..body_len].to_vec(),
                auth: HeaderAuth { iv, tag },
            },
            r.position(),
        ))
    }

    /// The header body as received, with its encrypted data keys replaced by `edks`:
    /// every other byte (the context exactly as it was serialized included) is kept, so
    /// only the data keys and the tag computed over the result differ. This is a rewrap:
    /// the body's content key depends on the data key and the message ID alone.
    pub fn body_with_encrypted_data_keys(
        &self,
        edks: &[EncryptedDataKey],
    ) -> Result<Vec<u8>, EncodeError> {
        if edks.is_empty() {
            return Err(EncodeError::Invalid(
                "a message needs at least one encrypted data key",
            ));
        }
        let count = u16::try_from(edks.len()).map_err(|_| EncodeError::TooLong {
            what: "encrypted data key count",
            len: edks.len(),
            max: u16::MAX as usize,
        })?;
        let section = self.encrypted_data_key_section();
        let mut out = Vec::with_capacity(self.body_bytes.len() + edks.len() * 256);
        out.extend_from_slice(&self.body_bytes[..section.start]);
        out.extend_from_slice(&count.to_be_bytes());
        for edk in edks {
            edk.encode(&mut out)?;
        }
        out.extend_from_slice(&self.body_bytes[section.end..]);
        Ok(out)
    }

    /// Where the encrypted data keys (their count included) sit in `body_bytes`: after
    /// the version, the v1 type, the suite, the message ID and the length-prefixed
    /// context; as long as the decoded keys' fields with their length prefixes.
    fn encrypted_data_key_section(&self) -> std::ops::Range<usize> {
        let version = self.body.suite.version;
        let context_at =
            1 + usize::from(version == MessageVersion::V1) + 2 + version.message_id_len();
        let context_len =
            u16::from_be_bytes([self.body_bytes[context_at], self.body_bytes[context_at + 1]])
                as usize;
        let start = context_at + 2 + context_len;
        let keys: usize = self
            .body
            .encrypted_data_keys
            .iter()
            .map(|e| 6 + e.provider_id.len() + e.provider_info.len() + e.ciphertext.len())
            .sum();
        start..start + 2 + keys
    }

    /// Length of the complete serialized header: the body as received and the
    /// authentication field (an IV in v1, then the tag).
    pub fn len(&self) -> usize {
        let iv = match self.body.suite.version {
            MessageVersion::V1 => IV_LEN,
            MessageVersion::V2 => 0,
        };
        self.body_bytes.len() + iv + TAG_LEN
    }

    /// Never true: a header has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The complete serialized header (body and authentication field) as received.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body_bytes.clone();
        self.auth.encode(self.body.suite.version, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::AlgorithmSuite;

    fn body(suite: HeaderSuite) -> HeaderBody {
        HeaderBody {
            suite,
            message_id: vec![9; suite.version.message_id_len()],
            context: EncryptionContext::new(),
            encrypted_data_keys: vec![EncryptedDataKey {
                provider_id: "p".into(),
                provider_info: b"i".to_vec(),
                ciphertext: b"c".to_vec(),
            }],
            content_type: ContentType::Framed,
            frame_length: 4096,
            suite_data: vec![7; suite.suite_data_len()],
        }
    }

    #[test]
    fn headers_naming_unknown_suites_decode_in_both_layouts() {
        for version in [MessageVersion::V1, MessageVersion::V2] {
            let suite = HeaderSuite {
                id: 0x1234,
                version,
            };
            let body = body(suite);
            let mut bytes = body.encode().unwrap();
            HeaderAuth {
                iv: [0; IV_LEN],
                tag: [3; TAG_LEN],
            }
            .encode(version, &mut bytes);
            let (header, used) = Header::decode(&bytes, &DecodeLimits::default()).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(header.body, body);
            assert_eq!(
                (header.body.suite.known(), header.body.suite.name()),
                (None, "UNKNOWN")
            );
            assert_eq!(header.to_bytes(), bytes);
            assert_eq!(header.len(), bytes.len());
        }
    }

    #[test]
    fn a_template_encodes_what_the_body_encodes() {
        for suite in [
            AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY.into(),
            AlgorithmSuite::from_id(0x0178).unwrap().into(),
            HeaderSuite {
                id: 0x1234,
                version: MessageVersion::V2,
            },
        ] {
            let mut placeholder = body(suite);
            placeholder.context.insert("k", "v");
            let template = HeaderTemplate::new(&placeholder).unwrap();
            for (id_byte, frame_length) in [(1u8, 1u32), (0xAB, 65536), (0xFF, u32::MAX)] {
                let mut message = placeholder.clone();
                message.message_id = vec![id_byte; suite.version.message_id_len()];
                message.frame_length = frame_length;
                message.suite_data = vec![id_byte ^ 0x55; suite.suite_data_len()];
                let mut out = b"prefix".to_vec();
                template
                    .encode(
                        &message.message_id,
                        frame_length,
                        &message.suite_data,
                        &mut out,
                    )
                    .unwrap();
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(out[6..], message.encode().unwrap()[..]);
                assert_eq!(template.len(), out.len() - 6);
            }
            let mut out = Vec::new();
            let id = vec![0; suite.version.message_id_len()];
            let data = vec![0; suite.suite_data_len()];
            assert!(template.encode(&id[1..], 1, &data, &mut out).is_err());
            assert!(template.encode(&id, 0, &data, &mut out).is_err());
            assert!(template.encode(&id, 1, &[0; 5], &mut out).is_err());
            assert!(out.is_empty());
        }
    }

    #[test]
    fn replacing_the_data_keys_keeps_every_other_byte() {
        for suite in [
            AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY.into(),
            AlgorithmSuite::from_id(0x0178).unwrap().into(),
        ] {
            let mut original = body(suite);
            original.context.insert("purpose", "rewrap");
            original.encrypted_data_keys.push(EncryptedDataKey {
                provider_id: "aws-kms".into(),
                provider_info: b"arn:aws:kms:us-east-1:111122223333:key/a".to_vec(),
                ciphertext: vec![5; 184],
            });
            let mut bytes = original.encode().unwrap();
            HeaderAuth {
                iv: [0; IV_LEN],
                tag: [3; TAG_LEN],
            }
            .encode(suite.version, &mut bytes);
            let (header, _) = Header::decode(&bytes, &DecodeLimits::default()).unwrap();
            assert_eq!(
                header
                    .body_with_encrypted_data_keys(&original.encrypted_data_keys)
                    .unwrap(),
                header.body_bytes,
                "the same keys give the same bytes"
            );
            let replacement = vec![EncryptedDataKey {
                provider_id: "aws-kms".into(),
                provider_info: b"arn:aws:kms:eu-west-1:111122223333:key/b".to_vec(),
                ciphertext: vec![6; 200],
            }];
            let spliced = header.body_with_encrypted_data_keys(&replacement).unwrap();
            let mut expected = original.clone();
            expected.encrypted_data_keys = replacement;
            assert_eq!(spliced, expected.encode().unwrap());
            assert!(header.body_with_encrypted_data_keys(&[]).is_err());
        }
    }

    #[test]
    fn a_known_suite_in_the_other_layout_is_malformed() {
        let v1 = AlgorithmSuite::from_id(0x0378).unwrap();
        let misplaced = HeaderSuite {
            id: v1.id,
            version: MessageVersion::V2,
        };
        assert!(matches!(
            body(misplaced).encode(),
            Err(EncodeError::Invalid(_))
        ));
        let mut bytes = body(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY.into())
            .encode()
            .unwrap();
        bytes[1..3].copy_from_slice(&v1.id.to_be_bytes());
        assert_eq!(
            Header::decode(&bytes, &DecodeLimits::default()),
            Err(DecodeError::Malformed(
                "algorithm suite does not belong to the header version"
            ))
        );
    }

    #[test]
    fn an_unknown_version_byte_is_reported_from_the_first_byte_alone() {
        for byte in [0x00, 0x03, 0x80, 0xFF] {
            assert_eq!(
                Header::decode(&[byte], &DecodeLimits::default()),
                Err(DecodeError::UnsupportedVersion(byte))
            );
        }
    }
}
