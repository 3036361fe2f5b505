//! Configuration reload without a restart. The background service watches the configuration
//! file and listens for SIGHUP; either loads the file again, validated exactly as
//! `portcullis check` validates it, and applies it whole or refuses it whole:
//!
//! - applied live: `routes`, `oidc.*` (a changed issuer is discovered first), `security.*`
//!   except the rate limits, `access.*`, `log.level`, and the `server.*` timeouts and
//!   `allowed_hosts`. Requests already under way finish on the configuration they started
//!   with; sessions and connections are untouched.
//! - refused, naming the keys, when the file changes anything only a restart applies
//!   ([`restart_required`]): nothing of such a file is applied, as with an invalid one, so the
//!   running configuration is always one file, never a mix of two.
//!
//! The file is polled rather than watched with inotify: a Kubernetes ConfigMap volume updates
//! by swapping a `..data` symlink, which an inotify watch on the file itself never sees, and
//! comparing the resolved target and content every `POLL_INTERVAL` sees every way a file can
//! be replaced, for the cost of reading a few kilobytes.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::server::ShutdownWatch;
use prometheus::IntCounterVec;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::{Config, ConfigError};
use crate::oidc::{Oidc, OidcError};
use crate::proxy::{Live, LiveConfig};

/// How often the configuration file is compared with what was last read. The kubelet itself
/// takes up to a minute to update a ConfigMap volume, so this adds little to that.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Why a reload was refused; the running configuration stays in force in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Printed one problem per line, as `portcullis check` prints them.
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("{}: {} changed, which only a restart applies; nothing of this file was applied (restart portcullis, or revert these keys)", file.display(), keys.join(", "))]
    RestartRequired {
        file: PathBuf,
        keys: Vec<&'static str>,
    },
    #[error("{}: oidc.issuer: the new identity provider cannot be used yet, so nothing of this file was applied: {error}", file.display())]
    Provider { file: PathBuf, error: OidcError },
    #[error("cannot change the log filter: {0}")]
    LogLevel(#[from] tracing_subscriber::reload::Error),
}

impl ReloadError {
    /// The `outcome` label of `portcullis_config_reloads_total`.
    fn outcome(&self) -> &'static str {
        match self {
            ReloadError::RestartRequired { .. } => "restart_required",
            ReloadError::Invalid(_) | ReloadError::Provider { .. } | ReloadError::LogLevel(_) => {
                "failure"
            }
        }
    }
}

pub struct Reloader {
    source: PathBuf,
    running: Mutex<Arc<Config>>,
    live: LiveConfig,
    oidc: Arc<Oidc>,
    outcomes: IntCounterVec,
}

impl Reloader {
    /// `running`: the configuration the server was built from; `live` and `oidc` are what a
    /// reload replaces.
    pub fn new(
        running: Arc<Config>,
        live: LiveConfig,
        oidc: Arc<Oidc>,
        outcomes: IntCounterVec,
    ) -> Reloader {
        Reloader {
            source: running.source.clone(),
            running: Mutex::new(running),
            live,
            oidc,
            outcomes,
        }
    }

    /// Reloads whenever the file's content or resolved target changes, or on SIGHUP
    /// (`hangup`, registered by the caller before the process reports ready), until shutdown.
    pub async fn watch(&self, mut hangup: Option<Signal>, mut shutdown: ShutdownWatch) {
        let mut seen = Fingerprint::of(&self.source);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let trigger = tokio::select! {
                _ = shutdown.changed() => return,
                _ = poll.tick() => {
                    let now = Fingerprint::of(&self.source);
                    if now.is_none() || now == seen {
                        continue;
                    }
                    seen = now;
                    "file_change"
                }
                Some(()) = next_hangup(&mut hangup) => {
                    seen = Fingerprint::of(&self.source);
                    "sighup"
                }
            };
            self.reload(trigger).await;
        }
    }

    /// One reload attempt, counted and logged by outcome.
    pub async fn reload(&self, trigger: &'static str) {
        let outcome = match self.try_reload().await {
            Ok(()) => {
                tracing::info!(trigger, file = %self.source.display(), "configuration reloaded");
                "success"
            }
            Err(e) => {
                log_refusal(&e, trigger);
                e.outcome()
            }
        };
        self.outcomes.with_label_values(&[outcome]).inc();
    }

    /// Everything that can fail happens before anything is applied.
    async fn try_reload(&self) -> Result<(), ReloadError> {
        let new = Config::load(&self.source).map_err(ReloadError::Invalid)?;
        let running = self.running();
        let keys = restart_required(&running, &new);
        if !keys.is_empty() {
            return Err(ReloadError::RestartRequired {
                file: self.source.clone(),
                keys,
            });
        }
        let oidc =
            self.oidc
                .prepare(new.oidc.clone())
                .await
                .map_err(|error| ReloadError::Provider {
                    file: self.source.clone(),
                    error,
                })?;
        crate::telemetry::reload_log_level(&new.log)?;
        self.oidc.apply(oidc);
        self.live.store(Arc::new(Live::from_config(&new)));
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(())
    }

    fn running(&self) -> Arc<Config> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Registers for SIGHUP. Done before the process reports ready: until a handler exists, the
/// signal's default action ends the process.
pub fn listen_for_hangup() -> Option<Signal> {
    signal(SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; the configuration file is still watched"))
        .ok()
}

async fn next_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// An invalid file logs each problem as its own line, worded as `portcullis check` prints it.
fn log_refusal(e: &ReloadError, trigger: &'static str) {
    match e {
        ReloadError::Invalid(invalid) => {
            for problem in invalid.to_string().lines() {
                tracing::error!(
                    trigger,
                    "configuration reload refused, the running configuration stays: {problem}"
                );
            }
        }
        e => tracing::error!(
            trigger,
            "configuration reload refused, the running configuration stays: {e}"
        ),
    }
}

/// The keys whose change only a restart applies, among those `new` changes: what is bound,
/// built or sized once at start-up (listeners, threads, the session store and cookie, the
/// per-process rate limiters and connection cap, the log format, the trace exporter), and
/// `public_url`, which is the redirect URI registered at the OP and the cookie's origin.
pub fn restart_required(running: &Config, new: &Config) -> Vec<&'static str> {
    // `section.field` and whether it differs, the key named once.
    macro_rules! changed {
        ($section:ident . $field:ident) => {
            (
                concat!(stringify!($section), ".", stringify!($field)),
                running.$section.$field != new.$section.$field,
            )
        };
    }
    let auth_listen = |c: &Config| c.ingress_auth.as_ref().map(|a| a.listen);
    let changes = [
        ("listen", running.listen != new.listen),
        ("admin_listen", running.admin_listen != new.admin_listen),
        ("public_url", running.public_origin != new.public_origin),
        changed!(session.store),
        changed!(session.key_prefix),
        changed!(session.cookie_name),
        changed!(session.same_site),
        changed!(session.cookie_domain),
        (
            "ingress_auth.enabled",
            running.ingress_auth.is_some() != new.ingress_auth.is_some(),
        ),
        (
            "ingress_auth.listen",
            auth_listen(running) != auth_listen(new),
        ),
        changed!(session.idle_timeout),
        changed!(session.absolute_timeout),
        changed!(session.login_timeout),
        changed!(session.refresh_lock_timeout),
        changed!(session.refresh_wait_timeout),
        changed!(session.cache_max_entries),
        changed!(server.threads),
        changed!(server.drain_timeout),
        changed!(server.max_connections),
        changed!(server.upstream_keepalive_pool_size),
        changed!(security.rate_limit_per_client),
        changed!(security.rate_limit_global),
        changed!(log.format),
        ("telemetry", running.telemetry != new.telemetry),
        (
            "identity_assertion",
            running.identity_assertion != new.identity_assertion,
        ),
    ];
    changes
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}

/// What identifies one version of the file: where its path resolves (a ConfigMap update
/// points `..data` at a new directory) and a hash of its content.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    target: PathBuf,
    content: u64,
}

impl Fingerprint {
    /// `None` while the file cannot be read (a swap half done): a later poll sees the result.
    fn of(path: &Path) -> Option<Fingerprint> {
        let target = std::fs::canonicalize(path).ok()?;
        let bytes = std::fs::read(&target).ok()?;
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        Some(Fingerprint {
            target,
            content: hasher.finish(),
        })
    }
}

#[cfg(test)]
mod tests;
