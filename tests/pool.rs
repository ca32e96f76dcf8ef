//! The data-key pool: keyring calls scale with data keys, not messages; limits rotate
//! keys; the next key is fetched before the current one runs out; concurrent demand
//! makes one call. The decrypt cache unwraps each data key once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use sealpipe::crypto::DataKey;
use sealpipe::format::{AlgorithmSuite, EncryptionContext};
use sealpipe::keys::{
    DataKeyPool, DecryptCache, DecryptRequest, EncryptionMaterials, Keyring, KeyringFuture,
    PoolLimits, PoolStats,
};

/// A Raw AES keyring that counts its calls and can be slow, like a remote KMS.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Keyring>,
    encrypts: AtomicU64,
    decrypts: AtomicU64,
    delay: Duration,
}

impl Counting {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner: common::raw_keyring("ns", "counted", &[1u8; 32]),
            encrypts: AtomicU64::new(0),
            decrypts: AtomicU64::new(0),
            delay,
        })
    }
}

impl Keyring for Counting {
    fn on_encrypt<'a>(&'a self, m: EncryptionMaterials) -> KeyringFuture<'a, EncryptionMaterials> {
        Box::pin(async move {
            self.encrypts.fetch_add(1, Relaxed);
            tokio::time::sleep(self.delay).await;
            self.inner.on_encrypt(m).await
        })
    }
    fn on_decrypt<'a>(&'a self, r: &'a DecryptRequest<'a>) -> KeyringFuture<'a, Option<DataKey>> {
        Box::pin(async move {
            self.decrypts.fetch_add(1, Relaxed);
            self.inner.on_decrypt(r).await
        })
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const SUITE: AlgorithmSuite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY;

#[test]
fn two_thousand_messages_share_one_data_key_under_default_limits() {
    let keyring = Counting::new(Duration::ZERO);
    let pool = DataKeyPool::new(keyring.clone(), SUITE, PoolLimits::default());
    let ctx: EncryptionContext = [("job", "nightly")].into_iter().collect();
    runtime().block_on(async {
        for _ in 0..2000 {
            pool.materials(&ctx, 1000).await.unwrap();
        }
    });
    assert_eq!(keyring.encrypts.load(Relaxed), 1);
    assert_eq!(pool.stats().hits.load(Relaxed), 1999);
    assert_eq!(pool.stats().misses.load(Relaxed), 1);
}

#[test]
fn message_limit_rotates_keys_and_prefetch_keeps_callers_from_waiting() {
    let keyring = Counting::new(Duration::from_millis(2));
    let limits = PoolLimits {
        max_messages: 100,
        ..Default::default()
    };
    let pool = DataKeyPool::new(keyring.clone(), SUITE, limits);
    let ctx = EncryptionContext::new();
    let mut distinct = Vec::new();
    runtime().block_on(async {
        for i in 0..1000 {
            let m = pool.materials(&ctx, 10).await.unwrap();
            let key = m.data_key.clone().unwrap();
            if distinct.last() != Some(&key) {
                distinct.push(key);
            }
            // Objects take time to process; that is when prefetching happens.
            if i % 5 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let keys = keyring.encrypts.load(Relaxed);
    assert!(
        (10..=11).contains(&keys),
        "{keys} data keys for 1000 messages at 100 per key"
    );
    assert_eq!(
        distinct.len(),
        10,
        "each data key served exactly 100 messages"
    );
    // Only the very first request waited for the keyring.
    assert_eq!(pool.stats().misses.load(Relaxed), 1);
    assert!(pool.stats().prefetches.load(Relaxed) >= 9);
}

#[test]
fn prefetch_starts_early_enough_when_messages_are_fast_and_the_keyring_slow() {
    // 150 messages a key, each taking at least 0.4 ms: a key lasts 60 ms or more, its
    // last quarter 15 ms, less than the 20 ms the keyring takes to answer. Fetching at
    // 75% of the limit would leave rotations waiting; fetching when the key is projected
    // to run out within a few of the keyring's answer times leaves none waiting.
    let keyring = Counting::new(Duration::from_millis(20));
    let limits = PoolLimits {
        max_messages: 150,
        ..Default::default()
    };
    let pool = DataKeyPool::new(keyring.clone(), SUITE, limits);
    let ctx = EncryptionContext::new();
    runtime().block_on(async {
        pool.warm_up(&ctx).await.unwrap();
        for _ in 0..1050 {
            pool.materials(&ctx, 10).await.unwrap();
            std::thread::sleep(Duration::from_micros(400));
        }
    });
    let keys = keyring.encrypts.load(Relaxed);
    assert!(
        (7..=8).contains(&keys),
        "{keys} data keys for 1050 messages at 150 per key"
    );
    assert_eq!(
        pool.stats().misses.load(Relaxed),
        0,
        "after warm-up, no message waited for a data key ({} prefetches)",
        pool.stats().prefetches.load(Relaxed)
    );
}

#[test]
fn keys_rotate_when_they_reach_max_age() {
    let keyring = Counting::new(Duration::ZERO);
    let limits = PoolLimits {
        max_age: Duration::from_millis(200),
        ..Default::default()
    };
    let pool = DataKeyPool::new(keyring.clone(), SUITE, limits);
    let ctx = EncryptionContext::new();
    runtime().block_on(async {
        let first = pool.materials(&ctx, 1).await.unwrap();
        let again = pool.materials(&ctx, 1).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let later = pool.materials(&ctx, 1).await.unwrap();
        assert_ne!(first.data_key, later.data_key, "an expired key was reused");
    });
    assert!(keyring.encrypts.load(Relaxed) >= 2);
}

#[test]
fn concurrent_demand_makes_one_keyring_call() {
    let keyring = Counting::new(Duration::from_millis(50));
    let pool = Arc::new(DataKeyPool::new(
        keyring.clone(),
        SUITE,
        PoolLimits::default(),
    ));
    let ctx = EncryptionContext::new();
    runtime().block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (pool, ctx) = (pool.clone(), ctx.clone());
                tokio::spawn(async move { pool.materials(&ctx, 1).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(keyring.encrypts.load(Relaxed), 1);
}

#[test]
fn contexts_and_oversized_objects_get_their_own_keys() {
    let keyring = Counting::new(Duration::ZERO);
    let limits = PoolLimits {
        max_bytes: 1000,
        ..Default::default()
    };
    let pool = DataKeyPool::new(keyring.clone(), SUITE, limits);
    let a: EncryptionContext = [("tenant", "a")].into_iter().collect();
    let b: EncryptionContext = [("tenant", "b")].into_iter().collect();
    runtime().block_on(async {
        let ma = pool.materials(&a, 10).await.unwrap();
        let mb = pool.materials(&b, 10).await.unwrap();
        assert_ne!(ma.data_key, mb.data_key);
        assert_eq!(ma.context.get("tenant"), Some("a"));
        let big = pool.materials(&a, 5000).await.unwrap();
        assert_ne!(big.data_key, ma.data_key);
        // Byte limit: 10 + 10 + ... up to 1000 bytes per key.
        for _ in 0..99 {
            pool.materials(&a, 10).await.unwrap();
        }
        // The key is full: the next message gets the next one, whether the background
        // refresh has already fetched it or not (asserting right after the 100th
        // message raced that refresh).
        let next = pool.materials(&a, 10).await.unwrap();
        assert_ne!(next.data_key, ma.data_key);
    });
    assert_eq!(keyring.encrypts.load(Relaxed), 4);
}

#[test]
fn the_decrypt_cache_unwraps_each_data_key_once() {
    let keyring = Counting::new(Duration::ZERO);
    let pool = DataKeyPool::new(keyring.clone(), SUITE, PoolLimits::default());
    let ctx: EncryptionContext = [("k", "v")].into_iter().collect();
    let rt = runtime();
    let materials = rt.block_on(pool.materials(&ctx, 100)).unwrap();
    let messages: Vec<Vec<u8>> = (0..50)
        .map(|i| common::encrypt(&materials, 4096, &common::pseudo_random(100, i)))
        .collect();
    let cache = DecryptCache::new(16, Duration::from_secs(60), Arc::new(PoolStats::default()));
    for m in &messages {
        let (header, _) = sealpipe::stream::read_header(&mut &m[..], &Default::default()).unwrap();
        let dm = rt
            .block_on(cache.materials(keyring.as_ref(), &header.body, &ctx))
            .unwrap();
        assert_eq!(Some(dm.data_key), materials.data_key);
    }
    assert_eq!(keyring.decrypts.load(Relaxed), 1);
    // A different expected context is a different cache entry, and fails.
    let (header, _) =
        sealpipe::stream::read_header(&mut &messages[0][..], &Default::default()).unwrap();
    let wrong: EncryptionContext = [("k", "w")].into_iter().collect();
    assert!(
        rt.block_on(cache.materials(keyring.as_ref(), &header.body, &wrong))
            .is_err()
    );
}
