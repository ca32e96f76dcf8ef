//! AWS configuration shared by the KMS and S3 clients: the standard credential chain,
//! region and profile, endpoint overrides, timeouts, and SDK retries switched off
//! (sealpipe retries with its own policy, so the two never multiply).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

/// Overrides on top of the environment (`AWS_REGION`, `AWS_PROFILE`,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL_S3`, ...), which the SDK
/// reads itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Region for calls whose key does not name one (IDs and aliases), and for S3.
    pub region: Option<String>,
    /// Named profile from the shared config files.
    pub profile: Option<String>,
    /// Endpoint for KMS, e.g. a local test server.
    pub kms_endpoint: Option<String>,
    /// Endpoint for S3, e.g. a local test server or an S3-compatible store.
    pub s3_endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    /// Needed by most S3-compatible servers; on by default with a custom endpoint.
    pub s3_path_style: Option<bool>,
}

/// How long one KMS attempt may take before it counts as a (retryable) timeout.
const KMS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// S3 transfers move megabytes per request, so S3 bounds the silence between bytes
/// rather than the whole attempt.
const S3_READ_TIMEOUT: Duration = Duration::from_secs(60);

fn loader(settings: &AwsSettings, timeouts: TimeoutConfig) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    loader
}

/// Loads the SDK configuration for KMS.
pub async fn kms_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = loader(
        settings,
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(KMS_ATTEMPT_TIMEOUT)
            .build(),
    );
    if let Some(endpoint) = &settings.kms_endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// Builds an S3 client.
pub async fn s3_client(settings: &AwsSettings) -> aws_sdk_s3::Client {
    let base = loader(
        settings,
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(S3_READ_TIMEOUT)
            .build(),
    )
    .load()
    .await;
    let mut config = aws_sdk_s3::config::Builder::from(&base);
    let custom_endpoint = settings.s3_endpoint.is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    if let Some(endpoint) = &settings.s3_endpoint {
        config = config.endpoint_url(endpoint);
    }
    config = config.force_path_style(settings.s3_path_style.unwrap_or(custom_endpoint));
    aws_sdk_s3::Client::from_conf(config.build())
}
