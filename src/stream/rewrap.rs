//! Rewrapping a message: a new header whose encrypted data keys are different, over the
//! same body. Only the encrypted data keys and the header tag depend on the wrapping
//! keys; the body's content key comes from the data key and the message ID, and the key
//! commitment from the same two, so both stay valid and the body is kept byte for byte.
//!
//! The new header tag is a second AES-GCM tag under the same content key. Its nonce is
//! what decides whether that is safe. A v1 header carries its nonce, so a rewrap picks a
//! fresh random one. A v2 header's nonce is fixed at zero by the format: two tags over
//! different headers under one key and nonce give away the GHASH key of the message
//! (the "forbidden attack" on GCM), and with it, forged tags for its frames. A v2
//! rewrap therefore happens only when the caller accepts that ([`HeaderNonce`]).

use crate::Error;
use crate::crypto::{AeadKey, commitment_matches, derive_message_keys, random_bytes};
use crate::format::{AlgorithmSuite, EncryptedDataKey, Header, IV_LEN, MessageVersion};
use crate::keys::DecryptionMaterials;

use super::{DecryptOptions, check_policy};

/// Which nonce a rewrapped header's tag may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderNonce {
    /// Only a nonce never used under the message's key: v1 headers get a fresh random
    /// one, v2 headers (whose nonce is fixed) are refused.
    Fresh,
    /// Also the fixed nonce of a v2 header, which the original tag used: the caller
    /// accepts that holders of both headers can forge the message (see the module).
    AllowReuse,
}

/// Refuses to rewrap a message of `suite` in `version` when its header cannot be
/// tagged again safely under `nonce`: signed suites (their footer signs the header) and,
/// unless accepted, v2 headers. A check of the header alone, before any key is used.
pub fn check_rewrappable(suite: &AlgorithmSuite, nonce: HeaderNonce) -> Result<(), Error> {
    if suite.signature.is_some() {
        return Err(Error::SignedMessage { suite: *suite });
    }
    if suite.version == MessageVersion::V2 && nonce == HeaderNonce::Fresh {
        return Err(Error::HeaderNonceReuse { suite: *suite });
    }
    Ok(())
}

/// The complete new header (body and authentication field) for the message `header`
/// begins, its encrypted data keys replaced by `new_keys`. The old header is
/// authenticated first (policy, key commitment, tag), so only an authentic message is
/// ever rewrapped; `materials` are the ones its data key was recovered with.
///
/// Refused: signed suites ([`Error::SignedMessage`]), and v2 headers unless `nonce`
/// allows their fixed nonce ([`Error::HeaderNonceReuse`]).
pub fn rewrap_header(
    header: &Header,
    materials: &DecryptionMaterials,
    new_keys: &[EncryptedDataKey],
    options: &DecryptOptions,
    nonce: HeaderNonce,
) -> Result<Vec<u8>, Error> {
    let suite = check_policy(header, options)?;
    check_rewrappable(&suite, nonce)?;
    if materials.data_key.len() != suite.key_len {
        return Err(Error::Config(format!(
            "data key is {} bytes; suite {suite} needs {}",
            materials.data_key.len(),
            suite.key_len
        )));
    }
    let max = options.limits.max_encrypted_data_keys;
    if new_keys.len() > usize::from(max) {
        return Err(Error::TooManyDataKeys {
            count: new_keys.len(),
            max,
        });
    }
    let body = &header.body;
    let keys = derive_message_keys(&suite, &materials.data_key, &body.message_id);
    if let Some(expected) = &keys.commitment
        && !commitment_matches(expected, &body.suite_data)
    {
        return Err(Error::CommitmentMismatch);
    }
    let key = AeadKey::new(options.aead, &keys.content_key);
    let authenticate_only = materials.authenticate_only_context.serialize()?;
    let mut aad = header.body_bytes.clone();
    aad.extend_from_slice(&authenticate_only);
    key.open_in_place(&header.auth.iv, &aad, &mut [], &header.auth.tag)
        .map_err(|_| Error::HeaderAuthentication)?;
    // The new tag covers the new body and the same authenticate-only pairs. A v1 header
    // names its IV: a fresh random one, its first bit set so that it is never a frame's
    // (a sequence number) nor the zeros most writers use. A v2 header's is zeros.
    let iv = match body.suite.version {
        MessageVersion::V1 => {
            let mut iv = [0u8; IV_LEN];
            random_bytes(&mut iv)?;
            iv[0] |= 0x80;
            iv
        }
        MessageVersion::V2 => [0u8; IV_LEN],
    };
    let mut out = header.body_with_encrypted_data_keys(new_keys)?;
    let body_len = out.len();
    out.extend_from_slice(&authenticate_only);
    let tag = key.seal_in_place(&iv, &out, &mut []);
    out.truncate(body_len);
    if body.suite.version == MessageVersion::V1 {
        out.extend_from_slice(&iv);
    }
    out.extend_from_slice(&tag);
    Ok(out)
}
