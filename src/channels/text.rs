//! What each channel says. The whole alert (Kari's Law, RAY BAUM'S Act: emergency number,
//! caller, callback number, dispatchable location with floor and room, time) in every channel,
//! built from the notification IM's text (`notify::human_text`) so that every channel says the
//! same; a test call (933) says TEST first everywhere. Caller-controlled text (display names,
//! PIDF-LO text) is escaped for each medium: HTML, Slack mrkdwn, Markdown.

use crate::events::CallEvent;

/// `EMERGENCY CALL 911 — Alice Example — HQ, 2nd floor, room 210` (`TEST CALL 933 — …`).
/// An announcement of a network element first seen unlocated: the notification IM's subject
/// (`sosdesk: new unlocated subnet 10.9.9.0/24`).
pub fn subject(ev: &CallEvent) -> String {
    if is_announcement(ev) {
        return crate::notify::subject(ev);
    }
    let what = if ev.test_call { "TEST CALL" } else { "EMERGENCY CALL" };
    format!("{what} {} — {} — {}", ev.normalized, caller_name(ev), place(ev))
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An announcement for admins, not a call's alert (`unlocated-network`).
pub fn is_announcement(ev: &CallEvent) -> bool {
    matches!(ev.kind, crate::events::CallEventKind::UnlocatedNetwork { .. })
}

/// The caller's name, else the callback number.
fn caller_name(ev: &CallEvent) -> String {
    let name = ev.caller.display_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    name.unwrap_or(&ev.caller.number).to_string()
}

/// Where, in a few words: the ERL's label, else the address — said to be the caller's own entry
/// when it is (docs/location.md: every alert carries it, the SMS and subjects too).
fn place(ev: &CallEvent) -> String {
    let p = match ev.location.erl.as_ref().filter(|e| !e.label.trim().is_empty()) {
        Some(erl) => erl.label.clone(),
        None => ev.location.describe(),
    };
    match ev.location.source {
        crate::location::LocationSource::Manual => format!("{p} (user-entered, verify with the caller)"),
        _ => p,
    }
}

/// The plain text: the notification IM's lines, then the acknowledgement link.
pub fn plain(ev: &CallEvent, ack_url: Option<&str>) -> String {
    let mut t = crate::notify::human_text(ev);
    if let Some(url) = ack_url {
        t.push_str(&format!("\r\nAcknowledge (stops the escalation): {url}\r\n"));
    }
    t
}

/// `&`, `<`, `>`, `"` and `'` as entities (the PIDF-LO writer's XML escaping, valid HTML too):
/// caller text is text, never markup.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    crate::location::pidf::xml::escape_into(&mut out, s, true);
    out
}

/// The HTML part: the same lines as the text, as a table, every value escaped.
pub fn html(ev: &CallEvent, ack_url: Option<&str>) -> String {
    let text = crate::notify::human_text(ev);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let headline = lines.next().unwrap_or_default();
    let color = if ev.test_call || is_announcement(ev) { "#555555" } else { "#b00020" };
    let mut h = format!("<!DOCTYPE html><html><body><h1 style=\"color:{color}\">{}</h1><table>", html_escape(headline));
    for line in lines {
        match line.split_once(": ") {
            Some((label, value)) => h.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                html_escape(label),
                html_escape(value)
            )),
            None => h.push_str(&format!("<tr><td colspan=\"2\">{}</td></tr>", html_escape(line))),
        }
    }
    h.push_str("</table>");
    if let Some(url) = ack_url {
        h.push_str(&format!(
            "<p><a href=\"{}\">Acknowledge this alert</a> (stops the escalation)</p>",
            html_escape(url)
        ));
    }
    h.push_str("</body></html>");
    h
}

/// The most an SMS alert takes: two concatenated GSM 03.38 messages (2 × 153).
pub const SMS_MAX: usize = 306;

/// The SMS text: at most [`SMS_MAX`] characters, in the GSM 7-bit alphabet's printable ASCII
/// (other characters become `?`, so one character is one septet and the count holds). What is
/// cut when it is too long is the address, never the number, the callback or the link.
pub fn sms(ev: &CallEvent, ack_url: Option<&str>) -> String {
    if is_announcement(ev) {
        // Its first two lines: what was not located, and from which device.
        let text = crate::notify::human_text(ev);
        let s = text.lines().take(2).collect::<Vec<_>>().join(" ");
        return s.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).take(SMS_MAX).collect();
    }
    let head = if ev.test_call { "TEST CALL" } else { "EMERGENCY CALL" };
    let mut where_ = place(ev);
    if let Some(erl) = &ev.location.erl {
        for (l, v) in [("fl", &erl.civic.flr), ("rm", &erl.civic.room)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty() && !where_.contains(v)) {
                where_.push_str(&format!(" {l} {v}"));
            }
        }
        let addr = erl.civic.one_line();
        if !addr.is_empty() && where_ != addr {
            where_.push_str(&format!("; {addr}"));
        }
    }
    let time = ev.at.format("%H:%M UTC");
    let front = format!("{head} {}: {} cb {}. ", ev.normalized, caller_name(ev), ev.caller.number);
    let back = match ack_url {
        Some(u) => format!(" {time}. Ack: {u}"),
        None => format!(" {time}."),
    };
    let room = SMS_MAX.saturating_sub(front.chars().count() + back.chars().count());
    let where_: String = where_.chars().take(room).collect();
    let s = format!("{front}{where_}{back}");
    s.chars().map(|c| if (' '..='~').contains(&c) { c } else { '?' }).take(SMS_MAX).collect()
}

/// Slack mrkdwn: `&`, `<` and `>` escaped (a caller cannot make a link or a mention).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Markdown (Mattermost, Teams): every character that could start markup backslash-escaped.
fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\`*_{}[]()#+-.!|<>~&".contains(c) {
            out.push('\\');
        }
        out.push(c);
        // A caller's "@channel" / "@all" / "@here" must not notify a whole team (Mattermost,
        // Teams): a word joiner after "@" breaks the mention and shows nothing.
        if c == '@' {
            out.push('\u{2060}');
        }
    }
    out
}

/// The alert's lines as (label, value); the headline has no label.
fn facts(ev: &CallEvent) -> (String, Vec<(String, String)>) {
    let text = crate::notify::human_text(ev);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let headline = lines.next().unwrap_or_default().to_string();
    let facts = lines
        .map(|l| match l.split_once(": ") {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (String::new(), l.to_string()),
        })
        .collect();
    (headline, facts)
}

/// A Slack incoming webhook's body.
pub fn slack(ev: &CallEvent, ack_url: Option<&str>) -> serde_json::Value {
    let (headline, facts) = facts(ev);
    let icon = if is_announcement(ev) { ":warning:" } else { ":rotating_light:" };
    let mut t = format!("{icon} *{}*\n", slack_escape(&headline));
    for (label, value) in facts {
        t.push_str(&format!("*{}:* {}\n", slack_escape(&label), slack_escape(&value)));
    }
    if let Some(u) = ack_url {
        t.push_str(&format!("<{}|Acknowledge> (stops the escalation)\n", slack_escape(u)));
    }
    serde_json::json!({ "text": t })
}

/// A Mattermost incoming webhook's body.
pub fn mattermost(ev: &CallEvent, ack_url: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "text": markdown_lines(ev, ack_url) })
}

fn markdown_lines(ev: &CallEvent, ack_url: Option<&str>) -> String {
    let (headline, facts) = facts(ev);
    let mut t = format!("#### {}\n", markdown_escape(&headline));
    for (label, value) in facts {
        t.push_str(&format!("**{}:** {}  \n", markdown_escape(&label), markdown_escape(&value)));
    }
    if let Some(u) = ack_url {
        t.push_str(&format!("[Acknowledge]({u}) (stops the escalation)\n"));
    }
    t
}

/// A Microsoft Teams webhook's body (Workflows and the incoming webhook connector): an Adaptive
/// Card (1.4) with the headline, the facts and an "Acknowledge" button.
pub fn teams(ev: &CallEvent, ack_url: Option<&str>) -> serde_json::Value {
    let (headline, facts) = facts(ev);
    let facts: Vec<_> = facts
        .into_iter()
        .map(|(t, v)| serde_json::json!({ "title": markdown_escape(&t), "value": markdown_escape(&v) }))
        .collect();
    let mut card = serde_json::json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            { "type": "TextBlock", "text": markdown_escape(&headline), "weight": "Bolder", "size": "Large",
              "color": if ev.test_call { "Default" } else if is_announcement(ev) { "Warning" } else { "Attention" }, "wrap": true },
            { "type": "FactSet", "facts": facts },
        ],
    });
    if let Some(u) = ack_url {
        card["actions"] = serde_json::json!([{ "type": "Action.OpenUrl", "title": "Acknowledge", "url": u }]);
    }
    serde_json::json!({
        "type": "message",
        "attachments": [{ "contentType": "application/vnd.microsoft.card.adaptive", "content": card }],
    })
}

/// The longest a caller-controlled part of the spoken alert may be (characters): a display
/// name or location text cannot make the call's prompt last minutes.
const SPOKEN_PART_MAX: usize = 120;

/// A number as a synthesiser should say it: digit by digit (`+1425` → `plus 1 4 2 5`), never
/// "one thousand four hundred…".
pub fn spoken_digits(number: &str) -> String {
    let words: Vec<String> = number
        .chars()
        .filter_map(|c| match c {
            '+' => Some("plus".to_string()),
            '*' => Some("star".to_string()),
            '#' => Some("hash".to_string()),
            c if c.is_ascii_alphanumeric() => Some(c.to_string()),
            _ => None,
        })
        .collect();
    words.join(" ")
}

/// Caller text fit to be spoken: control characters made spaces, at most
/// [`SPOKEN_PART_MAX`] characters. (It reaches espeak-ng on its standard input, not a shell
/// nor a command line, and without `-m` markup is read as text.)
fn spoken(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(SPOKEN_PART_MAX).collect();
    s.trim().to_string()
}

/// What the voice call says, once per repetition (Kari's Law / RAY BAUM'S Act): emergency (or
/// TEST, first and last, for a test call), the number dialled, the caller's name, the callback
/// number digit by digit, the dispatchable location (the ERL's name, the address, floor and
/// room), and how to acknowledge.
pub fn voice(ev: &CallEvent) -> String {
    let mut t = String::with_capacity(400);
    let number = spoken_digits(&ev.normalized);
    if ev.test_call {
        t.push_str(&format!("This is a test. Test call to {number}. Not an emergency. "));
    } else {
        t.push_str(&format!("Emergency. Emergency call to {number}. "));
    }
    let name = ev.caller.display_name.as_deref().map(spoken).filter(|n| !n.is_empty());
    t.push_str(&format!("Caller: {}. ", name.as_deref().unwrap_or("no name")));
    t.push_str(&format!("Callback number: {}. ", spoken_digits(&ev.caller.number)));
    let loc = &ev.location;
    if let Some(erl) = loc.erl.as_ref().filter(|e| !e.label.trim().is_empty()) {
        t.push_str(&format!("Location: {}. ", spoken(&erl.label)));
    }
    t.push_str(&format!("Address: {}. ", spoken(&loc.describe())));
    if let Some(erl) = &loc.erl {
        for (label, v) in [("Building", &erl.civic.bld), ("Floor", &erl.civic.flr), ("Room", &erl.civic.room)] {
            if let Some(v) = v.as_deref().map(spoken).filter(|v| !v.is_empty()) {
                t.push_str(&format!("{label} {v}. "));
            }
        }
    }
    if ev.test_call {
        t.push_str("This was a test. ");
    }
    t.push_str("Press 1 to acknowledge.");
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::{CallEventKind, Caller, CALL_EVENT_VERSION};
    use crate::location::{Erl, LocationSnapshot, LocationSource};

    pub(crate) fn call(name: &str, test: bool) -> CallEvent {
        let mut erl = Erl { label: "HQ, 2nd floor, room 210".into(), ..Default::default() };
        erl.civic.country = Some("US".into());
        erl.civic.a1 = Some("WA".into());
        erl.civic.a3 = Some("Redmond".into());
        erl.civic.hno = Some("1".into());
        erl.civic.rd = Some("Microsoft Way".into());
        erl.civic.flr = Some("2".into());
        erl.civic.room = Some("210".into());
        let mut location = LocationSnapshot::none();
        location.erl = Some(erl);
        location.source = LocationSource::SiteDefault;
        CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: "c-1".into(),
            seq: 1,
            at: chrono::DateTime::parse_from_rfc3339("2026-12-05T06:00:00Z").unwrap().into(),
            caller: Caller {
                number: "+14255550123".into(),
                display_name: Some(name.into()),
                uri: "sip:+14255550123@pbx".into(),
                source: "udp:192.0.2.1:5060".into(),
            },
            dialed: if test { "933".into() } else { "9911".into() },
            normalized: if test { "933".into() } else { "911".into() },
            test_call: test,
            policy: "us-hq".into(),
            site: Some("HQ".into()),
            location,
            route: None,
            kind: CallEventKind::Detected,
        }
    }

    #[test]
    fn a_user_entered_location_is_marked_in_every_text() {
        use crate::location::user_entered::{STALE_NOTE, VERIFY_NOTE};
        let mut ev = call("Alice Example", false);
        ev.location.source = LocationSource::Manual;
        ev.location.method = Some("Manual".into());
        ev.location.warnings = vec![VERIFY_NOTE.into()];
        assert!(subject(&ev).ends_with("(user-entered, verify with the caller)"), "{}", subject(&ev));
        assert!(sms(&ev, None).contains("user-entered, verify with the caller"), "{}", sms(&ev, None));
        let t = plain(&ev, None);
        assert!(t.contains(&format!("Location found by: {VERIFY_NOTE}, method Manual")), "{t}");
        assert!(html(&ev, None).contains(VERIFY_NOTE));
        assert!(slack(&ev, None).to_string().contains(VERIFY_NOTE));
        // A stale entry the call could not use is noted on the site default it fell back to.
        let mut ev = call("Alice Example", false);
        ev.location.warnings = vec![format!("{STALE_NOTE}: the network changed")];
        assert!(plain(&ev, None).contains(&format!("Location note: {STALE_NOTE}: the network changed")));
        assert!(!plain(&call("A", false), None).contains("user-entered"));
    }

    #[test]
    fn subject_and_text_carry_the_whole_alert_and_tests_say_test() {
        let ev = call("Alice Example", false);
        assert_eq!(subject(&ev), "EMERGENCY CALL 911 — Alice Example — HQ, 2nd floor, room 210");
        assert_eq!(subject(&call("Bob\r\nBcc: x", true)), "TEST CALL 933 — Bob  Bcc: x — HQ, 2nd floor, room 210");
        let t = plain(&ev, Some("https://core/ack/t"));
        for want in [
            "EMERGENCY CALL to 911",
            "Caller: Alice Example",
            "Callback number: +14255550123",
            "Floor: 2",
            "Room: 210",
            "Redmond",
            "Time: ",
            "https://core/ack/t",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
        assert!(plain(&call("A", true), None).starts_with("TEST CALL to 933"));
    }

    #[test]
    fn the_voice_prompt_says_emergency_caller_callback_and_location_and_tests_say_test() {
        let v = voice(&call("Alice Example", false));
        assert!(v.starts_with("Emergency. Emergency call to 9 1 1. "), "{v}");
        for want in [
            "Caller: Alice Example.",
            "Callback number: plus 1 4 2 5 5 5 5 0 1 2 3.",
            "Location: HQ, 2nd floor, room 210.",
            "Redmond",
            "Floor 2. Room 210.",
            "Press 1 to acknowledge.",
        ] {
            assert!(v.contains(want), "{want:?} in {v}");
        }
        assert!(!v.to_lowercase().contains("test"), "{v}");
        let t = voice(&call("Bob", true));
        assert!(t.starts_with("This is a test. Test call to 9 3 3. Not an emergency."), "{t}");
        assert!(t.contains("This was a test.") && !t.contains("Emergency call"), "{t}");
        // Caller text: no line breaks, bounded, whatever the caller sent.
        let long = voice(&call(&format!("Mallory\r\n{}", "x".repeat(5000)), false));
        assert!(!long.contains('\n') && long.len() < 1000, "{}", long.len());
        let mut nameless = call(" ", false);
        nameless.caller.number = "2100#".into();
        let n = voice(&nameless);
        assert!(n.contains("Caller: no name. Callback number: 2 1 0 0 hash."), "{n}");
    }

    #[test]
    fn html_escapes_caller_text() {
        let h = html(&call("<script>alert(1)</script> & 'x'", false), Some("https://core/ack/a?b=1&c=\"2\""));
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &apos;x&apos;"), "{h}");
        assert!(h.contains("href=\"https://core/ack/a?b=1&amp;c=&quot;2&quot;\""), "{h}");
        assert!(h.contains("<th align=\"left\">Room</th><td>210</td>"), "{h}");
    }

    /// A network element first seen unlocated, told to `lis.unlocated_channels`: what and
    /// what to do, never dressed as an emergency.
    #[test]
    fn an_unlocated_network_is_an_announcement_in_every_medium() {
        let mut ev = call("", false);
        ev.kind = CallEventKind::UnlocatedNetwork {
            element_kind: "subnet".into(),
            element: "10.9.9.0/24".into(),
            device: "ip 10.9.9.7".into(),
            asked: "call".into(),
            outcome: "none".into(),
        };
        assert_eq!(subject(&ev), "sosdesk: new unlocated subnet 10.9.9.0/24");
        let sms = sms(&ev, None);
        assert!(sms.starts_with("New unlocated subnet: 10.9.9.0/24 An emergency call from ip 10.9.9.7"), "{sms}");
        assert!(!sms.contains("EMERGENCY CALL"), "{sms}");
        let slack = slack(&ev, None)["text"].as_str().unwrap().to_string();
        assert!(slack.starts_with(":warning: *New unlocated subnet: 10.9.9.0/24*"), "{slack}");
        assert!(!html(&ev, None).contains("#b00020"));
    }

    #[test]
    fn sms_fits_two_messages_and_keeps_number_callback_and_link() {
        let link = format!("https://sosdesk.example.org:8443/ack/{}", "x".repeat(120));
        let mut ev = call(&"N".repeat(40), false);
        ev.location.erl.as_mut().unwrap().label = "L".repeat(400);
        let s = sms(&ev, Some(&link));
        assert!(s.chars().count() <= SMS_MAX, "{} chars", s.chars().count());
        assert!(s.starts_with("EMERGENCY CALL 911: ") && s.contains("cb +14255550123") && s.ends_with(&link), "{s}");
        let s = sms(&call("Zoë", true), None);
        assert!(s.starts_with("TEST CALL 933: Zo? cb +14255550123. HQ, 2nd floor, room 210; "), "{s}");
        assert!(s.bytes().all(|b| (b' '..=b'~').contains(&b)));
    }

    #[test]
    fn chat_formats_escape_markup() {
        let ev = call("<!channel> [x](http://evil) *b*", false);
        let s = slack(&ev, Some("https://core/ack/t"))["text"].as_str().unwrap().to_string();
        assert!(s.contains("&lt;!channel&gt;") && !s.contains("<!channel>"), "{s}");
        assert!(s.contains("<https://core/ack/t|Acknowledge>"), "{s}");
        let m = mattermost(&ev, None)["text"].as_str().unwrap().to_string();
        assert!(m.contains("\\[x\\]\\(http://evil\\)") && m.contains("\\*b\\*"), "{m}");
        let t = teams(&ev, Some("https://core/ack/t"));
        let card = &t["attachments"][0]["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["actions"][0]["url"], "https://core/ack/t");
        assert!(card["body"][1]["facts"].as_array().unwrap().iter().any(|f| f["title"] == "Callback number"));
    }
}
