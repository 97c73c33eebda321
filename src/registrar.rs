//! The registrar (RFC 3261 §10.3) for desks and SIP clients: which contacts each desk account
//! has registered, so a notification URI naming an account or group reaches them.
//!
//! Sans-I/O: the engine authenticates the REGISTER (digest, `[[desk]]` accounts) and hands the
//! proven user here; this module applies the request to the bindings and says what to answer.
//! Bindings live in memory: a core restart forgets them and clients register again (they
//! refresh well within `expires` anyway). With several nodes on one store, the UDP bindings
//! other nodes hold are handed in too ([`Registrar::set_remote`], `crate::shared::registrations`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sip::transaction::Peer;
use crate::sip::{split_comma_list, Message, NameAddr, Uri};

/// Shortest registration accepted (RFC 3261 §10.3 step 7: 423 with Min-Expires below it).
pub const MIN_EXPIRES: u64 = 30;
/// Longest registration granted: a longer one is shortened.
pub const MAX_EXPIRES: u64 = 3600;
/// When the request names none.
const DEFAULT_EXPIRES: u64 = 3600;

#[derive(Debug, Clone)]
struct Binding {
    uri: String,
    peer: Peer,
    expires: Instant,
    call_id: String,
    cseq: u32,
}

/// What the registrar answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterReply {
    /// 200: the user's current bindings as `Contact` values (`<uri>;expires=N`).
    Ok { contacts: Vec<String> },
    /// Any other status, with extra headers (Min-Expires on 423) and a reason for the log.
    Refuse { status: u16, headers: Vec<(&'static str, String)>, reason: String },
}

#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Vec<Binding>>,
    /// What other nodes' registrars hold (UDP contacts only: a TCP or TLS flow ends at the
    /// node it was opened to), as they last told it through the store.
    remote: HashMap<String, Vec<Binding>>,
}

/// A contact that another node registered, reachable from here: (user, Contact URI, where to
/// send over UDP, until when).
pub type RemoteBinding = (String, String, Peer, Instant);

impl Registrar {
    pub fn new() -> Registrar {
        Registrar::default()
    }

    /// Apply an authenticated REGISTER from `user` (RFC 3261 §10.3 steps 5-8).
    pub fn register(&mut self, user: &str, req: &Message, peer: Peer, now: Instant) -> RegisterReply {
        let refuse = |status: u16, reason: String| RegisterReply::Refuse { status, headers: Vec::new(), reason };
        // Step 5: an account registers its own address of record only.
        let aor_user = req.to().and_then(|t| t.parsed_uri()).and_then(|u| u.user);
        if aor_user.as_deref() != Some(user) {
            return refuse(403, format!("{user:?} may register only its own address, not {aor_user:?}"));
        }
        let call_id = req.call_id().unwrap_or("").to_string();
        let cseq = req.cseq().map(|c| c.0).unwrap_or(0);
        let header_expires = req.header("Expires").map(|v| v.trim().parse::<u64>());
        if let Some(Err(_)) = header_expires {
            return refuse(400, "Expires is not a number".into());
        }
        let header_expires = header_expires.and_then(Result::ok);
        let mut contacts = Vec::new();
        for v in req.headers_named("Contact").flat_map(split_comma_list) {
            match NameAddr::parse(&v) {
                Ok(c) => contacts.push(c),
                Err(e) => return refuse(400, format!("bad Contact {v:?}: {e}")),
            }
        }
        // Step 6: `*` removes every binding, and only with Expires: 0 and no other contact.
        if contacts.iter().any(|c| c.uri == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return refuse(400, "Contact: * needs Expires: 0 and no other contact".into());
            }
            // The step 7 check for every binding (§10.3 step 6): a delayed or retransmitted
            // removal must not wipe a newer registration made on the same Call-ID.
            let stale = |b: &Binding| b.call_id == call_id && cseq <= b.cseq;
            if self.bindings.get(user).is_some_and(|list| list.iter().any(stale)) {
                return refuse(500, "out-of-order REGISTER (CSeq not above the binding's)".into());
            }
            self.bindings.remove(user);
            return RegisterReply::Ok { contacts: Vec::new() };
        }
        let mut changes = Vec::with_capacity(contacts.len());
        for c in &contacts {
            let Ok(uri) = Uri::parse(&c.uri) else {
                return refuse(400, format!("bad Contact URI {:?}", c.uri));
            };
            if !uri.is_sip() {
                return refuse(400, format!("{:?} is not a sip: contact", c.uri));
            }
            let expires = match c.param("expires").map(|e| e.trim().parse::<u64>()) {
                Some(Ok(e)) => e,
                Some(Err(_)) => return refuse(400, "a Contact's expires is not a number".into()),
                None => header_expires.unwrap_or(DEFAULT_EXPIRES),
            };
            if expires > 0 && expires < MIN_EXPIRES {
                return RegisterReply::Refuse {
                    status: 423,
                    headers: vec![("Min-Expires", MIN_EXPIRES.to_string())],
                    reason: format!("expires {expires} is below {MIN_EXPIRES}"),
                };
            }
            changes.push((c.uri.clone(), expires.min(MAX_EXPIRES), deliver_to(&uri, peer)));
        }
        let list = self.bindings.entry(user.to_string()).or_default();
        list.retain(|b| b.expires > now);
        // Step 7: a request older than what set a binding is out of order.
        for (uri, _, _) in &changes {
            if list.iter().any(|b| same_uri(&b.uri, uri) && b.call_id == call_id && cseq <= b.cseq) {
                return refuse(500, "out-of-order REGISTER (CSeq not above the binding's)".into());
            }
        }
        for (uri, expires, dest) in changes {
            list.retain(|b| !same_uri(&b.uri, &uri));
            if expires > 0 {
                list.push(Binding {
                    uri,
                    peer: dest,
                    expires: now + Duration::from_secs(expires),
                    call_id: call_id.clone(),
                    cseq,
                });
            }
        }
        let contacts = list
            .iter()
            .map(|b| format!("<{}>;expires={}", b.uri, b.expires.saturating_duration_since(now).as_secs()))
            .collect();
        if list.is_empty() {
            self.bindings.remove(user);
        }
        RegisterReply::Ok { contacts }
    }

    /// The live contacts of `user`: its own, then those other nodes hold that it has not.
    pub fn contacts(&self, user: &str, now: Instant) -> Vec<Contact> {
        let own = self.bindings.get(user).into_iter().flatten().filter(|b| b.expires > now);
        let mut out: Vec<Contact> =
            own.map(|b| Contact { user: user.to_string(), uri: b.uri.clone(), peer: b.peer }).collect();
        for b in self.remote.get(user).into_iter().flatten().filter(|b| b.expires > now) {
            if !out.iter().any(|c| same_uri(&c.uri, &b.uri)) {
                out.push(Contact { user: user.to_string(), uri: b.uri.clone(), peer: b.peer });
            }
        }
        out
    }

    /// The bindings of `user` that another node can reach (UDP), with their expiry: what this
    /// node shares after each REGISTER.
    pub fn shareable(&self, user: &str, now: Instant) -> Vec<(String, Peer, Instant)> {
        use crate::sip::transaction::Transport;
        self.bindings
            .get(user)
            .into_iter()
            .flatten()
            .filter(|b| b.expires > now && b.peer.transport == Transport::Udp)
            .map(|b| (b.uri.clone(), b.peer, b.expires))
            .collect()
    }

    /// Replaces what other nodes hold with `list` (the whole of it, as the store has it now).
    pub fn set_remote(&mut self, list: Vec<RemoteBinding>) {
        self.remote.clear();
        for (user, uri, peer, expires) in list {
            let b = Binding { uri, peer, expires, call_id: String::new(), cseq: 0 };
            self.remote.entry(user).or_default().push(b);
        }
    }
}

/// Where requests for a contact go. Over UDP, the Contact's own address when it is an IP
/// literal on the host the REGISTER came from (RFC 3261 §10.3: the contact is where the client
/// wants requests; a tool may register from one port for a listener on another). Otherwise — TCP,
/// a contact named by host name, or a contact address that is not where the REGISTER came from (a
/// client behind NAT writes its private address) — the flow the REGISTER came over: its
/// connection, or its source address and port, which its NAT keeps open (RFC 3581, RFC 5626).
fn deliver_to(contact: &Uri, source: Peer) -> Peer {
    use crate::sip::transaction::Transport;
    let tcp = contact.param("transport").is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
    if source.transport == Transport::Udp && !tcp {
        if let Ok(ip) = contact.host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
            if ip == source.addr.ip() {
                return Peer {
                    transport: Transport::Udp,
                    addr: std::net::SocketAddr::new(ip, contact.port.unwrap_or(5060)),
                };
            }
        }
    }
    source
}

/// RFC 3261 §19.1.4 compares URIs part by part; contacts a client sends again are byte-for-byte
/// the same in practice, so a case-insensitive comparison is enough here.
fn same_uri(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Where a local user's registered contact is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The account it registered as.
    pub user: String,
    /// The Contact URI (the MESSAGE's Request-URI).
    pub uri: String,
    /// Where to send: the contact's address over UDP, the registration's flow over TCP (see
    /// `deliver_to`).
    pub peer: Peer,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

    fn peer() -> Peer {
        Peer { transport: Transport::Udp, addr: "127.0.0.1:5099".parse().unwrap() }
    }

    fn register(user: &str, contact: Option<&str>, expires: Option<&str>, cseq: u32) -> Message {
        let mut m = Message::request("REGISTER", "sip:127.0.0.1");
        m.push("Via", "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1");
        m.push("From", format!("<sip:{user}@127.0.0.1>;tag=1"));
        m.push("To", format!("<sip:{user}@127.0.0.1>"));
        m.push("Call-ID", "reg-1");
        m.push("CSeq", format!("{cseq} REGISTER"));
        if let Some(c) = contact {
            m.push("Contact", c);
        }
        if let Some(e) = expires {
            m.push("Expires", e);
        }
        m
    }

    #[test]
    fn a_client_behind_nat_is_reached_on_the_flow_its_register_came_from() {
        let udp = |a: &str| Peer { transport: crate::sip::transaction::Transport::Udp, addr: a.parse().unwrap() };
        let uri = |u: &str| Uri::parse(u).unwrap();
        // Its private address in the Contact, its NAT's public one as the source.
        let nat = deliver_to(&uri("sip:desk1@192.168.1.5:5060"), udp("203.0.113.7:40123"));
        assert_eq!(nat, udp("203.0.113.7:40123"));
        // The same host, another port: where the client asks (a tool's separate listener).
        let same = deliver_to(&uri("sip:desk1@127.0.0.1:5300"), udp("127.0.0.1:41000"));
        assert_eq!(same, udp("127.0.0.1:5300"));
        // A host name: the flow.
        assert_eq!(deliver_to(&uri("sip:desk1@phone.example"), udp("127.0.0.1:41000")), udp("127.0.0.1:41000"));
    }

    #[test]
    fn binds_refreshes_queries_and_removes() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        let reply =
            r.register("desk1", &register("desk1", Some("<sip:desk1@10.0.0.5:5070>"), Some("600"), 1), peer(), t0);
        assert_eq!(reply, RegisterReply::Ok { contacts: vec!["<sip:desk1@10.0.0.5:5070>;expires=600".into()] });
        assert_eq!(r.contacts("desk1", t0)[0].uri, "sip:desk1@10.0.0.5:5070");
        // UDP from another address than the Contact's (a client behind NAT): delivered on the
        // flow the REGISTER came over.
        assert_eq!(r.contacts("desk1", t0)[0].peer.addr, "127.0.0.1:5099".parse().unwrap());
        // A query (no Contact) lists the bindings.
        let q = r.register("desk1", &register("desk1", None, None, 2), peer(), t0 + Duration::from_secs(100));
        assert_eq!(q, RegisterReply::Ok { contacts: vec!["<sip:desk1@10.0.0.5:5070>;expires=500".into()] });
        // Expiry.
        assert!(r.contacts("desk1", t0 + Duration::from_secs(601)).is_empty());
        // expires=0 removes.
        r.register("desk1", &register("desk1", Some("<sip:desk1@10.0.0.5:5070>"), Some("600"), 3), peer(), t0);
        let gone =
            r.register("desk1", &register("desk1", Some("<sip:desk1@10.0.0.5:5070>;expires=0"), None, 4), peer(), t0);
        assert_eq!(gone, RegisterReply::Ok { contacts: vec![] });
        assert!(r.contacts("desk1", t0).is_empty());
    }

    #[test]
    fn refuses_what_rfc_3261_refuses() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        let status = |reply: RegisterReply| match reply {
            RegisterReply::Refuse { status, .. } => status,
            RegisterReply::Ok { .. } => 200,
        };
        // Another account's address of record.
        let mut m = register("desk2", Some("<sip:x@10.0.0.5>"), None, 1);
        assert_eq!(status(r.register("desk1", &m, peer(), t0)), 403);
        // Too brief: 423 with Min-Expires.
        m = register("desk1", Some("<sip:x@10.0.0.5>"), Some("5"), 1);
        match r.register("desk1", &m, peer(), t0) {
            RegisterReply::Refuse { status: 423, headers, .. } => {
                assert_eq!(headers, vec![("Min-Expires", "30".into())])
            }
            other => panic!("{other:?}"),
        }
        // `*` without Expires: 0.
        m = register("desk1", Some("*"), Some("60"), 1);
        assert_eq!(status(r.register("desk1", &m, peer(), t0)), 400);
        // Out of order: same Call-ID, CSeq not higher.
        assert_eq!(status(r.register("desk1", &register("desk1", Some("<sip:x@10.0.0.5>"), None, 5), peer(), t0)), 200);
        assert_eq!(status(r.register("desk1", &register("desk1", Some("<sip:x@10.0.0.5>"), None, 5), peer(), t0)), 500);
        // Too long is shortened.
        match r.register("desk1", &register("desk1", Some("<sip:x@10.0.0.5>"), Some("999999"), 6), peer(), t0) {
            RegisterReply::Ok { contacts } => assert_eq!(contacts, vec!["<sip:x@10.0.0.5>;expires=3600".to_string()]),
            other => panic!("{other:?}"),
        }
        // `*` with Expires: 0 removes all, unless it is older than a binding (a delayed copy).
        m = register("desk1", Some("*"), Some("0"), 6);
        assert_eq!(status(r.register("desk1", &m, peer(), t0)), 500);
        assert_eq!(r.contacts("desk1", t0).len(), 1);
        m = register("desk1", Some("*"), Some("0"), 7);
        assert_eq!(status(r.register("desk1", &m, peer(), t0)), 200);
        assert!(r.contacts("desk1", t0).is_empty());
    }
}
