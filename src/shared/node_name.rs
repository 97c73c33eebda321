//! One live node per name on a shared store (`[store] node`). Two nodes of one name would take
//! each other's events for their own (the event follower skips its own node's rows) and, at
//! start, end each other's calls as interrupted. A node therefore holds, for its whole life, a
//! PostgreSQL session-level advisory lock on its name (PostgreSQL manual, "Advisory Locks":
//! `pg_try_advisory_lock` returns false at once when another session holds it, and the server
//! releases it when the session ends — a node that stops, crashes or is cut off frees its name
//! as soon as the server drops its connection). A second node starting with a live name is
//! refused before it touches anything.
//!
//! The lock is held by a connection of its own, outside the pool: a pooled connection may be
//! closed and replaced at any time, and the lock would go with it.

use sqlx::Connection;

use crate::db::Db;

/// The namespace of the advisory lock key: PostgreSQL has one key space per database, shared
/// with whatever else uses advisory locks there; `hashtextextended` of this prefix and the name
/// gives a 64-bit key.
const KEY_PREFIX: &str = "sosdesk node ";

/// A node's claim on its name; released when dropped or [`release`](NodeNameClaim::release)d.
pub struct NodeNameClaim {
    conn: Option<sqlx::postgres::PgConnection>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another node named {0:?} is running on this store: give each node its own [store] node (default: the host name)"
    )]
    Taken(String),
    #[error("cannot claim the node name {name:?} on the store: {why}")]
    Store { name: String, why: String },
}

impl NodeNameClaim {
    /// Claims `name` on `db`. SQLite (one node, the file's own lock) and an unnamed node claim
    /// nothing.
    pub async fn claim(db: &Db, name: Option<&str>) -> Result<NodeNameClaim, ClaimError> {
        let Some(name) = name else { return Ok(NodeNameClaim { conn: None }) };
        let store = |why: String| ClaimError::Store { name: name.to_string(), why };
        let Some(conn) = db.pg_connection().await else { return Ok(NodeNameClaim { conn: None }) };
        let mut conn = conn.map_err(store)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("{KEY_PREFIX}{name}"))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| store(e.to_string()))?;
        if !got {
            let _ = conn.close().await;
            return Err(ClaimError::Taken(name.to_string()));
        }
        Ok(NodeNameClaim { conn: Some(conn) })
    }

    /// Gives the name up (closing the session releases the lock at once).
    pub async fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// Whether a node named `name` is live on `db` (holds its name's lock): read from `pg_locks`,
/// where a 64-bit advisory key shows as `classid` (high half) and `objid` (low half) with
/// `objsubid` 1 (PostgreSQL manual, "pg_locks"). False for SQLite.
pub async fn is_live(db: &Db, name: &str) -> Result<bool, sqlx::Error> {
    if db.backend != crate::db::Backend::Postgres {
        return Ok(false);
    }
    let sql = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)";
    let n: i64 = sqlx::query_scalar(sql).bind(format!("{KEY_PREFIX}{name}")).fetch_one(&db.pool).await?;
    Ok(n > 0)
}
