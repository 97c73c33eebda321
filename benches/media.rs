//! Media costs (issue 5): the work of one anchored call per 20 ms, in process, and the latency
//! the relay adds between two real UDP sockets on loopback.
//!
//! cargo bench --bench media

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use rtp_types::RtpPacketBuilder;
use sosdesk::media::runner::{self, MediaCommand, RtpPorts};
use sosdesk::media::session::{LegParams, MediaSession, Role, TICK};
use sosdesk::media::{Codec, FRAME};

fn params(port: u16, codec: Codec, heard: bool) -> LegParams {
    LegParams {
        remote: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        codec,
        payload_type: codec.payload_type(),
        telephone_event: Some(101),
        party_sends: true,
        party_receives: true,
        heard,
    }
}

fn packet(codec: Codec, seq: u16, hz: f64) -> Vec<u8> {
    let samples: Vec<i16> =
        (0..FRAME).map(|i| ((i as f64 * hz / 8000.0 * std::f64::consts::TAU).sin() * 8000.0) as i16).collect();
    let mut payload = Vec::new();
    codec.encode_into(&samples, &mut payload);
    let pkt = RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(codec.payload_type())
        .sequence_number(seq)
        .timestamp(seq as u32 * 160)
        .ssrc(7)
        .payload(payload.as_slice())
        .write_vec_unchecked();
    pkt
}

fn conference(c: &mut Criterion) {
    // One 20 ms period of a 3-leg conference (caller PCMU, operator PCMA, talking desk PCMA):
    // three packets in (parse, decode, buffer), one tick (mix, three encodes, three packets out),
    // and the recording frame.
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, true);
    s.add_leg(1, Role::Caller, params(4000, Codec::Pcmu, true));
    s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcma, true));
    s.add_leg(3, Role::Desk, params(6000, Codec::Pcma, true));
    let (a, b, d) = (packet(Codec::Pcmu, 1, 500.0), packet(Codec::Pcma, 1, 1100.0), packet(Codec::Pcma, 1, 1700.0));
    let (fa, fb, fd) =
        ("127.0.0.1:4000".parse().unwrap(), "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:6000".parse().unwrap());
    let mut now = t0;
    c.bench_function("3-leg conference, one 20 ms period", |bench| {
        bench.iter(|| {
            s.on_packet(1, fa, &a, now);
            s.on_packet(2, fb, &b, now);
            s.on_packet(3, fd, &d, now);
            now += TICK;
            s.on_timeout(now);
            while s.poll_transmit().is_some() {}
            while s.poll_recording().is_some() {}
        })
    });
    // Two-party relay with transcoding: one packet each way.
    let mut s = MediaSession::new(t0, true);
    s.add_leg(1, Role::Caller, params(4000, Codec::Pcmu, true));
    s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcma, true));
    let mut now = t0;
    c.bench_function("2-party relay (transcoding), one 20 ms period", |bench| {
        bench.iter(|| {
            s.on_packet(1, fa, &a, now);
            s.on_packet(2, fb, &b, now);
            now += TICK;
            s.on_timeout(now);
            while s.poll_transmit().is_some() {}
            while s.poll_recording().is_some() {}
        })
    });
}

/// Latency the relay adds: a caller socket sends to sosdesk's caller leg, the far-end socket
/// receives the relayed packet; one packet every 20 ms, 1,000 packets, over the real media task.
fn relay_latency() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let ports = RtpPorts::new([127, 0, 0, 1].into(), [127, 0, 0, 1].into(), 39000, 39998);
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    let far = UdpSocket::bind("127.0.0.1:0").unwrap();
    far.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let (leg_a, addr_a) = ports.open().unwrap();
    let (leg_b, _) = ports.open().unwrap();
    let mut lat = Vec::new();
    rt.block_on(async {
        let (tx, task) = runner::spawn("bench".into(), None);
        let cp = caller.local_addr().unwrap().port();
        let fp = far.local_addr().unwrap().port();
        tx.send(MediaCommand::AddLeg {
            leg: 1,
            role: Role::Caller,
            params: params(cp, Codec::Pcmu, true),
            socket: leg_a,
        })
        .unwrap();
        tx.send(MediaCommand::AddLeg {
            leg: 2,
            role: Role::FarEnd,
            params: params(fp, Codec::Pcma, true),
            socket: leg_b,
        })
        .unwrap();
        let far2 = far.try_clone().unwrap();
        let caller2 = caller.try_clone().unwrap();
        lat = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 512];
            let mut out = Vec::new();
            for i in 0..1000u16 {
                let p = packet(Codec::Pcmu, i, 500.0);
                let t = Instant::now();
                caller2.send_to(&p, addr_a).unwrap();
                if far2.recv_from(&mut buf).is_ok() {
                    out.push(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            out
        })
        .await
        .unwrap();
        tx.send(MediaCommand::Close).unwrap();
        let _ = task.await;
    });
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "relay latency over loopback ({} packets): p50 {:?}  p99 {:?}  max {:?}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.last().unwrap()
    );
}

criterion_group!(benches, conference);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
    relay_latency();
}
