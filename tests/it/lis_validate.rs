//! `sosdesk lis validate`: every ERL checked against a local MSAG extract, the status stored (in
//! a SQLite file and in PostgreSQL).

use std::process::Command;

use crate::support::store::{store_test, TestDb};

fn sosdesk(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sosdesk")).args(args).output().expect("run sosdesk")
}

store_test!(sync validate_records_each_erls_status);
fn validate_records_each_erls_status(db: TestDb) {
    let dir = db.dir();
    let csv = dir.join("subnets.csv");
    // One address inside an MSAG range (1234 is even, 163RD AVE NE in Redmond covers 1000-1998
    // even), one outside it (1235 is odd).
    std::fs::write(
        &csv,
        "Subnet,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\n\
10.1.0.0/24,Floor 1,North wing,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US\n\
10.2.0.0/24,Floor 2,South wing,Litware,1235,,,163rd,Ave,NE,Redmond,WA,98052,US\n",
    )
    .unwrap();
    let store = db.store_arg();
    let db = store.as_str();
    let out = sosdesk(&["lis", "import", csv.to_str().unwrap(), "--kind", "subnets", "--store", db]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let msag = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/msag.csv");
    let out = sosdesk(&["lis", "validate", "--store", db, "--msag", msag]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 valid, 1 invalid of 2 ERLs"), "{text}");
    assert!(text.contains("house number 1235 is outside the MSAG ranges of \"163RD AVE NE\" in \"REDMOND\""), "{text}");

    let out = sosdesk(&["lis", "list", "--json", "--store", db]);
    let erls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |hno: &str| {
        erls.as_array()
            .unwrap()
            .iter()
            .find(|e| e["erl"]["hno"] == hno)
            .map(|e| (e["erl"]["validated"].clone(), e["validation"]["status"].clone()))
            .unwrap()
    };
    assert_eq!(status("1234"), (serde_json::json!(true), serde_json::json!("valid")));
    assert_eq!(status("1235"), (serde_json::json!(false), serde_json::json!("invalid")));

    // A broken MSAG file is refused with file, line and column.
    let bad = dir.join("msag.csv");
    std::fs::write(&bad, "REDMOND,MAIN ST,10,5,both\n").unwrap();
    let out = sosdesk(&["lis", "validate", "--store", db, "--msag", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("msag.csv:1:3: low 10 is above high 5"));
}
