//! Our half of a dialog (RFC 3261 §12): what a UA keeps to send requests inside it. Used by the
//! core's B2BUA for each leg of a call and by the desk app for its own calls into the core.

use super::message::split_comma_list;
use super::transaction::Peer;
use super::{Message, NameAddr};

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
    /// Where requests inside the dialog are sent.
    pub peer: Peer,
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
        let mut m = Message::request(method, &self.remote_target);
        m.push("Via", via);
        m.push("Max-Forwards", "70");
        for r in &self.route_set {
            m.push("Route", r.clone());
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
