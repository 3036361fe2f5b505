//! Proves the Redis Cluster and Sentinel fixtures work: start-up, routing, failover with
//! replicated data surviving, restart/rejoin, and no process left behind (also on panic).
//! Timings go to stderr: `cargo test --test redis_topologies_smoke -- --nocapture`.

mod support;

use std::process::Command;
use std::time::Instant;

use support::redis::Resp;
use support::redis_topologies::{commands_at, RedisCluster, RedisSentinel, Role};

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

fn bulk(s: &str) -> Resp {
    Resp::Bulk(Some(s.as_bytes().to_vec()))
}

/// One key per master: `prefix:N` names, first found for each master.
fn one_key_per_master(cluster: &RedisCluster, prefix: &str) -> Vec<(u16, String)> {
    let masters = cluster.master_ports();
    let mut picked: Vec<(u16, String)> = Vec::new();
    for i in 0.. {
        let key = format!("{prefix}:{i}");
        let m = cluster.master_for_key(&key);
        if !picked.iter().any(|(p, _)| *p == m) {
            picked.push((m, key));
        }
        if picked.len() == masters.len() {
            break;
        }
    }
    picked.sort();
    picked
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn cluster_starts_and_routes_keys_across_slots() {
    let t = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster start-up: {:?}", t.elapsed());

    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6);
    let masters: Vec<_> = nodes.iter().filter(|n| n.role == Role::Master).collect();
    assert_eq!(masters.len(), 3, "{nodes:?}");
    for n in &nodes {
        assert!(n.pid.is_some());
        assert!(n.bus_port != 0 && n.bus_port != n.port, "{n:?}");
        if let Role::Replica {
            master_port,
            link_up,
        } = n.role
        {
            assert!(link_up, "{n:?}");
            assert!(masters.iter().any(|m| m.port == master_port), "{n:?}");
        }
    }
    // Every master has exactly one replica.
    for m in &masters {
        assert_eq!(cluster.replicas_of(m.port).len(), 1, "{nodes:?}");
    }

    let url = cluster.url();
    let expected: Vec<String> = cluster
        .master_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    assert_eq!(url, format!("redis-cluster://{}", expected.join(",")));
    assert_eq!(url.matches("127.0.0.1:").count(), 3);

    // Keys in different slots, owned by different masters, through the MOVED-following client.
    let keys = one_key_per_master(&cluster, "smoke");
    assert_eq!(keys.len(), 3);
    for (master, key) in &keys {
        assert_eq!(cluster.command(&["SET", key, &format!("v-{key}")]), ok());
        // The value lives on the owning master, not on the others.
        assert_eq!(
            cluster.command_on(*master, &["GET", key]),
            bulk(&format!("v-{key}"))
        );
    }
    for (_, key) in &keys {
        assert_eq!(cluster.command(&["GET", key]), bulk(&format!("v-{key}")));
        // And through redis-cli -c, entering at a node that does not own the key.
        let entry = cluster
            .master_ports()
            .into_iter()
            .find(|p| *p != cluster.master_for_key(key))
            .unwrap();
        let out = Command::new("redis-cli")
            .args([
                "-c",
                "-h",
                "127.0.0.1",
                "-p",
                &entry.to_string(),
                "GET",
                key,
            ])
            .output()
            .expect("redis-cli");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("v-{key}")
        );
    }

    let mut expected_keys: Vec<String> = keys.iter().map(|(_, k)| k.clone()).collect();
    expected_keys.sort();
    assert_eq!(cluster.keys_matching("smoke:*"), expected_keys);
    let dump = cluster.dump();
    assert_eq!(dump.len(), 3);
    for (k, v) in dump {
        assert_eq!(v, format!("v-{k}").into_bytes());
    }
}

#[test]
fn cluster_failover_promotes_replica_and_keeps_synced_data() {
    let t = Instant::now();
    let mut cluster = RedisCluster::start();
    eprintln!("cluster start-up: {:?}", t.elapsed());

    let keys = one_key_per_master(&cluster, "fo");
    for (_, key) in &keys {
        assert_eq!(cluster.command(&["SET", key, "before"]), ok());
    }
    cluster.wait_replicas_synced();

    let (victim, victim_key) = keys[0].clone();
    let replicas = cluster.replicas_of(victim);
    assert_eq!(replicas.len(), 1);
    assert_eq!(
        commands_at(replicas[0], &[&["READONLY"], &["GET", &victim_key]]).unwrap()[1],
        bulk("before"),
        "the replica holds the key before the kill"
    );
    let old_pid = cluster
        .nodes()
        .iter()
        .find(|n| n.port == victim)
        .unwrap()
        .pid
        .unwrap();

    let t = Instant::now();
    cluster.kill_master(victim);
    assert!(!process_alive(old_pid), "SIGKILLed and reaped");
    let promoted = cluster.wait_failover(victim);
    eprintln!(
        "cluster failover (kill -9 → promoted, all cluster_state:ok): {:?}",
        t.elapsed()
    );
    assert_eq!(promoted, replicas[0]);
    assert_eq!(cluster.master_for_key(&victim_key), promoted);
    assert!(!cluster.url().contains(&format!(":{victim}")));

    for (_, key) in &keys {
        assert_eq!(cluster.command(&["GET", key]), bulk("before"), "{key}");
    }
    assert_eq!(cluster.command(&["SET", &victim_key, "after"]), ok());
    assert_eq!(cluster.command(&["GET", &victim_key]), bulk("after"));

    let t = Instant::now();
    cluster.restart_node(victim);
    eprintln!(
        "cluster restart of old master → synced replica: {:?}",
        t.elapsed()
    );
    let back = cluster
        .nodes()
        .into_iter()
        .find(|n| n.port == victim)
        .unwrap();
    assert_eq!(
        back.role,
        Role::Replica {
            master_port: promoted,
            link_up: true
        }
    );
    assert_eq!(
        commands_at(victim, &[&["READONLY"], &["GET", &victim_key]]).unwrap()[1],
        bulk("after"),
        "the rejoined replica holds the data written after the failover"
    );
}

#[test]
fn sentinel_failover_changes_master() {
    let t = Instant::now();
    let mut sentinel = RedisSentinel::start();
    eprintln!("sentinel start-up: {:?}", t.elapsed());

    let ports = sentinel.sentinel_ports();
    assert_eq!(
        sentinel.url(),
        format!(
            "redis-sentinel://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/mymaster",
            ports[0], ports[1], ports[2]
        )
    );
    let nodes = sentinel.nodes();
    let old = sentinel.master_port();
    assert_eq!(nodes[0].port, old);
    assert_eq!(nodes[0].role, Role::Master);
    let replica = nodes[1].port;
    assert_eq!(
        nodes[1].role,
        Role::Replica {
            master_port: old,
            link_up: true
        }
    );

    // WAIT only means something on the connection that wrote.
    assert_eq!(
        commands_at(old, &[&["SET", "s:1", "before"], &["WAIT", "1", "1000"]]).unwrap(),
        vec![ok(), Resp::Int(1)]
    );
    assert_eq!(
        sentinel.command_on(replica, &["GET", "s:1"]),
        bulk("before")
    );

    let t = Instant::now();
    assert_eq!(sentinel.kill_master(), old);
    let new = sentinel.wait_failover(old);
    eprintln!(
        "sentinel failover (kill -9 → all sentinels agree): {:?}",
        t.elapsed()
    );
    assert_eq!(new, replica);
    assert_eq!(sentinel.master_port(), replica);
    assert_eq!(sentinel.keys("s:*"), vec!["s:1".to_string()]);
    assert_eq!(sentinel.command(&["GET", "s:1"]), bulk("before"));
    assert_eq!(sentinel.command(&["SET", "s:2", "after"]), ok());

    let t = Instant::now();
    sentinel.restart_node(old);
    eprintln!(
        "sentinel restart of old master → synced replica: {:?}",
        t.elapsed()
    );
    assert_eq!(
        sentinel.command_on(old, &["GET", "s:2"]),
        bulk("after"),
        "the old master came back as a replica of the new one"
    );
}

#[test]
fn drop_and_panics_leave_no_process() {
    let cluster = RedisCluster::start();
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid).collect();
    assert_eq!(pids.len(), 6);
    drop(cluster);
    for pid in &pids {
        assert!(!process_alive(*pid), "cluster node {pid} survived drop");
    }

    // A test that panics while holding a sentinel set: unwinding kills everything.
    let pids = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let sentinel = RedisSentinel::start();
        let mut p: Vec<u32> = sentinel.nodes().iter().filter_map(|n| n.pid).collect();
        for port in sentinel.sentinel_ports() {
            // Sentinel pids via INFO server.
            if let Resp::Bulk(Some(info)) = sentinel.command_on(port, &["INFO", "server"]) {
                let info = String::from_utf8_lossy(&info).into_owned();
                let pid = info
                    .lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("process_id");
                p.push(pid);
            }
        }
        *pids.lock().unwrap() = p;
        panic!("deliberate panic with a live sentinel set");
    }));
    assert!(result.is_err());
    let pids = pids.into_inner().unwrap();
    assert_eq!(pids.len(), 5);
    for pid in &pids {
        assert!(
            !process_alive(*pid),
            "sentinel-set process {pid} survived the panic"
        );
    }
}
