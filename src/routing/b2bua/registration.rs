//! The engine's side of issue 6: desks and SIP clients registering (digest against the `[[desk]]`
//! accounts, [`crate::registrar`]), the notification IM of every emergency call
//! ([`crate::notify`]), and the refusal of wrong credentials with a rate limit
//! ([`crate::access`]).

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;

use super::{Engine, LocalEndpoint};
use crate::access::Gate;
use crate::events::{CallEvent, CallEventKind};
use crate::notify::{Contact, NotifyContext};
use crate::registrar::{RegisterReply, Registrar};
use crate::sip::digest::AuthFailure;
use crate::sip::transaction::{Peer, ServerKey, Transport};
use crate::sip::{ids, reason_phrase, Message};

/// What the notifier may ask of the engine while it sends.
pub(super) struct NotifyCtx<'a> {
    pub registrar: &'a Registrar,
    pub groups: &'a HashMap<String, Vec<String>>,
    pub local: &'a LocalEndpoint,
    pub now: Instant,
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
}

impl Engine {
    /// Ask a request's source address past the wrong-credentials guard. `false`: it was refused
    /// (and audited on the first refusal of its block).
    pub(super) fn pass_guard(&mut self, key: &str, msg: &Message, peer: Peer, what: &str, now: Instant) -> bool {
        let gate = self.guard.lock().map(|mut g| g.gate(peer.addr.ip(), now)).unwrap_or(Gate::Check);
        match gate {
            Gate::Check => true,
            Gate::Blocked { audit } => {
                let reason = format!("{what} refused: too many wrong credentials from {}", peer.addr.ip());
                self.refuse(key, msg, peer, 403, &reason, &[]);
                if audit {
                    self.audit_refusal(
                        msg,
                        peer,
                        403,
                        format!("{reason}; further attempts are refused unaudited for a while"),
                    );
                }
                false
            }
        }
    }

    /// Wrong credentials from `peer`: counted towards its block.
    pub(super) fn credentials_failed(&mut self, peer: Peer, now: Instant) {
        if let Ok(mut g) = self.guard.lock() {
            if g.failed(peer.addr.ip(), now) {
                tracing::warn!(source = %peer.addr.ip(), "too many wrong credentials: address blocked for a while");
            }
        }
    }

    pub(super) fn credentials_ok(&mut self, peer: Peer) {
        if let Ok(mut g) = self.guard.lock() {
            g.succeeded(peer.addr.ip());
        }
    }

    fn refuse(&mut self, key: &str, msg: &Message, peer: Peer, status: u16, reason: &str, extra: &[(&str, String)]) {
        let mut r = msg.response(status, reason_phrase(status), Some(&ids::new_tag()));
        for (n, v) in extra {
            r.push(n, v.clone());
        }
        if status >= 400 && status != 401 {
            r.push("Warning", format!("399 sosdesk \"{}\"", reason.replace(['"', '\\'], "'")));
        }
        self.tx.respond(key, &r, Instant::now());
        tracing::info!(%peer, method = msg.method(), status, reason, "request refused");
    }

    /// A refused request with credentials, in the audit log as a record of its own.
    pub(super) fn audit_refusal(&mut self, msg: &Message, peer: Peer, status: u16, reason: String) {
        let what = format!("{} {}", msg.method(), msg.request_uri().unwrap_or(""));
        self.events.push_back(CallEvent::refusal(Self::caller_of(msg, peer), what, status, reason));
    }

    /// REGISTER (RFC 3261 §10.3): digest first (steps 2-4), then the bindings.
    pub(super) fn on_register(&mut self, key: ServerKey, msg: Message, peer: Peer, now: Instant) {
        if !self.pass_guard(&key, &msg, peer, "REGISTER", now) {
            return;
        }
        // An address of record that is not a SIP URI (RFC 4475 §3.3.15's `isbn:`): 416.
        let aor_is_sip = msg.to().and_then(|t| t.parsed_uri()).is_some_and(|u| u.is_sip());
        if !aor_is_sip {
            self.refuse(&key, &msg, peer, 416, "the address of record is not a sip: URI", &[]);
            return;
        }
        let auth: Vec<String> = msg.headers_named("Authorization").map(String::from).collect();
        let accounts = &self.desks.accounts;
        let ruri = msg.request_uri().unwrap_or("");
        let verified = self.desks.digest.verify(&auth, "REGISTER", ruri, peer.addr.ip(), |u| {
            accounts.iter().find(|a| a.username == u).map(|a| a.password.as_str())
        });
        let user = match verified {
            Ok(user) => user,
            Err(AuthFailure::Missing) | Err(AuthFailure::Stale) => {
                let stale = matches!(verified, Err(AuthFailure::Stale));
                let challenge = self.desks.digest.challenge(stale, peer.addr.ip());
                self.refuse(&key, &msg, peer, 401, "credentials required", &[("WWW-Authenticate", challenge)]);
                return;
            }
            Err(AuthFailure::Invalid(why)) => {
                let who = self.desks.digest.claimed_user(&auth);
                let reason = format!("REGISTER by {who:?} refused: bad credentials: {why}");
                // The client learns only that its credentials failed; which user names exist, and
                // why, is for the audit log.
                self.refuse(&key, &msg, peer, 403, "bad credentials", &[]);
                self.audit_refusal(&msg, peer, 403, reason);
                self.credentials_failed(peer, now);
                return;
            }
        };
        self.credentials_ok(peer);
        match self.registrar.register(&user, &msg, peer, now) {
            RegisterReply::Ok { contacts } => {
                let mut r = msg.response(200, "OK", Some(&ids::new_tag()));
                for c in &contacts {
                    r.push("Contact", c.clone());
                }
                r.push("Date", Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string());
                self.tx.respond(&key, &r, now);
                tracing::info!(user, %peer, contacts = contacts.len(), "registered");
            }
            RegisterReply::Refuse { status, headers, reason } => {
                let extra: Vec<(&str, String)> = headers.into_iter().collect();
                self.refuse(&key, &msg, peer, status, &reason, &extra);
                if status == 403 {
                    self.audit_refusal(&msg, peer, status, format!("REGISTER by {user:?} refused: {reason}"));
                }
            }
        }
    }

    /// Whether work waits for [`Engine::handle_deferred`].
    pub fn has_deferred(&self) -> bool {
        !self.deferred_notify.is_empty()
    }

    /// Work deferred until the bytes of the last input are sent: the notification IM of calls
    /// just detected (so building it never delays their outbound INVITE on the wire). The
    /// caller sends what this queues right after.
    pub fn handle_deferred(&mut self, now: Instant) {
        while let Some(detected) = self.deferred_notify.pop_front() {
            let Some(policy) = self.policies.by_name(&detected.policy) else { continue };
            let ctx = NotifyCtx { registrar: &self.registrar, groups: &self.groups, local: &self.local, now };
            self.notifier.notify(&detected, &policy.notify, &ctx, &mut self.tx, now);
        }
        self.drain_notify();
    }

    /// The notifier's timers (attempt timeouts, retries).
    pub(super) fn notify_timeouts(&mut self, now: Instant) {
        let ctx = NotifyCtx { registrar: &self.registrar, groups: &self.groups, local: &self.local, now };
        self.notifier.handle_timeout(&ctx, &mut self.tx, now);
        self.drain_notify();
    }

    /// Each attempt's outcome into its call's audit trail: in sequence while the call is live,
    /// else handed to the server, which numbers it after the call's stored events.
    pub(super) fn drain_notify(&mut self) {
        for o in self.notifier.take_outcomes() {
            if self.calls.contains_key(&o.call_ref) {
                self.emit(&o.call_ref, o.kind);
            } else {
                self.late_events.push_back((o.call_ref, o.kind));
            }
        }
    }

    /// An event for a call the engine no longer holds (a notification retry after the call
    /// ended): the server adds it to the call from the audit log.
    pub fn poll_late_event(&mut self) -> Option<(String, CallEventKind)> {
        self.late_events.pop_front()
    }
}
