//! Writing the PIDF-LO we send with an emergency call (RFC 4119, RFC 5139, RFC 5491; RFC 6442
//! §4.1 by value): strict, schema-valid, every piece of admin-entered text escaped.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use super::civic::{civic_field, civic_for_sending, CIVIC_ORDER};
use super::geometry::{sendable_geo, write_shape};
use super::xml::{collapse_ws, XmlWriter};
use super::{ns, RETENTION_HOURS};
use crate::location::{Erl, GeoPoint};

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

/// A stable `xs:ID` (starts with a letter, then hex) for a `<device>` or `<tuple>`.
pub(super) fn occurrence_id(prefix: char, entity: &str, device_id: Option<&str>) -> String {
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

#[cfg(test)]
mod tests {
    use roxmltree::{Document, Node};

    use super::super::civic::civic_field_mut;
    use super::super::parse::parse_pidf_lo;
    use super::super::test_support::{input, us_erl};
    use super::super::xml::{is_xs_id, ns_of, text_of};
    use super::*;

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
}
