//! The wiremap's keys in their normal forms (see "Normalisation" in the `wiremap` module
//! documentation): subnets without host bits and IPv4-mapped IPv6 as IPv4, chassis IDs as a MAC
//! address or case-folded text, port IDs case-folded; and the interning of chassis and port IDs
//! (text → number) that the exact-match tables are keyed on.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use ipnet::{IpNet, Ipv4Net};

use super::NONE;
use crate::location::{format_mac, Mac, WiremapKey};

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
pub(super) fn normal_subnet(net: IpNet) -> IpNet {
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
pub(super) enum Chassis<'a> {
    Mac(Mac),
    /// Compared with ASCII case folded.
    Text(&'a str),
}

pub(super) fn chassis_of(s: &str) -> Option<Chassis<'_>> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else {
        Some(mac_of(t).map_or(Chassis::Text(t), Chassis::Mac))
    }
}

/// [`super::parse_mac`] without its allocation (lookups parse the device's chassis ID): the same
/// strings are accepted — twelve hex digits once every `-`, `:` and `.` is dropped.
pub(super) fn mac_of(s: &str) -> Option<Mac> {
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
pub(super) struct ChassisIndex {
    by_mac: HashMap<Mac, u32>,
    by_text: Interner,
    count: u32,
}

impl ChassisIndex {
    /// The chassis's number, new ones getting a `NONE` switch ERL.
    pub(super) fn intern(&mut self, c: Chassis<'_>, switch_erl: &mut Vec<u32>) -> u32 {
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

    pub(super) fn find(&self, s: &str) -> Option<u32> {
        match chassis_of(s)? {
            Chassis::Mac(m) => self.by_mac.get(&m).copied(),
            Chassis::Text(t) => self.by_text.find(t),
        }
    }
}

/// Text → number, compared with ASCII case folded; stored in lower case (the normal form).
#[derive(Default)]
pub(super) struct Interner {
    ids: HashMap<FoldedId, u32>,
}

impl Interner {
    pub(super) fn intern(&mut self, text: &str) -> u32 {
        let next = self.ids.len() as u32;
        self.intern_as(text, next)
    }

    /// The number of `text`, giving it `next` if it is new.
    pub(super) fn intern_as(&mut self, text: &str, next: u32) -> u32 {
        if let Some(&n) = self.find_ref(text) {
            return n;
        }
        self.ids.insert(FoldedId(text.to_ascii_lowercase().into_boxed_str()), next);
        next
    }

    pub(super) fn find(&self, text: &str) -> Option<u32> {
        self.find_ref(text).copied()
    }

    pub(super) fn find_ref(&self, text: &str) -> Option<&u32> {
        // The caller's spelling is looked up as it is, through `dyn Folded`, so no lower-cased
        // copy is made on the lookup path.
        self.ids.get(&text as &dyn Folded)
    }
}

/// Text that hashes and compares with ASCII letters folded to lower case. The stored IDs
/// ([`FoldedId`]) and a caller's `&str` both implement it, and `FoldedId: Borrow<dyn Folded>` lets
/// a std `HashMap<FoldedId, _>` be searched with a `&str` of any case.
pub(super) trait Folded {
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

pub(super) struct FoldedId(pub(super) Box<str>);

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

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;

    use super::*;
    use crate::location::parse_mac;

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
}
