//! What the server refuses to do at any one time: more requests than its cap, more than
//! a token's rate, bodies larger than a route takes, clients slower than the timeouts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The server's limits, all configurable.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The largest request body of `/v1/encrypt` and `/v1/decrypt`.
    pub max_body: u64,
    /// Decrypted plaintext held in memory before it spills to a temporary file.
    pub max_in_memory: usize,
    /// Where plaintext spills (`None`: refuse with 413 past `max_in_memory`). Spilled
    /// plaintext goes to an unnamed file that disappears with its descriptor.
    pub spill_dir: Option<PathBuf>,
    /// A whole request, from its head to its response's head.
    pub request_timeout: Duration,
    /// Receiving a request's head (slow loris).
    pub header_timeout: Duration,
    /// The longest silence while a request body arrives, or while a response waits
    /// for the client to read it.
    pub body_timeout: Duration,
    /// Requests answered at once; more get 503.
    pub max_concurrent: usize,
    /// Requests per second per token (burst: one second's worth); more get 429.
    pub token_rate: Option<f64>,
}

/// The most a `/v1/kms/encrypt` plaintext may be: KMS `Encrypt` takes at most 4,096
/// bytes.
pub const KMS_MAX_PLAINTEXT: usize = 4096;

/// The most a `/v1/kms/decrypt` body may be: a base64 `CiphertextBlob` (KMS blobs are at
/// most 6,144 bytes) with some whitespace, or the JSON around it.
pub const KMS_MAX_BODY: usize = 16 * 1024;

/// The most the JSON variants buffer: the body is decoded whole, and its answer encoded
/// whole, so it costs about three times its size in memory. JSON is for small
/// payloads; anything larger goes as a raw body, which streams.
pub const MAX_JSON_BODY: u64 = 8 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 1 << 30,
            max_in_memory: 16 << 20,
            spill_dir: Some(std::env::temp_dir()),
            request_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_concurrent: 256,
            token_rate: None,
        }
    }
}

/// A token bucket per token: `rate` requests per second, bursts of one second's worth.
pub struct TokenRates {
    rate: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets beyond this many are swept of full ones, so tokens removed by a reload do
/// not keep memory forever.
const SWEEP_AT: usize = 4096;

impl TokenRates {
    /// Rates of `rate` requests per second per token.
    pub fn new(rate: f64) -> Self {
        Self {
            rate: rate.clamp(0.001, 1e9),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of token `id` now, or says how long until one would be.
    pub fn admit(&self, id: &str) -> Result<(), Duration> {
        let burst = self.rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if buckets.len() > SWEEP_AT {
            let rate = self.rate;
            buckets.retain(|_, (level, at)| {
                *level + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        if !buckets.contains_key(id) {
            buckets.insert(id.to_string(), (burst, now));
        }
        let Some((level, at)) = buckets.get_mut(id) else {
            return Ok(());
        };
        *level = (*level + now.duration_since(*at).as_secs_f64() * self.rate).min(burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *level) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_burst_then_waits_and_others_are_unaffected() {
        let rates = TokenRates::new(3.0);
        for _ in 0..3 {
            assert!(rates.admit("a").is_ok());
        }
        let wait = rates.admit("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(334),
            "{wait:?}"
        );
        assert!(rates.admit("b").is_ok());
    }
}
