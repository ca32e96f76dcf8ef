//! `--shard I/N`: four worker processes running the same job at once, each given its
//! shard a different way (the flag, SEALPIPE_SHARD, a Kubernetes Indexed Job's
//! JOB_COMPLETION_INDEX with --shards, an AWS Batch array job's index and size), cover
//! every object exactly once: over a local tree, an S3 prefix of 10,000 objects on moto
//! (divided by hash and by prefix), and a manifest of
//! the same objects. Which worker takes which object is checked against the documented
//! hash, computed by Python's hashlib, not by sealpipe; `sealpipe report merge` of their
//! reports says the job is complete, and, with one worker killed, which shard is missing
//! until that shard alone runs again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::world::{self, Obj, RUN_TIMEOUT, World};
use serde_json::Value;

const SHARDS: u64 = 4;

/// Objects of the S3 fleet test: enough that an uneven or overlapping split shows.
const S3_OBJECTS: u64 = 10_000;

/// How worker `i` is told its shard: arguments and environment.
fn told(i: u64) -> (Vec<String>, Vec<(&'static str, String)>) {
    match i {
        0 => (vec!["--shard".into(), format!("0/{SHARDS}")], vec![]),
        1 => (vec![], vec![("SEALPIPE_SHARD", format!("1/{SHARDS}"))]),
        2 => (
            vec!["--shards".into(), SHARDS.to_string()],
            vec![("JOB_COMPLETION_INDEX", "2".into())],
        ),
        _ => (
            vec![],
            vec![
                ("AWS_BATCH_JOB_ARRAY_INDEX", i.to_string()),
                ("AWS_BATCH_JOB_ARRAY_SIZE", SHARDS.to_string()),
            ],
        ),
    }
}

/// What one worker did: its JSON report and its completion report's rows.
struct Worker {
    report: Value,
    rows: Vec<Vec<String>>,
}

/// A worker's files: its JSON report, completion report and stderr.
struct Files {
    report: PathBuf,
    completion: PathBuf,
    stderr: PathBuf,
}

impl Files {
    fn of(w: &World, name: &str, i: u64) -> Self {
        Self {
            report: w.path(&format!("{name}-{i}.json")),
            completion: w.path(&format!("{name}-{i}.csv")),
            stderr: w.path(&format!("{name}-{i}.stderr")),
        }
    }
}

/// Starts worker `i` of `args`, told its shard the way [`told`] says.
fn spawn_worker(w: &World, name: &str, args: &[&str], i: u64) -> (Child, Files) {
    spawn_worker_via(w, &w.moto.endpoint(), name, args, i)
}

/// [`spawn_worker`] with S3 and KMS at `endpoint`.
fn spawn_worker_via(
    w: &World,
    endpoint: &str,
    name: &str,
    args: &[&str],
    i: u64,
) -> (Child, Files) {
    let (extra, env) = told(i);
    let files = Files::of(w, name, i);
    let child = w
        .command(endpoint)
        .args(args)
        .args(&extra)
        .arg("--report")
        .arg(&files.report)
        .arg("--completion-report")
        .arg(&files.completion)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&files.stderr).unwrap())
        .spawn()
        .unwrap();
    (child, files)
}

/// Waits for worker `i`, which must succeed and say its shard.
fn finish_worker(name: &str, i: u64, mut child: Child, files: &Files) -> Worker {
    let status = common::wait_or_kill(&mut child, RUN_TIMEOUT)
        .unwrap_or_else(|| panic!("{name} worker {i} still running"));
    let err = std::fs::read_to_string(&files.stderr).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{name} worker {i}: {err}");
    assert!(
        err.contains(&format!("shard {i}/{SHARDS}")),
        "{name} worker {i} does not say its shard: {err}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&files.report).unwrap()).unwrap();
    assert_eq!(report["shard"]["index"], i, "{name} worker {i}");
    assert_eq!(report["shard"]["count"], SHARDS, "{name} worker {i}");
    Worker {
        report,
        rows: world::completion_rows(&files.completion),
    }
}

/// Runs the `SHARDS` workers of `args` at once and waits for all of them.
fn run_workers(w: &World, name: &str, args: &[&str]) -> Vec<Worker> {
    let running: Vec<_> = (0..SHARDS)
        .map(|i| spawn_worker(w, name, args, i))
        .collect();
    running
        .into_iter()
        .zip(0..)
        .map(|((child, files), i)| finish_worker(name, i, child, &files))
        .collect()
}

/// `sealpipe report merge` over the workers' JSON and CSV reports of `name`.
fn merge(w: &World, name: &str) -> (Option<i32>, Value, String) {
    let mut files = Vec::new();
    for i in 0..SHARDS {
        let f = Files::of(w, name, i);
        for path in [f.report, f.completion] {
            if path.exists() {
                files.push(path.display().to_string());
            }
        }
    }
    let out = w
        .command(&w.moto.endpoint())
        .args(["report", "merge", "--json"])
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let merged = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report merge printed no JSON ({e}): {stderr}"));
    (out.status.code(), merged, stderr)
}

/// The merged report of a complete job: exit 0, every object once, nothing missing.
fn assert_merged_complete(w: &World, name: &str, objects: usize) {
    let merged = assert_merged_done(w, name, objects);
    assert_eq!(merged["objects"]["ok"], objects, "{name}");
    assert_eq!(
        merged["completion"]["by_status"]["succeeded"], objects,
        "{name}"
    );
}

/// The merged report of a job whose every object is done, some perhaps by an earlier,
/// killed run (skipped now as finished work): exit 0, each object in one report.
fn assert_merged_done(w: &World, name: &str, objects: usize) -> Value {
    let (code, merged, stderr) = merge(w, name);
    assert_eq!(code, Some(0), "{name}: {stderr}");
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let o = &merged["objects"];
    assert_eq!(count(&o["planned"]), objects as u64, "{name}");
    assert_eq!(
        count(&o["ok"]) + count(&o["skipped"]),
        objects as u64,
        "{name}"
    );
    assert_eq!(merged["shards"]["missing"], serde_json::json!([]), "{name}");
    assert_eq!(merged["completion"]["objects"], objects, "{name}");
    assert_eq!(merged["completion"]["in_two_reports"], 0, "{name}");
    assert_eq!(merged["problems"], serde_json::json!([]), "{name}");
    merged
}

/// The division `--shard-by prefix` must make of `keys` below `root`, worked out here:
/// S3 lists the prefixes one level down in byte order (as a BTreeSet sorts them), shard
/// i takes prefixes [i*m/N, (i+1)*m/N), and the keys directly below `root` go by the
/// documented hash. Returns the prefixes, each one's shard, and each key's.
fn divided_by_prefix(
    bucket: &str,
    root: &str,
    keys: &BTreeSet<String>,
) -> (Vec<String>, Vec<u64>, BTreeMap<String, u64>) {
    let prefixes: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(root)?;
            rest.split_once('/').map(|(dir, _)| format!("{root}{dir}/"))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let top: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.strip_prefix(root).is_some_and(|rest| !rest.contains('/')))
        .cloned()
        .collect();
    let mut expected = expected_shards(bucket, &top);
    let m = prefixes.len() as u64;
    let prefix_shard: Vec<u64> = (0..m)
        .map(|n| {
            (0..SHARDS)
                .find(|s| (s * m / SHARDS..(s + 1) * m / SHARDS).contains(&n))
                .unwrap()
        })
        .collect();
    for (prefix, shard) in prefixes.iter().zip(&prefix_shard) {
        for key in keys.iter().filter(|k| k.starts_with(prefix.as_str())) {
            expected.insert(key.clone(), *shard);
        }
    }
    assert_eq!(expected.len(), keys.len());
    (prefixes, prefix_shard, expected)
}

/// The shard of each name by the documented formula, computed by Python:
/// SHA-256(bucket NUL key), first 8 bytes big-endian, modulo the count (local files:
/// an empty bucket and the path below the source).
fn expected_shards(bucket: &str, names: &BTreeSet<String>) -> BTreeMap<String, u64> {
    let script = format!(
        "import hashlib, sys\n\
         for name in sys.stdin.read().split('\\n'):\n    \
             if name:\n        \
                 h = hashlib.sha256(b'{bucket}' + b'\\0' + name.encode()).digest()\n        \
                 print(int.from_bytes(h[:8], 'big') % {SHARDS})\n"
    );
    let input: Vec<&str> = names.iter().map(String::as_str).collect();
    let printed = common::venv_python("the shard hash", &script, &[], input.join("\n").as_bytes());
    let shards: Vec<u64> = printed.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(shards.len(), names.len());
    names.iter().cloned().zip(shards).collect()
}

/// Every name in exactly one worker's completion report, that worker the one the hash
/// names, every row a success, and the reports' counts adding up to the whole.
fn assert_exact_cover(
    name: &str,
    workers: &[Worker],
    expected: &BTreeMap<String, u64>,
    name_of_row: impl Fn(&[String]) -> String,
) {
    assert_exact_cover_with(name, workers, expected, name_of_row, true);
}

/// [`assert_exact_cover`]; `even`: also that no share is far from a quarter (hash
/// shares are; prefix ranges of 11 prefixes are 2, 3, 3 and 3 prefixes).
fn assert_exact_cover_with(
    name: &str,
    workers: &[Worker],
    expected: &BTreeMap<String, u64>,
    name_of_row: impl Fn(&[String]) -> String,
    even: bool,
) {
    let mut owner: BTreeMap<String, u64> = BTreeMap::new();
    let mut passed_over: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_ok = 0;
    for (i, worker) in workers.iter().enumerate() {
        let i = i as u64;
        for row in &worker.rows {
            let object = name_of_row(row);
            // What the listing passes over (links, folder markers) is reported once.
            if row[3] == "skipped" {
                if let Some(other) = passed_over.insert(object.clone(), i) {
                    panic!("{name}: {object} was reported skipped by workers {other} and {i}");
                }
                continue;
            }
            assert_eq!(row[3], "succeeded", "{name} worker {i}: {row:?}");
            if let Some(other) = owner.insert(object.clone(), i) {
                panic!("{name}: {object} was processed by workers {other} and {i}");
            }
        }
        let ok = worker.report["objects"]["ok"].as_u64().unwrap();
        let skipped = worker.report["objects"]["skipped"].as_u64().unwrap();
        assert_eq!(ok + skipped, worker.rows.len() as u64, "{name} worker {i}");
        assert_eq!(
            worker.report["objects"]["planned"],
            ok + skipped,
            "{name} worker {i}"
        );
        // Four shards of hundreds of objects: none is empty or takes nearly all.
        assert!(
            !even || (ok > expected.len() as u64 / 8 && ok < expected.len() as u64 / 2),
            "{name} worker {i} took {ok} of {}",
            expected.len()
        );
        total_ok += ok;
    }
    assert_eq!(total_ok, expected.len() as u64, "{name}");
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !owner.contains_key(*k))
        .collect();
    assert!(missing.is_empty(), "{name}: no worker took {missing:?}");
    let misplaced: Vec<_> = owner
        .iter()
        .filter(|(k, i)| expected.get(*k) != Some(i))
        .take(5)
        .collect();
    assert!(
        misplaced.is_empty(),
        "{name}: objects not in the shard the documented hash gives: {misplaced:?}"
    );
}

#[test]
fn four_workers_cover_a_local_tree_exactly_once() {
    let w = World::start("shard-local");
    let src = w.path("src");
    let mut names = BTreeSet::new();
    for n in 0..600u32 {
        let name = format!("d{}/e{}/file-{n:04}.txt", n % 7, n % 3);
        let path = src.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, common::pseudo_random(n as usize * 7, n as u64)).unwrap();
        names.insert(name);
    }
    // A symbolic link, passed over by the listing: one worker (the first) reports it.
    std::os::unix::fs::symlink("d0", src.join("link")).unwrap();
    let workers = run_workers(&w, "local", &["encrypt", "src", "dst", "--key", &w.key]);
    assert_eq!(workers[0].report["objects"]["skipped"], 1);
    let expected = expected_shards("", &names);
    let src_prefix = format!("{}/", src.display());
    assert_exact_cover("local", &workers, &expected, |row| {
        row[1]
            .strip_prefix(&src_prefix)
            .or_else(|| row[1].strip_prefix("src/"))
            .unwrap_or(&row[1])
            .to_string()
    });
    let merged = assert_merged_done(&w, "local", names.len() + 1);
    assert_eq!(merged["objects"]["ok"], names.len());
    assert_eq!(merged["objects"]["skipped"], 1);
    // Together the workers wrote the whole tree, and it decrypts to the source.
    assert_eq!(world::tree_files(&w.path("dst")), names);
    let back = w.run(&["decrypt", "dst", "back", "--key", &w.key]);
    back.assert_exit(0);
    for name in &names {
        assert_eq!(
            std::fs::read(w.path("back").join(name)).unwrap(),
            std::fs::read(src.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn four_workers_cover_an_s3_prefix_and_its_manifest_exactly_once() {
    let w = World::start("shard-s3");
    w.create_bucket("src");
    w.create_bucket("dst");
    w.create_bucket("dst2");
    let objects: Vec<Obj> = (0..S3_OBJECTS)
        .map(|n| {
            Obj::plain(
                &format!("logs/{}/{n:05}.json", n % 11),
                common::pseudo_random((n % 97) as usize * 13, n),
            )
        })
        .collect();
    w.put_all("src", &objects);
    w.log(&format!("{} objects in s3://src/logs/", objects.len()));
    let keys: BTreeSet<String> = objects.iter().map(|o| o.key.clone()).collect();
    let expected = expected_shards("src", &keys);
    // The manifest and the killed worker take a part: every object once is shown by the
    // whole listing, and a part shows the rest as well for a tenth of the time.
    let subset = |keep: &dyn Fn(&str) -> bool| -> BTreeMap<String, u64> {
        expected
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, s)| (k.clone(), *s))
            .collect()
    };

    // The listing: each worker lists the prefix and takes its share.
    let workers = run_workers(
        &w,
        "listing",
        &[
            "encrypt",
            "s3://src/logs/",
            "s3://dst/sealed/",
            "--key",
            &w.key,
        ],
    );
    assert_exact_cover("listing", &workers, &expected, |row| row[1].clone());
    assert_merged_complete(&w, "listing", keys.len());
    let written: BTreeSet<String> = w.keys("dst");
    let want: BTreeSet<String> = keys
        .iter()
        .map(|k| format!("sealed/{}", k.strip_prefix("logs/").unwrap()))
        .collect();
    assert_eq!(written, want);

    // The same objects divided by prefix: 11 prefixes below logs/, in ranges.
    w.create_bucket("dst4");
    let workers = run_workers(
        &w,
        "by-prefix",
        &[
            "encrypt",
            "s3://src/logs/",
            "s3://dst4/",
            "--key",
            &w.key,
            "--shard-by",
            "prefix",
        ],
    );
    let (prefixes, _, by_prefix) = divided_by_prefix("src", "logs/", &keys);
    assert_eq!(prefixes.len(), 11);
    assert_exact_cover_with(
        "by-prefix",
        &workers,
        &by_prefix,
        |row| row[1].clone(),
        false,
    );
    assert_merged_complete(&w, "by-prefix", keys.len());
    assert_eq!(w.keys("dst4").len(), keys.len());

    // A manifest of the same objects (no versions named) splits the same way.
    let in_manifest = subset(&|k: &str| k.ends_with("0.json"));
    let manifest: String = in_manifest.keys().map(|k| format!("src,{k}\n")).collect();
    std::fs::write(w.path("manifest.csv"), manifest).unwrap();
    let workers = run_workers(
        &w,
        "manifest",
        &[
            "encrypt",
            "--manifest",
            "manifest.csv",
            "s3://dst2/",
            "--key",
            &w.key,
        ],
    );
    assert_exact_cover("manifest", &workers, &in_manifest, |row| row[1].clone());
    assert_eq!(w.keys("dst2").len(), in_manifest.len());
    assert_merged_complete(&w, "manifest", in_manifest.len());
    assert!(Path::new(&w.path("manifest.csv")).is_file());

    // One worker killed: the merge says which shard is missing and exits 1; that
    // shard alone run again completes the job.
    w.create_bucket("dst3");
    let below_3 = subset(&|k: &str| k.starts_with("logs/3/"));
    let args = ["encrypt", "s3://src/logs/3/", "s3://dst3/", "--key", &w.key];
    let (mut killed, _) = spawn_worker(&w, "killed", &args, 2);
    let others: Vec<_> = [0, 1, 3]
        .into_iter()
        .map(|i| (i, spawn_worker(&w, "killed", &args, i)))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let _ = std::fs::remove_file(Files::of(&w, "killed", 2).report);
    for (i, (child, files)) in others {
        finish_worker("killed", i, child, &files);
    }
    let (code, merged, stderr) = merge(&w, "killed");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(merged["shards"]["missing"], serde_json::json!([2]));
    assert!(
        stderr.contains("1 of 4 shards have no report: 2"),
        "{stderr}"
    );
    let (child, files) = spawn_worker(&w, "killed", &args, 2);
    finish_worker("killed", 2, child, &files);
    assert_merged_done(&w, "killed", below_3.len());
    assert_eq!(w.keys("dst3").len(), below_3.len());
}

/// `--shard-by prefix`: each worker lists the level below the source (twice) and then
/// only the prefixes of its range, never the whole source; together the workers cover
/// every object once: the prefixes' objects by range, those directly below the source
/// by hash.
#[test]
fn four_workers_divided_by_prefix_list_only_their_part() {
    let w = World::start("shard-prefix");
    w.create_bucket("src");
    w.create_bucket("dst");
    let mut objects: Vec<Obj> = (0..96u64)
        .map(|n| {
            Obj::plain(
                &format!("p/{}/{n:03}.log", n % 12),
                common::pseudo_random(n as usize, n),
            )
        })
        .collect();
    // Directly below the source: divided by hash.
    objects.extend((0..24u64).map(|n| Obj::plain(&format!("p/top-{n:02}"), vec![n as u8; 9])));
    // Outside the source: never listed, never processed.
    objects.push(Obj::plain("q/outside", b"x".to_vec()));
    w.put_all("src", &objects);
    let keys: BTreeSet<String> = objects
        .iter()
        .map(|o| o.key.clone())
        .filter(|k| k.starts_with("p/"))
        .collect();
    let (prefixes, prefix_shard, expected) = divided_by_prefix("src", "p/", &keys);
    assert_eq!(prefixes.len(), 12);
    assert_eq!(expected.len(), keys.len());

    // Each worker through its own logging proxy, to see what it lists.
    let args = [
        "encrypt",
        "s3://src/p/",
        "s3://dst/",
        "--key",
        &w.key,
        "--shard-by",
        "prefix",
    ];
    let mut running = Vec::new();
    for i in 0..SHARDS {
        let proxy = w.proxy(&["--verbose"]);
        let (child, files) = spawn_worker_via(&w, &proxy.endpoint, "prefix", &args, i);
        running.push((proxy, child, files));
    }
    let mut workers = Vec::new();
    for (i, (proxy, child, files)) in running.into_iter().enumerate() {
        let i = i as u64;
        let worker = finish_worker("prefix", i, child, &files);
        assert_eq!(worker.report["shard"]["by"], "prefix");
        let log = proxy.stop();
        // ListObjectsV2 of the source: (prefix, delimiter) of each.
        let lists: Vec<(String, bool)> = log
            .lines()
            .filter(|l| l.starts_with("GET /src") && l.contains("list-type=2"))
            .map(|l| {
                let query = l.split_once('?').map_or("", |(_, q)| q);
                let query = query.split(' ').next().unwrap_or("");
                let param = |name: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .map(|v| v.replace("%2F", "/"))
                };
                (
                    param("prefix").unwrap_or_default(),
                    param("delimiter").is_some(),
                )
            })
            .collect();
        let level = lists.iter().filter(|(p, d)| p == "p/" && *d).count();
        assert_eq!(level, 2, "worker {i} lists the level twice: {lists:?}");
        let mine: Vec<&String> = lists.iter().filter(|(_, d)| !d).map(|(p, _)| p).collect();
        let want: Vec<&String> = prefixes
            .iter()
            .zip(&prefix_shard)
            .filter(|(_, s)| **s == i)
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            mine, want,
            "worker {i} lists exactly its prefixes, in order"
        );
        workers.push(worker);
    }
    assert_exact_cover("prefix", &workers, &expected, |row| row[1].clone());
    assert_merged_complete(&w, "prefix", keys.len());
    assert_eq!(w.keys("dst").len(), keys.len());

    // A single object is no listing to divide: it is in the one shard its hash names.
    let mut planned = 0;
    for i in 0..SHARDS {
        let shard = format!("{i}/{SHARDS}");
        let run = w.run(&[
            "encrypt",
            "s3://src/p/top-03",
            "s3://dst/single",
            "--key",
            &w.key,
            "--shard",
            &shard,
            "--shard-by",
            "prefix",
            "--dry-run",
            "-q",
        ]);
        run.assert_exit(0);
        planned += run.objects("planned");
    }
    assert_eq!(planned, 1, "exactly one worker takes a single object");
}
