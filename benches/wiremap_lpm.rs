//! The measurement behind the wiremap's subnet structure (src/location/wiremap/, "Structure,
//! chosen by measurement"): prototypes of each candidate longest-prefix-match structure, side by
//! side on the same prefixes and addresses. Not the production code — that is measured by
//! `benches/wiremap.rs`.
//!
//!   cargo bench --bench wiremap_lpm
//!
//! Data (fixed-seed xorshift): 600,000 random IPv4 prefixes (2 % /16, 4 % /20, 8 % /22, 50 % /24,
//! 14 % /26, 10 % /27, 7 % /28, 5 % /30; 595,629 once duplicates are dropped) and 100,000 IPv6
//! prefixes /48–/64 inside 16 /32s (99,973). Addresses: 80 % a random host of a random prefix,
//! 20 % random. Every lookup is timed on its own with `Instant` (the empty pair's cost is printed
//! and included); "batch mean" is 1,000,000 lookups under one timer. Two rounds.

use sosdesk::location::wiremap::flatten;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const NONE: u32 = u32::MAX;

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Candidate A: one hash map per prefix length, probed longest first.
struct PerLength<T> {
    lengths: Vec<u8>,
    maps: Vec<HashMap<T, u32>>,
    mask: fn(u8) -> T,
}

impl<T: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = T>> PerLength<T> {
    fn new(bits: u8, prefixes: &[(T, u8, u32)], mask: fn(u8) -> T) -> Self {
        let mut maps: Vec<HashMap<T, u32>> = (0..=bits).map(|_| HashMap::new()).collect();
        for &(net, len, erl) in prefixes {
            maps[len as usize].insert(net, erl);
        }
        let lengths = (0..=bits).rev().filter(|&l| !maps[l as usize].is_empty()).collect();
        PerLength { lengths, maps, mask }
    }

    fn get(&self, a: T) -> u32 {
        for &l in &self.lengths {
            if let Some(&erl) = self.maps[l as usize].get(&(a & (self.mask)(l))) {
                return erl;
            }
        }
        NONE
    }
}

/// Candidate B: the ranges' starts and ERLs in two arrays, one binary search.
struct Ranges<T> {
    starts: Vec<T>,
    erls: Vec<u32>,
}

impl<T: Copy + Ord> Ranges<T> {
    fn new(flat: &[(T, u32)]) -> Self {
        Ranges { starts: flat.iter().map(|r| r.0).collect(), erls: flat.iter().map(|r| r.1).collect() }
    }

    fn get(&self, a: T) -> u32 {
        self.erls[self.starts.partition_point(|&s| s <= a) - 1]
    }
}

/// `block[h]`: index of the range holding `h << 16`; `block[65536]`: the last range.
fn block_index(starts: impl Fn(usize) -> u32, len: usize) -> Vec<u32> {
    let mut block = Vec::with_capacity(65537);
    let mut i = 0;
    for h in 0..=u16::MAX as u32 {
        while i + 1 < len && starts(i + 1) <= h << 16 {
            i += 1;
        }
        block.push(i as u32);
    }
    block.push((len - 1) as u32);
    block
}

/// Candidate C: IPv4 ranges (two arrays) with a direct index on the top 16 bits.
struct Indexed {
    ranges: Ranges<u32>,
    block: Vec<u32>,
}

impl Indexed {
    fn get(&self, a: u32) -> u32 {
        let h = (a >> 16) as usize;
        let (lo, hi) = (self.block[h] as usize, self.block[h + 1] as usize + 1);
        let i = lo + self.ranges.starts[lo..hi].partition_point(|&s| s <= a) - 1;
        self.ranges.erls[i]
    }
}

/// Candidate D (chosen): as C, with each start and its ERL side by side.
struct IndexedPairs {
    pairs: Vec<(u32, u32)>,
    block: Vec<u32>,
}

impl IndexedPairs {
    fn get(&self, a: u32) -> u32 {
        let h = (a >> 16) as usize;
        let ranges = &self.pairs[self.block[h] as usize..=self.block[h + 1] as usize];
        ranges[ranges.partition_point(|r| r.0 <= a) - 1].1
    }
}

/// Candidate E: IPv6 ranges with every 16th start in a small top array, then one 16-start block.
struct Sampled {
    top: Vec<u128>,
    ranges: Ranges<u128>,
}

impl Sampled {
    fn get(&self, a: u128) -> u32 {
        let lo = (self.top.partition_point(|&s| s <= a) - 1) * 16;
        let hi = (lo + 16).min(self.ranges.starts.len());
        self.ranges.erls[lo + self.ranges.starts[lo..hi].partition_point(|&s| s <= a) - 1]
    }
}

fn timed<T: Copy>(name: &str, addresses: &[T], overhead: u64, get: impl Fn(T) -> u32) {
    let mut ns: Vec<u64> = addresses
        .iter()
        .map(|&a| {
            let start = Instant::now();
            black_box(get(black_box(a)));
            start.elapsed().as_nanos() as u64
        })
        .collect();
    ns.sort_unstable();
    let rank = |q: f64| ns[((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1];
    let start = Instant::now();
    for &a in addresses {
        black_box(get(black_box(a)));
    }
    let batch = start.elapsed().as_nanos() as f64 / addresses.len() as f64;
    println!(
        "| {name} | {} | {} | {} | {} | {batch:.1} |  (timer pair {overhead} ns included)",
        rank(0.5),
        rank(0.99),
        rank(0.999),
        ns[ns.len() - 1]
    );
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test --benches) is a quick 1/100 check.
    let scale = if std::env::args().any(|a| a == "--bench") { 1 } else { 100 };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let lengths: [(u8, u64); 8] = [(16, 2), (20, 4), (22, 8), (24, 50), (26, 14), (27, 10), (28, 7), (30, 5)];
    let mut v4: Vec<(u32, u8, u32)> = (0..600_000 / scale as u32)
        .map(|i| {
            let mut w = rng.next() % 100;
            let mut len = 24;
            for (l, share) in lengths {
                if w < share {
                    len = l;
                    break;
                }
                w -= share;
            }
            (rng.next() as u32 & mask4(len), len, i % 10_000)
        })
        .collect();
    let orgs: Vec<u128> = (0..16).map(|_| (u128::from(rng.next()) << 96) & mask6(32)).collect();
    let mut v6: Vec<(u128, u8, u32)> = (0..100_000 / scale as u32)
        .map(|i| {
            let len = 48 + (rng.next() % 17) as u8;
            let org = orgs[(rng.next() % 16) as usize];
            let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 32;
            ((org | low) & mask6(len), len, i % 10_000)
        })
        .collect();
    v4.sort_unstable_by_key(|p| (p.0, p.1));
    v4.dedup_by_key(|p| (p.0, p.1));
    v6.sort_unstable_by_key(|p| (p.0, p.1));
    v6.dedup_by_key(|p| (p.0, p.1));
    println!("{} IPv4 and {} IPv6 prefixes", v4.len(), v6.len());

    let started = Instant::now();
    let hash4 = PerLength::new(32, &v4, mask4);
    let hash6 = PerLength::new(128, &v6, mask6);
    println!("per-length hash maps built in {:.1?}", started.elapsed());
    let started = Instant::now();
    let spans4: Vec<(u32, u32, u32)> = v4.iter().map(|&(n, l, e)| (n, n | !mask4(l), e)).collect();
    let flat4 = flatten(0u32, &spans4, |a| a.checked_add(1));
    let spans6: Vec<(u128, u128, u32)> = v6.iter().map(|&(n, l, e)| (n, n | !mask6(l), e)).collect();
    let flat6 = flatten(0u128, &spans6, |a| a.checked_add(1));
    println!("flattened in {:.1?}: {} IPv4 ranges, {} IPv6 ranges", started.elapsed(), flat4.len(), flat6.len());
    let ranges4 = Ranges::new(&flat4);
    let ranges6 = Ranges::new(&flat6);
    let block = block_index(|i| flat4[i].0, flat4.len());
    let indexed = Indexed { ranges: Ranges::new(&flat4), block: block.clone() };
    let pairs = IndexedPairs { pairs: flat4.clone(), block };
    let sampled = Sampled { top: ranges6.starts.iter().step_by(16).copied().collect(), ranges: Ranges::new(&flat6) };

    let n = 1_000_000 / scale;
    let mut a4 = Vec::with_capacity(n);
    let mut a6 = Vec::with_capacity(n);
    for _ in 0..n {
        if !rng.next().is_multiple_of(5) {
            let (net, l, _) = v4[(rng.next() % v4.len() as u64) as usize];
            a4.push(net | (rng.next() as u32 & !mask4(l)));
            let (net, l, _) = v6[(rng.next() % v6.len() as u64) as usize];
            a6.push(net | (u128::from(rng.next()) & !mask6(l)));
        } else {
            a4.push(rng.next() as u32);
            a6.push(orgs[(rng.next() % 16) as usize] | ((u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 32));
        }
    }
    // All candidates give the same answers.
    for &a in &a4 {
        let want = hash4.get(a);
        assert_eq!((ranges4.get(a), indexed.get(a), pairs.get(a)), (want, want, want));
    }
    for &a in &a6 {
        let want = hash6.get(a);
        assert_eq!((ranges6.get(a), sampled.get(a)), (want, want));
    }
    println!(
        "hits: IPv4 {:.1} %, IPv6 {:.1} %",
        a4.iter().filter(|&&a| pairs.get(a) != NONE).count() as f64 * 100.0 / n as f64,
        a6.iter().filter(|&&a| ranges6.get(a) != NONE).count() as f64 * 100.0 / n as f64
    );
    let mut pair_ns: Vec<u64> = (0..n)
        .map(|_| {
            let start = Instant::now();
            start.elapsed().as_nanos() as u64
        })
        .collect();
    pair_ns.sort_unstable();
    let overhead = pair_ns[n / 2];

    for round in 1..=2 {
        println!("\nround {round}\n\n| candidate | p50 ns | p99 ns | p99.9 ns | max ns | batch mean ns |\n| --- | ---: | ---: | ---: | ---: | ---: |");
        timed("IPv4 hash map per prefix length, longest first", &a4, overhead, |a| hash4.get(a));
        timed("IPv4 ranges, binary search", &a4, overhead, |a| ranges4.get(a));
        timed("IPv4 ranges + /16 index, separate start/ERL arrays", &a4, overhead, |a| indexed.get(a));
        timed("IPv4 ranges + /16 index, (start, ERL) pairs", &a4, overhead, |a| pairs.get(a));
        timed("IPv6 hash map per prefix length, longest first", &a6, overhead, |a| hash6.get(a));
        timed("IPv6 ranges, sampled top level then one block", &a6, overhead, |a| sampled.get(a));
        timed("IPv6 ranges, binary search", &a6, overhead, |a| ranges6.get(a));
    }
}
