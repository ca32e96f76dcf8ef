//! Command-line arguments: typed flag values, before any resolution (`settings.rs`
//! adds the environment and the config file).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::values::{
    Age, BenchFrameLength, BenchObjects, BenchSeconds, BenchThreads, BodySize, CacheBytes,
    CacheMessages, Concurrency, CopyThreshold, Delay, FrameLength, HeaderSize, HeldSize, InFlight,
    KmsRate, MaxDataKeys, PartSize, Seconds, ServeConcurrency, TokenRate,
};

/// Bulk envelope encryption of S3 objects and local files in the AWS Encryption SDK
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
  sealpipe encrypt s3://raw/ s3://sealed/ --key alias/backup   # S3 to S3, resumable
  sealpipe verify s3://sealed/ --key arn:aws:kms:...:key/...     # read and check only
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
    /// Read defaults from this TOML file (flags still win) [env: SEALPIPE_CONFIG].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print nothing but errors; no progress [env: SEALPIPE_QUIET].
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// AES-GCM implementation: ring (fast) or rustcrypto (portable, pure Rust) [env:
    /// SEALPIPE_AEAD].
    #[arg(long, global = true, value_name = "BACKEND")]
    pub aead: Option<String>,
    /// Objects processed at once, 1 to 65536 [default: 8 for local jobs, 64 with S3]
    /// [env: SEALPIPE_CONCURRENCY]. Jobs between local files run at most 128 at once
    /// (one thread each); more helps only S3, where objects mostly wait on the network.
    #[arg(long, global = true, value_name = "N")]
    pub concurrency: Option<Concurrency>,
    /// Write a JSON report of the job to FILE. Checked before the job starts; written
    /// whole or not at all (a temporary file beside FILE, then renamed).
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// How log lines look on stderr: text, or json (one object per line for each
    /// object's outcome, each retried request, the job's start and its summary; no
    /// progress bar) [default: text] [env: SEALPIPE_LOG_FORMAT].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Write the job's metrics to FILE at the end, in the Prometheus text format (for
    /// node_exporter's textfile collector or a Pushgateway) [env: SEALPIPE_METRICS_FILE].
    #[arg(long, global = true, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("expected text or json, not {other:?}")),
        }
    }
}

/// AWS and KMS settings. Credentials come from the standard chain (environment,
/// profile, SSO, instance or container role); AWS_ENDPOINT_URL and
/// AWS_ENDPOINT_URL_KMS are honoured.
#[derive(Debug, Args)]
#[command(next_help_heading = "AWS and KMS")]
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
    /// At most this many KMS requests per second from this process, 0.01 to 1000000
    /// (share a quota between N machines by giving each 1/N) [env: SEALPIPE_KMS_RATE].
    #[arg(long, global = true, value_name = "PER_SECOND")]
    pub kms_rate: Option<KmsRate>,
    /// Longest wait between two retries of a throttled or failed KMS call, 0 to 86400
    /// seconds [default: 10]. Waits grow exponentially with full jitter up to this.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub kms_retry_max_delay: Option<Delay>,
    /// Give up on a KMS call after waiting this long in total, 0 to 86400 seconds
    /// [default: 60].
    #[arg(long, global = true, value_name = "SECONDS")]
    pub kms_retry_total: Option<Delay>,
    /// Seconds one data key serves new messages, more than 0 and at most 86400
    /// [default: 300]; on decrypt, how long an unwrapped data key stays cached.
    #[arg(long, global = true, value_name = "SECONDS")]
    pub cache_max_age: Option<Age>,
    /// Messages one data key may encrypt, 1 to 4294967296 [default: 1048576].
    #[arg(long, global = true, value_name = "N")]
    pub cache_max_messages: Option<CacheMessages>,
    /// Plaintext bytes one data key may encrypt, at least 1 [default: 1099511627776].
    #[arg(long, global = true, value_name = "BYTES")]
    pub cache_max_bytes: Option<CacheBytes>,
}

/// S3 transfer settings (config file section `[s3]`).
#[derive(Debug, Args)]
#[command(next_help_heading = "S3 transfers")]
pub struct S3Args {
    /// S3 endpoint URL (a local test server, an S3-compatible store, a VPC endpoint).
    /// AWS_ENDPOINT_URL_S3 also works.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Address buckets by path (endpoint/bucket/key); on by default with a custom
    /// endpoint.
    #[arg(long, global = true, value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// Bytes per ranged GET and per multipart part, 5MiB to 5GiB [default: 8MiB].
    /// Accepts suffixes: KiB, MiB, GiB, TiB (or K, M, G, T).
    #[arg(long, global = true, value_name = "SIZE")]
    pub part_size: Option<PartSize>,
    /// Bytes in flight at once across all objects (downloaded, not yet sealed; sealed,
    /// not yet uploaded), 10MiB to 1TiB and at least two parts [default: 256MiB]. Peak memory is this plus the runtime's,
    /// HTTP and allocator overhead (measured: 60 to 180 MiB, more with larger parts).
    #[arg(long, global = true, value_name = "SIZE")]
    pub max_in_flight: Option<InFlight>,
    /// Storage class of written objects (STANDARD, INTELLIGENT_TIERING, GLACIER_IR, ...).
    #[arg(long, global = true, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Also have S3 encrypt written objects at rest: aws:kms (with an S3 Bucket Key) or
    /// AES256. sealpipe's own encryption happens either way.
    #[arg(long, global = true, value_name = "ALGORITHM")]
    pub sse: Option<String>,
    /// KMS key for --sse aws:kms (else the bucket's default key).
    #[arg(long, global = true, value_name = "KEY_ID")]
    pub sse_kms_key_id: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encrypt files or S3 objects into ESDK messages.
    #[command(after_help = "\
Examples:
  sealpipe encrypt photos/ sealed/ --key raw-aes:backup:k1:./k1.key
  sealpipe encrypt s3://raw/2024/ s3://sealed/2024/ --key alias/backup --include '*.parquet'
  sealpipe encrypt s3://data/ --in-place --key arn:aws:kms:us-east-1:111122223333:key/...
  sealpipe encrypt --manifest inventory.csv s3://sealed/ --key alias/backup

A re-run skips every object whose S3 destination already carries sealpipe's marker for
the same source ETag, so an interrupted job is finished by running it again.")]
    Encrypt(EncryptArgs),
    /// Decrypt ESDK messages (from sealpipe or any official AWS Encryption SDK).
    Decrypt(DecryptArgs),
    /// Decrypt and encrypt again with a fresh data key under new wrapping keys (also
    /// upgrades legacy and signed messages to the key-committing suite).
    Reencrypt(ReencryptArgs),
    /// Give messages new encrypted data keys, bodies copied unchanged: move data between
    /// KMS keys (regions, accounts) with one Decrypt and one Encrypt per data key.
    #[command(after_help = "\
Each message's data key is recovered once with an old key (--old-key, or --discovery),
wrapped under every new --key in that key's region, and written into a new header with
a new header tag; the body is copied as it is. Messages that share a data key, as
sealpipe's pooled ones do, share those KMS calls. S3 objects larger than
--copy-threshold are never downloaded: S3 copies their body (UploadPartCopy) after a
first part of the new header and 5 MiB of body. Local bodies are copied by the kernel.

v2 messages (suite 0478, what sealpipe writes) fix their header tag's AES-GCM nonce, so
a rewrapped header reuses the original's key and nonce: whoever holds both headers of a
message can forge its frames. They fail with HeaderNonceReuse unless
--allow-header-nonce-reuse accepts that (README: \"The nonce of a v2 header\"); v1
headers get a fresh nonce.

Examples:
  # Plan: objects, bytes and distinct data keys (= KMS Decrypt calls); no key is used
  sealpipe rewrap s3://data/ s3://data-eu/ --dry-run --allow-header-nonce-reuse \\
      --old-key arn:aws:kms:us-east-1:111122223333:key/OLD \\
      --key arn:aws:kms:eu-west-1:111122223333:key/NEW
  # Add a second region in place (writes conditional on the ETag read), then retire the first
  sealpipe rewrap s3://data/ --in-place --allow-header-nonce-reuse \\
      --old-key arn:...:key/OLD --key arn:...:key/NEW --keep-existing
  sealpipe rewrap s3://data/ --in-place --allow-header-nonce-reuse \\
      --old-key arn:...:key/NEW --drop-key arn:...:key/OLD

Signed messages (suite 0578 and the legacy signed suites) sign their header in the
footer, so only their writer could rewrap them: they fail with SignedMessage unless
--reencrypt-signed re-encrypts them under a fresh data key (suite 0478). The header is
authenticated before anything is written; the body is copied, not read, so run
`sealpipe verify` with the new key afterwards to check every frame.")]
    Rewrap(RewrapArgs),
    /// Decrypt and discard: check that every message is authentic and readable.
    Verify(DecryptArgs),
    /// Count objects and bytes by what protects them, before a migration: server-side
    /// encryption (none, SSE-S3, SSE-KMS by key, DSSE-KMS, SSE-C) and client-side (ESDK
    /// suite and wrapping keys, S3 Encryption Client version and wrap, none).
    #[command(after_help = "\
Each object costs one GET of its first 4 KiB (which brings its metadata and server-side
encryption too; a longer ESDK header is read on); nothing is decrypted and no key is
used. The table goes to stdout (--json: the report's inventory as JSON), the summary to
stderr, and --report FILE has the same inventory.

Examples:
  sealpipe scan s3://data/                         # the whole bucket
  sealpipe scan s3://data/logs/2026/ --json        # a prefix, for a script
  sealpipe scan --manifest s3://inv/manifest.csv   # the objects an inventory lists
  sealpipe scan ./archive                          # local files (ESDK or not)

A migration: scan, then `sealpipe reencrypt SRC DST --dry-run ...`, then the run, then
scan DST to see every object where it should be.")]
    Scan(ScanArgs),
    /// Print a message's header as JSON: suite, message ID, context, data keys.
    Inspect(InspectArgs),
    /// Work with job reports: `sealpipe report merge` combines a split job's.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Run the job described by the config file (./config.toml by default).
    Run(RunArgs),
    /// Measure throughput: messages in memory against the AES-GCM ceiling, or a
    /// workload of objects (a directory, memory, S3) in every mode against the plain
    /// copy of the same objects.
    #[command(after_help = "\
Examples:
  sealpipe bench                                   # 64 MiB messages in memory
  sealpipe bench --size 4KiB --threads 1           # small messages, one core
  sealpipe bench --workload medium                 # 1,000 x 1 MiB files in $TMPDIR
  sealpipe bench --workload small --target memory  # 10,000 x 4 KiB files on /dev/shm
  sealpipe bench --objects 500 --size 4KiB..64MiB --target /mnt/nvme/scratch
  sealpipe bench --workload medium --target s3://scratch-bucket/bench \\
      --s3-endpoint http://127.0.0.1:8014 --modes decrypt,rewrap --json

A workload writes its tree of random objects (not timed), measures the limits (the
AES-GCM ceiling of all cores, memory copy bandwidth, and the plain copy of the same
objects: cp -r for a directory, GET+PUT through the same client and concurrency for
S3), then runs encrypt and each mode through the real pipeline. Each mode reports MB/s,
objects/s, p50/p99 latency per object, CPU seconds (user/sys) and per GB, data keys,
KMS calls, pool hit rate, S3 requests, and each ratio to its limit. Everything the run
made is removed, also when it fails. Keys are Raw AES keys made for the run unless
--key names others (KMS keys: their calls are counted per mode).")]
    Bench(BenchArgs),
    /// Serve encryption over HTTP: POST /v1/encrypt and /v1/decrypt (ESDK messages of
    /// any size, data keys pooled), /v1/kms/encrypt and /v1/kms/decrypt (one KMS call
    /// per secret of at most 4 KiB), GET /metrics and /healthz.
    #[command(after_help = "\
Examples:
  sealpipe serve --listen 127.0.0.1:8080 --key alias/app --token-file tokens.txt
  curl -sS --data-binary @report.pdf -H \"Authorization: Bearer $TOKEN\" \\
      'http://127.0.0.1:8080/v1/encrypt?context=tenant=acme' > report.pdf.sealed
  curl -sS --data-binary @report.pdf.sealed -H \"Authorization: Bearer $TOKEN\" \\
      http://127.0.0.1:8080/v1/decrypt > report.pdf

Tokens: one per line in a token file (TOKEN, or sha256:HEX of it), optionally followed
by the operations it may call (encrypt,decrypt,kms-encrypt,kms-decrypt,metrics; * for
all) and keys=REF,... (the --key references it may use). They are also read from
SEALPIPE_SERVE_TOKENS, a Secrets Manager secret (--token-secret) or an SSM SecureString
(--token-parameter), and reloaded every --token-reload and on SIGHUP. Every route but
/healthz needs `Authorization: Bearer TOKEN`.

Plain HTTP is served only on loopback addresses unless --insecure-listen: give
--tls-cert and --tls-key, or put the server behind a TLS proxy. Refusals are JSON
{\"error\": {\"code\", \"message\"}} with 400, 401, 403, 408, 413, 429 or 503; a decrypt
answers with plaintext only once the whole message authenticated.")]
    Serve(ServeArgs),
}

/// `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the address is printed)
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// A key requests may use, repeatable; the first is the default, others are chosen
    /// with ?key=KEYREF (as given here).
    #[arg(long = "key", short = 'k', value_name = "KEYREF")]
    pub keys: Vec<String>,
    /// A token file, repeatable.
    #[arg(long = "token-file", value_name = "FILE", help_heading = "Tokens")]
    pub token_files: Vec<PathBuf>,
    /// An AWS Secrets Manager secret whose SecretString is a token file, repeatable.
    #[arg(
        long = "token-secret",
        value_name = "SECRET_ID",
        help_heading = "Tokens"
    )]
    pub token_secrets: Vec<String>,
    /// An SSM Parameter Store parameter (SecureString) holding a token file, repeatable.
    #[arg(long = "token-parameter", value_name = "NAME", help_heading = "Tokens")]
    pub token_parameters: Vec<String>,
    /// How often every token source is read again, e.g. 60s [default: 60s]; SIGHUP
    /// reloads at once. A failed reload keeps the tokens in force.
    #[arg(long, value_name = "DURATION", help_heading = "Tokens")]
    pub token_reload: Option<Seconds>,
    /// Serve HTTPS with this PEM certificate chain.
    #[arg(long, value_name = "PEM", requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on an address other than loopback (behind a TLS proxy).
    #[arg(long, help_heading = "TLS")]
    pub insecure_listen: bool,
    /// The largest /v1/encrypt or /v1/decrypt body [default: 1GiB].
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub max_body: Option<BodySize>,
    /// Decrypted plaintext held in memory before it spills to an unnamed temporary
    /// file [default: 16MiB].
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub max_in_memory: Option<HeldSize>,
    /// Where plaintext spills [default: the system's temporary directory].
    #[arg(long, value_name = "DIR", help_heading = "Limits")]
    pub spill_dir: Option<PathBuf>,
    /// Refuse (413) a decrypt whose plaintext exceeds --max-in-memory instead.
    #[arg(long, conflicts_with = "spill_dir", help_heading = "Limits")]
    pub no_spill: bool,
    /// The longest a request may take to its response's head [default: 300s].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub request_timeout: Option<Seconds>,
    /// The longest a client may take to send a request's head [default: 10s].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub header_timeout: Option<Seconds>,
    /// The longest silence while a request body arrives [default: 30s].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub body_timeout: Option<Seconds>,
    /// Requests answered at once; more get 503 [default: 256].
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_concurrent: Option<ServeConcurrency>,
    /// Requests per second per token (bursts of one second's worth); more get 429
    /// [default: unlimited].
    #[arg(long, value_name = "RATE", help_heading = "Limits")]
    pub token_rate: Option<TokenRate>,
    /// Answer as an AWS Lambda function behind API Gateway or a function URL, instead
    /// of listening (needs the Lambda environment).
    #[arg(long, conflicts_with_all = ["listen", "tls_cert", "insecure_listen"])]
    pub lambda: bool,
    /// Algorithm suite of the messages written: 0478 or 0578 [default: 0478].
    #[arg(long, value_name = "ID", help_heading = "Keys and messages")]
    pub suite: Option<String>,
    /// Plaintext bytes per frame, 1 to 2147483647 [default: 65536].
    #[arg(long, value_name = "BYTES", help_heading = "Keys and messages")]
    pub frame_len: Option<FrameLength>,
    /// require-encrypt-require-decrypt (default) or require-encrypt-allow-decrypt.
    #[arg(long, value_name = "POLICY", help_heading = "Keys and messages")]
    pub commitment_policy: Option<String>,
    /// Refuse messages with more encrypted data keys than this [default: 16].
    #[arg(long, value_name = "N", help_heading = "Keys and messages")]
    pub max_encrypted_data_keys: Option<MaxDataKeys>,
}

/// Where objects come from and where outputs go; shared by the job commands.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Objects")]
pub struct TransferArgs {
    /// SRC then DST: local paths or s3://BUCKET[/PREFIX]. A directory or prefix is
    /// processed whole, its tree mirrored under DST. With --manifest give only DST; with
    /// --in-place only SRC; verify takes only SRC.
    #[arg(value_names = ["SRC", "DST"], num_args = 0..=2, help_heading = "Arguments")]
    pub paths: Vec<String>,
    /// Process exactly the objects named in this CSV (bucket,key[,version_id], keys
    /// URL-encoded: the S3 Batch Operations and S3 Inventory format); a local file or
    /// s3://BUCKET/KEY.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<String>,
    /// Replace each S3 object with its output. Writes are conditional on the ETag read,
    /// so an object changed meanwhile is left alone and reported as a conflict; objects
    /// already encrypted are skipped.
    #[arg(long)]
    pub in_place: bool,
    /// Serve S3 Batch Operations instead of reading a source: run as an AWS Lambda
    /// function (from the Lambda Runtime API in AWS_LAMBDA_RUNTIME_API) that processes
    /// each task's object as a manifest line naming it, answering Succeeded,
    /// TemporaryFailure or PermanentFailure per task. Give only DST (nothing with
    /// --in-place or for verify). Keys stay loaded between invocations (README: "S3
    /// Batch Operations").
    #[arg(long, conflicts_with_all = ["manifest", "shard", "shards"])]
    pub batch_operations: bool,
    /// Only objects whose name below SRC matches this glob, repeatable (`*` also
    /// matches `/`).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip objects whose name below SRC matches this glob, repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Show what would be done (objects and bytes, what a re-run would skip) and stop:
    /// no writes, no KMS calls.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop starting new objects after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Process only share INDEX of COUNT (from 0), so COUNT workers running the same
    /// job cover every object exactly once: an object's share is a SHA-256 of its bucket
    /// and key (README: "Splitting a job") [env: SEALPIPE_SHARD]. Read from
    /// JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs, with --shards) or
    /// AWS_BATCH_JOB_ARRAY_INDEX and _SIZE (AWS Batch array jobs) when not given.
    #[arg(long, value_name = "INDEX/COUNT")]
    pub shard: Option<sealpipe::pipeline::Shard>,
    /// How many shards the job is split into, for a shard index taken from the
    /// environment (JOB_COMPLETION_INDEX) [env: SEALPIPE_SHARDS].
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u64>,
    /// How shards divide the objects: hash (of each name; any source) or prefix (S3
    /// listings: ranges of the prefixes one level below SRC, so each worker lists only
    /// its part) [default: hash] [env: SEALPIPE_SHARD_BY].
    #[arg(long, value_name = "HOW")]
    pub shard_by: Option<sealpipe::pipeline::ShardBy>,
    /// Write a CSV line per object, as S3 Batch Operations do:
    /// bucket,key,version_id,status,error_code,message.
    #[arg(long, value_name = "FILE")]
    pub completion_report: Option<PathBuf>,
}

/// Options of the messages written (encrypt, reencrypt).
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Keys and messages")]
pub struct WriteArgs {
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
    pub frame_len: Option<FrameLength>,
}

/// How messages are read (decrypt, reencrypt, verify).
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Keys and messages")]
pub struct ReadArgs {
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
    /// require-encrypt-allow-decrypt (also legacy v1 messages and S3 Encryption Client
    /// v2 objects, whose AES-GCM does not commit to its key).
    #[arg(long, value_name = "POLICY")]
    pub commitment_policy: Option<String>,
    /// What the sources are: auto (default: ESDK messages, and S3 Encryption Client
    /// objects recognised by their metadata or instruction file), esdk, or s3ec.
    #[arg(long, value_name = "FORMAT")]
    pub source_format: Option<String>,
    /// Refuse messages with more encrypted data keys than this, 1 to 65535 [default: 16].
    #[arg(long, value_name = "N")]
    pub max_encrypted_data_keys: Option<MaxDataKeys>,
    /// Refuse headers longer than this many bytes, 1 to 1073741824 [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_header_size: Option<HeaderSize>,
    /// Refuse frame lengths (and non-framed bodies) above this, 1 to 2147483647
    /// [default: 2147483647].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_len: Option<FrameLength>,
}

/// `encrypt`.
#[derive(Debug, Args, Default)]
pub struct EncryptArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Wrapping key, repeatable: the first generates the data key, each one wraps it.
    /// AWS KMS: a key ARN, alias/NAME, an alias ARN, or kms:KEY_ID. Local keys:
    /// raw-aes:NAMESPACE:NAME:PATH (PATH holds 16, 24 or 32 raw bytes).
    #[arg(
        long = "key",
        short = 'k',
        value_name = "KEYREF",
        help_heading = "Keys and messages"
    )]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub write: WriteArgs,
}

/// `scan`.
#[derive(Debug, Args, Default)]
pub struct ScanArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Print the inventory as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `decrypt` and `verify`.
#[derive(Debug, Args, Default)]
pub struct DecryptArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Key to try, repeatable (see `encrypt --key`); any one that unwraps works. KMS
    /// keys must be given as key ARNs here (a multi-Region key ARN also matches its
    /// replicas).
    #[arg(
        long = "key",
        short = 'k',
        value_name = "KEYREF",
        help_heading = "Keys and messages"
    )]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// The keys of a job that reads messages with some keys and writes them with others
/// (reencrypt, rewrap).
#[derive(Debug, Args, Default)]
pub struct KeyChange {
    /// New wrapping key, repeatable (see `encrypt --key`); each one wraps every data key.
    #[arg(
        long = "key",
        short = 'k',
        value_name = "KEYREF",
        help_heading = "Keys and messages"
    )]
    pub keys: Vec<String>,
    /// Key that unwraps the existing messages, repeatable (see `decrypt --key`).
    #[arg(
        long = "old-key",
        value_name = "KEYREF",
        help_heading = "Keys and messages"
    )]
    pub old_keys: Vec<String>,
}

/// `reencrypt`.
#[derive(Debug, Args, Default)]
pub struct ReencryptArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub key_change: KeyChange,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `rewrap`.
#[derive(Debug, Args, Default)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub key_change: KeyChange,
    /// Keep the existing encrypted data keys beside the new ones (add a region instead
    /// of moving to it).
    #[arg(long, help_heading = "Keys and messages")]
    pub keep_existing: bool,
    /// Remove the encrypted data key of this key (a KMS key ARN, or NAMESPACE/NAME for a
    /// raw AES key), keeping the others; repeatable. A message is never left without one.
    #[arg(long, value_name = "KEY", help_heading = "Keys and messages")]
    pub drop_key: Vec<String>,
    /// Re-encrypt signed messages under a fresh data key (suite 0478, their context
    /// kept) instead of failing them.
    #[arg(long, help_heading = "Keys and messages")]
    pub reencrypt_signed: bool,
    /// Also rewrap v2 messages (suite 0478, what sealpipe writes), whose header tag has a
    /// fixed nonce: the new tag reuses the original's key and nonce, so whoever holds
    /// both the old and the new header of a message can forge its frames. Without this,
    /// v2 messages fail with HeaderNonceReuse (re-encrypt them instead). See the README,
    /// "The nonce of a v2 header".
    #[arg(long, help_heading = "Keys and messages")]
    pub allow_header_nonce_reuse: bool,
    /// S3 objects larger than this have S3 copy their body instead of passing through
    /// sealpipe, 5MiB to 5TiB [default: 16MiB].
    #[arg(long, value_name = "SIZE", help_heading = "S3 transfers")]
    pub copy_threshold: Option<CopyThreshold>,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A message file.
    pub file: PathBuf,
}

/// `sealpipe report ...`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Combine the JSON reports (--report) of a split job's workers, and their
    /// completion reports (files ending in .csv), into one summary. Exit 0 when the
    /// job is complete; 1 when a shard is missing, failed objects or was interrupted,
    /// or an object is in two workers' completion reports; 2 when the files are not
    /// the reports of one job.
    #[command(after_help = "\
Examples:
  sealpipe report merge reports/shard-*.json
  sealpipe report merge reports/*.json reports/*.csv --json -o fleet.json")]
    Merge(MergeArgs),
}

/// `report merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Workers' JSON reports, and completion reports ending in .csv.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the merged report as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// Also write the merged report (JSON) to this file.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
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
    /// In memory: the message size in bytes, 1 to 1073741824 [default: 67108864];
    /// memory used is about four times the larger of this and 64MiB. With --objects:
    /// the objects' sizes, SIZE or MIN..MAX (log-uniform), e.g. 4KiB..1GiB.
    #[arg(long, alias = "object-size", value_name = "SIZE[..MAX]")]
    pub size: Option<String>,
    /// Frame length, 1 to 67108864 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub frame_len: Option<BenchFrameLength>,
    /// Threads to seal with, 0 (all cores) to 1024 [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<BenchThreads>,
    /// Seconds to measure each figure, 0 to 3600 [default: 2].
    #[arg(long, value_name = "SECONDS")]
    pub seconds: Option<BenchSeconds>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Instead of messages in memory, a tree of objects through the pipeline in each
    /// mode, beside the plain copy of the same objects: small (10,000 x 4 KiB), medium
    /// (1,000 x 1 MiB), large (2 x 1 GiB) or mixed (2,000, log-normal around 64 KiB).
    #[arg(long, value_name = "MIX", help_heading = "Workloads")]
    pub workload: Option<String>,
    /// A workload of N objects (sizes from --size) instead of a named one.
    #[arg(long, value_name = "N", requires = "size", help_heading = "Workloads")]
    pub objects: Option<BenchObjects>,
    /// Where the workload runs: a directory (its files are made below it, and
    /// removed), `memory` (the tmpfs at /dev/shm), or s3://BUCKET[/PREFIX] (objects
    /// below the prefix, removed; --s3-endpoint and the other S3 flags apply)
    /// [default: the system's temporary directory].
    #[arg(
        long,
        alias = "dir",
        value_name = "DIR|memory|s3://BUCKET/PREFIX",
        help_heading = "Workloads"
    )]
    pub target: Option<String>,
    /// Modes to run after encrypt, comma-separated: decrypt, reencrypt, rewrap, verify
    /// [default: all].
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "Workloads"
    )]
    pub modes: Vec<String>,
    /// Wrapping key of the workload, repeatable, as `encrypt --key` takes it (a KMS
    /// key, to count its calls) [default: a Raw AES key made for the run].
    #[arg(
        long = "key",
        short = 'k',
        value_name = "KEYREF",
        help_heading = "Workloads"
    )]
    pub keys: Vec<String>,
    /// Key that reencrypt and rewrap move the messages to, repeatable [default: --key,
    /// or a second Raw AES key made for the run].
    #[arg(long = "new-key", value_name = "KEYREF", help_heading = "Workloads")]
    pub new_keys: Vec<String>,
}
