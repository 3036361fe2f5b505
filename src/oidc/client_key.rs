//! The client's own private key for `private_key_jwt` (RFC 7523 §2.2): read from a PEM or a
//! JWK file, and the client assertions signed with it. The key is read again whenever its
//! file changes, so it can rotate without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::rsa::{KeyPairComponents, PublicKeyComponents};
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::{json, Value};

use crate::clock::unix_now;
use crate::config::{ClientKeyConfig, SigningAlg};
use crate::random::random_token;

/// RFC 7523 §3 asks for a short `exp`; a minute covers any clock skew the OP tolerates.
const ASSERTION_LIFETIME_SECS: u64 = 60;
/// RSA keys shorter than this are refused (FAPI 2.0 §5.4.1: at least 2048 bits).
const MIN_RSA_BYTES: usize = 256;

/// Why a key file cannot sign client assertions. Each message ends with its fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("holds a certificate, not a private key (point the key at the private key file)")]
    Certificate,
    #[error("holds a public key only (a private key is needed to sign; register its public half at the provider)")]
    PublicOnly,
    #[error("holds an EC key in SEC1 form (\"BEGIN EC PRIVATE KEY\"), which is not read (convert it: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8)")]
    Sec1,
    #[error("is neither a PEM private key nor a private JWK (write a PKCS#8 PEM key, or a JWK with \"d\")")]
    Unrecognised,
    #[error("holds a key that cannot be used ({0}) (use an EC P-256 key, or an RSA key of 2048 bits or more)")]
    Unsupported(String),
    #[error("{alg} needs {needs} key, but the file holds {has} key (set oidc.client_key_alg to match the key, or replace the key)")]
    AlgMismatch {
        alg: &'static str,
        needs: &'static str,
        has: &'static str,
    },
    #[error("cannot read the key file: {0}")]
    Read(String),
    #[error("signing failed")]
    Sign,
}

enum KeyPair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key ready to sign, with the `kid` and `alg` a JWK file may name.
pub struct ClientKey {
    pair: KeyPair,
    kid: Option<String>,
    alg: Option<SigningAlg>,
}

impl ClientKey {
    /// Reads a PEM (PKCS#8, or PKCS#1 for RSA) or a JWK document.
    pub fn parse(text: &str) -> Result<ClientKey, KeyError> {
        if text.trim_start().starts_with('{') {
            from_jwk(text)
        } else {
            from_pem(text)
        }
    }

    /// The algorithm a key names (JWK `alg`), else ES256 for EC and PS256 for RSA keys:
    /// the two FAPI 2.0 allows.
    pub fn default_alg(&self) -> SigningAlg {
        self.alg.unwrap_or(match self.pair {
            KeyPair::Ec(_) => SigningAlg::Es256,
            KeyPair::Rsa(_) => SigningAlg::Ps256,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn check_alg(&self, alg: SigningAlg) -> Result<(), KeyError> {
        let (needs, has) = match (&self.pair, alg) {
            (KeyPair::Ec(_), SigningAlg::Es256) => return Ok(()),
            (KeyPair::Rsa(_), SigningAlg::Ps256 | SigningAlg::Rs256) => return Ok(()),
            (KeyPair::Ec(_), _) => ("an RSA", "an EC"),
            (KeyPair::Rsa(_), _) => ("an EC P-256", "an RSA"),
        };
        Err(KeyError::AlgMismatch {
            alg: alg.name(),
            needs,
            has,
        })
    }

    fn sign(&self, alg: SigningAlg, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match (&self.pair, alg) {
            (KeyPair::Ec(pair), _) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            (KeyPair::Rsa(pair), alg) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    SigningAlg::Rs256 => &signature::RSA_PKCS1_SHA256,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(padding, &rng, message, &mut out)
                    .map_err(|_| KeyError::Sign)?;
                Ok(out)
            }
        }
    }

    /// A compact JWS over `claims` with this key.
    pub fn sign_jwt(
        &self,
        alg: SigningAlg,
        kid: Option<&str>,
        claims: &Value,
    ) -> Result<String, KeyError> {
        let mut header = json!({ "alg": alg.name(), "typ": "JWT" });
        if let Some(kid) = kid {
            header["kid"] = Value::from(kid);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.sign(alg, input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl ClientKey {
    /// The public half as a JWK (RFC 7517) for a JWKS that verifiers fetch, with `kid`, `alg`
    /// and `use: sig`.
    pub fn public_jwk(&self, alg: SigningAlg, kid: &str) -> Value {
        let mut jwk = self.public_members();
        jwk["kid"] = Value::from(kid);
        jwk["alg"] = Value::from(alg.name());
        jwk["use"] = Value::from("sig");
        jwk
    }

    /// The RFC 7638 thumbprint of the public key: a `kid` that changes exactly when the key does.
    pub fn thumbprint(&self) -> String {
        // `public_members` writes only the required members, in lexicographic order: the
        // canonical form the RFC hashes.
        let canonical = self.public_members().to_string();
        URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    fn public_members(&self) -> Value {
        use ring::signature::KeyPair as _;
        match &self.pair {
            KeyPair::Ec(pair) => {
                // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
                let point = pair.public_key().as_ref();
                let coordinate =
                    |range| URL_SAFE_NO_PAD.encode(point.get(range).unwrap_or_default());
                json!({ "crv": "P-256", "kty": "EC", "x": coordinate(1..33), "y": coordinate(33..65) })
            }
            KeyPair::Rsa(pair) => {
                let public = PublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({
                    "e": URL_SAFE_NO_PAD.encode(public.e),
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(public.n),
                })
            }
        }
    }
}

fn from_pem(text: &str) -> Result<ClientKey, KeyError> {
    use rustls_pemfile::Item;
    let mut seen_certificate = false;
    let mut seen_public = false;
    for item in rustls_pemfile::read_all(&mut text.as_bytes()) {
        let pair = match item.map_err(|_| KeyError::Unrecognised)? {
            Item::Pkcs8Key(der) => pkcs8_pair(der.secret_pkcs8_der())?,
            Item::Pkcs1Key(der) => {
                KeyPair::Rsa(rsa_pair(RsaKeyPair::from_der(der.secret_pkcs1_der()))?)
            }
            Item::Sec1Key(_) => return Err(KeyError::Sec1),
            Item::X509Certificate(_) => {
                seen_certificate = true;
                continue;
            }
            Item::SubjectPublicKeyInfo(_) => {
                seen_public = true;
                continue;
            }
            _ => continue,
        };
        return Ok(ClientKey {
            pair,
            kid: None,
            alg: None,
        });
    }
    Err(if seen_certificate {
        KeyError::Certificate
    } else if seen_public {
        KeyError::PublicOnly
    } else {
        KeyError::Unrecognised
    })
}

/// PKCS#8 says which kind of key it holds; try P-256 first, then RSA.
fn pkcs8_pair(der: &[u8]) -> Result<KeyPair, KeyError> {
    let rng = SystemRandom::new();
    if let Ok(pair) =
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
    {
        return Ok(KeyPair::Ec(pair));
    }
    RsaKeyPair::from_pkcs8(der)
        .map_err(|e| KeyError::Unsupported(format!("not a P-256 or RSA key: {e}")))
        .and_then(|pair| rsa_pair(Ok(pair)))
        .map(KeyPair::Rsa)
}

fn rsa_pair(pair: Result<RsaKeyPair, ring::error::KeyRejected>) -> Result<RsaKeyPair, KeyError> {
    let pair = pair.map_err(|e| KeyError::Unsupported(format!("RSA key rejected: {e}")))?;
    if pair.public().modulus_len() < MIN_RSA_BYTES {
        return Err(KeyError::Unsupported(
            "RSA key shorter than 2048 bits".into(),
        ));
    }
    Ok(pair)
}

fn from_jwk(text: &str) -> Result<ClientKey, KeyError> {
    let jwk: Value = serde_json::from_str(text).map_err(|_| KeyError::Unrecognised)?;
    let member = |name: &str| -> Result<Vec<u8>, KeyError> {
        let value = jwk.get(name).and_then(Value::as_str);
        let value = value.ok_or_else(|| match name {
            "d" => KeyError::PublicOnly,
            _ => KeyError::Unsupported(format!("the JWK lacks \"{name}\"")),
        })?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| KeyError::Unsupported(format!("the JWK's \"{name}\" is not base64url")))
    };
    let pair = match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("EC"), Some("P-256")) => {
            let d = member("d")?;
            let public = [vec![4u8], member("x")?, member("y")?].concat();
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &d,
                &public,
                &SystemRandom::new(),
            )
            .map_err(|e| KeyError::Unsupported(format!("EC key rejected: {e}")))?;
            KeyPair::Ec(pair)
        }
        (Some("RSA"), _) => {
            let d = member("d")?;
            let components = KeyPairComponents {
                public_key: PublicKeyComponents {
                    n: member("n")?,
                    e: member("e")?,
                },
                d,
                p: member("p")?,
                q: member("q")?,
                dP: member("dp")?,
                dQ: member("dq")?,
                qInv: member("qi")?,
            };
            KeyPair::Rsa(rsa_pair(RsaKeyPair::from_components(&components))?)
        }
        (kty, crv) => {
            return Err(KeyError::Unsupported(format!(
                "kty {:?}, crv {:?}",
                kty.unwrap_or("none"),
                crv.unwrap_or("none")
            )))
        }
    };
    let alg = jwk.get("alg").and_then(Value::as_str);
    Ok(ClientKey {
        pair,
        kid: jwk.get("kid").and_then(Value::as_str).map(str::to_string),
        alg: alg.and_then(SigningAlg::from_name),
    })
}

/// The configured key file, read again when its modification time or size changes.
pub struct ClientKeySource {
    cfg: ClientKeyConfig,
    loaded: Mutex<Option<Loaded>>,
}

struct Loaded {
    stamp: (SystemTime, u64),
    key: Arc<ClientKey>,
}

impl ClientKeySource {
    pub fn new(cfg: ClientKeyConfig) -> ClientKeySource {
        ClientKeySource {
            cfg,
            loaded: Mutex::new(None),
        }
    }

    /// The key to sign with now. A file that changed into something unreadable (a rotation
    /// half written) leaves the previous key in use, with a warning.
    fn key(&self) -> Result<Arc<ClientKey>, KeyError> {
        let stamp = file_stamp(&self.cfg.file);
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(current), Ok(stamp)) = (loaded.as_ref(), &stamp) {
            if current.stamp == *stamp {
                return Ok(current.key.clone());
            }
        }
        match (read_key(&self.cfg.file, self.cfg.alg), stamp) {
            (Ok(key), Ok(stamp)) => {
                if loaded.is_some() {
                    tracing::info!(file = %self.cfg.file.display(), "client key file changed; new key in use");
                }
                let key = Arc::new(key);
                *loaded = Some(Loaded {
                    stamp,
                    key: key.clone(),
                });
                Ok(key)
            }
            (Err(e), _) | (Ok(_), Err(e)) => match loaded.as_ref() {
                Some(current) => {
                    tracing::warn!(reason = "client_key_reload_failed", file = %self.cfg.file.display(), error = %e, "client key file unusable; the previous key stays in use");
                    Ok(current.key.clone())
                }
                None => Err(e),
            },
        }
    }

    /// A fresh client assertion (RFC 7523 §3): `iss` and `sub` the client id, `aud` the OP's
    /// issuer identifier (what FAPI 2.0 §5.3.2.1 and RFC 7523bis ask for), a unique `jti`,
    /// and an `exp` a minute away.
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, KeyError> {
        let now = unix_now();
        let claims = json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": random_token::<16>(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        self.key()?
            .sign_jwt(self.cfg.alg, self.cfg.kid.as_deref(), &claims)
    }
}

fn file_stamp(path: &Path) -> Result<(SystemTime, u64), KeyError> {
    let meta = std::fs::metadata(path).map_err(|e| KeyError::Read(e.to_string()))?;
    let modified = meta.modified().map_err(|e| KeyError::Read(e.to_string()))?;
    Ok((modified, meta.len()))
}

fn read_key(path: &PathBuf, alg: SigningAlg) -> Result<ClientKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read(e.to_string()))?;
    let key = ClientKey::parse(&text)?;
    key.check_alg(alg)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_pkcs8() -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap()
        .as_ref()
        .to_vec()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::engine::general_purpose::STANDARD;
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn an_ec_pkcs8_pem_signs_es256_assertions_that_verify() {
        let der = ec_pkcs8();
        let key = ClientKey::parse(&pem("PRIVATE KEY", &der)).unwrap();
        assert_eq!(key.default_alg(), SigningAlg::Es256);
        let jwt = key
            .sign_jwt(SigningAlg::Es256, Some("k1"), &json!({"iss": "c"}))
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], "k1");
        assert_eq!(header["alg"], "ES256");
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &SystemRandom::new(),
        )
        .unwrap();
        use ring::signature::KeyPair as _;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref(),
        );
        let input = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .expect("the signature verifies");
    }

    #[test]
    fn an_ec_jwk_keeps_its_kid_and_refuses_rsa_algorithms() {
        use ring::signature::KeyPair as _;
        let der = ec_pkcs8();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
            &SystemRandom::new(),
        )
        .unwrap();
        let public = pair.public_key().as_ref();
        // The private scalar sits at a fixed offset in ring's PKCS#8 v1 template.
        let d = &der[36..68];
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "from-jwk",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..]),
            "d": URL_SAFE_NO_PAD.encode(d),
        });
        let key = ClientKey::parse(&jwk.to_string()).unwrap();
        assert_eq!(key.kid(), Some("from-jwk"));
        assert!(key.check_alg(SigningAlg::Es256).is_ok());
        let err = key.check_alg(SigningAlg::Ps256).unwrap_err().to_string();
        assert_eq!(err, "PS256 needs an RSA key, but the file holds an EC key (set oidc.client_key_alg to match the key, or replace the key)");
    }

    /// Whether `jwt`'s signature verifies with the key in `der`; its claims.
    fn verified_claims(jwt: &str, der: &[u8]) -> Option<Value> {
        use ring::signature::KeyPair as _;
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .ok()?;
        let (input, sig) = jwt.rsplit_once('.')?;
        signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            pair.public_key().as_ref(),
        )
        .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).ok()?)
        .ok()?;
        let claims = input.split('.').nth(1)?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }

    #[test]
    fn a_rotated_key_file_is_read_again_and_a_broken_one_keeps_the_last_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let (first, second) = (ec_pkcs8(), ec_pkcs8());
        std::fs::write(&path, pem("PRIVATE KEY", &first)).unwrap();
        let source = ClientKeySource::new(ClientKeyConfig {
            file: path.clone(),
            alg: SigningAlg::Es256,
            kid: None,
        });
        let a = source.assertion("bff", "https://op.test").unwrap();
        let claims = verified_claims(&a, &first).expect("signed with the first key");
        assert_eq!(
            (claims["iss"].as_str(), claims["sub"].as_str()),
            (Some("bff"), Some("bff"))
        );
        assert_eq!(claims["aud"], "https://op.test");
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, ASSERTION_LIFETIME_SECS);
        let again = source.assertion("bff", "https://op.test").unwrap();
        let jti = verified_claims(&again, &first).unwrap()["jti"].clone();
        assert_ne!(jti, claims["jti"], "a fresh jti every time");

        // A rotation writes a new key; its mtime is set apart, as two writes may share one.
        std::fs::write(&path, pem("PRIVATE KEY", &second)).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let b = source.assertion("bff", "https://op.test").unwrap();
        assert!(
            verified_claims(&b, &second).is_some(),
            "signed with the rotated key"
        );

        std::fs::write(&path, "half-written").unwrap();
        let c = source.assertion("bff", "https://op.test").unwrap();
        assert!(
            verified_claims(&c, &second).is_some(),
            "the last good key stays in use"
        );
    }

    const RSA_PKCS8: &str = include_str!("../../tests/fixtures/keys/rsa-2048.pem");
    const RSA_PKCS1: &str = include_str!("../../tests/fixtures/keys/rsa-2048.pkcs1.pem");
    const RSA_JWK: &str = include_str!("../../tests/fixtures/keys/rsa-2048.jwk");

    #[test]
    fn rsa_keys_in_every_form_sign_ps256_and_rs256_that_verify() {
        let reference = ClientKey::parse(RSA_PKCS8).unwrap();
        let KeyPair::Rsa(pair) = &reference.pair else {
            panic!("an RSA key");
        };
        let public = pair.public().as_ref().to_vec();
        assert_eq!(
            reference.default_alg(),
            SigningAlg::Ps256,
            "FAPI 2.0 wants PS256, not RS256"
        );
        let jwk = ClientKey::parse(RSA_JWK).unwrap();
        assert_eq!(jwk.kid(), Some("rsa-test"));
        for key in [reference, ClientKey::parse(RSA_PKCS1).unwrap(), jwk] {
            assert!(key.check_alg(SigningAlg::Es256).is_err());
            for (alg, verify) in [
                (SigningAlg::Ps256, &signature::RSA_PSS_2048_8192_SHA256),
                (SigningAlg::Rs256, &signature::RSA_PKCS1_2048_8192_SHA256),
            ] {
                let jwt = key.sign_jwt(alg, None, &json!({"iss": "bff"})).unwrap();
                let (input, sig) = jwt.rsplit_once('.').unwrap();
                signature::UnparsedPublicKey::new(verify, &public)
                    .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
                    .unwrap_or_else(|_| panic!("{} verifies", alg.name()));
            }
        }
    }

    #[test]
    fn wrong_files_say_what_they_hold_and_the_fix() {
        let cases = [
            (pem("CERTIFICATE", b"x"), "holds a certificate"),
            (pem("PUBLIC KEY", b"x"), "holds a public key only"),
            (pem("EC PRIVATE KEY", b"x"), "openssl pkcs8 -topk8"),
            (
                "hello".to_string(),
                "neither a PEM private key nor a private JWK",
            ),
            (
                r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#.to_string(),
                "public key only",
            ),
            (
                r#"{"kty":"OKP","crv":"Ed25519"}"#.to_string(),
                "kty \"OKP\"",
            ),
        ];
        for (text, expected) in cases {
            let err = ClientKey::parse(&text).err().expect(expected).to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
