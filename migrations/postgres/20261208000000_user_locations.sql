-- User-entered locations: the same tables as ../sqlite/20261208000000_user_locations.sql (read it
-- for what each column means).
CREATE TABLE user_locations (
    owner        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    erl          TEXT NOT NULL,
    ip           TEXT,
    subnet       TEXT,
    mac          TEXT,
    bssid        TEXT,
    entered_by   TEXT NOT NULL,
    entered_at   TEXT NOT NULL,
    confirmed_at TEXT NOT NULL
);

CREATE TABLE user_locations_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO user_locations_generation (id, generation) VALUES (1, 0);
