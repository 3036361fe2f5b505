//! Access-token refresh, single-flight per session across every replica.
//!
//! The steps: check → lock → reload → re-check → refresh grant → save → unlock. Whoever does
//! not get the lock re-reads the session until the holder has saved, so a rotating refresh
//! token is presented to the OP exactly once (reuse makes the OP revoke the grant, RFC 9700
//! §4.14.2). The lock lives in the session store under the session's own hash tag.
//!
//! The save is conditional on the record still being the one read before the OP was asked, so
//! a logout (or any other end) that lands while the OP answers is never undone: the refresh
//! loses, its tokens are revoked, and the request is treated as having no session.

use std::time::{Duration, Instant};

use super::access::check_access;
use super::authenticate::Authenticated;
use super::error::ProxyError;
use super::Portcullis;
use crate::clock::unix_now;
use crate::oidc::dpop::DpopKey;
use crate::oidc::{tokens_expiry, TokenKind};
use crate::random::random_token;
use crate::session::{CookieSecret, SessionData};
use crate::telemetry::{audit, SPAN_TARGET};
use tracing::Instrument;

/// How often a request waiting on another replica's refresh re-reads the session. A refresh
/// takes one OP round trip (tens of ms), so 25 ms keeps the added wait small without hammering
/// the store.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(25);
/// After a failed attempt to reach the OP, the lock is kept this long before anyone retries.
const REFRESH_RETRY_COOLDOWN: Duration = Duration::from_secs(1);

/// What a refresh attempt under the lock came to.
enum Refreshed {
    /// The session with a usable token (refreshed now, or already by someone else).
    Current(Authenticated),
    /// The grant is gone and the session was deleted, or the session ended meanwhile.
    Ended,
    /// The OP could not be reached or failed; the session is kept as it was.
    OpUnavailable(Authenticated),
}

/// The skew actually applied to a token: the configured one, but never more than half the
/// token's lifetime, so short-lived tokens are used for at least half their life.
pub fn effective_skew(configured: Duration, lifetime_secs: u64) -> u64 {
    configured.as_secs().min(lifetime_secs / 2)
}

/// Whether a token expiring at `expires_at` (unix seconds) after a `lifetime` is due for refresh.
pub fn needs_refresh(expires_at: u64, lifetime: u64, configured_skew: Duration, now: u64) -> bool {
    now + effective_skew(configured_skew, lifetime) >= expires_at
}

fn session_needs_refresh(data: &SessionData, configured_skew: Duration, now: u64) -> bool {
    needs_refresh(
        data.access_expires_at,
        data.access_lifetime,
        configured_skew,
        now,
    )
}

/// Whether a token can still be forwarded while another request refreshes it. The margin covers
/// clock differences with the OP and the time the request spends upstream.
fn usable_while_refreshing(data: &SessionData, configured_skew: Duration, now: u64) -> bool {
    let margin = effective_skew(configured_skew, data.access_lifetime)
        .div_ceil(2)
        .max(1);
    now + margin < data.access_expires_at
}

fn is_expired(data: &SessionData, now: u64) -> bool {
    now >= data.access_expires_at
}

impl Portcullis {
    pub(super) async fn refresh_if_needed(
        &self,
        auth: Authenticated,
    ) -> Result<Option<Authenticated>, ProxyError> {
        let skew = self.oidc.refresh_skew();
        if !session_needs_refresh(&auth.data, skew, unix_now()) {
            return Ok(Some(auth));
        }
        if auth.data.refresh_token.is_none() {
            return self.without_refresh_token(auth).await;
        }
        let span = tracing::info_span!(target: SPAN_TARGET, "token_refresh");
        self.refresh_single_flight(auth, skew)
            .instrument(span)
            .await
    }

    /// Takes the session's refresh lock and refreshes, or waits for whoever holds it. The time
    /// spent waiting is one `refresh_lock_wait` span, from the first wait to the end.
    async fn refresh_single_flight(
        &self,
        auth: Authenticated,
        skew: Duration,
    ) -> Result<Option<Authenticated>, ProxyError> {
        let owner = random_token::<16>();
        let deadline = Instant::now() + self.sessions.config().refresh_wait_timeout;
        let mut current = auth;
        let mut waiting: Option<tracing::Span> = None;
        loop {
            if self.sessions.try_lock(&current.secret, &owner).await? {
                return self.refresh_locked(&current, &owner).await;
            }
            // Another request or replica is refreshing. A token with at least half of the skew
            // window left still serves; only requests whose token is (nearly) dead wait.
            if usable_while_refreshing(&current.data, skew, unix_now()) {
                return Ok(Some(current));
            }
            self.metrics.refresh_lock_waits.inc();
            let wait = waiting
                .get_or_insert_with(
                    || tracing::info_span!(target: SPAN_TARGET, "refresh_lock_wait"),
                )
                .clone();
            let reloaded = async {
                tokio::time::sleep(LOCK_POLL_INTERVAL).await;
                self.sessions.load(&current.secret).await
            };
            let Some(data) = reloaded.instrument(wait).await? else {
                return Ok(None);
            };
            current.data = data;
            if !session_needs_refresh(&current.data, skew, unix_now()) {
                self.metrics.refreshes.with_label_values(&["waited"]).inc();
                return Ok(Some(current));
            }
            if Instant::now() >= deadline {
                return self.keep_while_valid(current);
            }
        }
    }

    async fn without_refresh_token(
        &self,
        auth: Authenticated,
    ) -> Result<Option<Authenticated>, ProxyError> {
        if !is_expired(&auth.data, unix_now()) {
            return Ok(Some(auth));
        }
        audit(
            "token_refresh",
            "failure",
            "expired_without_refresh_token",
            Some(&auth.data.sub),
        );
        self.sessions
            .delete(&auth.secret, &auth.data, "refresh_failed")
            .await?;
        Ok(None)
    }

    /// Holding the lock: refresh, then release the lock — or, when the OP could not be reached,
    /// keep it for a cool-down, so that while the OP is down each session retries at most once
    /// per cool-down across all replicas instead of on every request (no refresh storm).
    async fn refresh_locked(
        &self,
        auth: &Authenticated,
        owner: &str,
    ) -> Result<Option<Authenticated>, ProxyError> {
        match self.refresh_with_grant(auth).await? {
            Refreshed::Current(current) => {
                self.sessions.unlock(&auth.secret, owner).await?;
                Ok(Some(current))
            }
            Refreshed::Ended => {
                self.sessions.unlock(&auth.secret, owner).await?;
                Ok(None)
            }
            Refreshed::OpUnavailable(current) => {
                self.sessions
                    .hold_lock(&auth.secret, REFRESH_RETRY_COOLDOWN)
                    .await?;
                self.keep_while_valid(current)
            }
        }
    }

    /// Re-reads the session (another replica may have refreshed it already), then runs the
    /// refresh grant if it is still needed.
    async fn refresh_with_grant(&self, auth: &Authenticated) -> Result<Refreshed, ProxyError> {
        let Some((mut data, version)) = self.sessions.load_versioned(&auth.secret).await? else {
            return Ok(Refreshed::Ended);
        };
        let secret = auth.secret.clone();
        if !session_needs_refresh(&data, self.oidc.refresh_skew(), unix_now()) {
            return Ok(Refreshed::Current(Authenticated { secret, data }));
        }
        let Some(refresh_token) = data.refresh_token.clone() else {
            let ended = self
                .without_refresh_token(Authenticated { secret, data })
                .await?;
            return Ok(ended.map_or(Refreshed::Ended, Refreshed::Current));
        };
        let provider = self.oidc.provider()?;
        // The session's DPoP key signs the refresh's proof, so the new token stays bound to it.
        let dpop = data
            .dpop_key
            .as_ref()
            .map(DpopKey::from_stored)
            .transpose()
            .map_err(|_| ProxyError::Internal("session_dpop_key"))?;
        match self
            .oidc
            .refresh(&provider, refresh_token.expose(), &data.claims, dpop)
            .await
        {
            Ok(tokens) => {
                // A refreshed ID token carries current claims: a user the access policy no
                // longer admits (removed from the group) loses the session here.
                if tokens.id_token.is_some() {
                    if let Err(denied) = check_access(&self.live.load().access, &tokens.claims) {
                        audit("token_refresh", "failure", denied.reason(), Some(&data.sub));
                        self.metrics.refreshes.with_label_values(&["fatal"]).inc();
                        self.sessions
                            .delete(&secret, &data, "access_denied")
                            .await?;
                        return Ok(Refreshed::Ended);
                    }
                }
                data.access_token = tokens.access_token;
                data.access_expires_at = tokens_expiry(tokens.expires_in);
                data.access_lifetime = tokens.expires_in;
                // RFC 6749 §6: the OP may keep the old refresh token; keep it then.
                if tokens.refresh_token.is_some() {
                    data.refresh_token = tokens.refresh_token;
                }
                if let Some(id_token) = tokens.id_token {
                    data.id_token = id_token;
                    data.claims = tokens.claims;
                }
                if !self.sessions.replace(&secret, &version, &data).await? {
                    return self.refresh_lost(secret, data).await;
                }
                self.metrics.refreshes.with_label_values(&["success"]).inc();
                Ok(Refreshed::Current(Authenticated { secret, data }))
            }
            // RFC 6749 §5.2: invalid_grant means the grant is gone; ending the session is the
            // only outcome that does not loop.
            Err(e) if e.is_fatal_for_refresh() => {
                tracing::info!(error = %e, "refresh rejected; ending the session");
                audit(
                    "token_refresh",
                    "failure",
                    "grant_rejected",
                    Some(&data.sub),
                );
                self.metrics.refreshes.with_label_values(&["fatal"]).inc();
                self.sessions
                    .delete(&secret, &data, "refresh_failed")
                    .await?;
                Ok(Refreshed::Ended)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refresh failed; keeping the session");
                audit(
                    "token_refresh",
                    "failure",
                    "op_unavailable",
                    Some(&data.sub),
                );
                self.metrics
                    .refreshes
                    .with_label_values(&["transient"])
                    .inc();
                Ok(Refreshed::OpUnavailable(Authenticated { secret, data }))
            }
        }
    }

    /// The record changed while the OP answered, so `obtained` was not saved. A session that
    /// another replica rewrote serves as it now is; one that ended stays ended, and the tokens
    /// just obtained for it, held by no session, are revoked.
    async fn refresh_lost(
        &self,
        secret: CookieSecret,
        obtained: SessionData,
    ) -> Result<Refreshed, ProxyError> {
        if let Some(data) = self.sessions.load(&secret).await? {
            self.metrics
                .refreshes
                .with_label_values(&["superseded"])
                .inc();
            return Ok(Refreshed::Current(Authenticated { secret, data }));
        }
        audit(
            "token_refresh",
            "failure",
            "session_ended",
            Some(&obtained.sub),
        );
        self.metrics
            .refreshes
            .with_label_values(&["session_ended"])
            .inc();
        let refresh = obtained.refresh_token.map(|rt| (TokenKind::Refresh, rt));
        let access = (TokenKind::Access, obtained.access_token);
        let tokens = refresh.into_iter().chain([access]).collect();
        self.revoke_in_background(self.oidc.provider().ok(), tokens);
        Ok(Refreshed::Ended)
    }

    /// After a transient failure: the current token still serves while it is valid.
    fn keep_while_valid(&self, auth: Authenticated) -> Result<Option<Authenticated>, ProxyError> {
        if is_expired(&auth.data, unix_now()) {
            Err(ProxyError::RefreshUnavailable)
        } else {
            Ok(Some(auth))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_capped_at_half_the_token_lifetime() {
        assert_eq!(effective_skew(Duration::from_secs(60), 3600), 60);
        assert_eq!(effective_skew(Duration::from_secs(60), 5), 2);
        assert_eq!(effective_skew(Duration::from_secs(60), 60), 30);
        assert_eq!(effective_skew(Duration::from_secs(10), 0), 0);
    }
}
