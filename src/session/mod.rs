//! Sessions: what a logged-in browser maps to, and where it is kept.
//!
//! `Sessions` is the facade the proxy and the OIDC endpoints call. It turns a cookie secret
//! into store keys and record keys (`crypto`), seals records before they reach the store and
//! opens them after, enforces the idle and absolute timeouts, and times every store call.
//! The store itself (`memory` or `redis`) only sees opaque keys and ciphertext.

pub mod cache;
pub mod cookie;
pub mod crypto;
mod keys;
pub mod memory;
pub mod redis;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::clock::unix_now;
use crate::config::SessionConfig;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::telemetry::SPAN_TARGET;
use cache::{HotSession, Lookup, SessionCache};
pub use crypto::CookieSecret;
use keys::SessionKeys;
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
    /// The session's DPoP private key (PKCS#8, base64url), with `oidc.dpop`: its tokens are
    /// bound to it, so it is sealed with them and never leaves portcullis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<Secret<String>>,
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
    /// The redirect URI the login was started with, when it is not `public_url`'s (a login on
    /// one of the ingress-auth hosts); the code exchange must name the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// The DPoP key the code is bound to (`dpop_jkt`); it becomes the session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<Secret<String>>,
}

/// The sealed bytes of a session record as it was read. A write that follows the read is made
/// only over exactly these bytes, so it can neither revive a session ended in between nor undo
/// another replica's newer write. Sealing is randomised, so no two writes share a version.
pub struct Version(Vec<u8>);

const SESSION_PURPOSE: &str = "session";

/// A one-way id for an identity tuple such as (`iss`, `sub`): index keys name users without
/// putting their identifiers in the store in clear. Length-prefixing keeps ("a","bc") and
/// ("ab","c") apart.
fn identity_id(parts: &[&str]) -> String {
    use base64::Engine;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ctx.finish().as_ref()[..16])
}

/// The index keys a `listed` record names, one a line.
fn decode_index_list(list: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(list)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Why the session cache did not serve a request, and what reading the store instead involves.
enum CacheMiss<'a> {
    /// No cache may serve: read the store plainly.
    Bypassed,
    /// Read `key`, touching it when `touch`; a plain read that began at `epoch` may be cached.
    Read {
        cache: &'a SessionCache,
        key: Arc<str>,
        epoch: Option<u64>,
        touch: bool,
    },
}

pub struct Sessions {
    store: Arc<dyn SessionStore>,
    /// Decoded sessions for the request path; `None` when turned off or when the store cannot
    /// tell this process about other replicas' changes.
    cache: Option<Arc<SessionCache>>,
    /// The session keys of the secrets the cache was last asked about.
    keys: SessionKeys,
    cfg: SessionConfig,
    metrics: Arc<Metrics>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn SessionStore>,
        cache: Option<Arc<SessionCache>>,
        cfg: SessionConfig,
        metrics: Arc<Metrics>,
    ) -> Sessions {
        Sessions {
            store,
            cache,
            keys: SessionKeys::new(cfg.cache_max_entries),
            cfg,
            metrics,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The prefix every session record's key starts with (what the Redis cache tracks).
    pub fn session_key_prefix(cfg: &SessionConfig) -> String {
        format!("{}:s:", cfg.key_prefix)
    }

    fn key(&self, kind: &str, id: &str) -> String {
        // `{id}` is a Redis Cluster hash tag: a session's record and its lock share one slot.
        format!("{}:{kind}:{{{id}}}", self.cfg.key_prefix)
    }

    /// Runs one store operation (see `measured`) in a span of its own: the operation and the
    /// store's kind, never a key or a value.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "session_store",
            otel.name = %format_args!("session_store {op}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = self.store.kind(),
            db.operation.name = op,
        );
        let result = self.measured(op, fut).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// Times one store operation and counts its failure, without a span.
    async fn measured<T>(
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

    /// The whole session for a cookie, read from the store, or `None` when it does not exist,
    /// has expired or does not decrypt. Extends the idle timeout, never past the absolute
    /// deadline.
    pub async fn load(&self, secret: &CookieSecret) -> Result<Option<SessionData>, StoreError> {
        Ok(self.load_versioned(secret).await?.map(|(data, _)| data))
    }

    /// `load`, with the version a later `replace` must find in the store to write.
    pub async fn load_versioned(
        &self,
        secret: &CookieSecret,
    ) -> Result<Option<(SessionData, Version)>, StoreError> {
        self.read_record(&secret.derive(SESSION_PURPOSE), true)
            .await
    }

    /// What forwarding a request needs from the session for a cookie: from the cache when it
    /// holds the session and the idle timeout was extended recently, else from the store. Its
    /// span says which (`session.cache`: `hit`, `miss` or `bypassed`). `now`: Unix seconds, read
    /// once by the caller, who judges the token's freshness by the same clock reading;
    /// `started`: when the request came in, by which the cache judges whether a touch is due.
    pub async fn load_hot(
        &self,
        secret: &CookieSecret,
        now: u64,
        started: Instant,
    ) -> Result<Option<HotSession>, StoreError> {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "session_lookup",
            session.cache = tracing::field::Empty,
        );
        let miss = match self.cached_hot(secret, now, started, &span) {
            Ok(hot) => return Ok(Some(hot)),
            Err(miss) => miss,
        };
        // Boxed: the store read's future is large, and a request the cache serves (nearly all)
        // would otherwise carry it, and copy it, through every future that awaits this one.
        Box::pin(self.read_hot(secret, miss).instrument(span)).await
    }

    /// The session from the cache, when it may serve and holds it; else what the store read
    /// must do instead.
    fn cached_hot(
        &self,
        secret: &CookieSecret,
        now: u64,
        started: Instant,
        span: &tracing::Span,
    ) -> Result<HotSession, CacheMiss<'_>> {
        let Some(cache) = self.serving_cache() else {
            span.record("session.cache", "bypassed");
            return Err(CacheMiss::Bypassed);
        };
        let key = self
            .keys
            .get_or_derive(secret, || self.key("s", &secret.derive_id(SESSION_PURPOSE)));
        let lookup = cache.lookup(&key, self.touch_every(), started);
        let hit = matches!(lookup, Lookup::Hit(_));
        span.record("session.cache", if hit { "hit" } else { "miss" });
        let (epoch, touch) = match lookup {
            Lookup::Hit(hot) if now < hot.absolute_deadline => return Ok(hot),
            // Past its absolute deadline: the store read ends it.
            Lookup::Hit(_) => (None, true),
            Lookup::Miss { epoch, touch } => (Some(epoch), touch),
        };
        Err(CacheMiss::Read {
            cache,
            key,
            epoch,
            touch,
        })
    }

    /// The store read after a cache miss, and what the cache learns from it.
    async fn read_hot(
        &self,
        secret: &CookieSecret,
        miss: CacheMiss<'_>,
    ) -> Result<Option<HotSession>, StoreError> {
        let CacheMiss::Read {
            cache,
            key,
            epoch,
            touch,
        } = miss
        else {
            return Ok(self.load(secret).await?.as_ref().map(HotSession::of));
        };
        let data = self
            .read_record(&secret.derive(SESSION_PURPOSE), touch)
            .await?;
        let hot = data.as_ref().map(|(data, _)| HotSession::of(data));
        match (&hot, epoch) {
            (None, _) => cache.forget(&key),
            // Only a plain read is cached: see `read_record`.
            (Some(hot), Some(epoch)) if !touch => cache.insert(&key, hot.clone(), epoch),
            (Some(_), _) => {}
        }
        Ok(hot)
    }

    /// Extending the idle TTL at most every tenth of it keeps most requests off the store; the
    /// idle timeout is then enforced to within a tenth.
    fn touch_every(&self) -> Duration {
        self.cfg.idle_timeout / 10
    }

    /// The cache, when it may serve: a store that is down fails closed, cached copy or not.
    fn serving_cache(&self) -> Option<&SessionCache> {
        let cache = self.cache.as_deref()?;
        if !self.store.is_connected() {
            cache.suspend();
            return None;
        }
        Some(cache)
    }

    /// Runs a write to `key` with the cached copy forgotten before and after it: a read racing
    /// the write then either sees the new value or is not cached.
    async fn write_through<T>(
        &self,
        key: &str,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.forget_cached(key);
        let result = write.await;
        self.forget_cached(key);
        result
    }

    fn forget_cached(&self, key: &str) {
        if let Some(cache) = &self.cache {
            cache.forget(key);
        }
    }

    async fn read_record(
        &self,
        keys: &crypto::DerivedKeys,
        touch: bool,
    ) -> Result<Option<(SessionData, Version)>, StoreError> {
        let key = &self.key("s", &keys.id);
        let ttl = touch.then_some(self.cfg.idle_timeout);
        let sealed = self.timed("get", self.store.get(key, ttl)).await?;
        if let (true, Some(cache)) = (touch, &self.cache) {
            // A touch is a write, after which Redis no longer reports the key's changes to this
            // process: whatever the cache holds for it must go.
            cache.touched(key, self.touch_every());
        }
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let data = keys
            .open(key, &sealed)
            .and_then(|plain| serde_json::from_slice::<SessionData>(&plain).ok());
        let Some(data) = data else {
            tracing::warn!(
                reason = "session_undecryptable",
                "dropping a session record that does not open"
            );
            self.end(&keys.id, &[], "invalid").await?;
            return Ok(None);
        };
        let now = unix_now();
        if now >= data.absolute_deadline {
            self.end(&keys.id, &[], "expired").await?;
            return Ok(None);
        }
        let remaining = Duration::from_secs(data.absolute_deadline - now);
        if touch && remaining < self.cfg.idle_timeout {
            self.timed("expire", self.store.expire(key, remaining))
                .await?;
        }
        Ok(Some((data, Version(sealed))))
    }

    /// Ends the session `id`: deletes its record and unlists it from every index it is listed
    /// in (those recorded at creation, plus `listed_in`), so ending it again through another
    /// index finds nothing. Counted only when the record still existed; true then.
    async fn end(
        &self,
        id: &str,
        listed_in: &[String],
        reason: &'static str,
    ) -> Result<bool, StoreError> {
        let key = self.key("s", id);
        let existed = self
            .write_through(&key, self.timed("delete", self.store.delete(&key)))
            .await?;
        let recorded = self
            .timed("take", self.store.take(&self.key("listed", id)))
            .await?;
        let mut indexes = recorded.map_or_else(Vec::new, |r| decode_index_list(&r));
        indexes.extend(listed_in.iter().cloned());
        indexes.sort();
        indexes.dedup();
        for index in &indexes {
            self.timed("index", self.store.index_remove(index, id))
                .await?;
        }
        if existed {
            self.metrics
                .sessions_ended
                .with_label_values(&[reason])
                .inc();
        }
        Ok(existed)
    }

    /// Stores a new session under a fresh secret and returns that secret for the cookie.
    pub async fn create(&self, data: &SessionData) -> Result<CookieSecret, StoreError> {
        let secret = CookieSecret::generate();
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("s", &keys.id);
        let (sealed, ttl) = self.seal_record(&keys, &key, data)?;
        self.write_through(&key, self.timed("set", self.store.set(&key, sealed, ttl)))
            .await?;
        // Bulk logout reaches a session through one index; this list lets it unlist the
        // session from the others too (the record itself only opens with the cookie).
        let indexes = self.indexes_of(data);
        let list = indexes.join("\n").into_bytes();
        let listed = self.key("listed", &keys.id);
        self.timed(
            "set",
            self.store.set(&listed, list, self.cfg.absolute_timeout),
        )
        .await?;
        for index in &indexes {
            self.timed(
                "index",
                self.store
                    .index_add(index, &keys.id, data.created_at, self.cfg.absolute_timeout),
            )
            .await?;
        }
        self.metrics.sessions_created.inc();
        Ok(secret)
    }

    /// The index keys a session is listed under: its user (`iss`, `sub`) and, when the OP
    /// named one, its OP session (`iss`, `sid`), as back-channel logout needs both.
    fn indexes_of(&self, data: &SessionData) -> Vec<String> {
        let mut keys = vec![self.user_index(&data.iss, &data.sub)];
        if let Some(sid) = &data.sid {
            keys.push(self.sid_index(&data.iss, sid));
        }
        keys
    }

    // The kinds name sorted sets; earlier builds kept plain sets under `user`/`sid`, and new
    // names keep a rolling upgrade from meeting those with a type error.
    fn user_index(&self, iss: &str, sub: &str) -> String {
        self.key("user-logins", &identity_id(&[iss, sub]))
    }

    fn sid_index(&self, iss: &str, sid: &str) -> String {
        self.key("op-session", &identity_id(&[iss, sid]))
    }

    /// The sealed record and its TTL: the idle timeout, capped by the absolute deadline.
    fn seal_record(
        &self,
        keys: &crypto::DerivedKeys,
        key: &str,
        data: &SessionData,
    ) -> Result<(Vec<u8>, Duration), StoreError> {
        let plain = serde_json::to_vec(data)
            .map_err(|e| StoreError::Unavailable(format!("encode: {e}")))?;
        let remaining =
            Duration::from_secs(data.absolute_deadline.saturating_sub(unix_now()).max(1));
        Ok((keys.seal(key, &plain), self.cfg.idle_timeout.min(remaining)))
    }

    /// Rewrites a session read as `version`; false, and nothing written, when the record is no
    /// longer that version: the session was ended (logout, expiry, back-channel logout) or
    /// rewritten by another replica since. Deletion always wins over this write.
    pub async fn replace(
        &self,
        secret: &CookieSecret,
        version: &Version,
        data: &SessionData,
    ) -> Result<bool, StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("s", &keys.id);
        let (sealed, ttl) = self.seal_record(&keys, &key, data)?;
        let write = self.store.replace(&key, &version.0, sealed, ttl);
        self.write_through(&key, self.timed("set", write)).await
    }

    /// Ends one session and unlists it from its indexes.
    pub async fn delete(
        &self,
        secret: &CookieSecret,
        data: &SessionData,
        reason: &'static str,
    ) -> Result<(), StoreError> {
        let id = secret.derive(SESSION_PURPOSE).id;
        self.end(&id, &self.indexes_of(data), reason).await?;
        Ok(())
    }

    /// Ends the sessions of a user (`iss`, `sub`) created at or before `created_until` (unix
    /// seconds; `u64::MAX` for all of them); returns how many were ended.
    pub async fn delete_user_sessions(
        &self,
        iss: &str,
        sub: &str,
        created_until: u64,
        reason: &'static str,
    ) -> Result<usize, StoreError> {
        self.delete_indexed(&self.user_index(iss, sub), created_until, reason)
            .await
    }

    /// Ends every session created under the OP session (`iss`, `sid`).
    pub async fn delete_op_sessions(
        &self,
        iss: &str,
        sid: &str,
        reason: &'static str,
    ) -> Result<usize, StoreError> {
        self.delete_indexed(&self.sid_index(iss, sid), u64::MAX, reason)
            .await
    }

    /// Exact-match deletion through an index, never a key pattern, so a `*` in a claim is just
    /// a character. Only the ended members are unlisted: a login that completes meanwhile
    /// stays listed for the next logout. Returns how many sessions still existed and ended.
    async fn delete_indexed(
        &self,
        index: &str,
        created_until: u64,
        reason: &'static str,
    ) -> Result<usize, StoreError> {
        let ids = self
            .timed("index", self.store.index_members(index, created_until))
            .await?;
        let via = [index.to_string()];
        let mut ended = 0;
        for id in &ids {
            if self.end(id, &via, reason).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Records a one-time value (a logout token's `jti`) for `ttl`; false when already seen.
    pub async fn remember_once(
        &self,
        kind: &str,
        parts: &[&str],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = self.key(kind, &identity_id(parts));
        self.timed("lock", self.store.try_lock(&key, "1", ttl))
            .await
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

    /// Keeps the refresh lock held for `ttl` more, as a cool-down after a failed refresh.
    pub async fn hold_lock(&self, secret: &CookieSecret, ttl: Duration) -> Result<(), StoreError> {
        let keys = secret.derive(SESSION_PURPOSE);
        let key = self.key("lock", &keys.id);
        self.timed("expire", self.store.expire(&key, ttl)).await
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
        let kept = self.cfg.transaction_kept_for();
        self.timed("set", self.store.set(&key, keys.seal(&key, &plain), kept))
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

    /// Remembers where `/bff/logout/callback` sends the browser back for this logout `state`.
    pub async fn put_logout_return(&self, state: &str, target: &str) -> Result<(), StoreError> {
        let key = self.key("logout", &identity_id(&["logout", state]));
        self.timed(
            "set",
            self.store
                .set(&key, target.as_bytes().to_vec(), self.cfg.login_timeout),
        )
        .await
    }

    /// The target remembered for this logout `state`, once.
    pub async fn take_logout_return(&self, state: &str) -> Result<Option<String>, StoreError> {
        let key = self.key("logout", &identity_id(&["logout", state]));
        let target = self.timed("take", self.store.take(&key)).await?;
        Ok(target.and_then(|t| String::from_utf8(t).ok()))
    }

    /// Readiness probes ping every few seconds: as spans, each would be a trace of its own.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.measured("ping", self.store.ping()).await
    }
}
