//! The SQL of the LIS store: the statements (built once per kind and chunk size, so sqlx's
//! statement cache keeps them), the multi-row INSERTs of an import, and the rows as their tables
//! take them.

use std::sync::LazyLock;

use sqlx::AnyConnection;

use super::{LisError, LisStore};
use crate::db::Backend;
use crate::location::wiremap_rows::{WiremapKind, WiremapRow};
use crate::location::{format_mac, WiremapKey, CIVIC_FIELDS};

/// The table of a kind's wiremap entries.
pub(super) fn table(kind: WiremapKind) -> &'static str {
    match kind {
        WiremapKind::Subnets => "wiremap_subnets",
        WiremapKind::Waps => "wiremap_waps",
        WiremapKind::Switches => "wiremap_switches",
        WiremapKind::Ports => "wiremap_ports",
        WiremapKind::Macs => "wiremap_macs",
    }
}

/// A wiremap row as read: up to three key columns, then bare_id, erl_id, description.
pub(super) struct RawRow {
    pub(super) k1: String,
    pub(super) k2: String,
    pub(super) k3: String,
    pub(super) bare: i64,
    pub(super) erl_id: i64,
    pub(super) description: String,
}

/// Per backend and kind (indexed by `Backend as usize`, then `WiremapKind as usize`): the paged
/// SELECT of the whole table, built once (sqlx caches prepared statements by their text).
///
/// A page comes back as ONE JSON array in one row: sqlx hands every result row from its SQLite
/// thread to the caller through a channel, with a thread wake-up, and at 1,000,000 rows that
/// per-row hand-over was most of the time of `load_wiremap` (measured: 2.95 s before, see the
/// commit). `ORDER BY` inside the aggregate (SQLite ≥ 3.44) keeps the rows in key order.
pub(super) static PAGE_SQL: LazyLock<[Vec<String>; 2]> =
    LazyLock::new(|| [Backend::Sqlite, Backend::Postgres].map(page_sql));

fn page_sql(backend: Backend) -> Vec<String> {
    WiremapKind::ALL
        .iter()
        .map(|kind| {
            let (select, key) = match kind {
                WiremapKind::Subnets => ("subnet, '', '', bare_id", "subnet"),
                WiremapKind::Waps => ("bssid, '', '', 0", "bssid"),
                WiremapKind::Switches => ("chassis_id, '', '', 0", "chassis_id"),
                WiremapKind::Ports => ("chassis_id, port_subtype, port_id, 0", "chassis_id, port_subtype, port_id"),
                WiremapKind::Macs => ("mac, '', '', 0", "mac"),
            };
            let cursor = if *kind == WiremapKind::Ports { "(?, ?, ?)" } else { "(?)" };
            json_page(
                backend,
                &format!("{select}, erl_id, description"),
                key,
                &format!("SELECT * FROM {} WHERE ({key}) > {cursor} ORDER BY {key} LIMIT ?", table(*kind)),
            )
        })
        .collect()
}

/// `SELECT` of one JSON array (as text) holding a JSON array of `items` for each row of `rows`,
/// in `order`: SQLite's json_group_array/json_array, PostgreSQL's json_agg/json_build_array
/// (which gives NULL, not `[]`, for no rows). Placeholders numbered for the backend.
fn json_page(backend: Backend, items: &str, order: &str, rows: &str) -> String {
    let sql = match backend {
        Backend::Sqlite => format!("SELECT json_group_array(json_array({items}) ORDER BY {order}) FROM ({rows})"),
        Backend::Postgres => format!(
            "SELECT coalesce(json_agg(json_build_array({items}) ORDER BY {order}), '[]')::text FROM ({rows}) AS page"
        ),
    };
    backend.sql(&sql).into_owned()
}

/// The rows of one import as the SQL of their table wants them: key columns as text.
pub(super) struct SqlRows<'a> {
    pub(super) kind: WiremapKind,
    pub(super) rows: Vec<SqlRow<'a>>,
}

pub(super) struct SqlRow<'a> {
    pub(super) k1: String,
    pub(super) k2: &'static str,
    pub(super) k3: &'a str,
    pub(super) bare: bool,
    pub(super) erl: usize,
    pub(super) description: &'a str,
}

impl<'a> SqlRows<'a> {
    pub(super) fn new(kind: WiremapKind, rows: &'a [WiremapRow]) -> SqlRows<'a> {
        let mut out: Vec<SqlRow<'a>> = rows
            .iter()
            .map(|r| {
                let (k1, k2, k3) = match &r.key {
                    WiremapKey::Subnet(net) => (net.to_string(), "", ""),
                    WiremapKey::Bssid(m) | WiremapKey::Mac(m) => (format_mac(m), "", ""),
                    WiremapKey::Switch { chassis_id } => (chassis_id.clone(), "", ""),
                    WiremapKey::Port { chassis_id, port_subtype, port_id } => {
                        (chassis_id.clone(), port_subtype.as_str(), port_id.as_str())
                    }
                };
                SqlRow { k1, k2, k3, bare: r.bare_subnet_id, erl: r.erl, description: &r.description }
            })
            .collect();
        // In key order (SQLite's BINARY collation is byte order), each insert lands next to the
        // previous one in the key B-tree instead of on a random page: on a 1,000,000-row import
        // this keeps the working set in the page cache.
        out.sort_by(|a, b| {
            (a.k1.as_bytes(), a.k2.as_bytes(), a.k3.as_bytes()).cmp(&(
                b.k1.as_bytes(),
                b.k2.as_bytes(),
                b.k3.as_bytes(),
            ))
        });
        SqlRows { kind, rows: out }
    }

    /// Upserts every row; returns how many were inserted or changed.
    pub(super) async fn write(
        &self,
        conn: &mut AnyConnection,
        erl_ids: &[i64],
        store: &LisStore,
    ) -> Result<usize, LisError> {
        let inserts = &WIREMAP_INSERTS[self.kind as usize];
        let mut changed = 0;
        let mut rest = &self.rows[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(chunk_len(rest.len(), ROW_CHUNK));
            let sql = store.sql(inserts.sql(chunk.len()));
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(r.k1.as_str());
                match self.kind {
                    WiremapKind::Ports => q = q.bind(r.k2).bind(r.k3),
                    WiremapKind::Subnets => q = q.bind(i64::from(r.bare)),
                    _ => {}
                }
                q = q.bind(erl_ids[r.erl]).bind(r.description);
            }
            let done = q.execute(&mut *conn).await.map_err(store.db("write wiremap rows"))?;
            changed += done.rows_affected() as usize;
            rest = tail;
        }
        Ok(changed)
    }
}

/// Most ERLs per multi-row INSERT (33 parameters each; SQLite allows 32,766).
pub(super) const ERL_CHUNK: usize = 128;
/// Most wiremap rows per multi-row INSERT (at most 5 parameters each).
pub(super) const ROW_CHUNK: usize = 512;
/// Content keys per id lookup (one JSON array parameter).
pub(super) const ID_LOOKUP_CHUNK: usize = 10_000;

/// The largest power of two ≤ min(remaining, max): each table then has at most log2(max) + 1
/// distinct statements, all kept in sqlx's per-connection statement cache.
pub(super) fn chunk_len(remaining: usize, max: usize) -> usize {
    let n = remaining.min(max);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `INSERT … VALUES (…), (…) [tail]` for 1, 2, 4 … max rows, built once.
pub(super) struct MultiInsert {
    pub(super) by_log2: Vec<String>,
}

impl MultiInsert {
    pub(super) fn new(head: &str, columns: usize, tail: &str, max: usize) -> MultiInsert {
        let row = format!("({})", vec!["?"; columns].join(", "));
        let by_log2 = (0..=max.trailing_zeros())
            .map(|k| format!("{head} VALUES {} {tail}", vec![row.as_str(); 1 << k].join(", ")))
            .collect();
        MultiInsert { by_log2 }
    }

    pub(super) fn sql(&self, rows: usize) -> &str {
        debug_assert!(rows.is_power_of_two());
        &self.by_log2[rows.trailing_zeros() as usize]
    }
}

/// The civic columns of `erls`: the field names of [`CIVIC_FIELDS`], in its order.
pub(super) static CIVIC_COLUMNS: LazyLock<String> =
    LazyLock::new(|| CIVIC_FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", "));

/// Per backend: a page of ERLs after an id, as one JSON array of `[id, [label, company, civic…,
/// elins, validation, validation_detail, validated_at]]`.
pub(super) static SELECT_ERLS: LazyLock<[String; 2]> = LazyLock::new(|| {
    [Backend::Sqlite, Backend::Postgres].map(|backend| {
        let array = match backend {
            Backend::Sqlite => "json_array",
            Backend::Postgres => "json_build_array",
        };
        json_page(
            backend,
            &format!(
                "id, {array}(label, company, {}, elins, validation, validation_detail, validated_at)",
                *CIVIC_COLUMNS
            ),
            "id",
            "SELECT * FROM erls WHERE id > ? ORDER BY id LIMIT ?",
        )
    })
});

pub(super) static INSERT_ERLS: LazyLock<MultiInsert> = LazyLock::new(|| {
    MultiInsert::new(
        &format!("INSERT INTO erls (content_key, label, company, {}, elins)", *CIVIC_COLUMNS),
        3 + CIVIC_FIELDS.len() + 1,
        "ON CONFLICT (content_key) DO NOTHING",
        ERL_CHUNK,
    )
});

/// Per kind (indexed by `WiremapKind as usize`): the upsert. `DO UPDATE … WHERE` something
/// differs, so a row already stored exactly so is neither written nor counted as changed.
/// `IS DISTINCT FROM` (SQL standard; SQLite ≥ 3.39, PostgreSQL) is SQLite's `IS NOT`: NULL-safe.
pub(super) static WIREMAP_INSERTS: LazyLock<Vec<MultiInsert>> = LazyLock::new(|| {
    WiremapKind::ALL
        .iter()
        .map(|kind| {
            let (keys, extra): (&[&str], &[&str]) = match kind {
                WiremapKind::Subnets => (&["subnet"], &["bare_id"]),
                WiremapKind::Waps => (&["bssid"], &[]),
                WiremapKind::Switches => (&["chassis_id"], &[]),
                WiremapKind::Ports => (&["chassis_id", "port_subtype", "port_id"], &[]),
                WiremapKind::Macs => (&["mac"], &[]),
            };
            let values: Vec<&str> = extra.iter().copied().chain(["erl_id", "description"]).collect();
            let columns: Vec<&str> = keys.iter().copied().chain(values.iter().copied()).collect();
            let set = values.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ");
            // Qualified: PostgreSQL refuses a bare column name there as ambiguous with `excluded`.
            let differs = values
                .iter()
                .map(|c| format!("{t}.{c} IS DISTINCT FROM excluded.{c}", t = table(*kind)))
                .collect::<Vec<_>>()
                .join(" OR ");
            MultiInsert::new(
                &format!("INSERT INTO {} ({})", table(*kind), columns.join(", ")),
                columns.len(),
                &format!("ON CONFLICT ({}) DO UPDATE SET {set} WHERE {differs}", keys.join(", ")),
                ROW_CHUNK,
            )
        })
        .collect()
});

pub(super) async fn bump_generation(tx: &mut AnyConnection, store: &LisStore) -> Result<(), LisError> {
    sqlx::query("UPDATE lis_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .map_err(store.db("bump the LIS generation"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two() {
        assert_eq!([1, 3, 600, 512].map(|n| chunk_len(n, ROW_CHUNK)), [1, 2, 512, 512]);
        assert_eq!(WIREMAP_INSERTS[WiremapKind::Ports as usize].sql(4).matches('?').count(), 4 * 5);
        assert_eq!(INSERT_ERLS.sql(ERL_CHUNK).matches('?').count(), ERL_CHUNK * 33);
    }
}
