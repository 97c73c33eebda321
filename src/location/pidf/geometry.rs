//! Geodetic locations in a PIDF-LO: the GML shapes of RFC 5491 §5. Written: Point, Circle or
//! Sphere from a [`GeoPoint`]. Read: every RFC 5491 §5.2 shape (and GML 3.0 / `gml:coordinates`
//! as in RFC 4119 §2.3), reduced to a centre and, where it has an extent, the radius of a circle
//! that contains it.

use roxmltree::Node;

use super::xml::{display_name, quote, text_of, XmlWriter};
use crate::location::GeoPoint;

/// RFC 5491 §5: the two coordinate reference systems a PIDF-LO may use.
pub(super) const CRS_2D: &str = "urn:ogc:def:crs:EPSG::4326";
pub(super) const CRS_3D: &str = "urn:ogc:def:crs:EPSG::4979";
/// RFC 5491 §5: lengths in metres.
pub(super) const UOM_METRE: &str = "urn:ogc:def:uom:EPSG::9001";

/// The geodetic position as sent, or `None` when it cannot be a real place.
pub(super) fn sendable_geo(g: GeoPoint) -> Option<GeoPoint> {
    if !(g.latitude.is_finite() && g.longitude.is_finite()) || g.latitude.abs() > 90.0 || g.longitude.abs() > 180.0 {
        tracing::warn!(lat = g.latitude, lon = g.longitude, "PIDF-LO: geodetic position out of range; left out");
        return None;
    }
    Some(GeoPoint {
        latitude: g.latitude,
        longitude: g.longitude,
        altitude_m: g.altitude_m.filter(|a| a.is_finite()),
        radius_m: g.radius_m.filter(|r| r.is_finite() && *r > 0.0),
    })
}

/// RFC 5491 §5.2: Point (§5.2.1, 2D or 3D), Circle (§5.2.3), Sphere (§5.2.6, a circle with
/// altitude). Coordinates are "latitude longitude [altitude]" in that order (EPSG axis order).
pub(super) fn write_shape(w: &mut XmlWriter, g: &GeoPoint) {
    let mut pos = format!("{} {}", g.latitude, g.longitude);
    if let Some(a) = g.altitude_m {
        pos.push_str(&format!(" {a}"));
    }
    let crs = if g.altitude_m.is_some() { CRS_3D } else { CRS_2D };
    match g.radius_m {
        None => {
            w.open("gml:Point", &[("srsName", crs)]);
            w.leaf("gml:pos", &[], &pos);
            w.close("gml:Point");
        }
        Some(r) => {
            let shape = if g.altitude_m.is_some() { "gs:Sphere" } else { "gs:Circle" };
            w.open(shape, &[("srsName", crs)]);
            w.leaf("gml:pos", &[], &pos);
            w.leaf("gs:radius", &[("uom", UOM_METRE)], &r.to_string());
            w.close(shape);
        }
    }
}

/// RFC 5491 §5: which coordinate system a shape uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Crs {
    TwoD,
    ThreeD,
}

pub(super) fn parse_shape(shape: Node, local: &str, warnings: &mut Vec<String>) -> Result<GeoPoint, String> {
    let shown = display_name(shape);
    let shown = shown.as_str();
    let crs = shape_crs(shape, shown, warnings)?;
    match local {
        "Point" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: None })
        }
        // RFC 5491 §5.2.3 / §5.2.6: exact in our model (centre plus radius).
        "Circle" | "Sphere" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            let radius = length(shape, "radius", shown, warnings);
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: radius })
        }
        // RFC 5491 §5.2.4 / §5.2.7: reduced to the circle that contains the ellipse.
        "Ellipse" | "Ellipsoid" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            let radius = length(shape, "semiMajorAxis", shown, warnings);
            warnings.push(format!(
                "The <{shown}> was reduced to its centre with its semi-major axis as radius (a circle that contains it)."
            ));
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: radius })
        }
        // RFC 5491 §5.2.5: the centre of an arc band is the antenna, not the caller; the circle
        // of the outer radius around it contains the band.
        "ArcBand" => {
            let (lat, lon, alt) = centre(shape, shown, crs, warnings)?;
            let radius = length(shape, "outerRadius", shown, warnings);
            warnings.push(
                format!("The <{shown}> was reduced to the circle of its outer radius around its centre (the antenna site, not the caller)."),
            );
            Ok(GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: radius })
        }
        // RFC 5491 §5.2.2 / §5.2.8: the vertex centroid and the distance to the farthest vertex.
        "Polygon" | "Prism" => {
            let vertices = polygon_vertices(shape, crs)?;
            let g = covering_circle(&vertices);
            if !valid_lat_lon(g.latitude, g.longitude) {
                return Err("its vertices are not valid WGS 84 coordinates".into());
            }
            warnings.push(format!(
                "The <{shown}> ({} vertices) was reduced to its centre with the distance to its farthest vertex as radius.",
                vertices.len()
            ));
            Ok(g)
        }
        _ => Err("unknown shape".into()),
    }
}

/// The shape's CRS from `srsName` (RFC 5491 §5 allows only EPSG 4326 and 4979).
pub(super) fn shape_crs(shape: Node, shown: &str, warnings: &mut Vec<String>) -> Result<Option<Crs>, String> {
    let Some(srs) = shape.attribute("srsName") else {
        warnings.push(format!("The <{shown}> has no srsName; WGS 84 (EPSG 4326/4979) assumed."));
        return Ok(None);
    };
    let s = srs.trim();
    if s == CRS_2D {
        return Ok(Some(Crs::TwoD));
    }
    if s == CRS_3D {
        return Ok(Some(Crs::ThreeD));
    }
    // Common older spellings: "epsg:4326", "EPSG:4326", ".../epsg.xml#4326", "urn:ogc:def:crs:EPSG:6.6:4326".
    let code: String =
        s.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect();
    let crs = match (s.to_ascii_lowercase().contains("epsg"), code.as_str()) {
        (true, "4326") => Crs::TwoD,
        (true, "4979") => Crs::ThreeD,
        _ => return Err(format!("its coordinate system \"{}\" is not WGS 84 (RFC 5491 §5)", quote(s))),
    };
    warnings.push(format!(
        "The <{shown}> names its coordinate system \"{}\" instead of the RFC 5491 §5 URN; read as WGS 84.",
        quote(s)
    ));
    Ok(Some(crs))
}

/// Centre position of a Point/Circle/… : `gml:pos`, or GML 2/3.0 `gml:coordinates`.
pub(super) fn centre(
    shape: Node,
    shown: &str,
    crs: Option<Crs>,
    warnings: &mut Vec<String>,
) -> Result<(f64, f64, Option<f64>), String> {
    let pos: Vec<Node> = shape.children().filter(|c| c.tag_name().name() == "pos").collect();
    let (lat, lon, alt) = if let Some(p) = pos.first() {
        if pos.len() > 1 {
            warnings.push(format!("The <{shown}> has {} <gml:pos>; the first is used.", pos.len()));
        }
        let raw = text_of(*p);
        let nums = parse_numbers(&raw)
            .ok_or_else(|| format!("<gml:pos> \"{}\" is not a list of numbers", quote(raw.trim())))?;
        match (nums.len(), crs) {
            (2, Some(Crs::ThreeD)) => {
                warnings.push(format!("The <{shown}> uses a 3D coordinate system but gives no altitude."));
                (nums[0], nums[1], None)
            }
            (2, _) => (nums[0], nums[1], None),
            (3, Some(Crs::TwoD)) => {
                warnings.push(format!(
                    "The <{shown}> gives 3 coordinates in the 2D system EPSG 4326; the third was read as altitude in metres."
                ));
                (nums[0], nums[1], Some(nums[2]))
            }
            (3, _) => (nums[0], nums[1], Some(nums[2])),
            (n, _) => return Err(format!("<gml:pos> has {n} numbers, expected 2 or 3")),
        }
    } else if let Some(c) = shape.children().find(|c| c.tag_name().name() == "coordinates") {
        let raw = text_of(c);
        let (lat, lon) = parse_gml_coordinates(&raw)
            .ok_or_else(|| format!("<gml:coordinates> \"{}\" could not be read", quote(raw.trim())))?;
        warnings.push(format!(
            "The <{shown}> uses <gml:coordinates> (as in RFC 4119 §2.3), which RFC 5491 §4 deprecates for <gml:pos>. Read as {lat:.6}, {lon:.6}."
        ));
        (lat, lon, None)
    } else {
        return Err("it has no <gml:pos>".into());
    };
    if !valid_lat_lon(lat, lon) {
        return Err(format!("{lat}, {lon} is not a valid latitude, longitude"));
    }
    Ok((lat, lon, alt))
}

/// A length child (`gs:radius`, `gs:semiMajorAxis`, …) in metres. Missing or unusable → `None`
/// with a warning: the centre is still worth sending someone to.
pub(super) fn length(shape: Node, child: &str, shown: &str, warnings: &mut Vec<String>) -> Option<f64> {
    let found: Vec<Node> = shape.children().filter(|c| c.tag_name().name() == child).collect();
    let Some(el) = found.first() else {
        warnings.push(format!("The <{shown}> has no <gs:{child}>; only its centre is used."));
        return None;
    };
    if found.len() > 1 {
        warnings.push(format!("The <{shown}> has {} <gs:{child}> elements; the first is used.", found.len()));
    }
    let raw = text_of(*el);
    let value = match parse_numbers(&raw).as_deref() {
        Some([v]) if *v >= 0.0 => *v,
        _ => {
            warnings.push(format!("<gs:{child}> \"{}\" is not a length; only the centre is used.", quote(raw.trim())));
            return None;
        }
    };
    // RFC 5491 §5: lengths use urn:ogc:def:uom:EPSG::9001 (metre).
    let factor = match el.attribute("uom").map(str::trim) {
        Some(UOM_METRE) => 1.0,
        None => {
            warnings.push(format!("<gs:{child}> has no uom; metres assumed."));
            1.0
        }
        Some(u) => match u.rsplit(':').next() {
            Some("9036") => 1000.0,          // kilometre
            Some("9002") => 0.3048,          // international foot
            Some("9003") => 1200.0 / 3937.0, // US survey foot
            Some("9093") => 1609.344,        // statute mile
            Some("9030") => 1852.0,          // nautical mile
            _ => {
                warnings.push(format!("<gs:{child}> has unknown unit \"{}\"; only the centre is used.", quote(u)));
                return None;
            }
        },
    };
    if factor != 1.0 {
        warnings.push(format!("<gs:{child}> was converted to metres from {}.", el.attribute("uom").unwrap_or("")));
    }
    Some(value * factor)
}

/// Exterior ring of a gml:Polygon (or a gs:Prism's base polygon), as (lat, lon, alt).
pub(super) fn polygon_vertices(shape: Node, crs: Option<Crs>) -> Result<Vec<(f64, f64, Option<f64>)>, String> {
    let ring = shape
        .descendants()
        .find(|n| n.tag_name().name() == "exterior")
        .and_then(|e| e.descendants().find(|n| n.tag_name().name() == "LinearRing"))
        .ok_or_else(|| "it has no exterior <gml:LinearRing>".to_string())?;
    let mut vertices = Vec::new();
    let pos_list = ring.children().find(|c| c.tag_name().name() == "posList");
    if let Some(pl) = pos_list {
        let raw = text_of(pl);
        let nums = parse_numbers(&raw).ok_or_else(|| "its <gml:posList> is not a list of numbers".to_string())?;
        let dim = match pl.attribute("srsDimension").map(str::trim) {
            Some("3") => 3,
            Some("2") => 2,
            _ if crs == Some(Crs::ThreeD) => 3,
            _ => 2,
        };
        if nums.len() % dim != 0 {
            return Err(format!("its <gml:posList> has {} numbers, not a multiple of {dim}", nums.len()));
        }
        for c in nums.chunks(dim) {
            vertices.push((c[0], c[1], c.get(2).copied()));
        }
    } else {
        for p in ring.children().filter(|c| c.tag_name().name() == "pos") {
            let raw = text_of(p);
            match parse_numbers(&raw).as_deref() {
                Some([a, b]) => vertices.push((*a, *b, None)),
                Some([a, b, c]) => vertices.push((*a, *b, Some(*c))),
                _ => return Err(format!("its <gml:pos> \"{}\" is not a coordinate", quote(raw.trim()))),
            }
        }
    }
    // A ring repeats its first vertex at the end (RFC 5491 §5.2.2).
    if vertices.len() > 1 && vertices.first() == vertices.last() {
        vertices.pop();
    }
    if vertices.len() < 3 {
        return Err(format!("its ring has {} distinct vertices, fewer than 3", vertices.len()));
    }
    if vertices.iter().any(|(la, lo, _)| !valid_lat_lon(*la, *lo)) {
        return Err("a vertex is not a valid latitude, longitude".into());
    }
    Ok(vertices)
}

/// Centroid of the vertices and the (rounded-up) distance to the farthest one. Uses an
/// equirectangular approximation, accurate to well under 1 % at cell/building scale.
pub(super) fn covering_circle(vertices: &[(f64, f64, Option<f64>)]) -> GeoPoint {
    let n = vertices.len() as f64;
    let lat = vertices.iter().map(|v| v.0).sum::<f64>() / n;
    let lon = vertices.iter().map(|v| v.1).sum::<f64>() / n;
    let alts: Vec<f64> = vertices.iter().filter_map(|v| v.2).collect();
    let alt = (!alts.is_empty()).then(|| alts.iter().sum::<f64>() / alts.len() as f64);
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let k = lat.to_radians().cos();
    let radius = vertices
        .iter()
        .map(|(la, lo, _)| {
            let dy = (la - lat).to_radians() * EARTH_RADIUS_M;
            let dx = (lo - lon).to_radians() * EARTH_RADIUS_M * k;
            (dx * dx + dy * dy).sqrt()
        })
        .fold(0.0_f64, f64::max)
        .ceil();
    GeoPoint { latitude: lat, longitude: lon, altitude_m: alt, radius_m: Some(radius) }
}

/// `gml:coordinates` as in RFC 4119 §2.3: "37:46:30N 122:25:10W" (degrees:minutes:seconds with
/// a hemisphere), or plain decimals "lat,lon" / "lat lon".
pub(super) fn parse_gml_coordinates(s: &str) -> Option<(f64, f64)> {
    let tokens: Vec<&str> = s.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|t| !t.is_empty()).collect();
    if tokens.len() < 2 {
        return None;
    }
    let (mut lat, mut lon) = (None, None);
    for (i, t) in tokens.iter().take(2).enumerate() {
        let (body, hemi) = match t.chars().last() {
            Some(h @ ('N' | 'S' | 'E' | 'W' | 'n' | 's' | 'e' | 'w')) => {
                (&t[..t.len() - 1], Some(h.to_ascii_uppercase()))
            }
            _ => (*t, None),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let value = if parts.len() == 1 && hemi.is_none() {
            // Plain signed decimal degrees.
            body.parse::<f64>().ok().filter(|v| v.is_finite())?
        } else {
            // Degrees[:minutes[:seconds]], unsigned; the hemisphere letter gives the sign.
            if parts.len() > 3 {
                return None;
            }
            let mut value = 0.0;
            let mut scale = 1.0;
            for p in parts {
                let v = p.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)?;
                value += v / scale;
                scale *= 60.0;
            }
            value
        };
        match hemi {
            Some('N') => lat = Some(value),
            Some('S') => lat = Some(-value),
            Some('E') => lon = Some(value),
            Some('W') => lon = Some(-value),
            _ if i == 0 => lat = Some(value),
            _ => lon = Some(value),
        }
    }
    Some((lat?, lon?))
}

pub(super) fn parse_numbers(s: &str) -> Option<Vec<f64>> {
    let v: Option<Vec<f64>> =
        s.split_ascii_whitespace().map(|t| t.parse::<f64>().ok().filter(|x| x.is_finite())).collect();
    v.filter(|v| !v.is_empty())
}

pub(super) fn valid_lat_lon(lat: f64, lon: f64) -> bool {
    lat.is_finite() && lon.is_finite() && lat.abs() <= 90.0 && lon.abs() <= 180.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gml_coordinates_dms() {
        let (lat, lon) = parse_gml_coordinates("37:46:30N 122:25:10W").unwrap();
        assert!((lat - 37.775).abs() < 1e-9 && (lon + 122.419_444_444).abs() < 1e-6, "{lat} {lon}");
        assert_eq!(parse_gml_coordinates("-34.5,150.25"), Some((-34.5, 150.25)));
        assert_eq!(parse_gml_coordinates("x y"), None);
        assert_eq!(parse_gml_coordinates("1"), None);
    }

    #[test]
    fn polygon_reduces_to_covering_circle() {
        // 0.01° square around (10, 20): the corners are ~780 m from the centre.
        let v = [(9.995, 19.995, None), (9.995, 20.005, None), (10.005, 20.005, None), (10.005, 19.995, None)];
        let g = covering_circle(&v);
        assert!((g.latitude - 10.0).abs() < 1e-9 && (g.longitude - 20.0).abs() < 1e-9);
        let r = g.radius_m.unwrap();
        assert!((770.0..790.0).contains(&r), "{r}");
    }
}
