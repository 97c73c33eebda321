//! The SIP-over-TLS and DNS test peers work, without sosdesk: the test PKI, Kamailio as a TLS
//! SBC in both directions (a whole call each way, and its client-certificate checks), dnsmasq
//! answering the records it was given and nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::dnsmasq::{self, DnsRecord};
use crate::support::kamailio;
use crate::support::lab::{self, free_port};
use crate::support::pki::{self, TestPki};

/// How long any one step may take before the test gives up (reads, a peer finishing).
const STEP: Duration = Duration::from_secs(10);

#[test]
fn kamailio_relays_calls_between_tls_and_udp_and_checks_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::make_pki(&dir.path().join("pki"), &["sbc.test"]);
    // TLS -> UDP's far end: a sipp UAS that answers and waits for the BYE.
    let uas_port = free_port();
    let uas = Sipp::uas(dir.path(), "provider_answer.xml", uas_port);
    // UDP -> TLS's far end: a TLS UAS of our own (sipp has no TLS) that demands a client
    // certificate of the test CA, so Kamailio's TLS client side is checked too.
    let tls_uas = TlsUas::start(&pki);
    let udp_to = Some(SocketAddr::from(([127, 0, 0, 1], uas_port)));
    let sbc = kamailio::start_sbc_on_free_ports(dir.path(), &pki, true, Some(tls_uas.addr), udp_to);
    let ctx = |what: &str| format!("{what}\nkamailio log:\n{}", sbc.log());

    // A whole call from a TLS client: INVITE, 200, ACK and BYE through Kamailio to the UAS.
    let mut c = tls_connect(&pki, sbc.tls, Some((&pki.client_cert, &pki.client_key)))
        .unwrap_or_else(|e| panic!("{}", ctx(&format!("TLS with the test client certificate: {e}"))));
    let lp = c.local_port;
    let dialog = format!(
        "From: <sip:caller@127.0.0.1>;tag=peers1\r\nCall-ID: peers-{}@127.0.0.1\r\nMax-Forwards: 70\r\n\
         Contact: <sip:caller@127.0.0.1:{lp};transport=tls>\r\n",
        std::process::id()
    );
    c.send(&format!(
        "INVITE sip:911@127.0.0.1:{};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bK-peers-inv;rport\r\n\
         {dialog}To: <sip:911@127.0.0.1>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        sbc.tls.port()
    ));
    let ok = loop {
        let m = c.recv().unwrap_or_else(|e| panic!("{}", ctx(&format!("waiting for the INVITE's 200: {e}"))));
        if m.starts_with("SIP/2.0 200") {
            break m;
        }
        assert!(m.starts_with("SIP/2.0 1"), "{}", ctx(&format!("unexpected answer to the INVITE:\n{m}")));
    };
    // The route set is the 200's Record-Routes reversed (RFC 3261 12.1.2); Kamailio put two
    // (double Record-Route: one per transport).
    let mut routes: Vec<String> =
        headers_of(&ok, "Record-Route").iter().flat_map(|v| v.split(',')).map(|r| r.trim().to_string()).collect();
    assert_eq!(routes.len(), 2, "{}", ctx(&format!("Record-Routes of the 200:\n{ok}")));
    routes.reverse();
    let route = format!("Route: {}\r\n", routes.join(", "));
    let to = lab::header_of(&ok, "To").unwrap();
    let target = contact_uri(&ok);
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        c.send(&format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{lp};branch=z9hG4bK-peers-{cseq};rport\r\n\
             {dialog}To: {to}\r\n{route}CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        ));
    }
    // (A provisional the UAS retransmitted while the machine was busy may come first.)
    let bye_ok = loop {
        let m = c.recv().unwrap_or_else(|e| panic!("{}", ctx(&format!("waiting for the BYE's 200: {e}"))));
        if !m.starts_with("SIP/2.0 1") {
            break m;
        }
    };
    assert!(bye_ok.starts_with("SIP/2.0 200") && bye_ok.contains("2 BYE"), "{}", ctx(&bye_ok));
    let run = uas.wait();
    assert_eq!(run.0, Some(0), "{}", ctx(&format!("sipp UAS failed: {}", run.1)));
    // The Request-URI named Kamailio: it was re-addressed to the UAS, without transport=tls.
    assert!(
        run.2.contains(&format!("invite.ruri=sip:911@127.0.0.1:{uas_port}\n")),
        "{}",
        ctx(&format!("sipp log:\n{}", run.2))
    );

    // The other way: a sipp UAC over UDP, through Kamailio over TLS, to the TLS UAS.
    let uac = Sipp::uac(dir.path(), "caller_basic.xml", sbc.udp, &["-s", "911", "-set", "hold_ms", "100"]);
    let run = uac.wait();
    let seen = tls_uas.finish();
    assert_eq!(run.0, Some(0), "{}", ctx(&format!("sipp UAC failed: {}\nTLS UAS: {seen:?}", run.1)));
    assert_eq!(seen, Ok(vec!["INVITE".to_string(), "ACK".into(), "BYE".into()]), "{}", ctx("TLS UAS"));

    // The client certificate is checked: none, or one of another CA, is refused. With TLS 1.3
    // the client's handshake completes before the server has checked it, so the refusal shows
    // on the first read (an alert), which is where this looks for it.
    let ask = |client: Option<(&Path, &Path)>| -> Result<String, String> {
        let mut c = tls_connect(&pki, sbc.tls, client)?;
        c.send(&format!(
            "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{};branch=z9hG4bK-peers-opt;rport\r\n\
             From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:{}>\r\nCall-ID: peers-opt@127.0.0.1\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            sbc.tls, c.local_port, sbc.tls
        ));
        c.recv()
    };
    let answer = ask(Some((&pki.client_cert, &pki.client_key)));
    assert!(answer.as_ref().is_ok_and(|a| a.starts_with("SIP/2.0 200")), "{}", ctx(&format!("{answer:?}")));
    let answer = ask(None);
    assert!(answer.is_err(), "{}", ctx(&format!("a client without a certificate got: {answer:?}")));
    let answer = ask(Some((&pki.other_client_cert, &pki.other_client_key)));
    assert!(answer.is_err(), "{}", ctx(&format!("a client of the other CA got: {answer:?}")));
}

/// The readiness probe the tests use for their peers sees a bound socket, and nothing once it
/// is gone, for UDP and TCP, IPv4 and IPv6, a specific and the wildcard address.
#[test]
fn a_peers_socket_is_seen_bound_without_touching_its_port() {
    for (ip, wildcard) in [("127.0.0.1", "0.0.0.0"), ("::1", "::")] {
        let port = free_port();
        assert!(!lab::is_listening(ip, port, false) && !lab::is_listening(ip, port, true), "{ip}:{port} free");
        let udp = std::net::UdpSocket::bind((ip, port)).unwrap();
        assert!(lab::is_listening(ip, port, false) && !lab::is_listening(ip, port, true), "{ip}:{port} udp");
        drop(udp);
        let tcp = TcpListener::bind((wildcard, port)).unwrap();
        assert!(lab::is_listening(ip, port, true) && !lab::is_listening(ip, port, false), "{wildcard}:{port} tcp");
        drop(tcp);
        assert!(!lab::is_listening(ip, port, true), "{ip}:{port} free again");
    }
}

#[test]
fn dnsmasq_answers_the_records_given_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = String::from;
    let srv = |target: &str, port, priority| DnsRecord::Srv {
        name: s("_sips._tcp.provider.test"),
        target: target.to_string(),
        port,
        priority,
        weight: 10,
    };
    let mut dns = dnsmasq::start_dns(
        dir.path(),
        free_port(),
        &[
            DnsRecord::Naptr {
                name: s("provider.test"),
                order: 10,
                preference: 50,
                flags: s("S"),
                service: s("SIPS+D2T"),
                regexp: s(""),
                replacement: s("_sips._tcp.provider.test"),
            },
            srv("sbc1.provider.test", 5061, 10),
            srv("sbc2.provider.test", 5062, 20),
            DnsRecord::A { name: s("sbc1.provider.test"), ip: [127, 0, 0, 1].into() },
        ],
        30,
    );
    let ask = |name: &str, qtype| {
        dnsmasq::query(dns.addr, name, qtype).unwrap_or_else(|| panic!("no answer for {name}; log:\n{}", dns.log()))
    };
    let a = ask("_sips._tcp.provider.test", dnsmasq::TYPE_SRV);
    assert_eq!((a.rcode, a.answers.len()), (dnsmasq::RCODE_NOERROR, 2), "{a:?}");
    let mut ports: Vec<u16> = a.answers.iter().map(|r| r.srv_port()).collect();
    ports.sort();
    assert_eq!(ports, [5061, 5062]);
    assert!(a.answers.iter().all(|r| r.ttl == 30), "{a:?}");
    let a = ask("provider.test", dnsmasq::TYPE_NAPTR);
    assert_eq!((a.answers.len(), a.answers[0].rtype, a.answers[0].ttl), (1, dnsmasq::TYPE_NAPTR, 30), "{a:?}");
    let a = ask("sbc1.provider.test", dnsmasq::TYPE_A);
    assert_eq!(a.answers.iter().map(|r| r.rdata.clone()).collect::<Vec<_>>(), [vec![127, 0, 0, 1]]);
    // No AAAA for a name with only an A: an empty answer, not an error.
    let a = ask("sbc1.provider.test", dnsmasq::TYPE_AAAA);
    assert_eq!((a.rcode, a.answers.len()), (dnsmasq::RCODE_NOERROR, 0), "{a:?}");
    // Anything else is NXDOMAIN: nothing is forwarded anywhere.
    let a = ask("example.com", dnsmasq::TYPE_A);
    assert_eq!((a.rcode, a.answers.len()), (dnsmasq::RCODE_NXDOMAIN, 0), "{a:?}");
    // Its log lists the queries (written just after the answers: polled).
    let deadline = Instant::now() + STEP;
    while !dns.queries().contains(&(s("SRV"), s("_sips._tcp.provider.test"))) {
        assert!(Instant::now() < deadline, "SRV query not logged:\n{}", dns.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    dns.stop();
    assert!(dnsmasq::query(dns.addr, "provider.test", dnsmasq::TYPE_NAPTR).is_none(), "answers after stop()");
}

/// A SIP connection over any byte stream: messages framed by Content-Length.
struct SipStream<S> {
    s: S,
    buf: Vec<u8>,
    local_port: u16,
}

impl<S: Read + Write> SipStream<S> {
    fn send(&mut self, m: &str) {
        self.s.write_all(m.as_bytes()).and_then(|()| self.s.flush()).unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// The next message, or the error that ended the stream (reads time out after STEP).
    fn recv(&mut self) -> Result<String, String> {
        loop {
            // CRLF keep-alives (RFC 5626) between messages.
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let len: usize = lab::header_of(&head, "Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let m: Vec<u8> = self.buf.drain(..end + 4 + len).collect();
                    return Ok(String::from_utf8_lossy(&m).into_owned());
                }
            }
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

type TlsClient = SipStream<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>;

/// A TLS connection to `addr` that trusts the test CA and checks the name sbc.test, with a
/// client certificate or none; Err if the handshake fails.
fn tls_connect(pki: &TestPki, addr: SocketAddr, client: Option<(&Path, &Path)>) -> Result<TlsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&pki.ca_cert).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs(cert), PrivateKeyDer::from_pem_file(key).unwrap())
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    let mut conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("sbc.test").unwrap())
        .map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect_timeout(&addr, STEP).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(STEP)).unwrap();
    let local_port = tcp.local_addr().unwrap().port();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(SipStream { s: rustls::StreamOwned::new(conn, tcp), buf: Vec::new(), local_port })
}

fn certs(file: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(file).unwrap().collect::<Result<_, _>>().unwrap()
}

/// A TLS UAS on a kernel-chosen port: accepts one connection (client certificate of the test CA
/// required), answers an INVITE 200, takes the ACK, answers the BYE 200. Reports the methods
/// it received, or what went wrong.
struct TlsUas {
    addr: SocketAddr,
    thread: std::thread::JoinHandle<Result<Vec<String>, String>>,
}

impl TlsUas {
    fn start(pki: &TestPki) -> TlsUas {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&pki.ca_cert).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&pki.server_cert), PrivateKeyDer::from_pem_file(&pki.server_key).unwrap())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || -> Result<Vec<String>, String> {
            // Accept within STEP, polled, so a Kamailio that never connects fails the test
            // instead of hanging it.
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + STEP;
            let tcp = loop {
                match listener.accept() {
                    Ok((tcp, _)) => break tcp,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => return Err(format!("no connection from Kamailio: {e}")),
                }
            };
            tcp.set_nonblocking(false).unwrap();
            tcp.set_read_timeout(Some(STEP)).unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut s = SipStream { s: rustls::StreamOwned::new(conn, tcp), buf: Vec::new(), local_port: addr.port() };
            let mut seen = Vec::new();
            loop {
                let m = s.recv()?;
                let method = m.split(' ').next().unwrap_or("").to_string();
                seen.push(method.clone());
                match method.as_str() {
                    "INVITE" => s.send(&reply(&m, "200 OK", ";tag=tls-uas", addr)),
                    "ACK" => {}
                    "BYE" => {
                        s.send(&reply(&m, "200 OK", "", addr));
                        return Ok(seen);
                    }
                    _ => return Err(format!("unexpected:\n{m}")),
                }
            }
        });
        TlsUas { addr, thread }
    }

    fn finish(self) -> Result<Vec<String>, String> {
        self.thread.join().unwrap()
    }
}

/// A response to `req` echoing its Vias, Record-Routes, From, To (plus `to_tag`), Call-ID, CSeq.
fn reply(req: &str, status: &str, to_tag: &str, contact: SocketAddr) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for line in req[..req.find("\r\n\r\n").unwrap()].split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if ["via", "record-route", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            r.push_str(line);
            if name == "to" {
                r.push_str(to_tag);
            }
            r.push_str("\r\n");
        }
    }
    r.push_str(&format!("Contact: <sip:far@{contact};transport=tls>\r\nContent-Length: 0\r\n\r\n"));
    r
}

/// Every value of a header, in order (one per header line).
fn headers_of(raw: &str, name: &str) -> Vec<String> {
    let head = &raw[..raw.find("\r\n\r\n").unwrap_or(raw.len())];
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// The URI inside the Contact header.
fn contact_uri(raw: &str) -> String {
    let c = lab::header_of(raw, "Contact").expect("a Contact");
    c[c.find('<').unwrap() + 1..c.find('>').unwrap()].to_string()
}

/// A sipp peer of this test (lab.rs's belong to a Lab with a running core).
struct Sipp {
    child: Child,
    msg: std::path::PathBuf,
    log: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Sipp {
    fn uas(dir: &Path, scenario: &str, port: u16) -> Sipp {
        let mut sipp = Sipp::spawn(dir, scenario, port, None, &[]);
        // Wait until it has bound its port (it does so right after starting), polled.
        if let Err(e) = lab::wait_bound(&mut sipp.child, "127.0.0.1", port, false) {
            let err = std::fs::read_to_string(&sipp.err).unwrap_or_default();
            panic!("sipp {scenario} did not bind 127.0.0.1:{port}: {e} {err}");
        }
        sipp
    }

    fn uac(dir: &Path, scenario: &str, to: SocketAddr, extra: &[&str]) -> Sipp {
        Sipp::spawn(dir, scenario, free_port(), Some(to), extra)
    }

    fn spawn(dir: &Path, scenario: &str, port: u16, to: Option<SocketAddr>, extra: &[&str]) -> Sipp {
        let file = |ext: &str| dir.join(format!("{scenario}.{ext}"));
        let (msg, log, err) = (file("msg"), file("log"), file("err"));
        let mut cmd = Command::new("sipp");
        cmd.current_dir(dir).arg("-sf").arg(lab::scenario(scenario));
        if let Some(to) = to {
            cmd.arg(to.to_string());
        }
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1", "-nostdin"]);
        // -timeout: a scenario waiting for a message that never comes still ends, as a failure.
        cmd.args(["-timeout", "15", "-timeout_error"]);
        cmd.args(["-trace_msg", "-message_file"]).arg(&msg).args(["-trace_logs", "-log_file"]).arg(&log);
        cmd.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&err).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start sipp (Debian package sip-tester): {e}"));
        Sipp { child, msg, log, err }
    }

    /// Its exit code (None if it had to be killed after 20 s), its stderr and messages, its log
    /// lines.
    fn wait(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => break None,
            }
        };
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        (code, format!("{}\n{}", read(&self.err), read(&self.msg)), read(&self.log))
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
