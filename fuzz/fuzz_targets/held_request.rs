//! A HELD request body (RFC 5985 `locationRequest`, RFC 6155 device identity), any bytes, from a
//! requester inside or outside the identity requesters' networks, against a LIS that knows every
//! device: `HeldState::respond` never panics; its answer is always well-formed XML, a
//! `locationResponse` or an `error`; a `locationResponse` carries a PIDF-LO that sosdesk reads
//! back without warnings.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use sosdesk::location::held::HeldState;
use sosdesk::location::pidf::parse_pidf_lo;
use sosdesk::location::{CivicAddress, DeviceAttachment, Erl, Locator, MatchKind};

/// Every device is in the lab's HQ (a switch port for identities with a chassis, a subnet else).
struct Everywhere(Arc<Erl>);

impl Locator for Everywhere {
    fn locate(&self, d: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        let kind = if d.chassis_id.is_some() { MatchKind::SwitchPort } else { MatchKind::Subnet };
        Some((self.0.clone(), kind))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, body)) = data.split_first() else { return };
    let erl = Erl {
        label: "HQ <2nd> & \"floor\"".into(),
        company: Some("Contoso; 4255550100".into()),
        civic: CivicAddress {
            country: Some("US".into()),
            a1: Some("WA".into()),
            a3: Some("Redmond".into()),
            rd: Some("Microsoft Way".into()),
            hno: Some("1".into()),
            flr: Some("2".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let state = HeldState::new(Arc::new(Everywhere(Arc::new(erl))), "lis.example.com")
        .unwrap()
        .with_provided_by("ACME")
        .with_identity_requesters(vec!["10.0.0.0/8".parse().unwrap()]);
    let source = match who % 3 {
        0 => None,
        1 => Some([10, 1, 2, 3].into()),
        _ => Some([192, 0, 2, 7].into()),
    };
    let reply = state.respond(body, source, DateTime::from_timestamp(1_700_000_000, 0).unwrap(), Instant::now());
    let doc = match roxmltree::Document::parse(&reply.xml) {
        Ok(doc) => doc,
        Err(e) => panic!("HELD answered with malformed XML ({e}):\n{}", reply.xml),
    };
    let root = doc.root_element().tag_name().name();
    match reply.outcome {
        Ok(_) => {
            assert_eq!(root, "locationResponse");
            let presence = doc.root_element().children().find(|n| n.has_tag_name("presence")).expect("a PIDF-LO");
            let pidf = &reply.xml[presence.range()];
            let loc = parse_pidf_lo(pidf.as_bytes()).expect("the PIDF-LO served reads back");
            assert!(loc.warnings.is_empty(), "{:?}", loc.warnings);
        }
        Err(_) => assert_eq!(root, "error"),
    }
});
