//! `--metrics-file`: a job's figures in the Prometheus text exposition format (0.0.4),
//! written whole at its end, for node_exporter's textfile collector or a Pushgateway
//! (`curl --data-binary @FILE`). Every sample is labelled with the job's mode and, for
//! a split job, its shard, so one dashboard sums a fleet.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use sealpipe::pipeline::Report;

use super::files::ReportFile;
use super::keyref::KmsSource;

/// The metrics file, reserved before the job starts: one that cannot be written must
/// not cost a whole job.
pub fn prepare(path: &Path) -> anyhow::Result<ReportFile> {
    ReportFile::prepare(path)
        .with_context(|| format!("cannot write metrics {}", sealpipe::escape::path(path)))
}

/// Writes the metrics of `report` into `file` (whole or not at all).
pub fn write(file: ReportFile, report: &Report, kms: &KmsSource) -> anyhow::Result<()> {
    let shown = sealpipe::escape::path(file.path());
    file.commit_text(&exposition(report, &super::kms_counters(kms)))
        .with_context(|| format!("cannot write metrics {shown}"))
}

/// The exposition of `report`; `kms` is GenerateDataKey, Encrypt, Decrypt, throttled,
/// retries.
fn exposition(report: &Report, kms: &[u64; 5]) -> String {
    let mode = serde_json::to_value(report.mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut labels = format!("mode=\"{mode}\"");
    if let Some(shard) = report.shard {
        let _ = write!(labels, ",shard=\"{shard}\"");
    }
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        family_into(&mut out, &labels, name, kind, help, samples);
    };
    let o = &report.objects;
    family(
        "objects_total",
        "counter",
        "Objects by outcome.",
        &[
            ("outcome=\"ok\"", o.ok as f64),
            ("outcome=\"failed\"", o.failed as f64),
            ("outcome=\"conflict\"", o.conflicts as f64),
            ("outcome=\"skipped\"", o.skipped as f64),
        ],
    );
    family(
        "objects_planned",
        "gauge",
        "Objects listed (after filters and the shard).",
        &[("", o.planned as f64)],
    );
    family(
        "bytes_in_total",
        "counter",
        "Bytes read from completed objects.",
        &[("", report.bytes_in as f64)],
    );
    family(
        "bytes_out_total",
        "counter",
        "Bytes written for completed objects.",
        &[("", report.bytes_out as f64)],
    );
    family(
        "data_keys_total",
        "counter",
        "Data keys obtained from keyrings.",
        &[("", report.data_keys as f64)],
    );
    family(
        "kms_requests_total",
        "counter",
        "KMS requests by action (attempts, retries included).",
        &[
            ("action=\"GenerateDataKey\"", kms[0] as f64),
            ("action=\"Encrypt\"", kms[1] as f64),
            ("action=\"Decrypt\"", kms[2] as f64),
        ],
    );
    family(
        "kms_throttled_total",
        "counter",
        "KMS requests refused with ThrottlingException.",
        &[("", kms[3] as f64)],
    );
    family(
        "kms_retries_total",
        "counter",
        "KMS requests retried.",
        &[("", kms[4] as f64)],
    );
    family(
        "pool_messages_total",
        "counter",
        "Messages by whether a pooled data key served them.",
        &[
            ("result=\"hit\"", report.cache.hits as f64),
            ("result=\"miss\"", report.cache.misses as f64),
        ],
    );
    if let Some(s3) = &report.s3 {
        family(
            "s3_requests_total",
            "counter",
            "S3 requests (retries included).",
            &[("", s3.requests as f64)],
        );
        family(
            "s3_retries_total",
            "counter",
            "S3 requests retried.",
            &[("", s3.retries as f64)],
        );
        family(
            "s3_slowdowns_total",
            "counter",
            "S3 responses 503 SlowDown.",
            &[("", s3.slowdowns as f64)],
        );
    }
    if let Some(latency) = &report.latency {
        family(
            "object_seconds",
            "summary",
            "Time per completed object, from its start to its output committed.",
            &[
                ("quantile=\"0.5\"", latency.p50_ms / 1e3),
                ("quantile=\"0.99\"", latency.p99_ms / 1e3),
                ("quantile=\"1\"", latency.max_ms / 1e3),
            ],
        );
        // The summary's count, part of its family.
        let _ = writeln!(
            out,
            "sealpipe_object_seconds_count{{{labels}}} {}",
            latency.objects
        );
    }
    let mut gauge = |name: &str, help: &str, value: f64| {
        family_into(&mut out, &labels, name, "gauge", help, &[("", value)]);
    };
    gauge("elapsed_seconds", "Wall time of the job.", report.elapsed_s);
    gauge(
        "interrupted",
        "1 if the job was stopped before every object was processed.",
        f64::from(u8::from(report.interrupted)),
    );
    if let Some(rss) = report.peak_rss_bytes {
        gauge(
            "peak_rss_bytes",
            "Peak resident memory of the process.",
            rss as f64,
        );
    }
    out
}

/// Appends one metric family: its help, its type and its samples, each with the job's
/// `labels` and its own.
fn family_into(
    out: &mut String,
    labels: &str,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(&str, f64)],
) {
    let _ = writeln!(out, "# HELP sealpipe_{name} {help}");
    let _ = writeln!(out, "# TYPE sealpipe_{name} {kind}");
    for (extra, value) in samples {
        let sep = if extra.is_empty() { "" } else { "," };
        let _ = writeln!(out, "sealpipe_{name}{{{labels}{sep}{extra}}} {value}");
    }
}
