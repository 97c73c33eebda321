//! The hash chain over the `events` table, and its verification.
//!
//! # The formula
//!
//! For the row with global sequence number `seq`:
//!
//! ```text
//! hash = lower-hex( SHA-256( prev_hash + "\n" + seq + "\n" + payload ) )
//! ```
//!
//! - `prev_hash` is the 64-character lower-case hex `hash` of row `seq - 1`; for row 1 it is
//!   64 × `"0"` ([`GENESIS_HASH`]).
//! - `seq` is written in decimal ASCII without sign or leading zeros (`1`, `2`, … `10`).
//! - `payload` is the exact UTF-8 text stored in `events.payload` (the `CallEvent` as JSON). It is
//!   hashed as stored, never re-serialised, so an auditor needs no knowledge of the JSON layout.
//! - `"\n"` is one byte 0x0A. Neither a hash nor a decimal number can contain it, so the three
//!   parts cannot be shifted into each other.
//!
//! Because every hash covers the previous one, editing a payload, editing a hash, deleting a row
//! or reordering rows breaks the chain at (or right after) the row concerned. The hash covers
//! `seq`, so renumbering rows to close a gap breaks it too. Rows cut off at the end of the chain
//! leave the chain itself intact; the `chain_head` row (last seq and hash, written in the same
//! transaction) catches that, and an auditor who keeps [`VerifyReport::last_hash`] from an
//! earlier run can check that the chain still passes through it.
//!
//! The columns `call_id`, `call_seq`, `at` and `kind` repeat fields of the payload for indexing.
//! They are not hashed; [`ChainChecker`] checks that they agree with the payload instead.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `prev_hash` of row 1.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `hex(sha256(prev_hash + "\n" + seq + "\n" + payload))`: see the module documentation.
pub fn chain_hash(prev_hash: &str, seq: i64, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

/// Result of [`AuditStore::verify`](super::AuditStore::verify).
/// The audit log's integrity in an officer's words, as a desk shows it with a call's detail
/// (computed by [`AuditStore::chain_check`](super::AuditStore::chain_check)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ts_rs::TS)]
pub struct ChainCheck {
    pub ok: bool,
    pub rows_checked: u32,
    /// "hash chain intact over 1,234 events" or the first problem found.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct VerifyReport {
    /// Rows read and checked (all rows of the table, also after a problem was found).
    #[ts(type = "number")]
    pub rows_checked: u64,
    /// Rows with at least one problem.
    #[ts(type = "number")]
    pub bad_rows: u64,
    /// The first problem in chain order; `None` when the chain is intact.
    pub first_problem: Option<VerifyProblem>,
    /// The newest row as found: keep `last_hash` somewhere else (a ticket, a printout) and a later
    /// verify can prove the chain still runs through it.
    #[ts(type = "number | null")]
    pub last_seq: Option<i64>,
    pub last_hash: Option<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct VerifyProblem {
    /// The first bad seq: the row that fails, or for a gap the first seq that is missing.
    #[ts(type = "number")]
    pub seq: i64,
    pub reason: VerifyReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum VerifyReason {
    /// The stored hash is not the hash of the row's prev_hash, seq and payload: the payload or the
    /// hash was changed.
    HashMismatch { stored: String, computed: String },
    /// The row's prev_hash is not the previous row's hash: a row before it was changed, removed
    /// or moved.
    PrevHashMismatch { stored: String, expected: String },
    /// seq `expected` should come next, the table has `found` (rows deleted, or numbering edited).
    SeqGap {
        #[ts(type = "number")]
        expected: i64,
        #[ts(type = "number")]
        found: i64,
    },
    /// An indexed column disagrees with the payload it was copied from.
    ColumnMismatch { column: String, stored: String, payload: String },
    /// The payload is not the JSON of a CallEvent.
    BadPayload { error: String },
    /// The chain head (seq and hash of the newest row, kept apart) does not match the newest row:
    /// rows were cut off the end, or added around the store.
    HeadMismatch {
        #[ts(type = "number | null")]
        head_seq: Option<i64>,
        head_hash: Option<String>,
    },
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {}: ", self.seq)?;
        match &self.reason {
            VerifyReason::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch (stored {stored}, computed {computed})")
            }
            VerifyReason::PrevHashMismatch { stored, expected } => {
                write!(f, "prev_hash mismatch (stored {stored}, previous row's hash {expected})")
            }
            VerifyReason::SeqGap { expected, found } => {
                write!(f, "gap in seq (expected {expected}, found {found})")
            }
            VerifyReason::ColumnMismatch { column, stored, payload } => {
                write!(f, "column {column} is {stored:?} but the payload says {payload:?}")
            }
            VerifyReason::BadPayload { error } => write!(f, "payload is not a CallEvent: {error}"),
            VerifyReason::HeadMismatch { head_seq, head_hash } => match (head_seq, head_hash) {
                (Some(s), Some(h)) => write!(f, "chain head says seq {s} hash {h}: rows missing at the end"),
                _ => write!(f, "chain head missing"),
            },
        }
    }
}

/// One stored row, as the checker needs it.
pub(crate) struct ChainRow<'a> {
    pub seq: i64,
    pub call_id: &'a str,
    pub call_seq: i64,
    pub at: &'a str,
    pub kind: &'a str,
    pub payload: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

/// Checks rows fed in seq order. Kept apart from the database so the rules are unit-tested and
/// read in one place.
pub(crate) struct ChainChecker {
    expected_seq: i64,
    prev_hash: String,
    rows_checked: u64,
    bad_rows: u64,
    first_problem: Option<VerifyProblem>,
}

impl ChainChecker {
    pub fn new() -> Self {
        ChainChecker {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            rows_checked: 0,
            bad_rows: 0,
            first_problem: None,
        }
    }

    pub fn check(&mut self, row: &ChainRow<'_>) {
        self.rows_checked += 1;
        // All problems of a row are looked at, the first one is kept: a deleted row shows as a gap
        // (the clearest reason) although the next row's prev_hash is wrong as well.
        let mut problem: Option<VerifyProblem> = None;
        let mut note = |seq: i64, reason: VerifyReason| {
            if problem.is_none() {
                problem = Some(VerifyProblem { seq, reason });
            }
        };
        if row.seq != self.expected_seq {
            note(self.expected_seq, VerifyReason::SeqGap { expected: self.expected_seq, found: row.seq });
        }
        if row.prev_hash != self.prev_hash {
            note(
                row.seq,
                VerifyReason::PrevHashMismatch { stored: row.prev_hash.to_string(), expected: self.prev_hash.clone() },
            );
        }
        let computed = chain_hash(row.prev_hash, row.seq, row.payload);
        if computed != row.hash {
            note(row.seq, VerifyReason::HashMismatch { stored: row.hash.to_string(), computed });
        }
        if let Some(reason) = check_columns(row) {
            note(row.seq, reason);
        }
        if let Some(p) = problem {
            self.bad_rows += 1;
            if self.first_problem.is_none() {
                self.first_problem = Some(p);
            }
        }
        // Continue from what is stored, so one damaged row is reported once, not for the rest of
        // the table.
        self.expected_seq = row.seq + 1;
        self.prev_hash = row.hash.to_string();
    }

    /// `head`: the chain_head row (seq, hash), if any. `last`: the newest row read.
    pub fn finish(mut self, head: Option<(i64, String)>, last: Option<(i64, String)>) -> VerifyReport {
        let head_ok = match (&head, &last) {
            (None, None) => true,
            (Some(h), Some(l)) => h == l,
            _ => false,
        };
        if !head_ok && self.first_problem.is_none() {
            let last_seq = last.as_ref().map(|l| l.0).unwrap_or(0);
            // Head beyond the last row: the rows after the last one are missing, report the first.
            let seq = match &head {
                Some((hs, _)) if *hs > last_seq => last_seq + 1,
                _ => last_seq.max(1),
            };
            self.first_problem = Some(VerifyProblem {
                seq,
                reason: VerifyReason::HeadMismatch {
                    head_seq: head.as_ref().map(|h| h.0),
                    head_hash: head.as_ref().map(|h| h.1.clone()),
                },
            });
        }
        VerifyReport {
            rows_checked: self.rows_checked,
            bad_rows: self.bad_rows,
            first_problem: self.first_problem,
            last_seq: last.as_ref().map(|l| l.0),
            last_hash: last.map(|l| l.1),
        }
    }
}

/// The indexed columns must repeat the payload. Read as generic JSON rather than as `CallEvent`, so
/// rows written by an older or newer `CallEvent` version still verify.
fn check_columns(row: &ChainRow<'_>) -> Option<VerifyReason> {
    let v: serde_json::Value = match serde_json::from_str(row.payload) {
        Ok(v) => v,
        Err(e) => return Some(VerifyReason::BadPayload { error: e.to_string() }),
    };
    let mismatch = |column: &str, stored: String, payload: String| {
        Some(VerifyReason::ColumnMismatch { column: column.to_string(), stored, payload })
    };
    let p_call_id = v.get("call_id").and_then(|x| x.as_str()).unwrap_or_default();
    if p_call_id != row.call_id {
        return mismatch("call_id", row.call_id.to_string(), p_call_id.to_string());
    }
    let p_seq = v.get("seq").and_then(|x| x.as_i64());
    if p_seq != Some(row.call_seq) {
        return mismatch("call_seq", row.call_seq.to_string(), format!("{p_seq:?}"));
    }
    let p_at = v.get("at").and_then(|x| x.as_str()).unwrap_or_default();
    let p_at_norm = chrono::DateTime::parse_from_rfc3339(p_at)
        .map(|t| super::timestamp(&t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|_| p_at.to_string());
    if p_at_norm != row.at {
        return mismatch("at", row.at.to_string(), p_at.to_string());
    }
    let p_kind = v.get("kind").and_then(|k| k.get("type")).and_then(|x| x.as_str()).unwrap_or_default();
    if p_kind != row.kind {
        return mismatch("kind", row.kind.to_string(), p_kind.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_formula_matches_an_independent_implementation() {
        // Computed with coreutils:
        //   printf '%s\n%s\n%s' 0000…0000 1 '{"a":1}' | sha256sum
        assert_eq!(
            chain_hash(GENESIS_HASH, 1, r#"{"a":1}"#),
            "58a8b64ede0a31c39c4c0afb728c913a6b777e6ee987ceea8e4264a089470621"
        );
    }

    #[test]
    fn seq_is_decimal_without_padding() {
        // 10 and 010 must not hash alike, and 1 + "0\n…" must not equal 10 + "\n…".
        assert_ne!(chain_hash(GENESIS_HASH, 10, "x"), chain_hash(GENESIS_HASH, 1, "0\nx"));
    }

    fn payload(call_seq: i64, kind: &str) -> String {
        format!(
            r#"{{"call_id":"c1","seq":{call_seq},"at":"2026-01-02T03:04:05.000000006Z","kind":{{"type":"{kind}"}}}}"#
        )
    }

    struct Owned {
        seq: i64,
        payload: String,
        prev_hash: String,
        hash: String,
    }

    fn chain(n: i64) -> Vec<Owned> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let payload = payload(seq, "detected");
                let hash = chain_hash(&prev, seq, &payload);
                let row = Owned { seq, payload, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                row
            })
            .collect()
    }

    fn run(rows: &[Owned]) -> VerifyReport {
        let mut c = ChainChecker::new();
        for r in rows {
            c.check(&ChainRow {
                seq: r.seq,
                call_id: "c1",
                call_seq: r.seq,
                at: "2026-01-02T03:04:05.000000006Z",
                kind: "detected",
                payload: &r.payload,
                prev_hash: &r.prev_hash,
                hash: &r.hash,
            });
        }
        let last = rows.last().map(|r| (r.seq, r.hash.clone()));
        c.finish(last.clone(), last)
    }

    #[test]
    fn intact_chain_passes() {
        let r = run(&chain(5));
        assert_eq!(r.first_problem, None);
        assert_eq!(r.rows_checked, 5);
        assert_eq!(r.last_seq, Some(5));
    }

    #[test]
    fn gap_reports_the_missing_seq() {
        let mut rows = chain(5);
        rows.remove(2);
        let r = run(&rows);
        let p = r.first_problem.unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(p.reason, VerifyReason::SeqGap { expected: 3, found: 4 });
        assert_eq!(r.bad_rows, 1);
    }

    #[test]
    fn edited_payload_is_a_hash_mismatch() {
        let mut rows = chain(4);
        // Same JSON meaning, different bytes: the chain is over bytes.
        rows[1].payload = payload(2, "detected").replacen('{', "{ ", 1);
        let r = run(&rows);
        let p = r.first_problem.unwrap();
        assert_eq!(p.seq, 2);
        assert!(matches!(p.reason, VerifyReason::HashMismatch { .. }), "{p}");
    }
}
