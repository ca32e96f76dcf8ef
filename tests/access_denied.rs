//! Permission errors name the principal that was denied, against a moto server that
//! enforces IAM (see `common::iam`), through the `sealpipe` binary run as IAM users
//! whose policies lack one permission each.
//!
//! What moto 5.2.5 can and cannot show:
//! - It enforces identity (IAM user) policies for S3 and KMS, answering a denial with
//!   HTTP 403 `AccessDenied`, which is what these tests provoke.
//! - It does not evaluate KMS key policies beyond an explicit Deny for DescribeKey
//!   (moto/kms/policy_validator.py), nor bucket policies on authenticated calls, so the
//!   classic "role allowed by IAM but missing from the key policy" cannot be
//!   reproduced; the error text for it is the same path (real KMS answers
//!   `AccessDeniedException`, covered by tests/kms.rs through a fault proxy).
//! - `sts:GetCallerIdentity` is always allowed, as in AWS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use common::iam::IamMoto;

/// moto's account.
const ACCOUNT: &str = "123456789012";

/// Set-up helpers for the python scripts: boto3 clients on the server and `user()`,
/// which creates an IAM user with one inline policy and returns its access key.
const PRELUDE: &str = "
import json, os
import boto3
ENDPOINT = os.environ['ENDPOINT']
iam = boto3.client('iam', endpoint_url=ENDPOINT)
s3 = boto3.client('s3', endpoint_url=ENDPOINT)
kms = boto3.client('kms', endpoint_url=ENDPOINT)
def user(name, actions):
    iam.create_user(UserName=name)
    policy = {'Version': '2012-10-17', 'Statement': [
        {'Effect': 'Allow', 'Action': actions, 'Resource': '*'}]}
    iam.put_user_policy(UserName=name, PolicyName='p', PolicyDocument=json.dumps(policy))
    k = iam.create_access_key(UserName=name)['AccessKey']
    return [k['AccessKeyId'], k['SecretAccessKey']]
";

struct World {
    moto: IamMoto,
    dir: tempfile::TempDir,
    /// The set-up script's JSON output.
    setup: Value,
}

impl World {
    /// moto, then `script` (after [`PRELUDE`]; it must print one JSON value), then IAM
    /// enforcement on.
    fn start(script: &str) -> Self {
        let moto = IamMoto::start();
        let out = moto.python(&format!("{PRELUDE}{script}{}", IamMoto::ENFORCE_IAM));
        let setup = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("set-up printed {out:?}: {e}"));
        Self {
            moto,
            dir: tempfile::tempdir().unwrap(),
            setup,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn files(&self, dir: &str, n: usize) {
        let d = self.path(dir);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            std::fs::write(
                d.join(format!("{i:02}")),
                common::pseudo_random(100, i as u64),
            )
            .unwrap();
        }
    }

    /// Runs sealpipe with the access key of `user` (from the set-up's `users`).
    fn sealpipe_as(&self, user: &str, args: &[&str]) -> Output {
        let key = &self.setup["users"][user];
        common::aws_command(
            Path::new(env!("CARGO_BIN_EXE_sealpipe")),
            self.dir.path(),
            &self.moto.endpoint(),
        )
        .env("AWS_ACCESS_KEY_ID", key[0].as_str().unwrap())
        .env("AWS_SECRET_ACCESS_KEY", key[1].as_str().unwrap())
        .args(args)
        .output()
        .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn s3_access_denied_names_the_permission_the_object_and_the_caller_once() {
    let w = World::start(
        "
s3.create_bucket(Bucket='src')
s3.create_bucket(Bucket='dst')
for i in range(3):
    s3.put_object(Bucket='src', Key=f'in/{i}', Body=b'x' * (100 + i))
print(json.dumps({'users': {
    'reader': user('reader', ['s3:ListBucket', 's3:GetObject', 's3:GetObjectTagging',
                              's3:ListBucketMultipartUploads']),
}}))
",
    );
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    std::fs::write(w.path("wrapping.key"), key).unwrap();
    let raw_key = format!("raw-aes:ns:k1:{}", w.path("wrapping.key").display());
    // STS, IAM and KMS requests are all `POST /`; this run makes no KMS calls (raw AES
    // key) and S3 requests name the bucket, so new `POST /` lines are STS calls.
    let posts_before = w.moto.requests("POST / HTTP/1.1");
    // The same job as the reader, `extra` added.
    let encrypt = |extra: &[&str]| {
        let mut args = vec![
            "encrypt",
            "s3://src/in/",
            "s3://dst/out/",
            "--key",
            &raw_key,
        ];
        args.extend_from_slice(extra);
        w.sealpipe_as("reader", &args)
    };
    // A run that is not denied (a dry run lists and reads, which the reader may) asks
    // STS nothing.
    let o = encrypt(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        w.moto.requests("POST / HTTP/1.1"),
        posts_before,
        "no GetCallerIdentity without a denial"
    );
    let o = encrypt(&[]);
    let e = stderr(&o);
    // Reading and listing are allowed, writing is not: each object fails on its own.
    assert_eq!(o.status.code(), Some(1), "{e}");
    let caller = format!("caller: {}", user_arn("reader"));
    assert_contains(
        &e,
        &[
            "PutObject",
            "s3://dst/out/0",
            "AccessDenied",
            "s3:PutObject",
            "bucket policy",
            &caller,
        ],
    );
    assert!(
        e.matches(&caller).count() >= 3,
        "every failed object names the caller:\n{e}"
    );
    assert_eq!(
        w.moto.requests("POST / HTTP/1.1") - posts_before,
        1,
        "the caller is looked up once per process, however many denials"
    );
    // Nothing was written (asked as the reader: moto's default user has no IAM
    // identity once IAM is enforced).
    let reader = &w.setup["users"]["reader"];
    let listed = w.moto.python(&format!(
        "{PRELUDE}
s3 = boto3.client('s3', endpoint_url=ENDPOINT, aws_access_key_id='{}',
                  aws_secret_access_key='{}')
print(s3.list_objects_v2(Bucket='dst').get('KeyCount'))",
        reader[0].as_str().unwrap(),
        reader[1].as_str().unwrap()
    ));
    assert_eq!(listed.trim(), "0");
}

#[test]
fn kms_access_denied_names_the_action_the_key_and_the_caller() {
    let w = World::start(
        "
key = kms.create_key()['KeyMetadata']['Arn']
print(json.dumps({'key': key, 'users': {
    'nokms': user('nokms', ['s3:ListAllMyBuckets']),
    'sealer': user('sealer', ['kms:GenerateDataKey', 'kms:Encrypt']),
}}))
",
    );
    let key = w.setup["key"].as_str().unwrap().to_string();
    w.files("src", 3);

    // No KMS permission at all: the job's first data key is refused before any object,
    // so it cannot start: exit 2, no output.
    let o = w.sealpipe_as("nokms", &["encrypt", "src", "enc", "--key", &key]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert_contains(
        &e,
        &[
            &key,
            "GenerateDataKey",
            "kms:GenerateDataKey",
            "key policy",
            "IAM policy",
            &format!("caller: {}", user_arn("nokms")),
        ],
    );
    assert!(!w.path("enc").exists());

    // Allowed to encrypt, not to decrypt: each object fails on its own, exit 1, and
    // each names the caller.
    let o = w.sealpipe_as("sealer", &["encrypt", "src", "enc", "--key", &key, "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w.sealpipe_as("sealer", &["decrypt", "enc", "dec", "--key", &key]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    let caller = format!("caller: {}", user_arn("sealer"));
    assert_contains(&e, &["Decrypt", "kms:Decrypt", &key, &caller]);
    assert!(
        e.matches(&caller).count() >= 3,
        "every failed object names the caller:\n{e}"
    );
    assert!(std::fs::read_dir(w.path("dec")).map_or(0, |d| d.count()) == 0);
}

/// Without `s3:ListBucket` on the destination, the listing a resuming job reads
/// alongside the source's is refused; the job then asks about each output with a HEAD
/// as it would otherwise, and a re-run still finds its finished work.
#[test]
fn a_destination_that_cannot_be_listed_falls_back_to_asking_about_each_output() {
    let w = World::start(
        "
s3.create_bucket(Bucket='src')
s3.create_bucket(Bucket='dst')
for i in range(5):
    s3.put_object(Bucket='src', Key=f'in/{i}', Body=b'x' * (100 + i))
iam.create_user(UserName='nolist')
policy = {'Version': '2012-10-17', 'Statement': [
    {'Effect': 'Allow', 'Action': ['s3:GetObject', 's3:PutObject', 's3:GetObjectTagging'],
     'Resource': '*'},
    {'Effect': 'Allow', 'Action': ['s3:ListBucket'], 'Resource': 'arn:aws:s3:::src'}]}
iam.put_user_policy(UserName='nolist', PolicyName='p', PolicyDocument=json.dumps(policy))
k = iam.create_access_key(UserName='nolist')['AccessKey']
print(json.dumps({'users': {'nolist': [k['AccessKeyId'], k['SecretAccessKey']]}}))
",
    );
    std::fs::write(w.path("wrapping.key"), [7u8; 32]).unwrap();
    let raw_key = format!("raw-aes:ns:k1:{}", w.path("wrapping.key").display());
    let report = w.path("report.json").display().to_string();
    let encrypt = [
        "encrypt",
        "s3://src/in/",
        "s3://dst/out/",
        "--key",
        &raw_key,
        "--report",
        &report,
        "-q",
    ];
    let first = w.sealpipe_as("nolist", &encrypt);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["objects"]["ok"], 5, "{json}");
    // A listing of each side (the destination's refused) and a HeadBucket of each
    // bucket, then a HEAD, a GET and a PUT per object: with the listing it would be
    // a GET and a PUT.
    assert_eq!(json["s3"]["requests"], 4 + 3 * 5, "{json}");
    let again = w.sealpipe_as("nolist", &encrypt);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["objects"]["skipped"], 5, "{json}");
    assert_eq!(json["objects"]["ok"], 0, "{json}");
}
