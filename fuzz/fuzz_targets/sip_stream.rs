//! A TCP stream, any bytes, split into reads at arbitrary points: `StreamFramer` never panics,
//! and frames the same messages however the bytes are split (all at once, one byte per read, or
//! reads of the sizes the first byte of the input seeds) — the differential property. A
//! `Fatal` closes the connection, so nothing after it counts.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sosdesk::sip::parse::{StreamFramer, StreamItem};

/// What a stream item says, comparable across framings.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    Message(Vec<u8>),
    Ping,
    Invalid(String),
    Fatal(String),
}

/// Feed `stream` in reads of the sizes `sizes` gives (cycled); returns every item and what was
/// left in the buffer at the end (when no `Fatal` came).
fn frame(stream: &[u8], mut sizes: impl FnMut() -> usize) -> (Vec<Framed>, Option<Vec<u8>>) {
    let mut framer = StreamFramer::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = sizes().clamp(1, stream.len() - at);
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        loop {
            match framer.next(&mut buf) {
                StreamItem::Incomplete => break,
                StreamItem::Message(m) => out.push(Framed::Message(m.to_bytes())),
                StreamItem::Ping => out.push(Framed::Ping),
                StreamItem::Invalid(r) => out.push(Framed::Invalid(r.reason)),
                StreamItem::Fatal(r) => {
                    out.push(Framed::Fatal(r.reason));
                    return (out, None);
                }
            }
        }
    }
    (out, Some(buf.to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let whole = frame(stream, || usize::MAX);
    let bytewise = frame(stream, || 1);
    assert_eq!(whole, bytewise, "one read vs one byte per read");
    // Reads of 1..=64 bytes from a small xorshift seeded by the first byte.
    let mut x = u32::from(seed) | 0x100;
    let chunked = frame(stream, || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 64) as usize + 1
    });
    assert_eq!(whole, chunked, "one read vs reads of seeded sizes");
});
