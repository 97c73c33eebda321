//! The call once both legs exist: responses to what sosdesk sent inside a call, ACK, CANCEL,
//! BYE, and every other in-dialog request relayed from one leg to the other (RFC 3261 §12.2,
//! §14 re-INVITE one at a time), with the dialog bookkeeping that ends a call.

use super::*;

impl Engine {
    pub(super) fn on_response(&mut self, key: ClientKey, msg: Message, retransmission: bool, now: Instant) {
        if let Some((invite, peer, until, cancelled)) = self.calls.cancel_on_provisional.remove(&key) {
            // A desk called in for a call that has ended: CANCEL it once it rings (§9.1); a 2xx
            // (also one crossing the CANCEL) is ACKed and ended like any late answer.
            match msg.status().unwrap_or(0) {
                100..=199 => {
                    if !cancelled {
                        self.tx.send_request(&cancel_for(&invite), peer, now);
                    }
                    self.calls.cancel_on_provisional.insert(key, (invite, peer, until, true));
                }
                200..=299 => self.on_stray_response(msg),
                _ => {}
            }
            return;
        }
        let Some(call_ref) = self.calls.client_txn.get(&key).cloned() else { return };
        let status = msg.status().unwrap_or(0);
        if status >= 200 && !(msg.method() == "INVITE" && status < 300) {
            self.calls.client_txn.remove(&key);
        }
        let Some(mut call) = self.calls.live.remove(&call_ref) else { return };
        let is_b_invite = call.b.as_ref().is_some_and(|b| b.client_key == key);
        if call.media.as_ref().is_some_and(|m| m.desk_by_invite(&key).is_some()) {
            self.on_auto_conference_response(&mut call, &key, msg, retransmission, now);
        } else if is_b_invite {
            let failed = self.on_b_invite_response(&mut call, msg, retransmission, now);
            self.calls.live.insert(call_ref.clone(), call);
            if let Some((attempt, reason)) = failed {
                // A 503 is this server's trouble, so another of the route's servers may serve
                // (RFC 3263 §4.3); any other refusal is the provider's answer: the next route.
                self.fail_attempt(&call_ref, attempt, reason, status == 503, now);
            }
            return;
        } else if retransmission {
            // A retransmitted 2xx to a relayed re-INVITE: our ACK was lost; send it again
            // (RFC 3261 §13.2.2.4). The relay itself is already answered and gone.
            if let Some((ack, peer)) = call.relay_acks.get(&key) {
                self.tx.send_ack(ack, *peer);
            }
        } else if let Some(relay) = call.relays.get(&key) {
            {
                let origin = relay.origin;
                let server_key = relay.server_key.clone();
                let mut r = relay.request.response(status, msg.status_reason(), None);
                copy_relayed(&msg, &mut r);
                let answered_invite = msg.method() == "INVITE" && (200..300).contains(&status);
                if answered_invite || (msg.method() == "UPDATE" && (200..300).contains(&status)) {
                    r.push("Contact", self.local.contact(peer_of(&call, origin).transport));
                }
                if answered_invite {
                    let side = origin.other();
                    let had_offer = !relay.request.body.is_empty();
                    let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
                    if had_offer {
                        let ack = self.in_dialog_request(&mut call, side, "ACK", Some(cseq));
                        let p = peer_of(&call, side);
                        self.tx.send_ack(&ack, p);
                        // Kept for the 2xx's retransmissions; one per re-INVITE, forgotten with
                        // the call.
                        call.relay_acks.insert(key.clone(), (ack, p));
                    } else {
                        call.pending_reinvite_ack = Some((side, cseq));
                    }
                }
                self.tx.respond(&server_key, &r, now);
                if status >= 200 {
                    call.relays.remove(&key);
                }
            }
        }
        self.calls.live.insert(call_ref, call);
    }

    pub(super) fn on_ack(&mut self, msg: Message) {
        let Some((call_ref, side)) = msg.call_id().and_then(|c| self.calls.by_call_id.get(c)).cloned() else { return };
        let Some(mut call) = self.calls.live.remove(&call_ref) else { return };
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(0);
        if call.media.is_some() {
            // Anchored: an ACK only ever carries an answer to sosdesk's own offer.
            self.anchored_ack(&mut call, side, &msg);
        } else if side == Side::A && call.await_a_ack && cseq == call.a_invite.cseq().map(|c| c.0).unwrap_or(0) {
            // Late offer (RFC 3264 §4 via RFC 3261 §13.2.1): the caller's ACK carries the SDP
            // answer, which the far end needs in our ACK.
            call.await_a_ack = false;
            let invite_cseq = call.b.as_ref().and_then(|b| b.invite.cseq()).map(|c| c.0).unwrap_or(1);
            let mut ack = self.in_dialog_request(&mut call, Side::B, "ACK", Some(invite_cseq));
            copy_body(&msg, &mut ack);
            if let Some(b) = call.b.as_mut() {
                self.tx.send_ack(&ack, b.dialog.peer);
                b.ack = Some(ack);
            }
        } else if let Some((target, c)) = call.pending_reinvite_ack {
            if target == side.other() {
                call.pending_reinvite_ack = None;
                let mut ack = self.in_dialog_request(&mut call, target, "ACK", Some(c));
                copy_body(&msg, &mut ack);
                let p = peer_of(&call, target);
                self.tx.send_ack(&ack, p);
            }
        }
        self.calls.live.insert(call_ref, call);
    }

    pub(super) fn on_cancel(&mut self, invite_key: &str, now: Instant) {
        // A PSAP's callback still waiting for the store's look-up of its ELIN (several nodes):
        // no call yet to end; its INVITE is answered 487 now and the caller is never rung.
        for list in self.callbacks.waiting.values_mut() {
            if let Some(i) = list.iter().position(|w| w.key == invite_key) {
                let w = list.remove(i);
                let r = w.msg.response(487, "Request Terminated", Some(&crate::sip::ids::new_tag()));
                self.tx.respond(&w.key, &r, now);
                return;
            }
        }
        let Some(call_ref) = self.calls.server_txn.get(invite_key).cloned() else { return };
        let Some(mut call) = self.calls.live.remove(&call_ref) else { return };
        if call.state != CallState::Routing {
            self.calls.live.insert(call_ref, call);
            return;
        }
        // §9.2: the INVITE is answered 487 once the CANCEL is accepted.
        let r = call.a_invite.response(487, "Request Terminated", Some(tag_of(&call.a.local)));
        self.tx.respond(&call.a_invite_key, &r, now);
        self.stop_b_leg(&mut call, now, "caller cancelled");
        Self::emit_into(
            &mut self.out,
            &mut call,
            CallEventKind::Ended { by: "cancel".into(), reason: "caller hung up before answer".into() },
            self.now.wall,
        );
        self.forget_call(call);
    }

    /// End the outbound leg in whatever state it is: BYE if answered, CANCEL if ringing,
    /// abandon (and ACK+BYE any late 2xx) if nothing came back yet.
    pub(super) fn stop_b_leg(&mut self, call: &mut Call, now: Instant, why: &str) {
        let Some(b) = call.b.take() else { return };
        if call.state == CallState::Answered {
            call.b = Some(b);
            let mut bye = self.in_dialog_request(call, Side::B, "BYE", None);
            bye.push("Reason", format!("SIP;cause=200;text=\"{why}\""));
            let peer = peer_of(call, Side::B);
            self.tx.send_request(&bye, peer, now);
            self.end_b_leg(call);
            return;
        }
        if b.provisional {
            let cancel = cancel_for(&b.invite);
            self.tx.send_request(&cancel, b.dialog.peer, now);
        } else {
            self.tx.abandon(&b.client_key);
        }
        self.calls.client_txn.remove(&b.client_key);
        self.calls.by_call_id.remove(&b.dialog.call_id);
        self.calls.abandon(b.dialog.call_id, b.dialog.peer, now);
    }

    /// The outbound leg is over (BYE sent or received): the tables that find the call by its
    /// dialog and its INVITE transaction drop it too — they held one entry each per call for as
    /// long as the core ran (`forget_call` drops only a leg still on the call).
    fn end_b_leg(&mut self, call: &mut Call) {
        if let Some(b) = call.b.take() {
            self.calls.by_call_id.remove(&b.dialog.call_id);
            self.calls.client_txn.remove(&b.client_key);
        }
    }

    pub(super) fn on_in_dialog_request(&mut self, key: ServerKey, msg: Message, now: Instant) {
        let Some((call_ref, side)) = msg.call_id().and_then(|c| self.calls.by_call_id.get(c)).cloned() else {
            self.respond(&key, &msg, 481, &[]);
            return;
        };
        let Some(mut call) = self.calls.live.remove(&call_ref) else {
            self.respond(&key, &msg, 481, &[]);
            return;
        };
        let method = msg.method().to_string();
        if let Side::Desk(leg) = side {
            let ended = self.on_desk_request(&mut call, leg, key, msg, now);
            if ended {
                self.forget_call(call);
            } else {
                self.calls.live.insert(call_ref, call);
            }
            return;
        }
        if method == "BYE" {
            let r = msg.response(200, "OK", None);
            self.tx.respond(&key, &r, now);
            if side == Side::A && call.state == CallState::Answered && call.media.as_ref().is_some_and(|m| m.desks_on())
            {
                // Last-party clear: the caller hung up, but a desk is on the call; the desk and
                // the emergency operator stay connected until they hang up.
                self.caller_left(&mut call);
                self.calls.live.insert(call_ref, call);
                return;
            }
            let by = if side == Side::A { "caller" } else { "far-end" };
            match side {
                Side::A => self.stop_b_leg(&mut call, now, "caller hung up"),
                Side::B | Side::Desk(_) => {
                    self.end_b_leg(&mut call);
                    if call.state == CallState::Answered && !call.media.as_ref().is_some_and(|m| m.caller_gone) {
                        let bye = self.in_dialog_request(&mut call, Side::A, "BYE", None);
                        let p = call.a.peer;
                        self.tx.send_request(&bye, p, now);
                    }
                }
            }
            Self::emit_into(
                &mut self.out,
                &mut call,
                CallEventKind::Ended { by: by.into(), reason: "BYE".into() },
                self.now.wall,
            );
            self.forget_call(call);
            return;
        }
        let reoffer = method == "UPDATE" || (method == "INVITE" && call.state == CallState::Answered);
        if call.media.is_some() && reoffer {
            // Anchored: each leg's session is between the party and sosdesk, so a re-offer is
            // answered here (RFC 3264 §8) and never reaches the other party. UPDATE also in the
            // early dialog (RFC 3311 §5.1): relayed, it would move the media off the anchor (no
            // recording, no desk).
            self.anchored_reoffer(&mut call, side, key, msg, now);
            self.calls.live.insert(call_ref, call);
            return;
        }
        // Anything else is relayed to the other leg once that leg's dialog exists.
        let other = side.other();
        let other_ready = match other {
            Side::A => !call.media.as_ref().is_some_and(|m| m.caller_gone),
            Side::B => call.b.as_ref().is_some_and(|b| b.dialog.remote_tag.is_some()),
            Side::Desk(_) => false,
        };
        if !other_ready || call.state != CallState::Answered && method == "INVITE" {
            let status = if method == "INVITE" { 491 } else { 481 };
            let r = msg.response(status, reason_phrase(status), None);
            self.tx.respond(&key, &r, now);
            self.calls.live.insert(call_ref, call);
            return;
        }
        if method == "INVITE" && call.relays.values().any(|r| r.request.method() == "INVITE") {
            // §14.1: one re-INVITE at a time.
            let r = msg.response(491, "Request Pending", None);
            self.tx.respond(&key, &r, now);
            self.calls.live.insert(call_ref, call);
            return;
        }
        let mut out = self.in_dialog_request(&mut call, other, &method, None);
        copy_relayed(&msg, &mut out);
        if method == "INVITE" || method == "UPDATE" {
            out.push("Contact", self.local.contact(peer_of(&call, other).transport));
        }
        let peer = peer_of(&call, other);
        let ck = self.tx.send_request(&out, peer, now);
        self.calls.client_txn.insert(ck.clone(), call_ref.clone());
        call.relays.insert(ck, Relay { origin: side, server_key: key, request: msg });
        self.calls.live.insert(call_ref, call);
    }

    /// A request inside one leg's dialog (§12.2.1.1). `cseq` given: reuse it (ACK).
    pub(super) fn in_dialog_request(&self, call: &mut Call, side: Side, method: &str, cseq: Option<u32>) -> Message {
        let d = match side {
            Side::A => &mut call.a,
            Side::B => match call.b.as_mut() {
                Some(b) => &mut b.dialog,
                None => &mut call.a,
            },
            Side::Desk(leg) => match call.media.as_mut().and_then(|m| m.desk_mut(leg)) {
                Some(desk) => &mut desk.dialog,
                None => &mut call.a,
            },
        };
        self.dialog_request(d, method, cseq)
    }

    /// A request inside `d` (§12.2.1.1) with our Via. `cseq` given: reuse it (ACK). A peer
    /// reached again by the name it gave itself has that name noted for its certificate right
    /// before the request leaves (`Output::TlsName`), whatever the shell's table forgot since.
    pub(super) fn dialog_request(&self, d: &mut Dialog, method: &str, cseq: Option<u32>) -> Message {
        if let Some(name) = &d.tls_name {
            self.out.tls_names.borrow_mut().push_back((d.peer.addr, name.clone()));
        }
        let via = self.local.via(d.peer.transport, &ids::new_branch());
        d.request(method, cseq, via)
    }

    pub(super) fn forget_call(&mut self, mut call: Call) {
        // Desks still on the call are cleared with it, and its media task closes (which
        // finishes the recording).
        self.end_desk_legs(&mut call);
        // What comes after the end (the recording, notification outcomes) is numbered from this.
        let last = super::picture(&call, CallEventKind::Detected, self.now.wall);
        self.calls.remember_ended(last, self.now.mono);
        if call.media.is_some() {
            self.out.media.push_back(MediaAction::Close { call_ref: call.call_ref.clone() });
        }
        self.calls.by_call_id.remove(&call.a.call_id);
        if let Some(b) = &call.b {
            self.calls.by_call_id.remove(&b.dialog.call_id);
            self.calls.client_txn.remove(&b.client_key);
        }
        self.calls.server_txn.remove(&call.a_invite_key);
        for k in call.relays.keys().chain(call.relay_acks.keys()) {
            self.calls.client_txn.remove(k);
        }
    }
}

pub(super) fn copy_body(from: &Message, to: &mut Message) {
    if !from.body.is_empty() {
        if let Some(ct) = from.header("Content-Type") {
            to.set("Content-Type", ct);
        }
        to.body = from.body.clone();
    }
}

pub(super) fn copy_relayed(from: &Message, to: &mut Message) {
    for h in RELAYED_HEADERS {
        for v in from.headers_named(h) {
            to.push(h, v);
        }
    }
    to.body = from.body.clone();
}
