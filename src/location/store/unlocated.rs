//! The unlocated report's rows (`location::unlocated`): sightings recorded in one transaction
//! each batch, the report read back.

use chrono::{DateTime, Utc};

use super::{LisError, LisStore};
use crate::location::unlocated::{ElementKind, LocatedShare, Sighting, UnlocatedElement, UnlocatedReport};
use crate::location::LocationSource;

impl LisStore {
    /// Records a batch of sightings: every one counts towards its day's outcomes; an unlocated
    /// one towards each of its network elements. Returns the elements seen unlocated for the
    /// first time, with the sighting that revealed them (the server announces them).
    pub async fn record_sightings(&self, batch: &[Sighting]) -> Result<Vec<(ElementKind, String, Sighting)>, LisError> {
        let mut new = Vec::new();
        // One writer at a time (a table lock on PostgreSQL): the UPDATE-then-INSERT below must not
        // race another node's for the same element.
        let mut tx = self.db.begin_write("unlocated").await.map_err(self.db("begin transaction"))?;
        for s in batch {
            let day = s.at.format("%Y-%m-%d").to_string();
            sqlx::query(&self.sql(
                "INSERT INTO location_outcomes (day, asked, source, count) VALUES (?, ?, ?, 1) \
                 ON CONFLICT (day, asked, source) DO UPDATE SET count = location_outcomes.count + 1",
            ))
            .bind(&day)
            .bind(s.asked.as_str())
            .bind(s.source.as_str())
            .execute(&mut *tx)
            .await
            .map_err(self.db("count a location outcome"))?;
            if !s.unlocated() {
                continue;
            }
            let at = crate::time::timestamp(&s.at);
            let (calls, held) = if s.asked == crate::location::unlocated::Asked::Call { (1, 0) } else { (0, 1) };
            for (kind, element) in s.elements() {
                let done = sqlx::query(&self.sql(
                    "UPDATE unlocated SET last_seen = ?, calls = calls + ?, held = held + ?, last_device = ?, \
                     last_outcome = ? WHERE kind = ? AND element = ?",
                ))
                .bind(&at)
                .bind(calls)
                .bind(held)
                .bind(s.device_text())
                .bind(s.source.as_str())
                .bind(kind.as_str())
                .bind(&element)
                .execute(&mut *tx)
                .await
                .map_err(self.db("count an unlocated element"))?;
                if done.rows_affected() > 0 {
                    continue;
                }
                sqlx::query(&self.sql(
                    "INSERT INTO unlocated (kind, element, first_seen, last_seen, calls, held, last_device, last_outcome) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(kind.as_str())
                .bind(&element)
                .bind(&at)
                .bind(&at)
                .bind(calls)
                .bind(held)
                .bind(s.device_text())
                .bind(s.source.as_str())
                .execute(&mut *tx)
                .await
                .map_err(self.db("add an unlocated element"))?;
                new.push((kind, element, s.clone()));
            }
        }
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(new)
    }

    /// The report: the share located by the wiremap (from `since`'s day on), and the elements seen
    /// unlocated at or after `since`, most recently seen first.
    pub async fn unlocated_report(&self, since: Option<DateTime<Utc>>) -> Result<UnlocatedReport, LisError> {
        let mut tx = self.db.begin_read().await.map_err(self.db("begin read"))?;
        let day = since.map(|s| s.format("%Y-%m-%d").to_string()).unwrap_or_default();
        // CAST: PostgreSQL's sum of BIGINT is NUMERIC.
        let outcomes: Vec<(String, String, i64)> = sqlx::query_as(&self.sql(
            "SELECT asked, source, CAST(sum(count) AS BIGINT) FROM location_outcomes WHERE day >= ? \
             GROUP BY asked, source",
        ))
        .bind(&day)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("read location outcomes"))?;
        let mut share = LocatedShare::default();
        for (asked, source, n) in outcomes {
            let n = n.max(0) as u64;
            let by_wiremap = source == LocationSource::Wiremap.as_str();
            let unlocated = source == LocationSource::SiteDefault.as_str() || source == LocationSource::None.as_str();
            let (all, wiremap, lost) = if asked == "held" {
                (&mut share.held, &mut share.held_by_wiremap, &mut share.held_unlocated)
            } else {
                (&mut share.calls, &mut share.calls_by_wiremap, &mut share.calls_unlocated)
            };
            *all += n;
            *wiremap += if by_wiremap { n } else { 0 };
            *lost += if unlocated { n } else { 0 };
        }
        let since_text = since.map(|s| crate::time::timestamp(&s)).unwrap_or_default();
        type Row = (String, String, String, String, i64, i64, String, String);
        let rows: Vec<Row> = sqlx::query_as(&self.sql(
            "SELECT kind, element, first_seen, last_seen, calls, held, last_device, last_outcome FROM unlocated \
             WHERE last_seen >= ? ORDER BY last_seen DESC, kind, element",
        ))
        .bind(&since_text)
        .fetch_all(&mut *tx)
        .await
        .map_err(self.db("read unlocated elements"))?;
        tx.rollback().await.map_err(self.db("end read"))?;
        let mut elements = Vec::with_capacity(rows.len());
        for (kind, element, first, last, calls, held, last_device, last_outcome) in rows {
            let kind = match kind.as_str() {
                "subnet" => ElementKind::Subnet,
                "switch" => ElementKind::Switch,
                "access-point" => ElementKind::AccessPoint,
                other => return Err(self.corrupt("unlocated", &element, format!("unknown kind {other:?}"))),
            };
            let time = |t: &str| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| self.corrupt("unlocated", &element, format!("time {t:?}: {e}")))
            };
            elements.push(UnlocatedElement {
                kind,
                first_seen: time(&first)?,
                last_seen: time(&last)?,
                element,
                calls: calls.max(0) as u64,
                held: held.max(0) as u64,
                last_device,
                last_outcome,
            });
        }
        Ok(UnlocatedReport { since, share, elements })
    }
}
