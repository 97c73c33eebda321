-- A counter the running core polls to learn that the LIS data changed (an import from another
-- process, a validation run), so it rebuilds its in-memory wiremap only then. Bumped inside the
-- same transaction as the change. The audit writer's constant commits do not touch it, which is
-- why SQLite's own PRAGMA data_version cannot serve here.
CREATE TABLE lis_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
) STRICT;
INSERT INTO lis_generation (id, generation) VALUES (1, 0);
