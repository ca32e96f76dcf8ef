//! Hostile objects in an S3 source (issue #8): beside 20 good sealpipe messages, a
//! bucket holds truncated messages (inside the header, inside a frame, before and
//! inside the footer of a signed 0x0578 message), a message for another key, garbage,
//! a zero-byte object, headers claiming 65,535 data keys or fields of nearly u16::MAX
//! bytes, authenticated headers claiming 2 GiB frames, an invalid 4 GiB frame length
//! and 2 and 5 GiB non-framed bodies inside about 1 KiB, a tampered frame, a tampered
//! header tag, an unauthenticated non-framed claim, trailing bytes, and two
//! multipart-sized messages that fail only at their end (a tampered last frame, a bad
//! signature).
//!
//! `decrypt` to S3, `decrypt` to a local directory and `verify` must each exit 1 with
//! every hostile object listed in `failures` with a specific reason, decrypt every good
//! object exactly, write nothing at all for a hostile object (no S3 object, no local
//! file, no `.sealpipe-*.partial`), stay under 300 MiB of peak RSS, and never panic.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use sealpipe::crypto::{AeadBackend, AeadKey, derive_message_keys};
use sealpipe::format::{AlgorithmSuite, ContentType, EncryptionContext, Header, HeaderBody};
use sealpipe::keys::EncryptionMaterials;

use common::world::{self, MIB, Prng, Run, World};

const SUITE: AlgorithmSuite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY;
const SIGNED: AlgorithmSuite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384;
const FRAME: u32 = 4096;
const PEAK_RSS_LIMIT: u64 = 300 * 1024 * 1024;

/// The header of a message and its length in bytes (body bytes + tag).
fn header(message: &[u8]) -> (Header, usize) {
    let (h, _) = sealpipe::stream::read_header(&mut &message[..], &Default::default()).unwrap();
    let len = h.to_bytes().len();
    (h, len)
}

/// A header for `body` authenticated with the data key of `materials`, followed by
/// `rest`: a hostile message no header check can reject as tampered.
fn authenticated(materials: &EncryptionMaterials, body: &HeaderBody, rest: &[u8]) -> Vec<u8> {
    let keys = derive_message_keys(
        &body.suite.known().unwrap(),
        materials.data_key.as_ref().unwrap(),
        &body.message_id,
    );
    let mut body = body.clone();
    body.suite_data = keys.commitment.unwrap().to_vec();
    let mut out = body.encode().unwrap();
    let tag = AeadKey::new(AeadBackend::default(), &keys.content_key).seal_in_place(
        &[0u8; 12],
        &out.clone(),
        &mut [],
    );
    out.extend_from_slice(&tag);
    out.extend_from_slice(rest);
    out
}

/// The footer length of a signed message: sig_len(u16) || signature.
fn footer_len(message: &[u8]) -> usize {
    (60..=110)
        .find(|&l| {
            let at = message.len() - l - 2;
            u16::from_be_bytes([message[at], message[at + 1]]) as usize == l
        })
        .map(|l| l + 2)
        .expect("a DER ECDSA P-384 signature footer")
}

/// Hostile objects: key, bytes, and the error substrings one of which its failure
/// must contain.
fn hostile(w: &World, seed: u64) -> Vec<(String, Vec<u8>, &'static [&'static str])> {
    let ours = common::raw_keyring("ns", "k1", &w.key_bytes);
    let other = common::raw_keyring("ns", "other", &[7u8; 32]);
    let impostor = common::raw_keyring("ns", "k1", &[9u8; 32]);
    let ctx = EncryptionContext::new();
    let m = common::materials(ours.as_ref(), SUITE, ctx.clone());
    let plain = common::pseudo_random(5 * FRAME as usize + 123, seed);
    let good = common::encrypt(&m, FRAME, &plain);
    let (h, hlen) = header(&good);
    let signed_m = common::materials(ours.as_ref(), SIGNED, ctx.clone());
    let signed = common::encrypt(&signed_m, FRAME, &plain);
    let footer = footer_len(&signed);
    let body_len = h.body_bytes.len();
    // Empty context: version(1) suite(2) message ID(32) AAD length(2), then the count.
    assert_eq!(h.body.context, ctx);
    const EDK_COUNT: usize = 37;
    let content_type_at = body_len - 32 - 4 - 1;

    let mut out: Vec<(String, Vec<u8>, &'static [&'static str])> = Vec::new();
    let mut add = |key: &str, bytes: Vec<u8>, why: &'static [&'static str]| {
        out.push((format!("bad/{key}"), bytes, why));
    };
    const IN_HEADER: &[&str] = &["message is truncated: input ends inside the header"];
    const IN_FRAME_1: &[&str] = &["message is truncated: input ends inside frame 1"];
    add("trunc-in-header", good[..50].to_vec(), IN_HEADER);
    add("trunc-in-header-tag", good[..hlen - 5].to_vec(), IN_HEADER);
    add(
        "trunc-in-frame",
        good[..hlen + FRAME as usize / 2].to_vec(),
        IN_FRAME_1,
    );
    add(
        "trunc-in-final-frame",
        good[..good.len() - 10].to_vec(),
        &["message is truncated: input ends inside frame 6"],
    );
    add(
        "signed-without-footer",
        signed[..signed.len() - footer].to_vec(),
        &["message is truncated: input ends before the footer"],
    );
    add(
        "signed-trunc-in-footer",
        signed[..signed.len() - footer / 2].to_vec(),
        &["message is truncated: input ends inside the footer"],
    );
    add(
        "other-key",
        common::encrypt(
            &common::materials(other.as_ref(), SUITE, ctx.clone()),
            FRAME,
            &plain[..1000],
        ),
        &["no configured key can decrypt this message; it was encrypted for: ns/other"],
    );
    add(
        "same-name-other-bytes",
        common::encrypt(
            &common::materials(impostor.as_ref(), SUITE, ctx.clone()),
            FRAME,
            &plain[..1000],
        ),
        &["cannot unwrap the data key: authentication failed"],
    );
    add(
        "garbage",
        common::pseudo_random(4096, seed + 1),
        &["not an ESDK message: unknown version byte"],
    );
    add("zero-bytes", Vec::new(), IN_HEADER);
    let mut b = good[..1024].to_vec();
    b[EDK_COUNT..EDK_COUNT + 2].copy_from_slice(&[0xff, 0xff]);
    add(
        "edk-count-65535",
        b,
        &["message has 65535 encrypted data keys; the limit is"],
    );
    let mut b = good[..1024].to_vec();
    b[EDK_COUNT + 2..EDK_COUNT + 4].copy_from_slice(&[0xff, 0xfe]);
    add("provider-id-len-65534", b, IN_HEADER);
    let mut b = good[..1024].to_vec();
    b[35..37].copy_from_slice(&[0xff, 0xff]);
    add("aad-len-65535", b, IN_HEADER);
    // Authenticated headers with hostile frame claims, in about 1 KiB objects.
    let mut hb = h.body.clone();
    hb.frame_length = 0x7fff_ffff;
    let mut regular = 1u32.to_be_bytes().to_vec();
    regular.extend(common::pseudo_random(900, seed + 2));
    add(
        "frame-len-2g-regular-frame",
        authenticated(&m, &hb, &regular),
        IN_FRAME_1,
    );
    let mut last = vec![0xff; 4];
    last.extend(1u32.to_be_bytes());
    last.extend([0u8; 12]);
    last.extend(0x7fff_0000u32.to_be_bytes());
    last.extend(common::pseudo_random(900, seed + 3));
    add(
        "frame-len-2g-final-frame-claims-2g",
        authenticated(&m, &hb, &last),
        IN_FRAME_1,
    );
    hb.frame_length = 0xffff_fff0;
    add(
        "frame-len-4g",
        authenticated(&m, &hb, &regular),
        &["frame length 4294967280 exceeds the limit"],
    );
    let mut hb = h.body.clone();
    hb.content_type = ContentType::NonFramed;
    hb.frame_length = 0;
    let mut nonframed = vec![0u8; 11];
    nonframed.push(1);
    nonframed.extend((5u64 << 30).to_be_bytes());
    nonframed.extend(common::pseudo_random(900, seed + 4));
    add(
        "non-framed-claims-5g",
        authenticated(&m, &hb, &nonframed),
        &["5368709120 exceeds the limit"],
    );
    // Under the frame-length limit (2^31 - 1): the claim must not be allocated up front.
    let mut nonframed = vec![0u8; 11];
    nonframed.push(1);
    nonframed.extend(0x7fff_0000u64.to_be_bytes());
    nonframed.extend(common::pseudo_random(900, seed + 6));
    add(
        "non-framed-claims-2g",
        authenticated(&m, &hb, &nonframed),
        IN_FRAME_1,
    );
    let mut b = good.clone();
    b[hlen + 4 + 12 + 100] ^= 0x01;
    add("tampered-frame", b, &["frame 1 failed authentication"]);
    let mut b = good.clone();
    b[hlen - 3] ^= 0x80;
    add("tampered-header-tag", b, &["header authentication failed"]);
    let mut b = good.clone();
    b[content_type_at] = 0x01;
    add(
        "non-framed-claim-unauthenticated",
        b,
        &["non-framed content with a non-zero frame length"],
    );
    // Multipart-sized ones that fail only at their very end: after every part of the
    // output could have been written.
    let big = common::pseudo_random(12 * MIB + 5, seed + 5);
    let mut b = common::encrypt(&m, 65536, &big);
    let at = b.len() - 20;
    b[at] ^= 0x40;
    add(
        "big-tampered-last-frame",
        b,
        &["frame 193 failed authentication"],
    );
    let mut b = common::encrypt(&signed_m, 65536, &big[..7 * MIB]);
    let at = b.len() - 30;
    b[at] ^= 0x01;
    add(
        "big-signed-bad-signature",
        b,
        &["signature: footer signature does not verify"],
    );
    let mut b = good.clone();
    b.extend_from_slice(b"trailing");
    add(
        "trailing-bytes",
        b,
        &["unexpected data after the end of the message"],
    );
    out
}

/// Checks a run over the hostile bucket: exit 1, one failure per hostile object with
/// an expected reason, ok for every good one, counts that add up, sane memory.
fn check_run(
    run: &Run,
    what: &str,
    good: usize,
    bad: &BTreeMap<String, &'static [&'static str]>,
    problems: &mut Vec<String>,
) {
    assert_ne!(
        run.status.code(),
        Some(101),
        "{what}: sealpipe panicked\n{}",
        run.context()
    );
    if run.report.is_null() {
        problems.push(format!("{what}: no report\n{}", run.context()));
        return;
    }
    if run.status.code() != Some(1) {
        problems.push(format!("{what}: exit {:?}, expected 1", run.status.code()));
    }
    let [planned, ok, skipped, failed, conflicts] =
        ["planned", "ok", "skipped", "failed", "conflicts"].map(|n| run.objects(n));
    if planned != ok + skipped + failed + conflicts
        || planned != (good + bad.len()) as u64
        || ok != good as u64
        || failed != bad.len() as u64
    {
        problems.push(format!(
            "{what}: planned {planned} ok {ok} skipped {skipped} failed {failed} conflicts \
             {conflicts}; expected planned {} = ok {good} + failed {}",
            good + bad.len(),
            bad.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for f in run.failures() {
        let key = f["key"].as_str().unwrap_or_default().to_string();
        let error = f["error"].as_str().unwrap_or_default();
        let path = f["path"].as_str().unwrap_or_default();
        if path != format!("s3://hostile/{key}") {
            problems.push(format!("{what}: failure path {path:?} for key {key:?}"));
        }
        match bad.get(&key) {
            None => problems.push(format!("{what}: unexpected failure {f}")),
            Some(why) => {
                if !why.iter().any(|w| error.contains(w)) {
                    problems.push(format!(
                        "{what}: {key}: error {error:?} contains none of {why:?}"
                    ));
                }
                if !seen.insert(key.clone()) {
                    problems.push(format!("{what}: {key} listed twice in failures"));
                }
            }
        }
    }
    for key in bad.keys().filter(|k| !seen.contains(*k)) {
        problems.push(format!("{what}: hostile {key} is not in failures"));
    }
    let rss = run.num("peak_rss_bytes");
    if rss > PEAK_RSS_LIMIT {
        problems.push(format!("{what}: peak RSS {rss} bytes > {PEAK_RSS_LIMIT}"));
    }
}

#[test]
fn hostile_objects_fail_alone_and_leave_nothing() {
    let w = World::start("hostile");
    let seed = world::seed(0x4057_1e01);
    w.log(&format!(
        "seed {seed:#x} (replay with SEALPIPE_TEST_SEED={seed:#x})"
    ));
    for b in ["hostile", "out"] {
        w.create_bucket(b);
    }
    let ours = common::raw_keyring("ns", "k1", &w.key_bytes);
    let mut rng = Prng::new(seed);
    let good: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            let size = match i {
                0 => 0,
                1 => FRAME as usize,
                _ => rng.range(1, 40 * 1024) as usize,
            };
            (
                format!("good/{i:02}.bin"),
                common::pseudo_random(size, seed ^ (i as u64) << 8),
            )
        })
        .collect();
    let mut objects: Vec<(String, Bytes)> = good
        .iter()
        .enumerate()
        .map(|(i, (k, plain))| {
            let suite = if i % 4 == 3 { SIGNED } else { SUITE };
            let m = common::materials(ours.as_ref(), suite, EncryptionContext::new());
            (k.clone(), Bytes::from(common::encrypt(&m, FRAME, plain)))
        })
        .collect();
    let bad_objects = hostile(&w, seed);
    let bad: BTreeMap<String, &'static [&'static str]> = bad_objects
        .iter()
        .map(|(k, _, why)| (k.clone(), *why))
        .collect();
    objects.extend(bad_objects.into_iter().map(|(k, b, _)| (k, Bytes::from(b))));
    w.put_all("hostile", &objects);
    let good_keys: BTreeSet<String> = good.iter().map(|(k, _)| k.clone()).collect();
    w.log(&format!(
        "uploaded {} good and {} hostile objects",
        good.len(),
        bad.len()
    ));

    let mut problems = Vec::new();
    let to_s3 = w.run(&["decrypt", "s3://hostile", "s3://out", "--key", &w.key, "-q"]);
    check_run(&to_s3, "decrypt to S3", good.len(), &bad, &mut problems);
    let written = w.keys("out");
    if written != good_keys {
        let extra: Vec<_> = written.difference(&good_keys).collect();
        let missing: Vec<_> = good_keys.difference(&written).collect();
        problems.push(format!(
            "decrypt to S3 wrote other keys than the good ones: extra {extra:?}, missing \
             {missing:?}"
        ));
    }
    let uploads = w.uploads("out");
    if !uploads.is_empty() {
        problems.push(format!("decrypt to S3 left uploads open: {uploads:?}"));
    }
    let restored = w.get_all("out", &written.iter().cloned().collect::<Vec<_>>());
    for (k, plain) in &good {
        if restored.get(k).is_some_and(|f| f.body[..] != plain[..]) {
            problems.push(format!("s3://out/{k} differs from its plaintext"));
        }
    }

    let to_local = w.run(&["decrypt", "s3://hostile", "local", "--key", &w.key, "-q"]);
    check_run(
        &to_local,
        "decrypt to local",
        good.len(),
        &bad,
        &mut problems,
    );
    let files = world::tree_files(&w.path("local"));
    if files != good_keys {
        let extra: Vec<_> = files.difference(&good_keys).collect();
        let missing: Vec<_> = good_keys.difference(&files).collect();
        problems.push(format!(
            "decrypt to local wrote other files than the good ones (staging files \
             included): extra {extra:?}, missing {missing:?}"
        ));
    }
    for (k, plain) in &good {
        if std::fs::read(w.path("local").join(k)).is_ok_and(|b| b != *plain) {
            problems.push(format!("local/{k} differs from its plaintext"));
        }
    }

    let verify = w.run(&["verify", "s3://hostile", "--key", &w.key, "-q"]);
    check_run(&verify, "verify", good.len(), &bad, &mut problems);

    for (what, run) in [
        ("decrypt to S3", &to_s3),
        ("decrypt to local", &to_local),
        ("verify", &verify),
    ] {
        w.log(&format!(
            "{what}: exit {:?}, peak RSS {} MiB",
            run.status.code(),
            run.report["peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
        ));
    }
    for f in verify.failures() {
        w.log(&format!("verify failure: {} -> {}", f["key"], f["error"]));
    }
    assert!(
        problems.is_empty(),
        "{} problems (seed {seed:#x}):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}
