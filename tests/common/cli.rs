//! The `sealpipe` binary run on local files in a scratch workspace, for `cli.rs`,
//! `cli_edges.rs` and `safety.rs`: a command with no `SEALPIPE_*` setting inherited
//! from the caller's environment, and a workspace holding two raw AES keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// `k.key` in every [`Workspace`] (32 bytes of 0x42).
pub const KEY: &str = "raw-aes:tests:k1:k.key";
/// `other.key` in every [`Workspace`] (32 bytes of 0x17).
pub const OTHER: &str = "raw-aes:tests:k2:other.key";

/// The `sealpipe` binary with every `SEALPIPE_*` variable removed from the environment
/// it inherits, so that the caller's settings (config file, concurrency, KMS rate,
/// quiet, AEAD backend...) never leak into a test. A test sets what it needs after.
pub fn sealpipe() -> Command {
    without_settings(Command::new(env!("CARGO_BIN_EXE_sealpipe")))
}

/// `c` with every `SEALPIPE_*` variable of this process removed from its environment.
fn without_settings(mut c: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SEALPIPE_") {
            c.env_remove(name);
        }
    }
    c
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory with `k.key` ([`KEY`]) and `other.key` ([`OTHER`]), where
/// sealpipe runs with the directory as its working directory.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k.key"), [0x42u8; 32]).unwrap();
        std::fs::write(dir.path().join("other.key"), [0x17u8; 32]).unwrap();
        Self { dir }
    }

    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `data` to `p`, creating its parent directories.
    pub fn write(&self, p: impl AsRef<Path>, data: &[u8]) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    /// sealpipe with `args`, in the workspace, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = sealpipe();
        c.args(args).current_dir(self.dir.path());
        c
    }

    /// Runs sealpipe with `args` in the workspace to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run sealpipe")
    }

    /// Runs `script` with `sh -c` in the workspace, `$0` the sealpipe binary and `args`
    /// its positional parameters, with no `SEALPIPE_*` variable in the environment.
    pub fn sh(&self, script: &str, args: &[&str]) -> Output {
        without_settings(Command::new("sh"))
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_sealpipe"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run sh")
    }

    /// Runs `sealpipe encrypt SRC DST --key KEY` and `extra` to the end.
    pub fn encrypt(&self, src: &str, dst: &str, extra: &[&str]) -> Output {
        let mut args = vec!["encrypt", src, dst, "--key", KEY];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// Runs sealpipe under `sh` with `umask` set first.
    pub fn run_with_umask(&self, umask: &str, args: &[&str]) -> Output {
        self.sh(&format!("umask {umask} && exec \"$0\" \"$@\""), args)
    }

    /// A FIFO at `p`.
    pub fn mkfifo(&self, p: &str) -> PathBuf {
        let path = self.path(p);
        let status = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(status.success());
        path
    }

    /// Every file below the workspace with its contents: what "touched nothing" means.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        walkdir::WalkDir::new(self.dir.path())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                (
                    e.path()
                        .strip_prefix(self.dir.path())
                        .unwrap()
                        .to_path_buf(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }

    /// The JSON report at `name`.
    pub fn report(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(name)).unwrap()).unwrap()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}
