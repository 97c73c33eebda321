//! The Location Information Service in the running core: an import while it runs reaches the
//! wiremap; HELD answers over HTTP; a call without a PIDF-LO goes out with the ERL of where the
//! caller is (wiremap, else what HELD last told the device).

use crate::support;

use std::time::{Duration, Instant};

use sosdesk::location::LocationSource;
use support::lab::{pidf_part, repo, Lab};
use support::xmllint::validate_pidf_lo;

/// `sosdesk lis import` into the running lab's store, then wait until the core's wiremap has
/// picked it up (it polls the store's generation; this polls the core, with a deadline).
fn import(lab: &Lab, file: &std::path::Path, kind: &str) {
    let before = lab.core.as_ref().unwrap().wiremap().load().len();
    let out = lab.cli_store(&["lis", "import", file.to_str().unwrap(), "--kind", kind]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.core.as_ref().unwrap().wiremap().load().len() == before {
        assert!(Instant::now() < deadline, "the running core did not load the import");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// POST a HELD request; the response body.
fn held(port: u16, body: &str) -> String {
    let resp = support::lab::post_held(port, body);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

#[test]
fn a_call_without_pidf_lo_gets_the_erl_of_its_subnet_with_floor_and_room() {
    let mut lab = Lab::start();
    let csv = lab.dir.path().join("subnets.csv");
    // 127.0.0.2 is in no configured site: only the imported wiremap knows where it is.
    std::fs::write(
        &csv,
        "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country,Floor,Room\n\
127.0.0.2/32,Lab desk,East wing,Litware; 425-555-0100,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,301\n",
    )
    .unwrap();
    import(&lab, &csv, "subnets");

    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.2", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    let pidf = pidf_part(&p.received_request("INVITE"));
    validate_pidf_lo(&pidf).unwrap();
    for text in [
        "<ca:HNO>1234</ca:HNO>",
        "<ca:RD>163rd</ca:RD>",
        "<ca:A3>Redmond</ca:A3>",
        "<ca:FLR>3</ca:FLR>",
        "<ca:ROOM>301</ca:ROOM>",
        "<ca:LOC>East wing</ca:LOC>",
    ] {
        assert!(pidf.contains(text), "{text} missing from\n{pidf}");
    }
    lab.stop();
    let ev = &lab.audit_events()[0];
    assert_eq!(ev.location.source, LocationSource::Wiremap);
    assert_eq!(ev.location.erl.as_ref().unwrap().elins, vec!["4255550100".to_string()]);
    lab.assert_audit_verifies();
}

#[test]
fn held_answers_a_device_and_its_call_uses_that_location() {
    let mut lab = Lab::start();
    import(&lab, &repo().join("tests/fixtures/lis/waps.csv"), "waps");
    let held_port = lab.core.as_ref().unwrap().held.expect("HELD is on in the lab").port();

    // A laptop at 127.0.0.5 (in no subnet) asks for its location, naming its access point.
    let request = r#"<locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held" responseTime="emergencyRouting">
  <locationType exact="false">civic</locationType>
  <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id" xmlns:att="urn:x-sosdesk:params:xml:ns:held:attachment">
    <ip v="4">127.0.0.5</ip>
    <att:bssid>0A-23-CD-16-AA-2E</att:bssid>
  </device>
</locationRequest>"#;
    let answer = held(held_port, request);
    assert!(answer.contains("<locationResponse"), "{answer}");
    assert!(answer.contains("<ca:HNO>2345</ca:HNO>") && answer.contains("<ca:A3>Bellevue</ca:A3>"), "{answer}");

    // An unknown device: HELD's locationUnknown.
    let unknown =
        held(held_port, &request.replace("127.0.0.5", "127.0.0.9").replace("0A-23-CD-16-AA-2E", "02-00-00-00-00-09"));
    assert!(unknown.contains("code=\"locationUnknown\""), "{unknown}");

    // Then it dials 911 without a PIDF-LO: the wiremap has nothing for 127.0.0.5, HELD did.
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.5", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    let pidf = pidf_part(&p.received_request("INVITE"));
    assert!(pidf.contains("<ca:HNO>2345</ca:HNO>") && pidf.contains("<ca:A3>Bellevue</ca:A3>"), "{pidf}");
    lab.stop();
    assert_eq!(lab.audit_events()[0].location.source, LocationSource::HeldCached);
    lab.assert_audit_verifies();
}
