//! Arbitrary bytes through `stream::decrypt_with`, with the fixed data key, under both
//! commitment policies and both AES-GCM backends. It must never panic, and:
//! - a policy never accepts a suite it forbids;
//! - the reported plaintext length is what was written out;
//! - the `ring` and RustCrypto backends agree exactly (same header, plaintext or error);
//! - for a v2 (key-committing) message both policies agree exactly, and the strict
//!   policy accepts nothing else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpipe::CommitmentPolicy::{RequireEncryptAllowDecrypt, RequireEncryptRequireDecrypt};
use sealpipe::crypto::AeadBackend;
use sealpipe::format::Header;
use sealpipe::stream::{self, DecryptOptions};
use sealpipe_fuzz::materials_for;

type Outcome = Result<(Header, Vec<u8>), String>;

fn run(data: &[u8], options: &DecryptOptions) -> Outcome {
    let mut input = data;
    let mut out = Vec::new();
    match stream::decrypt_with(&mut input, &mut out, options, |h| Ok(materials_for(h))) {
        Ok((header, len)) => {
            assert!(
                header
                    .body
                    .suite
                    .known()
                    .is_some_and(|s| options.commitment_policy.allows_decrypt(&s)),
                "{} accepted suite {}",
                options.commitment_policy,
                header.body.suite
            );
            assert_eq!(len, out.len() as u64, "reported plaintext length");
            Ok((header, out))
        }
        Err(e) => Err(e.to_string()),
    }
}

fuzz_target!(|data: &[u8]| {
    let options = |commitment_policy, aead| DecryptOptions {
        commitment_policy,
        aead,
        ..Default::default()
    };
    let strict = run(
        data,
        &options(RequireEncryptRequireDecrypt, AeadBackend::Ring),
    );
    let lenient = run(
        data,
        &options(RequireEncryptAllowDecrypt, AeadBackend::Ring),
    );
    let lenient_rc = run(
        data,
        &options(RequireEncryptAllowDecrypt, AeadBackend::RustCrypto),
    );
    assert_eq!(lenient, lenient_rc, "ring and RustCrypto disagree");
    // Only v2 headers carry committing suites (a v2 header with a v1 suite is malformed).
    if data.first() == Some(&0x02) {
        assert_eq!(strict, lenient, "policies disagree on a v2 message");
    } else {
        assert!(
            strict.is_err(),
            "the strict policy accepted a non-v2 message"
        );
    }
});
