//! Cookie → session: the lookup every `api` and `page` request makes, and `/bff/user` too.

use http::HeaderMap;

use super::error::ProxyError;
use super::Portcullis;
use crate::session::cookie::Presented;
use crate::session::{CookieSecret, SessionData};

/// A request's session, with the secret that addresses it (needed to save a refresh).
pub struct Authenticated {
    pub secret: CookieSecret,
    pub data: SessionData,
}

impl Portcullis {
    /// The session named by the request's cookie, without refreshing. Malformed or duplicated
    /// cookies count as no session (R23) and are logged with a reason code.
    pub(super) async fn load_session(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, ProxyError> {
        match self.cookies.session(headers) {
            Presented::Valid(secret) => Ok(self
                .sessions
                .load(&secret)
                .await?
                .map(|data| Authenticated { secret, data })),
            Presented::Absent => Ok(None),
            Presented::Malformed => {
                tracing::info!(reason = "cookie_malformed", "session cookie rejected");
                Ok(None)
            }
            Presented::Duplicated => {
                tracing::info!(reason = "cookie_duplicated", "session cookie rejected");
                Ok(None)
            }
        }
    }

    /// The session with an access token fresh enough to forward, or `None` when there is no
    /// session or it just ended because its grant is gone.
    pub(super) async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Authenticated>, ProxyError> {
        match self.load_session(headers).await? {
            Some(auth) => self.refresh_if_needed(auth).await,
            None => Ok(None),
        }
    }
}
