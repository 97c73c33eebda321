//! User-entered locations (`location::user_entered`): one row per owner, set (insert or replace),
//! listed, cleared; every change bumps `user_locations_generation`, which a running core polls.

use chrono::{DateTime, Utc};

use super::{LisError, LisStore};
use crate::location::user_entered::{NetworkSeen, Publication, UserLocation};

/// A row as read: owner, ERL JSON, ip, mac, bssid, entered_by, entered_at, confirmed_at.
type Row = (String, String, Option<String>, Option<String>, Option<String>, String, String, String);

impl LisStore {
    /// Sets `entry` as its owner's location (replacing theirs; `entered_at` kept from the first
    /// entry), in one transaction with the generation bump. Without a `publication` (the API,
    /// the CLI) the entry's publication tag, if any, is left as it is: a phone's refresh still
    /// extends its publication. With one (a SIP PUBLISH) the entry gets its new tag, and a
    /// publication's modify must find the tag it names (`if_match`): `false`, and nothing
    /// written, when it does not (RFC 3903 §6 step 4: 412).
    pub async fn set_user_location(
        &self,
        entry: &UserLocation,
        publication: Option<&Publication>,
    ) -> Result<bool, LisError> {
        let erl = serde_json::to_string(&entry.erl).map_err(|e| self.corrupt("user_locations", &entry.owner, e))?;
        let (ip, subnet) = (entry.network.ip.map(|ip| ip.to_string()), entry.network.subnet());
        let (mac, bssid) = (entry.network.mac.clone(), entry.network.bssid.clone());
        let (entered_at, confirmed_at) =
            (crate::time::timestamp(&entry.entered_at), crate::time::timestamp(&entry.confirmed_at));
        const SET: &str = "INSERT INTO user_locations \
             (owner, erl, ip, subnet, mac, bssid, entered_by, entered_at, confirmed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (owner) DO UPDATE SET erl = excluded.erl, ip = excluded.ip, subnet = excluded.subnet, \
             mac = excluded.mac, bssid = excluded.bssid, entered_by = excluded.entered_by, \
             confirmed_at = excluded.confirmed_at";
        // An initial PUBLISH (§4.1): whatever was kept is replaced, its tag with it.
        const PUBLISH: &str = "INSERT INTO user_locations \
             (owner, erl, ip, subnet, mac, bssid, entered_by, entered_at, confirmed_at, publish_etag) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (owner) DO UPDATE SET erl = excluded.erl, ip = excluded.ip, subnet = excluded.subnet, \
             mac = excluded.mac, bssid = excluded.bssid, entered_by = excluded.entered_by, \
             confirmed_at = excluded.confirmed_at, publish_etag = excluded.publish_etag";
        // A modify (§4.4): only the publication it names.
        const MODIFY: &str = "UPDATE user_locations SET erl = ?, ip = ?, subnet = ?, mac = ?, bssid = ?, \
             entered_by = ?, confirmed_at = ?, publish_etag = ? WHERE owner = ? AND publish_etag = ?";
        let sql = self.sql(match publication {
            None => SET,
            Some(Publication { if_match: None, .. }) => PUBLISH,
            Some(Publication { if_match: Some(_), .. }) => MODIFY,
        });
        let by = entry.entered_by.as_str();
        let q = sqlx::query(&sql);
        let q = match publication {
            Some(Publication { if_match: Some(tag), etag }) => q
                .bind(erl)
                .bind(ip)
                .bind(subnet)
                .bind(mac)
                .bind(bssid)
                .bind(by)
                .bind(confirmed_at)
                .bind(etag)
                .bind(&entry.owner)
                .bind(tag),
            _ => {
                let q = q.bind(&entry.owner).bind(erl).bind(ip).bind(subnet).bind(mac).bind(bssid);
                let q = q.bind(by).bind(entered_at).bind(confirmed_at);
                match publication {
                    Some(p) => q.bind(&p.etag),
                    None => q,
                }
            }
        };
        let mut tx = self.db.begin_write("user_locations").await.map_err(self.db("begin transaction"))?;
        let done = q.execute(&mut *tx).await.map_err(self.db("set a user-entered location"))?;
        if matches!(publication, Some(Publication { if_match: Some(_), .. })) && done.rows_affected() == 0 {
            // A modify whose publication is not the kept one: nothing changed.
            return Ok(false);
        }
        bump(&mut tx, self).await?;
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(true)
    }

    /// A publication's refresh (RFC 3903 §4.3): the owner's entry, if its tag is `if_match`,
    /// gets the tag `etag`; nothing else changes (no network, no generation: calls see no
    /// difference). `false` when no entry has that tag.
    pub async fn refresh_publication(&self, owner: &str, if_match: &str, etag: &str) -> Result<bool, LisError> {
        let done =
            sqlx::query(&self.sql("UPDATE user_locations SET publish_etag = ? WHERE owner = ? AND publish_etag = ?"))
                .bind(etag)
                .bind(owner)
                .bind(if_match)
                .execute(&self.db.pool)
                .await
                .map_err(self.db("refresh a publication"))?;
        Ok(done.rows_affected() > 0)
    }

    /// A publication's removal (RFC 3903 §4.5): the owner's entry removed if its tag is
    /// `if_match`; `false` when no entry has that tag.
    pub async fn clear_publication(&self, owner: &str, if_match: &str) -> Result<bool, LisError> {
        self.delete_user_location(owner, Some(if_match)).await
    }

    /// Removes the owner's location; `false` when there was none.
    pub async fn clear_user_location(&self, owner: &str) -> Result<bool, LisError> {
        self.delete_user_location(owner, None).await
    }

    /// Removes the owner's location (only with publication tag `etag`, when given).
    async fn delete_user_location(&self, owner: &str, etag: Option<&str>) -> Result<bool, LisError> {
        let mut tx = self.db.begin_write("user_locations").await.map_err(self.db("begin transaction"))?;
        let sql = self.sql(match etag {
            None => "DELETE FROM user_locations WHERE owner = ?",
            Some(_) => "DELETE FROM user_locations WHERE owner = ? AND publish_etag = ?",
        });
        let q = sqlx::query(&sql).bind(owner);
        let q = match etag {
            None => q,
            Some(tag) => q.bind(tag),
        };
        let done = q.execute(&mut *tx).await.map_err(self.db("clear a user-entered location"))?;
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
