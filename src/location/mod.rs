//! Location: Emergency Response Locations (ERLs), how a call's location was found, and PIDF-LO.
//!
//! The routing core asks one question — "where is this caller?" — through [`LocationSnapshot`].
//! Today the answer comes from the caller's own PIDF-LO or a per-site ERL in the config; the full
//! Location Information Service (wiremap, HELD, CSV import) fills the same types.

pub mod held;
pub mod pidf;
pub mod sfb_csv;
pub mod store;
pub mod validate;
pub mod wiremap;
pub mod wiremap_rows;

use serde::{Deserialize, Serialize};

/// A civic address with the RFC 5139 §3.1 elements (all optional, as in the schema).
///
/// Field names are the RFC 5139 element names in lower case, so the config and the CSV import
/// read the way a PIDF-LO does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(deny_unknown_fields)]
#[ts(optional_fields)]
pub struct CivicAddress {
    /// ISO 3166 alpha-2 country code (`US`, `GB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// National subdivision (state, region, province).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a1: Option<String>,
    /// County, parish, gun (JP), district (IN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2: Option<String>,
    /// City, township, shi (JP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a3: Option<String>,
    /// City division, borough, city district, ward, chou (JP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a4: Option<String>,
    /// Neighborhood, block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a5: Option<String>,
    /// Street (deprecated by RFC 5139 in favour of RD, still sent by many systems).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a6: Option<String>,
    /// Leading street direction (N, W).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prd: Option<String>,
    /// Trailing street suffix (SW).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Street suffix (Ave, Platz).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts: Option<String>,
    /// Primary road or street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rd: Option<String>,
    /// Road section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdsec: Option<String>,
    /// Road branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdbr: Option<String>,
    /// Road sub-branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdsubbr: Option<String>,
    /// House number, numeric part only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hno: Option<String>,
    /// House number suffix (A, 1/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hns: Option<String>,
    /// Landmark or vanity address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lmk: Option<String>,
    /// Additional location information (e.g. "Room 543", "North wing").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loc: Option<String>,
    /// Floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flr: Option<String>,
    /// Name (residence, business or office occupant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nam: Option<String>,
    /// Postal / ZIP code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc: Option<String>,
    /// Building (structure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bld: Option<String>,
    /// Unit (apartment, suite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Seat (desk, cubicle, workstation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    /// Place type (office, school, …; RFC 4589).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plc: Option<String>,
    /// Postal community name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcn: Option<String>,
    /// Post office box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pobox: Option<String>,
    /// Additional code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addcode: Option<String>,
}

impl CivicAddress {
    /// One-line human form: "1 Main St, Floor 2, Room 210, Redmond, WA 98052, US".
    pub fn one_line(&self) -> String {
        let mut street = Vec::new();
        for part in [&self.hno, &self.hns, &self.prd, &self.rd, &self.a6, &self.sts, &self.pod] {
            if let Some(p) = part.as_deref().filter(|p| !p.trim().is_empty()) {
                street.push(p.trim());
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if let Some(n) = self.nam.as_deref().filter(|s| !s.is_empty()) {
            parts.push(n.to_string());
        }
        if !street.is_empty() {
            parts.push(street.join(" "));
        }
        if let Some(b) = self.bld.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("Building {b}"));
        }
        if let Some(f) = self.flr.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("Floor {f}"));
        }
        if let Some(u) = self.unit.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("Unit {u}"));
        }
        if let Some(r) = self.room.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("Room {r}"));
        }
        if let Some(l) = self.loc.as_deref().filter(|s| !s.is_empty()) {
            parts.push(l.to_string());
        }
        for part in [&self.a3, &self.a1, &self.pc, &self.country] {
            if let Some(p) = part.as_deref().filter(|s| !s.is_empty()) {
                parts.push(p.to_string());
            }
        }
        parts.join(", ")
    }

    pub fn is_empty(&self) -> bool {
        *self == CivicAddress::default()
    }
}

/// An Emergency Response Location: where an emergency service is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(deny_unknown_fields)]
pub struct Erl {
    /// Location label shown to people ("HQ, 2nd floor, east").
    #[serde(default)]
    pub label: String,
    /// Company name as registered with the service provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    #[serde(flatten)]
    pub civic: CivicAddress,
    /// Emergency Location Identification Numbers for an ELIN gateway (several allow concurrent
    /// callbacks from one location).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elins: Vec<String>,
    /// Whether the address was validated against the MSAG (the LIS issue fills this in).
    #[serde(default)]
    pub validated: bool,
}

/// How the location attached to a call was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(rename_all = "kebab-case")]
pub enum LocationSource {
    /// The caller's own PIDF-LO, sent by value in the INVITE.
    ClientPidfLo,
    /// The wiremap (subnet, switch, port, access point) of the Location Information Service.
    Wiremap,
    /// The location the device last obtained over HELD.
    HeldCached,
    /// The ERL configured for the caller's site (or the policy's default).
    SiteDefault,
    /// Entered by hand.
    Manual,
    /// No location: the call goes to the ECRC route.
    None,
}

impl LocationSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            LocationSource::ClientPidfLo => "client-pidf-lo",
            LocationSource::Wiremap => "wiremap",
            LocationSource::HeldCached => "held-cached",
            LocationSource::SiteDefault => "site-default",
            LocationSource::Manual => "manual",
            LocationSource::None => "none",
        }
    }
}

/// The location of one call, as carried in every `CallEvent` and written to the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct LocationSnapshot {
    pub source: LocationSource,
    /// The ERL (civic address, floor, room, ELINs); `None` when the call has no civic location.
    pub erl: Option<Erl>,
    /// Geodetic position when the caller's PIDF-LO carried one (WGS 84).
    pub geo: Option<GeoPoint>,
    /// `<method>` from the PIDF-LO (RFC 4119 §2.2.3: GPS, DHCP, Manual, Wiremap …), when given.
    pub method: Option<String>,
    /// What was not understood or did not conform, in a caller's PIDF-LO: shown, never fatal.
    pub warnings: Vec<String>,
}

impl LocationSnapshot {
    pub fn none() -> Self {
        LocationSnapshot { source: LocationSource::None, erl: None, geo: None, method: None, warnings: Vec::new() }
    }

    /// Whether there is anything a call taker could send someone to.
    pub fn is_known(&self) -> bool {
        self.erl.as_ref().is_some_and(|e| !e.civic.is_empty()) || self.geo.is_some()
    }

    /// One-line human description for logs, history and the notification text.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(erl) = &self.erl {
            out.push_str(&erl.civic.one_line());
        }
        if let Some(g) = &self.geo {
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(&format!("{:.6}, {:.6}", g.latitude, g.longitude));
            if let Some(r) = g.radius_m {
                out.push_str(&format!(" (±{r:.0} m)"));
            }
        }
        if out.is_empty() {
            out.push_str("unknown");
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
    pub altitude_m: Option<f64>,
    /// Uncertainty radius in metres (circle shapes, RFC 5491 §5.2.3).
    pub radius_m: Option<f64>,
}

/// LLDP port ID subtypes (IEEE 802.1AB §8.5.3.2) as Skype for Business names them in
/// `Set-CsLisPort -PortIDSubType` and its port CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PortIdSubtype {
    /// Subtype 7 (the Skype for Business default).
    LocallyAssigned,
    /// Subtype 1.
    InterfaceAlias,
    /// Subtype 5.
    InterfaceName,
}

impl PortIdSubtype {
    /// Parse the Skype for Business spelling (case-insensitive); empty means the default.
    pub fn parse(s: &str) -> Option<PortIdSubtype> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "locallyassigned" => Some(PortIdSubtype::LocallyAssigned),
            "interfacealias" => Some(PortIdSubtype::InterfaceAlias),
            "interfacename" => Some(PortIdSubtype::InterfaceName),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PortIdSubtype::LocallyAssigned => "LocallyAssigned",
            PortIdSubtype::InterfaceAlias => "InterfaceAlias",
            PortIdSubtype::InterfaceName => "InterfaceName",
        }
    }
}

/// A MAC address or BSSID (6 octets).
pub type Mac = [u8; 6];

/// Parse `0A-23-CD-16-AA-2E`, `0a:23:cd:16:aa:2e`, `0a23.cd16.aa2e` or `0A23CD16AA2E`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let hex: String = s.chars().filter(|c| !matches!(c, '-' | ':' | '.')).collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut m = [0u8; 6];
    for (i, b) in m.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(m)
}

/// `0A-23-CD-16-AA-2E`, the Skype for Business spelling.
pub fn format_mac(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join("-")
}

/// What is known of where a device is plugged in: the inputs of a wiremap lookup (from a HELD
/// request's device identity, RFC 6155, or from an emergency INVITE's addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAttachment {
    pub ip: Option<std::net::IpAddr>,
    pub mac: Option<Mac>,
    /// BSSID of the Wi-Fi access point the device is associated with.
    pub bssid: Option<Mac>,
    /// LLDP chassis ID of the switch (as the LIS stores it: normalised text, e.g. a MAC in
    /// `0B-23-CD-16-AA-BB` form).
    pub chassis_id: Option<String>,
    pub port_id: Option<String>,
    pub port_subtype: Option<PortIdSubtype>,
}

/// One wiremap row: a network element and the ERL it maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WiremapKey {
    Subnet(ipnet::IpNet),
    Bssid(Mac),
    Switch { chassis_id: String },
    Port { chassis_id: String, port_subtype: PortIdSubtype, port_id: String },
    Mac(Mac),
}

/// Which kind of wiremap entry matched, in Skype for Business precedence order (a wireless
/// access point beats a switch port, which beats a switch, which beats a subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    WirelessAccessPoint,
    Mac,
    SwitchPort,
    Switch,
    Subnet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiremapEntry {
    pub key: WiremapKey,
    /// Index into the ERL list the wiremap is built with.
    pub erl: usize,
}

/// Anything that can say where a device is: the wiremap index (and, through it, HELD).
pub trait Locator: Send + Sync {
    fn locate(&self, device: &DeviceAttachment) -> Option<(std::sync::Arc<Erl>, MatchKind)>;
}

/// What a device was last told about its own location (the HELD cache): the "HELD-cached"
/// source of a call's location when the wiremap has no answer for the call's addresses.
pub trait LastKnownLocation: Send + Sync {
    fn last_known(&self, device: &DeviceAttachment) -> Option<std::sync::Arc<Erl>>;
}
