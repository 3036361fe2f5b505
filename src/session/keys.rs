//! Cookie secret → session store key, remembered for the session cache's lookups. Deriving the
//! key is an HMAC-SHA256 (four SHA-256 blocks): on a cached request it cost more instructions
//! than anything else portcullis does. The derivation is a pure function, so a remembered key
//! is never stale; only its memory is bounded.
//!
//! Entries are found by a randomly keyed SipHash of the secret and confirmed by a
//! constant-time comparison, so how long a lookup takes says nothing about other browsers'
//! secrets. The secrets sit in this process's memory beside the access tokens the session
//! cache holds already; nothing here reaches the store or a log.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::crypto::CookieSecret;

pub struct SessionKeys {
    /// By fingerprint, itself a keyed hash: the map need not hash it again with SipHash.
    seen: Mutex<HashMap<u64, (CookieSecret, Arc<str>), foldhash::fast::RandomState>>,
    fingerprints: RandomState,
    max_entries: usize,
}

impl SessionKeys {
    pub fn new(max_entries: usize) -> SessionKeys {
        SessionKeys {
            seen: Mutex::new(HashMap::default()),
            fingerprints: RandomState::new(),
            max_entries,
        }
    }

    /// The key for `secret`: remembered, or made by `derive` and remembered.
    pub fn get_or_derive(
        &self,
        secret: &CookieSecret,
        derive: impl FnOnce() -> String,
    ) -> Arc<str> {
        let fingerprint = secret.fingerprint(&self.fingerprints);
        if let Some(key) = self.remembered(fingerprint, secret) {
            return key;
        }
        let key: Arc<str> = derive().into();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= self.max_entries {
            // Forgetting everything at once keeps this simple and bounded; each forgotten
            // key costs one derivation the next time it is needed.
            seen.clear();
        }
        seen.insert(fingerprint, (secret.clone(), key.clone()));
        key
    }

    fn remembered(&self, fingerprint: u64, secret: &CookieSecret) -> Option<Arc<str>> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Another secret with the same fingerprint (chance: 2^-64) just misses.
        seen.get(&fingerprint)
            .filter(|(known, _)| known.equals_in_constant_time(secret))
            .map(|(_, key)| key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn derives_once_per_secret_and_tells_secrets_apart() {
        let keys = SessionKeys::new(10);
        let (a, b) = (CookieSecret::generate(), CookieSecret::generate());
        let derivations = Cell::new(0);
        let derive = |name: &str| {
            derivations.set(derivations.get() + 1);
            name.to_string()
        };
        assert_eq!(&*keys.get_or_derive(&a, || derive("a")), "a");
        assert_eq!(&*keys.get_or_derive(&b, || derive("b")), "b");
        assert_eq!(&*keys.get_or_derive(&a, || derive("wrong")), "a");
        assert_eq!(derivations.get(), 2);
    }

    #[test]
    fn stays_within_its_bound() {
        let keys = SessionKeys::new(3);
        for _ in 0..10 {
            keys.get_or_derive(&CookieSecret::generate(), || "k".to_string());
        }
        let held = keys.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(held <= 3, "{held} entries held");
    }
}
