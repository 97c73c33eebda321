-- Where a callback opens a new connection to the caller whose call came over TCP or TLS: the
-- connection it came over belongs to the node that accepted it and closes in time (a PBX does
-- not keep it open for the callback window), and its far end is an ephemeral port that takes no
-- new connections. Taken from the call's Contact (RFC 3261 §12.2.1.1) when that is an IP
-- address; NULL for UDP (the source address is the caller's) or when the Contact names a host.
ALTER TABLE elin_callbacks ADD COLUMN reconnect_transport TEXT; -- UDP | TCP | TLS
ALTER TABLE elin_callbacks ADD COLUMN reconnect_addr TEXT;      -- IP:port (IPv6 in brackets)
