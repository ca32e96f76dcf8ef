//! Where tokens come from (files, the environment, AWS Secrets Manager, SSM Parameter
//! Store) and how they are reloaded while the server runs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::auth::Tokens;

/// The largest token file read, wherever it is: a few hundred thousand tokens.
const MAX_TOKEN_FILE: u64 = 16 << 20;

/// One place tokens are read from, each time tokens are loaded.
#[derive(Clone, Debug)]
pub enum TokenSource {
    /// A token file on disk.
    File(PathBuf),
    /// The text of an environment variable, read once at start.
    Env {
        /// The variable's name, for errors.
        name: String,
        /// Its value.
        text: String,
    },
    /// The `SecretString` of an AWS Secrets Manager secret.
    Secret(String),
    /// An SSM Parameter Store parameter (a SecureString, decrypted by SSM).
    Parameter(String),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => write!(f, "token file {}", crate::escape::path(p)),
            TokenSource::Env { name, .. } => write!(f, "environment variable {name}"),
            TokenSource::Secret(id) => {
                write!(f, "Secrets Manager secret {}", crate::escape::text(id))
            }
            TokenSource::Parameter(name) => {
                write!(f, "SSM parameter {}", crate::escape::text(name))
            }
        }
    }
}

/// Clients for the AWS sources, built only when one is configured.
#[derive(Clone, Debug)]
pub struct SecretClients {
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
    /// SSM.
    pub ssm: aws_sdk_ssm::Client,
}

/// The tokens in force, and how to load them again.
#[derive(Debug)]
pub struct TokenStore {
    sources: Vec<TokenSource>,
    clients: Option<SecretClients>,
    current: RwLock<Arc<Tokens>>,
    /// Loads that succeeded and that failed (the previous tokens stayed).
    pub reloads_ok: AtomicU64,
    /// See `reloads_ok`.
    pub reloads_failed: AtomicU64,
}

impl TokenStore {
    /// Loads every source once. Fails if any source fails or there is no token at all:
    /// a server must not start open, nor closed to everyone by mistake.
    pub async fn load(
        sources: Vec<TokenSource>,
        clients: Option<SecretClients>,
    ) -> Result<Self, String> {
        if sources.is_empty() {
            return Err("no token source: give --token-file, --token-secret, \
                 --token-parameter or SEALPIPE_SERVE_TOKENS"
                .into());
        }
        let store = Self {
            sources,
            clients,
            current: RwLock::new(Arc::default()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        };
        let tokens = store.read_all().await?;
        *store.current.write().expect("not poisoned") = Arc::new(tokens);
        Ok(store)
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<Tokens> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Reads every source again and replaces the tokens if all of them read well;
    /// otherwise keeps the tokens in force and says why.
    pub async fn reload(&self) -> Result<usize, String> {
        match self.read_all().await {
            Ok(tokens) => {
                let n = tokens.len();
                *self.current.write().expect("not poisoned") = Arc::new(tokens);
                self.reloads_ok.fetch_add(1, Relaxed);
                Ok(n)
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    async fn read_all(&self) -> Result<Tokens, String> {
        let mut sets = Vec::new();
        for source in &self.sources {
            let text = self
                .read(source)
                .await
                .map_err(|e| format!("{source}: {e}"))?;
            sets.push(Tokens::parse(&text, &source.to_string())?);
        }
        let tokens = Tokens::merge(sets);
        if tokens.is_empty() {
            return Err("the token sources hold no token".into());
        }
        Ok(tokens)
    }

    async fn read(&self, source: &TokenSource) -> Result<String, String> {
        match source {
            TokenSource::File(path) => {
                let path = path.clone();
                crate::bridge::blocking("read the token file", move || read_file(&path))
                    .await
                    .map_err(|e| e.to_string())?
            }
            TokenSource::Env { text, .. } => Ok(text.clone()),
            TokenSource::Secret(id) => {
                let clients = self.clients.as_ref().ok_or("no AWS client")?;
                let out = clients
                    .secrets
                    .get_secret_value()
                    .secret_id(id)
                    .send()
                    .await
                    .map_err(|e| aws_failure("secretsmanager:GetSecretValue", &e))?;
                out.secret_string
                    .ok_or_else(|| "the secret has no SecretString (a binary secret?)".into())
            }
            TokenSource::Parameter(name) => {
                let clients = self.clients.as_ref().ok_or("no AWS client")?;
                let out = clients
                    .ssm
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| aws_failure("ssm:GetParameter", &e))?;
                out.parameter
                    .and_then(|p| p.value)
                    .ok_or_else(|| "the parameter has no value".into())
            }
        }
    }

    /// Reloads every `every`, and whenever the process gets SIGHUP, until the runtime
    /// ends. Failures are logged; the tokens in force stay.
    pub fn spawn_reloads(self: &Arc<Self>, every: Duration) {
        let store = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let why = match hangup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = tick.tick() => "timer",
                        _ = h.recv() => "SIGHUP",
                    },
                    None => {
                        tick.tick().await;
                        "timer"
                    }
                };
                #[cfg(not(unix))]
                let why = {
                    tick.tick().await;
                    "timer"
                };
                let result = store.reload().await;
                log_reload(why, &result);
            }
        });
    }
}

fn log_reload(why: &str, result: &Result<usize, String>) {
    if crate::events::enabled() {
        let mut fields = serde_json::Map::new();
        fields.insert("trigger".into(), why.into());
        match result {
            Ok(n) => {
                fields.insert("tokens".into(), (*n as u64).into());
            }
            Err(e) => {
                fields.insert("error".into(), crate::events::untrusted(e));
            }
        }
        crate::events::emit("token_reload", fields);
    } else if let Err(e) = result {
        eprintln!("sealpipe serve: token reload ({why}) failed, keeping the tokens in force: {e}");
    }
}

fn read_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!("larger than {MAX_TOKEN_FILE} bytes"));
    }
    Ok(text)
}

fn aws_failure<E: aws_sdk_ssm::error::ProvideErrorMetadata + std::fmt::Debug>(
    action: &str,
    e: &aws_sdk_ssm::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> String {
    use aws_sdk_ssm::error::SdkError;
    match e {
        SdkError::ServiceError(s) => format!(
            "{action} failed: {}: {}",
            crate::escape::text(s.err().code().unwrap_or("Error")),
            crate::escape::text(s.err().message().unwrap_or("(no message)"))
        ),
        SdkError::TimeoutError(_) => format!("{action} timed out"),
        SdkError::DispatchFailure(d) => {
            format!(
                "{action}: cannot reach the endpoint: {:?}",
                d.as_connector_error()
            )
        }
        other => format!("{action} failed: {other:?}"),
    }
}
