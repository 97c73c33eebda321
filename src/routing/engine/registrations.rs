//! Desks and SIP clients registering (RFC 3261 §10.3; digest against the `[[desk]]` accounts,
//! bindings in [`crate::registrar`]), and the wrong-credentials guard ([`crate::access`]) that
//! every request with credentials passes first.

use std::time::Instant;

use super::Engine;
use crate::access::Gate;
use crate::registrar::RegisterReply;
use crate::sip::digest::AuthFailure;
use crate::sip::transaction::{Peer, ServerKey};
use crate::sip::{ids, reason_phrase, Message};

impl Engine {
    /// Ask a request's source address past the wrong-credentials guard. `false`: it was refused
    /// (and audited on the first refusal of its block).
    pub(super) fn pass_guard(&mut self, key: &str, msg: &Message, peer: Peer, what: &str, now: Instant) -> bool {
        let gate = self.accounts.guard.lock().map(|mut g| g.gate(peer.addr.ip(), now)).unwrap_or(Gate::Check);
        match gate {
            Gate::Check => true,
            Gate::Blocked { audit } => {
                let reason = format!("{what} refused: too many wrong credentials from {}", peer.addr.ip());
                self.refuse(key, msg, peer, 403, &reason, &[]);
                if audit {
                    tracing::warn!(source = %peer.addr.ip(), "{what} from a blocked address: refused for a while");
                }
                self.tally_refused(msg, peer, 403, "blocked: too many wrong credentials");
                false
            }
        }
    }

    /// Wrong credentials from `peer`: counted towards its block.
    pub(super) fn credentials_failed(&mut self, peer: Peer, now: Instant) {
        if let Ok(mut g) = self.accounts.guard.lock() {
            if g.failed(peer.addr.ip(), now) {
                tracing::warn!(source = %peer.addr.ip(), "too many wrong credentials: address blocked for a while");
            }
        }
    }

    pub(super) fn credentials_ok(&mut self, peer: Peer) {
        if let Ok(mut g) = self.accounts.guard.lock() {
            g.succeeded(peer.addr.ip());
        }
    }

    pub(super) fn refuse(
        &mut self,
        key: &str,
        msg: &Message,
        peer: Peer,
        status: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) {
        let mut r = msg.response(status, reason_phrase(status), Some(&ids::new_tag()));
        for (n, v) in extra {
            r.push(n, v.clone());
        }
        if status >= 400 && status != 401 {
            r.push("Warning", format!("399 sosdesk \"{}\"", reason.replace(['"', '\\'], "'")));
        }
        self.tx.respond(key, &r, self.now.mono);
        // Per message at debug only: a flood must not fill the log either. The refusal records
        // (`routing::refused`) and their warning per interval are what an operator reads.
        tracing::debug!(%peer, method = msg.method(), status, reason, "request refused");
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
            self.tally_refused(&msg, peer, 416, "address of record not a sip: URI");
            return;
        }
        let auth: Vec<String> = msg.headers_named("Authorization").map(String::from).collect();
        let accounts = &self.accounts.desks.accounts;
        let ruri = msg.request_uri().unwrap_or("");
        let verified = self.accounts.desks.digest.verify(&auth, "REGISTER", ruri, peer.addr.ip(), self.now.wall, |u| {
            accounts.iter().find(|a| a.username == u).map(|a| a.password.as_str())
        });
        let user = match verified {
            Ok(user) => user,
            Err(AuthFailure::Missing) | Err(AuthFailure::Stale) => {
                let stale = matches!(verified, Err(AuthFailure::Stale));
                let challenge = self.accounts.desks.digest.challenge(stale, peer.addr.ip(), self.now.wall);
                self.refuse(&key, &msg, peer, 401, "credentials required", &[("WWW-Authenticate", challenge)]);
                return;
            }
            Err(AuthFailure::Invalid(why)) => {
                // The client learns only that its credentials failed; which user names exist, and
                // why, is for the audit log (the refusal record's reasons).
                self.refuse(&key, &msg, peer, 403, "bad credentials", &[]);
                self.tally_refused(&msg, peer, 403, &format!("bad credentials: {why}"));
                self.credentials_failed(peer, now);
                return;
            }
        };
        self.credentials_ok(peer);
        match self.accounts.registrar.register(&user, &msg, peer, now) {
            RegisterReply::Ok { contacts } => {
                let mut r = msg.response(200, "OK", Some(&ids::new_tag()));
                for c in &contacts {
                    r.push("Contact", c.clone());
                }
                r.push("Date", self.now.wall.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
                self.tx.respond(&key, &r, now);
                tracing::info!(user, %peer, contacts = contacts.len(), "registered");
                // Alerts waiting for this desk (or a group it is in) go now.
                let groups = &self.accounts.groups;
                let concerns = |name: &str| name == user || groups.get(name).is_some_and(|m| m.contains(&user));
                self.notifier.registered(concerns, now);
                self.notify_timeouts(now);
                if self.callbacks.shared {
                    let wall = self.now.wall;
                    let contacts = (self.accounts.registrar.shareable(&user, now).into_iter())
                        .map(|(uri, peer, until)| {
                            let left =
                                chrono::Duration::from_std(until.saturating_duration_since(now)).unwrap_or_default();
                            (uri, peer.addr, wall + left)
                        })
                        .collect();
                    self.out.store_io.push_back(super::Output::Registered(super::SharedRegistration {
                        user: user.clone(),
                        contacts,
                    }));
                }
            }
            RegisterReply::Refuse { status, headers, reason } => {
                let extra: Vec<(&str, String)> = headers.into_iter().collect();
                self.refuse(&key, &msg, peer, status, &reason, &extra);
                if status >= 400 {
                    self.tally_refused(&msg, peer, status, &format!("for {user:?}: {reason}"));
                }
            }
        }
    }
}
