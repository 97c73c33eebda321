//! The desktop notification (notify-rust, freedesktop D-Bus) for each emergency call. It comes
//! after the window and the alarm, and its failure — no D-Bus session, no notification daemon —
//! is logged and shown in the status bar, never fatal.

use notify_rust::{Notification, Timeout, Urgency};

use crate::model::ActiveCall;

/// Title and body of the notification for a call. Plain text: the freedesktop spec lets daemons
/// interpret a subset of markup in the body, so caller-controlled text has `<`, `>` and `&`
/// escaped (a display name must never turn into markup there either).
pub fn text(call: &ActiveCall) -> (String, String) {
    let kind = if call.test_call { "TEST CALL" } else { "EMERGENCY CALL" };
    let title =
        format!("{kind} {} — {}", call.normalized, call.caller.display_name.as_deref().unwrap_or(&call.caller.number));
    let location = call.location.describe();
    let body = format!("Callback {}\nLocation: {}\n{}", call.caller.number, location, call.location_note);
    (escape(&title), escape(&body))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Shows the notification; blocking (a D-Bus round trip), so call it off the UI thread.
pub fn show(call: &ActiveCall) -> Result<(), String> {
    let (title, body) = text(call);
    Notification::new()
        .appname("sosdesk")
        .summary(&title)
        .body(&body)
        .icon("dialog-warning")
        .urgency(if call.test_call { Urgency::Normal } else { Urgency::Critical })
        .timeout(if call.test_call { Timeout::Default } else { Timeout::Never })
        .show()
        .map(|_| ())
        .map_err(|e| e.to_string())
}
