//! Reading one Skype for Business CSV file into wiremap rows: the optional header row (columns by
//! name, any order), each record's key and address checked by the column rules, repeated elements
//! and addresses, and every problem collected with its file, line and column.

use std::borrow::Cow;
use std::collections::HashMap;

use super::columns::{
    build_erl, column_names, control_char, describe_key, key_columns, layout, parse_chassis, parse_device_mac,
    parse_port_subtype, parse_subnet, Col, EXTENSION, FULL_ADDRESS, NCOLS, PLAN, WIDE_BARE_PREFIX,
};
use super::rfc4180::{decode, Reader};
use super::{CsvErrors, CsvFloorPlan, CsvIssue, Issues, ParsedWiremap};
use crate::location::wiremap_rows::{WiremapBatch, WiremapKind, WiremapRow};
use crate::location::WiremapKey;

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
        floor_plans: p.plans,
        floor_plan_images: Default::default(),
    })
}

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
    /// The FloorPlan columns' pins, one per ERL.
    plans: Vec<CsvFloorPlan>,
    /// ERL index → its pin in `plans` (a look-up per row, not a search: imports of 100,000 rows).
    plan_of: HashMap<usize, usize>,
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
            plans: Vec::new(),
            plan_of: HashMap::new(),
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
            let known = self
                .layout
                .iter()
                .chain(EXTENSION.iter())
                .chain(PLAN.iter())
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
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
                            "unknown column for a {} file{hint}; the columns are {} (and, with a header, {}, {})",
                            self.kind,
                            column_names(self.kind).join(", "),
                            EXTENSION.map(|(n, _)| n).join(", "),
                            PLAN.map(|(n, _)| n).join(", ")
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

        let plan = [Col::FloorPlan, Col::FloorPlanX, Col::FloorPlanY].map(&value);

        let (Some((key, bare)), Some(erl)) = (key, erl) else { return };
        self.floor_plan(line, erl, plan);
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

    /// The FloorPlan, FloorPlanX and FloorPlanY of a record whose ERL is `erl`: all three or none;
    /// one point per ERL (its rows may repeat it).
    fn floor_plan(&mut self, line: usize, erl: usize, [path, x, y]: [&str; 3]) {
        if path.is_empty() && x.is_empty() && y.is_empty() {
            return;
        }
        if path.is_empty() {
            self.col_error(line, Col::FloorPlan, "empty, but FloorPlanX/FloorPlanY are given: name the image".into());
            return;
        }
        if let Some(reason) = control_char(path) {
            self.col_error(line, Col::FloorPlan, reason);
            return;
        }
        let mut coord = |col: Col, name: &str, v: &str| -> Option<f64> {
            let parsed = v.parse::<f64>().map_err(|_| format!("{v:?} is not a number"));
            match parsed.and_then(|f| crate::location::floorplan::check_fraction(name, f).map(|_| f)) {
                Ok(f) => Some(f),
                Err(reason) => {
                    self.col_error(line, col, reason);
                    None
                }
            }
        };
        let (Some(x), Some(y)) = (coord(Col::FloorPlanX, "x", x), coord(Col::FloorPlanY, "y", y)) else { return };
        let column = self.pos[Col::FloorPlan as usize].map_or(0, |p| p + 1);
        let pin = CsvFloorPlan { erl, path: path.to_string(), x, y, line, column };
        match self.plan_of.get(&erl).map(|&i| &self.plans[i]) {
            Some(earlier) if earlier.path == pin.path && earlier.x == x && earlier.y == y => {}
            Some(earlier) => {
                let first = earlier.line;
                self.col_error(
                    line,
                    Col::FloorPlan,
                    format!(
                        "the same location has another floor plan or point on line {first}: one point per location"
                    ),
                );
            }
            None => {
                self.plan_of.insert(erl, self.plans.len());
                self.plans.push(pin);
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
