//! A new INVITE from outside a dialog: a desk joining a call (handed to `desk_legs`), a PSAP
//! calling back an ELIN, an emergency call (policy → location → route plan → first attempt),
//! or anything else (404: sosdesk only carries emergency calls).

use super::*;
use crate::location::resolve::{resolve, CallerSide};

impl Engine {
    pub(super) fn caller_of(msg: &Message, peer: Peer) -> Caller {
        let from = msg.from();
        let pai =
            msg.header_values("P-Asserted-Identity").into_iter().find_map(|v| crate::sip::NameAddr::parse(&v).ok());
        let number = pai
            .as_ref()
            .and_then(|p| p.parsed_uri())
            .and_then(|u| u.number())
            .or_else(|| from.as_ref().and_then(|f| f.parsed_uri()).and_then(|u| u.number()))
            .unwrap_or_default();
        let display =
            from.as_ref().and_then(|f| f.display.clone()).or_else(|| pai.as_ref().and_then(|p| p.display.clone()));
        Caller {
            number,
            display_name: display.filter(|d| !d.is_empty()),
            uri: from.map(|f| f.uri).unwrap_or_default(),
            source: peer.to_string(),
        }
    }

    /// The device's addresses as the INVITE shows them, most telling first: the SDP connection
    /// address (the phone itself, even behind a PBX that does not anchor media), the Contact
    /// and top Via hosts, then the address the packet came from.
    pub(super) fn device_addresses(msg: &Message, sdp: Option<&[u8]>, peer: Peer) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = sdp.map(crate::sip::body::sdp_connection_addresses).unwrap_or_default();
        let host_ip = |h: &str| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let contact = msg.contact_uri().and_then(|u| host_ip(&u.host));
        let via = msg.top_via().and_then(|v| host_ip(&v.host));
        for ip in [contact, via, Some(peer.addr.ip())].into_iter().flatten() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        // 0.0.0.0 in SDP means "on hold", not a place.
        ips.retain(|ip| !ip.is_unspecified());
        ips
    }

    pub(super) fn on_invite(&mut self, key: ServerKey, msg: Message, peer: Peer, now: Instant) {
        let mut ib = body::parse_invite_body(&msg);
        let ruri = msg.request_uri().unwrap_or("").to_string();
        if let Some(call_ref) = conference_target(&ruri) {
            // A desk joining must offer what sosdesk can answer.
            if let Some(ct) = &ib.unsupported {
                // §21.4.13: tell the caller what we take.
                tracing::info!(%peer, content_type = %ct, "INVITE body type not supported");
                let accept = ("Accept", "application/sdp, multipart/mixed".into());
                self.refuse_request(&key, &msg, peer, 415, "unsupported body", &[accept]);
                return;
            }
            if !crate::sip::body::accepts_sdp(msg.header("Accept")) {
                // §21.4.7: we can only answer with SDP. RFC 4475 §3.3.15 also allows a Warning.
                let warning = ("Warning", "399 sosdesk \"only application/sdp answers\"".into());
                self.refuse_request(&key, &msg, peer, 406, "does not accept SDP", &[warning]);
                return;
            }
            self.on_desk_join(key, msg, peer, call_ref, now);
            return;
        }
        // An emergency call (or a PSAP's callback) is never refused for its body: what sosdesk
        // cannot read is left out (the call goes on as a late offer) and said on the alert, and
        // the answer is SDP whatever the caller's Accept says.
        if let Some(ct) = ib.unsupported.take() {
            ib.warnings.push(format!("the INVITE's body ({ct}) is not SDP or PIDF-LO: routed without it"));
        }
        if !crate::sip::body::accepts_sdp(msg.header("Accept")) {
            ib.warnings.push("the caller's Accept leaves out SDP: answered with SDP all the same".into());
        }
        let (policy, site) = self.policies.select(peer.addr.ip());
        let (policy_name, site_name) = (policy.name.clone(), site.map(|s| s.name.clone()));
        let number = Uri::parse(&ruri).ok().and_then(|u| u.number());
        if let Some(n) = number
            .as_deref()
            .filter(|n| self.callbacks.elins.lookup(n, now).is_some() || self.callbacks.known_elins.contains(*n))
        {
            let n = n.to_string();
            self.on_callback(key, msg, peer, n, policy_name, site_name, ib, now, false);
            return;
        }
        let Some(class) = classify(&ruri, policy) else {
            self.reject_non_emergency(key, msg, peer);
            return;
        };
        self.stats.emergency_calls += 1;
        let caller = Self::caller_of(&msg, peer);
        // Where is the caller? `location::resolve` decides, from what the INVITE shows.
        let device_ips = Self::device_addresses(&msg, ib.sdp.as_deref(), peer);
        let entity =
            format!("sip:{}@{}", if caller.number.is_empty() { "anonymous" } else { &caller.number }, self.local.host);
        // Whose user-entered location may apply: the caller as the INVITE names it.
        let owner = crate::location::user_entered::owner_key(&caller.number).unwrap_or_default();
        let resolved = resolve(
            CallerSide {
                pidf: ib.pidf.as_ref(),
                device_ips: &device_ips,
                warnings: ib.warnings.clone(),
                site_erl: site.and_then(|s| s.erl.as_ref()),
                default_erl: policy.default_erl.as_ref(),
                entity: &entity,
                owner: &owner,
            },
            &self.locators,
            self.now.wall,
        );
        let (location, pidf) = (resolved.location, resolved.pidf);
        // For the unlocated report: what the wiremap was asked with, and what came of it.
        self.out.sightings.push_back(crate::location::unlocated::Sighting {
            at: self.now.wall,
            asked: crate::location::unlocated::Asked::Call,
            device: crate::location::DeviceAttachment { ip: device_ips.first().copied(), ..Default::default() },
            source: location.source,
        });
        // The policy decides the order of routes (ECRC first without a location).
        let mut plan = policy.route_plan(location.is_known());
        // Routes that fail their health probes go last within their tier (the ECRC stays first
        // for a call without location): tried, never left out.
        let first_tier = if location.is_known() { policy.routes.len() } else { policy.no_location_routes.len() };
        self.health.order(&mut plan, first_tier);
        let (conference_mode, notifies) = (policy.conference_mode, !policy.notify.is_empty());
        let media = self.anchor(ib.sdp.as_deref(), conference_mode);
        let mut call = self.new_call(
            key,
            msg,
            peer,
            caller,
            class,
            policy_name,
            site_name,
            location,
            pidf,
            ib,
            plan,
            RouteKind::SipTrunk,
        );
        let call_ref = call.call_ref.clone();
        if let Some(m) = media {
            call.media = Some(m);
            self.out.media.push_back(MediaAction::Open { call_ref: call_ref.clone() });
        }
        self.calls.live.insert(call_ref.clone(), call);
        self.emit(&call_ref, CallEventKind::Detected);
        // The notification IM (issue 6) is built once the outbound INVITE has been sent.
        let detected = if notifies { self.out.events.back().cloned() } else { None };
        self.start_attempt(&call_ref, now);
        self.out.deferred_notify.extend(detected);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_call(
        &mut self,
        key: ServerKey,
        msg: Message,
        peer: Peer,
        caller: Caller,
        class: Classified,
        policy: String,
        site: Option<String>,
        location: LocationSnapshot,
        pidf: Option<Bytes>,
        ib: InviteBody,
        plan: Vec<usize>,
        kind: RouteKind,
    ) -> Call {
        let call_ref = ids::new_call_ref();
        let local_tag = ids::new_tag();
        let a = Dialog::inbound(&msg, &local_tag, 1000, peer);
        self.calls.by_call_id.insert(a.call_id.clone(), (call_ref.clone(), Side::A));
        self.calls.server_txn.insert(key.clone(), call_ref.clone());
        let callback_number = caller.number.clone();
        Call {
            call_ref,
            seq: 0,
            caller,
            dialed: class.dialed,
            normalized: class.normalized,
            test: class.test,
            policy,
            site,
            location,
            pidf,
            location_refs: ib.location_refs,
            cid: format!("loc-{}@{}", ids::new_tag(), self.local.host),
            route_info: None,
            plan,
            next_attempt: 0,
            step: 0,
            target: 0,
            targets_here: 0,
            retry: Retry::default(),
            kind,
            callback_target: None,
            elin: ElinHold::Unasked,
            callback_number,
            a,
            a_invite: msg,
            a_invite_key: key,
            a_offer: ib.sdp,
            b: None,
            state: CallState::Routing,
            await_a_ack: false,
            ringing_sent: HashSet::new(),
            relays: HashMap::new(),
            pending_reinvite_ack: None,
            relay_acks: HashMap::new(),
            media: None,
        }
    }

    pub(super) fn reject_non_emergency(&mut self, key: ServerKey, msg: Message, peer: Peer) {
        // Documented behaviour: sosdesk only carries emergency calls. 404 tells a PBX that this
        // destination does not exist here, so it routes ordinary calls elsewhere. Counted in the
        // source's refusal record, not audited one by one: anyone can send thousands a second.
        self.stats.rejected += 1;
        let reason = "not an emergency number for the caller's policy";
        self.refuse_request(
            &key,
            &msg,
            peer,
            404,
            "not an emergency number",
            &[("Warning", format!("399 sosdesk \"{reason}\""))],
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_callback(
        &mut self,
        key: ServerKey,
        msg: Message,
        peer: Peer,
        elin: String,
        policy: String,
        site: Option<String>,
        ib: InviteBody,
        now: Instant,
        store_asked: bool,
    ) {
        let mapping = self.callbacks.elins.lookup(&elin, now).cloned();
        // No mapping here: with several nodes the call may have gone out through another one,
        // which wrote its mapping to the store. The callback waits for the shell's look-up
        // (bounded by it); a second callback to the same ELIN meanwhile waits for the same one.
        if mapping.is_none() && self.callbacks.shared && !store_asked {
            let waiting = self.callbacks.waiting.entry(elin.clone()).or_default();
            if waiting.is_empty() {
                self.out.store_io.push_back(Output::LookupElin(elin.clone()));
            }
            waiting.push(WaitingCallback { key, msg, peer, policy, site, ib });
            return;
        }
        let (target, to_original, display) = match &mapping {
            Some(m) => {
                // Reached again at its next hop, which named a host: the Request-URI names it too,
                // and over TLS its certificate must carry it.
                let named = match &m.caller_reconnect {
                    Some(r) if r.peer == m.caller_peer => r.name.clone(),
                    _ => None,
                };
                if let Some(name) = named.clone().filter(|_| m.caller_peer.transport == Transport::Tls) {
                    self.out.tls_names.get_mut().push_back((m.caller_peer.addr, name));
                }
                let host = match (named, m.caller_peer.addr) {
                    (Some(name), _) => name,
                    (None, SocketAddr::V6(a)) => format!("[{}]", a.ip()),
                    (None, a) => a.ip().to_string(),
                };
                let uri = format!("sip:{}@{}:{}", m.caller_number, host, m.caller_peer.addr.port());
                (Some((m.caller_peer, uri)), true, m.caller_display.clone())
            }
            // The fallback by name: where it last resolved to (none yet: as if unset, said so).
            None => match &self.callbacks.fallback {
                Some((t, uri)) => match self.resolved_name(t) {
                    Some(peer) => (Some((peer, uri.clone())), false, None),
                    None => {
                        tracing::warn!(%elin, fallback = %t, "callback_fallback has not resolved");
                        (None, false, None)
                    }
                },
                None => (None, false, None),
            },
        };
        let Some((tpeer, turi)) = target else {
            tracing::warn!(%elin, "callback to an ELIN with no live mapping and no callback_fallback configured");
            self.respond(&key, &msg, 480, &[("Warning", "399 sosdesk \"no callback mapping for this ELIN\"".into())]);
            return;
        };
        let caller = Self::caller_of(&msg, peer);
        let class = Classified { dialed: elin.clone(), normalized: elin.clone(), test: false };
        let mut call = self.new_call(
            key,
            msg,
            peer,
            caller,
            class,
            policy,
            site,
            LocationSnapshot::none(),
            None,
            ib,
            Vec::new(),
            RouteKind::Callback,
        );
        call.callback_target = Some((tpeer, turi.clone()));
        if let Some(d) = display {
            // Shown to the desk: who the PSAP is calling back.
            call.location.warnings.push(format!("callback for {d}"));
        }
        let call_ref = call.call_ref.clone();
        self.calls.live.insert(call_ref.clone(), call);
        self.emit(&call_ref, CallEventKind::Callback { elin, to_original, target: turi });
        self.start_attempt(&call_ref, now);
    }
}
