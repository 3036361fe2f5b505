//! The Redis store through fred: standalone, Sentinel or Cluster, chosen by the URL scheme.
//!
//! Every command has a timeout (fred's default is none, which would hang requests while Redis
//! is down), the client reconnects forever with backoff, and `fail_fast` is off so a Redis that
//! is absent at start-up is picked up once it appears.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Expiration, SetOptions};

use super::store::{ttl_millis, SessionStore, StoreError};
use std::sync::Arc;

use fred::types::RespVersion;

use super::cache::SessionCache;
use crate::config::{RedisConfig, RedisTopology};

/// SADD and PEXPIRE as one step, so an index never exists without a time to live.
/// A sorted set scored by creation time, so back-channel logout can pick the sessions created
/// before a logout event, and members past the absolute timeout can be dropped by score.
const INDEX_ADD_SCRIPT: &str = "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) \
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3]) \
    return redis.call('PEXPIRE', KEYS[1], ARGV[4])";
/// Compare-and-set on one key: the new value is written only over the exact value that was
/// read, so a record deleted (or rewritten) since stays as it is. One key, so atomic on every
/// topology, Cluster included.
const REPLACE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) \
    return 1";
/// Compare-and-delete: the lock is released only by its owner.
const UNLOCK_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

pub struct RedisStore {
    client: Client,
    label: &'static str,
    /// The in-process cache this client keeps coherent and the prefix of the session keys it
    /// holds; `None` when there is no cache.
    tracking: Option<(Arc<SessionCache>, String)>,
}

fn server_config(topology: &RedisTopology) -> ServerConfig {
    match topology {
        RedisTopology::Standalone { host, port, .. } => {
            ServerConfig::new_centralized(host.clone(), *port)
        }
        RedisTopology::Cluster { nodes } => ServerConfig::new_clustered(nodes.clone()),
        RedisTopology::Sentinel {
            sentinels,
            service_name,
            ..
        } => ServerConfig::new_sentinel(sentinels.clone(), service_name.clone()),
    }
}

fn database(topology: &RedisTopology) -> Option<u8> {
    match topology {
        RedisTopology::Standalone { database, .. } | RedisTopology::Sentinel { database, .. } => {
            *database
        }
        RedisTopology::Cluster { .. } => None,
    }
}

/// TLS on rustls with ring (the process's only crypto provider), trusting either the system
/// store or exactly the configured CA bundle.
fn tls_config(ca_pem: Option<&str>) -> Result<fred::types::config::TlsConfig, StoreError> {
    let Some(pem) = ca_pem else {
        let connector = fred::types::config::TlsConnector::default_rustls().map_err(unavailable)?;
        return Ok(connector.into());
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| StoreError::Unavailable(format!("redis CA bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| StoreError::Unavailable(format!("redis CA bundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(StoreError::Unavailable(
            "redis CA bundle holds no certificate".into(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(fred::types::config::TlsConnector::from(config).into())
}

fn unavailable(e: Error) -> StoreError {
    StoreError::Unavailable(e.details().to_string())
}

impl RedisStore {
    /// Builds the client; nothing is dialled until `connect`.
    /// `tracking` (a cache and the prefix of the session keys it holds) turns on RESP3 client
    /// tracking, whose invalidations keep that cache coherent.
    pub fn new(
        cfg: &RedisConfig,
        tracking: Option<(Arc<SessionCache>, String)>,
    ) -> Result<RedisStore, StoreError> {
        let config = Config {
            version: if tracking.is_some() {
                RespVersion::RESP3
            } else {
                RespVersion::RESP2
            },
            server: server_config(&cfg.topology),
            username: cfg.username.clone(),
            password: cfg.password.as_ref().map(|p| p.expose().clone()),
            database: database(&cfg.topology),
            // fail_fast would tear the client down when the first connection fails, and it
            // would never reconnect once Redis appears.
            fail_fast: false,
            tls: if cfg.tls {
                Some(tls_config(cfg.tls_ca_pem.as_deref())?)
            } else {
                None
            },
            ..Config::default()
        };
        let command_timeout = cfg.command_timeout;
        let connect_timeout = cfg.connect_timeout;
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = connect_timeout;
                c.internal_command_timeout = connect_timeout;
                // Retries happen inside the command timeout; during a failover a command is
                // re-sent to the promoted replica after the cluster map is refreshed.
                c.max_command_attempts = 10;
            })
            .with_performance_config(|p| p.default_command_timeout = command_timeout)
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                50,
                u32::try_from(cfg.reconnect_max_delay.as_millis()).unwrap_or(u32::MAX),
                2,
            ))
            .build()
            .map_err(unavailable)?;
        Ok(RedisStore {
            client,
            label: cfg.topology.label(),
            tracking,
        })
    }

    /// Starts the connection task on the current runtime and waits up to `wait` for the first
    /// connection; later reconnections happen in the background.
    pub async fn connect(&self, wait: Duration) {
        if let Some((cache, prefix)) = &self.tracking {
            self.watch_tracking(cache.clone(), prefix.clone());
        }
        let _task = self.client.connect();
        if tokio::time::timeout(wait, self.client.wait_for_connect())
            .await
            .is_err()
        {
            tracing::warn!(
                "redis is not reachable yet; requests needing a session get 503 until it is"
            );
        }
    }

    /// Keeps the cache honest: invalidations of session keys (under `prefix`) evict, errors and
    /// reconnects empty and suspend it until tracking is re-established on the new connections.
    fn watch_tracking(&self, cache: Arc<SessionCache>, prefix: String) {
        let mut invalidations = self.client.invalidation_rx();
        let on_invalidation = cache.clone();
        tokio::spawn(async move {
            loop {
                match invalidations.recv().await {
                    // No key means every key (FLUSHALL, FLUSHDB).
                    Ok(inv) if inv.keys.is_empty() => on_invalidation.flush(),
                    // Tracking also reports the lock and index keys this client read.
                    Ok(inv) => inv
                        .keys
                        .iter()
                        .filter_map(|k| k.as_str())
                        .filter(|k| k.starts_with(prefix.as_str()))
                        .for_each(|k| on_invalidation.invalidate(k)),
                    // Missed invalidations: nothing cached can be trusted any more.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        on_invalidation.flush()
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        on_invalidation.suspend();
                        return;
                    }
                }
            }
        });
        let on_error = cache.clone();
        // The listener tasks live as long as the client; their handles are not needed.
        drop(self.client.on_error(move |_| {
            on_error.suspend();
            async { Ok(()) }
        }));
        let on_unresponsive = cache.clone();
        drop(self.client.on_unresponsive(move |_| {
            on_unresponsive.suspend();
            async { Ok(()) }
        }));
        // fred announces every connection, the first included, as a reconnect, and a Cluster
        // topology change as a change: tracking is set up there and only there, one setup at a
        // time so a stop never lands after a start.
        let retrack = {
            let client = self.client.clone();
            let setup = Arc::new(tokio::sync::Mutex::new(()));
            move || {
                let (client, cache, setup) = (client.clone(), cache.clone(), setup.clone());
                cache.suspend();
                tokio::spawn(async move {
                    let _one_at_a_time = setup.lock().await;
                    start_tracking(&client, &cache).await
                });
            }
        };
        let on_reconnect = retrack.clone();
        drop(self.client.on_reconnect(move |_| {
            on_reconnect();
            async { Ok(()) }
        }));
        drop(self.client.on_cluster_change(move |_| {
            retrack();
            async { Ok(()) }
        }));
    }
}

/// Default-mode tracking on every connection, so on every Cluster node: the server remembers
/// which keys this client read and tells it when one of them changes. (Broadcast mode would
/// need a registration on each node, and fred registers a broadcast on one node of a Cluster
/// only, so changes to keys on the others went unseen.) `NOLOOP`: this process forgets its own
/// writes' cached copies itself. Turning tracking off forgets what the server tracked, so the
/// cache is emptied before the restart and serves again only after it.
async fn start_tracking(client: &Client, cache: &SessionCache) {
    cache.suspend();
    let _ = client.stop_tracking().await;
    match client
        .start_tracking(Vec::<String>::new(), false, false, false, true)
        .await
    {
        Ok(()) => cache.resume(),
        Err(e) => {
            cache.suspend();
            tracing::warn!(error = %e.details(), "redis client tracking unavailable; the session cache is off");
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    /// GET, or GETEX (Redis ≥ 6.2) when the TTL is to be extended: one round trip either way.
    async fn get(&self, key: &str, touch: Option<Duration>) -> Result<Option<Vec<u8>>, StoreError> {
        match touch {
            Some(ttl) => {
                let cmd = CustomCommand::new_static("GETEX", ClusterHash::FirstKey, false);
                let args: Vec<Value> = vec![key.into(), "PX".into(), ttl_millis(ttl).into()];
                self.client.custom(cmd, args).await
            }
            None => self.client.get(key).await,
        }
        .map_err(unavailable)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        self.client
            .set::<(), _, _>(
                key,
                value,
                Some(Expiration::PX(ttl_millis(ttl))),
                None,
                false,
            )
            .await
            .map_err(unavailable)
    }

    async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![expected.into(), value[..].into(), ttl_millis(ttl).into()];
        let replaced: i64 = self
            .client
            .eval(REPLACE_SCRIPT, vec![key], args)
            .await
            .map_err(unavailable)?;
        Ok(replaced == 1)
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.client.getdel(key).await.map_err(unavailable)
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        self.client
            .pexpire::<(), _>(key, ttl_millis(ttl), None)
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let deleted: i64 = self.client.del(key).await.map_err(unavailable)?;
        Ok(deleted > 0)
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let reply: Value = self
            .client
            .set(
                key,
                owner,
                Some(Expiration::PX(ttl_millis(ttl))),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(!reply.is_null())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.client
            .eval::<(), _, _, _>(UNLOCK_SCRIPT, vec![key], vec![owner])
            .await
            .map_err(unavailable)
    }

    async fn index_add(
        &self,
        key: &str,
        member: &str,
        created_at: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let oldest_live = created_at.saturating_sub(ttl.as_secs());
        let args: Vec<Value> = vec![
            member.into(),
            created_at.to_string().into(),
            oldest_live.to_string().into(),
            ttl_millis(ttl).into(),
        ];
        self.client
            .eval::<(), _, _, _>(INDEX_ADD_SCRIPT, vec![key], args)
            .await
            .map_err(unavailable)
    }

    async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.client
            .zrem::<(), _, _>(key, member)
            .await
            .map_err(unavailable)
    }

    async fn index_members(
        &self,
        key: &str,
        created_until: u64,
    ) -> Result<Vec<String>, StoreError> {
        // A number, not a string: fred sends strings as lexicographic bounds.
        let max = i64::try_from(created_until).unwrap_or(i64::MAX);
        self.client
            .zrangebyscore(key, "-inf", max, false, None)
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client.ping::<()>(None).await.map_err(unavailable)
    }

    fn kind(&self) -> &'static str {
        self.label
    }

    fn is_connected(&self) -> bool {
        self.client.is_connected()
    }
}
