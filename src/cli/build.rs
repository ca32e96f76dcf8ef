//! The high stage: clients, stores, keyrings and the library's [`Job`], built from
//! resolved [`settings`](super::settings) alone.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use anyhow::bail;
use sealpipe::aws::{AwsSettings, S3Client};
use sealpipe::bench::{BenchKeys, S3Target, Target, WorkloadConfig};
use sealpipe::format::DecodeLimits;
use sealpipe::keys::{DiscoveryFilter, KeepPolicy, Keyring, KmsDiscoveryKeyring, PoolLimits};
use sealpipe::pipeline::{
    Job, Keys, ObjectFilter, Opening, Output, Rewrapping, Sealing, Source, Work,
};
use sealpipe::retry::RetryPolicy;
use sealpipe::store::{ByteBudget, S3Settings, S3Store};
use sealpipe::stream::{DecryptOptions, EncryptOptions, HeaderNonce};

use super::keyref::{self, KmsSource};
use super::settings::{
    Aws, BenchTarget, BenchWorkload, JobSettings, KeyRefs, Reading, S3Transfer, Task, Writing,
};

/// The KMS context's settings; clients are built on first use.
pub fn kms_source(aws: &Aws) -> KmsSource {
    let retry = RetryPolicy {
        max_delay: aws.kms_retry_max_delay.value,
        max_total_delay: aws.kms_retry_total.value,
        ..RetryPolicy::default()
    };
    KmsSource::new(
        AwsSettings {
            region: aws.region.value.clone(),
            profile: aws.profile.value.clone(),
            kms_endpoint: aws.kms_endpoint.value.clone(),
            ..Default::default()
        },
        aws.kms_rate.value,
        aws.grant_tokens.clone(),
        retry,
    )
}

/// What a job is made of besides its settings.
pub struct Parts {
    s3: Option<S3Store>,
    filter: ObjectFilter,
    wrap_keyring: Option<Arc<dyn Keyring>>,
    unwrap_keyring: Option<Arc<dyn Keyring>>,
}

impl Parts {
    /// The keys the job loaded, for a human.
    pub fn describe_keys(&self) -> String {
        self.wrap_keyring
            .as_ref()
            .or(self.unwrap_keyring.as_ref())
            .map(|k| k.describe())
            .unwrap_or_else(|| "no key loaded: dry run".into())
    }
}

/// Builds the S3 store (if the job touches S3), the filter and the keyrings.
pub async fn parts(job: &JobSettings, aws: &Aws, kms: &KmsSource) -> anyhow::Result<Parts> {
    let s3 = match &job.s3 {
        Some(transfer) => Some(s3_store(aws, transfer).await),
        None => None,
    };
    let filter = ObjectFilter::new(&job.include.value, &job.exclude.value)?;
    let wrap_keyring = match job.task.writing() {
        Some(w) => wrapping(&w.keys, kms, job.dry_run).await?,
        None => None,
    };
    let unwrap_keyring = match job.task.reading() {
        Some(r) => unwrapping(r, kms, job.dry_run).await?,
        None => None,
    };
    Ok(Parts {
        s3,
        filter,
        wrap_keyring,
        unwrap_keyring,
    })
}

/// The library's job, from the resolved settings and what was built for them. What
/// the library cannot represent (a verify job with a destination, a job that writes
/// with nowhere to write, an in-place job naming another destination) is refused here,
/// in the user's terms.
pub fn job(settings: &JobSettings, parts: Parts) -> anyhow::Result<Job> {
    let output = match (&settings.task, settings.in_place, &settings.destination) {
        (Task::Verify(_), true, _) => bail!("verify writes nothing; drop --in-place"),
        (Task::Verify(_), false, Some(_)) => bail!("verify takes no destination"),
        (Task::Verify(_), false, None) => None,
        (Task::Scan { .. }, true, _) => bail!("scan writes nothing; drop --in-place"),
        (Task::Scan { .. }, false, Some(_)) => bail!("scan takes no destination"),
        (Task::Scan { .. }, false, None) => None,
        (_, true, Some(dst)) if Source::Location(dst.clone()) != settings.source => {
            let src = &settings.source;
            bail!(
                "--in-place replaces each source object; the destination {dst} differs from \
                 the source {src}"
            )
        }
        (_, true, _) => Some(Output::InPlace),
        (_, false, Some(dst)) => Some(Output::To(dst.clone())),
        (_, false, None) => {
            bail!("no destination: give one, or --in-place to replace S3 objects")
        }
    };
    let keys = |k: Option<Arc<dyn Keyring>>| k.map_or(Keys::NotLoaded, Keys::Loaded);
    let aead = settings.aead.value;
    let pool_limits = PoolLimits {
        max_age: settings.max_key_age.value,
        max_messages: settings.max_key_messages.value,
        max_bytes: settings.max_key_bytes.value,
        ..PoolLimits::default()
    };
    let sealing = |w: &Writing| Sealing {
        keys: keys(parts.wrap_keyring.clone()),
        suite: w.suite.value,
        context: w.context.value.clone(),
        options: EncryptOptions {
            frame_length: w.frame_length.value,
            aead,
            ..Default::default()
        },
        pool_limits: pool_limits.clone(),
    };
    let opening = |r: &Reading| Opening {
        keys: keys(parts.unwrap_keyring.clone()),
        options: DecryptOptions {
            commitment_policy: r.commitment_policy.value,
            limits: DecodeLimits {
                max_encrypted_data_keys: r.max_encrypted_data_keys.value,
                max_header_len: r.max_header_len.value,
                max_frame_length: r.max_frame_length.value,
            },
            aead,
        },
        reproduced_context: r.reproduced_context.value.clone(),
        cache_max_age: pool_limits.max_age,
        source_format: r.source_format.value,
    };
    let work = match (&settings.task, output) {
        (Task::Verify(r), _) => Work::Verify { from: opening(r) },
        (Task::Scan { .. }, _) => Work::Scan,
        (Task::Encrypt(w), Some(output)) => Work::Encrypt {
            to: sealing(w),
            output,
        },
        (Task::Decrypt(r), Some(output)) => Work::Decrypt {
            from: opening(r),
            output,
        },
        (Task::Reencrypt { read, write }, Some(output)) => Work::Reencrypt {
            from: opening(read),
            to: sealing(write),
            output,
        },
        (Task::Rewrap { read, rewrap }, Some(output)) => Work::Rewrap {
            from: opening(read),
            to: Rewrapping {
                new_keys: parts.wrap_keyring.clone().map(Keys::Loaded).or_else(|| {
                    // A dry run loads no key; the references were checked.
                    (settings.dry_run && !rewrap.write.keys.refs.value.is_empty())
                        .then_some(Keys::NotLoaded)
                }),
                keep: KeepPolicy {
                    keep_existing: rewrap.keep_existing,
                    drop: rewrap.drop_keys.clone(),
                },
                expected_keys: rewrap
                    .write
                    .keys
                    .refs
                    .value
                    .iter()
                    .map(|r| keyref::recorded_name(r))
                    .collect(),
                reencrypt_signed: rewrap.reencrypt_signed.then(|| sealing(&rewrap.write)),
                copy_above: rewrap.copy_threshold,
                header_nonce: if rewrap.allow_header_nonce_reuse {
                    HeaderNonce::AllowReuse
                } else {
                    HeaderNonce::Fresh
                },
            },
            output,
        },
        (_, None) => bail!("no destination: give one, or --in-place to replace S3 objects"),
    };
    Ok(Job {
        work,
        source: settings.source.clone(),
        filter: parts.filter,
        shard: settings.shard.as_ref().map(|s| s.value),
        concurrency: settings.concurrency.value,
        dry_run: settings.dry_run,
        fail_fast: settings.fail_fast.value,
        s3: parts.s3,
    })
}

/// The wrapping keys as one (multi-)keyring. A dry run uses no key, so it gets none:
/// the references are only checked for syntax, and an unreadable key file or missing
/// AWS credentials do not stop it.
async fn wrapping(
    keys: &KeyRefs,
    kms: &KmsSource,
    dry_run: bool,
) -> anyhow::Result<Option<Arc<dyn Keyring>>> {
    if dry_run {
        keyref::check_refs(&keys.refs.value, false)?;
        return Ok(None);
    }
    let keyrings = keyref::keyring_from_refs(&keys.refs.value, &keys.base, kms).await?;
    keyref::combine(keyrings).map(Some)
}

/// The unwrapping keys, plus KMS discovery if asked for. As for wrapping keys, a dry
/// run only checks the references (discovery needs none) and builds no keyring.
async fn unwrapping(
    read: &Reading,
    kms: &KmsSource,
    dry_run: bool,
) -> anyhow::Result<Option<Arc<dyn Keyring>>> {
    let keys = &read.keys;
    if dry_run {
        keyref::check_refs(&keys.refs.value, read.discovery)?;
        return Ok(None);
    }
    let mut keyrings = keyref::keyring_from_refs(&keys.refs.value, &keys.base, kms).await?;
    if read.discovery {
        let filter = (!read.discovery_accounts.is_empty()).then(|| DiscoveryFilter {
            partition: read.discovery_partition.clone(),
            accounts: read.discovery_accounts.clone(),
        });
        keyrings.push(Arc::new(KmsDiscoveryKeyring::new(
            filter,
            kms.context().await.clone(),
        )));
    }
    keyref::combine(keyrings).map(Some)
}

/// The S3 client and store.
async fn s3_store(aws: &Aws, s3: &S3Transfer) -> S3Store {
    let (client, settings) = s3_client(aws, s3).await;
    S3Store::new(client, settings, ByteBudget::new(s3.max_in_flight.value))
}

/// The S3 client, and the store's settings.
async fn s3_client(aws: &Aws, s3: &S3Transfer) -> (S3Client, S3Settings) {
    let settings = AwsSettings {
        region: aws.region.value.clone(),
        profile: aws.profile.value.clone(),
        kms_endpoint: None,
        s3_endpoint: s3.endpoint.value.clone(),
        s3_path_style: s3.path_style.value,
    };
    let client = sealpipe::aws::s3_client(&settings).await;
    let settings = S3Settings {
        part_size: s3.part_size.value,
        storage_class: s3.storage_class.value.clone(),
        server_side_encryption: s3.sse.value.clone(),
        sse_kms_key_id: s3.sse_kms_key_id.value.clone(),
        ..S3Settings::default()
    };
    (client, settings)
}

/// The library's workload from the resolved one: builds the S3 client of an S3 target,
/// and the keyrings of `--key` and `--new-key`.
pub async fn bench_workload(
    aws: &Aws,
    w: &BenchWorkload,
    kms: &KmsSource,
) -> anyhow::Result<WorkloadConfig> {
    let keys = match &w.keys {
        None => None,
        Some((first, second)) => {
            let first = wrapping(first, kms, false).await?;
            let second = wrapping(second, kms, false).await?;
            let kms_calls = kms.used().map(|context| {
                let stats = context.stats.clone();
                Arc::new(move || {
                    stats.generate_data_key.load(Relaxed)
                        + stats.encrypt.load(Relaxed)
                        + stats.decrypt.load(Relaxed)
                }) as Arc<dyn Fn() -> u64 + Send + Sync>
            });
            first.zip(second).map(|(first, second)| BenchKeys {
                first,
                second,
                kms_calls,
            })
        }
    };
    let target = match &w.target {
        BenchTarget::Local(dir) => Target::Local(dir.clone()),
        BenchTarget::S3 {
            bucket,
            prefix,
            transfer,
        } => {
            let (client, settings) = s3_client(aws, transfer).await;
            Target::S3(Box::new(S3Target {
                client,
                settings,
                max_in_flight: transfer.max_in_flight.value,
                bucket: bucket.clone(),
                prefix: prefix.clone(),
            }))
        }
    };
    Ok(WorkloadConfig {
        mix: w.mix.clone(),
        target,
        modes: w.modes.clone(),
        concurrency: w.concurrency,
        keys,
        pool_limits: w.pool_limits.clone(),
        aead: w.aead,
    })
}
