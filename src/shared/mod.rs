//! What several core nodes on one store share besides the audit log (issue 14, item 3): the
//! ELIN callback mappings ([`callbacks`]), every node's events ([`events`]) and the desks'
//! registrations ([`registrations`]); one live node per name ([`node_name`]); the
//! acknowledgement links used ([`ack_links`]); a desk's event for a call another node carries
//! ([`annotations`]). Each is I/O for the shell (`crate::server`): the engine
//! only asks and is answered (sans-I/O).

pub mod ack_links;
pub mod annotations;
pub mod callbacks;
pub mod events;
pub mod node_name;
pub mod registrations;

use std::time::Duration;

use tokio::sync::watch;

use crate::db::Db;

/// After a failure (the server down, the listener not connecting), the next attempt.
const RETRY: Duration = Duration::from_secs(1);

/// The moments to read what other nodes wrote: PostgreSQL `LISTEN` on one channel, through a
/// plain `PgListener` (sqlx's `Any` driver has none). A notification is only a wake-up — the
/// reader reads the store itself — so a notification lost while the listener reconnects costs
/// nothing: every (re)connection is a wake-up too.
pub struct Wakeups {
    db: Db,
    channel: &'static str,
    listener: Option<sqlx::postgres::PgListener>,
    stop: watch::Receiver<bool>,
}

impl Wakeups {
    pub fn new(db: Db, channel: &'static str, stop: watch::Receiver<bool>) -> Wakeups {
        Wakeups { db, channel, listener: None, stop }
    }

    /// Waits for the next moment to read; false once the core stops (or the store is SQLite,
    /// which one node only uses: nothing to wait for).
    pub async fn next(&mut self) -> bool {
        loop {
            if *self.stop.borrow() {
                return false;
            }
            let Some(listener) = self.listener.as_mut() else {
                let connected = match self.db.pg_listener().await {
                    None => return false,
                    Some(Ok(mut l)) => l.listen(self.channel).await.map(|()| l).map_err(|e| e.to_string()),
                    Some(Err(e)) => Err(e),
                };
                match connected {
                    Ok(l) => {
                        self.listener = Some(l);
                        return true;
                    }
                    Err(e) => {
                        tracing::error!(channel = self.channel, error = %e, "cannot listen to the other nodes");
                        if self.pause().await {
                            return false;
                        }
                        continue;
                    }
                }
            };
            tokio::select! {
                _ = self.stop.changed() => return false,
                woken = listener.try_recv() => match woken {
                    Ok(Some(_)) => return true,
                    // The connection was lost; the next try_recv reconnects. Read what may
                    // have been missed meanwhile.
                    Ok(None) => {
                        tracing::warn!(channel = self.channel, "the listener to the other nodes reconnects");
                        return true;
                    }
                    Err(e) => {
                        tracing::error!(channel = self.channel, error = %e, "lost the listener to the other nodes");
                        self.listener = None;
                        if self.pause().await {
                            return false;
                        }
                    }
                },
            }
        }
    }

    /// Waits [`RETRY`]; true when told to stop meanwhile.
    pub(crate) async fn pause(&mut self) -> bool {
        tokio::select! {
            _ = self.stop.changed() => true,
            _ = tokio::time::sleep(RETRY) => false,
        }
    }
}
