//! Memory stays within the in-flight byte budget while a multi-GiB object streams
//! through S3, against a real S3 protocol server (moto): a 2 GiB file is encrypted into
//! a multipart upload, then the message is read back from S3 with ranged GETs and
//! verified. The figure is the process's own peak RSS (VmHWM), which the report carries.
//!
//! moto copies the whole object for every ranged GET, so the read-back uses large parts
//! to keep this to a few dozen requests; the bound checked is the same for any size.

mod common;

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use common::moto::Moto;

const MIB: u64 = 1024 * 1024;
/// 2 GiB and a bit: larger than either budget many times over.
const OBJECT: u64 = 2048 * MIB + 4321;
/// Beyond the budget: the runtime, the codec's per-worker batches (a few MiB), the
/// HTTP stack's buffers, and allocator slack.
const OVERHEAD: u64 = 96 * MIB;

/// Runs sealpipe against moto and returns its JSON report.
fn sealpipe(moto: &Moto, dir: &Path, args: &[&str]) -> Value {
    let report = dir.join("report.json");
    let sealpipe = Path::new(env!("CARGO_BIN_EXE_sealpipe"));
    let out = common::aws_command(sealpipe, dir, &moto.endpoint())
        .args(args)
        .args(["--report", report.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sealpipe {args:?}: {stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 1, "{stderr}");
    report
}

/// Checks the report's peak RSS and peak in-flight bytes against `budget`.
fn assert_within(report: &Value, budget: u64, what: &str) {
    let peak_rss = report["peak_rss_bytes"]
        .as_u64()
        .expect("Linux reports VmHWM");
    let in_flight = report["s3"]["peak_in_flight_bytes"].as_u64().unwrap();
    eprintln!(
        "{what}: 2 GiB object, budget {} MiB: peak RSS {} MiB, peak in flight {} MiB, {:.1} s",
        budget / MIB,
        peak_rss / MIB,
        in_flight / MIB,
        report["elapsed_s"].as_f64().unwrap()
    );
    assert!(
        in_flight <= budget,
        "{what}: in flight {in_flight} > budget {budget}"
    );
    assert!(
        peak_rss <= budget + OVERHEAD,
        "{what}: peak RSS {} MiB exceeds the budget ({} MiB) plus {} MiB",
        peak_rss / MIB,
        budget / MIB,
        OVERHEAD / MIB
    );
}

#[test]
fn a_multi_gib_object_streams_within_the_budget() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k.key");
    std::fs::write(&key_file, [0x5au8; 32]).unwrap();
    let keyref = format!("raw-aes:ns:k1:{}", key_file.display());
    let big = dir.path().join("huge.bin");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    common::write_pseudo_random(&mut file, OBJECT, 7).unwrap();
    file.flush().unwrap();
    drop(file);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s3 = moto.s3_client();
    rt.block_on(s3.create_bucket().bucket("sealed").send())
        .unwrap();

    // Out: 2 GiB through a 64 MiB budget into a multipart upload.
    let report = sealpipe(
        &moto,
        dir.path(),
        &[
            "encrypt",
            big.to_str().unwrap(),
            "s3://sealed/huge.bin",
            "--key",
            &keyref,
            "--max-in-flight",
            "64MiB",
        ],
    );
    assert_eq!(report["bytes_in"], OBJECT);
    assert_within(&report, 64 * MIB, "encrypt local to S3");
    std::fs::remove_file(&big).unwrap();

    let head = rt
        .block_on(s3.head_object().bucket("sealed").key("huge.bin").send())
        .unwrap();
    let size = head.content_length().unwrap() as u64;
    assert!(size > OBJECT + OBJECT.div_ceil(65536) * 28, "{size}");
    assert!(
        head.e_tag().unwrap().contains('-'),
        "multipart ETag expected"
    );
    assert_eq!(
        head.metadata().unwrap()["sealpipe-plaintext-length"],
        OBJECT.to_string()
    );
    let uploads = rt
        .block_on(s3.list_multipart_uploads().bucket("sealed").send())
        .unwrap();
    assert!(uploads.uploads().is_empty());

    // Back in: every frame of the 2 GiB message read with ranged GETs and verified.
    let report = sealpipe(
        &moto,
        dir.path(),
        &[
            "verify",
            "s3://sealed/huge.bin",
            "--key",
            &keyref,
            "--part-size",
            "128MiB",
            "--max-in-flight",
            "256MiB",
        ],
    );
    // What verify reads is the whole message.
    assert_eq!(report["bytes_in"], size);
    assert_within(&report, 256 * MIB, "verify from S3");
}
