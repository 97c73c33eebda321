-- ELIN callback mappings (issue 14): when a call goes out through an ELIN gateway, which caller
-- the ELIN stands for until `expires_ms`. Kept in memory by the node that routed the call and
-- written here so that a PSAP's callback reaching another node (or the same node after a
-- restart) still finds the caller. One row per ELIN: the newest mapping replaces the older.
CREATE TABLE elin_callbacks (
    elin             TEXT PRIMARY KEY,
    call_ref         TEXT NOT NULL,
    caller_number    TEXT NOT NULL,
    caller_display   TEXT,
    caller_transport TEXT NOT NULL,  -- UDP | TCP | TLS
    caller_addr      TEXT NOT NULL,  -- IP:port (IPv6 in brackets) the call came from
    expires_ms       INTEGER NOT NULL, -- Unix time, milliseconds: every node reads the same clock
    node             TEXT
) STRICT, WITHOUT ROWID;
