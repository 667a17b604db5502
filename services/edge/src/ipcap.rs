//! Per-address connection caps: how many connections one client address may hold open, and
//! how many of those may still be unauthenticated. IPv4 addresses count one by one; IPv6
//! addresses count per /64 (what one subscriber usually gets), IPv4-mapped IPv6 as IPv4.
//!
//! A [`Permit`] is taken at accept and released when the connection ends (on drop); it moves
//! from the unauthenticated count to the authenticated one at SASL success.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The caps; 0 turns a cap off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpCapConfig {
    /// Open connections per address (IPv6: per /64).
    pub max_per_ip: usize,
    /// Open connections per address that have not authenticated yet.
    pub max_unauthenticated_per_ip: usize,
    /// Loopback addresses (127.0.0.0/8, ::1) are not counted.
    pub exempt_loopback: bool,
}

impl Default for IpCapConfig {
    fn default() -> Self {
        IpCapConfig {
            max_per_ip: 500,
            max_unauthenticated_per_ip: 32,
            exempt_loopback: false,
        }
    }
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections from this address")]
    Total,
    #[error("too many unauthenticated connections from this address")]
    Unauthenticated,
}

/// The key an address is counted under.
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask: u128 = !0 << 64;
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

#[derive(Default, Debug)]
struct Count {
    total: usize,
    unauthenticated: usize,
}

/// The counters of every address with an open connection (an address is forgotten when its
/// last connection ends, so the map is bounded by the open connections).
#[derive(Debug)]
pub struct IpCaps {
    config: IpCapConfig,
    counts: Mutex<HashMap<IpAddr, Count>>,
}

/// One counted connection. Dropping it releases its counts.
#[derive(Debug)]
pub struct Permit {
    caps: Option<Arc<IpCaps>>,
    key: IpAddr,
    authenticated: bool,
}

impl IpCaps {
    pub fn new(config: IpCapConfig) -> Arc<Self> {
        Arc::new(IpCaps {
            config,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new unauthenticated connection from `ip`, or refuses it.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let key = key(ip);
        // Loopback is judged on the address itself (`::1` masked to its /64 would not be).
        let loopback = match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        };
        let exempt = self.config.exempt_loopback && loopback;
        let off = self.config.max_per_ip == 0 && self.config.max_unauthenticated_per_ip == 0;
        if exempt || off {
            return Ok(Permit {
                caps: None,
                key,
                authenticated: false,
            });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let c = counts.entry(key).or_default();
        let cap = |max: usize, n: usize| max != 0 && n >= max;
        let refused = if cap(self.config.max_per_ip, c.total) {
            Some(Refused::Total)
        } else if cap(self.config.max_unauthenticated_per_ip, c.unauthenticated) {
            Some(Refused::Unauthenticated)
        } else {
            None
        };
        if let Some(r) = refused {
            if c.total == 0 {
                counts.remove(&key);
            }
            return Err(r);
        }
        c.total += 1;
        c.unauthenticated += 1;
        Ok(Permit {
            caps: Some(self.clone()),
            key,
            authenticated: false,
        })
    }

    /// Open (total, unauthenticated) connections counted for `ip`'s key.
    pub fn count(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&key(ip))
            .map_or((0, 0), |c| (c.total, c.unauthenticated))
    }

    /// Addresses with open connections.
    pub fn tracked(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Permit {
    /// The connection authenticated: it no longer counts against the unauthenticated cap.
    pub fn authenticated(&mut self) {
        if self.authenticated {
            return;
        }
        self.authenticated = true;
        if let Some(caps) = &self.caps {
            let mut counts = caps.counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = counts.get_mut(&self.key) {
                c.unauthenticated = c.unauthenticated.saturating_sub(1);
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(caps) = self.caps.take() else {
            return;
        };
        let mut counts = caps.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counts.get_mut(&self.key) {
            c.total = c.total.saturating_sub(1);
            if !self.authenticated {
                c.unauthenticated = c.unauthenticated.saturating_sub(1);
            }
            if c.total == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_count_per_address_and_release_on_drop() {
        let caps = IpCaps::new(IpCapConfig {
            max_per_ip: 3,
            max_unauthenticated_per_ip: 2,
            exempt_loopback: false,
        });
        let a = ip("192.0.2.1");
        let mut p1 = caps.acquire(a).unwrap();
        let p2 = caps.acquire(a).unwrap();
        // Two unauthenticated from one address: the third waits for one to authenticate.
        assert_eq!(caps.acquire(a).unwrap_err(), Refused::Unauthenticated);
        // Another address is not affected.
        let other = caps.acquire(ip("192.0.2.2")).unwrap();
        p1.authenticated();
        p1.authenticated();
        assert_eq!(caps.count(a), (2, 1));
        let p3 = caps.acquire(a).unwrap();
        // Three open in total: the fourth is refused even after authentications.
        assert_eq!(caps.acquire(a).unwrap_err(), Refused::Total);
        drop(p2);
        assert_eq!(caps.count(a), (2, 1));
        let p4 = caps.acquire(a).unwrap();
        drop((p1, p3, p4, other));
        assert_eq!(caps.count(a), (0, 0));
        // Nothing is kept for addresses without connections, refused ones included.
        assert_eq!(caps.tracked(), 0);
        let _ = caps.acquire(ip("192.0.2.9"));
        assert_eq!(caps.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_per_slash_64() {
        let caps = IpCaps::new(IpCapConfig {
            max_per_ip: 2,
            max_unauthenticated_per_ip: 2,
            exempt_loopback: false,
        });
        let _a = caps.acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = caps.acquire(ip("2001:db8:1:2:ffff:1:2:3")).unwrap();
        assert_eq!(
            caps.acquire(ip("2001:db8:1:2:aaaa::9")).unwrap_err(),
            Refused::Total
        );
        // The next /64 is someone else.
        let _c = caps.acquire(ip("2001:db8:1:3::1")).unwrap();
        // IPv4-mapped IPv6 is the IPv4 address.
        assert_eq!(key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn loopback_is_exempt_only_when_configured() {
        let strict = IpCaps::new(IpCapConfig {
            max_per_ip: 1,
            max_unauthenticated_per_ip: 1,
            exempt_loopback: false,
        });
        let _p = strict.acquire(ip("127.0.0.1")).unwrap();
        assert!(strict.acquire(ip("127.0.0.1")).is_err());
        // Each loopback address is its own address.
        assert!(strict.acquire(ip("127.0.0.2")).is_ok());
        let lax = IpCaps::new(IpCapConfig {
            max_per_ip: 1,
            max_unauthenticated_per_ip: 1,
            exempt_loopback: true,
        });
        let _ps: Vec<_> = (0..10).map(|_| lax.acquire(ip("::1")).unwrap()).collect();
        assert!(lax.acquire(ip("192.0.2.1")).is_ok());
        assert_eq!(lax.tracked(), 0);
        // Both caps at zero: off.
        let off = IpCaps::new(IpCapConfig {
            max_per_ip: 0,
            max_unauthenticated_per_ip: 0,
            exempt_loopback: false,
        });
        let _ps: Vec<_> = (0..10)
            .map(|_| off.acquire(ip("192.0.2.1")).unwrap())
            .collect();
    }
}
