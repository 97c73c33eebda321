//! A remote desk's SIP side: it REGISTERs its desk account with the core (RFC 3261 §10.2, digest
//! per §22) and receives the notification MESSAGEs (RFC 3428) that the core sends to the
//! registered contacts of a policy's notification group. The MESSAGE's CallEvent part goes to
//! the board like an event from the API's stream; the two paths meet at the board, which keeps
//! each (call, seq) once.
//!
//! Over UDP, one socket serves both: the registration's transactions (the core's transaction
//! layer, driven by [`sosdesk::sip::client::Client`]: Timer E retransmissions, Timer F) and the
//! requests from the core. A TCP listener on the same port takes the MESSAGEs too large for UDP
//! (over 1300 bytes, RFC 3261 §18.1.1: the core sends those over TCP to the contact's address).
//! A MESSAGE from any other address than the core's is refused (403; a TCP connection from
//! elsewhere is closed): a machine on the LAN must not be able to put a false alert on the desk.
//!
//! Over TLS, one connection to the core's TLS listener serves everything: the REGISTER, and the
//! MESSAGEs, which the core sends back on the registration's connection (RFC 3261 §18.2.2, as
//! RFC 5626 flows). Nobody else can put anything on it. When it breaks (keepalive unanswered,
//! the core restarted, the network gone) the agent connects again and registers at once.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sosdesk::events::CallEvent;
use sosdesk::notify::CALL_EVENT_CONTENT_TYPE;
use sosdesk::sip::body::split_multipart;
use sosdesk::sip::client::{Client, ClientError, Event};
use sosdesk::sip::digest;
use sosdesk::sip::ids::{new_call_id, new_tag};
use sosdesk::sip::parse::{StreamFramer, StreamItem};
use sosdesk::sip::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::sipua::{via, CoreSip, Credentials};

/// After a failed registration, the next try.
const RETRY: Duration = Duration::from_secs(10);
/// After the core refused the credentials: an admin must fix them first, and every try counts
/// towards the core's block of this machine (shared with the API, and other desks behind it).
const REFUSED_RETRY: Duration = Duration::from_secs(60);
/// After a TLS connection to the core broke, the next one is opened after this.
const RECONNECT: Duration = Duration::from_secs(1);
/// Unregistering when the desk stops may take this long at most.
const UNREGISTER_WITHIN: Duration = Duration::from_secs(2);
/// A TCP connection from the core with nothing on it for this long is closed (the core opens
/// a new one for its next large MESSAGE).
const TCP_IDLE: Duration = Duration::from_secs(300);
/// Requests and connections from other addresses than the core's are refused, and logged at
/// most this often.
const FOREIGN_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the agent tells the desk.
#[derive(Debug, Clone, PartialEq)]
pub enum SipReport {
    /// Registered: alerts for this account reach `contact` until the binding expires (refreshed
    /// at half its life).
    Registered { contact: String, expires: u32 },
    /// Not registered, and why (retried after [`RETRY`], or [`REFUSED_RETRY`] when the core
    /// refused the credentials).
    Failed(String),
    /// A notification MESSAGE from the core, with its CallEvent.
    Alert(Box<CallEvent>),
}

pub type Reporter = Arc<dyn Fn(SipReport) + Send + Sync>;

pub struct Agent {
    /// The UDP socket or the TLS connection: the registration's transactions and the core's
    /// requests. None while a TLS connection is to be (re)opened.
    client: Option<Client>,
    /// UDP only: on the UDP socket's address and port; none if that TCP port was taken (then the
    /// core's large MESSAGEs arrive over UDP after all: it falls back when TCP is refused).
    tcp: Option<TcpListener>,
    /// The contact's address: the UDP socket's, or the TLS connection's local end.
    local: SocketAddr,
    sip: CoreSip,
    core: SocketAddr,
    credentials: Credentials,
    /// Registration expiry asked for, in seconds.
    expires: u32,
    call_id: String,
    from_tag: String,
    cseq: u32,
    report: Reporter,
    /// When a connection from elsewhere was last logged.
    foreign_logged: Option<Instant>,
}

impl Agent {
    /// Over UDP: opens the agent's socket on the address this machine reaches the core from
    /// (port `port`, 0 for any). Over TLS: the connection is opened by the first registration
    /// (and again after any loss); `port` is not used.
    pub async fn bind(
        sip: CoreSip,
        port: u16,
        credentials: Credentials,
        expires: u32,
        report: Reporter,
    ) -> Result<Agent, String> {
        let core = sip.addr();
        let (client, tcp, local) = match &sip {
            CoreSip::Udp(_) => {
                let client = sip.open(port).await?;
                let local = client.local_addr();
                let tcp = match TcpListener::bind(local).await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(%local, error = %e, "no SIP over TCP on this port: the core's large alerts come over UDP");
                        None
                    }
                };
                (Some(client), tcp, local)
            }
            CoreSip::Tls { .. } => (None, None, SocketAddr::new(core.ip(), 0)),
        };
        let ip = local.ip();
        Ok(Agent {
            client,
            tcp,
            local,
            sip,
            core,
            credentials,
            expires,
            call_id: new_call_id(&ip.to_string()),
            from_tag: new_tag(),
            cseq: 0,
            report,
            foreign_logged: None,
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The client, opening a TLS connection first where there is none.
    async fn connected(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            let client = self.sip.open(0).await?;
            self.local = client.local_addr();
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| "no SIP connection".to_string())
    }

    /// Registers, keeps the registration fresh (and renews it at once when `renew` is notified)
    /// and answers the core's requests until `stop` turns true; then removes the binding (best
    /// effort, briefly).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, renew: Arc<tokio::sync::Notify>) {
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = self.register(self.expires) => match r {
                    Ok(granted) => {
                        (self.report)(SipReport::Registered { contact: self.contact_uri(), expires: granted });
                        // Refreshed at half its life (never more often than every 5 s).
                        Instant::now() + Duration::from_secs((granted / 2).max(5) as u64)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SIP registration with the core failed");
                        (self.report)(SipReport::Failed(e.to_string()));
                        Instant::now() + if e.refused { REFUSED_RETRY } else { RETRY }
                    }
                },
            };
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => {
                        let _ = tokio::time::timeout(UNREGISTER_WITHIN, self.register(0)).await;
                        return;
                    }
                    r = next_event(self.client.as_mut()) => match r {
                        Ok(Event::Request { msg, from }) => self.on_request(&msg, from).await,
                        Ok(_) => {}
                        Err(e) if matches!(self.sip, CoreSip::Tls { .. }) => {
                            // The connection is gone, and with it the core's way to this desk.
                            tracing::warn!(error = %e, "SIP over TLS to the core lost; connecting again");
                            self.client = None;
                            (self.report)(SipReport::Failed(format!("{e}; connecting again")));
                            tokio::select! {
                                biased;
                                _ = stop.changed() => return,
                                _ = tokio::time::sleep(RECONNECT) => break,
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "SIP socket error"),
                    },
                    Some((stream, from)) = accept(self.tcp.as_ref()) => {
                        if from.ip() == self.core.ip() {
                            tokio::spawn(serve_tcp(stream, from, self.core, self.report.clone(), stop.clone()));
                        } else {
                            log_foreign(&mut self.foreign_logged, from, "closed a SIP connection that did not come from the core");
                        }
                    },
                    _ = tokio::time::sleep_until(next.into()) => break,
                    // The API connection came back: the core may have restarted and forgotten
                    // the binding, so register again now rather than at the next refresh.
                    _ = renew.notified() => break,
                }
            }
        }
        let _ = tokio::time::timeout(UNREGISTER_WITHIN, self.register(0)).await;
    }

    fn contact_uri(&self) -> String {
        format!("sip:{}@{}{}", self.credentials.username, self.local, self.sip.uri_params())
    }

    fn core_host(&self) -> String {
        match self.core.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    }

    fn register_request(&mut self, expires: u32, authorization: Option<&(&'static str, String)>) -> Message {
        self.cseq += 1;
        let aor = format!("sip:{}@{}", self.credentials.username, self.core_host());
        let mut m = Message::request("REGISTER", &format!("sip:{}", self.core));
        m.push("Via", via(self.sip.transport(), self.local));
        m.push("Max-Forwards", "70");
        m.push("From", format!("<{aor}>;tag={}", self.from_tag));
        m.push("To", format!("<{aor}>"));
        m.push("Call-ID", self.call_id.clone());
        m.push("CSeq", format!("{} REGISTER", self.cseq));
        m.push("Contact", format!("<{}>", self.contact_uri()));
        m.push("Expires", expires.to_string());
        m.push("User-Agent", "sosdesk-desk");
        if let Some((name, value)) = authorization {
            m.push(name, value.clone());
        }
        m
    }

    /// One registration (or, with 0, its removal): REGISTER, a digest answer to the challenge,
    /// and the expiry the core granted. 423 Interval Too Brief is answered once with the core's
    /// Min-Expires (§10.2.8).
    async fn register(&mut self, mut expires: u32) -> Result<u32, RegisterFailure> {
        self.connected().await?;
        let mut authorization: Option<(&'static str, String)> = None;
        // At most: challenge, answer, 423, challenge again, answer.
        for _ in 0..5 {
            let req = self.register_request(expires, authorization.as_ref());
            let resp = self.transaction(&req).await?;
            let status = resp.status().unwrap_or(0);
            match status {
                200..=299 => return Ok(self.granted(&resp).unwrap_or(expires)),
                401 | 407 if authorization.is_none() => {
                    let (challenge, header) = if status == 401 {
                        (resp.header("WWW-Authenticate"), "Authorization")
                    } else {
                        (resp.header("Proxy-Authenticate"), "Proxy-Authorization")
                    };
                    let uri = req.request_uri().unwrap_or_default().to_string();
                    let c = &self.credentials;
                    let answer = challenge
                        .and_then(|ch| digest::answer(ch, "REGISTER", &uri, &c.username, &c.password))
                        .ok_or("the core's digest challenge could not be read")?;
                    authorization = Some((header, answer));
                }
                401 | 403 | 407 => {
                    return Err(RegisterFailure {
                        reason: format!(
                            "the core refused account {:?} ({status}): check the desk's username and password",
                            self.credentials.username
                        ),
                        refused: true,
                    })
                }
                423 => {
                    let min = resp.header("Min-Expires").and_then(|v| v.trim().parse().ok());
                    // The core accepts an answer once: the longer REGISTER is answered afresh.
                    authorization = None;
                    match min {
                        Some(m) if m > expires => expires = m,
                        _ => return Err("the core asks for a longer registration (423) without saying how long".into()),
                    }
                }
                _ => return Err(format!("the core answered the registration with {status} {}", reason(&resp)).into()),
            }
        }
        Err("the registration did not complete after five tries".into())
    }

    /// The expiry the core granted our contact (§10.2.4: the Contact's `expires`, else Expires).
    fn granted(&self, resp: &Message) -> Option<u32> {
        let ours = self.local.to_string();
        let from_contact = resp.header_values("Contact").iter().find(|c| c.contains(&ours)).and_then(|c| {
            c.split(';').find_map(|p| p.trim().strip_prefix("expires=").and_then(|v| v.trim().parse().ok()))
        });
        from_contact.or_else(|| resp.header("Expires").and_then(|v| v.trim().parse().ok()))
    }

    /// A non-INVITE client transaction (§17.1.2) until its final response: retransmitted per
    /// Timer E and abandoned after Timer F by the transaction layer. The core's requests
    /// meanwhile are answered.
    async fn transaction(&mut self, req: &Message) -> Result<Message, String> {
        let core = self.core;
        let Some(client) = self.client.as_mut() else { return Err("no SIP connection to the core".into()) };
        let key = client.send_request(req, core).await.map_err(|e| format!("cannot send to the core: {e}"))?;
        let timeout = client.transaction_timeout();
        let (report, foreign_logged) = (self.report.clone(), &mut self.foreign_logged);
        let answered = client
            .final_response(&key, |ev| match ev {
                Event::Request { msg, from } => {
                    if from.ip() != core.ip() {
                        log_foreign(foreign_logged, from, "refused a SIP request that did not come from the core");
                    }
                    ControlFlow::Continue(answer_request(core, &report, &msg, from).map(|r| (r, from)))
                }
                _ => ControlFlow::Continue(None),
            })
            .await;
        match answered {
            Ok(m) => Ok(m),
            Err(ClientError::Timeout) => {
                Err(format!("no answer from the core's SIP at {core} within {} s", timeout.as_secs()))
            }
            Err(e) => {
                if matches!(self.sip, CoreSip::Tls { .. }) {
                    // Connect again at the next try.
                    self.client = None;
                }
                Err(format!("SIP error while registering: {e}"))
            }
        }
    }

    async fn on_request(&mut self, m: &Message, from: SocketAddr) {
        if from.ip() != self.core.ip() {
            log_foreign(&mut self.foreign_logged, from, "refused a SIP request that did not come from the core");
        }
        if let (Some(r), Some(client)) = (answer_request(self.core, &self.report, m, from), self.client.as_mut()) {
            let _ = client.send_stateless(&r, from).await;
        }
    }
}

/// A request or connection from elsewhere than the core, logged at most every
/// [`FOREIGN_LOG_EVERY`]: anyone on the LAN can send them.
fn log_foreign(logged: &mut Option<Instant>, from: SocketAddr, what: &str) {
    if logged.is_none_or(|t| t.elapsed() >= FOREIGN_LOG_EVERY) {
        *logged = Some(Instant::now());
        tracing::warn!(%from, "{what}");
    }
}

/// The next event of `client`; never, without one.
async fn next_event(client: Option<&mut Client>) -> std::io::Result<Event> {
    match client {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> Option<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await.ok(),
        None => std::future::pending().await,
    }
}

/// One TCP connection from the core: requests framed by Content-Length (RFC 3261 §18.3), each
/// answered on it. Closed when the core closes it, after [`TCP_IDLE`], on a framing error, or
/// when the agent stops.
async fn serve_tcp(
    mut stream: TcpStream,
    from: SocketAddr,
    core: SocketAddr,
    report: Reporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = StreamFramer::default();
    loop {
        let read = tokio::select! {
            _ = stop.changed() => return,
            r = tokio::time::timeout(TCP_IDLE, stream.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
        loop {
            let reply = match framer.next(&mut buf) {
                StreamItem::Message(m) if m.is_request() => answer_request(core, &report, &m, from),
                StreamItem::Message(_) => None,
                StreamItem::Invalid(rej) => rej.reply.map(|r| *r),
                StreamItem::Ping => {
                    // RFC 5626 §3.5.1: a double-CRLF keep-alive is answered with a single CRLF.
                    let _ = stream.write_all(b"\r\n").await;
                    None
                }
                StreamItem::Fatal(rej) => {
                    tracing::warn!(%from, reason = %rej.reason, "closing the core's SIP connection after a framing error");
                    if let Some(r) = rej.reply {
                        let _ = stream.write_all(&r.to_bytes()).await;
                    }
                    return;
                }
                StreamItem::Incomplete => break,
            };
            if let Some(r) = reply {
                if stream.write_all(&r.to_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The answer to a request from the network: the core's MESSAGE gets 200 once its CallEvent is
/// read (which then goes to the desk), 400 when it cannot be read (so the core records the
/// failure and retries); OPTIONS 200; anything else 405. MESSAGEs from elsewhere get 403. None
/// for an ACK.
fn answer_request(core: SocketAddr, report: &Reporter, m: &Message, from: SocketAddr) -> Option<Message> {
    let mut alert = None;
    let (status, reason, warning) = match m.method() {
        "ACK" => return None,
        // Logged by the caller (rate limited).
        "MESSAGE" if from.ip() != core.ip() => (403, "Forbidden", None),
        "MESSAGE" => match call_event_of(m) {
            Ok(ev) => {
                alert = Some(ev);
                (200, "OK", None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "a MESSAGE from the core that this desk cannot read");
                (400, "Bad Request", Some(e))
            }
        },
        "OPTIONS" => (200, "OK", None),
        _ => (405, "Method Not Allowed", None),
    };
    let mut r = m.response(status, reason, Some(&new_tag()));
    if status == 405 {
        r.push("Allow", "MESSAGE, OPTIONS");
    }
    if let Some(w) = warning {
        // RFC 3261 §20.43; the text without quotes or control characters.
        let w: String = w.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).take(200).collect();
        r.push("Warning", format!("399 sosdesk-desk \"{w}\""));
    }
    // The board first: the 200 then also says the desk has taken the alert in.
    if let Some(ev) = alert {
        report(SipReport::Alert(Box::new(ev)));
    }
    Some(r)
}

/// Why a registration failed; `refused`: the core refused the credentials.
struct RegisterFailure {
    reason: String,
    refused: bool,
}

impl From<String> for RegisterFailure {
    fn from(reason: String) -> RegisterFailure {
        RegisterFailure { reason, refused: false }
    }
}

impl From<&str> for RegisterFailure {
    fn from(reason: &str) -> RegisterFailure {
        reason.to_string().into()
    }
}

impl std::fmt::Display for RegisterFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The CallEvent in a notification MESSAGE: its `application/vnd.sosdesk.call-event+json` part
/// (the body itself, or a part of multipart/mixed).
pub fn call_event_of(m: &Message) -> Result<CallEvent, String> {
    // The whole header: a multipart body's boundary is one of its parameters.
    let ct = m.header("Content-Type").unwrap_or_default().trim().to_string();
    let json: Bytes = if ct.to_ascii_lowercase().starts_with(CALL_EVENT_CONTENT_TYPE) {
        m.body.clone()
    } else if ct.to_ascii_lowercase().starts_with("multipart/") {
        split_multipart(&ct, &m.body)?
            .into_iter()
            .find(|p| p.content_type.to_ascii_lowercase().starts_with(CALL_EVENT_CONTENT_TYPE))
            .map(|p| p.body)
            .ok_or("no CallEvent part in the multipart body")?
    } else {
        return Err(format!("content type {ct:?} carries no CallEvent"));
    };
    serde_json::from_slice(&json).map_err(|e| format!("the CallEvent part is not valid: {e}"))
}

fn reason(m: &Message) -> String {
    match &m.start {
        sosdesk::sip::message::StartLine::Response { reason, .. } => reason.clone(),
        _ => String::new(),
    }
}
