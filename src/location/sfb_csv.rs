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
//! # CSV (RFC 4180)
//!
//! Fields separated by `,`; records end with CRLF, LF or CR; a field in double quotes may contain
//! `,`, quotes (doubled) and line breaks; blank lines are skipped; a UTF-8 byte order mark is
//! dropped, and a UTF-16 file (with its BOM, as PowerShell's `Out-File` writes) is decoded. Other
//! encodings are refused with the position of the first bad byte. Written files: UTF-8 without a
//! BOM, a header row, CRLF, fields quoted only when needed. No spreadsheet formula guard (unlike
//! the audit export): this file is for re-import, and a changed value would not round-trip.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use super::wiremap_rows::{WiremapBatch, WiremapKind, WiremapRow};
use super::{format_mac, parse_mac, Erl, Mac, PortIdSubtype, WiremapKey};

/// Most errors (and, separately, warnings) kept per file; the rest are only counted.
pub const MAX_ISSUES: usize = 100;

/// A bare IPv4 subnet ID whose inferred prefix is shorter than this gets a warning (see the
/// module documentation).
const WIDE_BARE_PREFIX: u8 = 16;

/// The column roles. Their order is the index into a layout's position table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Key,
    PortSubtype,
    PortId,
    Description,
    Location,
    CompanyName,
    HouseNumber,
    HouseNumberSuffix,
    PreDirectional,
    StreetName,
    StreetSuffix,
    PostDirectional,
    City,
    State,
    PostalCode,
    Country,
    Floor,
    Room,
    Building,
    Unit,
    Seat,
}

const NCOLS: usize = 21;

/// The columns every kind ends with, in the documented order.
const ADDRESS: [(&str, Col); 12] = [
    ("Location", Col::Location),
    ("CompanyName", Col::CompanyName),
    ("HouseNumber", Col::HouseNumber),
    ("HouseNumberSuffix", Col::HouseNumberSuffix),
    ("PreDirectional", Col::PreDirectional),
    ("StreetName", Col::StreetName),
    ("StreetSuffix", Col::StreetSuffix),
    ("PostDirectional", Col::PostDirectional),
    ("City", Col::City),
    ("State", Col::State),
    ("PostalCode", Col::PostalCode),
    ("Country", Col::Country),
];

/// sosdesk extension: where inside the building, as RFC 5139 elements of their own (FLR, ROOM,
/// BLD, UNIT, SEAT). Skype for Business had only the free-text Location column (LOC) for that; a
/// PSAP reads a separate floor and room more reliably. Accepted only by name, in a file with a
/// header row, so positional SfB files are unaffected; written on export only when used.
const EXTENSION: [(&str, Col); 5] =
    [("Floor", Col::Floor), ("Room", Col::Room), ("Building", Col::Building), ("Unit", Col::Unit), ("Seat", Col::Seat)];

/// Every address column: the 12 of SfB, then the extension.
const FULL_ADDRESS: [(&str, Col); 17] = [
    ADDRESS[0],
    ADDRESS[1],
    ADDRESS[2],
    ADDRESS[3],
    ADDRESS[4],
    ADDRESS[5],
    ADDRESS[6],
    ADDRESS[7],
    ADDRESS[8],
    ADDRESS[9],
    ADDRESS[10],
    ADDRESS[11],
    EXTENSION[0],
    EXTENSION[1],
    EXTENSION[2],
    EXTENSION[3],
    EXTENSION[4],
];

fn key_columns(kind: WiremapKind) -> &'static [(&'static str, Col)] {
    match kind {
        WiremapKind::Subnets => &[("Subnet", Col::Key)],
        WiremapKind::Waps => &[("BSSID", Col::Key)],
        WiremapKind::Switches => &[("ChassisID", Col::Key)],
        WiremapKind::Ports => &[("ChassisID", Col::Key), ("PortIDSubType", Col::PortSubtype), ("PortID", Col::PortId)],
        WiremapKind::Macs => &[("MAC", Col::Key)],
    }
}

fn layout(kind: WiremapKind) -> Vec<(&'static str, Col)> {
    let mut v = key_columns(kind).to_vec();
    v.push(("Description", Col::Description));
    v.extend(ADDRESS);
    v
}

/// The column names of a kind, in the documented order (the header `write_csv` writes).
pub fn column_names(kind: WiremapKind) -> Vec<&'static str> {
    layout(kind).into_iter().map(|(n, _)| n).collect()
}

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
    fn push(&mut self, issue: CsvIssue) {
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
}

/// Reads one file of `kind`. `file` names it in the messages.
pub fn parse(kind: WiremapKind, file: &str, bytes: &[u8]) -> Result<ParsedWiremap, CsvErrors> {
    let mut p = Parser::new(kind, file);
    let text = match decode(bytes) {
        Ok(t) => t,
        Err((line, column, reason)) => {
            p.errors.push(CsvIssue { file: file.into(), line, column, column_name: String::new(), reason });
            return Err(p.into_errors());
        }
    };
    let mut reader = Reader::new(&text);
    if text.starts_with("#TYPE") {
        reader.skip_line();
    }
    let mut fields: Vec<Cow<str>> = Vec::new();
    let mut first = true;
    while let Some(record) = reader.next(&mut fields) {
        let line = match record {
            Ok(line) => line,
            Err(e) => {
                let name = p.name_at(e.column);
                p.error(e.line, e.column, name, e.reason);
                continue;
            }
        };
        if std::mem::take(&mut first) && p.take_header(line, &fields) {
            if p.stop {
                break;
            }
            continue;
        }
        p.record(line, &fields);
    }
    if p.records == 0 && p.errors.is_empty() {
        // Harmless (an import only sets what it names), and what exporting an empty kind gives;
        // but more likely the wrong file than a wish to import nothing, so say it.
        let i = p.issue(reader.line.max(1), 1, "", "the file has no data rows: nothing to import".into());
        p.warnings.push(i);
    }
    if !p.errors.is_empty() {
        return Err(p.into_errors());
    }
    Ok(ParsedWiremap {
        kind,
        batch: p.batch,
        header: p.header,
        records: p.records,
        bare_subnet_ids: p.bare,
        warnings: p.warnings,
    })
}

/// Writes `batch` (rows of `kind`) as a Skype for Business CSV file with a header row.
pub fn write_csv<W: Write + ?Sized>(kind: WiremapKind, batch: &WiremapBatch, out: &mut W) -> io::Result<()> {
    // Each ERL's columns once, not once per row (a million rows share a few thousand ERLs).
    let addresses: Vec<[Cow<str>; 17]> = batch.erls.iter().map(address_fields).collect();
    // The extension columns that any ERL uses (none: the plain SfB layout, byte for byte).
    let ext: Vec<usize> = (12..17).filter(|i| addresses.iter().any(|a| !a[*i].is_empty())).collect();
    let mut line = String::new();
    push_record(&mut line, column_names(kind).into_iter().chain(ext.iter().map(|i| FULL_ADDRESS[*i].0)));
    out.write_all(line.as_bytes())?;
    let mut key = String::new();
    for row in &batch.rows {
        line.clear();
        key.clear();
        let address = addresses.get(row.erl).ok_or_else(|| io::Error::other("row points past the ERL list"))?;
        let keys: [&str; 3];
        let key_fields: &[&str] = match &row.key {
            WiremapKey::Subnet(net) => {
                use fmt::Write as _;
                if row.bare_subnet_id {
                    let _ = write!(key, "{}", net.addr());
                } else {
                    let _ = write!(key, "{net}");
                }
                keys = [&key, "", ""];
                &keys[..1]
            }
            WiremapKey::Bssid(m) | WiremapKey::Mac(m) => {
                key.push_str(&format_mac(m));
                keys = [&key, "", ""];
                &keys[..1]
            }
            WiremapKey::Switch { chassis_id } => {
                keys = [chassis_id, "", ""];
                &keys[..1]
            }
            WiremapKey::Port { chassis_id, port_subtype, port_id } => {
                keys = [chassis_id, port_subtype.as_str(), port_id];
                &keys[..]
            }
        };
        let fields = key_fields
            .iter()
            .copied()
            .chain([row.description.as_str()])
            .chain(address[..12].iter().map(|f| f.as_ref()))
            .chain(ext.iter().map(|i| address[*i].as_ref()));
        push_record(&mut line, fields);
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// The address columns of an ERL: the 12 of SfB, then the extension's 5.
fn address_fields(erl: &Erl) -> [Cow<'_, str>; 17] {
    let c = &erl.civic;
    fn s(v: &Option<String>) -> Cow<'_, str> {
        v.as_deref().unwrap_or("").into()
    }
    let location: Cow<str> = match &c.loc {
        Some(l) => l.as_str().into(),
        None => erl.label.as_str().into(),
    };
    [
        location,
        company_field(erl),
        s(&c.hno),
        s(&c.hns),
        s(&c.prd),
        s(&c.rd),
        s(&c.sts),
        s(&c.pod),
        s(&c.a3),
        s(&c.a1),
        s(&c.pc),
        s(&c.country),
        s(&c.flr),
        s(&c.room),
        s(&c.bld),
        s(&c.unit),
        s(&c.seat),
    ]
}

/// CompanyName: NAM as it was read when it still says the same company and ELINs; otherwise
/// rebuilt from them (an ERL that did not come from a CSV file).
fn company_field(erl: &Erl) -> Cow<'_, str> {
    if let Some(nam) = &erl.civic.nam {
        if split_company(nam).is_ok_and(|(company, elins)| company == erl.company && elins == erl.elins) {
            return nam.as_str().into();
        }
    }
    let parts: Vec<&str> = erl.company.as_deref().into_iter().chain(erl.elins.iter().map(String::as_str)).collect();
    parts.join("; ").into()
}

/// Appends one CSV record and its CRLF (RFC 4180 §2.1); a field is quoted, with its quotes doubled,
/// only when it contains a separator, a quote or a line break, or has surrounding white space
/// (which the reader would otherwise trim).
fn push_record<'a>(line: &mut String, fields: impl Iterator<Item = &'a str>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        let needs_quotes = f.contains([',', '"', '\r', '\n']) || f.trim() != f;
        if needs_quotes {
            line.push('"');
            line.push_str(&f.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(f);
        }
    }
    line.push_str("\r\n");
}

// ------------------------------------------------------------------------------------------
// Decoding and the RFC 4180 reader
// ------------------------------------------------------------------------------------------

/// The file as text: UTF-8 (a BOM dropped) or UTF-16 with a BOM. Err: (line, column, reason).
fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, (usize, usize, String)> {
    let utf16 = |le: bool| -> Result<Cow<'_, str>, (usize, usize, String)> {
        let body = &bytes[2..];
        if !body.len().is_multiple_of(2) {
            return Err((1, 1, "UTF-16 file with an odd number of bytes (cut short?)".into()));
        }
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|p| if le { u16::from_le_bytes([p[0], p[1]]) } else { u16::from_be_bytes([p[0], p[1]]) })
            .collect();
        let mut out = String::with_capacity(units.len());
        let mut line = 1;
        for c in char::decode_utf16(units.iter().copied()) {
            match c {
                Ok(c) => {
                    if c == '\n' {
                        line += 1;
                    }
                    out.push(c);
                }
                Err(e) => {
                    let column = field_number(out.rsplit('\n').next().unwrap_or("").as_bytes());
                    return Err((
                        line,
                        column,
                        format!("not valid UTF-16 (unpaired surrogate {:04X})", e.unpaired_surrogate()),
                    ));
                }
            }
        }
        Ok(Cow::Owned(out))
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(true),
        [0xFE, 0xFF, ..] => utf16(false),
        _ => {
            let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            std::str::from_utf8(body).map(Cow::Borrowed).map_err(|e| {
                let bad = e.valid_up_to();
                let line = 1 + body[..bad].iter().filter(|b| **b == b'\n').count();
                let start = body[..bad].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                (
                    line,
                    field_number(&body[start..bad]),
                    format!("not UTF-8 text (byte 0x{:02X}); save the file as UTF-8 (Excel: \"CSV UTF-8\")", body[bad]),
                )
            })
        }
    }
}

/// Which field (1-based) a line prefix ends in, counting commas outside quotes.
fn field_number(prefix: &[u8]) -> usize {
    let mut quoted = false;
    let mut n = 1;
    for b in prefix {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => n += 1,
            _ => {}
        }
    }
    n
}

struct SyntaxError {
    line: usize,
    column: usize,
    reason: String,
}

/// RFC 4180 records over the decoded text. Fields borrow from the text unless they held doubled
/// quotes.
struct Reader<'a> {
    s: &'a str,
    pos: usize,
    /// Line number of `pos`.
    line: usize,
}

impl<'a> Reader<'a> {
    fn new(s: &'a str) -> Reader<'a> {
        Reader { s, pos: 0, line: 1 }
    }

    /// Moves past the end of the current line.
    fn skip_line(&mut self) {
        let b = self.s.as_bytes();
        while self.pos < b.len() {
            let c = b[self.pos];
            self.pos += 1;
            if c == b'\n' {
                self.line += 1;
                return;
            }
            if c == b'\r' {
                self.line += 1;
                if b.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                }
                return;
            }
        }
    }

    /// Consumes a line ending at `pos` (CRLF, LF or CR); returns whether there was one.
    fn line_end(&mut self) -> bool {
        let b = self.s.as_bytes();
        match b.get(self.pos) {
            Some(b'\n') => {
                self.pos += 1;
            }
            Some(b'\r') => {
                self.pos += 1;
                if b.get(self.pos) == Some(&b'\n') {
                    self.pos += 1;
                }
            }
            _ => return false,
        }
        self.line += 1;
        true
    }

    /// Reads the next record into `fields`. `Ok(line)` is the line it starts on; `None` at the end.
    /// After a syntax error the reader has moved past the bad record's line.
    fn next(&mut self, fields: &mut Vec<Cow<'a, str>>) -> Option<Result<usize, SyntaxError>> {
        fields.clear();
        let b = self.s.as_bytes();
        // Blank (or white-space only) lines are not records.
        loop {
            let mut p = self.pos;
            while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
                p += 1;
            }
            if p >= b.len() {
                self.pos = p;
                return None;
            }
            if b[p] != b'\r' && b[p] != b'\n' {
                break;
            }
            self.pos = p;
            self.line_end();
        }
        let start_line = self.line;
        loop {
            let column = fields.len() + 1;
            let mut p = self.pos;
            while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
                p += 1;
            }
            if b.get(p) == Some(&b'"') {
                // Quoted field (RFC 4180 §2.5–2.7).
                let open_line = self.line;
                let content = p + 1;
                let mut i = content;
                let mut doubled = false;
                let close = loop {
                    match b[i..].iter().position(|c| *c == b'"') {
                        None => {
                            self.pos = b.len();
                            return Some(Err(SyntaxError {
                                line: open_line,
                                column,
                                reason: "a quoted field is never closed: its opening quote is on this line, \
                                         and no closing quote follows in the rest of the file"
                                    .into(),
                            }));
                        }
                        Some(off) if b.get(i + off + 1) == Some(&b'"') => {
                            doubled = true;
                            i += off + 2;
                        }
                        Some(off) => break i + off,
                    }
                };
                let raw = &self.s[content..close];
                self.line += raw.matches('\n').count();
                fields.push(if doubled { Cow::Owned(raw.replace("\"\"", "\"")) } else { Cow::Borrowed(raw) });
                self.pos = close + 1;
                while self.pos < b.len() && (b[self.pos] == b' ' || b[self.pos] == b'\t') {
                    self.pos += 1;
                }
                match b.get(self.pos) {
                    Some(b',') => self.pos += 1,
                    None => return Some(Ok(start_line)),
                    Some(b'\r' | b'\n') => {
                        self.line_end();
                        return Some(Ok(start_line));
                    }
                    Some(_) => {
                        let line = self.line;
                        self.skip_line();
                        return Some(Err(SyntaxError {
                            line,
                            column,
                            reason: "text after the closing quote of a quoted field (a quote inside a \
                                     quoted field must be doubled: \"\")"
                                .into(),
                        }));
                    }
                }
            } else {
                let start = self.pos;
                let mut p = start;
                while p < b.len() && !matches!(b[p], b',' | b'\r' | b'\n' | b'"') {
                    p += 1;
                }
                if b.get(p) == Some(&b'"') {
                    let line = self.line;
                    self.pos = p;
                    self.skip_line();
                    return Some(Err(SyntaxError {
                        line,
                        column,
                        reason: "a quote inside an unquoted field (RFC 4180: put the whole field in \
                                 quotes and double the quote)"
                            .into(),
                    }));
                }
                fields.push(Cow::Borrowed(&self.s[start..p]));
                self.pos = p;
                match b.get(p) {
                    Some(b',') => self.pos += 1,
                    _ => {
                        self.line_end();
                        return Some(Ok(start_line));
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Rows to wiremap entries
// ------------------------------------------------------------------------------------------

/// The ERL of one address, or the problems of its columns (index into [`ADDRESS`], reason).
type AddressResult = Result<usize, Vec<(usize, String)>>;

struct Parser<'f> {
    kind: WiremapKind,
    file: &'f str,
    layout: Vec<(&'static str, Col)>,
    /// Col → field position in the file's records.
    pos: [Option<usize>; NCOLS],
    /// Col → the name to show (the header's spelling when there is one).
    names: [&'static str; NCOLS],
    width: usize,
    header: bool,
    /// Reading ends early: the file is not of this kind at all.
    stop: bool,
    records: usize,
    bare: usize,
    batch: WiremapBatch,
    /// Line of each row of `batch.rows`.
    lines: Vec<usize>,
    /// Address columns (normalised, joined) → ERL, so a repeated address is built once.
    addresses: HashMap<String, AddressResult>,
    /// Element → its row in `batch.rows`.
    seen: HashMap<WiremapKey, usize>,
    scratch: String,
    errors: Issues,
    warnings: Issues,
}

impl<'f> Parser<'f> {
    fn new(kind: WiremapKind, file: &'f str) -> Parser<'f> {
        let layout = layout(kind);
        let mut pos = [None; NCOLS];
        let mut names = [""; NCOLS];
        for (i, (name, col)) in layout.iter().enumerate() {
            pos[*col as usize] = Some(i);
            names[*col as usize] = name;
        }
        Parser {
            kind,
            file,
            width: layout.len(),
            layout,
            pos,
            names,
            header: false,
            stop: false,
            records: 0,
            bare: 0,
            batch: WiremapBatch::default(),
            lines: Vec::new(),
            addresses: HashMap::new(),
            seen: HashMap::new(),
            scratch: String::new(),
            errors: Issues::default(),
            warnings: Issues::default(),
        }
    }

    fn into_errors(self) -> CsvErrors {
        CsvErrors { file: self.file.to_string(), issues: self.errors }
    }

    fn issue(&self, line: usize, column: usize, name: &str, reason: String) -> CsvIssue {
        CsvIssue { file: self.file.to_string(), line, column, column_name: name.to_string(), reason }
    }

    fn error(&mut self, line: usize, column: usize, name: &str, reason: String) {
        let i = self.issue(line, column, name, reason);
        self.errors.push(i);
    }

    /// The name of the column at a 1-based position, as far as the layout knows it.
    fn name_at(&self, column: usize) -> &'static str {
        self.pos.iter().position(|p| *p == Some(column.wrapping_sub(1))).map_or("", |c| self.names[c])
    }

    fn col_error(&mut self, line: usize, col: Col, reason: String) {
        let column = self.pos[col as usize].map_or(0, |p| p + 1);
        self.error(line, column, self.names[col as usize], reason);
    }

    fn col_warning(&mut self, line: usize, col: Col, reason: String) {
        let column = self.pos[col as usize].map_or(0, |p| p + 1);
        let i = self.issue(line, column, self.names[col as usize], reason);
        self.warnings.push(i);
    }

    /// Whether the first record is a header; if so, maps the columns by its names.
    ///
    /// It is one when its first cell is a column name — of any kind, since `Export-Csv` may put
    /// any column first. A data record starts with a subnet, MAC or chassis ID, never a name.
    fn take_header(&mut self, line: usize, fields: &[Cow<str>]) -> bool {
        let first = fields.first().map(|f| f.trim()).unwrap_or("");
        let is_name =
            |n: &str| WiremapKind::ALL.into_iter().any(|k| column_names(k).iter().any(|c| c.eq_ignore_ascii_case(n)));
        if !is_name(first) {
            return false;
        }
        // A header of another kind (BSSID, … where Subnet belongs): say so once, rather than
        // report every column.
        let own_key = self.layout[0].0;
        if !fields.iter().any(|f| f.trim().eq_ignore_ascii_case(own_key)) {
            if let Some(other) = WiremapKind::ALL
                .into_iter()
                .find(|k| *k != self.kind && fields.iter().any(|f| f.trim().eq_ignore_ascii_case(key_columns(*k)[0].0)))
            {
                self.error(line, 1, "", format!("this is the header of a {other} file, not of a {} file", self.kind));
                self.stop = true;
                return true;
            }
        }
        self.header = true;
        self.width = fields.len();
        let mut pos = [None; NCOLS];
        let mut names = self.names;
        for (i, f) in fields.iter().enumerate() {
            let name = f.trim();
            let known = self.layout.iter().chain(EXTENSION.iter()).find(|(n, _)| n.eq_ignore_ascii_case(name));
            match known {
                Some((canonical, col)) => {
                    if let Some(earlier) = pos[*col as usize] {
                        self.error(
                            line,
                            i + 1,
                            name,
                            format!("the column appears twice (also column {})", earlier + 1),
                        );
                    } else {
                        pos[*col as usize] = Some(i);
                        names[*col as usize] = canonical;
                    }
                }
                None => {
                    let hint = WiremapKind::ALL
                        .into_iter()
                        .find(|k| column_names(*k).iter().any(|n| n.eq_ignore_ascii_case(name)))
                        .map(|k| format!(" ({name} is a column of {k} files)"))
                        .unwrap_or_default();
                    self.error(
                        line,
                        i + 1,
                        name,
                        format!(
                            "unknown column for a {} file{hint}; the columns are {} (and, with a header, {})",
                            self.kind,
                            column_names(self.kind).join(", "),
                            EXTENSION.map(|(n, _)| n).join(", ")
                        ),
                    );
                }
            }
        }
        for (name, col) in self.layout.clone() {
            let required = matches!(col, Col::Key | Col::PortId | Col::Country);
            if required && pos[col as usize].is_none() {
                self.error(line, 1, "", format!("no {name} column: it is required"));
            }
        }
        self.pos = pos;
        self.names = names;
        true
    }

    /// One data record.
    fn record(&mut self, line: usize, fields: &[Cow<str>]) {
        self.records += 1;
        if fields.len() != self.width {
            let (column, name) = if fields.len() < self.width {
                let col = self.pos.iter().position(|p| *p == Some(fields.len()));
                (fields.len() + 1, col.map_or("", |c| self.names[c]))
            } else {
                (self.width + 1, "")
            };
            let expected = if self.header {
                format!("the header has {}", self.width)
            } else {
                format!("the {} format has {} ({})", self.kind, self.width, column_names(self.kind).join(","))
            };
            self.error(line, column, name, format!("{} columns, but {expected}", fields.len()));
            return;
        }
        let pos = self.pos;
        let value = |col: Col| -> &str { pos[col as usize].map_or("", |p| fields[p].trim()) };
        let errors_before = self.errors.total;

        let key = self.parse_key(line, &value);
        let description = value(Col::Description);
        if let Some(reason) = control_char(description) {
            self.col_error(line, Col::Description, reason);
        }
        let address: [&str; 17] = FULL_ADDRESS.map(|(_, col)| value(col));
        let erl = self.address(line, &address);

        let (Some((key, bare)), Some(erl)) = (key, erl) else { return };
        if self.errors.total != errors_before {
            return;
        }
        match self.seen.get(&key) {
            Some(&earlier) => {
                let first = &self.batch.rows[earlier];
                let first_line = self.lines[earlier];
                if first.erl == erl && first.description == description && first.bare_subnet_id == bare {
                    self.col_warning(line, Col::Key, format!("the same row as line {first_line}; read once"));
                } else {
                    let what = if first.erl != erl { "a different location" } else { "a different description" };
                    self.col_error(
                        line,
                        Col::Key,
                        format!("{} is also on line {first_line}, with {what}", describe_key(&key)),
                    );
                }
            }
            None => {
                self.seen.insert(key.clone(), self.batch.rows.len());
                self.lines.push(line);
                self.bare += bare as usize;
                self.batch.rows.push(WiremapRow {
                    key,
                    erl,
                    description: description.to_string(),
                    bare_subnet_id: bare,
                });
            }
        }
    }

    /// The element of a record (and whether it is a bare subnet ID), or `None` after reporting why.
    fn parse_key<'v>(&mut self, line: usize, value: &dyn Fn(Col) -> &'v str) -> Option<(WiremapKey, bool)> {
        let raw = value(Col::Key);
        let key_name = self.layout[0].0;
        if raw.is_empty() {
            self.col_error(line, Col::Key, format!("empty: {key_name} is required"));
            return None;
        }
        match self.kind {
            WiremapKind::Subnets => match parse_subnet(raw) {
                Ok((net, bare)) => {
                    if bare && net.prefix_len() < WIDE_BARE_PREFIX {
                        self.col_warning(
                            line,
                            Col::Key,
                            format!(
                                "subnet ID {raw} has no prefix length and is taken as {net}, the widest network \
                                 with that ID: callers in unmapped subnets of {net} get this location too; write \
                                 its real prefix ({raw}/24, say) to prevent that"
                            ),
                        );
                    }
                    Some((WiremapKey::Subnet(net), bare))
                }
                Err(reason) => {
                    self.col_error(line, Col::Key, reason);
                    None
                }
            },
            WiremapKind::Waps | WiremapKind::Macs => match parse_device_mac(raw) {
                Ok(m) => Some((
                    if self.kind == WiremapKind::Waps { WiremapKey::Bssid(m) } else { WiremapKey::Mac(m) },
                    false,
                )),
                Err(reason) => {
                    self.col_error(line, Col::Key, reason);
                    None
                }
            },
            WiremapKind::Switches | WiremapKind::Ports => {
                let chassis = match parse_chassis(raw) {
                    Ok(c) => Some(c),
                    Err(reason) => {
                        self.col_error(line, Col::Key, reason);
                        None
                    }
                };
                if self.kind == WiremapKind::Switches {
                    return chassis.map(|chassis_id| (WiremapKey::Switch { chassis_id }, false));
                }
                let subtype = match parse_port_subtype(value(Col::PortSubtype)) {
                    Ok(s) => Some(s),
                    Err(reason) => {
                        self.col_error(line, Col::PortSubtype, reason);
                        None
                    }
                };
                let port_id = value(Col::PortId);
                let port_ok = if port_id.is_empty() {
                    self.col_error(line, Col::PortId, "empty: PortID is required".into());
                    false
                } else if let Some(reason) = control_char(port_id) {
                    self.col_error(line, Col::PortId, reason);
                    false
                } else {
                    true
                };
                match (chassis, subtype, port_ok) {
                    (Some(chassis_id), Some(port_subtype), true) => {
                        Some((WiremapKey::Port { chassis_id, port_subtype, port_id: port_id.to_string() }, false))
                    }
                    _ => None,
                }
            }
        }
    }

    /// The ERL index of a record's address, or `None` after reporting why it is not usable.
    ///
    /// The ERL is a function of the trimmed values with the country in upper case, so those,
    /// joined, identify it: a repeated address is looked up, not checked and built again, and two
    /// spellings of one ERL ("us"/"US") are one.
    fn address(&mut self, line: usize, values: &[&str; 17]) -> Option<usize> {
        self.scratch.clear();
        for (i, v) in values.iter().enumerate() {
            if i == 11 {
                self.scratch.extend(v.chars().map(|c| c.to_ascii_uppercase()));
            } else {
                self.scratch.push_str(v);
            }
            self.scratch.push('\u{1f}');
        }
        let result = match self.addresses.get(self.scratch.as_str()) {
            Some(r) => r.clone(),
            None => {
                let r = build_erl(values).map(|erl| {
                    self.batch.erls.push(erl);
                    self.batch.erls.len() - 1
                });
                self.addresses.insert(self.scratch.clone(), r.clone());
                r
            }
        };
        match result {
            Ok(i) => Some(i),
            Err(problems) => {
                for (i, reason) in problems {
                    self.col_error(line, FULL_ADDRESS[i].1, reason);
                }
                None
            }
        }
    }
}

fn describe_key(key: &WiremapKey) -> String {
    match key {
        WiremapKey::Subnet(n) => format!("subnet {n}"),
        WiremapKey::Bssid(m) => format!("BSSID {}", format_mac(m)),
        WiremapKey::Switch { chassis_id } => format!("chassis {chassis_id}"),
        WiremapKey::Port { chassis_id, port_subtype, port_id } => {
            format!("port {port_id} ({}) of chassis {chassis_id}", port_subtype.as_str())
        }
        WiremapKey::Mac(m) => format!("MAC {}", format_mac(m)),
    }
}

/// The ERL of the address columns, or every problem (index into [`FULL_ADDRESS`], reason).
fn build_erl(v: &[&str; 17]) -> Result<Erl, Vec<(usize, String)>> {
    let mut problems = Vec::new();
    for (i, s) in v.iter().enumerate() {
        if let Some(reason) = control_char(s) {
            problems.push((i, reason));
        }
    }
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (location, company_name, country) = (v[0], v[1], v[11]);
    let (company, elins) = match split_company(company_name) {
        Ok(ce) => ce,
        Err(reason) => {
            problems.push((1, reason));
            (None, Vec::new())
        }
    };
    let country = country.to_ascii_uppercase();
    if country.is_empty() {
        problems.push((
            11,
            "empty: Country is required (an ISO 3166-1 alpha-2 code such as US); an entry without an address \
             would give an emergency call no location"
                .into(),
        ));
    } else if let Err(reason) = check_country(&country) {
        problems.push((11, reason));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut erl = Erl { label: location.to_string(), company, elins, ..Default::default() };
    let c = &mut erl.civic;
    c.loc = opt(location);
    c.nam = opt(company_name);
    c.hno = opt(v[2]);
    c.hns = opt(v[3]);
    c.prd = opt(v[4]);
    c.rd = opt(v[5]);
    c.sts = opt(v[6]);
    c.pod = opt(v[7]);
    c.a3 = opt(v[8]);
    c.a1 = opt(v[9]);
    c.pc = opt(v[10]);
    c.country = Some(country);
    c.flr = opt(v[12]);
    c.room = opt(v[13]);
    c.bld = opt(v[14]);
    c.unit = opt(v[15]);
    c.seat = opt(v[16]);
    Ok(erl)
}

/// The reason a text is refused for a control character, if it has one.
fn control_char(s: &str) -> Option<String> {
    s.chars().find(|c| c.is_control()).map(|c| format!("contains a control character (U+{:04X})", c as u32))
}

/// Splits SfB's CompanyName into the company name and the ELINs (see the module documentation).
pub fn split_company(s: &str) -> Result<(Option<String>, Vec<String>), String> {
    let mut names = Vec::new();
    let mut elins = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if part.chars().any(char::is_alphabetic) {
            names.push(part);
            continue;
        }
        match normalise_elin(part) {
            Some(e) => elins.push(e),
            None => {
                return Err(format!(
                    "\"{part}\" is neither a company name nor an ELIN (an ELIN is digits, optionally separated by \
                     hyphens, at most 15: 425-555-0100; ELINs are separated by ';')"
                ))
            }
        }
    }
    Ok(((!names.is_empty()).then(|| names.join("; ")), elins))
}

/// `425-555-0100` → `4255550100`; `+1-425-555-0100` → `+14255550100`; `None` if not an ELIN.
fn normalise_elin(s: &str) -> Option<String> {
    let (plus, digits) = match s.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", s),
    };
    let groups: Vec<&str> = digits.split('-').collect();
    if groups.iter().any(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let joined: String = groups.concat();
    (joined.len() <= 15).then(|| format!("{plus}{joined}"))
}

/// The ISO 3166-1 alpha-2 officially assigned codes (249), as RFC 5139 §3.1 requires for country.
const ISO_3166_ALPHA2: &str =
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
     BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES \
     ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO \
     IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK \
     ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR \
     PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK \
     TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// `Ok` for an upper-case ISO 3166-1 alpha-2 code.
pub fn check_country(c: &str) -> Result<(), String> {
    if c.len() == 2 && ISO_3166_ALPHA2.split_ascii_whitespace().any(|k| k == c) {
        return Ok(());
    }
    let hint = match c {
        "UK" => " (the United Kingdom is GB)",
        "USA" => " (the United States is US)",
        "CAN" => " (Canada is CA)",
        _ if c.len() == 3 => " (three letters: use the two-letter code)",
        _ => "",
    };
    Err(format!("\"{c}\" is not an ISO 3166-1 alpha-2 country code{hint}"))
}

/// A subnet cell: `(network, bare)`, see the module documentation for the rules.
pub fn parse_subnet(s: &str) -> Result<(IpNet, bool), String> {
    const FORMS: &str = "an SfB subnet ID like 157.56.66.0, or CIDR like 10.1.2.0/24 or 2001:db8:1:2::/64";
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| format!("\"{s}\" is not a subnet: expected {FORMS}"))?;
        if net.trunc() != net {
            return Err(format!(
                "\"{s}\" has host bits set: the network is {}; write that (SfB stored network IDs only)",
                net.trunc()
            ));
        }
        return Ok((net, false));
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            let bits = u32::from(a);
            if bits == 0 {
                return Err("0.0.0.0 would be every IPv4 address: give a real subnet".into());
            }
            let prefix = 32 - bits.trailing_zeros() as u8;
            let net = Ipv4Net::new(a, prefix).expect("prefix ≤ 32");
            Ok((IpNet::V4(net), true))
        }
        Ok(IpAddr::V6(_)) => Err(format!(
            "\"{s}\": an IPv6 subnet needs its prefix length ({s}/64, say); SfB took IPv4 subnet IDs only, and an \
             IPv6 address does not show its network's size"
        )),
        Err(_) => {
            let hint =
                if parse_mac(s).is_some() { " (a MAC address: is this a waps, switches or macs file?)" } else { "" };
            Err(format!("\"{s}\" is not a subnet: expected {FORMS}{hint}"))
        }
    }
}

/// A BSSID or device MAC: six octets, not all-zero or broadcast.
fn parse_device_mac(s: &str) -> Result<Mac, String> {
    match parse_mac(s) {
        Some([0, 0, 0, 0, 0, 0]) | Some([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]) => {
            Err(format!("{s} is not the address of a device (all-zero or broadcast)"))
        }
        Some(m) => Ok(m),
        None => {
            let hint = if s.parse::<IpNet>().is_ok() || s.parse::<IpAddr>().is_ok() {
                " (an IP address: is this a subnets file?)"
            } else {
                ""
            };
            Err(format!("\"{s}\" is not a MAC address: expected six hex octets like 0A-23-CD-16-AA-2E{hint}"))
        }
    }
}

/// An LLDP chassis ID as Set-CsLisSwitch/-Port take it: a MAC (normalised) or an IP address.
fn parse_chassis(s: &str) -> Result<String, String> {
    if let Some(m) = parse_mac(s) {
        return Ok(format_mac(&m));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    Err(format!(
        "\"{s}\" is neither a MAC address (0B-23-CD-16-AA-BB) nor an IP address, the chassis ID forms SfB takes"
    ))
}

/// PortIDSubType by name or number (Set-CsLisPort: "can be entered as a numeric value or a string").
fn parse_port_subtype(s: &str) -> Result<PortIdSubtype, String> {
    match s {
        "1" => Ok(PortIdSubtype::InterfaceAlias),
        "5" => Ok(PortIdSubtype::InterfaceName),
        "7" => Ok(PortIdSubtype::LocallyAssigned),
        _ => PortIdSubtype::parse(s).ok_or_else(|| {
            format!(
                "unknown PortIDSubType \"{s}\": LocallyAssigned (7, the default), InterfaceAlias (1) or \
                 InterfaceName (5)"
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Record = Result<(usize, Vec<String>), (usize, usize)>;

    fn records(text: &str) -> Vec<Record> {
        let mut r = Reader::new(text);
        let mut f = Vec::new();
        let mut out = Vec::new();
        while let Some(x) = r.next(&mut f) {
            out.push(match x {
                Ok(line) => Ok((line, f.iter().map(|c| c.to_string()).collect())),
                Err(e) => Err((e.line, e.column)),
            });
        }
        out
    }

    #[test]
    fn rfc4180_records() {
        let got = records("a,b\r\n\"c,1\",\"say \"\"hi\"\"\"\n\n\"multi\nline\",x\rlast,\n");
        assert_eq!(
            got,
            vec![
                Ok((1, vec!["a".into(), "b".into()])),
                Ok((2, vec!["c,1".into(), "say \"hi\"".into()])),
                Ok((4, vec!["multi\nline".into(), "x".into()])),
                Ok((6, vec!["last".into(), "".into()])),
            ]
        );
        // No final line break; spaces around a quoted field.
        assert_eq!(records("x, \"y\" ,z"), vec![Ok((1, vec!["x".into(), "y".into(), "z".into()]))]);
    }

    #[test]
    fn syntax_errors_name_line_and_column_and_reading_goes_on() {
        let got = records("a,b\"c\nok,1\n\"x\"y,2\nfine,3\n\"never closed,4\nmore\n");
        assert_eq!(
            got,
            vec![
                Err((1, 2)),
                Ok((2, vec!["ok".into(), "1".into()])),
                Err((3, 1)),
                Ok((4, vec!["fine".into(), "3".into()])),
                Err((5, 1)),
            ]
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(decode(b"\xEF\xBB\xBFa,b").unwrap(), "a,b");
        let utf16: Vec<u8> =
            [0xFF, 0xFE].into_iter().chain("é,1".encode_utf16().flat_map(|u| u.to_le_bytes())).collect();
        assert_eq!(decode(&utf16).unwrap(), "é,1");
        let (line, column, reason) = decode(b"a,b\nc,\"d\xE9\",e").unwrap_err();
        assert_eq!((line, column), (2, 2));
        assert!(reason.contains("0xE9"), "{reason}");
    }

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

    #[test]
    fn company_name_and_elins() {
        assert_eq!(split_company("Litware").unwrap(), (Some("Litware".into()), vec![]));
        assert_eq!(
            split_company("425-555-0100; 425-555-0200; 425-555-0300").unwrap(),
            (None, vec!["4255550100".into(), "4255550200".into(), "4255550300".into()])
        );
        assert_eq!(
            split_company("Litware, Inc.;1111-222-333; 1234567890;").unwrap(),
            (Some("Litware, Inc.".into()), vec!["1111222333".into(), "1234567890".into()])
        );
        assert_eq!(split_company("+1-425-555-0100").unwrap(), (None, vec!["+14255550100".into()]));
        assert_eq!(split_company("").unwrap(), (None, vec![]));
        assert!(split_company("Litware; 425.555.0100").is_err());
        assert!(split_company("1234567890123456").is_err(), "16 digits is longer than E.164 allows");
        assert!(split_company("425--555").is_err());
    }

    #[test]
    fn subnet_rules() {
        let net = |s: &str| parse_subnet(s).map(|(n, bare)| (n.to_string(), bare));
        assert_eq!(net("157.56.66.0"), Ok(("157.56.66.0/23".into(), true)));
        assert_eq!(net("10.10.10.128"), Ok(("10.10.10.128/25".into(), true)));
        assert_eq!(net("10.1.3.0"), Ok(("10.1.3.0/24".into(), true)));
        assert_eq!(net("192.0.2.7"), Ok(("192.0.2.7/32".into(), true)));
        assert_eq!(net("10.1.2.0/24"), Ok(("10.1.2.0/24".into(), false)));
        assert_eq!(net("2001:db8:1:2::/64"), Ok(("2001:db8:1:2::/64".into(), false)));
        assert!(net("10.1.2.5/24").unwrap_err().contains("the network is 10.1.2.0/24"));
        assert!(net("2001:db8::").unwrap_err().contains("prefix length"));
        assert!(net("0.0.0.0").is_err());
        assert!(net("10.1.2.0/33").is_err());
        assert!(net("0A-23-CD-16-AA-2E").unwrap_err().contains("a MAC address"));
    }

    #[test]
    fn country_codes() {
        assert!(check_country("US").is_ok());
        assert!(check_country("GB").is_ok());
        assert!(check_country("UK").unwrap_err().contains("GB"));
        assert!(check_country("USA").is_err());
        assert!(check_country("ZZ").is_err());
        assert_eq!(ISO_3166_ALPHA2.split_ascii_whitespace().count(), 249);
        // Same list as the system's tzdata, when the system has one.
        if let Ok(tab) = std::fs::read_to_string("/usr/share/zoneinfo/iso3166.tab") {
            let codes: Vec<&str> =
                tab.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split('\t').next()).collect();
            assert_eq!(codes, ISO_3166_ALPHA2.split_ascii_whitespace().collect::<Vec<_>>());
        }
    }

    #[test]
    fn port_subtypes_by_name_or_number() {
        assert_eq!(parse_port_subtype(""), Ok(PortIdSubtype::LocallyAssigned));
        assert_eq!(parse_port_subtype("1"), Ok(PortIdSubtype::InterfaceAlias));
        assert_eq!(parse_port_subtype("interfacename"), Ok(PortIdSubtype::InterfaceName));
        assert_eq!(parse_port_subtype("7"), Ok(PortIdSubtype::LocallyAssigned));
        assert!(parse_port_subtype("3").is_err());
    }

    #[test]
    fn written_fields_are_quoted_only_when_needed() {
        let mut s = String::new();
        push_record(&mut s, ["a", "b,c", "say \"x\"", " pad", ""].into_iter());
        assert_eq!(s, "a,\"b,c\",\"say \"\"x\"\"\",\" pad\",\r\n");
    }
}
