//! AWS configuration shared by the KMS and S3 clients: the standard credential chain,
//! region and profile, endpoint overrides, timeouts, and SDK retries switched off
//! (sealpipe retries with its own policy, so the two never multiply).
//!
//! Every client (and every credential provider: IMDS, ECS, SSO, web identity) uses the
//! one HTTPS stack built here, hyper 1 with rustls on ring: the SDK crates are built
//! without their default clients (see `Cargo.toml`).
//!
//! It also names the caller when AWS denies a call ([`caller_hint`]): the principal's
//! ARN is what a key policy or bucket policy has to name, and it is looked up only
//! then, once per process.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder as HttpClientBuilder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::sync::OnceCell;

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

/// The HTTPS client of every AWS call: hyper 1, rustls with ring (the crypto library
/// sealpipe already uses, so no second one such as aws-lc is built), the platform's
/// trusted roots, and `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` honoured as by the SDK's
/// default client. One per configuration, not per process: its pooled connections
/// belong to the tokio runtime that opened them.
///
/// `build_with_connector_fn` is what the SDK's own default client is built with; the
/// public `build_https` would drop the proxy settings.
pub fn http_client() -> SharedHttpClient {
    HttpClientBuilder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

fn loader(settings: &AwsSettings, timeouts: TimeoutConfig) -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
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

/// Loads the SDK configuration for the other services sealpipe calls (Secrets
/// Manager, SSM): KMS's timeouts, and endpoints only from the environment
/// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_SSM`).
pub async fn service_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    loader(
        settings,
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(KMS_ATTEMPT_TIMEOUT)
            .build(),
    )
    .load()
    .await
}

/// An S3 client and the configuration it was built from. The client cannot hand its
/// credentials provider back (the SDK's accessor always answers `None`), so naming the
/// caller of a denied request ([`caller_hint`]) starts from `base`.
#[derive(Clone, Debug)]
pub struct S3Client {
    /// The client.
    pub client: aws_sdk_s3::Client,
    /// Credentials, HTTP client, timeouts and region it was built from.
    pub base: aws_config::SdkConfig,
    /// Whether requests go over plain HTTP (a custom `http://` endpoint): then only a
    /// signature protects what is sent, and bodies whose integrity nothing else checks
    /// are signed.
    pub plain_http: bool,
}

/// Builds an S3 client.
pub async fn s3_client(settings: &AwsSettings) -> S3Client {
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
    let endpoint = settings
        .s3_endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    S3Client {
        client: aws_sdk_s3::Client::from_conf(config.build()),
        base,
        plain_http: endpoint.is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("http://")),
    }
}

/// Who the credentials belong to, as a hint suffix: `; caller: ARN`, or
/// `; caller unknown: WHY`. Looked up with STS `GetCallerIdentity` on the first call
/// (only ever made after AWS denied a request, so a run that is not denied sends no
/// extra request), then remembered for the rest of the process, failures included:
/// every later denial answers at once, without another request.
///
/// `sts` builds the client for the lookup; it should carry the credentials, region and
/// endpoint of the client that was denied ([`sts_client`]).
pub async fn caller_hint(sts: impl FnOnce() -> Option<aws_sdk_sts::Client>) -> String {
    static CALLER: OnceCell<String> = OnceCell::const_new();
    let caller = CALLER
        .get_or_init(|| async {
            let Some(sts) = sts() else {
                return "caller unknown: no AWS configuration to ask STS with".into();
            };
            match sts.get_caller_identity().send().await {
                Ok(out) => match out.arn() {
                    Some(arn) => format!("caller: {arn}"),
                    None => "caller unknown: GetCallerIdentity named no ARN".into(),
                },
                Err(e) => format!(
                    "caller unknown: STS GetCallerIdentity failed: {}",
                    DisplayErrorContext(&e)
                ),
            }
        })
        .await;
    format!("; {caller}")
}

/// An STS client with everything of `base` (credentials, HTTP client, timeouts, retries
/// off, endpoint: `AWS_ENDPOINT_URL_STS`, else the one the base configuration was
/// loaded with), in `region` if given.
pub fn sts_client(base: &aws_config::SdkConfig, region: Option<&str>) -> aws_sdk_sts::Client {
    let mut conf = aws_sdk_sts::config::Builder::from(base);
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        conf = conf.region(aws_sdk_sts::config::Region::new(region.to_string()));
    }
    aws_sdk_sts::Client::from_conf(conf.build())
}
