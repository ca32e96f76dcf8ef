//! The S3 Encryption Client's envelope: what its metadata (object headers, or an
//! instruction file beside the object) says about the data key and the content cipher.
//!
//! Three generations exist. V1 (the first Java client) wraps the key under `x-amz-key`
//! and encrypts content with AES-CBC; V2 (every client since) uses `x-amz-key-v2`,
//! `x-amz-wrap-alg`, `x-amz-cek-alg` and whole-object AES-GCM; V3 (Java v4, Python 4,
//! the key-committing clients) compresses the keys to one letter (`x-amz-c`, `x-amz-3`,
//! ...) and commits to the data key. Reading is strict the way the official clients
//! are: keys of two generations together, content keys in an instruction file, or an
//! unknown algorithm are refused, since each is how a tampered envelope would look.

use std::collections::BTreeMap;

use base64::Engine as _;

use super::S3ecError;

/// The suffix the clients give instruction files by default: `KEY.instruction`.
pub const INSTRUCTION_SUFFIX: &str = ".instruction";

/// The most an instruction file may hold: its JSON has a wrapped key, an IV and a
/// small context; a larger one is not an instruction file.
pub const MAX_INSTRUCTION_FILE: usize = 64 << 10;

// V1 and V2 metadata keys.
const KEY_V1: &str = "x-amz-key";
const KEY_V2: &str = "x-amz-key-v2";
const WRAP_ALG: &str = "x-amz-wrap-alg";
const MATDESC: &str = "x-amz-matdesc";
const IV: &str = "x-amz-iv";
const CEK_ALG: &str = "x-amz-cek-alg";
const TAG_LEN: &str = "x-amz-tag-len";
const INSTRUCTION_MARKER: &str = "x-amz-crypto-instr-file";
const UNENCRYPTED_LENGTH: &str = "x-amz-unencrypted-content-length";
// V3 (compressed) metadata keys.
const CEK_ALG_V3: &str = "x-amz-c";
const KEY_V3: &str = "x-amz-3";
const MATDESC_V3: &str = "x-amz-m";
const CONTEXT_V3: &str = "x-amz-t";
const WRAP_ALG_V3: &str = "x-amz-w";
const COMMITMENT_V3: &str = "x-amz-d";
const MESSAGE_ID_V3: &str = "x-amz-i";

/// Every key the clients write; an instruction file may hold no other.
const ENVELOPE_KEYS: [&str; 16] = [
    KEY_V1,
    KEY_V2,
    WRAP_ALG,
    MATDESC,
    IV,
    CEK_ALG,
    TAG_LEN,
    INSTRUCTION_MARKER,
    UNENCRYPTED_LENGTH,
    CEK_ALG_V3,
    KEY_V3,
    MATDESC_V3,
    CONTEXT_V3,
    WRAP_ALG_V3,
    COMMITMENT_V3,
    MESSAGE_ID_V3,
];

/// V3 keys that describe the content: they stay with the object, never in an
/// instruction file (one there means someone moved them).
const V3_CONTENT_KEYS: [&str; 3] = [CEK_ALG_V3, COMMITMENT_V3, MESSAGE_ID_V3];

/// Which generation of the format an envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// `x-amz-key`: the first Java client.
    V1,
    /// `x-amz-key-v2`.
    V2,
    /// `x-amz-3`: the compressed, key-committing format.
    V3,
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
        })
    }
}

/// How the data key is wrapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// `kms+context`: KMS `Encrypt`/`GenerateDataKey` with the stored context, which
    /// holds `aws:x-amz-cek-alg`.
    KmsContext,
    /// `kms`: the legacy KMS wrap; the context is the material description, with the
    /// key's ID under `kms_cmk_id`.
    Kms,
    /// `AES/GCM`: a raw AES-256 key wraps the data key with AES-GCM.
    AesGcm,
    /// Anything else (`RSA-OAEP-SHA1`, the V1 `AESWrap`, ...): named, never guessed at.
    Other(String),
}

impl std::fmt::Display for Wrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KmsContext => f.write_str("kms+context"),
            Self::Kms => f.write_str("kms"),
            Self::AesGcm => f.write_str("AES/GCM"),
            Self::Other(name) => f.write_str(&crate::escape::text(name)),
        }
    }
}

/// How the content is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentCipher {
    /// `AES/GCM/NoPadding`: one GCM over the whole object, the tag at its end, the IV
    /// in the metadata. Does not commit to its key.
    AesGcm,
    /// Suite 0x0073 (`115`): HKDF-SHA512 from the data key and the message ID derives
    /// the content key and a commitment the metadata carries; then one GCM with an IV
    /// of 0x01 bytes and the suite ID as AAD.
    CommittingAesGcm,
    /// `AES/CBC/PKCS5Padding`: unauthenticated; never read.
    AesCbc,
}

impl ContentCipher {
    /// The name the clients give it in metadata and in the KMS context.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesGcm => "AES/GCM/NoPadding",
            Self::CommittingAesGcm => "115",
            Self::AesCbc => "AES/CBC/PKCS5Padding",
        }
    }

    /// Whether it commits to its data key (as ESDK suites 0x0478 and 0x0578 do).
    pub fn commits(self) -> bool {
        self == Self::CommittingAesGcm
    }
}

/// The ID of the committing suite, as the bytes HKDF and the AAD use.
pub const COMMITTING_SUITE_ID: [u8; 2] = [0x00, 0x73];
/// Length of a V3 message ID (the HKDF salt) and of its commitment.
pub const MESSAGE_ID_LEN: usize = 28;
/// Length of a GCM IV.
pub const GCM_IV_LEN: usize = 12;

/// Everything needed to recover an S3EC object's data key and open its content.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Which generation wrote it.
    pub generation: Generation,
    /// How the data key is wrapped.
    pub wrap: Wrap,
    /// How the content is encrypted.
    pub cipher: ContentCipher,
    /// The wrapped data key (a KMS ciphertext blob for the KMS wraps).
    pub encrypted_key: Vec<u8>,
    /// The stored context: what KMS must be given back (`kms+context`), or the
    /// material description (`kms`, `AES/GCM`).
    pub context: BTreeMap<String, String>,
    /// The content IV (`AesGcm`), 12 bytes.
    pub iv: Vec<u8>,
    /// The message ID and the commitment (`CommittingAesGcm`).
    pub commitment: Option<Commitment>,
    /// Whether the envelope came from an instruction file.
    pub instruction_file: bool,
    /// `x-amz-unencrypted-content-length`, when written: not authenticated, a hint.
    pub plaintext_length: Option<u64>,
}

/// A V3 envelope's message ID and key commitment.
#[derive(Clone, Debug)]
pub struct Commitment {
    /// The HKDF salt.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// What the data key must derive.
    pub value: [u8; MESSAGE_ID_LEN],
}

/// What an object's own metadata says.
#[derive(Debug)]
pub enum Found {
    /// No S3EC key at all: an ESDK message, plaintext, or a V1/V2 object whose whole
    /// envelope is in an instruction file.
    Nothing,
    /// The object is an instruction file of another object.
    InstructionFile,
    /// The whole envelope.
    Envelope(Box<Envelope>),
    /// A V3 object whose key part is in an instruction file.
    NeedsInstructionFile,
}

/// Reads the envelope in `user` (an object's `x-amz-meta-*` metadata, keys lower case).
pub fn find(user: &BTreeMap<String, String>) -> Result<Found, S3ecError> {
    if user.contains_key(INSTRUCTION_MARKER) {
        return Ok(Found::InstructionFile);
    }
    let has = |key: &str| user.contains_key(key);
    if [KEY_V1, KEY_V2, KEY_V3].iter().any(|k| has(k)) {
        return parse(user, false).map(|e| Found::Envelope(Box::new(e)));
    }
    if V3_CONTENT_KEYS.iter().any(|k| has(k)) {
        return Ok(Found::NeedsInstructionFile);
    }
    if [
        WRAP_ALG,
        IV,
        CEK_ALG,
        MATDESC,
        WRAP_ALG_V3,
        CONTEXT_V3,
        MATDESC_V3,
    ]
    .iter()
    .any(|k| has(k))
    {
        return Err(S3ecError::Metadata(
            "the object has S3 Encryption Client metadata but no wrapped data key \
             (x-amz-key, x-amz-key-v2 or x-amz-3)"
                .into(),
        ));
    }
    Ok(Found::Nothing)
}

/// Whether `user` holds any S3EC metadata key.
pub fn has_envelope_keys(user: &BTreeMap<String, String>) -> bool {
    ENVELOPE_KEYS.iter().any(|k| user.contains_key(*k))
}

/// Removes the S3EC keys from metadata that travels to a decrypted or re-encrypted
/// output: they describe the old ciphertext, not the new object.
pub fn strip(user: &mut BTreeMap<String, String>) {
    for key in ENVELOPE_KEYS {
        user.remove(key);
    }
}

/// Reads the envelope from an instruction file's body (`json`) together with the
/// object's own metadata (`user`): V1 and V2 instruction files hold every key and the
/// object none; V3 ones hold the key part and the object the content part.
pub fn with_instruction_file(
    user: &BTreeMap<String, String>,
    json: &[u8],
) -> Result<Envelope, S3ecError> {
    if json.len() > MAX_INSTRUCTION_FILE {
        return Err(S3ecError::InstructionFile(format!(
            "it holds {} bytes, more than an instruction file can ({MAX_INSTRUCTION_FILE})",
            json.len()
        )));
    }
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| S3ecError::InstructionFile(format!("not a JSON object: {e}")))?;
    let mut merged = BTreeMap::new();
    for (key, value) in parsed {
        if !ENVELOPE_KEYS.contains(&key.as_str()) {
            return Err(S3ecError::InstructionFile(format!(
                "it holds {}, which is not an S3 Encryption Client key",
                crate::escape::text(&key)
            )));
        }
        if V3_CONTENT_KEYS.contains(&key.as_str()) {
            return Err(S3ecError::InstructionFile(format!(
                "it holds {key}, which only the object's own metadata may hold \
                 (the content part of a V3 envelope)"
            )));
        }
        let value = match value {
            serde_json::Value::String(s) => s,
            // Material descriptions are sometimes stored as JSON objects, not as
            // JSON in a string.
            other @ serde_json::Value::Object(_) => other.to_string(),
            other => {
                return Err(S3ecError::InstructionFile(format!(
                    "{key} is {other}, not a string"
                )));
            }
        };
        merged.insert(key, value);
    }
    if !merged
        .keys()
        .any(|k| [KEY_V1, KEY_V2, KEY_V3].contains(&k.as_str()))
    {
        return Err(S3ecError::InstructionFile(
            "it holds no wrapped data key (x-amz-key, x-amz-key-v2 or x-amz-3)".into(),
        ));
    }
    let v3 = merged.contains_key(KEY_V3);
    for (key, value) in user {
        if !ENVELOPE_KEYS.contains(&key.as_str()) {
            continue;
        }
        // A V1/V2 object keeps its envelope in one place; content keys beside an
        // instruction file mean the two were mixed.
        if !v3 && [IV, CEK_ALG, WRAP_ALG, KEY_V1, KEY_V2].contains(&key.as_str()) {
            return Err(S3ecError::Metadata(format!(
                "the object's metadata holds {key} although its envelope is in an \
                 instruction file"
            )));
        }
        if merged.insert(key.clone(), value.clone()).is_some() && key != UNENCRYPTED_LENGTH {
            return Err(S3ecError::Metadata(format!(
                "{key} is both in the object's metadata and in its instruction file"
            )));
        }
    }
    parse(&merged, true)
}

/// Parses a complete envelope.
fn parse(map: &BTreeMap<String, String>, instruction_file: bool) -> Result<Envelope, S3ecError> {
    let has = |key: &str| map.contains_key(key);
    let versions = [KEY_V1, KEY_V2, KEY_V3].iter().filter(|k| has(k)).count();
    if versions > 1 {
        return Err(S3ecError::Metadata(
            "the envelope holds wrapped keys of more than one format version \
             (tampered, or written by something other than an S3 Encryption Client)"
                .into(),
        ));
    }
    let plaintext_length = match map.get(UNENCRYPTED_LENGTH) {
        Some(n) => Some(n.trim().parse::<u64>().map_err(|_| {
            S3ecError::Metadata(format!(
                "{UNENCRYPTED_LENGTH} is {}, not a length",
                crate::escape::text(n)
            ))
        })?),
        None => None,
    };
    if has(KEY_V3) {
        return parse_v3(map, instruction_file, plaintext_length);
    }
    if [CEK_ALG_V3, COMMITMENT_V3, MESSAGE_ID_V3, WRAP_ALG_V3]
        .iter()
        .any(|k| has(k))
    {
        return Err(S3ecError::Metadata(
            "a V1/V2 envelope holds V3 content keys (x-amz-c, x-amz-d, x-amz-i or \
             x-amz-w): tampered"
                .into(),
        ));
    }
    let (generation, key_name) = if has(KEY_V1) {
        (Generation::V1, KEY_V1)
    } else {
        (Generation::V2, KEY_V2)
    };
    let cipher = match (generation, map.get(CEK_ALG).map(String::as_str)) {
        (_, Some("AES/GCM/NoPadding")) => ContentCipher::AesGcm,
        (_, Some("AES/CBC/PKCS5Padding")) | (Generation::V1, None) => ContentCipher::AesCbc,
        (_, Some(other)) => {
            return Err(S3ecError::Unsupported(format!(
                "content cipher {}",
                crate::escape::text(other)
            )));
        }
        (_, None) => return Err(missing(CEK_ALG)),
    };
    if let Some(bits) = map.get(TAG_LEN)
        && cipher == ContentCipher::AesGcm
        && bits.trim() != "128"
    {
        return Err(S3ecError::Unsupported(format!(
            "a {}-bit GCM tag (only 128 is written by the clients)",
            crate::escape::text(bits)
        )));
    }
    let wrap = match (generation, map.get(WRAP_ALG).map(String::as_str)) {
        (_, Some("kms+context")) => Wrap::KmsContext,
        (_, Some("kms")) => Wrap::Kms,
        (_, Some("AES/GCM")) => Wrap::AesGcm,
        (_, Some(other)) => Wrap::Other(other.to_string()),
        // The first client wrapped with a raw key without naming the algorithm.
        (Generation::V1, None) => Wrap::Other("AES (V1, unnamed)".into()),
        (_, None) => return Err(missing(WRAP_ALG)),
    };
    let iv = base64_field(map, IV)?;
    if cipher == ContentCipher::AesGcm && iv.len() != GCM_IV_LEN {
        return Err(S3ecError::Metadata(format!(
            "{IV} holds {} bytes; AES-GCM content needs {GCM_IV_LEN}",
            iv.len()
        )));
    }
    Ok(Envelope {
        generation,
        wrap,
        cipher,
        encrypted_key: base64_field(map, key_name)?,
        context: context_field(map, MATDESC)?,
        iv,
        commitment: None,
        instruction_file,
        plaintext_length,
    })
}

fn parse_v3(
    map: &BTreeMap<String, String>,
    instruction_file: bool,
    plaintext_length: Option<u64>,
) -> Result<Envelope, S3ecError> {
    if [IV, CEK_ALG, WRAP_ALG, MATDESC]
        .iter()
        .any(|k| map.contains_key(*k))
    {
        return Err(S3ecError::Metadata(
            "a V3 envelope holds V2 keys (x-amz-iv, x-amz-cek-alg, x-amz-wrap-alg or \
             x-amz-matdesc): tampered"
                .into(),
        ));
    }
    let cipher = match map.get(CEK_ALG_V3).map(String::as_str) {
        Some("115") => ContentCipher::CommittingAesGcm,
        Some("114") => ContentCipher::AesGcm,
        Some(other) => {
            return Err(S3ecError::Unsupported(format!(
                "content cipher {} in a V3 envelope",
                crate::escape::text(other)
            )));
        }
        None => return Err(missing(CEK_ALG_V3)),
    };
    if cipher != ContentCipher::CommittingAesGcm {
        return Err(S3ecError::Unsupported(
            "a V3 envelope without key commitment".into(),
        ));
    }
    let wrap = match map.get(WRAP_ALG_V3).map(String::as_str) {
        Some("12") => Wrap::KmsContext,
        Some("02") => Wrap::AesGcm,
        Some("22") => Wrap::Other("RSA-OAEP-SHA1".into()),
        Some(other) => {
            return Err(S3ecError::Unsupported(format!(
                "key wrap {} in a V3 envelope",
                crate::escape::text(other)
            )));
        }
        None => return Err(missing(WRAP_ALG_V3)),
    };
    // KMS keeps its context in x-amz-t; the raw wraps their description in x-amz-m.
    let context = match wrap {
        Wrap::KmsContext => context_field(map, CONTEXT_V3)?,
        _ => context_field(map, MATDESC_V3)?,
    };
    let fixed = |name| -> Result<[u8; MESSAGE_ID_LEN], S3ecError> {
        let bytes = base64_field(map, name)?;
        bytes.try_into().map_err(|b: Vec<u8>| {
            S3ecError::Metadata(format!(
                "{name} holds {} bytes, not {MESSAGE_ID_LEN}",
                b.len()
            ))
        })
    };
    Ok(Envelope {
        generation: Generation::V3,
        wrap,
        cipher,
        encrypted_key: base64_field(map, KEY_V3)?,
        context,
        iv: vec![1; GCM_IV_LEN],
        commitment: Some(Commitment {
            message_id: fixed(MESSAGE_ID_V3)?,
            value: fixed(COMMITMENT_V3)?,
        }),
        instruction_file,
        plaintext_length,
    })
}

fn missing(key: &str) -> S3ecError {
    S3ecError::Metadata(format!("{key} is missing"))
}

fn base64_field(map: &BTreeMap<String, String>, key: &str) -> Result<Vec<u8>, S3ecError> {
    decode_base64(key, map.get(key).ok_or_else(|| missing(key))?)
}

fn decode_base64(key: &str, value: &str) -> Result<Vec<u8>, S3ecError> {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| S3ecError::Metadata(format!("{key} is not base64")))
}

/// A context or material description: a JSON object of strings; absent means empty.
fn context_field(
    map: &BTreeMap<String, String>,
    key: &str,
) -> Result<BTreeMap<String, String>, S3ecError> {
    // Some writers store the unused one of x-amz-m and x-amz-t empty.
    let Some(json) = map.get(key).filter(|v| !v.trim().is_empty()) else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_str(json).map_err(|e| {
        S3ecError::Metadata(format!(
            "{key} is not a JSON object of strings: {}",
            crate::escape::text(&e.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const B64_12: &str = "AAECAwQFBgcICQoL";
    const B64_28: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";

    fn v2() -> BTreeMap<String, String> {
        map(&[
            (KEY_V2, "a2V5"),
            (WRAP_ALG, "kms+context"),
            (CEK_ALG, "AES/GCM/NoPadding"),
            (IV, B64_12),
            (TAG_LEN, "128"),
            (
                MATDESC,
                r#"{"aws:x-amz-cek-alg":"AES/GCM/NoPadding","a":"b"}"#,
            ),
        ])
    }

    fn v3() -> BTreeMap<String, String> {
        map(&[
            (KEY_V3, "a2V5"),
            (WRAP_ALG_V3, "12"),
            (CEK_ALG_V3, "115"),
            (MESSAGE_ID_V3, B64_28),
            (COMMITMENT_V3, B64_28),
            (CONTEXT_V3, r#"{"aws:x-amz-cek-alg":"115"}"#),
        ])
    }

    fn envelope(user: &BTreeMap<String, String>) -> Envelope {
        match find(user).unwrap() {
            Found::Envelope(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_v2_and_v3_envelopes() {
        let e = envelope(&v2());
        assert_eq!(
            (e.generation, e.wrap, e.cipher),
            (Generation::V2, Wrap::KmsContext, ContentCipher::AesGcm)
        );
        assert_eq!(e.encrypted_key, b"key");
        assert_eq!(e.context["a"], "b");
        assert_eq!(e.iv.len(), 12);
        let e = envelope(&v3());
        assert_eq!(e.cipher, ContentCipher::CommittingAesGcm);
        assert_eq!(e.context["aws:x-amz-cek-alg"], "115");
        assert_eq!(e.iv, vec![1; 12]);
        assert_eq!(e.commitment.unwrap().message_id[27], 27);
        assert!(matches!(find(&map(&[])).unwrap(), Found::Nothing));
        assert!(matches!(
            find(&map(&[("other", "x")])).unwrap(),
            Found::Nothing
        ));
    }

    #[test]
    fn refuses_mixed_or_malformed_envelopes() {
        let cases: Vec<(&str, BTreeMap<String, String>)> = vec![
            ("v1 and v2 keys", {
                let mut m = v2();
                m.insert(KEY_V1.into(), "a2V5".into());
                m
            }),
            ("v3 content keys in v2", {
                let mut m = v2();
                m.insert(COMMITMENT_V3.into(), B64_28.into());
                m
            }),
            ("v2 keys in v3", {
                let mut m = v3();
                m.insert(IV.into(), B64_12.into());
                m
            }),
            ("short iv", {
                let mut m = v2();
                m.insert(IV.into(), "AAEC".into());
                m
            }),
            ("bad base64", {
                let mut m = v2();
                m.insert(KEY_V2.into(), "***".into());
                m
            }),
            ("bad context", {
                let mut m = v2();
                m.insert(MATDESC.into(), "[1]".into());
                m
            }),
            ("short message id", {
                let mut m = v3();
                m.insert(MESSAGE_ID_V3.into(), B64_12.into());
                m
            }),
            ("unknown v3 wrap", {
                let mut m = v3();
                m.insert(WRAP_ALG_V3.into(), "99".into());
                m
            }),
            ("64-bit tag", {
                let mut m = v2();
                m.insert(TAG_LEN.into(), "64".into());
                m
            }),
            (
                "no key",
                map(&[(IV, B64_12), (CEK_ALG, "AES/GCM/NoPadding")]),
            ),
        ];
        for (what, user) in cases {
            assert!(find(&user).is_err(), "{what}");
        }
        // CBC parses (so it can be named) and is refused where content is opened.
        let mut m = v2();
        m.insert(CEK_ALG.into(), "AES/CBC/PKCS5Padding".into());
        m.insert(IV.into(), "AAECAwQFBgcICQoLDA0ODw==".into());
        assert_eq!(envelope(&m).cipher, ContentCipher::AesCbc);
    }

    #[test]
    fn instruction_files_merge_with_the_object() {
        let whole = serde_json::to_vec(&v2()).unwrap();
        let e = with_instruction_file(&BTreeMap::new(), &whole).unwrap();
        assert!(e.instruction_file);
        assert_eq!(e.wrap, Wrap::KmsContext);
        // V3: the key part in the file, the content part on the object.
        let all = v3();
        let (content, key): (BTreeMap<_, _>, BTreeMap<_, _>) = all
            .into_iter()
            .partition(|(k, _)| V3_CONTENT_KEYS.contains(&k.as_str()));
        assert!(matches!(
            find(&content).unwrap(),
            Found::NeedsInstructionFile
        ));
        let e = with_instruction_file(&content, &serde_json::to_vec(&key).unwrap()).unwrap();
        assert!(e.commitment.is_some());
        // Content keys moved into the file, foreign keys, non-JSON, an object with
        // content keys beside a V2 file: refused.
        let with_content = serde_json::to_vec(&v3()).unwrap();
        assert!(with_instruction_file(&BTreeMap::new(), &with_content).is_err());
        let mut foreign = v2();
        foreign.insert("x-amz-meta-evil".into(), "1".into());
        let foreign = serde_json::to_vec(&foreign).unwrap();
        assert!(with_instruction_file(&BTreeMap::new(), &foreign).is_err());
        assert!(with_instruction_file(&BTreeMap::new(), b"not json").is_err());
        assert!(with_instruction_file(&map(&[(IV, B64_12)]), &whole).is_err());
        assert!(with_instruction_file(&BTreeMap::new(), &vec![b' '; 70_000]).is_err());
    }

    #[test]
    fn strips_only_envelope_keys() {
        let mut m = v3();
        m.insert("owner".into(), "me".into());
        strip(&mut m);
        assert_eq!(m, map(&[("owner", "me")]));
        assert!(matches!(
            find(&map(&[(INSTRUCTION_MARKER, "")])).unwrap(),
            Found::InstructionFile
        ));
    }
}
