//! The identity assertion: a short-lived JWT, signed with portcullis's own key, that tells an
//! upstream who the user is in a form it can verify (against the JWKS on the admin port) rather
//! than trust, as it must trust plain identity headers. Its `iss` is `public_url`'s origin and
//! its `aud` the host the browser addressed, so an assertion one app received is refused by
//! another that checks its own name.

use std::sync::Mutex;

use http::header::{HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use crate::clock::unix_now;
use crate::config::{IdentityAssertionConfig, SigningAlg};
use crate::oidc::ClientKey;

/// Assertions one session keeps signed: one per host it is used on, and a shared cookie could
/// reach many hosts.
const MEMO_ENTRIES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("{file}: {reason}")]
    Key { file: String, reason: String },
    #[error("signing the identity assertion failed")]
    Sign,
}

pub struct IdentityAssertions {
    key: ClientKey,
    alg: SigningAlg,
    kid: String,
    issuer: String,
    header: HeaderName,
    lifetime: u64,
    claims: Vec<String>,
    jwks: Vec<u8>,
}

impl IdentityAssertions {
    /// Reads the key named by `identity_assertion.key_file` (validated already; read again here
    /// because the validated configuration holds paths, not keys).
    pub fn load(
        cfg: &IdentityAssertionConfig,
        issuer: &str,
    ) -> Result<IdentityAssertions, AssertionError> {
        let key_error = |reason: String| AssertionError::Key {
            file: cfg.key_file.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&cfg.key_file).map_err(|e| key_error(e.to_string()))?;
        let key = ClientKey::parse(&text).map_err(|e| key_error(e.to_string()))?;
        key.check_alg(cfg.alg)
            .map_err(|e| key_error(e.to_string()))?;
        let kid = key.thumbprint();
        let jwks = json!({ "keys": [key.public_jwk(cfg.alg, &kid)] })
            .to_string()
            .into_bytes();
        Ok(IdentityAssertions {
            key,
            alg: cfg.alg,
            kid,
            issuer: issuer.to_string(),
            header: cfg.header.clone(),
            lifetime: cfg.lifetime.as_secs(),
            claims: cfg.claims.clone(),
            jwks,
        })
    }

    /// The JWKS document (`/.well-known/jwks.json` on the admin port).
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// The header the assertion travels in; a client's copy is always removed.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The assertion for a session on `audience`: the one signed earlier while it has more than
    /// half its lifetime left, else a new one. Signing costs tens of microseconds; the memo
    /// makes it once per session, host and half-lifetime, not once per request.
    pub fn for_session(
        &self,
        claims: &Map<String, Value>,
        audience: &str,
        memo: &AssertionMemo,
    ) -> Result<HeaderValue, AssertionError> {
        let now = unix_now();
        if let Some(value) = memo.fresh(audience, now) {
            return Ok(value);
        }
        let jwt = self.sign(claims, audience, now)?;
        let mut value = HeaderValue::from_str(&jwt).map_err(|_| AssertionError::Sign)?;
        value.set_sensitive(true);
        memo.keep(audience, value.clone(), now + self.lifetime / 2);
        Ok(value)
    }

    fn sign(
        &self,
        session_claims: &Map<String, Value>,
        audience: &str,
        now: u64,
    ) -> Result<String, AssertionError> {
        let mut claims = Map::new();
        for name in &self.claims {
            if let Some(value) = session_claims.get(name) {
                claims.insert(name.clone(), value.clone());
            }
        }
        // The registered claims are portcullis's own, whatever the ID token said.
        claims.insert("iss".into(), Value::from(self.issuer.as_str()));
        claims.insert("aud".into(), Value::from(audience));
        claims.insert(
            "sub".into(),
            session_claims.get("sub").cloned().unwrap_or(Value::Null),
        );
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.lifetime));
        self.key
            .sign_jwt(self.alg, Some(&self.kid), &Value::Object(claims))
            .map_err(|_| AssertionError::Sign)
    }
}

/// The assertions signed for one session. It lives beside the session in the session cache, so
/// a refresh (which may change the claims) starts with an empty one.
#[derive(Default)]
pub struct AssertionMemo(Mutex<Vec<Minted>>);

struct Minted {
    audience: String,
    value: HeaderValue,
    renew_at: u64,
}

impl AssertionMemo {
    fn fresh(&self, audience: &str, now: u64) -> Option<HeaderValue> {
        let minted = self.0.lock().unwrap_or_else(|p| p.into_inner());
        minted
            .iter()
            .find(|m| m.audience == audience && now < m.renew_at)
            .map(|m| m.value.clone())
    }

    fn keep(&self, audience: &str, value: HeaderValue, renew_at: u64) {
        let mut minted = self.0.lock().unwrap_or_else(|p| p.into_inner());
        minted.retain(|m| m.audience != audience);
        if minted.len() >= MEMO_ENTRIES {
            minted.remove(0);
        }
        minted.push(Minted {
            audience: audience.to_string(),
            value,
            renew_at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair};
    use std::time::Duration;

    fn assertions() -> IdentityAssertions {
        let der = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        std::fs::write(&path, pem).unwrap();
        let cfg = IdentityAssertionConfig {
            key_file: path,
            alg: SigningAlg::Es256,
            header: HeaderName::from_static("x-portcullis-assertion"),
            lifetime: Duration::from_secs(60),
            claims: vec!["email".into(), "groups".into()],
        };
        IdentityAssertions::load(&cfg, "https://app.example.com").unwrap()
    }

    fn payload(jwt: &str) -> Value {
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn verify(a: &IdentityAssertions, jwt: &str) {
        let jwks: Value = serde_json::from_slice(a.jwks()).unwrap();
        let key = &jwks["keys"][0];
        let coordinate = |c: &str| URL_SAFE_NO_PAD.decode(key[c].as_str().unwrap()).unwrap();
        let point = [vec![4u8], coordinate("x"), coordinate("y")].concat();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("verifies with the published key");
    }

    #[test]
    fn carries_the_chosen_claims_and_verifies_against_the_jwks() {
        let a = assertions();
        let session = json!({"sub": "u1", "email": "u1@example.test", "groups": ["g"], "secret_claim": "x", "iss": "https://op"});
        let memo = AssertionMemo::default();
        let value = a
            .for_session(session.as_object().unwrap(), "app.example.com", &memo)
            .unwrap();
        let jwt = value.to_str().unwrap();
        verify(&a, jwt);
        let claims = payload(jwt);
        assert_eq!(claims["iss"], "https://app.example.com");
        assert_eq!(claims["aud"], "app.example.com");
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["groups"], json!(["g"]));
        assert!(claims.get("secret_claim").is_none());
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        let jwks: Value = serde_json::from_slice(a.jwks()).unwrap();
        assert!(jwks["keys"][0].get("d").is_none(), "never the private key");
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], jwks["keys"][0]["kid"]);
    }

    #[test]
    fn one_signature_per_session_and_host_until_half_its_life() {
        let a = assertions();
        let session = json!({"sub": "u1"});
        let claims = session.as_object().unwrap();
        let memo = AssertionMemo::default();
        let first = a.for_session(claims, "a.example.com", &memo).unwrap();
        let again = a.for_session(claims, "a.example.com", &memo).unwrap();
        assert_eq!(first, again);
        let other = a.for_session(claims, "b.example.com", &memo).unwrap();
        assert_ne!(first, other);
        assert_eq!(payload(other.to_str().unwrap())["aud"], "b.example.com");
        assert!(memo.fresh("a.example.com", unix_now() + 31).is_none());
        for i in 0..20 {
            a.for_session(claims, &format!("h{i}.example.com"), &memo)
                .unwrap();
        }
        assert_eq!(memo.0.lock().unwrap().len(), MEMO_ENTRIES);
    }
}
