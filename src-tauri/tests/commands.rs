//! The desk's command layer on Tauri's mock runtime (no webview, no display), over a real core
//! (real SQLite file, real UDP) with sipp as the emergency-services provider: what the UI's
//! `invoke` calls return, what reaches the audit store, and what the window is asked to do.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sosdesk_desk::desk::{Desk, Ui};
use sosdesk_desk::model::{ActiveCall, DeskStatus};
use sosdesk_desk::settings::SettingsFile;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, mock_context, noop_assets, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::{Manager, WebviewWindow, WebviewWindowBuilder};

/// Records what the desk asked of the window system.
#[derive(Default)]
struct RecordingUi {
    log: Mutex<Vec<String>>,
}

impl Ui for RecordingUi {
    fn alert(&self, call: &ActiveCall) {
        self.log.lock().unwrap().push(format!("alert {} {}", call.call_id, call.last_seq));
    }
    fn alert_removed(&self, call_id: &str) {
        self.log.lock().unwrap().push(format!("removed {call_id}"));
    }
    fn status(&self, _: &DeskStatus) {}
    fn raise(&self, on_top: bool) {
        self.log.lock().unwrap().push(format!("raise on_top={on_top}"));
    }
    fn release_on_top(&self) {
        self.log.lock().unwrap().push("release_on_top".into());
    }
    fn tray(&self, active: bool, _: &str) {
        self.log.lock().unwrap().push(format!("tray active={active}"));
    }
    fn restart_app(&self, reason: &str) {
        self.log.lock().unwrap().push(format!("restart_app {reason}"));
    }
}

fn free_port() -> u16 {
    loop {
        let p = 20_000 + (rand_u16() % 12_000);
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (t ^ (std::process::id() << 7)) as u16
}

struct Lab {
    dir: tempfile::TempDir,
    config: PathBuf,
    provider_port: u16,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut lab = std::fs::read_to_string(repo.join("examples/lab.toml")).unwrap();
        let provider_port = free_port();
        for (old, new) in [
            (5060, free_port()),
            (5070, provider_port),
            (5071, free_port()),
            (5080, free_port()),
            (5090, free_port()),
            (8080, free_port()),
            (8443, free_port()),
        ] {
            lab = lab.replace(&format!("127.0.0.1:{old}"), &format!("127.0.0.1:{new}"));
        }
        lab = lab
            .replace("path = \"../sosdesk-lab.db\"", &format!("path = \"{}\"", dir.path().join("desk.db").display()));
        lab = lab.replace("msag = \"msag.csv\"", &format!("msag = \"{}\"", repo.join("examples/msag.csv").display()));
        let config = dir.path().join("lab.toml");
        std::fs::write(&config, lab).unwrap();
        Lab { dir, config, provider_port }
    }

    /// sipp answering `calls` emergency calls on the provider route.
    fn provider(&self, calls: u32) -> Child {
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sipp/provider_answer.xml");
        Command::new("sipp")
            .args(["-sf", scenario.to_str().unwrap(), "-i", "127.0.0.1", "-p", &self.provider_port.to_string()])
            .args(["-m", &calls.to_string(), "-timeout", "60", "-timeout_error", "-nostdin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp (apt-get install sip-tester)")
    }
}

fn invoke(w: &WebviewWindow<tauri::test::MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    let req = InvokeRequest {
        cmd: cmd.into(),
        callback: CallbackFn(0),
        error: CallbackFn(1),
        url: "tauri://localhost".parse().unwrap(),
        body: InvokeBody::Json(args),
        headers: Default::default(),
        invoke_key: INVOKE_KEY.to_string(),
    };
    get_ipc_response(w, req).map(|b| b.deserialize::<Value>().unwrap())
}

/// Polls `f` until it gives a value (a condition, not a pause), at most 30 s.
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn commands_drive_a_real_core_from_alert_to_audited_acknowledgement_and_history() {
    let lab = Lab::new();
    let ui = Arc::new(RecordingUi::default());
    let settings = SettingsFile::in_dir(&lab.dir.path().join("settings"));
    settings
        .save(&sosdesk_desk::model::Settings { officer_name: "Officer Mock".into(), ..Default::default() })
        .unwrap();
    let notified = Arc::new(Mutex::new(Vec::new()));
    let n2 = notified.clone();
    let desk = Desk::new(
        Box::new(ui.clone()),
        settings,
        lab.dir.path().join("exports"),
        Arc::new(move |c: &ActiveCall| {
            n2.lock().unwrap().push(c.call_id.clone());
            Err("no notification daemon in this test".to_string())
        }),
    );
    let app = mock_builder().invoke_handler(sosdesk_desk::desk_commands!()).build(mock_context(noop_assets())).unwrap();
    app.manage(desk.clone());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default()).build().unwrap();

    // Not configured yet: the UI is told so, and a bad config is refused with its reason.
    let st = invoke(&w, "get_status", json!({})).unwrap();
    assert_eq!(st["core"], "not-configured");
    let bad = lab.dir.path().join("bad.toml");
    std::fs::write(&bad, "[sip]\nudp = \"not an address\"\n").unwrap();
    let err = invoke(
        &w,
        "save_settings",
        json!({"settings": {"officer_name": "Officer Mock", "theme": "dark", "config_path": bad}}),
    )
    .unwrap_err();
    assert!(err["message"].as_str().unwrap().contains("invalid config"), "{err}");
    assert_eq!(err["kind"], "config", "{err}");
    assert_eq!(invoke(&w, "get_status", json!({})).unwrap()["core"], "failed");

    // A good config starts the core.
    let saved = invoke(
        &w,
        "save_settings",
        json!({"settings": {"officer_name": " Officer Mock ", "theme": "dark", "config_path": lab.config}}),
    )
    .unwrap();
    assert_eq!(saved["officer_name"], "Officer Mock");
    let st = invoke(&w, "get_status", json!({})).unwrap();
    assert_eq!(st["core"], "running", "{st}");
    let core_udp: SocketAddr = st["listening"][0].as_str().unwrap().trim_start_matches("udp ").parse().unwrap();

    // An emergency call (the desk's own SIP UAC dialling 911) answered by sipp.
    let mut provider = lab.provider(2);
    let result = tauri::async_runtime::block_on(sosdesk_desk::testcall::place(core_udp, "911", Duration::ZERO));
    assert!(result.as_ref().is_ok_and(|r| r.contains("answered")), "{result:?}");
    let calls = until("the call on the board as ended", || {
        let v = invoke(&w, "get_active_calls", json!({})).unwrap();
        (v[0]["state"] == "ended").then_some(v)
    });
    let call_id = calls[0]["call_id"].as_str().unwrap().to_string();
    assert_eq!(calls[0]["test_call"], false);
    assert_eq!(calls[0]["alarming"], true);
    assert_eq!(calls[0]["location"]["erl"]["rd"], "Microsoft Way");
    {
        let log = ui.log.lock().unwrap();
        assert!(log.contains(&"raise on_top=true".to_string()), "{log:?}");
        assert!(log.contains(&"tray active=true".to_string()), "{log:?}");
    }
    let st = invoke(&w, "get_status", json!({})).unwrap();
    assert_eq!(st["unacknowledged"], 1);
    assert_ne!(st["alarm"], "off");
    assert_eq!(until("the notification attempt", || notified.lock().unwrap().first().cloned()), call_id);
    until("the failed notification in the status", || {
        (invoke(&w, "get_status", json!({})).unwrap()["notifications"]["ok"] == false).then_some(())
    });

    // Dismissing an unacknowledged emergency is refused; acknowledging it is audited.
    assert!(invoke(&w, "dismiss", json!({"callId": call_id})).is_err());
    assert!(invoke(&w, "acknowledge", json!({"callId": "no-such-call"})).is_err());
    // Refusals are typed: a kind the UI can act on, and the officer's text.
    let refused = invoke(&w, "dismiss", json!({"callId": call_id})).unwrap_err();
    assert_eq!(refused["kind"], "invalid", "{refused}");
    let unknown = invoke(&w, "acknowledge", json!({"callId": "no-such-call"})).unwrap_err();
    assert_eq!(unknown["kind"], "no-such-call", "{unknown}");
    assert_eq!(unknown["message"], "no call no-such-call on the board", "{unknown}");
    // The call's recording is audited when its media task has finished the file, independently
    // of the officer (a race the acknowledgement lost once in CI): wait for it, so that the
    // acknowledgement below is the call's last event.
    until("the recording in the audit log", || {
        let d = invoke(&w, "call_detail", json!({"callId": call_id})).ok()?;
        d["events"].as_array()?.iter().any(|e| e["kind"] == "recorded").then_some(())
    });
    let acked = invoke(&w, "acknowledge", json!({"callId": call_id})).unwrap();
    assert_eq!(acked["acknowledged_by"], "Officer Mock");
    assert_eq!(acked["alarming"], false);
    let st = invoke(&w, "get_status", json!({})).unwrap();
    assert_eq!((st["unacknowledged"].as_u64(), st["alarm"].as_str()), (Some(0), Some("off")));
    assert!(ui.log.lock().unwrap().contains(&"release_on_top".to_string()));

    // The audit log has it, in the call's own sequence, with an intact hash chain.
    let detail = invoke(&w, "call_detail", json!({"callId": call_id})).unwrap();
    assert_eq!(detail["chain"]["ok"], true, "{}", detail["chain"]);
    let kinds: Vec<&str> = detail["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.last(), Some(&"acknowledged"), "{kinds:?}");
    assert!(kinds.contains(&"answered") && kinds.contains(&"ended"), "{kinds:?}");
    let seqs: Vec<u64> = detail["events"].as_array().unwrap().iter().map(|e| e["call_seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "call_seq must run on without gaps: {seqs:?}");
    assert_eq!(detail["summary"]["acknowledged_by"], "Officer Mock");

    // Now it may leave the board.
    invoke(&w, "dismiss", json!({"callId": call_id})).unwrap();
    assert_eq!(invoke(&w, "get_active_calls", json!({})).unwrap(), json!([]));

    // A test call through the command: shown, never alarming.
    let r = invoke(&w, "place_test_call", json!({})).unwrap();
    assert!(r.as_str().unwrap().contains("test call 933"), "{r}");
    let test = until("the test call on the board", || {
        let v = invoke(&w, "get_active_calls", json!({})).unwrap();
        v.as_array().unwrap().iter().find(|c| c["test_call"] == true).cloned()
    });
    assert_eq!(test["alarming"], false);
    assert_eq!(invoke(&w, "get_status", json!({})).unwrap()["alarm"], "off");
    assert_eq!(provider.wait().unwrap().code(), Some(0));

    // History: search, filters, export.
    let all = invoke(&w, "search_history", json!({"filter": {"include_tests": true}})).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);
    let no_tests = invoke(&w, "search_history", json!({"filter": {"include_tests": false}})).unwrap();
    assert_eq!(no_tests.as_array().unwrap().len(), 1);
    let by_place = invoke(&w, "search_history", json!({"filter": {"text": "redmond", "include_tests": true}})).unwrap();
    assert_eq!(by_place.as_array().unwrap().len(), 2);
    let by_name =
        invoke(&w, "search_history", json!({"filter": {"text": "desk test", "include_tests": false}})).unwrap();
    assert_eq!(by_name[0]["call_id"], call_id.as_str());
    let failed = invoke(&w, "search_history", json!({"filter": {"outcome": "failed", "include_tests": true}})).unwrap();
    assert_eq!(failed, json!([]));
    let tomorrow = (chrono::Local::now() + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    let future =
        invoke(&w, "search_history", json!({"filter": {"from_date": tomorrow, "include_tests": true}})).unwrap();
    assert_eq!(future, json!([]));
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let today_only =
        invoke(&w, "search_history", json!({"filter": {"from_date": today, "to_date": today, "include_tests": true}}))
            .unwrap();
    assert_eq!(today_only.as_array().unwrap().len(), 2);
    assert!(invoke(&w, "search_history", json!({"filter": {"from_date": "22/11/2026"}})).is_err());
    let bad_date = invoke(&w, "search_history", json!({"filter": {"from_date": "22/11/2026"}})).unwrap_err();
    assert_eq!(bad_date["kind"], "invalid", "{bad_date}");
    let path = invoke(&w, "export_history_csv", json!({"filter": {"include_tests": false}})).unwrap();
    let csv = std::fs::read_to_string(path.as_str().unwrap()).unwrap();
    assert!(csv.starts_with("seq,at,call_id"), "{csv}");
    assert!(csv.contains(&call_id) && csv.contains("acknowledged"));
    assert!(!csv.contains(test["call_id"].as_str().unwrap()), "a test call leaked into a no-tests export");

    tauri::async_runtime::block_on(desk.shutdown());
}

/// Issue 19, "the desk stays honest": the core this desk runs is watched. Its engine panics:
/// the desk restarts the core in place, says so, and the next emergency call routes. Its engine
/// hangs (a thread that never returns, which nothing in the process can stop): the desk says
/// that no call can be routed and restarts the app (`Ui::restart_app`; the real app execs
/// itself, which a test process cannot).
#[test]
fn an_embedded_core_that_panics_is_restarted_and_one_that_hangs_restarts_the_app() {
    let lab = Lab::new();
    let ui = Arc::new(RecordingUi::default());
    let desk = Desk::new(
        Box::new(ui.clone()),
        SettingsFile::in_dir(&lab.dir.path().join("settings")),
        lab.dir.path().join("exports"),
        Arc::new(|_: &ActiveCall| Err("no notification daemon in this test".to_string())),
    );
    let app = mock_builder().invoke_handler(sosdesk_desk::desk_commands!()).build(mock_context(noop_assets())).unwrap();
    app.manage(desk.clone());
    let w = WebviewWindowBuilder::new(&app, "main", Default::default()).build().unwrap();
    tauri::async_runtime::block_on(desk.start_core(&lab.config)).unwrap();
    let st = invoke(&w, "get_status", json!({})).unwrap();
    assert_eq!((st["core"].as_str(), &st["restarted"]), (Some("running"), &Value::Null), "{st}");

    // A bug panics the engine task.
    let core = tauri::async_runtime::block_on(desk.core()).unwrap();
    core.handle().inject_fault(sosdesk::core_handle::Fault::Panic);
    drop(core);
    let st = until("the core restarted", || {
        let st = invoke(&w, "get_status", json!({})).unwrap();
        (st["core"] == "running" && st["restarted"].as_str().is_some_and(|r| r.contains("restarted"))).then_some(st)
    });
    let said = st["restarted"].as_str().unwrap();
    assert!(said.contains("the call engine stopped after an internal error; the core was restarted"), "{said}");

    // The restarted core routes the next emergency call, and the desk alerts.
    let core_udp: SocketAddr = st["listening"][0].as_str().unwrap().trim_start_matches("udp ").parse().unwrap();
    let mut provider = lab.provider(1);
    let result = tauri::async_runtime::block_on(sosdesk_desk::testcall::place(core_udp, "911", Duration::ZERO));
    assert!(result.as_ref().is_ok_and(|r| r.contains("answered")), "{result:?}");
    assert_eq!(provider.wait().unwrap().code(), Some(0));
    until("the call on the board", || {
        let v = invoke(&w, "get_active_calls", json!({})).unwrap();
        v.as_array().unwrap().iter().any(|c| c["test_call"] == false && c["alarming"] == true).then_some(())
    });

    // The engine stops turning for good: found by the watchdog, said, and the app restarted.
    let core = tauri::async_runtime::block_on(desk.core()).unwrap();
    core.handle().inject_fault(sosdesk::core_handle::Fault::Hang);
    // Said at once; the app is restarted only when the stall lasts.
    let st = until("the stall said", || {
        let st = invoke(&w, "get_status", json!({})).unwrap();
        (st["core"] == "failed").then_some(st)
    });
    assert!(st["core_detail"].as_str().unwrap().contains("the call engine is not answering"), "{st}");
    assert!(!ui.log.lock().unwrap().iter().any(|l| l.starts_with("restart_app")), "restarted at the first stall");
    let reason = until("the app asked to restart", || {
        ui.log.lock().unwrap().iter().find_map(|l| l.strip_prefix("restart_app ").map(str::to_string))
    });
    assert!(
        reason.ends_with("the call engine stopped answering; the desk app and its core were restarted"),
        "{reason}"
    );
    let st = invoke(&w, "get_status", json!({})).unwrap();
    assert_eq!(st["core"], "failed", "{st}");
    assert!(st["core_detail"].as_str().unwrap().contains("no call can be routed"), "{st}");
    // The hung thread ends only with the process (as the real app's exec ends it).
    std::mem::forget(core);
}
