//! `oidc.*` keys of a FAPI 2.0-grade client: how portcullis authenticates to the OP
//! (`token_endpoint_auth_method`, a shared secret or `client_key_file`), and whether the
//! authorization request is pushed (`pushed_authorization_requests`).

use std::path::PathBuf;

use super::Checker;
use crate::config::raw::RawOidc;
use crate::config::types::*;
use crate::oidc::ClientKey;

const AUTH_METHODS: &str =
    "client_secret_basic, client_secret_post, private_key_jwt or tls_client_auth";

impl Checker<'_> {
    pub(super) fn auth_method(&mut self, value: Option<&str>) -> TokenAuthMethod {
        match value.unwrap_or("client_secret_basic") {
            "client_secret_basic" => TokenAuthMethod::ClientSecretBasic,
            "client_secret_post" => TokenAuthMethod::ClientSecretPost,
            "private_key_jwt" => TokenAuthMethod::PrivateKeyJwt,
            "tls_client_auth" => TokenAuthMethod::TlsClientAuth,
            other => {
                self.problem(
                    "oidc.token_endpoint_auth_method",
                    format!("{other:?} is not supported (use {AUTH_METHODS})"),
                );
                TokenAuthMethod::ClientSecretBasic
            }
        }
    }

    pub(super) fn par_mode(&mut self, value: Option<&str>) -> ParMode {
        match value.unwrap_or("off") {
            "off" => ParMode::Off,
            "auto" => ParMode::Auto,
            "required" => ParMode::Required,
            other => {
                self.problem(
                    "oidc.pushed_authorization_requests",
                    format!("{other:?} is not a mode (use auto, required or off)"),
                );
                ParMode::Off
            }
        }
    }

    /// A secret beside a key or certificate would be a second credential to leak for nothing.
    pub(super) fn no_client_secret(&mut self, raw: &RawOidc, method: TokenAuthMethod) {
        for (key, set) in [
            ("oidc.client_secret", raw.client_secret.is_some()),
            ("oidc.client_secret_file", raw.client_secret_file.is_some()),
        ] {
            if set {
                self.problem(
                    key,
                    format!(
                        "is not used with token_endpoint_auth_method: {} (remove it)",
                        method.name()
                    ),
                );
            }
        }
    }

    /// Keys of another method than the one configured: set by mistake, or for a method
    /// the file forgot to name.
    fn unused_keys(&mut self, method: &str, keys: &[(&str, bool)]) {
        for (key, set) in keys {
            if *set {
                self.problem(
                    *key,
                    format!("is used only with token_endpoint_auth_method: {method} (set that, or remove this key)"),
                );
            }
        }
    }

    /// `oidc.client_key_*`: the signing key with `private_key_jwt`, else none.
    pub(super) fn client_key_for(
        &mut self,
        method: TokenAuthMethod,
        raw: &RawOidc,
    ) -> Option<Option<ClientKeyConfig>> {
        if method == TokenAuthMethod::PrivateKeyJwt {
            return self.client_key(raw).map(Some);
        }
        self.unused_keys(
            "private_key_jwt",
            &[
                ("oidc.client_key_file", raw.client_key_file.is_some()),
                ("oidc.client_key_alg", raw.client_key_alg.is_some()),
                ("oidc.client_key_id", raw.client_key_id.is_some()),
            ],
        );
        Some(None)
    }

    /// `oidc.client_certificate_*`: the certificate and key with `tls_client_auth`, else none.
    pub(super) fn client_tls_for(
        &mut self,
        method: TokenAuthMethod,
        raw: &RawOidc,
    ) -> Option<Option<ClientTlsConfig>> {
        let (cert, key) = (
            raw.client_certificate_file.as_deref(),
            raw.client_certificate_key_file.as_deref(),
        );
        if method != TokenAuthMethod::TlsClientAuth {
            self.unused_keys(
                "tls_client_auth",
                &[
                    ("oidc.client_certificate_file", cert.is_some()),
                    ("oidc.client_certificate_key_file", key.is_some()),
                ],
            );
            return Some(None);
        }
        let certificate_file = self.client_tls_file(
            "oidc.client_certificate_file",
            cert,
            "the client certificate (PEM)",
        );
        let key_file = self.client_tls_file(
            "oidc.client_certificate_key_file",
            key,
            "the client certificate's private key (PEM)",
        );
        let config = ClientTlsConfig {
            certificate_file: certificate_file?,
            key_file: key_file?,
        };
        if let Err(e) = crate::oidc::client_tls::identity(&config) {
            self.problem("oidc.client_certificate_file", e.to_string());
            return None;
        }
        Some(Some(config))
    }

    fn client_tls_file(
        &mut self,
        key: &str,
        value: Option<&str>,
        what: &str,
    ) -> Option<std::path::PathBuf> {
        let Some(path) = value else {
            self.problem(
                key,
                format!("is required with token_endpoint_auth_method: tls_client_auth ({what})"),
            );
            return None;
        };
        let (_, full) = self.read_named_file(key, path)?;
        Some(full)
    }

    /// The bundle must hold at least one certificate, or it would silently trust nothing more.
    pub(super) fn tls_ca_file(&mut self, path: &str) -> Option<std::path::PathBuf> {
        const KEY: &str = "oidc.tls_ca_file";
        let (text, full) = self.read_named_file(KEY, path)?;
        match crate::oidc::client_tls::ca_certificates(text.as_bytes()) {
            Ok(_) => Some(full),
            Err(e) => {
                self.problem(KEY, format!("{}: {e}", full.display()));
                None
            }
        }
    }

    /// The key file must hold a private key portcullis can sign with, of the type the
    /// algorithm needs; it is read here so `check` reports a bad file before `serve` starts.
    pub(super) fn client_key(&mut self, raw: &RawOidc) -> Option<ClientKeyConfig> {
        const KEY: &str = "oidc.client_key_file";
        let Some(path) = raw.client_key_file.as_deref() else {
            self.problem(
                KEY,
                "is required with token_endpoint_auth_method: private_key_jwt (a PEM or JWK file holding the client's private key)",
            );
            return None;
        };
        let configured_alg = self.client_key_alg(raw.client_key_alg.as_deref());
        let (key, full) = self.signing_key(KEY, path)?;
        let alg = configured_alg?.unwrap_or_else(|| key.default_alg());
        if let Err(e) = key.check_alg(alg) {
            self.problem("oidc.client_key_alg", format!("{}: {e}", full.display()));
            return None;
        }
        let kid = match raw.client_key_id.as_deref() {
            Some(id) if id.trim().is_empty() => {
                self.problem(
                    "oidc.client_key_id",
                    "must not be empty (remove it to use the JWK's own kid)",
                );
                None
            }
            Some(id) => Some(id.to_string()),
            None => key.kid().map(str::to_string),
        };
        Some(ClientKeyConfig {
            file: full,
            alg,
            kid,
        })
    }

    /// A private key file `key` names, read so `check` reports an unusable one before `serve`.
    pub(super) fn signing_key(&mut self, key: &str, path: &str) -> Option<(ClientKey, PathBuf)> {
        let (text, full) = self.read_named_file(key, path)?;
        match ClientKey::parse(&text) {
            Ok(parsed) => Some((parsed, full)),
            Err(e) => {
                self.problem(key, format!("{}: {e}", full.display()));
                None
            }
        }
    }

    /// `Some(None)`: not set (the key's type decides); `None`: set to something unusable.
    fn client_key_alg(&mut self, value: Option<&str>) -> Option<Option<SigningAlg>> {
        let Some(name) = value else {
            return Some(None);
        };
        match SigningAlg::from_name(name) {
            Some(alg) => Some(Some(alg)),
            None => {
                self.problem(
                    "oidc.client_key_alg",
                    format!("{name:?} is not supported (use ES256, PS256 or RS256)"),
                );
                None
            }
        }
    }
}

impl Checker<'_> {
    /// A route can forward a DPoP-bound token only if sessions hold a DPoP key, and only a
    /// route that forwards a token at all.
    pub(super) fn dpop_routes(&mut self, routes: &[RouteConfig], dpop: bool) {
        for (i, route) in routes.iter().enumerate().filter(|(_, r)| r.dpop) {
            let key = format!("routes[{i}].dpop");
            if !dpop {
                self.problem(
                    &key,
                    "needs oidc.dpop: true (sessions hold no DPoP key otherwise; set it, or remove this key)",
                );
            }
            if route.kind == RouteKind::Public {
                self.problem(
                    &key,
                    "applies only to api and page routes (a public route forwards no token; remove it)",
                );
            }
        }
    }
}
