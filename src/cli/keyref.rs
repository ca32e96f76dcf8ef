//! Key references (`--key`): parsing them into keyrings.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use sealpipe::keys::{Keyring, KmsArn, KmsContext, KmsKeyring, MultiKeyring, RawAesKeyring};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

/// Builds the KMS context (clients, retry policy, budget) on first use, so jobs with
/// only local keys never touch AWS configuration.
pub struct KmsSource {
    pub settings: sealpipe::aws::AwsSettings,
    pub rate: Option<f64>,
    pub grant_tokens: Vec<String>,
    pub retry: sealpipe::retry::RetryPolicy,
    context: OnceCell<KmsContext>,
}

impl KmsSource {
    pub fn new(
        settings: sealpipe::aws::AwsSettings,
        rate: Option<f64>,
        grant_tokens: Vec<String>,
        retry: sealpipe::retry::RetryPolicy,
    ) -> Self {
        Self {
            settings,
            rate,
            grant_tokens,
            retry,
            context: OnceCell::new(),
        }
    }

    pub async fn context(&self) -> &KmsContext {
        self.context
            .get_or_init(|| async {
                let config = sealpipe::aws::kms_config(&self.settings).await;
                KmsContext {
                    clients: Arc::new(sealpipe::keys::KmsClients::new(config)),
                    retry: self.retry.clone(),
                    rate: self
                        .rate
                        .map(|r| Arc::new(sealpipe::retry::RateLimiter::new(r))),
                    grant_tokens: self.grant_tokens.clone(),
                    stats: Default::default(),
                }
            })
            .await
    }

    /// The context if any KMS key was used.
    pub fn used(&self) -> Option<&KmsContext> {
        self.context.get()
    }
}

/// Builds one keyring from `refs`: the first is the generator, the rest wrap too.
/// Relative key paths resolve against `base`.
pub async fn keyring_from_refs(
    refs: &[String],
    base: &Path,
    kms: &KmsSource,
) -> anyhow::Result<Vec<Arc<dyn Keyring>>> {
    let mut keyrings: Vec<Arc<dyn Keyring>> = Vec::new();
    for r in refs {
        keyrings.push(parse_keyref(r, base, kms).await?);
    }
    Ok(keyrings)
}

/// Checks the syntax of `refs` only: what a dry run needs, since it uses no key. No
/// key file is opened and no KMS client is built. `none_needed` when another source
/// of keys (KMS discovery) makes an empty list acceptable.
pub fn check_refs(refs: &[String], none_needed: bool) -> anyhow::Result<()> {
    if refs.is_empty() && !none_needed {
        bail!("{NO_KEY}");
    }
    for r in refs {
        if kms_identifier(r).is_none() && split_raw_aes(r).is_none() {
            bail!("{}", unrecognized(r));
        }
    }
    Ok(())
}

const NO_KEY: &str = "no key given: pass --key with a KMS key ARN or alias, or \
                      raw-aes:NAMESPACE:NAME:PATH (or set keys in the config file)";

fn unrecognized(keyref: &str) -> String {
    format!(
        "unrecognized key reference {keyref:?}: expected a KMS key ARN, alias/NAME, an \
         alias ARN, kms:KEY_ID, or raw-aes:NAMESPACE:NAME:PATH"
    )
}

/// The largest raw AES wrapping key (AES-256). A key file is read up to one byte
/// more, so a longer file is refused without reading it.
const MAX_RAW_AES_KEY: u64 = 32;

/// Combines keyrings: one alone, or a multi-keyring whose first member generates.
pub fn combine(mut keyrings: Vec<Arc<dyn Keyring>>) -> anyhow::Result<Arc<dyn Keyring>> {
    match keyrings.len() {
        0 => bail!("{NO_KEY}"),
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

async fn parse_keyref(
    keyref: &str,
    base: &Path,
    kms: &KmsSource,
) -> anyhow::Result<Arc<dyn Keyring>> {
    if let Some(key) = kms_identifier(keyref) {
        return Ok(Arc::new(KmsKeyring::new(key, kms.context().await.clone())));
    }
    let Some(r) = split_raw_aes(keyref) else {
        bail!("{}", unrecognized(keyref));
    };
    let path = base.join(r.path);
    let mut bytes = Zeroizing::new(Vec::new());
    super::files::read_small_file(&path, MAX_RAW_AES_KEY, &mut bytes)
        .context("cannot read wrapping key file")?;
    let keyring = RawAesKeyring::new(r.namespace, r.name, bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", sealpipe::escape::path(&path)))?;
    Ok(Arc::new(keyring))
}

/// The name a reference's key writes into messages when the reference says it: a KMS
/// key ARN as it is, `NAMESPACE/NAME` for a raw AES key. Aliases and key IDs name no
/// ARN until KMS answers, so they give none.
pub fn wrapping_name(keyref: &str) -> Option<String> {
    match (kms_identifier(keyref), split_raw_aes(keyref)) {
        (Some(id), _) => KmsArn::parse(id)
            .filter(|arn| arn.resource_type == "key")
            .map(|arn| arn.to_string()),
        (None, Some(r)) => Some(format!("{}/{}", r.namespace, r.name)),
        (None, None) => None,
    }
}

/// The name sealpipe's marker records for the key a reference names, when the
/// reference says it ([`wrapping_name`], in the marker's alphabet).
pub fn recorded_name(keyref: &str) -> Option<String> {
    wrapping_name(keyref).map(|name| sealpipe::ops::marker::recorded_name(&name))
}

/// The KMS key identifier in a reference, if it is one.
pub fn kms_identifier(keyref: &str) -> Option<&str> {
    if let Some(id) = keyref.strip_prefix("kms:") {
        return (!id.is_empty()).then_some(id);
    }
    (keyref.starts_with("arn:") || keyref.starts_with("alias/")).then_some(keyref)
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

    #[test]
    fn kms_references() {
        assert_eq!(kms_identifier("kms:1234"), Some("1234"));
        assert_eq!(kms_identifier("alias/backup"), Some("alias/backup"));
        let arn = "arn:aws:kms:us-east-1:111122223333:key/abcd";
        assert_eq!(kms_identifier(arn), Some(arn));
        assert_eq!(kms_identifier("raw-aes:a:b:c"), None);
        assert_eq!(kms_identifier("kms:"), None);
    }
}
