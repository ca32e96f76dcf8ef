//! Sinks copy ranges of other objects without the bytes passing through sealpipe: S3
//! with UploadPartCopy (against a real S3 protocol server, moto), local files with the
//! kernel's file copy. What the rewrap of message headers builds on: a new header
//! written, the old body copied.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use sealpipe::store::{
    ByteBudget, LocalSink, ObjectId, ObjectMeta, Payload, Precondition, S3Settings, S3Store, Sink,
};

use common::moto::Moto;

const MIB: usize = 1024 * 1024;

/// Puts `data` through `sink`'s lent buffers, as a writer would.
async fn put_all(sink: &mut dyn Sink, mut data: &[u8]) {
    while !data.is_empty() {
        let mut buf = sink.lend().await.unwrap();
        let n = data.len().min(buf.capacity() - buf.len());
        buf.extend_from_slice(&data[..n]);
        data = &data[n..];
        sink.put(buf).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_sinks_copy_ranges_server_side_after_a_written_part() {
    let moto = Moto::start();
    let s3 = moto.s3_client();
    s3.create_bucket()
        .bucket("range-copy")
        .send()
        .await
        .unwrap();
    let source = common::pseudo_random(21 * MIB + 7, 3);
    let put = s3
        .put_object()
        .bucket("range-copy")
        .key("dir/src object+")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().trim_matches('"').to_string();
    let store = S3Store::new(
        sealpipe::aws::S3Client {
            client: s3.clone(),
            base: aws_config::SdkConfig::builder().build(),
            plain_http: true,
        },
        S3Settings {
            part_size: 8 * MIB as u64,
            ..Default::default()
        },
        ByteBudget::new(64 << 20),
    );
    let from = ObjectId::s3("range-copy", "dir/src object+", None);
    let sink = |key: &str| {
        Box::new(store.sink(
            "range-copy",
            key,
            ObjectMeta::default(),
            Precondition::None,
            Payload::Message,
            32 * MIB as u64,
        ))
    };
    let get = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let out = s3
                .get_object()
                .bucket("range-copy")
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes()
        }
    };

    // 6 MiB written, then 20 MiB copied in two parts (8 MiB, then 12: a remainder
    // under 5 MiB joins the part before it).
    let head = common::pseudo_random(6 * MIB, 9);
    let mut out = sink("copied");
    put_all(out.as_mut(), &head).await;
    let range = MIB as u64..(21 * MIB + 7) as u64;
    out.copy_range(&from, &etag, range.clone()).await.unwrap();
    assert_eq!(out.commit().await.unwrap(), (6 * MIB + 20 * MIB + 7) as u64);
    let mut expected = head.clone();
    expected.extend_from_slice(&source[MIB..]);
    assert_eq!(get("copied").await, Bytes::from(expected));

    // A copy ending in a short part ends the output.
    let mut out = sink("short-tail");
    put_all(out.as_mut(), &head).await;
    out.copy_range(&from, &etag, 0..1000).await.unwrap();
    let mut buf = out.lend().await.unwrap();
    buf.extend_from_slice(b"more");
    let err = out.put(buf).await.unwrap_err().to_string();
    assert!(err.contains("nothing can follow"), "{err}");
    out.abort().await;

    // Less than a part written first cannot be followed by copied parts.
    let mut out = sink("too-little-first");
    put_all(out.as_mut(), &head[..MIB]).await;
    let err = out
        .copy_range(&from, &etag, range.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 5 MiB"), "{err}");
    out.abort().await;

    // Copies are conditional on the source's ETag (x-amz-copy-source-if-match), but
    // moto 5.2.5 ignores that header on UploadPartCopy (moto/s3/responses.py,
    // `upload_part_copy`), so a stale ETag cannot be shown to fail here. What moto does
    // honour is the version in the copy source: a copy pinned to the version that was
    // read takes that version's bytes, whatever was written since.
    s3.put_bucket_versioning()
        .bucket("range-copy")
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let first = s3
        .put_object()
        .bucket("range-copy")
        .key("versioned")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("range-copy")
        .key("versioned")
        .body(ByteStream::from(vec![0u8; source.len()]))
        .send()
        .await
        .unwrap();
    let pinned = ObjectId::s3(
        "range-copy",
        "versioned",
        first.version_id().map(str::to_string),
    );
    let etag = first.e_tag().unwrap().trim_matches('"').to_string();
    let mut out = sink("pinned");
    put_all(out.as_mut(), &head).await;
    out.copy_range(&pinned, &etag, range.clone()).await.unwrap();
    out.commit().await.unwrap();
    let mut expected = head.clone();
    expected.extend_from_slice(&source[MIB..]);
    assert_eq!(get("pinned").await, Bytes::from(expected));

    // A local file is no S3 copy source.
    let mut out = sink("from-local");
    let local = ObjectId::Local("/etc/hostname".into());
    let err = out.copy_range(&local, "x", 0..1).await.unwrap_err();
    assert!(err.to_string().contains("only from S3 objects"), "{err}");
    out.abort().await;

    // Nothing but the committed object exists: refused and aborted outputs left none,
    // and no multipart upload is left open.
    let listed = s3
        .list_objects_v2()
        .bucket("range-copy")
        .send()
        .await
        .unwrap();
    let mut keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(keys, ["copied", "dir/src object+", "pinned", "versioned"]);
    let uploads = s3
        .list_multipart_uploads()
        .bucket("range-copy")
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sinks_copy_ranges_of_unchanged_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let data = common::pseudo_random(3 * MIB + 11, 5);
    std::fs::write(&src, &data).unwrap();
    let opened = sealpipe::store::open_local(&src).await.unwrap();
    let etag = opened.info.etag.clone();
    drop(opened);
    let from = ObjectId::Local(src.clone());

    let out_path = dir.path().join("out/file");
    let mut out = Box::new(LocalSink::create(&out_path, Some(0o644)).await.unwrap());
    put_all(out.as_mut(), b"header:").await;
    out.copy_range(&from, &etag, 5..(3 * MIB + 11) as u64)
        .await
        .unwrap();
    put_all(out.as_mut(), b":tail").await;
    assert_eq!(out.commit().await.unwrap(), (7 + 3 * MIB + 6 + 5) as u64);
    let mut expected = b"header:".to_vec();
    expected.extend_from_slice(&data[5..]);
    expected.extend_from_slice(b":tail");
    assert_eq!(std::fs::read(&out_path).unwrap(), expected);

    // A changed source, or a range past its end, fails; the output is not created.
    let other = dir.path().join("other");
    for (etag, range, why) in [
        ("local-1-2", 0..10, "not the file the range was taken from"),
        (etag.as_str(), 0..(4 * MIB) as u64, "of a 3145739-byte file"),
    ] {
        let mut out = Box::new(LocalSink::create(&other, None).await.unwrap());
        let err = out.copy_range(&from, etag, range).await.unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
        out.abort().await;
        assert!(!other.exists());
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}: src, out/ and nothing partial");
}
