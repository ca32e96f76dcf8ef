//! Command-line arguments: typed flag values, before any resolution.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Bulk envelope encryption of files (and soon S3 objects) in the AWS Encryption SDK
/// message format.
///
/// Outputs are ESDK v2 messages (key-committing suite 0x0478 by default) that the
/// official AWS Encryption SDKs and aws-encryption-cli decrypt; sealpipe decrypts what
/// they write.
#[derive(Debug, Parser)]
#[command(name = "sealpipe", version, max_term_width = 100)]
#[command(after_help = "\
Examples:
  sealpipe run                                    # the job in ./config.toml (local demo)
  sealpipe encrypt photos/ sealed/ --key raw-aes:backup:k1:./k1.key --context team=infra
  sealpipe decrypt sealed/ restored/ --key raw-aes:backup:k1:./k1.key
  sealpipe inspect sealed/cat.jpg                 # the header as JSON
  sealpipe bench                                  # seal throughput vs the AES-GCM ceiling

Exit codes: 0 all objects succeeded; 1 some objects failed (the rest completed);
2 usage or configuration error; 130 interrupted (SIGINT/SIGTERM: objects in flight are
abandoned and their partial outputs removed).")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Read defaults from this TOML file (flags still win).
    #[arg(long, global = true, env = "SEALPIPE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print nothing but errors; no progress.
    #[arg(long, short, global = true, env = "SEALPIPE_QUIET")]
    pub quiet: bool,
    /// AES-GCM implementation: ring (fast) or rustcrypto (portable, pure Rust).
    #[arg(long, global = true, env = "SEALPIPE_AEAD", value_name = "BACKEND")]
    pub aead: Option<String>,
    /// Objects processed at once [default: 8].
    #[arg(long, global = true, env = "SEALPIPE_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Write a JSON report of the job to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// AWS and KMS settings. Credentials come from the standard chain (environment,
/// profile, SSO, instance or container role); AWS_ENDPOINT_URL and
/// AWS_ENDPOINT_URL_KMS are honoured.
#[derive(Debug, Args)]
pub struct AwsArgs {
    /// Region for KMS keys given by ID or alias (ARNs carry their own).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config.
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// KMS endpoint URL (a local test server, a VPC endpoint).
    #[arg(long, global = true, value_name = "URL")]
    pub kms_endpoint: Option<String>,
    /// At most this many KMS requests per second from this process (share a quota
    /// between N machines by giving each 1/N).
    #[arg(
        long,
        global = true,
        env = "SEALPIPE_KMS_RATE",
        value_name = "PER_SECOND"
    )]
    pub kms_rate: Option<f64>,
    /// Longest wait between two retries of a throttled or failed KMS call, in seconds
    /// [default: 10]. Waits grow exponentially with full jitter up to this.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub kms_retry_max_delay: Option<f64>,
    /// Give up on a KMS call after waiting this long in total, in seconds [default: 60].
    #[arg(long, global = true, value_name = "SECONDS")]
    pub kms_retry_total: Option<f64>,
    /// Seconds one data key serves new messages [default: 300]; on decrypt, how long an
    /// unwrapped data key stays cached.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub cache_max_age: Option<f64>,
    /// Messages one data key may encrypt [default: 1048576].
    #[arg(long, global = true, value_name = "N")]
    pub cache_max_messages: Option<u64>,
    /// Plaintext bytes one data key may encrypt [default: 1099511627776].
    #[arg(long, global = true, value_name = "BYTES")]
    pub cache_max_bytes: Option<u64>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encrypt a file or a directory tree into ESDK messages.
    Encrypt(EncryptArgs),
    /// Decrypt ESDK messages (from sealpipe or any official AWS Encryption SDK).
    Decrypt(DecryptArgs),
    /// Print a message's header as JSON: suite, message ID, context, data keys.
    Inspect(InspectArgs),
    /// Run the job described by the config file (./config.toml by default).
    Run(RunArgs),
    /// Measure seal/open throughput in memory against the AES-GCM ceiling.
    Bench(BenchArgs),
}

/// `encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// A file, or a directory whose tree is encrypted.
    pub src: PathBuf,
    /// Output file, or the directory that mirrors SRC's tree.
    pub dst: PathBuf,
    /// Wrapping key, repeatable: the first generates the data key, each one wraps it.
    /// AWS KMS: a key ARN, alias/NAME, an alias ARN, or kms:KEY_ID. Local keys:
    /// raw-aes:NAMESPACE:NAME:PATH (PATH holds 16, 24 or 32 raw bytes).
    #[arg(long = "key", short = 'k', value_name = "KEYREF")]
    pub keys: Vec<String>,
    /// Encryption context pair bound to every message, repeatable. Readers can check it;
    /// it is stored in clear in each header.
    #[arg(long = "context", short = 'c', value_name = "K=V")]
    pub context: Vec<String>,
    /// Algorithm suite: 0478 (AES-256-GCM, HKDF-SHA512, key commitment) or 0578 (the
    /// same plus an ECDSA P-384 signature).
    #[arg(long, value_name = "ID")]
    pub suite: Option<String>,
    /// Plaintext bytes per frame, 1 to 2147483647 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub frame_len: Option<u32>,
    /// List what would be encrypted and stop: no writes, no key use.
    #[arg(long)]
    pub dry_run: bool,
}

/// `decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// A message file, or a directory of them.
    pub src: PathBuf,
    /// Output file, or the directory that mirrors SRC's tree.
    pub dst: PathBuf,
    /// Key to try, repeatable (see `encrypt --key`); any one that unwraps works. KMS
    /// keys must be given as key ARNs here (a multi-Region key ARN also matches its
    /// replicas).
    #[arg(long = "key", short = 'k', value_name = "KEYREF")]
    pub keys: Vec<String>,
    /// Also try every KMS-wrapped data key with whatever KMS key wrapped it (the
    /// credentials must be allowed to use it).
    #[arg(long)]
    pub discovery: bool,
    /// With --discovery: only keys of this account, repeatable.
    #[arg(long, value_name = "ACCOUNT_ID", requires = "discovery")]
    pub discovery_account: Vec<String>,
    /// With --discovery-account: the partition of those accounts.
    #[arg(
        long,
        value_name = "PARTITION",
        default_value = "aws",
        requires = "discovery_account"
    )]
    pub discovery_partition: String,
    /// Context pair the messages must carry, repeatable. Pairs a writer authenticated
    /// without storing them (required encryption context) must be given here.
    #[arg(long = "reproduced-context", value_name = "K=V")]
    pub reproduced_context: Vec<String>,
    /// require-encrypt-require-decrypt (default: only key-committing messages) or
    /// require-encrypt-allow-decrypt (also legacy v1 messages).
    #[arg(long, value_name = "POLICY")]
    pub commitment_policy: Option<String>,
    /// Refuse messages with more encrypted data keys than this [default: 16].
    #[arg(long, value_name = "N")]
    pub max_encrypted_data_keys: Option<u16>,
    /// Refuse headers longer than this many bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_header_size: Option<usize>,
    /// Refuse frame lengths (and non-framed bodies) above this [default: 2147483647].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_len: Option<u32>,
    /// List what would be decrypted and stop.
    #[arg(long)]
    pub dry_run: bool,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A message file.
    pub file: PathBuf,
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Show what the job would do, without writing or using keys.
    #[arg(long)]
    pub dry_run: bool,
}

/// `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Message size in bytes [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,
    /// Frame length [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub frame_len: Option<u32>,
    /// Threads to seal with [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Seconds to measure each figure [default: 2].
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<f64>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}
