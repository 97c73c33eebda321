//! The media of one anchored call, sans-I/O: RTP datagrams and the current time go in, RTP
//! datagrams to send and recording frames come out.
//!
//! - **Two parties** (caller and far end, no desk): each packet is relayed at once, re-encoded
//!   when the legs use different G.711 laws, with sosdesk's own SSRC, sequence and timestamp per
//!   outgoing stream (RFC 3550 §5.1, §8: a relay that rewrites media is a new source). No
//!   buffering: the relay adds only the time to handle one packet.
//! - **A conference** (a desk joined, or the caller left with a desk still on): every leg gets the
//!   [`Mixer`]'s output every 20 ms.
//! - **Telephone events** (RFC 4733) are passed between caller and far end with the payload type
//!   each negotiated, keeping one timestamp per event as §2.5.1.1 requires.
//! - **Symmetric RTP** (RFC 4961): a leg sends to the address its packets come from, so a caller
//!   behind NAT whose SDP names a private address is still reached. The first source of valid RTP
//!   (it parses, with a negotiated payload type) is latched and packets from anyone else are
//!   dropped (no hijacking a stream mid-call). Packets from the SDP address are always taken; a
//!   new source is latched only after [`RELATCH_AFTER`] without a packet from the latched one (a
//!   NAT that rebinds mid-call), so a stray datagram cannot take a leg over.
//! - **Recording**: every tick, the caller's frame (left) and the sum of what the others said
//!   (right) are queued for the WAV writer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtp_types::{RtpPacket, RtpPacketBuilder};

use super::codec::{Codec, FRAME};
use super::mixer::{Frame, LegId, Mixer};

pub const TICK: Duration = Duration::from_millis(20);
/// Silence from the latched source after which another source may take over the leg.
pub const RELATCH_AFTER: Duration = Duration::from_secs(1);

/// Who a leg is: decides the recording channel and who gets telephone events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Caller,
    FarEnd,
    Desk,
}

/// What offer/answer settled for a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegParams {
    /// Where the party asked for RTP (None: on hold, or not known yet).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    /// The party sends media to sosdesk (its direction is sendrecv or sendonly).
    pub party_sends: bool,
    /// The party takes media from sosdesk.
    pub party_receives: bool,
    /// The party's audio goes to the others (false for a listening or muted desk).
    pub heard: bool,
}

/// One RTP packet to send from a leg's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub leg: LegId,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Counters per call (logs, benchmarks).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaStats {
    pub received: u64,
    pub sent: u64,
    /// From an address other than the latched one, from a leg that must not send, not RTP, or
    /// a payload type nobody negotiated.
    pub dropped: u64,
}

#[derive(Debug)]
struct OutStream {
    ssrc: u32,
    seq: u16,
    /// Timestamp of the next audio sample to send.
    next_ts: u32,
    /// Relaying from (source leg, its SSRC, offset added to its timestamps). A new source or a
    /// new SSRC from the same leg (early media from one device, the answer from another) gets a
    /// new offset and a marker: our stream never jumps (RFC 3550 §5.1).
    relay: Option<(LegId, u32, u32)>,
    /// Set the marker on the next audio packet (a new talkspurt or a mode change).
    marker: bool,
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    role: Role,
    params: LegParams,
    latched: Option<SocketAddr>,
    /// When the last valid packet from the latched source arrived.
    latched_seen: Option<Instant>,
    out: OutStream,
}

impl Leg {
    /// Symmetric RTP's latch (RFC 4961): whether a valid packet from `from` belongs to this leg,
    /// latching to it when it does.
    fn accept_source(&mut self, leg: LegId, from: SocketAddr, now: Instant) -> bool {
        let silent = self.latched_seen.is_none_or(|t| now.saturating_duration_since(t) >= RELATCH_AFTER);
        let take = match self.latched {
            Some(a) if a == from => true,
            // The address the party's own SDP gave, or the latched source gone quiet.
            _ if self.params.remote == Some(from) || self.latched.is_none() || silent => {
                if self.latched.is_some_and(|a| a != from) || self.params.remote != Some(from) {
                    tracing::debug!(leg, %from, sdp = ?self.params.remote, "RTP latched to its source (symmetric RTP)");
                }
                self.latched = Some(from);
                true
            }
            _ => false,
        };
        if take {
            self.latched_seen = Some(now);
        }
        take
    }

    fn destination(&self) -> Option<SocketAddr> {
        if !self.params.party_receives {
            return None;
        }
        self.latched.or(self.params.remote)
    }
}

pub struct MediaSession {
    legs: Vec<Leg>,
    mixer: Mixer,
    next_tick: Instant,
    transmit: VecDeque<Datagram>,
    recording: Option<VecDeque<(Frame, Frame)>>,
    samples: Vec<i16>,
    pub stats: MediaStats,
}

impl MediaSession {
    /// `record`: queue recording frames (see [`MediaSession::poll_recording`]).
    pub fn new(now: Instant, record: bool) -> MediaSession {
        MediaSession {
            legs: Vec::new(),
            mixer: Mixer::default(),
            next_tick: now + TICK,
            transmit: VecDeque::new(),
            recording: record.then(VecDeque::new),
            samples: Vec::with_capacity(FRAME * 2),
            stats: MediaStats::default(),
        }
    }

    pub fn add_leg(&mut self, id: LegId, role: Role, params: LegParams) {
        if self.legs.iter().any(|l| l.id == id) {
            self.update_leg(id, params);
            return;
        }
        self.mixer.add(id, params.heard && params.party_sends);
        self.legs.push(Leg {
            id,
            role,
            params,
            latched: None,
            latched_seen: None,
            out: OutStream {
                ssrc: rand::random(),
                seq: rand::random(),
                next_ts: rand::random(),
                relay: None,
                marker: true,
            },
        });
        self.mode_changed();
    }

    /// New offer/answer for a leg (re-INVITE, hold, mute, listen ↔ talk).
    pub fn update_leg(&mut self, id: LegId, params: LegParams) {
        let Some(l) = self.legs.iter_mut().find(|l| l.id == id) else { return };
        if l.params.remote != params.remote {
            // A new address in SDP: latch afresh to whatever comes from the party now.
            l.latched = None;
            l.latched_seen = None;
        }
        l.params = params;
        self.mixer.set_heard(id, params.heard && params.party_sends);
    }

    pub fn remove_leg(&mut self, id: LegId) {
        self.legs.retain(|l| l.id != id);
        self.mixer.remove(id);
        self.mode_changed();
    }

    /// The address a leg sends to now (latched or from SDP).
    pub fn destination(&self, id: LegId) -> Option<SocketAddr> {
        self.legs.iter().find(|l| l.id == id).and_then(|l| l.destination())
    }

    /// Exactly caller and far end: packets are relayed one by one, unmixed.
    fn direct(&self) -> bool {
        self.legs.len() == 2
            && self.legs.iter().any(|l| l.role == Role::Caller)
            && self.legs.iter().any(|l| l.role == Role::FarEnd)
    }

    fn mode_changed(&mut self) {
        for l in &mut self.legs {
            l.out.relay = None;
            l.out.marker = true;
        }
    }

    pub fn next_timeout(&self) -> Instant {
        self.next_tick
    }

    pub fn poll_transmit(&mut self) -> Option<Datagram> {
        self.transmit.pop_front()
    }

    /// One recorded 20 ms frame: (caller, everyone else).
    pub fn poll_recording(&mut self) -> Option<(Frame, Frame)> {
        self.recording.as_mut().and_then(|r| r.pop_front())
    }

    /// A datagram arrived on `leg`'s socket from `from` at `now`.
    pub fn on_packet(&mut self, leg: LegId, from: SocketAddr, data: &[u8], now: Instant) {
        self.stats.received += 1;
        let Some(idx) = self.legs.iter().position(|l| l.id == leg) else {
            self.stats.dropped += 1;
            return;
        };
        // Only valid RTP from a party that may send, with a payload type it negotiated, counts:
        // anything else is dropped before it can latch the leg.
        let Ok(pkt) = RtpPacket::parse(data) else {
            self.stats.dropped += 1;
            return;
        };
        let p = self.legs[idx].params;
        let pt = pkt.payload_type();
        // The negotiated payload type, or either static G.711 one: a party that offered both
        // laws and sends the other one is still understood (be liberal in what you accept).
        let codec = if pt == p.payload_type {
            Some(p.codec)
        } else if Some(pt) == p.telephone_event {
            None
        } else {
            match pt {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            }
        };
        let event = codec.is_none() && Some(pt) == p.telephone_event;
        if !p.party_sends || (codec.is_none() && !event) || !self.legs[idx].accept_source(leg, from, now) {
            self.stats.dropped += 1;
            return;
        }
        if let Some(codec) = codec {
            self.samples.clear();
            codec.decode_into(pkt.payload(), &mut self.samples);
            self.mixer.push(leg, &self.samples);
            if self.direct() {
                if let Some(to) = self.legs.iter().position(|l| l.id != leg) {
                    self.relay_audio(leg, codec, &pkt, to);
                }
            }
        } else if self.legs[idx].role != Role::Desk {
            for to in 0..self.legs.len() {
                if self.legs[to].id != leg && self.legs[to].role != Role::Desk {
                    self.relay_event(leg, &pkt, to);
                }
            }
        } else {
            self.stats.dropped += 1;
        }
    }

    /// Our timestamp for `pkt`'s, mapped with the offset of its source and SSRC.
    fn map_timestamp(out: &mut OutStream, from: LegId, pkt: &RtpPacket<'_>) -> u32 {
        let (in_ts, ssrc) = (pkt.timestamp(), pkt.ssrc());
        match out.relay {
            Some((src, s, off)) if src == from && s == ssrc => in_ts.wrapping_add(off),
            _ => {
                out.relay = Some((from, ssrc, out.next_ts.wrapping_sub(in_ts)));
                out.marker = true;
                out.next_ts
            }
        }
    }

    fn relay_audio(&mut self, from: LegId, codec: Codec, pkt: &RtpPacket<'_>, to: usize) {
        let dest = &mut self.legs[to];
        let Some(addr) = dest.destination() else { return };
        let ts = Self::map_timestamp(&mut dest.out, from, pkt);
        let mut payload = Vec::with_capacity(pkt.payload_len());
        dest.params.codec.transcode_into(codec, pkt.payload(), &mut payload);
        dest.out.next_ts = ts.wrapping_add(payload.len() as u32);
        let marker = pkt.marker_bit() || std::mem::take(&mut dest.out.marker);
        let bytes = build(dest.params.payload_type, marker, dest.out.seq, ts, dest.out.ssrc, &payload);
        dest.out.seq = dest.out.seq.wrapping_add(1);
        self.transmit.push_back(Datagram { leg: dest.id, to: addr, bytes });
        self.stats.sent += 1;
    }

    fn relay_event(&mut self, from: LegId, pkt: &RtpPacket<'_>, to: usize) {
        let dest = &mut self.legs[to];
        let (Some(addr), Some(te)) = (dest.destination(), dest.params.telephone_event) else { return };
        // §2.5.1.1: every packet of one event carries the event's start timestamp; mapped like the
        // audio, two digits in a row keep distinct timestamps (§2.5: that is how a receiver tells
        // them apart).
        let ts = Self::map_timestamp(&mut dest.out, from, pkt);
        let bytes = build(te, pkt.marker_bit(), dest.out.seq, ts, dest.out.ssrc, pkt.payload());
        dest.out.seq = dest.out.seq.wrapping_add(1);
        self.transmit.push_back(Datagram { leg: dest.id, to: addr, bytes });
        self.stats.sent += 1;
    }

    /// Run the 20 ms ticks that are due (at most five at once after a stall, so a late wake-up
    /// cannot flood the parties).
    pub fn on_timeout(&mut self, now: Instant) {
        let mut n = 0;
        while self.next_tick <= now {
            if n == 5 {
                self.next_tick = now + TICK;
                break;
            }
            self.tick();
            self.next_tick += TICK;
            n += 1;
        }
    }

    fn tick(&mut self) {
        let tick = self.mixer.tick();
        if !self.direct() {
            let mut payload = Vec::with_capacity(FRAME);
            for (id, frame) in &tick.outputs {
                let Some(dest) = self.legs.iter_mut().find(|l| l.id == *id) else { continue };
                let Some(addr) = dest.destination() else { continue };
                payload.clear();
                dest.params.codec.encode_into(frame, &mut payload);
                let ts = dest.out.next_ts;
                let marker = std::mem::take(&mut dest.out.marker);
                let bytes = build(dest.params.payload_type, marker, dest.out.seq, ts, dest.out.ssrc, &payload);
                dest.out.seq = dest.out.seq.wrapping_add(1);
                dest.out.next_ts = ts.wrapping_add(FRAME as u32);
                self.transmit.push_back(Datagram { leg: *id, to: addr, bytes });
                self.stats.sent += 1;
            }
        }
        if let Some(rec) = self.recording.as_mut() {
            let mut left = [0i16; FRAME];
            let mut right = [0i32; FRAME];
            for (id, frame) in &tick.inputs {
                let role = self.legs.iter().find(|l| l.id == *id).map(|l| l.role);
                if role == Some(Role::Caller) {
                    left = *frame;
                } else {
                    for (r, s) in right.iter_mut().zip(frame.iter()) {
                        *r += *s as i32;
                    }
                }
            }
            let mut r16 = [0i16; FRAME];
            for (d, s) in r16.iter_mut().zip(right.iter()) {
                *d = (*s).clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            }
            rec.push_back((left, r16));
        }
    }
}

fn build(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(pt)
        .marker_bit(marker)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(ssrc)
        .payload(payload)
        .write_vec_unchecked()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(port: u16, codec: Codec) -> LegParams {
        LegParams {
            remote: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            codec,
            payload_type: codec.payload_type(),
            telephone_event: Some(101),
            party_sends: true,
            party_receives: true,
            heard: true,
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        build(pt, false, seq, ts, 0x1234, payload)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn two_parties_are_relayed_at_once_and_transcoded() {
        let now = Instant::now();
        let mut s = MediaSession::new(now, false);
        s.add_leg(1, Role::Caller, params(4000, Codec::Pcmu));
        s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcma));
        let mut mu = Vec::new();
        Codec::Pcmu.encode_into(&[1000; FRAME], &mut mu);
        s.on_packet(1, addr(4000), &rtp(0, 7, 800, &mu), Instant::now());
        let d = s.poll_transmit().expect("relayed without waiting for a tick");
        assert_eq!((d.leg, d.to), (2, addr(5000)));
        let p = RtpPacket::parse(&d.bytes).unwrap();
        assert_eq!(p.payload_type(), 8);
        let mut back = Vec::new();
        Codec::Pcma.decode_into(p.payload(), &mut back);
        assert!(back.iter().all(|&x| (x - 1000).abs() < 40), "{:?}", &back[..4]);
        // The next packet keeps sequence and timestamp spacing in sosdesk's own stream.
        s.on_packet(1, addr(4000), &rtp(0, 8, 960, &mu), Instant::now());
        let q = s.poll_transmit().unwrap();
        let q = RtpPacket::parse(&q.bytes).unwrap();
        assert_eq!(q.sequence_number(), p.sequence_number().wrapping_add(1));
        assert_eq!(q.timestamp(), p.timestamp().wrapping_add(160));
        assert_ne!(q.ssrc(), 0x1234, "sosdesk's own SSRC");
    }

    #[test]
    fn symmetric_rtp_latches_to_the_source_and_drops_intruders() {
        let mut s = MediaSession::new(Instant::now(), false);
        let mut caller = params(4000, Codec::Pcmu);
        caller.remote = Some("10.9.9.9:4000".parse().unwrap()); // private address behind NAT
        s.add_leg(1, Role::Caller, caller);
        s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcmu));
        s.on_packet(1, addr(6000), &rtp(0, 1, 0, &[0xff; 160]), Instant::now());
        assert_eq!(s.destination(1), Some(addr(6000)));
        s.poll_transmit();
        s.on_packet(1, addr(6666), &rtp(0, 2, 160, &[0xff; 160]), Instant::now());
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.stats.dropped, 1);
        // Far end audio goes to the NATed caller's real address.
        s.on_packet(2, addr(5000), &rtp(0, 1, 0, &[0xff; 160]), Instant::now());
        assert_eq!(s.poll_transmit().unwrap().to, addr(6000));
    }

    #[test]
    fn a_stray_datagram_cannot_take_a_leg_over() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, false);
        let mut caller = params(4000, Codec::Pcmu);
        caller.remote = Some("10.9.9.9:4000".parse().unwrap());
        s.add_leg(1, Role::Caller, caller);
        s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcmu));
        // Junk, and RTP with a payload type nobody negotiated, before the caller's first packet:
        // neither latches.
        s.on_packet(1, addr(9999), b"scan", t0);
        s.on_packet(1, addr(9998), &rtp(99, 1, 0, &[0; 20]), t0);
        assert_eq!(s.destination(1), Some("10.9.9.9:4000".parse().unwrap()));
        s.on_packet(1, addr(6000), &rtp(0, 1, 0, &[0xff; 160]), t0);
        assert_eq!(s.destination(1), Some(addr(6000)));
        // Another source while the caller keeps talking is dropped...
        let t1 = t0 + Duration::from_millis(500);
        s.on_packet(1, addr(6000), &rtp(0, 2, 160, &[0xff; 160]), t1);
        s.on_packet(1, addr(7000), &rtp(0, 3, 320, &[0xff; 160]), t1);
        assert_eq!(s.destination(1), Some(addr(6000)));
        // ...but after a second of silence from it (a NAT that rebound) the new source is the caller.
        s.on_packet(1, addr(7000), &rtp(0, 4, 480, &[0xff; 160]), t1 + RELATCH_AFTER);
        assert_eq!(s.destination(1), Some(addr(7000)));
        // The address in the caller's own SDP is always taken.
        s.on_packet(1, "10.9.9.9:4000".parse().unwrap(), &rtp(0, 5, 640, &[0xff; 160]), t1 + RELATCH_AFTER);
        assert_eq!(s.destination(1), Some("10.9.9.9:4000".parse().unwrap()));
    }

    #[test]
    fn telephone_events_keep_one_timestamp_per_event_and_the_peer_payload_type() {
        let mut s = MediaSession::new(Instant::now(), false);
        s.add_leg(1, Role::Caller, params(4000, Codec::Pcmu));
        let mut far = params(5000, Codec::Pcmu);
        far.telephone_event = Some(96);
        s.add_leg(2, Role::FarEnd, far);
        for (seq, dur) in [(1u16, 160u16), (2, 320), (3, 480)] {
            let mut ev = vec![5u8, 0x0a];
            ev.extend_from_slice(&dur.to_be_bytes());
            s.on_packet(1, addr(4000), &rtp(101, seq, 8000, &ev), Instant::now());
        }
        let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
        assert_eq!(out.len(), 3);
        let pkts: Vec<_> = out.iter().map(|d| RtpPacket::parse(&d.bytes).unwrap()).collect();
        assert!(pkts.iter().all(|p| p.payload_type() == 96 && p.timestamp() == pkts[0].timestamp()));
        assert_eq!(pkts[2].payload(), &[5, 0x0a, 0x01, 0xe0]);
        // A second digit right after (no audio between): a timestamp of its own, as far from the
        // first as the caller's were.
        s.on_packet(1, addr(4000), &rtp(101, 4, 8800, &[7, 0x0a, 0, 160]), Instant::now());
        let next = s.poll_transmit().unwrap();
        let next = RtpPacket::parse(&next.bytes).unwrap();
        assert_eq!(next.timestamp(), pkts[0].timestamp().wrapping_add(800));
    }

    #[test]
    fn a_new_ssrc_on_a_leg_continues_our_stream_with_a_marker() {
        let mut s = MediaSession::new(Instant::now(), false);
        s.add_leg(1, Role::Caller, params(4000, Codec::Pcmu));
        s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcmu));
        let send = |s: &mut MediaSession, ssrc: u32, seq: u16, ts: u32| {
            let pkt = build(0, false, seq, ts, ssrc, &[0xff; 160]);
            s.on_packet(2, addr(5000), &pkt, Instant::now());
            let d = s.poll_transmit().unwrap();
            let p = RtpPacket::parse(&d.bytes).unwrap();
            (p.timestamp(), p.marker_bit())
        };
        let (t1, _) = send(&mut s, 0xaaaa, 1, 1000);
        let (t2, m2) = send(&mut s, 0xaaaa, 2, 1160);
        assert_eq!((t2, m2), (t1.wrapping_add(160), false));
        // Early media came from one device, the answer from another: a far-off timestamp base.
        let (t3, m3) = send(&mut s, 0xbbbb, 1, 3_000_000_000);
        assert_eq!((t3, m3), (t2.wrapping_add(160), true), "no jump in our stream, and a marker");
    }

    #[test]
    fn a_desk_turns_the_call_into_a_conference_and_a_listener_is_not_heard() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(t0, true);
        s.add_leg(1, Role::Caller, params(4000, Codec::Pcmu));
        s.add_leg(2, Role::FarEnd, params(5000, Codec::Pcmu));
        let mut desk = params(7000, Codec::Pcma);
        desk.heard = false;
        s.add_leg(3, Role::Desk, desk);
        let enc = |c: Codec, v: i16| {
            let mut b = Vec::new();
            c.encode_into(&[v; FRAME], &mut b);
            b
        };
        for i in 0..3u16 {
            s.on_packet(1, addr(4000), &rtp(0, i, i as u32 * 160, &enc(Codec::Pcmu, 1000)), Instant::now());
            s.on_packet(3, addr(7000), &rtp(8, i, i as u32 * 160, &enc(Codec::Pcma, 8000)), Instant::now());
        }
        assert!(s.poll_transmit().is_none(), "in a conference nothing is relayed directly");
        s.on_timeout(t0 + TICK);
        s.on_timeout(t0 + TICK * 2);
        let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
        // Two ticks × three legs.
        assert_eq!(out.len(), 6);
        let last = |leg| {
            let d = out.iter().rev().find(|d| d.leg == leg).unwrap();
            let p = RtpPacket::parse(&d.bytes).unwrap();
            let codec = if p.payload_type() == 8 { Codec::Pcma } else { Codec::Pcmu };
            let mut v = Vec::new();
            codec.decode_into(p.payload(), &mut v);
            v[80]
        };
        assert!((last(2) - 1000).abs() < 40, "far end hears the caller");
        assert!((last(3) - 1000).abs() < 40, "the desk hears the caller");
        assert_eq!(last(1), 0, "nobody hears the listening desk");
        // Recorded: caller left, the (silent) rest right.
        let (_, _) = s.poll_recording().unwrap();
        let (l, r) = s.poll_recording().unwrap();
        assert!((l[80] - 1000).abs() < 40 && r[80] == 0);
    }
}
