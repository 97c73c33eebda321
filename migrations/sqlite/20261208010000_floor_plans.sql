-- Floor plans (issue 16 item 4): an ERL may carry an image of its floor and the point on it where
-- the ERL is; the desk shows the plan with a pin (src/location/floorplan.rs).
--
-- Images are kept in the store, not beside it: one file to back up, the same plans for every node
-- sharing a PostgreSQL store, and a plan and its pins set in one transaction. They are small
-- (at most 4 MiB each, checked before they are written) and stored once per content: a floor's
-- plan is shared by every ERL on that floor, each with its own point.
CREATE TABLE floor_plans (
    -- Lower-hex SHA-256 of the image: its id in the API (GET /api/v1/floor-plans/{sha256}).
    sha256     TEXT NOT NULL PRIMARY KEY CHECK (length(sha256) = 64),
    media_type TEXT NOT NULL CHECK (media_type IN ('image/png', 'image/svg+xml')),
    image      BLOB NOT NULL CHECK (length(image) <= 4194304)
) STRICT, WITHOUT ROWID;

-- The point of each ERL on its plan, as fractions of the image's width (x) and height (y) from
-- its top-left corner. A plan no ERL points at any more is deleted with its last pin.
CREATE TABLE erl_floor_plans (
    erl_id INTEGER NOT NULL PRIMARY KEY REFERENCES erls (id),
    plan   TEXT    NOT NULL REFERENCES floor_plans (sha256),
    x      REAL    NOT NULL CHECK (x >= 0 AND x <= 1),
    y      REAL    NOT NULL CHECK (y >= 0 AND y <= 1)
) STRICT;

CREATE INDEX erl_floor_plans_by_plan ON erl_floor_plans (plan);
