-- Escalations adopted from a node that is gone (issue 14, src/reach/adoption.rs): one row per
-- call whose escalation a surviving node took over. A node inserts the row before it sends the
-- remaining tiers; the primary key lets one node's insert through. A row whose node is gone in
-- turn is taken over by an update that must find that node's name (one node's goes through).
-- Unused on SQLite (one node), kept so that both schemas stay the same.
CREATE TABLE escalation_adoptions (
    call_id    TEXT NOT NULL PRIMARY KEY,
    node       TEXT NOT NULL,     -- the adopting node ([store] node)
    adopted_ms INTEGER NOT NULL   -- when, Unix ms: rows older than every escalation can go
) STRICT, WITHOUT ROWID;
