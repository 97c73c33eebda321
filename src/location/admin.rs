//! The Location Information Service's administration workflows, behind `sosdesk lis import`,
//! `export`, `validate` and `list`: read and check a Skype for Business CSV file and import it,
//! export one kind of element, validate every ERL against an MSAG extract, and the ERL table.
//!
//! They live in the library, not in the command, so that they can be tested and reused (the desk
//! or an API can offer the same workflows); the command only parses its arguments, opens the
//! store, and prints what these functions return — every message is worded here, as the CLI shows
//! it.

use std::fmt;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::floorplan::{check_image, FloorPlanImage, FloorPlanPin, MediaType, MAX_IMAGE_BYTES};
use super::sfb_csv::{self, CsvErrors, ParsedWiremap};
use super::sitemap::Bounds;
use super::store::{
    ImportSummary, LisCounts, LisError, LisStore, NewPin, StoredErl, StoredSiteMap, WiremapBatch, WiremapKind,
};
use super::validate::{MsagValidator, Validation, Validator};

/// Why a CSV file was not imported.
#[derive(Debug)]
pub enum ImportError {
    /// The file could not be read: the message names it.
    Unreadable(String),
    /// The file was read and refused: every problem found, nothing imported.
    Refused(CsvErrors),
}

impl fmt::Display for ImportError {
    /// What the command writes to standard error: every problem (file:line:column), then the
    /// count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Unreadable(msg) => writeln!(f, "{msg}"),
            ImportError::Refused(e) => {
                write!(f, "{}", e.issues)?;
                writeln!(f, "{}: {} error(s); nothing was imported", e.file, e.issues.total)
            }
        }
    }
}

/// Reads and checks one Skype for Business CSV file of `kind` (see [`sfb_csv::parse`]); the file
/// is named in messages as `file` is written.
pub fn read_wiremap_file(file: &Path, kind: WiremapKind) -> Result<ParsedWiremap, ImportError> {
    let name = file.display().to_string();
    let bytes =
        std::fs::read(file).map_err(|e| ImportError::Unreadable(format!("{name}: cannot read the file: {e}")))?;
    let mut parsed = sfb_csv::parse(kind, &name, &bytes).map_err(ImportError::Refused)?;
    // The FloorPlan columns' images, each read and checked once, relative to the CSV's folder;
    // a missing or refused image refuses the file, as a bad cell does.
    let folder = file.parent().unwrap_or(Path::new(""));
    let mut issues = sfb_csv::Issues::default();
    for plan in &parsed.floor_plans {
        if parsed.floor_plan_images.contains_key(&plan.path) {
            continue;
        }
        match read_floor_plan(&folder.join(&plan.path)) {
            Ok(img) => {
                parsed.floor_plan_images.insert(plan.path.clone(), img);
            }
            Err(reason) => issues.push(sfb_csv::CsvIssue::floor_plan(&name, plan, reason)),
        }
    }
    if !issues.is_empty() {
        return Err(ImportError::Refused(CsvErrors { file: name, issues }));
    }
    Ok(parsed)
}

/// Reads a floor-plan image and checks it (`floorplan::check_image`: a real PNG, or an SVG with
/// nothing active in it); the message names the file.
pub fn read_floor_plan(file: &Path) -> Result<FloorPlanImage, String> {
    let name = file.display();
    let meta = std::fs::metadata(file).map_err(|e| format!("{name}: cannot read the image: {e}"))?;
    if meta.len() > MAX_IMAGE_BYTES as u64 {
        return Err(format!(
            "{name}: {} bytes: a floor plan may have at most {} MiB",
            meta.len(),
            MAX_IMAGE_BYTES >> 20
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("{name}: cannot read the image: {e}"))?;
    check_image(bytes).map_err(|e| format!("{name}: {e}"))
}

/// `sosdesk lis floorplan set`: gives ERL `erl_id` the plan and the point; the line the command
/// prints.
pub async fn set_floor_plan(
    store: &LisStore,
    erl_id: i64,
    image: &FloorPlanImage,
    x: f64,
    y: f64,
) -> Result<String, String> {
    let pin = store.set_floor_plan(erl_id, NewPin { image, x, y }).await.map_err(|e| e.to_string())?;
    Ok(format!("ERL {erl_id}: {}", describe_plan(&pin, image.media_type, image.bytes.len(), image.size)))
}

/// `sosdesk lis floorplan show`: the ERL's plan and point (and, with `output`, the image written
/// there), or that it has none.
pub async fn show_floor_plan(store: &LisStore, erl_id: i64, output: Option<&Path>) -> Result<String, String> {
    let erls = store.list_erls().await.map_err(|e| e.to_string())?;
    let erl =
        erls.iter().find(|e| e.id == erl_id).ok_or_else(|| format!("no ERL with id {erl_id} (`sosdesk lis list`)"))?;
    let Some(pin) = &erl.erl.floor_plan else {
        return Ok(format!("ERL {erl_id}: no floor plan"));
    };
    let (media_type, bytes) = store
        .floor_plan_image(&pin.plan)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("ERL {erl_id}: its floor plan {} is missing from the store", pin.plan))?;
    let size = check_image(bytes.clone()).ok().and_then(|i| i.size);
    let mut line = format!("ERL {erl_id}: {}", describe_plan(pin, media_type, bytes.len(), size));
    if let Some(out) = output {
        write_atomically(out, |w| w.write_all(&bytes))?;
        line.push_str(&format!("\nwritten to {}", out.display()));
    }
    Ok(line)
}

/// `sosdesk lis sitemap set`: stores the map; the lines the command prints — what was stored,
/// the ground it covers, and a warning when the image's proportions are not the edges' (a
/// misread edge usually; an OpenStreetMap export matches within a pixel).
pub async fn set_site_map(
    store: &LisStore,
    name: &str,
    image: &FloorPlanImage,
    bounds: Bounds,
) -> Result<String, String> {
    store.set_site_map(name, image, bounds).await.map_err(|e| e.to_string())?;
    let (w_m, h_m) = bounds.ground_size_m();
    let dims = image.size.map(|(w, h)| format!(", {w:.0}×{h:.0}")).unwrap_or_default();
    let mut out = format!(
        "site map {name:?}: {} ({}, {} bytes{dims}), north {}, south {}, west {}, east {} (about {} × {})",
        image.sha256,
        image.media_type.as_str(),
        image.bytes.len(),
        bounds.north,
        bounds.south,
        bounds.west,
        bounds.east,
        distance(w_m),
        distance(h_m)
    );
    if let Some((w, h)) = image.size {
        let (image_ratio, map_ratio) = (w / h, bounds.aspect_ratio());
        if (image_ratio / map_ratio - 1.0).abs() > 0.05 {
            out.push_str(&format!(
                "\nwarning: the image is {w:.0}×{h:.0} (width ÷ height {image_ratio:.2}) but the edges make a map \
                 {map_ratio:.2} times as wide as high: check --north/--south/--west/--east (a point will be drawn \
                 where the edges say, on a stretched image)"
            ));
        }
    }
    Ok(out)
}

fn distance(m: f64) -> String {
    if m >= 1000.0 {
        format!("{:.1} km", m / 1000.0)
    } else {
        format!("{m:.0} m")
    }
}

/// `sosdesk lis sitemap list`: one line per map.
pub fn site_map_table(maps: &[StoredSiteMap]) -> String {
    use fmt::Write as _;
    let mut out = String::new();
    if maps.is_empty() {
        out.push_str("no site maps\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:>11} {:>11} {:>12} {:>12} {:<14} {:>9} IMAGE",
        "NAME", "NORTH", "SOUTH", "WEST", "EAST", "TYPE", "BYTES"
    );
    for m in maps {
        let _ = writeln!(
            out,
            "{:<24} {:>11.6} {:>11.6} {:>12.6} {:>12.6} {:<14} {:>9} {}",
            clean(&m.name, 24),
            m.north,
            m.south,
            m.west,
            m.east,
            m.media_type,
            m.bytes,
            m.plan
        );
    }
    out
}

fn describe_plan(pin: &FloorPlanPin, media_type: MediaType, len: usize, size: Option<(f64, f64)>) -> String {
    let (dims, pixel) = match size {
        Some((w, h)) => (format!(", {w:.0}×{h:.0}"), format!(" (pixel {:.0}, {:.0})", pin.x * w, pin.y * h)),
        None => (String::new(), String::new()),
    };
    format!(
        "floor plan {} ({}, {len} bytes{dims}), pin at x {:.4}, y {:.4}{pixel}",
        pin.plan,
        media_type.as_str(),
        pin.x,
        pin.y
    )
}

/// The warnings of a file that is imported all the same, one line each, as the command writes
/// them to standard error.
pub fn warning_lines(parsed: &ParsedWiremap) -> Vec<String> {
    let mut lines: Vec<String> = parsed.warnings.shown.iter().map(|w| format!("warning: {w}")).collect();
    if parsed.warnings.total > parsed.warnings.shown.len() {
        lines.push(format!("warning: … and {} more warnings", parsed.warnings.total - parsed.warnings.shown.len()));
    }
    lines
}

/// What an import of one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The file, as named on the command line.
    pub file: String,
    pub kind: WiremapKind,
    pub summary: ImportSummary,
    /// Records read that repeated an earlier identical row.
    pub duplicates: usize,
    /// Subnets given as bare SfB subnet IDs (prefix length inferred).
    pub bare_subnet_ids: usize,
    /// The store: its file, or its PostgreSQL URL without the password.
    pub store: String,
}

impl fmt::Display for ImportReport {
    /// The summary line, and a note when subnet prefixes were inferred.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        writeln!(
            f,
            "{}: {} {} rows{}: {} new or changed, {} unchanged; {} new ERLs (store {})",
            self.file,
            s.rows,
            self.kind,
            if self.duplicates > 0 { format!(" ({} repeated rows read once)", self.duplicates) } else { String::new() },
            s.changed,
            s.unchanged,
            s.new_erls,
            self.store
        )?;
        if self.bare_subnet_ids > 0 {
            writeln!(
                f,
                "note: {} subnets are SfB subnet IDs without a prefix length; each was taken as the widest \
                 network with that ID (10.1.2.0 as 10.1.2.0/23). Give the prefix (10.1.2.0/24) to be exact.",
                self.bare_subnet_ids
            )?;
        }
        Ok(())
    }
}

/// Imports a file read by [`read_wiremap_file`] into `store` (one transaction: all of it or
/// nothing). `file` names it in the report.
pub async fn import(store: &LisStore, file: &str, parsed: &ParsedWiremap) -> Result<ImportReport, LisError> {
    let pins: Vec<(usize, NewPin)> = parsed
        .floor_plans
        .iter()
        .filter_map(|p| parsed.floor_plan_images.get(&p.path).map(|image| (p.erl, NewPin { image, x: p.x, y: p.y })))
        .collect();
    let summary = store.import_with_pins(parsed.kind, &parsed.batch, &pins).await?;
    Ok(ImportReport {
        file: file.to_string(),
        kind: parsed.kind,
        summary,
        duplicates: parsed.records - summary.rows,
        bare_subnet_ids: parsed.bare_subnet_ids,
        store: store.location().to_string(),
    })
}

/// Writes an exported `batch` of `kind` to `path` as a Skype for Business CSV file (atomically,
/// see [`write_atomically`]); returns the line the command prints.
pub fn export_to_file(path: &Path, kind: WiremapKind, batch: &WiremapBatch) -> Result<String, String> {
    write_atomically(path, |w| sfb_csv::write_csv(kind, batch, w))?;
    Ok(format!("{}: {} {kind} rows", path.display(), batch.rows.len()))
}

/// Writes an exported `batch` of `kind` to `out` (standard output, for the command).
pub fn export_to<W: Write + ?Sized>(out: &mut W, kind: WiremapKind, batch: &WiremapBatch) -> Result<(), String> {
    sfb_csv::write_csv(kind, batch, out).map_err(|e| format!("standard output: {e}"))
}

/// Writes `path` through a temporary file in the same directory, synced and renamed into place:
/// a reader never sees half a file, and a failure leaves any earlier file as it was.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), String> {
    let name = path.file_name().ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!("{}.partial", name.to_string_lossy()));
    let result = (|| {
        let mut f = BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut f)?;
        f.flush()?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// What validating every ERL found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValidationTally {
    pub valid: usize,
    pub invalid: usize,
    pub erls: usize,
}

/// Validates every stored ERL's civic address with `validator` and records each one's status
/// (SfB: `Test-CsLisCivicAddress -UpdateValidationStatus`). `on_erl` gets one line per ERL as it
/// is done (`ERL    12  valid    HQ` or `… INVALID  HQ: reasons`).
pub async fn validate_all(
    store: &LisStore,
    validator: &dyn Validator,
    mut on_erl: impl FnMut(&str),
) -> Result<ValidationTally, LisError> {
    let erls = store.list_erls().await?;
    let mut tally = ValidationTally { erls: erls.len(), ..ValidationTally::default() };
    for stored in &erls {
        let result = validator.validate(&stored.erl.civic);
        store.set_validation(stored.id, &result).await?;
        let name = if stored.erl.label.is_empty() { stored.erl.civic.one_line() } else { stored.erl.label.clone() };
        match &result {
            Validation::Valid => {
                tally.valid += 1;
                on_erl(&format!("ERL {:>5}  valid    {name}", stored.id));
            }
            Validation::Invalid { reasons } => {
                tally.invalid += 1;
                on_erl(&format!("ERL {:>5}  INVALID  {name}: {}", stored.id, reasons.join("; ")));
            }
        }
    }
    Ok(tally)
}

/// The last line of `lis validate`.
pub fn validation_summary(tally: &ValidationTally, msag: &Path, validator: &MsagValidator) -> String {
    format!(
        "{} valid, {} invalid of {} ERLs (MSAG {}, {} ranges)",
        tally.valid,
        tally.invalid,
        tally.erls,
        msag.display(),
        validator.len()
    )
}

/// The table of `lis list`: one line per ERL (and one per reason it is invalid), with a header;
/// `no ERLs` when there are none. Every line ends with a newline.
pub fn erl_table(erls: &[StoredErl]) -> String {
    use fmt::Write as _;
    let mut out = String::new();
    if erls.is_empty() {
        out.push_str("no ERLs\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>5} {:<13} {:>7} {:>5} {:>8} {:>5} {:>5} {:<24} {:<20} ADDRESS",
        "ID", "VALIDATION", "SUBNETS", "WAPS", "SWITCHES", "PORTS", "MACS", "ELINS", "LOCATION"
    );
    for e in erls {
        let validation = match &e.validation {
            None => "not validated",
            Some(Validation::Valid) => "valid",
            Some(Validation::Invalid { .. }) => "INVALID",
        };
        let n = &e.elements;
        let _ = writeln!(
            out,
            "{:>5} {:<13} {:>7} {:>5} {:>8} {:>5} {:>5} {:<24} {:<20} {}",
            e.id,
            validation,
            n.subnets,
            n.waps,
            n.switches,
            n.ports,
            n.macs,
            clean(&e.erl.elins.join(","), usize::MAX),
            clean(&e.erl.label, 20),
            clean(&e.erl.civic.one_line(), 120)
        );
        if let Some(Validation::Invalid { reasons }) = &e.validation {
            for r in reasons {
                let _ = writeln!(out, "{:>5} {}", "", clean(r, 110));
            }
        }
    }
    out
}

/// The last line of `lis list`: how many ERLs and elements of each kind the store holds.
pub fn counts_line(counts: &LisCounts, store: &crate::db::Location) -> String {
    let w = counts.wiremap;
    format!(
        "{} ERLs; wiremap: {} subnets, {} waps, {} switches, {} ports, {} macs (store {})",
        counts.erls, w.subnets, w.waps, w.switches, w.ports, w.macs, store
    )
}

/// Stored text with control characters replaced, so it cannot move the terminal's cursor.
fn clean(s: &str, n: usize) -> String {
    s.chars().map(|ch| if ch.is_control() { '?' } else { ch }).take(n).collect()
}

/// `sosdesk lis unlocated`: the share the wiremap located, then one line per element.
/// `sosdesk lis discover`: each switch's poll, then every MAC learnt, where, and the ERL a call
/// or HELD request from it gets (`-` when the wiremap has none for that port).
pub fn discovery_table(
    report: &super::discovery::PollReport,
    entries: &[std::sync::Arc<super::discovery::Learnt>],
    erl_of: impl Fn(&super::Mac) -> Option<String>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    // Switch names, port names and LLDP system names come from the switches: shown as text.
    let plain = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
    let _ = writeln!(
        out,
        "{:<24} {:<22} {:<5} {:<7} {:>6} {:>6} {:>8}  CHASSIS / ERROR",
        "SWITCH", "ADDRESS", "SNMP", "STATE", "MACS", "IPS", "MS"
    );
    for s in &report.switches {
        let detail = match &s.error {
            Some(e) => e.clone(),
            None => s.chassis.join(", "),
        };
        let ms = s.poll_ms.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<24} {:<22} {:<5} {:<7} {:>6} {:>6} {:>8}  {}",
            plain(&s.name),
            s.address,
            s.snmp,
            s.state,
            s.macs,
            s.ip_addresses,
            ms,
            plain(&detail)
        );
    }
    for m in &report.moves {
        let _ = writeln!(out, "moved: {} from {} to {}", super::format_mac(&m.mac), plain(&m.from), plain(&m.to));
    }
    if entries.is_empty() {
        let _ = writeln!(out, "No MAC address was learnt.");
        return out;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<17} {:<24} {:<20} {:>8} {:>5} {:<5} {:>5}  ERL",
        "MAC", "SWITCH", "PORT", "IFINDEX", "VLAN", "VIA", "MACS"
    );
    for e in entries {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<17} {:<24} {:<20} {:>8} {:>5} {:<5} {:>5}  {}",
            super::format_mac(&e.mac),
            plain(&e.switch),
            plain(&e.port),
            opt(e.if_index.map(|i| i.to_string())),
            opt(e.vlan.map(|v| v.to_string())),
            match e.via {
                super::discovery::Via::Fdb => "fdb",
                super::discovery::Via::Lldp => "lldp",
            },
            e.macs_on_port,
            plain(&opt(erl_of(&e.mac)))
        );
    }
    out
}

pub fn unlocated_table(report: &super::unlocated::UnlocatedReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let since = report.since.map(|s| format!(" since {}", s.format("%Y-%m-%d"))).unwrap_or_default();
    let _ = writeln!(out, "Located by the wiremap{since}: {}", report.share.describe());
    if report.elements.is_empty() {
        let _ = writeln!(out, "No network element was seen unlocated.");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<13} {:<28} {:>6} {:>6}  {:<20} {:<20} {:<13} LAST DEVICE",
        "KIND", "ELEMENT", "CALLS", "HELD", "FIRST SEEN", "LAST SEEN", "FELL BACK TO"
    );
    // A switch's chassis and port IDs come from HELD requests: device-controlled text, shown as
    // text (no control characters reach the terminal).
    let plain = |s: &str| s.chars().map(|c| if c.is_control() { '?' } else { c }).collect::<String>();
    for e in &report.elements {
        let t = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
        let _ = writeln!(
            out,
            "{:<13} {:<28} {:>6} {:>6}  {:<20} {:<20} {:<13} {}",
            e.kind.as_str(),
            plain(&e.element),
            e.calls,
            e.held,
            t(&e.first_seen),
            t(&e.last_seen),
            e.last_outcome,
            plain(&e.last_device)
        );
    }
    out
}

/// A civic address from `ELEMENT=VALUE` pairs (RFC 5139 element names, exact spelling, as the
/// CLI's `--civic` takes them).
pub fn civic_from_pairs(pairs: &[String]) -> Result<super::CivicAddress, String> {
    let mut civic = super::CivicAddress::default();
    for pair in pairs {
        let (element, value) =
            pair.split_once('=').ok_or_else(|| format!("--civic {pair:?}: give ELEMENT=VALUE (e.g. A3=Redmond)"))?;
        let field = super::civic_field(element.trim()).ok_or_else(|| {
            let all: Vec<&str> = super::CIVIC_FIELDS.iter().map(|f| f.element).collect();
            format!("--civic {pair:?}: {element:?} is not an RFC 5139 element: one of {}", all.join(", "))
        })?;
        *(field.get_mut)(&mut civic) = Some(value.trim().to_string()).filter(|v| !v.is_empty());
    }
    Ok(civic)
}

/// `sosdesk lis user-location list`: one entry a line.
pub fn user_location_table(entries: &[super::user_entered::UserLocation]) -> String {
    if entries.is_empty() {
        return "no user-entered locations\n".into();
    }
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "{}\t{}\tnetwork: {}\tby {}, confirmed {}\n",
            e.owner,
            e.erl.civic.one_line(),
            e.network.describe(),
            e.entered_by,
            e.confirmed_at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    out
}
