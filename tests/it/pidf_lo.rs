//! PIDF-LO build and parse (src/location/pidf/) against the RFC schemas (xmllint), the RFC
//! examples and third-party documents from real implementations.
//!
//! Fixtures: tests/fixtures/pidf-lo (provenance and licences in its SOURCES.md).
//! Needs xmllint (Debian `libxml2-utils`); the validation tests panic without it.

use crate::support;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sosdesk::location::pidf::{build_pidf_lo, parse_civic_address, parse_pidf_lo, PidfError, PidfLoInput};
use sosdesk::location::{CivicAddress, Erl, GeoPoint, LocationSnapshot, LocationSource};
use support::xmllint::{fixtures_dir, validate_pidf_lo, validate_pidf_lo_file};

// ---------------------------------------------------------------------------------------------
// Documents we generate
// ---------------------------------------------------------------------------------------------

fn ts() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T12:30:00Z").unwrap().with_timezone(&Utc)
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// A US office ERL using most RFC 5139 fields, with floor, room and ELINs.
fn erl_us_full() -> Erl {
    Erl {
        label: "Redmond HQ, 2nd floor, room 210".into(),
        company: s("Contoso Ltd"),
        civic: CivicAddress {
            country: s("US"),
            a1: s("WA"),
            a2: s("King"),
            a3: s("Redmond"),
            prd: s("NE"),
            rd: s("Microsoft"),
            sts: s("Way"),
            hno: s("1"),
            hns: s("A"),
            loc: s("North wing"),
            flr: s("2"),
            pc: s("98052"),
            bld: s("9"),
            unit: s("Suite 200"),
            room: s("210"),
            seat: s("Desk 14"),
            plc: s("office"),
            ..Default::default()
        },
        elins: vec!["4255550100".into(), "4255550101".into()],
        validated: true,
        floor_plan: None,
    }
}

fn erl_uk() -> Erl {
    Erl {
        label: "London office".into(),
        company: None,
        civic: CivicAddress {
            country: s("GB"),
            a1: s("England"),
            a3: s("London"),
            a4: s("Westminster"),
            rd: s("Victoria"),
            sts: s("Street"),
            hno: s("10"),
            flr: s("3"),
            nam: s("Example plc"),
            pc: s("SW1H 0NB"),
            ..Default::default()
        },
        elins: Vec::new(),
        validated: false,
        floor_plan: None,
    }
}

fn erl_minimal() -> Erl {
    Erl { civic: CivicAddress { country: s("US"), a3: s("Austin"), ..Default::default() }, ..Default::default() }
}

/// Text an admin might type (or paste) that must stay text.
fn erl_hostile() -> Erl {
    Erl {
        label: "<b>label</b>".into(),
        company: s("<x/>"),
        civic: CivicAddress {
            country: s("US"),
            a3: s("Springfield"),
            rd: s("Main & \"Co\" <St>"),
            hno: s("1'2"),
            loc: s("' OR 1=1 --<script>alert(1)</script>"),
            nam: s("<b>&\"' </ca:NAM><ca:ROOM>999</ca:ROOM>]]>"),
            room: s("&amp;&#60;"),
            ..Default::default()
        },
        elins: Vec::new(),
        validated: false,
        floor_plan: None,
    }
}

struct Case {
    name: &'static str,
    entity: &'static str,
    device_id: Option<&'static str>,
    erl: Erl,
    geo: Option<GeoPoint>,
    method: &'static str,
    provided_by: Option<&'static str>,
}

impl Case {
    fn input(&self) -> PidfLoInput<'_> {
        PidfLoInput {
            entity: self.entity,
            device_id: self.device_id,
            erl: &self.erl,
            geo: self.geo,
            method: self.method,
            provided_by: self.provided_by,
            timestamp: ts(),
        }
    }

    /// The civic address a receiver should read back: the ERL's, with the company as NAM
    /// when NAM is empty.
    fn expected_civic(&self) -> CivicAddress {
        let mut c = self.erl.civic.clone();
        if c.nam.is_none() {
            c.nam = self.erl.company.clone();
        }
        c
    }
}

const REDMOND: GeoPoint = GeoPoint { latitude: 47.639_7, longitude: -122.128_3, altitude_m: None, radius_m: None };

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "US full, floor/room/ELIN, device",
            entity: "sip:+14255550123@contoso.example.com",
            device_id: Some("mac:00-0d-4b-30-72-df"),
            erl: erl_us_full(),
            geo: None,
            method: "Wiremap",
            provided_by: Some("CNTSO"),
        },
        Case {
            name: "UK address",
            entity: "sip:+442079460000@example.co.uk",
            device_id: Some("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"),
            erl: erl_uk(),
            geo: None,
            method: "Manual",
            provided_by: None,
        },
        Case {
            name: "minimal (no device id, no method)",
            entity: "pres:desk@example.com",
            device_id: None,
            erl: erl_minimal(),
            geo: None,
            method: "",
            provided_by: None,
        },
        Case {
            name: "hostile text",
            entity: "sip:o'brien&co@example.com",
            device_id: Some("mac:00-11-22-33-44-55"),
            erl: erl_hostile(),
            geo: None,
            method: "Manual <b>&\"'",
            provided_by: None,
        },
        Case {
            name: "with geodetic point",
            entity: "sip:alice@contoso.example.com",
            device_id: Some("mac:00-0d-4b-30-72-e0"),
            erl: erl_us_full(),
            geo: Some(REDMOND),
            method: "Wiremap",
            provided_by: None,
        },
        Case {
            name: "with geodetic circle",
            entity: "sip:bob@contoso.example.com",
            device_id: Some("mac:00-0d-4b-30-72-e1"),
            erl: erl_us_full(),
            geo: Some(GeoPoint { radius_m: Some(35.5), ..REDMOND }),
            method: "DHCP",
            provided_by: None,
        },
        Case {
            name: "with 3D point",
            entity: "sip:carol@contoso.example.com",
            device_id: None,
            erl: erl_uk(),
            geo: Some(GeoPoint { latitude: 51.4977, longitude: -0.1357, altitude_m: Some(21.5), radius_m: None }),
            method: "GPS",
            provided_by: None,
        },
        Case {
            name: "with sphere (circle plus altitude)",
            entity: "sip:dave@contoso.example.com",
            device_id: Some("mac:00-0d-4b-30-72-e2"),
            erl: erl_minimal(),
            geo: Some(GeoPoint {
                latitude: -33.8688,
                longitude: 151.2093,
                altitude_m: Some(4.0),
                radius_m: Some(12.0),
            }),
            method: "GPS",
            provided_by: None,
        },
    ]
}

#[test]
fn generated_documents_validate_against_the_rfc_schemas() {
    for case in cases() {
        let xml = build_pidf_lo(&case.input());
        if let Err(e) = validate_pidf_lo(&xml) {
            panic!("{}: generated PIDF-LO does not validate:\n{e}\n--- document ---\n{xml}", case.name);
        }
    }
}

#[test]
fn round_trip_gives_back_the_civic_fields() {
    for case in cases() {
        let xml = build_pidf_lo(&case.input());
        let snap = parse_pidf_lo(xml.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}\n{xml}", case.name));
        assert_eq!(snap.source, LocationSource::ClientPidfLo, "{}", case.name);
        // Our own output must not need any tolerance.
        assert!(snap.warnings.is_empty(), "{}: warnings on our own document: {:?}", case.name, snap.warnings);
        let erl = snap.erl.as_ref().unwrap_or_else(|| panic!("{}: no civic address", case.name));
        assert_eq!(erl.civic, case.expected_civic(), "{}", case.name);
        assert_eq!(erl.label, "", "{}: the label is not part of a PIDF-LO", case.name);
        assert!(erl.elins.is_empty() && !erl.validated, "{}", case.name);
        assert_eq!(snap.geo, case.geo, "{}", case.name);
        let method = if case.method.is_empty() { None } else { Some(case.method.to_string()) };
        assert_eq!(snap.method, method, "{}", case.name);
    }

    // The values a call taker relies on, spelled out.
    let full = &cases()[0];
    let snap = parse_pidf_lo(build_pidf_lo(&full.input()).as_bytes()).unwrap();
    let c = snap.erl.unwrap().civic;
    assert_eq!(
        (c.hno.as_deref(), c.prd.as_deref(), c.rd.as_deref(), c.sts.as_deref()),
        (Some("1"), Some("NE"), Some("Microsoft"), Some("Way"))
    );
    assert_eq!((c.flr.as_deref(), c.room.as_deref()), (Some("2"), Some("210")));
    assert_eq!(c.nam.as_deref(), Some("Contoso Ltd"));

    let hostile = &cases()[3];
    let xml = build_pidf_lo(&hostile.input());
    assert!(!xml.contains("<script>") && !xml.contains("<ca:ROOM>999") && !xml.contains("<x/>"), "{xml}");
    let c = parse_pidf_lo(xml.as_bytes()).unwrap().erl.unwrap().civic;
    assert_eq!(c.nam.as_deref(), Some("<b>&\"' </ca:NAM><ca:ROOM>999</ca:ROOM>]]>"));
    assert_eq!(c.room.as_deref(), Some("&amp;&#60;"));
    assert_eq!(c.rd.as_deref(), Some("Main & \"Co\" <St>"));

    let circle = &cases()[5];
    let g = parse_pidf_lo(build_pidf_lo(&circle.input()).as_bytes()).unwrap().geo.unwrap();
    assert_eq!((g.latitude, g.longitude, g.radius_m), (47.6397, -122.1283, Some(35.5)));
}

#[test]
fn generated_document_layout() {
    let case = &cases()[0];
    let xml = build_pidf_lo(&case.input());
    let at = |needle: &str| xml.find(needle).unwrap_or_else(|| panic!("{needle} missing in\n{xml}"));
    // RFC 4119 §2.2 / geopriv10.xsd order, RFC 4479 device layout.
    assert!(at("<dm:device id=\"d") < at("<gp:geopriv>"));
    assert!(at("<gp:location-info>") < at("<gp:usage-rules>"));
    assert!(at("<gp:usage-rules>") < at("<gp:method>Wiremap</gp:method>"));
    assert!(at("<gp:method>") < at("<gp:provided-by>"));
    assert!(at("</gp:geopriv>") < at("<dm:deviceID>mac:00-0d-4b-30-72-df</dm:deviceID>"));
    assert!(at("<dm:deviceID>") < at("<dm:timestamp>2024-05-01T12:30:00Z</dm:timestamp>"));
    at("<gbp:retransmission-allowed>false</gbp:retransmission-allowed>");
    at("<gbp:retention-expiry>2024-05-02T12:30:00Z</gbp:retention-expiry>");
    at("entity=\"sip:+14255550123@contoso.example.com\"");
    // No invented language tag, no ELIN, no label.
    assert!(!xml.contains("xml:lang") && !xml.contains("4255550100") && !xml.contains("Redmond HQ"));
}

#[test]
fn the_validator_can_fail() {
    // Moving usage-rules before location-info breaks geopriv10.xsd's sequence.
    let xml = build_pidf_lo(&cases()[1].input());
    let start = xml.find("<gp:usage-rules>").unwrap();
    let end = xml.find("</gp:usage-rules>").unwrap() + "</gp:usage-rules>".len();
    let rules = &xml[start..end];
    let moved = xml.replacen(rules, "", 1).replacen("<gp:location-info>", &format!("{rules}<gp:location-info>"), 1);
    let err = validate_pidf_lo(&moved).expect_err("usage-rules before location-info must not validate");
    assert!(err.contains("usage-rules"), "{err}");
    // A country that is not ISO alpha-2.
    let bad_country = xml.replace("<ca:country>GB</ca:country>", "<ca:country>gb</ca:country>");
    assert!(validate_pidf_lo(&bad_country).is_err());
    // Not well-formed.
    assert!(validate_pidf_lo("<presence").is_err());
    // Third-party documents known to be invalid (VALIDATION-RESULTS.txt).
    let tp = examples_dir().join("third-party");
    assert!(validate_pidf_lo_file(&tp.join("tamu-edu_ng911-dev/SIP_INVITE_location_PIDF-LO.body.xml")).is_err());
    assert!(validate_pidf_lo_file(&tp.join("PhrSite_Ng911Lib/DeviceCircleLocation.xml")).is_err());
}

/// Also proves the copied schemas and catalog resolve from this directory, not /work/shared.
#[test]
fn copied_schemas_accept_the_rfc_examples() {
    for f in xml_files(&examples_dir()).into_iter().filter(|f| rel(f).starts_with("rfc")) {
        if let Err(e) = validate_pidf_lo_file(&f) {
            panic!("{}: {e}", rel(&f));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Documents others generate
// ---------------------------------------------------------------------------------------------

fn examples_dir() -> PathBuf {
    fixtures_dir().join("examples")
}

fn rel(p: &Path) -> String {
    p.strip_prefix(examples_dir()).unwrap().to_string_lossy().replace('\\', "/")
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "xml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// RFC 5139 element name → field, for expectations written the way the documents are.
fn civic_get<'c>(c: &'c CivicAddress, name: &str) -> Option<&'c str> {
    let f = match name {
        "country" => &c.country,
        "A1" => &c.a1,
        "A2" => &c.a2,
        "A3" => &c.a3,
        "A4" => &c.a4,
        "A6" => &c.a6,
        "PRD" => &c.prd,
        "RD" => &c.rd,
        "STS" => &c.sts,
        "RDBR" => &c.rdbr,
        "HNO" => &c.hno,
        "LMK" => &c.lmk,
        "LOC" => &c.loc,
        "FLR" => &c.flr,
        "NAM" => &c.nam,
        "PC" => &c.pc,
        "ROOM" => &c.room,
        "PLC" => &c.plc,
        "PCN" => &c.pcn,
        "POBOX" => &c.pobox,
        other => panic!("civic_get: add {other}"),
    };
    f.as_deref()
}

/// What a fixture must give.
enum Expect {
    /// Parsed. `civic`: fields that must be there, and no other field may be set; `geo`:
    /// (lat, lon, altitude, radius); `warnings`: exact count, plus substrings each of which
    /// must occur in some warning.
    Location {
        civic: &'static [(&'static str, &'static str)],
        geo: Option<(f64, f64, Option<f64>, Option<f64>)>,
        method: Option<&'static str>,
        warnings: usize,
        mentions: &'static [&'static str],
    },
    /// A bare RFC 5139 civicAddress document: not a PIDF-LO, but `parse_civic_address` reads it.
    BareCivic { civic: &'static [(&'static str, &'static str)], warnings: usize, mentions: &'static [&'static str] },
    /// Refused, with an error of this kind whose message contains `message`.
    Rejected { kind: fn(&PidfError) -> bool, message: &'static str },
}

fn check_civic(file: &str, civic: &CivicAddress, expected: &[(&str, &str)]) {
    for (name, value) in expected {
        assert_eq!(civic_get(civic, name), Some(*value), "{file}: civic {name}");
    }
    // Nothing else was invented.
    let mut only = CivicAddress::default();
    for (name, value) in expected {
        let slot = match *name {
            "country" => &mut only.country,
            "A1" => &mut only.a1,
            "A2" => &mut only.a2,
            "A3" => &mut only.a3,
            "A4" => &mut only.a4,
            "A6" => &mut only.a6,
            "PRD" => &mut only.prd,
            "RD" => &mut only.rd,
            "STS" => &mut only.sts,
            "RDBR" => &mut only.rdbr,
            "HNO" => &mut only.hno,
            "LMK" => &mut only.lmk,
            "LOC" => &mut only.loc,
            "FLR" => &mut only.flr,
            "NAM" => &mut only.nam,
            "PC" => &mut only.pc,
            "ROOM" => &mut only.room,
            "PLC" => &mut only.plc,
            "PCN" => &mut only.pcn,
            "POBOX" => &mut only.pobox,
            other => panic!("check_civic: add {other}"),
        };
        *slot = Some(value.to_string());
    }
    assert_eq!(civic, &only, "{file}: unexpected civic fields");
}

fn check_warnings(file: &str, warnings: &[String], count: usize, mentions: &[&str]) {
    assert_eq!(warnings.len(), count, "{file}: warnings {warnings:#?}");
    for m in mentions {
        assert!(warnings.iter().any(|w| w.contains(m)), "{file}: no warning mentions {m:?}: {warnings:#?}");
    }
}

fn check_geo(file: &str, geo: Option<GeoPoint>, expected: Option<(f64, f64, Option<f64>, Option<f64>)>) {
    match (geo, expected) {
        (None, None) => {}
        (Some(g), Some((lat, lon, alt, radius))) => {
            assert!((g.latitude - lat).abs() < 1e-6 && (g.longitude - lon).abs() < 1e-6, "{file}: {g:?}");
            match (g.altitude_m, alt) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-6, "{file}: altitude {a} != {b}"),
                (a, b) => panic!("{file}: altitude {a:?}, expected {b:?}"),
            }
            match (g.radius_m, radius) {
                (None, None) => {}
                (Some(a), Some(b)) => assert!((a - b).abs() < 1.0, "{file}: radius {a} != {b}"),
                (a, b) => panic!("{file}: radius {a:?}, expected {b:?}"),
            }
        }
        (g, e) => panic!("{file}: geo {g:?}, expected {e:?}"),
    }
}

fn run_table(table: &[(&str, Expect)], files: Vec<PathBuf>) {
    let names: Vec<String> = files.iter().map(|f| rel(f)).collect();
    for name in &names {
        assert!(table.iter().any(|(t, _)| t == name), "{name} has no expectation in the table");
    }
    for (name, expect) in table {
        assert!(names.iter().any(|n| n == name), "{name} is in the table but not in the fixtures");
        let bytes = std::fs::read(examples_dir().join(name)).unwrap();
        let result = parse_pidf_lo(&bytes);
        match expect {
            Expect::Location { civic, geo, method, warnings, mentions } => {
                let snap: LocationSnapshot = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(snap.source, LocationSource::ClientPidfLo);
                assert!(snap.is_known(), "{name}");
                match snap.erl.as_ref() {
                    Some(erl) => check_civic(name, &erl.civic, civic),
                    None => assert!(civic.is_empty(), "{name}: no civic address found"),
                }
                check_geo(name, snap.geo, *geo);
                assert_eq!(snap.method.as_deref(), *method, "{name}: method");
                check_warnings(name, &snap.warnings, *warnings, mentions);
            }
            Expect::BareCivic { civic, warnings, mentions } => {
                match result {
                    Err(e @ PidfError::WrongRoot { .. }) => {
                        assert!(e.to_string().contains("civicAddress"), "{name}: {e}")
                    }
                    other => panic!("{name}: a bare civicAddress is not a PIDF-LO, got {other:?}"),
                }
                let (c, w) = parse_civic_address(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                check_civic(name, &c, civic);
                check_warnings(name, &w, *warnings, mentions);
            }
            Expect::Rejected { kind, message } => {
                let e = result.expect_err(name);
                assert!(kind(&e), "{name}: wrong error kind {e:?}");
                assert!(e.to_string().contains(message), "{name}: {e}");
            }
        }
    }
}

fn no_location(e: &PidfError) -> bool {
    matches!(e, PidfError::NoLocation(_))
}

fn not_well_formed(e: &PidfError) -> bool {
    matches!(e, PidfError::NotWellFormed(_))
}

const WOLLONGONG: &[(&str, &str)] = &[
    ("country", "AU"),
    ("A1", "NSW"),
    ("A3", "Wollongong"),
    ("A4", "North Wollongong"),
    ("RD", "Flinders"),
    ("STS", "Street"),
    ("RDBR", "Campbell Street"),
    ("LMK", "Gilligan's Island"),
    ("LOC", "Corner"),
    ("NAM", "Video Rental Store"),
    ("PC", "2500"),
    ("ROOM", "Westerns and Classics"),
    ("PLC", "store"),
    ("POBOX", "Private Box 15"),
];

const BROADWAY: &[(&str, &str)] = &[
    ("country", "US"),
    ("A1", "New York"),
    ("A3", "New York"),
    ("A6", "Broadway"),
    ("HNO", "123"),
    ("LOC", "Suite 75"),
    ("PC", "10027-0401"),
];

/// RFC 4119 §2.3's usage rules: "yes"/"no" in the geopriv10 namespace.
const RFC4119_RULES: &[&str] = &["should be in the basicPolicy namespace", "not an xs:boolean"];

#[test]
fn rfc_examples_parse_to_their_location() {
    use Expect::*;
    let table: &[(&str, Expect)] = &[
        (
            "rfc4119/sec2.3-civicLoc-HISTORIC.xml",
            Location {
                civic: BROADWAY,
                geo: None,
                method: None,
                warnings: 4,
                mentions: &[
                    "surrounding spaces",
                    "obsolete civicLoc namespace",
                    "\"yes\", not an xs:boolean; read as true",
                ],
            },
        ),
        (
            "rfc4119/sec2.3-geodetic-gml3.0-HISTORIC.xml",
            Location {
                civic: &[],
                // 37:46:30N 122:25:10W
                geo: Some((37.775, -122.419_444_4, None, None)),
                method: None,
                warnings: 5,
                mentions: &[
                    "GML 3.0",
                    "\"epsg:4326\"",
                    "<gml:coordinates>",
                    "\"no\", not an xs:boolean; read as false",
                ],
            },
        ),
        ("rfc5139/sec5-civicAddress-en-AU.xml", BareCivic { civic: WOLLONGONG, warnings: 0, mentions: &[] }),
        (
            "rfc5491/sec3.2-civic-and-point.xml",
            Location {
                civic: &[("FLR", "2")],
                geo: Some((-43.5723, 153.2176, None, None)),
                method: Some("Wiremap"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "rfc5491/sec3.4-multiple-location-objects.xml",
            // Rule #8: the device's civic address wins over the person's circle, which is named.
            Location {
                civic: WOLLONGONG,
                geo: None,
                method: Some("GPS"),
                warnings: 1,
                mentions: &["<dm:person id=\"ness\">", "-34.410649, 150.876510 (±30 m)"],
            },
        ),
        (
            "rfc5491/sec5.2.1-point-2d.xml",
            Location {
                civic: &[],
                geo: Some((-34.407, 150.883, None, None)),
                method: Some("Wiremap"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "rfc5491/sec5.2.1-point-3d.xml",
            Location {
                civic: &[],
                geo: Some((-34.407, 150.883, Some(24.8), None)),
                method: Some("Wiremap"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "rfc5491/sec5.2.2-polygon-pos.xml",
            Location {
                civic: &[],
                // Vertex centroid; farthest vertex F (43.111 -73.322) ≈ 18.97 km away.
                geo: Some((43.277_666_7, -73.272, None, Some(18_970.0))),
                method: Some("Wiremap"),
                warnings: 1,
                mentions: &["<gml:Polygon> (6 vertices)"],
            },
        ),
        (
            "rfc5491/sec5.2.2-polygon-poslist.xml",
            Location {
                civic: &[],
                geo: Some((43.277_666_7, -73.272, None, Some(18_970.0))),
                method: Some("Wiremap"),
                warnings: 1,
                mentions: &["<gml:Polygon> (6 vertices)"],
            },
        ),
        (
            "rfc5491/sec5.2.3-circle.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, None, Some(850.24))),
                method: Some("OTDOA"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "rfc5491/sec5.2.4-ellipse.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, None, Some(1275.0))),
                method: Some("Device-Assisted_A-GPS"),
                warnings: 1,
                mentions: &["<gs:Ellipse> was reduced"],
            },
        ),
        (
            "rfc5491/sec5.2.5-arcband.xml",
            Location {
                civic: &[],
                geo: Some((-43.5723, 153.2176, None, Some(4148.0))),
                method: Some("TA-NMR"),
                warnings: 1,
                mentions: &["<gs:ArcBand> was reduced", "antenna"],
            },
        ),
        (
            "rfc5491/sec5.2.6-sphere.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, Some(26.3), Some(850.24))),
                method: Some("Device-Based_A-GPS"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "rfc5491/sec5.2.7-ellipsoid.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, Some(26.3), Some(7.7156))),
                method: Some("Hybrid_A-GPS"),
                warnings: 1,
                mentions: &["<gs:Ellipsoid> was reduced"],
            },
        ),
        (
            "rfc5491/sec5.2.8-prism.xml",
            Location {
                civic: &[],
                geo: Some((42.606_844, -73.298_157, Some(36.6), Some(6904.0))),
                method: Some("Wiremap"),
                warnings: 1,
                mentions: &["<gs:Prism> (4 vertices)"],
            },
        ),
        (
            "rfc6442/sec5.1-pidf-lo-device-point.xml",
            Location {
                civic: &[],
                geo: Some((32.86726, -97.16054, None, None)),
                method: Some("802.11"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "rfc6442/sec5.2-pidf-lo-device-point-person-civic.xml",
            Location {
                civic: &[],
                geo: Some((32.86726, -97.16054, None, None)),
                method: Some("802.11"),
                warnings: 1,
                mentions: &["<dm:person id=\"target123\">", "3913 Treemont Circle"],
            },
        ),
        (
            "rfc6848/sec2-civicAddress-devon-canals.xml",
            BareCivic {
                civic: &[
                    ("country", "UK"),
                    ("A1", "Devon"),
                    ("A3", "Monkokehampton"),
                    ("RD", "Deckport"),
                    ("STS", "Cross"),
                ],
                warnings: 1,
                mentions: &["bridge> = \"21451338\""],
            },
        ),
        (
            "rfc6848/sec3.4-conversion-example.xml",
            BareCivic {
                civic: &[("country", "US"), ("A1", "CA")],
                warnings: 6,
                mentions: &["lamp> = \"2471\"", "airport> = \"LAX\"", "gate> = \"36B\""],
            },
        ),
        (
            "rfc6848/sec5.6-extension-example-1.xml",
            BareCivic {
                civic: &[("country", "US"), ("A1", "CA"), ("A2", "Sacramento"), ("RD", "I5")],
                warnings: 2,
                mentions: &["RFC 6848 extension <cae:MP> = \"248\"", "<cae:PN> = \"22-109-689\""],
            },
        ),
        (
            "rfc6848/sec5.6-extension-example-2.xml",
            BareCivic {
                civic: &[("country", "US"), ("A1", "CA"), ("A2", "Sacramento"), ("RD", "Colorado"), ("HNO", "223")],
                warnings: 2,
                mentions: &["<cae:STP> = \"Boulevard\"", "<cae:HNP> = \"A\""],
            },
        ),
        (
            "rfc7852/sec7-fig18-pidf-lo-with-provided-by.xml",
            Location {
                civic: &[
                    ("country", "US"),
                    ("A1", "DE"),
                    ("A3", "Wilmington"),
                    ("PRD", "W"),
                    ("RD", "11th"),
                    ("STS", "Street"),
                    ("HNO", "42"),
                    ("NAM", "The Hotel DuPont"),
                    ("PC", "19801"),
                ],
                geo: None,
                method: Some("802.11"),
                warnings: 0,
                mentions: &[],
            },
        ),
    ];
    let files = xml_files(&examples_dir()).into_iter().filter(|f| rel(f).starts_with("rfc")).collect();
    run_table(table, files);
}

/// The bare civicAddress examples, put in a PIDF-LO the way a phone would send them, give the
/// same civic address through `parse_pidf_lo`.
#[test]
fn bare_civic_examples_inside_a_pidf_lo() {
    for f in xml_files(&examples_dir()).into_iter().filter(|f| {
        let r = rel(f);
        r.starts_with("rfc5139/") || r.starts_with("rfc6848/")
    }) {
        let text = std::fs::read_to_string(&f).unwrap();
        let body = text.trim_start().strip_prefix("<?xml").map_or(text.as_str(), |r| &r[r.find("?>").unwrap() + 2..]);
        let doc = format!(
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10" entity="pres:a@example.com">
<tuple id="t1"><status><gp:geopriv><gp:location-info>{body}</gp:location-info><gp:usage-rules/></gp:geopriv></status></tuple>
</presence>"#
        );
        assert!(validate_pidf_lo(&doc).is_ok(), "{}", rel(&f));
        let snap = parse_pidf_lo(doc.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", rel(&f)));
        let (civic, warnings) = parse_civic_address(text.as_bytes()).unwrap();
        assert_eq!(snap.erl.unwrap().civic, civic, "{}", rel(&f));
        assert_eq!(snap.warnings, warnings, "{}", rel(&f));
    }
}

#[test]
fn third_party_examples_parse_with_warnings_or_are_rejected() {
    use Expect::*;
    const NO_ENTITY: &str = "<presence> has no entity attribute";
    const ID_12345: &str = "id \"12345\" is not a valid xs:ID";
    const NO_DEVICE_ID: &str = "has no <dm:deviceID>";
    const DEC112_ORDER: &str = "<gp:location-info> comes after <gp:method>";
    let simi_valley_1: &'static [(&str, &str)] = &[
        ("country", "US"),
        ("A1", "CA"),
        ("A3", "Simi Valley"),
        ("RD", "Stonebrook"),
        ("STS", "Street"),
        ("HNO", "311"),
        ("PC", "93065"),
    ];
    let simi_valley_2: &'static [(&str, &str)] = &[
        ("country", "US"),
        ("A1", "CA"),
        ("A3", "Simi Valley"),
        ("RD", "Kay"),
        ("STS", "Ave"),
        ("HNO", "1657"),
        ("PC", "93063"),
    ];
    let table: Vec<(&str, Expect)> = vec![
        // --- PhrSite/Ng911Lib ---
        (
            "third-party/PhrSite_Ng911Lib/DeviceAndPerson.xml",
            Location {
                civic: simi_valley_1,
                geo: None,
                method: Some("802.11"),
                warnings: 2,
                mentions: &[NO_ENTITY, "<dm:person id=\"12345\">", "34.247493, -118.791885 (±50 m)"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/DeviceCircleDynamic1.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, None, Some(100.0))),
                method: Some("gps"),
                warnings: 4,
                mentions: &[
                    "<timestamp> in <dm:device id=\"abc123\"> is in namespace urn:ietf:params:xml:ns:pidf",
                    "not the last child",
                    "<method> in <dm:device id=\"abc123\"> is in namespace urn:ietf:params:xml:ns:pidf",
                    "<dyn:Dynamic>",
                ],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/DeviceCircleLocation.xml",
            Location {
                civic: &[],
                geo: Some((41.760537, -88.261914, None, Some(50.0))),
                method: Some("802.11"),
                warnings: 3,
                mentions: &[NO_ENTITY, ID_12345, NO_DEVICE_ID],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/DeviceCircleWithConfidence.xml",
            Location {
                civic: &[],
                geo: Some((41.760537, -88.261914, None, Some(50.0))),
                method: Some("802.11"),
                warnings: 4,
                mentions: &[NO_ENTITY, ID_12345, NO_DEVICE_ID, "<con:confidence>"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/DeviceCivicLocation.xml",
            Location {
                civic: &[
                    ("country", "US"),
                    ("A1", "IL"),
                    ("A2", "KANE"),
                    ("A3", "AURORA"),
                    ("PRD", "E"),
                    ("RD", "NEW YORK"),
                    ("STS", "ST"),
                    ("HNO", "2106"),
                    ("PCN", "AURORA"),
                ],
                geo: None,
                method: Some("802.11"),
                warnings: 1,
                mentions: &[NO_ENTITY],
            },
        ),
        // Only RFC 5962 dynamic data (speed, heading): no location to send anyone to.
        (
            "third-party/PhrSite_Ng911Lib/DeviceDynamicOnly1.xml",
            Rejected { kind: no_location, message: "holds no usable civic address or shape" },
        ),
        (
            "third-party/PhrSite_Ng911Lib/DevicePointLocation.xml",
            Location {
                civic: &[],
                geo: Some((41.772035, -88.473291, None, None)),
                method: Some("802.11"),
                warnings: 3,
                mentions: &[NO_ENTITY, ID_12345, NO_DEVICE_ID],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/PersonDeviceCivicCircleLocation.xml",
            Location {
                civic: simi_valley_2,
                geo: None,
                method: Some("802.11"),
                warnings: 2,
                mentions: &[NO_ENTITY, "34.268544, -118.666519 (±50 m)"],
            },
        ),
        // Copies of RFC 5491 / RFC 4119 / RFC 6848 examples wrapped in PIDF-LOs.
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TupleArcBandLocation.xml",
            Location {
                civic: &[],
                geo: Some((-43.5723, 153.2176, None, Some(4148.0))),
                method: Some("TA-NMR"),
                warnings: 1,
                mentions: &["ArcBand"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TupleCircleLocation.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, None, Some(850.24))),
                method: Some("OTDOA"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TupleCivicLocation.xml",
            Location { civic: BROADWAY, geo: None, method: None, warnings: 2, mentions: RFC4119_RULES },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TupleEllipseLocation.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, None, Some(1275.0))),
                method: Some("Device-Assisted_A-GPS"),
                warnings: 1,
                mentions: &["Ellipse"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TupleEllipsoidLocation.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, Some(26.3), Some(7.7156))),
                method: Some("Hybrid_A-GPS"),
                warnings: 1,
                mentions: &["Ellipsoid"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TuplePointLocation.xml",
            Location {
                civic: &[],
                geo: Some((37.775, -122.419_444_4, None, None)),
                method: None,
                warnings: 5,
                mentions: &["GML 3.0", "<gml:coordinates>"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TuplePolygonCompactLocation.xml",
            Location {
                civic: &[],
                geo: Some((43.277_666_7, -73.272, None, Some(18_970.0))),
                method: Some("Wiremap"),
                warnings: 1,
                mentions: &["Polygon"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TuplePolygonLocation.xml",
            Location {
                civic: &[],
                geo: Some((43.277_666_7, -73.272, None, Some(18_970.0))),
                method: Some("Wiremap"),
                warnings: 1,
                mentions: &["Polygon"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TuplePrismLocation.xml",
            Location {
                civic: &[],
                geo: Some((42.606_844, -73.298_157, Some(36.6), Some(6904.0))),
                method: Some("Wiremap"),
                warnings: 1,
                mentions: &["Prism"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC5491TupleSphereLocation.xml",
            Location {
                civic: &[],
                geo: Some((42.5463, -73.2512, Some(26.3), Some(850.24))),
                method: Some("Device-Based_A-GPS"),
                warnings: 0,
                mentions: &[],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC6848CivicExtendedExample1.xml",
            Location {
                civic: &[
                    ("country", "UK"),
                    ("A1", "Devon"),
                    ("A3", "Monkokehampton"),
                    ("RD", "Deckport"),
                    ("STS", "Cross"),
                ],
                geo: None,
                method: None,
                warnings: 3,
                mentions: &["bridge> = \"21451338\"", "should be in the basicPolicy namespace"],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC6848Figure7Example.xml",
            Location {
                civic: &[("country", "US"), ("A1", "CA"), ("A2", "Sacramento"), ("RD", "I5")],
                geo: None,
                method: None,
                warnings: 4,
                mentions: &["<cae:MP> = \"248\"", "<cae:PN> = \"22-109-689\""],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC6848Figure8Example.xml",
            Location {
                civic: &[("country", "US"), ("A1", "CA"), ("A2", "Sacramento"), ("RD", "Colorado"), ("HNO", "223")],
                geo: None,
                method: None,
                warnings: 4,
                mentions: &["<cae:STP> = \"Boulevard\"", "<cae:HNP> = \"A\""],
            },
        ),
        (
            "third-party/PhrSite_Ng911Lib/RFC6848Section3.4Example.xml",
            Location {
                civic: &[("country", "US"), ("A1", "CA")],
                geo: None,
                method: None,
                warnings: 8,
                mentions: &["airport> = \"LAX\""],
            },
        ),
        // --- dec112 (usage-rules first, RFC 4119-era rules, several intended negatives) ---
        (
            "third-party/dec112_pidf-lo-javascript/civic-circle_location.xml",
            // Compound location (RFC 5491 rule #6): circle plus civic address.
            Location {
                civic: &[
                    ("country", "AT"),
                    ("A1", "Wien"),
                    ("A4", "Meidling"),
                    ("RD", "Fockygasse"),
                    ("HNO", "51A"),
                    ("PC", "1120"),
                ],
                geo: Some((48.123, 14.456, None, Some(24.0))),
                method: Some("GPS"),
                warnings: 3,
                mentions: &[DEC112_ORDER],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/invalid-pidf-lo_invalid-full-1.xml",
            Rejected { kind: no_location, message: "has no <gml:pos>" },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/invalid-pidf-lo_invalid-full-2.xml",
            Rejected { kind: not_well_formed, message: "not well-formed XML" },
        ),
        // "0 0 xxxxxxx": a position with garbage in it is not sent to a PSAP as 0°N 0°E.
        (
            "third-party/dec112_pidf-lo-javascript/invalid-pidf-lo_invalid-part-1.xml",
            Rejected { kind: no_location, message: "<gml:pos> \"0 0 xxxxxxx\" is not a list of numbers" },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/invalid-pidf-lo_invalid-part-2.xml",
            Rejected { kind: no_location, message: "<gml:pos> \"0 0 xxxxxxx\" is not a list of numbers" },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/multiple-locations_valid.xml",
            Location {
                civic: &[],
                geo: Some((12.345, 67.89, Some(36.7), None)),
                method: Some("GPS"),
                warnings: 5,
                mentions: &["1 more <gp:location-info>", "third was read as altitude"],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/rfc5491_point-example.xml",
            Location {
                civic: &[],
                geo: Some((-34.407, 150.883, None, None)),
                method: Some("Wiremap"),
                warnings: 6,
                mentions: &[
                    "<gp:geopriv> is inside <status> in <dm:device id=\"point2d\">",
                    "<dm:timestamp>",
                    NO_DEVICE_ID,
                ],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/simple-circle-with-altitude_valid-circle.xml",
            Location {
                civic: &[],
                geo: Some((48.123, 14.456, Some(20.7), Some(24.0))),
                method: Some("GPS"),
                warnings: 4,
                mentions: &[DEC112_ORDER],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/simple-circle_invalid-tuple.xml",
            Location {
                civic: &[],
                geo: Some((48.123, 14.456, None, Some(24.0))),
                method: Some("GPS"),
                warnings: 4,
                mentions: &["<dm:tuple id=\"ue\"> is in namespace urn:ietf:params:xml:ns:pidf:data-model"],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/simple-circle_valid-circle.xml",
            Location {
                civic: &[],
                geo: Some((48.123, 14.456, None, Some(24.0))),
                method: Some("GPS"),
                warnings: 3,
                mentions: &[DEC112_ORDER],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/simple-civic_valid-civic-address.xml",
            Location {
                civic: &[
                    ("country", "AT"),
                    ("A1", "Upper Austria"),
                    ("A4", "Schärding"),
                    ("FLR", "5"),
                    ("NAM", "Hospital"),
                    ("PC", "4780"),
                ],
                geo: None,
                method: Some("802.11"),
                warnings: 3,
                mentions: &[DEC112_ORDER],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/simple-point_valid-point.xml",
            Location {
                civic: &[],
                geo: Some((12.345, 67.89, Some(36.7), None)),
                method: Some("Cell"),
                warnings: 4,
                mentions: &["\"yes\", not an xs:boolean; read as true"],
            },
        ),
        (
            "third-party/dec112_pidf-lo-javascript/wifi-location_location.xml",
            Location {
                civic: &[],
                geo: Some((48.197457, 14.482596, None, Some(270.0))),
                method: None,
                warnings: 2,
                mentions: &[NO_DEVICE_ID, "<con:confidence>"],
            },
        ),
        // --- tamu-edu ng911-dev (as sipp sends it) ---
        (
            "third-party/tamu-edu_ng911-dev/SIP_INVITE_location_PIDF-LO.body.xml",
            Location {
                civic: &[
                    ("country", "US"),
                    ("A1", "MD"),
                    ("A3", "Laurel"),
                    ("HNO", "10"),
                    ("RD", "TEST"),
                    ("STS", "Ave"),
                    ("NAM", "TEST"),
                    ("PC", "1234"),
                ],
                geo: None,
                method: None,
                warnings: 4,
                mentions: &[
                    "id \"0\" is not a valid xs:ID",
                    "has no time zone",
                    "has no <gp:usage-rules>",
                    "out of RFC 5139 §4 schema order",
                ],
            },
        ),
    ];
    let files = xml_files(&examples_dir()).into_iter().filter(|f| rel(f).starts_with("third-party")).collect();
    run_table(&table, files);
}

#[test]
fn documents_without_a_location_are_rejected() {
    // A schema-valid PIDF-LO whose location-info is empty (RFC 4119 allows it syntactically).
    let rfc = std::fs::read_to_string(examples_dir().join("rfc6442/sec5.1-pidf-lo-device-point.xml")).unwrap();
    let start = rfc.find("<gml:location>").unwrap();
    let end = rfc.find("</gml:location>").unwrap() + "</gml:location>".len();
    let empty = format!("{}{}", &rfc[..start], &rfc[end..]);
    assert!(validate_pidf_lo(&empty).is_ok(), "still schema-valid");
    let e = parse_pidf_lo(empty.as_bytes()).unwrap_err();
    assert!(matches!(e, PidfError::NoLocation(_)), "{e:?}");
    assert!(e.to_string().contains("no usable location"), "{e}");

    // No location-info at all.
    let li_start = rfc.find("<gp:location-info>").unwrap();
    let li_end = rfc.find("</gp:location-info>").unwrap() + "</gp:location-info>".len();
    let none = format!("{}{}", &rfc[..li_start], &rfc[li_end..]);
    let e = parse_pidf_lo(none.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("has no <gp:location-info>"), "{e}");

    // A presence document without any geopriv (an ordinary SIP presence body).
    let e = parse_pidf_lo(
        br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@example.com"><tuple id="a"><status><basic>open</basic></status></tuple></presence>"#,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "PIDF-LO contains no usable location: <tuple id=\"a\"> has no <gp:geopriv>");
    let e =
        parse_pidf_lo(br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@example.com"/>"#).unwrap_err();
    assert!(e.to_string().contains("no <tuple>, <dm:device> or <dm:person> element carries a <gp:geopriv>"), "{e}");

    // Empty civicAddress.
    let e = parse_pidf_lo(
        rfc.replace(
            "<gml:location>",
            "<ca:civicAddress xmlns:ca=\"urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr\"/><gml:location>",
        )
        .replace("<gml:pos>32.86726 -97.16054</gml:pos>", "<gml:pos>91 0</gml:pos>")
        .as_bytes(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("civicAddress") && e.to_string().contains("91, 0 is not a valid latitude"), "{e}");

    // Not a PIDF-LO, not XML, not UTF-8.
    assert!(matches!(parse_pidf_lo(b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\n"), Err(PidfError::NotWellFormed(_))));
    let e = parse_pidf_lo(b"<html><body>hi</body></html>").unwrap_err();
    assert_eq!(e.to_string(), "location body is not a PIDF (<presence>) document: its root element is <html>");
    let mut bytes = rfc.clone().into_bytes();
    let at = rfc.find("alice").unwrap() + 2;
    bytes[at] = 0xE9; // "aléce" in ISO-8859-1
    assert!(matches!(parse_pidf_lo(&bytes), Err(PidfError::NotUtf8 { offset }) if offset == at));
}

#[test]
fn fixture_prefixes_never_panic() {
    for name in [
        "rfc7852/sec7-fig18-pidf-lo-with-provided-by.xml",
        "rfc5491/sec5.2.8-prism.xml",
        "third-party/dec112_pidf-lo-javascript/invalid-pidf-lo_invalid-part-1.xml",
        "third-party/tamu-edu_ng911-dev/SIP_INVITE_location_PIDF-LO.body.xml",
    ] {
        let bytes = std::fs::read(examples_dir().join(name)).unwrap();
        for i in 0..=bytes.len() {
            let _ = parse_pidf_lo(&bytes[..i]);
        }
    }
}
