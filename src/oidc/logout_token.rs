//! Back-Channel Logout 1.0 §2.6: validating a `logout_token`. openidconnect has no type for
//! it, so the JWS is checked here against the issuer's JWKS, with the same algorithm
//! allow-list as ID tokens.

use serde_json::{Map, Value};

use super::{jose, Oidc};
use crate::clock::unix_now;

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token older than this is refused even if its `exp` is far off: they are meant to
/// be delivered at once (BCL §4 recommends short lifetimes against replay).
const MAX_AGE_SECS: u64 = 300;

/// A validated logout token: who to log out, and the replay-cache material.
#[derive(Debug)]
pub struct LogoutToken {
    pub iss: String,
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// When the OP issued the token, i.e. when the logout happened there.
    pub iat: u64,
    pub exp: u64,
}

/// Why a logout token was refused: a stable reason code for logs and metrics.
#[derive(Debug, thiserror::Error)]
#[error("logout token rejected: {0}")]
pub struct LogoutTokenRejected(pub &'static str);

fn reject(reason: &'static str) -> LogoutTokenRejected {
    LogoutTokenRejected(reason)
}

fn decode_json(part: &str) -> Result<Map<String, Value>, LogoutTokenRejected> {
    jose::decode_part(part).ok_or(reject("malformed"))
}

impl Oidc {
    /// Checks the header, then the signature with a key set that has the token's key (fetched
    /// again after a key rotation, rate-limited), then the claims.
    pub async fn verify_logout_token(&self, jwt: &str) -> Result<LogoutToken, LogoutTokenRejected> {
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
            return Err(reject("malformed"));
        };
        let header = decode_json(header_b64)?;
        jose::check(&header).map_err(reject)?;
        let provider = self
            .provider_for_kid(jose::kid(&header))
            .await
            .map_err(|e| reject(e.reason()))?;
        jose::verify_signature(
            provider.jwks(),
            &header,
            [header_b64, payload_b64, signature_b64],
        )
        .map_err(reject)?;
        let claims = decode_json(payload_b64)?;
        self.check_claims(&claims)
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<LogoutToken, LogoutTokenRejected> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        let number = |name: &str| claims.get(name).and_then(Value::as_u64);
        let now = unix_now();
        let cfg = self.config();
        let skew = cfg.clock_skew.as_secs();

        if text("iss").as_deref() != Some(cfg.issuer.as_str()) {
            return Err(reject("iss"));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == cfg.client_id,
            Some(Value::Array(list)) => list
                .iter()
                .any(|a| a.as_str() == Some(cfg.client_id.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(reject("aud"));
        }
        let iat = number("iat").ok_or(reject("iat"))?;
        if iat > now + skew || iat + MAX_AGE_SECS + skew < now {
            return Err(reject("iat"));
        }
        let exp = number("exp").ok_or(reject("exp"))?;
        if exp + skew < now {
            return Err(reject("exp"));
        }
        let jti = text("jti").filter(|j| !j.is_empty()).ok_or(reject("jti"))?;
        // BCL §2.4: a nonce is forbidden, which is what tells a logout token from an ID token.
        if claims.contains_key("nonce") {
            return Err(reject("nonce"));
        }
        let event_ok = claims
            .get("events")
            .and_then(Value::as_object)
            .and_then(|events| events.get(BACKCHANNEL_EVENT))
            .is_some_and(Value::is_object);
        if !event_ok {
            return Err(reject("events"));
        }
        let sub = text("sub").filter(|s| !s.is_empty());
        let sid = text("sid").filter(|s| !s.is_empty());
        if sub.is_none() && sid.is_none() {
            return Err(reject("sub_and_sid_missing"));
        }
        Ok(LogoutToken {
            iss: cfg.issuer.clone(),
            sub,
            sid,
            jti,
            iat,
            exp,
        })
    }
}
