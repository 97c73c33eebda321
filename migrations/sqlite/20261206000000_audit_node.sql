-- Which core node wrote each audit row (issue 14: several nodes on one PostgreSQL share one
-- chain; the SQLite store has the column too, so the two schemas and their queries stay alike).
-- NULL for rows written before nodes were named. Not part of the hashed payload: the chain
-- formula (src/audit/chain.rs) is unchanged, so existing logs and external verifiers still check.
ALTER TABLE events ADD COLUMN node TEXT;
