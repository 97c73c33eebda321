//! A simulated switch for the discovery tests: snmpsim (Debian package `snmpsim`, 0.4.5 in
//! bookworm) answering SNMP v2c (community `public`) on 127.0.0.1:<port> from a `.snmprec`
//! file — the real Cisco Catalyst 3750 walk snmpsim ships, with the rows a test adds
//! (tests/fixtures/snmp/README.md).
//!
//! snmpsimd reads its data file again when the file's modification time changes (its
//! `RecordIndex.getHandles`, whole seconds): [`Snmpsim::write`] replaces the file and moves its
//! time forward, so the next request is answered from the new data — a phone moved to another
//! port without restarting the switch.
//!
//! As root snmpsimd must drop privileges (`--process-user=nobody --process-group=nogroup`), so
//! its folder is readable by everyone and its index cache writable.

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The real device walk the simulated switch starts from (one line per object instance).
pub fn cisco_3750_rows() -> Vec<String> {
    let path = super::lab::repo().join("tests/fixtures/snmp/cisco-3750.snmprec");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

pub struct Snmpsim {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
    /// The modification time of the last data file written.
    written: SystemTime,
}

const START_WITHIN: Duration = Duration::from_secs(20);

impl Snmpsim {
    /// Start snmpsimd answering from `rows`; returns once it listens.
    pub fn start(rows: &[String], extra_args: &[&str]) -> Snmpsim {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = |p: &std::path::Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
        let data_dir = dir.path().join("data");
        let cache = dir.path().join("cache");
        std::fs::create_dir(&data_dir).unwrap();
        std::fs::create_dir(&cache).unwrap();
        open(dir.path(), 0o755).unwrap();
        open(&data_dir, 0o755).unwrap();
        open(&cache, 0o777).unwrap();
        let port = super::lab::free_port();
        let mut sim = Snmpsim {
            child: None,
            port,
            data: data_dir.join("public.snmprec"),
            log: dir.path().join("snmpsimd.log"),
            dir,
            written: SystemTime::now(),
        };
        sim.write(rows);
        let mut cmd = Command::new("snmpsimd");
        cmd.arg(format!("--data-dir={}", data_dir.display()));
        cmd.arg(format!("--cache-dir={}", cache.display()));
        cmd.arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"));
        cmd.arg(format!("--logging-method=file:{}", sim.log.display()));
        // /proc/self belongs to the process's effective user.
        if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
            cmd.args(["--process-user=nobody", "--process-group=nogroup"]);
        }
        cmd.args(extra_args);
        let out = File::create(sim.dir.path().join("snmpsimd.out")).unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start snmpsimd (Debian package snmpsim; test.sh installs it): {e}"));
        sim.child = Some(child);
        sim.wait_listening();
        sim
    }

    /// Listening once its UDP port is bound (read from /proc/net, which does not touch the port).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if super::lab::is_listening("127.0.0.1", self.port, false) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("snmpsimd exited ({status}) before listening:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "snmpsimd did not listen within {START_WITHIN:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replace the data file with `rows` (sorted into OID order, which snmpsim needs for GETNEXT)
    /// and move its modification time forward, so that snmpsimd re-reads it at its next request.
    pub fn write(&mut self, rows: &[String]) {
        let mut rows: Vec<&String> = rows.iter().collect();
        let arcs = |r: &str| -> Vec<u32> {
            r.split('|').next().unwrap_or("").split('.').map(|a| a.parse().expect("an OID arc")).collect()
        };
        rows.sort_by_cached_key(|r| arcs(r));
        let tmp = self.data.with_extension("tmp");
        let mut text = rows.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("\n");
        text.push('\n');
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Whole seconds later than both the previous file and the index built from it.
        let at = self.written.max(SystemTime::now()) + Duration::from_secs(10);
        File::options().write(true).open(&tmp).unwrap().set_modified(at).unwrap();
        std::fs::rename(&tmp, &self.data).unwrap();
        self.written = at;
    }

    pub fn log(&self) -> String {
        let mut s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir.path().join("snmpsimd.out")).unwrap_or_default());
        s
    }

    /// Stop answering (the switch goes silent).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Snmpsim {
    fn drop(&mut self) {
        self.stop();
    }
}
