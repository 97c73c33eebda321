//! What the notification IM says: a `text/plain` part any SIP client shows, and the `CallEvent`
//! as JSON for sosdesk desks, in one `multipart/mixed` body (RFC 2046 §5.1.3; RFC 3428 §9 allows
//! any MIME body). A client that understands only text shows the first part.

use bytes::Bytes;
use chrono::Local;

use crate::events::{CallEvent, CallEventKind};
use crate::location::LocationSource;

/// Media type of the structured part: the `CallEvent` as JSON (docs/desk-api.md).
pub const CALL_EVENT_CONTENT_TYPE: &str = "application/vnd.sosdesk.call-event+json";

/// The Subject header: what a client shows in its list before the message is opened.
pub fn subject(ev: &CallEvent) -> String {
    if let CallEventKind::UnlocatedNetwork { element_kind, element, .. } = &ev.kind {
        return format!("sosdesk: new unlocated {element_kind} {element}").replace(['\r', '\n'], " ");
    }
    let what = if ev.test_call { "TEST CALL" } else { "EMERGENCY CALL" };
    format!("{what} {} from {}", ev.normalized, ev.caller.number).replace(['\r', '\n'], " ")
}

/// The text a security officer reads on any SIP client.
pub fn human_text(ev: &CallEvent) -> String {
    let mut t = String::with_capacity(512);
    // Display names and PIDF-LO text are the caller's: control characters (a line break that
    // could fake a field) become spaces.
    let mut line = |label: &str, value: &str| {
        let value: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if label.is_empty() {
            t.push_str(&value);
        } else {
            t.push_str(&format!("{label}: {value}"));
        }
        t.push_str("\r\n");
    };
    // An announcement for admins, not a call: what was not located, and what to do.
    if let CallEventKind::UnlocatedNetwork { element_kind, element, device, asked, outcome } = &ev.kind {
        line("", &format!("New unlocated {element_kind}: {element}"));
        let asked = if asked == "held" { "A HELD location request" } else { "An emergency call" };
        line("", &format!("{asked} from {device} was not located by the wiremap (it fell back to {outcome})."));
        line("", "Add it to the wiremap (sosdesk lis import); the list: sosdesk lis unlocated.");
        let local = ev.at.with_timezone(&Local);
        line("Time", &format!("{} ({} UTC)", local.format("%Y-%m-%d %H:%M:%S %:z"), ev.at.format("%H:%M:%S")));
        return t;
    }
    if ev.test_call {
        line("", &format!("TEST CALL to {} (a test: no emergency)", ev.normalized));
    } else {
        line("", &format!("EMERGENCY CALL to {}", ev.normalized));
    }
    line("Caller", ev.caller.display_name.as_deref().filter(|n| !n.trim().is_empty()).unwrap_or("(no name)"));
    line("Callback number", &ev.caller.number);
    line("Dialed", &ev.dialed);
    let local = ev.at.with_timezone(&Local);
    line("Time", &format!("{} ({} UTC)", local.format("%Y-%m-%d %H:%M:%S %:z"), ev.at.format("%H:%M:%S")));
    let loc = &ev.location;
    if let Some(erl) = loc.erl.as_ref().filter(|e| !e.label.is_empty()) {
        line("Location", &erl.label);
    }
    line("Address", &loc.describe());
    if let Some(erl) = &loc.erl {
        let c = &erl.civic;
        for (label, v) in
            [("Building", &c.bld), ("Floor", &c.flr), ("Unit", &c.unit), ("Room", &c.room), ("Seat", &c.seat)]
        {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                line(label, v);
            }
        }
    }
    line("Location found by", &source_text(loc.source, loc.method.as_deref()));
    // A user-entered location that could not be used (the device changed networks): the officer
    // should know one exists, and that it may be wrong.
    for note in loc.warnings.iter().filter(|w| w.starts_with(crate::location::user_entered::STALE_NOTE)) {
        line("Location note", note);
    }
    if let Some(site) = &ev.site {
        line("Site", site);
    }
    line("Call", &ev.call_id);
    t
}

fn source_text(source: LocationSource, method: Option<&str>) -> String {
    let s = match source {
        LocationSource::ClientPidfLo => "the caller's phone (PIDF-LO in the call)",
        LocationSource::Wiremap => "the network wiremap (switch port, access point or subnet)",
        LocationSource::HeldCached => "the location the phone last obtained over HELD",
        LocationSource::SiteDefault => "the site's configured address (not the caller's exact spot)",
        // RAY BAUM'S Act: the user's own entry, not measured (docs/location.md).
        LocationSource::Manual => crate::location::user_entered::VERIFY_NOTE,
        LocationSource::None => "not found: no location",
    };
    match method.filter(|m| !m.is_empty()) {
        Some(m) => format!("{s}, method {m}"),
        None => s.to_string(),
    }
}

/// The MESSAGE body: (Content-Type, body).
pub fn body_of(ev: &CallEvent) -> (String, Bytes) {
    let text = human_text(ev);
    let json = serde_json::to_string(ev).unwrap_or_default();
    let json_headers = format!("Content-Type: {CALL_EVENT_CONTENT_TYPE}");
    crate::sip::body::multipart_mixed(&[
        ("Content-Type: text/plain;charset=UTF-8", text.as_bytes()),
        (&json_headers, json.as_bytes()),
    ])
}
