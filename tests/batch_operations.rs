//! `--batch-operations`: sealpipe as the Lambda function of an S3 Batch Operations job,
//! run under a real Lambda Runtime API emulator (`cargo lambda watch
//! --only-lambda-apis`, cargo-lambda from PyPI in the test venv), with S3 and KMS on
//! moto.
//!
//! moto 5.2.5 has no S3 Batch Operations (S3 Control `CreateJob`: its
//! `moto/s3control/responses.py` serves access points, Storage Lens and Multi-Region
//! Access Points only), so nothing runs the job for us. The test plays that part, as
//! the service documents it: it reads the job's CSV manifest from moto S3, invokes the
//! function once per manifest line with an invocation schema 2.0 event through the
//! emulator's Invoke API, and writes the completion report (Bucket, Key, VersionId,
//! TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage) back to moto S3, where it is
//! read again and checked. The function itself is the real binary, unchanged: the
//! Runtime API is the only thing between it and the invocations.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::faults::FaultProxy;
use common::lambda::Emulator;
use common::world::{Obj, World};
use serde_json::Value;

/// The sealpipe function, started against `emulator` as Lambda starts a runtime.
struct Function {
    child: Child,
    stderr: PathBuf,
}

impl Function {
    fn start(w: &World, emulator: &Emulator, endpoint: &str, args: &[&str], name: &str) -> Self {
        let stderr = w.path(&format!("{name}.stderr"));
        let child = w
            .command(endpoint)
            .args(args)
            .args(["--batch-operations", "--log-format", "json"])
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt", emulator.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start sealpipe");
        Self { child, stderr }
    }

    /// The function's JSON log lines of kind `event`.
    fn events(&self, event: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.stderr)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == event)
            .collect()
    }

    fn stop(mut self) -> String {
        let running = self.child.try_wait().unwrap().is_none();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(running, "the function exited between invocations:\n{log}");
        log
    }
}

/// Batch Operations' part: the manifest (`bucket,key` lines, keys URL-encoded) read
/// from S3, one schema 2.0 invocation per line, and the completion report written to
/// S3 and read back. Prints, as JSON: each task's answer and the report's rows.
const BATCH_OPERATIONS: &str = r#"
import csv, io, json, sys, urllib.parse, urllib.request
import boto3

endpoint, invoke_url, manifest, report_prefix, job_id = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
mb, mk = manifest.split("/", 1)
lines = s3.get_object(Bucket=mb, Key=mk)["Body"].read().decode()
answers, rows = [], []
for n, row in enumerate(csv.reader(io.StringIO(lines))):
    bucket, key = row[0], urllib.parse.unquote_plus(row[1])
    version = row[2] if len(row) > 2 and row[2] else None
    event = {"invocationSchemaVersion": "2.0", "invocationId": f"inv-{job_id}-{n}",
             "job": {"id": job_id, "userArguments": {"note": "ignored"}},
             "tasks": [{"taskId": f"task-{n}", "s3Bucket": bucket, "s3Key": key,
                        "s3VersionId": version}]}
    request = urllib.request.Request(invoke_url, data=json.dumps(event).encode(),
                                     headers={"Content-Type": "application/json"})
    answer = json.loads(urllib.request.urlopen(request, timeout=300).read())
    assert answer["invocationId"] == event["invocationId"], answer
    assert answer["invocationSchemaVersion"] == "2.0", answer
    assert answer["treatMissingKeysAs"] == "PermanentFailure", answer
    [result] = answer["results"]
    assert result["taskId"] == f"task-{n}", answer
    answers.append({"bucket": bucket, "key": key, **result})
    ok = result["resultCode"] == "Succeeded"
    rows.append([bucket, row[1], version or "", "succeeded" if ok else "failed",
                 "" if ok else result["resultCode"], "200", result["resultString"]])
out = io.StringIO()
csv.writer(out, lineterminator="\n").writerows(rows)
rb, rk = report_prefix.split("/", 1)
report_key = f"{rk}/job-{job_id}/results/0.csv"
s3.put_object(Bucket=rb, Key=report_key, Body=out.getvalue().encode())
read_back = s3.get_object(Bucket=rb, Key=report_key)["Body"].read().decode()
print(json.dumps({"answers": answers,
                  "report": list(csv.reader(io.StringIO(read_back)))}))
"#;

/// Runs the Batch Operations job `job_id` over `manifest` (`bucket/key` on moto).
fn run_job(
    w: &World,
    emulator: &Emulator,
    manifest: &str,
    job_id: &str,
) -> (Vec<Value>, Vec<Vec<String>>) {
    let args = [
        w.moto.endpoint(),
        emulator.invoke_url(),
        manifest.to_string(),
        "ops/reports".to_string(),
        job_id.to_string(),
    ];
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    let printed = common::venv_python("the Batch Operations job", BATCH_OPERATIONS, &args, b"");
    let done: Value = serde_json::from_str(&printed).unwrap();
    let report = done["report"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    (done["answers"].as_array().unwrap().clone(), report)
}

/// A manifest line, as Batch Operations reads them: the key URL-encoded.
fn manifest_line(bucket: &str, key: &str) -> String {
    let encoded: String = key
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("{bucket},{encoded}\n")
}

fn put_manifest(w: &World, key: &str, lines: &[(&str, &str)]) -> String {
    let body: String = lines.iter().map(|(b, k)| manifest_line(b, k)).collect();
    w.put("ops", &Obj::plain(key, body.into_bytes()));
    format!("ops/{key}")
}

fn by_key(answers: &[Value]) -> BTreeMap<String, (String, String)> {
    answers
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_string(),
                (
                    a["resultCode"].as_str().unwrap().to_string(),
                    a["resultString"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// Decrypts everything below `s3://bucket/prefix` into a local directory; its files.
fn decrypt_all(
    w: &World,
    bucket: &str,
    prefix: &str,
    key: &str,
    dir: &str,
) -> BTreeMap<String, Vec<u8>> {
    let out = w.path(dir);
    let run = w.run(&[
        "decrypt",
        &format!("s3://{bucket}/{prefix}"),
        out.to_str().unwrap(),
        "--key",
        key,
    ]);
    run.assert_exit(0);
    let mut files = BTreeMap::new();
    for entry in walk(&out) {
        let name = entry
            .strip_prefix(&out)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        files.insert(name, std::fs::read(&entry).unwrap());
    }
    files
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

#[test]
fn batch_operations_tasks_encrypt_through_the_runtime_api_with_one_data_key() {
    let w = World::start("batch-ops-encrypt");
    for bucket in ["src", "out", "ops"] {
        w.create_bucket(bucket);
    }
    let kms_key = w.create_kms_key();
    // Names Batch Operations must carry exactly: spaces, '+', '%', non-ASCII, nesting.
    let mut objects: Vec<(String, Vec<u8>)> = vec![
        ("logs/2026/a b+c.txt".into(), b"space and plus".to_vec()),
        (
            "\u{fc}n\u{ef}/\u{e7}o de%41.bin".into(),
            common::pseudo_random(70_000, 1),
        ),
        ("empty".into(), Vec::new()),
        (
            "big/three-mib.bin".into(),
            common::pseudo_random(3 << 20, 2),
        ),
    ];
    for i in 0..36 {
        objects.push((
            format!("many/obj-{i:03}.dat"),
            common::pseudo_random(100 + i * 997, 10 + i as u64),
        ));
    }
    for (key, body) in &objects {
        w.put("src", &Obj::plain(key, body.clone()));
    }
    let mut lines: Vec<(&str, &str)> = objects.iter().map(|(k, _)| ("src", k.as_str())).collect();
    lines.push(("src", "gone/never-written.txt"));
    let manifest = put_manifest(&w, "jobs/manifest.csv", &lines);

    let emulator = Emulator::start();
    let function = Function::start(
        &w,
        &emulator,
        &w.moto.endpoint(),
        &["encrypt", "s3://out/sealed/", "--key", &kms_key],
        "encrypt-fn",
    );
    let (answers, report) = run_job(&w, &emulator, &manifest, "1");
    let results = by_key(&answers);
    assert_eq!(results.len(), objects.len() + 1);
    for (key, _) in &objects {
        assert_eq!(results[key].0, "Succeeded", "{key}: {:?}", results[key]);
        assert_eq!(results[key].1, "done");
    }
    let (code, message) = &results["gone/never-written.txt"];
    assert_eq!(code, "PermanentFailure", "{message}");
    assert!(
        message.contains("NoSuchKey") || message.contains("404"),
        "{message}"
    );

    // The completion report, read back from S3: one row per task, the manifest's
    // (encoded) key, the status and the function's result string.
    assert_eq!(report.len(), lines.len());
    for (row, (bucket, key)) in report.iter().zip(&lines) {
        assert_eq!(row[0], *bucket);
        assert_eq!(
            format!("{},{}\n", row[0], row[1]),
            manifest_line(bucket, key)
        );
        let want = if *key == "gone/never-written.txt" {
            "failed"
        } else {
            "succeeded"
        };
        assert_eq!(row[3], want, "{row:?}");
        assert_eq!(row.len(), 7);
    }

    // A second job over the same manifest (a retried or repeated job): every finished
    // object is recognised from its output's marker and left alone.
    let (again, _) = run_job(&w, &emulator, &manifest, "2");
    for (key, (code, message)) in by_key(&again) {
        if key == "gone/never-written.txt" {
            assert_eq!(code, "PermanentFailure");
        } else {
            assert_eq!(code, "Succeeded", "{key}");
            assert!(message.starts_with("skipped: "), "{key}: {message}");
        }
    }

    // One process served every invocation from one pooled data key: a single
    // GenerateDataKey for 82 invocations (41 tasks, twice).
    let invocations = function.events("invocation");
    assert_eq!(invocations.len(), 2 * lines.len());
    let last = invocations.last().unwrap();
    assert_eq!(last["kms_since_start"]["GenerateDataKey"], 1, "{last}");
    // Done, skipped or failed: every task of both jobs; the missing object twice.
    assert_eq!(
        last["objects_done_since_start"],
        2 * lines.len() as u64,
        "{last}"
    );
    assert_eq!(last["objects_unsuccessful_since_start"], 2, "{last}");
    let outcomes = function.events("object");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o["status"] == "succeeded")
            .count(),
        objects.len()
    );
    function.stop();

    // Every output decrypts to its source, byte for byte.
    let plain = decrypt_all(&w, "out", "sealed/", &kms_key, "restored");
    assert_eq!(plain.len(), objects.len());
    for (key, body) in &objects {
        assert!(plain.get(key) == Some(body), "{key} did not round-trip");
    }
}

#[test]
fn throttling_is_a_temporary_failure_and_tampering_a_permanent_one() {
    let w = World::start("batch-ops-decrypt");
    for bucket in ["src", "sealed", "plain", "ops"] {
        w.create_bucket(bucket);
    }
    let kms_key = w.create_kms_key();
    let objects: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("d/obj-{i}"),
                common::pseudo_random(5_000 + i * 3_000, 40 + i as u64),
            )
        })
        .collect();
    for (key, body) in &objects {
        w.put("src", &Obj::plain(key, body.clone()));
    }
    w.run(&["encrypt", "s3://src/", "s3://sealed/", "--key", &kms_key])
        .assert_exit(0);
    // One message with a flipped byte in its last frame.
    let tampered = "d/obj-3";
    let mut bytes = w.get("sealed", tampered).body.to_vec();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    w.put("sealed", &Obj::plain(tampered, bytes));
    let lines: Vec<(&str, &str)> = objects
        .iter()
        .map(|(k, _)| ("sealed", k.as_str()))
        .collect();
    let manifest = put_manifest(&w, "jobs/decrypt.csv", &lines);
    let decrypt = ["decrypt", "s3://plain/", "--key", kms_key.as_str()];

    // KMS throttles every Decrypt, and the function gives up at once: every task may
    // succeed later, so each is a TemporaryFailure, and nothing is written.
    let throttle = FaultProxy::start(
        "kms_fault_proxy.py",
        &w.moto.endpoint(),
        &[
            "--error",
            "ThrottlingException",
            "--every",
            "1",
            "--actions",
            "Decrypt",
        ],
    );
    let emulator = Emulator::start();
    let mut throttled_args = decrypt.to_vec();
    throttled_args.extend([
        "--kms-endpoint",
        &throttle.endpoint,
        "--kms-retry-total",
        "0",
    ]);
    let function = Function::start(
        &w,
        &emulator,
        &w.moto.endpoint(),
        &throttled_args,
        "throttled-fn",
    );
    let (answers, report) = run_job(&w, &emulator, &manifest, "throttled");
    for (key, (code, message)) in by_key(&answers) {
        assert_eq!(code, "TemporaryFailure", "{key}: {message}");
        assert!(message.contains("ThrottlingException"), "{key}: {message}");
        assert!(message.contains("Decrypt"), "{key}: {message}");
    }
    assert!(
        report
            .iter()
            .all(|row| row[3] == "failed" && row[4] == "TemporaryFailure")
    );
    function.stop();
    drop(emulator);
    throttle.stop();
    let listed =
        w.rt.block_on(w.client.list_objects_v2().bucket("plain").send())
            .unwrap();
    assert_eq!(
        listed.key_count(),
        Some(0),
        "a throttled decrypt wrote {listed:?}"
    );

    // Batch Operations retries them; KMS answers now. The tampered message fails for
    // good, with nothing of its plaintext written; the rest decrypt.
    let emulator = Emulator::start();
    let function = Function::start(&w, &emulator, &w.moto.endpoint(), &decrypt, "decrypt-fn");
    let (answers, _) = run_job(&w, &emulator, &manifest, "retried");
    for (key, (code, message)) in by_key(&answers) {
        if key == tampered {
            assert_eq!(code, "PermanentFailure", "{message}");
            assert!(message.starts_with("AuthenticationFailed: "), "{message}");
        } else {
            assert_eq!(code, "Succeeded", "{key}: {message}");
        }
    }
    function.stop();
    for (key, body) in &objects {
        let listed =
            w.rt.block_on(
                w.client
                    .list_objects_v2()
                    .bucket("plain")
                    .prefix(key.as_str())
                    .send(),
            )
            .unwrap();
        if key == tampered {
            assert_eq!(
                listed.key_count(),
                Some(0),
                "the tampered {key} left {listed:?}"
            );
        } else {
            assert!(
                w.get("plain", key).body == *body,
                "{key} did not decrypt to its source"
            );
        }
    }
}

#[test]
fn a_function_outside_lambda_or_given_a_broken_runtime_api_says_so() {
    let w = World::start("batch-ops-env");
    w.create_bucket("out");
    let key = w.key.clone();
    // No Runtime API: exit 2 with what to set, never a panic.
    let run = w.run(&[
        "encrypt",
        "--batch-operations",
        "s3://out/x/",
        "--key",
        &key,
    ]);
    run.assert_exit(2);
    assert!(
        run.stderr.contains("AWS_LAMBDA_RUNTIME_API"),
        "{}",
        run.stderr
    );
    for (name, value) in [
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1/.rt"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "a lot"),
    ] {
        let mut command = w.command(&w.moto.endpoint());
        command
            .args([
                "encrypt",
                "--batch-operations",
                "s3://out/x/",
                "--key",
                &key,
            ])
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
            .env("AWS_LAMBDA_FUNCTION_NAME", "f")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(name, value);
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
    }
    // Usage the function cannot serve is refused before it starts.
    for (args, says) in [
        (
            vec!["encrypt", "--batch-operations", "out/local/"],
            "writes to S3",
        ),
        (
            vec!["encrypt", "--batch-operations", "s3://out/x/", "--dry-run"],
            "--dry-run",
        ),
        (
            vec!["encrypt", "--batch-operations", "s3://a/", "s3://out/x/"],
            "only DST",
        ),
        (
            vec!["verify", "--batch-operations", "s3://out/x/"],
            "only DST",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--key", key.as_str()]);
        let run = w.run(&all);
        run.assert_exit(2);
        assert!(run.stderr.contains(says), "{all:?}: {}", run.stderr);
    }
}
