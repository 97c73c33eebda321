//! G.711 (ITU-T G.711) µ-law and A-law, the two codecs every emergency trunk carries, with their
//! static RTP payload types (RFC 3551 §6: PCMU = 0, PCMA = 8, 8 kHz, one byte per sample).

use audio_codec_algorithms::{
    convert_alaw_to_ulaw, convert_ulaw_to_alaw, decode_alaw, decode_ulaw, encode_alaw, encode_ulaw,
};

/// Samples per second of G.711 (and of everything sosdesk mixes and records).
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame: the mixer's and the recorder's unit.
pub const FRAME: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static payload type (RFC 3551 table 4).
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name of an `a=rtpmap` line (case-insensitive per RFC 4566 §6).
    pub fn from_name(name: &str) -> Option<Codec> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// Decode a payload, appending linear samples to `out`.
    pub fn decode_into(self, payload: &[u8], out: &mut Vec<i16>) {
        match self {
            Codec::Pcmu => out.extend(payload.iter().map(|&b| decode_ulaw(b))),
            Codec::Pcma => out.extend(payload.iter().map(|&b| decode_alaw(b))),
        }
    }

    /// Encode linear samples, appending the payload bytes to `out`.
    pub fn encode_into(self, samples: &[i16], out: &mut Vec<u8>) {
        match self {
            Codec::Pcmu => out.extend(samples.iter().map(|&s| encode_ulaw(s))),
            Codec::Pcma => out.extend(samples.iter().map(|&s| encode_alaw(s))),
        }
    }

    /// Re-encode a payload of `from` as `self` without going through linear samples (G.711
    /// Appendix: the µ-law ↔ A-law tables), for the two-party relay.
    pub fn transcode_into(self, from: Codec, payload: &[u8], out: &mut Vec<u8>) {
        match (from, self) {
            (a, b) if a == b => out.extend_from_slice(payload),
            (Codec::Pcmu, Codec::Pcma) => out.extend(payload.iter().map(|&b| convert_ulaw_to_alaw(b))),
            _ => out.extend(payload.iter().map(|&b| convert_alaw_to_ulaw(b))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_laws_round_trip_within_their_quantisation() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            for s in [-32000i16, -1000, -10, 0, 10, 1000, 32000] {
                let mut enc = Vec::new();
                codec.encode_into(&[s], &mut enc);
                let mut dec = Vec::new();
                codec.decode_into(&enc, &mut dec);
                // G.711 keeps about 12 bits of the top of the range: within 1/16 of the value.
                assert!((dec[0] as i32 - s as i32).abs() <= (s as i32).abs() / 16 + 16, "{codec:?} {s} -> {}", dec[0]);
            }
        }
    }

    #[test]
    fn transcoding_keeps_the_sound() {
        let samples: Vec<i16> = (0..160).map(|i| ((i as f64 * 0.3).sin() * 12000.0) as i16).collect();
        let mut mu = Vec::new();
        Codec::Pcmu.encode_into(&samples, &mut mu);
        let mut a = Vec::new();
        Codec::Pcma.transcode_into(Codec::Pcmu, &mu, &mut a);
        let mut back = Vec::new();
        Codec::Pcma.decode_into(&a, &mut back);
        for (x, y) in samples.iter().zip(&back) {
            assert!((*x as i32 - *y as i32).abs() < 800, "{x} vs {y}");
        }
    }
}
