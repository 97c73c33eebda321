//! "Place test call (933)": a real SIP call from the desk into its own core, so a new user sees
//! the whole path work — the core classifies it as a test call, locates it, routes it, and the
//! board shows it, without sounding the alarm.
//!
//! A minimal RFC 3261 UAC over UDP: INVITE (retransmitted per Timer A), ACK for the final response
//! (§17.1.1.3 for a failure, §13.2.2.4 for a 2xx), and after a short hold a BYE.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sosdesk::sip::ids::{new_branch, new_call_id, new_tag};
use sosdesk::sip::parse::parse_datagram;
use sosdesk::sip::Message;
use tokio::net::UdpSocket;

/// RFC 3261 Timer B: an INVITE with no final response by then has failed.
const TIMER_B: Duration = Duration::from_secs(32);
const T1: Duration = Duration::from_millis(500);
/// How long the answered test call stays up, so the officer sees it connected.
const HOLD: Duration = Duration::from_secs(3);

/// Places the test call to `number` through the core listening on `core` (UDP) and returns a
/// one-line result for the officer.
pub async fn place(core: SocketAddr, number: &str, hold: Duration) -> Result<String, String> {
    let bind: SocketAddr = if core.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
    let sock = UdpSocket::bind(bind).await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let host = local.ip().to_string();
    let call_id = new_call_id(&host);
    let from_tag = new_tag();
    let branch = new_branch();
    let ruri = format!("sip:{number}@{core}");
    let from = format!("\"sosdesk desk test\" <sip:desk-test@{local}>;tag={from_tag}");
    let to = format!("<sip:{number}@{core}>");
    let sdp = format!(
        "v=0\r\no=desk 1 1 IN IP4 {host}\r\ns=sosdesk test call\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    );
    let mut invite = Message::request("INVITE", &ruri);
    invite.push("Via", format!("SIP/2.0/UDP {local};branch={branch};rport"));
    invite.push("Max-Forwards", "70");
    invite.push("From", from.clone());
    invite.push("To", to.clone());
    invite.push("Call-ID", call_id.clone());
    invite.push("CSeq", "1 INVITE");
    invite.push("Contact", format!("<sip:desk-test@{local}>"));
    invite.push("Content-Type", "application/sdp");
    invite.body = sdp.into_bytes().into();
    let invite_bytes = invite.to_bytes();

    let started = Instant::now();
    let mut next_resend = T1;
    let mut interval = T1;
    let mut provisional = false;
    let mut buf = vec![0u8; 65_535];
    sock.send_to(&invite_bytes, core).await.map_err(|e| format!("cannot send the INVITE: {e}"))?;
    let final_resp = loop {
        let elapsed = started.elapsed();
        if elapsed >= TIMER_B {
            return Err(format!("no final response from the core within {} s", TIMER_B.as_secs()));
        }
        let wait = if provisional { TIMER_B - elapsed } else { next_resend.saturating_sub(elapsed) };
        match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let Ok(m) = parse_datagram(&buf[..n]) else { continue };
                if m.is_request() || m.call_id() != Some(call_id.as_str()) || m.method() != "INVITE" {
                    continue;
                }
                match m.status() {
                    Some(s) if s < 200 => provisional = true,
                    Some(_) => break m,
                    None => {}
                }
            }
            Ok(Err(e)) => return Err(format!("receiving from the core: {e}")),
            Err(_) if !provisional => {
                // Timer A (§17.1.1.2): retransmit, doubling the interval.
                let _ = sock.send_to(&invite_bytes, core).await;
                interval *= 2;
                next_resend = started.elapsed() + interval;
            }
            Err(_) => {}
        }
    };
    let status = final_resp.status().unwrap_or(0);
    let to_with_tag = final_resp.header("To").unwrap_or(&to).to_string();
    if status >= 300 {
        // ACK for a non-2xx final response: same branch, part of the INVITE transaction.
        let mut ack = Message::request("ACK", &ruri);
        ack.push("Via", format!("SIP/2.0/UDP {local};branch={branch};rport"));
        ack.push("Max-Forwards", "70");
        ack.push("From", from);
        ack.push("To", to_with_tag);
        ack.push("Call-ID", call_id);
        ack.push("CSeq", "1 ACK");
        let _ = sock.send_to(&ack.to_bytes(), core).await;
        let reason = warning_text(&final_resp);
        return Err(format!("test call {number} was not connected: {status} {reason}"));
    }
    // 2xx: ACK and BYE go to the Contact, i.e. back to the core (a B2BUA), as new transactions.
    let target = final_resp.header("Contact").and_then(contact_target).unwrap_or_else(|| ruri.clone());
    let in_dialog = |method: &str, cseq: u32| {
        let mut m = Message::request(method, &target);
        m.push("Via", format!("SIP/2.0/UDP {local};branch={};rport", new_branch()));
        m.push("Max-Forwards", "70");
        m.push("From", from.clone());
        m.push("To", to_with_tag.clone());
        m.push("Call-ID", call_id.clone());
        m.push("CSeq", format!("{cseq} {method}"));
        m
    };
    let _ = sock.send_to(&in_dialog("ACK", 1).to_bytes(), core).await;
    tokio::time::sleep(hold).await;
    let bye = in_dialog("BYE", 2).to_bytes();
    let mut bye_interval = T1;
    let bye_started = Instant::now();
    sock.send_to(&bye, core).await.map_err(|e| format!("cannot send the BYE: {e}"))?;
    loop {
        // Timer F for a non-INVITE transaction is 64·T1; the core answers a BYE at once.
        if bye_started.elapsed() > T1 * 64 {
            return Ok(format!("test call {number} was answered; the hang-up was not confirmed"));
        }
        match tokio::time::timeout(bye_interval, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                let Ok(m) = parse_datagram(&buf[..n]) else { continue };
                if m.call_id() == Some(call_id.as_str()) && m.method() == "BYE" && m.status().is_some_and(|s| s >= 200)
                {
                    return Ok(format!(
                        "test call {number} answered by the provider, held {} s and hung up",
                        hold.as_secs()
                    ));
                }
                if m.call_id() == Some(call_id.as_str())
                    && m.method() == "INVITE"
                    && m.status().is_some_and(|s| s < 300)
                {
                    // A retransmitted 2xx: our ACK was lost (§13.2.2.4), send it again.
                    let _ = sock.send_to(&in_dialog("ACK", 1).to_bytes(), core).await;
                }
            }
            Ok(Err(e)) => return Err(format!("receiving from the core: {e}")),
            Err(_) => {
                let _ = sock.send_to(&bye, core).await;
                bye_interval = (bye_interval * 2).min(Duration::from_secs(4));
            }
        }
    }
}

/// The default hold time of an answered test call.
pub fn default_hold() -> Duration {
    HOLD
}

/// The URI inside a Contact header value (`"x" <sip:a@b>;expires=…` or a bare `sip:a@b`).
fn contact_target(v: &str) -> Option<String> {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => Some(v[a + 1..b].to_string()),
        _ => v.split(';').next().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
    }
}

/// The core's Warning header (why it refused or failed the call), in parentheses, if any.
fn warning_text(m: &Message) -> String {
    m.header("Warning").map(|w| format!("({w})")).unwrap_or_default()
}
