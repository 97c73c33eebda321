//! RFC 3263 over the network: NAPTR → SRV → A/AAAA for every route given by name, with
//! hickory-resolver (the `[dns] servers`, else the system's). Names are resolved when the core
//! starts and again when their answer's TTL runs out; each answer goes to the engine as
//! `NetInput::Resolved`, so an emergency call never waits on a resolver (the engine keeps the
//! last answer while a refresh fails — RFC 8767's serve-stale — and fails a never-resolved
//! route over at once). The choices that need no network are `sip::rfc3263`'s. The voice alert
//! channel (`reach::voice`) asks the same resolver for its callees when it places a call — an
//! alert delivery, off every emergency call's path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{ResolveError, TokioResolver};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::core_handle::NetInput;
use crate::sip::rfc3263::{self, Host, Naptr, SipTarget, Srv};
use crate::sip::transaction::Peer;
use crate::transport::TlsSetup;

/// One question to one server, and the tries: a dead server costs at most this, never a hang.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole resolution (NAPTR, SRVs, addresses) gives up after this.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers are asked again at least this often (a TTL of 0 must not become a busy loop)…
const MIN_REFRESH: Duration = Duration::from_secs(5);
/// …and at most this long apart, however long their TTL.
const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// After a failed refresh, the next try (the old answer stays in use meanwhile).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// More targets than this for one route are not tried within one call anyway.
const MAX_TARGETS: usize = 16;

/// A resolved name: its targets in order, and until when the answer is good.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub peers: Vec<Peer>,
    pub valid_until: Instant,
}

#[derive(Clone)]
pub struct SipResolver {
    resolver: Arc<TokioResolver>,
}

impl SipResolver {
    pub fn from_config(cfg: &Config) -> Result<SipResolver, String> {
        let (config, mut opts) = if cfg.dns.servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("the system's DNS configuration (/etc/resolv.conf): {e}"))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for s in &cfg.dns.servers {
                group.merge(NameServerConfigGroup::from_ips_clear(&[s.0.ip()], s.0.port(), true));
            }
            (ResolverConfig::from_parts(None, vec![], group), ResolverOpts::default())
        };
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = 1;
        opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
        // Our own cache is the engine's table; hickory's keeps the answers between our steps.
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let mut builder = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *builder.options_mut() = opts;
        Ok(SipResolver { resolver: Arc::new(builder.build()) })
    }

    /// RFC 3263 §4 for `target` (a name): every target, in the order to try them.
    pub async fn resolve(&self, target: &SipTarget) -> Result<Resolved, String> {
        match tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve_inner(target)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())),
        }
    }

    async fn resolve_inner(&self, target: &SipTarget) -> Result<Resolved, String> {
        let Host::Name(name) = &target.host else {
            let peer = target.literal().ok_or("no address")?;
            return Ok(Resolved { peers: vec![peer], valid_until: Instant::now() + MAX_REFRESH });
        };
        let mut valid_until = Instant::now() + MAX_REFRESH;
        // §4.2: a port given means no NAPTR and no SRV, only the host's addresses.
        if let Some(port) = target.port {
            let t = target.default_transport();
            let peers = self.addresses(name, port, t, &mut valid_until).await?;
            return finish(peers, valid_until, name);
        }
        // §4.1: NAPTR, unless the transport is fixed; else SRV for each transport we speak.
        let mut choices = Vec::new();
        if target.transport.is_none() {
            let naptrs = self.naptr(name, &mut valid_until).await?;
            choices = rfc3263::naptr_choices(&naptrs, target);
        }
        if choices.is_empty() {
            choices = rfc3263::srv_queries(name, target);
        }
        let mut peers = Vec::new();
        let mut last_error = None;
        for (transport, srv_name) in choices {
            // One broken SRV name (a SERVFAIL, a timeout) does not hide the others.
            let srvs = match self.srv(&srv_name, &mut valid_until).await {
                Ok(srvs) => srvs,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            for srv in rfc3263::srv_order(srvs, |n| rand::random::<u32>() % n.max(1)) {
                match self.addresses(&srv.target, srv.port, transport, &mut valid_until).await {
                    Ok(found) => peers.extend(found),
                    Err(e) => last_error = Some(e),
                }
            }
        }
        if peers.is_empty() {
            if let Some(e) = last_error {
                return Err(e);
            }
            // §4.2: no SRV either: the name's own addresses, on the default port.
            let t = target.default_transport();
            peers = self.addresses(name, SipTarget::default_port(t), t, &mut valid_until).await?;
        }
        finish(peers, valid_until, name)
    }

    async fn naptr(&self, name: &str, valid_until: &mut Instant) -> Result<Vec<Naptr>, String> {
        match self.resolver.lookup(name, RecordType::NAPTR).await {
            Ok(lookup) => {
                *valid_until = (*valid_until).min(lookup.valid_until().into());
                Ok(lookup
                    .record_iter()
                    .filter_map(|r| match r.data() {
                        RData::NAPTR(n) => Some(Naptr {
                            order: n.order(),
                            preference: n.preference(),
                            flags: String::from_utf8_lossy(n.flags()).into_owned(),
                            service: String::from_utf8_lossy(n.services()).into_owned(),
                            replacement: n.replacement().to_ascii(),
                        }),
                        _ => None,
                    })
                    .collect())
            }
            Err(e) if none_found(&e) => Ok(Vec::new()),
            Err(e) => Err(format!("NAPTR {name}: {e}")),
        }
    }

    async fn srv(&self, name: &str, valid_until: &mut Instant) -> Result<Vec<Srv>, String> {
        match self.resolver.srv_lookup(name).await {
            Ok(lookup) => {
                *valid_until = (*valid_until).min(lookup.as_lookup().valid_until().into());
                Ok(lookup
                    .iter()
                    .filter(|s| s.port() != 0)
                    .map(|s| Srv {
                        priority: s.priority(),
                        weight: s.weight(),
                        port: s.port(),
                        target: s.target().to_ascii().trim_end_matches('.').to_string(),
                    })
                    .collect())
            }
            Err(e) if none_found(&e) => Ok(Vec::new()),
            Err(e) => Err(format!("SRV {name}: {e}")),
        }
    }

    async fn addresses(
        &self,
        host: &str,
        port: u16,
        transport: crate::sip::transaction::Transport,
        valid_until: &mut Instant,
    ) -> Result<Vec<Peer>, String> {
        let host = host.trim_end_matches('.');
        let lookup = self.resolver.lookup_ip(format!("{host}.")).await.map_err(|e| format!("A/AAAA {host}: {e}"))?;
        *valid_until = (*valid_until).min(lookup.valid_until().into());
        Ok(lookup.iter().map(|ip| Peer { transport, addr: std::net::SocketAddr::new(ip, port) }).collect())
    }
}

fn none_found(e: &ResolveError) -> bool {
    e.is_no_records_found() || e.is_nx_domain()
}

fn finish(mut peers: Vec<Peer>, valid_until: Instant, name: &str) -> Result<Resolved, String> {
    let mut seen = std::collections::HashSet::new();
    peers.retain(|p| seen.insert(*p));
    peers.truncate(MAX_TARGETS);
    if peers.is_empty() {
        return Err(format!("{name}: no address"));
    }
    Ok(Resolved { peers, valid_until })
}

/// The routes that use `target` (their TLS follows the answers' addresses).
pub fn routes_using(cfg: &Config, target: &SipTarget) -> Vec<usize> {
    (cfg.routes.iter().enumerate()).filter(|(_, r)| r.target() == *target).map(|(i, _)| i).collect()
}

/// The first answers, before the core takes calls, within `within` (a name that has not
/// answered by then is handed in as it comes): the first emergency call after a start finds
/// its routes resolved.
pub async fn resolve_first(
    resolver: &SipResolver,
    names: &[SipTarget],
    cfg: &Config,
    tls: &TlsSetup,
    within: Duration,
) -> HashMap<SipTarget, Result<Resolved, String>> {
    let mut out = HashMap::new();
    let answers = futures_util::future::join_all(
        names.iter().map(|t| async move { tokio::time::timeout(within, resolver.resolve(t)).await.ok() }),
    )
    .await;
    for (t, answer) in names.iter().zip(answers) {
        if let Some(answer) = answer {
            note_tls(tls, t, &routes_using(cfg, t), &answer);
            out.insert(t.clone(), answer);
        }
    }
    out
}

fn note_tls(tls: &TlsSetup, target: &SipTarget, routes: &[usize], answer: &Result<Resolved, String>) {
    if let Ok(r) = answer {
        for p in &r.peers {
            for &route in routes {
                tls.note_route_address(p.addr, route);
            }
            if routes.is_empty() {
                tls.note_name_address(p.addr, &target.host_str());
            }
        }
    }
}

/// Keep every name fresh until `stop`: resolved again when its answer expires (or soon
/// after a failure), each answer handed to the engine. `first` is what `resolve_first` found.
pub(crate) async fn refresh(
    resolver: SipResolver,
    names: Vec<(SipTarget, Vec<usize>)>,
    tls: Arc<TlsSetup>,
    first: HashMap<SipTarget, Result<Resolved, String>>,
    net_tx: mpsc::UnboundedSender<NetInput>,
    stop: watch::Receiver<bool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (target, routes) in names {
        let (resolver, tls, net_tx, mut stop) = (resolver.clone(), tls.clone(), net_tx.clone(), stop.clone());
        let mut next = match first.get(&target) {
            Some(Ok(r)) => refresh_at(r.valid_until),
            Some(Err(_)) => Instant::now() + RETRY_AFTER_FAILURE,
            None => Instant::now(),
        };
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep_until(next) => {}
                }
                let answer = resolver.resolve(&target).await;
                next = match &answer {
                    Ok(r) => refresh_at(r.valid_until),
                    Err(e) => {
                        tracing::warn!(%target, error = %e, "cannot resolve a route's name; its last answer stays in use");
                        Instant::now() + RETRY_AFTER_FAILURE
                    }
                };
                note_tls(&tls, &target, &routes, &answer);
                let answer = answer.map(|r| r.peers);
                if net_tx.send(NetInput::Resolved { target: target.clone(), answer }).is_err() {
                    return;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn refresh_at(valid_until: Instant) -> Instant {
    let now = Instant::now();
    valid_until.clamp(now + MIN_REFRESH, now + MAX_REFRESH)
}
