//! A test party's media: a real UDP socket that talks G.711 RTP (a tone) and keeps every frame
//! it hears, decoded, so a test can tell who hears whom.
//!
//! The party learns where sosdesk wants its RTP from the sipp scenario, which sends one datagram
//! `rtp <ip> <port>` (sosdesk's SDP) to the party's socket; it also follows the source of the
//! RTP it receives (sosdesk sends symmetric RTP from that same port).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtp_types::{RtpPacket, RtpPacketBuilder};
use sosdesk::media::Codec;

pub struct Party {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Heard>>,
}

/// What a party received: (arrival, decoded 8 kHz samples) per packet.
pub struct Heard {
    pub packets: Vec<(Instant, Vec<i16>)>,
    pub sent: usize,
}

impl Party {
    /// A party that, once it knows sosdesk's address, sends a `tone_hz` sine (amplitude 8000)
    /// in 20 ms packets with `codec` (none: silent).
    pub fn start(tone_hz: Option<f64>, codec: Codec) -> Party {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind party socket");
        sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || run(sock, tone_hz, codec, stop2));
        Party { port, stop, thread: Some(thread) }
    }

    pub fn finish(mut self) -> Heard {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("party thread")
    }
}

fn run(sock: UdpSocket, tone_hz: Option<f64>, codec: Codec, stop: Arc<AtomicBool>) -> Heard {
    let mut peer: Option<SocketAddr> = None;
    let mut heard = Heard { packets: Vec::new(), sent: 0 };
    let mut buf = [0u8; 2048];
    let mut next_send = Instant::now();
    let (mut seq, mut ts, mut phase) = (0u16, 0u32, 0f64);
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let data = &buf[..n];
            if let Some(ctl) = std::str::from_utf8(data).ok().and_then(|t| t.trim().strip_prefix("rtp ")) {
                let mut f = ctl.split_whitespace();
                if let (Some(ip), Some(port)) = (f.next(), f.next()) {
                    peer = format!("{ip}:{port}").parse().ok();
                    next_send = Instant::now();
                }
            } else if let Ok(p) = RtpPacket::parse(data) {
                let c = match p.payload_type() {
                    0 => Some(Codec::Pcmu),
                    8 => Some(Codec::Pcma),
                    _ => None,
                };
                if let Some(c) = c {
                    let mut s = Vec::with_capacity(160);
                    c.decode_into(p.payload(), &mut s);
                    heard.packets.push((Instant::now(), s));
                    peer.get_or_insert(from);
                }
            }
        }
        if let (Some(to), Some(hz)) = (peer, tone_hz) {
            // Paced by the clock, like a phone's 20 ms packetisation.
            while Instant::now() >= next_send {
                let samples: Vec<i16> = (0..160)
                    .map(|_| {
                        phase += 2.0 * std::f64::consts::PI * hz / 8000.0;
                        (phase.sin() * 8000.0) as i16
                    })
                    .collect();
                let mut payload = Vec::with_capacity(160);
                codec.encode_into(&samples, &mut payload);
                let pkt = RtpPacketBuilder::<&[u8], &[u8]>::new()
                    .payload_type(codec.payload_type())
                    .sequence_number(seq)
                    .timestamp(ts)
                    .ssrc(0x5e5e_0000 | tone_hz.map(|h| h as u32).unwrap_or(0))
                    .payload(payload.as_slice())
                    .write_vec_unchecked();
                let _ = sock.send_to(&pkt, to);
                heard.sent += 1;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
                next_send += Duration::from_millis(20);
            }
        }
    }
    heard
}

/// Amplitude of `hz` in `samples` (Goertzel; a sine of amplitude A gives about A).
pub fn tone_level(samples: &[i16], hz: f64) -> f64 {
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / n
}

impl Heard {
    /// The loudest level of `hz` over 200 ms windows of what arrived (optionally only after
    /// `after`).
    pub fn level(&self, hz: f64, after: Option<Instant>) -> f64 {
        let samples: Vec<i16> = self
            .packets
            .iter()
            .filter(|(t, _)| after.is_none_or(|a| *t >= a))
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        samples.chunks(1600).filter(|c| c.len() == 1600).map(|c| tone_level(c, hz)).fold(0.0, f64::max)
    }

    /// Heard clearly: the tone at more than a quarter of its sent level somewhere.
    pub fn hears(&self, hz: f64) -> bool {
        self.level(hz, None) > 2000.0
    }

    pub fn hears_after(&self, hz: f64, after: Instant) -> bool {
        self.level(hz, Some(after)) > 2000.0
    }

    /// Nothing of the tone: below 1% of its level everywhere.
    pub fn silent_on(&self, hz: f64) -> bool {
        self.level(hz, None) < 80.0
    }
}
