//! `config.toml`: the job file. Flags override it; it overrides built-in defaults.
//! Relative paths in it are relative to the file's own directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::values::{
    Age, BodySize, CacheBytes, CacheMessages, Concurrency, CopyThreshold, Delay, FrameLength,
    HeaderSize, HeldSize, InFlight, KmsRate, MaxDataKeys, PartSize, Seconds, ServeConcurrency,
    TokenRate,
};

/// The whole file. Every section and field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub job: JobSection,
    #[serde(default)]
    pub encrypt: EncryptSection,
    #[serde(default)]
    pub decrypt: DecryptSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub aws: AwsSection,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub s3: S3Section,
    #[serde(default)]
    pub rewrap: RewrapSection,
    #[serde(default)]
    pub serve: ServeSection,
    /// The directory the file is in; relative paths resolve against it.
    #[serde(skip)]
    pub base: PathBuf,
}

/// `[job]`: what `sealpipe run` does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// `encrypt`, `decrypt`, `reencrypt`, `rewrap` or `verify`.
    pub mode: Option<String>,
    /// A path (relative to this file) or s3://bucket/prefix.
    pub source: Option<String>,
    /// A path (relative to this file) or s3://bucket/prefix.
    pub destination: Option<String>,
    /// A manifest CSV instead of `source`.
    pub manifest: Option<String>,
    /// Replace S3 objects in place (conditional writes).
    #[serde(default)]
    pub in_place: bool,
    /// After encrypting, decrypt into this directory and compare with the source.
    pub verify_destination: Option<PathBuf>,
    /// Key references, as for `--key`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// `reencrypt`, `rewrap`: keys that unwrap the existing messages, as for `--old-key`.
    #[serde(default)]
    pub old_keys: Vec<String>,
    /// Globs, as for `--include`.
    #[serde(default)]
    pub include: Vec<String>,
    /// `INDEX/COUNT`, as for `--shard`.
    pub shard: Option<String>,
    /// As for `--shards`.
    pub shards: Option<u64>,
    /// `hash` or `prefix`, as for `--shard-by`.
    pub shard_by: Option<String>,
    /// Globs, as for `--exclude`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Create a missing raw-aes key file (local development only).
    #[serde(default)]
    pub create_missing_dev_key: bool,
    /// Encryption context pairs.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

/// `[rewrap]`: as the `rewrap` flags of the same names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewrapSection {
    #[serde(default)]
    pub keep_existing: bool,
    #[serde(default)]
    pub drop_keys: Vec<String>,
    #[serde(default)]
    pub reencrypt_signed: bool,
    #[serde(default)]
    pub allow_header_nonce_reuse: bool,
    pub copy_threshold: Option<CopyThreshold>,
}

/// `[encrypt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptSection {
    pub suite: Option<String>,
    pub frame_length: Option<FrameLength>,
}

/// `[decrypt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptSection {
    pub commitment_policy: Option<String>,
    pub source_format: Option<String>,
    pub max_encrypted_data_keys: Option<MaxDataKeys>,
    pub max_header_size: Option<HeaderSize>,
    pub max_frame_length: Option<FrameLength>,
    #[serde(default)]
    pub reproduced_context: BTreeMap<String, String>,
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    pub aead: Option<String>,
    pub concurrency: Option<Concurrency>,
    pub report: Option<PathBuf>,
    pub completion_report: Option<PathBuf>,
    #[serde(default)]
    pub fail_fast: bool,
    pub log_format: Option<super::args::LogFormat>,
    pub metrics_file: Option<PathBuf>,
}

/// `[aws]`: overrides for the AWS SDK's own configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub kms_endpoint: Option<String>,
    /// KMS requests per second.
    pub kms_rate: Option<KmsRate>,
    /// Longest wait between retries, seconds.
    pub kms_retry_max_delay: Option<Delay>,
    /// Total waiting before giving up, seconds.
    pub kms_retry_total: Option<Delay>,
    #[serde(default)]
    pub grant_tokens: Vec<String>,
}

/// `[cache]`: data-key pool limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    pub max_age_seconds: Option<Age>,
    pub max_messages: Option<CacheMessages>,
    pub max_bytes: Option<CacheBytes>,
}

/// `[serve]`: `sealpipe serve`, as the flags of the same names. Message settings come
/// from `[encrypt]` and `[decrypt]`, pools from `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub listen: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub token_files: Vec<PathBuf>,
    #[serde(default)]
    pub token_secrets: Vec<String>,
    #[serde(default)]
    pub token_parameters: Vec<String>,
    pub token_reload: Option<Seconds>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub insecure_listen: bool,
    pub max_body: Option<BodySize>,
    pub max_in_memory: Option<HeldSize>,
    pub spill_dir: Option<PathBuf>,
    #[serde(default)]
    pub no_spill: bool,
    pub request_timeout: Option<Seconds>,
    pub header_timeout: Option<Seconds>,
    pub body_timeout: Option<Seconds>,
    pub max_concurrent: Option<ServeConcurrency>,
    pub token_rate: Option<TokenRate>,
}

/// `[s3]`: transfer settings, as the flags of the same names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub endpoint: Option<String>,
    pub path_style: Option<bool>,
    pub part_size: Option<PartSize>,
    pub max_in_flight: Option<InFlight>,
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
}

impl Config {
    /// Loads `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let shown = sealpipe::escape::path(path);
        let mut bytes = Vec::new();
        super::files::read_small_file(path, super::files::MAX_CONFIG_BYTES, &mut bytes)
            .context("cannot read the config file")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("config file {shown} is not UTF-8"))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("invalid config file {shown}"))?;
        config.base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(""))
            .to_path_buf();
        Ok(config)
    }

    /// `path` resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }
}
