//! The running core: sockets, timers and fan-out around the sans-I/O [`Engine`].
//!
//! One tokio task owns the engine and the UDP socket; TCP connections each have a reader and a
//! writer task that talk to it over channels. After every input the task first sends what the
//! engine produced (the outbound INVITE never waits for anything else), then hands the call
//! events to the audit writer and to subscribers (desks).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::audit::{spawn_writer, AuditStore, AuditWriter};
use crate::clock::Now;
use crate::config::Config;
use crate::core_handle::NetInput;
pub use crate::core_handle::{AnnotateError, CoreHandle};
use crate::events::{CallEvent, CallEventKind};
use crate::location::held::{HeldCache, HeldState};
use crate::location::store::LisStore;
use crate::location::wiremap::{SharedWiremap, Wiremap};
use crate::media::runner::{self as media_runner, MediaCommand, RtpPorts};
use crate::routing::{Engine, LocalEndpoint, Locators, MediaAction, Output};
use crate::sip::parse::{parse_datagram, StreamFramer, StreamItem, MAX_MESSAGE};
use crate::sip::transaction::{Peer, Transport};

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
}

/// A running routing core.
pub struct Core {
    pub local: LocalEndpoint,
    /// Where the HELD endpoint listens, when configured.
    pub held: Option<SocketAddr>,
    /// Where the HTTP API listens, when configured (and whether it is HTTPS).
    pub api: Option<(SocketAddr, bool)>,
    wiremap: SharedWiremap,
    events: broadcast::Sender<CallEvent>,
    audit: AuditWriter,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    store: AuditStore,
    net_tx: mpsc::UnboundedSender<NetInput>,
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
        let udp_addr = udp.as_ref().and_then(|s| s.local_addr().ok());
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let host = cfg.sip.public_host.clone().unwrap_or_else(|| {
            let ip = udp_addr.or(tcp_addr).map(|a| a.ip()).unwrap_or([127, 0, 0, 1].into());
            match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            }
        });
        let local = LocalEndpoint { host, udp: udp_addr, tcp: tcp_addr };

        let store = AuditStore::open(&cfg.store_path()).await?;
        let audit = spawn_writer(store.clone());
        let (events, _) = broadcast::channel(4096);
        let (stop, stop_rx) = watch::channel(false);
        let (net_tx, net_rx) = mpsc::unbounded_channel();

        if let Some(listener) = tcp {
            tokio::spawn(accept_loop(listener, net_tx.clone(), stop_rx.clone()));
        }
        // The Location Information Service: the wiremap index from the store (rebuilt when an
        // import changes it), the HELD endpoint, and what HELD told each device.
        let lis = LisStore::open(&cfg.store_path()).await?;
        let wiremap = SharedWiremap::new(Wiremap::empty());
        let generation = reload_wiremap(&lis, &wiremap, None).await;
        let held_cache = HeldCache::default();
        let held = match cfg.lis.held {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
                    transport: "HTTP (HELD)",
                    addr,
                    source,
                })?;
                let bound = listener.local_addr().ok();
                // As URIs write it: an IPv6 host in brackets (`HeldState` takes nothing else).
                let state = HeldState::new(Arc::new(wiremap.clone()), &local.host)
                    .map_err(|e| StartError::Held(e.to_string()))?
                    .with_cache(held_cache.clone())
                    .with_identity_requesters(cfg.lis.held_requesters.clone());
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
            lis,
            wiremap.clone(),
            generation,
            Duration::from_millis(cfg.lis.refresh_ms),
            stop_rx.clone(),
        ));

        let guard = crate::access::AuthGuard::shared();
        let handle =
            CoreHandle { local: local.clone(), store: store.clone(), events: events.clone(), net_tx: net_tx.clone() };
        let api = match cfg.api.listen {
            Some(addr) => Some(start_api(cfg, addr, handle, audit.clone(), guard.clone(), stop_rx.clone()).await?),
            None => None,
        };
        let mut engine = Engine::new(cfg, local.clone(), Now::read());
        engine.set_guard(guard);
        engine.set_locators(Locators { wiremap: Some(Arc::new(wiremap.clone())), held: Some(Arc::new(held_cache)) });
        let rtp = if cfg.media.anchor {
            engine.anchor_media();
            Some(RtpSupply { ports: rtp_ports(cfg)?, retry_at: None, logged_at: None })
        } else {
            None
        };
        let ctx = RunContext {
            rtp,
            events: events.clone(),
            audit: audit.clone(),
            store: store.clone(),
            ended_calls: Default::default(),
            recordings: (cfg.media.anchor && cfg.media.record).then(|| cfg.recordings_path()),
        };
        let task = tokio::spawn(run(engine, udp, net_tx.clone(), net_rx, ctx, stop_rx));
        tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, held = ?held, api = ?api, store = %cfg.store_path().display(), "sosdesk core started");
        Ok(Core { local, held, api, wiremap, events, audit, stop, task, store, net_tx })
    }

    /// Every `CallEvent`, as it happens (a slow subscriber that falls 4,096 events behind is
    /// told so by `RecvError::Lagged` and can catch up from the audit log).
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }

    /// The wiremap index the call path and HELD use (replaced atomically on every reload).
    pub fn wiremap(&self) -> &SharedWiremap {
        &self.wiremap
    }

    pub fn audit(&self) -> &AuditWriter {
        &self.audit
    }

    pub fn store(&self) -> &AuditStore {
        &self.store
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
            events: self.events.clone(),
            net_tx: self.net_tx.clone(),
        }
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

    /// Stop serving, then wait until every event recorded so far is durable.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.audit.flush().await;
        self.audit.shutdown().await;
        tracing::info!("sosdesk core stopped");
    }
}

/// What the engine task hands its events to.
struct RunContext {
    /// The RTP port range of anchored calls: the engine is handed bound ports before each input.
    rtp: Option<RtpSupply>,
    events: broadcast::Sender<CallEvent>,
    audit: AuditWriter,
    store: AuditStore,
    /// Serialises events added to calls that have ended (see [`annotate_ended`]).
    ended_calls: Arc<tokio::sync::Mutex<()>>,
    /// Where anchored calls are recorded (none: not recorded).
    recordings: Option<std::path::PathBuf>,
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
    net_tx: mpsc::UnboundedSender<NetInput>,
    mut net_rx: mpsc::UnboundedReceiver<NetInput>,
    mut ctx: RunContext,
    mut stop: watch::Receiver<bool>,
) {
    let mut rtp = ctx.rtp.take();
    let RunContext { events, audit, .. } = &ctx;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut media: HashMap<String, mpsc::UnboundedSender<MediaCommand>> = HashMap::new();
    // Recordings being finished and audited, and late events of ended calls; waited for when
    // the core stops.
    let mut recordings = tokio::task::JoinSet::new();
    let mut conns: HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>> = HashMap::new();
    let mut connecting: HashMap<SocketAddr, Vec<Bytes>> = HashMap::new();
    loop {
        let deadline = engine.next_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = recv(udp.as_deref(), &mut buf) => {
                match r {
                    Ok((n, from)) => {
                        on_datagram(&mut engine, rtp.as_mut(), &buf[..n], from);
                        // Drain what else is queued before flushing: fewer wake-ups under load.
                        if let Some(sock) = udp.as_deref() {
                            for _ in 0..64 {
                                match sock.try_recv_from(&mut buf) {
                                    Ok((n, from)) => on_datagram(&mut engine, rtp.as_mut(), &buf[..n], from),
                                    Err(_) => break,
                                }
                            }
                        }
                    }
                    // ICMP port-unreachable surfaces as a recv error on some systems: not fatal.
                    Err(e) => tracing::debug!(error = %e, "UDP receive error"),
                }
            }
            Some(input) = net_rx.recv() => {
                hand_rtp_ports(&mut engine, rtp.as_mut());
                let now = Now::read();
                match input {
                    NetInput::Message(m, peer) => engine.handle_message(m, peer, now),
                    NetInput::Rejected(r, peer) => engine.handle_rejection(r, peer, now),
                    NetInput::Opened(addr, tx) => {
                        if let Some(queued) = connecting.remove(&addr) {
                            for b in queued {
                                let _ = tx.send(b);
                            }
                        }
                        conns.insert(addr, tx);
                    }
                    NetInput::Closed(addr) => {
                        conns.remove(&addr);
                    }
                    NetInput::SendFailed(peer) => {
                        connecting.remove(&peer.addr);
                        engine.handle_send_failure(peer, now);
                    }
                    NetInput::Annotate { call_id, kind, reply } => match engine.annotate(&call_id, kind.clone(), now) {
                        // Live call: queued now, behind the call's earlier events; answered once durable.
                        Some(ev) => {
                            let committed = audit.record_tracked(ev.clone());
                            let _ = events.send(ev.clone());
                            tokio::spawn(async move {
                                let r = committed.await.map(|_| ev).map_err(|_| AnnotateError::Stopped);
                                let _ = reply.send(r);
                            });
                        }
                        None => {
                            let (audit, store, events, lock) =
                                (audit.clone(), ctx.store.clone(), events.clone(), ctx.ended_calls.clone());
                            tokio::spawn(async move {
                                let r = annotate_ended(&audit, &store, &events, &lock, &call_id, kind).await;
                                let _ = reply.send(r);
                            });
                        }
                    },
                }
            }
            _ = sleep_until(deadline) => {
                hand_rtp_ports(&mut engine, rtp.as_mut());
                engine.handle_timeout(Now::read());
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
                    Transport::Tcp => {
                        if let Some(tx) = conns.get(&t.peer.addr) {
                            if tx.send(t.bytes.clone()).is_ok() {
                                continue;
                            }
                            conns.remove(&t.peer.addr);
                        }
                        match connecting.get_mut(&t.peer.addr) {
                            Some(q) => q.push(t.bytes),
                            None => {
                                connecting.insert(t.peer.addr, vec![t.bytes]);
                                tokio::spawn(connect(t.peer, net_tx.clone()));
                            }
                        }
                    }
                },
                Output::Media(action) => on_media_action(action, &mut media, &mut recordings, &ctx),
                Output::Event(ev) => {
                    // Every event is in the audit log; the log file gets what an operator must notice.
                    match &ev.kind {
                        CallEventKind::RouteFailed { reason } | CallEventKind::Failed { reason, .. } => {
                            tracing::warn!(call = %ev.call_id, dialed = %ev.dialed, route = ?ev.route.as_ref().map(|r| &r.name), %reason, "{}", ev.kind.name())
                        }
                        CallEventKind::Detected => {
                            tracing::info!(call = %ev.call_id, dialed = %ev.dialed, caller = %ev.caller.number, test = ev.test_call, "emergency call")
                        }
                        _ => tracing::debug!(call = %ev.call_id, seq = ev.seq, kind = ev.kind.name(), "call event"),
                    }
                    audit.record(ev.clone());
                    let _ = events.send(ev);
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
        while recordings.try_join_next().is_some() {}
    }
    // Stopping: live calls' media ends now; their recordings are finished and audited before
    // the core reports itself stopped.
    for (_, tx) in media.drain() {
        let _ = tx.send(MediaCommand::Close);
    }
    while recordings.join_next().await.is_some() {}
}

/// Bind and start the HTTP API (HTTPS when the config names a certificate and key).
async fn start_api(
    cfg: &Config,
    addr: SocketAddr,
    core: CoreHandle,
    audit: AuditWriter,
    guard: crate::access::SharedGuard,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, bool), StartError> {
    let listener =
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { transport: "HTTP (API)", addr, source })?;
    let bound = listener.local_addr().map_err(|e| StartError::Api(e.to_string()))?;
    let app = crate::api::router(cfg, core, audit, guard);
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

/// An event for a call the engine no longer holds: numbered after the call's last stored event.
/// The engine never produces events for an ended call, so once the writer has flushed, the store
/// is the whole truth; the lock keeps two such events from taking the same number.
async fn annotate_ended(
    audit: &AuditWriter,
    store: &AuditStore,
    events: &broadcast::Sender<CallEvent>,
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
    let _ = events.send(ev.clone());
    Ok(ev)
}

/// Load the wiremap from the store and swap it in when its generation moved. A store that cannot
/// be read, or data the index refuses, leaves the previous map in place (logged): calls go on
/// with the last good wiremap rather than none.
async fn reload_wiremap(lis: &LisStore, wiremap: &SharedWiremap, known: Option<i64>) -> Option<i64> {
    let generation = match lis.generation().await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the LIS generation; keeping the current wiremap");
            return known;
        }
    };
    if known == Some(generation) {
        return known;
    }
    let started = Instant::now();
    match lis.load_wiremap().await {
        Ok((erls, entries)) => match Wiremap::build(erls, &entries) {
            Ok(map) => {
                let n = map.len();
                wiremap.replace(map);
                tracing::info!(entries = n, generation, ms = started.elapsed().as_millis() as u64, "wiremap loaded");
                Some(generation)
            }
            Err(e) => {
                tracing::error!(error = %e, "the wiremap data is inconsistent; keeping the current wiremap");
                known
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot load the wiremap; keeping the current wiremap");
            known
        }
    }
}

async fn refresh_wiremap(
    lis: LisStore,
    wiremap: SharedWiremap,
    mut generation: Option<i64>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(every) => generation = reload_wiremap(&lis, &wiremap, generation).await,
        }
    }
    lis.close().await;
}

async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
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
            // When the media task ends (the call ended), its recording is audited in
            // the call's own sequence, like an acknowledgement of an ended call.
            let (audit, store, events, lock) =
                (audit.clone(), ctx.store.clone(), events.clone(), ctx.ended_calls.clone());
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
                if let Err(e) = annotate_ended(&audit, &store, &events, &lock, &call_ref, kind).await {
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

fn on_datagram(engine: &mut Engine, rtp: Option<&mut RtpSupply>, data: &[u8], from: SocketAddr) {
    let peer = Peer { transport: Transport::Udp, addr: from };
    // RFC 5626 §4.4.1 STUN / CRLF keep-alives and stray whitespace are not SIP messages.
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return;
    }
    hand_rtp_ports(engine, rtp);
    match parse_datagram(data) {
        Ok(msg) => engine.handle_message(msg, peer, Now::read()),
        Err(rej) => engine.handle_rejection(rej, peer, Now::read()),
    }
}

async fn accept_loop(listener: TcpListener, net_tx: mpsc::UnboundedSender<NetInput>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, addr, net_tx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, keep accepting.
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// How long an outgoing TCP connection may take to open. A receiver whose firewall drops the
/// SYN instead of refusing it would otherwise hold its requests for the kernel's two minutes of
/// SYN retries; after this the engine hears `SendFailed` (a route fails over, a notification
/// MESSAGE goes over UDP) while the attempt's own timer (2 s by default) is still running.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

async fn connect(peer: Peer, net_tx: mpsc::UnboundedSender<NetInput>) {
    match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(peer.addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            connection(stream, peer.addr, net_tx).await;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TCP connect failed");
            let _ = net_tx.send(NetInput::SendFailed(peer));
        }
        Err(_) => {
            tracing::warn!(%peer, ms = TCP_CONNECT_TIMEOUT.as_millis() as u64, "TCP connect timed out");
            let _ = net_tx.send(NetInput::SendFailed(peer));
        }
    }
}

/// One TCP connection: frames messages by Content-Length (RFC 3261 §18.3) and writes what the
/// engine sends. A framing error answers (when it can) and closes the connection.
async fn connection(stream: TcpStream, addr: SocketAddr, net_tx: mpsc::UnboundedSender<NetInput>) {
    let peer = Peer { transport: Transport::Tcp, addr };
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
    if net_tx.send(NetInput::Opened(addr, out_tx.clone())).is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if b.is_empty() {
                break; // close request
            }
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = StreamFramer::default();
    'read: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match framer.next(&mut buf) {
                StreamItem::Message(m) => {
                    let _ = net_tx.send(NetInput::Message(m, peer));
                }
                StreamItem::Invalid(rej) => {
                    let _ = net_tx.send(NetInput::Rejected(rej, peer));
                }
                StreamItem::Ping => {
                    let _ = out_tx.send(Bytes::from_static(b"\r\n"));
                }
                StreamItem::Fatal(rej) => {
                    tracing::info!(%peer, reason = %rej.reason, "closing TCP connection after a framing error");
                    if let Some(reply) = rej.reply {
                        let _ = out_tx.send(Bytes::from(reply.to_bytes()));
                    }
                    let _ = out_tx.send(Bytes::new());
                    break 'read;
                }
                StreamItem::Incomplete => break,
            }
        }
    }
    let _ = net_tx.send(NetInput::Closed(addr));
    drop(out_tx);
    let _ = writer.await;
}
