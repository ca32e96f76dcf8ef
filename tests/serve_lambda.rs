//! `serve --lambda`: the encryption API as an AWS Lambda function behind API Gateway,
//! run under a real Lambda Runtime API emulator (`cargo lambda watch
//! --only-lambda-apis`, cargo-lambda from PyPI in the test venv), with KMS and Secrets
//! Manager on moto.
//!
//! The test plays API Gateway's part: each HTTP request becomes the event an HTTP API
//! integration (payload format 2.0) hands the function, or a REST API's (1.0), with a
//! binary body base64-encoded as the gateway encodes it, posted to the emulator's
//! Invoke API; the function's answer is read as the gateway reads it (status, headers,
//! body, base64 when `isBase64Encoded`). The function is the real binary, unchanged: the
//! Runtime API is the only thing between it and the requests. One function process
//! serves every invocation of a test, as a warm Lambda instance does.
//!
//! `Emulator` is a copy of the one in `tests/batch_operations.rs` (the minimum of it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::lambda::Emulator;
use common::world::World;
use serde_json::{Value, json};

/// The sealpipe function (`args` are the whole command line, `serve --lambda ...`),
/// started against `emulator` as Lambda starts a runtime, with `env` besides what
/// Lambda sets.
struct Function {
    child: Child,
    stderr: PathBuf,
}

impl Function {
    fn start(
        w: &World,
        emulator: &Emulator,
        args: &[&str],
        env: &[(&str, &str)],
        name: &str,
    ) -> Self {
        let stderr = w.path(&format!("{name}.stderr"));
        let child = w
            .command(&w.moto.endpoint())
            .args(args)
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt", emulator.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start sealpipe");
        Self { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops the function; it must have been running all along (one warm process).
    fn stop(mut self) -> String {
        let running = self.child.try_wait().unwrap().is_none();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        assert!(running, "the function exited between invocations:\n{log}");
        log
    }
}

/// One HTTP request as API Gateway receives it.
#[derive(Clone)]
struct Req {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Sent base64-encoded, as the gateway sends a body of a binary media type.
    binary: bool,
}

impl Req {
    fn new(method: &'static str, path: &str) -> Self {
        Self {
            method,
            path: path.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            binary: false,
        }
    }

    fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A POST of `body` as `application/octet-stream` (base64 in the event).
    fn post(path: &str, body: &[u8]) -> Self {
        let mut r = Self::new("POST", path).header("content-type", "application/octet-stream");
        r.body = body.to_vec();
        r.binary = true;
        r
    }

    /// A POST of a JSON document (text in the event, as the gateway passes it).
    fn post_json(path: &str, doc: &Value) -> Self {
        let mut r = Self::new("POST", path).header("content-type", "application/json");
        r.body = doc.to_string().into_bytes();
        r
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_string(), value.to_string()));
        self
    }

    fn raw_query(&self) -> String {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        self.query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(k, NON_ALPHANUMERIC),
                    utf8_percent_encode(v, NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    fn all_headers(&self) -> BTreeMap<String, String> {
        let mut headers: BTreeMap<String, String> = [
            ("host", "abc123.execute-api.us-east-1.amazonaws.com"),
            ("user-agent", "sealpipe-tests"),
            ("x-forwarded-for", "127.0.0.1"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-proto", "https"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if self.method == "POST" {
            headers.insert("content-length".into(), self.body.len().to_string());
        }
        for (k, v) in &self.headers {
            // Repeated headers reach the function comma-joined (payload 2.0).
            headers
                .entry(k.clone())
                .and_modify(|old| {
                    old.push(',');
                    old.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        headers
    }

    fn event_body(&self) -> Value {
        if self.body.is_empty() && self.method == "GET" {
            Value::Null
        } else if self.binary {
            Value::String(B64.encode(&self.body))
        } else {
            Value::String(String::from_utf8(self.body.clone()).expect("a text body"))
        }
    }

    /// The HTTP API (payload format 2.0) event of this request.
    fn http_api_event(&self, n: usize) -> Value {
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.query {
            params
                .entry(k.clone())
                .and_modify(|old| {
                    old.push(',');
                    old.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        let mut event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": self.path,
            "rawQueryString": self.raw_query(),
            "headers": self.all_headers(),
            "requestContext": {
                "accountId": "111122223333",
                "apiId": "abc123",
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "abc123",
                "http": {
                    "method": self.method,
                    "path": self.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "sealpipe-tests"
                },
                "requestId": format!("req-{n}"),
                "routeKey": "$default",
                "stage": "$default",
                "time": "01/Jan/2026:00:00:00 +0000",
                "timeEpoch": 1_767_225_600_000u64
            },
            "isBase64Encoded": self.binary,
        });
        if !params.is_empty() {
            event["queryStringParameters"] = json!(params);
        }
        let body = self.event_body();
        if !body.is_null() {
            event["body"] = body;
        }
        event
    }

    /// The REST API (payload format 1.0, Lambda proxy integration) event of this request.
    fn rest_api_event(&self, n: usize) -> Value {
        let headers = self.all_headers();
        let multi_headers: BTreeMap<&String, Vec<&String>> =
            headers.iter().map(|(k, v)| (k, vec![v])).collect();
        let mut single: BTreeMap<&str, &str> = BTreeMap::new();
        let mut multi: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &self.query {
            single.insert(k, v);
            multi.entry(k).or_default().push(v);
        }
        json!({
            "resource": "/{proxy+}",
            "path": self.path,
            "httpMethod": self.method,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": if single.is_empty() { Value::Null } else { json!(single) },
            "multiValueQueryStringParameters": if multi.is_empty() { Value::Null } else { json!(multi) },
            "pathParameters": {"proxy": self.path.trim_start_matches('/')},
            "stageVariables": null,
            "requestContext": {
                "accountId": "111122223333",
                "apiId": "abc123",
                "resourceId": "res",
                "resourcePath": "/{proxy+}",
                "httpMethod": self.method,
                "path": format!("/prod{}", self.path),
                "protocol": "HTTP/1.1",
                "requestId": format!("rest-{n}"),
                "stage": "prod",
                "identity": {"sourceIp": "127.0.0.1", "userAgent": "sealpipe-tests"},
                "requestTimeEpoch": 1_767_225_600_000u64
            },
            "body": self.event_body(),
            "isBase64Encoded": self.binary,
        })
    }
}

/// What API Gateway would answer the client.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lowercased names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of a JSON error answer.
    fn error_code(&self) -> String {
        let doc = self.json();
        doc["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {doc}"))
            .to_string()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Posts each event to the Invoke API in turn; prints, as JSON, the HTTP status and
/// body of each answer (stops at the first that did not come back at all).
const INVOKE: &str = r#"
import json, sys, urllib.error, urllib.request
url = sys.argv[1]
answers = []
for event in json.load(sys.stdin):
    request = urllib.request.Request(url, data=json.dumps(event).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            answers.append({"status": r.status, "body": r.read().decode()})
    except urllib.error.HTTPError as e:
        answers.append({"status": e.code, "body": e.read().decode(errors="replace")})
    except Exception as e:
        answers.append({"status": 0, "body": repr(e)})
        break
print(json.dumps(answers))
"#;

/// Invokes the function once per event; the gateway's answers.
fn invoke_events(emulator: &Emulator, function: &Function, events: &[Value]) -> Vec<Answer> {
    let url = emulator.invoke_url();
    let stdin = serde_json::to_vec(events).unwrap();
    let printed = common::venv_python("invoke the function", INVOKE, &[Path::new(&url)], &stdin);
    let answers: Vec<Value> = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        answers.len(),
        events.len(),
        "an invocation did not return: {:?}\n--- function log ---\n{}",
        answers.last(),
        function.log()
    );
    answers
        .iter()
        .map(|a| {
            let body = a["body"].as_str().unwrap();
            assert_eq!(
                a["status"],
                200,
                "the Invoke API answered {a}\n--- function log ---\n{}",
                function.log()
            );
            let response: Value = serde_json::from_str(body).unwrap_or_else(|e| {
                panic!(
                    "the function's answer is not JSON ({e}): {body}\n--- function log ---\n{}",
                    function.log()
                )
            });
            gateway_answer(&response)
        })
        .collect()
}

/// The function's response document, as API Gateway turns it into an HTTP response.
fn gateway_answer(response: &Value) -> Answer {
    let status = response["statusCode"]
        .as_u64()
        .unwrap_or_else(|| panic!("no statusCode in {response}")) as u16;
    let mut headers = BTreeMap::new();
    if let Some(map) = response["headers"].as_object() {
        for (k, v) in map {
            headers.insert(k.to_ascii_lowercase(), v.as_str().unwrap().to_string());
        }
    }
    if let Some(map) = response["multiValueHeaders"].as_object() {
        for (k, values) in map {
            let joined: Vec<&str> = values
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            headers
                .entry(k.to_ascii_lowercase())
                .or_insert_with(|| joined.join(","));
        }
    }
    let text = response["body"].as_str().unwrap_or("");
    let body = if response["isBase64Encoded"] == true {
        B64.decode(text)
            .unwrap_or_else(|e| panic!("body is not base64 ({e}): {response}"))
    } else {
        text.as_bytes().to_vec()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends each request as an HTTP API (payload 2.0) event.
fn send(emulator: &Emulator, function: &Function, requests: &[Req]) -> Vec<Answer> {
    let events: Vec<Value> = requests
        .iter()
        .enumerate()
        .map(|(n, r)| r.http_api_event(n))
        .collect();
    invoke_events(emulator, function, &events)
}

fn send_one(emulator: &Emulator, function: &Function, request: Req) -> Answer {
    send(emulator, function, &[request]).pop().unwrap()
}

/// The sum of the series of `name` whose labels contain every one of `labels`
/// (`action="Decrypt"`), in Prometheus text; `None` if there is no such series.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (series_labels, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        if labels.iter().all(|l| series_labels.contains(l)) {
            let value: f64 = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("not a sample: {line}"));
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

fn kms_calls(metrics: &str, action: &str) -> f64 {
    metric(
        metrics,
        "sealpipe_kms_requests_total",
        &[&format!("action=\"{action}\"")],
    )
    .unwrap_or(0.0)
}

const TOKEN: &str = "tok-4f1d0c9be2a8473d9a51c6e0b7f3d2a1";
const DECRYPT_ONLY: &str = "dec-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";

fn tokens_env() -> String {
    format!("# the tests' tokens\n{TOKEN}\n\n{DECRYPT_ONLY} decrypt\n")
}

/// An ESDK v2 message with key commitment (suite 0x0478) begins 02 04 78.
fn assert_esdk_v2(message: &[u8]) {
    assert!(
        message.len() > 3 && message[..3] == [0x02, 0x04, 0x78],
        "not an ESDK v2 message of suite 0478: {:02x?}",
        &message[..message.len().min(8)]
    );
}

#[test]
fn encrypt_and_decrypt_through_api_gateway_events_with_a_bearer_token() {
    let w = World::start("serve-lambda-raw");
    let emulator = Emulator::start();
    let tokens = tokens_env();
    let function = Function::start(
        &w,
        &emulator,
        &["serve", "--lambda", "--key", &w.key, "--log-format", "json"],
        &[("SEALPIPE_SERVE_TOKENS", &tokens)],
        "raw-fn",
    );
    // Not UTF-8, so the body must travel base64 both ways.
    let plaintext = common::pseudo_random(200_000, 7);
    assert!(std::str::from_utf8(&plaintext).is_err());

    let first = send(
        &emulator,
        &function,
        &[
            Req::get("/healthz"),
            Req::post("/v1/encrypt", &plaintext)
                .token(TOKEN)
                .query("context", "purpose=tests")
                .query("context", "team=a=b"),
            Req::post("/v1/encrypt", &plaintext),
            Req::post("/v1/encrypt", &plaintext).token("tok-not-one-of-the-tokens-at-all"),
            Req::post("/v1/encrypt", &plaintext).header("authorization", "Basic dXNlcjpwYXNz"),
            Req::post("/v1/encrypt", &plaintext).token(DECRYPT_ONLY),
            Req::post("/v1/encrypt", b"").token(TOKEN),
            Req::get("/v1/nowhere").token(TOKEN),
        ],
    );
    let [
        health,
        sealed,
        none,
        unknown,
        basic,
        forbidden,
        empty,
        missing,
    ] = <[Answer; 8]>::try_from(first).unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json(), json!({"status": "ok"}));
    assert_eq!(sealed.status, 200, "{}", sealed.text());
    assert_eq!(
        sealed.header("content-type"),
        Some("application/octet-stream")
    );
    assert_esdk_v2(&sealed.body);
    for (what, answer) in [
        ("no token", &none),
        ("an unknown token", &unknown),
        ("a Basic authorization", &basic),
    ] {
        assert_eq!(answer.status, 401, "{what}: {}", answer.text());
        assert_eq!(answer.error_code(), "Unauthorized", "{what}");
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{what}: {:?}",
            answer.headers
        );
    }
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    assert_eq!(forbidden.error_code(), "Forbidden");
    assert_eq!(empty.status, 200, "{}", empty.text());
    assert_esdk_v2(&empty.body);
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.error_code(), "NotFound");

    let mut tampered = sealed.body.clone();
    let at = tampered.len() - 40;
    tampered[at] ^= 1;
    let second = send(
        &emulator,
        &function,
        &[
            Req::post("/v1/decrypt", &sealed.body).token(TOKEN),
            Req::post("/v1/decrypt", &sealed.body)
                .token(DECRYPT_ONLY)
                .query("context", "purpose=tests"),
            Req::post("/v1/decrypt", &sealed.body)
                .token(TOKEN)
                .query("context", "purpose=other"),
            Req::post("/v1/decrypt", &tampered).token(TOKEN),
            Req::post("/v1/decrypt", &empty.body).token(TOKEN),
            Req::post("/v1/decrypt", &sealed.body),
        ],
    );
    let [
        opened,
        opened_by_decrypter,
        mismatch,
        tamper,
        opened_empty,
        anonymous,
    ] = <[Answer; 6]>::try_from(second).unwrap();
    for answer in [&opened, &opened_by_decrypter] {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(answer.body == plaintext, "the plaintext did not round-trip");
        let context: Value = serde_json::from_str(
            answer
                .header("x-encryption-context")
                .unwrap_or_else(|| panic!("no X-Encryption-Context: {:?}", answer.headers)),
        )
        .unwrap();
        assert_eq!(context["purpose"], "tests", "{context}");
        assert_eq!(context["team"], "a=b", "split at the first '=': {context}");
    }
    assert_eq!(mismatch.status, 400, "{}", mismatch.text());
    assert_eq!(mismatch.error_code(), "ContextMismatch");
    assert_eq!(tamper.status, 400, "{}", tamper.text());
    assert_eq!(tamper.error_code(), "AuthenticationFailed");
    assert!(
        tamper.body.len() < 1024,
        "a failed decrypt carries no plaintext"
    );
    assert_eq!(opened_empty.status, 200, "{}", opened_empty.text());
    assert!(opened_empty.body.is_empty());
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    // The JSON variants, whose bodies the gateway passes as text.
    let doc = send_one(
        &emulator,
        &function,
        Req::post_json(
            "/v1/encrypt",
            &json!({"plaintext": B64.encode(b"json secret"), "context": {"via": "json"}}),
        )
        .token(TOKEN),
    );
    assert_eq!(doc.status, 200, "{}", doc.text());
    let ciphertext = doc.json()["ciphertext"]
        .as_str()
        .unwrap_or_else(|| panic!("no ciphertext: {}", doc.text()))
        .to_string();
    assert_esdk_v2(&B64.decode(&ciphertext).unwrap());
    let doc = send_one(
        &emulator,
        &function,
        Req::post_json("/v1/decrypt", &json!({"ciphertext": ciphertext})).token(TOKEN),
    );
    assert_eq!(doc.status, 200, "{}", doc.text());
    let opened = doc.json();
    assert_eq!(
        B64.decode(opened["plaintext"].as_str().unwrap()).unwrap(),
        b"json secret"
    );
    assert_eq!(opened["context"]["via"], "json", "{opened}");

    let log = function.stop();

    // What the function sealed is an ordinary message: the CLI opens it.
    std::fs::write(w.path("sealed.bin"), &sealed.body).unwrap();
    let run = w.run(&[
        "decrypt",
        w.path("sealed.bin").to_str().unwrap(),
        w.path("opened.bin").to_str().unwrap(),
        "--key",
        &w.key,
    ]);
    run.assert_exit(0);
    assert!(
        std::fs::read(w.path("opened.bin")).unwrap() == plaintext,
        "the CLI did not decrypt the function's message to the plaintext"
    );
    // The tokens are secrets: never in the function's log.
    for token in [TOKEN, DECRYPT_ONLY] {
        assert!(!log.contains(token), "a token is in the log:\n{log}");
    }
}

/// A REST API's Lambda proxy integration (payload format 1.0) reaches the same routes.
/// A REST API always has a named stage (`prod` here) and passes `path` without it:
/// `/v1/encrypt` is the route, not `/prod/v1/encrypt`.
#[test]
fn a_rest_api_event_reaches_the_same_routes() {
    let w = World::start("serve-lambda-rest");
    let emulator = Emulator::start();
    let tokens = tokens_env();
    let function = Function::start(
        &w,
        &emulator,
        &["serve", "--lambda", "--key", &w.key, "--log-format", "json"],
        &[("SEALPIPE_SERVE_TOKENS", &tokens)],
        "rest-fn",
    );
    let plaintext = common::pseudo_random(5000, 8);
    let rest = invoke_events(
        &emulator,
        &function,
        &[
            Req::get("/healthz").rest_api_event(0),
            Req::post("/v1/encrypt", &plaintext)
                .token(TOKEN)
                .query("context", "via=rest")
                .rest_api_event(1),
            Req::post("/v1/encrypt", &plaintext).rest_api_event(2),
        ],
    );
    assert_eq!(rest[0].status, 200, "GET /healthz: {}", rest[0].text());
    assert_eq!(rest[1].status, 200, "POST /v1/encrypt: {}", rest[1].text());
    assert_esdk_v2(&rest[1].body);
    assert_eq!(rest[2].status, 401, "{}", rest[2].text());
    let opened = invoke_events(
        &emulator,
        &function,
        &[Req::post("/v1/decrypt", &rest[1].body)
            .token(TOKEN)
            .query("context", "via=rest")
            .rest_api_event(3)],
    );
    assert_eq!(opened[0].status, 200, "{}", opened[0].text());
    assert!(
        opened[0].body == plaintext,
        "the plaintext did not round-trip"
    );
    function.stop();
}

/// Plain HTTP requests through the emulator's function URL: `(method, url, headers,
/// body file or null, output file)` each; prints `[status, headers]` per request.
const HTTP_CLIENT: &str = r#"
import json, sys, urllib.error, urllib.request
out = []
for method, url, headers, body, save in json.load(sys.stdin):
    data = open(body, "rb").read() if body else None
    request = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        r = urllib.request.urlopen(request, timeout=120)
    except urllib.error.HTTPError as e:
        r = e
    open(save, "wb").write(r.read())
    out.append([r.status, {k.lower(): v for k, v in r.headers.items()}])
print(json.dumps(out))
"#;

/// The same function through a function URL (the emulator's, which builds the events
/// from real HTTP requests): a 1 MiB binary body each way, and the 401 of no token.
#[test]
fn a_function_url_round_trips_binary_bodies() {
    let w = World::start("serve-lambda-furl");
    let emulator = Emulator::start();
    let tokens = tokens_env();
    let function = Function::start(
        &w,
        &emulator,
        &["serve", "--lambda", "--key", &w.key],
        &[("SEALPIPE_SERVE_TOKENS", &tokens)],
        "furl-fn",
    );
    let plaintext = common::pseudo_random(1 << 20, 9);
    std::fs::write(w.path("plain.bin"), &plaintext).unwrap();
    let file = |name: &str| w.path(name).display().to_string();
    let bearer = json!({
        "Authorization": format!("Bearer {TOKEN}"),
        "Content-Type": "application/octet-stream",
    });
    let call = |requests: Value| -> Vec<(u16, BTreeMap<String, String>)> {
        let printed = common::venv_python(
            "HTTP requests to the function URL",
            HTTP_CLIENT,
            &[],
            requests.to_string().as_bytes(),
        );
        serde_json::from_str(&printed).unwrap()
    };
    let answers = call(json!([
        ["POST", emulator.function_url("/v1/encrypt?context=via%3Durl"), bearer,
         file("plain.bin"), file("sealed.bin")],
        ["POST", emulator.function_url("/v1/encrypt"),
         {"Content-Type": "application/octet-stream"}, file("plain.bin"), file("anon.json")],
        ["GET", emulator.function_url("/healthz"), {}, null, file("health.json")],
    ]));
    assert_eq!(answers[0].0, 200, "{answers:?}\n{}", function.log());
    let sealed = std::fs::read(w.path("sealed.bin")).unwrap();
    assert_esdk_v2(&sealed);
    assert_eq!(answers[1].0, 401, "{answers:?}");
    assert!(
        answers[1]
            .1
            .get("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer")),
        "{answers:?}"
    );
    assert_eq!(answers[2].0, 200, "{answers:?}");
    let answers = call(json!([[
        "POST",
        emulator.function_url("/v1/decrypt?context=via%3Durl"),
        bearer,
        file("sealed.bin"),
        file("opened.bin")
    ],]));
    assert_eq!(answers[0].0, 200, "{answers:?}\n{}", function.log());
    assert!(
        std::fs::read(w.path("opened.bin")).unwrap() == plaintext,
        "1 MiB did not round-trip through the function URL"
    );
    let context: Value = serde_json::from_str(&answers[0].1["x-encryption-context"]).unwrap();
    assert_eq!(context["via"], "url", "{context}");
    function.stop();
}

#[test]
fn the_data_key_pool_lives_across_warm_invocations() {
    let w = World::start("serve-lambda-pool");
    let kms_key = w.create_kms_key();
    let emulator = Emulator::start();
    let tokens = tokens_env();
    let function = Function::start(
        &w,
        &emulator,
        &[
            "serve",
            "--lambda",
            "--key",
            &kms_key,
            "--log-format",
            "json",
        ],
        &[("SEALPIPE_SERVE_TOKENS", &tokens)],
        "pool-fn",
    );
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|i| common::pseudo_random(1024, 100 + i))
        .collect();
    let requests: Vec<Req> = bodies
        .iter()
        .map(|b| Req::post("/v1/encrypt", b).token(TOKEN))
        .collect();
    let sealed = send(&emulator, &function, &requests);
    for (i, answer) in sealed.iter().enumerate() {
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text());
        assert_esdk_v2(&answer.body);
    }
    let metrics = send_one(&emulator, &function, Req::get("/metrics").token(TOKEN));
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    let text = metrics.text();
    // 50 invocations of one warm function, one data key: one GenerateDataKey.
    assert_eq!(
        kms_calls(&text, "GenerateDataKey"),
        1.0,
        "GenerateDataKey per 50 encrypts:\n{text}"
    );
    assert_eq!(kms_calls(&text, "Encrypt"), 0.0, "{text}");
    let ok = metric(&text, "sealpipe_serve_requests_total", &["status=\"200\""])
        .unwrap_or_else(|| panic!("no sealpipe_serve_requests_total:\n{text}"));
    assert!(ok >= 50.0, "{ok} requests answered 200:\n{text}");

    // Three of the messages decrypt, and the metrics count the Decrypt calls that took.
    let opened = send(
        &emulator,
        &function,
        &[
            Req::post("/v1/decrypt", &sealed[0].body).token(TOKEN),
            Req::post("/v1/decrypt", &sealed[25].body).token(TOKEN),
            Req::post("/v1/decrypt", &sealed[49].body).token(TOKEN),
            Req::get("/metrics").token(TOKEN),
        ],
    );
    for (answer, i) in opened.iter().zip([0, 25, 49]) {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(answer.body == bodies[i], "message {i} did not round-trip");
    }
    let text = opened[3].text();
    let decrypts = kms_calls(&text, "Decrypt");
    assert!(
        (1.0..=3.0).contains(&decrypts),
        "{decrypts} Decrypt calls for 3 messages:\n{text}"
    );
    assert_eq!(kms_calls(&text, "GenerateDataKey"), 1.0, "{text}");
    function.stop();
}

/// `aws kms decrypt` of a CiphertextBlob (base64) on moto: the plaintext.
fn kms_decrypt(w: &World, blob_b64: &str) -> Vec<u8> {
    let script = r#"
import base64, sys, boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
blob = base64.b64decode(sys.stdin.read())
print(base64.b64encode(kms.decrypt(CiphertextBlob=blob)["Plaintext"]).decode())
"#;
    let endpoint = w.moto.endpoint();
    let printed = common::venv_python(
        "decrypt the blob with KMS",
        script,
        &[Path::new(&endpoint)],
        blob_b64.as_bytes(),
    );
    B64.decode(printed.trim()).unwrap()
}

/// The deployed command: `deploy/serve/template.yaml`'s `ImageConfig.Command`, its
/// `Ref`s resolved to a moto KMS key and a moto secret holding a token file like the
/// one the stack generates (48 letters and digits), run under the emulator.
#[test]
fn the_templates_command_serves_with_its_token_from_secrets_manager() {
    let w = World::start("serve-lambda-template");
    let template_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/serve/template.yaml");
    let printed = common::venv_python(
        "deploy/serve/template.yaml is not valid YAML",
        "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))\n",
        &[&template_path],
        b"",
    );
    let template: Value = serde_json::from_str(&printed).unwrap();
    let kms_key = w.create_kms_key();
    let token = "Q7wz3K9mTb2VxR8nLp4HcY6dFj1Gs5Ua0Ne7Mk3Wq9Zt2Bv8";
    assert_eq!(token.len(), 48);
    let secret = w.create_secret("sealpipe-serve-tokens", token);
    let resolved: Vec<String> =
        template["Resources"]["Function"]["Properties"]["ImageConfig"]["Command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|arg| match arg {
                Value::String(s) => s.clone(),
                other => match other["Ref"].as_str() {
                    Some("KeyArn") => kms_key.clone(),
                    Some("TokenSecret") => secret.clone(),
                    _ => panic!("an argument this test cannot resolve: {other}"),
                },
            })
            .collect();
    let args: Vec<&str> = resolved.iter().map(String::as_str).collect();
    let emulator = Emulator::start();
    let function = Function::start(&w, &emulator, &args, &[], "template-fn");

    let answers = send(
        &emulator,
        &function,
        &[
            Req::get("/healthz"),
            Req::post("/v1/encrypt", b"sealed by the deployed command").token(token),
            Req::post("/v1/kms/encrypt", b"db-password-1").token(token),
            Req::post("/v1/encrypt", b"x"),
        ],
    );
    let [health, sealed, kms_sealed, anonymous] = <[Answer; 4]>::try_from(answers).unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(sealed.status, 200, "{}", sealed.text());
    assert_esdk_v2(&sealed.body);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(kms_sealed.status, 200, "{}", kms_sealed.text());
    assert!(
        kms_sealed
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        kms_sealed.headers
    );
    // The blob is KMS's own: KMS decrypts it, and so does /v1/kms/decrypt.
    let blob = kms_sealed.text();
    assert_eq!(kms_decrypt(&w, blob.trim()), b"db-password-1");
    let answers = send(
        &emulator,
        &function,
        &[
            Req::post("/v1/decrypt", &sealed.body).token(token),
            Req::post("/v1/kms/decrypt", blob.as_bytes())
                .header("content-type", "text/plain")
                .token(token),
        ],
    );
    assert_eq!(answers[0].status, 200, "{}", answers[0].text());
    assert_eq!(answers[0].body, b"sealed by the deployed command");
    assert_eq!(answers[1].status, 200, "{}", answers[1].text());
    assert_eq!(answers[1].body, b"db-password-1");
    let log = function.stop();
    assert!(!log.contains(token), "the token is in the log:\n{log}");
}

#[test]
fn serve_lambda_outside_lambda_or_given_a_broken_runtime_api_says_so() {
    let w = World::start("serve-lambda-env");
    let tokens = tokens_env();
    let base = ["serve", "--lambda", "--key", w.key.as_str()];
    // No Runtime API: exit 2 with what to set, never a panic.
    let out = w
        .command(&w.moto.endpoint())
        .args(base)
        .env("SEALPIPE_SERVE_TOKENS", &tokens)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("AWS_LAMBDA_RUNTIME_API"), "{stderr}");
    for (name, value) in [
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1/.rt"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "a lot"),
    ] {
        let out = w
            .command(&w.moto.endpoint())
            .args(base)
            .env("SEALPIPE_SERVE_TOKENS", &tokens)
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
            .env("AWS_LAMBDA_FUNCTION_NAME", "f")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
}
