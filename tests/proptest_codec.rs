//! Property tests for the message codec and the stream API.
//!
//! - `HeaderBody::encode` and `Header::decode` are inverse over all eleven suites,
//!   arbitrary encryption contexts, EDKs and frame lengths; every strict prefix of a
//!   valid header is `Truncated`.
//! - `EncryptionContext::serialize` and `deserialize` are inverse.
//! - Whole messages round-trip through `encrypt_to_vec`, the `EncryptingWriter` (random
//!   write sizes, random batch sizes), `EncryptingWriter::copy_from` and `encrypt_stream`
//!   (readers with short reads and `Interrupted` errors), and back through
//!   `decrypt_with`, also from a reader with short reads; with a fixed message ID the
//!   streaming writer produces exactly the bytes of `encrypt_to_vec`.
//! - Mutated, truncated, extended and random messages never panic the decryptor, and
//!   only an unchanged message decrypts (to the original plaintext).
//!
//! Case counts keep the whole file to about 10 s of CPU in debug mode (the whole-message
//! round trip is most of it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::Config as ProptestConfig;

use sealpipe::crypto::AeadBackend;
use sealpipe::format::{
    AlgorithmSuite, ContentType, DecodeError, DecodeLimits, EncryptedDataKey, EncryptionContext,
    Header, HeaderAuth, HeaderBody, HeaderSuite, IV_LEN, MAX_FRAME_LENGTH, MessageVersion, TAG_LEN,
};
use sealpipe::keys::{self, EncryptionMaterials, Keyring};
use sealpipe::stream::{self, DEFAULT_BATCH_BYTES, DecryptOptions, EncryptOptions};
use sealpipe::{CommitmentPolicy, Error};

const COMMIT: AlgorithmSuite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY;
const COMMIT_SIGN: AlgorithmSuite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384;

/// Failures are reported with the shrunk input; no regression files are written into
/// the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

// ---------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------

/// Any Unicode string, control characters and astral planes included.
fn unicode(max_chars: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max_chars).prop_map(|c| c.into_iter().collect())
}

fn context(max_pairs: usize) -> impl Strategy<Value = EncryptionContext> {
    prop::collection::btree_map(unicode(12), unicode(16), 0..=max_pairs)
        .prop_map(EncryptionContext::from)
}

/// A context a caller may pass to `encryption_materials`: no reserved keys.
fn caller_context() -> impl Strategy<Value = EncryptionContext> {
    context(8).prop_filter("reserved aws-crypto- key", |c| c.reserved_key().is_none())
}

fn edk() -> impl Strategy<Value = EncryptedDataKey> {
    (
        unicode(16),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..128),
    )
        .prop_map(
            |(provider_id, provider_info, ciphertext)| EncryptedDataKey {
                provider_id,
                provider_info,
                ciphertext,
            },
        )
}

fn content() -> impl Strategy<Value = (ContentType, u32)> {
    prop_oneof![
        1 => Just((ContentType::NonFramed, 0)),
        1 => select(vec![1, 2, 4096, MAX_FRAME_LENGTH - 1, MAX_FRAME_LENGTH])
            .prop_map(|l| (ContentType::Framed, l)),
        4 => (1..=MAX_FRAME_LENGTH).prop_map(|l| (ContentType::Framed, l)),
    ]
}

/// Mostly the eleven suites; sometimes an ID no build knows, which the format layer must
/// still decode and re-encode (policy refuses it later).
fn header_suite() -> impl Strategy<Value = HeaderSuite> {
    prop_oneof![
        4 => select(AlgorithmSuite::ALL.to_vec()).prop_map(HeaderSuite::from),
        1 => (
            any::<u16>().prop_filter("unknown", |id| AlgorithmSuite::from_id(*id).is_none()),
            select(vec![MessageVersion::V1, MessageVersion::V2]),
        )
            .prop_map(|(id, version)| HeaderSuite { id, version }),
    ]
}

fn header_body() -> impl Strategy<Value = HeaderBody> {
    header_suite()
        .prop_flat_map(|suite| {
            (
                Just(suite),
                prop::collection::vec(any::<u8>(), suite.version.message_id_len()),
                context(8),
                prop::collection::vec(edk(), 1..=4),
                content(),
                prop::collection::vec(any::<u8>(), suite.suite_data_len()),
            )
        })
        .prop_map(
            |(
                suite,
                message_id,
                context,
                encrypted_data_keys,
                (content_type, frame_length),
                suite_data,
            )| {
                HeaderBody {
                    suite,
                    message_id,
                    context,
                    encrypted_data_keys,
                    content_type,
                    frame_length,
                    suite_data,
                }
            },
        )
}

/// A header body with its authentication field; returns the expected decoded header and
/// the full serialized header.
fn header() -> impl Strategy<Value = (Header, Vec<u8>)> {
    (header_body(), any::<[u8; IV_LEN]>(), any::<[u8; TAG_LEN]>()).prop_map(|(body, iv, tag)| {
        let body_bytes = body.encode().expect("generated bodies are encodable");
        let auth = HeaderAuth {
            // v2 headers carry no IV: it decodes as the implicit zero IV.
            iv: match body.suite.version {
                MessageVersion::V1 => iv,
                MessageVersion::V2 => [0; IV_LEN],
            },
            tag,
        };
        let mut full = body_bytes.clone();
        auth.encode(body.suite.version, &mut full);
        (
            Header {
                body,
                body_bytes,
                auth,
            },
            full,
        )
    })
}

/// (plaintext length, frame length): small frames, exact multiples (and one off either
/// side), and anything up to 300 000 / 70 000. Frame counts stay below 5 000 so a debug
/// build keeps up.
fn sizes() -> impl Strategy<Value = (usize, u32)> {
    prop_oneof![
        3 => (0usize..=4096, 1u32..=64),
        3 => (1u32..=70_000)
            .prop_flat_map(|f| (Just(f), 0..=(300_000 / f as usize).min(40), -1i64..=1))
            .prop_map(|(f, n, d)| (((f as usize * n) as i64 + d).max(0) as usize, f)),
        2 => (0usize..=300_000, 1u32..=70_000),
    ]
    .prop_map(|(len, f)| (len, f.max((len / 5000) as u32)))
}

fn aead() -> impl Strategy<Value = AeadBackend> {
    select(vec![AeadBackend::Ring, AeadBackend::RustCrypto])
}

fn batch_bytes() -> impl Strategy<Value = usize> {
    prop_oneof![Just(DEFAULT_BATCH_BYTES), 1usize..=200_000]
}

/// Write sizes, used in a cycle: runs of tiny writes and frame-sized ones.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1usize..=16, 1usize..=100_000], 1..8)
}

// ---------------------------------------------------------------------------------
// Header codec
// ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn header_encode_then_decode_is_identity(
        (expected, full) in header(),
        trailing in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let limits = DecodeLimits::default();
        let (decoded, used) = Header::decode(&full, &limits).expect("valid header decodes");
        prop_assert_eq!(used, full.len());
        prop_assert_eq!(&decoded.body_bytes, &expected.body.encode().unwrap());
        prop_assert_eq!(&decoded, &expected);
        prop_assert_eq!(decoded.to_bytes(), full.clone());

        // Bytes after the header (the body) are not consumed.
        let mut longer = full.clone();
        longer.extend_from_slice(&trailing);
        let (again, used) = Header::decode(&longer, &limits).expect("header with a body decodes");
        prop_assert_eq!(used, full.len());
        prop_assert_eq!(&again, &expected);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Like rustls's codec tests: cut a valid encoding at every point.
    #[test]
    fn every_strict_prefix_of_a_header_is_truncated((_, full) in header()) {
        let limits = DecodeLimits::default();
        for n in 0..full.len() {
            match Header::decode(&full[..n], &limits) {
                Err(DecodeError::Truncated { needed }) => {
                    prop_assert!(
                        needed > n && needed <= full.len(),
                        "prefix {n}/{}: needed {needed}", full.len()
                    );
                }
                other => prop_assert!(false, "prefix {n}/{}: {other:?}", full.len()),
            }
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// A rewrap splices new encrypted data keys into the received header bytes: the same
    /// keys give the same bytes, and any others decode as the same header with those
    /// keys, every other field untouched.
    #[test]
    fn replacing_the_data_keys_changes_nothing_else(
        (header, _) in header(),
        replacement in prop::collection::vec(edk(), 1..4),
    ) {
        let limits = DecodeLimits::default();
        let same = header.body_with_encrypted_data_keys(&header.body.encrypted_data_keys);
        prop_assert_eq!(same.unwrap(), header.body_bytes.clone());
        let spliced = header.body_with_encrypted_data_keys(&replacement).unwrap();
        let mut full = spliced.clone();
        header.auth.encode(header.body.suite.version, &mut full);
        let (decoded, used) = Header::decode(&full, &limits).expect("a spliced header decodes");
        prop_assert_eq!(used, full.len());
        let mut expected = header.body.clone();
        expected.encrypted_data_keys = replacement;
        prop_assert_eq!(&decoded.body, &expected);
        prop_assert_eq!(decoded.body_bytes, spliced);
    }
}

// ---------------------------------------------------------------------------------
// Encryption context
// ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn context_serialize_then_deserialize_is_identity(ctx in context(24)) {
        let bytes = ctx.serialize().expect("small contexts serialize");
        let expected_len = if ctx.is_empty() {
            0
        } else {
            2 + ctx.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>()
        };
        prop_assert_eq!(bytes.len(), expected_len);
        prop_assert_eq!(&EncryptionContext::deserialize(&bytes).unwrap(), &ctx);
        // Every non-empty strict prefix, and any trailing byte, is rejected.
        for n in 1..bytes.len() {
            prop_assert!(EncryptionContext::deserialize(&bytes[..n]).is_err(), "prefix {}", n);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(EncryptionContext::deserialize(&longer).is_err());
    }

    /// Whatever `deserialize` accepts is a map that serializes to the same number of
    /// bytes and back to the same map (the accepted order need not be canonical).
    #[test]
    fn context_deserialize_of_arbitrary_bytes_is_consistent(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Shaped like a context: a small count, then short length-prefixed fields.
            (1u16..4, prop::collection::vec((0u8..4, prop::collection::vec(any::<u8>(), 0..4)), 0..8))
                .prop_map(|(count, fields)| {
                    let mut b = count.to_be_bytes().to_vec();
                    for (len, data) in fields {
                        b.extend_from_slice(&[0, len]);
                        b.extend_from_slice(&data);
                    }
                    b
                }),
        ]
    ) {
        if let Ok(ctx) = EncryptionContext::deserialize(&bytes) {
            let again = ctx.serialize().unwrap();
            prop_assert_eq!(again.len(), bytes.len());
            prop_assert_eq!(EncryptionContext::deserialize(&again).unwrap(), ctx);
        }
    }
}

// ---------------------------------------------------------------------------------
// Whole messages
// ---------------------------------------------------------------------------------

static KEYRING: LazyLock<Arc<dyn Keyring>> =
    LazyLock::new(|| common::raw_keyring("proptest", "wrapping-key", &[0x42; 32]));

fn decrypt_options(aead: AeadBackend) -> DecryptOptions {
    DecryptOptions {
        aead,
        ..Default::default()
    }
}

/// A reader that returns at most `sizes[i]` bytes per call, cycling through `sizes`,
/// and, when `interrupts` is set, fails every third call with `Interrupted` (which every
/// caller must retry).
struct ChunkedReader<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    interrupts: bool,
    i: usize,
}

impl<'a> ChunkedReader<'a> {
    fn new(data: &'a [u8], sizes: &'a [usize], interrupts: bool) -> Self {
        Self {
            data,
            sizes,
            interrupts,
            i: 0,
        }
    }
}

impl Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.i += 1;
        if self.interrupts && self.i.is_multiple_of(3) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = self.sizes[self.i % self.sizes.len()]
            .min(buf.len())
            .min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Decrypts `message` through `decrypt_with` from a reader that returns short reads, so
/// the header is parsed incrementally and frames arrive split at arbitrary points.
fn decrypt_chunked(
    message: &[u8],
    sizes: &[usize],
    options: &DecryptOptions,
) -> Result<(Header, Vec<u8>), Error> {
    let rt = common::runtime();
    let mut input = ChunkedReader::new(message, sizes, true);
    let mut out = Vec::new();
    let (header, len) = stream::decrypt_with(&mut input, &mut out, options, |h| {
        rt.block_on(keys::decryption_materials(
            KEYRING.as_ref(),
            &h.body,
            &Default::default(),
        ))
    })?;
    assert_eq!(
        len,
        out.len() as u64,
        "decrypt_with reports the plaintext length"
    );
    Ok((header, out))
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn messages_round_trip_through_every_encrypt_path(
        suite in select(vec![COMMIT, COMMIT_SIGN]),
        (len, frame_length) in sizes(),
        seed in any::<u64>(),
        ctx in caller_context(),
        message_id in any::<[u8; 32]>(),
        enc_aead in aead(),
        dec_aead in aead(),
        batch_bytes in batch_bytes(),
        writes in chunk_sizes(),
        reads in chunk_sizes(),
        interrupts in any::<bool>(),
    ) {
        let plaintext = common::pseudo_random(len, seed);
        let materials = common::materials(KEYRING.as_ref(), suite, ctx.clone());
        let options = EncryptOptions { frame_length, aead: enc_aead, batch_bytes };
        let dec = decrypt_options(dec_aead);
        let check = |message: &[u8], what: &str| -> Result<(), TestCaseError> {
            let (header, out) = common::decrypt(KEYRING.as_ref(), &Default::default(), &dec, message)
                .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
            prop_assert_eq!(header.body.suite, suite);
            prop_assert_eq!(header.body.frame_length, frame_length);
            for (k, v) in ctx.iter() {
                prop_assert_eq!(header.body.context.get(k), Some(v));
            }
            prop_assert!(out == plaintext, "{}: plaintext differs", what);
            Ok(())
        };

        // 1. In memory, random message ID.
        let mut whole = Vec::new();
        stream::encrypt_to_vec(&materials, &options, None, &plaintext, &mut whole).unwrap();
        check(&whole, "encrypt_to_vec")?;

        // 2. EncryptingWriter, written in chunks of cycling sizes.
        let mut w = stream::EncryptingWriter::with_message_id(Vec::new(), &materials, &options, Some(message_id)).unwrap();
        let mut rest = &plaintext[..];
        for size in writes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            w.write_all(chunk).unwrap();
            rest = tail;
        }
        let (streamed, summary) = w.finish().unwrap();
        prop_assert_eq!(summary.plaintext_bytes, len as u64);
        prop_assert_eq!(summary.message_bytes, streamed.len() as u64);
        check(&streamed, "EncryptingWriter::write")?;

        // 3. EncryptingWriter::copy_from a reader that returns short reads.
        let mut w = stream::EncryptingWriter::with_message_id(Vec::new(), &materials, &options, Some(message_id)).unwrap();
        let mut reader = ChunkedReader::new(&plaintext, &writes, interrupts);
        prop_assert_eq!(w.copy_from(&mut reader).unwrap(), len as u64);
        let (copied, _) = w.finish().unwrap();
        check(&copied, "EncryptingWriter::copy_from")?;

        // 4. encrypt_stream from the same kind of reader (random message ID).
        let mut reader = ChunkedReader::new(&plaintext, &writes, interrupts);
        let mut streamed_random = Vec::new();
        let summary = stream::encrypt_stream(&materials, &options, &mut reader, &mut streamed_random).unwrap();
        prop_assert_eq!(summary.plaintext_bytes, len as u64);
        prop_assert_eq!(summary.message_bytes, streamed_random.len() as u64);
        check(&streamed_random, "encrypt_stream")?;
        // Every path writes a message of the same length (signatures aside: DER varies).
        if suite == COMMIT {
            prop_assert_eq!(streamed_random.len(), whole.len());
        }

        // 5. The reader side with short reads: the header arrives in pieces.
        let (_, out) = decrypt_chunked(&whole, &reads, &dec)
            .map_err(|e| TestCaseError::fail(format!("decrypt from short reads: {e}")))?;
        prop_assert!(out == plaintext, "decrypt from short reads: plaintext differs");

        // For an unsigned suite the bytes depend only on the inputs: every path, with
        // the same message ID, writes the same message.
        if suite == COMMIT {
            let mut fixed = Vec::new();
            stream::encrypt_to_vec(&materials, &options, Some(message_id), &plaintext, &mut fixed).unwrap();
            prop_assert!(fixed == streamed, "EncryptingWriter::write differs from encrypt_to_vec");
            prop_assert!(fixed == copied, "EncryptingWriter::copy_from differs from encrypt_to_vec");
            prop_assert_eq!(fixed.len(), whole.len());
        }
    }
}

// ---------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------

/// A valid message and what it takes to decrypt it.
struct Sample {
    name: &'static str,
    message: Vec<u8>,
    plaintext: Vec<u8>,
    reproduced: EncryptionContext,
    policy: CommitmentPolicy,
}

static SAMPLES: LazyLock<Vec<Sample>> = LazyLock::new(|| {
    let rt = common::runtime();
    let keyring = KEYRING.as_ref();
    let ctx: EncryptionContext = [("purpose", "proptest"), ("ключ", "值")]
        .into_iter()
        .collect();
    let materials = |suite: AlgorithmSuite, ctx: &EncryptionContext, required: &[&str]| {
        rt.block_on(keys::encryption_materials(
            keyring,
            suite,
            ctx.clone(),
            required
                .iter()
                .map(|k| k.to_string())
                .collect::<BTreeSet<_>>(),
        ))
        .unwrap()
    };
    let v2 = |name, m: &EncryptionMaterials, frame_length, plaintext: Vec<u8>| Sample {
        name,
        message: common::encrypt(m, frame_length, &plaintext),
        plaintext,
        reproduced: EncryptionContext::new(),
        policy: CommitmentPolicy::RequireEncryptRequireDecrypt,
    };
    let v1 = |name, m: &EncryptionMaterials, ct, frame_length, plaintext: Vec<u8>| Sample {
        name,
        message: common::legacy::legacy_message(m, ct, frame_length, &plaintext),
        plaintext,
        reproduced: EncryptionContext::new(),
        policy: CommitmentPolicy::RequireEncryptAllowDecrypt,
    };
    let p = |len| common::pseudo_random(len, len as u64);
    let commit = materials(COMMIT, &ctx, &[]);
    let mut required = v2(
        "0478 authenticate-only context",
        &materials(COMMIT, &ctx, &["purpose"]),
        50,
        p(120),
    );
    required.reproduced = [("purpose", "proptest")].into_iter().collect();
    let suite = |id| AlgorithmSuite::from_id(id).unwrap();
    let samples = vec![
        v2(
            "0478 empty",
            &materials(COMMIT, &EncryptionContext::new(), &[]),
            64,
            Vec::new(),
        ),
        v2("0478 exact multiple", &commit, 100, p(1000)),
        v2("0478 ragged", &commit, 7, p(50)),
        required,
        v2(
            "0578 signed",
            &materials(COMMIT_SIGN, &ctx, &[]),
            128,
            p(300),
        ),
        v1(
            "0014 non-framed",
            &materials(suite(0x0014), &ctx, &[]),
            ContentType::NonFramed,
            0,
            p(100),
        ),
        v1(
            "0146 framed",
            &materials(suite(0x0146), &ctx, &[]),
            ContentType::Framed,
            16,
            p(40),
        ),
        v1(
            "0214 signed framed",
            &materials(suite(0x0214), &ctx, &[]),
            ContentType::Framed,
            32,
            p(64),
        ),
        v1(
            "0378 signed non-framed",
            &materials(suite(0x0378), &ctx, &[]),
            ContentType::NonFramed,
            0,
            p(20),
        ),
    ];
    for s in &samples {
        let options = DecryptOptions {
            commitment_policy: s.policy,
            ..Default::default()
        };
        let (_, out) = common::decrypt(keyring, &s.reproduced, &options, &s.message)
            .unwrap_or_else(|e| panic!("sample {} does not decrypt: {e}", s.name));
        assert_eq!(out, s.plaintext, "sample {}", s.name);
    }
    samples
});

#[derive(Clone, Debug)]
enum Mutation {
    SetByte(Index, u8),
    FlipBit(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Copies `len` bytes from one place over another (duplicated or reordered frames).
    Splice(Index, Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..24);
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => bytes().prop_map(Mutation::Extend),
        1 => (any::<Index>(), bytes()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..256).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(message: &mut Vec<u8>, m: &Mutation) {
    if message.is_empty() {
        if let Mutation::Extend(b) | Mutation::Insert(_, b) = m {
            message.extend_from_slice(b);
        }
        return;
    }
    let len = message.len();
    match m {
        Mutation::SetByte(i, b) => message[i.index(len)] = *b,
        Mutation::FlipBit(i, bit) => message[i.index(len)] ^= 1 << bit,
        Mutation::Truncate(i) => message.truncate(i.index(len)),
        Mutation::Extend(b) => message.extend_from_slice(b),
        Mutation::Insert(i, b) => {
            let at = i.index(len + 1);
            message.splice(at..at, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i.index(len);
            message.drain(at..(at + n).min(len));
        }
        Mutation::Splice(from, to, n) => {
            let from = from.index(len);
            let n = (*n).min(len - from);
            let piece = message[from..from + n].to_vec();
            let to = to.index(len);
            let end = (to + n).min(len);
            message.splice(to..end, piece);
        }
    }
}

fn decrypt_sample(
    sample: &Sample,
    policy: CommitmentPolicy,
    aead: AeadBackend,
    message: &[u8],
) -> Result<Vec<u8>, Error> {
    let options = DecryptOptions {
        commitment_policy: policy,
        aead,
        ..Default::default()
    };
    common::decrypt(KEYRING.as_ref(), &sample.reproduced, &options, message).map(|(h, out)| {
        assert!(
            h.body
                .suite
                .known()
                .is_some_and(|s| policy.allows_decrypt(&s)),
            "{policy} accepted suite {}",
            h.body.suite
        );
        out
    })
}

proptest! {
    #![proptest_config(config(2000))]

    /// Damaged messages never panic, and anything accepted is the original message and
    /// plaintext: every byte of a message is authenticated, so only a mutation that
    /// changed nothing may decrypt. (ECDSA's S value is malleable in principle, but a
    /// random mutation cannot produce n - s.)
    #[test]
    fn mutated_messages_fail_cleanly_or_decrypt_to_the_original(
        sample in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
        aead in aead(),
    ) {
        let sample = &SAMPLES[sample.index(SAMPLES.len())];
        let mut message = sample.message.clone();
        for m in &mutations {
            apply(&mut message, m);
        }
        for policy in [CommitmentPolicy::RequireEncryptRequireDecrypt, CommitmentPolicy::RequireEncryptAllowDecrypt] {
            let r = decrypt_sample(sample, policy, aead, &message);
            match r {
                Ok(out) => {
                    prop_assert!(
                        out == sample.plaintext,
                        "{} under {}: a mutated message decrypted to a different plaintext",
                        sample.name, policy
                    );
                    // Every byte is authenticated, so only a no-op mutation may pass.
                    prop_assert!(
                        message == sample.message,
                        "{} under {}: a changed message ({} bytes, was {}) was accepted",
                        sample.name, policy, message.len(), sample.message.len()
                    );
                }
                Err(e) => {
                    // The unmodified message must decrypt wherever its policy allows.
                    let expected_ok = policy == CommitmentPolicy::RequireEncryptAllowDecrypt
                        || sample.policy == CommitmentPolicy::RequireEncryptRequireDecrypt;
                    prop_assert!(
                        message != sample.message || !expected_ok,
                        "{}: the unmodified message failed under {}: {}", sample.name, policy, e
                    );
                }
            }
        }
    }

    /// Random bytes, alone or behind a real header (so the body parser runs with a
    /// recovered key), never panic.
    #[test]
    fn random_bytes_never_panic_the_decryptor(
        sample in any::<Index>(),
        prefix in select(vec!["none", "version", "header", "header+frame"]),
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        aead in aead(),
    ) {
        let sample = &SAMPLES[sample.index(SAMPLES.len())];
        let header_len = {
            let limits = DecodeLimits::default();
            Header::decode(&sample.message, &limits).unwrap().1
        };
        let mut message = match prefix {
            "none" => Vec::new(),
            "version" => sample.message[..3].to_vec(),
            "header" => sample.message[..header_len].to_vec(),
            _ => sample.message[..(header_len + 40).min(sample.message.len())].to_vec(),
        };
        message.extend_from_slice(&bytes);
        for policy in [CommitmentPolicy::RequireEncryptRequireDecrypt, CommitmentPolicy::RequireEncryptAllowDecrypt] {
            if let Ok(out) = decrypt_sample(sample, policy, aead, &message) {
                prop_assert!(out == sample.plaintext, "random bytes decrypted to a new plaintext");
            }
        }
    }
}

/// Every sample decrypts as is, and the default policy refuses the legacy ones.
#[test]
fn samples_decrypt_and_respect_the_commitment_policy() {
    let mut names = BTreeMap::new();
    for s in SAMPLES.iter() {
        let strict = decrypt_sample(
            s,
            CommitmentPolicy::RequireEncryptRequireDecrypt,
            AeadBackend::Ring,
            &s.message,
        );
        let lenient = decrypt_sample(
            s,
            CommitmentPolicy::RequireEncryptAllowDecrypt,
            AeadBackend::RustCrypto,
            &s.message,
        );
        assert_eq!(lenient.unwrap(), s.plaintext, "{}", s.name);
        match s.policy {
            CommitmentPolicy::RequireEncryptRequireDecrypt => {
                assert_eq!(strict.unwrap(), s.plaintext, "{}", s.name)
            }
            CommitmentPolicy::RequireEncryptAllowDecrypt => assert!(
                matches!(strict, Err(Error::CommitmentPolicy { .. })),
                "{}: {strict:?}",
                s.name
            ),
        }
        names.insert(s.name, s.message.len());
    }
    assert_eq!(names.len(), SAMPLES.len());
}
