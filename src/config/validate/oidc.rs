//! `oidc.*`: the issuer, the client and its secret, scopes and login parameters.

use super::{is_loopback_host, Checker};
use crate::config::raw::RawOidc;
use crate::config::types::*;
use crate::secret::Secret;

/// No `offline_access`: with Keycloak (which issues refresh tokens without it) it would make the
/// refresh token an offline token, whose session outlives a logout at the OP. OPs that issue
/// refresh tokens only for it (Okta, Auth0, Entra ID, Dex) list it in their configuration.
const DEFAULT_SCOPES: [&str; 3] = ["openid", "profile", "email"];
const DEFAULT_LOGIN_PARAMS: [&str; 5] = [
    "prompt",
    "login_hint",
    "ui_locales",
    "max_age",
    "acr_values",
];
/// Parameters portcullis itself owns in the authorization request; letting the browser set
/// any of them would undo PKCE, state or the redirect-URI binding (RFC 9700 §2.1).
const RESERVED_LOGIN_PARAMS: [&str; 13] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "request",
    "request_uri",
    "claims",
    "resource",
];

impl Checker<'_> {
    pub(super) fn oidc(&mut self, raw: Option<RawOidc>, public_origin: &str) -> Option<OidcConfig> {
        let Some(raw) = raw else {
            self.problem(
                "oidc",
                "is required (set oidc.issuer, oidc.client_id and a client secret)",
            );
            return None;
        };
        let issuer = self.issuer(raw.issuer.as_deref(), raw.allow_plaintext_http);
        let client_id = match raw.client_id.as_deref() {
            Some(id) if !id.trim().is_empty() => Some(id.to_string()),
            _ => {
                self.problem(
                    "oidc.client_id",
                    "is required (the client id registered at the identity provider)",
                );
                None
            }
        };
        let auth_method = self.auth_method(raw.token_endpoint_auth_method.as_deref());
        let client_key = self.client_key_for(auth_method, &raw);
        let client_tls = self.client_tls_for(auth_method, &raw);
        let tls_ca_file = raw.tls_ca_file.as_deref().and_then(|f| self.tls_ca_file(f));
        let client_secret = if auth_method.uses_secret() {
            self.client_secret(raw.client_secret, raw.client_secret_file.as_deref())
                .map(Some)
        } else {
            self.no_client_secret(&raw, auth_method);
            Some(None)
        };
        let pushed_authorization_requests =
            self.par_mode(raw.pushed_authorization_requests.as_deref());
        let scopes = raw
            .scopes
            .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
        if !scopes.iter().any(|s| s == "openid") {
            self.problem(
                "oidc.scopes",
                "must include \"openid\" (portcullis is an OpenID Connect client)",
            );
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace()))
        {
            self.problem(
                "oidc.scopes",
                format!("{bad:?} is not a scope (one scope per list item, no spaces)"),
            );
        }
        let post_logout = raw
            .post_logout_redirect_uri
            .unwrap_or_else(|| format!("{public_origin}/bff/logout/callback"));
        let post_logout_redirect_uri = self.url("oidc.post_logout_redirect_uri", &post_logout);
        let allowed_login_params = raw
            .allowed_login_params
            .unwrap_or_else(|| DEFAULT_LOGIN_PARAMS.iter().map(|s| s.to_string()).collect());
        for p in &allowed_login_params {
            if RESERVED_LOGIN_PARAMS.contains(&p.as_str()) {
                self.problem(
                    "oidc.allowed_login_params",
                    format!("{p:?} is set by portcullis itself and cannot be passed through (remove it)"),
                );
            }
        }
        let refresh_skew = self.duration("oidc.refresh_skew", raw.refresh_skew.as_deref(), "60s");
        let clock_skew = self.duration("oidc.clock_skew", raw.clock_skew.as_deref(), "60s");
        let http_timeout = self.duration("oidc.http_timeout", raw.http_timeout.as_deref(), "10s");
        let discovery_refresh = self.duration(
            "oidc.discovery_refresh",
            raw.discovery_refresh.as_deref(),
            "1h",
        );
        Some(OidcConfig {
            issuer: issuer?,
            client_id: client_id?,
            client_secret: client_secret?,
            client_key: client_key?,
            client_tls: client_tls?,
            tls_ca_file,
            pushed_authorization_requests,
            dpop: raw.dpop.unwrap_or(false),
            scopes,
            post_logout_redirect_uri: post_logout_redirect_uri?,
            auth_method,
            allowed_login_params,
            refresh_skew,
            clock_skew,
            http_timeout,
            discovery_refresh,
            send_id_token_hint: raw.send_id_token_hint.unwrap_or(false),
        })
    }

    fn issuer(&mut self, value: Option<&str>, allow_plaintext: bool) -> Option<String> {
        let Some(value) = value else {
            self.problem("oidc.issuer", "is required (the identity provider's issuer URL, exactly as its discovery document spells it)");
            return None;
        };
        let url = self.url("oidc.issuer", value)?;
        if url.query().is_some() || url.fragment().is_some() {
            self.problem("oidc.issuer", "must not have a query or fragment");
        }
        if url.scheme() == "http" && !is_loopback_host(&url) && !allow_plaintext {
            self.problem(
                "oidc.issuer",
                "plain http is accepted only for loopback hosts (use https, or set oidc.allow_plaintext_http: true to accept the risk)",
            );
        }
        // Kept as written: discovery must echo it exactly (OIDC Discovery §4.3).
        Some(value.to_string())
    }

    fn client_secret(
        &mut self,
        inline: Option<String>,
        file: Option<&str>,
    ) -> Option<Secret<String>> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    "oidc.client_secret",
                    "set either client_secret or client_secret_file, not both",
                );
                None
            }
            (None, None) => {
                self.problem(
                    "oidc.client_secret_file",
                    "is required (a file holding the client secret; or set oidc.client_secret)",
                );
                None
            }
            (Some(s), None) if s.is_empty() => {
                self.problem("oidc.client_secret", "must not be empty");
                None
            }
            (Some(s), None) => Some(Secret::new(s)),
            (None, Some(path)) => self.secret_file("oidc.client_secret_file", path),
        }
    }
}
