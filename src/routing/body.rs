//! INVITE bodies of an emergency call: the SDP and the PIDF-LO inside a `multipart/mixed` body
//! (RFC 6442 §4.1 location by value with a `Geolocation: <cid:…>` reference, RFC 2392 cid URLs).
//! The multipart and SDP vocabulary itself is `sip::body`.

use bytes::Bytes;

use crate::sip::body::{base_type, multipart_mixed, split_multipart};
use crate::sip::Message;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_datagram;

    #[test]
    fn location_by_value_is_sdp_then_the_referenced_pidf_lo() {
        let sdp = Bytes::from_static(b"v=0\r\n");
        let (ct, body) = build_multipart(Some(&sdp), b"<presence/>", "loc1@host");
        let parts = split_multipart(&ct, &body).unwrap();
        let kinds: Vec<_> = parts.iter().map(|p| (p.content_type.as_str(), p.content_id.as_deref())).collect();
        assert_eq!(kinds, [("application/sdp", None), ("application/pidf+xml", Some("loc1@host"))]);
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
        // The SDP whole, with the CRLF that ends its last line (multipart_mixed writes the
        // delimiter's own).
        assert_eq!(ib.sdp.as_deref(), Some(&b"v=0\r\n"[..]));
        assert_eq!(ib.location_refs, vec!["https://lis.example/loc/1".to_string()]);
        assert!(ib.warnings.is_empty(), "{:?}", ib.warnings);
    }
}
