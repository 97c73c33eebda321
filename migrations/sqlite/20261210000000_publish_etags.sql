-- The entity-tag of a user-entered location's SIP publication (RFC 3903 §11.3; docs/location.md):
-- kept with the entry so that a refresh, a modify or a removal (SIP-If-Match) reaches the same
-- publication through any node that shares the store. NULL: no live publication (entered over the
-- API or the CLI, or never published); a SIP-If-Match then gets 412 and the phone publishes again.
ALTER TABLE user_locations ADD COLUMN publish_etag TEXT;
