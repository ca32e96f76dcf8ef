//! `sealpipe run` (the job in the config file, by default the local demo) and
//! `sealpipe bench`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sealpipe::pipeline::Job;

use super::args::{BenchArgs, DecryptArgs, EncryptArgs, GlobalArgs};
use super::config::Config;
use super::{
    Outcome, decrypt_job, encrypt_job, keyref, outcome, print_summary, run_job, write_report,
};

/// Runs the job in the config file (`./config.toml` unless `--config`).
pub async fn run(global: &GlobalArgs, dry_run: bool) -> anyhow::Result<Outcome> {
    let path = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("config.toml"));
    let config = Config::load(&path)?;
    let kms = super::kms_source(global, &config)?;
    let job = &config.job;
    let (Some(source), Some(destination)) = (&job.source, &job.destination) else {
        bail!("{}: [job] needs source and destination", path.display());
    };
    let (source, destination) = (config.resolve(source), config.resolve(destination));
    if job.create_missing_dev_key && !dry_run {
        for k in &job.keys {
            create_dev_key_if_missing(k, &config.base)?;
        }
    }
    let mode = job.mode.as_deref().unwrap_or("encrypt");
    let main_job = match mode {
        "encrypt" => {
            let args = EncryptArgs {
                src: source.clone(),
                dst: destination.clone(),
                keys: vec![],
                context: vec![],
                suite: None,
                frame_len: None,
                dry_run,
            };
            encrypt_job(&args, global, &config, &kms).await?
        }
        "decrypt" => {
            decrypt_job(
                &decrypt_args(&source, &destination, dry_run),
                global,
                &config,
                &kms,
            )
            .await?
        }
        other => bail!(
            "{}: unknown [job] mode {other:?} (encrypt or decrypt)",
            path.display()
        ),
    };
    if !global.quiet {
        eprintln!(
            "sealpipe run: {mode} {} -> {} ({})",
            source.display(),
            destination.display(),
            main_job.keyring.describe()
        );
    }
    let report = run_job(main_job, global.quiet, &kms).await?;
    print_summary(&report, global.quiet, &kms);

    let mut result = outcome(&report);
    let mut verify_doc = None;
    if let (Some(verify), "encrypt", false) = (&job.verify_destination, mode, dry_run) {
        let verify = config.resolve(verify);
        let decrypt: Job = decrypt_job(
            &decrypt_args(&destination, &verify, false),
            global,
            &config,
            &kms,
        )
        .await?;
        let check = run_job(decrypt, true, &kms).await?;
        let identical = compare_trees(&source, &verify)?;
        let ok = check.all_succeeded() && identical.mismatched.is_empty();
        if !global.quiet {
            eprintln!(
                "verify: decrypted {} objects into {}; {} identical to the source, {} differ, {} failed",
                check.objects.ok,
                verify.display(),
                identical.matched,
                identical.mismatched.len(),
                check.objects.failed
            );
        }
        for f in &check.failures {
            eprintln!("verify error: {}: {}", f.path, f.error);
        }
        for m in &identical.mismatched {
            eprintln!("verify error: {m} differs from its source");
        }
        verify_doc = Some(serde_json::json!({
            "destination": verify.display().to_string(),
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
    if let Some(path) = global
        .report
        .clone()
        .or_else(|| config.runtime.report.as_ref().map(|p| config.resolve(p)))
    {
        write_report(&path, &doc)?;
        if !global.quiet {
            eprintln!("report: {}", path.display());
        }
    }
    Ok(result)
}

fn decrypt_args(src: &Path, dst: &Path, dry_run: bool) -> DecryptArgs {
    DecryptArgs {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        keys: vec![],
        reproduced_context: vec![],
        discovery: false,
        discovery_account: vec![],
        discovery_partition: "aws".into(),
        commitment_policy: None,
        max_encrypted_data_keys: None,
        max_header_size: None,
        max_frame_len: None,
        dry_run,
    }
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
        .with_context(|| format!("cannot create development key {}", path.display()))?;
    file.write_all(&*key)?;
    file.sync_all()?;
    eprintln!(
        "WARNING: created a LOCAL DEVELOPMENT wrapping key at {} (AES-256, mode 0600).\n\
         WARNING: it is for local use only: anyone who can read this file can decrypt the \
         output, and losing it loses the data. Use an AWS KMS key for real data.",
        path.display()
    );
    Ok(())
}

struct TreeComparison {
    matched: u64,
    mismatched: Vec<String>,
}

/// Compares every file under `source` with the same relative path under `copy`.
fn compare_trees(source: &Path, copy: &Path) -> anyhow::Result<TreeComparison> {
    let listing = sealpipe::store::list_local(source)?;
    let mut result = TreeComparison {
        matched: 0,
        mismatched: Vec::new(),
    };
    for object in listing.objects {
        let other = sealpipe::store::plan_destination(source, copy, &object);
        if same_contents(&object.path, &other)? {
            result.matched += 1;
        } else {
            result.mismatched.push(object.path.display().to_string());
        }
    }
    Ok(result)
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
    if let Some(size) = args.size {
        config.message_size = size;
    }
    if let Some(l) = args.frame_len {
        config.frame_length = l;
    }
    if let Some(t) = args.threads {
        config.threads = t;
    }
    if let Some(s) = args.seconds {
        config.min_time = Duration::from_secs_f64(s);
    }
    if let Some(a) = &global.aead {
        config.aead = a.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    }
    if !args.json && !global.quiet {
        eprintln!(
            "measuring for about {:.0} s...",
            config.min_time.as_secs_f64() * 3.0
        );
    }
    let result = sealpipe::bench::seal_throughput(&config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("{result}");
    }
    Ok(Outcome::Success)
}
