//! `security.*`, `server.*` and `log.*`: request limits, origins, rate limits, threads and logging.

use std::time::Duration;

use url::Url;

use super::{origin_of, validate_log, Checker};
use crate::config::raw::{RawLog, RawSecurity, RawServer};
use crate::config::types::*;

/// Header lines Pingora's parser holds (its `MAX_HEADERS`); one more is a parse error there.
const MAX_HEADER_COUNT: usize = 256;

impl Checker<'_> {
    pub(super) fn security(&mut self, raw: RawSecurity) -> Option<SecurityConfig> {
        // The upper bounds keep every limit below Pingora's own (a 1 MiB request head, 256
        // header lines), so portcullis's check, with its precise status, is always the one hit.
        let mut size = |key: &str, value: Option<usize>, default: usize, max: usize| {
            let v = value.unwrap_or(default);
            if !(256..=max).contains(&v) {
                self.problem(key, format!("must be between 256 and {max} bytes"));
            }
            v
        };
        let max_uri_bytes = size(
            "security.max_uri_bytes",
            raw.max_uri_bytes,
            8 * 1024,
            256 * 1024,
        );
        let max_header_bytes = size(
            "security.max_header_bytes",
            raw.max_header_bytes,
            32 * 1024,
            512 * 1024,
        );
        let max_cookie_bytes = size(
            "security.max_cookie_bytes",
            raw.max_cookie_bytes,
            8 * 1024,
            512 * 1024,
        );
        let max_chunked_body_bytes = size(
            "security.max_chunked_body_bytes",
            raw.max_chunked_body_bytes,
            1024 * 1024,
            64 * 1024 * 1024,
        );
        let max_header_count = raw.max_header_count.unwrap_or(100);
        if !(8..=MAX_HEADER_COUNT).contains(&max_header_count) {
            self.problem(
                "security.max_header_count",
                format!("must be between 8 and {MAX_HEADER_COUNT}"),
            );
        }
        let mut allowed_origins = Vec::new();
        for (i, origin) in raw.allowed_origins.unwrap_or_default().iter().enumerate() {
            let key = format!("security.allowed_origins[{i}]");
            match Url::parse(origin) {
                Ok(u) if origin_of(&u) == origin.trim_end_matches('/') && u.scheme().starts_with("http") => {
                    allowed_origins.push(origin_of(&u))
                }
                _ => self.problem(key, format!("{origin:?} is not an origin (write scheme://host[:port], exactly; no wildcards)")),
            }
        }
        let content_security_policy = raw.content_security_policy.filter(|c| !c.trim().is_empty());
        if content_security_policy
            .as_deref()
            .is_some_and(|c| c.contains(['\r', '\n']))
        {
            self.problem("security.content_security_policy", "must be a single line");
        }
        let rate_limit_per_client = self.rate(
            "security.rate_limit_per_client",
            raw.rate_limit_per_client.as_deref(),
            "60/min",
        );
        let rate_limit_global = self.rate(
            "security.rate_limit_global",
            raw.rate_limit_global.as_deref(),
            "1200/min",
        );
        Some(SecurityConfig {
            max_uri_bytes,
            max_header_bytes,
            max_header_count,
            max_cookie_bytes,
            max_chunked_body_bytes,
            allowed_origins,
            content_security_policy,
            rate_limit_per_client,
            rate_limit_global,
        })
    }

    fn rate(&mut self, key: &str, value: Option<&str>, default: &str) -> Rate {
        let text = value.unwrap_or(default);
        let parsed = text.split_once('/').and_then(|(n, unit)| {
            let count: u32 = n.trim().parse().ok().filter(|c| *c > 0)?;
            let per = match unit.trim() {
                "s" | "sec" | "second" => Duration::from_secs(1),
                "min" | "minute" => Duration::from_secs(60),
                "h" | "hour" => Duration::from_secs(3600),
                _ => return None,
            };
            Some(Rate { count, per })
        });
        parsed.unwrap_or_else(|| {
            self.problem(
                key,
                format!("{text:?} is not a rate (write e.g. \"60/min\", \"5/s\", \"1000/h\")"),
            );
            Rate {
                count: 1,
                per: Duration::from_secs(1),
            }
        })
    }

    pub(super) fn server(&mut self, raw: &RawServer) -> Option<ServerSettings> {
        let threads = raw.threads.unwrap_or(2);
        if threads == 0 || threads > 256 {
            self.problem("server.threads", "must be between 1 and 256");
        }
        let max_connections = raw.max_connections.unwrap_or(1024);
        if !(1..=1_000_000).contains(&max_connections) {
            self.problem("server.max_connections", "must be between 1 and 1000000");
        }
        // As many idle upstream connections as there can be clients: with fewer, a busy sidecar
        // opens and closes upstream connections all the time (Pingora keeps 128 per thread).
        let upstream_keepalive_pool_size = match raw.upstream_keepalive_pool_size {
            Some(size) => {
                if !(1..=1_000_000).contains(&size) {
                    self.problem(
                        "server.upstream_keepalive_pool_size",
                        "must be between 1 and 1000000",
                    );
                }
                size
            }
            None => max_connections.clamp(1, 1_000_000),
        };
        Some(ServerSettings {
            threads,
            drain_timeout: self.duration(
                "server.drain_timeout",
                raw.drain_timeout.as_deref(),
                "10s",
            ),
            upstream_connect_timeout: self.duration(
                "server.upstream_connect_timeout",
                raw.upstream_connect_timeout.as_deref(),
                "5s",
            ),
            upstream_read_timeout: self.duration(
                "server.upstream_read_timeout",
                raw.upstream_read_timeout.as_deref(),
                "60s",
            ),
            request_header_timeout: self.duration(
                "server.request_header_timeout",
                raw.request_header_timeout.as_deref(),
                "10s",
            ),
            request_body_timeout: self.duration(
                "server.request_body_timeout",
                raw.request_body_timeout.as_deref(),
                "30s",
            ),
            keepalive_timeout: self.duration(
                "server.keepalive_timeout",
                raw.keepalive_timeout.as_deref(),
                "60s",
            ),
            max_connections,
            upstream_keepalive_pool_size,
            allowed_hosts: self.allowed_hosts(raw.allowed_hosts.as_deref().unwrap_or_default()),
        })
    }

    /// Host names as a `Host` header carries them, without the port: in-cluster callers use
    /// the Service's name (`shop.shop.svc`), which differs from `public_url`'s host.
    fn allowed_hosts(&mut self, hosts: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let lower = host.to_ascii_lowercase();
            // Parsing as a URL host and printing it back must give the same text: anything with
            // a port, a path, a wildcard or another spelling of an address is refused.
            let valid =
                !host.contains('*') && url::Host::parse(host).is_ok_and(|h| h.to_string() == lower);
            if valid {
                out.push(lower);
            } else {
                self.problem(
                    format!("server.allowed_hosts[{i}]"),
                    format!("{host:?} is not a host name (write it as in a Host header, without scheme, port, path or wildcard)"),
                );
            }
        }
        out
    }

    pub(super) fn log(&mut self, raw: &RawLog) -> Option<LogConfig> {
        let (log, problems) = validate_log(raw.format.as_deref(), raw.level.as_deref());
        self.problems.extend(problems);
        Some(log)
    }
}
