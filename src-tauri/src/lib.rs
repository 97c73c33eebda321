//! The sosdesk security desk (Tauri app): runs the routing core in-process and shows its
//! emergency calls to security officers. A thin layer: the domain lives in the `sosdesk` crate,
//! the desk's own logic in [`desk`] and [`board`], and this file only wires them to the window,
//! the tray and the webview.

pub mod alarm;
pub mod audio;
pub mod board;
pub mod callleg;
pub mod commands;
pub mod desk;
pub mod error;
pub mod headline;
pub mod model;
pub mod notify;
pub mod registration;
pub mod settings;
pub mod sipua;
pub mod testcall;
pub mod webview;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tauri::image::Image;
use tauri::menu::{Menu, MenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Emitter, Manager, Runtime, UserAttentionType, WindowEvent};

use crate::desk::{Desk, Ui};
use crate::model::{ActiveCall, CallLeg, Component, DeskStatus, Playback};
use crate::settings::{InstanceLock, SettingsFile};

/// Names of the events the UI listens to (docs/desk-api.md).
pub const EVENT_ALERT: &str = "desk:alert";
pub const EVENT_ALERT_REMOVED: &str = "desk:alert-removed";
pub const EVENT_STATUS: &str = "desk:status";
pub const EVENT_LEG: &str = "desk:leg";
pub const EVENT_PLAYBACK: &str = "desk:playback";

const TRAY_IDLE: &[u8] = include_bytes!("../../icons/tray-idle.png");
const TRAY_ALERT: &[u8] = include_bytes!("../../icons/tray-alert.png");

/// Command-line options of the desk app.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The core's config; remembered for the next start.
    pub config: Option<PathBuf>,
}

/// [`Ui`] on the real window, webview and tray.
struct TauriUi<R: Runtime> {
    app: AppHandle<R>,
    tray: Mutex<Option<TrayIcon<R>>>,
}

impl<R: Runtime> TauriUi<R> {
    fn window(&self) -> Option<tauri::WebviewWindow<R>> {
        self.app.get_webview_window("main")
    }
}

impl<R: Runtime> Ui for TauriUi<R> {
    fn alert(&self, call: &ActiveCall) {
        if let Err(e) = self.app.emit(EVENT_ALERT, call) {
            tracing::error!(error = %e, "cannot send an alert to the window");
        }
    }

    fn alert_removed(&self, call_id: &str) {
        let _ = self.app.emit(EVENT_ALERT_REMOVED, call_id);
    }

    fn status(&self, status: &DeskStatus) {
        let _ = self.app.emit(EVENT_STATUS, status);
    }

    fn raise(&self, on_top: bool) {
        let Some(w) = self.window() else { return };
        // Each step may be refused by a window manager; none of them may stop the others.
        let _ = w.show();
        let _ = w.unminimize();
        if on_top {
            let _ = w.set_always_on_top(true);
            let _ = w.request_user_attention(Some(UserAttentionType::Critical));
        }
        let _ = w.set_focus();
    }

    fn release_on_top(&self) {
        if let Some(w) = self.window() {
            let _ = w.set_always_on_top(false);
            let _ = w.request_user_attention(None);
        }
    }

    fn leg(&self, leg: &CallLeg) {
        let _ = self.app.emit(EVENT_LEG, leg);
    }

    fn playback(&self, playback: &Playback) {
        let _ = self.app.emit(EVENT_PLAYBACK, playback);
    }

    fn restart_app(&self, reason: &str) {
        // exec(2): the same program and arguments in this process's place. Everything the old
        // image held goes with it — the hung thread, the core's sockets, the instance lock
        // (opened close-on-exec) — as when a service manager restarts a process.
        use std::os::unix::process::CommandExt;
        let err = match std::env::current_exe() {
            Ok(exe) => {
                std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(RESTARTED_ENV, reason).exec()
            }
            Err(e) => e,
        };
        // Only reached when exec failed: ending is better than a desk that routes nothing.
        eprintln!("sosdesk-desk: {reason}, but the app could not restart itself ({err}); exiting");
        std::process::exit(70);
    }

    fn tray(&self, active: bool, tooltip: &str) {
        let tray = self.tray.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tray.as_ref() {
            let icon = Image::from_bytes(if active { TRAY_ALERT } else { TRAY_IDLE });
            if let Ok(icon) = icon {
                let _ = t.set_icon(Some(icon));
            }
            let _ = t.set_tooltip(Some(tooltip));
        }
    }
}

fn build_tray<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<TrayIcon<R>> {
    let open = MenuItem::with_id(app, "open", "Open sosdesk", true, None::<&str>)?;
    let quit =
        MenuItem::with_id(app, "quit", "Quit (stops this desk, and the routing core it runs)", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&open, &quit])?;
    TrayIconBuilder::with_id("sosdesk")
        .icon(Image::from_bytes(TRAY_IDLE)?)
        .tooltip("sosdesk — no unacknowledged emergency")
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(|app, ev| match ev.id().as_ref() {
            "open" => show_main(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .on_tray_icon_event(|tray, ev| {
            if let TrayIconEvent::Click { button: MouseButton::Left, button_state: MouseButtonState::Up, .. } = ev {
                show_main(tray.app_handle());
            }
        })
        .build(app)
}

fn show_main<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

/// Set by [`Ui::restart_app`] for the process it starts in its place: why it was restarted.
const RESTARTED_ENV: &str = "SOSDESK_DESK_RESTARTED";

/// Runs the desk app until it quits.
pub fn run(opts: Options) {
    let context = tauri::generate_context!("../tauri.conf.json");
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            // A second start (from a menu, a script) shows the running desk instead.
            show_main(app);
        }))
        .invoke_handler(desk_commands!())
        .setup(move |app| {
            let handle = app.handle().clone();
            match app.get_webview_window("main") {
                Some(w) => webview::recover_from_crashes(&w),
                None => tracing::warn!("no main window to set up crash recovery on"),
            }
            let config_dir = app.path().app_config_dir()?;
            // Without a D-Bus session the plugin above cannot see another instance: the lock
            // file can.
            let lock = match InstanceLock::acquire(&config_dir) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("sosdesk-desk: {e}");
                    std::process::exit(1);
                }
            };
            app.manage(lock);
            let export_dir = app
                .path()
                .document_dir()
                .or_else(|_| app.path().home_dir())
                .unwrap_or_else(|_| config_dir.clone())
                .join("sosdesk-exports");
            let ui = Arc::new(TauriUi { app: handle.clone(), tray: Mutex::new(None) });
            let desk =
                Desk::new(Box::new(ui.clone()), SettingsFile::in_dir(&config_dir), export_dir, Arc::new(notify::show));
            desk.enable_audio();
            match build_tray(&handle) {
                Ok(t) => {
                    *ui.tray.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
                    desk.set_tray_status(Component::ok("tray icon shown"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no tray icon");
                    desk.set_tray_status(Component::failed(format!("no tray icon: {e}")));
                }
            }
            app.manage(desk.clone());
            if let Some(reason) = std::env::var_os(RESTARTED_ENV) {
                // Said once: a later start by hand is not a restart.
                std::env::remove_var(RESTARTED_ENV);
                desk.note_restart(&reason.to_string_lossy());
            }
            let config = match &opts.config {
                Some(p) => {
                    let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                    desk.remember_config(&p);
                    Some(p)
                }
                None => desk.settings().config_path.map(PathBuf::from),
            };
            if let Some(path) = config {
                let desk = desk.clone();
                tauri::async_runtime::spawn(async move {
                    // Failures are shown in the status bar; the officer can pick another config.
                    let _ = desk.start_core(&path).await;
                });
            }
            Ok(())
        })
        .on_window_event(|window, ev| {
            if let WindowEvent::CloseRequested { api, .. } = ev {
                // The desk runs the routing core: closing the window must not stop emergency
                // calls. It hides to the tray; "Quit" in the tray menu stops it.
                let has_tray = window.app_handle().tray_by_id("sosdesk").is_some();
                if has_tray {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .build(context);
    let app = match app {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sosdesk-desk: cannot start the desk app: {e}");
            std::process::exit(1);
        }
    };
    app.run(|app, ev| {
        if let tauri::RunEvent::Exit = ev {
            if let Some(desk) = app.try_state::<Arc<Desk>>() {
                let desk = desk.inner().clone();
                tauri::async_runtime::block_on(desk.shutdown());
            }
        }
    });
}
