//! What other tasks need of a running core, and the one channel into its engine task: the HTTP
//! API and the desk hold a [`CoreHandle`] (cheap to clone) to follow events and add
//! acknowledgements; the server's sockets hand what they receive to the engine task as
//! [`NetInput`]s. Its own module so that the API depends on it and not on the server that
//! starts the API.

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};

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

/// A TCP or TLS connection is open: what goes to this peer is written there. `id` tells this
/// connection from a later one to the same peer. It has a channel of its own, which the engine
/// task serves before anything else (`crate::transport::StreamIo::opened_tx`).
pub(crate) struct Opened {
    pub peer: Peer,
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub id: u64,
}

/// What the engine task hears besides received SIP (which comes through `crate::intake`) and
/// connections opened ([`Opened`]).
pub(crate) enum NetInput {
    /// The connection `id` to `peer` closed. `refused`: sosdesk opened it and the peer closed it
    /// without a word (a TLS peer refusing our certificate after the handshake): what waits
    /// there fails as if it could not be sent (`SendFailed`). `accepted`: the peer had opened it
    /// (a PBX, a phone), so its address is no place to reconnect to.
    Closed {
        peer: Peer,
        id: u64,
        refused: bool,
        accepted: bool,
    },
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
    /// A fault made on purpose in the engine task (see [`CoreHandle::inject_fault`]).
    Fault(Fault),
    /// A route name's fresh answer (RFC 3263, `crate::dns`), or why there is none.
    Resolved {
        target: crate::sip::rfc3263::SipTarget,
        answer: Result<Vec<Peer>, String>,
    },
    /// A network element first seen unlocated: announce it (`Engine::announce_unlocated`).
    AnnounceUnlocated(Box<CallEvent>),
    /// A reloaded config for new calls (see `Core::reload`).
    Reconfigure {
        cfg: std::sync::Arc<crate::config::Config>,
        reply: tokio::sync::oneshot::Sender<crate::routing::engine::Reconfigured>,
    },
    /// The store's answer to the engine's `Output::LookupElin` (`crate::shared::callbacks`).
    ElinFound {
        elin: String,
        found: Option<crate::routing::SharedElin>,
    },
    /// The store's answer to the engine's `Output::ClaimElin`: the ELIN claimed for the call, or
    /// `None` (the store failed or was too slow).
    ElinClaimed {
        call_ref: String,
        elin: Option<String>,
    },
    /// The answer to the engine's `Output::EnterUserLocation` (a PUBLISH waits for it).
    UserLocationKept {
        key: String,
        answer: crate::routing::UserLocationAnswer,
    },
    /// Every registration the other nodes hold (`crate::shared::registrations`).
    SharedRegistrations(Vec<crate::routing::SharedRegistration>),
    /// Each route's health (see [`CoreHandle::routes`]).
    Routes(tokio::sync::oneshot::Sender<Vec<crate::routing::health::RouteHealthReport>>),
}

/// A fault the engine task makes on purpose when it reaches it, so that tests prove what the
/// service manager, the API and the desk do when the engine panics or stops turning. Only Rust
/// code in the same process can ask for one (nothing on the network or in the config does).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The engine task panics (as a bug would).
    Panic,
    /// The engine task blocks its thread for good (as a loop that never ends would).
    Hang,
}

impl Fault {
    pub(crate) fn strike(self) {
        match self {
            Fault::Panic => panic!("a fault injected into the engine task (a test)"),
            Fault::Hang => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
        }
    }
}

/// What every desk is told about the core itself, apart from calls: whether its engine is
/// turning and whether its audit store is writing. Kept by the watchdog (`crate::watchdog`),
/// changed only when one of them changes; pushed to remote desks on the API's event stream
/// (`event: core`, docs/api.md) and followed by the embedded desk.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CoreCondition {
    /// The engine has not answered the watchdog for `watchdog::STALLED_AFTER`: no call is
    /// routed until it is restarted.
    pub engine_stalled: bool,
    /// Events kept in memory and retried because the audit store fails to write (disk full,
    /// database gone); 0 while it writes. Calls still route meanwhile.
    pub store_waiting: u64,
    /// The store's last error while it fails.
    pub store_error: Option<String>,
}

/// What other tasks (the HTTP API) need of a running core: cheap to clone.
#[derive(Clone)]
pub struct CoreHandle {
    pub local: LocalEndpoint,
    pub store: AuditStore,
    /// The location store (the unlocated report).
    pub lis: Option<crate::location::store::LisStore>,
    /// User-entered locations (entered through the API).
    pub user_locations: Option<crate::location::user_entered::UserLocations>,
    /// Switch-port discovery, when `[[switch]]`es are configured (each switch's status).
    pub discovery: Option<crate::location::discovery::Discovery>,
    pub(crate) events: broadcast::Sender<Arc<CallEvent>>,
    /// The other nodes' events, read from the shared store (`crate::shared::events`; never
    /// any with SQLite).
    pub(crate) others: broadcast::Sender<Arc<CallEvent>>,
    pub(crate) net_tx: mpsc::UnboundedSender<NetInput>,
    /// What the watchdog last found (`crate::watchdog`).
    pub health: SharedEngineHealth,
    /// The engine's and the store's condition, as desks are told it.
    pub condition: watch::Receiver<CoreCondition>,
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
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.events.subscribe()
    }

    /// The other nodes' events (several nodes on one PostgreSQL store), as they commit.
    pub fn subscribe_others(&self) -> broadcast::Receiver<Arc<CallEvent>> {
        self.others.subscribe()
    }

    /// Send an event that is already in the audit log's queue to every subscriber.
    pub fn publish(&self, ev: CallEvent) {
        let _ = self.events.send(Arc::new(ev));
    }

    /// What the engine holds, answered by the engine task itself (so the answer also says it
    /// is turning). `None`: no answer within `within`, or the core has stopped.
    pub async fn probe(&self, within: std::time::Duration) -> Option<crate::routing::engine::EngineLoad> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.net_tx.send(NetInput::Probe(reply)).ok()?;
        tokio::time::timeout(within, answer).await.ok()?.ok()
    }

    /// Each route's state, last answer and round-trip time, from the engine (`None`: the core
    /// has stopped or the engine did not answer within 2 s).
    pub async fn routes(&self) -> Option<Vec<crate::routing::health::RouteHealthReport>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.net_tx.send(NetInput::Routes(reply)).ok()?;
        tokio::time::timeout(std::time::Duration::from_secs(2), answer).await.ok()?.ok()
    }

    /// Makes the engine task strike `fault` when it reaches it (tests only; see [`Fault`]).
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        let _ = self.net_tx.send(NetInput::Fault(fault));
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
