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
//!   [`crate::location::LocationSnapshot::warnings`]; only a document with no usable location at all is an error.
//!
//! Nothing here panics, whatever the input (see the prefix/garbage tests in `parse`).
//!
//! The parts: `build` writes, `parse` reads a document and `geopriv` the location objects in
//! it, `civic` is the `civicAddress` element both ways, `geometry` the GML shapes both ways,
//! and `xml` the XML text rules (escaping, names, `xs:ID`, quoting caller text) they share.

mod build;
mod civic;
mod geometry;
mod geopriv;
mod parse;
pub(crate) mod xml;

use std::fmt;

pub use build::{build_pidf_lo, PidfLoInput};
#[cfg(test)]
pub(crate) use parse::MAX_DEPTH;
pub(crate) use parse::{decode, parse_xml};
pub use parse::{parse_civic_address, parse_pidf_lo};
pub(crate) use xml::{collapse_ws, escape_into, quote};

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

/// What the unit tests of the parts share: an ERL and the input of a PIDF-LO for it.
#[cfg(test)]
mod test_support {
    use chrono::{DateTime, Utc};

    use super::PidfLoInput;
    use crate::location::{CivicAddress, Erl};

    pub(super) fn ts() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:30:00Z").unwrap().with_timezone(&Utc)
    }

    pub(super) fn us_erl() -> Erl {
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
            floor_plan: None,
        }
    }

    pub(super) fn input<'a>(erl: &'a Erl) -> PidfLoInput<'a> {
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
}
