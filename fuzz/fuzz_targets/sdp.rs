//! An SDP offer (RFC 4566, RFC 3264), any bytes: `AudioSdp::parse` and the connection-address
//! scan never panic; an offer it accepts gets an answer from sosdesk (what an anchored call
//! sends) that parses, has as many m= lines as the offer (RFC 3264 §6), and uses the codec
//! picked from the offer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosdesk::media::codec::Codec;
use sosdesk::media::sdp::{AudioSdp, LocalSdp};

fn m_lines(sdp: &[u8]) -> usize {
    String::from_utf8_lossy(sdp).lines().filter(|l| l.starts_with("m=")).count()
}

fuzz_target!(|data: &[u8]| {
    let _ = sosdesk::sip::body::sdp_connection_addresses(data);
    let Ok(offer) = AudioSdp::parse(data) else { return };
    let _ = offer.remote();
    for preferred in [None, Some(Codec::Pcmu), Some(Codec::Pcma)] {
        let picked = offer.pick(preferred);
        let mut local = LocalSdp::new("127.0.0.1:20000".parse().unwrap());
        let answer = local.answer(&offer, picked, offer.direction.answer());
        let parsed = match AudioSdp::parse(&answer) {
            Ok(a) => a,
            Err(e) => panic!("sosdesk's answer does not parse: {e}\n{}", String::from_utf8_lossy(&answer)),
        };
        assert_eq!(m_lines(&answer), m_lines(data), "{}", String::from_utf8_lossy(&answer));
        assert_eq!(parsed.codecs.first(), Some(&picked));
        assert_eq!(parsed.direction, offer.direction.answer());
    }
});
