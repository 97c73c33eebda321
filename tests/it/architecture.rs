//! The invariants ARCHITECTURE.md states, checked on the source text: they fail the build the
//! day a change breaks one, instead of going stale in a document.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (or `dir` itself when it is a file).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The code of a file without comments and without its `#[cfg(test)]` items (unit tests may
/// read a clock or bind a socket: they are the I/O shell of the code they test). A test module
/// is the `#[cfg(test)]` line and everything after it in this code base (tests come last), or a
/// `tests.rs` file of its own.
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn src(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(p)
}

/// The sans-I/O cores never read a clock: time is an input (`clock::Now`).
#[test]
fn sans_io_cores_never_read_a_clock() {
    let cores = [
        "routing",
        "sip/transaction.rs",
        "sip/digest.rs",
        "sip/dialog.rs",
        "sip/parse.rs",
        "notify",
        "registrar.rs",
        "media/session.rs",
        "media/mixer.rs",
        "location/resolve.rs",
        "location/sitemap.rs",
        "policy.rs",
        "access.rs",
        "events.rs",
    ];
    let mut found = Vec::new();
    for core in cores {
        for f in rust_files(&src(core)) {
            let code = production_code(&f);
            for pat in ["Instant::now", "Utc::now", "SystemTime::now", "Local::now", "tokio::time"] {
                if code.contains(pat) {
                    found.push(format!("{}: {pat}", f.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "clock reads in sans-I/O code: {found:#?}");
}

/// The engine never binds or opens a socket: the server hands it RTP ports and sends its bytes.
#[test]
fn the_engine_never_touches_a_socket() {
    let mut found = Vec::new();
    for f in rust_files(&src("routing")) {
        let code = production_code(&f);
        for pat in ["::bind(", "tokio::net", "TcpStream", "TcpListener", "std::net::UdpSocket::"] {
            if code.contains(pat) {
                found.push(format!("{}: {pat}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "socket calls in the engine: {found:#?}");
}

/// Modules import only modules below them: the data flows one way (sip → policy → location →
/// routing → media / notify / audit), and the vocabulary everyone shares sits at the bottom.
/// Listed bottom-up: each module may use only modules listed before it.
const LAYERS: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("time", &[]),
    ("db", &[]),
    ("access", &[]),
    ("sip", &[]),
    ("media", &[]),
    ("location", &["db", "time"]),
    ("events", &["location", "sip"]),
    ("registrar", &["sip"]),
    ("notify", &["events", "location", "registrar", "sip"]),
    ("channels", &["events", "location", "notify", "sip"]),
    ("config", &["channels", "db", "location", "notify", "sip"]),
    ("policy", &["config", "location", "notify"]),
    ("audit", &["db", "events", "location", "time"]),
    ("routing", &["access", "clock", "config", "events", "location", "media", "notify", "policy", "registrar", "sip"]),
    ("intake", &["routing", "sip"]),
    ("core_handle", &["audit", "config", "events", "location", "routing", "sip"]),
    ("shared", &["audit", "core_handle", "db", "events", "routing", "sip"]),
    ("transport", &["config", "core_handle", "intake", "sip"]),
    ("dns", &["config", "core_handle", "sip", "transport"]),
    ("watchdog", &["audit", "core_handle"]),
    (
        "reach",
        &[
            "audit",
            "channels",
            "config",
            "core_handle",
            "db",
            "dns",
            "events",
            "media",
            "notify",
            "shared",
            "sip",
            "time",
            "transport",
        ],
    ),
    (
        "api",
        &[
            "access",
            "audit",
            "channels",
            "clock",
            "config",
            "core_handle",
            "events",
            "location",
            "reach",
            "routing",
            "shared",
            "sip",
            "transport",
        ],
    ),
];

#[test]
fn every_module_has_its_place_in_the_layers() {
    // The I/O shell at the top (server) and the crate roots may use anything.
    let top = ["server", "lib", "main"];
    let dir = std::fs::read_dir(src("")).expect("src");
    let mut missing = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if !top.contains(&name.as_str()) && !LAYERS.iter().any(|(m, _)| *m == name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "modules missing from LAYERS: {missing:?}");
}

#[test]
fn no_upward_imports_and_no_cycles() {
    // The table itself is bottom-up, so following it can never go round in a circle.
    for (i, (module, allowed)) in LAYERS.iter().enumerate() {
        let below: BTreeSet<&str> = LAYERS[..i].iter().map(|(m, _)| *m).collect();
        for a in *allowed {
            assert!(below.contains(a), "{module} may use {a}, which is not below it in LAYERS");
        }
    }
    let mut found = Vec::new();
    for (module, allowed) in LAYERS {
        let path = if src(module).is_dir() { src(module) } else { src(&format!("{module}.rs")) };
        for f in rust_files(&path) {
            let code = production_code(&f);
            for (i, _) in code.match_indices("crate::") {
                let name: String =
                    code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if name != *module && !allowed.contains(&name.as_str()) {
                    found.push(format!("{}: crate::{name}", f.display()));
                }
            }
        }
    }
    found.dedup();
    assert!(found.is_empty(), "imports against the layering: {found:#?}");
}

/// The engine is split by phase: no file of it is a second 1,600-line engine.
#[test]
fn engine_files_stay_small() {
    for f in rust_files(&src("routing")) {
        let lines = production_code(&f).lines().filter(|l| !l.trim().is_empty()).count();
        assert!(lines <= 600, "{} has {lines} lines of non-test code", f.display());
    }
}
