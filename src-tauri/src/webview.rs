//! What the desk asks of its webview beyond showing the page: that it keep showing it.
//!
//! - **No GPU compositing** ([`prefer_software_compositing`]). WebKitGTK composites pages with
//!   OpenGL when it can. On machines without a GPU driver (virtual machines, remote desktops,
//!   thin clients: common at security desks, and the Xvfb display of our tests) that is Mesa's
//!   software rasteriser, and WebKitGTK 2.50's threaded compositor crashed in it
//!   (`swrast_dri.so`, general protection fault) in about one desk E2E run in five; other
//!   WebKitGTK apps report black windows on the same path. The desk's page is cards and text,
//!   so it is drawn without compositing everywhere: one rendering path, the one the tests run.
//!   It must be chosen before WebKit starts: the `hardware-acceleration-policy` setting,
//!   applied to the created webview, left the compositor threads running (checked in
//!   `/proc/<web process>/task/*/comm`); the environment variable removes them.
//! - **Reload after a crash** ([`recover_from_crashes`]). When the page's web process ends
//!   anyway (a crash, the kernel's memory killer), WebKit leaves a blank window: an officer
//!   would see no alerts. The desk reloads the page, which asks the desk for its board again
//!   (the board lives in Rust, so no alert is lost), and logs the crash. A page that keeps
//!   crashing is reloaded at most once per [`RELOAD_PAUSE`], so a crash loop cannot take the
//!   CPU the routing core needs.

use std::time::Duration;

use tauri::{Runtime, WebviewWindow};

/// The least time between two reloads after crashes.
pub const RELOAD_PAUSE: Duration = Duration::from_secs(2);

/// WebKitGTK reads `WEBKIT_DISABLE_COMPOSITING_MODE` once, when its first webview is made:
/// call this first thing in `main`, while the process has one thread (setting the environment
/// is not thread-safe). An administrator who sets the variable (`0` turns compositing back on)
/// is left alone.
///
/// Not `WEBKIT_DISABLE_DMABUF_RENDERER`: it saves 4–5 MB idle, but with calls coming and going
/// the web process then grew (the one-hour soak, BENCHMARKS.md "Desk app: memory with calls
/// coming and going"): a few MB idle are not worth memory that grows with every call.
pub fn prefer_software_compositing() {
    const VAR: &str = "WEBKIT_DISABLE_COMPOSITING_MODE";
    if cfg!(target_os = "linux") && std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, "1");
    }
}

/// Reloads the main window's page whenever its web process ends; a failure to set this up is
/// logged (the page still works, without the safeguard).
pub fn recover_from_crashes<R: Runtime>(window: &WebviewWindow<R>) {
    #[cfg(target_os = "linux")]
    let done = window.with_webview(|platform| linux::reload_on_termination(&platform.inner()));
    #[cfg(not(target_os = "linux"))]
    let done: tauri::Result<()> = {
        let _ = window;
        Ok(())
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, "cannot set up the webview's crash recovery");
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    use webkit2gtk::glib;
    use webkit2gtk::{WebProcessTerminationReason, WebViewExt};

    use super::RELOAD_PAUSE;

    pub fn reload_on_termination(view: &webkit2gtk::WebView) {
        // GTK runs this on its main thread only: no locking needed.
        let last_reload: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        view.connect_web_process_terminated(move |view, reason| {
            let why = match reason {
                WebProcessTerminationReason::Crashed => "crashed",
                WebProcessTerminationReason::ExceededMemoryLimit => "exceeded its memory limit",
                WebProcessTerminationReason::TerminatedByApi => "was ended by the app",
                _ => "ended",
            };
            let wait =
                last_reload.get().map_or(std::time::Duration::ZERO, |t| RELOAD_PAUSE.saturating_sub(t.elapsed()));
            tracing::error!(reason = why, wait_ms = wait.as_millis() as u64, "the desk's page {why}: reloading it");
            let view = view.clone();
            let last_reload = last_reload.clone();
            glib::timeout_add_local_once(wait, move || {
                last_reload.set(Some(Instant::now()));
                view.reload();
            });
        });
    }
}
