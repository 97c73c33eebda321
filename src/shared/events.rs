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

use std::sync::Arc;
use tokio::sync::{broadcast, watch};

use super::Wakeups;

use crate::audit::{AuditStore, EVENTS_CHANNEL};
use crate::db::Backend;
use crate::events::{CallEvent, CallEventKind};

/// Rows read per query while catching up.
const PAGE: i64 = 500;

/// Whether a subscriber of another node gets `kind` (see the module's comment).
fn forwarded(kind: &CallEventKind) -> bool {
    !matches!(kind, CallEventKind::Refused { .. } | CallEventKind::RouteUp { .. } | CallEventKind::RouteDown { .. })
}

/// Follows the other nodes' events into `others` until `stop`. Returns at once for SQLite.
pub async fn follow(store: AuditStore, others: broadcast::Sender<Arc<CallEvent>>, stop: watch::Receiver<bool>) {
    if store.database().backend != Backend::Postgres {
        return;
    }
    let mut wakeups = Wakeups::new(store.database().clone(), EVENTS_CHANNEL, stop.clone());
    // From now on: what other nodes did before this node started is in the history.
    let mut last = loop {
        match store.last_seq().await {
            Ok(s) => break s,
            Err(e) => tracing::error!(error = %e, "cannot follow the other nodes' events yet"),
        }
        if wakeups.pause().await {
            return;
        }
    };
    while wakeups.next().await {
        last = forward(&store, last, &others).await;
    }
}

/// Sends every other node's event after `last` to `others`; returns the new last seq (the
/// same on a failure, logged: the next wake-up reads them again).
async fn forward(store: &AuditStore, mut last: i64, others: &broadcast::Sender<Arc<CallEvent>>) -> i64 {
    loop {
        match store.others_after(last, PAGE).await {
            Ok(rows) => {
                let n = rows.len() as i64;
                for (seq, ev) in rows {
                    last = seq;
                    if forwarded(&ev.kind) {
                        let _ = others.send(Arc::new(ev));
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
