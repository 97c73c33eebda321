//! SIP transactions (RFC 3261 §17, with the RFC 6026 "Accepted" states), sans-I/O.
//!
//! The layer takes parsed messages and the current time, and produces bytes to send
//! ([`Transmit`]) and events for the transaction user (the B2BUA). Timers are kept in one
//! ordered set: the I/O loop sleeps until [`Transactions::next_timeout`] and then calls
//! [`Transactions::handle_timeout`]. Tests drive minutes of timers in microseconds.
//!
//! Over reliable transports (TCP, TLS) the transactions retransmit nothing and their "wait"
//! timers are zero (§17.1.1.2, §17.2.1); a 2xx to an INVITE is still repeated until its ACK
//! (§13.3.1.4 is the UAS core's rule, whatever the transport).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::{Message, Via};

/// How a message travels: the transport and the remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP with TLS (RFC 3261 §26.2.1; RFC 5630 for `sips:`).
    Tls,
}

impl Transport {
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    pub fn reliable(&self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport.as_str().to_ascii_lowercase(), self.addr)
    }
}

#[derive(Debug, Clone)]
pub struct Transmit {
    pub peer: Peer,
    pub bytes: Bytes,
    /// A response over TCP or TLS: where it goes if the request's connection to `peer` has
    /// closed (RFC 3261 §18.2.2, [`reply_address`]). Never set for requests.
    pub reconnect: Option<Reconnect>,
    /// An INVITE outside a dialog (a call's attempt on a route): one that has waited for a
    /// connection longer than the route's timeout has been given up by the engine (the call
    /// went on) and must not be sent late.
    pub initial_invite: bool,
}

/// Where a new connection to a peer goes once the one it opened has closed, and the host name
/// its certificate must carry over TLS (RFC 5922 §7.2) when the peer gave a name rather than an
/// address (in its Via, Contact or Record-Route). The name is not looked up: the address is
/// the one the peer's connection came from (the emergency path never waits for DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnect {
    pub peer: Peer,
    pub name: Option<String>,
}

impl Reconnect {
    /// The name a peer gave itself (a Via's sent-by host, a next hop's), as the name its TLS
    /// certificate must carry: a fully qualified domain name (RFC 5922 §7.2). An IP address is
    /// none, and a single label (`pbx01`) is no identity a CA vouches for: such a peer's
    /// certificate is checked against its address, as before it named itself.
    pub fn certificate_name(host: &str) -> Option<String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        (bare.parse::<std::net::IpAddr>().is_err() && bare.contains('.')).then(|| host.to_string())
    }
}

/// RFC 3261 §17.1.1.1 timer values (configurable: some trunks want a shorter T1).
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

/// Client transaction key (§17.1.3): top Via branch + CSeq method.
pub type ClientKey = String;
/// Server transaction key (§17.2.3): branch + sent-by + method (ACK counts as INVITE).
pub type ServerKey = String;

#[derive(Debug)]
pub enum ServerEvent {
    /// A new request: answer it with [`Transactions::respond`] using this key.
    Request { key: ServerKey, msg: Message, peer: Peer },
    /// An ACK for a 2xx (it has its own branch, so no INVITE transaction matches it, §17.2.3):
    /// for the dialog layer.
    AckFor2xx { msg: Message, peer: Peer },
    /// A CANCEL: already answered 200 (§9.2); `invite` names the INVITE transaction it cancels,
    /// when one matches.
    Cancel { invite: Option<ServerKey>, msg: Message, peer: Peer },
}

#[derive(Debug)]
pub enum ClientEvent {
    /// A response to a request sent with [`Transactions::send_request`]. For INVITE, a
    /// retransmitted 2xx is delivered again (`retransmission: true`) so the dialog layer can
    /// re-send its ACK (§13.2.2.4).
    Response { key: ClientKey, msg: Message, retransmission: bool },
    /// Timer B or F fired: no final response in 64*T1 (§17.1.1.2, §17.1.2.2).
    Timeout { key: ClientKey },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Proceeding,
    /// Final non-2xx sent (INVITE) or final sent (non-INVITE).
    Completed,
    /// ACK received for a non-2xx (INVITE only).
    Confirmed,
    /// 2xx sent; retransmitted until the ACK arrives (RFC 6026 §7.1, §13.3.1.4).
    Accepted,
}

struct ServerTx {
    invite: bool,
    peer: Peer,
    state: ServerState,
    last_response: Option<Bytes>,
    retransmit_every: Duration,
    /// Call-ID and CSeq number, to match the ACK of a 2xx.
    dialog_key: String,
    /// Over TCP/TLS: where the responses go once the request's connection has closed.
    reconnect: Option<Reconnect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Completed,
    Accepted,
}

struct ClientTx {
    invite: bool,
    peer: Peer,
    state: ClientState,
    request: Bytes,
    /// The ACK we sent for a non-2xx final, re-sent when the final is retransmitted.
    ack: Option<Bytes>,
    retransmit_every: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Retransmit a client request (Timer A / E).
    ClientRetransmit,
    /// Timer B / F: transaction timeout.
    ClientTimeout,
    /// Timer D / K / the Accepted wait (M): forget the client transaction.
    ClientForget,
    /// 64*T1 after a CANCEL (§9.1): forget the INVITE's transaction if no final came.
    ClientCancelled,
    /// Retransmit the last server response (Timer G, or the 2xx retransmission).
    ServerRetransmit,
    /// Timer H: no ACK for the non-2xx final, or 64*T1 of 2xx retransmissions.
    ServerGiveUp,
    /// Timer I / J / L: forget the server transaction.
    ServerForget,
}

/// Timers are never searched for and removed (that is O(n) per message, quadratic under load):
/// a timer that no longer applies stays in the set and does nothing when it fires, because every
/// handler first checks the transaction's current state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TimerEntry {
    at: Instant,
    kind: TimerKind,
    key: String,
}

#[derive(Default)]
pub struct Transactions {
    timers_cfg: TimersCfg,
    server: HashMap<ServerKey, ServerTx>,
    /// dialog key (Call-ID + CSeq number) → INVITE server transaction, for 2xx ACKs.
    accepted_by_dialog: HashMap<String, ServerKey>,
    client: HashMap<ClientKey, ClientTx>,
    timers: BTreeSet<TimerEntry>,
    transmits: VecDeque<Transmit>,
    /// Counters for logs and benchmarks.
    pub stats: TxStats,
}

#[derive(Default, Clone, Copy)]
struct TimersCfg(Option<Timers>);

#[derive(Debug, Default, Clone, Copy)]
pub struct TxStats {
    pub retransmissions_sent: u64,
    pub retransmissions_absorbed: u64,
    pub stray_responses: u64,
}

impl Transactions {
    pub fn new(timers: Timers) -> Self {
        Transactions { timers_cfg: TimersCfg(Some(timers)), ..Default::default() }
    }

    fn t(&self) -> Timers {
        self.timers_cfg.0.unwrap_or_default()
    }

    /// Bytes waiting to be sent.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|t| t.at)
    }

    pub fn active(&self) -> (usize, usize) {
        (self.server.len(), self.client.len())
    }

    /// Timers pending (retransmissions, timeouts, wait states).
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    fn timer(&mut self, at: Instant, kind: TimerKind, key: &str) {
        self.timers.insert(TimerEntry { at, kind, key: key.to_string() });
    }

    fn send(&mut self, peer: Peer, bytes: Bytes) {
        self.transmits.push_back(Transmit { peer, bytes, reconnect: None, initial_invite: false });
    }

    fn send_response(&mut self, peer: Peer, bytes: Bytes, reconnect: Option<Reconnect>) {
        self.transmits.push_back(Transmit { peer, bytes, reconnect, initial_invite: false });
    }

    /// Send a response statelessly (for requests that never get a transaction: a malformed
    /// request's 400 from the parser, or an ACK-less reply).
    pub fn send_stateless(&mut self, peer: Peer, msg: &Message) {
        let reconnect = if msg.is_request() { None } else { reply_address(msg, peer) };
        self.send_response(peer, Bytes::from(msg.to_bytes()), reconnect);
    }

    // ---------------------------------------------------------------- server side

    fn server_key(msg: &Message) -> Option<ServerKey> {
        let method = match msg.method() {
            "ACK" => "INVITE",
            m => m,
        };
        Self::server_key_as(msg, method)
    }

    /// The key `msg` would have if it were a request with `method` (a CANCEL names the INVITE
    /// it cancels this way, §9.2).
    fn server_key_as(msg: &Message, method: &str) -> Option<ServerKey> {
        let via = msg.top_via()?;
        let sent_by = format!("{}:{}", via.host.to_ascii_lowercase(), via.port.unwrap_or(5060));
        match via.branch() {
            // §17.2.3 matches on branch + sent-by + method alone. sosdesk also requires the same
            // Call-ID and CSeq number (a true retransmission, CANCEL and non-2xx ACK all have
            // them): a peer that reuses branch values (RFC 4475 §3.3.12/§3.3.13 do) must never
            // have a new emergency INVITE swallowed as a "retransmission" of an old request.
            Some(b) if b.starts_with("z9hG4bK") => {
                Some(format!("{b}|{sent_by}|{method}|{}|{}", msg.call_id()?, msg.cseq()?.0))
            }
            // RFC 2543 peers (no magic cookie, RFC 4475 §3.2.1): fall back to the request's
            // identity (§17.2.3 last paragraph, simplified: Call-ID, From tag, CSeq, top Via).
            _ => {
                let cseq = msg.cseq()?.0;
                Some(format!(
                    "2543|{}|{}|{}|{}|{}",
                    msg.call_id()?,
                    msg.from_tag().unwrap_or_default(),
                    cseq,
                    msg.header("Via").unwrap_or(""),
                    method
                ))
            }
        }
    }

    fn dialog_key(msg: &Message) -> String {
        format!("{}|{}", msg.call_id().unwrap_or(""), msg.cseq().map(|c| c.0).unwrap_or(0))
    }

    /// A request arrived. Retransmissions are absorbed (the last response is re-sent); new
    /// requests come back as events.
    pub fn on_request(&mut self, msg: Message, peer: Peer, _now: Instant) -> Option<ServerEvent> {
        let key = Self::server_key(&msg)?;
        let method = msg.method().to_string();
        if method == "ACK" {
            if let Some(tx) = self.server.get_mut(&key) {
                if tx.invite && tx.state == ServerState::Completed {
                    // §17.2.1: ACK for our non-2xx final. Timer I absorbs ACK retransmissions.
                    tx.state = ServerState::Confirmed;
                    let wait = if peer.transport.reliable() { Duration::ZERO } else { self.t().t4 };
                    self.timer(_now + wait, TimerKind::ServerForget, &key);
                    return None;
                }
                if tx.state == ServerState::Confirmed {
                    self.stats.retransmissions_absorbed += 1;
                    return None;
                }
            }
            // ACK for a 2xx: stop retransmitting that 2xx, then hand it to the dialog layer.
            let dkey = Self::dialog_key(&msg);
            if let Some(skey) = self.accepted_by_dialog.remove(&dkey) {
                if let Some(tx) = self.server.get_mut(&skey) {
                    tx.state = ServerState::Confirmed;
                }
                self.timer(_now, TimerKind::ServerForget, &skey);
            }
            return Some(ServerEvent::AckFor2xx { msg, peer });
        }
        if let Some(tx) = self.server.get(&key) {
            // A retransmission (§17.2.1, §17.2.2): re-send the most recent response, if any.
            self.stats.retransmissions_absorbed += 1;
            if let Some(resp) = tx.last_response.clone() {
                let (p, reconnect) = (tx.peer, tx.reconnect.clone());
                self.send_response(p, resp, reconnect);
            }
            return None;
        }
        if method == "CANCEL" {
            // §9.2: the CANCEL matches the INVITE transaction with the same branch (key with
            // method INVITE); it is answered 200 at once, by its own transaction.
            let invite_key = Self::server_key_as(&msg, "INVITE");
            let invite = invite_key.filter(|k| self.server.get(k).is_some_and(|t| t.state == ServerState::Proceeding));
            self.insert_server(key.clone(), &msg, peer, false);
            let status = if invite.is_some() { 200 } else { 481 };
            let reason = if status == 200 { "OK" } else { "Call/Transaction Does Not Exist" };
            let resp = msg.response(status, reason, Some(&super::ids::new_tag()));
            self.respond(&key, &resp, _now);
            invite.as_ref()?;
            return Some(ServerEvent::Cancel { invite, msg, peer });
        }
        let invite = method == "INVITE";
        self.insert_server(key.clone(), &msg, peer, invite);
        if invite {
            // §17.2.1: a 100 Trying at once quenches the caller's INVITE retransmissions.
            let trying = msg.response(100, "Trying", None);
            self.respond(&key, &trying, _now);
        }
        Some(ServerEvent::Request { key, msg, peer })
    }

    fn insert_server(&mut self, key: ServerKey, msg: &Message, peer: Peer, invite: bool) {
        let t1 = self.t().t1;
        self.server.insert(
            key,
            ServerTx {
                invite,
                peer,
                state: ServerState::Proceeding,
                last_response: None,
                retransmit_every: t1,
                dialog_key: Self::dialog_key(msg),
                reconnect: reply_address(msg, peer),
            },
        );
    }

    /// Whether the server transaction still waits for its final response.
    pub fn is_pending(&self, key: &str) -> bool {
        self.server.get(key).is_some_and(|t| t.state == ServerState::Proceeding)
    }

    /// Send a response in a server transaction.
    pub fn respond(&mut self, key: &str, resp: &Message, now: Instant) {
        let t = self.t();
        let Some(tx) = self.server.get_mut(key) else { return };
        let status = resp.status().unwrap_or(500);
        if tx.state != ServerState::Proceeding {
            // A final was already sent; the transaction user is confused — never send two.
            tracing::warn!(key, status, "response after final in server transaction dropped");
            return;
        }
        let bytes = Bytes::from(resp.to_bytes());
        tx.last_response = Some(bytes.clone());
        let (peer, reconnect) = (tx.peer, tx.reconnect.clone());
        let reliable = peer.transport.reliable();
        let invite = tx.invite;
        let dialog_key = tx.dialog_key.clone();
        if status >= 200 {
            if invite && status < 300 {
                // §13.3.1.4 / RFC 6026: retransmit the 2xx (T1 doubling to T2) until the ACK,
                // for 64*T1 — over TCP and TLS too (§13.3.1.4 is the UAS core's, whatever the
                // transport): a 200 written into a connection the caller had just closed is lost
                // with it, and the next one goes to the caller's Via (`reconnect`, §18.2.2).
                tx.state = ServerState::Accepted;
                self.accepted_by_dialog.insert(dialog_key, key.to_string());
                self.timer(now + t.t1, TimerKind::ServerRetransmit, key);
                self.timer(now + t.t1 * 64, TimerKind::ServerGiveUp, key);
            } else if invite {
                tx.state = ServerState::Completed;
                if !reliable {
                    self.timer(now + t.t1, TimerKind::ServerRetransmit, key);
                }
                self.timer(now + t.t1 * 64, TimerKind::ServerGiveUp, key);
            } else {
                tx.state = ServerState::Completed;
                // Timer J absorbs request retransmissions for 64*T1 on UDP.
                let wait = if reliable { Duration::ZERO } else { t.t1 * 64 };
                self.timer(now + wait, TimerKind::ServerForget, key);
            }
        }
        self.send_response(peer, bytes, reconnect);
    }

    // ---------------------------------------------------------------- client side

    /// Send a request in a new client transaction. The request must carry its top Via with a
    /// fresh branch. Returns the transaction key.
    pub fn send_request(&mut self, msg: &Message, peer: Peer, now: Instant) -> ClientKey {
        let t = self.t();
        let key = Self::client_key(msg);
        let bytes = Bytes::from(msg.to_bytes());
        let invite = msg.method() == "INVITE";
        if msg.method() == "CANCEL" {
            // §9.1: an INVITE cancelled that has no final response 64*T1 later is taken as
            // cancelled and its transaction destroyed. A far end that rang and then went away
            // (its connection closed) would otherwise leave it here for ever: past its first
            // response an INVITE transaction has no timer of its own (§17.1.1.2).
            let invite_key = Self::client_key_as(msg, "INVITE");
            if self.client.contains_key(&invite_key) {
                self.timer(now + t.t1 * 64, TimerKind::ClientCancelled, &invite_key);
            }
        }
        self.client.insert(
            key.clone(),
            ClientTx {
                invite,
                peer,
                state: ClientState::Calling,
                request: bytes.clone(),
                ack: None,
                retransmit_every: t.t1,
            },
        );
        if !peer.transport.reliable() {
            self.timer(now + t.t1, TimerKind::ClientRetransmit, &key);
        }
        self.timer(now + t.t1 * 64, TimerKind::ClientTimeout, &key);
        let initial_invite = invite && msg.to_tag().is_none();
        self.transmits.push_back(Transmit { peer, bytes, reconnect: None, initial_invite });
        key
    }

    /// Send an ACK for a 2xx (a request without a transaction, §17.1.1.3).
    pub fn send_ack(&mut self, ack: &Message, peer: Peer) {
        self.send(peer, Bytes::from(ack.to_bytes()));
    }

    fn client_key(msg: &Message) -> ClientKey {
        let method = match msg.method() {
            "ACK" => "INVITE",
            m => m,
        };
        Self::client_key_as(msg, method)
    }

    /// The key of the client transaction of `method` with `msg`'s branch (a CANCEL's INVITE).
    fn client_key_as(msg: &Message, method: &str) -> ClientKey {
        let branch = msg.top_via().and_then(|v| v.branch().map(str::to_string)).unwrap_or_default();
        format!("{branch}|{method}")
    }

    /// Stop retransmitting and forget a client transaction (the TU gave up on it).
    pub fn abandon(&mut self, key: &str) {
        self.client.remove(key);
    }

    /// A response arrived. `Err(msg)` returns a response that matches no transaction (a late
    /// answer from a route already given up, a broadcast 200 — RFC 4475 §3.3.10): the
    /// transaction user decides (a late 2xx to an abandoned INVITE must be ACKed and ended).
    pub fn on_response(&mut self, msg: Message, now: Instant) -> Result<Option<ClientEvent>, Message> {
        let t = self.t();
        let key = Self::client_key(&msg);
        let Some(status) = msg.status() else { return Ok(None) };
        let Some(tx) = self.client.get_mut(&key) else {
            self.stats.stray_responses += 1;
            return Err(msg);
        };
        let reliable = tx.peer.transport.reliable();
        Ok(match (tx.invite, tx.state, status) {
            (_, ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                tx.state = ClientState::Proceeding;
                if !tx.invite {
                    // §17.1.2.2: in Proceeding, Timer E fires every T2.
                    tx.retransmit_every = t.t2;
                } else {
                    // §17.1.1.2: a provisional stops INVITE retransmissions.
                }
                Some(ClientEvent::Response { key, msg, retransmission: false })
            }
            (true, ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                // RFC 6026 §7.2: Accepted — absorb nothing, pass 2xx retransmissions up for
                // 64*T1 so the ACK can be re-sent.
                tx.state = ClientState::Accepted;
                self.timer(now + t.t1 * 64, TimerKind::ClientForget, &key);
                Some(ClientEvent::Response { key, msg, retransmission: false })
            }
            (true, ClientState::Accepted, 200..=299) => Some(ClientEvent::Response { key, msg, retransmission: true }),
            (true, ClientState::Calling | ClientState::Proceeding, _) => {
                // §17.1.1.3: the transaction itself ACKs a non-2xx final.
                let ack = build_non2xx_ack(&tx.request, &msg);
                tx.state = ClientState::Completed;
                let peer = tx.peer;
                if let Some(a) = &ack {
                    tx.ack = Some(a.clone());
                    self.send(peer, a.clone());
                }
                let wait = if reliable { Duration::ZERO } else { Duration::from_secs(32) };
                self.timer(now + wait, TimerKind::ClientForget, &key);
                Some(ClientEvent::Response { key, msg, retransmission: false })
            }
            (true, ClientState::Completed, _) => {
                // A retransmitted final: ACK again, do not pass up.
                self.stats.retransmissions_absorbed += 1;
                if let Some(a) = tx.ack.clone() {
                    let p = tx.peer;
                    self.send(p, a);
                }
                None
            }
            (false, ClientState::Calling | ClientState::Proceeding, _) => {
                tx.state = ClientState::Completed;
                let wait = if reliable { Duration::ZERO } else { t.t4 };
                self.timer(now + wait, TimerKind::ClientForget, &key);
                Some(ClientEvent::Response { key, msg, retransmission: false })
            }
            _ => {
                self.stats.retransmissions_absorbed += 1;
                None
            }
        })
    }

    // ---------------------------------------------------------------- timers

    /// Fire every timer due at `now`. Returns timeouts for the transaction user.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ClientEvent> {
        let t = self.t();
        let mut events = Vec::new();
        while let Some(first) = self.timers.first() {
            if first.at > now {
                break;
            }
            let Some(entry) = self.timers.pop_first() else { break };
            // Retransmissions are scheduled from the deadline, not from `now`: a late wake-up
            // does not shift every later retransmission.
            let entry_at = entry.at;
            let key = entry.key;
            match entry.kind {
                TimerKind::ClientRetransmit => {
                    if let Some(tx) = self.client.get_mut(&key) {
                        // A provisional stops Timer A (§17.1.1.2); Timer E goes on (§17.1.2.2).
                        let retransmit =
                            tx.state == ClientState::Calling || (!tx.invite && tx.state == ClientState::Proceeding);
                        if retransmit {
                            let bytes = tx.request.clone();
                            let peer = tx.peer;
                            // Timer A doubles without bound (Timer B ends it); Timer E doubles
                            // up to T2, and is T2 once a provisional has arrived (§17.1.2.2).
                            let every = if tx.invite {
                                tx.retransmit_every * 2
                            } else if tx.state == ClientState::Proceeding {
                                t.t2
                            } else {
                                (tx.retransmit_every * 2).min(t.t2)
                            };
                            tx.retransmit_every = every;
                            self.stats.retransmissions_sent += 1;
                            self.send(peer, bytes);
                            self.timer(entry_at + every, TimerKind::ClientRetransmit, &key);
                        }
                    }
                }
                TimerKind::ClientTimeout => {
                    if let Some(tx) = self.client.get(&key) {
                        // Timer B runs in Calling only (§17.1.1.2): a ringing far end is waited
                        // for. Timer F runs in Trying and Proceeding (§17.1.2.2).
                        let live =
                            tx.state == ClientState::Calling || (!tx.invite && tx.state == ClientState::Proceeding);
                        if live {
                            self.client.remove(&key);
                            events.push(ClientEvent::Timeout { key });
                        }
                    }
                }
                TimerKind::ClientForget => {
                    self.client.remove(&key);
                }
                TimerKind::ClientCancelled => {
                    // A final that came meanwhile has its own wait (Timer D absorbs its
                    // retransmissions): left to it.
                    if self
                        .client
                        .get(&key)
                        .is_some_and(|tx| matches!(tx.state, ClientState::Calling | ClientState::Proceeding))
                    {
                        self.client.remove(&key);
                    }
                }
                TimerKind::ServerRetransmit => {
                    if let Some(tx) = self.server.get_mut(&key) {
                        if matches!(tx.state, ServerState::Completed | ServerState::Accepted) {
                            if let Some(bytes) = tx.last_response.clone() {
                                let (peer, reconnect) = (tx.peer, tx.reconnect.clone());
                                tx.retransmit_every = (tx.retransmit_every * 2).min(t.t2);
                                let every = tx.retransmit_every;
                                self.stats.retransmissions_sent += 1;
                                self.send_response(peer, bytes, reconnect);
                                self.timer(entry_at + every, TimerKind::ServerRetransmit, &key);
                            }
                        }
                    }
                }
                TimerKind::ServerGiveUp => {
                    if let Some(tx) = self.server.get(&key) {
                        if matches!(tx.state, ServerState::Completed | ServerState::Accepted) {
                            if tx.state == ServerState::Accepted {
                                // §13.3.1.4 says the session SHOULD then be ended with a BYE.
                                // sosdesk does not hang up an emergency call over a lost ACK:
                                // media may well be flowing. It is logged instead.
                                tracing::warn!(key, "no ACK for 2xx within 64*T1; call kept up");
                            }
                            let dk = tx.dialog_key.clone();
                            self.accepted_by_dialog.remove(&dk);
                            self.server.remove(&key);
                        }
                    }
                }
                TimerKind::ServerForget => {
                    if let Some(tx) = self.server.remove(&key) {
                        self.accepted_by_dialog.remove(&tx.dialog_key);
                    }
                }
            }
        }
        events
    }
}

/// RFC 3261 §18.2.2: over TCP or TLS a response goes back on the request's connection; once
/// that has closed, the server opens one to the `received` address (the IP the request came
/// from: taken from `peer`, never from a `received` the client may have written itself) on the
/// top Via's sent-by port (else the transport's default). A PBX whose connection dropped (an
/// idle timeout, a restart) thus still gets the 200 of its emergency call. UDP has no
/// connection: none. A sent-by that names a host (a Skype for Business Mediation Server's
/// FQDN) is the name the certificate must carry over TLS (RFC 5922 §7.2).
fn reply_address(msg: &Message, peer: Peer) -> Option<Reconnect> {
    if !peer.transport.reliable() {
        return None;
    }
    let via = msg.top_via()?;
    let port = via.port.unwrap_or(if peer.transport == Transport::Tls { 5061 } else { 5060 });
    let name = Reconnect::certificate_name(&via.host);
    Some(Reconnect { peer: Peer { transport: peer.transport, addr: SocketAddr::new(peer.addr.ip(), port) }, name })
}

/// §17.1.1.3: the ACK for a non-2xx final has the INVITE's Request-URI, Call-ID, From, top Via
/// (same branch), Route; the To of the response (with its tag); CSeq number with method ACK.
fn build_non2xx_ack(invite_bytes: &Bytes, resp: &Message) -> Option<Bytes> {
    let invite = super::parse::parse_datagram(invite_bytes).ok()?;
    let mut ack = Message::request("ACK", invite.request_uri()?);
    if let Some(v) = invite.headers_named("Via").next() {
        let first = super::message::split_comma_list(v).into_iter().next().unwrap_or_default();
        ack.push("Via", first);
    }
    for r in invite.headers_named("Route") {
        ack.push("Route", r);
    }
    ack.push("Max-Forwards", "70");
    ack.push("From", invite.header("From")?);
    ack.push("To", resp.header("To")?);
    ack.push("Call-ID", invite.call_id()?);
    ack.push("CSeq", format!("{} ACK", invite.cseq()?.0));
    Some(Bytes::from(ack.to_bytes()))
}

/// Top Via of a message we received, for logs.
pub fn via_summary(msg: &Message) -> String {
    msg.top_via().map(|v: Via| format!("{} {}", v.transport, v.host)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_datagram;

    fn peer() -> Peer {
        Peer { transport: Transport::Udp, addr: "127.0.0.1:5070".parse().unwrap() }
    }

    fn invite() -> Message {
        parse_datagram(
            b"INVITE sip:911@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\r\n\
From: <sip:sosdesk@127.0.0.1>;tag=f1\r\nTo: <sip:911@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n",
        )
        .unwrap()
    }

    fn drain(tx: &mut Transactions) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(t) = tx.poll_transmit() {
            out.push(String::from_utf8_lossy(&t.bytes).lines().next().unwrap_or("").to_string());
        }
        out
    }

    #[test]
    fn invite_client_retransmits_with_doubling_until_provisional() {
        let mut tx = Transactions::new(Timers::default());
        let t0 = Instant::now();
        tx.send_request(&invite(), peer(), t0);
        assert_eq!(drain(&mut tx).len(), 1);
        // Timer A: 0.5 s, then 1 s later, then 2 s later.
        for (at, n) in [(500, 1), (1499, 0), (1500, 1), (3500, 1)] {
            tx.handle_timeout(t0 + Duration::from_millis(at));
            assert_eq!(drain(&mut tx).len(), n, "at {at} ms");
        }
        let ringing = invite().response(180, "Ringing", Some("t9"));
        assert!(matches!(tx.on_response(ringing, t0), Ok(Some(ClientEvent::Response { .. }))));
        tx.handle_timeout(t0 + Duration::from_millis(7500));
        assert!(drain(&mut tx).is_empty(), "no retransmission after a provisional");
        // Timer B does not run once the far end rings (a PSAP may take its time).
        assert!(tx.handle_timeout(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_cancelled_invite_with_no_final_answer_is_forgotten_64_t1_later() {
        let mut tx = Transactions::new(Timers::default());
        let t0 = Instant::now();
        let tcp = Peer { transport: Transport::Tcp, ..peer() };
        let key = tx.send_request(&invite(), tcp, t0);
        let ringing = invite().response(180, "Ringing", Some("t9"));
        assert!(matches!(tx.on_response(ringing, t0), Ok(Some(_))));
        let cancel_at = t0 + Duration::from_secs(5);
        let mut cancel = Message::request("CANCEL", "sip:911@127.0.0.1");
        for h in ["Via", "From", "To", "Call-ID"] {
            cancel.push(h, invite().header(h).unwrap());
        }
        cancel.push("CSeq", "1 CANCEL");
        tx.send_request(&cancel, tcp, cancel_at);
        drain(&mut tx);
        // The CANCEL's own transaction times out (Timer F) and the INVITE's is kept until 64*T1
        // after the CANCEL, in case its 487 is on the way.
        tx.handle_timeout(cancel_at + Duration::from_millis(31_999));
        assert!(tx.client.contains_key(&key), "the INVITE waits for its 487 until 64*T1");
        tx.handle_timeout(cancel_at + Duration::from_secs(32));
        assert_eq!(tx.active(), (0, 0), "no final answer: both transactions are gone");
        // A 487 that comes after all is a stray, passed up for the transaction user to ignore.
        let late = invite().response(487, "Request Terminated", Some("t9"));
        assert!(tx.on_response(late, cancel_at + Duration::from_secs(33)).is_err());
    }

    #[test]
    fn a_response_over_a_stream_knows_where_to_go_once_the_connection_has_closed() {
        let via = |v: &str| {
            let mut m = Message::request("INVITE", "sip:911@127.0.0.1");
            m.push("Via", v);
            m.response(200, "OK", None)
        };
        let from = |t: Transport, a: &str| Peer { transport: t, addr: a.parse().unwrap() };
        let at = |t: Transport, a: &str, name: Option<&str>| {
            Some(Reconnect { peer: from(t, a), name: name.map(String::from) })
        };
        let pbx = from(Transport::Tcp, "192.0.2.7:40123");
        // §18.2.2: the source address (what `received` says), on the sent-by port.
        let got = reply_address(&via("SIP/2.0/TCP 10.0.0.7:5070;branch=z9hG4bK1"), pbx);
        assert_eq!(got, at(Transport::Tcp, "192.0.2.7:5070", None));
        // A `received` the client wrote itself is not believed.
        let forged = via("SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK1;received=203.0.113.9");
        assert_eq!(reply_address(&forged, pbx), at(Transport::Tcp, "192.0.2.7:5070", None));
        // No port: the transport's default; a name as sent-by is fine (the source is known),
        // and is the name a TLS certificate must carry (RFC 5922 §7.2).
        assert_eq!(
            reply_address(&via("SIP/2.0/TCP pbx.example;branch=z9hG4bK1"), pbx),
            at(Transport::Tcp, "192.0.2.7:5060", Some("pbx.example"))
        );
        // A single label is no name a certificate is checked against (the address is).
        assert_eq!(
            reply_address(&via("SIP/2.0/TCP pbx01:5070;branch=z9hG4bK1"), pbx),
            at(Transport::Tcp, "192.0.2.7:5070", None)
        );
        let tls = from(Transport::Tls, "[2001:db8::7]:40123");
        assert_eq!(
            reply_address(&via("SIP/2.0/TLS [2001:db8::7];branch=z9hG4bK1"), tls),
            at(Transport::Tls, "[2001:db8::7]:5061", None)
        );
        assert_eq!(
            reply_address(&via("SIP/2.0/TLS medsrv.contoso.example:5067;branch=z9hG4bK1"), tls),
            at(Transport::Tls, "[2001:db8::7]:5067", Some("medsrv.contoso.example"))
        );
        // UDP has no connection to lose.
        assert_eq!(
            reply_address(&via("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1"), from(Transport::Udp, "192.0.2.7:5070")),
            None
        );
    }

    #[test]
    fn timer_b_fires_when_nothing_at_all_comes_back() {
        let mut tx = Transactions::new(Timers::default());
        let t0 = Instant::now();
        tx.send_request(&invite(), peer(), t0);
        assert!(tx.handle_timeout(t0 + Duration::from_millis(31_999)).is_empty());
        let ev = tx.handle_timeout(t0 + Duration::from_secs(32));
        assert!(matches!(ev.as_slice(), [ClientEvent::Timeout { .. }]));
        // Seven sends in all over UDP: the original and retransmissions at 0.5, 1.5, 3.5, 7.5,
        // 15.5 and 31.5 s (§17.1.1.2, Timer A doubling).
        assert_eq!(drain(&mut tx).len(), 7);
    }

    #[test]
    fn non2xx_final_is_acked_by_the_transaction_and_retransmissions_absorbed() {
        let mut tx = Transactions::new(Timers::default());
        let t0 = Instant::now();
        tx.send_request(&invite(), peer(), t0);
        drain(&mut tx);
        let busy = invite().response(503, "Service Unavailable", Some("t9"));
        assert!(matches!(tx.on_response(busy.clone(), t0), Ok(Some(_))));
        assert_eq!(drain(&mut tx), vec!["ACK sip:911@127.0.0.1 SIP/2.0"]);
        assert!(matches!(tx.on_response(busy, t0), Ok(None)), "retransmitted final not passed up");
        assert_eq!(drain(&mut tx), vec!["ACK sip:911@127.0.0.1 SIP/2.0"]);
    }

    #[test]
    fn server_invite_sends_trying_absorbs_retransmission_and_resends_2xx_until_ack() {
        // Over TCP too: §13.3.1.4 is the UAS core's, whatever the transport, and a 200 written
        // into a connection the caller had just closed is not the last word (its repeats go
        // to the caller's Via, `reconnect`).
        for (transport, reconnect) in [
            (Transport::Udp, None),
            (
                Transport::Tcp,
                Some(Reconnect {
                    peer: Peer { transport: Transport::Tcp, addr: "127.0.0.1:5060".parse().unwrap() },
                    name: None,
                }),
            ),
        ] {
            let mut tx = Transactions::new(Timers::default());
            let t0 = Instant::now();
            let from = Peer { transport, ..peer() };
            let inv = invite();
            let Some(ServerEvent::Request { key, .. }) = tx.on_request(inv.clone(), from, t0) else { panic!() };
            assert_eq!(drain(&mut tx), vec!["SIP/2.0 100 Trying"]);
            assert!(tx.on_request(inv.clone(), from, t0).is_none());
            assert_eq!(drain(&mut tx), vec!["SIP/2.0 100 Trying"]);
            tx.respond(&key, &inv.response(200, "OK", Some("tt")), t0);
            let ok = tx.poll_transmit().expect("the 200");
            assert_eq!((ok.peer, ok.reconnect), (from, reconnect), "{transport:?}");
            tx.handle_timeout(t0 + Duration::from_millis(500));
            assert_eq!(drain(&mut tx), vec!["SIP/2.0 200 OK"], "{transport:?}");
            let ack = parse_datagram(
                b"ACK sip:911@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother\r\n\
From: <sip:sosdesk@127.0.0.1>;tag=f1\r\nTo: <sip:911@127.0.0.1>;tag=tt\r\nCall-ID: c1\r\nCSeq: 1 ACK\r\n\r\n",
            )
            .unwrap();
            assert!(matches!(tx.on_request(ack, from, t0), Some(ServerEvent::AckFor2xx { .. })));
            tx.handle_timeout(t0 + Duration::from_secs(5));
            assert!(drain(&mut tx).is_empty(), "no 2xx retransmission after the ACK");
            assert_eq!(tx.active(), (0, 0));
        }
    }
}
