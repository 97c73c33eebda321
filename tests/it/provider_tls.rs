//! SIP over TLS (issue 13) with a real TLS peer: Kamailio's tls module as the provider's SBC
//! (sosdesk → TLS → Kamailio → UDP → the provider) and as a PBX's (caller → UDP → Kamailio →
//! TLS → sosdesk), mutual TLS both ways, a route refused without a client certificate or with a
//! certificate for another name, and RFC 5626 CRLF keepalive on a connection sosdesk opened;
//! a provider's connection that closes while a call waits there for its final answer; and a
//! PBX's connection that closes mid-call (its answer and the far end's BYE still reach it); an
//! alert to a receiver behind an SBC that asks for mutual TLS (sosdesk presents its own
//! certificate).

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sosdesk::events::{CallEvent, CallEventKind};
use support::kamailio::start_sbc_on_free_ports;
use support::lab::{free_port, Lab};
use support::pki::{make_pki, TestPki};

/// The name on the provider SBC's certificate (and 127.0.0.1).
const SBC_NAME: &str = "sbc.provider.test";

/// The lab's primary route edited by `edit` (its block of lines, up to the next route).
fn edit_primary(config: String, edit: impl FnOnce(&str) -> String) -> String {
    let start = config.find("name = \"provider-primary\"").expect("the lab's primary route");
    let end = start + config[start..].find("[[route]]").expect("a route after the primary");
    format!("{}{}{}", &config[..start], edit(&config[start..end]), &config[end..])
}

/// The primary route over TLS to `sbc`, trusting `ca`, presenting `client` if given, and
/// expecting the certificate to name `domain`.
fn tls_route(config: String, sbc: SocketAddr, ca: &Path, client: Option<(&Path, &Path)>, domain: &str) -> String {
    edit_primary(config, |block| {
        let mut lines: Vec<String> = block
            .lines()
            .filter(|l| !l.starts_with("address") && !l.starts_with("transport") && !l.starts_with("domain"))
            .map(str::to_string)
            .collect();
        lines.push(format!("address = \"{sbc}\""));
        lines.push("transport = \"tls\"".into());
        lines.push(format!("domain = \"{domain}\""));
        lines.push(format!("tls_ca = {:?}", ca.display().to_string()));
        if let Some((cert, key)) = client {
            lines.push(format!("tls_cert = {:?}", cert.display().to_string()));
            lines.push(format!("tls_key = {:?}", key.display().to_string()));
        }
        lines.join("\n") + "\n\n"
    })
}

fn kinds(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn pki() -> (tempfile::TempDir, TestPki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), &[SBC_NAME]);
    (dir, pki)
}

#[test]
fn a_call_reaches_the_provider_over_mutual_tls_through_a_real_sbc_and_ends_over_it() {
    let (dir, pki) = pki();
    let provider_port = free_port();
    let sbc =
        start_sbc_on_free_ports(dir.path(), &pki, true, None, Some(SocketAddr::from(([127, 0, 0, 1], provider_port))));
    let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let mut lab = Lab::start_with(|c| tls_route(c, sbc.tls, &pki.ca_cert, client, SBC_NAME));
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", provider_port, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    // The INVITE crossed the TLS hop: sosdesk's own Via says TLS (below the SBC's), and the
    // location came with it; the caller's BYE reached the provider through the SBC too.
    let invite = p.received_request("INVITE");
    assert!(invite.lines().any(|l| l.starts_with("Via: SIP/2.0/TLS ")), "{invite}\nSBC log:\n{}", sbc.log());
    assert!(invite.contains("application/pidf+xml"), "{invite}");
    assert!(p.received().iter().any(|m| m.starts_with("BYE ")), "the BYE went over the same TLS route");
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "ringing", "answered", "ended"]);
    assert_eq!(events[1].route.as_ref().unwrap().target, format!("tls:{}", sbc.tls));
    lab.assert_audit_verifies();
}

#[test]
fn a_tls_route_fails_over_at_once_without_a_client_certificate_or_with_a_certificate_for_another_name() {
    let (dir, pki) = pki();
    let sbc =
        start_sbc_on_free_ports(dir.path(), &pki, true, None, Some(SocketAddr::from(([127, 0, 0, 1], free_port()))));
    // No client certificate: the SBC refuses the handshake. The route timeout is long, so a
    // failover within the test's time is the refusal's, not the timer's.
    for (case, client, domain) in [
        ("no client certificate", None, SBC_NAME),
        ("another name", Some((pki.client_cert.as_path(), pki.client_key.as_path())), "other.provider.test"),
    ] {
        let mut lab = Lab::start_with(|c| {
            tls_route(c, sbc.tls, &pki.ca_cert, client, domain)
                .replace("route_timeout_ms = 2000", "route_timeout_ms = 20000")
        });
        let secondary = lab.uas("secondary", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
        lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
        secondary.wait().assert_ok();
        lab.stop();
        let events = lab.audit_events();
        assert_eq!(kinds(&events)[..4], ["detected", "routed", "route-failed", "routed"], "{case}");
        let CallEventKind::RouteFailed { reason } = &events[2].kind else { unreachable!() };
        assert_eq!(reason, &format!("tls:{} unreachable", sbc.tls), "{case}");
        assert_eq!(events[3].route.as_ref().unwrap().name, "provider-secondary", "{case}");
    }
}

/// sosdesk listening for TLS on `port` with the test PKI's server certificate, requiring
/// client certificates from its CA.
fn tls_listener(config: String, port: u16, pki: &TestPki) -> String {
    let p = |p: &Path| format!("{:?}", p.display().to_string());
    config.replacen(
        "[sip]\n",
        &format!(
            "[sip]\ntls = \"127.0.0.1:{port}\"\ntls_cert = {}\ntls_key = {}\ntls_client_ca = {}\n",
            p(&pki.server_cert),
            p(&pki.server_key),
            p(&pki.ca_cert)
        ),
        1,
    )
}

/// An OPTIONS to sosdesk over TLS from a client with or without a certificate: the response's
/// status line, or None when the connection was refused or closed.
fn options_over_tls(to: SocketAddr, pki: &TestPki, with_cert: bool) -> Option<String> {
    use sosdesk::transport::tls::{load_certs, load_key};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(&pki.ca_cert).unwrap() {
            roots.add(c).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            builder.with_client_auth_cert(load_certs(&pki.client_cert).unwrap(), load_key(&pki.client_key).unwrap()).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let tcp = tokio::net::TcpStream::connect(to).await.ok()?;
        let local = tcp.local_addr().ok()?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
        let options = format!(
            "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls{with_cert}\r\nMax-Forwards: 70\r\n\
From: <sip:probe@{local}>;tag=t1\r\nTo: <sip:{to}>\r\nCall-ID: tls-{with_cert}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        tls.write_all(options.as_bytes()).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        (n > 0).then(|| text.lines().next().unwrap_or("").to_string())
    })
}

/// A notification target behind an SBC that asks for mutual TLS (as a Skype for Business
/// Mediation Server or a Teams SBC does): sosdesk presents its own certificate (`sip.tls_cert`,
/// the one its listener serves with) on the connection it opens, checks the SBC's against
/// `sip.tls_ca`, and the alert reaches the receiver (a sipp UAS on the SBC's UDP side).
#[test]
fn an_alert_reaches_a_receiver_behind_an_sbc_that_asks_for_mutual_tls_with_sosdesks_own_certificate() {
    let (dir, pki) = pki();
    let receiver_port = free_port();
    let sbc =
        start_sbc_on_free_ports(dir.path(), &pki, true, None, Some(SocketAddr::from(([127, 0, 0, 1], receiver_port))));
    let tls_port = free_port();
    let mut lab = Lab::start_notifying(|c| {
        let c = tls_listener(c, tls_port, &pki).replacen(
            "[sip]\n",
            &format!("[sip]\ntls_ca = {:?}\n", pki.ca_cert.display().to_string()),
            1,
        );
        // The policy's first target: the desk's phone, now behind the SBC, over TLS.
        let i = c.find("notification_uris = [\"sip:security-desk@127.0.0.1:").unwrap() + 22;
        let j = i + c[i..].find("\", \"sip:security@").unwrap();
        format!("{}sip:security-desk@127.0.0.1:{};transport=tls{}", &c[..i], sbc.tls.port(), &c[j..])
    });
    let receiver = lab.uas("receiver", "notify_receiver.xml", "127.0.0.1", receiver_port, &[]);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    provider.wait().assert_ok();
    let r = receiver.wait();
    r.assert_ok();
    let msg = r.received_request("MESSAGE");
    assert!(msg.lines().any(|l| l.starts_with("Via: SIP/2.0/TLS ")), "sosdesk's hop was TLS: {msg}\n{}", sbc.log());
    assert!(msg.contains("EMERGENCY CALL to 911"), "{msg}");
    lab.stop();
    let events = lab.audit_events();
    let delivered = events.iter().any(|e| {
        matches!(&e.kind, CallEventKind::Notified { uri, ok: true, detail }
            if uri.contains(";transport=tls") && detail == "delivered on attempt 1: 200 OK")
    });
    assert!(delivered, "{:?}", events.iter().map(|e| &e.kind).collect::<Vec<_>>());
    lab.assert_audit_verifies();
}

/// sosdesk's own certificate is presented as a client's only when it may serve one: one for
/// servers only (extended key usage serverAuth, as public CAs now issue them) would turn away a
/// peer that asks for a client certificate optionally but checks what it gets.
#[test]
fn sosdesks_certificate_is_presented_as_a_clients_only_when_its_key_usage_allows() {
    let (_dir, pki) = pki();
    for (cert, key, presents) in
        [(&pki.server_cert, &pki.server_key, true), (&pki.server_only_cert, &pki.server_only_key, false)]
    {
        let p = |p: &Path| format!("{:?}", p.display().to_string());
        let text = std::fs::read_to_string(support::lab::repo().join("examples/lab.toml")).unwrap().replacen(
            "[sip]\n",
            &format!("[sip]\ntls = \"127.0.0.1:5061\"\ntls_cert = {}\ntls_key = {}\n", p(cert), p(key)),
            1,
        );
        let cfg = sosdesk::config::Config::from_toml(&text, Path::new("lab.toml")).unwrap();
        let tls = sosdesk::transport::TlsSetup::from_config(&cfg).unwrap();
        assert_eq!(tls.presents_client_certificate(), presents, "{}", cert.display());
    }
}

#[test]
fn a_pbx_reaches_sosdesk_over_mutual_tls_and_a_client_without_a_certificate_is_refused() {
    let (dir, pki) = pki();
    let tls_port = free_port();
    let sbc =
        start_sbc_on_free_ports(dir.path(), &pki, false, Some(SocketAddr::from(([127, 0, 0, 1], tls_port))), None);
    let mut lab = Lab::start_with(|c| tls_listener(c, tls_port, &pki));
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    assert_eq!(options_over_tls(tls_addr, &pki, true).as_deref(), Some("SIP/2.0 200 OK"));
    assert_eq!(options_over_tls(tls_addr, &pki, false), None, "no client certificate, no SIP");

    // The PBX's SBC relays the phone's 911 call to sosdesk over TLS (presenting its client
    // certificate); sosdesk routes it on to the provider.
    let primary = lab.uas("primary", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac_to("caller", "caller_hangs_up.xml", "127.0.0.1", sbc.udp, &["-s", "911"]).wait().assert_ok();
    primary.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "ringing", "answered", "ended"], "SBC log:\n{}", sbc.log());
    assert!(events[0].caller.source.starts_with("tls:127.0.0.1:"), "{}", events[0].caller.source);
    lab.assert_audit_verifies();
}

#[test]
fn a_connection_sosdesk_opened_is_kept_alive_with_crlf_pings_answered_by_pongs() {
    // A provider on TCP that takes the route's first OPTIONS probe, then stays quiet but for
    // its pongs (RFC 5626 §4.4.1).
    let provider = Accepting::on_loopback();
    let addr = provider.addr;
    let mut lab = Lab::start_with(|c| {
        primary_over_tcp(c, addr).replace("health_interval_s = 0", "health_interval_s = 3600").replacen(
            "[sip]\n",
            "[sip]\nkeepalive_s = 1\n",
            1,
        )
    });
    let mut conn = provider.next("the route's OPTIONS probe");
    let mut buf = vec![0u8; 65536];
    let n = conn.read(&mut buf).unwrap();
    let probe = sosdesk::sip::parse::parse_datagram(&buf[..n]).expect("the route's OPTIONS probe");
    assert_eq!(probe.method(), "OPTIONS");
    conn.write_all(&probe.response(200, "OK", Some("p1")).to_bytes()).unwrap();
    // Silence: sosdesk pings, the provider pongs, and sosdesk pings again on the same
    // connection a keepalive interval later.
    for _ in 0..2 {
        let mut ping = [0u8; 4];
        conn.read_exact(&mut ping).unwrap();
        assert_eq!(&ping, b"\r\n\r\n");
        conn.write_all(b"\r\n").unwrap();
    }
    lab.stop();
}

/// The lab's primary route over TCP to `addr`, its route timer long (20 s): a failover within
/// the test's time is not the timer's.
fn tcp_primary(config: String, addr: SocketAddr) -> String {
    primary_over_tcp(config, addr).replace("route_timeout_ms = 2000", "route_timeout_ms = 20000")
}

/// The lab's primary route over TCP to `addr`.
fn primary_over_tcp(config: String, addr: SocketAddr) -> String {
    edit_primary(config, |block| {
        block
            .lines()
            .map(|l| match l {
                l if l.starts_with("address") => format!("address = \"{addr}\""),
                l if l.starts_with("transport") => "transport = \"tcp\"".into(),
                l => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n\n"
    })
}

/// The connections a listener accepts, handed over one by one within 10 s each (a missing one
/// fails the test instead of hanging it). The accepting thread ends with this.
struct Accepting {
    connections: std::sync::mpsc::Receiver<TcpStream>,
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Accepting {
    /// A listener on a free loopback port.
    fn on_loopback() -> Accepting {
        Accepting::on(("127.0.0.1", 0))
    }

    fn on(addr: impl std::net::ToSocketAddrs) -> Accepting {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, connections) = std::sync::mpsc::channel();
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::SeqCst) || tx.send(c.expect("accept")).is_err() {
                    break;
                }
            }
        });
        Accepting { connections, addr, stop }
    }

    fn next(&self, what: &str) -> TcpStream {
        let c =
            self.connections.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no connection: {what}"));
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// The next SIP message on a TCP connection (CRLF keepalives skipped).
fn next_message(
    conn: &mut impl Read,
    buf: &mut bytes::BytesMut,
    framer: &mut sosdesk::sip::parse::StreamFramer,
) -> sosdesk::sip::Message {
    use sosdesk::sip::parse::StreamItem;
    loop {
        match framer.next(buf) {
            StreamItem::Message(m) => return m,
            StreamItem::Ping => continue,
            StreamItem::Incomplete => {}
            other => panic!("not SIP on the connection: {other:?}"),
        }
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).expect("read from sosdesk");
        assert!(n > 0, "sosdesk closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_provider_connection_that_closes_before_the_final_answer_fails_the_call_over_at_once() {
    // The provider's SBC takes the INVITE over TCP, answers 100 Trying (or rings), then drops
    // the connection: the answer can no longer come back on it (RFC 3261 §18.2.2), and past a
    // first response no timer of the INVITE's would end the wait (§17.1.1.2; the route timer
    // only looks for silence, and is 20 s here). The call must go to the secondary at once; the
    // provider, which has the INVITE, is told to stop (a CANCEL, on a connection of its own:
    // a 100 is a provisional response too, RFC 3261 §9.1).
    for status in [100, 180] {
        let provider = Accepting::on_loopback();
        let addr = provider.addr;
        let mut lab = Lab::start_with(|c| tcp_primary(c, addr));
        let secondary = lab.uas("secondary", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
        let sbc = std::thread::spawn(move || {
            let mut conn = provider.next("the route's INVITE");
            let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
            let invite = next_message(&mut conn, &mut buf, &mut framer);
            assert_eq!(invite.method(), "INVITE");
            let answer = match status {
                100 => invite.response(100, "Trying", None),
                _ => invite.response(180, "Ringing", Some("sbc1")),
            };
            conn.write_all(&answer.to_bytes()).unwrap();
            drop(conn);
            let mut again = provider.next("the CANCEL");
            let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
            let cancel = next_message(&mut again, &mut buf, &mut framer);
            (invite, cancel)
        });
        lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
        secondary.wait().assert_ok();
        let (invite, cancel) = sbc.join().expect("the provider saw the INVITE and the CANCEL");
        assert_eq!(cancel.method(), "CANCEL", "after {status}");
        assert_eq!(cancel.call_id(), invite.call_id(), "the CANCEL is for the INVITE it had");
        assert_eq!(
            cancel.top_via().and_then(|v| v.branch().map(str::to_string)),
            invite.top_via().and_then(|v| v.branch().map(str::to_string))
        );
        lab.stop();
        let events = lab.audit_events();
        let routed: Vec<&str> = kinds(&events).into_iter().filter(|k| *k != "ringing").collect();
        assert_eq!(routed[..4], ["detected", "routed", "route-failed", "routed"], "after {status}: {events:?}");
        let failed = events.iter().find_map(|e| match &e.kind {
            CallEventKind::RouteFailed { reason } => Some(reason.clone()),
            _ => None,
        });
        assert_eq!(
            failed,
            Some(format!("the connection to tcp:{addr} closed before a final answer")),
            "after {status}"
        );
        let second = events.iter().filter(|e| e.kind.name() == "routed").nth(1).unwrap();
        assert_eq!(second.route.as_ref().unwrap().name, "provider-secondary", "after {status}");
        lab.assert_audit_verifies();
    }
}

/// Everything sosdesk sends on `conn` until it closes its side (it does once the core has let the
/// connection go: the engine holds the writer until it has handled the close).
#[test]
fn a_pbx_whose_connection_closes_mid_call_still_gets_its_answer_and_the_far_ends_bye() {
    pbx_whose_connection_closes_mid_call(None);
}

/// The same over TLS, from a PBX that names itself by a host name only (a Skype for Business
/// Mediation Server's FQDN in its Via and Contact) and calls from an address its certificate
/// does not name: sosdesk reaches it again at that address and checks the certificate against
/// the name (RFC 5922 §7.2): by the address alone the handshake would fail.
#[test]
fn a_pbx_over_tls_that_names_itself_by_a_host_name_is_reached_again_by_that_name() {
    let (dir, pki) = {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path(), &["pbx.test"]);
        (dir, pki)
    };
    pbx_whose_connection_closes_mid_call(Some(&pki));
    drop(dir);
}

/// A PBX's end of a connection: plain TCP, or TLS as the client (its call to sosdesk) or as
/// the server (sosdesk's connections back to it).
enum PbxConn {
    Tcp(TcpStream),
    TlsOut(rustls::StreamOwned<rustls::ClientConnection, TcpStream>),
    TlsIn(rustls::StreamOwned<rustls::ServerConnection, TcpStream>),
}

impl Read for PbxConn {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            PbxConn::Tcp(c) => c.read(b),
            PbxConn::TlsOut(c) => c.read(b),
            PbxConn::TlsIn(c) => c.read(b),
        }
    }
}

impl Write for PbxConn {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            PbxConn::Tcp(c) => c.write(b),
            PbxConn::TlsOut(c) => c.write(b),
            PbxConn::TlsIn(c) => c.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            PbxConn::Tcp(c) => c.flush(),
            PbxConn::TlsOut(c) => c.flush(),
            PbxConn::TlsIn(c) => c.flush(),
        }
    }
}

impl PbxConn {
    /// The PBX closes its side (a TLS close_notify first), then reads until sosdesk has closed
    /// its own.
    fn close(mut self) {
        let sock = match &mut self {
            PbxConn::Tcp(c) => c,
            PbxConn::TlsOut(c) => {
                c.conn.send_close_notify();
                c.flush().unwrap();
                &mut c.sock
            }
            PbxConn::TlsIn(c) => {
                c.conn.send_close_notify();
                c.flush().unwrap();
                &mut c.sock
            }
        };
        sock.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        match self.read_to_end(&mut rest) {
            Ok(_) => {}
            // sosdesk closed without a close_notify of its own: closed all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("sosdesk closes its side of the connection: {e}"),
        }
    }
}

/// A PBX calls 911 over TCP (`tls` None, from 127.0.0.1) or over TLS with the PKI's server
/// certificate, which names `pbx.test` and 127.0.0.1 (from 127.0.0.5, naming itself pbx.test).
fn pbx_whose_connection_closes_mid_call(tls: Option<&TestPki>) {
    // A PBX calls over TCP from an ephemeral port; it listens on `pbx` (its Via and Contact).
    // Its connection closes before the answer (an idle timeout, a restart): the 200 must come
    // on a connection sosdesk opens to the Via's address (RFC 3261 §18.2.2), not to the closed
    // connection's port. That one closes too after the ACK: the far end's BYE must then go to
    // the caller's Contact (§12.2.1.1). The provider is the test's own UDP socket, so that it
    // answers only once the PBX's connection is gone.
    use sosdesk::sip::parse::parse_datagram;
    let ip = if tls.is_some() { "127.0.0.5" } else { "127.0.0.1" };
    // It listens on two ports: its Via's, where the answer comes back (§18.2.2), and its
    // Contact's, where requests inside the call go (§12.2.1.1).
    let (pbx, pbx_contact) = (Accepting::on((ip, 0)), Accepting::on((ip, 0)));
    let (pbx_port, contact_port) = (pbx.addr.port(), pbx_contact.addr.port());
    let (via, host) = match tls {
        Some(_) => ("TLS", "pbx.test".to_string()),
        None => ("TCP", "127.0.0.1".to_string()),
    };
    let tls_port = free_port();
    let mut lab = Lab::start_with(|c| match tls {
        Some(pki) => {
            let p = |p: &Path| format!("{:?}", p.display().to_string());
            // The PBX's address is in the headquarters' site, as 127.0.0.1 is.
            c.replace("subnets = [\"127.0.0.1/32\"]", "subnets = [\"127.0.0.1/32\", \"127.0.0.5/32\"]").replacen(
                "[sip]\n",
                &format!(
                    "[sip]\ntls = \"127.0.0.1:{tls_port}\"\ntls_cert = {}\ntls_key = {}\ntls_ca = {}\n",
                    p(&pki.server_cert),
                    p(&pki.server_key),
                    p(&pki.ca_cert)
                ),
                1,
            )
        }
        None => c,
    });
    // The PBX's side of TLS: its certificate (the PKI's server one) towards sosdesk's
    // connections; sosdesk's, checked against the test CA, on its own call.
    let rustls_provider = Arc::new(rustls::crypto::ring::default_provider());
    let accept = |conn: TcpStream| match tls {
        None => PbxConn::Tcp(conn),
        Some(pki) => {
            use sosdesk::transport::tls::{load_certs, load_key};
            let config = rustls::ServerConfig::builder_with_provider(rustls_provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(load_certs(&pki.server_cert).unwrap(), load_key(&pki.server_key).unwrap())
                .unwrap();
            PbxConn::TlsIn(rustls::StreamOwned::new(rustls::ServerConnection::new(Arc::new(config)).unwrap(), conn))
        }
    };
    let provider = std::net::UdpSocket::bind(("127.0.0.1", lab.ports.primary)).unwrap();
    provider.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let provider_gets = |method: &str| loop {
        let mut b = vec![0u8; 65536];
        let (n, from) = provider.recv_from(&mut b).expect("the provider hears from sosdesk");
        let m = parse_datagram(&b[..n]).unwrap();
        let is = if m.is_request() { m.method() == method } else { m.cseq().is_some_and(|c| c.1 == method) };
        if is {
            return (m, from);
        }
    };
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let sip = lab.ports.sip;
    let invite = format!(
        "INVITE sip:911@127.0.0.1:{sip} SIP/2.0\r\nVia: SIP/2.0/{via} {host}:{pbx_port};branch=z9hG4bKpbxinvite\r\n\
Max-Forwards: 70\r\nFrom: \"Reception\" <sip:4255550100@127.0.0.1>;tag=pbx1\r\nTo: <sip:911@127.0.0.1>\r\n\
Call-ID: pbx-over-tcp\r\nCSeq: 1 INVITE\r\nContact: <sip:4255550100@{host}:{contact_port};transport={}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        via.to_ascii_lowercase(),
        sdp.len()
    );
    // From the PBX's address (a connection from 127.0.0.5 needs its source bound first).
    let to = SocketAddr::from(([127, 0, 0, 1], if tls.is_some() { tls_port } else { sip }));
    let conn = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(ip.parse().unwrap(), 0)).unwrap();
        socket.connect(to).await.unwrap().into_std().unwrap()
    });
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = match tls {
        None => PbxConn::Tcp(conn),
        Some(pki) => {
            use sosdesk::transport::tls::load_certs;
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(&pki.ca_cert).unwrap() {
                roots.add(c).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(rustls_provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            PbxConn::TlsOut(rustls::StreamOwned::new(client, conn))
        }
    };
    first.write_all(invite.as_bytes()).unwrap();
    // The provider takes the INVITE (a 100 keeps the route's timer off) and answers only
    // once the PBX's connection is gone.
    let (to_provider, core) = provider_gets("INVITE");
    provider.send_to(&to_provider.response(100, "Trying", None).to_bytes(), core).unwrap();
    let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
    assert_eq!(next_message(&mut first, &mut buf, &mut framer).status(), Some(100));
    first.close();

    let mut ok = to_provider.response(200, "OK", Some("prov1"));
    ok.push("Contact", format!("<sip:provider@127.0.0.1:{}>", lab.ports.primary));
    ok.push("Content-Type", "application/sdp");
    ok.body = bytes::Bytes::from(sdp.replace("41000", "42000"));
    provider.send_to(&ok.to_bytes(), core).unwrap();

    let mut second = accept(pbx.next("the 200, at the PBX's Via (RFC 3261 §18.2.2)"));
    let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
    let answer = loop {
        let m = next_message(&mut second, &mut buf, &mut framer);
        if m.status().is_some_and(|s| s >= 200) {
            break m;
        }
    };
    assert_eq!((answer.status(), answer.call_id()), (Some(200), Some("pbx-over-tcp")), "{answer:?}");
    let contact = sosdesk::sip::dialog::contact_uri_text(&answer);
    let ack = format!(
        "ACK {contact} SIP/2.0\r\nVia: SIP/2.0/{via} {host}:{pbx_port};branch=z9hG4bKpbxack\r\nMax-Forwards: 70\r\n\
From: \"Reception\" <sip:4255550100@127.0.0.1>;tag=pbx1\r\nTo: {}\r\nCall-ID: pbx-over-tcp\r\nCSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n",
        answer.header("To").unwrap()
    );
    second.write_all(ack.as_bytes()).unwrap();
    provider_gets("ACK");
    second.close();

    // The far end hangs up.
    let bye = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKprovbye\r\nMax-Forwards: 70\r\nFrom: {};tag=prov1\r\n\
To: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        sosdesk::sip::dialog::contact_uri_text(&to_provider),
        lab.ports.primary,
        to_provider.header("To").unwrap(),
        to_provider.header("From").unwrap(),
        to_provider.call_id().unwrap()
    );
    provider.send_to(bye.as_bytes(), core).unwrap();
    let mut third = accept(pbx_contact.next("the far end's BYE, at the PBX's Contact (§12.2.1.1)"));
    let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
    let bye_to_pbx = next_message(&mut third, &mut buf, &mut framer);
    assert_eq!((bye_to_pbx.method(), bye_to_pbx.call_id()), ("BYE", Some("pbx-over-tcp")));
    assert!(bye_to_pbx.request_uri().unwrap().contains(&format!("{host}:{contact_port}")), "{bye_to_pbx:?}");
    third.write_all(&bye_to_pbx.response(200, "OK", None).to_bytes()).unwrap();
    let (done, _) = provider_gets("BYE");
    assert_eq!(done.status(), Some(200), "the provider's BYE is answered");
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "answered", "ended"]);
    assert!(matches!(&events[3].kind, CallEventKind::Ended { by, .. } if by == "far-end"), "{:?}", events[3].kind);
    lab.assert_audit_verifies();
}

#[test]
fn a_final_answer_a_provider_sends_just_before_closing_still_answers_the_call() {
    // What was read on a connection is handled before its close: a 200 followed at once by the
    // close must answer the call, not fail it over (the close is served after the urgent lane,
    // where the 200 waits). The caller's BYE then reaches the provider on a new connection.
    let provider = Accepting::on_loopback();
    let addr = provider.addr;
    let mut lab = Lab::start_with(|c| tcp_primary(c, addr));
    let sbc = std::thread::spawn(move || {
        let mut conn = provider.next("the route's INVITE");
        let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
        let invite = next_message(&mut conn, &mut buf, &mut framer);
        let mut ok = invite.response(200, "OK", Some("sbc1"));
        ok.push("Contact", format!("<sip:provider@{addr};transport=tcp>"));
        ok.push("Content-Type", "application/sdp");
        ok.body = bytes::Bytes::from_static(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 43000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        );
        conn.write_all(&ok.to_bytes()).unwrap();
        drop(conn);
        // The ACK went into the closing connection (sosdesk had not read its close yet) and is
        // lost with it, as TCP goes; a provider retransmits its 200 until the ACK (RFC 3261
        // §13.3.1.4). The caller's BYE comes on a new connection.
        let mut again = provider.next("the BYE");
        let (mut buf, mut framer) = (bytes::BytesMut::new(), Default::default());
        let bye = loop {
            let m = next_message(&mut again, &mut buf, &mut framer);
            if m.method() != "ACK" {
                break m;
            }
        };
        again.write_all(&bye.response(200, "OK", None).to_bytes()).unwrap();
        bye
    });
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    let bye = sbc.join().expect("the provider got the BYE");
    assert_eq!(bye.method(), "BYE");
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "answered", "ended"]);
    lab.assert_audit_verifies();
}
