//! The desk's link to the core: the embedded core (`Core` in this process) or a core elsewhere
//! (`Link::Remote`, see `remote.rs`); starting and restarting it from a config, following its
//! `CallEvent`s (broadcast), catching up from the audit log after a restart, a lag or a
//! reconnect, and the audit store's health in the status bar. The embedded core is watched
//! (issue 19, "the desk stays honest"): an engine that panicked is restarted in this process;
//! one that stopped turning cannot be stopped from inside it, so the app restarts itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{Local, Utc};
use sosdesk::audit::{AuditRecord, CallOutcome, HistoryQuery};
use sosdesk::config::Config;
use sosdesk::events::CallEvent;
use sosdesk::server::Core;
use tokio::sync::broadcast::error::RecvError;

use super::leg::join_info;
use super::remote::{load_remote, RemoteLink};
use super::Desk;
use crate::board::{Board, Change, RouteBook};
use crate::error::DeskError;
use crate::model::*;

/// How long the embedded engine may go without answering the watchdog before the desk app
/// restarts itself (the stall is shown from its third second).
const HUNG_AFTER: Duration = Duration::from_secs(10);
/// The window of the wiremap's located share in the status details, and how often it is read.
const LOCATED_SHARE_DAYS: u32 = 7;
const LOCATED_SHARE_EVERY: Duration = Duration::from_secs(60);
/// How often the supervisor looks whether the embedded engine task has ended.
const ENDED_CHECK: Duration = Duration::from_millis(250);
/// Restarts counted for the backoff: those of the last five minutes.
const RESTARTS_WINDOW: Duration = Duration::from_secs(300);
/// The wait before the first, second, … restart within [`RESTARTS_WINDOW`].
const RESTART_BACKOFF: [Duration; 5] =
    [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(15), Duration::from_secs(30)];

/// Where the desk's calls come from.
#[derive(Clone)]
pub(super) enum Link {
    /// The routing core runs in this process.
    Embedded(Arc<Core>),
    /// A core on another machine, through its HTTP API and SIP (remote desk mode).
    Remote(Arc<RemoteLink>),
}

impl Link {
    /// The core's SIP (UDP, or TLS for a core elsewhere): where joins and test calls go.
    pub(super) fn sip(&self) -> Option<crate::sipua::CoreSip> {
        match self {
            Link::Embedded(core) => core.local.udp.map(Into::into),
            Link::Remote(r) => r.sip(),
        }
    }

    pub(super) async fn search(&self, q: HistoryQuery) -> Result<Vec<sosdesk::audit::CallSummary>, DeskError> {
        match self {
            Link::Embedded(core) => core.store().search(&q).await.map_err(|e| DeskError::store(e.to_string())),
            Link::Remote(r) => Ok(r.api().history(&history_params(q)).await?),
        }
    }

    pub(super) async fn call_events(&self, call_id: &str) -> Result<Vec<AuditRecord>, DeskError> {
        match self {
            Link::Embedded(core) => {
                core.store().call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))
            }
            Link::Remote(r) => Ok(r.api().call(call_id).await.map(|d| d.events)?),
        }
    }

    pub(super) fn stop(self) -> Option<Arc<Core>> {
        match self {
            Link::Embedded(core) => Some(core),
            Link::Remote(r) => {
                r.stop();
                None
            }
        }
    }
}

pub(super) fn history_params(q: HistoryQuery) -> sosdesk::api::HistoryParams {
    sosdesk::api::HistoryParams {
        text: q.text,
        from: q.from,
        until: q.until,
        outcome: q.outcome,
        exclude_tests: q.exclude_tests,
        limit: Some(q.limit),
    }
}

impl Desk {
    /// The embedded core, when this desk runs one.
    pub async fn core(&self) -> Option<Arc<Core>> {
        match self.link.lock().await.as_ref() {
            Some(Link::Embedded(core)) => Some(core.clone()),
            _ => None,
        }
    }

    pub(super) async fn link(&self) -> Result<Link, DeskError> {
        self.link.lock().await.clone().ok_or_else(|| DeskError::not_connected("the core is not running"))
    }

    /// The remote core's link, when this desk is connected to one.
    pub async fn remote(&self) -> Option<Arc<RemoteLink>> {
        match self.link.lock().await.as_ref() {
            Some(Link::Remote(r)) => Some(r.clone()),
            _ => None,
        }
    }

    /// Starts (or restarts) from `config_path`: the embedded core from a core config, or a
    /// connection to a core elsewhere from a remote desk file (one with a `[remote]` table). A
    /// bad config or a core that cannot start is shown in the status bar with the reason; the
    /// desk stays up.
    pub async fn start_core(self: &Arc<Self>, config_path: &Path) -> Result<(), DeskError> {
        let mut slot = self.link.lock().await;
        if let Some(Some(mut old)) = slot.take().map(Link::stop) {
            // Told at once, through the shared handle: its sockets close whoever else holds it
            // (an export running), so the new core can bind them.
            old.signal_stop();
            // Others hold the core only for a moment (a command, the supervisor's check).
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(core) => {
                        core.stop().await;
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        old = still;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => {
                        tracing::warn!("the previous core is still in use; it stops when released");
                        break;
                    }
                }
            }
        }
        // The cards of the previous core go: nothing could acknowledge them now. The new core's
        // catch-up brings back its own calls that still need an officer.
        let removed: Vec<String> = {
            let mut inner = self.lock();
            let ids = inner.board.calls().iter().map(|c| c.call_id.clone()).collect();
            inner.board = Board::default();
            ids
        };
        if !removed.is_empty() {
            self.apply_changes(vec![Change::Removed(removed)]);
        }
        self.update_status(|s| {
            s.core = CoreState::Starting;
            s.core_detail = format!("starting from {}", config_path.display());
            s.config_path = Some(config_path.display().to_string());
            s.listening.clear();
            s.held = None;
            s.remote = None;
        });
        match load_remote(config_path) {
            Err(e) => return Err(self.core_failed(format!("invalid config: {e}"))),
            Ok(Some(remote)) => {
                *slot = Some(Link::Remote(self.start_remote(remote, config_path)?));
                return Ok(());
            }
            Ok(None) => {}
        }
        let cfg = match Config::load(config_path) {
            Ok(c) => c,
            Err(e) => return Err(self.core_failed(format!("invalid config: {e}"))),
        };
        let core = match Core::start(&cfg).await {
            Ok(c) => Arc::new(c),
            Err(e) => return Err(self.core_failed(format!("the core could not start: {e}"))),
        };
        let events = core.subscribe();
        let mut listening = Vec::new();
        if let Some(a) = core.local.udp {
            listening.push(format!("udp {a}"));
        }
        if let Some(a) = core.local.tcp {
            listening.push(format!("tcp {a}"));
        }
        let held = core.held.map(|a| format!("http://{a}/held"));
        // The store as an admin names it: the SQLite file, or the PostgreSQL server and database
        // (never its password).
        let store_name = cfg.store_location().to_string();
        {
            let mut inner = self.lock();
            inner.routes = RouteBook::from_config(&cfg);
            inner.test_number =
                cfg.policies.iter().flat_map(|p| &p.numbers).find(|n| n.test).map(|n| n.dial_string.clone());
            inner.accounts = cfg.desks.clone();
            let two_way = cfg
                .policies
                .iter()
                .filter(|p| p.conference_mode == sosdesk::config::ConferenceMode::TwoWay)
                .map(|p| p.name.clone())
                .collect();
            inner.status.join = join_info(&inner.accounts, two_way, inner.settings.desk_account.as_deref());
            let me = inner.status.join.desk.clone().unwrap_or_default();
            let modes = cfg.policies.iter().map(|p| (p.name.clone(), p.acknowledge)).collect();
            let changes = inner.board.set_identity(&me, modes);
            inner.status.routes = inner.routes.routes().to_vec();
            inner.status.policy_routes = cfg
                .policies
                .iter()
                .map(|p| PolicyRoutes { policy: p.name.clone(), routes: cfg.policy_routes(p) })
                .collect();
            inner.status.core = CoreState::Running;
            inner.status.core_detail = format!("listening on {}", listening.join(", "));
            inner.status.listening = listening;
            inner.status.held = held;
            inner.status.store = Component::ok(format!("audit store {store_name}"));
            drop(inner);
            self.apply_changes(changes);
        }
        if let Err(e) = self.catch_up(&Link::Embedded(core.clone())).await {
            tracing::warn!(error = %e, "cannot read recent calls from the audit store");
        }
        tokio::spawn(Self::follow_events(Arc::downgrade(self), events));
        tokio::spawn(Self::follow_store(Arc::downgrade(self), core.audit().watch_health(), store_name));
        if let Some(lis) = core.handle().lis.clone() {
            tokio::spawn(Self::follow_located_share(Arc::downgrade(self), Arc::downgrade(&core), lis));
        }
        tokio::spawn(Self::supervise(Arc::downgrade(self), Arc::downgrade(&core), config_path.to_path_buf()));
        *slot = Some(Link::Embedded(core));
        tracing::info!(config = %config_path.display(), "desk core running");
        Ok(())
    }

    /// Watches the embedded core until it is replaced or stopped: an engine task that ended
    /// (a panic) gets the core restarted here; an engine that stopped answering the watchdog
    /// (`sosdesk::watchdog::STALLED_AFTER`) gets the app restarted ([`Ui::restart_app`]).
    async fn supervise(me: Weak<Desk>, core: Weak<Core>, config: PathBuf) {
        let Some(c) = core.upgrade() else { return };
        let mut condition = c.condition();
        drop(c);
        let mut watched = true;
        let mut stalled_since: Option<Instant> = None;
        // The engine's end is seen by polling its task (cheap); the stall comes as a change.
        let mut tick = tokio::time::interval(ENDED_CHECK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = condition.changed(), if watched => watched = changed.is_ok(),
            }
            let (Some(desk), Some(c)) = (me.upgrade(), core.upgrade()) else { return };
            let ended = c.engine_ended();
            drop(c);
            if ended {
                desk.restart_core(&config, &core, "the call engine stopped after an internal error").await;
                return;
            }
            // A stall is said at once; the app is restarted only when it lasts (a disk that
            // blocks a journal write for a few seconds must not cost the calls that are up).
            match (condition.borrow().engine_stalled, stalled_since) {
                (false, Some(_)) => {
                    stalled_since = None;
                    desk.update_status(|s| {
                        if s.core == CoreState::Failed {
                            s.core = CoreState::Running;
                            s.core_detail = "the call engine answers again".into();
                        }
                    });
                }
                (true, None) => {
                    stalled_since = Some(Instant::now());
                    desk.update_status(|s| {
                        s.core = CoreState::Failed;
                        s.core_detail = format!(
                            "the call engine is not answering (since {}): calls may not be routed; the desk restarts if it does not recover within {} s",
                            Local::now().format("%H:%M:%S"),
                            HUNG_AFTER.as_secs()
                        );
                    });
                }
                (true, Some(since)) if since.elapsed() >= HUNG_AFTER => {
                    desk.engine_hung();
                    return;
                }
                _ => {}
            }
        }
    }

    /// Restarts the embedded core from `config` after its engine ended: the journal brings back
    /// what it had recorded, calls that were up are closed in the audit log, and the status bar
    /// says what happened. A core that keeps ending is restarted less and less often.
    async fn restart_core(self: &Arc<Self>, config: &Path, ended: &Weak<Core>, why: &str) {
        let at = Local::now().format("%H:%M:%S").to_string();
        let wait = {
            let mut inner = self.lock();
            inner.restarts.retain(|t| t.elapsed() < RESTARTS_WINDOW);
            inner.restarts.push(Instant::now());
            RESTART_BACKOFF[(inner.restarts.len() - 1).min(RESTART_BACKOFF.len() - 1)]
        };
        tracing::error!(wait_s = wait.as_secs(), "{why}: restarting the core");
        self.update_status(|s| {
            s.core = CoreState::Starting;
            s.core_detail = format!("{why} at {at}; restarting the core");
            s.restarted = Some(format!("{at} — {why}; restarting the core"));
        });
        tokio::time::sleep(wait).await;
        // Only the core that ended: one the officer started meanwhile (another config, a remote
        // core) stays.
        let still_ours = match (self.core().await, ended.upgrade()) {
            (Some(now), Some(old)) => Arc::ptr_eq(&now, &old),
            _ => false,
        };
        if !still_ours {
            tracing::info!("another core was started meanwhile: the ended one is not restarted");
            return;
        }
        // The old core's sockets close as its tasks see the stop: a bind refused meanwhile is
        // tried again, for a bounded time.
        let deadline = Instant::now() + Duration::from_secs(5);
        let outcome = loop {
            match self.start_core_again(config.to_path_buf()).await {
                Ok(()) => break "the core was restarted".to_string(),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => break format!("the core could not be restarted: {}", e.message()),
            }
        };
        tracing::warn!("{why} at {at}; {outcome}");
        self.update_status(|s| s.restarted = Some(format!("{at} — {why}; {outcome}")));
    }

    /// [`Desk::start_core`], boxed as a `Send` future: it is awaited from the supervisor that
    /// `start_core` itself spawns, and the compiler needs the cycle cut at a named type.
    fn start_core_again(
        self: &Arc<Self>,
        config: PathBuf,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DeskError>> + Send + 'static>> {
        let me = self.clone();
        Box::pin(async move { me.start_core(&config).await })
    }

    /// The embedded engine stopped answering: nothing is routed, and a thread that never
    /// returns cannot be stopped from inside the process; the app is restarted.
    fn engine_hung(&self) {
        let at = Local::now().format("%H:%M:%S").to_string();
        let why = "the call engine stopped answering";
        tracing::error!("{why} at {at}: no call can be routed; restarting the desk app");
        self.update_status(|s| {
            s.core = CoreState::Failed;
            s.core_detail = format!("{why} at {at}: no call can be routed; restarting the desk app");
        });
        self.ui.restart_app(&format!("{at} — {why}; the desk app and its core were restarted"));
    }

    /// Says in the status bar that this desk was restarted (`reason` from [`Ui::restart_app`]
    /// of the process before).
    pub fn note_restart(&self, reason: &str) {
        self.update_status(|s| s.restarted = Some(reason.to_string()));
    }

    pub(super) fn core_failed(&self, detail: String) -> DeskError {
        tracing::error!("{detail}");
        self.update_status(|s| {
            s.core = CoreState::Failed;
            s.core_detail = detail.clone();
        });
        DeskError::config(detail)
    }

    /// Emergency calls of the last day that this desk has not acknowledged come back on the
    /// board after a restart of the desk or a reconnect to a remote core, and calls on the board
    /// get the events they missed: an alert is never lost by closing the app or losing the
    /// network at the wrong moment.
    pub(super) async fn catch_up(self: &Arc<Self>, link: &Link) -> Result<(), DeskError> {
        let q = HistoryQuery {
            from: Some(Utc::now() - chrono::Duration::hours(24)),
            exclude_tests: true,
            // Summaries only (cheap): refused requests and acknowledged calls are skipped below,
            // so a busy day must not push an unacknowledged call out of the answer.
            limit: 5000,
            ..Default::default()
        };
        let calls = link.search(q).await?;
        for s in calls.iter().rev().filter(|s| s.outcome != CallOutcome::Rejected) {
            let (on_board, each) = {
                let inner = self.lock();
                (inner.board.get(&s.call_id).is_some(), inner.board.mode_of(&s.policy) == AcknowledgeMode::Each)
            };
            if !on_board && !each && s.acknowledged_by.is_some() {
                continue;
            }
            let events: Vec<CallEvent> = link.call_events(&s.call_id).await?.into_iter().map(|r| r.event).collect();
            if !on_board && self.lock().board.acknowledged_here(&events) {
                continue;
            }
            for ev in &events {
                self.on_event(ev);
            }
        }
        Ok(())
    }

    async fn follow_events(
        me: std::sync::Weak<Desk>,
        mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<CallEvent>>,
    ) {
        loop {
            match events.recv().await {
                Ok(ev) => match me.upgrade() {
                    Some(desk) => desk.on_event(&ev),
                    None => return,
                },
                Err(RecvError::Lagged(n)) => {
                    // Only after thousands of events in a burst; the audit log has them all.
                    tracing::warn!(missed = n, "the desk fell behind the core's events");
                    if let Some(desk) = me.upgrade() {
                        if let Some(core) = desk.core().await {
                            if let Err(e) = desk.catch_up(&Link::Embedded(core)).await {
                                tracing::warn!(error = %e, "cannot catch up from the audit store");
                            }
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The wiremap's share of located calls and HELD requests over the last
    /// [`LOCATED_SHARE_DAYS`] days, read from the LIS now and every [`LOCATED_SHARE_EVERY`]
    /// while this core runs. A read that fails keeps the last figure (logged).
    async fn follow_located_share(me: Weak<Desk>, core: Weak<Core>, lis: sosdesk::location::store::LisStore) {
        loop {
            if core.upgrade().is_none() {
                return;
            }
            let since = Utc::now() - chrono::Duration::days(i64::from(LOCATED_SHARE_DAYS));
            match lis.unlocated_report(Some(since)).await {
                Ok(report) => {
                    let Some(desk) = me.upgrade() else { return };
                    let s = report.share;
                    desk.update_status(|st| {
                        st.located = Some(LocatedShare {
                            days: LOCATED_SHARE_DAYS,
                            calls: s.calls,
                            calls_by_wiremap: s.calls_by_wiremap,
                            held: s.held,
                            held_by_wiremap: s.held_by_wiremap,
                        })
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the located share from the LIS"),
            }
            tokio::time::sleep(LOCATED_SHARE_EVERY).await;
        }
    }

    async fn follow_store(
        me: std::sync::Weak<Desk>,
        mut health: tokio::sync::watch::Receiver<sosdesk::audit::WriterHealth>,
        store_name: String,
    ) {
        let mut was_ok = true;
        while health.changed().await.is_ok() {
            let h = health.borrow().clone();
            let ok = h.last_error.is_none();
            if ok == was_ok {
                continue;
            }
            was_ok = ok;
            let Some(desk) = me.upgrade() else { return };
            desk.update_status(|s| {
                s.store = match &h.last_error {
                    None => Component::ok(format!("audit store {store_name}")),
                    Some(e) => Component::failed(format!(
                        "audit store failing, {} events waiting and retried: {e}",
                        h.retrying
                    )),
                };
            });
        }
    }
}
