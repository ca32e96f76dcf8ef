//! AWS KMS against a real KMS protocol server (moto), through the `sealpipe` binary:
//! data keys scale with limits, not objects; throttling is retried; permission and key
//! state errors are clear; multi-region keyrings; interop with aws-encryption-cli.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use serde_json::Value;

use common::faults::FaultProxy;
use common::moto::Moto;

struct Kms {
    moto: Moto,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Kms {
    fn start() -> Self {
        Self {
            moto: Moto::start(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn client(&self, region: &str) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .http_client(sealpipe::aws::http_client())
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(self.moto.endpoint())
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    fn create_key(&self, region: &str) -> String {
        let c = self.client(region);
        self.rt.block_on(async {
            c.create_key()
                .send()
                .await
                .unwrap()
                .key_metadata
                .unwrap()
                .arn
                .unwrap()
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn files(&self, dir: &str, n: usize, size: usize) {
        let d = self.path(dir);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            std::fs::write(
                d.join(format!("{i:05}")),
                common::pseudo_random(size, i as u64),
            )
            .unwrap();
        }
    }

    fn command(&self, program: &Path, endpoint: &str) -> Command {
        common::aws_command(program, self.dir.path(), endpoint)
    }

    fn sealpipe(&self, args: &[&str]) -> Output {
        self.sealpipe_via(&self.moto.endpoint(), args)
    }

    fn sealpipe_via(&self, endpoint: &str, args: &[&str]) -> Output {
        self.command(Path::new(env!("CARGO_BIN_EXE_sealpipe")), endpoint)
            .args(args)
            .output()
            .unwrap()
    }

    fn report(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }

    /// The first encrypted data key's ciphertext of a message file.
    fn edk(&self, file: &Path) -> Vec<u8> {
        let bytes = std::fs::read(file).unwrap();
        let (header, _) =
            sealpipe::stream::read_header(&mut &bytes[..], &Default::default()).unwrap();
        header.body.encrypted_data_keys[0].ciphertext.clone()
    }

    /// Starts the KMS fault proxy in front of moto.
    fn proxy(&self, error: &str, every: u32, actions: &str) -> FaultProxy {
        let every = every.to_string();
        let args = ["--error", error, "--every", &every, "--actions", actions];
        FaultProxy::start("kms_fault_proxy.py", &self.moto.endpoint(), &args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        stderr(o)
    );
}

#[test]
fn two_thousand_files_take_a_handful_of_kms_calls() {
    let kms = Kms::start();
    let key = kms.create_key("us-east-1");
    kms.files("src", 2000, 100);
    ok(&kms.sealpipe(&[
        "encrypt",
        "src",
        "enc",
        "--key",
        &key,
        "--context",
        "job=nightly",
        "--report",
        "e.json",
        "-q",
    ]));
    let report = kms.report("e.json");
    assert_eq!(report["objects"]["ok"], 2000);
    let calls = report["kms"]["GenerateDataKey"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&calls),
        "{calls} GenerateDataKey calls for 2000 objects"
    );
    assert_eq!(report["data_keys"], calls);
    assert_eq!(
        report["cache"]["hits"].as_u64().unwrap() + report["cache"]["misses"].as_u64().unwrap(),
        2000
    );

    ok(&kms.sealpipe(&[
        "decrypt",
        "enc",
        "dec",
        "--key",
        &key,
        "--reproduced-context",
        "job=nightly",
        "--report",
        "d.json",
        "-q",
    ]));
    let report = kms.report("d.json");
    assert_eq!(report["objects"]["ok"], 2000);
    assert!(
        report["kms"]["Decrypt"].as_u64().unwrap() <= calls,
        "{report}"
    );
    assert_eq!(
        std::fs::read(kms.path("dec/01999")).unwrap(),
        common::pseudo_random(100, 1999)
    );
}

#[test]
fn cache_limits_bound_each_data_key() {
    let kms = Kms::start();
    let key = kms.create_key("us-east-1");
    kms.files("src", 1000, 10);
    ok(&kms.sealpipe(&[
        "encrypt",
        "src",
        "enc",
        "--key",
        &key,
        "--cache-max-messages",
        "100",
        "--report",
        "e.json",
        "-q",
    ]));
    let report = kms.report("e.json");
    let calls = report["kms"]["GenerateDataKey"].as_u64().unwrap();
    assert!(
        (10..=11).contains(&calls),
        "{calls} data keys for 1000 objects at 100 per key"
    );
    let mut per_key = std::collections::HashMap::new();
    for i in 0..1000 {
        *per_key
            .entry(kms.edk(&kms.path(&format!("enc/{i:05}"))))
            .or_insert(0) += 1;
    }
    assert_eq!(per_key.len(), 10, "distinct data keys in the outputs");
    assert!(
        per_key.values().all(|&n| n == 100),
        "{:?}",
        per_key.values()
    );

    // Max age: with keys living 50 ms, a job that takes longer rotates them.
    kms.files("slow", 300, 64 * 1024);
    ok(&kms.sealpipe(&[
        "encrypt",
        "slow",
        "enc2",
        "--key",
        &key,
        "--cache-max-age",
        "0.05",
        "--concurrency",
        "1",
        "--report",
        "a.json",
        "-q",
    ]));
    let report = kms.report("a.json");
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    let keys = report["kms"]["GenerateDataKey"].as_u64().unwrap();
    assert!(
        keys as f64 >= (elapsed / 0.05).floor().min(3.0),
        "{keys} keys in {elapsed} s"
    );
    let first = kms.edk(&kms.path("enc2/00000"));
    let last = kms.edk(&kms.path("enc2/00299"));
    assert!(
        elapsed < 0.05 || first != last,
        "a key outlived its max age"
    );
}

#[test]
fn throttling_is_retried_and_counted() {
    let kms = Kms::start();
    let key = kms.create_key("us-east-1");
    kms.files("src", 200, 10);
    let proxy = kms.proxy("ThrottlingException", 2, "GenerateDataKey,Decrypt");
    ok(&kms.sealpipe_via(
        &proxy.endpoint,
        &[
            "encrypt",
            "src",
            "enc",
            "--key",
            &key,
            "--cache-max-messages",
            "10",
            "--report",
            "e.json",
            "-q",
        ],
    ));
    let report = kms.report("e.json");
    assert_eq!(report["objects"]["ok"], 200);
    assert_eq!(report["objects"]["failed"], 0);
    let throttled = report["kms"]["throttled"].as_u64().unwrap();
    assert!(throttled >= 10, "{report}");
    assert!(report["kms"]["retries"].as_u64().unwrap() >= throttled);
    ok(&kms.sealpipe_via(
        &proxy.endpoint,
        &[
            "decrypt", "enc", "dec", "--key", &key, "--report", "d.json", "-q",
        ],
    ));
    let report = kms.report("d.json");
    assert_eq!(report["objects"]["ok"], 200);
    assert!(
        report["kms"]["throttled"].as_u64().unwrap() >= 5,
        "{report}"
    );
}

#[test]
fn access_denied_names_the_key_the_action_and_both_policies() {
    let kms = Kms::start();
    let key = kms.create_key("us-east-1");
    kms.files("src", 3, 10);
    // Encrypt: the first data key is fetched before any object, so the job cannot
    // start: exit 2, no output.
    let deny = kms.proxy("AccessDeniedException", 1, "GenerateDataKey");
    let o = kms.sealpipe_via(
        &deny.endpoint,
        &["encrypt", "src", "enc", "--key", &key, "--report", "r.json"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    for needle in [
        key.as_str(),
        "GenerateDataKey",
        "AccessDeniedException",
        "key policy",
        "IAM policy",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from: {e}");
    }
    assert_eq!(
        e.matches("AccessDeniedException").count(),
        1,
        "one line, no retries: {e}"
    );
    assert!(!kms.path("enc").exists());
    drop(deny);
    // Decrypt: each object may use another key, so each fails on its own: exit 1.
    ok(&kms.sealpipe(&["encrypt", "src", "enc", "--key", &key, "-q"]));
    let deny = kms.proxy("AccessDeniedException", 1, "Decrypt");
    let o = kms.sealpipe_via(&deny.endpoint, &["decrypt", "enc", "dec", "--key", &key]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("kms:Decrypt"), "{}", stderr(&o));
    assert!(std::fs::read_dir(kms.path("dec")).map_or(0, |d| d.count()) == 0);
}

#[test]
fn disabled_pending_deletion_and_unknown_keys_fail_clearly() {
    let kms = Kms::start();
    kms.files("src", 1, 10);
    let key = kms.create_key("us-east-1");
    let unknown = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let check = |endpoint: &str, key: &str, code: &str, advice: &str| {
        let o = kms.sealpipe_via(endpoint, &["encrypt", "src", "out", "--key", key]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        for needle in [code, key, "GenerateDataKey", advice] {
            assert!(e.contains(needle), "{needle:?} missing from: {e}");
        }
        assert!(!kms.path("out").exists());
    };
    // moto answers an unknown key itself.
    check(
        &kms.moto.endpoint(),
        unknown,
        "NotFoundException",
        "check the key ID",
    );
    // moto 5.2.5 does not enforce key state (it serves GenerateDataKey for disabled keys
    // and keys pending deletion), so the proxy returns what KMS returns for them.
    let disabled = kms.proxy("DisabledException", 1, "GenerateDataKey");
    check(
        &disabled.endpoint,
        &key,
        "DisabledException",
        "the key is disabled",
    );
    let pending = kms.proxy("KMSInvalidStateException", 1, "GenerateDataKey");
    check(
        &pending.endpoint,
        &key,
        "KMSInvalidStateException",
        "pending deletion",
    );
}

#[test]
fn aliases_and_key_ids_encrypt_and_the_arn_is_recorded() {
    let kms = Kms::start();
    let key = kms.create_key("us-east-1");
    let id = key.rsplit('/').next().unwrap().to_string();
    let client = kms.client("us-east-1");
    kms.rt.block_on(async {
        client
            .create_alias()
            .alias_name("alias/nightly")
            .target_key_id(&id)
            .send()
            .await
            .unwrap();
    });
    kms.files("src", 1, 10);
    let alias_arn = key.replace(&format!("key/{id}"), "alias/nightly");
    for (i, r) in [format!("kms:{id}"), "alias/nightly".into(), alias_arn]
        .iter()
        .enumerate()
    {
        let out = format!("out{i}");
        ok(&kms.sealpipe(&["encrypt", "src/00000", &out, "--key", r]));
        let bytes = std::fs::read(kms.path(&out)).unwrap();
        let (h, _) = sealpipe::stream::read_header(&mut &bytes[..], &Default::default()).unwrap();
        assert_eq!(h.body.encrypted_data_keys[0].provider_id, "aws-kms");
        assert_eq!(
            h.body.encrypted_data_keys[0].provider_info,
            key.as_bytes(),
            "{r}"
        );
        // Strict decrypt needs the key ARN; discovery finds it.
        ok(&kms.sealpipe(&["decrypt", &out, &format!("{out}.a"), "--key", &key]));
        ok(&kms.sealpipe(&[
            "decrypt",
            &out,
            &format!("{out}.b"),
            "--discovery",
            "--discovery-account",
            "123456789012",
        ]));
    }
    let o = kms.sealpipe(&[
        "decrypt",
        "out0",
        "x",
        "--discovery",
        "--discovery-account",
        "999999999999",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&key),
        "the error lists the message's keys: {}",
        stderr(&o)
    );
}

#[test]
fn keys_in_two_regions_each_decrypt_alone() {
    let kms = Kms::start();
    let east = kms.create_key("us-east-1");
    let west = kms.create_key("eu-west-1");
    assert!(west.contains(":eu-west-1:"));
    kms.files("src", 20, 1000);
    ok(&kms.sealpipe(&[
        "encrypt", "src", "enc", "--key", &east, "--key", &west, "--report", "e.json", "-q",
    ]));
    let report = kms.report("e.json");
    assert_eq!(report["kms"]["GenerateDataKey"], 1);
    assert_eq!(report["kms"]["Encrypt"], 1);
    for key in [&east, &west] {
        let out = format!("dec-{}", if key == &east { "east" } else { "west" });
        ok(&kms.sealpipe(&["decrypt", "enc", &out, "--key", key, "-q"]));
        assert_eq!(
            std::fs::read(kms.path(&format!("{out}/00019"))).unwrap(),
            common::pseudo_random(1000, 19)
        );
    }
}

#[test]
fn aws_encryption_cli_and_sealpipe_read_each_other() {
    let kms = Kms::start();
    let key = kms.create_key("us-east-1");
    let plaintext = common::pseudo_random(300_000, 42);
    std::fs::write(kms.path("plain"), &plaintext).unwrap();
    let cli = common::venv_tool("aws-encryption-cli");
    let wrapping = format!("key={key}");
    let run_cli = |args: &[&str]| {
        let o = kms
            .command(&cli, &kms.moto.endpoint())
            .args(args)
            .args([
                "--commitment-policy",
                "require-encrypt-require-decrypt",
                "-S",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "aws-encryption-cli {args:?}: {}",
            stderr(&o)
        );
    };
    // Theirs, default signed suite (0x0578) and 0x0478, decrypt here.
    run_cli(&[
        "--encrypt",
        "-i",
        "plain",
        "-o",
        "cli-0578",
        "--wrapping-keys",
        &wrapping,
        "--encryption-context",
        "team=data",
    ]);
    run_cli(&[
        "--encrypt",
        "-i",
        "plain",
        "-o",
        "cli-0478",
        "--wrapping-keys",
        &wrapping,
        "--encryption-context",
        "team=data",
        "--algorithm",
        "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
    ]);
    for (file, suite) in [("cli-0578", "0x0578"), ("cli-0478", "0x0478")] {
        let inspect = kms.sealpipe(&["inspect", file]);
        let doc: Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(doc["suite"]["id"], suite);
        let out = format!("{file}.out");
        ok(&kms.sealpipe(&[
            "decrypt",
            file,
            &out,
            "--key",
            &key,
            "--reproduced-context",
            "team=data",
        ]));
        assert_eq!(std::fs::read(kms.path(&out)).unwrap(), plaintext);
    }
    // Ours (both suites) decrypt there, strict and discovery.
    for suite in ["0478", "0578"] {
        let mine = format!("sp-{suite}");
        ok(&kms.sealpipe(&[
            "encrypt",
            "plain",
            &mine,
            "--key",
            &key,
            "--suite",
            suite,
            "--context",
            "team=data",
        ]));
        run_cli(&[
            "--decrypt",
            "-i",
            &mine,
            "-o",
            &format!("{mine}.strict"),
            "--wrapping-keys",
            &wrapping,
            "--encryption-context",
            "team=data",
        ]);
        run_cli(&[
            "--decrypt",
            "-i",
            &mine,
            "-o",
            &format!("{mine}.disc"),
            "--wrapping-keys",
            "discovery=true",
        ]);
        assert_eq!(
            std::fs::read(kms.path(&format!("{mine}.strict"))).unwrap(),
            plaintext
        );
        assert_eq!(
            std::fs::read(kms.path(&format!("{mine}.disc"))).unwrap(),
            plaintext
        );
    }
}

/// A multi-Region key ARN matches data keys wrapped by any replica of the key, and the
/// Decrypt call goes to the configured replica's region with its ARN.
///
/// moto 5.2.5 cannot decrypt multi-Region ciphertexts at all (boto3 gets
/// AccessDeniedException too, even from the primary's own region), so this test checks
/// what sealpipe controls, which data key it selects and which key and region it calls,
/// from the calls it makes; the unwrap itself cannot be exercised against moto.
#[test]
fn a_multi_region_replica_is_matched_and_called_in_its_region() {
    let kms = Kms::start();
    let east = kms.client("us-east-1");
    let primary = kms.rt.block_on(async {
        east.create_key()
            .multi_region(true)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .arn
            .unwrap()
    });
    assert!(primary.contains(":key/mrk-"), "{primary}");
    let replica = kms.rt.block_on(async {
        // moto 5.2.5 fails (HTTP 500) on ReplicateKey with an ARN: use the key ID.
        east.replicate_key()
            .key_id(primary.rsplit('/').next().unwrap())
            .replica_region("us-west-2")
            .send()
            .await
            .unwrap()
            .replica_key_metadata
            .unwrap()
            .arn
            .unwrap()
    });
    assert!(replica.contains(":us-west-2:"), "{replica}");
    kms.files("src", 2, 100);
    ok(&kms.sealpipe(&["encrypt", "src", "enc", "--key", &primary, "-q"]));
    // Only the replica is configured: the primary's data key is selected and Decrypt is
    // called on the replica, in us-west-2.
    let o = kms.sealpipe(&[
        "decrypt", "enc", "dec2", "--key", &replica, "--report", "r.json",
    ]);
    let report = kms.report("r.json");
    // Both messages share one data key: concurrent requests share one call.
    let calls = report["kms"]["Decrypt"].as_u64().unwrap();
    assert!((1..=2).contains(&calls), "{calls} Decrypt calls");
    assert!(
        stderr(&o).contains(&format!("Decrypt with key {replica}")),
        "{}",
        stderr(&o)
    );
    // A key that is not a replica is never tried.
    let other = kms.create_key("us-west-2");
    let o = kms.sealpipe(&[
        "decrypt", "enc", "dec3", "--key", &other, "--report", "r2.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(kms.report("r2.json")["kms"]["Decrypt"], 0);
    assert!(
        stderr(&o).contains("no configured key can decrypt"),
        "{}",
        stderr(&o)
    );
}

/// `sealpipe bench --key` with KMS keys: each mode's KMS calls are counted, and they
/// follow data keys, not objects: with at most 50 messages a data key, 200 objects take
/// at least 4 data keys and at most 4 plus one per worker (each may hold a key it
/// cannot finish), and every later mode a Decrypt per data key.
#[test]
fn bench_counts_the_kms_calls_of_each_mode() {
    let kms = Kms::start();
    let (first, second) = (kms.create_key("us-east-1"), kms.create_key("us-east-1"));
    std::fs::create_dir_all(kms.path("scratch")).unwrap();
    let (objects, per_key, workers) = (200u64, 50u64, 8u64);
    let o = kms.sealpipe(&[
        "bench",
        "--objects",
        &objects.to_string(),
        "--size",
        "100..4KiB",
        "--target",
        "scratch",
        "--key",
        &first,
        "--new-key",
        &second,
        "--cache-max-messages",
        &per_key.to_string(),
        "--concurrency",
        &workers.to_string(),
        "--json",
    ]);
    ok(&o);
    let result: Value = serde_json::from_slice(&o.stdout).unwrap();
    let least = objects.div_ceil(per_key);
    let modes = result["modes"].as_array().unwrap();
    let sealed_keys = modes[0]["data_keys"].as_u64().unwrap();
    assert!(
        (least..=least + workers).contains(&sealed_keys),
        "{sealed_keys} data keys: {}",
        modes[0]
    );
    // The data keys messages were sealed under: a key fetched ahead may go unused.
    let by_mode = |name: &str| modes.iter().find(|m| m["mode"] == name).unwrap();
    let read = by_mode("decrypt")["kms_calls"].as_u64().unwrap();
    assert!((least..=sealed_keys).contains(&read), "{read}: {result}");
    for m in modes {
        let (mode, calls) = (
            m["mode"].as_str().unwrap(),
            m["kms_calls"].as_u64().unwrap(),
        );
        assert_eq!(m["objects"], objects, "{m}");
        let expected = match mode {
            // One GenerateDataKey per data key.
            "encrypt" => sealed_keys,
            // A Decrypt per data key read.
            "decrypt" | "verify" => read,
            // A Decrypt per data key read and a GenerateDataKey per new one (its data
            // keys count both).
            "reencrypt" => {
                let new = m["data_keys"].as_u64().unwrap() - read;
                assert!((least..=least + workers).contains(&new), "{m}");
                read + new
            }
            // A Decrypt of each data key, and an Encrypt of it under the new KMS key.
            "rewrap" => 2 * read,
            other => panic!("mode {other}"),
        };
        assert_eq!(calls, expected, "{mode}: {m}");
    }
    assert_eq!(
        std::fs::read_dir(kms.path("scratch")).unwrap().count(),
        0,
        "the benchmark's files are removed"
    );
}
