-- Acknowledgement links used (issue 14): a link (docs/channels.md) acknowledges once, whichever
-- node it is posted to. A node inserts the link's row before it acknowledges; the primary key
-- lets only one node's insert through, the other answers "already used".
CREATE TABLE ack_links_used (
    token_sha256 TEXT NOT NULL PRIMARY KEY,  -- hex SHA-256 of the token (the token is a credential)
    call_id      TEXT NOT NULL,
    expires      INTEGER NOT NULL,           -- the link's own expiry, Unix seconds: the row can go then
    node         TEXT                        -- the node that took it ([store] node)
) STRICT, WITHOUT ROWID;
