//! The alert board: the calls on the officer's screen, folded from the core's `CallEvent`s.
//!
//! Pure state (no Tauri, no I/O), so every rule — several calls at once, none overwritten, test
//! calls never alarm, an acknowledgement from any desk silences — is unit-tested here.

use std::collections::{HashMap, HashSet};

use sosdesk::audit::event_detail;
use sosdesk::config::Config;
use sosdesk::events::{CallEvent, CallEventKind};
use sosdesk::location::{LocationSnapshot, LocationSource};

use crate::model::{
    AcknowledgeMode, Acknowledgement, ActiveCall, AlertedTarget, CallState, Delivery, Escalation, LocationTrust,
    RouteHealth, RouteStatus, TimelineEntry,
};

/// Finished, acknowledged calls kept on the board before the oldest are taken off by themselves.
const KEEP_FINISHED: usize = 50;

#[derive(Debug, Default)]
pub struct Board {
    /// In arrival order.
    calls: Vec<ActiveCall>,
    dismissed: HashSet<String>,
    /// This desk's name (its desk account's), as acknowledgements record it.
    me: String,
    /// Each policy's acknowledgement mode; a policy not listed is `any`.
    modes: HashMap<String, AcknowledgeMode>,
}

/// What one event did to the board.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new call appeared on the board (an emergency or a test call: see `test_call`).
    Added(ActiveCall),
    Updated(ActiveCall),
    /// Calls taken off the board to keep it bounded.
    Removed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DismissError {
    #[error("no call {0} on the board")]
    Unknown(String),
    #[error("an emergency call can only be dismissed once it is acknowledged and over")]
    StillNeeded,
}

impl Board {
    /// Folds one event in. Events of calls that are not emergency calls (rejected requests) and
    /// of dismissed calls change nothing.
    pub fn apply(&mut self, ev: &CallEvent) -> Vec<Change> {
        if ev.normalized.is_empty()
            || !ev.kind.is_of_a_call()
            || matches!(ev.kind, CallEventKind::Callback { .. })
            || self.dismissed.contains(&ev.call_id)
        {
            return Vec::new();
        }
        let mut changes = Vec::new();
        match self.calls.iter_mut().find(|c| c.call_id == ev.call_id) {
            Some(call) => {
                // A repeated event (the broadcast, the SIP alert and a catch-up overlapping) is
                // applied once; a late one is still applied (an `ended` that arrives after this
                // desk's own acknowledgement), without moving the call backwards (see `fold`).
                if call.timeline.iter().any(|t| t.seq == ev.seq) {
                    return Vec::new();
                }
                fold(call, ev, &self.me);
                changes.push(Change::Updated(call.clone()));
            }
            None => {
                let mut call = new_call(ev);
                call.acknowledge_mode = self.mode_of(&ev.policy);
                fold(&mut call, ev, &self.me);
                changes.push(Change::Added(call.clone()));
                self.calls.push(call);
                let removed = self.trim();
                if !removed.is_empty() {
                    changes.push(Change::Removed(removed));
                }
            }
        }
        changes
    }

    /// Who this desk is and how each policy's calls are acknowledged (from the config, or from
    /// the core's API for a remote desk). Returns the calls whose alarm this changed.
    pub fn set_identity(&mut self, me: &str, modes: HashMap<String, AcknowledgeMode>) -> Vec<Change> {
        self.me = me.to_string();
        self.modes = modes;
        let mut changes = Vec::new();
        for call in &mut self.calls {
            let before = (call.acknowledged_by.clone(), call.alarming, call.acknowledge_mode);
            call.acknowledge_mode = self.modes.get(&call.policy).copied().unwrap_or_default();
            settle_acknowledgement(call, &self.me);
            if before != (call.acknowledged_by.clone(), call.alarming, call.acknowledge_mode) {
                changes.push(Change::Updated(call.clone()));
            }
        }
        changes
    }

    /// This desk's name, as its acknowledgements record it.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Whether these events (one call's, from the audit log) hold an acknowledgement that counts
    /// for this desk: such a call, once over, is not brought back by a catch-up.
    pub fn acknowledged_here(&self, events: &[CallEvent]) -> bool {
        events.iter().any(|e| match &e.kind {
            CallEventKind::Acknowledged { desk, .. } => {
                self.modes.get(&e.policy).copied().unwrap_or_default() == AcknowledgeMode::Any || *desk == self.me
            }
            _ => false,
        })
    }

    pub fn modes(&self) -> &HashMap<String, AcknowledgeMode> {
        &self.modes
    }

    pub fn mode_of(&self, policy: &str) -> AcknowledgeMode {
        self.modes.get(policy).copied().unwrap_or_default()
    }

    /// Takes a finished call off the board at the officer's request.
    pub fn dismiss(&mut self, call_id: &str) -> Result<(), DismissError> {
        let i = self
            .calls
            .iter()
            .position(|c| c.call_id == call_id)
            .ok_or_else(|| DismissError::Unknown(call_id.to_string()))?;
        let c = &self.calls[i];
        let over = matches!(c.state, CallState::Ended | CallState::Failed);
        if !over || (!c.test_call && c.acknowledged_by.is_none()) {
            return Err(DismissError::StillNeeded);
        }
        self.calls.remove(i);
        self.dismissed.insert(call_id.to_string());
        Ok(())
    }

    pub fn calls(&self) -> &[ActiveCall] {
        &self.calls
    }

    pub fn get(&self, call_id: &str) -> Option<&ActiveCall> {
        self.calls.iter().find(|c| c.call_id == call_id)
    }

    /// Emergency calls not yet acknowledged: while there is one, the alarm sounds and the window
    /// stays on top.
    pub fn unacknowledged(&self) -> u32 {
        self.calls.iter().filter(|c| c.alarming).count() as u32
    }

    /// The oldest unacknowledged emergency (what the keyboard shortcut acknowledges).
    pub fn oldest_unacknowledged(&self) -> Option<&ActiveCall> {
        self.calls.iter().find(|c| c.alarming)
    }

    fn trim(&mut self) -> Vec<String> {
        let finished = |c: &ActiveCall| {
            matches!(c.state, CallState::Ended | CallState::Failed) && (c.test_call || c.acknowledged_by.is_some())
        };
        let mut excess = self.calls.iter().filter(|c| finished(c)).count().saturating_sub(KEEP_FINISHED);
        let mut removed = Vec::new();
        self.calls.retain(|c| {
            if excess > 0 && finished(c) {
                excess -= 1;
                removed.push(c.call_id.clone());
                false
            } else {
                true
            }
        });
        self.dismissed.extend(removed.iter().cloned());
        removed
    }
}

fn new_call(ev: &CallEvent) -> ActiveCall {
    let (trust, note) = location_trust(&ev.location);
    ActiveCall {
        call_id: ev.call_id.clone(),
        test_call: ev.test_call,
        detected_at: ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        caller: ev.caller.clone(),
        dialed: ev.dialed.clone(),
        normalized: ev.normalized.clone(),
        policy: ev.policy.clone(),
        site: ev.site.clone(),
        location: ev.location.clone(),
        location_trust: trust,
        location_note: note,
        route: None,
        state: CallState::Routing,
        state_detail: String::new(),
        failovers: Vec::new(),
        retry_round: None,
        acknowledged_by: None,
        acknowledged_at: None,
        acknowledgements: Vec::new(),
        acknowledge_mode: AcknowledgeMode::Any,
        alarming: !ev.test_call,
        last_seq: 0,
        timeline: Vec::new(),
        escalation: None,
    }
}

/// Folds one event in, in whatever order events arrive: the picture and the live state follow
/// the newest event, an ended or failed call stays so, the timeline is kept in sequence.
fn fold(call: &mut ActiveCall, ev: &CallEvent, me: &str) {
    let newest = ev.seq > call.last_seq || call.timeline.is_empty();
    if newest {
        // Every event carries the whole picture; the latest is the best knowledge.
        call.caller = ev.caller.clone();
        call.location = ev.location.clone();
        (call.location_trust, call.location_note) = location_trust(&ev.location);
        call.site = ev.site.clone();
        if ev.route.is_some() {
            call.route = ev.route.clone();
        }
    }
    call.last_seq = call.last_seq.max(ev.seq);
    let detail = event_detail(&ev.kind);
    let finished = matches!(call.state, CallState::Ended | CallState::Failed);
    let live = newest && !finished;
    match &ev.kind {
        CallEventKind::Detected | CallEventKind::Routed if live => match call.retry_round {
            // An attempt of a retry round: still "retrying routes", now on this route.
            Some(round) => {
                call.state = CallState::Retrying;
                let name = ev.route.as_ref().map(|r| r.name.as_str()).unwrap_or("a route");
                call.state_detail = format!("round {round}: trying {name}");
            }
            None => call.state = CallState::Routing,
        },
        CallEventKind::RouteFailed { reason } => {
            let name = ev.route.as_ref().map(|r| r.name.as_str()).unwrap_or("route");
            call.failovers.push(format!("{name}: {reason}"));
        }
        CallEventKind::Retrying { round, next_in_ms } => {
            call.retry_round = Some(call.retry_round.unwrap_or(0).max(*round));
            if live {
                call.state = CallState::Retrying;
                call.state_detail = format!("every route failed; round {round} in {} s", next_in_ms.div_ceil(1000));
            }
        }
        CallEventKind::Ringing { .. } if live && matches!(call.state, CallState::Routing | CallState::Retrying) => {
            call.state = CallState::Ringing
        }
        CallEventKind::Answered if live => call.state = CallState::Answered,
        CallEventKind::Failed { .. } if !finished => {
            call.state = CallState::Failed;
            call.state_detail = detail.clone();
        }
        CallEventKind::Ended { .. } if !finished => {
            call.state = CallState::Ended;
            call.state_detail = detail.clone();
        }
        CallEventKind::Escalated { tier, tiers, targets, next_tier_in_ms } => {
            let e = call.escalation.get_or_insert_with(|| Escalation {
                tier: 0,
                tiers: *tiers,
                next_tier_at: None,
                targets: Vec::new(),
                stopped_by: None,
            });
            for t in targets {
                if !e.targets.iter().any(|a| a.tier == *tier && a.target == t.target) {
                    e.targets.push(AlertedTarget {
                        tier: *tier,
                        channel: t.channel.clone(),
                        kind: t.kind.clone(),
                        target: t.target.clone(),
                        outcome: Delivery::Sending,
                        detail: String::new(),
                        attempts: 0,
                    });
                }
            }
            e.targets.sort_by_key(|a| a.tier);
            // Tiers may arrive out of order (a catch-up): the latest tier says what comes next.
            if *tier >= e.tier {
                e.tier = *tier;
                e.tiers = *tiers;
                e.next_tier_at = next_tier_in_ms.map(|ms| {
                    (ev.at + chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64))
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                });
            }
        }
        CallEventKind::Acknowledged { by, desk } => call.acknowledgements.push(Acknowledgement {
            by: by.clone(),
            desk: desk.clone(),
            at: ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
        _ => {}
    }
    // Oldest first, whatever arrived first (the same timestamp format throughout).
    call.acknowledgements.sort_by(|a, b| a.at.cmp(&b.at));
    settle_acknowledgement(call, me);
    let at = call.timeline.partition_point(|t| t.seq < ev.seq);
    call.timeline.insert(
        at,
        TimelineEntry {
            seq: ev.seq,
            at: ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kind: ev.kind.name().to_string(),
            detail,
            subject: match &ev.kind {
                CallEventKind::Notified { uri, detail, .. } => notified_subject(uri, detail),
                _ => String::new(),
            },
        },
    );
    settle_escalation(call);
}

/// Whom a `notified` event is about, for folding its attempts into one line and for the
/// escalation's outcomes: the target, and for an alert channel's delivery the channel too
/// (`https://hooks.slack.com via team`), since two channels may share a target (two Slack
/// channels, one webhook origin). `reach::escalation` writes its detail as
/// "<kind> via <channel> (<transport>), tier …"; the SIP notifications' details do not start so.
fn notified_subject(uri: &str, detail: &str) -> String {
    let channel = detail
        .split_once(" via ")
        .filter(|(kind, _)| !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase()))
        .and_then(|(_, rest)| rest.split_once(" ("))
        .map(|(channel, _)| channel);
    match channel {
        Some(channel) => format!("{uri} via {channel}"),
        None => uri.to_string(),
    }
}

/// Each alerted target's outcome from its `notified` lines of the timeline (whichever arrived
/// first, the tier or its outcomes), and whether an acknowledgement stopped the escalation.
fn settle_escalation(call: &mut ActiveCall) {
    let Some(e) = call.escalation.as_mut() else { return };
    for t in &mut e.targets {
        let subject = format!("{} via {}", t.target, t.channel);
        let attempts: Vec<&TimelineEntry> =
            call.timeline.iter().filter(|l| l.kind == "notified" && l.subject == subject).collect();
        t.attempts = attempts.len() as u32;
        let Some(last) = attempts.last() else { continue };
        // `event_detail` of a `notified` event: "<target> ok: <detail>" or "<target> failed: <detail>".
        let ok = last.detail.starts_with(&format!("{} ok: ", t.target));
        t.detail = last.detail.split_once(": ").map(|(_, d)| d.to_string()).unwrap_or_default();
        t.outcome = match ok {
            true => Delivery::Delivered,
            false if t.detail.contains("; retry in ") => Delivery::Retrying,
            false => Delivery::Failed,
        };
    }
    // The same timestamp format throughout: compared as text.
    e.stopped_by = match (call.acknowledgements.first(), &e.next_tier_at) {
        (Some(a), Some(next)) if a.at <= *next => Some(a.by.clone()),
        _ => None,
    };
}

/// The acknowledgement that counts for this desk, and so whether the call still alarms here:
/// `any`, the first from any desk; `each`, this desk's own (the others' are shown beside it).
fn settle_acknowledgement(call: &mut ActiveCall, me: &str) {
    let counted = match call.acknowledge_mode {
        AcknowledgeMode::Any => call.acknowledgements.first(),
        AcknowledgeMode::Each => call.acknowledgements.iter().find(|a| a.desk == me),
    };
    call.acknowledged_by = counted.map(|a| a.by.clone());
    call.acknowledged_at = counted.map(|a| a.at.clone());
    call.alarming = !call.test_call && call.acknowledged_by.is_none();
}

/// How sure the location is, in the officer's words. sosdesk's rule: only an address from the
/// organisation's own records (wiremap, HELD, manual) that passed MSAG validation is shown as
/// validated; a location the caller's device sent, the site default, or an unvalidated address is
/// to be confirmed with the caller.
pub fn location_trust(loc: &LocationSnapshot) -> (LocationTrust, String) {
    if !loc.is_known() {
        return (LocationTrust::Unknown, "No location for this caller: ask where they are.".into());
    }
    let validated = loc.erl.as_ref().is_some_and(|e| e.validated);
    let method = loc.method.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
    let how = match loc.source {
        LocationSource::ClientPidfLo => {
            return (LocationTrust::Verify, format!("Sent by the caller's own device{method}: verify with the caller."))
        }
        LocationSource::Wiremap => "Found from the network the phone is on (wiremap)",
        LocationSource::HeldCached => "The location the phone last obtained from the LIS (HELD)",
        LocationSource::SiteDefault => {
            return (
                LocationTrust::Verify,
                "The site's default location, not the caller's own position: verify with the caller.".into(),
            )
        }
        LocationSource::Manual => "Entered by hand",
        LocationSource::None => "No location",
    };
    if validated {
        (LocationTrust::Validated, format!("{how}; address validated."))
    } else {
        (LocationTrust::Verify, format!("{how}; address not validated: verify with the caller."))
    }
}

/// The routes of the config and how the last call on each went.
#[derive(Debug, Default)]
pub struct RouteBook {
    routes: Vec<RouteStatus>,
    index: HashMap<String, usize>,
}

impl RouteBook {
    pub fn from_config(cfg: &Config) -> RouteBook {
        let mut book = RouteBook::default();
        for r in &cfg.routes {
            // `udp:192.0.2.4:5060` for an address; the URI for a name (RFC 3263 resolves it).
            let target = r.target();
            book.index.insert(r.name.clone(), book.routes.len());
            book.routes.push(RouteStatus {
                name: r.name.clone(),
                target: target.literal().map(|p| p.to_string()).unwrap_or_else(|| target.to_string()),
                health: RouteHealth::Unknown,
                detail: "no call yet".into(),
                since: None,
            });
        }
        book
    }

    /// Returns whether anything changed.
    pub fn apply(&mut self, ev: &CallEvent) -> bool {
        // The core's health probes (route-up / route-down), or what a call found on its route.
        let (name, health, detail) = match (&ev.kind, &ev.route) {
            (CallEventKind::RouteUp { route, detail }, _) => (route, RouteHealth::Reachable, detail.clone()),
            (CallEventKind::RouteDown { route, detail }, _) => (route, RouteHealth::Failing, detail.clone()),
            (CallEventKind::Ringing { status }, Some(r)) => {
                (&r.name, RouteHealth::Reachable, format!("answered with {status}"))
            }
            (CallEventKind::Answered, Some(r)) => (&r.name, RouteHealth::Reachable, "call answered".to_string()),
            (CallEventKind::RouteFailed { reason }, Some(r)) => (&r.name, RouteHealth::Failing, reason.clone()),
            _ => return false,
        };
        let Some(&i) = self.index.get(name) else { return false };
        let r = &mut self.routes[i];
        r.health = health;
        r.detail = detail;
        r.since = Some(ev.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        true
    }

    /// The routes as a core elsewhere reports them (`GET /api/v1/routes`): a remote desk
    /// shows their live health from its first connection, then follows the changes.
    pub fn from_report(report: &[sosdesk::routing::health::RouteHealthReport]) -> RouteBook {
        use sosdesk::routing::health::HealthState;
        let mut book = RouteBook::default();
        for r in report {
            book.index.insert(r.route.clone(), book.routes.len());
            book.routes.push(RouteStatus {
                name: r.route.clone(),
                target: r.target.clone(),
                health: match r.state {
                    HealthState::Up => RouteHealth::Reachable,
                    HealthState::Down => RouteHealth::Failing,
                    HealthState::Unknown => RouteHealth::Unknown,
                },
                detail: r.last.clone().map(|l| format!("last probe: {l}")).unwrap_or_else(|| "not probed yet".into()),
                since: r.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            });
        }
        book
    }

    pub fn routes(&self) -> &[RouteStatus] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use sosdesk::events::{Caller, EscalationTarget, RouteInfo, RouteKind, CALL_EVENT_VERSION};
    use sosdesk::location::{CivicAddress, Erl};

    fn ev(call: &str, seq: u32, test: bool, kind: CallEventKind) -> CallEvent {
        CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: call.into(),
            seq,
            at: Utc::now(),
            caller: Caller {
                number: "+14255550100".into(),
                display_name: Some("<img src=x onerror=alert(1)>".into()),
                uri: "sip:alice@example.com".into(),
                source: "udp:127.0.0.1:5999".into(),
            },
            dialed: if test { "933".into() } else { "9911".into() },
            normalized: if test { "933".into() } else { "911".into() },
            test_call: test,
            policy: "us-hq".into(),
            site: Some("hq".into()),
            location: LocationSnapshot {
                source: LocationSource::Wiremap,
                erl: Some(Erl {
                    label: "HQ".into(),
                    civic: CivicAddress { rd: Some("Main St".into()), flr: Some("2".into()), ..Default::default() },
                    validated: true,
                    ..Default::default()
                }),
                geo: None,
                site_map: None,
                method: None,
                warnings: vec![],
            },
            route: Some(RouteInfo {
                name: "provider-primary".into(),
                kind: RouteKind::SipTrunk,
                target: "udp:127.0.0.1:5070".into(),
                attempt: 0,
                presented_number: "+14255550100".into(),
            }),
            kind,
        }
    }

    #[test]
    fn simultaneous_calls_are_all_kept_and_alarm_until_each_is_acknowledged() {
        let mut b = Board::default();
        assert!(matches!(b.apply(&ev("c1", 1, false, CallEventKind::Detected))[0], Change::Added(_)));
        assert!(matches!(b.apply(&ev("c2", 1, false, CallEventKind::Detected))[0], Change::Added(_)));
        b.apply(&ev("c1", 2, false, CallEventKind::Routed));
        assert_eq!(b.calls().len(), 2);
        assert_eq!(b.unacknowledged(), 2);
        b.apply(&ev("c1", 3, false, CallEventKind::Acknowledged { by: "Officer Jones".into(), desk: String::new() }));
        assert_eq!(b.unacknowledged(), 1);
        assert_eq!(b.oldest_unacknowledged().unwrap().call_id, "c2");
        let c1 = b.get("c1").unwrap();
        assert_eq!(c1.acknowledged_by.as_deref(), Some("Officer Jones"));
        assert_eq!(c1.caller.display_name.as_deref(), Some("<img src=x onerror=alert(1)>"));
        assert_eq!(c1.timeline.len(), 3);
    }

    #[test]
    fn each_desk_acknowledges_for_itself_where_the_policy_says_each() {
        let ack = |seq, by: &str, desk: &str| {
            ev("c", seq, false, CallEventKind::Acknowledged { by: by.into(), desk: desk.into() })
        };
        let mut lobby = Board::default();
        lobby.set_identity("Lobby desk", HashMap::from([("us-hq".to_string(), AcknowledgeMode::Each)]));
        lobby.apply(&ev("c", 1, false, CallEventKind::Detected));
        assert_eq!(lobby.get("c").unwrap().acknowledge_mode, AcknowledgeMode::Each);
        lobby.apply(&ack(2, "Officer B", "Control room"));
        let c = lobby.get("c").unwrap();
        assert!(c.alarming, "another desk's acknowledgement does not silence this one");
        assert_eq!((c.acknowledged_by.as_deref(), c.acknowledgements.len()), (None, 1));
        assert_eq!(c.acknowledgements[0].desk, "Control room");
        assert!(!lobby.acknowledged_here(&[ack(2, "Officer B", "Control room")]));
        lobby.apply(&ack(3, "Officer A", "Lobby desk"));
        let c = lobby.get("c").unwrap();
        assert!(!c.alarming);
        assert_eq!(c.acknowledged_by.as_deref(), Some("Officer A"));
        assert_eq!(c.acknowledgements.len(), 2);

        // The same events on a desk where the policy is "any": the first one clears it.
        let mut any = Board::default();
        any.set_identity("Lobby desk", HashMap::new());
        any.apply(&ev("c", 1, false, CallEventKind::Detected));
        any.apply(&ack(2, "Officer B", "Control room"));
        assert!(!any.get("c").unwrap().alarming);
        assert_eq!(any.get("c").unwrap().acknowledged_by.as_deref(), Some("Officer B"));
        assert!(any.acknowledged_here(&[ack(2, "Officer B", "Control room")]));

        // Learning the modes after the events (a remote desk reconnecting) re-settles the alarm.
        let changes = any.set_identity("Lobby desk", HashMap::from([("us-hq".to_string(), AcknowledgeMode::Each)]));
        assert_eq!(changes.len(), 1);
        assert!(any.get("c").unwrap().alarming);
    }

    #[test]
    fn a_test_call_never_alarms() {
        let mut b = Board::default();
        b.apply(&ev("t", 1, true, CallEventKind::Detected));
        assert_eq!(b.unacknowledged(), 0);
        assert!(!b.get("t").unwrap().alarming);
    }

    #[test]
    fn state_follows_the_call_and_never_goes_back() {
        let mut b = Board::default();
        b.apply(&ev("c", 1, false, CallEventKind::Detected));
        b.apply(&ev("c", 2, false, CallEventKind::RouteFailed { reason: "503 Service Unavailable".into() }));
        b.apply(&ev("c", 3, false, CallEventKind::Ringing { status: 180 }));
        assert_eq!(b.get("c").unwrap().state, CallState::Ringing);
        b.apply(&ev("c", 4, false, CallEventKind::Answered));
        b.apply(&ev("c", 5, false, CallEventKind::Ended { by: "caller".into(), reason: "BYE".into() }));
        // A stale repeat of an earlier event changes nothing.
        assert!(b.apply(&ev("c", 3, false, CallEventKind::Ringing { status: 180 })).is_empty());
        let c = b.get("c").unwrap();
        assert_eq!(c.state, CallState::Ended);
        assert_eq!(c.failovers, vec!["provider-primary: 503 Service Unavailable".to_string()]);
    }

    #[test]
    fn a_call_whose_every_route_failed_shows_retrying_routes_until_a_route_carries_it() {
        let mut b = Board::default();
        let failed = |seq| ev("c", seq, false, CallEventKind::RouteFailed { reason: "503 Service Unavailable".into() });
        b.apply(&ev("c", 1, false, CallEventKind::Detected));
        b.apply(&ev("c", 2, false, CallEventKind::Routed));
        b.apply(&failed(3));
        assert_eq!((b.get("c").unwrap().state, b.get("c").unwrap().retry_round), (CallState::Routing, None));
        b.apply(&ev("c", 4, false, CallEventKind::Retrying { round: 2, next_in_ms: 1000 }));
        let c = b.get("c").unwrap();
        assert_eq!(c.state, CallState::Retrying);
        assert_eq!(c.state_detail, "every route failed; round 2 in 1 s");
        assert_eq!(c.retry_round, Some(2));
        assert!(c.alarming, "still an emergency the officer must see");
        // The round's attempts keep it "retrying routes", naming the route being tried.
        b.apply(&ev("c", 5, false, CallEventKind::Routed));
        let c = b.get("c").unwrap();
        assert_eq!((c.state, c.state_detail.as_str()), (CallState::Retrying, "round 2: trying provider-primary"));
        b.apply(&failed(6));
        b.apply(&ev("c", 7, false, CallEventKind::Retrying { round: 3, next_in_ms: 2000 }));
        assert_eq!(b.get("c").unwrap().retry_round, Some(3));
        assert_eq!(b.get("c").unwrap().failovers.len(), 2);
        assert_eq!(b.get("c").unwrap().timeline.iter().filter(|t| t.kind == "retrying").count(), 2);
        // A route comes back: ringing, then connected.
        b.apply(&ev("c", 8, false, CallEventKind::Routed));
        b.apply(&ev("c", 9, false, CallEventKind::Ringing { status: 180 }));
        assert_eq!(b.get("c").unwrap().state, CallState::Ringing);
        b.apply(&ev("c", 10, false, CallEventKind::Answered));
        assert_eq!(b.get("c").unwrap().state, CallState::Answered);

        // Another call gives up when the window is over: failed, with the reason.
        b.apply(&ev("d", 1, false, CallEventKind::Detected));
        b.apply(&ev("d", 2, false, CallEventKind::Retrying { round: 2, next_in_ms: 1000 }));
        b.apply(&ev("d", 3, false, CallEventKind::Failed { status: 503, reason: "all 2 route(s) failed".into() }));
        let d = b.get("d").unwrap();
        assert_eq!((d.state, d.state_detail.as_str()), (CallState::Failed, "503 all 2 route(s) failed"));
        // A late retrying event does not bring a failed call back.
        b.apply(&ev("d", 2, false, CallEventKind::Retrying { round: 2, next_in_ms: 1000 }));
        assert_eq!(b.get("d").unwrap().state, CallState::Failed);
    }

    #[test]
    fn events_out_of_order_are_all_kept_and_the_newest_decides() {
        // This desk's acknowledgement (seq 4) is applied at once; the ended (3) and a late
        // ringing (2) arrive after it from the stream.
        let mut b = Board::default();
        b.apply(&ev("c", 1, false, CallEventKind::Detected));
        b.apply(&ev("c", 4, false, CallEventKind::Acknowledged { by: "o".into(), desk: String::new() }));
        assert_eq!(
            b.apply(&ev("c", 3, false, CallEventKind::Ended { by: "caller".into(), reason: "BYE".into() })).len(),
            1
        );
        b.apply(&ev("c", 2, false, CallEventKind::Ringing { status: 180 }));
        let c = b.get("c").unwrap();
        assert_eq!(c.state, CallState::Ended, "the late ended is applied; the later ringing moves nothing back");
        assert_eq!(c.timeline.iter().map(|t| t.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(c.last_seq, 4);
        assert_eq!(b.dismiss("c"), Ok(()), "acknowledged and over: it may leave the board");
        // Live states too: an answered call is not moved back by a late ringing.
        b.apply(&ev("d", 1, false, CallEventKind::Detected));
        b.apply(&ev("d", 3, false, CallEventKind::Answered));
        b.apply(&ev("d", 2, false, CallEventKind::Ringing { status: 180 }));
        assert_eq!(b.get("d").unwrap().state, CallState::Answered);
    }

    #[test]
    fn only_finished_acknowledged_emergencies_can_be_dismissed() {
        let mut b = Board::default();
        b.apply(&ev("c", 1, false, CallEventKind::Detected));
        assert_eq!(b.dismiss("c"), Err(DismissError::StillNeeded));
        b.apply(&ev("c", 2, false, CallEventKind::Ended { by: "caller".into(), reason: "BYE".into() }));
        assert_eq!(b.dismiss("c"), Err(DismissError::StillNeeded));
        b.apply(&ev("c", 3, false, CallEventKind::Acknowledged { by: "o".into(), desk: String::new() }));
        assert_eq!(b.dismiss("c"), Ok(()));
        assert!(b.calls().is_empty());
        // A late event of a dismissed call does not bring it back.
        assert!(b
            .apply(&ev("c", 4, false, CallEventKind::Acknowledged { by: "p".into(), desk: String::new() }))
            .is_empty());
        assert_eq!(b.dismiss("nope"), Err(DismissError::Unknown("nope".into())));
    }

    fn escalated(tier: u32, tiers: u32, targets: &[(&str, &str, &str)], next_ms: Option<u64>) -> CallEventKind {
        CallEventKind::Escalated {
            tier,
            tiers,
            targets: targets
                .iter()
                .map(|(channel, kind, target)| EscalationTarget {
                    channel: channel.to_string(),
                    kind: kind.to_string(),
                    target: target.to_string(),
                })
                .collect(),
            next_tier_in_ms: next_ms,
        }
    }

    fn notified(uri: &str, ok: bool, detail: &str) -> CallEventKind {
        CallEventKind::Notified { uri: uri.into(), ok, detail: detail.into() }
    }

    #[test]
    fn the_escalation_shows_its_tier_targets_outcomes_next_tier_and_who_stopped_it() {
        let t0 = Utc::now();
        let at = |mut e: CallEvent, s: i64| {
            e.at = t0 + chrono::Duration::seconds(s);
            e
        };
        let millis = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let hook = "http://127.0.0.1:9";
        let mut b = Board::default();
        b.apply(&at(ev("c", 1, false, CallEventKind::Detected), 0));
        assert_eq!(b.get("c").unwrap().escalation, None, "no tier alerted yet");
        // An outcome that arrives before its tier is folded in once the tier comes.
        let failed = "webhook via team (slack webhook), tier 1, attempt 1: failed (HTTP 503); retry in 1 s";
        b.apply(&at(ev("c", 3, false, notified(hook, false, failed)), 1));
        let tier1 = escalated(1, 2, &[("team", "webhook", hook), ("oncall", "sms", "sms:+1555")], Some(60_000));
        b.apply(&at(ev("c", 2, false, tier1), 0));
        let e = b.get("c").unwrap().escalation.clone().expect("the escalation");
        assert_eq!((e.tier, e.tiers), (1, 2));
        assert_eq!(e.next_tier_at, Some(millis(t0 + chrono::Duration::seconds(60))));
        assert_eq!((e.targets[0].channel.as_str(), e.targets[0].kind.as_str()), ("team", "webhook"));
        assert_eq!((e.targets[0].outcome, e.targets[0].attempts), (Delivery::Retrying, 1));
        assert_eq!(e.targets[0].detail, failed);
        assert_eq!((e.targets[1].outcome, e.targets[1].attempts), (Delivery::Sending, 0));

        let accepted = "webhook via team (slack webhook), tier 1, attempt 2: accepted (HTTP 200)";
        b.apply(&at(ev("c", 4, false, notified(hook, true, accepted)), 2));
        let given_up =
            "sms via oncall (SMS gateway http://127.0.0.1:8), tier 1, attempt 1: failed (HTTP 500); given up";
        b.apply(&at(ev("c", 5, false, notified("sms:+1555", false, given_up)), 2));
        let e = b.get("c").unwrap().escalation.clone().unwrap();
        assert_eq!((e.targets[0].outcome, e.targets[0].attempts), (Delivery::Delivered, 2));
        assert_eq!(e.targets[0].detail, accepted);
        assert_eq!(e.targets[1].outcome, Delivery::Failed);
        assert_eq!(e.stopped_by, None);

        // Tier 2's channel posts to the same origin (two Slack channels): its failures are its own.
        b.apply(&at(ev("c", 7, false, escalated(2, 2, &[("team-2", "webhook", hook)], None)), 60));
        let refused = "webhook via team-2 (slack webhook), tier 2, attempt 1: failed (HTTP 404); retry in 1 s";
        b.apply(&at(ev("c", 8, false, notified(hook, false, refused)), 61));
        let c = b.get("c").unwrap();
        let e = c.escalation.clone().unwrap();
        assert_eq!(
            e.targets.iter().map(|t| (t.tier, t.outcome)).collect::<Vec<_>>(),
            [(1, Delivery::Delivered), (1, Delivery::Failed), (2, Delivery::Retrying)]
        );
        let subjects: Vec<&str> =
            c.timeline.iter().filter(|t| t.kind == "notified").map(|t| t.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "http://127.0.0.1:9 via team",
                "http://127.0.0.1:9 via team",
                "sms:+1555 via oncall",
                "http://127.0.0.1:9 via team-2"
            ]
        );
    }

    #[test]
    fn an_acknowledgement_before_the_next_tier_stops_the_escalation_there() {
        let t0 = Utc::now();
        let at = |mut e: CallEvent, s: i64| {
            e.at = t0 + chrono::Duration::seconds(s);
            e
        };
        let mut b = Board::default();
        b.apply(&at(ev("c", 1, false, CallEventKind::Detected), 0));
        b.apply(&at(ev("c", 2, false, escalated(1, 2, &[("team", "webhook", "http://h:1")], Some(60_000))), 0));
        assert_eq!(b.get("c").unwrap().escalation.as_ref().unwrap().stopped_by, None);
        // Acknowledged before tier 2 was due: the escalation stopped at tier 1, and by whom.
        b.apply(&at(
            ev("c", 3, false, CallEventKind::Acknowledged { by: "Officer Lee".into(), desk: String::new() }),
            30,
        ));
        let e = b.get("c").unwrap().escalation.clone().unwrap();
        assert_eq!((e.tier, e.stopped_by.as_deref()), (1, Some("Officer Lee")));
    }

    #[test]
    fn an_acknowledgement_after_the_last_tier_stopped_nothing() {
        let mut b = Board::default();
        b.apply(&ev("c", 1, false, CallEventKind::Detected));
        b.apply(&ev("c", 2, false, escalated(1, 2, &[("first", "email", "mailto:a@example.com")], Some(0))));
        b.apply(&ev("c", 3, false, escalated(2, 2, &[("second", "email", "mailto:b@example.com")], None)));
        b.apply(&ev("c", 4, false, CallEventKind::Acknowledged { by: "o".into(), desk: String::new() }));
        let e = b.get("c").unwrap().escalation.clone().unwrap();
        assert_eq!((e.tier, e.tiers, e.next_tier_at.as_deref()), (2, 2, None));
        assert_eq!(
            e.targets.iter().map(|t| (t.tier, t.target.as_str())).collect::<Vec<_>>(),
            [(1, "mailto:a@example.com"), (2, "mailto:b@example.com")]
        );
        assert_eq!(e.stopped_by, None, "every tier had been alerted");
    }

    #[test]
    fn rejected_requests_are_not_alerts() {
        let mut b = Board::default();
        let mut e = ev("r", 1, false, CallEventKind::Rejected { status: 404, reason: "not an emergency".into() });
        e.normalized.clear();
        assert!(b.apply(&e).is_empty());
        assert!(b.calls().is_empty());
    }

    #[test]
    fn location_trust_flags_what_must_be_verified() {
        let mut loc = ev("c", 1, false, CallEventKind::Detected).location;
        assert_eq!(location_trust(&loc).0, LocationTrust::Validated);
        loc.erl.as_mut().unwrap().validated = false;
        assert_eq!(location_trust(&loc).0, LocationTrust::Verify);
        loc.source = LocationSource::ClientPidfLo;
        loc.erl.as_mut().unwrap().validated = true;
        let (t, note) = location_trust(&loc);
        assert_eq!(t, LocationTrust::Verify);
        assert!(note.contains("verify with the caller"), "{note}");
        assert_eq!(location_trust(&LocationSnapshot::none()).0, LocationTrust::Unknown);
    }
}

#[cfg(test)]
mod route_book_tests {
    use super::*;

    /// Issue 13: the core's health probes move a route's status on every desk, with or without
    /// calls; a call's own outcome still does too.
    #[test]
    fn route_up_and_down_records_set_the_routes_status() {
        let lab = include_str!("../../examples/lab.toml").replace("path = \"../sosdesk-lab.db\"", "path = \"x.db\"");
        let cfg = Config::from_toml(&lab, std::path::Path::new("lab.toml")).unwrap();
        let mut book = RouteBook::from_config(&cfg);
        let at = chrono::Utc::now();
        let down = CallEvent::route_health(
            "provider-primary".into(),
            false,
            "route provider-primary is down: 2 probes in a row failed (last: no answer within 2000 ms)".into(),
            at,
        );
        assert!(book.apply(&down));
        let r = &book.routes()[0];
        assert_eq!((r.name.as_str(), r.health), ("provider-primary", RouteHealth::Failing));
        assert!(r.detail.ends_with("(last: no answer within 2000 ms)"), "{}", r.detail);
        let up = CallEvent::route_health(
            "provider-primary".into(),
            true,
            "route provider-primary answers again (200 OK)".into(),
            at,
        );
        assert!(book.apply(&up));
        assert_eq!(book.routes()[0].health, RouteHealth::Reachable);
        // A route the desk's config does not know is ignored.
        assert!(!book.apply(&CallEvent::route_health("elsewhere".into(), false, String::new(), at)));
    }
}
