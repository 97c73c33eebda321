//! Switch-port discovery (issue 16): the switches of `[[switch]]` are polled over SNMP in the
//! background, and a device whose MAC address is learnt on a switch port that has an ERL in the
//! wiremap is located by that port — for calls and HELD requests alike — without the device
//! saying where it is plugged in. As Cisco Emergency Responder does.
//!
//! - `mibs.rs` the MIB objects read (BRIDGE-MIB, Q-BRIDGE-MIB, IF-MIB, IP-MIB, LLDP-MIB) and what
//!   one switch's answers mean (sans-I/O);
//! - `snmp.rs` one poll of one switch over SNMP v2c or v3 (walks, timeouts);
//! - `task.rs` the background task: each switch every `interval_min`, or at once on demand;
//!   the table rebuilt and swapped whole, moves reported, each switch's status;
//! - here: the table ([`DiscoveryTable`], MAC → where it was learnt, IP → MAC) and the
//!   [`Locator`] that puts it in front of the wiremap ([`DiscoveringLocator`]).
//!
//! **Never on the call path**: a call or HELD request only reads the table the last poll left
//! (a read lock and a few hash lookups); a switch that does not answer leaves its last table in
//! place and its status failing.
//!
//! Precedence (Skype for Business's, `wiremap/`): what the device itself says (access point,
//! its MAC entry, chassis and port) and a switch port beat a discovered port only when they
//! match at least as precisely; a discovered port beats a switch entry and a subnet.

pub mod mibs;
pub mod snmp;
pub mod task;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{format_mac, DeviceAttachment, Erl, Locator, Mac, MatchKind, PortIdSubtype};

pub use snmp::{AuthProtocol, Credentials, PrivProtocol, SwitchTarget};
pub use task::{poll_once, spawn, Discovery, MoveSink, PollReport, SwitchStatus};

/// How an entry was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// The switch's forwarding table (BRIDGE-MIB or Q-BRIDGE-MIB).
    Fdb,
    /// The device announced itself over LLDP on that port (LLDP-MIB lldpRemTable): attached
    /// to it directly, whatever else the forwarding table says.
    Lldp,
}

/// A switch's names, as a wiremap may know it: the LLDP chassis ID, the bridge's MAC, the LLDP
/// and SNMP system names (most specific first, no duplicates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ChassisNames(pub Vec<String>);

impl ChassisNames {
    pub fn push(&mut self, name: String) {
        if !self.0.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            self.0.push(name);
        }
    }

    /// The first name (the LLDP chassis ID when the switch has one).
    pub fn primary(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }
}

/// Where one MAC address was learnt on one switch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Learnt {
    #[serde(serialize_with = "ser_mac")]
    pub mac: Mac,
    /// The switch's `name` in the config (its address when unnamed); filled by the task.
    pub switch: String,
    /// The switch's chassis names; filled by the task.
    pub chassis: Arc<ChassisNames>,
    /// The port's name (IF-MIB ifName, else ifDescr, else LLDP's lldpLocPortId).
    pub port: String,
    /// ifDescr when it differs from the name (`GigabitEthernet1/0/7` for `Gi1/0/7`).
    pub port_descr: Option<String>,
    pub if_index: Option<u32>,
    /// The VLAN (Q-BRIDGE-MIB's FDB id) when the entry came from the VLAN-aware table.
    pub vlan: Option<u16>,
    pub via: Via,
    /// The LLDP system name the device announced.
    pub neighbour: Option<String>,
    /// When the MAC was first seen on this port (kept across polls while it stays).
    pub learnt_at: DateTime<Utc>,
    /// How many MACs the switch learnt on the same port: an access port has one or two (a phone
    /// and the PC behind it), an uplink many; the fewest wins when a MAC is seen on several
    /// switches.
    pub macs_on_port: usize,
}

fn ser_mac<S: serde::Serializer>(m: &Mac, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mac(m))
}

impl Learnt {
    pub fn new(
        mac: Mac,
        if_index: Option<u32>,
        port: String,
        port_descr: Option<String>,
        vlan: Option<u16>,
        via: Via,
    ) -> Learnt {
        Learnt {
            mac,
            switch: String::new(),
            chassis: Arc::default(),
            port,
            port_descr,
            if_index,
            vlan,
            via,
            neighbour: None,
            learnt_at: DateTime::<Utc>::MIN_UTC,
            macs_on_port: 0,
        }
    }

    /// `switch sw-hq-1 (00-16-C7-02-6E-80) port Fa3/0/14`, for logs and the audit.
    pub fn describe(&self) -> String {
        let chassis = self.chassis.primary();
        if chassis.is_empty() || chassis == self.switch {
            format!("switch {} port {}", self.switch, self.port)
        } else {
            format!("switch {} ({chassis}) port {}", self.switch, self.port)
        }
    }

    fn same_port(&self, other: &Learnt) -> bool {
        self.switch == other.switch && self.port == other.port
    }

    /// Best first: a port the device announced itself on over LLDP, then the port with the
    /// fewest MACs (an access port before an uplink), then by switch and port for a stable order.
    fn rank(&self) -> (bool, usize, &str, &str) {
        (self.via != Via::Lldp, self.macs_on_port, &self.switch, &self.port)
    }
}

/// A device seen on another port than at the last poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    #[serde(serialize_with = "ser_mac")]
    pub mac: Mac,
    pub from: String,
    pub to: String,
    pub at: DateTime<Utc>,
}

/// What every poll so far learnt, all switches together. Immutable once built; the task builds
/// a new one after each poll and swaps it in ([`SharedDiscovery`]).
#[derive(Debug, Default)]
pub struct DiscoveryTable {
    /// Each MAC's places, best first ([`Learnt::rank`]).
    by_mac: HashMap<Mac, Vec<Arc<Learnt>>>,
    ip_to_mac: HashMap<IpAddr, Mac>,
}

impl DiscoveryTable {
    /// Merge the switches' latest entries and IP → MAC pairs.
    pub fn build<'a>(switches: impl IntoIterator<Item = (&'a [Arc<Learnt>], &'a [(IpAddr, Mac)])>) -> DiscoveryTable {
        let mut t = DiscoveryTable::default();
        for (entries, ips) in switches {
            for e in entries {
                t.by_mac.entry(e.mac).or_default().push(Arc::clone(e));
            }
            for (ip, mac) in ips {
                t.ip_to_mac.insert(ip.to_canonical(), *mac);
            }
        }
        for places in t.by_mac.values_mut() {
            places.sort_by(|a, b| a.rank().cmp(&b.rank()));
        }
        t
    }

    /// Where `mac` was learnt, best first.
    pub fn places(&self, mac: &Mac) -> &[Arc<Learnt>] {
        self.by_mac.get(mac).map_or(&[], Vec::as_slice)
    }

    /// The MAC an IP address belongs to, from the switches' ARP and neighbour tables and LLDP.
    pub fn mac_of(&self, ip: IpAddr) -> Option<Mac> {
        self.ip_to_mac.get(&ip.to_canonical()).copied()
    }

    /// How many MACs are known.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Every entry, best place first per MAC, MACs in order.
    pub fn entries(&self) -> Vec<Arc<Learnt>> {
        let mut macs: Vec<&Mac> = self.by_mac.keys().collect();
        macs.sort();
        macs.into_iter().flat_map(|m| self.by_mac[m].iter().cloned()).collect()
    }

    /// Devices whose best place differs from `old`'s (a MAC new to the table or gone from it is
    /// no move).
    pub fn moves_since(&self, old: &DiscoveryTable, at: DateTime<Utc>) -> Vec<Move> {
        let mut moves: Vec<Move> = self
            .by_mac
            .iter()
            .filter_map(|(mac, places)| {
                let (new, old) = (places.first()?, old.places(mac).first()?);
                (!new.same_port(old)).then(|| Move { mac: *mac, from: old.describe(), to: new.describe(), at })
            })
            .collect();
        moves.sort_by_key(|m| m.mac);
        moves
    }
}

/// The current table, replaced whole after each poll. Cheap to clone.
#[derive(Clone, Default)]
pub struct SharedDiscovery {
    current: Arc<RwLock<Arc<DiscoveryTable>>>,
}

impl SharedDiscovery {
    pub fn load(&self) -> Arc<DiscoveryTable> {
        // Only an `Arc` swap happens under the lock: a poisoned lock still holds a whole table.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Swap in `new`; returns the previous table.
    pub fn replace(&self, new: DiscoveryTable) -> Arc<DiscoveryTable> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, Arc::new(new))
    }
}

impl fmt::Debug for SharedDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedDiscovery({} MACs)", self.load().len())
    }
}

/// The wiremap with discovery in front of it: the [`Locator`] of calls and HELD when switches
/// are configured.
pub struct DiscoveringLocator<L> {
    pub wiremap: L,
    pub table: SharedDiscovery,
}

/// The port subtypes a discovered port name is looked up under: Skype for Business's default
/// (LocallyAssigned), then the interface name and alias a port CSV may have said.
const SUBTYPES: [PortIdSubtype; 3] =
    [PortIdSubtype::LocallyAssigned, PortIdSubtype::InterfaceName, PortIdSubtype::InterfaceAlias];

impl<L: Locator> DiscoveringLocator<L> {
    /// The wiremap's answer for the best place `device` was discovered at (by its MAC, or the
    /// MAC its IP belongs to): a port entry of that switch, else the switch's own entry.
    fn discovered(&self, device: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        let table = self.table.load();
        let mac = device.mac.or_else(|| device.ip.and_then(|ip| table.mac_of(ip)))?;
        let mut switch_match = None;
        for place in table.places(&mac) {
            for chassis in &place.chassis.0 {
                for port in std::iter::once(&place.port).chain(&place.port_descr) {
                    for subtype in SUBTYPES {
                        let at = DeviceAttachment {
                            chassis_id: Some(chassis.clone()),
                            port_id: Some(port.clone()),
                            port_subtype: Some(subtype),
                            ..DeviceAttachment::default()
                        };
                        match self.wiremap.locate(&at) {
                            Some((erl, MatchKind::SwitchPort)) => {
                                tracing::debug!(mac = %format_mac(&mac), place = %place.describe(), "device located by a discovered switch port");
                                return Some((erl, MatchKind::SwitchPort));
                            }
                            Some(found) if switch_match.is_none() => switch_match = Some(found),
                            _ => {}
                        }
                    }
                }
            }
        }
        switch_match
    }
}

impl<L: Locator> Locator for DiscoveringLocator<L> {
    fn locate(&self, device: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        let direct = self.wiremap.locate(device);
        if direct.as_ref().is_some_and(|(_, kind)| *kind <= MatchKind::SwitchPort) {
            return direct;
        }
        match (direct, self.discovered(device)) {
            (Some(d), Some(found)) => Some(if found.1 < d.1 { found } else { d }),
            (d, found) => d.or(found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::wiremap::Wiremap;
    use crate::location::{CivicAddress, WiremapEntry, WiremapKey};

    const PHONE: Mac = [0x00, 0x0d, 0x4b, 0x30, 0x72, 0xdf];

    fn erl(room: &str) -> Erl {
        Erl {
            label: room.into(),
            civic: CivicAddress { country: Some("US".into()), room: Some(room.into()), ..Default::default() },
            ..Default::default()
        }
    }

    fn learnt(switch: &str, chassis: &str, port: &str, macs_on_port: usize) -> Arc<Learnt> {
        let mut l = Learnt::new(PHONE, Some(1), port.into(), None, None, Via::Fdb);
        l.switch = switch.into();
        l.chassis = Arc::new(ChassisNames(vec![chassis.into()]));
        l.macs_on_port = macs_on_port;
        Arc::new(l)
    }

    #[test]
    fn a_mac_or_its_ip_on_a_mapped_port_is_located_there_and_a_move_is_seen() {
        let port = |p: &str, erl| WiremapEntry {
            key: WiremapKey::Port {
                chassis_id: "00-16-C7-02-6E-80".into(),
                port_subtype: PortIdSubtype::LocallyAssigned,
                port_id: p.into(),
            },
            erl,
        };
        let subnet = WiremapEntry { key: WiremapKey::Subnet("10.0.0.0/8".parse().unwrap()), erl: 2 };
        let map = Wiremap::build(
            vec![erl("314"), erl("320"), erl("building")],
            &[port("Fa3/0/14", 0), port("Fa3/0/20", 1), subnet],
        )
        .unwrap();
        let table = SharedDiscovery::default();
        let locator = DiscoveringLocator { wiremap: map, table: table.clone() };
        let ip: IpAddr = "10.204.88.7".parse().unwrap();
        let by_ip = DeviceAttachment { ip: Some(ip), ..Default::default() };
        let by_mac = DeviceAttachment { mac: Some(PHONE), ..Default::default() };
        // Nothing discovered yet: the subnet, and nothing by MAC.
        assert_eq!(locator.locate(&by_ip).unwrap().1, MatchKind::Subnet);
        assert!(locator.locate(&by_mac).is_none());

        // On an access port (0a-… chassis spelt another way) and seen on an uplink too.
        let uplink = learnt("sw-core", "CORE", "Te1/1/1", 400);
        let first = [learnt("sw-hq-1", "0016.c702.6e80", "fa3/0/14", 2), uplink.clone()];
        let arp = [(ip, PHONE)];
        let old = DiscoveryTable::build([(&first[..], &arp[..])]);
        assert_eq!(old.places(&PHONE)[0].port, "fa3/0/14");
        table.replace(old);
        let (erl_found, kind) = locator.locate(&by_ip).unwrap();
        assert_eq!((erl_found.label.as_str(), kind), ("314", MatchKind::SwitchPort));
        assert_eq!(locator.locate(&by_mac).unwrap().0.label, "314");

        // Moved to port 20.
        let second = [learnt("sw-hq-1", "00-16-C7-02-6E-80", "Fa3/0/20", 1), uplink];
        let new = DiscoveryTable::build([(&second[..], &arp[..])]);
        let before = table.replace(new);
        let moves = table.load().moves_since(&before, Utc::now());
        assert_eq!(moves.len(), 1);
        assert_eq!(
            (moves[0].from.as_str(), moves[0].to.as_str()),
            ("switch sw-hq-1 (0016.c702.6e80) port fa3/0/14", "switch sw-hq-1 (00-16-C7-02-6E-80) port Fa3/0/20")
        );
        assert_eq!(locator.locate(&by_mac).unwrap().0.label, "320");
        // What the device says of itself still comes first.
        let said = DeviceAttachment {
            mac: Some(PHONE),
            chassis_id: Some("00-16-C7-02-6E-80".into()),
            port_id: Some("Fa3/0/14".into()),
            ..Default::default()
        };
        assert_eq!(locator.locate(&said).unwrap().0.label, "314");
    }
}
