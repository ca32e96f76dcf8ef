//! The server's counters, and `GET /metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::keys::{KmsStats, PoolStats};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// One route's latencies.
#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters of every request since start.
#[derive(Default)]
pub struct Metrics {
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Latency to the response's head, by route.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Refusals and failures by error code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Requests being answered now.
    pub in_flight: AtomicI64,
    /// Body bytes received.
    pub request_bytes: AtomicU64,
    /// Body bytes sent.
    pub response_bytes: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .expect("not poisoned")
            .entry((route, status))
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        let mut latency = self.latency.lock().expect("not poisoned");
        let h = latency.entry(route).or_default();
        for (count, bound) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// Counts one error by its code.
    pub fn error(&self, code: &str) {
        let mut errors = self.errors.lock().expect("not poisoned");
        match errors.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                errors.insert(code.to_string(), 1);
            }
        }
    }

    /// The exposition: the server's counters, the pools' and KMS's.
    pub fn exposition(
        &self,
        pools: &[&PoolStats],
        kms: Option<&KmsStats>,
        reloads: (u64, u64),
    ) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "serve_requests_total",
            "counter",
            "Requests answered.",
        );
        for ((route, status), n) in self.requests.lock().expect("not poisoned").iter() {
            let _ = writeln!(
                out,
                "sealpipe_serve_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        family(
            &mut out,
            "serve_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its response's head.",
        );
        for (route, h) in self.latency.lock().expect("not poisoned").iter() {
            let name = "sealpipe_serve_request_duration_seconds";
            for (count, bound) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {}", h.count);
        }
        family(
            &mut out,
            "serve_errors_total",
            "counter",
            "Refusals and failures, by code.",
        );
        for (code, n) in self.errors.lock().expect("not poisoned").iter() {
            let code = label_value(code);
            let _ = writeln!(out, "sealpipe_serve_errors_total{{code=\"{code}\"}} {n}");
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            family(out, name, "gauge", help);
            let _ = writeln!(out, "sealpipe_{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            family(out, name, "counter", help);
            let _ = writeln!(out, "sealpipe_{name} {v}");
        };
        gauge(
            &mut out,
            "serve_requests_in_flight",
            "Requests being answered now.",
            self.in_flight.load(Relaxed),
        );
        counter(
            &mut out,
            "serve_request_bytes_total",
            "Request body bytes received.",
            self.request_bytes.load(Relaxed),
        );
        counter(
            &mut out,
            "serve_response_bytes_total",
            "Response body bytes sent.",
            self.response_bytes.load(Relaxed),
        );
        let sum = |f: fn(&PoolStats) -> &AtomicU64| -> u64 {
            pools.iter().map(|p| f(p).load(Relaxed)).sum()
        };
        counter(
            &mut out,
            "data_key_cache_hits_total",
            "Messages served by a pooled or cached data key.",
            sum(|p| &p.hits),
        );
        counter(
            &mut out,
            "data_key_cache_misses_total",
            "Messages that waited for a keyring call.",
            sum(|p| &p.misses),
        );
        counter(
            &mut out,
            "data_keys_total",
            "Data keys generated or unwrapped.",
            sum(|p| &p.data_keys),
        );
        family(
            &mut out,
            "kms_requests_total",
            "counter",
            "KMS requests sent, by action.",
        );
        let (generate, encrypt, decrypt) = kms.map_or((0, 0, 0), |k| {
            (
                k.generate_data_key.load(Relaxed),
                k.encrypt.load(Relaxed),
                k.decrypt.load(Relaxed),
            )
        });
        for (action, n) in [
            ("GenerateDataKey", generate),
            ("Encrypt", encrypt),
            ("Decrypt", decrypt),
        ] {
            let _ = writeln!(
                out,
                "sealpipe_kms_requests_total{{action=\"{action}\"}} {n}"
            );
        }
        family(
            &mut out,
            "serve_token_reloads_total",
            "counter",
            "Token reloads, by result (a failed one keeps the tokens in force).",
        );
        let _ = writeln!(
            out,
            "sealpipe_serve_token_reloads_total{{result=\"ok\"}} {}",
            reloads.0
        );
        let _ = writeln!(
            out,
            "sealpipe_serve_token_reloads_total{{result=\"failed\"}} {}",
            reloads.1
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP sealpipe_{name} {help}");
    let _ = writeln!(out, "# TYPE sealpipe_{name} {kind}");
}

/// A label value as the text format needs it: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
