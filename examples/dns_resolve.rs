//! How long an RFC 3263 resolution takes with sosdesk's own resolver (`sosdesk::dns::SipResolver`:
//! hickory, the config's `[dns] servers`, NAPTR → SRV → A/AAAA): cold (a new resolver each
//! time, so every question goes to the DNS server: a cache miss) and warm (one resolver, its
//! cache filled by a first resolution: what hickory answers without asking). Used by
//! bench/dns-route.sh against dnsmasq on loopback; not a test.
//!
//!   cargo run --release --example dns_resolve -- CONFIG TARGET N
//!
//! TARGET as a route's `address` takes it (`sip:provider.example`, `sips:…`, `host:port`).
//! Prints one line per mode: the targets found, and p50/p90/p99/max of `resolve()` in µs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sosdesk::config::Config;
use sosdesk::dns::SipResolver;
use sosdesk::sip::rfc3263::SipTarget;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn line(mode: &str, mut times: Vec<Duration>, found: &str) {
    times.sort();
    println!(
        "mode={mode} resolutions={} p50_us={:.1} p90_us={:.1} p99_us={:.1} max_us={:.1} targets={found}",
        times.len(),
        pct(&times, 50.0),
        pct(&times, 90.0),
        pct(&times, 99.0),
        times.last().unwrap().as_secs_f64() * 1e6,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: dns_resolve CONFIG TARGET N");
        std::process::exit(2);
    }
    let cfg = Config::load(&PathBuf::from(&args[1])).unwrap_or_else(|e| panic!("{e}"));
    let target = SipTarget::parse(&args[2]).unwrap_or_else(|e| panic!("{e}"));
    let n: usize = args[3].parse().expect("N");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let describe = |r: &sosdesk::dns::Resolved| {
            r.peers.iter().map(|p| format!("{:?}:{}", p.transport, p.addr)).collect::<Vec<_>>().join(",")
        };
        // Cold: a resolver of its own for each resolution (building it is not timed).
        let mut cold = Vec::with_capacity(n);
        let mut found = String::new();
        for _ in 0..n {
            let resolver = SipResolver::from_config(&cfg).unwrap();
            let started = Instant::now();
            let r = resolver.resolve(&target).await.unwrap_or_else(|e| panic!("{target}: {e}"));
            cold.push(started.elapsed());
            found = describe(&r);
        }
        line("cold", cold, &found);
        // Warm: one resolver; the first resolution fills its cache and is not counted.
        let resolver = SipResolver::from_config(&cfg).unwrap();
        resolver.resolve(&target).await.unwrap_or_else(|e| panic!("{target}: {e}"));
        let mut warm = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let r = resolver.resolve(&target).await.unwrap_or_else(|e| panic!("{target}: {e}"));
            warm.push(started.elapsed());
            found = describe(&r);
        }
        line("warm", warm, &found);
    });
}
