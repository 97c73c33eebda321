//! The engine without sockets: messages and a simulated clock in, outputs drained. Covers what
//! is hard to provoke with a real peer on time: a late answer from a route already given up, the
//! exact route timeout, the ELIN window edge, retransmission absorption, the order of outputs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Engine, LocalEndpoint, Output};
use crate::clock::Now;
use crate::config::Config;
use crate::events::{CallEvent, CallEventKind};
use crate::media::runner::RtpPorts;
use crate::sip::parse::parse_datagram;
use crate::sip::transaction::{Peer, Reconnect, Transmit, Transport};
use crate::sip::Message;

const CALLER: &str = "127.0.0.1:5062";
const PRIMARY: &str = "127.0.0.1:5070";
const SECONDARY: &str = "127.0.0.1:5071";

/// The engine with the part of an I/O shell the tests need: outputs drained into buffers, and
/// RTP ports bound and handed in before each input when media is anchored.
struct Sim {
    e: Engine,
    rtp: Option<RtpPorts>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
    audit_only: VecDeque<CallEvent>,
    /// What the shell would write to or ask of the shared store.
    store_io: VecDeque<Output>,
    /// The names TLS certificates must carry, by address (`Output::TlsName`).
    tls_names: Vec<(SocketAddr, String)>,
}

impl Sim {
    fn handle_message(&mut self, msg: Message, peer: Peer, now: Now) {
        self.hand_rtp_ports();
        self.e.handle_message(msg, peer, now);
    }

    fn handle_timeout(&mut self, now: Now) {
        self.hand_rtp_ports();
        self.e.handle_timeout(now);
    }

    fn set_locators(&mut self, locators: super::Locators) {
        self.e.set_locators(locators);
    }

    /// Anchor media, with ports of `first..=last` on loopback.
    fn anchor(&mut self, first: u16, last: u16) {
        self.e.anchor_media();
        self.rtp = Some(RtpPorts::new([127, 0, 0, 1].into(), [127, 0, 0, 1].into(), first, last));
    }

    fn hand_rtp_ports(&mut self) {
        let Some(ports) = &self.rtp else { return };
        for _ in 0..self.e.rtp_ports_wanted() {
            let (socket, addr) = ports.open().expect("a free RTP port");
            self.e.add_rtp_port(socket, addr);
        }
    }

    /// Drain every output into the buffers, in the engine's order.
    fn drain(&mut self) {
        while let Some(o) = self.e.poll_output() {
            match o {
                Output::Transmit(t) => self.transmits.push_back(t),
                Output::TlsName { addr, name } => self.tls_names.push((addr, name)),
                Output::Event(ev) => self.events.push_back(ev),
                Output::Audit(ev) => self.audit_only.push_back(ev),
                o @ (Output::ElinMapped(_)
                | Output::ClaimElin(_)
                | Output::LookupElin(_)
                | Output::Registered(_)
                | Output::EnterUserLocation(_)) => self.store_io.push_back(o),
                Output::Media(_) | Output::LateEvent { .. } | Output::Sighting(_) => {}
            }
        }
    }

    fn poll_event(&mut self) -> Option<CallEvent> {
        self.drain();
        self.events.pop_front()
    }
}

/// The lab's engine without the notification IM (tests/it/notifications.rs covers it), so the
/// routing tests see only the call's own messages.
fn engine(edit: impl FnOnce(String) -> String) -> Sim {
    engine_notifying(|c| edit(c.lines().filter(|l| !l.starts_with("notification_uris")).collect::<Vec<_>>().join("\n")))
}

fn engine_notifying(edit: impl FnOnce(String) -> String) -> Sim {
    let text = include_str!("../../../examples/lab.toml").replace("path = \"../sosdesk-lab.db\"", "path = \"x.db\"");
    let cfg = Config::from_toml(&edit(text), std::path::Path::new("lab.toml")).expect("lab config");
    let local =
        LocalEndpoint { host: "127.0.0.1".into(), udp: Some("127.0.0.1:5060".parse().unwrap()), tcp: None, tls: None };
    Sim {
        e: Engine::new(&cfg, local, Now::read()),
        rtp: None,
        transmits: VecDeque::new(),
        events: VecDeque::new(),
        audit_only: VecDeque::new(),
        store_io: VecDeque::new(),
        tls_names: Vec::new(),
    }
}

fn peer(a: &str) -> Peer {
    Peer { transport: Transport::Udp, addr: a.parse().unwrap() }
}

fn invite(from: &str, to_user: &str, n: u32) -> Message {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
    let raw = format!(
        "INVITE sip:{to_user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKc{n}\r\n\
From: \"Caller\" <sip:1001@{from}>;tag=ct{n}\r\nTo: <sip:{to_user}@127.0.0.1:5060>\r\nCall-ID: call-{n}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:1001@{from}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    parse_datagram(raw.as_bytes()).unwrap()
}

/// Everything the engine wants to send: (destination, parsed message).
fn sent(e: &mut Sim) -> Vec<(SocketAddr, Message)> {
    e.drain();
    let mut out = Vec::new();
    while let Some(t) = e.transmits.pop_front() {
        out.push((t.peer.addr, parse_datagram(&t.bytes).expect("sosdesk sends valid SIP")));
    }
    out
}

fn start_line(m: &Message) -> String {
    String::from_utf8_lossy(&m.to_bytes()).lines().next().unwrap_or("").to_string()
}

/// A response from the far end to a request sosdesk sent.
fn answer(req: &Message, status: u16, tag: &str, contact: &str) -> Message {
    let mut r = req.response(status, crate::sip::reason_phrase(status), Some(tag));
    if (200..300).contains(&status) {
        r.push("Contact", format!("<sip:psap@{contact}>"));
    }
    r
}

#[test]
fn silent_route_fails_over_exactly_at_the_route_timeout() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let out = sent(&mut e);
    assert_eq!(out.len(), 2, "100 Trying to the caller and the INVITE to the primary");
    assert_eq!(out[1].0, PRIMARY.parse::<SocketAddr>().unwrap());

    // Lab route_timeout_ms = 2000. Just before: only Timer A retransmissions to the primary.
    e.handle_timeout(t0 + Duration::from_millis(1999));
    assert!(sent(&mut e).iter().all(|(to, m)| *to == PRIMARY.parse::<SocketAddr>().unwrap() && m.method() == "INVITE"));
    e.handle_timeout(t0 + Duration::from_millis(2000));
    let out = sent(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, SECONDARY.parse::<SocketAddr>().unwrap(), "the next route is tried at once");
    let kinds: Vec<_> = std::iter::from_fn(|| e.poll_event()).map(|ev| ev.kind).collect();
    assert!(matches!(&kinds[2], CallEventKind::RouteFailed { reason } if reason == "no response within 2000 ms"));
    // The abandoned primary gets no more retransmissions.
    e.handle_timeout(t0 + Duration::from_secs(10));
    assert!(sent(&mut e).iter().all(|(to, _)| *to != PRIMARY.parse::<SocketAddr>().unwrap()));
}

#[test]
fn a_late_answer_from_an_abandoned_route_is_acked_and_hung_up() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 2), peer(CALLER), t0);
    let first = sent(&mut e).remove(1).1;
    e.handle_timeout(t0 + Duration::from_millis(2000));
    sent(&mut e);
    // The primary wakes up and answers after sosdesk moved on to the secondary.
    e.handle_message(answer(&first, 200, "late", PRIMARY), peer(PRIMARY), t0 + Duration::from_millis(2100));
    let out = sent(&mut e);
    let lines: Vec<String> = out.iter().map(|(_, m)| start_line(m)).collect();
    assert_eq!(lines, ["ACK sip:psap@127.0.0.1:5070 SIP/2.0", "BYE sip:psap@127.0.0.1:5070 SIP/2.0"]);
    assert!(out.iter().all(|(to, m)| *to == PRIMARY.parse::<SocketAddr>().unwrap() && m.call_id() == first.call_id()));
    // The caller heard nothing of it.
    assert!(out.iter().all(|(to, _)| *to != CALLER.parse::<SocketAddr>().unwrap()));
}

#[test]
fn failover_from_a_ringing_route_cancels_it_and_acks_its_487() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 3), peer(CALLER), t0);
    let first = sent(&mut e).remove(1).1;
    e.handle_message(answer(&first, 180, "r1", PRIMARY), peer(PRIMARY), t0);
    sent(&mut e);
    // The primary then fails after ringing: 486. The transaction ACKs it and the secondary is
    // tried; no CANCEL for an INVITE that is already complete.
    e.handle_message(answer(&first, 486, "r1", PRIMARY), peer(PRIMARY), t0);
    let lines: Vec<String> = sent(&mut e).iter().map(|(_, m)| start_line(m)).collect();
    assert_eq!(
        lines,
        ["ACK sip:911@127.0.0.1:5070;user=phone SIP/2.0", "INVITE sip:911@127.0.0.1:5071;user=phone SIP/2.0"]
    );
}

#[test]
fn invite_retransmissions_are_absorbed_not_routed_twice() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    let inv = invite(CALLER, "911", 4);
    e.handle_message(inv.clone(), peer(CALLER), t0);
    assert_eq!(sent(&mut e).len(), 2);
    for i in 1..5 {
        e.handle_message(inv.clone(), peer(CALLER), t0 + Duration::from_millis(500 * i));
        let out = sent(&mut e);
        assert_eq!(out.len(), 1, "only the 100 Trying is repeated");
        assert_eq!(out[0].1.status(), Some(100));
    }
    assert_eq!(e.e.active_calls(), 1);
}

#[test]
fn elin_mapping_is_live_until_the_end_of_the_window_only() {
    // One-minute window; the warehouse caller (127.0.0.4) goes out through the ELIN gateway.
    let mut e = engine(|c| c.replace("elin_callback_minutes = 180", "elin_callback_minutes = 1"));
    let t0 = Now::read();
    let wh = "127.0.0.4:5062";
    e.handle_message(invite(wh, "911", 5), peer(wh), t0);
    let out = sent(&mut e);
    assert!(out[1].1.header("From").unwrap().contains("<sip:4255550199@"), "ELIN presented");

    // 59.999 s later the PSAP calls the ELIN back: it reaches the warehouse caller.
    let psap = "127.0.0.1:5080";
    e.handle_message(invite(psap, "4255550199", 6), peer(psap), t0 + Duration::from_millis(59_999));
    let out = sent(&mut e);
    assert_eq!(start_line(&out[1].1), "INVITE sip:1001@127.0.0.4:5062 SIP/2.0");
    // At 60 s the window is over: the fallback (security desk) gets the callback.
    e.handle_message(invite(psap, "4255550199", 7), peer(psap), t0 + Duration::from_secs(60));
    let out = sent(&mut e);
    assert_eq!(start_line(&out[1].1), "INVITE sip:security-desk@127.0.0.1:5090 SIP/2.0");
}

/// A caller over TLS (a PBX's connection, from an ephemeral port) goes out through the ELIN
/// gateway. The PSAP's callback reaches it over that connection while it lasts, at its Contact
/// (still over TLS) once it has closed, and through another node (the mapping from the store,
/// the connection not that node's) at its Contact at once.
#[test]
fn an_elin_callback_reaches_a_tls_caller_over_its_connection_then_at_its_contact() {
    let t0 = Now::read();
    let wh = "127.0.0.4:5062";
    let conn = Peer { transport: Transport::Tls, addr: "127.0.0.4:40001".parse().unwrap() };
    let contact = Peer { transport: Transport::Tls, addr: wh.parse().unwrap() };
    let mut a = engine(|c| c);
    a.e.share_through_store();
    a.handle_message(invite(wh, "911", 5), conn, t0);
    sent(&mut a);
    let Some(Output::ElinMapped(m)) = a.store_io.pop_front() else { panic!("no mapping shared") };
    assert_eq!((m.caller_peer, m.caller_reconnect.clone()), (conn, Some(Reconnect { peer: contact, name: None })));

    let psap = "127.0.0.1:5080";
    let callback_to = |e: &mut Sim| {
        e.drain();
        let to = e.transmits.iter().find(|t| t.bytes.starts_with(b"INVITE sip:1001@")).expect("the callback").peer;
        e.transmits.clear();
        to
    };
    a.handle_message(invite(psap, "4255550199", 6), peer(psap), t0);
    assert_eq!(callback_to(&mut a), conn);
    // A connection sosdesk opened to that address closing changes nothing; the caller's does.
    a.e.handle_connection_closed(conn, false, t0);
    a.handle_message(invite(psap, "4255550199", 7), peer(psap), t0);
    assert_eq!(callback_to(&mut a), conn);
    a.e.handle_connection_closed(conn, true, t0);
    a.handle_message(invite(psap, "4255550199", 8), peer(psap), t0);
    assert_eq!(callback_to(&mut a), contact);

    let mut b = engine(|c| c);
    b.e.share_through_store();
    b.handle_message(invite(psap, "4255550199", 9), peer(psap), t0);
    sent(&mut b);
    b.e.on_elin_found("4255550199", Some(m.clone()), t0);
    assert_eq!(callback_to(&mut b), contact);

    // Over UDP there is nothing to reconnect to: the source address is the caller's.
    let mut c = engine(|c| c);
    c.e.share_through_store();
    c.handle_message(invite(wh, "911", 10), peer(wh), t0);
    sent(&mut c);
    let Some(Output::ElinMapped(m)) = c.store_io.pop_front() else { panic!("no mapping shared") };
    assert_eq!((m.caller_peer, m.caller_reconnect), (peer(wh), None));
}

/// A PBX over TLS that names itself by a host name in its Via and Contact (a Skype for Business
/// Mediation Server's FQDN): once its connection has closed, the far end's BYE and the PSAP's
/// callback go to the address its connection came from, on the Contact's port, and the
/// certificate there must carry the name (RFC 5922 §7.2), which the shell is told before the
/// bytes leave.
#[test]
fn a_tls_caller_whose_contact_names_a_host_is_reached_again_at_its_address_by_that_name() {
    let t0 = Now::read();
    let conn = Peer { transport: Transport::Tls, addr: "127.0.0.4:40001".parse().unwrap() };
    let again = Peer { transport: Transport::Tls, addr: "127.0.0.4:5067".parse().unwrap() };
    // Its Via and Contact name it; a Contact naming another host (a PBX behind a proxy that
    // does not Record-Route) is not the sender, and would need DNS.
    let named = |n: u32, contact_host: &str| {
        let raw = String::from_utf8(invite("127.0.0.4:5062", "911", n).to_bytes().to_vec())
            .unwrap()
            .replace("Via: SIP/2.0/UDP 127.0.0.4:5062", "Via: SIP/2.0/TLS medsrv.contoso.example:5067")
            .replace(
                "Contact: <sip:1001@127.0.0.4:5062>",
                &format!("Contact: <sip:1001@{contact_host}:5067;transport=tls>"),
            );
        parse_datagram(raw.as_bytes()).unwrap()
    };
    let mut other = engine(|c| c);
    other.e.share_through_store();
    other.handle_message(named(3, "pbx.behind.example"), conn, t0);
    sent(&mut other);
    let Some(Output::ElinMapped(m)) = other.store_io.pop_front() else { panic!("no mapping shared") };
    assert_eq!(m.caller_reconnect, None, "a name other than the sender's is not guessed at");

    let mut e = engine(|c| c);
    e.e.share_through_store();
    e.handle_message(named(1, "medsrv.contoso.example"), conn, t0);
    let out = sent(&mut e);
    let Some(Output::ElinMapped(m)) = e.store_io.pop_front() else { panic!("no mapping shared") };
    let expected = Reconnect { peer: again, name: Some("medsrv.contoso.example".into()) };
    assert_eq!(m.caller_reconnect.as_ref(), Some(&expected));
    let to_gateway = out.into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
    e.handle_message(answer(&to_gateway, 200, "psap", "127.0.0.1:5080"), peer("127.0.0.1:5080"), t0);
    let ok = sent(&mut e).into_iter().find(|(_, m)| m.status() == Some(200)).unwrap().1;
    e.handle_message(from_caller("ACK", 1, "z9hG4bKack1", 1, &ok.to_tag().unwrap()), conn, t0);
    sent(&mut e);
    assert!(e.tls_names.is_empty());

    e.e.handle_connection_closed(conn, true, t0);
    e.drain();
    // The far end hangs up: the name is noted right before the BYE to the caller (each request
    // notes it: the shell's table may have forgotten it since the close).
    e.handle_message(from_provider_bye(&to_gateway, 1), peer("127.0.0.1:5080"), t0);
    let order: Vec<String> = std::iter::from_fn(|| e.e.poll_output())
        .filter_map(|o| match o {
            Output::TlsName { addr, name } => Some(format!("{name} at {addr}")),
            Output::Transmit(t) if t.bytes.starts_with(b"BYE ") => Some(format!("BYE to {}", t.peer)),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["medsrv.contoso.example at 127.0.0.4:5067", "BYE to tls:127.0.0.4:5067"]);
    e.transmits.clear();
    e.tls_names.clear();

    let psap = "127.0.0.1:5080";
    e.handle_message(invite(psap, "4255550199", 2), peer(psap), t0);
    e.drain();
    assert_eq!(e.tls_names, [(again.addr, "medsrv.contoso.example".to_string())]);
    let callback = e.transmits.iter().find(|t| t.bytes.starts_with(b"INVITE ")).expect("the callback");
    assert_eq!(callback.peer, again);
    assert!(callback.bytes.starts_with(b"INVITE sip:1001@medsrv.contoso.example:5067 SIP/2.0\r\n"));
}

/// Two nodes sharing mappings through the store, the store played by the test: a callback to
/// an ELIN this engine has no mapping of waits for one look-up, then goes where the answer says.
#[test]
fn a_callback_with_no_mapping_here_waits_for_the_store_then_reaches_the_caller() {
    let t0 = Now::read();
    let wh = "127.0.0.4:5062";
    // Node A routes the call: it shares the mapping it made.
    let mut a = engine(|c| c);
    a.e.share_through_store();
    a.handle_message(invite(wh, "911", 5), peer(wh), t0);
    sent(&mut a);
    let Some(Output::ElinMapped(m)) = a.store_io.pop_front() else { panic!("no mapping shared") };
    assert_eq!((m.elin.as_str(), m.caller_number.as_str(), m.caller_peer), ("4255550199", "1001", peer(wh)));

    // Node B gets two callbacks to that ELIN: one look-up, both wait (only 100 Trying sent).
    let mut b = engine(|c| c);
    b.e.share_through_store();
    let psap = "127.0.0.1:5080";
    b.handle_message(invite(psap, "4255550199", 6), peer(psap), t0);
    b.handle_message(invite(psap, "4255550199", 7), peer(psap), t0);
    let out = sent(&mut b);
    assert!(
        out.iter().all(|(_, m)| m.status() == Some(100)),
        "{:?}",
        out.iter().map(|o| start_line(&o.1)).collect::<Vec<_>>()
    );
    assert!(matches!(b.store_io.pop_front(), Some(Output::LookupElin(e)) if e == "4255550199"));
    assert!(b.store_io.is_empty(), "one look-up per ELIN");
    // The store's answer: both go to the caller.
    b.e.on_elin_found("4255550199", Some(m), t0);
    let invites: Vec<String> =
        sent(&mut b).iter().map(|o| start_line(&o.1)).filter(|l| l.starts_with("INVITE")).collect();
    assert_eq!(invites, ["INVITE sip:1001@127.0.0.4:5062 SIP/2.0"; 2]);

    // No mapping in the store (or no answer): the fallback, as on one node.
    b.handle_message(invite(psap, "4255550198", 8), peer(psap), t0);
    sent(&mut b);
    b.e.on_elin_found("4255550198", None, t0);
    let out = sent(&mut b);
    assert!(out.iter().any(|o| start_line(&o.1) == "INVITE sip:security-desk@127.0.0.1:5090 SIP/2.0"));
}

/// Several nodes (issue 14): the ELIN is claimed in the store before the INVITE goes out; the
/// call presents what the store gave, or, when the store does not answer, this node's choice.
#[test]
fn with_claims_a_call_waits_for_the_stores_elin_before_the_gateway_gets_the_invite() {
    let t0 = Now::read();
    let wh = "127.0.0.4:5062";
    let mut a = engine(|c| c);
    a.e.share_through_store();
    a.e.claim_elins_in_store();
    a.handle_message(invite(wh, "911", 5), peer(wh), t0);
    let out = sent(&mut a);
    assert!(out.iter().all(|(_, m)| !m.is_request()), "nothing goes out before the claim");
    let Some(Output::ClaimElin(claim)) = a.store_io.pop_front() else { panic!("no claim") };
    assert_eq!(claim.candidates, ["4255550199", "4255550198"]);
    assert_eq!((claim.mapping.caller_number.as_str(), claim.mapping.caller_peer), ("1001", peer(wh)));
    // The store gives the second (another node's caller holds the first).
    let call_ref = claim.mapping.call_ref.clone();
    a.e.on_elin_claimed(&call_ref, Some("4255550198".into()), t0);
    let out = sent(&mut a);
    let sent_invite = out.iter().find(|(_, m)| m.method() == "INVITE" && m.is_request()).expect("the INVITE");
    assert!(
        sent_invite.1.header("From").unwrap().contains("<sip:4255550198@"),
        "{}",
        sent_invite.1.header("From").unwrap()
    );
    assert!(a.store_io.is_empty(), "the claim wrote the mapping: {:?}", a.store_io);
    // A late or repeated answer does nothing.
    a.e.on_elin_claimed(&call_ref, Some("4255550199".into()), t0);
    assert!(sent(&mut a).is_empty());

    // A second caller there; the store does not answer: this node's choice, written after.
    a.handle_message(invite("127.0.0.4:5064", "911", 6), peer("127.0.0.4:5064"), t0);
    sent(&mut a);
    let Some(Output::ClaimElin(claim)) = a.store_io.pop_front() else { panic!("no claim") };
    assert_eq!(claim.candidates, ["4255550199", "4255550198"], "the free one first");
    a.e.on_elin_claimed(&claim.mapping.call_ref, None, t0);
    let out = sent(&mut a);
    let sent_invite = out.iter().find(|(_, m)| m.method() == "INVITE" && m.is_request()).expect("the INVITE");
    assert!(sent_invite.1.header("From").unwrap().contains("<sip:4255550199@"));
    assert!(matches!(a.store_io.pop_front(), Some(Output::ElinMapped(m)) if m.elin == "4255550199"));
}

#[test]
fn concurrent_callers_at_one_location_get_different_elins() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    e.handle_message(invite("127.0.0.4:5062", "911", 8), peer("127.0.0.4:5062"), t0);
    e.handle_message(invite("127.0.0.4:5064", "911", 9), peer("127.0.0.4:5064"), t0);
    let froms: Vec<String> = sent(&mut e)
        .into_iter()
        .filter(|(_, m)| m.method() == "INVITE" && m.is_request())
        .map(|(_, m)| m.header("From").unwrap().to_string())
        .collect();
    assert!(froms[0].contains("4255550199") && froms[1].contains("4255550198"), "{froms:?}");
}

#[test]
fn a_caller_controlled_display_name_cannot_inject_headers() {
    let mut e = engine(|c| c);
    let raw = "INVITE sip:911@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n\
From: \"Evil\\\" <sip:x@y>\\r\\nP-Asserted-Identity: <sip:999@evil>\" <sip:1001@127.0.0.1>;tag=1\r\n\
To: <sip:911@127.0.0.1>\r\nCall-ID: evil\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    e.handle_message(parse_datagram(raw.as_bytes()).unwrap(), peer(CALLER), Now::read());
    let out = sent(&mut e);
    let inv = &out[1].1;
    assert_eq!(inv.headers_named("P-Asserted-Identity").count(), 1);
    assert!(inv.header("P-Asserted-Identity").unwrap().ends_with("<sip:1001@127.0.0.1;user=phone>"));
    // The name survives as text, re-quoted (a quoted-pair `\\r` is just "r", RFC 3261 §25.1).
    assert_eq!(inv.from().unwrap().display.as_deref(), Some(r#"Evil" <sip:x@y>rnP-Asserted-Identity: <sip:999@evil>"#));
}

/// A fixed table standing in for the wiremap index (which has its own tests).
struct TableLocator(Vec<(ipnet::IpNet, std::sync::Arc<crate::location::Erl>)>);

impl crate::location::Locator for TableLocator {
    fn locate(
        &self,
        dev: &crate::location::DeviceAttachment,
    ) -> Option<(std::sync::Arc<crate::location::Erl>, crate::location::MatchKind)> {
        let ip = dev.ip?;
        self.0.iter().find(|(n, _)| n.contains(&ip)).map(|(_, e)| (e.clone(), crate::location::MatchKind::Subnet))
    }
}

impl crate::location::LastKnownLocation for TableLocator {
    fn last_known(&self, dev: &crate::location::DeviceAttachment) -> Option<std::sync::Arc<crate::location::Erl>> {
        use crate::location::Locator;
        self.locate(dev).map(|(e, _)| e)
    }
}

fn erl(room: &str) -> std::sync::Arc<crate::location::Erl> {
    std::sync::Arc::new(crate::location::Erl {
        label: format!("Room {room}"),
        civic: crate::location::CivicAddress {
            country: Some("US".into()),
            a1: Some("WA".into()),
            a3: Some("Bellevue".into()),
            rd: Some("163rd".into()),
            sts: Some("Ave".into()),
            hno: Some("2345".into()),
            room: Some(room.into()),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// An INVITE from a PBX at 127.0.0.2 (in no site) for a phone whose media address is `phone`.
fn invite_via_pbx(phone: &str, n: u32) -> Message {
    let sdp =
        format!("v=0\r\no=- 1 1 IN IP4 {phone}\r\ns=-\r\nc=IN IP4 {phone}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n");
    let raw = format!(
        "INVITE sip:911@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKp{n}\r\n\
From: <sip:2002@127.0.0.2>;tag=p{n}\r\nTo: <sip:911@127.0.0.1>\r\nCall-ID: pbx-{n}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:2002@127.0.0.2:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    parse_datagram(raw.as_bytes()).unwrap()
}

#[test]
fn a_call_without_pidf_lo_is_located_by_the_wiremap_from_its_sdp_address() {
    use crate::location::LocationSource;
    let mut e = engine(|c| c);
    e.set_locators(crate::routing::Locators {
        wiremap: Some(std::sync::Arc::new(TableLocator(vec![("10.9.0.0/16".parse().unwrap(), erl("701"))]))),
        held: Some(std::sync::Arc::new(TableLocator(vec![("10.8.0.0/16".parse().unwrap(), erl("HELD-1"))]))),
        user: None,
        site_maps: None,
    });
    let pbx = "127.0.0.2:5060";
    e.handle_message(invite_via_pbx("10.9.1.5", 10), peer(pbx), Now::read());
    let out = sent(&mut e);
    let body = String::from_utf8_lossy(&out[1].1.body).into_owned();
    assert!(body.contains("<ca:ROOM>701</ca:ROOM>") && body.contains("<ca:RD>163rd</ca:RD>"), "{body}");
    // Routed as a call WITH location: the normal usage (primary), not the ECRC.
    assert_eq!(out[1].0, PRIMARY.parse::<SocketAddr>().unwrap());
    let ev = e.poll_event().unwrap();
    assert_eq!(ev.location.source, LocationSource::Wiremap);
    while e.poll_event().is_some() {}

    // A device the wiremap does not know, but which asked over HELD: HELD-cached.
    e.handle_message(invite_via_pbx("10.8.3.3", 11), peer(pbx), Now::read());
    let out = sent(&mut e);
    assert!(String::from_utf8_lossy(&out[1].1.body).contains("<ca:ROOM>HELD-1</ca:ROOM>"));
    let ev = e.poll_event().unwrap();
    assert_eq!(ev.location.source, LocationSource::HeldCached);

    // Neither knows it: no location, the ECRC route (the secondary in the lab).
    e.handle_message(invite_via_pbx("192.0.2.99", 12), peer(pbx), Now::read());
    let out = sent(&mut e);
    assert_eq!(out[1].0, SECONDARY.parse::<SocketAddr>().unwrap());
}

#[test]
fn a_retransmitted_200_to_a_relayed_re_invite_gets_the_ack_again() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    let inv = invite(CALLER, "911", 20);
    e.handle_message(inv.clone(), peer(CALLER), t0);
    let out_invite = sent(&mut e).remove(1).1;
    // The provider answers; sosdesk ACKs it and answers the caller.
    e.handle_message(answer(&out_invite, 200, "psap", PRIMARY), peer(PRIMARY), t0);
    let ok = sent(&mut e).into_iter().find(|(to, _)| *to == CALLER.parse::<SocketAddr>().unwrap()).unwrap().1;
    let our_tag = ok.to_tag().unwrap();
    // The caller sends a re-INVITE with a new offer inside the dialog.
    let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\n";
    let reinvite = parse_datagram(
        format!(
            "INVITE sip:sosdesk@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKre20\r\n\
From: \"Caller\" <sip:1001@{CALLER}>;tag=ct20\r\nTo: <sip:911@127.0.0.1:5060>;tag={our_tag}\r\nCall-ID: call-20\r\n\
CSeq: 2 INVITE\r\nContact: <sip:1001@{CALLER}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .as_bytes(),
    )
    .unwrap();
    e.handle_message(reinvite, peer(CALLER), t0);
    let relayed = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
    assert_eq!(relayed.request_uri(), Some("sip:psap@127.0.0.1:5070"));
    let ok2 = answer(&relayed, 200, "psap", PRIMARY);
    e.handle_message(ok2.clone(), peer(PRIMARY), t0);
    let acks = |out: Vec<(SocketAddr, Message)>| {
        out.into_iter().filter(|(_, m)| m.is_request() && m.method() == "ACK").count()
    };
    assert_eq!(acks(sent(&mut e)), 1, "the relayed re-INVITE's 200 is ACKed");
    // The ACK was lost: the provider retransmits its 200, sosdesk ACKs again.
    e.handle_message(ok2, peer(PRIMARY), t0 + Duration::from_millis(500));
    assert_eq!(acks(sent(&mut e)), 1, "the retransmitted 200 is ACKed again");
}

#[test]
fn a_conference_uri_on_an_unanchored_call_is_reported_not_silently_skipped() {
    // No RTP ports given to the engine: the call cannot be anchored, so the desk phone of the
    // policy cannot be called in; the call is routed all the same and the failure audited once,
    // even across a failover.
    let mut e = engine(|c| {
        c.replacen(
            "conference_mode = \"two-way\"",
            "conference_mode = \"two-way\"\nconference_uri = \"sip:desk@127.0.0.1:5090\"",
            1,
        )
    });
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let out = sent(&mut e);
    assert_eq!(out[1].0, PRIMARY.parse::<SocketAddr>().unwrap(), "routed");
    assert!(out.iter().all(|(to, _)| to.port() != 5090), "no INVITE to the desk phone");
    e.handle_timeout(t0 + Duration::from_millis(2000));
    let kinds: Vec<_> = std::iter::from_fn(|| e.poll_event()).map(|ev| ev.kind).collect();
    let failed: Vec<_> = kinds.iter().filter(|k| matches!(k, CallEventKind::ConferenceFailed { .. })).collect();
    assert_eq!(failed.len(), 1, "{kinds:?}");
    assert!(
        matches!(failed[0], CallEventKind::ConferenceFailed { target, reason } if target == "sip:desk@127.0.0.1:5090" && reason.contains("not anchored"))
    );
}

#[test]
fn the_notification_im_leaves_right_behind_the_outbound_invite_never_ahead() {
    let mut e = engine_notifying(|c| c);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    // First the caller's 100 and the provider's INVITE, with no MESSAGE built yet.
    let mut first = Vec::new();
    for _ in 0..2 {
        match e.e.poll_output() {
            Some(Output::Transmit(t)) => first.push(start_line(&parse_datagram(&t.bytes).unwrap())),
            other => panic!("expected the call's bytes first, got {other:?}"),
        }
    }
    assert_eq!(first, ["SIP/2.0 100 Trying", "INVITE sip:911@127.0.0.1:5070;user=phone SIP/2.0"]);
    assert_eq!(e.e.out.deferred_notify.len(), 1, "the MESSAGE is built only once the INVITE is out");
    // Then the MESSAGE to the desk phone. The group `security` has nobody registered: no
    // MESSAGE, an audited failed attempt.
    let out = sent(&mut e);
    assert!(e.e.out.deferred_notify.is_empty());
    let lines: Vec<String> = out.iter().map(|(_, m)| start_line(m)).collect();
    assert_eq!(lines, ["MESSAGE sip:security-desk@127.0.0.1:5090 SIP/2.0"]);
    assert_eq!(out[0].0, "127.0.0.1:5090".parse::<SocketAddr>().unwrap());
    let mut kinds = Vec::new();
    while let Some(ev) = e.poll_event() {
        kinds.push((ev.kind.name(), ev.kind.clone()));
    }
    assert_eq!(kinds.iter().map(|k| k.0).collect::<Vec<_>>(), ["detected", "routed", "notified"]);
    assert!(matches!(&kinds[2].1, CallEventKind::Notified { uri, ok: false, detail }
        if uri == "sip:security@127.0.0.1" && detail.contains("no registered contact")));
}

#[test]
fn an_early_update_on_an_anchored_call_is_answered_by_sosdesk_not_relayed() {
    let mut e = engine(|c| c);
    e.anchor(31000, 31999);
    let now = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), now);
    let out = sent(&mut e);
    let (_, outbound) = out.iter().find(|(to, m)| to.to_string() == PRIMARY && m.method() == "INVITE").unwrap();
    let anchored_sdp = String::from_utf8_lossy(&outbound.body).to_string();
    assert!(!anchored_sdp.contains("m=audio 6000"), "the outbound offer is sosdesk's own: {anchored_sdp}");
    // The far end answers early (183 with SDP), then sends an UPDATE in the early dialog with a
    // new offer pointing its media elsewhere.
    let sdp = "v=0\r\no=- 2 2 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n";
    let mut early = answer(outbound, 183, "far1", PRIMARY);
    early.push("Contact", format!("<sip:psap@{PRIMARY}>"));
    early.push("Content-Type", "application/sdp");
    early.body = sdp.as_bytes().to_vec().into();
    e.handle_message(early, peer(PRIMARY), now);
    sent(&mut e);
    let from = outbound.header("From").unwrap();
    let new_sdp = sdp.replace("127.0.0.9", "127.0.0.10").replace("7000", "7100");
    let raw = format!(
        "UPDATE {} SIP/2.0\r\nVia: SIP/2.0/UDP {PRIMARY};branch=z9hG4bKupd1\r\nFrom: <sip:psap@{PRIMARY}>;tag=far1\r\n\
To: {from}\r\nCall-ID: {}\r\nCSeq: 1 UPDATE\r\nContact: <sip:psap@{PRIMARY}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{new_sdp}",
        outbound.header("Contact").and_then(|c| c.split(['<', '>']).nth(1)).unwrap(),
        outbound.call_id().unwrap(),
        new_sdp.len()
    );
    e.handle_message(parse_datagram(raw.as_bytes()).unwrap(), peer(PRIMARY), now);
    let out = sent(&mut e);
    let lines: Vec<String> = out.iter().map(|(to, m)| format!("{to} {}", start_line(m))).collect();
    assert!(!out.iter().any(|(to, m)| to.to_string() == CALLER && m.method() == "UPDATE"), "relayed: {lines:?}");
    let (_, ok) = out
        .iter()
        .find(|(to, m)| to.to_string() == PRIMARY && m.status() == Some(200))
        .unwrap_or_else(|| panic!("no 200 to the far end: {lines:?}"));
    let answer_sdp = String::from_utf8_lossy(&ok.body);
    assert!(answer_sdp.contains("m=audio") && !answer_sdp.contains("127.0.0.9"), "sosdesk's own answer: {answer_sdp}");
}

#[test]
fn junk_is_answered_at_once_and_recorded_once_per_source_and_interval() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    let (a, b) = ("127.0.0.9:5060", "127.0.0.10:5060");
    for n in 0..500 {
        e.handle_message(invite(a, "4255550123", n), peer(a), t0 + Duration::from_millis(u64::from(n)));
        let out = sent(&mut e);
        assert_eq!(start_line(&out.last().unwrap().1), "SIP/2.0 404 Not Found", "each one answered at once");
    }
    assert_eq!(e.e.tx.active(), (0, 0), "refused without a transaction: junk holds no memory");
    // A retransmission gets the very same response (the To tag is derived from the request).
    e.handle_message(invite(a, "4255550123", 7), peer(a), t0 + Duration::from_millis(700));
    let again = sent(&mut e);
    e.handle_message(invite(a, "4255550123", 7), peer(a), t0 + Duration::from_millis(701));
    assert_eq!(again[0].1.to_bytes(), sent(&mut e)[0].1.to_bytes());
    e.handle_message(invite(b, "4255550123", 1000), peer(b), t0 + Duration::from_secs(1));
    let junk = parse_datagram(b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap_err();
    e.e.handle_rejection(junk, peer(b), t0 + Duration::from_secs(2));
    e.drain();
    assert!(e.events.is_empty() && e.audit_only.is_empty(), "no record per message: {:?}", e.events);
    // The interval ends 60 s after its first refusal: the engine asks to be woken then.
    assert_eq!(e.e.refused.deadline(), Some(t0.mono + Duration::from_secs(60)));
    assert!(e.e.next_timeout().is_some_and(|t| t <= t0.mono + Duration::from_secs(60)));
    e.handle_timeout(t0 + Duration::from_millis(59_999));
    e.drain();
    assert!(e.audit_only.is_empty());
    e.handle_timeout(t0 + Duration::from_secs(60));
    e.drain();
    let recs: Vec<_> = e.audit_only.drain(..).map(|ev| ev.kind).collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    let CallEventKind::Refused { source, count, reasons, .. } = &recs[0] else { panic!("{recs:?}") };
    assert_eq!((source.as_str(), *count), ("127.0.0.9", 502));
    assert_eq!(reasons["INVITE 404 not an emergency number"], 502);
    let CallEventKind::Refused { source, count, reasons, .. } = &recs[1] else { panic!("{recs:?}") };
    assert_eq!((source.as_str(), *count), ("127.0.0.10", 2));
    assert_eq!(reasons.keys().collect::<Vec<_>>(), ["INVITE 404 not an emergency number", "malformed (not answered)"]);
    assert!(e.events.is_empty(), "refusals never reach the desks");
    assert_eq!(e.e.refused.deadline(), None, "nothing left to record");
}

fn register(from: &str, n: u32) -> Message {
    let raw = format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKr{n}\r\n\
From: <sip:desk1@127.0.0.1>;tag=r{n}\r\nTo: <sip:desk1@127.0.0.1>\r\nCall-ID: reg-{n}\r\nCSeq: 1 REGISTER\r\n\
Contact: <sip:desk1@{from}>\r\nContent-Length: 0\r\n\r\n"
    );
    parse_datagram(raw.as_bytes()).unwrap()
}

#[test]
fn a_register_flood_turns_into_shedding_not_memory_and_options_hold_nothing() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    let options = parse_datagram(
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKo\r\nFrom: <sip:s@x>;tag=1\r\n\
To: <sip:127.0.0.1>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    e.handle_message(options, peer("127.0.0.9:5060"), t0);
    assert_eq!(start_line(&sent(&mut e)[0].1), "SIP/2.0 200 OK");
    assert_eq!(e.e.tx.active(), (0, 0), "OPTIONS answered without a transaction");
    let mut n = 0;
    while !e.e.overloaded() {
        e.handle_message(register("127.0.0.9:5060", n), peer("127.0.0.9:5060"), t0);
        n += 1;
    }
    assert_eq!(n as usize, super::MAX_SERVER_TRANSACTIONS + 1, "each challenged REGISTER holds a transaction");
    sent(&mut e);
    e.e.shed(register("127.0.0.9:5060", n), peer("127.0.0.9:5060"), t0);
    let out = sent(&mut e);
    assert_eq!(start_line(&out[0].1), "SIP/2.0 503 Service Unavailable");
    assert_eq!(out[0].1.header("Retry-After"), Some("10"));
    assert_eq!(e.e.tx.active().0, super::MAX_SERVER_TRANSACTIONS + 1, "shedding holds nothing");
    // Timer J (64 × T1 for UDP) ends the transactions: the core is no longer overloaded.
    e.handle_timeout(t0 + Duration::from_secs(40));
    assert!(!e.e.overloaded());
    let recs = e.e.refused.close(t0.wall);
    let CallEventKind::Refused { reasons, .. } = &recs[0].kind else { panic!() };
    assert_eq!(reasons.get("REGISTER 503 shed: core overloaded"), Some(&1), "{reasons:?}");
}

// ---------------------------------------------------------------- continuous retry (issue 19)

/// The lab's engine with a retry window of `secs`.
fn retrying_engine(secs: u64) -> Sim {
    engine(|c| c.replace("retry_for_s = 60", &format!("retry_for_s = {secs}")))
}

/// Answer `status` to every INVITE sosdesk sends to a route, at `now`, until it sends no more
/// (each failure brings the next route's INVITE). Returns what went to the caller meanwhile and
/// the routes' INVITEs, in order.
fn routes_answer(e: &mut Sim, status: u16, now: Now) -> (Vec<Message>, Vec<(SocketAddr, Message)>) {
    let (mut to_caller, mut invites) = (Vec::new(), Vec::new());
    let mut out = sent(e);
    while !out.is_empty() {
        let mut next = Vec::new();
        for (to, m) in out {
            if to == CALLER.parse::<SocketAddr>().unwrap() {
                to_caller.push(m);
            } else if m.is_request() && m.method() == "INVITE" {
                e.handle_message(answer(&m, status, "far", &to.to_string()), peer(&to.to_string()), now);
                next.extend(sent(e));
                invites.push((to, m));
            }
        }
        out = next;
    }
    (to_caller, invites)
}

fn statuses(msgs: &[Message]) -> Vec<u16> {
    msgs.iter().filter_map(Message::status).collect()
}

fn event_kinds(e: &mut Sim) -> Vec<CallEventKind> {
    std::iter::from_fn(|| e.poll_event()).map(|ev| ev.kind).collect()
}

#[test]
fn a_plan_whose_every_route_fails_is_retried_with_backoff_until_the_window_ends_then_503() {
    let mut e = retrying_engine(20);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let (to_caller, invites) = routes_answer(&mut e, 503, t0);
    assert_eq!(invites.iter().map(|(to, _)| to.to_string()).collect::<Vec<_>>(), [PRIMARY, SECONDARY]);
    // The caller's leg is kept: one 182 Queued (with our early dialog's tag and Contact), no
    // final response.
    assert_eq!(statuses(&to_caller), [100, 182]);
    let queued = &to_caller[1];
    assert_eq!(start_line(queued), "SIP/2.0 182 Queued");
    assert!(queued.to_tag().is_some() && queued.header("Contact").is_some());
    let names: Vec<_> = event_kinds(&mut e).iter().map(|k| k.name()).collect();
    assert_eq!(names, ["detected", "routed", "route-failed", "routed", "route-failed", "retrying"]);

    // Rounds start 1, 2, 4, 8 s after the previous one failed; the next wait (10 s) is cut short
    // to start a last round when the window closes at 20 s. Nothing is sent in between.
    let mut first_attempts = Vec::new();
    for (round, (start, wait_ms)) in
        [(1u64, 2000u64), (3, 4000), (7, 8000), (15, 5000), (20, 0)].into_iter().enumerate()
    {
        let round = round as u32 + 2;
        let before = t0 + Duration::from_millis(start * 1000 - 1);
        e.handle_timeout(before);
        assert!(sent(&mut e).is_empty(), "round {round} starts only after its backoff");
        let at = t0 + Duration::from_secs(start);
        e.handle_timeout(at);
        let (to_caller, invites) = routes_answer(&mut e, 503, at);
        assert_eq!(invites.iter().map(|(to, _)| to.to_string()).collect::<Vec<_>>(), [PRIMARY, SECONDARY]);
        first_attempts.push(invites[0].1.call_id().unwrap().to_string());
        let kinds = event_kinds(&mut e);
        assert!(
            matches!(
                &kinds[..4],
                [
                    CallEventKind::Routed,
                    CallEventKind::RouteFailed { .. },
                    CallEventKind::Routed,
                    CallEventKind::RouteFailed { .. }
                ]
            ),
            "every attempt of round {round} is audited: {kinds:?}"
        );
        if round < 6 {
            assert!(to_caller.is_empty(), "no second 182 and no final response in round {round}: {to_caller:?}");
            assert_eq!(kinds[4], CallEventKind::Retrying { round: round + 1, next_in_ms: wait_ms });
        } else {
            // The window is over and this round failed too: 503, as without retries.
            assert_eq!(statuses(&to_caller), [503]);
            assert!(to_caller[0].header("Warning").unwrap().contains("in each of 6 rounds (12 attempts over 20 s)"));
            assert!(matches!(&kinds[4], CallEventKind::Failed { status: 503, reason } if reason.contains("6 rounds")));
        }
    }
    // Each attempt is a new outbound call (its own Call-ID).
    first_attempts.sort();
    first_attempts.dedup();
    assert_eq!(first_attempts.len(), 5);
    assert_eq!(e.e.active_calls(), 0);
    assert_eq!(e.e.stats.failed, 1);
}

#[test]
fn with_a_zero_window_every_route_failing_is_503_at_once() {
    let mut e = retrying_engine(0);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let (to_caller, invites) = routes_answer(&mut e, 503, t0);
    assert_eq!(invites.len(), 2);
    assert_eq!(statuses(&to_caller), [100, 503]);
    assert!(to_caller[1].header("Warning").unwrap().contains("all 2 route(s) failed"));
    let names: Vec<_> = event_kinds(&mut e).iter().map(|k| k.name()).collect();
    assert_eq!(names, ["detected", "routed", "route-failed", "routed", "route-failed", "failed"]);
}

#[test]
fn a_cancel_while_waiting_for_the_next_round_ends_the_call_and_leaves_nothing_behind() {
    let mut e = retrying_engine(60);
    let t0 = Now::read();
    let inv = invite(CALLER, "911", 1);
    e.handle_message(inv.clone(), peer(CALLER), t0);
    let (to_caller, _) = routes_answer(&mut e, 503, t0);
    assert_eq!(statuses(&to_caller), [100, 182]);
    event_kinds(&mut e);

    // The caller gives up during the backoff: 200 to the CANCEL, 487 to the INVITE.
    e.handle_message(super::cancel_for(&inv), peer(CALLER), t0 + Duration::from_millis(500));
    let out = sent(&mut e);
    assert!(out.iter().all(|(to, _)| *to == CALLER.parse::<SocketAddr>().unwrap()), "nothing to the routes");
    assert_eq!(
        out.iter().map(|(_, m)| start_line(m)).collect::<Vec<_>>(),
        ["SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"]
    );
    let kinds = event_kinds(&mut e);
    assert!(matches!(&kinds[..], [CallEventKind::Ended { by, .. }] if by == "cancel"), "{kinds:?}");
    assert_eq!(e.e.active_calls(), 0);

    // The retry and the 182 timers come and find nothing to do.
    for s in [1, 2, 60, 61, 120] {
        e.handle_timeout(t0 + Duration::from_secs(s));
        let out = sent(&mut e);
        assert!(
            out.iter().all(|(to, m)| *to == CALLER.parse::<SocketAddr>().unwrap() && m.status() == Some(487)),
            "at {s} s only the 487's own retransmissions: {out:?}"
        );
        assert!(event_kinds(&mut e).is_empty());
    }
    // Nothing leaks: no timer, index or transaction is kept for the call.
    let c = &e.e.calls;
    assert!(c.timers.is_empty(), "{:?}", c.timers);
    assert!(c.live.is_empty() && c.by_call_id.is_empty() && c.server_txn.is_empty() && c.client_txn.is_empty());
}

#[test]
fn a_route_that_comes_back_during_the_window_carries_the_call() {
    let mut e = retrying_engine(60);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    // Round 1: the primary rings, then fails; so does the secondary (without ringing).
    let first = sent(&mut e).remove(1).1;
    e.handle_message(answer(&first, 180, "r1", PRIMARY), peer(PRIMARY), t0);
    e.handle_message(answer(&first, 503, "r1", PRIMARY), peer(PRIMARY), t0);
    let (to_caller, _) = routes_answer(&mut e, 503, t0);
    assert_eq!(statuses(&to_caller), [180, 182]);
    let names: Vec<_> = event_kinds(&mut e).iter().map(|k| k.name()).collect();
    assert_eq!(names, ["detected", "routed", "ringing", "route-failed", "routed", "route-failed", "retrying"]);

    // Round 2, 1 s later: the primary is back; it rings (audited again: a new round), then
    // answers.
    let t1 = t0 + Duration::from_secs(1);
    e.handle_timeout(t1);
    let out = sent(&mut e);
    let (to, retry_invite) = out.iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").cloned().unwrap();
    assert_eq!(to.to_string(), PRIMARY);
    e.handle_message(answer(&retry_invite, 180, "back", PRIMARY), peer(PRIMARY), t1);
    e.handle_message(answer(&retry_invite, 200, "back", PRIMARY), peer(PRIMARY), t1 + Duration::from_millis(300));
    let out = sent(&mut e);
    let to_caller: Vec<_> =
        out.iter().filter(|(to, _)| *to == CALLER.parse::<SocketAddr>().unwrap()).map(|(_, m)| m.clone()).collect();
    assert_eq!(statuses(&to_caller), [180, 200], "the route's responses relayed to the held caller");
    assert!(out.iter().any(|(to, m)| to.to_string() == PRIMARY && m.method() == "ACK"));
    let evs: Vec<CallEvent> = std::iter::from_fn(|| e.poll_event()).collect();
    let names: Vec<_> = evs.iter().map(|ev| ev.kind.name()).collect();
    assert_eq!(names, ["routed", "ringing", "answered"]);
    let route = evs[0].route.as_ref().unwrap();
    assert_eq!((route.name.as_str(), route.attempt), ("provider-primary", 2), "attempts are counted on across rounds");

    // Answered: no more rounds and no more 182s; the call stays up.
    for s in [2, 3, 61, 62, 121] {
        e.handle_timeout(t0 + Duration::from_secs(s));
        let out = sent(&mut e);
        // (The 200 is retransmitted to a caller that sends no ACK here.)
        assert!(out.iter().all(|(_, m)| !m.is_request() && m.status() == Some(200)), "at {s} s: {out:?}");
    }
    assert!(event_kinds(&mut e).is_empty());
    assert_eq!(e.e.active_calls(), 1);
}

#[test]
fn a_held_caller_gets_a_provisional_at_least_every_minute() {
    // Routes that never answer: each round takes 2 × 2 s of route timeouts plus the backoff.
    let mut e = retrying_engine(150);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let mut queued_at = Vec::new();
    let mut final_at = None;
    for ms in (0..=200_000u64).step_by(100) {
        let now = t0 + Duration::from_millis(ms);
        e.handle_timeout(now);
        for (to, m) in sent(&mut e) {
            if to == CALLER.parse::<SocketAddr>().unwrap() {
                match m.status() {
                    Some(182) => queued_at.push(ms),
                    Some(s) if s >= 200 => final_at = final_at.or(Some((ms, s))),
                    _ => {}
                }
            }
        }
    }
    // First 182 when the first round failed (4 s), then every 60 s.
    assert_eq!(queued_at, [4_000, 64_000, 124_000]);
    // The last round may start at 150 s at the latest; it fails 4 s later.
    let (at, status) = final_at.expect("a final response");
    assert_eq!(status, 503);
    assert!((150_000..=154_000).contains(&at), "given up at {at} ms");
}

#[test]
fn a_route_timer_of_an_earlier_round_does_not_cut_a_later_attempt_short() {
    let mut e = retrying_engine(60);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    // Round 1 fails at once; its route timers (due at 2 s) stay in the set.
    routes_answer(&mut e, 503, t0);
    // Round 2 at 1 s: the primary is silent this time.
    e.handle_timeout(t0 + Duration::from_secs(1));
    assert!(sent(&mut e).iter().any(|(to, m)| to.to_string() == PRIMARY && m.method() == "INVITE"));
    // At 2 s round 1's timer for attempt 0 fires: round 2's attempt (2) is not failed by it.
    e.handle_timeout(t0 + Duration::from_secs(2));
    assert!(sent(&mut e).iter().all(|(to, _)| to.to_string() != SECONDARY));
    // Its own timer, 2 s after it was sent, fails it over.
    e.handle_timeout(t0 + Duration::from_millis(2999));
    assert!(sent(&mut e).iter().all(|(to, _)| to.to_string() != SECONDARY));
    e.handle_timeout(t0 + Duration::from_secs(3));
    assert!(sent(&mut e).iter().any(|(to, m)| to.to_string() == SECONDARY && m.method() == "INVITE"));
}

#[test]
fn a_relayed_180_counts_as_the_minutes_provisional() {
    let mut e = retrying_engine(300);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let (to_caller, _) = routes_answer(&mut e, 503, t0);
    assert_eq!(statuses(&to_caller), [100, 182]);
    // Round 2: the primary rings at 1 s and keeps ringing (a PSAP slow to pick up).
    e.handle_timeout(t0 + Duration::from_secs(1));
    let invite_out = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
    e.handle_message(answer(&invite_out, 180, "slow", PRIMARY), peer(PRIMARY), t0 + Duration::from_secs(1));
    assert_eq!(statuses(&sent(&mut e).into_iter().map(|(_, m)| m).collect::<Vec<_>>()), [180]);
    let to_caller_at = |e: &mut Sim, s: u64| {
        e.handle_timeout(t0 + Duration::from_secs(s));
        sent(e)
            .into_iter()
            .filter(|(to, _)| to.to_string() == CALLER)
            .filter_map(|(_, m)| m.status())
            .collect::<Vec<_>>()
    };
    // A minute after the 182 the caller has had the 180 for 59 s only: nothing yet.
    assert!(to_caller_at(&mut e, 60).is_empty());
    // A minute after the 180: 182 again.
    assert_eq!(to_caller_at(&mut e, 61), [182]);
    assert!(to_caller_at(&mut e, 120).is_empty());
    assert_eq!(to_caller_at(&mut e, 121), [182]);
}

#[test]
fn what_comes_after_the_end_is_numbered_by_the_engine_in_the_calls_sequence() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let cancel = parse_datagram(
        format!(
            "CANCEL sip:911@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKc1\r\n\
From: \"Caller\" <sip:1001@{CALLER}>;tag=ct1\r\nTo: <sip:911@127.0.0.1:5060>\r\nCall-ID: call-1\r\nCSeq: 1 CANCEL\r\n\
Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    e.handle_message(cancel, peer(CALLER), t0 + Duration::from_millis(10));
    let events: Vec<CallEvent> = std::iter::from_fn(|| e.poll_event()).collect();
    let last = events.last().expect("events");
    assert!(matches!(last.kind, CallEventKind::Ended { .. }), "{events:?}");
    assert_eq!(e.e.active_calls(), 0, "the call is over");
    // The recording finishing, an officer acknowledging: numbered after the end, no audit read.
    let ack = CallEventKind::Acknowledged { by: "Officer".into(), desk: String::new() };
    let ev = e.e.annotate(&last.call_id, ack, t0 + Duration::from_secs(1)).expect("an ended call is kept a while");
    assert_eq!((ev.call_id.as_str(), ev.seq), (last.call_id.as_str(), last.seq + 1));
    assert_eq!(ev.caller, last.caller, "with the call's picture");
    let again = e.e.annotate(&last.call_id, CallEventKind::Answered, t0 + Duration::from_secs(2)).unwrap();
    assert_eq!(again.seq, last.seq + 2);
    // Five minutes on, it is no longer kept: the shell numbers from the audit log.
    e.handle_timeout(t0 + super::call::RECENT_FOR + Duration::from_secs(1));
    assert!(e.e.annotate(&last.call_id, CallEventKind::Answered, t0 + Duration::from_secs(400)).is_none());
}

/// A desk phone called in by the policy (`conference_uri`) that has said nothing when the call
/// ends gets no CANCEL then (RFC 3261 §9.1 forbids one before a provisional response), but one
/// as soon as it rings; a 200 it sends anyway is ACKed and ended with a BYE. (Found with a
/// baresip desk that came up late: sosdesk CANCELled at once, then left its 200 unanswered.)
#[test]
fn a_called_desk_that_said_nothing_is_cancelled_once_it_rings_and_its_late_answer_is_acked_and_ended() {
    let mut e = engine(|c| {
        c.replacen(
            "conference_mode = \"two-way\"",
            "conference_mode = \"two-way\"\nconference_uri = \"sip:desk@127.0.0.1:5090\"",
            1,
        )
    });
    e.anchor(43000, 43999);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let out = sent(&mut e);
    let (_, outbound) = out.iter().find(|(to, m)| to.to_string() == PRIMARY && m.method() == "INVITE").unwrap();
    let (_, desk_invite) = out.iter().find(|(to, m)| to.port() == 5090 && m.method() == "INVITE").expect("desk called");
    let desk_invite = desk_invite.clone();
    // The provider answers; the caller hangs up while the desk phone has said nothing.
    e.handle_message(answer(outbound, 200, "far1", PRIMARY), peer(PRIMARY), t0);
    sent(&mut e);
    // The caller's BYE, with the To tag sosdesk gave it.
    let tag = e.e.calls.live.values().next().and_then(|c| c.a.local.split("tag=").nth(1).map(str::to_string));
    let raw = format!(
        "BYE sip:911@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye1\r\nFrom: \"Caller\" <sip:1001@{CALLER}>;tag=ct1\r\n\
To: <sip:911@127.0.0.1:5060>;tag={}\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        tag.expect("the call is live")
    );
    let bye = parse_datagram(raw.as_bytes()).unwrap();
    e.handle_message(bye, peer(CALLER), t0 + Duration::from_millis(300));
    let out = sent(&mut e);
    let to_desk: Vec<String> = out.iter().filter(|(to, _)| to.port() == 5090).map(|(_, m)| start_line(m)).collect();
    assert!(to_desk.is_empty(), "no CANCEL (nor anything else) to a desk that said nothing: {to_desk:?}");
    // It rings at last: CANCELled now (once, whatever provisionals follow).
    e.handle_message(
        answer(&desk_invite, 180, "desk1", "127.0.0.1:5090"),
        peer("127.0.0.1:5090"),
        t0 + Duration::from_secs(1),
    );
    let out = sent(&mut e);
    let to_desk: Vec<String> = out.iter().filter(|(to, _)| to.port() == 5090).map(|(_, m)| start_line(m)).collect();
    assert_eq!(to_desk, ["CANCEL sip:desk@127.0.0.1:5090 SIP/2.0"], "{to_desk:?}");
    e.handle_message(
        answer(&desk_invite, 183, "desk1", "127.0.0.1:5090"),
        peer("127.0.0.1:5090"),
        t0 + Duration::from_secs(1),
    );
    assert!(sent(&mut e).iter().all(|(to, m)| to.port() != 5090 || m.method() != "CANCEL"), "one CANCEL");
    // A 200 crossing the CANCEL: ACKed, then hung up.
    let late = answer(&desk_invite, 200, "desk1", "127.0.0.1:5090");
    e.handle_message(late, peer("127.0.0.1:5090"), t0 + Duration::from_secs(2));
    let out = sent(&mut e);
    let to_desk: Vec<String> =
        out.iter().filter(|(to, m)| to.port() == 5090 && m.is_request()).map(|(_, m)| start_line(m)).collect();
    assert_eq!(to_desk.len(), 2, "{to_desk:?}");
    assert!(to_desk[0].starts_with("ACK sip:psap@127.0.0.1:5090") && to_desk[1].starts_with("BYE "), "{to_desk:?}");
}

/// The lab with its primary route given by name (RFC 3263), resolved by the I/O shell.
fn named_primary() -> Sim {
    engine(|c| c.replace("address = \"127.0.0.1:5070\"", "address = \"sbc.provider.example\""))
}

#[test]
fn a_named_route_tries_each_resolved_target_before_the_next_route_and_a_refusal_skips_the_rest() {
    let mut e = named_primary();
    let names = e.e.names_to_resolve();
    assert_eq!(names.iter().map(|t| t.to_string()).collect::<Vec<_>>(), ["sip:sbc.provider.example;transport=udp"]);
    let target = names[0].clone();
    let t0 = Now::read();
    let (a, b, c) = ("127.0.0.1:5072", "127.0.0.1:5073", "127.0.0.1:5074");
    e.e.on_resolved(&target, Ok(vec![peer(a), peer(b), peer(c)]), t0);

    // The first target is silent for the route timeout: the second target of the same route.
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let out = sent(&mut e);
    assert_eq!(out[1].0, a.parse::<SocketAddr>().unwrap());
    assert!(
        start_line(&out[1].1).contains("@127.0.0.1:5070"),
        "the Request-URI keeps the route's domain: {}",
        start_line(&out[1].1)
    );
    e.handle_timeout(t0 + Duration::from_millis(2000));
    // (Timer A's last retransmissions to the first target go out at the same moment.)
    let out = sent(&mut e);
    let (to, invite_b) = out.last().unwrap().clone();
    assert_eq!(to.to_string(), b);
    // A 503 from it: its trouble, so the third target.
    e.handle_message(answer(&invite_b, 503, "b", b), peer(b), t0 + Duration::from_millis(2100));
    let out = sent(&mut e);
    assert_eq!(
        out.iter()
            .filter(|(_, m)| start_line(m).starts_with("INVITE "))
            .map(|(to, _)| to.to_string())
            .collect::<Vec<_>>(),
        [c]
    );
    // A 404 from the third is the provider's answer: no target left anyway, the next route.
    let invite_c = out.iter().find(|(_, m)| start_line(m).starts_with("INVITE ")).unwrap().1.clone();
    e.handle_message(answer(&invite_c, 404, "c", c), peer(c), t0 + Duration::from_millis(2200));
    let out = sent(&mut e);
    assert!(out
        .iter()
        .any(|(to, m)| *to == SECONDARY.parse::<SocketAddr>().unwrap() && start_line(m).starts_with("INVITE ")));
}

#[test]
fn a_refusal_from_one_target_goes_to_the_next_route_not_the_next_target() {
    let mut e = named_primary();
    let target = e.e.names_to_resolve()[0].clone();
    let t0 = Now::read();
    let (a, b) = ("127.0.0.1:5072", "127.0.0.1:5073");
    e.e.on_resolved(&target, Ok(vec![peer(a), peer(b)]), t0);
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let out = sent(&mut e);
    e.handle_message(answer(&out[1].1, 403, "a", a), peer(a), t0 + Duration::from_millis(10));
    let invites: Vec<String> = sent(&mut e)
        .into_iter()
        .filter(|(_, m)| start_line(m).starts_with("INVITE "))
        .map(|(to, _)| to.to_string())
        .collect();
    assert_eq!(invites, [SECONDARY]);
}

#[test]
fn a_route_whose_name_never_resolved_fails_over_at_once_saying_why_and_a_failed_refresh_keeps_the_last_answer() {
    let mut e = named_primary();
    let target = e.e.names_to_resolve()[0].clone();
    let t0 = Now::read();
    e.e.on_resolved(&target, Err("SRV _sip._udp.sbc.provider.example: request timed out".into()), t0);
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    let out = sent(&mut e);
    assert_eq!(out[1].0, SECONDARY.parse::<SocketAddr>().unwrap(), "no wait for DNS: the next route at once");
    let failed = std::iter::from_fn(|| e.poll_event())
        .find_map(|ev| match ev.kind {
            CallEventKind::RouteFailed { reason } => Some(reason),
            _ => None,
        })
        .unwrap();
    assert!(failed.contains("provider-primary") && failed.contains("request timed out"), "{failed}");

    // Resolved, then a refresh fails: the last answer stays in use.
    let a = "127.0.0.1:5072";
    e.e.on_resolved(&target, Ok(vec![peer(a)]), t0);
    e.e.on_resolved(&target, Err("no answer".into()), t0);
    e.handle_message(invite(CALLER, "911", 2), peer(CALLER), t0);
    assert!(sent(&mut e).iter().any(|(to, m)| to.to_string() == a && start_line(m).starts_with("INVITE ")));
}

#[test]
fn a_reload_moves_new_calls_while_a_live_call_keeps_its_plan() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    e.handle_message(invite(CALLER, "911", 1), peer(CALLER), t0);
    assert_eq!(sent(&mut e)[1].0, PRIMARY.parse::<SocketAddr>().unwrap());

    // The primary provider moves: a changed route, a new one under the same name.
    let moved = "127.0.0.1:5072";
    let text = include_str!("../../../examples/lab.toml")
        .replace("path = \"../sosdesk-lab.db\"", "path = \"x.db\"")
        .replace("address = \"127.0.0.1:5070\"", &format!("address = \"{moved}\""));
    let cfg = Config::from_toml(&text, std::path::Path::new("lab.toml")).unwrap();
    let done = e.e.reconfigure(&cfg, t0);
    assert_eq!(
        (done.added, done.retired),
        (vec!["provider-primary".to_string()], vec!["provider-primary".to_string()])
    );
    let names: Vec<String> = e.e.route_health().into_iter().map(|r| r.route).collect();
    assert_eq!(names, ["provider-secondary", "elin-gateway", "provider-primary"], "the retired route is not reported");

    e.handle_message(invite(CALLER, "911", 2), peer(CALLER), t0);
    assert_eq!(sent(&mut e)[1].0, moved.parse::<SocketAddr>().unwrap(), "a new call takes the new route");
    // The live call's INVITE is still retransmitted to the route it started with, and on its
    // timeout it fails over along its own plan.
    e.handle_timeout(t0 + Duration::from_millis(1999));
    let to: Vec<SocketAddr> = sent(&mut e).into_iter().map(|(to, _)| to).collect();
    assert!(to.contains(&PRIMARY.parse().unwrap()) && to.contains(&moved.parse().unwrap()), "{to:?}");
    e.handle_timeout(t0 + Duration::from_millis(2000));
    let to: Vec<SocketAddr> = sent(&mut e).into_iter().map(|(to, _)| to).collect();
    assert_eq!(to, vec![SECONDARY.parse::<SocketAddr>().unwrap(); 2], "both calls go on to the secondary");
}

/// Review finding: a PSAP that hangs up while its callback waits for the store's look-up gets
/// its 487 at once, and the caller is never rung when the answer comes.
#[test]
fn a_callback_cancelled_while_waiting_for_the_store_is_never_rung() {
    let t0 = Now::read();
    let mut b = engine(|c| c);
    b.e.share_through_store();
    let psap = "127.0.0.1:5080";
    let inv = invite(psap, "4255550199", 6);
    b.handle_message(inv.clone(), peer(psap), t0);
    sent(&mut b);
    assert!(matches!(b.store_io.pop_front(), Some(Output::LookupElin(_))));
    b.handle_message(super::cancel_for(&inv), peer(psap), t0 + Duration::from_millis(300));
    let statuses: Vec<Option<u16>> = sent(&mut b).iter().map(|o| o.1.status()).collect();
    assert!(statuses.contains(&Some(200)) && statuses.contains(&Some(487)), "{statuses:?}");
    b.e.on_elin_found("4255550199", None, t0 + Duration::from_millis(400));
    let invites = sent(&mut b).into_iter().filter(|o| o.1.is_request() && o.1.method() == "INVITE").count();
    assert_eq!(invites, 0, "nobody is rung for a callback the PSAP gave up");
}

// ---------------------------------------------------------------- nothing kept per call

/// What the engine holds, table by table: after every call has ended and every window closed,
/// all of it is empty (a long-running core must not grow by what each call leaves behind).
fn held(e: &Sim) -> Vec<(&'static str, usize)> {
    let c = &e.e.calls;
    vec![
        ("live calls", c.live.len()),
        ("calls by Call-ID", c.by_call_id.len()),
        ("server transactions of calls", c.server_txn.len()),
        ("client transactions of calls", c.client_txn.len()),
        ("call timers", c.timers.len()),
        ("abandoned legs", c.abandoned.len() + c.abandoned_order.len()),
        ("calls ended lately", c.recent.len() + c.recent_order.len()),
        ("CANCELs waiting", c.cancel_on_provisional.len()),
        ("transactions", e.e.tx.active().0 + e.e.tx.active().1),
    ]
}

/// A request from the caller inside call `n`'s dialog (`tag`: sosdesk's To tag).
fn from_caller(method: &str, cseq: u32, branch: &str, n: u32, tag: &str) -> Message {
    let to_tag = if tag.is_empty() { String::new() } else { format!(";tag={tag}") };
    parse_datagram(
        format!(
            "{method} sip:sosdesk@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\n\
From: \"Caller\" <sip:1001@{CALLER}>;tag=ct{n}\r\nTo: <sip:933@127.0.0.1:5060>{to_tag}\r\nCall-ID: call-{n}\r\n\
CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap()
}

/// The provider's BYE inside the dialog of sosdesk's `invite` to it.
fn from_provider_bye(invite: &Message, n: u32) -> Message {
    let (from, to) = (invite.header("From").unwrap(), invite.header("To").unwrap());
    parse_datagram(
        format!(
            "BYE sip:sosdesk@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PRIMARY};branch=z9hG4bKpbye{n}\r\n\
From: {to};tag=psap\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            invite.call_id().unwrap()
        )
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn calls_ended_every_way_leave_nothing_behind_once_their_windows_close() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    let caller: SocketAddr = CALLER.parse().unwrap();
    for n in 0..6u32 {
        let t = t0 + Duration::from_secs(n as u64);
        e.handle_message(invite(CALLER, "933", 100 + n), peer(CALLER), t);
        let out = sent(&mut e);
        let out_invite = out.into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
        let first_branch = format!("z9hG4bKc{}", 100 + n);
        if n % 3 == 2 {
            // The provider rings, then the caller gives up (CANCEL): 487 both ways, ACKed.
            e.handle_message(answer(&out_invite, 180, "psap", PRIMARY), peer(PRIMARY), t);
            sent(&mut e);
            e.handle_message(from_caller("CANCEL", 1, &first_branch, 100 + n, ""), peer(CALLER), t);
            let out = sent(&mut e);
            let cancel = out.iter().find(|(_, m)| m.is_request() && m.method() == "CANCEL").unwrap().1.clone();
            let ours = out.iter().find(|(to, m)| *to == caller && m.status() == Some(487)).unwrap().1.clone();
            e.handle_message(answer(&cancel, 200, "psap", PRIMARY), peer(PRIMARY), t);
            e.handle_message(answer(&out_invite, 487, "psap", PRIMARY), peer(PRIMARY), t);
            let ack = from_caller("ACK", 1, &first_branch, 100 + n, &ours.to_tag().unwrap());
            e.handle_message(ack, peer(CALLER), t);
            sent(&mut e);
            continue;
        }
        e.handle_message(answer(&out_invite, 200, "psap", PRIMARY), peer(PRIMARY), t);
        let ok = sent(&mut e).into_iter().find(|(to, _)| *to == caller).unwrap().1;
        let tag = ok.to_tag().unwrap();
        e.handle_message(from_caller("ACK", 1, &format!("z9hG4bKack{n}"), 100 + n, &tag), peer(CALLER), t);
        let later = t + Duration::from_millis(300);
        if n % 3 == 0 {
            // The caller hangs up: the BYE goes on to the provider, whose 200 comes back.
            e.handle_message(from_caller("BYE", 2, &format!("z9hG4bKbye{n}"), 100 + n, &tag), peer(CALLER), later);
            let bye = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "BYE").unwrap().1;
            e.handle_message(answer(&bye, 200, "psap", PRIMARY), peer(PRIMARY), later);
        } else {
            // The provider hangs up: the BYE goes on to the caller, whose 200 comes back.
            e.handle_message(from_provider_bye(&out_invite, n), peer(PRIMARY), later);
            let bye = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "BYE").unwrap().1;
            e.handle_message(bye.response(200, "OK", None), peer(CALLER), later);
        }
        sent(&mut e);
    }
    // Every window over: the transactions' timers (Timer J/K, 32 s), ended calls (5 min).
    let mut t = t0;
    for _ in 0..40 {
        t = t + Duration::from_secs(10);
        e.handle_timeout(t);
        sent(&mut e);
    }
    let left: Vec<_> = held(&e).into_iter().filter(|(_, n)| *n > 0).collect();
    assert!(left.is_empty(), "kept after every call ended: {left:?}");
}

#[test]
fn a_closed_connection_fails_over_what_waits_on_it_and_sends_the_callers_requests_to_its_contact() {
    let mut e = engine(|c| c);
    let t0 = Now::read();
    let at = |t: Transport, a: &str| Peer { transport: t, addr: a.parse().unwrap() };
    // Two callers over TLS from ephemeral ports (their Contact: 127.0.0.1:5062, no transport).
    let (one, two) = (at(Transport::Tls, "127.0.0.1:40001"), at(Transport::Tls, "127.0.0.1:40002"));
    e.handle_message(invite(CALLER, "933", 1), one, t0);
    let first = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
    e.handle_message(answer(&first, 200, "psap", PRIMARY), peer(PRIMARY), t0);
    let ok = sent(&mut e).into_iter().find(|(_, m)| m.status() == Some(200)).unwrap().1;
    e.handle_message(from_caller("ACK", 1, "z9hG4bKack1", 1, &ok.to_tag().unwrap()), one, t0);
    e.handle_message(invite(CALLER, "933", 2), two, t0);
    let second = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
    e.handle_message(answer(&second, 100, "", PRIMARY), peer(PRIMARY), t0);
    sent(&mut e);

    // The provider's connection closes: the answered call stays; the one with only a 100 is
    // cancelled there (§9.1) and goes to the secondary at once.
    e.e.handle_connection_closed(peer(PRIMARY), false, t0);
    let out = sent(&mut e);
    let lines: Vec<(SocketAddr, String)> = out.iter().map(|(to, m)| (*to, start_line(m))).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0].0, out[0].1.call_id()), (PRIMARY.parse().unwrap(), second.call_id()));
    assert!(lines[0].1.starts_with("CANCEL "), "{lines:?}");
    assert!(lines[1].1.starts_with("INVITE ") && lines[1].0 == SECONDARY.parse().unwrap(), "{lines:?}");
    e.drain();
    let failed: Vec<_> =
        e.events.iter().filter(|ev| ev.kind.name() == "route-failed").map(|ev| ev.call_id.clone()).collect();
    assert_eq!(failed.len(), 1, "only the call still waiting failed over");

    // A connection sosdesk opened to the caller's address (not the caller's) changes nothing.
    e.e.handle_connection_closed(one, false, t0);
    e.handle_message(from_provider_bye(&first, 1), peer(PRIMARY), t0);
    e.drain();
    let bye = e.transmits.iter().find(|t| t.bytes.starts_with(b"BYE ")).expect("the BYE to the caller");
    assert_eq!(bye.peer, one);
    e.transmits.clear();

    // The caller's own connection closes (it had opened it): its requests go to its Contact's
    // port, still over TLS (the Contact names no transport: never in clear after TLS).
    e.handle_message(invite(CALLER, "933", 3), one, t0);
    let third = sent(&mut e).into_iter().find(|(_, m)| m.is_request() && m.method() == "INVITE").unwrap().1;
    e.handle_message(answer(&third, 200, "psap", PRIMARY), peer(PRIMARY), t0);
    let ok = sent(&mut e).into_iter().find(|(_, m)| m.status() == Some(200)).unwrap().1;
    e.handle_message(from_caller("ACK", 1, "z9hG4bKack3", 3, &ok.to_tag().unwrap()), one, t0);
    e.e.handle_connection_closed(one, true, t0);
    e.handle_message(from_provider_bye(&third, 3), peer(PRIMARY), t0);
    e.drain();
    let bye = e.transmits.iter().find(|t| t.bytes.starts_with(b"BYE ")).expect("the BYE to the caller");
    assert_eq!(bye.peer, at(Transport::Tls, CALLER));
}
