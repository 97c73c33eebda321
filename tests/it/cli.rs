//! The `sosdesk` command as an admin uses it: check-config, serve (a real process, stopped with
//! SIGTERM), history, audit verify (including a tampered row) and audit export — the last on a
//! SQLite file and on PostgreSQL.

use crate::support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use support::lab::{free_port, repo, scenario, without_notifications};
use support::store::{store_test, TestDb};

fn sosdesk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sosdesk"))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lab config with its HTTP listeners on free ports, the audit store beside the config, and
/// no notification IM (its attempts would add audit rows; tests/it/notifications.rs covers it).
fn lab_config() -> String {
    let text = std::fs::read_to_string(repo().join("examples/lab.toml"))
        .unwrap()
        .replace("127.0.0.1:8080\"", &format!("127.0.0.1:{}\"", free_port()))
        .replace("127.0.0.1:8443\"", &format!("127.0.0.1:{}\"", free_port()))
        .replace("path = \"../sosdesk-lab.db\"", "path = \"audit.db\"");
    without_notifications(&text)
}

#[test]
fn check_config_accepts_the_lab_and_names_file_key_and_reason_for_bad_ones() {
    let lab = repo().join("examples/lab.toml");
    let out = sosdesk().arg("check-config").arg(&lab).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK (3 policies, 3 routes, 3 sites"), "{}", text(&out.stdout));

    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(&lab).unwrap();
    let cases = [
        (
            good.replace(
                "routes = [\"provider-primary\", \"provider-secondary\"]",
                "routes = [\"provider-primary\", \"nowhere\"]",
            ),
            "key `pstn_usage[0].routes[1]`: no route named \"nowhere\"",
        ),
        (
            good.replace("masks = [\"112\"]", "masks = [\"11a\"]"),
            "key `policy[1].number[0].masks[0]`: \"11a\" is not 1-10 digits",
        ),
        (good.replace("subnets = [\"127.0.0.3/32\"]", "subnets = [\"127.0.0.300/32\"]"), "key `site[1].subnets[0]`"),
        (
            good.replace("default_policy = \"us-hq\"", "default_policy = \"nope\""),
            "key `default_policy`: no policy named \"nope\"",
        ),
        (good.replace("t1_ms = 500", "t1_ms = 500\nt2_ms = 4000"), "unknown field `t2_ms`"),
        (
            good.replace("kind = \"sip-trunk\"            #", "kind = \"sip-trunc\"            #"),
            "unknown variant `sip-trunc`",
        ),
        (
            good.replace("country = \"GB\"", "country = \"GBR\""),
            "key `site[1].erl.country`: \"GBR\" is not an ISO 3166 two-letter country code",
        ),
        (
            good.replace(
                "\"sip:security@127.0.0.1\"]\nacknowledge = \"any\"",
                "\"sip:guards@127.0.0.1\"]\nacknowledge = \"any\"",
            ),
            "key `policy[0].notification_uris[1]`: \"guards\" is neither a desk account nor a notification group",
        ),
        // A host name is resolved (RFC 3263); one DNS cannot hold is refused.
        (
            good.replace("[\"sip:security@127.0.0.1\"]", "[\"sip:security@desks..example.com\"]"),
            "key `policy[1].notification_uris[0]`: \"desks..example.com\" is not an IP address or a DNS name",
        ),
        (good.replace("[sip]\n", "[sip]\ntls = \"127.0.0.1:5061\"\n"), "key `sip.tls`: needs `tls_cert` and `tls_key`"),
        // The TLS files are read as the core would read them.
        (
            good.replace(
                "[sip]\n",
                "[sip]\ntls = \"127.0.0.1:5061\"\ntls_cert = \"no-cert.pem\"\ntls_key = \"no-key.pem\"\n",
            ),
            "sip.tls: ",
        ),
        (
            good.replace("members = [\"desk1\", \"desk2\"]", "members = [\"desk1\", \"desk9\"]"),
            "key `notification_group[0].members[1]`: no desk account \"desk9\"",
        ),
        (
            good.replace("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:8443\"\ntls_cert = \"cert.pem\""),
            "key `api`: give both `tls_cert` and `tls_key`, or neither",
        ),
        // Found by fuzzing the config (issue 19): accepted here, they then broke the running core.
        (
            good.replace("elin_callback_minutes = 180", "elin_callback_minutes = 2e17"),
            "key `routing.elin_callback_minutes`: must be between 0 and 10080",
        ),
        (
            good.replace("[\"sip:security@127.0.0.1\"]", "[\"<sip:security-desk@127.0.0.1:5090 >\"]"),
            "key `policy[1].notification_uris[0]`: \"<sip:security-desk@127.0.0.1:5090 >\": write the bare URI",
        ),
        ("this is not toml".to_string(), "lab-bad.toml"),
    ];
    for (i, (content, want)) in cases.iter().enumerate() {
        let f = dir.path().join("lab-bad.toml");
        std::fs::write(&f, content).unwrap();
        let out = sosdesk().arg("check-config").arg(&f).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(err.contains(&f.display().to_string()), "case {i}: the file is named: {err}");
        assert!(err.contains(want), "case {i}: expected {want:?} in {err}");
        assert!(!err.contains("panicked"), "case {i}: {err}");
    }
    let out = sosdesk().arg("check-config").arg(dir.path().join("missing.toml")).output().unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("cannot read the file"), "{}", text(&out.stderr));
}

/// What `check-config` accepts, `serve` starts with: an IPv6 SIP address with the HELD endpoint
/// once passed the check and then failed to start (issue 19).
#[test]
fn an_ipv6_core_with_held_passes_the_check_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (sip, held) = (free_port(), free_port());
    let cfg_text: String = lab_config()
        .replace("udp = \"127.0.0.1:5060\"", &format!("udp = \"[::1]:{sip}\""))
        .replace("tcp = \"127.0.0.1:5060\"", &format!("tcp = \"[::1]:{sip}\""))
        .lines()
        .map(|l| if l.starts_with("held = ") { format!("held = \"[::1]:{held}\"") } else { l.to_string() })
        // The core's host is then its IPv6 listen address.
        .filter(|l| !l.starts_with("public_host = "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(cfg_text.contains(&format!("held = \"[::1]:{held}\"")));
    let cfg = dir.path().join("v6.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let out = sosdesk().arg("check-config").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let child =
        sosdesk().arg("serve").arg("--config").arg(&cfg).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut err = String::new();
    if line.is_empty() {
        let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
    }
    assert!(line.starts_with(&format!("sosdesk serving emergency calls on udp:[::1]:{sip}")), "{line}{err}");
}

store_test!(sync serve_history_verify_export_and_a_tampered_row);
fn serve_history_verify_export_and_a_tampered_row(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let (sip, prov) = (free_port(), free_port());
    let cfg_text = db.set_store(
        &lab_config()
            .replace("127.0.0.1:5060\"", &format!("127.0.0.1:{sip}\""))
            .replace("127.0.0.1:5070\"", &format!("127.0.0.1:{prov}\"")),
    );
    let cfg = dir.path().join("sosdesk.toml");
    std::fs::write(&cfg, cfg_text).unwrap();

    let child =
        sosdesk().arg("serve").arg("--config").arg(&cfg).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    // Killed on drop: a failing assertion below must not leave a core running.
    let mut child = KillOnDrop(child);
    // The process says when it serves; that line is the readiness signal.
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(
        line.starts_with(&format!("sosdesk serving emergency calls on udp:127.0.0.1:{sip} tcp:127.0.0.1:{sip}")),
        "{line}"
    );

    let msgs = dir.path().join("p.msg");
    let mut provider = Command::new("sipp")
        .arg("-sf")
        .arg(scenario("provider_answer.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &prov.to_string(),
            "-m",
            "1",
            "-timeout",
            "30",
            "-timeout_error",
            "-nostdin",
            "-trace_msg",
            "-message_file",
        ])
        .arg(&msgs)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp (Debian package sip-tester) is required");
    // Wait for the provider's socket (a condition with a deadline, not a fixed sleep).
    if let Err(err) = support::lab::wait_bound(&mut provider, "127.0.0.1", prov, false) {
        panic!("the sipp provider did not start: {err}");
    }
    let caller = Command::new("sipp")
        .arg("-sf")
        .arg(scenario("caller_hangs_up.xml"))
        .arg(format!("127.0.0.1:{sip}"))
        .args([
            "-s",
            "911",
            "-set",
            "hold_ms",
            "50",
            "-set",
            "name",
            r#"=HYPERLINK(\"x\"), Bob"#,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-m",
            "1",
            "-timeout",
            "30",
            "-timeout_error",
            "-nostdin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(caller.success(), "the call went through");
    assert!(provider.wait().unwrap().success());

    // SIGTERM: a clean stop, everything durable.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status:?}");

    let cfg_s = cfg.to_str().unwrap();
    let out = sosdesk().args(["history", "--config", cfg_s]).output().unwrap();
    let hist = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        hist.contains("=HYPERLINK(\"x\"), Bob")
            && hist.contains("911")
            && hist.contains("provider-prima")
            && hist.contains("ended"),
        "{hist}"
    );

    let out = sosdesk().args(["audit", "verify", "--config", cfg_s]).output().unwrap();
    assert!(
        // The call's six events, and the record of its subnet, new to the unlocated report (the
        // call was located by its site's default ERL, not the wiremap).
        out.status.success() && text(&out.stdout).starts_with("audit chain OK: 7 rows verified"),
        "{}",
        text(&out.stdout)
    );

    let csv = dir.path().join("export.csv");
    let out = sosdesk()
        .args(["audit", "export", "--csv", "--config", cfg_s, "--output", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        exported.lines().count(),
        8,
        "header + 6 events + the unlocated record (the last: the recording):\n{exported}"
    );
    assert!(exported.lines().last().unwrap().contains("recorded"), "{exported}");
    // A display name that a spreadsheet would run as a formula is defused and quoted.
    assert!(exported.contains("\"'=HYPERLINK(\"\"x\"\"), Bob\""), "{exported}");

    // Tamper with one row (an attacker with write access can drop the append-only triggers).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The call's `routed` row (the unlocated report's record of the subnet may come before it).
    let seq: i64 = rt.block_on(async {
        use sqlx::Connection;
        let mut c = db.raw().await;
        let (seq,): (i64,) = sqlx::query_as("SELECT seq FROM events WHERE kind = 'routed' ORDER BY seq LIMIT 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
        db.drop_trigger("events_append_only_update").await;
        sqlx::query("UPDATE events SET payload = replace(payload, '911', '912') WHERE seq = $1")
            .bind(seq)
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        seq
    });
    let out = sosdesk().args(["audit", "verify", "--store", &db.store_arg()]).output().unwrap();
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("BROKEN") && report.contains(&format!("seq {seq}")), "{report}");
}

#[test]
fn serve_refuses_a_busy_port_and_a_bad_config_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cfg_text = lab_config()
        .replace("udp = \"127.0.0.1:5060\"", &format!("udp = \"127.0.0.1:{port}\""))
        .replace("tcp = \"127.0.0.1:5060\"", "tcp = \"127.0.0.1:0\"");
    let cfg = dir.path().join("sosdesk.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let out = sosdesk().arg("serve").arg("--config").arg(&cfg).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot listen on UDP 127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("panicked"));

    std::fs::write(&cfg, "[sip]\nudp = 5060\n").unwrap();
    let out = sosdesk().arg("serve").arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("sosdesk.toml"), "{}", text(&out.stderr));
}

/// `[store] url` naming a PostgreSQL server that is not there, or a URL that does not parse:
/// check-config and serve say so, with the store but never its password, and do not panic.
#[test]
fn an_unreachable_or_bad_postgres_url_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let secret = "s3cret-Pw-9f2k";
    let with_url = |url: &str| {
        let text = lab_config().replace("path = \"audit.db\"", &format!("url = \"{url}\""));
        let cfg = dir.path().join("sosdesk.toml");
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let cfg = with_url(&format!("postgres://sosdesk:{secret}@127.0.0.1:{closed}/sosdesk"));
    let out = sosdesk().arg("check-config").arg(&cfg).output().unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(said.contains(&format!("audit store postgres://sosdesk@127.0.0.1:{closed}/sosdesk")), "{said}");
    assert!(!said.contains(secret), "{said}");

    let out = sosdesk().arg("serve").arg("--config").arg(&cfg).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("cannot open audit store postgres://sosdesk@127.0.0.1:{closed}/sosdesk")), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains(secret) && !err.contains("panicked"), "{err}");

    let cfg = with_url(&format!("postgres://sosdesk:{secret}@127.0.0.1:{closed}"));
    let out = sosdesk().arg("check-config").arg(&cfg).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("store.url") && err.contains("names no database"), "{err}");
    assert!(!err.contains(secret), "{err}");
}
