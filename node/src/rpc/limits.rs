//! Rate limits of the RPC front door: token buckets per connection and per client (an API
//! token, or the IP address of a client without one). Pure: time comes in as an argument.

use std::collections::HashMap;
use std::sync::Mutex;

/// A token bucket: `burst` calls at once, refilled at `rate` calls per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// How fast one connection, or one client, may call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

impl Bucket {
    pub fn full(rate: Rate, now_ms: u64) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            last_ms: now_ms,
        }
    }

    /// Takes one call's token, or says in how many ms one will be there.
    pub fn take(&mut self, rate: Rate, now_ms: u64) -> Result<(), u64> {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * f64::from(rate.per_sec)).min(f64::from(rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if rate.per_sec == 0 {
            return Err(u64::MAX);
        }
        let missing = 1.0 - self.tokens;
        Err(((missing / f64::from(rate.per_sec)) * 1000.0)
            .ceil()
            .max(1.0) as u64)
    }
}

/// Buckets of every client seen recently (bounded: idle full buckets are forgotten).
#[derive(Debug, Default)]
pub struct ClientBuckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Clients tracked before idle ones are swept.
const MAX_TRACKED_CLIENTS: usize = 10_000;

impl ClientBuckets {
    pub fn take(&self, client: &str, rate: Rate, now_ms: u64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_CLIENTS && !buckets.contains_key(client) {
            // A bucket idle long enough to be full again carries no information.
            let refill_ms = u64::from(rate.burst) * 1000 / u64::from(rate.per_sec.max(1));
            buckets.retain(|_, b| now_ms.saturating_sub(b.last_ms) < refill_ms);
        }
        buckets
            .entry(client.to_string())
            .or_insert_with(|| Bucket::full(rate, now_ms))
            .take(rate, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_sec: 10,
        burst: 5,
    };

    #[test]
    fn a_burst_then_the_steady_rate_with_the_wait_named() {
        let mut b = Bucket::full(RATE, 0);
        for _ in 0..5 {
            assert_eq!(b.take(RATE, 0), Ok(()));
        }
        assert_eq!(b.take(RATE, 0), Err(100));
        assert_eq!(b.take(RATE, 50), Err(50));
        assert_eq!(b.take(RATE, 100), Ok(()));
        // A long pause refills up to the burst, not beyond.
        for _ in 0..5 {
            assert_eq!(b.take(RATE, 60_000), Ok(()));
        }
        assert!(b.take(RATE, 60_000).is_err());
        // A clock that goes back never grants extra calls.
        assert!(b.take(RATE, 1_000).is_err());
    }

    #[test]
    fn clients_have_their_own_buckets_and_idle_ones_are_swept() {
        let clients = ClientBuckets::default();
        for _ in 0..5 {
            assert!(clients.take("a", RATE, 0).is_ok());
        }
        assert!(clients.take("a", RATE, 0).is_err());
        assert!(clients.take("b", RATE, 0).is_ok());
        for i in 0..MAX_TRACKED_CLIENTS {
            let _ = clients.take(&format!("c{i}"), RATE, 0);
        }
        // Far later, a new client sweeps the idle ones.
        assert!(clients.take("late", RATE, 3_600_000).is_ok());
        let tracked = clients.buckets.lock().unwrap().len();
        assert!(tracked < 10, "{tracked} buckets kept");
    }
}
