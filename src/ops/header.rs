//! Reading a message's header from a body, before any key is asked for: the keyring
//! call that follows is async, so the header is read here rather than inside the codec's
//! blocking reader.

use bytes::{Bytes, BytesMut};

use crate::Error;
use crate::format::{DecodeError, DecodeLimits, Header};
use crate::store::Body;

/// Reads and parses the header at the start of `body`. Returns it and the bytes that
/// arrived past it (the start of the message body).
///
/// Decoding starts from the first byte on every attempt, so attempts are few: each waits
/// for what the decoder says it needs and at least doubles what is buffered, keeping the
/// work linear in the header's length. At most `limits.max_header_len` bytes plus one
/// chunk are held.
pub(super) async fn read(
    body: &mut dyn Body,
    limits: &DecodeLimits,
) -> Result<(Header, Bytes), Error> {
    let mut buf = BytesMut::new();
    let mut at_end = false;
    let too_long = || -> Error {
        DecodeError::HeaderTooLong {
            max: limits.max_header_len,
        }
        .into()
    };
    loop {
        match Header::decode(&buf, limits) {
            Ok((header, used)) if used > limits.max_header_len => {
                let _ = header;
                return Err(too_long());
            }
            Ok((header, used)) => return Ok((header, buf.split_off(used).freeze())),
            Err(DecodeError::Truncated { .. }) if buf.len() > limits.max_header_len => {
                return Err(too_long());
            }
            Err(DecodeError::Truncated { needed }) if at_end => {
                return Err(Error::Truncated(format!(
                    "input ends inside the header ({} of at least {needed} bytes)",
                    buf.len()
                )));
            }
            Err(DecodeError::Truncated { needed }) => {
                let target = needed
                    .max(buf.len().saturating_mul(2))
                    .max(buf.len() + 1)
                    .min(limits.max_header_len.saturating_add(1));
                while buf.len() < target {
                    match body.next_chunk().await? {
                        Some(chunk) => buf.extend_from_slice(&chunk),
                        None => {
                            at_end = true;
                            break;
                        }
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
