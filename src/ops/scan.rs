//! Scanning one object: what protects it, from its metadata (S3 reports server-side
//! encryption with every GET) and its first bytes only. Nothing is decrypted and no
//! key is used: a scan tells a user where a bucket stands before a migration.

use crate::format::DecodeLimits;
use crate::keys::describe_encrypted_data_keys;
use crate::s3ec::{self, Found};
use bytes::Bytes;

use crate::Error;
use crate::bridge::BlockingRead;
use crate::store::{Body, BoxFuture, ServerSide, SourceObject};

use super::Failed;

/// What protects one object: at rest on the server, and in the bytes themselves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protection {
    /// `none`, `SSE-S3`, `SSE-KMS KEY`, `SSE-KMS KEY (bucket key)`, `DSSE-KMS KEY`,
    /// `SSE-C`, or `local file`.
    pub server_side: String,
    /// `ESDK 0x0478 by KEYS`, `S3EC v3 ...`, `none`, ...
    pub client_side: String,
}

/// The server-side part of an object's [`Protection`].
pub fn server_side(sse: Option<&ServerSide>) -> String {
    let Some(sse) = sse else {
        return "local file".into();
    };
    if sse.customer_algorithm.is_some() {
        return "SSE-C".into();
    }
    let key = || {
        sse.kms_key
            .as_deref()
            .map_or_else(|| "(key not reported)".into(), crate::escape::text)
            .into_owned()
    };
    let bucket_key = if sse.bucket_key { " (bucket key)" } else { "" };
    match sse.algorithm.as_deref() {
        None => "none".into(),
        Some("AES256") => "SSE-S3".into(),
        Some("aws:kms") => format!("SSE-KMS {}{bucket_key}", key()),
        Some("aws:kms:dsse") => format!("DSSE-KMS {}", key()),
        Some(other) => format!("server-side {}", crate::escape::text(other)),
    }
}

/// Scans `source`: its metadata, then as much of its start as an ESDK header takes
/// (the first GET brought a few KiB; a longer header is read on).
pub async fn scan(source: SourceObject, limits: &DecodeLimits) -> Result<Protection, Failed> {
    let SourceObject { info, body } = source;
    // A local file's first bytes come with its first chunk, an S3 object's with its GET.
    let mut body = Prefixed {
        first: None,
        rest: body,
    };
    let head = if info.head.is_empty() && info.size > 0 {
        let first = body
            .rest
            .next_chunk()
            .await
            .map_err(|e| Failed::new("read", e))?
            .unwrap_or_default();
        body.first = Some(first.clone());
        first
    } else {
        info.head.clone()
    };
    let server_side = server_side(info.server_side.as_ref());
    let client_side = match s3ec::find(&info.meta.user) {
        Ok(Found::InstructionFile) => "S3EC instruction file".to_string(),
        Ok(Found::Envelope(e)) => format!(
            "S3EC {} {} ({} wrap)",
            e.generation,
            content(e.cipher),
            e.wrap
        ),
        Ok(Found::NeedsInstructionFile) => {
            "S3EC v3 committing AES-GCM (key in an instruction file)".into()
        }
        Err(e) => format!("S3EC, unreadable: {e}"),
        Ok(Found::Nothing) if info.size == 0 => "none (empty)".into(),
        Ok(Found::Nothing) if matches!(&head[..], [0x02, ..] | [0x01, 0x80, ..]) => {
            match super::read_header(&mut body, limits).await {
                Ok((header, _)) => format!(
                    "ESDK {} by {}",
                    header.body.suite,
                    describe_encrypted_data_keys(&header.body.encrypted_data_keys)
                ),
                Err(e) => format!("starts like an ESDK message but is not one: {e}"),
            }
        }
        // S3EC V1/V2 objects with an instruction file look like this too; their
        // instruction files are counted as such.
        Ok(Found::Nothing) => {
            "none recognised (plaintext, or a format sealpipe does not know)".into()
        }
    };
    Ok(Protection {
        server_side,
        client_side,
    })
}

fn content(cipher: s3ec::ContentCipher) -> &'static str {
    match cipher {
        s3ec::ContentCipher::CommittingAesGcm => "committing AES-GCM",
        s3ec::ContentCipher::AesGcm => "AES-GCM",
        s3ec::ContentCipher::AesCbc => "AES-CBC (unauthenticated)",
    }
}

/// A body with its first chunk already taken, given back first.
struct Prefixed {
    first: Option<Bytes>,
    rest: Box<dyn Body>,
}

impl Body for Prefixed {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        match self.first.take() {
            Some(first) => Box::pin(async move { Ok(Some(first)) }),
            None => self.rest.next_chunk(),
        }
    }

    fn into_blocking(self: Box<Self>) -> Result<Box<dyn BlockingRead>, Box<dyn Body>> {
        Err(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_labels() {
        let sse =
            |algorithm: Option<&str>, key: Option<&str>, bucket_key, customer: bool| ServerSide {
                algorithm: algorithm.map(str::to_string),
                kms_key: key.map(str::to_string),
                bucket_key,
                customer_algorithm: customer.then(|| "AES256".to_string()),
            };
        let label = |s: ServerSide| server_side(Some(&s));
        assert_eq!(server_side(None), "local file");
        assert_eq!(label(sse(None, None, false, false)), "none");
        assert_eq!(label(sse(Some("AES256"), None, false, false)), "SSE-S3");
        assert_eq!(
            label(sse(Some("aws:kms"), Some("arn:k"), true, false)),
            "SSE-KMS arn:k (bucket key)"
        );
        assert_eq!(
            label(sse(Some("aws:kms"), None, false, false)),
            "SSE-KMS (key not reported)"
        );
        assert_eq!(
            label(sse(Some("aws:kms:dsse"), Some("arn:k"), false, false)),
            "DSSE-KMS arn:k"
        );
        assert_eq!(label(sse(Some("AES256"), None, false, true)), "SSE-C");
        // A key name from a response is escaped.
        assert_eq!(
            label(sse(Some("aws:kms"), Some("a\nb"), false, false)),
            "SSE-KMS a\\nb"
        );
    }
}
