//! The integration-test lab: the real core (in-process, from `examples/lab.toml` moved onto free
//! ports), real sipp peers, and readers for what crossed the wire and what the audit log holds.
//!
//! sipp (Debian package `sip-tester`) is required: without it the tests panic with an install
//! hint rather than pass.

#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sosdesk::audit::AuditStore;
use sosdesk::config::Config;
use sosdesk::events::CallEvent;
use sosdesk::server::Core;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn scenario(name: &str) -> PathBuf {
    repo().join("tests/sipp").join(name)
}

/// A port free for both UDP and TCP on 127.0.0.1, for a peer that binds it later.
///
/// Taken from 10000–31999, below Linux's ephemeral range (32768–60999): the kernel never hands
/// these out by itself, so a port probed free here cannot be grabbed by another test's ephemeral
/// socket before sipp binds it. A per-process counter keeps tests in one binary apart; the
/// starting point depends on the process id so concurrent test binaries rarely overlap, and
/// the bind probe skips anything in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 10_000 + (std::process::id() * 7919) % 20_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + (base - 10_000 + n) % 22_000) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct LabPorts {
    pub sip: u16,
    pub primary: u16,
    pub secondary: u16,
    pub elin: u16,
    pub fallback: u16,
    pub held: u16,
    pub api: u16,
}

/// The lab's folder and config (`examples/lab.toml` moved onto free ports and a private audit
/// file), without a core: [`Lab`] starts one in-process; a test can run `sosdesk serve` on it.
pub struct LabFiles {
    pub dir: tempfile::TempDir,
    pub ports: LabPorts,
    pub config_path: PathBuf,
}

impl LabFiles {
    pub fn write(edit: impl FnOnce(String) -> String) -> LabFiles {
        assert!(
            Command::new("sipp").arg("-v").output().is_ok(),
            "sipp is not installed: the SIP tests need a real peer (Debian package sip-tester; the README's test command installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = LabPorts {
            sip: free_port(),
            primary: free_port(),
            secondary: free_port(),
            elin: free_port(),
            fallback: free_port(),
            held: free_port(),
            api: free_port(),
        };
        let text = std::fs::read_to_string(repo().join("examples/lab.toml")).expect("examples/lab.toml");
        let store = dir.path().join("audit.db");
        // Two passes through placeholders, so a port just written can never be rewritten by a
        // later replacement (a new port 50712 starts with the old "5071").
        let mut text = text;
        let moves = [
            ("5060", ports.sip),
            ("5070", ports.primary),
            ("5071", ports.secondary),
            ("5080", ports.elin),
            ("5090", ports.fallback),
            ("8080", ports.held),
            ("8443", ports.api),
        ];
        for (old, _) in &moves {
            text = text.replace(&format!("127.0.0.1:{old}\""), &format!("127.0.0.1:@{old}@\""));
        }
        for (old, new) in &moves {
            text = text.replace(&format!("@{old}@"), &new.to_string());
        }
        let text = text.replace("path = \"../sosdesk-lab.db\"", &format!("path = {:?}", store.display().to_string()));
        let text = edit(text);
        let config_path = dir.path().join("lab.toml");
        std::fs::write(&config_path, &text).unwrap();
        LabFiles { dir, ports, config_path }
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("audit.db")
    }
}

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The store when it is not the lab's own SQLite file ([`Lab::start_on`]).
    pub db: Option<super::store::TestDb>,
    pub rt: tokio::runtime::Runtime,
    pub core: Option<Core>,
    pub ports: LabPorts,
    pub config_path: PathBuf,
    events: Option<tokio::sync::broadcast::Receiver<std::sync::Arc<CallEvent>>>,
}

impl Lab {
    /// The lab of `examples/lab.toml`, moved onto free ports and a private audit file.
    pub fn start() -> Lab {
        Lab::start_with(|c| c)
    }

    /// As [`Lab::start`], with the config text edited first. Media passes through (the
    /// routing tests check the caller's own SDP on the wire); [`Lab::start_anchored`] keeps
    /// the lab's media anchoring.
    pub fn start_with(edit: impl FnOnce(String) -> String) -> Lab {
        Lab::start_anchored(|c| edit(c.replace("anchor = true", "anchor = false")))
    }

    /// The lab as `examples/lab.toml` has it: sosdesk anchors and records the media. The
    /// notification IM is left out (each call would add its attempts to the audit trail the
    /// routing tests compare); [`Lab::start_notifying`] keeps it.
    pub fn start_anchored(edit: impl FnOnce(String) -> String) -> Lab {
        Lab::launch(|c| edit(without_notifications(&c)))
    }

    /// The whole lab, notification IM included (media anchored).
    pub fn start_notifying(edit: impl FnOnce(String) -> String) -> Lab {
        Lab::launch(edit)
    }

    /// As [`Lab::start_with`], on the store `db` (e.g. PostgreSQL) instead of the lab's file.
    pub fn start_on(db: super::store::TestDb, edit: impl FnOnce(String) -> String) -> Lab {
        let mut lab = Lab::start_with(|c| db.set_store(&edit(c)));
        lab.db = Some(db);
        lab
    }

    fn launch(edit: impl FnOnce(String) -> String) -> Lab {
        let LabFiles { dir, ports, config_path } = LabFiles::write(edit);
        let cfg = Config::load(&config_path).unwrap_or_else(|e| panic!("lab config: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let core = rt.block_on(Core::start(&cfg)).unwrap_or_else(|e| panic!("core start: {e}"));
        let events = Some(core.subscribe());
        Lab { dir, db: None, rt, core: Some(core), ports, config_path, events }
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("audit.db")
    }

    /// The store the core writes to.
    pub fn store_location(&self) -> sosdesk::db::Location {
        match &self.db {
            Some(db) => db.location(),
            None => sosdesk::db::Location::Sqlite(self.store_path()),
        }
    }

    fn sipp_files(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.dir.path().join(format!("{name}.msg")), self.dir.path().join(format!("{name}.log")))
    }

    /// A sipp UAS (a provider, a gateway, a called phone) listening on `ip:port`; returns once
    /// its socket is bound.
    pub fn uas(&self, name: &str, scenario_file: &str, ip: &str, port: u16, extra: &[&str]) -> Sipp {
        let (msg, log) = self.sipp_files(name);
        let tcp = extra.windows(2).any(|w| w[0] == "-t" && w[1].starts_with('t'));
        // The port belongs to the lab's config, so it cannot change; if another process holds it
        // for a moment (the machine is shared), wait for it and try again.
        for attempt in 1.. {
            wait_free(ip, port, tcp);
            let mut cmd = Command::new("sipp");
            cmd.arg("-sf").arg(scenario(scenario_file));
            cmd.args(["-i", ip, "-p", &port.to_string(), "-m", "1", "-timeout", "30", "-timeout_error", "-nostdin"]);
            cmd.args(["-trace_msg", "-message_file"]).arg(&msg).args(["-trace_logs", "-log_file"]).arg(&log);
            cmd.args(extra);
            let mut child = spawn(cmd);
            match wait_bound(&mut child, ip, port, tcp) {
                Ok(()) => return Sipp { name: name.into(), child: Some(child), msg, log },
                Err(err) if err.contains("errno = 98") && attempt < 3 => continue,
                Err(err) => panic!("sipp {name} could not start on {ip}:{port}: {err}"),
            }
        }
        unreachable!()
    }

    /// A sipp UAC calling sosdesk from `ip` (which selects the caller's site).
    pub fn uac(&self, name: &str, scenario_file: &str, ip: &str, extra: &[&str]) -> Sipp {
        self.uac_to(name, scenario_file, ip, ([127, 0, 0, 1], self.ports.sip).into(), extra)
    }

    /// Stop the core; afterwards every event it produced is durable in the store.
    pub fn stop(&mut self) {
        if let Some(core) = self.core.take() {
            self.rt.block_on(core.stop());
        }
    }

    /// Every event the core broadcast so far (what a desk would have seen).
    /// Records of no call (a new unlocated network, a route's health) are left out.
    pub fn broadcast_events(&mut self) -> Vec<CallEvent> {
        let mut out = Vec::new();
        if let Some(rx) = self.events.as_mut() {
            while let Ok(ev) = rx.try_recv() {
                if ev.kind.is_of_a_call() {
                    out.push(std::sync::Arc::unwrap_or_clone(ev));
                }
            }
        }
        out
    }

    /// Wait (on the core's broadcast, no polling) for the first event after those already read
    /// that matches; every event read on the way is appended to `seen`.
    pub fn wait_for(&mut self, seen: &mut Vec<CallEvent>, what: &str, pred: impl Fn(&CallEvent) -> bool) -> CallEvent {
        let rx = self.events.as_mut().expect("event receiver");
        if let Some(ev) = seen.iter().find(|e| pred(e)) {
            return ev.clone();
        }
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Ok(ev)) => {
                        let ev = std::sync::Arc::unwrap_or_clone(ev);
                        seen.push(ev.clone());
                        if pred(&ev) {
                            return ev;
                        }
                    }
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    _ => panic!(
                        "no {what} event within 30 s; seen: {:?}",
                        seen.iter().map(|e| e.kind.name()).collect::<Vec<_>>()
                    ),
                }
            }
        })
    }

    /// The audit records of one kind of no call (`user-location-changed`…), oldest first (the
    /// core must be stopped or flushed).
    pub fn audit_records(&self, kind: &str) -> Vec<sosdesk::audit::AuditRecord> {
        self.rt.block_on(async {
            let store = AuditStore::open(self.store_location()).await.expect("open audit store");
            let records = store.records_of_kind(kind, 1000).await.expect("records");
            store.close().await;
            records
        })
    }

    /// Events in the audit store (the core must be stopped or flushed): each call's in order,
    /// calls oldest first, then the records of refused requests, oldest first.
    pub fn audit_events(&self) -> Vec<CallEvent> {
        self.rt.block_on(async {
            let store = AuditStore::open(self.store_location()).await.expect("open audit store");
            let calls = store.history(1000).await.expect("history");
            let mut all = Vec::new();
            for c in calls.iter().rev() {
                for r in store.call_events(&c.call_id).await.expect("call events") {
                    all.push(r.event);
                }
            }
            let refused = store.refusals(None, 1000).await.expect("refusals");
            all.extend(refused.into_iter().rev().map(|r| r.event));
            store.close().await;
            all
        })
    }

    /// Run the `sosdesk` binary with arguments (the CLI a user runs).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sosdesk")).args(args).output().expect("run sosdesk")
    }

    pub fn cli_store(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        let s = match &self.db {
            Some(db) => db.store_arg(),
            None => self.store_path().to_str().unwrap().to_string(),
        };
        all.push("--store");
        all.push(&s);
        self.cli(&all)
    }

    /// `sosdesk audit verify` passes.
    pub fn assert_audit_verifies(&self) {
        let out = self.cli_store(&["audit", "verify"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("audit chain OK"),
            "audit verify failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start sipp: {e}"))
}

/// Wait until sipp listens on ip:port (it binds right after it starts). This polls a condition
/// with a deadline; it is not a sleep standing in for synchronisation. A sipp that exits
/// instead (bad scenario, port taken) is reported with its own words.
pub fn wait_bound(child: &mut Child, ip: &str, port: u16, tcp: bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("exited ({status}): {err}"));
        }
        if is_listening(ip, port, tcp) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("did not bind within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a socket of this machine is bound to ip:port (or to the wildcard address on that
/// port), read from the kernel's socket tables in /proc/net. This looks without touching: a
/// probe that binds the port itself would, for the moment it holds it, make the peer that is
/// starting fail its own bind (EADDRINUSE), and the peer would exit instead of listening.
pub fn is_listening(ip: &str, port: u16, tcp: bool) -> bool {
    let ip: std::net::IpAddr = ip.parse().expect("an IP address");
    // /proc/net prints each 32-bit word of the address as the kernel holds it (network order
    // read as a native integer), then the port in hex.
    let words = |octets: &[u8]| -> String {
        octets.chunks(4).map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))).collect()
    };
    let (file, addr, any) = match ip {
        std::net::IpAddr::V4(v4) => (if tcp { "tcp" } else { "udp" }, words(&v4.octets()), words(&[0; 4])),
        std::net::IpAddr::V6(v6) => (if tcp { "tcp6" } else { "udp6" }, words(&v6.octets()), words(&[0; 16])),
    };
    // TCP counts once listening (state 0A); UDP once bound and not connected (state 07).
    let state = if tcp { "0A" } else { "07" };
    let table = std::fs::read_to_string(format!("/proc/net/{file}")).unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(st)) = (cols.next(), cols.next(), cols.next()) else { return false };
        let Some((a, p)) = local.split_once(':') else { return false };
        u16::from_str_radix(p, 16) == Ok(port) && (a == addr || a == any) && st == state
    })
}

/// Wait (up to 10 s) until no TCP connection from `remote_ip` to 127.0.0.1:`local_port` is
/// open or half-closed on this machine's side of it (ESTABLISHED or CLOSE_WAIT in
/// /proc/net/tcp): the listener's end has been closed.
pub fn wait_no_connection(local_port: u16, remote_ip: &str) {
    let remote: std::net::Ipv4Addr = remote_ip.parse().expect("an IPv4 address");
    let hex = |ip: std::net::Ipv4Addr, port: u16| format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()));
    let local = hex(std::net::Ipv4Addr::LOCALHOST, local_port);
    let remote = hex(remote, 0);
    let remote = &remote[..8];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let open = table.lines().skip(1).any(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.len() > 3 && cols[1] == local && cols[2].starts_with(remote) && (cols[3] == "01" || cols[3] == "08")
        });
        if !open {
            return;
        }
        assert!(Instant::now() < deadline, "a connection from {remote_ip} to port {local_port} is still open");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_free(ip: &str, port: u16, tcp: bool) -> bool {
    if tcp {
        TcpListener::bind((ip, port)).is_ok()
    } else {
        UdpSocket::bind((ip, port)).is_ok()
    }
}

/// Wait (up to 10 s) until nothing holds ip:port.
fn wait_free(ip: &str, port: u16, tcp: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_free(ip, port, tcp) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Sipp {
    pub name: String,
    child: Option<Child>,
    pub msg: PathBuf,
    pub log: PathBuf,
}

pub struct SippRun {
    pub name: String,
    pub code: Option<i32>,
    pub messages: String,
    pub log: String,
    pub stderr: String,
}

impl SippRun {
    /// The run passed (sipp exit code 0: every call of the scenario succeeded).
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "sipp {} failed (exit {:?}).\nstderr: {}\nmessages:\n{}",
            self.name,
            self.code,
            self.stderr,
            self.messages
        );
        self
    }

    /// `key=value` lines the scenario logged (`<log message="invite.ruri=…"/>`).
    pub fn logged(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.log.lines().find_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_string))
    }

    /// Raw messages this sipp received, in order.
    pub fn received(&self) -> Vec<String> {
        split_trace(&self.messages, "received")
    }

    pub fn sent(&self) -> Vec<String> {
        split_trace(&self.messages, "sent")
    }

    /// The first received request with this method.
    pub fn received_request(&self, method: &str) -> String {
        let start = format!("{method} ");
        self.received()
            .into_iter()
            .find(|m| m.starts_with(&start))
            .unwrap_or_else(|| panic!("sipp {} received no {method}; messages:\n{}", self.name, self.messages))
    }
}

/// Split a sipp `-trace_msg` file into the messages received (or sent).
fn split_trace(text: &str, dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split("\n-----------------------------------------------") {
        let mut lines = chunk.splitn(3, '\n');
        let _stamp = lines.next();
        let what = lines.next().unwrap_or("");
        if what.contains(&format!("message {dir}")) {
            let body = lines.next().unwrap_or("");
            out.push(body.trim_start_matches(['\r', '\n']).to_string());
        }
    }
    out
}

impl Sipp {
    /// Wait for sipp to finish (it ends by itself: `-m 1` and `-timeout`), then read its traces.
    pub fn wait(mut self) -> SippRun {
        let mut child = self.child.take().expect("sipp child");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break None,
            }
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        SippRun {
            name: self.name.clone(),
            code: status.and_then(|s| s.code()),
            messages: std::fs::read_to_string(&self.msg).unwrap_or_default(),
            log: std::fs::read_to_string(&self.log).unwrap_or_default(),
            stderr,
        }
    }

    /// Stop a peer that would otherwise wait for more (a silent provider).
    pub fn kill(mut self) -> SippRun {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.wait()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The body of a raw SIP message (framed by its Content-Length).
pub fn body_of(raw: &str) -> &str {
    let start = raw.find("\r\n\r\n").map(|i| i + 4).unwrap_or(raw.len());
    let cl: usize = header_of(raw, "Content-Length").and_then(|v| v.trim().parse().ok()).unwrap_or(raw.len() - start);
    &raw[start..(start + cl).min(raw.len())]
}

/// First value of a header in a raw message (case-insensitive name).
pub fn header_of(raw: &str, name: &str) -> Option<String> {
    let head = &raw[..raw.find("\r\n\r\n").unwrap_or(raw.len())];
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The application/pidf+xml part of a multipart body.
pub fn pidf_part(raw: &str) -> String {
    let body = body_of(raw);
    let start = body.find("Content-Type: application/pidf+xml").unwrap_or_else(|| panic!("no PIDF-LO part in:\n{raw}"));
    let part = &body[start..];
    let xml_start = part.find("\r\n\r\n").unwrap() + 4;
    let xml = &part[xml_start..];
    let end = xml.find("\r\n--").unwrap_or(xml.len());
    xml[..end].to_string()
}

/// A config text without the policies' `notification_uris` lines: for tests of other things,
/// whose calls would otherwise add notification attempts to the audit trail and the wire.
pub fn without_notifications(config: &str) -> String {
    config.lines().filter(|l| !l.starts_with("notification_uris")).collect::<Vec<_>>().join("\n")
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl Lab {
    /// A sipp UAC from `ip` whose requests go to `remote` (an SBC in front of sosdesk) rather
    /// than to sosdesk itself.
    pub fn uac_to(
        &self,
        name: &str,
        scenario_file: &str,
        ip: &str,
        remote: std::net::SocketAddr,
        extra: &[&str],
    ) -> Sipp {
        let (msg, log) = self.sipp_files(name);
        let port = free_port();
        let mut cmd = Command::new("sipp");
        // Files a scenario reads (rtp_stream audio) and sipp's own logs go in the lab's folder.
        cmd.current_dir(self.dir.path());
        cmd.arg("-sf").arg(scenario(scenario_file)).arg(remote.to_string());
        cmd.args(["-i", ip, "-p", &port.to_string(), "-m", "1", "-timeout", "30", "-timeout_error", "-nostdin"]);
        cmd.args(["-trace_msg", "-message_file"]).arg(&msg).args(["-trace_logs", "-log_file"]).arg(&log);
        cmd.args(extra);
        Sipp { name: name.into(), child: Some(spawn(cmd)), msg, log }
    }
}

/// POST a HELD request to the core's HELD endpoint on `port`: the whole HTTP response.
pub fn post_held(port: u16, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /held HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/held+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}
