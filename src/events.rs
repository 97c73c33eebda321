//! `CallEvent`: the one contract between the routing core, the audit log and every desk.
//!
//! Every event is self-contained: it carries the caller, the dialled number and the location
//! snapshot, so a desk that connects in the middle of a call (or reads one row of the audit log)
//! sees the whole picture without replaying earlier events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::location::user_entered::{Change, UserLocation};
use crate::location::LocationSnapshot;

/// Bumped whenever a field changes meaning or is removed (adding optional fields does not bump it).
pub const CALL_EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TS)]
pub struct CallEvent {
    pub version: u32,
    /// sosdesk's own identifier of the call (not the SIP Call-ID of either leg).
    pub call_id: String,
    /// 1, 2, 3… within one call, in the order the core produced them.
    pub seq: u32,
    pub at: DateTime<Utc>,
    pub caller: Caller,
    /// The number as the caller dialled it (e.g. `9911`).
    pub dialed: String,
    /// The emergency dial string it was normalised to (e.g. `911`); empty when not an emergency call.
    pub normalized: String,
    /// A test call (e.g. `933`): routed like the real thing but never sounds an emergency alarm.
    pub test_call: bool,
    pub policy: String,
    pub site: Option<String>,
    pub location: LocationSnapshot,
    /// The route currently carrying (or last tried for) the call.
    pub route: Option<RouteInfo>,
    pub kind: CallEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Caller {
    /// Callback number: P-Asserted-Identity, else the From user part.
    pub number: String,
    /// Display name exactly as the caller's signalling sent it: untrusted text, never markup.
    pub display_name: Option<String>,
    /// The caller's From URI.
    pub uri: String,
    /// Transport address the call arrived from (`udp:192.0.2.1:5060`).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct RouteInfo {
    pub name: String,
    pub kind: RouteKind,
    /// `udp:127.0.0.1:5070`
    pub target: String,
    /// 0 for the first route of the PSTN usage, 1 for the next, …; counted on across retry
    /// rounds (with two routes, the second round's first attempt is 2).
    pub attempt: u32,
    /// The calling number presented on this route (the ELIN for an ELIN gateway).
    pub presented_number: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKind {
    SipTrunk,
    ElinGateway,
    /// Inbound PSAP callback to an ELIN, sent on to the original caller or the fallback.
    Callback,
}

/// One recipient of an escalation tier: the channel (`[[channel]] name`), its kind (`email`,
/// `sms`, `webhook`) and the target as its `notified` events name it (`mailto:…`, `sms:…`, a
/// webhook's origin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct EscalationTarget {
    pub channel: String,
    pub kind: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CallEventKind {
    /// An emergency INVITE was recognised.
    Detected,
    /// The outbound INVITE was sent on `route`.
    Routed,
    /// The route in `route` failed; the next one is tried at once (when any remains).
    RouteFailed {
        reason: String,
    },
    /// Every route of the plan failed, and the retry window (config `routing.retry_for_s`) is
    /// still open: the caller is held (182 Queued) and the whole plan is tried again from its
    /// first route in `next_in_ms`. `round` is the round about to start (2 for the first retry);
    /// each of its attempts is audited as `routed` / `route-failed` as usual.
    Retrying {
        round: u32,
        #[ts(type = "number")]
        next_in_ms: u64,
    },
    /// A provisional response (180/183) from the far end.
    Ringing {
        status: u16,
    },
    Answered,
    /// Every route failed; the caller got `status`.
    Failed {
        status: u16,
        reason: String,
    },
    /// The call ended. `by` is `caller`, `far-end`, `cancel` or `core`.
    Ended {
        by: String,
        reason: String,
    },
    /// A request to sosdesk that is not an emergency call (answered with `status`).
    Rejected {
        status: u16,
        reason: String,
    },
    /// An inbound call to an ELIN: `to_original` says whether the mapping was still live.
    Callback {
        elin: String,
        to_original: bool,
        target: String,
    },
    /// A security officer acknowledged the alert: `by` the officer, at `desk` (the desk
    /// account's name; empty for the desk app's embedded core and records before issue 6).
    Acknowledged {
        by: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        desk: String,
    },
    /// A security desk joined the call's conference: `mode` is `listen` or `talk`; `auto` when
    /// sosdesk called it (the policy's conference URI) rather than the desk joining.
    DeskJoined {
        desk: String,
        mode: String,
        auto: bool,
    },
    /// A desk left the call (the call goes on).
    DeskLeft {
        desk: String,
        reason: String,
    },
    /// A desk's join was refused with `status` (no or wrong credentials, unknown call, talk where
    /// only listening is allowed…). `desk` is the account or user name it gave, if any.
    DeskJoinRefused {
        desk: String,
        status: u16,
        reason: String,
    },
    /// Calling the policy's conference URI failed.
    ConferenceFailed {
        target: String,
        reason: String,
    },
    /// A party left while the others stay connected (last-party clear): `caller` hung up while
    /// a desk is on the call.
    PartyLeft {
        party: String,
    },
    /// The call's recording is complete: file, its SHA-256, and length.
    Recorded {
        path: String,
        sha256: String,
        #[ts(type = "number")]
        duration_ms: u64,
    },
    /// The call could not be recorded (the call itself went on).
    RecordingFailed {
        reason: String,
    },
    /// Notification IM sent to `uri`.
    Notified {
        uri: String,
        ok: bool,
        detail: String,
    },
    /// A tier of the policy's escalation was alerted (`reach::escalation`): `tier` of `tiers`
    /// (1-based), whom it alerts (each target's outcome follows as `notified` events with the
    /// target as `uri`), and when the next tier fires unless someone acknowledges first:
    /// `next_tier_in_ms` after this event; `None` after the last tier. An acknowledgement stops
    /// the tiers still to come (issue 15: the desk shows where the escalation stands).
    Escalated {
        tier: u32,
        tiers: u32,
        targets: Vec<EscalationTarget>,
        #[ts(type = "number | null")]
        next_tier_in_ms: Option<u64>,
    },
    /// Requests refused from one source address over an interval, in one record: ordinary
    /// INVITEs, malformed messages, unsupported methods, wrong credentials (see
    /// `routing::refused`). Junk never becomes one audit row per message, nor a row of the call
    /// history. `source` is the address, or `other` for the sources beyond the per-interval
    /// bound, which share one record (`addresses` says how many they were).
    Refused {
        source: String,
        since: DateTime<Utc>,
        count: u32,
        /// `"INVITE 404 not an emergency number"` → how many.
        reasons: std::collections::BTreeMap<String, u32>,
        /// The first few requests as they were sent (request line and From, shortened):
        /// caller-controlled text, shown as text.
        samples: Vec<String>,
        addresses: u32,
    },
    /// A route answers its health probes again (`routing::health`): a record of the audit log,
    /// not of a call.
    RouteUp {
        route: String,
        detail: String,
    },
    /// A route failed its health probes (no answer, 503, unreachable) and is tried last for new
    /// calls until it answers again.
    RouteDown {
        route: String,
        detail: String,
    },
    /// A reload (SIGHUP, `sosdesk reload`) applied `file` to new calls: a record of the audit
    /// log, not of a call. `detail` says what changed and what waits for a restart.
    ConfigReloaded {
        file: String,
        detail: String,
    },
    /// A reload refused `file` (the file, key and reason): the running config is kept.
    ConfigRefused {
        file: String,
        reason: String,
    },
    /// A network element (a subnet, a switch, an access point) from which a call or a HELD
    /// request could not be located by the wiremap, seen for the first time
    /// (`location::unlocated`): a record of the audit log, sent to every desk.
    UnlocatedNetwork {
        /// `subnet`, `switch` or `access-point`.
        element_kind: String,
        element: String,
        /// What was known of the device: IP, MAC, BSSID, switch and port.
        device: String,
        /// `call` or `held`.
        asked: String,
        /// What the location fell back to: `site-default` or `none`.
        outcome: String,
    },
    /// Switch-port discovery (`location::discovery`) found a device on another switch port than
    /// at the previous poll: a record of the audit log, not of a call.
    DeviceMoved {
        /// The device's MAC address (`0A-23-CD-16-AA-2E`).
        mac: String,
        /// Where it was and where it is: `switch sw-hq-1 (00-16-C7-02-6E-80) port Fa3/0/14`.
        from: String,
        to: String,
    },
    /// A user-entered location (`location::user_entered`, docs/location.md) was entered,
    /// confirmed or cleared: a record of the audit log, not of a call. Only a change the store
    /// kept is recorded; a refused one is not a change (a refused API request with wrong
    /// credentials is a `rejected` record of its own).
    UserLocationChanged {
        /// Whose location: the owner as calls name the caller (number or SIP user part).
        owner: String,
        /// `entered` (new, or another address), `confirmed` (the same address again, perhaps
        /// from another network) or `cleared`.
        change: String,
        /// Who: the API account (`user alice`, `desk lobby`), the PUBLISH's authenticated user
        /// (`sip-publish user alice`), or `cli`.
        by: String,
        /// `api`, `publish` or `cli`.
        via: String,
        /// Where the change came from: the API client's or the PUBLISH's source address
        /// (`tcp:203.0.113.5:50210`, `udp:…`); empty for the CLI.
        from: String,
        /// The address kept: label and civic address on one line; empty when cleared.
        location: String,
        /// The network it was entered from (IP and subnet, MAC, BSSID); empty when cleared.
        network: String,
    },
}

impl CallEvent {
    /// An audit record that belongs to no call: the first and only event of its own id.
    pub fn of_no_call(
        call_id: String,
        caller: Caller,
        dialed: String,
        kind: CallEventKind,
        at: DateTime<Utc>,
    ) -> CallEvent {
        CallEvent {
            version: CALL_EVENT_VERSION,
            call_id,
            seq: 1,
            at,
            caller,
            dialed,
            normalized: String::new(),
            test_call: false,
            policy: String::new(),
            site: None,
            location: LocationSnapshot::none(),
            route: None,
            kind,
        }
    }

    /// Where this record happened, on one line (the audit export's `location` column): the
    /// call's location (`unknown` for a call that had none: the fact an auditor needs); for a
    /// user-entered location, the address kept (empty when cleared); for the other records of
    /// no call (a route's health, a refused request, a device moved…) nothing — no caller's
    /// location applies to them, and `unknown` would read as a call that was not located.
    pub fn location_text(&self) -> String {
        match &self.kind {
            CallEventKind::UserLocationChanged { location, .. } => location.clone(),
            kind if !kind.is_of_a_call() => String::new(),
            _ => self.location.describe(),
        }
    }

    /// A route's change of health as an audit record of its own (`route-up` / `route-down`).
    pub fn route_health(route: String, up: bool, detail: String, at: DateTime<Utc>) -> CallEvent {
        let kind =
            if up { CallEventKind::RouteUp { route, detail } } else { CallEventKind::RouteDown { route, detail } };
        let id = format!("route-{}", crate::sip::ids::new_call_ref());
        CallEvent::of_no_call(id, Caller::nobody(), String::new(), kind, at)
    }

    /// A reload's outcome as an audit record of its own (`config-reloaded` / `config-refused`).
    pub fn reload(kind: CallEventKind, at: DateTime<Utc>) -> CallEvent {
        let id = format!("config-{}", crate::sip::ids::new_call_ref());
        CallEvent::of_no_call(id, Caller::nobody(), String::new(), kind, at)
    }

    /// A kept change of `owner`'s user-entered location as an audit record of its own
    /// (`user-location-changed`): who (`by`: the API account, the PUBLISH's user, `cli`), through
    /// what (`via`: `api`, `publish`, `cli`), from where (`from`: the client's or phone's source
    /// address; empty for the CLI), and the entry kept (`None` when cleared). Made only once the
    /// store has kept the change.
    pub fn user_location_changed(
        change: Change,
        owner: &str,
        entry: Option<&UserLocation>,
        by: &str,
        via: &str,
        from: String,
        at: DateTime<Utc>,
    ) -> CallEvent {
        let (location, network) = match entry {
            Some(e) if e.erl.label.is_empty() => (e.erl.civic.one_line(), e.network.describe()),
            Some(e) => (format!("{}: {}", e.erl.label, e.erl.civic.one_line()), e.network.describe()),
            None => (String::new(), String::new()),
        };
        let kind = CallEventKind::UserLocationChanged {
            owner: owner.to_string(),
            change: change.as_str().to_string(),
            by: by.to_string(),
            via: via.to_string(),
            from,
            location,
            network,
        };
        let id = format!("user-location-{}", crate::sip::ids::new_call_ref());
        CallEvent::of_no_call(id, Caller::nobody(), String::new(), kind, at)
    }

    /// A refused request (wrong credentials, a blocked address…) as an audit record of its own:
    /// `what` says what was asked (a Request-URI, an API path), `caller` who asked.
    pub fn refusal(caller: Caller, what: String, status: u16, reason: String, at: DateTime<Utc>) -> CallEvent {
        let kind = CallEventKind::Rejected { status, reason };
        CallEvent::of_no_call(crate::sip::ids::new_call_ref(), caller, what, kind, at)
    }
}

impl Caller {
    /// No caller (a record of no call).
    pub fn nobody() -> Caller {
        Caller { number: String::new(), display_name: None, uri: String::new(), source: String::new() }
    }
}

impl CallEventKind {
    /// Short machine name, used as the `kind` column of the audit log.
    pub fn name(&self) -> &'static str {
        match self {
            CallEventKind::Detected => "detected",
            CallEventKind::Routed => "routed",
            CallEventKind::RouteFailed { .. } => "route-failed",
            CallEventKind::Retrying { .. } => "retrying",
            CallEventKind::Ringing { .. } => "ringing",
            CallEventKind::Answered => "answered",
            CallEventKind::Failed { .. } => "failed",
            CallEventKind::Ended { .. } => "ended",
            CallEventKind::Rejected { .. } => "rejected",
            CallEventKind::Callback { .. } => "callback",
            CallEventKind::Acknowledged { .. } => "acknowledged",
            CallEventKind::DeskJoined { .. } => "desk-joined",
            CallEventKind::DeskLeft { .. } => "desk-left",
            CallEventKind::DeskJoinRefused { .. } => "desk-join-refused",
            CallEventKind::ConferenceFailed { .. } => "conference-failed",
            CallEventKind::PartyLeft { .. } => "party-left",
            CallEventKind::Recorded { .. } => "recorded",
            CallEventKind::RecordingFailed { .. } => "recording-failed",
            CallEventKind::Notified { .. } => "notified",
            CallEventKind::Escalated { .. } => "escalated",
            CallEventKind::Refused { .. } => "refused",
            CallEventKind::RouteUp { .. } => "route-up",
            CallEventKind::RouteDown { .. } => "route-down",
            CallEventKind::UnlocatedNetwork { .. } => "unlocated-network",
            CallEventKind::DeviceMoved { .. } => "device-moved",
            CallEventKind::ConfigReloaded { .. } => "config-reloaded",
            CallEventKind::ConfigRefused { .. } => "config-refused",
            CallEventKind::UserLocationChanged { .. } => "user-location-changed",
        }
    }

    /// Whether the event belongs to a call (and so to the call history). Refused requests and
    /// route health changes are records of the audit log only.
    pub fn is_of_a_call(&self) -> bool {
        !matches!(
            self,
            CallEventKind::Rejected { .. }
                | CallEventKind::Refused { .. }
                | CallEventKind::RouteUp { .. }
                | CallEventKind::RouteDown { .. }
                | CallEventKind::UnlocatedNetwork { .. }
                | CallEventKind::DeviceMoved { .. }
                | CallEventKind::ConfigReloaded { .. }
                | CallEventKind::ConfigRefused { .. }
                | CallEventKind::UserLocationChanged { .. }
        )
    }
}
