//! The emergency notification IM (issue 6) through the real core, sipp as caller, provider,
//! notification targets and registering desks: what the MESSAGE says on the wire, who gets it,
//! retries of a failed delivery in the audit log while the call routes, and refused credentials.

use crate::support;

use sosdesk::events::{CallEvent, CallEventKind};
use sosdesk::notify::CALL_EVENT_CONTENT_TYPE;
use support::lab::{body_of, free_port, header_of, Lab};

const HOLD: &[&str] = &["-set", "hold_ms", "100"];

fn args<'a>(a: &[&'a str]) -> Vec<&'a str> {
    let mut v = HOLD.to_vec();
    v.extend_from_slice(a);
    v
}

/// The parts of a multipart/mixed MESSAGE: (content type, body).
fn parts(raw: &str) -> Vec<(String, String)> {
    let ct = header_of(raw, "Content-Type").expect("Content-Type");
    let boundary = ct.split("boundary=").nth(1).expect("boundary").trim_matches('"').to_string();
    body_of(raw)
        .split(&format!("--{boundary}"))
        .filter_map(|p| {
            let p = p.strip_prefix("\r\n")?;
            let (head, body) = p.split_once("\r\n\r\n")?;
            let ct = head.lines().find_map(|l| l.strip_prefix("Content-Type: "))?.to_string();
            Some((ct, body.trim_end_matches("\r\n").to_string()))
        })
        .collect()
}

pub(crate) fn notified(events: &[CallEvent]) -> Vec<(String, bool, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            CallEventKind::Notified { uri, ok, detail } => Some((uri.clone(), *ok, detail.clone())),
            _ => None,
        })
        .collect()
}

/// The lab's MESSAGEs are over 1300 bytes, so the core tries TCP first (RFC 3261 §18.1.1); sipp
/// in UDP mode refuses it, and the same attempt goes over UDP, which the audit detail says as
/// " over UDP (N bytes; TCP failed)". `detail` without that note, which it must have.
fn refused_tcp(detail: &str) -> String {
    let start = detail.find(" over UDP (").unwrap_or_else(|| panic!("no UDP fallback in {detail:?}"));
    let end = start + detail[start..].find(')').unwrap() + 1;
    assert!(detail[start..end].ends_with(" bytes; TCP failed)"), "{detail}");
    format!("{}{}", &detail[..start], &detail[end..])
}

/// Register `user` with the lab's core; its contact is a sipp listening on `contact_port`.
fn register(lab: &Lab, user: &str, password: &str, contact_port: u16) {
    let port = contact_port.to_string();
    lab.uac(
        &format!("register-{user}"),
        "register.xml",
        "127.0.0.1",
        &["-s", user, "-au", user, "-ap", password, "-set", "cport", &port],
    )
    .wait()
    .assert_ok();
}

#[test]
fn the_message_tells_a_person_everything_for_911_and_for_a_933_test() {
    let mut lab = Lab::start_notifying(|c| c);
    for (number, headline) in [("911", "EMERGENCY CALL to 911"), ("933", "TEST CALL to 933")] {
        // Over TCP: the MESSAGE is larger than UDP may carry to a path of unknown MTU.
        let receiver = lab.uas("receiver", "notify_receiver.xml", "127.0.0.1", lab.ports.fallback, &["-t", "t1"]);
        let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
        let caller = lab.uac(
            "caller",
            "caller_hangs_up.xml",
            "127.0.0.1",
            &args(&["-s", number, "-set", "name", "Alice Example", "-set", "from_user", "+14255550123"]),
        );
        caller.wait().assert_ok();
        provider.wait().assert_ok();
        let r = receiver.wait();
        r.assert_ok();
        let msg = r.received_request("MESSAGE");
        assert!(
            msg.starts_with(&format!("MESSAGE sip:security-desk@127.0.0.1:{} SIP/2.0\r\n", lab.ports.fallback)),
            "{msg}"
        );
        assert_eq!(header_of(&msg, "Priority").as_deref(), Some("emergency"));
        assert!(msg.len() > 1300, "{} bytes: this test is about a MESSAGE too large for UDP", msg.len());
        assert!(header_of(&msg, "Via").unwrap().starts_with("SIP/2.0/TCP "), "{msg}");
        assert!(header_of(&msg, "Content-Type").unwrap().starts_with("multipart/mixed;boundary="));
        let parts = parts(&msg);
        assert_eq!(parts.len(), 2, "{msg}");
        assert_eq!(parts[0].0, "text/plain;charset=UTF-8");
        let text = &parts[0].1;
        assert!(text.starts_with(headline), "{text}");
        for line in [
            "Caller: Alice Example",
            "Callback number: +14255550123",
            &format!("Dialed: {number}"),
            "Location: HQ, 2nd floor, room 210",
            "Address: 1 Microsoft Way, Floor 2, Room 210, Redmond, WA, 98052, US",
            "Floor: 2",
            "Room: 210",
            "Location found by: the site's configured address",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let time = text.lines().find_map(|l| l.strip_prefix("Time: ")).expect("a Time line");
        assert!(time.ends_with("UTC)") && time.len() > 20, "{time}");
        // The structured part: the call's detection, for sosdesk desks.
        assert_eq!(parts[1].0, CALL_EVENT_CONTENT_TYPE);
        let ev: CallEvent = serde_json::from_str(&parts[1].1).expect("the CallEvent part parses");
        assert_eq!((ev.normalized.as_str(), ev.test_call, ev.seq), (number, number == "933", 1));
        assert!(matches!(ev.kind, CallEventKind::Detected));
        assert_eq!(ev.caller.number, "+14255550123");
        assert!(text.contains(&format!("Call: {}", ev.call_id)));
    }
    lab.stop();
    let events = lab.audit_events();
    let sent = notified(&events);
    let to_phone: Vec<_> = sent.iter().filter(|n| n.0.contains("security-desk")).collect();
    assert_eq!(to_phone.len(), 2, "{sent:?}");
    assert!(
        to_phone
            .iter()
            .all(|n| n.1 && n.2.starts_with("delivered on attempt 1 over TCP (") && n.2.ends_with(" bytes): 200 OK")),
        "{sent:?}"
    );
    lab.assert_audit_verifies();
}

#[test]
fn two_registered_desks_both_get_the_alert() {
    let mut lab = Lab::start_notifying(|c| c);
    let (p1, p2) = (free_port(), free_port());
    let desk1 = lab.uas("desk1", "notify_receiver.xml", "127.0.0.1", p1, &[]);
    let desk2 = lab.uas("desk2", "notify_receiver.xml", "127.0.0.1", p2, &[]);
    register(&lab, "desk1", "lobby-desk-secret", p1);
    register(&lab, "desk2", "control-room-secret", p2);
    let phone = lab.uas("phone", "notify_receiver.xml", "127.0.0.1", lab.ports.fallback, &[]);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"])).wait().assert_ok();
    provider.wait().assert_ok();
    phone.wait().assert_ok();
    for (desk, port, user) in [(desk1, p1, "desk1"), (desk2, p2, "desk2")] {
        let r = desk.wait();
        r.assert_ok();
        let msg = r.received_request("MESSAGE");
        assert!(msg.starts_with(&format!("MESSAGE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n")), "{msg}");
        assert!(header_of(&msg, "To").unwrap().contains(&format!("sip:{user}@127.0.0.1")));
        assert!(parts(&msg)[0].1.starts_with("EMERGENCY CALL to 911"));
    }
    lab.stop();
    let sent = notified(&lab.audit_events());
    for user in ["desk1", "desk2"] {
        assert!(
            sent.iter().any(|n| n.1
                && refused_tcp(&n.2) == format!("for sip:security@127.0.0.1 ({user}): delivered on attempt 1: 200 OK")),
            "{user}: {sent:?}"
        );
    }
}

#[test]
fn a_failing_target_is_retried_and_audited_while_the_call_routes() {
    let mut lab = Lab::start_notifying(|c| c);
    // The desk phone answers 503 first, then 200 to the retry a second later.
    let phone = lab.uas("phone", "notify_receiver_busy.xml", "127.0.0.1", lab.ports.fallback, &[]);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "1500"]);
    let p = phone.wait();
    p.assert_ok();
    let msgs: Vec<_> = p.received().into_iter().filter(|m| m.starts_with("MESSAGE ")).collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(header_of(&msgs[0], "Call-ID"), header_of(&msgs[1], "Call-ID"), "a retry is the same delivery");
    assert_eq!(header_of(&msgs[1], "CSeq").as_deref(), Some("2 MESSAGE"));
    caller.wait().assert_ok();
    provider.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    // The call was routed before any notification outcome: the MESSAGE never waits for routing
    // and routing never waits for it.
    let routed = kinds.iter().position(|k| *k == "routed").expect("routed");
    let first_notified = kinds.iter().position(|k| *k == "notified").expect("notified");
    assert!(routed < first_notified, "{kinds:?}");
    assert!(kinds.contains(&"answered"), "{kinds:?}");
    let sent: Vec<_> = notified(&events)
        .into_iter()
        .filter(|n| n.0.contains("security-desk"))
        .map(|(uri, ok, detail)| (uri, ok, refused_tcp(&detail)))
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                format!("sip:security-desk@127.0.0.1:{}", lab.ports.fallback),
                false,
                "attempt 1 failed: 503 Service Unavailable; retrying in 1 s".to_string()
            ),
            (
                format!("sip:security-desk@127.0.0.1:{}", lab.ports.fallback),
                true,
                "delivered on attempt 2: 200 OK".to_string()
            ),
        ],
        "{sent:?}"
    );
}

#[test]
fn a_dead_target_is_given_up_after_the_retry_window_and_the_call_still_routes() {
    let mut lab = Lab::start_notifying(|c| {
        c.replace("attempt_timeout_ms = 2000", "attempt_timeout_ms = 200")
            .replace("retry_for_s = 300", "retry_for_s = 2")
    });
    // Nothing listens at the desk phone's port.
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"]));
    caller.wait().assert_ok();
    provider.wait().assert_ok();
    let mut seen = Vec::new();
    lab.wait_for(&mut seen, "the last notification attempt", |e| {
        matches!(&e.kind, CallEventKind::Notified { uri, detail, .. } if uri.contains("security-desk") && detail.contains("gave up"))
    });
    lab.stop();
    let events = lab.audit_events();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.name()).collect();
    for k in ["routed", "answered", "ended"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    let phone: Vec<_> = notified(&events).into_iter().filter(|n| n.0.contains("security-desk")).collect();
    // Attempts at 0 s and 1.2 s; the next would start after the 2 s window.
    assert_eq!(phone.len(), 2, "{phone:?}");
    assert!(phone.iter().all(|n| !n.1));
    assert!(refused_tcp(&phone[0].2).starts_with("attempt 1 failed: "), "{phone:?}");
    assert!(phone[1].2.contains("gave up after 2 attempts"), "{phone:?}");
    // Nobody registered for the group: audited the same way.
    assert!(notified(&events).iter().any(|n| n.0 == "sip:security@127.0.0.1" && n.2.contains("no registered contact")));
    lab.assert_audit_verifies();
}

#[test]
fn wrong_credentials_are_refused_audited_and_rate_limited() {
    let mut lab = Lab::start_notifying(|c| c);
    let cport = free_port().to_string();
    let wrong = |n: usize| {
        lab.uac(
            &format!("wrong{n}"),
            "register_refused.xml",
            "127.0.0.1",
            &["-s", "desk1", "-au", "desk1", "-ap", "not-the-password", "-set", "cport", &cport],
        )
        .wait()
    };
    let first = wrong(0);
    first.assert_ok();
    let refusal = first.received().into_iter().find(|m| m.starts_with("SIP/2.0 403")).expect("403");
    let warning = header_of(&refusal, "Warning").unwrap();
    assert!(warning.contains("bad credentials"), "{refusal}");
    assert!(!warning.contains("wrong password"), "the client must not learn why (which users exist): {refusal}");
    for n in 1..5 {
        wrong(n).assert_ok();
    }
    // Blocked now: a REGISTER is refused at once, without a challenge, so no password (not even
    // the right one) can be tried from this address.
    let blocked =
        lab.uac("blocked", "register_blocked.xml", "127.0.0.1", &["-s", "desk1", "-set", "cport", &cport]).wait();
    blocked.assert_ok();
    let refusal = blocked.received().into_iter().find(|m| m.starts_with("SIP/2.0 403")).expect("403");
    assert!(header_of(&refusal, "Warning").unwrap().contains("too many wrong credentials"), "{refusal}");
    // Another address is not blocked.
    let other = free_port();
    let ok = lab.uac(
        "other",
        "register.xml",
        "127.0.0.2",
        &["-s", "desk1", "-au", "desk1", "-ap", "lobby-desk-secret", "-set", "cport", &other.to_string()],
    );
    ok.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    // One refusal record for the address (not a row per attempt): why each attempt failed, and
    // that the address was blocked, are its reasons.
    let records: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            CallEventKind::Refused { source, count, reasons, samples, .. } => {
                Some((source.clone(), *count, reasons.clone(), samples.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let (source, count, reasons, samples) = &records[0];
    assert_eq!(source, "127.0.0.1");
    assert_eq!(reasons.get("REGISTER 403 bad credentials: wrong password for \"desk1\""), Some(&5), "{reasons:?}");
    assert_eq!(reasons.get("REGISTER 403 blocked: too many wrong credentials"), Some(&1), "{reasons:?}");
    assert_eq!(*count, 6);
    assert!(samples[0].starts_with("REGISTER sip:"), "{samples:?}");
    assert!(!events.iter().any(|e| matches!(e.kind, CallEventKind::Rejected { .. })), "no row per attempt");
    // Digest never sends a password; the account's configured one must not leak into the
    // refusals' text either.
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("lobby-desk-secret"));
    lab.assert_audit_verifies();
}

/// Issue 13: an ordinary SIP client that takes only text answers the multipart alert 415 with
/// `Accept: text/plain`; sosdesk sends the text part alone at once and audits both attempts.
/// The client's delivery receipt (RFC 5438 IMDN) is answered 200, not refused.
#[test]
fn a_text_only_client_gets_the_alert_as_text_and_its_receipt_is_taken() {
    let mut lab = Lab::start_notifying(|c| c);
    // Over UDP, as its URI says (the multipart body, too large for UDP, tries TCP first, which
    // this client refuses: the same attempt then goes over UDP).
    let receiver = lab.uas("receiver", "notify_text_only.xml", "127.0.0.1", lab.ports.fallback, &[]);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911", "-set", "name", "Alice Example"]))
        .wait()
        .assert_ok();
    provider.wait().assert_ok();
    let r = receiver.wait();
    r.assert_ok();
    let messages: Vec<String> = r.received().into_iter().filter(|m| m.starts_with("MESSAGE ")).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(header_of(&messages[1], "Content-Type").as_deref(), Some("text/plain;charset=UTF-8"));
    let text = body_of(&messages[1]);
    assert!(text.starts_with("EMERGENCY CALL to 911\r\nCaller: Alice Example\r\n"), "{text}");
    assert!(text.contains("Room: 210") && !text.contains("--"), "the text alone: {text}");
    assert_eq!(header_of(&messages[1], "Subject"), header_of(&messages[0], "Subject"));
    let receipt_answer =
        r.received().into_iter().find(|m| m.starts_with("SIP/2.0 ")).expect("an answer to the receipt");
    assert!(receipt_answer.starts_with("SIP/2.0 200 OK\r\n"), "{receipt_answer}");
    lab.stop();
    let sent = notified(&lab.audit_events());
    let to_phone: Vec<_> = sent.iter().filter(|n| n.0.contains("security-desk")).collect();
    assert_eq!(to_phone.len(), 2, "{sent:?}");
    assert!(!to_phone[0].1);
    assert_eq!(
        refused_tcp(&to_phone[0].2),
        "attempt 1 failed: 415 Unsupported Media Type (Accept: text/plain, message/imdn+xml); re-sent at once as text/plain",
    );
    assert!(to_phone[1].1);
    assert_eq!(to_phone[1].2, "delivered on attempt 2 as text/plain: 200 OK", "{}", to_phone[1].2);
    // The receipt is no refusal: nothing from the receiver in the refusal records.
    assert!(!lab.audit_events().iter().any(|e| e.kind.name() == "refused"), "a receipt counted as a refusal");
}
