//! Address validation: is an ERL's civic address one an emergency service can dispatch to?
//!
//! [`Validator`] is the interface (an E9-1-1 provider's validation service can implement it
//! later). [`MsagValidator`] is the built-in one: it checks the required elements, then the
//! street and house number against a local extract of the Master Street Address Guide (MSAG),
//! the table of valid address ranges PSAPs dispatch from.
//!
//! An unvalidated or invalid ERL is still used for routing — an emergency call is never blocked
//! on validation — and the event says so, so the desk can tell the officer to verify the address.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CivicAddress;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Validation {
    Valid,
    /// Why not, one reason per problem.
    Invalid {
        reasons: Vec<String>,
    },
}

pub trait Validator: Send + Sync {
    fn validate(&self, civic: &CivicAddress) -> Validation;
}

/// Which house numbers an MSAG range covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    Odd,
    Even,
    Both,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsagRange {
    pub low: u64,
    pub high: u64,
    pub parity: Parity,
}

/// A local MSAG extract: CSV rows `community,street,low,high,parity` (parity `odd`, `even` or
/// `both`), an optional header row. Community and street compare case-insensitively after
/// normalisation (see [`normalise`]).
#[derive(Debug, Default, Clone)]
pub struct MsagValidator {
    /// (community, street) → ranges.
    ranges: HashMap<(String, String), Vec<MsagRange>>,
}

/// A problem in the MSAG file itself: file, line, column and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsagError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl std::fmt::Display for MsagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.reason)
    }
}

impl std::error::Error for MsagError {}

const COLUMNS: [&str; 5] = ["community", "street", "low", "high", "parity"];

/// Upper case, `.` and `,` removed, runs of white space folded: "N. Main  st" → "N MAIN ST".
pub fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '.' && *c != ',')
        .collect::<String>()
        .split_whitespace()
        .map(str::to_uppercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The street as an MSAG names it: pre-directional, name, suffix, post-directional (RFC 5139
/// PRD, RD — or the older A6 —, STS, POD).
pub fn street_of(c: &CivicAddress) -> String {
    let parts = [&c.prd, if c.rd.is_some() { &c.rd } else { &c.a6 }, &c.sts, &c.pod];
    normalise(&parts.iter().filter_map(|p| p.as_deref()).collect::<Vec<_>>().join(" "))
}

impl MsagValidator {
    pub fn load(path: &Path) -> Result<MsagValidator, MsagError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| MsagError {
            file: file.clone(),
            line: 0,
            column: 0,
            reason: format!("cannot read: {e}"),
        })?;
        MsagValidator::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<MsagValidator, MsagError> {
        let err =
            |line: usize, column: usize, reason: String| MsagError { file: file.to_string(), line, column, reason };
        let mut v = MsagValidator::default();
        for (i, raw) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = raw.split(',').map(str::trim).collect();
            if line == 1 && cols.first().is_some_and(|c| c.eq_ignore_ascii_case("community")) {
                continue;
            }
            if cols.len() != COLUMNS.len() {
                return Err(err(
                    line,
                    cols.len().min(5) + 1,
                    format!("expected {} columns ({}), found {}", COLUMNS.len(), COLUMNS.join(","), cols.len()),
                ));
            }
            for (c, name) in [(0, "community"), (1, "street")] {
                if cols[c].is_empty() {
                    return Err(err(line, c + 1, format!("{name} is empty")));
                }
            }
            let num = |c: usize| -> Result<u64, MsagError> {
                cols[c]
                    .parse::<u64>()
                    .map_err(|_| err(line, c + 1, format!("{} {:?} is not a house number", COLUMNS[c], cols[c])))
            };
            let (low, high) = (num(2)?, num(3)?);
            if low > high {
                return Err(err(line, 3, format!("low {low} is above high {high}")));
            }
            let parity = match cols[4].to_ascii_lowercase().as_str() {
                "odd" | "o" => Parity::Odd,
                "even" | "e" => Parity::Even,
                "both" | "b" | "" => Parity::Both,
                other => return Err(err(line, 5, format!("parity {other:?} is not odd, even or both"))),
            };
            v.ranges.entry((normalise(cols[0]), normalise(cols[1]))).or_default().push(MsagRange { low, high, parity });
        }
        Ok(v)
    }

    pub fn len(&self) -> usize {
        self.ranges.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The elements a dispatchable civic address needs (NENA's minimum for a US-style address:
/// country, state, community, street and house number).
pub fn missing_required(c: &CivicAddress) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let empty = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
    if empty(&c.country) {
        missing.push("country");
    }
    if empty(&c.a1) {
        missing.push("A1 (state or region)");
    }
    if empty(&c.a3) {
        missing.push("A3 (city or community)");
    }
    if empty(&c.rd) && empty(&c.a6) {
        missing.push("RD (street)");
    }
    if empty(&c.hno) {
        missing.push("HNO (house number)");
    }
    missing
}

impl Validator for MsagValidator {
    fn validate(&self, c: &CivicAddress) -> Validation {
        let missing = missing_required(c);
        if !missing.is_empty() {
            return Validation::Invalid { reasons: missing.into_iter().map(|m| format!("missing {m}")).collect() };
        }
        let community = normalise(c.a3.as_deref().unwrap_or(""));
        let street = street_of(c);
        let hno_text = c.hno.as_deref().unwrap_or("").trim();
        let Ok(hno) = hno_text.parse::<u64>() else {
            return Validation::Invalid {
                reasons: vec![format!("house number {hno_text:?} is not a number (RFC 5139 HNO is the numeric part)")],
            };
        };
        let Some(ranges) = self.ranges.get(&(community.clone(), street.clone())) else {
            return Validation::Invalid {
                reasons: vec![format!("street {street:?} in {community:?} is not in the MSAG")],
            };
        };
        let fits = ranges.iter().any(|r| {
            (r.low..=r.high).contains(&hno)
                && match r.parity {
                    Parity::Both => true,
                    Parity::Odd => hno % 2 == 1,
                    Parity::Even => hno % 2 == 0,
                }
        });
        if fits {
            Validation::Valid
        } else {
            Validation::Invalid {
                reasons: vec![format!("house number {hno} is outside the MSAG ranges of {street:?} in {community:?}")],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSAG: &str = "community,street,low,high,parity\n\
REDMOND,MICROSOFT WAY,1,99,both\n\
Redmond, N. Main st ,100,198,even\n\
REDMOND,N MAIN ST,101,199,odd\n";

    fn addr(hno: &str, rd: &str, sts: Option<&str>, prd: Option<&str>) -> CivicAddress {
        CivicAddress {
            country: Some("US".into()),
            a1: Some("WA".into()),
            a3: Some("Redmond".into()),
            rd: Some(rd.into()),
            sts: sts.map(Into::into),
            prd: prd.map(Into::into),
            hno: Some(hno.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ranges_and_parity() {
        let v = MsagValidator::parse(MSAG, "msag.csv").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v.validate(&addr("1", "Microsoft Way", None, None)), Validation::Valid);
        assert_eq!(v.validate(&addr("120", "Main", Some("St"), Some("N"))), Validation::Valid);
        assert_eq!(v.validate(&addr("121", "Main", Some("St."), Some("n"))), Validation::Valid);
        let Validation::Invalid { reasons } = v.validate(&addr("200", "Main", Some("St"), Some("N"))) else { panic!() };
        assert_eq!(reasons, vec!["house number 200 is outside the MSAG ranges of \"N MAIN ST\" in \"REDMOND\""]);
        let Validation::Invalid { reasons } = v.validate(&addr("5", "Nowhere", Some("Rd"), None)) else { panic!() };
        assert!(reasons[0].contains("not in the MSAG"));
    }

    #[test]
    fn required_elements() {
        let v = MsagValidator::parse(MSAG, "msag.csv").unwrap();
        let Validation::Invalid { reasons } =
            v.validate(&CivicAddress { country: Some("US".into()), ..Default::default() })
        else {
            panic!()
        };
        assert_eq!(
            reasons,
            vec![
                "missing A1 (state or region)",
                "missing A3 (city or community)",
                "missing RD (street)",
                "missing HNO (house number)"
            ]
        );
        let Validation::Invalid { reasons } = v.validate(&addr("12A", "Microsoft Way", None, None)) else { panic!() };
        assert!(reasons[0].contains("not a number"));
    }

    #[test]
    fn bad_msag_rows_name_line_and_column() {
        let e = MsagValidator::parse("REDMOND,MAIN ST,10,5,both\n", "m.csv").unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        let e = MsagValidator::parse("REDMOND,MAIN ST,1,9,both\nREDMOND,MAIN ST,1,x,both\n", "m.csv").unwrap_err();
        assert_eq!(e.to_string(), "m.csv:2:4: high \"x\" is not a house number");
        let e = MsagValidator::parse("REDMOND,MAIN ST,1,9,sometimes\n", "m.csv").unwrap_err();
        assert_eq!((e.line, e.column), (1, 5));
        let e = MsagValidator::parse("REDMOND,1,9,both\n", "m.csv").unwrap_err();
        assert!(e.reason.starts_with("expected 5 columns"));
    }
}
