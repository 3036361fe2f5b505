//! The resource server's half of DPoP (RFC 9449 §4.3, §7.1), written independently of
//! portcullis's code: verify a proof against the request it came with and the access token
//! it carries, and ask the OP (introspection, as the resource server) which key the token is
//! bound to. Also the client key pair a `private_key_jwt` test registers at the OP.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::{json, Value};

/// The resource server's client at the OP (the fixture's `RESOURCE_SERVER_SECRET`).
pub const RESOURCE_SERVER_ID: &str = "resource-server";
pub const RESOURCE_SERVER_SECRET: &str = "rs-secret";

/// How old a proof may be when the upstream receives it.
const MAX_PROOF_AGE_SECS: i64 = 60;

/// A verified proof: its `jti` (unique per request) and its key's thumbprint.
pub struct VerifiedProof {
    pub jti: String,
    pub thumbprint: String,
}

fn decode(part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| format!("not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

fn b64_member(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk[name].as_str().ok_or(format!("jwk lacks {name}"))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("jwk {name}: {e}"))
}

/// Checks `proof` as a resource server must for a request `method url` carrying `token`.
pub fn verify_proof(
    proof: &str,
    method: &str,
    url: &str,
    token: &str,
) -> Result<VerifiedProof, String> {
    let parts: Vec<&str> = proof.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a compact JWS".into());
    };
    let (header, claims) = (decode(header)?, decode(claims)?);
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err(format!("header {header}"));
    }
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err("the proof carries a private key".into());
    }
    let point = [vec![4u8], b64_member(jwk, "x")?, b64_member(jwk, "y")?].concat();
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|e| e.to_string())?;
    let input = proof.rsplit_once('.').map(|(i, _)| i).unwrap_or_default();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(input.as_bytes(), &signature)
        .map_err(|_| "the signature does not verify with the header's key".to_string())?;
    let expect = |name: &str, want: &str| {
        (claims[name] == want)
            .then_some(())
            .ok_or(format!("{name} is {} (want {want})", claims[name]))
    };
    expect("htm", method)?;
    expect("htu", url)?;
    expect(
        "ath",
        &URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes())),
    )?;
    let iat = claims["iat"].as_i64().ok_or("no iat")?;
    let now = chrono_now();
    if (now - iat).abs() > MAX_PROOF_AGE_SECS {
        return Err(format!(
            "iat {iat} is not within {MAX_PROOF_AGE_SECS} s of {now}"
        ));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| j.len() >= 16)
        .ok_or("no jti of 16+ characters")?;
    Ok(VerifiedProof {
        jti: jti.to_string(),
        thumbprint: thumbprint(jwk)?,
    })
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// RFC 7638 thumbprint of an EC public JWK.
fn thumbprint(jwk: &Value) -> Result<String, String> {
    let (crv, x, y) = (jwk["crv"].as_str(), jwk["x"].as_str(), jwk["y"].as_str());
    let (Some(crv), Some(x), Some(y)) = (crv, x, y) else {
        return Err("jwk lacks crv, x or y".into());
    };
    let canonical = format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Ok(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes())))
}

/// What the OP says of `token` to the resource server: active, its type and its `cnf.jkt`.
pub async fn introspect(issuer: &str, token: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{issuer}/token/introspection"))
        .basic_auth(RESOURCE_SERVER_ID, Some(RESOURCE_SERVER_SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspection answers")
        .json()
        .await
        .expect("introspection is JSON")
}

/// A fresh P-256 client key: its PKCS#8 PEM (for portcullis) and the public JWK set (for the
/// OP's client registration), with `kid`.
pub fn client_key(kid: &str) -> (String, String) {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .expect("key generation");
    let pair = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &SystemRandom::new(),
    )
    .expect("the key reads back");
    let point = pair.public_key().as_ref();
    let jwks = json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    (pem, jwks.to_string())
}
