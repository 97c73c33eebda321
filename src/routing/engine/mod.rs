//! The emergency B2BUA, sans-I/O: SIP messages and the current time go in; bytes to send,
//! timer deadlines and `CallEvent`s come out. It owns every call's state (one owner, no locks):
//! the caller leg ("A", a UAS dialog) and the outbound leg ("B", a UAC dialog towards a route)
//! are separate dialogs with their own Call-IDs, tags and CSeqs (RFC 3261 §12), and everything
//! that happens on one is relayed to the other.
//!
//! Routing: the policy's routes are tried in order; a final failure or no response at all
//! within `route_timeout` moves to the next at once. An emergency call is only failed when no
//! route remains — and the ECRC (no-location) routes are the last resort after the others —
//! and then only once the retry window is over: until then the whole plan is tried again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::clock::Now;

use super::body::{self, InviteBody};
use super::classify::{classify, Classified};
use super::elin::{ElinCache, ElinMapping};
pub use super::elin::{ElinClaim, SharedElin};
use super::refused::RefusalTally;
use crate::config::{Config, RouteKindConfig};
use crate::events::{CallEvent, CallEventKind, Caller, RouteInfo, RouteKind, CALL_EVENT_VERSION};
pub use crate::location::resolve::Locators;
use crate::location::LocationSnapshot;
use crate::policy::Policies;
use crate::sip::dialog::{contact_uri_text, Dialog};
use crate::sip::parse::Rejection;
use crate::sip::session_timer;
use crate::sip::target::target_of_uri;
use crate::sip::transaction::{
    ClientEvent, ClientKey, Peer, Reconnect, ServerEvent, ServerKey, Timers, Transactions, Transmit, Transport,
};
use crate::sip::uri::quote_display;
use crate::sip::{ids, reason_phrase, Message, Uri};
pub use publish::{UserLocationAnswer, UserLocationChange, UserLocationRequest};

mod call;
mod desk_legs;
mod inbound;
mod media_legs;
mod notify_handoff;
mod outbound;
mod probes;
mod publish;
mod reconfigure;
mod registrations;
mod relay;
mod retry;
mod targets;
#[cfg(test)]
mod tests;

use call::*;
pub(crate) use desk_legs::conference_target;
use desk_legs::DeskDirectory;
use media_legs::CallMedia;
pub use media_legs::MediaAction;
use media_legs::RtpPort;
use outbound::cancel_for;
pub use reconfigure::Reconfigured;
use relay::copy_body;

/// Methods sosdesk answers or relays (RFC 3261 §20.5 Allow).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REGISTER, PUBLISH";
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
    pub tls: Option<SocketAddr>,
}

impl LocalEndpoint {
    pub(crate) fn port(&self, t: Transport) -> u16 {
        match t {
            Transport::Udp => self.udp.or(self.tcp).map(|a| a.port()).unwrap_or(5060),
            Transport::Tcp => self.tcp.or(self.udp).map(|a| a.port()).unwrap_or(5060),
            // Without a TLS listener, responses come back on the connection sosdesk opened
            // (RFC 3261 §18.2.2); the port only has to be one (RFC 3261 §26.2.1: 5061).
            Transport::Tls => self.tls.map(|a| a.port()).unwrap_or(5061),
        }
    }
    pub(crate) fn via(&self, t: Transport, branch: &str) -> String {
        format!("SIP/2.0/{} {}:{};branch={branch};rport", t.as_str(), self.host, self.port(t))
    }
    fn contact(&self, t: Transport) -> String {
        // `transport=tls` rather than a `sips:` Contact: the dialog stays `sip:` (its Request-URI
        // was), only this hop is TLS (RFC 5630 §3.1.3 deprecates the parameter for `sips:`
        // URIs, and every peer we meet still reads it).
        let tp = match t {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        format!("<sip:sosdesk@{}:{}{tp}>", self.host, self.port(t))
    }
}

/// What the engine holds at a moment ([`Engine::load`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EngineLoad {
    pub calls: usize,
    pub server_transactions: usize,
    pub client_transactions: usize,
    pub timers: usize,
    pub abandoned_legs: usize,
    pub rtp_ports_in_hand: usize,
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
    /// The time of the input being handled (handed in; the engine never reads a clock).
    now: Now,
    policies: Policies,
    route_timeout: Duration,
    /// How long after a call's first attempt a new round through its whole plan may start.
    retry_for: Duration,
    local: LocalEndpoint,
    tx: Transactions,
    calls: CallTable,
    callbacks: Callbacks,
    locators: Locators,
    media: MediaPorts,
    accounts: Accounts,
    notifier: crate::notify::Notifier,
    /// Each route's OPTIONS probes and state, and the trunk registrations (`probes.rs`).
    health: crate::routing::health::RouteHealth,
    trunks: Vec<crate::routing::trunk_register::TrunkRegistration>,
    /// Where each route's requests go, and what other names resolved to (`targets.rs`).
    route_targets: Vec<targets::RouteTargets>,
    names: HashMap<crate::sip::rfc3263::SipTarget, Vec<Peer>>,
    /// Unlocated-network announcements sent (`notify_handoff.rs`).
    announced: std::collections::HashSet<String>,
    /// Requests refused before any call exists, recorded per source and interval.
    refused: RefusalTally,
    out: Outputs,
    pub stats: EngineStats,
}

/// What the engine hands to its I/O shell, drained by [`Engine::poll_output`].
// Each output is moved once, from the engine's queues to the shell: boxing the large event would
// cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    /// The host name a peer's certificate must carry on TLS connections to `addr` (RFC 5922
    /// §7.2): a peer reached again at the address its connection came from, by a name its
    /// Contact or Record-Route gave (`next_hop_after_close`). Polled before the bytes.
    TlsName { addr: SocketAddr, name: String },
    /// Bytes to send.
    Transmit(Transmit),
    /// An order for the media task of an anchored call.
    Media(MediaAction),
    /// An event of a live call, for the audit log and every desk, in the call's sequence.
    Event(CallEvent),
    /// An event of a call the engine no longer holds (a notification retry after it ended):
    /// the shell numbers it after the call's stored events.
    LateEvent { call_ref: String, kind: CallEventKind },
    /// A record for the audit log only, never for the desks: the requests refused from one
    /// source over an interval (`CallEventKind::Refused`).
    Audit(CallEvent),
    /// How an emergency call was located, for the unlocated report (`location::unlocated`).
    Sighting(crate::location::unlocated::Sighting),
    /// A call went out through an ELIN gateway: the shell writes the mapping to the store, so
    /// that a callback reaching another node (or this one after a restart) finds the caller
    /// (only when [`Engine::share_callbacks`] was called).
    ElinMapped(SharedElin),
    /// A callback came to an ELIN with no mapping here: the shell looks it up in the store and
    /// answers with [`Engine::on_elin_found`] (always, even on a failure or a timeout). The
    /// callback waits meanwhile; the engine goes on with everything else.
    LookupElin(String),
    /// A call is about to go out through an ELIN gateway and several nodes share the store
    /// (only after [`Engine::claim_elins_in_store`]): the shell claims one of the ELINs in the
    /// store, in the order given, so that no two nodes hand one ELIN to two callers at once, and
    /// answers with [`Engine::on_elin_claimed`] (always, within a bound: a slow store must not
    /// hold the call up). The call waits meanwhile; everything else goes on.
    ClaimElin(ElinClaim),
    /// A desk's registrations changed here: the shell writes what other nodes can reach of
    /// them (UDP contacts) to the store.
    Registered(SharedRegistration),
    /// A PUBLISHed user-entered location (`publish.rs`): the shell validates and keeps it, and
    /// answers with [`Engine::on_user_location_kept`] (always).
    EnterUserLocation(UserLocationRequest),
}

/// One account's contacts on this node that other nodes can reach (UDP), as the store keeps
/// them (`crate::shared::registrations`): wall-clock expiries, which every node can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRegistration {
    pub user: String,
    /// (Contact URI, where it is reached over UDP, until when).
    pub contacts: Vec<(String, SocketAddr, DateTime<Utc>)>,
}

/// The outputs waiting to be drained.
struct Outputs {
    /// Noted where requests are built (`dialog_request`, which reads the engine only).
    tls_names: std::cell::RefCell<VecDeque<(SocketAddr, String)>>,
    events: VecDeque<CallEvent>,
    media: VecDeque<MediaAction>,
    late: VecDeque<(String, CallEventKind)>,
    audit_only: VecDeque<CallEvent>,
    sightings: VecDeque<crate::location::unlocated::Sighting>,
    /// Outputs for the shared store (ELIN mappings, look-ups, registrations).
    store_io: VecDeque<Output>,
    /// Detected calls whose notification IM is built once the transmits before it are drained
    /// (so building it never delays the outbound INVITE on the wire).
    deferred_notify: VecDeque<CallEvent>,
}

/// ELIN callbacks: the mappings of calls routed through an ELIN gateway, every ELIN the
/// policies know, and where a callback with no live mapping goes.
struct Callbacks {
    elins: ElinCache,
    known_elins: HashSet<String>,
    fallback: Option<(crate::sip::rfc3263::SipTarget, String)>,
    /// The mappings are shared through the store (several nodes): written as they are made,
    /// looked up there on a miss.
    shared: bool,
    /// ELINs are claimed in the store before a call presents one ([`Output::ClaimElin`]).
    claim: bool,
    /// Callbacks waiting for the store's answer, by ELIN.
    waiting: HashMap<String, Vec<WaitingCallback>>,
}

/// A callback parked while the shell looks its ELIN up in the store.
struct WaitingCallback {
    key: ServerKey,
    msg: Message,
    peer: Peer,
    policy: String,
    site: Option<String>,
    ib: InviteBody,
}

/// The RTP ports for anchored calls: bound by the I/O shell and handed in
/// ([`Engine::add_rtp_port`]) before each input, so the engine never binds a socket.
struct MediaPorts {
    /// Media of emergency calls is anchored (config `media.anchor`).
    anchoring: bool,
    reserve: Vec<RtpPort>,
}

/// Who may register and join: the desk accounts and their digest server, the registrations,
/// the notification groups, and the wrong-credentials guard (shared with the HTTP API).
struct Accounts {
    desks: DeskDirectory,
    registrar: crate::registrar::Registrar,
    /// Notification groups: name → desk account usernames.
    groups: HashMap<String, Vec<String>>,
    guard: crate::access::SharedGuard,
    /// Remote users who may PUBLISH their own location (`[[lis.users]]`).
    lis_users: Vec<crate::config::LisUserConfig>,
    /// PUBLISHes waiting for the store (`publish.rs`), by server transaction.
    /// Each: the PUBLISH, the entity-tag it gets when kept, and whether it clears.
    pending_publish: HashMap<ServerKey, (Message, String, bool)>,
}

/// Bodies sosdesk takes (OPTIONS' Accept).
const OPTIONS_ACCEPT: &str = "application/sdp, application/pidf+xml, multipart/mixed";
/// Server transactions beyond which ordinary requests are shed (see [`Engine::overloaded`]).
const MAX_SERVER_TRANSACTIONS: usize = 20_000;

/// Retry-After (seconds) of the 503 that sheds ordinary requests while the core is behind.
const SHED_RETRY_AFTER_S: u32 = 10;

/// RTP ports the engine keeps in hand: an INVITE takes two (caller and far end) and a policy's
/// conference URI one more; a desk joining takes one.
const RTP_RESERVE: usize = 4;

/// Where a callback with no live mapping goes (`routing.callback_fallback`).
fn callback_fallback(cfg: &Config) -> Option<(crate::sip::rfc3263::SipTarget, String)> {
    let u = cfg.routing.callback_fallback.as_deref()?;
    Some((crate::sip::rfc3263::SipTarget::parse(u).ok()?, u.to_string()))
}

/// Notification groups: name → desk account usernames.
fn notification_groups(cfg: &Config) -> HashMap<String, Vec<String>> {
    cfg.notification_groups.iter().map(|g| (g.name.clone(), g.members.clone())).collect()
}

impl Engine {
    pub fn new(cfg: &Config, local: LocalEndpoint, now: Now) -> Engine {
        let policies = Policies::from_config(cfg);
        let known_elins = policies.all_elins().map(str::to_string).collect();
        let health = crate::routing::health::RouteHealth::new(
            policies.routes.iter().map(|r| (r.name.clone(), targets::placeholder_peer(r))).collect(),
            Duration::from_secs(cfg.routing.health_interval_s),
            Duration::from_millis(cfg.routing.route_timeout_ms),
            now.mono,
        );
        let trunks = probes::trunk_registrations(&policies, &local, now.mono);
        let route_targets = targets::route_targets(&policies);
        Engine {
            health,
            trunks,
            route_targets,
            names: HashMap::new(),
            announced: Default::default(),
            now,
            route_timeout: Duration::from_millis(cfg.routing.route_timeout_ms),
            retry_for: Duration::from_secs(cfg.routing.retry_for_s),
            local,
            tx: Transactions::new(Timers { t1: Duration::from_millis(cfg.sip.t1_ms), ..Timers::default() }),
            calls: CallTable::default(),
            callbacks: Callbacks {
                elins: ElinCache::new(Duration::from_secs_f64(cfg.routing.elin_callback_minutes * 60.0)),
                known_elins,
                fallback: callback_fallback(cfg),
                shared: false,
                claim: false,
                waiting: HashMap::new(),
            },
            locators: Locators::default(),
            media: MediaPorts { anchoring: false, reserve: Vec::new() },
            accounts: Accounts {
                desks: DeskDirectory::from_config(cfg),
                registrar: crate::registrar::Registrar::new(),
                groups: notification_groups(cfg),
                guard: crate::access::AuthGuard::shared(),
                lis_users: cfg.lis.users.clone(),
                pending_publish: HashMap::new(),
            },
            notifier: crate::notify::Notifier::new(crate::notify::NotifyTiming {
                attempt_timeout: Duration::from_millis(cfg.notification.attempt_timeout_ms),
                retry_for: Duration::from_secs(cfg.notification.retry_for_s),
            }),
            out: Outputs {
                tls_names: Default::default(),
                events: VecDeque::new(),
                media: VecDeque::new(),
                late: VecDeque::new(),
                audit_only: VecDeque::new(),
                sightings: VecDeque::new(),
                store_io: VecDeque::new(),
                deferred_notify: VecDeque::new(),
            },
            refused: RefusalTally::default(),
            stats: EngineStats::default(),
            policies,
        }
    }

    /// Share the wrong-credentials guard with the HTTP API (one count per address for both).
    pub fn set_guard(&mut self, guard: crate::access::SharedGuard) {
        self.accounts.guard = guard;
    }

    /// Give the engine the Location Information Service's lookups.
    pub fn set_locators(&mut self, locators: Locators) {
        self.locators = locators;
    }

    /// Share ELIN callback mappings ([`Output::ElinMapped`], [`Output::LookupElin`]) and
    /// registrations ([`Output::Registered`], [`Engine::on_shared_registrations`]) through the
    /// store: set by the shell, which does that I/O.
    pub fn share_through_store(&mut self) {
        self.callbacks.shared = true;
    }

    /// Claim each ELIN in the store before a call presents it ([`Output::ClaimElin`]): set by
    /// the shell when several nodes may share the store (PostgreSQL), where a node's own
    /// mappings no longer tell which ELINs are free.
    pub fn claim_elins_in_store(&mut self) {
        self.callbacks.claim = true;
    }

    /// The store's answer to [`Output::ClaimElin`]: the ELIN claimed for the call, or `None`
    /// when the store failed or did not answer in time (the call then takes the ELIN this node
    /// prefers, and its mapping is written as on one node). The call goes out now.
    pub fn on_elin_claimed(&mut self, call_ref: &str, claimed: Option<String>, now: Now) {
        self.tick(now);
        let Some(call) = self.calls.live.get_mut(call_ref) else { return };
        if call.elin != ElinHold::Claiming {
            return;
        }
        call.elin = match claimed {
            Some(elin) => ElinHold::Claimed(elin),
            None => ElinHold::Local,
        };
        self.start_attempt(call_ref, now.mono);
    }

    /// Every registration other nodes hold that this node can reach (the store's whole list,
    /// each time): alerts waiting for one of those desks go now.
    pub fn on_shared_registrations(&mut self, list: Vec<SharedRegistration>, now: Now) {
        self.tick(now);
        let users: HashSet<String> = list.iter().map(|r| r.user.clone()).collect();
        let bindings = list
            .into_iter()
            .flat_map(|r| {
                let user = r.user;
                r.contacts.into_iter().map(move |(uri, addr, until)| {
                    let left = (until - now.wall).to_std().unwrap_or(Duration::ZERO);
                    let peer = Peer { transport: Transport::Udp, addr };
                    (user.clone(), uri, peer, now.mono + left)
                })
            })
            .collect();
        self.accounts.registrar.set_remote(bindings);
        let groups = &self.accounts.groups;
        let concerns =
            |name: &str| users.contains(name) || groups.get(name).is_some_and(|m| m.iter().any(|u| users.contains(u)));
        self.notifier.registered(concerns, now.mono);
        self.notify_timeouts(now.mono);
    }

    /// The store's answer to [`Output::LookupElin`]: the mapping another node wrote, if it is
    /// live; the callbacks that waited for it go on now (to the caller, or as with no mapping).
    pub fn on_elin_found(&mut self, elin: &str, found: Option<SharedElin>, now: Now) {
        self.tick(now);
        if let Some(m) = found.filter(|m| m.expires > now.wall) {
            // The cache's own mapping wins: it is this node's, and at least as new.
            if self.callbacks.elins.lookup(elin, now.mono).is_none() {
                self.callbacks.elins.insert_until(elin, m.to_mapping(now));
            }
        }
        for w in self.callbacks.waiting.remove(elin).unwrap_or_default() {
            self.on_callback(w.key, w.msg, w.peer, elin.to_string(), w.policy, w.site, w.ib, now.mono, true);
        }
    }

    /// Anchor the media of emergency calls (config `media.anchor`), with the RTP ports the
    /// shell hands in through [`Engine::add_rtp_port`].
    pub fn anchor_media(&mut self) {
        self.media.anchoring = true;
    }

    /// How many RTP ports the shell should bind and hand in before the next input.
    pub fn rtp_ports_wanted(&self) -> usize {
        if self.media.anchoring {
            RTP_RESERVE.saturating_sub(self.media.reserve.len())
        } else {
            0
        }
    }

    /// A bound, non-blocking RTP socket and the address to write into SDP for it.
    pub fn add_rtp_port(&mut self, socket: std::net::UdpSocket, advertised: SocketAddr) {
        self.media.reserve.push((socket, advertised));
    }

    // ------------------------------------------------------------------ I/O interface

    /// The time of an input: every `handle_*` sets it first.
    fn tick(&mut self, now: Now) {
        self.now = now;
        if self.refused.deadline().is_some_and(|d| d <= now.mono) {
            self.out.audit_only.extend(self.refused.close_if_due(now));
        }
    }

    /// The core is stopping: the refused requests counted so far are recorded now.
    pub fn close_refusals(&mut self, now: Now) {
        self.tick(now);
        self.out.audit_only.extend(self.refused.close(now.wall));
    }

    /// A request refused before any call exists (an ordinary INVITE, an unsupported method,
    /// wrong credentials): counted for the source's refusal record, not audited on its own.
    fn tally_refused(&mut self, msg: &Message, peer: Peer, status: u16, why: &str) {
        let reason = format!("{} {status} {why}", msg.method());
        let sample = || {
            let from = msg.header("From").unwrap_or("");
            format!("{} {} from {from} via {peer}", msg.method(), msg.request_uri().unwrap_or(""))
        };
        self.refused.add(peer.addr.ip(), &reason, sample, self.now);
    }

    /// Answer `status` to a request refused before any call exists, and count it.
    fn refuse_request(
        &mut self,
        key: &str,
        msg: &Message,
        peer: Peer,
        status: u16,
        why: &str,
        extra: &[(&str, String)],
    ) {
        self.respond(key, msg, status, extra);
        self.tally_refused(msg, peer, status, why);
    }

    /// The next output, in the order that keeps the emergency path fast: bytes first; once they
    /// are drained, the notification IMs deferred behind them (whose bytes come next); then the
    /// media orders, the calls' events and the late events.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some((addr, name)) = self.out.tls_names.get_mut().pop_front() {
            return Some(Output::TlsName { addr, name });
        }
        loop {
            if let Some(t) = self.tx.poll_transmit() {
                return Some(Output::Transmit(t));
            }
            let Some(detected) = self.out.deferred_notify.pop_front() else { break };
            self.notify_detected(&detected);
        }
        if let Some(m) = self.out.media.pop_front() {
            return Some(Output::Media(m));
        }
        if let Some(ev) = self.out.events.pop_front() {
            return Some(Output::Event(ev));
        }
        if let Some((call_ref, kind)) = self.out.late.pop_front() {
            return Some(Output::LateEvent { call_ref, kind });
        }
        if let Some(ev) = self.out.audit_only.pop_front() {
            return Some(Output::Audit(ev));
        }
        if let Some(s) = self.out.sightings.pop_front() {
            return Some(Output::Sighting(s));
        }
        self.out.store_io.pop_front()
    }

    /// The call events waiting to be polled, in order, without draining them: the shell
    /// journals them before the bytes of the same input leave (`audit::journal`).
    pub fn queued_events(&self) -> impl Iterator<Item = &CallEvent> {
        self.out.events.iter()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let a = self.tx.next_timeout();
        let b = self.calls.timers.first().map(|t| t.0);
        let trunks = self.trunks.iter().map(|t| t.next_timeout()).min();
        [a, b, self.notifier.next_timeout(), self.refused.deadline(), self.health.next_timeout(), trunks]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.live.len()
    }

    /// What the engine holds now (the watchdog's probe; a soak checks it stays flat).
    pub fn load(&self) -> EngineLoad {
        let (server_transactions, client_transactions) = self.tx.active();
        EngineLoad {
            calls: self.calls.live.len(),
            server_transactions,
            client_transactions,
            timers: self.tx.timers_pending() + self.calls.timers.len(),
            abandoned_legs: self.calls.abandoned.len(),
            rtp_ports_in_hand: self.media.reserve.len(),
        }
    }

    /// An event that comes from outside the SIP path (a desk acknowledging the alert, the call's
    /// recording finished), for a call that is live or ended lately: numbered in the call's
    /// sequence and carrying its picture. Returned rather than queued, so the caller can wait
    /// until it is durable. `None` when the engine no longer knows the call: the caller builds
    /// the event from the audit log.
    pub fn annotate(&mut self, call_ref: &str, kind: CallEventKind, now: Now) -> Option<CallEvent> {
        self.tick(now);
        match self.calls.live.get_mut(call_ref) {
            Some(call) => Some(call_event(call, kind, now.wall)),
            // Ended lately: numbered after its last event, from what the engine kept of it.
            None => self.calls.ended_event(call_ref, kind, now.wall),
        }
    }

    /// A new request sosdesk refuses whatever it carries: an INVITE to a number that is not an
    /// emergency number, an ELIN or a desk's conference, a dialog request outside any dialog, a
    /// method sosdesk does not take. Answered without a transaction (like Kamailio's
    /// `sl_send_reply`): junk must not hold memory for Timer J's 32 s each (about 1 KB a
    /// message: 1.3 GB at 40,000/s). `(status, reason for the record, send Allow)`.
    fn stateless_refusal(&self, msg: &Message, peer: Peer) -> Option<(u16, &'static str, bool)> {
        if msg.to_tag().is_some() {
            return None;
        }
        match msg.method() {
            "INVITE" => {
                let ruri = msg.request_uri().unwrap_or("");
                if conference_target(ruri).is_some() {
                    return None;
                }
                let number = Uri::parse(ruri).ok().and_then(|u| u.number());
                let elin = number.is_some_and(|n| {
                    self.callbacks.known_elins.contains(&n) || self.callbacks.elins.lookup(&n, self.now.mono).is_some()
                });
                let (policy, _) = self.policies.select(peer.addr.ip());
                (!elin && classify(ruri, policy).is_none()).then_some((404, "not an emergency number", false))
            }
            "BYE" | "UPDATE" | "INFO" | "PRACK" => Some((481, "no such dialog", false)),
            "MESSAGE" | "SUBSCRIBE" | "NOTIFY" | "REFER" => Some((405, "method not allowed", true)),
            // REGISTER and PUBLISH keep their transaction: a retransmission must get the cached
            // answer, not be checked again (a digest nonce count is single-use).
            "ACK" | "CANCEL" | "OPTIONS" | "REGISTER" | "PUBLISH" => None,
            _ => Some((501, "method not implemented", true)),
        }
    }

    /// OPTIONS outside a dialog (a keep-alive, a route's health probe, a scanner) is answered
    /// without a transaction: a flood of them holds no memory.
    fn answer_options_statelessly(&mut self, msg: &Message, peer: Peer) {
        let mut r = msg.response(200, "OK", Some(&stateless_tag(msg)));
        r.push("Allow", ALLOW);
        r.push("Accept", OPTIONS_ACCEPT);
        r.push("Supported", session_timer::SUPPORTED);
        self.tx.send_stateless(peer, &r);
    }

    /// Whether the core holds so many transactions (each about 1 KB, for up to 32 s) that
    /// ordinary requests should be shed rather than served: what a flood of REGISTERs from
    /// many addresses would otherwise turn into memory.
    pub fn overloaded(&self) -> bool {
        self.tx.active().0 > MAX_SERVER_TRANSACTIONS
    }

    /// Send a refusal without a transaction ([`stateless_tag`]).
    fn refuse_statelessly(&mut self, msg: &Message, peer: Peer, status: u16, why: &str, allow: bool) {
        let mut r = msg.response(status, reason_phrase(status), Some(&stateless_tag(msg)));
        if allow {
            r.push("Allow", ALLOW);
        }
        if status == 404 {
            r.push("Warning", "399 sosdesk \"not an emergency number for the caller's policy\"");
            self.stats.rejected += 1;
        }
        self.tx.send_stateless(peer, &r);
        self.tally_refused(msg, peer, status, why);
    }

    /// The core is behind on ordinary work: `msg` (an ordinary request, see
    /// `routing::triage`) is answered 503 with Retry-After at once, statelessly — no
    /// transaction, no policy, no location — and counted for its source's refusal record.
    pub fn shed(&mut self, msg: Message, peer: Peer, now: Now) {
        self.tick(now);
        if !msg.is_request() || msg.method() == "ACK" {
            return;
        }
        let mut r = msg.response(503, reason_phrase(503), Some(&ids::new_tag()));
        // RFC 3261 §21.5.4: when to try again.
        r.push("Retry-After", SHED_RETRY_AFTER_S.to_string());
        self.tx.send_stateless(peer, &r);
        self.tally_refused(&msg, peer, 503, "shed: core overloaded");
    }

    /// `n` ordinary datagrams were dropped unread (their lane was full): counted.
    pub fn note_dropped(&mut self, n: u64, now: Now) {
        self.tick(now);
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let unspecified = IpAddr::from([0, 0, 0, 0]);
        self.refused.add_n(
            unspecified,
            "dropped unread: core overloaded",
            n,
            || "not read: the ordinary lane was full".into(),
            now,
        );
    }

    /// A message the parser refused: answer it statelessly when it can be answered.
    pub fn handle_rejection(&mut self, rej: Rejection, peer: Peer, now: Now) {
        self.tick(now);
        self.stats.malformed += 1;
        tracing::debug!(%peer, reason = %rej.reason, "malformed SIP message");
        let status = rej.reply.as_ref().and_then(|r| r.status());
        let what = match status {
            Some(s) => format!("malformed {s}"),
            None => "malformed (not answered)".to_string(),
        };
        self.refused.add(peer.addr.ip(), &what, || rej.reason.clone(), now);
        if let Some(mut reply) = rej.reply {
            reply.stamp_received(peer.addr);
            self.tx.send_stateless(peer, &reply);
        }
    }

    pub fn handle_message(&mut self, mut msg: Message, peer: Peer, now: Now) {
        self.tick(now);
        let now = now.mono;
        if msg.is_request() {
            // Every response, stateless or not, then tells the sender where it was seen from.
            msg.stamp_received(peer.addr);
            // What needs no transaction is answered without one (junk holds no memory); a
            // request naming an unsupported scheme or extension gets its 416/420 below.
            let plain = msg.header("Require").is_none() && supported_scheme(&msg);
            if plain && msg.method() == "OPTIONS" && msg.to_tag().is_none() {
                self.answer_options_statelessly(&msg, peer);
                return;
            }
            // A client's delivery receipt for an alert (RFC 5438 IMDN) is taken, not refused.
            if plain && msg.method() == "MESSAGE" && crate::notify::is_delivery_receipt(&msg) {
                self.tx.send_stateless(peer, &msg.response(200, "OK", Some(&stateless_tag(&msg))));
                return;
            }
            if let Some((status, why, allow)) = self.stateless_refusal(&msg, peer).filter(|_| plain) {
                self.refuse_statelessly(&msg, peer, status, why, allow);
                return;
            }
            match self.tx.on_request(msg, peer, now) {
                Some(ServerEvent::Request { key, msg, peer }) => self.on_request(key, msg, peer, now),
                Some(ServerEvent::AckFor2xx { msg, .. }) => self.on_ack(msg),
                Some(ServerEvent::Cancel { invite: Some(k), .. }) => self.on_cancel(&k, now),
                Some(ServerEvent::Cancel { invite: None, .. }) | None => {}
            }
        } else {
            match self.tx.on_response(msg, now) {
                Ok(Some(ClientEvent::Response { key, msg, .. }))
                    if self.health.owns(&key) || self.trunks.iter().any(|t| t.owns(&key)) =>
                {
                    self.on_probe_response(&key, &msg, now)
                }
                Ok(Some(ClientEvent::Response { key, msg, .. })) if self.notifier.owns(&key) => {
                    let (status, accept) = (msg.status().unwrap_or(0), msg.header("Accept"));
                    self.notifier.on_response(&key, status, msg.status_reason(), accept, now);
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

    pub fn handle_timeout(&mut self, now: Now) {
        self.tick(now);
        let now = now.mono;
        for ev in self.tx.handle_timeout(now) {
            if let ClientEvent::Timeout { key } = ev {
                self.on_client_timeout(&key, now);
            }
        }
        self.notify_timeouts(now);
        self.probe_routes(now);
        while let Some(first) = self.calls.timers.first().cloned() {
            if first.0 > now {
                break;
            }
            self.calls.timers.remove(&first);
            let (_, call_ref, timer) = first;
            match timer {
                CallTimer::RouteResponse(attempt) => self.on_route_timeout(&call_ref, attempt, now),
                CallTimer::Retry(round) => self.on_retry_due(&call_ref, round, now),
                CallTimer::Progress => self.on_progress_due(&call_ref, now),
            }
        }
        self.calls.expire_abandoned(now);
    }

    /// The transport could not deliver to `peer` (TCP connect refused, ICMP unreachable):
    /// an outbound INVITE still waiting there fails over at once instead of waiting for the
    /// route timer.
    pub fn handle_send_failure(&mut self, peer: Peer, now: Now) {
        self.tick(now);
        let now = now.mono;
        let waiting: Vec<(String, usize)> = self
            .calls
            .live
            .values()
            .filter_map(|c| {
                c.b.as_ref().filter(|b| b.dialog.peer == peer && !b.responded).map(|b| (c.call_ref.clone(), b.attempt))
            })
            .collect();
        for (call_ref, attempt) in waiting {
            self.fail_attempt(&call_ref, attempt, format!("{peer} unreachable"), true, now);
        }
        self.notifier.on_unreachable(peer, &mut self.tx, now);
        self.drain_notify();
        self.probe_unreachable(peer);
    }

    /// A TCP or TLS connection to `peer` closed (the provider's SBC dropped it, a reset, a
    /// keepalive that found the flow dead); `accepted`: the peer had opened it. The answers to
    /// INVITEs sent on it were to come back on it (RFC 3261 §18.2.2); a provider may open a
    /// connection of its own to our Via for them, but one behind a firewall cannot, and an
    /// INVITE that has had a provisional has no timer left (§17.1.1.2: Timer B runs only until
    /// the first response), so a call ringing over a dead connection would wait for ever.
    /// Every call still waiting for its final answer there fails over now: an attempt that had
    /// any provisional, 100 included, is cancelled (§9.1, over a new connection) and the next
    /// route tried; a 200 that comes late from the abandoned attempt is ACKed and ended, as
    /// after a route timeout.
    pub fn handle_connection_closed(&mut self, peer: Peer, accepted: bool, now: Now) {
        self.tick(now);
        let now = now.mono;
        let mut waiting = Vec::new();
        for c in self.calls.live.values_mut().filter(|c| c.state == CallState::Routing) {
            if let Some(b) = c.b.as_mut().filter(|b| b.dialog.peer == peer) {
                // A 100 is a provisional too: the far end has the INVITE, and is told to stop.
                b.provisional |= b.responded;
                waiting.push((c.call_ref.clone(), b.attempt));
            }
        }
        for (call_ref, attempt) in waiting {
            let reason = format!("the connection to {peer} closed before a final answer");
            self.fail_attempt(&call_ref, attempt, reason, true, now);
        }
        if accepted {
            self.caller_connection_closed(peer);
            self.callbacks.elins.connection_closed(peer);
        }
    }

    /// A connection a peer opened (a PBX, an SBC, a desk) closed mid-call: requests inside the
    /// dialogs it carried (the far end's BYE, a re-INVITE) cannot follow it to a port nobody
    /// listens on any more. They go to each dialog's next hop instead, as §12.2.1.1 says: the
    /// first Record-Route, else the Contact — an IP address, or the name the peer gave itself
    /// in its Via, found at the address its connection came from (any other name would need
    /// DNS on this path; the dialog then keeps its old address, logged) — over the closed
    /// connection's transport unless the URI names another, and never in clear after TLS. The
    /// caller's dialog, a callback's leg to the PBX, and desks that joined over such a
    /// connection.
    fn caller_connection_closed(&mut self, peer: Peer) {
        for call in self.calls.live.values_mut() {
            let call_ref = call.call_ref.clone();
            let desks = call.media.as_mut().map(|m| m.desks.iter_mut().map(|d| &mut d.dialog));
            let dialogs = std::iter::once(&mut call.a)
                .chain(call.b.as_mut().map(|b| &mut b.dialog))
                .chain(desks.into_iter().flatten());
            for d in dialogs.filter(|d| d.peer == peer) {
                match next_hop_after_close(d, peer) {
                    Ok(to) => {
                        tracing::info!(call = %call_ref, closed = %peer, to = %to.peer, name = ?to.name, "a connection the peer opened closed: requests inside its dialog go to the dialog's next hop (RFC 3261 §12.2.1.1)");
                        d.peer = to.peer;
                        // Noted before each request to it (`dialog_request`).
                        d.tls_name = to.name.filter(|_| to.peer.transport == Transport::Tls);
                    }
                    Err(why) => {
                        tracing::warn!(call = %call_ref, closed = %peer, "a connection the peer opened closed and requests inside its dialog cannot reach it: {why}")
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------ requests

    fn respond(&mut self, key: &str, req: &Message, status: u16, extra: &[(&str, String)]) {
        let mut r = req.response(status, reason_phrase(status), Some(&ids::new_tag()));
        for (n, v) in extra {
            r.push(n, v.clone());
        }
        self.tx.respond(key, &r, self.now.mono);
    }

    fn on_request(&mut self, key: ServerKey, msg: Message, peer: Peer, now: Instant) {
        let method = msg.method().to_string();
        if !supported_scheme(&msg) {
            // RFC 3261 §8.2.2.1.
            self.refuse_request(&key, &msg, peer, 416, "unsupported URI scheme", &[]);
            return;
        }
        // §8.2.2.3: an option tag sosdesk does not support (it supports session timers only).
        if let Some(tags) = msg.header("Require").and_then(session_timer::unsupported) {
            self.refuse_request(&key, &msg, peer, 420, "unsupported extension", &[("Unsupported", tags)]);
            return;
        }
        if msg.to_tag().is_some() {
            self.on_in_dialog_request(key, msg, now);
            return;
        }
        match method.as_str() {
            "INVITE" => self.on_invite(key, msg, peer, now),
            "OPTIONS" => self.respond(
                &key,
                &msg,
                200,
                &[
                    ("Allow", ALLOW.into()),
                    ("Accept", OPTIONS_ACCEPT.into()),
                    ("Supported", session_timer::SUPPORTED.into()),
                ],
            ),
            "BYE" | "UPDATE" | "INFO" | "PRACK" => self.refuse_request(&key, &msg, peer, 481, "no such dialog", &[]),
            "REGISTER" => self.on_register(key, msg, peer, now),
            "PUBLISH" => self.on_publish(key, msg, peer, now),
            "MESSAGE" | "SUBSCRIBE" | "NOTIFY" | "REFER" => {
                self.refuse_request(&key, &msg, peer, 405, "method not allowed", &[("Allow", ALLOW.into())])
            }
            _ => self.refuse_request(&key, &msg, peer, 501, "method not implemented", &[("Allow", ALLOW.into())]),
        }
    }

    // ------------------------------------------------------------------ outbound attempts

    // ------------------------------------------------------------------ responses

    // ------------------------------------------------------------------ in-dialog

    // ------------------------------------------------------------------ bookkeeping

    fn emit(&mut self, call_ref: &str, kind: CallEventKind) {
        if let Some(call) = self.calls.live.get_mut(call_ref) {
            Self::emit_into(&mut self.out, call, kind, self.now.wall);
        }
    }

    /// The call's next event, stamped `at` (the input's wall-clock time), into the outputs.
    /// Takes the parts it needs rather than `self`, so a call borrowed from the table can emit.
    fn emit_into(out: &mut Outputs, call: &mut Call, kind: CallEventKind, at: DateTime<Utc>) {
        out.events.push_back(call_event(call, kind, at));
    }
}

/// The call's next event: numbered in its sequence, carrying its current picture.
fn call_event(call: &mut Call, kind: CallEventKind, at: DateTime<Utc>) -> CallEvent {
    call.seq += 1;
    picture(call, kind, at)
}

/// The call as an event numbered `call.seq` (its latest).
fn picture(call: &Call, kind: CallEventKind, at: DateTime<Utc>) -> CallEvent {
    CallEvent {
        version: CALL_EVENT_VERSION,
        call_id: call.call_ref.clone(),
        seq: call.seq,
        at,
        caller: call.caller.clone(),
        dialed: call.dialed.clone(),
        normalized: call.normalized.clone(),
        test_call: call.test,
        policy: call.policy.clone(),
        site: call.site.clone(),
        location: call.location.clone(),
        route: call.route_info.clone(),
        kind,
    }
}

/// The To tag of a response sent without a transaction, derived from the request: a
/// retransmitted request gets the very same response (RFC 3261 §8.2.6.2 asks one tag per
/// response; a retransmission is the same request).
fn supported_scheme(msg: &Message) -> bool {
    msg.request_uri()
        .and_then(|u| Uri::parse(u).ok())
        .is_some_and(|u| matches!(u.scheme.as_str(), "sip" | "sips" | "tel" | "urn"))
}

fn stateless_tag(msg: &Message) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (msg.call_id(), msg.header("From"), msg.top_via().map(|v| v.branch().map(str::to_string))).hash(&mut h);
    format!("sl{:016x}", h.finish())
}

/// Where requests inside `d` go once the connection the peer had opened for it (to `closed`)
/// is gone (see `caller_connection_closed`).
fn next_hop_after_close(d: &Dialog, closed: Peer) -> Result<Reconnect, String> {
    let hop = d.next_hop().map_err(|e| format!("no next hop: {e}"))?;
    let transport = match hop.transport {
        _ if closed.transport == Transport::Tls || hop.sips => Transport::Tls,
        Some(t) => t,
        None => closed.transport,
    };
    let port = hop.port.unwrap_or(crate::sip::rfc3263::SipTarget::default_port(transport));
    let (ip, name) = match hop.host {
        crate::sip::rfc3263::Host::Ip(ip) => (ip, None),
        // The name the peer gave itself in its Via (a Skype for Business Mediation Server's
        // FQDN): the peer is at the address its connection came from, on the hop's port; the
        // name is for the certificate (`Reconnect`). Any other name (a proxy that did not
        // Record-Route, a PBX behind it) is elsewhere: it would need DNS, which this path
        // never waits for.
        crate::sip::rfc3263::Host::Name(name) if d.sender.as_ref().is_some_and(|s| s.eq_ignore_ascii_case(&name)) => {
            (closed.addr.ip(), Reconnect::certificate_name(&name))
        }
        crate::sip::rfc3263::Host::Name(name) => {
            return Err(format!("its next hop {name} is a name other than the one its Via gave, and is not looked up"))
        }
    };
    Ok(Reconnect { peer: Peer { transport, addr: std::net::SocketAddr::new(ip, port) }, name })
}

/// Where a new connection to a caller goes once the one its call came over (TCP or TLS, which
/// the caller opened) is gone: its next hop ([`next_hop_after_close`]). `None` over UDP.
fn reconnect_to(a: &Dialog) -> Option<Reconnect> {
    if !a.peer.transport.reliable() {
        return None;
    }
    next_hop_after_close(a, a.peer).ok()
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
