//! The wiremap index as the LIS uses it: every key kind, the precedence between them, longest
//! prefix match, refused imports, atomic replacement under concurrent lookups, and lookups that
//! do not allocate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sosdesk::location::wiremap::{ConflictingEntry, SharedWiremap, Wiremap, WiremapProblem, WiremapStats};
use sosdesk::location::{
    parse_mac, CivicAddress, DeviceAttachment, Erl, Locator, MatchKind, PortIdSubtype, WiremapEntry, WiremapKey,
};

// Counts this thread's allocations, to check that lookups make none. The allocator of the whole
// test binary: every module's tests run on several threads at once, so the count is per thread.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.with(|n| n.get())
}

fn erl(label: &str) -> Erl {
    Erl {
        label: label.to_string(),
        civic: CivicAddress {
            country: Some("US".into()),
            a1: Some("WA".into()),
            a3: Some("Redmond".into()),
            hno: Some("1".into()),
            rd: Some("Main".into()),
            sts: Some("St".into()),
            loc: Some(label.to_string()),
            ..CivicAddress::default()
        },
        ..Erl::default()
    }
}

fn subnet(s: &str, erl: usize) -> WiremapEntry {
    WiremapEntry { key: WiremapKey::Subnet(s.parse().unwrap()), erl }
}

fn bssid(s: &str, erl: usize) -> WiremapEntry {
    WiremapEntry { key: WiremapKey::Bssid(parse_mac(s).unwrap()), erl }
}

fn mac(s: &str, erl: usize) -> WiremapEntry {
    WiremapEntry { key: WiremapKey::Mac(parse_mac(s).unwrap()), erl }
}

fn switch(chassis: &str, erl: usize) -> WiremapEntry {
    WiremapEntry { key: WiremapKey::Switch { chassis_id: chassis.into() }, erl }
}

fn port(chassis: &str, subtype: PortIdSubtype, port: &str, erl: usize) -> WiremapEntry {
    WiremapEntry {
        key: WiremapKey::Port { chassis_id: chassis.into(), port_subtype: subtype, port_id: port.into() },
        erl,
    }
}

fn ip(s: &str) -> DeviceAttachment {
    DeviceAttachment { ip: Some(s.parse().unwrap()), ..DeviceAttachment::default() }
}

/// The label and kind of a lookup's answer, for exact comparisons.
fn answer(map: &dyn Locator, dev: &DeviceAttachment) -> Option<(String, MatchKind)> {
    map.locate(dev).map(|(erl, kind)| (erl.label.clone(), kind))
}

fn some(label: &str, kind: MatchKind) -> Option<(String, MatchKind)> {
    Some((label.to_string(), kind))
}

const CHASSIS: &str = "0B-23-CD-16-AA-BB";
const AP: &str = "0A-23-CD-16-AA-2E";
const PHONE: &str = "00-04-F2-11-22-33";

/// ERLs: 0 subnet /16, 1 subnet /24, 2 host /32, 3 switch, 4 port, 5 access point, 6 MAC,
/// 7 IPv6 /48, 8 IPv6 /64, 9 text-named switch, 10 its port.
fn campus() -> Wiremap {
    let erls = [
        "HQ",
        "HQ floor 2",
        "HQ lobby kiosk",
        "HQ IDF 2",
        "HQ desk 2-114",
        "HQ AP 2-east",
        "HQ phone 1001",
        "HQ v6",
        "HQ v6 floor 3",
        "Lab switch",
        "Lab bench 4",
    ]
    .map(erl)
    .to_vec();
    let entries = [
        subnet("10.1.0.0/16", 0),
        subnet("10.1.2.0/24", 1),
        subnet("10.1.2.50/32", 2),
        switch(CHASSIS, 3),
        port(CHASSIS, PortIdSubtype::InterfaceName, "Gi1/0/14", 4),
        bssid(AP, 5),
        mac(PHONE, 6),
        subnet("2001:db8:10::/48", 7),
        subnet("2001:db8:10:3::/64", 8),
        switch("LAB-SW-01", 9),
        port("LAB-SW-01", PortIdSubtype::LocallyAssigned, "bench-4", 10),
    ];
    Wiremap::build(erls, &entries).unwrap()
}

// In a module named `location` so that `cargo test --lib --test it location::` (the lib's location
// tests and these, `wiremap::location::…`) runs them: a test-name filter applies to every target
// it is given, and matches anywhere in a test's path.
mod location {
    use super::*;

    #[test]
    fn each_key_kind_matches_on_its_own() {
        let map = campus();
        assert_eq!(answer(&map, &ip("10.1.9.9")), some("HQ", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("2001:db8:10:7::1")), some("HQ v6", MatchKind::Subnet));
        let wifi = DeviceAttachment { bssid: parse_mac("0a:23:cd:16:aa:2e"), ..DeviceAttachment::default() };
        assert_eq!(answer(&map, &wifi), some("HQ AP 2-east", MatchKind::WirelessAccessPoint));
        let phone = DeviceAttachment { mac: parse_mac("0004.f211.2233"), ..DeviceAttachment::default() };
        assert_eq!(answer(&map, &phone), some("HQ phone 1001", MatchKind::Mac));
        let on_switch = DeviceAttachment { chassis_id: Some(CHASSIS.into()), ..DeviceAttachment::default() };
        assert_eq!(answer(&map, &on_switch), some("HQ IDF 2", MatchKind::Switch));
        let on_port = DeviceAttachment {
            chassis_id: Some(CHASSIS.into()),
            port_id: Some("Gi1/0/14".into()),
            port_subtype: Some(PortIdSubtype::InterfaceName),
            ..DeviceAttachment::default()
        };
        assert_eq!(answer(&map, &on_port), some("HQ desk 2-114", MatchKind::SwitchPort));

        // The returned ERL is the whole ERL, shared with the map (not a copy per lookup).
        let (found, _) = map.lookup(&on_port).unwrap();
        assert_eq!(*found, erl("HQ desk 2-114"));
        assert!(Arc::ptr_eq(&found, &map.erls()[4]));
    }

    #[test]
    fn precedence_access_point_then_mac_then_port_then_switch_then_subnet() {
        let map = campus();
        let mut dev = DeviceAttachment {
            ip: Some("10.1.2.50".parse().unwrap()),
            mac: parse_mac(PHONE),
            bssid: parse_mac(AP),
            chassis_id: Some(CHASSIS.into()),
            port_id: Some("Gi1/0/14".into()),
            port_subtype: Some(PortIdSubtype::InterfaceName),
        };
        assert_eq!(answer(&map, &dev), some("HQ AP 2-east", MatchKind::WirelessAccessPoint));
        dev.bssid = None;
        assert_eq!(answer(&map, &dev), some("HQ phone 1001", MatchKind::Mac));
        dev.mac = None;
        assert_eq!(answer(&map, &dev), some("HQ desk 2-114", MatchKind::SwitchPort));
        dev.port_id = Some("Gi1/0/15".into());
        assert_eq!(answer(&map, &dev), some("HQ IDF 2", MatchKind::Switch));
        dev.chassis_id = None;
        assert_eq!(answer(&map, &dev), some("HQ lobby kiosk", MatchKind::Subnet));

        // Unknown higher-precedence keys do not hide a lower match.
        let dev = DeviceAttachment {
            ip: Some("10.1.2.7".parse().unwrap()),
            mac: parse_mac("02-00-00-00-00-01"),
            bssid: parse_mac("02-00-00-00-00-02"),
            chassis_id: Some("02-00-00-00-00-03".into()),
            port_id: Some("Gi1/0/14".into()),
            port_subtype: Some(PortIdSubtype::InterfaceName),
        };
        assert_eq!(answer(&map, &dev), some("HQ floor 2", MatchKind::Subnet));

        // MAC ranks right after the access point: above the port, below the access point.
        assert!(MatchKind::WirelessAccessPoint < MatchKind::Mac && MatchKind::Mac < MatchKind::SwitchPort);
    }

    #[test]
    fn port_needs_chassis_subtype_and_port_id() {
        let map = campus();
        let dev = |chassis: &str, subtype: Option<PortIdSubtype>, port: &str| DeviceAttachment {
            chassis_id: Some(chassis.into()),
            port_id: Some(port.into()),
            port_subtype: subtype,
            ..DeviceAttachment::default()
        };
        let name = Some(PortIdSubtype::InterfaceName);
        // Chassis spelled another way, port in another case, blanks around: still the port.
        assert_eq!(
            answer(&map, &dev("0b:23:cd:16:aa:bb", name, " gi1/0/14 ")),
            some("HQ desk 2-114", MatchKind::SwitchPort)
        );
        assert_eq!(
            answer(&map, &dev("0b23.cd16.aabb", name, "GI1/0/14")),
            some("HQ desk 2-114", MatchKind::SwitchPort)
        );
        // Another subtype, or none given (the default, LocallyAssigned): not that InterfaceName port,
        // but still that switch.
        assert_eq!(
            answer(&map, &dev(CHASSIS, Some(PortIdSubtype::InterfaceAlias), "Gi1/0/14")),
            some("HQ IDF 2", MatchKind::Switch)
        );
        assert_eq!(answer(&map, &dev(CHASSIS, None, "Gi1/0/14")), some("HQ IDF 2", MatchKind::Switch));
        // No subtype given means SfB's default, LocallyAssigned (as an empty PortIDSubType does
        // on import): a LocallyAssigned port matches.
        assert_eq!(answer(&map, &dev("LAB-SW-01", None, "bench-4")), some("Lab bench 4", MatchKind::SwitchPort));
        // The port ID on another switch: no match at all.
        assert_eq!(answer(&map, &dev("0B-23-CD-16-AA-BC", name, "Gi1/0/14")), None);
        // Text chassis IDs compare without case and without surrounding blanks.
        let lab = Some(PortIdSubtype::LocallyAssigned);
        assert_eq!(answer(&map, &dev(" lab-sw-01", lab, "BENCH-4")), some("Lab bench 4", MatchKind::SwitchPort));
        assert_eq!(answer(&map, &dev("Lab-Sw-01", lab, "bench-5")), some("Lab switch", MatchKind::Switch));
        // A blank chassis ID counts as absent.
        assert_eq!(answer(&map, &dev("  ", lab, "bench-4")), None);
    }

    #[test]
    fn a_port_without_a_switch_entry_still_matches_its_port_only() {
        let map =
            Wiremap::build(vec![erl("Port only")], &[port("sw-9", PortIdSubtype::LocallyAssigned, "7", 0)]).unwrap();
        let mut dev = DeviceAttachment {
            chassis_id: Some("SW-9".into()),
            port_id: Some("7".into()),
            port_subtype: Some(PortIdSubtype::LocallyAssigned),
            ..DeviceAttachment::default()
        };
        assert_eq!(answer(&map, &dev), some("Port only", MatchKind::SwitchPort));
        dev.port_id = Some("8".into());
        assert_eq!(answer(&map, &dev), None);
    }

    #[test]
    fn most_specific_ipv4_subnet_wins() {
        let map = campus();
        assert_eq!(answer(&map, &ip("10.1.200.1")), some("HQ", MatchKind::Subnet)); // /16 only
        assert_eq!(answer(&map, &ip("10.1.2.49")), some("HQ floor 2", MatchKind::Subnet)); // /24
        assert_eq!(answer(&map, &ip("10.1.2.50")), some("HQ lobby kiosk", MatchKind::Subnet)); // /32
        assert_eq!(answer(&map, &ip("10.1.2.51")), some("HQ floor 2", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("10.1.2.255")), some("HQ floor 2", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("10.1.3.0")), some("HQ", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("10.1.0.0")), some("HQ", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("10.1.255.255")), some("HQ", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("10.0.255.255")), None);
        assert_eq!(answer(&map, &ip("10.2.0.0")), None);
    }

    #[test]
    fn most_specific_ipv6_subnet_wins() {
        let map = campus();
        assert_eq!(answer(&map, &ip("2001:db8:10:3::1")), some("HQ v6 floor 3", MatchKind::Subnet)); // /64
        assert_eq!(answer(&map, &ip("2001:db8:10:3:ffff:ffff:ffff:ffff")), some("HQ v6 floor 3", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("2001:db8:10:4::")), some("HQ v6", MatchKind::Subnet)); // /48
        assert_eq!(answer(&map, &ip("2001:db8:10:ffff::1")), some("HQ v6", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("2001:db8:11::1")), None);
        assert_eq!(answer(&map, &ip("::1")), None);
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_and_subnets_are_ipv4() {
        let map = campus();
        // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d.
        assert_eq!(answer(&map, &ip("::ffff:10.1.2.50")), some("HQ lobby kiosk", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("::ffff:10.1.2.9")), some("HQ floor 2", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("::ffff:10.1.77.1")), some("HQ", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("::ffff:10.9.0.1")), None);

        // A subnet written in mapped form is the IPv4 subnet, and ranks by its IPv4 length.
        let map = Wiremap::build(
            vec![erl("mapped /8"), erl("v4 /24"), erl("v6 default")],
            &[subnet("::ffff:10.0.0.0/104", 0), subnet("10.9.9.0/24", 1), subnet("::/0", 2)],
        )
        .unwrap();
        assert_eq!(answer(&map, &ip("10.200.0.1")), some("mapped /8", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("10.9.9.9")), some("v4 /24", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("::ffff:10.9.9.9")), some("v4 /24", MatchKind::Subnet));
        // ::/0 covers the mapped addresses too: the IPv4 space falls back to it, after every IPv4 subnet.
        assert_eq!(answer(&map, &ip("192.0.2.1")), some("v6 default", MatchKind::Subnet));
        assert_eq!(answer(&map, &ip("2001:db8::1")), some("v6 default", MatchKind::Subnet));
        assert_eq!(map.stats().ipv4_subnets, 2);
        assert_eq!(map.stats().ipv6_subnets, 1);
    }

    #[test]
    fn no_match_is_none_and_an_empty_wiremap_is_valid() {
        let map = campus();
        assert_eq!(answer(&map, &DeviceAttachment::default()), None);
        assert_eq!(answer(&map, &ip("192.168.1.1")), None);
        let stranger = DeviceAttachment {
            ip: Some("172.16.0.1".parse().unwrap()),
            mac: parse_mac("02-00-00-00-00-09"),
            bssid: parse_mac("02-00-00-00-00-0A"),
            chassis_id: Some("unknown-switch".into()),
            port_id: Some("1".into()),
            port_subtype: Some(PortIdSubtype::LocallyAssigned),
        };
        assert_eq!(answer(&map, &stranger), None);

        let empty = Wiremap::build(Vec::new(), &[]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(answer(&empty, &stranger), None);
        assert_eq!(answer(&empty, &ip("::ffff:10.1.2.3")), None);
        assert_eq!(answer(&Wiremap::default(), &ip("0.0.0.0")), None);
        assert_eq!(answer(&SharedWiremap::default(), &stranger), None);
    }

    #[test]
    fn stats_count_distinct_keys_per_kind() {
        let map = campus();
        assert_eq!(
            map.stats(),
            WiremapStats {
                erls: 11,
                ipv4_subnets: 3,
                ipv6_subnets: 2,
                access_points: 1,
                macs: 1,
                switches: 2,
                ports: 2
            }
        );
        assert_eq!(map.len(), 11);
        assert_eq!(map.len_of(MatchKind::Subnet), 5);
        assert_eq!(map.len_of(MatchKind::SwitchPort), 2);
        assert_eq!(map.len_of(MatchKind::WirelessAccessPoint), 1);
        assert_eq!(
            map.stats().to_string(),
            "11 entries (3 IPv4 subnets, 2 IPv6 subnets, 1 access points, 1 MACs, 2 switches, 2 ports) over 11 ERLs"
        );
        assert_eq!(format!("{map:?}").lines().count(), 1);
    }

    #[test]
    fn identical_duplicates_are_kept_once() {
        // The same key spelled differently, with the same ERL (or an equal ERL at another index).
        let map = Wiremap::build(
            vec![erl("A"), erl("A")],
            &[
                subnet("10.0.0.0/24", 0),
                subnet("10.0.0.77/24", 0),
                subnet("::ffff:10.0.0.0/120", 1),
                switch("0b:23:cd:16:aa:bb", 0),
                switch("0B-23-CD-16-AA-BB", 1),
                switch("Core-1", 0),
                switch(" core-1 ", 0),
                port("core-1", PortIdSubtype::InterfaceAlias, "Uplink", 0),
                port("CORE-1", PortIdSubtype::InterfaceAlias, "uplink", 0),
                bssid(AP, 0),
                bssid(AP, 0),
            ],
        )
        .unwrap();
        let s = map.stats();
        assert_eq!((s.ipv4_subnets, s.switches, s.ports, s.access_points), (1, 2, 1, 1));
        assert_eq!(answer(&map, &ip("10.0.0.5")), some("A", MatchKind::Subnet));
    }

    #[test]
    fn conflicting_duplicates_are_refused_naming_the_key_and_entries() {
        let erls = vec![erl("HQ floor 1"), erl("HQ floor 2"), erl("Lab")];
        let err = Wiremap::build(
            erls.clone(),
            &[
                subnet("10.1.0.0/16", 0),
                bssid(AP, 0),
                subnet("10.1.9.9/16", 1), // host bits set: the same subnet
                subnet("10.1.0.0/16", 0),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![WiremapProblem::Conflict {
                key: WiremapKey::Subnet("10.1.0.0/16".parse().unwrap()),
                entries: vec![
                    ConflictingEntry { entry: 0, erl: 0, erl_label: "HQ floor 1".into() },
                    ConflictingEntry { entry: 2, erl: 1, erl_label: "HQ floor 2".into() },
                    ConflictingEntry { entry: 3, erl: 0, erl_label: "HQ floor 1".into() },
                ],
            }]
        );
        assert_eq!(
            err.to_string(),
            "wiremap refused: 1 problem; subnet 10.1.0.0/16 maps to different ERLs: entry 0 → ERL 0 \"HQ floor 1\", \
             entry 2 → ERL 1 \"HQ floor 2\", entry 3 → ERL 0 \"HQ floor 1\""
        );

        // Every kind, each under its normal form; all problems at once, in entry order.
        let err = Wiremap::build(
            erls,
            &[
                switch("0b:23:cd:16:aa:bb", 0),
                port("SW-1", PortIdSubtype::InterfaceName, "Gi1/0/1", 0),
                bssid(AP, 0),
                mac(PHONE, 0),
                subnet("2001:db8::/48", 0),
                subnet("::ffff:192.0.2.0/120", 0),
                switch("0B23.CD16.AABB", 1),
                port("sw-1", PortIdSubtype::InterfaceName, "gi1/0/1", 2),
                bssid("0a:23:cd:16:aa:2e", 1),
                mac(PHONE, 2),
                subnet("2001:db8:0:1::/48", 1),
                subnet("192.0.2.0/24", 2),
                port("sw-1", PortIdSubtype::InterfaceAlias, "gi1/0/1", 2), // another subtype: no conflict
                WiremapEntry { key: WiremapKey::Mac([2, 0, 0, 0, 0, 1]), erl: 3 },
                switch("  ", 0),
                port("sw-1", PortIdSubtype::InterfaceName, " ", 0),
            ],
        )
        .unwrap_err();
        let keys: Vec<String> = err
            .problems
            .iter()
            .map(|p| match p {
                WiremapProblem::Conflict { key, entries } => {
                    format!("{key}: {:?}", entries.iter().map(|e| (e.entry, e.erl)).collect::<Vec<_>>())
                }
                other => other.to_string(),
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                "switch \"0B-23-CD-16-AA-BB\": [(0, 0), (6, 1)]",
                "port \"gi1/0/1\" (InterfaceName) of switch \"sw-1\": [(1, 0), (7, 2)]",
                "BSSID 0A-23-CD-16-AA-2E: [(2, 0), (8, 1)]",
                "MAC 00-04-F2-11-22-33: [(3, 0), (9, 2)]",
                "subnet 2001:db8::/48: [(4, 0), (10, 1)]",
                "subnet 192.0.2.0/24: [(5, 0), (11, 2)]",
                "entry 13 (MAC 02-00-00-00-00-01) refers to ERL 3, but there are only 3 ERLs",
                "entry 14 (switch \"  \") has an empty ID",
                "entry 15 (port \" \" (InterfaceName) of switch \"sw-1\") has an empty ID",
            ]
        );
        assert!(err.to_string().starts_with("wiremap refused: 9 problems; switch \"0B-23-CD-16-AA-BB\" maps to"));
    }

    #[test]
    fn a_long_list_of_problems_is_shortened_in_the_message_only() {
        let entries: Vec<WiremapEntry> = (0..25).map(|i| subnet(&format!("10.0.{i}.0/24"), 1)).collect();
        let err = Wiremap::build(vec![erl("only")], &entries).unwrap_err();
        assert_eq!(err.problems.len(), 25);
        let text = err.to_string();
        assert!(text.starts_with("wiremap refused: 25 problems; entry 0 (subnet 10.0.0.0/24) refers to ERL 1"));
        assert!(text.ends_with("; and 15 more"), "{text}");
    }

    #[test]
    fn a_reader_holding_the_old_map_keeps_its_answers() {
        let shared = SharedWiremap::new(campus());
        let before = shared.load();
        let renovated = Wiremap::build(vec![erl("HQ renovated")], &[subnet("10.1.0.0/16", 0), bssid(AP, 0)]).unwrap();
        let old = shared.replace(renovated);
        assert!(Arc::ptr_eq(&old, &before));

        let wifi = DeviceAttachment { bssid: parse_mac(AP), ..ip("10.1.2.50") };
        assert_eq!(answer(&*before, &ip("10.1.2.50")), some("HQ lobby kiosk", MatchKind::Subnet));
        assert_eq!(answer(&*before, &wifi), some("HQ AP 2-east", MatchKind::WirelessAccessPoint));
        assert_eq!(answer(&*shared.load(), &ip("10.1.2.50")), some("HQ renovated", MatchKind::Subnet));
        assert_eq!(answer(&shared, &wifi), some("HQ renovated", MatchKind::WirelessAccessPoint));
        // Clones share the one current map.
        let clone = shared.clone();
        assert_eq!(answer(&clone, &ip("10.1.2.50")), some("HQ renovated", MatchKind::Subnet));
        clone.replace(Wiremap::empty());
        assert_eq!(answer(&shared, &wifi), None);
        assert_eq!(answer(&*before, &wifi), some("HQ AP 2-east", MatchKind::WirelessAccessPoint));
    }

    /// Generation `g`'s map: every kind of entry, all pointing at one ERL labelled `gen-g`, so an
    /// answer mixing two generations, or a map seen half-built, shows.
    fn generation(g: usize) -> Wiremap {
        let label = format!("gen-{g}");
        let other = format!("gen-{g}-unused");
        let entries = [
            subnet("10.0.0.0/8", 0),
            subnet(&format!("10.{}.0.0/16", g % 200), 0),
            subnet("2001:db8::/32", 0),
            bssid(AP, 0),
            mac(PHONE, 0),
            switch(CHASSIS, 0),
            port(CHASSIS, PortIdSubtype::LocallyAssigned, "1", 0),
        ];
        Wiremap::build(vec![erl(&label), erl(&other)], &entries).unwrap()
    }

    #[test]
    fn lookups_racing_a_thousand_replaces_always_see_one_whole_map() {
        const REPLACES: usize = 1000;
        let shared = SharedWiremap::new(generation(0));
        let maps: Vec<Wiremap> = (1..=REPLACES).map(generation).collect();
        let devices = [
            DeviceAttachment {
                ip: Some("10.3.4.5".parse().unwrap()),
                bssid: parse_mac(AP),
                mac: parse_mac(PHONE),
                chassis_id: Some(CHASSIS.into()),
                port_id: Some("1".into()),
                port_subtype: Some(PortIdSubtype::LocallyAssigned),
            },
            DeviceAttachment { mac: parse_mac(PHONE), ..ip("2001:db8::5") },
            DeviceAttachment {
                chassis_id: Some(CHASSIS.into()),
                port_id: Some("1".into()),
                port_subtype: Some(PortIdSubtype::LocallyAssigned),
                ..DeviceAttachment::default()
            },
            DeviceAttachment { chassis_id: Some(CHASSIS.into()), ..DeviceAttachment::default() },
            ip("10.77.1.1"),
            ip("2001:db8:1::1"),
        ];
        let expected_kinds = [
            MatchKind::WirelessAccessPoint,
            MatchKind::Mac,
            MatchKind::SwitchPort,
            MatchKind::Switch,
            MatchKind::Subnet,
            MatchKind::Subnet,
        ];
        let done = AtomicBool::new(false);
        // The generation the reader last saw: the writer waits for it once, half-way, so that
        // the reader sees the map change under it however the threads are scheduled (a busy
        // machine could otherwise run all the replaces before the reader's first lookup).
        let observed = std::sync::atomic::AtomicUsize::new(0);

        let (lookups, generations_seen) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let generation_of = |label: &str| -> usize { label.strip_prefix("gen-").unwrap().parse().unwrap() };
                let mut last = 0;
                let mut seen = 0;
                let mut lookups = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    // One snapshot: every kind answers, all from the same generation.
                    let snapshot = shared.load();
                    let answers: Vec<(Arc<Erl>, MatchKind)> =
                        devices.iter().map(|d| snapshot.lookup(d).expect("a whole map answers")).collect();
                    let kinds: Vec<MatchKind> = answers.iter().map(|a| a.1).collect();
                    assert_eq!(kinds, expected_kinds);
                    assert!(answers.iter().all(|a| a.0.label == answers[0].0.label), "mixed maps in one snapshot");
                    let g = generation_of(&answers[0].0.label);
                    assert!(g >= last, "went back from generation {last} to {g}");
                    seen += usize::from(g != last);
                    last = g;
                    observed.store(g, Ordering::Release);
                    // Through the shared handle, each lookup on its own: always a whole map, never older.
                    for (d, kind) in devices.iter().zip(expected_kinds) {
                        let (erl, k) = shared.locate(d).expect("a whole map answers");
                        assert_eq!(k, kind);
                        let g = generation_of(&erl.label);
                        assert!(g >= last, "went back from generation {last} to {g}");
                        last = g;
                        lookups += 1;
                    }
                    if finished {
                        break;
                    }
                }
                assert_eq!(last, REPLACES, "the last generation is seen once the writer is done");
                (lookups, seen)
            });
            for (i, map) in maps.into_iter().enumerate() {
                let old = shared.replace(map);
                drop(old);
                if i + 1 == REPLACES / 2 {
                    while observed.load(Ordering::Acquire) < REPLACES / 2 {
                        std::thread::yield_now();
                    }
                }
                std::thread::yield_now();
            }
            done.store(true, Ordering::Release);
            reader.join().unwrap()
        });
        assert!(lookups >= devices.len() as u64);
        // The reader saw the map change under it (not only the first and last generation).
        assert!(generations_seen >= 2, "saw {generations_seen} generations");
    }

    #[test]
    fn lookups_do_not_allocate() {
        let map = campus();
        let shared = SharedWiremap::new(campus());
        let devices = [
            ip("10.1.2.50"),
            ip("10.9.9.9"),
            ip("::ffff:10.1.2.3"),
            ip("2001:db8:10:3::1"),
            DeviceAttachment { bssid: parse_mac(AP), ..DeviceAttachment::default() },
            DeviceAttachment { mac: parse_mac(PHONE), ..DeviceAttachment::default() },
            DeviceAttachment {
                chassis_id: Some("0b:23:cd:16:aa:bb".into()),
                port_id: Some("GI1/0/14".into()),
                port_subtype: Some(PortIdSubtype::InterfaceName),
                ..DeviceAttachment::default()
            },
            DeviceAttachment {
                chassis_id: Some("LAB-SW-01 and a long name that does not match anything at all".into()),
                port_id: Some("bench-4".into()),
                port_subtype: Some(PortIdSubtype::LocallyAssigned),
                ..DeviceAttachment::default()
            },
            DeviceAttachment::default(),
        ];
        let mut found = 0;
        let before = allocations();
        for _ in 0..1000 {
            for d in &devices {
                found += usize::from(map.lookup(d).is_some());
                found += usize::from(shared.lookup(d).is_some());
            }
        }
        let after = allocations();
        assert_eq!(after - before, 0, "allocations during 18,000 lookups");
        // The counter does count (so the zero above means something).
        let probe = std::hint::black_box(vec![1u8; 16]);
        assert_eq!(allocations(), after + 1);
        drop(probe);
        assert_eq!(found, 2 * 1000 * 6); // all but 10.9.9.9, the unknown text chassis and the empty attachment
    }

    #[test]
    fn shared_wiremap_is_send_sync_and_a_locator() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<SharedWiremap>();
        let locators: Vec<Box<dyn Locator>> = vec![Box::new(campus()), Box::new(SharedWiremap::new(campus()))];
        for l in &locators {
            assert_eq!(answer(l.as_ref(), &ip("10.1.2.1")), some("HQ floor 2", MatchKind::Subnet));
        }
    }
}
