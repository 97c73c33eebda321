//! The outbound leg: one attempt per route of the plan (RFC 3261 §16.6-like serial forking done
//! as a B2BUA), failover on a final failure, a transport failure or silence for `route_timeout`,
//! CANCEL of a ringing leg, and the late 2xx of an abandoned attempt ACKed and hung up. When
//! the last route of the plan has failed, `retry.rs` decides: the plan again, or 503.

use super::*;
use crate::sip::{digest, session_timer};

impl Engine {
    pub(super) fn start_attempt(&mut self, call_ref: &str, now: Instant) {
        let Some(mut call) = self.calls.live.remove(call_ref) else { return };
        if call.retry.first_attempt_at.is_none() {
            call.retry.first_attempt_at = Some(now);
            call.retry.round = 1;
        }
        loop {
            let attempt = call.next_attempt;
            let mut route = None;
            // The target of this attempt: a callback target, or the next route of the plan.
            let (peer, ruri_host, route_name, kind, presented) = if let Some((peer, uri)) = call.callback_target.clone()
            {
                if attempt > 0 {
                    break self.fail_call(call, now);
                }
                let host = Uri::parse(&uri)
                    .map(|u| format!("{}{}", u.host, u.port.map(|p| format!(":{p}")).unwrap_or_default()))
                    .unwrap_or_default();
                let user = Uri::parse(&uri).ok().and_then(|u| u.user).unwrap_or_default();
                (peer, (host, Some(user)), "callback".to_string(), RouteKind::Callback, call.caller.number.clone())
            } else {
                let Some(&idx) = call.plan.get(call.step) else {
                    break self.plan_exhausted(call, now);
                };
                route = Some(idx);
                // RFC 3263 §4.3: each target of the route in turn, then the next route.
                let peers = self.route_peers(idx);
                let Some(&peer) = peers.get(call.target.min(peers.len().saturating_sub(1))) else {
                    let reason = format!("route {}: {}", self.policies.routes[idx].name, self.unresolved_reason(idx));
                    call.step += 1;
                    call.target = 0;
                    call.next_attempt += 1;
                    self.stats.failovers += 1;
                    Self::emit_into(&mut self.out, &mut call, CallEventKind::RouteFailed { reason }, self.now.wall);
                    continue;
                };
                call.targets_here = peers.len();
                let host = self.route_host(idx);
                let r = &self.policies.routes[idx];
                let (kind, presented) = match r.kind {
                    RouteKindConfig::SipTrunk => (RouteKind::SipTrunk, call.callback_number.clone()),
                    RouteKindConfig::ElinGateway => {
                        let elins = call.location.erl.as_ref().map(|e| e.elins.clone()).unwrap_or_default();
                        let chosen = match &call.elin {
                            ElinHold::Claimed(e) if elins.contains(e) => Some(e.clone()),
                            // Several nodes: the store gives the ELIN (no other node's caller
                            // holds it), before the INVITE; the call waits for its answer.
                            ElinHold::Unasked if self.callbacks.claim && !elins.is_empty() => {
                                let candidates: Vec<String> = self
                                    .callbacks
                                    .elins
                                    .preference(&elins, &call.call_ref, now)
                                    .into_iter()
                                    .map(String::from)
                                    .collect();
                                let ttl = self.callbacks.elins.ttl();
                                let mapping = SharedElin {
                                    elin: candidates[0].clone(),
                                    call_ref: call.call_ref.clone(),
                                    caller_number: call.caller.number.clone(),
                                    caller_display: call.caller.display_name.clone(),
                                    caller_peer: call.a.peer,
                                    caller_reconnect: reconnect_to(&call.a),
                                    expires: self.now.wall
                                        + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
                                };
                                self.out.store_io.push_back(Output::ClaimElin(ElinClaim { candidates, mapping }));
                                call.elin = ElinHold::Claiming;
                                self.calls.live.insert(call.call_ref.clone(), call);
                                return;
                            }
                            // (An attempt while the claim is out, which nothing starts: the
                            // late answer must not start another.)
                            ElinHold::Claiming => {
                                call.elin = ElinHold::Local;
                                self.callbacks.elins.pick(&elins, &call.call_ref, now).map(String::from)
                            }
                            _ => self.callbacks.elins.pick(&elins, &call.call_ref, now).map(String::from),
                        };
                        match chosen {
                            Some(e) => (RouteKind::ElinGateway, e),
                            None => {
                                call.route_info = Some(RouteInfo {
                                    name: r.name.clone(),
                                    kind: RouteKind::ElinGateway,
                                    target: peer.to_string(),
                                    attempt: attempt as u32,
                                    presented_number: String::new(),
                                });
                                let name = r.name.clone();
                                call.next_attempt += 1;
                                call.step += 1;
                                call.target = 0;
                                self.stats.failovers += 1;
                                Self::emit_into(
                                    &mut self.out,
                                    &mut call,
                                    CallEventKind::RouteFailed {
                                        reason: format!("route {name}: the location has no ELIN"),
                                    },
                                    self.now.wall,
                                );
                                continue;
                            }
                        }
                    }
                };
                (peer, (host, None), r.name.clone(), kind, presented)
            };
            let (host, user) = ruri_host;
            // Anchored: the far end gets sosdesk's own offer; else the caller's, as it came.
            let sdp = match call.media.as_mut() {
                Some(m) => Some(m.far_offer()),
                None => call.a_offer.clone(),
            };
            let b = self.build_outbound_invite(
                &call,
                attempt,
                peer,
                &host,
                user.as_deref(),
                &presented,
                kind,
                sdp.as_ref(),
            );
            if kind == RouteKind::ElinGateway {
                let reconnect = reconnect_to(&call.a);
                self.callbacks.elins.insert(
                    &presented,
                    ElinMapping {
                        call_ref: call.call_ref.clone(),
                        caller_number: call.caller.number.clone(),
                        caller_display: call.caller.display_name.clone(),
                        caller_peer: call.a.peer,
                        caller_reconnect: reconnect.clone(),
                        expires: now,
                    },
                    now,
                );
                // A claimed ELIN's mapping is in the store already.
                if self.callbacks.shared && !matches!(call.elin, ElinHold::Claimed(_)) {
                    let ttl = self.callbacks.elins.ttl();
                    self.out.store_io.push_back(Output::ElinMapped(SharedElin {
                        elin: presented.clone(),
                        call_ref: call.call_ref.clone(),
                        caller_number: call.caller.number.clone(),
                        caller_display: call.caller.display_name.clone(),
                        caller_peer: call.a.peer,
                        caller_reconnect: reconnect,
                        expires: self.now.wall + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
                    }));
                }
            }
            let key = self.tx.send_request(&b.invite, peer, now);
            self.calls.client_txn.insert(key.clone(), call.call_ref.clone());
            self.calls.by_call_id.insert(b.dialog.call_id.clone(), (call.call_ref.clone(), Side::B));
            call.route_info = Some(RouteInfo {
                name: route_name,
                kind,
                target: peer.to_string(),
                attempt: attempt as u32,
                presented_number: presented,
            });
            call.b = Some(BLeg { client_key: key, route, ..b });
            call.kind = kind;
            self.calls.timers.insert((
                now + self.route_timeout,
                call.call_ref.clone(),
                CallTimer::RouteResponse(attempt),
            ));
            Self::emit_into(&mut self.out, &mut call, CallEventKind::Routed, self.now.wall);
            self.start_auto_conference(&mut call, attempt, now);
            self.calls.live.insert(call.call_ref.clone(), call);
            break;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn build_outbound_invite(
        &self,
        call: &Call,
        attempt: usize,
        peer: Peer,
        host: &str,
        user: Option<&str>,
        presented: &str,
        kind: RouteKind,
        sdp: Option<&Bytes>,
    ) -> BLeg {
        let t = peer.transport;
        let call_id = ids::new_call_id(&self.local.host);
        let tag = ids::new_tag();
        let target_user = user.unwrap_or(&call.normalized);
        let user_phone = if kind == RouteKind::Callback { "" } else { ";user=phone" };
        let ruri = format!("sip:{target_user}@{host}{user_phone}");
        let mut m = Message::request("INVITE", &ruri);
        m.push("Via", self.local.via(t, &ids::new_branch()));
        m.push("Max-Forwards", "70");
        let display = call.caller.display_name.as_deref().map(|d| format!("{} ", quote_display(d))).unwrap_or_default();
        let presented_user = if presented.is_empty() { "anonymous" } else { presented };
        let local = format!("{display}<sip:{presented_user}@{}>;tag={tag}", self.local.host);
        let remote = format!("<sip:{target_user}@{host}>");
        m.push("From", local.clone());
        m.push("To", remote.clone());
        m.push("Call-ID", call_id.clone());
        m.push("CSeq", "1 INVITE");
        m.push("Contact", self.local.contact(t));
        if !presented.is_empty() {
            // RFC 3325 §9.1: the callback number (or, for an ELIN gateway, the ELIN), asserted
            // by sosdesk towards a trusted provider.
            m.push("P-Asserted-Identity", format!("{display}<sip:{presented}@{};user=phone>", self.local.host));
        }
        if kind != RouteKind::Callback {
            // RFC 3261 §20.26.
            m.push("Priority", "emergency");
        }
        m.push("Allow", ALLOW);
        match (&call.pidf, kind) {
            (Some(pidf), RouteKind::SipTrunk | RouteKind::ElinGateway) => {
                // RFC 6442 §4.1: location by value, referenced by a cid: URI; routing may use it.
                let mut geo = vec![format!("<cid:{}>", call.cid)];
                geo.extend(call.location_refs.iter().map(|r| format!("<{r}>")));
                m.push("Geolocation", geo.join(", "));
                m.push("Geolocation-Routing", "yes");
                let (ct, b) = body::build_multipart(sdp, pidf, &call.cid);
                m.push("Content-Type", ct);
                m.body = b;
            }
            _ => {
                if !call.location_refs.is_empty() && kind != RouteKind::Callback {
                    m.push(
                        "Geolocation",
                        call.location_refs.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(", "),
                    );
                    m.push("Geolocation-Routing", "yes");
                }
                if let Some(sdp) = sdp {
                    m.push("Content-Type", "application/sdp");
                    m.body = sdp.clone();
                }
            }
        }
        BLeg {
            attempt,
            dialog: Dialog::outbound(call_id, local, remote, ruri, peer),
            invite: m,
            client_key: String::new(),
            responded: false,
            provisional: false,
            ack: None,
            route: None,
            challenged: false,
            stale_answered: false,
        }
    }

    /// The current attempt failed: record it, forget its leg, try the next target of the route
    /// (`next_target`: no answer, unreachable, 503 — RFC 3263 §4.3) or else the next route.
    pub(super) fn fail_attempt(
        &mut self,
        call_ref: &str,
        attempt: usize,
        reason: String,
        next_target: bool,
        now: Instant,
    ) {
        let Some(call) = self.calls.live.get_mut(call_ref) else { return };
        let Some(b) = &call.b else { return };
        if b.attempt != attempt || call.state != CallState::Routing {
            return;
        }
        let b = call.b.take();
        if let Some(b) = b {
            // A ringing leg keeps its INVITE transaction so that it ACKs the 487 the CANCEL
            // brings (§17.1.1.3); a silent one is abandoned (no more retransmissions). Either
            // way its responses no longer reach this call.
            if !b.provisional {
                self.tx.abandon(&b.client_key);
            }
            self.calls.client_txn.remove(&b.client_key);
            self.calls.by_call_id.remove(&b.dialog.call_id);
            if b.provisional {
                // Stop the far end ringing before the next route takes over (RFC 3261 §9.1).
                let cancel = cancel_for(&b.invite);
                self.tx.send_request(&cancel, b.dialog.peer, now);
            }
            self.calls
                .abandoned
                .insert(b.dialog.call_id.clone(), Abandoned { peer: b.dialog.peer, expires: now + ABANDON_FOR });
            self.calls.abandoned_order.push_back(b.dialog.call_id);
        }
        self.stats.failovers += 1;
        call.next_attempt = attempt + 1;
        if next_target && call.callback_target.is_none() && call.target + 1 < call.targets_here {
            call.target += 1;
        } else {
            call.step += 1;
            call.target = 0;
        }
        Self::emit_into(&mut self.out, call, CallEventKind::RouteFailed { reason }, self.now.wall);
        self.start_attempt(call_ref, now);
    }

    pub(super) fn fail_call(&mut self, mut call: Call, now: Instant) {
        // Every route was tried (in every round the retry window allowed). The caller hears a
        // clear failure; the PBX may have its own alternative route (503 invites exactly that,
        // RFC 3261 §21.5.4).
        self.stats.failed += 1;
        let tried = call.next_attempt;
        let reason = if call.retry.round <= 1 {
            format!("all {tried} route(s) failed")
        } else {
            let secs = call.retry.first_attempt_at.map(|t| now.saturating_duration_since(t).as_secs()).unwrap_or(0);
            let (routes, rounds) = (call.plan.len(), call.retry.round);
            format!("all {routes} route(s) failed in each of {rounds} rounds ({tried} attempts over {secs} s)")
        };
        tracing::error!(call = %call.call_ref, dialed = %call.dialed, "{reason}");
        let mut r = call.a_invite.response(503, "Service Unavailable", Some(tag_of(&call.a.local)));
        r.push("Warning", format!("399 sosdesk \"{reason}\""));
        self.tx.respond(&call.a_invite_key, &r, self.now.mono);
        Self::emit_into(&mut self.out, &mut call, CallEventKind::Failed { status: 503, reason }, self.now.wall);
        self.forget_call(call);
    }

    pub(super) fn on_route_timeout(&mut self, call_ref: &str, attempt: usize, now: Instant) {
        // Only the same attempt, still silent, is failed over; a stale timer (the attempt
        // responded, moved on, or the call ended) does nothing.
        let silent = self
            .calls
            .live
            .get(call_ref)
            .and_then(|c| c.b.as_ref())
            .is_some_and(|b| b.attempt == attempt && !b.responded);
        if silent {
            let ms = self.route_timeout.as_millis();
            self.fail_attempt(call_ref, attempt, format!("no response within {ms} ms"), true, now);
        }
    }

    pub(super) fn on_client_timeout(&mut self, key: &str, now: Instant) {
        if self.notifier.owns(key) {
            self.notifier.on_transaction_failed(key, "no final response (Timer F)", now);
            self.drain_notify();
            return;
        }
        let Some(call_ref) = self.calls.client_txn.remove(key) else { return };
        let attempt = self
            .calls
            .live
            .get(&call_ref)
            .and_then(|c| c.b.as_ref())
            .filter(|b| b.client_key == key)
            .map(|b| b.attempt);
        if let Some(attempt) = attempt {
            self.fail_attempt(&call_ref, attempt, "no final response (Timer B)".into(), true, now);
        } else if let Some(mut call) = self.calls.live.remove(&call_ref) {
            // A relayed request timed out: answer its originator.
            if let Some(relay) = call.relays.remove(key) {
                let r = relay.request.response(408, "Request Timeout", None);
                self.tx.respond(&relay.server_key, &r, now);
            }
            if call.media.as_ref().is_some_and(|m| m.desk_by_invite(key).is_some()) {
                self.auto_conference_failed(&mut call, key, "no final response (Timer B)".into());
            }
            self.calls.live.insert(call_ref, call);
        }
    }

    /// Handle a response to the current outbound INVITE. Returns the attempt to fail over from
    /// (and why) when it was a final failure; the caller does that once the call is back in
    /// the map.
    pub(super) fn on_b_invite_response(
        &mut self,
        call: &mut Call,
        msg: Message,
        retransmission: bool,
        now: Instant,
    ) -> Option<(usize, String)> {
        let status = msg.status().unwrap_or(0);
        let b = call.b.as_mut()?;
        // Any response, even 100, shows the route is alive: its route timer (still in the set)
        // will find `responded` and do nothing.
        b.responded = true;
        b.dialog.learn_remote_tag(&msg);
        match status {
            100 => {}
            101..=199 => {
                b.provisional = true;
                if status == 180 || status == 183 {
                    let mut r = call.a_invite.response(status, msg.status_reason(), Some(tag_of(&call.a.local)));
                    r.push("Contact", self.local.contact(call.a.peer.transport));
                    if call.media.is_some() {
                        self.anchored_response_body(call, &msg, &mut r, false);
                    } else {
                        copy_body(&msg, &mut r);
                    }
                    self.tx.respond(&call.a_invite_key, &r, now);
                    call.retry.provisional_sent(now);
                    if call.ringing_sent.insert(status) {
                        Self::emit_into(&mut self.out, call, CallEventKind::Ringing { status }, self.now.wall);
                    }
                }
            }
            200..=299 => {
                if retransmission {
                    if let Some(ack) = b.ack.clone() {
                        self.tx.send_ack(&ack, b.dialog.peer);
                    }
                    return None;
                }
                b.dialog.confirm(&msg);
                call.state = CallState::Answered;
                if call.a_offer.is_some() || call.media.is_some() {
                    // The INVITE's own CSeq (RFC 3261 §13.2.2.4): 2 after a digest challenge.
                    let cseq = call.b.as_ref().and_then(|b| b.invite.cseq()).map(|c| c.0).unwrap_or(1);
                    let ack = self.in_dialog_request(call, Side::B, "ACK", Some(cseq));
                    if let Some(b) = call.b.as_mut() {
                        self.tx.send_ack(&ack, b.dialog.peer);
                        b.ack = Some(ack);
                    }
                } else {
                    call.await_a_ack = true;
                }
                let mut r = call.a_invite.response(status, msg.status_reason(), Some(tag_of(&call.a.local)));
                r.push("Contact", self.local.contact(call.a.peer.transport));
                r.push("Allow", ALLOW);
                // Only when sosdesk answers the caller's refreshes itself (anchored media): relayed
                // to a provider that never agreed to session timers they could fail the call.
                if call.media.is_some() {
                    for (name, value) in session_timer::answer_headers(&call.a_invite) {
                        r.push(name, value);
                    }
                }
                if call.media.is_some() {
                    self.anchored_response_body(call, &msg, &mut r, true);
                } else {
                    copy_body(&msg, &mut r);
                }
                self.tx.respond(&call.a_invite_key, &r, now);
                Self::emit_into(&mut self.out, call, CallEventKind::Answered, self.now.wall);
            }
            401 | 407 => {
                let attempt = b.attempt;
                b.provisional = false;
                if let Err(reason) = self.answer_route_challenge(call, &msg, status, now) {
                    return Some((attempt, reason));
                }
            }
            _ => {
                // The final response completed the INVITE: nothing is ringing any more, so
                // failing over sends no CANCEL (the transaction already ACKed it).
                b.provisional = false;
                return Some((b.attempt, format!("{status} {}", msg.status_reason())));
            }
        }
        None
    }

    /// A 401/407 to the INVITE of a route with credentials: the same INVITE again at once
    /// (next CSeq, new branch, same Call-ID and From tag: RFC 3261 §8.1.3.5, §22.2) with the
    /// digest answer — SHA-256 where offered (RFC 8760) — once. A second challenge, a route
    /// without credentials, or no challenge sosdesk can answer fails the route. The route's
    /// timer still counts from the first INVITE: the challenge never stretches the failover.
    fn answer_route_challenge(
        &mut self,
        call: &mut Call,
        msg: &Message,
        status: u16,
        now: Instant,
    ) -> Result<(), String> {
        let reason = format!("{status} {}", msg.status_reason());
        let Some(b) = call.b.as_mut() else { return Err(reason) };
        let Some(route) = b.route.and_then(|i| self.policies.routes.get(i)) else { return Err(reason) };
        let (Some(user), Some(crate::config::Secret(password))) = (&route.username, &route.password) else {
            return Err(format!("{reason} (the route has no credentials)"));
        };
        // A second challenge means wrong credentials, unless it only says the nonce went stale
        // (RFC 7616 §3.3): that one is answered once more.
        let stale = msg.headers_named(if status == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" }).any(|c| {
            digest::parse_params(c).is_some_and(|p| p.get("stale").is_some_and(|v| v.eq_ignore_ascii_case("true")))
        });
        let one_more = stale && !b.stale_answered;
        if b.challenged && !one_more {
            return Err(format!("{reason} again: the provider refused the route's credentials"));
        }
        b.stale_answered |= b.challenged;
        let (challenge, answer) = if status == 401 {
            ("WWW-Authenticate", "Authorization")
        } else {
            ("Proxy-Authenticate", "Proxy-Authorization")
        };
        let uri = b.invite.request_uri().unwrap_or_default().to_string();
        // One challenge per header line (a value holds commas of its own: not split).
        let challenges: Vec<String> = msg.headers_named(challenge).map(str::to_string).collect();
        let Some(credentials) =
            digest::answer_best(&challenges, "INVITE", &uri, user, password, route.realm.as_deref())
        else {
            let realm = route.realm.as_deref().map(|r| format!(" for realm {r:?}")).unwrap_or_default();
            return Err(format!("{reason}: no digest challenge sosdesk can answer{realm}"));
        };
        let mut invite = b.invite.clone();
        invite.set("Via", self.local.via(b.dialog.peer.transport, &ids::new_branch()));
        b.dialog.local_cseq += 1;
        invite.set("CSeq", format!("{} INVITE", b.dialog.local_cseq));
        invite.push(answer, credentials);
        // The challenge's To tag was no dialog (§12.1.2): the answer to this INVITE brings it.
        b.dialog.remote_tag = None;
        b.dialog.remote = invite.header("To").unwrap_or_default().to_string();
        let key = self.tx.send_request(&invite, b.dialog.peer, now);
        self.calls.client_txn.remove(&b.client_key);
        self.calls.client_txn.insert(key.clone(), call.call_ref.clone());
        tracing::info!(call = %call.call_ref, route = %route.name, status, "route challenged: INVITE re-sent with credentials");
        b.client_key = key;
        b.invite = invite;
        b.challenged = true;
        b.responded = false;
        // The route's timer again for the answered INVITE (a 100 before the challenge used the
        // first one up), bounded: a route is challenged at most twice.
        let attempt = b.attempt;
        self.calls.timers.insert((now + self.route_timeout, call.call_ref.clone(), CallTimer::RouteResponse(attempt)));
        Ok(())
    }

    pub(super) fn on_stray_response(&mut self, msg: Message) {
        // A 2xx for an INVITE leg we abandoned: ACK it, then hang it up (RFC 3261 §13.2.2.4
        // requires the ACK; the BYE ends a session no one is on).
        let (Some(status), Some(call_id)) = (msg.status(), msg.call_id().map(str::to_string)) else { return };
        if !(200..300).contains(&status) || msg.method() != "INVITE" {
            return;
        }
        let Some(ab) = self.calls.abandoned.get(&call_id) else { return };
        let peer = ab.peer;
        let target = if msg.contact_uri().is_some() { contact_uri_text(&msg) } else { return };
        let cseq = msg.cseq().map(|c| c.0).unwrap_or(1);
        let mut rr = msg.header_values("Record-Route");
        rr.reverse();
        for (method, n) in [("ACK", cseq), ("BYE", cseq + 1)] {
            let mut m = Message::request(method, &target);
            m.push("Via", self.local.via(peer.transport, &ids::new_branch()));
            m.push("Max-Forwards", "70");
            for r in &rr {
                m.push("Route", r.clone());
            }
            m.push("From", msg.header("From").unwrap_or(""));
            m.push("To", msg.header("To").unwrap_or(""));
            m.push("Call-ID", call_id.clone());
            m.push("CSeq", format!("{n} {method}"));
            if method == "ACK" {
                self.tx.send_ack(&m, peer);
            } else {
                m.push("Reason", "SIP;cause=200;text=\"no longer wanted: the call ended or went elsewhere\"");
                self.tx.send_request(&m, peer, self.now.mono);
            }
        }
        tracing::info!(%call_id, "late answer from an abandoned route: ACKed and ended");
    }
}

/// §9.1: CANCEL has the INVITE's Request-URI, Call-ID, To, From, CSeq number and top Via.
pub(super) fn cancel_for(invite: &Message) -> Message {
    let mut c = Message::request("CANCEL", invite.request_uri().unwrap_or(""));
    if let Some(v) = invite.header("Via") {
        c.push("Via", v);
    }
    c.push("Max-Forwards", "70");
    for r in invite.headers_named("Route") {
        c.push("Route", r);
    }
    for h in ["From", "To", "Call-ID"] {
        c.push(h, invite.header(h).unwrap_or(""));
    }
    c.push("CSeq", format!("{} CANCEL", invite.cseq().map(|c| c.0).unwrap_or(1)));
    c
}
