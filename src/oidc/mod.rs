//! The OpenID Connect client: discovery, the authorization request, the code exchange with full
//! ID-token validation, refresh, and the RP-initiated logout URL. It knows nothing of Pingora;
//! the `/bff/*` endpoints in `proxy::bff` call it.

pub mod access_token;
mod client_key;
pub mod client_tls;
pub mod dpop;
mod error;
mod features;
mod jose;
mod logout_token;
mod op_http;
mod par;
mod tokens;

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, CsrfToken, DiscoveryError,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKey, Nonce, PkceCodeChallenge,
    ProviderMetadata, RedirectUrl, Scope, TokenUrl,
};
use prometheus::HistogramVec;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use url::Url;

pub use client_key::ClientKey;
pub use error::OidcError;
pub use logout_token::{LogoutToken, LogoutTokenRejected};
pub use tokens::{expiry_from_now as tokens_expiry, Tokens};

use crate::config::{OidcConfig, TokenAuthMethod};
use crate::random::random_token;
use crate::secret::Secret;
use crate::telemetry::SPAN_TARGET;
use client_key::ClientKeySource;
use client_tls::ClientTlsSource;
use dpop::DpopKey;
use op_http::{form_request, Assertion, DpopNonce, OpCall};

/// Provider metadata members openidconnect does not model but portcullis relies on.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    pub end_session_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    /// RFC 7662: where opaque machine-client tokens are checked (`routes[].machine_clients`).
    pub introspection_endpoint: Option<Url>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    pub pushed_authorization_request_endpoint: Option<Url>,
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Vec<String>,
    pub mtls_endpoint_aliases: Option<MtlsEndpointAliases>,
}

/// RFC 8705 §5: where the endpoints that take mutual TLS are, when they differ.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct MtlsEndpointAliases {
    pub token_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    pub pushed_authorization_request_endpoint: Option<Url>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type DiscoveredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// One successful discovery (with its JWKS): the client built from it and the extra metadata.
pub struct Provider {
    metadata: Metadata,
    client: DiscoveredClient,
    pub extra: ExtraMetadata,
}

impl Provider {
    fn jwks(&self) -> &CoreJsonWebKeySet {
        self.metadata.jwks()
    }

    fn has_key(&self, kid: &str) -> bool {
        self.jwks()
            .keys()
            .iter()
            .any(|k| k.key_id().is_some_and(|id| id.as_str() == kid))
    }
}

/// A token named a key the provider's set lacks: the OP may have rotated its keys, so the
/// JWKS is fetched again, but at most this often, since anyone can post a logout token with
/// a made-up `kid`.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// What `/bff/login` needs to remember and where it sends the browser.
pub struct AuthorizationRequest {
    pub url: Url,
    pub state: Secret<String>,
    pub nonce: Secret<String>,
    pub pkce_verifier: Secret<String>,
    /// The DPoP key the code will be bound to (`dpop_jkt`), with `oidc.dpop`.
    pub dpop_key: Option<Secret<String>>,
}

/// The OP client. Its settings (`oidc.*`) and what discovery found are swapped together, so a
/// reload never pairs a provider with another client's id or secret; `reload` replaces them.
pub struct Oidc {
    redirect_uri: Url,
    current: ArcSwap<Current>,
    /// When the JWKS was last fetched for an unknown `kid`; the lock also makes concurrent
    /// callers wait for one fetch rather than each starting their own.
    jwks_refetched: tokio::sync::Mutex<Option<Instant>>,
    /// Time spent waiting on the OP, by call: it tells an OP's latency apart from portcullis's.
    op_duration: HistogramVec,
    /// The OP's latest `DPoP-Nonce` (RFC 9449 §8).
    dpop_nonce: Arc<DpopNonce>,
    /// Why the last discovery found the OP unfit for the configuration (a feature it
    /// dropped); `/readyz` reports it while the previous discovery stays in use.
    incompatible: ArcSwapOption<String>,
    /// The key sets of `routes[].machine_clients.issuers`, discovered when first needed.
    extra_issuers: access_token::ExtraIssuers,
}

/// The settings in force, the HTTP client built from them, and the provider discovered with
/// them (none until discovery succeeds).
struct Current {
    cfg: Arc<OidcConfig>,
    http: openidconnect::reqwest::Client,
    /// The `private_key_jwt` key, read again when its file changes.
    client_key: Option<Arc<ClientKeySource>>,
    /// With `tls_client_auth`: the HTTP client with the certificate, rebuilt when it changes.
    client_tls: Option<Arc<ClientTlsSource>>,
    provider: Option<Arc<Provider>>,
}

/// New OP settings made ready off to the side by `Oidc::prepare`; `Oidc::apply` swaps them in.
pub struct Prepared {
    current: Current,
    /// Its provider was discovered for it (not carried over from the settings in force).
    rediscovered: bool,
}

fn http_client(cfg: &OidcConfig) -> Result<openidconnect::reqwest::Client, OidcError> {
    let builder = openidconnect::reqwest::Client::builder()
        // Following redirects from the OP would be an SSRF vector (openidconnect's advice).
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(cfg.http_timeout);
    client_tls::configure(builder, cfg)
        .map_err(|e| OidcError::Discovery(format!("cannot build the HTTP client: {e}")))?
        .build()
        .map_err(|e| OidcError::Discovery(format!("cannot build the HTTP client: {e}")))
}

impl Oidc {
    pub fn new(
        cfg: OidcConfig,
        redirect_uri: Url,
        op_duration: HistogramVec,
    ) -> Result<Oidc, OidcError> {
        let http = http_client(&cfg)?;
        Ok(Oidc {
            redirect_uri,
            current: ArcSwap::from_pointee(Current {
                client_key: client_key_source(&cfg),
                client_tls: ClientTlsSource::new(&cfg, http.clone()).map(Arc::new),
                cfg: Arc::new(cfg),
                http,
                provider: None,
            }),
            jwks_refetched: tokio::sync::Mutex::new(None),
            op_duration,
            dpop_nonce: Arc::default(),
            incompatible: ArcSwapOption::empty(),
            extra_issuers: access_token::ExtraIssuers::default(),
        })
    }

    /// Awaits one call to the OP, recording how long it took under `call`, in a span that names
    /// the call and whether it failed (never what was sent or received).
    async fn timed<T, E>(
        &self,
        call: &'static str,
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "op_call",
            otel.name = %format_args!("oidc {call}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            oidc.call = call,
        );
        let started = Instant::now();
        let result = request.instrument(span.clone()).await;
        self.op_duration
            .with_label_values(&[call])
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    /// The settings in force now (a reload may replace them for later callers).
    pub fn config(&self) -> Arc<OidcConfig> {
        self.current.load().cfg.clone()
    }

    pub fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        self.current
            .load()
            .provider
            .clone()
            .ok_or(OidcError::NotReady)
    }

    pub fn is_ready(&self) -> bool {
        self.provider().is_ok()
    }

    /// Fetches discovery and the JWKS, checks what portcullis requires of the OP, and swaps the
    /// result in. On failure the previous provider (if any) stays in use.
    pub async fn discover(&self) -> Result<(), OidcError> {
        let current = self.current.load_full();
        let metadata = match self.fetch_metadata(&current.cfg, &current.http).await {
            Ok(metadata) => metadata,
            Err(e) => {
                if matches!(e, OidcError::Incompatible { .. }) {
                    self.incompatible.store(Some(Arc::new(e.to_string())));
                }
                return Err(e);
            }
        };
        self.incompatible.store(None);
        let provider = provider_from(&current.cfg, &self.redirect_uri, metadata);
        self.install(&current.cfg, provider);
        Ok(())
    }

    /// `check --probe`: one discovery with `cfg`, checked as `serve` checks it (PKCE, and
    /// the PAR, `private_key_jwt` and DPoP support the configuration needs), then dropped.
    pub async fn probe(cfg: OidcConfig, redirect_uri: Url) -> Result<(), OidcError> {
        let unregistered = HistogramVec::new(
            prometheus::HistogramOpts::new("probe_op_duration_seconds", "unregistered"),
            &["call"],
        )
        .map_err(|e| OidcError::Discovery(e.to_string()))?;
        Oidc::new(cfg, redirect_uri, unregistered)?.discover().await
    }

    /// Why the OP's latest discovery cannot serve the configuration, if it cannot.
    pub fn incompatibility(&self) -> Option<Arc<String>> {
        self.incompatible.load_full()
    }

    /// A call to the OP authenticated as `current`'s client, with proofs of `dpop` if given.
    fn op_call(&self, current: &Current, dpop: Option<DpopKey>) -> OpCall {
        let assertion = current.client_key.clone().map(|key| Assertion {
            key,
            client_id: current.cfg.client_id.clone(),
            audience: current.cfg.issuer.clone(),
        });
        let http = match &current.client_tls {
            Some(tls) => tls.client(),
            None => current.http.clone(),
        };
        OpCall {
            http,
            assertion,
            dpop,
            nonce: self.dpop_nonce.clone(),
        }
    }

    /// New settings, made ready without touching the ones in force: the HTTP client, and the
    /// provider — discovered anew when the issuer changes, or when the last discovery found the
    /// OP unfit (the reload may be the fix; an error then leaves the running OP in use), else
    /// the current discovery with the new client settings, checked for the FAPI keys.
    pub async fn prepare(&self, cfg: OidcConfig) -> Result<Prepared, OidcError> {
        let http = http_client(&cfg)?;
        let current = self.current.load_full();
        let rediscover = cfg.issuer != current.cfg.issuer || self.incompatibility().is_some();
        let provider = if rediscover {
            Some(self.fetch_metadata(&cfg, &http).await?)
        } else {
            current.provider.as_ref().map(|p| p.metadata.clone())
        };
        if let Some(metadata) = &provider {
            features::check(&cfg, metadata)?;
        }
        let provider = provider.map(|m| Arc::new(provider_from(&cfg, &self.redirect_uri, m)));
        let current = Current {
            client_key: client_key_source(&cfg),
            client_tls: ClientTlsSource::new(&cfg, http.clone()).map(Arc::new),
            cfg: Arc::new(cfg),
            http,
            provider,
        };
        Ok(Prepared {
            current,
            rediscovered: rediscover,
        })
    }

    /// Puts prepared settings in force; calls to the OP already under way finish with the old.
    /// A provider discovered for them is fit for them, so `/readyz` stops reporting an unfit one.
    pub fn apply(&self, prepared: Prepared) {
        if prepared.rediscovered {
            self.incompatible.store(None);
        }
        self.current.store(Arc::new(prepared.current));
    }

    /// Discovery with `cfg`'s issuer, checked for what portcullis requires of the OP.
    async fn fetch_metadata(
        &self,
        cfg: &OidcConfig,
        http: &openidconnect::reqwest::Client,
    ) -> Result<Metadata, OidcError> {
        let issuer =
            IssuerUrl::new(cfg.issuer.clone()).map_err(|e| OidcError::Discovery(e.to_string()))?;
        // openidconnect rejects a document whose "issuer" differs from ours (Discovery §4.3).
        let metadata = self
            .timed("discovery", Metadata::discover_async(issuer, http))
            .await
            .map_err(|e| match e {
                DiscoveryError::Validation(message) => OidcError::Incompatible {
                    key: "oidc.issuer",
                    message: format!(
                        "the provider's discovery document fails validation: {message} (set oidc.issuer to the provider's \"issuer\" exactly, trailing slash included)"
                    ),
                },
                e => OidcError::Discovery(error_chain(&e)),
            })?;
        if !metadata
            .additional_metadata()
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256")
        {
            return Err(OidcError::Incompatible {
                key: "oidc.issuer",
                message: "the provider does not advertise PKCE S256 in code_challenge_methods_supported (enable PKCE with S256 for this client at the provider)".into(),
            });
        }
        features::check(cfg, &metadata)?;
        Ok(metadata)
    }

    /// Installs a provider built for `cfg`, unless a reload replaced `cfg` meanwhile: a
    /// discovery that began before the reload must not bring back the old client.
    fn install(&self, cfg: &Arc<OidcConfig>, provider: Provider) -> Arc<Provider> {
        let provider = Arc::new(provider);
        self.current.rcu(|current| {
            if Arc::ptr_eq(&current.cfg, cfg) {
                Arc::new(Current {
                    cfg: current.cfg.clone(),
                    http: current.http.clone(),
                    client_key: current.client_key.clone(),
                    client_tls: current.client_tls.clone(),
                    provider: Some(provider.clone()),
                })
            } else {
                current.clone()
            }
        });
        provider
    }

    /// The provider to verify a token signed with `kid`: the current one, or, when its key set
    /// lacks `kid`, one with the JWKS fetched again (rate-limited by `JWKS_REFETCH_INTERVAL`).
    /// A failed or useless fetch leaves the current provider, and verification then fails.
    async fn provider_for_kid(&self, kid: Option<&str>) -> Result<Arc<Provider>, OidcError> {
        let provider = self.provider()?;
        let Some(kid) = kid.filter(|k| !provider.has_key(k)) else {
            return Ok(provider);
        };
        let mut last = self.jwks_refetched.lock().await;
        let provider = self.provider()?;
        if provider.has_key(kid) || last.is_some_and(|t| t.elapsed() < JWKS_REFETCH_INTERVAL) {
            return Ok(provider);
        }
        *last = Some(Instant::now());
        let current = self.current.load_full();
        let fetched = self
            .timed(
                "jwks",
                CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &current.http),
            )
            .await;
        match fetched {
            Ok(jwks) => {
                tracing::info!(
                    keys = jwks.keys().len(),
                    "JWKS fetched again for a key id it lacked"
                );
                let metadata = provider.metadata.clone().set_jwks(jwks);
                let refreshed = provider_from(&current.cfg, &self.redirect_uri, metadata);
                Ok(self.install(&current.cfg, refreshed))
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "JWKS refetch failed");
                Ok(provider)
            }
        }
    }

    /// Builds the authorization request: code flow, fresh PKCE S256, state and nonce of 256
    /// bits each, the configured scopes, and only allow-listed extra parameters; with
    /// `oidc.dpop`, a fresh DPoP key whose thumbprint binds the code (`dpop_jkt`, RFC 9449
    /// §10); with PAR, pushed to the OP so the browser sees only `request_uri`.
    /// `redirect_uri` replaces the configured one (a login on another of portcullis's hosts).
    pub async fn authorization_request(
        &self,
        provider: &Provider,
        extra_params: &[(String, String)],
        redirect_uri: Option<&Url>,
    ) -> Result<AuthorizationRequest, OidcError> {
        let cfg = self.config();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = random_token::<32>();
        let nonce = random_token::<32>();
        let (state_for_url, nonce_for_url) = (state.clone(), nonce.clone());
        let mut req = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state_for_url),
            move || Nonce::new(nonce_for_url),
        );
        for scope in cfg.scopes.iter().filter(|s| s.as_str() != "openid") {
            req = req.add_scope(Scope::new(scope.clone()));
        }
        req = req.set_pkce_challenge(challenge);
        if let Some(uri) = redirect_uri {
            req = req.set_redirect_uri(Cow::Owned(RedirectUrl::from_url(uri.clone())));
        }
        for (k, v) in extra_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let dpop_key = if cfg.dpop {
            let key = DpopKey::generate().map_err(|e| OidcError::Credentials {
                reason: "dpop_key_failed",
                detail: e.to_string(),
            })?;
            req = req.add_extra_param("dpop_jkt", key.thumbprint().to_string());
            Some(key.stored())
        } else {
            None
        };
        let (mut url, _, _) = req.url();
        if let Some(endpoint) = par::endpoint(cfg.pushed_authorization_requests, &provider.extra)? {
            url = self.push(provider, endpoint, &url).await?;
        }
        Ok(AuthorizationRequest {
            url,
            state: Secret::new(state),
            nonce: Secret::new(nonce),
            pkce_verifier: Secret::new(verifier.secret().clone()),
            dpop_key,
        })
    }

    /// The RP-initiated logout URL (RP-Initiated Logout 1.0 §2) carrying `state`, or `None`
    /// when the OP has no `end_session_endpoint`.
    pub fn end_session_url(
        &self,
        provider: Option<&Provider>,
        id_token_hint: &str,
        state: &str,
    ) -> Option<Url> {
        let mut url = provider.and_then(|p| p.extra.end_session_endpoint.clone())?;
        let cfg = self.config();
        if cfg.send_id_token_hint {
            url.query_pairs_mut()
                .append_pair("id_token_hint", id_token_hint);
        }
        url.query_pairs_mut()
            .append_pair("client_id", &cfg.client_id)
            .append_pair(
                "post_logout_redirect_uri",
                cfg.post_logout_redirect_uri.as_str(),
            )
            .append_pair("state", state);
        Some(url)
    }

    /// RFC 7009 revocation of a token, when the OP offers a `revocation_endpoint`. Best effort:
    /// the session holding the token is already gone locally, so a failure is only logged.
    pub async fn revoke_token(&self, provider: &Provider, token: &str, kind: TokenKind) {
        let Some(endpoint) = provider.extra.revocation_endpoint.clone() else {
            return;
        };
        let kind = kind.hint();
        let current = self.current.load_full();
        let form = vec![
            ("token".to_string(), token.to_string()),
            ("token_type_hint".to_string(), kind.to_string()),
        ];
        let sent = match form_request(&endpoint, form, &current.cfg) {
            Ok(request) => {
                let call = self.op_call(&current, None);
                self.timed("revocation", call.send(request)).await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(resp) if resp.status().is_success() => tracing::debug!(kind, "token revoked"),
            Ok(resp) => tracing::warn!(
                kind,
                status = resp.status().as_u16(),
                "token revocation refused"
            ),
            Err(e) => tracing::warn!(kind, error = %e, "token revocation failed"),
        }
    }

    pub fn issuer(&self) -> String {
        self.current.load().cfg.issuer.clone()
    }

    pub fn refresh_skew(&self) -> Duration {
        self.current.load().cfg.refresh_skew
    }
}

/// The openidconnect client for `cfg` on a discovered provider.
fn provider_from(cfg: &OidcConfig, redirect_uri: &Url, metadata: Metadata) -> Provider {
    // Without a secret, openidconnect puts only `client_id` in the body; `OpCall` adds the
    // `private_key_jwt` assertion beside it, or the TLS connection carries the certificate.
    let auth_type = match cfg.auth_method {
        TokenAuthMethod::ClientSecretPost => AuthType::RequestBody,
        _ => AuthType::BasicAuth,
    };
    let secret = cfg
        .client_secret
        .as_ref()
        .map(|s| ClientSecret::new(s.expose().clone()));
    let (metadata_for_client, extra) = with_mtls_aliases(cfg, &metadata);
    let client = CoreClient::from_provider_metadata(
        metadata_for_client,
        ClientId::new(cfg.client_id.clone()),
        secret,
    )
    .set_redirect_uri(RedirectUrl::from_url(redirect_uri.clone()))
    .set_auth_type(auth_type);
    Provider {
        extra,
        metadata,
        client,
    }
}

/// With `tls_client_auth`, the token, revocation and PAR calls go to the OP's
/// `mtls_endpoint_aliases` where it names them (RFC 8705 §5): the endpoints that ask for a
/// client certificate may differ from those a browser reaches.
fn with_mtls_aliases(cfg: &OidcConfig, metadata: &Metadata) -> (Metadata, ExtraMetadata) {
    let mut extra = metadata.additional_metadata().clone();
    let aliases = extra.mtls_endpoint_aliases.clone();
    let (TokenAuthMethod::TlsClientAuth, Some(aliases)) = (cfg.auth_method, aliases) else {
        return (metadata.clone(), extra);
    };
    let mut for_client = metadata.clone();
    if let Some(token) = aliases.token_endpoint {
        for_client = for_client.set_token_endpoint(Some(TokenUrl::from_url(token)));
    }
    if let Some(revocation) = aliases.revocation_endpoint {
        extra.revocation_endpoint = Some(revocation);
    }
    if let Some(par) = aliases.pushed_authorization_request_endpoint {
        extra.pushed_authorization_request_endpoint = Some(par);
    }
    (for_client, extra)
}

fn client_key_source(cfg: &OidcConfig) -> Option<Arc<ClientKeySource>> {
    cfg.client_key
        .clone()
        .map(|key| Arc::new(ClientKeySource::new(key)))
}

/// Which kind of token a revocation names (RFC 7009 `token_type_hint`).
#[derive(Debug, Clone, Copy)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    fn hint(self) -> &'static str {
        match self {
            TokenKind::Access => "access_token",
            TokenKind::Refresh => "refresh_token",
        }
    }
}

/// The error and its sources in one line, for logs (discovery errors carry URLs, not secrets).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
