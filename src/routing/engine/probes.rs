//! The engine's side of live route health (`routing::health`): the OPTIONS probes sent when
//! due, their answers, timeouts and transport failures, and each change of a route's state as
//! an audit record (`route-up` / `route-down`). New calls' plans put the routes that are down
//! last (`inbound.rs`).

use super::*;
use crate::routing::health::{HealthChange, RouteHealthReport};

impl Engine {
    /// Probes that timed out fail; probes that are due leave (an OPTIONS outside any dialog,
    /// RFC 3261 §11, over the route's own transport, to its domain or address).
    pub(super) fn probe_routes(&mut self, now: Instant) {
        let (abandon, changes) = self.health.on_timeout(now, self.now.wall);
        for key in abandon {
            self.tx.abandon(&key);
        }
        self.audit_health(changes);
        for (route, peer) in self.health.due(now) {
            let Some(r) = self.policies.routes.get(route) else { continue };
            let host = r.domain.clone().unwrap_or_else(|| r.address.to_string());
            let mut m = Message::request("OPTIONS", &format!("sip:{host}"));
            m.push("Via", self.local.via(peer.transport, &ids::new_branch()));
            m.push("Max-Forwards", "70");
            m.push("From", format!("<sip:sosdesk@{}>;tag={}", self.local.host, ids::new_tag()));
            m.push("To", format!("<sip:{host}>"));
            m.push("Call-ID", ids::new_call_id(&self.local.host));
            m.push("CSeq", "1 OPTIONS");
            m.push("Accept", "application/sdp");
            let key = self.tx.send_request(&m, peer, now);
            self.health.sent(route, key, now);
        }
    }

    /// A final response to a probe (`key` is one of [`RouteHealth::owns`](crate::routing::health::RouteHealth::owns)).
    pub(super) fn on_probe_response(&mut self, key: &str, msg: &Message, now: Instant) {
        let status = msg.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        let change = self.health.on_response(key, status, msg.status_reason(), now, self.now.wall);
        self.audit_health(change.into_iter().collect());
    }

    /// The transport could not reach `peer`: a probe waiting there fails now.
    pub(super) fn probe_unreachable(&mut self, peer: Peer) {
        let (abandon, changes) = self.health.on_unreachable(peer, self.now.wall);
        for key in abandon {
            self.tx.abandon(&key);
        }
        self.audit_health(changes);
    }

    fn audit_health(&mut self, changes: Vec<HealthChange>) {
        for c in changes {
            self.out.audit_only.push_back(CallEvent::route_health(c.route, c.up, c.detail, self.now.wall));
        }
    }

    /// Each route's state, last answer and round-trip time.
    pub fn route_health(&self) -> Vec<RouteHealthReport> {
        self.health.report()
    }
}
