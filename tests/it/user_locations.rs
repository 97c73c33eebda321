//! User-entered locations (issue 16 item 3) through the running core: entered over the API or
//! PUBLISHed by the phone, validated against the lab's MSAG, used for the owner's calls off the
//! mapped network — marked "user-entered — verify with the caller" on the event and the audit
//! record, `Manual` in the PIDF-LO sent to the provider — and not used from another network until
//! confirmed. The wiremap wins over an entry on a mapped network; an entry wins over the site's
//! default. On both stores (the lab's SQLite file and PostgreSQL) for the store's part.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sosdesk::api::encode_base64;
use sosdesk::events::CallEventKind;
use sosdesk::location::user_entered::{STALE_NOTE, VERIFY_NOTE};
use sosdesk::location::LocationSource;
use support::lab::{pidf_part, Lab};
use support::store::{store_test, TestDb};
use support::xmllint::validate_pidf_lo;

/// The caller of the lab's sipp scenarios (`From: +15555550100`) and its remote user's account.
const OWNER: &str = "+15555550100";
const USER: (&str, &str) = ("alice", "alice-home-secret");
const ADMIN: (&str, &str) = ("desk2", "control-room-secret");

/// The lab with two remote users' accounts, and its MSAG extract (`examples/msag.csv`).
fn with_users(config: String) -> String {
    let msag = support::lab::repo().join("examples/msag.csv");
    let config = config.replace("msag = \"msag.csv\"", &format!("msag = {:?}", msag.display().to_string()));
    config.replacen(
        "[lis]\n",
        "[[lis.users]]\nusername = \"alice\"\npassword = \"alice-home-secret\"\nowner = \"+1-555-555-0100\"\n\n\
[[lis.users]]\nusername = \"bob\"\npassword = \"bob-home-secret\"\n\n[lis]\n",
        1,
    )
}

/// One API request: (status, body).
fn api(lab: &Lab, method: &str, path: &str, auth: Option<(&str, &str)>, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", lab.ports.api)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        req.push_str(&format!("Authorization: Basic {}\r\n", encode_base64(format!("{u}:{p}").as_bytes())));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The `user-location-changed` records of the lab's audit log (the core stopped), oldest first:
/// (change, owner, by, via, from, location, network).
fn changes(lab: &Lab) -> Vec<[String; 7]> {
    lab.audit_records("user-location-changed")
        .into_iter()
        .map(|r| {
            assert!(!r.event.kind.is_of_a_call(), "a record of no call");
            r.event.kind
        })
        .map(|kind| match kind {
            CallEventKind::UserLocationChanged { owner, change, by, via, from, location, network } => {
                [change, owner, by, via, from, location, network]
            }
            other => panic!("a user-location-changed row holds {other:?}"),
        })
        .collect()
}

/// An address in Redmond, WA (the lab's MSAG: Willows Rd 9000-9998 even).
fn entry(hno: &str, ip: &str) -> String {
    format!(
        r#"{{"address": {{"label": "Alice, home office", "country": "US", "a1": "WA", "a3": "Redmond", "rd": "Willows", "sts": "Rd", "hno": "{hno}", "pc": "98052"}}, "ip": "{ip}"}}"#
    )
}

fn path() -> String {
    format!("/api/v1/lis/user-locations/{}", OWNER.replace('+', "%2B"))
}

/// A HELD request sent from `src` (a loopback address): the whole HTTP response.
fn post_held_from(port: u16, src: &str, body: &str) -> String {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::new(src.parse().unwrap(), 0).into()).unwrap();
    socket.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST /held HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/held+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

/// A 911 call from `ip`; the INVITE the provider on `port` received.
fn call_from(lab: &Lab, name: &str, ip: &str, port: u16) -> String {
    let provider = lab.uas(&format!("{name}-provider"), "provider_answer.xml", "127.0.0.1", port, &[]);
    lab.uac(name, "caller_hangs_up.xml", ip, &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    p.received_request("INVITE")
}

store_test!(sync an_entered_address_is_validated_kept_and_used_for_the_owners_calls_marked);
fn an_entered_address_is_validated_kept_and_used_for_the_owners_calls_marked(db: TestDb) {
    let mut lab = Lab::start_on(db, with_users);
    let path = path();

    // No credentials, wrong ones, another user's location: refused.
    assert_eq!(api(&lab, "PUT", &path, None, Some(&entry("9100", "127.0.0.6"))).0, 401);
    assert_eq!(api(&lab, "PUT", &path, Some(("alice", "wrong-password")), Some(&entry("9100", "127.0.0.6"))).0, 401);
    let (status, body) = api(&lab, "PUT", &path, Some(("bob", "bob-home-secret")), Some(&entry("9100", "127.0.0.6")));
    assert_eq!(status, 403, "{body}");
    // An address the MSAG does not have: refused with the reason, nothing kept.
    let (status, body) = api(&lab, "PUT", &path, Some(USER), Some(&entry("9101", "127.0.0.6")));
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("9101"), "the reason names the house number: {body}");
    assert_eq!(api(&lab, "GET", &path, Some(USER), None).0, 404);

    // A valid one, from the device's network (127.0.0.6: no site, no wiremap — the ECRC without it).
    let (status, body) = api(&lab, "PUT", &path, Some(USER), Some(&entry("9100", "127.0.0.6")));
    assert_eq!(status, 200, "{body}");
    let kept: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((kept["owner"].as_str(), kept["network"]["ip"].as_str()), (Some(OWNER), Some("127.0.0.6")));
    assert_eq!(kept["entered_by"], "user alice");

    // The call goes to the located route with the entered address, marked Manual.
    let invite = call_from(&lab, "located", "127.0.0.6", lab.ports.primary);
    let pidf = pidf_part(&invite);
    validate_pidf_lo(&pidf).unwrap();
    for text in ["<ca:HNO>9100</ca:HNO>", "<ca:RD>Willows</ca:RD>", "<gp:method>Manual</gp:method>"] {
        assert!(pidf.contains(text), "{text} missing from\n{pidf}");
    }
    let mut seen = Vec::new();
    let ev = lab.wait_for(&mut seen, "detected", |e| matches!(e.kind, CallEventKind::Detected));
    assert_eq!(ev.location.source, LocationSource::Manual);
    assert_eq!(ev.location.warnings.first().map(String::as_str), Some(VERIFY_NOTE));

    // HELD answers the device asking from that address with the entry, method Manual; a request
    // naming the address (from elsewhere) does not get it: anyone can name an address.
    let held_port = lab.core.as_ref().unwrap().held.expect("HELD is on in the lab").port();
    let own = r#"<locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held"><locationType exact="false">civic</locationType></locationRequest>"#;
    let resp = post_held_from(held_port, "127.0.0.6", own);
    let held = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    support::xmllint::validate_held(held).unwrap();
    assert!(held.contains("<ca:HNO>9100</ca:HNO>") && held.contains("<gp:method>Manual</gp:method>"), "{held}");
    let resp = support::lab::post_held(
        held_port,
        r#"<locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held"><locationType exact="false">civic</locationType>
  <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"><ip v="4">127.0.0.6</ip></device></locationRequest>"#,
    );
    assert!(!resp.contains("9100"), "a named address got the user's entry: {resp}");

    // The admin list (CLI) shows it; the user's own list too, another user's does not.
    let out = lab.cli_store(&["lis", "user-location", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(OWNER) && text.contains("9100"), "{text}");
    assert!(api(&lab, "GET", "/api/v1/lis/user-locations", Some(USER), None).1.contains("9100"));
    assert_eq!(api(&lab, "GET", "/api/v1/lis/user-locations", Some(("bob", "bob-home-secret")), None).1, "[]");

    // The user confirms it (the same address, from where the request comes); an admin clears it.
    let (status, body) = api(&lab, "POST", &format!("{path}/confirm"), Some(USER), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(api(&lab, "DELETE", &path, Some(ADMIN), None).0, 204);
    assert_eq!(api(&lab, "DELETE", &path, Some(ADMIN), None).0, 404, "cleared already");
    // The CLI, while the core writes the same audit chain: bob's set (refused, then kept), cleared.
    let msag = support::lab::repo().join("examples/msag.csv");
    let msag = msag.to_str().unwrap();
    let set = |hno: &str| {
        let civic = ["country=US", "A1=WA", "A3=Redmond", "RD=Willows", "STS=Rd", &format!("HNO={hno}")]
            .map(|c| format!("--civic={c}"));
        let mut args = vec!["lis", "user-location", "set", "--owner", "bob", "--ip", "127.0.0.7", "--msag", msag];
        args.extend(civic.iter().map(String::as_str));
        lab.cli_store(&args)
    };
    assert!(!set("9101").status.success());
    for _ in 0..2 {
        let out = set("9100");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = lab.cli_store(&["lis", "user-location", "clear", "--owner", "bob"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    lab.stop();
    // Every kept change, and nothing refused (wrong credentials, another user's, not in the
    // MSAG, nothing to clear), is an audit record: who, whose, what, through what, from where.
    let all = changes(&lab);
    let api_rows: Vec<&[String; 7]> = all.iter().filter(|c| c[3] == "api").collect();
    let what: Vec<[&str; 4]> = api_rows.iter().map(|c| [&*c[0], &*c[1], &*c[2], &*c[3]]).collect();
    assert_eq!(
        what,
        [
            ["entered", OWNER, "user alice", "api"],
            ["confirmed", OWNER, "user alice", "api"],
            ["cleared", OWNER, "desk desk2", "api"],
        ],
        "{all:?}"
    );
    for c in &api_rows {
        assert!(c[4].starts_with("tcp:127.0.0.1:"), "the API client's address: {c:?}");
    }
    assert!(api_rows[0][5].starts_with("Alice, home office: 9100 Willows Rd, Redmond"), "{all:?}");
    assert!(api_rows[0][6].starts_with("127.0.0.6 (127.0.0.0/24)"), "{all:?}");
    assert!(api_rows[2][5].is_empty() && api_rows[2][6].is_empty(), "{all:?}");
    let cli: Vec<[&str; 5]> =
        all.iter().filter(|c| c[3] == "cli").map(|c| [&*c[0], &*c[1], &*c[2], &*c[3], &*c[4]]).collect();
    assert_eq!(
        cli,
        [
            ["entered", "bob", "cli", "cli", ""],
            ["confirmed", "bob", "cli", "cli", ""],
            ["cleared", "bob", "cli", "cli", ""]
        ],
        "{all:?}"
    );
    assert_eq!(all.len(), 6, "{all:?}");
    let out = lab.cli_store(&["audit", "export", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.contains("user-location-changed,") && csv.contains("user-entered location of bob cleared by cli (cli)"),
        "{csv}"
    );
    let audited = lab.audit_events();
    let ev = audited.iter().find(|e| matches!(e.kind, CallEventKind::Detected)).expect("the call is audited");
    assert_eq!(ev.location.source, LocationSource::Manual);
    assert_eq!(ev.location.method.as_deref(), Some("Manual"));
    assert_eq!(ev.location.warnings.first().map(String::as_str), Some(VERIFY_NOTE));
    assert_eq!(ev.location.erl.as_ref().and_then(|e| e.civic.hno.as_deref()), Some("9100"));
    lab.assert_audit_verifies();
}

#[test]
fn an_entry_is_not_used_from_another_network_until_the_phone_confirms_it() {
    let mut lab = Lab::start_with(with_users);
    let path = path();
    let sip = ([127, 0, 0, 1], lab.ports.sip).into();
    let auth_uri = format!("{OWNER}@127.0.0.1:{}", lab.ports.sip);
    let auth = ["-s", OWNER, "-au", USER.0, "-ap", USER.1, "-auth_uri", auth_uri.as_str()];
    let publish = |lab: &Lab, name: &str, from: &str| {
        let mut args = auth.to_vec();
        args.extend(["-set", "rd", "Willows Rd", "-set", "hno", "9100"]);
        let run = lab.uac_to(name, "publish_location.xml", from, sip, &args).wait();
        run.assert_ok();
        let answer = run.received().into_iter().last().unwrap_or_default();
        assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
        support::lab::header_of(&answer, "SIP-ETag").expect("an entity-tag").trim().to_string()
    };
    let refresh = |lab: &Lab, name: &str, from: &str, etag: &str| {
        let args = [&auth[..], &["-set", "etag", etag]].concat();
        let run = lab.uac_to(name, "publish_refresh.xml", from, sip, &args).wait();
        run.assert_ok();
        run.received().into_iter().last().unwrap_or_default()
    };
    // The phone publishes its address at home (127.0.0.0/24).
    let etag = publish(&lab, "home", "127.0.0.6");

    // It moves to 127.0.1.0/24 and refreshes its publication by itself (RFC 3903 §4.3): the
    // publication is extended, but that is not the user confirming the address there.
    let answer = refresh(&lab, "moved", "127.0.1.6", &etag);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    let etag = support::lab::header_of(&answer, "SIP-ETag").expect("a new entity-tag").trim().to_string();
    let (_, body) = api(&lab, "GET", &path, Some(ADMIN), None);
    let kept: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(kept["network"]["ip"], "127.0.0.6", "a refresh recorded the new network: {body}");
    // A tag that is not the publication's: 412, nothing changed.
    let answer = refresh(&lab, "wrong-tag", "127.0.1.6", "not-the-etag");
    assert!(answer.starts_with("SIP/2.0 412"), "{answer}");

    // A call from the new network: the entry is stale — the ECRC route, and the note says why.
    let invite = call_from(&lab, "stale", "127.0.1.6", lab.ports.secondary);
    assert!(!invite.contains("9100"), "the stale address went out:\n{invite}");
    let mut seen = Vec::new();
    let ev = lab.wait_for(&mut seen, "detected", |e| matches!(e.kind, CallEventKind::Detected));
    assert_eq!(ev.location.source, LocationSource::None);
    let note = ev.location.warnings.iter().find(|w| w.starts_with(STALE_NOTE)).expect("the stale entry is noted");
    assert!(note.contains("127.0.0.0/24") && note.contains("127.0.1.0/24"), "{note}");
    // The refresh did not make it current either.
    assert!(refresh(&lab, "again", "127.0.1.6", &etag).starts_with("SIP/2.0 200"));

    // The user confirms the address from where the phone is now (a PUBLISH with the address).
    publish(&lab, "confirm", "127.0.1.6");
    let (_, body) = api(&lab, "GET", &path, Some(ADMIN), None);
    let kept: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(kept["network"]["ip"], "127.0.1.6", "{body}");
    assert_eq!(kept["entered_by"], "sip-publish user alice");

    let invite = call_from(&lab, "confirmed", "127.0.1.6", lab.ports.primary);
    let pidf = pidf_part(&invite);
    validate_pidf_lo(&pidf).unwrap();
    assert!(pidf.contains("<ca:HNO>9100</ca:HNO>") && pidf.contains("<gp:method>Manual</gp:method>"), "{pidf}");
    let ev = lab.wait_for(&mut seen, "second detected", |e| {
        matches!(e.kind, CallEventKind::Detected) && e.location.source == LocationSource::Manual
    });
    assert_eq!(ev.location.warnings.first().map(String::as_str), Some(VERIFY_NOTE));

    // Audited: the entry and the user's confirmation from the new network, each with the
    // PUBLISH's source; the refreshes and the refused one changed nothing and are not records.
    lab.stop();
    let all = changes(&lab);
    let what: Vec<[&str; 4]> = all.iter().map(|c| [&*c[0], &*c[2], &*c[3], &*c[6]]).collect();
    assert_eq!(
        what,
        [
            ["entered", "sip-publish user alice", "publish", "127.0.0.6 (127.0.0.0/24)"],
            ["confirmed", "sip-publish user alice", "publish", "127.0.1.6 (127.0.1.0/24)"],
        ],
        "{all:?}"
    );
    assert!(all[0][4].starts_with("udp:127.0.0.6:") && all[1][4].starts_with("udp:127.0.1.6:"), "{all:?}");
    lab.assert_audit_verifies();
}

#[test]
fn an_entry_keeps_no_elin_or_floor_plan_a_user_gives() {
    let mut lab = Lab::start_with(with_users);
    // The ELIN sent to the PSAP and the floor plan are the organisation's, not the user's.
    let body = entry("9100", "127.0.0.6").replacen(
        r#""pc": "98052""#,
        r#""pc": "98052", "elins": ["4255550199"], "floor_plan": {"plan": "ab12", "x": 0.5, "y": 0.5}"#,
        1,
    );
    let (status, body) = api(&lab, "PUT", &path(), Some(USER), Some(&body));
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("4255550199") && !body.contains("floor_plan"), "{body}");
    let (_, body) = api(&lab, "GET", &path(), Some(ADMIN), None);
    assert!(!body.contains("4255550199") && !body.contains("floor_plan"), "{body}");
    let invite = call_from(&lab, "located", "127.0.0.6", lab.ports.primary);
    assert!(invite.contains("<ca:HNO>9100</ca:HNO>") && !invite.contains("4255550199"), "{invite}");
    let mut seen = Vec::new();
    let ev = lab.wait_for(&mut seen, "detected", |e| matches!(e.kind, CallEventKind::Detected));
    assert_eq!(ev.location.source, LocationSource::Manual);
    assert!(ev.location.erl.as_ref().is_some_and(|e| e.elins.is_empty() && e.floor_plan.is_none()));
}

store_test!(sync a_phone_publishes_its_address_as_a_pidf_lo_and_an_invalid_one_is_refused);
fn a_phone_publishes_its_address_as_a_pidf_lo_and_an_invalid_one_is_refused(db: TestDb) {
    let mut lab = Lab::start_on(db, with_users);
    let sip = ([127, 0, 0, 1], lab.ports.sip).into();
    // sipp digests `sip:remote_ip:port` unless told the Request-URI it sends.
    let auth_uri = format!("{OWNER}@127.0.0.1:{}", lab.ports.sip);
    let auth = ["-s", OWNER, "-au", USER.0, "-ap", USER.1, "-auth_uri", auth_uri.as_str()];
    // Not in the MSAG (odd house number): 488 and a Warning naming it; nothing kept.
    let mut args = auth.to_vec();
    args.extend(["-set", "rd", "Willows Rd", "-set", "hno", "9101"]);
    let run = lab.uac_to("invalid", "publish_location.xml", "127.0.0.6", sip, &args).wait();
    run.assert_ok();
    let answer = run.received().into_iter().last().unwrap_or_default();
    assert!(answer.starts_with("SIP/2.0 488"), "{answer}");
    assert!(support::lab::header_of(&answer, "Warning").is_some_and(|w| w.contains("9101")), "{answer}");
    assert_eq!(api(&lab, "GET", &path(), Some(USER), None).0, 404);

    // Bob may not publish Alice's location.
    let bob = ["-s", OWNER, "-au", "bob", "-ap", "bob-home-secret", "-auth_uri", auth_uri.as_str()];
    let bob = [&bob[..], &["-set", "rd", "Willows Rd", "-set", "hno", "9100"]].concat();
    let run = lab.uac_to("bob", "publish_location.xml", "127.0.0.6", sip, &bob).wait();
    assert!(run.received().iter().any(|m| m.starts_with("SIP/2.0 403")), "{:?}", run.received());

    // A valid one: 200 with an entity-tag, kept with the phone's address.
    let mut args = auth.to_vec();
    args.extend(["-set", "rd", "Willows Rd", "-set", "hno", "9100"]);
    let run = lab.uac_to("valid", "publish_location.xml", "127.0.0.6", sip, &args).wait();
    run.assert_ok();
    let answer = run.received().into_iter().last().unwrap_or_default();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert!(support::lab::header_of(&answer, "SIP-ETag").is_some(), "{answer}");
    let (status, body) = api(&lab, "GET", &path(), Some(USER), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"127.0.0.6\"") && body.contains("9100"), "{body}");

    // The phone removes its publication (RFC 3903 §4.5): the entry is cleared.
    let etag = support::lab::header_of(&answer, "SIP-ETag").unwrap().trim().to_string();
    let args = [&auth[..], &["-set", "etag", etag.as_str()]].concat();
    let run = lab.uac_to("remove", "publish_remove.xml", "127.0.0.6", sip, &args).wait();
    run.assert_ok();
    let answer = run.received().into_iter().last().unwrap_or_default();
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert_eq!(api(&lab, "GET", &path(), Some(USER), None).0, 404);

    // The kept entry and its removal are audited (the refused ones are not), by the PUBLISH's
    // user, from its source; the chain still verifies.
    lab.stop();
    let all = changes(&lab);
    let what: Vec<[&str; 4]> = all.iter().map(|c| [&*c[0], &*c[1], &*c[2], &*c[3]]).collect();
    assert_eq!(
        what,
        [
            ["entered", OWNER, "sip-publish user alice", "publish"],
            ["cleared", OWNER, "sip-publish user alice", "publish"],
        ],
        "{all:?}"
    );
    assert!(all.iter().all(|c| c[4].starts_with("udp:127.0.0.6:")), "{all:?}");
    assert!(all[0][5].contains("9100 Willows Rd") && all[0][6].starts_with("127.0.0.6 "), "{all:?}");
    lab.assert_audit_verifies();
}

/// Two nodes on one PostgreSQL store (issue 14): the phone publishes through node A, and its
/// refresh reaches node B (a failover, its DNS). B finds the publication's entity-tag in the
/// store, so the refresh extends it (200, a new tag) and records nothing — where a 412 would make
/// the phone publish its body again, which counts as the user confirming the address from
/// wherever the phone is now. A's old tag is dead everywhere after that (412), and the phone's
/// removal through A with B's tag clears the entry for both.
#[test]
fn a_publication_kept_through_one_node_is_refreshed_and_removed_through_another() {
    let db = TestDb::postgres();
    let on = |node: &str, config: String| {
        with_users(db.set_store(&config)).replacen("[store]\n", &format!("[store]\nnode = {node:?}\n"), 1)
    };
    let mut a = Lab::start_with(|c| on("a", c));
    let b = Lab::start_with(|c| on("b", c));
    let auth_uri = |lab: &Lab| format!("{OWNER}@127.0.0.1:{}", lab.ports.sip);
    let send = |lab: &Lab, name: &str, scenario: &str, from: &str, extra: &[&str]| {
        let uri = auth_uri(lab);
        let mut args = vec!["-s", OWNER, "-au", USER.0, "-ap", USER.1, "-auth_uri", uri.as_str()];
        args.extend_from_slice(extra);
        let run = lab.uac_to(name, scenario, from, ([127, 0, 0, 1], lab.ports.sip).into(), &args).wait();
        run.assert_ok();
        run.received().into_iter().last().unwrap_or_default()
    };
    let etag_of = |answer: &str| support::lab::header_of(answer, "SIP-ETag").expect("an entity-tag").trim().to_string();

    // Published at home through A.
    let answer =
        send(&a, "home", "publish_location.xml", "127.0.0.6", &["-set", "rd", "Willows Rd", "-set", "hno", "9100"]);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    let first = etag_of(&answer);

    // Refreshed by the phone through B, from another network: extended, with a new tag.
    let answer = send(&b, "refresh-b", "publish_refresh.xml", "127.0.1.6", &["-set", "etag", first.as_str()]);
    assert!(answer.starts_with("SIP/2.0 200"), "node B did not know A's publication: {answer}");
    let second = etag_of(&answer);
    assert_ne!(second, first, "a new entity-tag each time (RFC 3903 §6 step 7)");
    // The refresh recorded no network: the entry, as B reads it once it has loaded A's change
    // (within lis.refresh_ms), is still the one from home.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (status, body) = api(&b, "GET", &path(), Some(ADMIN), None);
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "node B never loaded the entry: {status} {body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let kept: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(kept["network"]["ip"], "127.0.0.6", "{body}");

    // A's tag is now dead, on A as well: 412.
    let answer = send(&a, "stale-tag", "publish_refresh.xml", "127.0.0.6", &["-set", "etag", first.as_str()]);
    assert!(answer.starts_with("SIP/2.0 412"), "{answer}");

    // Removed through A with B's tag: gone for both nodes.
    let answer = send(&a, "remove", "publish_remove.xml", "127.0.0.6", &["-set", "etag", second.as_str()]);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while api(&b, "GET", &path(), Some(ADMIN), None).0 != 404 {
        assert!(Instant::now() < deadline, "node B kept the entry its publication removed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Audited once each, through A; the refresh through B was no confirmation.
    a.stop();
    a.db = Some(db);
    let what: Vec<[String; 3]> = changes(&a).into_iter().map(|c| [c[0].clone(), c[1].clone(), c[3].clone()]).collect();
    let want = [["entered", OWNER, "publish"], ["cleared", OWNER, "publish"]].map(|r| r.map(String::from));
    assert_eq!(what, want);
}

#[test]
fn the_wiremap_wins_on_a_mapped_network_and_an_entry_wins_over_the_site_default() {
    let mut lab = Lab::start_with(with_users);
    // 127.0.0.2 is in the wiremap; 127.0.0.1 is the lab's site "hq" with its default ERL.
    let csv = lab.dir.path().join("subnets.csv");
    std::fs::write(
        &csv,
        "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\n\
127.0.0.2/32,Lab desk,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US\n",
    )
    .unwrap();
    let out = lab.cli_store(&["lis", "import", csv.to_str().unwrap(), "--kind", "subnets"]);
    assert!(out.status.success());
    let wiremap = lab.core.as_ref().unwrap().wiremap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wiremap.load().is_empty() {
        assert!(Instant::now() < deadline, "the core did not load the import");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The entry is current for both (127.0.0.0/24).
    let (status, body) = api(&lab, "PUT", &path(), Some(USER), Some(&entry("9100", "127.0.0.2")));
    assert_eq!(status, 200, "{body}");

    let pidf = pidf_part(&call_from(&lab, "mapped", "127.0.0.2", lab.ports.primary));
    assert!(pidf.contains("<ca:HNO>1234</ca:HNO>") && pidf.contains("<gp:method>Wiremap</gp:method>"), "{pidf}");
    let pidf = pidf_part(&call_from(&lab, "site", "127.0.0.1", lab.ports.primary));
    assert!(pidf.contains("<ca:HNO>9100</ca:HNO>") && pidf.contains("<gp:method>Manual</gp:method>"), "{pidf}");
    let mut seen = Vec::new();
    lab.wait_for(&mut seen, "the second call", |e| {
        matches!(e.kind, CallEventKind::Detected) && e.location.source == LocationSource::Manual
    });
    let first = seen.iter().find(|e| matches!(e.kind, CallEventKind::Detected)).unwrap();
    assert_eq!(first.location.source, LocationSource::Wiremap);
    assert!(!first.location.warnings.iter().any(|w| w == VERIFY_NOTE));

    // The admin clears it from the CLI; the running core drops it (within lis.refresh_ms).
    let out = lab.cli_store(&["lis", "user-location", "clear", "--owner", OWNER]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    while api(&lab, "GET", &path(), Some(ADMIN), None).0 != 404 {
        assert!(Instant::now() < deadline, "the running core kept a cleared entry");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pidf = pidf_part(&call_from(&lab, "after-clear", "127.0.0.1", lab.ports.primary));
    assert!(pidf.contains("<ca:HNO>1</ca:HNO>") && !pidf.contains("9100"), "the site's ERL again: {pidf}");
}

#[test]
fn the_cli_refuses_an_address_the_msag_does_not_have_and_sets_a_valid_one() {
    let lab = Lab::start_with(with_users);
    let config = lab.config_path.to_str().unwrap().to_string();
    let civic = |hno: &str| {
        [
            "--civic",
            "country=US",
            "--civic",
            "A1=WA",
            "--civic",
            "A3=Redmond",
            "--civic",
            "RD=Willows",
            "--civic",
            "STS=Rd",
        ]
        .into_iter()
        .map(String::from)
        .chain(["--civic".to_string(), format!("HNO={hno}")])
        .collect::<Vec<_>>()
    };
    let run = |hno: &str| {
        let mut args: Vec<String> =
            ["lis", "user-location", "set", "--config", &config, "--owner", "bob", "--ip", "127.0.0.7"]
                .into_iter()
                .map(String::from)
                .collect();
        args.extend(civic(hno));
        lab.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("9101");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not valid") && err.contains("9101"), "{err}");
    let out = run("9100");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = lab.cli(&["lis", "user-location", "list", "--json", "--config", &config]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["owner"], "bob");
    assert_eq!(list[0]["network"]["ip"], "127.0.0.7");
    assert_eq!(list[0]["entered_by"], "cli");
}
