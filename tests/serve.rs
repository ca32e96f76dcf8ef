//! `sealpipe serve`: the HTTP server, run as a child process on a free loopback port and
//! driven by real clients only: curl, Python `requests`, raw TCP sockets for the slow
//! clients, and the interop peers aws-encryption-cli (ESDK messages), the AWS CLI and
//! boto3 (`/v1/kms/*`). KMS, Secrets Manager and SSM are a moto server.
//!
//! What is shown: round trips of every size through both keyrings (raw AES and KMS) and
//! both body styles (binary and JSON); messages the server writes decrypt in
//! aws-encryption-cli and its messages decrypt in the server; `/v1/kms/*` speaks the KMS
//! blob format of the AWS CLI and boto3; tokens (operations, keys, hashed lines, four
//! sources, timed and SIGHUP reloads, a failed reload keeping the old set); limits
//! (body size, per-token rate, concurrency, slow headers, slow bodies); a tampered or
//! truncated message releases no plaintext at all; 2,000 requests take a handful of
//! GenerateDataKey calls, read from `/metrics` with the official Prometheus parser.
//!
//! Every refusal is checked to be the JSON error of the spec
//! (`{"error":{"code":..,"message":..}}`), with its code where the spec names one.
//!
//! Tools come from the test venv (`scripts/setup-venv.sh`): moto_server, python with
//! requests, boto3 and prometheus-client, aws-encryption-cli and aws (awscli). A missing
//! one fails the test and says how to install it; nothing is skipped.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use common::moto::Moto;

const MIB: usize = 1024 * 1024;
const NAMESPACE: &str = "serve-test";

/// Tokens (at least 16 visible characters each).
const ALL: &str = "tok-all-0123456789abcdef";
const OTHER: &str = "tok-other-0123456789abcdef";
/// A one-byte body.
const X: &[u8] = b"x";

// ---------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------

/// `sealpipe serve --listen 127.0.0.1:0 ARGS`, its port read from the first stderr line;
/// killed (and reaped) when dropped. The rest of its stderr is kept for failure messages.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    scratch: tempfile::TempDir,
    n: AtomicUsize,
}

/// How to start a server: its arguments after `serve --listen 127.0.0.1:0`, extra
/// environment, and the moto endpoint for AWS_ENDPOINT_URL and `--kms-endpoint`.
#[derive(Default)]
struct Opts<'a> {
    args: Vec<String>,
    env: Vec<(&'a str, String)>,
    aws: Option<String>,
}

impl<'a> Opts<'a> {
    fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn aws(mut self, moto: &Moto) -> Self {
        self.aws = Some(moto.endpoint());
        self
    }

    fn env(mut self, name: &'a str, value: &str) -> Self {
        self.env.push((name, value.to_string()));
        self
    }
}

/// The sealpipe binary run with nothing from the caller's environment but PATH, test
/// credentials, us-east-1 and, when given, every AWS endpoint at `aws` (else at a
/// loopback port nothing listens on, so nothing real is ever reached).
fn sealpipe(dir: &Path, aws: Option<&str>) -> Command {
    let endpoint = aws.unwrap_or("http://127.0.0.1:9");
    let mut c = common::aws_command(Path::new(env!("CARGO_BIN_EXE_sealpipe")), dir, endpoint);
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    c
}

impl Server {
    fn start(opts: Opts) -> Self {
        let scratch = tempfile::tempdir().unwrap();
        let mut command = sealpipe(scratch.path(), opts.aws.as_deref());
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        command.args(&opts.args);
        if let Some(endpoint) = &opts.aws {
            command.args(["--kms-endpoint", endpoint]);
        }
        for (k, v) in &opts.env {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sealpipe serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut first = Some(first_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(tx) = first.take() {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match first_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let status = common::wait_or_kill(&mut child, Duration::from_millis(100));
                panic!(
                    "sealpipe serve {:?} printed no first line within 60 s (exit {status:?}):\n{}",
                    opts.args,
                    log.lock().unwrap()
                );
            }
        };
        let prefix = "sealpipe serve: listening on http://127.0.0.1:";
        let port = line
            .strip_prefix(prefix)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "first stderr line is not {prefix:?}PORT but {line:?}; stderr:\n{}",
                    log.lock().unwrap()
                )
            });
        Self {
            child,
            port,
            log,
            scratch,
            n: AtomicUsize::new(0),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn file(&self, name: &str) -> PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.scratch.path().join(format!("{n}.{name}"))
    }

    /// One request with curl. `token` goes in `Authorization: Bearer`; `body` (if any)
    /// is sent with `--data-binary` from a file, so the method is POST.
    fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        headers: &[&str],
    ) -> Reply {
        self.try_curl(method, path, token, body, headers, 120)
            .unwrap_or_else(|e| panic!("{e}\nserver stderr:\n{}", self.log()))
    }

    /// [`Server::curl`] bounded by `max_time` seconds; a curl failure (a timeout, a
    /// reset) is an `Err` with curl's message.
    fn try_curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        headers: &[&str],
        max_time: u32,
    ) -> Result<Reply, String> {
        let head_file = self.file("head");
        let body_file = self.file("body");
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", &max_time.to_string(), "-X", method])
            .arg("-D")
            .arg(&head_file)
            .arg("-o")
            .arg(&body_file)
            .args(["-w", "%{http_code}"]);
        if let Some(token) = token {
            c.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(body) = body {
            let input = self.file("in");
            std::fs::write(&input, body).unwrap();
            c.arg("--data-binary").arg(format!("@{}", input.display()));
        }
        c.arg(self.url(path));
        let out = c
            .output()
            .expect("run curl (apt-get install -y curl if it is missing)");
        if !out.status.success() {
            return Err(format!(
                "curl {method} {path}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let status: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        // The last header block: curl also records interim ones (100 Continue).
        let head = std::fs::read_to_string(&head_file).unwrap_or_default();
        let block = head
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .last()
            .unwrap_or("");
        let headers = parse_headers(block);
        let body = std::fs::read(&body_file).unwrap_or_default();
        Ok(Reply {
            what: format!("{method} {path}"),
            status,
            headers,
            body,
        })
    }

    /// POST a binary body (`application/octet-stream`).
    fn post(&self, path: &str, token: &str, body: &[u8]) -> Reply {
        self.curl(
            "POST",
            path,
            Some(token),
            Some(body),
            &["Content-Type: application/octet-stream"],
        )
    }

    /// POST a JSON body.
    fn post_json(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.curl(
            "POST",
            path,
            Some(token),
            Some(&serde_json::to_vec(body).unwrap()),
            &["Content-Type: application/json"],
        )
    }

    fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.curl("GET", path, token, None, &[])
    }

    /// `/v1/encrypt` then `/v1/decrypt` of `plaintext` with the key `keyref` (None: the
    /// default); checks both answers and returns the message.
    fn round_trip(&self, token: &str, keyref: Option<&str>, plaintext: &[u8]) -> Vec<u8> {
        let query = keyref.map_or(String::new(), |k| format!("?key={}", enc(k)));
        let sealed = self.post(&format!("/v1/encrypt{query}"), token, plaintext);
        sealed.expect(200);
        assert_eq!(
            sealed.header("content-type"),
            Some("application/octet-stream")
        );
        assert_esdk_v2_0478(&sealed.body);
        let opened = self.post("/v1/decrypt", token, &sealed.body);
        opened.expect(200);
        assert_eq!(
            opened.header("content-type"),
            Some("application/octet-stream")
        );
        assert!(
            opened.body == plaintext,
            "{} bytes did not round-trip (got {} bytes)",
            plaintext.len(),
            opened.body.len()
        );
        sealed.body
    }

    /// `{sample name {labels}: value}` of `/metrics`, as prometheus-client parses it.
    fn metrics(&self, token: &str) -> Metrics {
        let r = self.get("/metrics", Some(token));
        r.expect(200);
        Metrics::parse(&r.body)
    }

    /// A raw TCP connection to the server, reads bounded by `timeout`.
    fn connect(&self, timeout: Duration) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sealpipe serve stderr ---\n{}", self.log());
        }
    }
}

/// An HTTP answer.
struct Reply {
    what: String,
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        let shown = &self.body[..self.body.len().min(2000)];
        String::from_utf8_lossy(shown).into_owned()
    }

    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}: want {status}, got {} {}",
            self.what,
            self.status,
            self.text()
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.what, self.text()))
    }

    /// A refusal: `status`, Content-Type JSON, `{"error":{"code":S,"message":S}}`, with
    /// `code` when given. Returns the code.
    fn error(&self, status: u16, code: Option<&str>) -> String {
        self.expect(status);
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{}: error Content-Type {ct:?}",
            self.what
        );
        check_error_doc(&self.what, &self.json(), code)
    }
}

fn check_error_doc(what: &str, doc: &Value, code: Option<&str>) -> String {
    let err = &doc["error"];
    let got = err["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error.code string in {doc}"));
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no error.message in {doc}"
    );
    assert_eq!(
        doc.as_object().unwrap().len(),
        1,
        "{what}: only \"error\" at the top: {doc}"
    );
    if let Some(code) = code {
        assert_eq!(got, code, "{what}: {doc}");
    }
    got.to_string()
}

fn parse_headers(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An ESDK message format version 2 with suite 0x0478 (AES-256-GCM, HKDF-SHA512,
/// key commitment, no signature), as the spec promises for `/v1/encrypt`.
fn assert_esdk_v2_0478(message: &[u8]) {
    assert!(
        message.len() > 3 && message[..3] == [0x02, 0x04, 0x78],
        "not an ESDK v2 / 0x0478 message: starts {:02x?}",
        &message[..message.len().min(8)]
    );
}

/// Text that is plainly plaintext wherever a piece of it shows up: numbered lines with
/// the marker [`SECRET`].
const SECRET: &str = "sealpipe-secret-line";

fn secret_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{SECRET}-{i:010}\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// A raw AES wrapping key file of 32 random bytes in `dir`; its KEYREF.
fn raw_key(dir: &Path, name: &str) -> String {
    let mut key = [0u8; 32];
    sealpipe::crypto::random_bytes(&mut key).unwrap();
    let path = dir.join(format!("{name}.key"));
    std::fs::write(&path, key).unwrap();
    format!("raw-aes:{NAMESPACE}:{name}:{}", path.display())
}

/// A token file with `lines` in `dir`; its path as a string.
fn token_file(dir: &Path, name: &str, lines: &[String]) -> String {
    let path = dir.join(name);
    write_atomically(
        &path,
        &format!("# tokens for the test\n\n{}\n", lines.join("\n")),
    );
    path.display().to_string()
}

/// Writes by rename, so a reload never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `f` every 100 ms until it is true or `timeout` passes.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------
// Python: requests, boto3, prometheus-client
// ---------------------------------------------------------------------------------

fn python(what: &str, script: &str, args: &[&str], stdin: &[u8]) -> String {
    let args: Vec<&Path> = args.iter().map(Path::new).collect();
    common::venv_python(what, script, &args, stdin)
}

/// boto3 clients of the moto server `sys.argv[1]`.
const BOTO: &str = r#"
import base64, json, sys
import boto3
def client(name):
    return boto3.client(name, endpoint_url=sys.argv[1], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
"#;

fn boto(moto: &Moto, what: &str, script: &str, args: &[&str]) -> String {
    let endpoint = moto.endpoint();
    let mut all = vec![endpoint.as_str()];
    all.extend_from_slice(args);
    python(what, &format!("{BOTO}\n{script}"), &all, b"")
}

fn create_kms_key(moto: &Moto) -> String {
    let arn = boto(
        moto,
        "create a KMS key on moto",
        r#"print(client("kms").create_key(Description="serve test")["KeyMetadata"]["Arn"])"#,
        &[],
    );
    arn.trim().to_string()
}

/// Requests made with Python `requests` (one Session, in order). stdin: {"base": URL,
/// "requests": [{"method", "path", "token"?, "json"?, "data_b64"?, "headers"?}]};
/// prints [{"status", "headers" (names lowercased), "body_b64"}].
const REQUESTS: &str = r#"
import base64, json, sys
import requests
job = json.load(sys.stdin)
out = []
with requests.Session() as s:
    for r in job["requests"]:
        headers = dict(r.get("headers", {}))
        if r.get("token"):
            headers["Authorization"] = "Bearer " + r["token"]
        kw = {}
        if "json" in r:
            kw["json"] = r["json"]
        if "data_b64" in r:
            kw["data"] = base64.b64decode(r["data_b64"])
        resp = s.request(r["method"], job["base"] + r["path"], headers=headers, timeout=60, **kw)
        out.append({"status": resp.status_code,
                    "headers": {k.lower(): v for k, v in resp.headers.items()},
                    "body_b64": base64.b64encode(resp.content).decode()})
print(json.dumps(out))
"#;

/// One request for [`requests`].
fn req(method: &str, path: &str, token: Option<&str>) -> Value {
    let mut r = json!({"method": method, "path": path});
    if let Some(t) = token {
        r["token"] = json!(t);
    }
    r
}

fn req_json(path: &str, token: &str, body: Value) -> Value {
    let mut r = req("POST", path, Some(token));
    r["json"] = body;
    r
}

fn requests(server: &Server, reqs: Vec<Value>) -> Vec<Reply> {
    let what: Vec<String> = reqs
        .iter()
        .map(|r| format!("requests {} {}", r["method"], r["path"]))
        .collect();
    let job = json!({"base": server.url(""), "requests": reqs});
    let printed = python(
        "Python requests",
        REQUESTS,
        &[],
        &serde_json::to_vec(&job).unwrap(),
    );
    let answers: Vec<Value> = serde_json::from_str(&printed).unwrap();
    answers
        .into_iter()
        .zip(what)
        .map(|(a, what)| Reply {
            what,
            status: a["status"].as_u64().unwrap() as u16,
            headers: a["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            body: B64.decode(a["body_b64"].as_str().unwrap()).unwrap(),
        })
        .collect()
}

fn b64_field(doc: &Value, field: &str) -> Vec<u8> {
    let s = doc[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {doc}"));
    B64.decode(s)
        .unwrap_or_else(|e| panic!("{field:?} is not base64 ({e}): {doc}"))
}

/// Samples of a Prometheus text exposition, parsed by prometheus-client's parser.
struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

impl Metrics {
    fn parse(text: &[u8]) -> Self {
        let what = format!(
            "prometheus-client refused /metrics:\n{}",
            String::from_utf8_lossy(text)
        );
        let samples: Vec<(String, BTreeMap<String, String>, f64)> =
            serde_json::from_str(&python(&what, PARSE_METRICS, &[], text)).unwrap();
        Self(samples)
    }

    /// The sum of the samples named `name` whose labels include all of `labels`
    /// (a label value list: any of them).
    fn sum(&self, name: &str, labels: &[(&str, &[&str])]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, vs)| l.get(*k).is_some_and(|v| vs.contains(&v.as_str())))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }

    fn dump(&self) -> String {
        self.0
            .iter()
            .map(|(n, l, v)| format!("{n}{l:?} {v}\n"))
            .collect()
    }
}

/// The `route` label of `/v1/encrypt`, as the server may spell it.
const ENCRYPT_ROUTE: &[&str] = &["/v1/encrypt", "encrypt", "v1/encrypt"];

// ---------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------

/// What a raw connection received before it closed (or `timeout` of silence).
enum Raw {
    /// Closed (EOF or reset) after these bytes (maybe none).
    Closed(Vec<u8>),
    /// Still open after this many bytes when the read timed out.
    Open(Vec<u8>),
}

fn read_until_closed(s: &mut TcpStream) -> Raw {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Raw::Closed(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Raw::Open(got);
            }
            Err(_) => return Raw::Closed(got), // reset: closed too
        }
    }
}

/// Status, headers and (de-chunked) body of a raw HTTP/1.1 response.
fn parse_raw_response(what: &str, raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no header end in {:?}",
                String::from_utf8_lossy(raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {head:?}"));
    let headers = parse_headers(&head);
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&rest[..eol])
                    .split(';')
                    .next()
                    .unwrap()
                    .trim(),
                16,
            )
            .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Reply {
        what: what.to_string(),
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------

const SIZES: &[usize] = &[0, 1024, 3 * MIB];

#[test]
fn raw_aes_round_trips_with_curl_every_size_and_context() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "main");
    let second = raw_key(dir.path(), "second");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--key",
        &second,
        "--token-file",
        &tokens,
    ]));

    for (i, &size) in SIZES.iter().enumerate() {
        let plaintext = common::pseudo_random(size, i as u64 + 1);
        server.round_trip(ALL, None, &plaintext);
        server.round_trip(ALL, Some(&key), &plaintext);
        let sealed = server.round_trip(ALL, Some(&second), &plaintext);
        // Wrapped under the second key only: a server without it cannot open it.
        let keyring = keyring_of(&second);
        let (_, out) = common::decrypt(
            keyring.as_ref(),
            &Default::default(),
            &Default::default(),
            &sealed,
        )
        .expect("the ?key= message decrypts with that key in the library");
        assert_eq!(out, plaintext);
    }

    // A body sent with curl's own default Content-Type (form-urlencoded) is still a
    // binary body: only application/json selects the JSON variant.
    let plaintext = b"{\"plaintext\": \"not JSON mode\"}".to_vec();
    let sealed = server.curl("POST", "/v1/encrypt", Some(ALL), Some(&plaintext), &[]);
    sealed.expect(200);
    let opened = server.post("/v1/decrypt", ALL, &sealed.body);
    assert_eq!(opened.expect(200).body, plaintext);

    // Context from the query (split at the first '=', percent-decoded) and from the
    // X-Encryption-Context header; the decrypt answer carries it back as JSON with
    // non-ASCII escaped.
    let query = format!(
        "?context={}&context={}&context={}",
        enc("team=data"),
        enc("eq=a=b"),
        enc("名=値 ✓")
    );
    let sealed = server.post(&format!("/v1/encrypt{query}"), ALL, b"with context");
    sealed.expect(200);
    let opened = server.post("/v1/decrypt", ALL, &sealed.body);
    opened.expect(200);
    assert_eq!(opened.body, b"with context");
    let header = opened
        .header("x-encryption-context")
        .expect("X-Encryption-Context on a decrypt answer");
    assert!(
        header.is_ascii(),
        "non-ASCII must be \\u-escaped: {header:?}"
    );
    let ctx: BTreeMap<String, String> = serde_json::from_str(header).unwrap();
    assert_eq!(ctx.get("team").map(String::as_str), Some("data"), "{ctx:?}");
    assert_eq!(ctx.get("eq").map(String::as_str), Some("a=b"), "{ctx:?}");
    assert_eq!(ctx.get("名").map(String::as_str), Some("値 ✓"), "{ctx:?}");
    // The reader may insist on pairs; a pair the message lacks is ContextMismatch.
    let ok = server.post(
        &format!("/v1/decrypt?context={}", enc("team=data")),
        ALL,
        &sealed.body,
    );
    assert_eq!(ok.expect(200).body, b"with context");
    let wrong = server.post(
        &format!("/v1/decrypt?context={}", enc("team=other")),
        ALL,
        &sealed.body,
    );
    wrong.error(400, Some("ContextMismatch"));
    assert!(!wrong.body.windows(12).any(|w| w == b"with context"));

    let by_header = server.curl(
        "POST",
        "/v1/encrypt",
        Some(ALL),
        Some(b"header context".as_slice()),
        &[
            "Content-Type: application/octet-stream",
            r#"X-Encryption-Context: {"purpose":"backup","\u540d":"\u5024"}"#,
        ],
    );
    by_header.expect(200);
    let opened = server.post(
        &format!("/v1/decrypt?context={}", enc("purpose=backup")),
        ALL,
        &by_header.body,
    );
    opened.expect(200);
    let ctx: BTreeMap<String, String> =
        serde_json::from_str(opened.header("x-encryption-context").unwrap()).unwrap();
    assert_eq!(ctx.get("purpose").map(String::as_str), Some("backup"));
    assert_eq!(ctx.get("名").map(String::as_str), Some("値"));

    // A malformed context header is a 400 JSON error, not a message without context.
    server
        .curl(
            "POST",
            "/v1/encrypt",
            Some(ALL),
            Some(X),
            &["X-Encryption-Context: not json"],
        )
        .error(400, None);
    // A key the server was not started with.
    let unknown = server.post(
        &format!("/v1/encrypt?key={}", enc("raw-aes:nope:nope:/nonexistent")),
        ALL,
        b"x",
    );
    assert!(
        (400..500).contains(&unknown.status),
        "unknown ?key=: {} {}",
        unknown.status,
        unknown.text()
    );
    unknown.error(unknown.status, None);
    // Not a message at all.
    server
        .post("/v1/decrypt", ALL, b"this is not an ESDK message")
        .error(400, None);
    // Unknown routes and methods.
    server
        .get("/v1/nothing-here", Some(ALL))
        .error(404, Some("NotFound"));
    server
        .get("/v1/encrypt", Some(ALL))
        .error(405, Some("MethodNotAllowed"));
}

/// The library's keyring for a `raw-aes:NS:NAME:PATH` KEYREF of this file.
fn keyring_of(keyref: &str) -> Arc<dyn sealpipe::keys::Keyring> {
    let mut parts = keyref.splitn(4, ':');
    let (_, ns, name, path) = (
        parts.next(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    common::raw_keyring(ns, name, &std::fs::read(path).unwrap())
}

#[test]
fn kms_round_trips_with_curl_and_json_variants_with_requests() {
    let moto = Moto::start();
    let arn = create_kms_key(&moto);
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_key(dir.path(), "raw");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    // The KMS key is the default (first); the raw key is picked with ?key=.
    let server = Server::start(
        Opts::new(&["--key", &arn, "--key", &raw, "--token-file", &tokens]).aws(&moto),
    );
    for (i, &size) in SIZES.iter().enumerate() {
        let plaintext = common::pseudo_random(size, 100 + i as u64);
        let sealed = server.round_trip(ALL, None, &plaintext);
        // Its one encrypted data key is KMS's, under this ARN.
        let (header, _) =
            sealpipe::stream::read_header(&mut &sealed[..], &Default::default()).unwrap();
        let edks = &header.body.encrypted_data_keys;
        assert_eq!(edks.len(), 1);
        assert_eq!(edks[0].provider_id, "aws-kms");
        assert_eq!(edks[0].provider_info, arn.as_bytes());
        server.round_trip(ALL, Some(&arn), &plaintext);
    }

    // JSON variants, with Python requests: encrypt under each key, decrypt, and cross
    // over between the JSON and binary styles.
    let plaintext = common::pseudo_random(5000, 9);
    let p64 = B64.encode(&plaintext);
    let answers = requests(
        &server,
        vec![
            req_json(
                "/v1/encrypt",
                ALL,
                json!({"plaintext": p64, "context": {"app": "json", "ünï": "çødé"}}),
            ),
            req_json(
                "/v1/encrypt",
                ALL,
                json!({"plaintext": p64, "context": {"app": "json"}, "key": raw}),
            ),
            req_json("/v1/encrypt", ALL, json!({"plaintext": ""})),
        ],
    );
    let mut messages = Vec::new();
    for a in &answers {
        a.expect(200);
        assert!(
            a.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{:?}",
            a.headers
        );
        let doc = a.json();
        let message = b64_field(&doc, "ciphertext");
        assert_esdk_v2_0478(&message);
        messages.push(message);
    }
    let (header, _) =
        sealpipe::stream::read_header(&mut &messages[1][..], &Default::default()).unwrap();
    assert_eq!(
        header.body.encrypted_data_keys[0].provider_id, NAMESPACE,
        "\"key\" picked the raw key"
    );
    let answers = requests(
        &server,
        vec![
            req_json(
                "/v1/decrypt",
                ALL,
                json!({"ciphertext": B64.encode(&messages[0]), "context": {"app": "json"}}),
            ),
            req_json(
                "/v1/decrypt",
                ALL,
                json!({"ciphertext": B64.encode(&messages[1])}),
            ),
            req_json(
                "/v1/decrypt",
                ALL,
                json!({"ciphertext": B64.encode(&messages[2])}),
            ),
            req_json(
                "/v1/decrypt",
                ALL,
                json!({"ciphertext": B64.encode(&messages[0]), "context": {"app": "other"}}),
            ),
            req_json("/v1/decrypt", ALL, json!({"ciphertext": "%%% not base64"})),
            req_json("/v1/encrypt", ALL, json!({"no plaintext": true})),
        ],
    );
    for a in &answers[..2] {
        let doc = a.expect(200).json();
        assert_eq!(b64_field(&doc, "plaintext"), plaintext);
        assert_eq!(doc["context"]["app"], "json", "{doc}");
    }
    assert_eq!(answers[0].json()["context"]["ünï"], "çødé");
    let empty = answers[2].expect(200).json();
    assert_eq!(b64_field(&empty, "plaintext"), b"");
    answers[3].error(400, Some("ContextMismatch"));
    assert!(!answers[3].json().to_string().contains(&p64[..40]));
    answers[4].error(400, None);
    answers[5].error(400, None);
    // A JSON-made message opens through the binary route and the other way round.
    let opened = server.post("/v1/decrypt", ALL, &messages[0]);
    assert_eq!(opened.expect(200).body, plaintext);
    let sealed = server.post("/v1/encrypt?context=app%3Dbin", ALL, &plaintext);
    let answers = requests(
        &server,
        vec![req_json(
            "/v1/decrypt",
            ALL,
            json!({"ciphertext": B64.encode(&sealed.expect(200).body)}),
        )],
    );
    let doc = answers[0].expect(200).json();
    assert_eq!(b64_field(&doc, "plaintext"), plaintext);
    assert_eq!(doc["context"]["app"], "bin");
}

// ---------------------------------------------------------------------------------
// Interop: aws-encryption-cli, the AWS CLI, boto3
// ---------------------------------------------------------------------------------

#[test]
fn aws_encryption_cli_decrypts_server_messages_and_the_server_decrypts_its() {
    let moto = Moto::start();
    let arn = create_kms_key(&moto);
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(Opts::new(&["--key", &arn, "--token-file", &tokens]).aws(&moto));
    let cli = common::venv_tool("aws-encryption-cli");
    let wrapping = format!("key={arn}");
    let run_cli = |args: &[&str]| {
        let o = common::aws_command(&cli, dir.path(), &moto.endpoint())
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
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let plaintext = common::pseudo_random(300_000, 77);
    std::fs::write(dir.path().join("plain"), &plaintext).unwrap();

    // Ours, there: strict (this key, this context) and discovery.
    for size in [0, 1, 300_000] {
        let sealed = server.post(
            &format!("/v1/encrypt?context={}", enc("team=data")),
            ALL,
            &plaintext[..size],
        );
        sealed.expect(200);
        let msg = format!("server-{size}");
        std::fs::write(dir.path().join(&msg), &sealed.body).unwrap();
        run_cli(&[
            "--decrypt",
            "-i",
            &msg,
            "-o",
            &format!("{msg}.strict"),
            "--wrapping-keys",
            &wrapping,
            "--encryption-context",
            "team=data",
        ]);
        run_cli(&[
            "--decrypt",
            "-i",
            &msg,
            "-o",
            &format!("{msg}.disc"),
            "--wrapping-keys",
            "discovery=true",
        ]);
        for out in [format!("{msg}.strict"), format!("{msg}.disc")] {
            assert!(
                std::fs::read(dir.path().join(&out)).unwrap() == plaintext[..size],
                "{out}: aws-encryption-cli's plaintext differs"
            );
        }
    }

    // Theirs (the default signed suite 0x0578, and 0x0478), here, byte for byte.
    for (file, algorithm) in [
        ("cli-0578", None),
        ("cli-0478", Some("AES_256_GCM_HKDF_SHA512_COMMIT_KEY")),
    ] {
        let mut args = vec![
            "--encrypt",
            "-i",
            "plain",
            "-o",
            file,
            "--wrapping-keys",
            &wrapping,
            // One flag, several pairs: the CLI refuses the flag twice.
            "--encryption-context",
            "team=data",
            "origin=cli",
        ];
        if let Some(a) = algorithm {
            args.extend(["--algorithm", a]);
        }
        run_cli(&args);
        let message = std::fs::read(dir.path().join(file)).unwrap();
        let opened = server.post(
            &format!("/v1/decrypt?context={}", enc("team=data")),
            ALL,
            &message,
        );
        opened.expect(200);
        assert!(opened.body == plaintext, "{file}: plaintext differs");
        let ctx: BTreeMap<String, String> =
            serde_json::from_str(opened.header("x-encryption-context").unwrap()).unwrap();
        assert_eq!(ctx.get("team").map(String::as_str), Some("data"), "{file}");
        assert_eq!(ctx.get("origin").map(String::as_str), Some("cli"), "{file}");
    }
}

#[test]
fn kms_routes_match_the_aws_cli_and_boto3() {
    let moto = Moto::start();
    let arn = create_kms_key(&moto);
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_key(dir.path(), "raw");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(
        Opts::new(&["--key", &arn, "--key", &raw, "--token-file", &tokens]).aws(&moto),
    );
    let aws = common::venv_tool("aws");
    let run_aws = |args: &[&str]| -> String {
        let o = common::aws_command(&aws, dir.path(), &moto.endpoint())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "aws {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let plaintext = common::pseudo_random(4096, 31);

    // Ours, decrypted by `aws kms decrypt`.
    let r = server.post(
        &format!("/v1/kms/encrypt?context={}", enc("purpose=cli")),
        ALL,
        &plaintext,
    );
    r.expect(200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    let text = String::from_utf8(r.body.clone()).unwrap();
    let blob = B64
        .decode(text.trim_end())
        .unwrap_or_else(|e| panic!("/v1/kms/encrypt is not base64 ({e}): {text:?}"));
    std::fs::write(dir.path().join("blob"), &blob).unwrap();
    let printed = run_aws(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        "fileb://blob",
        "--key-id",
        &arn,
        "--encryption-context",
        "purpose=cli",
        "--query",
        "Plaintext",
        "--output",
        "text",
    ]);
    assert_eq!(B64.decode(printed.trim()).unwrap(), plaintext);

    // Theirs (`aws kms encrypt`, printed as it prints it, newline and all), here.
    std::fs::write(dir.path().join("plain"), &plaintext[..1000]).unwrap();
    let printed = run_aws(&[
        "kms",
        "encrypt",
        "--key-id",
        &arn,
        "--plaintext",
        "fileb://plain",
        "--encryption-context",
        "purpose=cli",
        "--query",
        "CiphertextBlob",
        "--output",
        "text",
    ]);
    let opened = server.post(
        &format!("/v1/kms/decrypt?context={}", enc("purpose=cli")),
        ALL,
        printed.as_bytes(),
    );
    opened.expect(200);
    assert_eq!(opened.body, &plaintext[..1000]);
    // Without the context KMS refuses it: an error, no plaintext.
    let refused = server.post("/v1/kms/decrypt", ALL, printed.as_bytes());
    assert!(
        (400..600).contains(&refused.status),
        "{} {}",
        refused.status,
        refused.text()
    );
    refused.error(refused.status, None);

    // boto3 as the second peer, through the JSON variants.
    let boto_blob = boto(
        &moto,
        "boto3 kms.encrypt",
        r#"
blob = client("kms").encrypt(KeyId=sys.argv[2], Plaintext=b"from boto3",
                             EncryptionContext={"purpose": "boto"})["CiphertextBlob"]
print(base64.b64encode(blob).decode())
"#,
        &[&arn],
    );
    let answers = requests(
        &server,
        vec![
            req_json(
                "/v1/kms/decrypt",
                ALL,
                json!({"CiphertextBlob": boto_blob.trim(), "EncryptionContext": {"purpose": "boto"}}),
            ),
            req_json(
                "/v1/kms/encrypt",
                ALL,
                json!({"Plaintext": B64.encode(b"to boto3"), "KeyId": arn,
                       "EncryptionContext": {"purpose": "boto"}}),
            ),
            req_json(
                "/v1/kms/encrypt",
                ALL,
                json!({"Plaintext": B64.encode(vec![7u8; 4097])}),
            ),
        ],
    );
    let doc = answers[0].expect(200).json();
    assert_eq!(b64_field(&doc, "Plaintext"), b"from boto3");
    assert_eq!(doc["KeyId"], arn.as_str(), "{doc}");
    assert_eq!(doc["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT", "{doc}");
    let doc = answers[1].expect(200).json();
    assert_eq!(doc["KeyId"], arn.as_str(), "{doc}");
    assert_eq!(doc["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT", "{doc}");
    let printed = boto(
        &moto,
        "boto3 kms.decrypt",
        r#"
r = client("kms").decrypt(CiphertextBlob=base64.b64decode(sys.argv[2]),
                          EncryptionContext={"purpose": "boto"})
print(json.dumps({"Plaintext": base64.b64encode(r["Plaintext"]).decode(), "KeyId": r["KeyId"]}))
"#,
        &[doc["CiphertextBlob"].as_str().unwrap()],
    );
    let back: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(b64_field(&back, "Plaintext"), b"to boto3");
    assert_eq!(back["KeyId"], arn.as_str());
    answers[2].error(413, Some("PayloadTooLarge"));

    // KMS's own limit: 4096 bytes pass (above), 4097 are refused before any KMS call.
    server
        .post("/v1/kms/encrypt", ALL, &vec![1u8; 4097])
        .error(413, Some("PayloadTooLarge"));
    // /v1/kms/* needs a KMS key: the raw one is refused.
    let not_kms = server.post(&format!("/v1/kms/encrypt?key={}", enc(&raw)), ALL, b"x");
    assert!(
        (400..500).contains(&not_kms.status),
        "{} {}",
        not_kms.status,
        not_kms.text()
    );
    not_kms.error(not_kms.status, None);
    // Not base64.
    server
        .post("/v1/kms/decrypt", ALL, b"*** not base64 ***")
        .error(400, None);
}

// ---------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------

#[test]
fn tokens_limit_operations_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = raw_key(dir.path(), "a");
    let b = raw_key(dir.path(), "b");
    let hashed = "tok-hashed-0123456789abcdef";
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(hashed.as_bytes()))
    };
    let tokens = token_file(
        dir.path(),
        "tokens",
        &[
            format!("{ALL} *"),
            "# a comment line".to_string(),
            String::new(),
            "tok-decrypt-only-0123456789 decrypt".to_string(),
            format!("tok-key-a-only-0123456789 encrypt,decrypt keys={a}"),
            format!("sha256:{digest} encrypt,metrics"),
            "tok-no-metrics-0123456789 encrypt,decrypt,kms-encrypt,kms-decrypt".to_string(),
        ],
    );
    let server = Server::start(Opts::new(&[
        "--key",
        &a,
        "--key",
        &b,
        "--token-file",
        &tokens,
    ]));
    let qb = format!("?key={}", enc(&b));

    // /healthz needs no token.
    let health = server.get("/healthz", None);
    assert_eq!(health.expect(200).json(), json!({"status": "ok"}));

    // Missing, malformed and unknown tokens: 401 with WWW-Authenticate: Bearer.
    let cases: Vec<(&str, Reply)> = vec![
        (
            "no header",
            server.curl("POST", "/v1/encrypt", None, Some(X), &[]),
        ),
        (
            "Basic",
            server.curl(
                "POST",
                "/v1/encrypt",
                None,
                Some(X),
                &["Authorization: Basic dXNlcjpwYXNz"],
            ),
        ),
        (
            "empty bearer",
            server.curl(
                "POST",
                "/v1/encrypt",
                None,
                Some(X),
                &["Authorization: Bearer "],
            ),
        ),
        (
            "unknown",
            server.post("/v1/encrypt", "tok-unknown-0123456789abcdef", b"x"),
        ),
        ("the hash itself", server.post("/v1/encrypt", &digest, b"x")),
        (
            "the hash line",
            server.post("/v1/encrypt", &format!("sha256:{digest}"), b"x"),
        ),
        ("metrics, no token", server.get("/metrics", None)),
        (
            "decrypt, no token",
            server.curl("POST", "/v1/decrypt", None, Some(X), &[]),
        ),
        (
            "kms, no token",
            server.curl("POST", "/v1/kms/encrypt", None, Some(X), &[]),
        ),
    ];
    for (what, r) in &cases {
        r.error(401, Some("Unauthorized"));
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
    }

    // An operation the token lacks: 403.
    let sealed = server.post("/v1/encrypt", ALL, b"for the decrypt-only token");
    sealed.expect(200);
    server
        .post("/v1/encrypt", "tok-decrypt-only-0123456789", b"x")
        .error(403, Some("Forbidden"));
    server
        .post("/v1/kms/encrypt", "tok-decrypt-only-0123456789", b"x")
        .error(403, Some("Forbidden"));
    server
        .get("/metrics", Some("tok-decrypt-only-0123456789"))
        .error(403, Some("Forbidden"));
    server
        .get("/metrics", Some("tok-no-metrics-0123456789"))
        .error(403, Some("Forbidden"));
    let opened = server.post("/v1/decrypt", "tok-decrypt-only-0123456789", &sealed.body);
    assert_eq!(opened.expect(200).body, b"for the decrypt-only token");

    // A key the token lacks: 403; its own key (also as the default) works.
    let only_a = "tok-key-a-only-0123456789";
    server
        .post(&format!("/v1/encrypt{qb}"), only_a, b"x")
        .error(403, Some("Forbidden"));
    server.round_trip(only_a, None, b"key a by default");
    server.round_trip(only_a, Some(&a), b"key a by name");
    // ... including a decrypt of a message that only key B can open.
    let under_b = server.post(&format!("/v1/encrypt{qb}"), ALL, b"under b");
    under_b.expect(200);
    let refused = server.post("/v1/decrypt", only_a, &under_b.body);
    assert!(
        refused.status == 403 || refused.status == 400,
        "a decrypt needing a key the token may not use: {} {}",
        refused.status,
        refused.text()
    );
    refused.error(refused.status, None);
    assert!(!refused.body.windows(7).any(|w| w == b"under b"));
    // The same JSON "key" selection is checked too.
    let answers = requests(
        &server,
        vec![req_json(
            "/v1/encrypt",
            only_a,
            json!({"plaintext": B64.encode(b"x"), "key": b}),
        )],
    );
    answers[0].error(403, Some("Forbidden"));

    // A sha256: line: its token works for its operations, and only those.
    let sealed = server.post("/v1/encrypt", hashed, b"hashed token");
    sealed.expect(200);
    server
        .post("/v1/decrypt", hashed, &sealed.body)
        .error(403, Some("Forbidden"));
    let m = server.metrics(hashed);
    assert!(m.has("sealpipe_serve_requests_total"), "{}", m.dump());
    let unauthorized = m.sum("sealpipe_serve_requests_total", &[("status", &["401"])]);
    assert!(unauthorized >= cases.len() as f64 - 1.0, "{}", m.dump());
    assert!(m.sum("sealpipe_serve_errors_total", &[("code", &["Forbidden"])]) >= 5.0);
}

#[test]
fn tokens_from_the_environment_and_bad_configurations() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let env_tokens = format!("# from the environment\n{ALL}\n\n{OTHER} decrypt\n");
    let server =
        Server::start(Opts::new(&["--key", &key]).env("SEALPIPE_SERVE_TOKENS", &env_tokens));
    let sealed = server.round_trip(ALL, None, b"env token");
    let opened = server.post("/v1/decrypt", OTHER, &sealed);
    assert_eq!(opened.expect(200).body, b"env token");
    server
        .post("/v1/encrypt", OTHER, b"x")
        .error(403, Some("Forbidden"));
    drop(server);

    // No token source at all, or plain HTTP on a non-loopback address: exit 2.
    let refuse = |args: &[&str], what: &str| {
        let mut child = sealpipe(dir.path(), None)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = common::wait_or_kill(&mut child, Duration::from_secs(30));
        let err = common::read_stderr(&mut child);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{what}: want exit 2; stderr:\n{err}"
        );
        assert!(!err.trim().is_empty(), "{what}: says why");
    };
    refuse(
        &["--listen", "127.0.0.1:0", "--key", &key],
        "no token source",
    );
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    refuse(
        &[
            "--listen",
            "0.0.0.0:0",
            "--key",
            &key,
            "--token-file",
            &tokens,
        ],
        "plain HTTP on 0.0.0.0 without --insecure-listen",
    );
    // A spill directory that cannot take a file is found out at start, not by the
    // first large decrypt (which answered 500).
    let not_a_dir = dir.path().join("tokens").display().to_string();
    for spill in ["/nonexistent/spill", not_a_dir.as_str()] {
        refuse(
            &[
                "--listen",
                "127.0.0.1:0",
                "--key",
                &key,
                "--token-file",
                &tokens,
                "--spill-dir",
                spill,
            ],
            "an unusable --spill-dir",
        );
    }
}

#[test]
fn token_file_reloads_on_its_timer_and_on_sighup_and_a_bad_reload_keeps_the_old_set() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let works = |server: &Server, token: &str| server.post("/v1/encrypt", token, b"x").status;

    // Timer: --token-reload 1s.
    let path = token_file(dir.path(), "timed", &[format!("{ALL} encrypt")]);
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &path,
        "--token-reload",
        "1s",
    ]));
    assert_eq!(works(&server, ALL), 200);
    assert_eq!(works(&server, OTHER), 401);
    token_file(dir.path(), "timed", &[format!("{OTHER} encrypt")]);
    assert!(
        eventually(Duration::from_secs(10), || works(&server, OTHER) == 200),
        "the new token is not accepted 10 s after the file changed (reload every 1s)"
    );
    server
        .post("/v1/encrypt", ALL, b"x")
        .error(401, Some("Unauthorized"));
    drop(server);

    // SIGHUP, with a timer that never fires in the test.
    let path = token_file(dir.path(), "hup", &[format!("{ALL} *")]);
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &path,
        "--token-reload",
        "3600s",
    ]));
    assert_eq!(works(&server, ALL), 200);
    token_file(dir.path(), "hup", &[format!("{OTHER} *")]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(works(&server, ALL), 200, "no reload before the signal");
    let hup = |server: &Server| {
        let st = Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    hup(&server);
    assert!(
        eventually(Duration::from_secs(10), || works(&server, OTHER) == 200),
        "the new token is not accepted 10 s after SIGHUP"
    );
    server
        .post("/v1/encrypt", ALL, b"x")
        .error(401, Some("Unauthorized"));
    let before = server.metrics(OTHER);
    assert!(
        before.sum("sealpipe_serve_token_reloads_total", &[("result", &["ok"])]) >= 1.0,
        "{}",
        before.dump()
    );

    // A file that does not parse (a token too short; a bad operation): the reload
    // fails, is counted, and the tokens stay as they were.
    token_file(
        dir.path(),
        "hup",
        &["short".to_string(), format!("{ALL} fly")],
    );
    hup(&server);
    assert!(
        eventually(Duration::from_secs(10), || {
            server.metrics(OTHER).sum(
                "sealpipe_serve_token_reloads_total",
                &[("result", &["failed"])],
            ) >= 1.0
        }),
        "no failed reload counted"
    );
    assert_eq!(
        works(&server, OTHER),
        200,
        "a failed reload keeps the old tokens"
    );
    assert_eq!(works(&server, ALL), 401);
    // A file that went missing: the same.
    std::fs::remove_file(&path).unwrap();
    hup(&server);
    assert!(eventually(Duration::from_secs(10), || {
        server.metrics(OTHER).sum(
            "sealpipe_serve_token_reloads_total",
            &[("result", &["failed"])],
        ) >= 2.0
    }));
    assert_eq!(works(&server, OTHER), 200);
    assert!(server.child_alive(), "the server survives failed reloads");
}

impl Server {
    fn child_alive(&self) -> bool {
        // kill -0: the process still exists (and was not reaped).
        Command::new("kill")
            .args(["-0", &self.pid().to_string()])
            .status()
            .unwrap()
            .success()
    }
}

#[test]
fn tokens_from_secrets_manager_and_ssm_reload_when_the_secret_changes() {
    let moto = Moto::start();
    let secret_token = "tok-from-secret-0123456789";
    let param_token = "tok-from-parameter-0123456789";
    let rotated = "tok-rotated-secret-0123456789";
    boto(
        &moto,
        "create the token secret and parameter",
        r#"
client("secretsmanager").create_secret(Name="sealpipe/serve-tokens",
                                       SecretString=sys.argv[2])
client("ssm").put_parameter(Name="/sealpipe/serve-tokens", Value=sys.argv[3],
                            Type="SecureString")
"#,
        &[
            &format!("# secret\n{secret_token} *\n"),
            &format!("{param_token} encrypt\n"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let server = Server::start(
        Opts::new(&[
            "--key",
            &key,
            "--token-secret",
            "sealpipe/serve-tokens",
            "--token-parameter",
            "/sealpipe/serve-tokens",
            "--token-reload",
            "1s",
        ])
        .aws(&moto),
    );
    let sealed = server.round_trip(secret_token, None, b"secret token");
    server.post("/v1/encrypt", param_token, b"x").expect(200);
    server
        .post("/v1/decrypt", param_token, &sealed)
        .error(403, Some("Forbidden"));
    server
        .post("/v1/encrypt", rotated, b"x")
        .error(401, Some("Unauthorized"));

    // Rotate the secret: within a few reloads the new token works and the old is gone;
    // the parameter's token is untouched.
    boto(
        &moto,
        "rotate the token secret",
        r#"
client("secretsmanager").put_secret_value(SecretId="sealpipe/serve-tokens",
                                          SecretString=sys.argv[2])
"#,
        &[&format!("{rotated} *\n")],
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            server.post("/v1/encrypt", rotated, b"x").status == 200
        }),
        "the rotated secret's token is not accepted after 10 s (reload every 1s)"
    );
    server
        .post("/v1/encrypt", secret_token, b"x")
        .error(401, Some("Unauthorized"));
    server.post("/v1/encrypt", param_token, b"x").expect(200);
    let m = server.metrics(rotated);
    assert!(
        m.sum("sealpipe_serve_token_reloads_total", &[("result", &["ok"])]) >= 1.0,
        "{}",
        m.dump()
    );
}

// ---------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------

#[test]
fn body_size_and_per_token_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string(), OTHER.to_string()]);

    // --max-body 1KiB: 1 KiB passes, one byte more is 413 (binary and JSON bodies,
    // encrypt and decrypt).
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--max-body",
        "1KiB",
    ]));
    let small = server.round_trip(ALL, None, &[5u8; 100]);
    assert!(small.len() <= 1024, "a {}-byte message", small.len());
    let full = server.post("/v1/encrypt", ALL, &[5u8; 1024]);
    full.expect(200);
    // Its message is over 1 KiB: the limit is on the request body, decrypts too.
    assert!(full.body.len() > 1024);
    server
        .post("/v1/decrypt", ALL, &full.body)
        .error(413, Some("PayloadTooLarge"));
    server
        .post("/v1/encrypt", ALL, &vec![5u8; 1025])
        .error(413, Some("PayloadTooLarge"));
    server
        .post("/v1/encrypt", ALL, &vec![5u8; 64 * 1024])
        .error(413, Some("PayloadTooLarge"));
    server
        .post("/v1/decrypt", ALL, &vec![5u8; 2048])
        .error(413, Some("PayloadTooLarge"));
    server
        .post_json(
            "/v1/encrypt",
            ALL,
            &json!({"plaintext": B64.encode(vec![5u8; 4096])}),
        )
        .error(413, Some("PayloadTooLarge"));
    // Chunked (no Content-Length): the limit holds while the body streams. A decrypt
    // holds its answer until the end, so it is a plain 413.
    let keyring = keyring_of(&key);
    let materials = common::materials(
        keyring.as_ref(),
        sealpipe::format::AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        Default::default(),
    );
    let five_kib = common::encrypt(&materials, 4096, &[6u8; 5000]);
    let chunked = [
        "Content-Type: application/octet-stream",
        "Transfer-Encoding: chunked",
    ];
    server
        .curl("POST", "/v1/decrypt", Some(ALL), Some(&five_kib), &chunked)
        .error(413, Some("PayloadTooLarge"));
    // A streamed encrypt may have sent its 200 head before the limit is reached; then
    // the server can only cut the answer short, which the client sees as a broken
    // transfer. What it must never be is a complete 200.
    for size in [4096, 200 * 1024] {
        match server.try_curl(
            "POST",
            "/v1/encrypt",
            Some(ALL),
            Some(&vec![5u8; size]),
            &chunked,
            30,
        ) {
            Ok(r) if r.status == 413 => {
                r.error(413, Some("PayloadTooLarge"));
            }
            Ok(r) => panic!(
                "a chunked {size}-byte encrypt over --max-body 1KiB: a complete {} answer",
                r.status
            ),
            Err(broken) => eprintln!("chunked {size} bytes over --max-body: {broken}"),
        }
    }
    server
        .post("/v1/encrypt", ALL, b"still serving")
        .expect(200);
    drop(server);

    // --token-rate 2: a burst of one token gets 429s with Retry-After; another token
    // is not held back by it.
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--token-rate",
        "2",
    ]));
    let mut burst: Vec<Value> = (0..12)
        .map(|_| {
            let mut r = req("POST", "/v1/encrypt", Some(ALL));
            r["data_b64"] = json!(B64.encode(b"burst"));
            r["headers"] = json!({"Content-Type": "application/octet-stream"});
            r
        })
        .collect();
    let mut other = req("POST", "/v1/encrypt", Some(OTHER));
    other["data_b64"] = json!(B64.encode(b"other"));
    burst.push(other);
    let answers = requests(&server, burst);
    let ok = answers[..12].iter().filter(|a| a.status == 200).count();
    let limited: Vec<&Reply> = answers[..12].iter().filter(|a| a.status == 429).collect();
    assert!(ok >= 1, "the first request of a burst passes");
    assert!(
        limited.len() >= 5,
        "12 requests at once at 2/s: only {} got 429: {:?}",
        limited.len(),
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(ok + limited.len(), 12);
    for r in &limited {
        r.error(429, Some("TooManyRequests"));
        let wait: u64 = r
            .header("retry-after")
            .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers))
            .parse()
            .expect("Retry-After in whole seconds");
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    answers[12].expect(200);
    // After the wait, the token is served again.
    std::thread::sleep(Duration::from_millis(1100));
    server.post("/v1/encrypt", ALL, b"later").expect(200);
}

#[test]
fn a_slow_request_in_flight_fills_max_concurrent_1() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--max-concurrent",
        "1",
    ]));
    server.post("/v1/encrypt", ALL, b"warm").expect(200);

    // A request whose body is still arriving.
    let mut slow = server.connect(Duration::from_secs(30));
    write!(
        slow,
        "POST /v1/encrypt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALL}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 100\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    slow.write_all(&[b's'; 10]).unwrap();
    slow.flush().unwrap();

    let mut refused = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            // A server that queues the request instead of refusing it would hold it
            // until the slow one ends, which it does not here: a bounded curl.
            let r = server
                .try_curl(
                    "POST",
                    "/v1/encrypt",
                    Some(ALL),
                    Some(b"second".as_slice()),
                    &["Content-Type: application/octet-stream"],
                    10,
                )
                .unwrap_or_else(|e| panic!("the second request was held, not refused: {e}"));
            if r.status == 503 {
                refused = Some(r);
                true
            } else {
                false
            }
        }),
        "no 503 while a request holds the only slot"
    );
    // The spec's code is checked last, so that the rest is shown either way.
    let code = refused.unwrap().error(503, None);

    // The slow one finishes normally; then the slot is free again.
    slow.write_all(&[b's'; 90]).unwrap();
    let Raw::Closed(raw) = read_until_closed(&mut slow) else {
        panic!("the slow request got no complete answer")
    };
    let r = parse_raw_response("the slow request", &raw);
    r.expect(200);
    assert_esdk_v2_0478(&r.body);
    let opened = server.post("/v1/decrypt", ALL, &r.body);
    assert_eq!(opened.expect(200).body, vec![b's'; 100]);
    assert_eq!(
        code, "ServiceUnavailable",
        "the spec's code for the concurrency cap's 503"
    );
}

#[test]
fn slow_headers_and_slow_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
    ]));

    // Slow loris: half the headers, then nothing. The server closes the connection
    // (the 15 s read bound is only there so a broken server fails instead of hanging).
    let mut loris = server.connect(Duration::from_secs(15));
    loris
        .write_all(b"POST /v1/encrypt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthoriz")
        .unwrap();
    match read_until_closed(&mut loris) {
        Raw::Closed(got) => {
            // Maybe a 408 first; never a success.
            if !got.is_empty() {
                let r = parse_raw_response("slow loris", &got);
                assert!(r.status >= 400, "slow loris answered {}", r.status);
            }
        }
        Raw::Open(got) => panic!(
            "a connection with half its headers is still open after 15 s (got {:?})",
            String::from_utf8_lossy(&got)
        ),
    }

    // Slow body: all headers, 10 of 1000 bytes, then silence: 408 or closed.
    let mut stall = server.connect(Duration::from_secs(15));
    write!(
        stall,
        "POST /v1/encrypt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALL}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
    )
    .unwrap();
    stall.write_all(&[b'x'; 10]).unwrap();
    match read_until_closed(&mut stall) {
        Raw::Closed(got) if got.is_empty() => {}
        Raw::Closed(got) => {
            let r = parse_raw_response("slow body", &got);
            r.error(408, Some("RequestTimeout"));
        }
        Raw::Open(got) if !got.is_empty() => {
            // An answer on a connection kept alive: it must be the 408.
            let r = parse_raw_response("slow body", &got);
            r.error(408, Some("RequestTimeout"));
        }
        Raw::Open(_) => panic!("a stalled body got neither 408 nor a close within 15 s"),
    }

    // Prompt clients are served meanwhile and after.
    server.round_trip(ALL, None, b"prompt");
    let health = server.get("/healthz", None);
    health.expect(200);
}

// ---------------------------------------------------------------------------------
// Never partial plaintext
// ---------------------------------------------------------------------------------

#[test]
fn tampered_and_truncated_messages_release_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    // Plaintext past --max-in-memory spills to a temp file: the spilled path must hold
    // it back just the same.
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--max-in-memory",
        "1MiB",
    ]));
    // 3 MiB and a bit, so that the last frame holds plaintext.
    let plaintext = secret_text(3 * MIB + 777);
    let message = server.round_trip(ALL, None, &plaintext);
    let (header, _) =
        sealpipe::stream::read_header(&mut &message[..], &Default::default()).unwrap();
    let frame = header.body.frame_length as usize;
    assert!(frame > 0, "framed");
    let last_len = plaintext.len() % frame;
    assert!(last_len > 0);
    // The final frame is: 0xFFFFFFFF, sequence number, IV (12), content length (4),
    // content, tag (16) — and no footer for 0x0478. Check the layout before relying
    // on it.
    let content_at = message.len() - 16 - last_len;
    assert_eq!(
        message[content_at - 4..content_at],
        (last_len as u32).to_be_bytes(),
        "final frame content length"
    );
    assert_eq!(
        message[content_at - 24..content_at - 20],
        [0xff; 4],
        "final frame marker"
    );

    let no_plaintext = |what: &str, r: &Reply| {
        assert!(
            !r.body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{what}: the error answer carries plaintext"
        );
        assert!(r.body.len() < 4096, "{what}: a {}-byte error", r.body.len());
    };
    let mut cases: Vec<(&str, Vec<u8>, Option<&str>)> = Vec::new();
    let mut last = message.clone();
    last[content_at + last_len / 2] ^= 0x01;
    cases.push((
        "a flipped byte in the last frame",
        last,
        Some("AuthenticationFailed"),
    ));
    let mut tag = message.clone();
    *tag.last_mut().unwrap() ^= 0x80;
    cases.push((
        "a flipped bit in the last tag",
        tag,
        Some("AuthenticationFailed"),
    ));
    let mut first = message.clone();
    first[header_len(&message) + 100] ^= 0x01;
    cases.push(("a flipped byte in the first frame", first, None));
    cases.push((
        "the last 100 bytes cut off",
        message[..message.len() - 100].to_vec(),
        None,
    ));
    cases.push((
        "cut after the first 2 MiB",
        message[..2 * MIB].to_vec(),
        None,
    ));
    let mut extra = message.clone();
    extra.extend_from_slice(b"trailing garbage");
    cases.push(("bytes after the end", extra, None));
    for (what, body, code) in &cases {
        let r = server.post("/v1/decrypt", ALL, body);
        let got = r.error(400, *code);
        no_plaintext(what, &r);
        eprintln!("{what}: 400 {got}");
    }
    // The JSON variant: an error document, no "plaintext".
    let answers = requests(
        &server,
        vec![req_json(
            "/v1/decrypt",
            ALL,
            json!({"ciphertext": B64.encode(&cases[0].1)}),
        )],
    );
    answers[0].error(400, Some("AuthenticationFailed"));
    no_plaintext("JSON, tampered", &answers[0]);
    drop(server);

    // --no-spill: a plaintext over --max-in-memory is refused (413), never streamed.
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--max-in-memory",
        "1MiB",
        "--no-spill",
    ]));
    let r = server.post("/v1/decrypt", ALL, &message);
    r.error(413, Some("PayloadTooLarge"));
    no_plaintext("--no-spill", &r);
    server.round_trip(ALL, None, &secret_text(512 * 1024));
}

/// Where the first frame of a (non-empty, framed) message starts: the header's length.
fn header_len(message: &[u8]) -> usize {
    let mut input = message;
    let (_, read_past) = sealpipe::stream::read_header(&mut input, &Default::default()).unwrap();
    message.len() - input.len() - read_past.len()
}

// ---------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------

/// N requests of SIZE random bytes to /v1/encrypt from THREADS threads (a requests
/// Session each); every 100th message is decrypted again and compared.
const LOAD: &str = r#"
import collections, concurrent.futures, json, os, sys, threading
import requests
base, token, n, threads, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
local = threading.local()
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream"}
def session():
    if not hasattr(local, "s"):
        local.s = requests.Session()
    return local.s
def one(i):
    body = os.urandom(size)
    r = session().post(base + "/v1/encrypt", data=body, headers=headers, timeout=60)
    bad = r.status_code == 200 and r.content[:3] != b"\x02\x04\x78"
    back = None
    if r.status_code == 200 and i % 100 == 0:
        d = session().post(base + "/v1/decrypt", data=r.content, headers=headers, timeout=60)
        back = d.status_code == 200 and d.content == body
    return r.status_code, bad, back
with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    results = list(pool.map(one, range(n)))
print(json.dumps({
    "statuses": collections.Counter(str(s) for s, _, _ in results),
    "bad_messages": sum(1 for _, b, _ in results if b),
    "decrypted": sum(1 for _, _, k in results if k is not None),
    "decrypt_ok": sum(1 for _, _, k in results if k),
}))
"#;

#[test]
fn two_thousand_requests_take_a_handful_of_kms_calls() {
    let moto = Moto::start();
    let arn = create_kms_key(&moto);
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(Opts::new(&["--key", &arn, "--token-file", &tokens]).aws(&moto));
    let n = 2000;
    let started = Instant::now();
    let printed = python(
        "the load test",
        LOAD,
        &[&server.url(""), ALL, &n.to_string(), "8", "1024"],
        b"",
    );
    let took = started.elapsed();
    let summary: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(summary["statuses"], json!({"200": n}), "{summary}");
    assert_eq!(summary["bad_messages"], 0, "{summary}");
    assert_eq!(summary["decrypted"], n / 100, "{summary}");
    assert_eq!(summary["decrypt_ok"], n / 100, "{summary}");
    eprintln!("{n} encrypts of 1 KiB from 8 threads in {took:?}");

    let m = server.metrics(ALL);
    let gdk = m.sum(
        "sealpipe_kms_requests_total",
        &[("action", &["GenerateDataKey"])],
    );
    assert!(
        (1.0..=5.0).contains(&gdk),
        "{gdk} GenerateDataKey calls for {n} requests:\n{}",
        m.dump()
    );
    let decrypts = m.sum("sealpipe_kms_requests_total", &[("action", &["Decrypt"])]);
    assert!(
        decrypts <= (n / 100) as f64,
        "{decrypts} KMS Decrypt calls for {} decrypts",
        n / 100
    );
    let served = m.sum(
        "sealpipe_serve_requests_total",
        &[("route", ENCRYPT_ROUTE), ("status", &["200"])],
    );
    assert_eq!(served, n as f64, "{}", m.dump());
    let timed = m.sum(
        "sealpipe_serve_request_duration_seconds_count",
        &[("route", ENCRYPT_ROUTE)],
    );
    assert_eq!(timed, n as f64, "{}", m.dump());
    assert!(
        m.sum("sealpipe_serve_request_bytes_total", &[]) >= (n * 1024) as f64,
        "{}",
        m.dump()
    );
    assert!(
        m.sum("sealpipe_serve_response_bytes_total", &[]) > (n * 1024) as f64,
        "{}",
        m.dump()
    );
    assert!(m.has("sealpipe_serve_requests_in_flight"), "{}", m.dump());
    let hits = m.sum("sealpipe_data_key_cache_hits_total", &[]);
    let misses = m.sum("sealpipe_data_key_cache_misses_total", &[]);
    assert!(
        hits + misses >= n as f64 && misses <= 5.0 + (n / 100) as f64,
        "cache hits {hits}, misses {misses}"
    );
}

#[test]
fn tls_serves_https_on_any_address_and_bad_certificates_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let (cert, private) = common::self_signed_certificate(dir.path());
    let (c, k) = (cert.display().to_string(), private.display().to_string());

    // With TLS, a non-loopback address needs no --insecure-listen.
    let mut child = sealpipe(dir.path(), None)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--key",
            &key,
            "--token-file",
            &tokens,
        ])
        .args(["--tls-cert", &c, "--tls-key", &k])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let port: u16 = first
        .strip_prefix("sealpipe serve: listening on https://0.0.0.0:")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("first line {first:?} names no https port")
        });
    let plaintext = secret_text(200_000);
    let input = dir.path().join("plain");
    std::fs::write(&input, &plaintext).unwrap();
    let curl = |path: &str, body: &Path, out: &Path, extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "30", "-o"])
            .arg(out)
            .args(["-w", "%{http_code}", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .args(["-H", &format!("Authorization: Bearer {ALL}")])
            .args(extra)
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .expect("curl (apt-get install curl)")
    };
    let sealed = dir.path().join("sealed");
    let o = curl("/v1/encrypt", &input, &sealed, &["--cacert", &c]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{o:?}");
    let opened = dir.path().join("opened");
    let o = curl("/v1/decrypt", &sealed, &opened, &["--cacert", &c]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{o:?}");
    assert_eq!(std::fs::read(&opened).unwrap(), plaintext);
    // Without the certificate trusted, curl refuses the server: it really is TLS.
    let o = curl("/v1/encrypt", &input, &sealed, &[]);
    assert!(
        !o.status.success(),
        "an untrusted certificate is refused: {o:?}"
    );
    // Plain HTTP to the TLS port gets no answer.
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&o.stdout), "200", "{o:?}");
    let _ = child.kill();
    let _ = child.wait();

    // A certificate that is not PEM, a key that does not match: exit 2 before listening.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    let junk = dir.path().join("junk.pem").display().to_string();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, k2) = common::self_signed_certificate(&other);
    let k2 = k2.display().to_string();
    for (cert, key, what) in [(&junk, &k, "junk certificate"), (&c, &k2, "mismatched key")] {
        let out = sealpipe(dir.path(), None)
            .args(["serve", "--listen", "127.0.0.1:0", "--key", key.as_str()])
            .args([
                "--token-file",
                &tokens,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{what}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TLS"), "{what}: {err}");
    }
}

#[test]
fn a_streamed_request_keeps_its_slot_and_its_deadline_after_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let key = raw_key(dir.path(), "k");
    let tokens = token_file(dir.path(), "tokens", &[ALL.to_string()]);
    let server = Server::start(Opts::new(&[
        "--key",
        &key,
        "--token-file",
        &tokens,
        "--max-concurrent",
        "1",
        "--request-timeout",
        "3s",
        "--body-timeout",
        "30s",
    ]));
    // A chunked encrypt streams: its head (and the message's header) comes back at
    // once, while its body is still arriving.
    let mut slow = server.connect(Duration::from_secs(20));
    write!(
        slow,
        "POST /v1/encrypt HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ALL}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n"
    )
    .unwrap();
    slow.flush().unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = slow.read(&mut buf).expect("the streamed head arrives");
        assert!(
            n > 0,
            "closed before its head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );

    // It still holds the only slot: another request is refused, but /healthz, outside
    // the cap, answers.
    server
        .post("/v1/encrypt", ALL, b"second")
        .error(503, Some("ServiceUnavailable"));
    server.get("/healthz", None).expect(200);

    // Its body stalls; the request's deadline (3 s) ends it, and the response is cut
    // off: no last chunk, so no client can take it for a whole message.
    let started = Instant::now();
    let Raw::Closed(rest) = read_until_closed(&mut slow) else {
        panic!("the stalled streamed request was not ended by its deadline")
    };
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ended by the deadline, not the body timeout"
    );
    let mut all = head;
    all.extend_from_slice(&rest);
    assert!(
        !all.ends_with(b"0\r\n\r\n"),
        "a cut-off response must not end cleanly: {:?}",
        String::from_utf8_lossy(&all[all.len().saturating_sub(40)..])
    );
    // Then the slot is free again.
    assert!(eventually(Duration::from_secs(5), || {
        server.post("/v1/encrypt", ALL, b"third").status == 200
    }));
}

#[test]
fn the_scheme_is_case_insensitive_and_refusals_do_not_show_server_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (raw_key(dir.path(), "a"), raw_key(dir.path(), "b"));
    let tokens = token_file(
        dir.path(),
        "tokens",
        &[ALL.to_string(), format!("{OTHER} * keys={a}")],
    );
    let server = Server::start(Opts::new(&[
        "--key",
        &a,
        "--key",
        &b,
        "--token-file",
        &tokens,
    ]));
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let header = format!("Authorization: {scheme} {ALL}");
        server
            .curl(
                "POST",
                "/v1/encrypt",
                None,
                Some(b"x".as_slice()),
                &[&header],
            )
            .expect(200);
    }
    // The key file's path is the server's business: the 403 names the key without it.
    let path = format!("/v1/encrypt?key={}", enc(&b));
    let reply = server.post(&path, OTHER, b"x");
    reply.error(403, Some("Forbidden"));
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&format!("raw-aes:{NAMESPACE}:b")),
        "{message}"
    );
    assert!(
        !message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn a_kms_key_named_by_its_alias_decrypts_and_kms_refusals_of_a_blob_are_the_clients() {
    let moto = Moto::start();
    let arn = create_kms_key(&moto);
    boto(
        &moto,
        "name the key with an alias",
        r#"client("kms").create_alias(AliasName="alias/serve-app", TargetKeyId=sys.argv[2])"#,
        &[&arn],
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(
        dir.path(),
        "tokens",
        &[ALL.to_string(), format!("{OTHER} * keys=alias/serve-app")],
    );
    let server =
        Server::start(Opts::new(&["--key", "alias/serve-app", "--token-file", &tokens]).aws(&moto));
    // A message written under the alias names the key ARN; the server unwraps it with
    // that ARN, for the token limited to the alias too.
    let plaintext = secret_text(5000);
    let sealed = server.post("/v1/encrypt", OTHER, &plaintext);
    let sealed = sealed.expect(200).body.clone();
    let (header, _) = sealpipe::stream::read_header(&mut &sealed[..], &Default::default()).unwrap();
    assert_eq!(
        header.body.encrypted_data_keys[0].provider_info,
        arn.as_bytes(),
        "the message names the key ARN"
    );
    for token in [ALL, OTHER] {
        let opened = server.post("/v1/decrypt", token, &sealed);
        assert_eq!(opened.expect(200).body, plaintext);
    }
    // A blob KMS refuses as tampered is the client's error (400), not the server's
    // (502), and the answer does not carry the server's KMS details.
    let blob = server.post("/v1/kms/encrypt", ALL, b"db-password");
    let mut blob = B64.decode(blob.expect(200).text().trim()).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let reply = server.post("/v1/kms/decrypt", ALL, B64.encode(&blob).as_bytes());
    assert!(
        reply.status == 400,
        "a tampered blob: want 400, got {} {}",
        reply.status,
        reply.text()
    );
    check_error_doc("a tampered blob", &reply.json(), Some("InvalidCiphertext"));
}
