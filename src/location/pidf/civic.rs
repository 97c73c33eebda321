//! The RFC 5139 `civicAddress` element both ways: the schema's element order, the civic address
//! as sent (collapsed, NAM from the company, a valid country only) and the tolerant reading of a
//! received one (RFC 5139 §4; RFC 4119's obsolete civicLoc uses the same names; RFC 6848
//! extensions are shown, not stored).

use roxmltree::Node;

use super::ns;
use super::xml::{collapse_ws, display_name, ns_of, quote, text_of};
use crate::location::{CivicAddress, Erl};

/// RFC 5139 §4: the civicAddress schema is an `xs:sequence`, so a valid document must list the
/// elements in exactly this order. PRM and POM are in the schema but have no field in
/// [`CivicAddress`]; a parsed value for them is reported as a warning instead of dropped silently.
/// (This is the schema's order, not a list of fields: the fields are [`crate::location::CIVIC_FIELDS`], and
/// the `civic_tables_agree` test checks the two name the same 29 elements.)
pub(super) const CIVIC_ORDER: [&str; 31] = [
    "country", "A1", "A2", "A3", "A4", "A5", "A6", "PRM", "PRD", "RD", "STS", "POD", "POM", "RDSEC", "RDBR", "RDSUBBR",
    "HNO", "HNS", "LMK", "LOC", "FLR", "NAM", "PC", "BLD", "UNIT", "ROOM", "SEAT", "PLC", "PCN", "POBOX", "ADDCODE",
];

/// The [`CivicAddress`] field behind an RFC 5139 element name (`None` for PRM/POM and unknowns),
/// through the one table of civic fields ([`crate::location::CIVIC_FIELDS`]).
pub(super) fn civic_field<'c>(c: &'c CivicAddress, element: &str) -> Option<&'c Option<String>> {
    crate::location::civic_field(element).map(|f| (f.get)(c))
}

/// Mutable twin of [`civic_field`]; the two are kept in step by a unit test.
pub(super) fn civic_field_mut<'c>(c: &'c mut CivicAddress, element: &str) -> Option<&'c mut Option<String>> {
    crate::location::civic_field(element).map(|f| (f.get_mut)(c))
}
/// The civic address as sent: trimmed, whitespace collapsed, empty fields dropped, the
/// ERL's company as NAM when NAM is not set, and an unusable country left out.
pub(super) fn civic_for_sending(erl: &Erl) -> CivicAddress {
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

/// RFC 5139 civic address (also RFC 4119's obsolete civicLoc, which uses the same names).
pub(super) fn parse_civic(node: Node, warnings: &mut Vec<String>) -> CivicAddress {
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

pub(super) fn is_iso_alpha2(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
