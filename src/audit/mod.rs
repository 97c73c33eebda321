//! Audit: the append-only, hash-chained event log and the call history.
//!
//! Every [`CallEvent`](crate::events::CallEvent) is stored as one row of the `events` table, in a
//! SQLite file (WAL, `synchronous=FULL`: a committed row survives a killed process and a power
//! cut) or in a PostgreSQL database that several core nodes share (`crate::db`): then the nodes
//! append to one chain, each in turn (see [`AuditStore::append`]), and every row names its node. Each row carries the SHA-256 hash of the previous row, so an edited, deleted or moved row
//! is found by [`AuditStore::verify`]; the formula is in [`chain`]. In the same transaction the
//! `calls` table keeps one [`CallSummary`] per call for the history view.
//!
//! The routing core does not wait for the disk: it hands events to an [`AuditWriter`]
//! ([`spawn_writer`]), whose task commits whatever is queued as one transaction, and retries
//! (keeping the events in memory) when the disk is full or the file locked. What it has not
//! committed when the process dies is in the [`journal`], written before the bytes of each
//! event leave, and recovered at the next start.
//!
//! Schema: `migrations/sqlite/` and `migrations/postgres/` at the repository root.

pub mod chain;
mod csv;
pub mod journal;
mod store;
mod summary;
mod writer;

use std::sync::Arc;

use crate::db::Location;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use chain::{chain_hash, ChainCheck, VerifyProblem, VerifyReason, VerifyReport, GENESIS_HASH};
pub use store::{AuditStore, HistoryQuery, EVENTS_CHANNEL};
pub use summary::{event_detail, CallOutcome, CallSummary};
pub use writer::{spawn_writer, AuditWriter, WriterHealth};

use crate::events::CallEvent;

/// One row of the audit log, with its event decoded.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ts_rs::TS)]
pub struct AuditRecord {
    /// Global position in the chain.
    #[ts(type = "number")]
    pub seq: i64,
    pub call_id: String,
    /// `CallEvent::seq`.
    #[ts(type = "number")]
    pub call_seq: i64,
    pub at: DateTime<Utc>,
    /// `CallEventKind::name()`.
    pub kind: String,
    /// One line of human detail ([`event_detail`]).
    pub detail: String,
    pub event: CallEvent,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store could not be opened or created (missing directory, not a database, no space, no
    /// server…).
    #[error("cannot open audit store {store}: {cause}")]
    Open { store: Arc<Location>, cause: String },
    /// The schema could not be brought up to date.
    #[error("cannot migrate audit store {store}: {source}")]
    Migrate {
        store: Arc<Location>,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed: `op` says what sosdesk was doing.
    #[error("audit store {store}: {op} failed: {source}")]
    Db {
        store: Arc<Location>,
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A stored row cannot be read back (e.g. a payload that is not a CallEvent).
    #[error("audit store {store}: row seq {seq} is unreadable: {reason}")]
    Corrupt { store: Arc<Location>, seq: i64, reason: String },
    /// An event could not be turned into JSON.
    #[error("cannot encode call event {call_id}/{call_seq}: {source}")]
    Encode {
        call_id: String,
        call_seq: u32,
        #[source]
        source: serde_json::Error,
    },
    /// Writing the export failed.
    #[error("audit export: write failed: {source}")]
    Export {
        #[source]
        source: std::io::Error,
    },
    /// The background writer has been shut down (or died), so the event was not taken.
    #[error("audit writer has stopped")]
    WriterClosed,
}

/// How times are stored (see [`crate::time::timestamp`], shared with the LIS store).
pub(crate) use crate::time::timestamp;
