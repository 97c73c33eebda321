-- The same column as ../sqlite/20261210000000_publish_etags.sql (read it for what it means).
ALTER TABLE user_locations ADD COLUMN publish_etag TEXT;
