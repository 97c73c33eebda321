//! Alerts: each `CallEvent` onto the board, then at once the window (cards, raise, keep on top),
//! then the alarm and the tray, then the desktop notification; the officer's acknowledgement
//! (audited by the core) and dismissal.

use std::sync::Arc;
use std::time::Instant;

use chrono::Local;
use sosdesk::events::CallEvent;

use super::link::Link;
use super::{Desk, Inner};
use crate::audio::AlarmReport;
use crate::board::Change;
use crate::error::DeskError;
use crate::model::*;
use crate::settings::officer_name;

/// What the window and tray must do after the alarm state was settled.
enum AlarmUi {
    Active(u32),
    Idle,
    Unchanged,
}

impl Desk {
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
        let status = inner.status_now();
        drop(inner);

        // Each step timed: where the first alert's time goes (BENCHMARKS.md, "core event →
        // alert painted"; RUST_LOG=sosdesk_desk=debug).
        let step = |what: &str, since: Instant| {
            tracing::debug!(step = what, ms = since.elapsed().as_secs_f64() * 1000.0, "alert step");
            Instant::now()
        };
        let t = step("board", arrived);
        self.show_cards(&changes);
        let t = step("cards sent", t);
        if new_emergency.is_some() {
            self.ui.raise(true);
        } else if new_test.is_some() {
            self.ui.raise(false);
        }
        let t = step("window raised", t);
        self.ui.status(&status);
        let t = step("status sent", t);
        self.apply_alarm_ui(alarm);
        step("tray", t);
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
    pub(super) fn apply_changes(&self, changes: Vec<Change>) {
        let mut inner = self.lock();
        let alarm = self.settle_alarm(&mut inner);
        let status = inner.status_now();
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

    pub(super) fn on_alarm_report(&self, report: AlarmReport) {
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
            Link::Remote(r) => r.api().acknowledge(call_id, &officer).await.map_err(|e| {
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
}
