//! The Location Information Service store: ERLs and the wiremap, in SQLite or PostgreSQL
//! through sqlx (`crate::db`).
//!
//! The tables (`migrations/sqlite/20261122010000_lis.sql`, `migrations/postgres/`) live in the
//! same database as the audit log, and the conventions are the audit store's: WAL (readers never
//! block the writer), `synchronous=FULL`, a busy timeout, errors that name the store.
//!
//! Writes follow Skype for Business's `Set-CsLis*` cmdlets: importing a row *sets* that network
//! element's location (insert or replace); elements not in the file are left alone; identical ERLs
//! are stored once (SfB: "If a location with an address exactly matching the address parameters …
//! does not exist in the location database, a new address will be created"). A whole import is one
//! transaction: it is kept entirely or not at all. Re-importing the same rows writes nothing.
//!
//! Reads: [`LisStore::load_wiremap`] gives the ERLs and the wiremap entries the in-memory index is
//! built from; [`LisStore::export_batch`] / [`LisStore::export_csv`] give one kind back in the form
//! it was imported in.
//!
//! The parts: `sql` holds the statements (built once) and the row encoding they take, `keys` the
//! content key that finds an identical ERL again and the order of an export.

mod floorplan;
mod keys;
mod sitemap;
mod sql;
mod unlocated;
mod user_locations;

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use sqlx::AnyConnection;

use super::validate::Validation;
use super::{parse_mac, CivicAddress, Erl, PortIdSubtype, WiremapEntry, WiremapKey, CIVIC_FIELDS};
use crate::db::{Backend, Db, Location};
pub use floorplan::NewPin;
pub use keys::{content_key, key_order};
pub use sitemap::StoredSiteMap;
use sql::{
    bump_generation, chunk_len, table, RawRow, SqlRows, ERL_CHUNK, ID_LOOKUP_CHUNK, INSERT_ERLS, PAGE_SQL, SELECT_ERLS,
};

/// Rows read per query when reading a whole wiremap table (keyset paging: bounded memory per
/// query, no OFFSET rescans).
const PAGE: i64 = 50_000;

pub use super::wiremap_rows::{WiremapBatch, WiremapKind, WiremapRow};

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Rows in the batch.
    pub rows: usize,
    /// Rows that were new, or pointed at another ERL or had another description before.
    pub changed: usize,
    /// Rows already stored exactly so.
    pub unchanged: usize,
    /// ERLs that did not exist before.
    pub new_erls: usize,
}

/// Number of wiremap entries per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WiremapCounts {
    pub subnets: u64,
    pub waps: u64,
    pub switches: u64,
    pub ports: u64,
    pub macs: u64,
}

impl WiremapCounts {
    pub fn get(&self, kind: WiremapKind) -> u64 {
        match kind {
            WiremapKind::Subnets => self.subnets,
            WiremapKind::Waps => self.waps,
            WiremapKind::Switches => self.switches,
            WiremapKind::Ports => self.ports,
            WiremapKind::Macs => self.macs,
        }
    }

    fn get_mut(&mut self, kind: WiremapKind) -> &mut u64 {
        match kind {
            WiremapKind::Subnets => &mut self.subnets,
            WiremapKind::Waps => &mut self.waps,
            WiremapKind::Switches => &mut self.switches,
            WiremapKind::Ports => &mut self.ports,
            WiremapKind::Macs => &mut self.macs,
        }
    }

    pub fn total(&self) -> u64 {
        WiremapKind::ALL.iter().map(|k| self.get(*k)).sum()
    }
}

/// How many ERLs and wiremap entries the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LisCounts {
    pub erls: u64,
    pub wiremap: WiremapCounts,
}

/// An ERL as stored, with its validation and how many network elements point at it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredErl {
    pub id: i64,
    pub erl: Erl,
    /// `None` until [`LisStore::set_validation`] is called for it.
    pub validation: Option<Validation>,
    /// RFC 3339 UTC time of the last validation.
    pub validated_at: Option<String>,
    pub elements: WiremapCounts,
}

#[derive(Debug, thiserror::Error)]
pub enum LisError {
    /// The file could not be opened or created (missing directory, not a database, no space…).
    #[error("cannot open location store {store}: {cause}")]
    Open { store: Arc<Location>, cause: String },
    /// The schema could not be brought up to date.
    #[error("cannot migrate location store {store}: {source}")]
    Migrate {
        store: Arc<Location>,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed: `op` says what sosdesk was doing.
    #[error("location store {store}: {op} failed: {source}")]
    Db {
        store: Arc<Location>,
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A stored row cannot be read back (a hand edit, or a newer sosdesk's data).
    #[error("location store {store}: {table} row {key:?} is unreadable: {reason}")]
    Corrupt { store: Arc<Location>, table: &'static str, key: String, reason: String },
    /// The rows handed to [`LisStore::import`] do not fit the kind or their ERL list.
    #[error("import of {kind}: {reason}")]
    InvalidBatch { kind: WiremapKind, reason: String },
    #[error("location store {store}: no ERL with id {id}")]
    NoSuchErl { store: Arc<Location>, id: i64 },
    /// A floor-plan point that is not on the plan.
    #[error("ERL {erl_id}: {reason}")]
    InvalidPin { erl_id: i64, reason: String },
    /// A site map whose name or edges are not acceptable.
    #[error("site map {name:?}: {reason}")]
    InvalidSiteMap { name: String, reason: String },
    /// Writing an export failed.
    #[error("location export: write failed: {source}")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

/// Handle on the LIS tables of one database. Cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct LisStore {
    db: Db,
}

impl LisStore {
    /// Opens (creating it if missing) the store at `location` — a SQLite file (a path converts)
    /// or a PostgreSQL database — and brings its schema up to date.
    ///
    /// As for the audit store, a SQLite file's directory must exist: a missing one usually means
    /// a wrong path.
    pub async fn open(location: impl Into<Location>) -> Result<LisStore, LisError> {
        let location = Arc::new(location.into());
        let db = crate::db::open(&location).await.map_err(|e| match e {
            crate::db::OpenError::Open(cause) => LisError::Open { store: location.clone(), cause },
            crate::db::OpenError::Migrate(source) => LisError::Migrate { store: location.clone(), source },
        })?;
        Ok(LisStore { db })
    }

    /// Closes every connection (checkpointing the WAL into the main file).
    pub async fn close(&self) {
        self.db.pool.close().await;
    }

    /// Where the store is (a PostgreSQL URL is shown without its password).
    pub fn location(&self) -> &Location {
        &self.db.location
    }

    pub(super) fn sql<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        self.db.backend.sql(sql)
    }

    fn db(&self, op: &'static str) -> impl FnOnce(sqlx::Error) -> LisError + '_ {
        move |source| LisError::Db { store: self.db.location.clone(), op, source }
    }

    fn corrupt(&self, table: &'static str, key: &str, reason: impl fmt::Display) -> LisError {
        LisError::Corrupt { store: self.db.location.clone(), table, key: key.to_string(), reason: reason.to_string() }
    }

    /// Sets the location of every element in `batch` (all of kind `kind`), in one transaction.
    ///
    /// Like `Set-CsLisSubnet` and its siblings: a row for an element that exists replaces its ERL
    /// and description; a new element is added; elements not in the batch are untouched. ERLs are
    /// matched by content and stored once. A row that is already stored exactly so is not written
    /// at all, so importing the same file twice changes nothing (not even a page of the file).
    /// On any error nothing of the batch is kept.
    pub async fn import(&self, kind: WiremapKind, batch: &WiremapBatch) -> Result<ImportSummary, LisError> {
        self.import_with_pins(kind, batch, &[]).await
    }

    /// [`LisStore::import`], also setting the floor-plan pin of some of the batch's ERLs (index
    /// into `batch.erls`) in the same transaction (the CSV's FloorPlan columns).
    pub async fn import_with_pins(
        &self,
        kind: WiremapKind,
        batch: &WiremapBatch,
        pins: &[(usize, NewPin<'_>)],
    ) -> Result<ImportSummary, LisError> {
        if let Some((i, _)) = pins.iter().find(|(i, _)| *i >= batch.erls.len()) {
            return Err(LisError::InvalidBatch {
                kind,
                reason: format!("a floor plan for ERL index {i} but the batch has {} ERLs", batch.erls.len()),
            });
        }
        for (i, r) in batch.rows.iter().enumerate() {
            let bad = |reason: String| Err(LisError::InvalidBatch { kind, reason: format!("row {i}: {reason}") });
            if WiremapKind::of_key(&r.key) != kind {
                return bad(format!("a {} key in a {kind} import", WiremapKind::of_key(&r.key)));
            }
            if r.erl >= batch.erls.len() {
                return bad(format!("ERL index {} but the batch has {} ERLs", r.erl, batch.erls.len()));
            }
            if r.bare_subnet_id && kind != WiremapKind::Subnets {
                return bad("bare_subnet_id is for subnets only".into());
            }
        }
        // Everything that needs no database is done before taking the write lock, which the
        // audit writer of a running `sosdesk serve` shares.
        let keys: Vec<String> = batch.erls.iter().map(content_key).collect();
        // The distinct ERLs in content-key order: inserts into the content_key index then land
        // next to each other instead of on random pages.
        let mut distinct: Vec<usize> = (0..keys.len()).collect();
        distinct.sort_unstable_by(|a, b| keys[*a].cmp(&keys[*b]));
        distinct.dedup_by(|a, b| keys[*a] == keys[*b]);
        let rows = SqlRows::new(kind, &batch.rows);

        let mut conn = self.db.pool.acquire().await.map_err(self.db("acquire connection"))?;
        if self.db.backend == Backend::Postgres {
            let (new_erls, changed) = self.import_in(&mut conn, &keys, &distinct, batch, &rows, pins).await?;
            return Ok(ImportSummary {
                rows: batch.rows.len(),
                changed,
                unchanged: batch.rows.len() - changed,
                new_erls,
            });
        }
        // A bigger page cache for this one transaction (SQLite's default is 2 MiB): a large
        // import's B-tree pages then stay in memory instead of being spilled to the WAL and read
        // back. Memory is taken only as pages are used; the previous size is restored afterwards.
        let (cache_size,): (i64,) =
            sqlx::query_as("PRAGMA cache_size").fetch_one(&mut *conn).await.map_err(self.db("read cache size"))?;
        sqlx::query("PRAGMA cache_size = -262144").execute(&mut *conn).await.map_err(self.db("set cache size"))?;
        let result = self.import_in(&mut conn, &keys, &distinct, batch, &rows, pins).await;
        let reset = sqlx::query(&format!("PRAGMA cache_size = {cache_size}")).execute(&mut *conn).await;
        let (new_erls, changed) = result?;
        reset.map_err(self.db("reset cache size"))?;
        Ok(ImportSummary { rows: batch.rows.len(), changed, unchanged: batch.rows.len() - changed, new_erls })
    }

    /// The transaction of [`LisStore::import`]: (new ERLs, rows inserted or changed).
    async fn import_in(
        &self,
        conn: &mut AnyConnection,
        keys: &[String],
        distinct: &[usize],
        batch: &WiremapBatch,
        rows: &SqlRows<'_>,
        pins: &[(usize, NewPin<'_>)],
    ) -> Result<(usize, usize), LisError> {
        // A write transaction (SQLite's BEGIN IMMEDIATE, a table lock on PostgreSQL) so the ERL
        // ids read below cannot change before the rows that use them are written. Dropping `tx`
        // on error rolls everything back.
        let mut tx = self.db.begin_write_on(conn, "erls").await.map_err(self.db("begin transaction"))?;

        let mut new_erls = 0;
        let mut rest = distinct;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest.len(), ERL_CHUNK));
            let sql = self.sql(INSERT_ERLS.sql(chunk.len()));
            let mut q = sqlx::query(&sql);
            for i in chunk {
                let erl = &batch.erls[*i];
                q = q.bind(keys[*i].as_str()).bind(erl.label.as_str()).bind(erl.company.as_deref());
                for f in CIVIC_FIELDS {
                    q = q.bind((f.get)(&erl.civic).as_deref());
                }
                q = q.bind(serde_json::Value::from(erl.elins.clone()).to_string());
            }
            let done = q.execute(&mut *tx).await.map_err(self.db("insert ERLs"))?;
            new_erls += done.rows_affected() as usize;
            rest = tail;
        }
        // The ids, in the order asked for, as one JSON array per chunk (one value instead of a
        // row per ERL through sqlx's channel).
        let mut ids: HashMap<&str, i64> = HashMap::with_capacity(distinct.len());
        for chunk in distinct.chunks(ID_LOOKUP_CHUNK) {
            let wanted =
                serde_json::Value::from(chunk.iter().map(|i| keys[*i].as_str()).collect::<Vec<_>>()).to_string();
            let lookup = match self.db.backend {
                Backend::Sqlite => {
                    "SELECT json_group_array(e.id ORDER BY j.key) FROM json_each(?) AS j \
                     JOIN erls AS e ON e.content_key = j.value"
                }
                Backend::Postgres => {
                    "SELECT coalesce(json_agg(e.id ORDER BY j.n), '[]')::text \
                     FROM json_array_elements_text($1::json) WITH ORDINALITY AS j (value, n) \
                     JOIN erls AS e ON e.content_key = j.value"
                }
            };
            let (found,): (String,) =
                sqlx::query_as(lookup).bind(wanted).fetch_one(&mut *tx).await.map_err(self.db("look up ERL ids"))?;
            let found: Vec<i64> =
                serde_json::from_str(&found).map_err(|e| self.corrupt("erls", "(id lookup)", e.to_string()))?;
            if found.len() != chunk.len() {
                return Err(self.corrupt("erls", &keys[chunk[0]], "inserted ERLs not found again"));
            }
            ids.extend(chunk.iter().map(|i| keys[*i].as_str()).zip(found));
        }
        let erl_ids: Vec<i64> = keys.iter().map(|k| ids[k.as_str()]).collect();

        let changed = rows.write(&mut tx, &erl_ids, self).await?;
        if !pins.is_empty() {
            let by_id: Vec<(i64, NewPin)> = pins.iter().map(|(i, p)| (erl_ids[*i], *p)).collect();
            self.write_pins(&mut tx, &by_id).await?;
        }
        if changed > 0 || new_erls > 0 || !pins.is_empty() {
            bump_generation(&mut tx, self).await?;
        }
        tx.commit().await.map_err(self.db("commit"))?;
        Ok((new_erls, changed))
    }

    /// Changes whenever the LIS data changes (see the lis_generation migration): the running
    /// core rebuilds its wiremap when this moves.
    pub async fn generation(&self) -> Result<i64, LisError> {
        let (g,): (i64,) = sqlx::query_as("SELECT generation FROM lis_generation WHERE id = 1")
            .fetch_one(&self.db.pool)
            .await
            .map_err(self.db("read the LIS generation"))?;
        Ok(g)
    }

    /// Every ERL (in id order, including ERLs no element uses any more) and every wiremap entry,
    /// with `WiremapEntry::erl` indexing the ERL list: the input of the in-memory wiremap index.
    /// Read in one snapshot. `Erl::validated` is true for ERLs whose validation is `Valid`.
    pub async fn load_wiremap(&self) -> Result<(Vec<Erl>, Vec<WiremapEntry>), LisError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let (erls, index) = self.read_erls(&mut tx).await?;
        let mut entries = Vec::new();
        for kind in WiremapKind::ALL {
            self.read_rows(&mut tx, kind, |row| {
                let erl = *index.get(&row.erl_id).ok_or_else(|| {
                    self.corrupt(table(kind), &row.k1, format!("erl_id {} does not exist", row.erl_id))
                })?;
                entries.push(WiremapEntry { key: self.key_of(kind, &row)?, erl });
                Ok(())
            })
            .await?;
        }
        tx.rollback().await.map_err(self.db("end read"))?;
        Ok((erls.into_iter().map(|(_, e, _, _)| e).collect(), entries))
    }

    /// Every ERL with its validation and the number of elements of each kind pointing at it.
    pub async fn list_erls(&self) -> Result<Vec<StoredErl>, LisError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let (erls, index) = self.read_erls(&mut tx).await?;
        let mut out: Vec<StoredErl> = erls
            .into_iter()
            .map(|(id, erl, validation, validated_at)| StoredErl {
                id,
                erl,
                validation,
                validated_at,
                elements: WiremapCounts::default(),
            })
            .collect();
        for kind in WiremapKind::ALL {
            let counts: Vec<(i64, i64)> =
                sqlx::query_as(&format!("SELECT erl_id, count(*) FROM {} GROUP BY erl_id", table(kind)))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(self.db("count wiremap entries"))?;
            for (id, n) in counts {
                if let Some(i) = index.get(&id) {
                    *out[*i].elements.get_mut(kind) = n as u64;
                }
            }
        }
        tx.rollback().await.map_err(self.db("end read"))?;
        Ok(out)
    }

    /// Records the outcome of validating an ERL's address against the MSAG (SfB:
    /// `Test-CsLisCivicAddress -UpdateValidationStatus`). `Erl::validated` is then true for
    /// [`Validation::Valid`].
    pub async fn set_validation(&self, erl_id: i64, validation: &Validation) -> Result<(), LisError> {
        let (status, detail) = match validation {
            Validation::Valid => ("valid", None),
            Validation::Invalid { reasons } => ("invalid", Some(serde_json::Value::from(reasons.clone()).to_string())),
        };
        let now = crate::time::timestamp(&chrono::Utc::now());
        let mut tx = self.db.begin_write("erls").await.map_err(self.db("begin transaction"))?;
        let done = sqlx::query(
            &self.sql("UPDATE erls SET validation = ?, validation_detail = ?, validated_at = ? WHERE id = ?"),
        )
        .bind(status)
        .bind(detail)
        .bind(now)
        .bind(erl_id)
        .execute(&mut *tx)
        .await
        .map_err(self.db("set validation"))?;
        if done.rows_affected() == 0 {
            return Err(LisError::NoSuchErl { store: self.db.location.clone(), id: erl_id });
        }
        // The validated flag travels in every call's ERL: the core reloads on this.
        bump_generation(&mut tx, self).await?;
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(())
    }

    /// How many ERLs and wiremap entries of each kind are stored.
    pub async fn counts(&self) -> Result<LisCounts, LisError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let (erls,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM erls").fetch_one(&mut *tx).await.map_err(self.db("count ERLs"))?;
        let mut wiremap = WiremapCounts::default();
        for kind in WiremapKind::ALL {
            let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {}", table(kind)))
                .fetch_one(&mut *tx)
                .await
                .map_err(self.db("count wiremap entries"))?;
            *wiremap.get_mut(kind) = n as u64;
        }
        tx.rollback().await.map_err(self.db("end read"))?;
        Ok(LisCounts { erls: erls as u64, wiremap })
    }

    /// Every element of one kind with its ERL, sorted by element (subnets by address, MACs by
    /// value, chassis and port IDs in natural order): what `lis export` writes.
    pub async fn export_batch(&self, kind: WiremapKind) -> Result<WiremapBatch, LisError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let (erls, index) = self.read_erls(&mut tx).await?;
        let mut rows = Vec::new();
        self.read_rows(&mut tx, kind, |row| {
            let erl = *index
                .get(&row.erl_id)
                .ok_or_else(|| self.corrupt(table(kind), &row.k1, format!("erl_id {} does not exist", row.erl_id)))?;
            rows.push(WiremapRow {
                key: self.key_of(kind, &row)?,
                erl,
                description: row.description,
                bare_subnet_id: row.bare != 0,
            });
            Ok(())
        })
        .await?;
        tx.rollback().await.map_err(self.db("end read"))?;
        rows.sort_by(|a, b| key_order(&a.key, &b.key));
        // Only the ERLs this kind uses, renumbered in first-use order.
        let mut used: HashMap<usize, usize> = HashMap::new();
        let mut out = WiremapBatch { erls: Vec::new(), rows: Vec::with_capacity(rows.len()) };
        let mut all: Vec<Option<Erl>> = erls.into_iter().map(|(_, e, _, _)| Some(e)).collect();
        for mut r in rows {
            r.erl = *used.entry(r.erl).or_insert_with(|| {
                out.erls.push(all[r.erl].take().unwrap_or_default());
                out.erls.len() - 1
            });
            out.rows.push(r);
        }
        Ok(out)
    }

    /// Writes one kind as a Skype for Business CSV file (see `sfb_csv::write_csv`); returns the
    /// number of rows.
    pub async fn export_csv<W: Write + ?Sized>(&self, kind: WiremapKind, out: &mut W) -> Result<usize, LisError> {
        let batch = self.export_batch(kind).await?;
        super::sfb_csv::write_csv(kind, &batch, out).map_err(|source| LisError::Write { source })?;
        Ok(batch.rows.len())
    }

    /// Every row of every LIS table as text, in key order — for tests and diagnostics ("did this
    /// import change anything?"): equal dumps mean equal tables.
    pub async fn dump(&self) -> Result<String, LisError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let mut out = String::new();
        for table in [
            "erls",
            "wiremap_subnets",
            "wiremap_waps",
            "wiremap_switches",
            "wiremap_ports",
            "wiremap_macs",
            "lis_generation",
            "erl_floor_plans",
            "site_maps",
        ] {
            let select = match self.db.backend {
                Backend::Sqlite => {
                    let cols: Vec<(String, i64)> =
                        sqlx::query_as(&format!("SELECT name, pk FROM pragma_table_info('{table}')"))
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(self.db("read table info"))?;
                    let mut pk: Vec<(i64, &str)> =
                        cols.iter().filter(|(_, pk)| *pk > 0).map(|(n, pk)| (*pk, n.as_str())).collect();
                    pk.sort_unstable();
                    let values =
                        cols.iter().map(|(n, _)| format!("quote({n})")).collect::<Vec<_>>().join(" || '|' || ");
                    let order = pk.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ");
                    format!("SELECT {values} FROM {table} ORDER BY {order}")
                }
                // The row's own text form, e.g. (1,"10.0.0.0/8",,…), in that text's order.
                Backend::Postgres => format!("SELECT CAST(t AS text) FROM {table} AS t ORDER BY 1"),
            };
            let lines: Vec<(String,)> =
                sqlx::query_as(&select).fetch_all(&mut *tx).await.map_err(self.db("dump table"))?;
            out.push_str(&format!("== {table}\n"));
            for (l,) in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        tx.rollback().await.map_err(self.db("end read"))?;
        Ok(out)
    }

    /// All ERLs in id order, and id → position. Read a page at a time, each page one JSON value
    /// (see [`PAGE_SQL`] for why).
    #[allow(clippy::type_complexity)]
    async fn read_erls(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<(Vec<(i64, Erl, Option<Validation>, Option<String>)>, HashMap<i64, usize>), LisError> {
        let mut out = Vec::new();
        let mut index = HashMap::new();
        let mut after = 0i64;
        loop {
            let (json,): (String,) = sqlx::query_as(&SELECT_ERLS[self.db.backend as usize])
                .bind(after)
                .bind(PAGE)
                .fetch_one(&mut *conn)
                .await
                .map_err(self.db("read ERLs"))?;
            let page: Vec<(i64, Vec<Option<String>>)> = serde_json::from_str(&json)
                .map_err(|e| self.corrupt("erls", &after.to_string(), format!("page after this id: {e}")))?;
            let n = page.len();
            for (id, values) in page {
                let (erl, validation, at) = self.erl_from_values(id, values)?;
                index.insert(id, out.len());
                out.push((id, erl, validation, at));
                after = id;
            }
            if (n as i64) < PAGE {
                self.attach_pins(conn, &mut out, &index).await?;
                return Ok((out, index));
            }
        }
    }

    /// An ERL from the values of [`SELECT_ERLS`]: label, company, the civic columns, elins,
    /// validation, validation_detail, validated_at.
    fn erl_from_values(
        &self,
        id: i64,
        values: Vec<Option<String>>,
    ) -> Result<(Erl, Option<Validation>, Option<String>), LisError> {
        let corrupt = |what: String| self.corrupt("erls", &id.to_string(), what);
        if values.len() != 2 + CIVIC_FIELDS.len() + 4 {
            return Err(corrupt(format!("{} columns", values.len())));
        }
        let mut v = values.into_iter();
        let label = v.next().flatten().ok_or_else(|| corrupt("label is NULL".into()))?;
        let company = v.next().flatten();
        let mut civic = CivicAddress::default();
        for f in CIVIC_FIELDS {
            *(f.get_mut)(&mut civic) = v.next().flatten();
        }
        let elins = v.next().flatten().ok_or_else(|| corrupt("elins is NULL".into()))?;
        let elins: Vec<String> = serde_json::from_str(&elins).map_err(|e| corrupt(format!("elins: {e}")))?;
        let (status, detail, at) = (v.next().flatten(), v.next().flatten(), v.next().flatten());
        let validation = match status.as_deref() {
            None => None,
            Some("valid") => Some(Validation::Valid),
            Some("invalid") => Some(Validation::Invalid {
                reasons: match detail {
                    Some(d) => serde_json::from_str(&d).map_err(|e| corrupt(format!("validation_detail: {e}")))?,
                    None => Vec::new(),
                },
            }),
            Some(other) => return Err(corrupt(format!("validation {other:?}"))),
        };
        let erl =
            Erl { label, company, civic, elins, validated: validation == Some(Validation::Valid), floor_plan: None };
        Ok((erl, validation, at))
    }

    /// Calls `f` for every row of one wiremap table, in primary-key order, a page at a time.
    async fn read_rows(
        &self,
        conn: &mut AnyConnection,
        kind: WiremapKind,
        mut f: impl FnMut(RawRow) -> Result<(), LisError>,
    ) -> Result<(), LisError> {
        // Keyset paging: every key is non-empty text, so "" sorts before the first row.
        let mut after = (String::new(), String::new(), String::new());
        loop {
            let mut q = sqlx::query_as::<_, (String,)>(&PAGE_SQL[self.db.backend as usize][kind as usize])
                .bind(after.0.as_str());
            if kind == WiremapKind::Ports {
                q = q.bind(after.1.as_str()).bind(after.2.as_str());
            }
            let (json,) = q.bind(PAGE).fetch_one(&mut *conn).await.map_err(self.db("read wiremap"))?;
            let page: Vec<(String, String, String, i64, i64, String)> = serde_json::from_str(&json)
                .map_err(|e| self.corrupt(table(kind), &after.0, format!("page after this key: {e}")))?;
            let n = page.len();
            if let Some(last) = page.last() {
                after = (last.0.clone(), last.1.clone(), last.2.clone());
            }
            for (k1, k2, k3, bare, erl_id, description) in page {
                f(RawRow { k1, k2, k3, bare, erl_id, description })?;
            }
            if (n as i64) < PAGE {
                return Ok(());
            }
        }
    }

    fn key_of(&self, kind: WiremapKind, row: &RawRow) -> Result<WiremapKey, LisError> {
        let bad = |what: &str| self.corrupt(table(kind), &row.k1, what);
        Ok(match kind {
            WiremapKind::Subnets => WiremapKey::Subnet(row.k1.parse().map_err(|_| bad("not a CIDR subnet"))?),
            WiremapKind::Waps => WiremapKey::Bssid(parse_mac(&row.k1).ok_or_else(|| bad("not a MAC address"))?),
            WiremapKind::Switches => WiremapKey::Switch { chassis_id: row.k1.clone() },
            WiremapKind::Ports => WiremapKey::Port {
                chassis_id: row.k1.clone(),
                port_subtype: PortIdSubtype::parse(&row.k2).ok_or_else(|| bad("unknown port_subtype"))?,
                port_id: row.k3.clone(),
            },
            WiremapKind::Macs => WiremapKey::Mac(parse_mac(&row.k1).ok_or_else(|| bad("not a MAC address"))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_enforce_foreign_keys_and_use_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = LisStore::open(&dir.path().join("l.db")).await.unwrap();
        let mut conn = store.db.pool.acquire().await.unwrap();
        let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(fk, 1);
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut *conn).await.unwrap();
        assert_eq!(mode, "wal");
    }
}
