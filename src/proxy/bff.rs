//! The browser-facing endpoints under `/bff/`: login, callback, user, logout.
//! Each returns a `Reply` (or a `ProxyError` that `respond::error_reply` turns into one).

use http::{Method, Uri};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::browser_checks;
use super::error::ProxyError;
use super::rate_limit::Limited;
use super::respond::Reply;
use super::Portcullis;
use std::sync::Arc;

use crate::oidc::{tokens_expiry, Provider};
use crate::session::cookie::Presented;
use crate::session::crypto::random_token;
use crate::session::{unix_now, CookieSecret, LoginTransaction, SessionData};
use crate::telemetry::audit;

/// Longest `returnTo` accepted; real in-app paths are far shorter.
const MAX_RETURN_TO: usize = 2048;
/// Longest `state` or `code` accepted on the callback (ours are 43 characters).
const MAX_CALLBACK_PARAM: usize = 2048;
/// Largest back-channel logout body read; a logout token is a few hundred bytes.
const MAX_BACKCHANNEL_BODY: usize = 64 * 1024;

pub enum Endpoint {
    Login,
    Callback,
    User,
    Logout,
    BackchannelLogout,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        match path {
            "/bff/login" => Some(Endpoint::Login),
            "/bff/callback" => Some(Endpoint::Callback),
            "/bff/user" => Some(Endpoint::User),
            "/bff/logout" => Some(Endpoint::Logout),
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

fn has_csrf_header(req: &RequestHeader) -> bool {
    let mut values = req.headers.get_all("x-csrf").iter();
    matches!((values.next(), values.next()), (Some(v), None) if v.as_bytes() == b"1")
}

pub fn require_csrf_header(req: &RequestHeader) -> Result<(), ProxyError> {
    if has_csrf_header(req) {
        Ok(())
    } else {
        Err(ProxyError::CsrfRejected)
    }
}

/// Accepts only a local path: one leading `/`, no `//` or `/\` prefix, no backslash, no control
/// characters, no whitespace other than an encoded space, no `.` or `..` segment (which could
/// climb to `//evil.test` or into `/bff/`), none of these hidden behind one to three layers of
/// percent-encoding either, and nothing under `/bff/` (R08).
pub fn validate_return_to(value: &str) -> Result<&str, ProxyError> {
    let bad = ProxyError::BadRequest("return_to_rejected");
    if value.len() > MAX_RETURN_TO || value.chars().any(char::is_whitespace) {
        return Err(bad);
    }
    let mut layer = value.to_string();
    for _ in 0..=3 {
        if !is_safe_local_path(&layer) || layer.starts_with("/bff/") || layer == "/bff" {
            return Err(bad);
        }
        let next = crate::percent::decode_str(&layer);
        if next == layer {
            return Ok(value);
        }
        layer = next;
    }
    // Still changing after three decodings: nobody needs that much encoding.
    Err(bad)
}

fn is_safe_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.contains('\\')
        && !p
            .chars()
            .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
        && !has_dot_segment(p)
}

/// A `.` or `..` path segment, also with `;` parameters after it (`..;x`), as servers that
/// honour matrix parameters read it.
fn has_dot_segment(p: &str) -> bool {
    let path = p.split(['?', '#']).next().unwrap_or(p);
    path.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or(segment);
        name == "." || name == ".."
    })
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Reads a request body of at most `limit` bytes (it is consumed: only for endpoints answered
/// here, never for proxied requests).
async fn read_body(session: &mut Session, limit: usize) -> Result<Vec<u8>, ProxyError> {
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| ProxyError::BadRequest("body_unreadable"))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ProxyError::BadRequest("body_too_large"));
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

    /// `GET /bff/login?returnTo=/path`: starts the code + PKCE flow.
    async fn login(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        browser_checks::check_top_level_navigation(req)?;
        let query = Query::parse(&req.uri)?;
        let return_to = validate_return_to(query.get("returnTo").unwrap_or("/"))?.to_string();
        let extra: Vec<(String, String)> = query
            .0
            .iter()
            .filter(|(k, _)| self.oidc.config().allowed_login_params.contains(k))
            .cloned()
            .collect();
        let provider = self.oidc.provider()?;
        // One transaction cookie per browser, reused across tabs: each tab's login is a separate
        // record keyed by its own state, so parallel logins all complete (R09).
        let browser = match self.cookies.transaction(&req.headers) {
            Presented::Valid(secret) => secret,
            _ => CookieSecret::generate(),
        };
        let auth = self.oidc.authorization_request(&provider, &extra);
        let txn = LoginTransaction {
            state: auth.state,
            nonce: auth.nonce,
            pkce_verifier: auth.pkce_verifier,
            return_to,
            created_at: unix_now(),
        };
        self.sessions.put_transaction(&browser, &txn).await?;
        self.metrics.logins.with_label_values(&["started"]).inc();
        Ok(Reply::redirect(auth.url.to_string())
            .header("set-cookie", self.cookies.set_transaction(&browser)))
    }

    /// `GET /bff/callback`: checks the transaction, `state`, `iss` and `code`, exchanges the code,
    /// validates the ID token, and creates a brand-new session.
    async fn callback(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        let result = self.finish_login(req).await;
        match &result {
            Ok((_, sub)) => {
                self.metrics.logins.with_label_values(&["succeeded"]).inc();
                audit("login", "success", "-", Some(sub));
            }
            Err(e) => {
                self.metrics.logins.with_label_values(&["failed"]).inc();
                audit("login", "failure", e.reason(), None);
            }
        }
        result.map(|(reply, _)| reply)
    }

    /// The landing reply and the new session's subject.
    async fn finish_login(&self, req: &RequestHeader) -> Result<(Reply, String), ProxyError> {
        let query = Query::parse(&req.uri)?;
        let Presented::Valid(browser) = self.cookies.transaction(&req.headers) else {
            return Err(ProxyError::LoginFailed("missing_transaction"));
        };
        let state = query
            .get("state")
            .filter(|s| !s.is_empty() && s.len() <= MAX_CALLBACK_PARAM);
        let state = state.ok_or(ProxyError::LoginFailed("state_missing"))?;
        let txn = self
            .sessions
            .take_transaction(&browser, state)
            .await?
            .ok_or(ProxyError::LoginFailed("unknown_or_expired_transaction"))?;
        let state_matches: bool = txn.state.expose().as_bytes().ct_eq(state.as_bytes()).into();
        if !state_matches {
            return Err(ProxyError::LoginFailed("state_mismatch"));
        }
        if query.get("error").is_some() {
            return Err(ProxyError::LoginFailed("authorization_error"));
        }
        let provider = self.oidc.provider()?;
        match query.get("iss") {
            Some(iss) if iss != self.oidc.issuer() => {
                return Err(ProxyError::LoginFailed("iss_mismatch"))
            }
            None if provider
                .extra
                .authorization_response_iss_parameter_supported =>
            {
                return Err(ProxyError::LoginFailed("iss_missing"))
            }
            _ => {}
        }
        let code = query
            .get("code")
            .filter(|c| !c.is_empty() && c.len() <= MAX_CALLBACK_PARAM);
        let code = code.ok_or(ProxyError::LoginFailed("code_missing"))?;
        let tokens = self
            .oidc
            .exchange_code(
                &provider,
                code,
                txn.pkce_verifier.expose(),
                txn.nonce.expose(),
            )
            .await
            .map_err(ProxyError::LoginRejected)?;
        // R18: no identifier from before the login survives it.
        if let Some(old) = self.load_session(&req.headers).await? {
            self.sessions
                .delete(&old.secret, &old.data, "logout")
                .await?;
        }
        let now = unix_now();
        let data = SessionData {
            iss: tokens
                .claim_str("iss")
                .unwrap_or(self.oidc.issuer())
                .to_string(),
            sub: tokens.claim_str("sub").unwrap_or_default().to_string(),
            sid: tokens.claim_str("sid").map(str::to_string),
            access_token: tokens.access_token,
            access_expires_at: tokens_expiry(tokens.expires_in),
            access_lifetime: tokens.expires_in,
            refresh_token: tokens.refresh_token,
            id_token: tokens
                .id_token
                .ok_or(ProxyError::Internal("id_token_missing"))?,
            claims: tokens.claims,
            created_at: now,
            absolute_deadline: now + self.sessions.config().absolute_timeout.as_secs(),
            logout_id: random_token::<16>(),
        };
        let secret = self.sessions.create(&data).await?;
        let landing = self
            .land_on(&txn.return_to)
            .header("set-cookie", self.cookies.set_session(&secret));
        Ok((landing, data.sub))
    }

    /// The response that takes the browser to `returnTo` after login. With SameSite=Strict the
    /// navigation that ends the OP's cross-site redirect chain would not carry the new cookie,
    /// so the callback answers with a same-origin page that navigates onward itself: that
    /// navigation is same-site and the cookie goes with it.
    fn land_on(&self, return_to: &str) -> Reply {
        if self.sessions.config().same_site == crate::config::SameSite::Lax {
            return Reply::redirect(return_to);
        }
        let target = html_escape(return_to);
        Reply::html(
            200,
            format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={target}\">\
                 <title>Signing in</title></head><body><a href=\"{target}\">Continue</a></body></html>"
            ),
        )
    }

    /// `GET /bff/user` with `X-CSRF: 1`: who is logged in, never a token.
    async fn user(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        require_csrf_header(req)?;
        let auth = self
            .authenticate(&req.headers)
            .await?
            .ok_or_else(|| self.unauthenticated(&req.headers))?;
        let now = unix_now();
        let body = json!({
            "sub": auth.data.sub,
            "claims": auth.data.claims,
            "session": {
                "expires_in": auth.data.absolute_deadline.saturating_sub(now),
                "idle_expires_in": self.sessions.config().idle_timeout.as_secs().min(auth.data.absolute_deadline.saturating_sub(now)),
            },
            "logout_url": format!("/bff/logout?sid={}", auth.data.logout_id),
        });
        Ok(Reply::json(200, body.to_string()))
    }

    /// `GET /bff/logout?sid=…` or `POST /bff/logout` with `X-CSRF: 1`: ends the session here,
    /// then sends the browser to the OP's end-session endpoint.
    async fn logout(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        let query = Query::parse(&req.uri)?;
        let presented_sid = if req.method == Method::POST {
            require_csrf_header(req)?;
            self.origins.check_request_origin(req)?;
            None
        } else {
            Some(
                query
                    .get("sid")
                    .ok_or(ProxyError::Forbidden("logout_sid_missing"))?,
            )
        };
        let Some(auth) = self.load_session(&req.headers).await? else {
            // Nothing to end here: still clear the cookies and finish at the post-logout page.
            return Ok(self.logged_out(self.oidc.config().post_logout_redirect_uri.to_string()));
        };
        if let Some(sid) = presented_sid {
            let matches: bool = auth.data.logout_id.as_bytes().ct_eq(sid.as_bytes()).into();
            if !matches {
                return Err(ProxyError::Forbidden("logout_sid_mismatch"));
            }
        }
        self.sessions
            .delete(&auth.secret, &auth.data, "logout")
            .await?;
        let everywhere = query.get("everywhere") == Some("1");
        let scope = if everywhere {
            self.sessions
                .delete_user_sessions(&auth.data.iss, &auth.data.sub, u64::MAX, "logout")
                .await?;
            "everywhere"
        } else {
            "session"
        };
        audit("logout", "success", scope, Some(&auth.data.sub));
        let provider = self.oidc.provider().ok();
        self.revoke_in_background(provider.clone(), &auth.data);
        let target = self
            .oidc
            .end_session_url(provider.as_deref(), auth.data.id_token.expose());
        Ok(self.logged_out(target.to_string()))
    }

    /// RFC 7009 revocation of the ended session's refresh token, off the response path.
    fn revoke_in_background(&self, provider: Option<Arc<Provider>>, data: &SessionData) {
        let (Some(provider), Some(rt)) = (provider, data.refresh_token.clone()) else {
            return;
        };
        let oidc = self.oidc.clone();
        tokio::spawn(async move { oidc.revoke_refresh_token(&provider, rt.expose()).await });
    }

    /// `POST /bff/backchannel-logout` (Back-Channel Logout 1.0): a validated `logout_token`
    /// ends the OP session's sessions here (by `sid`), or all of the user's (by `sub`). No
    /// cookies are read and no CSRF header applies: the caller is the OP, not a browser.
    async fn backchannel_logout(&self, session: &mut Session) -> Result<Reply, ProxyError> {
        let result = self.process_logout_token(session).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(ProxyError::LogoutTokenRejected("replayed")) => "replayed",
            Err(_) => "rejected",
        };
        self.metrics
            .backchannel_logouts
            .with_label_values(&[outcome])
            .inc();
        let reason = result.as_ref().err().map_or("-", ProxyError::reason);
        audit("backchannel_logout", outcome, reason, None);
        result
    }

    async fn process_logout_token(&self, session: &mut Session) -> Result<Reply, ProxyError> {
        let form_encoded = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        if !form_encoded {
            return Err(ProxyError::LogoutTokenRejected("content_type"));
        }
        let body = read_body(session, MAX_BACKCHANNEL_BODY).await?;
        let tokens: Vec<String> = url::form_urlencoded::parse(&body)
            .filter(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .collect();
        let [jwt] = tokens.as_slice() else {
            return Err(ProxyError::LogoutTokenRejected("logout_token_count"));
        };
        // Not ready is a 503 (the OP may retry), not a rejected token.
        self.oidc.provider()?;
        let token = self
            .oidc
            .verify_logout_token(jwt)
            .await
            .map_err(|e| ProxyError::LogoutTokenRejected(e.0))?;
        // BCL §2.6: keep each jti until the token could no longer be accepted anyway.
        let skew = self.oidc.config().clock_skew.as_secs();
        let ttl = std::time::Duration::from_secs(token.exp.saturating_sub(unix_now()) + skew + 1);
        if !self
            .sessions
            .remember_once("jti", &[&token.iss, &token.jti], ttl)
            .await?
        {
            return Err(ProxyError::LogoutTokenRejected("replayed"));
        }
        let ended = match (&token.sid, &token.sub) {
            (Some(sid), _) => {
                self.sessions
                    .delete_op_sessions(&token.iss, sid, "logout")
                    .await?
            }
            // A token naming only the user ends the logins that happened before the logout at
            // the OP (allowing for the clocks' skew), not one made after it that a late or
            // replayed-in-window token would otherwise end too.
            (None, Some(sub)) => {
                self.sessions
                    .delete_user_sessions(&token.iss, sub, token.iat + skew, "logout")
                    .await?
            }
            (None, None) => return Err(ProxyError::LogoutTokenRejected("sub_and_sid_missing")),
        };
        tracing::info!(sessions = ended, "back-channel logout ended sessions");
        Ok(Reply::new(200))
    }

    fn logged_out(&self, location: String) -> Reply {
        Reply::redirect(location)
            .header("set-cookie", self.cookies.expire_session())
            .header("set-cookie", self.cookies.expire_transaction())
            .header("clear-site-data", "\"cookies\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_local_paths() {
        for ok in [
            "/",
            "/app",
            "/app/x?y=1#z",
            "/a%20b",
            "/caf%C3%A9",
            "/v1.2/..x/x..",
            "/search?q=../x",
        ] {
            assert_eq!(validate_return_to(ok).ok(), Some(ok), "{ok}");
        }
    }

    #[test]
    fn return_to_rejects_everything_that_can_leave_the_origin() {
        for bad in [
            "",
            "app",
            "//evil.test/",
            "//evil.test@app.test/",
            "/\\evil.test",
            "\\\\evil.test",
            "https://evil.test/",
            "%2F%2Fevil.test",
            "/%2F/evil.test",
            "/%2f%5cevil.test",
            "/%252F%252Fevil.test",
            "/ok%0d%0aSet-Cookie:%20x=1",
            "/ok\r\nSet-Cookie: x=1",
            "/%09/evil.test",
            "/./\\evil.test",
            "/..//evil.test",
            "/%2e%2e//evil.test",
            "/%252e%252e//evil.test",
            "/x/../bff/logout",
            "/x/%2E%2E/bff/user",
            "/x/..;y/bff/logout",
            "/a/./b",
            "/bff/logout",
            "/%62ff/logout",
            "javascript:alert(1)",
            "/a&%5Cevil",
            "/a&%00",
            "/%2509/x",
            "/%E2%80%A8x",
        ] {
            assert!(validate_return_to(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn html_escape_neutralises_markup() {
        assert_eq!(html_escape("/a\"><script>"), "/a&quot;&gt;&lt;script&gt;");
    }
}
