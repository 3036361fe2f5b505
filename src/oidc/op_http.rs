//! The one way out to the OP's authenticated endpoints (token, refresh, PAR, revocation).
//! Each attempt gets what must be fresh per request: a new `private_key_jwt` assertion (its
//! `jti` is single-use) and a new DPoP proof carrying the OP's latest `DPoP-Nonce`. An OP
//! that answers `use_dpop_nonce` is retried once with the nonce it sent (RFC 9449 §8); a
//! second demand is an error, so a misbehaving OP cannot hold a request in a loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse};
use url::Url;

use super::client_key::{ClientKeySource, KeyError};
use super::dpop::{DpopError, DpopKey};
use crate::config::{OidcConfig, TokenAuthMethod};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const DPOP_NONCE: &str = "dpop-nonce";

#[derive(Debug, thiserror::Error)]
pub enum OpCallError {
    #[error("{0}")]
    Http(String),
    #[error("oidc.client_key_file: {0}")]
    ClientKey(#[from] KeyError),
    #[error("{0}")]
    Dpop(#[from] DpopError),
    #[error("the provider demanded a new DPoP nonce again after a retry with the one it sent")]
    NonceLoop,
}

/// The OP's latest `DPoP-Nonce`, sent in every proof until it sends another.
#[derive(Default)]
pub struct DpopNonce(Mutex<Option<String>>);

impl DpopNonce {
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, response: &HttpResponse) {
        let nonce = response
            .headers()
            .get(DPOP_NONCE)
            .and_then(|v| v.to_str().ok());
        if let Some(nonce) = nonce {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(nonce.to_string());
        }
    }
}

/// `private_key_jwt`'s assertion: who signs, for whom.
pub struct Assertion {
    pub key: Arc<ClientKeySource>,
    pub client_id: String,
    /// The OP's issuer identifier.
    pub audience: String,
}

/// One call to the OP and what it must carry. It owns all of it: openidconnect's request
/// futures must be `Send` for every lifetime of the client they borrow, which a client that
/// itself borrows cannot promise (rust-lang/rust#64552).
pub struct OpCall {
    pub http: openidconnect::reqwest::Client,
    pub assertion: Option<Assertion>,
    pub dpop: Option<DpopKey>,
    pub nonce: Arc<DpopNonce>,
}

impl OpCall {
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, OpCallError> {
        let mut retried = false;
        loop {
            let response = self.send_once(&request).await?;
            self.nonce.remember(&response);
            if self.dpop.is_none() || !asks_for_nonce(&response) {
                return Ok(response);
            }
            if retried {
                return Err(OpCallError::NonceLoop);
            }
            retried = true;
        }
    }

    async fn send_once(&self, request: &HttpRequest) -> Result<HttpResponse, OpCallError> {
        let mut body = request.body().clone();
        if let Some(a) = &self.assertion {
            let jwt = a.key.assertion(&a.client_id, &a.audience)?;
            append_form(
                &mut body,
                &[
                    ("client_assertion_type", ASSERTION_TYPE),
                    ("client_assertion", &jwt),
                ],
            );
        }
        let mut builder = self
            .http
            .request(request.method().clone(), request.uri().to_string())
            .headers(request.headers().clone())
            .body(body);
        if let Some(key) = &self.dpop {
            let htu = htu_of(&request.uri().to_string());
            let proof = key.proof(
                request.method().as_str(),
                &htu,
                None,
                self.nonce.get().as_deref(),
            )?;
            builder = builder.header("DPoP", proof);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| OpCallError::Http(super::error_chain(&e)))?;
        let mut out = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| OpCallError::Http(super::error_chain(&e)))?;
        out.body(bytes.to_vec())
            .map_err(|e| OpCallError::Http(e.to_string()))
    }
}

/// openidconnect's token requests go out through `OpCall` too.
impl<'c> AsyncHttpClient<'c> for OpCall {
    type Error = OpCallError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, OpCallError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// RFC 9449 §8: a 400 (token endpoint) or 401 with error `use_dpop_nonce` and a new nonce.
fn asks_for_nonce(response: &HttpResponse) -> bool {
    let status = response.status().as_u16();
    if !(status == 400 || status == 401) || !response.headers().contains_key(DPOP_NONCE) {
        return false;
    }
    let in_body = serde_json::from_slice::<serde_json::Value>(response.body())
        .ok()
        .is_some_and(|v| v.get("error").and_then(|e| e.as_str()) == Some("use_dpop_nonce"));
    let in_challenge = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("use_dpop_nonce"));
    in_body || in_challenge
}

/// `htu` is the target URI without query and fragment (RFC 9449 §4.2).
fn htu_of(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

fn append_form(body: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(pairs);
    if !body.is_empty() {
        body.push(b'&');
    }
    body.extend_from_slice(form.finish().as_bytes());
}

/// A form POST to `endpoint` with the client's credentials for the shared-secret methods
/// (RFC 6749 §2.3.1) or its `client_id` for `private_key_jwt`, whose assertion `OpCall`
/// adds. Portcullis builds the PAR and revocation requests itself; openidconnect builds the
/// token requests.
pub fn form_request(
    endpoint: &Url,
    mut pairs: Vec<(String, String)>,
    cfg: &OidcConfig,
) -> Result<HttpRequest, OpCallError> {
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(endpoint.as_str())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::ACCEPT, "application/json");
    let has_client_id = pairs.iter().any(|(k, _)| k == "client_id");
    let secret = cfg
        .client_secret
        .as_ref()
        .map(|s| s.expose().as_str())
        .unwrap_or_default();
    match cfg.auth_method {
        TokenAuthMethod::ClientSecretBasic => {
            let encode = |s: &str| -> String {
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
            };
            let credentials = format!("{}:{}", encode(&cfg.client_id), encode(secret));
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
            let mut value = HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| {
                OpCallError::Http("client credentials are not a header value".into())
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        TokenAuthMethod::ClientSecretPost => {
            if !has_client_id {
                pairs.push(("client_id".into(), cfg.client_id.clone()));
            }
            pairs.push(("client_secret".into(), secret.to_string()));
        }
        // RFC 7523 §3 and RFC 8705 §2: the client names itself; the assertion or the TLS
        // certificate proves it.
        TokenAuthMethod::PrivateKeyJwt | TokenAuthMethod::TlsClientAuth if !has_client_id => {
            pairs.push(("client_id".into(), cfg.client_id.clone()));
        }
        TokenAuthMethod::PrivateKeyJwt | TokenAuthMethod::TlsClientAuth => {}
    }
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    request
        .body(body.into_bytes())
        .map_err(|e| OpCallError::Http(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, nonce: bool, body: &str) -> HttpResponse {
        let mut b = http::Response::builder().status(status);
        if nonce {
            b = b.header("DPoP-Nonce", "n2");
        }
        b.body(body.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn only_a_use_dpop_nonce_error_with_a_nonce_asks_for_a_retry() {
        let error = r#"{"error":"use_dpop_nonce"}"#;
        assert!(asks_for_nonce(&response(400, true, error)));
        assert!(
            !asks_for_nonce(&response(400, false, error)),
            "no nonce to retry with"
        );
        assert!(!asks_for_nonce(&response(
            400,
            true,
            r#"{"error":"invalid_grant"}"#
        )));
        assert!(!asks_for_nonce(&response(200, true, "{}")));
    }

    #[test]
    fn htu_drops_query_and_fragment_and_the_assertion_is_form_encoded() {
        assert_eq!(
            htu_of("https://op.test/token?x=1#f"),
            "https://op.test/token"
        );
        let mut body = b"grant_type=refresh_token".to_vec();
        append_form(&mut body, &[("client_assertion_type", ASSERTION_TYPE)]);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "grant_type=refresh_token&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
        );
    }
}
