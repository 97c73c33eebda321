//! The emergency B2BUA, sans-I/O: SIP messages and the current time go in; bytes to send,
//! timer deadlines and `CallEvent`s come out. It owns every call's state (one owner, no locks):
//! the caller leg ("A", a UAS dialog) and the outbound leg ("B", a UAC dialog towards a route)
//! are separate dialogs with their own Call-IDs, tags and CSeqs (RFC 3261 §12), and everything
//! that happens on one is relayed to the other.
//!
//! Routing: the policy's routes are tried in order; a final failure or no response at all
//! within `route_timeout` moves to the next at once. An emergency call is only failed when no
//! route remains — and the ECRC (no-location) routes are the last resort after the others.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;

use super::body::{self, InviteBody};
use super::classify::{classify, Classified};
use super::elin::{ElinCache, ElinMapping};
use crate::config::{Config, RouteKindConfig, TransportConfig};
use crate::events::{CallEvent, CallEventKind, Caller, RouteInfo, RouteKind, CALL_EVENT_VERSION};
use crate::location::pidf::{build_pidf_lo, parse_pidf_lo, PidfLoInput};
use crate::location::{DeviceAttachment, LastKnownLocation, LocationSnapshot, LocationSource, Locator};
use crate::policy::Policies;
use crate::sip::dialog::{contact_uri_text, Dialog};
use crate::sip::parse::Rejection;
use crate::sip::target::target_of_uri;
use crate::sip::transaction::{
    ClientEvent, ClientKey, Peer, ServerEvent, ServerKey, Timers, Transactions, Transmit, Transport,
};
use crate::sip::uri::quote_display;
use crate::sip::{ids, reason_phrase, Message, Uri};

mod media_legs;
mod registration;
use media_legs::{CallMedia, DeskDirectory};
pub use media_legs::{MediaAction, RtpPortSource};

/// Methods sosdesk answers or relays (RFC 3261 §20.5 Allow).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER";
/// Headers relayed with an in-dialog request or its response.
const RELAYED_HEADERS: &[&str] = &[
    "Content-Type",
    "Content-Disposition",
    "Event",
    "Subscription-State",
    "Info-Package",
    "Reason",
    "Session-Expires",
    "Min-SE",
];

/// sosdesk's own addresses, for Via and Contact.
#[derive(Debug, Clone)]
pub struct LocalEndpoint {
    pub host: String,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
}

impl LocalEndpoint {
    pub(crate) fn port(&self, t: Transport) -> u16 {
        match t {
            Transport::Udp => self.udp.or(self.tcp).map(|a| a.port()).unwrap_or(5060),
            Transport::Tcp => self.tcp.or(self.udp).map(|a| a.port()).unwrap_or(5060),
        }
    }
    pub(crate) fn via(&self, t: Transport, branch: &str) -> String {
        format!("SIP/2.0/{} {}:{};branch={branch};rport", t.as_str(), self.host, self.port(t))
    }
    fn contact(&self, t: Transport) -> String {
        let tp = if t == Transport::Tcp { ";transport=tcp" } else { "" };
        format!("<sip:sosdesk@{}:{}{tp}>", self.host, self.port(t))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
    /// A security desk's conference leg (its media leg id).
    Desk(crate::media::LegId),
}

impl Side {
    /// The leg a request on this one is relayed to (desk legs are never relayed).
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B | Side::Desk(_) => Side::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Outbound INVITE sent, no answer yet.
    Routing,
    Answered,
}

struct BLeg {
    attempt: usize,
    dialog: Dialog,
    invite: Message,
    client_key: ClientKey,
    /// Any response (even 100) arrived: the route is alive, no failover by timer.
    responded: bool,
    /// A provisional arrived: a CANCEL may be sent (RFC 3261 §9.1).
    provisional: bool,
    /// The ACK for the 2xx, re-sent when the 2xx is retransmitted.
    ack: Option<Message>,
}

/// An in-dialog request relayed from one leg to the other, waiting for its response.
struct Relay {
    origin: Side,
    server_key: ServerKey,
    request: Message,
}

struct Call {
    call_ref: String,
    seq: u32,
    caller: Caller,
    dialed: String,
    normalized: String,
    test: bool,
    policy: String,
    site: Option<String>,
    location: LocationSnapshot,
    /// The PIDF-LO sent on every attempt (the caller's own bytes, or built from the ERL).
    pidf: Option<Bytes>,
    location_refs: Vec<String>,
    /// What goes to the route as the Geolocation cid.
    cid: String,
    route_info: Option<RouteInfo>,
    /// Route indexes, in order; `next_attempt` indexes into it.
    plan: Vec<usize>,
    next_attempt: usize,
    kind: RouteKind,
    /// Callback calls go to exactly this target instead of the plan.
    callback_target: Option<(Peer, String)>,
    callback_number: String,
    a: Dialog,
    a_invite: Message,
    a_invite_key: ServerKey,
    a_offer: Option<Bytes>,
    b: Option<BLeg>,
    state: CallState,
    /// Waiting for the caller's ACK to carry the SDP answer to the far end (late offer).
    await_a_ack: bool,
    ringing_sent: HashSet<u16>,
    relays: HashMap<ClientKey, Relay>,
    /// A relayed re-INVITE's 2xx whose ACK must be relayed (the re-INVITE had no offer).
    pending_reinvite_ack: Option<(Side, u32)>,
    /// ACKs sent for relayed re-INVITEs' 2xx, by client transaction, re-sent on retransmission.
    relay_acks: HashMap<ClientKey, (Message, Peer)>,
    /// sosdesk is in the media path (issue 5): SDP is answered by sosdesk on each leg, desks can
    /// join, the call is recorded. `None`: SDP passes through untouched.
    media: Option<CallMedia>,
}

/// How long an abandoned outbound INVITE is remembered: twice Timer B (64·T1) at the default T1.
const ABANDON_FOR: Duration = Duration::from_secs(64);

/// A leg sosdesk gave up on (route timeout, cancel before any provisional): a 2xx that still
/// arrives for it is ACKed and ended with a BYE, so no one is left connected to nothing.
struct Abandoned {
    peer: Peer,
    expires: Instant,
}

/// Call timers are deleted lazily (see `on_route_timeout`: a timer for an attempt that already
/// responded, moved on or ended does nothing), so no O(n) search runs per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallTimer {
    /// No response from the attempt in `route_timeout`.
    RouteResponse(usize),
}

/// Engine counters (for logs, `/status` and benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub emergency_calls: u64,
    pub rejected: u64,
    pub failovers: u64,
    pub failed: u64,
    pub malformed: u64,
}

pub struct Engine {
    policies: Policies,
    route_timeout: Duration,
    callback_fallback: Option<(Peer, String)>,
    local: LocalEndpoint,
    tx: Transactions,
    calls: HashMap<String, Call>,
    by_call_id: HashMap<String, (String, Side)>,
    server_txn: HashMap<ServerKey, String>,
    client_txn: HashMap<ClientKey, String>,
    call_timers: BTreeSet<(Instant, String, CallTimer)>,
    abandoned: HashMap<String, Abandoned>,
    abandoned_order: VecDeque<String>,
    elins: ElinCache,
    known_elins: HashSet<String>,
    events: VecDeque<CallEvent>,
    locators: Locators,
    /// RTP ports for anchored calls; `None`: media is never anchored.
    rtp: Option<Arc<dyn RtpPortSource>>,
    media_actions: VecDeque<MediaAction>,
    desks: DeskDirectory,
    /// Who has registered where (desks and SIP clients).
    registrar: crate::registrar::Registrar,
    /// Notification groups: name → desk account usernames.
    groups: HashMap<String, Vec<String>>,
    notifier: crate::notify::Notifier,
    /// Detected calls whose notification IM is still to be sent (see [`Engine::handle_deferred`]).
    deferred_notify: VecDeque<CallEvent>,
    /// Events for calls that already ended (see [`Engine::poll_late_event`]).
    late_events: VecDeque<(String, CallEventKind)>,
    /// Wrong-credentials guard, shared with the HTTP API.
    guard: crate::access::SharedGuard,
    pub stats: EngineStats,
}

/// Where the engine asks for a device's location when a call brings no PIDF-LO of its own.
#[derive(Clone, Default)]
pub struct Locators {
    /// The wiremap index of the Location Information Service.
    pub wiremap: Option<Arc<dyn Locator>>,
    /// What each device last obtained over HELD.
    pub held: Option<Arc<dyn LastKnownLocation>>,
}

impl Engine {
    pub fn new(cfg: &Config, local: LocalEndpoint) -> Engine {
        let policies = Policies::from_config(cfg);
        let known_elins = policies.all_elins().map(str::to_string).collect();
        Engine {
            route_timeout: Duration::from_millis(cfg.routing.route_timeout_ms),
            callback_fallback: cfg.routing.callback_fallback.as_deref().and_then(|u| target_of_uri(u).ok()),
            local,
            tx: Transactions::new(Timers { t1: Duration::from_millis(cfg.sip.t1_ms), ..Timers::default() }),
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            server_txn: HashMap::new(),
            client_txn: HashMap::new(),
            call_timers: BTreeSet::new(),
            abandoned: HashMap::new(),
            abandoned_order: VecDeque::new(),
            elins: ElinCache::new(Duration::from_secs_f64(cfg.routing.elin_callback_minutes * 60.0)),
            known_elins,
            events: VecDeque::new(),
            locators: Locators::default(),
            rtp: None,
            media_actions: VecDeque::new(),
            desks: DeskDirectory::from_config(cfg),
            registrar: crate::registrar::Registrar::new(),
            groups: cfg.notification_groups.iter().map(|g| (g.name.clone(), g.members.clone())).collect(),
            notifier: crate::notify::Notifier::new(crate::notify::NotifyTiming {
                attempt_timeout: Duration::from_millis(cfg.notification.attempt_timeout_ms),
                retry_for: Duration::from_secs(cfg.notification.retry_for_s),
            }),
            deferred_notify: VecDeque::new(),
            late_events: VecDeque::new(),
            guard: crate::access::AuthGuard::shared(),
            stats: EngineStats::default(),
            policies,
        }
    }

    /// Share the wrong-credentials guard with the HTTP API (one count per address for both).
    pub fn set_guard(&mut self, guard: crate::access::SharedGuard) {
        self.guard = guard;
    }

    /// Give the engine the Location Information Service's lookups.
    pub fn set_locators(&mut self, locators: Locators) {
        self.locators = locators;
    }

    /// The device's addresses as the INVITE shows them, most telling first: the SDP connection
    /// address (the phone itself, even behind a PBX that does not anchor media), the Contact
    /// and top Via hosts, then the address the packet came from.
    fn device_addresses(msg: &Message, sdp: Option<&[u8]>, peer: Peer) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = sdp.map(crate::sip::body::sdp_connection_addresses).unwrap_or_default();
        let host_ip = |h: &str| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let contact = msg.contact_uri().and_then(|u| host_ip(&u.host));
        let via = msg.top_via().and_then(|v| host_ip(&v.host));
        for ip in [contact, via, Some(peer.addr.ip())].into_iter().flatten() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        // 0.0.0.0 in SDP means "on hold", not a place.
        ips.retain(|ip| !ip.is_unspecified());
        ips
    }

    fn locate_device(
        &self,
        msg: &Message,
        sdp: Option<&[u8]>,
        peer: Peer,
        warnings: &mut Vec<String>,
    ) -> Option<LocationSnapshot> {
        if self.locators.wiremap.is_none() && self.locators.held.is_none() {
            return None;
        }
        let ips = Self::device_addresses(msg, sdp, peer);
        let snapshot = |source, erl: Arc<crate::location::Erl>, warnings: &mut Vec<String>| LocationSnapshot {
            source,
            erl: Some((*erl).clone()),
            geo: None,
            method: Some("Wiremap".into()),
            warnings: std::mem::take(warnings),
        };
        let device = |ip: &IpAddr| DeviceAttachment { ip: Some(*ip), ..Default::default() };
        if let Some(wiremap) = &self.locators.wiremap {
            for ip in &ips {
                if let Some((erl, matched)) = wiremap.locate(&device(ip)) {
                    tracing::debug!(%ip, ?matched, "device located by the wiremap");
                    return Some(snapshot(LocationSource::Wiremap, erl, warnings));
                }
            }
        }
        if let Some(held) = &self.locators.held {
            for ip in &ips {
                if let Some(erl) = held.last_known(&device(ip)) {
                    tracing::debug!(%ip, "device located by its last HELD answer");
                    return Some(snapshot(LocationSource::HeldCached, erl, warnings));
                }
            }
        }
        None
    }

    // ------------------------------------------------------------------ I/O interface

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.tx.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// What the media tasks of anchored calls must do (open, add or change a leg, close).
    pub fn poll_media(&mut self) -> Option<MediaAction> {
        self.media_actions.pop_front()
    }

    /// Anchor the media of emergency calls, with RTP ports from `ports` (config `media.anchor`).
    pub fn set_media(&mut self, ports: Arc<dyn RtpPortSource>) {
        self.rtp = Some(ports);
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let a = self.tx.next_timeout();
        let b = self.call_timers.first().map(|t| t.0);
        [a, b, self.notifier.next_timeout()].into_iter().flatten().min()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// An event that comes from outside the SIP path (a desk acknowledging the alert), for a call
    /// that is still live: numbered in the call's sequence and carrying its current picture.
    /// Returned rather than queued, so the caller can wait until it is durable. `None` when the
    /// engine no longer holds the call (it ended): the caller builds the event from the audit log.
    pub fn annotate(&mut self, call_ref: &str, kind: CallEventKind) -> Option<CallEvent> {
        let call = self.calls.get_mut(call_ref)?;
        let mut tmp = VecDeque::with_capacity(1);
        Self::emit_into(&mut tmp, call, kind);
        tmp.pop_front()
    }

    /// A message the parser refused: answer it statelessly when it can be answered.
    pub fn handle_rejection(&mut self, rej: Rejection, peer: Peer) {
        self.stats.malformed += 1;
        tracing::debug!(%peer, reason = %rej.reason, "malformed SIP message");
        if let Some(reply) = rej.reply {
            self.tx.send_stateless(peer, &reply);
        }
    }

    pub fn handle_message(&mut self, msg: Message, peer: Peer, now: Instant) {
        if msg.is_request() {
            match self.tx.on_request(msg, peer, now) {
                Some(ServerEvent::Request { key, msg, peer }) => self.on_request(key, msg, peer, now),
                Some(ServerEvent::AckFor2xx { msg, .. }) => self.on_ack(msg),
                Some(ServerEvent::Cancel { invite: Some(k), .. }) => self.on_cancel(&k, now),
                Some(ServerEvent::Cancel { invite: None, .. }) | None => {}
            }
        } else {
            match self.tx.on_response(msg, now) {
                Ok(Some(ClientEvent::Response { key, msg, .. })) if self.notifier.owns(&key) => {
                    self.notifier.on_response(&key, msg.status().unwrap_or(0), msg.status_reason(), now);
                    self.drain_notify();
                }
                Ok(Some(ClientEvent::Response { key, msg, retransmission })) => {
                    self.on_response(key, msg, retransmission, now)
                }
                Ok(Some(ClientEvent::Timeout { key })) => self.on_client_timeout(&key, now),
                Ok(None) => {}
                Err(stray) => self.on_stray_response(stray),
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for ev in self.tx.handle_timeout(now) {
            if let ClientEvent::Timeout { key } = ev {
                self.on_client_timeout(&key, now);
            }
        }
        self.notify_timeouts(now);
        while let Some(first) = self.call_timers.first().cloned() {
            if first.0 > now {
                break;
            }
            self.call_timers.remove(&first);
            let (_, call_ref, timer) = first;
            match timer {
                CallTimer::RouteResponse(attempt) => self.on_route_timeout(&call_ref, attempt, now),
            }
        }
        while let Some(id) = self.abandoned_order.front() {
            match self.abandoned.get(id) {
                Some(a) if a.expires > now => break,
                _ => {
                    let id = self.abandoned_order.pop_front().unwrap_or_default();
                    self.abandoned.remove(&id);
                }
            }
        }
    }

    /// The transport could not deliver to `peer` (TCP connect refused, ICMP unreachable):
    /// an outbound INVITE still waiting there fails over at once instead of waiting for the
    /// route timer.
    pub fn handle_send_failure(&mut self, peer: Peer, now: Instant) {
        let waiting: Vec<(String, usize)> = self
            .calls
            .values()
            .filter_map(|c| {
                c.b.as_ref().filter(|b| b.dialog.peer == peer && !b.responded).map(|b| (c.call_ref.clone(), b.attempt))
            })
            .collect();
        for (call_ref, attempt) in waiting {
            self.fail_attempt(&call_ref, attempt, format!("{peer} unreachable"), now);
        }
        self.notifier.on_unreachable(peer, &mut self.tx, now);
        self.drain_notify();
    }

    // ------------------------------------------------------------------ requests

    fn respond(&mut self, key: &str, req: &Message, status: u16, extra: &[(&str, String)]) {
        let mut r = req.response(status, reason_phrase(status), Some(&ids::new_tag()));
        for (n, v) in extra {
            r.push(n, v.clone());
        }
        self.tx.respond(key, &r, Instant::now());
    }

    fn on_request(&mut self, key: ServerKey, msg: Message, peer: Peer, now: Instant) {
        let method = msg.method().to_string();
        let scheme_ok = msg
            .request_uri()
            .and_then(|u| Uri::parse(u).ok())
            .is_some_and(|u| matches!(u.scheme.as_str(), "sip" | "sips" | "tel" | "urn"));
        if !scheme_ok {
            // RFC 3261 §8.2.2.1.
            self.respond(&key, &msg, 416, &[]);
            return;
        }
        if let Some(req) = msg.header("Require") {
            // §8.2.2.3: sosdesk supports no option-tags that a Require may name.
            let req = req.to_string();
            self.respond(&key, &msg, 420, &[("Unsupported", req)]);
            return;
        }
        if msg.to_tag().is_some() {
            self.on_in_dialog_request(key, msg, now);
            return;
        }
        match method.as_str() {
            "INVITE" => self.on_invite(key, msg, peer, now),
            "OPTIONS" => {
                let accept = "application/sdp, application/pidf+xml, multipart/mixed".to_string();
                self.respond(&key, &msg, 200, &[("Allow", ALLOW.into()), ("Accept", accept)]);
            }
            "BYE" | "UPDATE" | "INFO" | "PRACK" => self.respond(&key, &msg, 481, &[]),
            "REGISTER" => self.on_register(key, msg, peer, now),
            "MESSAGE" | "SUBSCRIBE" | "NOTIFY" | "PUBLISH" | "REFER" => {
                self.respond(&key, &msg, 405, &[("Allow", ALLOW.into())])
            }
            _ => self.respond(&key, &msg, 501, &[("Allow", ALLOW.into())]),
        }
    }

    fn caller_of(msg: &Message, peer: Peer) -> Caller {
        let from = msg.from();
        let pai =
            msg.header_values("P-Asserted-Identity").into_iter().find_map(|v| crate::sip::NameAddr::parse(&v).ok());
        let number = pai
            .as_ref()
            .and_then(|p| p.parsed_uri())
            .and_then(|u| u.number())
            .or_else(|| from.as_ref().and_then(|f| f.parsed_uri()).and_then(|u| u.number()))
            .unwrap_or_default();
        let display =
            from.as_ref().and_then(|f| f.display.clone()).or_else(|| pai.as_ref().and_then(|p| p.display.clone()));
        Caller {
            number,
            display_name: display.filter(|d| !d.is_empty()),
            uri: from.map(|f| f.uri).unwrap_or_default(),
            source: peer.to_string(),
        }
    }

    fn on_invite(&mut self, key: ServerKey, msg: Message, peer: Peer, now: Instant) {
        let ib = body::parse_invite_body(&msg);
        if let Some(ct) = &ib.unsupported {
            // §21.4.13: tell the caller what we take.
            tracing::info!(%peer, content_type = %ct, "INVITE body type not supported");
            self.respond(&key, &msg, 415, &[("Accept", "application/sdp, multipart/mixed".into())]);
            return;
        }
        if !crate::sip::body::accepts_sdp(msg.header("Accept")) {
            // §21.4.7: we can only answer with SDP. RFC 4475 §3.3.15 also allows a Warning.
            self.respond(&key, &msg, 406, &[("Warning", "399 sosdesk \"only application/sdp answers\"".into())]);
            return;
        }
        let ruri = msg.request_uri().unwrap_or("").to_string();
        if let Some(call_ref) = media_legs::conference_target(&ruri) {
            self.on_desk_join(key, msg, peer, call_ref, now);
            return;
        }
        let (policy, site) = self.policies.select(peer.addr.ip());
        let (policy_name, site_name) = (policy.name.clone(), site.map(|s| s.name.clone()));
        let number = Uri::parse(&ruri).ok().and_then(|u| u.number());
        if let Some(n) =
            number.as_deref().filter(|n| self.elins.lookup(n, now).is_some() || self.known_elins.contains(*n))
        {
            let n = n.to_string();
            self.on_callback(key, msg, peer, n, policy_name, site_name, ib, now);
            return;
        }
        let Some(class) = classify(&ruri, policy) else {
            self.reject_non_emergency(key, msg, peer, policy_name, site_name);
            return;
        };
        self.stats.emergency_calls += 1;
        let site_erl = site.and_then(|s| s.erl.clone());
        let default_erl = policy.default_erl.clone();
        let (mut plan, ecrc) = (policy.routes.clone(), policy.no_location_routes.clone());
        let caller = Self::caller_of(&msg, peer);

        // Where is the caller? Their own PIDF-LO first (kept as sent), else the site's ERL,
        // else the policy default, else nothing (and the ECRC route).
        let mut warnings = ib.warnings.clone();
        let mut location = None;
        let mut pidf = None;
        if let Some(raw) = &ib.pidf {
            match parse_pidf_lo(raw) {
                Ok(mut snap) => {
                    snap.warnings.splice(0..0, warnings.drain(..));
                    location = Some(snap);
                    pidf = Some(raw.clone());
                }
                Err(e) => warnings.push(format!("caller's PIDF-LO not usable: {e}")),
            }
        }
        // No usable PIDF-LO: ask the Location Information Service where the device is, by the
        // addresses the INVITE shows for it (issue 3 §6): the wiremap first, then the location
        // the device last obtained over HELD.
        if location.is_none() {
            location = self.locate_device(&msg, ib.sdp.as_deref(), peer, &mut warnings);
        }
        let location = location.unwrap_or_else(|| {
            let (erl, method) = match (site_erl, default_erl) {
                (Some(e), _) => (Some(e), "Wiremap"),
                (None, Some(e)) => (Some(e), "Manual"),
                (None, None) => (None, ""),
            };
            LocationSnapshot {
                source: if erl.is_some() { LocationSource::SiteDefault } else { LocationSource::None },
                erl,
                geo: None,
                method: if method.is_empty() { None } else { Some(method.to_string()) },
                warnings,
            }
        });
        if pidf.is_none() {
            if let Some(erl) = &location.erl {
                let entity = format!(
                    "sip:{}@{}",
                    if caller.number.is_empty() { "anonymous" } else { &caller.number },
                    self.local.host
                );
                let xml = build_pidf_lo(&PidfLoInput {
                    entity: &entity,
                    device_id: None,
                    erl,
                    geo: None,
                    method: location.method.as_deref().unwrap_or("Manual"),
                    provided_by: None,
                    timestamp: Utc::now(),
                });
                pidf = Some(Bytes::from(xml));
            }
        }
        // Without a location the ECRC routes come first; they are in every plan as the last
        // resort, so a call is never failed while a route remains.
        if !location.is_known() {
            plan = ecrc.clone();
            for r in &policy_routes_or(&self.policies, &policy_name) {
                if !plan.contains(r) {
                    plan.push(*r);
                }
            }
        } else {
            for r in ecrc {
                if !plan.contains(&r) {
                    plan.push(r);
                }
            }
        }
        let media = self.anchor(ib.sdp.as_deref(), policy.conference_mode);
        let notifies = !policy.notify.is_empty();
        let mut call = self.new_call(
            key,
            msg,
            peer,
            caller,
            class,
            policy_name,
            site_name,
            location,
            pidf,
            ib,
            plan,
            RouteKind::SipTrunk,
        );
        let call_ref = call.call_ref.clone();
        if let Some(m) = media {
            call.media = Some(m);
            self.media_actions.push_back(MediaAction::Open { call_ref: call_ref.clone() });
        }
        self.calls.insert(call_ref.clone(), call);
        self.emit(&call_ref, CallEventKind::Detected);
        // The notification IM (issue 6) is built once the outbound INVITE has been sent.
        let detected = if notifies { self.events.back().cloned() } else { None };
        self.start_attempt(&call_ref, now);
        self.deferred_notify.extend(detected);
    }

    #[allow(clippy::too_many_arguments)]
    fn new_call(
        &mut self,
        key: ServerKey,
        msg: Message,
        peer: Peer,
        caller: Caller,
        class: Classified,
        policy: String,
        site: Option<String>,
        location: LocationSnapshot,
        pidf: Option<Bytes>,
        ib: InviteBody,
        plan: Vec<usize>,
        kind: RouteKind,
    ) -> Call {
        let call_ref = ids::new_call_ref();
        let local_tag = ids::new_tag();
        let a = Dialog::inbound(&msg, &local_tag, 1000, peer);
        self.by_call_id.insert(a.call_id.clone(), (call_ref.clone(), Side::A));
        self.server_txn.insert(key.clone(), call_ref.clone());
        let callback_number = caller.number.clone();
        Call {
            call_ref,
            seq: 0,
            caller,
            dialed: class.dialed,
            normalized: class.normalized,
            test: class.test,
            policy,
            site,
            location,
            pidf,
            location_refs: ib.location_refs,
            cid: format!("loc-{}@{}", ids::new_tag(), self.local.host),
            route_info: None,
            plan,
            next_attempt: 0,
            kind,
            callback_target: None,
            callback_number,
            a,
            a_invite: msg,
            a_invite_key: key,
            a_offer: ib.sdp,
            b: None,
            state: CallState::Routing,
            await_a_ack: false,
            ringing_sent: HashSet::new(),
            relays: HashMap::new(),
            pending_reinvite_ack: None,
            relay_acks: HashMap::new(),
            media: None,
        }
    }

    fn reject_non_emergency(&mut self, key: ServerKey, msg: Message, peer: Peer, policy: String, site: Option<String>) {
        // Documented behaviour: sosdesk only carries emergency calls. 404 tells a PBX that this
        // destination does not exist here, so it routes ordinary calls elsewhere.
        self.stats.rejected += 1;
        let reason = "not an emergency number for the caller's policy".to_string();
        self.respond(&key, &msg, 404, &[("Warning", format!("399 sosdesk \"{reason}\""))]);
        let ruri = msg.request_uri().unwrap_or("");
        let dialed = Uri::parse(ruri).ok().and_then(|u| u.number().or(Some(u.opaque.clone()))).unwrap_or_default();
        let ev = CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: ids::new_call_ref(),
            seq: 1,
            at: Utc::now(),
            caller: Self::caller_of(&msg, peer),
            dialed,
            normalized: String::new(),
            test_call: false,
            policy,
            site,
            location: LocationSnapshot::none(),
            route: None,
            kind: CallEventKind::Rejected { status: 404, reason },
        };
        self.events.push_back(ev);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_callback(
        &mut self,
        key: ServerKey,
        msg: Message,
        peer: Peer,
        elin: String,
        policy: String,
        site: Option<String>,
        ib: InviteBody,
        now: Instant,
    ) {
        let mapping = self.elins.lookup(&elin, now).cloned();
        let (target, to_original, display) = match &mapping {
            Some(m) => {
                let host = match m.caller_peer.addr {
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                    a => a.ip().to_string(),
                };
                let uri = format!("sip:{}@{}:{}", m.caller_number, host, m.caller_peer.addr.port());
                (Some((m.caller_peer, uri)), true, m.caller_display.clone())
            }
            None => (self.callback_fallback.clone(), false, None),
        };
        let Some((tpeer, turi)) = target else {
            tracing::warn!(%elin, "callback to an ELIN with no live mapping and no callback_fallback configured");
            self.respond(&key, &msg, 480, &[("Warning", "399 sosdesk \"no callback mapping for this ELIN\"".into())]);
            return;
        };
        let caller = Self::caller_of(&msg, peer);
        let class = Classified { dialed: elin.clone(), normalized: elin.clone(), test: false };
        let mut call = self.new_call(
            key,
            msg,
            peer,
            caller,
            class,
            policy,
            site,
            LocationSnapshot::none(),
            None,
            ib,
            Vec::new(),
            RouteKind::Callback,
        );
        call.callback_target = Some((tpeer, turi.clone()));
        if let Some(d) = display {
            // Shown to the desk: who the PSAP is calling back.
            call.location.warnings.push(format!("callback for {d}"));
        }
        let call_ref = call.call_ref.clone();
        self.calls.insert(call_ref.clone(), call);
        self.emit(&call_ref, CallEventKind::Callback { elin, to_original, target: turi });
        self.start_attempt(&call_ref, now);
    }

    // ------------------------------------------------------------------ outbound attempts

    fn start_attempt(&mut self, call_ref: &str, now: Instant) {
        let Some(mut call) = self.calls.remove(call_ref) else { return };
        loop {
            let attempt = call.next_attempt;
            // The target of this attempt: a callback target, or the next route of the plan.
            let (peer, ruri_host, route_name, kind, presented) = if let Some((peer, uri)) = call.callback_target.clone()
            {
                if attempt > 0 {
                    break self.fail_call(call, now);
                }
                let host = Uri::parse(&uri)
                    .map(|u| format!("{}{}", u.host, u.port.map(|p| format!(":{p}")).unwrap_or_default()))
                    .unwrap_or_default();
                let user = Uri::parse(&uri).ok().and_then(|u| u.user).unwrap_or_default();
                (peer, (host, Some(user)), "callback".to_string(), RouteKind::Callback, call.caller.number.clone())
            } else {
                let Some(&idx) = call.plan.get(attempt) else {
                    break self.fail_call(call, now);
                };
                let r = &self.policies.routes[idx];
                let transport = match r.transport {
                    TransportConfig::Udp => Transport::Udp,
                    TransportConfig::Tcp => Transport::Tcp,
                };
                let peer = Peer { transport, addr: r.address };
                let host = r.domain.clone().unwrap_or_else(|| r.address.to_string());
                let (kind, presented) = match r.kind {
                    RouteKindConfig::SipTrunk => (RouteKind::SipTrunk, call.callback_number.clone()),
                    RouteKindConfig::ElinGateway => {
                        let elins = call.location.erl.as_ref().map(|e| e.elins.clone()).unwrap_or_default();
                        match self.elins.pick(&elins, now) {
                            Some(e) => (RouteKind::ElinGateway, e.to_string()),
                            None => {
                                call.route_info = Some(RouteInfo {
                                    name: r.name.clone(),
                                    kind: RouteKind::ElinGateway,
                                    target: peer.to_string(),
                                    attempt: attempt as u32,
                                    presented_number: String::new(),
                                });
                                let name = r.name.clone();
                                call.next_attempt += 1;
                                self.stats.failovers += 1;
                                Self::emit_into(
                                    &mut self.events,
                                    &mut call,
                                    CallEventKind::RouteFailed {
                                        reason: format!("route {name}: the location has no ELIN"),
                                    },
                                );
                                continue;
                            }
                        }
                    }
                };
                (peer, (host, None), r.name.clone(), kind, presented)
            };
            let (host, user) = ruri_host;
            // Anchored: the far end gets sosdesk's own offer; else the caller's, as it came.
            let sdp = match call.media.as_mut() {
                Some(m) => Some(m.far_offer()),
                None => call.a_offer.clone(),
            };
            let b = self.build_outbound_invite(
                &call,
                attempt,
                peer,
                &host,
                user.as_deref(),
                &presented,
                kind,
                sdp.as_ref(),
            );
            if kind == RouteKind::ElinGateway {
                self.elins.insert(
                    &presented,
                    ElinMapping {
                        call_ref: call.call_ref.clone(),
                        caller_number: call.caller.number.clone(),
                        caller_display: call.caller.display_name.clone(),
                        caller_peer: call.a.peer,
                        expires: now,
                    },
                    now,
                );
            }
            let key = self.tx.send_request(&b.invite, peer, now);
            self.client_txn.insert(key.clone(), call.call_ref.clone());
            self.by_call_id.insert(b.dialog.call_id.clone(), (call.call_ref.clone(), Side::B));
            call.route_info = Some(RouteInfo {
                name: route_name,
                kind,
                target: peer.to_string(),
                attempt: attempt as u32,
                presented_number: presented,
            });
            call.b = Some(BLeg { client_key: key, ..b });
            call.kind = kind;
            self.call_timers.insert((
                now + self.route_timeout,
                call.call_ref.clone(),
                CallTimer::RouteResponse(attempt),
            ));
            Self::emit_into(&mut self.events, &mut call, CallEventKind::Routed);
            self.start_auto_conference(&mut call, attempt, now);
            self.calls.insert(call.call_ref.clone(), call);
            break;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_outbound_invite(
        &self,
        call: &Call,
        attempt: usize,
        peer: Peer,
        host: &str,
        user: Option<&str>,
        presented: &str,
        kind: RouteKind,
        sdp: Option<&Bytes>,
    ) -> BLeg {
        let t = peer.transport;
        let call_id = ids::new_call_id(&self.local.host);
        let tag = ids::new_tag();
        let target_user = user.unwrap_or(&call.normalized);
        let user_phone = if kind == RouteKind::Callback { "" } else { ";user=phone" };
        let ruri = format!("sip:{target_user}@{host}{user_phone}");
        let mut m = Message::request("INVITE", &ruri);
        m.push("Via", self.local.via(t, &ids::new_branch()));
        m.push("Max-Forwards", "70");
        let display = call.caller.display_name.as_deref().map(|d| format!("{} ", quote_display(d))).unwrap_or_default();
        let presented_user = if presented.is_empty() { "anonymous" } else { presented };
        let local = format!("{display}<sip:{presented_user}@{}>;tag={tag}", self.local.host);
        let remote = format!("<sip:{target_user}@{host}>");
        m.push("From", local.clone());
        m.push("To", remote.clone());
        m.push("Call-ID", call_id.clone());
        m.push("CSeq", "1 INVITE");
        m.push("Contact", self.local.contact(t));
        if !presented.is_empty() {
            // RFC 3325 §9.1: the callback number (or, for an ELIN gateway, the ELIN), asserted
            // by sosdesk towards a trusted provider.
            m.push("P-Asserted-Identity", format!("{display}<sip:{presented}@{};user=phone>", self.local.host));
        }
        if kind != RouteKind::Callback {
            // RFC 3261 §20.26.
            m.push("Priority", "emergency");
        }
        m.push("Allow", ALLOW);
        match (&call.pidf, kind) {
            (Some(pidf), RouteKind::SipTrunk | RouteKind::ElinGateway) => {
                // RFC 6442 §4.1: location by value, referenced by a cid: URI; routing may use it.
                let mut geo = vec![format!("<cid:{}>", call.cid)];
                geo.extend(call.location_refs.iter().map(|r| format!("<{r}>")));
                m.push("Geolocation", geo.join(", "));
                m.push("Geolocation-Routing", "yes");
                let (ct, b) = body::build_multipart(sdp, pidf, &call.cid);
                m.push("Content-Type", ct);
                m.body = b;
            }
            _ => {
                if !call.location_refs.is_empty() && kind != RouteKind::Callback {
                    m.push(
                        "Geolocation",
                        call.location_refs.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(", "),
                    );
                    m.push("Geolocation-Routing", "yes");
                }
                if let Some(sdp) = sdp {
                    m.push("Content-Type", "application/sdp");
                    m.body = sdp.clone();
                }
            }
        }
        BLeg {
            attempt,
            dialog: Dialog::outbound(call_id, local, remote, ruri, peer),
            invite: m,
            client_key: String::new(),
            responded: false,
            provisional: false,
            ack: None,
        }
    }

    /// The current attempt failed: record it, forget its leg, try the next route.
    fn fail_attempt(&mut self, call_ref: &str, attempt: usize, reason: String, now: Instant) {
        let Some(call) = self.calls.get_mut(call_ref) else { return };
        let Some(b) = &call.b else { return };
        if b.attempt != attempt || call.state != CallState::Routing {
            return;
        }
        let b = call.b.take();
        if let Some(b) = b {
            // A ringing leg keeps its INVITE transaction so that it ACKs the 487 the CANCEL
            // brings (§17.1.1.3); a silent one is abandoned (no more retransmissions). Either
            // way its responses no longer reach this call.
            if !b.provisional {
                self.tx.abandon(&b.client_key);
            }
            self.client_txn.remove(&b.client_key);
            self.by_call_id.remove(&b.dialog.call_id);
            if b.provisional {
                // Stop the far end ringing before the next route takes over (RFC 3261 §9.1).
                let cancel = cancel_for(&b.invite);
                self.tx.send_request(&cancel, b.dialog.peer, now);
            }
            self.abandoned
                .insert(b.dialog.call_id.clone(), Abandoned { peer: b.dialog.peer, expires: now + ABANDON_FOR });
            self.abandoned_order.push_back(b.dialog.call_id);
        }
        self.stats.failovers += 1;
        call.next_attempt = attempt + 1;
        Self::emit_into(&mut self.events, call, CallEventKind::RouteFailed { reason });
        self.start_attempt(call_ref, now);
    }

    fn fail_call(&mut self, mut call: Call, _now: Instant) {
        // Every route was tried. The caller hears a clear failure; the PBX may have its own
        // alternative route (503 invites exactly that, RFC 3261 §21.5.4).
        self.stats.failed += 1;
        let tried = call.next_attempt;
        let reason = format!("all {tried} route(s) failed");
        tracing::error!(call = %call.call_ref, dialed = %call.dialed, "{reason}");
        let mut r = call.a_invite.response(503, "Service Unavailable", Some(tag_of(&call.a.local)));
        r.push("Warning", format!("399 sosdesk \"{reason}\""));
        self.tx.respond(&call.a_invite_key, &r, Instant::now());
        Self::emit_into(&mut self.events, &mut call, CallEventKind::Failed { status: 503, reason });
        self.forget_call(call);
    }

    fn on_route_timeout(&mut self, call_ref: &str, attempt: usize, now: Instant) {
        // Only the same attempt, still silent, is failed over; a stale timer (the attempt
        // responded, moved on, or the call ended) does nothing.
        let silent =
            self.calls.get(call_ref).and_then(|c| c.b.as_ref()).is_some_and(|b| b.attempt == attempt && !b.responded);
        if silent {
            let ms = self.route_timeout.as_millis();
            self.fail_attempt(call_ref, attempt, format!("no response within {ms} ms"), now);
        }
    }

    fn on_client_timeout(&mut self, key: &str, now: Instant) {
        if self.notifier.owns(key) {
            self.notifier.on_transaction_failed(key, "no final response (Timer F)", now);
            self.drain_notify();
            return;
        }
        let Some(call_ref) = self.client_txn.remove(key) else { return };
        let attempt =
            self.calls.get(&call_ref).and_then(|c| c.b.as_ref()).filter(|b| b.client_key == key).map(|b| b.attempt);
        if let Some(attempt) = attempt {
            self.fail_attempt(&call_ref, attempt, "no final response (Timer B)".into(), now);
        } else if let Some(mut call) = self.calls.remove(&call_ref) {
            // A relayed request timed out: answer its originator.
            if let Some(relay) = call.relays.remove(key) {
                let r = relay.request.response(408, "Request Timeout", None);
                self.tx.respond(&relay.server_key, &r, now);
            }
            if call.media.as_ref().is_some_and(|m| m.desk_by_invite(key).is_some()) {
                self.auto_conference_failed(&mut call, key, "no final response (Timer B)".into());
            }
            self.calls.insert(call_ref, call);
        }
    }

    // ------------------------------------------------------------------ responses

    fn on_response(&mut self, key: ClientKey, msg: Message, retransmission: bool, now: Instant) {
        let Some(call_ref) = self.client_txn.get(&key).cloned() else { return };
        let status = msg.status().unwrap_or(0);
        if status >= 200 && !(msg.method() == "INVITE" && status < 300) {
            self.client_txn.remove(&key);
        }
        let Some(mut call) = self.calls.remove(&call_ref) else { return };
        let is_b_invite = call.b.as_ref().is_some_and(|b| b.client_key == key);
        if call.media.as_ref().is_some_and(|m| m.desk_by_invite(&key).is_some()) {
            self.on_auto_conference_response(&mut call, &key, msg, retransmission, now);
        } else if is_b_invite {
            let failed = self.on_b_invite_response(&mut call, msg, retransmission, now);
            self.calls.insert(call_ref.clone(), call);
            if let Some((attempt, reason)) = failed {
                self.fail_attempt(&call_ref, attempt, reason, now);
            }
            return;
        } else if retransmission {
            // A retransmitted 2xx to a relayed re-INVITE: our ACK was lost; send it again
            // (RFC 3261 §13.2.2.4). The relay itself is already answered and gone.
            if let Some((ack, peer)) = call.relay_acks.get(&key) {
                self.tx.send_ack(ack, *peer);
            }
        } else if let Some(relay) = call.relays.get(&key) {
            {
                let origin = relay.origin;
                let server_key = relay.server_key.clone();
                let mut r = relay.request.response(status, msg.status_reason(), None);
                copy_relayed(&msg, &mut r);
                let answered_invite = msg.method() == "INVITE" && (200..300).contains(&status);
                if answered_invite || (msg.method() == "UPDATE" && (200..300).contains(&status)) {
                    r.push("Contact", self.local.contact(peer_of(&call, origin).transport));
                }
                if answered_invite {
                    let side = origin.other();
                    let had_offer = !relay.request.body.is_empty();
                    let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
                    if had_offer {
                        let ack = self.in_dialog_request(&mut call, side, "ACK", Some(cseq));
                        let p = peer_of(&call, side);
                        self.tx.send_ack(&ack, p);
                        // Kept for the 2xx's retransmissions; one per re-INVITE, forgotten with
                        // the call.
                        call.relay_acks.insert(key.clone(), (ack, p));
                    } else {
                        call.pending_reinvite_ack = Some((side, cseq));
                    }
                }
                self.tx.respond(&server_key, &r, now);
                if status >= 200 {
                    call.relays.remove(&key);
                }
            }
        }
        self.calls.insert(call_ref, call);
    }

    /// Handle a response to the current outbound INVITE. Returns the attempt to fail over from
    /// (and why) when it was a final failure; the caller does that once the call is back in
    /// the map.
    fn on_b_invite_response(
        &mut self,
        call: &mut Call,
        msg: Message,
        retransmission: bool,
        now: Instant,
    ) -> Option<(usize, String)> {
        let status = msg.status().unwrap_or(0);
        let b = call.b.as_mut()?;
        // Any response, even 100, shows the route is alive: its route timer (still in the set)
        // will find `responded` and do nothing.
        b.responded = true;
        b.dialog.learn_remote_tag(&msg);
        match status {
            100 => {}
            101..=199 => {
                b.provisional = true;
                if status == 180 || status == 183 {
                    let mut r = call.a_invite.response(status, msg.status_reason(), Some(tag_of(&call.a.local)));
                    r.push("Contact", self.local.contact(call.a.peer.transport));
                    if call.media.is_some() {
                        self.anchored_response_body(call, &msg, &mut r, false);
                    } else {
                        copy_body(&msg, &mut r);
                    }
                    self.tx.respond(&call.a_invite_key, &r, now);
                    if call.ringing_sent.insert(status) {
                        Self::emit_into(&mut self.events, call, CallEventKind::Ringing { status });
                    }
                }
            }
            200..=299 => {
                if retransmission {
                    if let Some(ack) = b.ack.clone() {
                        self.tx.send_ack(&ack, b.dialog.peer);
                    }
                    return None;
                }
                b.dialog.confirm(&msg);
                call.state = CallState::Answered;
                if call.a_offer.is_some() || call.media.is_some() {
                    let ack = self.in_dialog_request(call, Side::B, "ACK", Some(1));
                    if let Some(b) = call.b.as_mut() {
                        self.tx.send_ack(&ack, b.dialog.peer);
                        b.ack = Some(ack);
                    }
                } else {
                    call.await_a_ack = true;
                }
                let mut r = call.a_invite.response(status, msg.status_reason(), Some(tag_of(&call.a.local)));
                r.push("Contact", self.local.contact(call.a.peer.transport));
                r.push("Allow", ALLOW);
                if call.media.is_some() {
                    self.anchored_response_body(call, &msg, &mut r, true);
                } else {
                    copy_body(&msg, &mut r);
                }
                self.tx.respond(&call.a_invite_key, &r, now);
                Self::emit_into(&mut self.events, call, CallEventKind::Answered);
            }
            _ => {
                // The final response completed the INVITE: nothing is ringing any more, so
                // failing over sends no CANCEL (the transaction already ACKed it).
                b.provisional = false;
                return Some((b.attempt, format!("{status} {}", msg.status_reason())));
            }
        }
        None
    }

    /// Remember an outbound INVITE sosdesk gave up on for [`ABANDON_FOR`]: a 2xx that
    /// still arrives for it is ACKed and hung up (`on_stray_response`).
    fn abandon_dialog(&mut self, call_id: String, peer: Peer, now: Instant) {
        self.abandoned.insert(call_id.clone(), Abandoned { peer, expires: now + ABANDON_FOR });
        self.abandoned_order.push_back(call_id);
    }

    fn on_stray_response(&mut self, msg: Message) {
        // A 2xx for an INVITE leg we abandoned: ACK it, then hang it up (RFC 3261 §13.2.2.4
        // requires the ACK; the BYE ends a session no one is on).
        let (Some(status), Some(call_id)) = (msg.status(), msg.call_id().map(str::to_string)) else { return };
        if !(200..300).contains(&status) || msg.method() != "INVITE" {
            return;
        }
        let Some(ab) = self.abandoned.get(&call_id) else { return };
        let peer = ab.peer;
        let target = if msg.contact_uri().is_some() { contact_uri_text(&msg) } else { return };
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(1);
        let mut rr = msg.header_values("Record-Route");
        rr.reverse();
        for (method, n) in [("ACK", cseq), ("BYE", cseq + 1)] {
            let mut m = Message::request(method, &target);
            m.push("Via", self.local.via(peer.transport, &ids::new_branch()));
            m.push("Max-Forwards", "70");
            for r in &rr {
                m.push("Route", r.clone());
            }
            m.push("From", msg.header("From").unwrap_or(""));
            m.push("To", msg.header("To").unwrap_or(""));
            m.push("Call-ID", call_id.clone());
            m.push("CSeq", format!("{n} {method}"));
            if method == "ACK" {
                self.tx.send_ack(&m, peer);
            } else {
                m.push("Reason", "SIP;cause=200;text=\"emergency call already routed elsewhere\"");
                self.tx.send_request(&m, peer, Instant::now());
            }
        }
        tracing::info!(%call_id, "late answer from an abandoned route: ACKed and ended");
    }

    // ------------------------------------------------------------------ in-dialog

    fn on_ack(&mut self, msg: Message) {
        let Some((call_ref, side)) = msg.call_id().and_then(|c| self.by_call_id.get(c)).cloned() else { return };
        let Some(mut call) = self.calls.remove(&call_ref) else { return };
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
        if call.media.is_some() {
            // Anchored: an ACK only ever carries an answer to sosdesk's own offer.
            self.anchored_ack(&mut call, side, &msg);
        } else if side == Side::A && call.await_a_ack && cseq == call.a_invite.cseq().map(|c| c.0).unwrap_or(0) {
            // Late offer (RFC 3264 §4 via RFC 3261 §13.2.1): the caller's ACK carries the SDP
            // answer, which the far end needs in our ACK.
            call.await_a_ack = false;
            let mut ack = self.in_dialog_request(&mut call, Side::B, "ACK", Some(1));
            copy_body(&msg, &mut ack);
            if let Some(b) = call.b.as_mut() {
                self.tx.send_ack(&ack, b.dialog.peer);
                b.ack = Some(ack);
            }
        } else if let Some((target, c)) = call.pending_reinvite_ack {
            if target == side.other() {
                call.pending_reinvite_ack = None;
                let mut ack = self.in_dialog_request(&mut call, target, "ACK", Some(c));
                copy_body(&msg, &mut ack);
                let p = peer_of(&call, target);
                self.tx.send_ack(&ack, p);
            }
        }
        self.calls.insert(call_ref, call);
    }

    fn on_cancel(&mut self, invite_key: &str, now: Instant) {
        let Some(call_ref) = self.server_txn.get(invite_key).cloned() else { return };
        let Some(mut call) = self.calls.remove(&call_ref) else { return };
        if call.state != CallState::Routing {
            self.calls.insert(call_ref, call);
            return;
        }
        // §9.2: the INVITE is answered 487 once the CANCEL is accepted.
        let r = call.a_invite.response(487, "Request Terminated", Some(tag_of(&call.a.local)));
        self.tx.respond(&call.a_invite_key, &r, now);
        self.stop_b_leg(&mut call, now, "caller cancelled");
        Self::emit_into(
            &mut self.events,
            &mut call,
            CallEventKind::Ended { by: "cancel".into(), reason: "caller hung up before answer".into() },
        );
        self.forget_call(call);
    }

    /// End the outbound leg in whatever state it is: BYE if answered, CANCEL if ringing,
    /// abandon (and ACK+BYE any late 2xx) if nothing came back yet.
    fn stop_b_leg(&mut self, call: &mut Call, now: Instant, why: &str) {
        let Some(b) = call.b.take() else { return };
        if call.state == CallState::Answered {
            call.b = Some(b);
            let mut bye = self.in_dialog_request(call, Side::B, "BYE", None);
            bye.push("Reason", format!("SIP;cause=200;text=\"{why}\""));
            let peer = peer_of(call, Side::B);
            self.tx.send_request(&bye, peer, now);
            call.b = None;
            return;
        }
        if b.provisional {
            let cancel = cancel_for(&b.invite);
            self.tx.send_request(&cancel, b.dialog.peer, now);
        } else {
            self.tx.abandon(&b.client_key);
        }
        self.client_txn.remove(&b.client_key);
        self.abandon_dialog(b.dialog.call_id, b.dialog.peer, now);
    }

    fn on_in_dialog_request(&mut self, key: ServerKey, msg: Message, now: Instant) {
        let Some((call_ref, side)) = msg.call_id().and_then(|c| self.by_call_id.get(c)).cloned() else {
            self.respond(&key, &msg, 481, &[]);
            return;
        };
        let Some(mut call) = self.calls.remove(&call_ref) else {
            self.respond(&key, &msg, 481, &[]);
            return;
        };
        let method = msg.method().to_string();
        if let Side::Desk(leg) = side {
            let ended = self.on_desk_request(&mut call, leg, key, msg, now);
            if ended {
                self.forget_call(call);
            } else {
                self.calls.insert(call_ref, call);
            }
            return;
        }
        if method == "BYE" {
            let r = msg.response(200, "OK", None);
            self.tx.respond(&key, &r, now);
            if side == Side::A && call.state == CallState::Answered && call.media.as_ref().is_some_and(|m| m.desks_on())
            {
                // Last-party clear: the caller hung up, but a desk is on the call; the desk and
                // the emergency operator stay connected until they hang up.
                self.caller_left(&mut call);
                self.calls.insert(call_ref, call);
                return;
            }
            let by = if side == Side::A { "caller" } else { "far-end" };
            match side {
                Side::A => self.stop_b_leg(&mut call, now, "caller hung up"),
                Side::B | Side::Desk(_) => {
                    call.b = None;
                    if call.state == CallState::Answered && !call.media.as_ref().is_some_and(|m| m.caller_gone) {
                        let bye = self.in_dialog_request(&mut call, Side::A, "BYE", None);
                        let p = call.a.peer;
                        self.tx.send_request(&bye, p, now);
                    }
                }
            }
            Self::emit_into(&mut self.events, &mut call, CallEventKind::Ended { by: by.into(), reason: "BYE".into() });
            self.forget_call(call);
            return;
        }
        let reoffer = method == "UPDATE" || (method == "INVITE" && call.state == CallState::Answered);
        if call.media.is_some() && reoffer {
            // Anchored: each leg's session is between the party and sosdesk, so a re-offer is
            // answered here (RFC 3264 §8) and never reaches the other party. UPDATE also in the
            // early dialog (RFC 3311 §5.1): relayed, it would move the media off the anchor (no
            // recording, no desk).
            self.anchored_reoffer(&mut call, side, key, msg, now);
            self.calls.insert(call_ref, call);
            return;
        }
        // Anything else is relayed to the other leg once that leg's dialog exists.
        let other = side.other();
        let other_ready = match other {
            Side::A => !call.media.as_ref().is_some_and(|m| m.caller_gone),
            Side::B => call.b.as_ref().is_some_and(|b| b.dialog.remote_tag.is_some()),
            Side::Desk(_) => false,
        };
        if !other_ready || call.state != CallState::Answered && method == "INVITE" {
            let status = if method == "INVITE" { 491 } else { 481 };
            let r = msg.response(status, reason_phrase(status), None);
            self.tx.respond(&key, &r, now);
            self.calls.insert(call_ref, call);
            return;
        }
        if method == "INVITE" && call.relays.values().any(|r| r.request.method() == "INVITE") {
            // §14.1: one re-INVITE at a time.
            let r = msg.response(491, "Request Pending", None);
            self.tx.respond(&key, &r, now);
            self.calls.insert(call_ref, call);
            return;
        }
        let mut out = self.in_dialog_request(&mut call, other, &method, None);
        copy_relayed(&msg, &mut out);
        if method == "INVITE" || method == "UPDATE" {
            out.push("Contact", self.local.contact(peer_of(&call, other).transport));
        }
        let peer = peer_of(&call, other);
        let ck = self.tx.send_request(&out, peer, now);
        self.client_txn.insert(ck.clone(), call_ref.clone());
        call.relays.insert(ck, Relay { origin: side, server_key: key, request: msg });
        self.calls.insert(call_ref, call);
    }

    /// A request inside one leg's dialog (§12.2.1.1). `cseq` given: reuse it (ACK).
    fn in_dialog_request(&self, call: &mut Call, side: Side, method: &str, cseq: Option<u32>) -> Message {
        let d = match side {
            Side::A => &mut call.a,
            Side::B => match call.b.as_mut() {
                Some(b) => &mut b.dialog,
                None => &mut call.a,
            },
            Side::Desk(leg) => match call.media.as_mut().and_then(|m| m.desk_mut(leg)) {
                Some(desk) => &mut desk.dialog,
                None => &mut call.a,
            },
        };
        self.dialog_request(d, method, cseq)
    }

    /// A request inside `d` (§12.2.1.1) with our Via. `cseq` given: reuse it (ACK).
    fn dialog_request(&self, d: &mut Dialog, method: &str, cseq: Option<u32>) -> Message {
        let via = self.local.via(d.peer.transport, &ids::new_branch());
        d.request(method, cseq, via)
    }

    // ------------------------------------------------------------------ bookkeeping

    fn forget_call(&mut self, mut call: Call) {
        // Desks still on the call are cleared with it, and its media task closes (which
        // finishes the recording).
        self.end_desk_legs(&mut call);
        if call.media.is_some() {
            self.media_actions.push_back(MediaAction::Close { call_ref: call.call_ref.clone() });
        }
        self.by_call_id.remove(&call.a.call_id);
        if let Some(b) = &call.b {
            self.by_call_id.remove(&b.dialog.call_id);
            self.client_txn.remove(&b.client_key);
        }
        self.server_txn.remove(&call.a_invite_key);
        for k in call.relays.keys().chain(call.relay_acks.keys()) {
            self.client_txn.remove(k);
        }
    }

    fn emit(&mut self, call_ref: &str, kind: CallEventKind) {
        if let Some(call) = self.calls.get_mut(call_ref) {
            Self::emit_into(&mut self.events, call, kind);
        }
    }

    fn emit_into(events: &mut VecDeque<CallEvent>, call: &mut Call, kind: CallEventKind) {
        call.seq += 1;
        events.push_back(CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: call.call_ref.clone(),
            seq: call.seq,
            at: Utc::now(),
            caller: call.caller.clone(),
            dialed: call.dialed.clone(),
            normalized: call.normalized.clone(),
            test_call: call.test,
            policy: call.policy.clone(),
            site: call.site.clone(),
            location: call.location.clone(),
            route: call.route_info.clone(),
            kind,
        });
    }
}

fn policy_routes_or(p: &Policies, name: &str) -> Vec<usize> {
    p.policies.iter().find(|x| x.name == name).map(|x| x.routes.clone()).unwrap_or_default()
}

fn peer_of(call: &Call, side: Side) -> Peer {
    match side {
        Side::A => call.a.peer,
        Side::B => call.b.as_ref().map(|b| b.dialog.peer).unwrap_or(call.a.peer),
        Side::Desk(leg) => call.media.as_ref().and_then(|m| m.desk(leg)).map(|d| d.dialog.peer).unwrap_or(call.a.peer),
    }
}

fn tag_of(header: &str) -> &str {
    header.rsplit_once(";tag=").map(|(_, t)| t.split(';').next().unwrap_or(t)).unwrap_or("")
}

/// §9.1: CANCEL has the INVITE's Request-URI, Call-ID, To, From, CSeq number and top Via.
fn cancel_for(invite: &Message) -> Message {
    let mut c = Message::request("CANCEL", invite.request_uri().unwrap_or(""));
    if let Some(v) = invite.header("Via") {
        c.push("Via", v);
    }
    c.push("Max-Forwards", "70");
    for r in invite.headers_named("Route") {
        c.push("Route", r);
    }
    for h in ["From", "To", "Call-ID"] {
        c.push(h, invite.header(h).unwrap_or(""));
    }
    c.push("CSeq", format!("{} CANCEL", invite.cseq().map(|c| c.0).unwrap_or(1)));
    c
}

fn copy_body(from: &Message, to: &mut Message) {
    if !from.body.is_empty() {
        if let Some(ct) = from.header("Content-Type") {
            to.set("Content-Type", ct);
        }
        to.body = from.body.clone();
    }
}

fn copy_relayed(from: &Message, to: &mut Message) {
    for h in RELAYED_HEADERS {
        for v in from.headers_named(h) {
            to.push(h, v);
        }
    }
    to.body = from.body.clone();
}

trait StatusReason {
    fn status_reason(&self) -> &str;
}

impl StatusReason for Message {
    fn status_reason(&self) -> &str {
        match &self.start {
            crate::sip::StartLine::Response { reason, status } => {
                if reason.is_empty() {
                    reason_phrase(*status)
                } else {
                    reason
                }
            }
            _ => "",
        }
    }
}
