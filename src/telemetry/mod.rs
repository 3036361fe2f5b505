//! Log setup. Text or JSON lines on stderr; `RUST_LOG` overrides the configured level.
//! Nothing that could hold a secret is logged by value: see `secret::Secret`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Dependencies whose debug and trace events print whole requests, responses or commands
/// (Pingora prints request headers with cookies and the authorization code at trace level):
/// capped at `info` whatever `RUST_LOG` asks for, since a log must never hold a secret.
const CAPPED_TARGETS: [&str; 8] = [
    "pingora_proxy",
    "pingora_core",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "fred",
    "rustls",
];

pub fn init(log: &LogConfig) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    for target in CAPPED_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests that call serve twice in one process) is harmless; ignore it.
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// Escapes control characters so input copied into a log line cannot forge new lines.
pub fn sanitize(input: &str) -> String {
    const MAX: usize = 256;
    let mut out = String::with_capacity(input.len().min(MAX));
    for c in input.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// One line per security-relevant event (login, logout, refresh failure, back-channel logout)
/// under the `audit` target, with a stable outcome and reason code. The subject is an OP
/// identifier, not a secret; tokens, cookies and codes are never among the fields.
pub fn audit(event: &'static str, outcome: &'static str, reason: &str, sub: Option<&str>) {
    tracing::info!(target: "audit", event, outcome, reason, sub = sub.unwrap_or("-"), "audit");
}
