//! Machine clients: on a route with `routes[].machine_clients`, a request that carries its own
//! `Authorization: Bearer` token and no session cookie is admitted on that token, which goes
//! to the upstream unchanged. Verdicts are cached by the token's SHA-256 (never the token), so
//! a client repeating its token costs a hash and a map lookup, like a session-cache hit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, AUTHORIZATION};
use pingora::http::RequestHeader;
use prometheus::{IntCounter, IntCounterVec};
use serde_json::Value;

use super::error::ProxyError;
use crate::clock::unix_now;
use crate::config::{MachineClientsConfig, MACHINE_CACHE_TTL_MAX};
use crate::oidc::access_token::{AccessTokenError, VerifiedToken};
use crate::oidc::Oidc;

/// Verdicts held at most; beyond it, expired ones go first, then arbitrary ones.
const MAX_ENTRIES: usize = 10_000;
/// A refused token is refused again from the cache for this long (or `cache_ttl` if shorter):
/// a flood of one bad token then costs the OP one look.
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// What a request's `Authorization` header offers a machine-client route.
#[derive(Debug, PartialEq)]
pub enum Offered<'r> {
    /// No header, or a scheme that is not a machine client's (left to the session as before).
    Nothing,
    Bearer(Bearer<'r>),
}

/// A bearer token as the request carries it: the whole header (forwarded as it came) and the
/// token in it (verified).
#[derive(Debug, PartialEq)]
pub struct Bearer<'r> {
    pub header: &'r HeaderValue,
    pub token: &'r str,
}

/// Reads the header: `Bearer <token68>` is a machine client; a `DPoP` token is refused
/// rather than ignored, since forwarding it without its proof checked would pass off a
/// sender-constrained token as a bearer one; two `Authorization` headers are refused.
pub fn offered(req: &RequestHeader) -> Result<Offered<'_>, ProxyError> {
    let mut values = req.headers.get_all(AUTHORIZATION).iter();
    let Some(header) = values.next() else {
        return Ok(Offered::Nothing);
    };
    if values.next().is_some() {
        return Err(ProxyError::BadRequest("authorization_duplicated"));
    }
    let text = header.to_str().map_err(|_| refused("malformed"))?;
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("dpop") {
        return Err(refused("dpop_scheme"));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Offered::Nothing);
    }
    let token = rest.trim_start_matches(' ');
    if !is_token68(token) {
        return Err(refused("malformed"));
    }
    Ok(Offered::Bearer(Bearer { header, token }))
}

/// RFC 6750 §2.1's `b64token`.
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn refused(reason: &'static str) -> ProxyError {
    ProxyError::MachineTokenRejected(reason)
}

/// A compact JWS is three base64url parts; anything else is an opaque token.
fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The route's own requirements of a verified token: an issuer it accepts, an audience it
/// names, and (for an introspected token) that it takes opaque tokens at all.
pub fn check_route(
    token: &VerifiedToken,
    cfg: &MachineClientsConfig,
    op_issuer: &str,
) -> Result<(), ProxyError> {
    if token.introspected && !cfg.introspection {
        return Err(refused("not_a_jwt"));
    }
    let issuer = token.claims.get("iss").and_then(Value::as_str);
    let issuer_ok =
        issuer.is_some_and(|iss| iss == op_issuer || cfg.issuers.iter().any(|i| i == iss));
    if !issuer_ok {
        return Err(refused("bad_issuer"));
    }
    let names = |aud: &str| cfg.audiences.iter().any(|a| a == aud);
    let audience_ok = match token.claims.get("aud") {
        Some(Value::String(aud)) => names(aud),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(names),
        _ => false,
    };
    if !audience_ok {
        return Err(refused("bad_audience"));
    }
    Ok(())
}

#[derive(Clone)]
enum Verdict {
    Admitted(Arc<VerifiedToken>),
    Refused(&'static str),
}

struct Entry {
    verdict: Verdict,
    stored: Instant,
    /// Unix time after which an admitted token is looked at again (its `exp` plus the skew).
    expires: Option<u64>,
}

impl Entry {
    fn fresh(&self, ttl: Duration, now: Instant, unix: u64) -> bool {
        let ttl = match self.verdict {
            Verdict::Admitted(_) => ttl,
            Verdict::Refused(_) => ttl.min(NEGATIVE_TTL),
        };
        now.duration_since(self.stored) < ttl && self.expires.is_none_or(|e| unix < e)
    }
}

/// The verdict cache, shared by every proxy thread, and the outcome counters (the ones every
/// admitted request counts resolved once: `with_label_values` hashes its labels per call).
pub struct MachineAuth {
    verdicts: Mutex<HashMap<[u8; 32], Entry>>,
    outcomes: IntCounterVec,
    admitted: IntCounter,
    hits: IntCounter,
    misses: IntCounter,
}

impl MachineAuth {
    pub fn new(outcomes: IntCounterVec, cache_events: &IntCounterVec) -> MachineAuth {
        MachineAuth {
            verdicts: Mutex::new(HashMap::new()),
            admitted: outcomes.with_label_values(&["admitted"]),
            outcomes,
            hits: cache_events.with_label_values(&["hit"]),
            misses: cache_events.with_label_values(&["miss"]),
        }
    }

    fn with_verdicts<R>(&self, f: impl FnOnce(&mut HashMap<[u8; 32], Entry>) -> R) -> R {
        f(&mut self.verdicts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The token verified (from the cache when a verdict on it is still fresh), or why not.
    pub async fn verify(
        &self,
        oidc: &Oidc,
        token: &str,
        cfg: &MachineClientsConfig,
    ) -> Result<Arc<VerifiedToken>, ProxyError> {
        let key = fingerprint(token);
        let cached = self.with_verdicts(|v| {
            v.get(&key)
                .filter(|e| e.fresh(cfg.cache_ttl, Instant::now(), unix_now()))
                .map(|e| e.verdict.clone())
        });
        if let Some(verdict) = cached {
            self.hits.inc();
            return match verdict {
                Verdict::Admitted(token) => Ok(token),
                Verdict::Refused(reason) => Err(refused(reason)),
            };
        }
        self.misses.inc();
        let checked = if looks_like_jwt(token) {
            oidc.verify_access_jwt(token, &cfg.issuers).await
        } else if cfg.introspection {
            oidc.introspect(token).await
        } else {
            return Err(refused("not_a_jwt"));
        };
        match checked {
            Ok(verified) => {
                let skew = oidc.config().clock_skew.as_secs();
                let expires = verified.exp.map(|exp| exp.saturating_add(skew));
                let verified = Arc::new(verified);
                self.store(key, Verdict::Admitted(verified.clone()), expires);
                Ok(verified)
            }
            // Whose issuers a route accepts differs by route: not a verdict on the token. A
            // token refused on its looks alone costs less to judge again than to remember, and
            // remembering it would let junk tokens crowd out good verdicts.
            Err(AccessTokenError::Rejected(
                reason @ ("bad_issuer" | "malformed" | "bad_header" | "bad_type"),
            )) => Err(refused(reason)),
            Err(AccessTokenError::Rejected(reason)) => {
                self.store(key, Verdict::Refused(reason), None);
                Err(refused(reason))
            }
            Err(AccessTokenError::Unavailable(e)) => Err(ProxyError::Oidc(e)),
        }
    }

    fn store(&self, key: [u8; 32], verdict: Verdict, expires: Option<u64>) {
        let entry = Entry {
            verdict,
            stored: Instant::now(),
            expires,
        };
        self.with_verdicts(|v| {
            if v.len() >= MAX_ENTRIES && !v.contains_key(&key) {
                make_room(v);
            }
            v.insert(key, entry);
        });
    }

    pub fn count_admitted(&self) {
        self.admitted.inc();
    }

    /// Counts a machine request's refusal by its reason.
    pub fn count_refused(&self, e: &ProxyError) {
        self.outcomes.with_label_values(&[outcome_of(e)]).inc();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with_verdicts(|v| v.len())
    }
}

/// Drops the verdicts that are stale for any route (past the longest TTL, or expired), then
/// the refusals (cheap to judge again, and what a flood of bad tokens fills the cache with),
/// and if none of those is, an arbitrary one.
fn make_room(verdicts: &mut HashMap<[u8; 32], Entry>) {
    let (now, unix) = (Instant::now(), unix_now());
    verdicts.retain(|_, e| e.fresh(MACHINE_CACHE_TTL_MAX, now, unix));
    if verdicts.len() >= MAX_ENTRIES {
        verdicts.retain(|_, e| matches!(e.verdict, Verdict::Admitted(_)));
    }
    if verdicts.len() >= MAX_ENTRIES {
        if let Some(k) = verdicts.keys().next().copied() {
            verdicts.remove(&k);
        }
    }
}

fn fingerprint(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The metric outcome of a refusal on a machine-client route.
fn outcome_of(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::MachineTokenRejected(reason) => reason,
        ProxyError::MixedCredentials => "mixed_credentials",
        ProxyError::AccessDenied(_) => "access_denied",
        ProxyError::BadRequest(reason) => reason,
        _ => "unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> MachineClientsConfig {
        MachineClientsConfig {
            audiences: vec!["api".into()],
            issuers: vec!["https://other.test".into()],
            introspection: false,
            cache_ttl: Duration::from_secs(30),
        }
    }

    fn token(claims: Value, introspected: bool) -> VerifiedToken {
        VerifiedToken {
            claims: match claims {
                Value::Object(m) => m,
                _ => unreachable!(),
            },
            exp: None,
            introspected,
        }
    }

    fn req(authorization: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/api/x", None).unwrap();
        for a in authorization {
            r.append_header("authorization", *a).unwrap();
        }
        r
    }

    #[test]
    fn only_a_bearer_token_is_a_machine_client() {
        let r = req(&["Bearer abc.def-_~+/ghi=="]);
        assert!(matches!(
            offered(&r),
            Ok(Offered::Bearer(Bearer {
                token: "abc.def-_~+/ghi==",
                ..
            }))
        ));
        let r = req(&["bearer  t0k"]);
        assert!(matches!(
            offered(&r),
            Ok(Offered::Bearer(Bearer { token: "t0k", .. }))
        ));
        assert_eq!(offered(&req(&[])).unwrap(), Offered::Nothing);
        assert_eq!(offered(&req(&["Basic YTpi"])).unwrap(), Offered::Nothing);
        let reason = |r: Result<Offered<'_>, ProxyError>| r.unwrap_err().reason();
        assert_eq!(reason(offered(&req(&["DPoP t0k"]))), "dpop_scheme");
        assert_eq!(reason(offered(&req(&["Bearer"]))), "malformed");
        assert_eq!(reason(offered(&req(&["Bearer a b"]))), "malformed");
        assert_eq!(reason(offered(&req(&["Bearer ==="]))), "malformed");
        assert_eq!(
            reason(offered(&req(&["Bearer a", "Bearer b"]))),
            "authorization_duplicated"
        );
    }

    #[test]
    fn the_route_names_the_issuers_and_audiences_it_accepts() {
        let op = "https://op.test";
        let check = |claims: Value, introspected: bool, cfg: &MachineClientsConfig| {
            check_route(&token(claims, introspected), cfg, op).map_err(|e| e.reason())
        };
        let c = cfg();
        assert_eq!(check(json!({"iss": op, "aud": "api"}), false, &c), Ok(()));
        assert_eq!(
            check(
                json!({"iss": "https://other.test", "aud": ["x", "api"]}),
                false,
                &c
            ),
            Ok(())
        );
        assert_eq!(
            check(json!({"iss": "https://evil.test", "aud": "api"}), false, &c),
            Err("bad_issuer")
        );
        assert_eq!(check(json!({"aud": "api"}), false, &c), Err("bad_issuer"));
        assert_eq!(
            check(json!({"iss": op, "aud": ["x"]}), false, &c),
            Err("bad_audience")
        );
        assert_eq!(check(json!({"iss": op}), false, &c), Err("bad_audience"));
        assert_eq!(
            check(json!({"iss": op, "aud": "api"}), true, &c),
            Err("not_a_jwt")
        );
        let with_introspection = MachineClientsConfig {
            introspection: true,
            ..cfg()
        };
        assert_eq!(
            check(json!({"iss": op, "aud": "api"}), true, &with_introspection),
            Ok(())
        );
    }

    #[test]
    fn verdicts_expire_with_the_ttl_and_the_token() {
        let now = Instant::now();
        let unix = unix_now();
        let admitted = |expires| Entry {
            verdict: Verdict::Admitted(Arc::new(token(json!({}), false))),
            stored: now,
            expires,
        };
        let ttl = Duration::from_secs(30);
        assert!(admitted(Some(unix + 60)).fresh(ttl, now, unix));
        assert!(!admitted(Some(unix + 60)).fresh(ttl, now + ttl, unix));
        assert!(!admitted(Some(unix)).fresh(ttl, now, unix), "expired token");
        let refused = Entry {
            verdict: Verdict::Refused("bad_signature"),
            stored: now,
            expires: None,
        };
        assert!(refused.fresh(ttl, now + NEGATIVE_TTL / 2, unix));
        assert!(!refused.fresh(ttl, now + NEGATIVE_TTL, unix));
    }

    /// The outcome series are pre-created from `MACHINE_AUTH_OUTCOMES`: a refusal whose outcome
    /// is missing there would appear only on first use.
    #[test]
    fn every_refusal_counts_under_a_pre_created_outcome() {
        use crate::metrics::MACHINE_AUTH_OUTCOMES;
        use crate::oidc::OidcError;
        let token_reasons = [
            "malformed",
            "bad_header",
            "bad_type",
            "bad_algorithm",
            "bad_signature",
            "bad_issuer",
            "bad_audience",
            "expired",
            "not_yet_valid",
            "inactive",
            "not_a_jwt",
            "dpop_scheme",
            "bound_token",
        ];
        let mut refusals: Vec<ProxyError> = token_reasons.into_iter().map(refused).collect();
        refusals.extend([
            ProxyError::MixedCredentials,
            ProxyError::AccessDenied("access_denied_claim"),
            ProxyError::BadRequest("authorization_duplicated"),
            ProxyError::Oidc(OidcError::NotReady),
        ]);
        for e in &refusals {
            assert!(MACHINE_AUTH_OUTCOMES.contains(&outcome_of(e)), "{e}");
        }
    }

    #[test]
    fn the_cache_is_bounded_and_keyed_by_a_hash() {
        let counters = || IntCounterVec::new(prometheus::Opts::new("t", "t"), &["l"]).unwrap();
        let auth = MachineAuth::new(counters(), &counters());
        let admitted = Verdict::Admitted(Arc::new(VerifiedToken {
            claims: serde_json::Map::new(),
            exp: None,
            introspected: false,
        }));
        for i in 0..MAX_ENTRIES - 1 {
            auth.store(fingerprint(&format!("good-{i}")), admitted.clone(), None);
        }
        auth.store(fingerprint("bad"), Verdict::Refused("bad_signature"), None);
        assert_eq!(auth.len(), MAX_ENTRIES);
        // Full: the refusal makes room first, every admitted verdict stays.
        auth.store(fingerprint("good-new"), admitted.clone(), None);
        assert_eq!(auth.len(), MAX_ENTRIES);
        let kept = |t: &str| auth.with_verdicts(|v| v.contains_key(&fingerprint(t)));
        assert!(!kept("bad") && kept("good-new") && kept("good-0"));
        auth.store(fingerprint("one-more"), admitted, None);
        assert_eq!(
            auth.len(),
            MAX_ENTRIES,
            "bounded even when all are admitted"
        );
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
