//! A Lambda Runtime API emulator (cargo-lambda's `watch --only-lambda-apis`, from the
//! test venv) for the tests that run sealpipe as a Lambda function.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A Lambda Runtime API emulator on a free loopback port; killed when dropped.
pub struct Emulator {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _project: tempfile::TempDir,
}

impl Emulator {
    pub fn start() -> Self {
        // `cargo lambda` reads a Cargo project's metadata even when it starts no
        // function: an empty one, so it never builds or locks the real crate.
        let project = tempfile::tempdir().unwrap();
        std::fs::write(
            project.path().join("Cargo.toml"),
            "[package]\nname = \"sealpipe-function\"\nversion = \"0.0.0\"\nedition = \"2021\"\n",
        )
        .unwrap();
        std::fs::create_dir(project.path().join("src")).unwrap();
        std::fs::write(project.path().join("src/main.rs"), "fn main() {}\n").unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = project.path().join("emulator.log");
        let child = std::process::Command::new(super::venv_tool("cargo-lambda"))
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
            .args(["-P", &port.to_string()])
            .current_dir(project.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(project.path().join("emulator.err")).unwrap())
            .spawn()
            .expect("start cargo-lambda (scripts/setup-venv.sh installs it)");
        let emulator = Self {
            child,
            port,
            log,
            _project: project,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the Lambda Runtime API emulator did not start within 60 s: {}",
                std::fs::read_to_string(&emulator.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        emulator
    }

    /// Where the emulator takes invocations (the Lambda Invoke API).
    pub fn invoke_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
            self.port
        )
    }
}

impl Emulator {
    /// The emulator's function URL for `path` (it turns each HTTP request into the
    /// payload 2.0 event a function URL sends, and the function's answer back).
    pub fn function_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/_{path}", self.port)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
