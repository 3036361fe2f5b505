//! What a FAPI 2.0-grade configuration requires of the OP's discovery document: PAR, the
//! `private_key_jwt` method and its algorithm, DPoP and ES256 proofs. Checked at every
//! discovery, so `serve` refuses to start against an OP that lacks them, and `/readyz`
//! reports an OP that dropped one later.

use openidconnect::core::CoreClientAuthMethod;

use super::{Metadata, OidcError};
use crate::config::{OidcConfig, ParMode, TokenAuthMethod};

/// DPoP proofs are signed with ES256 (P-256 keys, `ring`).
const DPOP_ALG: &str = "ES256";

pub(super) fn check(cfg: &OidcConfig, metadata: &Metadata) -> Result<(), OidcError> {
    check_par(cfg.pushed_authorization_requests, metadata)?;
    if cfg.auth_method == TokenAuthMethod::PrivateKeyJwt {
        check_private_key_jwt(cfg, metadata)?;
    }
    if cfg.auth_method == TokenAuthMethod::TlsClientAuth
        && !offers(
            metadata,
            CoreClientAuthMethod::Extension("tls_client_auth".into()),
        )
    {
        return Err(incompatible(
            "oidc.token_endpoint_auth_method",
            "is tls_client_auth, but the provider's token_endpoint_auth_methods_supported lacks it (enable it at the provider, or use another method)",
        ));
    }
    if cfg.dpop {
        check_dpop(metadata)?;
    }
    Ok(())
}

fn incompatible(key: &'static str, message: impl Into<String>) -> OidcError {
    OidcError::Incompatible {
        key,
        message: message.into(),
    }
}

fn check_par(mode: ParMode, metadata: &Metadata) -> Result<(), OidcError> {
    let extra = metadata.additional_metadata();
    let key = "oidc.pushed_authorization_requests";
    match mode {
        ParMode::Required if extra.pushed_authorization_request_endpoint.is_none() => Err(incompatible(
            key,
            "is required, but the provider does not advertise pushed_authorization_request_endpoint (enable PAR at the provider, or set auto or off)",
        )),
        ParMode::Off if extra.require_pushed_authorization_requests => Err(incompatible(
            key,
            "is off, but the provider says require_pushed_authorization_requests (set auto or required)",
        )),
        _ => Ok(()),
    }
}

fn check_private_key_jwt(cfg: &OidcConfig, metadata: &Metadata) -> Result<(), OidcError> {
    let key = "oidc.token_endpoint_auth_method";
    if !offers(metadata, CoreClientAuthMethod::PrivateKeyJwt) {
        return Err(incompatible(
            key,
            "is private_key_jwt, but the provider's token_endpoint_auth_methods_supported lacks it (enable it at the provider, or use a client secret)",
        ));
    }
    let Some(alg) = cfg.client_key.as_ref().map(|k| k.alg.name()) else {
        return Ok(());
    };
    let algs: Vec<String> = metadata
        .token_endpoint_auth_signing_alg_values_supported()
        .iter()
        .flat_map(|algs| algs.iter())
        .filter_map(|a| serde_json::to_value(a).ok()?.as_str().map(str::to_string))
        .collect();
    // Absent list: the OP names no restriction.
    if !algs.is_empty() && !algs.iter().any(|a| a == alg) {
        return Err(incompatible(
            "oidc.client_key_alg",
            format!(
                "is {alg}, which the provider's token_endpoint_auth_signing_alg_values_supported lacks ({}) (use a key and algorithm it lists)",
                algs.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Discovery §3: an absent list means client_secret_basic only.
fn offers(metadata: &Metadata, method: CoreClientAuthMethod) -> bool {
    metadata
        .token_endpoint_auth_methods_supported()
        .is_some_and(|m| m.contains(&method))
}

fn check_dpop(metadata: &Metadata) -> Result<(), OidcError> {
    let algs = &metadata
        .additional_metadata()
        .dpop_signing_alg_values_supported;
    if algs.iter().any(|a| a == DPOP_ALG) {
        return Ok(());
    }
    Err(incompatible(
        "oidc.dpop",
        format!(
            "is on, but the provider's dpop_signing_alg_values_supported lacks {DPOP_ALG} ({}) (enable DPoP with ES256 at the provider, or set oidc.dpop: false)",
            if algs.is_empty() { "absent".to_string() } else { algs.join(", ") }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(extra: serde_json::Value) -> Metadata {
        let mut doc = json!({
            "issuer": "https://op.test",
            "authorization_endpoint": "https://op.test/auth",
            "jwks_uri": "https://op.test/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        serde_json::from_value(doc).unwrap()
    }

    fn cfg(par: ParMode, dpop: bool) -> OidcConfig {
        OidcConfig {
            issuer: "https://op.test".into(),
            client_id: "c".into(),
            client_secret: None,
            client_key: None,
            client_tls: None,
            tls_ca_file: None,
            pushed_authorization_requests: par,
            dpop,
            scopes: vec!["openid".into()],
            post_logout_redirect_uri: url::Url::parse("https://app.test/").unwrap(),
            auth_method: TokenAuthMethod::PrivateKeyJwt,
            allowed_login_params: vec![],
            refresh_skew: std::time::Duration::from_secs(60),
            clock_skew: std::time::Duration::from_secs(60),
            http_timeout: std::time::Duration::from_secs(10),
            discovery_refresh: std::time::Duration::from_secs(3600),
            send_id_token_hint: false,
        }
    }

    #[test]
    fn each_missing_feature_names_its_key() {
        let bare = metadata(json!({}));
        let err = check(&cfg(ParMode::Required, false), &bare).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("oidc.pushed_authorization_requests: is required"),
            "{err}"
        );
        let with_jwt =
            metadata(json!({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}));
        assert!(check(&cfg(ParMode::Auto, false), &with_jwt).is_ok());
        let err = check(&cfg(ParMode::Auto, true), &with_jwt).unwrap_err();
        assert!(err.to_string().starts_with("oidc.dpop: is on"), "{err}");
        let err = check(&cfg(ParMode::Auto, false), &bare).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("oidc.token_endpoint_auth_method"),
            "{err}"
        );
        let requiring = metadata(json!({
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "pushed_authorization_request_endpoint": "https://op.test/par",
            "require_pushed_authorization_requests": true,
            "dpop_signing_alg_values_supported": ["ES256"],
        }));
        let err = check(&cfg(ParMode::Off, true), &requiring).unwrap_err();
        assert!(
            err.to_string()
                .contains("require_pushed_authorization_requests"),
            "{err}"
        );
        assert!(check(&cfg(ParMode::Required, true), &requiring).is_ok());
    }

    #[test]
    fn tls_client_auth_must_be_offered() {
        let mtls = OidcConfig {
            auth_method: TokenAuthMethod::TlsClientAuth,
            ..cfg(ParMode::Off, false)
        };
        let err = check(&mtls, &metadata(json!({}))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("oidc.token_endpoint_auth_method: is tls_client_auth"),
            "{err}"
        );
        let offered =
            metadata(json!({"token_endpoint_auth_methods_supported": ["tls_client_auth"]}));
        assert!(check(&mtls, &offered).is_ok());
    }
}
