//! RFC 4475 torture messages at the parser: which are accepted, which answered with which status,
//! which dropped. The same messages are sent to the running core in `tests/it/torture_wire.rs`.
//! Expectations follow tests/fixtures/rfc4475/MANIFEST.md; where the RFC allows a liberal reading
//! we take it only when the meaning is unambiguous (see the comments).

use sosdesk::sip::parse::parse_datagram;
use std::path::PathBuf;

#[derive(Debug, PartialEq)]
enum Verdict {
    Accept,
    Reply(u16),
    Drop,
}
use Verdict::*;

const EXPECTED: &[(&str, Verdict)] = &[
    // §3.1.1 valid: a parser MUST accept.
    ("valid/wsinv.dat", Accept),
    ("valid/intmeth.dat", Accept),
    ("valid/esc01.dat", Accept),
    ("valid/escnull.dat", Accept),
    ("valid/esc02.dat", Accept),
    ("valid/lwsdisp.dat", Accept),
    ("valid/longreq.dat", Accept),
    ("valid/dblreq.dat", Accept),
    ("valid/semiuri.dat", Accept),
    ("valid/transports.dat", Accept),
    ("valid/mpart01.dat", Accept),
    ("valid/unreason.dat", Accept),
    ("valid/noreason.dat", Accept),
    // §3.1.2 invalid.
    ("invalid/badinv01.dat", Reply(400)),
    ("invalid/clerr.dat", Reply(400)),
    ("invalid/ncl.dat", Reply(400)),
    ("invalid/scalar02.dat", Reply(400)),
    ("invalid/scalarlg.dat", Drop),
    ("invalid/quotbal.dat", Reply(400)),
    ("invalid/ltgtruri.dat", Reply(400)),
    ("invalid/lwsruri.dat", Reply(400)),
    // Extra SP between, or after, Request-Line elements: liberal reading allowed and unambiguous.
    ("invalid/lwsstart.dat", Accept),
    ("invalid/trws.dat", Accept),
    ("invalid/escruri.dat", Reply(400)),
    // The Date header is not used by sosdesk, so its bad time zone is ignored (§3.1.2.12).
    ("invalid/baddate.dat", Accept),
    ("invalid/regbadct.dat", Reply(400)),
    ("invalid/badaspec.dat", Reply(400)),
    ("invalid/baddn.dat", Reply(400)),
    ("invalid/badvers.dat", Reply(505)),
    ("invalid/mismatch01.dat", Reply(400)),
    // §3.1.2.18 prefers 501, allows 400: the CSeq mismatch is found by the parser first.
    ("invalid/mismatch02.dat", Reply(400)),
    ("invalid/bigcode.dat", Drop),
    // §3.2.1: no magic cookie; sosdesk falls back to RFC 2543 matching rather than refusing.
    ("transaction_semantics/badbranch.dat", Accept),
    // §3.3: parseable; the core answers them (416, 420, 415, 405…) — see torture_wire.rs.
    ("application_semantics/bcast.dat", Accept),
    ("application_semantics/bext01.dat", Accept),
    ("application_semantics/cparam01.dat", Accept),
    ("application_semantics/cparam02.dat", Accept),
    ("application_semantics/insuf.dat", Reply(400)),
    ("application_semantics/invut.dat", Accept),
    ("application_semantics/mcl01.dat", Reply(400)),
    ("application_semantics/multi01.dat", Reply(400)),
    ("application_semantics/novelsc.dat", Accept),
    ("application_semantics/regaut01.dat", Accept),
    ("application_semantics/regescrt.dat", Accept),
    ("application_semantics/sdp01.dat", Accept),
    ("application_semantics/unkscm.dat", Accept),
    ("application_semantics/unksm2.dat", Accept),
    ("application_semantics/zeromf.dat", Accept),
    ("backward_compat/inv2543.dat", Accept),
];

fn fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_torture_message_gets_the_expected_verdict() {
    assert_eq!(EXPECTED.len(), 49, "RFC 4475 has 49 referenced messages");
    let mut wrong = Vec::new();
    for (file, want) in EXPECTED {
        let got = match parse_datagram(&fixture(file)) {
            Ok(_) => Accept,
            Err(rej) => match rej.reply {
                Some(r) => Reply(r.status().unwrap()),
                None => Drop,
            },
        };
        if &got != want {
            wrong.push(format!("{file}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn valid_messages_parse_to_the_right_values() {
    let m = parse_datagram(&fixture("valid/semiuri.dat")).unwrap();
    let uri = sosdesk::sip::Uri::parse(m.request_uri().unwrap()).unwrap();
    assert_eq!(uri.user.as_deref(), Some("user;par=u%40example.net"));

    // Two distinct contacts; the %00 escape does not truncate (§3.1.1.4).
    let m = parse_datagram(&fixture("valid/escnull.dat")).unwrap();
    assert_eq!(m.header_values("Contact").len(), 2);

    // Extra octets after Content-Length are ignored, not parsed as a second message (§3.1.1.8).
    let m = parse_datagram(&fixture("valid/dblreq.dat")).unwrap();
    assert_eq!(m.method(), "REGISTER");
    assert!(m.body.is_empty());

    // The binary multipart body is framed by Content-Length, NUL bytes included (§3.1.1.11).
    let raw = fixture("valid/mpart01.dat");
    let m = parse_datagram(&raw).unwrap();
    let cl: usize = m.header("Content-Length").unwrap().parse().unwrap();
    assert_eq!(m.body.len(), cl);
    assert!(m.body.contains(&0u8));

    // Method names are tokens compared case-sensitively: RE%47IST%45R is not REGISTER (§3.1.1.5).
    let m = parse_datagram(&fixture("valid/esc02.dat")).unwrap();
    assert_eq!(m.method(), "RE%47IST%45R");

    let m = parse_datagram(&fixture("valid/noreason.dat")).unwrap();
    assert_eq!(m.status(), Some(100));

    let m = parse_datagram(&fixture("valid/lwsdisp.dat")).unwrap();
    assert_eq!(m.from().unwrap().display.as_deref(), Some("caller"));
}
