//! The status bar's one line for the officer (issue 17, "status for humans"): "Ready — all
//! routes up", or the most serious thing that is wrong, in plain words, with its consequence
//! and what to do. The details (addresses, paths, the parts' own error texts) stay for the
//! admin, behind "Details".
//!
//! Derived from [`DeskStatus`] alone, so each wording is tested here without a window.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

use crate::model::{CoreState, DeskStatus, RouteHealth};

/// How the desk is, at a glance (the headline's colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, TS)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Emergency calls reach the desk and the emergency services; notes may remain.
    Ready,
    /// Something is wrong that the officer should know and someone should fix; calls still
    /// route and alert.
    Degraded,
    /// Emergency calls may not reach this desk or the emergency services.
    Down,
}

/// One thing that is wrong, as the officer reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Problem {
    pub level: Level,
    /// What is wrong and what it means ("No alarm sound — the alarm is visual only").
    pub text: String,
    /// What to do ("Check the speakers or headset"); empty when nothing is to be done.
    pub action: String,
}

/// The status line: the most serious problem (or "Ready"), and every other one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Headline {
    pub level: Level,
    pub text: String,
    pub action: String,
    /// Everything else wrong, most serious first, for "Details" (minor notes included).
    pub also: Vec<Problem>,
}

impl Default for Headline {
    fn default() -> Headline {
        Headline { level: Level::Ready, text: "Starting…".into(), action: String::new(), also: Vec::new() }
    }
}

fn problem(level: Level, text: impl Into<String>, action: impl Into<String>) -> Problem {
    Problem { level, text: text.into(), action: action.into() }
}

/// The headline of `s`.
pub fn of(s: &DeskStatus) -> Headline {
    let mut problems = core_problems(s);
    if s.core == CoreState::Running {
        problems.extend(route_problems(s));
        if let Some(r) = &s.remote {
            if !r.sip.ok {
                problems.push(problem(
                    Level::Degraded,
                    "The second alert path (SIP) to the core is not working — alerts arrive over the network connection only",
                    "Tell your administrator",
                ));
            }
        }
        if !s.store.ok {
            problems.push(problem(
                Level::Degraded,
                "The call record (audit log) is not being written — calls still route and alert",
                "Tell your administrator now",
            ));
        }
    }
    if let Some(when) = &s.restarted {
        let at = when.split(" — ").next().unwrap_or(when);
        problems.push(problem(
            Level::Degraded,
            format!("The core restarted at {at} — a call at that moment may have been cut off"),
            "Check the history for calls around that time",
        ));
    }
    if !s.audio.ok {
        problems.push(problem(
            Level::Degraded,
            "No alarm sound on this computer — the alarm is visual only",
            "Check the speakers or headset",
        ));
    }
    if let Some(l) = s.located.as_ref().filter(|l| l.calls_by_wiremap < l.calls || l.held_by_wiremap < l.held) {
        let (missed, of) = (l.calls - l.calls_by_wiremap, l.calls);
        let text = if of > 0 && missed > 0 {
            format!("{missed} of {of} calls in the last {} days were not located by the wiremap", l.days)
        } else {
            format!("Some devices asking for their location in the last {} days were not in the wiremap", l.days)
        };
        problems.push(problem(Level::Ready, text, "Tell your administrator (sosdesk lis unlocated)"));
    }
    if !s.notifications.ok {
        problems.push(problem(
            Level::Ready,
            "No desktop pop-ups (no notification service) — alerts still come to the front of the screen",
            "",
        ));
    }
    if !s.tray.ok {
        problems.push(problem(Level::Ready, "No tray icon — the window itself shows every alert", ""));
    }
    // Most serious first; among equals, in the order above (the core before its parts).
    problems.sort_by_key(|p| std::cmp::Reverse(p.level));
    match problems.first() {
        Some(first) if first.level > Level::Ready => {
            let first = problems.remove(0);
            Headline { level: first.level, text: first.text, action: first.action, also: problems }
        }
        _ => Headline { level: Level::Ready, text: ready_text(s), action: String::new(), also: problems },
    }
}

fn core_problems(s: &DeskStatus) -> Vec<Problem> {
    let remote = s.remote.is_some();
    match s.core {
        CoreState::Running => Vec::new(),
        CoreState::NotConfigured => vec![problem(
            Level::Down,
            "Not set up — no emergency call reaches this desk",
            "Choose the core's config file or a remote desk file below",
        )],
        CoreState::Starting if remote => vec![problem(Level::Degraded, "Connecting to the core…", "")],
        CoreState::Starting => vec![problem(Level::Degraded, "Starting the core…", "")],
        CoreState::Failed if remote && s.core_detail.contains("refused the credentials") => vec![problem(
            Level::Down,
            "The core refused this desk's account — no alert reaches this desk",
            "Tell your administrator: the desk's username or password is wrong",
        )],
        CoreState::Failed if remote => vec![problem(
            Level::Down,
            "The core is not working — emergency calls may not be routed or reach this desk",
            "Tell your administrator now",
        )],
        CoreState::Failed => vec![problem(
            Level::Down,
            "The core is not running — emergency calls are not routed through this desk",
            "Tell your administrator now (Details say why)",
        )],
        CoreState::Disconnected => vec![problem(
            Level::Down,
            "NOT CONNECTED to the core — alerts may not reach this desk",
            "Check this computer's network; the desk reconnects by itself",
        )],
    }
}

fn route_problems(s: &DeskStatus) -> Vec<Problem> {
    let down = |name: &str| s.routes.iter().any(|r| r.name == name && r.health == RouteHealth::Failing);
    let failing: Vec<&str> = s.routes.iter().map(|r| r.name.as_str()).filter(|n| down(n)).collect();
    if failing.is_empty() {
        return Vec::new();
    }
    // A policy whose every route is down: its emergency calls cannot get through at all. Without
    // the policies (not known yet), every route down says the same.
    let stranded: Vec<&str> = if s.policy_routes.is_empty() {
        if failing.len() == s.routes.len() {
            vec![""]
        } else {
            Vec::new()
        }
    } else {
        s.policy_routes
            .iter()
            .filter(|p| !p.routes.is_empty() && p.routes.iter().all(|r| down(r)))
            .map(|p| p.policy.as_str())
            .collect()
    };
    let text = match stranded.as_slice() {
        [] if failing.len() == 1 => format!("Route {} is down — calls use the next route of their policy", failing[0]),
        [] => format!("Routes {} are down — calls use the next route of their policy", failing.join(", ")),
        [""] => "Every route to the emergency services is DOWN — emergency calls cannot get through".to_string(),
        [one] => format!("No route up for {one} — its emergency calls cannot get through"),
        many => format!("No route up for {} — their emergency calls cannot get through", many.join(", ")),
    };
    if stranded.is_empty() {
        vec![problem(Level::Degraded, text, "Tell your telecom administrator")]
    } else {
        vec![problem(Level::Down, text, "Call your telecom administrator now")]
    }
}

fn ready_text(s: &DeskStatus) -> String {
    let reached = s.routes.iter().filter(|r| r.health == RouteHealth::Reachable).count();
    let routes = match (s.routes.len(), reached) {
        (0, _) if s.remote.is_some() => "",
        (0, _) => " — no route configured",
        (n, r) if r == n => " — all routes up",
        (_, 0) => " — routes not checked yet",
        _ => " — routes up, others not checked yet",
    };
    let connected = if s.remote.is_some() { " — connected to the core" } else { "" };
    format!("Ready{connected}{routes}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlarmState, Component, JoinInfo, LocatedShare, PolicyRoutes, RemoteStatus, RouteStatus};

    fn ready() -> DeskStatus {
        let route = |name: &str| RouteStatus {
            name: name.into(),
            target: "udp:127.0.0.1:5070".into(),
            health: RouteHealth::Reachable,
            detail: "answered 12:00:00".into(),
            since: None,
        };
        DeskStatus {
            core: CoreState::Running,
            core_detail: "listening udp 127.0.0.1:5060".into(),
            config_path: Some("/etc/sosdesk/sosdesk.toml".into()),
            listening: vec!["udp 127.0.0.1:5060".into()],
            held: None,
            store: Component::ok("/var/lib/sosdesk/sosdesk.db"),
            routes: vec![route("provider-primary"), route("provider-secondary")],
            audio: Component::ok("alarm ready"),
            notifications: Component::ok("no notification sent yet"),
            tray: Component::ok("tray icon shown"),
            alarm: AlarmState::Off,
            officer: "Officer A".into(),
            unacknowledged: 0,
            join: JoinInfo::default(),
            remote: None,
            restarted: None,
            located: None,
            policy_routes: vec![
                PolicyRoutes {
                    policy: "us-hq".into(),
                    routes: vec!["provider-primary".into(), "provider-secondary".into()],
                },
                PolicyRoutes { policy: "uk-london".into(), routes: vec!["provider-secondary".into()] },
            ],
            headline: Headline::default(),
        }
    }

    /// No main-view text carries an address, a path or a raw error.
    fn plain(h: &Headline) {
        for t in [&h.text, &h.action] {
            assert!(!t.contains('/') && !t.contains("127.0.0.1") && !t.contains("os error"), "{t:?}");
        }
    }

    #[test]
    fn ready_says_so_with_the_routes() {
        let h = of(&ready());
        assert_eq!((h.level, h.text.as_str()), (Level::Ready, "Ready — all routes up"));
        assert!(h.also.is_empty());
        let mut s = ready();
        s.routes.iter_mut().for_each(|r| r.health = RouteHealth::Unknown);
        assert_eq!(of(&s).text, "Ready — routes not checked yet");
        s.remote = Some(RemoteStatus { connected: true, sip: Component::ok("registered"), ..Default::default() });
        assert_eq!(of(&s).text, "Ready — connected to the core — routes not checked yet");
    }

    #[test]
    fn each_failure_in_plain_words_with_what_to_do() {
        type Case = (fn(&mut DeskStatus), Level, &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (
                |s| s.routes[1].health = RouteHealth::Failing,
                Level::Down,
                "No route up for uk-london — its emergency calls cannot get through",
                "Call your telecom administrator now",
            ),
            (
                |s| s.routes[0].health = RouteHealth::Failing,
                Level::Degraded,
                "Route provider-primary is down — calls use the next route of their policy",
                "Tell your telecom administrator",
            ),
            (
                |s| s.routes.iter_mut().for_each(|r| r.health = RouteHealth::Failing),
                Level::Down,
                "No route up for us-hq, uk-london — their emergency calls cannot get through",
                "Call your telecom administrator now",
            ),
            (
                |s| {
                    s.policy_routes.clear();
                    s.routes.iter_mut().for_each(|r| r.health = RouteHealth::Failing);
                },
                Level::Down,
                "Every route to the emergency services is DOWN — emergency calls cannot get through",
                "Call your telecom administrator now",
            ),
            (
                |s| s.store = Component::failed("database is locked (code 5): /var/lib/sosdesk/sosdesk.db"),
                Level::Degraded,
                "The call record (audit log) is not being written — calls still route and alert",
                "Tell your administrator now",
            ),
            (
                |s| s.audio = Component::failed("no default output device: the alarm is visual only"),
                Level::Degraded,
                "No alarm sound on this computer — the alarm is visual only",
                "Check the speakers or headset",
            ),
            (
                |s| {
                    s.core = CoreState::Failed;
                    s.core_detail = "/etc/sosdesk/sosdesk.toml line 3: unknown field".into();
                },
                Level::Down,
                "The core is not running — emergency calls are not routed through this desk",
                "Tell your administrator now (Details say why)",
            ),
            (
                |s| {
                    s.core = CoreState::Disconnected;
                    s.remote = Some(RemoteStatus::default());
                },
                Level::Down,
                "NOT CONNECTED to the core — alerts may not reach this desk",
                "Check this computer's network; the desk reconnects by itself",
            ),
            (
                |s| s.core = CoreState::NotConfigured,
                Level::Down,
                "Not set up — no emergency call reaches this desk",
                "Choose the core's config file or a remote desk file below",
            ),
        ];
        for (break_it, level, text, action) in cases {
            let mut s = ready();
            break_it(&mut s);
            let h = of(&s);
            assert_eq!((h.level, h.text.as_str(), h.action.as_str()), (level, text, action));
            plain(&h);
        }
    }

    #[test]
    fn a_missing_notification_daemon_is_a_note_not_a_warning() {
        let mut s = ready();
        s.notifications = Component::failed(
            "failed to connect to `unix:path=/run/user/0/bus`: No such file or directory (os error 2)",
        );
        let h = of(&s);
        assert_eq!((h.level, h.text.as_str()), (Level::Ready, "Ready — all routes up"));
        assert_eq!(h.also.len(), 1);
        assert_eq!(
            h.also[0].text,
            "No desktop pop-ups (no notification service) — alerts still come to the front of the screen"
        );
        assert!(!h.also[0].text.contains("unix:path"));
    }

    #[test]
    fn calls_the_wiremap_missed_are_a_note() {
        let mut s = ready();
        s.located = Some(LocatedShare { days: 7, calls: 20, calls_by_wiremap: 18, held: 4, held_by_wiremap: 4 });
        let h = of(&s);
        assert_eq!(h.level, Level::Ready);
        assert_eq!(h.also[0].text, "2 of 20 calls in the last 7 days were not located by the wiremap");
        s.located = Some(LocatedShare { days: 7, calls: 20, calls_by_wiremap: 20, held: 4, held_by_wiremap: 4 });
        assert!(of(&s).also.is_empty());
    }

    #[test]
    fn the_most_serious_comes_first_and_the_rest_follow() {
        let mut s = ready();
        s.audio = Component::failed("no device");
        s.routes.iter_mut().for_each(|r| r.health = RouteHealth::Failing);
        s.notifications = Component::failed("no daemon");
        let h = of(&s);
        assert_eq!(h.level, Level::Down);
        assert!(h.text.starts_with("No route up for us-hq, uk-london"), "{}", h.text);
        let also: Vec<Level> = h.also.iter().map(|p| p.level).collect();
        assert_eq!(also, [Level::Degraded, Level::Ready]);
    }
}
