//! An in-process cache of decoded sessions in front of the store, so an authenticated request
//! usually costs neither a store round trip nor a decryption.
//!
//! It holds only what forwarding a request needs ([`HotSession`]), not the refresh or ID token.
//! With the memory store it is always live, and the facade forgets an entry whenever it writes
//! one. With Redis it is correct across replicas through client-side caching: every connection
//! (so every Cluster node) runs RESP3 `CLIENT TRACKING`, the server remembers which session keys
//! this process read, and every change another replica makes to one (refresh, logout, expiry,
//! a touch) arrives as an invalidation before that replica's reply to its own caller. Only
//! plain reads are cached, since this process's own touch ends the tracking of a key. The cache
//! then serves only while
//! tracking is known to be live: a connection error, a lagging invalidation stream or a
//! reconnect empties it and turns it off until tracking is re-established, so a store outage
//! still fails closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use prometheus::{IntCounter, IntCounterVec};
use serde_json::{Map, Value};

use crate::assertion::AssertionMemo;
use crate::oidc::dpop::UpstreamDpop;

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
    /// The ID token's claims, for per-host access rules and identity headers.
    pub claims: Arc<Map<String, Value>>,
    /// The DPoP key and `DPoP <token>`, for routes that forward the token DPoP-bound; `None`
    /// without `oidc.dpop`.
    pub dpop: Option<Arc<UpstreamDpop>>,
    /// Identity assertions signed for this session; a refreshed session starts a new memo.
    pub assertions: Arc<AssertionMemo>,
}

impl HotSession {
    pub fn of(data: &super::SessionData) -> HotSession {
        HotSession {
            bearer: bearer_value(data.access_token.expose()),
            access_expires_at: data.access_expires_at,
            access_lifetime: data.access_lifetime,
            absolute_deadline: data.absolute_deadline,
            claims: Arc::new(data.claims.clone()),
            dpop: data
                .dpop_key
                .as_ref()
                .map(|key| Arc::new(UpstreamDpop::new(key, data.access_token.expose()))),
            assertions: Arc::default(),
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
    /// Counts changes (invalidations, touches, writes, flushes). A read from the store carries
    /// the count from before it began, and is cached only if its key did not change since.
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
    slots: HashMap<String, Slot>,
    /// When this process last extended each record's idle TTL. Kept apart from the values:
    /// a touch is itself a change other replicas are told about, so touching on every read
    /// would have replicas evicting each other's copies in turn.
    touches: HashMap<String, Instant>,
    /// Reads that began before this epoch are not cached: they may have missed a change to a
    /// slot that has since been evicted, or a flush.
    floor: u64,
    /// New keys since each map was last swept (see `make_room_in`).
    slots_added: usize,
    touches_added: usize,
}

/// A key's cached value, or a tombstone (`None`) that remembers when the key last changed.
/// Per-key change epochs keep a busy cache (touches and invalidations arrive all the time with
/// many sessions) from refusing every concurrent read because some other key changed.
struct Slot {
    value: Option<HotSession>,
    changed: u64,
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
    /// the idle TTL in Redis keeps being extended while the session is used). `now`: when the
    /// request began, read once for the whole request.
    pub fn lookup(&self, key: &str, touch_every: Duration, now: Instant) -> Lookup {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let live = self.live.load(Ordering::SeqCst);
        let (hit, touch) = self.with_entries(|m| {
            let touch = m
                .touches
                .get(key)
                .is_none_or(|t| now.saturating_duration_since(*t) >= touch_every);
            let hit = (live && !touch)
                .then(|| m.slots.get(key).and_then(|s| s.value.clone()))
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

    /// Records a plain read from the store that began at `epoch`, unless the key changed (or
    /// the cache was flushed) since.
    pub fn insert(&self, key: &str, value: HotSession, epoch: u64) {
        if !self.live.load(Ordering::SeqCst) {
            return;
        }
        let max = self.max_entries;
        self.with_entries(|m| {
            let changed = m.slots.get(key).map_or(0, |s| s.changed);
            if epoch < m.floor || changed > epoch {
                return;
            }
            make_room(m, key, max);
            let value = Some(value);
            m.slots.insert(key.to_string(), Slot { value, changed });
        });
    }

    /// Marks `key` changed now: its value goes, and reads that began earlier are not cached.
    /// True when a value was dropped.
    fn mark_changed(&self, key: &str) -> bool {
        let changed = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let max = self.max_entries;
        self.with_entries(|m| {
            make_room(m, key, max);
            let slot = m.slots.entry(key.to_string()).or_insert(Slot {
                value: None,
                changed,
            });
            slot.changed = changed;
            slot.value.take().is_some()
        })
    }

    /// Records that this process extended the key's idle TTL, and drops its cached value: the
    /// touch is a write, after which Redis no longer reports the key's changes to this process
    /// until it reads the key again (`NOLOOP` spares the writer the invalidation, but the server
    /// still forgets who had read the key).
    ///
    /// A touch older than `touch_every` is due again, as if it were not recorded, so those are
    /// what a full map of touches sheds first.
    pub fn touched(&self, key: &str, touch_every: Duration) {
        self.mark_changed(key);
        let max = self.max_entries;
        let now = Instant::now();
        self.with_entries(|m| {
            make_room_in(&mut m.touches, &mut m.touches_added, key, max, |touches| {
                touches.retain(|_, t| now.saturating_duration_since(*t) < touch_every);
            });
            m.touches.insert(key.to_string(), now);
        });
    }

    /// Another client changed `key` (or it expired) in the store.
    pub fn invalidate(&self, key: &str) {
        if self.mark_changed(key) {
            self.events.invalidation.inc();
        }
    }

    /// Forgets a record entirely (it was written or deleted here).
    pub fn forget(&self, key: &str) {
        self.mark_changed(key);
        self.with_entries(|m| m.touches.remove(key));
    }

    /// Empties the cache and stops serving from it (tracking is not known to be live).
    pub fn suspend(&self) {
        let was_live = self.live.swap(false, Ordering::SeqCst);
        self.clear();
        if was_live {
            self.events.flush.inc();
        }
    }

    /// Empties the cache; whether it serves is left as it was.
    pub fn flush(&self) {
        self.clear();
        self.events.flush.inc();
    }

    /// Tracking is (re-)established: serve from the cache again.
    pub fn resume(&self) {
        self.clear();
        self.live.store(true, Ordering::SeqCst);
    }

    /// Drops everything; reads that began before now are not cached.
    fn clear(&self) {
        let floor = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.with_entries(|m| {
            *m = Entries {
                floor,
                ..Entries::default()
            }
        });
    }

    /// How many sessions the cache holds.
    pub fn len(&self) -> usize {
        self.with_entries(|m| m.slots.values().filter(|s| s.value.is_some()).count())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bounds the slots. Tombstones go first: every session that ended or was touched leaves one,
/// and they would otherwise crowd out cached sessions until the cache holds few. A dropped slot
/// raises the floor past its last change, so no read that might have missed that change is
/// cached.
fn make_room(m: &mut Entries, key: &str, max: usize) {
    let mut floor = m.floor;
    let evicted = make_room_in(&mut m.slots, &mut m.slots_added, key, max, |slots| {
        slots.retain(|_, slot| {
            let tombstone = slot.value.is_none();
            if tombstone {
                floor = floor.max(slot.changed);
            }
            !tombstone
        });
    });
    if let Some(evicted) = evicted {
        floor = floor.max(evicted.changed);
    }
    m.floor = floor;
}

/// Before `key` joins a map bounded by `max`: when the map is full, `sweep` drops the entries
/// that are of no use; when that frees nothing, an arbitrary entry goes (and is returned). A
/// sweep reads the whole map, so it runs only once an eighth of the bound has been added since
/// the last one (`added` counts), which keeps its cost per new key constant.
fn make_room_in<V>(
    map: &mut HashMap<String, V>,
    added: &mut usize,
    key: &str,
    max: usize,
    sweep: impl FnOnce(&mut HashMap<String, V>),
) -> Option<V> {
    if map.contains_key(key) {
        return None;
    }
    *added += 1;
    if map.len() < max {
        return None;
    }
    if *added > max / 8 {
        *added = 0;
        sweep(map);
    }
    if map.len() < max {
        return None;
    }
    evict_one(map)
}

fn evict_one<V>(map: &mut HashMap<String, V>) -> Option<V> {
    let victim = map.keys().next().cloned()?;
    map.remove(&victim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    const MINUTE: Duration = Duration::from_secs(60);

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
            claims: Arc::default(),
            dpop: None,
            assertions: Arc::default(),
        }
    }

    fn cached(c: &SessionCache, key: &str) -> bool {
        c.with_entries(|m| m.slots.get(key).is_some_and(|s| s.value.is_some()))
    }

    fn miss_epoch(c: &SessionCache, key: &str) -> u64 {
        match c.lookup(key, Duration::from_secs(60), Instant::now()) {
            Lookup::Miss { epoch, .. } => epoch,
            Lookup::Hit(_) => panic!("unexpected hit"),
        }
    }

    #[test]
    fn hits_after_a_touch_and_a_plain_read_until_invalidated() {
        let c = cache(10);
        assert!(matches!(
            c.lookup("k", Duration::from_secs(60), Instant::now()),
            Lookup::Miss { touch: true, .. }
        ));
        c.touched("k", MINUTE);
        let e = miss_epoch(&c, "k");
        c.insert("k", hot(7), e);
        assert!(
            matches!(c.lookup("k", Duration::from_secs(60), Instant::now()), Lookup::Hit(v) if v.access_expires_at == 7)
        );
        assert!(
            matches!(
                c.lookup("k", Duration::ZERO, Instant::now()),
                Lookup::Miss { touch: true, .. }
            ),
            "a due touch is a miss"
        );
        c.invalidate("k");
        assert!(
            matches!(
                c.lookup("k", Duration::from_secs(60), Instant::now()),
                Lookup::Miss { touch: false, .. }
            ),
            "an invalidation (e.g. another replica's touch) does not make this one touch again"
        );
    }

    #[test]
    fn a_touch_drops_the_cached_value() {
        let c = cache(10);
        c.touched("k", MINUTE);
        let e = miss_epoch(&c, "k");
        c.insert("k", hot(7), e);
        c.touched("k", MINUTE);
        assert!(
            c.is_empty(),
            "the store stopped reporting changes to this key"
        );
    }

    #[test]
    fn a_read_that_raced_a_change_of_its_key_is_not_cached() {
        let c = cache(10);
        let e = miss_epoch(&c, "k");
        c.invalidate("k");
        c.insert("k", hot(1), e);
        assert!(c.is_empty());
        let e = miss_epoch(&c, "k");
        c.invalidate("other");
        c.touched("another", MINUTE);
        c.insert("k", hot(1), e);
        assert!(
            cached(&c, "k"),
            "changes to other keys do not hold a read back"
        );
    }

    #[test]
    fn evicting_a_changed_key_holds_back_reads_that_began_before() {
        let c = cache(1);
        let e = miss_epoch(&c, "k");
        c.invalidate("k");
        let later = miss_epoch(&c, "x");
        c.insert("x", hot(1), later);
        c.insert("k", hot(1), e);
        assert!(
            !cached(&c, "k") && cached(&c, "x"),
            "k's change was forgotten with its slot, so its older read is refused"
        );
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
        c.flush();
        let e = miss_epoch(&c, "a");
        c.insert("a", hot(1), e);
        assert!(
            c.is_empty(),
            "a flush does not turn a suspended cache back on"
        );
        c.resume();
        let before_flush = miss_epoch(&c, "a");
        c.flush();
        c.insert("a", hot(1), before_flush);
        assert!(c.is_empty(), "a read from before a flush is not cached");
        let e = miss_epoch(&c, "a");
        c.insert("a", hot(1), e);
        assert_eq!(c.len(), 1, "a flushed live cache keeps serving");
    }

    #[test]
    fn ended_sessions_make_way_for_cached_ones() {
        let c = cache(32);
        for i in 0..32 {
            c.invalidate(&format!("ended{i}"));
        }
        for i in 0..32 {
            let key = format!("live{i}");
            let e = miss_epoch(&c, &key);
            c.insert(&key, hot(1), e);
        }
        assert_eq!(c.len(), 32, "every tombstone went before a cached session");
    }

    #[test]
    fn a_swept_tombstone_still_holds_back_reads_that_began_before() {
        let c = cache(2);
        let before = miss_epoch(&c, "k");
        c.invalidate("k");
        c.invalidate("t");
        let e = miss_epoch(&c, "x");
        c.insert("x", hot(1), e);
        c.insert("k", hot(1), before);
        assert!(cached(&c, "x") && !cached(&c, "k"));
    }

    #[test]
    fn touches_that_are_due_again_make_way_for_new_ones() {
        let c = cache(32);
        let long_ago = Instant::now()
            .checked_sub(2 * MINUTE)
            .expect("the clock started over two minutes ago");
        c.with_entries(|m| {
            for i in 0..32 {
                m.touches.insert(format!("old{i}"), long_ago);
            }
            // As if `touched` had added them: a map that filled up has a sweep due.
            m.touches_added = m.touches.len();
        });
        for i in 0..32 {
            c.touched(&format!("new{i}"), MINUTE);
        }
        for i in 0..32 {
            assert!(
                matches!(
                    c.lookup(&format!("new{i}"), MINUTE, Instant::now()),
                    Lookup::Miss { touch: false, .. }
                ),
                "new{i}'s touch was kept"
            );
        }
    }
}
