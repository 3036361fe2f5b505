//! `session.redis_url` → a typed Redis topology. One URL names the topology by its scheme:
//! `redis://` / `rediss://` (one server), `redis-cluster://h1:p1,h2:p2` (seed nodes of a
//! Cluster), `redis-sentinel://s1:p1,s2:p2/service` (Sentinels and the monitored service).
//! Credentials in the URL are kept as secrets and never echoed in messages.

use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    Standalone {
        host: String,
        port: u16,
        database: Option<u8>,
    },
    Cluster {
        nodes: Vec<(String, u16)>,
    },
    Sentinel {
        sentinels: Vec<(String, u16)>,
        service_name: String,
        database: Option<u8>,
    },
}

impl RedisTopology {
    /// The metrics/logs label for the topology.
    pub fn label(&self) -> &'static str {
        match self {
            RedisTopology::Standalone { .. } => "redis",
            RedisTopology::Cluster { .. } => "redis-cluster",
            RedisTopology::Sentinel { .. } => "redis-sentinel",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ParsedRedisUrl {
    pub topology: RedisTopology,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
}

const DEFAULT_PORT: u16 = 6379;
const DEFAULT_SENTINEL_PORT: u16 = 26379;

pub fn parse_redis_url(url: &str) -> Result<ParsedRedisUrl, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("is not a Redis URL (use redis://, rediss://, redis-cluster://h1:p1,h2:p2 or redis-sentinel://s1:p1,s2:p2/service)")?;
    let (tls, kind) = match scheme {
        "redis" => (false, "standalone"),
        "rediss" => (true, "standalone"),
        "redis-cluster" => (false, "cluster"),
        "rediss-cluster" => (true, "cluster"),
        "redis-sentinel" => (false, "sentinel"),
        "rediss-sentinel" => (true, "sentinel"),
        _ => return Err("has an unknown scheme (use redis://, rediss://, redis-cluster://, rediss-cluster:// or redis-sentinel://)".into()),
    };
    let (authority_and_path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = authority_and_path
        .split_once('/')
        .unwrap_or((authority_and_path, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = parse_userinfo(userinfo);
    let default_port = if kind == "sentinel" {
        DEFAULT_SENTINEL_PORT
    } else {
        DEFAULT_PORT
    };
    let mut nodes = parse_hosts(hosts, default_port)?;
    // fred's own spelling lists extra nodes as `?node=host:port`; accept it too.
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    for (k, v) in &params {
        if k == "node" {
            nodes.extend(parse_hosts(v, default_port)?);
        }
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let topology = match kind {
        "standalone" => {
            if nodes.len() != 1 {
                return Err("names several hosts; use redis-cluster:// for a Cluster or redis-sentinel:// for Sentinel".into());
            }
            let (host, port) = nodes.remove(0);
            RedisTopology::Standalone {
                host,
                port,
                database: parse_db(segments.first().copied())?,
            }
        }
        "cluster" => {
            if !segments.is_empty() {
                return Err("must not have a path (a Redis Cluster has only database 0)".into());
            }
            RedisTopology::Cluster { nodes }
        }
        _ => {
            let service = segments
                .first()
                .map(|s| s.to_string())
                .or_else(|| params.iter().find(|(k, _)| k == "sentinelServiceName").map(|(_, v)| v.clone()))
                .ok_or("needs the monitored service name as its path (e.g. redis-sentinel://s1:26379,s2:26379/mymaster)")?;
            RedisTopology::Sentinel {
                sentinels: nodes,
                service_name: service,
                database: parse_db(segments.get(1).copied())?,
            }
        }
    };
    Ok(ParsedRedisUrl {
        topology,
        tls,
        username,
        password,
    })
}

fn parse_userinfo(userinfo: Option<&str>) -> (Option<String>, Option<Secret<String>>) {
    let decode = crate::percent::decode_str;
    match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (
                Some(decode(user)).filter(|u| !u.is_empty()),
                Some(Secret::new(decode(pass))).filter(|p| !p.expose().is_empty()),
            ),
            None => (Some(decode(u)).filter(|u| !u.is_empty()), None),
        },
    }
}

fn parse_hosts(list: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err("has an empty host in its host list".into());
        }
        let (host, port) = match item.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or("has an unclosed [IPv6] host")?;
                (host.to_string(), after.strip_prefix(':'))
            }
            None => match item.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (item.to_string(), None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("has an invalid port {p:?}"))?,
            None => default_port,
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(format!("has an invalid host {host:?}"));
        }
        out.push((host, port));
    }
    Ok(out)
}

fn parse_db(segment: Option<&str>) -> Result<Option<u8>, String> {
    segment
        .map(|s| {
            s.parse::<u8>()
                .map_err(|_| format!("has an invalid database number {s:?}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_names_its_topology() {
        let p = parse_redis_url("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(
            p.topology,
            RedisTopology::Standalone {
                host: "127.0.0.1".into(),
                port: 6380,
                database: Some(2)
            }
        );
        assert!(!p.tls);
        let p = parse_redis_url("rediss-cluster://user:p%40ss@h1:7000,h2:7001?node=h3").unwrap();
        assert_eq!(
            p.topology,
            RedisTopology::Cluster {
                nodes: vec![
                    ("h1".into(), 7000),
                    ("h2".into(), 7001),
                    ("h3".into(), 6379)
                ]
            }
        );
        assert!(p.tls);
        assert_eq!(p.username.as_deref(), Some("user"));
        assert_eq!(
            p.password.as_ref().map(|s| s.expose().as_str()),
            Some("p@ss")
        );
        let p = parse_redis_url("redis-sentinel://:pw@s1,s2:26380,[::1]:26381/mymaster").unwrap();
        assert_eq!(
            p.topology,
            RedisTopology::Sentinel {
                sentinels: vec![
                    ("s1".into(), 26379),
                    ("s2".into(), 26380),
                    ("::1".into(), 26381)
                ],
                service_name: "mymaster".into(),
                database: None,
            }
        );
        assert_eq!(p.username, None);
        let p = parse_redis_url("redis-sentinel://s1:26379?sentinelServiceName=svc").unwrap();
        assert!(
            matches!(p.topology, RedisTopology::Sentinel { ref service_name, .. } if service_name == "svc")
        );
    }

    #[test]
    fn malformed_urls_are_explained_without_their_password() {
        for (url, expected) in [
            ("http://h", "has an unknown scheme"),
            ("redis://h1,h2", "names several hosts"),
            (
                "redis-sentinel://s1:26379",
                "needs the monitored service name",
            ),
            ("redis://h:port", "has an invalid port \"port\""),
            ("redis-cluster://h1:7000/1", "must not have a path"),
            (
                "redis://:hunter2@h:1/x",
                "has an invalid database number \"x\"",
            ),
            ("redis://h1,,h2", "has an empty host"),
        ] {
            let err = parse_redis_url(url).unwrap_err();
            assert!(err.starts_with(expected), "{url}: {err}");
            assert!(!err.contains("hunter2"));
        }
    }
}
