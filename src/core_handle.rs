//! What other tasks need of a running core, and the one channel into its engine task: the HTTP
//! API and the desk hold a [`CoreHandle`] (cheap to clone) to follow events and add
//! acknowledgements; the server's sockets hand what they receive to the engine task as
//! [`NetInput`]s. Its own module so that the API depends on it and not on the server that
//! starts the API.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use crate::audit::AuditStore;
use crate::events::{CallEvent, CallEventKind};
use crate::routing::LocalEndpoint;
use crate::sip::transaction::Peer;

/// Why an event from a desk (an acknowledgement) could not be added to a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnnotateError {
    #[error("no call {0} in the audit log")]
    UnknownCall(String),
    #[error("the audit store failed: {0}")]
    Store(String),
    #[error("the core has stopped")]
    Stopped,
}

pub(crate) type AnnotateReply = tokio::sync::oneshot::Sender<Result<CallEvent, AnnotateError>>;

/// What the engine task hears besides received SIP (which comes through `crate::intake`).
pub(crate) enum NetInput {
    Opened(SocketAddr, mpsc::UnboundedSender<Bytes>),
    Closed(SocketAddr),
    SendFailed(Peer),
    /// Is the engine turning? Answered by the engine task when it reaches this input, behind
    /// whatever was queued before it (see `crate::watchdog`).
    Probe(tokio::sync::oneshot::Sender<crate::routing::engine::EngineLoad>),
    /// An event from a desk for a call (see [`CoreHandle::annotate`]).
    Annotate {
        call_id: String,
        kind: CallEventKind,
        reply: AnnotateReply,
    },
}

/// What other tasks (the HTTP API) need of a running core: cheap to clone.
#[derive(Clone)]
pub struct CoreHandle {
    pub local: LocalEndpoint,
    pub store: AuditStore,
    pub(crate) events: broadcast::Sender<CallEvent>,
    pub(crate) net_tx: mpsc::UnboundedSender<NetInput>,
    /// What the watchdog last found (`crate::watchdog`).
    pub health: SharedEngineHealth,
}

/// Whether the engine task is turning, as the watchdog last probed it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineHealth {
    /// The last probe the engine answered, and how long it took.
    pub answered_at: Option<chrono::DateTime<chrono::Utc>>,
    pub answer_ms: f64,
    /// The engine has not answered a probe for longer than the watchdog allows.
    pub stalled: bool,
    /// What the engine held at its last answer.
    pub load: crate::routing::engine::EngineLoad,
    /// Tasks alive in the core's runtime at the last answer.
    pub tasks: usize,
}

pub type SharedEngineHealth = std::sync::Arc<std::sync::Mutex<EngineHealth>>;

impl CoreHandle {
    pub fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.events.subscribe()
    }

    /// Send an event that is already in the audit log's queue to every subscriber.
    pub fn publish(&self, ev: CallEvent) {
        let _ = self.events.send(ev);
    }

    /// What the engine holds, answered by the engine task itself (so the answer also says it
    /// is turning). `None`: no answer within `within`, or the core has stopped.
    pub async fn probe(&self, within: std::time::Duration) -> Option<crate::routing::engine::EngineLoad> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.net_tx.send(NetInput::Probe(reply)).ok()?;
        tokio::time::timeout(within, answer).await.ok()?.ok()
    }

    /// See [`Core::annotate`](crate::server::Core::annotate).
    pub async fn annotate(&self, call_id: &str, kind: CallEventKind) -> Result<CallEvent, AnnotateError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.net_tx
            .send(NetInput::Annotate { call_id: call_id.to_string(), kind, reply })
            .map_err(|_| AnnotateError::Stopped)?;
        answer.await.map_err(|_| AnnotateError::Stopped)?
    }

    /// See [`Core::acknowledge_at`](crate::server::Core::acknowledge_at).
    pub async fn acknowledge_at(&self, call_id: &str, officer: &str, desk: &str) -> Result<CallEvent, AnnotateError> {
        self.annotate(call_id, CallEventKind::Acknowledged { by: officer.to_string(), desk: desk.to_string() }).await
    }
}
