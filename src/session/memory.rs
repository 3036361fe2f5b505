//! The embedded store: a map behind a mutex, for one replica and for local runs. Expired
//! entries are invisible at once and swept periodically by `sweep`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::store::{SessionStore, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    indexes: Mutex<HashMap<String, Index>>,
}

struct Index {
    /// Member → creation time (unix seconds).
    members: HashMap<String, u64>,
    expires_at: Instant,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn with_entries<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        // A poisoned lock only means another request panicked mid-update of a plain map;
        // the map itself is still consistent.
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn with_indexes<R>(&self, f: impl FnOnce(&mut HashMap<String, Index>) -> R) -> R {
        let mut guard = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Drops expired entries and indexes; returns how many were removed.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let entries = self.with_entries(|m| {
            let before = m.len();
            m.retain(|_, e| e.expires_at > now);
            before - m.len()
        });
        let indexes = self.with_indexes(|m| {
            let before = m.len();
            m.retain(|_, i| i.expires_at > now);
            before - m.len()
        });
        entries + indexes
    }

    pub fn len(&self) -> usize {
        self.with_entries(|m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live<'m>(m: &'m mut HashMap<String, Entry>, key: &str, now: Instant) -> Option<&'m mut Entry> {
    if m.get(key).is_some_and(|e| e.expires_at <= now) {
        m.remove(key);
    }
    m.get_mut(key)
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn get(&self, key: &str, touch: Option<Duration>) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        Ok(self.with_entries(|m| {
            live(m, key, now).map(|e| {
                if let Some(ttl) = touch {
                    e.expires_at = now + ttl;
                }
                e.value.clone()
            })
        }))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let expires_at = Instant::now() + ttl;
        self.with_entries(|m| m.insert(key.to_string(), Entry { value, expires_at }));
        Ok(())
    }

    async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with_entries(|m| match live(m, key, now) {
            Some(e) if e.value == expected => {
                *e = Entry {
                    value,
                    expires_at: now + ttl,
                };
                true
            }
            _ => false,
        }))
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = Instant::now();
        Ok(self.with_entries(|m| {
            m.remove(key)
                .filter(|e| e.expires_at > now)
                .map(|e| e.value)
        }))
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        self.with_entries(|m| {
            if let Some(e) = live(m, key, now) {
                e.expires_at = now + ttl;
            }
        });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with_entries(|m| m.remove(key).is_some_and(|e| e.expires_at > now)))
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        Ok(self.with_entries(|m| {
            if live(m, key, now).is_some() {
                return false;
            }
            let entry = Entry {
                value: owner.as_bytes().to_vec(),
                expires_at: now + ttl,
            };
            m.insert(key.to_string(), entry);
            true
        }))
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.with_entries(|m| {
            if m.get(key).is_some_and(|e| e.value == owner.as_bytes()) {
                m.remove(key);
            }
        });
        Ok(())
    }

    async fn index_add(
        &self,
        key: &str,
        member: &str,
        created_at: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let oldest_live = created_at.saturating_sub(ttl.as_secs());
        self.with_indexes(|m| {
            let index = m.entry(key.to_string()).or_insert_with(|| Index {
                members: HashMap::new(),
                expires_at: now,
            });
            if index.expires_at <= now {
                index.members.clear();
            }
            index.members.retain(|_, created| *created >= oldest_live);
            index.members.insert(member.to_string(), created_at);
            index.expires_at = now + ttl;
        });
        Ok(())
    }

    async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.with_indexes(|m| {
            if let Some(index) = m.get_mut(key) {
                index.members.remove(member);
                if index.members.is_empty() {
                    m.remove(key);
                }
            }
        });
        Ok(())
    }

    async fn index_members(
        &self,
        key: &str,
        created_until: u64,
    ) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        Ok(self.with_indexes(|m| match m.get(key) {
            Some(index) if index.expires_at > now => index
                .members
                .iter()
                .filter(|(_, created)| **created <= created_until)
                .map(|(member, _)| member.clone())
                .collect(),
            _ => Vec::new(),
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn replace_writes_only_over_the_value_that_was_read() {
        let store = MemoryStore::new();
        store.set("k", b"v1".to_vec(), TTL).await.unwrap();
        assert!(store
            .replace("k", b"v1", b"v2".to_vec(), TTL)
            .await
            .unwrap());
        assert_eq!(
            store.get("k", None).await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert!(
            !store
                .replace("k", b"v1", b"v3".to_vec(), TTL)
                .await
                .unwrap(),
            "a write based on a stale read loses"
        );
        assert_eq!(
            store.get("k", None).await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
    }

    #[tokio::test]
    async fn replace_never_recreates_a_deleted_or_expired_record() {
        let store = MemoryStore::new();
        store.set("k", b"v1".to_vec(), TTL).await.unwrap();
        assert!(store.delete("k").await.unwrap());
        assert!(!store
            .replace("k", b"v1", b"v2".to_vec(), TTL)
            .await
            .unwrap());
        assert!(store.is_empty(), "the deleted record stays deleted");

        store
            .set("e", b"v1".to_vec(), Duration::ZERO)
            .await
            .unwrap();
        assert!(!store
            .replace("e", b"v1", b"v2".to_vec(), TTL)
            .await
            .unwrap());
        assert_eq!(store.get("e", None).await.unwrap(), None);
    }

    #[tokio::test]
    async fn delete_reports_whether_a_live_record_was_there() {
        let store = MemoryStore::new();
        store.set("k", b"v".to_vec(), TTL).await.unwrap();
        assert!(store.delete("k").await.unwrap());
        assert!(
            !store.delete("k").await.unwrap(),
            "a second delete ends nothing"
        );
        store.set("e", b"v".to_vec(), Duration::ZERO).await.unwrap();
        assert!(
            !store.delete("e").await.unwrap(),
            "an expired record is not counted"
        );
    }
}
