//! Brute-force protection for SASL: failures are counted per IP address and per account, and
//! past a free allowance every further failure is answered only after a delay that doubles up
//! to a cap. Counters decay after a quiet window. The tables are bounded, so an attacker with
//! many addresses cannot grow them without limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tuning of the limiter.
#[derive(Clone, Debug)]
pub struct AuthLimits {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// A key with no failure for this long starts again from zero.
    pub window: Duration,
    /// Entries kept per table before the oldest are evicted.
    pub max_entries: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            free_failures: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            window: Duration::from_secs(600),
            max_entries: 100_000,
        }
    }
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn failures(&self, key: &K, now: Instant, window: Duration) -> u32 {
        match self.entries.get(key) {
            Some((n, last)) if now.duration_since(*last) < window => *n,
            _ => 0,
        }
    }

    fn record(&mut self, key: K, now: Instant, window: Duration, max: usize) {
        if self.entries.len() >= max && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, (_, last)| now.duration_since(*last) < window);
            if self.entries.len() >= max {
                // Still full of fresh entries: drop the oldest one.
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        let slot = self.entries.entry(key).or_insert((0, now));
        if now.duration_since(slot.1) >= window {
            slot.0 = 0;
        }
        slot.0 = slot.0.saturating_add(1);
        slot.1 = now;
    }
}

/// Shared by every connection of an edge.
#[derive(Debug)]
pub struct AuthLimiter {
    limits: AuthLimits,
    by_ip: Mutex<Table<IpAddr>>,
    by_account: Mutex<Table<String>>,
}

impl AuthLimiter {
    pub fn new(limits: AuthLimits) -> Self {
        AuthLimiter {
            limits,
            by_ip: Mutex::new(Table {
                entries: HashMap::new(),
            }),
            by_account: Mutex::new(Table {
                entries: HashMap::new(),
            }),
        }
    }

    /// Records a failed attempt and returns how long to wait before answering it.
    pub fn failure(&self, ip: IpAddr, account: Option<&str>) -> Duration {
        let now = Instant::now();
        let l = &self.limits;
        let mut worst = 0;
        if let Ok(mut t) = self.by_ip.lock() {
            t.record(ip, now, l.window, l.max_entries);
            worst = worst.max(t.failures(&ip, now, l.window));
        }
        if let Some(acct) = account
            && let Ok(mut t) = self.by_account.lock()
        {
            let key = acct.to_owned();
            t.record(key.clone(), now, l.window, l.max_entries);
            worst = worst.max(t.failures(&key, now, l.window));
        }
        self.delay_for(worst)
    }

    /// The delay a new attempt from this address would already face (used to slow down
    /// clients that reconnect to reset their per-connection retry count).
    pub fn current_delay(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let n = self
            .by_ip
            .lock()
            .map(|t| t.failures(&ip, now, self.limits.window))
            .unwrap_or(0);
        self.delay_for(n)
    }

    fn delay_for(&self, failures: u32) -> Duration {
        let l = &self.limits;
        if failures <= l.free_failures {
            return Duration::ZERO;
        }
        let exp = (failures - l.free_failures - 1).min(16);
        l.base_delay.saturating_mul(1u32 << exp).min(l.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn delay_grows_after_free_failures_and_caps() {
        let lim = AuthLimiter::new(AuthLimits::default());
        let delays: Vec<Duration> = (0..10).map(|_| lim.failure(ip(1), Some("a@x"))).collect();
        assert_eq!(&delays[..3], &[Duration::ZERO; 3]);
        assert_eq!(delays[3], Duration::from_millis(250));
        assert_eq!(delays[4], Duration::from_millis(500));
        assert_eq!(delays[9], Duration::from_secs(8));
        assert_eq!(lim.current_delay(ip(1)), Duration::from_secs(8));
        assert_eq!(lim.current_delay(ip(2)), Duration::ZERO);
    }

    #[test]
    fn account_is_protected_across_addresses() {
        let lim = AuthLimiter::new(AuthLimits::default());
        for n in 0..4 {
            lim.failure(ip(n), Some("victim@x"));
        }
        assert!(lim.failure(ip(99), Some("victim@x")) > Duration::ZERO);
        assert_eq!(lim.failure(ip(100), Some("other@x")), Duration::ZERO);
    }

    #[test]
    fn tables_stay_bounded() {
        let lim = AuthLimiter::new(AuthLimits {
            max_entries: 8,
            ..AuthLimits::default()
        });
        for n in 0..50 {
            lim.failure(ip(n), None);
        }
        assert!(
            lim.by_ip
                .lock()
                .map(|t| t.entries.len())
                .unwrap_or(usize::MAX)
                <= 8
        );
    }
}
