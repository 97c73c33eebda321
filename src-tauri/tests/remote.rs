//! Remote desk mode against a real core (in this process, its HTTP API on real TCP, its SIP on
//! real UDP, its audit store a real SQLite file) with sipp as the emergency-services provider.
//! Between the first desk and the API sits a TCP relay the test can cut, to take the network
//! away and give it back.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sosdesk::api::client::ApiClient;
use sosdesk::config::Config;
use sosdesk::events::CallEventKind;
use sosdesk::server::Core;
use sosdesk_desk::desk::{Desk, Ui};
use sosdesk_desk::model::{
    AcknowledgeMode, ActiveCall, CallState, CoreState, DeskStatus, HistoryFilter, LegMode, LegState, Settings,
};
use sosdesk_desk::settings::SettingsFile;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[path = "../../tests/it/support/pki.rs"]
mod pki;

struct QuietUi;

impl Ui for QuietUi {
    fn alert(&self, _: &ActiveCall) {}
    fn alert_removed(&self, _: &str) {}
    fn status(&self, _: &DeskStatus) {}
    fn raise(&self, _: bool) {}
    fn release_on_top(&self) {}
    fn tray(&self, _: bool, _: &str) {}
}

fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// The lab config on free ports, with its audit store in `dir`.
fn lab_config(dir: &Path) -> (PathBuf, u16) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut lab = std::fs::read_to_string(repo.join("examples/lab.toml")).unwrap();
    let provider_port = free_port();
    for (old, new) in [
        (5060, free_port()),
        (5070, provider_port),
        (5071, free_port()),
        (5080, free_port()),
        (5090, free_port()),
        (8080, free_port()),
        (8443, free_port()),
    ] {
        lab = lab.replace(&format!("127.0.0.1:{old}"), &format!("127.0.0.1:{new}"));
    }
    lab = lab.replace("path = \"../sosdesk-lab.db\"", &format!("path = \"{}\"", dir.join("core.db").display()));
    lab = lab.replace("msag = \"msag.csv\"", &format!("msag = \"{}\"", repo.join("examples/msag.csv").display()));
    let config = dir.join("lab.toml");
    std::fs::write(&config, lab).unwrap();
    (config, provider_port)
}

fn provider(port: u16, calls: u32) -> Child {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/provider_answer.xml");
    Command::new("sipp")
        .args(["-sf", scenario.to_str().unwrap(), "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &calls.to_string(), "-timeout", "60", "-timeout_error", "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp (apt-get install sip-tester)")
}

/// A TCP relay to the core's API that can be cut (open connections dropped, new ones refused)
/// and restored: the network between a desk and its core going away and coming back.
struct Relay {
    port: u16,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (o, l) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the desk sees the connection closed at once
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut core) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut core).await;
                    }
                });
                l.lock().unwrap().push(link);
            }
        });
        Relay { port, open, links }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for l in self.links.lock().unwrap().drain(..) {
            l.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// A desk app's state in remote mode: a remote desk file for `account` and the core's API at
/// `api_port`, started as the app does it (the file given as its config).
async fn remote_desk(dir: &Path, name: &str, account: (&str, &str), api_port: u16) -> Arc<Desk> {
    remote_desk_with(dir, name, account, api_port, "").await
}

/// [`remote_desk`] with `more` lines in its `[remote]` table.
async fn remote_desk_with(dir: &Path, name: &str, account: (&str, &str), api_port: u16, more: &str) -> Arc<Desk> {
    remote_desk_at(dir, name, account, &format!("\"http://127.0.0.1:{api_port}\""), more).await
}

/// [`remote_desk_with`] with `api` as the file writes it (one address, or a list).
async fn remote_desk_at(dir: &Path, name: &str, account: (&str, &str), api: &str, more: &str) -> Arc<Desk> {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "[remote]\napi = {api}\nusername = \"{}\"\npassword = \"{}\"\nregister_expires_s = 60\n{more}",
            account.0, account.1
        ),
    )
    .unwrap();
    let settings = SettingsFile::in_dir(&dir.join(format!("{name}-settings")));
    settings.save(&Settings { officer_name: format!("Officer {name}"), ..Default::default() }).unwrap();
    let desk = Desk::new(Box::new(QuietUi), settings, dir.join("exports"), Arc::new(|_: &ActiveCall| Ok(())));
    desk.start_core(&file).await.unwrap();
    desk
}

/// Polls `f` until it gives a value (a condition, not a pause), at most 30 s.
async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one MESSAGE to `to` from 127.0.0.1 (the core's address in this test) and returns the
/// response's status code.
async fn sip_exchange(to: SocketAddr, content_type: &str, body: &str) -> u16 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let msg = format!(
        "MESSAGE sip:desk2@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-forged-{}\r\nMax-Forwards: 70\r\n\
         From: <sip:sosdesk@127.0.0.1>;tag=f1\r\nTo: <sip:desk2@127.0.0.1>\r\nCall-ID: forged-{}@127.0.0.1\r\n\
         CSeq: 1 MESSAGE\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        me.port(),
        me.port(),
        body.len()
    );
    sock.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn call(desk: &Desk, id: &str) -> Option<ActiveCall> {
    desk.active_calls().into_iter().find(|c| c.call_id == id)
}

fn new_call(desk: &Desk, known: &[String]) -> Option<ActiveCall> {
    desk.active_calls().into_iter().find(|c| !known.contains(&c.call_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_desk_follows_its_core_through_network_loss_and_shares_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let (config, provider_port) = lab_config(dir.path());
    let core = Core::start(&Config::load(&config).unwrap()).await.unwrap();
    let (api, _) = core.api.expect("the lab config has an API");
    let core_udp = core.local.udp.unwrap();
    let relay = Relay::start(api).await;
    let mut sipp1 = provider(provider_port, 2);

    // Desk A ("Control room", desk2) through the relay: connected, and registered over SIP.
    let a = remote_desk(dir.path(), "A", ("desk2", "control-room-secret"), relay.port).await;
    let st = until("desk A connected and registered", || {
        let s = a.status();
        (s.core == CoreState::Running && s.remote.as_ref().is_some_and(|r| r.connected && r.sip.ok)).then_some(s)
    })
    .await;
    assert_eq!(st.join.desk.as_deref(), Some("Control room"));
    assert_eq!(st.join.username.as_deref(), Some("desk2"));

    // An emergency call reaches it: the whole call, with its location.
    sosdesk_desk::testcall::place(core_udp, "911", Duration::ZERO).await.unwrap();
    let c1 = until("call 1 on desk A, ended", || {
        new_call(&a, &[]).filter(|c| c.state == sosdesk_desk::model::CallState::Ended)
    })
    .await;
    assert!(c1.alarming);
    assert_eq!(c1.location.erl.as_ref().and_then(|e| e.civic.rd.as_deref()), Some("Microsoft Way"));
    assert_eq!(a.status().unacknowledged, 1);

    // The network to the API goes away: the desk says so at once...
    relay.cut();
    let st = until("desk A not connected", || {
        let s = a.status();
        (s.core == CoreState::Disconnected).then_some(s)
    })
    .await;
    let r = st.remote.unwrap();
    assert!(!r.connected);
    assert!(r.events.detail.contains("NOT CONNECTED"), "{}", r.events.detail);
    // ...and an alert still arrives, by the core's SIP MESSAGE alone (its only event: detected).
    sosdesk_desk::testcall::place(core_udp, "911", Duration::ZERO).await.unwrap();
    let c2 = until("call 2 on desk A by SIP MESSAGE", || new_call(&a, std::slice::from_ref(&c1.call_id))).await;
    assert!(c2.alarming);
    assert_eq!(c2.timeline.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(), ["detected"]);
    // The MESSAGE is over 1300 bytes: the core sent it over TCP (RFC 3261 §18.1.1), which the
    // desk's agent takes on its SIP port; the core's audit trail says how it went.
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let events = core.store().call_events(&c2.call_id).await.unwrap();
        let found = events.into_iter().find_map(|e| match e.event.kind {
            CallEventKind::Notified { ok: true, detail, .. } if detail.contains("(desk2)") => Some(detail),
            _ => None,
        });
        if let Some(d) = found {
            break d;
        }
        assert!(Instant::now() < deadline, "timed out waiting for the delivery to desk A in the core's audit log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(delivered.contains("delivered on attempt 1 over TCP ("), "{delivered}");

    // Meanwhile the lobby desk acknowledges call 1 (through the API, as its app would).
    let lobby = ApiClient::new(&format!("http://{api}"), "desk1", "lobby-desk-secret", None).unwrap();
    lobby.acknowledge(&c1.call_id, "Officer Lobby").await.unwrap();

    // The network comes back: desk A reconnects by itself and catches up on what it missed.
    relay.restore();
    until("desk A reconnected", || a.status().remote.filter(|r| r.connected)).await;
    let c1 = until("call 1 acknowledged by the lobby, on desk A", || {
        call(&a, &c1.call_id).filter(|c| c.acknowledged_by.is_some())
    })
    .await;
    assert_eq!(c1.acknowledged_by.as_deref(), Some("Officer Lobby"));
    assert_eq!(c1.acknowledgements[0].desk, "Lobby desk");
    assert!(!c1.alarming, "us-hq acknowledges with any desk's acknowledgement");
    until("call 2's missed events on desk A", || {
        call(&a, &c2.call_id).filter(|c| c.state == sosdesk_desk::model::CallState::Ended)
    })
    .await;
    assert_eq!(sipp1.wait().unwrap().code(), Some(0));

    // A desk that starts now catches up from the audit log: the unacknowledged call 2, not the
    // acknowledged and finished call 1.
    let b = remote_desk(dir.path(), "B", ("desk1", "lobby-desk-secret"), api.port()).await;
    let c2_on_b = until("call 2 on desk B", || call(&b, &c2.call_id)).await;
    assert!(c2_on_b.alarming);
    assert!(call(&b, &c1.call_id).is_none());
    assert_eq!(b.status().unacknowledged, 1);

    // A forged MESSAGE from the core's address (spoofable on a LAN) claiming call 2 was
    // acknowledged is read (200) but cannot silence the alarm: the SIP path only raises alerts.
    let registered = a.status().remote.unwrap().sip.detail;
    let contact: SocketAddr = registered
        .split("sip:desk2@")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no contact in {registered:?}"));
    let mut forged = core.store().call_events(&c2.call_id).await.unwrap()[0].event.clone();
    forged.seq = 99;
    forged.kind = CallEventKind::Acknowledged { by: "Mallory".into(), desk: "Control room".into() };
    let body = serde_json::to_string(&forged).unwrap();
    assert_eq!(sip_exchange(contact, "application/vnd.sosdesk.call-event+json", &body).await, 200);
    let still = call(&a, &c2.call_id).unwrap();
    assert!(still.alarming && still.acknowledgements.is_empty(), "a forged acknowledgement silenced the alarm");
    assert!(still.last_seq < 99, "a forged sequence number must not hide the call's real events");
    // A MESSAGE the desk cannot read is refused, so the core records the failure and retries.
    assert_eq!(sip_exchange(contact, "text/plain", "EMERGENCY CALL").await, 400);

    // Desk A acknowledges call 2: audited at the core with its desk, and desk B falls silent.
    let acked = a.acknowledge(&c2.call_id).await.unwrap();
    assert_eq!(acked.acknowledged_by.as_deref(), Some("Officer A"));
    let on_b =
        until("desk A's acknowledgement on desk B", || call(&b, &c2.call_id).filter(|c| c.acknowledged_by.is_some()))
            .await;
    assert_eq!(on_b.acknowledged_by.as_deref(), Some("Officer A"));
    assert_eq!(on_b.acknowledgements[0].desk, "Control room");
    assert!(!on_b.alarming);
    assert_eq!(b.status().unacknowledged, 0);
    let audited = core.store().call_events(&c2.call_id).await.unwrap();
    assert!(
        matches!(&audited.last().unwrap().event.kind, CallEventKind::Acknowledged { by, desk } if by == "Officer A" && desk == "Control room"),
        "{:?}",
        audited.last().unwrap().event.kind
    );

    // A call from the London site: policy uk-london wants each desk's own acknowledgement.
    let mut sipp = provider(provider_port, 1);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/caller_hangs_up.xml");
    let mut caller = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .arg(core_udp.to_string())
        .args(["-i", "127.0.0.3", "-p", &free_port().to_string(), "-s", "999", "-m", "1"])
        .args(["-set", "name", "Uma London", "-set", "hold_ms", "300", "-timeout", "30", "-timeout_error", "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let known = [c1.call_id.clone(), c2.call_id.clone()];
    let uk = until("the London call on desk A", || new_call(&a, &known)).await;
    assert_eq!((uk.policy.as_str(), uk.acknowledge_mode), ("uk-london", AcknowledgeMode::Each));
    until("the London call on desk B", || call(&b, &uk.call_id)).await;
    b.acknowledge(&uk.call_id).await.unwrap();
    let on_a = until("desk B's acknowledgement shown on desk A", || {
        call(&a, &uk.call_id).filter(|c| !c.acknowledgements.is_empty())
    })
    .await;
    assert!(on_a.alarming, "with \"each\", desk B's acknowledgement does not silence desk A");
    assert_eq!(on_a.acknowledged_by, None);
    assert_eq!(
        (on_a.acknowledgements[0].by.as_str(), on_a.acknowledgements[0].desk.as_str()),
        ("Officer B", "Lobby desk")
    );
    assert!(!call(&b, &uk.call_id).unwrap().alarming);
    let mine = a.acknowledge(&uk.call_id).await.unwrap();
    assert!(!mine.alarming);
    assert_eq!(mine.acknowledgements.len(), 2);
    assert_eq!(a.status().unacknowledged, 0);
    assert_eq!(caller.wait().unwrap().code(), Some(0));
    assert_eq!(sipp.wait().unwrap().code(), Some(0));

    // History, detail (with the chain checked at the core) and export, through the API.
    let found = a.search_history(&HistoryFilter { include_tests: true, ..Default::default() }).await.unwrap();
    assert_eq!(found.len(), 3);
    let detail = a.call_detail(&c1.call_id).await.unwrap();
    assert!(detail.chain.ok, "{}", detail.chain.detail);
    assert!(detail.events.iter().any(|e| e.event.kind.name() == "acknowledged"));
    let csv = a.export_history_csv(&HistoryFilter::default()).await.unwrap();
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.starts_with("seq,at,call_id") && csv.contains(&c1.call_id) && csv.contains(&c2.call_id));

    // Wrong credentials: refused, shown, and never retried quickly.
    let c = remote_desk(dir.path(), "C", ("desk1", "not-the-password"), api.port()).await;
    let st = until("desk C refused", || {
        let s = c.status();
        (s.core == CoreState::Failed).then_some(s)
    })
    .await;
    assert!(st.core_detail.contains("refused the credentials"), "{}", st.core_detail);

    // Desk B switched to another core: the cards of the old one go (nothing could acknowledge
    // them there), and the alarm with them.
    let c_file = dir.path().join("C.toml");
    b.start_core(&c_file).await.unwrap();
    assert!(b.active_calls().is_empty());
    assert_eq!(b.status().unacknowledged, 0);

    for d in [a, b, c] {
        d.shutdown().await;
    }
    core.stop().await;
}

/// Issue 13, "desks over TLS too": a remote desk whose core has a TLS listener (mutual TLS)
/// registers over TLS by itself, is alerted by the core's MESSAGE on that connection when its
/// API connection is gone, and joins a call on a TLS connection of the leg's own, where the
/// core's BYE reaches it when the caller hangs up. A desk without a client certificate is
/// refused by the core, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_desk_registers_is_alerted_and_joins_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make_pki(&dir.path().join("pki"), &["localhost"]);
    let (config, provider_port) = lab_config(dir.path());
    let tls = format!(
        "t1_ms = 500\ntls = \"127.0.0.1:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n",
        free_port(),
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca_cert.display()
    );
    let text = std::fs::read_to_string(&config).unwrap().replacen("t1_ms = 500\n", &tls, 1);
    std::fs::write(&config, text).unwrap();
    let core = Core::start(&Config::load(&config).unwrap()).await.unwrap();
    let (api, _) = core.api.expect("the lab config has an API");
    let core_udp = core.local.udp.unwrap();
    let relay = Relay::start(api).await;
    let mut provider1 = provider(provider_port, 1);

    // Desk A, with its certificate: registered over TLS (its contact says so: the core can
    // reach it only on that connection; the desk listens on nothing).
    let a_tls = format!(
        "sip_ca_cert = \"{}\"\nsip_tls_cert = \"{}\"\nsip_tls_key = \"{}\"\n",
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let a = remote_desk_with(dir.path(), "A", ("desk2", "control-room-secret"), relay.port, &a_tls).await;
    let st = until("desk A registered over TLS", || {
        a.status().remote.filter(|r| r.connected && r.sip.ok).map(|r| r.sip.detail)
    })
    .await;
    assert!(st.contains(";transport=tls"), "{st}");
    // Desk B trusts the core but has no certificate: refused on SIP, said on its status.
    let b_tls = format!("sip_ca_cert = \"{}\"\n", pki.ca_cert.display());
    let b = remote_desk_with(dir.path(), "B", ("desk1", "lobby-desk-secret"), api.port(), &b_tls).await;
    let refused = until("desk B's SIP refused", || {
        b.status().remote.filter(|r| r.connected && !r.sip.ok && !r.sip.detail.is_empty()).map(|r| r.sip.detail)
    })
    .await;
    assert!(refused.contains("the server requires a client certificate"), "{refused}");

    // The API connection gone, an alert reaches desk A by the MESSAGE on its TLS connection.
    relay.cut();
    until("desk A not connected", || (a.status().core == CoreState::Disconnected).then_some(())).await;
    sosdesk_desk::testcall::place(core_udp, "911", Duration::ZERO).await.unwrap();
    let c1 = until("call 1 on desk A by SIP MESSAGE over TLS", || new_call(&a, &[])).await;
    assert!(c1.alarming);
    assert_eq!(c1.timeline.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(), ["detected"]);
    relay.restore();
    until("desk A reconnected", || a.status().remote.filter(|r| r.connected)).await;
    assert_eq!(provider1.wait().unwrap().code(), Some(0));

    // A call that the emergency services end after 15 s: desk A joins listen-only over TLS
    // meanwhile, and the core's BYE reaches the leg on its connection when the call ends.
    let sipp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp");
    let mut provider = Command::new("sipp")
        .arg("-sf")
        .arg(sipp.join("provider_answer_then_bye.xml"))
        .args(["-i", "127.0.0.1", "-p", &provider_port.to_string(), "-m", "1", "-set", "bye_after_ms", "15000"])
        .args(["-timeout", "60", "-timeout_error", "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut caller = Command::new("sipp")
        .arg("-sf")
        .arg(sipp.join("caller_receives_bye.xml"))
        .arg(core_udp.to_string())
        .args(["-i", "127.0.0.1", "-p", &free_port().to_string(), "-s", "911", "-m", "1"])
        .args(["-set", "name", "Tia Tls", "-timeout", "60", "-timeout_error", "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c2 = until("call 2 on desk A", || {
        new_call(&a, std::slice::from_ref(&c1.call_id)).filter(|c| c.state == CallState::Answered)
    })
    .await;
    a.join_call(&c2.call_id, LegMode::Listen).await.unwrap();
    until("desk A's leg connected over TLS", || a.leg().filter(|l| l.state == LegState::Connected)).await;
    let ended = until("desk A's leg ended by the core", || a.leg().filter(|l| l.state != LegState::Connected)).await;
    assert_eq!(ended.state, LegState::Ended, "{}", ended.detail);
    assert!(ended.detail.contains("the call ended"), "{}", ended.detail);
    assert_eq!(caller.wait().unwrap().code(), Some(0));
    assert_eq!(provider.wait().unwrap().code(), Some(0));
    let joined = core.store().call_events(&c2.call_id).await.unwrap();
    assert!(
        joined.iter().any(|e| e.event.kind.name() == "desk-joined"),
        "{:?}",
        joined.iter().map(|e| e.event.kind.name()).collect::<Vec<_>>()
    );

    for d in [a, b] {
        d.shutdown().await;
    }
    core.stop().await;
}

/// Issue 19, "the desk stays honest": a remote desk shows what the core's own desk would — an
/// audit store that cannot write (while calls still route and alert) and an engine that stopped
/// turning — pushed on the event stream (`event: core`), and the store's repair too.
#[test]
fn a_remote_desk_shows_its_cores_failing_store_and_stalled_engine() {
    use sqlx::{ConnectOptions as _, Connection as _};
    // Built by hand: the hung engine thread at the end is left behind with `shutdown_background`.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, provider_port) = lab_config(dir.path());
    rt.block_on(async {
        let core = Core::start(&Config::load(&config).unwrap()).await.unwrap();
        let (api, _) = core.api.expect("the lab config has an API");
        let core_udp = core.local.udp.unwrap();
        let a = remote_desk(dir.path(), "A", ("desk2", "control-room-secret"), api.port()).await;
        until("desk A connected, the core's store writing", || {
            let s = a.status();
            let connected = s.remote.as_ref().is_some_and(|r| r.connected);
            (connected && s.store.ok && s.store.detail == "the core's audit store is writing").then_some(())
        })
        .await;
        // The core's routes, as its live health report has them (probing is off in the lab).
        let routes = a.status().routes;
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["provider-primary", "provider-secondary", "elin-gateway"]);
        assert!(routes.iter().all(|r| r.detail == "not probed yet"), "{routes:?}");

        // The core's database breaks under it.
        let mut raw = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("core.db"))
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        sqlx::query("ALTER TABLE calls RENAME TO calls_away").execute(&mut raw).await.unwrap();
        // An emergency call still routes and reaches the desk, which shows the failing store.
        let mut sipp = provider(provider_port, 1);
        let answered = sosdesk_desk::testcall::place(core_udp, "911", Duration::ZERO).await;
        assert!(answered.as_ref().is_ok_and(|r| r.contains("answered")), "{answered:?}");
        until("the call on desk A", || new_call(&a, &[])).await;
        let failing = until("the failing store on desk A", || Some(a.status().store).filter(|c| !c.ok)).await;
        assert!(failing.detail.starts_with("the core's audit store cannot write:"), "{}", failing.detail);
        assert!(failing.detail.contains("no such table: calls") && failing.detail.ends_with("calls still route"));
        assert_eq!(a.status().core, CoreState::Running);
        assert_eq!(sipp.wait().unwrap().code(), Some(0));

        // Repaired: said too.
        sqlx::query("ALTER TABLE calls_away RENAME TO calls").execute(&mut raw).await.unwrap();
        raw.close().await.unwrap();
        until("the store writing again on desk A", || a.status().store.ok.then_some(())).await;

        // The core's engine stops turning: the desk says no call is routed.
        core.handle().inject_fault(sosdesk::core_handle::Fault::Hang);
        let st =
            until("the stalled engine on desk A", || Some(a.status()).filter(|s| s.core == CoreState::Failed)).await;
        assert!(
            st.core_detail.contains("is not routing calls: its call engine stopped answering"),
            "{}",
            st.core_detail
        );
        a.shutdown().await;
        std::mem::forget(core);
    });
    rt.shutdown_background();
}

/// Two cores (nodes) in the desk's file: it stays on the first while it answers, goes to the
/// second when the first stops, and shows the alerts of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_desk_with_two_cores_switches_when_the_first_stops_and_shows_every_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("node-a"), dir.path().join("node-b"));
    std::fs::create_dir(&d1).unwrap();
    std::fs::create_dir(&d2).unwrap();
    let (config1, provider1) = lab_config(&d1);
    let (config2, provider2) = lab_config(&d2);
    let core1 = Core::start(&Config::load(&config1).unwrap()).await.unwrap();
    let core2 = Core::start(&Config::load(&config2).unwrap()).await.unwrap();
    let (api1, api2) = (core1.api.unwrap().0, core2.api.unwrap().0);
    let (udp1, udp2) = (core1.local.udp.unwrap(), core2.local.udp.unwrap());
    // The first core's API behind a relay: cut, it is a node gone from the network (a core
    // stopped in this process would leave the desk's open stream to it up).
    let relay1 = Relay::start(api1).await;
    let api1 = format!("127.0.0.1:{}", relay1.port);
    let apis = format!("[\"http://{api1}\", \"http://{api2}\"]");
    let desk = remote_desk_at(dir.path(), "A", ("desk2", "control-room-secret"), &apis, "").await;
    until("the desk on the first core", || {
        desk.status().remote.filter(|r| r.connected && r.api == format!("http://{api1}"))
    })
    .await;

    let mut p1 = provider(provider1, 1);
    sosdesk_desk::testcall::place(udp1, "911", Duration::ZERO).await.unwrap();
    let c1 = until("the first core's call on the desk", || new_call(&desk, &[])).await;
    assert!(c1.alarming);

    // The first core stops: the desk goes to the second, and its next call reaches the desk.
    core1.stop().await;
    relay1.cut();
    until("the desk on the second core", || {
        desk.status().remote.filter(|r| r.connected && r.api == format!("http://{api2}"))
    })
    .await;
    let mut p2 = provider(provider2, 1);
    sosdesk_desk::testcall::place(udp2, "911", Duration::ZERO).await.unwrap();
    let c2 = until("the second core's call on the desk", || new_call(&desk, std::slice::from_ref(&c1.call_id))).await;
    assert!(c2.alarming);
    assert!(call(&desk, &c1.call_id).is_some(), "the first call is still shown");
    core2.stop().await;
    let _ = p1.kill();
    let _ = p2.kill();
    let _ = (p1.wait(), p2.wait());
}
