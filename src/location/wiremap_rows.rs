//! The wiremap's rows as they travel between a file and the store: which kind of network element
//! ([`WiremapKind`]), one element and its location ([`WiremapRow`]), and a batch of rows with the
//! ERLs they point at ([`WiremapBatch`]).
//!
//! These types sit below both the Skype for Business CSV reader/writer (`sfb_csv`) and the SQLite
//! store (`store`), so the two do not import each other's types: `sfb_csv` builds a batch from a
//! file, `store` imports and exports batches (and uses `sfb_csv` to write one as CSV).

use std::fmt;

use serde::Serialize;

use super::{Erl, WiremapKey};

/// The kinds of network element a wiremap maps to an ERL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WiremapKind {
    /// IP subnets (`Set-CsLisSubnet`).
    Subnets,
    /// Wi-Fi access points by BSSID (`Set-CsLisWirelessAccessPoint`).
    Waps,
    /// Switches by LLDP chassis ID (`Set-CsLisSwitch`).
    Switches,
    /// Switch ports: chassis ID + port ID subtype + port ID (`Set-CsLisPort`).
    Ports,
    /// Device MAC addresses (a sosdesk extension).
    Macs,
}

impl WiremapKind {
    pub const ALL: [WiremapKind; 5] =
        [WiremapKind::Subnets, WiremapKind::Waps, WiremapKind::Switches, WiremapKind::Ports, WiremapKind::Macs];

    /// The name used on the command line (`--kind subnets`).
    pub fn as_str(&self) -> &'static str {
        match self {
            WiremapKind::Subnets => "subnets",
            WiremapKind::Waps => "waps",
            WiremapKind::Switches => "switches",
            WiremapKind::Ports => "ports",
            WiremapKind::Macs => "macs",
        }
    }

    pub fn parse(s: &str) -> Option<WiremapKind> {
        WiremapKind::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }

    pub fn of_key(key: &WiremapKey) -> WiremapKind {
        match key {
            WiremapKey::Subnet(_) => WiremapKind::Subnets,
            WiremapKey::Bssid(_) => WiremapKind::Waps,
            WiremapKey::Switch { .. } => WiremapKind::Switches,
            WiremapKey::Port { .. } => WiremapKind::Ports,
            WiremapKey::Mac(_) => WiremapKind::Macs,
        }
    }
}

impl fmt::Display for WiremapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wiremap rows with the ERLs they point at: what an import writes and an export reads. The CSV
/// reader builds one from a file (`sfb_csv::parse`), deduplicating ERLs as it goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WiremapBatch {
    pub erls: Vec<Erl>,
    pub rows: Vec<WiremapRow>,
}

/// One network element and its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiremapRow {
    pub key: WiremapKey,
    /// Index into [`WiremapBatch::erls`].
    pub erl: usize,
    /// The SfB Description column, verbatim ("" when empty).
    pub description: String,
    /// Subnets only: the file gave a bare Skype for Business subnet ID (`10.1.2.0`), whose prefix
    /// length was inferred (see `sfb_csv`); the export writes it back the same way.
    pub bare_subnet_id: bool,
}
