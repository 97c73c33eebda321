//! The desk's link to the core: the embedded core (`Core` in this process) or a core elsewhere
//! (`Link::Remote`, see `remote.rs`); starting and restarting it from a config, following its
//! `CallEvent`s (broadcast), catching up from the audit log after a restart, a lag or a
//! reconnect, and the audit store's health in the status bar.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
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

/// Where the desk's calls come from.
#[derive(Clone)]
pub(super) enum Link {
    /// The routing core runs in this process.
    Embedded(Arc<Core>),
    /// A core on another machine, through its HTTP API and SIP (remote desk mode).
    Remote(Arc<RemoteLink>),
}

impl Link {
    /// The core's SIP address (UDP): where joins and test calls go.
    pub(super) fn sip(&self) -> Option<std::net::SocketAddr> {
        match self {
            Link::Embedded(core) => core.local.udp,
            Link::Remote(r) => r.sip(),
        }
    }

    pub(super) async fn search(&self, q: HistoryQuery) -> Result<Vec<sosdesk::audit::CallSummary>, DeskError> {
        match self {
            Link::Embedded(core) => core.store().search(&q).await.map_err(|e| DeskError::store(e.to_string())),
            Link::Remote(r) => Ok(r.api.history(&history_params(q)).await?),
        }
    }

    pub(super) async fn call_events(&self, call_id: &str) -> Result<Vec<AuditRecord>, DeskError> {
        match self {
            Link::Embedded(core) => {
                core.store().call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))
            }
            Link::Remote(r) => Ok(r.api.call(call_id).await.map(|d| d.events)?),
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
        if let Some(Some(old)) = slot.take().map(Link::stop) {
            match Arc::try_unwrap(old) {
                Ok(core) => core.stop().await,
                Err(_) => tracing::warn!("the previous core is still in use; it stops when released"),
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
        let store_path = cfg.store_path();
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
            inner.status.core = CoreState::Running;
            inner.status.core_detail = format!("listening on {}", listening.join(", "));
            inner.status.listening = listening;
            inner.status.held = held;
            inner.status.store = Component::ok(format!("audit store {}", store_path.display()));
            drop(inner);
            self.apply_changes(changes);
        }
        if let Err(e) = self.catch_up(&Link::Embedded(core.clone())).await {
            tracing::warn!(error = %e, "cannot read recent calls from the audit store");
        }
        tokio::spawn(Self::follow_events(Arc::downgrade(self), events));
        tokio::spawn(Self::follow_store(Arc::downgrade(self), core.audit().watch_health(), store_path));
        *slot = Some(Link::Embedded(core));
        tracing::info!(config = %config_path.display(), "desk core running");
        Ok(())
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

    async fn follow_events(me: std::sync::Weak<Desk>, mut events: tokio::sync::broadcast::Receiver<CallEvent>) {
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

    async fn follow_store(
        me: std::sync::Weak<Desk>,
        mut health: tokio::sync::watch::Receiver<sosdesk::audit::WriterHealth>,
        path: PathBuf,
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
                    None => Component::ok(format!("audit store {}", path.display())),
                    Some(e) => Component::failed(format!(
                        "audit store failing, {} events waiting and retried: {e}",
                        h.retrying
                    )),
                };
            });
        }
    }
}
