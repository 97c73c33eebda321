//! The Skype for Business Server location-database CSV files: read and write the wiremap formats
//! of "Configure the location database in Skype for Business Server" (subnets, wireless access
//! points, switches, ports), and the sosdesk `macs` extension.
//!
//! # Columns
//!
//! From the table "Network Element / Required Columns" of that page (the same order in every
//! SfB version, and in AudioCodes' "Adding ELINs to the Location Information Server"):
//!
//! | kind | columns |
//! | --- | --- |
//! | `subnets` | Subnet, Description, *address* |
//! | `waps` | BSSID, Description, *address* |
//! | `switches` | ChassisID, Description, *address* |
//! | `ports` | ChassisID, PortIDSubType, PortID, Description, *address* |
//! | `macs` (sosdesk) | MAC, Description, *address* |
//!
//! *address* = Location, CompanyName, HouseNumber, HouseNumberSuffix, PreDirectional, StreetName,
//! StreetSuffix, PostDirectional, City, State, PostalCode, Country. They become the ERL:
//!
//! | SfB column | ERL / RFC 5139 element |
//! | --- | --- |
//! | Location | `Erl::label` and LOC |
//! | CompanyName | NAM (verbatim), split into `Erl::company` and `Erl::elins` (below) |
//! | HouseNumber, HouseNumberSuffix | HNO, HNS |
//! | PreDirectional, StreetName, StreetSuffix, PostDirectional | PRD, RD, STS, POD |
//! | City, State, PostalCode, Country | A3, A1, PC, country |
//!
//! # A header row is optional
//!
//! SfB's own bulk import is `Import-Csv subnets.csv | Set-CsLisSubnet`: `Import-Csv` takes the
//! first line as the property names and the cmdlet binds them *by name* ("Accept pipeline input:
//! True (ByPropertyName)"). So real SfB files have a header, and its columns may come in any
//! order. sosdesk takes the first record as a header when its first cell is a column name (any
//! case; a data record starts with a subnet, MAC or chassis ID, never a name); with a header, columns are matched by name (case-insensitive, as PowerShell binds), may be in
//! any order, and may leave out optional columns; an unknown or repeated name is an error (a
//! misspelt "HouseNumbr" would otherwise drop the house number silently). Without a header the
//! columns are positional, in the documented order, all present. A first line `#TYPE …` (what
//! Windows PowerShell's `Export-Csv` writes without `-NoTypeInformation`) is skipped, as
//! `Import-Csv` skips it.
//!
//! # ELINs in CompanyName
//!
//! "If you use an Emergency Location Identification Number (ELIN) gateway, include the ELIN in the
//! CompanyName field for each location. You can include multiple ELINs for each location, each
//! separated by a semicolon" (Configure the location database, *Populate the location database*;
//! its example: `-CompanyName 425-555-0100; 425-555-0200; 425-555-0300`). SfB sent CompanyName as
//! the PIDF-LO NAM element and the ELIN gateway picked the ELINs out of it (AudioCodes: "it
//! extracts the ELINs from the NAM field … `<ca:NAM>1111-222-333; 1234567890</ca:NAM>`"; "The
//! digits of each ELIN can be separated by hyphens (xxx-xxx-xxx) or they can be adjacent").
//!
//! So CompanyName is split at `;`; each part is trimmed; empty parts are ignored. A part with a
//! letter in it is (part of) the company name; a part without is an ELIN and must be digits,
//! optionally separated by single hyphens, with an optional leading `+`, at most 15 digits (E.164);
//! anything else (`425.555.0100`) is an error rather than a guess. ELINs are stored as digits
//! (`4255550100`, hyphens removed): sosdesk presents the ELIN as the calling number itself, and a
//! calling number has no hyphens. The company name is the name parts joined by `; `. NAM keeps the
//! CompanyName text as written, as SfB sent it (so an ELIN gateway that reads NAM still works),
//! and the export writes it back unchanged.
//!
//! # Subnets: SfB subnet IDs have no prefix length
//!
//! Set-CsLisSubnet's `-Subnet` is "The IP address of the subnet … an IPv4 address (digits
//! separated by periods, such as 192.0.2.0)", and the CSV has no mask column. SfB's LIS stored
//! the *network ID* only; the client computed its own network ID from its IP address and its
//! subnet mask and sent that, and the LIS looked it up by exact match (the Teams LIS docs say it
//! outright: "LIS subnets must be defined by the Network ID matching the subnet IP range assigned
//! to clients. For example, the network ID for a client IP/mask of 10.10.10.150/25 is
//! 10.10.10.128", Set-CsOnlineLisSubnet). The mask came from the client.
//!
//! sosdesk does not get a mask: it locates by the caller's IP address alone (SIP source, HELD
//! device identity), with a longest-prefix match. A bare subnet ID `S` is therefore stored as
//! the *widest network whose ID is S*: the prefix length is the position of S's lowest set bit
//! (`10.10.10.128` → `/25`, `157.56.66.0` → `/23`, `10.1.3.0` → `/24`, `10.0.0.0` → `/8`). For
//! every caller inside a mapped subnet this gives exactly SfB's answer, whatever that subnet's
//! real mask: the caller's network ID `S` lies within `S/p`, and no other mapped ID can give a
//! longer match without the subnets overlapping (which SfB's exact match could not serve either).
//! The difference is for callers in an *unmapped* subnet inside `S/p`: SfB found no subnet for
//! them, sosdesk finds `S`. Hence a warning for bare IDs whose inferred prefix is shorter than
//! /16, and the remedy: give the prefix length (CIDR, a sosdesk extension: `10.0.0.0/24`), which
//! is then used as written. CIDR with host bits set (`10.1.2.5/24`) is an error, not silently
//! truncated. IPv6 subnets (a sosdesk extension; SfB took IPv4 only) must have a prefix length:
//! an IPv6 address says nothing about its network's size. `0.0.0.0` alone is refused (it would
//! be every address). The export writes a bare ID back as a bare ID.
//!
//! # Other rules
//!
//! - Values are trimmed of surrounding white space. Control characters (tab, line breaks inside
//!   quotes, …) are errors: these texts go into PIDF-LO XML and onto the security desk's screen.
//! - Required: the key columns (Subnet, BSSID, ChassisID, PortID, MAC) and Country. SfB allowed an
//!   element without an address, but a wiremap entry without one would give an emergency call no
//!   location, which is worse than no entry (the other wiremap kinds or the client can still say).
//! - Country: an ISO 3166-1 alpha-2 code (RFC 5139 §3.1), upper-cased when read.
//! - BSSID, MAC: six octets in any common spelling (`0A-23-CD-16-AA-2E`, `0a:23:…`, `0a23.cd16.…`),
//!   stored and exported as `0A-23-CD-16-AA-2E`; all-zero and broadcast addresses are refused
//!   (some clients report `00:00:00:00:00:00` when they do not know).
//! - ChassisID: a MAC address (normalised as above) or an IP address (Set-CsLisSwitch: "in the
//!   form nn-nn-nn-nn-nn-nn … or in the form of an IP address").
//! - PortIDSubType: `LocallyAssigned` (7, the default when empty), `InterfaceAlias` (1),
//!   `InterfaceName` (5), by name (any case) or number, as Set-CsLisPort takes it. PortID is text,
//!   kept as written.
//! - The same element twice in one file is an error when the two rows differ, and ignored (with a
//!   warning) when they are identical.
//! - Every problem in the file is reported — file, line, column, column name, reason — up to
//!   [`MAX_ISSUES`] (the rest are counted), and then nothing of the file is imported.
//!
//! # Where things are
//!
//! - `columns`: the column tables of each kind and the rules for each column's values;
//! - `read`: a file's records to wiremap rows (header, duplicates, every problem located);
//! - `write`: wiremap rows to a file;
//! - `rfc4180`: decoding the bytes, and the RFC 4180 record reader and writer.

mod columns;
mod read;
mod rfc4180;
mod write;

use std::fmt;

use super::wiremap_rows::{WiremapBatch, WiremapKind};

pub use columns::{check_country, column_names, parse_subnet, split_company};
pub use read::parse;

impl CsvIssue {
    /// A problem of a FloorPlan cell found after parsing (its image file).
    pub fn floor_plan(file: &str, plan: &CsvFloorPlan, reason: String) -> CsvIssue {
        CsvIssue { file: file.into(), line: plan.line, column: plan.column, column_name: "FloorPlan".into(), reason }
    }
}
pub use write::write_csv;

/// Most errors (and, separately, warnings) kept per file; the rest are only counted.
pub const MAX_ISSUES: usize = 100;

/// One problem in a file: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvIssue {
    pub file: String,
    /// 1-based line of the record (its first line, when a quoted field spans several).
    pub line: usize,
    /// 1-based column (field) number.
    pub column: usize,
    /// The column's name in the file's layout; empty when there is none (an extra field).
    pub column_name: String,
    pub reason: String,
}

impl fmt::Display for CsvIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        if !self.column_name.is_empty() {
            write!(f, " ({})", self.column_name)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Problems of one file: the first [`MAX_ISSUES`], and how many there were in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issues {
    pub shown: Vec<CsvIssue>,
    pub total: usize,
}

impl Issues {
    pub fn push(&mut self, issue: CsvIssue) {
        self.total += 1;
        if self.shown.len() < MAX_ISSUES {
            self.shown.push(issue);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.shown {
            writeln!(f, "{i}")?;
        }
        if self.total > self.shown.len() {
            writeln!(
                f,
                "… and {} more (only the first {} are shown)",
                self.total - self.shown.len(),
                self.shown.len()
            )?;
        }
        Ok(())
    }
}

/// Why a file was refused: every problem found (nothing of the file is to be imported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {} error(s); nothing imported\n{issues}", issues.total)]
pub struct CsvErrors {
    pub file: String,
    pub issues: Issues,
}

/// A file read and checked: the rows to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedWiremap {
    pub kind: WiremapKind,
    pub batch: WiremapBatch,
    /// Whether the file started with a header row.
    pub header: bool,
    /// Data records read (identical duplicates included).
    pub records: usize,
    /// Subnet rows given as bare SfB subnet IDs (prefix inferred).
    pub bare_subnet_ids: usize,
    pub warnings: Issues,
    /// The FloorPlan columns (a sosdesk extension): one pin per ERL that has one.
    pub floor_plans: Vec<CsvFloorPlan>,
    /// Their images, by path as written, once `location::admin::read_wiremap_file` has read and
    /// checked them (parsing reads no other file).
    pub floor_plan_images: std::collections::BTreeMap<String, crate::location::floorplan::FloorPlanImage>,
}

/// One ERL's floor plan as the FloorPlan, FloorPlanX and FloorPlanY columns give it.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvFloorPlan {
    /// Index into the batch's ERLs.
    pub erl: usize,
    /// The image file, relative to the CSV file's folder (or absolute).
    pub path: String,
    pub x: f64,
    pub y: f64,
    /// The first line that gave it, and the FloorPlan column's number.
    pub line: usize,
    pub column: usize,
}

/// x and y are checked finite fractions, so equality is an equivalence.
impl Eq for CsvFloorPlan {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_columns_floor_room_round_trip() {
        let text = "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,\
StreetSuffix,PostDirectional,City,State,PostalCode,Country,Floor,Room,Seat\r\n\
10.1.0.0/24,Desk,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3,301,12B\r\n";
        let parsed = parse(WiremapKind::Subnets, "x.csv", text.as_bytes()).unwrap();
        let c = &parsed.batch.erls[0].civic;
        assert_eq!(
            (c.flr.as_deref(), c.room.as_deref(), c.seat.as_deref(), c.bld.as_deref()),
            (Some("3"), Some("301"), Some("12B"), None)
        );
        let mut out = Vec::new();
        write_csv(WiremapKind::Subnets, &parsed.batch, &mut out).unwrap();
        // Only the extension columns in use are written, after the SfB ones: the file re-imports
        // to the same ERL.
        assert_eq!(String::from_utf8(out.clone()).unwrap(), text);
        let again = parse(WiremapKind::Subnets, "x.csv", &out).unwrap();
        assert_eq!(again.batch.erls, parsed.batch.erls);
        // Without a header the layout is SfB's own 14 columns: an extra field is an error.
        let positional = "10.1.0.0/24,Desk,East wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US,3\r\n";
        assert!(parse(WiremapKind::Subnets, "x.csv", positional.as_bytes()).is_err());
    }
}
