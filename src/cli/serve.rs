//! `sealpipe serve`: the service built from its settings, then served on its own
//! listener or as a Lambda function behind API Gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use sealpipe::format::EncryptionContext;
use sealpipe::keys::{DataKeyPool, DecryptCache, KmsArn, KmsKeyring};
use sealpipe::serve::{
    SecretClients, ServerKey, Service, Tls, TokenSource, TokenStore, listen, router,
};
use sealpipe::stream::{DecryptOptions, EncryptOptions};

use super::Outcome;
use super::keyref::{self, KmsSource};
use super::output::say;
use super::settings::{Aws, SERVE_TOKENS, ServeSettings};

/// Builds the service and serves until SIGINT or SIGTERM (or, as a Lambda function,
/// until Lambda ends the process).
pub async fn run(s: &ServeSettings, aws: &Aws, kms: &KmsSource) -> anyhow::Result<Outcome> {
    // Everything that can be refused is refused before a key or a token is read.
    if s.lambda {
        super::lambda::check_lambda_environment("serve --lambda", &|name| {
            std::env::var(name).ok()
        })?;
    }
    let address = if s.lambda {
        None
    } else {
        Some(listen_address(s)?)
    };
    let tls = match &s.tls {
        Some((cert, key)) => Some(Tls::from_pem_files(cert, key).map_err(|e| anyhow!("TLS: {e}"))?),
        None => None,
    };
    if let Some(dir) = &s.limits.spill_dir {
        // Found out now, not by the first large decrypt.
        tempfile::tempfile_in(dir).with_context(|| {
            format!(
                "--spill-dir {}: cannot make a temporary file there (or give --no-spill)",
                sealpipe::escape::path(dir)
            )
        })?;
    }
    let tokens = Arc::new(load_tokens(s, aws).await?);
    let keys = server_keys(s, kms).await?;
    let service = Arc::new(Service::new(
        keys,
        EncryptOptions {
            frame_length: s.write.frame_length.value,
            aead: s.aead.value,
            ..EncryptOptions::default()
        },
        DecryptOptions {
            commitment_policy: s.read.commitment_policy.value,
            limits: sealpipe::format::DecodeLimits {
                max_encrypted_data_keys: s.read.max_encrypted_data_keys.value,
                max_header_len: s.read.max_header_len.value,
                max_frame_length: s.read.max_frame_length.value,
            },
            aead: s.aead.value,
        },
        tokens.clone(),
        s.limits.clone(),
        kms.used().map(|c| c.stats.clone()),
        s.lambda,
    ));
    tokens.spawn_reloads(s.token_reload);
    let app = router(service);
    let Some(address) = address else {
        return serve_lambda(app).await;
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr().context("the listening address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The first line, always (also with --quiet): scripts and tests read the port here.
    say!("sealpipe serve: listening on {scheme}://{bound}");
    listen(listener, tls, app, s.limits.header_timeout, stop_signal())
        .await
        .context("the listener failed")?;
    // Stopping is how a server ends (systemd, Kubernetes): not an interruption.
    Ok(Outcome::Success)
}

/// The first SIGINT or SIGTERM: stop accepting, let the requests in progress finish.
async fn stop_signal() {
    if !super::stop_requested().await {
        // Without signals, the server runs until it is killed.
        return std::future::pending().await;
    }
    say!("sealpipe serve: stopping: no new connections; requests in progress finish");
}

/// The address to bind: plain HTTP only on loopback unless the operator says so, since
/// plaintext and tokens would cross the network in clear.
fn listen_address(s: &ServeSettings) -> anyhow::Result<SocketAddr> {
    let text = &s.listen.value;
    let address: SocketAddr = text.parse().map_err(|_| {
        anyhow!(
            "--listen {}: not an address (e.g. 127.0.0.1:8080, [::1]:8443, 0.0.0.0:8443)",
            sealpipe::escape::text(text)
        )
    })?;
    if !address.ip().is_loopback() && s.tls.is_none() && !s.insecure_listen {
        bail!(
            "--listen {address} is not a loopback address: plaintext and bearer tokens would \
             cross the network in clear. Give --tls-cert and --tls-key, or --insecure-listen \
             if a TLS proxy in front of the server terminates TLS"
        );
    }
    Ok(address)
}

async fn load_tokens(s: &ServeSettings, aws: &Aws) -> anyhow::Result<TokenStore> {
    let mut sources: Vec<TokenSource> = s
        .token_files
        .iter()
        .cloned()
        .map(TokenSource::File)
        .collect();
    if let Some(text) = &s.token_env {
        sources.push(TokenSource::Env {
            name: SERVE_TOKENS.into(),
            text: text.clone(),
        });
    }
    sources.extend(s.token_secrets.iter().cloned().map(TokenSource::Secret));
    sources.extend(
        s.token_parameters
            .iter()
            .cloned()
            .map(TokenSource::Parameter),
    );
    let clients = if s.token_secrets.is_empty() && s.token_parameters.is_empty() {
        None
    } else {
        let config = sealpipe::aws::service_config(&sealpipe::aws::AwsSettings {
            region: aws.region.value.clone(),
            profile: aws.profile.value.clone(),
            ..Default::default()
        })
        .await;
        Some(SecretClients {
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
        })
    };
    TokenStore::load(sources, clients)
        .await
        .map_err(|e| anyhow!("cannot load the tokens: {e}"))
}

/// One [`ServerKey`] per `--key`, each with its own pool and cache, each checked now
/// (a data key is generated), so a key the server cannot use stops it at start.
async fn server_keys(s: &ServeSettings, kms: &KmsSource) -> anyhow::Result<Vec<ServerKey>> {
    let refs = &s.write.keys;
    let mut keys = Vec::new();
    for name in &refs.refs.value {
        let keyring = keyref::keyring_from_refs(std::slice::from_ref(name), &refs.base, kms)
            .await?
            .remove(0);
        let kms_key = match keyref::kms_identifier(name) {
            Some(id) => Some(KmsKeyring::new(id, kms.context().await.clone())),
            None => None,
        };
        let pool = DataKeyPool::new(keyring.clone(), s.write.suite.value, s.pool.clone());
        pool.warm_up(&EncryptionContext::new())
            .await
            .with_context(|| format!("the key {name} cannot make data keys"))?;
        let (unwrapping, recorded_name) = match (&kms_key, keyref::wrapping_name(name)) {
            (_, Some(recorded)) => (keyring.clone(), Some(recorded)),
            (Some(_), None) => {
                // An alias or key ID: the data key just made names the key ARN KMS
                // used, which is what messages carry and what unwrapping matches.
                let made = pool
                    .materials(&EncryptionContext::new(), 0)
                    .await
                    .with_context(|| format!("the key {name} cannot make data keys"))?;
                let arn = made
                    .encrypted_data_keys
                    .first()
                    .and_then(|edk| String::from_utf8(edk.provider_info.clone()).ok())
                    .filter(|arn| KmsArn::parse(arn).is_some())
                    .ok_or_else(|| anyhow!("KMS named no key ARN for {name}"))?;
                let by_arn: Arc<dyn sealpipe::keys::Keyring> =
                    Arc::new(KmsKeyring::new(arn.clone(), kms.context().await.clone()));
                (by_arn, Some(arn))
            }
            (None, None) => (keyring.clone(), None),
        };
        let cache = DecryptCache::new(
            DecryptCache::DEFAULT_CAPACITY,
            s.pool.max_age,
            pool.stats().clone(),
        );
        keys.push(ServerKey {
            recorded_name,
            name: name.clone(),
            keyring,
            unwrapping,
            pool,
            cache,
            kms: kms_key,
        });
    }
    Ok(keys)
}

/// The request's URI with an HTTP API's named stage taken off the front of its raw
/// path (`/prod/v1/encrypt`): the stage is not part of the route. `None` if there is
/// nothing to take off.
fn without_stage(uri: &http::Uri, stage: Option<&str>) -> Option<http::Uri> {
    let stage = stage.filter(|s| !s.is_empty() && *s != "$default")?;
    let rest = uri.path().strip_prefix('/')?.strip_prefix(stage)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    with_path(uri, rest)
}

/// `uri` with its path replaced by `path` (its query kept); `None` if that is no URI.
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let path = if path.is_empty() { "/" } else { path };
    let text = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    text.parse().ok()
}

/// Answers API Gateway (REST or HTTP API) and function URL invocations with the same
/// routes. Lambda hands over whole bodies and takes whole responses.
async fn serve_lambda(app: axum::Router) -> anyhow::Result<Outcome> {
    use lambda_http::tower::ServiceExt as _;
    let handler = lambda_http::tower::service_fn(move |request: lambda_http::Request| {
        let app = app.clone();
        async move {
            use lambda_http::RequestExt as _;
            use lambda_http::request::RequestContext;
            // A REST API's event carries the path without its stage (lambda_http puts
            // the stage in front); an HTTP API's named stage is in its raw path.
            let route = match request.request_context_ref() {
                Some(RequestContext::ApiGatewayV1(_)) => {
                    with_path(request.uri(), request.raw_http_path())
                }
                Some(RequestContext::ApiGatewayV2(c)) => {
                    without_stage(request.uri(), c.stage.as_deref())
                }
                _ => None,
            };
            let (mut parts, body) = request.into_parts();
            if let Some(uri) = route {
                parts.uri = uri;
            }
            let bytes: Vec<u8> = match body {
                lambda_http::Body::Empty => Vec::new(),
                lambda_http::Body::Text(text) => text.into_bytes(),
                lambda_http::Body::Binary(bytes) => bytes,
                _ => {
                    use axum::response::IntoResponse as _;
                    let refused = sealpipe::serve::ApiError::bad_request(
                        "BadRequest",
                        "the invocation's body is of a kind this function does not take",
                    );
                    return Ok(refused.into_response());
                }
            };
            let request = http::Request::from_parts(parts, axum::body::Body::from(bytes));
            let response = app
                .oneshot(request)
                .await
                .map_err(|never| -> lambda_http::Error { match never {} })?;
            Ok::<_, lambda_http::Error>(response)
        }
    });
    lambda_http::run(handler)
        .await
        .map_err(|e| anyhow!("the Lambda runtime stopped: {e}"))?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_is_not_part_of_the_route() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        let cut = |u: &str, stage| without_stage(&uri(u), stage).map(|u| u.to_string());
        assert_eq!(
            cut("/prod/v1/encrypt?key=a", Some("prod")).as_deref(),
            Some("/v1/encrypt?key=a")
        );
        assert_eq!(cut("/prod", Some("prod")).as_deref(), Some("/"));
        assert_eq!(cut("/production/healthz", Some("prod")), None);
        assert_eq!(cut("/v1/encrypt", Some("$default")), None);
        assert_eq!(cut("/v1/encrypt", None), None);
    }
}
