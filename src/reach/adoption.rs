//! Escalations adopted from a node that is gone (issue 14): a call's escalation runs as a task
//! on the node that took the call (`escalation.rs`), so when that node dies or is stopped, the
//! tiers still to come would be sent by nobody. Every node therefore looks, once at its start
//! and every [`LOOK_EVERY`], for **orphaned** escalations in the shared PostgreSQL store, and
//! one surviving node adopts each and runs its remaining tiers.
//!
//! Built only from what the store already gives, no cluster protocol of our own:
//! - *Which node answers for a call*: the node that wrote its first event (the audit's `node`
//!   column), or the node that adopted it last (`escalation_adoptions`).
//! - *Whether that node is alive*: whether it holds its name's advisory lock
//!   (`crate::shared::node_name::is_live`): the server releases it when the node's session ends
//!   (a crash, a kill, a cut-off once the server notices) and a node that stops gracefully
//!   releases it after its dispatcher (hence its escalations) has stopped, so a live holder's
//!   escalation is never adopted while it still runs.
//! - *What is left to do*: the call is not acknowledged, and its `escalated` events say which
//!   tiers were alerted; the rest are sent at their original times (detection + `after_s`,
//!   a time already past at once) with this node's tiers of the call's policy (nodes share
//!   their config).
//! - *Exactly one adopter*: a claim row per call (`escalation_adoptions`, the call's id the
//!   primary key) taken by one conditional statement — a first insert, or the take-over of a
//!   claim whose holder was found dead — so of two nodes that found the same orphan, one's
//!   statement changes a row and the other's none (PostgreSQL serialises the two on the row).
//!
//! A node restarted under its own name finds its previous run's escalations the same way: calls
//! it took, or adopted, before this run's dispatcher started are nobody's now.
//!
//! Alerts are at least once: a node that dies between sending a tier and committing its
//! `escalated` record (or whose session the server ends while it keeps running, e.g. a
//! PostgreSQL failover) gets that tier sent again by its adopter. A tier's delivery retries in
//! flight when its node died are not taken over (only tiers still to come are).
//!
//! The engine knows nothing of this: it is I/O of the alert dispatcher, beside the engine.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::escalation::{self, Tier};
use super::Shared;
use crate::audit::AuditStore;
use crate::config::Config;
use crate::db::{Backend, Db};
use crate::events::{CallEvent, CallEventKind};

/// How often a node looks for orphaned escalations: an orphan's next tier is late by at most
/// this (after its node's session has ended), for one indexed query on the recent calls.
pub const LOOK_EVERY: Duration = Duration::from_secs(2);

/// How far back a call can still have a tier to send or retry: the longest escalation's last
/// tier plus `[alerts] retry_for_s`; `None` when no policy escalates (nothing to look for).
fn window(cfg: &Config) -> Option<Duration> {
    let last = cfg
        .policies
        .iter()
        .filter_map(|p| crate::channels::tiers(&p.channels, &p.escalation).last().map(|t| t.after_s))
        .max()?;
    Some(Duration::from_secs(last.saturating_add(cfg.alerts.retry_for_s)))
}

/// What a call's record says of its escalation.
#[derive(Debug, Default, PartialEq)]
struct Progress {
    /// The `detected` event of an emergency call: what every alert carries.
    detected: Option<CallEvent>,
    acknowledged: bool,
    /// Tiers alerted so far (the highest `escalated` tier: tiers go in order).
    sent: usize,
}

fn progress<'a>(events: impl IntoIterator<Item = &'a CallEvent>) -> Progress {
    let mut p = Progress::default();
    for ev in events {
        match &ev.kind {
            CallEventKind::Detected if !ev.normalized.is_empty() && p.detected.is_none() => {
                p.detected = Some(ev.clone())
            }
            CallEventKind::Acknowledged { .. } => p.acknowledged = true,
            CallEventKind::Escalated { tier, .. } => p.sent = p.sent.max(*tier as usize),
            _ => {}
        }
    }
    p
}

/// Whether nobody runs the escalation of a call held by `holder` since `since_ms` (Unix ms):
/// another node that is not live, or this node's own previous run (before `started_ms`; what
/// this run took or adopted, its dispatcher follows).
fn orphaned(holder: &str, since_ms: i64, me: &str, started_ms: i64, holder_live: bool) -> bool {
    if holder == me {
        since_ms < started_ms
    } else {
        !holder_live
    }
}

/// A recent unacknowledged emergency call, as the store has it.
struct Candidate {
    call_id: String,
    policy: String,
    /// Who answers for its escalation: its last adopter, else the node that took it.
    holder: String,
    /// Since when (Unix ms): the adoption, else the detection.
    since_ms: i64,
    /// Whether `holder` is an adopter (its claim row is what a take-over must find).
    adopted: bool,
}

/// The unacknowledged emergency calls detected at or after `since`, oldest first: one query
/// on the `calls` summary (indexed by `first_at`), the first event's node and any claim joined.
async fn candidates(db: &Db, since: DateTime<Utc>) -> Result<Vec<Candidate>, sqlx::Error> {
    let sql = db.backend.sql(
        "SELECT c.call_id, c.policy, c.first_at, e.node AS taker, x.node AS adopter, x.adopted_ms \
         FROM calls c JOIN events e ON e.seq = c.first_seq \
         LEFT JOIN escalation_adoptions x ON x.call_id = c.call_id \
         WHERE c.first_at >= ? AND c.acknowledged_at IS NULL AND c.normalized <> '' \
         ORDER BY c.first_at, c.first_seq",
    );
    let rows = sqlx::query(&sql).bind(crate::time::timestamp(&since)).fetch_all(&db.pool).await?;
    let mut out = Vec::new();
    for r in rows {
        let first_at: String = r.try_get("first_at")?;
        let detected_ms = DateTime::parse_from_rfc3339(&first_at).map(|t| t.timestamp_millis()).unwrap_or(0);
        let (holder, since_ms, adopted) =
            match (r.try_get::<Option<String>, _>("adopter")?, r.try_get::<Option<i64>, _>("adopted_ms")?) {
                (Some(a), Some(ms)) => (a, ms, true),
                // An unnamed node's call (no name, no lock to tell whether it lives): left alone.
                _ => match r.try_get::<Option<String>, _>("taker")? {
                    Some(t) => (t, detected_ms, false),
                    None => continue,
                },
            };
        out.push(Candidate { call_id: r.try_get("call_id")?, policy: r.try_get("policy")?, holder, since_ms, adopted });
    }
    Ok(out)
}

/// Claims `call_id`'s escalation for `me`: inserts its claim row, or takes over the row of
/// `dead_adopter` (whom the caller found not live). True when this node's statement changed the
/// row, i.e. no other node claimed it first.
async fn claim(db: &Db, call_id: &str, me: &str, dead_adopter: Option<&str>) -> Result<bool, sqlx::Error> {
    let sql = db.backend.sql(
        "INSERT INTO escalation_adoptions (call_id, node, adopted_ms) VALUES (?, ?, ?) \
         ON CONFLICT (call_id) DO UPDATE SET node = excluded.node, adopted_ms = excluded.adopted_ms \
         WHERE escalation_adoptions.node = ?",
    );
    let changed = sqlx::query(&sql)
        .bind(call_id)
        .bind(me)
        .bind(Utc::now().timestamp_millis())
        // NULL when there was no claim: `node = NULL` is never true, so only the insert counts.
        .bind(dead_adopter)
        .execute(&db.pool)
        .await?
        .rows_affected();
    Ok(changed == 1)
}

/// Looks for orphaned escalations until `stop`, and hands each this node claims (its
/// `detected` event) to the dispatcher through `adopted`. Returns at once unless the store is
/// PostgreSQL and the node named (nobody else could have taken a call, or be told apart).
pub(super) async fn look_for_orphans(
    store: AuditStore,
    config: watch::Receiver<Arc<Config>>,
    started: DateTime<Utc>,
    adopted: mpsc::Sender<CallEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(me) = store.node().map(str::to_string) else { return };
    if store.database().backend != Backend::Postgres {
        return;
    }
    // Orphans looked at and left alone for good (their policy unknown, reported once; no tier
    // to go): not read again at every look.
    let mut settled = HashSet::new();
    // The first tick is at once: what a node that died before this one started left.
    let mut every = tokio::time::interval(LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => {}
        }
        let cfg = config.borrow().clone();
        let looked = look(&store, &cfg, &me, started.timestamp_millis(), &adopted, &mut settled);
        // A slow store delays the next look, never the dispatcher (this is a task of its own).
        let r = tokio::select! {
            _ = stop.changed() => return,
            r = looked => r,
        };
        match r {
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot look for the escalations of nodes that are gone"),
        }
        if adopted.is_closed() {
            return;
        }
    }
}

/// One look: claims every orphaned escalation with tiers to go.
async fn look(
    store: &AuditStore,
    cfg: &Config,
    me: &str,
    started_ms: i64,
    adopted: &mpsc::Sender<CallEvent>,
    settled: &mut HashSet<String>,
) -> Result<(), String> {
    let Some(window) = window(cfg) else { return Ok(()) };
    let db = store.database();
    let back = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let since = Utc::now().checked_sub_signed(back).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let found = candidates(db, since).await.map_err(|e| e.to_string())?;
    // Each holder asked once per look (a handful of nodes, however many calls).
    let mut live: HashMap<String, bool> = HashMap::new();
    for c in &found {
        if settled.contains(&c.call_id) {
            continue;
        }
        let holder_live = match live.get(&c.holder) {
            Some(l) => *l,
            None if c.holder == me => true,
            None => {
                let l = crate::shared::node_name::is_live(db, &c.holder).await.map_err(|e| e.to_string())?;
                live.insert(c.holder.clone(), l);
                l
            }
        };
        if !orphaned(&c.holder, c.since_ms, me, started_ms, holder_live) {
            continue;
        }
        let Some(policy) = cfg.policies.iter().find(|p| p.name == c.policy) else {
            tracing::error!(call = %c.call_id, policy = %c.policy, node = %c.holder, "the escalation of a call of a node that is gone cannot be adopted: its policy is not in this node's config (give every node the same config)");
            settled.insert(c.call_id.clone());
            continue;
        };
        let tiers = crate::channels::tiers(&policy.channels, &policy.escalation).len();
        let p = if tiers == 0 {
            Progress::default()
        } else {
            let records = store.call_events(&c.call_id).await.map_err(|e| e.to_string())?;
            progress(records.iter().map(|r| &r.event))
        };
        let Some(detected) = p.detected.filter(|_| !p.acknowledged && p.sent < tiers) else {
            settled.insert(c.call_id.clone());
            continue;
        };
        let dead_adopter = c.adopted.then_some(c.holder.as_str());
        if !claim(db, &c.call_id, me, dead_adopter).await.map_err(|e| e.to_string())? {
            continue;
        }
        tracing::warn!(call = %c.call_id, from = %c.holder, tiers_sent = p.sent, tiers, "adopted the escalation of a call whose node is gone");
        if adopted.send(detected).await.is_err() {
            return Ok(());
        }
    }
    settled.retain(|id| found.iter().any(|c| &c.call_id == id));
    // Claims of calls out of the window can never be wanted again.
    let sql = db.backend.sql("DELETE FROM escalation_adoptions WHERE adopted_ms < ?");
    sqlx::query(&sql).bind(since.timestamp_millis()).execute(&db.pool).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs an adopted escalation's remaining tiers, the dispatcher already following `acked` for
/// the call. The record is read again first: an acknowledgement committed before the dispatcher
/// followed the call reached nobody's flag, but it is in the store now.
pub(super) async fn resume(
    detected: Arc<CallEvent>,
    tiers: Vec<Tier>,
    acked: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    let call_id = &detected.call_id;
    let p = match shared.core.store.call_events(call_id).await {
        Ok(records) => progress(records.iter().map(|r| &r.event)),
        Err(e) => {
            tracing::error!(call = %call_id, error = %e, "cannot read an adopted escalation's record: its tiers are not sent");
            return;
        }
    };
    if p.acknowledged {
        tracing::info!(call = %call_id, "acknowledged meanwhile: the adopted escalation stops");
        return;
    }
    // The tiers' times count from the detection, as on the node that took the call.
    let ago = (Utc::now() - detected.at).to_std().unwrap_or_default();
    let start = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
    escalation::escalate(detected, tiers, p.sent, start, acked, shared).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EscalationTarget;

    fn event(kind: CallEventKind, normalized: &str) -> CallEvent {
        CallEvent {
            version: crate::events::CALL_EVENT_VERSION,
            call_id: "c1".into(),
            seq: 1,
            at: Utc::now(),
            caller: crate::events::Caller {
                number: "2001".into(),
                display_name: None,
                uri: "sip:2001@example.com".into(),
                source: "udp:192.0.2.10:5060".into(),
            },
            dialed: "911".into(),
            normalized: normalized.into(),
            test_call: false,
            policy: "p".into(),
            site: None,
            location: crate::location::LocationSnapshot::none(),
            route: None,
            kind,
        }
    }

    fn escalated(tier: u32) -> CallEvent {
        let targets: Vec<EscalationTarget> = Vec::new();
        event(CallEventKind::Escalated { tier, tiers: 3, targets, next_tier_in_ms: None }, "911")
    }

    #[test]
    fn progress_is_the_highest_tier_sent_and_whether_anyone_acknowledged() {
        let detected = event(CallEventKind::Detected, "911");
        let p = progress(&[detected.clone(), escalated(1), escalated(2)]);
        assert_eq!((p.detected.as_ref(), p.acknowledged, p.sent), (Some(&detected), false, 2));
        let ack = event(CallEventKind::Acknowledged { by: "Dana".into(), desk: "d".into() }, "911");
        assert!(progress(&[detected, escalated(1), ack]).acknowledged);
        // Not an emergency call (nothing escalates it).
        assert_eq!(progress(&[event(CallEventKind::Detected, "")]).detected, None);
    }

    #[test]
    fn the_window_is_the_longest_escalations_last_tier_and_the_retries_after_it() {
        let text = |policy: &str| {
            format!(
                "default_policy = \"p\"\n[sip]\nudp = \"127.0.0.1:5060\"\n[store]\npath = \"/tmp/x.db\"\n\
                 [alerts]\nretry_for_s = 300\n[[channel]]\nname = \"w\"\nkind = \"webhook\"\n\
                 url = \"http://127.0.0.1:1/x\"\nsecret = \"webhook-secret-0123456789\"\n\
                 [[route]]\nname = \"r\"\nkind = \"sip-trunk\"\naddress = \"127.0.0.1:5070\"\n\
                 [[pstn_usage]]\nname = \"e\"\nroutes = [\"r\"]\n[[policy]]\nname = \"p\"\npstn_usage = \"e\"\n{policy}\n\
                 [[policy.number]]\ndial_string = \"911\"\n"
            )
        };
        let cfg = |policy: &str| {
            Config::from_toml(&text(policy), std::path::Path::new("/tmp/x.toml")).unwrap_or_else(|e| panic!("{e}"))
        };
        let escalating = "channels = [\"w\"]\nescalation = [{ after_s = 60, channels = [\"w\"] }]";
        assert_eq!(window(&cfg(escalating)), Some(Duration::from_secs(360)));
        assert_eq!(window(&cfg("")), None, "nothing escalates: nothing to look for");
    }

    #[tokio::test]
    async fn one_claim_goes_through_and_a_dead_adopters_claim_is_taken_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = AuditStore::open(dir.path().join("s.db")).await.unwrap();
        let db = store.database();
        assert!(claim(db, "c1", "b", None).await.unwrap());
        assert!(!claim(db, "c1", "c", None).await.unwrap(), "b claimed it first");
        assert!(claim(db, "c1", "c", Some("b")).await.unwrap(), "b is gone: c takes over");
        assert!(!claim(db, "c1", "d", Some("b")).await.unwrap(), "c took it over first");
        let holder: String = sqlx::query_scalar("SELECT node FROM escalation_adoptions WHERE call_id = 'c1'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(holder, "c");
        store.close().await;
    }

    #[test]
    fn orphaned_means_another_node_not_live_or_this_nodes_previous_run() {
        assert!(orphaned("a", 5, "b", 10, false));
        assert!(!orphaned("a", 5, "b", 10, true), "a live node runs its own");
        assert!(orphaned("b", 5, "b", 10, true), "taken before this run started: its task is gone");
        assert!(!orphaned("b", 10, "b", 10, true), "taken by this run: followed here");
    }
}
