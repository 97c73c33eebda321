//! Wiremap lookups against a 1,000,000-entry map (DESIGN.md target: p99 < 2 µs). Results go in
//! BENCHMARKS.md with the command:
//!
//!   cargo bench --bench wiremap
//!
//! The map (fixed-seed xorshift, so every run builds the same one) maps onto 10,000 ERLs:
//!
//! | kind | entries | how |
//! | --- | ---: | --- |
//! | IPv4 subnets | 590,000 | random nets anywhere in the space; lengths 2 % /16, 4 % /20, 8 % /22, 50 % /24, 14 % /26, 10 % /27, 7 % /28, 5 % /30 (so /16s contain many of the others) |
//! | IPv6 subnets | 100,000 | inside 16 organisation /32s, lengths /48–/64 evenly |
//! | BSSIDs | 100,000 | random |
//! | switches | 100,000 | half MAC-address chassis IDs, half names (`bldg12-idf3-sw0042`) |
//! | ports | 100,000 | 4 on each of 25,000 of those switches: 60 % InterfaceName `GigabitEthernet1/0/n`, 30 % LocallyAssigned `n`, 10 % InterfaceAlias `desk-n` |
//! | MACs | 10,000 | random |
//!
//! The 1,000,000 queries, in random order, are a mix of what a LIS is asked:
//!
//! | share | device | expected answer |
//! | ---: | --- | --- |
//! | 35 % | IPv4 address only, inside a random IPv4 entry | subnet |
//! | 10 % | IPv6 address only, inside a random IPv6 entry | subnet |
//! | 5 % | IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) inside a random IPv4 entry | subnet |
//! | 15 % | Wi-Fi: known BSSID + IPv4 address | access point |
//! | 15 % | LLDP: known chassis (MAC chassis spelled `0b:23:…`, names in upper case) + known port and subtype + IPv4 | port |
//! | 5 % | LLDP: known chassis, port not in the map + IPv4 | switch |
//! | 5 % | known MAC + IPv4 | MAC |
//! | 10 % | strangers: unknown BSSID, MAC and chassis, random IPv4 address | mostly none: every index is searched |
//!
//! Each lookup is timed on its own with `Instant` (the cost of an empty `Instant::now()` /
//! `elapsed()` pair is measured and printed, and included in every figure); the mean is also
//! taken over batches of 1,000 lookups under one timer, where that overhead vanishes. A sample of
//! 1,000 lookups is timed with cold caches (each after reading 64 MiB of other memory), as a call
//! that arrives after other work would find them. Criterion then measures the mean again.
//!
//! Without `--bench` (which `cargo bench` passes), e.g. under `cargo test --benches`, everything
//! runs at 1/100 scale, as a quick check that the benchmark still works.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use sosdesk::location::wiremap::{SharedWiremap, Wiremap};
use sosdesk::location::{CivicAddress, DeviceAttachment, Erl, Mac, MatchKind, PortIdSubtype, WiremapEntry, WiremapKey};

/// xorshift64: small, fixed seed, the same map on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn mac(&mut self) -> Mac {
        let b = self.next().to_be_bytes();
        [b[0] & 0xfe, b[1], b[2], b[3], b[4], b[5]]
    }
}

const V4_LENGTHS: [(u8, u32); 8] = [(16, 2), (20, 4), (22, 8), (24, 50), (26, 14), (27, 10), (28, 7), (30, 5)];

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn mac_text(m: &Mac, sep: &str, upper: bool) -> String {
    let parts: Vec<String> = m.iter().map(|b| if upper { format!("{b:02X}") } else { format!("{b:02x}") }).collect();
    parts.join(sep)
}

struct Switch {
    /// As stored in the map.
    chassis: String,
    /// As a device reports it (another spelling of the same ID).
    reported: String,
    ports: Vec<(PortIdSubtype, String)>,
}

struct Data {
    erls: Vec<Erl>,
    entries: Vec<WiremapEntry>,
    v4: Vec<(u32, u8)>,
    v6: Vec<(u128, u8)>,
    bssids: Vec<Mac>,
    macs: Vec<Mac>,
    switches: Vec<Switch>,
}

fn generate(scale: usize, rng: &mut Rng) -> Data {
    let n = |full: usize| full / scale;
    let erls: Vec<Erl> = (0..n(10_000).max(1))
        .map(|i| Erl {
            label: format!("Site {} floor {}", i / 20, i % 20),
            civic: CivicAddress {
                country: Some("US".into()),
                a1: Some("WA".into()),
                a3: Some("Redmond".into()),
                hno: Some((i / 20).to_string()),
                rd: Some("Main".into()),
                sts: Some("St".into()),
                flr: Some((i % 20).to_string()),
                ..CivicAddress::default()
            },
            ..Erl::default()
        })
        .collect();
    let mut entries = Vec::with_capacity(n(1_000_000));
    let mut push = |key: WiremapKey, rng: &mut Rng| entries.push(WiremapEntry { key, erl: rng.below(erls.len()) });

    // Distinct keys only: a repeated key with another ERL is (rightly) refused by the build.
    let mut seen4 = std::collections::HashSet::new();
    let weight: u32 = V4_LENGTHS.iter().map(|l| l.1).sum();
    let mut v4 = Vec::new();
    while v4.len() < n(590_000) {
        let mut w = (rng.next() % u64::from(weight)) as u32;
        let mut len = 24;
        for (l, share) in V4_LENGTHS {
            if w < share {
                len = l;
                break;
            }
            w -= share;
        }
        let net = rng.next() as u32 & mask4(len);
        if seen4.insert((net, len)) {
            v4.push((net, len));
            push(WiremapKey::Subnet(ipnet::Ipv4Net::new_assert(net.into(), len).into()), rng);
        }
    }
    let orgs: Vec<u128> = (0..16).map(|_| (u128::from(rng.next()) << 96) & mask6(32)).collect();
    let mut seen6 = std::collections::HashSet::new();
    let mut v6 = Vec::new();
    while v6.len() < n(100_000) {
        let len = 48 + rng.below(17) as u8;
        let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 32;
        let net = (orgs[rng.below(orgs.len())] | low) & mask6(len);
        if seen6.insert((net, len)) {
            v6.push((net, len));
            push(WiremapKey::Subnet(ipnet::Ipv6Net::new_assert(net.into(), len).into()), rng);
        }
    }
    let mut distinct_macs = std::collections::HashSet::new();
    let mut unique_mac = |rng: &mut Rng| loop {
        let m = rng.mac();
        if distinct_macs.insert(m) {
            return m;
        }
    };
    let bssids: Vec<Mac> = (0..n(100_000)).map(|_| unique_mac(rng)).collect();
    for b in &bssids {
        push(WiremapKey::Bssid(*b), rng);
    }
    let macs: Vec<Mac> = (0..n(10_000)).map(|_| unique_mac(rng)).collect();
    for m in &macs {
        push(WiremapKey::Mac(*m), rng);
    }
    let mut switches: Vec<Switch> = (0..n(100_000))
        .map(|i| {
            if i % 2 == 0 {
                let m = unique_mac(rng);
                Switch { chassis: mac_text(&m, "-", true), reported: mac_text(&m, ":", false), ports: Vec::new() }
            } else {
                let name = format!("bldg{}-idf{}-sw{:04}", i / 1000, (i / 100) % 10, i);
                Switch { reported: name.to_ascii_uppercase(), chassis: name, ports: Vec::new() }
            }
        })
        .collect();
    for s in &switches {
        push(WiremapKey::Switch { chassis_id: s.chassis.clone() }, rng);
    }
    for s in switches.iter_mut().take(n(25_000)) {
        for p in 1..=4 {
            let port = match rng.below(10) {
                0..=5 => (PortIdSubtype::InterfaceName, format!("GigabitEthernet1/0/{p}")),
                6..=8 => (PortIdSubtype::LocallyAssigned, p.to_string()),
                _ => (PortIdSubtype::InterfaceAlias, format!("desk-{p}")),
            };
            push(
                WiremapKey::Port { chassis_id: s.chassis.clone(), port_subtype: port.0, port_id: port.1.clone() },
                rng,
            );
            s.ports.push(port);
        }
    }
    Data { erls, entries, v4, v6, bssids, macs, switches }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Category {
    Ipv4,
    Ipv6,
    Mapped,
    Wifi,
    Port,
    Switch,
    Mac,
    Stranger,
}

impl Category {
    const ALL: [Category; 8] = [
        Category::Ipv4,
        Category::Ipv6,
        Category::Mapped,
        Category::Wifi,
        Category::Port,
        Category::Switch,
        Category::Mac,
        Category::Stranger,
    ];

    fn expected(self) -> Option<MatchKind> {
        match self {
            Category::Ipv4 | Category::Ipv6 | Category::Mapped => Some(MatchKind::Subnet),
            Category::Wifi => Some(MatchKind::WirelessAccessPoint),
            Category::Port => Some(MatchKind::SwitchPort),
            Category::Switch => Some(MatchKind::Switch),
            Category::Mac => Some(MatchKind::Mac),
            Category::Stranger => None,
        }
    }
}

fn queries(data: &Data, count: usize, rng: &mut Rng) -> Vec<(Category, DeviceAttachment)> {
    let ipv4_host = |rng: &mut Rng| {
        let (net, len) = data.v4[rng.below(data.v4.len())];
        std::net::Ipv4Addr::from(net | (rng.next() as u32 & !mask4(len)))
    };
    (0..count)
        .map(|_| {
            let pick = rng.below(100);
            let mut dev = DeviceAttachment { ip: Some(ipv4_host(rng).into()), ..DeviceAttachment::default() };
            let category = match pick {
                0..=34 => Category::Ipv4,
                35..=44 => {
                    let (net, len) = data.v6[rng.below(data.v6.len())];
                    let host = (u128::from(rng.next()) << 64 | u128::from(rng.next())) & !mask6(len);
                    dev.ip = Some(std::net::Ipv6Addr::from(net | host).into());
                    Category::Ipv6
                }
                45..=49 => {
                    dev.ip = Some(ipv4_host(rng).to_ipv6_mapped().into());
                    Category::Mapped
                }
                50..=64 => {
                    dev.bssid = Some(data.bssids[rng.below(data.bssids.len())]);
                    Category::Wifi
                }
                65..=79 => {
                    // The first quarter of the switches have ports in the map.
                    let s = &data.switches[rng.below(data.switches.len() / 4)];
                    let (subtype, port) = &s.ports[rng.below(s.ports.len())];
                    dev.chassis_id = Some(s.reported.clone());
                    dev.port_id = Some(port.clone());
                    dev.port_subtype = Some(*subtype);
                    Category::Port
                }
                80..=84 => {
                    let s = &data.switches[rng.below(data.switches.len())];
                    dev.chassis_id = Some(s.reported.clone());
                    dev.port_id = Some("TenGigabitEthernet9/9/99".into());
                    dev.port_subtype = Some(PortIdSubtype::InterfaceName);
                    Category::Switch
                }
                85..=89 => {
                    dev.mac = Some(data.macs[rng.below(data.macs.len())]);
                    Category::Mac
                }
                _ => {
                    // Locally administered addresses: never among the generated ones.
                    dev.bssid = Some([0x02, 0, 0, 0, 0, rng.next() as u8]);
                    dev.mac = Some([0x02, 0, 0, 0, 1, rng.next() as u8]);
                    dev.chassis_id = Some(format!("unknown-switch-{}", rng.below(1000)));
                    dev.port_id = Some("1".into());
                    dev.port_subtype = Some(PortIdSubtype::LocallyAssigned);
                    dev.ip = Some(std::net::Ipv4Addr::from(rng.next() as u32).into());
                    Category::Stranger
                }
            };
            (category, dev)
        })
        .collect()
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Nearest-rank percentiles of nanosecond samples.
struct Summary {
    n: usize,
    mean: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

fn summarise(mut ns: Vec<u64>) -> Summary {
    ns.sort_unstable();
    let rank = |q: f64| ns[((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1];
    Summary {
        n: ns.len(),
        mean: ns.iter().sum::<u64>() as f64 / ns.len() as f64,
        p50: rank(0.50),
        p99: rank(0.99),
        p999: rank(0.999),
        max: ns[ns.len() - 1],
    }
}

fn print_row(name: &str, s: &Summary) {
    println!("| {name} | {} | {:.0} | {} | {} | {} | {} |", s.n, s.mean, s.p50, s.p99, s.p999, s.max);
}

/// Times each call of `f` on its own, over every query.
fn time_each<T>(qs: &[(Category, DeviceAttachment)], mut f: impl FnMut(&DeviceAttachment) -> T) -> Vec<u64> {
    let mut ns = Vec::with_capacity(qs.len());
    for (_, q) in qs {
        let start = Instant::now();
        black_box(f(black_box(q)));
        ns.push(start.elapsed().as_nanos() as u64);
    }
    ns
}

/// Mean per call over batches of 1,000 calls under one timer.
fn batch_mean<T>(qs: &[(Category, DeviceAttachment)], mut f: impl FnMut(&DeviceAttachment) -> T) -> f64 {
    let mut total = Duration::ZERO;
    for batch in qs.chunks(1000) {
        let start = Instant::now();
        for (_, q) in batch {
            black_box(f(black_box(q)));
        }
        total += start.elapsed();
    }
    total.as_nanos() as f64 / qs.len() as f64
}

fn report(map: &Wiremap, qs: &[(Category, DeviceAttachment)]) {
    // Every answer checked against what the query was made to hit, before any timing.
    for cat in Category::ALL {
        let mut by_kind = std::collections::BTreeMap::new();
        for (_, q) in qs.iter().filter(|(c, _)| *c == cat) {
            *by_kind.entry(map.lookup(q).map(|a| a.1)).or_insert(0usize) += 1;
        }
        println!("answers for {cat:?} queries: {by_kind:?}");
        if let Some(kind) = cat.expected() {
            assert_eq!(by_kind.keys().collect::<Vec<_>>(), [&Some(kind)], "{cat:?} queries must all match {kind:?}");
        }
    }

    let timer = summarise(
        (0..qs.len())
            .map(|_| {
                let start = Instant::now();
                start.elapsed().as_nanos() as u64
            })
            .collect(),
    );
    println!(
        "\ntimer overhead (empty Instant::now/elapsed pair, included in every per-lookup figure): p50 {} ns, p99 {} ns",
        timer.p50, timer.p99
    );

    // Warm-up pass (page faults, caches), then the measured passes.
    black_box(batch_mean(qs, |q| map.lookup(q)));
    println!("\nper-lookup latency, ns (each lookup timed on its own):\n");
    println!("| lookup | lookups | mean | p50 | p99 | p99.9 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let each = time_each(qs, |q| map.lookup(q));
    print_row("`Wiremap::lookup`, all queries", &summarise(each.clone()));
    for cat in Category::ALL {
        let ns: Vec<u64> = qs.iter().zip(&each).filter(|((c, _), _)| *c == cat).map(|(_, &t)| t).collect();
        print_row(&format!("… {cat:?} only"), &summarise(ns));
    }
    println!();
    println!(
        "batch mean (1,000 lookups per timer), ns per lookup: `Wiremap::lookup` {:.1}",
        batch_mean(qs, |q| map.lookup(q))
    );

    // Back to back, the lookups above keep the upper levels of every index in cache. An emergency
    // call's lookup comes after other work: here each lookup follows a pass over 64 MiB of other
    // memory (twice this machine's 32 MiB L3), for a sample of the queries.
    let cold_samples = (qs.len() / 1000).max(10);
    let mut evict = vec![1u8; 64 << 20];
    let mut cold = Vec::with_capacity(cold_samples);
    for (i, (_, q)) in qs.iter().step_by(qs.len() / cold_samples).enumerate().take(cold_samples) {
        for line in evict.chunks_mut(64) {
            line[0] = line[0].wrapping_add(i as u8);
        }
        black_box(&evict);
        let start = Instant::now();
        black_box(map.lookup(black_box(q)));
        cold.push(start.elapsed().as_nanos() as u64);
    }
    println!("\n| lookup | lookups | mean | p50 | p99 | p99.9 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    print_row("`Wiremap::lookup`, cold cache (after 64 MiB of other memory)", &summarise(cold));
}

fn report_shared(shared: &SharedWiremap, qs: &[(Category, DeviceAttachment)]) {
    println!("\n| lookup | lookups | mean | p50 | p99 | p99.9 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    print_row("`SharedWiremap::lookup` (under the read lock)", &summarise(time_each(qs, |q| shared.lookup(q))));
    print_row("`SharedWiremap::load().lookup` (clone the Arc)", &summarise(time_each(qs, |q| shared.load().lookup(q))));
    println!(
        "batch mean, ns per lookup: `SharedWiremap::lookup` {:.1}, `load().lookup` {:.1}",
        batch_mean(qs, |q| shared.lookup(q)),
        batch_mean(qs, |q| shared.load().lookup(q))
    );
}

fn main() {
    let scale = if std::env::args().any(|a| a == "--bench") { 1 } else { 100 };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);

    let started = Instant::now();
    let data = generate(scale, &mut rng);
    let qs = queries(&data, 1_000_000 / scale, &mut rng);
    println!("generated {} entries and {} queries in {:.2?}", data.entries.len(), qs.len(), started.elapsed());

    let rss_before = rss_kib();
    let started = Instant::now();
    let map = Wiremap::build(data.erls.clone(), &data.entries).expect("generated keys are distinct");
    let build = started.elapsed();
    let rss_after = rss_kib();
    println!("\nbuilt: {} in {build:.2?}", map.stats());
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        println!(
            "resident memory grew by {:.0} MiB over the build (the index, plus whatever the allocator kept of the build's temporaries)",
            (a.saturating_sub(b)) as f64 / 1024.0
        );
    }
    assert_eq!(map.len(), data.entries.len());

    report(&map, &qs);
    let shared = SharedWiremap::new(map);
    report_shared(&shared, &qs);

    let mut c = Criterion::default().configure_from_args();
    let mut i = 0;
    c.bench_function("wiremap lookup, 1M entries, mixed queries (Wiremap::lookup)", |b| {
        let map = shared.load();
        b.iter(|| {
            i = (i + 1) % qs.len();
            map.lookup(black_box(&qs[i].1))
        })
    });
    c.final_summary();

    // What a replace leaves behind: the old map is freed by whoever drops it last.
    let replacement = Wiremap::build(data.erls.clone(), &data.entries).expect("same data");
    let old = shared.replace(replacement);
    let started = Instant::now();
    drop(old);
    println!("\nfreeing a replaced map of {} entries took {:.2?}", data.entries.len(), started.elapsed());
}
