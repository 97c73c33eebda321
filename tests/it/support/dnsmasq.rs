//! A real DNS server for the RFC 3263 tests: dnsmasq (Debian package `dnsmasq-base`, the binary
//! without the system service) in the foreground on 127.0.0.1:<port>, answering only the records
//! a test gives it, with the TTL the test gives.
//!
//! Nothing comes from the system or goes to it: no config file (`--conf-file=/dev/null`), no
//! /etc/hosts, no resolv.conf and so no upstream servers; `--local=/#/` makes every other name
//! local, so it is NXDOMAIN (and a name that has records, but not of the type asked, NOERROR
//! with no answer) instead of dnsmasq's REFUSED. `--no-daemon`: no pid file, no user change;
//! no DHCP range, so no lease file. Its log (stderr, every query: `--log-queries`) goes to
//! `dnsmasq-<port>.log` in the test's folder.
//!
//! [`query`] is a minimal DNS client (a hand-built query over UDP, a parse of the answer
//! section) for the readiness check and for tests that look at what the server says.

#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum DnsRecord {
    A {
        name: String,
        ip: Ipv4Addr,
    },
    Aaaa {
        name: String,
        ip: Ipv6Addr,
    },
    /// `name` is the whole owner name: `_sips._tcp.example.test`. A SRV answer also carries the
    /// target's A/AAAA records (additional section) when dnsmasq has them.
    Srv {
        name: String,
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
    /// RFC 3403; for RFC 3263: flags "S", service "SIPS+D2T", regexp "", replacement the SRV name.
    Naptr {
        name: String,
        order: u16,
        preference: u16,
        flags: String,
        service: String,
        regexp: String,
        replacement: String,
    },
}

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_NAPTR: u16 = 35;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_NXDOMAIN: u8 = 3;

pub struct Dnsmasq {
    child: Option<Child>,
    log: PathBuf,
    pub addr: SocketAddr,
}

const START_WITHIN: Duration = Duration::from_secs(10);

/// Start dnsmasq on 127.0.0.1:`port` (UDP and TCP) serving `records`, each with TTL `ttl_s`;
/// returns once it answers a query.
pub fn start_dns(dir: &Path, port: u16, records: &[DnsRecord], ttl_s: u32) -> Dnsmasq {
    let log = dir.join(format!("dnsmasq-{port}.log"));
    // /usr/sbin is not on every user's PATH.
    let bin = if Path::new("/usr/sbin/dnsmasq").exists() { "/usr/sbin/dnsmasq" } else { "dnsmasq" };
    let out = File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let mut cmd = Command::new(bin);
    cmd.args(["--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--local=/#/"]);
    cmd.args(["--bind-interfaces", "--listen-address=127.0.0.1", &format!("--port={port}")]);
    cmd.args(["--log-facility=-", "--log-queries"]);
    // --local-ttl is the TTL of every record from the command line (host, SRV, NAPTR); without
    // it they would go out with TTL 0, which a resolver must not cache.
    cmd.arg(format!("--local-ttl={ttl_s}"));
    cmd.args(records.iter().map(option));
    cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dnsmasq (Debian package dnsmasq-base; test.sh installs it): {e}"));
    let mut d = Dnsmasq { child: Some(child), log, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
    if let Err(why) = d.wait_ready() {
        d.stop();
        panic!("dnsmasq on {} {why}; its log:\n{}", d.addr, d.log());
    }
    d
}

/// The dnsmasq option for one record (dnsmasq(8)).
fn option(r: &DnsRecord) -> String {
    // Fields are comma-separated: a comma inside one would shift the others silently.
    let check = |fields: &[&str]| {
        for f in fields {
            assert!(!f.contains(','), "a DNS record field cannot contain a comma here: {f:?}");
        }
    };
    match r {
        DnsRecord::A { name, ip } => {
            check(&[name]);
            format!("--host-record={name},{ip}")
        }
        DnsRecord::Aaaa { name, ip } => {
            check(&[name]);
            format!("--host-record={name},{ip}")
        }
        // Careful: dnsmasq's order is port, priority, weight (a zone file's is priority,
        // weight, port).
        DnsRecord::Srv { name, target, port, priority, weight } => {
            check(&[name, target]);
            format!("--srv-host={name},{target},{port},{priority},{weight}")
        }
        DnsRecord::Naptr { name, order, preference, flags, service, regexp, replacement } => {
            check(&[name, flags, service, regexp, replacement]);
            let mut o = format!("--naptr-record={name},{order},{preference},{flags},{service},{regexp}");
            if !replacement.is_empty() {
                o.push(',');
                o.push_str(replacement);
            }
            o
        }
    }
}

impl Dnsmasq {
    /// Kill dnsmasq (a test of answers cached after the DNS server went away). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its log so far: startup, errors, and one `query[TYPE] name from 127.0.0.1` line per
    /// query (written within moments of the answer; poll if a test counts them).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The queries logged so far, as ("SRV", "_sips._tcp.example.test") pairs.
    pub fn queries(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter_map(|l| {
                let rest = &l[l.find(" query[")? + 7..];
                let (qtype, rest) = rest.split_once("] ")?;
                let name = rest.split(' ').next()?;
                Some((qtype.to_string(), name.to_string()))
            })
            .collect()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => {}
                Some(Ok(Some(status))) => return Err(format!("exited ({status})")),
                _ => return Err("is not running".into()),
            }
            // Any answer will do (an unknown name is NXDOMAIN): the server is up.
            if query_within(self.addr, "ready.invalid", TYPE_A, Duration::from_millis(50)).is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("did not answer a query within {START_WITHIN:?}"));
            }
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug)]
pub struct DnsAnswer {
    pub rcode: u8,
    /// The answer section only (not the additional records).
    pub answers: Vec<DnsRr>,
}

#[derive(Debug)]
pub struct DnsRr {
    pub rtype: u16,
    pub ttl: u32,
    /// As received: names inside it may be compressed (pointers into the whole message).
    pub rdata: Vec<u8>,
}

impl DnsRr {
    /// Port of a SRV record.
    pub fn srv_port(&self) -> u16 {
        assert_eq!(self.rtype, TYPE_SRV);
        u16::from_be_bytes([self.rdata[4], self.rdata[5]])
    }
}

/// Ask `server` once (UDP, 1 s); None if nothing answers.
pub fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<DnsAnswer> {
    query_within(server, name, qtype, Duration::from_secs(1))
}

fn query_within(server: SocketAddr, name: &str, qtype: u16, wait: Duration) -> Option<DnsAnswer> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    let id: u16 = rand::random();
    // Header: id, flags RD, 1 question, no other records; then the question.
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    sock.send_to(&q, server).ok()?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let (len, from) = sock.recv_from(&mut buf).ok()?;
        if from == server && len >= 12 && buf[..2] == id.to_be_bytes() {
            return Some(parse(&buf[..len]).unwrap_or_else(|| panic!("malformed DNS answer: {:?}", &buf[..len])));
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

fn parse(m: &[u8]) -> Option<DnsAnswer> {
    let be16 = |i: usize| Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]));
    let rcode = m[3] & 0x0f;
    let (qd, an) = (be16(4)?, be16(6)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(m, i)? + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        i = skip_name(m, i)?;
        let rtype = be16(i)?;
        let ttl = u32::from_be_bytes(m.get(i + 4..i + 8)?.try_into().ok()?);
        let len = be16(i + 8)? as usize;
        let rdata = m.get(i + 10..i + 10 + len)?.to_vec();
        i += 10 + len;
        answers.push(DnsRr { rtype, ttl, rdata });
    }
    Some(DnsAnswer { rcode, answers })
}

/// Index just past the (possibly compressed) name at `i`.
fn skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *m.get(i)?;
        match len {
            0 => return Some(i + 1),
            l if l & 0xc0 == 0xc0 => return Some(i + 2),
            l => i += 1 + l as usize,
        }
    }
}
