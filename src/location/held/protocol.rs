//! The HELD messages (RFC 5985 §5–§7, device identity RFC 6155 and sosdesk's attachment
//! identifiers): reading a `locationRequest` with the same guards as a PIDF-LO, and writing the
//! `locationResponse` (a PIDF-LO by value) and `error` documents.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use roxmltree::Node;

use super::{ns, ErrorCode};
use crate::location::pidf::{self, PidfError};
use crate::location::{format_mac, parse_mac, DeviceAttachment, Mac, PortIdSubtype};

/// Most `<ip>` identifiers read from one request (a device may have IPv4 and several IPv6
/// addresses; each is one wiremap lookup).
pub(super) const MAX_IPS: usize = 8;

/// LLDP chassis and port IDs are 1-255 octets (IEEE 802.1AB §8.5.2.3, §8.5.3.3).
pub(super) const MAX_LLDP_ID: usize = 255;

pub(super) const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// RFC 5985 §6.6: the PIDF-LO goes into the `locationResponse` (the schema's `##other` slot), and
/// no `locationUriSet` precedes it: sosdesk does not serve location by reference.
pub(super) fn location_response(pidf_doc: &str) -> String {
    let presence = match pidf_doc.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(pidf_doc, |(_, after)| after.trim_start()),
        None => pidf_doc,
    };
    let mut out = String::with_capacity(presence.len() + 160);
    out.push_str(XML_DECL);
    out.push_str("<locationResponse xmlns=\"");
    out.push_str(ns::HELD);
    out.push_str("\">\n");
    out.push_str(presence);
    if !presence.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("</locationResponse>\n");
    out
}

/// RFC 5985 §5.3 / §6.3 / §6.4: an `error` with its `code` and one `message` in English.
pub(super) fn error_document(code: ErrorCode, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 200);
    out.push_str(XML_DECL);
    out.push_str("<error xmlns=\"");
    out.push_str(ns::HELD);
    out.push_str("\" code=\"");
    out.push_str(code.as_str());
    out.push_str("\">\n  <message xml:lang=\"en\">");
    // The message is an xs:token and may quote what the requester sent: collapse and escape.
    pidf::escape_into(&mut out, &pidf::collapse_ws(message), false);
    out.push_str("</message>\n</error>\n");
    out
}

/// A HELD error about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

impl Fault {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Fault {
        Fault { code, message: message.into() }
    }

    pub(super) fn xml(message: impl Into<String>) -> Fault {
        Fault::new(ErrorCode::XmlError, message)
    }

    pub(super) fn identifier(message: impl Into<String>) -> Fault {
        Fault::new(ErrorCode::BadIdentifier, message)
    }
}

/// RFC 5985 §6.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseTime {
    EmergencyRouting,
    EmergencyDispatch,
    Millis(u64),
}

/// RFC 5985 §6.2 location types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LiType {
    Civic,
    Geodetic,
    LocationUri,
}

impl LiType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            LiType::Civic => "civic",
            LiType::Geodetic => "geodetic",
            LiType::LocationUri => "locationURI",
        }
    }
}

/// The `locationType` of a request; no types means "any" (§6.2: the default when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Requested {
    pub(super) types: Vec<LiType>,
    /// §6.2.1; always false with "any" ("as if the exact attribute were set to false").
    pub(super) exact: bool,
}

/// What a request's `<device>` elements said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) ips: Vec<IpAddr>,
    pub(super) mac: Option<Mac>,
    pub(super) bssid: Option<Mac>,
    pub(super) chassis_id: Option<String>,
    pub(super) port_id: Option<String>,
    pub(super) port_subtype: Option<PortIdSubtype>,
}

impl Identity {
    pub(super) fn is_empty(&self) -> bool {
        *self == Identity::default()
    }

    /// One wiremap query per IP address (or one without), each with every other identifier.
    pub(super) fn attachments(&self) -> Vec<DeviceAttachment> {
        let base = DeviceAttachment {
            ip: None,
            mac: self.mac,
            bssid: self.bssid,
            chassis_id: self.chassis_id.clone(),
            port_id: self.port_id.clone(),
            port_subtype: self.port_subtype,
        };
        if self.ips.is_empty() {
            return vec![base];
        }
        self.ips.iter().map(|ip| DeviceAttachment { ip: Some(*ip), ..base.clone() }).collect()
    }

    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        for ip in &self.ips {
            parts.push(format!("IP address {ip}"));
        }
        if let Some(m) = &self.mac {
            parts.push(format!("MAC address {}", format_mac(m)));
        }
        if let Some(b) = &self.bssid {
            parts.push(format!("BSSID {}", format_mac(b)));
        }
        if let Some(c) = &self.chassis_id {
            parts.push(format!("switch chassis {}", pidf::quote(c)));
        }
        if let Some(p) = &self.port_id {
            parts.push(format!("port {}", pidf::quote(p)));
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LocationRequest {
    pub(super) response_time: Option<ResponseTime>,
    pub(super) requested: Requested,
    /// `None` without a `<device>` (or with only empty ones): the device is the source address.
    pub(super) identity: Option<Identity>,
}

/// RFC 6155 identifiers sosdesk does not locate by. Ignoring one would be worse than refusing:
/// the answer would be for whatever the remaining identifiers (or none) point at.
pub(super) const RFC6155_UNSUPPORTED: [&str; 13] = [
    "udpport", "tcpport", "sctpport", "dccpport", "nai", "uri", "fqdn", "duid", "msisdn", "imsi", "imei", "min", "mdn",
];

/// Reads a `locationRequest` with the same guards as a caller's PIDF-LO (UTF-8 only, no DTD,
/// nesting depth checked before roxmltree recurses, node count capped).
///
/// RFC 5985 §5.1: "The LIS MUST ignore any part of a location request message that it does not
/// understand, except the document element" — unknown attributes and elements are skipped; the
/// parts it does understand must be valid.
pub(super) fn parse_request(body: &[u8]) -> Result<LocationRequest, Fault> {
    let text = pidf::decode(body).map_err(xml_fault)?;
    if text.trim().is_empty() {
        return Err(Fault::xml(
            "The request has no body; a HELD request is a locationRequest document (RFC 5985 §5.1).",
        ));
    }
    let doc = pidf::parse_xml(text).map_err(xml_fault)?;
    let root = doc.root_element();
    if ns_of(root) != ns::HELD || root.tag_name().name() != "locationRequest" {
        return Err(Fault::new(
            ErrorCode::UnsupportedMessage,
            format!(
                "The document element {} is not supported; this LIS answers locationRequest in namespace {} (RFC 5985 §5.1).",
                element_name(root),
                ns::HELD
            ),
        ));
    }

    let response_time = root.attribute("responseTime").map(parse_response_time).transpose()?;
    let mut requested: Option<Requested> = None;
    let mut identity = Identity::default();
    for child in root.children().filter(Node::is_element) {
        match (ns_of(child), child.tag_name().name()) {
            (ns::HELD, "locationType") => {
                if requested.is_some() {
                    return Err(Fault::xml("The request has more than one locationType (RFC 5985 §7 allows one)."));
                }
                requested = Some(parse_location_type(child)?);
            }
            (ns::HELD_ID, "device") => parse_device(child, &mut identity)?,
            _ => {}
        }
    }
    if identity.port_id.is_some() && identity.chassis_id.is_none() {
        return Err(Fault::identifier("A switch port identifier needs the switch's chassis identifier with it."));
    }
    Ok(LocationRequest {
        response_time,
        requested: requested.unwrap_or_default(),
        identity: (!identity.is_empty()).then_some(identity),
    })
}

pub(super) fn xml_fault(e: PidfError) -> Fault {
    Fault::xml(match e {
        PidfError::NotUtf8 { offset } => {
            format!("The request is not UTF-8 (invalid byte sequence at byte {offset}); HELD messages are UTF-8 (RFC 5985 §5).")
        }
        PidfError::NotWellFormed(msg) => {
            format!("The request is refused by the XML parser (it must be well-formed and have no DTD): {msg}")
        }
        PidfError::TooDeep { limit } => format!("The request nests elements more than {limit} levels deep."),
        other => other.to_string(),
    })
}

/// RFC 5985 §6.1 / §7 `responseTimeType`: a purpose or a non-negative number of milliseconds.
pub(super) fn parse_response_time(value: &str) -> Result<ResponseTime, Fault> {
    let v = value.trim();
    match v {
        "emergencyRouting" => return Ok(ResponseTime::EmergencyRouting),
        "emergencyDispatch" => return Ok(ResponseTime::EmergencyDispatch),
        _ => {}
    }
    let digits = v.strip_prefix('+').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // xs:nonNegativeInteger is unbounded; beyond u64 it is "wait forever" all the same.
        return Ok(ResponseTime::Millis(digits.parse().unwrap_or(u64::MAX)));
    }
    Err(Fault::xml(format!(
        "responseTime \"{}\" is neither emergencyRouting, emergencyDispatch nor a number of milliseconds (RFC 5985 §6.1).",
        pidf::quote(value)
    )))
}

/// RFC 5985 §6.2 / §7 `locationTypeType`: "any", or a list of civic / geodetic / locationURI,
/// with the optional `exact` boolean.
pub(super) fn parse_location_type(node: Node) -> Result<Requested, Fault> {
    let exact = match node.attribute("exact").map(str::trim) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(Fault::xml(format!(
                "locationType exact=\"{}\" is not a boolean (RFC 5985 §6.2.1).",
                pidf::quote(other)
            )))
        }
    };
    let text =
        text_only(node).ok_or_else(|| Fault::xml("locationType holds elements; it is a list of location types."))?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    if tokens == ["any"] {
        // §6.2.1: exact is ignored with "any".
        return Ok(Requested { types: Vec::new(), exact: false });
    }
    if tokens.is_empty() {
        return Err(Fault::xml("locationType is empty; it is \"any\" or a list of civic, geodetic and locationURI."));
    }
    let mut types = Vec::new();
    for t in tokens {
        let ty = match t {
            "civic" => LiType::Civic,
            "geodetic" => LiType::Geodetic,
            "locationURI" => LiType::LocationUri,
            _ => {
                return Err(Fault::xml(format!(
                    "locationType \"{}\" is not \"any\" or a list of civic, geodetic and locationURI (RFC 5985 §6.2).",
                    pidf::quote(t)
                )))
            }
        };
        if !types.contains(&ty) {
            types.push(ty);
        }
    }
    Ok(Requested { types, exact })
}

/// One RFC 6155 `<device>`: its identifiers are merged into `identity` (a request may split them
/// over several; contradicting values are refused rather than guessed between).
pub(super) fn parse_device(device: Node, identity: &mut Identity) -> Result<(), Fault> {
    for el in device.children().filter(Node::is_element) {
        let name = el.tag_name().name();
        let value = text_only(el).ok_or_else(|| {
            Fault::identifier(format!("The identifier {} holds elements; it holds text.", element_name(el)))
        })?;
        // Every identifier type is an xs:token (or derived from one): surrounding whitespace is
        // not part of the value.
        let value = value.trim();
        match (ns_of(el), name) {
            (ns::HELD_ID, "ip") => {
                let ip = parse_ip(el.attribute("v"), value)?;
                if !identity.ips.contains(&ip) {
                    if identity.ips.len() == MAX_IPS {
                        return Err(Fault::identifier(format!("The request names more than {MAX_IPS} IP addresses.")));
                    }
                    identity.ips.push(ip);
                }
            }
            (ns::HELD_ID, "mac") => {
                let mac = parse_mac(value).ok_or_else(|| {
                    Fault::identifier(format!(
                        "mac \"{}\" is not a 48-bit MAC address such as 00-0d-4b-30-72-df (RFC 6155; EUI-64 is not supported).",
                        pidf::quote(value)
                    ))
                })?;
                set_once(&mut identity.mac, mac, "MAC addresses")?;
            }
            (ns::HELD_ID, other) => {
                let known = RFC6155_UNSUPPORTED.contains(&other);
                return Err(Fault::identifier(format!(
                    "{} identifier {} is not supported by this LIS; it locates devices by ip, mac, and sosdesk's bssid, chassis and port.",
                    if known { "The RFC 6155" } else { "The" },
                    element_name(el)
                )));
            }
            (ns::ATTACHMENT, "bssid") => {
                let bssid = parse_mac(value).ok_or_else(|| {
                    Fault::identifier(format!(
                        "bssid \"{}\" is not a 48-bit MAC address such as 00-11-22-33-44-55.",
                        pidf::quote(value)
                    ))
                })?;
                set_once(&mut identity.bssid, bssid, "BSSIDs")?;
            }
            (ns::ATTACHMENT, "chassis") => {
                // The LIS stores a MAC-address chassis ID as 0B-23-CD-16-AA-BB; anything else as
                // collapsed text.
                let chassis = match parse_mac(value) {
                    Some(m) => format_mac(&m),
                    None => lldp_id(value, "chassis")?,
                };
                set_once(&mut identity.chassis_id, chassis, "switch chassis identifiers")?;
            }
            (ns::ATTACHMENT, "port") => {
                let port = lldp_id(value, "port")?;
                let subtype = el.attribute("subtype").map(parse_port_subtype).transpose()?;
                set_once(&mut identity.port_id, port, "switch ports")?;
                if let Some(s) = subtype {
                    set_once(&mut identity.port_subtype, s, "port ID subtypes")?;
                }
            }
            _ => {
                return Err(Fault::identifier(format!(
                    "The identifier {} is not supported by this LIS; it locates devices by ip, mac, and sosdesk's bssid, chassis and port.",
                    element_name(el)
                )))
            }
        }
    }
    Ok(())
}

/// RFC 6155 `<ip v="4">192.0.2.1</ip>`: `v` is the IP version, and the text an address of it.
pub(super) fn parse_ip(version: Option<&str>, value: &str) -> Result<IpAddr, Fault> {
    let bad = |what: &str| Fault::identifier(format!("ip \"{}\" {what} (RFC 6155).", pidf::quote(value)));
    match version.map(str::trim) {
        Some("4") => value.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad("is not an IPv4 address")),
        // An IPv4-mapped IPv6 address is the IPv4 device the wiremap knows.
        Some("6") => {
            value.parse::<Ipv6Addr>().map(|a| IpAddr::V6(a).to_canonical()).map_err(|_| bad("is not an IPv6 address"))
        }
        Some(v) => Err(bad(&format!("has IP version \"{}\"; only 4 and 6 are supported", pidf::quote(v)))),
        None => Err(bad("has no v attribute giving its IP version")),
    }
}

pub(super) fn parse_port_subtype(value: &str) -> Result<PortIdSubtype, Fault> {
    // IEEE 802.1AB port ID subtype numbers, or the Skype for Business names.
    PortIdSubtype::parse_name_or_number(value).ok_or_else(|| {
        Fault::identifier(format!(
            "port subtype \"{}\" is not LocallyAssigned (7), InterfaceAlias (1) or InterfaceName (5).",
            pidf::quote(value)
        ))
    })
}

pub(super) fn lldp_id(value: &str, what: &str) -> Result<String, Fault> {
    let v = pidf::collapse_ws(value);
    if v.is_empty() || v.len() > MAX_LLDP_ID {
        return Err(Fault::identifier(format!("The {what} identifier must be 1 to {MAX_LLDP_ID} characters.")));
    }
    Ok(v)
}

pub(super) fn set_once<T: PartialEq>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), Fault> {
    match slot {
        Some(existing) if *existing != value => {
            Err(Fault::identifier(format!("The request names two different {what} for one device.")))
        }
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The text of an element with simple content, or `None` when it has child elements.
pub(super) fn text_only(node: Node) -> Option<String> {
    let mut out = String::new();
    for child in node.children() {
        if child.is_element() {
            return None;
        }
        if child.is_text() {
            out.push_str(child.text().unwrap_or(""));
        }
    }
    Some(out)
}

pub(super) fn ns_of<'a>(node: Node<'a, '_>) -> &'a str {
    node.tag_name().namespace().unwrap_or("")
}

/// `<name>` or `<name> in namespace urn:…`, bounded for quoting back.
pub(super) fn element_name(node: Node) -> String {
    match ns_of(node) {
        "" => format!("<{}> in no namespace", pidf::quote(node.tag_name().name())),
        n => format!("<{}> in namespace {}", pidf::quote(node.tag_name().name()), pidf::quote(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{device, request, HELD_NS};
    use super::*;

    fn parse(xml: &str) -> Result<LocationRequest, Fault> {
        parse_request(xml.as_bytes())
    }

    fn code(xml: &str) -> ErrorCode {
        parse(xml).expect_err("should be refused").code
    }

    #[test]
    fn empty_request_asks_any_type_by_source_address() {
        let r = parse(&format!(r#"<?xml version="1.0"?><locationRequest xmlns="{HELD_NS}"/>"#)).unwrap();
        assert_eq!(r, LocationRequest { response_time: None, requested: Requested::default(), identity: None });
    }

    #[test]
    fn response_time_and_location_type() {
        let r = parse(&format!(
            r#"<held:locationRequest xmlns:held="{HELD_NS}" responseTime="emergencyRouting">
                 <held:locationType exact="true"> geodetic
                   civic civic locationURI </held:locationType></held:locationRequest>"#
        ))
        .unwrap();
        assert_eq!(r.response_time, Some(ResponseTime::EmergencyRouting));
        assert_eq!(
            r.requested,
            Requested { types: vec![LiType::Geodetic, LiType::Civic, LiType::LocationUri], exact: true }
        );
        let r = parse(&format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime=" +0250 "/>"#)).unwrap();
        assert_eq!(r.response_time, Some(ResponseTime::Millis(250)));
        let huge = format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime="99999999999999999999999"/>"#);
        assert_eq!(parse(&huge).unwrap().response_time, Some(ResponseTime::Millis(u64::MAX)));
        // "any" ignores exact (§6.2.1).
        let r = parse(&request(r#"<locationType exact="1">any</locationType>"#)).unwrap();
        assert_eq!(r.requested, Requested::default());

        for bad in [
            r#"<locationType>any civic</locationType>"#,
            r#"<locationType>   </locationType>"#,
            r#"<locationType>Civic</locationType>"#,
            r#"<locationType exact="yes">civic</locationType>"#,
            r#"<locationType><b/>civic</locationType>"#,
            r#"<locationType>civic</locationType><locationType>civic</locationType>"#,
        ] {
            assert_eq!(code(&request(bad)), ErrorCode::XmlError, "{bad}");
        }
        assert_eq!(code(&format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime="-5"/>"#)), ErrorCode::XmlError);
    }

    #[test]
    fn unknown_parts_are_ignored_but_not_the_document_element() {
        let r = parse(&format!(
            r#"<locationRequest xmlns="{HELD_NS}" xmlns:x="urn:x" x:foo="1" bar="2"><x:ext><x:deep/></x:ext><unknownHeld/>
               <locationType>civic</locationType></locationRequest>"#
        ))
        .unwrap();
        assert_eq!(r.requested, Requested { types: vec![LiType::Civic], exact: false });
        for root in [
            "<locationRequest/>".to_string(),
            format!(r#"<locationResponse xmlns="{HELD_NS}"/>"#),
            format!(r#"<error xmlns="{HELD_NS}" code="x"/>"#),
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"/>"#.to_string(),
        ] {
            assert_eq!(code(&root), ErrorCode::UnsupportedMessage, "{root}");
        }
    }

    #[test]
    fn xml_guards_are_the_pidf_ones() {
        for bad in [
            &b""[..],
            b"   ",
            b"\xff\xfe<",
            b"<locationRequest",
            br#"<!DOCTYPE l [<!ENTITY a "a">]><locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held"/>"#,
        ] {
            assert_eq!(parse_request(bad).unwrap_err().code, ErrorCode::XmlError, "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = request(&format!("{}{}", "<x:a xmlns:x='urn:x'>".repeat(200), "</x:a>".repeat(200)));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.code, ErrorCode::XmlError);
        assert!(e.message.contains(&pidf::MAX_DEPTH.to_string()), "{}", e.message);
        // A BOM is fine.
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(request("").as_bytes());
        assert!(parse_request(&bom).is_ok());
    }

    #[test]
    fn device_identifiers() {
        let r = parse(&device(
            r#"<ip v="4"> 192.0.2.7 </ip><ip v="6">2001:db8::7</ip><ip v="6">::ffff:192.0.2.7</ip>
               <mac>00-0D-4b-30-72-df</mac><att:bssid>00:11:22:33:44:55</att:bssid>
               <att:chassis>0b23.cd16.aabb</att:chassis><att:port subtype="InterfaceName">Gi1/0/7</att:port>"#,
        ))
        .unwrap();
        let id = r.identity.unwrap();
        assert_eq!(id.ips, ["192.0.2.7".parse::<IpAddr>().unwrap(), "2001:db8::7".parse().unwrap()]);
        assert_eq!(id.mac, Some([0x00, 0x0d, 0x4b, 0x30, 0x72, 0xdf]));
        assert_eq!(id.bssid, Some([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(id.chassis_id.as_deref(), Some("0B-23-CD-16-AA-BB"));
        assert_eq!(id.port_id.as_deref(), Some("Gi1/0/7"));
        assert_eq!(id.port_subtype, Some(PortIdSubtype::InterfaceName));
        let atts = id.attachments();
        assert_eq!(atts.len(), 2);
        assert!(atts.iter().all(|a| a.mac == id.mac && a.port_id == id.port_id));

        let r = parse(&device(r#"<att:chassis> switch 1 </att:chassis><att:port subtype="7">12</att:port>"#)).unwrap();
        let id = r.identity.unwrap();
        assert_eq!(
            (id.chassis_id.as_deref(), id.port_subtype),
            (Some("switch 1"), Some(PortIdSubtype::LocallyAssigned))
        );
        assert!(id.ips.is_empty());

        // An empty device is no identity: the source address is used.
        assert_eq!(parse(&device("")).unwrap().identity, None);
        // Several device elements merge; the same value twice is fine.
        let two = request(
            r#"<device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"><mac>00-0d-4b-30-72-df</mac></device>
               <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"><mac>00:0d:4b:30:72:df</mac><ip v="4">10.0.0.1</ip></device>"#,
        );
        assert_eq!(parse(&two).unwrap().identity.unwrap().ips.len(), 1);
    }

    #[test]
    fn bad_identifiers() {
        for bad in [
            r#"<ip>192.0.2.7</ip>"#,
            r#"<ip v="6">192.0.2.7</ip>"#,
            r#"<ip v="4">2001:db8::1</ip>"#,
            r#"<ip v="5">192.0.2.7</ip>"#,
            r#"<ip v="4">192.0.2.300</ip>"#,
            r#"<ip v="6">fe80::1%eth0</ip>"#,
            r#"<mac>00-0d-4b-30-72</mac>"#,
            r#"<mac>00-0d-4b-30-72-df-00-01</mac>"#,
            r#"<mac>zz-0d-4b-30-72-df</mac>"#,
            r#"<mac>00-0d-4b-30-72-df</mac><mac>00-0d-4b-30-72-de</mac>"#,
            r#"<uri>sip:alice@example.com</uri>"#,
            r#"<udpport>5060</udpport>"#,
            r#"<imei>490154203237518</imei>"#,
            r#"<whatever>1</whatever>"#,
            r#"<x:serial xmlns:x="urn:x">1</x:serial>"#,
            r#"<att:bssid>not-a-mac</att:bssid>"#,
            r#"<att:port>Gi1/0/7</att:port>"#,
            r#"<att:chassis>   </att:chassis>"#,
            r#"<att:chassis>a</att:chassis><att:port subtype="MacAddress">1</att:port>"#,
            r#"<att:colour>red</att:colour>"#,
            r#"<mac><b/>00-0d-4b-30-72-df</mac>"#,
        ] {
            assert_eq!(code(&device(bad)), ErrorCode::BadIdentifier, "{bad}");
        }
        let many: String = (1..=9).map(|i| format!(r#"<ip v="4">10.0.0.{i}</ip>"#)).collect();
        assert_eq!(code(&device(&many)), ErrorCode::BadIdentifier);
        let long = format!("<att:chassis>{}</att:chassis>", "c".repeat(256));
        assert_eq!(code(&device(&long)), ErrorCode::BadIdentifier);
    }

    #[test]
    fn error_documents_escape_and_collapse() {
        let doc = error_document(ErrorCode::BadIdentifier, "mac \"<b>&\"\n  is   bad");
        assert_eq!(
            doc,
            format!(
                "{XML_DECL}<error xmlns=\"{HELD_NS}\" code=\"badIdentifier\">\n  <message xml:lang=\"en\">mac &quot;&lt;b&gt;&amp;&quot; is bad</message>\n</error>\n"
            )
        );
        assert!(roxmltree::Document::parse(&doc).is_ok());
    }

    #[test]
    fn location_response_wraps_the_presence_document() {
        let doc = location_response("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence/>\n");
        assert_eq!(
            doc,
            format!("{XML_DECL}<locationResponse xmlns=\"{HELD_NS}\">\n<presence/>\n</locationResponse>\n")
        );
        assert_eq!(
            location_response("<presence/>"),
            format!("{XML_DECL}<locationResponse xmlns=\"{HELD_NS}\">\n<presence/>\n</locationResponse>\n")
        );
    }
}
