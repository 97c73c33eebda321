//! The running core: sockets, timers and fan-out around the sans-I/O [`Engine`].
//!
//! One tokio task owns the engine; what the sockets receive reaches it through the lanes of
//! [`crate::intake`] (emergency first), read by the UDP intake task and by each TCP
//! connection's reader (which has a writer task too). After every input the task first sends what the
//! engine produced (the outbound INVITE never waits for anything else), then hands the call
//! events to the audit writer and to subscribers (desks).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::audit::journal::{self, Journal};
use crate::audit::{spawn_writer, AuditStore, AuditWriter};
use crate::clock::Now;
use crate::config::Config;
pub use crate::core_handle::{AnnotateError, CoreHandle};
use crate::core_handle::{CoreCondition, NetInput, Opened};
use crate::events::{CallEvent, CallEventKind};
use crate::intake::{self, Inbound, LaneReceivers};
use crate::location::discovery::{DiscoveringLocator, Discovery};
use crate::location::held::{HeldCache, HeldState};
use crate::location::sitemap::SharedSiteMaps;
use crate::location::store::LisStore;
use crate::location::unlocated::Sighting;
use crate::location::user_entered::UserLocations;
use crate::location::wiremap::{SharedWiremap, Wiremap};
use crate::location::Locator;
use crate::media::runner::{self as media_runner, MediaCommand, RtpPorts};
use crate::routing::triage::Triage;
use crate::routing::{Engine, LocalEndpoint, Locators, MediaAction, Output, SharedElin, SharedRegistration};
use crate::shared::callbacks::CallbackStore;
use crate::shared::node_name::NodeNameClaim;
use crate::shared::registrations::RegistrationStore;
use crate::sip::transaction::{Peer, Transport};
use crate::transport::{self, StreamIo, TlsSetup};

mod lis;
mod streams;
use lis::{
    keep_published_location, msag_validator, offer_sighting, record_sightings, refresh_wiremap, reload_wiremap,
    PublishAnswer, SIGHTINGS_QUEUE,
};
use streams::Streams;

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind { transport: &'static str, addr: SocketAddr, source: io::Error },
    #[error("audit store: {0}")]
    Store(#[from] crate::audit::AuditError),
    #[error("location store: {0}")]
    Lis(#[from] crate::location::store::LisError),
    #[error("HELD endpoint: {0}")]
    Held(String),
    #[error("media: {0}")]
    Media(String),
    #[error("HTTP API: {0}")]
    Api(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("crash journal {path}: {source}")]
    Journal { path: std::path::PathBuf, source: io::Error },
    #[error("{0}")]
    NodeName(#[from] crate::shared::node_name::ClaimError),
}

/// A running routing core.
pub struct Core {
    pub local: LocalEndpoint,
    /// Where the HELD endpoint listens, when configured.
    pub held: Option<SocketAddr>,
    /// Where the HTTP API listens, when configured (and whether it is HTTPS).
    pub api: Option<(SocketAddr, bool)>,
    wiremap: SharedWiremap,
    site_maps: SharedSiteMaps,
    /// Switch-port discovery, when `[[switch]]`es are configured.
    discovery: Option<Discovery>,
    events: broadcast::Sender<Arc<CallEvent>>,
    others: broadcast::Sender<Arc<CallEvent>>,
    audit: AuditWriter,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The unlocated report's recorder: ends once the engine and HELD have stopped.
    sightings_task: JoinHandle<()>,
    /// Writes ELIN callback mappings to the store: ends after the engine task, once written.
    elin_writer_task: JoinHandle<()>,
    /// This node's name, held on the shared store until the core has stopped.
    node_name: NodeNameClaim,
    store: AuditStore,
    lis: LisStore,
    user_locations: UserLocations,
    net_tx: mpsc::UnboundedSender<NetInput>,
    health: crate::core_handle::SharedEngineHealth,
    condition: watch::Receiver<CoreCondition>,
    /// The running config, for what follows it besides the engine (API accounts, channels).
    config: watch::Sender<Arc<Config>>,
    triage: intake::TriageSwitch,
}

/// What a reload applied, and what waits for a restart.
#[derive(Debug)]
pub struct Reloaded {
    pub routes: crate::routing::engine::Reconfigured,
    /// Sections the new file changes that only a restart applies (listeners, the store…).
    pub restart_only: Vec<&'static str>,
}

impl Core {
    /// Bind the configured addresses, open (and migrate) the audit store, and start serving.
    pub async fn start(cfg: &Config) -> Result<Core, StartError> {
        let udp = match cfg.sip.udp {
            Some(addr) => Some(Arc::new(UdpSocket::bind(addr).await.map_err(|source| StartError::Bind {
                transport: "UDP",
                addr,
                source,
            })?)),
            None => None,
        };
        let tcp = match cfg.sip.tcp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                transport: "TCP",
                addr,
                source,
            })?),
            None => None,
        };
        // The TLS files are read before anything binds: a wrong one stops the start, named.
        let tls_setup = Arc::new(TlsSetup::from_config(cfg).map_err(StartError::Tls)?);
        if cfg.sip.tls.is_none() && cfg.routes.iter().any(|r| r.transport == Some(crate::config::TransportConfig::Tls))
        {
            // Our Contact then names port 5061 where nothing listens: a provider that sends its
            // in-dialog requests (a BYE) to the Contact, not over our connection, cannot reach us.
            tracing::warn!("a route uses TLS but [sip] tls is not set: give sosdesk a TLS listener for the provider's in-dialog requests");
        }
        let tls = match cfg.sip.tls {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                transport: "TLS",
                addr,
                source,
            })?),
            None => None,
        };
        let udp_addr = udp.as_ref().and_then(|s| s.local_addr().ok());
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let tls_addr = tls.as_ref().and_then(|l| l.local_addr().ok());
        let host = cfg.sip.public_host.clone().unwrap_or_else(|| {
            let ip = udp_addr.or(tcp_addr).or(tls_addr).map(|a| a.ip()).unwrap_or([127, 0, 0, 1].into());
            match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            }
        });
        let local = LocalEndpoint { host, udp: udp_addr, tcp: tcp_addr, tls: tls_addr };

        let store = AuditStore::open(cfg.store_location()).await?.with_node(cfg.node_name().as_deref());
        // Before anything is read or written as this node (the journal's recovery ends this
        // node's interrupted calls): no other live node may have its name.
        let node_name = NodeNameClaim::claim(store.database(), cfg.node_name().as_deref()).await?;
        let journal = recover_journal(cfg, &store).await?;
        let audit = spawn_writer(store.clone());
        // ELIN callback mappings go to the store too, so that any node (or this one after a
        // restart) routes a PSAP's callback to the caller (`crate::shared::callbacks`).
        let callbacks = CallbackStore::new(store.database().clone(), cfg.node_name().as_deref());
        let (elin_writer, elin_writer_task) = callbacks.spawn_writer();
        // Desks' UDP registrations too, so that every node's alerts reach them
        // (`crate::shared::registrations`).
        let registrations = RegistrationStore::new(store.database().clone(), cfg.node_name().as_deref());
        let registration_writer = registrations.spawn_writer();
        // The event broadcast holds `Arc<CallEvent>`: tokio's broadcast sets up every slot at
        // once, and 4096 events of ~1.5 KB each were 6 MB per channel in every core; a
        // receiver then shares the event instead of copying it (BENCHMARKS.md, the desk's heap).
        let (events, _) = broadcast::channel(4096);
        // Every other node's events, for this node's API event streams and alert channels.
        let (others, _) = broadcast::channel(4096);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(crate::shared::events::follow(store.clone(), others.clone(), stop_rx.clone()));
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let (lanes, lane_rx) = intake::lanes(Triage::new(cfg));
        let triage = lanes.triage_switch();
        tokio::spawn(registrations.follow(net_tx.clone(), stop_rx.clone()));
        // Desks' events for this node's calls that reached another node.
        tokio::spawn(crate::shared::annotations::serve(
            store.database().clone(),
            cfg.node_name(),
            net_tx.clone(),
            stop_rx.clone(),
        ));
        if let Some(sock) = &udp {
            tokio::spawn(intake::udp_intake(sock.clone(), lanes.clone(), stop_rx.clone()));
        }
        // A connection's `Opened` has a channel of its own, served first (`run`).
        let (opened_tx, opened_rx) = mpsc::unbounded_channel();
        let stream_io = StreamIo {
            lanes: lanes.clone(),
            net_tx: net_tx.clone(),
            opened_tx,
            tls: tls_setup.clone(),
            keepalive: (cfg.sip.keepalive_s > 0).then(|| Duration::from_secs(cfg.sip.keepalive_s)),
        };
        if let Some(listener) = tcp {
            tokio::spawn(transport::accept_loop(listener, None, stream_io.clone(), stop_rx.clone()));
        }
        if let Some(listener) = tls {
            let acceptor = tls_setup.acceptor.clone();
            tokio::spawn(transport::accept_loop(listener, acceptor, stream_io.clone(), stop_rx.clone()));
        }
        // The Location Information Service: the wiremap index from the store (rebuilt when an
        // import changes it), the HELD endpoint, and what HELD told each device.
        let lis = LisStore::open(cfg.store_location()).await?;
        let wiremap = SharedWiremap::new(Wiremap::empty());
        let site_maps = SharedSiteMaps::default();
        let generation = reload_wiremap(&lis, (&wiremap, &site_maps), None).await;
        let held_cache = HeldCache::default();
        // What remote users entered for their calls off the mapped network (docs/location.md).
        let user_locations = crate::location::user_entered::UserLocations {
            store: lis.clone(),
            book: Default::default(),
            validator: msag_validator(cfg),
        };
        let user_generation = user_locations.refresh(None).await;
        // Switch-port discovery: the switches polled in the background; calls and HELD look a
        // device's MAC (or the MAC its IP belongs to) up in what the last poll learnt, in front
        // of the wiremap. Each move is an audit record of its own.
        let discovery = (!cfg.switches.is_empty()).then(|| {
            let targets = cfg.switches.iter().map(|s| s.target()).collect();
            let (audit, events) = (audit.clone(), events.clone());
            let sink: crate::location::discovery::MoveSink = Arc::new(move |m| {
                let kind =
                    CallEventKind::DeviceMoved { mac: crate::location::format_mac(&m.mac), from: m.from, to: m.to };
                let id = format!("moved-{}", crate::sip::ids::new_call_ref());
                let ev = CallEvent::of_no_call(id, crate::events::Caller::nobody(), String::new(), kind, m.at);
                record_audit_only(&audit, &events, ev);
            });
            crate::location::discovery::spawn(targets, Some(sink), stop_rx.clone()).0
        });
        let locator: Arc<dyn Locator> = match &discovery {
            Some(d) => Arc::new(DiscoveringLocator { wiremap: wiremap.clone(), table: d.table().clone() }),
            None => Arc::new(wiremap.clone()),
        };
        // The unlocated report: how every call and HELD request was located, recorded apart
        // from the emergency path (a full queue drops sightings, never waits).
        let (sightings, sightings_rx) = mpsc::channel::<Sighting>(SIGHTINGS_QUEUE);
        let held = match cfg.lis.held {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                    transport: "HTTP (HELD)",
                    addr,
                    source,
                })?;
                let bound = listener.local_addr().ok();
                // As URIs write it: an IPv6 host in brackets (`HeldState` takes nothing else).
                let state = HeldState::new(locator.clone(), &local.host)
                    .map_err(|e| StartError::Held(e.to_string()))?
                    .with_cache(held_cache.clone())
                    .with_sightings({
                        let tx = sightings.clone();
                        Arc::new(move |s| offer_sighting(&tx, s))
                    })
                    .with_identity_requesters(cfg.lis.held_requesters.clone())
                    .with_user_locations(user_locations.book.clone());
                let mut stop_held = stop_rx.clone();
                tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop_held.changed().await;
                    };
                    if let Err(e) = crate::location::held::serve(listener, state, shutdown).await {
                        tracing::error!(error = %e, "HELD endpoint stopped");
                    }
                });
                bound
            }
            None => None,
        };
        tokio::spawn(refresh_wiremap(
            lis.clone(),
            (wiremap.clone(), site_maps.clone()),
            (generation, (user_locations.clone(), user_generation)),
            Duration::from_millis(cfg.lis.refresh_ms),
            stop_rx.clone(),
        ));

        let guard = crate::access::AuthGuard::shared();
        let sightings_task =
            tokio::spawn(record_sightings(lis.clone(), sightings_rx, audit.clone(), events.clone(), net_tx.clone()));
        let health = crate::core_handle::SharedEngineHealth::default();
        let (condition_tx, condition) = watch::channel(CoreCondition::default());
        let handle = CoreHandle {
            local: local.clone(),
            store: store.clone(),
            lis: Some(lis.clone()),
            user_locations: Some(user_locations.clone()),
            discovery: discovery.clone(),
            events: events.clone(),
            others: others.clone(),
            net_tx: net_tx.clone(),
            health: health.clone(),
            condition: condition.clone(),
        };
        tokio::spawn(crate::watchdog::run(handle.clone(), audit.watch_health(), condition_tx, stop_rx.clone()));
        // Email, webhook and SMS alerts follow the events like a desk (never on the call's path);
        // the acknowledgement links they carry are checked by the API with the same key.
        // A key that cannot be kept must not stop the core: links then work until the next start.
        let ack_key = crate::reach::ack_key(cfg).unwrap_or_else(|e| {
            tracing::error!(error = %e, "no lasting key for acknowledgement links: this run's links stop working at the next start");
            rand::random::<[u8; 32]>().to_vec().into()
        });
        let (config, config_rx) = watch::channel(Arc::new(cfg.clone()));
        // One RFC 3263 resolver (the `[dns] servers`, else the system's), built once: the routes'
        // names below, and the voice alert channel's callees (`reach::voice`).
        let dns = crate::dns::SipResolver::from_config(cfg);
        tokio::spawn(crate::reach::run(
            config_rx.clone(),
            handle.clone(),
            ack_key.clone(),
            dns.clone(),
            stop_rx.clone(),
        ));
        let api = match cfg.api.listen {
            Some(addr) => Some(
                start_api(cfg, config_rx, addr, handle, audit.clone(), guard.clone(), ack_key, stop_rx.clone()).await?,
            ),
            None => None,
        };
        let mut engine = Engine::new(cfg, local.clone(), Now::read());
        // Routes given by name (RFC 3263): resolved now, within one route timeout, then kept
        // fresh in the background; no DNS on the call path.
        let names = engine.names_to_resolve();
        let resolver = match names.is_empty() {
            true => None,
            // No resolver (an unreadable /etc/resolv.conf): the core still starts, routes given
            // by address work, and routes by name fail over at once, saying why.
            false => dns
                .inspect_err(|e| {
                    tracing::error!(error = %e, "no DNS resolver: routes and targets given by name cannot be used");
                    for t in &names {
                        engine.on_resolved(t, Err(format!("no DNS resolver: {e}")), Now::read());
                    }
                })
                .ok(),
        };
        if let Some(resolver) = resolver {
            let within = Duration::from_millis(cfg.routing.route_timeout_ms);
            let first = crate::dns::resolve_first(&resolver, &names, cfg, &tls_setup, within).await;
            for (target, answer) in &first {
                if let Err(e) = answer {
                    tracing::warn!(%target, error = %e, "cannot resolve a name at start");
                }
                engine.on_resolved(target, answer.clone().map(|r| r.peers), Now::read());
            }
            let names = names.iter().map(|t| (t.clone(), crate::dns::routes_using(cfg, t))).collect();
            let refresh =
                crate::dns::refresh(resolver, names, tls_setup.clone(), first, net_tx.clone(), stop_rx.clone());
            tokio::spawn(refresh);
        }
        engine.set_guard(guard);
        engine.share_through_store();
        // Several nodes can share only a PostgreSQL store: there an ELIN is claimed before a call
        // presents it (`crate::shared::callbacks::CallbackStore::claim`).
        if store.database().backend == crate::db::Backend::Postgres {
            engine.claim_elins_in_store();
        }
        engine.set_locators(Locators {
            wiremap: Some(locator),
            held: Some(Arc::new(held_cache)),
            user: Some(user_locations.book.clone()),
            site_maps: Some(site_maps.clone()),
        });
        let rtp = if cfg.media.anchor {
            engine.anchor_media();
            Some(RtpSupply { ports: rtp_ports(cfg)?, retry_at: None, logged_at: None })
        } else {
            None
        };
        let ctx = RunContext {
            journal: Some(journal),
            net_tx: net_tx.clone(),
            rtp,
            events: events.clone(),
            others: others.clone(),
            audit: audit.clone(),
            store: store.clone(),
            ended_calls: Default::default(),
            recordings: (cfg.media.anchor && cfg.media.record).then(|| cfg.recordings_path()),
            sightings,
            route_timeout: Duration::from_millis(cfg.routing.route_timeout_ms),
            callbacks,
            elin_writer,
            registration_writer,
            user_locations: user_locations.clone(),
        };
        drop(lanes);
        let task = tokio::spawn(run(engine, udp, (stream_io, lane_rx), (net_rx, opened_rx), ctx, stop_rx));
        tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addr, held = ?held, api = ?api, store = %cfg.store_location(), "sosdesk core started");
        Ok(Core {
            local,
            held,
            api,
            wiremap,
            site_maps,
            discovery,
            events,
            others,
            audit,
            stop,
            task,
            sightings_task,
            elin_writer_task,
            node_name,
            store,
            lis,
            user_locations,
            net_tx,
            health,
            condition,
            config,
            triage,
        })
    }

    /// Re-read the config file the core started with (SIGHUP, `sosdesk reload`) and apply it
    /// to new calls: policies, sites, routes, desk accounts, notification groups and channels.
    /// Live calls keep the plan they started with. A file that does not load is refused with its
    /// file, key and reason, and the running config is kept. Either way, one audit record.
    pub async fn reload(&self) -> Result<Reloaded, crate::config::ConfigError> {
        let running = self.config.borrow().clone();
        let file = running.source.display().to_string();
        let at = chrono::Utc::now();
        let cfg = match Config::load(&running.source) {
            Ok(cfg) => Arc::new(cfg),
            Err(e) => {
                let refused = CallEventKind::ConfigRefused { file, reason: e.to_string() };
                record_audit_only(&self.audit, &self.events, CallEvent::reload(refused, at));
                return Err(e);
            }
        };
        // A route given by a DNS name this run has never resolved would fail every new call until a
        // restart (the names are resolved at start and then kept fresh): refused, with why, and
        // the running config kept (review finding).
        let resolving: std::collections::HashSet<_> = running.routes.iter().map(|r| r.target()).collect();
        let unresolved: Vec<String> = (cfg.routes.iter())
            .filter(|r| r.target().literal().is_none() && !resolving.contains(&r.target()))
            .map(|r| format!("{} ({})", r.name, r.target()))
            .collect();
        if !unresolved.is_empty() {
            let e = crate::config::ConfigError {
                file: running.source.clone(),
                key: "route.address".into(),
                reason: format!(
                    "a DNS name this core has not resolved since it started: {}; restart sosdesk to use it",
                    unresolved.join(", ")
                ),
            };
            let refused = CallEventKind::ConfigRefused { file, reason: e.to_string() };
            record_audit_only(&self.audit, &self.events, CallEvent::reload(refused, at));
            return Err(e);
        }
        // The triage first: an emergency INVITE of a new number is never put in the ordinary lane.
        *self.triage.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Triage::new(&cfg));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let _ = self.net_tx.send(NetInput::Reconfigure { cfg: cfg.clone(), reply });
        // No answer: the engine has stopped (the core is stopping); nothing routes any more.
        let routes = answer.await.unwrap_or_default();
        let restart_only = running.restart_only_changes(&cfg);
        self.config.send_replace(cfg);
        let reloaded = Reloaded { routes, restart_only };
        let detail = reloaded.to_string();
        record_audit_only(
            &self.audit,
            &self.events,
            CallEvent::reload(CallEventKind::ConfigReloaded { file, detail }, at),
        );
        Ok(reloaded)
    }

    /// Every `CallEvent`, as it happens (a slow subscriber that falls 4,096 events behind is
    /// told so by `RecvError::Lagged` and can catch up from the audit log).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.events.subscribe()
    }

    /// Every other node's events, as they commit in the shared store (several nodes on one
    /// PostgreSQL; none with SQLite): what `GET /api/v1/events` adds to this node's own.
    pub fn subscribe_others(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.others.subscribe()
    }

    /// The wiremap index the call path and HELD use (replaced atomically on every reload).
    pub fn wiremap(&self) -> &SharedWiremap {
        &self.wiremap
    }

    /// The site maps calls' geodetic locations are placed on (replaced with the wiremap).
    pub fn site_maps(&self) -> &SharedSiteMaps {
        &self.site_maps
    }

    /// Switch-port discovery (`None` without `[[switch]]`): its table, each switch's status,
    /// and a poll on demand.
    pub fn discovery(&self) -> Option<&Discovery> {
        self.discovery.as_ref()
    }

    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    pub fn store(&self) -> &AuditStore {
        &self.store
    }

    /// The location store (ERLs, the wiremap, floor plans).
    pub fn lis(&self) -> &LisStore {
        &self.lis
    }

    /// Adds an event from outside the SIP path (a desk's acknowledgement) to a call, live or
    /// ended, in the call's own sequence. Returns once the event is durable in the audit log; it
    /// is also sent to every subscriber, like the core's own events.
    pub async fn annotate(&self, call_id: &str, kind: CallEventKind) -> Result<CallEvent, AnnotateError> {
        self.handle().annotate(call_id, kind).await
    }

    pub fn handle(&self) -> CoreHandle {
        CoreHandle {
            local: self.local.clone(),
            store: self.store.clone(),
            lis: Some(self.lis.clone()),
            user_locations: Some(self.user_locations.clone()),
            discovery: self.discovery.clone(),
            events: self.events.clone(),
            others: self.others.clone(),
            net_tx: self.net_tx.clone(),
            health: self.health.clone(),
            condition: self.condition.clone(),
        }
    }

    /// The engine's and the store's condition (changes when either changes).
    pub fn condition(&self) -> watch::Receiver<CoreCondition> {
        self.condition.clone()
    }

    /// The engine task has ended while the core was not told to stop: it panicked. The
    /// process `sosdesk serve` exits on any panic (the service manager restarts it); a desk
    /// that embeds the core restarts the core itself (`src-tauri/src/desk/link.rs`).
    pub fn engine_ended(&self) -> bool {
        self.task.is_finished() && !*self.stop.borrow()
    }

    /// A security officer acknowledged the alert of `call_id`: audited as `acknowledged` with
    /// the officer's name.
    pub async fn acknowledge(&self, call_id: &str, officer: &str) -> Result<CallEvent, AnnotateError> {
        self.acknowledge_at(call_id, officer, "").await
    }

    /// An acknowledgement from the officer at a named desk (a desk on another machine, through
    /// the HTTP API): pushed to every desk, which shows who took the call.
    pub async fn acknowledge_at(&self, call_id: &str, officer: &str, desk: &str) -> Result<CallEvent, AnnotateError> {
        self.handle().acknowledge_at(call_id, officer, desk).await
    }

    /// Tells every task of the core to stop (its sockets close as they do), without waiting:
    /// for a holder that cannot take the core by value ([`Core::stop`] waits).
    pub fn signal_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stop serving, then wait until every event recorded so far is durable. A store that is
    /// writing is waited for however slow; one that fails (a full disk, a vanished database)
    /// only [`STOP_FLUSH_WITHIN`]: it must not hold a restart up for ever, and the crash journal
    /// keeps what it has not committed for the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // The last sightings (and the records of networks they found) before the audit's end;
        // a location store that hangs holds the stop up for a moment only.
        if tokio::time::timeout(STOP_FLUSH_WITHIN, self.sightings_task).await.is_err() {
            tracing::warn!("the unlocated report's last location outcomes were not recorded in time");
        }
        // The last ELIN mappings, for the nodes that take this one's callbacks from now on.
        if tokio::time::timeout(STOP_FLUSH_WITHIN, self.elin_writer_task).await.is_err() {
            tracing::warn!("the last ELIN callback mappings were not shared in time");
        }
        let audit = self.audit.clone();
        let durable = async move {
            audit.flush().await;
            audit.shutdown().await;
        };
        tokio::pin!(durable);
        let started = Instant::now();
        loop {
            tokio::select! {
                _ = &mut durable => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    if self.audit.health().last_error.is_some() && started.elapsed() >= STOP_FLUSH_WITHIN {
                        tracing::error!(
                            s = STOP_FLUSH_WITHIN.as_secs(),
                            "the audit store is failing: the last events stay in the crash journal for the next start"
                        );
                        break;
                    }
                }
            }
        }
        // The name is free for this node's successor once its last events are written.
        self.node_name.release().await;
        tracing::info!("sosdesk core stopped");
    }
}

/// How long [`Core::stop`] waits for a failing audit store to take the last events.
const STOP_FLUSH_WITHIN: Duration = Duration::from_secs(5);

/// What the engine task hands its events to.
struct RunContext {
    /// Every call event, written before the bytes of the same input leave.
    journal: Option<Journal>,
    /// Into the engine task (recordings report through it).
    net_tx: mpsc::UnboundedSender<NetInput>,
    /// The RTP port range of anchored calls: the engine is handed bound ports before each input.
    rtp: Option<RtpSupply>,
    events: broadcast::Sender<Arc<CallEvent>>,
    /// The other nodes' events (several nodes on one store): a handed-over event comes back here.
    others: broadcast::Sender<Arc<CallEvent>>,
    audit: AuditWriter,
    store: AuditStore,
    /// Serialises events added to calls that have ended (see [`annotate_ended`]).
    ended_calls: Arc<tokio::sync::Mutex<()>>,
    /// Where anchored calls are recorded (none: not recorded).
    recordings: Option<std::path::PathBuf>,
    /// Into the unlocated report's recorder.
    sightings: mpsc::Sender<Sighting>,
    /// `routing.route_timeout_ms`: requests waiting longer for their connection are given up.
    route_timeout: Duration,
    /// The ELIN callback mappings in the store: looked up when a callback finds none here.
    callbacks: CallbackStore,
    /// Into the task that writes the engine's new ELIN mappings to the store.
    elin_writer: mpsc::Sender<SharedElin>,
    /// Into the task that writes desks' registrations to the store.
    registration_writer: mpsc::Sender<SharedRegistration>,
    /// User-entered locations: a PUBLISHed one validated and kept here.
    user_locations: UserLocations,
}

/// The RTP port pool from the config: bound on `media.bind` (default: the SIP listen address),
/// advertised as `media.address` (default: `sip.public_host` when it is an IP, else the bind
/// address).
fn rtp_ports(cfg: &Config) -> Result<RtpPorts, StartError> {
    // The same addresses check-config checked (`Config::validate`).
    let (bind, advertise) = cfg.rtp_addresses();
    if advertise.is_unspecified() {
        return Err(StartError::Media(format!(
            "RTP is bound to {bind}: set media.address to the address parties should send RTP to"
        )));
    }
    let (first, last) = cfg.media.port_range().ok_or_else(|| StartError::Media("bad media.rtp_ports".into()))?;
    Ok(RtpPorts::new(bind, advertise, first, last))
}

async fn run(
    mut engine: Engine,
    udp: Option<Arc<UdpSocket>>,
    (stream_io, mut inbound): (StreamIo, LaneReceivers),
    (mut net_rx, mut opened_rx): (mpsc::UnboundedReceiver<NetInput>, mpsc::UnboundedReceiver<Opened>),
    mut ctx: RunContext,
    mut stop: watch::Receiver<bool>,
) {
    let mut rtp = ctx.rtp.take();
    let mut journal = ctx.journal.take();
    let RunContext { events, audit, .. } = &ctx;
    let mut journal_failed_at: Option<Instant> = None;
    let mut media: HashMap<String, mpsc::UnboundedSender<MediaCommand>> = HashMap::new();
    // Recordings being finished and audited, and late events of ended calls; waited for when
    // the core stops.
    let mut recordings = tokio::task::JoinSet::new();
    let mut streams = Streams::default();
    // A connection to open once the engine's outputs of this turn are handled (the TLS names
    // among them come first: see `on_closed`).
    let mut connect_after: Option<Peer> = None;
    loop {
        let deadline = engine.next_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            // A connection opened, before the requests that came on it are answered: their
            // responses find it (`streams.rs`). Its close comes with the other inputs, after
            // the urgent lane: what was read on it for the urgent lane (responses, requests in
            // a dialog, emergency INVITEs) is handled first; ordinary requests (REGISTER,
            // OPTIONS) may come after it.
            Some(Opened { peer, tx, id }) = opened_rx.recv() => streams.opened(peer, tx, id, ctx.route_timeout, Instant::now()),
            // Emergency first: the urgent lane (emergency INVITEs, their dialogs, responses),
            // a batch at a time so the bytes go out together.
            Some(first) = inbound.urgent.recv() => {
                on_inbound(&mut engine, rtp.as_mut(), first);
                for _ in 0..64 {
                    match inbound.urgent.try_recv() {
                        Ok(next) => on_inbound(&mut engine, rtp.as_mut(), next),
                        Err(_) => break,
                    }
                }
            }
            Some(input) = net_rx.recv() => {
                hand_rtp_ports(&mut engine, rtp.as_mut());
                let now = Now::read();
                match input {
                    NetInput::Closed { peer, id, refused, accepted } => {
                        connect_after = on_closed(peer, id, refused, accepted, &mut streams, &mut engine, now);
                    }
                    // What waited for it is dropped; the engine fails over what it was for, if a
                    // request.
                    NetInput::SendFailed(peer) => {
                        if streams.open_failed(peer) {
                            engine.handle_send_failure(peer, now);
                        }
                    }
                    NetInput::Probe(reply) => {
                        let _ = reply.send(engine.load());
                    }
                    NetInput::Annotate { call_id, kind, reply } => on_annotate(&mut engine, call_id, kind, reply, &ctx, now),
                    NetInput::Fault(fault) => fault.strike(),
                    NetInput::Routes(reply) => {
                        let _ = reply.send(engine.route_health());
                    }
                    NetInput::Resolved { target, answer } => engine.on_resolved(&target, answer, now),
                    NetInput::AnnounceUnlocated(ev) => engine.announce_unlocated(&ev, now),
                    NetInput::Reconfigure { cfg, reply } => {
                        let _ = reply.send(engine.reconfigure(&cfg, now));
                    }
                    NetInput::ElinFound { elin, found } => engine.on_elin_found(&elin, found, now),
                    NetInput::ElinClaimed { call_ref, elin } => engine.on_elin_claimed(&call_ref, elin, now),
                    NetInput::UserLocationKept { key, answer } => engine.on_user_location_kept(&key, answer, now),
                    NetInput::SharedRegistrations(list) => engine.on_shared_registrations(list, now),
                }
            }
            _ = sleep_until(deadline) => {
                hand_rtp_ports(&mut engine, rtp.as_mut());
                engine.handle_timeout(Now::read());
            }
            // Ordinary work last, a few at a time so urgent work is looked at again soon; when
            // it is backed up, ordinary requests are answered 503 instead of served.
            Some(first) = inbound.ordinary.recv() => {
                let mut next = Some(first);
                for _ in 0..16 {
                    let Some(input) = next.take() else { break };
                    if inbound.behind() || engine.overloaded() {
                        on_shed(&mut engine, input);
                    } else {
                        on_inbound(&mut engine, rtp.as_mut(), input);
                    }
                    if !inbound.urgent.is_empty() {
                        break;
                    }
                    next = inbound.ordinary.try_recv().ok();
                }
            }
        }
        let dropped = inbound.take_dropped();
        if dropped > 0 {
            engine.note_dropped(dropped, Now::read());
        }
        // A steady urgent lane must not starve the timers (route timeouts, retransmissions):
        // a deadline that has passed is served now, whichever branch ran.
        if engine.next_timeout().is_some_and(|d| d <= Instant::now()) {
            hand_rtp_ports(&mut engine, rtp.as_mut());
            engine.handle_timeout(Now::read());
        }
        // The crash journal first: this input's call events are with the kernel before any
        // of its bytes leave, so a provider never receives a call the audit log could lose.
        let mut journaled = 0;
        if let Some(j) = journal.as_mut() {
            if let Some(done) = j.rotate_if_full().unwrap_or_else(|e| {
                journal_failed(&mut journal_failed_at, &e);
                None
            }) {
                audit.release(done);
            }
            match j.append(engine.queued_events()) {
                Ok(()) => journaled = engine.queued_events().count(),
                Err(e) => journal_failed(&mut journal_failed_at, &e),
            }
        }
        // In the engine's order: bytes first (nothing may delay the outbound INVITE; the
        // notification IMs deferred behind them come next), then the media of anchored calls,
        // then the audit log and the desks.
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Transmit(t) => match t.peer.transport {
                    Transport::Udp => {
                        if let Some(sock) = udp.as_deref() {
                            if let Err(e) = sock.try_send_to(&t.bytes, t.peer.addr) {
                                if e.kind() == io::ErrorKind::WouldBlock {
                                    let _ = sock.send_to(&t.bytes, t.peer.addr).await;
                                } else {
                                    tracing::warn!(peer = %t.peer, error = %e, "UDP send failed");
                                }
                            }
                        }
                    }
                    // One connection per peer, opened on first use and reused (RFC 3261 §18.1.1).
                    Transport::Tcp | Transport::Tls => {
                        // A response going back to a Via that names a host: that name is what
                        // the certificate must carry (RFC 5922 §7.2).
                        let named = t.reconnect.as_ref().and_then(|r| Some((r.peer, r.name.clone()?)));
                        if let Some(peer) = streams.send(t) {
                            if let Some((_, name)) = named.filter(|(p, _)| p.transport == Transport::Tls && *p == peer)
                            {
                                stream_io.tls.note_peer_name(peer.addr, &name);
                            }
                            tokio::spawn(transport::connect(peer, stream_io.clone()));
                        }
                    }
                },
                // Before the bytes that open a connection there (polled first).
                Output::TlsName { addr, name } => stream_io.tls.note_peer_name(addr, &name),
                Output::Media(action) => on_media_action(action, &mut media, &mut recordings, &ctx),
                Output::Event(ev) => {
                    // Events queued while the bytes went out (notification outcomes) are
                    // journaled as they come.
                    if journaled > 0 {
                        journaled -= 1;
                    } else if let Some(Err(e)) = journal.as_mut().map(|j| j.append(std::iter::once(&ev))) {
                        journal_failed(&mut journal_failed_at, &e);
                    }
                    // Every event is in the audit log; the log file gets what an operator must notice.
                    match &ev.kind {
                        CallEventKind::RouteFailed { reason } | CallEventKind::Failed { reason, .. } => {
                            tracing::warn!(call = %ev.call_id, dialed = %ev.dialed, route = ?ev.route.as_ref().map(|r| &r.name), %reason, "{}", ev.kind.name())
                        }
                        CallEventKind::Retrying { .. } => {
                            tracing::warn!(call = %ev.call_id, dialed = %ev.dialed, detail = %crate::audit::event_detail(&ev.kind), "retrying")
                        }
                        CallEventKind::Detected => {
                            tracing::info!(call = %ev.call_id, dialed = %ev.dialed, caller = %ev.caller.number, test = ev.test_call, "emergency call")
                        }
                        _ => tracing::debug!(call = %ev.call_id, seq = ev.seq, kind = ev.kind.name(), "call event"),
                    }
                    audit.record(ev.clone());
                    let _ = events.send(Arc::new(ev));
                }
                Output::Audit(ev) => record_audit_only(audit, events, ev),
                Output::Sighting(sighting) => offer_sighting(&ctx.sightings, sighting),
                Output::ElinMapped(m) => {
                    if let Err(mpsc::error::TrySendError::Full(m)) = ctx.elin_writer.try_send(m) {
                        tracing::error!(elin = %m.elin, "the ELIN mapping writer is behind: this mapping is kept on this node only");
                    }
                }
                Output::Registered(r) => {
                    if let Err(mpsc::error::TrySendError::Full(r)) = ctx.registration_writer.try_send(r) {
                        tracing::error!(user = %r.user, "the registration writer is behind: this registration is kept on this node only");
                    }
                }
                // Answered whatever happens: the PUBLISH waits for it.
                Output::EnterUserLocation(request) => {
                    let (users, net_tx, audit) = (ctx.user_locations.clone(), ctx.net_tx.clone(), ctx.audit.clone());
                    let mut guard = PublishAnswer::new(request.key.clone(), net_tx);
                    tokio::spawn(async move {
                        let answer = keep_published_location(&users, &audit, request).await;
                        guard.send(answer);
                    });
                }
                // Answered whatever happens (within the claim's bound): the call waits for it.
                Output::ClaimElin(claim) => {
                    let (store, net_tx) = (ctx.callbacks.clone(), ctx.net_tx.clone());
                    tokio::spawn(async move {
                        let elin = store.claim_within(&claim).await;
                        let _ = net_tx.send(NetInput::ElinClaimed { call_ref: claim.mapping.call_ref, elin });
                    });
                }
                // Answered whatever happens (within the look-up's bound): the callback waits for it.
                Output::LookupElin(elin) => {
                    let (store, net_tx) = (ctx.callbacks.clone(), ctx.net_tx.clone());
                    tokio::spawn(async move {
                        let found = store.lookup(&elin).await;
                        let _ = net_tx.send(NetInput::ElinFound { elin, found });
                    });
                }
                // A notification outcome for a call that has ended: numbered from the audit log.
                Output::LateEvent { call_ref, kind } => {
                    let (audit, store, events, lock) =
                        (audit.clone(), ctx.store.clone(), events.clone(), ctx.ended_calls.clone());
                    recordings.spawn(async move {
                        if let Err(e) = annotate_ended(&audit, &store, &events, &lock, &call_ref, kind).await {
                            tracing::error!(call = %call_ref, error = %e, "cannot audit a late event");
                        }
                    });
                }
            }
        }
        if let Some(peer) = connect_after.take() {
            tokio::spawn(transport::connect(peer, stream_io.clone()));
        }
        while recordings.try_join_next().is_some() {}
    }
    // Stopping: the journal's last segment is deleted once its events are committed (the core's
    // stop waits for that); the requests refused so far are recorded; live calls' media ends now; their
    // recordings are finished and audited before the core reports itself stopped.
    if let Some(j) = &journal {
        audit.release(j.current());
    }
    engine.close_refusals(Now::read());
    while let Some(output) = engine.poll_output() {
        if let Output::Audit(ev) = output {
            record_audit_only(audit, events, ev);
        }
    }
    for (_, tx) in media.drain() {
        let _ = tx.send(MediaCommand::Close);
    }
    // The recordings report through the engine (which numbers their events): it keeps
    // answering until the last one is audited.
    loop {
        tokio::select! {
            joined = recordings.join_next() => if joined.is_none() { break },
            Some(input) = net_rx.recv() => match input {
                NetInput::Annotate { call_id, kind, reply } => on_annotate(&mut engine, call_id, kind, reply, &ctx, Now::read()),
                NetInput::Probe(reply) => {
                    let _ = reply.send(engine.load());
                }
                _ => {}
            },
        }
    }
}

/// An event from outside the SIP path for a call (a desk's acknowledgement, a finished
/// recording): numbered by the engine when it knows the call (live or ended lately), queued
/// behind the call's earlier events and answered once durable; else built from the audit log.
fn on_annotate(
    engine: &mut Engine,
    call_id: String,
    kind: CallEventKind,
    reply: crate::core_handle::AnnotateReply,
    ctx: &RunContext,
    now: Now,
) {
    let RunContext { events, audit, .. } = ctx;
    match engine.annotate(&call_id, kind.clone(), now) {
        Some(ev) => {
            let committed = audit.record_tracked(ev.clone());
            let _ = events.send(Arc::new(ev.clone()));
            tokio::spawn(async move {
                let r = committed.await.map(|_| ev).map_err(|_| AnnotateError::Stopped);
                let _ = reply.send(r);
            });
        }
        None => {
            let (audit, store, events, lock) =
                (audit.clone(), ctx.store.clone(), events.clone(), ctx.ended_calls.clone());
            let others = ctx.others.clone();
            tokio::spawn(async move {
                let r = match carried_elsewhere(&store, &call_id).await {
                    Ok(Some(carrier)) => {
                        crate::shared::annotations::forward(store.database(), &carrier, &call_id, kind, &others).await
                    }
                    Ok(None) => annotate_ended(&audit, &store, &events, &lock, &call_id, kind).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(r);
            });
        }
    }
}

/// The journal could not be written (disk full, folder gone): calls go on, the gap closes only
/// when the audit writer commits; said at most once a minute.
fn journal_failed(last: &mut Option<Instant>, e: &io::Error) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
        *last = Some(now);
        tracing::error!(error = %e, "crash journal not written: events not yet committed would be lost if the core crashed now");
    }
}

/// Before the core serves: the events a crashed core left in its journal that the audit log
/// lacks are appended; calls left without an end are ended; a new journal is started.
async fn recover_journal(cfg: &Config, store: &AuditStore) -> Result<Journal, StartError> {
    let dir = cfg.journal_path();
    let jerr = |source| StartError::Journal { path: dir.clone(), source };
    let (events, segments) = journal::recover(&dir).map_err(jerr)?;
    if !events.is_empty() {
        let added = store.append_missing(&events).await?;
        tracing::warn!(
            journaled = events.len(),
            added,
            "the core did not stop cleanly: journaled events recovered into the audit log"
        );
    }
    let closed = store
        .close_interrupted_calls(chrono::Utc::now(), "sosdesk stopped while the call was up: its state was lost")
        .await?;
    if closed > 0 {
        tracing::warn!(calls = closed, "calls still up when the core last stopped are ended in the audit log");
    }
    for p in segments {
        std::fs::remove_file(&p).map_err(jerr)?;
    }
    Journal::open(&dir).map_err(jerr)
}

/// A record of the audit log that belongs to no call. A refusal record (the requests refused
/// from one source over an interval): audited, and one warning in the log per source and
/// interval however many messages it counts. A route's change of health: audited, logged, and
/// sent to every desk and API event stream (their route status follows it).
fn record_audit_only(audit: &AuditWriter, events: &broadcast::Sender<Arc<CallEvent>>, ev: CallEvent) {
    match &ev.kind {
        CallEventKind::Refused { source, count, reasons, .. } => {
            let top = reasons.iter().max_by_key(|(_, n)| **n).map(|(r, _)| r.as_str()).unwrap_or("");
            tracing::warn!(%source, count, most = top, "requests refused (one audit record for the interval)");
        }
        CallEventKind::RouteDown { route, detail } => tracing::error!(%route, "{detail}"),
        CallEventKind::RouteUp { route, detail } => tracing::warn!(%route, "{detail}"),
        CallEventKind::UnlocatedNetwork { .. } => {
            tracing::warn!("{}: add it to the wiremap (sosdesk lis unlocated)", crate::audit::event_detail(&ev.kind))
        }
        CallEventKind::ConfigReloaded { .. } => tracing::warn!("{}", crate::audit::event_detail(&ev.kind)),
        CallEventKind::ConfigRefused { .. } => tracing::error!("{}", crate::audit::event_detail(&ev.kind)),
        _ => {}
    }
    if matches!(
        ev.kind,
        CallEventKind::RouteUp { .. } | CallEventKind::RouteDown { .. } | CallEventKind::UnlocatedNetwork { .. }
    ) {
        let _ = events.send(Arc::new(ev.clone()));
    }
    audit.record(ev);
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(f, "new calls follow it; routes new or changed: {}; ", list(&self.routes.added))?;
        write!(f, "routes removed: {}", list(&self.routes.retired))?;
        if !self.restart_only.is_empty() {
            write!(f, "; changed but applied only at the next restart: {}", self.restart_only.join(", "))?;
        }
        Ok(())
    }
}

/// Bind and start the HTTP API (HTTPS when the config names a certificate and key).
#[allow(clippy::too_many_arguments)]
async fn start_api(
    cfg: &Config,
    config: watch::Receiver<Arc<Config>>,
    addr: SocketAddr,
    core: CoreHandle,
    audit: AuditWriter,
    guard: crate::access::SharedGuard,
    ack_key: Arc<[u8]>,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, bool), StartError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { transport: "HTTP (API)", addr, source })?;
    let bound = listener.local_addr().map_err(|e| StartError::Api(e.to_string()))?;
    let links = crate::api::ack_link::router(core.clone(), ack_key);
    let app = crate::api::router(config, core, audit, guard).merge(links);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    let tls = match cfg.api_tls_paths() {
        Some((cert, key)) => Some(crate::api::tls::acceptor(&cert, &key).map_err(StartError::Api)?),
        None => None,
    };
    let https = tls.is_some();
    tokio::spawn(async move {
        let served = match tls {
            Some(acceptor) => {
                let app = app.into_make_service_with_connect_info::<crate::api::tls::ApiPeer>();
                axum::serve(crate::api::tls::TlsListener::new(listener, acceptor), app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                let app = app.into_make_service_with_connect_info::<crate::api::tls::ApiPeer>();
                axum::serve(listener, app).with_graceful_shutdown(shutdown).await
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    Ok((bound, https))
}

/// The live node that carries `call_id`, when it is not this one (several nodes on one store):
/// the event is then made there (`crate::shared::annotations`).
async fn carried_elsewhere(store: &AuditStore, call_id: &str) -> Result<Option<String>, AnnotateError> {
    let Some(me) = store.node() else { return Ok(None) };
    if store.database().backend != crate::db::Backend::Postgres {
        return Ok(None);
    }
    let carrier = store.call_node(call_id).await.map_err(|e| AnnotateError::Store(e.to_string()))?;
    match carrier {
        Some(c) if c != me => {
            let live = crate::shared::node_name::is_live(store.database(), &c)
                .await
                .map_err(|e| AnnotateError::Store(e.to_string()))?;
            Ok(live.then_some(c))
        }
        _ => Ok(None),
    }
}

/// An event for a call the engine no longer holds: numbered after the call's last stored event.
/// The engine never produces events for an ended call, so once the writer has flushed, the store
/// is the whole truth; the lock keeps two such events from taking the same number.
async fn annotate_ended(
    audit: &AuditWriter,
    store: &AuditStore,
    events: &broadcast::Sender<Arc<CallEvent>>,
    lock: &tokio::sync::Mutex<()>,
    call_id: &str,
    kind: CallEventKind,
) -> Result<CallEvent, AnnotateError> {
    let _serial = lock.lock().await;
    audit.flush().await;
    let stored = store.call_events(call_id).await.map_err(|e| AnnotateError::Store(e.to_string()))?;
    let last =
        stored.iter().max_by_key(|r| r.call_seq).ok_or_else(|| AnnotateError::UnknownCall(call_id.to_string()))?;
    let mut ev = last.event.clone();
    ev.seq = last.event.seq + 1;
    ev.at = chrono::Utc::now();
    ev.kind = kind;
    audit.record_durable(ev.clone()).await.map_err(|e| AnnotateError::Store(e.to_string()))?;
    let _ = events.send(Arc::new(ev.clone()));
    Ok(ev)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// An order for the media task of an anchored call: each call has its own task; when it ends,
/// its recording is audited in the call's own sequence, like an acknowledgement of an ended call.
fn on_media_action(
    action: MediaAction,
    media: &mut HashMap<String, mpsc::UnboundedSender<MediaCommand>>,
    recordings: &mut tokio::task::JoinSet<()>,
    ctx: &RunContext,
) {
    let RunContext { events, audit, .. } = ctx;
    match action {
        MediaAction::Open { call_ref } => {
            let (tx, task) = media_runner::spawn(call_ref.clone(), ctx.recordings.clone());
            media.insert(call_ref.clone(), tx);
            // When the media task ends (the call ended), its recording is audited in the
            // call's own sequence: numbered by the engine, which keeps ended calls a while (no
            // read of the audit log, no lock: at 50 calls a second that path fell behind).
            let (audit, store, events, lock) =
                (audit.clone(), ctx.store.clone(), events.clone(), ctx.ended_calls.clone());
            let net_tx = ctx.net_tx.clone();
            recordings.spawn(async move {
                let kind = match task.await {
                    Ok(None) => return,
                    Ok(Some(Ok(rec))) => CallEventKind::Recorded {
                        path: rec.path.display().to_string(),
                        sha256: rec.sha256.clone(),
                        duration_ms: (rec.seconds() * 1000.0).round() as u64,
                    },
                    Ok(Some(Err(reason))) => CallEventKind::RecordingFailed { reason },
                    Err(e) => CallEventKind::RecordingFailed { reason: format!("media task failed: {e}") },
                };
                let (reply, answer) = tokio::sync::oneshot::channel();
                let asked = net_tx.send(NetInput::Annotate { call_id: call_ref.clone(), kind: kind.clone(), reply });
                let done = match asked {
                    Ok(()) => answer.await.unwrap_or(Err(AnnotateError::Stopped)),
                    Err(_) => Err(AnnotateError::Stopped),
                };
                let done = match done {
                    // The engine task is gone: the audit log numbers it.
                    Err(AnnotateError::Stopped) => {
                        annotate_ended(&audit, &store, &events, &lock, &call_ref, kind).await
                    }
                    other => other,
                };
                if let Err(e) = done {
                    tracing::error!(call = %call_ref, error = %e, "cannot audit the recording");
                }
            });
        }
        MediaAction::Leg { call_ref, cmd } => {
            if let Some(tx) = media.get(&call_ref) {
                let _ = tx.send(cmd);
            }
        }
        MediaAction::Close { call_ref } => {
            if let Some(tx) = media.remove(&call_ref) {
                let _ = tx.send(MediaCommand::Close);
            }
        }
    }
}

/// The RTP ports of anchored calls, as the server hands them to the engine (which never binds).
struct RtpSupply {
    ports: RtpPorts,
    /// After a failed bind (every port of the range in use), no new attempt before this: a full
    /// range then costs one bounded search per interval, not one per received packet.
    retry_at: Option<Instant>,
    /// The last time a full range was logged (at most once a second).
    logged_at: Option<Instant>,
}

/// How long a full RTP range is left alone before the next bind attempt.
const RTP_RETRY: Duration = Duration::from_millis(20);

/// Bind the RTP ports the engine wants in hand before its next input.
fn hand_rtp_ports(engine: &mut Engine, supply: Option<&mut RtpSupply>) {
    let Some(supply) = supply else { return };
    let wanted = engine.rtp_ports_wanted();
    if wanted == 0 {
        return;
    }
    let now = Instant::now();
    if supply.retry_at.is_some_and(|t| now < t) {
        return;
    }
    supply.retry_at = None;
    for _ in 0..wanted {
        match supply.ports.open() {
            Ok((socket, addr)) => engine.add_rtp_port(socket, addr),
            Err(e) => {
                supply.retry_at = Some(now + RTP_RETRY);
                if supply.logged_at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    supply.logged_at = Some(now);
                    tracing::error!(error = %e, "no RTP port free: new calls' media passes through until one is");
                }
                break;
            }
        }
    }
}

fn on_inbound(engine: &mut Engine, rtp: Option<&mut RtpSupply>, input: Inbound) {
    hand_rtp_ports(engine, rtp);
    match input {
        Inbound::Message(msg, peer) => engine.handle_message(msg, peer, Now::read()),
        Inbound::Rejected(rej, peer) => engine.handle_rejection(rej, peer, Now::read()),
    }
}

/// A TCP or TLS connection closed (see `NetInput::Closed`). Returns the peer to open a new
/// connection to, for requests that found this one closing: the caller opens it only once the
/// engine's outputs of this close are handled, so that the name a TLS certificate there must
/// carry (`Output::TlsName`, when the peer named itself) is known before the handshake.
fn on_closed(
    peer: Peer,
    id: u64,
    refused: bool,
    accepted: bool,
    streams: &mut Streams,
    engine: &mut Engine,
    now: Now,
) -> Option<Peer> {
    // A close of a connection already replaced by a later one changes nothing.
    let reconnect = streams.closed(peer, id)?;
    if refused {
        // What was queued for it goes with it: the engine fails it over.
        streams.open_failed(peer);
        engine.handle_send_failure(peer, now);
        return None;
    }
    // Answers to what went out on it can no longer come back on it.
    engine.handle_connection_closed(peer, accepted, now);
    // Requests that found it closing wait for the next one, opened only now that the engine has
    // heard of this close.
    reconnect
}

/// The core is behind on ordinary work: answer 503 + Retry-After without serving it.
fn on_shed(engine: &mut Engine, input: Inbound) {
    match input {
        Inbound::Message(msg, peer) => engine.shed(msg, peer, Now::read()),
        Inbound::Rejected(rej, peer) => engine.handle_rejection(rej, peer, Now::read()),
    }
}
