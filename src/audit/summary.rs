//! The per-call summary (`calls` table) and how each event changes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{CallEvent, CallEventKind};

/// Where a call stands, from its lifecycle events. Side events (notified, desk joined/left,
/// acknowledged) leave it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "kebab-case")]
pub enum CallOutcome {
    /// Recognised, no route tried yet (or the core stopped before it could).
    Detected,
    /// Sent on a route (or a route failed and the next is being tried, or every route failed
    /// and the plan is about to be retried).
    Routing,
    /// An inbound PSAP callback to an ELIN.
    Callback,
    Ringing,
    Answered,
    /// Over. `answered_at` tells whether it had been answered.
    Ended,
    /// Every route failed.
    Failed,
    /// Not an emergency call; refused.
    Rejected,
}

impl CallOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            CallOutcome::Detected => "detected",
            CallOutcome::Routing => "routing",
            CallOutcome::Callback => "callback",
            CallOutcome::Ringing => "ringing",
            CallOutcome::Answered => "answered",
            CallOutcome::Ended => "ended",
            CallOutcome::Failed => "failed",
            CallOutcome::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<CallOutcome> {
        Some(match s {
            "detected" => CallOutcome::Detected,
            "routing" => CallOutcome::Routing,
            "callback" => CallOutcome::Callback,
            "ringing" => CallOutcome::Ringing,
            "answered" => CallOutcome::Answered,
            "ended" => CallOutcome::Ended,
            "failed" => CallOutcome::Failed,
            "rejected" => CallOutcome::Rejected,
            _ => return None,
        })
    }

    /// Progress through a call. A later event only moves the outcome forward, so a late 180 after
    /// the 200, or a stray event after the end, cannot make a finished call look live again.
    fn rank(self) -> u8 {
        match self {
            CallOutcome::Detected => 0,
            CallOutcome::Routing | CallOutcome::Callback => 1,
            CallOutcome::Ringing => 2,
            CallOutcome::Answered => 3,
            CallOutcome::Ended | CallOutcome::Failed | CallOutcome::Rejected => 4,
        }
    }

    fn is_final(self) -> bool {
        self.rank() == 4
    }

    /// The outcome an event kind stands for; `None` for side events.
    fn of(kind: &CallEventKind) -> Option<CallOutcome> {
        Some(match kind {
            CallEventKind::Detected => CallOutcome::Detected,
            CallEventKind::Routed | CallEventKind::RouteFailed { .. } | CallEventKind::Retrying { .. } => {
                CallOutcome::Routing
            }
            CallEventKind::Callback { .. } => CallOutcome::Callback,
            CallEventKind::Ringing { .. } => CallOutcome::Ringing,
            CallEventKind::Answered => CallOutcome::Answered,
            CallEventKind::Ended { .. } => CallOutcome::Ended,
            CallEventKind::Failed { .. } => CallOutcome::Failed,
            CallEventKind::Rejected { .. } => CallOutcome::Rejected,
            CallEventKind::Acknowledged { .. }
            | CallEventKind::DeskJoined { .. }
            | CallEventKind::DeskLeft { .. }
            | CallEventKind::DeskJoinRefused { .. }
            | CallEventKind::ConferenceFailed { .. }
            | CallEventKind::PartyLeft { .. }
            | CallEventKind::Recorded { .. }
            | CallEventKind::RecordingFailed { .. }
            | CallEventKind::Notified { .. }
            | CallEventKind::Escalated { .. }
            | CallEventKind::Refused { .. }
            | CallEventKind::RouteUp { .. }
            | CallEventKind::RouteDown { .. }
            | CallEventKind::UnlocatedNetwork { .. }
            | CallEventKind::DeviceMoved { .. }
            | CallEventKind::ConfigReloaded { .. }
            | CallEventKind::ConfigRefused { .. }
            | CallEventKind::UserLocationChanged { .. } => return None,
        })
    }
}

/// One row of call history: everything a security officer needs to see at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct CallSummary {
    pub call_id: String,
    /// Global seq of the call's first and latest audit event.
    #[ts(type = "number")]
    pub first_seq: i64,
    #[ts(type = "number")]
    pub last_seq: i64,
    #[ts(type = "number")]
    pub event_count: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub caller_number: String,
    /// Untrusted caller-controlled text: show as text, never as markup.
    pub caller_name: Option<String>,
    pub dialed: String,
    pub normalized: String,
    pub test_call: bool,
    pub policy: String,
    pub site: Option<String>,
    /// `LocationSnapshot::describe()` of the latest event.
    pub location: String,
    /// `LocationSource::as_str()` of the latest event.
    pub location_source: String,
    /// Name of the last route the call was on, or last tried.
    pub route: Option<String>,
    pub outcome: CallOutcome,
    /// Detail of the event that set the outcome (e.g. the failure reason).
    pub outcome_detail: String,
    /// First answer. With outcome `ended`, tells an answered call from an abandoned one.
    pub answered_at: Option<DateTime<Utc>>,
    /// The first acknowledgement (the one that silenced the alert).
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When the call was over (ended, failed or rejected).
    pub ended_at: Option<DateTime<Utc>>,
}

impl CallSummary {
    /// The summary of a call whose first stored event is `ev` (global seq `seq`).
    pub(crate) fn start(seq: i64, ev: &CallEvent) -> CallSummary {
        let mut s = CallSummary {
            call_id: ev.call_id.clone(),
            first_seq: seq,
            last_seq: seq,
            event_count: 0,
            first_at: ev.at,
            last_at: ev.at,
            caller_number: String::new(),
            caller_name: None,
            dialed: String::new(),
            normalized: String::new(),
            test_call: false,
            policy: String::new(),
            site: None,
            location: String::new(),
            location_source: String::new(),
            route: None,
            outcome: CallOutcome::Detected,
            outcome_detail: String::new(),
            answered_at: None,
            acknowledged_by: None,
            acknowledged_at: None,
            ended_at: None,
        };
        s.apply(seq, ev);
        s
    }

    /// Folds one more event of this call into the summary.
    pub(crate) fn apply(&mut self, seq: i64, ev: &CallEvent) {
        self.event_count += 1;
        self.last_seq = self.last_seq.max(seq);
        self.first_at = self.first_at.min(ev.at);
        self.last_at = self.last_at.max(ev.at);
        // Every event carries the whole picture; the latest one is the best knowledge (a caller's
        // location can be refined during the call).
        self.caller_number = ev.caller.number.clone();
        self.caller_name = ev.caller.display_name.clone();
        self.dialed = ev.dialed.clone();
        self.normalized = ev.normalized.clone();
        self.test_call = ev.test_call;
        self.policy = ev.policy.clone();
        self.site = ev.site.clone();
        self.location = ev.location.describe();
        self.location_source = ev.location.source.as_str().to_string();
        if let Some(r) = &ev.route {
            self.route = Some(r.name.clone());
        }
        if let Some(new) = CallOutcome::of(&ev.kind) {
            let cur = self.outcome;
            // Forward only; among equals the latest wins (callback → routing), except that the
            // first final state stays (a Failed followed by the core's Ended is still "failed").
            let moves = new.rank() > cur.rank() || (new.rank() == cur.rank() && !cur.is_final());
            if moves {
                self.outcome = new;
                self.outcome_detail = event_detail(&ev.kind);
            }
        }
        match &ev.kind {
            CallEventKind::Answered => {
                self.answered_at.get_or_insert(ev.at);
            }
            CallEventKind::Ended { .. } | CallEventKind::Failed { .. } | CallEventKind::Rejected { .. } => {
                self.ended_at.get_or_insert(ev.at);
            }
            CallEventKind::Acknowledged { by, .. } if self.acknowledged_at.is_none() => {
                self.acknowledged_by = Some(by.clone());
                self.acknowledged_at = Some(ev.at);
            }
            _ => {}
        }
    }
}

/// One line of human detail for an event kind (CSV `detail` column, `outcome_detail`).
pub fn event_detail(kind: &CallEventKind) -> String {
    match kind {
        CallEventKind::Detected | CallEventKind::Routed | CallEventKind::Answered => String::new(),
        CallEventKind::RouteFailed { reason } => reason.clone(),
        CallEventKind::Retrying { round, next_in_ms } => {
            format!("every route failed: round {round} in {:.1} s", *next_in_ms as f64 / 1000.0)
        }
        CallEventKind::Ringing { status } => status.to_string(),
        CallEventKind::Failed { status, reason } | CallEventKind::Rejected { status, reason } => {
            format!("{status} {reason}")
        }
        CallEventKind::Ended { by, reason } => format!("by {by}: {reason}"),
        CallEventKind::Callback { elin, to_original, target } => {
            let to = if *to_original { "original caller" } else { "fallback" };
            format!("ELIN {elin} to {to} {target}")
        }
        CallEventKind::Acknowledged { by, desk } if desk.is_empty() => format!("by {by}"),
        CallEventKind::Acknowledged { by, desk } => format!("by {by} at {desk}"),
        CallEventKind::DeskJoined { desk, mode, auto } => {
            format!("{desk} ({mode}{})", if *auto { ", called by sosdesk" } else { "" })
        }
        CallEventKind::DeskLeft { desk, reason } => format!("{desk}: {reason}"),
        CallEventKind::DeskJoinRefused { desk, status, reason } => format!("{desk}: {status} {reason}"),
        CallEventKind::ConferenceFailed { target, reason } => format!("{target}: {reason}"),
        CallEventKind::PartyLeft { party } => party.clone(),
        CallEventKind::Recorded { path, sha256, duration_ms } => {
            format!("{path} ({:.1} s, sha256 {sha256})", *duration_ms as f64 / 1000.0)
        }
        CallEventKind::RecordingFailed { reason } => reason.clone(),
        CallEventKind::Refused { count, reasons, addresses, .. } => {
            let mut by: Vec<(&String, &u32)> = reasons.iter().collect();
            by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let by: Vec<String> = by.iter().map(|(r, n)| format!("{n} × {r}")).collect();
            let from = if *addresses > 1 { format!(" from {addresses} addresses") } else { String::new() };
            format!("{count} refused{from}: {}", by.join("; "))
        }
        CallEventKind::Notified { uri, ok, detail } => {
            format!("{uri} {}: {detail}", if *ok { "ok" } else { "failed" })
        }
        CallEventKind::Escalated { tier, tiers, targets, next_tier_in_ms } => {
            let whom: Vec<String> = targets.iter().map(|t| format!("{} {} {}", t.kind, t.channel, t.target)).collect();
            let next = match next_tier_in_ms {
                Some(ms) => format!("; tier {} in {:.0} s unless acknowledged", tier + 1, *ms as f64 / 1000.0),
                None => String::new(),
            };
            format!("tier {tier} of {tiers} alerted: {}{next}", whom.join(", "))
        }
        CallEventKind::RouteUp { detail, .. } | CallEventKind::RouteDown { detail, .. } => detail.clone(),
        CallEventKind::UnlocatedNetwork { element_kind, element, device, asked, outcome } => {
            format!("new unlocated {element_kind} {element}: a {asked} from {device} fell back to {outcome}")
        }
        CallEventKind::DeviceMoved { mac, from, to } => format!("device {mac} moved from {from} to {to}"),
        CallEventKind::ConfigReloaded { file, detail } => format!("{file} reloaded: {detail}"),
        CallEventKind::ConfigRefused { file, reason } => format!("{file} refused, the running config kept: {reason}"),
        CallEventKind::UserLocationChanged { owner, change, by, via, from, location, network } => {
            let from = if from.is_empty() { String::new() } else { format!(" from {from}") };
            match change.as_str() {
                "cleared" => format!("user-entered location of {owner} cleared by {by} ({via}{from})"),
                _ => format!(
                    "user-entered location of {owner} {change} by {by} ({via}{from}): {location}; network: {network}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Caller, CALL_EVENT_VERSION};
    use crate::location::LocationSnapshot;
    use chrono::TimeZone;

    fn ev(call_seq: u32, kind: CallEventKind) -> CallEvent {
        CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: "c1".into(),
            seq: call_seq,
            at: Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, call_seq).unwrap(),
            caller: Caller {
                number: "+14255550123".into(),
                display_name: Some("Alice".into()),
                uri: "sip:alice@example.com".into(),
                source: "udp:192.0.2.10:5060".into(),
            },
            dialed: "911".into(),
            normalized: "911".into(),
            test_call: false,
            policy: "hq".into(),
            site: None,
            location: LocationSnapshot::none(),
            route: None,
            kind,
        }
    }

    fn fold(kinds: Vec<CallEventKind>) -> CallSummary {
        let mut it = kinds.into_iter().enumerate().map(|(i, k)| (i as i64 + 1, ev(i as u32 + 1, k)));
        let (seq, first) = it.next().unwrap();
        let mut s = CallSummary::start(seq, &first);
        for (seq, e) in it {
            s.apply(seq, &e);
        }
        s
    }

    #[test]
    fn late_provisional_does_not_undo_the_answer() {
        let s = fold(vec![CallEventKind::Detected, CallEventKind::Answered, CallEventKind::Ringing { status: 180 }]);
        assert_eq!(s.outcome, CallOutcome::Answered);
        assert_eq!(s.event_count, 3);
    }

    #[test]
    fn first_final_state_stays() {
        let s = fold(vec![
            CallEventKind::Detected,
            CallEventKind::Failed { status: 503, reason: "all routes failed".into() },
            CallEventKind::Ended { by: "core".into(), reason: "failed".into() },
        ]);
        assert_eq!(s.outcome, CallOutcome::Failed);
        assert_eq!(s.outcome_detail, "503 all routes failed");
        assert_eq!(s.ended_at, Some(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 2).unwrap()));
    }

    #[test]
    fn a_call_retrying_its_routes_is_routing_with_the_round_in_the_detail() {
        let s = fold(vec![
            CallEventKind::Detected,
            CallEventKind::Routed,
            CallEventKind::RouteFailed { reason: "503 Service Unavailable".into() },
            CallEventKind::Retrying { round: 2, next_in_ms: 1000 },
        ]);
        assert_eq!(s.outcome, CallOutcome::Routing);
        assert_eq!(s.outcome_detail, "every route failed: round 2 in 1.0 s");
        assert_eq!(s.ended_at, None);
    }

    #[test]
    fn side_events_leave_the_outcome_and_first_ack_stays() {
        let s = fold(vec![
            CallEventKind::Detected,
            CallEventKind::Routed,
            CallEventKind::Acknowledged { by: "officer.a".into(), desk: String::new() },
            CallEventKind::Acknowledged { by: "officer.b".into(), desk: String::new() },
            CallEventKind::Notified { uri: "sip:desk@example.com".into(), ok: true, detail: "202".into() },
        ]);
        assert_eq!(s.outcome, CallOutcome::Routing);
        assert_eq!(s.acknowledged_by.as_deref(), Some("officer.a"));
        assert_eq!(s.acknowledged_at, Some(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 3).unwrap()));
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in [
            CallOutcome::Detected,
            CallOutcome::Routing,
            CallOutcome::Callback,
            CallOutcome::Ringing,
            CallOutcome::Answered,
            CallOutcome::Ended,
            CallOutcome::Failed,
            CallOutcome::Rejected,
        ] {
            assert_eq!(CallOutcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::Value::String(o.as_str().into()));
        }
    }
}
