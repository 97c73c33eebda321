-- The unlocated report (issue 16): each network element (subnet, switch, access point) from which
-- a call or a HELD request could not be located by the wiremap (it fell back to a site default or
-- to nothing), with counts and when it was first and last seen; and how every call and HELD
-- request was located, per day (the share located by the wiremap).
CREATE TABLE unlocated (
    kind TEXT NOT NULL,          -- subnet | switch | access-point
    element TEXT NOT NULL,       -- 192.0.2.0/24 | the switch's chassis ID | the AP's BSSID
    first_seen TEXT NOT NULL,    -- RFC 3339, UTC
    last_seen TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    last_device TEXT NOT NULL,   -- what was known of the last device: IP, MAC, BSSID, chassis/port
    last_outcome TEXT NOT NULL,  -- site-default | none
    PRIMARY KEY (kind, element)
) WITHOUT ROWID;

CREATE TABLE location_outcomes (
    day TEXT NOT NULL,           -- YYYY-MM-DD, UTC
    asked TEXT NOT NULL,         -- call | held
    source TEXT NOT NULL,        -- wiremap | client-pidf-lo | held-cached | site-default | none …
    count INTEGER NOT NULL,
    PRIMARY KEY (day, asked, source)
) WITHOUT ROWID;
