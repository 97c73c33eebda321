//! The UI's TypeScript types are generated from the Rust types (ts-rs) and committed in
//! `ui/src/bindings/`. This test regenerates them into a scratch folder and fails when anything
//! differs, so a Rust change that the UI has not caught up with is caught by `cargo test`.
//! To accept a change: `UPDATE_BINDINGS=1 cargo test -p sosdesk-desk --test bindings`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sosdesk_desk::model::*;
use ts_rs::TS;

fn export_all(dir: &Path) {
    ActiveCall::export_all_to(dir).unwrap();
    DeskStatus::export_all_to(dir).unwrap();
    Settings::export_all_to(dir).unwrap();
    HistoryFilter::export_all_to(dir).unwrap();
    CallDetail::export_all_to(dir).unwrap();
    CallLeg::export_all_to(dir).unwrap();
    Playback::export_all_to(dir).unwrap();
    FloorPlanImage::export_all_to(dir).unwrap();
    sosdesk_desk::error::DeskError::export_all_to(dir).unwrap();
    sosdesk::events::CallEvent::export_all_to(dir).unwrap();
}

fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".ts") {
                files.insert(name, std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    files
}

#[test]
fn ui_bindings_match_the_rust_types() {
    let committed: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings");
    let scratch = tempfile::tempdir().unwrap();
    export_all(scratch.path());
    let generated = read_dir(scratch.path());
    assert!(generated.contains_key("ActiveCall.ts") && generated.contains_key("CallEvent.ts"));

    if std::env::var_os("UPDATE_BINDINGS").is_some() {
        std::fs::create_dir_all(&committed).unwrap();
        for old in read_dir(&committed).keys() {
            std::fs::remove_file(committed.join(old)).unwrap();
        }
        for (name, text) in &generated {
            std::fs::write(committed.join(name), text).unwrap();
        }
        return;
    }
    let current = read_dir(&committed);
    let mut drift = Vec::new();
    for (name, text) in &generated {
        match current.get(name) {
            None => drift.push(format!("missing: ui/src/bindings/{name}")),
            Some(t) if t != text => drift.push(format!("differs: ui/src/bindings/{name}")),
            _ => {}
        }
    }
    for name in current.keys().filter(|n| !generated.contains_key(*n)) {
        drift.push(format!("no longer generated: ui/src/bindings/{name}"));
    }
    assert!(
        drift.is_empty(),
        "the UI's TypeScript types have drifted from the Rust types:\n  {}\n\
         regenerate with: UPDATE_BINDINGS=1 cargo test -p sosdesk-desk --test bindings",
        drift.join("\n  ")
    );
}
