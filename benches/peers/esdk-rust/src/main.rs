//! esdk-rust-bench: throughput of the official Rust AWS Encryption SDK (`aws-esdk`) in
//! memory, with a raw AES-256 keyring, suite 0x0478 (AES_256_GCM_HKDF_SHA512_COMMIT_KEY)
//! and commitment policy RequireEncryptRequireDecrypt, for comparison with
//! `sealpipe bench`. No KMS, no network.
//!
//! ```text
//! esdk-rust-bench --size BYTES --count N --threads T [--frame-len BYTES] [--seconds S]
//!                 [--shared-client] [--json]
//! esdk-rust-bench encrypt IN OUT --key raw-aes:NAMESPACE:NAME:PATH [--frame-len BYTES]
//! esdk-rust-bench decrypt IN OUT --key raw-aes:NAMESPACE:NAME:PATH
//! ```
//!
//! A round is `count` messages per thread, every thread running at once; a figure is
//! the median round over at least five timed rounds and `--seconds`, after an untimed
//! warm-up round. Figures are given for 1 thread and, when `T` > 1, for `T` threads.
//! Each thread has its own ESDK client, keyring and single-threaded tokio runtime,
//! unless `--shared-client`: then all threads use clones of one client and one keyring
//! (the API allows it, but the keyring sits behind a mutex in the ESDK's runtime).
//!
//! Inputs are handed to the ESDK as owned `Blob`s, which the caller must build: those
//! copies are made before the clock starts, and outputs are dropped after it stops.
//! The round trip (decrypted == plaintext, suite 0x0478) is checked on the warm-up
//! round of every configuration, untimed.
//!
//! Each figure also has the process's CPU time (user + system, all threads, from
//! `/proc/self/stat` in 1/100 s ticks) over its timed rounds, divided by their number:
//! `cpu_sec_per_round`, to set beside `median_round_sec`.

use std::time::{Duration, Instant};

use aws_esdk::client::Client;
use aws_esdk::material_providers::client::Client as MplClient;
use aws_esdk::material_providers::types::keyring::KeyringRef;
use aws_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use aws_esdk::material_providers::types::{
    AesWrappingAlg, EsdkAlgorithmSuiteId, EsdkCommitmentPolicy,
};
use aws_esdk::types::aws_encryption_sdk_config::AwsEncryptionSdkConfig;
use aws_smithy_types::Blob;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SUITE: EsdkAlgorithmSuiteId = EsdkAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKey;
const MIN_ROUNDS: usize = 5;

/// One ESDK client and its raw AES keyring.
#[derive(Clone)]
struct Esdk {
    client: Client,
    keyring: KeyringRef,
    frame_len: i64,
}

impl Esdk {
    fn new(namespace: &str, name: &str, key: Vec<u8>, frame_len: i64) -> Result<Self> {
        let config = AwsEncryptionSdkConfig::builder()
            .commitment_policy(EsdkCommitmentPolicy::RequireEncryptRequireDecrypt)
            .build()?;
        let client = Client::from_conf(config)?;
        let mpl = MplClient::from_conf(MaterialProvidersConfig::builder().build()?)?;
        let keyring = block_on(
            mpl.create_raw_aes_keyring()
                .key_namespace(namespace)
                .key_name(name)
                .wrapping_key(key)
                .wrapping_alg(AesWrappingAlg::AlgAes256GcmIv12Tag16)
                .send(),
        )??;
        Ok(Self {
            client,
            keyring,
            frame_len,
        })
    }

    async fn encrypt(&self, plaintext: Blob) -> Result<Blob> {
        let out = self
            .client
            .encrypt()
            .plaintext(plaintext)
            .keyring(self.keyring.clone())
            .algorithm_suite_id(SUITE)
            .frame_length(self.frame_len)
            .send()
            .await?;
        Ok(out.ciphertext.ok_or("encrypt returned no ciphertext")?)
    }

    async fn decrypt(&self, ciphertext: Blob) -> Result<Blob> {
        let out = self
            .client
            .decrypt()
            .ciphertext(ciphertext)
            .keyring(self.keyring.clone())
            .send()
            .await?;
        if out.algorithm_suite_id != Some(SUITE) {
            return Err(
                format!("decrypted a message of suite {:?}", out.algorithm_suite_id).into(),
            );
        }
        Ok(out.plaintext.ok_or("decrypt returned no plaintext")?)
    }
}

/// Runs a future to completion on a fresh single-threaded runtime (the ESDK's futures
/// do not wait on I/O with a raw AES keyring).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(f))
}

#[derive(Clone, Copy)]
enum Op {
    Encrypt,
    Decrypt,
}

/// One thread's client and its messages of the last encrypt round.
struct Worker {
    esdk: Esdk,
    runtime: tokio::runtime::Runtime,
    plaintext: Blob,
    ciphertexts: Vec<Blob>,
}

/// Runs one round of `op` on every worker at once; returns its wall time. `check`
/// compares every decrypted message with the plaintext (after the clock stops).
fn round(workers: &mut [Worker], op: Op, count: usize, check: bool) -> Result<Duration> {
    // The owned inputs the API takes, built before the clock starts.
    let inputs: Vec<Vec<Blob>> = workers
        .iter()
        .map(|w| match op {
            Op::Encrypt => vec![w.plaintext.clone(); count],
            Op::Decrypt => w.ciphertexts.clone(),
        })
        .collect();
    let start = Instant::now();
    let outputs = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .zip(inputs)
            .map(|(w, inputs)| {
                s.spawn(move || {
                    w.runtime.block_on(async {
                        let mut out = Vec::with_capacity(inputs.len());
                        for input in inputs {
                            out.push(match op {
                                Op::Encrypt => w.esdk.encrypt(input).await?,
                                Op::Decrypt => w.esdk.decrypt(input).await?,
                            });
                        }
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let elapsed = start.elapsed();
    for (w, out) in workers.iter_mut().zip(outputs) {
        match op {
            Op::Encrypt => w.ciphertexts = out,
            Op::Decrypt if check => {
                if out.len() != count || out.iter().any(|p| p != &w.plaintext) {
                    return Err("round trip failed: decrypted != plaintext".into());
                }
            }
            Op::Decrypt => {}
        }
    }
    Ok(elapsed)
}

/// User + system CPU seconds of this process so far, all threads (Linux: fields 14
/// and 15 of /proc/self/stat, in USER_HZ = 100 ticks per second).
fn process_cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').ok_or("unreadable /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).ok_or("short /proc/self/stat")?.parse::<f64>()?)
    };
    // `rest` starts at field 3, so utime (14) and stime (15) are at 11 and 12.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// A figure: median round time, number of timed rounds, CPU seconds per round.
type Measured = (Duration, usize, f64);

/// Median round time of `op` over at least `MIN_ROUNDS` rounds and `seconds`.
fn measure(workers: &mut [Worker], op: Op, count: usize, seconds: f64) -> Result<Measured> {
    let start = Instant::now();
    let cpu0 = process_cpu_secs()?;
    let mut times = Vec::new();
    while times.len() < MIN_ROUNDS || start.elapsed().as_secs_f64() < seconds {
        times.push(round(workers, op, count, false)?);
    }
    let cpu = (process_cpu_secs()? - cpu0) / times.len() as f64;
    times.sort_unstable();
    Ok((times[times.len() / 2], times.len(), cpu))
}

struct Args {
    size: usize,
    count: usize,
    threads: usize,
    frame_len: i64,
    seconds: f64,
    shared: bool,
    json: bool,
}

struct Figure {
    threads: usize,
    encrypt: Measured,
    decrypt: Measured,
}

fn bench_threads(args: &Args, threads: usize) -> Result<Figure> {
    // A fixed wrapping key: its value does not change the work.
    let key = vec![0x42u8; 32];
    let make = || Esdk::new("sealpipe-bench", "bench", key.clone(), args.frame_len);
    let shared = if args.shared { Some(make()?) } else { None };
    // Never zero bytes, like `sealpipe bench`.
    let plaintext = Blob::new(vec![0x5Au8; args.size]);
    let mut workers = (0..threads)
        .map(|_| {
            Ok(Worker {
                esdk: match &shared {
                    Some(e) => e.clone(),
                    None => make()?,
                },
                runtime: tokio::runtime::Builder::new_current_thread().build()?,
                plaintext: plaintext.clone(),
                ciphertexts: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Warm-up rounds, and the untimed round-trip check.
    round(&mut workers, Op::Encrypt, args.count, false)?;
    round(&mut workers, Op::Decrypt, args.count, true)?;
    let encrypt = measure(&mut workers, Op::Encrypt, args.count, args.seconds)?;
    let decrypt = measure(&mut workers, Op::Decrypt, args.count, args.seconds)?;
    Ok(Figure {
        threads,
        encrypt,
        decrypt,
    })
}

fn rates(args: &Args, threads: usize, (median, _, _): Measured) -> (f64, f64) {
    let messages = (threads * args.count) as f64 / median.as_secs_f64();
    (messages * args.size as f64, messages)
}

fn report(args: &Args, figures: &[Figure]) {
    let clients = if args.shared { "shared" } else { "per-thread" };
    if args.json {
        let op = |f: &Figure, m: Measured| {
            let (bytes, messages) = rates(args, f.threads, m);
            format!(
                "{{\"bytes_per_sec\": {bytes:.0}, \"mb_per_sec\": {:.2}, \"mib_per_sec\": {:.2}, \
                 \"messages_per_sec\": {messages:.1}, \"median_round_sec\": {:.6}, \"rounds\": {}, \
                 \"cpu_sec_per_round\": {:.4}}}",
                bytes / 1e6,
                bytes / 1048576.0,
                m.0.as_secs_f64(),
                m.1,
                m.2
            )
        };
        let results: Vec<String> = figures
            .iter()
            .map(|f| {
                format!(
                    "    {{\"threads\": {}, \"encrypt\": {}, \"decrypt\": {}}}",
                    f.threads,
                    op(f, f.encrypt),
                    op(f, f.decrypt)
                )
            })
            .collect();
        println!(
            "{{\n  \"peer\": \"aws-esdk (Rust)\",\n  \"suite\": \"0x0478\",\n  \
             \"commitment_policy\": \"RequireEncryptRequireDecrypt\",\n  \
             \"keyring\": \"raw AES-256\",\n  \"clients\": \"{clients}\",\n  \
             \"message_size\": {},\n  \"messages_per_thread_per_round\": {},\n  \
             \"frame_length\": {},\n  \"results\": [\n{}\n  ]\n}}",
            args.size,
            args.count,
            args.frame_len,
            results.join(",\n")
        );
    } else {
        println!(
            "aws-esdk (Rust), suite 0x0478, raw AES-256 keyring, {clients} clients, \
             {} x {} bytes per thread per round, frame {}",
            args.count, args.size, args.frame_len
        );
        for f in figures {
            for (name, m) in [("encrypt", f.encrypt), ("decrypt", f.decrypt)] {
                let (bytes, messages) = rates(args, f.threads, m);
                println!(
                    "  {} thread(s) {name}: {:8.1} MB/s {:8.1} MiB/s {:10.1} messages/s ({} rounds, \
                     {:.3} CPU-s per round)",
                    f.threads,
                    bytes / 1e6,
                    bytes / 1048576.0,
                    messages,
                    m.1,
                    m.2
                );
            }
        }
    }
}

/// `raw-aes:NAMESPACE:NAME:PATH`, as sealpipe spells a raw AES key.
fn parse_key(reference: &str) -> Result<(String, String, Vec<u8>)> {
    let mut parts = reference.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("raw-aes"), Some(ns), Some(name), Some(path)) => {
            let key = std::fs::read(path)?;
            if key.len() != 32 {
                return Err(format!("{path}: {} bytes, not 32", key.len()).into());
            }
            Ok((ns.into(), name.into(), key))
        }
        _ => Err(format!("not raw-aes:NAMESPACE:NAME:PATH: {reference}").into()),
    }
}

/// `encrypt|decrypt IN OUT --key raw-aes:NS:NAME:PATH [--frame-len BYTES]`.
fn file_command(op: &str, rest: &[String]) -> Result<()> {
    let (mut paths, mut key, mut frame_len) = (Vec::new(), None, 65536i64);
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--key" => key = it.next().cloned(),
            "--frame-len" => frame_len = it.next().ok_or("--frame-len needs a value")?.parse()?,
            _ => paths.push(a.clone()),
        }
    }
    let [input, output] = &paths[..] else {
        return Err(
            format!("usage: esdk-rust-bench {op} IN OUT --key raw-aes:NS:NAME:PATH").into(),
        );
    };
    let (ns, name, key) = parse_key(&key.ok_or("--key is required")?)?;
    let esdk = Esdk::new(&ns, &name, key, frame_len)?;
    let data = Blob::new(std::fs::read(input)?);
    let out = match op {
        "encrypt" => block_on(esdk.encrypt(data))??,
        _ => block_on(esdk.decrypt(data))??,
    };
    std::fs::write(output, out.into_inner())?;
    Ok(())
}

const USAGE: &str =
    "usage: esdk-rust-bench --size BYTES --count N --threads T [--frame-len BYTES] \
[--seconds S] [--shared-client] [--json]
       esdk-rust-bench encrypt|decrypt IN OUT --key raw-aes:NAMESPACE:NAME:PATH [--frame-len BYTES]
  --count is messages per thread per round; figures are for 1 thread and for T threads.";

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(op @ ("encrypt" | "decrypt")) = argv.first().map(String::as_str) {
        return file_command(op, &argv[1..]);
    }
    let mut args = Args {
        size: 64 << 20,
        count: 1,
        threads: std::thread::available_parallelism()?.get(),
        frame_len: 65536,
        seconds: 2.0,
        shared: false,
        json: false,
    };
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--size" => args.size = value()?.parse()?,
            "--count" => args.count = value()?.parse()?,
            "--threads" => args.threads = value()?.parse()?,
            "--frame-len" => args.frame_len = value()?.parse()?,
            "--seconds" => args.seconds = value()?.parse()?,
            "--shared-client" => args.shared = true,
            "--json" => args.json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unknown argument {a}\n{USAGE}").into()),
        }
    }
    if args.size == 0 || args.count == 0 || args.threads == 0 {
        return Err(format!("--size, --count and --threads must be at least 1\n{USAGE}").into());
    }
    let mut figures = vec![bench_threads(&args, 1)?];
    if args.threads > 1 {
        figures.push(bench_threads(&args, args.threads)?);
    }
    report(&args, &figures);
    Ok(())
}
