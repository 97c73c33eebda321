//! RFC 4180 for the Skype for Business CSV files: decoding the bytes (UTF-8 with or without a
//! BOM, UTF-16 with a BOM), reading records with the position of every syntax error, and writing a
//! record.
//!
//! Fields separated by `,`; records end with CRLF, LF or CR; a field in double quotes may contain
//! `,`, quotes (doubled) and line breaks; blank lines are skipped; a UTF-8 byte order mark is
//! dropped, and a UTF-16 file (with its BOM, as PowerShell's `Out-File` writes) is decoded. Other
//! encodings are refused with the position of the first bad byte. Written files: UTF-8 without a
//! BOM, a header row, CRLF, fields quoted only when needed. No spreadsheet formula guard (unlike
//! the audit export): this file is for re-import, and a changed value would not round-trip.
//!
//! The reader is hand-written rather than the `csv` crate's: that reader is lenient by design and
//! has no syntax errors (a quote inside an unquoted field is kept, text after a closing quote is
//! appended, an unclosed quote runs to the end of the file), does not allow white space around a
//! quoted field (`x, "y" ,z`), and counts lines by LF only. Each of those would change what an
//! import accepts, or where its errors are reported. The writer is ours too: the `csv` crate's does
//! not quote a field with surrounding white space, which this reader trims, so such values would
//! not round-trip.

use std::borrow::Cow;

/// The file as text: UTF-8 (a BOM dropped) or UTF-16 with a BOM. Err: (line, column, reason).
pub(super) fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, (usize, usize, String)> {
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

pub(super) struct SyntaxError {
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) reason: String,
}

/// RFC 4180 records over the decoded text. Fields borrow from the text unless they held doubled
/// quotes.
pub(super) struct Reader<'a> {
    s: &'a str,
    pos: usize,
    /// Line number of `pos`.
    pub(super) line: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(s: &'a str) -> Reader<'a> {
        Reader { s, pos: 0, line: 1 }
    }

    /// Moves past the end of the current line.
    pub(super) fn skip_line(&mut self) {
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
    pub(super) fn next(&mut self, fields: &mut Vec<Cow<'a, str>>) -> Option<Result<usize, SyntaxError>> {
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

/// Appends one CSV record and its CRLF (RFC 4180 §2.1); a field is quoted, with its quotes doubled,
/// only when it contains a separator, a quote or a line break, or has surrounding white space
/// (which the reader would otherwise trim).
pub(super) fn push_record<'a>(line: &mut String, fields: impl Iterator<Item = &'a str>) {
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
    fn written_fields_are_quoted_only_when_needed() {
        let mut s = String::new();
        push_record(&mut s, ["a", "b,c", "say \"x\"", " pad", ""].into_iter());
        assert_eq!(s, "a,\"b,c\",\"say \"\"x\"\"\",\" pad\",\r\n");
    }
}
