//! Reload without restart (issue 14 item 6): a new config applies to new calls while a live call
//! goes on; a bad one is refused (file, key, reason) and the running one kept; both are audited.
//! Through the core's own `reload`, and through the process: `sosdesk serve --pid-file` and
//! `sosdesk reload` (SIGHUP).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support;

use sosdesk::events::CallEventKind;
use support::lab::{free_port, Lab, LabFiles};

/// The lab's primary provider moved to `new_port` (a changed route: a new one under its name).
fn move_primary(config: &str, old_port: u16, new_port: u16) -> String {
    let old = format!("address = \"127.0.0.1:{old_port}\"\ntransport = \"udp\"\ndomain = \"127.0.0.1:{old_port}\"");
    assert!(config.contains(&old), "the lab's primary route is where the test expects it");
    config.replace(&old, &old.replace(&old_port.to_string(), &new_port.to_string()))
}

#[test]
fn a_reload_during_a_live_call_moves_the_next_call_and_the_live_call_goes_on() {
    let mut lab = Lab::start();
    let original = std::fs::read_to_string(&lab.config_path).unwrap();
    let primary = lab.uas("primary", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    // The live call: held long enough for the reload and the next call (a budget, not a wait).
    let live = lab.uac("live", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "8000"]);
    let mut seen = Vec::new();
    let answered = lab.wait_for(&mut seen, "answered", |e| matches!(e.kind, CallEventKind::Answered));
    let core = lab.core.as_ref().unwrap();

    // A bad file is refused, naming file, key and reason; the running config is kept.
    let bad = original.replace("pstn_usage = \"emergency\"", "pstn_usage = \"no-such-usage\"");
    assert_ne!(bad, original);
    std::fs::write(&lab.config_path, &bad).unwrap();
    let refused = lab.rt.block_on(core.reload()).expect_err("a policy naming no PSTN usage is refused");
    let said = refused.to_string();
    assert!(said.contains("lab.toml") && said.contains("no-such-usage"), "{said}");

    // A route moved to a DNS name this core has never resolved would fail every new call until
    // a restart: refused, saying so, and the running config kept.
    let by_name = original
        .replace(&format!("address = \"127.0.0.1:{}\"", lab.ports.primary), "address = \"sbc.provider.invalid\"");
    assert_ne!(by_name, original);
    std::fs::write(&lab.config_path, &by_name).unwrap();
    let refused = lab.rt.block_on(core.reload()).expect_err("a route by a new DNS name is refused");
    let said = refused.to_string();
    assert!(said.contains("sbc.provider.invalid") && said.contains("restart sosdesk"), "{said}");

    // The primary route moves to a new provider: the next call goes there.
    let new_port = free_port();
    std::fs::write(&lab.config_path, move_primary(&original, lab.ports.primary, new_port)).unwrap();
    let moved = lab.uas("moved", "provider_answer.xml", "127.0.0.1", new_port, &[]);
    let done = lab.rt.block_on(core.reload()).expect("the new config is applied");
    assert_eq!(done.routes.added, vec!["provider-primary".to_string()], "{done}");
    assert_eq!(done.routes.retired, vec!["provider-primary".to_string()], "{done}");
    assert!(done.restart_only.is_empty(), "{done}");

    lab.uac("next", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911", "-set", "hold_ms", "100"]).wait().assert_ok();
    let m = moved.wait();
    m.assert_ok();
    assert_eq!(m.logged("invite.ruri"), Some(format!("sip:911@127.0.0.1:{new_port};user=phone")));

    // The live call was never touched: it ends when its caller hangs up, through its provider.
    live.wait().assert_ok();
    primary.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    let live_id = &answered.call_id;
    let ended = events.iter().find(|e| &e.call_id == live_id && matches!(e.kind, CallEventKind::Ended { .. }));
    let next_routed = events.iter().find(|e| &e.call_id != live_id && matches!(e.kind, CallEventKind::Routed));
    let (ended, next_routed) = (ended.expect("the live call ended"), next_routed.expect("the next call routed"));
    assert!(next_routed.at < ended.at, "the next call was routed while the live call was up");
    assert!(!events.iter().any(|e| &e.call_id == live_id && matches!(e.kind, CallEventKind::Failed { .. })));

    // Both reloads are in the audit log, which verifies.
    let out = lab.cli_store(&["audit", "export", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.contains("config-refused") && csv.contains("no-such-usage"), "{csv}");
    assert!(csv.contains("config-reloaded") && csv.contains("provider-primary"), "{csv}");
    lab.assert_audit_verifies();
}

#[test]
fn sosdesk_reload_signals_the_served_core_and_refuses_a_bad_file_before_asking() {
    let files = LabFiles::write(|c| c);
    let config = files.config_path.to_str().unwrap().to_string();
    let pid_file = files.dir.path().join("sosdesk.pid");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_sosdesk"))
        .args(["serve", "--config", &config, "--pid-file"])
        .arg(&pid_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sosdesk serve");
    let mut out = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut next_line = |what: &str| {
        // Each line the core prints, in order; the pipe closes if it exits.
        for line in out.by_ref() {
            let line = line.expect("serve's output");
            if line.contains(what) {
                return line;
            }
        }
        panic!("sosdesk serve ended without printing {what:?}");
    };
    next_line("sosdesk serving");
    let reload = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_sosdesk"))
            .args(["reload", "--config", file, "--pid-file"])
            .arg(&pid_file)
            .output()
            .expect("sosdesk reload")
    };

    let original = std::fs::read_to_string(&config).unwrap();
    let bad = files.dir.path().join("bad.toml");
    std::fs::write(&bad, original.replace("default_policy = \"us-hq\"", "default_policy = \"nowhere\"")).unwrap();
    let r = reload(bad.to_str().unwrap());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("default_policy") && err.contains("not reloaded"), "{err}");

    std::fs::write(&config, move_primary(&original, files.ports.primary, free_port())).unwrap();
    let r = reload(&config);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let said = next_line("reloaded");
    assert!(said.contains("routes new or changed: provider-primary"), "{said}");

    // SIGTERM: the core stops cleanly and removes its pid file.
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(serve.wait().unwrap().success());
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}
