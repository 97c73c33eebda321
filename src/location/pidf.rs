//! PIDF-LO: the location object that travels with an emergency call (RFC 4119, RFC 5139,
//! RFC 5491; conveyed in SIP per RFC 6442).
//!
//! Two directions, two attitudes:
//!
//! * [`build_pidf_lo`] writes what *we* send to an E9-1-1 provider. It is strict: the output
//!   validates against the IETF schemas (RFC 3863, RFC 4479, RFC 4119, RFC 5139), follows the
//!   RFC 5491 conventions, and escapes every piece of admin-entered text.
//! * [`parse_pidf_lo`] reads what a *caller's phone* sends. It is tolerant: real devices send
//!   documents that break the schema in small ways (elements out of order, obsolete namespaces,
//!   `retransmission-allowed` = "yes", ids that are not `xs:ID`, …). An emergency call must not
//!   lose its location over that, so every deviation becomes a human-readable warning in
//!   [`LocationSnapshot::warnings`]; only a document with no usable location at all is an error.
//!
//! Nothing here panics, whatever the input (see the prefix/garbage tests below).

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use roxmltree::{Document, Node, ParsingOptions};
use sha2::{Digest, Sha256};

use super::{CivicAddress, Erl, GeoPoint, LocationSnapshot, LocationSource};

/// MIME type of a PIDF-LO body (RFC 3863 §7, used for location by value in RFC 6442 §4.1).
pub const CONTENT_TYPE: &str = "application/pidf+xml";

/// How long the recipient may keep the location we send (`gbp:retention-expiry`, RFC 4119
/// §2.2.2), counted from the document's timestamp. A day covers the call, callbacks and the
/// PSAP's follow-up; what the PSAP must archive is governed by its own rules, not by this.
pub const RETENTION_HOURS: i64 = 24;

/// XML namespaces used in PIDF-LO documents.
pub mod ns {
    /// RFC 3863 §4.4 (PIDF).
    pub const PIDF: &str = "urn:ietf:params:xml:ns:pidf";
    /// RFC 4479 §5.1.2 (data model: `<device>`, `<person>`, `<deviceID>`, `<timestamp>`).
    pub const DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
    /// RFC 4119 §2.2.5 (`<geopriv>`, `<location-info>`, `<usage-rules>`, `<method>`).
    pub const GEOPRIV10: &str = "urn:ietf:params:xml:ns:pidf:geopriv10";
    /// RFC 4119 §2.2.5 (`<retransmission-allowed>`, `<retention-expiry>`).
    pub const BASIC_POLICY: &str = "urn:ietf:params:xml:ns:pidf:geopriv10:basicPolicy";
    /// RFC 5139 §4 (`<civicAddress>`).
    pub const CIVIC_ADDR: &str = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr";
    /// RFC 6848 §5.5 (civic address extensions: milepost, pole number, …).
    pub const CIVIC_ADDR_EXT: &str = "urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr:ext";
    /// RFC 4119's original civic namespace, obsoleted by RFC 5139 (same element names).
    pub const CIVIC_LOC_OBSOLETE: &str = "urn:ietf:params:xml:ns:pidf:geopriv10:civicLoc";
    /// GML 3.1.1 as profiled by RFC 5491 §5 (`<Point>`, `<Polygon>`, `<pos>`, `<posList>`).
    pub const GML: &str = "http://www.opengis.net/gml";
    /// GML 3.0 as used by RFC 4119 §2.3's (historic) geodetic example.
    pub const GML_3_0_OBSOLETE: &str = "urn:opengis:specification:gml:schema-xsd:feature:v3.0";
    /// OGC 06-142r1 PIDF-LO shapes, RFC 5491 §5.2 (`<Circle>`, `<Ellipse>`, `<ArcBand>`, …).
    pub const PIDFLO_SHAPES: &str = "http://www.opengis.net/pidflo/1.0";
    /// RFC 4119 Appendix A NENA data provider (`<nena><DataProviderID>`), for `<provided-by>`.
    pub const DATA_PROVIDER: &str = "urn:ietf:params:xml:ns:pidf:geopriv10:dataProvider";
}

/// RFC 5491 §5: the two coordinate reference systems a PIDF-LO may use.
const CRS_2D: &str = "urn:ogc:def:crs:EPSG::4326";
const CRS_3D: &str = "urn:ogc:def:crs:EPSG::4979";
/// RFC 5491 §5: lengths in metres.
const UOM_METRE: &str = "urn:ogc:def:uom:EPSG::9001";

/// RFC 5139 §4: the civicAddress schema is an `xs:sequence`, so a valid document must list the
/// elements in exactly this order. PRM and POM are in the schema but have no field in
/// [`CivicAddress`]; a parsed value for them is reported as a warning instead of dropped silently.
const CIVIC_ORDER: [&str; 31] = [
    "country", "A1", "A2", "A3", "A4", "A5", "A6", "PRM", "PRD", "RD", "STS", "POD", "POM", "RDSEC", "RDBR", "RDSUBBR",
    "HNO", "HNS", "LMK", "LOC", "FLR", "NAM", "PC", "BLD", "UNIT", "ROOM", "SEAT", "PLC", "PCN", "POBOX", "ADDCODE",
];

/// The [`CivicAddress`] field behind an RFC 5139 element name (`None` for PRM/POM and unknowns).
fn civic_field<'c>(c: &'c CivicAddress, element: &str) -> Option<&'c Option<String>> {
    Some(match element {
        "country" => &c.country,
        "A1" => &c.a1,
        "A2" => &c.a2,
        "A3" => &c.a3,
        "A4" => &c.a4,
        "A5" => &c.a5,
        "A6" => &c.a6,
        "PRD" => &c.prd,
        "RD" => &c.rd,
        "STS" => &c.sts,
        "POD" => &c.pod,
        "RDSEC" => &c.rdsec,
        "RDBR" => &c.rdbr,
        "RDSUBBR" => &c.rdsubbr,
        "HNO" => &c.hno,
        "HNS" => &c.hns,
        "LMK" => &c.lmk,
        "LOC" => &c.loc,
        "FLR" => &c.flr,
        "NAM" => &c.nam,
        "PC" => &c.pc,
        "BLD" => &c.bld,
        "UNIT" => &c.unit,
        "ROOM" => &c.room,
        "SEAT" => &c.seat,
        "PLC" => &c.plc,
        "PCN" => &c.pcn,
        "POBOX" => &c.pobox,
        "ADDCODE" => &c.addcode,
        _ => return None,
    })
}

/// Mutable twin of [`civic_field`]; the two are kept in step by a unit test.
fn civic_field_mut<'c>(c: &'c mut CivicAddress, element: &str) -> Option<&'c mut Option<String>> {
    Some(match element {
        "country" => &mut c.country,
        "A1" => &mut c.a1,
        "A2" => &mut c.a2,
        "A3" => &mut c.a3,
        "A4" => &mut c.a4,
        "A5" => &mut c.a5,
        "A6" => &mut c.a6,
        "PRD" => &mut c.prd,
        "RD" => &mut c.rd,
        "STS" => &mut c.sts,
        "POD" => &mut c.pod,
        "RDSEC" => &mut c.rdsec,
        "RDBR" => &mut c.rdbr,
        "RDSUBBR" => &mut c.rdsubbr,
        "HNO" => &mut c.hno,
        "HNS" => &mut c.hns,
        "LMK" => &mut c.lmk,
        "LOC" => &mut c.loc,
        "FLR" => &mut c.flr,
        "NAM" => &mut c.nam,
        "PC" => &mut c.pc,
        "BLD" => &mut c.bld,
        "UNIT" => &mut c.unit,
        "ROOM" => &mut c.room,
        "SEAT" => &mut c.seat,
        "PLC" => &mut c.plc,
        "PCN" => &mut c.pcn,
        "POBOX" => &mut c.pobox,
        "ADDCODE" => &mut c.addcode,
        _ => return None,
    })
}

// ------------------------------------------------------------------------------------------
// Building
// ------------------------------------------------------------------------------------------

/// What goes into a PIDF-LO we send.
#[derive(Debug, Clone)]
pub struct PidfLoInput<'a> {
    /// The presentity (RFC 3863 §4.1.1 `entity`, an `xs:anyURI`): normally the caller's
    /// `sip:`/`tel:`/`pres:` URI.
    pub entity: &'a str,
    /// RFC 4479 §3.4 device ID, e.g. `mac:00-0d-4b-30-72-df` or a `urn:uuid:`. With one, the
    /// location is put in a `<dm:device>` (RFC 5491 rule #8 gives devices priority); without
    /// one, in a PIDF `<tuple>`, because the data-model schema makes `<deviceID>` mandatory.
    pub device_id: Option<&'a str>,
    pub erl: &'a Erl,
    /// A geodetic position to send with the civic address. RFC 5491 rules #5/#6: only give one
    /// that describes the same place (e.g. the building's position), as both go into one
    /// `<location-info>`.
    pub geo: Option<GeoPoint>,
    /// RFC 4119 §2.2.3 `<method>` (IANA "Method Tokens": `Manual`, `Wiremap`, `DHCP`, `GPS`…).
    /// Empty means omitted.
    pub method: &'a str,
    /// NENA Company ID of the location data provider, sent as RFC 4119 Appendix A
    /// `<provided-by><nena><DataProviderID>`. That schema limits it to 5 characters; a longer or
    /// empty value is left out (and logged), since `<provided-by>` is optional (§2.2.4).
    pub provided_by: Option<&'a str>,
    /// When the location was determined (`<dm:timestamp>` / `<timestamp>`).
    pub timestamp: DateTime<Utc>,
}

/// Writes a PIDF-LO (RFC 4119 as updated by RFC 5139 and RFC 5491) for one call.
///
/// Layout (RFC 5491 §3, Figure 1; element order as the schemas' sequences require):
///
/// ```text
/// <presence entity>                                 RFC 3863
///   <dm:device id> | <tuple id><status>             RFC 4479 §5.1.2 | RFC 3863 §4.1.2
///     <gp:geopriv>                                  RFC 4119 §2.2
///       <gp:location-info> [shape] [civicAddress]   RFC 5491 §5.2, RFC 5139
///       <gp:usage-rules> retransmission, expiry     RFC 4119 §2.2.2
///       <gp:method> [<gp:provided-by>]              RFC 4119 §2.2.3, §2.2.4
///     <dm:deviceID> <dm:timestamp> | </status><timestamp>
/// ```
///
/// The result validates against the RFC schemas (the `pidf_lo` integration test runs xmllint
/// on it). Admin-entered text is escaped and whitespace-collapsed (RFC 5139 elements are
/// `xs:token`, so a receiver would collapse it anyway; we send what it will read).
pub fn build_pidf_lo(input: &PidfLoInput) -> String {
    let civic = civic_for_sending(input.erl);
    let geo = input.geo.and_then(sendable_geo);
    let provided_by = input.provided_by.and_then(|p| {
        let p = collapse_ws(p);
        if p.is_empty() || p.chars().count() > 5 {
            tracing::warn!(provided_by = %p, "PIDF-LO: provided-by is not a NENA Company ID (1-5 characters); left out");
            None
        } else {
            Some(p)
        }
    });
    let device_id = input.device_id.map(str::trim).filter(|d| !d.is_empty());
    let timestamp = input.timestamp.to_rfc3339_opts(SecondsFormat::Secs, true);
    let expiry = input
        .timestamp
        .checked_add_signed(TimeDelta::hours(RETENTION_HOURS))
        .unwrap_or(input.timestamp)
        .to_rfc3339_opts(SecondsFormat::Secs, true);

    let mut w = XmlWriter::default();
    w.out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut attrs: Vec<(&str, &str)> = vec![
        ("xmlns", ns::PIDF),
        ("xmlns:dm", ns::DATA_MODEL),
        ("xmlns:gp", ns::GEOPRIV10),
        ("xmlns:gbp", ns::BASIC_POLICY),
        ("xmlns:ca", ns::CIVIC_ADDR),
    ];
    if geo.is_some() {
        attrs.push(("xmlns:gml", ns::GML));
        attrs.push(("xmlns:gs", ns::PIDFLO_SHAPES));
    }
    if provided_by.is_some() {
        attrs.push(("xmlns:dp", ns::DATA_PROVIDER));
    }
    attrs.push(("entity", input.entity));
    w.open("presence", &attrs);

    // RFC 4479 §3.5: the occurrence id "ideally persists over time", so derive it from the
    // presentity and device rather than drawing a random one.
    let id = occurrence_id(if device_id.is_some() { 'd' } else { 't' }, input.entity, device_id);
    match device_id {
        Some(_) => w.open("dm:device", &[("id", &id)]),
        None => {
            w.open("tuple", &[("id", &id)]);
            // RFC 3863 §4.1.2: <status> is mandatory in a tuple; RFC 4119 §2.2 puts geopriv in it.
            w.open("status", &[]);
        }
    }

    w.open("gp:geopriv", &[]);
    w.open("gp:location-info", &[]);
    // RFC 5491 §3 rule #7 puts the coarse location first; its §3.2 example (point, then the
    // civic floor) is the model for a geodetic position plus an ERL.
    if let Some(g) = geo {
        write_shape(&mut w, &g);
    }
    if !civic.is_empty() || geo.is_none() {
        w.open("ca:civicAddress", &[]);
        for name in CIVIC_ORDER {
            if let Some(Some(v)) = civic_field(&civic, name) {
                w.leaf(&format!("ca:{name}"), &[], v);
            }
        }
        w.close("ca:civicAddress");
    }
    w.close("gp:location-info");

    // RFC 4119 §2.2.2 / geopriv10.xsd: usage-rules is mandatory and comes after location-info.
    w.open("gp:usage-rules", &[]);
    // RFC 4119 §2.2.2: the Location Recipient (the PSAP) may not pass the location on to third
    // parties. Per RFC 5606 this does not stop SIP intermediaries (the provider's SBC/ESRP) from
    // routing on it; that permission is the `Geolocation-Routing: yes` header (RFC 6442 §4.2),
    // which the INVITE carrying this body must have.
    w.leaf("gbp:retransmission-allowed", &[], "false");
    w.leaf("gbp:retention-expiry", &[], &expiry);
    w.close("gp:usage-rules");
    let method = collapse_ws(input.method);
    if !method.is_empty() {
        w.leaf("gp:method", &[], &method);
    }
    if let Some(p) = &provided_by {
        // geopriv10.xsd: provided-by must hold elements from another namespace, not text.
        w.open("gp:provided-by", &[]);
        w.open("dp:nena", &[]);
        w.leaf("dp:DataProviderID", &[], p);
        w.close("dp:nena");
        w.close("gp:provided-by");
    }
    w.close("gp:geopriv");

    match device_id {
        Some(d) => {
            // data-model.xsd sequence: characteristics, deviceID, note*, timestamp.
            w.leaf("dm:deviceID", &[], d);
            w.leaf("dm:timestamp", &[], &timestamp);
            w.close("dm:device");
        }
        None => {
            w.close("status");
            // pidf.xsd tuple sequence: status, ##other, contact, note*, timestamp.
            w.leaf("timestamp", &[], &timestamp);
            w.close("tuple");
        }
    }
    w.close("presence");
    w.out
}

/// The civic address as sent: trimmed, whitespace collapsed, empty fields dropped, the
/// ERL's company as NAM when NAM is not set, and an unusable country left out.
fn civic_for_sending(erl: &Erl) -> CivicAddress {
    let mut civic = CivicAddress::default();
    for name in CIVIC_ORDER {
        if let (Some(src), Some(dst)) = (civic_field(&erl.civic, name), civic_field_mut(&mut civic, name)) {
            *dst = src.as_deref().map(collapse_ws).filter(|v| !v.is_empty());
        }
    }
    if civic.nam.is_none() {
        civic.nam = erl.company.as_deref().map(collapse_ws).filter(|v| !v.is_empty());
    }
    if let Some(c) = civic.country.take() {
        // RFC 5139 §3.3/§4: country is an ISO 3166 alpha-2 code, pattern [A-Z]{2}.
        let upper = c.to_ascii_uppercase();
        if is_iso_alpha2(&upper) {
            civic.country = Some(upper);
        } else {
            // Sending it would make the whole document schema-invalid, and a strict SBC may then
            // drop the location altogether; config validation should refuse such an ERL.
            tracing::warn!(country = %c, "PIDF-LO: ERL country is not an ISO 3166 alpha-2 code; left out");
        }
    }
    civic
}

/// The geodetic position as sent, or `None` when it cannot be a real place.
fn sendable_geo(g: GeoPoint) -> Option<GeoPoint> {
    if !(g.latitude.is_finite() && g.longitude.is_finite()) || g.latitude.abs() > 90.0 || g.longitude.abs() > 180.0 {
        tracing::warn!(lat = g.latitude, lon = g.longitude, "PIDF-LO: geodetic position out of range; left out");
        return None;
    }
    Some(GeoPoint {
        latitude: g.latitude,
        longitude: g.longitude,
        altitude_m: g.altitude_m.filter(|a| a.is_finite()),
        radius_m: g.radius_m.filter(|r| r.is_finite() && *r > 0.0),
    })
}

/// RFC 5491 §5.2: Point (§5.2.1, 2D or 3D), Circle (§5.2.3), Sphere (§5.2.6, a circle with
/// altitude). Coordinates are "latitude longitude [altitude]" in that order (EPSG axis order).
fn write_shape(w: &mut XmlWriter, g: &GeoPoint) {
    let mut pos = format!("{} {}", g.latitude, g.longitude);
    if let Some(a) = g.altitude_m {
        pos.push_str(&format!(" {a}"));
    }
    let crs = if g.altitude_m.is_some() { CRS_3D } else { CRS_2D };
    match g.radius_m {
        None => {
            w.open("gml:Point", &[("srsName", crs)]);
            w.leaf("gml:pos", &[], &pos);
            w.close("gml:Point");
        }
        Some(r) => {
            let shape = if g.altitude_m.is_some() { "gs:Sphere" } else { "gs:Circle" };
            w.open(shape, &[("srsName", crs)]);
            w.leaf("gml:pos", &[], &pos);
            w.leaf("gs:radius", &[("uom", UOM_METRE)], &r.to_string());
            w.close(shape);
        }
    }
}

/// A stable `xs:ID` (starts with a letter, then hex) for a `<device>` or `<tuple>`.
fn occurrence_id(prefix: char, entity: &str, device_id: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(entity.as_bytes());
    h.update([0u8]);
    h.update(device_id.unwrap_or("").as_bytes());
    let digest = h.finalize();
    let mut id = String::with_capacity(17);
    id.push(prefix);
    id.push_str(&hex::encode(&digest[..8]));
    id
}

/// Minimal indenting XML writer: every piece of text and every attribute value goes through
/// the escaping functions, so nothing an admin or a caller typed can become markup.
#[derive(Default)]
struct XmlWriter {
    out: String,
    depth: usize,
}

impl XmlWriter {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn start_tag(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v, true);
            self.out.push('"');
        }
        self.out.push('>');
    }

    fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start_tag(tag, attrs);
        self.out.push('\n');
        self.depth += 1;
    }

    fn close(&mut self, tag: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }

    fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start_tag(tag, attrs);
        escape_into(&mut self.out, text, false);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }
}

/// XML-escapes `s` (XML 1.0 §2.4 and §3.3.3):
/// * `& < > " '` become entity references, in text and attributes alike;
/// * characters XML 1.0 forbids (C0 controls other than tab/LF/CR, U+FFFE, U+FFFF) become
///   U+FFFD, since no escape can carry them and they would make the document not well-formed;
/// * CR always, and tab/LF inside attributes, become character references so that end-of-line
///   and attribute-value normalisation do not change them.
pub(crate) fn escape_into(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// XML 1.0 §2.2 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// XML Schema `xs:ID` = `NCName` (Namespaces in XML §3, XML 1.0 §2.3 without ':').
fn is_xs_id(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if is_name_start_char(c) => chars.all(is_name_char),
        _ => false,
    }
}

/// XML 1.0 (5th ed.) §2.3 `NameStartChar`, minus ':'.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (5th ed.) §2.3 `NameChar`, minus ':'.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// `xs:token` whitespace collapsing (RFC 5139 §3.6; XML Schema Part 2 §4.3.6): only space, tab, CR and LF
/// count as whitespace, so a no-break space in a name survives.
pub(crate) fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for part in s.split([' ', '\t', '\n', '\r']).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

fn is_iso_alpha2(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

/// Why a received PIDF-LO could not be used at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidfError {
    /// The body is not UTF-8 (the only encoding sosdesk reads; RFC 3863 §4.4 documents are
    /// UTF-8 in practice). Carries the offset of the first bad byte.
    NotUtf8 { offset: usize },
    /// The body is not well-formed XML (or uses a DTD, which is refused: a PIDF-LO has no need
    /// for one, and entity expansion is an attack surface). Carries the parser's message.
    NotWellFormed(String),
    /// The root element is not the one expected (`presence` for a PIDF-LO).
    WrongRoot { found: String, expected: &'static str },
    /// Elements nested deeper than any PIDF-LO needs; refused before parsing, because the XML
    /// parser recurses per level and would overflow the stack.
    TooDeep { limit: usize },
    /// Well-formed, but nothing in it says where the caller is. Carries the reasons found.
    NoLocation(Vec<String>),
}

impl fmt::Display for PidfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidfError::NotUtf8 { offset } => {
                write!(f, "location body is not UTF-8 text (invalid byte sequence at byte {offset})")
            }
            PidfError::NotWellFormed(msg) => write!(f, "location body is not well-formed XML: {msg}"),
            PidfError::WrongRoot { found, expected } => {
                write!(f, "location body is not a {expected} document: its root element is <{found}>")
            }
            PidfError::TooDeep { limit } => {
                write!(f, "location body nests elements more than {limit} levels deep; refused unparsed")
            }
            PidfError::NoLocation(reasons) => {
                write!(f, "PIDF-LO contains no usable location")?;
                if !reasons.is_empty() {
                    write!(f, ": {}", reasons.join("; "))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PidfError {}

/// Cap on XML nodes, so a hostile body cannot make us allocate without bound. A PIDF-LO with
/// a 1,000-vertex polygon has a few thousand nodes.
const NODES_LIMIT: u32 = 100_000;
/// Deepest element nesting accepted (see [`check_depth`]).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most warnings returned for one document (see [`cap_warnings`]).
const MAX_WARNINGS: usize = 32;
/// Longest element value quoted back in a warning.
const QUOTE_MAX: usize = 120;

/// Reads a caller's PIDF-LO (RFC 4119 / RFC 5139 / RFC 5491), tolerating the ways real
/// devices get it wrong. See the module documentation; every tolerated deviation is one
/// sentence in [`LocationSnapshot::warnings`].
///
/// Which location is used when there are several follows RFC 5491 §3 rule #8: the first
/// `<device>` with a location, else the first `<tuple>`, and a `<person>` only as a last resort.
/// The others are named in a warning (with their content), never merged: they may contradict.
pub fn parse_pidf_lo(xml: &[u8]) -> Result<LocationSnapshot, PidfError> {
    let text = decode(xml)?;
    let doc = parse_xml(text)?;
    let root = doc.root_element();
    let mut doc_warnings = Vec::new();

    if root.tag_name().name() != "presence" {
        return Err(PidfError::WrongRoot { found: display_name(root), expected: "PIDF (<presence>)" });
    }
    if ns_of(root) != ns::PIDF {
        doc_warnings.push(format!(
            "The root <presence> is not in the PIDF namespace ({}) but {}; read anyway.",
            ns::PIDF,
            describe_ns(root)
        ));
    }
    check_namespace_uris(root, &mut doc_warnings);
    match root.attribute("entity") {
        None => doc_warnings.push("<presence> has no entity attribute (RFC 3863 requires one).".into()),
        Some(e) if !looks_like_uri(e) => doc_warnings.push(format!("<presence> entity \"{}\" is not a URI.", quote(e))),
        Some(_) => {}
    }

    // RFC 5491 §3 Figure 1: location objects live in <tuple>, <device> and <person>.
    let mut objects: Vec<ObjectResult> = Vec::new();
    for child in root.children().filter(Node::is_element) {
        let kind = match child.tag_name().name() {
            "device" => Kind::Device,
            "tuple" => Kind::Tuple,
            "person" => Kind::Person,
            _ if child.descendants().any(|n| n.tag_name().name() == "geopriv") => Kind::Other,
            _ => continue,
        };
        objects.push(parse_object(child, kind));
    }

    // RFC 5491 §3 rule #8.
    let order = [Kind::Device, Kind::Tuple, Kind::Other, Kind::Person];
    let chosen = order.iter().find_map(|k| objects.iter().position(|o| o.kind == *k && o.found.is_some()));
    let Some(chosen) = chosen else {
        let mut reasons: Vec<String> = objects.iter().flat_map(|o| o.problems.iter().cloned()).collect();
        cap_warnings(&mut reasons);
        if objects.is_empty() {
            reasons.push("no <tuple>, <dm:device> or <dm:person> element carries a <gp:geopriv>".into());
        } else if reasons.is_empty() {
            reasons.push("no <gp:location-info> holds a civic address or a geodetic shape".into());
        }
        return Err(PidfError::NoLocation(reasons));
    };

    let mut warnings = doc_warnings;
    let obj = &objects[chosen];
    warnings.extend(obj.warnings.iter().cloned());
    if obj.kind == Kind::Person {
        warnings.push(format!(
            "The location comes from {}, which RFC 5491 §3 rule #8 uses only as a last resort.",
            obj.label
        ));
    }
    for (i, other) in objects.iter().enumerate() {
        if i == chosen {
            continue;
        }
        if let Some(f) = &other.found {
            warnings.push(format!(
                "Another location in {} was not used (RFC 5491 §3 rule #8 prefers {}): {}.",
                other.label,
                obj.label,
                f.describe()
            ));
        }
    }
    cap_warnings(&mut warnings);
    let found = obj.found.clone().unwrap_or_default();
    Ok(LocationSnapshot {
        source: LocationSource::ClientPidfLo,
        erl: found.civic.map(|civic| Erl { civic, ..Erl::default() }),
        geo: found.geo,
        method: found.method,
        warnings,
    })
}

/// Reads a bare RFC 5139 `<civicAddress>` document (as in RFC 5139 §5 and RFC 6848 §2, or a
/// HELD/LIS record), with the same tolerance and warnings as [`parse_pidf_lo`].
pub fn parse_civic_address(xml: &[u8]) -> Result<(CivicAddress, Vec<String>), PidfError> {
    let text = decode(xml)?;
    let doc = parse_xml(text)?;
    let root = doc.root_element();
    if root.tag_name().name() != "civicAddress" {
        return Err(PidfError::WrongRoot { found: display_name(root), expected: "RFC 5139 <civicAddress>" });
    }
    let mut warnings = Vec::new();
    check_namespace_uris(root, &mut warnings);
    let civic = parse_civic(root, &mut warnings);
    if civic.is_empty() {
        return Err(PidfError::NoLocation(vec!["the civicAddress has no known RFC 5139 element with a value".into()]));
    }
    cap_warnings(&mut warnings);
    Ok((civic, warnings))
}

/// UTF-8 text of an XML body (a leading BOM dropped). Shared with HELD (`held.rs`).
pub(crate) fn decode(xml: &[u8]) -> Result<&str, PidfError> {
    let body = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    std::str::from_utf8(body).map_err(|e| PidfError::NotUtf8 { offset: e.valid_up_to() })
}

/// Parses untrusted XML with the guards every location body gets: [`check_depth`] first, no DTD
/// (entity expansion), at most [`NODES_LIMIT`] nodes. Shared with HELD (`held.rs`), whose
/// requests come from the network just the same.
pub(crate) fn parse_xml(text: &str) -> Result<Document<'_>, PidfError> {
    check_depth(text)?;
    let opts = ParsingOptions { allow_dtd: false, nodes_limit: NODES_LIMIT };
    Document::parse_with_options(text, opts).map_err(|e| PidfError::NotWellFormed(e.to_string()))
}

/// roxmltree's tokenizer recurses once per open element, so deep nesting overflows the
/// thread's stack and aborts the whole process (not a panic: nothing can catch it). Measured
/// with roxmltree 0.20 on a 2 MiB thread stack (Rust's spawned-thread and tokio-worker
/// default): a debug build dies at ~500 levels (a 1.5 KB body), a release build below 5,000.
/// A PIDF-LO is at most ~12 levels deep (presence/device/geopriv/location-info/Prism/base/
/// Polygon/exterior/LinearRing/posList), so refuse anything deeper than [`MAX_DEPTH`] before
/// roxmltree sees it.
///
/// The scan follows XML 1.0 markup: comments, CDATA sections, processing instructions and
/// declarations are skipped, quotes are honoured inside tags (`>` may appear in attribute
/// values; `<` may not appear in text). For a well-formed document it computes the exact depth;
/// for a malformed one roxmltree stops at the first error, before recursing past it.
fn check_depth(text: &str) -> Result<(), PidfError> {
    let b = text.as_bytes();
    let find = |from: usize, pat: &[u8]| -> usize {
        b.get(from..)
            .and_then(|rest| rest.windows(pat.len()).position(|w| w == pat))
            .map_or(b.len(), |p| from + p + pat.len())
    };
    let mut depth = 0usize;
    let mut i = 0usize;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = find(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = find(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = find(i + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(i + 2, b">");
        } else {
            // Start tag: find its end outside quoted attribute values.
            let mut j = i + 1;
            let mut quote: Option<u8> = None;
            while j < b.len() {
                match (quote, b[j]) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, c @ (b'"' | b'\'')) => quote = Some(c),
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j >= b.len() || b[j - 1] != b'/' {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(PidfError::TooDeep { limit: MAX_DEPTH });
                }
            }
            i = j + 1;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Device,
    Tuple,
    Person,
    /// Some other child of <presence> that nevertheless carries a geopriv.
    Other,
}

/// One location found in a geopriv.
#[derive(Debug, Clone, Default)]
struct Found {
    civic: Option<CivicAddress>,
    geo: Option<GeoPoint>,
    method: Option<String>,
}

impl Found {
    fn describe(&self) -> String {
        let snap = LocationSnapshot {
            source: LocationSource::ClientPidfLo,
            erl: self.civic.clone().map(|civic| Erl { civic, ..Erl::default() }),
            geo: self.geo,
            method: None,
            warnings: Vec::new(),
        };
        snap.describe()
    }

    fn is_location(&self) -> bool {
        self.civic.is_some() || self.geo.is_some()
    }
}

/// One `<tuple>`, `<device>` or `<person>`.
struct ObjectResult {
    kind: Kind,
    /// How to name it to a person: `<dm:device id="abc">`.
    label: String,
    found: Option<Found>,
    /// Deviations seen while reading it.
    warnings: Vec<String>,
    /// Why no location could be taken from it.
    problems: Vec<String>,
}

fn parse_object(node: Node, kind: Kind) -> ObjectResult {
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let label = match node.attribute("id") {
        Some(id) => format!("<{} id=\"{}\">", display_name(node), quote(id)),
        None => format!("<{}>", display_name(node)),
    };

    // Namespace of the container: tuple is PIDF (RFC 3863), device/person are data-model (RFC 4479).
    let expected_ns = match kind {
        Kind::Tuple => Some(ns::PIDF),
        Kind::Device | Kind::Person => Some(ns::DATA_MODEL),
        Kind::Other => None,
    };
    if let Some(expected) = expected_ns {
        if ns_of(node) != expected {
            warnings.push(format!(
                "{label} is {} instead of {}; read as a {}.",
                describe_ns(node),
                expected,
                node.tag_name().name()
            ));
        }
    } else {
        warnings.push(format!(
            "{label} is not a <tuple>, <dm:device> or <dm:person> (RFC 5491 §3) but carries a geopriv; read anyway."
        ));
    }

    // RFC 3863 §4.1.2 / RFC 4479 §5: the id is mandatory and an xs:ID.
    match node.attribute("id") {
        None if kind != Kind::Other => {
            warnings.push(format!("{label} has no id attribute (required by RFC 3863/RFC 4479)."))
        }
        Some(id) if !is_xs_id(id) => warnings
            .push(format!("{label}: id \"{}\" is not a valid xs:ID (it must start with a letter or '_').", quote(id))),
        _ => {}
    }

    check_container_layout(node, kind, &label, &mut warnings);

    // Geoprivs anywhere inside (not nested in another geopriv).
    let geoprivs: Vec<Node> = node
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "geopriv")
        .filter(|n| !n.ancestors().skip(1).any(|a| a.tag_name().name() == "geopriv"))
        .collect();
    if geoprivs.is_empty() {
        problems.push(format!("{label} has no <gp:geopriv>"));
    }

    let mut found: Option<Found> = None;
    let mut extra_locations = 0usize;
    for gp in geoprivs {
        if ns_of(gp) != ns::GEOPRIV10 {
            warnings.push(format!(
                "<geopriv> in {label} is {} instead of {}; read anyway.",
                describe_ns(gp),
                ns::GEOPRIV10
            ));
        }
        // Where it should be: RFC 4119 §2.2 puts it in the tuple's <status> (RFC 4479 §5 also
        // allows it directly in the tuple); RFC 4479 puts it directly in <device>/<person>.
        if let Some(parent) = gp.parent_element() {
            let ok = match kind {
                Kind::Tuple => {
                    parent == node || (parent.tag_name().name() == "status" && parent.parent_element() == Some(node))
                }
                Kind::Device | Kind::Person => parent == node,
                Kind::Other => true,
            };
            if !ok {
                warnings.push(format!(
                    "<gp:geopriv> is inside <{}> in {label}; RFC 4479 puts it directly in the {}.",
                    display_name(parent),
                    node.tag_name().name()
                ));
            }
        }
        let mut gw = Vec::new();
        let result = parse_geopriv(gp, &label, &mut gw, &mut problems);
        if found.is_none() {
            warnings.extend(gw);
            found = result;
        } else if result.is_some() {
            extra_locations += 1;
        }
    }
    if extra_locations > 0 {
        warnings.push(format!(
            "{label} has {} more <gp:geopriv> location(s) after the first; only the first is used (RFC 5491 §3 rules #2/#3).",
            extra_locations
        ));
    }
    ObjectResult { kind, label, found, warnings, problems }
}

/// Element order and placement of deviceID/timestamp in a container (pidf.xsd tuple sequence;
/// data-model.xsd device/person sequences).
fn check_container_layout(node: Node, kind: Kind, label: &str, warnings: &mut Vec<String>) {
    let children: Vec<Node> = node.children().filter(Node::is_element).collect();
    let pos = |local: &str| children.iter().position(|c| c.tag_name().name() == local);
    let last = children.len().saturating_sub(1);

    for ts in children.iter().filter(|c| c.tag_name().name() == "timestamp") {
        let expected = if kind == Kind::Tuple { ns::PIDF } else { ns::DATA_MODEL };
        if kind != Kind::Other && ns_of(*ts) != expected {
            warnings.push(format!("<timestamp> in {label} is {} instead of {expected}.", describe_ns(*ts)));
        }
        check_datetime(&text_of(*ts), &format!("<{}> in {label}", display_name(*ts)), warnings);
    }
    if let Some(t) = pos("timestamp") {
        if t != last && kind != Kind::Other {
            warnings.push(format!(
                "<{}> in {label} is not the last child element, where the schema requires it.",
                display_name(children[t])
            ));
        }
    }

    match kind {
        Kind::Device => match pos("deviceID") {
            None => warnings.push(format!("{label} has no <dm:deviceID> (required by RFC 4479 §5).")),
            Some(d) => {
                if let Some(g) = children.iter().rposition(|c| c.tag_name().name() == "geopriv") {
                    if g > d {
                        warnings.push(format!(
                            "<dm:deviceID> in {label} comes before <gp:geopriv>; the schema wants it after."
                        ));
                    }
                }
            }
        },
        Kind::Tuple => {
            if pos("status").is_none() {
                warnings.push(format!("{label} has no <status> (required by RFC 3863 §4.1.2)."));
            }
            if pos("deviceID").is_some() {
                warnings.push(format!("<dm:deviceID> inside {label} is ignored; RFC 4479 puts it in a <dm:device>."));
            }
        }
        Kind::Person | Kind::Other => {}
    }
}

/// One `<gp:geopriv>` (RFC 4119 §2.2). Returns the first location found in it.
fn parse_geopriv(gp: Node, label: &str, warnings: &mut Vec<String>, problems: &mut Vec<String>) -> Option<Found> {
    // geopriv10.xsd: location-info, usage-rules, method?, provided-by?, ##other*.
    const ORDER: [&str; 4] = ["location-info", "usage-rules", "method", "provided-by"];
    let mut last_rank = 0usize;
    let mut order_reported = false;
    let mut location_infos = Vec::new();
    let mut usage_rules = None;
    let mut method = None;

    for child in gp.children().filter(Node::is_element) {
        let local = child.tag_name().name();
        let rank = ORDER.iter().position(|o| *o == local);
        if let Some(rank) = rank {
            if rank < last_rank && !order_reported {
                warnings.push(format!(
                    "In {label}, <gp:{local}> comes after <gp:{}>; RFC 4119 §2.2.5 orders location-info, usage-rules, method, provided-by.",
                    ORDER[last_rank]
                ));
                order_reported = true;
            }
            last_rank = last_rank.max(rank);
            if ns_of(child) != ns::GEOPRIV10 {
                warnings.push(format!(
                    "<{local}> in {label} is {} instead of {}; read anyway.",
                    describe_ns(child),
                    ns::GEOPRIV10
                ));
            }
        }
        match local {
            "location-info" => location_infos.push(child),
            "usage-rules" if usage_rules.is_none() => {
                usage_rules = Some(child);
            }
            "method" if method.is_none() => {
                let m = collapse_ws(&text_of(child));
                if !m.is_empty() {
                    method = Some(m);
                }
            }
            "provided-by" => {}
            _ if ns_of(child) == ns::GEOPRIV10 => warnings.push(format!(
                "<gp:{local}> is not a child of <gp:geopriv> in RFC 4119 (ignored{}).",
                if local == "note-well" { "; it belongs in <gp:usage-rules>" } else { "" }
            )),
            _ => {} // ##other extensions are allowed (geopriv10.xsd).
        }
    }

    match usage_rules {
        None => warnings.push(format!("{label} has no <gp:usage-rules> (required by the RFC 4119 §2.2.5 schema).")),
        Some(ur) => check_usage_rules(ur, label, warnings),
    }

    if location_infos.is_empty() {
        problems.push(format!("the <gp:geopriv> in {label} has no <gp:location-info>"));
        return None;
    }
    let mut result: Option<Found> = None;
    let mut ignored = 0usize;
    for li in location_infos {
        let mut lw = Vec::new();
        let (civic, geo) = parse_location_info(li, label, &mut lw, problems);
        let f = Found { civic, geo, method: method.clone() };
        if result.is_none() {
            warnings.extend(lw);
            if f.is_location() {
                result = Some(f);
            } else {
                problems.push(format!("the <gp:location-info> in {label} holds no usable civic address or shape"));
            }
        } else if f.is_location() {
            ignored += 1;
        }
    }
    if ignored > 0 {
        warnings.push(format!(
            "The <gp:geopriv> in {label} has {ignored} more <gp:location-info> element(s); RFC 4119 allows one, only the first is used."
        ));
    }
    result
}

/// RFC 4119 §2.2.2 usage rules. They do not change what we do with the location (we forward it
/// to the emergency service only), so problems here are warnings only.
fn check_usage_rules(ur: Node, label: &str, warnings: &mut Vec<String>) {
    let mut misplaced: Vec<String> = Vec::new();
    for rule in ur.children().filter(Node::is_element) {
        let local = rule.tag_name().name();
        let known = matches!(local, "retransmission-allowed" | "retention-expiry" | "external-ruleset" | "note-well");
        if known && ns_of(rule) != ns::BASIC_POLICY {
            misplaced.push(format!("<{}>", display_name(rule)));
        }
        match local {
            "retransmission-allowed" => {
                let v = text_of(rule);
                let v = v.trim();
                match v {
                    "true" | "false" | "1" | "0" => {}
                    _ => match v.to_ascii_lowercase().as_str() {
                        "true" | "yes" => warnings.push(format!(
                            "<retransmission-allowed> in {label} is \"{}\", not an xs:boolean; read as true.",
                            quote(v)
                        )),
                        "false" | "no" => warnings.push(format!(
                            "<retransmission-allowed> in {label} is \"{}\", not an xs:boolean; read as false.",
                            quote(v)
                        )),
                        _ => warnings.push(format!(
                            "<retransmission-allowed> in {label} is \"{}\", not an xs:boolean; ignored.",
                            quote(v)
                        )),
                    },
                }
            }
            "retention-expiry" => check_datetime(&text_of(rule), &format!("<retention-expiry> in {label}"), warnings),
            _ if known => {}
            _ if ns_of(rule) == ns::BASIC_POLICY || ns_of(rule) == ns::PIDF || ns_of(rule).is_empty() => {
                warnings.push(format!("Unknown usage rule <{}> in {label} ignored.", display_name(rule)))
            }
            _ => {} // ##other extensions (e.g. common-policy rulesets) are allowed.
        }
    }
    if !misplaced.is_empty() {
        // RFC 4119 §2.3's own examples put them in the geopriv10 namespace; its schema does not.
        warnings.push(format!(
            "{} in {label} should be in the basicPolicy namespace {} (RFC 4119 §2.2.5); read anyway.",
            misplaced.join(", "),
            ns::BASIC_POLICY
        ));
    }
}

/// `xs:dateTime` check for timestamps and expiries: they are informative for us, so a bad one
/// is only reported.
fn check_datetime(value: &str, what: &str, warnings: &mut Vec<String>) {
    let v = value.trim();
    if v.is_empty() {
        warnings.push(format!("{what} is empty."));
    } else if DateTime::parse_from_rfc3339(v).is_err() {
        if chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
            warnings.push(format!("{what} \"{}\" has no time zone, so the time is ambiguous.", quote(v)));
        } else {
            warnings.push(format!("{what} \"{}\" is not an xs:dateTime.", quote(v)));
        }
    }
}

/// One `<gp:location-info>`: the first civic address and the first geodetic shape in it
/// (RFC 5491 §3 rule #6 allows one of each as a compound location, e.g. a point plus a floor).
fn parse_location_info(
    li: Node,
    label: &str,
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> (Option<CivicAddress>, Option<GeoPoint>) {
    let mut civic: Option<CivicAddress> = None;
    let mut geo: Option<GeoPoint> = None;

    // `<gml:location>` is a wrapper used by RFC 4119 §2.3 and the RFC 6442 §5 examples.
    let mut items: Vec<Node> = Vec::new();
    for child in li.children().filter(Node::is_element) {
        let n = ns_of(child);
        if child.tag_name().name() == "location" && (n == ns::GML || n == ns::GML_3_0_OBSOLETE) {
            items.extend(child.children().filter(Node::is_element));
        } else {
            items.push(child);
        }
    }

    for item in items {
        let local = item.tag_name().name();
        match local {
            "civicAddress" => {
                let n = ns_of(item);
                if n == ns::CIVIC_LOC_OBSOLETE {
                    warnings.push(format!(
                        "The civic address in {label} uses RFC 4119's obsolete civicLoc namespace; read as RFC 5139."
                    ));
                } else if n != ns::CIVIC_ADDR {
                    warnings.push(format!(
                        "<civicAddress> in {label} is {} instead of {}; read anyway.",
                        describe_ns(item),
                        ns::CIVIC_ADDR
                    ));
                }
                if civic.is_some() {
                    warnings.push(format!("A second <civicAddress> in {label} was ignored."));
                    continue;
                }
                let c = parse_civic(item, warnings);
                if c.is_empty() {
                    problems.push(format!("the <civicAddress> in {label} is empty"));
                } else {
                    civic = Some(c);
                }
            }
            "Point" | "Polygon" | "Circle" | "Ellipse" | "ArcBand" | "Sphere" | "Ellipsoid" | "Prism" => {
                let expected = if matches!(local, "Point" | "Polygon") { ns::GML } else { ns::PIDFLO_SHAPES };
                let n = ns_of(item);
                if n == ns::GML_3_0_OBSOLETE {
                    warnings.push(format!(
                        "The <gml:{local}> in {label} uses GML 3.0 (RFC 4119 §2.3, historic); RFC 5491 requires GML 3.1.1."
                    ));
                } else if n != expected {
                    warnings.push(format!(
                        "<{local}> in {label} is {} instead of {expected}; read anyway.",
                        describe_ns(item)
                    ));
                }
                if geo.is_some() {
                    warnings
                        .push(format!("A second geodetic shape (<{}>) in {label} was ignored.", display_name(item)));
                    continue;
                }
                match parse_shape(item, local, warnings) {
                    Ok(g) => geo = Some(g),
                    Err(why) => {
                        let w = format!("the <{}> in {label} was not used: {why}", display_name(item));
                        warnings.push(format!("{}{}.", w[..1].to_uppercase(), &w[1..]));
                        problems.push(w);
                    }
                }
            }
            _ => warnings.push(format!(
                "<{}> in the location of {label} is not understood and was ignored.",
                display_name(item)
            )),
        }
    }
    (civic, geo)
}

/// RFC 5139 civic address (also RFC 4119's obsolete civicLoc, which uses the same names).
fn parse_civic(node: Node, warnings: &mut Vec<String>) -> CivicAddress {
    let mut civic = CivicAddress::default();
    let civic_ns = ns_of(node);
    let mut last_rank = 0usize;
    let mut order_reported = false;

    for el in node.children().filter(Node::is_element) {
        let local = el.tag_name().name();
        let value = collapse_ws(&text_of(el));
        if ns_of(el) != civic_ns {
            // RFC 5139 §4 allows ##other extensions; RFC 6848 defines some (milepost, pole…).
            // We cannot store them, but the call taker can read them.
            let which = if ns_of(el) == ns::CIVIC_ADDR_EXT { "RFC 6848 extension" } else { "extension" };
            warnings.push(format!(
                "Civic {which} <{}> = \"{}\" is not stored; shown here only.",
                display_name(el),
                quote(&value)
            ));
            continue;
        }
        // Exact RFC 5139 name, or the same name in another case.
        let (name, case_differs) = match CIVIC_ORDER.iter().find(|n| **n == local) {
            Some(n) => (Some(*n), false),
            None => (CIVIC_ORDER.iter().find(|n| n.eq_ignore_ascii_case(local)).copied(), true),
        };
        let Some(name) = name else {
            warnings.push(format!(
                "Unknown civic element <{local}> = \"{}\" is not stored; shown here only.",
                quote(&value)
            ));
            continue;
        };
        if case_differs {
            warnings.push(format!("Civic element <{local}> should be spelt <{name}> (RFC 5139 §4); read anyway."));
        }
        let rank = CIVIC_ORDER.iter().position(|n| *n == name).unwrap_or(0);
        if rank < last_rank && !order_reported {
            warnings.push(format!(
                "Civic elements are out of RFC 5139 §4 schema order (<{name}> after <{}>); read anyway.",
                CIVIC_ORDER[last_rank]
            ));
            order_reported = true;
        }
        last_rank = last_rank.max(rank);
        if value.is_empty() {
            continue;
        }
        let Some(slot) = civic_field_mut(&mut civic, name) else {
            warnings.push(format!("Civic element <{name}> = \"{}\" is not stored; shown here only.", quote(&value)));
            continue;
        };
        if slot.is_some() {
            warnings.push(format!(
                "Civic element <{name}> appears twice; the second value \"{}\" was ignored.",
                quote(&value)
            ));
            continue;
        }
        if name == "country" && !is_iso_alpha2(&value) {
            warnings.push(format!("Country \"{}\" is not an ISO 3166 alpha-2 code (RFC 5139 §3.3).", quote(&value)));
        }
        *slot = Some(value);
    }
    civic
}

/// RFC 5491 §5: which coordinate system a shape uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crs {
    TwoD,
    ThreeD,
}

fn parse_shape(shape: Node, local: &str, warnings: &mut Vec<String>) -> Result<GeoPoint, String> {
    let shown = display_name(shape);
    let shown = shown.as_str();
    let crs = shape_crs(shape, shown, warnings)?;
    match local {
        "Point" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: None })
        }
        // RFC 5491 §5.2.3 / §5.2.6: exact in our model (centre plus radius).
        "Circle" | "Sphere" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            let radius = length(shape, "radius", shown, warnings);
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: radius })
        }
        // RFC 5491 §5.2.4 / §5.2.7: reduced to the circle that contains the ellipse.
        "Ellipse" | "Ellipsoid" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            let radius = length(shape, "semiMajorAxis", shown, warnings);
            warnings.push(format!(
                "The <{shown}> was reduced to its centre with its semi-major axis as radius (a circle that contains it)."
            ));
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: radius })
        }
        // RFC 5491 §5.2.5: the centre of an arc band is the antenna, not the caller; the circle
        // of the outer radius around it contains the band.
        "ArcBand" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            let radius = length(shape, "outerRadius", shown, warnings);
            warnings.push(
                format!("The <{shown}> was reduced to the circle of its outer radius around its centre (the antenna site, not the caller)."),
            );
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: radius })
        }
        // RFC 5491 §5.2.2 / §5.2.8: the vertex centroid and the distance to the farthest vertex.
        "Polygon" | "Prism" => {
            let vertices = polygon_vertices(shape, crs)?;
            let g = covering_circle(&vertices);
            if !valid_lat_lon(g.latitude, g.longitude) {
                return Err("its vertices are not valid WGS 84 coordinates".into());
            }
            warnings.push(format!(
                "The <{shown}> ({} vertices) was reduced to its centre with the distance to its farthest vertex as radius.",
                vertices.len()
            ));
            Ok(g)
        }
        _ => Err("unknown shape".into()),
    }
}

/// The shape's CRS from `srsName` (RFC 5491 §5 allows only EPSG 4326 and 4979).
fn shape_crs(shape: Node, shown: &str, warnings: &mut Vec<String>) -> Result<Option<Crs>, String> {
    let Some(srs) = shape.attribute("srsName") else {
        warnings.push(format!("The <{shown}> has no srsName; WGS 84 (EPSG 4326/4979) assumed."));
        return Ok(None);
    };
    let s = srs.trim();
    if s == CRS_2D {
        return Ok(Some(Crs::TwoD));
    }
    if s == CRS_3D {
        return Ok(Some(Crs::ThreeD));
    }
    // Common older spellings: "epsg:4326", "EPSG:4326", ".../epsg.xml#4326", "urn:ogc:def:crs:EPSG:6.6:4326".
    let code: String =
        s.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect();
    let crs = match (s.to_ascii_lowercase().contains("epsg"), code.as_str()) {
        (true, "4326") => Crs::TwoD,
        (true, "4979") => Crs::ThreeD,
        _ => return Err(format!("its coordinate system \"{}\" is not WGS 84 (RFC 5491 §5)", quote(s))),
    };
    warnings.push(format!(
        "The <{shown}> names its coordinate system \"{}\" instead of the RFC 5491 §5 URN; read as WGS 84.",
        quote(s)
    ));
    Ok(Some(crs))
}

/// Centre position of a Point/Circle/… : `gml:pos`, or GML 2/3.0 `gml:coordinates`.
fn centre(
    shape: Node,
    shown: &str,
    crs: Option<Crs>,
    warnings: &mut Vec<String>,
) -> Result<(f64, f64, Option<f64>), String> {
    let pos: Vec<Node> = shape.children().filter(|c| c.tag_name().name() == "pos").collect();
    let (lat, lon, alt) = if let Some(p) = pos.first() {
        if pos.len() > 1 {
            warnings.push(format!("The <{shown}> has {} <gml:pos>; the first is used.", pos.len()));
        }
        let raw = text_of(*p);
        let nums = parse_numbers(&raw)
            .ok_or_else(|| format!("<gml:pos> \"{}\" is not a list of numbers", quote(raw.trim())))?;
        match (nums.len(), crs) {
            (2, Some(Crs::ThreeD)) => {
                warnings.push(format!("The <{shown}> uses a 3D coordinate system but gives no altitude."));
                (nums[0], nums[1], None)
            }
            (2, _) => (nums[0], nums[1], None),
            (3, Some(Crs::TwoD)) => {
                warnings.push(format!(
                    "The <{shown}> gives 3 coordinates in the 2D system EPSG 4326; the third was read as altitude in metres."
                ));
                (nums[0], nums[1], Some(nums[2]))
            }
            (3, _) => (nums[0], nums[1], Some(nums[2])),
            (n, _) => return Err(format!("<gml:pos> has {n} numbers, expected 2 or 3")),
        }
    } else if let Some(c) = shape.children().find(|c| c.tag_name().name() == "coordinates") {
        let raw = text_of(c);
        let (lat, lon) = parse_gml_coordinates(&raw)
            .ok_or_else(|| format!("<gml:coordinates> \"{}\" could not be read", quote(raw.trim())))?;
        warnings.push(format!(
            "The <{shown}> uses <gml:coordinates> (as in RFC 4119 §2.3), which RFC 5491 §4 deprecates for <gml:pos>. Read as {lat:.6}, {lon:.6}."
        ));
        (lat, lon, None)
    } else {
        return Err("it has no <gml:pos>".into());
    };
    if !valid_lat_lon(lat, lon) {
        return Err(format!("{lat}, {lon} is not a valid latitude, longitude"));
    }
    Ok((lat, lon, alt))
}

/// A length child (`gs:radius`, `gs:semiMajorAxis`, …) in metres. Missing or unusable → `None`
/// with a warning: the centre is still worth sending someone to.
fn length(shape: Node, child: &str, shown: &str, warnings: &mut Vec<String>) -> Option<f64> {
    let found: Vec<Node> = shape.children().filter(|c| c.tag_name().name() == child).collect();
    let Some(el) = found.first() else {
        warnings.push(format!("The <{shown}> has no <gs:{child}>; only its centre is used."));
        return None;
    };
    if found.len() > 1 {
        warnings.push(format!("The <{shown}> has {} <gs:{child}> elements; the first is used.", found.len()));
    }
    let raw = text_of(*el);
    let value = match parse_numbers(&raw).as_deref() {
        Some([v]) if *v >= 0.0 => *v,
        _ => {
            warnings.push(format!("<gs:{child}> \"{}\" is not a length; only the centre is used.", quote(raw.trim())));
            return None;
        }
    };
    // RFC 5491 §5: lengths use urn:ogc:def:uom:EPSG::9001 (metre).
    let factor = match el.attribute("uom").map(str::trim) {
        Some(UOM_METRE) => 1.0,
        None => {
            warnings.push(format!("<gs:{child}> has no uom; metres assumed."));
            1.0
        }
        Some(u) => match u.rsplit(':').next() {
            Some("9036") => 1000.0,          // kilometre
            Some("9002") => 0.3048,          // international foot
            Some("9003") => 1200.0 / 3937.0, // US survey foot
            Some("9093") => 1609.344,        // statute mile
            Some("9030") => 1852.0,          // nautical mile
            _ => {
                warnings.push(format!("<gs:{child}> has unknown unit \"{}\"; only the centre is used.", quote(u)));
                return None;
            }
        },
    };
    if factor != 1.0 {
        warnings.push(format!("<gs:{child}> was converted to metres from {}.", el.attribute("uom").unwrap_or("")));
    }
    Some(value * factor)
}

/// Exterior ring of a gml:Polygon (or a gs:Prism's base polygon), as (lat, lon, alt).
fn polygon_vertices(shape: Node, crs: Option<Crs>) -> Result<Vec<(f64, f64, Option<f64>)>, String> {
    let ring = shape
        .descendants()
        .find(|n| n.tag_name().name() == "exterior")
        .and_then(|e| e.descendants().find(|n| n.tag_name().name() == "LinearRing"))
        .ok_or_else(|| "it has no exterior <gml:LinearRing>".to_string())?;
    let mut vertices = Vec::new();
    let pos_list = ring.children().find(|c| c.tag_name().name() == "posList");
    if let Some(pl) = pos_list {
        let raw = text_of(pl);
        let nums = parse_numbers(&raw).ok_or_else(|| "its <gml:posList> is not a list of numbers".to_string())?;
        let dim = match pl.attribute("srsDimension").map(str::trim) {
            Some("3") => 3,
            Some("2") => 2,
            _ if crs == Some(Crs::ThreeD) => 3,
            _ => 2,
        };
        if nums.len() % dim != 0 {
            return Err(format!("its <gml:posList> has {} numbers, not a multiple of {dim}", nums.len()));
        }
        for c in nums.chunks(dim) {
            vertices.push((c[0], c[1], c.get(2).copied()));
        }
    } else {
        for p in ring.children().filter(|c| c.tag_name().name() == "pos") {
            let raw = text_of(p);
            match parse_numbers(&raw).as_deref() {
                Some([a, b]) => vertices.push((*a, *b, None)),
                Some([a, b, c]) => vertices.push((*a, *b, Some(*c))),
                _ => return Err(format!("its <gml:pos> \"{}\" is not a coordinate", quote(raw.trim()))),
            }
        }
    }
    // A ring repeats its first vertex at the end (RFC 5491 §5.2.2).
    if vertices.len() > 1 && vertices.first() == vertices.last() {
        vertices.pop();
    }
    if vertices.len() < 3 {
        return Err(format!("its ring has {} distinct vertices, fewer than 3", vertices.len()));
    }
    if vertices.iter().any(|(la, lo, _)| !valid_lat_lon(*la, *lo)) {
        return Err("a vertex is not a valid latitude, longitude".into());
    }
    Ok(vertices)
}

/// Centroid of the vertices and the (rounded-up) distance to the farthest one. Uses an
/// equirectangular approximation, accurate to well under 1 % at cell/building scale.
fn covering_circle(vertices: &[(f64, f64, Option<f64>)]) -> GeoPoint {
    let n = vertices.len() as f64;
    let lat = vertices.iter().map(|v| v.0).sum::<f64>() / n;
    let lon = vertices.iter().map(|v| v.1).sum::<f64>() / n;
    let alts: Vec<f64> = vertices.iter().filter_map(|v| v.2).collect();
    let alt = (!alts.is_empty()).then(|| alts.iter().sum::<f64>() / alts.len() as f64);
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let k = lat.to_radians().cos();
    let radius = vertices
        .iter()
        .map(|(la, lo, _)| {
            let dy = (la - lat).to_radians() * EARTH_RADIUS_M;
            let dx = (lo - lon).to_radians() * EARTH_RADIUS_M * k;
            (dx * dx + dy * dy).sqrt()
        })
        .fold(0.0_f64, f64::max)
        .ceil();
    GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: Some(radius) }
}

/// `gml:coordinates` as in RFC 4119 §2.3: "37:46:30N 122:25:10W" (degrees:minutes:seconds with
/// a hemisphere), or plain decimals "lat,lon" / "lat lon".
fn parse_gml_coordinates(s: &str) -> Option<(f64, f64)> {
    let tokens: Vec<&str> = s.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|t| !t.is_empty()).collect();
    if tokens.len() < 2 {
        return None;
    }
    let (mut lat, mut lon) = (None, None);
    for (i, t) in tokens.iter().take(2).enumerate() {
        let (body, hemi) = match t.chars().last() {
            Some(h @ ('N' | 'S' | 'E' | 'W' | 'n' | 's' | 'e' | 'w')) => {
                (&t[..t.len() - 1], Some(h.to_ascii_uppercase()))
            }
            _ => (*t, None),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let value = if parts.len() == 1 && hemi.is_none() {
            // Plain signed decimal degrees.
            body.parse::<f64>().ok().filter(|v| v.is_finite())?
        } else {
            // Degrees[:minutes[:seconds]], unsigned; the hemisphere letter gives the sign.
            if parts.len() > 3 {
                return None;
            }
            let mut value = 0.0;
            let mut scale = 1.0;
            for p in parts {
                let v = p.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)?;
                value += v / scale;
                scale *= 60.0;
            }
            value
        };
        match hemi {
            Some('N') => lat = Some(value),
            Some('S') => lat = Some(-value),
            Some('E') => lon = Some(value),
            Some('W') => lon = Some(-value),
            _ if i == 0 => lat = Some(value),
            _ => lon = Some(value),
        }
    }
    Some((lat?, lon?))
}

fn parse_numbers(s: &str) -> Option<Vec<f64>> {
    let v: Option<Vec<f64>> =
        s.split_ascii_whitespace().map(|t| t.parse::<f64>().ok().filter(|x| x.is_finite())).collect();
    v.filter(|v| !v.is_empty())
}

fn valid_lat_lon(lat: f64, lon: f64) -> bool {
    lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
}

/// All text directly inside an element (several nodes when comments split it, as in the
/// RFC 5491 §5.2.8 posList).
fn text_of(node: Node) -> String {
    node.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect()
}

/// Namespace of an element, trimmed: RFC 4119's own example declares " urn:…civicLoc" with a
/// leading space.
fn ns_of<'a>(node: Node<'a, '_>) -> &'a str {
    node.tag_name().namespace().unwrap_or("").trim()
}

/// Warn about namespace URIs that only match after trimming (RFC 4119 §2.3's " urn:…").
fn check_namespace_uris(root: Node, warnings: &mut Vec<String>) {
    // Only namespaces elements are actually in matter; one pass, each URI reported once.
    let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for n in root.descendants().filter(Node::is_element) {
        if let Some(uri) = n.tag_name().namespace() {
            if uri != uri.trim() && seen.insert(uri) {
                warnings.push(format!(
                    "Namespace URI \"{}\" has surrounding spaces; read as \"{}\".",
                    quote(uri),
                    quote(uri.trim())
                ));
            }
        }
    }
}

/// Keeps the warning list readable (and bounded: it goes into every CallEvent and the audit
/// log) when a document repeats the same mistake thousands of times.
fn cap_warnings(warnings: &mut Vec<String>) {
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - (MAX_WARNINGS - 1);
        warnings.truncate(MAX_WARNINGS - 1);
        warnings.push(format!("… and {more} more deviations not listed."));
    }
}

/// Conventional prefix for the namespaces we know, for messages a person reads.
fn prefix_for(ns_uri: &str) -> Option<&'static str> {
    Some(match ns_uri {
        ns::PIDF => "",
        ns::DATA_MODEL => "dm:",
        ns::GEOPRIV10 => "gp:",
        ns::BASIC_POLICY => "gbp:",
        ns::CIVIC_ADDR => "ca:",
        ns::CIVIC_ADDR_EXT => "cae:",
        ns::CIVIC_LOC_OBSOLETE => "cl:",
        ns::GML | ns::GML_3_0_OBSOLETE => "gml:",
        ns::PIDFLO_SHAPES => "gs:",
        "urn:ietf:params:xml:ns:geopriv:conf" => "con:",
        "urn:ietf:params:xml:ns:pidf:geopriv10:dynamic" => "dyn:",
        _ => return None,
    })
}

/// `dm:device`, `status`, or `{urn:x}thing` for unknown namespaces.
fn display_name(node: Node) -> String {
    let local = node.tag_name().name();
    let n = ns_of(node);
    match prefix_for(n) {
        Some(p) => format!("{p}{local}"),
        None if n.is_empty() => local.to_string(),
        None => format!("{{{}}}{local}", quote(n)),
    }
}

fn describe_ns(node: Node) -> String {
    match ns_of(node) {
        "" => "in no namespace".to_string(),
        n => format!("in namespace {}", quote(n)),
    }
}

/// Caller-supplied text quoted in a warning: bounded in length, control characters replaced.
/// (Warnings are shown as text, never markup — DESIGN "Nobody listens in uninvited".)
pub(crate) fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(QUOTE_MAX).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if s.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out
}

fn looks_like_uri(s: &str) -> bool {
    // RFC 3986 §3.1: scheme ":" …, scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let Some((scheme, rest)) = s.split_once(':') else { return false };
    let mut chars = scheme.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:30:00Z").unwrap().with_timezone(&Utc)
    }

    fn us_erl() -> Erl {
        Erl {
            label: "HQ, 2nd floor".into(),
            company: Some("Contoso".into()),
            civic: CivicAddress {
                country: Some("US".into()),
                a1: Some("WA".into()),
                a3: Some("Redmond".into()),
                rd: Some("Main".into()),
                sts: Some("St".into()),
                hno: Some("1".into()),
                flr: Some("2".into()),
                room: Some("210".into()),
                pc: Some("98052".into()),
                ..Default::default()
            },
            elins: vec!["4255550100".into()],
            validated: true,
        }
    }

    fn input<'a>(erl: &'a Erl) -> PidfLoInput<'a> {
        PidfLoInput {
            entity: "sip:+14255550123@example.com",
            device_id: Some("mac:00-0d-4b-30-72-df"),
            erl,
            geo: None,
            method: "Wiremap",
            provided_by: None,
            timestamp: ts(),
        }
    }

    #[test]
    fn escape_covers_markup_quotes_and_forbidden_chars() {
        let mut s = String::new();
        escape_into(&mut s, "<b>&\"'x\u{1}\u{FFFF}\r", false);
        assert_eq!(s, "&lt;b&gt;&amp;&quot;&apos;x\u{FFFD}\u{FFFD}&#13;");
        let mut a = String::new();
        escape_into(&mut a, "a\tb\nc", true);
        assert_eq!(a, "a&#9;b&#10;c");
        let mut t = String::new();
        escape_into(&mut t, "a\tb\nc", false);
        assert_eq!(t, "a\tb\nc");
    }

    #[test]
    fn hostile_text_stays_text() {
        let mut erl = us_erl();
        erl.civic.nam = Some("<b>&\"' </ca:NAM><evil/>".into());
        erl.civic.loc = Some("]]> &amp; \u{0}".into());
        let entity = "sip:\"x\"<y>@example.com";
        let mut inp = input(&erl);
        inp.entity = entity;
        inp.method = "Manual<x/>";
        let xml = build_pidf_lo(&inp);
        assert!(!xml.contains("<evil/>") && !xml.contains("<b>") && !xml.contains("<x/>"));
        let doc = Document::parse(&xml).expect("well-formed");
        assert_eq!(doc.root_element().attribute("entity"), Some(entity));
        let parsed = parse_pidf_lo(xml.as_bytes()).unwrap();
        let civic = parsed.erl.unwrap().civic;
        assert_eq!(civic.nam.as_deref(), Some("<b>&\"' </ca:NAM><evil/>"));
        assert_eq!(civic.loc.as_deref(), Some("]]> &amp; \u{FFFD}"));
        assert_eq!(parsed.method.as_deref(), Some("Manual<x/>"));
    }

    #[test]
    fn ids_are_valid_xs_ids_and_stable() {
        let a = occurrence_id('d', "sip:a@example.com", Some("mac:1"));
        assert!(is_xs_id(&a), "{a}");
        assert_eq!(a.len(), 17);
        assert!(a.starts_with('d') && a[1..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, occurrence_id('d', "sip:a@example.com", Some("mac:1")));
        assert_ne!(a, occurrence_id('d', "sip:a@example.com", Some("mac:2")));
        assert!(is_xs_id(&occurrence_id('t', "", None)));

        assert!(is_xs_id("target123-1") && is_xs_id("_x") && is_xs_id("é.1"));
        for bad in ["", "0", "12345", "57ee19fbea08c38f", "-a", "a:b", "a b", ".x"] {
            assert!(!is_xs_id(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn civic_tables_agree() {
        // Every RFC 5139 name except PRM/POM maps to a field, both ways, and distinct names
        // map to distinct fields.
        let mut c = CivicAddress::default();
        for (i, name) in CIVIC_ORDER.iter().enumerate() {
            match civic_field_mut(&mut c, name) {
                Some(slot) => *slot = Some(format!("v{i}")),
                None => assert!(matches!(*name, "PRM" | "POM"), "{name} has no field"),
            }
        }
        for (i, name) in CIVIC_ORDER.iter().enumerate() {
            if let Some(v) = civic_field(&c, name) {
                assert_eq!(v.as_deref(), Some(format!("v{i}").as_str()), "{name}");
            }
        }
        assert_eq!(CIVIC_ORDER.iter().filter(|n| civic_field(&c, n).is_some()).count(), 29);
    }

    #[test]
    fn civic_elements_follow_schema_order_and_geopriv_order() {
        let mut erl = us_erl();
        // Fill every field, in a struct order different from the schema's.
        for (i, name) in CIVIC_ORDER.iter().enumerate() {
            if let Some(slot) = civic_field_mut(&mut erl.civic, name) {
                *slot = Some(if *name == "country" { "GB".into() } else { format!("v{i}") });
            }
        }
        let xml = build_pidf_lo(&input(&erl));
        let doc = Document::parse(&xml).unwrap();
        let ca = doc.descendants().find(|n| n.tag_name().name() == "civicAddress").unwrap();
        let names: Vec<&str> = ca.children().filter(Node::is_element).map(|n| n.tag_name().name()).collect();
        let expected: Vec<&str> = CIVIC_ORDER.iter().copied().filter(|n| !matches!(*n, "PRM" | "POM")).collect();
        assert_eq!(names, expected);
        assert!(ca.children().filter(Node::is_element).all(|n| ns_of(n) == ns::CIVIC_ADDR));

        let gp = doc.descendants().find(|n| n.tag_name().name() == "geopriv").unwrap();
        let names: Vec<&str> = gp.children().filter(Node::is_element).map(|n| n.tag_name().name()).collect();
        assert_eq!(names, ["location-info", "usage-rules", "method"]);
        let dev = doc.root_element().children().find(Node::is_element).unwrap();
        assert_eq!((ns_of(dev), dev.tag_name().name()), (ns::DATA_MODEL, "device"));
        let names: Vec<&str> = dev.children().filter(Node::is_element).map(|n| n.tag_name().name()).collect();
        assert_eq!(names, ["geopriv", "deviceID", "timestamp"]);
        let ur = gp.children().find(|n| n.tag_name().name() == "usage-rules").unwrap();
        let rules: Vec<(&str, String)> =
            ur.children().filter(Node::is_element).map(|n| (n.tag_name().name(), text_of(n))).collect();
        assert_eq!(
            rules,
            [("retransmission-allowed", "false".to_string()), ("retention-expiry", "2024-05-02T12:30:00Z".to_string())]
        );
    }

    #[test]
    fn without_device_id_a_tuple_is_used() {
        let erl = us_erl();
        let mut inp = input(&erl);
        inp.device_id = None;
        let xml = build_pidf_lo(&inp);
        let doc = Document::parse(&xml).unwrap();
        let t = doc.root_element().children().find(Node::is_element).unwrap();
        assert_eq!((ns_of(t), t.tag_name().name()), (ns::PIDF, "tuple"));
        assert!(is_xs_id(t.attribute("id").unwrap()));
        let names: Vec<&str> = t.children().filter(Node::is_element).map(|n| n.tag_name().name()).collect();
        assert_eq!(names, ["status", "timestamp"]);
        assert!(!xml.contains("deviceID"));
    }

    #[test]
    fn company_fills_nam_only_when_missing_and_bad_country_is_dropped() {
        let mut erl = us_erl();
        let xml = build_pidf_lo(&input(&erl));
        assert!(xml.contains("<ca:NAM>Contoso</ca:NAM>"));
        erl.civic.nam = Some("Front desk".into());
        erl.civic.country = Some("usa".into());
        let xml = build_pidf_lo(&input(&erl));
        assert!(xml.contains("<ca:NAM>Front desk</ca:NAM>") && !xml.contains("Contoso"));
        assert!(!xml.contains("ca:country"));
        erl.civic.country = Some(" us ".into());
        assert!(build_pidf_lo(&input(&erl)).contains("<ca:country>US</ca:country>"));
        // Label and ELINs are not part of a PIDF-LO.
        assert!(!xml.contains("HQ, 2nd floor") && !xml.contains("4255550100"));
    }

    #[test]
    fn geo_shapes_by_what_is_known() {
        let erl = us_erl();
        let mut inp = input(&erl);
        let shape = |inp: &PidfLoInput| {
            let xml = build_pidf_lo(inp);
            let doc = Document::parse(&xml).unwrap();
            let li = doc.descendants().find(|n| n.tag_name().name() == "location-info").unwrap();
            li.children().filter(Node::is_element).map(|n| n.tag_name().name().to_string()).collect::<Vec<_>>()
        };
        let p = GeoPoint { latitude: 47.64, longitude: -122.13, altitude_m: None, radius_m: None };
        inp.geo = Some(p);
        assert_eq!(shape(&inp), ["Point", "civicAddress"]);
        inp.geo = Some(GeoPoint { radius_m: Some(25.0), ..p });
        assert_eq!(shape(&inp), ["Circle", "civicAddress"]);
        inp.geo = Some(GeoPoint { radius_m: Some(25.0), altitude_m: Some(30.5), ..p });
        assert_eq!(shape(&inp), ["Sphere", "civicAddress"]);
        inp.geo = Some(GeoPoint { latitude: f64::NAN, ..p });
        assert_eq!(shape(&inp), ["civicAddress"]);
        inp.geo = Some(GeoPoint { latitude: 91.0, ..p });
        assert_eq!(shape(&inp), ["civicAddress"]);
    }

    #[test]
    fn provided_by_is_a_nena_company_id() {
        let erl = us_erl();
        let mut inp = input(&erl);
        inp.provided_by = Some("CNTSO");
        let xml = build_pidf_lo(&inp);
        assert!(xml.contains("<dp:DataProviderID>CNTSO</dp:DataProviderID>"), "{xml}");
        inp.provided_by = Some("Contoso Corporation");
        assert!(!build_pidf_lo(&inp).contains("provided-by"));
    }

    #[test]
    fn gml_coordinates_dms() {
        let (lat, lon) = parse_gml_coordinates("37:46:30N 122:25:10W").unwrap();
        assert!((lat - 37.775).abs() < 1e-9 && (lon + 122.419_444_444).abs() < 1e-6, "{lat} {lon}");
        assert_eq!(parse_gml_coordinates("-34.5,150.25"), Some((-34.5, 150.25)));
        assert_eq!(parse_gml_coordinates("x y"), None);
        assert_eq!(parse_gml_coordinates("1"), None);
    }

    #[test]
    fn polygon_reduces_to_covering_circle() {
        // 0.01° square around (10, 20): the corners are ~780 m from the centre.
        let v = [(9.995, 19.995, None), (9.995, 20.005, None), (10.005, 20.005, None), (10.005, 19.995, None)];
        let g = covering_circle(&v);
        assert!((g.latitude - 10.0).abs() < 1e-9 && (g.longitude - 20.0).abs() < 1e-9);
        let r = g.radius_m.unwrap();
        assert!((770.0..790.0).contains(&r), "{r}");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(matches!(parse_pidf_lo(b"\xff\xfe<"), Err(PidfError::NotUtf8 { offset: 0 })));
        assert!(matches!(parse_pidf_lo(b""), Err(PidfError::NotWellFormed(_))));
        let e = parse_pidf_lo(b"<foo/>").unwrap_err();
        assert!(e.to_string().contains("<foo>"), "{e}");
        let e = parse_pidf_lo(br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"/>"#).unwrap_err();
        assert!(matches!(e, PidfError::NoLocation(_)) && e.to_string().contains("no usable location"), "{e}");
        let dtd = br#"<!DOCTYPE presence [<!ENTITY a "aaaa">]><presence>&a;</presence>"#;
        assert!(matches!(parse_pidf_lo(dtd), Err(PidfError::NotWellFormed(_))));
    }

    #[test]
    fn warnings_are_capped() {
        let ext: String = (0..1000).map(|i| format!("<x:e{i}>v</x:e{i}>")).collect();
        let doc = format!(
            r#"<civicAddress xmlns="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr" xmlns:x="urn:x"><RD>Main</RD>{ext}</civicAddress>"#
        );
        let (civic, warnings) = parse_civic_address(doc.as_bytes()).unwrap();
        assert_eq!(civic.rd.as_deref(), Some("Main"));
        assert_eq!(warnings.len(), MAX_WARNINGS);
        assert_eq!(warnings.last().unwrap(), "… and 969 more deviations not listed.");
    }

    #[test]
    fn depth_guard_counts_only_open_elements() {
        let nested = |n: usize, filler: &str| format!("{}{filler}{}", "<a b='/>'>".repeat(n), "</a>".repeat(n));
        let noise = "<!-- <a><a><a> --><![CDATA[<a><a>]]><?pi <a> ?><e/><e x=\"<\"/>";
        assert_eq!(check_depth(&nested(MAX_DEPTH, noise)), Ok(()));
        assert_eq!(check_depth(&nested(MAX_DEPTH + 1, "")), Err(PidfError::TooDeep { limit: MAX_DEPTH }));
        // The RFC examples are far from the limit.
        assert!(parse_pidf_lo(build_pidf_lo(&input(&us_erl())).as_bytes()).is_ok());
    }

    #[test]
    fn never_panics_on_prefixes_and_garbage() {
        let erl = us_erl();
        let mut inp = input(&erl);
        inp.geo = Some(GeoPoint { latitude: 1.5, longitude: 2.5, altitude_m: Some(3.0), radius_m: Some(4.0) });
        let xml = build_pidf_lo(&inp);
        let bytes = xml.as_bytes();
        for i in 0..=bytes.len() {
            let _ = parse_pidf_lo(&bytes[..i]);
            let _ = parse_civic_address(&bytes[..i]);
        }
        // Byte flips at every position.
        let mut m = bytes.to_vec();
        for i in 0..m.len() {
            let orig = m[i];
            for b in [b'<', b'>', b'&', b'"', 0x00, 0xC3, b'9', b' '] {
                m[i] = b;
                let _ = parse_pidf_lo(&m);
            }
            m[i] = orig;
        }
        // Deep nesting (would overflow roxmltree's recursive tokenizer) and many nodes stay bounded.
        let deep = format!("<presence>{}", "<a>".repeat(200_000));
        assert_eq!(parse_pidf_lo(deep.as_bytes()), Err(PidfError::TooDeep { limit: MAX_DEPTH }));
        let deep_closed = format!("{}{}", "<a x='>'>".repeat(100_000), "</a>".repeat(100_000));
        assert_eq!(parse_civic_address(deep_closed.as_bytes()), Err(PidfError::TooDeep { limit: MAX_DEPTH }));
        let wide = format!("<presence>{}</presence>", "<a/>".repeat(200_000));
        assert!(parse_pidf_lo(wide.as_bytes()).is_err());
        for g in [&b"\x00\x01\x02"[..], b"<<<<", b"<?xml?>", b"<presence", b"</presence>", b"<a:b xmlns:a=''/>"] {
            let _ = parse_pidf_lo(g);
        }
    }
}
