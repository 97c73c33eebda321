//! A Skype for Business location-database CSV file of each kind (subnets, waps, switches, ports,
//! macs; the first byte picks it), any bytes: the reader never panics, every problem it reports
//! has a line (and a column, 0 for a column the file does not have); a file it accepts, exported again (`lis export`), re-imports to the
//! same rows and ERLs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sosdesk::location::sfb_csv::{parse, write_csv};
use sosdesk::location::wiremap_rows::WiremapKind;

fuzz_target!(|data: &[u8]| {
    let Some((&k, bytes)) = data.split_first() else { return };
    let kind = WiremapKind::ALL[k as usize % WiremapKind::ALL.len()];
    let parsed = match parse(kind, "fuzz.csv", bytes) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.issues.total >= e.issues.shown.len() && !e.issues.shown.is_empty());
            for i in &e.issues.shown {
                assert!(i.line >= 1, "{i}");
            }
            return;
        }
    };
    let mut out = Vec::new();
    write_csv(kind, &parsed.batch, &mut out).expect("export");
    let again = match parse(kind, "export.csv", &out) {
        Ok(a) => a,
        Err(e) => panic!("an accepted file does not re-import once exported: {e}\n{}", String::from_utf8_lossy(&out)),
    };
    assert_eq!(
        again.batch,
        parsed.batch,
        "export and re-import changed the wiremap\n{}",
        String::from_utf8_lossy(&out)
    );
});
