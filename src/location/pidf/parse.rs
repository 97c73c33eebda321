//! Reading a caller's PIDF-LO, tolerantly (see the `pidf` module documentation): the guards every
//! location body passes first (UTF-8 only, nesting depth checked before the XML parser recurses,
//! no DTD, node count capped; shared with HELD), then the choice between the location objects
//! found (RFC 5491 §3 rule #8) and the warnings, capped.

use roxmltree::{Document, Node, ParsingOptions};

use super::civic::parse_civic;
use super::geopriv::{parse_object, Kind, ObjectResult};
use super::xml::{describe_ns, display_name, looks_like_uri, ns_of, quote};
use super::{ns, PidfError};
use crate::location::{CivicAddress, Erl, LocationSnapshot, LocationSource};

/// Cap on XML nodes, so a hostile body cannot make us allocate without bound. A PIDF-LO with
/// a 1,000-vertex polygon has a few thousand nodes.
pub(super) const NODES_LIMIT: u32 = 100_000;
/// Deepest element nesting accepted (see [`check_depth`]).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most warnings returned for one document (see [`cap_warnings`]).
pub(super) const MAX_WARNINGS: usize = 32;

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
        site_map: None,
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

/// UTF-8 text of an XML body (a leading BOM dropped). Shared with HELD (`location::held`).
pub(crate) fn decode(xml: &[u8]) -> Result<&str, PidfError> {
    let body = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    std::str::from_utf8(body).map_err(|e| PidfError::NotUtf8 { offset: e.valid_up_to() })
}

/// Parses untrusted XML with the guards every location body gets: [`check_depth`] first, no DTD
/// (entity expansion), at most [`NODES_LIMIT`] nodes. Shared with HELD (`location::held`), whose
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
pub(super) fn check_depth(text: &str) -> Result<(), PidfError> {
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

/// Warn about namespace URIs that only match after trimming (RFC 4119 §2.3's " urn:…").
pub(super) fn check_namespace_uris(root: Node, warnings: &mut Vec<String>) {
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
pub(super) fn cap_warnings(warnings: &mut Vec<String>) {
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - (MAX_WARNINGS - 1);
        warnings.truncate(MAX_WARNINGS - 1);
        warnings.push(format!("… and {more} more deviations not listed."));
    }
}

#[cfg(test)]
mod tests {
    use super::super::build::build_pidf_lo;
    use super::super::test_support::{input, us_erl};
    use super::*;
    use crate::location::GeoPoint;

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
