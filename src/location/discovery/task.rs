//! The discovery task: every switch polled at start and then every `interval_min`, or all of
//! them at once when asked ([`Discovery::poll_now`]: the CLI, the tests). After each round the
//! table is rebuilt from every switch's last good poll and swapped in whole; a device whose best
//! place changed is a [`Move`], handed to the sink (the server audits it) and logged.
//!
//! A switch that does not answer keeps its last good entries (a device that was found stays
//! found) and its status says since when it fails, logged at warn each time. Nothing here can
//! hold up a call: calls only read the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::mibs::{self, Walks};
use super::snmp::{walk_switch, Credentials, SwitchTarget};
use super::{ChassisNames, DiscoveryTable, Learnt, Move, SharedDiscovery};
use crate::location::{format_mac, Mac};

/// Told of every move.
pub type MoveSink = Arc<dyn Fn(Move) + Send + Sync>;

/// Moves of one round written to the log one by one (all are audited).
const LOGGED_MOVES: usize = 20;

/// Switches polled at the same time, at most (the rest wait their turn).
const CONCURRENT_POLLS: usize = 16;

/// One switch's condition, as `sosdesk lis discover` and the core show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchStatus {
    pub name: String,
    pub address: String,
    /// `v2c` or `v3`.
    pub snmp: &'static str,
    /// `never-polled`, `ok` or `failing`.
    pub state: &'static str,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    /// Why the last poll failed (no answer, authentication…); the entries of the last good poll
    /// are still used.
    pub error: Option<String>,
    /// The switch's names (LLDP chassis ID, bridge MAC, system names) from its last good poll.
    pub chassis: Vec<String>,
    /// MACs and IP addresses learnt by its last good poll.
    pub macs: usize,
    pub ip_addresses: usize,
    /// How long the last good poll took.
    pub poll_ms: Option<u64>,
}

/// What a [`Discovery::poll_now`] round found.
#[derive(Debug, Clone, Serialize)]
pub struct PollReport {
    pub switches: Vec<SwitchStatus>,
    pub moves: Vec<Move>,
}

/// The running discovery, as the core holds it. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    table: SharedDiscovery,
    status: Arc<Mutex<Vec<SwitchStatus>>>,
    commands: mpsc::UnboundedSender<oneshot::Sender<PollReport>>,
}

impl Discovery {
    /// The table calls and HELD are located with.
    pub fn table(&self) -> &SharedDiscovery {
        &self.table
    }

    /// Each switch's status, in config order.
    pub fn statuses(&self) -> Vec<SwitchStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Poll every switch now (after the round under way, if any); `None` once the task has
    /// stopped.
    pub async fn poll_now(&self) -> Option<PollReport> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(tx).ok()?;
        rx.await.ok()
    }
}

/// One switch's walks and how long they took, or why they failed.
type WalkResult = Result<(Walks, Duration), String>;

/// One switch's last good poll.
#[derive(Default)]
struct SwitchEntries {
    entries: Vec<Arc<Learnt>>,
    ips: Vec<(IpAddr, Mac)>,
}

/// Start the task (on the current tokio runtime); it ends when `stop` changes.
pub fn spawn(
    targets: Vec<SwitchTarget>,
    sink: Option<MoveSink>,
    stop: watch::Receiver<bool>,
) -> (Discovery, JoinHandle<()>) {
    let status = targets.iter().map(initial_status).collect();
    let (commands, rx) = mpsc::unbounded_channel();
    let discovery = Discovery { table: SharedDiscovery::default(), status: Arc::new(Mutex::new(status)), commands };
    let task = tokio::spawn(run(targets, discovery.clone(), sink, rx, stop));
    (discovery, task)
}

/// Poll every switch once, without a task (`sosdesk lis discover`): the discovery as it stands
/// after that one round, and the round's report.
pub async fn poll_once(targets: &[SwitchTarget]) -> (Discovery, PollReport) {
    let (commands, _) = mpsc::unbounded_channel();
    let status = targets.iter().map(initial_status).collect();
    let discovery = Discovery { table: SharedDiscovery::default(), status: Arc::new(Mutex::new(status)), commands };
    let mut polls: Vec<SwitchEntries> = targets.iter().map(|_| SwitchEntries::default()).collect();
    let which: Vec<usize> = (0..targets.len()).collect();
    let moves = poll_round(targets, &which, &mut polls, &discovery, None).await;
    let report = PollReport { switches: discovery.statuses(), moves };
    (discovery, report)
}

fn initial_status(t: &SwitchTarget) -> SwitchStatus {
    SwitchStatus {
        name: t.name.clone(),
        address: t.address.clone(),
        snmp: match t.credentials {
            Credentials::V2c { .. } => "v2c",
            Credentials::V3 { .. } => "v3",
        },
        state: "never-polled",
        last_poll: None,
        last_success: None,
        error: None,
        chassis: Vec::new(),
        macs: 0,
        ip_addresses: 0,
        poll_ms: None,
    }
}

async fn run(
    targets: Vec<SwitchTarget>,
    discovery: Discovery,
    sink: Option<MoveSink>,
    mut commands: mpsc::UnboundedReceiver<oneshot::Sender<PollReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut polls: Vec<SwitchEntries> = targets.iter().map(|_| SwitchEntries::default()).collect();
    let mut due: Vec<Instant> = vec![Instant::now(); targets.len()];
    loop {
        let next = due.iter().min().copied();
        let (which, reply) = tokio::select! {
            _ = stop.changed() => break,
            cmd = commands.recv() => match cmd {
                Some(reply) => ((0..targets.len()).collect::<Vec<_>>(), Some(reply)),
                None => continue,
            },
            _ = sleep_until(next) => {
                let now = Instant::now();
                ((0..targets.len()).filter(|i| due[*i] <= now).collect(), None)
            }
        };
        let round = poll_round(&targets, &which, &mut polls, &discovery, sink.as_ref());
        let moves = tokio::select! {
            _ = stop.changed() => break,
            moves = round => moves,
        };
        let now = Instant::now();
        for i in which {
            due[i] = now + targets[i].interval;
        }
        if let Some(reply) = reply {
            let _ = reply.send(PollReport { switches: discovery.statuses(), moves });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Poll the switches `which` (at most [`CONCURRENT_POLLS`] at a time), keep what each answered,
/// rebuild the table and return the moves it shows.
async fn poll_round(
    targets: &[SwitchTarget],
    which: &[usize],
    polls: &mut [SwitchEntries],
    discovery: &Discovery,
    sink: Option<&MoveSink>,
) -> Vec<Move> {
    let limit = Arc::new(Semaphore::new(CONCURRENT_POLLS));
    let mut set = JoinSet::new();
    for &i in which {
        let target = targets[i].clone();
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            (i, walk_switch(&target).await)
        });
    }
    let mut answered: Vec<(usize, WalkResult)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => answered.push(r),
            // A poll that panicked (a bug in a parser of the switch's answers) is logged; the
            // switch keeps its last entries and nothing else is disturbed.
            Err(e) => tracing::error!(error = %e, "a switch poll ended abnormally"),
        }
    }
    let at = Utc::now();
    for (i, result) in answered {
        let target = &targets[i];
        let mut status = discovery.status.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut status[i];
        s.last_poll = Some(at);
        match result {
            Ok((walks, took)) => {
                let fresh = entries_of(target, &walks, &polls[i], at);
                s.state = "ok";
                s.last_success = Some(at);
                s.error = None;
                s.chassis = fresh.entries.first().map(|e| e.chassis.0.clone()).unwrap_or_else(|| {
                    mibs::interpret(&walks).chassis.0 // no entries: the names alone
                });
                s.macs = fresh.entries.iter().map(|e| e.mac).collect::<std::collections::HashSet<_>>().len();
                s.ip_addresses = fresh.ips.len();
                s.poll_ms = Some(took.as_millis() as u64);
                tracing::info!(switch = %target.name, macs = s.macs, ips = s.ip_addresses, ms = s.poll_ms, "switch polled");
                polls[i] = fresh;
            }
            Err(e) => {
                // Kept for a while (a switch rebooting), not for ever: a phone that moved away
                // from a switch that then went silent would keep its old port and ERL, and an
                // old port beats a subnet entry. After two intervals without an answer the
                // switch's entries go; its devices fall back to the wiremap's other entries.
                let silent_for = s.last_success.map(|t| (at - t).to_std().unwrap_or_default());
                let stale = silent_for.is_none_or(|d| d >= target.interval * 2);
                if stale && !polls[i].entries.is_empty() {
                    tracing::warn!(switch = %target.name, address = %target.address, error = %e, since = ?s.last_success, "switch silent for two polling intervals: its entries are dropped");
                    polls[i] = SwitchEntries::default();
                } else {
                    tracing::warn!(switch = %target.name, address = %target.address, error = %e, since = ?s.last_success, "switch poll failed: its last entries are kept");
                }
                s.state = "failing";
                s.error = Some(e);
            }
        }
    }
    let table = DiscoveryTable::build(polls.iter().map(|p| (p.entries.as_slice(), p.ips.as_slice())));
    let old = discovery.table.replace(table);
    let moves = discovery.table.load().moves_since(&old, at);
    for (n, m) in moves.iter().enumerate() {
        // Every move is audited; the log says the first few of a round and how many there were
        // (a recabled closet must not bury the rest of the log).
        if n < LOGGED_MOVES {
            tracing::warn!(mac = %format_mac(&m.mac), from = %m.from, to = %m.to, "device moved to another switch port");
        }
        if let Some(sink) = sink {
            sink(m.clone());
        }
    }
    if moves.len() > LOGGED_MOVES {
        tracing::warn!(
            moves = moves.len(),
            "devices moved to other switch ports in one poll: all are in the audit log (device-moved)"
        );
    }
    moves
}

/// A poll's answers as table entries of `target`: named, counted per port, and dated from when
/// each MAC was first seen on its port (kept from the previous poll).
fn entries_of(target: &SwitchTarget, walks: &Walks, previous: &SwitchEntries, at: DateTime<Utc>) -> SwitchEntries {
    let interpreted = mibs::interpret(walks);
    let chassis: Arc<ChassisNames> = Arc::new(interpreted.chassis);
    // Distinct MACs per port (a device both in the FDB and announcing itself over LLDP is one).
    let mut macs: HashMap<String, std::collections::HashSet<Mac>> = HashMap::new();
    for e in &interpreted.entries {
        macs.entry(e.port.clone()).or_default().insert(e.mac);
    }
    let per_port: HashMap<String, usize> = macs.into_iter().map(|(k, v)| (k, v.len())).collect();
    let since: HashMap<(Mac, &str), DateTime<Utc>> =
        previous.entries.iter().map(|e| ((e.mac, e.port.as_str()), e.learnt_at)).collect();
    let entries = interpreted
        .entries
        .into_iter()
        .map(|mut e| {
            e.switch = target.name.clone();
            e.chassis = chassis.clone();
            e.macs_on_port = per_port.get(&e.port).copied().unwrap_or(1);
            e.learnt_at = since.get(&(e.mac, e.port.as_str())).copied().unwrap_or(at);
            Arc::new(e)
        })
        .collect();
    SwitchEntries { entries, ips: interpreted.ip_to_mac }
}
