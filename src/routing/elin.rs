//! The ELIN callback cache: when a call goes out through an ELIN gateway, the caller's number is
//! replaced by the ERL's ELIN; a PSAP that calls that ELIN back within the configured time
//! (Skype for Business: 180 minutes by default) must reach the original caller.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::sip::transaction::{Peer, Reconnect};

#[derive(Debug, Clone)]
pub struct ElinMapping {
    pub call_ref: String,
    pub caller_number: String,
    pub caller_display: Option<String>,
    /// Where the original call came from (the PBX or the phone): callbacks go there. Over TCP
    /// or TLS this is the connection the call came over, while it lasts.
    pub caller_peer: Peer,
    /// Where a callback opens a new connection once that one has closed: see
    /// [`SharedElin::caller_reconnect`].
    pub caller_reconnect: Option<Reconnect>,
    pub expires: Instant,
}

/// A mapping as the store keeps it (`elin_callbacks`, `crate::shared::callbacks`): with a
/// wall-clock expiry, which every node can read (an `Instant` means nothing to another process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedElin {
    pub elin: String,
    pub call_ref: String,
    pub caller_number: String,
    pub caller_display: Option<String>,
    pub caller_peer: Peer,
    /// For a call that came over TCP or TLS, where a new connection to the caller goes: the
    /// call's next hop (its Record-Route, else its Contact: RFC 3261 §12.2.1.1), over the same
    /// transport, never in clear after TLS; a hop that names a host is reached at the address
    /// the call came from, and over TLS its certificate must carry that name. The connection
    /// the call came over is the accepting node's and ends in time; its far end is an
    /// ephemeral port that takes no new connections. `None` over UDP (the source address is
    /// the caller's own).
    pub caller_reconnect: Option<Reconnect>,
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl SharedElin {
    /// The mapping as this node's cache keeps it, `now` being both clocks at once. It came from
    /// the store, so the connection its call came over (if over TCP or TLS) is not this node's
    /// (or was, before a restart): the callback opens a new one, to `caller_reconnect`.
    pub fn to_mapping(&self, now: crate::clock::Now) -> ElinMapping {
        let left = (self.expires - now.wall).to_std().unwrap_or(Duration::ZERO);
        let caller_peer = match &self.caller_reconnect {
            Some(to) if self.caller_peer.transport.reliable() => to.peer,
            _ => self.caller_peer,
        };
        ElinMapping {
            call_ref: self.call_ref.clone(),
            caller_number: self.caller_number.clone(),
            caller_display: self.caller_display.clone(),
            caller_peer,
            caller_reconnect: self.caller_reconnect.clone(),
            expires: now.mono + left,
        }
    }
}

/// A call about to go out through an ELIN gateway when several nodes share the store: the ERL's
/// ELINs in the order this node prefers them ([`ElinCache::preference`]) and the mapping to
/// write for whichever the store gives (`mapping.elin` is filled in by the claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElinClaim {
    pub candidates: Vec<String>,
    pub mapping: SharedElin,
}

#[derive(Debug)]
pub struct ElinCache {
    ttl: Duration,
    map: HashMap<String, ElinMapping>,
}

impl ElinCache {
    pub fn new(ttl: Duration) -> Self {
        ElinCache { ttl, map: HashMap::new() }
    }

    /// How long a mapping lives (`routing.elin_callback_minutes`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Choose the ELIN for a call (`call_ref`) from an ERL's ELINs: the first of
    /// [`preference`](Self::preference).
    pub fn pick<'a>(&self, elins: &'a [String], call_ref: &str, now: Instant) -> Option<&'a str> {
        self.preference(elins, call_ref, now).into_iter().next()
    }

    /// An ERL's ELINs in the order a call (`call_ref`) should take them: the one the call already
    /// holds (an attempt of a retry round presents the same ELIN as the round before), then those
    /// with no live mapping (so concurrent callers at one location stay distinguishable), then
    /// the others, oldest mapping first. With several nodes the store claims them in this order
    /// (`crate::shared::callbacks::CallbackStore::claim`): what is free here may be another
    /// node's.
    pub fn preference<'a>(&self, elins: &'a [String], call_ref: &str, now: Instant) -> Vec<&'a str> {
        let mut order: Vec<(u8, Option<Instant>, usize, &'a str)> = elins
            .iter()
            .enumerate()
            .map(|(i, e)| match self.lookup(e, now) {
                Some(m) if m.call_ref == call_ref => (0, None, i, e.as_str()),
                None => (1, None, i, e.as_str()),
                Some(m) => (2, Some(m.expires), i, e.as_str()),
            })
            .collect();
        order.sort();
        let mut seen = HashSet::new();
        order.into_iter().map(|(.., e)| e).filter(|e| seen.insert(*e)).collect()
    }

    pub fn insert(&mut self, elin: &str, mut m: ElinMapping, now: Instant) {
        m.expires = now + self.ttl;
        self.map.insert(elin.to_string(), m);
        // Expired entries are dropped as new ones arrive: the map stays as small as the
        // number of ELINs in use.
        if self.map.len() > 64 {
            self.map.retain(|_, v| v.expires > now);
        }
    }

    /// A mapping another node (or this one before a restart) wrote to the store, live until
    /// `expires`: kept as it is, not given a fresh window.
    pub fn insert_until(&mut self, elin: &str, m: ElinMapping) {
        self.map.insert(elin.to_string(), m);
    }

    /// The caller's connection `closed` has closed: mappings whose callbacks would have gone
    /// over it go to their caller's reconnect address instead (those with none stay, and their
    /// callback tries the address the connection had, which fails visibly).
    pub fn connection_closed(&mut self, closed: Peer) {
        for (elin, m) in self.map.iter_mut().filter(|(_, m)| m.caller_peer == closed) {
            match &m.caller_reconnect {
                Some(to) => {
                    tracing::info!(%elin, %closed, to = %to.peer, name = ?to.name, "the connection an ELIN's caller called over closed: its callback goes to the caller's next hop");
                    m.caller_peer = to.peer;
                }
                None => {
                    tracing::warn!(%elin, %closed, "the connection an ELIN's caller called over closed and its call gives no next hop to reconnect to: a callback will not reach the caller")
                }
            }
        }
    }

    /// The live mapping for an ELIN (a mapping is live strictly before its expiry).
    pub fn lookup(&self, elin: &str, now: Instant) -> Option<&ElinMapping> {
        self.map.get(elin).filter(|m| m.expires > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

    fn mapping(n: &str) -> ElinMapping {
        ElinMapping {
            call_ref: "c".into(),
            caller_number: n.into(),
            caller_display: None,
            caller_peer: Peer { transport: Transport::Udp, addr: "127.0.0.1:5061".parse().unwrap() },
            caller_reconnect: None,
            expires: Instant::now(),
        }
    }

    #[test]
    fn mapping_lives_for_the_window_only() {
        let t0 = Instant::now();
        let mut c = ElinCache::new(Duration::from_secs(180 * 60));
        c.insert("4255550100", mapping("1001"), t0);
        assert_eq!(c.lookup("4255550100", t0 + Duration::from_secs(179 * 60)).unwrap().caller_number, "1001");
        assert!(c.lookup("4255550100", t0 + Duration::from_secs(180 * 60)).is_none());
    }

    #[test]
    fn concurrent_callers_get_different_elins() {
        let t0 = Instant::now();
        let mut c = ElinCache::new(Duration::from_secs(60));
        let elins = vec!["100".to_string(), "200".to_string()];
        let first = c.pick(&elins, "c1", t0).unwrap().to_string();
        c.insert(&first, ElinMapping { call_ref: "c1".into(), ..mapping("1") }, t0);
        let second = c.pick(&elins, "c2", t0).unwrap().to_string();
        assert_ne!(first, second);
        c.insert(&second, ElinMapping { call_ref: "c2".into(), ..mapping("2") }, t0 + Duration::from_secs(1));
        // Both busy: reuse the oldest.
        assert_eq!(c.pick(&elins, "c3", t0 + Duration::from_secs(2)), Some("100"));
        // A call retrying its routes keeps the ELIN it holds.
        assert_eq!(c.pick(&elins, "c2", t0 + Duration::from_secs(2)), Some("200"));
    }

    #[test]
    fn the_order_to_claim_in_is_own_then_free_then_oldest() {
        let t0 = Instant::now();
        let mut c = ElinCache::new(Duration::from_secs(60));
        let elins: Vec<String> = ["100", "200", "300", "400", "300"].map(String::from).to_vec();
        c.insert("300", ElinMapping { call_ref: "c1".into(), ..mapping("1") }, t0 + Duration::from_secs(2));
        c.insert("100", ElinMapping { call_ref: "c2".into(), ..mapping("2") }, t0 + Duration::from_secs(1));
        c.insert("400", ElinMapping { call_ref: "c3".into(), ..mapping("3") }, t0);
        let now = t0 + Duration::from_secs(3);
        // A new call: the free one, then the busy ones oldest first; a repeated ELIN once.
        assert_eq!(c.preference(&elins, "new", now), ["200", "400", "100", "300"]);
        // A call that holds one: that one first.
        assert_eq!(c.preference(&elins, "c1", now), ["300", "200", "400", "100"]);
        assert!(c.preference(&[], "new", now).is_empty());
    }
}
