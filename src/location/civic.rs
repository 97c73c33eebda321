//! The civic address (RFC 5139 §3.1, RFC 4776 §3.4 element names) and the one table of its
//! fields.
//!
//! The 29 elements sosdesk stores are declared once, in [`civic_fields!`] below, which generates
//! both the [`CivicAddress`] struct and [`CIVIC_FIELDS`] — the element name, field name and
//! accessors of every field. Everything that walks all the fields (the PIDF-LO writer and reader,
//! the store's `erls` columns and content key) goes through that table, so a field cannot be
//! added to the struct and forgotten in one of them.
//!
//! The table is in the struct's order, which is also the order of the store's content key
//! (`store::content_key`); it is not the RFC 5139 §4 schema order, which a PIDF-LO must follow
//! (the `pidf` module keeps that sequence, with the two schema elements sosdesk does not store).

use serde::{Deserialize, Serialize};

/// One field of [`CivicAddress`].
#[derive(Clone, Copy)]
pub struct CivicField {
    /// The RFC 5139 element name, as in a PIDF-LO: `country`, `A1` … `A6`, `PRD`, …, `ADDCODE`.
    pub element: &'static str,
    /// The field name: the element name in lower case, as in the config, the JSON the desk
    /// receives and the store's `erls` columns.
    pub name: &'static str,
    pub get: fn(&CivicAddress) -> &Option<String>,
    pub get_mut: fn(&mut CivicAddress) -> &mut Option<String>,
}

impl std::fmt::Debug for CivicField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CivicField").field("element", &self.element).field("name", &self.name).finish()
    }
}

/// The field of an RFC 5139 element name (exact spelling), or `None` for PRM, POM and unknowns.
pub fn civic_field(element: &str) -> Option<&'static CivicField> {
    CIVIC_FIELDS.iter().find(|f| f.element == element)
}

/// Declares [`CivicAddress`] and [`CIVIC_FIELDS`] from one list: `field = "ELEMENT"`, each with
/// its documentation.
macro_rules! civic_fields {
    ($( $(#[doc = $doc:literal])* $field:ident = $element:literal, )*) => {
        /// A civic address with the RFC 5139 §3.1 elements (all optional, as in the schema).
        ///
        /// Field names are the RFC 5139 element names in lower case, so the config and the CSV import
        /// read the way a PIDF-LO does.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
        #[serde(deny_unknown_fields)]
        #[ts(optional_fields)]
        pub struct CivicAddress {
            $(
                $(#[doc = $doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<String>,
            )*
        }

        /// Every field of [`CivicAddress`], in its declaration order (see the module documentation).
        pub const CIVIC_FIELDS: &[CivicField] = &[
            $( CivicField { element: $element, name: stringify!($field), get: |c| &c.$field, get_mut: |c| &mut c.$field }, )*
        ];
    };
}

civic_fields! {
    /// ISO 3166 alpha-2 country code (`US`, `GB`).
    country = "country",
    /// National subdivision (state, region, province).
    a1 = "A1",
    /// County, parish, gun (JP), district (IN).
    a2 = "A2",
    /// City, township, shi (JP).
    a3 = "A3",
    /// City division, borough, city district, ward, chou (JP).
    a4 = "A4",
    /// Neighborhood, block.
    a5 = "A5",
    /// Street (deprecated by RFC 5139 in favour of RD, still sent by many systems).
    a6 = "A6",
    /// Leading street direction (N, W).
    prd = "PRD",
    /// Trailing street suffix (SW).
    pod = "POD",
    /// Street suffix (Ave, Platz).
    sts = "STS",
    /// Primary road or street.
    rd = "RD",
    /// Road section.
    rdsec = "RDSEC",
    /// Road branch.
    rdbr = "RDBR",
    /// Road sub-branch.
    rdsubbr = "RDSUBBR",
    /// House number, numeric part only.
    hno = "HNO",
    /// House number suffix (A, 1/2).
    hns = "HNS",
    /// Landmark or vanity address.
    lmk = "LMK",
    /// Additional location information (e.g. "Room 543", "North wing").
    loc = "LOC",
    /// Floor.
    flr = "FLR",
    /// Name (residence, business or office occupant).
    nam = "NAM",
    /// Postal / ZIP code.
    pc = "PC",
    /// Building (structure).
    bld = "BLD",
    /// Unit (apartment, suite).
    unit = "UNIT",
    /// Room.
    room = "ROOM",
    /// Seat (desk, cubicle, workstation).
    seat = "SEAT",
    /// Place type (office, school, …; RFC 4589).
    plc = "PLC",
    /// Postal community name.
    pcn = "PCN",
    /// Post office box.
    pobox = "POBOX",
    /// Additional code.
    addcode = "ADDCODE",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_field_named_after_its_element() {
        // The store's `erls` columns and the JSON names are the field names: the element names in
        // lower case (RFC 5139 §3.1), 29 of them, each once.
        assert_eq!(CIVIC_FIELDS.len(), 29);
        let mut c = CivicAddress::default();
        for (i, f) in CIVIC_FIELDS.iter().enumerate() {
            assert_eq!(f.name, f.element.to_ascii_lowercase(), "{f:?}");
            assert_eq!(civic_field(f.element).map(|g| g.name), Some(f.name));
            *(f.get_mut)(&mut c) = Some(i.to_string());
        }
        // Every accessor reaches its own field: all 29 are set, and each reads back its value.
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 29);
        for (i, f) in CIVIC_FIELDS.iter().enumerate() {
            assert_eq!((f.get)(&c).as_deref(), Some(i.to_string().as_str()));
            assert_eq!(json[f.name], i.to_string());
        }
        assert!(civic_field("PRM").is_none() && civic_field("hno").is_none());
    }
}
