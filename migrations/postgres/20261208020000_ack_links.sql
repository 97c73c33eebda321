-- Acknowledgement links used: the same table as ../sqlite/20261208020000_ack_links.sql (read it
-- for what each column means).
CREATE TABLE ack_links_used (
    token_sha256 TEXT COLLATE "C" PRIMARY KEY,
    call_id      TEXT NOT NULL,
    expires      BIGINT NOT NULL,
    node         TEXT
);
