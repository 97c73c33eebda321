//! The audit store against real SQLite files and a real PostgreSQL server (each `store_test!`
//! runs on both): durability across handles, the hash chain and its tamper detection, call
//! summaries, history, CSV export and the background writer; and, on PostgreSQL, several nodes
//! appending to one chain.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use chrono::{DateTime, Duration, TimeZone, Utc};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use crate::support::store::{store_test, TestDb};

use sosdesk::audit::{spawn_writer, AuditError, AuditStore, CallOutcome, VerifyReason, VerifyReport, GENESIS_HASH};
use sosdesk::events::{CallEvent, CallEventKind, Caller, RouteInfo, RouteKind, CALL_EVENT_VERSION};
use sosdesk::location::{CivicAddress, Erl, LocationSnapshot, LocationSource};

// ---------------------------------------------------------------------------------------------
// Helpers

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 9, 26, 53).unwrap() + Duration::nanoseconds(589_793_238)
}

const LOCATION_TEXT: &str = "1 Main St, Floor 2, Room 210, Redmond, WA, 98052, US";

fn hq_location() -> LocationSnapshot {
    LocationSnapshot {
        source: LocationSource::Wiremap,
        erl: Some(Erl {
            label: "HQ, 2nd floor, east".into(),
            company: Some("Contoso Ltd".into()),
            civic: CivicAddress {
                country: Some("US".into()),
                a1: Some("WA".into()),
                a3: Some("Redmond".into()),
                hno: Some("1".into()),
                rd: Some("Main".into()),
                sts: Some("St".into()),
                flr: Some("2".into()),
                room: Some("210".into()),
                pc: Some("98052".into()),
                ..CivicAddress::default()
            },
            elins: vec!["+14255550100".into()],
            validated: true,
            floor_plan: None,
        }),
        geo: None,
        site_map: None,
        method: Some("Wiremap".into()),
        warnings: vec![],
    }
}

fn route(name: &str, attempt: u32) -> RouteInfo {
    RouteInfo {
        name: name.into(),
        kind: RouteKind::SipTrunk,
        target: "udp:127.0.0.1:5070".into(),
        attempt,
        presented_number: "+14255550123".into(),
    }
}

/// A realistic event: call `call_id`, `call_seq` seconds after `start`.
fn event_at(call_id: &str, call_seq: u32, start: DateTime<Utc>, kind: CallEventKind) -> CallEvent {
    let routed = !matches!(kind, CallEventKind::Detected);
    CallEvent {
        version: CALL_EVENT_VERSION,
        call_id: call_id.into(),
        seq: call_seq,
        at: start + Duration::seconds(i64::from(call_seq)),
        caller: Caller {
            number: "+14255550123".into(),
            display_name: Some("Alice Example".into()),
            uri: "sip:alice@contoso.example".into(),
            source: "udp:192.0.2.10:5060".into(),
        },
        dialed: "9911".into(),
        normalized: "911".into(),
        test_call: false,
        policy: "hq-emergency".into(),
        site: Some("HQ".into()),
        location: hq_location(),
        route: routed.then(|| route("provider-a", 0)),
        kind,
    }
}

fn event(call_id: &str, call_seq: u32, kind: CallEventKind) -> CallEvent {
    event_at(call_id, call_seq, t0(), kind)
}

fn ended(by: &str) -> CallEventKind {
    CallEventKind::Ended { by: by.into(), reason: "BYE".into() }
}

/// detected → routed → ringing → answered → ended
fn answered_call(call_id: &str) -> Vec<CallEvent> {
    vec![
        event(call_id, 1, CallEventKind::Detected),
        event(call_id, 2, CallEventKind::Routed),
        event(call_id, 3, CallEventKind::Ringing { status: 180 }),
        event(call_id, 4, CallEventKind::Answered),
        event(call_id, 5, ended("caller")),
    ]
}

/// A plain connection to the file, as an attacker (or the sqlite3 shell) would have.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnectOptions::new().filename(path).busy_timeout(std::time::Duration::from_secs(10)).connect().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Opening

#[tokio::test]
async fn open_creates_the_file_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    assert!(!path.exists());
    let store = AuditStore::open(&path).await.unwrap();
    assert!(path.exists());
    assert_eq!(store.location().path(), Some(path.as_path()));

    let mut c = raw(&path).await;
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let tables: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    // The audit's tables (the same file also holds the LIS tables: one migrator for both).
    for t in ["calls", "chain_head", "events"] {
        assert!(tables.contains(&t), "{t} missing from {tables:?}");
    }
    // WAL is a property of the file: it sticks for every later connection.
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut c).await.unwrap();
    assert_eq!(mode, "wal");
    c.close().await.unwrap();

    let empty = store.verify().await.unwrap();
    assert_eq!(
        empty,
        VerifyReport { rows_checked: 0, bad_rows: 0, first_problem: None, last_seq: None, last_hash: None }
    );
    store.close().await;

    // Opening again runs no migration twice and keeps what is there.
    let again = AuditStore::open(&path).await.unwrap();
    assert_eq!(again.history(10).await.unwrap(), vec![]);
}

/// A store written before sosdesk had a PostgreSQL backend (its migrations then lived in
/// `migrations/`, without the `node` column) opens: sqlx accepts the recorded migrations (same
/// files, same checksums: `db::tests::sqlite_migration_checksums_are_unchanged` pins them), adds
/// the new one, and the chain goes on from the old rows.
#[tokio::test]
async fn a_store_from_before_postgres_opens_and_its_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for e in std::fs::read_dir(&repo).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.as_str() < "20261206" {
            std::fs::copy(repo.join(&name), old.join(&name)).unwrap();
        }
    }
    let path = dir.path().join("sosdesk.db");
    let mut c = SqliteConnectOptions::new().filename(&path).create_if_missing(true).connect().await.unwrap();
    let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
    assert_eq!(migrator.iter().count(), 5);
    migrator.run(&mut c).await.unwrap();
    // One event as the old writer stored it.
    let ev = event("call-1", 1, CallEventKind::Detected);
    let payload = serde_json::to_string(&ev).unwrap();
    let hash = sosdesk::audit::chain_hash(GENESIS_HASH, 1, &payload);
    sqlx::query(
        "INSERT INTO events (seq, call_id, call_seq, at, kind, payload, prev_hash, hash) \
         VALUES (1, 'call-1', 1, ?, 'detected', ?, ?, ?)",
    )
    .bind(ev.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
    .bind(&payload)
    .bind(GENESIS_HASH)
    .bind(&hash)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("INSERT INTO chain_head (id, seq, hash) VALUES (1, 1, ?)").bind(&hash).execute(&mut c).await.unwrap();
    c.close().await.unwrap();

    let store = AuditStore::open(&path).await.unwrap().with_node(Some("upgraded"));
    assert_eq!(store.append(&[event("call-1", 2, CallEventKind::Routed)]).await.unwrap(), vec![2]);
    let report = store.verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows_checked, 2);
    let mut c = raw(&path).await;
    let nodes: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT node FROM events ORDER BY seq").fetch_all(&mut c).await.unwrap();
    assert_eq!(nodes, [(None,), (Some("upgraded".to_string()),)]);
}

#[tokio::test]
async fn open_in_a_path_under_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let path = file.join("audit.db");
    // Root ignores permission bits, so "unwritable" is made with a file where a directory should be.
    let err = AuditStore::open(&path).await.unwrap_err();
    assert!(matches!(err, AuditError::Open { .. }), "{err:?}");
    let msg = err.to_string();
    assert_eq!(msg, format!("cannot open audit store {}: {} is not a directory", path.display(), file.display()));
}

#[tokio::test]
async fn open_in_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("audit.db");
    let msg = AuditStore::open(&path).await.unwrap_err().to_string();
    assert!(msg.starts_with(&format!("cannot open audit store {}: directory ", path.display())), "{msg}");
    assert!(msg.contains("No such file or directory"), "{msg}");
    assert!(!path.parent().unwrap().exists(), "open must not create directories");
}

#[tokio::test]
async fn open_a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "this is not an SQLite database, just some text that is long enough ".repeat(20)).unwrap();
    let msg = AuditStore::open(&path).await.unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("file is not a database"), "{msg}");
}

#[tokio::test]
async fn open_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let msg = AuditStore::open(dir.path()).await.unwrap_err().to_string();
    assert_eq!(msg, format!("cannot open audit store {}: it is a directory", dir.path().display()));
}

// ---------------------------------------------------------------------------------------------
// Append, read back, chain

store_test!(appended_events_survive_reopening_the_file);
async fn appended_events_survive_reopening_the_file(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let events = answered_call("call-1");
    assert_eq!(store.append(&events[..2]).await.unwrap(), vec![1, 2]);
    assert_eq!(store.append(&events[2..]).await.unwrap(), vec![3, 4, 5]);
    assert_eq!(store.append(&[]).await.unwrap(), Vec::<i64>::new());
    store.close().await;
    drop(store);

    let store = AuditStore::open(db.location()).await.unwrap();
    let records = store.call_events("call-1").await.unwrap();
    assert_eq!(records.len(), 5);
    let mut prev = GENESIS_HASH.to_string();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 1);
        assert_eq!(r.call_id, "call-1");
        assert_eq!(r.call_seq, i as i64 + 1);
        assert_eq!(r.event, events[i], "event {i} read back differently");
        assert_eq!(r.at, events[i].at, "timestamps keep their nanoseconds");
        assert_eq!(r.kind, events[i].kind.name());
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.hash.len(), 64);
        prev = r.hash.clone();
    }
    assert_eq!(records[4].detail, "by caller: BYE");
    assert_eq!(store.call_events("no-such-call").await.unwrap(), vec![]);

    let report = store.verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows_checked, 5);
    assert_eq!(report.last_seq, Some(5));
    assert_eq!(report.last_hash.as_deref(), Some(prev.as_str()));

    // The chain goes on from the stored tip after a reopen.
    assert_eq!(store.append(&[event("call-2", 1, CallEventKind::Detected)]).await.unwrap(), vec![6]);
    assert!(store.verify().await.unwrap().is_ok());
}

store_test!(stored_hashes_follow_the_documented_formula);
async fn stored_hashes_follow_the_documented_formula(db: TestDb) {
    // An external auditor has only the formula: recompute it here from the raw columns with sha2,
    // not through the store's own function.
    use sha2::{Digest, Sha256};
    let store = AuditStore::open(db.location()).await.unwrap();
    store.append(&answered_call("call-1")).await.unwrap();
    let mut c = db.raw().await;
    let rows: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT seq, payload, prev_hash, hash FROM events ORDER BY seq")
            .fetch_all(&mut c)
            .await
            .unwrap();
    let mut prev = "0".repeat(64);
    for (seq, payload, prev_hash, hash) in rows {
        assert_eq!(prev_hash, prev);
        let digest = Sha256::digest(format!("{prev_hash}\n{seq}\n{payload}").as_bytes());
        assert_eq!(hash, hex::encode(digest), "seq {seq}");
        prev = hash;
    }
}

// ---------------------------------------------------------------------------------------------
// Tampering

/// Five events (seq 1..=5), then `sql` run by someone with write access to the file who removed
/// the append-only triggers first, then a verify through a fresh handle.
async fn verify_after(db: &TestDb, sql: &[&str]) -> VerifyReport {
    let store = AuditStore::open(db.location()).await.unwrap();
    store.append(&answered_call("call-1")).await.unwrap();
    store.close().await;
    let mut c = db.raw().await;
    db.drop_trigger("events_append_only_update").await;
    db.drop_trigger("events_append_only_delete").await;
    for s in sql {
        sqlx::query(s).execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
    let store = AuditStore::open(db.location()).await.unwrap();
    let report = store.verify().await.unwrap();
    assert_eq!(report.rows_checked as usize, 5 - sql.iter().filter(|s| s.starts_with("DELETE")).count());
    report
}

store_test!(append_only_triggers_refuse_update_and_delete);
async fn append_only_triggers_refuse_update_and_delete(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    store.append(&answered_call("call-1")).await.unwrap();
    let mut c = db.raw().await;
    let err = sqlx::query("UPDATE events SET payload = '{}' WHERE seq = 2").execute(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("audit events are append-only"), "{err}");
    let err = sqlx::query("DELETE FROM events WHERE seq = 2").execute(&mut c).await.unwrap_err();
    assert!(err.to_string().contains("audit events are append-only"), "{err}");
    assert!(store.verify().await.unwrap().is_ok());
}

store_test!(edited_payload_is_detected_at_its_seq);
async fn edited_payload_is_detected_at_its_seq(db: TestDb) {
    let r =
        verify_after(&db, &["UPDATE events SET payload = replace(payload, 'Alice Example', 'Mallory') WHERE seq = 3"])
            .await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 3);
    assert!(matches!(p.reason, VerifyReason::HashMismatch { .. }), "{p}");
    assert_eq!(r.bad_rows, 1);
}

store_test!(edited_hash_is_detected_at_its_seq);
async fn edited_hash_is_detected_at_its_seq(db: TestDb) {
    let fake = "ab".repeat(32);
    let r = verify_after(&db, &[&format!("UPDATE events SET hash = '{fake}' WHERE seq = 3")]).await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 3);
    match p.reason {
        VerifyReason::HashMismatch { stored, .. } => assert_eq!(stored, fake),
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
}

store_test!(edited_payload_with_recomputed_hash_is_detected_at_the_next_row);
async fn edited_payload_with_recomputed_hash_is_detected_at_the_next_row(db: TestDb) {
    // The attacker fixes up row 3's hash for the new payload; row 4 still points at the old one.
    let store = AuditStore::open(db.location()).await.unwrap();
    store.append(&answered_call("call-1")).await.unwrap();
    store.close().await;
    let mut c = db.raw().await;
    db.drop_trigger("events_append_only_update").await;
    let (prev, payload): (String, String) =
        sqlx::query_as("SELECT prev_hash, payload FROM events WHERE seq = 3").fetch_one(&mut c).await.unwrap();
    let forged = payload.replace("Alice Example", "Mallory");
    let forged_hash = sosdesk::audit::chain_hash(&prev, 3, &forged);
    sqlx::query("UPDATE events SET payload = $1, hash = $2 WHERE seq = 3")
        .bind(&forged)
        .bind(&forged_hash)
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();

    let r = AuditStore::open(db.location()).await.unwrap().verify().await.unwrap();
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 4);
    match p.reason {
        VerifyReason::PrevHashMismatch { expected, .. } => assert_eq!(expected, forged_hash),
        other => panic!("expected a prev_hash mismatch, got {other:?}"),
    }
}

store_test!(deleted_middle_row_is_detected_as_a_gap);
async fn deleted_middle_row_is_detected_as_a_gap(db: TestDb) {
    let r = verify_after(&db, &["DELETE FROM events WHERE seq = 3"]).await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 3);
    assert_eq!(p.reason, VerifyReason::SeqGap { expected: 3, found: 4 });
}

store_test!(deleted_and_renumbered_rows_are_detected);
async fn deleted_and_renumbered_rows_are_detected(db: TestDb) {
    // Closing the gap by renumbering does not help: seq is part of the hash, and row 4 (now 3)
    // still points at the deleted row.
    // Row by row, in order: PostgreSQL checks the primary key after each row of an UPDATE.
    let r = verify_after(
        &db,
        &[
            "DELETE FROM events WHERE seq = 3",
            "UPDATE events SET seq = 3 WHERE seq = 4",
            "UPDATE events SET seq = 4 WHERE seq = 5",
        ],
    )
    .await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 3);
    assert!(matches!(p.reason, VerifyReason::PrevHashMismatch { .. }), "{p}");
}

store_test!(swapped_rows_are_detected_at_the_first_moved_row);
async fn swapped_rows_are_detected_at_the_first_moved_row(db: TestDb) {
    let r = verify_after(
        &db,
        &[
            "UPDATE events SET seq = -2 WHERE seq = 2",
            "UPDATE events SET seq = 2 WHERE seq = 4",
            "UPDATE events SET seq = 4 WHERE seq = -2",
        ],
    )
    .await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 2);
    assert!(matches!(p.reason, VerifyReason::PrevHashMismatch { .. }), "{p}");
}

store_test!(cut_off_tail_is_detected_by_the_chain_head);
async fn cut_off_tail_is_detected_by_the_chain_head(db: TestDb) {
    let r = verify_after(&db, &["DELETE FROM events WHERE seq = 5"]).await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 5);
    assert!(matches!(p.reason, VerifyReason::HeadMismatch { head_seq: Some(5), .. }), "{p}");
}

store_test!(edited_index_column_is_detected);
async fn edited_index_column_is_detected(db: TestDb) {
    let r = verify_after(&db, &["UPDATE events SET kind = 'failed' WHERE seq = 4"]).await;
    let p = r.first_problem.expect("tampering not detected");
    assert_eq!(p.seq, 4);
    assert_eq!(
        p.reason,
        VerifyReason::ColumnMismatch { column: "kind".into(), stored: "failed".into(), payload: "answered".into() }
    );
}

store_test!(writing_after_a_cut_off_tail_keeps_the_gap_visible);
async fn writing_after_a_cut_off_tail_keeps_the_gap_visible(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    store.append(&answered_call("call-1")).await.unwrap();
    let mut c = db.raw().await;
    db.drop_trigger("events_append_only_delete").await;
    sqlx::query("DELETE FROM events WHERE seq >= 4").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    // The store goes on from the head (seq 5), not from the last row left (seq 3).
    assert_eq!(store.append(&[event("call-2", 1, CallEventKind::Detected)]).await.unwrap(), vec![6]);
    let p = store.verify().await.unwrap().first_problem.expect("cut not detected");
    assert_eq!(p.seq, 4);
    assert_eq!(p.reason, VerifyReason::SeqGap { expected: 4, found: 6 });
}

// ---------------------------------------------------------------------------------------------
// Call summaries and history

store_test!(summary_follows_an_answered_call);
async fn summary_follows_an_answered_call(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let events = answered_call("call-1");
    let expect =
        [CallOutcome::Detected, CallOutcome::Routing, CallOutcome::Ringing, CallOutcome::Answered, CallOutcome::Ended];
    for (ev, outcome) in events.iter().zip(expect) {
        store.append(std::slice::from_ref(ev)).await.unwrap();
        let s = store.call_summary("call-1").await.unwrap().unwrap();
        assert_eq!(s.outcome, outcome, "after {}", ev.kind.name());
    }
    let s = store.call_summary("call-1").await.unwrap().unwrap();
    assert_eq!(s.call_id, "call-1");
    assert_eq!((s.first_seq, s.last_seq, s.event_count), (1, 5, 5));
    assert_eq!(s.first_at, t0() + Duration::seconds(1));
    assert_eq!(s.last_at, t0() + Duration::seconds(5));
    assert_eq!(s.caller_number, "+14255550123");
    assert_eq!(s.caller_name.as_deref(), Some("Alice Example"));
    assert_eq!((s.dialed.as_str(), s.normalized.as_str()), ("9911", "911"));
    assert!(!s.test_call);
    assert_eq!(s.policy, "hq-emergency");
    assert_eq!(s.site.as_deref(), Some("HQ"));
    assert_eq!(s.location, LOCATION_TEXT);
    assert_eq!(s.location_source, "wiremap");
    assert_eq!(s.route.as_deref(), Some("provider-a"));
    assert_eq!(s.outcome_detail, "by caller: BYE");
    assert_eq!(s.answered_at, Some(t0() + Duration::seconds(4)));
    assert_eq!(s.ended_at, Some(t0() + Duration::seconds(5)));
    assert_eq!(s.acknowledged_by, None);
    assert_eq!(s.acknowledged_at, None);
}

store_test!(summary_of_an_unanswered_call_has_no_answer_time);
async fn summary_of_an_unanswered_call_has_no_answer_time(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    store
        .append(&[
            event("call-1", 1, CallEventKind::Detected),
            event("call-1", 2, CallEventKind::Routed),
            event("call-1", 3, ended("cancel")),
        ])
        .await
        .unwrap();
    let s = store.call_summary("call-1").await.unwrap().unwrap();
    assert_eq!(s.outcome, CallOutcome::Ended);
    assert_eq!(s.answered_at, None);
    assert_eq!(s.ended_at, Some(t0() + Duration::seconds(3)));
}

store_test!(summary_of_a_failed_call);
async fn summary_of_a_failed_call(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let mut second = event("call-f", 4, CallEventKind::Routed);
    second.route = Some(route("provider-b", 1));
    let mut failed = event("call-f", 5, CallEventKind::Failed { status: 503, reason: "all routes failed".into() });
    failed.route = Some(route("provider-b", 1));
    store
        .append(&[
            event("call-f", 1, CallEventKind::Detected),
            event("call-f", 2, CallEventKind::Routed),
            event("call-f", 3, CallEventKind::RouteFailed { reason: "408 Request Timeout".into() }),
            second,
            failed,
        ])
        .await
        .unwrap();
    let s = store.call_summary("call-f").await.unwrap().unwrap();
    assert_eq!(s.outcome, CallOutcome::Failed);
    assert_eq!(s.outcome_detail, "503 all routes failed");
    assert_eq!(s.route.as_deref(), Some("provider-b"));
    assert_eq!(s.answered_at, None);
    assert_eq!(s.ended_at, Some(t0() + Duration::seconds(5)));
    assert_eq!(s.event_count, 5);
}

store_test!(summary_records_the_acknowledgement);
async fn summary_records_the_acknowledgement(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    store
        .append(&[event("call-a", 1, CallEventKind::Detected), event("call-a", 2, CallEventKind::Routed)])
        .await
        .unwrap();
    // Later events in a later transaction: the summary is read back and continued.
    store
        .append(&[
            event(
                "call-a",
                3,
                CallEventKind::Notified {
                    uri: "sip:security@contoso.example".into(),
                    ok: true,
                    detail: "202 Accepted".into(),
                },
            ),
            event("call-a", 4, CallEventKind::Acknowledged { by: "officer.jones".into(), desk: String::new() }),
            event("call-a", 5, CallEventKind::DeskJoined { desk: "desk-1".into(), mode: "listen".into(), auto: false }),
        ])
        .await
        .unwrap();
    let s = store.call_summary("call-a").await.unwrap().unwrap();
    assert_eq!(s.outcome, CallOutcome::Routing, "side events do not change the outcome");
    assert_eq!(s.acknowledged_by.as_deref(), Some("officer.jones"));
    assert_eq!(s.acknowledged_at, Some(t0() + Duration::seconds(4)));
    assert_eq!(s.event_count, 5);
    assert_eq!((s.first_seq, s.last_seq), (1, 5));
}

store_test!(history_is_newest_first);
async fn history_is_newest_first(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    // Stored out of time order on purpose: the history orders by when the call started.
    for (id, minutes) in [("call-b", 10), ("call-a", 0), ("call-c", 20)] {
        let start = t0() + Duration::minutes(minutes);
        store
            .append(&[event_at(id, 1, start, CallEventKind::Detected), event_at(id, 2, start, CallEventKind::Routed)])
            .await
            .unwrap();
    }
    let ids = |h: Vec<sosdesk::audit::CallSummary>| h.into_iter().map(|s| s.call_id).collect::<Vec<_>>();
    assert_eq!(ids(store.history(10).await.unwrap()), ["call-c", "call-b", "call-a"]);
    assert_eq!(ids(store.history(2).await.unwrap()), ["call-c", "call-b"]);
    assert_eq!(ids(store.history(0).await.unwrap()), Vec::<String>::new());
    // The desk app gets it as JSON.
    let json = serde_json::to_value(&store.history(1).await.unwrap()[0]).unwrap();
    assert_eq!(json["call_id"], "call-c");
    assert_eq!(json["outcome"], "routing");
    assert_eq!(json["location"], LOCATION_TEXT);
}

// ---------------------------------------------------------------------------------------------
// CSV export

/// RFC 4180 reader, to check that the export reads back as written.
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "bare CR outside quotes");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty() && !quoted, "unterminated last record");
    rows
}

store_test!(csv_export_quotes_and_neutralises_caller_text);
async fn csv_export_quotes_and_neutralises_caller_text(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let nasty = "Smith, \"Bob\"\nSecond line";
    let formula = "=cmd|' /C calc'!A0";
    let mut first = event("call-1", 1, CallEventKind::Detected);
    first.caller.display_name = Some(nasty.into());
    let mut second = event("call-2", 1, CallEventKind::Detected);
    second.caller.display_name = Some(formula.into());
    let mut third = event("call-2", 2, CallEventKind::RouteFailed { reason: "503 Service Unavailable, retry".into() });
    third.caller.display_name = None;
    store.append(&[first, second, third]).await.unwrap();
    let recs = [store.call_events("call-1").await.unwrap(), store.call_events("call-2").await.unwrap()].concat();

    let mut out = Vec::new();
    store.export_csv(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();

    let expected = format!(
        "seq,at,call_id,call_seq,kind,caller_number,caller_name,dialed,location,route,detail,prev_hash,hash\r\n\
         1,2026-03-14T09:26:54.589793238Z,call-1,1,detected,'+14255550123,\"Smith, \"\"Bob\"\"\nSecond line\",9911,\"{LOCATION_TEXT}\",,,{},{}\r\n\
         2,2026-03-14T09:26:54.589793238Z,call-2,1,detected,'+14255550123,'=cmd|' /C calc'!A0,9911,\"{LOCATION_TEXT}\",,,{},{}\r\n\
         3,2026-03-14T09:26:55.589793238Z,call-2,2,route-failed,'+14255550123,,9911,\"{LOCATION_TEXT}\",provider-a,\"503 Service Unavailable, retry\",{},{}\r\n",
        GENESIS_HASH, recs[0].hash, recs[0].hash, recs[1].hash, recs[1].hash, recs[2].hash,
    );
    assert_eq!(text, expected);

    // And it reads back: 13 columns everywhere, the display name intact apart from the guard.
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.len() == 13));
    assert_eq!(rows[1][6], nasty);
    assert_eq!(rows[2][6], format!("'{formula}"));
}

store_test!(csv_export_names_a_location_only_where_one_applies);
async fn csv_export_names_a_location_only_where_one_applies(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let mut unlocated = event("call-u", 1, CallEventKind::Detected);
    unlocated.location = LocationSnapshot::none();
    let entered = |change: &str, location: &str| {
        let kind = CallEventKind::UserLocationChanged {
            owner: "alice".into(),
            change: change.into(),
            by: "cli".into(),
            via: "cli".into(),
            from: String::new(),
            location: location.into(),
            network: String::new(),
        };
        CallEvent::of_no_call(format!("user-location-{change}"), Caller::nobody(), String::new(), kind, t0())
    };
    store
        .append(&[
            event("call-l", 1, CallEventKind::Detected),
            unlocated,
            CallEvent::route_health("provider-a".into(), false, "503".into(), t0()),
            entered("entered", "Alice, home: 9100 Willows Rd, Redmond, WA, US"),
            entered("cleared", ""),
        ])
        .await
        .unwrap();
    let mut out = Vec::new();
    store.export_csv(&mut out).await.unwrap();
    let rows = parse_csv(&String::from_utf8(out).unwrap());
    let location: Vec<(&str, &str)> = rows[1..].iter().map(|r| (r[4].as_str(), r[8].as_str())).collect();
    assert_eq!(
        location,
        [
            ("detected", LOCATION_TEXT),
            // A call nobody could locate says so…
            ("detected", "unknown"),
            // …a route's health is about no place…
            ("route-down", ""),
            // …and a user-entered location's record names the address kept, or none once cleared.
            ("user-location-changed", "Alice, home: 9100 Willows Rd, Redmond, WA, US"),
            ("user-location-changed", ""),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Background writer

store_test!(writer_stores_5000_events_from_several_tasks);
async fn writer_stores_5000_events_from_several_tasks(db: TestDb) {
    const TASKS: u32 = 8;
    const CALLS_PER_TASK: u32 = 125;
    let store = AuditStore::open(db.location()).await.unwrap();
    let writer = spawn_writer(store.clone());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            for c in 0..CALLS_PER_TASK {
                for ev in answered_call(&format!("t{t}-c{c}")) {
                    w.record(ev);
                }
                // Let the other tasks interleave with this one.
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    writer.flush().await;

    assert_eq!(db.count("events").await, 5_000);
    assert_eq!(db.count("calls").await, 1_000);
    assert_eq!(writer.health().committed, 5_000);
    assert_eq!(writer.health().failed_attempts, 0);
    let report = store.verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.rows_checked, 5_000);
    assert_eq!(report.last_seq, Some(5_000));
    // Each task's events keep their order.
    for call in ["t0-c0", "t3-c77", "t7-c124"] {
        let seqs: Vec<i64> = store.call_events(call).await.unwrap().iter().map(|r| r.call_seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "{call}");
        assert_eq!(store.call_summary(call).await.unwrap().unwrap().outcome, CallOutcome::Ended);
    }
    writer.shutdown().await;
}

store_test!(record_durable_returns_after_commit);
async fn record_durable_returns_after_commit(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let writer = spawn_writer(store);
    let seq = writer.record_durable(event("call-1", 1, CallEventKind::Detected)).await.unwrap();
    assert_eq!(seq, 1);
    // Visible to another handle at once: it is committed, not just queued.
    let other = AuditStore::open(db.location()).await.unwrap();
    assert_eq!(other.call_events("call-1").await.unwrap().len(), 1);
    let seq = writer.record_durable(event("call-1", 2, CallEventKind::Routed)).await.unwrap();
    assert_eq!(seq, 2);
}

store_test!(shutdown_writes_everything_queued);
async fn shutdown_writes_everything_queued(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let writer = spawn_writer(store);
    let late = writer.clone();
    for c in 0..20 {
        for ev in answered_call(&format!("c{c}")) {
            writer.record(ev);
        }
    }
    writer.shutdown().await;
    assert_eq!(db.count("events").await, 100);
    // Nothing can be recorded after the shutdown; the caller is told so.
    let err = late.record_durable(event("late", 1, CallEventKind::Detected)).await.unwrap_err();
    assert!(matches!(err, AuditError::WriterClosed), "{err:?}");
    late.flush().await; // returns, does not hang
    assert_eq!(db.count("events").await, 100);
}

store_test!(writer_keeps_events_while_the_store_fails_and_retries);
async fn writer_keeps_events_while_the_store_fails_and_retries(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let writer = spawn_writer(store.clone());
    writer.record_durable(event("call-1", 1, CallEventKind::Detected)).await.unwrap();

    // Break the store underneath the writer: its next transaction fails.
    let mut c = db.raw().await;
    sqlx::query("ALTER TABLE calls RENAME TO calls_away").execute(&mut c).await.unwrap();

    for ev in &answered_call("call-1")[1..4] {
        writer.record(ev.clone());
    }
    let w = writer.clone();
    let last = tokio::spawn(async move { w.record_durable(event("call-1", 5, ended("caller"))).await });

    // Wait (on the writer's own state, not a timer) until it has failed at least once.
    let mut health = writer.watch_health();
    let h = health.wait_for(|h| h.failed_attempts >= 1).await.unwrap().clone();
    let missing = if db.is_postgres() { "relation \"calls\" does not exist" } else { "no such table: calls" };
    assert!(h.last_error.as_deref().unwrap_or_default().contains(missing), "{h:?}");
    assert!(h.retrying >= 1);
    assert_eq!(db.count("events").await, 1, "the failed batch was rolled back");

    // Repair; the retry stores everything, in order, once.
    sqlx::query("ALTER TABLE calls_away RENAME TO calls").execute(&mut c).await.unwrap();
    c.close().await.unwrap();
    assert_eq!(last.await.unwrap().unwrap(), 5);
    writer.flush().await;
    assert_eq!(db.count("events").await, 5);
    let seqs: Vec<i64> = store.call_events("call-1").await.unwrap().iter().map(|r| r.call_seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert!(store.verify().await.unwrap().is_ok());
    let h = writer.health();
    assert_eq!((h.committed, h.retrying, h.last_error), (5, 0, None));
}

// ---------------------------------------------------------------------------------------------
// A killed process keeps what it acknowledged

const KILL_CHILD_ENV: &str = "SOSDESK_AUDIT_KILL_CHILD_DB";
/// The helper's name in the test binary (`tests/it`, where this file is the `audit_store` module).
const KILL_CHILD_TEST: &str = "audit_store::kill_child_records_until_killed";

/// Run by `killed_process_keeps_acknowledged_events` in a child process: records events in groups
/// of 50, and after each group prints `ACK <seq>` once the group's last event is committed.
#[tokio::test]
#[ignore = "helper process, started by killed_process_keeps_acknowledged_events"]
async fn kill_child_records_until_killed() {
    let Ok(path) = std::env::var(KILL_CHILD_ENV) else { return };
    let writer = spawn_writer(AuditStore::open(Path::new(&path)).await.unwrap());
    // Bounded, so a child whose parent died does not write forever.
    for group in 0..2_000u32 {
        for c in 0..10 {
            let call = format!("g{group}-c{c}");
            let events = answered_call(&call);
            for ev in &events[..4] {
                writer.record(ev.clone());
            }
            if c < 9 {
                writer.record(events[4].clone());
            } else {
                let seq = writer.record_durable(events[4].clone()).await.unwrap();
                println!("ACK {seq}");
            }
        }
    }
}

/// Kills the child on drop, so a failing assertion does not leave it running.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn killed_process_keeps_acknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([KILL_CHILD_TEST, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(KILL_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut acked = 0i64;
    let mut acks = 0;
    // Kept open until after the kill: a closed pipe would make the child's next println fail and
    // stop it before it is killed.
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest prints "test <name> ... " without a newline before the first output line.
        if let Some((_, seq)) = line.split_once("ACK ") {
            acked = seq.parse().unwrap();
            acks += 1;
            if acks == 10 {
                break;
            }
        }
    }
    assert_eq!(acks, 10, "child stopped early");
    // SIGKILL while it is still writing: no destructor, no flush, no checkpoint.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    drop(lines);
    assert_eq!(acked, 500, "ten groups of 50 events");

    let store = AuditStore::open(&path).await.unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.rows_checked >= acked as u64, "acknowledged {acked}, found {}", report.rows_checked);
    let last_acked_call = store.call_summary("g9-c9").await.unwrap().unwrap();
    assert_eq!(last_acked_call.outcome, CallOutcome::Ended);
}

// ---------------------------------------------------------------------------------------------
// Throughput, measured by hand:
//   cargo test --release --test it -- --ignored audit_store::writer_throughput --nocapture
// (`::sqlite` and `::postgres`)

store_test!(
    #[ignore = "measurement, run by hand in --release"]
    writer_throughput
);
async fn writer_throughput(db: TestDb) {
    let store = AuditStore::open(db.location()).await.unwrap();
    let writer = spawn_writer(store);
    let calls: Vec<Vec<CallEvent>> = (0..4_000).map(|c| answered_call(&format!("c{c}"))).collect();
    let started = std::time::Instant::now();
    for call in calls {
        for ev in call {
            writer.record(ev);
        }
    }
    let queued = started.elapsed();
    writer.flush().await;
    let elapsed = started.elapsed();
    assert_eq!(db.count("events").await, 20_000);
    println!(
        "20000 events: queued in {queued:?}, committed in {elapsed:?} = {:.0} events/s",
        20_000.0 / elapsed.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Several nodes on one PostgreSQL database (issue 14): one chain

/// Two core nodes — two stores, two pools, as two processes on two machines would have — append
/// at the same time to one PostgreSQL database. Each append waits for the other's (the chain head
/// lock), so the log is one unbroken chain holding every event of both, each row naming its node;
/// verify, history and the per-call reads see both nodes' rows; an edited row is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_to_one_chain() {
    const CALLS: usize = 60;
    let db = TestDb::postgres();
    let a = AuditStore::open(db.location()).await.unwrap().with_node(Some("node-a"));
    let b = AuditStore::open(db.location()).await.unwrap().with_node(Some("node-b"));
    let node = |store: AuditStore, name: &'static str| {
        tokio::spawn(async move {
            for c in 0..CALLS {
                let events = answered_call(&format!("{name}-c{c}"));
                // Two batches per call, as the writer commits whatever is queued.
                store.append(&events[..2]).await.unwrap();
                store.append(&events[2..]).await.unwrap();
            }
        })
    };
    let (ta, tb) = (node(a.clone(), "node-a"), node(b.clone(), "node-b"));
    ta.await.unwrap();
    tb.await.unwrap();

    let total = (2 * CALLS * 5) as u64;
    for store in [&a, &b] {
        let report = store.verify().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.rows_checked, total);
        assert_eq!(report.last_seq, Some(total as i64));
        assert_eq!(store.history(1_000).await.unwrap().len(), 2 * CALLS, "history shows both nodes' calls");
    }
    assert_eq!(a.call_events("node-b-c7").await.unwrap().len(), 5, "node A reads node B's rows");
    let mut c = db.raw().await;
    let per_node: Vec<(String, i64)> = sqlx::query_as("SELECT node, count(*) FROM events GROUP BY node ORDER BY node")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(per_node, [("node-a".to_string(), (CALLS * 5) as i64), ("node-b".to_string(), (CALLS * 5) as i64)]);
    // The two nodes' appends did interleave: otherwise this proves nothing about concurrency.
    let switches: (i64,) =
        sqlx::query_as("SELECT count(*) FROM events e JOIN events f ON f.seq = e.seq + 1 WHERE e.node <> f.node")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(switches.0 > 1, "the nodes never interleaved ({} switches)", switches.0);

    // Tampering with one node's row is found, whichever node verifies.
    db.drop_trigger("events_append_only_update").await;
    sqlx::query("UPDATE events SET payload = replace(payload, 'Alice Example', 'Mallory') WHERE seq = 100")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    for store in [&a, &b] {
        let p = store.verify().await.unwrap().first_problem.expect("tampering not detected");
        assert_eq!(p.seq, 100);
        assert!(matches!(p.reason, VerifyReason::HashMismatch { .. }), "{p}");
    }
}

/// A node that starts ends the calls it left open when it stopped — not another node's, which
/// may be up on that node.
#[tokio::test]
async fn a_starting_node_ends_only_its_own_interrupted_calls() {
    let db = TestDb::postgres();
    let a = AuditStore::open(db.location()).await.unwrap().with_node(Some("node-a"));
    let b = AuditStore::open(db.location()).await.unwrap().with_node(Some("node-b"));
    a.append(&answered_call("call-a")[..4]).await.unwrap();
    b.append(&answered_call("call-b")[..4]).await.unwrap();
    assert_eq!(b.close_interrupted_calls(t0() + Duration::seconds(60), "restart").await.unwrap(), 1);
    assert_eq!(a.call_summary("call-a").await.unwrap().unwrap().outcome, CallOutcome::Answered, "A's call is left up");
    assert_eq!(b.call_summary("call-b").await.unwrap().unwrap().outcome, CallOutcome::Ended);
    assert_eq!(a.close_interrupted_calls(t0() + Duration::seconds(60), "restart").await.unwrap(), 1);
    assert_eq!(a.call_summary("call-a").await.unwrap().unwrap().outcome, CallOutcome::Ended);
    assert!(a.verify().await.unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Opening a PostgreSQL store: clear errors, never the password

#[tokio::test]
async fn postgres_open_errors_are_clear_and_never_show_the_password() {
    use crate::support::postgres::PASSWORD;
    let db = TestDb::postgres();
    let TestDb::Postgres { server, db: name } = &db else { unreachable!() };
    let open = |url: String| async move {
        let location = sosdesk::db::Location::parse_url(&url).unwrap();
        let e = AuditStore::open(location).await.unwrap_err();
        let text = format!("{e} / {e:?}");
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
        text
    };
    // An open store shows where it is, never the password (Debug included: it ends up in logs).
    let store = AuditStore::open(db.location()).await.unwrap();
    let shown = format!("{} / {store:?}", store.location());
    assert!(shown.contains(&format!("postgres://sosdesk@127.0.0.1:{}/{name}", server.port)), "{shown}");
    assert!(!shown.contains(PASSWORD), "the password leaked: {shown}");
    // A wrong password: PostgreSQL's own words.
    let wrong = server.url(name).replace(PASSWORD, &format!("{PASSWORD}-wrong"));
    let text = open(wrong).await;
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("-wrong"), "{text}");
    // No such database.
    let text = open(server.url("nosuchdb")).await;
    assert!(text.contains("does not exist"), "{text}");
    // Nothing listening: refused at once, not after the pool's timeout.
    let closed = crate::support::lab::free_port();
    let url = server.url(name).replace(&format!(":{}/", server.port), &format!(":{closed}/"));
    let started = std::time::Instant::now();
    let text = open(url).await;
    assert!(text.contains("refused"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(text.contains(&format!("postgres://sosdesk@127.0.0.1:{closed}/{name}")), "names the store: {text}");
}
