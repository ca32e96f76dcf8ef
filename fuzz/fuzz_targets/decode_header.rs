//! `Header::decode` on arbitrary bytes with the default limits. It must never panic, and
//! whenever it succeeds:
//! - the header occupies a prefix of the input, and `body_bytes` / `to_bytes()` are
//!   exactly the bytes received;
//! - decoding just those bytes gives the same header;
//! - re-encoding `header.body` gives `header.body_bytes` again, and decodes to the same
//!   body.
//!
//! One difference is tolerated by default: `EncryptionContext::deserialize` accepts
//! pairs in any order while `serialize` writes them sorted, so a header whose pairs are
//! out of order re-encodes with them sorted (the README's finding 1). Everything else
//! must still be byte-identical. Build with `--features strict-context-order` to treat
//! that as a failure too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpipe::format::{DecodeLimits, Header, MessageVersion};

/// Offset of the context's `u16` length in a header body.
fn context_offset(version: MessageVersion) -> usize {
    match version {
        // version, type, suite ID, message ID
        MessageVersion::V1 => 1 + 1 + 2 + 16,
        // version, suite ID, message ID
        MessageVersion::V2 => 1 + 2 + 32,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits::default();
    let Ok((header, used)) = Header::decode(data, &limits) else {
        return;
    };
    let version = header.body.suite.version;
    assert!(used <= data.len());
    assert_eq!(
        header.to_bytes(),
        &data[..used],
        "to_bytes is not the input"
    );
    assert_eq!(
        Header::decode(&data[..used], &limits),
        Ok((header.clone(), used)),
        "the header alone decodes differently"
    );

    let encoded = header
        .body
        .encode()
        .expect("a decoded header body re-encodes");
    if encoded != header.body_bytes {
        let at = context_offset(version) + 2;
        let raw = &header.body_bytes[at..];
        let len = u16::from_be_bytes([header.body_bytes[at - 2], header.body_bytes[at - 1]]);
        let raw = &raw[..len as usize];
        let canonical = header.body.context.serialize().expect("decoded context");
        if cfg!(feature = "strict-context-order") {
            panic!(
                "re-encoded header body differs from the bytes received\n\
                 received context:   {raw:02x?}\nre-encoded context: {canonical:02x?}"
            );
        }
        assert_eq!(
            canonical.len(),
            raw.len(),
            "context re-encodes to a new length"
        );
        let mut expected = header.body_bytes.clone();
        expected[at..at + raw.len()].copy_from_slice(&canonical);
        assert_eq!(
            encoded, expected,
            "re-encoded header body differs beyond the order of context pairs"
        );
    }
    let mut full = encoded;
    header.auth.encode(version, &mut full);
    let (again, n) = Header::decode(&full, &limits).expect("the re-encoding decodes");
    assert_eq!(n, full.len());
    assert_eq!(
        again.body, header.body,
        "the re-encoding decodes differently"
    );
    assert_eq!(again.auth, header.auth);
});
