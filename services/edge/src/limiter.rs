//! Brute-force protection for SASL, consulted BEFORE the password is checked.
//!
//! Every attempt is admitted through [`AuthLimiter::admit`] once the account it names is known
//! and before the credentials are looked up or any PBKDF2 runs. Admission reserves a time slot
//! in two schedules: the client's network (an IPv4 address, or an IPv6 /64, since one host
//! usually owns a whole /64) and the pair (account, network). The network's free allowance
//! (100) is larger than the pair's (3), since many users may share an address. An attempt counts as a failure
//! from the moment it is admitted; a success refunds it ([`AuthLimiter::succeeded`]). Past a
//! free allowance, each counted failure spaces the next slot of that schedule further (doubling
//! up to `max_delay`), so parallel connections from one network queue behind each other: the
//! guess rate of a network is bounded whatever the number of its connections. The wait happens
//! before the check, so success and failure are answered under the same delay (timing tells an
//! attacker nothing). A slot further than `max_wait` away is refused with
//! `<temporary-auth-failure/>` without being counted.
//!
//! No lock-out: the account schedule is keyed by (account, network), so an attacker's failures
//! never delay the real user logging in from another network; from the attacker's own network
//! (a shared NAT) the real user waits at most `max_wait`. Counters decay after `window` without
//! an attempt. The tables are bounded, so many addresses cannot grow them without limit.
//!
//! The same type, through [`AuthLimiter::attempt`], counts XEP-0077 registrations per network.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tuning of the limiter.
#[derive(Clone, Debug)]
pub struct AuthLimits {
    /// Failures of one (account, network) allowed before any delay.
    pub free_failures: u32,
    /// Failures of one network (all accounts) allowed before any delay: higher, since many
    /// users may share an address (NAT) and log in at once; it bounds password spraying.
    pub free_network_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest spacing between two attempts of one schedule.
    pub max_delay: Duration,
    /// The longest an attempt waits for its slot; later slots are refused.
    pub max_wait: Duration,
    /// A key with no attempt for this long starts again from zero.
    pub window: Duration,
    /// Entries kept per table before the oldest are evicted.
    pub max_entries: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            free_failures: 3,
            free_network_failures: 100,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_wait: Duration::from_secs(15),
            window: Duration::from_secs(600),
            max_entries: 100_000,
        }
    }
}

/// The network an address belongs to for rate limiting: the IPv4 address, or the /64 of an
/// IPv6 address (IPv4-mapped IPv6 addresses count as IPv4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetKey {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl NetKey {
    pub fn of(ip: IpAddr) -> NetKey {
        match ip {
            IpAddr::V4(v4) => NetKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => NetKey::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    let mut p = [0u8; 8];
                    p.copy_from_slice(&o[..8]);
                    NetKey::V6(p)
                }
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Counted failures (attempts not refunded) in the current window.
    failures: u32,
    /// The last attempt.
    last: Instant,
    /// The earliest the next attempt may proceed.
    next: Instant,
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            entries: HashMap::new(),
        }
    }

    fn failures(&self, key: &K, now: Instant, window: Duration) -> u32 {
        match self.entries.get(key) {
            Some(e) if now.duration_since(e.last) < window => e.failures,
            _ => 0,
        }
    }

    /// The entry of `key`, reset when stale, after making room for it.
    fn slot(&mut self, key: K, now: Instant, window: Duration, max: usize) -> &mut Entry {
        if self.entries.len() >= max && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, e| now.duration_since(e.last) < window || e.next > now);
            if self.entries.len() >= max {
                // Still full of fresh entries: drop the oldest one.
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        let e = self.entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            next: now,
        });
        if now.duration_since(e.last) >= window {
            e.failures = 0;
        }
        e
    }
}

/// What admission decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Proceed with the check after this wait (zero for a clean network).
    Wait(Duration),
    /// Too many attempts queued: answer `<temporary-auth-failure/>` without checking.
    Busy,
}

/// Shared by every connection of an edge.
#[derive(Debug)]
pub struct AuthLimiter {
    limits: AuthLimits,
    by_net: Mutex<Table<NetKey>>,
    by_account: Mutex<Table<(String, NetKey)>>,
}

impl AuthLimiter {
    pub fn new(limits: AuthLimits) -> Self {
        AuthLimiter {
            limits,
            by_net: Mutex::new(Table::new()),
            by_account: Mutex::new(Table::new()),
        }
    }

    /// Admits one password attempt for `account` from `ip` and counts it as a failure until
    /// [`AuthLimiter::succeeded`] refunds it. Call it before the credentials are read.
    pub fn admit(&self, ip: IpAddr, account: &str) -> Admission {
        let now = Instant::now();
        let net = NetKey::of(ip);
        let acct = (account.to_owned(), net);
        let l = &self.limits;
        let (Ok(mut nets), Ok(mut accts)) = (self.by_net.lock(), self.by_account.lock()) else {
            return Admission::Busy;
        };
        // Where each schedule would place this attempt, before committing to either.
        let at_net = nets.slot(net, now, l.window, l.max_entries).next;
        let at_acct = accts.slot(acct.clone(), now, l.window, l.max_entries).next;
        let at = at_net.max(at_acct).max(now);
        if at.duration_since(now) > l.max_wait {
            return Admission::Busy;
        }
        for (e, free) in [
            (nets.entries.get_mut(&net), l.free_network_failures),
            (accts.entries.get_mut(&acct), l.free_failures),
        ] {
            if let Some(e) = e {
                e.failures = e.failures.saturating_add(1);
                e.last = now;
                // Each schedule spaces its own attempts: another account's waits do not
                // hold up this network's other accounts.
                e.next = e.next.max(now) + self.delay_for(e.failures, free);
            }
        }
        Admission::Wait(at.duration_since(now))
    }

    /// The attempt admitted for `account` from `ip` succeeded: its failure is refunded, and
    /// the (account, network) schedule starts again from zero.
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        let net = NetKey::of(ip);
        if let Ok(mut t) = self.by_net.lock()
            && let Some(e) = t.entries.get_mut(&net)
        {
            e.failures = e.failures.saturating_sub(1);
        }
        if let Ok(mut t) = self.by_account.lock() {
            t.entries.remove(&(account.to_owned(), net));
        }
    }

    /// The attempt was not a password guess after all (an unsupported channel binding): it
    /// is refunded on both schedules.
    pub fn refund(&self, ip: IpAddr, account: &str) {
        let net = NetKey::of(ip);
        if let Ok(mut t) = self.by_net.lock()
            && let Some(e) = t.entries.get_mut(&net)
        {
            e.failures = e.failures.saturating_sub(1);
        }
        if let Ok(mut t) = self.by_account.lock()
            && let Some(e) = t.entries.get_mut(&(account.to_owned(), net))
        {
            e.failures = e.failures.saturating_sub(1);
        }
    }

    /// Counts one attempt of a rate-limited action (a registration) from `ip`, successful or
    /// not, and says whether it is within the free allowance of the window.
    pub fn attempt(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let l = &self.limits;
        let Ok(mut t) = self.by_net.lock() else {
            return false;
        };
        let e = t.slot(NetKey::of(ip), now, l.window, l.max_entries);
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        e.failures <= l.free_failures
    }

    /// Counted failures of the network of `ip` (for tests and diagnostics).
    pub fn failures(&self, ip: IpAddr) -> u32 {
        let now = Instant::now();
        self.by_net
            .lock()
            .map(|t| t.failures(&NetKey::of(ip), now, self.limits.window))
            .unwrap_or(0)
    }

    fn delay_for(&self, failures: u32, free: u32) -> Duration {
        let l = &self.limits;
        if failures <= free {
            return Duration::ZERO;
        }
        let exp = (failures - free - 1).min(16);
        l.base_delay.saturating_mul(1u32 << exp).min(l.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn wait(a: Admission) -> Duration {
        match a {
            Admission::Wait(d) => d,
            Admission::Busy => panic!("refused"),
        }
    }

    #[test]
    fn parallel_attempts_queue_behind_each_other() {
        let lim = AuthLimiter::new(AuthLimits::default());
        // Attempts admitted at once (as from many connections): the first three are free,
        // then each waits for the previous slot plus a doubling spacing.
        let waits: Vec<Duration> = (0..9).map(|_| wait(lim.admit(ip(1), "a@x"))).collect();
        let ms: Vec<u128> = waits
            .iter()
            .map(|d| (d.as_millis() + 5) / 10 * 10)
            .collect();
        assert_eq!(ms, [0, 0, 0, 0, 250, 750, 1750, 3750, 7750]);
        // The next would wait longer than max_wait (7.75 s + 8 s): refused, not counted.
        assert_eq!(lim.admit(ip(1), "a@x"), Admission::Busy);
        assert_eq!(lim.failures(ip(1)), 9);
        // Another account from the same network is within the network's allowance.
        assert_eq!(lim.admit(ip(1), "b@x"), Admission::Wait(Duration::ZERO));
    }

    #[test]
    fn spraying_many_accounts_from_one_network_is_bounded_too() {
        let lim = AuthLimiter::new(AuthLimits {
            free_network_failures: 5,
            ..AuthLimits::default()
        });
        let waits: Vec<Duration> = (0..8)
            .map(|n| wait(lim.admit(ip(1), &format!("u{n}@x"))))
            .collect();
        let ms: Vec<u128> = waits
            .iter()
            .map(|d| (d.as_millis() + 5) / 10 * 10)
            .collect();
        assert_eq!(ms, [0, 0, 0, 0, 0, 0, 250, 750]);
        // Parallel successful logins refund their attempts.
        for n in 0..8 {
            lim.succeeded(ip(1), &format!("u{n}@x"));
        }
        assert_eq!(lim.failures(ip(1)), 0);
    }

    #[test]
    fn success_and_failure_face_the_same_wait() {
        // The wait is decided before the check: two limiters fed the same history give the
        // same wait whatever the outcome of the attempt was.
        let a = AuthLimiter::new(AuthLimits::default());
        let b = AuthLimiter::new(AuthLimits::default());
        for _ in 0..5 {
            let _ = a.admit(ip(1), "u@x");
            let _ = b.admit(ip(1), "u@x");
        }
        let wa = wait(a.admit(ip(1), "u@x"));
        let wb = wait(b.admit(ip(1), "u@x"));
        assert!(wa.abs_diff(wb) < Duration::from_millis(20), "{wa:?} {wb:?}");
        // A success only refunds its own attempt: the network stays throttled.
        a.succeeded(ip(1), "u@x");
        assert_eq!(a.failures(ip(1)), 5);
    }

    #[test]
    fn attacker_does_not_delay_the_user_from_another_network() {
        let lim = AuthLimiter::new(AuthLimits::default());
        for _ in 0..9 {
            let _ = lim.admit(ip(1), "victim@x");
        }
        assert_eq!(lim.admit(ip(1), "victim@x"), Admission::Busy);
        assert_eq!(
            lim.admit(ip(2), "victim@x"),
            Admission::Wait(Duration::ZERO)
        );
    }

    #[test]
    fn ipv6_is_keyed_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(NetKey::of(a), NetKey::of(b));
        assert_ne!(NetKey::of(a), NetKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(NetKey::of(mapped), NetKey::of(ip(1)));
        let lim = AuthLimiter::new(AuthLimits::default());
        for _ in 0..9 {
            let _ = lim.admit(a, "x@y");
        }
        // Another address of the same /64: still behind the queue; another /64 is not.
        assert_eq!(lim.admit(b, "x@y"), Admission::Busy);
        assert_eq!(lim.admit(c, "x@y"), Admission::Wait(Duration::ZERO));
    }

    #[test]
    fn registrations_count_every_attempt() {
        let lim = AuthLimiter::new(AuthLimits::default());
        assert!(lim.attempt(ip(1)));
        assert!(lim.attempt(ip(1)));
        assert!(lim.attempt(ip(1)));
        assert!(!lim.attempt(ip(1)));
        assert!(lim.attempt(ip(2)));
    }

    #[test]
    fn tables_stay_bounded() {
        let lim = AuthLimiter::new(AuthLimits {
            max_entries: 8,
            ..AuthLimits::default()
        });
        for n in 0..50 {
            let _ = lim.admit(ip(n), "a@x");
        }
        let len = |m: &Mutex<Table<NetKey>>| m.lock().map(|t| t.entries.len()).unwrap_or(9);
        assert!(len(&lim.by_net) <= 8);
    }
}
