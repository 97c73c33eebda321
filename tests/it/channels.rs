//! Alert channels beyond SIP (issue 15) through the real core, with real receivers on
//! loopback: an SMTP server (aiosmtpd, STARTTLS required) gets the email, an HTTP receiver the
//! signed webhook, the Slack-format message and the SMS gateway's request; the acknowledgement
//! link acknowledges once, is pushed like a desk's, and stops the escalation, whose next tier
//! is otherwise reached.

use std::time::{Duration, Instant};

use crate::support;

use crate::notifications::notified;
use sosdesk::channels::sign::{ack_token, verify_webhook, AckClaim, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use sosdesk::events::{CallEvent, CallEventKind};
use support::lab::{free_port, path_str, Lab};
use support::receivers::{http, HttpReceiver, SmtpSink};

const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";
const SMS_AUTH: &str = "Bearer sms-gateway-token-42";
const SMTP_PASSWORD: &str = "smtp-password-7";
const SLACK_TOKEN: &str = "T000/B000/slacktokensecret";

/// The lab with `channels` added to policy us-hq, `tables` appended (channels, `[alerts]`).
fn with_channels(channels: &str, tables: String) -> impl FnOnce(String) -> String {
    let channels = channels.to_string();
    move |c: String| {
        let c = c.replacen("name = \"us-hq\"\n", &format!("name = \"us-hq\"\n{channels}\n"), 1);
        format!("{c}\n{tables}\n")
    }
}

/// A 911 (or 933) call from the HQ site that the provider answers and the caller hangs up.
fn call(lab: &Lab, number: &str) {
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac(
        "caller",
        "caller_hangs_up.xml",
        "127.0.0.1",
        &["-set", "hold_ms", "100", "-s", number, "-set", "name", "Alice Example", "-set", "from_user", "+14255550123"],
    );
    caller.wait().assert_ok();
    provider.wait().assert_ok();
}

#[test]
fn email_webhook_chat_and_sms_carry_the_whole_alert_and_every_attempt_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::make_pki(dir.path(), &["localhost"]);
    let smtp = SmtpSink::start(dir.path(), free_port(), &pki.server_cert, &pki.server_key);
    let smtps = SmtpSink::start_as(
        dir.path(),
        "implicit",
        free_port(),
        &pki.server_cert,
        &pki.server_key,
        Some(("sosdesk", SMTP_PASSWORD)),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut hooks = HttpReceiver::start(&rt);
    let tables = format!(
        r#"
[alerts]
public_url = "http://127.0.0.1:API_PORT"

[[channel]]
name = "security-email"
kind = "email"
server = "localhost"
port = {smtp}
tls = "starttls"
tls_ca = "{ca}"
from = "sosdesk <sosdesk@example.org>"
to = ["security@example.org"]

[[channel]]
name = "facilities-email"
kind = "email"
server = "localhost"
port = {smtps}
tls = "implicit"
username = "sosdesk"
password = "{SMTP_PASSWORD}"
tls_ca = "{ca}"
from = "sosdesk@example.org"
to = ["facilities@example.org"]

[[channel]]
name = "siem"
kind = "webhook"
url = "http://127.0.0.1:{hook}/siem"
secret = "{WEBHOOK_SECRET}"

[[channel]]
name = "ops-slack"
kind = "webhook"
format = "slack"
url = "http://127.0.0.1:{hook}/services/{SLACK_TOKEN}"

[[channel]]
name = "oncall-sms"
kind = "sms"
url = "http://127.0.0.1:{hook}/sms/send"
auth_header = "{SMS_AUTH}"
to = ["+14255550199"]
fields = {{ To = "{{to}}", Body = "{{text}}", From = "sosdesk" }}
"#,
        smtp = smtp.port,
        smtps = smtps.port,
        ca = path_str(&pki.ca_cert),
        hook = hooks.port,
    );
    let mut lab = Lab::start_with(move |c| {
        let api = c.split("[api]\nlisten = \"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().to_string();
        with_channels(
            r#"channels = ["security-email", "facilities-email", "siem", "ops-slack", "oncall-sms"]"#,
            tables.replace("API_PORT", &api),
        )(c)
    });
    call(&lab, "911");

    // The email: over STARTTLS, the subject and both parts with the whole alert.
    let mail = smtp.wait_for(1).remove(0);
    assert_eq!(mail["tls"], true, "STARTTLS was required: {mail}");
    assert_eq!(mail["rcpt_tos"][0], "security@example.org");
    assert_eq!(mail["subject"], "EMERGENCY CALL 911 — Alice Example — HQ, 2nd floor, room 210");
    assert_eq!(mail["importance"], "high");
    let text = mail["text"].as_str().unwrap();
    for want in [
        "EMERGENCY CALL to 911",
        "Caller: Alice Example",
        "Callback number: +14255550123",
        "Address: 1 Microsoft Way, Floor 2, Room 210, Redmond, WA, 98052, US",
        "Floor: 2",
        "Room: 210",
        "Time: ",
        &format!("Acknowledge (stops the escalation): http://127.0.0.1:{}/ack/", lab.ports.api),
    ] {
        assert!(text.contains(want), "{want:?} missing from the email text:\n{text}");
    }
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains("<th align=\"left\">Callback number</th><td>+14255550123</td>"), "{html}");
    // The other server: TLS from the first byte, SMTP AUTH required.
    let mail = smtps.wait_for(1).remove(0);
    assert_eq!(
        (&mail["tls"], &mail["login"], &mail["rcpt_tos"][0]),
        (&true.into(), &"sosdesk".into(), &"facilities@example.org".into()),
        "{mail}"
    );
    assert!(mail["text"].as_str().unwrap().contains("Callback number: +14255550123"));

    // The webhook, the Slack message and the SMS: in whatever order they come.
    let mut by_path = std::collections::HashMap::new();
    for _ in 0..3 {
        let r = hooks.next(&rt, Duration::from_secs(30)).expect("a webhook, Slack or SMS request");
        by_path.insert(r.target.split('/').nth(1).unwrap_or_default().to_string(), r);
    }
    let siem = &by_path["siem"];
    let now = chrono::Utc::now().timestamp();
    let (ts, sig) = (siem.header(TIMESTAMP_HEADER).unwrap(), siem.header(SIGNATURE_HEADER).unwrap());
    assert!(verify_webhook(WEBHOOK_SECRET.as_bytes(), ts, sig, &siem.body, now), "the signature verifies");
    assert!(!verify_webhook(b"another-secret-0123456", ts, sig, &siem.body, now));
    let ev: CallEvent = serde_json::from_slice(&siem.body).expect("the body is the CallEvent");
    assert!(matches!(ev.kind, CallEventKind::Detected));
    assert_eq!((ev.normalized.as_str(), ev.caller.number.as_str(), ev.test_call), ("911", "+14255550123", false));
    assert!(siem.header("x-sosdesk-ack-url").unwrap().contains("/ack/"));

    let slack: serde_json::Value = serde_json::from_slice(&by_path["services"].body).unwrap();
    let slack = slack["text"].as_str().unwrap();
    assert!(slack.contains("*EMERGENCY CALL to 911*") && slack.contains("*Callback number:* +14255550123"), "{slack}");
    assert!(slack.contains("*Room:* 210") && slack.contains("|Acknowledge>"), "{slack}");

    let sms = &by_path["sms"];
    assert_eq!((sms.method.as_str(), sms.header("authorization")), ("POST", Some(SMS_AUTH)));
    let form: std::collections::HashMap<String, String> = serde_urlencoded::from_bytes(&sms.body).unwrap();
    assert_eq!((form["To"].as_str(), form["From"].as_str()), ("+14255550199", "sosdesk"));
    let body = &form["Body"];
    assert!(body.starts_with("EMERGENCY CALL 911: Alice Example cb +14255550123. HQ, 2nd floor, room 210"), "{body}");
    assert!(body.contains(&format!("Ack: http://127.0.0.1:{}/ack/", lab.ports.api)) && body.len() <= 306, "{body}");

    // Every attempt audited in the call's record: channel, target, transport, outcome; no secret.
    let count = std::cell::Cell::new(0);
    lab.wait_for(&mut Vec::new(), "five attempts audited", |e| {
        count.set(count.get() + matches!(e.kind, CallEventKind::Notified { .. }) as usize);
        count.get() >= 5
    });
    lab.stop();
    let audit = lab.audit_events();
    let n = notified(&audit);
    let origin = format!("http://127.0.0.1:{}", hooks.port);
    for (target, via) in [
        ("mailto:security@example.org", "email via security-email (SMTP STARTTLS localhost:"),
        ("mailto:facilities@example.org", "email via facilities-email (SMTP over TLS localhost:"),
        (origin.as_str(), "webhook via siem (json webhook), tier 1, attempt 1: accepted (HTTP 200)"),
        (origin.as_str(), "webhook via ops-slack (slack webhook), tier 1, attempt 1: accepted (HTTP 200)"),
        ("sms:+14255550199", "sms via oncall-sms (SMS gateway http://127.0.0.1:"),
    ] {
        assert!(n.iter().any(|(t, ok, d)| t == target && *ok && d.starts_with(via)), "{target} {via} not in {n:#?}");
    }
    let all = serde_json::to_string(&audit).unwrap();
    for secret in [WEBHOOK_SECRET, SMS_AUTH, SLACK_TOKEN, SMTP_PASSWORD, "/siem", "/sms/send"] {
        assert!(!all.contains(secret), "{secret:?} is in the audit log");
    }
    lab.assert_audit_verifies();
}

#[test]
fn escalation_reaches_tier_two_unless_an_acknowledgement_link_is_used_once_before_it() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut hooks = HttpReceiver::start(&rt);
    const AFTER_S: u64 = 3;
    let tables = format!(
        r#"
[alerts]
public_url = "http://127.0.0.1:API_PORT"

[[channel]]
name = "first"
kind = "webhook"
url = "http://127.0.0.1:{hook}/first"
secret = "{WEBHOOK_SECRET}"

[[channel]]
name = "second"
kind = "webhook"
url = "http://127.0.0.1:{hook}/second"
secret = "{WEBHOOK_SECRET}"
"#,
        hook = hooks.port,
    );
    let mut lab = Lab::start_with(move |c| {
        let api = c.split("[api]\nlisten = \"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().to_string();
        with_channels(
            &format!("channels = [\"first\"]\nescalation = [{{ after_s = {AFTER_S}, channels = [\"second\"] }}]"),
            tables.replace("API_PORT", &api),
        )(c)
    });

    // Nobody acknowledges: the second tier is alerted after AFTER_S.
    let detected_at = Instant::now();
    call(&lab, "933");
    let first = hooks.next_to(&rt, "/first");
    let ev: CallEvent = serde_json::from_slice(&first.body).unwrap();
    assert!(ev.test_call, "a 933 call is a test everywhere");
    let second = hooks.next_to(&rt, "/second");
    assert!(detected_at.elapsed() >= Duration::from_secs(AFTER_S), "tier 2 came before its time");
    let ev2: CallEvent = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(ev2.call_id, ev.call_id);

    // The next call: its link acknowledges, once; tier 2 is not alerted.
    call(&lab, "911");
    let first = hooks.next_to(&rt, "/first");
    let call_id = serde_json::from_slice::<CallEvent>(&first.body).unwrap().call_id;
    let link = first.header("x-sosdesk-ack-url").expect("the link").to_string();
    let path = link.split_once(&format!("127.0.0.1:{}", lab.ports.api)).expect("the API's address").1.to_string();
    // GET only shows the alert and a button (a mail scanner's prefetch acknowledges nothing).
    let (status, page) = http("GET", lab.ports.api, &path);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<form method=\"post\">") && page.contains("Callback number"), "{page}");
    let mut seen = Vec::new();
    let (status, page) = http("POST", lab.ports.api, &path);
    assert_eq!(status, 200, "{page}");
    let ack = lab.wait_for(&mut seen, "acknowledged", |e| matches!(e.kind, CallEventKind::Acknowledged { .. }));
    let origin = format!("http://127.0.0.1:{}", hooks.port);
    assert_eq!(ack.call_id, call_id);
    assert_eq!(ack.kind, CallEventKind::Acknowledged { by: origin.clone(), desk: "acknowledgement link".into() });
    let (status, _) = http("POST", lab.ports.api, &path);
    assert_eq!(status, 410, "a link acknowledges once");
    // A tampered link, and an expired one signed with the core's own key.
    let (status, _) = http("POST", lab.ports.api, &format!("{path}x"));
    assert_eq!(status, 404);
    let key = hex::decode(std::fs::read_to_string(lab.store_path().with_extension("ack-key")).unwrap().trim()).unwrap();
    let expired =
        AckClaim { call_id: call_id.clone(), target: "sms:+1555".into(), expires: chrono::Utc::now().timestamp() - 1 };
    let (status, _) = http("POST", lab.ports.api, &format!("/ack/{}", ack_token(&key, &expired)));
    assert_eq!(status, 410, "an expired link");
    // Tier 2 of the acknowledged call never comes (waited for past its time and more).
    let until = Instant::now() + Duration::from_secs(AFTER_S + 2);
    while let Some(r) = hooks.next(&rt, until.saturating_duration_since(Instant::now())) {
        assert!(!r.target.starts_with("/second"), "tier 2 was alerted after the acknowledgement");
    }
    lab.stop();
    let acks: Vec<_> =
        lab.audit_events().into_iter().filter(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })).collect();
    assert_eq!(acks.len(), 1, "one acknowledgement, audited with who: {acks:?}");
    // Where each escalation stood, as the desks are told: the first call reached tier 2 of 2
    // (tier 1 said when tier 2 was due), the acknowledged one tier 1 only.
    let tiers = |id: &str| -> Vec<(u32, u32, Vec<String>, Option<u64>)> {
        lab.audit_events()
            .into_iter()
            .filter(|e| e.call_id == id)
            .filter_map(|e| match e.kind {
                CallEventKind::Escalated { tier, tiers, targets, next_tier_in_ms } => Some((
                    tier,
                    tiers,
                    targets.iter().map(|t| format!("{} {} {}", t.kind, t.channel, t.target)).collect(),
                    next_tier_in_ms,
                )),
                _ => None,
            })
            .collect()
    };
    let first = tiers(&ev.call_id);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!((first[0].0, first[0].1, &first[0].2[..]), (1, 2, &[format!("webhook first {origin}")][..]));
    assert!(first[0].3.is_some_and(|ms| ms <= AFTER_S * 1000), "tier 1 says when tier 2 is due: {first:?}");
    assert_eq!((first[1].0, &first[1].2[..], first[1].3), (2, &[format!("webhook second {origin}")][..], None));
    let stopped = tiers(&call_id);
    assert_eq!(stopped.iter().map(|t| t.0).collect::<Vec<_>>(), [1], "{stopped:?}");
    lab.assert_audit_verifies();
}

#[test]
fn a_refused_delivery_is_retried_with_backoff_and_each_attempt_audited() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The gateway is busy at first: 503, then it takes the SMS.
    let mut gateway = HttpReceiver::answering(&rt, vec![503]);
    let tables = format!(
        r#"
[[channel]]
name = "oncall-sms"
kind = "sms"
url = "http://127.0.0.1:{port}/send"
encoding = "json"
to = ["+14255550199"]
fields = {{ number = "{{to}}", message = "{{text}}" }}
"#,
        port = gateway.port,
    );
    let mut lab = Lab::start_with(with_channels(r#"channels = ["oncall-sms"]"#, tables));
    call(&lab, "911");
    let first = gateway.next_to(&rt, "/send");
    let retried = gateway.next_to(&rt, "/send");
    assert_eq!(first.body, retried.body, "the same SMS again");
    let sms: serde_json::Value = serde_json::from_slice(&retried.body).unwrap();
    assert_eq!(sms["number"], "+14255550199");
    assert!(
        sms["message"].as_str().unwrap().starts_with("EMERGENCY CALL 911: Alice Example cb +14255550123."),
        "{sms}"
    );
    let count = std::cell::Cell::new(0);
    lab.wait_for(&mut Vec::new(), "two attempts audited", |e| {
        count.set(count.get() + matches!(e.kind, CallEventKind::Notified { .. }) as usize);
        count.get() >= 2
    });
    lab.stop();
    let n = notified(&lab.audit_events());
    assert_eq!(n.len(), 2, "{n:#?}");
    assert!(!n[0].1 && n[0].2.ends_with("attempt 1: failed (HTTP 503); retry in 1 s"), "{n:#?}");
    assert!(n[1].1 && n[1].2.ends_with("attempt 2: accepted (HTTP 200)"), "{n:#?}");
}
