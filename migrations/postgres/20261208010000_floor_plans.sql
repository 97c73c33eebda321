-- Floor plans (issue 16 item 4): see migrations/sqlite/20261208010000_floor_plans.sql.
CREATE TABLE floor_plans (
    sha256     TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (length(sha256) = 64),
    media_type TEXT NOT NULL CHECK (media_type IN ('image/png', 'image/svg+xml')),
    image      BYTEA NOT NULL CHECK (octet_length(image) <= 4194304)
);

CREATE TABLE erl_floor_plans (
    erl_id BIGINT NOT NULL PRIMARY KEY REFERENCES erls (id),
    plan   TEXT COLLATE "C" NOT NULL REFERENCES floor_plans (sha256),
    x      DOUBLE PRECISION NOT NULL CHECK (x >= 0 AND x <= 1),
    y      DOUBLE PRECISION NOT NULL CHECK (y >= 0 AND y <= 1)
);

CREATE INDEX erl_floor_plans_by_plan ON erl_floor_plans (plan);
