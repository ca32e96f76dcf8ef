//! The `sealpipe` binary at its edges: closed output streams, numbers out of range
//! from flags, the environment and the config file, special files where a small file
//! is expected, hostile bytes in messages and file names, reports that cannot be
//! written, dry runs without readable keys, reserved context keys.

mod common;

use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::Duration;

use sealpipe::format::{AlgorithmSuite, EncryptionContext};
use sealpipe::keys::{self, RawAesKeyring};
use sealpipe::stream;

use common::cli::{KEY, Workspace, stderr};

/// Waits for `child`, killing it and failing the test if it hangs: a FIFO read
/// without a writer would block forever.
fn wait_or_kill(mut child: Child, what: &str) -> ExitStatus {
    common::wait_or_kill(&mut child, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("{what}: sealpipe hung"))
}

/// `src/a.txt` and `src/b.txt`, sealed into `enc/`.
fn with_sealed_tree() -> Workspace {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    ws.write("src/b.txt", b"bravo");
    let o = ws.encrypt("src", "enc", &["-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    ws
}

fn assert_usage_error(o: &Output, needle: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains(needle), "{what}: expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

/// Runs `args` with stdout discarded: a usage error that says `needle` once.
fn assert_usage_error_once(ws: &Workspace, args: &[&str], needle: &str, what: &str) {
    let child = ws
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_usage_error(&o, needle, what);
    // Each cause said once.
    let err = stderr(&o).to_lowercase();
    assert_eq!(
        err.matches(&needle.to_lowercase()).count(),
        1,
        "{what}: {err}"
    );
}

// ---- 1. Closed output streams ----

/// Runs with stdout a pipe whose read end is closed before the child writes.
fn with_closed_stdout(ws: &Workspace, args: &[&str]) -> (ExitStatus, String) {
    let mut child = ws
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let err = common::read_stderr(&mut child);
    (wait_or_kill(child, &args.join(" ")), err)
}

#[test]
fn a_closed_stdout_ends_inspect_bench_and_help_quietly() {
    let ws = with_sealed_tree();
    let bench = [
        "bench",
        "--seconds",
        "0",
        "--threads",
        "1",
        "--size",
        "65536",
    ];
    for args in [
        vec!["inspect", "enc/a.txt"],
        [&bench[..], &["--json"]].concat(),
        [&bench[..], &["-q"]].concat(),
        vec!["--help"],
        vec!["help", "encrypt"],
        vec!["encrypt", "--help"],
        vec!["--version"],
    ] {
        let (status, err) = with_closed_stdout(&ws, &args);
        assert_eq!(status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said something: {err}");
    }
}

#[test]
fn a_closed_stdout_in_a_shell_pipeline_exits_0() {
    let ws = with_sealed_tree();
    // POSIX sh has no PIPESTATUS: the left side writes its own status to a file.
    for script in [
        r#"{ "$0" inspect enc/a.txt; echo $? > status; } | true"#,
        r#"{ "$0" help encrypt; echo $? > status; } | head -1 > /dev/null"#,
        r#"{ "$0" --help; echo $? > status; } | true"#,
        r#"{ "$0" bench --json --seconds 0 --threads 1 --size 4096; echo $? > status; } | true"#,
    ] {
        let o = ws.sh(script, &[]);
        let status = std::fs::read_to_string(ws.path("status")).unwrap();
        assert_eq!(status.trim(), "0", "{script}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        std::fs::remove_file(ws.path("status")).unwrap();
    }
}

#[test]
fn a_closed_stderr_does_not_change_a_successful_jobs_exit_code() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    ws.write("src/deep/b.txt", &[7u8; 100_000]);

    // Stderr a pipe nobody reads: progress lines and the summary hit EPIPE.
    let mut child = ws
        .command(&["encrypt", "src", "enc1", "--key", KEY])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(wait_or_kill(child, "stderr pipe").code(), Some(0));

    // Descriptor 2 closed outright (`2>&-`), also when the job fails on a usage error
    // (the final `error:` line must not panic either).
    for (args, code) in [
        (vec!["encrypt", "src", "enc2", "--key", KEY], 0),
        (vec!["decrypt", "enc1", "dec", "--key", KEY], 0),
        (vec!["encrypt", "src", "enc3", "--concurrency", "0"], 2),
        (
            vec!["encrypt", "src", "enc4", "--key", "raw-aes:a:b:missing"],
            2,
        ),
    ] {
        let o = ws.sh(r#"exec "$0" "$@" 2>&-"#, &args);
        assert_eq!(o.status.code(), Some(code), "{args:?}");
    }
    // Nothing meant for stderr landed in a file that got descriptor 2.
    assert_eq!(std::fs::read(ws.path("dec/a.txt")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(ws.path("dec/deep/b.txt")).unwrap(),
        vec![7u8; 100_000]
    );
    let o = ws.run(&["decrypt", "enc2", "dec2", "--key", KEY, "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(ws.path("dec2/a.txt")).unwrap(), b"alpha");
}

// ---- 2. Numbers out of range ----

/// Runs `command` with each case's flag given each of its values (`--flag=value` for a
/// negative one, which would read as a flag, else `--flag value`): each is a usage
/// error naming the case's needle, and writes nothing to stdout.
fn assert_flag_errors(ws: &Workspace, command: &[&str], cases: &[(&str, &[&str], &str)]) {
    for (flag, values, needle) in cases {
        for value in *values {
            let extra = if value.starts_with('-') {
                vec![format!("{flag}={value}")]
            } else {
                vec![flag.to_string(), value.to_string()]
            };
            let mut args = command.to_vec();
            args.extend(extra.iter().map(String::as_str));
            let o = ws.run(&args);
            assert_usage_error(&o, needle, &extra.join(" "));
            assert!(o.stdout.is_empty(), "{extra:?}");
        }
    }
}

#[test]
fn out_of_range_flags_are_usage_errors() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    assert_flag_errors(
        &ws,
        &["encrypt", "src", "enc", "--key", KEY],
        &[
            (
                "--concurrency",
                &["4611686018427387904", "0", "-3"],
                "1 to 65536",
            ),
            ("--cache-max-age", &["1e300", "nan"], "86400"),
            ("--cache-max-age", &["0"], "more than 0"),
            ("--kms-retry-max-delay", &["1e300", "-1"], "86400"),
            ("--kms-retry-total", &["inf"], "86400"),
            (
                "--kms-rate",
                &["nan", "inf", "-1", "0"],
                "requests per second",
            ),
            ("--frame-len", &["0", "2147483648"], "2147483647"),
            ("--cache-max-messages", &["0", "4294967297"], "4294967296"),
            ("--cache-max-bytes", &["0"], "from 1"),
            ("--part-size", &["1e400GiB"], "unknown unit"),
            ("--part-size", &["-1", "nan", "1.2.3MiB"], "not a size"),
            ("--part-size", &["18446744073709551616"], "more than"),
            ("--part-size", &["9999999TiB"], "5GiB"),
            ("--part-size", &["1MiB"], "5MiB"),
            ("--max-in-flight", &["9999999TiB"], "1TiB"),
            ("--max-in-flight", &[""], "not a size"),
        ],
    );
    assert_flag_errors(
        &ws,
        &["decrypt", "src", "dec", "--key", KEY],
        &[
            ("--max-encrypted-data-keys", &["0", "65536"], "1 to 65535"),
            ("--max-header-size", &["0"], "1073741824"),
            ("--max-frame-len", &["0"], "2147483647"),
        ],
    );
    assert!(!ws.path("enc").exists() && !ws.path("dec").exists());
}

#[test]
fn out_of_range_benchmark_settings_are_usage_errors() {
    let ws = Workspace::new();
    assert_flag_errors(
        &ws,
        &["bench", "--json"],
        &[
            (
                "--size",
                &["0", "18446744073709551615", "-1", "2GiB", "lots"],
                "1073741824",
            ),
            ("--threads", &["1000000"], "0 to 1024"),
            ("--seconds", &["nan", "-1", "inf", "1e300"], "3600"),
            ("--frame-len", &["0", "4294967295"], "67108864"),
        ],
    );
}

#[test]
fn out_of_range_environment_values_are_usage_errors() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    for (var, value, needle) in [
        ("SEALPIPE_CONCURRENCY", "4611686018427387904", "1 to 65536"),
        (
            "SEALPIPE_CONCURRENCY",
            "99999999999999999999999",
            "1 to 65536",
        ),
        ("SEALPIPE_CONCURRENCY", "0", "1 to 65536"),
        ("SEALPIPE_KMS_RATE", "nan", "requests per second"),
        ("SEALPIPE_KMS_RATE", "-1", "requests per second"),
        ("SEALPIPE_KMS_RATE", "1e400", "requests per second"),
    ] {
        let o = ws
            .command(&["encrypt", "src", "enc", "--key", KEY])
            .env(var, value)
            .output()
            .unwrap();
        assert_usage_error(&o, needle, &format!("{var}={value}"));
    }
    assert!(!ws.path("enc").exists());
}

#[test]
fn out_of_range_config_values_are_usage_errors() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    let cases = [
        ("[runtime]\nconcurrency = 4611686018427387904", "1 to 65536"),
        ("[runtime]\nconcurrency = -1", "1 to 65536"),
        ("[aws]\nkms_rate = nan", "requests per second"),
        ("[aws]\nkms_rate = 0", "requests per second"),
        ("[aws]\nkms_retry_max_delay = 1e300", "86400"),
        ("[aws]\nkms_retry_total = -inf", "86400"),
        ("[cache]\nmax_age_seconds = 1e300", "86400"),
        ("[cache]\nmax_age_seconds = 0", "more than 0"),
        ("[cache]\nmax_messages = 0", "4294967296"),
        ("[cache]\nmax_bytes = 0", "from 1"),
        ("[encrypt]\nframe_length = 0", "2147483647"),
        ("[encrypt]\nframe_length = 4294967296", "2147483647"),
        ("[decrypt]\nmax_encrypted_data_keys = 0", "1 to 65535"),
        ("[decrypt]\nmax_header_size = 0", "1073741824"),
        ("[decrypt]\nmax_frame_length = 2147483648", "2147483647"),
        ("[s3]\npart_size = \"1e400GiB\"", "unknown unit"),
        ("[s3]\npart_size = -1", "not a size"),
        ("[s3]\npart_size = \"9999999TiB\"", "5GiB"),
        (
            "[s3]\nmax_in_flight = \"18446744073709551616\"",
            "more than",
        ),
        ("[s3]\nmax_in_flight = 1", "10MiB"),
    ];
    for (toml, needle) in cases {
        ws.write("c.toml", toml.as_bytes());
        let o = ws.run(&["--config", "c.toml", "encrypt", "src", "enc", "--key", KEY]);
        assert_usage_error(&o, needle, toml);
        assert!(stderr(&o).contains("c.toml"), "{toml}: {}", stderr(&o));
    }
    assert!(!ws.path("enc").exists());
}

// ---- 4. Small files that are not small, or not files ----

#[test]
fn special_and_oversized_key_files_fail_fast() {
    let ws = with_sealed_tree();
    ws.mkfifo("fifo.key");
    ws.write("big.key", &vec![1u8; 10 << 20]);
    ws.write("33.key", &[1u8; 33]);
    std::fs::create_dir(ws.path("dir.key")).unwrap();
    for (path, needle) in [
        ("/dev/zero", "is a character device"),
        ("fifo.key", "is a FIFO"),
        ("big.key", "larger than 32 bytes"),
        ("33.key", "larger than 32 bytes"),
        ("dir.key", "is a directory"),
        ("missing.key", "cannot open"),
    ] {
        let key = format!("raw-aes:tests:k1:{path}");
        for args in [
            vec!["encrypt", "src", "out", "--key", key.as_str()],
            vec!["decrypt", "enc", "out", "--key", key.as_str()],
        ] {
            assert_usage_error_once(&ws, &args, needle, &key);
        }
    }
    assert!(!ws.path("out").exists());

    // A symlink to a regular key file (a Kubernetes secret mount) is fine.
    std::os::unix::fs::symlink(ws.path("k.key"), ws.path("link.key")).unwrap();
    let o = ws.run(&[
        "decrypt",
        "enc",
        "out",
        "--key",
        "raw-aes:tests:k1:link.key",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(ws.path("out/a.txt")).unwrap(), b"alpha");
}

#[test]
fn special_and_oversized_config_files_fail_fast() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    ws.mkfifo("fifo.toml");
    let mut big = b"# padding\n".repeat(200_000);
    big.extend_from_slice(b"[runtime]\nconcurrency = 2\n");
    ws.write("big.toml", &big);
    std::fs::create_dir(ws.path("dir.toml")).unwrap();
    for (path, needle) in [
        ("/dev/zero", "is a character device"),
        ("fifo.toml", "is a FIFO"),
        ("big.toml", "larger than 1048576 bytes"),
        ("dir.toml", "is a directory"),
    ] {
        for args in [
            vec!["--config", path, "encrypt", "src", "enc", "--key", KEY],
            vec!["run", "--config", path],
        ] {
            assert_usage_error_once(&ws, &args, needle, path);
        }
    }
    assert!(!ws.path("enc").exists());
}

// ---- 3. Hostile bytes are escaped ----

/// Characters that must never reach a terminal raw.
fn assert_terminal_safe(text: &str, what: &str) {
    for c in text.chars() {
        let bad = (c.is_control() && c != '\n')
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}');
        assert!(!bad, "{what}: raw {c:?} in {text:?}");
    }
}

const EVIL_NAMESPACE: &str = "ns\nerror: forged namespace\x1b[31m\u{202e}";
const EVIL_NAME: &str = "k\u{9b}31m\rerror: forged name\u{7f}";
const EVIL_KEY: &str = "ctx\x1b]0;title\x07\u{200b}";
const EVIL_VALUE: &str = "v\nerror: forged value\u{2066}\u{85}";

/// A message whose data key was wrapped by a keyring with a hostile namespace and
/// name, carrying a hostile encryption context.
fn crafted_message() -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let keyring = RawAesKeyring::new(EVIL_NAMESPACE, EVIL_NAME, vec![9u8; 32].into()).unwrap();
    let context: EncryptionContext = [(EVIL_KEY, EVIL_VALUE)].into_iter().collect();
    let materials = rt
        .block_on(keys::encryption_materials(
            &keyring,
            AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
            context,
            Default::default(),
        ))
        .unwrap();
    let mut message = Vec::new();
    stream::encrypt_to_vec(
        &materials,
        &Default::default(),
        None,
        b"secret",
        &mut message,
    )
    .unwrap();
    message
}

#[test]
fn hostile_names_and_message_bytes_are_escaped_on_stderr() {
    let ws = Workspace::new();
    let file = "evil\nerror: forged file\x1b[2J\u{202e}.bin";
    ws.write(format!("enc/{file}"), &crafted_message());
    ws.write("enc/plain.bin", &crafted_message());
    let o = ws.run(&["decrypt", "enc", "dec", "--key", KEY]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_terminal_safe(&err, "decrypt stderr");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 2, "one error line per object: {err}");
    assert!(
        !err.lines().any(|l| l.starts_with("error: forged")),
        "{err}"
    );
    assert!(
        errors
            .iter()
            .any(|l| l.contains("evil\\nerror: forged file")),
        "{err}"
    );
    assert!(
        !ws.path("dec")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );

    // A hostile key reference and context flag are escaped in usage errors too.
    let o = ws.run(&[
        "encrypt",
        "enc",
        "x",
        "--key",
        "bogus\n\x1b[31merror: forged",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_terminal_safe(&stderr(&o), "usage error");
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn inspect_escapes_what_a_terminal_must_not_see_and_loses_nothing() {
    let ws = Workspace::new();
    let file = "evil\x1b[2J\u{9b}.bin";
    ws.write(file, &crafted_message());
    let o = ws.run(&["inspect", file]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_terminal_safe(&out, "inspect stdout");
    for escaped in [
        "\\u202e", "\\u009b", "\\u007f", "\\u200b", "\\u2066", "\\u0085",
    ] {
        assert!(out.contains(escaped), "{escaped} in {out}");
    }
    // The escapes decode to exactly the message's strings.
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["encryption_context"][EVIL_KEY], EVIL_VALUE);
    let edk = &doc["encrypted_data_keys"][0];
    assert_eq!(edk["provider_id"], EVIL_NAMESPACE);
    assert_eq!(edk["key_name"], EVIL_NAME);
    assert_eq!(doc["file"], "evil\\u{1b}[2J\\u{9b}.bin");
}

// ---- 5. Reports, dry runs, reserved context keys ----

#[test]
fn an_unwritable_report_is_refused_before_any_object_is_processed() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    ws.write("plainfile", b"x");
    std::fs::create_dir(ws.path("reports")).unwrap();
    for report in ["reports", "plainfile/r.json"] {
        for args in [
            vec!["encrypt", "src", "enc", "--key", KEY, "--report", report],
            vec![
                "encrypt",
                "src",
                "enc",
                "--key",
                KEY,
                "--dry-run",
                "--report",
                report,
            ],
        ] {
            let o = ws.run(&args);
            assert_eq!(o.status.code(), Some(2), "{report}: {}", stderr(&o));
            assert!(!ws.path("enc").exists(), "{report}: the job ran");
            let err = stderr(&o).to_lowercase();
            assert!(err.matches("directory").count() <= 1, "{err}");
        }
        // `sealpipe run` checks the report before it creates a development key, too.
        let config = format!(
            "[job]\nsource = \"src\"\ndestination = \"enc\"\nkeys = [\"raw-aes:dev:k:dev.key\"]\n\
             create_missing_dev_key = true\n[runtime]\nreport = \"{report}\"\n"
        );
        ws.write("c.toml", config.as_bytes());
        let o = ws.run(&["run", "--config", "c.toml"]);
        assert_eq!(o.status.code(), Some(2), "{report}: {}", stderr(&o));
        assert!(!ws.path("enc").exists(), "{report}: the job ran");
        assert!(!ws.path("dev.key").exists(), "{report}: a key was created");
    }
    assert_eq!(std::fs::read_dir(ws.path("reports")).unwrap().count(), 0);
    assert_eq!(std::fs::read(ws.path("src/a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(ws.path("plainfile")).unwrap(), b"x");

    // A writable report appears whole, with no temporary file left beside it.
    let o = ws.encrypt("src", "enc", &["--report", "reports/r.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<_> = std::fs::read_dir(ws.path("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["r.json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path("reports/r.json")).unwrap()).unwrap();
    assert_eq!(report["objects"]["ok"], 1);
}

#[test]
fn dry_runs_read_no_key_file() {
    let ws = with_sealed_tree();
    let missing = "raw-aes:tests:k1:missing.key";
    for args in [
        vec!["encrypt", "src", "out", "--key", missing, "--dry-run"],
        vec![
            "encrypt",
            "src",
            "out",
            "--key",
            "raw-aes:tests:k1:/dev/zero",
            "--dry-run",
        ],
        vec!["decrypt", "enc", "out", "--key", missing, "--dry-run"],
        vec!["verify", "enc", "--key", missing, "--dry-run"],
        // Discovery needs no key reference, and builds no KMS client in a dry run.
        vec!["decrypt", "enc", "out", "--discovery", "--dry-run"],
        vec![
            "reencrypt",
            "enc",
            "out",
            "--key",
            missing,
            "--old-key",
            missing,
            "--dry-run",
        ],
    ] {
        let o = ws.run(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("no key file is read"), "{}", stderr(&o));
        assert!(stderr(&o).contains("2 objects listed"), "{}", stderr(&o));
    }
    assert!(!ws.path("out").exists());
    assert!(!ws.path("missing.key").exists());

    // A reference that is not one is still a usage error, and no key at all too.
    let o = ws.run(&["encrypt", "src", "out", "--key", "nonsense", "--dry-run"]);
    assert_usage_error(&o, "unrecognized key reference", "nonsense");
    let o = ws.run(&["encrypt", "src", "out", "--dry-run"]);
    assert_usage_error(&o, "no key given", "no key");

    // `run --dry-run` neither reads nor creates the job's key.
    ws.write(
        "c.toml",
        b"[job]\nsource = \"src\"\ndestination = \"out\"\nkeys = [\"raw-aes:dev:k:dev.key\"]\n\
          create_missing_dev_key = true\n",
    );
    let o = ws.run(&["run", "--dry-run", "--config", "c.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!ws.path("dev.key").exists());
    assert!(!ws.path("out").exists());
}

#[test]
fn reserved_context_keys_are_refused_wherever_they_are_given() {
    let ws = with_sealed_tree();
    for args in [
        vec![
            "decrypt",
            "enc",
            "out",
            "--key",
            KEY,
            "--reproduced-context",
            "aws-crypto-public-key=x",
        ],
        vec![
            "verify",
            "enc",
            "--key",
            KEY,
            "--reproduced-context",
            "aws-crypto-x=1",
        ],
        vec![
            "encrypt",
            "src",
            "out",
            "--key",
            KEY,
            "--context",
            "aws-crypto-x=1",
        ],
    ] {
        assert_usage_error(&ws.run(&args), "reserved", &args.join(" "));
        // A dry run uses no key, but refuses the same jobs.
        let mut dry = args.clone();
        dry.push("--dry-run");
        assert_usage_error(&ws.run(&dry), "reserved", &dry.join(" "));
    }
    for toml in [
        "[decrypt.reproduced_context]\n\"aws-crypto-x\" = \"1\"\n",
        "[job.context]\n\"aws-crypto-x\" = \"1\"\n",
    ] {
        ws.write("c.toml", toml.as_bytes());
        let mode = if toml.contains("decrypt") {
            "decrypt"
        } else {
            "encrypt"
        };
        let source = if mode == "decrypt" { "enc" } else { "src" };
        let o = ws.run(&["--config", "c.toml", mode, source, "out", "--key", KEY]);
        assert_usage_error(&o, "reserved", toml);
    }
    assert!(!ws.path("out").exists());
}

/// `report merge` is given files a user names: a device, a FIFO (whose opening would
/// wait for a writer) or an enormous file are refused at once, never read without end.
#[test]
fn report_merge_refuses_what_is_not_a_report_file() {
    let ws = Workspace::new();
    let fifo = ws.path("fifo.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // Sparse: 300 MiB long, nothing on disk.
    let huge = std::fs::File::create(ws.path("huge.json")).unwrap();
    huge.set_len(300 << 20).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["report", "merge", "/dev/zero"], "not a regular file"),
        (&["report", "merge", "fifo.csv"], "not a regular file"),
        (&["report", "merge", "huge.json"], "larger than 256 MiB"),
        (
            &["report", "merge", "missing.json"],
            "cannot read missing.json",
        ),
    ];
    for (args, needle) in cases {
        let child = ws
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_or_kill(child, &format!("{args:?}"));
        assert_eq!(status.code(), Some(2), "{args:?}");
        let o = ws.run(args);
        assert_usage_error(&o, needle, &format!("{args:?}"));
    }
}
