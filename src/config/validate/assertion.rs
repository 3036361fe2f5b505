//! `identity_assertion`: the key portcullis signs identity assertions with, and which routes
//! send one.

use super::Checker;
use crate::config::raw::RawIdentityAssertion;
use crate::config::types::*;

const DEFAULT_HEADER: &str = "x-portcullis-assertion";
/// Long enough to outlive a slow upstream call, short enough that a leaked one soon expires.
const MAX_LIFETIME_SECS: u64 = 600;

impl Checker<'_> {
    pub(super) fn identity_assertion(
        &mut self,
        raw: Option<RawIdentityAssertion>,
        groups_claim: &str,
    ) -> Option<IdentityAssertionConfig> {
        let raw = raw?;
        let key = self.assertion_key(&raw);
        let header = self.assertion_header(raw.header.as_deref());
        let lifetime = self.duration(
            "identity_assertion.lifetime",
            raw.lifetime.as_deref(),
            "60s",
        );
        if lifetime.as_secs() > MAX_LIFETIME_SECS || lifetime.as_secs() < 2 {
            self.problem(
                "identity_assertion.lifetime",
                "must be between 2s and 10m (upstreams see a fresh assertion on every request; a short life limits a leaked one)",
            );
        }
        let claims = raw.claims.unwrap_or_else(|| {
            ["email", "name", "preferred_username", groups_claim]
                .map(str::to_string)
                .to_vec()
        });
        for (i, claim) in claims.iter().enumerate() {
            if claim.is_empty() || ["iss", "aud", "sub", "iat", "exp"].contains(&claim.as_str()) {
                self.problem(
                    format!("identity_assertion.claims[{i}]"),
                    format!("{claim:?} cannot be copied (iss, aud, sub, iat and exp are portcullis's own; name an ID-token claim such as email)"),
                );
            }
        }
        let (key_file, alg) = key?;
        Some(IdentityAssertionConfig {
            key_file,
            alg,
            header: header?,
            lifetime,
            claims,
        })
    }

    /// Read here so `check` reports an unusable key file before `serve` starts.
    fn assertion_key(
        &mut self,
        raw: &RawIdentityAssertion,
    ) -> Option<(std::path::PathBuf, SigningAlg)> {
        const KEY: &str = "identity_assertion.key_file";
        let Some(path) = raw.key_file.as_deref() else {
            self.problem(
                KEY,
                "is required (a PEM or JWK file holding portcullis's private signing key: EC P-256 or RSA 2048+)",
            );
            return None;
        };
        let (key, full) = self.signing_key(KEY, path)?;
        let alg = match raw.alg.as_deref() {
            None => key.default_alg(),
            Some(name) => match SigningAlg::from_name(name) {
                Some(alg) => alg,
                None => {
                    self.problem(
                        "identity_assertion.alg",
                        format!("{name:?} is not supported (use ES256, PS256 or RS256)"),
                    );
                    return None;
                }
            },
        };
        if key.check_alg(alg).is_err() {
            self.problem(
                "identity_assertion.alg",
                format!(
                    "{}: the key cannot sign {} (set identity_assertion.alg to match the key: ES256 for EC P-256, PS256 or RS256 for RSA)",
                    full.display(),
                    alg.name()
                ),
            );
            return None;
        }
        Some((full, alg))
    }

    fn assertion_header(&mut self, value: Option<&str>) -> Option<http::HeaderName> {
        let name = value.unwrap_or(DEFAULT_HEADER);
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if !is_reserved(h.as_str()) => Some(h),
            _ => {
                self.problem(
                    "identity_assertion.header",
                    format!("{name:?} cannot carry the assertion (name a header of its own, e.g. X-Portcullis-Assertion)"),
                );
                None
            }
        }
    }

    /// A route (or the ingress auth answer) sends an assertion only if there is a key to sign
    /// with and a session to assert.
    pub(super) fn assertion_users(
        &mut self,
        routes: &[RouteConfig],
        ingress: Option<&IngressAuthConfig>,
        section_written: bool,
    ) {
        if ingress.is_some_and(|i| i.identity_assertion) && !section_written {
            self.problem(
                "ingress_auth.identity_assertion",
                "needs the identity_assertion section (its key_file signs the assertion)",
            );
        }
        for (i, route) in routes.iter().enumerate() {
            if !route.identity_assertion {
                continue;
            }
            if !section_written {
                self.problem(
                    format!("routes[{i}].identity_assertion"),
                    "needs the identity_assertion section (its key_file signs the assertion)",
                );
            }
            if !route.kind.looks_up_session(route.session) {
                self.problem(
                    format!("routes[{i}].identity_assertion"),
                    "is sent only with a session (this route never looks one up: give it policy user or optional)",
                );
            }
        }
    }
}

fn is_reserved(name: &str) -> bool {
    [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        // Headers portcullis itself strips or sets on every forwarded request.
        "x-csrf",
        "dpop",
        "traceparent",
        "tracestate",
        "x-request-id",
    ]
    .contains(&name)
        || name.starts_with("x-forwarded-")
}
