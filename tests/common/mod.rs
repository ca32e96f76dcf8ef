//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod counting_proxy;
pub mod faults;
pub mod iam;
pub mod lambda;
pub mod legacy;
pub mod moto;
pub mod world;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sealpipe::Error;
use sealpipe::format::{AlgorithmSuite, EncryptionContext, Header};
use sealpipe::keys::{self, EncryptionMaterials, Keyring, RawAesKeyring};
use sealpipe::stream::{self, DecryptOptions, EncryptOptions};

/// The official ESDK vectors: `$SEALPIPE_VECTORS`, or `../shared/esdk-vectors` beside the
/// project. A missing directory fails the test with instructions: never a silent skip.
pub fn vectors_dir() -> PathBuf {
    let dir = std::env::var_os("SEALPIPE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/esdk-vectors")
        });
    assert!(
        dir.join("raw-aes/decrypt-manifest.json").is_file(),
        "ESDK test vectors not found at {}: check out the shared/ directory beside the \
         project, or set SEALPIPE_VECTORS to a copy of esdk-vectors/",
        dir.display()
    );
    dir
}

/// A program from the project's test virtualenv (`$SEALPIPE_TEST_PYTHON`'s directory,
/// or `.venv-test/bin`). A missing one fails the test and says how to install it.
pub fn venv_tool(name: &str) -> PathBuf {
    let bin = std::env::var_os("SEALPIPE_TEST_PYTHON")
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin"));
    let tool = bin.join(name);
    assert!(
        tool.is_file(),
        "{name} not found at {}: run scripts/setup-venv.sh (scripts/test.sh does it for you), \
         which installs the pinned aws-encryption-sdk, aws-encryption-sdk-cli and moto[server] \
         into .venv-test/",
        tool.display()
    );
    tool
}

/// Runs `script` with the test venv's Python and `args`, `stdin` written to it (from
/// another thread, so neither pipe can fill and stall the other); returns its stdout.
/// A failure panics with `what` and Python's stderr.
pub fn venv_python(what: &str, script: &str, args: &[&std::path::Path], stdin: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(venv_tool("python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start Python: {e}"));
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("Python printed UTF-8")
}

/// `program` run in `dir` (also its HOME) with nothing from the caller's environment but
/// PATH, test credentials, us-east-1, and every AWS endpoint at `endpoint` (a moto
/// server or a fault proxy in front of one).
pub fn aws_command(
    program: &std::path::Path,
    dir: &std::path::Path,
    endpoint: &str,
) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint);
    c
}

/// Waits for `child` up to `timeout`; if it is still running then, kills it (and reaps
/// it) and returns `None`.
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `child`'s piped stderr to its end.
pub fn read_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut err)
        .expect("read the child's stderr");
    err
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

pub fn raw_keyring(namespace: &str, name: &str, key: &[u8]) -> Arc<dyn Keyring> {
    Arc::new(RawAesKeyring::new(namespace, name, key.to_vec().into()).unwrap())
}

pub fn materials(
    keyring: &dyn Keyring,
    suite: AlgorithmSuite,
    ctx: EncryptionContext,
) -> EncryptionMaterials {
    runtime()
        .block_on(keys::encryption_materials(
            keyring,
            suite,
            ctx,
            Default::default(),
        ))
        .unwrap()
}

/// Decrypts a whole message in memory with `keyring`.
pub fn decrypt(
    keyring: &dyn Keyring,
    reproduced: &EncryptionContext,
    options: &DecryptOptions,
    message: &[u8],
) -> Result<(Header, Vec<u8>), Error> {
    let rt = runtime();
    let mut out = Vec::new();
    let mut input = message;
    let (header, _) = stream::decrypt_with(&mut input, &mut out, options, |h| {
        rt.block_on(keys::decryption_materials(keyring, &h.body, reproduced))
    })?;
    Ok((header, out))
}

pub fn encrypt(materials: &EncryptionMaterials, frame_length: u32, plaintext: &[u8]) -> Vec<u8> {
    let options = EncryptOptions {
        frame_length,
        ..Default::default()
    };
    let mut out = Vec::new();
    stream::encrypt_to_vec(materials, &options, None, plaintext, &mut out).unwrap();
    out
}

/// Deterministic pseudo-random bytes (xorshift, 8 bytes per step), for reproducible
/// inputs; fast enough for hundreds of MiB in a debug build.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    write_pseudo_random(&mut out, len as u64, seed).expect("writing to a Vec");
    out
}

/// Writes `len` pseudo-random bytes (as [`pseudo_random`]) to `out`, a MiB at a time.
pub fn write_pseudo_random(
    out: &mut impl std::io::Write,
    len: u64,
    seed: u64,
) -> std::io::Result<()> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        for word in chunk[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (Python's `cryptography`,
/// from the test venv): `(cert.pem, key.pem)` written into `dir`.
pub fn self_signed_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let script = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
cert_path, key_path = sys.argv[1:3]
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
open(cert_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(key_path, "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    venv_python("make a test certificate", script, &[&cert, &key], b"");
    (cert, key)
}
