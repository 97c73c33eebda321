//! Site maps in the store (`migrations/*/20261209000000_site_maps.sql`): each map's name, its
//! edges and its image — kept in `floor_plans` by SHA-256 with the floor plans, so one API
//! endpoint serves both and an image used twice is stored once. Setting or clearing a map bumps
//! the LIS generation, so a running core places new calls on the new maps within a reload.

use serde::Serialize;

use super::floorplan::ImageUser;
use super::sql::bump_generation;
use super::{LisError, LisStore};
use crate::location::floorplan::FloorPlanImage;
use crate::location::sitemap::{check_name, Bounds, SiteMap, SiteMaps};

/// A site map as stored, with what its image is (for `sosdesk lis sitemap list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredSiteMap {
    pub name: String,
    /// Lower-hex SHA-256 of the image: `GET /api/v1/floor-plans/{plan}`.
    pub plan: String,
    pub north: f64,
    pub south: f64,
    pub west: f64,
    pub east: f64,
    pub media_type: String,
    pub bytes: i64,
}

type Row = (String, String, f64, f64, f64, f64, String, i64);

impl LisStore {
    /// Sets site map `name` — a new one, or another image or other edges for the one of that name
    /// — with `image` (checked by `floorplan::check_image`); an image no longer used goes.
    pub async fn set_site_map(&self, name: &str, image: &FloorPlanImage, bounds: Bounds) -> Result<(), LisError> {
        let invalid = |reason: String| LisError::InvalidSiteMap { name: name.to_string(), reason };
        check_name(name).map_err(invalid)?;
        let b = Bounds::new(bounds.north, bounds.south, bounds.west, bounds.east).map_err(invalid)?;
        let mut tx = self.db.begin_write("erls").await.map_err(self.db("begin transaction"))?;
        self.insert_image(&mut tx, image).await?;
        sqlx::query(&self.sql(
            "INSERT INTO site_maps (name, plan, north, south, west, east) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET plan = excluded.plan, north = excluded.north, \
             south = excluded.south, west = excluded.west, east = excluded.east",
        ))
        .bind(name)
        .bind(image.sha256.as_str())
        .bind(b.north)
        .bind(b.south)
        .bind(b.west)
        .bind(b.east)
        .execute(&mut *tx)
        .await
        .map_err(self.db("set a site map"))?;
        self.delete_unused_plans(&mut tx).await?;
        bump_generation(&mut tx, self).await?;
        tx.commit().await.map_err(self.db("commit"))?;
        Ok(())
    }

    /// Takes site map `name` away (its image too when nothing else uses it); whether there was one.
    pub async fn clear_site_map(&self, name: &str) -> Result<bool, LisError> {
        self.drop_image_user("DELETE FROM site_maps WHERE name = ?", ImageUser::SiteMap(name), "clear a site map").await
    }

    /// Every site map, by name.
    pub async fn list_site_maps(&self) -> Result<Vec<StoredSiteMap>, LisError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT m.name, m.plan, m.north, m.south, m.west, m.east, f.media_type, \
             CAST(length(f.image) AS BIGINT) \
             FROM site_maps AS m JOIN floor_plans AS f ON f.sha256 = m.plan ORDER BY m.name",
        )
        .fetch_all(&self.db.pool)
        .await
        .map_err(self.db("read site maps"))?;
        Ok(rows
            .into_iter()
            .map(|(name, plan, north, south, west, east, media_type, bytes)| StoredSiteMap {
                name,
                plan,
                north,
                south,
                west,
                east,
                media_type,
                bytes,
            })
            .collect())
    }

    /// The site maps the core places calls' points on. A row whose edges are not a map (written
    /// past the checks) is left out and logged: it costs its map, never the other maps.
    pub async fn load_site_maps(&self) -> Result<SiteMaps, LisError> {
        let mut maps = Vec::new();
        for m in self.list_site_maps().await? {
            match Bounds::new(m.north, m.south, m.west, m.east) {
                Ok(bounds) => maps.push(SiteMap { name: m.name, plan: m.plan, bounds }),
                Err(e) => {
                    tracing::error!(map = %m.name, error = %e, "a site map in the store has edges that are not a map: left out")
                }
            }
        }
        Ok(SiteMaps::new(maps))
    }
}
