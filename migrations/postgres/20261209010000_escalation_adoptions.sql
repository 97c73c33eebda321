-- Escalations adopted from a node that is gone: the same table as
-- ../sqlite/20261209000000_escalation_adoptions.sql (read it for what each column means).
CREATE TABLE escalation_adoptions (
    call_id    TEXT COLLATE "C" PRIMARY KEY,
    node       TEXT NOT NULL,
    adopted_ms BIGINT NOT NULL
);
