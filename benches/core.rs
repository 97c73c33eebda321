//! In-process benchmarks of the hot path, without sockets: parsing an emergency INVITE, and the
//! engine's work from "INVITE arrived" to "outbound INVITE (with PIDF-LO) ready to send", without
//! and with the notification IM (issue 6) built and queued behind it.
//! The wire benchmark (sipp + tcpdump) is bench/sipp-load.sh. Results: BENCHMARKS.md.
//!
//!   cargo bench --bench core

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use sosdesk::clock::Now;
use sosdesk::config::Config;
use sosdesk::routing::{Engine, LocalEndpoint, Output};
use sosdesk::sip::parse::parse_datagram;
use sosdesk::sip::transaction::{Peer, Transport};

fn invite(n: u64) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:9911@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{n}\r\n\
From: \"Alice Example\" <sip:1001@127.0.0.1:5062>;tag=t{n}\r\nTo: <sip:9911@127.0.0.1:5060>\r\nCall-ID: bench-{n}@127.0.0.1\r\n\
CSeq: 1 INVITE\r\nContact: <sip:1001@127.0.0.1:5062>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// The lab's engine; `notify`: with the policy's notification IM (a desk phone and a group with
/// nobody registered), else without.
fn engine(notify: bool) -> Engine {
    let mut text = include_str!("../examples/lab.toml").replace("path = \"../sosdesk-lab.db\"", "path = \"bench.db\"");
    if !notify {
        text = text.lines().filter(|l| !l.starts_with("notification_uris")).collect::<Vec<_>>().join("\n");
    }
    let cfg = Config::from_toml(&text, Path::new("lab.toml")).expect("lab config");
    let local =
        LocalEndpoint { host: "127.0.0.1".into(), udp: Some("127.0.0.1:5060".parse().unwrap()), tcp: None, tls: None };
    Engine::new(&cfg, local, Now::read())
}

fn bench(c: &mut Criterion) {
    let raw = invite(1);
    c.bench_function("parse emergency INVITE (datagram)", |b| b.iter(|| parse_datagram(black_box(&raw)).unwrap()));

    let peer = Peer { transport: Transport::Udp, addr: "127.0.0.1:5062".parse().unwrap() };
    let mut n = 0u64;
    // The outbound INVITE is handed out before the notification IM is built (`Engine::poll_output`
    // builds it only once the bytes before it are drained), so the first two stop at the
    // outbound INVITE, without and with notifications configured, and the third drains the
    // whole way to the MESSAGE.
    for (name, notify, deferred) in [
        ("engine: INVITE in -> 100 Trying + outbound INVITE with PIDF-LO", false, false),
        ("engine: same, policy with notification URIs (MESSAGE deferred)", true, false),
        ("engine: INVITE in -> outbound INVITE, then notification MESSAGE", true, true),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    (engine(notify), parse_datagram(&invite(n)).unwrap())
                },
                |(mut e, msg)| {
                    e.handle_message(msg, peer, Now::read());
                    let (mut invites, mut messages) = (0, 0);
                    while let Some(o) = e.poll_output() {
                        if let Output::Transmit(t) = o {
                            invites += usize::from(t.bytes.starts_with(b"INVITE "));
                            messages += usize::from(t.bytes.starts_with(b"MESSAGE "));
                            if invites == 1 && !deferred {
                                break;
                            }
                        }
                    }
                    assert_eq!((invites, messages), (1, usize::from(deferred)));
                    e
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
