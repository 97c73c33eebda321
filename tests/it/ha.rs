//! The HA example (`examples/ha/`, docs/ha.md) run for real: Kamailio with the example's own
//! `kamailio.cfg` and `dispatcher.list` in front of two `sosdesk serve` processes with the
//! example's `node-a.toml` and `node-b.toml`, sharing one PostgreSQL (a throwaway cluster,
//! tests/it/support/postgres.rs); sipp callers and a sipp provider. The files are moved onto free
//! ports and the test's database; the only other change: the nodes' OPTIONS probes of the
//! provider are off (`health_interval_s = 0`: the sipp provider takes calls, not probes).
//!
//! Calls flow through both nodes; a reload (SIGHUP) during a live call moves the next call to
//! the provider the new config names while the live call goes on; a node killed (SIGKILL) under ~50 calls/s costs no call at
//! the callers (Kamailio fails over inside the INVITE transaction); with every node down,
//! Kamailio's fail-safe route carries the call to the provider; the audit chain of both nodes
//! verifies.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

use support::kamailio::{self, Kamailio};
use support::lab::{free_port, repo};
use support::postgres::PgServer;

struct Ports {
    kamailio: u16,
    node_a: u16,
    node_b: u16,
    provider: u16,
}

struct Ha {
    dir: tempfile::TempDir,
    pg: PgServer,
    db: String,
    ports: Ports,
    kamailio: Kamailio,
    nodes: Vec<Killed>,
    _provider: Killed,
}

/// A process killed when dropped: a test that panics half-way leaves nothing running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn example(name: &str) -> String {
    std::fs::read_to_string(repo().join("examples/ha").join(name)).unwrap_or_else(|e| panic!("examples/ha/{name}: {e}"))
}

/// `text` with each `from` (which must be there) replaced by `to`.
fn moved(mut text: String, edits: &[(&str, String)]) -> String {
    for (from, to) in edits {
        assert!(text.contains(from), "the example no longer has {from:?}: update tests/it/ha.rs");
        text = text.replace(from, to);
    }
    text
}

impl Ha {
    fn start() -> Ha {
        let dir = tempfile::tempdir().unwrap();
        let pg = PgServer::start();
        let db = pg.create_db();
        let ports = Ports { kamailio: free_port(), node_a: free_port(), node_b: free_port(), provider: free_port() };
        let p = |port: u16| format!("127.0.0.1:{port}");
        let provider = Killed(sipp(
            dir.path(),
            "provider",
            &["-sf", &scenario("ha_provider.xml"), "-p", &ports.provider.to_string()],
        ));
        let mut nodes = Vec::new();
        for (name, port, api) in
            [("node-a", ports.node_a, "127.0.0.1:8443"), ("node-b", ports.node_b, "127.0.0.1:8444")]
        {
            let text = moved(
                example(&format!("{name}.toml")),
                &[
                    (if name == "node-a" { "127.0.0.1:5062" } else { "127.0.0.1:5064" }, p(port)),
                    ("127.0.0.1:5070", p(ports.provider)),
                    (api, p(free_port())),
                    ("postgres://sosdesk:CHANGE-ME@127.0.0.1:5432/sosdesk", pg.url(&db)),
                    ("health_interval_s = 10", "health_interval_s = 0".into()),
                ],
            );
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(&config, text).unwrap();
            nodes.push(Killed(serve(dir.path(), name, &config)));
        }
        let list = dir.path().join("dispatcher.list");
        let nodes_list = moved(
            example("dispatcher.list"),
            &[("127.0.0.1:5062", p(ports.node_a)), ("127.0.0.1:5064", p(ports.node_b))],
        );
        std::fs::write(&list, nodes_list).unwrap();
        let cfg = dir.path().join("kamailio.cfg");
        let kamailio_cfg = moved(
            example("kamailio.cfg"),
            &[
                ("udp:127.0.0.1:5060", format!("udp:{}", p(ports.kamailio))),
                ("/etc/kamailio/sosdesk-nodes.list", list.display().to_string()),
                ("127.0.0.1:5070", p(ports.provider)),
            ],
        );
        std::fs::write(&cfg, kamailio_cfg).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], ports.kamailio).into();
        let kamailio = kamailio::start_with_config(dir.path(), &cfg, "kamailio", addr);
        Ha { dir, pg, db, ports, kamailio, nodes, _provider: provider }
    }

    /// `calls` emergency calls at `rate` per second through Kamailio, in the background.
    fn callers(&self, name: &str, rate: u32, calls: u32) -> Child {
        let target = format!("127.0.0.1:{}", self.ports.kamailio);
        let (rate, calls, port) = (rate.to_string(), calls.to_string(), free_port().to_string());
        let args = ["-sf", &scenario("ha_caller.xml"), &target, "-s", "911", "-p", &port, "-r", &rate, "-m", &calls];
        sipp(self.dir.path(), name, &args)
    }

    /// Waits for a sipp caller; its (successful, failed) calls.
    fn outcome(&self, name: &str, mut caller: Child) -> (u64, u64) {
        let status = caller.wait().unwrap();
        let stat = std::fs::read_to_string(self.dir.path().join(format!("{name}_stat.csv"))).unwrap_or_default();
        let counts = final_counts(&stat).unwrap_or_else(|| panic!("sipp {name} ({status}) left no statistics"));
        let errors = std::fs::read_to_string(self.dir.path().join(format!("{name}_err.log"))).unwrap_or_default();
        assert!(counts.1 > 0 || status.success(), "sipp {name}: {status}; {errors}");
        if counts.1 > 0 {
            eprintln!("sipp {name} errors:\n{errors}\nkamailio:\n{}", self.kamailio.log());
        }
        counts
    }

    /// How many audit rows of `kind` the nodes have committed.
    fn count(&self, kind: &str) -> u64 {
        self.pg.psql(&self.db, &format!("SELECT count(*) FROM events WHERE kind = '{kind}'")).parse().unwrap()
    }

    /// Waits (polling the database against a deadline) until `count(kind)` reaches `n`.
    fn wait_count(&self, kind: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(kind) < n {
            assert!(Instant::now() < deadline, "fewer than {n} {kind} records within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Both nodes' provider moved to `port` in their config files, then SIGHUP to each.
    fn reload_to(&self, port: u16) {
        for (i, name) in ["node-a", "node-b"].iter().enumerate() {
            let path = self.dir.path().join(format!("{name}.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            let from = format!("127.0.0.1:{}", self.ports.provider);
            std::fs::write(&path, moved(text, &[(&from, format!("127.0.0.1:{port}"))])).unwrap();
            let pid = self.nodes[i].0.id().to_string();
            assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        }
    }

    /// Calls each node has routed (the `routed` rows of the shared audit log, by node).
    fn routed_by(&self) -> (u64, u64) {
        let rows = self.pg.psql(&self.db, "SELECT node, count(*) FROM events WHERE kind = 'routed' GROUP BY node");
        let of = |node: &str| {
            rows.lines().find_map(|l| l.strip_prefix(&format!("{node}|"))).map(|n| n.parse().unwrap()).unwrap_or(0)
        };
        (of("node-a"), of("node-b"))
    }

    fn kill_node(&mut self, i: usize) {
        // SIGKILL: a crash, nothing flushed or closed.
        self.nodes[i].0.kill().unwrap();
        self.nodes[i].0.wait().unwrap();
    }
}

fn scenario(name: &str) -> String {
    support::lab::scenario(name).display().to_string()
}

/// sipp with its statistics (`<name>_stat.csv`, written at the end), errors and logs in `dir`.
fn sipp(dir: &Path, name: &str, args: &[&str]) -> Child {
    let file = |suffix: &str| dir.join(format!("{name}{suffix}")).display().to_string();
    Command::new("sipp")
        .args(args)
        .args(["-i", "127.0.0.1", "-nostdin", "-recv_timeout", "20000", "-timeout", "60", "-timeout_error"])
        .args(["-trace_stat", "-stf", &file("_stat.csv"), "-fd", "60"])
        .args(["-trace_err", "-error_file", &file("_err.log"), "-trace_logs", "-log_file", &file("_logs.log")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("sipp (Debian package sip-tester): {e}"))
}

/// (SuccessfulCall(C), FailedCall(C)) of the last line of a sipp statistics file.
fn final_counts(stat: &str) -> Option<(u64, u64)> {
    let lines: Vec<&str> = stat.lines().filter(|l| !l.trim().is_empty()).collect();
    let header: Vec<&str> = lines.first()?.split(';').collect();
    let last: Vec<&str> = lines.get(1..)?.last()?.split(';').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).and_then(|i| last.get(i)?.parse().ok());
    Some((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

/// `sosdesk serve` with `config`; returns once it serves (its log: `<name>.log`).
fn serve(dir: &Path, name: &str, config: &PathBuf) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sosdesk"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("sosdesk serve");
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        if line.expect("serve's output").contains("sosdesk serving") {
            return child;
        }
    }
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    panic!("sosdesk serve {name} exited before serving:\n{log}");
}

#[test]
fn calls_spread_over_two_nodes_survive_a_killed_node_and_reach_the_provider_with_none() {
    let mut ha = Ha::start();

    // Both nodes take calls.
    let c = ha.callers("spread", 50, 100);
    assert_eq!(ha.outcome("spread", c), (100, 0), "every call through the two nodes is answered");
    // The callers have their answers before the nodes' audit writers commit the last rows.
    ha.wait_count("routed", 100);
    let (a, b) = ha.routed_by();
    assert_eq!(a + b, 100);
    assert!(a >= 20 && b >= 20, "round robin over both nodes: node-a {a}, node-b {b}");

    // A reload (SIGHUP to both nodes) during a live call: the next call goes to the provider the
    // new config names, the live call goes on to its end.
    let moved_port = free_port();
    // Kept to the end: the nodes send their calls there from now on.
    let _moved_provider =
        Killed(sipp(ha.dir.path(), "moved", &["-sf", &scenario("ha_provider.xml"), "-p", &moved_port.to_string()]));
    let answered = ha.count("answered");
    let target = format!("127.0.0.1:{}", ha.ports.kamailio);
    let live_port = free_port().to_string();
    let hold = ["-sf", &scenario("caller_hangs_up.xml"), &target, "-s", "911", "-p", &live_port, "-m", "1"];
    let live = sipp(ha.dir.path(), "live", &[&hold[..], &["-set", "hold_ms", "6000"]].concat());
    ha.wait_count("answered", answered + 1);
    ha.reload_to(moved_port);
    ha.wait_count("config-reloaded", 2);
    let c = ha.callers("after-reload", 1, 1);
    assert_eq!(ha.outcome("after-reload", c), (1, 0));
    let moved_log = std::fs::read_to_string(ha.dir.path().join("moved_logs.log")).unwrap_or_default();
    let dir = ha.dir.path();
    let logs = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    assert!(
        moved_log.contains("invite="),
        "the call after the reload reached the moved provider; moved: {moved_log}; first: {}; node-a: {}",
        logs("provider_logs.log"),
        logs("node-a.log")
    );
    assert_eq!(ha.outcome("live", live), (1, 0), "the live call went on to its end");
    let (a, b) = ha.routed_by();

    // Node A is killed while calls arrive at ~50/s: no call fails at the callers.
    let c = ha.callers("kill", 50, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ha.routed_by().0 < a + 25 {
        assert!(Instant::now() < deadline, "node-a routed no new calls");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed_at = Instant::now();
    ha.kill_node(0);
    let (ok, failed) = ha.outcome("kill", c);
    assert_eq!((ok, failed), (200, 0), "no emergency call fails when a node dies");
    eprintln!("node killed {:?} before the last call ended", killed_at.elapsed());

    // Every node down: Kamailio's fail-safe route carries the call to the provider.
    ha.kill_node(1);
    // Read once both are gone, so no commit of theirs comes after it.
    let (a2, b2) = ha.routed_by();
    // Node-b took over. (Not a2 + b2 >= 300: the records a node had not yet committed when it was
    // killed wait in its crash journal, recovered into the database when it starts again.)
    assert!(b2 - b > 100, "node-b took over: {b} then {b2} (node-a {a2})");
    let c = ha.callers("failsafe", 1, 1);
    assert_eq!(ha.outcome("failsafe", c), (1, 0), "the call reaches the provider with no node");
    assert_eq!(ha.routed_by(), (a2, b2), "no node routed it");
    assert!(ha.kamailio.log().contains("straight to the provider"), "{}", ha.kamailio.log());

    // One audit chain of both nodes' records, which verifies.
    let out = Command::new(env!("CARGO_BIN_EXE_sosdesk"))
        .args(["audit", "verify", "--store", &ha.pg.url(&ha.db)])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("audit chain OK"), "{said}{}", String::from_utf8_lossy(&out.stderr));
}
