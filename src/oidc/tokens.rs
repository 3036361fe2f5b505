//! Token endpoint calls: the authorization-code exchange (with the ID-token checks of OIDC Core
//! §3.1.3.7) and the refresh grant (with the §12.2 checks on a refreshed ID token).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openidconnect::core::{
    CoreErrorResponseType, CoreIdToken, CoreJwsSigningAlgorithm, CoreTokenResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClaimsVerificationError, Nonce, OAuth2TokenResponse,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, SignatureVerificationError,
    TokenResponse,
};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use url::Url;

use super::dpop::DpopKey;
use super::op_http::OpCallError;
use super::{error_chain, jose, Oidc, OidcError, Provider};
use crate::clock::unix_now;
use crate::secret::Secret;

/// Lifetime assumed when a token response omits `expires_in` (RFC 6749 §5.1 makes it optional).
const DEFAULT_EXPIRES_IN_SECS: u64 = 300;
/// OIDC Core §2: `sub` is at most 255 ASCII characters.
const MAX_SUB_LEN: usize = 255;
/// Claims that describe the token rather than the user; `/bff/user` does not show them.
const TOKEN_ONLY_CLAIMS: [&str; 5] = ["nonce", "at_hash", "c_hash", "s_hash", "auth_time"];
/// The `iat` check's message, by which its failure is told from an expired `exp` (the library
/// reports both as `Expired`).
const IAT_FAILURE: &str = "iat is in the future";

/// A validated token response. `claims` are the ID token's claims (signature already verified).
pub struct Tokens {
    pub access_token: Secret<String>,
    pub expires_in: u64,
    pub refresh_token: Option<Secret<String>>,
    pub id_token: Option<Secret<String>>,
    pub claims: Map<String, Value>,
}

impl Tokens {
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
}

/// Asymmetric algorithms only: `none` and HMAC (keyed with the client secret) are refused.
pub(super) fn allowed_algs() -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm::*;
    vec![
        RsaSsaPkcs1V15Sha256,
        RsaSsaPkcs1V15Sha384,
        RsaSsaPkcs1V15Sha512,
        RsaSsaPssSha256,
        RsaSsaPssSha384,
        RsaSsaPssSha512,
        EcdsaP256Sha256,
        EcdsaP384Sha384,
        EcdsaP521Sha512,
        EdDsa,
    ]
}

type TokenError =
    RequestTokenError<OpCallError, openidconnect::StandardErrorResponse<CoreErrorResponseType>>;

fn token_endpoint_error(e: TokenError) -> OidcError {
    match e {
        RequestTokenError::ServerResponse(resp) => OidcError::Rejected {
            code: resp.error().as_ref().to_string(),
        },
        RequestTokenError::Parse(_, body) => unreadable_token_response(&body),
        RequestTokenError::Request(e) => credentials_error(e),
        other => OidcError::TokenEndpoint(error_chain(&other)),
    }
}

/// openidconnect cannot read a response whose ID token names an algorithm it does not know
/// (`"None"`, `"ES256K"`, …) and reports the whole response as unparsable; that case is the
/// algorithm check failing, and is named so. Anything else is a malformed response.
fn unreadable_token_response(body: &[u8]) -> OidcError {
    let id_token_alg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|response| jose::header(response.get("id_token")?.as_str()?))
        .and_then(|header| header.get("alg")?.as_str().map(str::to_string));
    match id_token_alg {
        Some(alg) if !is_allowed_alg(&alg) => {
            OidcError::id_token("id_token_alg", "an algorithm that is not accepted")
        }
        _ => OidcError::TokenResponse("not a token response with a readable ID token"),
    }
}

/// A failed attempt to reach the token endpoint, named by what failed.
fn credentials_error(e: OpCallError) -> OidcError {
    let reason = match &e {
        OpCallError::Http(message) => return OidcError::TokenEndpoint(message.clone()),
        OpCallError::ClientKey(_) => "client_key_unusable",
        OpCallError::Dpop(_) => "dpop_proof_failed",
        OpCallError::NonceLoop => "dpop_nonce_loop",
    };
    OidcError::Credentials {
        reason,
        detail: e.to_string(),
    }
}

fn is_allowed_alg(name: &str) -> bool {
    allowed_algs().iter().any(|alg| {
        serde_json::to_value(alg)
            .ok()
            .as_ref()
            .and_then(Value::as_str)
            == Some(name)
    })
}

/// The JWT payload as JSON. Called only after the signature has been verified.
fn payload_claims(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

impl Oidc {
    /// Exchanges the code (with the PKCE verifier), then validates the token response and the ID
    /// token: signature with an allowed algorithm, `iss`, `aud`/`azp`, `exp`, `iat` within the
    /// clock skew, `nonce`, `at_hash` when present, and `sub` shape.
    pub async fn exchange_code(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &str,
        nonce: &str,
        redirect_uri: Option<&Url>,
        dpop: Option<DpopKey>,
    ) -> Result<Tokens, OidcError> {
        let mut request = provider
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::TokenEndpoint(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()));
        if let Some(uri) = redirect_uri {
            request = request.set_redirect_uri(Cow::Owned(RedirectUrl::from_url(uri.clone())));
        }
        let bound = dpop.is_some();
        let call = self.op_call(&self.current.load(), dpop);
        let response = self
            .timed("token", request.request_async(&call))
            .await
            .map_err(token_endpoint_error)?;
        check_token_response(&response, bound)?;
        let id_token = response
            .id_token()
            .ok_or(OidcError::TokenResponse("no id_token in the response"))?;
        let provider = self.provider_for_id_token(id_token).await?;
        let claims = self.verify_id_token(&provider, id_token, &response, Some(nonce))?;
        Ok(tokens_from(&response, Some(id_token), claims))
    }

    /// The refresh-token grant. A refreshed ID token must name the same `iss`, `sub` and `aud`
    /// as the session's (OIDC Core §12.2); without one, the previous claims stay.
    pub async fn refresh(
        &self,
        provider: &Provider,
        refresh_token: &str,
        previous: &Map<String, Value>,
        dpop: Option<DpopKey>,
    ) -> Result<Tokens, OidcError> {
        let rt = RefreshToken::new(refresh_token.to_string());
        let request = provider
            .client
            .exchange_refresh_token(&rt)
            .map_err(|e| OidcError::TokenEndpoint(e.to_string()))?;
        let bound = dpop.is_some();
        let call = self.op_call(&self.current.load(), dpop);
        let response = self
            .timed("refresh", request.request_async(&call))
            .await
            .map_err(token_endpoint_error)?;
        check_token_response(&response, bound)?;
        let Some(id_token) = response.id_token() else {
            return Ok(tokens_from(&response, None, previous.clone()));
        };
        let provider = self.provider_for_id_token(id_token).await?;
        let claims = self.verify_id_token(&provider, id_token, &response, None)?;
        for name in ["iss", "sub", "aud"] {
            if claims.get(name) != previous.get(name) {
                return Err(OidcError::id_token(
                    "id_token_changed",
                    format!("refreshed ID token changed {name}"),
                ));
            }
        }
        Ok(tokens_from(&response, Some(id_token), claims))
    }

    /// Refuses a header that names its own key, and finds the provider whose key set has the
    /// token's key (fetching the JWKS again after a key rotation).
    async fn provider_for_id_token(
        &self,
        id_token: &CoreIdToken,
    ) -> Result<Arc<Provider>, OidcError> {
        let header = jose::header(&id_token.to_string()).ok_or(OidcError::id_token(
            "id_token_malformed",
            "unreadable header",
        ))?;
        jose::check(&header).map_err(|reason| OidcError::id_token(reason, "header"))?;
        self.provider_for_kid(jose::kid(&header)).await
    }

    fn verify_id_token(
        &self,
        provider: &Provider,
        id_token: &CoreIdToken,
        response: &CoreTokenResponse,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, OidcError> {
        let skew = chrono_skew(self.config().clock_skew);
        let verifier = provider
            .client
            .id_token_verifier()
            .set_allowed_algs(allowed_algs())
            .set_issue_time_verifier_fn(move |iat| {
                let now = chrono::Utc::now();
                if iat > now + skew {
                    Err(IAT_FAILURE.to_string())
                } else {
                    Ok(())
                }
            });
        let checked = match nonce {
            Some(n) => id_token.claims(&verifier, &Nonce::new(n.to_string())),
            // Core §12.2: a refreshed ID token need not carry a nonce.
            None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
        }
        .map_err(claims_error)?;
        if let Some(expected) = checked.access_token_hash() {
            let at_hash_error =
                |e: &dyn std::fmt::Display| OidcError::id_token("id_token_at_hash", e);
            let alg = id_token.signing_alg().map_err(|e| at_hash_error(&e))?;
            let key = id_token
                .signing_key(&verifier)
                .map_err(|e| at_hash_error(&e))?;
            let actual = AccessTokenHash::from_token(response.access_token(), alg, key)
                .map_err(|e| at_hash_error(&e))?;
            if actual != *expected {
                return Err(at_hash_error(&"at_hash does not match the access token"));
            }
        }
        let sub = checked.subject().as_str();
        if sub.is_empty() || sub.len() > MAX_SUB_LEN || !sub.is_ascii() {
            return Err(OidcError::id_token(
                "id_token_sub",
                "sub is empty, too long or not ASCII",
            ));
        }
        let mut claims = payload_claims(&id_token.to_string()).ok_or(OidcError::id_token(
            "id_token_malformed",
            "payload is not a JSON object",
        ))?;
        for c in TOKEN_ONLY_CLAIMS {
            claims.remove(c);
        }
        Ok(claims)
    }
}

/// Names the rule an ID token broke, for the log line and the audit event.
fn claims_error(e: ClaimsVerificationError) -> OidcError {
    use ClaimsVerificationError as C;
    use SignatureVerificationError as S;
    let reason = match &e {
        C::Expired(m) if m == IAT_FAILURE => "id_token_iat",
        C::Expired(_) => "id_token_exp",
        C::InvalidAudience(_) => "id_token_aud",
        C::InvalidIssuer(_) => "id_token_iss",
        C::InvalidNonce(_) => "id_token_nonce",
        C::InvalidSubject(_) => "id_token_sub",
        C::InvalidAuthTime(_) | C::InvalidAuthContext(_) => "id_token_auth_time",
        C::SignatureVerification(S::DisallowedAlg(_) | S::UnsupportedAlg(_) | S::NoSignature) => {
            "id_token_alg"
        }
        C::SignatureVerification(S::NoMatchingKey | S::AmbiguousKeyId(_)) => "id_token_kid",
        C::SignatureVerification(_) => "id_token_signature",
        _ => "id_token_claims",
    };
    OidcError::id_token(reason, error_chain(&e))
}

fn chrono_skew(skew: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(skew).unwrap_or(chrono::Duration::seconds(60))
}

/// With a DPoP proof sent, the token must come back bound to it (`token_type` DPoP, RFC 9449
/// §5): a Bearer answer means the OP ignored the proof, and the binding asked for is absent.
fn check_token_response(response: &CoreTokenResponse, dpop: bool) -> Result<(), OidcError> {
    let token_type = response.token_type();
    if dpop {
        let bound =
            matches!(token_type, CoreTokenType::Extension(t) if t.eq_ignore_ascii_case("dpop"));
        if !bound {
            return Err(OidcError::TokenResponse("token_type is not DPoP"));
        }
    } else if *token_type != CoreTokenType::Bearer {
        return Err(OidcError::TokenResponse("token_type is not Bearer"));
    }
    if response.access_token().secret().is_empty() {
        return Err(OidcError::TokenResponse("access_token is empty"));
    }
    Ok(())
}

fn tokens_from(
    response: &CoreTokenResponse,
    id_token: Option<&CoreIdToken>,
    claims: Map<String, Value>,
) -> Tokens {
    let expires_in = response
        .expires_in()
        .map(|d| d.as_secs())
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_EXPIRES_IN_SECS);
    Tokens {
        access_token: Secret::new(response.access_token().secret().clone()),
        expires_in,
        refresh_token: response
            .refresh_token()
            .map(|t| Secret::new(t.secret().clone())),
        id_token: id_token.map(|t| Secret::new(t.to_string())),
        claims,
    }
}

/// Seconds since the epoch at which a token issued now with `expires_in` expires.
pub fn expiry_from_now(expires_in: u64) -> u64 {
    unix_now().saturating_add(expires_in)
}
