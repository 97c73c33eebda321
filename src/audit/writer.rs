//! The background audit writer: the routing core records events without waiting for the disk.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{AuditError, AuditStore};
use crate::events::CallEvent;

/// Most events committed in one transaction. A backlog (after the disk was full for a while) is
/// written in several bounded transactions rather than one huge one.
const MAX_BATCH: usize = 4_096;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

// Nearly every message is an Event; boxing it to shrink the rare Flush/Shutdown would cost an
// allocation per audited event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event {
        ev: CallEvent,
        done: Option<oneshot::Sender<i64>>,
    },
    Flush(oneshot::Sender<()>),
    /// A journal segment whose events were all recorded before this: deleted once committed.
    Release(std::path::PathBuf),
    Shutdown(oneshot::Sender<()>),
}

/// What the writer has done so far; for a status line in the desk app and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterHealth {
    /// Events committed since the writer started.
    pub committed: u64,
    /// Write attempts that failed (each one retried).
    pub failed_attempts: u64,
    /// Events of the batch currently failing and being retried (0 when healthy).
    pub retrying: usize,
    /// The last write error, cleared by the next successful commit.
    pub last_error: Option<String>,
}

/// Sends events to the writer task. Cheap to clone; every clone feeds the same task.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    tx: mpsc::UnboundedSender<Msg>,
    health: watch::Receiver<WriterHealth>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Event { ev, .. } => write!(f, "Event({}/{})", ev.call_id, ev.seq),
            Msg::Flush(_) => f.write_str("Flush"),
            Msg::Release(p) => write!(f, "Release({})", p.display()),
            Msg::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

/// Starts the writer task on the current Tokio runtime (panics outside one, like `tokio::spawn`).
///
/// The task takes whatever is queued (up to 4,096 events) and commits it as one
/// transaction, so the cost of a commit's fsync is shared by every event that arrived while the
/// previous one ran. The queue is unbounded on purpose: when the store cannot be written, events
/// wait in memory and are retried with backoff; an audit event is never dropped and the routing
/// core is never blocked.
pub fn spawn_writer(store: AuditStore) -> AuditWriter {
    let (tx, rx) = mpsc::unbounded_channel();
    let (health_tx, health) = watch::channel(WriterHealth::default());
    tokio::spawn(run(store, rx, health_tx));
    AuditWriter { tx, health }
}

impl AuditWriter {
    /// Queues `ev` for writing and returns at once.
    ///
    /// After [`shutdown`](Self::shutdown) nothing can be stored any more: the event is then
    /// written to the error log in full, the only place left for it.
    pub fn record(&self, ev: CallEvent) {
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(Msg::Event { ev, done: None }) {
            log_unstored(msg);
        }
    }

    /// Queues `ev` and returns its global seq once it is committed (fsynced).
    ///
    /// While the store fails this waits, as long as the writer keeps retrying; wrap it in a timeout
    /// where a caller must not wait. Errors only when the writer has stopped.
    pub async fn record_durable(&self, ev: CallEvent) -> Result<i64, AuditError> {
        let (done, committed) = oneshot::channel();
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(Msg::Event { ev, done: Some(done) }) {
            log_unstored(msg);
            return Err(AuditError::WriterClosed);
        }
        committed.await.map_err(|_| AuditError::WriterClosed)
    }

    /// Queues `ev` now (keeping its place in the order of events) and returns a receiver that
    /// gets its global seq once it is committed. The receiver errors when the writer stopped.
    pub fn record_tracked(&self, ev: CallEvent) -> oneshot::Receiver<i64> {
        let (done, committed) = oneshot::channel();
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(Msg::Event { ev, done: Some(done) }) {
            log_unstored(msg);
        }
        committed
    }

    /// Returns once every event recorded (through any clone) before this call is committed.
    /// Returns at once when the writer has stopped.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// Delete the journal segment `path` once everything recorded before this call is committed
    /// (its events are then in the audit log).
    pub fn release(&self, path: std::path::PathBuf) {
        let _ = self.tx.send(Msg::Release(path));
    }

    /// Commits everything queued, then stops the task. Clones can no longer record afterwards.
    pub async fn shutdown(self) {
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// The writer's state now.
    pub fn health(&self) -> WriterHealth {
        self.health.borrow().clone()
    }

    /// Follow the writer's state as it changes (e.g. to raise an "audit failing" banner).
    pub fn watch_health(&self) -> watch::Receiver<WriterHealth> {
        self.health.clone()
    }
}

fn log_unstored(msg: Msg) {
    if let Msg::Event { ev, .. } = msg {
        let json = serde_json::to_string(&ev).unwrap_or_else(|e| format!("{ev:?} (not encodable: {e})"));
        tracing::error!(call_id = %ev.call_id, event = %json, "audit writer has stopped: event NOT stored in the audit log");
    }
}

async fn run(store: AuditStore, mut rx: mpsc::UnboundedReceiver<Msg>, health: watch::Sender<WriterHealth>) {
    let mut stop_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    // `recv` returns None once every sender is gone, or after `close` once the queue is drained.
    while let Some(first) = rx.recv().await {
        let mut events = Vec::new();
        let mut done: Vec<(usize, oneshot::Sender<i64>)> = Vec::new();
        let mut flushes = Vec::new();
        let mut released = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event { ev, done: d } => {
                    if let Some(d) = d {
                        done.push((events.len(), d));
                    }
                    events.push(ev);
                }
                Msg::Flush(f) => flushes.push(f),
                Msg::Release(p) => released.push(p),
                Msg::Shutdown(s) => {
                    // No new messages from now on; the ones already queued are still received
                    // and written before the loop ends.
                    rx.close();
                    stop_waiters.push(s);
                }
            }
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }

        let seqs = write_until_committed(&store, &events, &health).await;
        for (i, d) in done {
            // The caller may have given up waiting; the event is stored all the same.
            let _ = d.send(seqs[i]);
        }
        // Flush markers sit in the queue after everything recorded before them, and batches are
        // committed in queue order: everything before the marker is now committed.
        for f in flushes {
            let _ = f.send(());
        }
        // Likewise every event of a released journal segment is committed now.
        for p in released {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(file = %p.display(), error = %e, "cannot delete a journal segment already in the audit log");
            }
        }
    }
    for s in stop_waiters {
        let _ = s.send(());
    }
}

/// Appends `events`, retrying with exponential backoff until it works. Never gives up: the events
/// exist nowhere else.
async fn write_until_committed(
    store: &AuditStore,
    events: &[CallEvent],
    health: &watch::Sender<WriterHealth>,
) -> Vec<i64> {
    if events.is_empty() {
        return Vec::new();
    }
    let mut backoff = FIRST_BACKOFF;
    loop {
        match store.append(events).await {
            Ok(seqs) => {
                health.send_modify(|h| {
                    h.committed += events.len() as u64;
                    h.retrying = 0;
                    h.last_error = None;
                });
                return seqs;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    events = events.len(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "audit write failed; events kept in memory and retried"
                );
                health.send_modify(|h| {
                    h.failed_attempts += 1;
                    h.retrying = events.len();
                    h.last_error = Some(e.to_string());
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
