-- Location Information Service: Emergency Response Locations (ERLs) and the wiremap that maps
-- network elements (subnet, Wi-Fi BSSID, LLDP chassis, chassis + port, device MAC) to them.
--
-- These tables live in the same SQLite file as the audit log (one file to back up; the migrator
-- runs every file of migrations/). Written by `sosdesk lis import` (src/location/store.rs), read
-- into the in-memory wiremap index, exported back to the Skype for Business CSV formats.
--
-- STRICT tables: a value of the wrong type is refused instead of silently stored.

-- One row per distinct ERL. Several network elements usually share one ERL (a floor's subnets,
-- switches and access points), and Skype for Business did the same: "If a location with an address
-- exactly matching the address parameters entered here (including null values) does not exist in
-- the location database, a new address will be created" (Set-CsLisSubnet). An ERL row is never
-- changed by an import — a changed address is a new ERL — so its validation status stays attached
-- to the exact address that was validated. ERLs no longer referenced are kept, as SfB kept them
-- ("The location will still exist in the location database").
CREATE TABLE erls (
    id                INTEGER PRIMARY KEY,
    -- Lower-hex SHA-256 of the ERL's content (label, company, every civic element, ELINs; not the
    -- validation status), computed by store.rs `content_key`. UNIQUE: identical ERLs are stored once.
    content_key       TEXT    NOT NULL UNIQUE,
    -- Location label shown to people (the SfB Location column).
    label             TEXT    NOT NULL,
    -- Company name without the ELINs (see sfb_csv.rs for how CompanyName is split).
    company           TEXT,
    -- RFC 5139 §3.1 civic address elements, named as in CivicAddress (NULL = element absent).
    country           TEXT,
    a1                TEXT,
    a2                TEXT,
    a3                TEXT,
    a4                TEXT,
    a5                TEXT,
    a6                TEXT,
    prd               TEXT,
    pod               TEXT,
    sts               TEXT,
    rd                TEXT,
    rdsec             TEXT,
    rdbr              TEXT,
    rdsubbr           TEXT,
    hno               TEXT,
    hns               TEXT,
    lmk               TEXT,
    loc               TEXT,
    flr               TEXT,
    nam               TEXT,
    pc                TEXT,
    bld               TEXT,
    unit              TEXT,
    room              TEXT,
    seat              TEXT,
    plc               TEXT,
    pcn               TEXT,
    pobox             TEXT,
    addcode           TEXT,
    -- ELINs as a JSON array of digit strings, in the order given (the ELIN gateway route uses the
    -- first one not already waiting for a callback).
    elins             TEXT    NOT NULL CHECK (json_valid(elins) AND json_type(elins) = 'array'),
    -- MSAG validation (Test-CsLisCivicAddress -UpdateValidationStatus in SfB): NULL = not validated
    -- yet, 'valid', or 'invalid' with the reasons in validation_detail (JSON array of strings).
    validation        TEXT    CHECK (validation IN ('valid', 'invalid')),
    validation_detail TEXT    CHECK (validation_detail IS NULL OR json_valid(validation_detail)),
    -- RFC 3339 UTC of the last set_validation.
    validated_at      TEXT
) STRICT;

-- The wiremap: one table per kind of network element rather than one table with a kind column.
-- Each kind has its own natural key (a CIDR text; a MAC; a chassis; chassis + subtype + port), so
-- each table's PRIMARY KEY is exactly the element, uniqueness and the upsert's ON CONFLICT target
-- come from SQLite itself, every column is NOT NULL and typed for its kind, and CHECKs can hold
-- the canonical spellings. One shared table would need either a synthetic text key or nullable
-- per-kind columns with partial unique indexes. SfB kept them apart too (Set-CsLisSubnet,
-- -WirelessAccessPoint, -Switch, -Port each own their elements).
--
-- WITHOUT ROWID: the key B-tree is the table, so a 1,000,000-row import writes one B-tree per row
-- instead of a rowid table plus a unique index. There is deliberately no index on erl_id: `lis
-- list` scans, and a second B-tree per table would slow the bulk import for a rare query.
--
-- erl_id REFERENCES erls: sqlx turns foreign_keys on for every connection.
-- description: the SfB Description column, verbatim ('' when empty).

-- Subnets. `subnet` is canonical CIDR text (ipnet's Display of a network with no host bits:
-- "10.1.2.0/24", "2001:db8:1::/48"). `bare_id` = 1 when the file gave an SfB subnet ID without a
-- prefix length (SfB's only form); the prefix was then inferred as documented in sfb_csv.rs, and
-- the export writes the bare ID back.
CREATE TABLE wiremap_subnets (
    subnet      TEXT    NOT NULL PRIMARY KEY CHECK (instr(subnet, '/') > 0),
    bare_id     INTEGER NOT NULL CHECK (bare_id IN (0, 1)),
    erl_id      INTEGER NOT NULL REFERENCES erls (id),
    description TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- Wi-Fi access points by BSSID, "0A-23-CD-16-AA-2E" (format_mac: upper-case hex, '-').
CREATE TABLE wiremap_waps (
    bssid       TEXT    NOT NULL PRIMARY KEY
                CHECK (length(bssid) = 17 AND bssid GLOB '[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]'),
    erl_id      INTEGER NOT NULL REFERENCES erls (id),
    description TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- Switches by LLDP chassis ID: a MAC in format_mac form, or an IP address in its canonical text
-- (Set-CsLisSwitch: "in the form nn-nn-nn-nn-nn-nn … or in the form of an IP address").
CREATE TABLE wiremap_switches (
    chassis_id  TEXT    NOT NULL PRIMARY KEY CHECK (chassis_id <> ''),
    erl_id      INTEGER NOT NULL REFERENCES erls (id),
    description TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- Switch ports: "The combination of ChassisID, PortID and PortIDSubType makes a unique port
-- location" (Set-CsLisPort). port_subtype is PortIdSubtype::as_str(); port_id is verbatim.
CREATE TABLE wiremap_ports (
    chassis_id   TEXT    NOT NULL CHECK (chassis_id <> ''),
    port_subtype TEXT    NOT NULL CHECK (port_subtype IN ('LocallyAssigned', 'InterfaceAlias', 'InterfaceName')),
    port_id      TEXT    NOT NULL CHECK (port_id <> ''),
    erl_id       INTEGER NOT NULL REFERENCES erls (id),
    description  TEXT    NOT NULL,
    PRIMARY KEY (chassis_id, port_subtype, port_id)
) STRICT, WITHOUT ROWID;

-- Device MACs (a sosdesk extension; SfB resolved a MAC to a switch port through an SNMP
-- MACResolver instead). Same spelling as BSSIDs.
CREATE TABLE wiremap_macs (
    mac         TEXT    NOT NULL PRIMARY KEY
                CHECK (length(mac) = 17 AND mac GLOB '[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]-[0-9A-F][0-9A-F]'),
    erl_id      INTEGER NOT NULL REFERENCES erls (id),
    description TEXT    NOT NULL
) STRICT, WITHOUT ROWID;
