//! Location policies: which numbers are emergency numbers for a caller, which routes carry the
//! call, and the site the caller is at — chosen by the caller's source subnet (most specific
//! subnet wins), else the default policy. The fields keep the meaning of Skype for Business
//! location policies (EmergencyDialString, EmergencyDialMask, PstnUsage) so they carry over.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{ConferenceMode, Config, RouteConfig};
use crate::location::Erl;

#[derive(Debug, Clone)]
pub struct EmergencyNumber {
    pub dial_string: String,
    pub masks: Vec<String>,
    pub test: bool,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub numbers: Vec<EmergencyNumber>,
    /// Indexes into [`Policies::routes`], in the order they are tried.
    pub routes: Vec<usize>,
    /// Routes for a call with no location (the ECRC); also the last resort after `routes`.
    pub no_location_routes: Vec<usize>,
    pub default_erl: Option<Erl>,
    /// Called and conferenced in when a call is routed.
    pub conference_uri: Option<String>,
    pub conference_mode: ConferenceMode,
    /// Notification IM targets: (the URI as configured, where it points).
    pub notify: Vec<(String, crate::notify::Target)>,
    pub acknowledge: crate::config::AcknowledgeMode,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub subnets: Vec<IpNet>,
    pub policy: usize,
    pub erl: Option<Erl>,
}

/// Policies, sites and routes compiled from the config for fast per-call lookup.
#[derive(Debug, Clone)]
pub struct Policies {
    pub routes: Vec<RouteConfig>,
    pub policies: Vec<Policy>,
    pub sites: Vec<Site>,
    /// (subnet, site index), most specific first: the first match is the longest prefix.
    subnets: Vec<(IpNet, usize)>,
    default_policy: usize,
    /// Who is told of a network element first seen unlocated (`lis.unlocated_notification_uris`).
    pub unlocated_notify: Vec<(String, crate::notify::Target)>,
}

impl Policy {
    /// The routes an emergency call of this policy tries, in order. With a location: the policy's
    /// routes, then its ECRC (no-location) routes as the last resort. Without one: the ECRC
    /// routes first (a PSAP cannot be chosen by location), then the others. Every route is in
    /// both plans, so a call is never failed while a route remains.
    pub fn route_plan(&self, located: bool) -> Vec<usize> {
        let (first, then) =
            if located { (&self.routes, &self.no_location_routes) } else { (&self.no_location_routes, &self.routes) };
        let mut plan = first.clone();
        for r in then {
            if !plan.contains(r) {
                plan.push(*r);
            }
        }
        plan
    }
}

/// Notification URIs with where each points (the config has checked them).
fn targets(cfg: &Config, uris: &[String]) -> Vec<(String, crate::notify::Target)> {
    uris.iter()
        .filter_map(|u| {
            crate::notify::Target::parse(u, &cfg.core_host(), &cfg.core_ports()).ok().map(|t| (u.clone(), t))
        })
        .collect()
}

impl Policies {
    /// Compile a validated config (see `Config::validate`, which guarantees every name resolves).
    pub fn from_config(cfg: &Config) -> Policies {
        let route_idx = |name: &str| cfg.routes.iter().position(|r| r.name == name).unwrap_or(0);
        let usage = |name: &str| -> Vec<usize> {
            cfg.pstn_usages
                .iter()
                .find(|u| u.name == name)
                .map(|u| u.routes.iter().map(|r| route_idx(r)).collect())
                .unwrap_or_default()
        };
        let policies: Vec<Policy> = cfg
            .policies
            .iter()
            .map(|p| Policy {
                name: p.name.clone(),
                numbers: p
                    .numbers
                    .iter()
                    .map(|n| EmergencyNumber {
                        dial_string: n.dial_string.clone(),
                        masks: n.masks.clone(),
                        test: n.test,
                    })
                    .collect(),
                routes: usage(&p.pstn_usage),
                no_location_routes: usage(p.no_location_pstn_usage.as_deref().unwrap_or(&p.pstn_usage)),
                default_erl: p.default_erl.clone(),
                conference_uri: p.conference_uri.clone(),
                conference_mode: p.conference_mode,
                notify: targets(cfg, &p.notification_uris),
                acknowledge: p.acknowledge,
            })
            .collect();
        let policy_idx = |name: &str| policies.iter().position(|p| p.name == name).unwrap_or(0);
        let sites: Vec<Site> = cfg
            .sites
            .iter()
            .map(|s| Site {
                name: s.name.clone(),
                subnets: s.subnets.iter().filter_map(|n| n.parse().ok()).collect(),
                policy: policy_idx(&s.policy),
                erl: s.erl.clone(),
            })
            .collect();
        let mut subnets: Vec<(IpNet, usize)> =
            sites.iter().enumerate().flat_map(|(i, s)| s.subnets.iter().map(move |n| (n.trunc(), i))).collect();
        subnets.sort_by_key(|s| std::cmp::Reverse(s.0.prefix_len()));
        let default_policy = policy_idx(&cfg.default_policy);
        let unlocated_notify = targets(cfg, &cfg.lis.unlocated_notification_uris);
        Policies { routes: cfg.routes.clone(), policies, sites, subnets, default_policy, unlocated_notify }
    }

    /// The site a source address belongs to (most specific subnet).
    pub fn site_for(&self, ip: IpAddr) -> Option<usize> {
        // IPv4-mapped IPv6 sources (dual-stack sockets) match IPv4 subnets.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.subnets.iter().find(|(net, _)| net.contains(&ip)).map(|(_, i)| *i)
    }

    /// The policy and site for a caller.
    pub fn select(&self, ip: IpAddr) -> (&Policy, Option<&Site>) {
        match self.site_for(ip) {
            Some(s) => (&self.policies[self.sites[s].policy], Some(&self.sites[s])),
            None => (&self.policies[self.default_policy], None),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Every ELIN configured on any ERL (callbacks to these numbers are recognised even after
    /// their mapping expired, and go to the fallback).
    pub fn all_elins(&self) -> impl Iterator<Item = &str> {
        self.sites
            .iter()
            .filter_map(|s| s.erl.as_ref())
            .chain(self.policies.iter().filter_map(|p| p.default_erl.as_ref()))
            .flat_map(|e| e.elins.iter().map(String::as_str))
    }
}
