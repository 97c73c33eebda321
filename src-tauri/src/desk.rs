//! The desk: the embedded routing core, the alert board, the alarm and the notifications, and
//! what the UI is told. Independent of Tauri (the window, tray and webview are behind [`Ui`]), so
//! the command-layer tests drive it with Tauri's mock runtime and a real core.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Local, NaiveDate, TimeZone, Utc};
use sosdesk::audit::{AuditRecord, CallOutcome, HistoryQuery};
use sosdesk::config::Config;
use sosdesk::events::CallEvent;
use sosdesk::server::Core;
use tokio::sync::broadcast::error::RecvError;

use crate::audio::{AlarmReport, AudioOut, AudioReport, LiveBuffer, LiveSource, StereoPcm, StreamReport};
use crate::board::{Board, Change, RouteBook};
use crate::callleg::{JoinRequest, LegCommand, LegUpdate};
use crate::error::DeskError;
use crate::model::*;
use crate::settings::{officer_name, SettingsFile};
use crate::sipua::Credentials;

mod remote;
pub use remote::{load_remote, RemoteConfig, RemoteLink};

/// Where the desk's calls come from.
#[derive(Clone)]
enum Link {
    /// The routing core runs in this process.
    Embedded(Arc<Core>),
    /// A core on another machine, through its HTTP API and SIP (remote desk mode).
    Remote(Arc<RemoteLink>),
}

impl Link {
    /// The core's SIP address (UDP): where joins and test calls go.
    fn sip(&self) -> Option<std::net::SocketAddr> {
        match self {
            Link::Embedded(core) => core.local.udp,
            Link::Remote(r) => r.sip(),
        }
    }

    async fn search(&self, q: HistoryQuery) -> Result<Vec<sosdesk::audit::CallSummary>, DeskError> {
        match self {
            Link::Embedded(core) => core.store().search(&q).await.map_err(|e| DeskError::store(e.to_string())),
            Link::Remote(r) => Ok(r.api.history(&history_params(q)).await?),
        }
    }

    async fn call_events(&self, call_id: &str) -> Result<Vec<AuditRecord>, DeskError> {
        match self {
            Link::Embedded(core) => {
                core.store().call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))
            }
            Link::Remote(r) => Ok(r.api.call(call_id).await.map(|d| d.events)?),
        }
    }

    fn stop(self) -> Option<Arc<Core>> {
        match self {
            Link::Embedded(core) => Some(core),
            Link::Remote(r) => {
                r.stop();
                None
            }
        }
    }
}

fn history_params(q: HistoryQuery) -> sosdesk::api::HistoryParams {
    sosdesk::api::HistoryParams {
        text: q.text,
        from: q.from,
        until: q.until,
        outcome: q.outcome,
        exclude_tests: q.exclude_tests,
        limit: Some(q.limit),
    }
}

/// What the desk asks of the window system and the webview. The Tauri app implements it on the
/// real window and tray; tests record the calls.
pub trait Ui: Send + Sync + 'static {
    /// A card appeared or changed (`desk:alert`).
    fn alert(&self, call: &ActiveCall);
    /// A card was taken off the board (`desk:alert-removed`).
    fn alert_removed(&self, call_id: &str);
    /// The status bar changed (`desk:status`).
    fn status(&self, status: &DeskStatus);
    /// Bring the window to the front; `on_top` keeps it above every other window (an
    /// unacknowledged emergency), `false` releases that.
    fn raise(&self, on_top: bool);
    fn release_on_top(&self);
    /// The tray icon: idle or an active emergency.
    fn tray(&self, active: bool, tooltip: &str);
    /// This desk's leg in a call changed (`desk:leg`).
    fn leg(&self, _leg: &CallLeg) {}
    /// Playback of a recording changed (`desk:playback`).
    fn playback(&self, _playback: &Playback) {}
}

impl<T: Ui> Ui for Arc<T> {
    fn alert(&self, call: &ActiveCall) {
        (**self).alert(call)
    }
    fn alert_removed(&self, call_id: &str) {
        (**self).alert_removed(call_id)
    }
    fn status(&self, status: &DeskStatus) {
        (**self).status(status)
    }
    fn raise(&self, on_top: bool) {
        (**self).raise(on_top)
    }
    fn release_on_top(&self) {
        (**self).release_on_top()
    }
    fn tray(&self, active: bool, tooltip: &str) {
        (**self).tray(active, tooltip)
    }
    fn leg(&self, leg: &CallLeg) {
        (**self).leg(leg)
    }
    fn playback(&self, playback: &Playback) {
        (**self).playback(playback)
    }
}

/// Desktop notifications, behind a trait so tests can run without a D-Bus daemon.
pub type Notifier = Arc<dyn Fn(&ActiveCall) -> Result<(), String> + Send + Sync>;

/// What the window and tray must do after the alarm state was settled.
enum AlarmUi {
    Active(u32),
    Idle,
    Unchanged,
}

struct Inner {
    settings: Settings,
    board: Board,
    routes: RouteBook,
    status: DeskStatus,
    /// Whether the alarm thread was told to sound.
    alarm_on: bool,
    /// When each (call, seq) reached the desk, until the UI says it painted it.
    pending_paint: HashMap<(String, u32), Instant>,
    /// The running config's test number (933 in the lab), for "Place test call".
    test_number: Option<String>,
    /// The config's `[[desk]]` accounts (with their passwords: never sent to the UI or logged).
    accounts: Vec<sosdesk::config::DeskAccountConfig>,
    /// This desk's leg in a call, the current one or the last.
    leg: Option<LegSlot>,
    /// The recording being played: (audio stream id, call id).
    playback: Option<(u64, String)>,
    /// Ids of audio streams (legs, playbacks) on the output thread.
    next_audio_id: u64,
}

/// This desk's leg: what the UI shows, and the channel to its task.
struct LegSlot {
    status: CallLeg,
    commands: tokio::sync::mpsc::Sender<LegCommand>,
    audio_id: u64,
    buffer: Arc<Mutex<LiveBuffer>>,
    /// The call audio was handed to the output device (on the first Connected).
    playing: bool,
}

impl LegSlot {
    fn live(&self) -> bool {
        matches!(self.status.state, LegState::Joining | LegState::Connected)
    }
}

/// Words for the officer about a connected leg.
fn leg_detail(mode: LegMode, muted: bool) -> String {
    match (mode, muted) {
        (LegMode::Listen, _) => "Listening: you hear the caller and the operator; they do not hear you".into(),
        (LegMode::Talk, false) => "Talking: the caller and the operator hear you".into(),
        (LegMode::Talk, true) => "Muted: you hear the call; nobody hears you".into(),
    }
}

pub struct Desk {
    ui: Box<dyn Ui>,
    settings_file: SettingsFile,
    export_dir: PathBuf,
    inner: Mutex<Inner>,
    link: tokio::sync::Mutex<Option<Link>>,
    /// The audio output thread: alarm, call audio, recordings (none in command-layer tests).
    audio: Mutex<Option<AudioOut>>,
    notifier: Notifier,
    /// Where `alert_shown` and `page_ready` append their records (SOSDESK_DESK_METRICS): paint
    /// times for BENCHMARKS.md, page (re)loads for the E2E tests.
    metrics: Option<PathBuf>,
    /// How many times the page has started (more than once: it was reloaded after its web
    /// process died, see `webview.rs`).
    page_loads: std::sync::atomic::AtomicU32,
}

impl Desk {
    pub fn new(ui: Box<dyn Ui>, settings_file: SettingsFile, export_dir: PathBuf, notifier: Notifier) -> Arc<Desk> {
        let settings = settings_file.load();
        let status = DeskStatus {
            core: CoreState::NotConfigured,
            core_detail: "no config chosen yet".into(),
            config_path: settings.config_path.clone(),
            listening: Vec::new(),
            held: None,
            store: Component::ok("not open"),
            routes: Vec::new(),
            audio: Component::ok("alarm ready (the device is opened when an alarm sounds)"),
            notifications: Component::ok("no notification sent yet"),
            tray: Component::ok("tray icon not created"),
            alarm: AlarmState::Off,
            officer: officer_name(&settings),
            unacknowledged: 0,
            join: JoinInfo { detail: "the core is not running".into(), ..Default::default() },
            remote: None,
        };
        Arc::new(Desk {
            ui,
            settings_file,
            export_dir,
            inner: Mutex::new(Inner {
                settings,
                board: Board::default(),
                routes: RouteBook::default(),
                status,
                alarm_on: false,
                pending_paint: HashMap::new(),
                test_number: None,
                accounts: Vec::new(),
                leg: None,
                playback: None,
                next_audio_id: 1,
            }),
            link: tokio::sync::Mutex::new(None),
            audio: Mutex::new(None),
            notifier,
            metrics: std::env::var_os("SOSDESK_DESK_METRICS").map(PathBuf::from),
            page_loads: std::sync::atomic::AtomicU32::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the desk down with it: the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the audio output thread (the app does; command-layer tests may leave it out).
    /// Without it the alarm is visual only, and the status bar says so.
    pub fn enable_audio(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        match AudioOut::spawn(move |report| {
            if let Some(desk) = me.upgrade() {
                desk.on_audio_report(report);
            }
        }) {
            Ok(out) => *self.audio.lock().unwrap_or_else(|p| p.into_inner()) = Some(out),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the alarm's audio thread");
                self.update_status(|s| {
                    s.audio = Component::failed(format!("no alarm sound ({e}): the alarm is visual only"))
                });
            }
        }
    }

    pub fn set_tray_status(&self, tray: Component) {
        let status = {
            let mut inner = self.lock();
            inner.status.tray = tray;
            inner.status.clone()
        };
        self.ui.status(&status);
    }

    pub fn status(&self) -> DeskStatus {
        self.lock().status.clone()
    }

    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    pub fn active_calls(&self) -> Vec<ActiveCall> {
        self.lock().board.calls().to_vec()
    }

    /// The embedded core, when this desk runs one.
    pub async fn core(&self) -> Option<Arc<Core>> {
        match self.link.lock().await.as_ref() {
            Some(Link::Embedded(core)) => Some(core.clone()),
            _ => None,
        }
    }

    async fn link(&self) -> Result<Link, DeskError> {
        self.link.lock().await.clone().ok_or_else(|| DeskError::not_connected("the core is not running"))
    }

    /// The remote core's link, when this desk is connected to one.
    pub async fn remote(&self) -> Option<Arc<RemoteLink>> {
        match self.link.lock().await.as_ref() {
            Some(Link::Remote(r)) => Some(r.clone()),
            _ => None,
        }
    }

    // ------------------------------------------------------------------ the core

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

    fn core_failed(&self, detail: String) -> DeskError {
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
    async fn catch_up(self: &Arc<Self>, link: &Link) -> Result<(), DeskError> {
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

    // ------------------------------------------------------------------ events

    /// One event from the core: the board, then at once the UI and the window, then the alarm,
    /// then (off this thread) the desktop notification. The state lock is released before any
    /// window call: those run on the UI thread, which may itself be waiting for the lock.
    pub fn on_event(self: &Arc<Self>, ev: &CallEvent) {
        let arrived = Instant::now();
        let mut inner = self.lock();
        let changes = inner.board.apply(ev);
        let routes_changed = inner.routes.apply(ev);
        if changes.is_empty() && !routes_changed {
            return;
        }
        let mut new_emergency = None;
        let mut new_test = None;
        for ch in &changes {
            match ch {
                Change::Added(c) | Change::Updated(c) => {
                    if inner.pending_paint.len() > 10_000 {
                        inner.pending_paint.clear();
                    }
                    inner.pending_paint.insert((c.call_id.clone(), c.last_seq), arrived);
                    if matches!(ch, Change::Added(_)) {
                        if c.test_call {
                            new_test = Some(c.clone());
                        } else {
                            new_emergency = Some(c.clone());
                        }
                    }
                }
                Change::Removed(_) => {}
            }
        }
        if routes_changed {
            inner.status.routes = inner.routes.routes().to_vec();
        }
        let alarm = self.settle_alarm(&mut inner);
        let status = inner.status.clone();
        drop(inner);

        self.show_cards(&changes);
        if new_emergency.is_some() {
            self.ui.raise(true);
        } else if new_test.is_some() {
            self.ui.raise(false);
        }
        self.ui.status(&status);
        self.apply_alarm_ui(alarm);
        if let Some(call) = new_emergency.or(new_test) {
            self.notify(call);
        }
    }

    /// The changed cards to the window (outside the desk's lock).
    fn show_cards(&self, changes: &[Change]) {
        for ch in changes {
            match ch {
                Change::Added(c) | Change::Updated(c) => self.ui.alert(c),
                Change::Removed(ids) => ids.iter().for_each(|id| self.ui.alert_removed(id)),
            }
        }
    }

    /// Board changes that came from outside an event (this desk's identity or the policies'
    /// acknowledgement modes became known, another core chosen): the cards, the alarm and the
    /// status follow.
    fn apply_changes(&self, changes: Vec<Change>) {
        let mut inner = self.lock();
        let alarm = self.settle_alarm(&mut inner);
        let status = inner.status.clone();
        drop(inner);
        self.show_cards(&changes);
        self.ui.status(&status);
        self.apply_alarm_ui(alarm);
    }

    /// Alarm and status follow the number of unacknowledged emergencies; returns what the window
    /// and tray must do (done by the caller, outside the lock).
    fn settle_alarm(&self, inner: &mut Inner) -> AlarmUi {
        let unack = inner.board.unacknowledged();
        inner.status.unacknowledged = unack;
        let alarm = self.audio.lock().unwrap_or_else(|p| p.into_inner());
        if unack > 0 && !inner.alarm_on {
            inner.alarm_on = true;
            match alarm.as_ref() {
                Some(a) => {
                    a.start_alarm();
                    // Until the audio thread reports, assume the worst: a visible alarm.
                    if inner.status.alarm == AlarmState::Off {
                        inner.status.alarm = AlarmState::Silent;
                    }
                }
                None => inner.status.alarm = AlarmState::Silent,
            }
            AlarmUi::Active(unack)
        } else if unack == 0 && inner.alarm_on {
            inner.alarm_on = false;
            if let Some(a) = alarm.as_ref() {
                a.stop_alarm();
            }
            inner.status.alarm = AlarmState::Off;
            AlarmUi::Idle
        } else if unack > 0 {
            AlarmUi::Active(unack)
        } else {
            AlarmUi::Unchanged
        }
    }

    fn apply_alarm_ui(&self, a: AlarmUi) {
        match a {
            AlarmUi::Active(n) => self.ui.tray(true, &format!("sosdesk — {n} unacknowledged emergency call(s)")),
            AlarmUi::Idle => {
                self.ui.release_on_top();
                self.ui.tray(false, "sosdesk — no unacknowledged emergency");
            }
            AlarmUi::Unchanged => {}
        }
    }

    fn on_audio_report(&self, report: AudioReport) {
        match report {
            AudioReport::Alarm(r) => self.on_alarm_report(r),
            AudioReport::Stream { id, report } => self.on_stream_report(id, report),
        }
    }

    /// The call audio of this desk's leg, or a recording, on the output device.
    fn on_stream_report(&self, id: u64, report: StreamReport) {
        let mut inner = self.lock();
        if let Some(slot) = inner.leg.as_mut().filter(|l| l.audio_id == id) {
            slot.status.speaker = match report {
                StreamReport::Playing => Component::ok("call audio playing on the default audio output"),
                StreamReport::Finished => return,
                StreamReport::NoDevice(e) => {
                    tracing::warn!(error = %e, "call audio cannot be played; the leg stays connected");
                    Component::failed(format!("{e}: the call audio cannot be heard here; the leg stays connected"))
                }
            };
            let leg = slot.status.clone();
            drop(inner);
            self.ui.leg(&leg);
            return;
        }
        if let Some((_, call_id)) = inner.playback.clone().filter(|(p, _)| *p == id) {
            let p = match report {
                StreamReport::Playing => Playback {
                    call_id,
                    state: PlaybackState::Playing,
                    detail: "playing on the default audio output".into(),
                },
                StreamReport::Finished => {
                    inner.playback = None;
                    Playback { call_id, state: PlaybackState::Finished, detail: "played to the end".into() }
                }
                StreamReport::NoDevice(e) => {
                    inner.playback = None;
                    Playback { call_id, state: PlaybackState::Failed, detail: e }
                }
            };
            drop(inner);
            self.ui.playback(&p);
        }
    }

    fn on_alarm_report(&self, report: AlarmReport) {
        self.update_status_inner(|inner| {
            let s = &mut inner.status;
            match report {
                AlarmReport::Sounding => {
                    s.audio = Component::ok("alarm sounding on the default audio output");
                    if inner.alarm_on {
                        s.alarm = AlarmState::Sounding;
                    }
                }
                AlarmReport::Stopped => {
                    if s.audio.ok {
                        s.audio = Component::ok("alarm ready");
                    }
                    if !inner.alarm_on {
                        s.alarm = AlarmState::Off;
                    }
                }
                AlarmReport::NoDevice(e) => {
                    s.audio = Component::failed(format!("{e}: the alarm is visual only"));
                    s.alarm = if inner.alarm_on { AlarmState::Silent } else { AlarmState::Off };
                }
            }
        });
    }

    /// The desktop notification, on its own thread (a D-Bus round trip, or a timeout when no
    /// daemon answers); its outcome goes to the status bar.
    fn notify(self: &Arc<Self>, call: ActiveCall) {
        let notifier = self.notifier.clone();
        let me = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("sosdesk-notify".into()).spawn(move || {
            let result = notifier(&call);
            let Some(desk) = me.upgrade() else { return };
            let at = Local::now().format("%H:%M:%S");
            desk.update_status(|s| {
                s.notifications = match result {
                    Ok(()) => Component::ok(format!("desktop notification shown at {at}")),
                    Err(e) => {
                        tracing::warn!(error = %e, call = %call.call_id, "desktop notification failed");
                        Component::failed(format!("desktop notifications unavailable: {e}"))
                    }
                };
            });
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the notification thread");
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut DeskStatus)) {
        self.update_status_inner(|inner| f(&mut inner.status));
    }

    fn update_status_inner(&self, f: impl FnOnce(&mut Inner)) {
        let status = {
            let mut inner = self.lock();
            f(&mut inner);
            inner.status.clone()
        };
        self.ui.status(&status);
    }

    // ------------------------------------------------------------------ commands

    /// Records the acknowledgement in the audit log (durably) under the officer's name; the
    /// board, the alarm and every other desk follow from the event.
    pub async fn acknowledge(self: &Arc<Self>, call_id: &str) -> Result<ActiveCall, DeskError> {
        let link = self.link().await?;
        let me = {
            let inner = self.lock();
            if inner.board.get(call_id).is_none() {
                return Err(DeskError::not_on_board(call_id));
            }
            inner.board.me().to_string()
        };
        let officer = officer_name(&self.settings());
        let ev = match &link {
            Link::Embedded(core) => {
                core.acknowledge_at(call_id, &officer, &me).await.map_err(|e| DeskError::annotate(&e))?
            }
            Link::Remote(r) => r.api.acknowledge(call_id, &officer).await.map_err(|e| {
                let message = format!("the acknowledgement did not reach the core ({e}): the alarm goes on; try again");
                DeskError::api(&e, message)
            })?,
        };
        // The same event also arrives through the subscription; the board ignores the repeat.
        self.on_event(&ev);
        self.lock().board.get(call_id).cloned().ok_or_else(|| DeskError::not_on_board(call_id))
    }

    pub fn dismiss(&self, call_id: &str) -> Result<(), DeskError> {
        self.lock().board.dismiss(call_id).map_err(|e| match e {
            crate::board::DismissError::Unknown(id) => DeskError::not_on_board(&id),
            still_needed => DeskError::invalid(still_needed.to_string()),
        })?;
        self.ui.alert_removed(call_id);
        Ok(())
    }

    pub async fn search_history(&self, filter: &HistoryFilter) -> Result<Vec<sosdesk::audit::CallSummary>, DeskError> {
        let link = self.link().await?;
        link.search(history_query(filter).map_err(DeskError::invalid)?).await
    }

    pub async fn call_detail(&self, call_id: &str) -> Result<CallDetail, DeskError> {
        match self.link().await? {
            Link::Embedded(core) => {
                let store = core.store();
                let summary = store
                    .call_summary(call_id)
                    .await
                    .map_err(|e| DeskError::store(e.to_string()))?
                    .ok_or_else(|| DeskError::not_in_log(call_id))?;
                let events: Vec<AuditRecord> =
                    store.call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))?;
                let chain = store.chain_check().await;
                let recording = recording_check(&events).await;
                Ok(CallDetail { summary, events, chain, recording })
            }
            Link::Remote(r) => {
                let d = r.api.call_checked(call_id).await?;
                let summary = d.summary.ok_or_else(|| DeskError::not_in_log(call_id))?;
                // The file is on the core's machine: this desk can name it, not check or play it.
                let recording = recorded(&d.events).map(|(path, sha256, duration_ms)| RecordingCheck {
                    detail: format!("recorded on the core's machine as {path}: play it there"),
                    path,
                    duration_ms,
                    sha256,
                    ok: false,
                });
                let chain = d.chain.unwrap_or_else(|| ChainCheck {
                    ok: false,
                    rows_checked: 0,
                    detail: "the core did not check the hash chain".into(),
                });
                Ok(CallDetail { summary, events: d.events, chain, recording })
            }
        }
    }

    /// Writes the audit rows of the calls `filter` finds to a CSV file in the export folder
    /// (written whole, then renamed into place) and returns its path.
    pub async fn export_history_csv(&self, filter: &HistoryFilter) -> Result<String, DeskError> {
        let q = history_query(filter).map_err(DeskError::invalid)?;
        let buf = match self.link().await? {
            Link::Embedded(core) => {
                let mut buf = Vec::new();
                core.store()
                    .export_csv_matching(&mut buf, Some(&q))
                    .await
                    .map_err(|e| DeskError::store(e.to_string()))?;
                buf
            }
            Link::Remote(r) => r.api.history_csv(&history_params(q)).await?.to_vec(),
        };
        std::fs::create_dir_all(&self.export_dir)
            .map_err(|e| DeskError::file(format!("cannot create {}: {e}", self.export_dir.display())))?;
        let name = format!("sosdesk-history-{}.csv", Local::now().format("%Y%m%d-%H%M%S"));
        let path = self.export_dir.join(name);
        let tmp = path.with_extension("csv.part");
        std::fs::write(&tmp, &buf)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| DeskError::file(format!("cannot write {}: {e}", path.display())))?;
        Ok(path.display().to_string())
    }

    /// Saves the settings; a changed config path restarts the core from it.
    pub async fn save_settings(self: &Arc<Self>, new: Settings) -> Result<Settings, DeskError> {
        let new = Settings {
            officer_name: new.officer_name.trim().to_string(),
            config_path: new.config_path.map(|p| p.trim().to_string()).filter(|p| !p.is_empty()),
            ..new
        };
        let old = self.settings();
        self.settings_file
            .save(&new)
            .map_err(|e| DeskError::file(format!("cannot save {}: {e}", self.settings_file.path().display())))?;
        {
            let mut inner = self.lock();
            inner.settings = new.clone();
            inner.status.officer = officer_name(&new);
            let changes = if inner.status.core == CoreState::Running && inner.status.remote.is_none() {
                let two_way = inner.status.join.two_way_policies.clone();
                inner.status.join = join_info(&inner.accounts, two_way, new.desk_account.as_deref());
                // A different account is a different desk for "each desk acknowledges".
                let me = inner.status.join.desk.clone().unwrap_or_default();
                let modes = inner.board.modes().clone();
                inner.board.set_identity(&me, modes)
            } else {
                Vec::new()
            };
            drop(inner);
            self.apply_changes(changes);
        }
        let core_running = self.link.lock().await.is_some();
        if let Some(path) = &new.config_path {
            if old.config_path.as_ref() != Some(path) || !core_running {
                self.start_core(Path::new(path)).await?;
            }
        }
        Ok(new)
    }

    /// Remembers a config path given on the command line, as if chosen in the settings.
    pub fn remember_config(&self, path: &Path) {
        let mut s = self.settings();
        s.config_path = Some(path.display().to_string());
        if let Err(e) = self.settings_file.save(&s) {
            tracing::warn!(error = %e, "cannot remember the config path");
        }
        let mut inner = self.lock();
        inner.settings = s;
    }

    /// A real SIP test call to the config's test number, through the embedded core.
    pub async fn place_test_call(&self, hold: Duration) -> Result<String, DeskError> {
        let addr = self
            .link()
            .await?
            .sip()
            .ok_or_else(|| DeskError::not_connected("no SIP address of the core (UDP) to call"))?;
        let number =
            self.lock().test_number.clone().ok_or_else(|| {
                DeskError::config("no test number in the config (a [[policy.number]] with test = true)")
            })?;
        crate::testcall::place(addr, &number, hold).await
    }

    // ------------------------------------------------------------------ joining a call

    pub fn leg(&self) -> Option<CallLeg> {
        self.lock().leg.as_ref().map(|l| l.status.clone())
    }

    /// Joins `call_id` through the core's conference address with this desk's account. One leg
    /// at a time: an officer is in one call. Returns at once (state `joining`); the outcome
    /// arrives as `desk:leg`.
    pub async fn join_call(self: &Arc<Self>, call_id: &str, mode: LegMode) -> Result<CallLeg, DeskError> {
        let link = self.link().await?;
        let addr =
            link.sip().ok_or_else(|| DeskError::not_connected("no SIP address of the core (UDP) to join through"))?;
        let mut inner = self.lock();
        if let Some(l) = inner.leg.as_ref().filter(|l| l.live()) {
            return Err(DeskError::leg(if l.status.call_id == call_id {
                "this desk is already in this call"
            } else {
                "this desk is in another call: leave it first"
            }));
        }
        if inner.board.get(call_id).is_none() {
            return Err(DeskError::not_on_board(call_id));
        }
        let account = match &link {
            Link::Embedded(_) => {
                pick_account(&inner.accounts, inner.settings.desk_account.as_deref()).cloned().ok_or_else(|| {
                    DeskError::config("no desk account in the config ([[desk]]): this desk cannot join calls")
                })?
            }
            // The account of the remote desk file, under the name the core gave it.
            Link::Remote(r) => sosdesk::config::DeskAccountConfig {
                name: r
                    .info()
                    .map(|i| i.name)
                    .ok_or_else(|| DeskError::not_connected("not connected to the core yet"))?,
                username: r.config.username.clone(),
                password: r.config.password.clone(),
                talk: r.info().is_some_and(|i| i.talk),
            },
        };
        let id = inner.next_audio_id;
        inner.next_audio_id += 1;
        let buffer = Arc::new(Mutex::new(LiveBuffer::default()));
        let status = CallLeg {
            call_id: call_id.to_string(),
            desk: account.name.clone(),
            mode,
            state: LegState::Joining,
            muted: false,
            detail: format!("joining as {} ({})…", account.name, account.username),
            level_dbfs: -90.0,
            hearing: false,
            packets: 0,
            speaker: Component::ok("the audio output opens when the call connects"),
            microphone: None,
            since: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let me = Arc::downgrade(self);
        let reporter: crate::callleg::Reporter = Arc::new(move |u| {
            if let Some(desk) = me.upgrade() {
                desk.on_leg_update(id, u);
            }
        });
        let request = JoinRequest {
            core: addr,
            call_id: call_id.to_string(),
            desk_name: account.name.clone(),
            credentials: Credentials { username: account.username.clone(), password: account.password.clone() },
            mode,
        };
        let commands = crate::callleg::spawn(request, buffer.clone(), reporter);
        inner.leg = Some(LegSlot { status: status.clone(), commands, audio_id: id, buffer, playing: false });
        drop(inner);
        tracing::info!(call = call_id, desk = %account.name, ?mode, "joining the call");
        self.ui.leg(&status);
        Ok(status)
    }

    async fn leg_command(&self, cmd: LegCommand) -> Result<(), DeskError> {
        let tx = self
            .lock()
            .leg
            .as_ref()
            .filter(|l| l.live())
            .map(|l| l.commands.clone())
            .ok_or_else(|| DeskError::leg("this desk is not in a call"))?;
        tx.send(cmd).await.map_err(|_| DeskError::leg("the call leg has ended"))
    }

    /// Listen ↔ Talk: a re-INVITE the core checks again; a refusal leaves the leg as it was.
    pub async fn set_leg_mode(&self, mode: LegMode) -> Result<(), DeskError> {
        self.leg_command(LegCommand::Mode(mode)).await
    }

    pub async fn mute_leg(&self, muted: bool) -> Result<(), DeskError> {
        self.leg_command(LegCommand::Mute(muted)).await
    }

    /// Leaves the call (BYE); the call itself goes on.
    pub async fn leave_call(&self) -> Result<(), DeskError> {
        self.leg_command(LegCommand::Leave).await
    }

    fn on_leg_update(&self, id: u64, update: LegUpdate) {
        let mut start_audio = None;
        let mut stop_audio = false;
        let mut inner = self.lock();
        let Some(slot) = inner.leg.as_mut().filter(|l| l.audio_id == id) else { return };
        let s = &mut slot.status;
        match update {
            LegUpdate::Connected { mode } => {
                s.state = LegState::Connected;
                s.mode = mode;
                s.detail = leg_detail(mode, s.muted);
                if mode == LegMode::Listen {
                    s.microphone = None;
                } else if s.microphone.is_none() {
                    s.microphone = Some(Component::ok("opening the microphone"));
                }
                if !slot.playing {
                    slot.playing = true;
                    if self.audio.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                        start_audio = Some(slot.buffer.clone());
                    } else {
                        s.speaker = Component::failed(
                            "no audio output (the audio thread did not start): the call audio cannot be heard here; \
                             the leg stays connected",
                        );
                    }
                }
            }
            LegUpdate::ModeRefused { wanted, reason } => {
                let what = if wanted == LegMode::Talk { "Talk" } else { "Listen" };
                s.detail = format!("{what} refused: {reason}. {}", leg_detail(s.mode, s.muted));
            }
            LegUpdate::Muted(m) => {
                s.muted = m;
                s.detail = leg_detail(s.mode, m);
                if s.mode == LegMode::Talk {
                    s.microphone = Some(if m {
                        Component::ok("microphone off (muted)")
                    } else {
                        Component::ok("opening the microphone")
                    });
                }
            }
            LegUpdate::Level { dbfs, packets } => {
                s.level_dbfs = dbfs;
                s.hearing = dbfs > -55.0;
                s.packets = packets;
            }
            LegUpdate::Microphone(Ok(())) => s.microphone = Some(Component::ok("microphone capturing")),
            LegUpdate::Microphone(Err(e)) => {
                tracing::warn!(error = %e, "no microphone for the call; the leg stays connected");
                s.microphone = Some(Component::failed(format!("{e}: you are not heard; the leg stays connected")));
            }
            LegUpdate::Ended { reason } => {
                s.state = LegState::Ended;
                s.detail = format!("Left the call: {reason}");
                s.hearing = false;
                stop_audio = true;
            }
            LegUpdate::Failed { reason } => {
                tracing::warn!(call = %s.call_id, %reason, "joining the call failed");
                s.state = LegState::Failed;
                s.detail = reason;
                s.hearing = false;
                stop_audio = true;
            }
        }
        let leg = slot.status.clone();
        drop(inner);
        if let Some(out) = self.audio.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if let Some(buffer) = start_audio {
                out.play(id, LiveSource::new(buffer));
            }
            if stop_audio {
                out.stop(id);
            }
        }
        self.ui.leg(&leg);
    }

    // ------------------------------------------------------------------ recordings

    /// Plays the call's recording, after checking it against the hash in the audit log (a file
    /// that was altered is refused, and says so).
    pub async fn play_recording(&self, call_id: &str) -> Result<Playback, DeskError> {
        let core = match self.link().await? {
            Link::Embedded(core) => core,
            Link::Remote(_) => return Err(DeskError::audio("the recording is on the core's machine: play it there")),
        };
        let events = core.store().call_events(call_id).await.map_err(|e| DeskError::store(e.to_string()))?;
        let check = recording_check(&events).await.ok_or_else(|| DeskError::audio("this call has no recording"))?;
        if !check.ok {
            return Err(DeskError::audio(check.detail));
        }
        let path = PathBuf::from(&check.path);
        let (left, right) = tokio::task::spawn_blocking(move || sosdesk::media::wav::read_stereo(&path))
            .await
            .map_err(|e| DeskError::internal(e.to_string()))?
            .map_err(|e| DeskError::audio(format!("cannot read the recording: {e}")))?;
        // Lock order everywhere: the desk's state, then the audio handle (see settle_alarm).
        let mut inner = self.lock();
        let audio = self.audio.lock().unwrap_or_else(|p| p.into_inner());
        let out = audio.as_ref().ok_or_else(|| DeskError::audio("no audio output: the audio thread did not start"))?;
        if let Some((old, _)) = inner.playback.take() {
            out.stop(old);
        }
        let id = inner.next_audio_id;
        inner.next_audio_id += 1;
        inner.playback = Some((id, call_id.to_string()));
        out.play(id, StereoPcm::new(&left, &right));
        Ok(Playback { call_id: call_id.to_string(), state: PlaybackState::Playing, detail: "starting playback".into() })
    }

    pub fn stop_playback(&self) -> Option<Playback> {
        let (id, call_id) = self.lock().playback.take()?;
        if let Some(out) = self.audio.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            out.stop(id);
        }
        let p = Playback { call_id, state: PlaybackState::Stopped, detail: "stopped".into() };
        self.ui.playback(&p);
        Some(p)
    }

    /// The UI painted event `seq` of `call_id`: how long after it reached the desk.
    pub fn alert_shown(&self, call_id: &str, seq: u32) -> Option<Duration> {
        let arrived = self.lock().pending_paint.remove(&(call_id.to_string(), seq))?;
        let took = arrived.elapsed();
        tracing::info!(call = call_id, seq, ms = took.as_secs_f64() * 1000.0, "alert painted");
        let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        self.record_metric(serde_json::json!({ "call_id": call_id, "seq": seq, "event_to_paint_ms": ms }));
        Some(took)
    }

    /// The page finished starting and painted these alerts (their call ids, read from its
    /// cards). Returns which start of the page this was (1 for the first): a later one means
    /// the page was reloaded after its web process died, and the log says what it shows again.
    pub fn page_ready(&self, shown: &[String]) -> u32 {
        let load = self.page_loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::info!(load, alerts = shown.len(), "the desk's page is showing");
        self.record_metric(serde_json::json!({ "page_load": load, "alerts_shown": shown }));
        load
    }

    fn record_metric(&self, record: serde_json::Value) {
        let Some(path) = &self.metrics else { return };
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all((record.to_string() + "\n").as_bytes());
        }
    }

    /// Stops the core (the app is quitting): everything recorded so far is made durable.
    pub async fn shutdown(&self) {
        if let Some(Some(core)) = self.link.lock().await.take().map(Link::stop) {
            if let Ok(core) = Arc::try_unwrap(core) {
                core.stop().await;
            }
        }
    }
}

/// The account this desk joins with: the one named in the settings, else the config's first.
fn pick_account<'a>(
    accounts: &'a [sosdesk::config::DeskAccountConfig],
    wanted: Option<&str>,
) -> Option<&'a sosdesk::config::DeskAccountConfig> {
    match wanted.filter(|w| !w.is_empty()) {
        Some(w) => accounts.iter().find(|a| a.username == w),
        None => accounts.first(),
    }
}

fn join_info(accounts: &[sosdesk::config::DeskAccountConfig], two_way: Vec<String>, wanted: Option<&str>) -> JoinInfo {
    let usernames = accounts.iter().map(|a| a.username.clone()).collect();
    match pick_account(accounts, wanted) {
        Some(a) => join_as(&a.name, &a.username, a.talk, two_way, usernames),
        None => JoinInfo {
            desk: None,
            username: None,
            may_talk: false,
            two_way_policies: two_way,
            accounts: usernames,
            detail: match wanted {
                Some(w) if !accounts.is_empty() => format!("no desk account {w:?} in the config: joining calls is off"),
                _ => "no [[desk]] account in the config: joining calls is off".into(),
            },
        },
    }
}

/// How a desk with this account joins calls (an embedded desk's `[[desk]]`, or what a remote
/// core said about the remote desk's account).
fn join_as(name: &str, username: &str, talk: bool, two_way: Vec<String>, accounts: Vec<String>) -> JoinInfo {
    JoinInfo {
        desk: Some(name.to_string()),
        username: Some(username.to_string()),
        may_talk: talk,
        two_way_policies: two_way,
        accounts,
        detail: format!("joins calls as {name} ({username}){}", if talk { "" } else { ", listen only" }),
    }
}

/// The call's recording from its audit events, with the file checked against the audited hash.
async fn recording_check(events: &[AuditRecord]) -> Option<RecordingCheck> {
    let (path, sha256, duration_ms) = recorded(events)?;
    let p = PathBuf::from(&path);
    let hashed = tokio::task::spawn_blocking(move || sosdesk::media::wav::hash_file(&p)).await;
    let (ok, detail) = match hashed {
        Ok(Ok(h)) if h == sha256 => (true, "recording intact: its SHA-256 matches the audit log".to_string()),
        Ok(Ok(h)) => (false, format!("RECORDING ALTERED: its SHA-256 is {h}, the audit log says {sha256}")),
        Ok(Err(e)) => (false, format!("the recording cannot be read: {e}")),
        Err(e) => (false, format!("the recording could not be checked: {e}")),
    };
    Some(RecordingCheck { path, duration_ms, sha256, ok, detail })
}

/// The recording the audit log names for a call: path, SHA-256, duration.
fn recorded(events: &[AuditRecord]) -> Option<(String, String, u64)> {
    events.iter().rev().find_map(|r| match &r.event.kind {
        sosdesk::events::CallEventKind::Recorded { path, sha256, duration_ms } => {
            Some((path.clone(), sha256.clone(), *duration_ms))
        }
        _ => None,
    })
}

/// The officer's filter as a store query: local calendar days, both ends inclusive.
pub fn history_query(f: &HistoryFilter) -> Result<HistoryQuery, String> {
    let day = |s: &str, what: &str| -> Result<Option<NaiveDate>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(Some).map_err(|_| format!("{what} date {s:?} is not YYYY-MM-DD"))
    };
    let from = day(&f.from_date, "from")?.map(local_midnight);
    // Up to the start of the day after: the "to" day is included.
    let until = match day(&f.to_date, "to")? {
        Some(d) => Some(local_midnight(d.succ_opt().ok_or("to date out of range")?)),
        None => None,
    };
    let text = Some(f.text.trim().to_string()).filter(|t| !t.is_empty());
    Ok(HistoryQuery {
        text,
        from,
        until,
        outcome: f.outcome,
        exclude_tests: !f.include_tests,
        limit: f.limit.unwrap_or(200).min(10_000),
    })
}

fn local_midnight(d: NaiveDate) -> chrono::DateTime<Utc> {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    // A DST change at midnight makes it ambiguous or missing: take the earliest valid instant.
    match Local.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => Local
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&naive)),
    }
}
