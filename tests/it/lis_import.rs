//! The LIS data path as an admin uses it: Skype for Business location-database CSV files imported
//! into a real SQLite file or PostgreSQL database (`store_test!`: both; all of a file or nothing),
//! exported back, listed; and the wiremap the in-memory index is built from. Fixtures and their sources: tests/fixtures/lis/SOURCES.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sosdesk::audit::AuditStore;
use sosdesk::location::sfb_csv::{self, ParsedWiremap};
use sosdesk::location::store::{LisError, LisStore, WiremapBatch, WiremapKind, WiremapRow};
use sosdesk::location::validate::Validation;
use sosdesk::location::{Erl, PortIdSubtype, WiremapKey};

use crate::support::store::{store_test, TestDb};

use WiremapKind::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lis").join(name)
}

fn parse(kind: WiremapKind, name: &str) -> Result<ParsedWiremap, sfb_csv::CsvErrors> {
    sfb_csv::parse(kind, name, &std::fs::read(fixture(name)).unwrap())
}

fn parsed(kind: WiremapKind, name: &str) -> ParsedWiremap {
    parse(kind, name).unwrap_or_else(|e| panic!("{e}"))
}

fn sosdesk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sosdesk"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The files that import and export to the same bytes.
const GOOD: [(&str, WiremapKind); 6] = [
    ("subnets.csv", Subnets),
    ("waps.csv", Waps),
    ("switches.csv", Switches),
    ("ports.csv", Ports),
    ("macs.csv", Macs),
    ("subnets-cidr-ipv6.csv", Subnets),
];

/// Valid files in other spellings.
const MESSY: [(&str, WiremapKind); 3] =
    [("subnets-powershell.csv", Subnets), ("waps-bom-lf.csv", Waps), ("ports-numeric-subtypes.csv", Ports)];

/// A batch's meaning, independent of row order and ERL numbering: (key, description, bare, ERL).
fn content(batch: &WiremapBatch) -> Vec<(String, String, bool, Erl)> {
    let mut v: Vec<_> = batch
        .rows
        .iter()
        .map(|r| {
            let mut erl = batch.erls[r.erl].clone();
            erl.validated = false;
            (format!("{:?}", r.key), r.description.clone(), r.bare_subnet_id, erl)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

async fn export(store: &LisStore, kind: WiremapKind) -> Vec<u8> {
    let mut out = Vec::new();
    store.export_csv(kind, &mut out).await.unwrap();
    out
}

store_test!(each_kind_imports_and_exports_to_the_same_bytes);
async fn each_kind_imports_and_exports_to_the_same_bytes(db: TestDb) {
    for (name, kind) in GOOD {
        let store = LisStore::open(db.another()).await.unwrap();
        let p = parsed(kind, name);
        assert!(p.header, "{name}");
        let summary = store.import(kind, &p.batch).await.unwrap();
        assert_eq!((summary.rows, summary.changed, summary.unchanged), (p.batch.rows.len(), p.batch.rows.len(), 0));
        let out = export(&store, kind).await;
        assert_eq!(text(&out), text(&std::fs::read(fixture(name)).unwrap()), "{name}: export differs from the input");
        // And what the export says is what was read.
        let again = sfb_csv::parse(kind, "export", &out).unwrap();
        assert_eq!(content(&again.batch), content(&p.batch), "{name}");
    }
}

store_test!(messy_but_valid_files_round_trip_by_content);
async fn messy_but_valid_files_round_trip_by_content(db: TestDb) {
    for (name, kind) in MESSY {
        let store = LisStore::open(db.another()).await.unwrap();
        let p = parsed(kind, name);
        store.import(kind, &p.batch).await.unwrap();
        let out = export(&store, kind).await;
        let again = sfb_csv::parse(kind, "export", &out).unwrap();
        assert_eq!(content(&again.batch), content(&p.batch), "{name}");
    }

    // PowerShell Export-Csv: #TYPE line skipped, columns bound by header name, "us" read as US —
    // and so the same ERL as the "US" rows (two ERLs in all: Litware and the ELIN one).
    let ps = parsed(Subnets, "subnets-powershell.csv");
    assert!(ps.header);
    assert_eq!(ps.batch.rows.len(), 3);
    assert_eq!(ps.batch.erls.len(), 2);
    assert!(ps.batch.erls.iter().all(|e| e.civic.country.as_deref() == Some("US")));

    // BOM, LF, blank lines, MAC spellings, quoted field with comma, doubled quotes and é.
    let waps = parsed(Waps, "waps-bom-lf.csv");
    assert!(!waps.header);
    let keys: Vec<&WiremapKey> = waps.batch.rows.iter().map(|r| &r.key).collect();
    assert_eq!(
        keys,
        [
            &WiremapKey::Bssid([0x0A, 0x23, 0xCD, 0x16, 0xAA, 0x2E]),
            &WiremapKey::Bssid([0x0A, 0x23, 0xCD, 0x16, 0xAA, 0x2F]),
            &WiremapKey::Bssid([0x99; 6]),
        ]
    );
    assert_eq!(waps.batch.rows[0].description, "Wireless1", "surrounding spaces are trimmed");
    assert_eq!(waps.batch.rows[1].description, "Café \"Nord\", 2nd floor");
    // Same content as the canonical file, except the second access point.
    let canonical = parsed(Waps, "waps.csv");
    assert_eq!(content(&canonical.batch)[0].3, content(&waps.batch)[0].3);
}

store_test!(reimporting_the_same_file_changes_nothing);
async fn reimporting_the_same_file_changes_nothing(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    for (name, kind) in GOOD.into_iter().chain(MESSY) {
        let p = parsed(kind, name);
        store.import(kind, &p.batch).await.unwrap();
        let before = store.dump().await.unwrap();
        let again = store.import(kind, &p.batch).await.unwrap();
        assert_eq!((again.changed, again.unchanged, again.new_erls), (0, p.batch.rows.len(), 0), "{name}");
        assert_eq!(store.dump().await.unwrap(), before, "{name}: the tables changed");
    }
    // Through the command as well.
    store.close().await;
    let before = LisStore::open(db.location()).await.unwrap().dump().await.unwrap();
    let out = sosdesk()
        .args(["lis", "import"])
        .arg(fixture("ports.csv"))
        .args(["--kind", "ports", "--store"])
        .arg(db.store_arg())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("5 ports rows: 0 new or changed, 5 unchanged; 0 new ERLs"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(LisStore::open(db.location()).await.unwrap().dump().await.unwrap(), before);
}

/// (file, kind, line, column, column name, part of the reason)
const BAD: [(&str, WiremapKind, usize, usize, &str, &str); 13] = [
    ("bad-column-count.csv", Subnets, 3, 14, "Country", "13 columns, but the header has 14"),
    ("bad-empty-subnet.csv", Subnets, 3, 1, "Subnet", "empty: Subnet is required"),
    ("bad-empty-country.csv", Subnets, 3, 14, "Country", "empty: Country is required"),
    ("bad-host-bits.csv", Subnets, 3, 1, "Subnet", "has host bits set: the network is 10.1.2.0/24"),
    ("bad-ipv6-no-prefix.csv", Subnets, 3, 1, "Subnet", "an IPv6 subnet needs its prefix length"),
    ("bad-country.csv", Subnets, 3, 14, "Country", "\"USA\" is not an ISO 3166-1 alpha-2 country code"),
    ("bad-duplicate.csv", Subnets, 5, 1, "Subnet", "is also on line 3, with a different location"),
    ("bad-elin.csv", Subnets, 3, 4, "CompanyName", "\"425.555.0100\" is neither a company name nor an ELIN"),
    ("bad-quote.csv", Subnets, 3, 2, "Description", "a quote inside an unquoted field"),
    ("bad-unknown-column.csv", Subnets, 1, 13, "Zip", "unknown column for a subnets file"),
    ("bad-encoding.csv", Subnets, 3, 2, "", "not UTF-8 text (byte 0xE9)"),
    ("bad-mac.csv", Waps, 3, 1, "BSSID", "is not a MAC address"),
    ("bad-port-subtype.csv", Ports, 3, 2, "PortIDSubType", "unknown PortIDSubType \"InterfaceNumber\""),
];

store_test!(a_file_with_a_bad_row_keeps_nothing_and_says_where_and_why);
async fn a_file_with_a_bad_row_keeps_nothing_and_says_where_and_why(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    for (name, kind) in GOOD {
        store.import(kind, &parsed(kind, name).batch).await.unwrap();
    }
    let before = store.dump().await.unwrap();
    for (name, kind, line, column, column_name, reason) in BAD {
        let e = parse(kind, name).expect_err(name);
        assert_eq!(e.issues.total, 1, "{name}: {e}");
        let i = &e.issues.shown[0];
        assert_eq!(
            (i.file.as_str(), i.line, i.column, i.column_name.as_str()),
            (name, line, column, column_name),
            "{e}"
        );
        assert!(i.reason.contains(reason), "{name}: {}", i.reason);

        // The command: exit status 1, the error as file:line:column (name): reason, nothing kept.
        let path = fixture(name);
        let out = sosdesk()
            .args(["lis", "import"])
            .arg(&path)
            .args(["--kind", kind.as_str(), "--store"])
            .arg(db.store_arg())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        let place = if column_name.is_empty() {
            format!("{}:{line}:{column}: ", path.display())
        } else {
            format!("{}:{line}:{column} ({column_name}): ", path.display())
        };
        assert!(err.contains(&place) && err.contains(reason), "{name}: expected {place}…{reason} in {err}");
        assert!(err.contains("1 error(s); nothing was imported"), "{err}");
        assert_eq!(store.dump().await.unwrap(), before, "{name}: the store changed");
    }
}

#[test]
fn every_error_of_a_file_is_reported() {
    let e = parse(Subnets, "bad-several.csv").unwrap_err();
    let got: Vec<(usize, usize, &str)> =
        e.issues.shown.iter().map(|i| (i.line, i.column, i.column_name.as_str())).collect();
    assert_eq!(
        got,
        [
            (3, 1, "Subnet"),
            (4, 14, "Country"),
            (5, 4, "CompanyName"),
            (6, 1, "Subnet"),
            (7, 4, "CompanyName"),
            (7, 14, "Country"),
            (8, 1, "Subnet"),
        ],
        "{e}"
    );
    assert!(e.issues.shown[1].reason.contains("the United Kingdom is GB"));
    assert!(e.issues.shown[6].reason.contains("also on line 2"));

    // Many bad rows: the first 100 are listed, all are counted.
    let mut csv = String::from("Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\n");
    for i in 0..250 {
        csv.push_str(&format!("10.0.{i}.1/24,,L,,1,,,Main,St,,Town,ST,1,US\n"));
    }
    let e = sfb_csv::parse(Subnets, "many.csv", csv.as_bytes()).unwrap_err();
    assert_eq!((e.issues.shown.len(), e.issues.total), (100, 250));
    assert!(e.to_string().contains("… and 150 more"), "{e}");
}

store_test!(a_failing_import_rolls_back_all_of_it);
async fn a_failing_import_rolls_back_all_of_it(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    store.import(Switches, &parsed(Switches, "switches.csv").batch).await.unwrap();
    let before = store.dump().await.unwrap();
    // 700 good rows (more than one multi-row INSERT) with a new ERL, then one the schema refuses
    // (an empty chassis ID, which the CSV reader never produces): the database itself fails.
    let mut erl = parsed(Switches, "switches.csv").batch.erls[0].clone();
    erl.label = "New building".into();
    let mut rows: Vec<WiremapRow> = (0..700)
        .map(|i| WiremapRow {
            key: WiremapKey::Switch { chassis_id: format!("10.9.{}.{}", i / 256, i % 256) },
            erl: 0,
            description: String::new(),
            bare_subnet_id: false,
        })
        .collect();
    rows.push(WiremapRow { key: WiremapKey::Switch { chassis_id: String::new() }, ..rows[0].clone() });
    let e = store.import(Switches, &WiremapBatch { erls: vec![erl], rows }).await.unwrap_err();
    assert!(matches!(e, LisError::Db { .. }), "{e}");
    assert!(e.to_string().contains(&db.location().to_string()), "errors name the store: {e}");
    assert_eq!(store.dump().await.unwrap(), before);

    // A batch that does not fit its kind is refused before anything is written.
    let p = parsed(Waps, "waps.csv");
    let e = store.import(Subnets, &p.batch).await.unwrap_err();
    assert!(e.to_string().contains("a waps key in a subnets import"), "{e}");
}

store_test!(elins_come_from_company_name_and_the_company_name_is_kept);
async fn elins_come_from_company_name_and_the_company_name_is_kept(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    store.import(Subnets, &parsed(Subnets, "subnets.csv").batch).await.unwrap();
    store.import(Switches, &parsed(Switches, "switches.csv").batch).await.unwrap();
    let (erls, entries) = store.load_wiremap().await.unwrap();
    let erl_of = |key: WiremapKey| -> &Erl { &erls[entries.iter().find(|e| e.key == key).expect("entry").erl] };

    // SfB's example: only ELINs.
    let e = erl_of(WiremapKey::Subnet("157.56.67.0/24".parse().unwrap()));
    assert_eq!(e.elins, ["4255550100", "4255550200", "4255550300"]);
    assert_eq!(e.company, None);
    assert_eq!(e.civic.nam.as_deref(), Some("425-555-0100; 425-555-0200; 425-555-0300"), "NAM as SfB sent it");
    assert_eq!((e.label.as_str(), e.civic.loc.as_deref()), ("Location1", Some("Location1")));
    assert_eq!(
        (e.civic.hno.as_deref(), e.civic.rd.as_deref(), e.civic.sts.as_deref(), e.civic.pod.as_deref()),
        (Some("1234"), Some("163rd"), Some("Ave"), Some("NE"))
    );
    assert_eq!(
        (e.civic.a3.as_deref(), e.civic.a1.as_deref(), e.civic.pc.as_deref(), e.civic.country.as_deref()),
        (Some("Redmond"), Some("WA"), Some("99123"), Some("US"))
    );
    // A company and an ELIN.
    let e = erl_of(WiremapKey::Switch { chassis_id: "192.0.2.10".into() });
    assert_eq!((e.company.as_deref(), e.elins.as_slice()), (Some("Litware"), &["4255550100".to_string()][..]));
    // A company only, with a comma.
    let e = erl_of(WiremapKey::Subnet("192.10.10.0/23".parse().unwrap()));
    assert_eq!((e.company.as_deref(), e.elins.len()), (Some("Litware, Inc."), 0));
    assert_eq!(e.label, "Suite 100/Office 20");
    // Identical addresses are one ERL: 10.10.10.128, 157.56.66.0 and switch 0B-23-CD-16-AA-BB.
    let a = entries.iter().find(|e| e.key == WiremapKey::Subnet("10.10.10.128/25".parse().unwrap())).unwrap().erl;
    let b = entries.iter().find(|e| e.key == WiremapKey::Subnet("157.56.66.0/23".parse().unwrap())).unwrap().erl;
    let c =
        entries.iter().find(|e| e.key == WiremapKey::Switch { chassis_id: "0B-23-CD-16-AA-BB".into() }).unwrap().erl;
    assert!(a == b && b == c);
    assert_eq!(store.counts().await.unwrap().erls, 5);
}

store_test!(port_subtypes_by_name_number_and_default);
async fn port_subtypes_by_name_number_and_default(db: TestDb) {
    let numeric = parsed(Ports, "ports-numeric-subtypes.csv");
    let subtypes: Vec<PortIdSubtype> = numeric
        .batch
        .rows
        .iter()
        .map(|r| match &r.key {
            WiremapKey::Port { port_subtype, .. } => *port_subtype,
            k => panic!("{k:?}"),
        })
        .collect();
    use PortIdSubtype::*;
    assert_eq!(subtypes, [LocallyAssigned, InterfaceAlias, InterfaceName, InterfaceName, LocallyAssigned]);
    // The same ports as the named file; exported with the names.
    assert_eq!(content(&numeric.batch), content(&parsed(Ports, "ports.csv").batch));
    let store = LisStore::open(db.location()).await.unwrap();
    store.import(Ports, &numeric.batch).await.unwrap();
    assert_eq!(export(&store, Ports).await, std::fs::read(fixture("ports.csv")).unwrap());
    // Chassis + subtype + port is the key: the same port ID under another subtype is another port.
    let (_, entries) = store.load_wiremap().await.unwrap();
    let alias_4200 = WiremapKey::Port {
        chassis_id: "99-99-99-99-99-99".into(),
        port_subtype: InterfaceAlias,
        port_id: "4200".into(),
    };
    assert!(entries.iter().any(|e| e.key == alias_4200));
    assert_eq!(entries.len(), 5);
}

store_test!(ipv6_and_cidr_subnets_next_to_sfb_subnet_ids);
async fn ipv6_and_cidr_subnets_next_to_sfb_subnet_ids(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    let p = parsed(Subnets, "subnets-cidr-ipv6.csv");
    assert_eq!(p.bare_subnet_ids, 1);
    store.import(Subnets, &p.batch).await.unwrap();
    let (_, entries) = store.load_wiremap().await.unwrap();
    let mut nets: Vec<String> = entries
        .iter()
        .map(|e| match &e.key {
            WiremapKey::Subnet(n) => n.to_string(),
            k => panic!("{k:?}"),
        })
        .collect();
    nets.sort();
    assert_eq!(nets, ["10.1.2.0/24", "157.56.66.0/23", "2001:db8:1:2::/64", "2001:db8:1::/48"]);
}

store_test!(load_wiremap_returns_what_was_imported);
async fn load_wiremap_returns_what_was_imported(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    // What the wiremap should be: later files set the elements they name again.
    let mut expected: HashMap<WiremapKey, Erl> = HashMap::new();
    for (name, kind) in GOOD.into_iter().chain(MESSY) {
        let p = parsed(kind, name);
        store.import(kind, &p.batch).await.unwrap();
        for r in &p.batch.rows {
            expected.insert(r.key.clone(), p.batch.erls[r.erl].clone());
        }
    }
    let (erls, entries) = store.load_wiremap().await.unwrap();
    let got: HashMap<WiremapKey, Erl> = entries.iter().map(|e| (e.key.clone(), erls[e.erl].clone())).collect();
    assert_eq!(got.len(), entries.len(), "each element once");
    assert_eq!(got, expected);
    let counts = store.counts().await.unwrap().wiremap;
    assert_eq!(counts.total() as usize, entries.len());
    assert_eq!((counts.subnets, counts.waps, counts.switches, counts.ports, counts.macs), (7, 3, 3, 5, 2));
}

store_test!(a_row_sets_its_elements_location_and_leaves_the_rest);
async fn a_row_sets_its_elements_location_and_leaves_the_rest(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    store.import(Subnets, &parsed(Subnets, "subnets.csv").batch).await.unwrap();
    let moved = "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\r\n\
                 157.56.66.0,Subnet 1,Location2,Litware,2345,,,163rd,Ave,NE,Bellevue,WA,99234,US\r\n";
    let p = sfb_csv::parse(Subnets, "moved.csv", moved.as_bytes()).unwrap();
    let s = store.import(Subnets, &p.batch).await.unwrap();
    assert_eq!((s.rows, s.changed, s.new_erls), (1, 1, 1));
    assert_eq!(store.counts().await.unwrap().wiremap.subnets, 4, "the other subnets are still there");
    let list = store.list_erls().await.unwrap();
    let redmond = list.iter().find(|e| e.erl.label == "Location1" && e.erl.company.is_some()).unwrap();
    assert_eq!(redmond.elements.subnets, 1, "only 10.10.10.128 is left on it");
    let bellevue = list.iter().find(|e| e.erl.label == "Location2").unwrap();
    assert_eq!(bellevue.elements.subnets, 1);
}

store_test!(validation_status_is_stored_and_survives_reimport);
async fn validation_status_is_stored_and_survives_reimport(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    let p = parsed(Waps, "waps.csv");
    store.import(Waps, &p.batch).await.unwrap();
    let list = store.list_erls().await.unwrap();
    assert!(list.iter().all(|e| e.validation.is_none() && !e.erl.validated));
    let (a, b) = (list[0].id, list[1].id);
    store.set_validation(a, &Validation::Valid).await.unwrap();
    let reasons = vec!["house number 1234 is not in the MSAG range of FIRST AVE".to_string()];
    store.set_validation(b, &Validation::Invalid { reasons: reasons.clone() }).await.unwrap();
    store.import(Waps, &p.batch).await.unwrap();
    let list = store.list_erls().await.unwrap();
    assert_eq!(list[0].validation, Some(Validation::Valid));
    assert!(list[0].erl.validated && list[0].validated_at.is_some());
    assert_eq!(list[1].validation, Some(Validation::Invalid { reasons }));
    assert!(!list[1].erl.validated);
    let (erls, _) = store.load_wiremap().await.unwrap();
    assert_eq!(erls.iter().filter(|e| e.validated).count(), 1);
    assert!(matches!(store.set_validation(999, &Validation::Valid).await, Err(LisError::NoSuchErl { id: 999, .. })));
}

store_test!(the_lis_tables_share_the_audit_file);
async fn the_lis_tables_share_the_audit_file(db: TestDb) {
    let audit = AuditStore::open(db.location()).await.unwrap();
    let lis = LisStore::open(db.location()).await.unwrap();
    lis.import(Macs, &parsed(Macs, "macs.csv").batch).await.unwrap();
    assert!(audit.verify().await.unwrap().is_ok());
    assert_eq!(audit.history(10).await.unwrap().len(), 0);
    assert_eq!(lis.counts().await.unwrap().wiremap.macs, 2);
    // Opened in the other order, on a file that has both.
    drop((audit, lis));
    let lis = LisStore::open(db.location()).await.unwrap();
    AuditStore::open(db.location()).await.unwrap();
    assert_eq!(lis.counts().await.unwrap().erls, 2);
}

#[tokio::test]
async fn open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let e = LisStore::open(&dir.path().join("missing/sosdesk.db")).await.unwrap_err();
    assert!(e.to_string().contains("missing/sosdesk.db") && e.to_string().contains("directory"), "{e}");
    let e = LisStore::open(dir.path()).await.unwrap_err();
    assert!(e.to_string().contains("it is a directory"), "{e}");
}

store_test!(the_command_imports_exports_and_lists);
async fn the_command_imports_exports_and_lists(db: TestDb) {
    let dir = db.dir();
    for (name, kind) in GOOD.into_iter().take(5) {
        let out = sosdesk()
            .args(["lis", "import"])
            .arg(fixture(name))
            .args(["--kind", kind.as_str(), "--store"])
            .arg(db.store_arg())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
    let out = sosdesk()
        .args(["lis", "import"])
        .arg(fixture("subnets.csv"))
        .args(["--kind", "subnets", "--store"])
        .arg(db.store_arg())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(stdout.contains("subnets.csv: 4 subnets rows: 0 new or changed, 4 unchanged; 0 new ERLs"), "{stdout}");
    assert!(stdout.contains("4 subnets are SfB subnet IDs without a prefix length"), "{stdout}");

    for (name, kind) in GOOD.into_iter().take(5) {
        let file = dir.join(format!("out-{name}"));
        let out = sosdesk()
            .args(["lis", "export", "--kind", kind.as_str(), "--store"])
            .arg(db.store_arg())
            .arg("--output")
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(fixture(name)).unwrap(), "{name}");
        assert!(!dir.join(format!("out-{name}.partial")).exists());
        // To standard output, the same bytes.
        let out =
            sosdesk().args(["lis", "export", "--kind", kind.as_str(), "--store"]).arg(db.store_arg()).output().unwrap();
        assert_eq!(out.stdout, std::fs::read(fixture(name)).unwrap(), "{name}");
    }

    let out = sosdesk().args(["lis", "list", "--store"]).arg(db.store_arg()).output().unwrap();
    let list = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(list.contains("6 ERLs; wiremap: 4 subnets, 2 waps, 3 switches, 5 ports, 2 macs"), "{list}");
    assert!(list.contains("not validated") && list.contains("4255550100,4255550200,4255550300"), "{list}");
    let out = sosdesk().args(["lis", "list", "--json", "--store"]).arg(db.store_arg()).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 6);

    // Mistakes: an unknown kind, a store that does not exist, an unreadable file.
    let out = sosdesk().args(["lis", "export", "--kind", "routers", "--store"]).arg(db.store_arg()).output().unwrap();
    assert!(!out.status.success() && text(&out.stderr).contains("one of subnets, waps, switches, ports, macs"));
    let out = sosdesk().args(["lis", "list", "--store"]).arg(dir.join("nope.db")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope.db: no store there"), "{}", text(&out.stderr));
    let out = sosdesk()
        .args(["lis", "import"])
        .arg(dir.join("nope.csv"))
        .args(["--kind", "waps", "--store"])
        .arg(db.store_arg())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope.csv: cannot read the file"), "{}", text(&out.stderr));
}

#[test]
fn headers_bind_columns_by_name_and_catch_the_wrong_kind() {
    // A ports file read as switches: its extra columns are named.
    let e = parse(Switches, "ports.csv").unwrap_err();
    let first = &e.issues.shown[0];
    assert_eq!((first.line, first.column, first.column_name.as_str()), (1, 2, "PortIDSubType"));
    assert!(first.reason.contains("(PortIDSubType is a column of ports files)"), "{e}");
    // A waps file read as subnets: one error, not one per row.
    let e = parse(Subnets, "waps.csv").unwrap_err();
    assert_eq!(e.issues.total, 1, "{e}");
    assert!(e.issues.shown[0].reason.contains("this is the header of a waps file, not of a subnets file"), "{e}");

    // Any order, optional columns left out, names in any case.
    let csv = "country,CITY,Subnet\n US ,Redmond,10.5.0.0/16\n";
    let p = sfb_csv::parse(Subnets, "short.csv", csv.as_bytes()).unwrap();
    let erl = &p.batch.erls[p.batch.rows[0].erl];
    assert_eq!(
        (erl.civic.country.as_deref(), erl.civic.a3.as_deref(), erl.label.as_str()),
        (Some("US"), Some("Redmond"), "")
    );

    // Required columns, repeated columns.
    let e = sfb_csv::parse(Subnets, "h.csv", b"Subnet,City\n10.5.0.0/16,Redmond\n").unwrap_err();
    assert!(e.issues.shown[0].reason.contains("no Country column"), "{e}");
    let e = sfb_csv::parse(Subnets, "h.csv", b"Subnet,Country,city,City\n10.5.0.0/16,US,a,b\n").unwrap_err();
    let i = &e.issues.shown[0];
    assert_eq!((i.line, i.column, i.reason.as_str()), (1, 4, "the column appears twice (also column 3)"));
}

store_test!(an_empty_kind_exports_a_header_that_imports_as_nothing);
async fn an_empty_kind_exports_a_header_that_imports_as_nothing(db: TestDb) {
    let store = LisStore::open(db.location()).await.unwrap();
    let out = export(&store, Macs).await;
    assert_eq!(text(&out), "MAC,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\r\n");
    for (name, bytes) in [("export.csv", &out[..]), ("empty.csv", &b""[..])] {
        let p = sfb_csv::parse(Macs, name, bytes).unwrap();
        assert!(p.batch.rows.is_empty());
        assert!(p.warnings.shown[0].reason.contains("no data rows"), "{name}");
        assert_eq!(store.import(Macs, &p.batch).await.unwrap().rows, 0);
    }
}

/// The scale target of DESIGN.md: 1,000,000 wiremap rows imported in < 10 s. Run it with
/// `cargo test --release --test it -- --ignored lis_import:: --nocapture`; BENCHMARKS.md has
/// results.
/// One file as an SfB shop would have it: every other row a bare SfB subnet ID, the rest CIDR;
/// 1,000 building floors (ERLs), each with a company name and an ELIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn import_of_a_million_subnet_rows() {
    million_subnets(1000).await;
}

/// The worst case for the ERL table: every row its own ERL (a room per subnet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn import_of_a_million_subnet_rows_each_with_its_own_erl() {
    million_subnets(1_000_000).await;
}

async fn million_subnets(erls: usize) {
    use std::time::Instant;
    const N: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("subnets-1m.csv");
    let mut csv = String::with_capacity(N * 110);
    csv.push_str("Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\r\n");
    for i in 0..N {
        let (a, b, c) = (10 + i / 65_536, (i / 256) % 256, i % 256);
        let subnet = if i % 2 == 0 { format!("{a}.{b}.{c}.0") } else { format!("{a}.{b}.{c}.0/24") };
        let place = i % erls;
        let building = place % 1000;
        csv.push_str(&format!(
            "{subnet},Floor {} net {i},Bldg {building} R{place},\"Litware, Inc.; 425-555-{building:04}\",{},,NE,{}th,Ave,,Redmond,WA,98052,US\r\n",
            i % 40,
            100 + building,
            building % 200
        ));
    }
    std::fs::write(&file, &csv).unwrap();
    drop(csv);
    let size = std::fs::metadata(&file).unwrap().len();

    let store = LisStore::open(dir.path().join("sosdesk.db")).await.unwrap();
    let t0 = Instant::now();
    let bytes = std::fs::read(&file).unwrap();
    let t_read = t0.elapsed();
    let p = sfb_csv::parse(Subnets, "subnets-1m.csv", &bytes).unwrap_or_else(|e| panic!("{e}"));
    let t_parse = t0.elapsed();
    let s = store.import(Subnets, &p.batch).await.unwrap();
    let t_total = t0.elapsed();
    assert_eq!((s.rows, s.changed, s.new_erls, p.batch.erls.len()), (N, N, erls, erls));

    let t1 = Instant::now();
    let again = store.import(Subnets, &p.batch).await.unwrap();
    let t_again = t1.elapsed();
    assert_eq!((again.changed, again.new_erls), (0, 0));
    let t2 = Instant::now();
    let (loaded_erls, entries) = store.load_wiremap().await.unwrap();
    let t_load = t2.elapsed();
    assert_eq!((entries.len(), loaded_erls.len()), (N, erls));
    let t3 = Instant::now();
    let mut out = Vec::with_capacity(size as usize);
    store.export_csv(Subnets, &mut out).await.unwrap();
    let t_export = t3.elapsed();

    println!(
        "1,000,000 subnet rows ({:.1} MB, {} ERLs, {} bare subnet IDs):\n  \
         read {:.2} s, parse+check {:.2} s, database {:.2} s: import total {:.2} s (target < 10 s)\n  \
         re-import (nothing changes) {:.2} s, load_wiremap {:.2} s, export {:.2} s",
        size as f64 / 1e6,
        p.batch.erls.len(),
        p.bare_subnet_ids,
        t_read.as_secs_f64(),
        (t_parse - t_read).as_secs_f64(),
        (t_total - t_parse).as_secs_f64(),
        t_total.as_secs_f64(),
        t_again.as_secs_f64(),
        t_load.as_secs_f64(),
        t_export.as_secs_f64(),
    );
}
