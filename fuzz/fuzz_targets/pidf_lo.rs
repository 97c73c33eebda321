//! A caller's PIDF-LO (or a bare civicAddress), any bytes: the tolerant reader never panics;
//! and the location it reads, written again by sosdesk's strict writer (what HELD and the PSAP
//! get), reads back to the same civic address with no warning.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use sosdesk::location::pidf::{build_pidf_lo, parse_civic_address, parse_pidf_lo, PidfLoInput};

/// RFC 5139 §3.1 country as the writer sends it: an ISO 3166 alpha-2 code, upper case, or none.
fn sendable_country(c: &Option<String>) -> Option<String> {
    let c = c.as_deref()?.to_ascii_uppercase();
    (c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())).then_some(c)
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_civic_address(data);
    let Ok(loc) = parse_pidf_lo(data) else { return };
    let Some(erl) = &loc.erl else { return };
    let mut expected = erl.civic.clone();
    expected.country = sendable_country(&expected.country);
    if expected.is_empty() {
        return;
    }
    let doc = build_pidf_lo(&PidfLoInput {
        entity: "pres:fuzz@example.com",
        device_id: None,
        erl,
        geo: None,
        method: loc.method.as_deref().unwrap_or(""),
        provided_by: None,
        timestamp: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    });
    let again = match parse_pidf_lo(doc.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("sosdesk's own PIDF-LO does not read back: {e:?}\n{doc}"),
    };
    assert!(again.warnings.is_empty(), "warnings on sosdesk's own PIDF-LO: {:?}\n{doc}", again.warnings);
    let got = again.erl.as_ref().map(|e| e.civic.clone()).unwrap_or_default();
    assert_eq!(got, expected, "the civic address changed on the way through the writer\n{doc}");
});
