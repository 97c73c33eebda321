//! A new config for new calls (SIGHUP, `sosdesk reload`): policies, sites, routes, desk accounts,
//! notification groups and the callback fallback are replaced; every live call keeps the plan it
//! started with.
//!
//! A call's plan names routes by their index in `policies.routes`, so within a run that table
//! only grows: an unchanged route keeps its index, health and registration; a new or changed
//! route is appended; a route the new config no longer has is retired (no probes, no
//! registration, not reported) but stays where the plan of a call that started before reaches it.

use super::*;

/// What a reload changed in the routes, for its audit record.
#[derive(Debug, Default, PartialEq)]
pub struct Reconfigured {
    /// Routes new or changed (a changed route is a new one under the same name).
    pub added: Vec<String>,
    /// Routes no longer in the config.
    pub retired: Vec<String>,
}

impl Engine {
    /// Apply a validated config (`Config::validate`) to calls that start from now on.
    pub fn reconfigure(&mut self, cfg: &Config, now: Now) -> Reconfigured {
        self.tick(now);
        let mut new = Policies::from_config(cfg);
        let mut changed = Reconfigured::default();
        // Where each of the new config's routes is in the engine's table.
        let mut index = Vec::with_capacity(new.routes.len());
        for r in &new.routes {
            let i = match self.policies.routes.iter().position(|old| old == r) {
                Some(i) => i,
                None => {
                    self.policies.routes.push(r.clone());
                    self.health.add(r.name.clone(), targets::placeholder_peer(r), now.mono);
                    self.route_targets.push(self.new_route_target(r));
                    changed.added.push(r.name.clone());
                    self.policies.routes.len() - 1
                }
            };
            index.push(i);
        }
        for i in 0..self.policies.routes.len() {
            let retire = !index.contains(&i);
            if retire && !self.health.is_retired(i) {
                changed.retired.push(self.policies.routes[i].name.clone());
            }
            self.health.set_retired(i, retire, now.mono);
        }
        // Registrations follow the routes in use: a retired route's lapses at its expiry.
        self.trunks.retain(|t| index.contains(&t.route));
        for &i in &index {
            if !self.trunks.iter().any(|t| t.route == i) {
                let r = &self.policies.routes[i];
                self.trunks.extend(probes::trunk_registration(i, r, &self.local, now.mono));
            }
        }
        for p in &mut new.policies {
            for r in p.routes.iter_mut().chain(p.no_location_routes.iter_mut()) {
                *r = index[*r];
            }
        }
        new.routes = std::mem::take(&mut self.policies.routes);
        // A PSAP may still call back an ELIN the new config dropped, within the callback window.
        self.callbacks.known_elins.extend(new.all_elins().map(str::to_string));
        self.callbacks.fallback = callback_fallback(cfg);
        // The digest server stays: a desk between its challenge and its answer is not refused.
        self.accounts.desks.accounts = cfg.desks.clone();
        self.accounts.lis_users = cfg.lis.users.clone();
        self.accounts.groups = notification_groups(cfg);
        self.policies = new;
        changed
    }

    /// A route added by a reload: a name some route of this run already uses has its answer
    /// (and the I/O shell keeps refreshing it); a name new to this run is resolved only at the
    /// next start, and until then the route fails over at once, saying so.
    fn new_route_target(&self, r: &crate::config::RouteConfig) -> targets::RouteTargets {
        let mut t = targets::route_target(r);
        if t.target.literal().is_none() {
            match self.names.get(&t.target) {
                Some(peers) => t.peers = peers.clone(),
                None => {
                    t.error = Some("a name new to this run (added by a reload): restart sosdesk to resolve it".into())
                }
            }
        }
        t
    }
}
