-- Where a callback opens a new connection to the caller whose call came over TCP or TLS: the
-- connection it came over belongs to the node that accepted it and closes in time (a PBX does
-- not keep it open for the callback window), and its far end is an ephemeral port that takes no
-- new connections. The call's next hop (Record-Route, else Contact: RFC 3261 §12.2.1.1); one
-- that names a host is reached at the address the call came from, and `reconnect_name` is the
-- name its TLS certificate must carry (RFC 5922 §7.2). NULL for UDP (the source address is the
-- caller's). `reconnect_call_ref` is the call they were written for: a node of the version
-- before these columns rewrites a row without touching them, and a reader must not take an
-- earlier caller's address for the new caller's.
ALTER TABLE elin_callbacks ADD COLUMN reconnect_transport TEXT; -- UDP | TCP | TLS
ALTER TABLE elin_callbacks ADD COLUMN reconnect_addr TEXT;      -- IP:port (IPv6 in brackets)
ALTER TABLE elin_callbacks ADD COLUMN reconnect_name TEXT;      -- a host name, or NULL
ALTER TABLE elin_callbacks ADD COLUMN reconnect_call_ref TEXT;  -- the call_ref they belong to
