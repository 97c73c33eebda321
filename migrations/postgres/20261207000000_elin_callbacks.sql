-- ELIN callback mappings: the same table as ../sqlite/20261207000000_elin_callbacks.sql (read it
-- for what each column means).
CREATE TABLE elin_callbacks (
    elin             TEXT COLLATE "C" PRIMARY KEY,
    call_ref         TEXT NOT NULL,
    caller_number    TEXT NOT NULL,
    caller_display   TEXT,
    caller_transport TEXT NOT NULL,
    caller_addr      TEXT NOT NULL,
    expires_ms       BIGINT NOT NULL,
    node             TEXT
);
