//! The emergency notification IM (RFC 3428 SIP MESSAGE) to the notification URIs of the
//! caller's policy (Skype for Business NotificationUri; Kari's Law's "notify a central point").
//!
//! Sans-I/O like the engine: [`Notifier`] plans deliveries and their retries; the engine hands it
//! the transaction layer to send through and the responses and timeouts that concern it, and
//! takes back one `Notified` outcome per attempt for the call's audit trail.
//!
//! A delivery is one request URI: a client elsewhere (`sip:guard@192.0.2.30:5060`), or a
//! registered contact of a desk account or notification group of this core. A target that names
//! a local user or group is expanded to its registered contacts when it is due; with none
//! registered it is retried like a failed send, so a desk that registers within the retry window
//! still gets the alert.

mod text;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::events::{CallEvent, CallEventKind};
use crate::sip::transaction::{ClientKey, Peer, Transactions, Transport};
use crate::sip::{ids, Message, Uri};

pub use text::{body_of, human_text, subject, CALL_EVENT_CONTENT_TYPE};

/// Where a notification URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A desk account or notification group of this core (user part of the URI).
    Local(String),
    /// A SIP client elsewhere at an IP address: sent straight to its host and port.
    Remote { peer: Peer, uri: String },
    /// A `sip:`/`sips:` URI whose host is a name.
    Named { target: crate::sip::rfc3263::SipTarget, uri: String },
}

impl Target {
    /// `core_host`/`core_ports`: what names this core; a URI with that host and no port (or one
    /// of the core's ports) is one of its own users or groups.
    pub fn parse(uri: &str, core_host: &str, core_ports: &[u16]) -> Result<Target, String> {
        crate::sip::target::check_bare_uri(uri)?;
        let u = Uri::parse(uri).map_err(|e| format!("{uri:?}: {e}"))?;
        if !u.is_sip() {
            return Err(format!("{uri:?} is not a sip: URI"));
        }
        let host = u.host.trim_start_matches('[').trim_end_matches(']');
        let core = core_host.trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case(core) && u.port.is_none_or(|p| core_ports.contains(&p)) {
            if u.user.as_deref().unwrap_or("").is_empty() {
                return Err(format!("{uri:?} names this core but no user or group"));
            }
            return Ok(Target::Local(u.user.clone().unwrap_or_default()));
        }
        // A host name: resolved by the I/O shell (RFC 3263) ahead of need, never on the way.
        let target = crate::sip::rfc3263::SipTarget::parse(uri)?;
        if target.literal().is_none() {
            return Ok(Target::Named { target, uri: uri.to_string() });
        }
        let (peer, uri) = crate::sip::target::target_of_uri(uri)?;
        Ok(Target::Remote { peer, uri })
    }
}

pub use crate::registrar::Contact;

/// How the notifier reaches the rest of the engine.
pub trait NotifyContext {
    /// The registered contacts of a local user or group.
    fn contacts_of(&self, user_or_group: &str) -> Vec<Contact>;
    /// Via for a request sent over `t` with `branch`.
    fn via(&self, t: Transport, branch: &str) -> String;
    /// sosdesk's own SIP host.
    fn host(&self) -> &str;
    /// Where attempt `attempt` (from 1) to a name goes: the name's resolved targets in their
    /// RFC 3263 order, each retry to the next (§4.3: a failed target is left for the next one),
    /// round again after the last. None: the name has not resolved.
    fn resolved(&self, target: &crate::sip::rfc3263::SipTarget, attempt: u32) -> Option<Peer>;
}

/// Delivery timing (config `[notification]`).
#[derive(Debug, Clone, Copy)]
pub struct NotifyTiming {
    pub attempt_timeout: Duration,
    pub retry_for: Duration,
}

/// The largest MESSAGE sent over UDP to a path whose MTU is unknown (RFC 3261 §18.1.1, RFC 3428
/// §7): a larger one goes over TCP, which every SIP element implements (RFC 3261 §18).
pub const UDP_MAX_REQUEST: usize = 1300;

/// How long a receiver whose TCP could not be reached gets its large MESSAGEs over UDP straight
/// away, rather than after another failed connection.
const TCP_REFUSAL_MEMORY: Duration = Duration::from_secs(600);
/// How long a receiver that answered 415 is sent text alone first (a client is not swapped
/// for one that takes the multipart body often; an hour bounds a wrong belief).
const TEXT_ONLY_MEMORY: Duration = Duration::from_secs(3600);
/// The Content-Type of the text part sent alone.
const TEXT_PLAIN: &str = "text/plain;charset=UTF-8";

/// Backoff after the n-th failed attempt (1-based): 1, 2, 4, 8, 16, then every 30 s.
pub fn backoff(failed_attempts: u32) -> Duration {
    Duration::from_secs(1u64 << failed_attempts.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Time for the next attempt.
    Attempt,
    /// The current attempt has had no final response in time.
    Give,
}

enum Dest {
    Local(String),
    Contact(Contact),
    Remote(Peer),
    Named(crate::sip::rfc3263::SipTarget),
}

/// What every delivery of one call sends (shared, not copied: `Bytes` and `Arc<str>`).
#[derive(Clone)]
struct Payload {
    subject: Arc<str>,
    content_type: Arc<str>,
    body: Bytes,
    /// The text part alone (`text/plain`), for a receiver that refused the whole body with 415.
    text: Bytes,
}

impl Delivery {
    /// Whether this delivery goes to a user or group `concerns` picks.
    fn waits_for(&self, concerns: &impl Fn(&str) -> bool) -> bool {
        match (&self.dest, &self.expanded_from) {
            (Dest::Local(name), _) => concerns(name),
            (Dest::Contact(c), Some((_, group))) => concerns(&c.user) || concerns(group),
            (Dest::Contact(c), None) => concerns(&c.user),
            _ => false,
        }
    }
}

struct Delivery {
    call_ref: String,
    /// The URI audited: the notification URI, or the contact it was expanded to.
    uri: String,
    /// The notification URI a contact came from (for the audit detail).
    via_target: Option<String>,
    /// For a contact: the notification URI and the user or group it was expanded from, so a
    /// retry goes to whoever is registered then, not to a contact that has left.
    expanded_from: Option<(String, String)>,
    dest: Dest,
    message: Payload,
    call_id: String,
    from_tag: String,
    cseq: u32,
    attempts: u32,
    started: Instant,
    txn: Option<ClientKey>,
    /// When the waiting attempt's Give timer fires: the timer's key, so it is removed in
    /// O(log n) (a scan of every timer per failure made thousands of retrying deliveries
    /// quadratic: BENCHMARKS.md).
    give_at: Option<Instant>,
    /// Where the current attempt went, and how large it was.
    sent_to: Option<Peer>,
    size: usize,
    /// The attempt goes over TCP instead of the destination's UDP because of its size.
    upgraded: bool,
    /// TCP to the receiver failed (refused, not opened in time, or no answer on it): its
    /// MESSAGEs go over UDP after all, whatever their size.
    tcp_failed: bool,
    /// The receiver takes only `text/plain` (it answered 415): the text part is sent alone.
    text_only: bool,
}

/// One attempt's result, for the call's audit trail (`CallEventKind::Notified`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub call_ref: String,
    pub kind: CallEventKind,
}

pub struct Notifier {
    timing: NotifyTiming,
    deliveries: HashMap<u64, Delivery>,
    by_txn: HashMap<ClientKey, u64>,
    timers: BTreeSet<(Instant, u64, Timer)>,
    next_id: u64,
    outcomes: Vec<Outcome>,
    /// Receivers whose TCP failed, until when that is believed.
    refuses_tcp: HashMap<std::net::SocketAddr, Instant>,
    /// Receivers that refused the multipart body with 415 but accept `text/plain` (an
    /// ordinary SIP client), until when that is believed: their next alerts go as text at once.
    text_only: HashMap<std::net::SocketAddr, Instant>,
}

impl Notifier {
    pub fn new(timing: NotifyTiming) -> Notifier {
        Notifier {
            timing,
            deliveries: HashMap::new(),
            by_txn: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: 1,
            outcomes: Vec::new(),
            refuses_tcp: HashMap::new(),
            text_only: HashMap::new(),
        }
    }

    /// Notify every target of a call now. `event` is the call's picture to send (its detection).
    pub fn notify(
        &mut self,
        event: &CallEvent,
        targets: &[(String, Target)],
        ctx: &dyn NotifyContext,
        tx: &mut Transactions,
        now: Instant,
    ) {
        if targets.is_empty() {
            return;
        }
        let (content_type, body) = body_of(event);
        let message = Payload {
            subject: text::subject(event).into(),
            content_type: content_type.into(),
            body,
            text: Bytes::from(text::human_text(event)),
        };
        for (uri, target) in targets {
            let dest = match target {
                Target::Local(user) => Dest::Local(user.clone()),
                Target::Remote { peer, .. } => Dest::Remote(*peer),
                Target::Named { target, .. } => Dest::Named(target.clone()),
            };
            let id = self.add(&event.call_id, uri.clone(), None, dest, &message, now);
            self.attempt(id, ctx, tx, now);
        }
    }

    /// A new delivery of `message` (subject, content type, body), started at `started`.
    fn add(
        &mut self,
        call_ref: &str,
        uri: String,
        via_target: Option<String>,
        dest: Dest,
        message: &Payload,
        started: Instant,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.deliveries.insert(
            id,
            Delivery {
                call_ref: call_ref.to_string(),
                uri,
                via_target,
                dest,
                message: message.clone(),
                expanded_from: None,
                call_id: String::new(),
                from_tag: ids::new_tag(),
                cseq: 0,
                attempts: 0,
                started,
                txn: None,
                give_at: None,
                sent_to: None,
                size: 0,
                upgraded: false,
                tcp_failed: false,
                text_only: false,
            },
        );
        id
    }

    /// Whether `key` is one of the notifier's MESSAGE transactions.
    pub fn owns(&self, key: &str) -> bool {
        self.by_txn.contains_key(key)
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.0)
    }

    /// Pending deliveries (for stats and tests).
    pub fn pending(&self) -> usize {
        self.deliveries.len()
    }

    /// The outcomes since the last call, oldest first.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    fn attempt(&mut self, id: u64, ctx: &dyn NotifyContext, tx: &mut Transactions, now: Instant) {
        let Some(d) = self.deliveries.get_mut(&id) else { return };
        // A retry to a contact that is no longer registered (the client restarted with a new
        // contact, or left): the user or group is expanded again, to whoever is there now.
        if let (Dest::Contact(c), Some((target, group))) = (&mut d.dest, &d.expanded_from) {
            let now_there = ctx.contacts_of(group).into_iter().find(|now_there| now_there.uri == c.uri);
            // Still registered: to where it registered from last (a client over TCP or TLS
            // that reconnected keeps its Contact but has a new connection).
            if let Some(fresh) = &now_there {
                c.peer = fresh.peer;
            }
            if now_there.is_none() {
                let (target, group) = (target.clone(), group.clone());
                let gone = std::mem::replace(&mut d.dest, Dest::Local(group));
                if let Dest::Contact(c) = gone {
                    tracing::info!(call = %d.call_ref, contact = %c.uri, "notification: the contact has left; expanding {target} again");
                }
                d.uri = target;
                d.via_target = None;
                d.expanded_from = None;
            }
        }
        d.attempts += 1;
        let (peer, ruri) = match &d.dest {
            Dest::Remote(peer) => (*peer, d.uri.clone()),
            Dest::Named(target) => match ctx.resolved(target, d.attempts) {
                Some(peer) => (peer, d.uri.clone()),
                None => {
                    let why = format!("{target} has not resolved");
                    self.failed(id, why, now);
                    return;
                }
            },
            Dest::Contact(c) => (c.peer, c.uri.clone()),
            Dest::Local(user) => {
                // Expanded now: each registered contact becomes a delivery of its own (but for
                // one this call's alert is already on its way to).
                let user = user.clone();
                let call_ref = d.call_ref.clone();
                let busy: HashSet<String> = self
                    .deliveries
                    .values()
                    .filter(|o| o.call_ref == call_ref && matches!(o.dest, Dest::Contact(_)))
                    .map(|o| o.uri.clone())
                    .collect();
                let all = ctx.contacts_of(&user);
                if all.is_empty() {
                    self.failed(id, "no registered contact".into(), now);
                    return;
                }
                let contacts: Vec<Contact> = all.into_iter().filter(|c| !busy.contains(&c.uri)).collect();
                let Some(d) = self.deliveries.remove(&id) else { return };
                // Every contact is already being sent this call's alert (another target names
                // the same user): nothing to add, and no failure to audit.
                for c in contacts {
                    let via = Some(format!("{} ({})", d.uri, c.user));
                    let nid = self.add(&d.call_ref, c.uri.clone(), via, Dest::Contact(c), &d.message, d.started);
                    if let Some(new) = self.deliveries.get_mut(&nid) {
                        new.expanded_from = Some((d.uri.clone(), user.clone()));
                    }
                    self.attempt(nid, ctx, tx, now);
                }
                return;
            }
        };
        if d.call_id.is_empty() {
            d.call_id = ids::new_call_id(ctx.host());
        }
        d.cseq += 1;
        let mut m = Message::request("MESSAGE", &ruri);
        m.push("Max-Forwards", "70");
        m.push("From", format!("\"sosdesk\" <sip:sosdesk@{}>;tag={}", ctx.host(), d.from_tag));
        let to = match &d.dest {
            // The registered user's address of record.
            Dest::Contact(c) => format!("<sip:{}@{}>", c.user, ctx.host()),
            _ => format!("<{}>", d.uri),
        };
        m.push("To", to);
        m.push("Call-ID", d.call_id.clone());
        m.push("CSeq", format!("{} MESSAGE", d.cseq));
        // RFC 3261 §20.26 and §20.36.
        m.push("Priority", "emergency");
        m.push("Subject", d.message.subject.to_string());
        d.text_only |= self.text_only.get(&peer.addr).is_some_and(|until| now < *until);
        if d.text_only {
            m.push("Content-Type", TEXT_PLAIN);
            m.body = d.message.text.clone();
        } else {
            m.push("Content-Type", d.message.content_type.to_string());
            m.body = d.message.body.clone();
        }
        // Too large for UDP (RFC 3261 §18.1.1): TCP to the same address and port, unless this
        // receiver's TCP failed before (`on_unreachable`): then UDP after all, as IP fragments
        // on most networks, rather than no alert at all.
        let branch = ids::new_branch();
        let via = ctx.via(peer.transport, &branch);
        d.size = m.wire_len() + "Via: \r\n".len() + via.len();
        if peer.transport == Transport::Udp {
            d.tcp_failed |= self.refuses_tcp.get(&peer.addr).is_some_and(|until| now < *until);
        }
        d.upgraded = peer.transport == Transport::Udp && d.size > UDP_MAX_REQUEST && !d.tcp_failed;
        let (peer, via) = if d.upgraded {
            (Peer { transport: Transport::Tcp, addr: peer.addr }, ctx.via(Transport::Tcp, &branch))
        } else {
            (peer, via)
        };
        m.push_front("Via", via);
        d.sent_to = Some(peer);
        let key = tx.send_request(&m, peer, now);
        d.txn = Some(key.clone());
        let give_at = now + self.timing.attempt_timeout;
        d.give_at = Some(give_at);
        self.by_txn.insert(key, id);
        self.timers.insert((give_at, id, Timer::Give));
    }

    /// A final response to one of our MESSAGEs; `accept` is its Accept header, if any.
    pub fn on_response(&mut self, key: &str, status: u16, reason: &str, accept: Option<&str>, now: Instant) {
        if status < 200 {
            return;
        }
        let Some(id) = self.by_txn.remove(key) else { return };
        let Some(d) = self.deliveries.get_mut(&id) else { return };
        d.txn = None;
        if status == 415 {
            self.unsupported_media(id, reason, accept, now);
            return;
        }
        if (200..300).contains(&status) {
            let Some(d) = self.deliveries.remove(&id) else { return };
            if let Some(at) = d.give_at {
                self.timers.remove(&(at, id, Timer::Give));
            }
            let detail =
                format!("{}delivered on attempt {}{}: {status} {reason}", via_text(&d), d.attempts, how_sent(&d));
            self.outcomes
                .push(Outcome { call_ref: d.call_ref, kind: CallEventKind::Notified { uri: d.uri, ok: true, detail } });
        } else {
            self.failed(id, format!("{status} {reason}"), now);
        }
    }

    /// 415: the receiver cannot take the multipart body (RFC 3261 §21.4.13). An ordinary
    /// SIP client takes `text/plain` (RFC 3428 §8 makes it mandatory; its `Accept` says so,
    /// §8.1.3.5): the text part alone is sent at once, and to this receiver first from now on.
    /// A receiver that takes neither is given up: sending the same body again cannot succeed.
    fn unsupported_media(&mut self, id: u64, reason: &str, accept: Option<&str>, now: Instant) {
        let Some(d) = self.deliveries.get_mut(&id) else { return };
        if let Some(at) = d.give_at.take() {
            self.timers.remove(&(at, id, Timer::Give));
        }
        let said = accept.map(|a| format!(" (Accept: {})", a.replace(['\r', '\n'], " "))).unwrap_or_default();
        let attempt = format!("{}attempt {}{} failed: 415 {reason}{said}", via_text(d), d.attempts, how_sent(d));
        let detail = if !d.text_only && accept.is_none_or(accepts_text_plain) {
            d.text_only = true;
            if let Some(peer) = d.sent_to {
                if self.text_only.len() >= 1024 {
                    self.text_only.retain(|_, until| now < *until);
                }
                self.text_only.insert(peer.addr, now + TEXT_ONLY_MEMORY);
            }
            self.timers.insert((now, id, Timer::Attempt));
            format!("{attempt}; re-sent at once as text/plain")
        } else {
            let detail = format!("{attempt}; gave up: the receiver takes no form of the alert sosdesk sends");
            let d = self.deliveries.remove(&id);
            let d = d.as_ref().expect("looked up above");
            self.outcomes.push(Outcome {
                call_ref: d.call_ref.clone(),
                kind: CallEventKind::Notified { uri: d.uri.clone(), ok: false, detail },
            });
            return;
        };
        self.outcomes.push(Outcome {
            call_ref: d.call_ref.clone(),
            kind: CallEventKind::Notified { uri: d.uri.clone(), ok: false, detail },
        });
    }

    /// The transaction layer gave up on a MESSAGE (Timer F) or could not send it.
    pub fn on_transaction_failed(&mut self, key: &str, why: &str, now: Instant) {
        let Some(id) = self.by_txn.remove(key) else { return };
        if let Some(d) = self.deliveries.get_mut(&id) {
            d.txn = None;
            self.failed(id, why.to_string(), now);
        }
    }

    /// `user` has just registered: deliveries waiting out a backoff for it (or for a group it
    /// is in, `concerns`) are tried now, not at their next retry (a desk that reconnected gets
    /// its alert when it is back, not up to 30 s later).
    pub fn registered(&mut self, concerns: impl Fn(&str) -> bool, now: Instant) {
        let due: Vec<(Instant, u64)> = self
            .timers
            .iter()
            .filter(|(at, id, t)| {
                *t == Timer::Attempt && *at > now && self.deliveries.get(id).is_some_and(|d| d.waits_for(&concerns))
            })
            .map(|(at, id, _)| (*at, *id))
            .collect();
        for (at, id) in due {
            self.timers.remove(&(at, id, Timer::Attempt));
            self.timers.insert((now, id, Timer::Attempt));
        }
    }

    /// The transport could not reach `peer` (TCP connect refused): every attempt waiting there
    /// fails now instead of at its timeout. An attempt that went over TCP only because of its
    /// size is made again at once over UDP: the same attempt, to a receiver without TCP.
    pub fn on_unreachable(&mut self, peer: Peer, tx: &mut Transactions, now: Instant) {
        // Remembered whether or not an attempt is still waiting there (a slow failure may come
        // while the attempt that caused it is in its backoff).
        if peer.transport == Transport::Tcp && self.deliveries.values().any(|d| d.upgraded && d.sent_to == Some(peer)) {
            if self.refuses_tcp.len() >= 1024 {
                self.refuses_tcp.retain(|_, until| now < *until);
            }
            self.refuses_tcp.insert(peer.addr, now + TCP_REFUSAL_MEMORY);
        }
        let waiting: Vec<(ClientKey, u64)> = self
            .by_txn
            .iter()
            .filter(|(_, id)| self.deliveries.get(id).is_some_and(|d| d.sent_to == Some(peer)))
            .map(|(k, id)| (k.clone(), *id))
            .collect();
        for (key, id) in waiting {
            tx.abandon(&key);
            match self.deliveries.get_mut(&id) {
                Some(d) if d.upgraded => {
                    self.by_txn.remove(&key);
                    d.txn = None;
                    d.tcp_failed = true;
                    // Nothing reached the receiver: the same request again, numbered the same.
                    d.attempts -= 1;
                    d.cseq -= 1;
                    if let Some(at) = d.give_at.take() {
                        self.timers.remove(&(at, id, Timer::Give));
                    }
                    self.timers.insert((now, id, Timer::Attempt));
                }
                _ => self.on_transaction_failed(&key, &format!("{peer} unreachable"), now),
            }
        }
    }

    pub fn handle_timeout(&mut self, ctx: &dyn NotifyContext, tx: &mut Transactions, now: Instant) {
        while let Some(first) = self.timers.first().copied() {
            if first.0 > now {
                break;
            }
            self.timers.remove(&first);
            let (_, id, timer) = first;
            match timer {
                Timer::Attempt => {
                    if self.deliveries.get(&id).is_some_and(|d| d.txn.is_none()) {
                        self.attempt(id, ctx, tx, now);
                    }
                }
                Timer::Give => {
                    // Only a timer of the attempt still waiting counts; a stale one is ignored.
                    let waiting = self.deliveries.get(&id).and_then(|d| d.txn.clone());
                    // `failed` drops a delivery's Give timer, so one still set is the current attempt's.
                    let Some(key) = waiting else { continue };
                    tx.abandon(&key);
                    self.by_txn.remove(&key);
                    if let Some(d) = self.deliveries.get_mut(&id) {
                        d.txn = None;
                        d.give_at = None;
                        // No answer over TCP (a connection that opened but carries nothing
                        // back): the next attempt tries UDP.
                        d.tcp_failed |= d.upgraded;
                    }
                    let ms = self.timing.attempt_timeout.as_millis();
                    self.failed(id, format!("no final response within {ms} ms"), now);
                }
            }
        }
    }

    /// An attempt failed: audit it, and retry after the backoff while the window lasts.
    fn failed(&mut self, id: u64, why: String, now: Instant) {
        // The failed attempt's Give timer (if it has not fired) must not fail a later attempt.
        if let Some(at) = self.deliveries.get_mut(&id).and_then(|d| d.give_at.take()) {
            self.timers.remove(&(at, id, Timer::Give));
        }
        let Some(d) = self.deliveries.get(&id) else { return };
        let wait = backoff(d.attempts);
        let elapsed = now.saturating_duration_since(d.started);
        let retry = elapsed + wait <= self.timing.retry_for;
        let detail = if retry {
            format!(
                "{}attempt {}{} failed: {why}; retrying in {} s",
                via_text(d),
                d.attempts,
                how_sent(d),
                wait.as_secs()
            )
        } else {
            format!(
                "{}attempt {}{} failed: {why}; gave up after {} attempts over {} s",
                via_text(d),
                d.attempts,
                how_sent(d),
                d.attempts,
                elapsed.as_secs()
            )
        };
        self.outcomes.push(Outcome {
            call_ref: d.call_ref.clone(),
            kind: CallEventKind::Notified { uri: d.uri.clone(), ok: false, detail },
        });
        if retry {
            self.timers.insert((now + wait, id, Timer::Attempt));
        } else {
            // No timer of it is left: its Attempt timer fired to start this attempt, and its
            // Give timer was removed above.
            self.deliveries.remove(&id);
        }
    }
}

fn via_text(d: &Delivery) -> String {
    d.via_target.as_ref().map(|t| format!("for {t}: ")).unwrap_or_default()
}

/// Whether `msg` (a MESSAGE) is a delivery or display receipt (RFC 5438 §7.1: an IMDN body,
/// `message/imdn+xml`) that a client sends back for an alert it received.
pub fn is_delivery_receipt(msg: &Message) -> bool {
    msg.header("Content-Type")
        .is_some_and(|ct| ct.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("message/imdn+xml"))
}

/// Whether an Accept header value (RFC 3261 §20.1) takes `text/plain`: the type itself,
/// `text/*` or `*/*`, unless with `q=0`.
fn accepts_text_plain(accept: &str) -> bool {
    crate::sip::message::split_comma_list(accept).iter().any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && v.trim().parse() == Ok(0.0f32))
        });
        !refused && matches!(media.as_str(), "text/plain" | "text/*" | "*/*")
    })
}

/// The transport, when the size chose it, and the form, when it is not the usual (for the
/// audit detail); nothing for the usual case.
fn how_sent(d: &Delivery) -> String {
    let form = if d.text_only { " as text/plain" } else { "" };
    format!("{form}{}", how_sent_transport(d))
}

fn how_sent_transport(d: &Delivery) -> String {
    if d.upgraded {
        format!(" over TCP ({} bytes)", d.size)
    } else if d.tcp_failed && d.size > UDP_MAX_REQUEST {
        format!(" over UDP ({} bytes; TCP failed)", d.size)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests;
