//! The `SessionStore` trait: the few operations portcullis needs from a key-value store with
//! expiry. Values are opaque ciphertext; keys are `prefix:kind:{id}` where the braces make the
//! id a Redis Cluster hash tag, so every key of one session lands in one slot.

use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time or the connection is down. The message is the client
    /// library's and never holds keys or values.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Reads a value and, when `touch` is given, resets its time to live in the same step.
    async fn get(&self, key: &str, touch: Option<Duration>) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError>;
    /// Writes `value` only if `key` still holds exactly `expected`, in one atomic step; false
    /// when it does not (deleted, expired or rewritten since it was read). A write that follows
    /// a read goes through here, so it can never recreate a record that was ended meanwhile.
    async fn replace(
        &self,
        key: &str,
        expected: &[u8],
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Reads and deletes in one atomic step, so a value can be consumed once only.
    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn expire(&self, key: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Deletes `key`; true when it existed (and had not expired).
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Sets `key` to `owner` only if absent; true when this caller now holds the lock.
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError>;
    /// Deletes `key` only if it still holds `owner`, so an expired lock taken over by another
    /// replica is never released by the first.
    async fn unlock(&self, key: &str, owner: &str) -> Result<(), StoreError>;
    /// Lists `member` in the index at `key` with its creation time (unix seconds), forgets
    /// members created more than `ttl` ago (their sessions have reached the absolute timeout)
    /// and sets the index's time to live, in one step.
    async fn index_add(
        &self,
        key: &str,
        member: &str,
        created_at: u64,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    async fn index_remove(&self, key: &str, member: &str) -> Result<(), StoreError>;
    /// The members listed with a creation time at or before `created_until`.
    async fn index_members(&self, key: &str, created_until: u64)
        -> Result<Vec<String>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    /// A label for metrics and logs: `memory` or `redis`.
    fn kind(&self) -> &'static str;
    /// Whether the store is reachable right now, as far as the client knows without asking.
    /// A cache in front of a store that is not must not serve.
    fn is_connected(&self) -> bool {
        true
    }
}

/// Milliseconds for a store TTL; never zero, since a zero TTL means "no expiry" or an error.
pub fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}
