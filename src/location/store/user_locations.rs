//! User-entered locations (`location::user_entered`): one row per owner, set (insert or replace),
//! listed, cleared; every change bumps `user_locations_generation`, which a running core polls.

use chrono::{DateTime, Utc};

use super::{LisError, LisStore};
use crate::location::user_entered::{NetworkSeen, UserLocation};

/// A row as read: owner, ERL JSON, ip, mac, bssid, entered_by, entered_at, confirmed_at.
type Row = (String, String, Option<String>, Option<String>, Option<String>, String, String, String);

impl LisStore {
    /// Sets `entry` as its owner's location (replacing theirs; `entered_at` kept from the first
    /// entry), in one transaction with the generation bump.
    pub async fn set_user_location(&self, entry: &UserLocation) -> Result<(), LisError> {
        let erl = serde_json::to_string(&entry.erl).map_err(|e| self.corrupt("user_locations", &entry.owner, e))?;
        let mut tx = self.db.begin_write("user_locations").await.map_err(self.db("begin transaction"))?;
        sqlx::query(&self.sql(
            "INSERT INTO user_locations (owner, erl, ip, subnet, mac, bssid, entered_by, entered_at, confirmed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (owner) DO UPDATE SET erl = excluded.erl, ip = excluded.ip, subnet = excluded.subnet, \
             mac = excluded.mac, bssid = excluded.bssid, entered_by = excluded.entered_by, \
             confirmed_at = excluded.confirmed_at",
        ))
        .bind(&entry.owner)
        .bind(erl)
        .bind(entry.network.ip.map(|ip| ip.to_string()))
        .bind(entry.network.subnet())
        .bind(entry.network.mac.clone())
        .bind(entry.network.bssid.clone())
        .bind(&entry.entered_by)
        .bind(crate::time::timestamp(&entry.entered_at))
        .bind(crate::time::timestamp(&entry.confirmed_at))
        .execute(&mut *tx)
        .await
        .map_err(self.db("set a user-entered location"))?;
        bump(&mut tx, self).await?;
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(())
    }

    /// Removes the owner's location; `false` when there was none.
    pub async fn clear_user_location(&self, owner: &str) -> Result<bool, LisError> {
        let mut tx = self.db.begin_write("user_locations").await.map_err(self.db("begin transaction"))?;
        let done = sqlx::query(&self.sql("DELETE FROM user_locations WHERE owner = ?"))
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(self.db("clear a user-entered location"))?;
        if done.rows_affected() > 0 {
            bump(&mut tx, self).await?;
        }
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every user-entered location, by owner. A row that cannot be read is logged and skipped:
    /// one bad row must not take every other user's location off their calls.
    pub async fn user_locations(&self) -> Result<Vec<UserLocation>, LisError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT owner, erl, ip, mac, bssid, entered_by, entered_at, confirmed_at FROM user_locations ORDER BY owner",
        )
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.db("read the user-entered locations"))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                self.user_location_of(r)
                    .map_err(|e| tracing::error!(error = %e, "skipping a user-entered location that cannot be read"))
                    .ok()
            })
            .collect())
    }

    /// Changes whenever a user-entered location is set or cleared.
    pub async fn user_locations_generation(&self) -> Result<i64, LisError> {
        let (g,): (i64,) = sqlx::query_as("SELECT generation FROM user_locations_generation WHERE id = 1")
            .fetch_one(&self.db.pool)
            .await
            .map_err(self.db("read the user-location generation"))?;
        Ok(g)
    }

    fn user_location_of(&self, row: Row) -> Result<UserLocation, LisError> {
        let (owner, erl, ip, mac, bssid, entered_by, entered_at, confirmed_at) = row;
        let bad =
            |what: &str, e: &dyn std::fmt::Display| self.corrupt("user_locations", &owner, format!("{what}: {e}"));
        let erl = serde_json::from_str(&erl).map_err(|e| bad("erl", &e))?;
        let ip = ip.map(|ip| ip.parse()).transpose().map_err(|e| bad("ip", &e))?;
        let time = |t: &str| DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&Utc));
        Ok(UserLocation {
            erl,
            network: NetworkSeen { ip, mac, bssid },
            entered_by,
            entered_at: time(&entered_at).map_err(|e| bad("entered_at", &e))?,
            confirmed_at: time(&confirmed_at).map_err(|e| bad("confirmed_at", &e))?,
            owner,
        })
    }
}

async fn bump(tx: &mut sqlx::AnyConnection, store: &LisStore) -> Result<(), LisError> {
    sqlx::query("UPDATE user_locations_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .map_err(store.db("bump the user-location generation"))?;
    Ok(())
}
