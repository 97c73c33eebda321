//! The MIB objects a discovery poll reads, and what one switch's answers mean: which MAC address
//! is behind which port (and so, through the wiremap, at which ERL), which IP address is which
//! MAC, and the names the switch goes by.
//!
//! Every object is read by walking its subtree (a scalar's walk is its one `.0` instance), so
//! one code path reads them all and an object a switch does not implement is simply empty.
//! Sans-I/O: [`interpret`] takes the walks' varbinds; `snmp.rs` does the walking.
//!
//! | object | MIB | what for |
//! | --- | --- | --- |
//! | `sysName` | RFC 3418 SNMPv2-MIB | a chassis name the wiremap may use |
//! | `ifDescr`, `ifName` | RFC 2863 IF-MIB | ifIndex → the port's name (`Gi1/0/7`) |
//! | `dot1dBaseBridgeAddress` | RFC 4188 BRIDGE-MIB | the bridge's MAC: a chassis ID when there is no LLDP |
//! | `dot1dBasePortIfIndex` | RFC 4188 BRIDGE-MIB | bridge port → ifIndex |
//! | `dot1dTpFdbPort`, `dot1dTpFdbStatus` | RFC 4188 BRIDGE-MIB | MAC → bridge port (the forwarding table) |
//! | `dot1qTpFdbPort`, `dot1qTpFdbStatus` | RFC 4363 Q-BRIDGE-MIB | (FDB id, MAC) → bridge port: the VLAN-aware table, read when BRIDGE-MIB's is empty |
//! | `ipNetToMediaPhysAddress` | RFC 1213/4293 IP-MIB (IPv4) | IP → MAC (ARP), when the switch routes |
//! | `ipNetToPhysicalPhysAddress` | RFC 4293 IP-MIB | IP → MAC for IPv4 and IPv6 (ARP, neighbour cache) |
//! | `lldpLocChassisIdSubtype`, `lldpLocChassisId`, `lldpLocSysName` | IEEE 802.1AB LLDP-MIB | the chassis ID the switch announces: what phones report over LLDP and what the wiremap names |
//! | `lldpLocPortId` | IEEE 802.1AB LLDP-MIB | a local LLDP port's name, when the bridge tables do not name it |
//! | `lldpRemChassisIdSubtype`, `lldpRemChassisId`, `lldpRemSysName` | IEEE 802.1AB LLDP-MIB | the systems announcing themselves on each port (an LLDP-MED phone: its MAC) |
//! | `lldpRemManAddrIfSubtype` | IEEE 802.1AB LLDP-MIB | the management address a remote system announces (its IP) |

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_snmp::{Value, VarBind};

use super::{ChassisNames, Learnt, Via};
use crate::location::{format_mac, Mac};

/// One object read by a walk: its name (for errors and tests) and OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Object {
    pub name: &'static str,
    pub oid: &'static [u32],
}

const fn object(name: &'static str, oid: &'static [u32]) -> Object {
    Object { name, oid }
}

pub const SYS_NAME: Object = object("sysName", &[1, 3, 6, 1, 2, 1, 1, 5]);
pub const IF_DESCR: Object = object("ifDescr", &[1, 3, 6, 1, 2, 1, 2, 2, 1, 2]);
pub const IF_NAME: Object = object("ifName", &[1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1]);
pub const BRIDGE_ADDRESS: Object = object("dot1dBaseBridgeAddress", &[1, 3, 6, 1, 2, 1, 17, 1, 1]);
pub const BASE_PORT_IF_INDEX: Object = object("dot1dBasePortIfIndex", &[1, 3, 6, 1, 2, 1, 17, 1, 4, 1, 2]);
pub const FDB_PORT: Object = object("dot1dTpFdbPort", &[1, 3, 6, 1, 2, 1, 17, 4, 3, 1, 2]);
pub const FDB_STATUS: Object = object("dot1dTpFdbStatus", &[1, 3, 6, 1, 2, 1, 17, 4, 3, 1, 3]);
pub const QFDB_PORT: Object = object("dot1qTpFdbPort", &[1, 3, 6, 1, 2, 1, 17, 7, 1, 2, 2, 1, 2]);
pub const QFDB_STATUS: Object = object("dot1qTpFdbStatus", &[1, 3, 6, 1, 2, 1, 17, 7, 1, 2, 2, 1, 3]);
pub const ARP: Object = object("ipNetToMediaPhysAddress", &[1, 3, 6, 1, 2, 1, 4, 22, 1, 2]);
pub const NEIGHBOURS: Object = object("ipNetToPhysicalPhysAddress", &[1, 3, 6, 1, 2, 1, 4, 35, 1, 4]);
pub const LLDP_LOC_CHASSIS_SUBTYPE: Object = object("lldpLocChassisIdSubtype", &[1, 0, 8802, 1, 1, 2, 1, 3, 1]);
pub const LLDP_LOC_CHASSIS_ID: Object = object("lldpLocChassisId", &[1, 0, 8802, 1, 1, 2, 1, 3, 2]);
pub const LLDP_LOC_SYS_NAME: Object = object("lldpLocSysName", &[1, 0, 8802, 1, 1, 2, 1, 3, 3]);
pub const LLDP_LOC_PORT_ID: Object = object("lldpLocPortId", &[1, 0, 8802, 1, 1, 2, 1, 3, 7, 1, 3]);
pub const LLDP_REM_CHASSIS_SUBTYPE: Object = object("lldpRemChassisIdSubtype", &[1, 0, 8802, 1, 1, 2, 1, 4, 1, 1, 4]);
pub const LLDP_REM_CHASSIS_ID: Object = object("lldpRemChassisId", &[1, 0, 8802, 1, 1, 2, 1, 4, 1, 1, 5]);
pub const LLDP_REM_SYS_NAME: Object = object("lldpRemSysName", &[1, 0, 8802, 1, 1, 2, 1, 4, 1, 1, 9]);
pub const LLDP_REM_MAN_ADDR: Object = object("lldpRemManAddrIfSubtype", &[1, 0, 8802, 1, 1, 2, 1, 4, 2, 1, 3]);

/// Every object a poll walks, in the order it walks them. Q-BRIDGE's table is walked only when
/// BRIDGE-MIB's is empty (`snmp.rs`): on a VLAN-aware switch both describe the same entries.
pub const OBJECTS: &[Object] = &[
    SYS_NAME,
    LLDP_LOC_CHASSIS_SUBTYPE,
    LLDP_LOC_CHASSIS_ID,
    LLDP_LOC_SYS_NAME,
    BRIDGE_ADDRESS,
    IF_NAME,
    IF_DESCR,
    BASE_PORT_IF_INDEX,
    FDB_PORT,
    FDB_STATUS,
    QFDB_PORT,
    QFDB_STATUS,
    ARP,
    NEIGHBOURS,
    LLDP_LOC_PORT_ID,
    LLDP_REM_CHASSIS_SUBTYPE,
    LLDP_REM_CHASSIS_ID,
    LLDP_REM_SYS_NAME,
    LLDP_REM_MAN_ADDR,
];

/// What the walks returned: per object, each instance's index (the arcs after the object's OID)
/// and value.
#[derive(Debug, Default, Clone)]
pub struct Walks {
    objects: HashMap<&'static str, Vec<(Vec<u32>, Value)>>,
}

impl Walks {
    /// Keep the varbinds of `object`'s walk (those under its OID; anything else is ignored).
    pub fn add(&mut self, object: Object, varbinds: impl IntoIterator<Item = VarBind>) {
        let rows = self.objects.entry(object.name).or_default();
        for vb in varbinds {
            let arcs = vb.oid.arcs();
            if arcs.len() > object.oid.len() && arcs.starts_with(object.oid) {
                rows.push((arcs[object.oid.len()..].to_vec(), vb.value));
            }
        }
    }

    fn rows(&self, object: Object) -> &[(Vec<u32>, Value)] {
        self.objects.get(object.name).map_or(&[], Vec::as_slice)
    }

    /// Whether a walk of `object` returned anything.
    pub fn has(&self, object: Object) -> bool {
        !self.rows(object).is_empty()
    }

    fn scalar(&self, object: Object) -> Option<&Value> {
        self.rows(object).iter().find(|(index, _)| index == &[0]).map(|(_, v)| v)
    }

    /// index → value, for tables indexed by one integer.
    fn by_int(&self, object: Object) -> HashMap<u32, &Value> {
        self.rows(object).iter().filter(|(index, _)| index.len() == 1).map(|(index, v)| (index[0], v)).collect()
    }
}

/// What one poll learnt of one switch: its names, where each MAC is, and IP → MAC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interpreted {
    pub chassis: ChassisNames,
    pub entries: Vec<Learnt>,
    pub ip_to_mac: Vec<(IpAddr, Mac)>,
}

/// dot1dTpFdbStatus / dot1qTpFdbStatus (RFC 4188 §5, RFC 4363): other(1), invalid(2),
/// learned(3), self(4), mgmt(5). `self` is the switch's own address and `invalid` is on its way
/// out; a missing status (some switches do not implement the column) counts as learned.
fn usable_fdb_status(status: Option<&Value>) -> bool {
    !matches!(status.and_then(Value::as_i32), Some(2) | Some(4))
}

/// Text of an octet string as a switch means it: printable UTF-8 (trailing NULs and blanks
/// trimmed, which some agents pad names with); `None` for anything else.
fn text(v: &Value) -> Option<String> {
    let bytes = v.as_bytes()?;
    let s = std::str::from_utf8(bytes).ok()?.trim_end_matches('\0').trim();
    (!s.is_empty() && !s.chars().any(char::is_control)).then(|| s.to_string())
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <Mac>::try_from(bytes).ok()
}

/// The last six arcs of an index as a MAC (BRIDGE-MIB and Q-BRIDGE-MIB index by MacAddress,
/// each octet one arc); `None` if an arc is not an octet.
fn mac_from_arcs(arcs: &[u32]) -> Option<Mac> {
    if arcs.len() < 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (b, a) in m.iter_mut().zip(&arcs[arcs.len() - 6..]) {
        *b = u8::try_from(*a).ok()?;
    }
    Some(m)
}

/// An LLDP chassis ID as the wiremap spells it (IEEE 802.1AB §8.5.2.2): a MAC address
/// (subtype 4) in the `0A-23-CD-16-AA-2E` form, locally assigned and name subtypes (1, 2, 6, 7)
/// as text; a network address (5) or anything unreadable: `None`.
fn lldp_chassis(subtype: Option<i32>, id: &Value) -> Option<String> {
    match subtype {
        Some(4) => id.as_bytes().and_then(mac_of).map(|m| format_mac(&m)),
        Some(5) => None,
        _ => text(id),
    }
}

/// Read the walks of one switch polled at `now`. Never fails: what a switch did not answer, or
/// answered in a shape the MIB does not allow, is left out.
pub fn interpret(walks: &Walks) -> Interpreted {
    // The switch's names, most specific first: LLDP's chassis ID is what phones see and what
    // Skype for Business wiremaps were keyed on.
    let mut chassis = ChassisNames::default();
    let subtype = walks.scalar(LLDP_LOC_CHASSIS_SUBTYPE).and_then(Value::as_i32);
    if let Some(id) = walks.scalar(LLDP_LOC_CHASSIS_ID).and_then(|v| lldp_chassis(subtype, v)) {
        chassis.push(id);
    }
    if let Some(m) = walks.scalar(BRIDGE_ADDRESS).and_then(Value::as_bytes).and_then(mac_of) {
        chassis.push(format_mac(&m));
    }
    for name in [LLDP_LOC_SYS_NAME, SYS_NAME] {
        if let Some(n) = walks.scalar(name).and_then(text) {
            chassis.push(n);
        }
    }

    let if_name = walks.by_int(IF_NAME);
    let if_descr = walks.by_int(IF_DESCR);
    let bridge_if: HashMap<u32, u32> =
        walks.by_int(BASE_PORT_IF_INDEX).into_iter().filter_map(|(p, v)| Some((p, v.as_u32()?))).collect();
    let lldp_port_id = walks.by_int(LLDP_LOC_PORT_ID);
    // A port: its ifIndex when known, and its names (ifName first: what admins type, e.g.
    // `Gi1/0/7`; ifDescr, e.g. `GigabitEthernet1/0/7`, second).
    let port_of_if = |if_index: u32| -> Option<(Option<u32>, String, Option<String>)> {
        let name = if_name.get(&if_index).and_then(|v| text(v));
        let descr = if_descr.get(&if_index).and_then(|v| text(v));
        match (name, descr) {
            (Some(n), d) => {
                let d = d.filter(|d| *d != n);
                Some((Some(if_index), n, d))
            }
            (None, Some(d)) => Some((Some(if_index), d, None)),
            (None, None) => None,
        }
    };
    let port_of_bridge_port = |port: u32| bridge_if.get(&port).and_then(|i| port_of_if(*i));

    let mut entries = Vec::new();
    // RFC 4188 dot1dTpFdbTable, INDEX { dot1dTpFdbAddress }.
    let status = walks.rows(FDB_STATUS).iter().map(|(i, v)| (i.as_slice(), v)).collect::<HashMap<_, _>>();
    for (index, port) in walks.rows(FDB_PORT) {
        let (Some(mac), Some(port)) = (mac_from_arcs(index).filter(|_| index.len() == 6), port.as_u32()) else {
            continue;
        };
        if port == 0 || !usable_fdb_status(status.get(index.as_slice()).copied()) {
            continue;
        }
        if let Some((if_index, name, descr)) = port_of_bridge_port(port) {
            entries.push(Learnt::new(mac, if_index, name, descr, None, Via::Fdb));
        }
    }
    // RFC 4363 dot1qTpFdbTable, INDEX { dot1qFdbId, dot1qTpFdbAddress }: read only when the
    // BRIDGE-MIB table had nothing (a VLAN-aware switch often leaves it empty). The FDB id is
    // the VLAN on the usual independent-VLAN-learning switch; shown as the VLAN.
    if entries.is_empty() {
        let status = walks.rows(QFDB_STATUS).iter().map(|(i, v)| (i.as_slice(), v)).collect::<HashMap<_, _>>();
        for (index, port) in walks.rows(QFDB_PORT) {
            if index.len() != 7 {
                continue;
            }
            let (Some(mac), Some(port)) = (mac_from_arcs(index), port.as_u32()) else { continue };
            if port == 0 || !usable_fdb_status(status.get(index.as_slice()).copied()) {
                continue;
            }
            let vlan = u16::try_from(index[0]).ok();
            if let Some((if_index, name, descr)) = port_of_bridge_port(port) {
                entries.push(Learnt::new(mac, if_index, name, descr, vlan, Via::Fdb));
            }
        }
    }

    // LLDP remote systems (lldpRemTable, INDEX { lldpRemTimeMark, lldpRemLocalPortNum,
    // lldpRemIndex }): a device announcing a MAC chassis ID is attached to that local port.
    // lldpRemLocalPortNum is the bridge port on a bridge (LLDP-MIB LldpPortNumber), else only
    // lldpLocPortId names it.
    let rem_subtype: BTreeMap<&[u32], i32> =
        walks.rows(LLDP_REM_CHASSIS_SUBTYPE).iter().filter_map(|(i, v)| Some((i.as_slice(), v.as_i32()?))).collect();
    let rem_name: BTreeMap<&[u32], String> =
        walks.rows(LLDP_REM_SYS_NAME).iter().filter_map(|(i, v)| Some((i.as_slice(), text(v)?))).collect();
    let mut rem_mac: BTreeMap<&[u32], Mac> = BTreeMap::new();
    for (index, id) in walks.rows(LLDP_REM_CHASSIS_ID) {
        if index.len() != 3 || rem_subtype.get(index.as_slice()) != Some(&4) {
            continue;
        }
        let Some(mac) = id.as_bytes().and_then(mac_of) else { continue };
        rem_mac.insert(index.as_slice(), mac);
        let local = index[1];
        let port = port_of_bridge_port(local)
            .or_else(|| lldp_port_id.get(&local).and_then(|v| text(v)).map(|name| (None, name, None)));
        if let Some((if_index, name, descr)) = port {
            let mut l = Learnt::new(mac, if_index, name, descr, None, Via::Lldp);
            l.neighbour = rem_name.get(index.as_slice()).cloned();
            entries.push(l);
        }
    }

    let mut ip_to_mac = Vec::new();
    // RFC 4293 ipNetToMediaTable, INDEX { ipNetToMediaIfIndex, ipNetToMediaNetAddress }.
    for (index, phys) in walks.rows(ARP) {
        if index.len() != 5 {
            continue;
        }
        let octets: Option<Vec<u8>> = index[1..].iter().map(|a| u8::try_from(*a).ok()).collect();
        let (Some(o), Some(mac)) = (octets, phys.as_bytes().and_then(mac_of)) else { continue };
        ip_to_mac.push((IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])), mac));
    }
    // RFC 4293 ipNetToPhysicalTable, INDEX { ipNetToPhysicalIfIndex,
    // ipNetToPhysicalNetAddressType, ipNetToPhysicalNetAddress } (an InetAddress: length, octets).
    for (index, phys) in walks.rows(NEIGHBOURS) {
        if let (Some(ip), Some(mac)) = (inet_address(index.get(1..).unwrap_or(&[])), phys.as_bytes().and_then(mac_of)) {
            ip_to_mac.push((ip, mac));
        }
    }
    // lldpRemManAddrTable, INDEX { lldpRemTimeMark, lldpRemLocalPortNum, lldpRemIndex,
    // lldpRemManAddrSubtype, lldpRemManAddr }: the address an LLDP neighbour announces. The
    // subtype is an IANA address family (1 IPv4, 2 IPv6), not an InetAddressType.
    for (index, _) in walks.rows(LLDP_REM_MAN_ADDR) {
        if index.len() < 5 {
            continue;
        }
        let Some(mac) = rem_mac.get(&index[..3]) else { continue };
        let family = match index[3] {
            1 => 1,
            2 => 2,
            _ => continue,
        };
        let mut inet = vec![family];
        inet.extend_from_slice(&index[4..]);
        if let Some(ip) = inet_address(&inet) {
            ip_to_mac.push((ip, *mac));
        }
    }
    Interpreted { chassis, entries, ip_to_mac }
}

/// An InetAddressType + InetAddress (RFC 4001) as OID arcs: type 1 (ipv4) or 2 (ipv6), the
/// address's length, its octets.
fn inet_address(arcs: &[u32]) -> Option<IpAddr> {
    let (kind, rest) = arcs.split_first()?;
    let (len, octets) = rest.split_first()?;
    let octets: Vec<u8> = octets.iter().map(|a| u8::try_from(*a).ok()).collect::<Option<_>>()?;
    if octets.len() != *len as usize {
        return None;
    }
    match (kind, octets.len()) {
        (1, 4) => Some(IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))),
        (2, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets.as_slice()).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_snmp::Oid;
    use bytes::Bytes;

    fn vb(object: Object, index: &[u32], value: Value) -> VarBind {
        let mut arcs = object.oid.to_vec();
        arcs.extend_from_slice(index);
        VarBind { oid: Oid::from_slice(&arcs), value }
    }

    fn octets(b: &[u8]) -> Value {
        Value::OctetString(Bytes::copy_from_slice(b))
    }

    const PHONE: Mac = [0x00, 0x0d, 0x4b, 0x30, 0x72, 0xdf];

    fn walks(rows: Vec<(Object, Vec<u32>, Value)>) -> Walks {
        let mut w = Walks::default();
        for (o, i, v) in rows {
            w.add(o, [vb(o, &i, v)]);
        }
        w
    }

    #[test]
    fn a_mac_in_the_bridge_table_is_at_its_ports_name() {
        let mac_arcs: Vec<u32> = PHONE.iter().map(|b| *b as u32).collect();
        let w = walks(vec![
            (LLDP_LOC_CHASSIS_SUBTYPE, vec![0], Value::Integer(4)),
            (LLDP_LOC_CHASSIS_ID, vec![0], octets(&[0x00, 0x16, 0xc7, 0x02, 0x6e, 0x80])),
            (SYS_NAME, vec![0], octets(b"Profiler3750")),
            (IF_NAME, vec![11014], octets(b"Fa3/0/14")),
            (IF_DESCR, vec![11014], octets(b"FastEthernet3/0/14")),
            (BASE_PORT_IF_INDEX, vec![124], Value::Integer(11014)),
            (FDB_PORT, mac_arcs.clone(), Value::Integer(124)),
            (FDB_STATUS, mac_arcs.clone(), Value::Integer(3)),
            // The switch's own address (self) is no device.
            (FDB_PORT, vec![0, 0x16, 0xc7, 2, 0x6e, 0x83], Value::Integer(124)),
            (FDB_STATUS, vec![0, 0x16, 0xc7, 2, 0x6e, 0x83], Value::Integer(4)),
            (ARP, vec![60, 10, 204, 88, 7], octets(&PHONE)),
            // Malformed rows are left out, never a panic.
            (FDB_PORT, vec![1, 2, 3], Value::Integer(124)),
            (ARP, vec![60, 10, 204, 999, 7], octets(&PHONE)),
            (IF_NAME, vec![1, 2], octets(b"junk")),
        ]);
        let r = interpret(&w);
        assert_eq!(r.chassis.0, ["00-16-C7-02-6E-80", "Profiler3750"]);
        assert_eq!(r.entries.len(), 1, "{r:?}");
        let e = &r.entries[0];
        assert_eq!((e.mac, e.if_index, e.port.as_str()), (PHONE, Some(11014), "Fa3/0/14"));
        assert_eq!(e.port_descr.as_deref(), Some("FastEthernet3/0/14"));
        assert_eq!(r.ip_to_mac, [("10.204.88.7".parse().unwrap(), PHONE)]);
    }

    #[test]
    fn q_bridge_when_the_bridge_table_is_empty_and_lldp_neighbours() {
        let mut q = vec![20];
        q.extend(PHONE.iter().map(|b| *b as u32));
        let other: Mac = [2, 0, 0, 0, 0, 9];
        let w = walks(vec![
            (IF_NAME, vec![7], octets(b"ge-0/0/7")),
            (IF_NAME, vec![8], octets(b"ge-0/0/8")),
            (BASE_PORT_IF_INDEX, vec![507], Value::Integer(7)),
            (BASE_PORT_IF_INDEX, vec![508], Value::Integer(8)),
            (QFDB_PORT, q, Value::Integer(507)),
            (LLDP_REM_CHASSIS_SUBTYPE, vec![0, 508, 1], Value::Integer(4)),
            (LLDP_REM_CHASSIS_ID, vec![0, 508, 1], octets(&other)),
            (LLDP_REM_SYS_NAME, vec![0, 508, 1], octets(b"SEP020000000009")),
            (LLDP_REM_MAN_ADDR, vec![0, 508, 1, 1, 4, 10, 1, 2, 9], Value::Integer(2)),
            (NEIGHBOURS, vec![7, 2, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], octets(&PHONE)),
        ]);
        let r = interpret(&w);
        assert_eq!(r.entries.len(), 2, "{r:?}");
        assert_eq!((r.entries[0].port.as_str(), r.entries[0].vlan, r.entries[0].via), ("ge-0/0/7", Some(20), Via::Fdb));
        assert_eq!((r.entries[1].mac, r.entries[1].port.as_str(), r.entries[1].via), (other, "ge-0/0/8", Via::Lldp));
        assert_eq!(r.entries[1].neighbour.as_deref(), Some("SEP020000000009"));
        assert_eq!(r.ip_to_mac, [("2001:db8::9".parse().unwrap(), PHONE), ("10.1.2.9".parse().unwrap(), other)]);
    }
}
