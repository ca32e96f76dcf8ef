//! Key references (`--key`): parsing them into keyrings.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use sealpipe::keys::{Keyring, MultiKeyring, RawAesKeyring};
use zeroize::Zeroizing;

/// Builds one keyring from `refs`: the first is the generator, the rest wrap too.
/// Relative key paths resolve against `base`.
pub fn keyring_from_refs(refs: &[String], base: &Path) -> anyhow::Result<Arc<dyn Keyring>> {
    let mut keyrings: Vec<Arc<dyn Keyring>> = Vec::new();
    for r in refs {
        keyrings.push(parse_keyref(r, base)?);
    }
    match keyrings.len() {
        0 => bail!(
            "no key given: pass --key raw-aes:NAMESPACE:NAME:PATH (or set keys in the config file)"
        ),
        1 => Ok(keyrings.remove(0)),
        _ => {
            let generator = keyrings.remove(0);
            Ok(Arc::new(MultiKeyring::new(generator, keyrings)))
        }
    }
}

/// The parts of a `raw-aes:NAMESPACE:NAME:PATH` reference.
pub struct RawAesRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub path: &'a str,
}

/// Splits a raw AES reference; the path may itself contain colons.
pub fn split_raw_aes(keyref: &str) -> Option<RawAesRef<'_>> {
    let rest = keyref.strip_prefix("raw-aes:")?;
    let mut parts = rest.splitn(3, ':');
    let (namespace, name, path) = (parts.next()?, parts.next()?, parts.next()?);
    if namespace.is_empty() || name.is_empty() || path.is_empty() {
        return None;
    }
    Some(RawAesRef {
        namespace,
        name,
        path,
    })
}

fn parse_keyref(keyref: &str, base: &Path) -> anyhow::Result<Arc<dyn Keyring>> {
    let Some(r) = split_raw_aes(keyref) else {
        bail!(
            "unrecognized key reference {keyref:?}: expected raw-aes:NAMESPACE:NAME:PATH \
             (AWS KMS keys arrive with the KMS keyring)"
        );
    };
    let path = base.join(r.path);
    let bytes = Zeroizing::new(
        std::fs::read(&path)
            .with_context(|| format!("cannot read wrapping key file {}", path.display()))?,
    );
    let keyring = RawAesKeyring::new(r.namespace, r.name, bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Arc::new(keyring))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_may_contain_colons() {
        let r = split_raw_aes("raw-aes:ns:name:/tmp/a:b.key").unwrap();
        assert_eq!(
            (r.namespace, r.name, r.path),
            ("ns", "name", "/tmp/a:b.key")
        );
        assert!(split_raw_aes("raw-aes:ns:name").is_none());
        assert!(split_raw_aes("raw-aes::name:path").is_none());
        assert!(split_raw_aes("kms:abc").is_none());
    }
}
