//! The engine's side of live route health (`routing::health`): the OPTIONS probes sent when
//! due, their answers, timeouts and transport failures, and each change of a route's state as
//! an audit record (`route-up` / `route-down`). New calls' plans put the routes that are down
//! last (`inbound.rs`).

use super::*;
use crate::routing::health::{HealthChange, RouteHealthReport};
use crate::routing::trunk_register::{Step, TrunkRegistration};

/// The routes that register with their provider (`register = true`, with credentials).
pub(super) fn trunk_registrations(policies: &Policies, local: &LocalEndpoint, now: Instant) -> Vec<TrunkRegistration> {
    (policies.routes.iter().enumerate()).filter_map(|(i, r)| trunk_registration(i, r, local, now)).collect()
}

/// Route `i`'s registration, if it registers.
pub(super) fn trunk_registration(
    i: usize,
    r: &crate::config::RouteConfig,
    local: &LocalEndpoint,
    now: Instant,
) -> Option<TrunkRegistration> {
    if !r.register {
        return None;
    }
    let (user, crate::config::Secret(password)) = (r.username.as_ref()?, r.password.as_ref()?);
    let domain = r.domain.clone().unwrap_or_else(|| r.target().host_port_str());
    let call_id = ids::new_call_id(&local.host);
    let expires = r.expires.unwrap_or(3600);
    Some(TrunkRegistration::new(
        i,
        targets::placeholder_peer(r),
        &domain,
        user,
        password,
        r.realm.as_deref(),
        expires,
        call_id,
        now,
    ))
}

impl Engine {
    /// Probes that timed out fail; probes that are due leave (an OPTIONS outside any dialog,
    /// RFC 3261 §11, over the route's own transport, to its domain or address).
    pub(super) fn probe_routes(&mut self, now: Instant) {
        let (abandon, changes) = self.health.on_timeout(now, self.now.wall);
        for key in abandon {
            self.tx.abandon(&key);
        }
        self.audit_health(changes);
        self.register_trunks(now);
        for (route, peer) in self.health.due(now) {
            if route >= self.policies.routes.len() {
                continue;
            }
            // A name that has not resolved: the probe fails without leaving.
            if self.route_peers(route).is_empty() {
                let change = self.health.failed(route, self.unresolved_reason(route), now, self.now.wall);
                self.audit_health(change.into_iter().collect());
                continue;
            }
            let host = self.route_host(route);
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

    /// Trunk registrations: the REGISTERs that timed out fail, those that are due leave.
    fn register_trunks(&mut self, now: Instant) {
        for i in 0..self.trunks.len() {
            if let Some(key) = self.trunks[i].on_timeout(now) {
                self.tx.abandon(&key);
            }
            let peer = self.trunks[i].peer();
            if self.route_peers(self.trunks[i].route).is_empty() {
                continue;
            }
            let via = self.local.via(peer.transport, &ids::new_branch());
            let contact = self.local.contact(peer.transport);
            if let Some(m) = self.trunks[i].due(now, via, &contact) {
                let key = self.tx.send_request(&m, peer, now);
                self.trunks[i].sent(key, m, now);
            }
        }
    }

    /// A final response to a probe or a trunk REGISTER (`key` is one of theirs).
    pub(super) fn on_probe_response(&mut self, key: &str, msg: &Message, now: Instant) {
        let status = msg.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        if let Some(i) = self.trunks.iter().position(|t| t.owns(key)) {
            let peer = self.trunks[i].peer();
            let via = self.local.via(peer.transport, &ids::new_branch());
            if let Step::Send(m) = self.trunks[i].on_response(msg, via, now, self.now.wall) {
                let key = self.tx.send_request(&m, peer, now);
                self.trunks[i].sent(key, m, now);
            }
            return;
        }
        let change = self.health.on_response(key, status, msg.status_reason(), now, self.now.wall);
        self.audit_health(change.into_iter().collect());
    }

    /// The transport could not reach `peer`: a probe waiting there fails now.
    pub(super) fn probe_unreachable(&mut self, peer: Peer) {
        let now = self.now.mono;
        for t in self.trunks.iter_mut().filter(|t| t.peer() == peer) {
            if let Some(key) = t.on_unreachable(now) {
                self.tx.abandon(&key);
            }
        }
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
        let mut report = self.health.report();
        for t in &self.trunks {
            if let Some(r) = report.get_mut(t.route) {
                r.registration = Some(t.state.clone());
            }
        }
        // Routes a reload left to no policy are no longer the admin's concern.
        (report.into_iter().enumerate()).filter(|(i, _)| !self.health.is_retired(*i)).map(|(_, r)| r).collect()
    }
}
