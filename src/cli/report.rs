//! `sealpipe report merge`: one summary of a split job's worker reports.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sealpipe::escape;
use sealpipe::pipeline::{CompletionRow, merge as merge_reports};
use serde_json::Value;

use super::Outcome;
use super::files::ReportFile;
use super::output::say;

pub fn merge(
    files: &[PathBuf],
    json: bool,
    output: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<Outcome> {
    let mut seen = std::collections::BTreeSet::new();
    for file in files {
        let same = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        anyhow::ensure!(
            seen.insert(same),
            "{} is given twice: give each report once",
            escape::path(file)
        );
    }
    // Reserved first: a merged report that cannot be written fails before anything.
    let output = output.map(ReportFile::prepare).transpose()?;
    let mut reports = Vec::new();
    let mut completions = Vec::new();
    for file in files {
        let shown = escape::path(file);
        if file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            completions.push((shown, completion_rows(file)?));
        } else {
            let bytes = read_report(file).with_context(|| format!("cannot read {shown}"))?;
            let report: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{shown} is not a JSON report"))?;
            reports.push((shown, report));
        }
    }
    let merged = merge_reports(&reports, &completions)?;
    if json {
        super::output::stdout_line(&super::json::to_string_pretty(&merged.report)?)?;
    } else if !quiet {
        print_summary(&merged.report);
    }
    for problem in &merged.problems {
        say!("incomplete: {problem}");
    }
    if let Some(file) = output {
        file.commit(&merged.report)?;
    }
    Ok(if merged.problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::ObjectsFailed
    })
}

/// A worker's JSON report: a regular file of at most [`MAX_REPORT`] bytes (a report
/// lists at most 10,000 failures and 1,000 skips), so that `/dev/zero` or a wrong,
/// huge file is refused instead of read without end.
fn read_report(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    const MAX_REPORT: u64 = 256 << 20;
    // Looked at before opening: opening a FIFO waits for a writer.
    anyhow::ensure!(std::fs::metadata(path)?.is_file(), "not a regular file");
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT + 1).read_to_end(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_REPORT,
        "larger than {} MiB, which no sealpipe report is",
        MAX_REPORT >> 20
    );
    Ok(bytes)
}

/// The rows of a completion report: bucket, key, version, status, code, message.
fn completion_rows(path: &Path) -> anyhow::Result<Vec<CompletionRow>> {
    let shown = escape::path(path);
    let regular = std::fs::metadata(path).with_context(|| format!("cannot read {shown}"))?;
    anyhow::ensure!(regular.is_file(), "cannot read {shown}: not a regular file");
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    reader
        .records()
        .enumerate()
        .map(|(i, row)| {
            let row = row.with_context(|| format!("{shown} line {}", i + 1))?;
            anyhow::ensure!(
                row.len() == 6,
                "{shown} line {}: {} fields, not the 6 of a completion report",
                i + 1,
                row.len()
            );
            Ok(row.iter().map(str::to_string).collect())
        })
        .collect()
}

fn print_summary(report: &Value) {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let o = &report["objects"];
    if let Some(shards) = report.get("shards") {
        say!(
            "shards: {} of {} reported",
            shards["reported"].as_array().map_or(0, Vec::len),
            n(&shards["count"])
        );
    }
    if !o.is_null() {
        say!(
            "{}: {} of {} objects ok ({} failed, {} conflicts, {} skipped), {} bytes in, {} \
             out, data keys {}, KMS GenerateDataKey {} Decrypt {}; slowest worker {:.1} s",
            report["mode"].as_str().unwrap_or("job"),
            n(&o["ok"]),
            n(&o["planned"]),
            n(&o["failed"]),
            n(&o["conflicts"]),
            n(&o["skipped"]),
            n(&report["bytes_in"]),
            n(&report["bytes_out"]),
            n(&report["data_keys"]),
            n(&report["kms"]["GenerateDataKey"]),
            n(&report["kms"]["Decrypt"]),
            report["elapsed_s"].as_f64().unwrap_or(0.0),
        );
    }
    if let Some(c) = report.get("completion") {
        say!(
            "completion reports: {} files, {} rows, {} distinct objects",
            n(&c["files"]),
            n(&c["rows"]),
            n(&c["objects"])
        );
    }
    for f in report["failures"].as_array().into_iter().flatten().take(20) {
        say!(
            "error: {}{}: {}",
            f["shard"]
                .as_str()
                .map(|s| format!("[shard {s}] "))
                .unwrap_or_default(),
            f["path"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("?")
        );
    }
}
