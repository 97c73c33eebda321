//! Site maps (issue 16 item 4): georeferenced images an admin supplies — an OpenStreetMap
//! "Export → image" of the campus, a site plan from facilities, a QGIS export — so that a call
//! with a geodetic location (a caller's PIDF-LO point or circle) is shown on a map without any
//! internet tile service.
//!
//! A site map is an image (checked by `floorplan::check_image` and stored with the floor plans,
//! by SHA-256, so the same API endpoint serves it) and the latitude and longitude of its four
//! edges. [`SiteMaps::place`] puts a point on the smallest map that contains it, as fractions of
//! the image's width and height from its top-left corner, like a floor-plan pin.
//!
//! **Projection.** x is linear in longitude. y is linear in Web Mercator's y (EPSG:3857,
//! `ln tan(π/4 + φ/2)`): exact for OpenStreetMap and every web-map export, which are drawn in it.
//! A plan drawn with plain linear latitude (an "equirectangular" export) differs from that by
//! far less than a pixel over a campus: across a 2 km map at latitude 60° the two agree within
//! 0.0001 of the height (a tenth of a pixel of a 1,000-pixel image), see the test
//! `mercator_and_linear_latitude_agree_over_a_campus`.
//!
//! **Uncertainty.** A circle's radius in metres becomes a radius in fractions of the width and of
//! the height (an ellipse when the image is not drawn at the map's proportions): metres per
//! fraction of the width are Δλ·R·cos φ at the point's latitude, of the height ΔY·R·cos φ (the
//! Mercator scale factor is 1/cos φ). R is the WGS 84 semi-major axis, Web Mercator's sphere; the
//! sphere against the ellipsoid is a difference under 1 %, nothing on a drawn circle.
//!
//! Sans-I/O: the core's reload reads the maps from the store (`store/sitemap.rs`) and swaps them
//! in whole ([`SharedSiteMaps`]); a call's location is placed from what is there.

use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::GeoPoint;

/// Web Mercator's latitude limit, atan(sinh π): the edges of the square world map. A map beyond
/// it has no Web Mercator y.
pub const MAX_LATITUDE: f64 = 85.051_128_779_806_59;

/// WGS 84 semi-major axis in metres: Web Mercator's sphere.
const EARTH_RADIUS_M: f64 = 6_378_137.0;

/// Longest site map name accepted.
pub const MAX_NAME_CHARS: usize = 100;

/// Where the caller's point is on a site map: the map (its name and its image's SHA-256, the id
/// of `GET /api/v1/floor-plans/{plan}`), the point as fractions of the image's width and height
/// from its top-left corner (0 ≤ x, y ≤ 1), and the uncertainty circle's radius as fractions of
/// the width and of the height (none when the location has no uncertainty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct SiteMapPin {
    /// The site map's name (`sosdesk lis sitemap set --name`).
    pub map: String,
    /// Lower-hex SHA-256 of the image.
    pub plan: String,
    pub x: f64,
    pub y: f64,
    pub radius_x: Option<f64>,
    pub radius_y: Option<f64>,
}

/// A site map's edges in degrees (WGS 84): checked by [`Bounds::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub north: f64,
    pub south: f64,
    pub west: f64,
    pub east: f64,
}

impl Bounds {
    /// The edges, or why they are not a map: every value finite, latitudes within Web
    /// Mercator's ±85.05°, longitudes within ±180°, north of south and east of west. A map that
    /// crosses the antimeridian (180°) is refused: make two, one each side.
    pub fn new(north: f64, south: f64, west: f64, east: f64) -> Result<Bounds, String> {
        for (name, v) in [("north", north), ("south", south), ("west", west), ("east", east)] {
            if !v.is_finite() {
                return Err(format!("--{name} {v}: not a number of degrees"));
            }
        }
        for (name, v) in [("north", north), ("south", south)] {
            if v.abs() > MAX_LATITUDE {
                return Err(format!(
                    "--{name} {v}: a latitude must be within ±{MAX_LATITUDE:.4}° (Web Mercator's limit; \
                     a site map is a campus, not a pole)"
                ));
            }
        }
        for (name, v) in [("west", west), ("east", east)] {
            if v.abs() > 180.0 {
                return Err(format!("--{name} {v}: a longitude must be within ±180°"));
            }
        }
        if north <= south {
            return Err(format!(
                "--north {north} is not north of --south {south}: north is the latitude of the image's top edge, \
                 south of its bottom edge"
            ));
        }
        if east <= west {
            if west > 0.0 && east < 0.0 {
                return Err(format!(
                    "--west {west} and --east {east}: the map crosses the antimeridian (180°), which site maps do \
                     not support: make two maps, one each side of it"
                ));
            }
            return Err(format!(
                "--east {east} is not east of --west {west}: east is the longitude of the image's right edge, \
                 west of its left edge"
            ));
        }
        Ok(Bounds { north, south, west, east })
    }

    /// Whether the point is on the map (edges included).
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        (self.south..=self.north).contains(&lat) && (self.west..=self.east).contains(&lon)
    }

    /// Width in radians of longitude and height in Web Mercator units (radians at the equator).
    fn mercator_size(&self) -> (f64, f64) {
        ((self.east - self.west).to_radians(), mercator_y(self.north) - mercator_y(self.south))
    }

    /// Ground width and height in metres across the middle of the map (for what the CLI says).
    pub fn ground_size_m(&self) -> (f64, f64) {
        let mid = (self.north + self.south) / 2.0;
        let width = (self.east - self.west).to_radians() * EARTH_RADIUS_M * mid.to_radians().cos();
        let height = (self.north - self.south).to_radians() * EARTH_RADIUS_M;
        (width, height)
    }

    /// Width ÷ height of the map as Web Mercator draws it: what an image of it should have.
    pub fn aspect_ratio(&self) -> f64 {
        let (w, h) = self.mercator_size();
        w / h
    }
}

/// Web Mercator's y for a latitude in degrees: ln tan(π/4 + φ/2) = asinh(tan φ).
fn mercator_y(lat: f64) -> f64 {
    lat.to_radians().tan().asinh()
}

/// A site map checked name, or why not: 1 to [`MAX_NAME_CHARS`] characters, no control
/// characters, not only spaces.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("--name: a site map needs a name (e.g. \"HQ campus\")".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("--name: at most {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("--name: control characters are not allowed in a name".into());
    }
    Ok(())
}

/// One site map as the core places points on it.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteMap {
    pub name: String,
    /// Lower-hex SHA-256 of the image.
    pub plan: String,
    pub bounds: Bounds,
}

impl SiteMap {
    /// The point's place on this map, or `None` when it is not on it.
    pub fn place(&self, g: &GeoPoint) -> Option<SiteMapPin> {
        let b = &self.bounds;
        if !b.contains(g.latitude, g.longitude) {
            return None;
        }
        let (width, height) = b.mercator_size();
        let x = (g.longitude - b.west).to_radians() / width;
        let y = (mercator_y(b.north) - mercator_y(g.latitude)) / height;
        // Metres per whole width or height at the point's latitude (see the module documentation).
        let ground = EARTH_RADIUS_M * g.latitude.to_radians().cos();
        let radius = g.radius_m.filter(|r| r.is_finite() && *r > 0.0);
        Some(SiteMapPin {
            map: self.name.clone(),
            plan: self.plan.clone(),
            // Rounding at an edge must not leave the image.
            x: x.clamp(0.0, 1.0),
            y: y.clamp(0.0, 1.0),
            radius_x: radius.map(|r| r / (width * ground)),
            radius_y: radius.map(|r| r / (height * ground)),
        })
    }

    fn area(&self) -> f64 {
        let (w, h) = self.bounds.mercator_size();
        w * h
    }
}

/// Every site map, smallest first: the one place a point is shown is the most detailed map that
/// has it (a building's plan before the campus, the campus before the town).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SiteMaps {
    maps: Vec<SiteMap>,
}

impl SiteMaps {
    pub fn new(mut maps: Vec<SiteMap>) -> SiteMaps {
        // By area in Web Mercator (proportional to ground area for maps at one latitude); equal
        // areas by name, so the choice never depends on the store's row order.
        maps.sort_by(|a, b| a.area().total_cmp(&b.area()).then_with(|| a.name.cmp(&b.name)));
        SiteMaps { maps }
    }

    /// The point on the smallest map that contains it; `None` when no map does.
    pub fn place(&self, g: &GeoPoint) -> Option<SiteMapPin> {
        self.maps.iter().find_map(|m| m.place(g))
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

/// The site maps the call path places points on, replaced whole when the LIS generation moves
/// (as the wiremap is: `server/lis.rs`).
#[derive(Debug, Clone, Default)]
pub struct SharedSiteMaps {
    current: Arc<RwLock<Arc<SiteMaps>>>,
}

impl SharedSiteMaps {
    pub fn load(&self) -> Arc<SiteMaps> {
        // Only an `Arc` swap happens under the lock: a poisoned lock still holds whole maps.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, maps: SiteMaps) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(maps);
    }

    /// [`SiteMaps::place`] on the current maps.
    pub fn place(&self, g: &GeoPoint) -> Option<SiteMapPin> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).place(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(latitude: f64, longitude: f64, radius_m: Option<f64>) -> GeoPoint {
        GeoPoint { latitude, longitude, altitude_m: None, radius_m }
    }

    /// A campus about 1.5 km × 1.1 km (Redmond, WA).
    fn campus() -> SiteMap {
        SiteMap {
            name: "campus".into(),
            plan: "c".repeat(64),
            bounds: Bounds::new(47.65, 47.64, -122.14, -122.12).unwrap(),
        }
    }

    fn close(a: f64, b: f64, what: &str) {
        assert!((a - b).abs() < 1e-9, "{what}: {a} ≠ {b}");
    }

    #[test]
    fn the_corners_and_the_centre_land_where_the_image_has_them() {
        let m = campus();
        for (lat, lon, x, y) in [
            (47.65, -122.14, 0.0, 0.0),
            (47.65, -122.12, 1.0, 0.0),
            (47.64, -122.14, 0.0, 1.0),
            (47.64, -122.12, 1.0, 1.0),
        ] {
            let pin = m.place(&point(lat, lon, None)).unwrap();
            close(pin.x, x, "corner x");
            close(pin.y, y, "corner y");
            assert_eq!((pin.radius_x, pin.radius_y), (None, None));
        }
        let pin = m.place(&point(47.645, -122.13, None)).unwrap();
        close(pin.x, 0.5, "centre x");
        // Mercator stretches the north more than the south, so the mid latitude is drawn a hair
        // below the image's middle row; over a kilometre, a hair indeed.
        let mid_y = (mercator_y(47.65) - mercator_y(47.645)) / (mercator_y(47.65) - mercator_y(47.64));
        close(pin.y, mid_y, "centre y");
        assert!(pin.y > 0.5 && pin.y - 0.5 < 1e-4, "{}", pin.y);
        assert_eq!((pin.map.as_str(), pin.plan.len()), ("campus", 64));
    }

    #[test]
    fn a_point_off_every_map_has_no_pin() {
        let maps = SiteMaps::new(vec![campus()]);
        for (lat, lon) in [(47.6501, -122.13), (47.6399, -122.13), (47.645, -122.1401), (47.645, -122.1199), (0.0, 0.0)]
        {
            assert_eq!(maps.place(&point(lat, lon, Some(10.0))), None, "{lat},{lon}");
        }
        assert_eq!(SiteMaps::default().place(&point(47.645, -122.13, None)), None);
    }

    #[test]
    fn the_smallest_map_that_has_the_point_wins() {
        let building = SiteMap {
            name: "building 4".into(),
            plan: "b".repeat(64),
            bounds: Bounds::new(47.6460, 47.6440, -122.1320, -122.1280).unwrap(),
        };
        let town = SiteMap {
            name: "town".into(),
            plan: "t".repeat(64),
            bounds: Bounds::new(47.70, 47.60, -122.20, -122.00).unwrap(),
        };
        // Whatever order the store gives them in.
        let maps = SiteMaps::new(vec![town, campus(), building]);
        assert_eq!(maps.place(&point(47.645, -122.13, None)).unwrap().map, "building 4");
        assert_eq!(maps.place(&point(47.641, -122.139, None)).unwrap().map, "campus");
        assert_eq!(maps.place(&point(47.61, -122.01, None)).unwrap().map, "town");
        assert_eq!(maps.len(), 3);
    }

    #[test]
    fn the_uncertainty_radius_becomes_fractions_of_the_map() {
        let m = campus();
        let pin = m.place(&point(47.645, -122.13, Some(100.0))).unwrap();
        // The map's ground size at the point: 0.02° of longitude and 0.01° of latitude.
        let metres_wide = 0.02f64.to_radians() * EARTH_RADIUS_M * 47.645f64.to_radians().cos();
        close(pin.radius_x.unwrap(), 100.0 / metres_wide, "radius_x");
        assert!((metres_wide - 1500.0).abs() < 0.5, "{metres_wide}");
        // North–south, a degree of latitude is ~111.3 km on the sphere: 0.01° ≈ 1113 m.
        let metres_high = 100.0 / pin.radius_y.unwrap();
        assert!((metres_high - 1113.2).abs() < 1.0, "{metres_high}");
        // Drawn at the map's proportions (width ÷ height = aspect_ratio), the ellipse is a circle.
        close(pin.radius_x.unwrap() * m.bounds.aspect_ratio(), pin.radius_y.unwrap(), "a circle on the image");
        // No, zero or nonsense radius: no circle.
        for r in [None, Some(0.0), Some(-5.0), Some(f64::NAN)] {
            let pin = m.place(&point(47.645, -122.13, r)).unwrap();
            assert_eq!((pin.radius_x, pin.radius_y), (None, None), "{r:?}");
        }
    }

    #[test]
    fn mercator_and_linear_latitude_agree_over_a_campus() {
        // 2 km north–south at 60° N: the worst of the campuses in the module documentation.
        let b = Bounds::new(60.009, 59.991, 10.0, 10.04).unwrap();
        let m = SiteMap { name: "n".into(), plan: "p".into(), bounds: b };
        for lat in [59.991, 59.995, 60.0, 60.004, 60.009] {
            let y = m.place(&point(lat, 10.02, None)).unwrap().y;
            let linear = (b.north - lat) / (b.north - b.south);
            assert!((y - linear).abs() < 0.0001, "{lat}: {y} vs {linear}");
        }
    }

    #[test]
    fn bounds_are_checked_with_the_reason() {
        assert!(Bounds::new(47.65, 47.64, -122.14, -122.12).is_ok());
        for (n, s, w, e, why) in [
            (47.64, 47.65, -122.14, -122.12, "--north 47.64 is not north of --south 47.65"),
            (47.65, 47.65, -122.14, -122.12, "is not north of"),
            (47.65, 47.64, -122.12, -122.14, "--east -122.14 is not east of --west -122.12"),
            (47.65, 47.64, 179.9, -179.9, "crosses the antimeridian"),
            (86.0, 47.64, -122.14, -122.12, "--north 86: a latitude must be within ±85.0511°"),
            (47.65, -89.0, -122.14, -122.12, "--south -89"),
            (47.65, 47.64, -181.0, -122.12, "--west -181: a longitude must be within ±180°"),
            (f64::NAN, 47.64, -122.14, -122.12, "--north NaN: not a number"),
            (47.65, 47.64, -122.14, f64::INFINITY, "--east inf: not a number"),
        ] {
            let err = Bounds::new(n, s, w, e).unwrap_err();
            assert!(err.contains(why), "{why} not in {err}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("HQ campus").is_ok());
        assert!(check_name(" ").unwrap_err().contains("needs a name"));
        assert!(check_name("a\nb").unwrap_err().contains("control characters"));
        assert!(check_name(&"x".repeat(101)).unwrap_err().contains("at most 100"));
    }

    #[test]
    fn shared_maps_are_replaced_whole() {
        let shared = SharedSiteMaps::default();
        let p = point(47.645, -122.13, None);
        assert_eq!(shared.place(&p), None);
        shared.replace(SiteMaps::new(vec![campus()]));
        assert_eq!(shared.place(&p).unwrap().map, "campus");
        assert_eq!(shared.load().len(), 1);
    }
}
