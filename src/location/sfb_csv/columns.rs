//! The Skype for Business location-database columns and the rules for each column's values:
//! which columns each kind of file has (the tables of "Configure the location database"), which
//! RFC 5139 element each address column fills, and how a subnet, MAC, chassis ID, port ID
//! subtype, country or CompanyName (with its ELINs) is read. The rules themselves are described
//! in the module documentation of `sfb_csv`.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::location::wiremap_rows::WiremapKind;
use crate::location::{civic_field, format_mac, parse_mac, CivicAddress, Erl, Mac, PortIdSubtype, WiremapKey};

/// A bare IPv4 subnet ID whose inferred prefix is shorter than this gets a warning (see the
/// module documentation).
pub(super) const WIDE_BARE_PREFIX: u8 = 16;

/// The column roles. Their order is the index into a layout's position table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Col {
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
    FloorPlan,
    FloorPlanX,
    FloorPlanY,
}

pub(super) const NCOLS: usize = 24;

/// The columns every kind ends with, in the documented order.
pub(super) const ADDRESS: [(&str, Col); 12] = [
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
pub(super) const EXTENSION: [(&str, Col); 5] =
    [("Floor", Col::Floor), ("Room", Col::Room), ("Building", Col::Building), ("Unit", Col::Unit), ("Seat", Col::Seat)];

/// sosdesk extension: the ERL's floor plan (an image file, relative to the CSV file) and the
/// point on it, as fractions of its width and height (`location::floorplan`). By name only, in a
/// file with a header row, like [`EXTENSION`]; not part of the address, and not exported.
pub(super) const PLAN: [(&str, Col); 3] =
    [("FloorPlan", Col::FloorPlan), ("FloorPlanX", Col::FloorPlanX), ("FloorPlanY", Col::FloorPlanY)];

/// Every address column: the 12 of SfB, then the extension.
pub(super) const FULL_ADDRESS: [(&str, Col); 17] = [
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

pub(super) fn key_columns(kind: WiremapKind) -> &'static [(&'static str, Col)] {
    match kind {
        WiremapKind::Subnets => &[("Subnet", Col::Key)],
        WiremapKind::Waps => &[("BSSID", Col::Key)],
        WiremapKind::Switches => &[("ChassisID", Col::Key)],
        WiremapKind::Ports => &[("ChassisID", Col::Key), ("PortIDSubType", Col::PortSubtype), ("PortID", Col::PortId)],
        WiremapKind::Macs => &[("MAC", Col::Key)],
    }
}

pub(super) fn layout(kind: WiremapKind) -> Vec<(&'static str, Col)> {
    let mut v = key_columns(kind).to_vec();
    v.push(("Description", Col::Description));
    v.extend(ADDRESS);
    v
}

/// The column names of a kind, in the documented order (the header `write_csv` writes).
pub fn column_names(kind: WiremapKind) -> Vec<&'static str> {
    layout(kind).into_iter().map(|(n, _)| n).collect()
}

/// The RFC 5139 element an address column fills (the table in the module documentation of
/// `sfb_csv`); `None` for the key and Description columns.
pub(super) fn civic_element(col: Col) -> Option<&'static str> {
    Some(match col {
        Col::Location => "LOC",
        Col::CompanyName => "NAM",
        Col::HouseNumber => "HNO",
        Col::HouseNumberSuffix => "HNS",
        Col::PreDirectional => "PRD",
        Col::StreetName => "RD",
        Col::StreetSuffix => "STS",
        Col::PostDirectional => "POD",
        Col::City => "A3",
        Col::State => "A1",
        Col::PostalCode => "PC",
        Col::Country => "country",
        Col::Floor => "FLR",
        Col::Room => "ROOM",
        Col::Building => "BLD",
        Col::Unit => "UNIT",
        Col::Seat => "SEAT",
        Col::Key
        | Col::PortSubtype
        | Col::PortId
        | Col::Description
        | Col::FloorPlan
        | Col::FloorPlanX
        | Col::FloorPlanY => return None,
    })
}

/// The value of an address column's civic element, if set.
fn civic_value(c: &CivicAddress, col: Col) -> Option<&str> {
    civic_element(col).and_then(civic_field).and_then(|f| (f.get)(c).as_deref())
}

/// The address columns of an ERL: the 12 of SfB, then the extension's 5.
pub(super) fn address_fields(erl: &Erl) -> [Cow<'_, str>; 17] {
    FULL_ADDRESS.map(|(_, col)| match col {
        // LOC, or the label of an ERL that did not come from a CSV file.
        Col::Location => erl.civic.loc.as_deref().unwrap_or(&erl.label).into(),
        Col::CompanyName => company_field(erl),
        _ => civic_value(&erl.civic, col).unwrap_or("").into(),
    })
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

pub(super) fn describe_key(key: &WiremapKey) -> String {
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
pub(super) fn build_erl(v: &[&str; 17]) -> Result<Erl, Vec<(usize, String)>> {
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
    // Each column into its element, verbatim (NAM keeps CompanyName as written, ELINs and all)…
    for (value, (_, col)) in v.iter().zip(FULL_ADDRESS) {
        if let Some(field) = civic_element(col).and_then(civic_field) {
            *(field.get_mut)(&mut erl.civic) = opt(value);
        }
    }
    // … but the country upper-cased (checked above).
    erl.civic.country = Some(country);
    Ok(erl)
}

/// The reason a text is refused for a control character, if it has one.
pub(super) fn control_char(s: &str) -> Option<String> {
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
pub(super) fn parse_device_mac(s: &str) -> Result<Mac, String> {
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
pub(super) fn parse_chassis(s: &str) -> Result<String, String> {
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
pub(super) fn parse_port_subtype(s: &str) -> Result<PortIdSubtype, String> {
    PortIdSubtype::parse_name_or_number(s).ok_or_else(|| {
        format!(
            "unknown PortIDSubType \"{s}\": LocallyAssigned (7, the default), InterfaceAlias (1) or \
             InterfaceName (5)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
