//! DPoP (RFC 9449): the per-session P-256 key that sender-constrains a session's tokens, and
//! the proofs signed with it — on the token and refresh requests to the OP, and on upstream
//! requests of routes that opt in. The key never leaves portcullis: it is stored sealed with
//! the session, like the tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::sync::OnceLock;

use http::HeaderValue;
use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use crate::clock::unix_now;
use crate::random::random_token;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    #[error("the session's DPoP key cannot be read")]
    BadKey,
    #[error("a DPoP proof could not be signed")]
    Sign,
}

/// A session's DPoP key pair and what every proof repeats: the JOSE header with the public JWK.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    pkcs8: Secret<String>,
    /// base64url of `{"typ":"dpop+jwt","alg":"ES256","jwk":{…}}`, made once per key.
    header_b64: String,
    thumbprint: String,
}

impl DpopKey {
    pub fn generate() -> Result<DpopKey, DpopError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| DpopError::BadKey)?;
        DpopKey::from_pkcs8(pkcs8.as_ref())
    }

    /// The key as `stored()` wrote it into a session or login transaction.
    pub fn from_stored(stored: &Secret<String>) -> Result<DpopKey, DpopError> {
        let der = URL_SAFE_NO_PAD
            .decode(stored.expose())
            .map_err(|_| DpopError::BadKey)?;
        DpopKey::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Result<DpopKey, DpopError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|_| DpopError::BadKey)?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()));
        let header = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{canonical}}}"#);
        Ok(DpopKey {
            pair,
            pkcs8: Secret::new(URL_SAFE_NO_PAD.encode(der)),
            header_b64: URL_SAFE_NO_PAD.encode(header),
            thumbprint,
        })
    }

    /// The private key in the form sessions store it (sealed with the rest of the session).
    pub fn stored(&self) -> Secret<String> {
        self.pkcs8.clone()
    }

    /// The JWK SHA-256 thumbprint: `dpop_jkt` in the authorization request, `cnf.jkt` in
    /// the tokens bound to this key.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for one request (RFC 9449 §4.2): `htu` without query or fragment, `ath` when
    /// the request carries an access token, `nonce` when the server asked for one.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        ath: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, DpopError> {
        let mut claims = serde_json::json!({
            "jti": random_token::<16>(),
            "htm": htm,
            "htu": htu,
            "iat": unix_now(),
        });
        if let Some(ath) = ath {
            claims["ath"] = ath.into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let input = format!(
            "{}.{}",
            self.header_b64,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| DpopError::Sign)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// `ath`: base64url of the SHA-256 of the access token (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()))
}

/// What an upstream request of a DPoP route needs from its session: the key, `DPoP <token>`,
/// and the token's `ath`. Made on the first DPoP request of a token and kept with the cached
/// session, so requests of that session on other routes (or with the cache off) never pay
/// for reading the key. No `Debug`: it holds a token.
pub struct UpstreamDpop {
    stored_key: Secret<String>,
    token: Secret<String>,
    ready: OnceLock<Option<Ready>>,
}

struct Ready {
    key: DpopKey,
    authorization: HeaderValue,
    ath: String,
}

impl UpstreamDpop {
    pub fn new(stored_key: &Secret<String>, token: &str) -> UpstreamDpop {
        UpstreamDpop {
            stored_key: stored_key.clone(),
            token: Secret::new(token.to_string()),
            ready: OnceLock::new(),
        }
    }

    /// `None` when the stored key is unreadable or the token cannot be a header value.
    fn ready(&self) -> Option<&Ready> {
        self.ready
            .get_or_init(|| {
                let key = DpopKey::from_stored(&self.stored_key).ok()?;
                let token = self.token.expose();
                let mut authorization = HeaderValue::from_str(&format!("DPoP {token}")).ok()?;
                authorization.set_sensitive(true);
                Some(Ready {
                    key,
                    authorization,
                    ath: access_token_hash(token),
                })
            })
            .as_ref()
    }

    /// The `Authorization` and `DPoP` values for one upstream request.
    pub fn headers(
        &self,
        method: &str,
        htu: &str,
    ) -> Result<(HeaderValue, HeaderValue), DpopError> {
        let ready = self.ready().ok_or(DpopError::BadKey)?;
        let proof = ready.key.proof(method, htu, Some(&ready.ath), None)?;
        // base64url parts and dots only: always a valid header value.
        let proof = HeaderValue::from_str(&proof).map_err(|_| DpopError::Sign)?;
        Ok((ready.authorization.clone(), proof))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    use serde_json::Value;

    fn part(jwt: &str, i: usize) -> Value {
        let text = jwt.split('.').nth(i).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
    }

    #[test]
    fn a_proof_names_its_key_request_and_token_and_verifies() {
        let key = DpopKey::generate().unwrap();
        let again = DpopKey::from_stored(&key.stored()).unwrap();
        assert_eq!(key.thumbprint(), again.thumbprint());
        let proof = again
            .proof("GET", "https://api.test/x", Some("ath1"), Some("n1"))
            .unwrap();
        let header = part(&proof, 0);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(
            header["jwk"].get("d").is_none(),
            "the private key stays home"
        );
        let claims = part(&proof, 1);
        assert_eq!(claims["htm"], "GET");
        assert_eq!(claims["htu"], "https://api.test/x");
        assert_eq!(claims["ath"], "ath1");
        assert_eq!(claims["nonce"], "n1");
        assert!(claims["iat"].as_u64().unwrap() > 0);
        let second = again
            .proof("GET", "https://api.test/x", None, None)
            .unwrap();
        assert_ne!(
            part(&second, 1)["jti"],
            claims["jti"],
            "every proof has a fresh jti"
        );
        assert!(part(&second, 1).get("ath").is_none());

        let (x, y) = (
            URL_SAFE_NO_PAD
                .decode(header["jwk"]["x"].as_str().unwrap())
                .unwrap(),
            URL_SAFE_NO_PAD
                .decode(header["jwk"]["y"].as_str().unwrap())
                .unwrap(),
        );
        let public = [vec![4u8], x, y].concat();
        let (input, signature) = proof.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(
                input.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .expect("the proof verifies with the key in its header");
    }

    #[test]
    fn ath_is_the_rfc_9449_example() {
        // RFC 9449 §7.1's example token and its `ath`.
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn a_damaged_stored_key_is_refused() {
        assert!(DpopKey::from_stored(&Secret::new("not-a-key".into())).is_err());
        let upstream = UpstreamDpop::new(&Secret::new("AAAA".into()), "t");
        assert!(upstream.headers("GET", "https://api.test/").is_err());
    }
}
