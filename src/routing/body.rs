//! INVITE bodies: the SDP and the PIDF-LO inside a `multipart/mixed` body (RFC 2046 §5.1,
//! RFC 6442 §4.1 location by value with a `Geolocation: <cid:…>` reference, RFC 2392 cid URLs).
//!
//! This is the one place SDP is taken out of, and put into, a call's messages ([`sdp_of`] serves
//! the anchored calls' offers and answers in requests, responses and ACKs).

use bytes::Bytes;

use crate::sip::message::split_comma_list;
use crate::sip::Message;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub content_type: String,
    /// Without the angle brackets.
    pub content_id: Option<String>,
    pub body: Bytes,
}

/// What the caller's INVITE carried.
#[derive(Debug, Clone, Default)]
pub struct InviteBody {
    pub sdp: Option<Bytes>,
    /// The PIDF-LO the Geolocation header points at (or, failing that, any PIDF-LO part).
    pub pidf: Option<Bytes>,
    /// Geolocation URIs other than cid: (location by reference), passed on unchanged.
    pub location_refs: Vec<String>,
    /// Problems found (a cid: pointing at nothing, a second PIDF-LO ignored…).
    pub warnings: Vec<String>,
    /// A content type sosdesk cannot use (answer 415).
    pub unsupported: Option<String>,
}

fn param(header_value: &str, name: &str) -> Option<String> {
    for p in header_value.split(';').skip(1) {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case(name) {
                return Some(v.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

/// Split a multipart body at its boundary (RFC 2046 §5.1.1). Malformed parts are skipped.
pub fn split_multipart(content_type: &str, body: &Bytes) -> Result<Vec<Part>, String> {
    let boundary = param(content_type, "boundary").ok_or("multipart body without a boundary parameter")?;
    if boundary.is_empty() || boundary.len() > 70 {
        return Err("invalid multipart boundary".into());
    }
    let delim = format!("--{boundary}");
    let b = &body[..];
    let positions: Vec<usize> = memfind_all(b, delim.as_bytes());
    if positions.is_empty() {
        return Err("multipart body does not contain its boundary".into());
    }
    let mut parts = Vec::new();
    for w in positions.windows(2) {
        let (start, end) = (w[0] + delim.len(), w[1]);
        let mut seg = &b[start..end];
        // The delimiter line ends with CRLF; the CRLF before the next delimiter belongs to it.
        seg = seg.strip_prefix(b"\r\n").or_else(|| seg.strip_prefix(b"\n")).unwrap_or(seg);
        seg = seg.strip_suffix(b"\r\n").or_else(|| seg.strip_suffix(b"\n")).unwrap_or(seg);
        let (head, content) = match find_blank_line(seg) {
            Some((h, sep)) => (&seg[..h], &seg[h + sep..]),
            // No headers: RFC 2046 §5.1.1 defaults to text/plain.
            None => (&b""[..], seg),
        };
        let head = String::from_utf8_lossy(head);
        let mut ct = "text/plain".to_string();
        let mut cid = None;
        for line in head.lines() {
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim();
                if k.eq_ignore_ascii_case("Content-Type") {
                    ct = v.trim().to_string();
                } else if k.eq_ignore_ascii_case("Content-ID") {
                    cid = Some(v.trim().trim_start_matches('<').trim_end_matches('>').to_string());
                }
            }
        }
        let off = content.as_ptr() as usize - b.as_ptr() as usize;
        parts.push(Part { content_type: ct, content_id: cid, body: body.slice(off..off + content.len()) });
    }
    Ok(parts)
}

fn memfind_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if needle.is_empty() || hay.len() < needle.len() {
        return out;
    }
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle && (i == 0 || hay[i - 1] == b'\n') {
            out.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    out
}

fn find_blank_line(b: &[u8]) -> Option<(usize, usize)> {
    if b.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if b[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

fn base_type(ct: &str) -> String {
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Take an INVITE's body apart.
pub fn parse_invite_body(msg: &Message) -> InviteBody {
    let mut out = InviteBody::default();
    let geo: Vec<String> = msg
        .header_values("Geolocation")
        .into_iter()
        .map(|v| v.split(';').next().unwrap_or("").trim().trim_start_matches('<').trim_end_matches('>').to_string())
        .filter(|v| !v.is_empty())
        .collect();
    let cids: Vec<String> =
        geo.iter().filter_map(|g| g.strip_prefix("cid:").map(crate::sip::uri::percent_decode)).collect();
    out.location_refs = geo.iter().filter(|g| !g.starts_with("cid:")).cloned().collect();
    if msg.body.is_empty() {
        if !cids.is_empty() {
            out.warnings.push("Geolocation names a cid: but the INVITE has no body".into());
        }
        return out;
    }
    let ct_full = msg.header("Content-Type").unwrap_or("application/sdp").to_string();
    match base_type(&ct_full).as_str() {
        "application/sdp" => out.sdp = Some(msg.body.clone()),
        "multipart/mixed" | "multipart/related" | "multipart/alternative" => match split_multipart(&ct_full, &msg.body)
        {
            Ok(parts) => {
                let mut pidfs = Vec::new();
                for p in parts {
                    match base_type(&p.content_type).as_str() {
                        "application/sdp" if out.sdp.is_none() => out.sdp = Some(p.body),
                        "application/pidf+xml" => pidfs.push(p),
                        _ => {}
                    }
                }
                let referenced = pidfs.iter().position(|p| p.content_id.as_ref().is_some_and(|c| cids.contains(c)));
                match referenced {
                    Some(i) => out.pidf = Some(pidfs[i].body.clone()),
                    None if !pidfs.is_empty() => {
                        // RFC 6442 §4.1 wants the reference; a phone that forgot it still meant
                        // its PIDF-LO to be its location.
                        out.warnings.push("PIDF-LO body not referenced by a Geolocation cid: (used anyway)".into());
                        out.pidf = Some(pidfs[0].body.clone());
                    }
                    None => {
                        if !cids.is_empty() {
                            out.warnings.push("Geolocation cid: does not match any body part".into());
                        }
                    }
                }
                if pidfs.len() > 1 {
                    out.warnings.push(format!("{} PIDF-LO parts; only one used", pidfs.len()));
                }
            }
            Err(e) => out.warnings.push(format!("multipart body unreadable: {e}")),
        },
        "application/pidf+xml" => out.pidf = Some(msg.body.clone()),
        other => out.unsupported = Some(other.to_string()),
    }
    out
}

/// A `multipart/mixed` body holding the SDP (if any) and a PIDF-LO with `Content-ID: <cid>`.
/// Returns (Content-Type header value, body).
pub fn build_multipart(sdp: Option<&Bytes>, pidf: &[u8], cid: &str) -> (String, Bytes) {
    let pidf_headers = format!("Content-Type: application/pidf+xml\r\nContent-ID: <{cid}>");
    let mut parts: Vec<(&str, &[u8])> = Vec::with_capacity(2);
    if let Some(sdp) = sdp {
        parts.push(("Content-Type: application/sdp", sdp));
    }
    parts.push((&pidf_headers, pidf));
    multipart_mixed(&parts)
}

/// A `multipart/mixed` body (RFC 2046 §5.1.1) of `parts`, each (its header lines, its content);
/// a content not ending in CRLF gets one before the next boundary. Returns (Content-Type header
/// value, body).
pub fn multipart_mixed(parts: &[(&str, &[u8])]) -> (String, Bytes) {
    let boundary = format!("sosdesk-{}", crate::sip::ids::new_tag());
    let mut b = Vec::with_capacity(parts.iter().map(|(h, c)| h.len() + c.len() + 64).sum::<usize>() + 64);
    for (headers, content) in parts {
        b.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        b.extend_from_slice(content);
        if !content.ends_with(b"\r\n") {
            b.extend_from_slice(b"\r\n");
        }
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed;boundary={boundary}"), Bytes::from(b))
}

/// The SDP of any message: an `application/sdp` body, or that part of a multipart one.
pub fn sdp_of(msg: &Message) -> Option<Bytes> {
    if msg.body.is_empty() {
        return None;
    }
    let ct = msg.header("Content-Type").unwrap_or("application/sdp");
    match base_type(ct).as_str() {
        "application/sdp" => Some(msg.body.clone()),
        t if t.starts_with("multipart/") => split_multipart(ct, &msg.body)
            .ok()?
            .into_iter()
            .find(|p| base_type(&p.content_type) == "application/sdp")
            .map(|p| p.body),
        _ => None,
    }
}

/// The connection addresses of an SDP body (RFC 4566 §5.7 `c=IN IP4|IP6 addr`), session level
/// first: where the caller's media is, which for a phone on a PBX is usually the phone itself.
pub fn sdp_connection_addresses(sdp: &[u8]) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(sdp).lines() {
        let Some(rest) = line.trim().strip_prefix("c=") else { continue };
        let mut f = rest.split_whitespace();
        if f.next() != Some("IN") {
            continue;
        }
        let _family = f.next();
        // Multicast addresses carry a /ttl suffix (§5.7); strip it.
        if let Some(ip) = f.next().and_then(|a| a.split('/').next()).and_then(|a| a.parse().ok()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Whether an Accept header value admits an SDP answer (RFC 3261 §20.1; absent means SDP).
pub fn accepts_sdp(accept: Option<&str>) -> bool {
    let Some(a) = accept else { return true };
    if a.trim().is_empty() {
        return true;
    }
    split_comma_list(a).iter().any(|t| {
        let t = base_type(t);
        t == "application/sdp" || t == "application/*" || t == "*/*"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_datagram;

    #[test]
    fn multipart_round_trip() {
        let sdp = Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
        let (ct, body) = build_multipart(Some(&sdp), b"<presence/>", "loc1@host");
        let parts = split_multipart(&ct, &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, sdp.slice(..sdp.len() - 2));
        assert_eq!(parts[1].content_id.as_deref(), Some("loc1@host"));
        assert_eq!(&parts[1].body[..], b"<presence/>");
    }

    #[test]
    fn invite_with_referenced_pidf() {
        let (ct, body) = build_multipart(Some(&Bytes::from_static(b"v=0\r\n")), b"<presence/>", "x@y");
        let mut raw = format!(
            "INVITE sip:911@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:911@h>\r\n\
Call-ID: c\r\nCSeq: 1 INVITE\r\nGeolocation: <cid:x@y>, <https://lis.example/loc/1>\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let m = parse_datagram(&raw).unwrap();
        let ib = parse_invite_body(&m);
        assert_eq!(ib.pidf.as_deref(), Some(&b"<presence/>"[..]));
        assert_eq!(ib.sdp.as_deref(), Some(&b"v=0"[..]));
        assert_eq!(ib.location_refs, vec!["https://lis.example/loc/1".to_string()]);
        assert!(ib.warnings.is_empty(), "{:?}", ib.warnings);
    }

    #[test]
    fn sdp_addresses() {
        let sdp = b"v=0\r\nc=IN IP4 10.1.2.3\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\nc=IN IP4 10.1.2.3\r\n";
        let got = sdp_connection_addresses(sdp);
        assert_eq!(got, vec!["10.1.2.3".parse::<std::net::IpAddr>().unwrap(), "2001:db8::7".parse().unwrap()]);
        assert!(sdp_connection_addresses(b"c=IN IP4 not-an-ip\r\n").is_empty());
    }

    #[test]
    fn accept_header() {
        assert!(accepts_sdp(None));
        assert!(accepts_sdp(Some("application/sdp, text/plain")));
        assert!(!accepts_sdp(Some("text/nobodyknowsthis")));
    }
}
