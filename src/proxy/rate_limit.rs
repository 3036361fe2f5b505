//! Token buckets for the endpoints an attacker can hit without a session (login, callback,
//! back-channel logout): one per client address and one global, per process (R70).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Rate;

/// Above this many tracked clients, full (idle) buckets are dropped before adding another, so
/// spoofed or many addresses cannot grow the map without bound.
const MAX_TRACKED_CLIENTS: usize = 10_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.count),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let per_sec = f64::from(rate.count) / rate.per.as_secs_f64();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(rate.count));
        self.updated = now;
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.count)
    }
}

pub struct RateLimiter {
    per_client: Rate,
    global: Rate,
    state: Mutex<State>,
}

struct State {
    clients: HashMap<IpAddr, Bucket>,
    global: Bucket,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Client,
    Global,
}

impl RateLimiter {
    pub fn new(per_client: Rate, global: Rate) -> RateLimiter {
        RateLimiter {
            per_client,
            global,
            state: Mutex::new(State {
                clients: HashMap::new(),
                global: Bucket::full(global, Instant::now()),
            }),
        }
    }

    /// Takes a token for `client` (and one from the global bucket), or says which limit is hit.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Limited> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.global.refill(self.global, now);
        if state.global.tokens < 1.0 {
            return Err(Limited::Global);
        }
        if let Some(ip) = client {
            if state.clients.len() >= MAX_TRACKED_CLIENTS && !state.clients.contains_key(&ip) {
                let rate = self.per_client;
                state.clients.retain(|_, b| {
                    b.refill(rate, now);
                    !b.is_full(rate)
                });
            }
            let bucket = state
                .clients
                .entry(ip)
                .or_insert_with(|| Bucket::full(self.per_client, now));
            bucket.refill(self.per_client, now);
            if bucket.tokens < 1.0 {
                return Err(Limited::Client);
            }
            bucket.tokens -= 1.0;
        }
        state.global.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate(count: u32) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(3600),
        }
    }

    #[test]
    fn each_client_has_its_own_bucket_and_all_share_the_global_one() {
        let limiter = RateLimiter::new(rate(2), rate(5));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(limiter.check(Some(a)), Ok(()));
        assert_eq!(limiter.check(Some(a)), Ok(()));
        assert_eq!(limiter.check(Some(a)), Err(Limited::Client));
        assert_eq!(limiter.check(Some(b)), Ok(()));
        assert_eq!(limiter.check(Some(b)), Ok(()));
        assert_eq!(limiter.check(None), Ok(()));
        assert_eq!(
            limiter.check(Some("192.0.2.3".parse().unwrap())),
            Err(Limited::Global)
        );
    }
}
