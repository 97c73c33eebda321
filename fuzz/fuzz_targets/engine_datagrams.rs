//! The routing engine of the lab config (examples/lab.toml, notifications on; media anchored or
//! not, a conference URI or not) fed a sequence of inputs from a few peers — arbitrary datagrams,
//! and, so that the fuzzer gets past the first INVITE, well-formed steps of a call it mutates:
//! emergency INVITEs, answers to what sosdesk sent, in-dialog requests, CANCELs, digest answers
//! to sosdesk's challenges, desks joining and acknowledging a call — with time passing, transports
//! failing and the core shedding load in between.
//!
//! Asserts: no panic; every `Transmit` is a SIP message that parses (sosdesk never puts a
//! malformed message on the wire, whatever it relays), with no stray CR or LF in its header lines
//! — except the 400 to a malformed request, which copies its From, To, Call-ID and CSeq as they
//! are (RFC 4475 §3.3.10) and only has to be a response, to its Via, with clean lines; every
//! call's events are numbered 1, 2, 3… without a gap (the audit chain and the desks rely on it).
#![no_main]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sosdesk::clock::Now;
use sosdesk::config::Config;
use sosdesk::events::{CallEvent, CallEventKind};
use sosdesk::location::{CivicAddress, DeviceAttachment, Erl, LastKnownLocation, Locator, MatchKind};
use sosdesk::routing::{Engine, LocalEndpoint, Locators, Output};
use sosdesk::sip::digest;
use sosdesk::sip::parse::parse_datagram;
use sosdesk::sip::transaction::{Peer, Transport};
use sosdesk::sip::{Message, NameAddr};

/// Callers in each site of the lab (hq, none, london, warehouse), the routes (primary,
/// secondary, ELIN gateway), the security desk phone, and a desk app.
const PEERS: [&str; 9] = [
    "127.0.0.1:5062",
    "127.0.0.2:5062",
    "127.0.0.3:5062",
    "127.0.0.4:5062",
    "127.0.0.1:5070",
    "127.0.0.1:5071",
    "127.0.0.1:5080",
    "127.0.0.1:5090",
    "127.0.0.5:5064",
];
/// The lab's emergency numbers and masks, a test number, the warehouse ELINs (callbacks), and
/// numbers that are none of these.
const DIALED: [&str; 10] =
    ["911", "9911", "933", "999", "112", "4255550199", "4255550100", "1001", "security", "conf-x"];
/// The desk accounts of the lab config.
const ACCOUNTS: [(&str, &str); 2] = [("desk1", "lobby-desk-secret"), ("desk2", "control-room-secret")];
const METHODS: [&str; 8] = ["ACK", "BYE", "INVITE", "UPDATE", "INFO", "OPTIONS", "PRACK", "MESSAGE"];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Bytes from a peer, as the shell hands them in (refused ones go to `handle_rejection`).
    Datagram { from: u8, tcp: bool, bytes: Vec<u8> },
    /// A well-formed INVITE from a peer to a number, with a body of some kind.
    Invite { from: u8, dialed: u8, body: u8, media_ip: u8 },
    /// An answer to one of the requests sosdesk sent, from where it went.
    Answer { which: u8, status: u16, sdp: bool },
    /// A request in one of the dialogs (as caller towards sosdesk, or as a route answering).
    InDialog { which: u8, method: u8, sdp: bool },
    /// CANCEL of one of the INVITEs sent to sosdesk.
    Cancel { which: u8 },
    /// Answer one of sosdesk's digest challenges with a desk account's credentials.
    Authenticate { which: u8, account: bool, wrong: bool },
    /// A desk app joins a call that sosdesk reported (to listen, or to talk), or registers.
    Join { which: u8, register: bool, listen: bool },
    /// A message built above, or one sosdesk sent, with some bytes changed, from a peer.
    Mutate { which: u8, from: u8, edits: Vec<(u16, u8)> },
    /// Time passes; the timers due fire.
    Wait { ms: u16 },
    /// The transport could not reach a peer.
    SendFailure { to: u8, tcp: bool },
    /// The core is behind: a message built above or sent by sosdesk is shed (503), from a peer.
    Shed { which: u8, from: u8 },
    /// Datagrams dropped unread (their lane was full).
    Dropped { n: u16 },
    /// A desk acknowledges one of the calls reported (an event returned, in the call's sequence).
    Acknowledge { which: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bit 0: anchor media (sockets bound and handed in) or pass SDP through; bit 1: the HQ
    /// policy calls the security desk phone into every call (`conference_uri`).
    flags: u8,
    ops: Vec<Op>,
}

/// A location for SDP addresses in 192.0.2.0/24 (a wiremap stand-in).
struct Table(Arc<Erl>);

impl Locator for Table {
    fn locate(&self, d: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        let ip = d.ip?;
        ip.to_string().starts_with("192.0.2.").then(|| (self.0.clone(), MatchKind::Subnet))
    }
}

impl LastKnownLocation for Table {
    fn last_known(&self, d: &DeviceAttachment) -> Option<Arc<Erl>> {
        self.locate(d).map(|(e, _)| e)
    }
}

/// The lab config, with or without a conference URI on the HQ policy.
fn lab(conference: bool) -> &'static Config {
    use std::sync::OnceLock;
    static CFG: [OnceLock<Config>; 2] = [OnceLock::new(), OnceLock::new()];
    CFG[usize::from(conference)].get_or_init(|| {
        let mut text = include_str!("../../examples/lab.toml").to_string();
        if conference {
            text = text.replacen(
                "conference_mode = \"two-way\"",
                "conference_mode = \"two-way\"\nconference_uri = \"sip:security-desk@127.0.0.1:5090\"",
                1,
            );
        }
        Config::from_toml(&text, Path::new("lab.toml")).expect("the lab config is valid")
    })
}

fn peer(i: u8, tcp: bool) -> Peer {
    let addr: SocketAddr = PEERS[i as usize % PEERS.len()].parse().unwrap();
    Peer { transport: if tcp { Transport::Tcp } else { Transport::Udp }, addr }
}

fn sdp(ip: &str, port: u16) -> String {
    sdp_dir(ip, port, "sendrecv")
}

fn sdp_dir(ip: &str, port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
}

const PIDF: &str = r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" entity="pres:x@example.com"><tuple id="t"><status><gp:geopriv><gp:location-info><ca:civicAddress><ca:country>US</ca:country><ca:A1>WA</ca:A1><ca:RD>Main</ca:RD></ca:civicAddress></gp:location-info><gp:usage-rules/></gp:geopriv></status></tuple></presence>"#;

/// One run: the engine, the inputs so far, and what it sent.
struct Run {
    e: Engine,
    now: Now,
    anchor: bool,
    n: u32,
    /// Requests sosdesk sent, with where to.
    sent_requests: Vec<(Peer, Message)>,
    /// Every message sosdesk sent.
    sent: Vec<(Peer, Message)>,
    /// INVITEs (and other requests) sent to sosdesk by the harness, with the peer.
    our_requests: Vec<(Peer, Message)>,
    /// Dialogs a peer holds with sosdesk: (peer, the From and To as the peer writes them,
    /// Call-ID, where in-dialog requests go, the peer's next CSeq).
    dialogs: Vec<(Peer, String, String, String, String, u32)>,
    /// Calls reported in events.
    calls: Vec<String>,
    /// The last event number of each call.
    seqs: HashMap<String, u32>,
}

impl Run {
    fn deliver_bytes(&mut self, bytes: &[u8], from: Peer) {
        match parse_datagram(bytes) {
            Ok(m) => self.deliver(m, from),
            Err(rej) => {
                self.feed_ports();
                self.e.handle_rejection(rej, from, self.now);
                self.drain_as(true);
            }
        }
    }

    fn deliver(&mut self, m: Message, from: Peer) {
        if m.is_request() && m.method() != "ACK" {
            self.our_requests.push((from, m.clone()));
        }
        self.feed_ports();
        self.e.handle_message(m, from, self.now);
        self.drain();
    }

    /// Hand in the RTP ports the engine wants, as the shell does before each input.
    fn feed_ports(&mut self) {
        if !self.anchor {
            return;
        }
        for _ in 0..self.e.rtp_ports_wanted() {
            let Ok(s) = UdpSocket::bind("127.0.0.1:0") else { return };
            let Ok(addr) = s.local_addr() else { return };
            self.e.add_rtp_port(s, addr);
        }
    }

    fn drain(&mut self) {
        self.drain_as(false)
    }

    /// Drain the outputs; `rejection`: they answer a malformed message.
    fn drain_as(&mut self, rejection: bool) {
        while let Some(o) = self.e.poll_output() {
            match o {
                Output::Transmit(t) => {
                    assert_clean_lines(&t.bytes);
                    if rejection {
                        let head = String::from_utf8_lossy(&t.bytes);
                        assert!(head.starts_with("SIP/2.0 ") && head.contains("\r\nVia: "), "{head}");
                        continue;
                    }
                    let m = match parse_datagram(&t.bytes) {
                        Ok(m) => m,
                        Err(r) => panic!(
                            "sosdesk sent a malformed message to {} ({}):\n{}",
                            t.peer,
                            r.reason,
                            String::from_utf8_lossy(&t.bytes)
                        ),
                    };
                    if m.is_request() && m.method() != "ACK" {
                        self.sent_requests.push((t.peer, m.clone()));
                    }
                    self.learn_dialog_of_response(t.peer, &m);
                    self.sent.push((t.peer, m));
                }
                Output::Event(ev) => {
                    self.numbered(&ev);
                    if !self.calls.contains(&ev.call_id) {
                        self.calls.push(ev.call_id);
                    }
                }
                // Media orders, late events, audit records: nothing to check here.
                _ => {}
            }
        }
        bound(&mut self.sent);
        bound(&mut self.sent_requests);
        bound(&mut self.our_requests);
    }

    /// Each call's events come numbered 1, 2, 3…
    fn numbered(&mut self, ev: &CallEvent) {
        let last = self.seqs.entry(ev.call_id.clone()).or_insert(0);
        assert_eq!(ev.seq, *last + 1, "call {} event numbered {} after {}", ev.call_id, ev.seq, last);
        *last = ev.seq;
    }

    /// A response from sosdesk with a To tag to a request the peer sent: the peer's dialog.
    fn learn_dialog_of_response(&mut self, to: Peer, m: &Message) {
        let Some(status) = m.status() else { return };
        if !(101..300).contains(&status) || m.method() != "INVITE" || m.to_tag().is_none() {
            return;
        }
        let (Some(from), Some(to_h), Some(cid)) = (m.header("From"), m.header("To"), m.call_id()) else { return };
        let target = contact(m).unwrap_or_else(|| "sip:sosdesk@127.0.0.1:5060".into());
        let cseq = m.cseq().map(|c| c.0).unwrap_or(1);
        let d = (to, from.to_string(), to_h.to_string(), cid.to_string(), target, cseq);
        if !self.dialogs.iter().any(|x| x.3 == d.3 && x.0 == d.0) {
            self.dialogs.push(d);
        }
    }

    fn next(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Datagram { from, tcp, bytes } => self.deliver_bytes(&bytes, peer(from, tcp)),
            Op::Invite { from, dialed, body, media_ip } => {
                let p = peer(from, false);
                let n = self.next();
                let ip = if media_ip % 2 == 0 { p.addr.ip().to_string() } else { format!("192.0.2.{media_ip}") };
                let user = DIALED[dialed as usize % DIALED.len()];
                let mut m = Message::request("INVITE", &format!("sip:{user}@127.0.0.1:5060"));
                m.push("Via", format!("SIP/2.0/UDP {};branch=z9hG4bKf{n}", p.addr));
                m.push("From", format!("\"Caller {n}\" <sip:100{n}@{}>;tag=f{n}", p.addr.ip()));
                m.push("To", format!("<sip:{user}@127.0.0.1>"));
                m.push("Call-ID", format!("fuzz-{n}"));
                m.push("CSeq", "1 INVITE");
                m.push("Max-Forwards", "70");
                m.push("Contact", format!("<sip:100{n}@{}>", p.addr));
                match body % 4 {
                    0 => {}
                    1 => {
                        m.push("Content-Type", "application/sdp");
                        m.body = sdp(&ip, 6000 + (n as u16 % 1000) * 2).into();
                    }
                    _ => {
                        let (ct, b) = sosdesk::sip::body::multipart_mixed(&[
                            ("Content-Type: application/sdp", sdp(&ip, 7000).as_bytes()),
                            ("Content-Type: application/pidf+xml\r\nContent-ID: <loc@x>", PIDF.as_bytes()),
                        ]);
                        m.push("Content-Type", ct);
                        if body % 4 == 3 {
                            m.push("Geolocation", "<cid:loc@x>");
                        }
                        m.body = b;
                    }
                }
                self.deliver(m, p);
            }
            Op::Answer { which, status, sdp: with_sdp } => {
                let Some((to, req)) = pick(&self.sent_requests, which) else { return };
                let status = 100 + status % 600;
                let tag = format!("a{}", self.next());
                let mut r = req.response(status, "Fuzz", Some(&tag));
                if (101..300).contains(&status) {
                    r.push("Contact", format!("<sip:far@{}>", to.addr));
                }
                if with_sdp && req.method() == "INVITE" {
                    r.push("Content-Type", "application/sdp");
                    r.body = sdp(&to.addr.ip().to_string(), 9000).into();
                }
                if status == 401 || status == 407 {
                    r.push("WWW-Authenticate", "Digest realm=\"far\", nonce=\"abc\", qop=\"auth\"");
                }
                // The far end now has a dialog with sosdesk: its requests go the other way.
                if (101..300).contains(&status) && req.method() == "INVITE" {
                    if let (Some(f), Some(t), Some(cid)) = (req.header("From"), r.header("To"), req.call_id()) {
                        let target = contact(&req).unwrap_or_default();
                        let d = (to, t.to_string(), f.to_string(), cid.to_string(), target, 1);
                        self.dialogs.push(d);
                    }
                }
                self.deliver(r, to);
            }
            Op::InDialog { which, method, sdp: with_sdp } => {
                let n = self.next();
                let Some((p, from, to, cid, target, cseq)) = pick(&self.dialogs, which) else { return };
                let method = METHODS[method as usize % METHODS.len()];
                let seq = if method == "ACK" { cseq } else { cseq + n };
                let mut m = Message::request(method, &target);
                m.push("Via", format!("SIP/2.0/{} {};branch=z9hG4bKd{n}", p.transport.as_str(), p.addr));
                m.push("From", from);
                m.push("To", to);
                m.push("Call-ID", cid);
                m.push("CSeq", format!("{seq} {method}"));
                m.push("Max-Forwards", "70");
                m.push("Contact", format!("<sip:peer@{}>", p.addr));
                if with_sdp {
                    m.push("Content-Type", "application/sdp");
                    m.body = sdp(&p.addr.ip().to_string(), 6100).into();
                }
                self.deliver(m, p);
            }
            Op::Cancel { which } => {
                let invites: Vec<(Peer, Message)> =
                    self.our_requests.iter().filter(|(_, m)| m.method() == "INVITE").cloned().collect();
                let Some((p, inv)) = pick(&invites, which) else { return };
                let mut m = Message::request("CANCEL", inv.request_uri().unwrap_or("sip:x@127.0.0.1"));
                for name in ["Via", "From", "To", "Call-ID"] {
                    if let Some(v) = inv.header(name) {
                        m.push(name, v.to_string());
                    }
                }
                m.push("CSeq", format!("{} CANCEL", inv.cseq().map(|c| c.0).unwrap_or(1)));
                m.push("Max-Forwards", "70");
                self.deliver(m, p);
            }
            Op::Authenticate { which, account, wrong } => {
                // A 401/407 sosdesk sent, and the request it answered.
                let challenges: Vec<(Peer, Message)> = self
                    .sent
                    .iter()
                    .filter(|(_, m)| matches!(m.status(), Some(401 | 407)) && m.header("WWW-Authenticate").is_some())
                    .cloned()
                    .collect();
                let Some((p, ch)) = pick(&challenges, which) else { return };
                let Some((_, req)) = self
                    .our_requests
                    .iter()
                    .rev()
                    .find(|(q, m)| *q == p && m.call_id() == ch.call_id() && m.cseq() == ch.cseq())
                    .cloned()
                else {
                    return;
                };
                let (user, pass) = ACCOUNTS[account as usize];
                let pass = if wrong { "not-the-password" } else { pass };
                let uri = req.request_uri().unwrap_or("").to_string();
                let Some(auth) =
                    digest::answer(ch.header("WWW-Authenticate").unwrap_or(""), req.method(), &uri, user, pass)
                else {
                    return;
                };
                let n = self.next();
                let mut m = req.clone();
                m.remove("Authorization");
                m.set("Authorization", auth);
                let cseq = req.cseq().map(|c| c.0).unwrap_or(1) + 1;
                m.set("CSeq", format!("{cseq} {}", req.method()));
                m.remove("Via");
                m.push_front("Via", format!("SIP/2.0/{} {};branch=z9hG4bKa{n}", p.transport.as_str(), p.addr));
                self.deliver(m, p);
            }
            Op::Join { which, register, listen } => {
                let p = peer(8, false);
                let n = self.next();
                let (method, uri, user) = if register {
                    ("REGISTER", "sip:127.0.0.1:5060".to_string(), "desk2".to_string())
                } else {
                    let Some(call) = pick(&self.calls, which) else { return };
                    ("INVITE", format!("sip:conf-{call}@127.0.0.1:5060"), format!("conf-{call}"))
                };
                let mut m = Message::request(method, &uri);
                m.push("Via", format!("SIP/2.0/UDP {};branch=z9hG4bKj{n}", p.addr));
                let from_user = if register { "desk2" } else { "desk1" };
                m.push("From", format!("<sip:{from_user}@127.0.0.1>;tag=j{n}"));
                m.push("To", format!("<sip:{user}@127.0.0.1>"));
                m.push("Call-ID", format!("join-{n}"));
                m.push("CSeq", format!("1 {method}"));
                m.push("Max-Forwards", "70");
                m.push("Contact", format!("<sip:{from_user}@{}>", p.addr));
                if register {
                    m.push("Expires", "3600");
                } else {
                    m.push("Content-Type", "application/sdp");
                    m.body = sdp_dir("127.0.0.5", 8000, if listen { "recvonly" } else { "sendrecv" }).into();
                }
                self.deliver(m, p);
            }
            Op::Mutate { which, from, edits } => {
                let pool: Vec<&Message> =
                    self.our_requests.iter().map(|(_, m)| m).chain(self.sent.iter().map(|(_, m)| m)).collect();
                let Some(m) = pick(&pool, which) else { return };
                let mut bytes = m.to_bytes();
                for (at, b) in edits.into_iter().take(8) {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = at as usize % bytes.len();
                    bytes[i] = b;
                }
                self.deliver_bytes(&bytes, peer(from, false));
            }
            Op::Wait { ms } => {
                self.now = self.now + Duration::from_millis(u64::from(ms) * 4);
                self.feed_ports();
                self.e.handle_timeout(self.now);
                self.drain();
            }
            Op::SendFailure { to, tcp } => {
                self.feed_ports();
                self.e.handle_send_failure(peer(to, tcp), self.now);
                self.drain();
            }
            Op::Shed { which, from } => {
                let pool: Vec<Message> =
                    self.our_requests.iter().map(|(_, m)| m).chain(self.sent.iter().map(|(_, m)| m)).cloned().collect();
                let Some(m) = pick(&pool, which) else { return };
                self.e.shed(m, peer(from, false), self.now);
                self.drain();
            }
            Op::Dropped { n } => {
                self.e.note_dropped(u64::from(n), self.now);
                self.drain();
            }
            Op::Acknowledge { which } => {
                let Some(call) = pick(&self.calls, which) else { return };
                let kind = CallEventKind::Acknowledged { by: "desk1".into(), desk: "Lobby desk".into() };
                if let Some(ev) = self.e.annotate(&call, kind, self.now) {
                    self.numbered(&ev);
                }
                self.drain();
            }
        }
    }
}

/// The URI of a message's Contact, as sent.
fn contact(m: &Message) -> Option<String> {
    NameAddr::parse(m.header("Contact")?).ok().map(|n| n.uri)
}

/// The header section is lines ending in CRLF, with no other CR or LF in them (another parser
/// could take one for the end of a line: header injection).
fn assert_clean_lines(bytes: &[u8]) {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a header section") + 2;
    for (i, &b) in bytes[..end].iter().enumerate() {
        let ok = match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && bytes[i - 1] == b'\r',
            _ => true,
        };
        assert!(ok, "a stray CR or LF at byte {i}:\n{}", String::from_utf8_lossy(bytes));
    }
}

fn pick<T: Clone>(v: &[T], which: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[which as usize % v.len()].clone())
}

/// Keep the harness's memory bounded however long the input.
fn bound<T>(v: &mut Vec<T>) {
    if v.len() > 64 {
        v.drain(..v.len() - 64);
    }
}

fuzz_target!(|input: Input| {
    let local = LocalEndpoint {
        host: "127.0.0.1".into(),
        udp: Some("127.0.0.1:5060".parse().unwrap()),
        tcp: Some("127.0.0.1:5060".parse().unwrap()),
        tls: None,
    };
    let now = Now::read();
    let anchor = input.flags & 1 == 1;
    let mut e = Engine::new(lab(input.flags & 2 == 2), local, now);
    let erl = Erl {
        label: "Lab".into(),
        civic: CivicAddress {
            country: Some("US".into()),
            a1: Some("WA".into()),
            rd: Some("Lab".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let table = Arc::new(Table(Arc::new(erl)));
    let wiremap = Some(table.clone() as Arc<dyn Locator>);
    e.set_locators(Locators { wiremap, held: Some(table), user: None, site_maps: None });
    if anchor {
        e.anchor_media();
    }
    let mut run = Run {
        e,
        now,
        anchor,
        n: 0,
        sent_requests: Vec::new(),
        sent: Vec::new(),
        our_requests: Vec::new(),
        dialogs: Vec::new(),
        calls: Vec::new(),
        seqs: HashMap::new(),
    };
    for op in input.ops.into_iter().take(64) {
        run.op(op);
    }
    // And the rest of the calls' lives: every timer that is due within the next hour.
    for _ in 0..40 {
        run.now = run.now + Duration::from_secs(90);
        run.e.handle_timeout(run.now);
        run.drain();
    }
    // The core stops: the refusals counted so far are recorded.
    run.e.close_refusals(run.now);
    run.drain();
});
