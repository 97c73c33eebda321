//! Remote desk mode: the desk connects to a sosdesk core on another machine instead of running
//! one (docs/remote-desk.md).
//!
//! - Events: the core's API stream (`GET /api/v1/events`), opened first, then a catch-up from
//!   the audit log (`/history`, `/calls/{id}`), so nothing that happened while the desk was away
//!   is missed; the board keeps each (call, seq) once, whichever way it came.
//! - Alerts: the desk REGISTERs its account over SIP and receives the core's notification
//!   MESSAGEs as a second, independent path ([`crate::registration`]).
//! - Acknowledgements, history and call detail go through the API; joining a call goes to the
//!   core's conference address over SIP, as for an embedded core.
//! - A lost connection shows at once ("not connected", with the reason) and is retried with
//!   backoff; every reconnect catches up again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::Local;
use serde::Deserialize;
use sosdesk::api::client::{ApiClient, ClientError};
use sosdesk::api::DeskInfo;
use sosdesk::events::CallEvent;
use tokio::sync::watch;

use super::{Desk, Link};
use crate::model::*;
use crate::registration::{Agent, SipReport};
use crate::sipua::{CoreSip, Credentials};

/// Waits between reconnection attempts: quick at first (a core restarting), then every 10 s.
const BACKOFF: &[u64] = &[1, 2, 4, 8, 10];
/// After the core refused this desk's credentials: an admin has to fix them first.
const REFUSED_RETRY: u64 = 60;
/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

/// The `[remote]` table of a desk config file: which core, and this desk's account there.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// The core's API: `https://core.example.org:8443` (`http://` only on a trusted network);
    /// or several, one per core node sharing one store (`["https://a:8443", "https://b:8443"]`):
    /// the desk stays on one while it answers and goes to the next when it fails.
    #[serde(deserialize_with = "one_or_several")]
    pub api: Vec<String>,
    /// A `[[desk]]` account of the core's config.
    pub username: String,
    pub password: String,
    /// The CA that signed the core's API certificate (PEM), relative to this file; default:
    /// the system's CAs.
    pub ca_cert: Option<PathBuf>,
    /// How the desk's SIP (registration, alerts, joining calls) reaches the core: `tls` (its
    /// TLS listener), `udp`, or `auto` (default): TLS when the core has a TLS listener.
    #[serde(default)]
    pub sip_transport: SipTransport,
    /// The CA of the core's SIP certificate (PEM), relative to this file; default: `ca_cert`,
    /// else the system's CAs.
    pub sip_ca_cert: Option<PathBuf>,
    /// This desk's certificate and key (PEM) for a core that requires them on SIP over TLS
    /// (its `sip.tls_client_ca`: mutual TLS).
    pub sip_tls_cert: Option<PathBuf>,
    pub sip_tls_key: Option<PathBuf>,
    /// The local UDP port for SIP over UDP (registration, alerts); 0 (default): any free port.
    #[serde(default)]
    pub sip_port: u16,
    /// How long a registration lasts before it is refreshed (seconds; the core may shorten it).
    #[serde(default = "default_expires")]
    pub register_expires_s: u32,
}

fn default_expires() -> u32 {
    300
}

/// `api = "https://…"` or `api = ["https://…", "https://…"]`.
fn one_or_several<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Api {
        One(String),
        Several(Vec<String>),
    }
    Ok(match Api::deserialize(d)? {
        Api::One(a) => vec![a],
        Api::Several(v) => v,
    })
}

/// `[remote] sip_transport`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    /// TLS when the core advertises a TLS listener, else UDP.
    #[default]
    Auto,
    Udp,
    Tls,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig").field("api", &self.api).field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct RemoteFile {
    remote: RemoteConfig,
}

/// The remote desk config in `path`, or `None` when the file is a core config (it has no
/// `[remote]` table). A file that cannot be read or parsed is an error naming it.
pub fn load_remote(path: &Path) -> Result<Option<RemoteConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    if !table.contains_key("remote") {
        return Ok(None);
    }
    let file: RemoteFile = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    let mut cfg = file.remote;
    if cfg.api.is_empty() || cfg.api.iter().any(|a| a.trim().is_empty()) {
        return Err(format!("{}: [remote] api is empty", path.display()));
    }
    for (what, v) in [("username", &cfg.username), ("password", &cfg.password)] {
        if v.trim().is_empty() {
            return Err(format!("{}: [remote] {what} is empty", path.display()));
        }
    }
    if !(30..=3600).contains(&cfg.register_expires_s) {
        return Err(format!("{}: [remote] register_expires_s must be 30 to 3600", path.display()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    for file in [&mut cfg.ca_cert, &mut cfg.sip_ca_cert, &mut cfg.sip_tls_cert, &mut cfg.sip_tls_key] {
        if let Some(f) = file.as_ref().filter(|f| f.is_relative()) {
            *file = Some(dir.join(f));
        }
    }
    if cfg.sip_tls_cert.is_some() != cfg.sip_tls_key.is_some() {
        return Err(format!("{}: [remote] sip_tls_cert and sip_tls_key go together", path.display()));
    }
    Ok(Some(cfg))
}

/// A parse error by line and reason only: toml's own message quotes the line, which may be the
/// password's.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map(|s| sosdesk::config::line_of(text, s.start));
    match line {
        Some(l) => format!("{} line {l}: {}", path.display(), e.message()),
        None => format!("{}: {}", path.display(), e.message()),
    }
}

/// A connection to a core elsewhere: its API client, what it said about this desk, and the
/// switch that stops the tasks following it.
pub struct RemoteLink {
    /// One client per address of `[remote] api`; [`RemoteLink::api`] the one in use.
    apis: Vec<ApiClient>,
    current: std::sync::atomic::AtomicUsize,
    pub config: RemoteConfig,
    /// Learnt at each connection; `None` until the first.
    known: Mutex<Option<Known>>,
    stop: watch::Sender<bool>,
    /// Tells the SIP agent to register again (after a reconnection).
    renew: Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
struct Known {
    info: DeskInfo,
    sip: Option<CoreSip>,
}

impl RemoteLink {
    /// The core's API this desk uses now.
    pub fn api(&self) -> &ApiClient {
        &self.apis[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.apis.len()]
    }

    /// Goes on to the next core's API (after a failure); true when there is another.
    fn switch(&self) -> bool {
        self.current.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.apis.len() > 1
    }

    pub fn info(&self) -> Option<DeskInfo> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|k| k.info.clone())
    }

    /// The core's SIP (UDP or TLS), for joining calls and the test call.
    pub fn sip(&self) -> Option<CoreSip> {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|k| k.sip.clone())
    }

    pub fn credentials(&self) -> Credentials {
        Credentials { username: self.config.username.clone(), password: self.config.password.clone() }
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// The core's SIP from what it advertises and what this desk's file asks for: TLS to its TLS
/// port (`auto` or `tls`), else UDP (`auto` or `udp`). The host is the advertised one when this
/// desk can use it, else the API's (a core bound to 0.0.0.0 advertises that); over TLS the
/// core's certificate must carry that host name (or address). `Err` says why there is none.
async fn core_sip(info: &DeskInfo, api: &ApiClient, cfg: &RemoteConfig) -> Result<CoreSip, String> {
    let advertised = info.sip_host.trim_matches(['[', ']']);
    let host = match advertised.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => api.host().to_string(),
        _ if advertised.is_empty() => api.host().to_string(),
        _ => advertised.to_string(),
    };
    let port = match (cfg.sip_transport, info.sip_tls, info.sip_udp) {
        (SipTransport::Tls | SipTransport::Auto, Some(port), _) => port,
        (SipTransport::Udp | SipTransport::Auto, _, Some(port)) => return lookup(&host, port).await.map(CoreSip::Udp),
        (SipTransport::Tls, None, _) => {
            return Err("the core has no SIP over TLS (its sip.tls), which this desk's file asks for".into())
        }
        (_, _, None) => return Err("the core has no SIP over UDP: alerts come only through the API".into()),
    };
    let ca = cfg.sip_ca_cert.as_deref().or(cfg.ca_cert.as_deref());
    let identity = cfg.sip_tls_cert.as_deref().zip(cfg.sip_tls_key.as_deref());
    let client = sosdesk::transport::tls::TlsClient::towards(&host, ca, identity)
        .map_err(|e| format!("SIP over TLS to the core cannot be set up: {e}"))?;
    Ok(CoreSip::Tls { addr: lookup(&host, port).await?, client })
}

async fn lookup(host: &str, port: u16) -> Result<SocketAddr, String> {
    let found = tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.next();
    found.ok_or_else(|| format!("{host} has no address"))
}

impl Desk {
    /// Connects to the core in `cfg` (remote desk mode). Returns at once with the link (the
    /// caller keeps it); the connection is made, and remade after any loss, in the background,
    /// and the status bar follows it.
    pub(super) fn start_remote(
        self: &Arc<Self>,
        cfg: RemoteConfig,
        from: &Path,
    ) -> Result<Arc<RemoteLink>, crate::error::DeskError> {
        let mut apis = Vec::with_capacity(cfg.api.len());
        for a in &cfg.api {
            match ApiClient::new(a, &cfg.username, &cfg.password, cfg.ca_cert.as_deref()) {
                Ok(a) => apis.push(a),
                Err(e) => return Err(self.core_failed(format!("{}: {e}", from.display()))),
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let link = Arc::new(RemoteLink {
            apis,
            current: Default::default(),
            config: cfg,
            known: Mutex::new(None),
            stop,
            renew: Arc::new(tokio::sync::Notify::new()),
        });
        let api_text = link.api().base().to_string();
        let account = link.config.username.clone();
        {
            let mut inner = self.lock();
            inner.routes = Default::default();
            inner.test_number = None;
            inner.accounts = Vec::new();
            let s = &mut inner.status;
            s.core = CoreState::Starting;
            s.core_detail = format!("connecting to the core at {api_text} as {account}");
            s.config_path = Some(from.display().to_string());
            s.listening.clear();
            s.held = None;
            s.routes.clear();
            s.store = Component::ok("the audit log is kept by the core");
            s.join = JoinInfo { detail: "not connected to the core yet".into(), ..Default::default() };
            s.remote = Some(RemoteStatus {
                api: api_text.clone(),
                account: account.clone(),
                connected: false,
                since: now_text(),
                events: Component::failed("not connected yet"),
                sip: Component::failed("not registered yet"),
            });
        }
        self.update_status(|_| {});
        tokio::spawn(follow(Arc::downgrade(self), link.clone(), stop_rx));
        tracing::info!(api = %api_text, %account, "remote desk: connecting to the core");
        Ok(link)
    }

    /// What the core said about this desk: its account, the policies' acknowledgement modes
    /// and two-way setting, the test number.
    fn remote_known(self: &Arc<Self>, info: &DeskInfo) {
        let modes: HashMap<String, AcknowledgeMode> =
            info.policies.iter().map(|p| (p.name.clone(), p.acknowledge)).collect();
        let two_way = info.policies.iter().filter(|p| p.two_way).map(|p| p.name.clone()).collect();
        let mut inner = self.lock();
        inner.test_number = info.test_number.clone();
        inner.status.policy_routes =
            info.policies.iter().map(|p| PolicyRoutes { policy: p.name.clone(), routes: p.routes.clone() }).collect();
        inner.status.join = super::join_as(&info.name, &info.username, info.talk, two_way, vec![info.username.clone()]);
        let changes = inner.board.set_identity(&info.name, modes);
        drop(inner);
        self.apply_changes(changes);
    }

    /// Changes the remote connection's status; nothing once the desk has left remote mode (a
    /// task of the old link finishing late must not bring it back).
    fn remote_status(&self, f: impl FnOnce(&mut RemoteStatus, &mut DeskStatus)) {
        self.update_status(|s| {
            if let Some(mut r) = s.remote.take() {
                f(&mut r, s);
                s.remote = Some(r);
            }
        });
    }

    fn on_sip_report(self: &Arc<Self>, report: SipReport) {
        match report {
            // The SIP path may only raise an alert, never change one: a MESSAGE is not
            // authenticated (its source address can be spoofed on a LAN), so a forged
            // "acknowledged" must not silence an alarm, nor a forged sequence number hide a call's
            // real events. The notification carries the call's detection, its first event.
            SipReport::Alert(ev) => {
                let new_call = self.lock().board.get(&ev.call_id).is_none();
                if matches!(ev.kind, sosdesk::events::CallEventKind::Detected) && ev.seq == 1 && new_call {
                    self.on_event(&ev);
                } else if new_call {
                    tracing::warn!(call = %ev.call_id, kind = ev.kind.name(), "ignored a MESSAGE event that is not a detection");
                }
            }
            SipReport::Registered { contact, expires } => self.remote_status(|r, _| {
                r.sip = Component::ok(format!(
                    "registered as {contact} (for {expires} s, refreshed): alerts also arrive by SIP MESSAGE"
                ))
            }),
            SipReport::Failed(e) => {
                self.remote_status(|r, _| r.sip = Component::failed(format!("not registered over SIP: {e}")))
            }
        }
    }
}

fn now_text() -> String {
    Local::now().format("%H:%M:%S").to_string()
}

/// Follows the core until the link is stopped: connect, catch up, take the live events; on any
/// loss say so and try again.
async fn follow(me: Weak<Desk>, link: Arc<RemoteLink>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0usize;
    // Cores tried one after the other since the last connection (several `api`).
    let mut tried = 0usize;
    let mut sip_started = false;
    loop {
        let connected_at = Instant::now();
        let SessionEnd { reason, refused } = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = session(&me, &link, &mut sip_started) => r,
        };
        let Some(desk) = me.upgrade() else { return };
        if connected_at.elapsed() >= STABLE {
            failures = 0;
        }
        let mut was_connected = false;
        desk.remote_status(|r, _| was_connected = r.connected);
        if was_connected {
            tried = 0;
        }
        tried += 1;
        // With several cores, the next is tried at once, each in turn; the backoff applies once
        // every one has failed. The next session catches up from the new core's audit log (the
        // nodes share it), so nothing is missed over a switch.
        let failed_api = link.api().base().to_string();
        let another = link.switch() && tried < link.apis.len();
        // Refused credentials are not retried quickly: each try would count towards the core's
        // block of this machine (and be audited).
        let wait = if refused {
            REFUSED_RETRY
        } else if another {
            0
        } else {
            tried = 0;
            failures += 1;
            BACKOFF[(failures - 1).min(BACKOFF.len() - 1)]
        };
        let next_api = link.api().base().to_string();
        tracing::warn!(reason = %reason, retry_in_s = wait, "remote desk: not connected to the core");
        desk.remote_status(|r, s| {
            if r.connected || s.core != CoreState::Disconnected {
                r.since = now_text();
            }
            r.connected = false;
            r.events = Component::failed(format!("NOT CONNECTED since {}: {reason}; retrying in {wait} s", r.since));
            s.core = if refused { CoreState::Failed } else { CoreState::Disconnected };
            s.core_detail = format!("not connected to the core at {failed_api}: {reason}");
            r.api = next_api;
        });
        drop(desk);
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
    }
}

/// Why a connection ended, and whether the core refused this desk's credentials (401, or 429
/// after too many): then retrying soon would only feed the core's block of this machine.
struct SessionEnd {
    reason: String,
    refused: bool,
}

impl From<ClientError> for SessionEnd {
    fn from(e: ClientError) -> SessionEnd {
        let refused = matches!(e, ClientError::Unauthorized(_) | ClientError::Blocked);
        SessionEnd { reason: e.to_string(), refused }
    }
}

impl From<String> for SessionEnd {
    fn from(reason: String) -> SessionEnd {
        SessionEnd { reason, refused: false }
    }
}

/// One connection: desk info, the event stream, a catch-up, then live events until the stream
/// ends. Returns why it ended.
async fn session(me: &Weak<Desk>, link: &Arc<RemoteLink>, sip_started: &mut bool) -> SessionEnd {
    let info = match link.api().desk_info().await {
        Ok(i) => i,
        Err(e) => return e.into(),
    };
    let sip = core_sip(&info, link.api(), &link.config).await;
    *link.known.lock().unwrap_or_else(|p| p.into_inner()) = Some(Known { info: info.clone(), sip: sip.clone().ok() });
    let Some(desk) = me.upgrade() else { return "the desk stopped".to_string().into() };
    desk.remote_known(&info);
    if *sip_started {
        link.renew.notify_one();
    } else {
        match sip {
            // Tried again at the next reconnection if it could not start (port taken, no route).
            Ok(core) => *sip_started = start_sip(&desk, link, core).await,
            Err(e) => desk.remote_status(|r, _| r.sip = Component::failed(e)),
        }
    }
    // The stream first, then the catch-up: an event in between is seen twice (and kept once),
    // never missed.
    let mut stream = match link.api().events().await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    if let Err(e) = desk.catch_up(&Link::Remote(link.clone())).await {
        return format!("catching up from the core's audit log failed: {e}").into();
    }
    // The routes' live health as the core knows it now; the changes follow on the stream.
    match link.api().routes().await {
        Ok(report) => {
            let book = crate::board::RouteBook::from_report(&report);
            let routes = book.routes().to_vec();
            desk.lock().routes = book;
            desk.update_status(|s| s.routes = routes);
        }
        Err(e) => tracing::warn!(error = %e, "remote desk: the core's routes could not be read"),
    }
    desk.remote_status(|r, s| {
        r.connected = true;
        r.since = now_text();
        r.events = Component::ok(format!("live events from the core since {}", r.since));
        s.core = CoreState::Running;
        s.core_detail = format!("connected to the core at {} as {} ({})", r.api, info.username, info.name);
    });
    drop(desk);
    loop {
        let ev = match stream.next().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return "the core closed the event stream".to_string().into(),
            Err(ClientError::Timeout(s)) => return format!("nothing from the core for {s} s").into(),
            Err(e) => return e.into(),
        };
        let Some(desk) = me.upgrade() else { return "the desk stopped".to_string().into() };
        match ev.event.as_str() {
            "call-event" => match serde_json::from_str::<CallEvent>(&ev.data) {
                Ok(ev) => desk.on_event(&ev),
                Err(e) => {
                    // Never dropped silently: the audit log has it, in a form this desk may read.
                    tracing::warn!(error = %e, "remote desk: an event from the core could not be read; catching up");
                    if let Err(e) = desk.catch_up(&Link::Remote(link.clone())).await {
                        return format!("catching up from the core's audit log failed: {e}").into();
                    }
                }
            },
            "core" => match serde_json::from_str::<sosdesk::core_handle::CoreCondition>(&ev.data) {
                Ok(c) => desk.remote_condition(&c, &info),
                Err(e) => tracing::warn!(error = %e, "remote desk: the core's condition could not be read"),
            },
            "lagged" => {
                tracing::warn!(missed = %ev.data, "remote desk: fell behind the core's events; catching up");
                if let Err(e) = desk.catch_up(&Link::Remote(link.clone())).await {
                    return format!("catching up from the core's audit log failed: {e}").into();
                }
            }
            _ => {}
        }
    }
}

impl Desk {
    /// The remote core's own condition (`event: core` on its stream): a stalled engine and a
    /// failing audit store are shown on this desk as on the core's own.
    fn remote_condition(&self, c: &sosdesk::core_handle::CoreCondition, info: &DeskInfo) {
        self.remote_status(|r, s| {
            if c.engine_stalled {
                s.core = CoreState::Failed;
                s.core_detail = format!(
                    "the core at {} is not routing calls: its call engine stopped answering (since {}); \
                     its service manager restarts it",
                    r.api,
                    now_text()
                );
            } else if s.core == CoreState::Failed && r.connected {
                s.core = CoreState::Running;
                s.core_detail = format!("connected to the core at {} as {} ({})", r.api, info.username, info.name);
            }
            s.store = match (&c.store_error, c.store_waiting) {
                (None, 0) => Component::ok("the core's audit store is writing"),
                (error, waiting) => Component::failed(format!(
                    "the core's audit store cannot write: {waiting} events waiting and retried ({}); calls still route",
                    error.as_deref().unwrap_or("no detail")
                )),
            };
        });
    }
}

/// Starts the SIP agent; whether it runs.
async fn start_sip(desk: &Arc<Desk>, link: &Arc<RemoteLink>, core: CoreSip) -> bool {
    let me = Arc::downgrade(desk);
    let report: crate::registration::Reporter = Arc::new(move |r| {
        if let Some(desk) = me.upgrade() {
            desk.on_sip_report(r);
        }
    });
    let agent =
        Agent::bind(core.clone(), link.config.sip_port, link.credentials(), link.config.register_expires_s, report)
            .await;
    match agent {
        Ok(agent) => {
            tracing::info!(local = %agent.local(), ?core, "remote desk: registering over SIP");
            tokio::spawn(agent.run(link.stop.subscribe(), link.renew.clone()));
            true
        }
        Err(e) => {
            desk.remote_status(|r, _| r.sip = Component::failed(e));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_config_files() {
        let dir = tempfile::tempdir().unwrap();
        let core = dir.path().join("core.toml");
        std::fs::write(&core, "[sip]\nudp = \"127.0.0.1:5060\"\n").unwrap();
        assert!(load_remote(&core).unwrap().is_none(), "a core config is not a remote desk file");
        let desk = dir.path().join("desk.toml");
        std::fs::write(
            &desk,
            "[remote]\napi = \"https://core:8443\"\nusername = \"desk2\"\npassword = \"s3cret\"\nca_cert = \"ca.pem\"\n",
        )
        .unwrap();
        let cfg = load_remote(&desk).unwrap().unwrap();
        assert_eq!(cfg.ca_cert.as_deref(), Some(dir.path().join("ca.pem").as_path()));
        assert_eq!(cfg.register_expires_s, 300);
        assert_eq!(cfg.sip_transport, SipTransport::Auto, "TLS by default where the core offers it");
        assert!(!format!("{cfg:?}").contains("s3cret"));
        let sip = "[remote]\napi = \"x\"\nusername = \"u\"\npassword = \"p\"\nsip_transport = \"tls\"\n";
        std::fs::write(&desk, format!("{sip}sip_tls_cert = \"d.crt\"\nsip_tls_key = \"d.key\"\n")).unwrap();
        let cfg = load_remote(&desk).unwrap().unwrap();
        assert_eq!(cfg.sip_transport, SipTransport::Tls);
        assert_eq!(cfg.sip_tls_key.as_deref(), Some(dir.path().join("d.key").as_path()));
        std::fs::write(&desk, format!("{sip}sip_tls_cert = \"d.crt\"\n")).unwrap();
        assert!(load_remote(&desk).unwrap_err().contains("sip_tls_cert and sip_tls_key go together"));
        std::fs::write(&desk, sip.replace("\"tls\"", "\"tcp\"")).unwrap();
        assert!(load_remote(&desk).unwrap_err().contains("unknown variant"));
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/remote-desk.toml");
        let lab = load_remote(&example).unwrap().expect("the example is a remote desk file");
        assert_eq!((lab.api.as_slice(), lab.username.as_str()), (&["http://127.0.0.1:8443".to_string()][..], "desk2"));
        std::fs::write(&desk, "[remote]\napi = \"x\"\nusername = \"\"\npassword = \"p\"\n").unwrap();
        assert!(load_remote(&desk).unwrap_err().contains("username is empty"));
        std::fs::write(&desk, "[remote]\napi = \"x\"\nusername = \"u\"\npassword = \"p\"\nport = 1\n").unwrap();
        assert!(load_remote(&desk).unwrap_err().contains("unknown field"));
        std::fs::write(&desk, "[remote]\napi = \"x\"\nusername = \"u\"\npassword = s3cr3t-unquoted\n").unwrap();
        let err = load_remote(&desk).unwrap_err();
        assert!(err.contains("line 4") && !err.contains("s3cr3t"), "a parse error must not quote the password: {err}");
    }
}
