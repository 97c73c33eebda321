//! The ELIN callback cache: when a call goes out through an ELIN gateway, the caller's number is
//! replaced by the ERL's ELIN; a PSAP that calls that ELIN back within the configured time
//! (Skype for Business: 180 minutes by default) must reach the original caller.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sip::transaction::Peer;

#[derive(Debug, Clone)]
pub struct ElinMapping {
    pub call_ref: String,
    pub caller_number: String,
    pub caller_display: Option<String>,
    /// Where the original call came from (the PBX or the phone): callbacks go there.
    pub caller_peer: Peer,
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
    pub expires: chrono::DateTime<chrono::Utc>,
}

impl SharedElin {
    /// The mapping as this node's cache keeps it, `now` being both clocks at once.
    pub fn to_mapping(&self, now: crate::clock::Now) -> ElinMapping {
        let left = (self.expires - now.wall).to_std().unwrap_or(Duration::ZERO);
        ElinMapping {
            call_ref: self.call_ref.clone(),
            caller_number: self.caller_number.clone(),
            caller_display: self.caller_display.clone(),
            caller_peer: self.caller_peer,
            expires: now.mono + left,
        }
    }
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

    /// Choose the ELIN for a call (`call_ref`) from an ERL's ELINs: the one the call already
    /// holds (an attempt of a retry round presents the same ELIN as the round before), else one
    /// with no live mapping if there is one (so concurrent callers at one location stay
    /// distinguishable), else the one whose mapping is oldest.
    pub fn pick<'a>(&self, elins: &'a [String], call_ref: &str, now: Instant) -> Option<&'a str> {
        elins
            .iter()
            .find(|e| self.lookup(e, now).is_some_and(|m| m.call_ref == call_ref))
            .or_else(|| elins.iter().find(|e| self.lookup(e, now).is_none()))
            .or_else(|| elins.iter().min_by_key(|e| self.map.get(e.as_str()).map(|m| m.expires)))
            .map(String::as_str)
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
}
