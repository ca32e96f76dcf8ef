//! The multi-keyring: one generator plus children. Encrypt wraps the same data key
//! under every key; decrypt succeeds with whichever key can unwrap first.

use std::sync::Arc;

use super::{DecryptRequest, EncryptionMaterials, Keyring, KeyringError, KeyringFuture};
use crate::crypto::DataKey;

/// A generator keyring and child keyrings.
#[derive(Debug)]
pub struct MultiKeyring {
    generator: Arc<dyn Keyring>,
    children: Vec<Arc<dyn Keyring>>,
}

impl MultiKeyring {
    /// `generator` creates the data key; each child wraps it too.
    pub fn new(generator: Arc<dyn Keyring>, children: Vec<Arc<dyn Keyring>>) -> Self {
        Self {
            generator,
            children,
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn Keyring>> {
        std::iter::once(&self.generator).chain(&self.children)
    }

    /// The first data key `unwrap` recovers with one of the keyrings, in order; `None`
    /// if none is for it; every failure, if some were and all of those failed.
    async fn first<'a>(
        &'a self,
        unwrap: impl Fn(&'a dyn Keyring) -> KeyringFuture<'a, Option<DataKey>>,
    ) -> Result<Option<DataKey>, KeyringError> {
        let mut errors = Vec::new();
        let mut transient = false;
        for keyring in self.all() {
            match unwrap(keyring.as_ref()).await {
                Ok(Some(key)) => return Ok(Some(key)),
                Ok(None) => {}
                Err(e) => {
                    transient |= e.is_transient();
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(KeyringError::Unwrap {
                keyring: self.describe(),
                reason: errors.join("; "),
                transient,
            })
        }
    }
}

impl Keyring for MultiKeyring {
    fn on_encrypt<'a>(
        &'a self,
        materials: EncryptionMaterials,
    ) -> KeyringFuture<'a, EncryptionMaterials> {
        Box::pin(async move {
            let mut materials = self.generator.on_encrypt(materials).await?;
            if materials.data_key.is_none() {
                return Err(KeyringError::Wrap {
                    keyring: self.generator.describe(),
                    reason: "the generator produced no data key".into(),
                });
            }
            for child in &self.children {
                materials = child.on_encrypt(materials).await?;
            }
            Ok(materials)
        })
    }

    fn on_decrypt<'a>(
        &'a self,
        request: &'a DecryptRequest<'a>,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(self.first(move |keyring| keyring.on_decrypt(request)))
    }

    fn on_decrypt_s3ec<'a>(
        &'a self,
        envelope: &'a crate::s3ec::Envelope,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(self.first(move |keyring| keyring.on_decrypt_s3ec(envelope)))
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self.all().map(|k| k.describe()).collect();
        format!("multi[{}]", names.join(", "))
    }
}
