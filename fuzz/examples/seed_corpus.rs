//! Writes seed corpora for both targets:
//! `cargo run --example seed_corpus -- [VECTORS_DIR] [COUNT]` (run from `fuzz/`).
//!
//! - `corpus/decrypt_message/`: valid messages under the fixed data key (every suite),
//!   plus COUNT (default 12) official Raw AES vectors from VECTORS_DIR (default
//!   `../../shared/esdk-vectors/raw-aes/ciphertexts`);
//! - `corpus/decode_header/`: the same files.
//!
//! `corpus/` is git-ignored: the vectors are copied at run time, never committed.

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args().skip(1);
    let vectors = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "../../shared/esdk-vectors/raw-aes/ciphertexts".into()),
    );
    let count: usize = args.next().map_or(12, |c| c.parse().expect("COUNT"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files = sealpipe_fuzz::seed_messages();
    // Every generated seed must decrypt under the fixed key, or it seeds nothing deep.
    let options = sealpipe::stream::DecryptOptions {
        commitment_policy: sealpipe::CommitmentPolicy::RequireEncryptAllowDecrypt,
        ..Default::default()
    };
    for (name, message) in &files {
        let (mut input, mut out) = (&message[..], Vec::new());
        sealpipe::stream::decrypt_with(&mut input, &mut out, &options, |h| {
            Ok(sealpipe_fuzz::materials_for(h))
        })
        .unwrap_or_else(|e| panic!("seed {name} does not decrypt: {e}"));
    }
    let mut names: Vec<_> = std::fs::read_dir(&vectors)
        .unwrap_or_else(|e| panic!("{}: {e}", vectors.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names.into_iter().take(count) {
        let name = format!("vector-{}", path.file_name().unwrap().to_string_lossy());
        files.push((name, std::fs::read(&path).unwrap()));
    }
    for target in ["decode_header", "decrypt_message"] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        println!("{}: {} seeds", dir.display(), files.len());
    }
}
