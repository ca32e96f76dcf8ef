//! Buckets in two regions: every request about a bucket is signed for the bucket's own
//! region, learned from HeadBucket, so a job reads from one region and writes to
//! another (a regional migration). moto serves every region at one endpoint and checks
//! no signature, so the signing region of each request is read from a logging proxy.

mod common;

use std::path::Path;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

use common::faults::FaultProxy;
use common::moto::Moto;

fn create_bucket(moto: &Moto, name: &str, region: Option<&str>) {
    let client = moto.s3_client();
    let request = client
        .create_bucket()
        .bucket(name)
        .set_create_bucket_configuration(region.map(|r| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(r))
                .build()
        }));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(request.send())
        .unwrap();
}

#[test]
fn each_bucket_is_addressed_in_its_own_region_including_copied_parts() {
    let moto = Moto::start();
    create_bucket(&moto, "src-us", None);
    create_bucket(&moto, "dst-eu", Some("eu-west-1"));
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    // One object rewritten whole, one large enough for UploadPartCopy.
    std::fs::write(files.join("small"), common::pseudo_random(100_000, 1)).unwrap();
    std::fs::write(files.join("large"), common::pseudo_random(20 << 20, 2)).unwrap();
    std::fs::write(dir.path().join("old.key"), [1u8; 32]).unwrap();
    std::fs::write(dir.path().join("new.key"), [2u8; 32]).unwrap();
    let sealpipe = Path::new(env!("CARGO_BIN_EXE_sealpipe"));
    let run = |endpoint: &str, args: &[&str]| {
        let out = common::aws_command(sealpipe, dir.path(), endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sealpipe {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        &moto.endpoint(),
        &[
            "encrypt",
            "files",
            "s3://src-us/",
            "--key",
            "raw-aes:t:old:old.key",
            "-q",
        ],
    );
    let proxy = FaultProxy::start("s3_fault_proxy.py", &moto.endpoint(), &["--verbose"]);
    run(
        &proxy.endpoint,
        &[
            "rewrap",
            "--allow-header-nonce-reuse",
            "s3://src-us/",
            "s3://dst-eu/",
            "--old-key",
            "raw-aes:t:old:old.key",
            "--key",
            "raw-aes:t:new:new.key",
            "--report",
            "report.json",
            "-q",
        ],
    );
    let log = proxy.stop();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 2, "{report}");
    assert!(
        report["s3"]["bytes_copied"].as_u64().unwrap() > 10 << 20,
        "the large body is copied by S3: {report}"
    );
    let mut seen = std::collections::BTreeMap::<(String, String), u32>::new();
    for line in log.lines() {
        let mut words = line.split_whitespace();
        let (Some(method), Some(path), Some(region)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(region) = region.strip_prefix("region=") else {
            continue;
        };
        let bucket = path
            .trim_start_matches('/')
            .split(['/', '?'])
            .next()
            .unwrap();
        // The region lookup itself (HeadBucket, no key) goes out in the configured one.
        let lookup = method == "HEAD" && path.trim_end_matches('/') == format!("/{bucket}");
        if !lookup {
            *seen
                .entry((bucket.to_string(), region.to_string()))
                .or_default() += 1;
        }
    }
    let buckets: Vec<&(String, String)> = seen.keys().collect();
    assert_eq!(
        buckets,
        [
            &("dst-eu".to_string(), "eu-west-1".to_string()),
            &("src-us".to_string(), "us-east-1".to_string())
        ],
        "requests per (bucket, signing region): {seen:?}\n{log}"
    );
    assert!(
        log.contains("partNumber=2") && log.contains("region=eu-west-1"),
        "copied parts go to the destination's region: {log}"
    );
    // The outputs open with the new key alone.
    run(
        &moto.endpoint(),
        &[
            "decrypt",
            "s3://dst-eu/",
            "out",
            "--key",
            "raw-aes:t:new:new.key",
            "-q",
        ],
    );
    for name in ["small", "large"] {
        assert_eq!(
            std::fs::read(dir.path().join("out").join(name)).unwrap(),
            std::fs::read(files.join(name)).unwrap(),
            "{name}"
        );
    }
}
