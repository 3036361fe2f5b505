//! One contract suite for every `SessionStore`: the embedded memory store and the Redis store
//! against a real redis-server.

mod support;

use std::sync::Arc;
use std::time::Duration;

use portcullis::config::{Config, StoreConfig};
use portcullis::session::memory::MemoryStore;
use portcullis::session::redis::RedisStore;
use portcullis::session::SessionStore;
use support::eventually;

async fn contract(store: Arc<dyn SessionStore>) {
    let key = |k: &str| format!("contract:{k}:{{{}}}", store.kind());
    let ttl = Duration::from_secs(60);

    assert_eq!(store.get(&key("absent"), None).await.unwrap(), None);
    store.set(&key("a"), b"one".to_vec(), ttl).await.unwrap();
    assert_eq!(
        store.get(&key("a"), None).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    store.set(&key("a"), b"two".to_vec(), ttl).await.unwrap();
    assert_eq!(
        store.get(&key("a"), Some(ttl)).await.unwrap().as_deref(),
        Some(&b"two"[..]),
        "set overwrites"
    );

    // take is read-and-delete: a second take finds nothing.
    store.set(&key("t"), b"once".to_vec(), ttl).await.unwrap();
    assert_eq!(
        store.take(&key("t")).await.unwrap().as_deref(),
        Some(&b"once"[..])
    );
    assert_eq!(store.take(&key("t")).await.unwrap(), None);

    store.delete(&key("a")).await.unwrap();
    assert_eq!(store.get(&key("a"), None).await.unwrap(), None);
    store.delete(&key("never-set")).await.unwrap();

    // Entries expire by their TTL.
    store
        .set(&key("short"), b"x".to_vec(), Duration::from_millis(200))
        .await
        .unwrap();
    let s = store.clone();
    let k = key("short");
    eventually(
        "the short-lived entry to expire",
        Duration::from_secs(5),
        || {
            let (s, k) = (s.clone(), k.clone());
            async move { s.get(&k, None).await.unwrap().is_none().then_some(()) }
        },
    )
    .await;

    // A read with touch finds the entry; expire() then shortens its TTL. (That a touch extends
    // the TTL is proved end to end by the idle-timeout test.)
    store
        .set(&key("touched"), b"x".to_vec(), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(store
        .get(&key("touched"), Some(Duration::from_secs(30)))
        .await
        .unwrap()
        .is_some());
    store
        .expire(&key("touched"), Duration::from_millis(150))
        .await
        .unwrap();
    let k = key("touched");
    eventually(
        "expire() to shorten the TTL",
        Duration::from_secs(5),
        || {
            let (s, k) = (s.clone(), k.clone());
            async move { s.get(&k, None).await.unwrap().is_none().then_some(()) }
        },
    )
    .await;

    // The lock has one owner, is released only by that owner, and expires.
    let lock = key("lock");
    assert!(store
        .try_lock(&lock, "A", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!store
        .try_lock(&lock, "B", Duration::from_secs(30))
        .await
        .unwrap());
    store.unlock(&lock, "B").await.unwrap();
    assert!(
        !store
            .try_lock(&lock, "B", Duration::from_secs(30))
            .await
            .unwrap(),
        "B released A's lock"
    );
    store.unlock(&lock, "A").await.unwrap();
    assert!(store
        .try_lock(&lock, "B", Duration::from_millis(200))
        .await
        .unwrap());
    let l = lock.clone();
    eventually("the lock to expire", Duration::from_secs(5), || {
        let (s, l) = (s.clone(), l.clone());
        async move {
            s.try_lock(&l, "C", Duration::from_secs(30))
                .await
                .unwrap()
                .then_some(())
        }
    })
    .await;

    // Indexes list members by creation time; members older than the TTL are dropped on add.
    let index = key("index");
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let day = Duration::from_secs(86_400);
    for (member, created) in [("m1", 1_000), ("m2", 90_000), ("m3", 100_000)] {
        store.index_add(&index, member, created, day).await.unwrap();
    }
    assert_eq!(
        sorted(store.index_members(&index, u64::MAX).await.unwrap()),
        ["m2", "m3"],
        "m1 was created more than a TTL before m3 and is gone"
    );
    assert_eq!(
        store.index_members(&index, 99_999).await.unwrap(),
        ["m2"],
        "only members created at or before the bound"
    );
    assert_eq!(
        store.index_members(&index, 999).await.unwrap(),
        [] as [String; 0]
    );
    store.index_remove(&index, "m2").await.unwrap();
    store.index_remove(&index, "never-added").await.unwrap();
    assert_eq!(store.index_members(&index, u64::MAX).await.unwrap(), ["m3"]);
    assert_eq!(
        store
            .index_members(&key("no-index"), u64::MAX)
            .await
            .unwrap(),
        [] as [String; 0]
    );

    // replace is a compare-and-set: it writes only over the exact value that was read, so a
    // record deleted or rewritten since stays as it is (a refresh never undoes a logout).
    let record = key("record");
    store.set(&record, b"read".to_vec(), ttl).await.unwrap();
    assert!(store
        .replace(&record, b"read", b"refreshed".to_vec(), ttl)
        .await
        .unwrap());
    assert!(
        !store
            .replace(&record, b"read", b"stale".to_vec(), ttl)
            .await
            .unwrap(),
        "a write over a value that changed since it was read loses"
    );
    assert_eq!(
        store.get(&record, None).await.unwrap().as_deref(),
        Some(&b"refreshed"[..])
    );
    assert!(
        store.delete(&record).await.unwrap(),
        "delete reports a live record"
    );
    assert!(!store.delete(&record).await.unwrap(), "and only once");
    assert!(
        !store
            .replace(&record, b"refreshed", b"revived".to_vec(), ttl)
            .await
            .unwrap(),
        "deletion wins"
    );
    assert_eq!(store.get(&record, None).await.unwrap(), None);
    // Binary values (ciphertext) compare byte for byte.
    let sealed: Vec<u8> = (0..=255).collect();
    store.set(&record, sealed.clone(), ttl).await.unwrap();
    assert!(store
        .replace(&record, &sealed, vec![0, 255, 0], ttl)
        .await
        .unwrap());
    assert_eq!(
        store.get(&record, None).await.unwrap().as_deref(),
        Some(&[0u8, 255, 0][..])
    );

    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_store_meets_the_contract() {
    contract(Arc::new(MemoryStore::new())).await;
}

/// A store with a generous command budget: the contract is about results, and this binary
/// starts a dozen Redis processes at once.
fn redis_store(url: String) -> RedisStore {
    redis_store_with_budget(url, "5s")
}

fn redis_store_with_budget(url: String, command_timeout: &str) -> RedisStore {
    let cfg = Config::from_yaml(
        &format!(
            "public_url: \"http://127.0.0.1:1\"\noidc: {{issuer: \"http://127.0.0.1:2\", client_id: c, client_secret: s}}\n\
             session: {{store: redis, redis_url: \"{url}\", redis_command_timeout: {command_timeout}}}\n\
             routes: [{{path: /, upstream: \"http://127.0.0.1:3\", kind: page}}]\n"
        ),
        std::path::Path::new("test.yaml"),
    )
    .expect("valid config");
    let StoreConfig::Redis(redis) = cfg.session.store else {
        panic!("a redis store")
    };
    RedisStore::new(&redis, None).expect("client builds")
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_meets_the_contract() {
    let server = support::redis::RedisServer::start();
    let store = redis_store(server.url());
    store.connect(Duration::from_secs(5)).await;
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_store_fails_fast_while_down_and_recovers() {
    let mut server = support::redis::RedisServer::start();
    let store = Arc::new(redis_store_with_budget(server.url(), "500ms"));
    store.connect(Duration::from_secs(5)).await;
    store
        .set("k:{x}", b"v".to_vec(), Duration::from_secs(60))
        .await
        .unwrap();
    server.stop();
    let started = std::time::Instant::now();
    assert!(
        store.get("k:{x}", None).await.is_err(),
        "a dead store is an error, not a miss"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the command timeout"
    );
    server.restart();
    let s = store.clone();
    eventually("the client to reconnect", Duration::from_secs(15), || {
        let s = s.clone();
        async move { s.ping().await.ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_store_meets_the_contract() {
    let cluster = tokio::task::spawn_blocking(support::redis_topologies::RedisCluster::start)
        .await
        .unwrap();
    let store = redis_store(cluster.url());
    store.connect(Duration::from_secs(10)).await;
    assert_eq!(store.kind(), "redis-cluster");
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sentinel_store_meets_the_contract() {
    let sentinel = tokio::task::spawn_blocking(support::redis_topologies::RedisSentinel::start)
        .await
        .unwrap();
    let store = redis_store(sentinel.url());
    store.connect(Duration::from_secs(10)).await;
    assert_eq!(store.kind(), "redis-sentinel");
    contract(Arc::new(store)).await;
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=portcullis test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_with_a_configured_ca_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let port = support::free_port();
    let _server = KillOnDrop(
        std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server with TLS"),
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = dir.path().join("ca.pem");
    let cfg = Config::from_yaml(
        &format!(
            "public_url: \"http://127.0.0.1:1\"\noidc: {{issuer: \"http://127.0.0.1:2\", client_id: c, client_secret: s}}\n\
             session: {{store: redis, redis_url: \"{url}\", redis_tls_ca_file: \"{}\", redis_command_timeout: 2s}}\n\
             routes: [{{path: /, upstream: \"http://127.0.0.1:3\", kind: page}}]\n",
            ca.display()
        ),
        std::path::Path::new("test.yaml"),
    )
    .expect("valid config");
    let StoreConfig::Redis(redis) = cfg.session.store else {
        panic!("a redis store")
    };
    let store = Arc::new(RedisStore::new(&redis, None).expect("client builds"));
    store.connect(Duration::from_secs(10)).await;
    let s = store.clone();
    eventually("the TLS connection", Duration::from_secs(10), || {
        let s = s.clone();
        async move { s.ping().await.ok() }
    })
    .await;
    contract(store).await;

    // The system trust store does not know the test CA: the same server must be refused.
    let untrusting = redis_store_with_budget(url, "500ms");
    untrusting.connect(Duration::from_millis(500)).await;
    assert!(
        untrusting.ping().await.is_err(),
        "a certificate from an unknown CA was accepted"
    );
}

/// Stops a child process even when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
