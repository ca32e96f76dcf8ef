//! The AWS KMS keyrings: strict (named keys; can encrypt) and discovery (any `aws-kms`
//! data key, optionally filtered by partition and account; decrypt only).
//!
//! Encrypted data keys are written exactly as the official SDKs write them: provider
//! ID `aws-kms`, provider info the key ARN KMS returned, ciphertext the KMS
//! `CiphertextBlob`. The full encryption context goes to KMS, which binds it as AAD.
//!
//! Every call goes through the retry policy (exponential backoff with full jitter on
//! throttling and transient failures) and the optional request-rate budget. The SDK's
//! own retries are disabled in the clients sealpipe builds, so the two never multiply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptOutput;
use aws_sdk_kms::primitives::Blob;

use super::{DecryptRequest, EncryptionMaterials, Keyring, KeyringError, KeyringFuture};
use crate::crypto::DataKey;
use crate::format::{EncryptedDataKey, EncryptionContext};
use crate::retry::{RateLimiter, RetryPolicy, RetryStats, Transience, classify_sdk_error};
use crate::s3ec;

/// The provider ID of every KMS-wrapped data key.
pub const KMS_PROVIDER_ID: &str = "aws-kms";

/// A parsed KMS ARN: `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` (or `alias/NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsArn {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: String,
    /// The key's region.
    pub region: String,
    /// The owning account.
    pub account: String,
    /// `key` or `alias`.
    pub resource_type: String,
    /// Key ID or alias name.
    pub resource_id: String,
}

impl KmsArn {
    /// Parses a KMS ARN; `None` for anything else (key IDs, alias names).
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return None;
        };
        let (resource_type, resource_id) = resource.split_once('/')?;
        let valid = arn == "arn"
            && service == "kms"
            && [partition, region, account, resource_id]
                .iter()
                .all(|p| !p.is_empty())
            && matches!(resource_type, "key" | "alias");
        valid.then(|| Self {
            partition: partition.into(),
            region: region.into(),
            account: account.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
        })
    }

    /// Whether this names a multi-Region key (`key/mrk-...`).
    pub fn is_multi_region_key(&self) -> bool {
        self.resource_type == "key" && self.resource_id.starts_with("mrk-")
    }

    /// Whether a data key wrapped by `self` may be unwrapped with `other`: the same key,
    /// or replicas of one multi-Region key (equal but for the region).
    pub fn matches_for_decrypt(&self, other: &KmsArn) -> bool {
        if self == other {
            return true;
        }
        self.is_multi_region_key()
            && other.is_multi_region_key()
            && self.partition == other.partition
            && self.account == other.account
            && self.resource_id == other.resource_id
    }

    /// The region a key identifier lives in, if it says (ARNs do; IDs and aliases don't).
    pub fn region_of(identifier: &str) -> Option<String> {
        Self::parse(identifier).map(|a| a.region)
    }
}

impl std::fmt::Display for KmsArn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "arn:{}:kms:{}:{}:{}/{}",
            self.partition, self.region, self.account, self.resource_type, self.resource_id
        )
    }
}

/// KMS calls made, by action, plus retry counters.
#[derive(Debug, Default)]
pub struct KmsStats {
    /// `GenerateDataKey` calls (every attempt).
    pub generate_data_key: AtomicU64,
    /// `Encrypt` calls.
    pub encrypt: AtomicU64,
    /// `Decrypt` calls.
    pub decrypt: AtomicU64,
    /// Throttling and retries.
    pub retry: RetryStats,
}

/// KMS clients, one per region, built from one base configuration.
#[derive(Debug)]
pub struct KmsClients {
    base: aws_config::SdkConfig,
    by_region: Mutex<HashMap<String, aws_sdk_kms::Client>>,
}

impl KmsClients {
    /// Clients derived from `base` (credentials, endpoint, timeouts; retries off).
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self {
            base,
            by_region: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `region`, or for the base configuration's region.
    pub fn client(&self, region: Option<&str>) -> aws_sdk_kms::Client {
        let region = region
            .map(str::to_string)
            .or_else(|| self.base.region().map(|r| r.to_string()))
            .unwrap_or_default();
        let mut clients = self.by_region.lock().expect("not poisoned");
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let mut conf = aws_sdk_kms::config::Builder::from(&self.base);
                if !region.is_empty() {
                    conf = conf.region(aws_sdk_kms::config::Region::new(region));
                }
                aws_sdk_kms::Client::from_conf(conf.build())
            })
            .clone()
    }

    /// An STS client like the KMS client for `region`: same credentials, endpoint and
    /// region, for naming the caller when KMS denies a call.
    fn sts(&self, region: Option<&str>) -> aws_sdk_sts::Client {
        let region = region
            .map(str::to_string)
            .or_else(|| self.base.region().map(|r| r.to_string()));
        crate::aws::sts_client(&self.base, region.as_deref())
    }
}

/// What every KMS keyring shares: clients, policy, budget, counters.
#[derive(Clone, Debug)]
pub struct KmsContext {
    /// Regional clients.
    pub clients: Arc<KmsClients>,
    /// Backoff for throttling and transient failures.
    pub retry: RetryPolicy,
    /// Optional requests-per-second budget across all KMS calls of the process.
    pub rate: Option<Arc<RateLimiter>>,
    /// Grant tokens passed with every call.
    pub grant_tokens: Vec<String>,
    /// Counters.
    pub stats: Arc<KmsStats>,
}

impl KmsContext {
    /// Sends `call` (the KMS `action` with the key `key`), rate-limited and retried.
    async fn call<T, E, Fut>(
        &self,
        counter: &AtomicU64,
        (action, key): (&str, &str),
        call: impl Fn() -> Fut,
    ) -> Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>
    where
        Fut: std::future::Future<
                Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>,
            >,
        E: ProvideErrorMetadata,
    {
        let on_retry = |e: &SdkError<E, aws_smithy_runtime_api::http::Response>,
                        wait: std::time::Duration| {
            if !crate::events::enabled() {
                return;
            }
            let mut fields = serde_json::Map::new();
            fields.insert("service".into(), "kms".into());
            fields.insert("action".into(), action.into());
            fields.insert("key".into(), crate::events::untrusted(key));
            // The service's code; else the HTTP status of a response it could not
            // read (a proxy's 503); else the kind of failure (timeout, connection).
            let code = match (
                e.as_service_error().and_then(|s| s.code()),
                e.raw_response(),
            ) {
                (Some(code), _) => code.to_string(),
                (None, Some(response)) => format!("HTTP {}", response.status().as_u16()),
                (None, None) => match e {
                    SdkError::TimeoutError(_) => "Timeout".to_string(),
                    SdkError::DispatchFailure(_) => "ConnectionError".to_string(),
                    _ => "ClientError".to_string(),
                },
            };
            fields.insert("code".into(), crate::events::untrusted(&code));
            fields.insert("wait_ms".into(), (wait.as_millis() as u64).into());
            crate::events::emit("retry", fields);
        };
        self.retry
            .run_telling(&self.stats.retry, transience, on_retry, || async {
                if let Some(rate) = &self.rate {
                    rate.acquire().await;
                }
                counter.fetch_add(1, Relaxed);
                call().await
            })
            .await
    }

    fn grant_tokens(&self) -> Option<Vec<String>> {
        (!self.grant_tokens.is_empty()).then(|| self.grant_tokens.clone())
    }
}

/// Sorts a KMS failure into retry classes: throttling, transient (5xx, timeouts,
/// connection problems), or permanent.
pub(crate) fn transience<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Transience {
    classify_sdk_error(
        err,
        &[
            "ThrottlingException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
        ],
        &[
            "KMSInternalException",
            "DependencyTimeoutException",
            "ServiceUnavailable",
        ],
    )
}

/// Whether KMS refused the call for lack of permission. KMS says
/// `AccessDeniedException` (HTTP 400); a 403 (as IAM-enforcing test servers such as
/// moto answer, with code `AccessDenied`) means the same.
fn is_access_denied<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    match err {
        SdkError::ServiceError(e) => {
            matches!(
                e.err().code(),
                Some("AccessDeniedException" | "AccessDenied")
            ) || e.raw().status().as_u16() == 403
        }
        _ => false,
    }
}

/// Turns a failed KMS call into an error that names the action, the key and, for
/// permission problems, what to check and who the caller is (looked up now, once per
/// process; see [`crate::aws::caller_hint`]). `region` is that of the client that
/// made the call.
async fn kms_failure<E: ProvideErrorMetadata + std::fmt::Debug>(
    kms: &KmsContext,
    region: Option<&str>,
    action: &'static str,
    key: &str,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> KeyringError {
    let denied = is_access_denied(&err);
    let transient = transience(&err) != Transience::Permanent;
    let (code, message) = match &err {
        // A body the JSON protocol cannot read (a proxy's, or moto's XML denial)
        // still has a status worth showing.
        SdkError::ServiceError(e) => (
            e.err()
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", e.raw().status().as_u16())),
            e.err().message().unwrap_or("(no message)").to_string(),
        ),
        SdkError::TimeoutError(_) => ("Timeout".into(), "the call timed out".into()),
        SdkError::DispatchFailure(e) => (
            "ConnectionError".into(),
            format!(
                "cannot reach the KMS endpoint: {:?}",
                e.as_connector_error()
            ),
        ),
        other => ("Error".into(), format!("{other:?}")),
    };
    let hint = match code.as_str() {
        _ if denied => format!(
            "; both the key policy of {key} and the IAM policy of the calling principal must \
             allow kms:{action} (the usual cause is a role missing from the key policy){}",
            crate::aws::caller_hint(|| Some(kms.clients.sts(region))).await
        ),
        "DisabledException" => "; the key is disabled: enable it, or use another key".into(),
        "KMSInvalidStateException" => {
            "; the key is not usable in its current state (pending deletion or import?)".into()
        }
        "NotFoundException" => "; check the key ID, alias, account and region".into(),
        "InvalidCiphertextException" => {
            "; the data key was not wrapped under this key with this encryption context".into()
        }
        _ => String::new(),
    };
    KeyringError::Kms {
        action,
        key: key.to_string(),
        code,
        message: format!("{message}{hint}"),
        transient,
    }
}

fn kms_context(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| {
        context
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// A KMS key that wraps (generator: `GenerateDataKey`; child: `Encrypt`) and unwraps
/// (`Decrypt`, only data keys wrapped by this key or a replica of it).
#[derive(Debug)]
pub struct KmsKeyring {
    /// Key ARN, key ID, alias name or alias ARN.
    key: String,
    kms: KmsContext,
}

impl KmsKeyring {
    /// A keyring for `key`.
    pub fn new(key: impl Into<String>, kms: KmsContext) -> Self {
        Self {
            key: key.into(),
            kms,
        }
    }

    fn client(&self) -> aws_sdk_kms::Client {
        self.kms
            .clients
            .client(KmsArn::region_of(&self.key).as_deref())
    }

    async fn wrap(&self, mut m: EncryptionMaterials) -> Result<EncryptionMaterials, KeyringError> {
        let client = self.client();
        let context = kms_context(&m.context);
        let (arn, ciphertext) = match &m.data_key {
            None => {
                let result = self
                    .kms
                    .call(
                        &self.kms.stats.generate_data_key,
                        ("GenerateDataKey", &self.key),
                        || {
                            client
                                .generate_data_key()
                                .key_id(&self.key)
                                .number_of_bytes(m.suite.key_len as i32)
                                .set_encryption_context(context.clone())
                                .set_grant_tokens(self.kms.grant_tokens())
                                .send()
                        },
                    )
                    .await;
                let out = match result {
                    Ok(out) => out,
                    Err(e) => return Err(self.failure("GenerateDataKey", e).await),
                };
                let plaintext = out
                    .plaintext
                    .map(Blob::into_inner)
                    .map(DataKey::new)
                    .filter(|k| k.len() == m.suite.key_len)
                    .ok_or_else(|| {
                        self.bad_response("GenerateDataKey", "no data key of the suite's length")
                    })?;
                m.data_key = Some(plaintext);
                (out.key_id, out.ciphertext_blob)
            }
            Some(data_key) => {
                let result = self
                    .kms
                    .call(&self.kms.stats.encrypt, ("Encrypt", &self.key), || {
                        client
                            .encrypt()
                            .key_id(&self.key)
                            .plaintext(Blob::new(data_key.as_bytes().to_vec()))
                            .set_encryption_context(context.clone())
                            .set_grant_tokens(self.kms.grant_tokens())
                            .send()
                    })
                    .await;
                let out = match result {
                    Ok(out) => out,
                    Err(e) => return Err(self.failure("Encrypt", e).await),
                };
                (out.key_id, out.ciphertext_blob)
            }
        };
        let arn = arn
            .filter(|a| KmsArn::parse(a).is_some_and(|a| a.resource_type == "key"))
            .ok_or_else(|| self.bad_response("GenerateDataKey/Encrypt", "no valid key ARN"))?;
        let ciphertext = ciphertext
            .map(Blob::into_inner)
            .ok_or_else(|| self.bad_response("GenerateDataKey/Encrypt", "no ciphertext"))?;
        m.encrypted_data_keys.push(EncryptedDataKey {
            provider_id: KMS_PROVIDER_ID.into(),
            provider_info: arn.into_bytes(),
            ciphertext,
        });
        Ok(m)
    }

    /// One KMS `Encrypt` of a caller's small secret (at most 4,096 bytes, KMS's own
    /// limit) under this key, bound to `context`: the direct method, one KMS call per
    /// secret, whose `CiphertextBlob` any KMS client decrypts. Returns the key ARN KMS
    /// used and the blob.
    pub async fn encrypt_secret(
        &self,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(String, Vec<u8>), KeyringError> {
        let client = self.client();
        let pairs = kms_context(context);
        let result = self
            .kms
            .call(&self.kms.stats.encrypt, ("Encrypt", &self.key), || {
                client
                    .encrypt()
                    .key_id(&self.key)
                    .plaintext(Blob::new(plaintext.to_vec()))
                    .set_encryption_context(pairs.clone())
                    .set_grant_tokens(self.kms.grant_tokens())
                    .send()
            })
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => return Err(self.failure("Encrypt", e).await),
        };
        let blob = out
            .ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| self.bad_response("Encrypt", "no ciphertext"))?;
        Ok((out.key_id.unwrap_or_else(|| self.key.clone()), blob))
    }

    /// One KMS `Decrypt` of a `CiphertextBlob` (from [`encrypt_secret`](Self::encrypt_secret),
    /// `aws kms encrypt` or any KMS client), with this key named as the `KeyId`, so a
    /// blob under any other key is refused by KMS rather than decrypted. Returns the
    /// key ARN and the plaintext.
    pub async fn decrypt_secret(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), KeyringError> {
        let client = self.client();
        let pairs = kms_context(context);
        let result = self
            .kms
            .call(&self.kms.stats.decrypt, ("Decrypt", &self.key), || {
                client
                    .decrypt()
                    .key_id(&self.key)
                    .ciphertext_blob(Blob::new(blob.to_vec()))
                    .set_encryption_context(pairs.clone())
                    .set_grant_tokens(self.kms.grant_tokens())
                    .send()
            })
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => return Err(self.failure("Decrypt", e).await),
        };
        let plaintext = out
            .plaintext
            .map(|p| zeroize::Zeroizing::new(p.into_inner()))
            .ok_or_else(|| self.bad_response("Decrypt", "no plaintext"))?;
        Ok((out.key_id.unwrap_or_else(|| self.key.clone()), plaintext))
    }

    /// A failed call of `action` with this key, named as [`kms_failure`] names it.
    async fn failure<E: ProvideErrorMetadata + std::fmt::Debug>(
        &self,
        action: &'static str,
        e: SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> KeyringError {
        let region = KmsArn::region_of(&self.key);
        kms_failure(&self.kms, region.as_deref(), action, &self.key, e).await
    }

    fn bad_response(&self, action: &'static str, what: &str) -> KeyringError {
        KeyringError::Kms {
            action,
            key: self.key.clone(),
            code: "InvalidResponse".into(),
            message: format!("KMS returned {what}"),
            transient: false,
        }
    }

    /// An S3EC object's data key: KMS `Decrypt` of its blob under this key, with its
    /// stored context (which KMS checks; for `kms+context` it names the content cipher).
    async fn unwrap_s3ec(
        &self,
        envelope: &s3ec::Envelope,
    ) -> Result<Option<DataKey>, KeyringError> {
        if !matches!(envelope.wrap, s3ec::Wrap::KmsContext | s3ec::Wrap::Kms) {
            return Ok(None);
        }
        let client = self.client();
        let context = s3ec_kms_context(envelope);
        let result = self
            .kms
            .call(&self.kms.stats.decrypt, ("Decrypt", &self.key), || {
                client
                    .decrypt()
                    .key_id(&self.key)
                    .ciphertext_blob(Blob::new(envelope.encrypted_key.clone()))
                    .set_encryption_context(context.clone())
                    .set_grant_tokens(self.kms.grant_tokens())
                    .send()
            })
            .await;
        match result {
            Ok(out) => s3ec_data_key(out, &self.key).map(Some),
            Err(e) => Err(self.failure("Decrypt", e).await),
        }
    }

    async fn unwrap(&self, request: &DecryptRequest<'_>) -> Result<Option<DataKey>, KeyringError> {
        let Some(configured) = KmsArn::parse(&self.key).filter(|a| a.resource_type == "key") else {
            // Only a key ARN can say which data key is ours; aliases and bare IDs never
            // match (as in every official SDK).
            return Ok(None);
        };
        let candidates = request.encrypted_data_keys.iter().filter(|edk| {
            edk.provider_id == KMS_PROVIDER_ID
                && std::str::from_utf8(&edk.provider_info)
                    .ok()
                    .and_then(KmsArn::parse)
                    .is_some_and(|arn| arn.matches_for_decrypt(&configured))
        });
        decrypt_first(&self.kms, request, candidates, |_| Some(configured.clone())).await
    }
}

/// Tries `candidates` in order with `Decrypt`, using the ARN `key_for` picks for each;
/// returns the first data key, or the last error if every candidate failed.
async fn decrypt_first<'a>(
    kms: &KmsContext,
    request: &DecryptRequest<'_>,
    candidates: impl Iterator<Item = &'a EncryptedDataKey>,
    key_for: impl Fn(&KmsArn) -> Option<KmsArn>,
) -> Result<Option<DataKey>, KeyringError> {
    let context = kms_context(request.context);
    let mut last_error = None;
    for edk in candidates {
        let Some(wrapped_by) = std::str::from_utf8(&edk.provider_info)
            .ok()
            .and_then(KmsArn::parse)
        else {
            continue;
        };
        let Some(key) = key_for(&wrapped_by) else {
            continue;
        };
        let key_arn = key.to_string();
        let client = kms.clients.client(Some(&key.region));
        let result = kms
            .call(&kms.stats.decrypt, ("Decrypt", &key_arn), || {
                client
                    .decrypt()
                    .key_id(&key_arn)
                    .ciphertext_blob(Blob::new(edk.ciphertext.clone()))
                    .set_encryption_context(context.clone())
                    .set_grant_tokens(kms.grant_tokens())
                    .send()
            })
            .await;
        match result {
            Ok(out) if out.key_id.as_deref() == Some(key_arn.as_str()) => {
                match out.plaintext.map(Blob::into_inner).map(DataKey::new) {
                    Some(k) if k.len() == request.suite.key_len => return Ok(Some(k)),
                    _ => {
                        last_error = Some(KeyringError::Kms {
                            action: "Decrypt",
                            key: key_arn,
                            code: "InvalidResponse".into(),
                            message: "KMS returned a data key of the wrong length".into(),
                            transient: false,
                        })
                    }
                }
            }
            Ok(out) => {
                last_error = Some(KeyringError::Kms {
                    action: "Decrypt",
                    key: key_arn,
                    code: "InvalidResponse".into(),
                    message: format!("KMS answered for another key: {:?}", out.key_id),
                    transient: false,
                })
            }
            Err(e) => {
                last_error = Some(kms_failure(kms, Some(&key.region), "Decrypt", &key_arn, e).await)
            }
        }
    }
    last_error.map_or(Ok(None), Err)
}

/// The context an S3EC envelope's KMS `Decrypt` is given: exactly the stored one.
fn s3ec_kms_context(envelope: &s3ec::Envelope) -> Option<HashMap<String, String>> {
    (!envelope.context.is_empty()).then(|| envelope.context.clone().into_iter().collect())
}

/// The data key from an S3EC envelope's `Decrypt`: 32 bytes, as every client writes.
fn s3ec_data_key(out: DecryptOutput, key: &str) -> Result<DataKey, KeyringError> {
    out.plaintext
        .map(Blob::into_inner)
        .map(DataKey::new)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| KeyringError::Kms {
            action: "Decrypt",
            key: key.to_string(),
            code: "InvalidResponse".into(),
            message: "KMS returned no 32-byte data key".into(),
            transient: false,
        })
}

impl Keyring for KmsKeyring {
    fn on_encrypt<'a>(&'a self, m: EncryptionMaterials) -> KeyringFuture<'a, EncryptionMaterials> {
        Box::pin(self.wrap(m))
    }

    fn on_decrypt<'a>(&'a self, r: &'a DecryptRequest<'a>) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(self.unwrap(r))
    }

    fn on_decrypt_s3ec<'a>(
        &'a self,
        envelope: &'a s3ec::Envelope,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(self.unwrap_s3ec(envelope))
    }

    fn describe(&self) -> String {
        format!("aws-kms:{}", self.key)
    }
}

/// Restricts discovery to keys of one partition and some accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryFilter {
    /// e.g. `aws`.
    pub partition: String,
    /// Account IDs whose keys may be used.
    pub accounts: Vec<String>,
}

/// Decrypts any KMS-wrapped data key the caller's credentials can decrypt, optionally
/// only keys of listed accounts. Cannot encrypt.
#[derive(Debug)]
pub struct KmsDiscoveryKeyring {
    filter: Option<DiscoveryFilter>,
    kms: KmsContext,
}

impl KmsDiscoveryKeyring {
    /// A discovery keyring.
    pub fn new(filter: Option<DiscoveryFilter>, kms: KmsContext) -> Self {
        Self { filter, kms }
    }

    fn allowed(&self, arn: &KmsArn) -> bool {
        arn.resource_type == "key"
            && self.filter.as_ref().is_none_or(|f| {
                f.partition == arn.partition && f.accounts.iter().any(|a| a == &arn.account)
            })
    }
}

impl Keyring for KmsDiscoveryKeyring {
    fn on_encrypt<'a>(&'a self, _: EncryptionMaterials) -> KeyringFuture<'a, EncryptionMaterials> {
        Box::pin(async {
            Err(KeyringError::Wrap {
                keyring: self.describe(),
                reason: "a discovery keyring cannot encrypt; name the KMS keys to encrypt with"
                    .into(),
            })
        })
    }

    fn on_decrypt<'a>(&'a self, r: &'a DecryptRequest<'a>) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(async move {
            let candidates = r
                .encrypted_data_keys
                .iter()
                .filter(|edk| edk.provider_id == KMS_PROVIDER_ID);
            decrypt_first(&self.kms, r, candidates, |arn| {
                self.allowed(arn).then(|| arn.clone())
            })
            .await
        })
    }

    /// Without a key to name, KMS finds it in the blob; a key the filter does not
    /// allow is refused after the call (an S3EC envelope does not name its key).
    fn on_decrypt_s3ec<'a>(
        &'a self,
        envelope: &'a s3ec::Envelope,
    ) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(async move {
            if !matches!(envelope.wrap, s3ec::Wrap::KmsContext | s3ec::Wrap::Kms) {
                return Ok(None);
            }
            let client = self.kms.clients.client(None);
            let context = s3ec_kms_context(envelope);
            let what = "(the key in the S3EC envelope)";
            let result = self
                .kms
                .call(&self.kms.stats.decrypt, ("Decrypt", what), || {
                    client
                        .decrypt()
                        .ciphertext_blob(Blob::new(envelope.encrypted_key.clone()))
                        .set_encryption_context(context.clone())
                        .set_grant_tokens(self.kms.grant_tokens())
                        .send()
                })
                .await;
            let out = match result {
                Ok(out) => out,
                Err(e) => return Err(kms_failure(&self.kms, None, "Decrypt", what, e).await),
            };
            let key = out.key_id.clone().unwrap_or_default();
            if !KmsArn::parse(&key).is_some_and(|arn| self.allowed(&arn)) {
                return Err(KeyringError::Unwrap {
                    keyring: self.describe(),
                    reason: format!(
                        "the object's data key is under {}, which the discovery filter does                          not allow",
                        crate::escape::text(&key)
                    ),
                    transient: false,
                });
            }
            s3ec_data_key(out, &key).map(Some)
        })
    }

    fn describe(&self) -> String {
        match &self.filter {
            Some(f) => format!(
                "aws-kms discovery ({}: {})",
                f.partition,
                f.accounts.join(", ")
            ),
            None => "aws-kms discovery".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_parse_and_multi_region_replicas_match() {
        let a = KmsArn::parse("arn:aws:kms:us-east-1:111122223333:key/mrk-1234").unwrap();
        let b = KmsArn::parse("arn:aws:kms:eu-west-1:111122223333:key/mrk-1234").unwrap();
        let c = KmsArn::parse("arn:aws:kms:eu-west-1:111122223333:key/1234").unwrap();
        let d = KmsArn::parse("arn:aws:kms:us-east-1:111122223333:key/1234").unwrap();
        assert!(a.matches_for_decrypt(&b));
        assert!(
            !c.matches_for_decrypt(&d),
            "single-region keys match only themselves"
        );
        assert!(c.matches_for_decrypt(&c.clone()));
        assert_eq!(
            a.to_string(),
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1234"
        );
        for bad in [
            "alias/foo",
            "1234abcd",
            "arn:aws:s3:us-east-1:111122223333:key/x",
            "arn:aws:kms:us-east-1::key/x",
            "arn:aws:kms:us-east-1:111122223333:grant/x",
            "arn:aws:kms:us-east-1:111122223333:key/",
        ] {
            assert!(KmsArn::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            KmsArn::parse("arn:aws:kms:us-east-1:111122223333:alias/x")
                .unwrap()
                .resource_type,
            "alias"
        );
    }
}
