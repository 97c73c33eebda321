//! A UDP datagram, any bytes: `parse_datagram` never panics; a message it accepts serialises
//! (`to_bytes`, what sosdesk relays) into one that parses back the same, whose header lines hold
//! no stray CR or LF (which another parser could take for the end of a line: header injection);
//! the 400/505 it answers a malformed request with is a response to the request's Via, with the
//! same clean lines. (It copies the request's From, To, Call-ID and CSeq as they are, missing or
//! malformed, as RFC 4475 §3.3.10 asks for a request lacking them: so it need not parse.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosdesk::sip::parse::parse_datagram;
use sosdesk::sip::Message;

/// The header fields without Content-Length (`to_bytes` writes its own).
fn fields(m: &Message) -> Vec<(&str, &str)> {
    m.headers.iter().filter(|h| h.name != "Content-Length").map(|h| (h.name.as_str(), h.value.as_str())).collect()
}

/// The header section is lines ending in CRLF, with no other CR or LF in them.
fn assert_clean_lines(bytes: &[u8]) {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a header section") + 2;
    for (i, &b) in bytes[..end].iter().enumerate() {
        let ok = match b {
            b'\r' => bytes.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && bytes[i - 1] == b'\r',
            _ => true,
        };
        assert!(ok, "a stray CR or LF at byte {i}:\n{}", String::from_utf8_lossy(bytes));
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_datagram(data) {
        Ok(m) => {
            let bytes = m.to_bytes();
            assert_clean_lines(&bytes);
            assert_eq!(bytes.len(), m.wire_len(), "wire_len disagrees with to_bytes");
            let again = match parse_datagram(&bytes) {
                Ok(again) => again,
                Err(rej) => panic!("a parsed message does not parse once serialised: {}", rej.reason),
            };
            assert_eq!(again.start, m.start);
            assert_eq!(fields(&again), fields(&m));
            assert_eq!(again.body, m.body);
        }
        Err(rej) => {
            if let Some(reply) = rej.reply {
                assert!(reply.status().is_some(), "the reply is not a response");
                assert!(reply.header("Via").is_some(), "the reply has no Via to go back by");
                assert_clean_lines(&reply.to_bytes());
            }
        }
    }
});
