//! Sending a request: one attempt classified for the retry policy, retried with
//! backoff and counted.

use std::sync::atomic::Ordering::Relaxed;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use tokio::task::JoinHandle;

use super::Shared;
use super::error::{S3Error, classify};
use crate::retry::Transience;
use crate::store::Reservation;

/// Awaits one attempt of a request and classifies its failure for [`retried`].
pub(super) async fn send<T, E>(
    attempt: impl Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
    action: &'static str,
    object: &(dyn std::fmt::Display + Sync),
) -> Result<T, (Transience, S3Error)>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    attempt.await.map_err(|e| classify(action, object, e))
}

/// A request running on the runtime, and the budget its bytes hold (`None`: the
/// object's base reservation).
pub(super) type InFlight<T> = (JoinHandle<Result<T, S3Error>>, Option<Reservation>);

/// Runs a request with the retry policy. An `AccessDenied` that ends it names the
/// caller (see [`crate::aws::caller_hint`]).
pub(super) async fn retried<T, Fut>(
    shared: &Shared,
    call: impl FnMut() -> Fut,
) -> Result<T, S3Error>
where
    Fut: Future<Output = Result<T, (Transience, S3Error)>>,
{
    let mut result = retried_quietly(shared, call).await;
    if let Err(e) = &mut result
        && e.is_access_denied()
    {
        // The STS endpoint is `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the
        // region's: a `--s3-endpoint` is S3's alone (an S3-compatible store has no STS).
        let caller = crate::aws::caller_hint(|| {
            let region = shared
                .clients
                .base()
                .config()
                .region()
                .map(|r| r.to_string());
            Some(crate::aws::sts_client(&shared.base, region.as_deref()))
        })
        .await;
        e.hint.push_str(&caller);
    }
    result
}

/// A retried request as a log line (`--log-format json`).
fn log_retry(e: &S3Error, wait: std::time::Duration) {
    if !crate::events::enabled() {
        return;
    }
    let mut fields = serde_json::Map::new();
    fields.insert("service".into(), "s3".into());
    fields.insert("action".into(), e.action.into());
    fields.insert("object".into(), crate::events::untrusted(&e.object));
    fields.insert("code".into(), crate::events::untrusted(&e.code));
    if let Some(status) = e.status {
        fields.insert("status".into(), status.into());
    }
    fields.insert("message".into(), crate::events::untrusted(&e.message));
    fields.insert("wait_ms".into(), (wait.as_millis() as u64).into());
    crate::events::emit("retry", fields);
}

/// [`retried`] without naming the caller, for housekeeping whose failure is counted and
/// passed over (stale upload cleanup, aborting a failed upload): a run that succeeds
/// must not send a `GetCallerIdentity` it never reports.
pub(super) async fn retried_quietly<T, Fut>(
    shared: &Shared,
    mut call: impl FnMut() -> Fut,
) -> Result<T, S3Error>
where
    Fut: Future<Output = Result<T, (Transience, S3Error)>>,
{
    shared
        .settings
        .retry
        .run_telling(
            &shared.stats.retry,
            |e: &(Transience, S3Error)| e.0,
            |(_, e), wait| log_retry(e, wait),
            || {
                shared.stats.requests.fetch_add(1, Relaxed);
                call()
            },
        )
        .await
        .map_err(|e| e.1)
}
