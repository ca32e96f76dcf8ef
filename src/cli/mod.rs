//! The `sealpipe` command: parse, resolve (flags over environment over config file over
//! defaults), build library objects, run, report.

mod args;
mod config;
mod inspect;
mod keyref;
mod progress;
mod run;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use sealpipe::crypto::AeadBackend;
use sealpipe::format::{AlgorithmSuite, DecodeLimits, EncryptionContext};
use sealpipe::keys::{DiscoveryFilter, KmsDiscoveryKeyring, PoolLimits};
use sealpipe::pipeline::{self, Cancel, Job, Mode, Report, Stats};
use sealpipe::stream::{DEFAULT_FRAME_LENGTH, DecryptOptions, EncryptOptions};

pub use args::Cli;
use args::{Command, DecryptArgs, EncryptArgs, GlobalArgs};
use config::Config;

/// Objects processed at once unless configured.
const DEFAULT_CONCURRENCY: usize = 8;

/// How the process ends.
pub enum Outcome {
    /// Everything succeeded.
    Success,
    /// Some objects failed; the rest completed.
    ObjectsFailed,
    /// Stopped by SIGINT or SIGTERM before finishing.
    Interrupted,
}

/// Runs the parsed command line.
pub async fn main(cli: Cli) -> anyhow::Result<Outcome> {
    let config = match &cli.global.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let kms = kms_source(&cli.global, &config)?;
    match cli.command {
        Command::Encrypt(args) => {
            let job = encrypt_job(&args, &cli.global, &config, &kms).await?;
            execute(job, &cli.global, &config, &kms).await
        }
        Command::Decrypt(args) => {
            let job = decrypt_job(&args, &cli.global, &config, &kms).await?;
            execute(job, &cli.global, &config, &kms).await
        }
        Command::Inspect(args) => inspect::run(&args.file),
        Command::Run(args) => run::run(&cli.global, args.dry_run).await,
        Command::Bench(args) => run::bench(&args, &cli.global),
    }
}

/// AWS settings: flags over the config file; the SDK adds the environment.
fn kms_source(global: &GlobalArgs, config: &Config) -> anyhow::Result<keyref::KmsSource> {
    let (a, c) = (&global.aws, &config.aws);
    let defaults = sealpipe::keys::RetryPolicy::default();
    let seconds = |v: Option<f64>, flag: &str, default: std::time::Duration| match v {
        Some(s) if s >= 0.0 && s.is_finite() => Ok(std::time::Duration::from_secs_f64(s)),
        Some(s) => bail!("{flag} must be a non-negative number of seconds, not {s}"),
        None => Ok(default),
    };
    let retry = sealpipe::keys::RetryPolicy {
        max_delay: seconds(
            a.kms_retry_max_delay.or(c.kms_retry_max_delay),
            "--kms-retry-max-delay",
            defaults.max_delay,
        )?,
        max_total_delay: seconds(
            a.kms_retry_total.or(c.kms_retry_total),
            "--kms-retry-total",
            defaults.max_total_delay,
        )?,
        ..defaults
    };
    Ok(keyref::KmsSource::new(
        sealpipe::aws::AwsSettings {
            region: a.region.clone().or_else(|| c.region.clone()),
            profile: a.profile.clone().or_else(|| c.profile.clone()),
            kms_endpoint: a.kms_endpoint.clone().or_else(|| c.kms_endpoint.clone()),
        },
        a.kms_rate.or(c.kms_rate).filter(|r| *r > 0.0),
        c.grant_tokens.clone(),
        retry,
    ))
}

fn pool_limits(global: &GlobalArgs, config: &Config) -> anyhow::Result<PoolLimits> {
    let (a, c) = (&global.aws, &config.cache);
    let defaults = PoolLimits::default();
    let max_age = match a.cache_max_age.or(c.max_age_seconds) {
        Some(s) if s > 0.0 && s.is_finite() => std::time::Duration::from_secs_f64(s),
        Some(s) => bail!("--cache-max-age must be a positive number of seconds, not {s}"),
        None => defaults.max_age,
    };
    let max_messages = a
        .cache_max_messages
        .or(c.max_messages)
        .unwrap_or(defaults.max_messages);
    if !(1..=1 << 32).contains(&max_messages) {
        bail!("--cache-max-messages must be between 1 and 2^32, not {max_messages}");
    }
    let max_bytes = a
        .cache_max_bytes
        .or(c.max_bytes)
        .unwrap_or(defaults.max_bytes);
    if max_bytes == 0 {
        bail!("--cache-max-bytes must be at least 1");
    }
    Ok(PoolLimits {
        max_age,
        max_messages,
        max_bytes,
        ..defaults
    })
}

async fn encrypt_job(
    args: &EncryptArgs,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Job> {
    let (keys, base) = keys_and_base(&args.keys, config);
    let mut context = parse_pairs(&args.context, "--context")?;
    if args.context.is_empty() {
        context = config.job.context.clone().into();
    }
    let suite = parse_suite(args.suite.as_deref().or(config.encrypt.suite.as_deref()))?;
    let frame_length = args
        .frame_len
        .or(config.encrypt.frame_length)
        .unwrap_or(DEFAULT_FRAME_LENGTH);
    Ok(Job {
        mode: Mode::Encrypt,
        source: args.src.clone(),
        destination: args.dst.clone(),
        keyring: keyref::combine(keyref::keyring_from_refs(&keys, &base, kms).await?)?,
        suite,
        context,
        encrypt: EncryptOptions {
            frame_length,
            aead: aead(global, config)?,
            ..Default::default()
        },
        decrypt: DecryptOptions::default(),
        reproduced_context: EncryptionContext::new(),
        pool_limits: pool_limits(global, config)?,
        concurrency: concurrency(global, config),
        dry_run: args.dry_run,
    })
}

async fn decrypt_job(
    args: &DecryptArgs,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Job> {
    let (keys, base) = keys_and_base(&args.keys, config);
    let mut keyrings = keyref::keyring_from_refs(&keys, &base, kms).await?;
    if args.discovery {
        let filter = (!args.discovery_account.is_empty()).then(|| DiscoveryFilter {
            partition: args.discovery_partition.clone(),
            accounts: args.discovery_account.clone(),
        });
        keyrings.push(Arc::new(KmsDiscoveryKeyring::new(
            filter,
            kms.context().await.clone(),
        )));
    }
    let mut reproduced = parse_pairs(&args.reproduced_context, "--reproduced-context")?;
    if args.reproduced_context.is_empty() {
        reproduced = config.decrypt.reproduced_context.clone().into();
    }
    Ok(Job {
        mode: Mode::Decrypt,
        source: args.src.clone(),
        destination: args.dst.clone(),
        keyring: keyref::combine(keyrings)?,
        suite: AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        context: EncryptionContext::new(),
        encrypt: EncryptOptions::default(),
        decrypt: decrypt_options(
            args.commitment_policy.as_deref(),
            args.max_encrypted_data_keys,
            args.max_header_size,
            args.max_frame_len,
            global,
            config,
        )?,
        reproduced_context: reproduced,
        pool_limits: pool_limits(global, config)?,
        concurrency: concurrency(global, config),
        dry_run: args.dry_run,
    })
}

/// Keys from flags (relative to the working directory), else from the config file
/// (relative to the file).
fn keys_and_base(flag_keys: &[String], config: &Config) -> (Vec<String>, PathBuf) {
    if flag_keys.is_empty() {
        (config.job.keys.clone(), config.base.clone())
    } else {
        (flag_keys.to_vec(), PathBuf::new())
    }
}

fn decrypt_options(
    policy: Option<&str>,
    max_edks: Option<u16>,
    max_header: Option<usize>,
    max_frame: Option<u32>,
    global: &GlobalArgs,
    config: &Config,
) -> anyhow::Result<DecryptOptions> {
    let defaults = DecodeLimits::default();
    let d = &config.decrypt;
    let commitment_policy = match policy.or(d.commitment_policy.as_deref()) {
        Some(p) => p.parse().map_err(|e: String| anyhow!(e))?,
        None => Default::default(),
    };
    let limits = DecodeLimits {
        max_encrypted_data_keys: max_edks
            .or(d.max_encrypted_data_keys)
            .unwrap_or(defaults.max_encrypted_data_keys),
        max_header_len: max_header
            .or(d.max_header_size)
            .unwrap_or(defaults.max_header_len),
        max_frame_length: max_frame
            .or(d.max_frame_length)
            .unwrap_or(defaults.max_frame_length),
    };
    if limits.max_encrypted_data_keys == 0 {
        bail!("--max-encrypted-data-keys must be at least 1");
    }
    Ok(DecryptOptions {
        commitment_policy,
        limits,
        aead: aead(global, config)?,
    })
}

fn aead(global: &GlobalArgs, config: &Config) -> anyhow::Result<AeadBackend> {
    match global.aead.as_deref().or(config.runtime.aead.as_deref()) {
        Some(s) => s.parse().map_err(|e: String| anyhow!(e)),
        None => Ok(AeadBackend::default()),
    }
}

fn concurrency(global: &GlobalArgs, config: &Config) -> usize {
    global
        .concurrency
        .or(config.runtime.concurrency)
        .unwrap_or(DEFAULT_CONCURRENCY)
        .max(1)
}

fn parse_suite(s: Option<&str>) -> anyhow::Result<AlgorithmSuite> {
    let Some(s) = s else {
        return Ok(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY);
    };
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

/// Runs a job with progress, prints the summary, writes the report.
async fn execute(
    job: Job,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Outcome> {
    let report = run_job(job, global.quiet, kms).await?;
    print_summary(&report, global.quiet, kms);
    let report_path = global
        .report
        .clone()
        .or_else(|| config.runtime.report.as_ref().map(|p| config.resolve(p)));
    if let Some(path) = report_path {
        write_report(&path, &report_json(&report, kms)?)?;
    }
    Ok(outcome(&report))
}

/// The job report plus the KMS counters (`kms.GenerateDataKey`, ...).
fn report_json(report: &Report, kms: &keyref::KmsSource) -> anyhow::Result<serde_json::Value> {
    let mut doc = serde_json::to_value(report)?;
    let counters = kms_counters(kms);
    doc["kms"] = serde_json::json!({
        "GenerateDataKey": counters[0],
        "Encrypt": counters[1],
        "Decrypt": counters[2],
        "throttled": counters[3],
        "retries": counters[4],
    });
    Ok(doc)
}

/// GenerateDataKey, Encrypt, Decrypt, throttled, retries.
fn kms_counters(kms: &keyref::KmsSource) -> [u64; 5] {
    use std::sync::atomic::Ordering::Relaxed;
    kms.used().map_or([0; 5], |k| {
        let s = &k.stats;
        [
            s.generate_data_key.load(Relaxed),
            s.encrypt.load(Relaxed),
            s.decrypt.load(Relaxed),
            s.retry.throttled.load(Relaxed),
            s.retry.retries.load(Relaxed),
        ]
    })
}

async fn run_job(job: Job, quiet: bool, kms: &keyref::KmsSource) -> anyhow::Result<Report> {
    let stats = Arc::new(Stats::default());
    let progress =
        progress::Progress::start(stats.clone(), kms.used().map(|k| k.stats.clone()), quiet);
    let cancel = Cancel::default();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    let result = pipeline::run(Arc::new(job), stats, cancel).await;
    signals.abort();
    progress.finish().await;
    Ok(result?)
}

/// Turns the first SIGINT or SIGTERM into a cooperative stop, so in-flight objects
/// remove their partial outputs instead of being killed mid-write.
async fn cancel_on_signal(cancel: Cancel) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("stopping: finishing no new objects; partial outputs are removed");
    cancel.cancel();
}

fn outcome(report: &Report) -> Outcome {
    if report.interrupted {
        Outcome::Interrupted
    } else if report.all_succeeded() {
        Outcome::Success
    } else {
        Outcome::ObjectsFailed
    }
}

fn print_summary(report: &Report, quiet: bool, kms: &keyref::KmsSource) {
    for f in &report.failures {
        eprintln!("error: {}: {}", f.path, f.error);
    }
    if quiet {
        return;
    }
    for s in &report.skipped {
        eprintln!("skipped: {}: {}", s.path, s.error);
    }
    let verb = match report.mode {
        Mode::Encrypt => "encrypt",
        Mode::Decrypt => "decrypt",
    };
    if report.dry_run {
        eprintln!(
            "dry run: would {verb} {} objects, {} ({} skipped); nothing written",
            report.objects.planned,
            human_bytes(report.bytes_planned),
            report.objects.skipped
        );
        return;
    }
    let rate = report.bytes_in as f64 / report.elapsed_s.max(1e-9);
    eprintln!(
        "{verb}ed {} of {} objects ({} failed, {} skipped): {} in, {} out, {:.2} s, {}/s, data keys: {}",
        report.objects.ok,
        report.objects.planned,
        report.objects.failed,
        report.objects.skipped,
        human_bytes(report.bytes_in),
        human_bytes(report.bytes_out),
        report.elapsed_s,
        human_bytes(rate as u64),
        report.data_keys,
    );
    if kms.used().is_some() {
        let [generate, encrypt, decrypt, throttled, retries] = kms_counters(kms);
        eprintln!(
            "KMS calls: GenerateDataKey {generate}, Encrypt {encrypt}, Decrypt {decrypt} \
             ({throttled} throttled, {retries} retries)"
        );
    }
}

fn write_report(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("cannot write report {}", path.display()))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
