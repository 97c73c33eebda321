//! Refusing guessers: after too many wrong credentials from one address, that address is refused
//! outright for a while (SIP REGISTER and conference joins, and the HTTP API share one guard).
//! Every refusal is audited by the caller of this module, but a blocked address's flood is
//! audited once per block, so the audit log cannot be flooded through it either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Wrong credentials allowed from one address within [`WINDOW`] before it is blocked.
pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a blocked address is refused without checking what it sends.
pub const BLOCK_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Entry {
    failures: u32,
    since: Option<Instant>,
    blocked_until: Option<Instant>,
    /// Requests refused during the current block.
    refused_while_blocked: u32,
}

/// What to do with a request from an address, before looking at its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Check,
    /// Refuse without checking; `audit` on the first refusal of the block only.
    Blocked {
        audit: bool,
    },
}

/// Addresses tracked at most; beyond, new ones are not tracked until old entries expire.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct AuthGuard {
    by_ip: HashMap<IpAddr, Entry>,
    /// When the table was last swept of expired entries (at most once a second when full).
    swept: Option<Instant>,
}

/// The key an address is counted under: IPv4 as it is, IPv6 by its /64 (one subscriber's
/// network: rotating through its addresses must not multiply the allowance).
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// The guard shared by the SIP engine and the HTTP API.
pub type SharedGuard = Arc<Mutex<AuthGuard>>;

impl AuthGuard {
    pub fn shared() -> SharedGuard {
        Arc::new(Mutex::new(AuthGuard::default()))
    }

    pub fn gate(&mut self, ip: IpAddr, now: Instant) -> Gate {
        let ip = key(ip);
        let Some(e) = self.by_ip.get_mut(&ip) else { return Gate::Check };
        match e.blocked_until {
            Some(until) if until > now => {
                e.refused_while_blocked += 1;
                Gate::Blocked { audit: e.refused_while_blocked == 1 }
            }
            Some(_) => {
                self.by_ip.remove(&ip);
                Gate::Check
            }
            None => Gate::Check,
        }
    }

    /// Wrong credentials from `ip`. Returns true when this failure blocks it.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = key(ip);
        if self.by_ip.len() >= MAX_TRACKED && !self.by_ip.contains_key(&ip) {
            // Bounded, and never a scan per request: expired entries are swept at most once a
            // second; while the table stays full, new addresses go untracked (still refused
            // each time for their wrong credentials, and audited).
            if self.swept.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
                self.swept = Some(now);
                self.by_ip.retain(|_, e| {
                    e.blocked_until.is_some_and(|u| u > now)
                        || e.since.is_some_and(|s| now.saturating_duration_since(s) <= WINDOW)
                });
            }
            if self.by_ip.len() >= MAX_TRACKED {
                return false;
            }
        }
        let e = self.by_ip.entry(ip).or_default();
        if e.since.is_none_or(|s| now.saturating_duration_since(s) > WINDOW) {
            e.since = Some(now);
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= MAX_FAILURES {
            e.blocked_until = Some(now + BLOCK_FOR);
            e.refused_while_blocked = 0;
            return true;
        }
        false
    }

    /// Good credentials: the address's count starts again.
    pub fn succeeded(&mut self, ip: IpAddr) {
        let ip = key(ip);
        if self.by_ip.get(&ip).is_some_and(|e| e.blocked_until.is_none()) {
            self.by_ip.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_audits_once_per_block() {
        let mut g = AuthGuard::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 1..MAX_FAILURES {
            assert_eq!(g.gate(ip, t0), Gate::Check);
            assert!(!g.failed(ip, t0), "blocked after {i}");
        }
        assert!(g.failed(ip, t0));
        assert_eq!(g.gate(ip, t0), Gate::Blocked { audit: true });
        assert_eq!(g.gate(ip, t0), Gate::Blocked { audit: false });
        assert_eq!(g.gate(other, t0), Gate::Check);
        // Good credentials during a block do not lift it.
        g.succeeded(ip);
        assert_eq!(g.gate(ip, t0 + Duration::from_secs(1)), Gate::Blocked { audit: false });
        assert_eq!(g.gate(ip, t0 + BLOCK_FOR + Duration::from_secs(1)), Gate::Check);
    }

    #[test]
    fn an_ipv6_subscriber_is_counted_by_its_64_and_the_table_stays_bounded() {
        let mut g = AuthGuard::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            g.failed(ip, t0);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(g.gate(same_64, t0), Gate::Blocked { audit: true }, "rotating addresses in one /64");
        assert_eq!(g.gate("2001:db8:1:3::1".parse().unwrap(), t0), Gate::Check);
        // Full of live entries: a new address is not tracked, and nothing grows.
        let mut g = AuthGuard::default();
        for i in 0..MAX_TRACKED as u32 {
            g.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(!g.failed("198.51.100.1".parse().unwrap(), t0));
        assert_eq!(g.by_ip.len(), MAX_TRACKED);
        // Once they expire, the next failure sweeps them and is tracked.
        let later = t0 + WINDOW + BLOCK_FOR + Duration::from_secs(2);
        g.failed("198.51.100.1".parse().unwrap(), later);
        assert_eq!(g.by_ip.len(), 1);
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_block() {
        let mut g = AuthGuard::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut t = Instant::now();
        for _ in 0..3 * MAX_FAILURES {
            assert!(!g.failed(ip, t));
            t += WINDOW / (MAX_FAILURES - 1) + Duration::from_secs(1);
        }
    }
}
