//! Bodies that SIP messages carry, as SIP sees them: `multipart/mixed` (RFC 2046 §5.1) split
//! and built, the SDP found in any message (RFC 3261 §13, RFC 4566), and whether an `Accept`
//! admits SDP. Used by the core's routing and notifications and by the desk app; what a body
//! *means* for an emergency call (the PIDF-LO referenced by `Geolocation`) is `routing::body`.

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

/// A parameter of a header value such as Content-Type (`boundary`, `charset`), unquoted.
pub fn param(header_value: &str, name: &str) -> Option<String> {
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

/// The media type of a Content-Type value, lowercased, without parameters.
pub fn base_type(ct: &str) -> String {
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A `multipart/mixed` body (RFC 2046 §5.1.1) of `parts`, each (its header lines, its content).
/// Returns (Content-Type header value, body).
pub fn multipart_mixed(parts: &[(&str, &[u8])]) -> (String, Bytes) {
    let boundary = format!("sosdesk-{}", crate::sip::ids::new_tag());
    let mut b = Vec::with_capacity(parts.iter().map(|(h, c)| h.len() + c.len() + 64).sum::<usize>() + 64);
    for (headers, content) in parts {
        b.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        b.extend_from_slice(content);
        // RFC 2046 §5.1.1: the CRLF before a delimiter belongs to the delimiter, not to the part,
        // so it is always written. (It used to be left out after a content ending in CRLF: the
        // receiver then took that CRLF as the delimiter's and the SDP sent to the PSAP lost the
        // end of its last line. Found by the multipart fuzz target.)
        b.extend_from_slice(b"\r\n");
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

    /// Found by fuzzing (multipart target): a content ending in CRLF lost it on the way through
    /// `multipart_mixed` and `split_multipart`.
    #[test]
    fn multipart_round_trip() {
        let sdp = Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n");
        let pidf_headers = "Content-Type: application/pidf+xml\r\nContent-ID: <loc1@host>";
        let (ct, body) = multipart_mixed(&[("Content-Type: application/sdp", &sdp), (pidf_headers, b"<presence/>")]);
        let parts = split_multipart(&ct, &body).unwrap();
        assert_eq!(parts.len(), 2);
        // Each content comes back whole: the SDP keeps the CRLF that ends its last line.
        assert_eq!(parts[0].body, sdp);
        assert_eq!(parts[1].content_id.as_deref(), Some("loc1@host"));
        assert_eq!(&parts[1].body[..], b"<presence/>");
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
