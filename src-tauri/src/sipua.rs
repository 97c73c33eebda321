//! The desk's SIP user agent: one dialog from the desk to a core over UDP, as a UAC. Used by the
//! test call and by the desk's leg in a call's conference (the same SIP path a desk on another
//! machine or a desk phone takes; the core treats them alike).
//!
//! Minimal RFC 3261 on purpose: INVITE as a client transaction (Timer A retransmissions and Timer
//! B, §17.1.1), digest answers to 401/407 (§22.2, a new CSeq per attempt), ACK for a failure
//! (§17.1.1.3, same branch) and for a 2xx (§13.2.2.4, a new transaction to the Contact), re-INVITE
//! and BYE in the dialog, and 200 to the core's BYE.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sosdesk::sip::digest;
use sosdesk::sip::ids::{new_branch, new_call_id, new_tag};
use sosdesk::sip::parse::parse_datagram;
use sosdesk::sip::Message;
use tokio::net::UdpSocket;

/// RFC 3261 Timer B (INVITE) and Timer F (others), both 64·T1: no final response by then is a failure.
const TIMER_B: Duration = Duration::from_secs(32);
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the longest retransmission interval of a non-INVITE request.
const T2: Duration = Duration::from_secs(4);

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

/// One dialog from the desk to the core.
pub struct Dialog {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    core: SocketAddr,
    call_id: String,
    /// Our From, with our tag.
    from: String,
    /// The core's To; with its tag once a 2xx came.
    to: String,
    /// Where requests in the dialog go: the Request-URI until the 2xx, then its Contact.
    target: String,
    contact: String,
    cseq: u32,
    credentials: Option<Credentials>,
    /// A 2xx came: the dialog exists (To tag and remote target are fixed, §12.1.2).
    established: bool,
}

impl Dialog {
    /// A new dialog from `user` ("Display Name", sip user part) to `ruri` at `core`.
    pub async fn new(
        core: SocketAddr,
        display: &str,
        user: &str,
        ruri: String,
        credentials: Option<Credentials>,
    ) -> Result<Dialog, String> {
        let ip = local_ip_towards(core).await.map_err(|e| format!("no route to the core at {core}: {e}"))?;
        let sock =
            UdpSocket::bind(SocketAddr::new(ip, 0)).await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let host = local.ip().to_string();
        // A display name goes in quotes (RFC 3261 §25.1 quoted-string): no quote or backslash.
        let display: String = display.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
        Ok(Dialog {
            call_id: new_call_id(&host),
            from: format!("\"{display}\" <sip:{user}@{local}>;tag={}", new_tag()),
            to: format!("<{ruri}>"),
            target: ruri,
            contact: format!("<sip:{user}@{local}>"),
            sock,
            local,
            core,
            cseq: 0,
            credentials,
            established: false,
        })
    }

    fn request(&mut self, method: &str, branch: &str) -> Message {
        let mut m = Message::request(method, &self.target);
        m.push("Via", format!("SIP/2.0/UDP {};branch={branch};rport", self.local));
        m.push("Max-Forwards", "70");
        m.push("From", self.from.clone());
        m.push("To", self.to.clone());
        m.push("Call-ID", self.call_id.clone());
        m.push("CSeq", format!("{} {method}", self.cseq));
        m
    }

    /// Sends an INVITE (the first, or a re-INVITE in the dialog) with `sdp` and waits for its
    /// final response, answering a digest challenge once. A 2xx is ACKed and returned.
    pub async fn invite(&mut self, sdp: Bytes, extra: &[(&str, String)]) -> Result<Message, Refused> {
        let mut authorization: Option<(&'static str, String)> = None;
        for _attempt in 0..2 {
            self.cseq += 1;
            let branch = new_branch();
            let mut req = self.request("INVITE", &branch);
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
                if !self.established {
                    self.to = resp.header("To").unwrap_or(&self.to).to_string();
                    if let Some(c) = resp.header("Contact").and_then(contact_target) {
                        self.target = c;
                    }
                    self.established = true;
                }
                let ack = self.ack_for_2xx();
                let _ = self.sock.send_to(&ack, self.core).await;
                return Ok(resp);
            }
            self.ack_failure(&req, &resp).await;
            let challenge = match status {
                401 => resp.header("WWW-Authenticate").map(|c| ("Authorization", c.to_string())),
                407 => resp.header("Proxy-Authenticate").map(|c| ("Proxy-Authorization", c.to_string())),
                _ => None,
            };
            match (challenge, &self.credentials, authorization.is_some()) {
                (Some((header, c)), Some(cred), false) => {
                    let uri = self.target.clone();
                    let answer = digest::answer(&c, "INVITE", &uri, &cred.username, &cred.password)
                        .ok_or_else(|| Refused::local(format!("the core's challenge could not be read: {c}")))?;
                    authorization = Some((header, answer));
                }
                _ => return Err(refusal(&resp)),
            }
        }
        Err(Refused::local("the core refused the credentials"))
    }

    /// One client transaction (§17.1) until its final response: `request` is retransmitted per
    /// Timer A (INVITE, until a provisional response) or Timer E (others, capped at T2), and
    /// abandoned after Timer B/F (64·T1). Requests from the core meanwhile are answered; its BYE
    /// ends the wait ([`Outcome::PeerHungUp`]).
    async fn transaction(&mut self, request: &Message) -> Result<Outcome, Refused> {
        let bytes = request.to_bytes();
        let method = request.method().to_string();
        let invite = method == "INVITE";
        let cseq = self.cseq;
        let started = Instant::now();
        let mut interval = T1;
        let mut next_resend = T1;
        let mut provisional = false;
        let mut buf = vec![0u8; 65_535];
        self.sock.send_to(&bytes, self.core).await.map_err(|e| Refused::local(format!("cannot send: {e}")))?;
        loop {
            let elapsed = started.elapsed();
            if elapsed >= TIMER_B {
                return Err(Refused::local(format!("no answer from the core within {} s", TIMER_B.as_secs())));
            }
            let retransmit = !(invite && provisional);
            let wait = if retransmit { next_resend.saturating_sub(elapsed) } else { TIMER_B - elapsed };
            match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => {
                    let Ok(m) = parse_datagram(&buf[..n]) else { continue };
                    if m.call_id() != Some(self.call_id.as_str()) {
                        continue;
                    }
                    if m.is_request() {
                        if self.answer_request(&m, from).await {
                            return Ok(Outcome::PeerHungUp);
                        }
                        continue;
                    }
                    if m.cseq() != Some((cseq, method.as_str())) {
                        continue;
                    }
                    match m.status() {
                        Some(s) if s < 200 => provisional = true,
                        Some(_) => return Ok(Outcome::Final(m)),
                        None => {}
                    }
                }
                Ok(Err(e)) => return Err(Refused::local(format!("receiving from the core: {e}"))),
                Err(_) if retransmit => {
                    let _ = self.sock.send_to(&bytes, self.core).await;
                    interval = if invite { interval * 2 } else { (interval * 2).min(T2) };
                    next_resend = started.elapsed() + interval;
                }
                Err(_) => {}
            }
        }
    }

    /// ACK for a non-2xx final response: same branch and CSeq number, part of the INVITE
    /// transaction (§17.1.1.3).
    async fn ack_failure(&self, req: &Message, resp: &Message) {
        let mut ack = Message::request("ACK", req.request_uri().unwrap_or(&self.target));
        if let Some(v) = req.header("Via") {
            ack.push("Via", v.to_string());
        }
        ack.push("Max-Forwards", "70");
        ack.push("From", self.from.clone());
        ack.push("To", resp.header("To").unwrap_or(&self.to).to_string());
        ack.push("Call-ID", self.call_id.clone());
        ack.push("CSeq", format!("{} ACK", self.cseq));
        let _ = self.sock.send_to(&ack.to_bytes(), self.core).await;
    }

    fn ack_for_2xx(&mut self) -> Vec<u8> {
        let branch = new_branch();
        let mut ack = self.request("ACK", &branch);
        ack.set("CSeq", format!("{} ACK", self.cseq));
        ack.to_bytes()
    }

    /// Answers a request from the core in this dialog. Returns true for a BYE (the core ended
    /// our leg). A retransmitted 2xx means our ACK was lost (§13.2.2.4): sent again.
    pub async fn answer_request(&mut self, m: &Message, from: SocketAddr) -> bool {
        let (status, reason) = match m.method() {
            "BYE" | "OPTIONS" | "INFO" => (200, "OK"),
            _ => (501, "Not Implemented"),
        };
        let r = m.response(status, reason, None);
        let _ = self.sock.send_to(&r.to_bytes(), from).await;
        m.method() == "BYE"
    }

    /// A datagram that arrived on the dialog's socket outside a transaction: a request from the
    /// core (answered; true when it was a BYE) or a retransmitted 2xx (ACKed again).
    pub async fn on_datagram(&mut self, data: &[u8], from: SocketAddr) -> bool {
        let Ok(m) = parse_datagram(data) else { return false };
        if m.call_id() != Some(self.call_id.as_str()) {
            return false;
        }
        if m.is_request() {
            return self.answer_request(&m, from).await;
        }
        if m.cseq().is_some_and(|(_, method)| method == "INVITE") && m.status().is_some_and(|s| (200..300).contains(&s))
        {
            let ack = self.ack_for_2xx();
            let _ = self.sock.send_to(&ack, self.core).await;
        }
        false
    }

    /// Ends the dialog with a BYE (a non-INVITE transaction: Timer E retransmissions, Timer F).
    pub async fn bye(&mut self) -> Result<(), String> {
        self.cseq += 1;
        let branch = new_branch();
        let bye = self.request("BYE", &branch);
        match self.transaction(&bye).await {
            // Any final response ends it, as does the core hanging up at the same moment.
            Ok(_) => Ok(()),
            Err(r) => Err(format!("the hang-up was not confirmed: {r}")),
        }
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
