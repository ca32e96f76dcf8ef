//! Failed S3 requests: what they are called, which object they were about, what IAM
//! permission a denial points to, and whether to try again.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::retry::{Transience, classify_sdk_error};

/// A failed S3 request, naming the action and the object.
#[derive(Debug, thiserror::Error)]
#[error("S3 {action} {object}: {code}: {message}{hint}")]
pub struct S3Error {
    /// The S3 API action (`GetObject`, `PutObject`, ...).
    pub action: &'static str,
    /// The object (or bucket and prefix) it was about.
    pub object: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// S3 error code (`AccessDenied`, `NoSuchKey`, `PreconditionFailed`, ...).
    pub code: String,
    /// S3's message, or the transport error.
    pub message: String,
    pub(super) hint: String,
    /// The request failed in a way its own retries could not cover (its body was
    /// streamed as it was made, and is gone), but processing the object again can.
    pub restart: bool,
    /// Throttling, a timeout or a server fault that outlasted the retries: the same
    /// request may succeed later.
    pub transient: bool,
}

impl S3Error {
    /// Whether a conditional request found the object changed (HTTP 412): in-place
    /// jobs report this as a conflict.
    pub fn is_precondition_failed(&self) -> bool {
        self.status == Some(412) || self.code == "PreconditionFailed"
    }

    /// Whether S3 refused the request for lack of permission: `AccessDenied`, or a
    /// bare 403 (HEAD responses have no body to carry a code). Other 403 codes
    /// (`SignatureDoesNotMatch`, `InvalidAccessKeyId`, ...) are not about policies.
    pub(super) fn is_access_denied(&self) -> bool {
        self.code == "AccessDenied" || (self.status == Some(403) && self.code == "HTTP 403")
    }

    pub(super) fn new(
        action: &'static str,
        object: &dyn std::fmt::Display,
        code: &str,
        message: String,
    ) -> Self {
        Self {
            action,
            object: object.to_string(),
            status: None,
            code: code.to_string(),
            message,
            hint: String::new(),
            restart: false,
            transient: false,
        }
    }
}

/// What `action` needs in IAM terms, for AccessDenied hints.
fn permission(action: &str) -> &'static str {
    match action {
        "ListObjectsV2" => "s3:ListBucket",
        "GetObject" | "HeadObject" => "s3:GetObject (s3:GetObjectVersion for versions)",
        "GetObjectTagging" => "s3:GetObjectTagging",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "DeleteObjects" => "s3:DeleteObject",
        _ => "s3:PutObject (s3:PutObjectTagging with tags)",
    }
}

pub(super) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    action: &'static str,
    object: &dyn std::fmt::Display,
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> (Transience, S3Error) {
    let transience = classify_sdk_error(
        &err,
        &[
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "RequestLimitExceeded",
        ],
        &["InternalError", "RequestTimeout", "ServiceUnavailable"],
    );
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (code, message) = match &err {
        SdkError::ServiceError(e) => (
            e.err()
                .code()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {}", status.unwrap_or_default())),
            e.err().message().unwrap_or("(no message)").to_string(),
        ),
        other => ("request failed".to_string(), error_chain(other)),
    };
    let mut e = S3Error::new(action, object, &code, message);
    e.status = status;
    e.transient = transience != Transience::Permanent;
    if e.is_access_denied() {
        // [`retried`] appends the caller: finding it takes a request.
        e.hint = format!(
            " (the credentials need {}; check the IAM policy and the bucket policy)",
            permission(action)
        );
    }
    (transience, e)
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
