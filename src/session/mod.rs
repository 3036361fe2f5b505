//! Sessions: what a logged-in browser maps to, and where it is kept.
//!
//! `Sessions` is the facade the proxy and the OIDC endpoints call. It turns a cookie secret
//! into store keys and record keys (`crypto`), seals records before they reach the store and
//! opens them after, enforces the idle and absolute timeouts, and times every store call.
//! The store itself (`memory` or `redis`) only sees opaque keys and ciphertext.

pub mod cookie;
pub mod crypto;
pub mod memory;
pub mod redis;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::SessionConfig;
use crate::metrics::Metrics;
use crate::secret::Secret;
pub use crypto::CookieSecret;
pub use store::{SessionStore, StoreError};

/// What portcullis keeps about a logged-in browser. Stored sealed; `Debug` never shows tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionData {
    pub iss: String,
    pub sub: String,
    /// The OP's session id (`sid` claim), used by back-channel logout.
    pub sid: Option<String>,
    /// ID-token claims shown by `/bff/user` (never tokens).
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub access_token: Secret<String>,
    /// Unix seconds.
    pub access_expires_at: u64,
    /// `expires_in` as issued, which caps the refresh skew at half of it.
    pub access_lifetime: u64,
    pub refresh_token: Option<Secret<String>>,
    pub id_token: Secret<String>,
    pub created_at: u64,
    pub absolute_deadline: u64,
    /// The per-session value `GET /bff/logout?sid=` must carry (a CSRF defence for logout links).
    pub logout_id: String,
}

/// State between `/bff/login` and `/bff/callback`, stored sealed under the browser's
/// transaction cookie and the `state` value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTransaction {
    pub state: Secret<String>,
    pub nonce: Secret<String>,
    pub pkce_verifier: Secret<String>,
    pub return_to: String,
    pub created_at: u64,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const SESSION_PURPOSE: &str = "session";

pub struct Sessions {
    store: Arc<dyn SessionStore>,
    cfg: SessionConfig,
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn SessionStore>,
        cfg: SessionConfig,
        metrics: Arc<Metrics>,
    ) -> Sessions {
        Sessions {
            store,
            cfg,
            metrics,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    fn key(&self, kind: &str, id: &str) -> String {
        // `{id}` is a Redis Cluster hash tag: a session's record and its lock share one slot.
        format!("{}:{kind}:{{{id}}}", self.cfg.key_prefix)
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = fut.await;
        let labels = [op, self.store.kind()];
        self.metrics
            .store_duration
            .with_label_values(&labels)
            .observe(start.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.metrics.store_errors.with_label_values(&labels).inc();
            tracing::warn!(op, error = %e, "session store operation failed");
        }
        result
    }

    /// The session for a cookie, or `None` when it does not exist, has expired or does not
    /// decrypt. Extends the idle timeout, never past the absolute deadline.
    pub async fn load(&self, secret: &CookieSecret) -> Result<Option<SessionData>, StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("s", &keys.id);
        let Some(sealed) = self
            .timed("get", self.store.get(&key, Some(self.cfg.idle_timeout)))
            .await?
        else {
            return Ok(None);
        };
        let data = keys
            .open(&key, &sealed)
            .and_then(|plain| serde_json::from_slice::<SessionData>(&plain).ok());
        let Some(data) = data else {
            tracing::warn!(
                reason = "session_undecryptable",
                "dropping a session record that does not open"
            );
            self.end(&key, "invalid").await?;
            return Ok(None);
        };
        let now = unix_now();
        if now >= data.absolute_deadline {
            self.end(&key, "expired").await?;
            return Ok(None);
        }
        let remaining = Duration::from_secs(data.absolute_deadline - now);
        if remaining < self.cfg.idle_timeout {
            self.timed("expire", self.store.expire(&key, remaining))
                .await?;
        }
        Ok(Some(data))
    }

    async fn end(&self, key: &str, reason: &'static str) -> Result<(), StoreError> {
        self.timed("delete", self.store.delete(key)).await?;
        self.metrics
            .sessions_ended
            .with_label_values(&[reason])
            .inc();
        Ok(())
    }

    /// Stores a new session under a fresh secret and returns that secret for the cookie.
    pub async fn create(&self, data: &SessionData) -> Result<CookieSecret, StoreError> {
        let secret = CookieSecret::generate();
        self.save(&secret, data).await?;
        self.metrics.sessions_created.inc();
        Ok(secret)
    }

    /// Writes the record with a TTL of the idle timeout, capped by the absolute deadline.
    pub async fn save(&self, secret: &CookieSecret, data: &SessionData) -> Result<(), StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("s", &keys.id);
        let plain = serde_json::to_vec(data)
            .map_err(|e| StoreError::Unavailable(format!("encode: {e}")))?;
        let remaining =
            Duration::from_secs(data.absolute_deadline.saturating_sub(unix_now()).max(1));
        let ttl = self.cfg.idle_timeout.min(remaining);
        self.timed("set", self.store.set(&key, keys.seal(&key, &plain), ttl))
            .await
    }

    pub async fn delete(
        &self,
        secret: &CookieSecret,
        reason: &'static str,
    ) -> Result<(), StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        self.end(&self.key("s", &keys.id), reason).await
    }

    /// Takes the per-session refresh lock; `owner` is a random token only this caller knows.
    pub async fn try_lock(&self, secret: &CookieSecret, owner: &str) -> Result<bool, StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("lock", &keys.id);
        self.timed(
            "lock",
            self.store
                .try_lock(&key, owner, self.cfg.refresh_lock_timeout),
        )
        .await
    }

    pub async fn unlock(&self, secret: &CookieSecret, owner: &str) -> Result<(), StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("lock", &keys.id);
        self.timed("unlock", self.store.unlock(&key, owner)).await
    }

    fn transaction_keys(browser: &CookieSecret, state: &str) -> crypto::DerivedKeys {
        browser.derive(&format!("txn/{state}"))
    }

    pub async fn put_transaction(
        &self,
        browser: &CookieSecret,
        txn: &LoginTransaction,
    ) -> Result<(), StoreError> {
        let keys = Self::transaction_keys(browser, txn.state.expose());
        let key = self.key("t", &keys.id);
        let plain =
            serde_json::to_vec(txn).map_err(|e| StoreError::Unavailable(format!("encode: {e}")))?;
        self.timed(
            "set",
            self.store
                .set(&key, keys.seal(&key, &plain), self.cfg.login_timeout),
        )
        .await
    }

    /// Consumes the transaction for this browser and `state`; a second call finds nothing.
    pub async fn take_transaction(
        &self,
        browser: &CookieSecret,
        state: &str,
    ) -> Result<Option<LoginTransaction>, StoreError> {
        let keys = Self::transaction_keys(browser, state);
        let key = self.key("t", &keys.id);
        let Some(sealed) = self.timed("take", self.store.take(&key)).await? else {
            return Ok(None);
        };
        Ok(keys
            .open(&key, &sealed)
            .and_then(|plain| serde_json::from_slice::<LoginTransaction>(&plain).ok()))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.store.ping()).await
    }
}
