//! Live route health (issue 13) through the running core: OPTIONS probes on the wire, a silent
//! route taken down with hysteresis, audited and pushed to desks, shown by the API, and tried
//! last by the next emergency call.

use crate::support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sosdesk::api::encode_base64;
use sosdesk::events::CallEventKind;
use support::lab::Lab;

/// A provider that answers OPTIONS with 200 (and nothing else) on `sock`, until `stop`;
/// returns the OPTIONS it received.
fn options_responder(sock: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::SeqCst) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            let Ok(m) = sosdesk::sip::parse::parse_datagram(&buf[..n]) else { continue };
            if m.method() == "OPTIONS" {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let r = m.response(200, "OK", Some("prov1"));
                sock.send_to(&r.to_bytes(), from).unwrap();
            }
        }
        seen
    })
}

fn api_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = encode_base64(b"desk1:lobby-desk-secret");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
}

#[test]
fn a_silent_route_goes_down_is_audited_shown_and_tried_last() {
    let mut lab = Lab::start_with(|c| {
        c.replace("health_interval_s = 0", "health_interval_s = 1")
            .replace("route_timeout_ms = 2000", "route_timeout_ms = 400")
    });
    // The secondary answers OPTIONS; nothing listens on the primary.
    let stop = Arc::new(AtomicBool::new(false));
    let secondary = options_responder(UdpSocket::bind(("127.0.0.1", lab.ports.secondary)).unwrap(), stop.clone());
    let mut seen = Vec::new();
    let down = lab.wait_for(&mut seen, "route-down", |e| matches!(e.kind, CallEventKind::RouteDown { .. }));
    let CallEventKind::RouteDown { route, detail } = &down.kind else { unreachable!() };
    assert_eq!(route, "provider-primary");
    assert_eq!(detail, "route provider-primary is down: 2 probes in a row failed (last: no answer within 400 ms)");
    // The secondary's first answer is said too: every desk shows it up at once.
    let up = lab.wait_for(
        &mut seen,
        "route-up",
        |e| matches!(&e.kind, CallEventKind::RouteUp { route, .. } if route == "provider-secondary"),
    );
    assert!(
        matches!(&up.kind, CallEventKind::RouteUp { detail, .. } if detail == "route provider-secondary answers (200 OK)"),
        "{:?}",
        up.kind
    );

    // The API shows each route's state, last answer and round-trip time.
    let (status, body) = api_get(lab.ports.api, "/api/v1/routes");
    assert_eq!(status, 200, "{body}");
    let routes: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let by_name = |n: &str| routes.iter().find(|r| r["route"] == n).unwrap_or_else(|| panic!("{n} in {body}")).clone();
    let (p, s) = (by_name("provider-primary"), by_name("provider-secondary"));
    assert_eq!((p["state"].as_str(), p["last"].as_str()), (Some("down"), Some("no answer within 400 ms")), "{p}");
    assert_eq!((s["state"].as_str(), s["last"].as_str()), (Some("up"), Some("200 OK")), "{s}");
    assert!(s["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{s}");
    assert!(p["rtt_ms"].is_null());

    // So does `sosdesk routes`, asking the running core with the config's desk account.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sosdesk"))
            .arg("routes")
            .arg("--config")
            .arg(&lab.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let table = cli(&[]);
    let line = table.lines().find(|l| l.starts_with("provider-primary")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(" DOWN ") && line.contains("no answer within 400 ms at "), "{table}");
    let json: Vec<serde_json::Value> = serde_json::from_str(&cli(&["--json"])).unwrap();
    assert_eq!(json.len(), 3, "every route of the config");

    // The next emergency call tries the secondary first.
    let caller = lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]);
    let routed = lab.wait_for(&mut seen, "routed", |e| e.kind == CallEventKind::Routed);
    assert_eq!(routed.route.as_ref().map(|r| (r.name.as_str(), r.attempt)), Some(("provider-secondary", 0)));
    drop(caller);
    stop.store(true, Ordering::SeqCst);
    let options = secondary.join().unwrap();
    let probe = options.first().expect("the secondary was probed");
    assert!(probe.starts_with("OPTIONS sip:127.0.0.1:"), "{probe}");
    assert!(probe.contains("\r\nMax-Forwards: 70\r\n") && probe.contains("\r\nCSeq: 1 OPTIONS\r\n"), "{probe}");
    lab.stop();
    // In the audit log (its chain intact), not in the call history.
    let verify = lab.cli_store(&["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    let downs: (i64,) = lab.rt.block_on(async {
        use sqlx::{ConnectOptions as _, Connection as _};
        let mut c = sqlx::sqlite::SqliteConnectOptions::new().filename(lab.store_path()).connect().await.unwrap();
        let n =
            sqlx::query_as("SELECT count(*) FROM events WHERE kind = 'route-down'").fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    });
    // The primary and the ELIN gateway (nothing listens there either), once each: one record
    // per change, not one per probe.
    assert_eq!(downs.0, 2);
    assert!(lab.audit_events().iter().all(|e| e.kind.is_of_a_call()), "no route record in the call history");
}

/// Issue 13: a provider that takes calls only from a registered trunk: sosdesk registers the
/// route (`register = true`) with its digest credentials, and shows the registration with the
/// route's health.
#[test]
fn a_route_with_register_registers_with_its_credentials() {
    let lab = Lab::start_with(|c| {
        let marker = "     # host of the Request-URI and To\n";
        assert!(c.contains(marker), "the lab's primary route changed");
        c.replace(marker, "\nusername = \"trunk1\"\npassword = \"trunk-secret\"\nregister = true\nexpires = 300\n")
    });
    let registrar = lab.uas("registrar", "provider_register.xml", "127.0.0.1", lab.ports.primary, &[]);
    let r = registrar.wait();
    r.assert_ok();
    assert_eq!(r.logged("auth.valid").as_deref(), Some("1"));
    assert_eq!(r.logged("register.expires").as_deref(), Some("300"));
    assert_eq!(r.logged("register.cseq").as_deref(), Some("2"));
    assert!(r.logged("register.to").unwrap().starts_with("<sip:trunk1@127.0.0.1:"), "{:?}", r.logged("register.to"));
    // The state the core shows (the 200 is handled as soon as it arrives; polled with a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let primary = loop {
        let (status, body) = api_get(lab.ports.api, "/api/v1/routes");
        assert_eq!(status, 200, "{body}");
        let routes: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let p = routes.into_iter().find(|r| r["route"] == "provider-primary").unwrap();
        if p["registration"].as_str().is_some_and(|s| s.starts_with("registered until ")) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "not registered: {p}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(primary["registration"].as_str().unwrap().ends_with(" UTC"), "{primary}");
}
