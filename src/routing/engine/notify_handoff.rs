//! The hand-off to the notifier ([`crate::notify`]): the notification IM of every emergency call,
//! built only after the call's outbound INVITE is on the wire, the notifier's timers, and each
//! delivery attempt's outcome into its call's audit trail (or, after the call ended, as a late
//! event the server numbers from the audit log).

use std::collections::HashMap;
use std::time::Instant;

use super::{Engine, LocalEndpoint};
use crate::clock::Now;
use crate::events::{CallEvent, CallEventKind};
use crate::notify::{Contact, NotifyContext};
use crate::registrar::Registrar;
use crate::sip::transaction::Transport;

/// What the notifier may ask of the engine while it sends.
pub(super) struct NotifyCtx<'a> {
    pub registrar: &'a Registrar,
    pub groups: &'a HashMap<String, Vec<String>>,
    pub local: &'a LocalEndpoint,
    pub names: &'a HashMap<crate::sip::rfc3263::SipTarget, Vec<crate::sip::transaction::Peer>>,
    pub now: Instant,
}

impl<'a> NotifyCtx<'a> {
    fn new(
        accounts: &'a super::Accounts,
        local: &'a LocalEndpoint,
        names: &'a HashMap<crate::sip::rfc3263::SipTarget, Vec<crate::sip::transaction::Peer>>,
        now: Instant,
    ) -> NotifyCtx<'a> {
        NotifyCtx { registrar: &accounts.registrar, groups: &accounts.groups, local, names, now }
    }
}

impl NotifyContext for NotifyCtx<'_> {
    fn contacts_of(&self, user_or_group: &str) -> Vec<Contact> {
        match self.groups.get(user_or_group) {
            Some(members) => members.iter().flat_map(|m| self.registrar.contacts(m, self.now)).collect(),
            None => self.registrar.contacts(user_or_group, self.now),
        }
    }

    fn via(&self, t: Transport, branch: &str) -> String {
        self.local.via(t, branch)
    }

    fn host(&self) -> &str {
        &self.local.host
    }

    fn resolved(&self, target: &crate::sip::rfc3263::SipTarget, attempt: u32) -> Option<crate::sip::transaction::Peer> {
        let peers = self.names.get(target).filter(|p| !p.is_empty())?;
        peers.get(attempt.saturating_sub(1) as usize % peers.len()).copied()
    }
}

/// Announcements whose deliveries are still remembered (a few a day, in practice).
const ANNOUNCED_KEPT: usize = 1024;

impl Engine {
    /// A network element first seen unlocated (`location::unlocated`): a MESSAGE to each of
    /// `lis.unlocated_notification_uris`, retried as any notification.
    pub fn announce_unlocated(&mut self, ev: &CallEvent, now: Now) {
        self.tick(now);
        if self.policies.unlocated_notify.is_empty() {
            return;
        }
        if self.announced.len() >= ANNOUNCED_KEPT {
            self.announced.clear();
        }
        self.announced.insert(ev.call_id.clone());
        let now = self.now.mono;
        let targets = self.policies.unlocated_notify.clone();
        let ctx = NotifyCtx::new(&self.accounts, &self.local, &self.names, now);
        self.notifier.notify(ev, &targets, &ctx, &mut self.tx, now);
        self.drain_notify();
    }

    /// Start the notification IM of a call just detected (deferred by [`Engine::poll_output`]
    /// until the bytes before it, its outbound INVITE among them, are drained).
    pub(super) fn notify_detected(&mut self, detected: &CallEvent) {
        let Some(policy) = self.policies.by_name(&detected.policy) else { return };
        let now = self.now.mono;
        let ctx = NotifyCtx::new(&self.accounts, &self.local, &self.names, now);
        self.notifier.notify(detected, &policy.notify, &ctx, &mut self.tx, now);
        self.drain_notify();
    }

    /// The notifier's timers (attempt timeouts, retries).
    pub(super) fn notify_timeouts(&mut self, now: Instant) {
        let ctx = NotifyCtx::new(&self.accounts, &self.local, &self.names, now);
        self.notifier.handle_timeout(&ctx, &mut self.tx, now);
        self.drain_notify();
    }

    /// Each attempt's outcome into its call's audit trail, in sequence: while the call is live
    /// or ended lately, here; else as an [`Output::LateEvent`](super::Output::LateEvent), which
    /// the server numbers after the call's stored events.
    pub(super) fn drain_notify(&mut self) {
        for o in self.notifier.take_outcomes() {
            if self.announced.contains(&o.call_ref) {
                // An announcement's delivery belongs to no call: the log says how it went.
                if let CallEventKind::Notified { uri, ok, detail } = &o.kind {
                    tracing::info!(%uri, ok, %detail, "unlocated-network announcement");
                }
            } else if self.calls.live.contains_key(&o.call_ref) {
                self.emit(&o.call_ref, o.kind);
            } else if let Some(ev) = self.calls.ended_event(&o.call_ref, o.kind.clone(), self.now.wall) {
                self.out.events.push_back(ev);
            } else {
                self.out.late.push_back((o.call_ref, o.kind));
            }
        }
    }
}
