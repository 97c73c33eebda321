-- Audit store: the append-only, hash-chained event log and the per-call summary.
--
-- The chain formula (reimplemented by `sosdesk audit verify` and by any external auditor) is
-- documented in src/audit/chain.rs:
--
--     hash = lower-hex( SHA-256( prev_hash || "\n" || seq || "\n" || payload ) )
--
-- with seq in decimal ASCII, payload the exact UTF-8 text stored in `events.payload`, and the
-- prev_hash of seq 1 = 64 × "0".
--
-- STRICT tables: a value of the wrong type is refused instead of silently stored, so a bug (or a
-- hand edit) cannot put, say, a number where a hash belongs.

CREATE TABLE events (
    -- Global position in the chain: 1, 2, 3 … without gaps. Assigned by the writer (last + 1,
    -- inside a BEGIN IMMEDIATE transaction), never by SQLite's rowid allocation, so a gap is
    -- always evidence of a deleted row.
    seq       INTEGER PRIMARY KEY,
    call_id   TEXT    NOT NULL,
    -- CallEvent::seq: 1, 2, 3 … within one call.
    call_seq  INTEGER NOT NULL,
    -- RFC 3339 UTC with nanoseconds and 'Z' (fixed width, so text order is time order).
    at        TEXT    NOT NULL,
    -- CallEventKind::name()
    kind      TEXT    NOT NULL,
    -- The CallEvent as JSON: these exact bytes are hashed. call_id, call_seq, at and kind repeat
    -- fields of the payload for indexing; verify checks that they agree with it.
    payload   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;

CREATE INDEX events_by_call ON events (call_id, call_seq);

-- Nothing in sosdesk ever changes or removes an audit row. These triggers turn a mistaken UPDATE
-- or DELETE (an admin in the sqlite3 shell, a future bug) into an error. They are not the
-- protection against a deliberate attacker, who can drop them: the hash chain is.
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

-- The newest (seq, hash) of the chain, written in the same transaction as the rows. A hash chain
-- alone cannot show that its newest rows were cut off; comparing the last row with this head
-- can, and the writer continues from the head, so rows removed at the tail leave a visible gap.
CREATE TABLE chain_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
) STRICT;

-- One row per call, rewritten in the same transaction as each of its events. Derived data (not
-- part of the chain): it can always be rebuilt from `events`.
CREATE TABLE calls (
    call_id         TEXT    PRIMARY KEY,
    -- Global seq of the call's first and latest event (links the summary to the chain).
    first_seq       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    event_count     INTEGER NOT NULL,
    first_at        TEXT    NOT NULL,
    last_at         TEXT    NOT NULL,
    caller_number   TEXT    NOT NULL,
    caller_name     TEXT,
    dialed          TEXT    NOT NULL,
    normalized      TEXT    NOT NULL,
    test_call       INTEGER NOT NULL,
    policy          TEXT    NOT NULL,
    site            TEXT,
    -- LocationSnapshot::describe() and LocationSource::as_str() of the latest event.
    location        TEXT    NOT NULL,
    location_source TEXT    NOT NULL,
    -- Name of the last route the call was on (or tried).
    route           TEXT,
    -- detected / routing / ringing / answered / ended / failed / rejected / callback
    outcome         TEXT    NOT NULL,
    -- Human detail of the event that set the outcome ("503 all routes failed", "by caller: BYE").
    outcome_detail  TEXT    NOT NULL,
    -- Set by the first Answered: an ended call with answered_at was answered, one without was not.
    answered_at     TEXT,
    acknowledged_by TEXT,
    acknowledged_at TEXT,
    -- When the call was over: Ended, Failed or Rejected.
    ended_at        TEXT
) STRICT;

CREATE INDEX calls_newest_first ON calls (first_at DESC, first_seq DESC);
