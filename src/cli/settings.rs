//! The low stage: every setting resolved to a plain value, once, from flags, the
//! environment and the config file, before anything is built.
//!
//! One rule, [`Layers::pick`], decides every layered setting: a flag beats its
//! environment variable, which beats the config file, which beats the built-in default.
//! Each value remembers where it came from ([`Origin`]). Numbers are already in range
//! (the types of `values.rs`, whichever layer they came from); an environment value is
//! parsed here, and its errors name the variable. Nothing here builds a client, opens a
//! key file or compiles a glob: `build.rs` does that from these values alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use sealpipe::bench::{BenchConfig, Mix};
use sealpipe::crypto::AeadBackend;
use sealpipe::format::{AlgorithmSuite, DecodeLimits, EncryptionContext};
use sealpipe::keys::PoolLimits;
use sealpipe::pipeline::{Mode, Shard, ShardBy, Source, SourceFormat};
use sealpipe::retry::RetryPolicy;
use sealpipe::store::{Location, S3Settings};
use sealpipe::stream::{CommitmentPolicy, DEFAULT_FRAME_LENGTH};

use super::args::{
    Cli, Command, GlobalArgs, KeyChange, LogFormat, ReadArgs, RewrapArgs, ServeArgs, TransferArgs,
    WriteArgs,
};
use super::config::{Config, JobSection};
use super::values::{BenchSize, Concurrency, KmsRate};

/// Objects processed at once unless configured: local jobs are bound by disks and
/// cores, S3 jobs by request latency.
const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_CONCURRENCY_S3: usize = 64;
/// The in-flight byte budget unless configured.
const DEFAULT_MAX_IN_FLIGHT: u64 = 256 * 1024 * 1024;
/// `rewrap`: S3 objects larger than this have S3 copy their body. Below it a rewrite is
/// at most three parts, and reading them costs about what the copy requests would.
const DEFAULT_COPY_THRESHOLD: u64 = 16 * 1024 * 1024;

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    /// The environment variable of that name.
    Env(&'static str),
    Config,
    Default,
}

/// A resolved value and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Sourced<Option<T>> {
    /// The value, or `default` when no layer set it.
    fn or(self, default: T) -> Sourced<T> {
        Sourced {
            value: self.value.unwrap_or(default),
            origin: self.origin,
        }
    }

    /// Converts a value set by some layer (a text naming a backend, a policy...). A
    /// value from the environment is refused with its variable named; other layers keep
    /// the conversion's own message.
    fn parse<U>(
        self,
        flag: &str,
        default: U,
        convert: impl FnOnce(&T) -> anyhow::Result<U>,
    ) -> anyhow::Result<Sourced<U>> {
        let value = match &self.value {
            None => default,
            Some(v) => convert(v).map_err(|e| match self.origin {
                Origin::Env(name) => from_env(flag, name, e),
                _ => e,
            })?,
        };
        Ok(Sourced {
            value,
            origin: self.origin,
        })
    }

    /// The value converted, where some layer set one.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Sourced<Option<U>> {
        Sourced {
            value: self.value.map(f),
            origin: self.origin,
        }
    }
}

/// An environment value refused: `--concurrency (from SEALPIPE_CONCURRENCY): ...`.
fn from_env(flag: &str, var: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{flag} (from {var}): {why}")
}

/// A setting's environment variable, the flag it stands for, and how its text parses.
struct Var<T> {
    name: &'static str,
    flag: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Var<T> {
    const fn new(
        name: &'static str,
        flag: &'static str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Self {
        Self { name, flag, parse }
    }
}

const CONFIG: Var<PathBuf> = Var::new("SEALPIPE_CONFIG", "--config", non_empty_path);
const QUIET: Var<bool> = Var::new("SEALPIPE_QUIET", "--quiet", boolean);
const LOG_FORMAT: Var<LogFormat> = Var::new("SEALPIPE_LOG_FORMAT", "--log-format", from_str);
const METRICS_FILE: Var<PathBuf> =
    Var::new("SEALPIPE_METRICS_FILE", "--metrics-file", non_empty_path);
const AEAD: Var<String> = Var::new("SEALPIPE_AEAD", "--aead", text);
const CONCURRENCY: Var<Concurrency> = Var::new("SEALPIPE_CONCURRENCY", "--concurrency", from_str);
const KMS_RATE: Var<KmsRate> = Var::new("SEALPIPE_KMS_RATE", "--kms-rate", from_str);
const SHARD: Var<Shard> = Var::new("SEALPIPE_SHARD", "--shard", from_str);
const SHARDS: Var<u64> = Var::new("SEALPIPE_SHARDS", "--shards", count);
const SHARD_BY: Var<ShardBy> = Var::new("SEALPIPE_SHARD_BY", "--shard-by", from_str);
/// Kubernetes Indexed Jobs: the pod's index, from 0.
const K8S_INDEX: Var<u64> = Var::new("JOB_COMPLETION_INDEX", "--shard", count);
/// AWS Batch array jobs: the child's index, from 0, and the array's size.
const BATCH_INDEX: Var<u64> = Var::new("AWS_BATCH_JOB_ARRAY_INDEX", "--shard", count);
const BATCH_SIZE: Var<u64> = Var::new("AWS_BATCH_JOB_ARRAY_SIZE", "--shards", count);

fn count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected a whole number, not {s:?}"))
}

fn from_str<T: FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

fn text(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

fn boolean(s: &str) -> Result<bool, String> {
    s.parse()
        .map_err(|_| format!("expected true or false, not {s:?}"))
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("a value is required".into());
    }
    Ok(PathBuf::from(s))
}

/// Reads one environment variable; the process's own, or a test's.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Where every setting is looked up.
struct Layers<'a> {
    env: Env<'a>,
}

impl Layers<'_> {
    /// The precedence rule, for every setting: the flag, else the environment variable
    /// (read only when no flag is given, so a stale variable never fails a command that
    /// overrides it), else the config file; `None` from [`Origin::Default`] otherwise.
    fn pick<T>(
        &self,
        flag: Option<T>,
        var: Option<&Var<T>>,
        config: Option<T>,
    ) -> anyhow::Result<Sourced<Option<T>>> {
        let sourced = |value, origin| Sourced {
            value: Some(value),
            origin,
        };
        if let Some(v) = flag {
            return Ok(sourced(v, Origin::Flag));
        }
        if let Some(var) = var
            && let Some(raw) = (self.env)(var.name)
        {
            let raw = raw
                .into_string()
                .map_err(|_| from_env(var.flag, var.name, "not valid UTF-8"))?;
            let v = (var.parse)(&raw).map_err(|e| from_env(var.flag, var.name, e))?;
            return Ok(sourced(v, Origin::Env(var.name)));
        }
        Ok(match config {
            Some(v) => sourced(v, Origin::Config),
            None => Sourced {
                value: None,
                origin: Origin::Default,
            },
        })
    }

    /// A repeatable flag: its values if any were given, else the config file's list.
    fn pick_list<T: Clone>(&self, flags: &[T], config: &[T]) -> anyhow::Result<Sourced<Vec<T>>> {
        let some = |list: &[T]| (!list.is_empty()).then(|| list.to_vec());
        Ok(self.pick(some(flags), None, some(config))?.or(Vec::new()))
    }

    /// A switch: on if the flag is given, else as the environment or config file say.
    fn pick_switch(
        &self,
        flag: bool,
        var: Option<&Var<bool>>,
        config: bool,
    ) -> anyhow::Result<Sourced<bool>> {
        Ok(self
            .pick(flag.then_some(true), var, config.then_some(true))?
            .or(false))
    }
}

/// Everything the command line, environment and config file settle.
#[derive(Debug)]
pub struct Settings {
    pub quiet: Sourced<bool>,
    /// `--log-format json`: log lines as JSON objects.
    pub log_json: bool,
    /// Where the job's Prometheus metrics go at its end.
    pub metrics_file: Option<PathBuf>,
    pub aws: Aws,
    pub command: Resolved,
}

/// What the command does, with its settings (jobs' settings boxed: they are large).
#[derive(Debug)]
pub enum Resolved {
    /// `encrypt`, `decrypt`, `reencrypt`, `verify`.
    Job(Box<JobSettings>),
    Run(Box<RunSettings>),
    Inspect(PathBuf),
    /// `report merge`.
    MergeReports {
        files: Vec<PathBuf>,
        json: bool,
        output: Option<PathBuf>,
    },
    Bench(Box<BenchSettings>),
    Serve(Box<ServeSettings>),
}

/// AWS and KMS settings, shared by KMS keys and S3 clients.
#[derive(Debug)]
pub struct Aws {
    pub region: Sourced<Option<String>>,
    pub profile: Sourced<Option<String>>,
    pub kms_endpoint: Sourced<Option<String>>,
    /// KMS requests per second, unlimited if `None`.
    pub kms_rate: Sourced<Option<f64>>,
    pub kms_retry_max_delay: Sourced<Duration>,
    pub kms_retry_total: Sourced<Duration>,
    pub grant_tokens: Vec<String>,
}

/// One job over many objects.
#[derive(Debug)]
pub struct JobSettings {
    pub task: Task,
    pub source: Source,
    pub destination: Option<Location>,
    pub in_place: bool,
    pub include: Sourced<Vec<String>>,
    pub exclude: Sourced<Vec<String>>,
    /// This worker's share of the objects, if the job is split.
    pub shard: Option<Sourced<Shard>>,
    pub concurrency: Sourced<usize>,
    pub dry_run: bool,
    pub fail_fast: Sourced<bool>,
    pub aead: Sourced<AeadBackend>,
    pub max_key_age: Sourced<Duration>,
    pub max_key_messages: Sourced<u64>,
    pub max_key_bytes: Sourced<u64>,
    /// Only when the source, destination or manifest is on S3.
    pub s3: Option<S3Transfer>,
    /// The JSON report's file.
    pub report: Sourced<Option<PathBuf>>,
    /// The per-object CSV file.
    pub completion_report: Sourced<Option<PathBuf>>,
}

/// What a job does to each object.
#[derive(Debug)]
pub enum Task {
    Encrypt(Writing),
    Decrypt(Reading),
    Verify(Reading),
    /// `scan`: no keys; `json` prints the inventory as JSON.
    Scan {
        json: bool,
    },
    Reencrypt {
        read: Reading,
        write: Writing,
    },
    Rewrap {
        read: Reading,
        rewrap: Rewrapping,
    },
}

/// How `rewrap` changes the encrypted data keys.
#[derive(Debug)]
pub struct Rewrapping {
    /// The new keys (`--key`), and for `--reencrypt-signed` how signed messages are
    /// written again (the default suite and frame length).
    pub write: Writing,
    pub keep_existing: bool,
    pub drop_keys: Vec<String>,
    pub reencrypt_signed: bool,
    pub allow_header_nonce_reuse: bool,
    pub copy_threshold: u64,
}

impl Task {
    /// The wrapping keys of the messages the job writes (or reads), as given.
    pub fn key_refs(&self) -> &[String] {
        match self {
            Task::Encrypt(w) | Task::Reencrypt { write: w, .. } => &w.keys.refs.value,
            Task::Rewrap { rewrap, .. } => &rewrap.write.keys.refs.value,
            Task::Decrypt(r) | Task::Verify(r) => &r.keys.refs.value,
            Task::Scan { .. } => &[],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Task::Encrypt(_) => "encrypt",
            Task::Decrypt(_) => "decrypt",
            Task::Verify(_) => "verify",
            Task::Scan { .. } => "scan",
            Task::Reencrypt { .. } => "reencrypt",
            Task::Rewrap { .. } => "rewrap",
        }
    }

    pub fn writing(&self) -> Option<&Writing> {
        match self {
            Task::Encrypt(w) | Task::Reencrypt { write: w, .. } => Some(w),
            // Only dropping keys wraps nothing.
            Task::Rewrap { rewrap, .. } => {
                (!rewrap.write.keys.refs.value.is_empty()).then_some(&rewrap.write)
            }
            Task::Decrypt(_) | Task::Verify(_) | Task::Scan { .. } => None,
        }
    }

    pub fn reading(&self) -> Option<&Reading> {
        match self {
            Task::Decrypt(r)
            | Task::Verify(r)
            | Task::Reencrypt { read: r, .. }
            | Task::Rewrap { read: r, .. } => Some(r),
            Task::Encrypt(_) | Task::Scan { .. } => None,
        }
    }
}

/// Key references as given, and the directory relative key paths start from: the
/// working directory for flags, the config file's directory for its keys.
#[derive(Debug)]
pub struct KeyRefs {
    pub refs: Sourced<Vec<String>>,
    pub base: PathBuf,
}

/// How messages are written.
#[derive(Debug)]
pub struct Writing {
    pub keys: KeyRefs,
    pub context: Sourced<EncryptionContext>,
    pub suite: Sourced<AlgorithmSuite>,
    pub frame_length: Sourced<u32>,
}

/// How messages are read.
#[derive(Debug)]
pub struct Reading {
    pub keys: KeyRefs,
    pub discovery: bool,
    /// With discovery: only keys of these accounts (all if empty), in this partition.
    pub discovery_accounts: Vec<String>,
    pub discovery_partition: String,
    pub reproduced_context: Sourced<EncryptionContext>,
    pub commitment_policy: Sourced<CommitmentPolicy>,
    pub source_format: Sourced<SourceFormat>,
    pub max_encrypted_data_keys: Sourced<u16>,
    pub max_header_len: Sourced<usize>,
    pub max_frame_length: Sourced<u32>,
}

/// S3 transfer settings.
#[derive(Debug)]
pub struct S3Transfer {
    pub endpoint: Sourced<Option<String>>,
    pub path_style: Sourced<Option<bool>>,
    pub part_size: Sourced<u64>,
    pub max_in_flight: Sourced<u64>,
    pub storage_class: Sourced<Option<String>>,
    pub sse: Sourced<Option<String>>,
    pub sse_kms_key_id: Sourced<Option<String>>,
}

/// `sealpipe run`: the config file's job, and what comes around it.
#[derive(Debug)]
pub struct RunSettings {
    pub job: JobSettings,
    /// `{mode} {source} -> {destination}`, for the opening line.
    pub summary: String,
    /// `raw-aes:` keys to create if missing (empty unless asked for, and on dry runs).
    pub dev_keys: Vec<String>,
    /// The directory the dev keys' paths start from.
    pub dev_key_base: PathBuf,
    /// After encrypting: decrypt into a directory and compare with the source.
    pub verify: Option<Verification>,
}

/// The check after `run` encrypts: a decrypt job, and the trees it compares.
#[derive(Debug)]
pub struct Verification {
    pub job: JobSettings,
    pub source: PathBuf,
    pub copy: PathBuf,
}

/// `sealpipe serve`.
#[derive(Debug)]
pub struct ServeSettings {
    /// `--listen`, unparsed: the address is checked when it is bound.
    pub listen: Sourced<String>,
    /// `--lambda`: answer Lambda invocations instead of listening.
    pub lambda: bool,
    /// The keys (its context is unused: contexts come with each request), suite and
    /// frame length of the messages written.
    pub write: Writing,
    /// Commitment policy and limits of the messages read.
    pub read: Reading,
    pub token_files: Vec<PathBuf>,
    pub token_secrets: Vec<String>,
    pub token_parameters: Vec<String>,
    /// `SEALPIPE_SERVE_TOKENS`: a token file's text.
    pub token_env: Option<String>,
    pub token_reload: Duration,
    /// Certificate chain and key, both PEM.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub insecure_listen: bool,
    pub limits: sealpipe::serve::Limits,
    pub aead: Sourced<AeadBackend>,
    pub pool: PoolLimits,
}

/// `sealpipe bench`.
#[derive(Debug)]
pub struct BenchSettings {
    pub config: BenchConfig,
    pub json: bool,
    /// `--workload` or `--objects`: a tree through the pipeline instead of memory.
    pub workload: Option<BenchWorkload>,
}

/// A workload to run; its S3 client and keyrings are built when it runs.
#[derive(Debug)]
pub struct BenchWorkload {
    pub mix: Mix,
    pub target: BenchTarget,
    pub modes: Vec<Mode>,
    pub concurrency: usize,
    /// `--key` and `--new-key` (the new ones default to the first), if given.
    pub keys: Option<(KeyRefs, KeyRefs)>,
    pub pool_limits: PoolLimits,
    pub aead: AeadBackend,
}

/// Where a workload runs.
#[derive(Debug)]
pub enum BenchTarget {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        transfer: Box<S3Transfer>,
    },
}

/// Resolves the command line: loads the config file (`--config`, `SEALPIPE_CONFIG`,
/// for `run` `./config.toml`), then every setting.
pub fn resolve(cli: &Cli, env: Env) -> anyhow::Result<Settings> {
    let layers = Layers { env };
    let path = layers.pick(cli.global.config.clone(), Some(&CONFIG), None)?;
    let path = match (&cli.command, path.value) {
        (_, Some(p)) => Some(p),
        (Command::Run(_), None) => Some(PathBuf::from("config.toml")),
        (_, None) => None,
    };
    let config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    resolve_with(cli, &config, path.as_deref(), env)
}

/// [`resolve`] once the config file is read (`path` is where from, if anywhere).
fn resolve_with(
    cli: &Cli,
    config: &Config,
    path: Option<&Path>,
    env: Env,
) -> anyhow::Result<Settings> {
    let layers = Layers { env };
    let g = &cli.global;
    let quiet = layers.pick_switch(g.quiet, Some(&QUIET), false)?;
    let globals = Globals::resolve(&layers, g, config)?;
    let aws = aws(&layers, g, config)?;
    let command = match &cli.command {
        Command::Encrypt(a) => {
            let write = writing(&layers, &a.keys, &a.write, config)?;
            globals.job(Task::Encrypt(write), &layers, &a.transfer, config)?
        }
        Command::Decrypt(a) => {
            let read = reading(&layers, &a.keys, &config.job.keys, Some(&a.read), config)?;
            globals.job(Task::Decrypt(read), &layers, &a.transfer, config)?
        }
        Command::Verify(a) => {
            let read = reading(&layers, &a.keys, &config.job.keys, Some(&a.read), config)?;
            globals.job(Task::Verify(read), &layers, &a.transfer, config)?
        }
        Command::Scan(a) => {
            globals.job(Task::Scan { json: a.json }, &layers, &a.transfer, config)?
        }
        Command::Reencrypt(a) => {
            let write = writing(&layers, &a.key_change.keys, &a.write, config)?;
            let read = old_reading(&layers, &a.key_change, &a.read, config)?;
            let task = Task::Reencrypt { read, write };
            globals.job(task, &layers, &a.transfer, config)?
        }
        Command::Rewrap(a) => {
            let read = old_reading(&layers, &a.key_change, &a.read, config)?;
            let rewrap = rewrapping(&layers, &a.key_change.keys, Some(a), config)?;
            globals.job(Task::Rewrap { read, rewrap }, &layers, &a.transfer, config)?
        }
        Command::Run(a) => {
            let path = path.unwrap_or(Path::new("config.toml"));
            Resolved::Run(Box::new(globals.run(&layers, config, path, a.dry_run)?))
        }
        Command::Inspect(a) => Resolved::Inspect(a.file.clone()),
        Command::Report(super::args::ReportCommand::Merge(a)) => Resolved::MergeReports {
            files: a.files.clone(),
            json: a.json,
            output: a.output.clone(),
        },
        Command::Bench(a) => {
            let mut b = BenchConfig::default();
            // Every value is in range already (values::Bench*), so the benchmark's
            // buffers are allocatable and its durations representable.
            if let (Some(size), None) = (&a.size, a.objects) {
                // Suffixes allowed (4KiB); whatever does not parse goes to the range
                // check as given, so the error names the range.
                let bytes = super::values::parse_size(size)
                    .map_or_else(|_| size.clone(), |b| b.to_string());
                b.message_size = BenchSize::from_str(&bytes)
                    .map_err(|e| anyhow!("--size: {e}"))?
                    .0;
            }
            b.frame_length = a.frame_len.map_or(b.frame_length, |l| l.0);
            b.threads = a.threads.map_or(b.threads, |t| t.0);
            b.min_time = a.seconds.map_or(b.min_time, |s| s.duration());
            // The config file's `[runtime] aead` is for jobs; the benchmark never read it.
            b.aead = backend(layers.pick(g.aead.clone(), Some(&AEAD), None)?)?.value;
            let aead = b.aead;
            Resolved::Bench(Box::new(BenchSettings {
                config: b,
                json: a.json,
                workload: bench_workload(a, (globals.concurrency.value, aead), &layers, g, config)?,
            }))
        }
        Command::Serve(a) => Resolved::Serve(Box::new(serve(&layers, &globals, a, config)?)),
    };
    let r = &config.runtime;
    let log_format = layers.pick(g.log_format, Some(&LOG_FORMAT), r.log_format)?;
    let metrics_file = layers.pick(
        g.metrics_file.clone(),
        Some(&METRICS_FILE),
        resolved(config, &r.metrics_file),
    )?;
    Ok(Settings {
        quiet,
        log_json: log_format.value == Some(LogFormat::Json),
        metrics_file: metrics_file.value,
        aws,
        command,
    })
}

/// Flags every command takes. Those with an environment variable are resolved for
/// every command, as clap once parsed them, whether the command uses them or not.
struct Globals<'a> {
    flags: &'a GlobalArgs,
    concurrency: Sourced<Option<usize>>,
    aead: Sourced<Option<String>>,
    report: Sourced<Option<PathBuf>>,
}

/// Where a job's objects are, as the command line or `[job]` names them.
struct Objects<'a> {
    paths: &'a [String],
    manifest: Option<&'a str>,
    in_place: bool,
    batch_operations: bool,
    dry_run: bool,
}

/// A job command's own flags; none for `run`.
#[derive(Default)]
struct JobFlags<'a> {
    include: &'a [String],
    exclude: &'a [String],
    fail_fast: bool,
    shard: Option<Shard>,
    shards: Option<u64>,
    shard_by: Option<ShardBy>,
    completion_report: Option<PathBuf>,
}

impl<'a> Globals<'a> {
    fn resolve(layers: &Layers, flags: &'a GlobalArgs, config: &Config) -> anyhow::Result<Self> {
        let r = &config.runtime;
        let concurrency = layers.pick(flags.concurrency, Some(&CONCURRENCY), r.concurrency)?;
        Ok(Self {
            flags,
            concurrency: Sourced {
                value: concurrency.value.map(|c| c.0),
                origin: concurrency.origin,
            },
            aead: layers.pick(flags.aead.clone(), Some(&AEAD), r.aead.clone())?,
            report: layers.pick(flags.report.clone(), None, resolved(config, &r.report))?,
        })
    }

    /// A job command's settings: its flags over the config file.
    fn job(
        &self,
        task: Task,
        layers: &Layers,
        t: &TransferArgs,
        config: &Config,
    ) -> anyhow::Result<Resolved> {
        let objects = Objects {
            paths: &t.paths,
            manifest: t.manifest.as_deref(),
            in_place: t.in_place,
            batch_operations: t.batch_operations,
            dry_run: t.dry_run,
        };
        let flags = JobFlags {
            include: &t.include,
            exclude: &t.exclude,
            fail_fast: t.fail_fast,
            shard: t.shard,
            shards: t.shards,
            shard_by: t.shard_by,
            completion_report: t.completion_report.clone(),
        };
        let job = self.job_settings(task, objects, flags, layers, config)?;
        Ok(Resolved::Job(Box::new(job)))
    }

    /// `run`: the `[job]` section is the job; no job flag applies.
    fn run(
        &self,
        layers: &Layers,
        config: &Config,
        path: &Path,
        dry_run: bool,
    ) -> anyhow::Result<RunSettings> {
        let section = &config.job;
        // Local paths in the file are relative to the file; S3 locations are kept as
        // given.
        let located = |s: &String| {
            if s.starts_with("s3://") {
                s.clone()
            } else {
                config.resolve(Path::new(s)).display().to_string()
            }
        };
        let source = section.source.as_ref().map(located);
        let destination = section.destination.as_ref().map(located);
        let manifest = section.manifest.as_ref().map(located);
        let paths: Vec<String> = source.iter().chain(destination.iter()).cloned().collect();
        let objects = Objects {
            paths: &paths,
            manifest: manifest.as_deref(),
            in_place: section.in_place,
            // A standing Lambda function, not a job that runs to its end.
            batch_operations: false,
            dry_run,
        };
        let mode = section.mode.as_deref().unwrap_or("encrypt");
        let no_write_flags = WriteArgs::default();
        let task = match mode {
            "encrypt" => Task::Encrypt(writing(layers, &[], &no_write_flags, config)?),
            "decrypt" => Task::Decrypt(reading(layers, &[], &section.keys, None, config)?),
            "verify" => Task::Verify(reading(layers, &[], &section.keys, None, config)?),
            "reencrypt" => Task::Reencrypt {
                read: reading(layers, &[], &section.old_keys, None, config)?,
                write: writing(layers, &[], &no_write_flags, config)?,
            },
            "rewrap" => Task::Rewrap {
                read: reading(layers, &[], &section.old_keys, None, config)?,
                rewrap: rewrapping(layers, &[], None, config)?,
            },
            other => bail!(
                "{}: unknown [job] mode {other:?} (encrypt, decrypt, reencrypt, rewrap or verify)",
                sealpipe::escape::path(path)
            ),
        };
        let job = self.job_settings(task, objects, JobFlags::default(), layers, config)?;
        let verify = match (&section.verify_destination, &source, &destination) {
            (Some(verify), Some(source), Some(destination)) if mode == "encrypt" && !dry_run => {
                let copy = config.resolve(verify);
                let paths = [destination.clone(), copy.display().to_string()];
                let objects = Objects {
                    paths: &paths,
                    manifest: None,
                    in_place: false,
                    batch_operations: false,
                    dry_run: false,
                };
                let task = Task::Decrypt(reading(layers, &[], &section.keys, None, config)?);
                Some(Verification {
                    job: self.job_settings(task, objects, JobFlags::default(), layers, config)?,
                    source: PathBuf::from(source),
                    copy,
                })
            }
            _ => None,
        };
        let summary = format!(
            "{mode} {} -> {}",
            source
                .as_deref()
                .or(section.manifest.as_deref())
                .unwrap_or("?"),
            destination.as_deref().unwrap_or("(in place)"),
        );
        let dev_keys = if section.create_missing_dev_key && !dry_run {
            section
                .keys
                .iter()
                .chain(&section.old_keys)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Ok(RunSettings {
            job,
            summary,
            dev_keys,
            dev_key_base: config.base.clone(),
            verify,
        })
    }

    fn job_settings(
        &self,
        task: Task,
        objects: Objects,
        flags: JobFlags,
        layers: &Layers,
        config: &Config,
    ) -> anyhow::Result<JobSettings> {
        let (source, destination) = objects.locate(task.name())?;
        let on_s3 = matches!(
            &source,
            Source::Manifest(_) | Source::Tasks | Source::Location(Location::S3 { .. })
        ) || destination.as_ref().is_some_and(Location::is_s3);
        let s3 = if on_s3 {
            Some(s3_transfer(layers, self.flags, config)?)
        } else {
            None
        };
        let default_concurrency = if on_s3 {
            DEFAULT_CONCURRENCY_S3
        } else {
            DEFAULT_CONCURRENCY
        };
        let (a, c, j) = (&self.flags.aws, &config.cache, &config.job);
        let pool = PoolLimits::default();
        // Each value is in its range already (values::Age, CacheMessages, CacheBytes).
        let max_key_age = layers.pick(a.cache_max_age, None, c.max_age_seconds)?;
        let max_key_messages = layers.pick(a.cache_max_messages, None, c.max_messages)?;
        let max_key_bytes = layers.pick(a.cache_max_bytes, None, c.max_bytes)?;
        let shard = divided(
            layers,
            shard(layers, flags.shard, flags.shards, j)?,
            flags.shard_by,
            j,
            &source,
        )?;
        Ok(JobSettings {
            task,
            source,
            destination,
            in_place: objects.in_place,
            shard,
            include: layers.pick_list(flags.include, &j.include)?,
            exclude: layers.pick_list(flags.exclude, &j.exclude)?,
            concurrency: self.concurrency.clone().or(default_concurrency),
            dry_run: objects.dry_run,
            fail_fast: layers.pick_switch(flags.fail_fast, None, config.runtime.fail_fast)?,
            aead: backend(self.aead.clone())?,
            max_key_age: max_key_age.map(|s| s.duration()).or(pool.max_age),
            max_key_messages: max_key_messages.map(|m| m.0).or(pool.max_messages),
            max_key_bytes: max_key_bytes.map(|b| b.0).or(pool.max_bytes),
            s3,
            report: self.report.clone(),
            completion_report: layers.pick(
                flags.completion_report,
                None,
                resolved(config, &config.runtime.completion_report),
            )?,
        })
    }
}

/// The job's shard: `--shard` (or SEALPIPE_SHARD, or `[job] shard`), else an index from
/// the engine running the worker, Kubernetes (JOB_COMPLETION_INDEX, with the count from
/// `--shards`) or AWS Batch (AWS_BATCH_JOB_ARRAY_INDEX and _SIZE). A count without an
/// index, or an index without a count, is an error rather than the whole job run on
/// every worker.
fn shard(
    layers: &Layers,
    flag: Option<Shard>,
    shards: Option<u64>,
    job: &JobSection,
) -> anyhow::Result<Option<Sourced<Shard>>> {
    let config = job
        .shard
        .as_deref()
        .map(|s| s.parse::<Shard>().map_err(|e| anyhow!("[job] shard: {e}")))
        .transpose()?;
    let count = layers.pick(shards, Some(&SHARDS), job.shards)?;
    if let Some(n) = count.value
        && !(1..=sealpipe::pipeline::MAX_SHARDS).contains(&n)
    {
        bail!(
            "--shards {n}{}: the shard count must be from 1 to {}",
            origin_note(&count.origin),
            sealpipe::pipeline::MAX_SHARDS
        );
    }
    let explicit = layers.pick(flag, Some(&SHARD), config)?;
    if let Some(shard) = explicit.value {
        if let Some(n) = count.value
            && n != shard.count()
        {
            bail!(
                "--shard {shard} and --shards {n}{} disagree on the shard count",
                origin_note(&count.origin)
            );
        }
        return Ok(Some(Sourced {
            value: shard,
            origin: explicit.origin,
        }));
    }
    let from_engine = |index: Sourced<Option<u64>>, size: Option<Sourced<Option<u64>>>| {
        let Some(i) = index.value else {
            return Ok(None);
        };
        let var = match index.origin {
            Origin::Env(name) => name,
            _ => "the environment",
        };
        let n = match (count.value, size.as_ref().and_then(|s| s.value)) {
            (Some(n), Some(size)) if n != size => bail!(
                "--shards {n}{} and AWS_BATCH_JOB_ARRAY_SIZE={size} disagree on the shard \
                 count",
                origin_note(&count.origin)
            ),
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => bail!(
                "{var}={i} is set, but not how many shards there are: give --shards \
                 COUNT (or SEALPIPE_SHARDS, or [job] shards), or --shard {i}/COUNT"
            ),
        };
        let shard = Shard::new(i, n).map_err(|e| anyhow!("{var}={i}: {e}"))?;
        Ok(Some(Sourced {
            value: shard,
            origin: index.origin,
        }))
    };
    if let Some(shard) = from_engine(layers.pick(None, Some(&K8S_INDEX), None)?, None)? {
        return Ok(Some(shard));
    }
    let batch_size = layers.pick(None, Some(&BATCH_SIZE), None)?;
    if let Some(shard) = from_engine(
        layers.pick(None, Some(&BATCH_INDEX), None)?,
        Some(batch_size),
    )? {
        return Ok(Some(shard));
    }
    if let Some(n) = count.value
        && n > 1
    {
        bail!(
            "--shards {n}{} says the job is split, but not which shard this is: give \
             --shard INDEX/{n}, or run where JOB_COMPLETION_INDEX or \
             AWS_BATCH_JOB_ARRAY_INDEX is set",
            origin_note(&count.origin)
        );
    }
    Ok(None)
}

/// The shard, divided as `--shard-by` (or SEALPIPE_SHARD_BY, or `[job] shard_by`)
/// says: by prefix only for S3 listings, which is what it divides.
fn divided(
    layers: &Layers,
    shard: Option<Sourced<Shard>>,
    flag: Option<ShardBy>,
    job: &JobSection,
    source: &Source,
) -> anyhow::Result<Option<Sourced<Shard>>> {
    let config = job
        .shard_by
        .as_deref()
        .map(|s| {
            s.parse::<ShardBy>()
                .map_err(|e| anyhow!("[job] shard_by: {e}"))
        })
        .transpose()?;
    let explicit = flag.is_some();
    let by = layers.pick(flag, Some(&SHARD_BY), config)?;
    let Some(mut shard) = shard else {
        if explicit {
            bail!(
                "--shard-by divides a split job, and this one is not split: give --shard \
                 INDEX/COUNT (or run where JOB_COMPLETION_INDEX or \
                 AWS_BATCH_JOB_ARRAY_INDEX is set)"
            );
        }
        return Ok(None);
    };
    let by = by.value.unwrap_or_default();
    if by == ShardBy::Prefix && !matches!(source, Source::Location(Location::S3 { .. })) {
        bail!(
            "--shard-by prefix divides S3 listings (the prefixes below an s3:// source); \
             for a manifest or a local tree use --shard-by hash, the default"
        );
    }
    shard.value = shard.value.divided_by(by);
    Ok(Some(shard))
}

/// ` (from VAR)` or ` (from the config file)` after a value that was not a flag.
fn origin_note(origin: &Origin) -> String {
    match origin {
        Origin::Env(name) => format!(" (from {name})"),
        Origin::Config => " (from the config file)".into(),
        _ => String::new(),
    }
}

impl Objects<'_> {
    /// The source and destination, checked against what the command `name` expects.
    fn locate(&self, name: &str) -> anyhow::Result<(Source, Option<Location>)> {
        let parse = |s: &str| Location::parse(s).map_err(|e| anyhow!(e));
        let paths = self
            .paths
            .iter()
            .map(|p| parse(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let manifest = self.manifest.map(parse).transpose()?;
        // Like verify, scan reads and writes nothing.
        let verify = name == "verify" || name == "scan";
        let usage =
            |expected: &str| anyhow!("{name} expects {expected}; got {} path(s)", paths.len());
        if self.batch_operations {
            if self.dry_run {
                bail!(
                    "--dry-run with --batch-operations would answer every task Succeeded \
                     without doing it; plan the job from its manifest instead: --manifest \
                     FILE --dry-run"
                );
            }
            if manifest.is_some() {
                bail!("--batch-operations takes its objects from the tasks; drop --manifest");
            }
            return Ok(match (self.in_place || verify, paths.as_slice()) {
                (true, []) => (Source::Tasks, None),
                (false, [dst]) => match dst {
                    Location::S3 { .. } => (Source::Tasks, Some(dst.clone())),
                    Location::Local(_) => bail!(
                        "--batch-operations writes to S3 (a Lambda function keeps no files): \
                         give DST as s3://BUCKET[/PREFIX]"
                    ),
                },
                _ => {
                    return Err(usage(
                        "only DST with --batch-operations (nothing with --in-place, nothing \
                         for verify)",
                    ));
                }
            });
        }
        Ok(match (manifest, self.in_place, verify, paths.as_slice()) {
            (Some(m), true, _, []) => (Source::Manifest(m), None),
            (Some(m), _, true, []) => (Source::Manifest(m), None),
            (Some(m), false, false, [dst]) => (Source::Manifest(m), Some(dst.clone())),
            (Some(_), ..) => {
                return Err(usage(
                    "only DST with --manifest (nothing with --in-place, nothing for verify)",
                ));
            }
            (None, true, _, [src]) => (Source::Location(src.clone()), None),
            (None, true, _, [src, dst]) => (Source::Location(src.clone()), Some(dst.clone())),
            (None, false, true, [src]) => (Source::Location(src.clone()), None),
            (None, false, true, _) => return Err(usage("SRC")),
            (None, false, _, [src, dst]) => (Source::Location(src.clone()), Some(dst.clone())),
            (None, ..) => return Err(usage("SRC and DST (or SRC with --in-place)")),
        })
    }
}

/// Key references from flags (relative to the working directory), else from the
/// config file (relative to the file).
fn key_refs(
    layers: &Layers,
    flags: &[String],
    config_keys: &[String],
    config: &Config,
) -> anyhow::Result<KeyRefs> {
    let refs = layers.pick_list(flags, config_keys)?;
    let base = match refs.origin {
        Origin::Config => config.base.clone(),
        _ => PathBuf::new(),
    };
    Ok(KeyRefs { refs, base })
}

/// Context pairs from a repeatable flag, else from a config table.
fn pick_context(
    layers: &Layers,
    flags: &[String],
    flag: &str,
    config: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<Sourced<EncryptionContext>> {
    let from_flags = (!flags.is_empty())
        .then(|| parse_pairs(flags, flag))
        .transpose()?;
    let from_config = (!config.is_empty()).then(|| config.clone().into());
    Ok(layers
        .pick(from_flags, None, from_config)?
        .or(EncryptionContext::new()))
}

/// How `encrypt` and `reencrypt` write: `keys` (`--key`), else `[job] keys`.
fn writing(
    layers: &Layers,
    keys: &[String],
    flags: &WriteArgs,
    config: &Config,
) -> anyhow::Result<Writing> {
    let e = &config.encrypt;
    let suite = layers.pick(flags.suite.clone(), None, e.suite.clone())?;
    let frame_length = layers.pick(flags.frame_len, None, e.frame_length)?;
    Ok(Writing {
        keys: key_refs(layers, keys, &config.job.keys, config)?,
        context: pick_context(layers, &flags.context, "--context", &config.job.context)?,
        suite: suite.parse(
            "--suite",
            AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            |s| parse_suite(s),
        )?,
        frame_length: frame_length.map(|l| l.0).or(DEFAULT_FRAME_LENGTH),
    })
}

/// How `decrypt`, `verify` and `reencrypt` read: `keys` (`--key`, `--old-key`), else
/// `config_keys` (`[job] keys`, `old_keys`); `run` has no flags.
fn reading(
    layers: &Layers,
    keys: &[String],
    config_keys: &[String],
    flags: Option<&ReadArgs>,
    config: &Config,
) -> anyhow::Result<Reading> {
    let d = &config.decrypt;
    let limits = DecodeLimits::default();
    let (policy, format, edks, header, frame) = match flags {
        Some(f) => (
            f.commitment_policy.clone(),
            f.source_format.clone(),
            f.max_encrypted_data_keys,
            f.max_header_size,
            f.max_frame_len,
        ),
        None => (None, None, None, None, None),
    };
    let policy = layers.pick(policy, None, d.commitment_policy.clone())?;
    let format = layers.pick(format, None, d.source_format.clone())?;
    let edks = layers.pick(edks, None, d.max_encrypted_data_keys)?;
    let header = layers.pick(header, None, d.max_header_size)?;
    let frame = layers.pick(frame, None, d.max_frame_length)?;
    let no_flags = Vec::new();
    let reproduced = flags.map_or(&no_flags, |f| &f.reproduced_context);
    Ok(Reading {
        keys: key_refs(layers, keys, config_keys, config)?,
        discovery: flags.is_some_and(|f| f.discovery),
        discovery_accounts: flags.map_or_else(Vec::new, |f| f.discovery_account.clone()),
        discovery_partition: flags.map_or_else(|| "aws".into(), |f| f.discovery_partition.clone()),
        reproduced_context: pick_context(
            layers,
            reproduced,
            "--reproduced-context",
            &d.reproduced_context,
        )?,
        commitment_policy: policy.parse("--commitment-policy", Default::default(), |p| {
            p.parse().map_err(|e: String| anyhow!(e))
        })?,
        source_format: format.parse("--source-format", Default::default(), |f| {
            f.parse().map_err(|e: String| anyhow!(e))
        })?,
        max_encrypted_data_keys: edks.map(|m| m.0).or(limits.max_encrypted_data_keys),
        max_header_len: header.map(|m| m.0).or(limits.max_header_len),
        max_frame_length: frame.map(|m| m.0).or(limits.max_frame_length),
    })
}

/// How `rewrap` changes data keys: its flags over `[rewrap]`; the new keys are `keys`
/// (`--key`), else `[job] keys`. Messages `--reencrypt-signed` writes take the default
/// suite and frame length.
fn rewrapping(
    layers: &Layers,
    keys: &[String],
    flags: Option<&RewrapArgs>,
    config: &Config,
) -> anyhow::Result<Rewrapping> {
    let c = &config.rewrap;
    let no_drops = Vec::new();
    let keep = layers.pick_switch(
        flags.is_some_and(|f| f.keep_existing),
        None,
        c.keep_existing,
    )?;
    let signed = layers.pick_switch(
        flags.is_some_and(|f| f.reencrypt_signed),
        None,
        c.reencrypt_signed,
    )?;
    let reuse = layers.pick_switch(
        flags.is_some_and(|f| f.allow_header_nonce_reuse),
        None,
        c.allow_header_nonce_reuse,
    )?;
    let drops = layers.pick_list(flags.map_or(&no_drops, |f| &f.drop_key), &c.drop_keys)?;
    let threshold = layers.pick(flags.and_then(|f| f.copy_threshold), None, c.copy_threshold)?;
    Ok(Rewrapping {
        write: writing(layers, keys, &WriteArgs::default(), config)?,
        keep_existing: keep.value,
        drop_keys: drops.value,
        reencrypt_signed: signed.value,
        allow_header_nonce_reuse: reuse.value,
        copy_threshold: threshold.map(|t| t.0).or(DEFAULT_COPY_THRESHOLD).value,
    })
}

/// How `reencrypt` and `rewrap` read the existing messages: `--old-key`, else
/// `[job] old_keys`.
fn old_reading(
    layers: &Layers,
    keys: &KeyChange,
    flags: &ReadArgs,
    config: &Config,
) -> anyhow::Result<Reading> {
    reading(
        layers,
        &keys.old_keys,
        &config.job.old_keys,
        Some(flags),
        config,
    )
}

/// The workload of `bench --workload` or `--objects`, if one is asked for.
fn bench_workload(
    a: &super::args::BenchArgs,
    (concurrency, aead): (Option<usize>, AeadBackend),
    layers: &Layers,
    g: &GlobalArgs,
    config: &Config,
) -> anyhow::Result<Option<BenchWorkload>> {
    let mix = match (&a.workload, a.objects, &a.size) {
        (None, None, _) => {
            if a.target.is_some() || !a.modes.is_empty() {
                bail!("--target and --modes are for workloads: add --workload or --objects");
            }
            return Ok(None);
        }
        (Some(_), Some(_), _) => bail!("give --workload or --objects, not both"),
        (Some(_), None, Some(_)) => bail!(
            "--size is the message size in memory, or with --objects the objects' sizes; \
             a named --workload has its own sizes"
        ),
        (Some(name), None, None) => Mix::named(name)
            .ok_or_else(|| anyhow!("unknown workload {name:?} (small, medium, large or mixed)"))?,
        (None, Some(objects), size) => {
            let size = size.as_deref().unwrap_or_default();
            let (min, max) = size.split_once("..").unwrap_or((size, size));
            let parse =
                |s: &str| super::values::parse_size(s).map_err(|e| anyhow!("--size {size:?}: {e}"));
            let (min, max) = (parse(min)?, parse(max)?);
            if min > max || max > 1 << 40 {
                bail!("--size {size:?}: MIN must not exceed MAX, and MAX at most 1TiB");
            }
            Mix::Sizes {
                objects: objects.0,
                min,
                max,
            }
        }
    };
    let mut modes = vec![Mode::Encrypt];
    let names: Vec<&str> = if a.modes.is_empty() {
        vec!["decrypt", "reencrypt", "rewrap", "verify"]
    } else {
        a.modes.iter().map(String::as_str).collect()
    };
    for name in names {
        modes.push(match name {
            "encrypt" => continue,
            "decrypt" => Mode::Decrypt,
            "reencrypt" => Mode::Reencrypt,
            "rewrap" => Mode::Rewrap,
            "verify" => Mode::Verify,
            other => bail!(
                "--modes: unknown mode {other:?} (encrypt, decrypt, reencrypt, rewrap, verify)"
            ),
        });
    }
    let target = match a.target.as_deref() {
        None => BenchTarget::Local(std::env::temp_dir()),
        Some("memory") => {
            let shm = PathBuf::from("/dev/shm");
            if !sealpipe::bench::is_in_memory(&shm) {
                bail!(
                    "--target memory: /dev/shm is not a tmpfs on this machine; give a \
                     directory on one (mount -t tmpfs tmpfs DIR) as --target DIR"
                );
            }
            BenchTarget::Local(shm)
        }
        Some(t) => match Location::parse(t).map_err(|e| anyhow!("--target: {e}"))? {
            Location::Local(dir) => {
                if !dir.is_dir() {
                    bail!(
                        "--target {}: not a directory (the benchmark makes its files below \
                         one)",
                        sealpipe::escape::path(&dir)
                    );
                }
                BenchTarget::Local(dir)
            }
            Location::S3 { bucket, prefix } => {
                let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                    prefix
                } else {
                    format!("{prefix}/")
                };
                BenchTarget::S3 {
                    bucket,
                    prefix,
                    transfer: Box::new(s3_transfer(layers, g, config)?),
                }
            }
        },
    };
    let default_concurrency = match target {
        BenchTarget::S3 { .. } => DEFAULT_CONCURRENCY_S3,
        BenchTarget::Local(_) => DEFAULT_CONCURRENCY,
    };
    if a.keys.is_empty() && !a.new_keys.is_empty() {
        bail!("--new-key needs --key: the workload's messages are first sealed with --key");
    }
    let refs = |refs: &[String]| -> anyhow::Result<KeyRefs> {
        super::keyref::check_refs(refs, false)?;
        Ok(KeyRefs {
            refs: Sourced {
                value: refs.to_vec(),
                origin: Origin::Flag,
            },
            base: PathBuf::from("."),
        })
    };
    let keys = if a.keys.is_empty() {
        None
    } else {
        let new = if a.new_keys.is_empty() {
            &a.keys
        } else {
            &a.new_keys
        };
        Some((refs(&a.keys)?, refs(new)?))
    };
    let pool_limits = pool_limits(layers, &g.aws, config)?;
    Ok(Some(BenchWorkload {
        mix,
        target,
        modes,
        concurrency: concurrency.unwrap_or(default_concurrency),
        keys,
        pool_limits,
        aead,
    }))
}

/// AWS settings: flags over the config file; the SDK adds the environment.
fn aws(layers: &Layers, g: &GlobalArgs, config: &Config) -> anyhow::Result<Aws> {
    let (a, c) = (&g.aws, &config.aws);
    let retry = RetryPolicy::default();
    let max_delay = layers.pick(a.kms_retry_max_delay, None, c.kms_retry_max_delay)?;
    let total = layers.pick(a.kms_retry_total, None, c.kms_retry_total)?;
    Ok(Aws {
        region: layers.pick(a.region.clone(), None, c.region.clone())?,
        profile: layers.pick(a.profile.clone(), None, c.profile.clone())?,
        kms_endpoint: layers.pick(a.kms_endpoint.clone(), None, c.kms_endpoint.clone())?,
        kms_rate: layers
            .pick(a.kms_rate, Some(&KMS_RATE), c.kms_rate)?
            .map(KmsRate::get),
        kms_retry_max_delay: max_delay.map(|d| d.duration()).or(retry.max_delay),
        kms_retry_total: total.map(|d| d.duration()).or(retry.max_total_delay),
        grant_tokens: c.grant_tokens.clone(),
    })
}

/// S3 transfer settings: flags over `[s3]` over defaults, checked together.
fn s3_transfer(layers: &Layers, g: &GlobalArgs, config: &Config) -> anyhow::Result<S3Transfer> {
    let (a, c) = (&g.s3, &config.s3);
    let defaults = S3Settings::default();
    // Each value is within S3's limits already (values::PartSize, values::InFlight);
    // only how they relate is left to check.
    let part_size = layers
        .pick(a.part_size, None, c.part_size)?
        .map(|p| p.0)
        .or(defaults.part_size);
    let max_in_flight = layers
        .pick(a.max_in_flight, None, c.max_in_flight)?
        .map(|m| m.0)
        .or(DEFAULT_MAX_IN_FLIGHT);
    if max_in_flight.value < 2 * part_size.value {
        bail!(
            "--max-in-flight ({} bytes) must hold at least two parts ({} bytes): one being \
             read and one being written",
            max_in_flight.value,
            2 * part_size.value
        );
    }
    let sse = layers.pick(a.sse.clone(), None, c.sse.clone())?;
    if let Some(s) = &sse.value
        && s != "aws:kms"
        && s != "AES256"
    {
        bail!("--sse {s:?}: use aws:kms or AES256");
    }
    Ok(S3Transfer {
        endpoint: layers.pick(a.s3_endpoint.clone(), None, c.endpoint.clone())?,
        path_style: layers.pick(a.s3_path_style, None, c.path_style)?,
        part_size,
        max_in_flight,
        storage_class: layers.pick(a.storage_class.clone(), None, c.storage_class.clone())?,
        sse,
        sse_kms_key_id: layers.pick(a.sse_kms_key_id.clone(), None, c.sse_kms_key_id.clone())?,
    })
}

/// The AES-GCM backend named by whichever layer set one.
fn backend(name: Sourced<Option<String>>) -> anyhow::Result<Sourced<AeadBackend>> {
    name.parse(AEAD.flag, AeadBackend::default(), |s| {
        s.parse().map_err(|e: String| anyhow!(e))
    })
}

/// A path from the config file, resolved against the file's directory.
/// `serve`: its flags over `[serve]` (and `[encrypt]`, `[decrypt]`, `[cache]` for
/// messages and pools).
fn serve(
    layers: &Layers,
    globals: &Globals,
    a: &ServeArgs,
    config: &Config,
) -> anyhow::Result<ServeSettings> {
    let c = &config.serve;
    let keys = || key_refs(layers, &a.keys, &c.keys, config);
    let write_flags = WriteArgs {
        context: Vec::new(),
        suite: a.suite.clone(),
        frame_len: a.frame_len,
    };
    let mut write = writing(layers, &a.keys, &write_flags, config)?;
    write.keys = keys()?;
    if write.keys.refs.value.is_empty() {
        bail!("serve needs a key: give --key (repeatable) or [serve] keys");
    }
    let read_flags = ReadArgs {
        commitment_policy: a.commitment_policy.clone(),
        max_encrypted_data_keys: a.max_encrypted_data_keys,
        ..ReadArgs::default()
    };
    let read = reading(layers, &a.keys, &c.keys, Some(&read_flags), config)?;
    let listed = |flags: &[PathBuf], file: &[PathBuf]| -> Vec<PathBuf> {
        if flags.is_empty() {
            file.iter().map(|p| config.resolve(p)).collect()
        } else {
            flags.to_vec()
        }
    };
    let token_env = match (layers.env)(SERVE_TOKENS) {
        Some(raw) => Some(
            raw.into_string()
                .map_err(|_| anyhow!("{SERVE_TOKENS} is not valid UTF-8"))?,
        ),
        None => None,
    };
    let tls_cert = layers.pick(a.tls_cert.clone(), None, resolved(config, &c.tls_cert))?;
    let tls_key = layers.pick(a.tls_key.clone(), None, resolved(config, &c.tls_key))?;
    let tls = match (tls_cert.value, tls_key.value) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate and its key (--tls-cert and --tls-key)"),
    };
    let defaults = sealpipe::serve::Limits::default();
    let no_spill = layers.pick_switch(a.no_spill, None, c.no_spill)?.value;
    let spill_dir = layers.pick(a.spill_dir.clone(), None, resolved(config, &c.spill_dir))?;
    let seconds = |flag: Option<super::values::Seconds>,
                   file: Option<super::values::Seconds>,
                   default: Duration|
     -> anyhow::Result<Duration> {
        Ok(layers
            .pick(flag, None, file)?
            .value
            .map_or(default, |s| s.duration()))
    };
    let limits = sealpipe::serve::Limits {
        max_body: layers
            .pick(a.max_body, None, c.max_body)?
            .value
            .map_or(defaults.max_body, |b| b.0),
        max_in_memory: layers
            .pick(a.max_in_memory, None, c.max_in_memory)?
            .value
            .map_or(defaults.max_in_memory, |b| b.0 as usize),
        spill_dir: match (no_spill, spill_dir.value) {
            (true, _) => None,
            (false, Some(dir)) => Some(dir),
            (false, None) => defaults.spill_dir,
        },
        request_timeout: seconds(
            a.request_timeout,
            c.request_timeout,
            defaults.request_timeout,
        )?,
        header_timeout: seconds(a.header_timeout, c.header_timeout, defaults.header_timeout)?,
        body_timeout: seconds(a.body_timeout, c.body_timeout, defaults.body_timeout)?,
        max_concurrent: layers
            .pick(a.max_concurrent, None, c.max_concurrent)?
            .value
            .map_or(defaults.max_concurrent, |n| n.0),
        token_rate: layers
            .pick(a.token_rate, None, c.token_rate)?
            .value
            .map(|r| r.get()),
    };
    Ok(ServeSettings {
        listen: layers
            .pick(a.listen.clone(), None, c.listen.clone())?
            .or("127.0.0.1:8080".into()),
        lambda: a.lambda,
        write,
        read,
        token_files: listed(&a.token_files, &c.token_files),
        token_secrets: if a.token_secrets.is_empty() {
            c.token_secrets.clone()
        } else {
            a.token_secrets.clone()
        },
        token_parameters: if a.token_parameters.is_empty() {
            c.token_parameters.clone()
        } else {
            a.token_parameters.clone()
        },
        token_env,
        token_reload: seconds(a.token_reload, c.token_reload, Duration::from_secs(60))?,
        tls,
        insecure_listen: layers
            .pick_switch(a.insecure_listen, None, c.insecure_listen)?
            .value,
        limits,
        aead: backend(globals.aead.clone())?,
        pool: pool_limits(layers, &globals.flags.aws, config)?,
    })
}

/// The data-key pool's limits of a benchmark or a server, as a job takes them: the
/// `--cache-max-*` flags over `[cache]` (values in range already).
fn pool_limits(
    layers: &Layers,
    flags: &super::args::AwsArgs,
    config: &Config,
) -> anyhow::Result<PoolLimits> {
    let (cache, pool) = (&config.cache, PoolLimits::default());
    let max_age = layers.pick(flags.cache_max_age, None, cache.max_age_seconds)?;
    let max_messages = layers.pick(flags.cache_max_messages, None, cache.max_messages)?;
    let max_bytes = layers.pick(flags.cache_max_bytes, None, cache.max_bytes)?;
    Ok(PoolLimits {
        max_age: max_age.value.map_or(pool.max_age, |s| s.duration()),
        max_messages: max_messages.value.map_or(pool.max_messages, |m| m.0),
        max_bytes: max_bytes.value.map_or(pool.max_bytes, |b| b.0),
        ..pool
    })
}

/// The environment variable that holds a token file's text for `serve`.
pub const SERVE_TOKENS: &str = "SEALPIPE_SERVE_TOKENS";

fn resolved(config: &Config, path: &Option<PathBuf>) -> Option<PathBuf> {
    path.as_ref().map(|p| config.resolve(p))
}

fn parse_suite(s: &str) -> anyhow::Result<AlgorithmSuite> {
    let hex = s.trim_start_matches("0x").trim_start_matches("0X");
    match u16::from_str_radix(hex, 16)
        .ok()
        .and_then(AlgorithmSuite::from_id)
    {
        Some(suite) if suite.is_committing() => Ok(suite),
        _ => bail!(
            "unsupported suite {s:?} for encryption: use 0478 (AES-256-GCM, HKDF-SHA512, key \
             commitment) or 0578 (the same with an ECDSA P-384 signature)"
        ),
    }
}

/// Parses `K=V` pairs; the value may contain `=`.
fn parse_pairs(pairs: &[String], flag: &str) -> anyhow::Result<EncryptionContext> {
    let mut ctx = EncryptionContext::new();
    for p in pairs {
        // `{:?}` escapes controls itself, and the output module escapes every line.
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} {p:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            bail!("{flag} {p:?}: the key is empty");
        }
        if ctx.insert(k, v).is_some() {
            bail!("{flag}: the key {k:?} is given twice");
        }
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    /// Resolves `args` (after `sealpipe`) with `toml` as the config file and `env` as
    /// the whole environment.
    fn settings(args: &[&str], toml: &str, env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("sealpipe").chain(args.iter().copied()))?;
        let mut config: Config = toml::from_str(toml)?;
        config.base = PathBuf::from("conf");
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        resolve_with(&cli, &config, None, &|name| env.get(name).cloned())
    }

    fn job(args: &[&str], toml: &str, env: &[(&str, &str)]) -> JobSettings {
        match settings(args, toml, env).unwrap().command {
            Resolved::Job(job) => *job,
            other => panic!("not a job: {other:?}"),
        }
    }

    const ENCRYPT: [&str; 5] = ["encrypt", "src", "dst", "--key", "raw-aes:a:b:k.key"];

    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        ENCRYPT
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    }

    /// The shard comes from the flag, its variable or the config; else from a
    /// Kubernetes or AWS Batch index; each half without the other is refused.
    #[test]
    fn the_shard_comes_from_flags_config_or_the_engine_and_never_half() {
        let shard = |args: &[&str], toml: &str, env: &[(&str, &str)]| {
            job(&with(args), toml, env)
                .shard
                .map(|s| (s.value.to_string(), s.origin))
        };
        assert_eq!(shard(&[], "", &[]), None);
        assert_eq!(
            shard(&["--shard", "2/5"], "", &[("SEALPIPE_SHARD", "1/5")]),
            Some(("2/5".into(), Origin::Flag))
        );
        assert_eq!(
            shard(&[], "[job]\nshard = \"0/5\"", &[("SEALPIPE_SHARD", "1/5")]),
            Some(("1/5".into(), Origin::Env("SEALPIPE_SHARD")))
        );
        assert_eq!(
            shard(&[], "[job]\nshard = \"4/5\"", &[]),
            Some(("4/5".into(), Origin::Config))
        );
        // Kubernetes: the index from the pod, the count from the job's settings.
        let k8s = [("JOB_COMPLETION_INDEX", "3")];
        assert_eq!(
            shard(&["--shards", "8"], "", &k8s),
            Some(("3/8".into(), Origin::Env("JOB_COMPLETION_INDEX")))
        );
        assert_eq!(
            shard(&[], "[job]\nshards = 4", &k8s),
            Some(("3/4".into(), Origin::Env("JOB_COMPLETION_INDEX")))
        );
        assert_eq!(
            shard(&[], "", &[("SEALPIPE_SHARDS", "6"), k8s[0]]),
            Some(("3/6".into(), Origin::Env("JOB_COMPLETION_INDEX")))
        );
        // An explicit shard wins over the engine's index.
        assert_eq!(
            shard(&["--shard", "0/2"], "", &k8s),
            Some(("0/2".into(), Origin::Flag))
        );
        // AWS Batch: both from the array job.
        let batch = [
            ("AWS_BATCH_JOB_ARRAY_INDEX", "9"),
            ("AWS_BATCH_JOB_ARRAY_SIZE", "10"),
        ];
        assert_eq!(
            shard(&[], "", &batch),
            Some(("9/10".into(), Origin::Env("AWS_BATCH_JOB_ARRAY_INDEX")))
        );
        assert_eq!(
            shard(&["--shards", "10"], "", &batch),
            Some(("9/10".into(), Origin::Env("AWS_BATCH_JOB_ARRAY_INDEX")))
        );

        let refused = |args: &[&str], toml: &str, env: &[(&str, &str)]| {
            settings(&with(args), toml, env).unwrap_err().to_string()
        };
        /// Flags, config file, environment, and what the refusal says.
        type Case<'a> = (&'a [&'a str], &'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (&[], "", &k8s, "not how many shards"),
            (
                &["--shards", "2"],
                "",
                &[("JOB_COMPLETION_INDEX", "2")],
                "not below",
            ),
            (&["--shards", "4"], "", &[], "not which shard"),
            (
                &[],
                "",
                &[("SEALPIPE_SHARDS", "4")],
                "(from SEALPIPE_SHARDS)",
            ),
            (&["--shards", "0"], "", &[], "from 1 to"),
            (&["--shard", "1/3", "--shards", "4"], "", &[], "disagree"),
            (&["--shards", "4"], "", &batch, "disagree"),
            (
                &[],
                "",
                &[("AWS_BATCH_JOB_ARRAY_INDEX", "1")],
                "not how many",
            ),
            (
                &[],
                "",
                &[("JOB_COMPLETION_INDEX", "x")],
                "JOB_COMPLETION_INDEX",
            ),
            (&[], "", &[("SEALPIPE_SHARD", "3")], "INDEX/COUNT"),
            (&[], "[job]\nshard = \"5/5\"", &[], "[job] shard"),
        ];
        for (args, toml, env, want) in cases {
            let e = refused(args, toml, env);
            assert!(e.contains(want), "{args:?} {toml:?} {env:?}: {e}");
        }
        // A bad --shard is refused by the command line itself.
        assert!(settings(&with(&["--shard", "4/4"]), "", &[]).is_err());
        // One shard of one is the whole job; so is --shards 1 with no index.
        assert_eq!(shard(&["--shards", "1"], "", &[]), None);

        // Divided by prefix: S3 listings only; hash by default.
        let by = |args: &[&str], toml: &str, env: &[(&str, &str)]| {
            let settings = settings(args, toml, env)?;
            match settings.command {
                Resolved::Job(job) => anyhow::Ok(job.shard.map(|s| s.value.by())),
                _ => panic!("not a job"),
            }
        };
        let s3 = [
            "encrypt",
            "s3://b/p/",
            "s3://c/",
            "--key",
            "raw-aes:a:b:k.key",
            "--shard",
            "1/2",
        ];
        assert_eq!(by(&s3, "", &[]).unwrap(), Some(ShardBy::Hash));
        assert_eq!(
            by(&s3, "", &[("SEALPIPE_SHARD_BY", "prefix")]).unwrap(),
            Some(ShardBy::Prefix)
        );
        assert_eq!(
            by(&s3, "[job]\nshard_by = \"prefix\"", &[]).unwrap(),
            Some(ShardBy::Prefix)
        );
        let manifest = [
            "encrypt",
            "--manifest",
            "m.csv",
            "s3://c/",
            "--key",
            "raw-aes:a:b:k.key",
            "--shard",
            "0/2",
            "--shard-by",
            "prefix",
        ];
        let refusals: [(Vec<&str>, &str); 4] = [
            (
                with(&["--shard", "0/2", "--shard-by", "prefix"]),
                "divides S3 listings",
            ),
            (with(&["--shard-by", "prefix"]), "this one is not split"),
            (manifest.to_vec(), "for a manifest"),
            (
                with(&["--shard", "0/2", "--shard-by", "ranges"]),
                "hash or prefix",
            ),
        ];
        for (args, want) in refusals {
            let e = by(&args, "", &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn concurrency_flag_beats_env_beats_config_beats_default() {
        let toml = "[runtime]\nconcurrency = 3";
        let env = [("SEALPIPE_CONCURRENCY", "5")];
        let c = job(&with(&["--concurrency", "7"]), toml, &env).concurrency;
        assert_eq!((c.value, c.origin), (7, Origin::Flag));
        let c = job(&ENCRYPT, toml, &env).concurrency;
        assert_eq!(
            (c.value, c.origin),
            (5, Origin::Env("SEALPIPE_CONCURRENCY"))
        );
        let c = job(&ENCRYPT, toml, &[]).concurrency;
        assert_eq!((c.value, c.origin), (3, Origin::Config));
        let c = job(&ENCRYPT, "", &[]).concurrency;
        assert_eq!((c.value, c.origin), (DEFAULT_CONCURRENCY, Origin::Default));
        // The default depends on where the objects are.
        let s3 = ["encrypt", "src", "s3://bucket/p", "--key", "alias/k"];
        assert_eq!(job(&s3, "", &[]).concurrency.value, DEFAULT_CONCURRENCY_S3);
    }

    #[test]
    fn aead_and_kms_rate_follow_the_same_rule() {
        let toml = "[runtime]\naead = \"rustcrypto\"\n[aws]\nkms_rate = 2.5";
        let env = [("SEALPIPE_AEAD", "ring"), ("SEALPIPE_KMS_RATE", "4")];
        let a = job(&with(&["--aead", "rustcrypto"]), "", &env).aead;
        assert_eq!((a.value, a.origin), (AeadBackend::RustCrypto, Origin::Flag));
        let a = job(&ENCRYPT, toml, &env).aead;
        assert_eq!(
            (a.value, a.origin),
            (AeadBackend::Ring, Origin::Env("SEALPIPE_AEAD"))
        );
        let a = job(&ENCRYPT, toml, &[]).aead;
        assert_eq!(
            (a.value, a.origin),
            (AeadBackend::RustCrypto, Origin::Config)
        );

        let rate = |args: &[&str], env| settings(args, toml, env).unwrap().aws.kms_rate;
        let r = rate(&with(&["--kms-rate", "1"]), &env);
        assert_eq!((r.value, r.origin), (Some(1.0), Origin::Flag));
        let r = rate(&ENCRYPT, &env);
        assert_eq!(
            (r.value, r.origin),
            (Some(4.0), Origin::Env("SEALPIPE_KMS_RATE"))
        );
        let r = rate(&ENCRYPT, &[]);
        assert_eq!((r.value, r.origin), (Some(2.5), Origin::Config));
        let r = settings(&ENCRYPT, "", &[]).unwrap().aws.kms_rate;
        assert_eq!((r.value, r.origin), (None, Origin::Default));
    }

    #[test]
    fn settings_without_a_variable_take_the_flag_then_the_file_then_the_default() {
        let toml = "[s3]\npart_size = \"16MiB\"\n[job]\ninclude = [\"*.txt\"]\n\
                    keys = [\"raw-aes:a:b:c.key\"]";
        let s3 = ["encrypt", "src", "s3://bucket/p"];
        let part = |args: &[&str], toml| job(args, toml, &[]).s3.unwrap().part_size;
        let p = part(&[&s3[..], &["--part-size", "32MiB"]].concat(), toml);
        assert_eq!((p.value, p.origin), (32 << 20, Origin::Flag));
        let p = part(&s3, toml);
        assert_eq!((p.value, p.origin), (16 << 20, Origin::Config));
        let p = part(&s3, "");
        assert_eq!(
            (p.value, p.origin),
            (S3Settings::default().part_size, Origin::Default)
        );
        // Local jobs resolve no S3 setting at all, as they never used them.
        assert!(job(&ENCRYPT, toml, &[]).s3.is_none());

        let j = job(&with(&["--include", "*.bin"]), toml, &[]);
        assert_eq!(
            (j.include.value, j.include.origin),
            (vec!["*.bin".into()], Origin::Flag)
        );
        let Task::Encrypt(w) = j.task else { panic!() };
        // Flag keys are relative to the working directory, the file's to the file.
        assert_eq!(w.keys.refs.value, ["raw-aes:a:b:k.key"]);
        assert_eq!(w.keys.base, PathBuf::new());
        let j = job(&s3, toml, &[]);
        assert_eq!(j.include.value, ["*.txt"]);
        assert_eq!(j.include.origin, Origin::Config);
        let Task::Encrypt(w) = j.task else { panic!() };
        assert_eq!(w.keys.base, PathBuf::from("conf"));
    }

    #[test]
    fn an_invalid_environment_value_names_its_variable_unless_a_flag_overrides_it() {
        let env = [("SEALPIPE_CONCURRENCY", "0")];
        let e = settings(&ENCRYPT, "", &env).unwrap_err().to_string();
        assert_eq!(
            e,
            "--concurrency (from SEALPIPE_CONCURRENCY): concurrency must be a whole number \
             from 1 to 65536, not 0"
        );
        let c = job(&with(&["--concurrency", "2"]), "", &env).concurrency;
        assert_eq!(c.value, 2);

        // Parsed after picking, so the message comes from the backend's own parser.
        let e = settings(&ENCRYPT, "", &[("SEALPIPE_AEAD", "fast")]).unwrap_err();
        assert!(
            e.to_string().starts_with("--aead (from SEALPIPE_AEAD): "),
            "{e}"
        );
        let e = settings(&ENCRYPT, "", &[("SEALPIPE_QUIET", "yes")]).unwrap_err();
        assert!(e.to_string().contains("SEALPIPE_QUIET"), "{e}");
        let quiet = settings(&ENCRYPT, "", &[("SEALPIPE_QUIET", "true")])
            .unwrap()
            .quiet;
        assert_eq!(
            (quiet.value, quiet.origin),
            (true, Origin::Env("SEALPIPE_QUIET"))
        );
    }

    fn serve(args: &[&str], toml: &str, env: &[(&str, &str)]) -> anyhow::Result<ServeSettings> {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        match settings(&all, toml, env)?.command {
            Resolved::Serve(s) => Ok(*s),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn serve_takes_flags_over_its_config_section_and_tokens_from_the_environment() {
        let toml = r#"
            [serve]
            listen = "127.0.0.1:9000"
            keys = ["raw-aes:ns:k:k.key"]
            token_files = ["tokens.txt"]
            max_body = "10MiB"
            body_timeout = "500ms"
            max_concurrent = 8
            token_rate = 5.0
            no_spill = true
            tls_cert = "cert.pem"
            tls_key = "key.pem"
            [cache]
            max_messages = 1000
        "#;
        let s = serve(
            &[],
            toml,
            &[("SEALPIPE_SERVE_TOKENS", "tok-0123456789abcdef")],
        )
        .unwrap();
        assert_eq!(s.listen.value, "127.0.0.1:9000");
        assert_eq!(s.write.keys.refs.value, ["raw-aes:ns:k:k.key"]);
        assert_eq!(
            s.write.keys.base,
            PathBuf::from("conf"),
            "config keys resolve beside it"
        );
        assert_eq!(s.token_files, [PathBuf::from("conf/tokens.txt")]);
        assert_eq!(s.token_env.as_deref(), Some("tok-0123456789abcdef"));
        assert_eq!(s.limits.max_body, 10 << 20);
        assert_eq!(s.limits.body_timeout, Duration::from_millis(500));
        assert_eq!(s.limits.max_concurrent, 8);
        assert_eq!(s.limits.token_rate, Some(5.0));
        assert_eq!(s.limits.spill_dir, None, "no_spill");
        assert_eq!(
            s.tls,
            Some((
                PathBuf::from("conf/cert.pem"),
                PathBuf::from("conf/key.pem")
            ))
        );
        assert_eq!(s.pool.max_messages, 1000);
        assert_eq!(s.token_reload, Duration::from_secs(60));

        let flags = [
            "--listen",
            "[::1]:0",
            "--key",
            "alias/app",
            "--max-body",
            "1KiB",
            "--body-timeout",
            "2",
            "--token-file",
            "other.txt",
            "--token-reload",
            "1s",
        ];
        let s = serve(&flags, toml, &[]).unwrap();
        assert_eq!(s.listen.value, "[::1]:0");
        assert_eq!(s.write.keys.refs.value, ["alias/app"]);
        assert_eq!(s.limits.max_body, 1024);
        assert_eq!(s.limits.body_timeout, Duration::from_secs(2));
        assert_eq!(s.token_files, [PathBuf::from("other.txt")]);
        assert_eq!(s.token_reload, Duration::from_secs(1));

        // Out of range, wherever it comes from: refused before anything starts.
        for (args, toml) in [
            (&["--key", "alias/a", "--body-timeout", "0"][..], ""),
            (&["--key", "alias/a", "--max-concurrent", "0"][..], ""),
            (&["--key", "alias/a", "--token-rate", "NaN"][..], ""),
            (
                &["--key", "alias/a", "--header-timeout", "0.0001ms"][..],
                "",
            ),
            (&["--key", "alias/a"][..], "[serve]\nrequest_timeout = -1\n"),
            (
                &[
                    "--key",
                    "alias/a",
                    "--tls-cert",
                    "c.pem",
                    "--tls-key",
                    "k.pem",
                ][..],
                "[serve]\nbogus = 1\n",
            ),
            (&[][..], ""),
        ] {
            assert!(serve(args, toml, &[]).is_err(), "{args:?} {toml:?}");
        }
    }
}
