//! The browser-facing endpoints under `/bff/`: login and callback (`login`), user, logout and
//! back-channel logout (`logout`). Each returns a `Reply` (or a `ProxyError` that
//! `respond::error_reply` turns into one).

mod login;
mod logout;

use http::{Method, Uri};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::json;

use super::error::ProxyError;
use super::rate_limit::Limited;
use super::respond::Reply;
use super::Portcullis;

use crate::clock::unix_now;

pub use login::validate_return_to;

/// Claims the session keeps but `/bff/user` does not show. The OP's session id is what a
/// back-channel logout token names; script in the page has no use for it, and injected script
/// should learn as little about the OP session as it can.
const CLAIMS_KEPT_FROM_THE_BROWSER: [&str; 1] = ["sid"];

pub enum Endpoint {
    Login,
    Callback,
    User,
    Logout,
    LogoutCallback,
    BackchannelLogout,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path {
            "/bff/login" => Some(Endpoint::Login),
            "/bff/callback" => Some(Endpoint::Callback),
            "/bff/user" => Some(Endpoint::User),
            "/bff/logout" => Some(Endpoint::Logout),
            "/bff/logout/callback" => Some(Endpoint::LogoutCallback),
            "/bff/backchannel-logout" => Some(Endpoint::BackchannelLogout),
            _ => None,
        }
    }
}

/// Query parameters, each name at most once (parameter pollution is rejected, R07).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(uri: &Uri) -> Result<Query, ProxyError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(other, _)| other == k) {
                return Err(ProxyError::BadRequest("duplicate_parameter"));
            }
        }
        Ok(Query(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

const X_CSRF: http::header::HeaderName = http::header::HeaderName::from_static("x-csrf");

fn has_csrf_header(req: &RequestHeader) -> bool {
    let mut values = req.headers.get_all(X_CSRF).iter();
    matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes() == b"1")
}

pub fn require_csrf_header(req: &RequestHeader) -> Result<(), ProxyError> {
    if has_csrf_header(req) {
        Ok(())
    } else {
        Err(ProxyError::CsrfRejected)
    }
}

/// The largest request body a `/bff/` endpoint reads (a logout token is a few hundred bytes).
/// The edge refuses a larger declared one before the proxy sees the request.
pub const MAX_LOCAL_BODY: usize = 64 * 1024;

/// Reads a request body of at most `limit` bytes (it is consumed: only for endpoints answered
/// here, never for proxied requests).
async fn read_body(session: &mut Session, limit: usize) -> Result<Vec<u8>, ProxyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|e| match e.etype() {
            pingora::ErrorType::ReadTimedout => ProxyError::BodyTimeout,
            _ => ProxyError::BadRequest("body_unreadable"),
        })?
    {
        if body.len() + chunk.len() > limit {
            return Err(ProxyError::BodyTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Portcullis {
    pub(super) async fn bff_endpoint(
        &self,
        endpoint: Endpoint,
        session: &mut Session,
    ) -> Result<Reply, ProxyError> {
        let method = session.req_header().method.clone();
        self.rate_limit(&endpoint, session)?;
        match (endpoint, method) {
            (Endpoint::Login, Method::GET) => self.login(session.req_header()).await,
            (Endpoint::Callback, Method::GET) => self.callback(session.req_header()).await,
            (Endpoint::User, Method::GET) => self.user(session.req_header()).await,
            (Endpoint::Logout, Method::GET | Method::POST) => {
                self.logout(session.req_header()).await
            }
            (Endpoint::LogoutCallback, Method::GET) => {
                self.logout_callback(session.req_header()).await
            }
            (Endpoint::BackchannelLogout, Method::POST) => self.backchannel_logout(session).await,
            _ => Err(ProxyError::MethodNotAllowed),
        }
    }

    /// Login, callback and back-channel logout can be hit without a session; each is rate
    /// limited per client address and globally.
    fn rate_limit(&self, endpoint: &Endpoint, session: &Session) -> Result<(), ProxyError> {
        let name = match endpoint {
            Endpoint::Login => "login",
            Endpoint::Callback => "callback",
            Endpoint::BackchannelLogout => "backchannel_logout",
            Endpoint::LogoutCallback => "logout_callback",
            Endpoint::User | Endpoint::Logout => return Ok(()),
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        match self.rate_limiter.check(client) {
            Ok(()) => Ok(()),
            Err(limited) => {
                let limit = match limited {
                    Limited::Client => "client",
                    Limited::Global => "global",
                };
                self.metrics
                    .rate_limited
                    .with_label_values(&[name, limit])
                    .inc();
                Err(ProxyError::RateLimited(if limit == "client" {
                    "rate_limited_client"
                } else {
                    "rate_limited_global"
                }))
            }
        }
    }

    /// `GET /bff/user` with `X-CSRF: 1`: who is logged in, never a token nor the OP's session id.
    async fn user(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        require_csrf_header(req)?;
        let auth = self
            .authenticate(&req.headers)
            .await?
            .ok_or_else(|| self.unauthenticated(&req.headers))?;
        let now = unix_now();
        let mut claims = auth.data.claims.clone();
        for hidden in CLAIMS_KEPT_FROM_THE_BROWSER {
            claims.remove(hidden);
        }
        let body = json!({
            "sub": auth.data.sub,
            "claims": claims,
            "session": {
                "expires_in": auth.data.absolute_deadline.saturating_sub(now),
                "idle_expires_in": self.sessions.config().idle_timeout.as_secs().min(auth.data.absolute_deadline.saturating_sub(now)),
            },
            "logout_url": format!("/bff/logout?sid={}", auth.data.logout_id),
        });
        Ok(Reply::json(200, body.to_string()))
    }
}
