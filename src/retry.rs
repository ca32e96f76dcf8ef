//! Retrying remote calls (KMS and S3): exponential backoff with full jitter on
//! throttling and transient failures, and an optional request-rate budget shared by all
//! callers.
//!
//! The AWS SDK's own retries are switched off for the clients sealpipe builds, so the
//! two layers never multiply: one policy, visible in the report's retry counters.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// How failures of a remote call should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transience {
    /// The service asked us to slow down (e.g. KMS `ThrottlingException`).
    Throttled,
    /// Worth another try: 5xx, timeouts, connection errors.
    Transient,
    /// Retrying cannot help: access denied, disabled or unknown key, bad request.
    Permanent,
}

/// Set once the process is stopping: see [`stop_retrying`].
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Stops every retry in this process: from now on a failed call is not retried, and a
/// wait before a retry ends at once. For a process that is shutting down (the CLI
/// calls it on SIGINT and SIGTERM): objects in flight then fail at once instead of
/// each waiting out up to a minute of backoff against a failing service.
pub fn stop_retrying() {
    STOPPING.store(true, Relaxed);
}

fn stopping() -> bool {
    STOPPING.load(Relaxed)
}

/// Waits `delay`, or less once the process is stopping.
pub(crate) async fn backoff_sleep(delay: Duration) {
    const SLICE: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + delay;
    while !stopping() {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        tokio::time::sleep((deadline - now).min(SLICE)).await;
    }
}

/// Backoff settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay ceiling before the first retry; doubles each attempt.
    pub base_delay: Duration,
    /// Largest delay ceiling between two attempts.
    pub max_delay: Duration,
    /// Attempts after the first.
    pub max_retries: usize,
    /// Total time spent waiting before giving up.
    pub max_total_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Throttling usually clears within seconds; ten retries capped at 10 s each and
        // one minute in total ride out a busy shared quota without hiding an outage.
        Self {
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(10),
            max_retries: 10,
            max_total_delay: Duration::from_secs(60),
        }
    }
}

/// Retry counters, for reports.
#[derive(Debug, Default)]
pub struct RetryStats {
    /// Retries after any failure.
    pub retries: AtomicU64,
    /// Failures that were throttling.
    pub throttled: AtomicU64,
}

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails permanently, or the policy is exhausted.
    /// Each wait is uniformly random between zero and the exponential ceiling ("full
    /// jitter"), so many workers throttled together do not retry together.
    pub async fn run<T, E, Fut>(
        &self,
        stats: &RetryStats,
        classify: impl Fn(&E) -> Transience,
        call: impl FnMut() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_telling(stats, classify, |_, _| {}, call).await
    }

    /// [`run`](Self::run), telling `on_retry` of each failure about to be retried and
    /// the wait before the retry (for log lines).
    pub async fn run_telling<T, E, Fut>(
        &self,
        stats: &RetryStats,
        classify: impl Fn(&E) -> Transience,
        on_retry: impl Fn(&E, Duration),
        call: impl FnMut() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_total_delay(Some(self.max_total_delay));
        call.retry(backoff)
            .sleep(backoff_sleep)
            .when(|e| {
                if stopping() {
                    return false;
                }
                let kind = classify(e);
                if kind == Transience::Throttled {
                    stats.throttled.fetch_add(1, Relaxed);
                }
                kind != Transience::Permanent
            })
            .adjust(|_, ceiling| ceiling.map(full_jitter))
            .notify(|e, wait| {
                stats.retries.fetch_add(1, Relaxed);
                on_retry(e, wait);
            })
            .await
    }
}

/// Sorts an AWS SDK failure into retry classes. Timeouts, connection failures and
/// unreadable responses (a connection reset mid-body) are transient, as are 5xx
/// responses; `throttling` and `transient` name service error codes with those
/// meanings; everything else is permanent.
pub fn classify_sdk_error<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    err: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::http::Response,
    >,
    throttling: &[&str],
    transient: &[&str],
) -> Transience {
    use aws_smithy_runtime_api::client::result::SdkError;
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Transience::Transient
        }
        SdkError::ServiceError(e) => match e.err().code() {
            Some(code) if throttling.contains(&code) => Transience::Throttled,
            // A 503 without a body (S3 answers HEAD that way) is the service asking to
            // slow down, whatever its error code would have been.
            None if e.raw().status().as_u16() == 503 => Transience::Throttled,
            Some(code) if transient.contains(&code) => Transience::Transient,
            // 501 Not Implemented will not become implemented by asking again.
            _ if e.raw().status().as_u16() == 501 => Transience::Permanent,
            _ if e.raw().status().is_server_error() => Transience::Transient,
            _ => Transience::Permanent,
        },
        _ => Transience::Permanent,
    }
}

fn full_jitter(ceiling: Duration) -> Duration {
    let mut b = [0u8; 4];
    // Jitter needs no cryptographic quality; on the (never seen) failure of the OS
    // generator, wait the whole ceiling.
    let fraction = match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 1.0,
    };
    ceiling.mul_f64(fraction)
}

/// A token bucket: at most `rate` calls per second on average, bursts of `burst`.
/// One limiter shared by all workers of a process keeps them inside a slice of the
/// account's KMS quota (give each of N machines 1/N of the rate).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    /// Slowest and fastest rates: beyond them the waits would overflow a `Duration` or
    /// stop meaning anything.
    pub const RATES: std::ops::RangeInclusive<f64> = 0.01..=1e6;

    /// `rate` calls per second, taken into [`RATES`](Self::RATES) (NaN as the slowest).
    pub fn new(rate: f64) -> Self {
        let (slowest, fastest) = (*Self::RATES.start(), *Self::RATES.end());
        let rate = if rate.is_nan() {
            slowest
        } else {
            rate.clamp(slowest, fastest)
        };
        let burst = rate.max(1.0);
        Self {
            rate,
            burst,
            state: tokio::sync::Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    /// Waits until a call may be made.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let (tokens, last) = &mut *state;
                let now = tokio::time::Instant::now();
                *tokens =
                    (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - *tokens) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_and_counted() {
        let stats = RetryStats::default();
        let policy = RetryPolicy::default();
        let mut calls = 0;
        let result: Result<u32, Transience> = policy
            .run(
                &stats,
                |e| *e,
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        match n {
                            1 => Err(Transience::Throttled),
                            2 => Err(Transience::Transient),
                            _ => Ok(7),
                        }
                    }
                },
            )
            .await;
        assert_eq!(result, Ok(7));
        assert_eq!(stats.retries.load(Relaxed), 2);
        assert_eq!(stats.throttled.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let stats = RetryStats::default();
        let mut calls = 0;
        let result: Result<(), Transience> = RetryPolicy::default()
            .run(
                &stats,
                |e| *e,
                || {
                    calls += 1;
                    async { Err(Transience::Permanent) }
                },
            )
            .await;
        assert_eq!(result, Err(Transience::Permanent));
        assert_eq!(calls, 1);
        assert_eq!(stats.retries.load(Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_configured_count() {
        let stats = RetryStats::default();
        let policy = RetryPolicy {
            max_retries: 3,
            ..Default::default()
        };
        let mut calls = 0;
        let _: Result<(), Transience> = policy
            .run(
                &stats,
                |e| *e,
                || {
                    calls += 1;
                    async { Err(Transience::Throttled) }
                },
            )
            .await;
        assert_eq!(calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_calls() {
        let limiter = RateLimiter::new(10.0);
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            limiter.acquire().await;
        }
        // 10 of burst, then 20 more at 10/s: about two seconds.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1900), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2200), "{elapsed:?}");
    }
}
