//! A desk's event for a call that another node carries (an acknowledgement, a note) is made by
//! that node (issue 14). A call's events are numbered by the engine that carries it (`seq`, one
//! after the other); a node that does not carry the call can only number after the last event
//! it finds in the store, and the carrying node's next event, not yet written, would take the
//! same number (a desk keeps one event per number). So the receiving node hands the event to
//! the carrying node through PostgreSQL `NOTIFY` on [`CHANNEL`], and answers with the event as
//! it comes back through the shared log (`crate::shared::events`).
//!
//! Which node carries a call: the node that wrote its first event; whether it is alive: whether
//! it holds its name's advisory lock (`crate::shared::node_name`). A call of a node that is gone
//! is annotated by the receiving node itself, as on one node (nobody else numbers that call).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::core_handle::{AnnotateError, NetInput};
use crate::db::Db;
use crate::events::{CallEvent, CallEventKind};

/// The PostgreSQL notification channel of handed-over events.
pub const CHANNEL: &str = "sosdesk_annotations";

/// How long the receiving node waits for the carrying node's event before it says "try again".
pub const FORWARD_WITHIN: Duration = Duration::from_secs(5);

/// A handed-over event: for node `node`, to add `kind` to call `call_id`.
#[derive(Debug, Serialize, Deserialize)]
struct Handover {
    node: String,
    call_id: String,
    kind: CallEventKind,
}

/// Hands `kind` for `call_id` to node `carrier` and returns the event it made, as `others`
/// (the other nodes' events read from the log) brings it back.
pub async fn forward(
    db: &Db,
    carrier: &str,
    call_id: &str,
    kind: CallEventKind,
    others: &broadcast::Sender<Arc<CallEvent>>,
) -> Result<CallEvent, AnnotateError> {
    // Subscribed before the hand-over, so that the answer cannot come before we listen.
    let mut back = others.subscribe();
    let handover = Handover { node: carrier.to_string(), call_id: call_id.to_string(), kind: kind.clone() };
    let payload = serde_json::to_string(&handover).map_err(|e| AnnotateError::Store(e.to_string()))?;
    sqlx::query(&db.backend.sql("SELECT pg_notify(?, ?)"))
        .bind(CHANNEL)
        .bind(payload)
        .execute(&db.pool)
        .await
        .map_err(|e| AnnotateError::Store(e.to_string()))?;
    let answer = async {
        loop {
            match back.recv().await {
                Ok(ev) if ev.call_id == call_id && ev.kind == kind => return Some(ev),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    match tokio::time::timeout(FORWARD_WITHIN, answer).await {
        Ok(Some(ev)) => Ok(Arc::unwrap_or_clone(ev)),
        Ok(None) => Err(AnnotateError::Stopped),
        // `Store`, as for a store that fails: the caller is told to try again (the API's 503).
        Err(_) => Err(AnnotateError::Store(format!(
            "the node carrying the call ({carrier}) did not answer within {} s; try again",
            FORWARD_WITHIN.as_secs()
        ))),
    }
}

/// Takes the events other nodes hand to node `node` into this node's engine (`net_tx`), until
/// `stop`. Returns at once for SQLite or an unnamed node.
pub(crate) async fn serve(
    db: Db,
    node: Option<String>,
    net_tx: mpsc::UnboundedSender<NetInput>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(node) = node else { return };
    let mut listener = loop {
        let listening = match db.pg_listener().await {
            None => return,
            Some(Ok(mut l)) => l.listen(CHANNEL).await.map(|()| l).map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e),
        };
        match listening {
            Ok(l) => break l,
            Err(e) => tracing::error!(error = %e, "cannot listen for events other nodes hand over"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    loop {
        // `recv` reconnects by itself; a hand-over sent meanwhile is lost, and its sender
        // answers "try again" after FORWARD_WITHIN.
        let note = tokio::select! {
            _ = stop.changed() => return,
            note = listener.recv() => note,
        };
        let note = match note {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "lost the listener for handed-over events");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(h) = serde_json::from_str::<Handover>(note.payload()) else {
            tracing::warn!("a handed-over event that is not one: ignored");
            continue;
        };
        if h.node != node {
            continue;
        }
        let (reply, answer) = oneshot::channel();
        let call_id = h.call_id.clone();
        if net_tx.send(NetInput::Annotate { call_id: h.call_id, kind: h.kind, reply }).is_err() {
            return;
        }
        tokio::spawn(async move {
            if let Ok(Err(e)) = answer.await {
                tracing::warn!(call = %call_id, error = %e, "an event another node handed over was not added");
            }
        });
    }
}
