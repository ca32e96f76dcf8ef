//! The `sealpipe` binary end to end: trees, exit codes, reports, dry runs, and
//! tampered input that must leave nothing behind.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::cli::{KEY, OTHER, Workspace, stderr};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_tree_round_trips_with_mirrored_paths_and_a_report() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    ws.write("src/empty", b"");
    ws.write("src/deep/er/b.bin", &common::pseudo_random(200_000, 1));
    ws.write("src/exact", &common::pseudo_random(4096 * 3, 2));
    let o = ws.encrypt(
        "src",
        "enc",
        &[
            "--key",
            OTHER,
            "--context",
            "team=infra",
            "--frame-len",
            "4096",
            "--report",
            "enc.json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files_under(&ws.path("src")), files_under(&ws.path("enc")));
    let report: Value =
        serde_json::from_slice(&std::fs::read(ws.path("enc.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 4);
    assert_eq!(report["objects"]["failed"], 0);
    assert_eq!(report["objects"]["skipped"], 0);
    assert_eq!(report["bytes_in"], 5 + 200_000 + 4096 * 3);
    assert!(report["bytes_out"].as_u64().unwrap() > report["bytes_in"].as_u64().unwrap());
    assert!(report["elapsed_s"].is_number());
    assert_eq!(report["failures"], Value::Array(vec![]));

    // Either wrapping key alone decrypts (multi-keyring).
    for (key, out) in [(KEY, "dec1"), (OTHER, "dec2")] {
        let o = ws.run(&[
            "decrypt",
            "enc",
            out,
            "--key",
            key,
            "--reproduced-context",
            "team=infra",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        for f in files_under(&ws.path("src")) {
            assert_eq!(
                std::fs::read(ws.path("src").join(&f)).unwrap(),
                std::fs::read(ws.path(out).join(&f)).unwrap(),
                "{}",
                f.display()
            );
        }
    }
    // A wrong expected context fails every object: exit 1.
    let o = ws.run(&[
        "decrypt",
        "enc",
        "dec3",
        "--key",
        KEY,
        "--reproduced-context",
        "team=web",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("team"), "{}", stderr(&o));
    assert!(files_under(&ws.path("dec3")).is_empty());
}

#[test]
fn inspect_prints_the_header() {
    let ws = Workspace::new();
    ws.write("p", b"hello");
    let o = ws.encrypt("p", "p.enc", &["--suite", "0578", "--context", "a=b"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ws.run(&["inspect", "p.enc"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["version"], "2.0");
    assert_eq!(doc["suite"]["id"], "0x0578");
    assert_eq!(doc["frame_length"], 65536);
    assert_eq!(doc["encryption_context"]["a"], "b");
    assert!(doc["encryption_context"]["aws-crypto-public-key"].is_string());
    assert_eq!(doc["encrypted_data_keys"][0]["provider_id"], "tests");
    assert_eq!(doc["encrypted_data_keys"][0]["key_name"], "k1");
    assert_eq!(doc["message_id"].as_str().unwrap().len(), 64);
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let ws = Workspace::new();
    ws.write("p", b"x");
    for (args, needle) in [
        (
            vec![
                "encrypt",
                "p",
                "q",
                "--key",
                KEY,
                "--context",
                "aws-crypto-x=1",
            ],
            "aws-crypto-",
        ),
        (
            vec!["encrypt", "p", "q", "--key", KEY, "--suite", "0178"],
            "unsupported suite",
        ),
        (
            vec!["encrypt", "p", "q", "--key", KEY, "--frame-len", "0"],
            "frame length",
        ),
        (vec!["encrypt", "p", "q"], "no key given"),
        (
            vec!["encrypt", "p", "q", "--key", "raw-aes:n:k:missing.key"],
            "missing.key",
        ),
        (vec!["encrypt", "p", "p", "--key", KEY], "source itself"),
        (
            vec![
                "decrypt",
                "p",
                "q",
                "--key",
                KEY,
                "--commitment-policy",
                "lax",
            ],
            "commitment policy",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ] {
        let o = ws.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!ws.path("q").exists());
    }
}

#[test]
fn dry_run_writes_nothing_and_counts() {
    let ws = Workspace::new();
    ws.write("src/a", b"1234");
    ws.write("src/b/c", b"56");
    let o = ws.encrypt("src", "out", &["--dry-run", "--report", "r.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!ws.path("out").exists());
    assert!(
        stderr(&o).contains("2 would be encrypted"),
        "{}",
        stderr(&o)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["objects"]["planned"], 2);
    assert_eq!(report["bytes_planned"], 6);
    assert_eq!(report["data_keys"], 0);
}

#[cfg(unix)]
#[test]
fn symlinks_are_skipped_and_counted() {
    let ws = Workspace::new();
    ws.write("src/real", b"data");
    std::os::unix::fs::symlink("/etc/hostname", ws.path("src/link")).unwrap();
    let o = ws.encrypt("src", "out", &["--report", "r.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 1);
    assert_eq!(report["objects"]["skipped"], 1);
    assert!(!ws.path("out/link").exists());
}

/// Flipping any single byte of a small message fails decryption with a clear error and
/// leaves no output file; the source is untouched.
#[test]
fn every_single_byte_flip_fails_and_leaves_no_output() {
    let ws = Workspace::new();
    ws.write("p", &common::pseudo_random(300, 9));
    for suite in ["0478", "0578"] {
        let msg = format!("m{suite}");
        let o = ws.encrypt(
            "p",
            &msg,
            &["--context", "k=v", "--frame-len", "128", "--suite", suite],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let original = std::fs::read(ws.path(&msg)).unwrap();
        // Many tampered copies in one tree, decrypted by one job.
        let dir = format!("tampered{suite}");
        for i in 0..original.len() {
            let mut t = original.clone();
            t[i] ^= 0x01 << (i % 8);
            ws.write(format!("{dir}/{i:05}"), &t);
        }
        let out = format!("out{suite}");
        let o = ws.run(&[
            "decrypt", &dir, &out, "--key", KEY, "--report", "t.json", "--quiet",
        ]);
        assert_eq!(o.status.code(), Some(1));
        let report: Value =
            serde_json::from_slice(&std::fs::read(ws.path("t.json")).unwrap()).unwrap();
        assert_eq!(report["objects"]["ok"], 0, "a tampered message decrypted");
        assert_eq!(
            report["objects"]["failed"].as_u64().unwrap() as usize,
            original.len()
        );
        for f in report["failures"].as_array().unwrap() {
            let e = f["error"].as_str().unwrap();
            assert!(
                !e.is_empty() && f["path"].as_str().unwrap().contains(&dir),
                "{f}"
            );
        }
        assert!(
            files_under(&ws.path(&out)).is_empty(),
            "partial output left behind"
        );
        // The original still decrypts: sources are never modified.
        assert_eq!(std::fs::read(ws.path(&msg)).unwrap(), original);
    }
}

#[test]
fn truncated_and_extended_messages_fail_cleanly() {
    let ws = Workspace::new();
    ws.write("p", &common::pseudo_random(1000, 3));
    let o = ws.encrypt("p", "m", &["--frame-len", "256"]);
    assert!(o.status.success());
    let m = std::fs::read(ws.path("m")).unwrap();
    for len in 0..m.len() {
        ws.write(format!("cut/{len:05}"), &m[..len]);
    }
    let mut longer = m.clone();
    longer.push(0);
    ws.write("cut/longer", &longer);
    let o = ws.run(&[
        "decrypt", "cut", "out", "--key", KEY, "--report", "r.json", "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 0);
    assert!(files_under(&ws.path("out")).is_empty());
    let errors: String = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["error"].as_str().unwrap().to_owned() + "\n")
        .collect();
    assert!(errors.contains("truncated"), "{errors}");
    assert!(errors.contains("after the end"), "{errors}");
}

#[test]
fn the_hostile_input_limits_are_enforced() {
    let ws = Workspace::new();
    ws.write("p", b"data");
    let o = ws.encrypt("p", "m", &["--key", OTHER, "--frame-len", "4096"]);
    assert!(o.status.success());
    let o = ws.run(&[
        "decrypt",
        "m",
        "out",
        "--key",
        KEY,
        "--max-encrypted-data-keys",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("2 encrypted data keys; the limit is 1"),
        "{}",
        stderr(&o)
    );
    let o = ws.run(&[
        "decrypt",
        "m",
        "out",
        "--key",
        KEY,
        "--max-header-size",
        "100",
    ]);
    assert!(
        stderr(&o).contains("header is longer than the limit"),
        "{}",
        stderr(&o)
    );
    let o = ws.run(&[
        "decrypt",
        "m",
        "out",
        "--key",
        KEY,
        "--max-frame-len",
        "1024",
    ]);
    assert!(
        stderr(&o).contains("frame length 4096 exceeds"),
        "{}",
        stderr(&o)
    );
    assert!(!ws.path("out").exists());
}

/// SIGTERM mid-job: no new objects start, in-flight ones are abandoned cleanly (no
/// `.partial` files), finished outputs stay valid, the report says `interrupted`, exit 130.
#[cfg(unix)]
#[test]
fn a_terminated_job_leaves_no_partial_files() {
    let ws = Workspace::new();
    let files = 200;
    for i in 0..files {
        ws.write(format!("src/{i:04}"), &common::pseudo_random(512 * 1024, i));
    }
    let mut child = ws
        .command(&[
            "encrypt",
            "src",
            "out",
            "--key",
            KEY,
            "--concurrency",
            "1",
            "--report",
            "r.json",
            "--quiet",
        ])
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while files_under(&ws.path("out"))
        .iter()
        .all(|p| p.to_string_lossy().contains(".partial"))
    {
        assert!(started.elapsed().as_secs() < 60, "no output appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    common::faults::sigterm(&child);
    let status = child.wait().unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("r.json")).unwrap()).unwrap();
    if report["objects"]["ok"] == files {
        // The job won the race; nothing to check about interruption.
        assert!(status.success());
        return;
    }
    assert_eq!(status.code(), Some(130));
    assert_eq!(report["interrupted"], true);
    let outputs = files_under(&ws.path("out"));
    assert!(
        outputs
            .iter()
            .all(|p| !p.to_string_lossy().contains(".partial")),
        "{outputs:?}"
    );
    assert_eq!(
        outputs.len() as u64,
        report["objects"]["ok"].as_u64().unwrap()
    );
    let o = ws.run(&["decrypt", "out", "back", "--key", KEY]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[cfg(unix)]
#[test]
fn special_files_at_the_destination_are_never_replaced() {
    let ws = Workspace::new();
    ws.write("p", b"data");
    ws.write("elsewhere", b"keep me");
    std::os::unix::fs::symlink("elsewhere", ws.path("link")).unwrap();
    let o = ws.encrypt("p", "link", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(ws.path("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(ws.path("elsewhere")).unwrap(), b"keep me");
    assert_eq!(std::fs::read(ws.path("p")).unwrap(), b"data");
}

#[test]
fn reencrypt_moves_messages_to_new_keys_and_upgrades_legacy_and_signed_ones() {
    use sealpipe::format::{AlgorithmSuite, ContentType, EncryptionContext};
    let ws = Workspace::new();
    let signed_plain = common::pseudo_random(200_000, 1);
    let legacy_plain = common::pseudo_random(70_000, 2);
    ws.write("plain/signed.bin", &signed_plain);
    let o = ws.encrypt("plain/signed.bin", "old/signed.bin", &["--suite", "0578"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A legacy (v1, non-committing, signed) message under the same key, as older SDKs
    // wrote them.
    let keyring = common::raw_keyring("tests", "k1", &[0x42u8; 32]);
    let suite = AlgorithmSuite::from_id(0x0378).unwrap();
    let materials = common::materials(keyring.as_ref(), suite, EncryptionContext::new());
    ws.write(
        "old/legacy.bin",
        &common::legacy::legacy_message(&materials, ContentType::Framed, 4096, &legacy_plain),
    );

    // Legacy messages need the permissive read policy; without it that one fails.
    let o = ws.run(&[
        "reencrypt",
        "old",
        "strict",
        "--key",
        OTHER,
        "--old-key",
        KEY,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("legacy.bin"), "{}", stderr(&o));
    assert!(!ws.path("strict/legacy.bin").exists());

    let o = ws.run(&[
        "reencrypt",
        "old",
        "new",
        "--key",
        OTHER,
        "--old-key",
        KEY,
        "--commitment-policy",
        "require-encrypt-allow-decrypt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in ["signed.bin", "legacy.bin"] {
        let o = ws.run(&["inspect", &format!("new/{name}")]);
        let header: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(header["suite"]["id"], "0x0478", "{name}: {header}");
        let keys = header["encrypted_data_keys"].to_string();
        assert!(
            keys.contains("k2") && !keys.contains("k1"),
            "{name}: {keys}"
        );
    }
    // Only the new key opens the new messages, and they hold the old plaintexts.
    let o = ws.run(&["decrypt", "new", "back", "--key", OTHER]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(ws.path("back/signed.bin")).unwrap(),
        signed_plain
    );
    assert_eq!(
        std::fs::read(ws.path("back/legacy.bin")).unwrap(),
        legacy_plain
    );
    let o = ws.run(&["verify", "new", "--key", KEY]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn verify_reads_everything_and_writes_nothing() {
    let ws = Workspace::new();
    ws.write("src/a", &common::pseudo_random(100_000, 3));
    ws.write("src/b/c", b"small");
    let o = ws.encrypt("src", "enc", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ws.run(&["verify", "enc", "--key", KEY, "--report", "v.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("v.json")).unwrap()).unwrap();
    assert_eq!(report["mode"], "verify");
    assert_eq!(report["objects"]["ok"], 2);
    // What verify reads is the ciphertext.
    let ciphertext = ["enc/a", "enc/b/c"]
        .iter()
        .map(|p| std::fs::metadata(ws.path(p)).unwrap().len())
        .sum::<u64>();
    assert_eq!(report["bytes_in"], ciphertext);
    // A flipped bit in a frame is found, and nothing is written anywhere.
    let mut bytes = std::fs::read(ws.path("enc/a")).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    std::fs::write(ws.path("enc/a"), bytes).unwrap();
    let before = files_under(ws.dir.path());
    let o = ws.run(&["verify", "enc", "--key", KEY]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("enc/a"), "{}", stderr(&o));
    assert_eq!(files_under(ws.dir.path()), before);
    // verify takes no destination.
    let o = ws.run(&["verify", "enc", "out", "--key", KEY]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn fail_fast_starts_nothing_after_the_first_failure() {
    let ws = Workspace::new();
    for name in ["b", "c", "d"] {
        ws.write(format!("plain/{name}"), name.as_bytes());
    }
    let o = ws.encrypt("plain", "enc", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    ws.write("enc/a", b"not a message, and first in order");
    let o = ws.run(&[
        "decrypt",
        "enc",
        "out",
        "--key",
        KEY,
        "--fail-fast",
        "--concurrency",
        "1",
        "--report",
        "r.json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["failed"], 1, "{report}");
    assert_eq!(report["objects"]["ok"], 0, "{report}");
    assert_eq!(report["interrupted"], false, "{report}");
    // Without it, the failure stays one object's problem.
    let o = ws.run(&["decrypt", "enc", "out", "--key", KEY, "--report", "r.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&std::fs::read(ws.path("r.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 3, "{report}");
}

#[test]
fn rewrap_takes_flags_over_its_config_section_and_leaves_nothing_for_what_it_refuses() {
    let ws = Workspace::new();
    ws.write("src/a", &common::pseudo_random(300_000, 3));
    ws.write("src/deep/b", &common::pseudo_random(70_000, 4));
    let o = ws.encrypt("src", "enc", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Not a message, among messages: refused, the others rewrapped.
    ws.write("enc/plain.txt", b"not an ESDK message");
    ws.write(
        "rewrap.toml",
        format!(
            "[job]\nmode = \"rewrap\"\nsource = \"enc\"\ndestination = \"both\"\n\
             old_keys = [\"{KEY}\"]\nkeys = [\"{OTHER}\"]\n[rewrap]\nkeep_existing = true\nallow_header_nonce_reuse = true\n"
        )
        .as_bytes(),
    );
    let opens_with = |dir: &str, key: &str| {
        let out = format!("{dir}-{}", key.len() + dir.len());
        let o = ws.run(&[
            "decrypt",
            dir,
            &out,
            "--key",
            key,
            "--exclude",
            "plain.txt",
            "-q",
        ]);
        let _ = std::fs::remove_dir_all(ws.path(&out));
        o.status.success()
    };
    let o = ws.run(&["run", "--config", "rewrap.toml", "--report", "run.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report = ws.report("run.json");
    assert_eq!(report["objects"]["ok"], 2, "{report}");
    assert_eq!(report["objects"]["failed"], 1, "{report}");
    assert!(stderr(&o).contains("plain.txt"), "{}", stderr(&o));
    assert!(!ws.path("both/plain.txt").exists());
    assert!(opens_with("both", KEY) && opens_with("both", OTHER));
    // The same file under flags: --drop-key retires the old key, keeping the new one.
    // The config file's allow_header_nonce_reuse holds for the flags' run too.
    let o = ws.run(&[
        "rewrap",
        "both",
        "moved",
        "--config",
        "rewrap.toml",
        "--old-key",
        OTHER,
        "--drop-key",
        "tests/k1",
        "--exclude",
        "plain.txt",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(opens_with("moved", OTHER) && !opens_with("moved", KEY));
    // Dropping the last key is refused per object; nothing is written.
    let o = ws.run(&[
        "rewrap",
        "--allow-header-nonce-reuse",
        "moved",
        "none",
        "--old-key",
        OTHER,
        "--drop-key",
        "tests/k2",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no encrypted data key"),
        "{}",
        stderr(&o)
    );
    assert!(!ws.path("none").exists() || files_under(&ws.path("none")).is_empty());
    // A threshold out of range in the file is a configuration error.
    ws.write("bad.toml", b"[rewrap]\ncopy_threshold = \"1MiB\"\n");
    let o = ws.run(&[
        "rewrap",
        "--allow-header-nonce-reuse",
        "moved",
        "x",
        "--config",
        "bad.toml",
        "--old-key",
        OTHER,
        "--key",
        KEY,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("copy threshold"), "{}", stderr(&o));
}

#[test]
fn bench_runs_a_workload_through_every_mode_and_leaves_nothing_behind() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("scratch")).unwrap();
    let o = ws.run(&[
        "bench",
        "--objects",
        "40",
        "--size",
        "1KiB..256KiB",
        "--target",
        "scratch",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let result: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(result["objects"], 40, "{result}");
    let modes: Vec<&str> = result["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["encrypt", "decrypt", "reencrypt", "rewrap", "verify"]
    );
    for m in result["modes"].as_array().unwrap() {
        assert_eq!(m["objects"], 40, "{m}");
        for field in [
            "seconds",
            "mb_per_s",
            "p50_ms",
            "p99_ms",
            "of_copy",
            "of_aead",
            "of_memory_copy",
        ] {
            assert!(m[field].as_f64().unwrap() > 0.0, "{field}: {m}");
        }
        assert!(m["p50_ms"].as_f64() <= m["p99_ms"].as_f64(), "{m}");
        // Linux starts the peak over for each mode: far below the limits' buffers.
        let rss = m["peak_rss_bytes"].as_u64().unwrap();
        assert!(
            rss > 0 && rss <= result["peak_rss_bytes"].as_u64().unwrap(),
            "{m}"
        );
    }
    assert!(result["copy_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(result["copy"], "cp -r");
    assert!(
        result["limits"]["aead_all_cores_mb_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(
        std::fs::read_dir(ws.path("scratch")).unwrap().count(),
        0,
        "the benchmark's files are removed"
    );
    // Asked for nonsense, it says so.
    for bad in [
        &["bench", "--workload", "huge"][..],
        &["bench", "--objects", "5", "--size", "9KiB..1KiB"],
        &["bench", "--workload", "small", "--modes", "encrypt,shred"],
        &["bench", "--workload", "small", "--size", "4KiB"],
        &["bench", "--workload", "small", "--target", "no/such/dir"],
        &["bench", "--target", "scratch"],
        &["bench", "--size", "0"],
        &["bench", "--size", "2GiB"],
    ] {
        let o = ws.run(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

/// `--target memory` runs the workload on the tmpfs at /dev/shm, and says so plainly
/// where there is none.
#[test]
fn bench_runs_a_workload_in_memory() {
    let ws = Workspace::new();
    let child = ws
        .command(&[
            "bench",
            "--objects",
            "20",
            "--size",
            "1KiB..64KiB",
            "--target",
            "memory",
            "--modes",
            "verify",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let shm_is_tmpfs = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/dev/shm") && l.contains(" tmpfs "));
    if !shm_is_tmpfs {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("not a tmpfs"), "{}", stderr(&o));
        return;
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let result: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(result["target"], "/dev/shm", "{result}");
    assert_eq!(result["modes"][1]["mode"], "verify", "{result}");
    assert_eq!(result["modes"][1]["objects"], 20, "{result}");
    let own = std::path::Path::new("/dev/shm").join(format!("sealpipe-bench-{pid}"));
    assert!(!own.exists(), "{} is removed", own.display());
}

/// SIGTERM (or SIGINT) stops a workload as it stops a job: exit 130, and the files the
/// benchmark made are removed.
#[test]
fn an_interrupted_bench_removes_its_files() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("scratch")).unwrap();
    let child = ws
        .command(&[
            "bench",
            "--objects",
            "3000",
            "--size",
            "64KiB",
            "--target",
            "scratch",
            "--modes",
            "decrypt,reencrypt,verify",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Into the modes: the tree is written and the limits measured by then.
    let started = std::time::Instant::now();
    let own = ws
        .path("scratch")
        .join(format!("sealpipe-bench-{}", child.id()));
    while !own.join("encrypted").exists() {
        assert!(
            started.elapsed().as_secs() < 60,
            "the benchmark never got to encrypt"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    common::faults::sigterm(&child);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("interrupted"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "no result for an interrupted run");
    assert_eq!(
        std::fs::read_dir(ws.path("scratch")).unwrap().count(),
        0,
        "the benchmark's files are removed"
    );
}
