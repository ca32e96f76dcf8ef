//! `sealpipe rewrap` against a real S3 and KMS protocol server (moto), through the
//! binary: pooled data keys cost one KMS Decrypt and one Encrypt each whatever the
//! number of objects (dry runs count them without a KMS call); outputs decrypt with the
//! new key only, also with the official aws-encryption-cli; bodies are copied byte for
//! byte (a 300 MiB object by S3 itself, measured by a byte-counting proxy); signed
//! messages fail unless re-encrypted; killed runs finish on a re-run; in-place runs
//! resume without KMS calls; keys are kept and dropped; local trees; hostile objects
//! fail alone and leave nothing.
//!
//! Each test starts its own moto server, so tests run in parallel.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sealpipe::format::Header;

use common::cli::{KEY, OTHER, Workspace};
use common::counting_proxy::CountingProxy;
use common::world::{self, MIB, Obj, Prng, Run, World};

/// A world (moto with S3 and KMS, a scratch directory) with a KMS key in us-east-1 (the
/// old one) and one in eu-west-1 (the new one).
struct Rw {
    s3: World,
    old: String,
    new: String,
}

impl Rw {
    fn start(name: &'static str) -> Self {
        let s3 = World::start(name);
        let old = s3.create_kms_key_in("us-east-1");
        let new = s3.create_kms_key_in("eu-west-1");
        assert!(old.contains(":us-east-1:"), "{old}");
        assert!(new.contains(":eu-west-1:"), "{new}");
        Self { s3, old, new }
    }

    /// `sealpipe rewrap` with `args`, to the end, with a report.
    fn rewrap(&self, args: &[&str]) -> Run {
        let mut all = vec!["rewrap", "--allow-header-nonce-reuse"];
        all.extend_from_slice(args);
        self.s3.run(&all)
    }

    /// `sealpipe verify SRC --key KEY` (plus `extra`), to the end.
    fn verify(&self, src: &str, key: &str, extra: &[&str]) -> Run {
        let mut all = vec!["verify", src, "--key", key, "-q"];
        all.extend_from_slice(extra);
        self.s3.run(&all)
    }
}

/// `count` files `d{i % 8}/f{i:04}.bin` under `root` of 0 to `max` pseudo-random bytes;
/// their relative paths and contents.
fn write_tree(root: &Path, count: usize, max: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Prng::new(seed);
    let mut files = BTreeMap::new();
    for i in 0..count {
        let name = format!("d{}/f{i:04}.bin", i % 8);
        let size = if i % 50 == 0 {
            0
        } else {
            rng.range(1, max) as usize
        };
        let data = common::pseudo_random(size, seed.wrapping_add(i as u64));
        let path = root.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        files.insert(name, data);
    }
    files
}

/// A pseudo-random file of `len` bytes at `path`, written a MiB at a time.
fn write_big_file(path: &Path, len: u64, seed: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    common::write_pseudo_random(&mut out, len, seed).unwrap();
    out.flush().unwrap();
}

/// A message's header and its length in bytes.
fn header(name: &str, bytes: &[u8]) -> (Header, usize) {
    let (h, _) = sealpipe::stream::read_header(&mut &bytes[..], &Default::default())
        .unwrap_or_else(|e| panic!("{name} is not a message: {e}"));
    let len = h.to_bytes().len();
    (h, len)
}

/// The keys that wrap a message's data key: KMS key ARNs, raw AES `namespace/name`.
fn wrapped_by(h: &Header) -> BTreeSet<String> {
    h.body
        .encrypted_data_keys
        .iter()
        .map(sealpipe::keys::wrapping_key_name)
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Asserts that `new` is the message `old` rewrapped: wrapped by exactly `keys`, every
/// other header field the same (message ID, suite, context, frame length, key
/// commitment), and the body after the header the same bytes.
fn assert_rewrapped(name: &str, old: &[u8], new: &[u8], keys: &[&str]) {
    let (ho, old_len) = header(name, old);
    let (hn, new_len) = header(name, new);
    assert_eq!(wrapped_by(&hn), set(keys), "{name}: wrapping keys");
    let mut expected = ho.body.clone();
    expected.encrypted_data_keys = hn.body.encrypted_data_keys.clone();
    assert_eq!(
        hn.body, expected,
        "{name}: only the encrypted data keys may change"
    );
    assert_eq!(
        old.len() - old_len,
        new.len() - new_len,
        "{name}: body lengths"
    );
    assert!(
        old[old_len..] == new[new_len..],
        "{name}: the body bytes after the header differ"
    );
}

/// Completion report rows by key: (status, error code, message).
fn rows_by_key(path: &Path) -> BTreeMap<String, (String, String, String)> {
    world::completion_rows(path)
        .into_iter()
        .map(|r| (r[1].clone(), (r[3].clone(), r[4].clone(), r[5].clone())))
        .collect()
}

/// The official aws-encryption-cli from the test virtualenv, in the world's directory,
/// every AWS endpoint at moto, requiring key commitment, without metadata output.
fn encryption_cli(s3: &World, args: &[&str]) -> Output {
    common::aws_command(
        &common::venv_tool("aws-encryption-cli"),
        s3.dir.path(),
        &s3.moto.endpoint(),
    )
    .args(args)
    .args([
        "--commitment-policy",
        "require-encrypt-require-decrypt",
        "-S",
    ])
    .output()
    .expect("run aws-encryption-cli")
}

fn cli_ok(s3: &World, args: &[&str]) {
    let o = encryption_cli(s3, args);
    assert!(
        o.status.success(),
        "aws-encryption-cli {args:?}: exit {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn kms_calls(run: &Run) -> [u64; 3] {
    ["GenerateDataKey", "Encrypt", "Decrypt"].map(|c| run.num(&format!("kms/{c}")))
}

/// Bytes of every object of `bucket`, by key.
fn bodies(s3: &World, bucket: &str) -> BTreeMap<String, Bytes> {
    let keys: Vec<String> = s3.keys(bucket).into_iter().collect();
    s3.get_all(bucket, &keys)
        .into_iter()
        .map(|(k, f)| (k, f.body))
        .collect()
}

/// The first bytes of an object (a ranged GET): enough for its header.
fn object_head(s3: &World, bucket: &str, key: &str, len: u64) -> Bytes {
    s3.rt.block_on(async {
        s3.client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes=0-{}", len - 1))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {bucket}/{key}: {e:?}"))
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
    })
}

/// Asserts that `a` from byte `a_from` to its end and `b` from `b_from` to its end are
/// the same bytes, streaming both (two ranged GETs, compared chunk by chunk: neither is
/// held whole). Returns how many bytes were compared.
fn assert_same_tail(s3: &World, a: (&str, &str, u64), b: (&str, &str, u64)) -> u64 {
    async fn open(
        client: &aws_sdk_s3::Client,
        (bucket, key, from): (&str, &str, u64),
    ) -> aws_sdk_s3::primitives::ByteStream {
        client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={from}-"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetObject {bucket}/{key} from {from}: {e:?}"))
            .body
    }
    async fn refill(stream: &mut aws_sdk_s3::primitives::ByteStream, buf: &mut Bytes) {
        while buf.is_empty() {
            match stream.next().await {
                Some(chunk) => *buf = chunk.expect("read a body chunk"),
                None => return,
            }
        }
    }
    s3.rt.block_on(async {
        let (mut x, mut y) = (open(&s3.client, a).await, open(&s3.client, b).await);
        let (mut bx, mut by) = (Bytes::new(), Bytes::new());
        let mut offset = 0u64;
        loop {
            refill(&mut x, &mut bx).await;
            refill(&mut y, &mut by).await;
            if bx.is_empty() || by.is_empty() {
                assert!(
                    bx.is_empty() && by.is_empty(),
                    "{a:?} and {b:?}: one ends after {offset} bytes, the other does not"
                );
                return offset;
            }
            let n = bx.len().min(by.len());
            assert!(
                bx[..n] == by[..n],
                "{a:?} and {b:?} differ within bytes {offset}..{} of the body",
                offset + n as u64
            );
            bx = bx.slice(n..);
            by = by.slice(n..);
            offset += n as u64;
        }
    })
}

/// Every file under `root` with its contents.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    world::tree_files(root)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// 1-3. A thousand pooled messages and a few aws-encryption-cli ones: one KMS Decrypt
//      and one Encrypt per data key; outputs decrypt with the new key only, here and
//      with aws-encryption-cli; bodies byte for byte.
// ---------------------------------------------------------------------------------

/// Objects written by `sealpipe encrypt` in test 1, and how many share a data key.
const POOLED: usize = 1000;
const PER_DATA_KEY: usize = 300;

#[test]
fn pooled_and_cli_messages_rewrap_with_one_kms_call_pair_per_data_key() {
    let rw = Rw::start("pooled");
    let s3 = &rw.s3;
    s3.create_bucket("src");
    s3.create_bucket("dst");
    let plain = write_tree(&s3.path("plain"), POOLED, 3000, 1);
    let enc = s3.run(&[
        "encrypt",
        "plain",
        "s3://src/data/",
        "--key",
        &rw.old,
        "--cache-max-messages",
        &PER_DATA_KEY.to_string(),
        "--context",
        "team=data",
        "-q",
    ]);
    enc.assert_exit(0);
    enc.assert_objects(POOLED as u64, POOLED as u64, 0, 0, 0);
    // Each data key serves exactly PER_DATA_KEY messages; a successor fetched ahead may
    // go unused at the end, so the pool may have fetched one more than the messages use.
    let data_keys = POOLED.div_ceil(PER_DATA_KEY) as u64;
    let fetched = enc.num("data_keys");
    assert!(
        (data_keys..=data_keys + 1).contains(&fetched),
        "{fetched} data keys fetched for {POOLED} objects at {PER_DATA_KEY} per key\n{}",
        enc.context()
    );

    // A few messages from the official CLI (one data key each, unsigned suite, with a
    // context), uploaded beside them; one spans several frames.
    let cli_plain: BTreeMap<String, Vec<u8>> =
        [("one", 1usize), ("two", 10_000), ("three", 300_000)]
            .into_iter()
            .enumerate()
            .map(|(i, (n, size))| (n.to_string(), common::pseudo_random(size, 100 + i as u64)))
            .collect();
    std::fs::create_dir_all(s3.path("cli-plain")).unwrap();
    std::fs::create_dir_all(s3.path("cli-enc")).unwrap();
    for (name, data) in &cli_plain {
        std::fs::write(s3.path("cli-plain").join(name), data).unwrap();
    }
    let wrapping = format!("key={}", rw.old);
    cli_ok(
        s3,
        &[
            "--encrypt",
            "-r",
            "-i",
            "cli-plain",
            "-o",
            "cli-enc",
            "--suffix",
            "",
            "--wrapping-keys",
            &wrapping,
            "--algorithm",
            "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            "--encryption-context",
            "team=cli",
        ],
    );
    for name in cli_plain.keys() {
        let bytes = std::fs::read(s3.path("cli-enc").join(name)).unwrap();
        let (h, _) = header(name, &bytes);
        assert_eq!(h.body.suite.id, 0x0478, "{name}");
        s3.put("src", &Obj::plain(&format!("data/cli/{name}"), bytes));
    }
    let total = (POOLED + cli_plain.len()) as u64;
    let expected_keys = data_keys + cli_plain.len() as u64;
    let sources = bodies(s3, "src");
    assert_eq!(sources.len() as u64, total);
    // The report's count is what the messages say: distinct encrypted data keys.
    let in_messages: BTreeSet<Vec<u8>> = sources
        .iter()
        .map(|(k, b)| {
            header(k, b).0.body.encrypted_data_keys[0]
                .ciphertext
                .clone()
        })
        .collect();
    assert_eq!(in_messages.len() as u64, expected_keys);
    s3.log(&format!("{total} sources, {expected_keys} data keys"));

    let rewrap_args = [
        "s3://src/data/",
        "s3://dst/data/",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "-q",
    ];
    // Dry run: distinct data keys counted from the headers, no KMS call, no write.
    let mut dry_args = rewrap_args.to_vec();
    dry_args.push("--dry-run");
    let dry = rw.rewrap(&dry_args);
    dry.assert_exit(0);
    assert_eq!(
        dry.num("distinct_data_keys"),
        expected_keys,
        "{}",
        dry.context()
    );
    assert_eq!(kms_calls(&dry), [0, 0, 0], "{}", dry.context());
    assert_eq!(dry.objects("planned"), total, "{}", dry.context());
    assert_eq!(dry.objects("failed"), 0, "{}", dry.context());
    assert_eq!(dry.s3("bytes_sent"), 0, "{}", dry.context());
    assert_eq!(s3.keys("dst"), BTreeSet::new(), "a dry run wrote objects");
    assert_eq!(s3.uploads("dst"), Vec::new(), "a dry run started uploads");

    let mut run_args = rewrap_args.to_vec();
    run_args.extend(["--completion-report", "rewrap.csv"]);
    let run = rw.rewrap(&run_args);
    run.assert_exit(0);
    run.assert_objects(total, total, 0, 0, 0);
    let [generate, encrypt, decrypt] = kms_calls(&run);
    let distinct = run.num("distinct_data_keys");
    assert_eq!(
        [decrypt, encrypt, distinct],
        [expected_keys; 3],
        "KMS Decrypt, Encrypt and distinct data keys for {total} objects sharing \
         {expected_keys} data keys\n{}",
        run.context()
    );
    assert_eq!(generate, 0, "{}", run.context());
    s3.log(&format!(
        "rewrap of {total} objects: {decrypt} KMS Decrypt, {encrypt} Encrypt, {generate} \
         GenerateDataKey calls"
    ));
    let rows = world::completion_rows(&s3.path("rewrap.csv"));
    assert_eq!(rows.len() as u64, total);
    assert!(
        rows.iter().all(|r| r[0] == "src" && r[3] == "succeeded"),
        "{:?}",
        rows.iter().find(|r| r[3] != "succeeded")
    );

    // Every output is its source with one new encrypted data key, the new key's, and
    // the same body; the marker names the source and the new key.
    let outputs = bodies(s3, "dst");
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        sources.keys().collect::<Vec<_>>()
    );
    let etags = s3.list("src");
    let heads = s3.head_all("dst", &outputs.keys().cloned().collect::<Vec<_>>());
    for (key, out) in &outputs {
        assert_rewrapped(key, &sources[key], out, &[&rw.new]);
        let user = &heads[key].1.user;
        assert_eq!(
            user.get("sealpipe-source-etag").map(String::as_str),
            Some(etags[key].trim_matches('"')),
            "{key}: {user:?}"
        );
        assert_eq!(
            user.get("sealpipe-wrapping-keys"),
            Some(&rw.new),
            "{key}: {user:?}"
        );
    }
    s3.log("checked headers and bodies");

    // With only the new key, every output decrypts to its plaintext.
    let dec = s3.run(&[
        "decrypt",
        "s3://dst/data/",
        "restored",
        "--key",
        &rw.new,
        "-q",
    ]);
    dec.assert_exit(0);
    dec.assert_objects(total, total, 0, 0, 0);
    let mut expected_plain = plain.clone();
    for (name, data) in &cli_plain {
        expected_plain.insert(format!("cli/{name}"), data.clone());
    }
    let restored = read_tree(&s3.path("restored"));
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        expected_plain.keys().collect::<Vec<_>>()
    );
    for (name, data) in &expected_plain {
        assert!(restored[name] == *data, "restored/{name} differs");
    }
    // With only the old key, none does (and no KMS call is even tried).
    let old_only = rw.verify("s3://dst/data/", &rw.old, &[]);
    old_only.assert_exit(1);
    old_only.assert_objects(total, 0, total, 0, 0);
    assert_eq!(old_only.num("kms/Decrypt"), 0, "{}", old_only.context());
    let failures = old_only.report["failures"].as_array().unwrap();
    assert!(
        failures.iter().all(|f| f["error"]
            .as_str()
            .unwrap()
            .contains("no configured key can decrypt")),
        "{}",
        old_only.context()
    );

    // The official CLI decrypts a sample (every data key's first message and the CLI's
    // own messages) with only the new key, and not with only the old one.
    std::fs::create_dir_all(s3.path("sample")).unwrap();
    std::fs::create_dir_all(s3.path("sample-dec")).unwrap();
    let mut sample: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, name) in plain.keys().enumerate() {
        if i % PER_DATA_KEY == 0 || i == POOLED - 1 {
            sample.insert(
                format!("sp-{}", name.replace('/', "-")),
                plain[name].clone(),
            );
            std::fs::write(
                s3.path("sample")
                    .join(format!("sp-{}", name.replace('/', "-"))),
                &outputs[&format!("data/{name}")],
            )
            .unwrap();
        }
    }
    for (name, data) in &cli_plain {
        sample.insert(format!("cli-{name}"), data.clone());
        std::fs::write(
            s3.path("sample").join(format!("cli-{name}")),
            &outputs[&format!("data/cli/{name}")],
        )
        .unwrap();
    }
    let new_only = format!("key={}", rw.new);
    cli_ok(
        s3,
        &[
            "--decrypt",
            "-r",
            "-i",
            "sample",
            "-o",
            "sample-dec",
            "--suffix",
            "",
            "--wrapping-keys",
            &new_only,
        ],
    );
    assert_eq!(read_tree(&s3.path("sample-dec")), sample);
    let o = encryption_cli(
        s3,
        &[
            "--decrypt",
            "-i",
            "sample/cli-one",
            "-o",
            "old-key.out",
            "--wrapping-keys",
            &wrapping,
        ],
    );
    assert!(
        !o.status.success(),
        "aws-encryption-cli decrypted a rewrapped message with the old key"
    );
    assert!(!s3.path("old-key.out").exists());
    s3.log("done");
}

// ---------------------------------------------------------------------------------
// 4. A 300 MiB object is copied by S3: a few MiB through the client, measured outside
//    sealpipe by a byte-counting proxy.
// ---------------------------------------------------------------------------------

const BIG: u64 = 300 * MIB as u64;
/// Most bytes the rewrap of the big object may move through the client either way.
const THROUGH_CLIENT: u64 = 16 * MIB as u64;

#[test]
fn a_300_mib_object_is_copied_by_s3_not_through_the_client() {
    let rw = Rw::start("big");
    let s3 = &rw.s3;
    s3.create_bucket("src");
    s3.create_bucket("dst");
    write_big_file(&s3.path("big.bin"), BIG, 300);
    let enc = s3.run(&[
        "encrypt",
        "big.bin",
        "s3://src/big/object.bin",
        "--key",
        &rw.old,
        "-q",
    ]);
    enc.assert_exit(0);
    enc.assert_objects(1, 1, 0, 0, 0);
    std::fs::remove_file(s3.path("big.bin")).unwrap();
    let src_etag = s3.list("src")["big/object.bin"]
        .trim_matches('"')
        .to_string();

    let proxy = CountingProxy::start(s3.moto.port);
    let run = s3.run_via(
        &proxy.endpoint,
        &[
            "rewrap",
            "--allow-header-nonce-reuse",
            "s3://src/big/object.bin",
            "s3://dst/big/object.bin",
            "--old-key",
            &rw.old,
            "--key",
            &rw.new,
            "-q",
        ],
    );
    let traffic = proxy.traffic();
    drop(proxy);
    run.assert_exit(0);
    run.assert_objects(1, 1, 0, 0, 0);
    s3.log(&format!(
        "through the proxy: {} bytes received, {} sent, {} connections, {} requests; \
         report: {} received, {} sent, {} copied",
        traffic.received,
        traffic.sent,
        traffic.connections,
        traffic.requests.len(),
        run.s3("bytes_received"),
        run.s3("bytes_sent"),
        run.s3("bytes_copied"),
    ));
    assert!(
        traffic.received < THROUGH_CLIENT && traffic.sent < THROUGH_CLIENT,
        "{} bytes received, {} sent through the client for a {BIG}-byte object\n{}",
        traffic.received,
        traffic.sent,
        run.context()
    );

    let src_size = s3.head_all("src", &["big/object.bin".into()])["big/object.bin"].0;
    let dst_size = s3.head_all("dst", &["big/object.bin".into()])["big/object.bin"].0;
    // The report agrees with the proxy: what it says it received and sent is what went
    // through (the proxy also counts HTTP headers and KMS), and the rest was copied.
    let (received, sent, copied) = (
        run.s3("bytes_received"),
        run.s3("bytes_sent"),
        run.s3("bytes_copied"),
    );
    assert!(
        received <= traffic.received && traffic.received - received < MIB as u64,
        "report says {received} bytes received, the proxy saw {}",
        traffic.received
    );
    assert!(
        sent <= traffic.sent && traffic.sent - sent < MIB as u64,
        "report says {sent} bytes sent, the proxy saw {}",
        traffic.sent
    );
    assert_eq!(sent + copied, dst_size, "{}", run.context());
    assert!(copied > BIG - 8 * MIB as u64, "{}", run.context());

    // Each copied part is a range of the source, conditional on the ETag that was read;
    // together they are the source's body from where the first part stopped to its end.
    let if_match: Vec<&String> = traffic
        .copy_headers
        .iter()
        .filter(|h| h.starts_with("x-amz-copy-source-if-match:"))
        .collect();
    let mut ranges: Vec<(u64, u64)> = traffic
        .copy_headers
        .iter()
        .filter_map(|h| h.strip_prefix("x-amz-copy-source-range: bytes="))
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    ranges.sort();
    assert!(!ranges.is_empty(), "no UploadPartCopy: {traffic:?}");
    assert_eq!(if_match.len(), ranges.len(), "{:?}", traffic.copy_headers);
    for h in &if_match {
        assert_eq!(
            h.as_str(),
            format!("x-amz-copy-source-if-match: \"{src_etag}\""),
            "{:?}",
            traffic.copy_headers
        );
    }
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].1 + 1, pair[1].0, "ranges {ranges:?}");
    }
    assert_eq!(ranges.last().unwrap().1, src_size - 1, "ranges {ranges:?}");
    assert_eq!(
        ranges.iter().map(|(a, b)| b - a + 1).sum::<u64>(),
        copied,
        "ranges {ranges:?}"
    );

    // Same body after the new header; the header only changed its data keys.
    let src_head = object_head(s3, "src", "big/object.bin", 64 * 1024);
    let dst_head = object_head(s3, "dst", "big/object.bin", 64 * 1024);
    let (hs, src_len) = header("source", &src_head);
    let (hd, dst_len) = header("output", &dst_head);
    assert_eq!(wrapped_by(&hd), set(&[&rw.new]));
    let mut expected = hs.body.clone();
    expected.encrypted_data_keys = hd.body.encrypted_data_keys.clone();
    assert_eq!(hd.body, expected);
    assert_eq!(ranges[0].0, src_len as u64 + (sent - dst_len as u64));
    let compared = assert_same_tail(
        s3,
        ("src", "big/object.bin", src_len as u64),
        ("dst", "big/object.bin", dst_len as u64),
    );
    assert_eq!(compared, src_size - src_len as u64);
    s3.log(&format!("compared {compared} body bytes"));

    // Every frame authenticates with the new key alone; the old one opens nothing.
    let ok = rw.verify("s3://dst/big/object.bin", &rw.new, &[]);
    ok.assert_exit(0);
    ok.assert_objects(1, 1, 0, 0, 0);
    let old = rw.verify("s3://dst/big/object.bin", &rw.old, &[]);
    old.assert_exit(1);
    assert_eq!(s3.uploads("dst"), Vec::new());
    s3.log("done");
}

// ---------------------------------------------------------------------------------
// 5. Signed messages: refused (nothing written) unless re-encrypted.
// ---------------------------------------------------------------------------------

#[test]
fn signed_messages_fail_unless_reencrypt_signed() {
    let rw = Rw::start("signed");
    let s3 = &rw.s3;
    s3.create_bucket("src");
    s3.create_bucket("dst");
    let plaintext = common::pseudo_random(100_000, 5);
    std::fs::write(s3.path("msg.txt"), &plaintext).unwrap();
    let wrapping = format!("key={}", rw.old);
    // The CLI's default suite is the signed one, 0x0578.
    cli_ok(
        s3,
        &[
            "--encrypt",
            "-i",
            "msg.txt",
            "-o",
            "cli-signed",
            "--wrapping-keys",
            &wrapping,
            "--encryption-context",
            "team=cli",
        ],
    );
    let sp = |out: &str, suite: &str| {
        let r = s3.run(&[
            "encrypt",
            "msg.txt",
            out,
            "--key",
            &rw.old,
            "--suite",
            suite,
            "--context",
            "team=sp",
            "-q",
        ]);
        r.assert_exit(0);
    };
    sp("sp-signed", "0578");
    sp("sp-unsigned", "0478");
    for (name, suite) in [
        ("cli-signed", 0x0578),
        ("sp-signed", 0x0578),
        ("sp-unsigned", 0x0478),
    ] {
        let bytes = std::fs::read(s3.path(name)).unwrap();
        assert_eq!(header(name, &bytes).0.body.suite.id, suite, "{name}");
        s3.put("src", &Obj::plain(&format!("s/{name}"), bytes));
    }
    let signed = ["s/cli-signed", "s/sp-signed"];
    let base = [
        "s3://src/s/",
        "s3://dst/s/",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "-q",
    ];
    let with = |extra: &[&'static str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a
    };

    // The plan already names them.
    let dry = rw.rewrap(&with(&["--dry-run", "--completion-report", "dry.csv"]));
    let rows = rows_by_key(&s3.path("dry.csv"));
    for key in signed {
        assert_eq!(rows[key].1, "SignedMessage", "{key}: {:?}", rows[key]);
    }
    assert_eq!(dry.objects("failed"), 2, "{}", dry.context());
    assert_eq!(s3.keys("dst"), BTreeSet::new());

    let run = rw.rewrap(&with(&["--completion-report", "refused.csv"]));
    run.assert_exit(1);
    run.assert_objects(3, 1, 2, 0, 0);
    let rows = rows_by_key(&s3.path("refused.csv"));
    for key in signed {
        let (status, code, message) = &rows[key];
        assert_eq!(
            (status.as_str(), code.as_str()),
            ("failed", "SignedMessage"),
            "{key}: {message}"
        );
        assert!(message.contains("--reencrypt-signed"), "{key}: {message}");
    }
    assert_eq!(rows["s/sp-unsigned"].0, "succeeded");
    let failures = run.failures();
    assert_eq!(failures.len(), 2, "{}", run.context());
    for f in &failures {
        assert!(signed.contains(&f["key"].as_str().unwrap()), "{f}");
        assert!(
            f["error"]
                .as_str()
                .unwrap()
                .contains("signs the header in the footer"),
            "{f}"
        );
    }
    // Nothing was written for them, not even a started upload; the signed messages
    // cost no KMS call.
    assert_eq!(s3.keys("dst"), set(&["s/sp-unsigned"]));
    assert_eq!(s3.uploads("dst"), Vec::new());
    assert_eq!(kms_calls(&run), [0, 1, 1], "{}", run.context());

    // Re-encrypted on request: a fresh data key under the new key, suite 0478, the
    // context kept; the unsigned one is done already.
    let again = rw.rewrap(&with(&["--reencrypt-signed"]));
    again.assert_exit(0);
    again.assert_objects(3, 2, 0, 0, 1);
    assert_eq!(
        s3.keys("dst"),
        set(&["s/cli-signed", "s/sp-signed", "s/sp-unsigned"])
    );
    for (key, team) in [("s/cli-signed", "cli"), ("s/sp-signed", "sp")] {
        let out = s3.get("dst", key).body;
        let (h, _) = header(key, &out);
        assert_eq!(h.body.suite.id, 0x0478, "{key}");
        assert_eq!(wrapped_by(&h), set(&[&rw.new]), "{key}");
        assert_eq!(h.body.context.get("team"), Some(team), "{key}");
        assert!(
            h.body
                .context
                .iter()
                .all(|(k, _)| !k.starts_with("aws-crypto-")),
            "{key}: {:?}",
            h.body.context
        );
    }
    let dec = s3.run(&["decrypt", "s3://dst/s/", "dec", "--key", &rw.new, "-q"]);
    dec.assert_exit(0);
    dec.assert_objects(3, 3, 0, 0, 0);
    for name in ["cli-signed", "sp-signed", "sp-unsigned"] {
        assert!(
            std::fs::read(s3.path("dec").join(name)).unwrap() == plaintext,
            "{name}"
        );
    }
    let old = rw.verify("s3://dst/s/", &rw.old, &[]);
    old.assert_exit(1);
    old.assert_objects(3, 0, 3, 0, 0);
    // The official CLI reads the re-encrypted one with the new key.
    std::fs::write(s3.path("reencrypted"), s3.get("dst", "s/cli-signed").body).unwrap();
    cli_ok(
        s3,
        &[
            "--decrypt",
            "-i",
            "reencrypted",
            "-o",
            "reencrypted.out",
            "--wrapping-keys",
            &format!("key={}", rw.new),
        ],
    );
    assert!(std::fs::read(s3.path("reencrypted.out")).unwrap() == plaintext);
}

// ---------------------------------------------------------------------------------
// 6. SIGKILLed mid-run, re-run: everything done, nothing left open.
// ---------------------------------------------------------------------------------

#[test]
fn killed_rewraps_finish_on_a_rerun() {
    let rw = Rw::start("killed");
    let s3 = &rw.s3;
    s3.create_bucket("kill-src");
    s3.create_bucket("kill-dst");
    s3.enable_versioning("kill-dst");
    // Keys are listed in order: a large object first (S3 copies its body, so killed
    // runs may leave its multipart upload open), another after the small ones.
    let small = write_tree(&s3.path("plain"), 400, 8 * 1024, 61);
    std::fs::create_dir_all(s3.path("plain-big")).unwrap();
    write_big_file(&s3.path("plain-big/a-big.bin"), 24 * MIB as u64 + 5, 62);
    write_big_file(&s3.path("plain-big/z-big.bin"), 30 * MIB as u64 + 3, 63);
    for (src, dst) in [("plain", "s3://kill-src/"), ("plain-big", "s3://kill-src/")] {
        let enc = s3.run(&[
            "encrypt",
            src,
            dst,
            "--key",
            &rw.old,
            "--cache-max-messages",
            "100",
            "-q",
        ]);
        enc.assert_exit(0);
    }
    let n = (small.len() + 2) as u64;
    let sources = bodies(s3, "kill-src");
    assert_eq!(sources.len() as u64, n);

    let args = [
        "rewrap",
        "--allow-header-nonce-reuse",
        "s3://kill-src",
        "s3://kill-dst",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "--concurrency",
        "8",
        "-q",
    ];
    let seed = world::seed(0x5ea1_4a9e);
    let mut rng = Prng::new(seed);
    let mut interrupted = 0;
    // Kills at random moments (SEALPIPE_TEST_SEED replays others)...
    const KILLS: usize = 3;
    for attempt in 1..=KILLS {
        let delay = Duration::from_millis(rng.range(150, 2000));
        let outcome = s3.kill_after_status(&s3.moto.endpoint(), &args, delay);
        match &outcome {
            None => interrupted += 1,
            Some((status, stderr)) => {
                assert!(
                    status.success(),
                    "run {attempt} ended with {status}: {stderr}"
                )
            }
        }
        s3.log(&format!(
            "kill {attempt} after {delay:?} (seed {seed:#x}): {}; destination has {} of {n} \
             objects, {} multipart uploads open",
            if outcome.is_none() {
                "killed a running job"
            } else {
                "the job had already finished"
            },
            s3.keys("kill-dst").len(),
            s3.uploads("kill-dst").len()
        ));
    }
    // ...and one while a multipart upload is open for sure: the proxy holds back the
    // UploadPartCopy requests (the last large object's, which the runs above did not
    // reach), and sealpipe is killed while one is held.
    let proxy = CountingProxy::start(s3.moto.port);
    proxy.stall_copies(true);
    let (mut child, err) = s3.spawn_via(&proxy.endpoint, &args);
    let started = Instant::now();
    while proxy.stalled() == 0 || s3.uploads("kill-dst").is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the job ended ({status}) before a copy was held: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no copy was held within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(proxy);
    interrupted += 1;
    s3.log(&format!(
        "killed a job with a copy held: destination has {} of {n} objects, multipart \
         uploads open: {:?}",
        s3.keys("kill-dst").len(),
        s3.uploads("kill-dst")
    ));
    assert!(
        interrupted >= 2,
        "no random kill interrupted a running job (seed {seed:#x})"
    );
    let done_before = s3.keys("kill-dst").len() as u64;
    let stale = s3.uploads("kill-dst").len() as u64;
    assert!(stale >= 1, "the held copy's upload is open");

    let mut last_args = args.to_vec();
    last_args.extend(["--completion-report", "last.csv"]);
    let last = s3.run(&last_args);
    last.assert_exit(0);
    // What the killed runs finished is skipped (resumed), the rest done now.
    last.assert_objects(n, n - done_before, 0, 0, done_before);
    let rows = world::completion_rows(&s3.path("last.csv"));
    assert_eq!(
        rows.iter().filter(|r| r[3] == "skipped").count() as u64,
        done_before
    );
    assert!(
        last.s3("uploads_aborted") >= stale,
        "{stale} stale uploads before the last run\n{}",
        last.context()
    );
    assert_eq!(s3.uploads("kill-dst"), Vec::new(), "uploads left open");
    // Exactly once: one version per key.
    let (versions, delete_markers) = s3.versions("kill-dst");
    assert_eq!(delete_markers, 0);
    let twice: Vec<_> = versions.iter().filter(|(_, v)| v.len() != 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    assert_eq!(
        versions.keys().collect::<Vec<_>>(),
        sources.keys().collect::<Vec<_>>()
    );

    for (key, body) in &sources {
        if key.contains("big") {
            let (_, src_len) = header(key, body);
            let out_head = object_head(s3, "kill-dst", key, 64 * 1024);
            let (h, dst_len) = header(key, &out_head);
            assert_eq!(wrapped_by(&h), set(&[&rw.new]), "{key}");
            assert_same_tail(
                s3,
                ("kill-src", key, src_len as u64),
                ("kill-dst", key, dst_len as u64),
            );
        } else {
            assert_rewrapped(key, body, &s3.get("kill-dst", key).body, &[&rw.new]);
        }
    }
    let verify = rw.verify("s3://kill-dst", &rw.new, &[]);
    verify.assert_exit(0);
    verify.assert_objects(n, n, 0, 0, 0);
    s3.log(&format!(
        "done: {interrupted} of {} kills interrupted a job, {done_before} objects were \
         done before the last run, {stale} uploads were stale",
        KILLS + 1
    ));
}

// ---------------------------------------------------------------------------------
// 7. In place: keys added, dropped, moved; re-runs skip without KMS calls; the last
//    key is never dropped; manifests.
// ---------------------------------------------------------------------------------

#[test]
fn in_place_keys_are_added_dropped_and_moved_and_reruns_make_no_kms_call() {
    let rw = Rw::start("in-place");
    let s3 = &rw.s3;
    let (old, new) = (rw.old.as_str(), rw.new.as_str());
    s3.create_bucket("live");
    s3.create_bucket("picked");
    let mut plain = write_tree(&s3.path("plain"), 60, 8 * 1024, 71);
    let large = common::pseudo_random(20 * MIB, 72);
    std::fs::create_dir_all(s3.path("plain-large")).unwrap();
    std::fs::write(s3.path("plain-large/blob.bin"), &large).unwrap();
    plain.insert("large/blob.bin".into(), large);
    for (src, dst) in [("plain", "s3://live/"), ("plain-large", "s3://live/large/")] {
        let enc = s3.run(&[
            "encrypt",
            src,
            dst,
            "--key",
            old,
            "--cache-max-messages",
            "25",
            "-q",
        ]);
        enc.assert_exit(0);
    }
    let n = plain.len() as u64;
    let live = "s3://live";
    let original = bodies(s3, "live");
    assert_eq!(original.len() as u64, n);
    // Every object of the bucket is `original` rewrapped, wrapped by exactly `keys`.
    let check_all = |keys: &[&str]| {
        let now = bodies(s3, "live");
        assert_eq!(
            now.keys().collect::<Vec<_>>(),
            original.keys().collect::<Vec<_>>()
        );
        for (key, body) in &now {
            assert_rewrapped(key, &original[key], body, keys);
        }
        now
    };
    // A re-run of `args` finds everything done: all skipped, no KMS call, nothing
    // written.
    let rerun_skips_all = |args: &[&str]| {
        let before = s3.list("live");
        let again = rw.rewrap(args);
        again.assert_exit(0);
        again.assert_objects(n, 0, 0, 0, n);
        assert_eq!(kms_calls(&again), [0, 0, 0], "{}", again.context());
        assert_eq!(s3.list("live"), before, "a re-run rewrote objects");
    };

    // Add the new key beside the old one: either alone decrypts.
    let add = [
        live,
        "--in-place",
        "--old-key",
        old,
        "--key",
        new,
        "--keep-existing",
        "-q",
    ];
    let run = rw.rewrap(&add);
    run.assert_exit(0);
    run.assert_objects(n, n, 0, 0, 0);
    let both = check_all(&[old, new]);
    for (key, body) in &both {
        // The old encrypted data key is kept as it was.
        let kept = header(key, &original[key]).0.body.encrypted_data_keys[0].clone();
        assert!(
            header(key, body).0.body.encrypted_data_keys.contains(&kept),
            "{key}"
        );
    }
    for key in [old, new] {
        let v = rw.verify(live, key, &[]);
        v.assert_exit(0);
        v.assert_objects(n, n, 0, 0, 0);
    }
    rerun_skips_all(&add);

    // Drop the old one: only the new key is left, and no KMS Encrypt was needed.
    let drop_old = [
        live,
        "--in-place",
        "--old-key",
        new,
        "--drop-key",
        old,
        "-q",
    ];
    let run = rw.rewrap(&drop_old);
    run.assert_exit(0);
    run.assert_objects(n, n, 0, 0, 0);
    assert_eq!(run.num("kms/Encrypt"), 0, "{}", run.context());
    let new_only = check_all(&[new]);
    for (key, body) in &new_only {
        let kept = header(key, &both[key]).0.body.encrypted_data_keys;
        let now = header(key, body).0.body.encrypted_data_keys;
        assert!(kept.contains(&now[0]), "{key}: the new key's copy was kept");
    }
    let v = rw.verify(live, old, &[]);
    v.assert_exit(1);
    v.assert_objects(n, 0, n, 0, 0);
    rerun_skips_all(&drop_old);

    // Dropping the last key fails every object with NoKeyLeft and changes nothing.
    let before = s3.list("live");
    let last = rw.rewrap(&[
        live,
        "--in-place",
        "--old-key",
        new,
        "--drop-key",
        new,
        "--completion-report",
        "last-key.csv",
        "-q",
    ]);
    last.assert_exit(1);
    last.assert_objects(n, 0, n, 0, 0);
    let rows = world::completion_rows(&s3.path("last-key.csv"));
    assert_eq!(rows.len() as u64, n);
    assert!(
        rows.iter().all(|r| r[3] == "failed" && r[4] == "NoKeyLeft"),
        "{:?}",
        rows.iter().find(|r| r[4] != "NoKeyLeft")
    );
    assert_eq!(s3.list("live"), before, "NoKeyLeft changed objects");
    assert_eq!(s3.uploads("live"), Vec::new());

    // Move back to the old key in place: every object rewrapped, a re-run skips all.
    let move_back = [live, "--in-place", "--old-key", new, "--key", old, "-q"];
    let run = rw.rewrap(&move_back);
    run.assert_exit(0);
    run.assert_objects(n, n, 0, 0, 0);
    check_all(&[old]);
    rerun_skips_all(&move_back);
    let dec = s3.run(&["decrypt", live, "restored", "--key", old, "-q"]);
    dec.assert_exit(0);
    assert_eq!(read_tree(&s3.path("restored")), plain);

    // A manifest picks exactly the objects it names (the large one among them).
    let picked = [
        "d0/f0000.bin",
        "d3/f0011.bin",
        "d7/f0055.bin",
        "large/blob.bin",
    ];
    let manifest: String = picked.iter().map(|k| format!("live,{k}\n")).collect();
    std::fs::write(s3.path("picked.csv"), manifest).unwrap();
    let run = rw.rewrap(&[
        "--manifest",
        "picked.csv",
        "s3://picked/",
        "--old-key",
        old,
        "--key",
        new,
        "-q",
    ]);
    run.assert_exit(0);
    run.assert_objects(4, 4, 0, 0, 0);
    assert_eq!(s3.keys("picked"), set(&picked));
    for key in picked {
        assert_rewrapped(key, &original[key], &s3.get("picked", key).body, &[new]);
    }
    let v = rw.verify("s3://picked", new, &[]);
    v.assert_exit(0);
    v.assert_objects(4, 4, 0, 0, 0);
    s3.log("done");
}

// ---------------------------------------------------------------------------------
// 8. Local trees, raw AES keys.
// ---------------------------------------------------------------------------------

#[test]
fn local_trees_rewrap_with_raw_aes_keys() {
    let ws = Workspace::new();
    let mut plain = write_tree(&ws.path("plain"), 40, 20 * 1024, 81);
    let large = common::pseudo_random(12 * MIB + 7, 82);
    ws.write("plain/large/blob.bin", &large);
    plain.insert("large/blob.bin".into(), large);
    let n = plain.len() as u64;
    let o = ws.encrypt(
        "plain",
        "enc",
        &["--cache-max-messages", "10", "--report", "e.json", "-q"],
    );
    assert!(o.status.success(), "{}", common::cli::stderr(&o));
    // Ten messages a data key; one successor fetched ahead may go unused.
    let data_keys = n.div_ceil(10);
    let fetched = ws.report("e.json")["data_keys"].as_u64().unwrap();
    assert!((data_keys..=data_keys + 1).contains(&fetched), "{fetched}");
    let enc = read_tree(&ws.path("enc"));
    assert_eq!(enc.len() as u64, n);

    let o = ws.run(&[
        "rewrap",
        "--allow-header-nonce-reuse",
        "enc",
        "rw",
        "--old-key",
        KEY,
        "--key",
        OTHER,
        "--report",
        "r.json",
        "-q",
    ]);
    assert!(o.status.success(), "{}", common::cli::stderr(&o));
    let report = ws.report("r.json");
    assert_eq!(report["objects"]["ok"], n, "{report}");
    assert_eq!(report["distinct_data_keys"], data_keys, "{report}");
    assert_eq!(read_tree(&ws.path("enc")), enc, "the source tree changed");
    let rewrapped = read_tree(&ws.path("rw"));
    assert_eq!(
        rewrapped.keys().collect::<Vec<_>>(),
        enc.keys().collect::<Vec<_>>()
    );
    for (name, body) in &rewrapped {
        assert_rewrapped(name, &enc[name], body, &["tests/k2"]);
    }
    // Only the new key decrypts them.
    let o = ws.run(&["decrypt", "rw", "dec", "--key", OTHER, "-q"]);
    assert!(o.status.success(), "{}", common::cli::stderr(&o));
    assert_eq!(read_tree(&ws.path("dec")), plain);
    let o = ws.run(&["verify", "rw", "--key", KEY, "--report", "v.json", "-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", common::cli::stderr(&o));
    assert_eq!(ws.report("v.json")["objects"]["failed"], n);

    // Keeping the existing key: either alone decrypts.
    let o = ws.run(&[
        "rewrap",
        "--allow-header-nonce-reuse",
        "enc",
        "both",
        "--old-key",
        KEY,
        "--key",
        OTHER,
        "--keep-existing",
        "-q",
    ]);
    assert!(o.status.success(), "{}", common::cli::stderr(&o));
    for (name, body) in read_tree(&ws.path("both")) {
        assert_rewrapped(&name, &enc[&name], &body, &["tests/k1", "tests/k2"]);
    }
    for (key, out) in [(KEY, "both-k1"), (OTHER, "both-k2")] {
        let o = ws.run(&["decrypt", "both", out, "--key", key, "-q"]);
        assert!(o.status.success(), "{}", common::cli::stderr(&o));
        assert_eq!(read_tree(&ws.path(out)), plain, "{out}");
    }
}

// ---------------------------------------------------------------------------------
// Hostile and unlucky objects: each fails alone with a clear code and leaves nothing.
// ---------------------------------------------------------------------------------

#[test]
fn hostile_objects_fail_alone_and_leave_no_output() {
    let rw = Rw::start("hostile");
    let s3 = &rw.s3;
    s3.create_bucket("src");
    s3.create_bucket("dst");
    let foreign = s3.create_kms_key_in("us-west-2");
    write_tree(&s3.path("plain"), 10, 4096, 91);
    let enc = s3.run(&[
        "encrypt",
        "plain",
        "s3://src/mixed/good/",
        "--key",
        &rw.old,
        "-q",
    ]);
    enc.assert_exit(0);
    let good = bodies(s3, "src");
    let sample = good.values().find(|b| b.len() > 1000).unwrap().to_vec();
    let (_, sample_len) = header("sample", &sample);
    assert!(
        sample_len > 100,
        "the truncated copy below ends inside the header"
    );
    std::fs::write(s3.path("small.bin"), common::pseudo_random(5000, 92)).unwrap();
    let enc = s3.run(&[
        "encrypt",
        "small.bin",
        "foreign.enc",
        "--key",
        &foreign,
        "-q",
    ]);
    enc.assert_exit(0);
    // A large message (S3 would copy its body) whose header tag is wrong.
    write_big_file(&s3.path("large.bin"), 20 * MIB as u64, 93);
    let enc = s3.run(&["encrypt", "large.bin", "large.enc", "--key", &rw.old, "-q"]);
    enc.assert_exit(0);
    let mut large_bad_tag = std::fs::read(s3.path("large.enc")).unwrap();
    let (_, large_len) = header("large", &large_bad_tag);
    large_bad_tag[large_len - 1] ^= 0x01;

    let mut tampered_id = sample.clone();
    tampered_id[10] ^= 0x80; // inside the message ID: the key commitment fails
    let mut tampered_tag = sample.clone();
    tampered_tag[sample_len - 1] ^= 0x01;
    let mut big_junk = common::pseudo_random(20 * MIB, 94);
    big_junk[0] = 0x99; // no message version starts so
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not-a-message.txt",
            b"hello, this is not a message".to_vec(),
            "NotAValidMessage",
        ),
        ("empty", Vec::new(), "NotAValidMessage"),
        (
            "truncated-header",
            sample[..100].to_vec(),
            "NotAValidMessage",
        ),
        (
            "foreign-key",
            std::fs::read(s3.path("foreign.enc")).unwrap(),
            "KeyringError",
        ),
        ("tampered-message-id", tampered_id, "AuthenticationFailed"),
        ("tampered-header-tag", tampered_tag, "AuthenticationFailed"),
        ("large-not-a-message", big_junk, "NotAValidMessage"),
        (
            "large-bad-header-tag",
            large_bad_tag,
            "AuthenticationFailed",
        ),
    ];
    for (name, body, _) in &hostile {
        s3.put(
            "src",
            &Obj::plain(&format!("mixed/junk/{name}"), body.clone()),
        );
    }
    let run = rw.rewrap(&[
        "s3://src/mixed/",
        "s3://dst/mixed/",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "--completion-report",
        "mixed.csv",
        "-q",
    ]);
    run.assert_exit(1);
    let bad = hostile.len() as u64;
    run.assert_objects(10 + bad, 10, bad, 0, 0);
    let rows = rows_by_key(&s3.path("mixed.csv"));
    for (name, _, code) in &hostile {
        let (status, got, message) = &rows[&format!("mixed/junk/{name}")];
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("failed", *code),
            "{name}: {message}"
        );
    }
    let foreign_row = &rows["mixed/junk/foreign-key"].2;
    assert!(foreign_row.contains(&foreign), "{foreign_row}");
    // Only the good ones were written; nothing else, not even a started upload.
    let expected: BTreeSet<String> = good.keys().cloned().collect();
    assert_eq!(s3.keys("dst"), expected);
    assert_eq!(s3.uploads("dst"), Vec::new());
    for (key, body) in &good {
        assert_rewrapped(key, body, &s3.get("dst", key).body, &[&rw.new]);
    }
    let v = rw.verify("s3://dst/mixed/", &rw.new, &[]);
    v.assert_exit(0);
    v.assert_objects(10, 10, 0, 0, 0);
    s3.log("mixed prefix done");

    // A message cut inside its body: the header is authentic, the body is copied
    // without being read (as documented), so the rewrap succeeds and `verify` with the
    // new key is what finds it.
    let truncated = sample[..sample.len() - 7].to_vec();
    s3.put("src", &Obj::plain("tail/truncated-body", truncated.clone()));
    let run = rw.rewrap(&[
        "s3://src/tail/",
        "s3://dst/tail/",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "-q",
    ]);
    run.assert_exit(0);
    assert_rewrapped(
        "truncated-body",
        &truncated,
        &s3.get("dst", "tail/truncated-body").body,
        &[&rw.new],
    );
    let v = rw.verify(
        "s3://dst/tail/",
        &rw.new,
        &["--completion-report", "tail.csv"],
    );
    v.assert_exit(1);
    let rows = rows_by_key(&s3.path("tail.csv"));
    assert_eq!(
        rows["tail/truncated-body"].1, "NotAValidMessage",
        "{rows:?}"
    );
}

/// A rewrap that would give a message more encrypted data keys than readers accept
/// fails before writing anything, with a code of its own.
#[test]
fn a_rewrap_past_the_readers_data_key_limit_fails_and_writes_nothing() {
    let ws = Workspace::new();
    ws.write("plain/a.txt", b"sixteen keys already");
    let mut args = vec![
        "encrypt".to_string(),
        "plain".into(),
        "enc".into(),
        "-q".into(),
    ];
    for i in 0..16 {
        ws.write(format!("k{i:02}.key"), &[i as u8 + 1; 32]);
        args.extend(["--key".into(), format!("raw-aes:many:k{i:02}:k{i:02}.key")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ws.run(&args);
    assert!(o.status.success(), "{}", common::cli::stderr(&o));
    let o = ws.run(&[
        "rewrap",
        "--allow-header-nonce-reuse",
        "enc",
        "rw",
        "--old-key",
        "raw-aes:many:k00:k00.key",
        "--key",
        OTHER,
        "--keep-existing",
        "--completion-report",
        "rw.csv",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", common::cli::stderr(&o));
    assert!(
        !ws.path("rw/a.txt").exists(),
        "an output readers would refuse was written"
    );
    let rows = world::completion_rows(&ws.path("rw.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][3], "failed");
    assert!(
        rows[0][5].contains("17 encrypted data keys"),
        "{:?}",
        rows[0]
    );
    // A code of its own, as every refusal has, for a completion report's reader.
    assert_eq!(rows[0][4], "TooManyDataKeys", "{:?}", rows[0]);
}

// ---------------------------------------------------------------------------------
// Plans and re-runs must agree with what a run does.
// ---------------------------------------------------------------------------------

/// A re-run to a destination that still carries a key this run drops must not skip it
/// as done: the point of the run is that the dropped key no longer opens the outputs.
#[test]
fn a_rerun_that_drops_a_key_rewrites_outputs_that_still_carry_it() {
    let rw = Rw::start("drop-rerun");
    let s3 = &rw.s3;
    let (old, new) = (rw.old.as_str(), rw.new.as_str());
    s3.create_bucket("src");
    s3.create_bucket("dst");
    write_tree(&s3.path("plain"), 10, 2048, 101);
    let enc = s3.run(&["encrypt", "plain", "s3://src/", "--key", old, "-q"]);
    enc.assert_exit(0);
    // First the new region is added, keeping the old key...
    let add = rw.rewrap(&[
        "s3://src/",
        "s3://dst/",
        "--old-key",
        old,
        "--key",
        new,
        "--keep-existing",
        "-q",
    ]);
    add.assert_exit(0);
    add.assert_objects(10, 10, 0, 0, 0);
    // ...then the old key is retired, to the same destination.
    let retire = rw.rewrap(&[
        "s3://src/",
        "s3://dst/",
        "--old-key",
        old,
        "--key",
        new,
        "--drop-key",
        old,
        "-q",
    ]);
    retire.assert_exit(0);
    let still_old: Vec<String> = bodies(s3, "dst")
        .iter()
        .filter(|(k, b)| wrapped_by(&header(k, b).0).contains(old))
        .map(|(k, _)| k.clone())
        .collect();
    // A marker naming the source ETag and the new key is not enough: the output still
    // carries the dropped key, so it is not done.
    assert!(
        still_old.is_empty(),
        "after `--drop-key {old}`, {} outputs still open with the dropped key ({} of 10 \
         skipped as already done): {still_old:?}",
        still_old.len(),
        retire.objects("skipped")
    );
}

/// A dry run shows what the run would do: an in-place re-run skips every object already
/// wrapped by the target keys (without KMS calls), and dropping the last key fails.
#[test]
fn in_place_dry_runs_predict_skips_and_refusals() {
    let rw = Rw::start("dry-in-place");
    let s3 = &rw.s3;
    let (old, new) = (rw.old.as_str(), rw.new.as_str());
    s3.create_bucket("live");
    write_tree(&s3.path("plain"), 10, 2048, 111);
    let enc = s3.run(&["encrypt", "plain", "s3://live/", "--key", old, "-q"]);
    enc.assert_exit(0);
    let moved = rw.rewrap(&[
        "s3://live",
        "--in-place",
        "--old-key",
        old,
        "--key",
        new,
        "-q",
    ]);
    moved.assert_exit(0);
    moved.assert_objects(10, 10, 0, 0, 0);

    let mut wrong = Vec::new();
    let again = [
        "s3://live",
        "--in-place",
        "--old-key",
        old,
        "--key",
        new,
        "-q",
    ];
    let rerun_plan = rw.rewrap(&[&again[..], &["--dry-run"]].concat());
    let rerun = rw.rewrap(&again);
    rerun.assert_objects(10, 0, 0, 0, 10);
    assert_eq!(kms_calls(&rerun), [0, 0, 0]);
    if rerun_plan.objects("skipped") != 10 || rerun_plan.num("distinct_data_keys") != 0 {
        wrong.push(format!(
            "a dry run of an in-place re-run plans {} of 10 objects to rewrap and {} data \
             keys to unwrap; the run skips all 10 with no KMS call",
            10 - rerun_plan.objects("skipped"),
            rerun_plan.num("distinct_data_keys")
        ));
    }
    let last_key = [
        "s3://live",
        "--in-place",
        "--old-key",
        new,
        "--drop-key",
        new,
        "-q",
    ];
    let refusal_plan = rw.rewrap(&[&last_key[..], &["--dry-run"]].concat());
    let refusal = rw.rewrap(&last_key);
    refusal.assert_objects(10, 0, 10, 0, 0);
    if refusal_plan.objects("failed") != 10 {
        wrong.push(format!(
            "a dry run of dropping the last key plans {} failures; the run fails all 10 \
             with NoKeyLeft",
            refusal_plan.objects("failed")
        ));
    }
    // The plan applies the in-place skip and the keep policy as the run does.
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_counting_proxy_counts_both_directions() {
    // The proxy itself, against moto: what a request sends and a response brings.
    let s3 = World::start("proxy");
    s3.create_bucket("bucket");
    let body = common::pseudo_random(3 * MIB + 11, 1);
    s3.put("bucket", &Obj::plain("k", body.clone()));
    let proxy = CountingProxy::start(s3.moto.port);
    let conf = aws_sdk_s3::Config::builder()
        .http_client(sealpipe::aws::http_client())
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(&proxy.endpoint)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let got = s3.rt.block_on(async {
        client
            .put_object()
            .bucket("bucket")
            .key("k2")
            .body(body.clone().into())
            .send()
            .await
            .unwrap();
        client
            .get_object()
            .bucket("bucket")
            .key("k")
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
    });
    assert!(got == body);
    let t = proxy.traffic();
    let len = body.len() as u64;
    assert!(t.sent >= len && t.sent < len + 64 * 1024, "{t:?}");
    assert!(t.received >= len && t.received < len + 64 * 1024, "{t:?}");
    assert_eq!(t.requests.len(), 2, "{:?}", t.requests);
    assert!(
        t.requests[0].starts_with("PUT /bucket/k2"),
        "{:?}",
        t.requests
    );
    assert!(
        t.requests[1].starts_with("GET /bucket/k?"),
        "{:?}",
        t.requests
    );
}

/// The official CLI with a commitment policy of our choosing (legacy v1 suites need one
/// that allows them), every AWS endpoint at moto, no metadata output.
fn legacy_cli_ok(s3: &World, policy: &str, args: &[&str]) {
    let o = common::aws_command(
        &common::venv_tool("aws-encryption-cli"),
        s3.dir.path(),
        &s3.moto.endpoint(),
    )
    .args(args)
    .args(["--commitment-policy", policy, "-S"])
    .output()
    .expect("run aws-encryption-cli");
    assert!(
        o.status.success(),
        "aws-encryption-cli {args:?}: exit {:?}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

// The header tag's nonce. A v2 header's is fixed at zero, so a second tag under the same
// data key and message ID reuses it: refused (before any KMS call) unless accepted. A v1
// header names its nonce: a rewrap gives it a fresh one, which the official CLI reads.
#[test]
fn v2_headers_need_accepted_nonce_reuse_and_v1_headers_get_a_fresh_nonce() {
    let rw = Rw::start("nonce");
    let s3 = &rw.s3;
    s3.create_bucket("src");
    s3.create_bucket("dst");
    std::fs::create_dir_all(s3.path("plain")).unwrap();
    std::fs::create_dir_all(s3.path("enc")).unwrap();
    let data = common::pseudo_random(200_000, 9);
    std::fs::write(s3.path("plain/data"), &data).unwrap();
    let wrapping = format!("key={}", rw.old);
    for (name, suite, policy) in [
        (
            "v1",
            "AES_256_GCM_IV12_TAG16_HKDF_SHA256",
            "forbid-encrypt-allow-decrypt",
        ),
        (
            "v2",
            "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
            "require-encrypt-require-decrypt",
        ),
    ] {
        let out = format!("enc/{name}");
        legacy_cli_ok(
            s3,
            policy,
            &[
                "--encrypt",
                "-i",
                "plain/data",
                "-o",
                &out,
                "--wrapping-keys",
                &wrapping,
                "--algorithm",
                suite,
            ],
        );
        let bytes = std::fs::read(s3.path(&out)).unwrap();
        s3.put("src", &Obj::plain(name, bytes));
    }
    let sources = bodies(s3, "src");
    let args = [
        "rewrap",
        "s3://src/",
        "s3://dst/",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "--commitment-policy",
        "require-encrypt-allow-decrypt",
        "--completion-report",
        "nonce.csv",
    ];
    // The plan says so first, without a key.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let plan = s3.run(&dry);
    plan.assert_exit(1);
    assert_eq!(plan.objects("failed"), 1, "{}", plan.context());
    assert_eq!(kms_calls(&plan), [0, 0, 0], "{}", plan.context());
    let run = s3.run(&args);
    run.assert_exit(1);
    let rows = rows_by_key(&s3.path("nonce.csv"));
    assert_eq!(rows["v2"].0, "failed", "{rows:?}");
    assert_eq!(rows["v2"].1, "HeaderNonceReuse", "{rows:?}");
    assert!(
        rows["v2"].2.contains("--allow-header-nonce-reuse"),
        "{rows:?}"
    );
    assert_eq!(rows["v1"].0, "succeeded", "{rows:?}");
    // Only the v1 message cost KMS calls: the v2 one was refused from its header.
    assert_eq!(kms_calls(&run), [0, 1, 1], "{}", run.context());
    assert_eq!(
        s3.keys("dst"),
        set(&["v1"]),
        "nothing written for the refused one"
    );
    let rewrapped = s3.get("dst", "v1").body;
    assert_rewrapped("v1", &sources["v1"], &rewrapped, &[rw.new.as_str()]);
    let (old_header, _) = header("v1", &sources["v1"]);
    let (new_header, _) = header("v1", &rewrapped);
    assert_ne!(
        new_header.auth.iv, old_header.auth.iv,
        "the v1 header must be tagged under a fresh nonce"
    );
    // The official CLI reads the fresh nonce, with the new key alone.
    std::fs::write(s3.path("rewrapped-v1"), &rewrapped).unwrap();
    let new_only = format!("key={}", rw.new);
    legacy_cli_ok(
        s3,
        "require-encrypt-allow-decrypt",
        &[
            "--decrypt",
            "-i",
            "rewrapped-v1",
            "-o",
            "decrypted-v1",
            "--wrapping-keys",
            &new_only,
        ],
    );
    assert_eq!(std::fs::read(s3.path("decrypted-v1")).unwrap(), data);
    // Accepted, the v2 message is rewrapped too (its header under the same nonce).
    let mut accepted = args.to_vec();
    accepted.push("--allow-header-nonce-reuse");
    let run = s3.run(&accepted);
    run.assert_exit(0);
    let v2 = s3.get("dst", "v2").body;
    assert_rewrapped("v2", &sources["v2"], &v2, &[rw.new.as_str()]);
}

// Metadata and tags travel with the message, small (rewritten) and large (copied by
// S3); sealpipe's marker names the source and the new wrapping keys, and keeps the
// plaintext length.
#[test]
fn metadata_and_tags_are_kept_and_the_marker_names_the_new_keys() {
    let rw = Rw::start("meta");
    let s3 = &rw.s3;
    for b in ["plain", "src", "dst"] {
        s3.create_bucket(b);
    }
    let mut meta = world::Meta {
        content_type: Some("text/csv; charset=utf-8".into()),
        cache_control: Some("max-age=3600".into()),
        content_disposition: Some("attachment; filename=\"data.csv\"".into()),
        content_language: Some("de".into()),
        ..world::Meta::default()
    };
    meta.user.insert("owner".into(), "team-a".into());
    meta.tags = vec![
        ("project".into(), "alpha beta/γ".into()),
        ("tier".into(), "gold".into()),
    ];
    let sizes = [("small.csv", 70_000usize), ("large.csv", 20 * MIB)];
    for (i, (key, size)) in sizes.iter().enumerate() {
        s3.put(
            "plain",
            &Obj {
                key: key.to_string(),
                body: common::pseudo_random(*size, 40 + i as u64).into(),
                meta: meta.clone(),
                expires: None,
            },
        );
    }
    s3.run(&[
        "encrypt",
        "s3://plain/",
        "s3://src/",
        "--key",
        &rw.old,
        "-q",
    ])
    .assert_exit(0);
    rw.rewrap(&[
        "s3://src/",
        "s3://dst/",
        "--old-key",
        &rw.old,
        "--key",
        &rw.new,
        "-q",
    ])
    .assert_exit(0);
    for (key, size) in sizes {
        let source = s3.get("src", key);
        let output = s3.get("dst", key);
        assert_eq!(
            output.meta.without_marker(),
            meta,
            "{key}: metadata and tags"
        );
        let user = &output.meta.user;
        assert_eq!(
            user.get("sealpipe-source-etag").map(String::as_str),
            Some(source.etag.trim_matches('"')),
            "{key}"
        );
        assert_eq!(user.get("sealpipe-wrapping-keys"), Some(&rw.new), "{key}");
        assert_eq!(
            user.get("sealpipe-plaintext-length"),
            Some(&size.to_string()),
            "{key}"
        );
        assert_rewrapped(key, &source.body, &output.body, &[rw.new.as_str()]);
    }
}
