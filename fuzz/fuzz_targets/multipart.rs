//! A multipart body (RFC 2046 §5.1) with its Content-Type (the input's first line), any bytes:
//! splitting never panics and every part lies inside the body; the parts, built into a body again
//! by sosdesk (`multipart_mixed`, as in its outbound INVITE), split back into the same parts; the
//! emergency INVITE body reader (SDP, the PIDF-LO its Geolocation references) never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sosdesk::sip::body::{multipart_mixed, sdp_of, split_multipart};
use sosdesk::sip::Message;

fuzz_target!(|data: &[u8]| {
    let (first, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let ct = String::from_utf8_lossy(first).trim().to_string();
    let body = Bytes::copy_from_slice(body);

    // As the engine reads an INVITE: Content-Type and Geolocation from the first line.
    let mut m = Message::request("INVITE", "sip:911@127.0.0.1");
    m.push("Content-Type", ct.clone());
    m.push("Geolocation", "<cid:loc@x>");
    m.body = body.clone();
    let _ = sdp_of(&m);
    let _ = sosdesk::routing::body::parse_invite_body(&m);

    let Ok(parts) = split_multipart(&ct, &body) else { return };
    let range = body.as_ptr_range();
    for p in &parts {
        let r = p.body.as_ptr_range();
        assert!(p.body.is_empty() || (range.start <= r.start && r.end <= range.end));
    }
    // Rebuilt from parts whose headers survive a header line (no line break in them).
    if parts.iter().any(|p| {
        p.content_type.contains(['\r', '\n']) || p.content_id.as_deref().is_some_and(|c| c.contains(['\r', '\n', '>']))
    }) {
        return;
    }
    let heads: Vec<String> = parts
        .iter()
        .map(|p| match &p.content_id {
            Some(id) => format!("Content-Type: {}\r\nContent-ID: <{id}>", p.content_type),
            None => format!("Content-Type: {}", p.content_type),
        })
        .collect();
    let built: Vec<(&str, &[u8])> = heads.iter().map(String::as_str).zip(parts.iter().map(|p| &p.body[..])).collect();
    let (ct2, body2) = multipart_mixed(&built);
    let again = split_multipart(&ct2, &body2).expect("sosdesk's own multipart body splits");
    assert_eq!(again.len(), parts.len(), "{}", String::from_utf8_lossy(&body2));
    for (a, p) in again.iter().zip(&parts) {
        assert_eq!(a.content_type, p.content_type.trim());
        assert_eq!(a.content_id, p.content_id);
        assert_eq!(a.body, p.body, "{}", String::from_utf8_lossy(&body2));
    }
});
