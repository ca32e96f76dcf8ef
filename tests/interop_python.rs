//! Interop with the official AWS Encryption SDK for Python, through the Raw AES keyring:
//! sealpipe's messages decrypt there, and its messages decrypt here.
//!
//! The peer runs from the project's test virtualenv (`scripts/setup-venv.sh`, which the
//! test command `scripts/test.sh` runs first). A missing venv fails the test and says how
//! to create it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use sealpipe::format::{AlgorithmSuite, EncryptionContext};
use sealpipe::stream::DecryptOptions;

const NAMESPACE: &str = "sealpipe-interop";
const NAME: &str = "interop key 256";
const KEY: [u8; 32] = *b"0123456789abcdef0123456789ABCDEF";

fn run_peer(jobs: &Value, dir: &Path) -> Vec<Value> {
    let jobs_file = dir.join(format!("jobs-{}.json", rand_suffix()));
    std::fs::write(&jobs_file, serde_json::to_vec(jobs).unwrap()).unwrap();
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/esdk_peer.py");
    let out = Command::new(common::venv_tool("python"))
        .arg(peer)
        .arg("batch")
        .arg(&jobs_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("peer prints one JSON list")
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    sealpipe::crypto::random_bytes(&mut b).unwrap();
    hex::encode(b)
}

fn rich_context() -> EncryptionContext {
    [
        ("bucket", "nightly-backups"),
        ("purpose", "interop test"),
        ("ünïcødé", "値 ✓"),
        ("z-last", "="),
    ]
    .into_iter()
    .collect()
}

fn context_json(ctx: &EncryptionContext) -> Value {
    Value::Object(ctx.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
}

/// (size, frame length) pairs: empty, tiny, exact frame multiples, several MiB, and frame
/// lengths Python itself could not write (it still reads them).
const SHAPES: &[(usize, u32)] = &[
    (0, 4096),
    (1, 4096),
    (128 * 10, 128),
    (4096, 4096),
    (4097, 4096),
    (65536 * 3, 65536),
    (3 * 1024 * 1024 + 5, 65536),
    (5 * 1024 * 1024, 1024 * 1024),
    (1000, 1),
    (10_000, 100),
    (20_000, 4097),
];

#[test]
fn sealpipe_messages_decrypt_in_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let keyring = common::raw_keyring(NAMESPACE, NAME, &KEY);
    let mut jobs = Vec::new();
    let mut expected = Vec::new();
    for suite in [
        AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
    ] {
        for ctx in [EncryptionContext::new(), rich_context()] {
            let materials = common::materials(keyring.as_ref(), suite, ctx.clone());
            for (i, &(size, frame)) in SHAPES.iter().enumerate() {
                let plaintext = common::pseudo_random(size, i as u64 + 7);
                let message = common::encrypt(&materials, frame, &plaintext);
                let n = jobs.len();
                let input = dir.path().join(format!("{n}.msg"));
                let output = dir.path().join(format!("{n}.out"));
                std::fs::write(&input, &message).unwrap();
                jobs.push(
                    json!({"op": "decrypt", "key_file": key_file, "namespace": NAMESPACE,
                    "name": NAME, "input": input, "output": output}),
                );
                expected.push((suite, frame, ctx.clone(), plaintext, output));
            }
        }
    }
    let results = run_peer(&Value::Array(jobs), dir.path());
    assert_eq!(results.len(), expected.len());
    for (r, (suite, frame, ctx, plaintext, output)) in results.iter().zip(expected) {
        let what = format!(
            "suite {suite} frame {frame} size {} ctx {}",
            plaintext.len(),
            ctx.len()
        );
        assert_eq!(r["ok"], true, "{what}: {r}");
        assert_eq!(r["suite"], format!("{:04x}", suite.id), "{what}");
        assert_eq!(r["frame_length"], frame, "{what}");
        for (k, v) in ctx.iter() {
            assert_eq!(r["context"][k], v, "{what}");
        }
        assert_eq!(std::fs::read(&output).unwrap(), plaintext, "{what}");
    }
}

#[test]
fn python_sdk_messages_decrypt_in_sealpipe() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let mut jobs = Vec::new();
    let mut cases = Vec::new();
    for suite in ["0478", "0578"] {
        for ctx in [EncryptionContext::new(), rich_context()] {
            // Python writes only multiples of 128 bytes as frame lengths.
            for (i, &(size, frame)) in SHAPES.iter().filter(|(_, f)| f % 128 == 0).enumerate() {
                let plaintext = common::pseudo_random(size, i as u64 + 100);
                let n = jobs.len();
                let input = dir.path().join(format!("{n}.plain"));
                let output = dir.path().join(format!("{n}.msg"));
                std::fs::write(&input, &plaintext).unwrap();
                jobs.push(
                    json!({"op": "encrypt", "key_file": key_file, "namespace": NAMESPACE,
                    "name": NAME, "suite": suite, "frame_len": frame, "context": context_json(&ctx),
                    "input": input, "output": output}),
                );
                cases.push((suite, frame, ctx.clone(), plaintext, output));
            }
        }
    }
    let results = run_peer(&Value::Array(jobs), dir.path());
    assert_eq!(results.len(), cases.len(), "the peer answered every job");
    let keyring = common::raw_keyring(NAMESPACE, NAME, &KEY);
    for (r, (suite, frame, ctx, plaintext, output)) in results.iter().zip(cases) {
        let what = format!("suite {suite} frame {frame} size {}", plaintext.len());
        assert_eq!(r["ok"], true, "{what}: {r}");
        let message = std::fs::read(&output).unwrap();
        // The reader may insist on the context it expects.
        let (header, out) =
            common::decrypt(keyring.as_ref(), &ctx, &DecryptOptions::default(), &message)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out, plaintext, "{what}");
        assert_eq!(format!("{:04x}", header.body.suite.id), suite, "{what}");
        assert_eq!(header.body.frame_length, frame, "{what}");
    }
}

#[test]
fn the_cli_decrypts_a_python_message_and_python_decrypts_a_cli_message() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let plaintext = common::pseudo_random(300_000, 5);
    std::fs::write(dir.path().join("plain"), &plaintext).unwrap();
    let keyref = format!("raw-aes:{NAMESPACE}:{NAME}:{}", key_file.display());
    let sealpipe = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_sealpipe"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    sealpipe(&[
        "encrypt",
        "plain",
        "by-sealpipe",
        "--key",
        &keyref,
        "--suite",
        "0578",
        "--context",
        "k=v",
    ]);
    let results = run_peer(
        &json!([
            {"op": "decrypt", "key_file": key_file, "namespace": NAMESPACE, "name": NAME,
             "input": dir.path().join("by-sealpipe"), "output": dir.path().join("py-plain")},
            {"op": "encrypt", "key_file": key_file, "namespace": NAMESPACE, "name": NAME,
             "suite": "0478", "frame_len": 4096, "context": {"k": "v"},
             "input": dir.path().join("plain"), "output": dir.path().join("by-python")},
        ]),
        dir.path(),
    );
    assert!(results.iter().all(|r| r["ok"] == true), "{results:?}");
    assert_eq!(
        std::fs::read(dir.path().join("py-plain")).unwrap(),
        plaintext
    );
    sealpipe(&[
        "decrypt",
        "by-python",
        "sp-plain",
        "--key",
        &keyref,
        "--reproduced-context",
        "k=v",
    ]);
    assert_eq!(
        std::fs::read(dir.path().join("sp-plain")).unwrap(),
        plaintext
    );
}
