//! The key side of a rewrap: recover a message's data key with the old keys, wrap it
//! under the new ones, and compose the new list of encrypted data keys. Both directions
//! are cached by the message's encrypted data keys (and context), so messages that
//! share a data key, as pooled ones do, cost one unwrap and one wrap per new key in all.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::materials::merge_reproduced;
use super::pool::unwrap_id;
use super::{
    DecryptCache, DecryptionMaterials, EncryptionMaterials, Keyring, PoolStats, wrapping_key_name,
};
use crate::Error;
use crate::format::{EncryptedDataKey, EncryptionContext, HeaderBody};

/// Which of a message's encrypted data keys a rewrap keeps, besides the new ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Keep the existing keys (add a region rather than move to it).
    pub keep_existing: bool,
    /// Remove the keys with these names (KMS key ARNs, raw AES `namespace/name`); the
    /// others are kept.
    pub drop: Vec<String>,
}

impl KeepPolicy {
    /// Whether `edk` stays in the new header.
    fn keeps(&self, edk: &EncryptedDataKey) -> bool {
        (self.keep_existing || !self.drop.is_empty())
            && !self.drop.iter().any(|d| *d == wrapping_key_name(edk))
    }

    /// Those of `edks` that stay.
    pub fn kept<'a>(&self, edks: &'a [EncryptedDataKey]) -> Vec<&'a EncryptedDataKey> {
        edks.iter().filter(|edk| self.keeps(edk)).collect()
    }

    /// Refuses a rewrap of `header` that would leave it no encrypted data key: none
    /// kept, and no new key (`adds_keys`). Decided from the header, before any KMS call.
    pub fn check_leaves_a_key(&self, header: &HeaderBody, adds_keys: bool) -> Result<(), Error> {
        if adds_keys || !self.kept(&header.encrypted_data_keys).is_empty() {
            return Ok(());
        }
        Err(Error::NoKeyLeft(format!(
            "rewrapping would leave the message with no encrypted data key (it has: {}); \
             give a new --key, or drop fewer keys",
            super::describe_encrypted_data_keys(&header.encrypted_data_keys)
        )))
    }
}

/// A data key as a rewrap needs it: recovered, and wrapped under the new keys.
pub struct Rewrapped {
    /// What the header tag is computed with.
    pub materials: DecryptionMaterials,
    /// The new header's encrypted data keys: those kept, then the new ones.
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
}

/// Recovers data keys with the old keys and wraps them under new ones, each data key
/// once per job.
pub struct Rewrapper {
    old: Arc<dyn Keyring>,
    new: Option<Arc<dyn Keyring>>,
    keep: KeepPolicy,
    unwrapped: DecryptCache,
    wrapped: moka::future::Cache<Vec<u8>, Arc<Vec<EncryptedDataKey>>>,
}

impl Rewrapper {
    /// `old` unwraps; `new` (if any: a rewrap may only drop keys) wraps; `keep` says
    /// what else stays. Each cache holds at most `capacity` data keys for `max_age`.
    pub fn new(
        old: Arc<dyn Keyring>,
        new: Option<Arc<dyn Keyring>>,
        keep: KeepPolicy,
        (capacity, max_age): (u64, Duration),
        stats: Arc<PoolStats>,
    ) -> Self {
        Self {
            old,
            new,
            keep,
            unwrapped: DecryptCache::new(capacity, max_age, stats),
            wrapped: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_age)
                .build(),
        }
    }

    /// The data key of the message whose header body is `header` and the encrypted data
    /// keys of its rewrapped header. Call it after the policy checks. Refuses a result
    /// with no key at all.
    pub async fn rewrap(
        &self,
        header: &HeaderBody,
        reproduced: &EncryptionContext,
    ) -> Result<Rewrapped, Error> {
        self.keep.check_leaves_a_key(header, self.new.is_some())?;
        let materials = self
            .unwrapped
            .materials(self.old.as_ref(), header, reproduced)
            .await?;
        let mut keys: Vec<EncryptedDataKey> = header
            .encrypted_data_keys
            .iter()
            .filter(|edk| self.keep.keeps(edk))
            .cloned()
            .collect();
        if let Some(new) = &self.new {
            let added = self
                .wrap(new.as_ref(), header, reproduced, &materials)
                .await?;
            for edk in added.iter() {
                // A key that wraps the data key already keeps its existing copy.
                let name = wrapping_key_name(edk);
                if !keys.iter().any(|k| wrapping_key_name(k) == name) {
                    keys.push(edk.clone());
                }
            }
        }
        if keys.is_empty() {
            // A keyring that wrapped nothing: not what `check_leaves_a_key` foresaw.
            return Err(Error::NoKeyLeft(
                "the new keys wrapped nothing, and no existing key is kept".into(),
            ));
        }
        Ok(Rewrapped {
            materials,
            encrypted_data_keys: keys,
        })
    }

    /// What stays of the existing keys.
    pub fn keep(&self) -> &KeepPolicy {
        &self.keep
    }

    /// The data key wrapped by `new`, once per data key: the same encryption context as
    /// the message (stored and authenticate-only pairs) is bound to every new copy, so a
    /// reader recovers it exactly as it did the old one.
    async fn wrap(
        &self,
        new: &dyn Keyring,
        header: &HeaderBody,
        reproduced: &EncryptionContext,
        materials: &DecryptionMaterials,
    ) -> Result<Arc<Vec<EncryptedDataKey>>, Error> {
        let suite = header.suite.known().ok_or(Error::UnsupportedSuite {
            id: header.suite.id,
        })?;
        let id = unwrap_id(header, reproduced)?;
        let wrapped = self
            .wrapped
            .try_get_with(id, async {
                let (full, authenticate_only) = merge_reproduced(&header.context, reproduced)?;
                let request = EncryptionMaterials::new(
                    suite,
                    full,
                    authenticate_only
                        .iter()
                        .map(|(k, _)| k.to_string())
                        .collect(),
                    Some(materials.data_key.clone()),
                    Vec::new(),
                    None,
                );
                let wrapped = new.on_encrypt(request).await?;
                Ok::<_, Error>(Arc::new(wrapped.encrypted_data_keys))
            })
            .await
            .map_err(Error::Shared)?;
        Ok(wrapped)
    }
}

/// A fingerprint of a message's data key that reveals nothing of it: the SHA-256 of
/// everything its unwrap depends on. Messages with the same one share a data key, so a
/// plan counts the KMS calls a rewrap will make before making any.
pub fn data_key_fingerprint(
    header: &HeaderBody,
    reproduced: &EncryptionContext,
) -> Result<[u8; 32], Error> {
    Ok(Sha256::digest(unwrap_id(header, reproduced)?).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kms_edk(arn: &str) -> EncryptedDataKey {
        EncryptedDataKey {
            provider_id: super::super::KMS_PROVIDER_ID.into(),
            provider_info: arn.as_bytes().to_vec(),
            ciphertext: vec![1; 8],
        }
    }

    #[test]
    fn new_keys_replace_old_ones_unless_kept_and_dropping_keeps_the_rest() {
        let (a, b) = (
            "arn:aws:kms:us-east-1:111122223333:key/a",
            "arn:aws:kms:eu-west-1:111122223333:key/b",
        );
        let edks = [kms_edk(a), kms_edk(b)];
        let names = |policy: &KeepPolicy| -> Vec<String> {
            policy
                .kept(&edks)
                .into_iter()
                .map(wrapping_key_name)
                .collect()
        };
        assert!(names(&KeepPolicy::default()).is_empty(), "moved, not added");
        let keep_all = KeepPolicy {
            keep_existing: true,
            drop: Vec::new(),
        };
        assert_eq!(names(&keep_all), [a, b]);
        let drop_a = KeepPolicy {
            keep_existing: false,
            drop: vec![a.into()],
        };
        assert_eq!(names(&drop_a), [b], "dropping one keeps the others");
        let drop_both = KeepPolicy {
            keep_existing: true,
            drop: vec![a.into(), b.into()],
        };
        assert!(names(&drop_both).is_empty());
    }
}
