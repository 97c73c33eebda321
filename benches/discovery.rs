//! Switch-port discovery, measured (issue 16 item 6; BENCHMARKS.md, "Switch-port discovery"):
//! how long one poll round takes for one 48-port switch and for 100 of them, and whether the
//! location look-ups of calls and HELD (`DiscoveringLocator`: the wiremap, then the port the
//! device's MAC was learnt on) slow down while a round runs.
//!
//! The switches are snmpsim (Debian `snmpsim`) answering from the real Cisco Catalyst 3750 walk
//! of the discovery tests, with a phone learnt on each of its 48 access ports (and in its ARP
//! table); 100 switches are 100 data files of one snmpsimd, one community each (snmpsim serves
//! the file named after the request's community), with their own chassis IDs and phones.
//!
//! A look-up thread asks where a phone is (by IP: ARP → MAC → switch port → wiremap port
//! entry), one look-up every 100 µs, all the time; each latency is put in the phase it fell in
//! (idle, or a round running). Rounds are driven by `Discovery::poll_now`, as the CLI does.
//!
//! Run: `bench/discovery.sh` (release build, under the build lock).
//! Arguments: `--switches N` (default 1 and 100: both runs), `--rounds R` (default 5).

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sosdesk::location::discovery::{Credentials, DiscoveringLocator, SwitchTarget};
use sosdesk::location::wiremap::{SharedWiremap, Wiremap};
use sosdesk::location::{CivicAddress, DeviceAttachment, Erl, Locator, PortIdSubtype, WiremapEntry, WiremapKey};

const PORTS: u32 = 48;
/// ifIndex of `Fa3/0/N` in the 3750 walk (ifName: 11014 is Fa3/0/14). The walk's own bridge-port
/// map is the real switch's, sparse (VLAN 1's ports); the bench adds bridge ports 1–48 → Fa3/0/1–48.
const IF_INDEX_BASE: u32 = 11000;

fn walk() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snmp/cisco-3750.snmprec");
    std::fs::read_to_string(path)
        .expect("the 3750 walk")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn chassis(s: u32) -> [u8; 6] {
    [0x00, 0x16, 0xc7, 0x10, (s >> 8) as u8, s as u8]
}

fn phone_mac(s: u32, p: u32) -> [u8; 6] {
    [0x00, 0x0d, 0x4b, (s >> 8) as u8, s as u8, p as u8]
}

/// The phone on port `p` of switch `s`: 10.<s/256+1>.<s%256>.<p>.
fn phone_ip(s: u32, p: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (s / 256 + 1) as u8, (s % 256) as u8, p as u8)
}

fn hex(m: &[u8]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect()
}

fn arcs(m: &[u8]) -> String {
    m.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(".")
}

/// One switch's data: the walk, its LLDP chassis, a phone on each access port and in ARP.
fn switch_rows(base: &[String], s: u32) -> String {
    let mut rows: Vec<String> = base.to_vec();
    rows.push("1.0.8802.1.1.2.1.3.1.0|2|4".into());
    rows.push(format!("1.0.8802.1.1.2.1.3.2.0|4x|{}", hex(&chassis(s))));
    rows.push(format!("1.0.8802.1.1.2.1.3.3.0|4|bench-sw{s:03}"));
    for p in 1..=PORTS {
        let mac = phone_mac(s, p);
        rows.push(format!("1.3.6.1.2.1.17.1.4.1.2.{p}|2|{}", IF_INDEX_BASE + p));
        rows.push(format!("1.3.6.1.2.1.17.4.3.1.1.{}|4x|{}", arcs(&mac), hex(&mac)));
        rows.push(format!("1.3.6.1.2.1.17.4.3.1.2.{}|2|{p}", arcs(&mac)));
        rows.push(format!("1.3.6.1.2.1.17.4.3.1.3.{}|2|3", arcs(&mac)));
        rows.push(format!("1.3.6.1.2.1.4.22.1.2.60.{}|4x|{}", phone_ip(s, p), hex(&mac)));
    }
    let oid =
        |r: &String| -> Vec<u32> { r.split('|').next().unwrap().split('.').map(|a| a.parse().unwrap()).collect() };
    rows.sort_by_cached_key(oid);
    rows.dedup_by(|a, b| oid(a) == oid(b));
    rows.join("\n") + "\n"
}

struct Snmpsimd {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Snmpsimd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_snmpsim(switches: u32) -> Snmpsimd {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&cache).unwrap();
    for (p, mode) in [(dir.path(), 0o755), (data.as_path(), 0o755), (cache.as_path(), 0o777)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let base = walk();
    for s in 0..switches {
        let f = data.join(format!("sw{s:03}.snmprec"));
        std::fs::write(&f, switch_rows(&base, s)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new("snmpsimd");
    cmd.arg(format!("--data-dir={}", data.display()));
    cmd.arg(format!("--cache-dir={}", cache.display()));
    cmd.arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"));
    cmd.arg(format!("--logging-method=file:{}", dir.path().join("snmpsimd.log").display()));
    if std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false) {
        cmd.args(["--process-user=nobody", "--process-group=nogroup"]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let child = cmd.spawn().expect("snmpsimd (Debian package snmpsim)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "snmpsimd did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Snmpsimd { child, _dir: dir, port }
}

/// The wiremap: every access port of every switch (by its LLDP chassis ID) → an ERL of its own.
fn wiremap(switches: u32) -> SharedWiremap {
    let mut erls = Vec::new();
    let mut entries = Vec::new();
    for s in 0..switches {
        for p in 1..=PORTS {
            erls.push(Erl {
                label: format!("sw{s} port {p}"),
                civic: CivicAddress {
                    country: Some("US".into()),
                    a1: Some("WA".into()),
                    a3: Some("Redmond".into()),
                    rd: Some("Microsoft Way".into()),
                    hno: Some("1".into()),
                    room: Some(format!("{s}-{p}")),
                    ..Default::default()
                },
                ..Default::default()
            });
            let chassis_id = sosdesk::location::format_mac(&chassis(s));
            entries.push(WiremapEntry {
                key: WiremapKey::Port {
                    chassis_id,
                    port_subtype: PortIdSubtype::LocallyAssigned,
                    port_id: format!("Fa3/0/{p}"),
                },
                erl: erls.len() - 1,
            });
        }
    }
    SharedWiremap::new(Wiremap::build(erls, &entries).expect("the bench wiremap"))
}

#[derive(Default)]
struct Phase {
    ns: Vec<u64>,
    misses: u64,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn report(name: &str, phase: &mut Phase) {
    phase.ns.sort_unstable();
    println!(
        "  look-ups {name:<8} n={:>7}  p50 {:>6.2} µs  p99 {:>6.2} µs  p99.9 {:>7.2} µs  max {:>8.1} µs  not located {}",
        phase.ns.len(),
        pct(&phase.ns, 0.50),
        pct(&phase.ns, 0.99),
        pct(&phase.ns, 0.999),
        phase.ns.last().copied().unwrap_or(0) as f64 / 1000.0,
        phase.misses
    );
}

fn run(switches: u32, rounds: u32) {
    println!("== {switches} switch(es) × {PORTS} ports ({} phones), {rounds} rounds", switches * PORTS);
    let sim = start_snmpsim(switches);
    let targets: Vec<SwitchTarget> = (0..switches)
        .map(|s| SwitchTarget {
            name: format!("sw{s:03}"),
            address: format!("127.0.0.1:{}", sim.port),
            credentials: Credentials::V2c { community: format!("sw{s:03}") },
            interval: Duration::from_secs(24 * 3600),
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let (discovery, _task) = rt.block_on(async { sosdesk::location::discovery::spawn(targets, None, stop) });
    // The task polls once at start: wait for that round (it also warms snmpsim's index cache).
    let t = Instant::now();
    let first = rt.block_on(discovery.poll_now()).expect("the discovery task");
    let failing: Vec<_> = first.switches.iter().filter(|s| s.state != "ok").map(|s| (&s.name, &s.error)).collect();
    assert!(failing.is_empty(), "switches failing: {failing:?}");
    let learnt: usize = first.switches.iter().map(|s| s.macs).sum();
    println!("  first round (after start): {:.0} ms, {learnt} MACs learnt", t.elapsed().as_secs_f64() * 1000.0);

    let locator = Arc::new(DiscoveringLocator { wiremap: wiremap(switches), table: discovery.table().clone() });
    // 0 idle, 1 a round running; the look-up thread files each latency under the phase.
    let phase = Arc::new(AtomicU8::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let phases = Arc::new(Mutex::new([Phase::default(), Phase::default()]));
    let looker = {
        let (locator, phase, done, phases) = (locator.clone(), phase.clone(), done.clone(), phases.clone());
        std::thread::spawn(move || {
            let mut local = [Phase::default(), Phase::default()];
            let mut i: u32 = 0;
            while !done.load(Ordering::Relaxed) {
                let (s, p) = (i % switches, i / switches % PORTS + 1);
                i = i.wrapping_add(7919);
                let device = DeviceAttachment { ip: Some(IpAddr::V4(phone_ip(s, p))), ..Default::default() };
                let which = phase.load(Ordering::Relaxed) as usize;
                let t = Instant::now();
                let found = locator.locate(&device);
                let ns = t.elapsed().as_nanos() as u64;
                let slot = &mut local[which.min(1)];
                slot.ns.push(ns);
                if found.is_none() {
                    slot.misses += 1;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            *phases.lock().unwrap() = local;
        })
    };
    let mut round_ms = Vec::new();
    for _ in 0..rounds {
        // Idle as long as the last round took (at least 2 s), then a round.
        let idle = round_ms.last().map(|ms: &f64| Duration::from_secs_f64(ms / 1000.0)).unwrap_or_default();
        std::thread::sleep(idle.max(Duration::from_secs(2)));
        phase.store(1, Ordering::Relaxed);
        let t = Instant::now();
        let r = rt.block_on(discovery.poll_now()).expect("the discovery task");
        round_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        phase.store(0, Ordering::Relaxed);
        assert!(r.switches.iter().all(|s| s.state == "ok"), "a switch failed a round");
    }
    std::thread::sleep(Duration::from_secs(2));
    done.store(true, Ordering::Relaxed);
    looker.join().unwrap();
    let mut sorted = round_ms.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "  round: median {:.0} ms, min {:.0} ms, max {:.0} ms ({} rounds); per switch (median / N): {:.1} ms",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        sorted.len(),
        sorted[sorted.len() / 2] / switches as f64
    );
    let mut phases = phases.lock().unwrap();
    let [idle, polling] = &mut *phases;
    report("idle", idle);
    report("polling", polling);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.windows(2).find(|w| w[0] == flag).and_then(|w| w[1].parse::<u32>().ok());
    let rounds = value("--rounds").unwrap_or(5);
    match value("--switches") {
        Some(n) => run(n, rounds),
        None => {
            run(1, rounds);
            run(100, rounds);
        }
    }
}
