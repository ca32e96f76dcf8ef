//! Turning a keyring and a request into the materials one message needs, with the
//! rules the ESDK's default and required-encryption-context CMMs apply: the reserved
//! `aws-crypto-` prefix, the signing key in the context, authenticate-only pairs.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use super::{DecryptRequest, Keyring, KeyringError, describe_encrypted_data_keys};
use crate::Error;
use crate::crypto::{DataKey, SigningKey};
use crate::format::{
    AlgorithmSuite, ContentType, EncryptedDataKey, EncryptionContext, HeaderBody, HeaderTemplate,
    PUBLIC_KEY_CONTEXT_KEY,
};

/// Everything needed to write messages under one data key.
///
/// One set of materials may serve many messages: each message derives its own content
/// key from the data key and a fresh random message ID.
#[derive(Debug, Clone)]
pub struct EncryptionMaterials {
    /// The suite every message written with these materials uses.
    pub suite: AlgorithmSuite,
    /// The full context: caller pairs, `aws-crypto-public-key` for signing suites, and
    /// required (authenticate-only) pairs. Keyrings bind all of it.
    pub context: EncryptionContext,
    /// Keys of `context` that are authenticated but not stored in the header; a reader
    /// must supply them again.
    pub required_context_keys: BTreeSet<String>,
    /// The plaintext data key, once a keyring has generated it.
    pub data_key: Option<DataKey>,
    /// One per wrapping key, generator first.
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    /// For signing suites.
    pub signing_key: Option<SigningKey>,
    /// What every message's header shares, encoded on first use.
    shared_header: OnceLock<Arc<SharedHeader>>,
}

/// The parts of a header that depend on the materials, not on the message: the encoded
/// header body up to the per-message fields, and the authenticate-only context bytes
/// the header tag also covers. Built once per data key, not once per message.
#[derive(Debug)]
pub(crate) struct SharedHeader {
    /// The header body with placeholders for message ID, frame length and commitment.
    pub(crate) template: HeaderTemplate,
    /// Serialized authenticate-only pairs, appended to the header tag's AAD.
    pub(crate) authenticate_only: Vec<u8>,
    /// The fields it was built from. Fields are public, so materials may change after a
    /// first message; a template that no longer matches them is not used.
    built_from: (
        AlgorithmSuite,
        EncryptionContext,
        BTreeSet<String>,
        Vec<EncryptedDataKey>,
    ),
}

impl EncryptionMaterials {
    /// Materials from their parts (a keyring's `on_encrypt` fills in the data key and
    /// the encrypted data keys of what [`encryption_materials`] starts with).
    pub fn new(
        suite: AlgorithmSuite,
        context: EncryptionContext,
        required_context_keys: BTreeSet<String>,
        data_key: Option<DataKey>,
        encrypted_data_keys: Vec<EncryptedDataKey>,
        signing_key: Option<SigningKey>,
    ) -> Self {
        Self {
            suite,
            context,
            required_context_keys,
            data_key,
            encrypted_data_keys,
            signing_key,
            shared_header: OnceLock::new(),
        }
    }

    /// The header parts every message under these materials shares, encoded on first
    /// use and then reused (a pooled data key serves many messages). Comparing the
    /// fields it was built from costs no allocation, unlike encoding them again.
    pub(crate) fn shared_header(&self) -> Result<Arc<SharedHeader>, Error> {
        if let Some(shared) = self.shared_header.get()
            && shared.built_from.0 == self.suite
            && shared.built_from.1 == self.context
            && shared.built_from.2 == self.required_context_keys
            && shared.built_from.3 == self.encrypted_data_keys
        {
            return Ok(shared.clone());
        }
        let suite = self.suite;
        let placeholder = HeaderBody {
            suite: suite.into(),
            message_id: vec![0; suite.version.message_id_len()],
            context: self.stored_context(),
            encrypted_data_keys: self.encrypted_data_keys.clone(),
            content_type: ContentType::Framed,
            frame_length: 1,
            suite_data: vec![0; suite.suite_data_len()],
        };
        let shared = Arc::new(SharedHeader {
            template: HeaderTemplate::new(&placeholder)?,
            authenticate_only: self.authenticate_only_context().serialize()?,
            built_from: (
                suite,
                self.context.clone(),
                self.required_context_keys.clone(),
                self.encrypted_data_keys.clone(),
            ),
        });
        // Only the first template is kept: materials changed after it (rare) get a fresh
        // one per message, correct if slower.
        let _ = self.shared_header.set(shared.clone());
        Ok(shared)
    }

    /// The context as the header stores it: without the authenticate-only pairs.
    pub fn stored_context(&self) -> EncryptionContext {
        self.context
            .iter()
            .filter(|(k, _)| !self.required_context_keys.contains(*k))
            .collect()
    }

    /// The authenticate-only pairs, appended to the header tag's AAD.
    pub fn authenticate_only_context(&self) -> EncryptionContext {
        self.context
            .iter()
            .filter(|(k, _)| self.required_context_keys.contains(*k))
            .collect()
    }
}

/// Asks `keyring` for fresh materials for `suite` and `context`.
///
/// `required_keys` are context keys to authenticate without storing them in the header
/// (the ESDK's required-encryption-context CMM).
pub async fn encryption_materials(
    keyring: &dyn Keyring,
    suite: AlgorithmSuite,
    mut context: EncryptionContext,
    required_keys: BTreeSet<String>,
) -> Result<EncryptionMaterials, Error> {
    if let Some(key) = context.reserved_key() {
        return Err(Error::Context(format!(
            "the key {key:?} uses the prefix aws-crypto-, which is reserved for the format"
        )));
    }
    if let Some(missing) = required_keys.iter().find(|k| !context.contains_key(k)) {
        return Err(Error::Context(format!(
            "required context key {missing:?} has no value in the encryption context"
        )));
    }
    let signing_key = match suite.signature {
        Some(curve) => {
            let key = SigningKey::generate(curve)?;
            context.insert(PUBLIC_KEY_CONTEXT_KEY, key.public_key_base64());
            Some(key)
        }
        None => None,
    };
    let materials =
        EncryptionMaterials::new(suite, context, required_keys, None, Vec::new(), signing_key);
    let materials = keyring.on_encrypt(materials).await?;
    match &materials.data_key {
        Some(k) if k.len() == suite.key_len => {}
        _ => {
            return Err(KeyringError::Wrap {
                keyring: keyring.describe(),
                reason: format!(
                    "the keyring did not produce a {}-byte data key",
                    suite.key_len
                ),
            }
            .into());
        }
    }
    if materials.encrypted_data_keys.is_empty() {
        return Err(KeyringError::Wrap {
            keyring: keyring.describe(),
            reason: "the keyring produced no encrypted data key".into(),
        }
        .into());
    }
    Ok(materials)
}

/// What decrypting one message needs from the key side.
#[derive(Debug)]
pub struct DecryptionMaterials {
    /// The recovered data key.
    pub data_key: DataKey,
    /// Reproduced pairs that the header does not store; they join the header tag's AAD.
    pub authenticate_only_context: EncryptionContext,
}

/// Recovers the data key of the message whose header body is `header`. Call it after
/// the policy checks (`stream::decrypt_with` does): it only asks the keyring.
///
/// `reproduced` is the context the caller expects: pairs also in the header must have
/// the same values, and pairs absent from it are authenticate-only pairs the writer
/// left out of the header.
pub async fn decryption_materials(
    keyring: &dyn Keyring,
    header: &HeaderBody,
    reproduced: &EncryptionContext,
) -> Result<DecryptionMaterials, Error> {
    let suite = header.suite.known().ok_or(Error::UnsupportedSuite {
        id: header.suite.id,
    })?;
    let (full, authenticate_only) = merge_reproduced(&header.context, reproduced)?;
    let request = DecryptRequest {
        suite,
        context: &full,
        encrypted_data_keys: &header.encrypted_data_keys,
    };
    let data_key = match keyring.on_decrypt(&request).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return Err(KeyringError::NoMatchingKey {
                available: describe_encrypted_data_keys(&header.encrypted_data_keys),
                tried: String::new(),
                transient: false,
            }
            .into());
        }
        Err(e) => {
            return Err(KeyringError::NoMatchingKey {
                available: describe_encrypted_data_keys(&header.encrypted_data_keys),
                tried: format!(" (tried: {e})"),
                transient: e.is_transient(),
            }
            .into());
        }
    };
    if data_key.len() != suite.key_len {
        return Err(KeyringError::Unwrap {
            keyring: keyring.describe(),
            reason: format!(
                "recovered a {}-byte data key; suite {suite} needs {}",
                data_key.len(),
                suite.key_len
            ),
            transient: false,
        }
        .into());
    }
    Ok(DecryptionMaterials {
        data_key,
        authenticate_only_context: authenticate_only,
    })
}

/// Checks `reproduced` against the header's context and splits it: returns the full
/// context (header pairs plus reproduced pairs the header lacks) and the
/// authenticate-only part (those missing pairs).
pub(crate) fn merge_reproduced(
    stored: &EncryptionContext,
    reproduced: &EncryptionContext,
) -> Result<(EncryptionContext, EncryptionContext), Error> {
    let mut full = stored.clone();
    let mut authenticate_only = EncryptionContext::new();
    for (k, v) in reproduced.iter() {
        match stored.get(k) {
            Some(value) if value == v => {}
            Some(_) => {
                return Err(Error::Context(format!(
                    "the message's value for {k:?} differs from the expected one"
                )));
            }
            None => {
                full.insert(k, v);
                authenticate_only.insert(k, v);
            }
        }
    }
    Ok((full, authenticate_only))
}
