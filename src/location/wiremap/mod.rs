//! The wiremap index of the Location Information Service: from where a device is attached to the
//! network (subnet, Wi-Fi access point, switch, switch port, its own MAC address) to its ERL.
//!
//! # Precedence
//!
//! When several keys of one device match, the kind earlier in [`MatchKind`] wins: wireless access
//! point (BSSID), then the device's MAC address, then switch port (chassis + port), then switch
//! (chassis), then subnet — Skype for Business's order, with sosdesk's device-specific MAC entries
//! right after the access point. Among subnets the longest prefix wins, over IPv4 and IPv6 alike.
//!
//! # Normalisation (the same at build and at lookup)
//!
//! - **Subnets** lose their host bits (`10.1.2.3/24` is `10.1.2.0/24`: the admin meant the subnet).
//!   An IPv6 subnet inside `::ffff:0:0/96` is the IPv4 subnet it maps (`::ffff:10.0.0.0/104` is
//!   `10.0.0.0/8`), and an IPv4-mapped device address (`::ffff:10.1.2.3`, what a dual-stack socket
//!   reports for an IPv4 peer) is looked up as the IPv4 address. So the same network written both
//!   ways is one key, and a conflict between the two spellings is caught at build.
//! - **Chassis IDs** are trimmed. One that [`super::parse_mac`] accepts (`0a:23:cd:16:aa:2e`,
//!   `0A-23-CD-16-AA-2E`, `0a23.cd16.aa2e`, …) is that MAC address, whatever its spelling: LLDP's
//!   most common chassis ID subtype is the MAC address, and switches, CSV files and clients all
//!   spell it differently. Any other chassis ID is text compared with ASCII letters case-folded
//!   (`SW-HQ-01` = `sw-hq-01`). Its normal form ([`normalise_chassis_id`]) is the
//!   [`super::format_mac`] spelling for a MAC, the lower-cased text otherwise.
//! - **Port IDs** are trimmed and compared with ASCII letters case-folded too ([`normalise_port_id`]):
//!   port names are typed by hand (`Gi1/0/1` vs `gi1/0/1`), and if two really different ports did
//!   differ only in case, they would collide loudly at build (a conflict), never silently. The
//!   port ID subtype must be equal; a device that did not say its subtype matches no port (it may
//!   still match the switch): guessing the subtype could put a caller at another port's ERL.
//! - Case folding is ASCII only: LLDP IDs are octet strings that switches fill with ASCII names, and
//!   Unicode case folding can change a string's length, which a lookup that must not allocate
//!   cannot afford. Non-ASCII text compares exactly.
//! - An empty (or all-blank) chassis or port ID in an entry could never be matched: it is refused.
//!   In a device's attachment it counts as absent.
//!
//! # Structure, chosen by measurement
//!
//! Exact keys (BSSID, MAC, chassis, port) are std `HashMap`s; chassis and port IDs are interned
//! once (text → number), so the port table's key is three small integers and one chassis lookup
//! answers both "which port" and "which switch".
//!
//! Subnets are flattened at build into non-overlapping address ranges, each carrying the ERL of the
//! longest prefix covering it (or none, in the gaps), so a longest-prefix match is one search for
//! the range containing the address. IPv4 ranges are `(start, erl)` pairs with a direct index on
//! the top 16 bits that narrows the search to one /16 (one cache line for the answer, not two);
//! IPv6 ranges are a plain binary search over the starts.
//!
//! Measured with a prototype of each candidate, all on the same data: `cargo bench --bench
//! wiremap_lpm` (benches/wiremap_lpm.rs). 595,629 distinct IPv4 prefixes /16–/30 (2 % /16, 4 %
//! /20, 8 % /22, 50 % /24, 14 % /26, 10 % /27, 7 % /28, 5 % /30, random nets) and 99,973 IPv6
//! prefixes /48–/64 in 16 /32s; 1,000,000 addresses, 80 % hosts inside a random prefix and 20 %
//! random. Each lookup timed on its own with `Instant` (an empty pair costs 20 ns, included
//! below); batch mean = 1,000,000 lookups under one timer. Release build, 2-core EPYC VM, two
//! rounds (the range shown); runs while other builds shared the machine ranked them the same:
//!
//! | candidate | p50 ns | p99 ns | p99.9 ns | batch mean ns |
//! | --- | ---: | ---: | ---: | ---: |
//! | IPv4 hash map per prefix length, probed longest first | 260–261 | 701–771 | 1,001–1,362 | 325–355 |
//! | IPv4 ranges, binary search | 831–841 | 1,472–1,492 | 3,015–3,314 | 254–520 |
//! | IPv4 ranges + /16 index, separate start and ERL arrays | 351–371 | 751 | 1,102–1,192 | 68–113 |
//! | **IPv4 ranges + /16 index, (start, ERL) pairs** | **200–230** | **510–561** | **701–751** | **55–103** |
//! | IPv6 hash map per prefix length, probed longest first | 530–551 | 1,302–1,352 | 2,003–3,095 | 375–455 |
//! | IPv6 ranges, sampled top level, then one 16-start block | 190–191 | 581–601 | 861–871 | 142–154 |
//! | **IPv6 ranges, binary search** | **170–180** | **601** | **941–1,002** | **132–147** |
//!
//! For IPv6 the sampled top level bought nothing measurable, so the plain search stays. Beyond
//! the numbers, a range search costs the same however many distinct prefix lengths the data has,
//! where the hash-per-length scan grows with them (up to 33 probes for IPv4, 129 for IPv6, on
//! every miss). Memory: IPv4 ranges 9.4 MB + a 256 KB index, IPv6 ranges 4 MB; the hash maps,
//! estimated from their capacity, about 7 MB and 2 MB. Flattening the 700,000 prefixes took 23 ms.
//!
//! # Replacing the map
//!
//! A [`Wiremap`] never changes once built. [`SharedWiremap`] holds the current one; an import
//! builds a new map off to the side (all-or-nothing: [`Wiremap::build`] refuses bad data) and
//! [`SharedWiremap::replace`] swaps it in, so every lookup sees one whole map, old or new.

mod keys;
mod ranges;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, PoisonError, RwLock};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{format_mac, DeviceAttachment, Erl, Locator, Mac, MatchKind, PortIdSubtype, WiremapEntry, WiremapKey};
use keys::{chassis_of, normal_subnet, ChassisIndex, Interner};
pub use keys::{normalise_chassis_id, normalise_key, normalise_port_id};
#[doc(hidden)]
pub use ranges::flatten;
use ranges::{V4Ranges, V6Ranges};

/// "No ERL" in the dense tables; [`Wiremap::build`] refuses ERL indexes that would reach it.
pub(super) const NONE: u32 = u32::MAX;

/// The in-memory wiremap: immutable once built, looked up without allocating.
pub struct Wiremap {
    erls: Vec<Arc<Erl>>,
    bssids: HashMap<Mac, u32>,
    macs: HashMap<Mac, u32>,
    chassis: ChassisIndex,
    /// The switch's ERL by chassis number (`NONE` when only its ports are in the map).
    switch_erl: Vec<u32>,
    port_names: Interner,
    /// (chassis number, subtype, port name number) → ERL.
    ports: HashMap<(u32, PortIdSubtype, u32), u32>,
    v4: V4Ranges,
    v6: V6Ranges,
    /// The ERL an IPv4 address gets from an IPv6 subnet shorter than /96 that covers all of
    /// `::ffff:0:0/96` (e.g. `::/0`) when no IPv4 subnet matches; `NONE` almost always.
    mapped_fallback: u32,
    stats: WiremapStats,
}

impl Wiremap {
    /// Builds the index. `entries[i].erl` indexes `erls`.
    ///
    /// Refused, with every problem listed: an ERL index out of range, an empty chassis or port ID,
    /// and two entries whose keys are equal after normalisation but whose ERLs differ (the import
    /// is all-or-nothing, and the index must not silently pick one). Duplicates that agree — same
    /// ERL index, or ERLs equal in every field — are kept once.
    pub fn build(erls: Vec<Erl>, entries: &[WiremapEntry]) -> Result<Wiremap, WiremapError> {
        let erls: Vec<Arc<Erl>> = erls.into_iter().map(Arc::new).collect();
        let erl_count = erls.len().min(NONE as usize);
        let same = |a: u32, b: u32| a == b || erls[a as usize] == erls[b as usize];

        let mut problems = Vec::new();
        // Normalised keys seen with two different ERLs; their entries are gathered afterwards.
        let mut conflicts: HashSet<WiremapKey> = HashSet::new();
        let mut bssids: HashMap<Mac, u32> = HashMap::new();
        let mut macs: HashMap<Mac, u32> = HashMap::new();
        let mut chassis = ChassisIndex::default();
        let mut switch_erl: Vec<u32> = Vec::new();
        let mut port_names = Interner::default();
        let mut ports: HashMap<(u32, PortIdSubtype, u32), u32> = HashMap::new();
        let mut v4: Vec<(u32, u8, u32)> = Vec::new();
        let mut v6: Vec<(u128, u8, u32)> = Vec::new();

        // Inserts into an exact-match table; a different ERL for the same key is a conflict.
        fn insert<K: Hash + Eq>(map: &mut HashMap<K, u32>, k: K, erl: u32, same: impl Fn(u32, u32) -> bool) -> bool {
            match map.entry(k) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(erl);
                    true
                }
                std::collections::hash_map::Entry::Occupied(o) => same(*o.get(), erl),
            }
        }

        for (index, entry) in entries.iter().enumerate() {
            if entry.erl >= erl_count {
                problems.push(WiremapProblem::ErlOutOfRange {
                    entry: index,
                    key: entry.key.clone(),
                    erl: entry.erl,
                    erl_count,
                });
                continue;
            }
            let erl = entry.erl as u32;
            let agreed = match &entry.key {
                WiremapKey::Subnet(net) => {
                    match normal_subnet(*net) {
                        IpNet::V4(n) => v4.push((u32::from(n.network()), n.prefix_len(), erl)),
                        IpNet::V6(n) => v6.push((u128::from(n.network()), n.prefix_len(), erl)),
                    }
                    true // duplicates are found after sorting, below
                }
                WiremapKey::Bssid(m) => insert(&mut bssids, *m, erl, same),
                WiremapKey::Mac(m) => insert(&mut macs, *m, erl, same),
                WiremapKey::Switch { chassis_id } => match chassis_of(chassis_id) {
                    None => {
                        problems.push(WiremapProblem::EmptyId { entry: index, key: entry.key.clone() });
                        continue;
                    }
                    Some(c) => {
                        let n = chassis.intern(c, &mut switch_erl) as usize;
                        if switch_erl[n] == NONE {
                            switch_erl[n] = erl;
                            true
                        } else {
                            same(switch_erl[n], erl)
                        }
                    }
                },
                WiremapKey::Port { chassis_id, port_subtype, port_id } => {
                    match (chassis_of(chassis_id), Some(port_id.trim()).filter(|p| !p.is_empty())) {
                        (Some(c), Some(p)) => {
                            let c = chassis.intern(c, &mut switch_erl);
                            let p = port_names.intern(p);
                            insert(&mut ports, (c, *port_subtype, p), erl, same)
                        }
                        _ => {
                            problems.push(WiremapProblem::EmptyId { entry: index, key: entry.key.clone() });
                            continue;
                        }
                    }
                }
            };
            if !agreed {
                conflicts.insert(normalise_key(&entry.key));
            }
        }

        // Sorting by (start, length) puts duplicates side by side and each prefix before the
        // longer ones inside it, which is the order `flatten` needs.
        v4.sort_unstable_by_key(|&(start, len, _)| (start, len));
        v6.sort_unstable_by_key(|&(start, len, _)| (start, len));
        for w in v4.windows(2) {
            if (w[0].0, w[0].1) == (w[1].0, w[1].1) && !same(w[0].2, w[1].2) {
                conflicts.insert(WiremapKey::Subnet(IpNet::V4(Ipv4Net::new_assert(w[0].0.into(), w[0].1))));
            }
        }
        for w in v6.windows(2) {
            if (w[0].0, w[0].1) == (w[1].0, w[1].1) && !same(w[0].2, w[1].2) {
                conflicts.insert(WiremapKey::Subnet(IpNet::V6(Ipv6Net::new_assert(w[0].0.into(), w[0].1))));
            }
        }
        v4.dedup_by_key(|&mut (start, len, _)| (start, len));
        v6.dedup_by_key(|&mut (start, len, _)| (start, len));

        if !conflicts.is_empty() {
            // The error path only: one more pass to name every entry behind each conflicting key.
            let mut by_key: HashMap<WiremapKey, Vec<ConflictingEntry>> = HashMap::new();
            for (index, entry) in entries.iter().enumerate() {
                if entry.erl >= erl_count {
                    continue;
                }
                let key = normalise_key(&entry.key);
                if conflicts.contains(&key) {
                    by_key.entry(key).or_default().push(ConflictingEntry {
                        entry: index,
                        erl: entry.erl,
                        erl_label: erls[entry.erl].label.clone(),
                    });
                }
            }
            problems.extend(by_key.into_iter().map(|(key, entries)| WiremapProblem::Conflict { key, entries }));
        }
        if !problems.is_empty() {
            problems.sort_by_key(WiremapProblem::first_entry);
            return Err(WiremapError { problems });
        }

        let stats = WiremapStats {
            erls: erls.len(),
            ipv4_subnets: v4.len(),
            ipv6_subnets: v6.len(),
            access_points: bssids.len(),
            macs: macs.len(),
            switches: switch_erl.iter().filter(|&&e| e != NONE).count(),
            ports: ports.len(),
        };
        let v4 = V4Ranges::new(&v4);
        let v6 = V6Ranges::new(&v6);
        let mapped_fallback = v6.get(u128::from(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()));
        Ok(Wiremap { erls, bssids, macs, chassis, switch_erl, port_names, ports, v4, v6, mapped_fallback, stats })
    }

    /// A wiremap with nothing in it: every lookup answers `None`.
    pub fn empty() -> Wiremap {
        Wiremap::build(Vec::new(), &[]).unwrap_or_else(|_| unreachable!("no entries, no problems"))
    }

    /// The ERL for a device, and which kind of entry gave it (see the module documentation for
    /// the precedence). Does not allocate; the `Arc` is the map's own ERL.
    pub fn lookup(&self, dev: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        self.lookup_index(dev).map(|(erl, kind)| (Arc::clone(&self.erls[erl as usize]), kind))
    }

    fn lookup_index(&self, dev: &DeviceAttachment) -> Option<(u32, MatchKind)> {
        if let Some(erl) = dev.bssid.and_then(|b| self.bssids.get(&b)) {
            return Some((*erl, MatchKind::WirelessAccessPoint));
        }
        if let Some(erl) = dev.mac.and_then(|m| self.macs.get(&m)) {
            return Some((*erl, MatchKind::Mac));
        }
        if let Some(c) = dev.chassis_id.as_deref().and_then(|c| self.chassis.find(c)) {
            // A port named without a subtype is taken with Skype for Business's default
            // (`Set-CsLisPort -PortIDSubType`: LocallyAssigned), as the importer does for an
            // empty PortIDSubType: the same port, whichever way it was described.
            let subtype = dev.port_subtype.unwrap_or(PortIdSubtype::LocallyAssigned);
            if let Some(port) = dev.port_id.as_deref() {
                let port = self.port_names.find(port.trim());
                if let Some(erl) = port.and_then(|p| self.ports.get(&(c, subtype, p))) {
                    return Some((*erl, MatchKind::SwitchPort));
                }
            }
            let erl = self.switch_erl[c as usize];
            if erl != NONE {
                return Some((erl, MatchKind::Switch));
            }
        }
        let erl = match dev.ip? {
            IpAddr::V4(a) => self.v4_subnet(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => self.v4_subnet(a),
                None => self.v6.get(a.into()),
            },
        };
        (erl != NONE).then_some((erl, MatchKind::Subnet))
    }

    fn v4_subnet(&self, a: Ipv4Addr) -> u32 {
        match self.v4.get(a.into()) {
            NONE => self.mapped_fallback,
            erl => erl,
        }
    }

    /// How many distinct keys of each kind, and ERLs (for logs).
    pub fn stats(&self) -> WiremapStats {
        self.stats
    }

    /// Distinct keys in the map, all kinds.
    pub fn len(&self) -> usize {
        self.stats.entries()
    }

    /// Distinct keys of one kind.
    pub fn len_of(&self, kind: MatchKind) -> usize {
        self.stats.of(kind)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ERLs the map was built with, in their original order.
    pub fn erls(&self) -> &[Arc<Erl>] {
        &self.erls
    }
}

impl Default for Wiremap {
    fn default() -> Self {
        Wiremap::empty()
    }
}

impl fmt::Debug for Wiremap {
    // A million entries are no use in a log line; the counts are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wiremap").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl Locator for Wiremap {
    fn locate(&self, device: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        self.lookup(device)
    }
}

/// Counts of distinct keys per kind (after normalisation and de-duplication), and of ERLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WiremapStats {
    pub erls: usize,
    pub ipv4_subnets: usize,
    pub ipv6_subnets: usize,
    pub access_points: usize,
    pub macs: usize,
    pub switches: usize,
    pub ports: usize,
}

impl WiremapStats {
    /// All keys.
    pub fn entries(&self) -> usize {
        self.ipv4_subnets + self.ipv6_subnets + self.access_points + self.macs + self.switches + self.ports
    }

    /// Keys of one kind (subnets: IPv4 and IPv6 together).
    pub fn of(&self, kind: MatchKind) -> usize {
        match kind {
            MatchKind::WirelessAccessPoint => self.access_points,
            MatchKind::Mac => self.macs,
            MatchKind::SwitchPort => self.ports,
            MatchKind::Switch => self.switches,
            MatchKind::Subnet => self.ipv4_subnets + self.ipv6_subnets,
        }
    }
}

impl fmt::Display for WiremapStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} entries ({} IPv4 subnets, {} IPv6 subnets, {} access points, {} MACs, {} switches, {} ports) over {} ERLs",
            self.entries(),
            self.ipv4_subnets,
            self.ipv6_subnets,
            self.access_points,
            self.macs,
            self.switches,
            self.ports,
            self.erls
        )
    }
}

/// Why a wiremap was not built: every problem found, in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiremapError {
    pub problems: Vec<WiremapProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WiremapProblem {
    /// The entry's ERL index is not in the ERL list.
    ErlOutOfRange { entry: usize, key: WiremapKey, erl: usize, erl_count: usize },
    /// The entry's chassis or port ID is empty once trimmed: it could never be matched.
    EmptyId { entry: usize, key: WiremapKey },
    /// Entries whose keys are one key once normalised (shown in its normal form) map it to
    /// different ERLs. Lists every entry with that key.
    Conflict { key: WiremapKey, entries: Vec<ConflictingEntry> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictingEntry {
    /// Index in the entries the wiremap was built from.
    pub entry: usize,
    /// Index in the ERL list.
    pub erl: usize,
    pub erl_label: String,
}

impl WiremapProblem {
    fn first_entry(&self) -> usize {
        match self {
            WiremapProblem::ErlOutOfRange { entry, .. } | WiremapProblem::EmptyId { entry, .. } => *entry,
            WiremapProblem::Conflict { entries, .. } => entries.first().map_or(usize::MAX, |e| e.entry),
        }
    }
}

impl fmt::Display for WiremapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WiremapProblem::ErlOutOfRange { entry, key, erl, erl_count } => {
                write!(f, "entry {entry} ({key}) refers to ERL {erl}, but there are only {erl_count} ERLs")
            }
            WiremapProblem::EmptyId { entry, key } => write!(f, "entry {entry} ({key}) has an empty ID"),
            WiremapProblem::Conflict { key, entries } => {
                write!(f, "{key} maps to different ERLs:")?;
                for (i, e) in entries.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}entry {} → ERL {} {:?}", e.entry, e.erl, e.erl_label)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for WiremapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An import with thousands of bad rows should not produce a megabyte-long line; the full
        // list stays in `problems`.
        const SHOWN: usize = 10;
        let n = self.problems.len();
        write!(f, "wiremap refused: {n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in self.problems.iter().take(SHOWN) {
            write!(f, "; {p}")?;
        }
        if n > SHOWN {
            write!(f, "; and {} more", n - SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for WiremapError {}

impl fmt::Display for WiremapKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WiremapKey::Subnet(net) => write!(f, "subnet {net}"),
            WiremapKey::Bssid(m) => write!(f, "BSSID {}", format_mac(m)),
            WiremapKey::Switch { chassis_id } => write!(f, "switch {chassis_id:?}"),
            WiremapKey::Port { chassis_id, port_subtype, port_id } => {
                write!(f, "port {port_id:?} ({}) of switch {chassis_id:?}", port_subtype.as_str())
            }
            WiremapKey::Mac(m) => write!(f, "MAC {}", format_mac(m)),
        }
    }
}

/// The current wiremap, shared by every caller and replaced whole. Cheap to clone (one `Arc`).
///
/// Readers never see a half-applied import: a map is complete before [`SharedWiremap::replace`]
/// swaps it in, under a write lock held only for the pointer swap. [`SharedWiremap::lookup`] (and
/// `Locator::locate`) search the map while holding the read lock instead of taking their own
/// reference to it; the replacing thread therefore normally holds the last reference to the old
/// map and frees it (5–10 ms for the benchmark's million entries) — never a call's lookup. A
/// caller of [`SharedWiremap::load`] that keeps the old map past a replace frees it when it drops
/// it, so the call path should use `lookup`.
///
/// A std `RwLock` is enough: in `benches/wiremap.rs` (1,000,000 lookups, quiet machine, two runs)
/// `lookup` under the read lock had p99 1,182–1,352 ns, `load()` then lookup 1,152–1,162 ns, and a
/// bare [`Wiremap::lookup`] 1,232–1,312 ns: the uncontended lock is lost in the run-to-run noise,
/// so there is nothing for `arc-swap` to win (it was not tried).
#[derive(Clone, Default)]
pub struct SharedWiremap {
    current: Arc<RwLock<Arc<Wiremap>>>,
}

impl SharedWiremap {
    pub fn new(map: Wiremap) -> SharedWiremap {
        SharedWiremap { current: Arc::new(RwLock::new(Arc::new(map))) }
    }

    /// The current map; it stays valid (and unchanged) for as long as it is held.
    pub fn load(&self) -> Arc<Wiremap> {
        // The lock only guards an `Arc` swap, which cannot panic midway, so a poisoned lock
        // still holds a whole map: use it rather than fail a lookup.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes `new` the current map for every later lookup, and returns the previous one (drop it
    /// off the call path: freeing a large map takes a while).
    pub fn replace(&self, new: Wiremap) -> Arc<Wiremap> {
        let new = Arc::new(new);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, new)
    }

    /// [`Wiremap::lookup`] on the current map.
    pub fn lookup(&self, dev: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).lookup(dev)
    }
}

impl fmt::Debug for SharedWiremap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedWiremap").field(&self.load()).finish()
    }
}

impl Locator for SharedWiremap {
    fn locate(&self, device: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        self.lookup(device)
    }
}
