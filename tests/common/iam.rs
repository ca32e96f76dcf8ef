//! A moto server that enforces IAM, for tests of permission errors with real policies.
//!
//! moto (5.2.5, server mode) checks signatures and IAM identity policies once its
//! "initial no-auth action count" is used up: `POST /moto-api/reset-auth` with body `0`
//! switches that on at run time (moto/moto_api/_internal/responses.py). Starting the
//! server with `INITIAL_NO_AUTH_ACTION_COUNT=0` instead would also refuse the set-up
//! calls, since moto has no root credentials: so the server starts open, the set-up
//! creates users, keys, buckets and KMS keys, and its last act is to turn IAM on.
//!
//! The server's request log (werkzeug's, one line per request) goes to a file, so a
//! test can count requests of one shape, e.g. `POST / HTTP/1.1` (STS, IAM and KMS;
//! S3 requests name a bucket in the path).

use std::path::PathBuf;
use std::process::Command;

use super::moto::Moto;

pub struct IamMoto {
    moto: Moto,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl IamMoto {
    /// Starts moto on a free loopback port, IAM not yet enforced, its request log to a
    /// file.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let moto = Moto::start_with(|c| {
            c.stderr(std::fs::File::create(&log).unwrap());
        });
        Self {
            moto,
            log,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        self.moto.endpoint()
    }

    /// Runs `script` with the venv's python (boto3) against this server, as moto's
    /// default user, with `ENDPOINT` set; returns its stdout. Fails the test with the
    /// script's stderr if it fails.
    pub fn python(&self, script: &str) -> String {
        let out = Command::new(super::venv_tool("python"))
            .args(["-c", script])
            .env("ENDPOINT", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .output()
            .expect("run the venv python");
        assert!(
            out.status.success(),
            "set-up script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Python that makes moto check every later request against IAM. Not a form
    /// body: moto reads the raw body, which werkzeug leaves empty for forms.
    pub const ENFORCE_IAM: &'static str = "
import urllib.request
urllib.request.urlopen(urllib.request.Request(
    ENDPOINT + '/moto-api/reset-auth', data=b'0', method='POST',
    headers={'Content-Type': 'text/plain'})).read()
";

    /// Request log lines so far that contain `needle`.
    pub fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}
