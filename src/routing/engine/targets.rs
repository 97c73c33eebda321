//! Where each route's requests go: an IP literal as configured, or what its name resolved to
//! (RFC 3263, resolved by the I/O shell's `crate::dns` and handed in as
//! [`Engine::on_resolved`]). The emergency path never waits for DNS: it uses the last answer
//! (kept past its TTL while the resolver cannot refresh it, RFC 8767), and a route whose name
//! has never resolved fails over at once.

use super::*;
use crate::sip::rfc3263::SipTarget;

/// One route's targets.
pub(super) struct RouteTargets {
    pub(super) target: SipTarget,
    /// In RFC 3263 order; empty until the name has resolved.
    pub(super) peers: Vec<Peer>,
    /// Why the name has no answer (shown in the route failure).
    pub(super) error: Option<String>,
}

pub(super) fn route_targets(policies: &Policies) -> Vec<RouteTargets> {
    policies.routes.iter().map(route_target).collect()
}

/// A route's targets before its name (if it has one) has resolved.
pub(super) fn route_target(r: &crate::config::RouteConfig) -> RouteTargets {
    let target = r.target();
    let peers = target.literal().into_iter().collect();
    RouteTargets { target, peers, error: None }
}

/// The peer a route's probes and registration use before its name has resolved: nothing is
/// sent there (`probes.rs` fails the probe instead).
pub(super) fn placeholder_peer(r: &crate::config::RouteConfig) -> Peer {
    let t = r.target();
    t.literal().unwrap_or(Peer {
        transport: t.default_transport(),
        addr: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
    })
}

impl Engine {
    /// The names the I/O shell resolves and keeps fresh: each route, notification target and
    /// callback fallback given by name.
    pub fn names_to_resolve(&self) -> Vec<SipTarget> {
        let notify = self.policies.policies.iter().flat_map(|p| p.notify.iter()).filter_map(|(_, t)| match t {
            crate::notify::Target::Named { target, .. } => Some(target),
            _ => None,
        });
        let fallback = self.callbacks.fallback.iter().map(|(t, _)| t);
        let mut names: Vec<SipTarget> = Vec::new();
        for t in self.route_targets.iter().map(|t| &t.target).chain(notify).chain(fallback) {
            if t.literal().is_none() && !names.contains(t) {
                names.push(t.clone());
            }
        }
        names
    }

    /// Where a name (not a route's) last resolved to: its first target.
    pub(super) fn resolved_name(&self, target: &SipTarget) -> Option<Peer> {
        target.literal().or_else(|| self.names.get(target).and_then(|p| p.first().copied()))
    }

    /// A name's fresh answer (or why there is none: the last answer is kept).
    pub fn on_resolved(&mut self, target: &SipTarget, answer: Result<Vec<Peer>, String>, now: Now) {
        self.tick(now);
        if let Ok(peers) = &answer {
            if !peers.is_empty() {
                self.names.insert(target.clone(), peers.clone());
            }
        }
        for (i, t) in self.route_targets.iter_mut().enumerate().filter(|(_, t)| &t.target == target) {
            match &answer {
                Ok(peers) if !peers.is_empty() => {
                    // The weighted draw (RFC 2782) orders the same servers anew each time: only
                    // a new set of servers is news.
                    let sorted = |p: &[Peer]| {
                        let mut p = p.to_vec();
                        p.sort();
                        p
                    };
                    if sorted(&t.peers) != sorted(peers) {
                        tracing::info!(route = %self.policies.routes[i].name, %target, targets = ?peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(), "route resolved");
                    }
                    t.peers = peers.clone();
                    t.error = None;
                    // Probes and the trunk registration stay with their server while it is in
                    // the answer (a registration does not move at every refresh).
                    let keep = self.health.peer(i).filter(|p| peers.contains(p)).unwrap_or(peers[0]);
                    self.health.set_peer(i, keep, format!("{target} → {keep}"));
                    for trunk in self.trunks.iter_mut().filter(|tr| tr.route == i) {
                        if !peers.contains(&trunk.peer()) {
                            trunk.set_peer(keep);
                        }
                    }
                }
                Ok(_) => t.error = Some(format!("{target} resolved to no address")),
                Err(e) => t.error = Some(e.clone()),
            }
        }
    }

    /// Route `idx`'s targets, in order (none: its name has not resolved).
    pub(super) fn route_peers(&self, idx: usize) -> &[Peer] {
        self.route_targets.get(idx).map(|t| t.peers.as_slice()).unwrap_or(&[])
    }

    /// Why route `idx` has no target.
    pub(super) fn unresolved_reason(&self, idx: usize) -> String {
        let t = &self.route_targets[idx];
        match &t.error {
            Some(e) => format!("{} did not resolve: {e}", t.target),
            None => format!("{} has not resolved yet", t.target),
        }
    }

    /// The host[:port] written into requests to route `idx` (its `domain`, else its address).
    pub(super) fn route_host(&self, idx: usize) -> String {
        let r = &self.policies.routes[idx];
        r.domain.clone().unwrap_or_else(|| r.target().host_port_str())
    }
}
