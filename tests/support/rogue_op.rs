//! A scriptable OpenID Provider on loopback, beside the real one, for inputs a conformant OP
//! never produces: ID tokens with crafted claims and headers, signed (ES256) by keys the test
//! holds, a JWKS the test can rotate, and counters of what portcullis fetched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::op::CLIENT_ID;

/// An ES256 signing key with its `kid`.
pub struct Key {
    pub kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    pub fn generate(kid: &str) -> Arc<Key> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load the P-256 key");
        Arc::new(Key {
            kid: kid.to_string(),
            pair,
        })
    }

    /// The public key as a JWK (the point is 0x04 ‖ x ‖ y).
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A compact JWS of `claims` under `header` (taken as given: tests craft odd headers).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    pub fn header(&self) -> Value {
        json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid })
    }
}

pub fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// What the token endpoint knows when it mints an ID token for one login.
pub struct Grant {
    pub issuer: String,
    pub nonce: String,
    pub access_token: String,
    pub now: u64,
}

impl Grant {
    /// Claims a conformant OP would issue; tests change what they attack.
    pub fn valid_claims(&self) -> Value {
        json!({
            "iss": self.issuer, "sub": "rogue-user", "aud": CLIENT_ID,
            "iat": self.now, "exp": self.now + 300, "nonce": self.nonce,
            "at_hash": at_hash(&self.access_token),
        })
    }
}

/// OIDC Core §3.1.3.6 for ES256: the left half of SHA-256 of the access token.
pub fn at_hash(access_token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

type IdTokenScript = Box<dyn Fn(&Grant) -> String + Send>;
type DiscoveryEdit = Box<dyn Fn(&mut Value) + Send>;
/// Rewrites the query of the redirect back to the client (code, state, iss).
type CallbackEdit = Box<dyn Fn(&mut Vec<(String, String)>) + Send>;

struct State {
    issuer: String,
    jwks: Vec<Arc<Key>>,
    id_token: IdTokenScript,
    discovery: DiscoveryEdit,
    callback: CallbackEdit,
    /// Pads access tokens to this many bytes (0: no padding).
    access_token_len: usize,
    /// `expires_in` of every token response.
    expires_in: u64,
    /// code → nonce of the authorization request it answers.
    codes: HashMap<String, String>,
    jwks_fetches: usize,
    token_requests: usize,
}

pub struct RogueOp {
    pub issuer: String,
    /// The key the default script signs with; listed in the JWKS.
    pub key: Arc<Key>,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RogueOp {
    /// Starts on its own thread and runtime, issuing valid ID tokens until told otherwise.
    pub fn start() -> RogueOp {
        let key = Key::generate("rogue-1");
        let signer = key.clone();
        let state = Arc::new(Mutex::new(State {
            issuer: String::new(),
            jwks: vec![key.clone()],
            id_token: Box::new(move |g| signer.sign(&signer.header(), &g.valid_claims())),
            discovery: Box::new(|_| {}),
            callback: Box::new(|_| {}),
            access_token_len: 0,
            expires_in: 300,
            codes: HashMap::new(),
            jwks_fetches: 0,
            token_requests: 0,
        }));
        let shared = state.clone();
        let (port, stop_tx) = super::spawn_server(move |listener| accept_loop(listener, shared));
        let issuer = format!("http://127.0.0.1:{port}");
        state.lock().expect("rogue OP state").issuer = issuer.clone();
        RogueOp {
            issuer,
            key,
            state,
            stop: Some(stop_tx),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().expect("rogue OP state"))
    }

    /// From now on the token endpoint answers with what `script` mints.
    pub fn issue(&self, script: impl Fn(&Grant) -> String + Send + 'static) {
        self.with(|s| s.id_token = Box::new(script));
    }

    /// From now on the discovery document is what `edit` makes of a conformant one.
    pub fn edit_discovery(&self, edit: impl Fn(&mut Value) + Send + 'static) {
        self.with(|s| s.discovery = Box::new(edit));
    }

    /// From now on the authorization response carries what `edit` makes of its parameters.
    pub fn edit_callback(&self, edit: impl Fn(&mut Vec<(String, String)>) + Send + 'static) {
        self.with(|s| s.callback = Box::new(edit));
    }

    /// From now on access tokens live `secs` seconds (`expires_in`).
    pub fn access_tokens_live(&self, secs: u64) {
        self.with(|s| s.expires_in = secs);
    }

    /// From now on access tokens are `len` bytes long.
    pub fn access_tokens_of(&self, len: usize) {
        self.with(|s| s.access_token_len = len);
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: Vec<Arc<Key>>) {
        self.with(|s| s.jwks = keys);
    }

    pub fn jwks_fetches(&self) -> usize {
        self.with(|s| s.jwks_fetches)
    }

    pub fn token_requests(&self) -> usize {
        self.with(|s| s.token_requests)
    }
}

impl Drop for RogueOp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = serve(stream, state).await;
        });
    }
}

/// One request per connection (`Connection: close`), enough for an OIDC client.
async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let (method, target, body) = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
            continue;
        };
        let length = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        if buf.len() >= head + length {
            break (
                req.method.unwrap_or("").to_string(),
                req.path.unwrap_or("").to_string(),
                buf[head..head + length].to_vec(),
            );
        }
    };
    let (status, content_type, extra, body) = respond(&method, &target, &body, &state);
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn respond(
    method: &str,
    target: &str,
    body: &[u8],
    state: &Mutex<State>,
) -> (&'static str, &'static str, String, String) {
    let url = url::Url::parse(&format!("http://rogue{target}")).expect("request target");
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let mut s = state.lock().expect("rogue OP state");
    let json_reply = |v: Value| ("200 OK", "application/json", String::new(), v.to_string());
    match (method, url.path()) {
        ("GET", "/.well-known/openid-configuration") => {
            let mut doc = json!({
                "issuer": s.issuer,
                "authorization_endpoint": format!("{}/authorize", s.issuer),
                "token_endpoint": format!("{}/token", s.issuer),
                "jwks_uri": format!("{}/jwks", s.issuer),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": true,
            });
            (s.discovery)(&mut doc);
            json_reply(doc)
        }
        ("GET", "/jwks") => {
            s.jwks_fetches += 1;
            let keys: Vec<Value> = s.jwks.iter().map(|k| k.jwk()).collect();
            json_reply(json!({ "keys": keys }))
        }
        ("GET", "/authorize") => {
            let code = format!("code-{}", s.codes.len());
            let nonce = query.get("nonce").cloned().unwrap_or_default();
            s.codes.insert(code.clone(), nonce);
            let mut params = vec![
                ("code".to_string(), code),
                (
                    "state".to_string(),
                    query.get("state").cloned().unwrap_or_default(),
                ),
                ("iss".to_string(), s.issuer.clone()),
            ];
            (s.callback)(&mut params);
            let mut back = url::Url::parse(query.get("redirect_uri").map_or("", |r| r.as_str()))
                .expect("redirect_uri");
            back.query_pairs_mut().extend_pairs(&params);
            (
                "302 Found",
                "text/plain",
                format!("location: {back}\r\n"),
                String::new(),
            )
        }
        ("POST", "/token") => {
            s.token_requests += 1;
            let form: HashMap<String, String> =
                url::form_urlencoded::parse(body).into_owned().collect();
            // A refresh grant mints an ID token too, without a nonce (OIDC Core §12.2).
            let redeemed = if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
                form.get("refresh_token")
                    .filter(|t| t.starts_with("rogue-rt-"))
                    .map(|_| String::new())
            } else {
                form.get("code").and_then(|c| s.codes.remove(c))
            };
            let Some(nonce) = redeemed else {
                return (
                    "400 Bad Request",
                    "application/json",
                    String::new(),
                    json!({ "error": "invalid_grant" }).to_string(),
                );
            };
            let mut access_token = format!("rogue-at-{}-", s.token_requests);
            let padding = s.access_token_len.saturating_sub(access_token.len());
            access_token.push_str(&"x".repeat(padding));
            let grant = Grant {
                issuer: s.issuer.clone(),
                nonce,
                access_token,
                now: unix_now(),
            };
            let id_token = (s.id_token)(&grant);
            json_reply(json!({
                "access_token": grant.access_token, "token_type": "Bearer",
                "expires_in": s.expires_in, "id_token": id_token,
                "refresh_token": format!("rogue-rt-{}", s.token_requests),
            }))
        }
        _ => (
            "404 Not Found",
            "text/plain",
            String::new(),
            "not found".into(),
        ),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
