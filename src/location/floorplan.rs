//! Floor plans (issue 16 item 4): an ERL may carry an image of its floor (PNG or SVG) and the
//! point on it where the ERL is, so that the desk shows the officer a pin on the plan.
//!
//! The image is hostile until checked: it comes from a file an admin was handed, and it is shown
//! on every desk. [`check_image`] is the one gate, used when a plan is stored (`lis floorplan
//! set`, the CSV import) and again before the API serves one:
//!
//! - a PNG must be a PNG: the signature, then well-formed chunks from `IHDR` to `IEND`
//!   (PNG spec §5.2–5.3), with a sane size;
//! - an SVG is untrusted XML. It is parsed (no DTD: no entity expansion, no external entities)
//!   and refused — not rewritten — when it holds anything active or anything that would load
//!   from elsewhere: elements other than static SVG drawing elements (`script`, `foreignObject`,
//!   animation, `iframe` …), elements of other namespaces (an XHTML `script` runs in an XML
//!   document), event-handler attributes (`on…`), references that leave the document (`href`
//!   not `#…`, `url(…)` not `url(#…)`, CSS `@import`), `javascript:` anywhere. A floor plan is a
//!   drawing; a file that needs more than that is not one. Refusing says why, so the admin can
//!   export the plan again (or as PNG).
//!
//! The desk then shows a plan only through an `<img>` element (where an SVG runs no script and
//! loads nothing), and the API serves it with a Content-Security-Policy that forbids both and
//! `nosniff` (`crate::api`): three walls, each enough alone.

use serde::{Deserialize, Serialize};

/// Largest image accepted (4 MiB): a floor plan exported at screen resolution is far smaller;
/// every desk receives it with an alert.
pub const MAX_IMAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest PNG width or height accepted: bounds what a decoder allocates for a tiny file that
/// claims to be huge (a "decompression bomb").
pub const MAX_PNG_SIDE: u32 = 16_384;

/// Where an ERL is on its floor plan: the plan (its SHA-256, which is its id in the store and in
/// the API) and the point, as fractions of the image's width and height from its top-left
/// corner (0 ≤ x, y ≤ 1), so the pin stays on its spot however large the plan is drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct FloorPlanPin {
    /// Lower-hex SHA-256 of the image: `GET /api/v1/floor-plans/{plan}`.
    pub plan: String,
    pub x: f64,
    pub y: f64,
}

/// The coordinates are always finite (checked by [`FloorPlanPin::new`] and the store's CHECKs),
/// so equality is an equivalence and `Erl` can stay `Eq`.
impl Eq for FloorPlanPin {}

impl FloorPlanPin {
    /// A pin, or why the point is not on the plan.
    pub fn new(plan: String, x: f64, y: f64) -> Result<FloorPlanPin, String> {
        check_fraction("x", x)?;
        check_fraction("y", y)?;
        Ok(FloorPlanPin { plan, x, y })
    }
}

/// The two kinds of image a floor plan may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaType {
    Png,
    Svg,
}

impl MediaType {
    pub fn as_str(&self) -> &'static str {
        match self {
            MediaType::Png => "image/png",
            MediaType::Svg => "image/svg+xml",
        }
    }

    pub fn parse(s: &str) -> Option<MediaType> {
        match s {
            "image/png" => Some(MediaType::Png),
            "image/svg+xml" => Some(MediaType::Svg),
            _ => None,
        }
    }
}

/// A floor-plan image that passed [`check_image`].
#[derive(Debug, Clone, PartialEq)]
pub struct FloorPlanImage {
    pub media_type: MediaType,
    pub bytes: Vec<u8>,
    /// Lower-hex SHA-256 of `bytes`: the plan's id.
    pub sha256: String,
    /// Width and height in pixels (PNG; the SVG's `width`/`height` or `viewBox` when given).
    pub size: Option<(f64, f64)>,
}

/// `size` is finite (parsed and checked), so equality is an equivalence.
impl Eq for FloorPlanImage {}

/// A coordinate on the plan: a fraction of its width or height.
pub fn check_fraction(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{name} = {v}: a point on the plan is given as a fraction of its width (x) or height (y) from the \
             top-left corner, 0 to 1 (pixel {name} / image {})",
            if name == "x" { "width" } else { "height" }
        ))
    }
}

/// Checks that `bytes` are a PNG or a harmless SVG (see the module documentation), or says why
/// not. The kind is found from the content, never from a file name.
pub fn check_image(bytes: Vec<u8>) -> Result<FloorPlanImage, String> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "{} bytes: a floor plan may have at most {} MiB (export it at a lower resolution, or as SVG)",
            bytes.len(),
            MAX_IMAGE_BYTES / (1024 * 1024)
        ));
    }
    let (media_type, size) = if bytes.starts_with(PNG_SIGNATURE) {
        let (w, h) = check_png(&bytes).map_err(|e| format!("not a valid PNG: {e}"))?;
        (MediaType::Png, Some((w as f64, h as f64)))
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            "neither a PNG (no PNG signature) nor an SVG (not UTF-8 text): a floor plan is a PNG or SVG image"
                .to_string()
        })?;
        (MediaType::Svg, check_svg(text).map_err(|e| format!("SVG refused: {e}"))?)
    };
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    Ok(FloorPlanImage { media_type, bytes, sha256, size })
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The PNG's width and height, after walking its chunks (PNG spec §5.3: length, type, data,
/// CRC): `IHDR` first with a sane size, chunk types of four ASCII letters, `IEND` last, nothing
/// cut short.
fn check_png(b: &[u8]) -> Result<(u32, u32), String> {
    let mut at = PNG_SIGNATURE.len();
    let mut size = None;
    loop {
        let header = b.get(at..at + 8).ok_or("the file ends before its IEND chunk")?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(format!("a chunk at byte {at} has no valid type"));
        }
        let data = b.get(at + 8..at + 8 + len).ok_or("a chunk runs past the end of the file")?;
        b.get(at + 8 + len..at + 12 + len).ok_or("a chunk's CRC runs past the end of the file")?;
        if size.is_none() {
            if kind != b"IHDR" || len != 13 {
                return Err("the first chunk is not IHDR".into());
            }
            let w = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            let h = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            if w == 0 || h == 0 || w > MAX_PNG_SIDE || h > MAX_PNG_SIDE {
                return Err(format!("{w}×{h} pixels: each side must be 1 to {MAX_PNG_SIDE}"));
            }
            size = Some((w, h));
        }
        at += 12 + len;
        if kind == b"IEND" {
            return size.ok_or_else(|| "no IHDR chunk".into());
        }
    }
}

/// The SVG namespace (SVG 1.1 §5.1).
const SVG_NS: &str = "http://www.w3.org/2000/svg";

/// Namespaces of editors' bookkeeping (Inkscape, Sodipodi, RDF metadata): nothing in them is
/// rendered or run, and real floor plans carry them.
const EDITOR_NS: [&str; 5] = [
    "http://www.inkscape.org/namespaces/inkscape",
    "http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd",
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "http://creativecommons.org/ns#",
    "http://purl.org/dc/elements/1.1/",
];

/// The static SVG elements a drawing is made of (SVG 1.1 shapes, text, structure, paint servers,
/// clipping, masking, markers, filters). Everything else is refused — `script`, `foreignObject`,
/// the animation elements (which can set an `href` to `javascript:`), `a`, `iframe`, `audio` ….
const SVG_ELEMENTS: &[&str] = &[
    "svg",
    "g",
    "defs",
    "title",
    "desc",
    "metadata",
    "symbol",
    "use",
    "switch",
    "path",
    "rect",
    "circle",
    "ellipse",
    "line",
    "polyline",
    "polygon",
    "text",
    "tspan",
    "textPath",
    "image",
    "style",
    "linearGradient",
    "radialGradient",
    "stop",
    "pattern",
    "clipPath",
    "mask",
    "marker",
    "filter",
    "feBlend",
    "feColorMatrix",
    "feComponentTransfer",
    "feComposite",
    "feConvolveMatrix",
    "feDiffuseLighting",
    "feDisplacementMap",
    "feDistantLight",
    "feFlood",
    "feFuncA",
    "feFuncB",
    "feFuncG",
    "feFuncR",
    "feGaussianBlur",
    "feMerge",
    "feMergeNode",
    "feMorphology",
    "feOffset",
    "fePointLight",
    "feSpecularLighting",
    "feSpotLight",
    "feTile",
    "feTurbulence",
    "feDropShadow",
];

/// An SVG's size when it says it (`width`/`height` in user units or px, else its `viewBox`), or
/// why it is refused.
fn check_svg(text: &str) -> Result<Option<(f64, f64)>, String> {
    // roxmltree refuses a DTD by default (`ParsingOptions::allow_dtd`): no entity expansion
    // ("billion laughs"), no external entities.
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not well-formed XML without a DTD: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" || root.tag_name().namespace() != Some(SVG_NS) {
        return Err(format!("the root element is <{}>, not an SVG <svg> element", root.tag_name().name()));
    }
    for node in doc.descendants() {
        let line = doc.text_pos_at(node.range().start).row;
        if node.node_type() == roxmltree::NodeType::PI {
            // <?xml-stylesheet?> loads a style sheet from elsewhere.
            return Err(format!("line {line}: a processing instruction (<?…?>): not allowed in a floor plan"));
        }
        if node.is_text() && node.parent().is_some_and(|p| p.tag_name().name() == "style") {
            check_css(node.text().unwrap_or(""), line)?;
        }
        if !node.is_element() {
            continue;
        }
        let tag = node.tag_name();
        let name = tag.name();
        match tag.namespace() {
            Some(SVG_NS) if SVG_ELEMENTS.contains(&name) => {}
            Some(SVG_NS) => {
                return Err(format!(
                    "line {line}: a <{name}> element: a floor plan may hold drawing elements only (no scripts, \
                     foreignObject, links or animation)"
                ))
            }
            Some(ns) if EDITOR_NS.contains(&ns) => {}
            ns => {
                return Err(format!(
                    "line {line}: a <{name}> element of namespace {}: only SVG drawing elements are allowed",
                    ns.unwrap_or("(none)")
                ))
            }
        }
        for a in node.attributes() {
            let (aname, value) = (a.name(), a.value());
            let lower = value.to_ascii_lowercase();
            // By characters' bytes without slicing: an attribute name may start with any letter.
            if aname.len() > 2 && aname.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("on")) {
                return Err(format!("line {line}: an event handler attribute {aname}= on <{name}>: not allowed"));
            }
            if lower.replace(|c: char| c.is_ascii_whitespace(), "").contains("javascript:") {
                return Err(format!("line {line}: a javascript: URL in {aname}= on <{name}>: not allowed"));
            }
            if aname == "href" {
                let local = value.starts_with('#');
                let embedded_png = name == "image"
                    && (lower.starts_with("data:image/png;base64,") || lower.starts_with("data:image/jpeg;base64,"));
                if !local && !embedded_png {
                    return Err(format!(
                        "line {line}: <{name}> refers to {}: a floor plan may refer only to its own parts (#id) \
                         and embed PNG or JPEG images (data:)",
                        value.chars().take(60).collect::<String>()
                    ));
                }
            }
            if aname == "style" || lower.contains("url(") {
                check_css(value, line)?;
            }
        }
    }
    Ok(svg_size(&root))
}

/// CSS in an SVG (a `<style>` element, a `style=` attribute, a `fill="url(…)"`): only references
/// to the document's own parts.
fn check_css(css: &str, line: u32) -> Result<(), String> {
    let lower = css.to_ascii_lowercase();
    // CSS escapes (`\75 rl(`, `@\69mport`) would spell what the checks below look for.
    if lower.contains('\\') {
        return Err(format!("line {line}: an escape (\\) in CSS: not allowed in a floor plan"));
    }
    if lower.contains("image-set(") || lower.contains("image(") {
        return Err(format!("line {line}: a CSS image(): a floor plan may not load anything"));
    }
    if lower.contains("@import") {
        return Err(format!("line {line}: a CSS @import: a floor plan may not load anything"));
    }
    if lower.contains("expression(") || lower.contains("javascript:") {
        return Err(format!("line {line}: script in CSS: not allowed"));
    }
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("url(") {
        let arg = rest[i + 4..].trim_start().trim_start_matches(['"', '\'']);
        if !arg.starts_with('#') {
            return Err(format!(
                "line {line}: a CSS url() to {}: a floor plan may refer only to its own parts (url(#id))",
                arg.chars().take(40).collect::<String>()
            ));
        }
        rest = &rest[i + 4..];
    }
    Ok(())
}

/// `width`/`height` when both are plain numbers (or px), else the `viewBox`'s.
fn svg_size(root: &roxmltree::Node) -> Option<(f64, f64)> {
    let num = |s: &str| s.trim().trim_end_matches("px").parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0);
    if let (Some(w), Some(h)) = (root.attribute("width").and_then(num), root.attribute("height").and_then(num)) {
        return Some((w, h));
    }
    let vb: Vec<f64> = root
        .attribute("viewBox")?
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (vb.len() == 4 && vb[2] > 0.0 && vb[3] > 0.0).then(|| (vb[2], vb[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2×1 PNG (one IHDR, one IDAT, IEND), as a PNG encoder writes it.
    pub(crate) fn tiny_png() -> Vec<u8> {
        let mut b = PNG_SIGNATURE.to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            b.extend((data.len() as u32).to_be_bytes());
            b.extend(kind);
            b.extend(data);
            b.extend([0, 0, 0, 0]); // CRC (not checked: a bad one harms nobody, the decoder refuses it)
        };
        chunk(b"IHDR", &[0, 0, 0, 2, 0, 0, 0, 1, 8, 2, 0, 0, 0]);
        chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
        chunk(b"IEND", &[]);
        b
    }

    #[test]
    fn a_png_is_checked_to_be_a_png() {
        let img = check_image(tiny_png()).unwrap();
        assert_eq!(img.media_type, MediaType::Png);
        assert_eq!(img.size, Some((2.0, 1.0)));
        assert_eq!(img.sha256.len(), 64);

        let mut cut = tiny_png();
        cut.truncate(cut.len() - 6);
        assert!(check_image(cut).unwrap_err().contains("not a valid PNG"));
        let mut huge = tiny_png();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(check_image(huge).unwrap_err().contains("each side must be"));
        let fake = b"\x89PNG\r\n\x1a\n<script>alert(1)</script>".to_vec();
        assert!(check_image(fake).unwrap_err().contains("not a valid PNG"));
        assert!(check_image(vec![0xff, 0xd8, 0xff, 0xe0]).unwrap_err().contains("neither a PNG"));
        assert!(check_image(vec![0; MAX_IMAGE_BYTES + 1]).unwrap_err().contains("at most 4 MiB"));
    }

    #[test]
    fn a_plain_svg_drawing_is_accepted_with_its_size() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" viewBox="0 0 400 200">
            <style>.wall { stroke: #333; fill: url(#hatch) }</style>
            <defs><pattern id="hatch" width="4" height="4"><path d="M0 0L4 4"/></pattern></defs>
            <g inkscape:label="walls"><rect class="wall" x="0" y="0" width="400" height="200"/></g>
            <text x="10" y="20">Room 212</text><use href="#hatch"/>
        </svg>"##;
        let img = check_image(svg.as_bytes().to_vec()).unwrap();
        assert_eq!(img.media_type, MediaType::Svg);
        assert_eq!(img.size, Some((400.0, 200.0)));
    }

    #[test]
    fn hostile_svgs_are_refused_with_the_reason() {
        let wrap =
            |body: &str| format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">{body}</svg>"#);
        for (body, why) in [
            ("<script>alert(1)</script>", "<script> element"),
            (r#"<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>"#, "<foreignObject>"),
            (r#"<rect onclick="alert(1)"/>"#, "event handler attribute onclick"),
            (r#"<image href="http://tracker.example/p.png"/>"#, "refers to http://tracker.example"),
            (
                r#"<use xmlns:x="http://www.w3.org/1999/xlink" x:href="https://evil.example/a.svg#x"/>"#,
                "refers to https://evil",
            ),
            (r#"<set attributeName="href" to="javascript:alert(1)"/>"#, "<set> element"),
            (r#"<rect fill="javascript:alert(1)"/>"#, "javascript: URL"),
            (r#"<animate attributeName="x" to="1"/>"#, "<animate> element"),
            (
                r#"<h:script xmlns:h="http://www.w3.org/1999/xhtml">alert(1)</h:script>"#,
                "namespace http://www.w3.org/1999/xhtml",
            ),
            ("<style>@import url(https://evil.example/x.css);</style>", "@import"),
            (r#"<rect style="fill: url( 'https://evil.example/p' )"/>"#, "CSS url() to https://evil"),
            (r#"<rect fill="url(http://evil.example/#p)"/>"#, "CSS url() to http://evil"),
            (r##"<a href="#x"><rect/></a>"##, "<a> element"),
            // CSS escapes spell url( and @import past a plain search.
            (r#"<rect style="fill: \75 rl(https://evil.example/p)"/>"#, "an escape"),
            (r"<style>@\69mport 'https://evil.example/x.css';</style>", "an escape"),
            (r#"<rect style="fill: image-set('https://evil.example/p.png' 1x)"/>"#, "image()"),
        ] {
            let err = check_image(wrap(body).into_bytes()).unwrap_err();
            assert!(err.starts_with("SVG refused: line 1: "), "{body}: {err}");
            assert!(err.contains(why), "{body}: {err}");
        }
        let dtd = r#"<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>"#;
        assert!(check_image(dtd.as_bytes().to_vec()).unwrap_err().contains("without a DTD"));
        let pi = r#"<?xml-stylesheet href="https://evil.example/x.css"?><svg xmlns="http://www.w3.org/2000/svg"/>"#;
        assert!(check_image(pi.as_bytes().to_vec()).unwrap_err().contains("processing instruction"));
        // A non-ASCII attribute name is only a name (no panic on its first bytes).
        let wide = wrap(r#"<rect 中x="1" width="1" height="1"/>"#);
        assert!(check_image(wide.into_bytes()).is_ok());
        let html = "<html><script>alert(1)</script></html>";
        assert!(check_image(html.as_bytes().to_vec()).unwrap_err().contains("not an SVG <svg> element"));
    }

    #[test]
    fn a_pin_is_on_the_plan() {
        assert!(FloorPlanPin::new("p".into(), 0.5, 1.0).is_ok());
        assert!(FloorPlanPin::new("p".into(), 1.5, 0.0).unwrap_err().contains("fraction of its width"));
        assert!(FloorPlanPin::new("p".into(), 0.0, f64::NAN).is_err());
    }
}
