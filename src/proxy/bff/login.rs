//! `/bff/login` and `/bff/callback`: the code + PKCE flow, and where the browser lands after it.

use pingora::http::RequestHeader;
use subtle::ConstantTimeEq;

use super::Query;
use crate::proxy::access::check_access;
use crate::proxy::browser_checks::{self, OurHosts};
use crate::proxy::error::ProxyError;
use crate::proxy::respond::Reply;
use crate::proxy::Portcullis;

use crate::clock::unix_now;
use crate::oidc::dpop::DpopKey;
use crate::oidc::tokens_expiry;
use crate::random::random_token;
use crate::session::cookie::Presented;
use crate::session::{CookieSecret, LoginTransaction, SessionData};
use crate::telemetry::audit;

/// Longest `returnTo` accepted; real in-app paths are far shorter.
const MAX_RETURN_TO: usize = 2048;
/// Longest `state` or `code` accepted on the callback (ours are 43 characters).
const MAX_CALLBACK_PARAM: usize = 2048;

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

/// Where the browser goes after login: `returnTo` (a local path), or `rd` (a local path, or an
/// absolute URL on one of portcullis's hosts: ingress controllers send the browser back to the
/// host it came from). Both at once is ambiguous, so refused.
fn return_to(query: &Query, hosts: &OurHosts) -> Result<String, ProxyError> {
    match (query.get("returnTo"), query.get("rd")) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("return_to_ambiguous")),
        (None, Some(rd)) if !rd.starts_with('/') => hosts
            .absolute_return_to(rd)
            .ok_or(ProxyError::BadRequest("return_to_rejected")),
        (Some(path), None) | (None, Some(path)) => validate_return_to(path).map(str::to_string),
        (None, None) => Ok("/".to_string()),
    }
}

/// A callback parameter that must be present, non-empty and of a sane length; `missing` is the
/// rejection reason otherwise.
fn callback_param<'q>(
    query: &'q Query,
    name: &str,
    missing: &'static str,
) -> Result<&'q str, ProxyError> {
    query
        .get(name)
        .filter(|v| !v.is_empty() && v.len() <= MAX_CALLBACK_PARAM)
        .ok_or(ProxyError::LoginFailed(missing))
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

impl Portcullis {
    /// `GET /bff/login?returnTo=/path`: starts the code + PKCE flow.
    pub(super) async fn login(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        browser_checks::check_top_level_navigation(req)?;
        let query = Query::parse(&req.uri)?;
        let live = self.live.load();
        let return_to = return_to(&query, &live.hosts)?;
        let redirect_uri = live.hosts.redirect_uri_for(req);
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
        let auth = self
            .oidc
            .authorization_request(&provider, &extra, redirect_uri.as_ref())
            .await?;
        let txn = LoginTransaction {
            state: auth.state,
            nonce: auth.nonce,
            pkce_verifier: auth.pkce_verifier,
            return_to,
            created_at: unix_now(),
            redirect_uri: redirect_uri.map(String::from),
            dpop_key: auth.dpop_key,
        };
        self.sessions.put_transaction(&browser, &txn).await?;
        self.metrics.logins.with_label_values(&["started"]).inc();
        Ok(Reply::redirect(auth.url.to_string())
            .header("set-cookie", self.cookies.set_transaction(&browser)))
    }

    /// `GET /bff/callback`: checks the transaction, `state`, `iss` and `code`, exchanges the code,
    /// validates the ID token, and creates a brand-new session.
    pub(super) async fn callback(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        let result = self.finish_login(req).await;
        match &result {
            Ok((_, sub)) => {
                self.metrics.logins.with_label_values(&["success"]).inc();
                audit("login", "success", "-", Some(sub));
            }
            Err(e) => {
                self.metrics.logins.with_label_values(&["failure"]).inc();
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
        let state = callback_param(&query, "state", "state_missing")?;
        let txn = self
            .sessions
            .take_transaction(&browser, state)
            .await?
            .ok_or(ProxyError::LoginFailed("unknown_or_expired_transaction"))?;
        let valid_for = self.sessions.config().login_timeout.as_secs();
        if unix_now() > txn.created_at.saturating_add(valid_for) {
            return Err(ProxyError::LoginFailed("transaction_expired"));
        }
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
        let code = callback_param(&query, "code", "code_missing")?;
        let redirect_uri = match txn.redirect_uri.as_deref().map(url::Url::parse) {
            Some(Ok(uri)) => Some(uri),
            Some(Err(_)) => return Err(ProxyError::Internal("transaction_redirect_uri")),
            None => None,
        };
        let dpop = txn
            .dpop_key
            .as_ref()
            .map(DpopKey::from_stored)
            .transpose()
            .map_err(|_| ProxyError::Internal("transaction_dpop_key"))?;
        let tokens = self
            .oidc
            .exchange_code(
                &provider,
                code,
                txn.pkce_verifier.expose(),
                txn.nonce.expose(),
                redirect_uri.as_ref(),
                dpop,
            )
            .await
            .map_err(ProxyError::LoginRejected)?;
        check_access(&self.live.load().access, &tokens.claims)?;
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
                .map_or_else(|| self.oidc.issuer(), str::to_string),
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
            dpop_key: txn.dpop_key,
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
