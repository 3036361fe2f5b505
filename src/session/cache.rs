//! An in-process cache of session records in front of Redis, so an authenticated request
//! usually costs no store round trip.
//!
//! Correct across replicas through Redis client-side caching: the store's connection runs RESP3
//! `CLIENT TRACKING` in broadcast mode on the session-key prefix, and every change another
//! replica makes to a session (refresh, logout, expiry) arrives as an invalidation before that
//! replica's reply to its own caller. The cache serves only while tracking is known to be live:
//! a connection error, a lagging invalidation stream or a reconnect empties it and turns it off
//! until tracking is re-established, so a store outage still fails closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

pub struct SessionCache {
    entries: Mutex<Entries>,
    max_entries: usize,
    /// Bumped by every invalidation and flush; a read that raced one is not cached.
    epoch: AtomicU64,
    live: AtomicBool,
    events: IntCounterVec,
}

#[derive(Default)]
struct Entries {
    values: HashMap<String, Vec<u8>>,
    /// When this process last extended each record's idle TTL. Kept apart from the values:
    /// a touch is itself a change other replicas are told about, so touching on every read
    /// would have replicas evicting each other's copies in turn.
    touches: HashMap<String, Instant>,
}

pub enum Lookup {
    /// Serve this; this process extended the idle TTL recently enough.
    Hit(Vec<u8>),
    /// Ask the store (extending the TTL when `touch`); pass `epoch` on to `insert`.
    Miss { epoch: u64, touch: bool },
}

impl SessionCache {
    pub fn new(max_entries: usize, events: IntCounterVec) -> SessionCache {
        SessionCache {
            entries: Mutex::new(Entries::default()),
            max_entries,
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
            events,
        }
    }

    fn with_entries<R>(&self, f: impl FnOnce(&mut Entries) -> R) -> R {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn count(&self, event: &str) {
        self.events.with_label_values(&[event]).inc();
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
            self.count("hit");
            return Lookup::Hit(value);
        }
        self.count("miss");
        Lookup::Miss { epoch, touch }
    }

    /// Records a read from the store: the touch (if it was one) always, the value unless an
    /// invalidation arrived since `epoch`.
    pub fn insert(&self, key: &str, value: Vec<u8>, epoch: u64, touched: bool) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        self.with_entries(|m| {
            if touched {
                make_room(&mut m.touches, key, self.max_entries);
                m.touches.insert(key.to_string(), Instant::now());
            }
            if self.epoch.load(Ordering::SeqCst) == epoch {
                make_room(&mut m.values, key, self.max_entries);
                m.values.insert(key.to_string(), value);
            }
        });
    }

    pub fn invalidate(&self, key: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.with_entries(|m| m.values.remove(key)).is_some() {
            self.count("invalidation");
        }
    }

    /// Forgets a record entirely (it was written or deleted here).
    pub fn forget(&self, key: &str) {
        self.invalidate(key);
        self.with_entries(|m| m.touches.remove(key));
    }

    /// Empties the cache and stops serving from it (tracking is not known to be live).
    pub fn suspend(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.with_entries(|m| *m = Entries::default());
        self.count("flush");
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

    fn miss_epoch(c: &SessionCache, key: &str) -> u64 {
        match c.lookup(key, Duration::from_secs(60)) {
            Lookup::Miss { epoch, .. } => epoch,
            Lookup::Hit(_) => panic!("unexpected hit"),
        }
    }

    #[test]
    fn hits_after_insert_until_invalidated() {
        let c = cache(10);
        let e = miss_epoch(&c, "k");
        c.insert("k", b"v".to_vec(), e, true);
        assert!(matches!(c.lookup("k", Duration::from_secs(60)), Lookup::Hit(v) if v == b"v"));
        assert!(
            matches!(c.lookup("k", Duration::ZERO), Lookup::Miss { .. }),
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
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c = cache(10);
        let e = miss_epoch(&c, "k");
        c.invalidate("other");
        c.insert("k", b"stale?".to_vec(), e, true);
        assert!(c.is_empty());
    }

    #[test]
    fn suspended_caches_serve_nothing_and_size_is_bounded() {
        let c = cache(2);
        for k in ["a", "b", "c"] {
            let e = miss_epoch(&c, k);
            c.insert(k, b"v".to_vec(), e, true);
        }
        assert_eq!(c.len(), 2);
        c.suspend();
        assert!(c.is_empty());
        let e = miss_epoch(&c, "a");
        c.insert("a", b"v".to_vec(), e, true);
        assert!(c.is_empty(), "nothing is cached while tracking is down");
    }
}
