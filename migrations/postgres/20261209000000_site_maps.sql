-- Site maps (issue 16 item 4): see migrations/sqlite/20261209000000_site_maps.sql.
CREATE TABLE site_maps (
    name  TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 100),
    plan  TEXT COLLATE "C" NOT NULL REFERENCES floor_plans (sha256),
    north DOUBLE PRECISION NOT NULL CHECK (north <= 85.0511287798066),
    south DOUBLE PRECISION NOT NULL CHECK (south >= -85.0511287798066),
    west  DOUBLE PRECISION NOT NULL CHECK (west >= -180),
    east  DOUBLE PRECISION NOT NULL CHECK (east <= 180),
    CHECK (north > south),
    CHECK (east > west)
);

CREATE INDEX site_maps_by_plan ON site_maps (plan);
