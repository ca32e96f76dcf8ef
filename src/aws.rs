//! AWS configuration shared by the KMS (and, later, S3) clients: the standard
//! credential chain, region and profile, endpoint overrides, timeouts, and SDK retries
//! switched off (sealpipe retries with its own policy, so the two never multiply).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

/// Overrides on top of the environment (`AWS_REGION`, `AWS_PROFILE`,
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KMS`, ...), which the SDK reads itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Region for calls whose key does not name one (IDs and aliases).
    pub region: Option<String>,
    /// Named profile from the shared config files.
    pub profile: Option<String>,
    /// Endpoint for KMS, e.g. a local test server.
    pub kms_endpoint: Option<String>,
}

/// How long one KMS attempt may take before it counts as a (retryable) timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Loads the SDK configuration for KMS.
pub async fn kms_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(endpoint) = &settings.kms_endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}
