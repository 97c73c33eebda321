-- User-entered locations (issue 16 item 3; docs/location.md): the civic address a remote user
-- (or an admin for them) entered, validated, for the calls of that user — with the network the
-- device was on when it was entered. A call from another network does not use it until it is
-- confirmed again (which re-validates and records the new network).
CREATE TABLE user_locations (
    owner        TEXT NOT NULL PRIMARY KEY, -- the caller as calls show it (P-Asserted-Identity or From user part)
    erl          TEXT NOT NULL,             -- the ERL as JSON (the civic address, label, company)
    ip           TEXT,                      -- the device's address when entered (NULL: not known)
    subnet       TEXT,                      -- its /24 or /64: the network a call must come from
    mac          TEXT,                      -- the device's MAC, when known (0A-23-CD-16-AA-2E)
    bssid        TEXT,                      -- the Wi-Fi access point's BSSID, when known
    entered_by   TEXT NOT NULL,             -- who set it: "user alice", "desk lobby", "cli", "sip-publish alice"
    entered_at   TEXT NOT NULL,             -- RFC 3339, UTC: first entered
    confirmed_at TEXT NOT NULL              -- RFC 3339, UTC: last entered or confirmed (validated then)
) STRICT;

-- Bumped by every change of user_locations: a running core re-reads the table when it moves.
CREATE TABLE user_locations_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
) STRICT;
INSERT INTO user_locations_generation (id, generation) VALUES (1, 0);
