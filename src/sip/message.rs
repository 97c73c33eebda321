//! The SIP message model (RFC 3261 §7): a start line, an ordered list of header fields and a body.
//!
//! Header values are kept as text exactly as received (after unfolding), so a B2BUA can relay
//! what it does not understand; typed views (Via, name-addr, CSeq, URI) are parsed on demand.

use bytes::Bytes;
use std::fmt::Write as _;

use super::uri::{NameAddr, Uri};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { status: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Canonical name (compact forms expanded, well-known names in their usual case).
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Bytes,
}

/// RFC 3261 §7.3.3 compact forms, plus the later RFCs' ones (RFC 3265 o/u, RFC 3515 r,
/// RFC 3892 b, RFC 4028 x, RFC 8224 y).
const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("u", "Allow-Events"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

const WELL_KNOWN: &[&str] = &[
    "Accept",
    "Allow",
    "Call-ID",
    "Contact",
    "Content-Disposition",
    "Content-ID",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Expires",
    "From",
    "Geolocation",
    "Geolocation-Routing",
    "Max-Forwards",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Priority",
    "Proxy-Require",
    "Reason",
    "Record-Route",
    "Require",
    "Route",
    "Server",
    "Supported",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
    "Authorization",
    "Retry-After",
];

/// Expand compact forms and give well-known names their usual spelling; others are kept as sent.
pub fn canonical_name(name: &str) -> String {
    if name.len() == 1 {
        for (short, long) in COMPACT {
            if name.eq_ignore_ascii_case(short) {
                return (*long).to_string();
            }
        }
    }
    for known in WELL_KNOWN {
        if name.eq_ignore_ascii_case(known) {
            return (*known).to_string();
        }
    }
    name.to_string()
}

/// Headers that RFC 3261 §7.3 allows only once (and that we rely on being single).
pub const SINGLE_VALUED: &[&str] = &["Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type"];

impl Message {
    pub fn request(method: &str, uri: &str) -> Message {
        Message {
            start: StartLine::Request { method: method.to_string(), uri: uri.to_string() },
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method, or for a response the method of its CSeq.
    pub fn method(&self) -> &str {
        match &self.start {
            StartLine::Request { method, .. } => method,
            StartLine::Response { .. } => self.cseq().map(|c| c.1).unwrap_or(""),
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// First value of the named header (case-insensitive, canonical names).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// All values of a header that may be comma-separated (Via, Route, Record-Route, Accept…),
    /// split per RFC 3261 §7.3.1 (commas inside quotes or angle brackets do not separate).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.headers_named(name) {
            out.extend(split_comma_list(v));
        }
        out
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push(Header { name: name.to_string(), value: value.into() });
    }

    /// Insert a header before every other one (used for Via, RFC 3261 §16.6 step 8).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.headers.insert(0, Header { name: name.to_string(), value: value.into() });
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID").map(str::trim)
    }

    /// (sequence number, method)
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?.trim();
        let (num, method) = v.split_once([' ', '\t'])?;
        Some((num.parse().ok()?, method.trim()))
    }

    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("From")?).ok()
    }

    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.header("To")?).ok()
    }

    pub fn from_tag(&self) -> Option<String> {
        self.from().and_then(|n| n.param("tag").map(str::to_string))
    }

    pub fn to_tag(&self) -> Option<String> {
        self.to().and_then(|n| n.param("tag").map(str::to_string))
    }

    pub fn top_via(&self) -> Option<Via> {
        let first = self.headers_named("Via").next()?;
        let v = split_comma_list(first).into_iter().next()?;
        Via::parse(&v).ok()
    }

    /// The Contact URI (first contact), for the remote target of a dialog (RFC 3261 §12.1).
    pub fn contact_uri(&self) -> Option<Uri> {
        let c = self.header("Contact")?;
        let first = split_comma_list(c).into_iter().next()?;
        let na = NameAddr::parse(&first).ok()?;
        Uri::parse(&na.uri).ok()
    }

    pub fn content_type(&self) -> Option<String> {
        self.header("Content-Type").map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
    }

    /// Serialise with a correct Content-Length (always written, RFC 3261 §18.3 needs it on TCP).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
            }
        }
        for h in &self.headers {
            if h.name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            s.push_str(&h.name);
            s.push_str(": ");
            s.push_str(&h.value);
            s.push_str("\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// How many bytes [`Message::to_bytes`] makes, without making them.
    pub fn wire_len(&self) -> usize {
        let start = match &self.start {
            StartLine::Request { method, uri } => method.len() + uri.len() + " SIP/2.0\r\n".len() + 1,
            StartLine::Response { status, reason } => {
                "SIP/2.0 ".len() + status.to_string().len() + 1 + reason.len() + 2
            }
        };
        let headers: usize = self
            .headers
            .iter()
            .filter(|h| !h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| h.name.len() + 2 + h.value.len() + 2)
            .sum();
        start + headers + "Content-Length: \r\n\r\n".len() + self.body.len().to_string().len() + self.body.len()
    }

    /// Build a response to this request per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq
    /// copied; a To tag added when `to_tag` is given and the To has none yet.
    pub fn response(&self, status: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut r = Message {
            start: StartLine::Response { status, reason: reason.to_string() },
            headers: Vec::with_capacity(8),
            body: Bytes::new(),
        };
        for h in &self.headers {
            let n = h.name.as_str();
            if n == "Via"
                || n == "From"
                || n == "Call-ID"
                || n == "CSeq"
                || n == "Record-Route" && (101..300).contains(&status)
            {
                r.headers.push(h.clone());
            } else if n == "To" {
                let mut v = h.value.clone();
                if let Some(tag) = to_tag {
                    if NameAddr::parse(&v).map(|na| na.param("tag").is_none()).unwrap_or(false) {
                        v.push_str(";tag=");
                        v.push_str(tag);
                    }
                }
                r.headers.push(Header { name: "To".into(), value: v });
            }
        }
        r
    }
}

impl Message {
    /// Stamps the top Via of a request that came from `source` (RFC 3261 §18.2.1, RFC 3581
    /// §4): `received` with the source address when it differs from the sent-by host, and
    /// always when the Via asks for `rport`, whose value becomes the source port. Responses copy
    /// the Via, so a client behind NAT learns the address sosdesk sees; they already go to the
    /// source address and port. The sent-by part and the other parameters are kept as they came.
    pub fn stamp_received(&mut self, source: std::net::SocketAddr) {
        let Some(h) = self.headers.iter_mut().find(|h| h.name == "Via") else { return };
        // The top value: the first of a comma-separated list (RFC 3261 §7.3.1).
        let top_len = top_value_len(&h.value);
        let (top, rest) = h.value.split_at(top_len);
        let Ok(via) = Via::parse(top) else { return };
        let ip = source.ip().to_string();
        let wants_rport = via.params.iter().any(|(k, v)| k.eq_ignore_ascii_case("rport") && v.is_none());
        if !wants_rport && via.host.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(&ip) {
            return;
        }
        let mut segs = top.trim_end().split(';');
        let mut out = segs.next().unwrap_or_default().to_string();
        for seg in segs {
            let key = seg.split('=').next().unwrap_or_default().trim();
            if key.eq_ignore_ascii_case("received") {
                continue;
            }
            out.push(';');
            if key.eq_ignore_ascii_case("rport") {
                let _ = write!(out, "rport={}", source.port());
            } else {
                out.push_str(seg);
            }
        }
        // RFC 3261's grammar: an IPv6address, without brackets.
        let _ = write!(out, ";received={ip}");
        out.push_str(rest);
        h.value = out;
    }
}

/// Bytes of a Via header value up to its first top-level comma (the top Via), or all of it.
fn top_value_len(v: &str) -> usize {
    let mut in_quote = false;
    for (i, c) in v.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ',' if !in_quote => return i,
            _ => {}
        }
    }
    v.len()
}

/// Standard reason phrases for the status codes sosdesk sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        // RFC 3903 §11.2.1: a SIP-If-Match that names no publication.
        412 => "Conditional Request Failed",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        // RFC 6665 §8.3.1 (was RFC 3265): an event package not taken.
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// Split a header value at top-level commas (RFC 3261 §7.3.1), honouring quoted strings
/// and `<…>`; empty elements are kept (as empty strings) so callers can reject them.
pub fn split_comma_list(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut in_angle = false;
    let mut escaped = false;
    for c in v.chars() {
        if in_quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_quote = true;
                cur.push(c);
            }
            '<' => {
                in_angle = true;
                cur.push(c);
            }
            '>' => {
                in_angle = false;
                cur.push(c);
            }
            ',' if !in_angle => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// A Via header value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;branch=…;received=…;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(v: &str) -> Result<Via, String> {
        // sent-protocol = name LWS? "/" LWS? version LWS? "/" LWS? transport (RFC 3261 §25.1
        // SLASH = SWS "/" SWS, so whitespace around the slashes is legal: RFC 4475 §3.1.1.1).
        let mut rest = v.trim();
        let mut fields = Vec::with_capacity(3);
        for i in 0..3 {
            let end =
                rest.find(|c: char| c == '/' || c.is_ascii_whitespace() || (i == 2 && c == ';')).unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = rest[end..].trim_start();
            if i < 2 {
                rest = rest
                    .strip_prefix('/')
                    .ok_or_else(|| format!("Via {v:?} is not SIP/2.0/<transport> <host>"))?
                    .trim_start();
            }
        }
        let (name, transport) = (fields[0], fields[2]);
        if !name.eq_ignore_ascii_case("SIP") || fields[1].is_empty() || !super::uri::is_token(transport) {
            return Err(format!("Via {v:?} is not SIP/2.0/<transport> <host>"));
        }
        let mut segs = rest.split(';');
        let sent_by = segs.next().unwrap_or("").trim();
        if sent_by.is_empty() {
            return Err("Via has no sent-by host".into());
        }
        let (host, port) = super::uri::split_host_port(sent_by)?;
        let mut params = Vec::new();
        for p in segs {
            let p = p.trim();
            if p.is_empty() {
                return Err("Via has an empty parameter".into());
            }
            match p.split_once('=') {
                Some((k, val)) => params.push((k.trim().to_string(), Some(val.trim().to_string()))),
                None => params.push((p.to_string(), None)),
            }
        }
        Ok(Via { transport: transport.to_ascii_uppercase(), host, port, params })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_len_is_the_length_of_the_bytes() {
        let mut m = Message::request("MESSAGE", "sip:desk1@192.0.2.7:5095");
        m.push("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1");
        m.push("Content-Length", "999"); // replaced by the real one
        m.body = Bytes::from(vec![b'x'; 1234]);
        assert_eq!(m.wire_len(), m.to_bytes().len());
        let r = m.response(200, "OK", Some("t"));
        assert_eq!(r.wire_len(), r.to_bytes().len());
        let mut empty = Message::request("OPTIONS", "sip:h");
        empty.body = Bytes::new();
        assert_eq!(empty.wire_len(), empty.to_bytes().len());
    }

    #[test]
    fn the_top_via_is_stamped_with_the_source_address_and_port() {
        let src: std::net::SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let stamped = |via: &str| {
            let mut m = Message::request("OPTIONS", "sip:sosdesk@192.0.2.1");
            m.push("Via", via);
            m.push("Via", "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower");
            m.stamp_received(src);
            m.response(200, "OK", Some("t"))
                .headers
                .iter()
                .filter(|h| h.name == "Via")
                .map(|h| h.value.clone())
                .collect::<Vec<_>>()
        };
        // RFC 3581 §4: rport gets the port, received the address, the rest stays as it came.
        assert_eq!(
            stamped("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport"),
            [
                "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport=40123;received=203.0.113.7",
                "SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower"
            ]
        );
        // RFC 3261 §18.2.1: received only, when the sent-by is not where it came from.
        assert_eq!(
            stamped("SIP/2.0/TCP phone.example.com;branch=z9hG4bK2")[0],
            "SIP/2.0/TCP phone.example.com;branch=z9hG4bK2;received=203.0.113.7"
        );
        // Nothing to say when the sent-by is the source and no rport is asked for.
        assert_eq!(
            stamped("SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK3")[0],
            "SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK3"
        );
        // Several values in one line: only the top one; a received already there is replaced.
        assert_eq!(
            stamped("SIP/2.0/UDP 10.0.0.5;rport;received=1.1.1.1;branch=z9hG4bK4, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK5")[0],
            "SIP/2.0/UDP 10.0.0.5;rport=40123;branch=z9hG4bK4;received=203.0.113.7, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bK5"
        );
        let v6: std::net::SocketAddr = "[2001:db8::7]:5062".parse().unwrap();
        let mut m = Message::request("OPTIONS", "sip:sosdesk@[2001:db8::1]");
        m.push("Via", "SIP/2.0/UDP [2001:db8::9];branch=z9hG4bK6;rport");
        m.stamp_received(v6);
        assert_eq!(m.header("Via"), Some("SIP/2.0/UDP [2001:db8::9];branch=z9hG4bK6;rport=5062;received=2001:db8::7"));
        // An unparsable Via is left alone (the parser answers it 400 anyway).
        let mut m = Message::request("OPTIONS", "sip:h");
        m.push("Via", "garbage");
        m.stamp_received(src);
        assert_eq!(m.header("Via"), Some("garbage"));
    }

    #[test]
    fn compact_names_expand() {
        assert_eq!(canonical_name("i"), "Call-ID");
        assert_eq!(canonical_name("L"), "Content-Length");
        assert_eq!(canonical_name("cseq"), "CSeq");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let v = r#""Bell, Alexander" <sip:a@b>;tag=1, <sip:c@d;x=1,2>, sip:e@f"#;
        let parts = split_comma_list(v);
        assert_eq!(parts, vec![r#""Bell, Alexander" <sip:a@b>;tag=1"#, "<sip:c@d;x=1,2>", "sip:e@f"]);
    }

    #[test]
    fn via_parses_and_rejects_empty_params() {
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport").unwrap();
        assert_eq!((v.host.as_str(), v.port, v.branch()), ("192.0.2.1", Some(5070), Some("z9hG4bK1")));
        assert_eq!(v.param("rport"), Some(""));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_err());
        let v6 = Via::parse("SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bKx").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[2001:db8::9]", Some(5061)));
    }
}
