//! `sealpipe serve`: ESDK encryption as an HTTP API for applications.
//!
//! The design this replaces puts a KMS call behind every request (API Gateway, a Lambda
//! function, KMS `Encrypt`/`Decrypt`), which caps the API at the account's shared KMS
//! request quota and at KMS's 4 KiB plaintext limit. Here a request to `/v1/encrypt`
//! takes a pooled data key ([`DataKeyPool`]) and returns an ESDK message of any size, so
//! KMS calls scale with data keys, not requests; `/v1/decrypt` unwraps each data key
//! once ([`DecryptCache`]). The direct method (`/v1/kms/*`, one KMS call per secret) is
//! kept for small secrets that other KMS clients must read.
//!
//! The same [`router`] answers behind the server's own listener ([`listen`]) and as a
//! Lambda function behind API Gateway (the CLI's `serve --lambda`), where responses are
//! whole ([`Service::buffered`]): Lambda returns a response in one piece.

mod auth;
mod body;
mod error;
mod limits;
mod listener;
mod metrics;
mod routes;
mod tokens;

use std::sync::Arc;

pub use auth::{Grant, MIN_TOKEN_LEN, Operation, Tokens};
pub use error::ApiError;
pub use limits::{KMS_MAX_PLAINTEXT, Limits};
pub use listener::{Tls, listen};
pub use metrics::Metrics;
pub use routes::router;
pub use tokens::{SecretClients, TokenSource, TokenStore};

use crate::keys::{DataKeyPool, DecryptCache, Keyring, KmsKeyring, KmsStats};
use crate::stream::{DecryptOptions, EncryptOptions};

/// One `--key`: the keyring, the pool its data keys come from, the cache of data keys
/// it unwrapped, and for KMS keys the client of the direct method.
pub struct ServerKey {
    /// The reference as the operator gave it; requests and tokens name keys by it.
    pub name: String,
    /// Wraps (the pool's keyring).
    pub keyring: Arc<dyn Keyring>,
    /// Unwraps: the same keyring, except for a KMS key named by an alias or a key ID,
    /// which can only recognise its data keys by the key ARN it resolves to.
    pub unwrapping: Arc<dyn Keyring>,
    /// Data keys for `/v1/encrypt`.
    pub pool: DataKeyPool,
    /// Data keys unwrapped by this key alone: a token allowed only other keys never
    /// gets one of them from the cache.
    pub cache: DecryptCache,
    /// The KMS key, for `/v1/kms/*`.
    pub kms: Option<KmsKeyring>,
    /// The wrapping-key name this key writes into messages (`namespace/name` or a key
    /// ARN) when its reference says it; tells a 403 from an unknown key.
    pub recorded_name: Option<String>,
}

impl ServerKey {
    /// The key's name for clients: a raw AES key without the path of its file.
    pub fn shown(&self) -> &str {
        match self.name.strip_prefix("raw-aes:") {
            Some(rest) => match rest.splitn(3, ':').nth(2) {
                Some(path) => &self.name[..self.name.len() - path.len() - 1],
                None => &self.name,
            },
            None => &self.name,
        }
    }
}

/// Everything a request is answered with.
pub struct Service {
    /// The keys, the first the default.
    pub keys: Vec<ServerKey>,
    /// How messages are written.
    pub encrypt: EncryptOptions,
    /// Policy and limits for messages read.
    pub decrypt: DecryptOptions,
    /// Who may call.
    pub tokens: Arc<TokenStore>,
    /// What is refused.
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// KMS calls of every key, if any key is a KMS key.
    pub kms_stats: Option<Arc<KmsStats>>,
    /// Bodies are answered whole, never streamed (Lambda returns a response in one
    /// piece, and a response that failed half-way could not be told from a short one).
    pub buffered: bool,
    rates: Option<limits::TokenRates>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Service {
    /// A service over `keys` (at least one).
    pub fn new(
        keys: Vec<ServerKey>,
        encrypt: EncryptOptions,
        decrypt: DecryptOptions,
        tokens: Arc<TokenStore>,
        limits: Limits,
        kms_stats: Option<Arc<KmsStats>>,
        buffered: bool,
    ) -> Self {
        let mut limits = limits;
        if buffered {
            // A spilled plaintext is read back as a stream, which a whole response
            // cannot be: past the in-memory limit, refuse (Lambda's own payload limit
            // is far below the default anyway).
            limits.spill_dir = None;
        }
        Self {
            rates: limits.token_rate.map(limits::TokenRates::new),
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
            keys,
            encrypt,
            decrypt,
            tokens,
            limits,
            metrics: Arc::default(),
            kms_stats,
            buffered,
        }
    }
}
