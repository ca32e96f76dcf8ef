//! `--log-format json` and `--metrics-file`: an S3 job through proxies that answer
//! some S3 and KMS requests with 503 SlowDown logs one JSON line per object, per
//! retried request (S3: action, object, code; KMS: action, key ARN, code), its start and
//! its summary, and nothing else; a decrypt of a tampered object logs its failure with
//! the code and the step. The metrics file is read by the official Prometheus client's
//! parser (prometheus-client from PyPI, in the test venv), and its figures match the
//! report.

mod common;

use std::collections::BTreeMap;

use common::world::{Obj, World};
use serde_json::Value;

/// Every line of `stderr`, each of which must be a JSON object with `ts` and `event`.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l:?}"));
            assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
            assert!(v["event"].is_string(), "{l}");
            v
        })
        .collect()
}

fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

/// `{sample name with labels: value}` of a metrics file, as prometheus-client parses it.
fn parse_metrics(path: &std::path::Path) -> BTreeMap<String, f64> {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n    \
            for s in family.samples:\n        \
                labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n        \
                print(f'{s.name}{{{labels}}} {s.value}')\n";
    let what = format!(
        "prometheus-client refused the metrics file\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
    common::venv_python(&what, script, &[path], b"")
        .lines()
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn json_logs_and_metrics_describe_every_object_and_retry() {
    let w = World::start("observability");
    w.create_bucket("src");
    w.create_bucket("dst");
    let key = w.create_kms_key();
    let objects: Vec<Obj> = (0..30u64)
        .map(|n| {
            Obj::plain(
                &format!("in/{n:02}.txt"),
                vec![b'a' + n as u8; 100 + n as usize],
            )
        })
        .collect();
    w.put_all("src", &objects);

    // S3 through one proxy (every 5th request SlowDown), KMS through another (every
    // 2nd): with a data key per 5 messages there are several GenerateDataKey calls, so
    // the second is always retried.
    let s3 = w.proxy(&["--slowdown-every", "5"]);
    let kms = w.proxy(&["--slowdown-every", "2"]);
    let metrics = w.path("encrypt.prom");
    let metrics_arg = metrics.display().to_string();
    let run = w.run_via(
        &s3.endpoint,
        &[
            "encrypt",
            "s3://src/in/",
            "s3://dst/out/",
            "--key",
            &key,
            "--kms-endpoint",
            &kms.endpoint,
            "--cache-max-messages",
            "5",
            "--concurrency",
            "4",
            "--log-format",
            "json",
            "--metrics-file",
            &metrics_arg,
        ],
    );
    run.assert_exit(0);
    let lines = json_lines(&run.stderr);
    assert_eq!(of_kind(&lines, "job").len(), 1, "{}", run.stderr);
    let job = of_kind(&lines, "job")[0];
    assert_eq!(job["mode"], "encrypt");
    assert_eq!(job["source"], "s3://src/in/");
    assert_eq!(job["wrapping_keys"][0], key.as_str());

    let objects_logged = of_kind(&lines, "object");
    assert_eq!(objects_logged.len(), objects.len(), "{}", run.stderr);
    for line in &objects_logged {
        assert_eq!(line["status"], "succeeded", "{line}");
        assert_eq!(line["bucket"], "src", "{line}");
        assert!(line["key"].as_str().unwrap().starts_with("in/"), "{line}");
        assert!(line["bytes_out"].as_u64().unwrap() > line["bytes_in"].as_u64().unwrap());
        assert_eq!(line["wrapping_keys"][0], key.as_str(), "{line}");
    }

    let retries = of_kind(&lines, "retry");
    let s3_retries: Vec<_> = retries.iter().filter(|r| r["service"] == "s3").collect();
    let kms_retries: Vec<_> = retries.iter().filter(|r| r["service"] == "kms").collect();
    assert!(!s3_retries.is_empty(), "no S3 retry logged: {}", run.stderr);
    for r in &s3_retries {
        assert_eq!(r["code"], "SlowDown", "{r}");
        assert!(
            r["action"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
        assert!(r["object"].as_str().unwrap().starts_with("s3://"), "{r}");
        assert!(r["wait_ms"].is_u64(), "{r}");
    }
    assert!(
        !kms_retries.is_empty(),
        "no KMS retry logged: {}",
        run.stderr
    );
    for r in &kms_retries {
        assert_eq!(r["action"], "GenerateDataKey", "{r}");
        assert_eq!(r["key"], key.as_str(), "{r}");
        // The proxy's 503 comes with an S3 body KMS's client cannot read: its status.
        let code = r["code"].as_str().unwrap();
        assert!(code == "HTTP 503" || code == "SlowDown", "{r}");
    }
    let summary = of_kind(&lines, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["objects"]["ok"], objects.len());
    assert_eq!(
        lines.len(),
        2 + objects.len() + retries.len(),
        "only job, object, retry and summary lines"
    );

    // The metrics, read by Prometheus's own parser, say what the report says.
    let m = parse_metrics(&metrics);
    let get = |name: &str| *m.get(name).unwrap_or_else(|| panic!("no {name} in {m:#?}"));
    assert_eq!(
        get("sealpipe_objects_total{mode=encrypt,outcome=ok}"),
        objects.len() as f64
    );
    assert_eq!(
        get("sealpipe_objects_total{mode=encrypt,outcome=failed}"),
        0.0
    );
    assert_eq!(
        get("sealpipe_bytes_out_total{mode=encrypt}"),
        run.num("bytes_out") as f64
    );
    assert_eq!(
        get("sealpipe_kms_requests_total{action=GenerateDataKey,mode=encrypt}"),
        run.num("kms/GenerateDataKey") as f64
    );
    assert!(get("sealpipe_kms_retries_total{mode=encrypt}") >= kms_retries.len() as f64);
    assert_eq!(
        get("sealpipe_s3_retries_total{mode=encrypt}"),
        run.num("s3/retries") as f64
    );
    assert!(get("sealpipe_object_seconds_count{mode=encrypt}") == objects.len() as f64);
    drop((s3, kms));

    // A tampered object: its line says it failed, why (the code) and at which step.
    let sealed = w.get("dst", "out/07.txt");
    let mut body = sealed.body.to_vec();
    let last = body.len() - 1;
    body[last] ^= 1;
    w.put("dst", &Obj::plain("out/07.txt", body));
    let run = w.run(&[
        "decrypt",
        "s3://dst/out/",
        "back",
        "--key",
        &key,
        "--log-format",
        "json",
    ]);
    run.assert_exit(1);
    let lines = json_lines(&run.stderr);
    let failed: Vec<_> = of_kind(&lines, "object")
        .into_iter()
        .filter(|l| l["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.stderr);
    assert_eq!(failed[0]["key"], "out/07.txt");
    assert_eq!(failed[0]["code"], "AuthenticationFailed", "{}", failed[0]);
    assert!(failed[0]["action"].is_string(), "{}", failed[0]);
    assert!(
        !w.path("back/07.txt").exists(),
        "no plaintext of the tampered object"
    );
}
