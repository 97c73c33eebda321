//! One call's escalation: each tier alerted at its time unless the call was acknowledged by
//! then; each recipient's delivery retried with backoff within `[alerts] retry_for_s`, and
//! stopped by an acknowledgement too (nobody needs the alert any more).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use crate::channels::sign::{ack_token, AckClaim};
use crate::channels::{ChannelConfig, EscalationTier};
use crate::events::{CallEvent, CallEventKind, EscalationTarget};

pub(super) struct Tier {
    after: Duration,
    channels: Vec<Arc<ChannelConfig>>,
}

/// The policy's tiers with their channels (config validation made sure every name exists).
pub(super) fn resolve(tiers: &[EscalationTier], channels: &HashMap<String, Arc<ChannelConfig>>) -> Vec<Tier> {
    tiers
        .iter()
        .map(|t| Tier {
            after: Duration::from_secs(t.after_s),
            channels: t.channels.iter().filter_map(|n| channels.get(n).cloned()).collect(),
        })
        .collect()
}

/// Waits until `at`; `false` when the call was acknowledged first.
async fn wait_unacknowledged(acked: &mut watch::Receiver<bool>, at: Instant) -> bool {
    let acknowledged = tokio::select! {
        _ = tokio::time::sleep_until(at) => None,
        r = acked.wait_for(|a| *a) => Some(r.is_ok()),
    };
    match acknowledged {
        None => !*acked.borrow(),
        Some(true) => false,
        // The dispatcher has stopped: the core is stopping.
        Some(false) => false,
    }
}

/// Alerts `tiers` from the one numbered `first` + 1 on (the earlier ones were alerted by the
/// node that took the call: `adoption.rs`), each at `start` (the detection) + its `after_s`.
pub(super) async fn escalate(
    ev: Arc<CallEvent>,
    tiers: Vec<Tier>,
    first: usize,
    start: Instant,
    mut acked: watch::Receiver<bool>,
    shared: Arc<Shared>,
) {
    let count = tiers.len();
    let times: Vec<Instant> = tiers.iter().map(|t| start + t.after).collect();
    for (n, tier) in tiers.into_iter().enumerate().skip(first) {
        if !wait_unacknowledged(&mut acked, times[n]).await {
            tracing::info!(call = %ev.call_id, tier = n + 1, "acknowledged: later tiers are not alerted");
            return;
        }
        let mut targets = Vec::new();
        for ch in tier.channels {
            for target in ch.targets() {
                targets.push(EscalationTarget {
                    channel: ch.name().to_string(),
                    kind: ch.kind().to_string(),
                    target: target.clone(),
                });
                let d = Delivery { ev: ev.clone(), ch: ch.clone(), target, tier: n + 1 };
                tokio::spawn(d.run(acked.clone(), shared.clone()));
            }
        }
        // Recorded after the deliveries are on their way, so the audit write delays none of
        // them; the desk folds the tier and its targets' outcomes in whatever order they come.
        let next = times.get(n + 1).map(|at| at.saturating_duration_since(Instant::now()).as_millis() as u64);
        let kind = CallEventKind::Escalated { tier: n as u32 + 1, tiers: count as u32, targets, next_tier_in_ms: next };
        if let Err(e) = shared.core.annotate(&ev.call_id, kind).await {
            tracing::error!(call = %ev.call_id, error = %e, "an escalation tier could not be audited");
        }
    }
}

/// An announcement for admins (a network element first seen unlocated): each recipient of
/// each channel once, retried like an alert; nothing can acknowledge it.
pub(super) fn announce(ev: Arc<CallEvent>, channels: &[Arc<ChannelConfig>], shared: &Arc<Shared>) {
    for ch in channels {
        for target in ch.targets() {
            let d = Delivery { ev: ev.clone(), ch: ch.clone(), target, tier: 0 };
            let shared = shared.clone();
            tokio::spawn(async move {
                // Held for the delivery's life: its retries stop only when they give up.
                let (_never, acked) = watch::channel(false);
                d.run(acked, shared).await
            });
        }
    }
}

/// One recipient of one channel.
struct Delivery {
    ev: Arc<CallEvent>,
    ch: Arc<ChannelConfig>,
    /// As audited: `mailto:…`, `sms:…`, a webhook's origin.
    target: String,
    /// The escalation's tier from 1; 0 for an announcement (no call, no acknowledgement).
    tier: usize,
}

impl Delivery {
    async fn run(self, mut acked: watch::Receiver<bool>, shared: Arc<Shared>) {
        let ack_url = self.ack_url(&shared);
        let give_up_at = Instant::now() + shared.retry_for;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = {
                // Bounded: at most MAX_SENDING attempts on the network at once, and MAX_CALLING
                // voice calls (which last minutes: they must not hold up the emails).
                let pool = match &*self.ch {
                    _ if self.tier == 0 => &shared.announcing,
                    ChannelConfig::Voice(_) => &shared.calling,
                    _ => &shared.sending,
                };
                let _slot = pool.acquire().await;
                let within = self.attempt_timeout(&shared);
                tokio::time::timeout(within, self.attempt(&shared, ack_url.as_deref(), &acked))
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} s", within.as_secs())))
            };
            let wait = crate::notify::backoff(attempt);
            let retry = result.is_err() && Instant::now() + wait <= give_up_at && !*acked.borrow();
            let detail = format!(
                "{} via {} ({}), tier {}, attempt {attempt}: {}{}",
                self.ch.kind(),
                self.ch.name(),
                self.transport(),
                self.tier,
                match &result {
                    Ok(r) => format!("accepted ({r})"),
                    Err(e) => format!("failed ({e})"),
                },
                match (&result, retry) {
                    (Ok(_), _) => String::new(),
                    (Err(_), true) => format!("; retry in {} s", wait.as_secs()),
                    (Err(_), false) => "; given up".into(),
                }
            );
            if result.is_ok() {
                tracing::info!(call = %self.ev.call_id, target = %self.target, %detail, "alert delivered");
            } else {
                tracing::warn!(call = %self.ev.call_id, target = %self.target, %detail, "alert not delivered");
            }
            // An announcement belongs to no call: the log above is its record.
            if self.tier > 0 {
                let kind = CallEventKind::Notified { uri: self.target.clone(), ok: result.is_ok(), detail };
                if let Err(e) = shared.core.annotate(&self.ev.call_id, kind).await {
                    tracing::error!(call = %self.ev.call_id, error = %e, "an alert attempt could not be audited");
                }
            }
            if !retry || !wait_unacknowledged(&mut acked, Instant::now() + wait).await {
                return;
            }
        }
    }

    /// The link that acknowledges as this recipient (none without `[alerts] public_url`).
    fn ack_url(&self, shared: &Shared) -> Option<String> {
        if self.tier == 0 {
            return None;
        }
        let base = shared.cfg.alerts.public_url.as_deref()?.trim_end_matches('/');
        let expires = chrono::Utc::now().timestamp() + shared.cfg.alerts.ack_valid_s as i64;
        let claim = AckClaim { call_id: self.ev.call_id.clone(), target: self.target.clone(), expires };
        Some(format!("{base}/ack/{}", ack_token(&shared.ack_key, &claim)))
    }

    /// How long one attempt may take: a voice call rings, then speaks, for longer than an
    /// SMTP session.
    fn attempt_timeout(&self, shared: &Shared) -> Duration {
        match &*self.ch {
            // Longer than every bound of the call added up: the call ends itself (with its BYE
            // once answered) before this timeout could drop it mid-call.
            ChannelConfig::Voice(v) => super::voice::bound(v) + shared.attempt_timeout,
            _ => shared.attempt_timeout,
        }
    }

    /// How it travels, for the audit: `SMTP STARTTLS smtp.example.org:587`, `HTTPS`.
    fn transport(&self) -> String {
        match &*self.ch {
            ChannelConfig::Email(e) => {
                let tls = match e.tls {
                    crate::channels::SmtpTls::Starttls => "SMTP STARTTLS",
                    crate::channels::SmtpTls::Implicit => "SMTP over TLS",
                    crate::channels::SmtpTls::None => "SMTP without TLS",
                };
                format!("{tls} {}:{}", e.server, e.port())
            }
            ChannelConfig::Webhook(w) => format!("{:?} webhook", w.format).to_lowercase(),
            ChannelConfig::Sms(s) => {
                format!("SMS gateway {}", crate::channels::Url::parse(&s.url.0).map(|u| u.origin()).unwrap_or_default())
            }
            ChannelConfig::Voice(v) => super::voice::transport(v, &self.target),
        }
    }

    async fn attempt(
        &self,
        shared: &Shared,
        ack_url: Option<&str>,
        acked: &watch::Receiver<bool>,
    ) -> Result<String, String> {
        let ca = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| shared.cfg.path(p));
        match &*self.ch {
            ChannelConfig::Email(e) => {
                let to = self.target.strip_prefix("mailto:").unwrap_or(&self.target);
                let msg = super::email::message(e, to, &self.ev, ack_url)?;
                super::email::send(e, ca(&e.tls_ca).as_deref(), msg, shared.attempt_timeout).await
            }
            ChannelConfig::Webhook(w) => {
                let now = chrono::Utc::now().timestamp();
                super::http::send(super::http::webhook_request(w, &self.ev, ack_url, now, ca(&w.tls_ca))?).await
            }
            ChannelConfig::Sms(s) => {
                let to = self.target.strip_prefix("sms:").unwrap_or(&self.target);
                super::http::send(super::http::sms_request(s, to, &self.ev, ack_url, ca(&s.tls_ca))?).await
            }
            ChannelConfig::Voice(v) => {
                super::voice::call(&shared.cfg, &shared.core, &shared.dns, v, &self.target, &self.ev, acked.clone())
                    .await
            }
        }
    }
}
