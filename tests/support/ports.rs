//! Ports for processes a test starts and tells where to listen (portcullis, redis-server, the
//! webhook). They are picked at random *below* the kernel's ephemeral range, where the OS never
//! hands out a port for `bind(0)` or an outgoing connection: a port reserved here and freed
//! until the process binds it cannot be taken meanwhile by another test's `bind(0)` server or
//! by a client socket, and it stays ours while a process restarts on it. Within one test binary
//! a port is never handed out twice; each is checked free by binding it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Up to 12 000 ports just below the ephemeral range, or above it where the range starts too
/// low to leave room; a machine whose ephemeral range covers nearly every port cannot give
/// tests race-free ports, and says so.
fn reserved_range() -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut bounds = s.split_whitespace().map(|b| b.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999));
    const ROOM: u16 = 5000;
    match ephemeral {
        (low, _) if low >= 1024 + ROOM => (low.saturating_sub(12000).max(1024), low),
        (_, high) if high <= u16::MAX - ROOM => (high + 1, high.saturating_add(12000)),
        (low, high) => panic!(
            "the ephemeral port range {low}-{high} leaves no room for test ports \
             (see /proc/sys/net/ipv4/ip_local_port_range)"
        ),
    }
}

/// A free port on 127.0.0.1 that no other caller in this process has been given.
pub fn free_port() -> u16 {
    let (lo, hi) = reserved_range();
    for _ in 0..10_000 {
        let port = lo + (random_u64() % u64::from(hi - lo)) as u16;
        let mut taken = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if taken.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        taken.insert(port);
        return port;
    }
    panic!("no free loopback port in {lo}..{hi}");
}
