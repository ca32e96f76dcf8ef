//! A test's world for the S3 tests (`s3.rs`, `crash_loop.rs`, `fault_storm.rs`,
//! `hostile_s3.rs`): a moto server (S3 and KMS), SDK clients on it, a scratch
//! directory, a local wrapping key, and the `sealpipe` binary run to completion (with a
//! JSON report) or SIGKILLed mid-run. Objects go up and come back with their metadata
//! and tags. Also a seeded PRNG and tree walkers for local outputs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::faults::FaultProxy;
use super::moto::Moto;

/// Longest a single sealpipe run may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(200);
/// Requests the test itself keeps in flight against moto when setting up or checking.
const TEST_CONCURRENCY: usize = 16;

pub const MIB: usize = 1024 * 1024;

/// A small deterministic PRNG (xorshift64*), for sizes and kill moments.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `SEALPIPE_TEST_SEED` (decimal, or hex as logged: `0x...`), else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("SEALPIPE_TEST_SEED").map_or(default, |s| {
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .unwrap_or_else(|e| panic!("SEALPIPE_TEST_SEED={s:?}: {e}"))
    })
}

/// Object metadata as S3 returns it: the fields sealpipe must carry over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    /// Written as a timestamp, read back as the raw `Expires` header.
    pub expires: Option<String>,
    pub user: BTreeMap<String, String>,
    /// Sorted.
    pub tags: Vec<(String, String)>,
}

impl Meta {
    /// The same metadata without sealpipe's own `sealpipe-*` user metadata.
    pub fn without_marker(&self) -> Meta {
        let mut m = self.clone();
        m.user.retain(|k, _| !k.starts_with("sealpipe-"));
        m
    }
}

/// An object to upload.
#[derive(Clone)]
pub struct Obj {
    pub key: String,
    pub body: Bytes,
    pub meta: Meta,
    /// Seconds since the epoch for `Expires`, if set.
    pub expires: Option<i64>,
}

impl Obj {
    /// An object without metadata.
    pub fn plain(key: &str, body: impl Into<Bytes>) -> Self {
        Self::from((key.to_string(), body.into()))
    }
}

/// A `(key, body)` pair is an object without metadata.
impl From<(String, Bytes)> for Obj {
    fn from((key, body): (String, Bytes)) -> Self {
        Self {
            key,
            body,
            meta: Meta::default(),
            expires: None,
        }
    }
}

/// An object as read back with GetObject (and GetObjectTagging when it has tags).
#[derive(Clone, Debug)]
pub struct Fetched {
    pub body: Bytes,
    pub etag: String,
    pub version: Option<String>,
    pub meta: Meta,
}

/// The [`Meta`] of a HeadObject or GetObject output (the same accessors on two
/// types), without tags.
macro_rules! meta_of {
    ($out:expr) => {{
        let out = &$out;
        Meta {
            content_type: out.content_type().map(str::to_string),
            cache_control: out.cache_control().map(str::to_string),
            content_disposition: out.content_disposition().map(str::to_string),
            content_encoding: out.content_encoding().map(str::to_string),
            content_language: out.content_language().map(str::to_string),
            expires: out.expires_string().map(str::to_string),
            user: lower_keys(out.metadata()),
            tags: Vec::new(),
        }
    }};
}

/// One sealpipe run: exit status, stderr and the JSON report (`Null` if none).
pub struct Run {
    pub status: ExitStatus,
    pub stderr: String,
    pub report: Value,
}

impl Run {
    /// Everything worth seeing when an assertion about this run fails: exit code,
    /// stderr (its first and last lines if long), and the report (skips counted, the
    /// first 30 failures listed).
    pub fn context(&self) -> String {
        const KEEP: usize = 40;
        let lines: Vec<&str> = self.stderr.lines().collect();
        let stderr = if lines.len() <= 2 * KEEP {
            self.stderr.clone()
        } else {
            format!(
                "{}\n[... {} lines ...]\n{}",
                lines[..KEEP].join("\n"),
                lines.len() - 2 * KEEP,
                lines[lines.len() - KEEP..].join("\n")
            )
        };
        let mut report = self.report.clone();
        if let Some(skipped) = report.get_mut("skipped") {
            let n = skipped.as_array().map_or(0, Vec::len);
            *skipped = Value::String(format!("[{n} entries]"));
        }
        if let Some(Value::Array(failures)) = report.get_mut("failures") {
            failures.truncate(30);
        }
        format!(
            "exit {:?}\n--- sealpipe stderr ---\n{stderr}\n--- report ---\n{}",
            self.status.code(),
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )
    }

    pub fn assert_exit(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit {code}\n{}",
            self.context()
        );
    }

    /// A number from the report at a `/`-separated path, e.g. `"objects/ok"`.
    pub fn num(&self, path: &str) -> u64 {
        self.report
            .pointer(&format!("/{path}"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {path} in the report\n{}", self.context()))
    }

    pub fn objects(&self, name: &str) -> u64 {
        self.num(&format!("objects/{name}"))
    }

    pub fn s3(&self, name: &str) -> u64 {
        self.num(&format!("s3/{name}"))
    }

    /// planned, ok, failed, conflicts, skipped.
    pub fn assert_objects(&self, planned: u64, ok: u64, failed: u64, conflicts: u64, skipped: u64) {
        let got = [
            self.objects("planned"),
            self.objects("ok"),
            self.objects("failed"),
            self.objects("conflicts"),
            self.objects("skipped"),
        ];
        assert_eq!(
            got,
            [planned, ok, failed, conflicts, skipped],
            "objects [planned, ok, failed, conflicts, skipped]\n{}",
            self.context()
        );
    }

    /// planned == ok + skipped + failed + conflicts.
    pub fn assert_counts_add_up(&self) {
        let [planned, ok, skipped, failed, conflicts] =
            ["planned", "ok", "skipped", "failed", "conflicts"].map(|n| self.objects(n));
        assert_eq!(
            planned,
            ok + skipped + failed + conflicts,
            "planned != ok + skipped + failed + conflicts\n{}",
            self.context()
        );
    }

    /// The report's `failures` array.
    pub fn failures(&self) -> Vec<Value> {
        self.report["failures"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no failures array in the report\n{}", self.context()))
    }
}

/// One test's world.
pub struct World {
    pub moto: Moto,
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub client: aws_sdk_s3::Client,
    /// `raw-aes:ns:k1:/abs/path` of a fresh 256-bit key.
    pub key: String,
    /// The bytes of that key.
    pub key_bytes: [u8; 32],
    name: &'static str,
    started: Instant,
    runs: std::cell::Cell<u32>,
}

impl World {
    pub fn start(name: &'static str) -> Self {
        let moto = Moto::start();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let conf = aws_sdk_s3::Config::builder()
            .http_client(sealpipe::aws::http_client())
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .endpoint_url(moto.endpoint())
            .force_path_style(true)
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let dir = tempfile::tempdir().unwrap();
        let mut key_bytes = [0u8; 32];
        getrandom::fill(&mut key_bytes).unwrap();
        let key_path = dir.path().join("wrapping.key");
        std::fs::write(&key_path, key_bytes).unwrap();
        Self {
            key: format!("raw-aes:ns:k1:{}", key_path.display()),
            key_bytes,
            moto,
            rt,
            dir,
            client,
            name,
            started: Instant::now(),
            runs: std::cell::Cell::new(0),
        }
    }

    pub fn log(&self, msg: &str) {
        eprintln!(
            "[{} +{:.1}s] {msg}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    // ---- sealpipe -----------------------------------------------------------------

    pub fn command(&self, endpoint: &str) -> Command {
        let sealpipe = Path::new(env!("CARGO_BIN_EXE_sealpipe"));
        super::aws_command(sealpipe, self.dir.path(), endpoint)
    }

    /// Starts sealpipe with stdout and stderr going to files (so a chatty run never
    /// blocks on a full pipe); returns the child and its stderr file.
    pub fn spawn_via(&self, endpoint: &str, args: &[&str]) -> (Child, PathBuf) {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let err = self.path(&format!("run{n}.stderr"));
        let child = self
            .command(endpoint)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path(&format!("run{n}.stdout"))).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start sealpipe");
        (child, err)
    }

    /// Runs sealpipe to the end (killing it after [`RUN_TIMEOUT`]) with a fresh
    /// `--report`; returns status, stderr and the report.
    pub fn run_via(&self, endpoint: &str, args: &[&str]) -> Run {
        let report = self.path(&format!("report{}.json", self.runs.get() + 1));
        let report_arg = report.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--report", &report_arg]);
        let started = Instant::now();
        let (mut child, err) = self.spawn_via(endpoint, &all);
        let Some(status) = super::wait_or_kill(&mut child, RUN_TIMEOUT) else {
            panic!(
                "sealpipe {args:?} still running after {RUN_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        };
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        let report = match std::fs::read(&report) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("report of {args:?} is not JSON: {e}\nstderr:\n{stderr}")
            }),
            Err(_) => Value::Null,
        };
        self.log(&format!(
            "sealpipe {} {} ({:.1} s, exit {:?})",
            args.first().copied().unwrap_or_default(),
            args.get(1).copied().unwrap_or_default(),
            started.elapsed().as_secs_f64(),
            status.code()
        ));
        Run {
            status,
            stderr,
            report,
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_via(&self.moto.endpoint(), args)
    }

    /// Starts tests/faults/s3_fault_proxy.py in front of moto with `args`.
    pub fn proxy(&self, args: &[&str]) -> FaultProxy {
        FaultProxy::start("s3_fault_proxy.py", &self.moto.endpoint(), args)
    }

    /// Starts sealpipe, SIGKILLs it after `delay`; returns whether it was still
    /// running (true) or had ended by itself (false; then it must have succeeded).
    pub fn kill_after(&self, endpoint: &str, args: &[&str], delay: Duration) -> bool {
        match self.kill_after_status(endpoint, args, delay) {
            None => true,
            Some((status, stderr)) => {
                assert!(
                    status.success(),
                    "sealpipe {args:?} ended by itself with {status}: {stderr}"
                );
                false
            }
        }
    }

    /// Starts sealpipe and SIGKILLs it after `delay`: `None` if it was still running,
    /// else its own exit status and stderr.
    pub fn kill_after_status(
        &self,
        endpoint: &str,
        args: &[&str],
        delay: Duration,
    ) -> Option<(ExitStatus, String)> {
        let (mut child, err) = self.spawn_via(endpoint, args);
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        finished.map(|status| (status, std::fs::read_to_string(err).unwrap_or_default()))
    }

    // ---- Secrets Manager --------------------------------------------------------------

    /// A Secrets Manager secret on moto holding `value` as its `SecretString`; its ARN.
    pub fn create_secret(&self, name: &str, value: &str) -> String {
        let script = r#"
import sys, boto3
endpoint, name = sys.argv[1:3]
sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
print(sm.create_secret(Name=name, SecretString=sys.stdin.read())["ARN"])
"#;
        let endpoint = self.moto.endpoint();
        super::venv_python(
            "create a secret on moto",
            script,
            &[std::path::Path::new(&endpoint), std::path::Path::new(name)],
            value.as_bytes(),
        )
        .trim()
        .to_string()
    }

    // ---- KMS ------------------------------------------------------------------------

    /// A fresh symmetric KMS key in moto (us-east-1); its ARN.
    pub fn create_kms_key(&self) -> String {
        self.create_kms_key_in("us-east-1")
    }

    /// A fresh symmetric KMS key in moto in `region`; its ARN.
    pub fn create_kms_key_in(&self, region: &str) -> String {
        let conf = aws_sdk_kms::Config::builder()
            .http_client(sealpipe::aws::http_client())
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .endpoint_url(self.moto.endpoint())
            .build();
        let kms = aws_sdk_kms::Client::from_conf(conf);
        self.rt.block_on(async {
            kms.create_key()
                .send()
                .await
                .expect("KMS CreateKey")
                .key_metadata
                .unwrap()
                .arn
                .unwrap()
        })
    }

    // ---- S3, directly ---------------------------------------------------------------

    pub fn create_bucket(&self, bucket: &str) {
        self.rt.block_on(async {
            self.client
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateBucket {bucket}: {e:?}"));
        });
    }

    pub fn enable_versioning(&self, bucket: &str) {
        self.rt.block_on(async {
            self.client
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutBucketVersioning {bucket}: {e:?}"));
        });
    }

    /// Runs `call` on every item, [`TEST_CONCURRENCY`] at a time, and collects the
    /// `(key, value)` pairs it returns.
    pub fn concurrently<I, T, Fut>(
        &self,
        items: Vec<I>,
        call: impl Fn(aws_sdk_s3::Client, I) -> Fut,
    ) -> HashMap<String, T>
    where
        T: Send + 'static,
        Fut: Future<Output = (String, T)> + Send + 'static,
    {
        let client = self.client.clone();
        self.rt.block_on(async move {
            let permits = Arc::new(Semaphore::new(TEST_CONCURRENCY));
            let mut tasks = tokio::task::JoinSet::new();
            for item in items {
                let permit = permits.clone().acquire_owned().await.unwrap();
                let work = call(client.clone(), item);
                tasks.spawn(async move {
                    let _permit = permit;
                    work.await
                });
            }
            let mut all = HashMap::new();
            while let Some(done) = tasks.join_next().await {
                let (key, value) = done.unwrap();
                all.insert(key, value);
            }
            all
        })
    }

    /// Uploads objects (an [`Obj`], or a `(key, body)` pair for one without metadata)
    /// concurrently; returns each key's version ID (versioned buckets).
    pub fn put_all<O>(&self, bucket: &str, objects: &[O]) -> HashMap<String, Option<String>>
    where
        O: Clone + Into<Obj>,
    {
        let bucket = bucket.to_string();
        let objects: Vec<Obj> = objects.iter().cloned().map(Into::into).collect();
        self.concurrently(objects, move |client, o| {
            let bucket = bucket.clone();
            async move {
                let version = put(&client, &bucket, &o).await;
                (o.key, version)
            }
        })
    }

    pub fn put(&self, bucket: &str, o: &Obj) -> Option<String> {
        self.rt.block_on(put(&self.client, bucket, o))
    }

    /// Reads objects concurrently.
    pub fn get_all(&self, bucket: &str, keys: &[String]) -> HashMap<String, Fetched> {
        let bucket = bucket.to_string();
        self.concurrently(keys.to_vec(), move |client, key| {
            let bucket = bucket.clone();
            async move {
                let fetched = get(&client, &bucket, &key, None).await;
                (key, fetched)
            }
        })
    }

    pub fn get(&self, bucket: &str, key: &str) -> Fetched {
        self.rt.block_on(get(&self.client, bucket, key, None))
    }

    pub fn get_version(&self, bucket: &str, key: &str, version: &str) -> Fetched {
        self.rt
            .block_on(get(&self.client, bucket, key, Some(version)))
    }

    /// HeadObject of each key, concurrently: size and metadata (without tags).
    pub fn head_all(&self, bucket: &str, keys: &[String]) -> HashMap<String, (u64, Meta)> {
        let bucket = bucket.to_string();
        self.concurrently(keys.to_vec(), move |client, key| {
            let bucket = bucket.clone();
            async move {
                let out = client
                    .head_object()
                    .bucket(&bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("HeadObject {bucket}/{key}: {e:?}"));
                let meta = meta_of!(out);
                let size = out.content_length().unwrap_or(-1) as u64;
                (key, (size, meta))
            }
        })
    }

    /// Every key in the bucket with its ETag.
    pub fn list(&self, bucket: &str) -> BTreeMap<String, String> {
        self.rt.block_on(async {
            let pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .into_paginator()
                .send()
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("ListObjectsV2 {bucket}: {e:?}"));
            pages
                .iter()
                .flat_map(|p| p.contents())
                .map(|o| {
                    (
                        o.key().unwrap().to_string(),
                        o.e_tag().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> BTreeSet<String> {
        self.list(bucket).into_keys().collect()
    }

    /// Every version (not delete markers) per key, and the number of delete markers.
    pub fn versions(&self, bucket: &str) -> (BTreeMap<String, Vec<String>>, usize) {
        self.rt.block_on(async {
            let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut markers = 0;
            let (mut key_marker, mut version_marker) = (None, None);
            loop {
                let page = self
                    .client
                    .list_object_versions()
                    .bucket(bucket)
                    .set_key_marker(key_marker.clone())
                    .set_version_id_marker(version_marker.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("ListObjectVersions {bucket}: {e:?}"));
                for v in page.versions() {
                    versions
                        .entry(v.key().unwrap().to_string())
                        .or_default()
                        .push(v.version_id().unwrap_or_default().to_string());
                }
                markers += page.delete_markers().len();
                if page.is_truncated() != Some(true) {
                    return (versions, markers);
                }
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
            }
        })
    }

    /// Multipart uploads in progress: (key, upload ID).
    pub fn uploads(&self, bucket: &str) -> Vec<(String, String)> {
        self.rt.block_on(async {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap_or_else(|e| panic!("ListMultipartUploads {bucket}: {e:?}"));
            out.uploads()
                .iter()
                .map(|u| {
                    (
                        u.key().unwrap_or_default().to_string(),
                        u.upload_id().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
    }
}

// ---- objects, directly --------------------------------------------------------------

pub async fn put(client: &aws_sdk_s3::Client, bucket: &str, o: &Obj) -> Option<String> {
    let m = &o.meta;
    let tagging = (!m.tags.is_empty()).then(|| {
        m.tags
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    });
    let out = client
        .put_object()
        .bucket(bucket)
        .key(&o.key)
        .body(ByteStream::from(o.body.clone()))
        .set_content_type(m.content_type.clone())
        .set_cache_control(m.cache_control.clone())
        .set_content_disposition(m.content_disposition.clone())
        .set_content_encoding(m.content_encoding.clone())
        .set_content_language(m.content_language.clone())
        .set_expires(o.expires.map(DateTime::from_secs))
        .set_metadata((!m.user.is_empty()).then(|| m.user.clone().into_iter().collect()))
        .set_tagging(tagging)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {bucket}/{}: {e:?}", o.key));
    out.version_id().map(str::to_string)
}

pub async fn get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> Fetched {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject {bucket}/{key} ({version:?}): {e:?}"));
    let mut meta = meta_of!(out);
    let etag = out.e_tag().unwrap_or_default().to_string();
    let version_id = out.version_id().map(str::to_string);
    let tag_count = out.tag_count().unwrap_or(0);
    let body = out
        .body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("GetObject {bucket}/{key} body: {e:?}"))
        .into_bytes();
    if tag_count > 0 {
        let tags = client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObjectTagging {bucket}/{key}: {e:?}"));
        meta.tags = tags
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        meta.tags.sort();
    }
    Fetched {
        body,
        etag,
        version: version_id,
        meta,
    }
}

/// User metadata with lower-case keys, as sealpipe keeps it.
pub fn lower_keys(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

/// Percent-encodes everything but unreserved characters (for `x-amz-tagging`).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every file under `root` (hidden ones included, directories not), as `/`-separated
/// paths relative to `root`. A missing `root` has none.
pub fn tree_files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

/// The files under `root` whose name contains `.sealpipe-` (staging files).
pub fn staging_files(root: &Path) -> Vec<String> {
    tree_files(root)
        .into_iter()
        .filter(|p| p.rsplit('/').next().unwrap_or(p).contains(".sealpipe-"))
        .collect()
}

/// Rows of a completion report: bucket,key,version_id,status,error_code,message.
pub fn completion_rows(path: &Path) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("completion report {}: {e}", path.display()))
        .records()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!(r.len(), 6, "completion report row {r:?}");
            r.iter().map(str::to_string).collect()
        })
        .collect()
}
