-- Site maps (issue 16 item 4): georeferenced images (an OpenStreetMap export of the campus, a site
-- plan) on which the desk draws a call's geodetic location, with no internet tile service
-- (src/location/sitemap.rs). The image is kept in floor_plans, by its SHA-256, so the floor-plan
-- API endpoint serves it and a plan used as both is stored once.
--
-- The edges are the latitudes (north, south) and longitudes (west, east) of the image's edges,
-- WGS 84 degrees: within Web Mercator's ±85.0511° latitude, not crossing the antimeridian.
CREATE TABLE site_maps (
    name  TEXT NOT NULL PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    plan  TEXT NOT NULL REFERENCES floor_plans (sha256),
    north REAL NOT NULL CHECK (north <= 85.0511287798066),
    south REAL NOT NULL CHECK (south >= -85.0511287798066),
    west  REAL NOT NULL CHECK (west >= -180),
    east  REAL NOT NULL CHECK (east <= 180),
    CHECK (north > south),
    CHECK (east > west)
) STRICT;

CREATE INDEX site_maps_by_plan ON site_maps (plan);
