-- The records of refused requests (`sosdesk rejections`, GET /api/v1/rejections): a partial
-- index, so finding them never scans the whole log and costs nothing for the other events.
CREATE INDEX events_refused ON events (seq) WHERE kind IN ('refused', 'rejected');
