//! Object metadata and tags between S3's wire forms and [`ObjectMeta`]: the headers a
//! GET or HEAD returns, the ones a PUT or CreateMultipartUpload sets, tags as a query
//! string.

/// Metadata from a GetObject or HeadObject response (the two types share accessors).
macro_rules! object_meta {
    ($out:expr) => {
        ObjectMeta {
            content_type: $out.content_type().map(str::to_string),
            cache_control: $out.cache_control().map(str::to_string),
            content_disposition: $out.content_disposition().map(str::to_string),
            content_encoding: $out.content_encoding().map(str::to_string),
            content_language: $out.content_language().map(str::to_string),
            expires: $out.expires_string().map(str::to_string),
            user: user_metadata($out.metadata()),
            tags: Vec::new(),
            mode: None,
        }
    };
}

/// Server-side encryption from a GetObject or HeadObject response.
macro_rules! server_side {
    ($out:expr) => {
        crate::store::ServerSide {
            algorithm: $out
                .server_side_encryption()
                .map(|a| a.as_str().to_string()),
            kms_key: $out.ssekms_key_id().map(str::to_string),
            bucket_key: $out.bucket_key_enabled().unwrap_or(false),
            customer_algorithm: $out.sse_customer_algorithm().map(str::to_string),
        }
    };
}

/// Sets metadata and write options on a PutObject or CreateMultipartUpload request
/// (the two builders share setters).
macro_rules! with_meta {
    ($request:expr, $meta:expr, $settings:expr) => {{
        let meta: &ObjectMeta = $meta;
        let settings: &S3Settings = $settings;
        let mut r = $request
            .set_content_type(meta.content_type.clone())
            .set_cache_control(meta.cache_control.clone())
            .set_content_disposition(meta.content_disposition.clone())
            .set_content_encoding(meta.content_encoding.clone())
            .set_content_language(meta.content_language.clone())
            .set_expires(meta.expires.as_deref().and_then(http_date))
            .set_metadata(Some(meta.user.clone().into_iter().collect()))
            .set_tagging((!meta.tags.is_empty()).then(|| tagging(&meta.tags)))
            .set_storage_class(settings.storage_class.as_deref().map(StorageClass::from))
            .set_ssekms_key_id(settings.sse_kms_key_id.clone());
        if let Some(sse) = &settings.server_side_encryption {
            let sse = ServerSideEncryption::from(sse.as_str());
            r = r.bucket_key_enabled(sse == ServerSideEncryption::AwsKms);
            r = r.server_side_encryption(sse);
        }
        r
    }};
}

pub(super) fn user_metadata(
    m: Option<&std::collections::HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

pub(super) fn http_date(s: &str) -> Option<aws_smithy_types::DateTime> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate).ok()
}

/// Tags as the `x-amz-tagging` header wants them: a URL query string.
pub(super) fn tagging(tags: &[(String, String)]) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const QUERY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY),
                utf8_percent_encode(v, QUERY)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

pub(super) use {object_meta, server_side, with_meta};
