//! Access tokens that machine clients (services, CLIs) present themselves on routes with
//! `routes[].machine_clients`: a JWT is verified against its issuer's key set (the OP's, or
//! one of the route's extra issuers', discovered when first needed); an opaque token is asked
//! about at the OP's introspection endpoint (RFC 7662). What a route then requires of the
//! claims (`aud`, its issuers, its claim rules) is `proxy::machine`'s, since it differs by
//! route while this verdict does not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::JsonWebKeySetUrl;
use serde_json::{Map, Value};
use url::Url;

use super::op_http::form_request;
use super::{error_chain, jose, Oidc, OidcError, JWKS_REFETCH_INTERVAL};
use crate::clock::unix_now;

/// A token whose signature (or the OP's word) and times were checked.
#[derive(Debug)]
pub struct VerifiedToken {
    pub claims: Map<String, Value>,
    /// When it expires; an introspection answer may leave it out (RFC 7662 §2.2).
    pub exp: Option<u64>,
    /// Vouched for by the introspection endpoint rather than by a signature.
    pub introspected: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessTokenError {
    /// The token is not acceptable: `0` is the stable reason (and metric outcome).
    #[error("access token rejected: {0}")]
    Rejected(&'static str),
    /// The token could not be judged now (the OP, or an extra issuer, did not answer).
    #[error(transparent)]
    Unavailable(#[from] OidcError),
}

fn rejected(reason: &'static str) -> AccessTokenError {
    AccessTokenError::Rejected(reason)
}

/// The key sets of extra issuers, by issuer, each behind its own lock so that one fetch
/// serves every request that waited for it.
#[derive(Default)]
pub struct ExtraIssuers(Mutex<HashMap<String, Arc<tokio::sync::Mutex<IssuerKeys>>>>);

#[derive(Default)]
struct IssuerKeys {
    jwks_uri: Option<Url>,
    keys: Option<Arc<CoreJsonWebKeySet>>,
    /// The last attempt to fetch, successful or not: fetches are rate-limited like the OP's.
    fetched: Option<Instant>,
}

impl ExtraIssuers {
    fn slot(&self, issuer: &str) -> Arc<tokio::sync::Mutex<IssuerKeys>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(issuer.to_string()).or_default().clone()
    }
}

/// RFC 9068 §2.1 names `at+jwt`; many issuers still write `JWT` or nothing. Any other type
/// (an ID token's or logout token's own, say) is a token meant for something else.
pub fn check_type(header: &jose::Header) -> Result<(), &'static str> {
    match header.get("typ") {
        None => Ok(()),
        Some(Value::String(t))
            if ["at+jwt", "application/at+jwt", "jwt"]
                .iter()
                .any(|ok| t.eq_ignore_ascii_case(ok)) =>
        {
            Ok(())
        }
        Some(_) => Err("bad_type"),
    }
}

/// `exp` in the future, `nbf` and `iat` not in it, each within `skew`; returns `exp`.
/// `exp` is required of a JWT, optional in an introspection answer.
fn check_times(
    claims: &Map<String, Value>,
    now: u64,
    skew: u64,
    exp_required: bool,
) -> Result<Option<u64>, &'static str> {
    let number = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or("malformed"),
    };
    let exp = number("exp")?;
    match exp {
        Some(exp) if exp.saturating_add(skew) <= now => return Err("expired"),
        None if exp_required => return Err("expired"),
        _ => {}
    }
    if number("nbf")?.is_some_and(|nbf| nbf > now + skew) {
        return Err("not_yet_valid");
    }
    if number("iat")?.is_some_and(|iat| iat > now + skew) {
        return Err("not_yet_valid");
    }
    Ok(exp)
}

/// A token bound to a key (`cnf`: DPoP, RFC 9449; mutual TLS, RFC 8705) is only good with the
/// proof of that key, which portcullis does not check: forwarded as a plain bearer token, a
/// stolen one would work without its proof.
fn refuse_bound(claims: &Map<String, Value>) -> Result<(), AccessTokenError> {
    match claims.contains_key("cnf") {
        true => Err(rejected("bound_token")),
        false => Ok(()),
    }
}

/// The claims of an introspection answer, if it says the token is active, and is a bearer
/// access token within its times. An answer without `iss` speaks for the OP that gave it.
fn introspected(
    mut claims: Map<String, Value>,
    issuer: &str,
    now: u64,
    skew: u64,
) -> Result<VerifiedToken, AccessTokenError> {
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err(rejected("inactive"));
    }
    let token_type = claims.get("token_type").and_then(Value::as_str);
    if token_type.is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(rejected("bad_type"));
    }
    refuse_bound(&claims)?;
    let exp = check_times(&claims, now, skew, false).map_err(rejected)?;
    claims
        .entry("iss")
        .or_insert_with(|| Value::String(issuer.to_string()));
    Ok(VerifiedToken {
        claims,
        exp,
        introspected: true,
    })
}

impl Oidc {
    /// Verifies a JWT access token: a header that names no key of its own and a known type,
    /// an issuer that is the OP or one of `extra_issuers`, a signature by that issuer's key
    /// (allowed algorithms only), and its times. Audience and claim rules are the route's.
    pub async fn verify_access_jwt(
        &self,
        jwt: &str,
        extra_issuers: &[String],
    ) -> Result<VerifiedToken, AccessTokenError> {
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
            return Err(rejected("malformed"));
        };
        let header = jose::decode_part(header_b64).ok_or(rejected("malformed"))?;
        jose::check(&header).map_err(|_| rejected("bad_header"))?;
        check_type(&header).map_err(rejected)?;
        // Read before the signature is checked only to choose whose keys check it.
        let claims = jose::decode_part(payload_b64).ok_or(rejected("malformed"))?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(rejected("bad_issuer"))?;
        let cfg = self.config();
        let kid = jose::kid(&header);
        let parts = [*header_b64, *payload_b64, *signature_b64];
        let signed = if issuer == cfg.issuer {
            let provider = self.provider_for_kid(kid).await?;
            jose::verify_signature(provider.jwks(), &header, parts)
        } else if extra_issuers.iter().any(|i| i == issuer) {
            let keys = self.extra_issuer_keys(issuer, kid).await?;
            jose::verify_signature(&keys, &header, parts)
        } else {
            return Err(rejected("bad_issuer"));
        };
        signed.map_err(|reason| match reason {
            "alg" => rejected("bad_algorithm"),
            _ => rejected("bad_signature"),
        })?;
        // An ID token (it carries a nonce) is proof of a login, not an access grant.
        if claims.contains_key("nonce") {
            return Err(rejected("bad_type"));
        }
        refuse_bound(&claims)?;
        let exp =
            check_times(&claims, unix_now(), cfg.clock_skew.as_secs(), true).map_err(rejected)?;
        Ok(VerifiedToken {
            claims,
            exp,
            introspected: false,
        })
    }

    /// Asks the OP's introspection endpoint about an opaque token, authenticated as
    /// portcullis's client the way the token endpoint is.
    pub async fn introspect(&self, token: &str) -> Result<VerifiedToken, AccessTokenError> {
        let provider = self.provider()?;
        let failed =
            |detail: String| AccessTokenError::Unavailable(OidcError::Introspection(detail));
        let endpoint = provider
            .extra
            .introspection_endpoint
            .clone()
            .ok_or_else(|| failed("the provider has no introspection_endpoint".into()))?;
        let current = self.current.load_full();
        let form = vec![
            ("token".to_string(), token.to_string()),
            ("token_type_hint".to_string(), "access_token".to_string()),
        ];
        let request =
            form_request(&endpoint, form, &current.cfg).map_err(|e| failed(e.to_string()))?;
        let call = self.op_call(&current, None);
        let response = self
            .timed("introspection", call.send(request))
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status().as_u16())));
        }
        let claims = match serde_json::from_slice(response.body()) {
            Ok(Value::Object(claims)) => claims,
            _ => return Err(failed("the answer is not a JSON object".into())),
        };
        let skew = current.cfg.clock_skew.as_secs();
        introspected(claims, &current.cfg.issuer, unix_now(), skew)
    }

    /// An extra issuer's key set with `kid` in it: discovered and fetched on first use, and
    /// fetched again for an unknown `kid` at most every `JWKS_REFETCH_INTERVAL` (a failed
    /// attempt waits as long, so a flood of tokens naming an unreachable issuer stays cheap).
    async fn extra_issuer_keys(
        &self,
        issuer: &str,
        kid: Option<&str>,
    ) -> Result<Arc<CoreJsonWebKeySet>, AccessTokenError> {
        let slot = self.extra_issuers.slot(issuer);
        let mut state = slot.lock().await;
        let recent = state
            .fetched
            .is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL);
        // Keys an issuer has withdrawn must stop verifying: the set (and the discovery that
        // names it) is renewed as often as the OP's own discovery.
        let stale = state
            .fetched
            .is_none_or(|t| t.elapsed() >= self.config().discovery_refresh);
        if let Some(keys) = &state.keys {
            let has_kid = kid.is_none_or(|kid| {
                keys.keys()
                    .iter()
                    .any(|k| openidconnect::JsonWebKey::key_id(k).is_some_and(|id| **id == kid))
            });
            if (has_kid && !stale) || recent {
                return Ok(keys.clone());
            }
        } else if recent {
            return Err(OidcError::Discovery(format!("{issuer}: not reachable")).into());
        }
        state.fetched = Some(Instant::now());
        let known_jwks_uri = state.jwks_uri.clone().filter(|_| !stale);
        match self.fetch_issuer_keys(issuer, known_jwks_uri).await {
            Ok((jwks_uri, keys)) => {
                tracing::info!(
                    issuer,
                    keys = keys.keys().len(),
                    "extra issuer's JWKS fetched"
                );
                let keys = Arc::new(keys);
                state.jwks_uri = Some(jwks_uri);
                state.keys = Some(keys.clone());
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(issuer, error = %e, "extra issuer's JWKS fetch failed");
                match &state.keys {
                    Some(keys) => Ok(keys.clone()),
                    None => Err(e.into()),
                }
            }
        }
    }

    async fn fetch_issuer_keys(
        &self,
        issuer: &str,
        known_jwks_uri: Option<Url>,
    ) -> Result<(Url, CoreJsonWebKeySet), OidcError> {
        let http = self.current.load().http.clone();
        let jwks_uri = match known_jwks_uri {
            Some(uri) => uri,
            None => {
                self.timed("discovery", discover_jwks_uri(&http, issuer))
                    .await?
            }
        };
        let url = JsonWebKeySetUrl::from_url(jwks_uri.clone());
        let keys = self
            .timed("jwks", CoreJsonWebKeySet::fetch_async(&url, &http))
            .await
            .map_err(|e| OidcError::Discovery(format!("{issuer}: {}", error_chain(&e))))?;
        Ok((jwks_uri, keys))
    }
}

/// The `jwks_uri` of an issuer's discovery document, which must name the issuer exactly
/// (Discovery §4.3), so that a document cannot speak for another issuer.
async fn discover_jwks_uri(
    http: &openidconnect::reqwest::Client,
    issuer: &str,
) -> Result<Url, OidcError> {
    let failed = |detail: String| OidcError::Discovery(format!("{issuer}: {detail}"));
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(failed(format!("status {}", response.status().as_u16())));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| failed(error_chain(&e)))?;
    let document: Value =
        serde_json::from_slice(&body).map_err(|_| failed("not a JSON document".into()))?;
    if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(failed("the document names another issuer".into()));
    }
    document
        .get("jwks_uri")
        .and_then(Value::as_str)
        .and_then(|u| Url::parse(u).ok())
        .ok_or_else(|| failed("no usable jwks_uri".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn times_are_checked_within_the_skew() {
        let now = 1_000_000;
        let check = |v: Value| check_times(&claims(v), now, 30, true);
        assert_eq!(check(json!({"exp": now + 60})), Ok(Some(now + 60)));
        assert_eq!(
            check(json!({"exp": now - 10})),
            Ok(Some(now - 10)),
            "within skew"
        );
        assert_eq!(check(json!({"exp": now - 30})), Err("expired"));
        assert_eq!(check(json!({})), Err("expired"), "a JWT must expire");
        assert_eq!(check(json!({"exp": "soon"})), Err("malformed"));
        assert_eq!(
            check(json!({"exp": now + 60, "nbf": now + 31})),
            Err("not_yet_valid")
        );
        assert_eq!(
            check(json!({"exp": now + 60, "iat": now + 31})),
            Err("not_yet_valid")
        );
        assert!(check(json!({"exp": now + 60, "nbf": now + 29, "iat": now})).is_ok());
        assert_eq!(check_times(&claims(json!({})), now, 30, false), Ok(None));
    }

    #[test]
    fn access_token_types_are_accepted_and_others_refused() {
        let header = |v: Value| claims(v);
        for ok in [
            json!({"alg": "RS256"}),
            json!({"typ": "at+jwt"}),
            json!({"typ": "application/at+JWT"}),
            json!({"typ": "JWT"}),
        ] {
            assert_eq!(check_type(&header(ok.clone())), Ok(()), "{ok}");
        }
        for bad in [json!({"typ": "logout+jwt"}), json!({"typ": 1})] {
            assert_eq!(check_type(&header(bad.clone())), Err("bad_type"), "{bad}");
        }
    }

    #[test]
    fn only_an_active_bearer_answer_admits() {
        let now = 1_000_000;
        let answer = |v: Value| introspected(claims(v), "https://op.test", now, 0);
        let ok = answer(json!({"active": true, "exp": now + 60, "aud": "api"})).unwrap();
        assert_eq!(ok.claims["iss"], "https://op.test");
        assert_eq!(ok.exp, Some(now + 60));
        assert!(ok.introspected);
        let reason = |r: Result<VerifiedToken, AccessTokenError>| match r {
            Err(AccessTokenError::Rejected(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(answer(json!({"active": false}))), "inactive");
        assert_eq!(reason(answer(json!({"active": "true"}))), "inactive");
        assert_eq!(
            reason(answer(
                json!({"active": true, "token_type": "refresh_token"})
            )),
            "bad_type"
        );
        assert_eq!(
            reason(answer(json!({"active": true, "exp": now - 1}))),
            "expired"
        );
        let bound = json!({"active": true, "token_type": "Bearer", "cnf": {"jkt": "abc"}});
        assert_eq!(reason(answer(bound)), "bound_token");
    }
}
