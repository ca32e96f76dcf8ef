//! Every refusal and failure as an HTTP status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Error;
use crate::keys::KeyringError;

/// An answer that is not a success.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// For a human; escaped: it may quote what a client sent or a message carried.
    pub message: String,
    /// `Retry-After`, in seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// What the server's log gets besides: details a client must not see (the
    /// server's own principal in a KMS denial, advice about its key policy).
    pub detail: Option<String>,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: crate::escape::text(&message.into()).into_owned(),
            retry_after: None,
            detail: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 413 for a body over `limit` bytes.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the request body is larger than this route takes ({limit} bytes)"),
        )
    }

    /// 408 after `idle` without body bytes.
    pub fn body_timeout(idle: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            format!("no request body bytes arrived for {} s", idle.as_secs_f64()),
        )
    }

    /// Adds what only the server's log gets.
    pub fn with_detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Sets `Retry-After`.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        self
    }

    /// The answer to a failed encrypt, decrypt or KMS call: statuses by cause. A
    /// message that does not authenticate or parse is the client's (400); a key that is
    /// not this server's is too; KMS throttling is 503 with a retry hint; other KMS and
    /// keyring failures are 502 (the server's upstream failed, not the request).
    pub fn from_error(e: &Error) -> Self {
        let root = e.root();
        let text = e.to_string();
        match root {
            _ if root.is_authentication_failure() => {
                Self::bad_request("AuthenticationFailed", text)
            }
            Error::Decode(_) | Error::Truncated(_) | Error::TrailingData => {
                Self::bad_request("NotAValidMessage", text)
            }
            Error::FrameSequence { .. } => Self::bad_request("NotAValidMessage", text),
            Error::CommitmentPolicy { .. } | Error::UnsupportedSuite { .. } => {
                Self::bad_request("CommitmentPolicy", text)
            }
            Error::Context(_) => Self::bad_request("ContextMismatch", text),
            Error::TooLarge(_) | Error::Resource { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "LimitExceeded", text)
            }
            Error::Keyring(KeyringError::NoMatchingKey {
                transient: false, ..
            }) => Self::bad_request("NoMatchingKey", text),
            Error::Encode(_) => Self::bad_request("BadContext", text),
            // KMS refused what the client sent: a blob that is not a ciphertext, or not
            // under this key with this context.
            Error::Keyring(KeyringError::Kms { action, code, .. })
                if matches!(
                    code.as_str(),
                    "InvalidCiphertextException" | "IncorrectKeyException" | "ValidationException"
                ) =>
            {
                Self::bad_request(
                    "InvalidCiphertext",
                    format!(
                        "KMS {action} refused the request ({code}): the blob was not made under \
                         this key with this encryption context"
                    ),
                )
                .with_detail(text)
            }
            Error::Keyring(k) if k.is_transient() => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "KmsUnavailable", text)
                    .retry_after(Duration::from_secs(1))
            }
            Error::Keyring(KeyringError::Kms { action, code, .. }) => Self::new(
                StatusCode::BAD_GATEWAY,
                "KmsError",
                format!("KMS {action} failed: {code} (the server's log says more)"),
            )
            .with_detail(text),
            Error::Keyring(KeyringError::Unwrap { .. }) => Self::new(
                StatusCode::BAD_GATEWAY,
                "KmsError",
                "the data key could not be unwrapped (the server's log says more)",
            )
            .with_detail(text),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", text),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Errors are never cached, and never guessed at as another type.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
