//! An in-process cache of decoded sessions in front of the store, so an authenticated request
//! usually costs neither a store round trip nor a decryption.
//!
//! It holds only what forwarding a request needs ([`HotSession`]), not the refresh or ID token.
//! With the memory store it is always live, and the facade forgets an entry whenever it writes
//! one. With Redis it is correct across replicas through client-side caching: the store's
//! connections run RESP3 `CLIENT TRACKING` in broadcast mode on the session-key prefix, and every
//! change another replica makes to a session (refresh, logout, expiry) arrives as an
//! invalidation before that replica's reply to its own caller. The cache then serves only while
//! tracking is known to be live: a connection error, a lagging invalidation stream or a
//! reconnect empties it and turns it off until tracking is re-established, so a store outage
//! still fails closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus::{IntCounter, IntCounterVec};

/// What an authenticated request needs from its session, ready to use: the `Authorization`
/// value is built once per token, not once per request. No `Debug`: it holds a token.
#[derive(Clone)]
pub struct HotSession {
    /// `Bearer <access token>`; `None` when the token has bytes a header cannot carry.
    pub bearer: Option<HeaderValue>,
    /// Unix seconds.
    pub access_expires_at: u64,
    pub access_lifetime: u64,
    pub absolute_deadline: u64,
}

impl HotSession {
    pub fn of(data: &super::SessionData) -> HotSession {
        HotSession {
            bearer: bearer_value(data.access_token.expose()),
            access_expires_at: data.access_expires_at,
            access_lifetime: data.access_lifetime,
            absolute_deadline: data.absolute_deadline,
        }
    }
}

/// `Bearer <token>` as a header value marked sensitive; `None` when the token has bytes a header
/// cannot carry.
pub fn bearer_value(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

pub struct SessionCache {
    entries: Mutex<Entries>,
    max_entries: usize,
    /// Bumped by every invalidation and flush; a read that raced one is not cached.
    epoch: AtomicU64,
    live: AtomicBool,
    events: Events,
}

/// The event counters, resolved once: a label lookup per request is measurable on the hot path.
struct Events {
    hit: IntCounter,
    miss: IntCounter,
    invalidation: IntCounter,
    flush: IntCounter,
}

#[derive(Default)]
struct Entries {
    values: HashMap<String, HotSession>,
    /// When this process last extended each record's idle TTL. Kept apart from the values:
    /// a touch is itself a change other replicas are told about, so touching on every read
    /// would have replicas evicting each other's copies in turn.
    touches: HashMap<String, Instant>,
}

pub enum Lookup {
    /// Serve this; this process extended the idle TTL recently enough.
    Hit(HotSession),
    /// Ask the store, extending the TTL when `touch` (then report it with `touched`), else
    /// reading plainly (then pass `epoch` on to `insert`).
    Miss { epoch: u64, touch: bool },
}

impl SessionCache {
    pub fn new(max_entries: usize, events: IntCounterVec) -> SessionCache {
        SessionCache {
            entries: Mutex::new(Entries::default()),
            max_entries,
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            events: Events {
                hit: events.with_label_values(&["hit"]),
                miss: events.with_label_values(&["miss"]),
                invalidation: events.with_label_values(&["invalidation"]),
                flush: events.with_label_values(&["flush"]),
            },
        }
    }

    fn with_entries<R>(&self, f: impl FnOnce(&mut Entries) -> R) -> R {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A hit needs live tracking, a cached value and a touch younger than `touch_every` (so
    /// the idle TTL in Redis keeps being extended while the session is used).
    pub fn lookup(&self, key: &str, touch_every: Duration) -> Lookup {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let live = self.live.load(Ordering::SeqCst);
        let (hit, touch) = self.with_entries(|m| {
            let touch = m
                .touches
                .get(key)
                .is_none_or(|t| t.elapsed() >= touch_every);
            let hit = (live && !touch)
                .then(|| m.values.get(key).cloned())
                .flatten();
            (hit, touch)
        });
        if let Some(value) = hit {
            self.events.hit.inc();
            return Lookup::Hit(value);
        }
        self.events.miss.inc();
        Lookup::Miss { epoch, touch }
    }

    /// Records a plain read from the store, unless an invalidation arrived since `epoch`.
    pub fn insert(&self, key: &str, value: HotSession, epoch: u64) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        self.with_entries(|m| {
            if self.epoch.load(Ordering::SeqCst) == epoch {
                make_room(&mut m.values, key, self.max_entries);
                m.values.insert(key.to_string(), value);
            }
        });
    }

    /// Records that this process extended the key's idle TTL, and drops its cached value: the
    /// touch is a write, after which Redis no longer reports the key's changes to this process
    /// until it reads the key again (`NOLOOP` spares the writer the invalidation, but the server
    /// still forgets who had read the key).
    pub fn touched(&self, key: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.with_entries(|m| {
            m.values.remove(key);
            make_room(&mut m.touches, key, self.max_entries);
            m.touches.insert(key.to_string(), Instant::now());
        });
    }

    pub fn invalidate(&self, key: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.with_entries(|m| m.values.remove(key)).is_some() {
            self.events.invalidation.inc();
        }
    }

    /// Forgets a record entirely (it was written or deleted here).
    pub fn forget(&self, key: &str) {
        self.invalidate(key);
        self.with_entries(|m| m.touches.remove(key));
    }

    /// Empties the cache and stops serving from it (tracking is not known to be live).
    pub fn suspend(&self) {
        let was_live = self.live.swap(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.with_entries(|m| *m = Entries::default());
        if was_live {
            self.events.flush.inc();
        }
    }

    /// Tracking is (re-)established: serve from the cache again.
    pub fn resume(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.with_entries(|m| *m = Entries::default());
        self.live.store(true, Ordering::SeqCst);
    }

    pub fn len(&self) -> usize {
        self.with_entries(|m| m.values.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

/// Bounds a map: before adding a new key to a full map, drops an arbitrary entry. Sessions are
/// uniformly hot or cold, so which one goes matters little; the bound is what matters.
fn make_room<V>(map: &mut HashMap<String, V>, key: &str, max: usize) {
    if map.len() >= max && !map.contains_key(key) {
        if let Some(victim) = map.keys().next().cloned() {
            map.remove(&victim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn cache(max: usize) -> SessionCache {
        let events = IntCounterVec::new(Opts::new("t", "t"), &["event"]).unwrap();
        let c = SessionCache::new(max, events);
        c.resume();
        c
    }

    fn hot(expires: u64) -> HotSession {
        HotSession {
            bearer: None,
            access_expires_at: expires,
            access_lifetime: 60,
            absolute_deadline: expires,
        }
    }

    fn miss_epoch(c: &SessionCache, key: &str) -> u64 {
        match c.lookup(key, Duration::from_secs(60)) {
            Lookup::Miss { epoch, .. } => epoch,
            Lookup::Hit(_) => panic!("unexpected hit"),
        }
    }

    #[test]
    fn hits_after_a_touch_and_a_plain_read_until_invalidated() {
        let c = cache(10);
        assert!(matches!(
            c.lookup("k", Duration::from_secs(60)),
            Lookup::Miss { touch: true, .. }
        ));
        c.touched("k");
        let e = miss_epoch(&c, "k");
        c.insert("k", hot(7), e);
        assert!(
            matches!(c.lookup("k", Duration::from_secs(60)), Lookup::Hit(v) if v.access_expires_at == 7)
        );
        assert!(
            matches!(
                c.lookup("k", Duration::ZERO),
                Lookup::Miss { touch: true, .. }
            ),
            "a due touch is a miss"
        );
        c.invalidate("k");
        assert!(
            matches!(
                c.lookup("k", Duration::from_secs(60)),
                Lookup::Miss { touch: false, .. }
            ),
            "an invalidation (e.g. another replica's touch) does not make this one touch again"
        );
    }

    #[test]
    fn a_touch_drops_the_cached_value() {
        let c = cache(10);
        c.touched("k");
        let e = miss_epoch(&c, "k");
        c.insert("k", hot(7), e);
        c.touched("k");
        assert!(
            c.is_empty(),
            "the store stopped reporting changes to this key"
        );
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c = cache(10);
        let e = miss_epoch(&c, "k");
        c.invalidate("other");
        c.insert("k", hot(1), e);
        assert!(c.is_empty());
    }

    #[test]
    fn suspended_caches_serve_nothing_and_size_is_bounded() {
        let c = cache(2);
        for k in ["a", "b", "c"] {
            let e = miss_epoch(&c, k);
            c.insert(k, hot(1), e);
        }
        assert_eq!(c.len(), 2);
        c.suspend();
        assert!(c.is_empty());
        let e = miss_epoch(&c, "a");
        c.insert("a", hot(1), e);
        assert!(c.is_empty(), "nothing is cached while tracking is down");
    }
}
