//! Structured log lines (`--log-format json`): one JSON object per line for each
//! object's outcome and each retried request, for log pipelines (CloudWatch, Loki,
//! Elasticsearch) to count and search, beside the completion report.
//!
//! Off unless a process turns it on: logging is the process's (the CLI's), so the
//! destination is set once for the whole process, like the retry switch in
//! [`crate::retry`]. Every line has `ts` (UTC, RFC 3339 with milliseconds) and
//! `event`; strings that came from outside (object names, error messages) are escaped
//! for terminals before JSON escapes them again.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

static LOG: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();

/// Sends every event of this process to `out`, one JSON line each; `false` if events
/// already go somewhere.
pub fn log_json_to(out: Box<dyn Write + Send>) -> bool {
    LOG.set(Mutex::new(out)).is_ok()
}

/// Whether events are logged.
pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// Logs the event `kind` with `fields`, if events are logged. A failing log never fails
/// the work it describes.
pub fn emit(kind: &str, fields: Map<String, Value>) {
    let Some(log) = LOG.get() else {
        return;
    };
    let mut line = Map::with_capacity(fields.len() + 2);
    line.insert("ts".into(), Value::String(now_rfc3339()));
    line.insert("event".into(), Value::String(kind.into()));
    line.extend(fields);
    let Ok(mut text) = serde_json::to_string(&Value::Object(line)) else {
        return;
    };
    text.push('\n');
    // One write per line under the lock: lines from many threads never interleave.
    if let Ok(mut out) = log.lock() {
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// `text` from outside (a name, an error), safe to print.
pub fn untrusted(text: &str) -> Value {
    Value::String(crate::escape::text(text).into_owned())
}

/// The time now as `2026-12-02T03:04:05.678Z`.
fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

/// `secs` since the Unix epoch as RFC 3339 UTC (the days-to-civil conversion of the
/// proleptic Gregorian calendar).
fn rfc3339(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_796_180_645, 678), "2026-12-02T03:04:05.678Z");
        assert_eq!(rfc3339(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }
}
