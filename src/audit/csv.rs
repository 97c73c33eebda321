//! CSV output for the audit export (RFC 4180), safe to open in a spreadsheet.

use std::borrow::Cow;
use std::io::{self, Write};

/// Writes one record: fields separated by `,`, the line ended by CRLF (RFC 4180 §2.1).
pub(crate) fn write_record<W: Write + ?Sized>(out: &mut W, fields: &[&str]) -> io::Result<()> {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        out.write_all(field(f).as_bytes())?;
    }
    out.write_all(b"\r\n")
}

/// One field, neutralised and quoted as needed.
///
/// Formula injection: spreadsheet programs run a cell that starts with `=`, `+`, `-` or `@` as a
/// formula (`=cmd|' /C calc'!A0` starts a program through DDE), and caller display names come
/// straight from the caller's SIP signalling. Such a field gets a leading `'`, which makes the
/// spreadsheet show it as text. Tab and CR are treated the same way, as OWASP advises, because some
/// programs strip them before looking for the formula sign. The cost is visible: an E.164 caller
/// number `+15551234567` exports as `'+15551234567`. Nothing else in the export (sequence numbers,
/// timestamps, hex hashes) starts with one of these characters.
///
/// Quoting (RFC 4180 §2.5–2.7): a field containing `,`, `"`, CR or LF is enclosed in double quotes
/// and each `"` in it is doubled.
pub(crate) fn field(s: &str) -> Cow<'_, str> {
    let risky = matches!(s.chars().next(), Some('=' | '+' | '-' | '@' | '\t' | '\r'));
    let s: Cow<'_, str> = if risky { Cow::Owned(format!("'{s}")) } else { Cow::Borrowed(s) };
    if s.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fields_are_unchanged() {
        assert_eq!(field("Alice Example"), "Alice Example");
        assert_eq!(field(""), "");
        assert_eq!(field("it's"), "it's");
    }

    #[test]
    fn separators_and_quotes_are_quoted() {
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("line1\nline2"), "\"line1\nline2\"");
        assert_eq!(field("cr\rhere"), "\"cr\rhere\"");
    }

    #[test]
    fn formula_starts_are_neutralised() {
        assert_eq!(field("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(field("+15551234567"), "'+15551234567");
        assert_eq!(field("-1"), "'-1");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(field("\t=1"), "'\t=1");
        // Neutralised and then quoted: the quote goes inside.
        assert_eq!(field("=1,2"), "\"'=1,2\"");
        // Only the first character matters.
        assert_eq!(field("a=1"), "a=1");
    }

    #[test]
    fn record_is_crlf_terminated() {
        let mut out = Vec::new();
        write_record(&mut out, &["1", "a,b", "=x"]).unwrap();
        assert_eq!(out, b"1,\"a,b\",'=x\r\n");
    }
}
