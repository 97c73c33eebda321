//! Our half of a dialog (RFC 3261 §12): what a UA keeps to send requests inside it. Used by the
//! core's B2BUA for each leg of a call and by the desk app for its own calls into the core.

use super::message::split_comma_list;
use super::rfc3263::SipTarget;
use super::transaction::Peer;
use super::{Message, NameAddr, Uri};

/// One dialog as seen from our side (§12.1).
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Header value we send as From (includes our tag).
    pub local: String,
    /// Header value we send as To (includes the remote tag once known).
    pub remote: String,
    pub remote_tag: Option<String>,
    /// Request-URI for requests inside the dialog: the peer's Contact (§12.1.1, §12.1.2).
    pub remote_target: String,
    /// Record-Route values, in the order they go into Route headers (§12.2.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    /// Where the dialog's INVITE went (or came from): where requests inside the dialog are sent
    /// when [`Dialog::next_hop`] names nowhere sosdesk can reach.
    pub peer: Peer,
    /// An inbound dialog's: the host the peer named itself by (its INVITE's top Via sent-by).
    /// A next hop that names that host is the peer itself, found at the address its connection
    /// came from (`routing::engine`, after a close); any other name would need DNS.
    pub sender: Option<String>,
    /// The name the peer's TLS certificate must carry where it is reached again by the name it
    /// gave itself (set when its connection closes, `routing::engine`); else its address is.
    pub tls_name: Option<String>,
}

impl Dialog {
    /// The dialog of an INVITE we send (UAC side): the remote tag, target and route set come
    /// with the answer (§12.1.2).
    pub fn outbound(call_id: String, local: String, remote: String, target: String, peer: Peer) -> Dialog {
        Dialog {
            call_id,
            local,
            remote,
            remote_tag: None,
            remote_target: target,
            route_set: Vec::new(),
            local_cseq: 1,
            peer,
            sender: None,
            tls_name: None,
        }
    }

    /// The dialog of an INVITE we received (UAS side, §12.1.1): the caller's From is our To,
    /// its Contact our target (its From URI when it sent none), its Record-Route our route set.
    pub fn inbound(invite: &Message, local_tag: &str, local_cseq: u32, peer: Peer) -> Dialog {
        Dialog {
            call_id: invite.call_id().unwrap_or("").to_string(),
            local: format!("{};tag={local_tag}", invite.header("To").unwrap_or("")),
            remote: invite.header("From").unwrap_or("").to_string(),
            remote_tag: invite.from_tag(),
            remote_target: if invite.contact_uri().is_some() {
                contact_uri_text(invite)
            } else {
                invite.from().map(|f| f.uri).unwrap_or_default()
            },
            route_set: invite.header_values("Record-Route"),
            local_cseq,
            peer,
            sender: invite.top_via().map(|v| v.host),
            tls_name: None,
        }
    }

    /// The first To tag that a response to our INVITE brings becomes the remote tag (an early
    /// dialog, §12.1.2); later ones do not replace it.
    pub fn learn_remote_tag(&mut self, response: &Message) {
        if let (Some(tag), None) = (response.to_tag(), &self.remote_tag) {
            self.remote = response.header("To").unwrap_or("").to_string();
            self.remote_tag = Some(tag);
        }
    }

    /// A 2xx to our INVITE: its Contact is the remote target and its Record-Route, reversed, the
    /// route set (§12.1.2).
    pub fn confirm(&mut self, response: &Message) {
        if response.contact_uri().is_some() {
            self.remote_target = contact_uri_text(response);
        }
        let mut rr = response.header_values("Record-Route");
        rr.reverse();
        self.route_set = rr;
    }

    /// Where a request inside the dialog goes (§12.2.1.1, §8.1.2): the first route when the
    /// route set is not empty — a loose router (`;lr`) keeps the remote target as Request-URI, a
    /// strict one gets its own URI there, and either way the request is sent to it — else the
    /// remote target (the answer's Contact, §12.1.2). `Err` when that URI is no `sip:`/`sips:`
    /// URI sosdesk can send to (the caller falls back to [`Dialog::peer`] and says so).
    pub fn next_hop(&self) -> Result<SipTarget, String> {
        let uri = match self.route_set.first() {
            Some(r) => NameAddr::parse(r).map_err(|e| format!("Route {r:?}: {e}"))?.uri,
            None => self.remote_target.clone(),
        };
        if uri.is_empty() {
            return Err("no remote target".into());
        }
        SipTarget::parse(&uri)
    }

    /// Whether the first route is a strict router (no `lr` parameter, RFC 2543 style): it wants
    /// its own URI as Request-URI (§12.2.1.1).
    fn strict_first_route(&self) -> Option<String> {
        let uri = NameAddr::parse(self.route_set.first()?).ok()?.uri;
        let strict = Uri::parse(&uri).map(|u| u.param("lr").is_none()).unwrap_or(false);
        strict.then_some(uri)
    }

    /// A request inside the dialog (§12.2.1.1) with `via` as its Via. `cseq` given: reuse it
    /// (an ACK has its INVITE's number); otherwise the next local CSeq.
    pub fn request(&mut self, method: &str, cseq: Option<u32>, via: String) -> Message {
        let n = match cseq {
            Some(n) => n,
            None => {
                self.local_cseq += 1;
                self.local_cseq
            }
        };
        // A strict router takes the Request-URI; the remote target then rides as the last Route.
        let strict = self.strict_first_route();
        let mut m = Message::request(method, strict.as_deref().unwrap_or(&self.remote_target));
        m.push("Via", via);
        m.push("Max-Forwards", "70");
        for r in self.route_set.iter().skip(usize::from(strict.is_some())) {
            m.push("Route", r.clone());
        }
        if strict.is_some() {
            m.push("Route", format!("<{}>", self.remote_target));
        }
        m.push("From", self.local.clone());
        m.push("To", self.remote.clone());
        m.push("Call-ID", self.call_id.clone());
        m.push("CSeq", format!("{n} {method}"));
        m
    }
}

/// The first Contact URI of a message as written (what goes in a Request-URI), empty if none.
pub fn contact_uri_text(msg: &Message) -> String {
    msg.header("Contact")
        .and_then(|c| split_comma_list(c).into_iter().next())
        .and_then(|c| NameAddr::parse(&c).ok())
        .map(|n| n.uri)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_datagram;
    use crate::sip::rfc3263::Host;
    use crate::sip::transaction::Transport;

    fn dialog() -> Dialog {
        Dialog::outbound(
            "c1@10.0.0.1".into(),
            "<sip:sosdesk@10.0.0.1:5070>;tag=ours".into(),
            "<sip:officer@phones.example>".into(),
            "sip:officer@phones.example".into(),
            Peer { transport: Transport::Udp, addr: "192.0.2.10:5060".parse().unwrap() },
        )
    }

    /// A 200 to the INVITE with these Contact and Record-Route header lines.
    fn ok(extra: &str) -> Message {
        let raw = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa\r\n\
             From: <sip:sosdesk@10.0.0.1:5070>;tag=ours\r\nTo: <sip:officer@phones.example>;tag=theirs\r\n\
             Call-ID: c1@10.0.0.1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse_datagram(raw.as_bytes()).unwrap()
    }

    fn confirmed(extra: &str) -> Dialog {
        let mut d = dialog();
        let answer = ok(extra);
        d.learn_remote_tag(&answer);
        d.confirm(&answer);
        d
    }

    fn routes(m: &Message) -> Vec<String> {
        m.header_values("Route")
    }

    #[test]
    fn without_record_route_requests_go_to_the_contact_as_request_uri() {
        let mut d = confirmed("Contact: <sip:officer@192.0.2.20:5072;transport=udp>\r\n");
        let hop = d.next_hop().unwrap();
        assert_eq!((hop.host.clone(), hop.port), (Host::Ip("192.0.2.20".parse().unwrap()), Some(5072)));
        assert_eq!(hop.default_transport(), Transport::Udp);
        for (method, cseq) in [("ACK", Some(1)), ("BYE", None)] {
            let m = d.request(method, cseq, "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKb".into());
            assert_eq!(m.request_uri(), Some("sip:officer@192.0.2.20:5072;transport=udp"), "{method}");
            assert!(routes(&m).is_empty(), "{method}");
        }
    }

    #[test]
    fn a_loose_route_set_sends_to_the_first_route_with_the_contact_as_request_uri() {
        // The 2xx lists the proxies from the callee's side: reversed, the nearest comes first.
        let d0 = "Contact: <sip:officer@10.9.9.9>\r\n\
                  Record-Route: <sip:far.example;lr>\r\nRecord-Route: <sip:[2001:db8::7]:5080;lr>\r\n";
        let mut d = confirmed(d0);
        let hop = d.next_hop().unwrap();
        assert_eq!((hop.host.clone(), hop.port), (Host::Ip("2001:db8::7".parse().unwrap()), Some(5080)));
        let bye = d.request("BYE", None, "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKc".into());
        assert_eq!(bye.request_uri(), Some("sip:officer@10.9.9.9"));
        assert_eq!(routes(&bye), vec!["<sip:[2001:db8::7]:5080;lr>", "<sip:far.example;lr>"]);
    }

    #[test]
    fn a_strict_first_route_takes_the_request_uri_and_the_contact_rides_last() {
        let mut d = confirmed("Contact: <sip:officer@10.9.9.9>\r\nRecord-Route: <sip:old.example:5090>\r\n");
        let hop = d.next_hop().unwrap();
        assert_eq!((hop.host.clone(), hop.port), (Host::Name("old.example".into()), Some(5090)));
        let bye = d.request("BYE", None, "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKd".into());
        assert_eq!(bye.request_uri(), Some("sip:old.example:5090"));
        assert_eq!(routes(&bye), vec!["<sip:officer@10.9.9.9>"]);
    }

    #[test]
    fn an_ipv6_contact_on_another_port_is_the_next_hop() {
        let d = confirmed("Contact: \"Officer\" <sip:officer@[2001:db8::5]:5070>;expires=60\r\n");
        let hop = d.next_hop().unwrap();
        assert_eq!((hop.host.clone(), hop.port), (Host::Ip("2001:db8::5".parse().unwrap()), Some(5070)));
    }

    #[test]
    fn a_contact_sosdesk_cannot_send_to_is_an_error_not_a_panic() {
        for contact in ["<tel:+14255550100>", "<sip:officer@10.0.0.9;transport=sctp>", "<sip:officer@10.0.0.9:0>"] {
            let d = confirmed(&format!("Contact: {contact}\r\n"));
            assert!(d.next_hop().is_err(), "{contact}: {:?}", d.next_hop());
        }
        // A 2xx without a Contact leaves the Request-URI's target (the INVITE's).
        let d = confirmed("");
        assert_eq!(d.next_hop().unwrap().host, Host::Name("phones.example".into()));
        // A Route that is no name-addr.
        let mut d = confirmed("Contact: <sip:officer@10.9.9.9>\r\n");
        d.route_set = vec!["<sip:proxy.example;lr".into()];
        assert!(d.next_hop().is_err());
    }
}
