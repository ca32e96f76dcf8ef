//! The `sealpipe` command: parse, resolve (flags over environment over config file over
//! defaults), build library objects, run, report.

mod args;
mod build;
mod config;
mod files;
mod inspect;
mod json;
mod keyref;
mod lambda;
mod metrics;
pub mod output;
mod progress;
mod report;
mod run;
mod serve;
mod settings;
mod values;

use std::path::Path;
use std::sync::Arc;

use output::say;
use sealpipe::pipeline::{self, Cancel, Job, Mode, Report, Source, Stats};

pub use args::Cli;
use files::ReportFile;
use settings::{JobSettings, Resolved, Task};

/// How the process ends.
pub enum Outcome {
    /// Everything succeeded.
    Success,
    /// Some objects failed; the rest completed.
    ObjectsFailed,
    /// Stopped by SIGINT or SIGTERM before finishing.
    Interrupted,
}

/// Runs the parsed command line: resolves every setting, then builds and runs.
pub async fn main(cli: Cli) -> anyhow::Result<Outcome> {
    let settings = settings::resolve(&cli, &settings::process_env)?;
    let kms = build::kms_source(&settings.aws);
    if settings.log_json {
        sealpipe::events::log_json_to(Box::new(std::io::stderr()));
    }
    // JSON logs are for machines: no progress bar or notes for people among them.
    let quiet = settings.quiet.value || settings.log_json;
    match &settings.command {
        Resolved::Job(job) if job.source == Source::Tasks => {
            Box::pin(lambda::serve(job, &settings.aws, &kms)).await
        }
        Resolved::Job(job) => {
            let metrics = settings
                .metrics_file
                .as_deref()
                .map(metrics::prepare)
                .transpose()?;
            let (outcome, report) = execute(job, &settings.aws, quiet, &kms).await?;
            if let Some(file) = metrics {
                metrics::write(file, &report, &kms)?;
            }
            Ok(outcome)
        }
        Resolved::Run(run) => {
            let metrics = settings
                .metrics_file
                .as_deref()
                .map(metrics::prepare)
                .transpose()?;
            run::run(run, &settings.aws, quiet, &kms, metrics).await
        }
        Resolved::Inspect(file) => inspect::run(file),
        Resolved::MergeReports {
            files,
            json,
            output,
        } => report::merge(files, *json, output.as_deref(), quiet),
        Resolved::Bench(bench) => run::bench(bench, &settings.aws, &kms, quiet).await,
        Resolved::Serve(serve) => Box::pin(serve::run(serve, &settings.aws, &kms)).await,
    }
}

/// Runs a job with progress, prints the summary, writes the report.
async fn execute(
    settings: &JobSettings,
    aws: &settings::Aws,
    quiet: bool,
    kms: &keyref::KmsSource,
) -> anyhow::Result<(Outcome, Report)> {
    let job = build::job(settings, build::parts(settings, aws, kms).await?)?;
    log_job_start(settings, &job);
    // Before any object: a report that cannot be written must not cost a whole job.
    let report_file = prepare_report(settings)?;
    let completion = settings.completion_report.value.as_deref();
    let report = run_job(
        job,
        settings.dry_run,
        quiet,
        kms,
        completion,
        settings.task.key_refs(),
    )
    .await?;
    print_summary(&report, quiet, kms);
    if let Task::Scan { json } = settings.task
        && !settings.dry_run
    {
        print_inventory(&report, json)?;
    }
    if let Some(file) = report_file {
        file.commit(&report_json(&report, kms)?)?;
    }
    Ok((outcome(&report), report))
}

/// The job's start as a log line (`--log-format json`): what, from where to where,
/// with which keys.
fn log_job_start(settings: &JobSettings, job: &Job) {
    if !sealpipe::events::enabled() {
        return;
    }
    let mut fields = serde_json::Map::new();
    fields.insert("mode".into(), serde_json::json!(job.mode()));
    let source = settings.source.to_string();
    fields.insert("source".into(), sealpipe::events::untrusted(&source));
    if let Some(d) = &settings.destination {
        fields.insert(
            "destination".into(),
            sealpipe::events::untrusted(&d.to_string()),
        );
    }
    fields.insert(
        "wrapping_keys".into(),
        serde_json::json!(settings.task.key_refs()),
    );
    fields.insert("dry_run".into(), settings.dry_run.into());
    if let Some(shard) = &job.shard {
        fields.insert("shard".into(), serde_json::json!(shard));
    }
    sealpipe::events::emit("job", fields);
}

/// The JSON report's file (`--report`, else `[runtime] report`), reserved up front.
fn prepare_report(settings: &JobSettings) -> anyhow::Result<Option<ReportFile>> {
    settings
        .report
        .value
        .as_deref()
        .map(ReportFile::prepare)
        .transpose()
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
pub(super) fn kms_counters(kms: &keyref::KmsSource) -> [u64; 5] {
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

async fn run_job(
    job: Job,
    dry_run: bool,
    quiet: bool,
    kms: &keyref::KmsSource,
    completion_report: Option<&Path>,
    wrapping_keys: &[String],
) -> anyhow::Result<Report> {
    let stats = Arc::new(match completion_report {
        // Unbuffered: the library flushes each line itself, so the file only ever holds
        // whole lines.
        Some(path) => {
            Stats::with_completion_report(Box::new(files::create_completion_report(path)?))
        }
        None => Stats::default(),
    });
    stats.label_keys(wrapping_keys.to_vec());
    if dry_run && !quiet {
        say!(
            "dry run: key references are checked for syntax only; no key file is read and \
             no KMS client is built"
        );
    }
    let progress =
        progress::Progress::start(stats.clone(), kms.used().map(|k| k.stats.clone()), quiet);
    let cancel = Cancel::default();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    // Boxed: the job's future nests every layer of the engine (pipeline, object, ops,
    // stores), and the callers' futures would otherwise each hold all of it, deeper
    // than the compiler computes layouts (a fresh build fails, an incremental one not).
    let result = Box::pin(pipeline::run(job, stats, cancel)).await;
    signals.abort();
    progress.finish().await;
    Ok(result?)
}

/// Waits for the first SIGINT or SIGTERM; `false` at once if they cannot be caught.
pub(super) async fn stop_requested() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return false;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        true
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// Turns the first SIGINT or SIGTERM into a cooperative stop, so in-flight objects
/// remove their partial outputs instead of being killed mid-write.
pub(super) async fn cancel_on_signal(cancel: Cancel) {
    if !stop_requested().await {
        return;
    }
    say!("stopping: finishing no new objects; partial outputs are removed");
    cancel.cancel();
    // Objects waiting to retry a failed request fail now: a stop never waits out
    // the backoff against a service that keeps failing.
    sealpipe::retry::stop_retrying();
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
    // JSON logs carry every failure as its object's line; the summary is one more.
    if sealpipe::events::enabled() {
        if let Ok(serde_json::Value::Object(doc)) = report_json(report, kms) {
            sealpipe::events::emit("summary", doc);
        }
        return;
    }
    for f in &report.failures {
        say!("error: {}: {}", f.path, f.error);
    }
    if report.failures_omitted > 0 {
        say!(
            "error: ... and {} more failures (the completion report lists every object)",
            report.failures_omitted
        );
    }
    if quiet {
        return;
    }
    let partials = &report.stale_partials;
    if partials.removed > 0 {
        say!(
            "{} {} partial output(s) that interrupted runs left in the destination",
            if report.dry_run {
                "would remove"
            } else {
                "removed"
            },
            partials.removed
        );
    }
    if partials.in_use > 0 {
        say!(
            "left {} partial output(s) alone: another running job is writing them",
            partials.in_use
        );
    }
    // Resumed jobs skip most objects: show a few, count the rest.
    const SHOWN_SKIPS: usize = 20;
    for s in report.skipped.iter().take(SHOWN_SKIPS) {
        say!("skipped: {}: {}", s.path, s.error);
    }
    if report.objects.skipped > SHOWN_SKIPS as u64 {
        say!(
            "skipped: ... {} in all (the completion report lists every object)",
            report.objects.skipped
        );
    }
    if let Some(shard) = report.shard {
        say!(
            "shard {shard}: this worker takes the objects whose shard hash is {} modulo {} \
             (the counts below are its share)",
            shard.index(),
            shard.count()
        );
    }
    let verb = match report.mode {
        Mode::Encrypt => "encrypted",
        Mode::Decrypt => "decrypted",
        Mode::Reencrypt => "re-encrypted",
        Mode::Verify => "verified",
        Mode::Rewrap => "rewrapped",
        Mode::Scan => "scanned",
    };
    if report.dry_run {
        let o = &report.objects;
        say!(
            "dry run: {} objects listed ({}), {} already done or not processable, {} would be \
             {verb}{}; nothing written, no keys used",
            o.planned,
            human_bytes(report.bytes_planned),
            o.skipped,
            o.planned.saturating_sub(o.skipped + o.failed),
            match o.failed {
                0 => String::new(),
                n => format!(", {n} would fail (listed above)"),
            },
        );
        if let Some(keys) = report.distinct_data_keys {
            say!(
                "dry run: {keys} distinct data keys among them: rewrapping takes one unwrap \
                 (KMS Decrypt) per data key and one wrap (KMS Encrypt) per data key and new \
                 key, whatever the number of objects"
            );
        }
        if matches!(report.mode, Mode::Decrypt | Mode::Reencrypt | Mode::Verify) {
            say!(
                "dry run: ESDK messages share data keys (one KMS Decrypt per data key); an S3 \
                 Encryption Client object has a data key of its own, so each costs one KMS \
                 Decrypt on the way in (`sealpipe scan` counts them)"
            );
        }
        return;
    }
    // For display only: `as u64` below saturates, and the ratio is never NaN.
    let rate = report.bytes_in as f64 / report.elapsed_s.max(1e-9);
    say!(
        "{verb} {} of {} objects ({} failed, {} conflicts, {} skipped): {} in, {} out, {:.2} s, \
         {}/s, data keys: {}",
        report.objects.ok,
        report.objects.planned,
        report.objects.failed,
        report.objects.conflicts,
        report.objects.skipped,
        human_bytes(report.bytes_in),
        human_bytes(report.bytes_out),
        report.elapsed_s,
        human_bytes(rate as u64),
        report.data_keys,
    );
    if let Some(keys) = report.distinct_data_keys {
        say!("distinct data keys among the messages rewrapped: {keys}");
    }
    if kms.used().is_some() {
        let [generate, encrypt, decrypt, throttled, retries] = kms_counters(kms);
        say!(
            "KMS calls: GenerateDataKey {generate}, Encrypt {encrypt}, Decrypt {decrypt} \
             ({throttled} throttled, {retries} retries)"
        );
    }
    if let Some(s3) = &report.s3 {
        say!(
            "S3: {} requests ({} retries, {} SlowDown), {} uploads aborted, peak in flight {} \
             of {}",
            s3.requests,
            s3.retries,
            s3.slowdowns,
            s3.uploads_aborted,
            human_bytes(s3.peak_in_flight_bytes),
            human_bytes(s3.budget_bytes)
        );
    }
}

/// A scan's inventory on stdout: a table, most objects first, or its JSON.
fn print_inventory(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        let doc = serde_json::json!({
            "objects": report.objects.ok,
            "bytes": report.inventory.iter().map(|r| r.bytes).sum::<u64>(),
            "failed": report.objects.failed,
            "inventory": report.inventory,
        });
        return output::stdout_line(&serde_json::to_string_pretty(&doc)?);
    }
    output::stdout_line(&format!(
        "{:>10}  {:>10}  {:<40}  CLIENT-SIDE",
        "OBJECTS", "BYTES", "SERVER-SIDE"
    ))?;
    for row in &report.inventory {
        // The kinds hold key ARNs and names from object metadata: escaped.
        output::stdout_line(&format!(
            "{:>10}  {:>10}  {:<40}  {}",
            row.objects,
            human_bytes(row.bytes),
            sealpipe::escape::text(&row.server_side),
            sealpipe::escape::text(&row.client_side)
        ))?;
    }
    Ok(())
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
