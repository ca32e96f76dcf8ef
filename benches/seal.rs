//! Criterion benchmarks: AES-GCM on one core (the ceiling), whole messages sealed on
//! all cores, 64 MiB and 64 KiB, and the per-message cost of 4 KiB messages on one core. After criterion's own report, prints for each message
//! size the ratio of message sealing to the ceiling (single core x cores), as computed
//! by `sealpipe::bench` (the same code `sealpipe bench` runs), with the figures that
//! explain it (parallel ceiling, copy bandwidth, per-CPU-second rates).
//!
//! Run with `cargo bench --bench seal` (about a minute and a half once built).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use sealpipe::bench::{BenchConfig, bench_materials, seal_throughput};
use sealpipe::crypto::{AeadBackend, AeadKey};
use sealpipe::format::{AlgorithmSuite, BodyAad, ContentKind, frame_iv};
use sealpipe::stream::{self, EncryptOptions};

const FRAME: usize = 64 * 1024;

/// The ceiling loop: one 64 KiB frame sealed in place, over and over, on one core.
fn aead_single_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead_single_core");
    group
        .throughput(Throughput::Bytes(FRAME as u64))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for backend in [AeadBackend::Ring, AeadBackend::RustCrypto] {
        let key = AeadKey::new(backend, &[7u8; 32]);
        let mut frame = vec![0x5Au8; FRAME];
        let message_id = [1u8; 32];
        let mut seq = 0u32;
        group.bench_function(backend.to_string(), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1).max(1);
                let aad = BodyAad::new(&message_id, ContentKind::Frame, seq, FRAME as u64);
                black_box(key.seal_in_place(&frame_iv(seq), aad.as_bytes(), &mut frame))
            })
        });
    }
    group.finish();
}

/// Whole messages with `stream::encrypt_to_vec` on the global pool (all cores), `ring`.
fn seal_message(c: &mut Criterion) {
    let materials = bench_materials(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY).unwrap();
    let options = EncryptOptions::default();
    let mut group = c.benchmark_group("seal_message");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    // One 64 MiB message (frames in parallel), or 1024 messages of 64 KiB (messages in
    // parallel, as the pipeline runs them): 64 MiB of plaintext per iteration either way.
    // Output buffers are reused, so after the warm-up no page is faulted in.
    for (name, size, count) in [("64MiB", 64 << 20, 1usize), ("64KiB", 64 << 10, 1024)] {
        let plaintexts: Vec<Vec<u8>> = (0..count).map(|i| vec![(i as u8) | 0x5A; size]).collect();
        let mut outs = vec![Vec::new(); count];
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                outs.par_iter_mut()
                    .zip(plaintexts.par_iter())
                    .for_each(|(out, p)| {
                        stream::encrypt_to_vec(&materials, &options, None, p, out).unwrap()
                    })
            })
        });
    }
    group.finish();
}

/// The per-message cost: 4 KiB messages sealed one after another on one thread from one
/// materials value, as a pooled data key serves them. At this size the header (its
/// encoding, the key derivation, the header tag) is a large share of the work.
fn seal_small_messages(c: &mut Criterion) {
    let materials = bench_materials(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY).unwrap();
    let options = EncryptOptions::default();
    let plaintext = vec![0x5Au8; 4096];
    let mut out = Vec::new();
    let mut group = c.benchmark_group("seal_small_message");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("4KiB", |b| {
        b.iter(|| {
            stream::encrypt_to_vec(&materials, &options, None, &plaintext, &mut out).unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}

/// The explicit ratios, message sealing over the AES-GCM ceiling times the cores.
fn ratios(_: &mut Criterion) {
    // `cargo test --all-targets` runs benches once as a smoke test, without `--bench`:
    // the seconds-long measurement is for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let gib = |b: f64| b / f64::from(1u32 << 30);
    let mut summary = Vec::new();
    for (name, size) in [("64MiB", 64usize << 20), ("64KiB", 64 << 10)] {
        let config = BenchConfig {
            message_size: size,
            min_time: Duration::from_secs(2),
            ..Default::default()
        };
        match seal_throughput(&config) {
            Ok(r) => {
                println!("\n{r}");
                summary.push(format!(
                    "seal_ratio/{name}: {:.2} GiB/s / ({:.2} GiB/s x {} cores) = {:.1}%{}",
                    gib(r.seal_bytes_per_sec),
                    gib(r.single_core_ceiling_bytes_per_sec),
                    r.threads,
                    r.seal_ratio * 100.0,
                    r.seal_cpu_ratio
                        .map(|c| format!(" (per CPU-second: {:.1}%)", c * 100.0))
                        .unwrap_or_default()
                ));
            }
            Err(e) => eprintln!("bench {name} failed: {e}"),
        }
    }
    println!();
    for line in summary {
        println!("{line}");
    }
}

criterion_group!(
    benches,
    aead_single_core,
    seal_message,
    seal_small_messages,
    ratios
);
criterion_main!(benches);
