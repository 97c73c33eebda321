//! Location: Emergency Response Locations (ERLs), how a call's location was found, and PIDF-LO.
//!
//! The routing core asks one question — "where is this caller?" — through [`LocationSnapshot`].
//! Today the answer comes from the caller's own PIDF-LO or a per-site ERL in the config; the full
//! Location Information Service (wiremap, HELD, CSV import) fills the same types.

pub mod admin;
mod civic;
pub mod discovery;
pub mod floorplan;
pub mod held;
pub mod pidf;
pub mod resolve;
pub mod sfb_csv;
pub mod sitemap;
pub mod store;
pub mod unlocated;
pub mod user_entered;
pub mod validate;
pub mod wiremap;
pub mod wiremap_rows;

use serde::{Deserialize, Serialize};

pub use civic::{civic_field, CivicAddress, CivicField, CIVIC_FIELDS};

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
    /// Where the ERL is on its floor plan (`sosdesk lis floorplan set`, the CSV's FloorPlan
    /// columns): the desk shows the plan with a pin. Not part of the ERL's content key: moving a
    /// pin does not make another location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_plan: Option<floorplan::FloorPlanPin>,
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
    /// Where `geo` is on the smallest site map that has it (`sosdesk lis sitemap set`): the desk
    /// draws the map with the point and its uncertainty. `None` without `geo` or without a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_map: Option<sitemap::SiteMapPin>,
    /// `<method>` from the PIDF-LO (RFC 4119 §2.2.3: GPS, DHCP, Manual, Wiremap …), when given.
    pub method: Option<String>,
    /// What was not understood or did not conform, in a caller's PIDF-LO: shown, never fatal.
    pub warnings: Vec<String>,
}

impl LocationSnapshot {
    pub fn none() -> Self {
        LocationSnapshot {
            source: LocationSource::None,
            erl: None,
            geo: None,
            site_map: None,
            method: None,
            warnings: Vec::new(),
        }
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

    /// Parse a subtype as `Set-CsLisPort -PortIDSubType` takes it ("can be entered as a numeric
    /// value or a string"): the IEEE 802.1AB subtype number (7, 1, 5) or the Skype for Business
    /// name as [`PortIdSubtype::parse`] reads it. The one reading of the CSV import and of HELD's
    /// `<port subtype>`; each words its own error.
    pub fn parse_name_or_number(s: &str) -> Option<PortIdSubtype> {
        match s.trim() {
            "1" => Some(PortIdSubtype::InterfaceAlias),
            "5" => Some(PortIdSubtype::InterfaceName),
            "7" => Some(PortIdSubtype::LocallyAssigned),
            name => PortIdSubtype::parse(name),
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
