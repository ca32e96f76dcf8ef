//! Reading a message's header from a body, before any key is asked for: the keyring
//! call that follows is async, so the header is read here rather than inside the codec's
//! blocking reader. The decoding steps are the codec's ([`header_step`]).

use bytes::{Bytes, BytesMut};

use crate::Error;
use crate::format::{DecodeLimits, Header};
use crate::store::Body;
use crate::stream::{HeaderStep, header_step};

/// Reads and parses the header at the start of `body`. Returns it and the bytes that
/// arrived past it (the start of the message body). At most `limits.max_header_len`
/// bytes plus one chunk are held.
pub async fn read(body: &mut dyn Body, limits: &DecodeLimits) -> Result<(Header, Bytes), Error> {
    let mut buf = BytesMut::new();
    let mut at_end = false;
    loop {
        match header_step(&buf, limits, at_end)? {
            HeaderStep::Done(header, used) => return Ok((header, buf.split_off(used).freeze())),
            HeaderStep::ReadUntil(target) => {
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
        }
    }
}
