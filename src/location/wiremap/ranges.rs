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
