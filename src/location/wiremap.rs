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

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, PoisonError, RwLock};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{format_mac, DeviceAttachment, Erl, Locator, Mac, MatchKind, PortIdSubtype, WiremapEntry, WiremapKey};

/// "No ERL" in the dense tables; [`Wiremap::build`] refuses ERL indexes that would reach it.
const NONE: u32 = u32::MAX;

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

/// The normal form of a chassis ID (see the module documentation): `None` if it is blank.
pub fn normalise_chassis_id(s: &str) -> Option<String> {
    Some(match chassis_of(s)? {
        Chassis::Mac(m) => format_mac(&m),
        Chassis::Text(t) => t.to_ascii_lowercase(),
    })
}

/// The normal form of a port ID: trimmed, ASCII lower case; `None` if it is blank.
pub fn normalise_port_id(s: &str) -> Option<String> {
    Some(s.trim()).filter(|t| !t.is_empty()).map(str::to_ascii_lowercase)
}

/// A key in the form the index compares it in (blank IDs are left as they are).
pub fn normalise_key(key: &WiremapKey) -> WiremapKey {
    let chassis = |c: &str| normalise_chassis_id(c).unwrap_or_default();
    match key {
        WiremapKey::Subnet(net) => WiremapKey::Subnet(normal_subnet(*net)),
        WiremapKey::Bssid(m) => WiremapKey::Bssid(*m),
        WiremapKey::Mac(m) => WiremapKey::Mac(*m),
        WiremapKey::Switch { chassis_id } => WiremapKey::Switch { chassis_id: chassis(chassis_id) },
        WiremapKey::Port { chassis_id, port_subtype, port_id } => WiremapKey::Port {
            chassis_id: chassis(chassis_id),
            port_subtype: *port_subtype,
            port_id: normalise_port_id(port_id).unwrap_or_default(),
        },
    }
}

/// Host bits cleared; an IPv6 subnet inside `::ffff:0:0/96` becomes the IPv4 subnet it maps.
fn normal_subnet(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(a) => IpNet::V4(Ipv4Net::new_assert(a, n.prefix_len() - 96)),
            None => IpNet::V6(n),
        },
        other => other,
    }
}

/// A chassis ID, trimmed and classified, borrowed from the text it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chassis<'a> {
    Mac(Mac),
    /// Compared with ASCII case folded.
    Text(&'a str),
}

fn chassis_of(s: &str) -> Option<Chassis<'_>> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else {
        Some(mac_of(t).map_or(Chassis::Text(t), Chassis::Mac))
    }
}

/// [`super::parse_mac`] without its allocation (lookups parse the device's chassis ID): the same
/// strings are accepted — twelve hex digits once every `-`, `:` and `.` is dropped.
fn mac_of(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut digits = 0;
    for c in s.bytes() {
        let v = match c {
            b'-' | b':' | b'.' => continue,
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        if digits == 12 {
            return None;
        }
        mac[digits / 2] = mac[digits / 2] << 4 | v;
        digits += 1;
    }
    (digits == 12).then_some(mac)
}

/// Chassis IDs, numbered in the order first seen.
#[derive(Default)]
struct ChassisIndex {
    by_mac: HashMap<Mac, u32>,
    by_text: Interner,
    count: u32,
}

impl ChassisIndex {
    /// The chassis's number, new ones getting a `NONE` switch ERL.
    fn intern(&mut self, c: Chassis<'_>, switch_erl: &mut Vec<u32>) -> u32 {
        let next = self.count;
        let n = match c {
            Chassis::Mac(m) => *self.by_mac.entry(m).or_insert(next),
            Chassis::Text(t) => self.by_text.intern_as(t, next),
        };
        if n == next {
            self.count += 1;
            switch_erl.push(NONE);
        }
        n
    }

    fn find(&self, s: &str) -> Option<u32> {
        match chassis_of(s)? {
            Chassis::Mac(m) => self.by_mac.get(&m).copied(),
            Chassis::Text(t) => self.by_text.find(t),
        }
    }
}

/// Text → number, compared with ASCII case folded; stored in lower case (the normal form).
#[derive(Default)]
struct Interner {
    ids: HashMap<FoldedId, u32>,
}

impl Interner {
    fn intern(&mut self, text: &str) -> u32 {
        let next = self.ids.len() as u32;
        self.intern_as(text, next)
    }

    /// The number of `text`, giving it `next` if it is new.
    fn intern_as(&mut self, text: &str, next: u32) -> u32 {
        if let Some(&n) = self.find_ref(text) {
            return n;
        }
        self.ids.insert(FoldedId(text.to_ascii_lowercase().into_boxed_str()), next);
        next
    }

    fn find(&self, text: &str) -> Option<u32> {
        self.find_ref(text).copied()
    }

    fn find_ref(&self, text: &str) -> Option<&u32> {
        // The caller's spelling is looked up as it is, through `dyn Folded`, so no lower-cased
        // copy is made on the lookup path.
        self.ids.get(&text as &dyn Folded)
    }
}

/// Text that hashes and compares with ASCII letters folded to lower case. The stored IDs
/// ([`FoldedId`]) and a caller's `&str` both implement it, and `FoldedId: Borrow<dyn Folded>` lets
/// a std `HashMap<FoldedId, _>` be searched with a `&str` of any case.
trait Folded {
    fn text(&self) -> &str;
}

impl Hash for dyn Folded + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let bytes = self.text().as_bytes();
        let mut buf = [0u8; 32];
        for chunk in bytes.chunks(buf.len()) {
            let folded = &mut buf[..chunk.len()];
            folded.copy_from_slice(chunk);
            folded.make_ascii_lowercase();
            state.write(folded);
        }
        // The length ends the key, as `str`'s own hash ends it with a marker byte.
        state.write_usize(bytes.len());
    }
}

impl PartialEq for dyn Folded + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.text().eq_ignore_ascii_case(other.text())
    }
}

impl Eq for dyn Folded + '_ {}

impl Folded for &str {
    fn text(&self) -> &str {
        self
    }
}

struct FoldedId(Box<str>);

impl Folded for FoldedId {
    fn text(&self) -> &str {
        &self.0
    }
}

// `Borrow` requires the owned key to hash and compare exactly as its borrowed form does.
impl Hash for FoldedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn Folded).hash(state)
    }
}

impl PartialEq for FoldedId {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn Folded) == (other as &dyn Folded)
    }
}

impl Eq for FoldedId {}

impl<'a> Borrow<dyn Folded + 'a> for FoldedId {
    fn borrow(&self) -> &(dyn Folded + 'a) {
        self
    }
}

/// Flattens prefixes, given as inclusive `(first, last, erl)` address ranges sorted by first
/// address and then widest first, into the starts of non-overlapping ranges that cover the whole
/// address space from `zero`, each with the ERL of the longest prefix covering it (`NONE` in the
/// gaps). Prefixes either nest or are disjoint, so a stack of the open ones is enough. Adjacent
/// ranges with the same ERL are merged.
/// Public only so `benches/wiremap_lpm.rs` measures this very code among its candidates.
#[doc(hidden)]
pub fn flatten<T: Copy + Ord>(zero: T, prefixes: &[(T, T, u32)], next: impl Fn(T) -> Option<T>) -> Vec<(T, u32)> {
    fn emit<T: Copy + Ord>(out: &mut Vec<(T, u32)>, at: T, erl: u32) {
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
struct V4Ranges {
    /// (first address, ERL), sorted; the first starts at 0.0.0.0.
    ranges: Vec<(u32, u32)>,
    /// `block[h]`: the range holding address `h << 16`; `block[65536]` the last range. The ranges
    /// of addresses in /16 number `h` are `block[h] ..= block[h + 1]`.
    block: Vec<u32>,
}

impl V4Ranges {
    fn new(prefixes: &[(u32, u8, u32)]) -> V4Ranges {
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

    fn get(&self, a: u32) -> u32 {
        let h = (a >> 16) as usize;
        let ranges = &self.ranges[self.block[h] as usize..=self.block[h + 1] as usize];
        // ranges[0] starts at or before `a`, so the count is at least 1.
        let i = ranges.partition_point(|r| r.0 <= a) - 1;
        ranges[i].1
    }
}

/// IPv6 subnets as non-overlapping ranges.
struct V6Ranges {
    /// Sorted first addresses; the first is `::`.
    starts: Vec<u128>,
    erls: Vec<u32>,
}

impl V6Ranges {
    fn new(prefixes: &[(u128, u8, u32)]) -> V6Ranges {
        let spans: Vec<(u128, u128, u32)> = prefixes
            .iter()
            .map(|&(start, len, erl)| (start, u128::from(Ipv6Net::new_assert(start.into(), len).broadcast()), erl))
            .collect();
        let (starts, erls) = flatten(0u128, &spans, |a| a.checked_add(1)).into_iter().unzip();
        V6Ranges { starts, erls }
    }

    fn get(&self, a: u128) -> u32 {
        self.erls[self.starts.partition_point(|&s| s <= a) - 1]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::parse_mac;
    use std::collections::hash_map::DefaultHasher;

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

    #[test]
    fn mac_of_accepts_exactly_what_parse_mac_accepts() {
        let cases = [
            "0A-23-CD-16-AA-2E",
            "0a:23:cd:16:aa:2e",
            "0a23.cd16.aa2e",
            "0A23CD16AA2E",
            "0a-23:cd.16aa2e",
            "--0a23cd16aa2e..",
            "0A23CD16AA2",
            "0A23CD16AA2E0",
            "0A23CD16AA2G",
            "0A 23 CD 16 AA 2E",
            "",
            "-:.",
            "0A23CD16AA2É",
            "sw-hq-01",
            "deadbeefcafe",
        ];
        for c in cases {
            assert_eq!(mac_of(c), parse_mac(c), "{c:?}");
        }
        assert_eq!(mac_of("0a:23:cd:16:aa:2e"), Some([0x0a, 0x23, 0xcd, 0x16, 0xaa, 0x2e]));
    }

    #[test]
    fn chassis_normal_forms() {
        assert_eq!(normalise_chassis_id(" 0a:23:cd:16:aa:2e ").as_deref(), Some("0A-23-CD-16-AA-2E"));
        assert_eq!(normalise_chassis_id("0a23.cd16.aa2e").as_deref(), Some("0A-23-CD-16-AA-2E"));
        assert_eq!(normalise_chassis_id("\tSW-HQ-01 ").as_deref(), Some("sw-hq-01"));
        assert_eq!(normalise_chassis_id("  "), None);
        assert_eq!(normalise_port_id(" Gi1/0/1 ").as_deref(), Some("gi1/0/1"));
        assert_eq!(normalise_port_id(""), None);
    }

    #[test]
    fn folded_text_hashes_and_compares_without_case() {
        fn hash(f: &dyn Folded) -> u64 {
            let mut h = DefaultHasher::new();
            f.hash(&mut h);
            h.finish()
        }
        let long_upper = "GIGABITETHERNET1/0/1-A-LONG-NAME-PAST-ONE-32-BYTE-CHUNK";
        let long_lower = long_upper.to_ascii_lowercase();
        assert_eq!(hash(&long_upper), hash(&long_lower.as_str()));
        assert_eq!(hash(&FoldedId(long_lower.clone().into())), hash(&long_upper));
        assert!((&long_upper as &dyn Folded) == (&long_lower.as_str() as &dyn Folded));
        assert!((&"ab" as &dyn Folded) != (&"abc" as &dyn Folded));

        let mut names = Interner::default();
        assert_eq!(names.intern("Gi1/0/1"), 0);
        assert_eq!(names.intern("GI1/0/1"), 0);
        assert_eq!(names.intern("Gi1/0/2"), 1);
        assert_eq!(names.find("gi1/0/2"), Some(1));
        assert_eq!(names.find("gi1/0/3"), None);
    }

    #[test]
    fn subnets_lose_host_bits_and_mapped_ipv6_becomes_ipv4() {
        let n = |s: &str| normal_subnet(s.parse().unwrap()).to_string();
        assert_eq!(n("10.1.2.3/24"), "10.1.2.0/24");
        assert_eq!(n("::ffff:10.1.2.3/104"), "10.0.0.0/8");
        assert_eq!(n("::ffff:0:0/96"), "0.0.0.0/0");
        assert_eq!(n("::ffff:10.1.2.3/128"), "10.1.2.3/32");
        assert_eq!(n("::/0"), "::/0");
        assert_eq!(n("2001:db8:1:2::1/48"), "2001:db8:1::/48");
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
