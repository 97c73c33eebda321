//! Live route health (issue 13): every route is asked `OPTIONS` (RFC 3261 §11) every
//! `routing.health_interval_s`, over its own transport, and is up or down with hysteresis — two
//! answers in a row to come up, two failures in a row to go down — so one lost datagram does
//! not flap it. A down route is tried last for a new call, never left out: an emergency call
//! always has every route. Sans-I/O: the engine sends the probes this module asks for and hands
//! back their answers, failures and time.
//!
//! What counts as an answer: any final response but 503 (RFC 3261 §21.5.4: the server is
//! overloaded or in maintenance) — a 404 or 405 proves a SIP server is there and listening.
//! Not an answer within the route timeout, a 503, or a transport failure is a failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sip::transaction::{ClientKey, Peer};

/// Answers in a row that bring a route (back) up, failures in a row that take it down.
const UP_AFTER: u32 = 2;
const DOWN_AFTER: u32 = 2;

/// What sosdesk believes of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// Not probed yet (or probing is off).
    Unknown,
    Up,
    Down,
}

/// A route's state, last answer and round-trip time (`GET /api/v1/routes`, `sosdesk routes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteHealthReport {
    pub route: String,
    pub target: String,
    pub state: HealthState,
    /// Since when it is in this state.
    pub since: Option<DateTime<Utc>>,
    /// The last probe's outcome: `200 OK`, `503 Service Unavailable`, `no answer within 3000 ms`.
    pub last: Option<String>,
    pub last_at: Option<DateTime<Utc>>,
    /// Round-trip time of the last answered probe.
    pub rtt_ms: Option<f64>,
    /// The trunk registration (`register = true`): `registered until …`, `failing: …`.
    #[serde(default)]
    pub registration: Option<String>,
}

/// A route that changed state: audited (`route-up` / `route-down`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthChange {
    pub route: String,
    pub up: bool,
    pub detail: String,
}

struct Probe {
    report: RouteHealthReport,
    peer: Peer,
    /// Answers (positive) or failures (negative) in a row.
    streak: i32,
    next_at: Instant,
    /// The probe waiting for its answer: its transaction and when it left.
    waiting: Option<(ClientKey, Instant)>,
    /// No policy uses the route since a reload (`engine/reconfigure.rs`): not probed, not
    /// reported; kept only for the plans of calls that started before.
    retired: bool,
}

pub struct RouteHealth {
    probes: Vec<Probe>,
    every: Duration,
    timeout: Duration,
    by_key: HashMap<ClientKey, usize>,
}

impl RouteHealth {
    /// Routes `(name, peer)` in config order; `every` zero: probing is off (every route stays
    /// `unknown` and plans keep their order). The first probes leave at once.
    pub fn new(routes: Vec<(String, Peer)>, every: Duration, timeout: Duration, now: Instant) -> RouteHealth {
        let probes = routes.into_iter().map(|(route, peer)| Probe::new(route, peer, now)).collect();
        RouteHealth { probes, every, timeout: timeout.min(every.max(Duration::from_millis(1))), by_key: HashMap::new() }
    }

    /// A route added by a reload: probed at once, like the others at start. Its index is the
    /// next one (`Engine::reconfigure` appends routes, never moves one).
    pub fn add(&mut self, route: String, peer: Peer, now: Instant) {
        self.probes.push(Probe::new(route, peer, now));
    }

    /// A reload left the route to no policy (`retired`), or gave it back to one.
    pub fn set_retired(&mut self, route: usize, retired: bool, now: Instant) {
        if let Some(p) = self.probes.get_mut(route) {
            if p.retired && !retired {
                p.next_at = now;
            }
            p.retired = retired;
            if let Some((key, _)) = p.waiting.take().filter(|_| retired) {
                self.by_key.remove(&key);
            }
        }
    }
}

impl Probe {
    fn new(route: String, peer: Peer, now: Instant) -> Probe {
        Probe {
            report: RouteHealthReport {
                route,
                target: peer.to_string(),
                state: HealthState::Unknown,
                since: None,
                last: None,
                last_at: None,
                rtt_ms: None,
                registration: None,
            },
            peer,
            streak: 0,
            next_at: now,
            waiting: None,
            retired: false,
        }
    }
}

impl RouteHealth {
    fn enabled(&self) -> bool {
        !self.every.is_zero()
    }

    /// When the next probe is due or the next waiting one times out.
    pub fn next_timeout(&self) -> Option<Instant> {
        if !self.enabled() {
            return None;
        }
        (self.probes.iter().filter(|p| !p.retired))
            .map(|p| p.waiting.as_ref().map(|(_, sent)| *sent + self.timeout).unwrap_or(p.next_at))
            .min()
    }

    /// Routes whose probe is due now (the engine sends each and calls [`RouteHealth::sent`]).
    pub fn due(&self, now: Instant) -> Vec<(usize, Peer)> {
        if !self.enabled() {
            return Vec::new();
        }
        (self.probes.iter().enumerate())
            .filter(|(_, p)| !p.retired && p.waiting.is_none() && p.next_at <= now)
            .map(|(i, p)| (i, p.peer))
            .collect()
    }

    /// Where route `route`'s probes go.
    pub fn peer(&self, route: usize) -> Option<Peer> {
        self.probes.get(route).map(|p| p.peer)
    }

    /// The route's address changed (its name resolved anew): probes go there; `target` is what
    /// an admin reads.
    pub fn set_peer(&mut self, route: usize, peer: Peer, target: String) {
        if let Some(p) = self.probes.get_mut(route) {
            p.peer = peer;
            p.report.target = target;
        }
    }

    /// A probe that could not leave (the route's name has not resolved) fails now.
    pub fn failed(&mut self, route: usize, detail: String, now: Instant, wall: DateTime<Utc>) -> Option<HealthChange> {
        let every = self.every;
        let p = self.probes.get_mut(route)?;
        p.next_at = now + every;
        Self::outcome(p, false, detail, wall)
    }

    pub fn sent(&mut self, route: usize, key: ClientKey, now: Instant) {
        if let Some(p) = self.probes.get_mut(route) {
            p.waiting = Some((key.clone(), now));
            p.next_at = now + self.every;
            self.by_key.insert(key, route);
        }
    }

    /// Whether `key` is a probe's transaction.
    pub fn owns(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// A final response to a probe.
    pub fn on_response(
        &mut self,
        key: &str,
        status: u16,
        reason: &str,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Option<HealthChange> {
        let route = self.by_key.remove(key)?;
        let p = &mut self.probes[route];
        let sent = p.waiting.take().map(|(_, at)| at)?;
        p.report.rtt_ms = Some(now.duration_since(sent).as_secs_f64() * 1000.0);
        Self::outcome(p, status != 503, format!("{status} {reason}"), wall)
    }

    /// Probes that have waited past the timeout fail; returns the transactions to abandon and
    /// the routes that changed state.
    pub fn on_timeout(&mut self, now: Instant, wall: DateTime<Utc>) -> (Vec<ClientKey>, Vec<HealthChange>) {
        let (mut abandon, mut changes) = (Vec::new(), Vec::new());
        let ms = self.timeout.as_millis();
        for p in &mut self.probes {
            if p.waiting.as_ref().is_some_and(|(_, sent)| now >= *sent + self.timeout) {
                let (key, _) = p.waiting.take().expect("checked");
                self.by_key.remove(&key);
                abandon.push(key);
                changes.extend(Self::outcome(p, false, format!("no answer within {ms} ms"), wall));
            }
        }
        (abandon, changes)
    }

    /// The transport could not reach `peer` (TCP refused, ICMP unreachable): its waiting probe
    /// fails now. Returns the transactions to abandon and the changes.
    pub fn on_unreachable(&mut self, peer: Peer, wall: DateTime<Utc>) -> (Vec<ClientKey>, Vec<HealthChange>) {
        let (mut abandon, mut changes) = (Vec::new(), Vec::new());
        for p in self.probes.iter_mut().filter(|p| p.peer == peer) {
            if let Some((key, _)) = p.waiting.take() {
                self.by_key.remove(&key);
                abandon.push(key);
                changes.extend(Self::outcome(p, false, "unreachable".to_string(), wall));
            }
        }
        (abandon, changes)
    }

    fn outcome(p: &mut Probe, answered: bool, what: String, wall: DateTime<Utc>) -> Option<HealthChange> {
        p.report.last = Some(what.clone());
        p.report.last_at = Some(wall);
        p.streak = match (answered, p.streak) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        let to = match p.report.state {
            // The first answer says it is there; a route never heard needs two failures.
            HealthState::Unknown if p.streak >= 1 => HealthState::Up,
            HealthState::Down if p.streak >= UP_AFTER as i32 => HealthState::Up,
            HealthState::Unknown | HealthState::Up if p.streak <= -(DOWN_AFTER as i32) => HealthState::Down,
            s => s,
        };
        if to == p.report.state {
            return None;
        }
        let was = p.report.state;
        p.report.state = to;
        p.report.since = Some(wall);
        let up = to == HealthState::Up;
        // Said from the first answer too, so that every desk shows the route as up at once.
        let detail = if up && was == HealthState::Unknown {
            format!("route {} answers ({what})", p.report.route)
        } else if up {
            format!("route {} answers again ({what})", p.report.route)
        } else {
            format!("route {} is down: {DOWN_AFTER} probes in a row failed (last: {what})", p.report.route)
        };
        Some(HealthChange { route: p.report.route.clone(), up, detail })
    }

    pub fn is_down(&self, route: usize) -> bool {
        self.probes.get(route).is_some_and(|p| p.report.state == HealthState::Down)
    }

    /// `plan` with the routes that are down moved to the end of their tier (the first
    /// `first_tier` routes, then the rest), in their order: tried last, never left out.
    pub fn order(&self, plan: &mut [usize], first_tier: usize) {
        let split = first_tier.min(plan.len());
        let (first, then) = plan.split_at_mut(split);
        first.sort_by_key(|r| self.is_down(*r));
        then.sort_by_key(|r| self.is_down(*r));
    }

    pub fn report(&self) -> Vec<RouteHealthReport> {
        self.probes.iter().map(|p| p.report.clone()).collect()
    }

    pub fn is_retired(&self, route: usize) -> bool {
        self.probes.get(route).is_some_and(|p| p.retired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

    fn health(now: Instant) -> RouteHealth {
        let peer = |port| Peer { transport: Transport::Udp, addr: ([127, 0, 0, 1], port).into() };
        RouteHealth::new(
            vec![("primary".into(), peer(5070)), ("secondary".into(), peer(5071))],
            Duration::from_secs(30),
            Duration::from_secs(3),
            now,
        )
    }

    #[test]
    fn up_and_down_with_hysteresis_and_down_routes_tried_last() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut h = health(t0);
        assert_eq!(h.due(t0).len(), 2, "the first probes leave at once");
        h.sent(0, "k1".into(), t0);
        h.sent(1, "k2".into(), t0);
        assert_eq!(h.next_timeout(), Some(t0 + Duration::from_secs(3)));
        // The primary answers (even 404 proves a SIP server): up.
        let first = h.on_response("k1", 404, "Not Found", t0 + Duration::from_millis(12), wall).unwrap();
        assert!(first.up && first.detail == "route primary answers (404 Not Found)", "{first:?}");
        assert_eq!(h.report()[0].state, HealthState::Up);
        assert_eq!(h.report()[0].rtt_ms, Some(12.0));
        // The secondary says nothing: one failure is not down yet.
        let (abandon, changes) = h.on_timeout(t0 + Duration::from_secs(3), wall);
        assert_eq!((abandon, changes), (vec!["k2".to_string()], vec![]));
        assert_eq!(h.report()[1].state, HealthState::Unknown);
        assert_eq!(h.report()[1].last.as_deref(), Some("no answer within 3000 ms"));
        // The next round, 30 s later: the primary 503 (once: still up), the secondary silent again: down.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(h.due(t1).len(), 2);
        h.sent(0, "k3".into(), t1);
        h.sent(1, "k4".into(), t1);
        assert_eq!(h.on_response("k3", 503, "Service Unavailable", t1, wall), None);
        assert_eq!(h.report()[0].state, HealthState::Up);
        let (_, changes) = h.on_timeout(t1 + Duration::from_secs(3), wall);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].up && changes[0].detail.starts_with("route secondary is down"), "{changes:?}");
        let mut plan = vec![1, 0];
        h.order(&mut plan, 2);
        assert_eq!(plan, [0, 1], "the down route last, never left out");
        // Within its tier only: the first tier (an ECRC without location) stays first.
        let mut plan = vec![1, 0];
        h.order(&mut plan, 1);
        assert_eq!(plan, [1, 0]);
        // A second 503 takes the primary down; both down: the plan keeps its order.
        let t2 = t1 + Duration::from_secs(30);
        h.sent(0, "k5".into(), t2);
        let change = h.on_response("k5", 503, "Service Unavailable", t2, wall).unwrap();
        assert!(!change.up && change.detail.contains("last: 503 Service Unavailable"), "{change:?}");
        let mut plan = vec![1, 0];
        h.order(&mut plan, 2);
        assert_eq!(plan, [1, 0]);
        // Back up only after two answers in a row.
        let t3 = t2 + Duration::from_secs(30);
        h.sent(0, "k6".into(), t3);
        assert_eq!(h.on_response("k6", 200, "OK", t3, wall), None);
        assert!(h.is_down(0));
        let t4 = t3 + Duration::from_secs(30);
        h.sent(0, "k7".into(), t4);
        let up = h.on_response("k7", 200, "OK", t4, wall).unwrap();
        assert!(up.up && up.detail == "route primary answers again (200 OK)", "{up:?}");
    }

    #[test]
    fn an_unreachable_route_fails_at_once_and_probing_can_be_off() {
        let t0 = Instant::now();
        let mut h = health(t0);
        h.sent(1, "k".into(), t0);
        let peer = Peer { transport: Transport::Udp, addr: ([127, 0, 0, 1], 5071).into() };
        let (abandon, _) = h.on_unreachable(peer, Utc::now());
        assert_eq!(abandon, ["k"]);
        assert_eq!(h.report()[1].last.as_deref(), Some("unreachable"));
        let off = RouteHealth::new(vec![], Duration::ZERO, Duration::from_secs(3), t0);
        assert_eq!((off.next_timeout(), off.due(t0).len()), (None, 0));
    }
}
