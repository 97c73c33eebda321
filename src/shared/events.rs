//! Every node's events for every node's subscribers (the API event stream, hence remote desks;
//! the alert channels' escalation stop): PostgreSQL `LISTEN/NOTIFY` over the one audit log.
//!
//! Each append to the log notifies [`EVENTS_CHANNEL`] in its own transaction (delivered at the
//! commit). A node's follower wakes on it and reads the rows other nodes wrote after the last it
//! forwarded — the log is the message, the notification only a wake-up — so nothing is missed
//! when a notification is (PostgreSQL drops them while a listener is reconnecting): the next
//! read after the reconnection picks up every row since. Rows are read in `seq` order, which is
//! the order of their commits (appends are serialised by the chain lock).
//!
//! What is forwarded is what a node's own subscribers get of its own events, less each node's
//! view of its own routes (`route-up`/`route-down`: a desk shows the routes of the node it is
//! connected to) and the audit-only records of refused requests.
//!
//! SQLite (one node): nothing to follow.

use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::audit::{AuditStore, EVENTS_CHANNEL};
use crate::db::Backend;
use crate::events::{CallEvent, CallEventKind};

/// After a failure (the server down, the listener not connecting), the next attempt.
const RETRY: Duration = Duration::from_secs(1);

/// Rows read per query while catching up.
const PAGE: i64 = 500;

/// Whether a subscriber of another node gets `kind` (see the module's comment).
fn forwarded(kind: &CallEventKind) -> bool {
    !matches!(kind, CallEventKind::Refused { .. } | CallEventKind::RouteUp { .. } | CallEventKind::RouteDown { .. })
}

/// Follows the other nodes' events into `others` until `stop`. Returns at once for SQLite.
pub async fn follow(store: AuditStore, others: broadcast::Sender<CallEvent>, mut stop: watch::Receiver<bool>) {
    if store.database().backend != Backend::Postgres {
        return;
    }
    // From now on: what other nodes did before this node started is in the history.
    let mut last = loop {
        match store.last_seq().await {
            Ok(s) => break s,
            Err(e) => tracing::error!(error = %e, "cannot follow the other nodes' events yet"),
        }
        if pause(&mut stop).await {
            return;
        }
    };
    loop {
        let mut listener = match store.database().pg_listener().await {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot listen for the other nodes' events");
                if pause(&mut stop).await {
                    return;
                }
                continue;
            }
            None => return,
        };
        if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
            tracing::error!(error = %e, "cannot listen for the other nodes' events");
            if pause(&mut stop).await {
                return;
            }
            continue;
        }
        loop {
            // First what was written while not listening, then after every wake-up.
            last = forward(&store, last, &others).await;
            tokio::select! {
                _ = stop.changed() => return,
                woken = listener.try_recv() => match woken {
                    Ok(Some(_)) => {}
                    // The connection was lost: the next try_recv reconnects; read what may
                    // have been missed meanwhile.
                    Ok(None) => tracing::warn!("the listener for the other nodes' events reconnects"),
                    Err(e) => {
                        tracing::error!(error = %e, "lost the listener for the other nodes' events");
                        if pause(&mut stop).await {
                            return;
                        }
                        break;
                    }
                },
            }
        }
    }
}

/// Sends every other node's event after `last` to `others`; returns the new last seq (the
/// same on a failure, logged: the next wake-up reads them again).
async fn forward(store: &AuditStore, mut last: i64, others: &broadcast::Sender<CallEvent>) -> i64 {
    loop {
        match store.others_after(last, PAGE).await {
            Ok(rows) => {
                let n = rows.len() as i64;
                for (seq, ev) in rows {
                    last = seq;
                    if forwarded(&ev.kind) {
                        let _ = others.send(ev);
                    }
                }
                if n < PAGE {
                    return last;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the other nodes' events");
                return last;
            }
        }
    }
}

/// Waits [`RETRY`]; true when told to stop meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.changed() => true,
        _ = tokio::time::sleep(RETRY) => false,
    }
}
