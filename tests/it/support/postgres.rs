//! A real PostgreSQL server for the store tests (issue 14): the Debian package `postgresql`
//! (test.sh installs it), run as each test's own throwaway cluster on 127.0.0.1:<free port>,
//! killed when the test drops it. Nothing of the system's PostgreSQL service is used.
//!
//! `initdb` runs once per target directory into `CARGO_TARGET_TMPDIR` (a template, reused by
//! later runs: it takes seconds on the 2-core build machine); each server gets a copy of it in
//! its own temp dir, so every test has its own cluster and no test sees another's rows. The
//! superuser `sosdesk` has a password on TCP (scram-sha-256, as a real deployment would), so the
//! tests go through the same authentication as `[store] url`; the Unix socket (in the data dir,
//! `-k`) trusts it, for `psql` set-up commands only.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb` and `postgres` run as
//! `nobody` (Command::uid/gid, which also drops the supplementary groups), and the files they
//! need are handed to it.
//!
//! Throwaway settings: `fsync=off` (what PostgreSQL's own regression tests do for speed; the
//! durability of PostgreSQL itself is not under test here).

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::lab::free_port;

pub const USER: &str = "sosdesk";
/// The superuser's password: long and distinctive, so a test can look for it in any message.
pub const PASSWORD: &str = "pw-Zq8vT3xK-never-shown";

const START_WITHIN: Duration = Duration::from_secs(30);

pub struct PgServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    next_db: std::sync::atomic::AtomicU32,
}

/// The bin directory of the newest installed PostgreSQL (/usr/lib/postgresql/<major>/bin).
fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed (Debian package postgresql; test.sh installs it)")
            .filter_map(|e| {
                let e = e.ok()?;
                Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
            })
            .filter(|(_, p)| p.join("postgres").exists())
            .collect();
        majors.sort();
        majors.pop().expect("no /usr/lib/postgresql/<major>/bin/postgres (Debian package postgresql)").1
    });
    dir.join(name)
}

fn running_as_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// `nobody`'s uid and gid when we are root (PostgreSQL will not run as root), else None.
fn unprivileged() -> Option<(u32, u32)> {
    running_as_root().then_some((65534, 65534))
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = unprivileged() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_tree(path: &Path) {
    if let Some((uid, gid)) = unprivileged() {
        let status = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(path).status().unwrap();
        assert!(status.success(), "chown -R {}", path.display());
    }
}

/// The initdb'd template data directory, made once per target directory.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let version = bin("postgres").parent().unwrap().parent().unwrap().file_name().unwrap().to_owned();
        let done = base.join(format!("pg-template-{}", version.to_string_lossy()));
        if done.join("PG_VERSION").exists() {
            return done;
        }
        // Built under a unique name and renamed into place: another test process building its
        // own at the same time cannot leave a half-made template behind.
        let work = base.join(format!("pg-template-{}.{}", version.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let pwfile = work.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        chown_tree(&work);
        let out = as_server_user(
            Command::new(bin("initdb"))
                .arg("-D")
                .arg(work.join("data"))
                .args(["-U", USER, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("--no-sync"),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let data = work.join("data");
        if std::fs::rename(&data, &done).is_err() && !done.join("PG_VERSION").exists() {
            panic!("cannot move the PostgreSQL template into {}", done.display());
        }
        let _ = std::fs::remove_dir_all(&work);
        done
    })
}

impl PgServer {
    /// A fresh cluster of its own, listening on 127.0.0.1 only; returns once it takes
    /// connections.
    pub fn start() -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let status = Command::new("cp").arg("-a").arg(template()).arg(&data).status().unwrap();
        assert!(status.success(), "cannot copy the PostgreSQL template");
        chown_tree(dir.path());
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let out = File::create(&log).unwrap();
        let child = as_server_user(
            Command::new(bin("postgres"))
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&data)
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(["-c", "fsync=off", "-c", "max_connections=100"])
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start postgres (Debian package postgresql; test.sh installs it): {e}"));
        let mut s = PgServer { child: Some(child), dir, port, next_db: 0.into() };
        if let Err(why) = s.wait_ready() {
            s.stop();
            panic!("postgres on 127.0.0.1:{port} {why}; its log:\n{}", s.log());
        }
        s
    }

    /// The server's temp dir (its data dir is `data` inside): a test's other files can go here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join("postgres.log")).unwrap_or_default()).into_owned()
    }

    /// Polls with `pg_isready` (a real connection attempt over TCP) until the server takes
    /// connections, the process dies, or START_WITHIN passes.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => {}
                Some(Ok(Some(status))) => return Err(format!("exited ({status})")),
                _ => return Err("is not running".into()),
            }
            let ready = Command::new(bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", "postgres", "-t", "1"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("did not take connections within {START_WITHIN:?}"));
            }
            // pg_isready returns at once while nothing listens: poll at a modest pace.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `sql` with psql as the superuser over the Unix socket; returns its output (tuples
    /// only, unaligned). Panics on an error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin("psql"))
            .arg("-h")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database; returns its name.
    pub fn create_db(&self) -> String {
        let n = self.next_db.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("test{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The `[store] url` of database `db`, with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Kills the server (the cluster is thrown away with its temp dir). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGQUIT: PostgreSQL's immediate shutdown, which takes its backends down with it
            // (a SIGKILLed postmaster leaves them to notice on their own).
            let quit = Command::new("kill").args(["-QUIT", &c.id().to_string()]).status();
            if !quit.is_ok_and(|s| s.success()) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
