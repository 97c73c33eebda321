//! The notifier driven by hand: attempts, retries with backoff, giving up, group expansion.

use std::time::{Duration, Instant};

use super::*;
use crate::events::{Caller, CALL_EVENT_VERSION};
use crate::location::{CivicAddress, Erl, LocationSnapshot, LocationSource};
use crate::sip::transaction::Timers;

struct Ctx {
    contacts: Vec<Contact>,
}

impl NotifyContext for Ctx {
    fn contacts_of(&self, user_or_group: &str) -> Vec<Contact> {
        if user_or_group == "security" {
            self.contacts.clone()
        } else {
            Vec::new()
        }
    }
    fn via(&self, t: Transport, branch: &str) -> String {
        format!("SIP/2.0/{} 127.0.0.1:5060;branch={branch}", t.as_str())
    }
    fn host(&self) -> &str {
        "127.0.0.1"
    }
    fn resolved(&self, _: &crate::sip::rfc3263::SipTarget, _: u32) -> Option<Peer> {
        None
    }
}

/// A context where every name resolved to two servers (RFC 3263 order), as the engine gives
/// them per attempt.
struct TwoServers([Peer; 2]);

impl NotifyContext for TwoServers {
    fn contacts_of(&self, _: &str) -> Vec<Contact> {
        Vec::new()
    }
    fn via(&self, t: Transport, branch: &str) -> String {
        format!("SIP/2.0/{} 127.0.0.1:5060;branch={branch}", t.as_str())
    }
    fn host(&self) -> &str {
        "127.0.0.1"
    }
    fn resolved(&self, _: &crate::sip::rfc3263::SipTarget, attempt: u32) -> Option<Peer> {
        Some(self.0[(attempt as usize - 1) % 2])
    }
}

fn event(test: bool) -> CallEvent {
    CallEvent {
        version: CALL_EVENT_VERSION,
        call_id: "call-1".into(),
        seq: 1,
        at: chrono::Utc::now(),
        caller: Caller {
            number: "+14255550123".into(),
            display_name: Some("Alice\r\nLocation: fake".into()),
            uri: "sip:alice@pbx".into(),
            source: "udp:127.0.0.1:5062".into(),
        },
        dialed: if test { "933".into() } else { "9911".into() },
        normalized: if test { "933".into() } else { "911".into() },
        test_call: test,
        policy: "us-hq".into(),
        site: Some("hq".into()),
        location: LocationSnapshot {
            source: LocationSource::SiteDefault,
            erl: Some(Erl {
                label: "HQ, 2nd floor, room 210".into(),
                civic: CivicAddress {
                    country: Some("US".into()),
                    a1: Some("WA".into()),
                    a3: Some("Redmond".into()),
                    rd: Some("Microsoft Way".into()),
                    hno: Some("1".into()),
                    pc: Some("98052".into()),
                    flr: Some("2".into()),
                    room: Some("210".into()),
                    ..Default::default()
                },
                ..Default::default()
            }),
            geo: None,
            site_map: None,
            method: None,
            warnings: vec![],
        },
        route: None,
        kind: CallEventKind::Detected,
    }
}

fn remote() -> (String, Target) {
    let uri = "sip:guard@127.0.0.1:5090".to_string();
    (uri.clone(), Target::parse(&uri, "127.0.0.1", &[5060]).unwrap())
}

fn setup() -> (Notifier, Transactions, Instant) {
    let timing = NotifyTiming { attempt_timeout: Duration::from_secs(2), retry_for: Duration::from_secs(20) };
    (Notifier::new(timing), Transactions::new(Timers::default()), Instant::now())
}

fn sent(tx: &mut Transactions) -> Vec<Message> {
    sent_over(tx).into_iter().map(|(_, _, m)| m).collect()
}

/// What was sent, with where to and how many bytes.
fn sent_over(tx: &mut Transactions) -> Vec<(Peer, usize, Message)> {
    let mut out = Vec::new();
    while let Some(t) = tx.poll_transmit() {
        let m = crate::sip::parse::parse_datagram(&t.bytes).expect("our own MESSAGE parses");
        out.push((t.peer, t.bytes.len(), m));
    }
    out
}

/// A notifier that has just made its first attempt to `remote()`, over TCP (the test's MESSAGE
/// is over 1300 bytes): the notifier, the transactions, the start, the context, and where it went
/// and what.
fn first_attempt() -> (Notifier, Transactions, Instant, Ctx, Peer, Message) {
    let (mut n, mut tx, t0) = setup();
    let ctx = Ctx { contacts: vec![] };
    n.notify(&event(false), &[remote()], &ctx, &mut tx, t0);
    let (peer, _, m) = sent_over(&mut tx).pop().expect("the first attempt");
    assert_eq!(peer.transport, Transport::Tcp);
    (n, tx, t0, ctx, peer, m)
}

/// The test's MESSAGE is over 1300 bytes, so it goes over TCP and the audit detail says
/// " over TCP (N bytes)": `detail` without that note, which it must have.
fn over_tcp(detail: &str) -> String {
    let start = detail.find(" over TCP (").unwrap_or_else(|| panic!("not over TCP: {detail:?}"));
    let end = start + detail[start..].find(" bytes)").unwrap() + " bytes)".len();
    format!("{}{}", &detail[..start], &detail[end..])
}

fn respond(n: &mut Notifier, tx: &mut Transactions, m: &Message, status: u16, now: Instant) {
    respond_accepting(n, tx, m, status, None, now)
}

fn respond_accepting(
    n: &mut Notifier,
    tx: &mut Transactions,
    m: &Message,
    status: u16,
    accept: Option<&str>,
    now: Instant,
) {
    let mut r = m.response(status, crate::sip::reason_phrase(status), Some("x"));
    if let Some(a) = accept {
        r.push("Accept", a);
    }
    if let Ok(Some(crate::sip::transaction::ClientEvent::Response { key, msg, .. })) = tx.on_response(r, now) {
        n.on_response(&key, msg.status().unwrap(), crate::sip::reason_phrase(status), msg.header("Accept"), now);
    }
}

fn notified(o: &Outcome) -> (&str, bool, &str) {
    match &o.kind {
        CallEventKind::Notified { uri, ok, detail } => (uri.as_str(), *ok, detail.as_str()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn targets_local_and_remote() {
    assert_eq!(Target::parse("sip:security@127.0.0.1", "127.0.0.1", &[5060]), Ok(Target::Local("security".into())));
    assert_eq!(
        Target::parse("sip:security@127.0.0.1:5060", "127.0.0.1", &[5060]),
        Ok(Target::Local("security".into()))
    );
    assert!(matches!(Target::parse("sip:guard@127.0.0.1:5090", "127.0.0.1", &[5060]), Ok(Target::Remote { .. })));
    // A name is resolved ahead of need by the I/O shell (RFC 3263), never on the way.
    assert!(matches!(Target::parse("sip:guard@pbx.example.com", "127.0.0.1", &[5060]), Ok(Target::Named { .. })));
    assert!(Target::parse("sip:guard@pbx..example.com", "127.0.0.1", &[5060]).is_err());
    assert!(Target::parse("tel:+14255550100", "127.0.0.1", &[5060]).is_err());
    assert!(Target::parse("sip:127.0.0.1", "127.0.0.1", &[5060]).is_err(), "the core itself, no user");
}

#[test]
fn message_carries_text_and_event() {
    let (mut n, mut tx, now) = setup();
    let ev = event(false);
    n.notify(&ev, &[remote()], &Ctx { contacts: vec![] }, &mut tx, now);
    let m = sent(&mut tx).pop().expect("a MESSAGE");
    assert_eq!(m.method(), "MESSAGE");
    assert_eq!(m.request_uri(), Some("sip:guard@127.0.0.1:5090"));
    assert_eq!(m.header("Priority"), Some("emergency"));
    let ct = m.header("Content-Type").unwrap().to_string();
    assert!(ct.starts_with("multipart/mixed;boundary="));
    let parts = crate::sip::body::split_multipart(&ct, &m.body).unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts[0].content_type.starts_with("text/plain"));
    let text = String::from_utf8(parts[0].body.to_vec()).unwrap();
    assert!(text.starts_with("EMERGENCY CALL to 911\r\n"), "{text}");
    for line in
        ["Caller: Alice  Location: fake", "Callback number: +14255550123", "Dialed: 9911", "Floor: 2", "Room: 210"]
    {
        assert!(text.contains(line), "{line:?} missing from {text}");
    }
    assert!(text.contains("1 Microsoft Way"));
    assert!(text.contains("Location found by: the site's configured address"));
    assert!(!text.contains("\r\nLocation: fake"), "a display name must not fake a field");
    assert_eq!(parts[1].content_type, CALL_EVENT_CONTENT_TYPE);
    let back: CallEvent = serde_json::from_slice(&parts[1].body).unwrap();
    assert_eq!(back, ev);
    // A test call says so first.
    let (ct, body) = body_of(&event(true));
    let parts = crate::sip::body::split_multipart(&ct, &body).unwrap();
    assert!(String::from_utf8_lossy(&parts[0].body).starts_with("TEST CALL to 933"));
}

#[test]
fn delivered_first_time_is_one_ok_outcome() {
    let (mut n, mut tx, now) = setup();
    n.notify(&event(false), &[remote()], &Ctx { contacts: vec![] }, &mut tx, now);
    let (peer, size, m) = sent_over(&mut tx).pop().unwrap();
    // RFC 3261 §18.1.1: over 1300 bytes, to a UDP target, the MESSAGE goes over TCP to the same
    // address and port, with a Via that says so.
    assert!(size > UDP_MAX_REQUEST, "{size}");
    assert_eq!(peer, Peer { transport: Transport::Tcp, addr: "127.0.0.1:5090".parse().unwrap() });
    assert!(m.header("Via").unwrap().starts_with("SIP/2.0/TCP "));
    respond(&mut n, &mut tx, &m, 200, now);
    let out = n.take_outcomes();
    assert_eq!(out.len(), 1);
    let detail = format!("delivered on attempt 1 over TCP ({size} bytes): 200 OK");
    assert_eq!(notified(&out[0]), ("sip:guard@127.0.0.1:5090", true, detail.as_str()));
    assert_eq!(n.pending(), 0);
    assert_eq!(n.next_timeout(), None, "a delivered MESSAGE leaves no timer behind");
}

#[test]
fn failures_are_retried_with_backoff_then_given_up() {
    let (mut n, mut tx, t0) = setup();
    let ctx = Ctx { contacts: vec![] };
    n.notify(&event(false), &[remote()], &ctx, &mut tx, t0);
    // Attempt 1: a 503.
    let m = sent(&mut tx).pop().unwrap();
    respond(&mut n, &mut tx, &m, 503, t0);
    let out = n.take_outcomes();
    assert_eq!(over_tcp(notified(&out[0]).2), "attempt 1 failed: 503 Service Unavailable; retrying in 1 s");
    // Nothing is sent before the backoff is over.
    n.handle_timeout(&ctx, &mut tx, t0 + Duration::from_millis(999));
    assert!(sent(&mut tx).is_empty());
    // Attempt 2 after 1 s: no answer at all within the attempt timeout.
    let t1 = t0 + Duration::from_secs(1);
    n.handle_timeout(&ctx, &mut tx, t1);
    let m2 = sent(&mut tx).pop().expect("attempt 2");
    assert_eq!(m2.call_id(), m.call_id(), "one Call-ID per delivery");
    assert_eq!(m2.cseq().unwrap().0, 2);
    n.handle_timeout(&ctx, &mut tx, t1 + Duration::from_secs(2));
    let out = n.take_outcomes();
    assert_eq!(over_tcp(notified(&out[0]).2), "attempt 2 failed: no final response within 2000 ms; retrying in 2 s");
    // A late 200 to the abandoned attempt changes nothing.
    respond(&mut n, &mut tx, &m2, 200, t1 + Duration::from_secs(3));
    assert!(n.take_outcomes().is_empty());
    // Keep failing until the 20 s window is used up.
    let mut now = t1 + Duration::from_secs(2);
    let mut attempts = 2;
    while let Some(next) = n.next_timeout() {
        now = next.max(now);
        n.handle_timeout(&ctx, &mut tx, now);
        for m in sent(&mut tx) {
            attempts += 1;
            respond(&mut n, &mut tx, &m, 480, now);
        }
        if n.pending() == 0 {
            break;
        }
    }
    let out = n.take_outcomes();
    let last = notified(out.last().unwrap());
    assert!(!last.1);
    assert!(last.2.contains("gave up after"), "{}", last.2);
    // 1 + 2 + 4 + 8 s of backoff fit in 20 s (plus the 2 s timeout); 16 more would not.
    assert_eq!(attempts, 5, "{out:?}");
    assert_eq!(out.len(), 3, "every attempt is one outcome");
}

#[test]
fn a_group_reaches_every_registered_contact_and_waits_for_one() {
    let (mut n, mut tx, t0) = setup();
    let group = ("sip:security@127.0.0.1".to_string(), Target::Local("security".into()));
    let contact = |user: &str, port: u16| Contact {
        user: user.into(),
        uri: format!("sip:{user}@127.0.0.1:{port}"),
        peer: Peer { transport: Transport::Udp, addr: format!("127.0.0.1:{port}").parse().unwrap() },
    };
    // Nobody registered yet: audited, retried.
    let empty = Ctx { contacts: vec![] };
    n.notify(&event(false), std::slice::from_ref(&group), &empty, &mut tx, t0);
    assert!(sent(&mut tx).is_empty());
    let out = n.take_outcomes();
    assert_eq!(
        notified(&out[0]),
        ("sip:security@127.0.0.1", false, "attempt 1 failed: no registered contact; retrying in 1 s")
    );
    // Two desks register; the retry reaches both.
    let two = Ctx { contacts: vec![contact("desk1", 5101), contact("desk2", 5102)] };
    n.handle_timeout(&two, &mut tx, t0 + Duration::from_secs(1));
    let msgs = sent(&mut tx);
    let mut targets: Vec<_> = msgs.iter().map(|m| m.request_uri().unwrap().to_string()).collect();
    targets.sort();
    assert_eq!(targets, vec!["sip:desk1@127.0.0.1:5101", "sip:desk2@127.0.0.1:5102"]);
    for m in &msgs {
        respond(&mut n, &mut tx, m, 200, t0 + Duration::from_secs(1));
    }
    let out = n.take_outcomes();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| notified(o).1 && notified(o).2.starts_with("for sip:security@127.0.0.1 (desk")));
}

#[test]
fn a_receiver_that_refuses_tcp_gets_the_same_attempt_over_udp_at_once() {
    let (mut n, mut tx, t0, ctx, tcp, first) = first_attempt();
    // The connection is refused (a client that implements only UDP).
    n.on_unreachable(tcp, &mut tx, t0);
    assert!(n.take_outcomes().is_empty(), "not a failed attempt: the same one, over UDP");
    assert_eq!(n.next_timeout(), Some(t0), "at once");
    n.handle_timeout(&ctx, &mut tx, t0);
    let (udp, size, m) = sent_over(&mut tx).pop().expect("the MESSAGE over UDP");
    assert_eq!(udp, Peer { transport: Transport::Udp, addr: tcp.addr });
    assert!(m.header("Via").unwrap().starts_with("SIP/2.0/UDP "));
    assert_eq!((m.call_id(), m.cseq()), (first.call_id(), first.cseq()), "the same request, over UDP");
    respond(&mut n, &mut tx, &m, 200, t0);
    let out = n.take_outcomes();
    let detail = format!("delivered on attempt 1 over UDP ({size} bytes; TCP failed): 200 OK");
    assert_eq!(notified(&out[0]), ("sip:guard@127.0.0.1:5090", true, detail.as_str()));
    assert_eq!(n.next_timeout(), None);
    // The next call's MESSAGE to that receiver goes over UDP straight away: no connection
    // refused first, for every alert.
    n.notify(&event(false), &[remote()], &ctx, &mut tx, t0 + Duration::from_secs(60));
    let (peer, _, _) = sent_over(&mut tx).pop().unwrap();
    assert_eq!(peer.transport, Transport::Udp);
    // ...until the refusal is forgotten (the receiver may have gained TCP since).
    n.notify(&event(false), &[remote()], &ctx, &mut tx, t0 + TCP_REFUSAL_MEMORY);
    let (peer, _, _) = sent_over(&mut tx).pop().unwrap();
    assert_eq!(peer.transport, Transport::Tcp);
}

#[test]
fn a_refused_udp_target_fails_the_attempt() {
    // Unreachable over the transport the target itself names: an ordinary failed attempt.
    let (mut n, mut tx, t0, ctx, tcp, _) = first_attempt();
    n.on_unreachable(tcp, &mut tx, t0);
    n.handle_timeout(&ctx, &mut tx, t0);
    let (udp, _, _) = sent_over(&mut tx).pop().unwrap();
    n.on_unreachable(udp, &mut tx, t0);
    let out = n.take_outcomes();
    assert_eq!(out.len(), 1);
    let detail = notified(&out[0]).2;
    assert!(detail.starts_with("attempt 1 over UDP (") && detail.ends_with("unreachable; retrying in 1 s"), "{detail}");
}

#[test]
fn no_answer_over_tcp_makes_the_next_attempt_udp() {
    // A receiver that takes the connection but answers nothing on it.
    let (mut n, mut tx, t0, ctx, _, _) = first_attempt();
    n.handle_timeout(&ctx, &mut tx, t0 + Duration::from_secs(2));
    let out = n.take_outcomes();
    assert!(notified(&out[0]).2.starts_with("attempt 1 over TCP ("), "{out:?}");
    n.handle_timeout(&ctx, &mut tx, t0 + Duration::from_secs(3));
    let (udp, _, _) = sent_over(&mut tx).pop().expect("attempt 2");
    assert_eq!(udp.transport, Transport::Udp);
}

#[test]
fn a_late_tcp_failure_is_remembered_for_the_next_attempt() {
    // The connection fails only after the attempt timed out (a firewall dropping the SYN): the
    // next attempt, and the next call's, go over UDP.
    let (mut n, mut tx, t0, ctx, tcp, _) = first_attempt();
    n.handle_timeout(&ctx, &mut tx, t0 + Duration::from_secs(2));
    n.on_unreachable(tcp, &mut tx, t0 + Duration::from_millis(2500));
    n.notify(&event(false), &[remote()], &ctx, &mut tx, t0 + Duration::from_secs(60));
    let (peer, _, _) = sent_over(&mut tx).pop().unwrap();
    assert_eq!(peer.transport, Transport::Udp);
}

#[test]
fn backoff_is_bounded() {
    let secs: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
}

/// Issue 13: an ordinary SIP client that takes only text answers the multipart alert 415; the
/// text part is sent alone at once, the receiver is remembered, and a receiver that takes no
/// text is given up at once instead of being sent the same body for minutes.
#[test]
fn a_receiver_that_refuses_the_multipart_body_gets_the_text_alone() {
    let (mut n, mut tx, t0, ctx, _, first) = first_attempt();
    assert!(first.header("Content-Type").unwrap().starts_with("multipart/mixed"));
    respond_accepting(&mut n, &mut tx, &first, 415, Some("text/plain, message/imdn+xml"), t0);
    let outcomes = n.take_outcomes();
    let (_, ok, detail) = notified(&outcomes[0]);
    assert!(!ok);
    assert_eq!(
        over_tcp(detail),
        "attempt 1 failed: 415 Unsupported Media Type (Accept: text/plain, message/imdn+xml); re-sent at once as text/plain"
    );
    // At once: on the notifier's next turn, no backoff.
    assert_eq!(n.next_timeout(), Some(t0));
    n.handle_timeout(&ctx, &mut tx, t0);
    let (_, _, text) = sent_over(&mut tx).pop().expect("the text alone");
    assert_eq!(text.header("Content-Type"), Some("text/plain;charset=UTF-8"));
    let body = String::from_utf8_lossy(&text.body).to_string();
    assert!(body.starts_with("EMERGENCY CALL to 911\r\n") && body.contains("Room: 210"), "{body}");
    assert!(!body.contains("\"call_id\""), "no JSON in the text: {body}");
    assert_eq!(text.header("Subject"), first.header("Subject"));
    respond(&mut n, &mut tx, &text, 200, t0);
    let outcomes = n.take_outcomes();
    let (_, ok, detail) = notified(&outcomes[0]);
    assert!(ok);
    assert!(detail.starts_with("delivered on attempt 2 as text/plain"), "{detail}");

    // The next alert to the same receiver goes as text first.
    n.notify(&event(true), &[remote()], &ctx, &mut tx, t0);
    let (_, _, next) = sent_over(&mut tx).pop().unwrap();
    assert_eq!(next.header("Content-Type"), Some("text/plain;charset=UTF-8"));

    // A receiver that takes no text (its Accept says so) is given up at once.
    let (mut n, mut tx, t0, _, _, first) = first_attempt();
    respond_accepting(&mut n, &mut tx, &first, 415, Some("application/json;q=1, text/plain;q=0"), t0);
    let outcomes = n.take_outcomes();
    let (_, ok, detail) = notified(&outcomes[0]);
    assert!(!ok);
    assert!(detail.ends_with("; gave up: the receiver takes no form of the alert sosdesk sends"), "{detail}");
    assert_eq!((n.pending(), n.next_timeout()), (0, None));
}

#[test]
fn accept_headers_are_read_as_media_ranges() {
    assert!(accepts_text_plain("text/plain"));
    assert!(accepts_text_plain("application/sdp, TEXT/*;q=0.5"));
    assert!(accepts_text_plain("*/*"));
    assert!(!accepts_text_plain("application/sdp"));
    assert!(!accepts_text_plain("text/plain;q=0"));
    assert!(!accepts_text_plain("text/html"));
    assert!(!accepts_text_plain(""));
}

/// A retry goes to whoever is registered then: a desk client that restarted registers a new
/// contact (baresip's changes at every start), and the alert must reach it, not the old one.
#[test]
fn a_retry_follows_the_registration_not_a_contact_that_has_left() {
    let (mut n, mut tx, t0) = setup();
    let contact = |uri: &str, port: u16| Contact {
        user: "desk1".into(),
        uri: uri.into(),
        peer: Peer { transport: Transport::Udp, addr: ([127, 0, 0, 1], port).into() },
    };
    let before = Ctx { contacts: vec![contact("sip:desk1-0xaaa@127.0.0.1:5300", 5300)] };
    let group =
        ("sip:security@127.0.0.1".to_string(), Target::parse("sip:security@127.0.0.1", "127.0.0.1", &[5060]).unwrap());
    n.notify(&event(true), &[group], &before, &mut tx, t0);
    let first = sent(&mut tx).pop().unwrap();
    assert!(first.request_uri().unwrap().starts_with("sip:desk1-0xaaa@"));
    respond(&mut n, &mut tx, &first, 404, t0);
    n.take_outcomes();
    // The client restarted: a new contact, the old one gone.
    let after = Ctx { contacts: vec![contact("sip:desk1-0xbbb@127.0.0.1:5300", 5300)] };
    n.handle_timeout(&after, &mut tx, t0 + Duration::from_secs(1));
    let retry = sent(&mut tx);
    let uris: Vec<&str> = retry.iter().map(|m| m.request_uri().unwrap()).collect();
    assert_eq!(uris.len(), 1, "{uris:?}");
    assert!(uris[0].starts_with("sip:desk1-0xbbb@"), "the retry went to the contact that left: {uris:?}");
    respond(&mut n, &mut tx, &retry[0], 200, t0 + Duration::from_secs(1));
    let outcomes = n.take_outcomes();
    let (uri, ok, detail) = notified(&outcomes[0]);
    assert!(ok, "{detail}");
    assert_eq!(uri, "sip:desk1-0xbbb@127.0.0.1:5300");
    assert!(detail.starts_with("for sip:security@127.0.0.1 (desk1): delivered"), "{detail}");
    assert_eq!(n.pending(), 0);
}

#[test]
fn a_named_target_is_retried_at_its_next_server() {
    let (mut n, mut tx, t0) = setup();
    let at = |ip: [u8; 4]| Peer { transport: Transport::Tcp, addr: (ip, 5060).into() };
    let ctx = TwoServers([at([192, 0, 2, 1]), at([192, 0, 2, 2])]);
    let uri = "sip:guard@pbx.example.com".to_string();
    let target = Target::parse(&uri, "127.0.0.1", &[5060]).unwrap();
    n.notify(&event(false), &[(uri, target)], &ctx, &mut tx, t0);
    let (first, _, m) = sent_over(&mut tx).pop().unwrap();
    assert_eq!(first, ctx.0[0]);
    respond(&mut n, &mut tx, &m, 503, t0);
    n.handle_timeout(&ctx, &mut tx, t0 + Duration::from_secs(1));
    let (second, _, m2) = sent_over(&mut tx).pop().expect("attempt 2");
    assert_eq!(second, ctx.0[1], "the retry goes to the name's next server");
    assert_eq!(m2.request_uri(), Some("sip:guard@pbx.example.com"), "the URI names the name, not the server");
    respond(&mut n, &mut tx, &m2, 200, t0 + Duration::from_secs(1));
    let out = n.take_outcomes();
    assert!(notified(out.last().unwrap()).1, "{:?}", out.last());
}
