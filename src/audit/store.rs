//! The audit store, on SQLite or PostgreSQL (`crate::db`: one set of queries, written for
//! SQLite and numbered for PostgreSQL by `Backend::sql`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;

use super::chain::{chain_hash, ChainChecker, ChainRow, VerifyReport, GENESIS_HASH};
use super::csv::write_record;
use super::summary::{event_detail, CallOutcome, CallSummary};
use super::{timestamp, AuditError, AuditRecord};
use crate::db::{Backend, Db, Location};
use crate::events::CallEvent;

/// Rows read per query by verify and export: bounded memory on a table of millions of rows.
const PAGE: i64 = 2_000;

const SUMMARY_COLUMNS: &str = "call_id, first_seq, last_seq, event_count, first_at, last_at, caller_number, \
     caller_name, dialed, normalized, test_call, policy, site, location, location_source, route, outcome, \
     outcome_detail, answered_at, acknowledged_by, acknowledged_at, ended_at";

/// The PostgreSQL notification channel on which every append is announced to every node.
pub const EVENTS_CHANNEL: &str = "sosdesk_events";

const EVENT_COLUMNS: &str = "seq, call_id, call_seq, at, kind, payload, prev_hash, hash";

/// Handle on one audit database. Cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct AuditStore {
    db: Db,
    /// Written into the `node` column of every row this store appends ([`Self::with_node`]).
    node: Option<Arc<str>>,
}

impl AuditStore {
    /// Opens (creating it if missing) the store at `location` — a SQLite file (a path converts)
    /// or a PostgreSQL database — and brings its schema up to date.
    ///
    /// SQLite: the directory must exist: a missing directory usually means a wrong path in the
    /// config, and creating it would hide that.
    pub async fn open(location: impl Into<Location>) -> Result<AuditStore, AuditError> {
        let location = Arc::new(location.into());
        let db = crate::db::open(&location).await.map_err(|e| match e {
            crate::db::OpenError::Open(cause) => AuditError::Open { store: location.clone(), cause },
            crate::db::OpenError::Migrate(source) => AuditError::Migrate { store: location.clone(), source },
        })?;
        Ok(AuditStore { db, node: None })
    }

    /// The database under this store, for the other shared state of the nodes
    /// (`crate::shared`): one pool for all.
    pub fn database(&self) -> &Db {
        &self.db
    }

    /// The node that wrote the first event of `call_id` (the node that carries the call);
    /// `None` when unnamed or no such call.
    pub async fn call_node(&self, call_id: &str) -> Result<Option<String>, AuditError> {
        let node: Option<Option<String>> =
            sqlx::query_scalar(&self.sql("SELECT node FROM events WHERE call_id = ? ORDER BY call_seq LIMIT 1"))
                .bind(call_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(self.db("read the node of a call"))?;
        Ok(node.flatten())
    }

    /// The name of the node this store writes as, if any.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// This store with `node` as the name written on every row it appends: the core node, when
    /// several share one PostgreSQL database and so one chain.
    pub fn with_node(mut self, node: Option<&str>) -> AuditStore {
        self.node = node.map(Arc::from);
        self
    }

    /// Closes every connection (checkpointing the WAL into the main file). Clones are closed too.
    pub async fn close(&self) {
        self.db.pool.close().await;
    }

    /// Where this store writes (a PostgreSQL URL is shown without its password).
    pub fn location(&self) -> &Location {
        &self.db.location
    }

    fn sql<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        self.db.backend.sql(sql)
    }

    fn db(&self, op: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError + '_ {
        move |source| AuditError::Db { store: self.db.location.clone(), op, source }
    }

    fn corrupt(&self, seq: i64, reason: impl std::fmt::Display) -> AuditError {
        AuditError::Corrupt { store: self.db.location.clone(), seq, reason: reason.to_string() }
    }

    /// Appends `events` in one transaction and returns their global seqs, in order.
    ///
    /// When this returns `Ok`, the rows are committed and fsynced. The chain tip is read inside a
    /// write transaction that every other writer waits for (`Db::begin_write`: SQLite's
    /// `BEGIN IMMEDIATE`; on PostgreSQL a lock on `chain_head`), so two writers — two processes,
    /// or two nodes on one PostgreSQL — cannot both continue from the same row and fork the
    /// chain: each appends after the true last row, and the chain stays one. (The `seq` primary
    /// key would refuse a fork anyway, as an error instead of a wait.)
    pub async fn append(&self, events: &[CallEvent]) -> Result<Vec<i64>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Encode before taking the write lock, to hold it for as short as possible.
        let payloads = events
            .iter()
            .map(|ev| {
                serde_json::to_string(ev).map_err(|source| AuditError::Encode {
                    call_id: ev.call_id.clone(),
                    call_seq: ev.seq,
                    source,
                })
            })
            .collect::<Result<Vec<String>, AuditError>>()?;

        // On any error below, dropping `tx` rolls the whole batch back.
        let mut tx = self.db.begin_write("chain_head").await.map_err(self.db("begin transaction"))?;
        let (mut seq, mut prev_hash) = self.chain_tip(&mut tx).await?;

        // Chain the rows in memory, then write them with a few multi-row statements: one
        // statement per event would make the round trips to SQLite's thread the bottleneck.
        let mut rows = Vec::with_capacity(events.len());
        for (ev, payload) in events.iter().zip(&payloads) {
            seq += 1;
            let hash = chain_hash(&prev_hash, seq, payload);
            let prev = std::mem::replace(&mut prev_hash, hash);
            rows.push(EventRow { seq, ev, payload, prev_hash: prev, hash: prev_hash.clone() });
        }
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
            let sql = self.sql(insert_sql(&INSERT_EVENTS, chunk.len()));
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.seq)
                    .bind(&r.ev.call_id)
                    .bind(i64::from(r.ev.seq))
                    .bind(timestamp(&r.ev.at))
                    .bind(r.ev.kind.name())
                    .bind(r.payload)
                    .bind(&r.prev_hash)
                    .bind(&r.hash)
                    .bind(self.node.as_deref());
            }
            q.execute(&mut *tx).await.map_err(self.db("insert events"))?;
            rest = tail;
        }

        // Each call's summary is read once per batch and written once, however many of its events
        // the batch holds.
        let mut summaries = self.load_summaries(&mut tx, events).await?;
        // Refused requests are records of the log only, never rows of the call history.
        for r in rows.iter().filter(|r| r.ev.kind.is_of_a_call()) {
            match summaries.get_mut(r.ev.call_id.as_str()) {
                Some(s) => s.apply(r.seq, r.ev),
                None => {
                    summaries.insert(r.ev.call_id.clone(), CallSummary::start(r.seq, r.ev));
                }
            }
        }
        let summaries: Vec<CallSummary> = summaries.into_values().collect();
        let mut rest = &summaries[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
            self.store_summaries(&mut tx, chunk).await?;
            rest = tail;
        }
        let seqs = rows.iter().map(|r| r.seq).collect();
        sqlx::query(&self.sql(
            "INSERT INTO chain_head (id, seq, hash) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        ))
        .bind(seq)
        .bind(&prev_hash)
        .execute(&mut *tx)
        .await
        .map_err(self.db("update chain head"))?;
        if self.db.backend == Backend::Postgres {
            // Wakes every node's follower (`crate::shared::events`); PostgreSQL delivers it at the
            // commit, so whoever it wakes reads these rows. The payload is only a hint.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind(seq.to_string())
                .execute(&mut *tx)
                .await
                .map_err(self.db("notify"))?;
        }
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(seqs)
    }

    /// (seq, hash) to continue the chain from.
    async fn chain_tip(&self, conn: &mut AnyConnection) -> Result<(i64, String), AuditError> {
        let last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.db("read last event"))?;
        let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM chain_head WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.db("read chain head"))?;
        let last = last.unwrap_or((0, GENESIS_HASH.to_string()));
        Ok(match head {
            Some(head) if head != last => {
                // Someone removed rows at the end (or wrote around the store). Continuing from the
                // head leaves the removal as a permanent, visible gap; continuing from the last row
                // would paper over it. Rows beyond the head cannot be continued from the head
                // without clashing seqs, so then the last row wins. Either way: keep recording.
                tracing::error!(
                    store = %self.db.location,
                    head_seq = head.0, last_seq = last.0,
                    "audit chain head does not match the last row: the log was tampered with; run verify"
                );
                if head.0 > last.0 {
                    head
                } else {
                    last
                }
            }
            _ => last,
        })
    }

    async fn load_summary(&self, conn: &mut AnyConnection, call_id: &str) -> Result<Option<CallSummary>, AuditError> {
        let row = sqlx::query(&self.sql(&format!("SELECT {SUMMARY_COLUMNS} FROM calls WHERE call_id = ?")))
            .bind(call_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(self.db("read call summary"))?;
        row.map(|r| summary_from_row(&r).map_err(self.db("decode call summary"))).transpose()
    }

    /// The stored summaries of the calls in `events`, in one query.
    async fn load_summaries(
        &self,
        conn: &mut AnyConnection,
        events: &[CallEvent],
    ) -> Result<HashMap<String, CallSummary>, AuditError> {
        let mut ids: Vec<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        // A JSON array bound as one parameter: the same statement for any number of calls.
        let ids = serde_json::Value::from(ids).to_string();
        let each = match self.db.backend {
            Backend::Sqlite => "SELECT value FROM json_each(?)",
            Backend::Postgres => "SELECT json_array_elements_text($1::json)",
        };
        let rows = sqlx::query(&format!("SELECT {SUMMARY_COLUMNS} FROM calls WHERE call_id IN ({each})"))
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(self.db("read call summaries"))?;
        rows.iter()
            .map(|r| {
                let s = summary_from_row(r).map_err(self.db("decode call summary"))?;
                Ok((s.call_id.clone(), s))
            })
            .collect()
    }

    async fn store_summaries(&self, conn: &mut AnyConnection, chunk: &[CallSummary]) -> Result<(), AuditError> {
        let ts = |t: &Option<DateTime<Utc>>| t.as_ref().map(timestamp);
        let sql = self.sql(insert_sql(&INSERT_CALLS, chunk.len()));
        let mut q = sqlx::query(&sql);
        for s in chunk {
            q = q
                .bind(&s.call_id)
                .bind(s.first_seq)
                .bind(s.last_seq)
                .bind(s.event_count)
                .bind(timestamp(&s.first_at))
                .bind(timestamp(&s.last_at))
                .bind(&s.caller_number)
                .bind(&s.caller_name)
                .bind(&s.dialed)
                .bind(&s.normalized)
                .bind(i64::from(s.test_call))
                .bind(&s.policy)
                .bind(&s.site)
                .bind(&s.location)
                .bind(&s.location_source)
                .bind(&s.route)
                .bind(s.outcome.as_str())
                .bind(&s.outcome_detail)
                .bind(ts(&s.answered_at))
                .bind(&s.acknowledged_by)
                .bind(ts(&s.acknowledged_at))
                .bind(ts(&s.ended_at));
        }
        q.execute(&mut *conn).await.map_err(self.db("write call summaries"))?;
        Ok(())
    }

    /// The summary of one call, if the store has any event of it.
    pub async fn call_summary(&self, call_id: &str) -> Result<Option<CallSummary>, AuditError> {
        let mut conn = self.db.pool.acquire().await.map_err(self.db("acquire connection"))?;
        self.load_summary(&mut conn, call_id).await
    }

    /// The `limit` most recent calls, newest (by first event time) first.
    pub async fn history(&self, limit: u32) -> Result<Vec<CallSummary>, AuditError> {
        self.search(&HistoryQuery { limit, ..Default::default() }).await
    }

    /// Calls matching `q`, newest (by first event time) first, at most `q.limit`.
    pub async fn search(&self, q: &HistoryQuery) -> Result<Vec<CallSummary>, AuditError> {
        let (cond, binds) = q.condition(self.db.backend);
        let sql = self
            .sql(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM calls WHERE {cond} ORDER BY first_at DESC, first_seq DESC LIMIT ?"
            ))
            .into_owned();
        let mut query = sqlx::query(&sql);
        for b in &binds {
            query = query.bind(b);
        }
        let rows = query.bind(i64::from(q.limit)).fetch_all(&self.db.pool).await.map_err(self.db("search history"))?;
        rows.iter().map(|r| summary_from_row(r).map_err(self.db("decode call summary"))).collect()
    }

    /// Appends those of `events` that the log does not hold yet (by call and call seq), in
    /// their order: a crashed core's journal, at the next start. Returns how many.
    pub async fn append_missing(&self, events: &[CallEvent]) -> Result<usize, AuditError> {
        let mut missing = Vec::new();
        for ev in events {
            let held: Option<i64> =
                sqlx::query_scalar(&self.sql("SELECT seq FROM events WHERE call_id = ? AND call_seq = ?"))
                    .bind(&ev.call_id)
                    .bind(i64::from(ev.seq))
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(self.db("look for a recovered event"))?;
            if held.is_none() {
                missing.push(ev.clone());
            }
        }
        for chunk in missing.chunks(4_096) {
            self.append(chunk).await?;
        }
        Ok(missing.len())
    }

    /// Ends, in the log, every call of this node that has no final event: calls that were up when
    /// the core last stopped or crashed (their state went with the process). Each gets `ended` by
    /// `core` with `reason`, numbered after its last event. Call this only before the core serves.
    ///
    /// Only the calls this node took (the `node` of their first row is this store's): with
    /// several nodes on one PostgreSQL database, the others' open calls may well be up.
    pub async fn close_interrupted_calls(&self, at: DateTime<Utc>, reason: &str) -> Result<usize, AuditError> {
        let open: Vec<String> = sqlx::query_scalar(&self.sql(
            "SELECT call_id FROM calls WHERE ended_at IS NULL AND outcome <> 'rejected' AND EXISTS \
             (SELECT 1 FROM events e WHERE e.seq = calls.first_seq AND e.node IS NOT DISTINCT FROM ?)",
        ))
        .bind(self.node.as_deref())
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.db("find calls without an end"))?;
        let mut ends = Vec::new();
        for call_id in open {
            let Some(last) = self.call_events(&call_id).await?.into_iter().max_by_key(|r| r.call_seq) else { continue };
            let mut ev = last.event;
            ev.seq += 1;
            ev.at = at;
            ev.kind = crate::events::CallEventKind::Ended { by: "core".into(), reason: reason.into() };
            ends.push(ev);
        }
        for chunk in ends.chunks(4_096) {
            self.append(chunk).await?;
        }
        Ok(ends.len())
    }

    /// The audit records of refused requests (`refused`: one per source and interval;
    /// `rejected`: one refusal each, as API refusals and records before the tally), newest
    /// first, at most `limit`, at or after `since` when given.
    pub async fn refusals(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        // `events_refused` (a partial index) keeps this from scanning the whole log.
        let sql = self
            .sql(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE kind IN ('refused', 'rejected') AND at >= ? \
                 ORDER BY seq DESC LIMIT ?"
            ))
            .into_owned();
        let since = since.map(|t| timestamp(&t)).unwrap_or_default();
        let rows = sqlx::query(&sql)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.db("read refusals"))?;
        rows.iter().map(|r| self.record_from_row(r)).collect()
    }

    /// The audit records of one kind (`user-location-changed`, `device-moved`…: records of no
    /// call), oldest first, at most `limit`.
    pub async fn records_of_kind(&self, kind: &str, limit: u32) -> Result<Vec<AuditRecord>, AuditError> {
        let sql =
            self.sql(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE kind = ? ORDER BY seq LIMIT ?")).into_owned();
        let rows = sqlx::query(&sql)
            .bind(kind)
            .bind(i64::from(limit))
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.db("read records"))?;
        rows.iter().map(|r| self.record_from_row(r)).collect()
    }

    /// Every stored event of one call, in the order they were stored.
    pub async fn call_events(&self, call_id: &str) -> Result<Vec<AuditRecord>, AuditError> {
        let rows =
            sqlx::query(&self.sql(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE call_id = ? ORDER BY seq")))
                .bind(call_id)
                .fetch_all(&self.db.pool)
                .await
                .map_err(self.db("read call events"))?;
        rows.iter().map(|r| self.record_from_row(r)).collect()
    }

    fn record_from_row(&self, r: &AnyRow) -> Result<AuditRecord, AuditError> {
        let raw = RawEvent::from_row(r).map_err(self.db("decode event row"))?;
        let event: CallEvent = serde_json::from_str(&raw.payload).map_err(|e| self.corrupt(raw.seq, e))?;
        let at = parse_ts(&raw.at).map_err(|e| self.corrupt(raw.seq, format!("column at: {e}")))?;
        Ok(AuditRecord {
            seq: raw.seq,
            call_id: raw.call_id,
            call_seq: raw.call_seq,
            at,
            kind: raw.kind,
            detail: event_detail(&event.kind),
            event,
            prev_hash: raw.prev_hash,
            hash: raw.hash,
        })
    }

    /// The seq of the last row of the log (0: empty).
    pub async fn last_seq(&self) -> Result<i64, AuditError> {
        sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(seq), 0) FROM events")
            .fetch_one(&self.db.pool)
            .await
            .map_err(self.db("read the last seq"))
    }

    /// Up to `limit` events after `after` that other nodes wrote (their `node` is not this
    /// store's), in the log's order, each with its seq.
    pub async fn others_after(&self, after: i64, limit: i64) -> Result<Vec<(i64, CallEvent)>, AuditError> {
        let sql =
            self.sql("SELECT seq, payload FROM events WHERE seq > ? AND node IS DISTINCT FROM ? ORDER BY seq LIMIT ?");
        let rows = sqlx::query(&sql)
            .bind(after)
            .bind(self.node.as_deref())
            .bind(limit)
            .fetch_all(&self.db.pool)
            .await
            .map_err(self.db("read other nodes' events"))?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(self.db("read other nodes' events"))?;
                let payload: String = r.try_get("payload").map_err(self.db("read other nodes' events"))?;
                let ev = serde_json::from_str(&payload).map_err(|e| self.corrupt(seq, e))?;
                Ok((seq, ev))
            })
            .collect()
    }

    /// The next page of event rows after `after` (keyset paging: bounded memory however long
    /// the log, no OFFSET rescans), inside the caller's read transaction. `only` narrows it
    /// with an extra `AND …` condition and its parameters (empty: every row).
    async fn events_after(
        &self,
        tx: &mut AnyConnection,
        after: i64,
        only: &(String, Vec<String>),
    ) -> Result<Vec<AnyRow>, AuditError> {
        let (cond, binds) = only;
        let sql = self
            .sql(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?{cond} ORDER BY seq LIMIT ?"))
            .into_owned();
        let mut query = sqlx::query(&sql).bind(after);
        for b in binds {
            query = query.bind(b);
        }
        query.bind(PAGE).fetch_all(&mut *tx).await.map_err(self.db("read events"))
    }

    /// [`verify`](Self::verify) in an officer's words: intact, tampered (with the first problem)
    /// or not checkable.
    pub async fn chain_check(&self) -> super::ChainCheck {
        match self.verify().await {
            Ok(r) if r.is_ok() => super::ChainCheck {
                ok: true,
                rows_checked: r.rows_checked as u32,
                detail: format!("Audit hash chain intact over all {} events of the log", r.rows_checked),
            },
            Ok(r) => super::ChainCheck {
                ok: false,
                rows_checked: r.rows_checked as u32,
                detail: format!(
                    "AUDIT LOG TAMPERED OR DAMAGED: {} ({} bad rows)",
                    r.first_problem.map(|p| p.to_string()).unwrap_or_default(),
                    r.bad_rows
                ),
            },
            Err(e) => {
                super::ChainCheck { ok: false, rows_checked: 0, detail: format!("the chain could not be checked: {e}") }
            }
        }
    }

    /// Recomputes the hash chain over every row (see [`super::chain`]).
    ///
    /// Reads inside one transaction, i.e. one consistent snapshot, while the writer goes on
    /// appending (WAL lets it; on PostgreSQL a REPEATABLE READ snapshot): every node's rows,
    /// as they are one chain.
    pub async fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let mut checker = ChainChecker::new();
        let mut last: Option<(i64, String)> = None;
        let mut after = i64::MIN;
        loop {
            let rows = self.events_after(&mut tx, after, &(String::new(), Vec::new())).await?;
            for r in &rows {
                let raw = RawEvent::from_row(r).map_err(self.db("decode event row"))?;
                checker.check(&ChainRow {
                    seq: raw.seq,
                    call_id: &raw.call_id,
                    call_seq: raw.call_seq,
                    at: &raw.at,
                    kind: &raw.kind,
                    payload: &raw.payload,
                    prev_hash: &raw.prev_hash,
                    hash: &raw.hash,
                });
                after = raw.seq;
                last = Some((raw.seq, raw.hash));
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM chain_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.db("read chain head"))?;
        tx.rollback().await.map_err(self.db("end read"))?;
        Ok(checker.finish(head, last))
    }

    /// Writes every event row as CSV: a header, then one line per event in seq order.
    ///
    /// Columns: seq, at, call_id, call_seq, kind, caller_number, caller_name, dialed, location
    /// ([`CallEvent::location_text`]), route, detail, prev_hash, hash. Quoting per RFC 4180; fields that a spreadsheet would run as
    /// a formula are prefixed with `'` (see `csv::field`).
    pub async fn export_csv(&self, out: &mut impl std::io::Write) -> Result<(), AuditError> {
        self.export_csv_matching(out, None).await
    }

    /// [`export_csv`](Self::export_csv) limited to the events of the calls `q` finds (its
    /// `limit` is ignored: every matching call is exported).
    pub async fn export_csv_matching(
        &self,
        out: &mut impl std::io::Write,
        q: Option<&HistoryQuery>,
    ) -> Result<(), AuditError> {
        let only = match q {
            Some(q) => {
                let (cond, binds) = q.condition(self.db.backend);
                (format!(" AND call_id IN (SELECT call_id FROM calls WHERE {cond})"), binds)
            }
            None => (String::new(), Vec::new()),
        };
        let io = |source| AuditError::Export { source };
        write_record(
            out,
            &[
                "seq",
                "at",
                "call_id",
                "call_seq",
                "kind",
                "caller_number",
                "caller_name",
                "dialed",
                "location",
                "route",
                "detail",
                "prev_hash",
                "hash",
            ],
        )
        .map_err(io)?;
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let mut after = i64::MIN;
        loop {
            let rows = self.events_after(&mut tx, after, &only).await?;
            for r in &rows {
                let rec = self.record_from_row(r)?;
                let ev = &rec.event;
                write_record(
                    out,
                    &[
                        &rec.seq.to_string(),
                        &timestamp(&rec.at),
                        &rec.call_id,
                        &rec.call_seq.to_string(),
                        &rec.kind,
                        &ev.caller.number,
                        ev.caller.display_name.as_deref().unwrap_or(""),
                        &ev.dialed,
                        &ev.location_text(),
                        ev.route.as_ref().map(|r| r.name.as_str()).unwrap_or(""),
                        &rec.detail,
                        &rec.prev_hash,
                        &rec.hash,
                    ],
                )
                .map_err(io)?;
                after = rec.seq;
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        tx.rollback().await.map_err(self.db("end read"))?;
        out.flush().map_err(io)
    }
}

/// A search of the call history (the desk app's history view).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Matched, case-insensitively, anywhere in the caller's number or name, the dialled number,
    /// the location text, the site or the call id.
    pub text: Option<String>,
    /// Calls whose first event is at or after `from` and before `until`.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub outcome: Option<CallOutcome>,
    /// Leave test calls (933) out.
    pub exclude_tests: bool,
    pub limit: u32,
}

impl HistoryQuery {
    /// The WHERE condition over `calls` and its parameters, in order (`?` placeholders).
    fn condition(&self, backend: Backend) -> (String, Vec<String>) {
        let mut cond = vec!["1 = 1".to_string()];
        let mut binds = Vec::new();
        if let Some(text) = self.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            // LIKE with `\` as escape, so a `%` or `_` typed by the officer matches itself.
            // SQLite's LIKE ignores ASCII case; PostgreSQL's does not, ILIKE does.
            let like = match backend {
                Backend::Sqlite => "LIKE",
                Backend::Postgres => "ILIKE",
            };
            let pattern = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            let cols = ["caller_number", "caller_name", "dialed", "location", "site", "call_id"];
            cond.push(format!(
                "({})",
                cols.iter().map(|c| format!("{c} {like} ? ESCAPE '\\'")).collect::<Vec<_>>().join(" OR ")
            ));
            binds.extend(std::iter::repeat_n(pattern, cols.len()));
        }
        if let Some(from) = &self.from {
            cond.push("first_at >= ?".into());
            binds.push(timestamp(from));
        }
        if let Some(until) = &self.until {
            cond.push("first_at < ?".into());
            binds.push(timestamp(until));
        }
        match self.outcome {
            Some(o) => {
                cond.push("outcome = ?".into());
                binds.push(o.as_str().to_string());
            }
            // The history is emergency and test calls: requests refused before this version
            // (one row each) are only shown when asked for.
            None => cond.push("outcome <> 'rejected'".into()),
        }
        if self.exclude_tests {
            cond.push("test_call = 0".into());
        }
        (cond.join(" AND "), binds)
    }
}

/// Most rows per multi-row INSERT. Chunks are powers of two (64, 32, … 1), so each table has at
/// most seven distinct statements, all kept in sqlx's per-connection statement cache. 64 × 22
/// parameters stays far below SQLite's limit of 32,766.
const MAX_CHUNK: usize = 64;

fn chunk_len(remaining: usize) -> usize {
    let n = remaining.min(MAX_CHUNK);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `INSERT … VALUES (?, …), (?, …)` for 1, 2, 4 … MAX_CHUNK rows, built once.
struct MultiInsert {
    by_log2: Vec<String>,
}

impl MultiInsert {
    fn new(head: &str, columns: usize, tail: &str) -> MultiInsert {
        let row = format!("({})", vec!["?"; columns].join(", "));
        let by_log2 = (0..=MAX_CHUNK.trailing_zeros())
            .map(|k| format!("{head} VALUES {}{tail}", vec![row.as_str(); 1 << k].join(", ")))
            .collect();
        MultiInsert { by_log2 }
    }
}

fn insert_sql(m: &'static LazyLock<MultiInsert>, rows: usize) -> &'static str {
    debug_assert!(rows.is_power_of_two() && rows <= MAX_CHUNK);
    &m.by_log2[rows.trailing_zeros() as usize]
}

static INSERT_EVENTS: LazyLock<MultiInsert> = LazyLock::new(|| {
    MultiInsert::new("INSERT INTO events (seq, call_id, call_seq, at, kind, payload, prev_hash, hash, node)", 9, "")
});

/// The summaries are upserted: `ON CONFLICT … DO UPDATE` is both SQLite's (3.24+) and
/// PostgreSQL's, where SQLite's `INSERT OR REPLACE` is not.
static INSERT_CALLS: LazyLock<MultiInsert> = LazyLock::new(|| {
    let set = SUMMARY_COLUMNS
        .split(", ")
        .map(str::trim)
        .filter(|c| *c != "call_id")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    MultiInsert::new(
        &format!("INSERT INTO calls ({SUMMARY_COLUMNS})"),
        22,
        &format!(" ON CONFLICT (call_id) DO UPDATE SET {set}"),
    )
});

/// One row being appended.
struct EventRow<'a> {
    seq: i64,
    ev: &'a CallEvent,
    payload: &'a str,
    prev_hash: String,
    hash: String,
}

/// An `events` row as stored.
struct RawEvent {
    seq: i64,
    call_id: String,
    call_seq: i64,
    at: String,
    kind: String,
    payload: String,
    prev_hash: String,
    hash: String,
}

impl RawEvent {
    fn from_row(r: &AnyRow) -> Result<RawEvent, sqlx::Error> {
        Ok(RawEvent {
            seq: r.try_get("seq")?,
            call_id: r.try_get("call_id")?,
            call_seq: r.try_get("call_seq")?,
            at: r.try_get("at")?,
            kind: r.try_get("kind")?,
            payload: r.try_get("payload")?,
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        })
    }
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

fn summary_from_row(r: &AnyRow) -> Result<CallSummary, sqlx::Error> {
    // Decoding errors name the column, so a hand-edited row is easy to find.
    fn decode_err(column: &str, e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
        sqlx::Error::ColumnDecode { index: column.to_string(), source: Box::new(e) }
    }
    let ts = |column: &str| -> Result<DateTime<Utc>, sqlx::Error> {
        let s: String = r.try_get(column)?;
        parse_ts(&s).map_err(|e| decode_err(column, e))
    };
    let opt_ts = |column: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let s: Option<String> = r.try_get(column)?;
        s.map(|s| parse_ts(&s).map_err(|e| decode_err(column, e))).transpose()
    };
    let outcome: String = r.try_get("outcome")?;
    let outcome = CallOutcome::parse(&outcome).ok_or_else(|| {
        decode_err(
            "outcome",
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unknown outcome {outcome:?}")),
        )
    })?;
    Ok(CallSummary {
        call_id: r.try_get("call_id")?,
        first_seq: r.try_get("first_seq")?,
        last_seq: r.try_get("last_seq")?,
        event_count: r.try_get("event_count")?,
        first_at: ts("first_at")?,
        last_at: ts("last_at")?,
        caller_number: r.try_get("caller_number")?,
        caller_name: r.try_get("caller_name")?,
        dialed: r.try_get("dialed")?,
        normalized: r.try_get("normalized")?,
        // An integer on both backends (a bool does not decode from PostgreSQL's BIGINT).
        test_call: r.try_get::<i64, _>("test_call")? != 0,
        policy: r.try_get("policy")?,
        site: r.try_get("site")?,
        location: r.try_get("location")?,
        location_source: r.try_get("location_source")?,
        route: r.try_get("route")?,
        outcome,
        outcome_detail: r.try_get("outcome_detail")?,
        answered_at: opt_ts("answered_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        acknowledged_at: opt_ts("acknowledged_at")?,
        ended_at: opt_ts("ended_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_up_to_the_maximum() {
        let got: Vec<usize> = [1, 2, 3, 63, 64, 65, 1000].iter().map(|&n| chunk_len(n)).collect();
        assert_eq!(got, [1, 2, 2, 32, 64, 64, 64]);
        assert_eq!(insert_sql(&INSERT_EVENTS, 2).matches('?').count(), 18);
        assert_eq!(insert_sql(&INSERT_CALLS, 64).matches('?').count(), 64 * 22);
    }

    /// Batch sizes that need every chunk size, with calls spread over several chunks.
    #[tokio::test]
    async fn odd_sized_batches_chain_and_summarise() {
        use crate::events::{CallEventKind, Caller, CALL_EVENT_VERSION};
        use crate::location::LocationSnapshot;
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).await.unwrap();
        let ev = |call: usize, seq: u32| CallEvent {
            version: CALL_EVENT_VERSION,
            call_id: format!("c{call}"),
            seq,
            at: chrono::Utc::now(),
            caller: Caller {
                number: "100".into(),
                display_name: None,
                uri: "sip:100@x".into(),
                source: "udp:192.0.2.1:5060".into(),
            },
            dialed: "911".into(),
            normalized: "911".into(),
            test_call: true,
            policy: "p".into(),
            site: None,
            location: LocationSnapshot::none(),
            route: None,
            kind: if seq == 1 { CallEventKind::Detected } else { CallEventKind::Answered },
        };
        let first: Vec<CallEvent> = (0..127).map(|i| ev(i, 1)).collect();
        let second: Vec<CallEvent> = (0..127).map(|i| ev(i, 2)).chain((127..130).map(|i| ev(i, 1))).collect();
        assert_eq!(store.append(&first).await.unwrap(), (1..=127).collect::<Vec<i64>>());
        assert_eq!(store.append(&second).await.unwrap(), (128..=257).collect::<Vec<i64>>());
        let report = store.verify().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.rows_checked, 257);
        let history = store.history(1000).await.unwrap();
        assert_eq!(history.len(), 130);
        let c5 = store.call_summary("c5").await.unwrap().unwrap();
        assert_eq!((c5.event_count, c5.first_seq, c5.last_seq, c5.outcome), (2, 6, 133, CallOutcome::Answered));
    }

    /// The durability settings are per connection: check them on a connection of the pool, as the
    /// writer gets it.
    #[tokio::test]
    async fn connections_use_wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(&dir.path().join("a.db")).await.unwrap();
        let mut conn = store.db.pool.acquire().await.unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(mode, "wal");
        // 2 = FULL
        let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(sync, 2);
        let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(busy, 5_000);
    }
}
