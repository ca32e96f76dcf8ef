//! Rewrapping a message: a new header whose encrypted data keys are different, over the
//! same body. Only the encrypted data keys and the header tag depend on the wrapping
//! keys; the body's content key comes from the data key and the message ID, and the key
//! commitment from the same two, so both stay valid and the body is kept byte for byte.

use crate::Error;
use crate::crypto::{AeadKey, commitment_matches, derive_message_keys};
use crate::format::{EncryptedDataKey, Header, IV_LEN, MessageVersion};
use crate::keys::DecryptionMaterials;

use super::{DecryptOptions, check_policy};

/// The complete new header (body and authentication field) for the message `header`
/// begins, its encrypted data keys replaced by `new_keys`. The old header is
/// authenticated first (policy, key commitment, tag), so only an authentic message is
/// ever rewrapped; `materials` are the ones its data key was recovered with.
///
/// Signed suites are refused ([`Error::SignedMessage`]): their footer signs the header.
pub fn rewrap_header(
    header: &Header,
    materials: &DecryptionMaterials,
    new_keys: &[EncryptedDataKey],
    options: &DecryptOptions,
) -> Result<Vec<u8>, Error> {
    let suite = check_policy(header, options)?;
    if suite.signature.is_some() {
        return Err(Error::SignedMessage { suite });
    }
    if materials.data_key.len() != suite.key_len {
        return Err(Error::Config(format!(
            "data key is {} bytes; suite {suite} needs {}",
            materials.data_key.len(),
            suite.key_len
        )));
    }
    let max = options.limits.max_encrypted_data_keys;
    if new_keys.len() > usize::from(max) {
        return Err(Error::Config(format!(
            "the rewrapped message would carry {} encrypted data keys; readers refuse more \
             than {max} by default",
            new_keys.len()
        )));
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
    // The new tag covers the new body and the same authenticate-only pairs, under the
    // same IV (v1 writes it, v2 implies zeros).
    let mut out = header.body_with_encrypted_data_keys(new_keys)?;
    let body_len = out.len();
    out.extend_from_slice(&authenticate_only);
    let iv: [u8; IV_LEN] = header.auth.iv;
    let tag = key.seal_in_place(&iv, &out, &mut []);
    out.truncate(body_len);
    if body.suite.version == MessageVersion::V1 {
        out.extend_from_slice(&iv);
    }
    out.extend_from_slice(&tag);
    Ok(out)
}
