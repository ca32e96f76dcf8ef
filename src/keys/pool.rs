//! The data-key pool: encryption materials shared by many messages, refreshed in the
//! background before they run out, and the decrypt-side cache of unwrapped data keys.
//!
//! One set of materials (one data key, wrapped once by every wrapping key) serves every
//! message with the same suite and encryption context until a limit is reached: age,
//! messages or plaintext bytes. Each message still derives its own content key from a
//! fresh message ID, so sharing the data key never repeats a (key, IV) pair; the limits
//! bound how much one leaked data key would expose. Keyring calls (KMS requests) thus
//! scale with data keys, not with objects.
//!
//! When a generation crosses [`PoolLimits::refresh_at`] of any limit, or is projected to
//! run out within three times the time the keyring took to answer (at the rate messages use
//! it), its successor is fetched in the background, so after warm-up no message waits
//! for the keyring: fast messages against a slow KMS start the fetch early enough.
//! Concurrent demand for missing materials makes one keyring call, not one per caller.
//! Plaintext data keys are wiped when the last message using them drops its `Arc`,
//! whenever that is: eviction from a cache only drops the cache's reference.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::materials::merge_reproduced;
use super::{
    DecryptionMaterials, EncryptionMaterials, Keyring, decryption_materials, encryption_materials,
};
use crate::Error;
use crate::crypto::DataKey;
use crate::format::{AlgorithmSuite, EncryptionContext, HeaderBody};

/// When materials stop being used for new messages.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolLimits {
    /// Materials older than this serve no new message. Bounds how long one plaintext
    /// data key lives in memory. Default 5 minutes: a handful of keyring calls an hour.
    pub max_age: Duration,
    /// Messages one data key may encrypt. Default 2^20: a leaked data key exposes at most
    /// about a million objects, at the cost of one keyring call per million objects. The
    /// format allows up to 2^32.
    pub max_messages: u64,
    /// Plaintext bytes one data key may encrypt. Default 2^40 (1 TiB), for the same
    /// reason. An object at least this large gets a data key of its own.
    pub max_bytes: u64,
    /// Fraction of any limit after which the next materials are fetched in the
    /// background. Default 0.75.
    pub refresh_at: f64,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            max_messages: 1 << 20,
            max_bytes: 1 << 40,
            refresh_at: 0.75,
        }
    }
}

/// Counters of a pool (and its decrypt cache).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Data keys obtained from the keyring for encryption.
    pub data_keys: AtomicU64,
    /// Requests served by existing materials (encrypt) or a cached data key (decrypt).
    pub hits: AtomicU64,
    /// Requests that needed a keyring call.
    pub misses: AtomicU64,
    /// Materials fetched ahead of need.
    pub prefetches: AtomicU64,
}

/// What identifies an unwrapped data key: everything the unwrap depended on (suite,
/// every encrypted data key, the stored context and the reproduced one). Messages with
/// the same one have the same data key, however many there are.
pub(crate) fn unwrap_id(
    header: &HeaderBody,
    reproduced: &EncryptionContext,
) -> Result<Vec<u8>, Error> {
    let mut id = header.suite.id.to_be_bytes().to_vec();
    for edk in &header.encrypted_data_keys {
        for part in [
            edk.provider_id.as_bytes(),
            &edk.provider_info,
            &edk.ciphertext,
        ] {
            id.extend_from_slice(&(part.len() as u32).to_be_bytes());
            id.extend_from_slice(part);
        }
    }
    for ctx in [&header.context, reproduced] {
        let bytes = ctx.serialize()?;
        id.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        id.extend_from_slice(&bytes);
    }
    Ok(id)
}

/// Messages a data key must have served before their rate projects when it runs out.
const MIN_MESSAGES_FOR_A_RATE: u64 = 4;

/// How far ahead of running out a successor is fetched: this many times the keyring's
/// recent answer time, so an answer twice as slow, or a busy runtime that starts the
/// fetch late, still arrives in time. Fetching early costs nothing but the key's age.
const LEAD_PER_KEYRING_CALL: u32 = 3;

/// One data key and its usage.
struct Generation {
    materials: Arc<EncryptionMaterials>,
    born: Instant,
    /// When it served its first message: a prefetched key waits unused until promoted,
    /// and that wait says nothing of how fast messages use it.
    first_use: std::sync::OnceLock<Instant>,
    messages: AtomicU64,
    bytes: AtomicU64,
    prefetch_started: AtomicBool,
}

enum Reservation {
    /// Use these materials; `refresh` when the successor should be fetched now.
    Granted {
        refresh: bool,
    },
    Exhausted,
}

impl Generation {
    fn new(materials: EncryptionMaterials) -> Arc<Self> {
        Arc::new(Self {
            materials: Arc::new(materials),
            born: Instant::now(),
            first_use: std::sync::OnceLock::new(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            prefetch_started: AtomicBool::new(false),
        })
    }

    /// Counts one message of `len` bytes against the limits, if they allow it. `lead` is
    /// how long a successor takes to arrive: when the limits are projected to be reached
    /// within it, the successor is due now.
    fn reserve(&self, limits: &PoolLimits, len: u64, lead: Duration) -> Reservation {
        let age = self.born.elapsed();
        if age >= limits.max_age {
            return Reservation::Exhausted;
        }
        let messages = self.messages.fetch_add(1, Relaxed) + 1;
        let bytes = self.bytes.fetch_add(len, Relaxed).saturating_add(len);
        if messages > limits.max_messages || bytes > limits.max_bytes {
            return Reservation::Exhausted;
        }
        let past = |used: f64, max: f64| used >= max * limits.refresh_at;
        let lead = lead.as_secs_f64();
        let (age_s, max_age_s) = (age.as_secs_f64(), limits.max_age.as_secs_f64());
        // At the rate since its first message, when each count limit is reached; a rate
        // needs a few messages to mean anything (the first come at once).
        let in_use_s = self
            .first_use
            .get_or_init(Instant::now)
            .elapsed()
            .as_secs_f64();
        let runs_out_within_lead = |used: f64, max: f64| {
            messages >= MIN_MESSAGES_FOR_A_RATE
                && used > 0.0
                && (max - used) * in_use_s / used <= lead
        };
        let refresh = past(age_s, max_age_s)
            || past(messages as f64, limits.max_messages as f64)
            || past(bytes as f64, limits.max_bytes as f64)
            || max_age_s - age_s <= lead
            || runs_out_within_lead(messages as f64, limits.max_messages as f64)
            || runs_out_within_lead(bytes as f64, limits.max_bytes as f64);
        Reservation::Granted { refresh }
    }
}

/// Materials for one (suite, context): the generation in use and its successor.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Arc<Generation>>>,
    next: Mutex<Option<Arc<Generation>>>,
    /// Held while the keyring is called, so concurrent demand makes one call.
    fetching: tokio::sync::Mutex<()>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Generation>> {
        self.current.lock().expect("not poisoned").clone()
    }

    /// Replaces `seen` (the generation found unusable) with the prefetched successor;
    /// false if there is none.
    fn promote(&self, seen: &Option<Arc<Generation>>) -> bool {
        let mut current = self.current.lock().expect("not poisoned");
        if !same(&current, seen) {
            // Another caller already replaced it; the prefetched key stays for later.
            return true;
        }
        let Some(next) = self.next.lock().expect("not poisoned").take() else {
            return false;
        };
        *current = Some(next);
        true
    }
}

fn same(a: &Option<Arc<Generation>>, b: &Option<Arc<Generation>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Encryption materials for many messages, per (suite, encryption context). Clones
/// share the same slots and counters.
#[derive(Clone)]
pub struct DataKeyPool {
    keyring: Arc<dyn Keyring>,
    suite: AlgorithmSuite,
    limits: PoolLimits,
    slots: moka::future::Cache<Vec<u8>, Arc<Slot>>,
    stats: Arc<PoolStats>,
    /// How long the keyring took to answer lately, in nanoseconds: the slowest of the
    /// last answer and a decaying memory of earlier ones.
    keyring_latency: Arc<AtomicU64>,
    /// Prefetches running in the background, for [`settle`](Self::settle).
    prefetching: Arc<Prefetching>,
}

/// Counts background prefetches and wakes whoever waits for them to end.
#[derive(Default)]
struct Prefetching {
    running: std::sync::atomic::AtomicUsize,
    ended: tokio::sync::Notify,
}

/// Held by a prefetch task while it runs.
struct PrefetchRunning(Arc<Prefetching>);

impl Drop for PrefetchRunning {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Relaxed);
        self.0.ended.notify_waiters();
    }
}

impl DataKeyPool {
    /// A pool over `keyring` writing `suite` messages.
    pub fn new(keyring: Arc<dyn Keyring>, suite: AlgorithmSuite, limits: PoolLimits) -> Self {
        Self {
            keyring,
            suite,
            limits,
            // A job uses a handful of contexts; idle ones are dropped (with their keys).
            slots: moka::future::Cache::builder()
                .max_capacity(1024)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            stats: Arc::new(PoolStats::default()),
            keyring_latency: Arc::default(),
            prefetching: Arc::default(),
        }
    }

    /// Waits for the prefetches running in the background, so a job that ends leaves
    /// no keyring call behind it and its counts include every call it caused.
    pub async fn settle(&self) {
        loop {
            let ended = self.prefetching.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an end between the two is not missed.
            ended.as_mut().enable();
            if self.prefetching.running.load(Relaxed) == 0 {
                return;
            }
            ended.await;
        }
    }

    /// How long before a key runs out its successor must be fetched.
    fn lead(&self) -> Duration {
        Duration::from_nanos(self.keyring_latency.load(Relaxed)) * LEAD_PER_KEYRING_CALL
    }

    /// The pool's counters.
    pub fn stats(&self) -> &Arc<PoolStats> {
        &self.stats
    }

    /// Fetches the materials for `context` now, so a job learns that its keys or context
    /// are unusable before it touches any object (instead of once per object).
    pub async fn warm_up(&self, context: &EncryptionContext) -> Result<(), Error> {
        let slot = self
            .slots
            .get_with(context.serialize()?, async { Arc::new(Slot::default()) })
            .await;
        let _fetching = slot.fetching.lock().await;
        if slot.current().is_none() {
            let fresh = self.fetch(context).await?;
            *slot.current.lock().expect("not poisoned") = Some(fresh);
        }
        Ok(())
    }

    /// Materials for one message of `plaintext_len` bytes under `context`.
    pub async fn materials(
        &self,
        context: &EncryptionContext,
        plaintext_len: u64,
    ) -> Result<Arc<EncryptionMaterials>, Error> {
        // Identity-KDF suites would reuse (key, IV) pairs, and an object as large as the
        // byte limit would exhaust a shared key at once: both get a key of their own.
        if !self.suite.derives_per_message_key() || plaintext_len >= self.limits.max_bytes {
            self.stats.misses.fetch_add(1, Relaxed);
            return Ok(self.fetch(context).await?.materials.clone());
        }
        let key = context.serialize()?;
        let slot = self
            .slots
            .get_with(key, async { Arc::new(Slot::default()) })
            .await;
        // Whether this request had to wait for a keyring call (its own or another's).
        let mut waited = false;
        loop {
            let seen = slot.current();
            if let Some(generation) = &seen
                && let Reservation::Granted { refresh } =
                    generation.reserve(&self.limits, plaintext_len, self.lead())
            {
                let counter = if waited {
                    &self.stats.misses
                } else {
                    &self.stats.hits
                };
                counter.fetch_add(1, Relaxed);
                if refresh && !generation.prefetch_started.swap(true, Relaxed) {
                    self.prefetch(slot.clone(), context.clone(), generation.clone());
                }
                return Ok(generation.materials.clone());
            }
            if slot.promote(&seen) {
                continue;
            }
            waited = true;
            let _fetching = slot.fetching.lock().await;
            if !same(&slot.current(), &seen) || slot.next.lock().expect("not poisoned").is_some() {
                // Someone else fetched while we waited.
                continue;
            }
            let fresh = self.fetch(context).await?;
            *slot.current.lock().expect("not poisoned") = Some(fresh);
        }
    }

    async fn fetch(&self, context: &EncryptionContext) -> Result<Arc<Generation>, Error> {
        let asked = Instant::now();
        let materials = encryption_materials(
            self.keyring.as_ref(),
            self.suite,
            context.clone(),
            Default::default(),
        )
        .await?;
        // The slowest of this answer and three quarters of what was remembered: a slow
        // answer raises the lead at once, fast ones lower it gradually.
        let took = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .keyring_latency
            .fetch_update(Relaxed, Relaxed, |was| Some(took.max(was / 4 * 3)));
        self.stats.data_keys.fetch_add(1, Relaxed);
        Ok(Generation::new(materials))
    }

    /// Fetches the successor of `current` without making anyone wait.
    fn prefetch(&self, slot: Arc<Slot>, context: EncryptionContext, current: Arc<Generation>) {
        let pool = self.clone();
        self.prefetching.running.fetch_add(1, Relaxed);
        let running = PrefetchRunning(self.prefetching.clone());
        tokio::spawn(async move {
            let _running = running;
            let _fetching = slot.fetching.lock().await;
            // A caller that found `current` used up before this task ran has fetched
            // its successor itself: a second one would be a wasted keyring call.
            if slot.next.lock().expect("not poisoned").is_some()
                || !same(&slot.current(), &Some(current))
            {
                return;
            }
            // A failure here is not fatal: the next caller that needs materials fetches
            // them itself and sees the error.
            if let Ok(next) = pool.fetch(&context).await {
                pool.stats.prefetches.fetch_add(1, Relaxed);
                *slot.next.lock().expect("not poisoned") = Some(next);
            }
        });
    }
}

/// Unwrapped data keys by encrypted data key, so messages written with one pooled data
/// key cost one keyring call to read, not one each.
pub struct DecryptCache {
    keys: moka::future::Cache<Vec<u8>, Arc<DataKey>>,
    stats: Arc<PoolStats>,
}

impl DecryptCache {
    /// Data keys a cache holds unless told otherwise: messages of that many distinct
    /// data keys are read with one unwrap each while they stay in it.
    pub const DEFAULT_CAPACITY: u64 = 4096;

    /// A cache holding at most `capacity` data keys, each for at most `max_age`.
    pub fn new(capacity: u64, max_age: Duration, stats: Arc<PoolStats>) -> Self {
        Self {
            keys: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(max_age)
                .build(),
            stats,
        }
    }

    /// Like [`decryption_materials`], answering from the cache when the same encrypted
    /// data keys under the same suite and full context were unwrapped before.
    pub async fn materials(
        &self,
        keyring: &dyn Keyring,
        header: &HeaderBody,
        reproduced: &EncryptionContext,
    ) -> Result<DecryptionMaterials, Error> {
        let id = unwrap_id(header, reproduced)?;
        let (_, authenticate_only_context) = merge_reproduced(&header.context, reproduced)?;
        let missed = AtomicBool::new(false);
        let data_key = self
            .keys
            .try_get_with(id, async {
                missed.store(true, Relaxed);
                let m = decryption_materials(keyring, header, reproduced).await?;
                Ok::<_, Error>(Arc::new(m.data_key))
            })
            .await
            .map_err(Error::Shared)?;
        if missed.into_inner() {
            self.stats.misses.fetch_add(1, Relaxed);
            self.stats.data_keys.fetch_add(1, Relaxed);
        } else {
            self.stats.hits.fetch_add(1, Relaxed);
        }
        Ok(DecryptionMaterials {
            data_key: (*data_key).clone(),
            authenticate_only_context,
        })
    }
}
