//! Crash loops (issue #8): a job SIGKILLed at 20 seeded random moments and re-run each
//! time, then run to completion, must end exactly as one clean run would.
//!
//! - S3 to S3 (moto): every source object has exactly one output version, every output
//!   decrypts to its source, no multipart upload is left open, no stray key exists, and
//!   the final report adds up with no failures.
//! - Local tree to local tree: the destination holds exactly the source's relative
//!   paths, every file decrypts to its source, and no `.sealpipe-*.partial` staging file
//!   survives the final run, neither of the encrypt nor of a killed-then-completed
//!   decrypt.
//!
//! The kill moments are drawn from `SEALPIPE_TEST_SEED` (printed; decimal or `0x` hex)
//! and spread over the run time measured by a first, uninterrupted calibration run.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use common::world::{self, MIB, Prng, World};

const KILLS: usize = 20;

// ---------------------------------------------------------------------------------
// 1. S3 to S3.
// ---------------------------------------------------------------------------------

/// 250 small objects of 0 to 48 KiB under `k0/` .. `k7/`, and eight multipart ones (6
/// to 12 MiB at 5 MiB parts) placed first, in the middle and last in listing order.
fn s3_sources(seed: u64) -> Vec<(String, Bytes)> {
    let mut rng = Prng::new(seed);
    let mut objects: Vec<(String, Bytes)> = (0..250)
        .map(|i| {
            let size = match i % 50 {
                0 => 0,
                1 => 1,
                _ => rng.range(2, 48 * 1024) as usize,
            };
            (
                format!("k{}/obj-{i:04}.dat", i % 8),
                Bytes::from(common::pseudo_random(size, seed ^ (i as u64) << 16)),
            )
        })
        .collect();
    for (i, (key, size)) in [
        ("b-big.bin", 6 * MIB + 5),
        ("k3/m-big.bin", 9 * MIB),
        ("s-big.bin", 12 * MIB - 1),
        ("z-big.bin", 7 * MIB + 333),
        ("d-big.bin", 10 * MIB),
        ("k6/x-big.bin", 8 * MIB + 1),
        ("p-big.bin", 11 * MIB),
        ("u/big.bin", 6 * MIB),
    ]
    .into_iter()
    .enumerate()
    {
        objects.push((
            key.to_string(),
            Bytes::from(common::pseudo_random(size, 900 + i as u64)),
        ));
    }
    objects
}

#[test]
fn s3_to_s3_survives_twenty_sigkills_exactly_once() {
    let w = World::start("crash-s3");
    let seed = world::seed(0xc2a5_4001);
    w.log(&format!(
        "seed {seed:#x} (replay with SEALPIPE_TEST_SEED={seed:#x})"
    ));
    for b in ["src", "calib", "dst"] {
        w.create_bucket(b);
    }
    w.enable_versioning("dst");
    let objects = s3_sources(seed);
    let n = objects.len() as u64;
    w.put_all("src", &objects);
    let source_keys: BTreeSet<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(w.keys("src"), source_keys);
    w.log(&format!("uploaded {n} objects"));

    let args = |dst: &'static str| {
        vec![
            "encrypt".to_string(),
            "s3://src".into(),
            format!("s3://{dst}"),
            "--key".into(),
            w.key.clone(),
            "--concurrency".into(),
            "8".into(),
            "--part-size".into(),
            "5MiB".into(),
            "-q".into(),
        ]
    };
    let calib_args = args("calib");
    let calib_args: Vec<&str> = calib_args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let calib = w.run(&calib_args);
    let full = started.elapsed();
    calib.assert_exit(0);
    assert_eq!(calib.objects("ok"), n, "{}", calib.context());

    // A second run over the finished calibration copy skips everything: what a re-run
    // spends before it reaches work still to do.
    let started = Instant::now();
    let skip = w.run(&calib_args);
    let skip_all = started.elapsed();
    skip.assert_exit(0);
    assert_eq!(skip.objects("skipped"), n, "{}", skip.context());

    let dst_args = args("dst");
    let dst_args: Vec<&str> = dst_args.iter().map(String::as_str).collect();
    let mut rng = Prng::new(seed);
    let (mut interrupted, mut with_open_uploads, mut on_upload) = (0, 0, 0);
    for attempt in 0..KILLS {
        let done = w.keys("dst").len() as u64;
        let left = (n - done) as f64 / n as f64;
        let kind;
        let running = if attempt < 3 {
            // Before any output can exist.
            kind = "early";
            let delay = Duration::from_millis(rng.range(5, 120));
            w.kill_after(&w.moto.endpoint(), &dst_args, delay)
        } else if attempt % 4 == 1 && left > 0.0 {
            // Mid-multipart: as soon as an upload is open, plus up to 300 ms.
            kind = "mid-multipart";
            let extra = Duration::from_millis(rng.range(0, 300));
            let (running, saw) = kill_on_open_upload(&w, &dst_args, extra, full * 2);
            on_upload += saw as u32;
            running
        } else {
            // Anywhere in what is left: the skipping of what is done, then a share of
            // the rest (a little past the end, too).
            kind = "timed";
            let delay =
                skip_all.mul_f64(1.0 - left) + full.mul_f64(rng.unit() * 1.2 * left.max(0.05));
            w.kill_after(&w.moto.endpoint(), &dst_args, delay)
        };
        interrupted += running as u32;
        let open = w.uploads("dst").len();
        with_open_uploads += (open > 0) as u32;
        w.log(&format!(
            "kill {} ({kind}): {}; destination has {} of {n} keys, {open} multipart uploads \
             open",
            attempt + 1,
            if running {
                "killed a running job"
            } else {
                "the job had already finished"
            },
            w.keys("dst").len(),
        ));
    }
    assert!(
        interrupted >= 1,
        "no kill interrupted a running job (seed {seed:#x}): the test proved nothing"
    );

    let last = w.run(&dst_args);
    last.assert_exit(0);
    last.assert_counts_add_up();
    assert_eq!(last.objects("failed"), 0, "{}", last.context());
    assert_eq!(last.objects("conflicts"), 0, "{}", last.context());
    assert_eq!(last.objects("planned"), n, "{}", last.context());
    assert_eq!(
        last.objects("ok") + last.objects("skipped"),
        n,
        "{}",
        last.context()
    );
    assert_eq!(w.uploads("dst"), Vec::new(), "multipart uploads left open");

    // Exactly once, and nothing else: one version per source key, no delete markers,
    // no other key.
    let (versions, delete_markers) = w.versions("dst");
    assert_eq!(delete_markers, 0, "delete markers in the destination");
    let not_once: Vec<_> = versions.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(
        not_once.is_empty(),
        "objects written more than once: {not_once:?}\n{}",
        last.context()
    );
    let got: BTreeSet<String> = versions.keys().cloned().collect();
    assert_eq!(got, source_keys, "destination keys != source keys");
    assert_eq!(w.keys("dst"), source_keys);

    // Every output decrypts to exactly its source.
    let dec = w.run(&[
        "decrypt",
        "s3://dst",
        "restored",
        "--key",
        &w.key,
        "--part-size",
        "5MiB",
        "-q",
    ]);
    dec.assert_exit(0);
    assert_eq!(dec.objects("ok"), n, "{}", dec.context());
    let restored = w.path("restored");
    assert_eq!(world::tree_files(&restored), source_keys);
    for (key, body) in &objects {
        let got = std::fs::read(restored.join(key)).unwrap();
        assert!(
            got == body[..],
            "{key}: decrypted bytes differ from the source"
        );
    }
    w.log(&format!(
        "done (seed {seed:#x}): full run {full:?}, skip-all run {skip_all:?}; {interrupted} \
         of {KILLS} kills interrupted a job, {on_upload} of them with an upload open, \
         {with_open_uploads} left multipart uploads open; the last run did {} and skipped \
         {}, aborted {} stale uploads",
        last.objects("ok"),
        last.objects("skipped"),
        last.num("s3/uploads_aborted"),
    ));
}

/// Starts `args`, polls the destination's multipart uploads and SIGKILLs the run
/// `extra` after one is seen open (or at `limit`); returns (was still running, an
/// upload was seen).
fn kill_on_open_upload(w: &World, args: &[&str], extra: Duration, limit: Duration) -> (bool, bool) {
    let (mut child, err) = w.spawn_via(&w.moto.endpoint(), args);
    let started = Instant::now();
    let mut saw = false;
    while started.elapsed() < limit && child.try_wait().unwrap().is_none() {
        if !w.uploads("dst").is_empty() {
            saw = true;
            std::thread::sleep(extra);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let finished = child.try_wait().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    if let Some(status) = finished {
        assert!(
            status.success(),
            "sealpipe {args:?} ended by itself with {status}: {}",
            std::fs::read_to_string(err).unwrap_or_default()
        );
    }
    (finished.is_none(), saw)
}

// ---------------------------------------------------------------------------------
// 2. Local tree to local tree.
// ---------------------------------------------------------------------------------

/// A tree of 320 small files up to three directories deep, and two big ones (24 and 48
/// MiB) so kills land mid-write. Returns the relative paths and contents.
fn local_sources(root: &Path, seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = Prng::new(seed);
    let mut files: Vec<(String, Vec<u8>)> = (0..320)
        .map(|i| {
            let dir = match i % 4 {
                0 => String::new(),
                1 => format!("d{}/", i % 5),
                2 => format!("d{}/e{}/", i % 5, i % 3),
                _ => format!("d{}/e{}/f{}/", i % 5, i % 3, i % 2),
            };
            let size = if i % 60 == 0 {
                0
            } else {
                rng.range(1, 32 * 1024) as usize
            };
            (
                format!("{dir}file-{i:04}.txt"),
                common::pseudo_random(size, seed ^ (i as u64) << 20),
            )
        })
        .collect();
    files.push(("big/a.bin".into(), common::pseudo_random(24 * MIB + 7, 11)));
    files.push((
        "big/nested/b.bin".into(),
        common::pseudo_random(48 * MIB + 1, 12),
    ));
    for (rel, body) in &files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    files
}

/// Kills `args` at `kills` moments spread over `full` (the first two before any
/// output can exist); returns how many kills interrupted a running job. A run that
/// ended by itself with an error is a problem.
fn kill_loop(
    w: &World,
    args: &[&str],
    full: Duration,
    kills: usize,
    rng: &mut Prng,
    problems: &mut Vec<String>,
) -> usize {
    let out = w.path(args[2]);
    let mut interrupted = 0;
    for attempt in 0..kills {
        let delay = if attempt < 2 {
            Duration::from_millis(rng.range(5, 60))
        } else {
            // Stratified over the whole run: kill k lands in the k-th slice.
            full.mul_f64((attempt as f64 + rng.unit()) / kills as f64)
        };
        let ended = w.kill_after_status(&w.moto.endpoint(), args, delay);
        let running = ended.is_none();
        if let Some((status, stderr)) = &ended
            && !status.success()
        {
            let first: Vec<&str> = stderr.lines().take(3).collect();
            problems.push(format!(
                "{args:?} (to be killed after {delay:?}) ended by itself with {status}: {}",
                first.join(" | ")
            ));
        }
        interrupted += running as usize;
        let staging = world::staging_files(&out);
        let largest = staging
            .iter()
            .filter_map(|p| std::fs::metadata(out.join(p)).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        w.log(&format!(
            "{} kill {} after {delay:?}: {}; {} files in {}, {} of them staging files (the \
             largest {largest} bytes)",
            args[0],
            attempt + 1,
            match &ended {
                None => "killed a running job".to_string(),
                Some((status, _)) => format!("the job had already ended ({status})"),
            },
            world::tree_files(&out).len(),
            args[2],
            staging.len(),
        ));
    }
    interrupted
}

/// Twenty `kill -9`s of an encrypt and six of a decrypt of a local tree, each followed
/// by a complete run: the trees end exactly as their sources, with no staging files.
#[test]
fn local_tree_survives_twenty_sigkills_and_leaves_no_partials() {
    let w = World::start("crash-local");
    let seed = world::seed(0x10ca_1001);
    w.log(&format!(
        "seed {seed:#x} (replay with SEALPIPE_TEST_SEED={seed:#x})"
    ));
    let files = local_sources(&w.path("src"), seed);
    let n = files.len() as u64;
    let source_paths: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(world::tree_files(&w.path("src")), source_paths);

    let started = Instant::now();
    let calib = w.run(&["encrypt", "src", "calib", "--key", &w.key, "-q"]);
    let full = started.elapsed();
    calib.assert_exit(0);
    assert_eq!(calib.objects("ok"), n, "{}", calib.context());

    let mut rng = Prng::new(seed);
    let enc_args = ["encrypt", "src", "dst", "--key", &w.key, "-q"];
    let mut problems: Vec<String> = Vec::new();
    let interrupted = kill_loop(&w, &enc_args, full, KILLS, &mut rng, &mut problems);
    assert!(
        interrupted >= 1,
        "no kill interrupted a running job (seed {seed:#x}): the test proved nothing"
    );
    let stale = world::staging_files(&w.path("dst"));
    w.log(&format!(
        "{} staging files before the final run: {:?}",
        stale.len(),
        stale.iter().take(5).collect::<Vec<_>>()
    ));

    // Every problem is collected, so one run shows all that is wrong.
    let last = w.run(&enc_args);
    last.assert_exit(0);
    last.assert_counts_add_up();
    assert_eq!(last.objects("failed"), 0, "{}", last.context());
    assert_eq!(last.objects("planned"), n, "{}", last.context());
    let left = world::staging_files(&w.path("dst"));
    if !left.is_empty() {
        problems.push(format!(
            "{} `.sealpipe-` staging files remain in dst after the final complete encrypt \
             (of {} before it), e.g. {:?}",
            left.len(),
            stale.len(),
            left.iter().take(5).collect::<Vec<_>>()
        ));
    }
    let dst_paths = world::tree_files(&w.path("dst"));
    if dst_paths != source_paths {
        let extra: Vec<_> = dst_paths.difference(&source_paths).take(5).collect();
        let missing: Vec<_> = source_paths.difference(&dst_paths).take(5).collect();
        problems.push(format!(
            "dst paths != source paths: {} vs {}; extra e.g. {extra:?}, missing e.g. \
             {missing:?}",
            dst_paths.len(),
            source_paths.len()
        ));
    }

    // Every encrypted file decrypts to its source, and only source paths are listed
    // (no staging file is taken for a source).
    let started = Instant::now();
    let dec = w.run(&["decrypt", "dst", "restored", "--key", &w.key, "-q"]);
    let full_dec = started.elapsed();
    if dec.status.code() != Some(0) || dec.objects("planned") != n || dec.objects("ok") != n {
        problems.push(format!(
            "decrypt dst restored: exit {:?}, planned {}, ok {}, failed {} (expected exit 0, \
             {n} planned and ok); first failures: {}",
            dec.status.code(),
            dec.objects("planned"),
            dec.objects("ok"),
            dec.objects("failed"),
            serde_json::to_string(&dec.failures().iter().take(3).collect::<Vec<_>>()).unwrap()
        ));
    }
    check_restored(&w.path("restored"), &files, "restored", &mut problems);

    // A decrypt killed mid-run, then completed, leaves exactly the plaintext tree.
    let dec_args = ["decrypt", "dst", "restored2", "--key", &w.key, "-q"];
    let dec_interrupted = kill_loop(&w, &dec_args, full_dec, 6, &mut rng, &mut problems);
    let stale_dec = world::staging_files(&w.path("restored2"));
    // On Linux an output is an unnamed file until whole (O_TMPFILE): even SIGKILL
    // leaves no partial plaintext under any name. Only over an existing output (the
    // killed runs before wrote some) is a whole, authenticated output linked under a
    // temporary name and renamed over it, since `linkat` never replaces a name: a kill
    // between the two leaves that whole output, which the next run removes.
    if cfg!(target_os = "linux") {
        let partial: Vec<&String> = stale_dec
            .iter()
            .filter(|p| !is_whole_output(&w.path("restored2"), p, &files))
            .collect();
        if !partial.is_empty() {
            problems.push(format!(
                "{} `.sealpipe-` files left by {dec_interrupted} killed decrypts hold \
                 partial or foreign plaintext, e.g. {:?}; outputs should be unnamed until \
                 whole",
                partial.len(),
                partial.iter().take(5).collect::<Vec<_>>()
            ));
        }
    }
    let dec2 = w.run(&dec_args);
    if dec2.status.code() != Some(0) || dec2.objects("ok") != n {
        problems.push(format!(
            "decrypt dst restored2 after {dec_interrupted} killed runs: exit {:?}, ok {} \
             (expected exit 0, {n} ok)",
            dec2.status.code(),
            dec2.objects("ok")
        ));
    }
    let left = world::staging_files(&w.path("restored2"));
    if !left.is_empty() {
        problems.push(format!(
            "{} `.sealpipe-` partial plaintext files remain in restored2 after its complete \
             re-run (of {} the killed decrypts left), e.g. {:?}",
            left.len(),
            stale_dec.len(),
            left.iter().take(5).collect::<Vec<_>>()
        ));
    }
    check_restored(&w.path("restored2"), &files, "restored2", &mut problems);

    w.log(&format!(
        "seed {seed:#x}: full encrypt {full:?}, decrypt {full_dec:?}; {interrupted} of \
         {KILLS} encrypt kills and {dec_interrupted} of 6 decrypt kills interrupted a job"
    ));
    assert!(
        problems.is_empty(),
        "{} problems (seed {seed:#x}):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

/// Checks that `dir` holds exactly `files` (paths and bytes).
/// Whether the staging file `staged` (relative to `root`) holds exactly the plaintext
/// of a source in its own directory: a whole output caught between its link and rename.
fn is_whole_output(root: &Path, staged: &str, files: &[(String, Vec<u8>)]) -> bool {
    let dir = staged.rsplit_once('/').map_or("", |(d, _)| d);
    let Ok(body) = std::fs::read(root.join(staged)) else {
        return false;
    };
    files
        .iter()
        .any(|(p, want)| p.rsplit_once('/').map_or("", |(d, _)| d) == dir && *want == body)
}

fn check_restored(dir: &Path, files: &[(String, Vec<u8>)], name: &str, problems: &mut Vec<String>) {
    let want: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();
    let got = world::tree_files(dir);
    if got != want {
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        problems.push(format!(
            "{name} paths != source paths ({} vs {}): extra e.g. {extra:?}, missing e.g. \
             {missing:?}",
            got.len(),
            want.len()
        ));
    }
    let differ: Vec<&str> = files
        .iter()
        .filter(|(p, body)| std::fs::read(dir.join(p)).is_ok_and(|b| b != *body))
        .map(|(p, _)| p.as_str())
        .collect();
    if !differ.is_empty() {
        problems.push(format!(
            "{} files in {name} differ from their source, e.g. {:?}",
            differ.len(),
            &differ[..differ.len().min(5)]
        ));
    }
}
