//! Objects written by the official Amazon S3 Encryption Client for Python
//! (`amazon-s3-encryption-client-python`, pinned in the test venv; `tests/s3ec/writer.py`
//! drives it) to a moto S3 with a moto KMS key: sealpipe decrypts and verifies them byte
//! for byte, re-encrypts them into ESDK messages that `aws-encryption-cli` decrypts, and
//! refuses tampered ones with nothing written.
//!
//! The Python client writes V3 (key-committing) and V2 objects with their envelope in
//! the object's metadata, by `put_object` and by multipart upload. It cannot write
//! instruction files or the legacy `kms` wrap, but reads both: the writer makes those
//! from its objects with S3 and KMS calls only, and has the official client decrypt each
//! before the test uses it. The `AES/GCM` raw-key wrap has no official writer or reader
//! in Python; it is tested in `src/s3ec` and `src/keys/raw_aes.rs` only.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use common::world::World;

const BUCKET: &str = "s3ec";

/// A change to an object's body and user metadata.
type Edit<'a> = dyn Fn(&mut Vec<u8>, &mut BTreeMap<String, String>) + 'a;
const ALLOW: [&str; 2] = ["--commitment-policy", "require-encrypt-allow-decrypt"];

/// A world with a KMS key and the official client's objects under `s3ec/`.
struct Written {
    w: World,
    key: String,
    manifest: Value,
}

impl Written {
    fn new(name: &'static str) -> Self {
        let w = World::start(name);
        w.create_bucket(BUCKET);
        let key = w.create_kms_key();
        let manifest_path = w.path("manifest.json");
        let out = writer(&w)
            .args([
                "--kms-key-id",
                &key,
                "--bucket",
                BUCKET,
                "--prefix",
                "s3ec/",
            ])
            .arg("--out")
            .arg(&manifest_path)
            .args(["--verify", "--derived"])
            .output()
            .expect("run tests/s3ec/writer.py");
        assert!(
            out.status.success(),
            "the official S3 Encryption Client did not write its objects:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        w.log(&format!(
            "the official client wrote {} objects",
            objects(&manifest).len()
        ));
        Self { w, key, manifest }
    }

    fn kms_key(&self) -> String {
        format!("kms:{}", self.key)
    }
}

/// `tests/s3ec/writer.py` against the world's moto.
fn writer(w: &World) -> Command {
    let python = common::venv_tool("python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3ec/writer.py");
    let mut c = common::aws_command(&python, w.dir.path(), &w.moto.endpoint());
    c.arg(script)
        .args(["--endpoint", &w.moto.endpoint(), "--region", "us-east-1"]);
    c
}

fn objects(manifest: &Value) -> Vec<Value> {
    manifest["objects"].as_array().cloned().unwrap_or_default()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs sealpipe with a completion report; returns the run and, by key, each failed
/// object's code and message.
fn run_with_codes(
    w: &World,
    args: &[&str],
) -> (common::world::Run, BTreeMap<String, (String, String)>) {
    let csv = w.path(&format!("codes-{}.csv", std::process::id() ^ rand_suffix()));
    let csv_arg = csv.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--completion-report", &csv_arg]);
    let run = w.run(&all);
    let codes = common::world::completion_rows(&csv)
        .into_iter()
        .filter(|row| row[3] == "failed")
        .map(|row| (row[1].clone(), (row[4].clone(), row[5].clone())))
        .collect();
    (run, codes)
}

fn rand_suffix() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Every file below `root`, by its path relative to it.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    common::world::tree_files(root)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(root.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn official_objects_decrypt_and_verify_byte_for_byte() {
    let t = Written::new("s3ec_decrypt");
    let all = objects(&t.manifest);
    let modes: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|o| o["mode"].as_str()).collect();
    for mode in [
        "v3",
        "v2",
        "v3-multipart",
        "v2-multipart",
        "v2-instruction",
        "v3-instruction",
        "v2-legacy-kms",
    ] {
        assert!(modes.contains(mode), "the writer made no {mode} object");
    }
    let dest = t.w.path("plain");
    let dest_arg = dest.display().to_string();
    let key = t.kms_key();
    let run = t.w.run(&[
        "decrypt",
        "s3://s3ec/s3ec/",
        &dest_arg,
        "--key",
        &key,
        ALLOW[0],
        ALLOW[1],
    ]);
    run.assert_exit(0);
    let instruction_files = all
        .iter()
        .filter(|o| o["instruction_key"].is_string())
        .count();
    assert!(instruction_files >= 4);
    // Every object decrypted; every instruction file skipped, read with its object.
    run.assert_objects(
        (all.len() + instruction_files) as u64,
        all.len() as u64,
        0,
        0,
        instruction_files as u64,
    );
    let got = files(&dest);
    for o in &all {
        let name = o["key"].as_str().unwrap().strip_prefix("s3ec/").unwrap();
        let body = got
            .get(name)
            .unwrap_or_else(|| panic!("{name} was not decrypted\n{}", run.context()));
        assert_eq!(body.len() as u64, o["size"].as_u64().unwrap(), "{name}");
        assert_eq!(sha256_hex(body), o["sha256"].as_str().unwrap(), "{name}");
    }
    assert_eq!(
        got.len(),
        all.len(),
        "only the objects' plaintexts were written"
    );
    // One KMS Decrypt per object: S3EC gives each its own data key.
    assert_eq!(
        run.num("kms/Decrypt"),
        all.len() as u64,
        "{}",
        run.context()
    );

    // verify reads them all and writes nothing.
    let run = t.w.run(&[
        "verify",
        "s3://s3ec/s3ec/",
        "--key",
        &key,
        ALLOW[0],
        ALLOW[1],
    ]);
    run.assert_exit(0);
    run.assert_objects(
        (all.len() + instruction_files) as u64,
        all.len() as u64,
        0,
        0,
        instruction_files as u64,
    );

    // The default policy reads only key-committing (V3) content; V2 objects fail,
    // named, with nothing written for them.
    let strict = t.w.path("strict");
    let strict_arg = strict.display().to_string();
    let (run, codes) = run_with_codes(
        &t.w,
        &["decrypt", "s3://s3ec/s3ec/", &strict_arg, "--key", &key],
    );
    run.assert_exit(1);
    let v2 = all
        .iter()
        .filter(|o| o["mode"].as_str().unwrap().starts_with("v2"))
        .count();
    assert_eq!(run.objects("failed"), v2 as u64, "{}", run.context());
    assert_eq!(codes.len(), v2);
    for (key, (code, message)) in &codes {
        assert_eq!(code, "CommitmentPolicy", "{key}: {message}");
        assert!(
            message.contains("require-encrypt-allow-decrypt"),
            "{key}: {message}"
        );
    }
    let written = files(&strict);
    assert_eq!(written.len(), all.len() - v2);
    assert!(written.keys().all(|k| k.starts_with("v3")), "{written:?}");

    // A context the job requires must be in the object's; the ctx objects have it.
    let (run, codes) = run_with_codes(
        &t.w,
        &[
            "verify",
            "s3://s3ec/s3ec/v3/",
            "--key",
            &key,
            "--reproduced-context",
            "tenant=t-42",
        ],
    );
    run.assert_exit(1);
    let with_context = all
        .iter()
        .filter(|o| o["mode"] == "v3" && o["context"]["tenant"] == "t-42")
        .count();
    assert!(with_context > 0);
    assert_eq!(run.objects("ok"), with_context as u64, "{}", run.context());
    assert!(!codes.is_empty());
    for (key, (code, message)) in &codes {
        assert_eq!(code, "ContextMismatch", "{key}: {message}");
    }
}

#[test]
fn reencrypted_objects_are_esdk_messages_aws_encryption_cli_decrypts() {
    let t = Written::new("s3ec_reencrypt");
    let all = objects(&t.manifest);
    let key = t.kms_key();
    let run = t.w.run(&[
        "reencrypt",
        "s3://s3ec/s3ec/",
        "s3://s3ec/esdk/",
        "--old-key",
        &key,
        "--key",
        &key,
        ALLOW[0],
        ALLOW[1],
    ]);
    run.assert_exit(0);
    assert_eq!(run.objects("ok"), all.len() as u64, "{}", run.context());
    // New messages take pooled data keys: one GenerateDataKey, not one per object.
    assert!(run.num("kms/GenerateDataKey") <= 2, "{}", run.context());
    // Every output, in one directory, decrypted by one aws-encryption-cli run.
    let sealed = t.w.path("esdk");
    let opened = t.w.path("opened");
    std::fs::create_dir_all(&sealed).unwrap();
    std::fs::create_dir_all(&opened).unwrap();
    for o in &all {
        let name = o["key"].as_str().unwrap().strip_prefix("s3ec/").unwrap();
        let fetched = t.w.get(BUCKET, &format!("esdk/{name}"));
        for k in fetched.meta.user.keys() {
            assert!(
                !k.starts_with("x-amz-"),
                "{name}: the S3EC envelope key {k} was carried to the ESDK message"
            );
        }
        std::fs::write(sealed.join(name.replace('/', "_")), &fetched.body).unwrap();
    }
    let cli = common::venv_tool("aws-encryption-cli");
    let out = common::aws_command(&cli, t.w.dir.path(), &t.w.moto.endpoint())
        .args(["--decrypt", "-r", "-i", "esdk", "-o", "opened"])
        .args(["--wrapping-keys", &format!("key={}", t.key)])
        .args([
            "--commitment-policy",
            "require-encrypt-require-decrypt",
            "-S",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws-encryption-cli --decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for o in &all {
        let name = o["key"].as_str().unwrap().strip_prefix("s3ec/").unwrap();
        let local = name.replace('/', "_");
        let plain = std::fs::read(opened.join(format!("{local}.decrypted")))
            .or_else(|_| std::fs::read(opened.join(&local)))
            .unwrap_or_else(|e| {
                panic!(
                    "aws-encryption-cli wrote no plaintext for {name}: {e}; it wrote {:?}",
                    common::world::tree_files(&opened)
                )
            });
        assert_eq!(sha256_hex(&plain), o["sha256"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn tampered_objects_are_refused_with_nothing_written() {
    let t = Written::new("s3ec_tamper");
    let all = objects(&t.manifest);
    let pick = |mode: &str, size: u64| -> Value {
        all.iter()
            .find(|o| o["mode"] == mode && o["size"] == size && o["context"]["tenant"] == "t-42")
            .unwrap_or_else(|| panic!("no {mode} object of {size} bytes"))
            .clone()
    };
    let mib = 1 << 20;
    let mut cases: Vec<(String, &str)> = Vec::new();
    // Each case copies one official object to tampered/NAME, changed one way.
    let copy = |name: &str, from: &Value, edit: &Edit<'_>| {
        let fetched = t.w.get(BUCKET, from["key"].as_str().unwrap());
        let mut body = fetched.body.to_vec();
        let mut meta = fetched.meta.user.clone();
        edit(&mut body, &mut meta);
        let mut obj = common::world::Obj::plain(&format!("tampered/{name}"), body);
        obj.meta.user = meta;
        t.w.put(BUCKET, &obj);
    };
    for (mode, size) in [
        ("v3", 4096),
        ("v2", 4096),
        ("v3", 20 * mib),
        ("v2-multipart", 0),
    ] {
        let size = if mode == "v2-multipart" {
            all.iter().find(|o| o["mode"] == "v2-multipart").unwrap()["size"]
                .as_u64()
                .unwrap()
        } else {
            size
        };
        let o = pick(mode, size);
        let n = format!("{mode}-{size}");
        copy(&format!("{n}-body"), &o, &|b, _| {
            let mid = b.len() / 2;
            b[mid] ^= 1;
        });
        cases.push((format!("{n}-body"), "AuthenticationFailed"));
        copy(&format!("{n}-tag"), &o, &|b, _| {
            let last = b.len() - 1;
            b[last] ^= 0x80;
        });
        cases.push((format!("{n}-tag"), "AuthenticationFailed"));
        copy(&format!("{n}-truncated"), &o, &|b, _| {
            b.pop();
        });
        cases.push((format!("{n}-truncated"), "AuthenticationFailed"));
    }
    let v3 = pick("v3", 4096);
    let v2 = pick("v2", 4096);
    // Metadata: the commitment, the message ID, the IV, the context KMS binds, a
    // second format's key, the content cipher.
    let flip_b64 = |value: &mut String| {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::STANDARD;
        let mut raw = e.decode(value.as_bytes()).unwrap();
        raw[0] ^= 1;
        *value = e.encode(raw);
    };
    copy("v3-commitment", &v3, &|_, m| {
        flip_b64(m.get_mut("x-amz-d").unwrap())
    });
    cases.push(("v3-commitment".into(), "AuthenticationFailed"));
    copy("v3-message-id", &v3, &|_, m| {
        flip_b64(m.get_mut("x-amz-i").unwrap())
    });
    cases.push(("v3-message-id".into(), "AuthenticationFailed"));
    copy("v2-iv", &v2, &|_, m| {
        flip_b64(m.get_mut("x-amz-iv").unwrap())
    });
    cases.push(("v2-iv".into(), "AuthenticationFailed"));
    copy("v3-context", &v3, &|_, m| {
        let t = m.get_mut("x-amz-t").unwrap();
        *t = t.replace("t-42", "t-43");
    });
    cases.push(("v3-context".into(), "KeyringError"));
    copy("v3-cek-alg-context", &v3, &|_, m| {
        let t = m.get_mut("x-amz-t").unwrap();
        *t = t.replace("\"115\"", "\"AES/GCM/NoPadding\"");
    });
    cases.push(("v3-cek-alg-context".into(), "ContextMismatch"));
    copy("v3-downgraded", &v3, &|_, m| {
        m.insert("x-amz-key-v2".into(), m["x-amz-3"].clone());
    });
    cases.push(("v3-downgraded".into(), "InvalidS3ecMetadata"));
    copy("v2-cbc", &v2, &|_, m| {
        m.insert("x-amz-cek-alg".into(), "AES/CBC/PKCS5Padding".into());
    });
    cases.push(("v2-cbc".into(), "UnsupportedFormat"));
    copy("v2-encrypted-key", &v2, &|_, m| {
        flip_b64(m.get_mut("x-amz-key-v2").unwrap())
    });
    cases.push(("v2-encrypted-key".into(), "KeyringError"));
    // An instruction file that holds the V3 content keys (someone moved them there).
    let v3_instruction = all
        .iter()
        .find(|o| o["mode"] == "v3-instruction" && o["size"] == 4096)
        .expect("a v3-instruction object")
        .clone();
    copy("v3-instruction-moved", &v3_instruction, &|_, m| m.clear());
    let mut moved: BTreeMap<String, String> =
        serde_json::from_str(v3_instruction["instruction_body"].as_str().unwrap()).unwrap();
    for k in ["x-amz-c", "x-amz-d", "x-amz-i"] {
        moved.insert(
            k.into(),
            v3_instruction["metadata"][k].as_str().unwrap().into(),
        );
    }
    let mut file = common::world::Obj::plain(
        "tampered/v3-instruction-moved.instruction",
        serde_json::to_vec(&moved).unwrap(),
    );
    file.meta
        .user
        .insert("x-amz-crypto-instr-file".into(), String::new());
    t.w.put(BUCKET, &file);
    cases.push(("v3-instruction-moved".into(), "InvalidS3ecMetadata"));

    let dest = t.w.path("out");
    let dest_arg = dest.display().to_string();
    let key = t.kms_key();
    let (run, codes) = run_with_codes(
        &t.w,
        &[
            "decrypt",
            "s3://s3ec/tampered/",
            &dest_arg,
            "--key",
            &key,
            ALLOW[0],
            ALLOW[1],
        ],
    );
    run.assert_exit(1);
    for (name, code) in &cases {
        let got = codes.get(&format!("tampered/{name}"));
        assert_eq!(
            got.map(|(c, _)| c.as_str()),
            Some(*code),
            "{name}: {got:?}\n{}",
            run.context()
        );
    }
    assert_eq!(run.objects("ok"), 0, "{}", run.context());
    // Nothing written: no plaintext, no partial or staged file.
    assert!(
        common::world::tree_files(&dest).is_empty(),
        "{:?}",
        common::world::tree_files(&dest)
    );
    // Re-encrypting the same into S3 leaves no object and no multipart upload.
    let run = t.w.run(&[
        "reencrypt",
        "s3://s3ec/tampered/",
        "s3://s3ec/out/",
        "--old-key",
        &key,
        "--key",
        &key,
        ALLOW[0],
        ALLOW[1],
    ]);
    run.assert_exit(1);
    assert!(
        t.w.keys(BUCKET).iter().all(|k| !k.starts_with("out/")),
        "a tampered object left an output"
    );
    assert!(t.w.uploads(BUCKET).is_empty(), "{:?}", t.w.uploads(BUCKET));
}

#[test]
fn scan_counts_objects_by_what_protects_them() {
    let t = Written::new("s3ec_scan");
    let all = objects(&t.manifest);
    let w = &t.w;
    // Beside the S3EC objects: plaintext, SSE-S3, SSE-KMS with a bucket key, and ESDK
    // messages sealpipe writes.
    let kms_key = t.key.clone();
    w.rt.block_on(async {
        use aws_sdk_s3::types::ServerSideEncryption;
        for i in 0..3 {
            let put = |key: String| {
                w.client
                    .put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(vec![7u8; 1000].into())
            };
            put(format!("plain/{i}")).send().await.unwrap();
            put(format!("sse-s3/{i}"))
                .server_side_encryption(ServerSideEncryption::Aes256)
                .send()
                .await
                .unwrap();
            put(format!("sse-kms/{i}"))
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(&kms_key)
                .bucket_key_enabled(true)
                .send()
                .await
                .unwrap();
        }
    });
    let key = t.kms_key();
    w.run(&[
        "encrypt",
        "s3://s3ec/plain/",
        "s3://s3ec/esdk/",
        "--key",
        &key,
    ])
    .assert_exit(0);
    let report = w.path("scan.json");
    let out = w
        .command(&w.moto.endpoint())
        .args(["scan", "s3://s3ec/", "--json", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("scan --json prints JSON");
    let count = |server: &str, client: &str| -> u64 {
        doc["inventory"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["server_side"] == server && r["client_side"] == client)
            .map(|r| r["objects"].as_u64().unwrap())
            .sum()
    };
    let modes = |names: &[&str]| {
        all.iter()
            .filter(|o| names.contains(&o["mode"].as_str().unwrap()))
            .count() as u64
    };
    let none = "none";
    let plain = "none recognised (plaintext, or a format sealpipe does not know)";
    let table = serde_json::to_string_pretty(&doc).unwrap();
    assert_eq!(
        count(none, "S3EC v3 committing AES-GCM (kms+context wrap)"),
        modes(&["v3", "v3-multipart"]),
        "{table}"
    );
    assert_eq!(
        count(none, "S3EC v2 AES-GCM (kms+context wrap)"),
        modes(&["v2", "v2-multipart"]),
        "{table}"
    );
    assert_eq!(
        count(none, "S3EC v2 AES-GCM (kms wrap)"),
        modes(&["v2-legacy-kms"]),
        "{table}"
    );
    assert_eq!(
        count(
            none,
            "S3EC v3 committing AES-GCM (key in an instruction file)"
        ),
        modes(&["v3-instruction"]),
        "{table}"
    );
    assert_eq!(
        count(none, "S3EC instruction file"),
        modes(&["v3-instruction", "v2-instruction"]),
        "{table}"
    );
    // V2 objects whose whole envelope is in an instruction file, and plaintext.
    assert_eq!(
        count(none, plain),
        modes(&["v2-instruction"]) + 3,
        "{table}"
    );
    assert_eq!(count("SSE-S3", plain), 3, "{table}");
    assert_eq!(
        count(&format!("SSE-KMS {kms_key} (bucket key)"), plain),
        3,
        "{table}"
    );
    assert_eq!(
        count(none, &format!("ESDK 0x0478 by {kms_key}")),
        3,
        "{table}"
    );
    let total: u64 = doc["inventory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(total, doc["objects"].as_u64().unwrap());
    let written = all.len() as u64 + modes(&["v3-instruction", "v2-instruction"]) + 12;
    assert_eq!(total, written, "{table}");
    // The report holds the same inventory.
    let saved: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(saved["inventory"], doc["inventory"]);
    assert_eq!(saved["mode"], "scan");
    // The readable table names every kind.
    let out = w
        .command(&w.moto.endpoint())
        .args(["scan", "s3://s3ec/"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("   OBJECTS"), "{text}");
    for needle in [
        "SSE-S3",
        "SSE-KMS",
        "S3EC v3",
        "ESDK 0x0478",
        "S3EC instruction file",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}
