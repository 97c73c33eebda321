//! The page names only generic font families (`sans-serif`, `monospace`, …), which fontconfig
//! resolves to fonts the machine has. WebKitGTK tries each named family of a `font-family` list
//! in turn, for every new size and weight the page draws, and a family the machine lacks costs
//! it ~120 fontconfig matches (the family's aliases checked one by one). A first alert draws
//! several new sizes at once: a list like `system-ui, "Segoe UI", Roboto, …, sans-serif` made it
//! ~60 ms slower (release build) on a Debian desktop without those fonts (BENCHMARKS.md, "the fonts a first
//! alert asks for"). This test fails when a named family comes back into the page's styles.

use std::path::{Path, PathBuf};

/// CSS generic families (CSS Fonts 4 §4.2), less `system-ui` and the `ui-*` ones: WebKitGTK
/// turns those into a named family (GTK's font setting, "Cantarell" when no desktop sets one),
/// which costs the same as any other when it is not installed.
const GENERIC: &[&str] = &["serif", "sans-serif", "monospace", "cursive", "fantasy", "math", "emoji", "fangsong"];

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui")
}

/// Every file the page's styles can come from: the style sheets, the HTML and the TypeScript
/// (inline styles, canvas fonts).
fn style_sources() -> Vec<PathBuf> {
    let mut files = vec![ui_dir().join("index.html")];
    let src = ui_dir().join("src");
    for e in std::fs::read_dir(&src).expect("ui/src").flatten() {
        let p = e.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("css" | "ts")) {
            files.push(p);
        }
    }
    files
}

/// The families of each `font-family:` declaration in `text`, with where they were found.
fn font_families(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("font-family") {
            rest = &rest[i + "font-family".len()..];
            let Some(value) = rest.trim_start().strip_prefix(':') else {
                continue;
            };
            let end = value.find([';', '}']).unwrap_or(value.len());
            let families = value[..end]
                .split(',')
                .map(|f| f.trim().trim_matches(|c| c == '"' || c == '\'').to_ascii_lowercase())
                .filter(|f| !f.is_empty() && f != "inherit")
                .collect();
            out.push((n + 1, families));
        }
    }
    out
}

#[test]
fn the_page_names_only_generic_font_families() {
    let mut checked = 0;
    let mut named = Vec::new();
    for file in style_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, families) in font_families(&text) {
            checked += 1;
            for f in families.iter().filter(|f| !GENERIC.contains(&f.as_str())) {
                named.push(format!("{}:{line}: {f}", file.display()));
            }
        }
    }
    assert!(checked >= 2, "the body's and the audit hashes' font-family were not found ({checked} found)");
    assert!(
        named.is_empty(),
        "font families fontconfig may lack, each a cost on every new font size:\n{}",
        named.join("\n")
    );
}

#[test]
fn a_named_family_is_found() {
    let css = "body {\n  font-family: system-ui, \"Segoe UI\", sans-serif;\n}\ntd { font-family: monospace; }";
    assert_eq!(
        font_families(css),
        vec![
            (2, vec!["system-ui".to_string(), "segoe ui".to_string(), "sans-serif".to_string()]),
            (4, vec!["monospace".to_string()])
        ]
    );
}
