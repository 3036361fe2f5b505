//! `/bff/logout` (local and RP-initiated, or everywhere) and `/bff/backchannel-logout`.

use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use subtle::ConstantTimeEq;

use super::{read_body, require_csrf_header, validate_return_to, Query, MAX_LOCAL_BODY};
use crate::proxy::error::ProxyError;
use crate::proxy::respond::Reply;
use crate::proxy::Portcullis;
use std::sync::Arc;

use crate::clock::unix_now;
use crate::oidc::{Provider, TokenKind};
use crate::random::random_token;
use crate::secret::Secret;
use crate::telemetry::{audit, SPAN_TARGET};
use tracing::Instrument;

/// Longest `state` accepted back on the logout callback (ours are 43 characters).
const MAX_LOGOUT_STATE: usize = 128;

impl Portcullis {
    /// `GET /bff/logout?sid=…` or `POST /bff/logout` with `X-CSRF: 1` (either with an optional
    /// local `returnTo`): ends the session here, then sends the browser to the OP's
    /// end-session endpoint.
    pub(super) async fn logout(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        let query = Query::parse(&req.uri)?;
        let presented_sid = if req.method == Method::POST {
            require_csrf_header(req)?;
            let host = crate::proxy::browser_checks::request_host(req)?;
            self.live.load().origins.check_request_origin(req, &host)?;
            None
        } else {
            Some(
                query
                    .get("sid")
                    .ok_or(ProxyError::Forbidden("logout_sid_missing"))?,
            )
        };
        let return_to = query.get("returnTo").map(validate_return_to).transpose()?;
        let Some(auth) = self.load_session(&req.headers).await? else {
            // Nothing to end here: still clear the cookies and finish where a logout would.
            return Ok(self.logged_out(self.logout_landing(return_to)));
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
        // Revoked before the browser is sent to the OP, not beside it: some OPs (Keycloak) end
        // or keep their own session depending on whether the revocation has arrived, and with
        // it whether they ask the user to confirm the logout. Each call is bounded by
        // `oidc.http_timeout`.
        if let (Some(provider), Some(refresh_token)) = (&provider, &auth.data.refresh_token) {
            self.oidc
                .revoke_token(provider, refresh_token.expose(), TokenKind::Refresh)
                .await;
        }
        let location = self
            .logout_location(provider.as_deref(), auth.data.id_token.expose(), return_to)
            .await?;
        Ok(self.logged_out(location))
    }

    /// The page a logged-out browser lands on: the validated `returnTo` on this origin, else
    /// the configured post-logout URI, unless that is `/bff/logout/callback` itself, which
    /// then defaults to the application's root.
    fn logout_landing(&self, return_to: Option<&str>) -> String {
        match return_to {
            Some(path) => format!("{}{path}", self.public_origin),
            None if self.live.load().logout_callback_registered => {
                format!("{}/", self.public_origin)
            }
            None => self.oidc.config().post_logout_redirect_uri.to_string(),
        }
    }

    /// The OP's end-session URL with a fresh `state` (RP-Initiated Logout §2). When the OP
    /// returns through `/bff/logout/callback`, that state is remembered with the landing page;
    /// otherwise the OP sends the browser to the configured URI. Without an end-session
    /// endpoint, the landing page itself.
    async fn logout_location(
        &self,
        provider: Option<&Provider>,
        id_token: &str,
        return_to: Option<&str>,
    ) -> Result<String, ProxyError> {
        let state = random_token::<32>();
        let Some(url) = self.oidc.end_session_url(provider, id_token, &state) else {
            return Ok(self.logout_landing(return_to));
        };
        if self.live.load().logout_callback_registered {
            self.sessions
                .put_logout_return(&state, &self.logout_landing(return_to))
                .await?;
        }
        Ok(url.to_string())
    }

    /// `GET /bff/logout/callback?state=…`, the default post-logout redirect URI: a `state` one of
    /// our logouts sent takes the browser, once, to the page chosen then; an unknown or replayed
    /// one gets a 400 and no redirect (R58); none at all, the application's root.
    pub(super) async fn logout_callback(&self, req: &RequestHeader) -> Result<Reply, ProxyError> {
        let query = Query::parse(&req.uri)?;
        // An OP that does not echo `state` still gets the browser home, to the fixed root.
        let Some(state) = query.get("state") else {
            return Ok(Reply::redirect(format!("{}/", self.public_origin)));
        };
        if state.is_empty() || state.len() > MAX_LOGOUT_STATE {
            return Err(ProxyError::BadRequest("logout_state_unknown"));
        }
        let target = self
            .sessions
            .take_logout_return(state)
            .await?
            .ok_or(ProxyError::BadRequest("logout_state_unknown"))?;
        Ok(Reply::redirect(target))
    }

    /// RFC 7009 revocation of tokens no session holds any more, in order, off the response path.
    pub(in crate::proxy) fn revoke_in_background(
        &self,
        provider: Option<Arc<Provider>>,
        tokens: Vec<(TokenKind, Secret<String>)>,
    ) {
        let Some(provider) = provider else {
            return;
        };
        if tokens.is_empty() {
            return;
        }
        let oidc = self.oidc.clone();
        // Made here, so the revocations belong to the request's trace though they outlive it.
        let span = tracing::info_span!(target: SPAN_TARGET, "token_revocation");
        tokio::spawn(
            async move {
                for (kind, token) in tokens {
                    oidc.revoke_token(&provider, token.expose(), kind).await;
                }
            }
            .instrument(span),
        );
    }

    /// `POST /bff/backchannel-logout` (Back-Channel Logout 1.0): a validated `logout_token`
    /// ends the OP session's sessions here (by `sid`), or all of the user's (by `sub`). No
    /// cookies are read and no CSRF header applies: the caller is the OP, not a browser.
    pub(super) async fn backchannel_logout(
        &self,
        session: &mut Session,
    ) -> Result<Reply, ProxyError> {
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
        let body = read_body(session, MAX_LOCAL_BODY).await?;
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
