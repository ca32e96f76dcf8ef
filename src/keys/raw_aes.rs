//! The Raw AES keyring: a local AES-GCM wrapping key, compatible with the official
//! SDKs' raw AES keyring (Java `JceMasterKey`, Python `RawMasterKey`).
//!
//! Provider ID is the namespace; provider info is
//! `key name || u32 tag bits (128) || u32 IV bytes (12) || IV`; the wrapping AAD is the
//! canonical serialization of the full encryption context.

use zeroize::Zeroizing;

use super::{DecryptRequest, EncryptionMaterials, Keyring, KeyringError, KeyringFuture};
use crate::crypto::{AeadBackend, AeadKey, DataKey, random_bytes};
use crate::format::{EncryptedDataKey, IV_LEN, TAG_LEN};

const TAG_BITS: u32 = (TAG_LEN * 8) as u32;
/// Bytes after the key name in the provider info.
const INFO_SUFFIX_LEN: usize = 4 + 4 + IV_LEN;

/// A Raw AES keyring.
pub struct RawAesKeyring {
    namespace: String,
    name: String,
    wrapping_key: AeadKey,
    key_len: usize,
}

impl RawAesKeyring {
    /// A keyring for `wrapping_key` (16, 24 or 32 bytes) named `namespace`/`name`.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        wrapping_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, String> {
        let namespace = namespace.into();
        if !matches!(wrapping_key.len(), 16 | 24 | 32) {
            return Err(format!(
                "a raw AES wrapping key must be 16, 24 or 32 bytes, not {}",
                wrapping_key.len()
            ));
        }
        if namespace.starts_with("aws-kms") {
            return Err("the namespace aws-kms is reserved for AWS KMS keys".into());
        }
        Ok(Self {
            namespace,
            name: name.into(),
            wrapping_key: AeadKey::new(AeadBackend::default(), &wrapping_key),
            key_len: wrapping_key.len(),
        })
    }

    fn wrap(&self, materials: &mut EncryptionMaterials) -> Result<(), KeyringError> {
        let wrap_err = |reason: String| KeyringError::Wrap {
            keyring: self.describe(),
            reason,
        };
        let data_key = match &materials.data_key {
            Some(k) => k.clone(),
            None => {
                let k = DataKey::random(materials.suite.key_len)?;
                materials.data_key = Some(k.clone());
                k
            }
        };
        let aad = materials
            .context
            .serialize()
            .map_err(|e| wrap_err(e.to_string()))?;
        let mut iv = [0u8; IV_LEN];
        random_bytes(&mut iv)?;
        let mut ciphertext = data_key.as_bytes().to_vec();
        let tag = self.wrapping_key.seal_in_place(&iv, &aad, &mut ciphertext);
        ciphertext.extend_from_slice(&tag);
        let mut provider_info = self.name.as_bytes().to_vec();
        provider_info.extend_from_slice(&TAG_BITS.to_be_bytes());
        provider_info.extend_from_slice(&(IV_LEN as u32).to_be_bytes());
        provider_info.extend_from_slice(&iv);
        materials.encrypted_data_keys.push(EncryptedDataKey {
            provider_id: self.namespace.clone(),
            provider_info,
            ciphertext,
        });
        Ok(())
    }

    /// The IV if `edk` names this keyring, per the provider-info rules.
    fn iv_if_mine(&self, edk: &EncryptedDataKey) -> Option<[u8; IV_LEN]> {
        let info = &edk.provider_info;
        if edk.provider_id != self.namespace || raw_aes_key_name(info) != Some(self.name.as_bytes())
        {
            return None;
        }
        info[info.len() - IV_LEN..].try_into().ok()
    }

    fn unwrap(&self, request: &DecryptRequest<'_>) -> Result<Option<DataKey>, KeyringError> {
        let mut last_error = None;
        for edk in request.encrypted_data_keys {
            let Some(iv) = self.iv_if_mine(edk) else {
                continue;
            };
            let reason = match self.try_unwrap(request, edk, &iv) {
                Ok(key) => return Ok(Some(key)),
                Err(reason) => reason,
            };
            last_error = Some(KeyringError::Unwrap {
                keyring: self.describe(),
                reason: reason.into(),
                transient: false,
            });
        }
        last_error.map_or(Ok(None), Err)
    }

    fn try_unwrap(
        &self,
        request: &DecryptRequest<'_>,
        edk: &EncryptedDataKey,
        iv: &[u8; IV_LEN],
    ) -> Result<DataKey, &'static str> {
        let expected_len = request.suite.key_len + TAG_LEN;
        if edk.ciphertext.len() != expected_len {
            return Err("encrypted data key has the wrong length for the suite");
        }
        let aad = request
            .context
            .serialize()
            .map_err(|_| "encryption context too long")?;
        let (ct, tag) = edk.ciphertext.split_at(request.suite.key_len);
        let mut key = Zeroizing::new(ct.to_vec());
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at key length");
        self.wrapping_key
            .open_in_place(iv, &aad, &mut key, tag)
            .map_err(|_| "authentication failed (wrong wrapping key or encryption context)")?;
        Ok(DataKey::new(key.to_vec()))
    }
}

impl RawAesKeyring {
    /// An S3EC object's data key under the `AES/GCM` wrap: the wrapped key is
    /// `IV (12) || the data key sealed || tag (16)`, sealed with the content cipher's
    /// name (`AES/GCM/NoPadding`, or `115` for the committing suite) as AAD. The
    /// material description does not say which key: any raw AES key may try it.
    fn unwrap_s3ec(
        &self,
        envelope: &crate::s3ec::Envelope,
    ) -> Result<Option<DataKey>, KeyringError> {
        if envelope.wrap != crate::s3ec::Wrap::AesGcm {
            return Ok(None);
        }
        let failed = |reason: &str| KeyringError::Unwrap {
            keyring: self.describe(),
            reason: reason.into(),
            transient: false,
        };
        let wrapped = &envelope.encrypted_key;
        if wrapped.len() != IV_LEN + 32 + TAG_LEN {
            return Err(failed(
                "the S3EC wrapped key is not 60 bytes (IV, 32-byte key, tag)",
            ));
        }
        let (iv, rest) = wrapped.split_at(IV_LEN);
        let (sealed, tag) = rest.split_at(32);
        let iv: &[u8; IV_LEN] = iv.try_into().expect("split at IV_LEN");
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at the key's length");
        let mut key = Zeroizing::new(sealed.to_vec());
        self.wrapping_key
            .open_in_place(iv, envelope.cipher.name().as_bytes(), &mut key, tag)
            .map_err(|_| failed("authentication failed (not this wrapping key, or tampered)"))?;
        Ok(Some(DataKey::new(key.to_vec())))
    }
}

impl Keyring for RawAesKeyring {
    fn on_encrypt<'a>(
        &'a self,
        mut materials: EncryptionMaterials,
    ) -> KeyringFuture<'a, EncryptionMaterials> {
        Box::pin(async move {
            self.wrap(&mut materials)?;
            Ok(materials)
        })
    }

    fn on_decrypt<'a>(
        &'a self,
        request: &'a DecryptRequest<'a>,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(async move { self.unwrap(request) })
    }

    fn on_decrypt_s3ec<'a>(
        &'a self,
        envelope: &'a crate::s3ec::Envelope,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(async move { self.unwrap_s3ec(envelope) })
    }

    fn describe(&self) -> String {
        format!(
            "raw-aes:{}:{} (AES-{})",
            self.namespace,
            self.name,
            self.key_len * 8
        )
    }
}

impl std::fmt::Debug for RawAesKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The key name in a Raw AES provider info (`name || u32 128 || u32 12 || IV`), or
/// `None` when the info does not have that shape (a KMS ARN, say).
pub fn raw_aes_key_name(provider_info: &[u8]) -> Option<&[u8]> {
    let n = provider_info.len().checked_sub(INFO_SUFFIX_LEN)?;
    let suffix = &provider_info[n..];
    (suffix[..4] == TAG_BITS.to_be_bytes() && suffix[4..8] == (IV_LEN as u32).to_be_bytes())
        .then(|| &provider_info[..n])
}
