//! XML text rules shared by the PIDF-LO writer and reader (and HELD): escaping (XML 1.0 §2.4,
//! §3.3.3), allowed characters and names (XML 1.0 §2.2, §2.3; `xs:ID`), `xs:token` whitespace
//! collapsing, a minimal indenting writer, and how the reader names elements and quotes
//! caller-supplied text in its warnings.

use roxmltree::Node;

use super::ns;

/// Longest element value quoted back in a warning.
const QUOTE_MAX: usize = 120;

/// Minimal indenting XML writer: every piece of text and every attribute value goes through
/// the escaping functions, so nothing an admin or a caller typed can become markup.
#[derive(Default)]
pub(super) struct XmlWriter {
    pub(super) out: String,
    pub(super) depth: usize,
}

impl XmlWriter {
    pub(super) fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    pub(super) fn start_tag(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(&mut self.out, v, true);
            self.out.push('"');
        }
        self.out.push('>');
    }

    pub(super) fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start_tag(tag, attrs);
        self.out.push('\n');
        self.depth += 1;
    }

    pub(super) fn close(&mut self, tag: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }

    pub(super) fn leaf(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start_tag(tag, attrs);
        escape_into(&mut self.out, text, false);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }
}

/// XML-escapes `s` (XML 1.0 §2.4 and §3.3.3):
/// * `& < > " '` become entity references, in text and attributes alike;
/// * characters XML 1.0 forbids (C0 controls other than tab/LF/CR, U+FFFE, U+FFFF) become
///   U+FFFD, since no escape can carry them and they would make the document not well-formed;
/// * CR always, and tab/LF inside attributes, become character references so that end-of-line
///   and attribute-value normalisation do not change them.
pub(crate) fn escape_into(out: &mut String, s: &str, attribute: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            c if !is_xml_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// XML 1.0 §2.2 `Char`.
pub(super) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// XML Schema `xs:ID` = `NCName` (Namespaces in XML §3, XML 1.0 §2.3 without ':').
pub(super) fn is_xs_id(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if is_name_start_char(c) => chars.all(is_name_char),
        _ => false,
    }
}

/// XML 1.0 (5th ed.) §2.3 `NameStartChar`, minus ':'.
pub(super) fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (5th ed.) §2.3 `NameChar`, minus ':'.
pub(super) fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// `xs:token` whitespace collapsing (RFC 5139 §3.6; XML Schema Part 2 §4.3.6): only space, tab, CR and LF
/// count as whitespace, so a no-break space in a name survives.
pub(crate) fn collapse_ws(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for part in s.split([' ', '\t', '\n', '\r']).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

/// All text directly inside an element (several nodes when comments split it, as in the
/// RFC 5491 §5.2.8 posList).
pub(super) fn text_of(node: Node) -> String {
    node.children().filter(|c| c.is_text()).filter_map(|c| c.text()).collect()
}

/// Namespace of an element, trimmed: RFC 4119's own example declares " urn:…civicLoc" with a
/// leading space.
pub(super) fn ns_of<'a>(node: Node<'a, '_>) -> &'a str {
    node.tag_name().namespace().unwrap_or("").trim()
}

/// Conventional prefix for the namespaces we know, for messages a person reads.
pub(super) fn prefix_for(ns_uri: &str) -> Option<&'static str> {
    Some(match ns_uri {
        ns::PIDF => "",
        ns::DATA_MODEL => "dm:",
        ns::GEOPRIV10 => "gp:",
        ns::BASIC_POLICY => "gbp:",
        ns::CIVIC_ADDR => "ca:",
        ns::CIVIC_ADDR_EXT => "cae:",
        ns::CIVIC_LOC_OBSOLETE => "cl:",
        ns::GML | ns::GML_3_0_OBSOLETE => "gml:",
        ns::PIDFLO_SHAPES => "gs:",
        "urn:ietf:params:xml:ns:geopriv:conf" => "con:",
        "urn:ietf:params:xml:ns:pidf:geopriv10:dynamic" => "dyn:",
        _ => return None,
    })
}

/// `dm:device`, `status`, or `{urn:x}thing` for unknown namespaces.
pub(super) fn display_name(node: Node) -> String {
    let local = node.tag_name().name();
    let n = ns_of(node);
    match prefix_for(n) {
        Some(p) => format!("{p}{local}"),
        None if n.is_empty() => local.to_string(),
        None => format!("{{{}}}{local}", quote(n)),
    }
}

pub(super) fn describe_ns(node: Node) -> String {
    match ns_of(node) {
        "" => "in no namespace".to_string(),
        n => format!("in namespace {}", quote(n)),
    }
}

/// Caller-supplied text quoted in a warning: bounded in length, control characters replaced.
/// (Warnings are shown as text, never markup — DESIGN "Nobody listens in uninvited".)
pub(crate) fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(QUOTE_MAX).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if s.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out
}

pub(super) fn looks_like_uri(s: &str) -> bool {
    // RFC 3986 §3.1: scheme ":" …, scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    let Some((scheme, rest)) = s.split_once(':') else { return false };
    let mut chars = scheme.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !s.chars().any(|c| c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_quotes_and_forbidden_chars() {
        let mut s = String::new();
        escape_into(&mut s, "<b>&\"'x\u{1}\u{FFFF}\r", false);
        assert_eq!(s, "&lt;b&gt;&amp;&quot;&apos;x\u{FFFD}\u{FFFD}&#13;");
        let mut a = String::new();
        escape_into(&mut a, "a\tb\nc", true);
        assert_eq!(a, "a&#9;b&#10;c");
        let mut t = String::new();
        escape_into(&mut t, "a\tb\nc", false);
        assert_eq!(t, "a\tb\nc");
    }
}
