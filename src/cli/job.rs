//! Turning flags, environment and the config file into a [`Job`]: sources and
//! destinations, keys, message options, S3 transfer settings.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use sealpipe::crypto::AeadBackend;
use sealpipe::format::{AlgorithmSuite, DecodeLimits, EncryptionContext};
use sealpipe::keys::{DiscoveryFilter, Keyring, KmsDiscoveryKeyring, PoolLimits};
use sealpipe::pipeline::{Job, Keys, Mode, ObjectFilter, Opening, Output, Sealing, Source, Work};
use sealpipe::store::{ByteBudget, Location, S3Settings, S3Store};
use sealpipe::stream::{DEFAULT_FRAME_LENGTH, DecryptOptions, EncryptOptions};

use super::args::{
    DecryptArgs, EncryptArgs, GlobalArgs, ReadArgs, ReencryptArgs, TransferArgs, WriteArgs,
};
use super::config::Config;
use super::keyref;
use super::values::{FrameLength, HeaderSize, MaxDataKeys};

/// Objects processed at once unless configured: local jobs are bound by disks and
/// cores, S3 jobs by request latency.
const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_CONCURRENCY_S3: usize = 64;
/// The in-flight byte budget unless configured.
const DEFAULT_MAX_IN_FLIGHT: u64 = 256 * 1024 * 1024;

/// `encrypt`.
pub async fn encrypt(
    args: &EncryptArgs,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Job> {
    let mut job = base_job(Mode::Encrypt, &args.transfer, global, config).await?;
    job.wrap_keyring = keyring(&args.keys, &config.job.keys, config, kms, job.dry_run).await?;
    write_options(&mut job, &args.write, global, config)?;
    job.into_job()
}

/// `reencrypt`.
pub async fn reencrypt(
    args: &ReencryptArgs,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Job> {
    let mut job = base_job(Mode::Reencrypt, &args.transfer, global, config).await?;
    job.wrap_keyring = keyring(&args.keys, &config.job.keys, config, kms, job.dry_run).await?;
    write_options(&mut job, &args.write, global, config)?;
    read_options(
        &mut job,
        &args.old_keys,
        &config.job.old_keys,
        &args.read,
        global,
        config,
        kms,
    )
    .await?;
    job.into_job()
}

/// `decrypt` (`Mode::Decrypt`) and `verify` (`Mode::Verify`): jobs that only read
/// messages.
pub async fn reading(
    mode: Mode,
    args: &DecryptArgs,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<Job> {
    let mut job = base_job(mode, &args.transfer, global, config).await?;
    let keys = &config.job.keys;
    read_options(&mut job, &args.keys, keys, &args.read, global, config, kms).await?;
    job.into_job()
}

/// A job being assembled from flags, environment and config, before it becomes the
/// library's [`Job`] (which holds exactly what its work needs).
struct Draft {
    mode: Mode,
    source: Source,
    destination: Option<Location>,
    in_place: bool,
    filter: ObjectFilter,
    wrap_keyring: Option<Arc<dyn Keyring>>,
    unwrap_keyring: Option<Arc<dyn Keyring>>,
    suite: AlgorithmSuite,
    context: EncryptionContext,
    encrypt: EncryptOptions,
    decrypt: DecryptOptions,
    reproduced_context: EncryptionContext,
    pool_limits: PoolLimits,
    concurrency: usize,
    dry_run: bool,
    fail_fast: bool,
    s3: Option<S3Store>,
}

impl Draft {
    /// The library's job. What it cannot represent (a verify job with a destination, a
    /// job that writes with nowhere to write) is refused here, in the user's terms.
    fn into_job(self) -> anyhow::Result<Job> {
        let output = match (self.in_place, self.destination, self.mode) {
            (true, _, Mode::Verify) => bail!("verify writes nothing; drop --in-place"),
            (true, Some(dst), _) if Source::Location(dst.clone()) != self.source => {
                let src = match &self.source {
                    Source::Location(l) | Source::Manifest(l) => l,
                };
                bail!(
                    "--in-place replaces each source object; the destination {dst} differs \
                     from the source {src}"
                )
            }
            (true, _, _) => Some(Output::InPlace),
            (false, Some(_), Mode::Verify) => bail!("verify takes no destination"),
            (false, None, Mode::Verify) => None,
            (false, Some(dst), _) => Some(Output::To(dst)),
            (false, None, _) => {
                bail!("no destination: give one, or --in-place to replace S3 objects")
            }
        };
        let keys = |k: Option<Arc<dyn Keyring>>| k.map_or(Keys::NotLoaded, Keys::Loaded);
        let sealing = Sealing {
            keys: keys(self.wrap_keyring),
            suite: self.suite,
            context: self.context,
            options: self.encrypt,
            pool_limits: self.pool_limits.clone(),
        };
        let opening = Opening {
            keys: keys(self.unwrap_keyring),
            options: self.decrypt,
            reproduced_context: self.reproduced_context,
            cache_max_age: self.pool_limits.max_age,
        };
        let work = match (self.mode, output) {
            (Mode::Verify, _) => Work::Verify { from: opening },
            (_, None) => bail!("no destination: give one, or --in-place to replace S3 objects"),
            (Mode::Encrypt, Some(output)) => Work::Encrypt {
                to: sealing,
                output,
            },
            (Mode::Decrypt, Some(output)) => Work::Decrypt {
                from: opening,
                output,
            },
            (Mode::Reencrypt, Some(output)) => Work::Reencrypt {
                from: opening,
                to: sealing,
                output,
            },
        };
        Ok(Job {
            work,
            source: self.source,
            filter: self.filter,
            concurrency: self.concurrency,
            dry_run: self.dry_run,
            fail_fast: self.fail_fast,
            s3: self.s3,
        })
    }
}

/// What keys a job uses, for people: the wrapping keys, else the unwrapping ones.
pub fn describe_keys(job: &Job) -> String {
    let loaded = |keys: &Keys| match keys {
        Keys::Loaded(k) => Some(k.describe()),
        Keys::NotLoaded => None,
    };
    job.work
        .sealing()
        .and_then(|s| loaded(&s.keys))
        .or_else(|| job.work.opening().and_then(|o| loaded(&o.keys)))
        .unwrap_or_else(|| "no key loaded: dry run".into())
}

/// Where objects come from and go, filters, and S3 access if anything is on S3.
async fn base_job(
    mode: Mode,
    transfer: &TransferArgs,
    global: &GlobalArgs,
    config: &Config,
) -> anyhow::Result<Draft> {
    let parse = |s: &String| Location::parse(s).map_err(|e| anyhow!(e));
    let paths = transfer
        .paths
        .iter()
        .map(parse)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let manifest = transfer.manifest.as_ref().map(parse).transpose()?;
    let in_place = transfer.in_place;
    let usage = |expected: &str| {
        anyhow!(
            "{} expects {expected}; got {} path(s)",
            command_name(mode),
            paths.len()
        )
    };
    let (source, destination) = match (&manifest, in_place, mode, paths.as_slice()) {
        (Some(m), true, _, []) => (Source::Manifest(m.clone()), None),
        (Some(m), _, Mode::Verify, []) => (Source::Manifest(m.clone()), None),
        (Some(m), false, _, [dst]) if mode != Mode::Verify => {
            (Source::Manifest(m.clone()), Some(dst.clone()))
        }
        (Some(_), ..) => {
            return Err(usage(
                "only DST with --manifest (nothing with --in-place, nothing for verify)",
            ));
        }
        (None, true, _, [src]) => (Source::Location(src.clone()), None),
        (None, true, _, [src, dst]) => (Source::Location(src.clone()), Some(dst.clone())),
        (None, false, Mode::Verify, [src]) => (Source::Location(src.clone()), None),
        (None, false, Mode::Verify, _) => return Err(usage("SRC")),
        (None, false, _, [src, dst]) => (Source::Location(src.clone()), Some(dst.clone())),
        (None, ..) => return Err(usage("SRC and DST (or SRC with --in-place)")),
    };
    let on_s3 = matches!(
        &source,
        Source::Manifest(_) | Source::Location(Location::S3 { .. })
    ) || destination.as_ref().is_some_and(Location::is_s3);
    let s3 = if on_s3 {
        Some(s3_store(global, config).await?)
    } else {
        None
    };
    let default_concurrency = if on_s3 {
        DEFAULT_CONCURRENCY_S3
    } else {
        DEFAULT_CONCURRENCY
    };
    Ok(Draft {
        mode,
        source,
        destination,
        in_place,
        filter: ObjectFilter::new(
            &flags_or_config(&transfer.include, &config.job.include),
            &flags_or_config(&transfer.exclude, &config.job.exclude),
        )?,
        wrap_keyring: None,
        unwrap_keyring: None,
        suite: AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        context: EncryptionContext::new(),
        encrypt: EncryptOptions::default(),
        decrypt: DecryptOptions::default(),
        reproduced_context: EncryptionContext::new(),
        pool_limits: pool_limits(global, config)?,
        concurrency: global
            .concurrency
            .or(config.runtime.concurrency)
            .map_or(default_concurrency, |c| c.0),
        dry_run: transfer.dry_run,
        fail_fast: transfer.fail_fast || config.runtime.fail_fast,
        s3,
    })
}

fn command_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Encrypt => "encrypt",
        Mode::Decrypt => "decrypt",
        Mode::Reencrypt => "reencrypt",
        Mode::Verify => "verify",
    }
}

/// Key references from flags (relative to the working directory), else from the
/// config file (relative to the file), with the directory they are relative to.
fn key_refs<'a>(
    flag_keys: &'a [String],
    config_keys: &'a [String],
    config: &'a Config,
) -> (&'a [String], &'a Path) {
    if flag_keys.is_empty() {
        (config_keys, config.base.as_path())
    } else {
        (flag_keys, Path::new(""))
    }
}

/// The wrapping keys as one (multi-)keyring. A dry run uses no key, so it gets none:
/// the references are only checked for syntax, and an unreadable key file or missing
/// AWS credentials do not stop it.
async fn keyring(
    flag_keys: &[String],
    config_keys: &[String],
    config: &Config,
    kms: &keyref::KmsSource,
    dry_run: bool,
) -> anyhow::Result<Option<Arc<dyn Keyring>>> {
    let (keys, base) = key_refs(flag_keys, config_keys, config);
    if dry_run {
        keyref::check_refs(keys, false)?;
        return Ok(None);
    }
    keyref::combine(keyref::keyring_from_refs(keys, base, kms).await?).map(Some)
}

/// Repeatable flags if any were given, else the config file's list.
fn flags_or_config(flags: &[String], config: &[String]) -> Vec<String> {
    if flags.is_empty() { config } else { flags }.to_vec()
}

fn write_options(
    job: &mut Draft,
    args: &WriteArgs,
    global: &GlobalArgs,
    config: &Config,
) -> anyhow::Result<()> {
    job.context = if args.context.is_empty() {
        config.job.context.clone().into()
    } else {
        parse_pairs(&args.context, "--context")?
    };
    job.suite = parse_suite(args.suite.as_deref().or(config.encrypt.suite.as_deref()))?;
    job.encrypt = EncryptOptions {
        frame_length: args
            .frame_len
            .or(config.encrypt.frame_length)
            .map_or(DEFAULT_FRAME_LENGTH, |l| l.0),
        aead: aead(global, config)?,
        ..Default::default()
    };
    Ok(())
}

async fn read_options(
    job: &mut Draft,
    flag_keys: &[String],
    config_keys: &[String],
    args: &ReadArgs,
    global: &GlobalArgs,
    config: &Config,
    kms: &keyref::KmsSource,
) -> anyhow::Result<()> {
    let (keys, base) = key_refs(flag_keys, config_keys, config);
    // As for wrapping keys, a dry run only checks the references (discovery needs
    // none) and builds no keyring.
    job.unwrap_keyring = if job.dry_run {
        keyref::check_refs(keys, args.discovery)?;
        None
    } else {
        let mut keyrings = keyref::keyring_from_refs(keys, base, kms).await?;
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
        Some(keyref::combine(keyrings)?)
    };
    job.reproduced_context = if args.reproduced_context.is_empty() {
        config.decrypt.reproduced_context.clone().into()
    } else {
        parse_pairs(&args.reproduced_context, "--reproduced-context")?
    };
    job.decrypt = decrypt_options(
        args.commitment_policy.as_deref(),
        args.max_encrypted_data_keys,
        args.max_header_size,
        args.max_frame_len,
        global,
        config,
    )?;
    Ok(())
}

/// The S3 client and transfer settings: flags over `[s3]` over defaults.
async fn s3_store(global: &GlobalArgs, config: &Config) -> anyhow::Result<S3Store> {
    let (a, c) = (&global.s3, &config.s3);
    let defaults = S3Settings::default();
    // Each value is within S3's limits already (values::PartSize, values::InFlight);
    // only how they relate is left to check.
    let part_size = a
        .part_size
        .or(c.part_size)
        .map_or(defaults.part_size, |p| p.0);
    let max_in_flight = a
        .max_in_flight
        .or(c.max_in_flight)
        .map_or(DEFAULT_MAX_IN_FLIGHT, |m| m.0);
    if max_in_flight < 2 * part_size {
        bail!(
            "--max-in-flight ({max_in_flight} bytes) must hold at least two parts \
             ({} bytes): one being read and one being written",
            2 * part_size
        );
    }
    let sse = a.sse.clone().or_else(|| c.sse.clone());
    if let Some(s) = &sse
        && s != "aws:kms"
        && s != "AES256"
    {
        bail!("--sse {s:?}: use aws:kms or AES256");
    }
    let settings = sealpipe::aws::AwsSettings {
        region: global
            .aws
            .region
            .clone()
            .or_else(|| config.aws.region.clone()),
        profile: global
            .aws
            .profile
            .clone()
            .or_else(|| config.aws.profile.clone()),
        kms_endpoint: None,
        s3_endpoint: a.s3_endpoint.clone().or_else(|| c.endpoint.clone()),
        s3_path_style: a.s3_path_style.or(c.path_style),
    };
    let client = sealpipe::aws::s3_client(&settings).await;
    Ok(S3Store::new(
        client,
        S3Settings {
            part_size,
            storage_class: a.storage_class.clone().or_else(|| c.storage_class.clone()),
            server_side_encryption: sse,
            sse_kms_key_id: a
                .sse_kms_key_id
                .clone()
                .or_else(|| c.sse_kms_key_id.clone()),
            ..defaults
        },
        ByteBudget::new(max_in_flight),
    ))
}

/// AWS settings: flags over the config file; the SDK adds the environment.
pub fn kms_source(global: &GlobalArgs, config: &Config) -> anyhow::Result<keyref::KmsSource> {
    let (a, c) = (&global.aws, &config.aws);
    let defaults = sealpipe::retry::RetryPolicy::default();
    let retry = sealpipe::retry::RetryPolicy {
        max_delay: a
            .kms_retry_max_delay
            .or(c.kms_retry_max_delay)
            .map_or(defaults.max_delay, |d| d.duration()),
        max_total_delay: a
            .kms_retry_total
            .or(c.kms_retry_total)
            .map_or(defaults.max_total_delay, |d| d.duration()),
        ..defaults
    };
    Ok(keyref::KmsSource::new(
        sealpipe::aws::AwsSettings {
            region: a.region.clone().or_else(|| c.region.clone()),
            profile: a.profile.clone().or_else(|| c.profile.clone()),
            kms_endpoint: a.kms_endpoint.clone().or_else(|| c.kms_endpoint.clone()),
            ..Default::default()
        },
        a.kms_rate.or(c.kms_rate).map(|r| r.get()),
        c.grant_tokens.clone(),
        retry,
    ))
}

fn pool_limits(global: &GlobalArgs, config: &Config) -> anyhow::Result<PoolLimits> {
    let (a, c) = (&global.aws, &config.cache);
    let defaults = PoolLimits::default();
    // Each value is in its range already (values::Age, CacheMessages, CacheBytes).
    let max_age = a
        .cache_max_age
        .or(c.max_age_seconds)
        .map_or(defaults.max_age, |s| s.duration());
    let max_messages = a
        .cache_max_messages
        .or(c.max_messages)
        .map_or(defaults.max_messages, |m| m.0);
    let max_bytes = a
        .cache_max_bytes
        .or(c.max_bytes)
        .map_or(defaults.max_bytes, |b| b.0);
    Ok(PoolLimits {
        max_age,
        max_messages,
        max_bytes,
        ..defaults
    })
}

fn decrypt_options(
    policy: Option<&str>,
    max_edks: Option<MaxDataKeys>,
    max_header: Option<HeaderSize>,
    max_frame: Option<FrameLength>,
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
            .map_or(defaults.max_encrypted_data_keys, |m| m.0),
        max_header_len: max_header
            .or(d.max_header_size)
            .map_or(defaults.max_header_len, |m| m.0),
        max_frame_length: max_frame
            .or(d.max_frame_length)
            .map_or(defaults.max_frame_length, |m| m.0),
    };
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
