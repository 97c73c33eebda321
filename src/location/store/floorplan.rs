//! Floor plans in the store (`migrations/*/20261208010000_floor_plans.sql`): each image once by
//! its SHA-256 in `floor_plans`, each ERL's point in `erl_floor_plans`. Setting or clearing a pin
//! bumps the LIS generation, so a running core's wiremap — and the ERLs its calls carry — follow.

use std::collections::HashMap;

use sqlx::AnyConnection;

use super::sql::bump_generation;
use super::{LisError, LisStore};
use crate::location::floorplan::{FloorPlanImage, FloorPlanPin, MediaType};
use crate::location::Erl;

/// One ERL's plan and point, to be written.
#[derive(Debug, Clone, Copy)]
pub struct NewPin<'a> {
    pub image: &'a FloorPlanImage,
    pub x: f64,
    pub y: f64,
}

/// What uses a stored image, by its key.
#[derive(Debug, Clone, Copy)]
pub(super) enum ImageUser<'a> {
    /// An ERL's pin, by the ERL's id.
    Erl(i64),
    /// A site map, by its name.
    SiteMap(&'a str),
}

impl LisStore {
    /// Gives ERL `erl_id` the plan `image` (checked by `floorplan::check_image`) and the point
    /// (x, y) on it, replacing any earlier one; returns the pin as calls will carry it.
    pub async fn set_floor_plan(&self, erl_id: i64, pin: NewPin<'_>) -> Result<FloorPlanPin, LisError> {
        let out = FloorPlanPin::new(pin.image.sha256.clone(), pin.x, pin.y)
            .map_err(|reason| LisError::InvalidPin { erl_id, reason })?;
        let mut tx = self.db.begin_write("erls").await.map_err(self.db("begin transaction"))?;
        let exists: Option<(i64,)> = sqlx::query_as(&self.sql("SELECT id FROM erls WHERE id = ?"))
            .bind(erl_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.db("find the ERL"))?;
        if exists.is_none() {
            return Err(LisError::NoSuchErl { store: self.db.location.clone(), id: erl_id });
        }
        self.write_pins(&mut tx, &[(erl_id, pin)]).await?;
        bump_generation(&mut tx, self).await?;
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(out)
    }

    /// Takes ERL `erl_id`'s plan away (the plan itself goes when no ERL uses it); whether it had
    /// one.
    pub async fn clear_floor_plan(&self, erl_id: i64) -> Result<bool, LisError> {
        self.drop_image_user(
            "DELETE FROM erl_floor_plans WHERE erl_id = ?",
            ImageUser::Erl(erl_id),
            "clear a floor plan",
        )
        .await
    }

    /// Deletes one user of a stored image (an ERL's pin, a site map) with `delete`; when there
    /// was one, drops the images nobody uses any more and bumps the generation, so running
    /// cores follow. Whether there was one.
    pub(super) async fn drop_image_user(
        &self,
        delete: &str,
        user: ImageUser<'_>,
        what: &'static str,
    ) -> Result<bool, LisError> {
        let mut tx = self.db.begin_write("erls").await.map_err(self.db("begin transaction"))?;
        let sql = self.sql(delete);
        let query = sqlx::query(&sql);
        let query = match user {
            ImageUser::Erl(id) => query.bind(id),
            ImageUser::SiteMap(name) => query.bind(name),
        };
        let had = query.execute(&mut *tx).await.map_err(self.db(what))?.rows_affected() > 0;
        if had {
            self.delete_unused_plans(&mut tx).await?;
            bump_generation(&mut tx, self).await?;
        }
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(had)
    }

    /// A plan's image by its id (SHA-256): media type and bytes.
    pub async fn floor_plan_image(&self, sha256: &str) -> Result<Option<(MediaType, Vec<u8>)>, LisError> {
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as(&self.sql("SELECT media_type, image FROM floor_plans WHERE sha256 = ?"))
                .bind(sha256)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(self.db("read a floor plan"))?;
        match row {
            None => Ok(None),
            Some((t, bytes)) => match MediaType::parse(&t) {
                Some(m) => Ok(Some((m, bytes))),
                None => Err(self.corrupt("floor_plans", sha256, format!("media type {t:?}"))),
            },
        }
    }

    /// Writes pins (and their images, once each) in the caller's write transaction, then drops
    /// plans no ERL uses any more.
    pub(super) async fn write_pins(&self, tx: &mut AnyConnection, pins: &[(i64, NewPin<'_>)]) -> Result<(), LisError> {
        let upsert_pin = self.sql(
            "INSERT INTO erl_floor_plans (erl_id, plan, x, y) VALUES (?, ?, ?, ?) \
             ON CONFLICT (erl_id) DO UPDATE SET plan = excluded.plan, x = excluded.x, y = excluded.y",
        );
        let mut written: Vec<&str> = Vec::new();
        for (erl_id, pin) in pins {
            let img = pin.image;
            if !written.contains(&img.sha256.as_str()) {
                self.insert_image(tx, img).await?;
                written.push(&img.sha256);
            }
            sqlx::query(&upsert_pin)
                .bind(*erl_id)
                .bind(img.sha256.as_str())
                .bind(pin.x)
                .bind(pin.y)
                .execute(&mut *tx)
                .await
                .map_err(self.db("set a floor plan pin"))?;
        }
        self.delete_unused_plans(tx).await
    }

    /// Stores an image (checked by `floorplan::check_image`) once: an image already there is
    /// left as it is (same SHA-256, same bytes).
    pub(super) async fn insert_image(&self, tx: &mut AnyConnection, img: &FloorPlanImage) -> Result<(), LisError> {
        sqlx::query(&self.sql(
            "INSERT INTO floor_plans (sha256, media_type, image) VALUES (?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
        ))
        .bind(img.sha256.as_str())
        .bind(img.media_type.as_str())
        .bind(img.bytes.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(self.db("store a floor plan"))?;
        Ok(())
    }

    /// Deletes the images neither an ERL's pin nor a site map uses.
    pub(super) async fn delete_unused_plans(&self, tx: &mut AnyConnection) -> Result<(), LisError> {
        sqlx::query(
            "DELETE FROM floor_plans WHERE NOT EXISTS \
             (SELECT 1 FROM erl_floor_plans AS p WHERE p.plan = floor_plans.sha256) \
             AND NOT EXISTS (SELECT 1 FROM site_maps AS m WHERE m.plan = floor_plans.sha256)",
        )
        .execute(&mut *tx)
        .await
        .map_err(self.db("delete unused floor plans"))?;
        Ok(())
    }

    /// Puts each ERL's pin on it (`erls` as `read_erls` reads them: id first).
    pub(super) async fn attach_pins<V, A>(
        &self,
        conn: &mut AnyConnection,
        erls: &mut [(i64, Erl, V, A)],
        index: &HashMap<i64, usize>,
    ) -> Result<(), LisError> {
        let pins: Vec<(i64, String, f64, f64)> = sqlx::query_as("SELECT erl_id, plan, x, y FROM erl_floor_plans")
            .fetch_all(&mut *conn)
            .await
            .map_err(self.db("read floor plan pins"))?;
        for (erl_id, plan, x, y) in pins {
            // A bad pin costs its plan on the alert, never the wiremap: the ERL still locates.
            let pin = match FloorPlanPin::new(plan, x, y) {
                Ok(pin) => pin,
                Err(e) => {
                    tracing::error!(erl = erl_id, error = %e, "a floor plan pin in the store is not valid: the ERL is shown without its plan");
                    continue;
                }
            };
            if let Some(i) = index.get(&erl_id) {
                erls[*i].1.floor_plan = Some(pin);
            }
        }
        Ok(())
    }
}
