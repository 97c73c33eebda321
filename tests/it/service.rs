//! The systemd unit (`examples/systemd/sosdesk.service`, docs/deploy.md) is one systemd takes:
//! `systemd-analyze verify` with no complaint (an unknown or misspelt key is only a warning
//! there, so any output fails the test), with the binary this build made.

use std::process::Command;

use crate::support::lab::repo;

#[test]
fn the_systemd_unit_verifies_and_reloads_with_sighup() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed (Debian package systemd): the unit is not verified");
        return;
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(repo().join("examples/systemd/sosdesk.service")).unwrap();
    for key in ["ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict", "User=sosdesk"] {
        assert!(unit.contains(key), "the unit has {key}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sosdesk.service");
    std::fs::write(&path, unit.replace("/usr/bin/sosdesk", env!("CARGO_BIN_EXE_sosdesk"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
