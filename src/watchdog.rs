//! The engine is turning: proved, not assumed (issue 19: never a zombie).
//!
//! A process can be alive while its engine task routes nothing (a task stuck in a loop, a lock
//! never released). The watchdog probes the engine through its own input queue every
//! [`PROBE_EVERY`] (or half of systemd's `WatchdogSec`, if shorter); only the engine task can
//! answer. Each answer is told to systemd (`sd_notify` `WATCHDOG=1`, when the service runs with
//! `Type=notify` and `WatchdogSec=`), which kills and restarts a core that stops answering; the
//! API's `/api/v1/health` says the same to a load balancer or a monitoring system.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::audit::WriterHealth;
use crate::core_handle::{CoreCondition, CoreHandle};

/// How often the engine is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// An engine that has not answered for this long is stalled.
pub const STALLED_AFTER: Duration = Duration::from_secs(3);

/// Probes the engine until stopped, and keeps `condition` (what desks are told: the engine
/// turning, the audit store writing) up to date; see the module documentation.
pub async fn run(
    handle: CoreHandle,
    mut store: watch::Receiver<WriterHealth>,
    condition: watch::Sender<CoreCondition>,
    mut stop: watch::Receiver<bool>,
) {
    let every = systemd_watchdog().map(|w| (w / 2).min(PROBE_EVERY)).unwrap_or(PROBE_EVERY);
    let mut last_answer = Instant::now();
    let mut store_watched = true;
    loop {
        let sent = Instant::now();
        let answer = tokio::select! {
            _ = stop.changed() => return,
            a = handle.probe(STALLED_AFTER) => a,
        };
        let now = Instant::now();
        if answer.is_some() {
            last_answer = now;
            sd_notify("WATCHDOG=1");
        }
        let stalled = now.duration_since(last_answer) >= STALLED_AFTER;
        if let Ok(mut h) = handle.health.lock() {
            if answer.is_some() {
                h.answered_at = Some(chrono::Utc::now());
                h.answer_ms = now.duration_since(sent).as_secs_f64() * 1000.0;
                h.load = answer.unwrap_or_default();
                h.tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
            }
            if stalled && !h.stalled {
                tracing::error!(
                    seconds = now.duration_since(last_answer).as_secs(),
                    "the engine has stopped answering: no call can be routed (systemd's watchdog restarts the core)"
                );
            }
            h.stalled = stalled;
        }
        publish(&condition, stalled, &store.borrow());
        // Until the next probe, a change of the store's health is passed on at once.
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until((sent + every).into()) => break,
                changed = store.changed(), if store_watched => match changed {
                    Ok(()) => publish(&condition, stalled, &store.borrow_and_update()),
                    // The writer has ended (the core is stopping): nothing more to follow.
                    Err(_) => store_watched = false,
                },
            }
        }
    }
}

/// Sets what desks are told, when it changed.
fn publish(condition: &watch::Sender<CoreCondition>, engine_stalled: bool, store: &WriterHealth) {
    let now = CoreCondition {
        engine_stalled,
        store_waiting: if store.last_error.is_some() { store.retrying.max(1) as u64 } else { 0 },
        store_error: store.last_error.clone(),
    };
    condition.send_if_modified(|c| {
        if *c == now {
            return false;
        }
        *c = now;
        true
    });
}

/// systemd's watchdog interval (`WATCHDOG_USEC`, set with `WatchdogSec=`), when it is meant for
/// this process (`WATCHDOG_PID`).
fn systemd_watchdog() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Tell the service manager `state` (`READY=1`, `WATCHDOG=1`, `STOPPING=1`; sd_notify(3)) when
/// it asked to be told (`NOTIFY_SOCKET`); nothing otherwise.
pub fn sd_notify(state: &str) {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        let socket = socket.to_string_lossy();
        if let Err(e) = notify_socket(&socket, state) {
            tracing::warn!(%socket, error = %e, state, "cannot notify the service manager");
        }
    }
}

/// Send `state` to the datagram socket `socket` (a path, or `@name` in the abstract namespace).
fn notify_socket(socket: &str, state: &str) -> std::io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    #[cfg(target_os = "linux")]
    let addr = match socket.strip_prefix('@') {
        Some(name) => <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    #[cfg(not(target_os = "linux"))]
    let addr = SocketAddr::from_pathname(socket)?;
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_manager_is_told_on_its_socket_by_path_or_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_socket(path.to_str().unwrap(), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("sosdesk-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abs = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        notify_socket(&format!("@{name}"), "READY=1").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(notify_socket(dir.path().join("none").to_str().unwrap(), "READY=1").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_engine_that_stops_answering_is_found_stalled_and_desks_are_told_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::audit::AuditStore::open(&dir.path().join("a.db")).await.unwrap();
        // An engine task that never reads its inputs: probes go unanswered.
        let (net_tx, _never_read) = tokio::sync::mpsc::unbounded_channel();
        let (condition_tx, mut condition) = watch::channel(CoreCondition::default());
        let handle = CoreHandle {
            local: crate::routing::LocalEndpoint { host: "127.0.0.1".into(), udp: None, tcp: None, tls: None },
            store,
            lis: None,
            user_locations: None,
            discovery: None,
            events: tokio::sync::broadcast::channel(1).0,
            others: tokio::sync::broadcast::channel(1).0,
            net_tx,
            health: Default::default(),
            condition: condition.clone(),
        };
        let (writer_tx, writer) = watch::channel(WriterHealth::default());
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(run(handle.clone(), writer, condition_tx, stop));
        // Waited for on the watch itself, bounded: found within STALLED_AFTER and one probe.
        let stalled = tokio::time::timeout(STALLED_AFTER * 3, condition.wait_for(|c| c.engine_stalled)).await.is_ok();
        assert!(stalled, "never found stalled");
        assert!(handle.health.lock().unwrap().stalled);
        assert!(handle.health.lock().unwrap().answered_at.is_none());

        // The audit store fails, then writes again: both passed on, without waiting for a probe.
        writer_tx.send_modify(|h| {
            h.retrying = 7;
            h.last_error = Some("database or disk is full".into());
        });
        let failing = condition.wait_for(|c| c.store_waiting > 0).await.unwrap().clone();
        assert_eq!(failing.store_waiting, 7);
        assert_eq!(failing.store_error.as_deref(), Some("database or disk is full"));
        assert!(failing.engine_stalled);
        writer_tx.send_modify(|h| {
            h.retrying = 0;
            h.last_error = None;
        });
        let writing = condition.wait_for(|c| c.store_waiting == 0).await.unwrap().clone();
        assert_eq!(writing.store_error, None);
    }
}
