//! The unlocated report (issue 16) through the running core: calls and HELD requests the wiremap
//! could not locate are counted per subnet and access point, each new element is announced once
//! (audit record, every desk's event stream), and `sosdesk lis unlocated` and the API list them
//! with the share the wiremap located. On both stores: the lab's SQLite file and PostgreSQL.

use crate::support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use sosdesk::api::encode_base64;
use sosdesk::events::CallEventKind;
use support::lab::Lab;
use support::store::{store_test, TestDb};

fn report(lab: &Lab) -> serde_json::Value {
    let out = lab.cli_store(&["lis", "unlocated", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn element<'a>(report: &'a serde_json::Value, kind: &str, element: &str) -> Option<&'a serde_json::Value> {
    report["elements"].as_array().unwrap().iter().find(|e| e["kind"] == kind && e["element"] == element)
}

/// The network team's SIP client: answers every MESSAGE 200 and keeps their bodies.
fn message_receiver(sock: UdpSocket, want: usize) -> std::thread::JoinHandle<Vec<String>> {
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < want {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            let Ok(m) = sosdesk::sip::parse::parse_datagram(&buf[..n]) else { continue };
            if m.method() == "MESSAGE" {
                sock.send_to(&m.response(200, "OK", Some("netops")).to_bytes(), from).unwrap();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !got.contains(&text) {
                    got.push(text);
                }
            }
        }
        got
    })
}

store_test!(sync calls_and_held_requests_the_wiremap_cannot_locate_are_reported_per_subnet_and_access_point);
fn calls_and_held_requests_the_wiremap_cannot_locate_are_reported_per_subnet_and_access_point(db: TestDb) {
    let netops = UdpSocket::bind("127.0.0.1:0").unwrap();
    let netops_uri = format!("sip:netops@{}", netops.local_addr().unwrap());
    let received = message_receiver(netops, 2);
    let mut lab = Lab::start_on(db, |c| {
        c.replacen("[lis]\n", &format!("[lis]\nunlocated_notification_uris = [\"{netops_uri}\"]\n"), 1)
    });
    // The wiremap knows 127.0.0.2 only.
    let csv = lab.dir.path().join("subnets.csv");
    std::fs::write(
        &csv,
        "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\n\
127.0.0.2/32,Lab desk,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US\n",
    )
    .unwrap();
    let out = lab.cli_store(&["lis", "import", csv.to_str().unwrap(), "--kind", "subnets"]);
    assert!(out.status.success());
    let held_port = lab.core.as_ref().unwrap().held.expect("HELD is on in the lab").port();
    let wiremap = lab.core.as_ref().unwrap().wiremap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wiremap.load().is_empty() {
        assert!(Instant::now() < deadline, "the core did not load the import");
        std::thread::sleep(Duration::from_millis(20));
    }

    // One call the wiremap locates; two from 127.0.0.6, which it does not (no site either).
    let provider = lab.uas("p1", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("located", "caller_hangs_up.xml", "127.0.0.2", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    provider.wait().assert_ok();
    for n in 0..2 {
        let provider = lab.uas(&format!("p{n}"), "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
        lab.uac(&format!("lost-{n}"), "caller_hangs_up.xml", "127.0.0.6", &["-s", "911", "-set", "hold_ms", "50"])
            .wait()
            .assert_ok();
        provider.wait().assert_ok();
    }
    // A laptop the wiremap does not know asks HELD, naming its access point.
    let answer = support::lab::post_held(
        held_port,
        r#"<locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held" responseTime="emergencyRouting">
  <locationType exact="false">civic</locationType>
  <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id" xmlns:att="urn:x-sosdesk:params:xml:ns:held:attachment">
    <ip v="4">127.0.0.9</ip>
    <att:bssid>02-00-00-00-00-09</att:bssid>
  </device>
</locationRequest>"#,
    );
    assert!(answer.contains("locationUnknown"), "{answer}");

    // Each new element is announced once, to every desk: the subnet (by the first lost call)
    // and the access point (by the HELD request).
    let mut seen = Vec::new();
    for (kind, name) in [("subnet", "127.0.0.0/24"), ("access-point", "02-00-00-00-00-09")] {
        let ev = lab.wait_for(&mut seen, name, |e| {
            matches!(&e.kind, CallEventKind::UnlocatedNetwork { element_kind, element, .. } if element_kind == kind && element == name)
        });
        assert_eq!(ev.kind.name(), "unlocated-network");
    }

    // The report, once the last sighting is in: counts per element, and the share located.
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = report(&lab);
        if element(&r, "subnet", "127.0.0.0/24").is_some_and(|e| e["held"] == 1 && e["calls"] == 2) {
            break r;
        }
        assert!(Instant::now() < deadline, "the report did not catch up: {r:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let share = &r["share"];
    assert_eq!(
        (share["calls"].as_u64(), share["calls_by_wiremap"].as_u64(), share["calls_unlocated"].as_u64()),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!((share["held"].as_u64(), share["held_by_wiremap"].as_u64()), (Some(1), Some(0)));
    let ap = element(&r, "access-point", "02-00-00-00-00-09").expect("the access point is listed");
    assert_eq!((ap["calls"].as_u64(), ap["held"].as_u64()), (Some(0), Some(1)));
    assert_eq!(ap["last_device"], "ip 127.0.0.9, bssid 02-00-00-00-00-09");
    assert_eq!(r["elements"].as_array().unwrap().len(), 2, "{r:#}");

    let out = lab.cli_store(&["lis", "unlocated"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Located by the wiremap: calls 1 of 3 (33%), HELD requests 0 of 1 (0%)\n"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("subnet") && l.contains("127.0.0.0/24")), "{text}");

    // The API gives desks the same report.
    let mut s = TcpStream::connect(("127.0.0.1", lab.ports.api)).unwrap();
    let auth = encode_base64(b"desk1:lobby-desk-secret");
    write!(
        s,
        "GET /api/v1/lis/unlocated HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200") && raw.contains("\"127.0.0.0/24\""), "{raw}");

    // The network team was told of each, by SIP MESSAGE.
    let messages = received.join().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("Subject: sosdesk: new unlocated subnet 127.0.0.0/24")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("New unlocated access-point: 02-00-00-00-00-09")), "{messages:?}");

    lab.stop();
    // Announced once each, however many sightings followed.
    let out = lab.cli_store(&["audit", "export", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(csv.lines().filter(|l| l.contains(",unlocated-network,")).count(), 2, "{csv}");
    lab.assert_audit_verifies();
}

/// A new unlocated subnet is also told to `lis.unlocated_channels` (issue 16 item 1 with the
/// alert channels of issue 15): the email (STARTTLS) says which subnet and what to do, the
/// signed webhook carries the `unlocated-network` event; once, without an acknowledgement link,
/// and an emergency call's alert is not mistaken for it.
#[test]
fn a_new_unlocated_subnet_is_told_to_the_admins_channels() {
    use support::receivers::{HttpReceiver, SmtpSink};
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::make_pki(dir.path(), &["localhost"]);
    let smtp = SmtpSink::start(dir.path(), support::lab::free_port(), &pki.server_cert, &pki.server_key);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut hooks = HttpReceiver::start(&rt);
    let tables = format!(
        r#"
[[channel]]
name = "netops-email"
kind = "email"
server = "localhost"
port = {smtp}
tls = "starttls"
tls_ca = "{ca}"
from = "sosdesk@example.org"
to = ["netops@example.org"]

[[channel]]
name = "netops-hook"
kind = "webhook"
url = "http://127.0.0.1:{hook}/netops"
secret = "netops-secret-0123456789"
"#,
        smtp = smtp.port,
        ca = support::lab::path_str(&pki.ca_cert),
        hook = hooks.port,
    );
    let mut lab = Lab::start_with(move |c| {
        let c = c.replacen("[lis]\n", "[lis]\nunlocated_channels = [\"netops-email\", \"netops-hook\"]\n", 1);
        format!("{c}\n{tables}\n")
    });
    // 127.0.0.6: no wiremap row, no site.
    let provider = lab.uas("p", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("lost", "caller_hangs_up.xml", "127.0.0.6", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    provider.wait().assert_ok();

    let mail = smtp.wait_for(1).remove(0);
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["rcpt_tos"][0], "netops@example.org");
    assert_eq!(mail["subject"], "sosdesk: new unlocated subnet 127.0.0.0/24");
    assert_ne!(mail["importance"], "high", "an admin's task, not an emergency: {mail}");
    let text = mail["text"].as_str().unwrap();
    for want in ["New unlocated subnet: 127.0.0.0/24", "An emergency call from ip 127.0.0.6", "sosdesk lis unlocated"] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("/ack/"), "nothing to acknowledge:\n{text}");

    let hook = hooks.next(&rt, Duration::from_secs(30)).expect("the webhook");
    assert_eq!(hook.target, "/netops");
    let ev: sosdesk::events::CallEvent = serde_json::from_slice(&hook.body).unwrap();
    assert!(
        matches!(&ev.kind, CallEventKind::UnlocatedNetwork { element_kind, element, .. } if element_kind == "subnet" && element == "127.0.0.0/24"),
        "{ev:?}"
    );
    assert!(hook.header("x-sosdesk-ack-url").is_none());
    // The same subnet again is not news; the call's own alert goes to the policy's channels
    // (none here), never to these.
    let provider = lab.uas("p2", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("lost2", "caller_hangs_up.xml", "127.0.0.6", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    provider.wait().assert_ok();
    lab.stop();
    let out = lab.cli_store(&["audit", "export", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().filter(|l| l.contains(",unlocated-network,")).count(), 1, "announced once:\n{csv}");
    assert_eq!(smtp.received().len(), 1, "one email");
}
