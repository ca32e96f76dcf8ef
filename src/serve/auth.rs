//! Bearer tokens: who may call which operation with which key.
//!
//! Only SHA-256 digests of tokens are kept, whether the token file holds a token or its
//! digest: a presented token is hashed and compared with every digest, each comparison
//! constant-time and none cut short, so neither the time to answer nor a memory dump
//! tells a caller anything about the tokens.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a request does; each route is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /v1/encrypt`.
    Encrypt,
    /// `POST /v1/decrypt`.
    Decrypt,
    /// `POST /v1/kms/encrypt`.
    KmsEncrypt,
    /// `POST /v1/kms/decrypt`.
    KmsDecrypt,
    /// `GET /metrics`.
    Metrics,
}

impl Operation {
    /// Every operation, in the order the token file names them.
    pub const ALL: [Operation; 5] = [
        Operation::Encrypt,
        Operation::Decrypt,
        Operation::KmsEncrypt,
        Operation::KmsDecrypt,
        Operation::Metrics,
    ];

    /// The name in token files and errors.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::KmsEncrypt => "kms-encrypt",
            Operation::KmsDecrypt => "kms-decrypt",
            Operation::Metrics => "metrics",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == s)
    }
}

/// What one token may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// A short, non-secret name for logs and rate limits: the first 12 hex digits of
    /// the token's SHA-256.
    pub id: String,
    operations: u8,
    /// The `--key` references it may use; `None`: all of them.
    keys: Option<Vec<String>>,
}

impl Grant {
    /// Whether the token may call `operation`.
    pub fn allows(&self, operation: Operation) -> bool {
        self.operations & operation.bit() != 0
    }

    /// Whether the token may use the server key named `key`.
    pub fn allows_key(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|keys| keys.iter().any(|k| k == key))
    }
}

/// The shortest token accepted in a token file: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// A set of tokens, parsed from one or more token files.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Arc<Grant>)>,
}

impl Tokens {
    /// Parses a token file: one token per line, `TOKEN` or `sha256:HEX`, optionally
    /// followed by the operations it may use (`encrypt,decrypt`, `*` for all) and
    /// `keys=REF,REF`. `#` starts a comment line. `origin` names the file in errors;
    /// errors never quote a token.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: String| format!("{origin}, line {}: {what}", n + 1);
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default();
            let digest = match token.strip_prefix("sha256:") {
                Some(hex) => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex, &mut digest).map_err(|_| {
                        at("sha256: needs the token's SHA-256 as 64 hex digits".into())
                    })?;
                    digest
                }
                None => {
                    if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(at(format!(
                            "a token must be at least {MIN_TOKEN_LEN} visible ASCII characters \
                             (e.g. `openssl rand -hex 32`)"
                        )));
                    }
                    Sha256::digest(token.as_bytes()).into()
                }
            };
            let mut operations = None;
            let mut keys = None;
            for word in words {
                if let Some(list) = word.strip_prefix("keys=") {
                    let list: Vec<String> = list
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect();
                    if list.is_empty() {
                        return Err(at("keys= names no key".into()));
                    }
                    keys = Some(list);
                } else if operations.is_none() {
                    operations = Some(parse_operations(word).map_err(at)?);
                } else {
                    return Err(at(format!(
                        "unexpected \"{}\": a line is TOKEN [OPERATIONS] [keys=REF,...]",
                        crate::escape::text(word)
                    )));
                }
            }
            let id = hex::encode(&digest[..6]);
            if entries.iter().any(|(d, _)| d == &digest) {
                return Err(at(format!("token {id}… is listed twice")));
            }
            let grant = Grant {
                id,
                operations: operations.unwrap_or(u8::MAX),
                keys,
            };
            entries.push((digest, Arc::new(grant)));
        }
        Ok(Self { entries })
    }

    /// Tokens of several files; a token in two of them keeps the first's grant.
    pub fn merge(sets: impl IntoIterator<Item = Tokens>) -> Self {
        let mut entries: Vec<([u8; 32], Arc<Grant>)> = Vec::new();
        for set in sets {
            for (digest, grant) in set.entries {
                if !entries.iter().any(|(d, _)| d == &digest) {
                    entries.push((digest, grant));
                }
            }
        }
        Self { entries }
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The grant of `presented`, if it is one of the tokens. Every digest is compared,
    /// in constant time, whatever matches. Shared, not copied: it is looked up for
    /// every request.
    pub fn find(&self, presented: &[u8]) -> Option<Arc<Grant>> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, (d, _)) in self.entries.iter().enumerate() {
            let same = d.ct_eq(&digest);
            index.conditional_assign(&(i as u64), same);
            found |= same;
        }
        bool::from(found).then(|| self.entries[index as usize].1.clone())
    }
}

fn parse_operations(word: &str) -> Result<u8, String> {
    if word == "*" {
        return Ok(u8::MAX);
    }
    let mut bits = 0;
    for name in word.split(',').filter(|n| !n.is_empty()) {
        let op = Operation::parse(name).ok_or_else(|| {
            let known: Vec<_> = Operation::ALL.iter().map(|o| o.name()).collect();
            format!(
                "unknown operation \"{}\" (expected {} or *)",
                crate::escape::text(name),
                known.join(", ")
            )
        })?;
        bits |= op.bit();
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "alpha-token-0123456789";
    const B: &str = "bravo-token-0123456789";

    #[test]
    fn tokens_and_digests_grant_what_their_line_says() {
        let digest = hex::encode(Sha256::digest(B.as_bytes()));
        let text = format!(
            "# comment\n\n{A}\nsha256:{digest} decrypt,metrics keys=alias/a,raw-aes:n:k:f\n"
        );
        let tokens = Tokens::parse(&text, "t").unwrap();
        assert_eq!(tokens.len(), 2);
        let a = tokens.find(A.as_bytes()).unwrap();
        assert!(Operation::ALL.iter().all(|op| a.allows(*op)));
        assert!(a.allows_key("anything"));
        let b = tokens.find(B.as_bytes()).unwrap();
        assert!(b.allows(Operation::Decrypt) && b.allows(Operation::Metrics));
        assert!(!b.allows(Operation::Encrypt) && !b.allows(Operation::KmsDecrypt));
        assert!(b.allows_key("alias/a") && !b.allows_key("alias/b"));
        assert_eq!(b.id, digest[..12]);
        assert!(tokens.find(b"alpha-token-012345678").is_none());
        assert!(tokens.find(b"").is_none());
        assert!(
            tokens.find(digest.as_bytes()).is_none(),
            "a digest is not a token"
        );
    }

    #[test]
    fn bad_lines_are_refused_without_quoting_the_token() {
        for (text, needle) in [
            ("short", "at least 16"),
            ("sha256:abcd", "64 hex"),
            ("alpha-token-0123456789 encrypt,sign", "unknown operation"),
            ("alpha-token-0123456789 encrypt decrypt", "unexpected"),
            ("alpha-token-0123456789 keys=", "names no key"),
            ("alpha-token-0123456789\nalpha-token-0123456789", "twice"),
        ] {
            let e = Tokens::parse(text, "tokens.txt").unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("tokens.txt, line "), "{e}");
            assert!(!e.contains("alpha-token"), "{e}");
        }
    }

    #[test]
    fn merged_sets_keep_the_first_grant() {
        let first = Tokens::parse(&format!("{A} encrypt"), "1").unwrap();
        let second = Tokens::parse(&format!("{A} decrypt\n{B}"), "2").unwrap();
        let all = Tokens::merge([first, second]);
        assert_eq!(all.len(), 2);
        assert!(all.find(A.as_bytes()).unwrap().allows(Operation::Encrypt));
        assert!(!all.find(A.as_bytes()).unwrap().allows(Operation::Decrypt));
    }
}
