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

/// How often the session holding the name is checked. When it has ended (a PostgreSQL restart
/// or failover, a cut connection), the name is claimed again on a new session: until then a
/// second node of this name would not be refused, and other nodes take this one for gone.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A node's claim on its name, kept by a task of its own for the node's life; released when
/// dropped or [`release`](NodeNameClaim::release)d.
pub struct NodeNameClaim {
    keeper: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
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

/// One attempt: a new session that holds the lock, `Ok(None)` when another session holds it.
async fn try_claim(db: &Db, name: &str) -> Result<Option<sqlx::postgres::PgConnection>, String> {
    let Some(conn) = db.pg_connection().await else { return Err("not a PostgreSQL store".into()) };
    let mut conn = conn?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("{KEY_PREFIX}{name}"))
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if got {
        Ok(Some(conn))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

impl NodeNameClaim {
    /// Claims `name` on `db`. SQLite (one node, the file's own lock) and an unnamed node claim
    /// nothing.
    pub async fn claim(db: &Db, name: Option<&str>) -> Result<NodeNameClaim, ClaimError> {
        let Some(name) = name else { return Ok(NodeNameClaim { keeper: None }) };
        if db.backend != crate::db::Backend::Postgres {
            return Ok(NodeNameClaim { keeper: None });
        }
        let conn = match try_claim(db, name).await {
            Ok(Some(conn)) => conn,
            Ok(None) => return Err(ClaimError::Taken(name.to_string())),
            Err(why) => return Err(ClaimError::Store { name: name.to_string(), why }),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(keep(db.clone(), name.to_string(), conn, stopped));
        Ok(NodeNameClaim { keeper: Some((stop, task)) })
    }

    /// Gives the name up (closing the session releases the lock at once).
    pub async fn release(mut self) {
        if let Some((stop, task)) = self.keeper.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

/// Holds the name: checks the session every [`KEEP_EVERY`] and, once it has ended, claims the
/// name again on a new one (each check until it succeeds). Ends, closing the session (which
/// releases the lock), when told to or when the claim is dropped.
async fn keep(db: Db, name: String, conn: sqlx::postgres::PgConnection, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut held = Some(conn);
    let mut told_taken = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(KEEP_EVERY) => {}
        }
        if let Some(conn) = held.as_mut() {
            if conn.ping().await.is_ok() {
                continue;
            }
            tracing::error!(node = %name, "the store's session holding this node's name has ended (a database restart or failover?): claiming the name again");
            held = None;
        }
        match try_claim(&db, &name).await {
            Ok(Some(conn)) => {
                tracing::info!(node = %name, "this node's name is claimed again on the store");
                held = Some(conn);
                told_taken = false;
            }
            // Said once, then tried again at each check: the other node may be this one's
            // previous session not yet ended by the server.
            Ok(None) if !told_taken => {
                tracing::error!(node = %name, "another session holds this node's name on the store: is a second node running with [store] node = {name:?}?");
                told_taken = true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(node = %name, error = %e, "cannot claim this node's name again yet"),
        }
    }
    if let Some(conn) = held {
        let _ = conn.close().await;
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
