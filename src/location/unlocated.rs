//! The unlocated report (issue 16): every emergency call and HELD request leaves a *sighting* —
//! what was known of the device (IP, MAC, BSSID, switch and port) and how it was located. Those
//! the wiremap could not locate (a site default, or nothing) are counted per network element —
//! the IP's subnet (/24, IPv6 /64), the switch, the access point — so an admin sees which
//! networks are missing from the wiremap, and is told when a new one appears. Every sighting
//! also counts towards the share located by the wiremap, per day.
//!
//! The engine and the HELD endpoint hand sightings out (no I/O there); the server records them
//! in the location store ([`super::store::LisStore::record_sightings`]).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{format_mac, DeviceAttachment, LocationSource};

/// What asked where a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Asked {
    /// An emergency call.
    Call,
    /// A HELD location request (RFC 5985).
    Held,
}

impl Asked {
    pub fn as_str(&self) -> &'static str {
        match self {
            Asked::Call => "call",
            Asked::Held => "held",
        }
    }
}

/// One location outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub at: DateTime<Utc>,
    pub asked: Asked,
    pub device: DeviceAttachment,
    pub source: LocationSource,
}

impl Sighting {
    /// The wiremap had no answer and the device said nothing of where it is: the location is a
    /// site's default, or there is none.
    pub fn unlocated(&self) -> bool {
        matches!(self.source, LocationSource::SiteDefault | LocationSource::None)
    }

    /// The network elements the device was seen on, most telling first.
    pub fn elements(&self) -> Vec<(ElementKind, String)> {
        let d = &self.device;
        let mut out = Vec::new();
        if let Some(bssid) = d.bssid {
            out.push((ElementKind::AccessPoint, format_mac(&bssid)));
        }
        if let Some(chassis) = &d.chassis_id {
            out.push((ElementKind::Switch, chassis.clone()));
        }
        if let Some(ip) = d.ip {
            out.push((ElementKind::Subnet, subnet_of(ip)));
        }
        out
    }

    /// What was known of the device, for the report: `ip 10.9.9.7, mac 0A-…, port Gi1/0/7`.
    pub fn device_text(&self) -> String {
        let d = &self.device;
        let mut parts = Vec::new();
        if let Some(ip) = d.ip {
            parts.push(format!("ip {ip}"));
        }
        if let Some(m) = d.mac {
            parts.push(format!("mac {}", format_mac(&m)));
        }
        if let Some(b) = d.bssid {
            parts.push(format!("bssid {}", format_mac(&b)));
        }
        match (&d.chassis_id, &d.port_id) {
            (Some(c), Some(p)) => parts.push(format!("switch {c} port {p}")),
            (Some(c), None) => parts.push(format!("switch {c}")),
            _ => {}
        }
        parts.join(", ")
    }
}

/// A kind of network element of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ElementKind {
    Subnet,
    Switch,
    AccessPoint,
}

impl ElementKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ElementKind::Subnet => "subnet",
            ElementKind::Switch => "switch",
            ElementKind::AccessPoint => "access-point",
        }
    }
}

/// The subnet a device's address is reported under: its /24 (IPv4) or /64 (IPv6), the usual
/// size of an access subnet (an admin adds the real one to the wiremap).
pub fn subnet_of(ip: std::net::IpAddr) -> String {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    ipnet::IpNet::new(ip, prefix).map(|n| n.trunc().to_string()).unwrap_or_else(|_| ip.to_string())
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnlocatedElement {
    pub kind: ElementKind,
    pub element: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub calls: u64,
    pub held: u64,
    pub last_device: String,
    pub last_outcome: String,
}

/// How many calls and HELD requests were located, and how many of them by the wiremap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LocatedShare {
    pub calls: u64,
    pub calls_by_wiremap: u64,
    /// Calls that fell back to a site default or to nothing.
    pub calls_unlocated: u64,
    pub held: u64,
    pub held_by_wiremap: u64,
    pub held_unlocated: u64,
}

impl LocatedShare {
    /// `12 of 20 calls (60%)`.
    pub fn describe(&self) -> String {
        let pct =
            |n: u64, of: u64| if of == 0 { "-".to_string() } else { format!("{:.0}%", n as f64 * 100.0 / of as f64) };
        format!(
            "calls {} of {} ({}), HELD requests {} of {} ({})",
            self.calls_by_wiremap,
            self.calls,
            pct(self.calls_by_wiremap, self.calls),
            self.held_by_wiremap,
            self.held,
            pct(self.held_by_wiremap, self.held)
        )
    }
}

/// The report: the share located by the wiremap, and the elements that were not, most recent first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnlocatedReport {
    pub since: Option<DateTime<Utc>>,
    pub share: LocatedShare,
    pub elements: Vec<UnlocatedElement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_reported_under_its_access_point_switch_and_subnet() {
        let s = Sighting {
            at: Utc::now(),
            asked: Asked::Held,
            device: DeviceAttachment {
                ip: Some("10.9.9.77".parse().unwrap()),
                mac: Some([0x0a, 0x23, 0xcd, 0x16, 0xaa, 0x2e]),
                bssid: Some([0, 0x11, 0x22, 0x33, 0x44, 0x55]),
                chassis_id: Some("0B-23-CD-16-AA-BB".into()),
                port_id: Some("Gi1/0/7".into()),
                port_subtype: None,
            },
            source: LocationSource::None,
        };
        assert!(s.unlocated());
        assert_eq!(
            s.elements(),
            [
                (ElementKind::AccessPoint, "00-11-22-33-44-55".to_string()),
                (ElementKind::Switch, "0B-23-CD-16-AA-BB".to_string()),
                (ElementKind::Subnet, "10.9.9.0/24".to_string()),
            ]
        );
        assert_eq!(
            s.device_text(),
            "ip 10.9.9.77, mac 0A-23-CD-16-AA-2E, bssid 00-11-22-33-44-55, switch 0B-23-CD-16-AA-BB port Gi1/0/7"
        );
        assert_eq!(subnet_of("2001:db8:1:2:3::9".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(subnet_of("::ffff:192.0.2.9".parse().unwrap()), "192.0.2.0/24");
        assert!(!Sighting { source: LocationSource::Wiremap, ..s }.unlocated());
    }
}
