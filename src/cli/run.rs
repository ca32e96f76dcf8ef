//! `sealpipe run` (the job in the config file, by default the local demo) and
//! `sealpipe bench`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sealpipe::pipeline::{Job, Mode};

use std::ops::ControlFlow;

use sealpipe::store::{ListItem, ObjectId};

use super::args::{
    BenchArgs, DecryptArgs, EncryptArgs, GlobalArgs, ReadArgs, ReencryptArgs, TransferArgs,
};
use super::config::Config;
use super::output::{say, stdout_line};
use super::{Outcome, job, keyref, outcome, prepare_report, print_summary, run_job};
use sealpipe::escape;

/// Runs the job in the config file (`./config.toml` unless `--config`).
pub async fn run(global: &GlobalArgs, dry_run: bool) -> anyhow::Result<Outcome> {
    let path = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config.toml"));
    let config = Config::load(&path)?;
    let kms = job::kms_source(global, &config)?;
    // Before anything is written (a development key, any object): a report that cannot
    // be written must not cost a whole job.
    let report_file = prepare_report(global, &config)?;
    let section = &config.job;
    // Local paths in the file are relative to the file; S3 locations are kept as given.
    let resolve = |s: &String| {
        if s.starts_with("s3://") {
            s.clone()
        } else {
            config.resolve(Path::new(s)).display().to_string()
        }
    };
    let source = section.source.as_ref().map(resolve);
    let destination = section.destination.as_ref().map(resolve);
    let transfer = TransferArgs {
        paths: source.iter().chain(destination.iter()).cloned().collect(),
        manifest: section.manifest.as_ref().map(resolve),
        in_place: section.in_place,
        dry_run,
        ..Default::default()
    };
    if section.create_missing_dev_key && !dry_run {
        for k in section.keys.iter().chain(&section.old_keys) {
            create_dev_key_if_missing(k, &config.base)?;
        }
    }
    let read = ReadArgs {
        discovery_partition: "aws".into(),
        ..Default::default()
    };
    let mode = section.mode.as_deref().unwrap_or("encrypt");
    let main_job = match mode {
        "encrypt" => {
            let args = EncryptArgs {
                transfer,
                ..Default::default()
            };
            job::encrypt(&args, global, &config, &kms).await?
        }
        "decrypt" => {
            let args = DecryptArgs {
                transfer,
                read,
                ..Default::default()
            };
            job::reading(Mode::Decrypt, &args, global, &config, &kms).await?
        }
        "reencrypt" => {
            let args = ReencryptArgs {
                transfer,
                read,
                ..Default::default()
            };
            job::reencrypt(&args, global, &config, &kms).await?
        }
        "verify" => {
            let args = DecryptArgs {
                transfer,
                read,
                ..Default::default()
            };
            job::reading(Mode::Verify, &args, global, &config, &kms).await?
        }
        other => bail!(
            "{}: unknown [job] mode {other:?} (encrypt, decrypt, reencrypt or verify)",
            escape::path(&path)
        ),
    };
    if !global.quiet {
        let keys = job::describe_keys(&main_job);
        say!(
            "sealpipe run: {mode} {} -> {} ({keys})",
            source
                .as_deref()
                .or(section.manifest.as_deref())
                .unwrap_or("?"),
            destination.as_deref().unwrap_or("(in place)"),
        );
    }
    let completion = config
        .runtime
        .completion_report
        .as_ref()
        .map(|p| config.resolve(p));
    let report = run_job(main_job, global.quiet, &kms, completion.as_deref()).await?;
    print_summary(&report, global.quiet, &kms);

    let mut result = outcome(&report);
    let mut verify_doc = None;
    if let (Some(verify), "encrypt", false, Some(source), Some(destination)) = (
        &section.verify_destination,
        mode,
        dry_run,
        &source,
        &destination,
    ) {
        let verify = config.resolve(verify);
        let args = DecryptArgs {
            transfer: TransferArgs {
                paths: vec![destination.clone(), verify.display().to_string()],
                ..Default::default()
            },
            read: ReadArgs {
                discovery_partition: "aws".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let decrypt: Job = job::reading(Mode::Decrypt, &args, global, &config, &kms).await?;
        let check = run_job(decrypt, true, &kms, None).await?;
        let identical = compare_trees(Path::new(source), &verify)?;
        let ok = check.all_succeeded() && identical.mismatched.is_empty();
        if !global.quiet {
            say!(
                "verify: decrypted {} objects into {}; {} identical to the source, {} differ, {} failed",
                check.objects.ok,
                escape::path(&verify),
                identical.matched,
                identical.mismatched.len(),
                check.objects.failed
            );
        }
        for f in &check.failures {
            say!("verify error: {}: {}", f.path, f.error);
        }
        for m in &identical.mismatched {
            say!("verify error: {m} differs from its source");
        }
        verify_doc = Some(serde_json::json!({
            "destination": escape::path(&verify),
            "decrypted": check.objects.ok,
            "failed": check.objects.failed,
            "identical": identical.matched,
            "mismatched": identical.mismatched,
        }));
        if !ok {
            result = Outcome::ObjectsFailed;
        }
    }
    let mut doc = super::report_json(&report, &kms)?;
    if let Some(v) = verify_doc {
        doc["verify"] = v;
    }
    if let Some(file) = report_file {
        let path = file.path().to_path_buf();
        file.commit(&doc)?;
        if !global.quiet {
            say!("report: {}", escape::path(&path));
        }
    }
    Ok(result)
}

/// Creates a random local wrapping key (mode 0600) for a `raw-aes:` reference whose
/// file does not exist, and says loudly what it is.
fn create_dev_key_if_missing(keyref: &str, base: &Path) -> anyhow::Result<()> {
    let Some(r) = keyref::split_raw_aes(keyref) else {
        return Ok(());
    };
    let path = base.join(r.path);
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    sealpipe::crypto::random_bytes(&mut *key)?;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create development key {}", escape::path(&path)))?;
    file.write_all(&*key)?;
    file.sync_all()?;
    say!(
        "WARNING: created a LOCAL DEVELOPMENT wrapping key at {} (AES-256, mode 0600).",
        escape::path(&path)
    );
    say!(
        "WARNING: it is for local use only: anyone who can read this file can decrypt the \
         output, and losing it loses the data. Use an AWS KMS key for real data."
    );
    Ok(())
}

struct TreeComparison {
    matched: u64,
    mismatched: Vec<String>,
}

/// Compares every file under `source` with the same relative path under `copy`.
fn compare_trees(source: &Path, copy: &Path) -> anyhow::Result<TreeComparison> {
    let mut result = TreeComparison {
        matched: 0,
        mismatched: Vec::new(),
    };
    let single = source.is_file();
    let mut error = None;
    sealpipe::store::list_local(source, |item| {
        let ListItem::Object(listed) = item else {
            return ControlFlow::Continue(());
        };
        let ObjectId::Local(path) = &listed.id else {
            return ControlFlow::Continue(());
        };
        let other = if single && !copy.is_dir() {
            copy.to_path_buf()
        } else {
            copy.join(listed.relative.as_path())
        };
        match same_contents(path, &other) {
            Ok(true) => result.matched += 1,
            Ok(false) => result.mismatched.push(escape::path(path)),
            Err(e) => {
                error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    match error {
        Some(e) => Err(e),
        None => Ok(result),
    }
}

fn same_contents(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return Ok(false);
    };
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (BufReader::new(fa), BufReader::new(fb));
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = ra.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        rb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// `sealpipe bench`: in-memory seal/open throughput against the AES-GCM ceiling.
pub fn bench(args: &BenchArgs, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let mut config = sealpipe::bench::BenchConfig::default();
    // Every value is in range already (values::Bench*), so the benchmark's buffers are
    // allocatable and its durations representable.
    if let Some(size) = args.size {
        config.message_size = size.0;
    }
    if let Some(l) = args.frame_len {
        config.frame_length = l.0;
    }
    if let Some(t) = args.threads {
        config.threads = t.0;
    }
    if let Some(s) = args.seconds {
        config.min_time = s.duration();
    }
    if let Some(a) = &global.aead {
        config.aead = a.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    }
    if !args.json && !global.quiet {
        say!(
            "measuring for about {:.0} s...",
            config.min_time.as_secs_f64() * 3.0
        );
    }
    let result = sealpipe::bench::seal_throughput(&config)?;
    if args.json {
        stdout_line(&super::json::to_string_pretty(&result)?)?;
    } else {
        stdout_line(&result.to_string())?;
    }
    Ok(Outcome::Success)
}
