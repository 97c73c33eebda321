-- Desk registrations other nodes can reach: the same table as
-- ../sqlite/20261207010000_registrations.sql (read it for what each column means).
CREATE TABLE registrations (
    node       TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    uri        TEXT COLLATE "C" NOT NULL,
    addr       TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (node, username, uri)
);
