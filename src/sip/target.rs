//! Where a configured `sip:` URI is sent: its transport and socket address. Only IP literals:
//! no DNS on the emergency path (a host name would make routing wait on a resolver).

use std::net::{IpAddr, SocketAddr};

use super::transaction::{Peer, Transport};
use super::Uri;

/// Resolve a `sip:` URI with an IP literal host to where to send (RFC 3261 §19.1.1 defaults:
/// port 5060, UDP unless `transport=tcp`). Returns the peer and the URI as given (the
/// Request-URI to use).
pub fn target_of_uri(uri: &str) -> Result<(Peer, String), String> {
    check_bare_uri(uri)?;
    let u = Uri::parse(uri).map_err(|e| format!("{uri:?}: {e}"))?;
    if !u.is_sip() {
        return Err(format!("{uri:?} is not a sip: URI"));
    }
    let host = u.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().map_err(|_| format!("{uri:?}: the host must be an IP address"))?;
    // `sips:` is TLS (RFC 5630 §3.1.1), on 5061 unless a port is given (RFC 3261 §19.1.2).
    let transport = match u.param("transport") {
        _ if u.scheme.eq_ignore_ascii_case("sips") => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        _ => Transport::Udp,
    };
    let port = if transport == Transport::Tls { 5061 } else { 5060 };
    Ok((Peer { transport, addr: SocketAddr::new(ip, u.port.unwrap_or(port)) }, uri.to_string()))
}

/// A `sip:`/`sips:` URI sosdesk can send to: an IP literal, or a name it resolves (RFC 3263).
pub fn check_target_uri(uri: &str) -> Result<(), String> {
    check_bare_uri(uri)?;
    let u = Uri::parse(uri).map_err(|e| format!("{uri:?}: {e}"))?;
    if !u.is_sip() {
        return Err(format!("{uri:?} is not a sip: URI"));
    }
    super::rfc3263::SipTarget::parse(uri).map(|_| ())
}

/// A URI sosdesk will write into a Request-URI as given must be one as it goes on the wire: no
/// white space, control characters, angle brackets or quotes (RFC 3261 §25.1; a space inside
/// `<…>` once went out as `MESSAGE sip:…:5090  SIP/2.0`, which receivers reject).
pub fn check_bare_uri(uri: &str) -> Result<(), String> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"')) {
        return Err(format!("{uri:?}: write the bare URI, without spaces, angle brackets or quotes"));
    }
    // Headers (`?…`, even an empty `?`) have no place in a Request-URI (RFC 3261 §19.1.5):
    // sent as given, receivers refuse the request (found by the config fuzz target).
    if uri.contains('?') {
        return Err(format!("{uri:?}: a URI to send to carries no headers (`?…`)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_only() {
        let (p, u) = target_of_uri("sip:desk@127.0.0.1:5090;transport=tcp").unwrap();
        assert_eq!(
            (p.transport, p.addr.to_string(), u.as_str()),
            (Transport::Tcp, "127.0.0.1:5090".into(), "sip:desk@127.0.0.1:5090;transport=tcp")
        );
        let (p, _) = target_of_uri("sip:[::1]").unwrap();
        assert_eq!((p.transport, p.addr.to_string()), (Transport::Udp, "[::1]:5060".into()));
        let (p, _) = target_of_uri("sips:desk@192.0.2.4").unwrap();
        assert_eq!((p.transport, p.addr.to_string()), (Transport::Tls, "192.0.2.4:5061".into()));
        let (p, _) = target_of_uri("sip:desk@192.0.2.4:5071;transport=TLS").unwrap();
        assert_eq!((p.transport, p.addr.to_string()), (Transport::Tls, "192.0.2.4:5071".into()));
        assert!(target_of_uri("sip:desk@example.com").unwrap_err().contains("IP address"));
        assert!(target_of_uri("tel:+15551234").is_err());
        for bad in
            ["<sip:desk@127.0.0.1:5090 >", "sip:desk@127.0.0.1:5090 ", " sip:desk@127.0.0.1", "sip:de\tsk@127.0.0.1"]
        {
            assert!(target_of_uri(bad).unwrap_err().contains("bare URI"), "{bad:?}");
        }
        for bad in ["sip:security@127.0.0.1?", "sip:security@127.0.0.1?Subject=x"] {
            assert!(target_of_uri(bad).unwrap_err().contains("no headers"), "{bad:?}");
        }
    }
}
