//! The routes: who may call (tokens, rates, the concurrency cap), then the operation.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::Deserialize;

use super::auth::{Grant, Operation};
use super::body::{self, Held, RequestBody};
use super::error::ApiError;
use super::limits::{KMS_MAX_BODY, KMS_MAX_PLAINTEXT, MAX_JSON_BODY};
use super::{ServerKey, Service};
use crate::Error;
use crate::bridge::{self, Cancel, ChunkReader};
use crate::format::{EncryptionContext, Header};
use crate::keys::{DecryptionMaterials, KeyringError, wrapping_key_name};
use crate::stream::{EncryptingWriter, INLINE_BYTES, MessageDecryptor, encrypt_to_vec};

/// Bodies up to this size (by `Content-Length`) are read whole and answered whole;
/// larger or unsized ones stream.
const WHOLE_BODY: u64 = 4 << 20;

/// The header that carries an encryption context as a JSON object.
const CONTEXT_HEADER: &str = "x-encryption-context";

/// The API.
pub fn router(service: Arc<Service>) -> Router {
    let api = Router::new()
        .route("/v1/encrypt", post(encrypt))
        .route("/v1/decrypt", post(decrypt))
        .route("/v1/kms/encrypt", post(kms_encrypt))
        .route("/v1/kms/decrypt", post(kms_decrypt))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(service.clone(), admission))
        .with_state(service);
    // Outside the cap: a busy server is alive, and a liveness probe that got 503s
    // would have it restarted, requests in progress and all.
    Router::new().route("/healthz", get(healthz)).merge(api)
}

type Answer = Result<Response, ApiError>;

/// The route's name in metrics: one of a fixed set, whatever the client asked for.
fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/encrypt" => "encrypt",
        "/v1/decrypt" => "decrypt",
        "/v1/kms/encrypt" => "kms-encrypt",
        "/v1/kms/decrypt" => "kms-decrypt",
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        _ => "other",
    }
}

/// A request's place under `--max-concurrent`, and its deadline. It is shared: a
/// response that streams after its head (an encrypt as its body arrives, spilled
/// plaintext read back) keeps a clone until its last byte, so such responses count
/// against the cap, and keep the request's deadline, for as long as they run.
#[derive(Clone)]
pub(super) struct Slot {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
    /// When the request must be done, head and body.
    pub deadline: tokio::time::Instant,
}

/// Around every request: the concurrency cap, the request timeout, and the counters.
async fn admission(
    State(service): State<Arc<Service>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_name(request.uri().path());
    let metrics = service.metrics.clone();
    let response = match service.slots.clone().try_acquire_owned() {
        Err(_) => answer(Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "the server is answering {} requests already; retry shortly",
                service.limits.max_concurrent
            ),
        )
        .retry_after(std::time::Duration::from_secs(1)))),
        Ok(permit) => {
            let timeout = service.limits.request_timeout;
            request.extensions_mut().insert(Slot {
                _permit: Arc::new(permit),
                deadline: tokio::time::Instant::now() + timeout,
            });
            metrics
                .in_flight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let answered = tokio::time::timeout(timeout, next.run(request)).await;
            metrics
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            match answered {
                Ok(response) => response,
                Err(_) => answer(Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "RequestTimeout",
                    format!("the request took longer than {} s", timeout.as_secs_f64()),
                ))),
            }
        }
    };
    let status = response.status();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        metrics.error(code.0);
    }
    metrics.record(route, status.as_u16(), started.elapsed());
    response
}

/// Stops a body's pump when the request is dropped (its deadline passed, the client
/// went away): the codec reading from it then fails at once instead of holding its
/// thread for as long as the client keeps sending.
struct StopPump(tokio::task::AbortHandle);

impl Drop for StopPump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error code of a refused request, for the counters.
#[derive(Clone, Copy)]
struct ErrorCode(&'static str);

/// An answer, with its error code kept where the counters find it.
fn answer(result: Answer) -> Response {
    match result {
        Ok(response) => response,
        Err(mut e) => {
            let code = e.code;
            if let Some(detail) = e.detail.take() {
                log_failure(code, &detail);
            }
            let mut response = e.into_response();
            response.extensions_mut().insert(ErrorCode(code));
            response
        }
    }
}

/// A failure's whole story, for the operator: JSON logs get an event, text logs a line.
fn log_failure(code: &str, detail: &str) {
    if crate::events::enabled() {
        let mut fields = serde_json::Map::new();
        fields.insert("code".into(), code.into());
        fields.insert("error".into(), crate::events::untrusted(detail));
        crate::events::emit("request_failed", fields);
    } else {
        eprintln!("sealpipe serve: {code}: {}", crate::escape::text(detail));
    }
}

async fn not_found() -> Response {
    answer(Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such route: see /v1/encrypt, /v1/decrypt, /v1/kms/encrypt, /v1/kms/decrypt, \
         /metrics, /healthz",
    )))
}

async fn method_not_allowed() -> Response {
    answer(Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the /v1 routes take POST; /metrics and /healthz take GET",
    )))
}

async fn healthz() -> Response {
    json_response(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(service): State<Arc<Service>>, headers: HeaderMap) -> Response {
    answer(
        async {
            service.admit(&headers, Operation::Metrics)?;
            let mut pools: Vec<&crate::keys::PoolStats> = Vec::new();
            for key in &service.keys {
                pools.push(key.pool.stats());
            }
            let tokens = &service.tokens;
            let text = service.metrics.exposition(
                &pools,
                service.kms_stats.as_deref(),
                (
                    tokens.reloads_ok.load(std::sync::atomic::Ordering::Relaxed),
                    tokens
                        .reloads_failed
                        .load(std::sync::atomic::Ordering::Relaxed),
                ),
            );
            Ok((
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response())
        }
        .await,
    )
}

impl Service {
    /// The grant of the request's bearer token, if it may call `operation` now.
    fn admit(&self, headers: &HeaderMap, operation: Operation) -> Result<Arc<Grant>, ApiError> {
        let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", why);
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthorized("no Authorization header: send `Authorization: Bearer TOKEN`")
        })?;
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        let bytes = value.as_bytes();
        let presented = (bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer "))
            .then(|| bytes[7..].trim_ascii())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer TOKEN`"))?;
        let tokens = self.tokens.current();
        let grant = tokens
            .find(presented)
            .ok_or_else(|| unauthorized("unknown token"))?;
        if !grant.allows(operation) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("this token may not call {}", operation.name()),
            ));
        }
        if let Some(rates) = &self.rates
            && let Err(wait) = rates.admit(&grant.id)
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "this token's request rate is used up; retry after the Retry-After seconds",
            )
            .retry_after(wait));
        }
        Ok(grant)
    }

    /// The key a request names (`None`: the first), if the token may use it.
    fn key(&self, grant: &Grant, name: Option<&str>) -> Result<&ServerKey, ApiError> {
        let key = match name {
            None => &self.keys[0],
            Some(name) => self.keys.iter().find(|k| k.name == name).ok_or_else(|| {
                ApiError::bad_request(
                    "UnknownKey",
                    format!("this server has no key {name:?}; keys are named as given to --key"),
                )
            })?,
        };
        if !grant.allows_key(&key.name) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("this token may not use the key {}", key.shown()),
            ));
        }
        Ok(key)
    }

    /// The data key of a message, unwrapped by a key the token may use. Each key's own
    /// cache answers first, so a data key one token's key unwrapped is never handed to
    /// a token without that key.
    async fn unwrap(
        &self,
        grant: &Grant,
        header: &Header,
        reproduced: &EncryptionContext,
    ) -> Result<DecryptionMaterials, ApiError> {
        let mut first_error = None;
        for key in self.keys.iter().filter(|k| grant.allows_key(&k.name)) {
            match key
                .cache
                .materials(key.unwrapping.as_ref(), &header.body, reproduced)
                .await
            {
                Ok(m) => return Ok(m),
                Err(e)
                    if matches!(
                        e.root(),
                        Error::Keyring(KeyringError::NoMatchingKey {
                            transient: false,
                            ..
                        })
                    ) =>
                {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(ApiError::from_error(&e)),
            }
        }
        let names: Vec<String> = header
            .body
            .encrypted_data_keys
            .iter()
            .map(wrapping_key_name)
            .collect();
        let withheld = self.keys.iter().any(|k| {
            !grant.allows_key(&k.name)
                && k.recorded_name.as_ref().is_some_and(|n| names.contains(n))
        });
        if withheld {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "this message's data key is wrapped by a key this token may not use",
            ));
        }
        Err(match first_error {
            Some(e) => ApiError::from_error(&e),
            None => ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "this token may use none of this server's keys",
            ),
        })
    }

    fn body(&self, body: Body, limit: u64, slot: &Slot) -> (RequestBody, body::BodyFailure) {
        let pace = body::Pace {
            idle: self.limits.body_timeout,
            deadline: slot.deadline,
        };
        RequestBody::new(body, limit, pace, self.metrics.clone())
    }
}

/// What a request says besides its body: the key and the context, from the query
/// string and the context header.
#[derive(Default)]
struct Params {
    key: Option<String>,
    context: EncryptionContext,
}

fn params(uri: &Uri, headers: &HeaderMap) -> Result<Params, ApiError> {
    let mut p = Params::default();
    if let Some(value) = headers.get(CONTEXT_HEADER) {
        let pairs: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(value.as_bytes()).map_err(|e| {
                ApiError::bad_request(
                    "BadContext",
                    format!("X-Encryption-Context must be a JSON object of strings: {e}"),
                )
            })?;
        p.context = pairs.into();
    }
    for pair in uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = query_decode(value)?;
        match name {
            "key" => p.key = Some(value),
            "context" => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    ApiError::bad_request("BadContext", "context= takes KEY=VALUE")
                })?;
                if k.is_empty() {
                    return Err(ApiError::bad_request(
                        "BadContext",
                        "a context key is empty",
                    ));
                }
                p.context.insert(k, v);
            }
            other => {
                return Err(ApiError::bad_request(
                    "BadRequest",
                    format!("unknown query parameter {other:?} (expected key= or context=)"),
                ));
            }
        }
    }
    Ok(p)
}

fn query_decode(s: &str) -> Result<String, ApiError> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::bad_request("BadRequest", "a query value is not UTF-8"))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The answer to a body that failed: why the body stopped, if it did, else `e`.
fn body_or(failure: &body::BodyFailure, e: &Error) -> ApiError {
    failure
        .lock()
        .expect("not poisoned")
        .take()
        .unwrap_or_else(|| ApiError::from_error(e))
}

fn octets(bytes: impl Into<Body>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes.into(),
    )
        .into_response()
}

fn json_response(value: serde_json::Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        value.to_string(),
    )
        .into_response()
}

fn b64_field(value: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(value.trim())
        .map_err(|e| ApiError::bad_request("BadRequest", format!("{field} is not base64: {e}")))
}

/// Parses a JSON request body of at most `limit` bytes.
async fn json_body<T: serde::de::DeserializeOwned>(
    service: &Service,
    slot: &Slot,
    body: Body,
    limit: u64,
) -> Result<T, ApiError> {
    let (mut body, failure) = service.body(body, limit, slot);
    let bytes = body.collect().await.map_err(|e| body_or(&failure, &e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request("BadRequest", format!("the JSON body is not valid: {e}"))
    })
}

// ---- /v1/encrypt

async fn encrypt(
    State(service): State<Arc<Service>>,
    Extension(slot): Extension<Slot>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(encrypt_request(&service, &slot, &uri, &headers, body).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptJson {
    plaintext: String,
    #[serde(default)]
    context: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    key: Option<String>,
}

async fn encrypt_request(
    service: &Arc<Service>,
    slot: &Slot,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    let grant = service.admit(headers, Operation::Encrypt)?;
    let mut p = params(uri, headers)?;
    if is_json(headers) {
        let limit = MAX_JSON_BODY.min(service.limits.max_body.saturating_mul(4) / 3 + 1024);
        let request: EncryptJson = json_body(service, slot, body, limit).await?;
        let plaintext = b64_field(&request.plaintext, "plaintext")?;
        if let Some(pairs) = request.context {
            p.context = pairs.into();
        }
        let key = service.key(&grant, request.key.as_deref().or(p.key.as_deref()))?;
        let message = seal_whole(service, key, &p.context, Bytes::from(plaintext)).await?;
        return Ok(json_response(
            serde_json::json!({ "ciphertext": B64.encode(message) }),
        ));
    }
    let key = service.key(&grant, p.key.as_deref())?;
    let length = content_length(headers);
    if length.is_some_and(|n| n > service.limits.max_body) {
        return Err(ApiError::too_large(service.limits.max_body));
    }
    let (mut request_body, failure) = service.body(body, service.limits.max_body, slot);
    if service.buffered || length.is_some_and(|n| n <= WHOLE_BODY) {
        let plaintext = request_body
            .collect()
            .await
            .map_err(|e| body_or(&failure, &e))?;
        let message = seal_whole(service, key, &p.context, plaintext).await?;
        service
            .metrics
            .response_bytes
            .fetch_add(message.len() as u64, std::sync::atomic::Ordering::Relaxed);
        return Ok(octets(message));
    }
    // Streamed: the message's head goes out as soon as the data key is there; frames
    // follow as the plaintext arrives. A failure half-way cuts the response short, so
    // the client never sees a clean end of an incomplete message (nor would any ESDK
    // reader accept one: it has no final frame).
    let reserve = length.unwrap_or(service.limits.max_body);
    let materials = key
        .pool
        .materials(&p.context, reserve)
        .await
        .map_err(|e| ApiError::from_error(&e))?;
    let reader = ChunkReader::new(Box::new(request_body), Bytes::new(), Cancel::default());
    let (writer, response_body) = body::channel(service.metrics.clone(), pace(service, slot));
    let options = service.encrypt.clone();
    let metrics = service.metrics.clone();
    // The request's place under the cap goes with the work: the response streams on
    // after its head, and counts until its end.
    let slot = slot.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let sealed = bridge::codec("encrypt", move || {
            let mut reader = reader;
            let mut sealing = match EncryptingWriter::new(writer, &materials, &options) {
                Ok(w) => w,
                Err(e) => return Err(e.to_string()),
            };
            let copied = sealing.copy_from(&mut reader);
            if let Err(e) = copied {
                // The writer goes with `sealing`; the body ends short (see ChannelBody).
                return Err(e.to_string());
            }
            match sealing.finish() {
                Ok((writer, _)) => writer.finish().map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        if !matches!(sealed, Ok(Ok(()))) {
            let code = match failure.lock().expect("not poisoned").as_ref() {
                Some(e) => e.code,
                None => "StreamFailed",
            };
            metrics.error(code);
        }
    });
    Ok(octets(Body::new(response_body)))
}

/// How long a response may wait for its client: the body timeout per chunk, the
/// request's deadline in all.
fn pace(service: &Service, slot: &Slot) -> body::Pace {
    body::Pace {
        idle: service.limits.body_timeout,
        deadline: slot.deadline,
    }
}

/// Seals a plaintext held in memory into one message.
async fn seal_whole(
    service: &Service,
    key: &ServerKey,
    context: &EncryptionContext,
    plaintext: Bytes,
) -> Result<Vec<u8>, ApiError> {
    let materials = key
        .pool
        .materials(context, plaintext.len() as u64)
        .await
        .map_err(|e| ApiError::from_error(&e))?;
    // Small messages are sealed right here (microseconds; a hand-off would cost more),
    // unless the suite signs: an ECDSA signature takes about a millisecond.
    let small = plaintext.len() < INLINE_BYTES && materials.signing_key.is_none();
    let options = service.encrypt.clone();
    let seal = move || {
        let mut message = Vec::new();
        encrypt_to_vec(&materials, &options, None, &plaintext, &mut message).map(|()| message)
    };
    let sealed = if small {
        seal()
    } else {
        bridge::codec("encrypt", seal)
            .await
            .map_err(|e| ApiError::from_error(&e))?
    };
    sealed.map_err(|e| ApiError::from_error(&e))
}

// ---- /v1/decrypt

async fn decrypt(
    State(service): State<Arc<Service>>,
    Extension(slot): Extension<Slot>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(decrypt_request(&service, &slot, &uri, &headers, body).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecryptJson {
    ciphertext: String,
    #[serde(default)]
    context: Option<std::collections::BTreeMap<String, String>>,
}

async fn decrypt_request(
    service: &Arc<Service>,
    slot: &Slot,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Answer {
    let grant = service.admit(headers, Operation::Decrypt)?;
    let mut p = params(uri, headers)?;
    if p.key.is_some() {
        return Err(ApiError::bad_request(
            "BadRequest",
            "decrypt takes no key=: the message names the keys that wrapped its data key",
        ));
    }
    if is_json(headers) {
        let limit = MAX_JSON_BODY.min(service.limits.max_body.saturating_mul(4) / 3 + 1024);
        let request: DecryptJson = json_body(service, slot, body, limit).await?;
        let message = b64_field(&request.ciphertext, "ciphertext")?;
        if let Some(pairs) = request.context {
            p.context = pairs.into();
        }
        let mut input = &message[..];
        let (header, rest) = crate::stream::read_header(&mut input, &service.decrypt.limits)
            .map_err(|e| ApiError::from_error(&e))?;
        let decryptor = unlock(service, &grant, header, &p.context).await?;
        let context = context_json(decryptor.header());
        let tail = Bytes::copy_from_slice(input);
        let held = open_whole(service, decryptor, Bytes::from(rest), tail).await?;
        let Held::Memory(plaintext, _, _) = held else {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                "the plaintext is too large for a JSON answer; send the message as a raw body",
            ));
        };
        return Ok(json_response(serde_json::json!({
            "plaintext": B64.encode(&plaintext[..]),
            "context": context,
        })));
    }
    let length = content_length(headers);
    if length.is_some_and(|n| n > service.limits.max_body) {
        return Err(ApiError::too_large(service.limits.max_body));
    }
    let (mut request_body, failure) = service.body(body, service.limits.max_body, slot);
    let (header, rest) = crate::ops::read_header(&mut request_body, &service.decrypt.limits)
        .await
        .map_err(|e| body_or(&failure, &e))?;
    let decryptor = unlock(service, &grant, header, &p.context).await?;
    let context = context_header(decryptor.header());
    let held = if service.buffered || length.is_some_and(|n| n <= WHOLE_BODY) {
        let tail = request_body
            .collect()
            .await
            .map_err(|e| body_or(&failure, &e))?;
        open_whole(service, decryptor, rest, tail).await?
    } else {
        let mut reader = ChunkReader::new(Box::new(request_body), rest, Cancel::default());
        // Dropped with this request (its deadline, a client gone): the pump stops, and
        // the decrypt reading from it ends instead of holding its thread.
        let _stop = StopPump(reader.abort_handle());
        let mut held = Held::new(
            service.limits.max_in_memory,
            service.limits.spill_dir.clone(),
        );
        let opened = bridge::codec("decrypt", move || {
            decryptor.decrypt(&mut reader, &mut held).map(|_| held)
        })
        .await
        .map_err(|e| ApiError::from_error(&e))?;
        opened.map_err(|e| held_or(&failure, &e))?
    };
    let mut response =
        octets(held.into_body(service.metrics.clone(), pace(service, slot), slot.clone()));
    if let Some(value) = context {
        response.headers_mut().insert(CONTEXT_HEADER, value);
    }
    Ok(response)
}

/// A decrypt's failure: the body's reason if it stopped, 413 if the plaintext had
/// nowhere to go, else the message's fault.
fn held_or(failure: &body::BodyFailure, e: &Error) -> ApiError {
    if let Some(stopped) = failure.lock().expect("not poisoned").take() {
        return stopped;
    }
    if let Error::Io(io) = e.root()
        && io.to_string().contains(body::HELD_FULL)
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            body::HELD_FULL,
        );
    }
    ApiError::from_error(e)
}

/// Checks the policy, unwraps the data key with a key the token may use, and
/// authenticates the header.
async fn unlock(
    service: &Service,
    grant: &Grant,
    header: Header,
    reproduced: &EncryptionContext,
) -> Result<MessageDecryptor, ApiError> {
    crate::stream::check_policy(&header, &service.decrypt).map_err(|e| ApiError::from_error(&e))?;
    let materials = service.unwrap(grant, &header, reproduced).await?;
    MessageDecryptor::new(header, &materials, &service.decrypt)
        .map_err(|e| ApiError::from_error(&e))
}

/// Opens a message whose body is in memory (`rest` then `tail`).
async fn open_whole(
    service: &Service,
    decryptor: MessageDecryptor,
    rest: Bytes,
    tail: Bytes,
) -> Result<Held, ApiError> {
    let mut held = Held::new(
        service.limits.max_in_memory,
        service.limits.spill_dir.clone(),
    );
    let small = rest.len() + tail.len() < INLINE_BYTES;
    let open = move || {
        let mut body = std::io::Read::chain(&rest[..], &tail[..]);
        decryptor.decrypt(&mut body, &mut held).map(|_| held)
    };
    let opened = if small {
        open()
    } else {
        bridge::codec("decrypt", open)
            .await
            .map_err(|e| ApiError::from_error(&e))?
    };
    opened.map_err(|e| held_or(&body::BodyFailure::default(), &e))
}

/// The message's stored context as a JSON object.
fn context_json(header: &Header) -> serde_json::Value {
    context_json_of(&header.body.context)
}

fn context_json_of(context: &EncryptionContext) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = context
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::Value::Object(map)
}

/// The message's stored context for the `X-Encryption-Context` response header.
fn context_header(header: &Header) -> Option<HeaderValue> {
    HeaderValue::from_str(&ascii_json(&context_json(header).to_string())).ok()
}

/// JSON with everything outside printable ASCII escaped (`\uXXXX`, UTF-16 as JSON
/// has it), as a header value must be.
fn ascii_json(json: &str) -> String {
    let mut ascii = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    ascii
}

// ---- /v1/kms/encrypt and /v1/kms/decrypt: the direct method, one KMS call each

/// A `/v1/kms/*` JSON body, in KMS's own field names: `Plaintext` to encrypt,
/// `CiphertextBlob` to decrypt.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KmsJson {
    #[serde(rename = "Plaintext", default)]
    plaintext: Option<String>,
    #[serde(rename = "CiphertextBlob", default)]
    blob: Option<String>,
    #[serde(rename = "KeyId", default)]
    key_id: Option<String>,
    #[serde(rename = "EncryptionContext", default)]
    context: Option<std::collections::BTreeMap<String, String>>,
}

/// What a `/v1/kms/*` request carries, whichever form it came in.
struct KmsRequest {
    grant: Arc<Grant>,
    params: Params,
    /// The plaintext (encrypt) or the blob (decrypt).
    bytes: zeroize::Zeroizing<Vec<u8>>,
    json: bool,
}

/// Admits a `/v1/kms/*` request and reads it: a JSON body (its `field` in base64,
/// key and context beside it, over the query's), or a raw body of at most `raw_limit`
/// bytes, base64 text if `raw_base64`.
async fn kms_request(
    service: &Service,
    slot: &Slot,
    (uri, headers): (&Uri, &HeaderMap),
    body: Body,
    operation: Operation,
    (field, raw_limit, raw_base64): (&str, usize, bool),
) -> Result<KmsRequest, ApiError> {
    let grant = service.admit(headers, operation)?;
    let mut params = params(uri, headers)?;
    let json = is_json(headers);
    let bytes = if json {
        let request: KmsJson = json_body(service, slot, body, KMS_MAX_BODY as u64).await?;
        let (wanted, other) = match field {
            "Plaintext" => (request.plaintext, request.blob.is_some()),
            _ => (request.blob, request.plaintext.is_some()),
        };
        let value = match (wanted, other) {
            (Some(value), false) => value,
            _ => {
                return Err(ApiError::bad_request(
                    "BadRequest",
                    format!("the JSON body needs {field} (base64), and no other payload field"),
                ));
            }
        };
        if let Some(pairs) = request.context {
            params.context = pairs.into();
        }
        params.key = request.key_id.or(params.key);
        b64_field(&value, field)?
    } else {
        let (mut body, failure) = service.body(body, raw_limit as u64, slot);
        let raw = body.collect().await.map_err(|e| body_or(&failure, &e))?;
        if raw_base64 {
            let text = std::str::from_utf8(&raw).map_err(|_| {
                ApiError::bad_request("BadRequest", "the body must be the base64 CiphertextBlob")
            })?;
            b64_field(text, "the body")?
        } else {
            raw.to_vec()
        }
    };
    Ok(KmsRequest {
        grant,
        params,
        bytes: zeroize::Zeroizing::new(bytes),
        json,
    })
}

impl KmsRequest {
    /// The KMS key the request names, if the token may use it.
    fn key<'a>(&self, service: &'a Service) -> Result<&'a crate::keys::KmsKeyring, ApiError> {
        let key = service.key(&self.grant, self.params.key.as_deref())?;
        key.kms.as_ref().ok_or_else(|| {
            ApiError::bad_request(
                "NotAKmsKey",
                format!("{} is not a KMS key: /v1/kms routes need one", key.shown()),
            )
        })
    }
}

async fn kms_encrypt(
    State(service): State<Arc<Service>>,
    Extension(slot): Extension<Slot>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = ("Plaintext", KMS_MAX_PLAINTEXT, false);
            let r = kms_request(
                &service,
                &slot,
                (&uri, &headers),
                body,
                Operation::KmsEncrypt,
                form,
            )
            .await?;
            match r.bytes.len() {
                0 => {
                    return Err(ApiError::bad_request(
                        "BadRequest",
                        "KMS Encrypt takes 1 to 4096 bytes; the plaintext is empty",
                    ));
                }
                n if n > KMS_MAX_PLAINTEXT => {
                    return Err(ApiError::too_large(KMS_MAX_PLAINTEXT as u64));
                }
                _ => {}
            }
            let (arn, blob) = r
                .key(&service)?
                .encrypt_secret(&r.bytes, &r.params.context)
                .await
                .map_err(|e| ApiError::from_error(&Error::Keyring(e)))?;
            let blob = B64.encode(blob);
            Ok(if r.json {
                json_response(serde_json::json!({
                    "CiphertextBlob": blob,
                    "KeyId": arn,
                    "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                }))
            } else {
                (
                    [
                        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    blob,
                )
                    .into_response()
            })
        }
        .await,
    )
}

async fn kms_decrypt(
    State(service): State<Arc<Service>>,
    Extension(slot): Extension<Slot>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(
        async {
            let form = ("CiphertextBlob", KMS_MAX_BODY, true);
            let r = kms_request(
                &service,
                &slot,
                (&uri, &headers),
                body,
                Operation::KmsDecrypt,
                form,
            )
            .await?;
            let (arn, plaintext) = r
                .key(&service)?
                .decrypt_secret(&r.bytes, &r.params.context)
                .await
                .map_err(|e| ApiError::from_error(&Error::Keyring(e)))?;
            Ok(if r.json {
                json_response(serde_json::json!({
                    "Plaintext": B64.encode(&*plaintext),
                    "KeyId": arn,
                    "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                }))
            } else {
                octets(plaintext.to_vec())
            })
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_header_give_the_key_and_context() {
        let uri: Uri = "/v1/encrypt?key=alias%2Fapp&context=tenant=acme&context=path=a%3Db+c"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTEXT_HEADER,
            HeaderValue::from_static(r#"{"from":"header"}"#),
        );
        let p = params(&uri, &headers).unwrap();
        assert_eq!(p.key.as_deref(), Some("alias/app"));
        assert_eq!(p.context.get("tenant"), Some("acme"));
        assert_eq!(p.context.get("path"), Some("a=b c"));
        assert_eq!(p.context.get("from"), Some("header"));
        for bad in [
            "/x?context=novalue",
            "/x?context==v",
            "/x?other=1",
            "/x?key=%FF",
        ] {
            let uri: Uri = bad.parse().unwrap();
            assert!(params(&uri, &HeaderMap::new()).is_err(), "{bad}");
        }
        headers.insert(CONTEXT_HEADER, HeaderValue::from_static(r#"{"n":1}"#));
        assert!(params(&"/x".parse().unwrap(), &headers).is_err());
    }

    #[test]
    fn the_context_header_is_printable_ascii_json() {
        let context: EncryptionContext = [("tenant", "é\u{1F600}"), ("line", "a\nb\u{7f}")]
            .into_iter()
            .collect();
        let json = context_json_of(&context).to_string();
        let value = ascii_json(&json);
        let text = HeaderValue::from_str(&value).unwrap();
        let back: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(back.get("tenant").unwrap(), "é\u{1F600}");
        assert_eq!(back.get("line").unwrap(), "a\nb\u{7f}");
        assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "{value}");
    }
}
