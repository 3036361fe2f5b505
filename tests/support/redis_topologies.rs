//! Redis Cluster (3 masters + 3 replicas) and Redis Sentinel (master + replica + 3 sentinels)
//! fixtures: real `redis-server` / `redis-sentinel` child processes on 127.0.0.1, each in a
//! fresh temp dir, killed (SIGKILL) and reaped when the handle drops, also on unwind.
//!
//! Ports come from `support::free_port` (below the kernel's ephemeral range, so an outgoing
//! connection can never grab a fixture's port while a node is down); a node that fails to start
//! is retried on new ports. Cluster bus ports are chosen the same way and set
//! with `--cluster-port`, so the `port + 10000` rule never applies. Every wait polls with a
//! deadline and panics with the last state it saw.
//!
//! Everything here is blocking (like `RedisServer`); from async tests call it directly on a
//! multi-thread runtime or wrap the slow calls (`start`, `wait_failover`) in `spawn_blocking`.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::redis::{read_resp, Resp};

/// Deadline for every topology-level wait (cluster up, failover, sentinel discovery).
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for one process to answer PING after spawn.
const BOOT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Low-level helpers: one-shot RESP commands, INFO parsing, polling, ports, processes.
// ---------------------------------------------------------------------------------------------

/// Sends `cmds` pipelined on one fresh connection to 127.0.0.1:`port`, returns one reply each.
pub fn commands_at(port: u16, cmds: &[&[&str]]) -> io::Result<Vec<Resp>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut out = Vec::new();
    for args in cmds {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in *args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    stream.write_all(&out)?;
    let mut reader = BufReader::new(stream);
    cmds.iter().map(|_| read_resp(&mut reader)).collect()
}

/// One command on one fresh connection to 127.0.0.1:`port`.
pub fn command_at(port: u16, args: &[&str]) -> io::Result<Resp> {
    Ok(commands_at(port, &[args])?.remove(0))
}

fn bulk_string(r: &Resp) -> Option<String> {
    match r {
        Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Resp::Simple(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(r: &Resp) -> Option<i64> {
    match r {
        Resp::Int(i) => Some(*i),
        other => bulk_string(other)?.parse().ok(),
    }
}

fn string_list(r: Resp) -> Result<Vec<String>, String> {
    match r {
        Resp::Array(items) => Ok(items.iter().filter_map(bulk_string).collect()),
        other => Err(format!("expected an array, got {other:?}")),
    }
}

/// A flat `[k1, v1, k2, v2, …]` array (SENTINEL replies) as a map.
fn flat_map(r: &Resp) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Resp::Array(items) = r {
        for pair in items.chunks(2) {
            if let [k, v] = pair {
                if let (Some(k), Some(v)) = (bulk_string(k), bulk_string(v)) {
                    map.insert(k, v);
                }
            }
        }
    }
    map
}

/// `INFO <section>` as a key → value map.
fn info(port: u16, section: &str) -> Result<HashMap<String, String>, String> {
    info_like(port, &["INFO", section])
}

/// `CLUSTER INFO` (where `cluster_state` lives) as a key → value map.
fn cluster_info(port: u16) -> Result<HashMap<String, String>, String> {
    info_like(port, &["CLUSTER", "INFO"])
}

fn info_like(port: u16, cmd: &[&str]) -> Result<HashMap<String, String>, String> {
    let reply = command_at(port, cmd).map_err(|e| format!(":{port} {cmd:?}: {e}"))?;
    let text = bulk_string(&reply).ok_or_else(|| format!(":{port} {cmd:?} answered {reply:?}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn ping(port: u16) -> bool {
    matches!(command_at(port, &["PING"]), Ok(Resp::Simple(s)) if s == "PONG")
}

/// Key used by `replication_barrier`; set and deleted in one MULTI, so never visible.
const PROBE_PREFIX: &str = "__fixture_probe__";

/// A replication barrier on the master at `port`: `MULTI SET probe DEL probe EXEC` then
/// `WAIT 1 timeout_ms` *on the same connection*, so it waits until a replica has acknowledged
/// every write the master took before it (from any client). Returns the replicas that acked.
///
/// Why not a bare `WAIT`: WAIT counts replicas past the offset of *this connection's* last
/// write, so on a fresh connection it returns at once. And why at all: right after a diskless
/// full sync the master shows the replica `state=online` / `master_link_status:up` but buffers
/// the stream until the replica's next REPLCONF ACK (sent once a second); a kill in that
/// window loses writes that looked replicated.
fn replication_barrier(port: u16, probe_key: &str, timeout_ms: u64) -> Result<i64, String> {
    let timeout = timeout_ms.to_string();
    let replies = commands_at(
        port,
        &[
            &["MULTI"],
            &["SET", probe_key, "1"],
            &["DEL", probe_key],
            &["EXEC"],
            &["WAIT", "1", &timeout],
        ],
    )
    .map_err(|e| format!(":{port} barrier: {e}"))?;
    match (&replies[3], &replies[4]) {
        (Resp::Array(_), Resp::Int(n)) => Ok(*n),
        _ => Err(format!(":{port} barrier answered {replies:?}")),
    }
}

/// What `ROLE` says about a data node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    /// A replica of `master_port`; `link_up` is `master_link_status:up`.
    Replica {
        master_port: u16,
        link_up: bool,
    },
    /// Not running (killed and not restarted) or not answering.
    Down,
}

fn role(port: u16) -> Result<Role, String> {
    let reply = command_at(port, &["ROLE"]).map_err(|e| format!(":{port} ROLE: {e}"))?;
    let Resp::Array(items) = &reply else {
        return Err(format!(":{port} ROLE answered {reply:?}"));
    };
    match items.first().and_then(bulk_string).as_deref() {
        Some("master") => Ok(Role::Master),
        Some("slave") => {
            let master_port = items
                .get(2)
                .and_then(int)
                .ok_or_else(|| format!(":{port} ROLE answered {reply:?}"))?
                as u16;
            let link_up = info(port, "replication")?
                .get("master_link_status")
                .is_some_and(|s| s == "up");
            Ok(Role::Replica {
                master_port,
                link_up,
            })
        }
        _ => Err(format!(":{port} ROLE answered {reply:?}")),
    }
}

/// Polls `check` every 20 ms until it returns `Ok`; panics after `deadline` with the last `Err`.
fn poll<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() >= deadline {
                    panic!("timed out after {deadline:?} waiting for {what}; last state: {last}");
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A child process listening on `port` (plus `bus_port` for cluster nodes), run in `dir`.
struct Proc {
    port: u16,
    bus_port: Option<u16>,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL (std's `Child::kill` on Unix) and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns `program args…` and waits until it answers PING on `port`. On failure the child is
/// reaped and the error carries the tail of its log.
fn spawn_and_ping(program: &str, args: &[String], port: u16, log: &Path) -> Result<Child, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install redis-server, redis-tools, redis-sentinel")
        });
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{program} on :{port} exited ({status}):\n{}",
                log_tail(log)
            ));
        }
        if ping(port) {
            return Ok(child);
        }
        if start.elapsed() > BOOT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} on :{port} did not answer PING within {BOOT:?}:\n{}",
                log_tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn redis_server_args(p: &Proc, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &p.port.to_string(),
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--dir".into());
    args.push(p.dir.display().to_string());
    args.push("--logfile".into());
    args.push(p.log.display().to_string());
    args.extend(extra.iter().cloned());
    args
}

/// A new redis-server in a fresh dir under `root`, retried on new ports if it cannot start
/// (another process took the port between the check and the bind).
fn spawn_fresh_server(
    root: &Path,
    name: &str,
    with_bus: bool,
    extra: impl Fn(&Proc) -> Vec<String>,
) -> Proc {
    let mut errors = Vec::new();
    for attempt in 0..5 {
        let dir = root.join(format!("{name}.{attempt}"));
        fs::create_dir_all(&dir).expect("node dir");
        let mut p = Proc {
            port: free_port(),
            bus_port: with_bus.then(free_port),
            log: dir.join("redis.log"),
            dir,
            child: None,
        };
        match spawn_and_ping(
            "redis-server",
            &redis_server_args(&p, &extra(&p)),
            p.port,
            &p.log,
        ) {
            Ok(child) => {
                p.child = Some(child);
                return p;
            }
            Err(e) => errors.push(e),
        }
    }
    panic!("{name} never started:\n{}", errors.join("\n---\n"));
}

/// Runs a short-lived command (redis-cli) with a deadline; output goes to a file in `dir`.
fn run_tool(dir: &Path, name: &str, program: &str, args: &[String]) -> String {
    let out_path = dir.join(format!("{name}.out"));
    let out = fs::File::create(&out_path).expect("tool output file");
    let err = out.try_clone().expect("tool output file");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let status = poll(&format!("{program} {name}"), DEADLINE, || {
        child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_string())
    });
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "{program} {args:?} failed ({status}):\n{output}"
    );
    output
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `cluster-node-timeout`; failover takes about twice this.
    pub node_timeout_ms: u64,
    /// `cluster-require-full-coverage`. With `true` (Redis's default) the *whole* cluster
    /// answers CLUSTERDOWN for ~1 s between FAIL detection and promotion; with `false` only
    /// the dead master's slots do.
    pub require_full_coverage: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            node_timeout_ms: 2000,
            require_full_coverage: true,
        }
    }
}

/// One node as seen now.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub port: u16,
    pub bus_port: u16,
    /// `None` while the node is killed.
    pub pid: Option<u32>,
    pub role: Role,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodesLine {
    port: u16,
    flags: Vec<String>,
    has_slots: bool,
}

fn cluster_nodes(port: u16) -> Result<Vec<NodesLine>, String> {
    let reply = command_at(port, &["CLUSTER", "NODES"])
        .map_err(|e| format!(":{port} CLUSTER NODES: {e}"))?;
    let text = bulk_string(&reply).ok_or_else(|| format!(":{port} CLUSTER NODES: {reply:?}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…
            let node_port = f
                .get(1)
                .and_then(|a| a.split('@').next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!(":{port} bad CLUSTER NODES line {l:?}"))?;
            Ok(NodesLine {
                port: node_port,
                flags: f
                    .get(2)
                    .map(|s| s.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
                has_slots: f.len() > 8,
            })
        })
        .collect()
}

/// `CLUSTER SLOTS` as (first slot, last slot, master port), sorted by first slot.
fn cluster_slots(port: u16) -> Result<Vec<(u16, u16, u16)>, String> {
    let reply = command_at(port, &["CLUSTER", "SLOTS"])
        .map_err(|e| format!(":{port} CLUSTER SLOTS: {e}"))?;
    let Resp::Array(ranges) = &reply else {
        return Err(format!(":{port} CLUSTER SLOTS answered {reply:?}"));
    };
    let mut out = Vec::new();
    for range in ranges {
        let Resp::Array(r) = range else {
            return Err(format!(":{port} CLUSTER SLOTS range {range:?}"));
        };
        let master_port = match r.get(2) {
            Some(Resp::Array(m)) => m.get(1).and_then(int),
            _ => None,
        };
        match (r.first().and_then(int), r.get(1).and_then(int), master_port) {
            (Some(a), Some(b), Some(m)) => out.push((a as u16, b as u16, m as u16)),
            _ => return Err(format!(":{port} CLUSTER SLOTS range {range:?}")),
        }
    }
    out.sort();
    Ok(out)
}

fn owner(slots: &[(u16, u16, u16)], slot: u16) -> Option<u16> {
    slots
        .iter()
        .find(|(a, b, _)| (*a..=*b).contains(&slot))
        .map(|(_, _, m)| *m)
}

pub struct RedisCluster {
    nodes: Vec<Proc>,
    opts: ClusterOptions,
    /// Slot ranges each killed master owned when it was killed (for `wait_failover`).
    orphaned: HashMap<u16, Vec<(u16, u16)>>,
    root: tempfile::TempDir,
}

impl RedisCluster {
    /// 3 masters + 3 replicas, `cluster-node-timeout 2000`, full coverage required.
    pub fn start() -> RedisCluster {
        Self::start_with(ClusterOptions::default())
    }

    pub fn start_with(opts: ClusterOptions) -> RedisCluster {
        // Built first and filled in place, so a panic half-way kills what already runs.
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            opts,
            orphaned: HashMap::new(),
            root: tempfile::tempdir().expect("temp dir"),
        };
        for i in 0..6 {
            let node = spawn_fresh_server(cluster.root.path(), &format!("node{i}"), true, |p| {
                cluster.cluster_args(p)
            });
            cluster.nodes.push(node);
        }
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        run_tool(cluster.root.path(), "cluster-create", "redis-cli", &args);
        poll(
            "the cluster to be up with 3 synced replicas",
            DEADLINE,
            || {
                cluster.check_healthy()?;
                let roles = cluster.nodes();
                let masters = roles.iter().filter(|n| n.role == Role::Master).count();
                if masters != 3 {
                    return Err(format!("{masters} masters: {roles:?}"));
                }
                cluster.check_masters_see_replicas()?;
                cluster.try_sync_replicas(1000)
            },
        );
        cluster
    }

    fn cluster_args(&self, p: &Proc) -> Vec<String> {
        vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            "nodes.conf".into(),
            "--cluster-port".into(),
            p.bus_port
                .expect("cluster nodes have a bus port")
                .to_string(),
            "--cluster-node-timeout".into(),
            self.opts.node_timeout_ms.to_string(),
            "--cluster-require-full-coverage".into(),
            if self.opts.require_full_coverage {
                "yes"
            } else {
                "no"
            }
            .into(),
        ]
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.alive())
            .map(|n| n.port)
            .collect()
    }

    fn node_mut(&mut self, port: u16) -> &mut Proc {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no cluster node on :{port}"))
    }

    /// Every running node: `cluster_state:ok`, knows all 6 nodes, flags no running node as
    /// failing, and (replicas) `master_link_status:up`.
    pub fn check_healthy(&self) -> Result<(), String> {
        let live = self.live_ports();
        for &port in &live {
            let state = cluster_info(port)?;
            if state.get("cluster_state").map(String::as_str) != Some("ok") {
                return Err(format!(
                    ":{port} cluster_state {:?}",
                    state.get("cluster_state")
                ));
            }
            let view = cluster_nodes(port)?;
            if view.len() != self.nodes.len() {
                return Err(format!(":{port} knows {} nodes", view.len()));
            }
            for line in &view {
                let bad = ["fail", "fail?", "handshake", "noaddr"];
                if live.contains(&line.port) && line.flags.iter().any(|f| bad.contains(&f.as_str()))
                {
                    return Err(format!(":{port} sees :{} as {:?}", line.port, line.flags));
                }
            }
            if let Role::Replica {
                link_up: false,
                master_port,
            } = role(port)?
            {
                return Err(format!(":{port} replica of :{master_port}, link down"));
            }
        }
        Ok(())
    }

    /// Every running master with slots has at least one online replica (so `WAIT 1` works).
    fn check_masters_see_replicas(&self) -> Result<(), String> {
        for port in self.master_ports() {
            let repl = info(port, "replication")?;
            let online = repl
                .iter()
                .filter(|(k, v)| k.starts_with("slave") && v.contains("state=online"))
                .count();
            if online == 0 {
                return Err(format!("master :{port} has no online replica: {repl:?}"));
            }
        }
        Ok(())
    }

    fn any_live_port(&self) -> u16 {
        *self
            .live_ports()
            .first()
            .expect("at least one cluster node is running")
    }

    /// `CLUSTER SLOTS` from the first running node that answers.
    fn slots(&self) -> Vec<(u16, u16, u16)> {
        let mut last = String::new();
        for port in self.live_ports() {
            match cluster_slots(port) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("no running node answers CLUSTER SLOTS: {last}");
    }

    /// Ports of the masters that own slots now, ordered by their first slot.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for (_, _, m) in self.slots() {
            if !ports.contains(&m) {
                ports.push(m);
            }
        }
        ports
    }

    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`: the masters that own slots now
    /// (the portcullis seed-list format).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .master_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// Like `url` but with all six nodes as seeds.
    pub fn url_all_nodes(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// Every node (running or killed) with its pid and current role.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.nodes
            .iter()
            .map(|n| ClusterNode {
                port: n.port,
                bus_port: n.bus_port.unwrap_or_default(),
                pid: n.pid(),
                role: if n.alive() {
                    role(n.port).unwrap_or(Role::Down)
                } else {
                    Role::Down
                },
            })
            .collect()
    }

    /// Running replicas whose master is `master_port`.
    pub fn replicas_of(&self, master_port: u16) -> Vec<u16> {
        self.nodes()
            .into_iter()
            .filter(|n| matches!(n.role, Role::Replica { master_port: m, .. } if m == master_port))
            .map(|n| n.port)
            .collect()
    }

    pub fn keyslot(&self, key: &str) -> u16 {
        match self.command_on(self.any_live_port(), &["CLUSTER", "KEYSLOT", key]) {
            Resp::Int(slot) => slot as u16,
            other => panic!("CLUSTER KEYSLOT answered {other:?}"),
        }
    }

    /// The port of the master that owns `key`'s slot now.
    pub fn master_for_key(&self, key: &str) -> u16 {
        let slot = self.keyslot(key);
        owner(&self.slots(), slot).unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// A raw command on one node (no redirection).
    pub fn command_on(&self, port: u16, args: &[&str]) -> Resp {
        command_at(port, args).unwrap_or_else(|e| panic!(":{port} {args:?}: {e}"))
    }

    /// A cluster-aware command: sent to a running node, following up to 5 MOVED/ASK
    /// redirections. CLUSTERDOWN/TRYAGAIN come back as `Resp::Error`.
    pub fn try_command(&self, args: &[&str]) -> io::Result<Resp> {
        let mut port = self.any_live_port();
        let mut asking = false;
        for _ in 0..6 {
            let reply = if asking {
                commands_at(port, &[&["ASKING"], args])?
                    .pop()
                    .expect("two replies")
            } else {
                command_at(port, args)?
            };
            let redirect = match &reply {
                Resp::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => e.clone(),
                _ => return Ok(reply),
            };
            asking = redirect.starts_with("ASK ");
            port = redirect
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad redirect {redirect:?}")))?;
        }
        Err(io::Error::other(format!(
            "too many redirections for {args:?}"
        )))
    }

    pub fn command(&self, args: &[&str]) -> Resp {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("cluster {args:?}: {e}"))
    }

    /// A probe key (hash-tagged) whose slot the master on `port` owns now.
    fn probe_key_for(&self, port: u16) -> Result<String, String> {
        let slots = self.slots();
        let entry = self.any_live_port();
        for i in 0..10_000 {
            let key = format!("{PROBE_PREFIX}{{{i}}}");
            let slot = match command_at(entry, &["CLUSTER", "KEYSLOT", &key]) {
                Ok(Resp::Int(slot)) => slot as u16,
                other => return Err(format!("CLUSTER KEYSLOT answered {other:?}")),
            };
            if owner(&slots, slot) == Some(port) {
                return Ok(key);
            }
        }
        Err(format!("no probe key for :{port}"))
    }

    /// Replication barrier on every slot-owning master (see `replication_barrier`): returns
    /// once each has a replica that acknowledged every write taken so far, by any client.
    pub fn try_sync_replicas(&self, timeout_ms: u64) -> Result<(), String> {
        for port in self.master_ports() {
            let key = self.probe_key_for(port)?;
            let acked = replication_barrier(port, &key, timeout_ms)?;
            if acked < 1 {
                return Err(format!(
                    "no replica of :{port} acknowledged within {timeout_ms} ms"
                ));
            }
        }
        Ok(())
    }

    /// Call after writing data that must survive `kill_master`: panics unless every master's
    /// replica has acknowledged all writes so far (by any client) within 5 s.
    pub fn wait_replicas_synced(&self) {
        self.try_sync_replicas(5000)
            .unwrap_or_else(|e| panic!("replicas not synced: {e}"));
    }

    /// SIGKILL the master on `port` (a crash: no shutdown, no failover handshake).
    pub fn kill_master(&mut self, port: u16) {
        let role = role(port).unwrap_or(Role::Down);
        assert_eq!(role, Role::Master, ":{port} is not a running master");
        let ranges: Vec<(u16, u16)> = self
            .slots()
            .into_iter()
            .filter(|(_, _, m)| *m == port)
            .map(|(a, b, _)| (a, b))
            .collect();
        assert!(!ranges.is_empty(), "master :{port} owns no slots");
        self.orphaned.insert(port, ranges);
        self.node_mut(port).kill();
    }

    /// SIGKILL any node (replica or master) without the master checks of `kill_master`.
    pub fn kill_node(&mut self, port: u16) {
        self.node_mut(port).kill();
    }

    /// Waits until one port owns every slot the killed master `old_master_port` owned, in the
    /// view of every running node, answers ROLE master, and every running node says
    /// `cluster_state:ok`. Returns the promoted port.
    pub fn wait_failover(&self, old_master_port: u16) -> u16 {
        let ranges = self
            .orphaned
            .get(&old_master_port)
            .unwrap_or_else(|| panic!(":{old_master_port} was not killed with kill_master"))
            .clone();
        poll(
            &format!("a replica of :{old_master_port} to take over"),
            DEADLINE,
            || {
                let mut new = None;
                for port in self.live_ports() {
                    let state = cluster_info(port)?;
                    if state.get("cluster_state").map(String::as_str) != Some("ok") {
                        return Err(format!(
                            ":{port} cluster_state {:?}",
                            state.get("cluster_state")
                        ));
                    }
                    let slots = cluster_slots(port)?;
                    for &(a, b) in &ranges {
                        for slot in [a, b] {
                            let o = owner(&slots, slot);
                            if o.is_none()
                                || o == Some(old_master_port)
                                || (new.is_some() && o != new)
                            {
                                return Err(format!(":{port} sees slot {slot} at {o:?}"));
                            }
                            new = o;
                        }
                    }
                }
                let new = new.ok_or("no running node")?;
                match role(new)? {
                    Role::Master => Ok(new),
                    other => Err(format!("new owner :{new} says {other:?}")),
                }
            },
        )
    }

    /// Starts a killed node again on the same ports and dir (its nodes.conf keeps its identity).
    /// A master whose slots moved rejoins as a replica of the promoted node; the call returns
    /// once it has that role with a synced link and every running node is healthy again.
    pub fn restart_node(&mut self, port: u16) {
        // A node the cluster still lists as a slot owner comes back as that master.
        let expect_master = {
            let observer = self.any_live_port();
            cluster_nodes(observer)
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .any(|l| l.port == port && l.has_slots)
        };
        let extra = self.cluster_args(self.nodes.iter().find(|n| n.port == port).expect("node"));
        let node = self.node_mut(port);
        assert!(!node.alive(), ":{port} is still running");
        let args = redis_server_args(node, &extra);
        let log = node.log.clone();
        let child = poll(&format!("node :{port} to restart"), BOOT, || {
            spawn_and_ping("redis-server", &args, port, &log)
        });
        node.child = Some(child);
        self.orphaned.remove(&port);
        poll(&format!("restarted :{port} to rejoin"), DEADLINE, || {
            match role(port)? {
                Role::Master if expect_master => {}
                Role::Replica { link_up: true, .. } if !expect_master => {}
                other => return Err(format!(":{port} is {other:?}")),
            }
            self.check_healthy()?;
            if expect_master {
                Ok(())
            } else {
                self.try_sync_replicas(1000)
            }
        });
    }

    /// Keys matching `pattern` on every slot-owning master (`KEYS`), sorted.
    pub fn keys_matching(&self, pattern: &str) -> Vec<String> {
        let mut keys = BTreeSet::new();
        for port in self.master_ports() {
            let reply = self.command_on(port, &["KEYS", pattern]);
            keys.extend(string_list(reply).unwrap_or_else(|e| panic!(":{port} KEYS: {e}")));
        }
        keys.into_iter().collect()
    }

    /// Every key and its raw value bytes (strings only; other types give empty bytes).
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        self.keys_matching("*")
            .into_iter()
            .map(|k| {
                let v = match self.command(&["GET", &k]) {
                    Resp::Bulk(Some(v)) => v,
                    _ => Vec::new(),
                };
                (k, v)
            })
            .collect()
    }

    /// Where the node logs and nodes.conf files live (kept until drop).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel
// ---------------------------------------------------------------------------------------------

pub const SENTINEL_SERVICE: &str = "mymaster";
const DOWN_AFTER_MS: u64 = 2000;
const FAILOVER_TIMEOUT_MS: u64 = 10000;

/// A data node (master or replica) of the sentinel set.
#[derive(Debug, Clone)]
pub struct SentinelDataNode {
    pub port: u16,
    pub pid: Option<u32>,
    pub role: Role,
}

pub struct RedisSentinel {
    /// The initial master first, then the initial replica.
    data: Vec<Proc>,
    sentinels: Vec<Proc>,
    root: tempfile::TempDir,
}

impl RedisSentinel {
    /// A master, one replica (`--replicaof`), three sentinels (quorum 2,
    /// down-after-milliseconds 2000, failover-timeout 10000), all discovered by each other.
    pub fn start() -> RedisSentinel {
        let mut set = RedisSentinel {
            data: Vec::new(),
            sentinels: Vec::new(),
            root: tempfile::tempdir().expect("temp dir"),
        };
        let master = spawn_fresh_server(set.root.path(), "master", false, |_| Vec::new());
        let master_port = master.port;
        set.data.push(master);
        let replica = spawn_fresh_server(set.root.path(), "replica", false, |_| {
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ]
        });
        let replica_port = replica.port;
        set.data.push(replica);
        poll("the replica to sync", DEADLINE, || {
            match role(replica_port)? {
                Role::Replica { link_up: true, .. } => {}
                other => return Err(format!(":{replica_port} is {other:?}")),
            }
            match replication_barrier(master_port, PROBE_PREFIX, 1000)? {
                n if n >= 1 => Ok(()),
                _ => Err(format!("replica :{replica_port} did not acknowledge")),
            }
        });

        for i in 0..3 {
            let s = set.spawn_sentinel(i, master_port);
            set.sentinels.push(s);
        }
        poll(
            "the sentinels to discover the replica and each other",
            DEADLINE,
            || {
                for s in &set.sentinels {
                    let addr = sentinel_master_addr(s.port)?;
                    if addr != master_port {
                        return Err(format!("sentinel :{} says master :{addr}", s.port));
                    }
                    let replicas = sentinel_list(s.port, "replicas")?;
                    let healthy = replicas.iter().any(|r| {
                        r.get("port").map(String::as_str) == Some(&replica_port.to_string())
                            && r.get("flags")
                                .is_some_and(|f| !f.contains("down") && !f.contains("disconnected"))
                            && r.get("master-link-status").map(String::as_str) == Some("ok")
                    });
                    if !healthy {
                        return Err(format!("sentinel :{} replicas {replicas:?}", s.port));
                    }
                    let others = sentinel_list(s.port, "sentinels")?;
                    if others.len() != 2 {
                        return Err(format!(
                            "sentinel :{} knows {} sentinels",
                            s.port,
                            others.len()
                        ));
                    }
                }
                Ok(())
            },
        );
        set
    }

    fn spawn_sentinel(&self, i: usize, master_port: u16) -> Proc {
        let mut errors = Vec::new();
        for attempt in 0..5 {
            let dir = self.root.path().join(format!("sentinel{i}.{attempt}"));
            fs::create_dir_all(&dir).expect("sentinel dir");
            let mut p = Proc {
                port: free_port(),
                bus_port: None,
                log: dir.join("sentinel.log"),
                dir,
                child: None,
            };
            // Writable: sentinel rewrites its config file with what it learns.
            let conf = p.dir.join("sentinel.conf");
            fs::write(
                &conf,
                format!(
                    "port {port}\n\
                     bind 127.0.0.1\n\
                     daemonize no\n\
                     dir {dir}\n\
                     logfile {log}\n\
                     sentinel resolve-hostnames no\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} {FAILOVER_TIMEOUT_MS}\n",
                    port = p.port,
                    dir = p.dir.display(),
                    log = p.log.display(),
                ),
            )
            .expect("sentinel.conf");
            match spawn_and_ping(
                "redis-sentinel",
                &[conf.display().to_string()],
                p.port,
                &p.log,
            ) {
                Ok(child) => {
                    p.child = Some(child);
                    return p;
                }
                Err(e) => errors.push(e),
            }
        }
        panic!("sentinel {i} never started:\n{}", errors.join("\n---\n"));
    }

    /// `redis-sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "redis-sentinel://{}/{SENTINEL_SERVICE}",
            sentinels.join(",")
        )
    }

    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The master and the replica (initial roles), with pid and current role.
    pub fn nodes(&self) -> Vec<SentinelDataNode> {
        self.data
            .iter()
            .map(|n| SentinelDataNode {
                port: n.port,
                pid: n.pid(),
                role: if n.alive() {
                    role(n.port).unwrap_or(Role::Down)
                } else {
                    Role::Down
                },
            })
            .collect()
    }

    /// The master according to the first sentinel that answers
    /// (`SENTINEL get-master-addr-by-name mymaster`).
    pub fn master_port(&self) -> u16 {
        let mut last = String::new();
        for s in self.sentinels.iter().filter(|s| s.alive()) {
            match sentinel_master_addr(s.port) {
                Ok(port) => return port,
                Err(e) => last = e,
            }
        }
        panic!("no sentinel answers: {last}");
    }

    /// SIGKILL the current master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let old = self.master_port();
        self.data
            .iter_mut()
            .find(|n| n.port == old)
            .unwrap_or_else(|| panic!("the master :{old} is not one of ours"))
            .kill();
        old
    }

    /// Waits until every sentinel names the same new master (not `old`), that node answers
    /// ROLE master, and no sentinel still has a failover in progress. Returns the new port.
    pub fn wait_failover(&self, old: u16) -> u16 {
        poll(
            &format!("sentinels to fail over from :{old}"),
            DEADLINE,
            || {
                let mut new = None;
                for s in self.sentinels.iter().filter(|s| s.alive()) {
                    let addr = sentinel_master_addr(s.port)?;
                    if addr == old || (new.is_some() && new != Some(addr)) {
                        return Err(format!("sentinel :{} says master :{addr}", s.port));
                    }
                    new = Some(addr);
                    let reply = command_at(s.port, &["SENTINEL", "master", SENTINEL_SERVICE])
                        .map_err(|e| e.to_string())?;
                    let flags = flat_map(&reply).remove("flags").unwrap_or_default();
                    if flags != "master" {
                        return Err(format!("sentinel :{} master flags {flags:?}", s.port));
                    }
                }
                let new = new.ok_or("no sentinel running")?;
                match role(new)? {
                    Role::Master => Ok(new),
                    other => Err(format!("new master :{new} says {other:?}")),
                }
            },
        )
    }

    /// Starts a killed data node again as a replica of the current master (it holds no data of
    /// its own: no persistence) and waits until its link is up.
    pub fn restart_node(&mut self, port: u16) {
        let master = self.master_port();
        let node = self
            .data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on :{port}"));
        assert!(!node.alive(), ":{port} is still running");
        let args = redis_server_args(
            node,
            &["--replicaof".into(), "127.0.0.1".into(), master.to_string()],
        );
        let log = node.log.clone();
        let child = poll(&format!("node :{port} to restart"), BOOT, || {
            spawn_and_ping("redis-server", &args, port, &log)
        });
        node.child = Some(child);
        poll(
            &format!(":{port} to sync from :{master}"),
            DEADLINE,
            || match role(port)? {
                Role::Replica {
                    link_up: true,
                    master_port,
                } if master_port == master => {
                    match replication_barrier(master, PROBE_PREFIX, 1000)? {
                        n if n >= 1 => Ok(()),
                        _ => Err(format!(":{port} did not acknowledge")),
                    }
                }
                other => Err(format!(":{port} is {other:?}")),
            },
        );
    }

    /// Replication barrier on the current master (see `replication_barrier`): panics unless a
    /// replica acknowledged every write taken so far (by any client) within 5 s.
    pub fn wait_replica_synced(&self) {
        let master = self.master_port();
        match replication_barrier(master, PROBE_PREFIX, 5000) {
            Ok(n) if n >= 1 => {}
            other => panic!("no replica of :{master} acknowledged: {other:?}"),
        }
    }

    /// A raw command on one node or sentinel.
    pub fn command_on(&self, port: u16, args: &[&str]) -> Resp {
        command_at(port, args).unwrap_or_else(|e| panic!(":{port} {args:?}: {e}"))
    }

    /// A command on the current master.
    pub fn command(&self, args: &[&str]) -> Resp {
        self.command_on(self.master_port(), args)
    }

    /// `KEYS pattern` on the current master, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys =
            string_list(self.command(&["KEYS", pattern])).unwrap_or_else(|e| panic!("KEYS: {e}"));
        keys.sort();
        keys
    }

    /// Every key on the current master and its raw value bytes (strings only).
    pub fn dump(&self) -> Vec<(String, Vec<u8>)> {
        self.keys("*")
            .into_iter()
            .map(|k| {
                let v = match self.command(&["GET", &k]) {
                    Resp::Bulk(Some(v)) => v,
                    _ => Vec::new(),
                };
                (k, v)
            })
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        // Sentinels first, so none reconfigures a data node while they go down.
        for s in &mut self.sentinels {
            s.kill();
        }
        for n in &mut self.data {
            n.kill();
        }
    }
}

fn sentinel_master_addr(sentinel: u16) -> Result<u16, String> {
    let reply = command_at(
        sentinel,
        &["SENTINEL", "get-master-addr-by-name", SENTINEL_SERVICE],
    )
    .map_err(|e| format!("sentinel :{sentinel}: {e}"))?;
    match &reply {
        Resp::Array(a) if a.len() == 2 => int(&a[1])
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("sentinel :{sentinel} answered {reply:?}")),
        _ => Err(format!("sentinel :{sentinel} answered {reply:?}")),
    }
}

/// `SENTINEL replicas|sentinels mymaster` as one map per entry.
fn sentinel_list(sentinel: u16, what: &str) -> Result<Vec<HashMap<String, String>>, String> {
    let reply = command_at(sentinel, &["SENTINEL", what, SENTINEL_SERVICE])
        .map_err(|e| format!("sentinel :{sentinel}: {e}"))?;
    match &reply {
        Resp::Array(items) => Ok(items.iter().map(flat_map).collect()),
        _ => Err(format!("sentinel :{sentinel} {what} answered {reply:?}")),
    }
}
