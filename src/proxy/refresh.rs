//! Access-token refresh, single-flight per session across every replica.
//!
//! The steps: check → lock → reload → re-check → refresh grant → save → unlock. Whoever does
//! not get the lock re-reads the session until the holder has saved, so a rotating refresh
//! token is presented to the OP exactly once (reuse makes the OP revoke the grant, RFC 9700
//! §4.14.2). The lock lives in the session store under the session's own hash tag.

use std::time::{Duration, Instant};

use super::authenticate::Authenticated;
use super::error::ProxyError;
use super::Portcullis;
use crate::oidc::tokens_expiry;
use crate::session::crypto::random_token;
use crate::session::{unix_now, SessionData};

/// How often a request waiting on another replica's refresh re-reads the session. A refresh
/// takes one OP round trip (tens of ms), so 25 ms keeps the added wait small without hammering
/// the store.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(25);

/// The skew actually applied to a token: the configured one, but never more than half the
/// token's lifetime, so short-lived tokens are used for at least half their life.
pub fn effective_skew(configured: Duration, lifetime_secs: u64) -> u64 {
    configured.as_secs().min(lifetime_secs / 2)
}

pub fn needs_refresh(data: &SessionData, configured_skew: Duration, now: u64) -> bool {
    now + effective_skew(configured_skew, data.access_lifetime) >= data.access_expires_at
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
        if !needs_refresh(&auth.data, skew, unix_now()) {
            return Ok(Some(auth));
        }
        if auth.data.refresh_token.is_none() {
            return self.without_refresh_token(auth).await;
        }
        let owner = random_token::<16>();
        let deadline = Instant::now() + self.sessions.config().refresh_wait_timeout;
        loop {
            if self.sessions.try_lock(&auth.secret, &owner).await? {
                let result = self.refresh_locked(&auth).await;
                self.sessions.unlock(&auth.secret, &owner).await?;
                return result;
            }
            self.metrics.refresh_lock_waits.inc();
            tokio::time::sleep(LOCK_POLL_INTERVAL).await;
            let Some(data) = self.sessions.load(&auth.secret).await? else {
                return Ok(None);
            };
            if !needs_refresh(&data, skew, unix_now()) {
                self.metrics.refreshes.with_label_values(&["waited"]).inc();
                return Ok(Some(Authenticated {
                    secret: auth.secret,
                    data,
                }));
            }
            if Instant::now() >= deadline {
                return self.keep_while_valid(Authenticated {
                    secret: auth.secret,
                    data,
                });
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
        tracing::info!(
            reason = "access_token_expired_no_refresh_token",
            "ending session"
        );
        self.sessions
            .delete(&auth.secret, &auth.data, "refresh_failed")
            .await?;
        Ok(None)
    }

    /// Holding the lock: re-read (another replica may have refreshed already), then refresh.
    async fn refresh_locked(
        &self,
        auth: &Authenticated,
    ) -> Result<Option<Authenticated>, ProxyError> {
        let Some(mut data) = self.sessions.load(&auth.secret).await? else {
            return Ok(None);
        };
        if !needs_refresh(&data, self.oidc.refresh_skew(), unix_now()) {
            return Ok(Some(Authenticated {
                secret: auth.secret.clone(),
                data,
            }));
        }
        let Some(refresh_token) = data.refresh_token.clone() else {
            return self
                .without_refresh_token(Authenticated {
                    secret: auth.secret.clone(),
                    data,
                })
                .await;
        };
        let provider = self.oidc.provider()?;
        match self
            .oidc
            .refresh(&provider, refresh_token.expose(), &data.claims)
            .await
        {
            Ok(tokens) => {
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
                self.sessions.save(&auth.secret, &data).await?;
                self.metrics.refreshes.with_label_values(&["success"]).inc();
                Ok(Some(Authenticated {
                    secret: auth.secret.clone(),
                    data,
                }))
            }
            Err(e) if e.is_fatal_for_refresh() => {
                tracing::info!(reason = "refresh_rejected", error = %e, "ending session");
                self.metrics.refreshes.with_label_values(&["fatal"]).inc();
                self.sessions
                    .delete(&auth.secret, &auth.data, "refresh_failed")
                    .await?;
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(reason = "refresh_transient", error = %e, "refresh failed; keeping the session");
                self.metrics
                    .refreshes
                    .with_label_values(&["transient"])
                    .inc();
                self.keep_while_valid(Authenticated {
                    secret: auth.secret.clone(),
                    data,
                })
            }
        }
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
