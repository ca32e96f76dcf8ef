//! The reports of a job's workers, merged into one: `sealpipe report merge`.
//!
//! Each worker of a split job (`--shard I/N`) writes its own JSON report (and
//! completion CSV). Merged, they say whether the whole job is done: every shard
//! present once, every object succeeded, no object processed by two workers.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Failures and skips listed in a merged report, at most (as in one worker's).
const LISTED: usize = 10_000;

/// Why reports cannot be merged at all: they are not of one job.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotOneJob(String);

/// A merged report, and what keeps the job from being complete.
#[derive(Debug)]
pub struct Merged {
    /// The merged report (the fields of a worker's, summed or combined, plus `shards`,
    /// `workers`, `completion` and `problems`).
    pub report: Value,
    /// Missing shards, failed or interrupted workers, objects done twice: empty when
    /// the job is complete.
    pub problems: Vec<String>,
}

/// One completion-report row: bucket, key, version, status, error code, message.
pub type CompletionRow = Vec<String>;

/// Merges worker reports (`(name, report)`, name for messages: the file) and the rows
/// of their completion reports (`(name, rows)`).
pub fn merge(
    reports: &[(String, Value)],
    completions: &[(String, Vec<CompletionRow>)],
) -> Result<Merged, NotOneJob> {
    if reports.is_empty() && completions.is_empty() {
        return Err(NotOneJob("no reports to merge".into()));
    }
    let mut problems = Vec::new();
    let mut merged = Map::new();
    let mut workers = Vec::new();
    let mut failures = Vec::new();
    let mut inventory: std::collections::BTreeMap<(String, String), (u64, u64)> =
        std::collections::BTreeMap::new();
    let mut skipped = Vec::new();
    let mut omitted = 0u64;
    let mut shards: Option<(u64, BTreeMap<u64, String>)> = None;
    let mut divided_by: Option<Value> = None;
    let mut sharded = None;
    for (name, report) in reports {
        let field = |key: &str| {
            report.get(key).ok_or_else(|| {
                NotOneJob(format!("{name} is not a sealpipe job report (no {key:?})"))
            })
        };
        let (mode, objects) = (field("mode")?, field("objects")?);
        same(&mut merged, "mode", mode, name)?;
        same(&mut merged, "dry_run", field("dry_run")?, name)?;
        let shard = report.get("shard").filter(|s| !s.is_null());
        if *sharded.get_or_insert(shard.is_some()) != shard.is_some() {
            return Err(NotOneJob(format!(
                "{name} is {} but the reports before it are {}: merge the reports of one \
                 split job",
                if shard.is_some() {
                    "one shard's report"
                } else {
                    "a whole job's report"
                },
                if shard.is_some() { "not" } else { "shards'" },
            )));
        }
        let shard_name = match shard {
            Some(s) => {
                let (Some(index), Some(count)) = (
                    s.get("index").and_then(Value::as_u64),
                    s.get("count").and_then(Value::as_u64),
                ) else {
                    return Err(NotOneJob(format!(
                        "{name}: a shard without index and count"
                    )));
                };
                let by = s.get("by").cloned().unwrap_or(json!("hash"));
                if let Some(first) = divided_by.replace(by.clone())
                    && first != by
                {
                    return Err(NotOneJob(format!(
                        "{name} is divided by {by}, the reports before it by {first}: \
                         workers dividing one job differently do not cover it once"
                    )));
                }
                let (n, seen) = shards.get_or_insert_with(|| (count, BTreeMap::new()));
                if *n != count {
                    return Err(NotOneJob(format!(
                        "{name} is shard {index}/{count}, but the reports before it are of \
                         {n} shards"
                    )));
                }
                if let Some(first) = seen.insert(index, name.clone()) {
                    return Err(NotOneJob(format!(
                        "shard {index}/{count} is reported twice, by {first} and {name}: \
                         give each shard's latest report once"
                    )));
                }
                Some(format!("{index}/{count}"))
            }
            None => None,
        };
        let count = |key: &str| objects.get(key).and_then(Value::as_u64).unwrap_or(0);
        let interrupted = report.get("interrupted") == Some(&Value::Bool(true));
        let who = shard_name
            .as_ref()
            .map_or_else(|| name.clone(), |s| format!("shard {s} ({name})"));
        if interrupted {
            problems.push(format!("{who} was interrupted before it finished"));
        }
        if count("failed") > 0 || count("conflicts") > 0 {
            problems.push(format!(
                "{who}: {} objects failed, {} conflicts",
                count("failed"),
                count("conflicts")
            ));
        }
        workers.push(json!({
            "report": name,
            "shard": shard_name,
            "objects": objects,
            "interrupted": interrupted,
            "elapsed_s": report.get("elapsed_s"),
        }));
        for (list, into) in [("failures", &mut failures), ("skipped", &mut skipped)] {
            for entry in report
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mut entry = entry.clone();
                if let (Some(s), Some(obj)) = (&shard_name, entry.as_object_mut()) {
                    obj.insert("shard".into(), json!(s));
                }
                into.push(entry);
            }
        }
        omitted += report
            .get("failures_omitted")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        for key in [
            "objects",
            "bytes_planned",
            "bytes_in",
            "bytes_out",
            "data_keys",
            "distinct_data_keys",
            "cache",
            "kms",
            "s3",
            "stale_partials",
        ] {
            if let Some(v) = report.get(key).filter(|v| !v.is_null()) {
                add(merged.entry(key).or_insert(Value::Null), v);
            }
        }
        // The fleet's wall time and the largest worker: what a deadline and a machine
        // size are planned by.
        for key in ["elapsed_s", "peak_rss_bytes"] {
            if let Some(v) = report.get(key).and_then(Value::as_f64) {
                let slot = merged.entry(key).or_insert(json!(v));
                if slot.as_f64().is_some_and(|old| v > old) {
                    *slot = json!(v);
                }
            }
        }
        // A scan's inventory: the shards' rows of one kind add up.
        for row in report
            .get("inventory")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let num = |k: &str| row.get(k).and_then(Value::as_u64).unwrap_or(0);
            let tally = inventory
                .entry((text("server_side"), text("client_side")))
                .or_insert((0u64, 0u64));
            tally.0 += num("objects");
            tally.1 += num("bytes");
        }
        if let Some(latency) = report.get("latency").filter(|l| l.is_object()) {
            let slot = merged
                .entry("latency")
                .or_insert_with(|| json!({"objects": 0, "max_ms": 0.0, "worst_p99_ms": 0.0}));
            let get = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            slot["objects"] = json!(get(slot, "objects") as u64 + get(latency, "objects") as u64);
            slot["max_ms"] = json!(get(slot, "max_ms").max(get(latency, "max_ms")));
            slot["worst_p99_ms"] = json!(get(slot, "worst_p99_ms").max(get(latency, "p99_ms")));
        }
    }
    if let Some((count, seen)) = &shards {
        let missing: Vec<u64> = (0..*count).filter(|i| !seen.contains_key(i)).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{} of {count} shards have no report: {}",
                missing.len(),
                list(&missing)
            ));
        }
        merged.insert(
            "shards".into(),
            json!({"count": count, "reported": seen.keys().collect::<Vec<_>>(), "missing": missing}),
        );
    }
    if !inventory.is_empty() {
        let mut rows: Vec<_> = inventory.into_iter().collect();
        rows.sort_by_key(|(_, (objects, _))| std::cmp::Reverse(*objects));
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|((server_side, client_side), (objects, bytes))| {
                json!({"server_side": server_side, "client_side": client_side,
                       "objects": objects, "bytes": bytes})
            })
            .collect();
        merged.insert("inventory".into(), Value::Array(rows));
    }
    let completion = merge_completions(completions, &mut problems);
    if let Some(c) = completion {
        merged.insert("completion".into(), c);
    }
    omitted += failures.len().saturating_sub(LISTED) as u64;
    failures.truncate(LISTED);
    skipped.truncate(LISTED);
    merged.insert("failures".into(), Value::Array(failures));
    merged.insert("failures_omitted".into(), json!(omitted));
    merged.insert("skipped".into(), Value::Array(skipped));
    merged.insert("workers".into(), Value::Array(workers));
    merged.insert("problems".into(), json!(problems));
    Ok(Merged {
        report: Value::Object(merged),
        problems,
    })
}

/// Counts the completion rows by status and finds objects in more than one worker's.
fn merge_completions(
    completions: &[(String, Vec<CompletionRow>)],
    problems: &mut Vec<String>,
) -> Option<Value> {
    if completions.is_empty() {
        return None;
    }
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut owner: BTreeMap<(String, String, String), &str> = BTreeMap::new();
    let mut twice: BTreeSet<String> = BTreeSet::new();
    let mut rows = 0u64;
    for (name, file_rows) in completions {
        for row in file_rows {
            let cell = |i: usize| row.get(i).cloned().unwrap_or_default();
            rows += 1;
            *by_status.entry(cell(3)).or_default() += 1;
            let object = (cell(0), cell(1), cell(2));
            if let Some(first) = owner.insert(object.clone(), name)
                && first != name.as_str()
            {
                twice.insert(format!(
                    "{}/{} ({first} and {name})",
                    crate::escape::text(&object.0),
                    crate::escape::text(&object.1)
                ));
            }
        }
    }
    if !twice.is_empty() {
        problems.push(format!(
            "{} objects are in the completion reports of two workers, e.g. {}",
            twice.len(),
            twice.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Some(json!({
        "files": completions.len(),
        "rows": rows,
        "objects": owner.len(),
        "by_status": by_status,
        "in_two_reports": twice.len(),
    }))
}

/// Sets `merged[key]` to `value`, or fails if another report said otherwise.
fn same(
    merged: &mut Map<String, Value>,
    key: &str,
    value: &Value,
    name: &str,
) -> Result<(), NotOneJob> {
    match merged.get(key) {
        Some(v) if v != value => Err(NotOneJob(format!(
            "{name} has {key} {value}, the reports before it {v}: merge the reports of one job"
        ))),
        Some(_) => Ok(()),
        None => {
            merged.insert(key.into(), value.clone());
            Ok(())
        }
    }
}

/// Adds `from` into `into`: numbers summed, objects key by key.
fn add(into: &mut Value, from: &Value) {
    match (into, from) {
        (slot @ Value::Null, v) => *slot = v.clone(),
        (Value::Number(a), Value::Number(b)) => {
            *a = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => x.saturating_add(y).into(),
                _ => serde_json::Number::from_f64(
                    a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0),
                )
                .unwrap_or_else(|| 0.into()),
            };
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                add(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => {}
    }
}

/// `0, 3, 5` (the first 20, then how many more).
fn list(indices: &[u64]) -> String {
    let shown: Vec<String> = indices.iter().take(20).map(u64::to_string).collect();
    match indices.len() {
        n if n > 20 => format!("{} and {} more", shown.join(", "), n - 20),
        _ => shown.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(shard: Option<(u64, u64)>, ok: u64, failed: u64) -> Value {
        json!({
            "mode": "encrypt", "dry_run": false, "interrupted": false,
            "objects": {"planned": ok + failed, "ok": ok, "failed": failed, "conflicts": 0, "skipped": 0},
            "bytes_in": ok * 10, "bytes_out": ok * 20, "bytes_planned": ok * 10, "data_keys": 1,
            "elapsed_s": ok as f64, "peak_rss_bytes": 100 + ok,
            "kms": {"GenerateDataKey": 1, "Encrypt": 0, "Decrypt": 0, "retries": 0, "throttled": 0},
            "s3": null,
            "latency": {"objects": ok, "p50_ms": 1.0, "p99_ms": ok as f64, "max_ms": 2.0 * ok as f64},
            "failures": (0..failed).map(|i| json!({"path": format!("f{i}"), "error": "x"})).collect::<Vec<_>>(),
            "failures_omitted": 0, "skipped": [],
            "shard": shard.map(|(index, count)| json!({"index": index, "count": count})),
        })
    }

    fn named(reports: Vec<Value>) -> Vec<(String, Value)> {
        reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| (format!("r{i}.json"), r))
            .collect()
    }

    #[test]
    fn complete_shards_sum_up_with_no_problems() {
        let m = merge(
            &named(vec![
                report(Some((1, 3)), 5, 0),
                report(Some((0, 3)), 7, 0),
                report(Some((2, 3)), 1, 0),
            ]),
            &[],
        )
        .unwrap();
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        let r = &m.report;
        assert_eq!(r["objects"]["ok"], 13);
        assert_eq!(r["objects"]["planned"], 13);
        assert_eq!(r["bytes_out"], 260);
        assert_eq!(r["kms"]["GenerateDataKey"], 3);
        assert_eq!(r["elapsed_s"], 7.0);
        assert_eq!(r["peak_rss_bytes"], 107.0);
        assert_eq!(r["latency"]["objects"], 13);
        assert_eq!(r["latency"]["worst_p99_ms"], 7.0);
        assert_eq!(r["shards"]["missing"], json!([]));
        assert_eq!(r["workers"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn scan_inventories_add_up_by_kind() {
        let row = |server: &str, client: &str, objects: u64| {
            json!({"server_side": server, "client_side": client, "objects": objects,
                   "bytes": objects * 100})
        };
        let mut a = report(Some((0, 2)), 3, 0);
        a["mode"] = json!("scan");
        a["inventory"] = json!([row("SSE-S3", "none", 2), row("none", "ESDK 0x0478 by k", 1)]);
        let mut b = report(Some((1, 2)), 4, 0);
        b["mode"] = json!("scan");
        b["inventory"] = json!([row("none", "ESDK 0x0478 by k", 4)]);
        let m = merge(&named(vec![a, b]), &[]).unwrap();
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(
            m.report["inventory"],
            json!([row("none", "ESDK 0x0478 by k", 5), row("SSE-S3", "none", 2)])
        );
    }

    #[test]
    fn missing_failed_and_interrupted_shards_are_problems() {
        let mut interrupted = report(Some((2, 4)), 3, 0);
        interrupted["interrupted"] = json!(true);
        let m = merge(&named(vec![report(Some((0, 4)), 5, 2), interrupted]), &[]).unwrap();
        let all = m.problems.join("\n");
        assert!(all.contains("2 of 4 shards have no report: 1, 3"), "{all}");
        assert!(
            all.contains("shard 0/4 (r0.json): 2 objects failed"),
            "{all}"
        );
        assert!(all.contains("shard 2/4 (r1.json) was interrupted"), "{all}");
        assert_eq!(m.report["failures"][0]["shard"], "0/4");
        assert_eq!(m.report["shards"]["missing"], json!([1, 3]));
    }

    #[test]
    fn reports_of_different_jobs_are_refused() {
        let mut decrypt = report(Some((1, 2)), 1, 0);
        decrypt["mode"] = json!("decrypt");
        let mut by_prefix = report(Some((1, 2)), 1, 0);
        by_prefix["shard"]["by"] = json!("prefix");
        let cases = [
            (vec![report(Some((0, 2)), 1, 0), decrypt], "mode"),
            (
                vec![report(Some((0, 2)), 1, 0), report(Some((1, 3)), 1, 0)],
                "of 2 shards",
            ),
            (
                vec![report(Some((0, 2)), 1, 0), report(Some((0, 2)), 1, 0)],
                "reported twice",
            ),
            (
                vec![report(Some((0, 2)), 1, 0), report(None, 1, 0)],
                "one split job",
            ),
            (
                vec![json!({"not": "a report"})],
                "not a sealpipe job report",
            ),
            (vec![], "no reports"),
            (vec![report(Some((0, 2)), 1, 0), by_prefix], "divided by"),
        ];
        for (reports, want) in cases {
            let e = merge(&named(reports), &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn completion_rows_are_counted_and_objects_in_two_are_found() {
        let row = |key: &str, status: &str| {
            vec![
                "b".into(),
                key.into(),
                String::new(),
                status.into(),
                String::new(),
                String::new(),
            ]
        };
        let completions = vec![
            (
                "a.csv".to_string(),
                vec![row("k1", "succeeded"), row("k2", "failed")],
            ),
            (
                "b.csv".to_string(),
                vec![row("k3", "succeeded"), row("k1", "succeeded")],
            ),
        ];
        let m = merge(&named(vec![report(None, 1, 0)]), &completions).unwrap();
        let c = &m.report["completion"];
        assert_eq!(c["rows"], 4);
        assert_eq!(c["objects"], 3);
        assert_eq!(c["by_status"]["succeeded"], 3);
        assert_eq!(c["in_two_reports"], 1);
        assert!(
            m.problems
                .iter()
                .any(|p| p.contains("b/k1 (a.csv and b.csv)")),
            "{:?}",
            m.problems
        );
    }
}
