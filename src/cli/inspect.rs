//! `sealpipe inspect`: a message header as JSON, without any key.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use sealpipe::escape;
use sealpipe::format::{ContentType, DecodeLimits, MessageVersion};
use sealpipe::keys::raw_aes_key_name;
use serde_json::json;

use super::Outcome;

pub fn run(path: &Path) -> anyhow::Result<Outcome> {
    let shown = escape::path(path);
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let (header, _) =
        sealpipe::stream::read_header(&mut BufReader::new(file), &DecodeLimits::default())
            .with_context(|| format!("{shown} is not a readable ESDK message"))?;
    let body = &header.body;
    let edks: Vec<_> = body
        .encrypted_data_keys
        .iter()
        .map(|edk| {
            let raw_aes = raw_aes_key_name(&edk.provider_info)
                .map(|name| String::from_utf8_lossy(name).into_owned());
            json!({
                "provider_id": edk.provider_id,
                "provider_info": match std::str::from_utf8(&edk.provider_info) {
                    Ok(s) if raw_aes.is_none() => s.to_string(),
                    _ => hex::encode(&edk.provider_info),
                },
                "key_name": raw_aes,
                "ciphertext_length": edk.ciphertext.len(),
            })
        })
        .collect();
    let doc = json!({
        // Lossless, so a name that is not UTF-8 still names the file; the JSON writer
        // escapes what a terminal must not see in the message's own strings.
        "file": shown,
        "version": match body.suite.version { MessageVersion::V1 => "1.0", MessageVersion::V2 => "2.0" },
        "suite": { "id": format!("0x{:04X}", body.suite.id), "name": body.suite.name() },
        "message_id": hex::encode(&body.message_id),
        "encryption_context": body.context.as_map(),
        "encrypted_data_keys": edks,
        "content_type": match body.content_type { ContentType::Framed => "framed", ContentType::NonFramed => "non-framed" },
        "frame_length": body.frame_length,
        "commitment": (!body.suite_data.is_empty()).then(|| hex::encode(&body.suite_data)),
        "header_length": header.len(),
    });
    super::output::stdout_line(&super::json::to_string_pretty(&doc)?)?;
    Ok(Outcome::Success)
}
