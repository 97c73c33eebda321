//! Emergency first: which lane a received message waits in before the engine handles it.
//!
//! The UK requirements (../shared/background) ask that emergency calls be exempt from overload
//! controls and completed in preference to other traffic. Every message is parsed and triaged
//! as soon as it is read, before it can wait behind anything:
//!
//! - **Urgent**: an INVITE to an emergency or test number of any policy (or `urn:service:sos`),
//!   a callback to an ELIN, a desk joining a call, every request inside a dialog (a To tag),
//!   ACK, CANCEL, BYE, and every response (a provider answering an emergency INVITE). Never
//!   bounded, never shed.
//! - **Ordinary**: everything else — ordinary INVITEs, REGISTER, OPTIONS, MESSAGE, unknown
//!   methods, malformed messages. Served after the urgent lane; when the core falls behind,
//!   shed first (503 with Retry-After, then dropped unread past a hard bound).
//!
//! A sender can put junk in the urgent lane (a response or an in-dialog request to nothing),
//! but it gains little: such messages are the cheapest the engine handles (no transaction is
//! created), and the urgent lane is served in order, so an emergency INVITE waits at most
//! behind what arrived before it, never behind what is shed.

use std::collections::HashSet;

use super::classify::classify;
use super::engine::conference_target;
use crate::config::Config;
use crate::policy::Policies;
use crate::sip::{Message, Uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Urgent,
    Ordinary,
}

/// What triage needs of the config: every policy's emergency numbers and every ELIN.
pub struct Triage {
    policies: Policies,
    elins: HashSet<String>,
}

impl Triage {
    pub fn new(cfg: &Config) -> Triage {
        let policies = Policies::from_config(cfg);
        let elins = policies.all_elins().map(str::to_string).collect();
        Triage { policies, elins }
    }

    pub fn lane(&self, msg: &Message) -> Lane {
        if !msg.is_request() || msg.to_tag().is_some() {
            return Lane::Urgent;
        }
        match msg.method() {
            "ACK" | "CANCEL" | "BYE" => Lane::Urgent,
            "INVITE" if self.is_urgent_invite(msg.request_uri().unwrap_or("")) => Lane::Urgent,
            _ => Lane::Ordinary,
        }
    }

    fn is_urgent_invite(&self, ruri: &str) -> bool {
        if self.policies.policies.iter().any(|p| classify(ruri, p).is_some()) || conference_target(ruri).is_some() {
            return true;
        }
        let number = Uri::parse(ruri).ok().and_then(|u| u.number());
        number.is_some_and(|n| self.elins.contains(&n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_datagram;

    fn triage() -> Triage {
        let text = include_str!("../../examples/lab.toml");
        Triage::new(&Config::from_toml(text, std::path::Path::new("lab.toml")).expect("lab config"))
    }

    fn request(method: &str, ruri: &str, to_tag: bool) -> Message {
        let tag = if to_tag { ";tag=x" } else { "" };
        let raw = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\n\
To: <{ruri}>{tag}\r\nCall-ID: c\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        parse_datagram(raw.as_bytes()).unwrap()
    }

    #[test]
    fn emergency_work_is_urgent_and_the_rest_ordinary() {
        let t = triage();
        let urgent = [
            request("INVITE", "sip:911@127.0.0.1", false),
            request("INVITE", "sip:9911@127.0.0.1", false),
            request("INVITE", "sip:933@127.0.0.1", false),
            request("INVITE", "urn:service:sos.fire", false),
            request("INVITE", "sip:conf-0123456789abcdef@127.0.0.1", false),
            request("INVITE", "sip:4255550123@127.0.0.1", true),
            request("CANCEL", "sip:911@127.0.0.1", false),
            request("ACK", "sip:911@127.0.0.1", false),
            request("BYE", "sip:x@127.0.0.1", true),
            request("UPDATE", "sip:x@127.0.0.1", true),
        ];
        for m in &urgent {
            assert_eq!(t.lane(m), Lane::Urgent, "{}", String::from_utf8_lossy(&m.to_bytes()));
        }
        let response = parse_datagram(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(t.lane(&response), Lane::Urgent);
        let ordinary = [
            request("INVITE", "sip:4255550123@127.0.0.1", false),
            request("REGISTER", "sip:127.0.0.1", false),
            request("OPTIONS", "sip:127.0.0.1", false),
            request("MESSAGE", "sip:desk@127.0.0.1", false),
            request("SUBSCRIBE", "sip:911@127.0.0.1", false),
        ];
        for m in &ordinary {
            assert_eq!(t.lane(m), Lane::Ordinary, "{}", String::from_utf8_lossy(&m.to_bytes()));
        }
    }

    #[test]
    fn a_callback_to_an_elin_is_urgent() {
        let t = triage();
        let elin = t.elins.iter().next().cloned().expect("the lab config has ELINs");
        assert_eq!(t.lane(&request("INVITE", &format!("sip:{elin}@127.0.0.1"), false)), Lane::Urgent);
    }
}
