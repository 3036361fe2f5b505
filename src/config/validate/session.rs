//! `session.*`: timeouts, the cookie, and the store (memory or a Redis URL with its files).

use super::{Checker, DEFAULT_COOKIE_NAME, DEFAULT_SHARED_COOKIE_NAME};
use crate::config::raw::RawSession;
use crate::config::redis_url::parse_redis_url;
use crate::config::types::*;

impl Checker<'_> {
    pub(super) fn session(&mut self, raw: RawSession) -> Option<SessionConfig> {
        let store = match raw.store.as_deref().unwrap_or("memory") {
            // The contract's own example sets redis_url beside store: memory, so it is accepted
            // (and ignored) rather than rejected.
            "memory" => Some(StoreConfig::Memory),
            "redis" => self.redis(&raw),
            other => {
                self.problem(
                    "session.store",
                    format!("{other:?} is not a store (use memory or redis)"),
                );
                None
            }
        };
        let idle_timeout =
            self.duration("session.idle_timeout", raw.idle_timeout.as_deref(), "30m");
        let absolute_timeout = self.duration(
            "session.absolute_timeout",
            raw.absolute_timeout.as_deref(),
            "12h",
        );
        if idle_timeout > absolute_timeout {
            self.problem(
                "session.idle_timeout",
                "must not be longer than session.absolute_timeout",
            );
        }
        let login_timeout =
            self.duration("session.login_timeout", raw.login_timeout.as_deref(), "10m");
        let refresh_lock_timeout = self.duration(
            "session.refresh_lock_timeout",
            raw.refresh_lock_timeout.as_deref(),
            "10s",
        );
        let refresh_wait_timeout = self.duration(
            "session.refresh_wait_timeout",
            raw.refresh_wait_timeout.as_deref(),
            "5s",
        );
        let cookie_domain = raw
            .cookie_domain
            .as_deref()
            .and_then(|d| self.cookie_domain(d));
        let cookie_name = raw.cookie_name.clone().unwrap_or_else(|| {
            if cookie_domain.is_some() {
                DEFAULT_SHARED_COOKIE_NAME.to_string()
            } else {
                DEFAULT_COOKIE_NAME.to_string()
            }
        });
        match (&cookie_domain, cookie_name.starts_with("__Host-")) {
            (None, false) => self.problem("session.cookie_name", "must start with \"__Host-\" (the prefix makes browsers refuse Domain-scoped or non-Secure overwrites)"),
            (Some(_), true) => self.problem("session.cookie_name", "must not start with \"__Host-\" when session.cookie_domain is set (browsers refuse a __Host- cookie with a Domain; use __Secure-)"),
            (Some(_), false) if !cookie_name.starts_with("__Secure-") => self.problem("session.cookie_name", "must start with \"__Secure-\" when session.cookie_domain is set (browsers then refuse non-Secure overwrites)"),
            _ => {}
        }
        if cookie_name.is_empty() || !cookie_name.bytes().all(is_cookie_name_byte) {
            self.problem(
                "session.cookie_name",
                "may hold only letters, digits and !#$%&'*+-.^_`|~",
            );
        }
        let same_site = match raw
            .same_site
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("strict") => SameSite::Strict,
            Some("lax") => SameSite::Lax,
            Some(other) => {
                self.problem("session.same_site", format!("{other:?} is not allowed (use strict or lax; none would send the cookie on cross-site requests)"));
                SameSite::Strict
            }
        };
        let key_prefix = raw.key_prefix.unwrap_or_else(|| "portcullis".to_string());
        if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ']) {
            self.problem(
                "session.key_prefix",
                "must be non-empty without braces or spaces (braces are Redis Cluster hash tags)",
            );
        }
        Some(SessionConfig {
            store: store?,
            key_prefix,
            idle_timeout,
            absolute_timeout,
            login_timeout,
            refresh_lock_timeout,
            refresh_wait_timeout,
            cookie_name,
            same_site,
            cache_max_entries: raw.cache_max_entries.unwrap_or(10_000),
            cookie_domain,
        })
    }

    /// A parent domain with at least two labels, as a `Domain=` attribute carries it.
    fn cookie_domain(&mut self, value: &str) -> Option<String> {
        let lower = value.to_ascii_lowercase();
        let valid = lower.contains('.')
            && !lower.starts_with('.')
            && matches!(url::Host::parse(&lower), Ok(url::Host::Domain(d)) if d == lower);
        if valid {
            Some(lower)
        } else {
            self.problem(
                "session.cookie_domain",
                format!("{value:?} is not a parent domain (write e.g. example.com: no scheme, port, leading dot or wildcard, at least two labels)"),
            );
            None
        }
    }

    fn redis(&mut self, raw: &RawSession) -> Option<StoreConfig> {
        // The budget a request may wait for the store: long enough to ride out a failover
        // (about twice cluster-node-timeout / down-after-milliseconds), short enough that a
        // dead store fails closed quickly.
        let command_timeout = self.duration(
            "session.redis_command_timeout",
            raw.redis_command_timeout.as_deref(),
            "6s",
        );
        let connect_timeout = self.duration(
            "session.redis_connect_timeout",
            raw.redis_connect_timeout.as_deref(),
            "2s",
        );
        let file_password = match raw.redis_password_file.as_deref() {
            Some(path) => Some(self.secret_file("session.redis_password_file", path)?),
            None => None,
        };
        let Some(url) = raw.redis_url.as_deref() else {
            self.problem(
                "session.redis_url",
                "is required when session.store is redis (e.g. \"redis://127.0.0.1:6379\")",
            );
            return None;
        };
        // The URL may hold a password, so messages describe it without echoing it.
        let parsed = match parse_redis_url(url) {
            Ok(p) => p,
            Err(message) => {
                self.problem("session.redis_url", message);
                return None;
            }
        };
        if file_password.is_some() && parsed.password.is_some() {
            self.problem(
                "session.redis_password_file",
                "is set but session.redis_url carries a password too (keep one of them)",
            );
        }
        let tls_ca_pem = match raw.redis_tls_ca_file.as_deref() {
            Some(path) => Some(self.text_file("session.redis_tls_ca_file", path)?),
            None => None,
        };
        if tls_ca_pem.is_some() && !parsed.tls {
            self.problem(
                "session.redis_tls_ca_file",
                "is set but session.redis_url is not TLS (use rediss://, rediss-cluster:// or rediss-sentinel://)",
            );
        }
        let reconnect_max_delay = self.duration(
            "session.redis_reconnect_max_delay",
            raw.redis_reconnect_max_delay.as_deref(),
            "1s",
        );
        Some(StoreConfig::Redis(RedisConfig {
            topology: parsed.topology,
            tls: parsed.tls,
            tls_ca_pem,
            reconnect_max_delay,
            username: parsed.username,
            password: file_password.or(parsed.password),
            command_timeout,
            connect_timeout,
        }))
    }
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
