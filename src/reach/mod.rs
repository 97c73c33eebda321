//! Alerts beyond SIP, sent (issue 15): email, webhooks, SMS and voice calls (`voice.rs`) to the
//! channels a policy lists,
//! tier after tier of its escalation until someone acknowledges (docs/channels.md).
//!
//! An I/O shell beside the engine, never in front of it: it follows the core's event broadcast
//! like a desk does, so an alert can never hold up the call — the INVITE has left before the
//! `detected` event is broadcast. Each call's escalation is a task; each delivery (one
//! recipient of one channel) a task of its own with its retries, so a slow SMTP server delays
//! nobody else; at most [`MAX_SENDING`] attempts are on the network at once. Every attempt is
//! audited in the call's record (`notified`: target, success, channel, transport, tier, try),
//! through the engine like a desk's acknowledgement; secrets are never in it.
//!
//! Several nodes on one PostgreSQL store: a call's escalation runs on the node that took it, and
//! the escalations of a node that is gone are adopted by one of the others (`adoption.rs`).
//!
//! A network element first seen unlocated (`unlocated-network`, issue 16) is announced to
//! `lis.unlocated_channels` once, with the same deliveries and retries: a task for an admin, so
//! no escalation, no acknowledgement link, and the outcome in the log (it belongs to no call).

mod adoption;
pub mod email;
mod escalation;
pub mod http;
pub mod voice;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use crate::channels::{ChannelConfig, EscalationTier};
use crate::config::Config;
use crate::core_handle::CoreHandle;
use crate::events::CallEventKind;

/// Attempts (SMTP sessions, HTTP requests) on the network at once, across all calls: a burst
/// of calls queues its alerts here instead of opening thousands of connections.
pub const MAX_SENDING: usize = 32;
/// Voice calls placed at once, across all calls (each holds two sockets for minutes).
pub const MAX_CALLING: usize = 16;
/// Announcements for admins (a network element first seen unlocated) on the network at once,
/// apart from the alerts: a caller can make new subnets appear (its SDP address), and those
/// must never hold the slots an emergency's alert waits for. (At most 20 are announced a
/// minute: `server::record_sightings`.)
pub const MAX_ANNOUNCING: usize = 4;
/// Calls followed before the first look for escalations that have ended.
const PRUNE_FIRST: usize = 1024;
/// Where the acknowledgement links' key is kept when `[alerts] ack_key` is not set.
pub fn ack_key_path(cfg: &Config) -> PathBuf {
    cfg.store_path().with_extension("ack-key")
}

/// The acknowledgement links' HMAC key: `[alerts] ack_key`, else the one kept beside the store,
/// made (32 random bytes, readable by this user only) at the first start.
pub fn ack_key(cfg: &Config) -> Result<Arc<[u8]>, String> {
    if let Some(k) = &cfg.alerts.ack_key {
        return Ok(k.0.as_bytes().into());
    }
    let path = ack_key_path(cfg);
    if cfg.store_is_shared() {
        // Several nodes share one store: a key of this node's own signs links no other node
        // accepts (docs/channels.md).
        tracing::warn!(key = %path.display(), "[alerts] ack_key is not set: acknowledgement links from this node work only on this node; give every node the same ack_key");
    }
    match std::fs::read_to_string(&path) {
        Ok(hexed) => {
            let key = hex::decode(hexed.trim()).map_err(|e| format!("{}: {e}", path.display()))?;
            if key.len() < 32 {
                return Err(format!("{}: a key of fewer than 32 bytes", path.display()));
            }
            Ok(key.into())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            std::io::Write::write_all(&mut f, hex::encode(key).as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(key.to_vec().into())
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// What every delivery of every call shares.
struct Shared {
    core: CoreHandle,
    cfg: Arc<Config>,
    ack_key: Arc<[u8]>,
    sending: Semaphore,
    calling: Semaphore,
    announcing: Semaphore,
    attempt_timeout: Duration,
    retry_for: Duration,
    /// The core's RFC 3263 resolver (`crate::dns`, the `[dns] servers`, else the system's), built
    /// once at start; the voice channel finds its callees with it. Its error when there is none.
    dns: Dns,
}

/// The core's resolver, or why there is none (an unreadable /etc/resolv.conf).
pub type Dns = Result<crate::dns::SipResolver, String>;

/// Each policy's escalation, the channels by name, and what their deliveries share: from one
/// config, so a reload replaces them whole for new calls while live escalations keep theirs.
struct Plans {
    tiers: HashMap<String, Vec<EscalationTier>>,
    channels: HashMap<String, Arc<ChannelConfig>>,
    /// `lis.unlocated_channels`: told of each network element first seen unlocated.
    unlocated: Vec<Arc<ChannelConfig>>,
    shared: Arc<Shared>,
}

impl Plans {
    fn of(cfg: Arc<Config>, core: &CoreHandle, ack_key: &Arc<[u8]>, dns: &Dns) -> Plans {
        let tiers = (cfg.policies.iter())
            .map(|p| (p.name.clone(), crate::channels::tiers(&p.channels, &p.escalation)))
            .filter(|(_, t)| !t.is_empty())
            .collect();
        let channels: HashMap<String, Arc<ChannelConfig>> =
            cfg.channels.iter().map(|c| (c.name().to_string(), Arc::new(c.clone()))).collect();
        let unlocated = cfg.lis.unlocated_channels.iter().filter_map(|n| channels.get(n).cloned()).collect();
        let shared = Arc::new(Shared {
            core: core.clone(),
            attempt_timeout: Duration::from_secs(cfg.alerts.attempt_timeout_s),
            retry_for: Duration::from_secs(cfg.alerts.retry_for_s),
            cfg,
            ack_key: ack_key.clone(),
            sending: Semaphore::new(MAX_SENDING),
            calling: Semaphore::new(MAX_CALLING),
            announcing: Semaphore::new(MAX_ANNOUNCING),
            dns: dns.clone(),
        });
        Plans { tiers, channels, unlocated, shared }
    }
}

/// Follows the core's events and alerts each emergency call's policy channels, by the config
/// `config` holds when the call is detected (a reload changes them for new calls); ends when
/// `stop` is set or the core's broadcast closes.
pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    core: CoreHandle,
    ack_key: Arc<[u8]>,
    dns: Dns,
    mut stop: watch::Receiver<bool>,
) {
    let mut plans = Plans::of(config.borrow_and_update().clone(), &core, &ack_key, &dns);
    let mut events = core.subscribe();
    // Other nodes' acknowledgements stop this node's escalations too (each node escalates
    // the calls it took, and those it adopted from a node that is gone).
    let mut others = core.subscribe_others();
    // From now on this run follows the calls it takes: what this node's name took before is
    // orphaned (a previous run), and the look below finds it like another node's.
    let started = chrono::Utc::now();
    let (adopted_tx, mut adopted) = mpsc::channel(16);
    tokio::spawn(adoption::look_for_orphans(core.store.clone(), config.clone(), started, adopted_tx, stop.clone()));
    // Each followed call's "acknowledged" flag: set by the first acknowledgement, from any path.
    let mut followed: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let mut prune_at = PRUNE_FIRST;
    loop {
        let ev = tokio::select! {
            _ = stop.changed() => return,
            changed = config.changed() => {
                // The sender goes with the core.
                if changed.is_err() {
                    return;
                }
                plans = Plans::of(config.borrow_and_update().clone(), &core, &ack_key, &dns);
                continue;
            }
            r = events.recv() => match r {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(missed = n, "alert channels fell behind the core's events: some calls may not be alerted by email, webhook, SMS or voice call");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // An orphaned escalation this node claimed: followed like its own, so that an
            // acknowledgement from any node stops it.
            Some(detected) = adopted.recv() => {
                let Some(tiers) = plans.tiers.get(&detected.policy) else {
                    tracing::error!(call = %detected.call_id, policy = %detected.policy, "an adopted escalation's policy has no tiers in this node's config: not sent");
                    continue;
                };
                let tiers = escalation::resolve(tiers, &plans.channels);
                let (acked_tx, acked) = watch::channel(false);
                followed.insert(detected.call_id.clone(), acked_tx);
                tokio::spawn(adoption::resume(Arc::new(detected), tiers, acked, plans.shared.clone()));
                continue;
            }
            r = others.recv() => match r {
                Ok(ev) if matches!(ev.kind, CallEventKind::Acknowledged { .. }) => ev,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!(missed = n, "alert channels fell behind the other nodes' events: an acknowledgement there may not stop an escalation here");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match &ev.kind {
            CallEventKind::Detected if !ev.normalized.is_empty() => {
                let Some(tiers) = plans.tiers.get(&ev.policy) else { continue };
                let tiers = escalation::resolve(tiers, &plans.channels);
                let (acked_tx, acked) = watch::channel(false);
                if followed.len() >= prune_at {
                    // Escalations that have ended (their flag has no reader left) are forgotten;
                    // the next look when the live ones have doubled (amortised O(1) per call).
                    followed.retain(|_, tx| !tx.is_closed());
                    prune_at = (followed.len() * 2).max(PRUNE_FIRST);
                }
                followed.insert(ev.call_id.clone(), acked_tx);
                let start = tokio::time::Instant::now();
                tokio::spawn(escalation::escalate(ev, tiers, 0, start, acked, plans.shared.clone()));
            }
            // Announced by the node that first saw it (the store says which: once across nodes).
            CallEventKind::UnlocatedNetwork { .. } if !plans.unlocated.is_empty() => {
                escalation::announce(ev, &plans.unlocated, &plans.shared);
            }
            CallEventKind::Acknowledged { by, desk } => {
                if let Some(tx) = followed.remove(&ev.call_id) {
                    tracing::info!(call = %ev.call_id, %by, %desk, "acknowledged: the escalation stops");
                    let _ = tx.send(true);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_key_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "default_policy = \"p\"\n[sip]\nudp = \"127.0.0.1:5060\"\n[store]\npath = {:?}\n[[route]]\nname = \"r\"\nkind = \"sip-trunk\"\naddress = \"127.0.0.1:5070\"\n[[pstn_usage]]\nname = \"e\"\nroutes = [\"r\"]\n[[policy]]\nname = \"p\"\npstn_usage = \"e\"\n[[policy.number]]\ndial_string = \"911\"\n",
            dir.path().join("audit.db").display().to_string()
        );
        let cfg = Config::from_toml(&text, &dir.path().join("x.toml")).unwrap();
        let first = ack_key(&cfg).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(ack_key(&cfg).unwrap(), first, "the same key after a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ack_key_path(&cfg)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by this user only");
        }
        let mut with_key = cfg.clone();
        with_key.alerts.ack_key = Some(crate::channels::Secret("k".repeat(32)));
        assert_eq!(&*ack_key(&with_key).unwrap(), "k".repeat(32).as_bytes());
    }
}
