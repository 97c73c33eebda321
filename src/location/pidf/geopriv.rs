//! Reading the location objects of a received PIDF-LO: each `<tuple>`, `<dm:device>` or
//! `<dm:person>` (RFC 3863, RFC 4479), its `<gp:geopriv>` (RFC 4119 §2.2) with usage rules and
//! method, and the civic address and geodetic shape in its `<gp:location-info>` (RFC 5491 §3).
//! Every deviation from the schemas becomes a warning; only the absence of a location is a
//! problem.

use chrono::DateTime;
use roxmltree::Node;

use super::civic::parse_civic;
use super::geometry::parse_shape;
use super::ns;
use super::xml::{collapse_ws, describe_ns, display_name, is_xs_id, ns_of, quote, text_of};
use crate::location::{CivicAddress, Erl, GeoPoint, LocationSnapshot, LocationSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Device,
    Tuple,
    Person,
    /// Some other child of <presence> that nevertheless carries a geopriv.
    Other,
}

/// One location found in a geopriv.
#[derive(Debug, Clone, Default)]
pub(super) struct Found {
    pub(super) civic: Option<CivicAddress>,
    pub(super) geo: Option<GeoPoint>,
    pub(super) method: Option<String>,
}

impl Found {
    pub(super) fn describe(&self) -> String {
        let snap = LocationSnapshot {
            source: LocationSource::ClientPidfLo,
            erl: self.civic.clone().map(|civic| Erl { civic, ..Erl::default() }),
            geo: self.geo,
            site_map: None,
            method: None,
            warnings: Vec::new(),
        };
        snap.describe()
    }

    pub(super) fn is_location(&self) -> bool {
        self.civic.is_some() || self.geo.is_some()
    }
}

/// One `<tuple>`, `<device>` or `<person>`.
pub(super) struct ObjectResult {
    pub(super) kind: Kind,
    /// How to name it to a person: `<dm:device id="abc">`.
    pub(super) label: String,
    pub(super) found: Option<Found>,
    /// Deviations seen while reading it.
    pub(super) warnings: Vec<String>,
    /// Why no location could be taken from it.
    pub(super) problems: Vec<String>,
}

pub(super) fn parse_object(node: Node, kind: Kind) -> ObjectResult {
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let label = match node.attribute("id") {
        Some(id) => format!("<{} id=\"{}\">", display_name(node), quote(id)),
        None => format!("<{}>", display_name(node)),
    };

    // Namespace of the container: tuple is PIDF (RFC 3863), device/person are data-model (RFC 4479).
    let expected_ns = match kind {
        Kind::Tuple => Some(ns::PIDF),
        Kind::Device | Kind::Person => Some(ns::DATA_MODEL),
        Kind::Other => None,
    };
    if let Some(expected) = expected_ns {
        if ns_of(node) != expected {
            warnings.push(format!(
                "{label} is {} instead of {}; read as a {}.",
                describe_ns(node),
                expected,
                node.tag_name().name()
            ));
        }
    } else {
        warnings.push(format!(
            "{label} is not a <tuple>, <dm:device> or <dm:person> (RFC 5491 §3) but carries a geopriv; read anyway."
        ));
    }

    // RFC 3863 §4.1.2 / RFC 4479 §5: the id is mandatory and an xs:ID.
    match node.attribute("id") {
        None if kind != Kind::Other => {
            warnings.push(format!("{label} has no id attribute (required by RFC 3863/RFC 4479)."))
        }
        Some(id) if !is_xs_id(id) => warnings
            .push(format!("{label}: id \"{}\" is not a valid xs:ID (it must start with a letter or '_').", quote(id))),
        _ => {}
    }

    check_container_layout(node, kind, &label, &mut warnings);

    // Geoprivs anywhere inside (not nested in another geopriv).
    let geoprivs: Vec<Node> = node
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "geopriv")
        .filter(|n| !n.ancestors().skip(1).any(|a| a.tag_name().name() == "geopriv"))
        .collect();
    if geoprivs.is_empty() {
        problems.push(format!("{label} has no <gp:geopriv>"));
    }

    let mut found: Option<Found> = None;
    let mut extra_locations = 0usize;
    for gp in geoprivs {
        if ns_of(gp) != ns::GEOPRIV10 {
            warnings.push(format!(
                "<geopriv> in {label} is {} instead of {}; read anyway.",
                describe_ns(gp),
                ns::GEOPRIV10
            ));
        }
        // Where it should be: RFC 4119 §2.2 puts it in the tuple's <status> (RFC 4479 §5 also
        // allows it directly in the tuple); RFC 4479 puts it directly in <device>/<person>.
        if let Some(parent) = gp.parent_element() {
            let ok = match kind {
                Kind::Tuple => {
                    parent == node || (parent.tag_name().name() == "status" && parent.parent_element() == Some(node))
                }
                Kind::Device | Kind::Person => parent == node,
                Kind::Other => true,
            };
            if !ok {
                warnings.push(format!(
                    "<gp:geopriv> is inside <{}> in {label}; RFC 4479 puts it directly in the {}.",
                    display_name(parent),
                    node.tag_name().name()
                ));
            }
        }
        let mut gw = Vec::new();
        let result = parse_geopriv(gp, &label, &mut gw, &mut problems);
        if found.is_none() {
            warnings.extend(gw);
            found = result;
        } else if result.is_some() {
            extra_locations += 1;
        }
    }
    if extra_locations > 0 {
        warnings.push(format!(
            "{label} has {} more <gp:geopriv> location(s) after the first; only the first is used (RFC 5491 §3 rules #2/#3).",
            extra_locations
        ));
    }
    ObjectResult { kind, label, found, warnings, problems }
}

/// Element order and placement of deviceID/timestamp in a container (pidf.xsd tuple sequence;
/// data-model.xsd device/person sequences).
pub(super) fn check_container_layout(node: Node, kind: Kind, label: &str, warnings: &mut Vec<String>) {
    let children: Vec<Node> = node.children().filter(Node::is_element).collect();
    let pos = |local: &str| children.iter().position(|c| c.tag_name().name() == local);
    let last = children.len().saturating_sub(1);

    for ts in children.iter().filter(|c| c.tag_name().name() == "timestamp") {
        let expected = if kind == Kind::Tuple { ns::PIDF } else { ns::DATA_MODEL };
        if kind != Kind::Other && ns_of(*ts) != expected {
            warnings.push(format!("<timestamp> in {label} is {} instead of {expected}.", describe_ns(*ts)));
        }
        check_datetime(&text_of(*ts), &format!("<{}> in {label}", display_name(*ts)), warnings);
    }
    if let Some(t) = pos("timestamp") {
        if t != last && kind != Kind::Other {
            warnings.push(format!(
                "<{}> in {label} is not the last child element, where the schema requires it.",
                display_name(children[t])
            ));
        }
    }

    match kind {
        Kind::Device => match pos("deviceID") {
            None => warnings.push(format!("{label} has no <dm:deviceID> (required by RFC 4479 §5).")),
            Some(d) => {
                if let Some(g) = children.iter().rposition(|c| c.tag_name().name() == "geopriv") {
                    if g > d {
                        warnings.push(format!(
                            "<dm:deviceID> in {label} comes before <gp:geopriv>; the schema wants it after."
                        ));
                    }
                }
            }
        },
        Kind::Tuple => {
            if pos("status").is_none() {
                warnings.push(format!("{label} has no <status> (required by RFC 3863 §4.1.2)."));
            }
            if pos("deviceID").is_some() {
                warnings.push(format!("<dm:deviceID> inside {label} is ignored; RFC 4479 puts it in a <dm:device>."));
            }
        }
        Kind::Person | Kind::Other => {}
    }
}

/// One `<gp:geopriv>` (RFC 4119 §2.2). Returns the first location found in it.
pub(super) fn parse_geopriv(
    gp: Node,
    label: &str,
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Option<Found> {
    // geopriv10.xsd: location-info, usage-rules, method?, provided-by?, ##other*.
    const ORDER: [&str; 4] = ["location-info", "usage-rules", "method", "provided-by"];
    let mut last_rank = 0usize;
    let mut order_reported = false;
    let mut location_infos = Vec::new();
    let mut usage_rules = None;
    let mut method = None;

    for child in gp.children().filter(Node::is_element) {
        let local = child.tag_name().name();
        let rank = ORDER.iter().position(|o| *o == local);
        if let Some(rank) = rank {
            if rank < last_rank && !order_reported {
                warnings.push(format!(
                    "In {label}, <gp:{local}> comes after <gp:{}>; RFC 4119 §2.2.5 orders location-info, usage-rules, method, provided-by.",
                    ORDER[last_rank]
                ));
                order_reported = true;
            }
            last_rank = last_rank.max(rank);
            if ns_of(child) != ns::GEOPRIV10 {
                warnings.push(format!(
                    "<{local}> in {label} is {} instead of {}; read anyway.",
                    describe_ns(child),
                    ns::GEOPRIV10
                ));
            }
        }
        match local {
            "location-info" => location_infos.push(child),
            "usage-rules" if usage_rules.is_none() => {
                usage_rules = Some(child);
            }
            "method" if method.is_none() => {
                let m = collapse_ws(&text_of(child));
                if !m.is_empty() {
                    method = Some(m);
                }
            }
            "provided-by" => {}
            _ if ns_of(child) == ns::GEOPRIV10 => warnings.push(format!(
                "<gp:{local}> is not a child of <gp:geopriv> in RFC 4119 (ignored{}).",
                if local == "note-well" { "; it belongs in <gp:usage-rules>" } else { "" }
            )),
            _ => {} // ##other extensions are allowed (geopriv10.xsd).
        }
    }

    match usage_rules {
        None => warnings.push(format!("{label} has no <gp:usage-rules> (required by the RFC 4119 §2.2.5 schema).")),
        Some(ur) => check_usage_rules(ur, label, warnings),
    }

    if location_infos.is_empty() {
        problems.push(format!("the <gp:geopriv> in {label} has no <gp:location-info>"));
        return None;
    }
    let mut result: Option<Found> = None;
    let mut ignored = 0usize;
    for li in location_infos {
        let mut lw = Vec::new();
        let (civic, geo) = parse_location_info(li, label, &mut lw, problems);
        let f = Found { civic, geo, method: method.clone() };
        if result.is_none() {
            warnings.extend(lw);
            if f.is_location() {
                result = Some(f);
            } else {
                problems.push(format!("the <gp:location-info> in {label} holds no usable civic address or shape"));
            }
        } else if f.is_location() {
            ignored += 1;
        }
    }
    if ignored > 0 {
        warnings.push(format!(
            "The <gp:geopriv> in {label} has {ignored} more <gp:location-info> element(s); RFC 4119 allows one, only the first is used."
        ));
    }
    result
}

/// RFC 4119 §2.2.2 usage rules. They do not change what we do with the location (we forward it
/// to the emergency service only), so problems here are warnings only.
pub(super) fn check_usage_rules(ur: Node, label: &str, warnings: &mut Vec<String>) {
    let mut misplaced: Vec<String> = Vec::new();
    for rule in ur.children().filter(Node::is_element) {
        let local = rule.tag_name().name();
        let known = matches!(local, "retransmission-allowed" | "retention-expiry" | "external-ruleset" | "note-well");
        if known && ns_of(rule) != ns::BASIC_POLICY {
            misplaced.push(format!("<{}>", display_name(rule)));
        }
        match local {
            "retransmission-allowed" => {
                let v = text_of(rule);
                let v = v.trim();
                match v {
                    "true" | "false" | "1" | "0" => {}
                    _ => match v.to_ascii_lowercase().as_str() {
                        "true" | "yes" => warnings.push(format!(
                            "<retransmission-allowed> in {label} is \"{}\", not an xs:boolean; read as true.",
                            quote(v)
                        )),
                        "false" | "no" => warnings.push(format!(
                            "<retransmission-allowed> in {label} is \"{}\", not an xs:boolean; read as false.",
                            quote(v)
                        )),
                        _ => warnings.push(format!(
                            "<retransmission-allowed> in {label} is \"{}\", not an xs:boolean; ignored.",
                            quote(v)
                        )),
                    },
                }
            }
            "retention-expiry" => check_datetime(&text_of(rule), &format!("<retention-expiry> in {label}"), warnings),
            _ if known => {}
            _ if ns_of(rule) == ns::BASIC_POLICY || ns_of(rule) == ns::PIDF || ns_of(rule).is_empty() => {
                warnings.push(format!("Unknown usage rule <{}> in {label} ignored.", display_name(rule)))
            }
            _ => {} // ##other extensions (e.g. common-policy rulesets) are allowed.
        }
    }
    if !misplaced.is_empty() {
        // RFC 4119 §2.3's own examples put them in the geopriv10 namespace; its schema does not.
        warnings.push(format!(
            "{} in {label} should be in the basicPolicy namespace {} (RFC 4119 §2.2.5); read anyway.",
            misplaced.join(", "),
            ns::BASIC_POLICY
        ));
    }
}

/// `xs:dateTime` check for timestamps and expiries: they are informative for us, so a bad one
/// is only reported.
pub(super) fn check_datetime(value: &str, what: &str, warnings: &mut Vec<String>) {
    let v = value.trim();
    if v.is_empty() {
        warnings.push(format!("{what} is empty."));
    } else if DateTime::parse_from_rfc3339(v).is_err() {
        if chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
            warnings.push(format!("{what} \"{}\" has no time zone, so the time is ambiguous.", quote(v)));
        } else {
            warnings.push(format!("{what} \"{}\" is not an xs:dateTime.", quote(v)));
        }
    }
}

/// One `<gp:location-info>`: the first civic address and the first geodetic shape in it
/// (RFC 5491 §3 rule #6 allows one of each as a compound location, e.g. a point plus a floor).
pub(super) fn parse_location_info(
    li: Node,
    label: &str,
    warnings: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> (Option<CivicAddress>, Option<GeoPoint>) {
    let mut civic: Option<CivicAddress> = None;
    let mut geo: Option<GeoPoint> = None;

    // `<gml:location>` is a wrapper used by RFC 4119 §2.3 and the RFC 6442 §5 examples.
    let mut items: Vec<Node> = Vec::new();
    for child in li.children().filter(Node::is_element) {
        let n = ns_of(child);
        if child.tag_name().name() == "location" && (n == ns::GML || n == ns::GML_3_0_OBSOLETE) {
            items.extend(child.children().filter(Node::is_element));
        } else {
            items.push(child);
        }
    }

    for item in items {
        let local = item.tag_name().name();
        match local {
            "civicAddress" => {
                let n = ns_of(item);
                if n == ns::CIVIC_LOC_OBSOLETE {
                    warnings.push(format!(
                        "The civic address in {label} uses RFC 4119's obsolete civicLoc namespace; read as RFC 5139."
                    ));
                } else if n != ns::CIVIC_ADDR {
                    warnings.push(format!(
                        "<civicAddress> in {label} is {} instead of {}; read anyway.",
                        describe_ns(item),
                        ns::CIVIC_ADDR
                    ));
                }
                if civic.is_some() {
                    warnings.push(format!("A second <civicAddress> in {label} was ignored."));
                    continue;
                }
                let c = parse_civic(item, warnings);
                if c.is_empty() {
                    problems.push(format!("the <civicAddress> in {label} is empty"));
                } else {
                    civic = Some(c);
                }
            }
            "Point" | "Polygon" | "Circle" | "Ellipse" | "ArcBand" | "Sphere" | "Ellipsoid" | "Prism" => {
                let expected = if matches!(local, "Point" | "Polygon") { ns::GML } else { ns::PIDFLO_SHAPES };
                let n = ns_of(item);
                if n == ns::GML_3_0_OBSOLETE {
                    warnings.push(format!(
                        "The <gml:{local}> in {label} uses GML 3.0 (RFC 4119 §2.3, historic); RFC 5491 requires GML 3.1.1."
                    ));
                } else if n != expected {
                    warnings.push(format!(
                        "<{local}> in {label} is {} instead of {expected}; read anyway.",
                        describe_ns(item)
                    ));
                }
                if geo.is_some() {
                    warnings
                        .push(format!("A second geodetic shape (<{}>) in {label} was ignored.", display_name(item)));
                    continue;
                }
                match parse_shape(item, local, warnings) {
                    Ok(g) => geo = Some(g),
                    Err(why) => {
                        let w = format!("the <{}> in {label} was not used: {why}", display_name(item));
                        warnings.push(format!("{}{}.", w[..1].to_uppercase(), &w[1..]));
                        problems.push(w);
                    }
                }
            }
            _ => warnings.push(format!(
                "<{}> in the location of {label} is not understood and was ignored.",
                display_name(item)
            )),
        }
    }
    (civic, geo)
}
