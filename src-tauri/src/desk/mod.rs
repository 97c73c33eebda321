//! The desk: what the UI is told and asks, independent of Tauri (the window, tray and webview
//! are behind [`Ui`]), so the command-layer tests drive it with Tauri's mock runtime and a real
//! core. By concern:
//!
//! - `link.rs`: the link to the core (embedded, or `remote.rs`'s remote link), its events and
//!   the catch-up from the audit log;
//! - `alerts.rs`: board → window → alarm → notification, acknowledge and dismiss;
//! - `history.rs`: search, detail, CSV export, recordings;
//! - `leg.rs`: this desk's leg in a call, and the test call;
//! - `remote.rs`: remote desk mode.
//!
//! Here: the desk's state, the status bar, the settings, and the page's paint metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audio::{AudioOut, AudioReport};
use crate::board::{Board, RouteBook};
use crate::error::DeskError;
use crate::model::*;
use crate::settings::{officer_name, SettingsFile};

mod alerts;
mod floorplan;
mod history;
mod leg;
mod link;
mod remote;
pub use history::history_query;
use leg::{join_as, join_info, LegSlot};
use link::Link;
pub use remote::{load_remote, RemoteConfig, RemoteLink};

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
    /// The embedded core's engine stopped turning and cannot be stopped from inside the
    /// process (a thread that never returns holds its sockets): the app starts itself again
    /// in place, as a service manager would restart `sosdesk serve`, and the new process says
    /// `reason` in its status bar (see `Desk::note_restart`).
    fn restart_app(&self, _reason: &str) {}
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
    fn restart_app(&self, reason: &str) {
        (**self).restart_app(reason)
    }
}

/// Desktop notifications, behind a trait so tests can run without a D-Bus daemon.
pub type Notifier = Arc<dyn Fn(&ActiveCall) -> Result<(), String> + Send + Sync>;

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
    /// When the embedded core was restarted lately (`link.rs`'s backoff).
    restarts: Vec<Instant>,
}

impl Inner {
    /// The status as it is sent: with its headline made from the rest.
    fn status_now(&mut self) -> DeskStatus {
        self.status.headline = crate::headline::of(&self.status);
        self.status.clone()
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
            restarted: None,
            policy_routes: Vec::new(),
            located: None,
            headline: Default::default(),
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
                restarts: Vec::new(),
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
            inner.status_now()
        };
        self.ui.status(&status);
    }

    pub fn status(&self) -> DeskStatus {
        self.lock().status_now()
    }

    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    pub fn active_calls(&self) -> Vec<ActiveCall> {
        self.lock().board.calls().to_vec()
    }

    fn on_audio_report(&self, report: AudioReport) {
        match report {
            AudioReport::Alarm(r) => self.on_alarm_report(r),
            // The call audio of this desk's leg, or a recording, on the output device.
            AudioReport::Stream { id, report } => {
                if let Some(report) = self.on_leg_audio(id, report) {
                    self.on_playback_audio(id, report);
                }
            }
        }
    }

    fn update_status(&self, f: impl FnOnce(&mut DeskStatus)) {
        self.update_status_inner(|inner| f(&mut inner.status));
    }

    fn update_status_inner(&self, f: impl FnOnce(&mut Inner)) {
        let status = {
            let mut inner = self.lock();
            f(&mut inner);
            inner.status_now()
        };
        self.ui.status(&status);
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

    /// The UI painted event `seq` of `call_id`: how long after it reached the desk.
    /// `page_ms`: the part of it spent in the page (event received → painted); `dom_ms`: of that,
    /// the page's own work (card built, board updated) before the frames that draw it.
    pub fn alert_shown(&self, call_id: &str, seq: u32, page_ms: Option<f64>, dom_ms: Option<f64>) -> Option<Duration> {
        let arrived = self.lock().pending_paint.remove(&(call_id.to_string(), seq))?;
        let took = arrived.elapsed();
        tracing::info!(call = call_id, seq, ms = took.as_secs_f64() * 1000.0, page_ms, dom_ms, "alert painted");
        let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        let round = |v: Option<f64>| v.map(|p| (p * 1e3).round() / 1e3);
        self.record_metric(serde_json::json!({
            "call_id": call_id, "seq": seq, "event_to_paint_ms": ms, "page_ms": round(page_ms), "dom_ms": round(dom_ms)
        }));
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
