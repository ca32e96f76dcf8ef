//! `sealpipe run` (the job in the config file, by default the local demo) and
//! `sealpipe bench`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::Context;
use sealpipe::escape;
use sealpipe::store::{ListItem, ObjectId};

use super::keyref::{self, KmsSource};
use super::output::{say, stdout_line};
use super::settings::{Aws, BenchSettings, RunSettings};
use super::{Outcome, build, outcome, prepare_report, print_summary, run_job};

/// Runs the job in the config file (`./config.toml` unless `--config`).
pub async fn run(
    run: &RunSettings,
    aws: &Aws,
    quiet: bool,
    kms: &KmsSource,
    metrics_file: Option<super::files::ReportFile>,
) -> anyhow::Result<Outcome> {
    let settings = &run.job;
    // Before anything is written (a development key, any object): a report that cannot
    // be written must not cost a whole job.
    let report_file = prepare_report(settings)?;
    for k in &run.dev_keys {
        create_dev_key_if_missing(k, &run.dev_key_base)?;
    }
    let parts = build::parts(settings, aws, kms).await?;
    if !quiet {
        say!("sealpipe run: {} ({})", run.summary, parts.describe_keys());
    }
    let main_job = build::job(settings, parts)?;
    super::log_job_start(settings, &main_job);
    let completion = settings.completion_report.value.as_deref();
    let keys = settings.task.key_refs();
    let report = run_job(main_job, settings.dry_run, quiet, kms, completion, keys).await?;
    print_summary(&report, quiet, kms);
    if let Some(file) = metrics_file {
        super::metrics::write(file, &report, kms)?;
    }

    let mut result = outcome(&report);
    let mut verify_doc = None;
    if let Some(verify) = &run.verify {
        let decrypt = build::job(&verify.job, build::parts(&verify.job, aws, kms).await?)?;
        let check = run_job(decrypt, false, true, kms, None, &[]).await?;
        let identical = compare_trees(&verify.source, &verify.copy)?;
        let ok = check.all_succeeded() && identical.mismatched.is_empty();
        if !quiet {
            say!(
                "verify: decrypted {} objects into {}; {} identical to the source, {} differ, {} failed",
                check.objects.ok,
                escape::path(&verify.copy),
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
            "destination": escape::path(&verify.copy),
            "decrypted": check.objects.ok,
            "failed": check.objects.failed,
            "identical": identical.matched,
            "mismatched": identical.mismatched,
        }));
        if !ok {
            result = Outcome::ObjectsFailed;
        }
    }
    let mut doc = super::report_json(&report, kms)?;
    if let Some(v) = verify_doc {
        doc["verify"] = v;
    }
    if let Some(file) = report_file {
        let path = file.path().to_path_buf();
        file.commit(&doc)?;
        if !quiet {
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

/// `sealpipe bench`: in-memory seal/open throughput against the AES-GCM ceiling, or a
/// workload.
pub async fn bench(
    bench: &BenchSettings,
    aws: &Aws,
    kms: &super::keyref::KmsSource,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    if let Some(workload) = &bench.workload {
        let workload = super::build::bench_workload(aws, workload, kms).await?;
        return bench_workload(&workload, bench.json, quiet).await;
    }
    let config = &bench.config;
    if !bench.json && !quiet {
        say!(
            "measuring for about {:.0} s...",
            config.min_time.as_secs_f64() * 3.0
        );
    }
    let result = sealpipe::bench::seal_throughput(config)?;
    if bench.json {
        stdout_line(&super::json::to_string_pretty(&result)?)?;
    } else {
        stdout_line(&result.to_string())?;
    }
    Ok(Outcome::Success)
}

/// `sealpipe bench --workload`: the tree through every mode, with a line per phase and a
/// progress bar per mode while it runs (on stderr, unless quiet), then the table or the
/// JSON.
async fn bench_workload(
    workload: &sealpipe::bench::WorkloadConfig,
    json: bool,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    use sealpipe::bench::Phase;

    if !quiet {
        say!(
            "workload {} on {}: the tree (untimed), the limits, the plain copy, then {} modes",
            workload.mix,
            workload.target,
            workload.modes.len()
        );
    }
    let mut bar: Option<super::progress::Progress> = None;
    // SIGINT and SIGTERM stop the run as they stop a job, and its files are removed.
    let cancel = sealpipe::pipeline::Cancel::default();
    let signals = tokio::spawn(super::cancel_on_signal(cancel.clone()));
    // Boxed: the workload's future holds whole pipeline runs, deep enough to overflow
    // the compiler's query depth when laid out inline (as `run_job` boxes its own).
    let result = Box::pin(sealpipe::bench::run_workload(workload, &cancel, |phase| {
        // The previous mode's bar stops when dropped.
        bar = None;
        if quiet {
            return;
        }
        match phase {
            Phase::Tree => say!("writing the tree of random objects..."),
            Phase::Limits => say!("measuring the AES-GCM ceiling and memory copy bandwidth..."),
            Phase::Copy => say!("plain copy of the tree..."),
            Phase::Mode(mode, stats) => {
                say!("{}...", format!("{mode:?}").to_lowercase());
                bar = Some(super::progress::Progress::start(stats, None, false));
            }
        }
    }))
    .await;
    signals.abort();
    if let Some(bar) = bar.take() {
        bar.finish().await;
    }
    if cancel.is_cancelled() {
        if !quiet {
            say!("benchmark interrupted; the files it made were removed");
        }
        return Ok(Outcome::Interrupted);
    }
    let result = result?;
    if json {
        stdout_line(&super::json::to_string_pretty(&result)?)?;
    } else {
        stdout_line(&result.to_string())?;
    }
    Ok(Outcome::Success)
}
