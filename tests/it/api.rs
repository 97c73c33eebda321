//! The core's HTTP API for desks on other machines (issue 6), over real HTTP/1.1 (and HTTPS
//! with a certificate made by openssl): credentials refused and audited with a rate limit,
//! what a desk learns about itself, live events, an acknowledgement by one desk reaching another.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use sosdesk::api::client::{ApiClient, ClientError};
use sosdesk::api::{encode_base64, DeskInfo};
use sosdesk::config::AcknowledgeMode;
use sosdesk::events::{CallEvent, CallEventKind};
use support::lab::Lab;
use support::store::{store_test, TestDb};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(port: u16, tls: Option<&tokio_rustls::TlsConnector>) -> Box<dyn Stream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the API");
    match tls {
        None => Box::new(tcp),
        Some(c) => {
            let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            Box::new(c.connect(name, tcp).await.expect("TLS handshake"))
        }
    }
}

fn request(method: &str, path: &str, auth: Option<(&str, &str)>, body: Option<&str>) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        r.push_str(&format!("Authorization: Basic {}\r\n", encode_base64(format!("{u}:{p}").as_bytes())));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    r
}

/// One request, the whole response: (status, head, body).
async fn http(
    port: u16,
    tls: Option<&tokio_rustls::TlsConnector>,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = connect(port, tls).await;
    s.write_all(request(method, path, auth, body).as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A desk's live event stream (server-sent events).
struct Events {
    stream: Box<dyn Stream>,
    seen: String,
}

impl Events {
    async fn open(port: u16, user: &str, password: &str) -> Events {
        let mut stream = connect(port, None).await;
        stream.write_all(request("GET", "/api/v1/events", Some((user, password)), None).as_bytes()).await.unwrap();
        let mut e = Events { stream, seen: String::new() };
        e.until("the stream's headers", |s| s.contains("\r\n\r\n")).await;
        assert!(e.seen.starts_with("HTTP/1.1 200"), "{}", e.seen);
        assert!(e.seen.to_ascii_lowercase().contains("content-type: text/event-stream"));
        e
    }

    async fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let mut buf = [0u8; 4096];
        let wait = async {
            while !done(&self.seen) {
                let n = self.stream.read(&mut buf).await.unwrap_or(0);
                assert!(n > 0, "the event stream closed before {what}: {}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("no {what} on the event stream: {}", self.seen));
    }

    /// The `CallEvent`s received so far.
    fn events(&self) -> Vec<CallEvent> {
        self.seen
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    }
}

fn refusals(lab: &Lab) -> Vec<String> {
    lab.audit_events()
        .into_iter()
        .filter_map(|e| match e.kind {
            CallEventKind::Rejected { reason, .. } if reason.starts_with("API request") => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn credentials_are_required_checked_audited_and_rate_limited() {
    let mut lab = Lab::start_notifying(|c| c);
    let port = lab.ports.api;
    lab.rt.block_on(async {
        let (status, head, body) = http(port, None, "GET", "/api/v1/history", None, None).await;
        assert_eq!(status, 401, "{head}");
        assert!(head.contains("www-authenticate: Basic realm=\"sosdesk\""), "{head}");
        assert!(!body.contains("call"), "no content without credentials: {body}");
        let (status, ..) = http(port, None, "GET", "/api/v1/desk", Some(("desk1", "wrong-password")), None).await;
        assert_eq!(status, 401);
        let (status, ..) = http(port, None, "GET", "/api/v1/desk", Some(("nobody", "x")), None).await;
        assert_eq!(status, 401);
        let (status, _, body) =
            http(port, None, "GET", "/api/v1/desk", Some(("desk1", "lobby-desk-secret")), None).await;
        assert_eq!(status, 200, "{body}");
        let info: DeskInfo = serde_json::from_str(&body).unwrap();
        assert_eq!((info.name.as_str(), info.username.as_str(), info.talk), ("Lobby desk", "desk1", false));
        assert_eq!(info.sip_udp, Some(lab.ports.sip));
        let modes: Vec<_> = info.policies.iter().map(|p| (p.name.as_str(), p.acknowledge, p.two_way)).collect();
        assert!(modes.contains(&("us-hq", AcknowledgeMode::Any, true)), "{modes:?}");
        assert!(modes.contains(&("uk-london", AcknowledgeMode::Each, false)), "{modes:?}");
        // Each policy's routes in the order tried, its no-location usage last (a desk tells
        // from them whether the policy's calls can still get through).
        let warehouse = info.policies.iter().find(|p| p.name == "us-warehouse").unwrap();
        assert_eq!(warehouse.routes, ["elin-gateway", "provider-primary", "provider-secondary"]);
        // Good credentials started the count again; five wrong passwords in a row block the
        // address, right password or not.
        for _ in 0..5 {
            let (status, ..) = http(port, None, "GET", "/api/v1/desk", Some(("desk2", "guess")), None).await;
            assert_eq!(status, 401);
        }
        let (status, _, body) =
            http(port, None, "GET", "/api/v1/desk", Some(("desk1", "lobby-desk-secret")), None).await;
        assert_eq!(status, 429, "{body}");
        assert!(body.contains("too many wrong credentials"));
    });
    lab.stop();
    let r = refusals(&lab);
    assert_eq!(r.iter().filter(|r| r.contains("wrong password")).count(), 6, "{r:?}");
    assert_eq!(r.iter().filter(|r| r.contains("unknown user")).count(), 1, "{r:?}");
    assert_eq!(r.iter().filter(|r| r.contains("too many wrong credentials")).count(), 1, "{r:?}");
    let all = serde_json::to_string(&lab.audit_events()).unwrap();
    assert!(!all.contains("wrong-password") && !all.contains("lobby-desk-secret") && !all.contains("guess"));
}

#[test]
fn an_acknowledgement_by_one_desk_reaches_every_desk() {
    let mut lab = Lab::start_notifying(|c| c);
    let port = lab.ports.api;
    let (mut lobby, mut control) = lab.rt.block_on(async {
        (
            Events::open(port, "desk1", "lobby-desk-secret").await,
            Events::open(port, "desk2", "control-room-secret").await,
        )
    });
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    let call_id = lab.rt.block_on(async {
        lobby.until("the call's end", |s| s.contains("\"type\":\"ended\"")).await;
        control.until("the call's end", |s| s.contains("\"type\":\"ended\"")).await;
        let detected =
            lobby.events().into_iter().find(|e| matches!(e.kind, CallEventKind::Detected)).expect("detected");
        assert_eq!(detected.normalized, "911");
        let id = detected.call_id.clone();
        // The control room acknowledges; both desks hear who took it.
        let body = r#"{"officer":"Officer Dana Test"}"#;
        let path = format!("/api/v1/calls/{id}/acknowledge");
        let (status, _, answer) =
            http(port, None, "POST", &path, Some(("desk2", "control-room-secret")), Some(body)).await;
        assert_eq!(status, 200, "{answer}");
        let ev: CallEvent = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            ev.kind,
            CallEventKind::Acknowledged { by: "Officer Dana Test".into(), desk: "Control room".into() }
        );
        for desk in [&mut lobby, &mut control] {
            desk.until("the acknowledgement", |s| s.contains("\"type\":\"acknowledged\"")).await;
            let ack = desk.events().into_iter().find(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })).unwrap();
            assert_eq!((ack.call_id.as_str(), ack.seq), (id.as_str(), ev.seq));
            assert_eq!(ack.kind, ev.kind);
        }
        // An unknown call is refused.
        let (status, ..) = http(
            port,
            None,
            "POST",
            "/api/v1/calls/nope/acknowledge",
            Some(("desk1", "lobby-desk-secret")),
            Some(body),
        )
        .await;
        assert_eq!(status, 404);
        // History and the call's audited events.
        let (status, _, hist) =
            http(port, None, "GET", "/api/v1/history?exclude_tests=true", Some(("desk1", "lobby-desk-secret")), None)
                .await;
        assert_eq!(status, 200, "{hist}");
        let rows: Vec<sosdesk::audit::CallSummary> = serde_json::from_str(&hist).unwrap();
        let row = rows.iter().find(|r| r.call_id == id).expect("the call in the history");
        assert_eq!(row.acknowledged_by.as_deref(), Some("Officer Dana Test"));
        let (status, _, detail) =
            http(port, None, "GET", &format!("/api/v1/calls/{id}"), Some(("desk1", "lobby-desk-secret")), None).await;
        assert_eq!(status, 200);
        let detail: sosdesk::api::CallDetailResponse = serde_json::from_str(&detail).unwrap();
        assert!(detail
            .events
            .iter()
            .any(|r| r.kind == "acknowledged" && r.detail == "by Officer Dana Test at Control room"));
        id
    });
    lab.stop();
    assert!(lab
        .audit_events()
        .iter()
        .any(|e| e.call_id == call_id && matches!(e.kind, CallEventKind::Acknowledged { .. })));
    lab.assert_audit_verifies();
}

#[test]
fn over_https_with_a_certificate_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=sosdesk test", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (the README's test command installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut lab = Lab::start_notifying(|t| {
        let listen = t.lines().find(|l| l.starts_with("listen = ")).unwrap().to_string();
        t.replace(&listen, &format!("{listen}\ntls_cert = {c:?}\ntls_key = {k:?}"))
    });
    let port = lab.ports.api;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    lab.rt.block_on(async {
        let (status, _, body) =
            http(port, Some(&tls), "GET", "/api/v1/desk", Some(("desk2", "control-room-secret")), None).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"name\":\"Control room\""));
        let (status, ..) = http(port, Some(&tls), "GET", "/api/v1/desk", None, None).await;
        assert_eq!(status, 401);
        // Plain HTTP gets no answer from an HTTPS API.
        let (status, ..) = http(port, None, "GET", "/api/v1/desk", Some(("desk2", "control-room-secret")), None).await;
        assert_eq!(status, 0);

        // The desk app's client: with the core's certificate as its CA it connects; trusting
        // only the system's CAs, it refuses the unknown certificate.
        let base = format!("https://127.0.0.1:{port}");
        let client = ApiClient::new(&base, "desk2", "control-room-secret", Some(&cert)).unwrap();
        let info = client.desk_info().await.unwrap();
        assert_eq!((info.name.as_str(), info.talk), ("Control room", true));
        assert_eq!(info.test_number.as_deref(), Some("933"));
        let wrong = ApiClient::new(&base, "desk2", "wrong", Some(&cert)).unwrap();
        assert_eq!(wrong.desk_info().await.unwrap_err(), ClientError::Unauthorized("desk2".into()));
        match ApiClient::new(&base, "desk2", "control-room-secret", None) {
            Ok(system) => {
                let err = system.desk_info().await.unwrap_err();
                assert!(matches!(&err, ClientError::Connect(_, m) if m.contains("TLS")), "{err}");
            }
            // A machine without a CA bundle: the client says so instead of trusting anything.
            Err(e) => assert!(matches!(&e, ClientError::Tls(m) if m.contains("no CA certificates")), "{e}"),
        }
    });
    lab.stop();
}

#[test]
fn health_says_the_engine_is_turning_without_credentials_and_rejections_need_them() {
    let mut lab = Lab::start();
    let port = lab.ports.api;
    // An ordinary call: refused, counted for its source.
    lab.uac("caller", "caller_expect_failure.xml", "127.0.0.1", &["-s", "4255550123"]).wait().assert_ok();
    lab.rt.block_on(async {
        // The watchdog's first probe is answered within moments of the start.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let body = loop {
            let (status, _, body) = http(port, None, "GET", "/api/v1/health", None, None).await;
            if status == 200 {
                break body;
            }
            assert!(body.contains("\"starting\""), "{status} {body}");
            assert!(std::time::Instant::now() < deadline, "the engine never answered the watchdog: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "ok", "{body}");
        assert_eq!(v["engine"]["stalled"], false);
        assert!(v["engine"]["answered_at"].is_string(), "{body}");
        assert!(!body.contains("4255550123") && !body.contains("127.0.0.1"), "nothing of any call: {body}");

        let (status, ..) = http(port, None, "GET", "/api/v1/rejections", None, None).await;
        assert_eq!(status, 401, "refusals are for credentials holders");
    });
    // The record of a minute is written when the minute ends or the core stops.
    lab.stop();
    let out = lab.cli_store(&["rejections", "--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["event"]["kind"]["type"], "refused");
    assert_eq!(records[0]["event"]["kind"]["source"], "127.0.0.1");
}

store_test!(sync desks_are_told_of_a_failing_store_and_a_stalled_engine_on_their_event_stream);
/// Issue 19, "the desk stays honest": every desk is told on its event stream when the core's
/// audit store cannot write (while calls still route) and when its engine stops turning; the
/// health endpoint says the same to a monitoring system.
fn desks_are_told_of_a_failing_store_and_a_stalled_engine_on_their_event_stream(db: TestDb) {
    use sqlx::Connection as _;
    let missing_table = if db.is_postgres() { "relation \"calls\" does not exist" } else { "no such table: calls" };
    let mut lab = Lab::start_on(db, |c| c);
    let port = lab.ports.api;
    let mut desk = lab.rt.block_on(Events::open(port, "desk1", "lobby-desk-secret"));
    let conditions = |seen: &str| -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut lines = seen.lines();
        while let Some(l) = lines.next() {
            if l == "event: core" {
                let data = lines.next().and_then(|d| d.strip_prefix("data: ")).expect("data after event");
                out.push(serde_json::from_str(data).unwrap());
            }
        }
        out
    };
    // The condition comes first on a new stream.
    lab.rt.block_on(desk.until("the core's condition", |s| !conditions(s).is_empty()));
    let first = &conditions(&desk.seen)[0];
    assert_eq!(first, &serde_json::json!({"engine_stalled": false, "store_waiting": 0, "store_error": null}));

    // The store breaks under the core (as a vanished database or a full disk would).
    let mut raw = lab.rt.block_on(async {
        let mut c = lab.db.as_ref().unwrap().raw().await;
        sqlx::query("ALTER TABLE calls RENAME TO calls_away").execute(&mut c).await.unwrap();
        c
    });
    // An emergency call still routes, and the desk hears that the store fails.
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    provider.wait().assert_ok();
    let failing_seen = |s: &str| conditions(s).iter().any(|c| c["store_waiting"].as_u64() > Some(0));
    lab.rt.block_on(desk.until("the failing store", failing_seen));
    let failing = conditions(&desk.seen).into_iter().find(|c| c["store_waiting"].as_u64() > Some(0)).unwrap();
    assert!(failing["store_error"].as_str().unwrap().contains(missing_table), "{failing}");
    assert_eq!(failing["engine_stalled"], false);
    lab.rt.block_on(async {
        let (status, _, body) = http(port, None, "GET", "/api/v1/health", None, None).await;
        assert_eq!(status, 200, "calls still route: {body}");
        assert!(body.contains("\"degraded\""), "{body}");
    });

    // Repaired: the waiting events are written, and the desk hears so.
    lab.rt.block_on(async {
        sqlx::query("ALTER TABLE calls_away RENAME TO calls").execute(&mut raw).await.unwrap();
        raw.close().await.unwrap();
    });
    let writing_again = |s: &str| {
        let c = conditions(s);
        let failed_at = c.iter().position(|c| c["store_waiting"].as_u64() > Some(0));
        failed_at.is_some_and(|i| c[i..].iter().any(|c| c["store_waiting"] == 0 && c["store_error"].is_null()))
    };
    lab.rt.block_on(desk.until("the store writing again", writing_again));
    assert!(lab.audit_events().iter().any(|e| e.kind == CallEventKind::Detected), "the call was kept and written");

    // The engine stops turning (a bug that never returns): the desk is told within the
    // watchdog's bound, and the health endpoint answers 503.
    let core = lab.core.take().unwrap();
    core.handle().inject_fault(sosdesk::core_handle::Fault::Hang);
    lab.rt.block_on(desk.until("the stalled engine", |s| conditions(s).iter().any(|c| c["engine_stalled"] == true)));
    lab.rt.block_on(async {
        let (status, _, body) = http(port, None, "GET", "/api/v1/health", None, None).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("\"stalled\""), "{body}");
    });
    // The hung thread can only end with the process (as systemd's watchdog would end it): the
    // core and its runtime are left to it.
    std::mem::forget(core);
    std::mem::replace(&mut lab.rt, tokio::runtime::Runtime::new().unwrap()).shutdown_background();
}
