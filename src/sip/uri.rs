//! URIs (RFC 3261 §19.1, RFC 3966 `tel:`, RFC 5031 `urn:service:`) and name-addr values
//! (From, To, Contact, P-Asserted-Identity; RFC 3261 §20.10, §25.1).

/// RFC 3261 §25.1 `token` characters.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// Lower-cased scheme: `sip`, `sips`, `tel`, `urn`, …
    pub scheme: String,
    /// User part of a sip/sips URI, percent-escapes kept as sent.
    pub user: Option<String>,
    /// Host of a sip/sips URI (IPv6 references keep their brackets).
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
    /// `?headers` of a sip/sips URI, as sent.
    pub headers: Option<String>,
    /// Everything after `scheme:` for schemes other than sip/sips (`+1-201-555-0123;ext=1`,
    /// `service:sos`).
    pub opaque: String,
}

impl Uri {
    pub fn parse(s: &str) -> Result<Uri, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty URI".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
            return Err(format!("URI {s:?} contains whitespace or angle brackets"));
        }
        let (scheme, rest) = s.split_once(':').ok_or_else(|| format!("URI {s:?} has no scheme"))?;
        if scheme.is_empty()
            || !scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(format!("URI {s:?} has an invalid scheme"));
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Ok(Uri {
                scheme,
                user: None,
                host: String::new(),
                port: None,
                params: Vec::new(),
                headers: None,
                opaque: rest.to_string(),
            });
        }
        // The user part may contain ';' and '?' (RFC 3261 §25.1 user-unreserved; RFC 4475
        // §3.1.1.2, §3.1.1.9) but never an unescaped '@', and neither may the headers; so the
        // '@' delimits the userinfo, and '?' starts headers only after the host.
        let (user, after_user) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (hostpart, headers) = match after_user.split_once('?') {
            Some((m, h)) => (m, Some(h.to_string())),
            None => (after_user, None),
        };
        let user = match user {
            Some("") => return Err(format!("URI {s:?} has an empty user part")),
            Some(u) => Some(u.split(':').next().unwrap_or(u).to_string()),
            None => None,
        };
        let mut segs = hostpart.split(';');
        let hostport = segs.next().unwrap_or("");
        let (host, port) = split_host_port(hostport)?;
        let mut params = Vec::new();
        for p in segs {
            if p.is_empty() {
                continue;
            }
            match p.split_once('=') {
                Some((k, v)) => params.push((k.to_ascii_lowercase(), Some(v.to_string()))),
                None => params.push((p.to_ascii_lowercase(), None)),
            }
        }
        Ok(Uri { scheme, user, host, port, params, headers, opaque: String::new() })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn is_sip(&self) -> bool {
        self.scheme == "sip" || self.scheme == "sips"
    }

    /// The telephone number a URI names: the user part of a sip/sips URI, or the number of a
    /// `tel:` URI (RFC 3966 §5.1: visual separators `-` `.` `(` `)` removed), percent-decoded.
    pub fn number(&self) -> Option<String> {
        let raw = if self.is_sip() {
            let u = self.user.as_deref()?;
            // RFC 3261 §19.1.6: a telephone-subscriber user part may carry ;params.
            u.split(';').next().unwrap_or(u).to_string()
        } else if self.scheme == "tel" {
            self.opaque.split(';').next().unwrap_or("").to_string()
        } else {
            return None;
        };
        let decoded = percent_decode(&raw);
        Some(decoded.chars().filter(|c| !"-.()".contains(*c)).collect())
    }
}

/// Split `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty host".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| format!("unterminated IPv6 reference in {s:?}"))?;
        let host = format!("[{}]", &rest[..end]);
        let after = &rest[end + 1..];
        if after.is_empty() {
            return Ok((host, None));
        }
        let port = after.strip_prefix(':').ok_or_else(|| format!("junk after IPv6 reference in {s:?}"))?;
        return Ok((host, Some(port.parse().map_err(|_| format!("invalid port in {s:?}"))?)));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => {
            if h.is_empty() {
                return Err(format!("empty host in {s:?}"));
            }
            Ok((h.to_string(), Some(p.parse().map_err(|_| format!("invalid port in {s:?}"))?)))
        }
        None => Ok((s.to_string(), None)),
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            // Work on bytes: slicing the &str here could split a multi-byte character.
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A name-addr or addr-spec with header parameters: `"Alice" <sip:a@b>;tag=x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped. Caller-controlled: show as text only.
    pub display: Option<String>,
    /// The URI between `<` and `>` (or the addr-spec), as sent.
    pub uri: String,
    pub params: Vec<(String, Option<String>)>,
}

impl NameAddr {
    pub fn parse(v: &str) -> Result<NameAddr, String> {
        let v = v.trim();
        if v == "*" {
            return Ok(NameAddr { display: None, uri: "*".into(), params: Vec::new() });
        }
        let (display, after_display) = if let Some(rest) = v.strip_prefix('"') {
            // quoted-string (RFC 3261 §25.1): backslash escapes one character.
            let mut out = String::new();
            let mut chars = rest.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            out.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => out.push(c),
                }
            }
            let end = end.ok_or_else(|| "unterminated quoted display name".to_string())?;
            let after = rest[end + 1..].trim_start();
            if !after.starts_with('<') {
                return Err("quoted display name not followed by <URI>".into());
            }
            (Some(out), after)
        } else if let Some(lt) = v.find('<') {
            let name = v[..lt].trim();
            // An unquoted display name is a sequence of tokens (RFC 3261 §25.1 display-name).
            if !name.split_whitespace().all(is_token) {
                return Err(format!("display name {name:?} must be quoted (it has non-token characters)"));
            }
            (if name.is_empty() { None } else { Some(name.split_whitespace().collect::<Vec<_>>().join(" ")) }, &v[lt..])
        } else {
            (None, v)
        };

        let (uri, rest) = if let Some(inner) = after_display.strip_prefix('<') {
            let gt = inner.find('>').ok_or_else(|| "missing '>' after URI".to_string())?;
            let uri = &inner[..gt];
            if uri.trim() != uri || uri.is_empty() {
                return Err("whitespace inside <URI> (RFC 4475 §3.1.2.14)".into());
            }
            (uri.to_string(), &inner[gt + 1..])
        } else {
            // addr-spec: RFC 3261 §20 — a URI with ',', '?' or ';' must be in angle brackets;
            // a ';' here starts header parameters.
            let (uri, rest) = match after_display.find(';') {
                Some(i) => (&after_display[..i], &after_display[i..]),
                None => (after_display, ""),
            };
            if uri.contains('?') || uri.contains(',') {
                return Err("a URI with '?' or ',' must be enclosed in <> (RFC 3261 §20)".into());
            }
            (uri.trim().to_string(), rest)
        };
        Uri::parse(&uri)?;
        let mut params = Vec::new();
        let rest = rest.trim();
        if !rest.is_empty() {
            let rest = rest.strip_prefix(';').ok_or_else(|| format!("junk after URI: {rest:?}"))?;
            for p in rest.split(';') {
                let p = p.trim();
                if p.is_empty() {
                    return Err("empty header parameter".into());
                }
                match p.split_once('=') {
                    Some((k, val)) => params.push((k.trim().to_ascii_lowercase(), Some(val.trim().to_string()))),
                    None => params.push((p.to_ascii_lowercase(), None)),
                }
            }
        }
        Ok(NameAddr { display, uri, params })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    pub fn parsed_uri(&self) -> Option<Uri> {
        Uri::parse(&self.uri).ok()
    }
}

/// Quote a display name for a header (RFC 3261 §25.1 quoted-string).
pub fn quote_display(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                s.push('\\');
                s.push(c);
            }
            // CR/LF would end the header line: never let a caller-controlled name inject headers.
            '\r' | '\n' => s.push(' '),
            _ => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_with_user_params() {
        let u = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        let u = Uri::parse("sip:+1-425-555-0100@[2001:db8::1]:5070;user=phone").unwrap();
        assert_eq!(u.number().as_deref(), Some("+14255550100"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("user"), Some("phone"));
    }

    #[test]
    fn tel_and_urn() {
        let t = Uri::parse("tel:9-1-1;phone-context=+1").unwrap();
        assert_eq!(t.number().as_deref(), Some("911"));
        let n = Uri::parse("urn:service:sos.police").unwrap();
        assert_eq!((n.scheme.as_str(), n.opaque.as_str()), ("urn", "service:sos.police"));
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("sip:").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""Bell, \"Alex\"" <sip:a@b.com>;tag=43"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Bell, "Alex""#));
        assert_eq!(n.param("tag"), Some("43"));
        let n = NameAddr::parse("sip:caller@example.net;tag=134").unwrap();
        assert_eq!((n.uri.as_str(), n.param("tag")), ("sip:caller@example.net", Some("134")));
        let n = NameAddr::parse("Alice  Smith <sip:a@b>").unwrap();
        assert_eq!(n.display.as_deref(), Some("Alice Smith"));
        assert!(NameAddr::parse(r#""Mr. J. User <sip:j@e.com>"#).is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse("< sip:t@e.org >").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E").is_err());
    }

    #[test]
    fn display_quoting_blocks_header_injection() {
        assert_eq!(quote_display("a\"b\r\nVia: x"), r#""a\"b  Via: x""#);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("u%40x%2"), "u@x%2");
        assert_eq!(percent_decode("%39%31%31"), "911");
    }
}
