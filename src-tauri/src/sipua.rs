//! The desk's SIP user agent: one dialog from the desk to a core over UDP or TLS, as a UAC. Used by the
//! test call and by the desk's leg in a call's conference (the same SIP path a desk on another
//! machine or a desk phone takes; the core treats them alike).
//!
//! Minimal RFC 3261 on purpose: INVITE as a client transaction, digest answers to 401/407
//! (§22.2, a new CSeq per attempt), ACK for a 2xx (§13.2.2.4, a new transaction to the Contact),
//! re-INVITE and BYE in the dialog, and 200 to the core's BYE. The transactions (Timer A/B/E/F
//! retransmissions and timeouts, the ACK of a failure, §17.1.1.3) are the core's, driven by
//! [`sosdesk::sip::client::Client`]; the dialog state is [`sosdesk::sip::dialog::Dialog`].

use std::net::SocketAddr;
use std::ops::ControlFlow;

use std::time::Duration;

use bytes::Bytes;
use sosdesk::sip::client::{Client, ClientError, Event, Outgoing};
use sosdesk::sip::dialog::Dialog;
use sosdesk::sip::digest;
use sosdesk::sip::flow::Flow;
use sosdesk::sip::ids::{new_branch, new_call_id, new_tag};
use sosdesk::sip::transaction::{Peer, Timers, Transport};
use sosdesk::sip::Message;
use sosdesk::transport::tls::TlsClient;
use tokio::net::UdpSocket;

/// How often a TLS connection to the core is pinged when idle (RFC 5626 §4.4.1): a lost
/// connection is noticed within this and [`sosdesk::sip::flow::PONG_WAIT`], and the desk
/// registers again over a new one.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// How the desk reaches the core's SIP: over UDP (the embedded core; a core elsewhere without
/// a TLS listener), or over TLS to its TLS listener (RFC 3261 §26.2.1), the core's certificate
/// checked for the name the desk knows it by.
#[derive(Clone)]
pub enum CoreSip {
    Udp(SocketAddr),
    Tls { addr: SocketAddr, client: TlsClient },
}

impl From<SocketAddr> for CoreSip {
    fn from(addr: SocketAddr) -> CoreSip {
        CoreSip::Udp(addr)
    }
}

impl std::fmt::Debug for CoreSip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.transport().as_str(), self.addr())
    }
}

impl CoreSip {
    pub fn addr(&self) -> SocketAddr {
        match self {
            CoreSip::Udp(a) | CoreSip::Tls { addr: a, .. } => *a,
        }
    }

    pub fn transport(&self) -> Transport {
        match self {
            CoreSip::Udp(_) => Transport::Udp,
            CoreSip::Tls { .. } => Transport::Tls,
        }
    }

    /// What a Contact URI of this desk adds so that the core answers over the same transport
    /// (RFC 3261 §19.1.1); over TLS the core sends on this connection (§18.2.2).
    pub fn uri_params(&self) -> &'static str {
        match self {
            CoreSip::Udp(_) => "",
            CoreSip::Tls { .. } => ";transport=tls",
        }
    }

    /// Client transactions towards the core: on a new UDP socket (port `udp_port` of the
    /// address this machine reaches the core from; 0: any), or on a new TLS connection.
    pub async fn open(&self, udp_port: u16) -> Result<Client, String> {
        match self {
            CoreSip::Udp(core) => {
                let ip =
                    local_ip_towards(*core).await.map_err(|e| format!("no route to the core's SIP at {core}: {e}"))?;
                let sock = UdpSocket::bind(SocketAddr::new(ip, udp_port))
                    .await
                    .map_err(|e| format!("cannot open a SIP socket on {ip}:{udp_port}: {e}"))?;
                Client::new(sock, Timers::default()).map_err(|e| e.to_string())
            }
            CoreSip::Tls { addr, client } => {
                let stream = client.connect(*addr).await.map_err(|e| format!("SIP over TLS: {e}"))?;
                let local = stream.get_ref().0.local_addr().map_err(|e| e.to_string())?;
                tracing::info!(core = %addr, %local, "SIP over TLS to the core");
                let flow = Flow::new(stream, local, *addr, Some(KEEPALIVE));
                Ok(Client::over_flow(flow, Transport::Tls, Timers::default()))
            }
        }
    }
}

/// A Via header value for a request from `local` over `transport`, with a new branch and
/// `rport` (RFC 3581: the core answers where the request came from).
pub fn via(transport: Transport, local: SocketAddr) -> String {
    format!("SIP/2.0/{} {local};branch={};rport", transport.as_str(), new_branch())
}

/// Credentials of a `[[desk]]` account. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// How an INVITE transaction ended, when it did not end in a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    /// The reason phrase and the core's Warning text, for the officer.
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{} {}", self.status, self.reason)
        }
    }
}

impl Refused {
    fn local(reason: impl Into<String>) -> Refused {
        Refused { status: 0, reason: reason.into() }
    }
}

/// One call from the desk to the core: the dialog state and the socket or connection its
/// transactions run on.
pub struct CallDialog {
    client: Client,
    pub local: SocketAddr,
    core: SocketAddr,
    dialog: Dialog,
    contact: String,
    credentials: Option<Credentials>,
    /// The ACK for the last 2xx to our INVITE, sent again when that 2xx is (§13.2.2.4).
    last_ack: Option<Message>,
}

impl CallDialog {
    /// A new dialog from `user` ("Display Name", sip user part) to `ruri` at `core`, on a
    /// socket or connection of its own.
    pub async fn new(
        core: &CoreSip,
        display: &str,
        user: &str,
        ruri: String,
        credentials: Option<Credentials>,
    ) -> Result<CallDialog, String> {
        let client = core.open(0).await?;
        let local = client.local_addr();
        let params = core.uri_params();
        let core = core.addr();
        let host = local.ip().to_string();
        // A display name goes in quotes (RFC 3261 §25.1 quoted-string): no quote or backslash.
        let display: String = display.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
        let mut dialog = Dialog::outbound(
            new_call_id(&host),
            format!("\"{display}\" <sip:{user}@{local}{params}>;tag={}", new_tag()),
            format!("<{ruri}>"),
            ruri,
            Peer { transport: client.transport(), addr: core },
        );
        // The first INVITE takes CSeq 1.
        dialog.local_cseq = 0;
        Ok(CallDialog {
            client,
            local,
            core,
            dialog,
            contact: format!("<sip:{user}@{local}{params}>"),
            credentials,
            last_ack: None,
        })
    }

    fn via(&self) -> String {
        via(self.client.transport(), self.local)
    }

    /// Sends an INVITE (the first, or a re-INVITE in the dialog) with `sdp` and waits for its
    /// final response, answering a digest challenge once. A 2xx is ACKed and returned.
    pub async fn invite(&mut self, sdp: Bytes, extra: &[(&str, String)]) -> Result<Message, Refused> {
        let mut authorization: Option<(&'static str, String)> = None;
        for _attempt in 0..2 {
            let via = self.via();
            let mut req = self.dialog.request("INVITE", None, via);
            req.push("Contact", self.contact.clone());
            for (n, v) in extra {
                req.push(n, v.clone());
            }
            if let Some((name, value)) = &authorization {
                req.push(name, value.clone());
            }
            req.push("Content-Type", "application/sdp");
            req.body = sdp.clone();
            let resp = match self.transaction(&req).await? {
                Outcome::Final(m) => m,
                Outcome::PeerHungUp => return Err(Refused::local("the call ended")),
            };
            let status = resp.status().unwrap_or(0);
            if (200..300).contains(&status) {
                if self.dialog.remote_tag.is_none() {
                    // The first 2xx fixes the dialog: the core's tag and Contact (§12.1.2).
                    self.dialog.learn_remote_tag(&resp);
                    self.dialog.confirm(&resp);
                }
                let via = self.via();
                let ack = self.dialog.request("ACK", Some(self.dialog.local_cseq), via);
                let _ = self.client.send_stateless(&ack, self.core).await;
                self.last_ack = Some(ack);
                return Ok(resp);
            }
            // A failure: the transaction has ACKed it (§17.1.1.3).
            let challenge = match status {
                401 => resp.header("WWW-Authenticate").map(|c| ("Authorization", c.to_string())),
                407 => resp.header("Proxy-Authenticate").map(|c| ("Proxy-Authorization", c.to_string())),
                _ => None,
            };
            match (challenge, &self.credentials, authorization.is_some()) {
                (Some((header, c)), Some(cred), false) => {
                    let uri = self.dialog.remote_target.clone();
                    let answer = digest::answer(&c, "INVITE", &uri, &cred.username, &cred.password)
                        .ok_or_else(|| Refused::local(format!("the core's challenge could not be read: {c}")))?;
                    authorization = Some((header, answer));
                }
                _ => return Err(refusal(&resp)),
            }
        }
        Err(Refused::local("the core refused the credentials"))
    }

    /// One client transaction until its final response (retransmissions and Timer B/F are the
    /// transaction layer's). Requests from the core meanwhile are answered; its BYE ends the
    /// wait ([`Outcome::PeerHungUp`]). An INVITE that only rings is given up after 64·T1 too,
    /// as the desk always did: the core answers the desk's own calls, and an officer's button
    /// must not wait for ever.
    async fn transaction(&mut self, request: &Message) -> Result<Outcome, Refused> {
        let key = self
            .client
            .send_request(request, self.core)
            .await
            .map_err(|e| Refused::local(format!("cannot send: {e}")))?;
        let limit = self.client.transaction_timeout();
        let no_answer = || Refused::local(format!("no answer from the core within {} s", limit.as_secs()));
        let (call_id, core, last_ack) = (self.dialog.call_id.clone(), self.core, self.last_ack.clone());
        let wait = self.client.final_response(&key, |ev| {
            let (send, hung_up) = answer(&call_id, core, last_ack.as_ref(), ev);
            if hung_up {
                ControlFlow::Break(send)
            } else {
                ControlFlow::Continue(send)
            }
        });
        let waited =
            if request.method() == "INVITE" { tokio::time::timeout(limit, wait).await } else { Ok(wait.await) };
        match waited {
            Ok(Ok(m)) => Ok(Outcome::Final(m)),
            Ok(Err(ClientError::Interrupted)) => Ok(Outcome::PeerHungUp),
            Ok(Err(ClientError::Timeout)) => Err(no_answer()),
            Ok(Err(ClientError::Io(e))) => Err(Refused::local(format!("receiving from the core: {e}"))),
            Err(_) => {
                self.client.abandon(&key);
                Err(no_answer())
            }
        }
    }

    /// The next thing on the dialog's socket outside a transaction (cancel-safe: a `select!`
    /// branch); hand it to [`CallDialog::on_event`].
    pub async fn recv(&mut self) -> std::io::Result<Event> {
        self.client.next().await
    }

    /// Something that arrived outside a transaction: a request from the core (answered; true
    /// when it was a BYE) or a retransmitted 2xx (ACKed again).
    pub async fn on_event(&mut self, ev: Event) -> bool {
        let (send, hung_up) = answer(&self.dialog.call_id, self.core, self.last_ack.as_ref(), ev);
        if let Some((m, to)) = send {
            let _ = self.client.send_stateless(&m, to).await;
        }
        hung_up
    }

    /// Ends the dialog with a BYE (a non-INVITE transaction: Timer E retransmissions, Timer F).
    pub async fn bye(&mut self) -> Result<(), String> {
        let via = self.via();
        let bye = self.dialog.request("BYE", None, via);
        match self.transaction(&bye).await {
            // Any final response ends it, as does the core hanging up at the same moment.
            Ok(_) => Ok(()),
            Err(r) => Err(format!("the hang-up was not confirmed: {r}")),
        }
    }
}

/// What the desk does with something from the core in dialog `call_id` (anything of another
/// call is ignored): its BYE, OPTIONS and INFO get 200 (other methods 501), a retransmitted 2xx
/// to our INVITE gets its ACK again. True when the core hung up (BYE).
fn answer(call_id: &str, core: SocketAddr, last_ack: Option<&Message>, ev: Event) -> (Option<Outgoing>, bool) {
    match ev {
        Event::Request { msg, from } if msg.call_id() == Some(call_id) => {
            let (status, reason) = match msg.method() {
                "BYE" | "OPTIONS" | "INFO" => (200, "OK"),
                _ => (501, "Not Implemented"),
            };
            (Some((msg.response(status, reason, None), from)), msg.method() == "BYE")
        }
        Event::Response { msg, .. } | Event::Stray { msg, .. }
            if msg.call_id() == Some(call_id)
                && msg.cseq().is_some_and(|(_, method)| method == "INVITE")
                && msg.status().is_some_and(|s| (200..300).contains(&s)) =>
        {
            (last_ack.map(|a| (a.clone(), core)), false)
        }
        _ => (None, false),
    }
}

/// The address this machine reaches `core` from (the kernel's route choice; nothing is sent):
/// what the desk puts in its Via and Contact, so a core on another machine can answer.
pub async fn local_ip_towards(core: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any: SocketAddr = if core.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal address");
    let probe = UdpSocket::bind(any).await?;
    probe.connect(core).await?;
    Ok(probe.local_addr()?.ip())
}

/// How a client transaction ended.
enum Outcome {
    Final(Message),
    /// The core sent BYE meanwhile (answered).
    PeerHungUp,
}

/// The URI inside a Contact header value (`"x" <sip:a@b>;expires=…` or a bare `sip:a@b`).
pub fn contact_target(v: &str) -> Option<String> {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => Some(v[a + 1..b].to_string()),
        _ => v.split(';').next().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
    }
}

/// A failure response in the officer's words: status, reason phrase, the core's Warning text.
fn refusal(m: &Message) -> Refused {
    let status = m.status().unwrap_or(0);
    let phrase = match &m.start {
        sosdesk::sip::message::StartLine::Response { reason, .. } => reason.clone(),
        _ => String::new(),
    };
    let warning = m.header("Warning").and_then(warning_text);
    Refused { status, reason: warning.map(|w| format!("{phrase} ({w})")).unwrap_or(phrase) }
}

/// The text of a Warning header (`399 sosdesk "why"` → `why`).
fn warning_text(v: &str) -> Option<String> {
    let a = v.find('"')?;
    let b = v.rfind('"')?;
    (b > a).then(|| v[a + 1..b].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_and_warning_parsing() {
        assert_eq!(contact_target("\"x\" <sip:a@b:5060>;expires=3").as_deref(), Some("sip:a@b:5060"));
        assert_eq!(contact_target("sip:a@b;transport=udp").as_deref(), Some("sip:a@b"));
        assert_eq!(warning_text("399 sosdesk \"only listening\"").as_deref(), Some("only listening"));
        assert_eq!(warning_text("399 sosdesk"), None);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials { username: "desk1".into(), password: "lobby-desk-secret".into() };
        let s = format!("{c:?}");
        assert!(s.contains("desk1") && !s.contains("secret"), "{s}");
    }
}
