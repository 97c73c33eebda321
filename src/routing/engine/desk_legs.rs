//! Security desks on a call (issue 5): a desk joining `conf-<call id>` with its account's digest
//! credentials (listen-only or talking as its account and the policy allow), the desks sosdesk
//! calls itself when the policy names a conference URI, their in-dialog requests, and their
//! end with the call.

use super::media_legs::{params_from, with_sdp, MediaLegState};
use super::*;
use crate::config::ConferenceMode;
use crate::media::runner::MediaCommand;
use crate::media::{AudioSdp, Codec, Direction, LegId, Role};
use crate::sip::body::sdp_of;
use crate::sip::digest::{AuthFailure, DigestServer};

/// How a join refused for its credentials starts its reason; the client is told only this.
const BAD_CREDENTIALS: &str = "bad credentials";

/// `sip:conf-<call id>@…` → the call id.
pub(crate) fn conference_target(ruri: &str) -> Option<String> {
    let u = Uri::parse(ruri).ok()?;
    let user = u.user?;
    let id = user.get(..5).filter(|p| p.eq_ignore_ascii_case("conf-")).map(|_| &user[5..])?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then(|| id.to_string())
}

/// The desk accounts of the config and the digest server that checks them.
pub(super) struct DeskDirectory {
    pub(super) digest: DigestServer,
    pub(super) accounts: Vec<crate::config::DeskAccountConfig>,
}

impl DeskDirectory {
    pub(super) fn from_config(cfg: &Config) -> DeskDirectory {
        DeskDirectory { digest: DigestServer::new("sosdesk"), accounts: cfg.desks.clone() }
    }
}

/// A security desk on the call: one that joined, or one sosdesk called (auto-conference).
pub(super) struct DeskLeg {
    pub(super) media: MediaLegState,
    /// The account's name (joined) or the URI (called).
    pub(super) name: String,
    /// May talk: the policy is two-way and the account may talk.
    pub(super) may_talk: bool,
    pub(super) dialog: Dialog,
    /// A called desk: the INVITE's client transaction, until it is answered.
    pub(super) invite: Option<(ClientKey, Message)>,
    pub(super) answered: bool,
    /// A called desk sent a provisional response: a CANCEL may be sent (RFC 3261 §9.1).
    pub(super) provisional: bool,
    pub(super) ack: Option<Message>,
}

impl Engine {
    /// Refuse a desk's join, audited: in the call's own history when the call exists, else as
    /// a rejected request of its own.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse_join(
        &mut self,
        key: &str,
        msg: &Message,
        peer: Peer,
        call: Option<&mut Call>,
        authenticated: bool,
        desk: &str,
        status: u16,
        reason: String,
        extra: &[(&str, String)],
    ) {
        let mut r = msg.response(status, reason_phrase(status), Some(&ids::new_tag()));
        for (n, v) in extra {
            r.push(n, v.clone());
        }
        // Why credentials failed (an unknown user, a wrong password) is for the audit log only:
        // told to the client, it would say which user names exist.
        let told = if reason.starts_with(BAD_CREDENTIALS) { BAD_CREDENTIALS } else { reason.as_str() };
        r.push("Warning", format!("399 sosdesk \"{}\"", told.replace(['"', '\\'], "'")));
        self.tx.respond(key, &r, self.now.mono);
        tracing::info!(%peer, desk, status, %reason, "desk join refused");
        let told = told.to_string();
        match call {
            Some(call) => Self::emit_into(
                &mut self.out,
                call,
                CallEventKind::DeskJoinRefused { desk: desk.to_string(), status, reason },
                self.now.wall,
            ),
            // An account that proved who it is (a join to a call that has ended): a record of
            // its own, bounded by the accounts there are.
            None if authenticated => {
                let reason = format!("desk join by {desk} refused: {reason}");
                let what = msg.request_uri().unwrap_or("").to_string();
                self.out.events.push_back(CallEvent::refusal(
                    Self::caller_of(msg, peer),
                    what,
                    status,
                    reason,
                    self.now.wall,
                ));
            }
            // Anyone else: counted in the source's refusal record (`routing::refused`).
            None if status == 401 => {}
            None => self.tally_refused(msg, peer, status, &format!("desk join refused: {told}")),
        }
    }

    /// INVITE to `conf-<call id>`: a desk asks to join a call.
    pub(super) fn on_desk_join(&mut self, key: ServerKey, msg: Message, peer: Peer, call_ref: String, now: Instant) {
        // Credentials first, so nobody learns which calls exist without them.
        if !self.pass_guard(&key, &msg, peer, "desk join", now) {
            return;
        }
        let auth: Vec<String> = msg
            .headers_named("Authorization")
            .chain(msg.headers_named("Proxy-Authorization"))
            .map(String::from)
            .collect();
        let accounts = &self.accounts.desks.accounts;
        let ruri = msg.request_uri().unwrap_or("");
        let verified = self.accounts.desks.digest.verify(&auth, "INVITE", ruri, peer.addr.ip(), self.now.wall, |u| {
            accounts.iter().find(|a| a.username == u).map(|a| a.password.as_str())
        });
        let mut call = self.calls.live.remove(&call_ref);
        let user = match verified {
            Ok(user) => user,
            Err(AuthFailure::Missing) | Err(AuthFailure::Stale) => {
                let stale = matches!(verified, Err(AuthFailure::Stale));
                let challenge = self.accounts.desks.digest.challenge(stale, peer.addr.ip(), self.now.wall);
                let reason = if stale { "credentials expired (stale nonce)" } else { "credentials required" };
                self.refuse_join(
                    &key,
                    &msg,
                    peer,
                    call.as_mut(),
                    false,
                    "",
                    401,
                    reason.into(),
                    &[("WWW-Authenticate", challenge)],
                );
                if let Some(c) = call {
                    self.calls.live.insert(call_ref, c);
                }
                return;
            }
            Err(AuthFailure::Invalid(why)) => {
                let who = self.accounts.desks.digest.claimed_user(&auth);
                self.refuse_join(
                    &key,
                    &msg,
                    peer,
                    call.as_mut(),
                    false,
                    &who,
                    403,
                    format!("{BAD_CREDENTIALS}: {why}"),
                    &[],
                );
                self.credentials_failed(peer, now);
                if let Some(c) = call {
                    self.calls.live.insert(call_ref, c);
                }
                return;
            }
        };
        self.credentials_ok(peer);
        // verify() only accepts users it found among the accounts.
        let account = self.accounts.desks.accounts.iter().find(|a| a.username == user).cloned().unwrap_or_else(|| {
            crate::config::DeskAccountConfig {
                name: user.clone(),
                username: user,
                password: String::new(),
                talk: false,
            }
        });
        let Some(mut call) = call else {
            self.refuse_join(
                &key,
                &msg,
                peer,
                None,
                true,
                &account.name,
                404,
                format!("no active call {call_ref}"),
                &[],
            );
            return;
        };
        let refused = self.try_join(&key, &msg, peer, &mut call, &account, now);
        if let Err((status, reason)) = refused {
            self.refuse_join(&key, &msg, peer, Some(&mut call), true, &account.name, status, reason, &[]);
        }
        self.calls.live.insert(call_ref, call);
    }

    pub(super) fn try_join(
        &mut self,
        key: &str,
        msg: &Message,
        peer: Peer,
        call: &mut Call,
        account: &crate::config::DeskAccountConfig,
        now: Instant,
    ) -> Result<(), (u16, String)> {
        let Some(m) = call.media.as_mut() else {
            return Err((488, "the call's media is not anchored by sosdesk".into()));
        };
        let Some(sdp) = sdp_of(msg) else {
            return Err((488, "a join needs an SDP offer (a=recvonly to listen, a=sendrecv to talk)".into()));
        };
        let offer = AudioSdp::parse(&sdp).map_err(|e| (488, e.to_string()))?;
        // A desk that may not talk (its account, or the call's policy) still joins from any
        // client: every ordinary client offers sendrecv. It is answered so that it only
        // receives, and what it sends anyway reaches no one.
        let may_talk = account.talk && m.mode == ConferenceMode::TwoWay;
        let talk = may_talk && offer.direction.sends();
        let direction = if may_talk { offer.direction.answer() } else { offer.direction.answer_unheard() };
        if !self.media.anchoring {
            return Err((488, "media anchoring is off".to_string()));
        }
        let opened = self.media.reserve.pop().ok_or((503, "no RTP port free".to_string()))?;
        let id = m.next_leg;
        m.next_leg += 1;
        let mut leg = MediaLegState::new(id, opened);
        let codec = offer.pick(m.far.codec().or(m.caller.codec()));
        let answer = leg.local.answer(&offer, codec, direction);
        leg.configure(&call.call_ref, Role::Desk, params_from(&offer, codec, false, talk), &mut self.out.media);
        let tag = ids::new_tag();
        let dialog = Dialog::inbound(msg, &tag, 1000, peer);
        self.calls.by_call_id.insert(dialog.call_id.clone(), (call.call_ref.clone(), Side::Desk(id)));
        let mut r = msg.response(200, "OK", Some(&tag));
        r.push("Contact", self.local.contact(peer.transport));
        r.push("Allow", ALLOW);
        for (name, value) in crate::sip::session_timer::answer_headers(msg) {
            r.push(name, value);
        }
        with_sdp(&mut r, &answer);
        self.tx.respond(key, &r, now);
        m.desks.push(DeskLeg {
            media: leg,
            name: account.name.clone(),
            may_talk,
            dialog,
            invite: None,
            answered: true,
            provisional: false,
            ack: None,
        });
        let mode = if talk { "talk" } else { "listen" };
        tracing::info!(call = %call.call_ref, desk = %account.name, mode, "desk joined");
        Self::emit_into(
            &mut self.out,
            call,
            CallEventKind::DeskJoined { desk: account.name.clone(), mode: mode.into(), auto: false },
            self.now.wall,
        );
        Ok(())
    }

    /// A request inside a desk leg's dialog. Returns true when it ended the call.
    pub(super) fn on_desk_request(
        &mut self,
        call: &mut Call,
        leg: LegId,
        key: ServerKey,
        msg: Message,
        now: Instant,
    ) -> bool {
        let method = msg.method().to_string();
        let contact = self.local.contact(super::peer_of(call, Side::Desk(leg)).transport);
        let call_ref = call.call_ref.clone();
        let Some(m) = call.media.as_mut() else {
            self.respond(&key, &msg, 481, &[]);
            return false;
        };
        let Some(pos) = m.desks.iter().position(|d| d.media.id == leg) else {
            self.respond(&key, &msg, 481, &[]);
            return false;
        };
        match method.as_str() {
            "BYE" => {
                let r = msg.response(200, "OK", None);
                self.tx.respond(&key, &r, now);
                let desk = m.desks.remove(pos);
                self.calls.by_call_id.remove(&desk.dialog.call_id);
                self.out
                    .media
                    .push_back(MediaAction::Leg { call_ref: call_ref.clone(), cmd: MediaCommand::RemoveLeg { leg } });
                let last_party = m.caller_gone && !m.desks_on();
                Self::emit_into(
                    &mut self.out,
                    call,
                    CallEventKind::DeskLeft { desk: desk.name, reason: "hung up".into() },
                    self.now.wall,
                );
                if last_party {
                    // The caller hung up earlier and the last desk has gone: only the
                    // operator is left, so the call ends.
                    self.stop_b_leg(call, now, "last party left");
                    Self::emit_into(
                        &mut self.out,
                        call,
                        CallEventKind::Ended {
                            by: "desk".into(),
                            reason: "the last desk left after the caller".into(),
                        },
                        self.now.wall,
                    );
                    return true;
                }
            }
            "INVITE" | "UPDATE" => {
                let desk = &mut m.desks[pos];
                match sdp_of(&msg).map(|b| AudioSdp::parse(&b)) {
                    Some(Ok(offer)) => {
                        // As at the join: a desk that may not talk is answered so it only receives.
                        let talk = desk.may_talk && offer.direction.sends();
                        let direction =
                            if desk.may_talk { offer.direction.answer() } else { offer.direction.answer_unheard() };
                        let codec = offer.pick(desk.media.codec());
                        let answer = desk.media.local.answer(&offer, codec, direction);
                        desk.media.configure(
                            &call_ref,
                            Role::Desk,
                            params_from(&offer, codec, false, talk),
                            &mut self.out.media,
                        );
                        let mut r = msg.response(200, "OK", None);
                        r.push("Contact", contact);
                        for (name, value) in crate::sip::session_timer::answer_headers(&msg) {
                            r.push(name, value);
                        }
                        with_sdp(&mut r, &answer);
                        self.tx.respond(&key, &r, now);
                    }
                    Some(Err(e)) => {
                        let mut r = msg.response(488, reason_phrase(488), None);
                        r.push("Warning", format!("399 sosdesk \"{e}\""));
                        self.tx.respond(&key, &r, now);
                    }
                    None => {
                        // A refresh without an offer (RFC 4028 §9: an UPDATE is enough).
                        let mut r = msg.response(200, "OK", None);
                        r.push("Contact", contact);
                        for (name, value) in crate::sip::session_timer::answer_headers(&msg) {
                            r.push(name, value);
                        }
                        self.tx.respond(&key, &r, now);
                    }
                }
            }
            "INFO" | "OPTIONS" => self.respond(&key, &msg, 200, &[]),
            _ => self.respond(&key, &msg, 501, &[("Allow", ALLOW.into())]),
        }
        false
    }

    /// The policy's conference URI: called once, when the call is first routed (`attempt` 0).
    pub(super) fn start_auto_conference(&mut self, call: &mut Call, attempt: usize, now: Instant) {
        let Some(uri) = self.policies.by_name(&call.policy).and_then(|p| p.conference_uri.clone()) else { return };
        let Some(m) = call.media.as_mut() else {
            // Not anchored (an offer without G.711, no RTP port): nothing to add a desk to, and
            // the security desk must know it was not called.
            if attempt == 0 && call.kind != RouteKind::Callback {
                let reason = "the call's media is not anchored by sosdesk".to_string();
                Self::emit_into(
                    &mut self.out,
                    call,
                    CallEventKind::ConferenceFailed { target: uri, reason },
                    self.now.wall,
                );
            }
            return;
        };
        if m.auto_started {
            return;
        }
        m.auto_started = true;
        let Some(policy) = self.policies.by_name(&call.policy) else { return };
        let talk = policy.conference_mode == ConferenceMode::TwoWay;
        let (peer, ruri) = match super::target_of_uri(&uri) {
            Ok(t) => t,
            Err(e) => {
                Self::emit_into(
                    &mut self.out,
                    call,
                    CallEventKind::ConferenceFailed { target: uri, reason: e },
                    self.now.wall,
                );
                return;
            }
        };
        if !self.media.anchoring {
            return;
        }
        let Some(opened) = self.media.reserve.pop() else {
            let reason = "no RTP port free".to_string();
            Self::emit_into(
                &mut self.out,
                call,
                CallEventKind::ConferenceFailed { target: uri, reason },
                self.now.wall,
            );
            return;
        };
        let Some(m) = call.media.as_mut() else { return };
        let id = m.next_leg;
        m.next_leg += 1;
        let mut leg = MediaLegState::new(id, opened);
        // One-way: sosdesk only sends to the desk (RFC 3264 §5.1 sendonly).
        let offer = leg.local.offer(Codec::Pcmu, if talk { Direction::SendRecv } else { Direction::SendOnly });
        let t = peer.transport;
        let call_id = ids::new_call_id(&self.local.host);
        let local = format!("\"sosdesk emergency\" <sip:sosdesk@{}>;tag={}", self.local.host, ids::new_tag());
        let remote = format!("<{ruri}>");
        let mut inv = Message::request("INVITE", &ruri);
        inv.push("Via", self.local.via(t, &ids::new_branch()));
        inv.push("Max-Forwards", "70");
        inv.push("From", local.clone());
        inv.push("To", remote.clone());
        inv.push("Call-ID", call_id.clone());
        inv.push("CSeq", "1 INVITE");
        inv.push("Contact", self.local.contact(t));
        inv.push("Priority", "emergency");
        // What the desk's phone shows: caller-controlled text, so quoted and stripped of
        // control characters.
        let who = call.caller.display_name.clone().unwrap_or_default();
        let subject: String =
            format!("{}emergency call from {} {}", if call.test { "TEST " } else { "" }, call.caller.number, who)
                .chars()
                .filter(|c| !c.is_control())
                .collect();
        inv.push("Subject", subject.trim().to_string());
        inv.push("Allow", ALLOW);
        with_sdp(&mut inv, &offer);
        let key = self.tx.send_request(&inv, peer, now);
        self.calls.client_txn.insert(key.clone(), call.call_ref.clone());
        self.calls.by_call_id.insert(call_id.clone(), (call.call_ref.clone(), Side::Desk(id)));
        m.desks.push(DeskLeg {
            media: leg,
            name: uri,
            may_talk: talk,
            dialog: Dialog::outbound(call_id, local, remote, ruri, peer),
            invite: Some((key, inv)),
            answered: false,
            provisional: false,
            ack: None,
        });
    }

    pub(super) fn on_auto_conference_response(
        &mut self,
        call: &mut Call,
        key: &str,
        msg: Message,
        retransmission: bool,
        now: Instant,
    ) {
        let status = msg.status().unwrap_or(0);
        let call_ref = call.call_ref.clone();
        let Some(m) = call.media.as_mut() else { return };
        let Some(leg) = m.desk_by_invite(key) else { return };
        let Some(desk) = m.desk_mut(leg) else { return };
        match status {
            100..=199 => {
                desk.provisional = true;
                desk.dialog.learn_remote_tag(&msg);
            }
            200..=299 => {
                if retransmission || desk.answered {
                    if let Some(ack) = desk.ack.clone() {
                        self.tx.send_ack(&ack, desk.dialog.peer);
                    }
                    return;
                }
                desk.dialog.remote = msg.header("To").unwrap_or("").to_string();
                desk.dialog.remote_tag = msg.to_tag();
                desk.dialog.confirm(&msg);
                let ack = self.dialog_request(&mut desk.dialog, "ACK", Some(1));
                self.tx.send_ack(&ack, desk.dialog.peer);
                desk.ack = Some(ack);
                desk.answered = true;
                let answer = sdp_of(&msg).map(|b| AudioSdp::parse(&b));
                match answer {
                    Some(Ok(a)) => {
                        let talk = desk.may_talk && a.direction.sends();
                        desk.media.configure(
                            &call_ref,
                            Role::Desk,
                            params_from(&a, a.pick(None), false, talk),
                            &mut self.out.media,
                        );
                        let (name, mode) = (desk.name.clone(), if talk { "talk" } else { "listen" });
                        tracing::info!(call = %call_ref, desk = %name, mode, "conference URI answered");
                        Self::emit_into(
                            &mut self.out,
                            call,
                            CallEventKind::DeskJoined { desk: name, mode: mode.into(), auto: true },
                            self.now.wall,
                        );
                    }
                    other => {
                        let reason = match other {
                            Some(Err(e)) => format!("unusable SDP answer: {e}"),
                            _ => "answer without SDP".into(),
                        };
                        let mut bye = self.dialog_request(&mut desk.dialog, "BYE", None);
                        bye.push("Reason", "SIP;cause=488;text=\"no usable media\"");
                        self.tx.send_request(&bye, desk.dialog.peer, now);
                        let name = desk.name.clone();
                        self.drop_desk(call, leg);
                        Self::emit_into(
                            &mut self.out,
                            call,
                            CallEventKind::ConferenceFailed { target: name, reason },
                            self.now.wall,
                        );
                    }
                }
            }
            _ => {
                let reason = format!("{status} {}", msg.status_reason());
                self.auto_conference_failed(call, key, reason);
            }
        }
    }

    pub(super) fn auto_conference_failed(&mut self, call: &mut Call, key: &str, reason: String) {
        let Some(leg) = call.media.as_ref().and_then(|m| m.desk_by_invite(key)) else { return };
        let Some(name) = call.media.as_ref().and_then(|m| m.desk(leg)).map(|d| d.name.clone()) else { return };
        self.drop_desk(call, leg);
        tracing::warn!(call = %call.call_ref, target = %name, %reason, "conference URI not reached");
        Self::emit_into(&mut self.out, call, CallEventKind::ConferenceFailed { target: name, reason }, self.now.wall);
    }

    /// Forget a desk leg (its dialog and transaction mappings, its media).
    pub(super) fn drop_desk(&mut self, call: &mut Call, leg: LegId) {
        let Some(m) = call.media.as_mut() else { return };
        let Some(pos) = m.desks.iter().position(|d| d.media.id == leg) else { return };
        let desk = m.desks.remove(pos);
        self.calls.by_call_id.remove(&desk.dialog.call_id);
        if let Some((k, _)) = &desk.invite {
            self.calls.client_txn.remove(k);
        }
        if desk.media.socket.is_none() {
            self.out
                .media
                .push_back(MediaAction::Leg { call_ref: call.call_ref.clone(), cmd: MediaCommand::RemoveLeg { leg } });
        }
    }

    /// The call is ending: hang up every desk still on it (BYE), give up on one still being
    /// called, and audit each leaving.
    pub(super) fn end_desk_legs(&mut self, call: &mut Call) {
        let Some(m) = call.media.as_mut() else { return };
        let desks = std::mem::take(&mut m.desks);
        let now = self.now.mono;
        for mut desk in desks {
            self.calls.by_call_id.remove(&desk.dialog.call_id);
            if let Some((k, _)) = &desk.invite {
                self.calls.client_txn.remove(k);
            }
            if desk.answered {
                let mut bye = self.dialog_request(&mut desk.dialog, "BYE", None);
                bye.push("Reason", "SIP;cause=200;text=\"emergency call ended\"");
                self.tx.send_request(&bye, desk.dialog.peer, now);
                Self::emit_into(
                    &mut self.out,
                    call,
                    CallEventKind::DeskLeft { desk: desk.name, reason: "call ended".into() },
                    self.now.wall,
                );
            } else if let Some((key, inv)) = desk.invite {
                if desk.provisional {
                    // Still being called: CANCEL it (§9.1).
                    let cancel = cancel_for(&inv);
                    self.tx.send_request(&cancel, desk.dialog.peer, now);
                } else {
                    // Nothing heard from it yet: a CANCEL may not be sent before a provisional
                    // response (§9.1); it is sent when one comes (`relay.rs`).
                    self.calls.cancel_on_provisional.insert(key, (inv, desk.dialog.peer, now + ABANDON_FOR, false));
                }
                // Either way, a 2xx that comes after all is ACKed and ended (a BYE).
                self.calls.abandon(desk.dialog.call_id, desk.dialog.peer, now);
            }
        }
    }
}
