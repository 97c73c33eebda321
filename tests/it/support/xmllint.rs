//! Schema validation of PIDF-LO and HELD documents with xmllint (Debian package `libxml2-utils`),
//! against the RFC schemas copied into `tests/fixtures/pidf-lo/xsd/` and `tests/fixtures/held/xsd/`
//! (see their SOURCES.md).
//!
//! xmllint is a hard requirement of the tests that use this: when it is missing they panic
//! with an install hint instead of silently passing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures/pidf-lo` of this checkout.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pidf-lo")
}

/// `tests/fixtures/held` of this checkout.
pub fn held_fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/held")
}

/// Validates a PIDF-LO document against RFC 3863 / 4479 / 4119 / 5139 schemas (through the
/// local `pidf-lo-driver.xsd`, which imports them in an order libxml2 can compile).
///
/// `Ok(())` only when xmllint exits 0 *and* reports "validates"; otherwise `Err` with its
/// diagnostics (schema-compilation chatter about the W3C xml.xsd import left out).
pub fn validate_pidf_lo(xml: &str) -> Result<(), String> {
    let mut file = tempfile::Builder::new()
        .prefix("pidf-lo-")
        .suffix(".xml")
        .tempfile()
        .map_err(|e| format!("cannot create a temp file: {e}"))?;
    file.write_all(xml.as_bytes()).map_err(|e| format!("cannot write the temp file: {e}"))?;
    file.flush().map_err(|e| format!("cannot write the temp file: {e}"))?;
    validate_pidf_lo_file(file.path())
}

/// Same as [`validate_pidf_lo`] for a file on disk.
pub fn validate_pidf_lo_file(path: &Path) -> Result<(), String> {
    let xsd = fixtures_dir().join("xsd");
    run_xmllint(&xsd.join("pidf-lo-driver.xsd"), &xsd.join("catalog.xml"), path, "PIDF-LO")
}

/// Validates a HELD message (RFC 5985 §7 `locationRequest`, `locationResponse` or `error`, with
/// RFC 6155 device identity and sosdesk's attachment identifiers) through `held-driver.xsd`, which
/// also loads the PIDF-LO schemas: the PIDF-LO inside a `locationResponse` is checked with it.
///
/// Same contract as [`validate_pidf_lo`].
pub fn validate_held(xml: &str) -> Result<(), String> {
    let mut file = tempfile::Builder::new()
        .prefix("held-")
        .suffix(".xml")
        .tempfile()
        .map_err(|e| format!("cannot create a temp file: {e}"))?;
    file.write_all(xml.as_bytes()).map_err(|e| format!("cannot write the temp file: {e}"))?;
    file.flush().map_err(|e| format!("cannot write the temp file: {e}"))?;
    validate_held_file(file.path())
}

/// Same as [`validate_held`] for a file on disk.
pub fn validate_held_file(path: &Path) -> Result<(), String> {
    let xsd = held_fixtures_dir().join("xsd");
    run_xmllint(&xsd.join("held-driver.xsd"), &xsd.join("catalog.xml"), path, "HELD")
}

fn run_xmllint(schema: &Path, catalog: &Path, path: &Path, what: &str) -> Result<(), String> {
    let output = match Command::new("xmllint")
        .arg("--noout")
        .arg("--nonet")
        .arg("--schema")
        .arg(schema)
        .arg(path)
        // Resolves the schemas' http://www.w3.org/2001/xml.xsd import to the local copy.
        .env("XML_CATALOG_FILES", catalog)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "xmllint is not installed, so {what} schema validation cannot run. \
             Install it (Debian/Ubuntu: `apt-get install libxml2-utils`) and run the tests again."
        ),
        Err(e) => panic!("could not run xmllint: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let diagnostics: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| !l.contains("Schemas parser warning") && !l.trim().is_empty())
        .collect();
    let says_validates = diagnostics.iter().any(|l| l.trim_end().ends_with(" validates"));
    if output.status.success() && says_validates {
        Ok(())
    } else {
        Err(format!("xmllint exit status {}: {}", output.status, diagnostics.join("\n")))
    }
}
