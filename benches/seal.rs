//! Criterion benchmarks: AES-GCM on one core (the ceiling) and whole messages sealed on
//! all cores, 64 MiB and 64 KiB. After criterion's own report, prints the ratio of
//! message sealing to the ceiling (single core x cores) and to the copy bandwidth, as
//! computed by `sealpipe::bench` (the same code `sealpipe bench` runs).
//!
//! Run with `cargo bench --bench seal`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use sealpipe::bench::{BenchConfig, bench_materials, seal_throughput};
use sealpipe::crypto::{AeadBackend, AeadKey};
use sealpipe::format::{AlgorithmSuite, BodyAad, ContentKind, frame_iv};
use sealpipe::stream::{self, EncryptOptions};

const FRAME: usize = 64 * 1024;

fn aead_single_core(c: &mut Criterion) {
    let mut group = c.benchmark_group("aead_single_core");
    group.throughput(Throughput::Bytes(FRAME as u64));
    for backend in [AeadBackend::Ring, AeadBackend::RustCrypto] {
        let key = AeadKey::new(backend, &[7u8; 32]);
        let mut frame = vec![0x5Au8; FRAME];
        let aad = BodyAad::new(&[1u8; 32], ContentKind::Frame, 1, FRAME as u64);
        group.bench_function(backend.to_string(), |b| {
            b.iter(|| black_box(key.seal_in_place(&frame_iv(1), aad.as_bytes(), &mut frame)))
        });
    }
    group.finish();
}

fn seal_message(c: &mut Criterion) {
    let materials = bench_materials(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY).unwrap();
    let options = EncryptOptions::default();
    let mut group = c.benchmark_group("seal_message");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    // One 64 MiB message (frames in parallel), or 1024 messages of 64 KiB (messages in
    // parallel, as the pipeline runs them): 64 MiB of plaintext per iteration either way.
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

fn ratios(_: &mut Criterion) {
    // `cargo test --all-targets` runs benches once as a smoke test, without `--bench`:
    // the seconds-long measurement is for `cargo bench` only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for size in [64usize << 20, 64 << 10] {
        let config = BenchConfig {
            message_size: size,
            min_time: Duration::from_secs(2),
            ..Default::default()
        };
        match seal_throughput(&config) {
            Ok(result) => println!("\n{result}"),
            Err(e) => eprintln!("bench failed: {e}"),
        }
    }
}

criterion_group!(benches, aead_single_core, seal_message, ratios);
criterion_main!(benches);
