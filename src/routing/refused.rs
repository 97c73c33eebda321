//! Refused requests, tallied: junk never fills the audit log or the call history.
//!
//! Anyone can send sosdesk an ordinary INVITE, a malformed datagram or a REGISTER with made-up
//! credentials, thousands a second. Each is still answered at once (404, 400, 403…), but
//! recorded as one [`CallEventKind::Refused`] record per source address and interval, with
//! counts per reason and the first few requests as samples, instead of one row per message.
//!
//! Growth is bounded whatever the flood: at most [`MAX_SOURCES`] sources get a record of their
//! own per interval; the sources beyond share one `other` record. So an interval writes at most
//! `MAX_SOURCES + 1` records (about 1 KB each with the chain's columns), however many messages
//! and addresses it saw. Sans-I/O: time comes in, records come out.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::clock::Now;
use crate::events::{CallEvent, CallEventKind, Caller};

/// How long one record covers.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Sources with a record of their own per interval.
pub const MAX_SOURCES: usize = 64;
/// Requests kept as samples per record.
const MAX_SAMPLES: usize = 3;
/// Characters kept of a sample.
const SAMPLE_CHARS: usize = 200;
/// Distinct reasons kept per record (a reason names a method and a status, so this is only
/// reached by hostile variety); the rest are counted under `other`.
const MAX_REASONS: usize = 16;
/// Distinct addresses counted in the `other` record (beyond it, the count says "at least").
const MAX_OTHER_ADDRESSES: usize = 65_536;

#[derive(Debug, Default)]
struct SourceCount {
    count: u32,
    reasons: BTreeMap<String, u32>,
    samples: Vec<String>,
}

impl SourceCount {
    fn add(&mut self, reason: &str, n: u32, sample: impl FnOnce() -> String) {
        self.count = self.count.saturating_add(n);
        // Keys are stored as shown (shortened, control characters replaced): looked up the same
        // way, or a long reason (a caller-chosen user name) would restart its count each time.
        let shown;
        let reason = if reason.chars().nth(SAMPLE_CHARS).is_some() || reason.chars().any(char::is_control) {
            shown = shorten(reason);
            shown.as_str()
        } else {
            reason
        };
        let key = if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(reason) { reason } else { "other" };
        match self.reasons.get_mut(key) {
            Some(c) => *c = c.saturating_add(n),
            None => {
                self.reasons.insert(key.to_string(), n);
            }
        }
        // Formatting a sample costs; after the first few, a message costs a counter.
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(shorten(&sample()));
        }
    }
}

#[derive(Debug)]
struct Window {
    since: DateTime<Utc>,
    ends: Instant,
    sources: BTreeMap<IpAddr, SourceCount>,
    others: SourceCount,
    other_addresses: HashSet<IpAddr>,
}

/// The refused requests of the current interval.
#[derive(Debug, Default)]
pub struct RefusalTally {
    open: Option<Window>,
}

impl RefusalTally {
    /// A request from `source` was refused for `reason` (e.g. `"INVITE 404 not an emergency
    /// number"`); `sample` describes what was sent, and is only called for the first few.
    pub fn add(&mut self, source: IpAddr, reason: &str, sample: impl FnOnce() -> String, now: Now) {
        self.add_n(source, reason, 1, sample, now)
    }

    /// `n` requests refused alike (the unspecified address: dropped before anyone read them).
    pub fn add_n(&mut self, source: IpAddr, reason: &str, n: u32, sample: impl FnOnce() -> String, now: Now) {
        let w = self.open.get_or_insert_with(|| Window {
            since: now.wall,
            ends: now.mono + INTERVAL,
            sources: BTreeMap::new(),
            others: SourceCount::default(),
            other_addresses: HashSet::new(),
        });
        if let Some(s) = w.sources.get_mut(&source) {
            s.add(reason, n, sample);
        } else if w.sources.len() < MAX_SOURCES {
            w.sources.entry(source).or_default().add(reason, n, sample);
        } else {
            if w.other_addresses.len() < MAX_OTHER_ADDRESSES {
                w.other_addresses.insert(source);
            }
            w.others.add(reason, n, sample);
        }
    }

    /// When the open interval ends (its records are then due).
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|w| w.ends)
    }

    /// The interval's records once it has ended; nothing before.
    pub fn close_if_due(&mut self, now: Now) -> Vec<CallEvent> {
        match &self.open {
            Some(w) if w.ends <= now.mono => self.close(now.wall),
            _ => Vec::new(),
        }
    }

    /// The open interval's records now (the core is stopping).
    pub fn close(&mut self, at: DateTime<Utc>) -> Vec<CallEvent> {
        let Some(w) = self.open.take() else { return Vec::new() };
        let mut out: Vec<CallEvent> =
            w.sources.into_iter().map(|(ip, s)| record(source_name(ip), w.since, at, s, 1)).collect();
        if w.others.count > 0 {
            out.push(record("other".into(), w.since, at, w.others, w.other_addresses.len() as u32));
        }
        out
    }
}

/// The unspecified address counts what was dropped before it could be read.
fn source_name(ip: IpAddr) -> String {
    if ip.is_unspecified() {
        "unknown (dropped unread)".into()
    } else {
        ip.to_string()
    }
}

fn record(source: String, since: DateTime<Utc>, at: DateTime<Utc>, s: SourceCount, addresses: u32) -> CallEvent {
    let caller = Caller { source: source.clone(), ..Caller::nobody() };
    let kind =
        CallEventKind::Refused { source, since, count: s.count, reasons: s.reasons, samples: s.samples, addresses };
    CallEvent::of_no_call(format!("refused-{}", crate::sip::ids::new_call_ref()), caller, String::new(), kind, at)
}

/// At most [`SAMPLE_CHARS`] characters, control characters made visible (a sample is
/// caller-controlled text, read in a terminal by `sosdesk refused`).
fn shorten(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(SAMPLE_CHARS)
        .map(|c| match c {
            '\r' | '\n' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect();
    if s.chars().nth(SAMPLE_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, s: u64) -> Now {
        Now { mono: t0 + Duration::from_secs(s), wall: DateTime::from_timestamp(1_700_000_000 + s as i64, 0).unwrap() }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_flood_from_one_source_is_one_record_per_interval() {
        let t0 = Instant::now();
        let mut t = RefusalTally::default();
        let mut sampled = 0;
        for i in 0..10_000 {
            t.add(
                ip(1),
                "INVITE 404 not an emergency number",
                || {
                    sampled += 1;
                    format!("INVITE sip:{i}@x")
                },
                at(t0, 1),
            );
        }
        t.add(ip(1), "malformed 400", || "bad".into(), at(t0, 2));
        assert_eq!(sampled, MAX_SAMPLES, "samples are only formatted for the first few");
        assert!(t.close_if_due(at(t0, 60)).is_empty(), "the interval is still open");
        let recs = t.close_if_due(at(t0, 61));
        assert_eq!(recs.len(), 1);
        let CallEventKind::Refused { source, count, reasons, samples, addresses, since } = &recs[0].kind else {
            panic!("{recs:?}")
        };
        assert_eq!((source.as_str(), *count, *addresses), ("10.0.0.1", 10_001, 1));
        assert_eq!(reasons["INVITE 404 not an emergency number"], 10_000);
        assert_eq!(reasons["malformed 400"], 1);
        assert_eq!(samples, &["INVITE sip:0@x", "INVITE sip:1@x", "INVITE sip:2@x"]);
        assert_eq!(*since, at(t0, 1).wall);
        assert!(!recs[0].kind.is_of_a_call());
        assert_eq!(t.deadline(), None, "nothing open once closed");
    }

    #[test]
    fn many_sources_are_bounded_to_their_own_records_and_one_shared() {
        let t0 = Instant::now();
        let mut t = RefusalTally::default();
        for n in 0..5_000 {
            t.add(ip(n), "REGISTER 403 bad credentials", || format!("REGISTER from {n}"), at(t0, 0));
        }
        let recs = t.close(at(t0, 5).wall);
        assert_eq!(recs.len(), MAX_SOURCES + 1);
        let CallEventKind::Refused { source, count, addresses, .. } = &recs[MAX_SOURCES].kind else { panic!() };
        assert_eq!(
            (source.as_str(), *count, *addresses),
            ("other", 5_000 - MAX_SOURCES as u32, 5_000 - MAX_SOURCES as u32)
        );
    }

    #[test]
    fn a_long_or_odd_reason_is_counted_under_one_key() {
        let t0 = Instant::now();
        let mut t = RefusalTally::default();
        let long = format!("REGISTER 403 bad credentials: wrong password for \"{}\"", "u".repeat(300));
        for _ in 0..5 {
            t.add(ip(1), &long, String::new, at(t0, 0));
            t.add(ip(1), "INVITE 404 a\r\nb", String::new, at(t0, 0));
        }
        let recs = t.close(at(t0, 1).wall);
        let CallEventKind::Refused { reasons, count, .. } = &recs[0].kind else { panic!() };
        assert_eq!(*count, 10);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons.values().all(|n| *n == 5), "{reasons:?}");
    }

    #[test]
    fn hostile_variety_of_reasons_and_long_samples_stay_bounded() {
        let t0 = Instant::now();
        let mut t = RefusalTally::default();
        for n in 0..100 {
            t.add(ip(1), &format!("X{n} 501"), || format!("{}\r\nEvil: {}", "A".repeat(500), n), at(t0, 0));
        }
        let recs = t.close(at(t0, 1).wall);
        let CallEventKind::Refused { reasons, samples, .. } = &recs[0].kind else { panic!() };
        assert_eq!(reasons.len(), MAX_REASONS + 1);
        assert_eq!(reasons["other"], 100 - MAX_REASONS as u32);
        assert!(samples.iter().all(|s| s.chars().count() == SAMPLE_CHARS + 1 && !s.contains('\n')), "{samples:?}");
    }
}
