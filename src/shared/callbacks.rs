//! ELIN callback mappings in the store (`elin_callbacks`), so that a PSAP's callback reaching
//! any node — or the node that routed the call, after a restart — finds the caller.
//!
//! The engine keeps its own mappings in memory ([`crate::routing::elin::ElinCache`]) and routes a
//! callback from there at once; the store is the sharing path. The shell writes each new mapping
//! here from a task of its own (a slow or failing store never holds a call up) and, when a
//! callback comes for an ELIN the engine has no mapping of, looks it up here within
//! [`LOOKUP_WITHIN`] and hands the answer back (`Engine::on_elin_found`).
//!
//! With several nodes (PostgreSQL), a node's own mappings no longer tell which of an ERL's
//! ELINs are free: two nodes would hand the same ELIN to two callers at once, and the PSAP's
//! callback would reach only the one written last. There the ELIN is claimed here before the
//! INVITE goes out ([`CallbackStore::claim`], bounded by [`CLAIM_WITHIN`]): the candidates
//! read, the chosen one written only if its row is unchanged, which the unique key on `elin`
//! serialises between nodes.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::Row;
use tokio::sync::mpsc;

use crate::db::Db;
use crate::routing::{ElinClaim, SharedElin};
use crate::sip::transaction::{Peer, Reconnect, Transport};

/// How long a waiting callback waits for the store before it is routed as with no mapping
/// (`routing.callback_fallback`, else 480): a PSAP must not hear silence because a database
/// is slow.
pub const LOOKUP_WITHIN: Duration = Duration::from_secs(2);

/// How long a call going out through an ELIN gateway waits for the store to claim its ELIN
/// ([`CallbackStore::claim`]) before it takes the one its node prefers: a few round trips to
/// PostgreSQL take milliseconds; the PSAP must not wait on a database that stalls.
pub const CLAIM_WITHIN: Duration = Duration::from_millis(300);

/// A mapping written to its ELIN, replacing whatever that ELIN had ([`CallbackStore::put`]);
/// the claim adds its condition ([`CallbackStore::claim`]).
const UPSERT: &str = "INSERT INTO elin_callbacks \
     (elin, call_ref, caller_number, caller_display, caller_transport, caller_addr, \
     reconnect_transport, reconnect_addr, reconnect_name, reconnect_call_ref, expires_ms, node) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (elin) DO UPDATE SET call_ref = excluded.call_ref, \
     caller_number = excluded.caller_number, caller_display = excluded.caller_display, \
     caller_transport = excluded.caller_transport, caller_addr = excluded.caller_addr, \
     reconnect_transport = excluded.reconnect_transport, reconnect_addr = excluded.reconnect_addr, \
     reconnect_name = excluded.reconnect_name, reconnect_call_ref = excluded.reconnect_call_ref, \
     expires_ms = excluded.expires_ms, node = excluded.node";

/// Rounds of a claim before it gives up (see [`CallbackStore::claim`]).
const ROUNDS: usize = 32;

/// Mappings waiting to be written; beyond, new ones are dropped (logged): the in-memory
/// mapping still serves callbacks to this node.
const WRITE_QUEUE: usize = 1024;

#[derive(Clone)]
pub struct CallbackStore {
    db: Db,
    node: Option<std::sync::Arc<str>>,
}

impl CallbackStore {
    pub fn new(db: Db, node: Option<&str>) -> CallbackStore {
        CallbackStore { db, node: node.map(std::sync::Arc::from) }
    }

    /// [`UPSERT`] (or a statement that begins with it) with `m`'s mapping bound to `elin`.
    fn upsert<'q>(
        &'q self,
        sql: &'q str,
        elin: &'q str,
        m: &'q SharedElin,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        sqlx::query(sql)
            .bind(elin)
            .bind(&m.call_ref)
            .bind(&m.caller_number)
            .bind(m.caller_display.as_deref())
            .bind(m.caller_peer.transport.as_str())
            .bind(m.caller_peer.addr.to_string())
            .bind(m.caller_reconnect.as_ref().map(|r| r.peer.transport.as_str()))
            .bind(m.caller_reconnect.as_ref().map(|r| r.peer.addr.to_string()))
            .bind(m.caller_reconnect.as_ref().and_then(|r| r.name.as_deref()))
            .bind(m.caller_reconnect.as_ref().map(|_| m.call_ref.as_str()))
            .bind(m.expires.timestamp_millis())
            .bind(self.node.as_deref())
    }

    /// Writes `m` (the newest mapping of its ELIN replaces the older), and drops the mappings
    /// that have expired: the table stays as small as the number of ELINs in use.
    pub async fn put(&self, m: &SharedElin) -> Result<(), sqlx::Error> {
        let sql = self.db.backend.sql(UPSERT);
        self.upsert(&sql, &m.elin, m).execute(&self.db.pool).await?;
        let sql = self.db.backend.sql("DELETE FROM elin_callbacks WHERE expires_ms <= ?");
        sqlx::query(&sql).bind(chrono::Utc::now().timestamp_millis()).execute(&self.db.pool).await?;
        Ok(())
    }

    /// Claims the first of `claim.candidates` that no other live call holds, writing the call's
    /// mapping to it, and returns it. A candidate is free when it has no row, its row has
    /// expired, or the row is this call's (a retry). When every one is held by a live call —
    /// which is usual: a mapping lives for the whole callback window, hours — the one whose
    /// mapping is oldest is taken over, as one node does (`ElinCache::preference`).
    ///
    /// Optimistic, two round trips: the candidates' rows are read, one is chosen, and the
    /// mapping is written with `INSERT … ON CONFLICT (elin) DO UPDATE … WHERE` the row is still
    /// what was read (or has expired, or is this call's). That statement is atomic on both
    /// backends: on PostgreSQL a second node writing the same ELIN waits for the first to
    /// commit and then finds its condition false (READ COMMITTED re-checks the committed row),
    /// so exactly one of them gets a row back; the other reads again and chooses again.
    pub async fn claim(&self, claim: &ElinClaim) -> Result<String, sqlx::Error> {
        if claim.candidates.is_empty() {
            return Err(sqlx::Error::Protocol("an ELIN claim without candidates".into()));
        }
        let m = &claim.mapping;
        let read = format!(
            "SELECT elin, call_ref, expires_ms FROM elin_callbacks WHERE elin IN ({})",
            vec!["?"; claim.candidates.len()].join(", ")
        );
        let read = self.db.backend.sql(&read);
        let write = self
            .db
            .backend
            .sql(&format!(
                "{UPSERT} WHERE elin_callbacks.expires_ms <= ? OR elin_callbacks.call_ref = excluded.call_ref \
             OR (elin_callbacks.call_ref = ? AND elin_callbacks.expires_ms = ?) RETURNING elin"
            ))
            .into_owned();
        // Each lost race means another call just took one of these ELINs, so a burst of N callers
        // at one location settles in at most N rounds; the caller bounds the whole by
        // `CLAIM_WITHIN`.
        for _ in 0..ROUNDS {
            let now_ms = chrono::Utc::now().timestamp_millis();
            let mut q = sqlx::query(&read);
            for e in &claim.candidates {
                q = q.bind(e);
            }
            let mut held: std::collections::HashMap<String, (String, i64)> = std::collections::HashMap::new();
            for r in q.fetch_all(&self.db.pool).await? {
                held.insert(r.try_get("elin")?, (r.try_get("call_ref")?, r.try_get("expires_ms")?));
            }
            let free = |e: &String| held.get(e).is_none_or(|(c, exp)| *exp <= now_ms || *c == m.call_ref);
            let (elin, seen) = match claim.candidates.iter().find(|e| free(e)) {
                // (A row that appears meanwhile fails the write: nothing matches it.)
                Some(e) => (e, (String::new(), i64::MIN)),
                // Every one held: the oldest (the list is not empty: checked above).
                None => {
                    let oldest = claim.candidates.iter().min_by_key(|e| held.get(*e).map(|(_, t)| *t));
                    let oldest = oldest.unwrap_or(&claim.candidates[0]);
                    (oldest, held.get(oldest).cloned().unwrap_or((String::new(), i64::MIN)))
                }
            };
            let won = self
                .upsert(&write, elin, m)
                .bind(now_ms)
                .bind(&seen.0)
                .bind(seen.1)
                .fetch_optional(&self.db.pool)
                .await?;
            if won.is_some() {
                return Ok(elin.clone());
            }
        }
        Err(sqlx::Error::Protocol(format!("every ELIN of the location changed hands while claiming, {ROUNDS} times")))
    }

    /// [`claim`](Self::claim) within [`CLAIM_WITHIN`]; a failure or no answer is `None`
    /// (logged), and the call takes the ELIN its node prefers.
    pub async fn claim_within(&self, claim: &ElinClaim) -> Option<String> {
        match tokio::time::timeout(CLAIM_WITHIN, self.claim(claim)).await {
            Ok(Ok(elin)) => Some(elin),
            Ok(Err(e)) => {
                tracing::error!(call = %claim.mapping.call_ref, error = %e, "cannot claim an ELIN in the store: the call presents the one this node prefers, which another node may have given too");
                None
            }
            Err(_) => {
                tracing::error!(call = %claim.mapping.call_ref, ms = CLAIM_WITHIN.as_millis() as u64, "the store did not claim an ELIN in time: the call presents the one this node prefers, which another node may have given too");
                None
            }
        }
    }

    /// The live mapping of `elin`, if any node wrote one.
    pub async fn get(&self, elin: &str) -> Result<Option<SharedElin>, sqlx::Error> {
        let sql = self.db.backend.sql(
            "SELECT call_ref, caller_number, caller_display, caller_transport, caller_addr, \
             reconnect_transport, reconnect_addr, reconnect_name, reconnect_call_ref, expires_ms \
             FROM elin_callbacks WHERE elin = ? AND expires_ms > ?",
        );
        let row = sqlx::query(&sql)
            .bind(elin)
            .bind(chrono::Utc::now().timestamp_millis())
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let caller_peer = peer(r.try_get("caller_transport")?, r.try_get("caller_addr")?)?;
        let call_ref: String = r.try_get("call_ref")?;
        // Only what was written for this very call: a node of the version before these columns
        // rewrites a row and leaves them as the earlier caller's.
        let owner: Option<String> = r.try_get("reconnect_call_ref")?;
        let caller_reconnect = match (r.try_get("reconnect_transport")?, r.try_get("reconnect_addr")?) {
            (Some(t), Some(a)) if owner.as_deref() == Some(call_ref.as_str()) => {
                Some(Reconnect { peer: peer(t, a)?, name: r.try_get("reconnect_name")? })
            }
            _ => None,
        };
        let expires = chrono::DateTime::from_timestamp_millis(r.try_get("expires_ms")?)
            .ok_or_else(|| sqlx::Error::Decode("expires_ms out of range".into()))?;
        Ok(Some(SharedElin {
            elin: elin.to_string(),
            call_ref,
            caller_number: r.try_get("caller_number")?,
            caller_display: r.try_get("caller_display")?,
            caller_peer,
            caller_reconnect,
            expires,
        }))
    }

    /// The writer: a task that writes the mappings the engine made, in order. It ends once the
    /// sender is dropped and what it holds is written (a stopping node leaves its mappings to
    /// the others).
    pub fn spawn_writer(&self) -> (mpsc::Sender<SharedElin>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<SharedElin>(WRITE_QUEUE);
        let store = self.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if let Err(e) = store.put(&m).await {
                    tracing::error!(elin = %m.elin, error = %e, "cannot share an ELIN callback mapping: a callback through another node will not find the caller");
                }
            }
        });
        (tx, task)
    }

    /// [`get`](Self::get) within [`LOOKUP_WITHIN`]; a failure or no answer counts as no
    /// mapping (logged), so the waiting callback always goes on.
    pub async fn lookup(&self, elin: &str) -> Option<SharedElin> {
        match tokio::time::timeout(LOOKUP_WITHIN, self.get(elin)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::error!(%elin, error = %e, "cannot look up an ELIN callback mapping in the store");
                None
            }
            Err(_) => {
                tracing::error!(%elin, s = LOOKUP_WITHIN.as_secs(), "the store did not answer an ELIN callback look-up in time");
                None
            }
        }
    }
}

/// A transport and address as the table keeps them (`UDP`, `127.0.0.1:5060`).
fn peer(transport: String, addr: String) -> Result<Peer, sqlx::Error> {
    let transport = match transport.as_str() {
        "UDP" => Transport::Udp,
        "TCP" => Transport::Tcp,
        "TLS" => Transport::Tls,
        other => return Err(sqlx::Error::Decode(format!("transport {other:?}").into())),
    };
    let addr: SocketAddr = addr.parse().map_err(|e| sqlx::Error::Decode(format!("address {addr:?}: {e}").into()))?;
    Ok(Peer { transport, addr })
}
