//! Subnets as address ranges (see "Structure, chosen by measurement" in the `wiremap` module
//! documentation): prefixes flattened at build into non-overlapping ranges, each with the ERL of the
//! longest prefix covering it, so a longest-prefix match is one search for the range holding the
//! address — IPv4 with a direct index on the top 16 bits, IPv6 by binary search.

use ipnet::{Ipv4Net, Ipv6Net};

use super::NONE;

/// Flattens prefixes, given as inclusive `(first, last, erl)` address ranges sorted by first
/// address and then widest first, into the starts of non-overlapping ranges that cover the whole
/// address space from `zero`, each with the ERL of the longest prefix covering it (`NONE` in the
/// gaps). Prefixes either nest or are disjoint, so a stack of the open ones is enough. Adjacent
/// ranges with the same ERL are merged.
/// Public only so `benches/wiremap_lpm.rs` measures this very code among its candidates.
#[doc(hidden)]
pub fn flatten<T: Copy + Ord>(zero: T, prefixes: &[(T, T, u32)], next: impl Fn(T) -> Option<T>) -> Vec<(T, u32)> {
    pub(super) fn emit<T: Copy + Ord>(out: &mut Vec<(T, u32)>, at: T, erl: u32) {
        let last = out.len() - 1;
        if out[last].0 == at {
            // A prefix starting where the last range starts is nested in it: it overrides it.
            out[last].1 = erl;
            if last > 0 && out[last - 1].1 == erl {
                out.pop();
            }
        } else if out[last].1 != erl {
            out.push((at, erl));
        }
    }
    let mut out = vec![(zero, NONE)];
    // Open prefixes: (last address, erl), innermost on top.
    let mut open: Vec<(T, u32)> = Vec::new();
    let close = |out: &mut Vec<(T, u32)>, open: &mut Vec<(T, u32)>| {
        if let Some((last, _)) = open.pop() {
            // After the innermost prefix ends, the next one out (or nothing) applies again.
            if let Some(after) = next(last) {
                emit(out, after, open.last().map_or(NONE, |o| o.1));
            }
        }
    };
    for &(first, last, erl) in prefixes {
        while open.last().is_some_and(|o| o.0 < first) {
            close(&mut out, &mut open);
        }
        emit(&mut out, first, erl);
        open.push((last, erl));
    }
    while !open.is_empty() {
        close(&mut out, &mut open);
    }
    out
}

/// IPv4 subnets as non-overlapping ranges, with a direct index on the address's top 16 bits.
pub(super) struct V4Ranges {
    /// (first address, ERL), sorted; the first starts at 0.0.0.0.
    pub(super) ranges: Vec<(u32, u32)>,
    /// `block[h]`: the range holding address `h << 16`; `block[65536]` the last range. The ranges
    /// of addresses in /16 number `h` are `block[h] ..= block[h + 1]`.
    pub(super) block: Vec<u32>,
}

impl V4Ranges {
    pub(super) fn new(prefixes: &[(u32, u8, u32)]) -> V4Ranges {
        let spans: Vec<(u32, u32, u32)> = prefixes
            .iter()
            .map(|&(start, len, erl)| (start, u32::from(Ipv4Net::new_assert(start.into(), len).broadcast()), erl))
            .collect();
        let ranges = flatten(0u32, &spans, |a| a.checked_add(1));
        let mut block = Vec::with_capacity(65537);
        let mut i = 0;
        for h in 0..=u16::MAX as u32 {
            let a = h << 16;
            while i + 1 < ranges.len() && ranges[i + 1].0 <= a {
                i += 1;
            }
            block.push(i as u32);
        }
        block.push((ranges.len() - 1) as u32);
        V4Ranges { ranges, block }
    }

    pub(super) fn get(&self, a: u32) -> u32 {
        let h = (a >> 16) as usize;
        let ranges = &self.ranges[self.block[h] as usize..=self.block[h + 1] as usize];
        // ranges[0] starts at or before `a`, so the count is at least 1.
        let i = ranges.partition_point(|r| r.0 <= a) - 1;
        ranges[i].1
    }
}

/// IPv6 subnets as non-overlapping ranges.
pub(super) struct V6Ranges {
    /// Sorted first addresses; the first is `::`.
    pub(super) starts: Vec<u128>,
    pub(super) erls: Vec<u32>,
}

impl V6Ranges {
    pub(super) fn new(prefixes: &[(u128, u8, u32)]) -> V6Ranges {
        let spans: Vec<(u128, u128, u32)> = prefixes
            .iter()
            .map(|&(start, len, erl)| (start, u128::from(Ipv6Net::new_assert(start.into(), len).broadcast()), erl))
            .collect();
        let (starts, erls) = flatten(0u128, &spans, |a| a.checked_add(1)).into_iter().unzip();
        V6Ranges { starts, erls }
    }

    pub(super) fn get(&self, a: u128) -> u32 {
        self.erls[self.starts.partition_point(|&s| s <= a) - 1]
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use ipnet::Ipv4Net;

    use super::*;

    /// A small fixed-seed generator (xorshift64), so failures reproduce.
    struct Xorshift(u64);
    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// The flattened ranges answer what painting every prefix, shortest first, answers — over a
    /// small address space where every address can be checked, with heavy nesting and shared ends.
    #[test]
    fn flattened_ranges_agree_with_a_longest_prefix_scan() {
        let mut rng = Xorshift(0x5eed_1234_abcd_0001);
        for round in 0..300 {
            // Prefixes of 10.0.0.0/22 and a few wider ones, lengths /20–/32.
            let mut prefixes: Vec<(u32, u8, u32)> = Vec::new();
            for _ in 0..(1 + round % 40) {
                let len = 20 + (rng.next() % 13) as u8;
                let a = 0x0a00_0000 | (rng.next() as u32 & 0x3ff);
                let net = Ipv4Net::new_assert(a.into(), len).trunc();
                prefixes.push((u32::from(net.network()), len, (rng.next() % 4) as u32));
            }
            prefixes.sort_unstable_by_key(|&(s, l, _)| (s, l));
            prefixes.dedup_by_key(|&mut (s, l, _)| (s, l));
            let ranges = V4Ranges::new(&prefixes);
            // The expected answers, painted shortest prefix first over a window around the prefixes.
            let window = 0x09ff_f000u32..0x0a00_1400u32;
            let mut expected = vec![NONE; window.len()];
            let mut by_length = prefixes.clone();
            by_length.sort_by_key(|p| p.1);
            for &(start, len, erl) in &by_length {
                let last = u32::from(Ipv4Net::new_assert(start.into(), len).broadcast());
                for a in start..=last {
                    expected[(a - window.start) as usize] = erl;
                }
            }
            for a in window.clone() {
                let want = expected[(a - window.start) as usize];
                assert_eq!(ranges.get(a), want, "round {round}, address {}", Ipv4Addr::from(a));
            }
            for a in [0, u32::MAX] {
                assert_eq!(ranges.get(a), NONE);
            }
            // Merged and non-overlapping: starts strictly increase, neighbours differ.
            assert_eq!(ranges.ranges[0].0, 0);
            assert!(ranges.ranges.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
        }
    }

    #[test]
    fn ranges_reach_both_ends_of_the_address_space() {
        let all = V4Ranges::new(&[(0, 0, 7), (u32::MAX, 32, 8)]);
        assert_eq!(all.get(0), 7);
        assert_eq!(all.get(u32::MAX - 1), 7);
        assert_eq!(all.get(u32::MAX), 8);
        let empty = V4Ranges::new(&[]);
        assert_eq!((empty.get(0), empty.get(u32::MAX)), (NONE, NONE));

        let v6 = V6Ranges::new(&[(0, 0, 1), (1 << 64, 64, 3), (u128::MAX, 128, 2)]);
        assert_eq!(v6.get(0), 1);
        assert_eq!(v6.get(u128::MAX), 2);
        assert_eq!(v6.get((1 << 64) + 5), 3);
        assert_eq!(v6.get(2 << 64), 1);
    }
}
