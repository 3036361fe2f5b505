//! Cookie → session: the lookup every request to a route with a session policy makes, the
//! ingress auth endpoint's, and `/bff/user`'s.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue};

use super::error::ProxyError;
use super::refresh::needs_refresh;
use super::Portcullis;
use crate::clock::unix_now;
use crate::oidc::dpop::UpstreamDpop;
use crate::session::cache::HotSession;
use crate::session::cookie::Presented;
use crate::session::{CookieSecret, SessionData};

/// A request's session, with the secret that addresses it (needed to save a refresh).
pub struct Authenticated {
    pub secret: CookieSecret,
    pub data: SessionData,
}

impl Portcullis {
    /// The cookie secret a request presents. Malformed or duplicated cookies count as no
    /// session (R23); `unauthenticated` says which, for the rejection.
    fn presented_secret(&self, headers: &HeaderMap) -> Option<CookieSecret> {
        match self.cookies.session(headers) {
            Presented::Valid(secret) => Some(secret),
            Presented::Absent | Presented::Malformed | Presented::Duplicated => None,
        }
    }

    /// Why a request that needs a session has none: no cookie at all, or one that names no
    /// live session, whose 401 then expires it and whose log line says which.
    pub(super) fn unauthenticated(&self, headers: &HeaderMap) -> ProxyError {
        match self.cookies.session(headers) {
            Presented::Absent => ProxyError::Unauthenticated,
            Presented::Valid(_) => ProxyError::StaleCookie("unknown_session"),
            Presented::Malformed => ProxyError::StaleCookie("cookie_malformed"),
            Presented::Duplicated => ProxyError::StaleCookie("cookie_duplicated"),
        }
    }

    /// The whole session named by the request's cookie, read from the store, without
    /// refreshing.
    pub(super) async fn load_session(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, ProxyError> {
        let Some(secret) = self.presented_secret(headers) else {
            return Ok(None);
        };
        Ok(self
            .sessions
            .load(&secret)
            .await?
            .map(|data| Authenticated { secret, data }))
    }

    /// The whole session with an access token fresh enough to forward (refreshed if it was
    /// due), or `None` when there is no session or it just ended because its grant is gone.
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, ProxyError> {
        match self.load_session(headers).await? {
            Some(auth) => self.refresh_if_needed(auth).await,
            None => Ok(None),
        }
    }

    /// What forwarding needs from a request's session, its token refreshed first when due; a
    /// session whose token is not due is served from the session cache. `started`: when the
    /// request came in.
    pub(super) async fn fresh_session(
        &self,
        headers: &HeaderMap,
        started: Instant,
    ) -> Result<Option<HotSession>, ProxyError> {
        let Some(secret) = self.presented_secret(headers) else {
            return Ok(None);
        };
        let now = unix_now();
        let Some(hot) = self.sessions.load_hot(&secret, now, started).await? else {
            return Ok(None);
        };
        let skew = self.oidc.refresh_skew();
        if !needs_refresh(hot.access_expires_at, hot.access_lifetime, skew, now) {
            return Ok(Some(hot));
        }
        // Boxed: the refresh is rare, and its future would make every request's larger.
        Ok(Box::pin(self.authenticate(headers))
            .await?
            .map(|auth| HotSession::of(&auth.data)))
    }
}

/// The `Authorization: Bearer` value, and the DPoP binding a `dpop: true` route uses instead.
pub(super) struct Credentials {
    pub bearer: HeaderValue,
    pub dpop: Option<Arc<UpstreamDpop>>,
}

/// A token with bytes not allowed in a header would be a broken OP; refuse rather than mangle.
pub(super) const NOT_A_HEADER_VALUE: ProxyError =
    ProxyError::Internal("access_token_not_a_header_value");
