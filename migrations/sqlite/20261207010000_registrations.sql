-- Desk registrations other nodes can reach (issue 14): each node writes the UDP contacts its
-- registrar holds, per account, after every REGISTER; the other nodes read them to send their
-- alerts to those desks too. (A TCP or TLS contact is reached only over its connection to the
-- node it registered with, so it is never written here.)
CREATE TABLE registrations (
    node       TEXT NOT NULL,     -- the node that holds the binding ([store] node; '' unnamed)
    username   TEXT NOT NULL,     -- the [[desk]] account
    uri        TEXT NOT NULL,     -- the Contact URI (the MESSAGE's Request-URI)
    addr       TEXT NOT NULL,     -- IP:port it is reached at over UDP
    expires_ms INTEGER NOT NULL,  -- Unix time, milliseconds
    PRIMARY KEY (node, username, uri)
) STRICT, WITHOUT ROWID;
