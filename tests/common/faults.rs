//! The fault-injecting proxies of `tests/faults/` (KMS errors; S3 SlowDown, resets and
//! concurrent writers), started from the test virtualenv in front of a moto server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running proxy; killed when dropped, or stopped with [`stop`](Self::stop) to read
/// its counters.
pub struct FaultProxy {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
}

impl FaultProxy {
    /// Starts `tests/faults/{script}` in front of `upstream` with `args`, and waits for
    /// the `PORT n` line it prints once listening.
    pub fn start(script: &str, upstream: &str, args: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/faults")
            .join(script);
        let mut child = Command::new(super::venv_tool("python"))
            .arg(&script)
            .args(["--upstream", upstream])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("the proxy prints its port, not {line:?}"))
            .to_string();
        Self {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Stops the proxy with SIGTERM and returns what it printed on stderr: its counters
    /// line (`seen=.. injected=..`, `seen=.. slowdown=.. reset=.. overwritten=..`).
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        sigterm(&child);
        child.wait().unwrap();
        super::read_stderr(&mut child)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A counter from a proxy's final line, e.g. `count(&line, "slowdown")`.
pub fn count(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in the proxy's output: {line:?}"))
}

/// Sends SIGTERM to `child` (a cooperative stop, unlike `Child::kill`).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
}
