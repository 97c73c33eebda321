//! The HELD endpoint (src/location/held/) over real HTTP/1.1: the axum server on 127.0.0.1:0,
//! a small hand-written client on a TcpStream, a fixed-table `Locator` standing in for the
//! wiremap. Requests and responses are checked against the HELD schemas (RFC 5985 §7, RFC 6155
//! §6, sosdesk's attachment extension) and the PIDF-LO inside against the PIDF-LO schemas.
//!
//! Fixtures: tests/fixtures/held (provenance and licences in its SOURCES.md).
//! Needs xmllint (Debian `libxml2-utils`); the validation tests panic without it.

use crate::support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roxmltree::{Document, Node};
use sosdesk::location::held::{self, HeldCache, HeldState};
use sosdesk::location::pidf::parse_pidf_lo;
use sosdesk::location::{CivicAddress, DeviceAttachment, Erl, Locator, Mac, MatchKind, PortIdSubtype};
use support::xmllint::{held_fixtures_dir, validate_held, validate_pidf_lo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const HELD_NS: &str = "urn:ietf:params:xml:ns:geopriv:held";
const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
const ID_NS: &str = "urn:ietf:params:xml:ns:geopriv:held:id";
const ATT_NS: &str = "urn:x-sosdesk:params:xml:ns:held:attachment";

// ---------------------------------------------------------------------------------------------
// A wiremap stand-in
// ---------------------------------------------------------------------------------------------

/// Fixed tables in Skype for Business precedence: access point, MAC, switch port, switch, IP.
/// Remembers every query, so tests can check what the endpoint asked.
#[derive(Default)]
struct Table {
    bssids: HashMap<Mac, Arc<Erl>>,
    macs: HashMap<Mac, Arc<Erl>>,
    ports: HashMap<(String, String), Arc<Erl>>,
    switches: HashMap<String, Arc<Erl>>,
    ips: HashMap<IpAddr, Arc<Erl>>,
    asked: Mutex<Vec<DeviceAttachment>>,
}

impl Locator for Table {
    fn locate(&self, d: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        self.asked.lock().unwrap().push(d.clone());
        let hit = |e: Option<&Arc<Erl>>, k| e.map(|e| (e.clone(), k));
        d.bssid
            .and_then(|b| hit(self.bssids.get(&b), MatchKind::WirelessAccessPoint))
            .or_else(|| d.mac.and_then(|m| hit(self.macs.get(&m), MatchKind::Mac)))
            .or_else(|| match (&d.chassis_id, &d.port_id) {
                (Some(c), Some(p)) => hit(self.ports.get(&(c.clone(), p.clone())), MatchKind::SwitchPort),
                _ => None,
            })
            .or_else(|| d.chassis_id.as_ref().and_then(|c| hit(self.switches.get(c), MatchKind::Switch)))
            .or_else(|| d.ip.and_then(|ip| hit(self.ips.get(&ip), MatchKind::Subnet)))
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn hq(flr: &str, room: Option<&str>, seat: Option<&str>) -> CivicAddress {
    CivicAddress {
        country: s("US"),
        a1: s("WA"),
        a3: s("Redmond"),
        rd: s("Main"),
        sts: s("St"),
        hno: s("1"),
        flr: s(flr),
        room: room.map(str::to_string),
        seat: seat.map(str::to_string),
        pc: s("98052"),
        ..Default::default()
    }
}

fn erl(label: &str, civic: CivicAddress) -> Arc<Erl> {
    Arc::new(Erl { label: label.into(), civic, elins: vec!["4255550100".into()], ..Default::default() })
}

const PHONE_IP: &str = "10.1.0.5";
const PHONE_MAC: Mac = [0x00, 0x0d, 0x4b, 0x30, 0x72, 0xdf];
const AP_BSSID: Mac = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
const CHASSIS: &str = "0B-23-CD-16-AA-BB";

fn civic_by_ip() -> CivicAddress {
    hq("2", Some("210"), None)
}
fn civic_by_mac() -> CivicAddress {
    CivicAddress {
        country: s("GB"),
        a1: s("London"),
        a3: s("London"),
        rd: s("Baker"),
        sts: s("Street"),
        hno: s("221"),
        hns: s("B"),
        pc: s("NW1 6XE"),
        flr: s("1"),
        ..Default::default()
    }
}
fn civic_by_ap() -> CivicAddress {
    CivicAddress { loc: s("North wing"), ..hq("3", None, None) }
}
fn civic_by_port() -> CivicAddress {
    hq("1", Some("101"), Some("Desk 14"))
}
fn civic_by_switch() -> CivicAddress {
    hq("1", None, None)
}
fn civic_of_localhost() -> CivicAddress {
    CivicAddress { nam: s("Lab & <Test> bench"), ..hq("B1", Some("Lab"), None) }
}

fn table() -> Table {
    let mut t = Table::default();
    t.ips.insert(PHONE_IP.parse().unwrap(), erl("HQ 2nd floor", civic_by_ip()));
    t.ips.insert("127.0.0.1".parse().unwrap(), erl("Lab", civic_of_localhost()));
    t.macs.insert(PHONE_MAC, erl("London", civic_by_mac()));
    t.bssids.insert(AP_BSSID, erl("HQ 3rd floor Wi-Fi", civic_by_ap()));
    t.ports.insert((CHASSIS.into(), "Gi1/0/7".into()), erl("HQ 101 desk 14", civic_by_port()));
    t.switches.insert(CHASSIS.into(), erl("HQ 1st floor", civic_by_switch()));
    t
}

// ---------------------------------------------------------------------------------------------
// The server and a small HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

struct Lis {
    addr: SocketAddr,
    cache: HeldCache,
    table: Arc<Table>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Lis {
    let table = Arc::new(table());
    let cache = HeldCache::new(1000);
    let state = HeldState::new(table.clone(), "lis.example.com").unwrap().with_cache(cache.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(held::serve(listener, state, async {
        let _ = stopped.await;
    }));
    Lis { addr, cache, table, stop: Some(stop), task }
}

impl Lis {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("server stops");
        result.unwrap().expect("serve returns Ok");
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: lis.example.com\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One response from the front of `buf` (Content-Length framed, as RFC 5985 §8 asks of a LIS);
/// returns it and the bytes it took.
fn parse_reply(buf: &[u8]) -> (Reply, usize) {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head") + 4;
    let head = std::str::from_utf8(&buf[..head_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .expect("every response has a Content-Length");
    let body = buf[head_end..head_end + len].to_vec();
    (Reply { status, headers, body }, head_end + len)
}

/// Sends raw bytes and reads until the server closes.
async fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let io = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        buf
    };
    tokio::time::timeout(Duration::from_secs(10), io).await.expect("the server answers")
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    let buf = exchange_raw(addr, &raw_request(method, path, &all, body)).await;
    let (reply, used) = parse_reply(&buf);
    assert_eq!(used, buf.len(), "one response only");
    reply
}

const HELD_HEADERS: [(&str, &str); 2] =
    [("Content-Type", "application/held+xml;charset=utf-8"), ("Accept", "application/held+xml")];

async fn post_held(addr: SocketAddr, body: &str) -> Reply {
    send(addr, "POST", "/held", &HELD_HEADERS, body.as_bytes()).await
}

// ---------------------------------------------------------------------------------------------
// Requests and what to check in answers
// ---------------------------------------------------------------------------------------------

fn request(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<locationRequest xmlns=\"{HELD_NS}\">{inner}</locationRequest>\n"
    )
}

fn with_device(ids: &str) -> String {
    request(&format!(r#"<device xmlns="{ID_NS}" xmlns:att="{ATT_NS}">{ids}</device>"#))
}

/// A locationResponse: HELD headers, schema-valid, a PIDF-LO by value and no URI set, the
/// PIDF-LO itself schema-valid, read back without a warning. Returns its civic address.
fn expect_location(reply: &Reply) -> CivicAddress {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/held+xml;charset=utf-8"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let xml = reply.text();
    validate_held(xml).unwrap_or_else(|e| panic!("locationResponse not schema-valid: {e}\n{xml}"));

    let doc = Document::parse(xml).unwrap();
    let root = doc.root_element();
    assert_eq!((root.tag_name().namespace(), root.tag_name().name()), (Some(HELD_NS), "locationResponse"));
    let children: Vec<Node> = root.children().filter(Node::is_element).collect();
    assert_eq!(children.len(), 1, "only the PIDF-LO (no locationUriSet): {xml}");
    let presence = children[0];
    assert_eq!((presence.tag_name().namespace(), presence.tag_name().name()), (Some(PIDF_NS), "presence"));
    // RFC 5985 §6.6: a pseudonymous presentity, no deviceID.
    let entity = presence.attribute("entity").unwrap();
    assert!(entity.starts_with("pres:") && entity.ends_with("@lis.example.com"), "{entity}");
    assert!(!xml.contains("deviceID") && !xml.contains("contact"), "{xml}");

    let pidf = &xml[presence.range()];
    validate_pidf_lo(pidf).unwrap_or_else(|e| panic!("PIDF-LO not schema-valid: {e}\n{pidf}"));
    let snapshot = parse_pidf_lo(pidf.as_bytes()).unwrap();
    assert_eq!(snapshot.method.as_deref(), Some("Wiremap"));
    assert!(snapshot.warnings.is_empty(), "{:?}", snapshot.warnings);
    assert_eq!(snapshot.geo, None);
    snapshot.erl.expect("a civic location").civic
}

/// A HELD error document: status 200 (RFC 5985 §6.3), schema-valid, with this code and an
/// English message. Returns the message.
fn expect_error(reply: &Reply, code: &str) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/held+xml;charset=utf-8"));
    let xml = reply.text();
    validate_held(xml).unwrap_or_else(|e| panic!("error document not schema-valid: {e}\n{xml}"));
    let doc = Document::parse(xml).unwrap();
    let root = doc.root_element();
    assert_eq!((root.tag_name().namespace(), root.tag_name().name()), (Some(HELD_NS), "error"));
    assert_eq!(root.attribute("code"), Some(code), "{xml}");
    let message = root.children().find(|n| n.has_tag_name((HELD_NS, "message"))).expect("a message");
    assert_eq!(message.attribute(("http://www.w3.org/XML/1998/namespace", "lang")), Some("en"));
    message.text().unwrap_or("").to_string()
}

fn expect_plain(reply: &Reply, status: u16) -> &str {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    reply.text()
}

fn dev(ip: Option<&str>, mac: Option<Mac>) -> DeviceAttachment {
    DeviceAttachment { ip: ip.map(|i| i.parse().unwrap()), mac, ..Default::default() }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn by_ip_identity() {
    let lis = start().await;
    let body = with_device(&format!(r#"<ip v="4">{PHONE_IP}</ip>"#));
    validate_held(&body).unwrap();
    let reply = post_held(lis.addr, &body).await;
    assert_eq!(expect_location(&reply), civic_by_ip());
    // The wiremap was asked about the phone only, never about the requester (127.0.0.1).
    assert_eq!(*lis.table.asked.lock().unwrap(), [dev(Some(PHONE_IP), None)]);

    // Each answer has its own unlinked presentity (RFC 5985 §6.6).
    let again = post_held(lis.addr, &body).await;
    let entity = |r: &Reply| {
        let doc = Document::parse(r.text()).unwrap();
        let p = doc.descendants().find(|n| n.has_tag_name((PIDF_NS, "presence"))).unwrap();
        p.attribute("entity").unwrap().to_string()
    };
    assert_ne!(entity(&reply), entity(&again));
    lis.shutdown().await;
}

#[tokio::test]
async fn by_ipv6_and_several_addresses() {
    let lis = start().await;
    // The IPv6 address is unknown, the IPv4-mapped one is the phone: both are tried.
    let body = with_device(r#"<ip v="6">2001:db8::5</ip><ip v="6">::ffff:10.1.0.5</ip>"#);
    validate_held(&body).unwrap();
    assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_by_ip());
    assert_eq!(*lis.table.asked.lock().unwrap(), [dev(Some("2001:db8::5"), None), dev(Some(PHONE_IP), None)]);
    lis.shutdown().await;
}

#[tokio::test]
async fn by_mac() {
    let lis = start().await;
    let body = with_device("<mac>00-0d-4b-30-72-df</mac>");
    validate_held(&body).unwrap();
    assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_by_mac());
    assert_eq!(*lis.table.asked.lock().unwrap(), [dev(None, Some(PHONE_MAC))]);
    lis.shutdown().await;
}

#[tokio::test]
async fn by_attachment_extension() {
    let lis = start().await;

    // Wi-Fi: the access point's BSSID.
    let body = with_device("<att:bssid>00-11-22-33-44-55</att:bssid>");
    validate_held(&body).unwrap();
    assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_by_ap());

    // Wired: LLDP chassis (a MAC, normalised) and port, with its subtype.
    let body = with_device(
        r#"<att:chassis>0b:23:cd:16:aa:bb</att:chassis><att:port subtype="LocallyAssigned">Gi1/0/7</att:port>"#,
    );
    validate_held(&body).unwrap();
    assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_by_port());

    // An unknown port on a known switch falls back to the switch (the Locator's precedence).
    let body = with_device(r#"<att:chassis>0B-23-CD-16-AA-BB</att:chassis><att:port subtype="5">Gi1/0/48</att:port>"#);
    validate_held(&body).unwrap();
    assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_by_switch());

    let asked = lis.table.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        [
            DeviceAttachment { bssid: Some(AP_BSSID), ..Default::default() },
            DeviceAttachment {
                chassis_id: Some(CHASSIS.into()),
                port_id: Some("Gi1/0/7".into()),
                port_subtype: Some(PortIdSubtype::LocallyAssigned),
                ..Default::default()
            },
            DeviceAttachment {
                chassis_id: Some(CHASSIS.into()),
                port_id: Some("Gi1/0/48".into()),
                port_subtype: Some(PortIdSubtype::InterfaceName),
                ..Default::default()
            },
        ]
    );
    lis.shutdown().await;
}

#[tokio::test]
async fn without_identity_the_device_is_the_source_address() {
    let lis = start().await;
    let body = request("");
    validate_held(&body).unwrap();
    let civic = expect_location(&post_held(lis.addr, &body).await);
    // Admin text with markup characters arrives as text.
    assert_eq!(civic, civic_of_localhost());
    assert_eq!(*lis.table.asked.lock().unwrap(), [dev(Some("127.0.0.1"), None)]);
    // An empty <device> is no identity either (and is served at / as well as /held).
    let reply = send(lis.addr, "POST", "/", &HELD_HEADERS, with_device("").as_bytes()).await;
    assert_eq!(expect_location(&reply), civic_of_localhost());
    lis.shutdown().await;
}

#[tokio::test]
async fn unknown_device_gets_location_unknown() {
    let lis = start().await;
    let body = with_device(r#"<ip v="4">192.0.2.99</ip><mac>02-00-00-00-00-01</mac>"#);
    validate_held(&body).unwrap();
    let message = expect_error(&post_held(lis.addr, &body).await, "locationUnknown");
    assert_eq!(
        message,
        "No location is known for the device with IP address 192.0.2.99, MAC address 02-00-00-00-00-01."
    );
    assert!(lis.cache.is_empty());
    lis.shutdown().await;
}

#[tokio::test]
async fn malformed_requests() {
    let lis = start().await;
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"".to_vec(), "xmlError", "no body"),
        (
            b"<locationRequest xmlns=\"urn:ietf:params:xml:ns:geopriv:held\">".to_vec(),
            "xmlError",
            "the root node was opened but never closed",
        ),
        (b"\xff\xfe<\x00l\x00".to_vec(), "xmlError", "not UTF-8"),
        (
            format!(r#"<!DOCTYPE locationRequest [<!ENTITY e "x">]><locationRequest xmlns="{HELD_NS}"/>"#).into_bytes(),
            "xmlError",
            "must be well-formed and have no DTD",
        ),
        (
            request(&format!("{}{}", "<x:a xmlns:x='urn:x'>".repeat(2000), "</x:a>".repeat(2000))).into_bytes(),
            "xmlError",
            "more than 64 levels deep",
        ),
        (request(r#"<locationType>everything</locationType>"#).into_bytes(), "xmlError", "\"everything\""),
        (
            format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime="soon"/>"#).into_bytes(),
            "xmlError",
            "responseTime \"soon\"",
        ),
        (b"<locationRequest/>".to_vec(), "unsupportedMessage", "<locationRequest> in no namespace"),
        (
            format!(r#"<locationResponse xmlns="{HELD_NS}"/>"#).into_bytes(),
            "unsupportedMessage",
            "<locationResponse> in namespace urn:ietf:params:xml:ns:geopriv:held",
        ),
        (with_device(r#"<ip v="4">10.1.0.256</ip>"#).into_bytes(), "badIdentifier", "is not an IPv4 address"),
        (with_device(r#"<ip>10.1.0.5</ip>"#).into_bytes(), "badIdentifier", "has no v attribute giving its IP version"),
        (with_device("<mac>00-0d-4b</mac>").into_bytes(), "badIdentifier", "not a 48-bit MAC"),
        (with_device("<uri>sip:alice@example.com</uri>").into_bytes(), "badIdentifier", "RFC 6155 identifier <uri>"),
        (with_device("<att:port>Gi1/0/7</att:port>").into_bytes(), "badIdentifier", "chassis"),
    ];
    for (body, code, says) in cases {
        let reply = send(lis.addr, "POST", "/held", &HELD_HEADERS, &body).await;
        let message = expect_error(&reply, code);
        assert!(
            message.contains(says),
            "{code} for {:?}: {message}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    assert!(lis.cache.is_empty());
    lis.shutdown().await;
}

#[tokio::test]
async fn http_level_refusals() {
    let lis = start().await;
    let body = request("");
    let b = body.as_bytes();
    // RFC 5985 §8: wrong or missing Content-Type, or an Accept without HELD → 406.
    for ct in ["text/plain", "application/json", "application/pidf+xml"] {
        let r = send(lis.addr, "POST", "/held", &[("Content-Type", ct)], b).await;
        assert!(expect_plain(&r, 406).contains("application/held+xml"), "{ct}");
    }
    expect_plain(&send(lis.addr, "POST", "/held", &[], b).await, 406);
    let r = send(lis.addr, "POST", "/held", &[HELD_HEADERS[0], ("Accept", "application/json")], b).await;
    assert!(expect_plain(&r, 406).contains("Accept"));
    // §8: conditional requests → 412.
    let r = send(lis.addr, "POST", "/held", &[HELD_HEADERS[0], ("If-None-Match", "*")], b).await;
    assert!(expect_plain(&r, 412).contains("if-none-match"));
    // POST only; other paths are not found.
    let r = send(lis.addr, "GET", "/held", &[], b"").await;
    expect_plain(&r, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    expect_plain(&send(lis.addr, "POST", "/other", &HELD_HEADERS, b).await, 404);
    // A body declared over 64 KiB is refused unread (only the head is sent: the server answers
    // and closes without waiting for it).
    let head = "POST /held HTTP/1.1\r\nHost: lis.example.com\r\nContent-Type: application/held+xml\r\nContent-Length: 65537\r\n\r\n";
    let (r, _) = parse_reply(&exchange_raw(lis.addr, head.as_bytes()).await);
    assert_eq!(expect_plain(&r, 413), "A HELD request body is at most 65536 bytes.\n");
    // 64 KiB exactly is read (and found to be no HELD request).
    let padded = request(&format!("<!--{}-->", "x".repeat(65536 - request("<!---->").len())));
    assert_eq!(padded.len(), 65536);
    let r = send(lis.addr, "POST", "/held", &HELD_HEADERS, padded.as_bytes()).await;
    assert_eq!(expect_location(&r), civic_of_localhost());
    // Generic XML types, charset variants and */* are accepted (NG9-1-1 test suites send them).
    for (ct, accept) in [
        ("application/xml", "*/*"),
        ("text/xml; charset=UTF-8", "application/*"),
        ("Application/HELD+XML", "application/held+xml;q=0.5"),
    ] {
        let r = send(lis.addr, "POST", "/held", &[("Content-Type", ct), ("Accept", accept)], b).await;
        assert_eq!(expect_location(&r), civic_of_localhost(), "{ct} / {accept}");
    }
    lis.shutdown().await;
}

#[tokio::test]
async fn location_types() {
    let lis = start().await;
    let ask = |types: &str, exact: &str| request(&format!(r#"<locationType exact="{exact}">{types}</locationType>"#));
    // RFC 5985 §6.2.1: exact="true" for what sosdesk cannot give (no location URIs, no geodetic).
    for types in ["locationURI", "geodetic", "civic geodetic", "civic locationURI"] {
        let body = ask(types, "true");
        validate_held(&body).unwrap();
        let message = expect_error(&post_held(lis.addr, &body).await, "cannotProvideLiType");
        assert!(message.starts_with("This LIS provides civic locations by value only"), "{message}");
    }
    // Exact civic, "any" (exact ignored), and non-exact requests for what it lacks all get civic
    // by value (§6.2: the LIS MAY provide alternative types).
    for (types, exact) in
        [("civic", "true"), ("any", "true"), ("locationURI", "false"), ("geodetic locationURI", "false")]
    {
        let body = ask(types, exact);
        validate_held(&body).unwrap();
        assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_of_localhost(), "{types} {exact}");
    }
    lis.shutdown().await;
}

#[tokio::test]
async fn rfc5985_examples() {
    let lis = start().await;
    let dir = held_fixtures_dir().join("examples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    let mut seen = Vec::new();
    for name in &names {
        let body = std::fs::read_to_string(dir.join(name)).unwrap();
        let reply = post_held(lis.addr, &body).await;
        let outcome = if name.contains("locationRequest") {
            if name.starts_with("sec10.3") {
                // §10.3: exact="true" for geodetic, civic and locationURI: only civic is here.
                expect_error(&reply, "cannotProvideLiType");
                "cannotProvideLiType"
            } else {
                // §10.1, §10.2: no locationType, so "any": the device (127.0.0.1) by value.
                assert_eq!(expect_location(&reply), civic_of_localhost(), "{name}");
                "location"
            }
        } else {
            // Responses and errors are not requests (§5.1).
            expect_error(&reply, "unsupportedMessage");
            "unsupportedMessage"
        };
        seen.push((name.as_str(), outcome));
    }
    assert_eq!(
        seen,
        [
            ("sec10.1-error-locationUnknown.xml", "unsupportedMessage"),
            ("sec10.1-locationRequest-empty.xml", "location"),
            ("sec10.1-locationResponse-pidf-lo.xml", "unsupportedMessage"),
            ("sec10.2-error.xml", "unsupportedMessage"),
            ("sec10.2-locationRequest.xml", "location"),
            ("sec10.2-locationResponse-uriset.xml", "unsupportedMessage"),
            ("sec10.3-locationRequest-multi-type.xml", "cannotProvideLiType"),
            ("sec10.3-locationResponse-uriset-circle-civic.xml", "unsupportedMessage"),
        ]
    );
    lis.shutdown().await;
}

#[tokio::test]
async fn ng911_test_suite_requests() {
    let lis = start().await;
    let dir = held_fixtures_dir().join("third-party/tamu-edu_ng911-dev");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    // Sent as the suite sends them (TD_LIS_001: curl with Content-Type: application/xml).
    let headers = [("Content-Type", "application/xml"), ("Accept", "*/*")];
    // responseTime="emergencyRouting", no identity: the requester's location.
    let reply = send(lis.addr, "POST", "/", &headers, &read("Location_request")).await;
    assert_eq!(expect_location(&reply), civic_of_localhost());
    // A device URI: not an identifier sosdesk locates by; answering for the requester instead
    // would give the wrong device's location.
    for name in ["Location_request_with_device_URI", "Location_request_for_locationURI"] {
        let reply = send(lis.addr, "POST", "/", &headers, &read(name)).await;
        let message = expect_error(&reply, "badIdentifier");
        assert!(message.contains("<uri>"), "{name}: {message}");
    }
    lis.shutdown().await;
}

#[tokio::test]
async fn cache_remembers_the_last_answer_per_device() {
    let lis = start().await;
    let phone_ip = Some(PHONE_IP);
    assert!(lis.cache.last_for(&dev(phone_ip, Some(PHONE_MAC))).is_none());

    // Asked by IP: remembered under the IP.
    expect_location(&post_held(lis.addr, &with_device(&format!(r#"<ip v="4">{PHONE_IP}</ip>"#))).await);
    let (erl, first_at) = lis.cache.last_for(&dev(phone_ip, None)).unwrap();
    assert_eq!(erl.civic, civic_by_ip());
    assert_eq!(erl.label, "HQ 2nd floor");

    // The same phone asks again with its MAC too: the MAC entry wins (wiremap precedence), and
    // both keys now hold that newer answer.
    let body = with_device(&format!(r#"<ip v="4">{PHONE_IP}</ip><mac>00-0d-4b-30-72-df</mac>"#));
    assert_eq!(expect_location(&post_held(lis.addr, &body).await), civic_by_mac());
    let (erl, at) = lis.cache.last_for(&dev(phone_ip, None)).unwrap();
    assert_eq!(erl.civic, civic_by_mac());
    assert!(at >= first_at);
    assert_eq!(lis.cache.last_for(&dev(None, Some(PHONE_MAC))).unwrap().0.civic, civic_by_mac());

    // A failed request changes nothing; a request about another device is not cached under the
    // requester's own address (127.0.0.1) ...
    expect_error(&post_held(lis.addr, &with_device(r#"<ip v="4">192.0.2.1</ip>"#)).await, "locationUnknown");
    expect_location(&post_held(lis.addr, &with_device("<att:bssid>00-11-22-33-44-55</att:bssid>")).await);
    assert!(lis.cache.last_for(&dev(Some("127.0.0.1"), None)).is_none());
    assert!(lis.cache.last_for(&dev(Some("192.0.2.1"), None)).is_none());
    assert_eq!(lis.cache.len(), 2);
    // ... but a request without identity is, under its source address.
    expect_location(&post_held(lis.addr, &request("")).await);
    assert_eq!(lis.cache.last_for(&dev(Some("127.0.0.1"), None)).unwrap().0.civic, civic_of_localhost());
    lis.shutdown().await;
}

#[tokio::test]
async fn persistent_connection_with_pipelining() {
    // RFC 5985 §8: "The LIS SHOULD support persistent connections and request pipelining."
    let lis = start().await;
    let first = raw_request("POST", "/held", &HELD_HEADERS, with_device("<mac>00-0d-4b-30-72-df</mac>").as_bytes());
    let mut headers = HELD_HEADERS.to_vec();
    headers.push(("Connection", "close"));
    let second = raw_request("POST", "/held", &headers, with_device(r#"<ip v="4">192.0.2.1</ip>"#).as_bytes());
    let buf = exchange_raw(lis.addr, &[first, second].concat()).await;
    let (a, used) = parse_reply(&buf);
    let (b, rest) = parse_reply(&buf[used..]);
    assert_eq!(used + rest, buf.len());
    assert_eq!(expect_location(&a), civic_by_mac());
    expect_error(&b, "locationUnknown");
    lis.shutdown().await;
}
