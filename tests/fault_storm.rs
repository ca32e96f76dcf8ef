//! A fault storm (issue #8): KMS throttling bursts and slow KMS answers, S3 503
//! SlowDown, connection resets, slow S3 responses and mid-body stalls, all at once,
//! through the loopback proxies of `tests/faults/` in front of one moto server. An S3
//! to S3 encrypt with a real (moto) KMS key and a tiny data-key cache, then a decrypt,
//! each run through the storm.
//!
//! Each job must either complete (exit 0, every object round-trips) or fail cleanly
//! (exit 1, every failure names its object and the action, the counts add up, nothing
//! partial is left: no output for a failed object, no open multipart upload). The
//! proxies' counters prove each kind of fault was injected, and the reports must show
//! the retries and throttling they caused. A third run, a decrypt through the same S3
//! storm with a KMS that denies every 4th Decrypt, must take the clean-failure branch.
//! No timing is asserted.

mod common;

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::Value;

use common::faults::{self, FaultProxy};
use common::world::{self, MIB, Prng, Run, World};

/// Actions a failure message may name.
const ACTIONS: [&str; 12] = [
    "GetObject",
    "PutObject",
    "HeadObject",
    "UploadPart",
    "CreateMultipartUpload",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListObjectsV2",
    "ListMultipartUploads",
    "GetObjectTagging",
    "GenerateDataKey",
    "Decrypt",
];

/// S3 faults: among counted requests, every 6th a SlowDown, every 9th (not a 6th) a
/// reset, every 13th delayed 2 s; every 11th GET stalls 3 s halfway through its body.
/// All well under the SDK's read timeout.
const S3_STORM: [&str; 12] = [
    "--slowdown-every",
    "6",
    "--reset-every",
    "9",
    "--delay-every",
    "13",
    "--delay-seconds",
    "2",
    "--stall-every",
    "11",
    "--stall-seconds",
    "3",
];

/// KMS faults: throttling bursts of 3 calls in a row every 8 (starting with the first
/// call), and every 5th call answered after 2 s (under the 10 s attempt timeout).
const KMS_STORM: [&str; 14] = [
    "--error",
    "ThrottlingException",
    "--every",
    "0",
    "--burst-every",
    "8",
    "--burst-length",
    "3",
    "--delay-every",
    "5",
    "--delay-seconds",
    "2",
    "--actions",
    "GenerateDataKey,Decrypt,Encrypt",
];

/// The KMS proxy's final JSON counters line.
fn kms_counts(stderr: &str) -> Value {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no counters from the KMS proxy: {stderr:?}"));
    serde_json::from_str(line).unwrap()
}

/// Checks a run through the storm: exit 0 with every object ok, or exit 1 with each
/// failure naming a planned object and an action, and nothing partial left in
/// `dst_bucket`. Returns the keys that failed.
fn check_clean(
    w: &World,
    run: &Run,
    sources: &BTreeSet<String>,
    dst_bucket: &str,
) -> BTreeSet<String> {
    let n = sources.len() as u64;
    assert_ne!(
        run.status.code(),
        Some(101),
        "sealpipe panicked\n{}",
        run.context()
    );
    run.assert_counts_add_up();
    assert_eq!(run.objects("planned"), n, "{}", run.context());
    assert_eq!(
        w.uploads(dst_bucket),
        Vec::new(),
        "multipart uploads left open in {dst_bucket}\n{}",
        run.context()
    );
    let mut failed = BTreeSet::new();
    match run.status.code() {
        Some(0) => {
            assert_eq!(run.objects("ok"), n, "{}", run.context());
            assert_eq!(run.failures(), Vec::<Value>::new(), "{}", run.context());
        }
        Some(1) => {
            let failures = run.failures();
            assert!(
                !failures.is_empty(),
                "exit 1 without failures\n{}",
                run.context()
            );
            assert_eq!(
                failures.len() as u64,
                run.objects("failed") + run.objects("conflicts"),
                "{}",
                run.context()
            );
            for f in &failures {
                let key = f["key"].as_str().unwrap_or_default();
                let error = f["error"].as_str().unwrap_or_default();
                assert!(
                    sources.contains(key),
                    "failure for an unknown object {f}\n{}",
                    run.context()
                );
                assert!(
                    ACTIONS.iter().any(|a| error.contains(a)),
                    "failure does not name the action: {f}\n{}",
                    run.context()
                );
                failed.insert(key.to_string());
            }
        }
        other => panic!(
            "exit {other:?}: neither complete nor a clean failure\n{}",
            run.context()
        ),
    }
    // Exactly the objects that succeeded have an output: nothing for a failed one.
    let outputs = w.keys(dst_bucket);
    let expected: BTreeSet<String> = sources.difference(&failed).cloned().collect();
    assert_eq!(
        outputs,
        expected,
        "outputs in {dst_bucket} != the objects that succeeded\n{}",
        run.context()
    );
    failed
}

/// Runs sealpipe `job` (`[command, SRC, DST]`) with `key`, S3 through a fresh
/// [`S3_STORM`] proxy and KMS through a fault proxy started with `kms_args`, 5 MiB
/// parts and 16 workers, plus `extra`; stops both proxies and logs their counters
/// under `what`. Returns the run, the S3 proxy's counters line and the KMS proxy's
/// counts.
fn through_storm(
    w: &World,
    what: &str,
    kms_args: &[&str],
    job: [&str; 3],
    key: &str,
    extra: &[&str],
) -> (Run, String, Value) {
    let s3 = FaultProxy::start("s3_fault_proxy.py", &w.moto.endpoint(), &S3_STORM);
    let kms = FaultProxy::start("kms_fault_proxy.py", &w.moto.endpoint(), kms_args);
    let mut args = job.to_vec();
    args.extend([
        "--key",
        key,
        "--kms-endpoint",
        &kms.endpoint,
        "--part-size",
        "5MiB",
        "--concurrency",
        "16",
        "-q",
    ]);
    args.extend_from_slice(extra);
    let run = w.run_via(&s3.endpoint, &args);
    let s3_counts = s3.stop();
    let kms_counts = kms_counts(&kms.stop());
    w.log(&format!(
        "{what}: S3 proxy {}; KMS proxy {kms_counts}",
        s3_counts.trim()
    ));
    (run, s3_counts, kms_counts)
}

#[test]
fn fault_storm_jobs_complete_or_fail_cleanly() {
    let w = World::start("storm");
    let seed = world::seed(0x5707_3001);
    w.log(&format!(
        "seed {seed:#x} (object sizes; replay with SEALPIPE_TEST_SEED={seed:#x})"
    ));
    let key = w.create_kms_key();
    for b in ["storm-src", "storm-enc", "storm-dec"] {
        w.create_bucket(b);
    }
    let mut rng = Prng::new(seed);
    let mut objects: Vec<(String, Bytes)> = (0..140)
        .map(|i| {
            let size = rng.range(1, 32 * 1024) as usize;
            (
                format!("s/{:02}/obj-{i:04}", i % 10),
                Bytes::from(common::pseudo_random(size, seed ^ (i as u64) << 12)),
            )
        })
        .collect();
    objects.push((
        "big/multipart.bin".into(),
        Bytes::from(common::pseudo_random(11 * MIB + 17, 77)),
    ));
    w.put_all("storm-src", &objects);
    let sources: BTreeSet<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    let bodies: HashMap<&str, &Bytes> = objects.iter().map(|(k, b)| (k.as_str(), b)).collect();

    // ---- encrypt through the storm --------------------------------------------------
    let (enc, s3_enc, kms_enc) = through_storm(
        &w,
        "encrypt",
        &KMS_STORM,
        ["encrypt", "s3://storm-src", "s3://storm-enc"],
        &key,
        &["--cache-max-messages", "5"],
    );
    let enc_failed = check_clean(&w, &enc, &sources, "storm-enc");
    for kind in ["slowdown", "reset", "delayed", "stalled"] {
        assert!(
            faults::count(&s3_enc, kind) > 0,
            "no {kind} injected during encrypt: {s3_enc}"
        );
    }
    for kind in ["burst", "delayed"] {
        assert!(
            kms_enc[kind].as_u64().unwrap() > 0,
            "no KMS {kind} during encrypt: {kms_enc}"
        );
    }
    assert!(enc.num("kms/throttled") > 0, "{}", enc.context());
    assert!(
        enc.num("kms/retries") >= enc.num("kms/throttled"),
        "{}",
        enc.context()
    );
    assert!(
        enc.num("kms/GenerateDataKey") >= 140 / 5,
        "{}",
        enc.context()
    );
    assert!(enc.num("s3/retries") > 0, "{}", enc.context());
    assert!(enc.num("s3/slowdowns") > 0, "{}", enc.context());

    // ---- decrypt through a fresh storm -------------------------------------------------
    let (dec, s3_dec, kms_dec) = through_storm(
        &w,
        "decrypt",
        &KMS_STORM,
        ["decrypt", "s3://storm-enc", "s3://storm-dec"],
        &key,
        &[],
    );
    let encrypted: BTreeSet<String> = sources.difference(&enc_failed).cloned().collect();
    let dec_failed = check_clean(&w, &dec, &encrypted, "storm-dec");
    for kind in ["slowdown", "reset", "delayed", "stalled"] {
        assert!(
            faults::count(&s3_dec, kind) > 0,
            "no {kind} injected during decrypt: {s3_dec}"
        );
    }
    assert!(
        kms_dec["burst"].as_u64().unwrap() > 0,
        "no KMS burst during decrypt: {kms_dec}"
    );
    assert!(dec.num("kms/throttled") > 0, "{}", dec.context());
    assert!(dec.num("s3/retries") > 0, "{}", dec.context());

    // ---- a storm that must end in clean failures ----------------------------------------
    // The same S3 storm, and a KMS that denies every 4th Decrypt (not retried): the
    // objects whose data key it refused fail, the others complete.
    w.create_bucket("storm-dec2");
    let (denied, _, kms_denied) = through_storm(
        &w,
        "decrypt with denials",
        &[
            "--error",
            "AccessDeniedException",
            "--message",
            "not allowed",
            "--every",
            "4",
            "--delay-every",
            "3",
            "--delay-seconds",
            "2",
            "--actions",
            "Decrypt",
        ],
        ["decrypt", "s3://storm-enc", "s3://storm-dec2"],
        &key,
        &[],
    );
    assert!(kms_denied["injected"].as_u64().unwrap() > 0, "{kms_denied}");
    denied.assert_exit(1);
    let denied_failed = check_clean(&w, &denied, &encrypted, "storm-dec2");
    for f in denied.failures() {
        let error = f["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("Decrypt") && error.contains("AccessDenied"),
            "a failure that is not the denied KMS Decrypt: {f}\n{}",
            denied.context()
        );
    }
    let survived: Vec<String> = encrypted.difference(&denied_failed).cloned().collect();
    let got = w.get_all("storm-dec2", &survived);
    for k in &survived {
        assert!(
            got[k].body == *bodies[k.as_str()],
            "s3://storm-dec2/{k} differs from its source"
        );
    }
    w.log(&format!(
        "decrypt with denials: {} failed cleanly, {} round-tripped",
        denied_failed.len(),
        survived.len()
    ));

    // Whatever made it through both jobs is exactly its source.
    let restored: Vec<String> = encrypted.difference(&dec_failed).cloned().collect();
    let got = w.get_all("storm-dec", &restored);
    for k in &restored {
        assert!(
            got[k].body == *bodies[k.as_str()],
            "s3://storm-dec/{k} differs from its source"
        );
    }
    w.log(&format!(
        "done: encrypt exit {:?} ({} failed, {} KMS throttled, {} KMS retries, {} S3 retries), \
         decrypt exit {:?} ({} failed, {} KMS throttled, {} S3 retries); {} objects round-tripped",
        enc.status.code(),
        enc_failed.len(),
        enc.num("kms/throttled"),
        enc.num("kms/retries"),
        enc.num("s3/retries"),
        dec.status.code(),
        dec_failed.len(),
        dec.num("kms/throttled"),
        dec.num("s3/retries"),
        restored.len()
    ));
}
