//! Telling objects the S3 Encryption Client wrote from ESDK messages, and finding
//! their envelope: in the object's metadata, or in its instruction file beside it.

use crate::ops::Failed;
use crate::s3ec::{self, Envelope, Found, INSTRUCTION_SUFFIX, MAX_INSTRUCTION_FILE};
use crate::store::{ObjectId, S3Store, SourceInfo};

use super::SourceFormat;

/// How an opened object is to be read.
pub(super) enum Reading {
    /// As an ESDK message.
    Esdk,
    /// As an S3EC object with this envelope.
    S3ec(Box<Envelope>),
    /// Not at all: it is an instruction file, read with its object.
    InstructionFile,
}

/// How the object `id` (opened: `info`) is to be read, under `format`. Only S3
/// objects carry S3EC envelopes (a local file has no metadata); an S3 object without
/// any, whose first bytes are no ESDK header, gets one GET of its instruction file.
pub(super) async fn reading(
    s3: Option<&S3Store>,
    id: &ObjectId,
    info: &SourceInfo,
    format: SourceFormat,
) -> Result<Reading, Failed> {
    let ObjectId::S3 { bucket, key, .. } = id else {
        return Ok(Reading::Esdk);
    };
    if format == SourceFormat::Esdk {
        return Ok(Reading::Esdk);
    }
    let invalid = |e: s3ec::S3ecError| Failed::new("decrypt", e);
    let found = s3ec::find(&info.meta.user).map_err(invalid)?;
    let required = match found {
        Found::InstructionFile => return Ok(Reading::InstructionFile),
        Found::Envelope(e) => return Ok(Reading::S3ec(e)),
        Found::NeedsInstructionFile => true,
        Found::Nothing if format == SourceFormat::S3ec => true,
        Found::Nothing if looks_like_esdk(&info.head) => return Ok(Reading::Esdk),
        Found::Nothing => false,
    };
    let Some(s3) = s3 else {
        return Ok(Reading::Esdk);
    };
    let instruction = ObjectId::s3(bucket, &format!("{key}{INSTRUCTION_SUFFIX}"), None);
    let fetched = s3
        .get_small(&instruction, MAX_INSTRUCTION_FILE)
        .await
        .map_err(|e| Failed::new("read instruction file", e))?;
    match fetched {
        Some((json, _)) => s3ec::with_instruction_file(&info.meta.user, &json)
            .map(|e| Reading::S3ec(Box::new(e)))
            .map_err(|e| Failed::new(&format!("read {instruction}"), e)),
        None if required => Err(Failed::new(
            "decrypt",
            s3ec::S3ecError::InstructionFile(format!(
                "{instruction} does not exist, and the object's own metadata holds no \
                 complete S3 Encryption Client envelope"
            )),
        )),
        // Neither an ESDK message nor an S3EC object: decrypting says what it is not.
        None => Ok(Reading::Esdk),
    }
}

/// Whether `head` starts like an ESDK message: version 2, or version 1 of type 0x80.
fn looks_like_esdk(head: &[u8]) -> bool {
    matches!(head, [0x02, ..] | [0x01, 0x80, ..])
}
