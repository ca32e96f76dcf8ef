//! One S3 client per bucket region. A request signed for another region than its
//! bucket's is refused (301 PermanentRedirect, or 400 AuthorizationHeaderMalformed), so
//! a job whose source and destination buckets live in different regions (a regional
//! migration) needs a client in each. Each bucket's region is asked once, with
//! HeadBucket: S3 names it in `x-amz-bucket-region` on success and on the redirect
//! alike. A bucket whose region cannot be learned (a server without the header, no
//! `s3:ListBucket`) uses the configured client, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use tokio::sync::OnceCell;

use std::sync::atomic::Ordering::Relaxed;

use super::S3Stats;
use crate::retry::{RetryPolicy, Transience, classify_sdk_error};

/// The response header in which S3 names a bucket's region.
const BUCKET_REGION: &str = "x-amz-bucket-region";

/// The configured client, and one per other region as buckets need them.
pub(super) struct RegionalClients {
    base: Client,
    by_bucket: Mutex<HashMap<String, Arc<OnceCell<Client>>>>,
}

impl RegionalClients {
    pub(super) fn new(base: Client) -> Self {
        Self {
            base,
            by_bucket: Mutex::new(HashMap::new()),
        }
    }

    /// The configured client: for what is not about one bucket.
    pub(super) fn base(&self) -> &Client {
        &self.base
    }

    /// The client for requests about `bucket`, in its region.
    pub(super) async fn for_bucket(
        &self,
        bucket: &str,
        retry: &RetryPolicy,
        stats: &S3Stats,
    ) -> Client {
        let cell = self
            .by_bucket
            .lock()
            .expect("not poisoned")
            .entry(bucket.to_string())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let configured = self.base.config().region().map(|r| r.to_string());
            match self.region_of(bucket, retry, stats).await {
                Some(region) if Some(&region) != configured.as_ref() => {
                    let config = self
                        .base
                        .config()
                        .to_builder()
                        .region(Region::new(region))
                        .build();
                    Client::from_conf(config)
                }
                _ => self.base.clone(),
            }
        })
        .await
        .clone()
    }

    /// The region S3 names for `bucket`, if it names one. Transient failures are
    /// retried; anything else means "unknown".
    async fn region_of(
        &self,
        bucket: &str,
        retry: &RetryPolicy,
        stats: &S3Stats,
    ) -> Option<String> {
        let answer = retry
            .run(
                &stats.retry,
                |t: &Transience| *t,
                || async {
                    stats.requests.fetch_add(1, Relaxed);
                    match self.base.head_bucket().bucket(bucket).send().await {
                        Ok(out) => Ok(out.bucket_region().map(str::to_string)),
                        Err(e) => match classify_sdk_error(&e, &["SlowDown"], &[]) {
                            Transience::Permanent => Ok(e
                                .raw_response()
                                .and_then(|r| r.headers().get(BUCKET_REGION))
                                .map(str::to_string)),
                            transient => Err(transient),
                        },
                    }
                },
            )
            .await;
        answer.ok().flatten().filter(|r| !r.is_empty())
    }
}
