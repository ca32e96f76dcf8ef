//! What sealpipe promises at the edges of local jobs (issue 8), each class with several
//! variants: a source is never written; outputs never gain setuid, setgid or sticky
//! bits and follow the umask; a listing error fails its subtree and the walk goes on;
//! names that are not UTF-8 are processed and reported exactly; partial outputs of
//! killed runs are removed by the next run and never read as sources; a source that
//! changes while it is read fails and leaves nothing.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{KEY, Workspace, stderr};

/// Objects planned, ok, failed, conflicts, skipped; and that they add up.
fn counts(report: &Value) -> [u64; 5] {
    let o = &report["objects"];
    let c = ["planned", "ok", "failed", "conflicts", "skipped"].map(|k| o[k].as_u64().unwrap());
    assert_eq!(c[0], c[1] + c[2] + c[3] + c[4], "counts add up: {report}");
    c
}

fn partials_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().as_bytes();
            name.starts_with(b".sealpipe-") && name.ends_with(b".partial")
        })
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// Whether process `pid` is writing an output in `dir`: a partial file under a
/// temporary name there, or (Linux, where outputs are unnamed until whole) an open
/// descriptor of an unnamed file in it, which `/proc` shows as `DIR/#INODE (deleted)`.
fn writing_under(pid: u32, dir: &Path) -> bool {
    if !partials_under(dir).is_empty() {
        return true;
    }
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| {
            target.parent() == Some(dir.as_path())
                && target
                    .file_name()
                    .is_some_and(|name| name.as_bytes().starts_with(b"#"))
        })
}

#[test]
fn a_source_is_never_overwritten() {
    let ws = Workspace::new();
    ws.write("dir/a.txt", b"alpha");
    ws.write("dir/inner/b.txt", b"bravo");
    ws.write("dir/inner/inner/c.txt", b"charlie");
    let o = ws.encrypt("dir/a.txt", "sealed/m", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::os::unix::fs::symlink("dir", ws.path("link")).unwrap();
    let before = ws.snapshot();

    let cases: &[&[&str]] = &[
        // A single file into its own directory, or onto itself.
        &["encrypt", "dir/a.txt", "dir/"],
        &["encrypt", "dir/a.txt", "dir"],
        &["encrypt", "dir/a.txt", "dir/a.txt"],
        &["encrypt", "dir/a.txt", "./dir/../dir/a.txt"],
        &["encrypt", "dir/a.txt", "link/"],
        &["decrypt", "sealed/m", "sealed/"],
        &["decrypt", "sealed/m", "sealed/m"],
        &["verify", "sealed/m", "sealed/m"],
        // A tree onto itself, through `..`, through a missing directory, through a link.
        &["encrypt", "dir", "dir"],
        &["encrypt", "dir", "dir/inner/.."],
        &["encrypt", "dir", "missing/../dir"],
        &["encrypt", "dir", "missing/deeper/../../dir/"],
        &["encrypt", "dir", "link"],
        &["reencrypt", "dir", "link/."],
        // Into the source, or into an ancestor of it.
        &["encrypt", "dir", "dir/out"],
        &["encrypt", "dir", "link/out"],
        &["encrypt", "dir/inner", "dir"],
        &["decrypt", "dir/inner", "."],
        &["reencrypt", "dir/inner", "dir"],
    ];
    for args in cases {
        let mut all = args.to_vec();
        let key_flag = if args[0] == "reencrypt" {
            ["--old-key", KEY, "--key", KEY].as_slice()
        } else {
            ["--key", KEY].as_slice()
        };
        all.extend(key_flag);
        let o = ws.run(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            [
                "source itself",
                "inside the source",
                "contains the source",
                "takes no destination",
                "verify expects"
            ]
            .iter()
            .any(|n| err.contains(n)),
            "{args:?}: {err}"
        );
        assert_eq!(ws.snapshot(), before, "{args:?} touched files");
        assert!(!ws.path("missing").exists(), "{args:?} created a directory");
    }

    // What only shows per object: an existing output that is the source under another
    // name (a hard link). That object fails, the source keeps its bytes, the rest is
    // written.
    std::fs::create_dir_all(ws.path("out")).unwrap();
    std::fs::hard_link(ws.path("dir/a.txt"), ws.path("out/a.txt")).unwrap();
    let o = ws.encrypt("dir", "out", &["--report", "r.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("replace the source"), "{}", stderr(&o));
    assert_eq!(counts(&ws.report("r.json")), [3, 2, 1, 0, 0]);
    assert_eq!(std::fs::read(ws.path("dir/a.txt")).unwrap(), b"alpha");
    assert!(ws.path("out/inner/inner/c.txt").is_file());
}

#[test]
fn outputs_keep_only_permission_bits_under_the_umask() {
    let ws = Workspace::new();
    let modes = [
        ("setuid", 0o4755),
        ("setgid", 0o2750),
        ("sticky", 0o1777),
        ("all", 0o7777),
        ("plain", 0o644),
        ("private", 0o600),
    ];
    for (name, mode) in modes {
        ws.write(format!("src/{name}"), name.as_bytes());
        let path = ws.path(format!("src/{name}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        // Owned by someone else: ownership must not follow (outputs are the runner's).
        std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
    }
    let me = std::fs::metadata(ws.path("k.key")).unwrap();
    for (umask, mask) in [("027", 0o027), ("077", 0o077), ("0", 0)] {
        let (enc, dec) = (format!("enc{mask:o}"), format!("dec{mask:o}"));
        let o = ws.run_with_umask(umask, &["encrypt", "src", &enc, "--key", KEY]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = ws.run_with_umask(umask, &["decrypt", &enc, &dec, "--key", KEY]);
        assert!(o.status.success(), "{}", stderr(&o));
        for (name, mode) in modes {
            let want = mode & 0o777 & !mask;
            for out in [&enc, &dec] {
                let meta = std::fs::metadata(ws.path(format!("{out}/{name}"))).unwrap();
                assert_eq!(
                    meta.permissions().mode() & 0o7777,
                    want,
                    "{out}/{name} from {mode:o} under umask {umask}"
                );
                assert_eq!(
                    (meta.uid(), meta.gid()),
                    (me.uid(), me.gid()),
                    "{out}/{name}"
                );
            }
        }
        assert_eq!(
            std::fs::read(ws.path(format!("{dec}/setuid"))).unwrap(),
            b"setuid"
        );
    }
}

#[test]
fn a_listing_error_fails_its_subtree_and_the_walk_goes_on() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"before");
    ws.write("src/z.txt", b"after");
    // A directory deeper than PATH_MAX (4096 bytes): it cannot be opened by its path.
    // Made relative to open directories, the only way to make one.
    let component = "d".repeat(200);
    let script = format!(
        "import os\nfd = os.open('src', os.O_DIRECTORY)\nfor _ in range(24):\n    \
         os.mkdir('{component}', dir_fd=fd)\n    \
         fd = os.open('{component}', os.O_DIRECTORY, dir_fd=fd)\n\
         os.close(os.open('unreachable.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))\n"
    );
    let status = Command::new("python3")
        .args(["-c", &script])
        .current_dir(ws.dir.path())
        .status()
        .expect("python3 (any Python 3) is needed to build a path longer than PATH_MAX");
    assert!(status.success());
    let o = ws.encrypt(
        "src",
        "out",
        &["--report", "r.json", "--completion-report", "c.csv"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report = ws.report("r.json");
    let [_, ok, failed, _, _] = counts(&report);
    assert_eq!((ok, failed), (2, 1), "{report}");
    let failure = &report["failures"][0];
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("cannot list this directory"),
        "{report}"
    );
    assert!(failure["key"].as_str().unwrap().contains(&component));
    assert!(stderr(&o).contains("nothing below it was processed"));
    // Files on both sides of the failed subtree were processed.
    assert!(ws.path("out/a.txt").is_file() && ws.path("out/z.txt").is_file());
    let csv = std::fs::read_to_string(ws.path("c.csv")).unwrap();
    assert!(csv.contains(",failed,ListingFailed,"), "{csv}");

    // A directory removed while the tree is walked: the walk reports it and goes on.
    let tree = ws.path("walked");
    for d in ["a", "b", "c", "d"] {
        ws.write(format!("walked/{d}/f"), d.as_bytes());
    }
    let mut items = Vec::new();
    sealpipe::store::list_local(&tree, |item| {
        if items.is_empty() {
            std::fs::remove_dir_all(tree.join("c")).unwrap();
        }
        items.push(item);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let summary: Vec<String> = items
        .iter()
        .map(|i| match i {
            sealpipe::store::ListItem::Object(l) => format!("ok {}", l.relative),
            sealpipe::store::ListItem::Invalid { id, code, .. } => format!("{code} {id}"),
            sealpipe::store::ListItem::Skipped { id, .. } => format!("skipped {id}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ok a/f".to_string(),
            "ok b/f".to_string(),
            format!("ListingFailed {}", tree.join("c").display()),
            "ok d/f".to_string(),
        ]
    );
}

#[test]
fn names_that_are_not_utf8_are_processed_and_reported_exactly() {
    let ws = Workspace::new();
    let names: [&[u8]; 3] = [b"caf\xe9.txt", b"dir\xff/inner\xfe.bin", b"plain.txt"];
    for (i, name) in names.iter().enumerate() {
        ws.write(
            OsStr::from_bytes(&[b"src/", *name].concat()),
            &[i as u8; 100],
        );
    }
    let o = ws.encrypt(
        "src",
        "enc",
        &["--report", "e.json", "--completion-report", "e.csv"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(counts(&ws.report("e.json")), [3, 3, 0, 0, 0]);
    let csv = std::fs::read_to_string(ws.path("e.csv")).unwrap();
    assert!(csv.contains("src/caf\\xe9.txt,,succeeded"), "{csv}");
    assert!(
        csv.contains("src/dir\\xff/inner\\xfe.bin,,succeeded"),
        "{csv}"
    );
    let o = ws.run(&["decrypt", "enc", "dec", "--key", KEY]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (i, name) in names.iter().enumerate() {
        let path = ws.path(OsStr::from_bytes(&[b"dec/", *name].concat()));
        assert_eq!(std::fs::read(path).unwrap(), [i as u8; 100]);
    }
    // A failure names the file exactly, escaped, on stderr and in the report.
    let bad = ws.path(OsStr::from_bytes(b"enc/caf\xe9.txt"));
    std::fs::write(&bad, b"not a message").unwrap();
    let o = ws.run(&["decrypt", "enc", "dec2", "--key", KEY, "--report", "d.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("enc/caf\\xe9.txt"), "{}", stderr(&o));
    let report = ws.report("d.json");
    assert_eq!(report["failures"][0]["path"], "enc/caf\\xe9.txt");
    assert!(!ws.path(OsStr::from_bytes(b"dec2/caf\xe9.txt")).exists());
}

#[test]
fn partial_outputs_of_killed_runs_are_removed_and_never_read() {
    let ws = Workspace::new();
    ws.write("src/a.txt", b"alpha");
    ws.write(
        "src/.sealpipe-left0.partial",
        b"a partial output in a source tree",
    );
    ws.write("out/.sealpipe-dead1.partial", b"PLAINTEXT PREFIX");
    ws.write("out/deep/er/.sealpipe-dead2.partial", b"PLAINTEXT PREFIX");
    ws.write("out/.sealpipe-live3.partial", b"being written");
    // A live writer holds its partial file locked: it must be left alone.
    let live = std::fs::File::open(ws.path("out/.sealpipe-live3.partial")).unwrap();
    live.lock().unwrap();

    let o = ws.encrypt("src", "out", &["--dry-run", "--report", "dry.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ws.report("dry.json")["stale_partials"]["removed"], 2);
    assert_eq!(
        partials_under(&ws.path("out")).len(),
        3,
        "a dry run removes nothing"
    );

    let o = ws.encrypt("src", "out", &["--report", "r.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = ws.report("r.json");
    assert_eq!(report["stale_partials"]["removed"], 2, "{report}");
    assert_eq!(report["stale_partials"]["in_use"], 1, "{report}");
    assert_eq!(counts(&report), [2, 1, 0, 0, 1]);
    assert!(
        report["skipped"][0]["error"]
            .as_str()
            .unwrap()
            .contains("temporary file")
    );
    assert_eq!(
        partials_under(&ws.path("out")),
        [ws.path("out/.sealpipe-live3.partial")]
    );
    assert!(!ws.path("out/.sealpipe-left0.partial").exists());
    // Once its writer is gone, the next run over the destination removes it too.
    drop(live);
    let o = ws.encrypt("src", "out", &["--report", "r2.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ws.report("r2.json")["stale_partials"]["removed"], 1);
    assert!(partials_under(&ws.path("out")).is_empty());

    // A decrypt killed mid-write leaves nothing on Linux: its output had no name yet.
    // Elsewhere it leaves a plaintext prefix under a temporary name; the next run
    // removes it.
    ws.write("big", &common::pseudo_random(48 << 20, 9));
    let o = ws.encrypt("big", "sealed/big", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::create_dir(ws.path("plain")).unwrap();
    let mut child = ws
        .command(&["decrypt", "sealed", "plain", "--key", KEY, "--quiet"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !writing_under(child.id(), &ws.path("plain")) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no partial output appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "decrypt ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let left = if cfg!(target_os = "linux") { 0 } else { 1 };
    assert_eq!(
        std::fs::read_dir(ws.path("plain")).unwrap().count(),
        left,
        "what kill -9 leaves of an output being written"
    );
    let o = ws.run(&[
        "decrypt", "sealed", "plain", "--key", KEY, "--report", "d.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ws.report("d.json")["stale_partials"]["removed"], left);
    assert!(partials_under(&ws.path("plain")).is_empty());
    assert_eq!(
        std::fs::read(ws.path("plain/big")).unwrap(),
        std::fs::read(ws.path("big")).unwrap()
    );
}

#[test]
fn the_completion_report_holds_only_whole_lines_after_kill_9() {
    let ws = Workspace::new();
    for i in 0..3000 {
        ws.write(
            format!("src/{:02}/{i:05}.txt", i % 50),
            format!("object {i}").as_bytes(),
        );
    }
    let mut cut_short = 0;
    for (round, delay_ms) in [40u64, 120, 250, 500].into_iter().enumerate() {
        let csv = ws.path(format!("c{round}.csv"));
        let mut child = ws
            .command(&[
                "encrypt",
                "src",
                &format!("out{round}"),
                "--key",
                KEY,
                "--quiet",
            ])
            .arg("--completion-report")
            .arg(&csv)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&csv).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "torn last line: {text:?}"
        );
        for line in text.lines() {
            assert_eq!(line.split(',').count(), 6, "round {round}: {line:?}");
            assert!(line.ends_with(",succeeded,,"), "round {round}: {line:?}");
        }
        cut_short += usize::from(text.lines().count() < 3000);
    }
    assert!(cut_short > 0, "no kill landed while the job ran");
}

/// Starts `args`, waits for its partial output under `out`, runs `change` on the
/// source, and returns the finished run.
fn change_source_mid_read(ws: &Workspace, out: &str, change: impl FnOnce()) -> Output {
    let child = ws
        .command(&["encrypt", "big", out, "--key", KEY, "--report", "r.json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let parent = ws.path(out).parent().unwrap().to_path_buf();
    while !writing_under(child.id(), &parent) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no partial output appeared"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    change();
    child.wait_with_output().unwrap()
}

/// Something done to the source while it is being read.
type Change<'a> = Box<dyn Fn() + 'a>;

#[test]
fn a_source_that_changes_while_read_fails_and_leaves_nothing() {
    let ws = Workspace::new();
    let big = ws.path("big");
    let size = 256u64 << 20;
    let variants: [(&str, Change); 3] = [
        (
            "shrinks",
            Box::new(|| {
                std::fs::File::options()
                    .write(true)
                    .open(&big)
                    .unwrap()
                    .set_len(10 << 20)
                    .unwrap()
            }),
        ),
        (
            "grows",
            Box::new(|| {
                use std::io::Write;
                std::fs::File::options()
                    .append(true)
                    .open(&big)
                    .unwrap()
                    .write_all(&[1u8; 1 << 20])
                    .unwrap()
            }),
        ),
        (
            "rewritten",
            Box::new(|| {
                use std::io::{Seek, Write};
                let mut f = std::fs::File::options().write(true).open(&big).unwrap();
                f.seek(std::io::SeekFrom::Start(size - 4096)).unwrap();
                f.write_all(&[9u8; 4096]).unwrap();
                f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
                    .unwrap();
            }),
        ),
    ];
    for (what, change) in variants {
        std::fs::File::create(&big).unwrap().set_len(size).unwrap();
        let out = format!("out-{what}/big.enc");
        let o = change_source_mid_read(&ws, &out, change);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        let report = ws.report("r.json");
        assert_eq!(counts(&report), [1, 0, 1, 0, 0], "{what}");
        let error = report["failures"][0]["error"].as_str().unwrap();
        assert!(
            error.contains("changed while it was read"),
            "{what}: {error}"
        );
        assert!(!ws.path(&out).exists(), "{what}: an output was written");
        assert!(
            partials_under(ws.dir.path()).is_empty(),
            "{what}: a partial is left"
        );
    }
}

#[test]
fn small_edges() {
    let ws = Workspace::new();
    ws.write("dir/a.txt", b"alpha");
    std::os::unix::fs::symlink("dir/a.txt", ws.path("link.txt")).unwrap();
    // A symbolic link given as SRC says why it is refused.
    let o = ws.encrypt("link.txt", "out", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert!(!ws.path("out").exists());

    // A tree into an existing file: refused up front, not once per object.
    ws.write("a-file", b"not a directory");
    let o = ws.run(&["encrypt", "dir", "a-file", "--key", KEY]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(ws.path("a-file")).unwrap(),
        b"not a directory"
    );

    // An output whose directory is a file fails alone, naming where it could not be
    // created; the file is left as it was.
    ws.write("src2/sub/b.txt", b"bravo");
    ws.write("src2/c.txt", b"charlie");
    ws.write("out2/sub", b"a file where a directory goes");
    let o = ws.run(&["encrypt", "src2", "out2", "--key", KEY]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot create an output in out2/sub"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(ws.path("out2/sub")).unwrap(),
        b"a file where a directory goes"
    );
    assert!(ws.path("out2/c.txt").exists());

    // A report that names something other than a regular file is written through it,
    // never renamed over it: /dev/full stays a device (the write fails, exit 2), a
    // symbolic link stays a link to the file it names.
    let o = ws.run(&[
        "encrypt",
        "dir",
        "enc",
        "--key",
        KEY,
        "--report",
        "/dev/full",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write report"), "{}", stderr(&o));
    {
        use std::os::unix::fs::FileTypeExt;
        let full = std::fs::symlink_metadata("/dev/full").unwrap();
        assert!(full.file_type().is_char_device(), "/dev/full was replaced");
    }
    std::fs::create_dir_all(ws.path("reports")).unwrap();
    std::os::unix::fs::symlink("reports/real.json", ws.path("link.json")).unwrap();
    let o = ws.run(&[
        "encrypt",
        "dir",
        "enc2",
        "--key",
        KEY,
        "--report",
        "link.json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(ws.path("link.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(ws.report("reports/real.json")["objects"]["ok"], 1);

    // A context value that is not UTF-8 is named as such.
    let o = ws.encrypt("dir/a.txt", "a.enc", &["-c", "k=zzzzzz"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut bytes = std::fs::read(ws.path("a.enc")).unwrap();
    let at = bytes.windows(6).position(|w| w == b"zzzzzz").unwrap();
    bytes[at..at + 2].copy_from_slice(b"\xff\xfe");
    std::fs::write(ws.path("a.enc"), bytes).unwrap();
    let o = ws.run(&["decrypt", "a.enc", "a.out", "--key", KEY]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("encryption context value is not valid UTF-8"),
        "{}",
        stderr(&o)
    );
    assert!(!ws.path("a.out").exists());
}
