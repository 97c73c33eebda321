//! Digits a called party presses, as they arrive: RFC 4733 telephone events in the RTP stream,
//! and the SIP INFO bodies some phones send instead (`application/dtmf-relay`,
//! `application/dtmf`). Sans-I/O: the voice alert channel (`crate::reach::voice`) hands in what
//! it received and asks whether a digit was pressed.

/// The digit of an RFC 4733 DTMF event code (§3.2: 0–9, `*` 10, `#` 11, A–D 12–15).
fn digit_of_event(code: u8) -> Option<char> {
    Some(match code {
        0..=9 => (b'0' + code) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + code - 12) as char,
        _ => return None,
    })
}

/// One telephone-event payload (RFC 4733 §2.3): event, end bit, volume, duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

impl TelephoneEvent {
    /// `None` for a payload shorter than the 4 bytes of §2.3 (extra bytes — redundant blocks
    /// of RFC 2198 are not negotiated here — are ignored).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let [event, flags, d0, d1, ..] = *payload else { return None };
        Some(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }
}

/// Key presses from a stream of telephone-event packets. Every packet of one event carries the
/// event's start as its RTP timestamp (RFC 4733 §2.5.1.1), its updates repeat it, and its end
/// packet is sent three times (§2.5.1.4): a press is reported once, at the first packet seen of
/// a new (timestamp, event) — the start, an update, or only the end packets when the others
/// were lost — and every later packet of it is a duplicate.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    last: Option<(u32, u8)>,
}

impl DtmfReceiver {
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// A telephone-event payload received with RTP timestamp `ts`: the digit when it is a new
    /// press, `None` for a duplicate, a non-DTMF event (tones, §3.2 codes above 15) or junk.
    pub fn on_packet(&mut self, ts: u32, payload: &[u8]) -> Option<char> {
        let ev = TelephoneEvent::parse(payload)?;
        let digit = digit_of_event(ev.event)?;
        if self.last == Some((ts, ev.event)) {
            return None;
        }
        self.last = Some((ts, ev.event));
        Some(digit)
    }
}

/// The digit a SIP INFO carries, for phones that send DTMF in signalling instead of RTP:
/// `application/dtmf-relay` (`Signal=1` on a line of its own, the de-facto format of Cisco and
/// most PBXs) or `application/dtmf` (the digit alone). `None` for anything else.
pub fn digit_of_info(content_type: &str, body: &[u8]) -> Option<char> {
    let body = std::str::from_utf8(body).ok()?;
    let one = |s: &str| -> Option<char> {
        let s = s.trim();
        let mut chars = s.chars();
        let c = chars.next()?.to_ascii_uppercase();
        (chars.next().is_none() && (c.is_ascii_digit() || "*#ABCD".contains(c))).then_some(c)
    };
    match content_type.trim().to_ascii_lowercase().as_str() {
        "application/dtmf-relay" => body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            if k.trim().eq_ignore_ascii_case("signal") {
                one(v)
            } else {
                None
            }
        }),
        "application/dtmf" => one(body),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn a_press_is_reported_once_whatever_packets_of_it_arrive() {
        let mut r = DtmfReceiver::new();
        // Digit 1 at ts 8000: start, two updates, three end packets (RFC 4733 §2.5.1).
        assert_eq!(r.on_packet(8000, &payload(1, false, 160)), Some('1'));
        for d in [320, 480] {
            assert_eq!(r.on_packet(8000, &payload(1, false, d)), None, "an update is the same press");
        }
        for _ in 0..3 {
            assert_eq!(r.on_packet(8000, &payload(1, true, 640)), None, "the end packets are the same press");
        }
        // The same digit pressed again: a new timestamp, a new press.
        assert_eq!(r.on_packet(16000, &payload(1, false, 160)), Some('1'));
        // A press whose start and updates were lost: its end packets report it, once.
        assert_eq!(r.on_packet(24000, &payload(11, true, 800)), Some('#'));
        assert_eq!(r.on_packet(24000, &payload(11, true, 800)), None);
        assert_eq!(r.on_packet(32000, &payload(10, false, 160)), Some('*'));
        assert_eq!(r.on_packet(40000, &payload(15, false, 160)), Some('D'));
    }

    #[test]
    fn tones_and_junk_are_no_digits() {
        let mut r = DtmfReceiver::new();
        assert_eq!(r.on_packet(1, &payload(32, false, 160)), None, "a fax tone (§3.2 code 32) is no key");
        assert_eq!(r.on_packet(2, &[1, 0x80]), None, "too short");
        assert_eq!(r.on_packet(3, &[]), None);
        let ev = TelephoneEvent::parse(&[5, 0x80 | 0x0a, 0x03, 0x20]).unwrap();
        assert_eq!(ev, TelephoneEvent { event: 5, end: true, volume: 10, duration: 800 });
    }

    #[test]
    fn info_bodies_of_both_kinds() {
        assert_eq!(digit_of_info("application/dtmf-relay", b"Signal=1\r\nDuration=160\r\n"), Some('1'));
        assert_eq!(digit_of_info("Application/DTMF-Relay", b"signal = 5\nduration=100"), Some('5'));
        assert_eq!(digit_of_info("application/dtmf", b"1\r\n"), Some('1'));
        assert_eq!(digit_of_info("application/dtmf", b"#"), Some('#'));
        assert_eq!(digit_of_info("application/dtmf-relay", b"Duration=160"), None);
        assert_eq!(digit_of_info("application/dtmf-relay", b"Signal=12"), None, "one key, not two");
        assert_eq!(digit_of_info("text/plain", b"1"), None);
        assert_eq!(digit_of_info("application/dtmf", &[0xff, 0xfe]), None);
    }
}
