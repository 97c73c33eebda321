//! The audio part of SDP (RFC 4566) as offer/answer (RFC 3264) needs it for an anchored call:
//! where the party wants RTP, which G.711 payloads it takes, its RFC 4733 telephone-event
//! payload type, and the direction. Everything else in an offer is ignored; other media lines
//! are rejected in the answer with port 0 (RFC 3264 §6).

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::codec::Codec;

/// Media direction attribute (RFC 4566 §6, RFC 3264 §5.1), from the party's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }

    /// The direction an answer gives to an offer with this one (RFC 3264 §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// The answer to an offer with this direction from a party that must not be heard (a
    /// listen-only desk): sosdesk sends and never receives (RFC 3264 §6.1 lets an answer narrow
    /// the direction) — an ordinary client's `sendrecv` gets `sendonly`, a `sendonly` offer
    /// (send only, receive nothing) `inactive`.
    pub fn answer_unheard(self) -> Direction {
        match self.answer() {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        }
    }

    /// The party sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The party receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One `m=` line as offered, kept so an answer can reject it in place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MediaLine {
    media: String,
    proto: String,
    first_fmt: String,
}

/// The audio stream of a session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSdp {
    /// Connection address (media-level `c=` over session-level); `None` for 0.0.0.0 (on hold,
    /// RFC 3264 §8.4) or none given.
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// G.711 payloads in the party's order of preference, with their payload types.
    pub codecs: Vec<(Codec, u8)>,
    /// RFC 4733 `telephone-event/8000` payload type.
    pub telephone_event: Option<u8>,
    pub direction: Direction,
    /// Every `m=` line in order, and which one is the audio stream used here.
    lines: Vec<MediaLine>,
    audio_index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("the SDP has no audio stream")]
    NoAudio,
    #[error("the audio stream offers neither PCMU nor PCMA")]
    NoG711,
    #[error("malformed SDP: {0}")]
    Malformed(String),
}

impl AudioSdp {
    /// Parse the first audio stream with a non-zero port (RFC 3264 §5.1: port 0 is rejected).
    pub fn parse(body: &[u8]) -> Result<AudioSdp, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::Malformed("not UTF-8".into()))?;
        let mut session_addr: Option<Option<IpAddr>> = None;
        let mut session_dir = Direction::SendRecv;
        let mut lines: Vec<MediaLine> = Vec::new();
        // Per media section: (port, fmts, c=, direction, rtpmaps)
        struct Section {
            port: u16,
            fmts: Vec<u8>,
            addr: Option<Option<IpAddr>>,
            dir: Option<Direction>,
            rtpmap: Vec<(u8, String, u32)>,
        }
        let mut sections: Vec<Section> = Vec::new();
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            let Some((kind, value)) = line.split_once('=') else { continue };
            match kind {
                "m" => {
                    let mut f = value.split_whitespace();
                    let media = f.next().unwrap_or("").to_string();
                    let port = f.next().and_then(|p| p.split('/').next()).and_then(|p| p.parse::<u16>().ok());
                    let Some(port) = port else {
                        return Err(SdpError::Malformed(format!("bad m= line {line:?}")));
                    };
                    let proto = f.next().unwrap_or("").to_string();
                    let rest: Vec<&str> = f.collect();
                    lines.push(MediaLine {
                        media: media.clone(),
                        proto: proto.clone(),
                        first_fmt: rest.first().unwrap_or(&"0").to_string(),
                    });
                    let audio = media.eq_ignore_ascii_case("audio") && proto.to_ascii_uppercase().starts_with("RTP/");
                    sections.push(Section {
                        port: if audio { port } else { 0 },
                        fmts: rest.iter().filter_map(|s| s.parse().ok()).collect(),
                        addr: None,
                        dir: None,
                        rtpmap: Vec::new(),
                    });
                }
                "c" => {
                    let mut f = value.split_whitespace();
                    if f.next() != Some("IN") {
                        continue;
                    }
                    let _family = f.next();
                    let addr = f
                        .next()
                        .and_then(|a| a.split('/').next())
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .filter(|ip| !ip.is_unspecified());
                    match sections.last_mut() {
                        Some(s) => s.addr = Some(addr),
                        None => session_addr = Some(addr),
                    }
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    if let Some(d) = Direction::parse(name) {
                        match sections.last_mut() {
                            Some(s) => s.dir = Some(d),
                            None => session_dir = d,
                        }
                    } else if name == "rtpmap" {
                        // a=rtpmap:<pt> <name>/<rate>[/<channels>]
                        let mut f = arg.split_whitespace();
                        let pt = f.next().and_then(|p| p.parse::<u8>().ok());
                        let enc = f.next().unwrap_or("");
                        let mut e = enc.split('/');
                        let (ename, rate) =
                            (e.next().unwrap_or(""), e.next().and_then(|r| r.parse().ok()).unwrap_or(0));
                        if let (Some(pt), Some(s)) = (pt, sections.last_mut()) {
                            s.rtpmap.push((pt, ename.to_string(), rate));
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(audio_index) = sections.iter().position(|s| s.port != 0) else {
            return Err(SdpError::NoAudio);
        };
        let s = &sections[audio_index];
        let mut codecs = Vec::new();
        let mut telephone_event = None;
        for &pt in &s.fmts {
            let mapped = s.rtpmap.iter().find(|m| m.0 == pt);
            let codec = match mapped {
                Some((_, name, rate)) if *rate == 8000 || *rate == 0 => {
                    if name.eq_ignore_ascii_case("telephone-event") {
                        telephone_event.get_or_insert(pt);
                        None
                    } else {
                        Codec::from_name(name)
                    }
                }
                Some(_) => None,
                // Static payload types need no rtpmap (RFC 3551 §6).
                None => match pt {
                    0 => Some(Codec::Pcmu),
                    8 => Some(Codec::Pcma),
                    _ => None,
                },
            };
            if let Some(c) = codec {
                if !codecs.iter().any(|(x, _)| *x == c) {
                    codecs.push((c, pt));
                }
            }
        }
        if codecs.is_empty() {
            return Err(SdpError::NoG711);
        }
        Ok(AudioSdp {
            addr: s.addr.or(session_addr).flatten(),
            port: s.port,
            codecs,
            telephone_event,
            direction: s.dir.unwrap_or(session_dir),
            lines,
            audio_index,
        })
    }

    /// Where the party wants its RTP (none while on hold).
    pub fn remote(&self) -> Option<SocketAddr> {
        self.addr.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// The codec to use towards this party: `preferred` when it offered it (no transcoding),
    /// else its own first choice.
    pub fn pick(&self, preferred: Option<Codec>) -> (Codec, u8) {
        preferred.and_then(|p| self.codecs.iter().find(|(c, _)| *c == p).copied()).unwrap_or(self.codecs[0])
    }
}

/// sosdesk's own session description for one leg. The `o=` version goes up with every new
/// description of the same session (RFC 3264 §8).
#[derive(Debug, Clone)]
pub struct LocalSdp {
    pub addr: SocketAddr,
    pub session_id: u64,
    pub version: u64,
}

impl LocalSdp {
    pub fn new(addr: SocketAddr) -> LocalSdp {
        LocalSdp { addr, session_id: rand::random::<u32>() as u64, version: 1 }
    }

    /// An offer: PCMU and PCMA (in `first`'s order), telephone-event 101.
    pub fn offer(&mut self, first: Codec, direction: Direction) -> Bytes {
        let other = if first == Codec::Pcmu { Codec::Pcma } else { Codec::Pcmu };
        let codecs = [(first, first.payload_type()), (other, other.payload_type())];
        self.render(&codecs, Some(101), direction, None)
    }

    /// The answer to `offer`: one codec (RFC 3264 §6.1 lets the answer name just the one it
    /// will send), telephone-event when offered, other media lines rejected with port 0.
    pub fn answer(&mut self, offer: &AudioSdp, codec: (Codec, u8), direction: Direction) -> Bytes {
        self.render(&[codec], offer.telephone_event, direction, Some(offer))
    }

    fn render(&mut self, codecs: &[(Codec, u8)], te: Option<u8>, dir: Direction, offer: Option<&AudioSdp>) -> Bytes {
        let (family, ip) = match self.addr.ip() {
            IpAddr::V4(ip) => ("IP4", ip.to_string()),
            IpAddr::V6(ip) => ("IP6", ip.to_string()),
        };
        let mut s = String::with_capacity(320);
        s.push_str("v=0\r\n");
        s.push_str(&format!("o=sosdesk {} {} IN {family} {ip}\r\n", self.session_id, self.version));
        s.push_str("s=sosdesk\r\n");
        s.push_str(&format!("c=IN {family} {ip}\r\n"));
        s.push_str("t=0 0\r\n");
        let audio = |s: &mut String| {
            let mut fmts: Vec<String> = codecs.iter().map(|(_, pt)| pt.to_string()).collect();
            if let Some(te) = te {
                fmts.push(te.to_string());
            }
            s.push_str(&format!("m=audio {} RTP/AVP {}\r\n", self.addr.port(), fmts.join(" ")));
            for (c, pt) in codecs {
                s.push_str(&format!("a=rtpmap:{pt} {}/8000\r\n", c.name()));
            }
            if let Some(te) = te {
                s.push_str(&format!("a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-16\r\n"));
            }
            s.push_str("a=ptime:20\r\n");
            s.push_str(&format!("a={}\r\n", dir.attribute()));
        };
        match offer {
            Some(o) => {
                for (i, l) in o.lines.iter().enumerate() {
                    if i == o.audio_index {
                        audio(&mut s);
                    } else {
                        s.push_str(&format!("m={} 0 {} {}\r\n", l.media, l.proto, l.first_fmt));
                    }
                }
            }
            None => audio(&mut s),
        }
        self.version += 1;
        Bytes::from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\na=sendrecv\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn offer_gives_g711_in_order_dtmf_and_address() {
        let o = AudioSdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(o.codecs, vec![(Codec::Pcma, 8), (Codec::Pcmu, 0)]);
        assert_eq!(o.telephone_event, Some(101));
        assert_eq!(o.remote(), Some("10.0.0.5:4000".parse().unwrap()));
        assert_eq!(o.direction, Direction::SendRecv);
        assert_eq!(o.pick(Some(Codec::Pcmu)), (Codec::Pcmu, 0));
        assert_eq!(o.pick(None), (Codec::Pcma, 8));
    }

    #[test]
    fn answer_keeps_line_order_and_rejects_video() {
        let o = AudioSdp::parse(OFFER.as_bytes()).unwrap();
        let mut local = LocalSdp::new("192.0.2.1:20000".parse().unwrap());
        let a = local.answer(&o, (Codec::Pcmu, 0), Direction::SendRecv);
        let text = std::str::from_utf8(&a).unwrap();
        assert!(text.contains("c=IN IP4 192.0.2.1\r\n"), "{text}");
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"), "{text}");
        let audio = text.find("m=audio").unwrap();
        let video = text.find("m=video 0 RTP/AVP 96").unwrap();
        assert!(audio < video);
        // Our own answer parses, and a new description bumps the o= version.
        let back = AudioSdp::parse(&a).unwrap();
        assert_eq!(back.codecs, vec![(Codec::Pcmu, 0)]);
        let again = local.answer(&o, (Codec::Pcmu, 0), Direction::SendRecv);
        assert!(std::str::from_utf8(&again).unwrap().contains(&format!("o=sosdesk {} 2 ", local.session_id)));
    }

    #[test]
    fn hold_direction_and_errors() {
        let hold = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n";
        let o = AudioSdp::parse(hold.as_bytes()).unwrap();
        assert_eq!(o.remote(), None);
        assert_eq!(o.direction, Direction::RecvOnly);
        assert_eq!(o.direction.answer(), Direction::SendOnly);
        // A party that must not be heard only receives, whatever it offers (RFC 3264 §6.1).
        use Direction::*;
        let unheard: Vec<_> = [SendRecv, SendOnly, RecvOnly, Inactive].map(|d| d.answer_unheard()).into();
        assert_eq!(unheard, [SendOnly, Inactive, SendOnly, Inactive]);
        assert_eq!(AudioSdp::parse(b"v=0\r\nm=video 5 RTP/AVP 96\r\n"), Err(SdpError::NoAudio));
        assert_eq!(AudioSdp::parse(b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 9\r\n"), Err(SdpError::NoG711));
        assert!(matches!(AudioSdp::parse(b"m=audio x RTP/AVP 0\r\n"), Err(SdpError::Malformed(_))));
        // A dynamic payload type mapped to PCMU counts.
        let dynamic = "c=IN IP6 ::1\r\nm=audio 7000 RTP/AVP 112\r\na=rtpmap:112 pcmu/8000\r\n";
        let o = AudioSdp::parse(dynamic.as_bytes()).unwrap();
        assert_eq!(o.codecs, vec![(Codec::Pcmu, 112)]);
        assert_eq!(o.remote(), Some("[::1]:7000".parse().unwrap()));
    }
}
