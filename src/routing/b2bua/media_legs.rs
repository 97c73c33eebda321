//! The engine's side of media anchoring and of the security desk's conference legs (issue 5).
//!
//! For an anchored call, each leg has its own offer/answer with sosdesk (RFC 3264): the far end
//! gets sosdesk's offer (PCMU, PCMA, telephone-event) on the first attempt's INVITE; the caller
//! gets sosdesk's answer (or, when its INVITE had no offer, sosdesk's offer in the 2xx and its
//! answer in the ACK). Re-offers on either leg are answered here. The media task of the call
//! (`media::runner`) is told about each leg once its parameters are known.
//!
//! A desk joins with an INVITE to `sip:conf-<call id>@<core>` and digest credentials; a policy's
//! conference URI is called by sosdesk itself when the call is routed. A desk is one more leg of
//! the call's conference: it can leave, the call goes on; if the caller hangs up while a desk is
//! on, desk and operator stay connected (last-party clear).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Instant;

use bytes::Bytes;

use super::{cancel_for, Call, Dialog, Engine, Side, StatusReason, ALLOW};
use crate::config::{ConferenceMode, Config};
use crate::events::{CallEvent, CallEventKind, RouteKind};
use crate::media::runner::{MediaCommand, RtpPorts};
use crate::sip::body::sdp_of;

/// How a join refused for its credentials starts its reason; the client is told only this.
const BAD_CREDENTIALS: &str = "bad credentials";
use crate::media::{AudioSdp, Codec, Direction, LegId, LegParams, LocalSdp, Role};
use crate::sip::digest::{AuthFailure, DigestServer};
use crate::sip::transaction::{ClientKey, Peer, ServerKey};
use crate::sip::{ids, reason_phrase, Message, Uri};

/// Where the engine gets RTP sockets (bound synchronously: a bind is one system call).
pub trait RtpPortSource: Send + Sync {
    /// A bound, non-blocking socket and the address to write into SDP for it.
    fn open(&self) -> io::Result<(StdUdpSocket, SocketAddr)>;
}

impl RtpPortSource for RtpPorts {
    fn open(&self) -> io::Result<(StdUdpSocket, SocketAddr)> {
        RtpPorts::open(self)
    }
}

/// An order for the media task of an anchored call.
#[derive(Debug)]
pub enum MediaAction {
    /// Start the call's media task (and its recording).
    Open {
        call_ref: String,
    },
    Leg {
        call_ref: String,
        cmd: MediaCommand,
    },
    /// The call ended: stop its media and finish its recording.
    Close {
        call_ref: String,
    },
}

const CALLER: LegId = 1;
const FAR_END: LegId = 2;

/// `sip:conf-<call id>@…` → the call id.
pub(super) fn conference_target(ruri: &str) -> Option<String> {
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

/// One leg of an anchored call as the engine sees it.
pub(super) struct MediaLegState {
    id: LegId,
    local: LocalSdp,
    /// Until the leg is handed to the media task.
    socket: Option<StdUdpSocket>,
    params: Option<LegParams>,
}

impl MediaLegState {
    fn new(id: LegId, (socket, addr): (StdUdpSocket, SocketAddr)) -> MediaLegState {
        MediaLegState { id, local: LocalSdp::new(addr), socket: Some(socket), params: None }
    }

    /// Tell the media task: the first time with the socket, later as an update.
    fn configure(&mut self, call_ref: &str, role: Role, params: LegParams, actions: &mut VecDeque<MediaAction>) {
        self.params = Some(params);
        let cmd = match self.socket.take() {
            Some(socket) => MediaCommand::AddLeg { leg: self.id, role, params, socket },
            None => MediaCommand::UpdateLeg { leg: self.id, params },
        };
        actions.push_back(MediaAction::Leg { call_ref: call_ref.to_string(), cmd });
    }

    fn codec(&self) -> Option<Codec> {
        self.params.map(|p| p.codec)
    }
}

/// A security desk on the call: one that joined, or one sosdesk called (auto-conference).
pub(super) struct DeskLeg {
    media: MediaLegState,
    /// The account's name (joined) or the URI (called).
    name: String,
    /// May talk: the policy is two-way and the account may talk.
    may_talk: bool,
    pub(super) dialog: Dialog,
    /// A called desk: the INVITE's client transaction, until it is answered.
    invite: Option<(ClientKey, Message)>,
    answered: bool,
    ack: Option<Message>,
}

/// Media state of an anchored call.
pub(super) struct CallMedia {
    caller: MediaLegState,
    far: MediaLegState,
    desks: Vec<DeskLeg>,
    next_leg: LegId,
    /// The caller's offer, when its INVITE had one.
    caller_offer: Option<AudioSdp>,
    /// What the caller got from sosdesk (the answer, or the offer of a late-offer call): fixed
    /// once sent, so the 18x and the 2xx carry the same description.
    caller_sdp: Option<Bytes>,
    /// Late offer: the caller's answer will come in its ACK.
    caller_answer_pending: bool,
    /// Legs with a sosdesk offer in a re-INVITE's 2xx, waiting for the answer in the ACK.
    reoffer_pending: Vec<Side>,
    pub(super) caller_gone: bool,
    mode: ConferenceMode,
    auto_started: bool,
}

impl CallMedia {
    /// sosdesk's offer to the far end: the caller's preferred law first (no transcoding when
    /// the far end takes it).
    pub(super) fn far_offer(&mut self) -> Bytes {
        let first = self.caller_offer.as_ref().map(|o| o.codecs[0].0).unwrap_or(Codec::Pcmu);
        self.far.local.offer(first, Direction::SendRecv)
    }

    /// A desk is connected to the call.
    pub(super) fn desks_on(&self) -> bool {
        self.desks.iter().any(|d| d.answered)
    }

    pub(super) fn desk(&self, leg: LegId) -> Option<&DeskLeg> {
        self.desks.iter().find(|d| d.media.id == leg)
    }

    pub(super) fn desk_mut(&mut self, leg: LegId) -> Option<&mut DeskLeg> {
        self.desks.iter_mut().find(|d| d.media.id == leg)
    }

    pub(super) fn desk_by_invite(&self, key: &str) -> Option<LegId> {
        self.desks.iter().find(|d| d.invite.as_ref().is_some_and(|(k, _)| k == key)).map(|d| d.media.id)
    }
}

/// Leg parameters from the party's description. `talk`: the party may be heard.
fn params_from(sdp: &AudioSdp, codec: (Codec, u8), telephone_event: bool, talk: bool) -> LegParams {
    LegParams {
        remote: sdp.remote(),
        codec: codec.0,
        payload_type: codec.1,
        telephone_event: if telephone_event { sdp.telephone_event } else { None },
        party_sends: talk && sdp.direction.sends(),
        party_receives: sdp.direction.receives(),
        heard: talk,
    }
}

fn with_sdp(r: &mut Message, sdp: &Bytes) {
    r.set("Content-Type", "application/sdp");
    r.body = sdp.clone();
}

impl Engine {
    /// Media for a new emergency call, or `None` (SDP then passes through): anchoring off, an
    /// offer sosdesk cannot take part in (no G.711), or no RTP port free. The call is routed
    /// either way.
    pub(super) fn anchor(&self, offer: Option<&[u8]>, mode: ConferenceMode) -> Option<CallMedia> {
        let ports = self.rtp.as_ref()?;
        let caller_offer = match offer.map(AudioSdp::parse) {
            None => None,
            Some(Ok(o)) => Some(o),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "caller's SDP cannot be anchored; media passes through");
                return None;
            }
        };
        let (a, b) = match (ports.open(), ports.open()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "no RTP port for an emergency call; media passes through");
                return None;
            }
        };
        Some(CallMedia {
            caller: MediaLegState::new(CALLER, a),
            far: MediaLegState::new(FAR_END, b),
            desks: Vec::new(),
            next_leg: FAR_END + 1,
            caller_offer,
            caller_sdp: None,
            caller_answer_pending: false,
            reoffer_pending: Vec::new(),
            caller_gone: false,
            mode,
            auto_started: false,
        })
    }

    /// A response of the far end to the caller's INVITE (18x or 2xx) becomes `r` for the
    /// caller: the far end's SDP configures its leg; the caller gets sosdesk's description.
    pub(super) fn anchored_response_body(&mut self, call: &mut Call, msg: &Message, r: &mut Message, final_: bool) {
        let call_ref = call.call_ref.clone();
        let Some(m) = call.media.as_mut() else { return };
        if let Some(sdp) = sdp_of(msg) {
            match AudioSdp::parse(&sdp) {
                Ok(answer) => {
                    let params = params_from(&answer, answer.pick(None), true, true);
                    m.far.configure(&call_ref, Role::FarEnd, params, &mut self.media_actions);
                }
                Err(e) => {
                    tracing::warn!(call = %call_ref, error = %e, "far end's SDP answer unusable: no audio from it")
                }
            }
        }
        if let Some(offer) = &m.caller_offer {
            if m.caller_sdp.is_none() && (m.far.params.is_some() || final_) {
                let codec = offer.pick(m.far.codec());
                let answer = m.caller.local.answer(offer, codec, offer.direction.answer());
                let params = params_from(offer, codec, true, true);
                m.caller.configure(&call_ref, Role::Caller, params, &mut self.media_actions);
                m.caller_sdp = Some(answer);
            }
        } else if final_ && m.caller_sdp.is_none() {
            let first = m.far.codec().unwrap_or(Codec::Pcmu);
            m.caller_sdp = Some(m.caller.local.offer(first, Direction::SendRecv));
            m.caller_answer_pending = true;
        }
        r.remove("Content-Type");
        r.body = Bytes::new();
        if let Some(sdp) = &m.caller_sdp {
            with_sdp(r, sdp);
        }
    }

    /// An ACK on an anchored call: the answer to an offer sosdesk made in a 2xx.
    pub(super) fn anchored_ack(&mut self, call: &mut Call, side: Side, msg: &Message) {
        let call_ref = call.call_ref.clone();
        let Some(m) = call.media.as_mut() else { return };
        let waiting = match side {
            Side::A if m.caller_answer_pending => {
                m.caller_answer_pending = false;
                true
            }
            _ => {
                let before = m.reoffer_pending.len();
                m.reoffer_pending.retain(|s| *s != side);
                before != m.reoffer_pending.len()
            }
        };
        if !waiting {
            return;
        }
        let Some(sdp) = sdp_of(msg) else {
            tracing::warn!(call = %call_ref, ?side, "ACK without the SDP answer sosdesk's offer asked for");
            return;
        };
        let (leg, role) = match side {
            Side::A => (&mut m.caller, Role::Caller),
            Side::B => (&mut m.far, Role::FarEnd),
            Side::Desk(_) => return,
        };
        match AudioSdp::parse(&sdp) {
            Ok(answer) => {
                let params = params_from(&answer, answer.pick(None), true, true);
                leg.configure(&call_ref, role, params, &mut self.media_actions);
            }
            Err(e) => tracing::warn!(call = %call_ref, error = %e, "SDP answer in ACK unusable"),
        }
    }

    /// A re-INVITE or UPDATE from caller or far end on an anchored call, answered here.
    pub(super) fn anchored_reoffer(&mut self, call: &mut Call, side: Side, key: ServerKey, msg: Message, now: Instant) {
        let call_ref = call.call_ref.clone();
        let contact = self.local.contact(super::peer_of(call, side).transport);
        let Some(m) = call.media.as_mut() else { return };
        let (leg, role) = match side {
            Side::A => (&mut m.caller, Role::Caller),
            Side::B => (&mut m.far, Role::FarEnd),
            Side::Desk(_) => return,
        };
        let mut r = msg.response(200, "OK", None);
        r.push("Contact", contact);
        match sdp_of(&msg).map(|b| AudioSdp::parse(&b)) {
            Some(Ok(offer)) => {
                let codec = offer.pick(leg.codec());
                let answer = leg.local.answer(&offer, codec, offer.direction.answer());
                leg.configure(&call_ref, role, params_from(&offer, codec, true, true), &mut self.media_actions);
                with_sdp(&mut r, &answer);
            }
            Some(Err(e)) => {
                let mut r = msg.response(488, reason_phrase(488), None);
                r.push("Warning", format!("399 sosdesk \"{e}\""));
                self.tx.respond(&key, &r, now);
                return;
            }
            None if msg.method() == "INVITE" => {
                // An offerless re-INVITE: sosdesk offers, the ACK answers (RFC 3261 §14.2).
                let offer = leg.local.offer(leg.codec().unwrap_or(Codec::Pcmu), Direction::SendRecv);
                m.reoffer_pending.push(side);
                with_sdp(&mut r, &offer);
            }
            None => {}
        }
        self.tx.respond(&key, &r, now);
    }

    /// Last-party clear: the caller is gone, desk and operator go on.
    pub(super) fn caller_left(&mut self, call: &mut Call) {
        if let Some(m) = call.media.as_mut() {
            m.caller_gone = true;
            self.media_actions.push_back(MediaAction::Leg {
                call_ref: call.call_ref.clone(),
                cmd: MediaCommand::RemoveLeg { leg: CALLER },
            });
        }
        Self::emit_into(&mut self.events, call, CallEventKind::PartyLeft { party: "caller".into() });
    }

    // ------------------------------------------------------------------ desks joining

    /// Refuse a desk's join, audited: in the call's own history when the call exists, else as
    /// a rejected request of its own.
    #[allow(clippy::too_many_arguments)]
    fn refuse_join(
        &mut self,
        key: &str,
        msg: &Message,
        peer: Peer,
        call: Option<&mut Call>,
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
        self.tx.respond(key, &r, Instant::now());
        tracing::info!(%peer, desk, status, %reason, "desk join refused");
        match call {
            Some(call) => Self::emit_into(
                &mut self.events,
                call,
                CallEventKind::DeskJoinRefused { desk: desk.to_string(), status, reason },
            ),
            None => {
                let reason = if desk.is_empty() {
                    format!("desk join refused: {reason}")
                } else {
                    format!("desk join by {desk} refused: {reason}")
                };
                let what = msg.request_uri().unwrap_or("").to_string();
                self.events.push_back(CallEvent::refusal(Self::caller_of(msg, peer), what, status, reason));
            }
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
        let accounts = &self.desks.accounts;
        let ruri = msg.request_uri().unwrap_or("");
        let verified = self.desks.digest.verify(&auth, "INVITE", ruri, peer.addr.ip(), |u| {
            accounts.iter().find(|a| a.username == u).map(|a| a.password.as_str())
        });
        let mut call = self.calls.remove(&call_ref);
        let user = match verified {
            Ok(user) => user,
            Err(AuthFailure::Missing) | Err(AuthFailure::Stale) => {
                let stale = matches!(verified, Err(AuthFailure::Stale));
                let challenge = self.desks.digest.challenge(stale, peer.addr.ip());
                let reason = if stale { "credentials expired (stale nonce)" } else { "credentials required" };
                self.refuse_join(
                    &key,
                    &msg,
                    peer,
                    call.as_mut(),
                    "",
                    401,
                    reason.into(),
                    &[("WWW-Authenticate", challenge)],
                );
                if let Some(c) = call {
                    self.calls.insert(call_ref, c);
                }
                return;
            }
            Err(AuthFailure::Invalid(why)) => {
                let who = self.desks.digest.claimed_user(&auth);
                self.refuse_join(&key, &msg, peer, call.as_mut(), &who, 403, format!("{BAD_CREDENTIALS}: {why}"), &[]);
                self.credentials_failed(peer, now);
                if let Some(c) = call {
                    self.calls.insert(call_ref, c);
                }
                return;
            }
        };
        self.credentials_ok(peer);
        // verify() only accepts users it found among the accounts.
        let account = self.desks.accounts.iter().find(|a| a.username == user).cloned().unwrap_or_else(|| {
            crate::config::DeskAccountConfig {
                name: user.clone(),
                username: user,
                password: String::new(),
                talk: false,
            }
        });
        let Some(mut call) = call else {
            self.refuse_join(&key, &msg, peer, None, &account.name, 404, format!("no active call {call_ref}"), &[]);
            return;
        };
        let refused = self.try_join(&key, &msg, peer, &mut call, &account, now);
        if let Err((status, reason)) = refused {
            self.refuse_join(&key, &msg, peer, Some(&mut call), &account.name, status, reason, &[]);
        }
        self.calls.insert(call_ref, call);
    }

    fn try_join(
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
        let talk = offer.direction.sends();
        if talk && m.mode != ConferenceMode::TwoWay {
            return Err((403, "the call's policy allows desks to listen only".into()));
        }
        if talk && !account.talk {
            return Err((403, format!("desk account {} may only listen", account.name)));
        }
        let opened = self
            .rtp
            .as_ref()
            .ok_or((488, "media anchoring is off".to_string()))?
            .open()
            .map_err(|e| (503, format!("no RTP port free: {e}")))?;
        let id = m.next_leg;
        m.next_leg += 1;
        let mut leg = MediaLegState::new(id, opened);
        let codec = offer.pick(m.far.codec().or(m.caller.codec()));
        let answer = leg.local.answer(&offer, codec, offer.direction.answer());
        leg.configure(&call.call_ref, Role::Desk, params_from(&offer, codec, false, talk), &mut self.media_actions);
        let tag = ids::new_tag();
        let dialog = Dialog::inbound(msg, &tag, 1000, peer);
        self.by_call_id.insert(dialog.call_id.clone(), (call.call_ref.clone(), Side::Desk(id)));
        let mut r = msg.response(200, "OK", Some(&tag));
        r.push("Contact", self.local.contact(peer.transport));
        r.push("Allow", ALLOW);
        with_sdp(&mut r, &answer);
        self.tx.respond(key, &r, now);
        m.desks.push(DeskLeg {
            media: leg,
            name: account.name.clone(),
            may_talk: account.talk && m.mode == ConferenceMode::TwoWay,
            dialog,
            invite: None,
            answered: true,
            ack: None,
        });
        let mode = if talk { "talk" } else { "listen" };
        tracing::info!(call = %call.call_ref, desk = %account.name, mode, "desk joined");
        Self::emit_into(
            &mut self.events,
            call,
            CallEventKind::DeskJoined { desk: account.name.clone(), mode: mode.into(), auto: false },
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
                self.by_call_id.remove(&desk.dialog.call_id);
                self.media_actions
                    .push_back(MediaAction::Leg { call_ref: call_ref.clone(), cmd: MediaCommand::RemoveLeg { leg } });
                let last_party = m.caller_gone && !m.desks_on();
                Self::emit_into(
                    &mut self.events,
                    call,
                    CallEventKind::DeskLeft { desk: desk.name, reason: "hung up".into() },
                );
                if last_party {
                    // The caller hung up earlier and the last desk has gone: only the
                    // operator is left, so the call ends.
                    self.stop_b_leg(call, now, "last party left");
                    Self::emit_into(
                        &mut self.events,
                        call,
                        CallEventKind::Ended {
                            by: "desk".into(),
                            reason: "the last desk left after the caller".into(),
                        },
                    );
                    return true;
                }
            }
            "INVITE" | "UPDATE" => {
                let desk = &mut m.desks[pos];
                match sdp_of(&msg).map(|b| AudioSdp::parse(&b)) {
                    Some(Ok(offer)) => {
                        let talk = offer.direction.sends();
                        if talk && !desk.may_talk {
                            let reason = "this desk may only listen in this call".to_string();
                            let name = desk.name.clone();
                            let mut r = msg.response(403, reason_phrase(403), None);
                            r.push("Warning", format!("399 sosdesk \"{reason}\""));
                            self.tx.respond(&key, &r, now);
                            Self::emit_into(
                                &mut self.events,
                                call,
                                CallEventKind::DeskJoinRefused { desk: name, status: 403, reason },
                            );
                            return false;
                        }
                        let codec = offer.pick(desk.media.codec());
                        let answer = desk.media.local.answer(&offer, codec, offer.direction.answer());
                        desk.media.configure(
                            &call_ref,
                            Role::Desk,
                            params_from(&offer, codec, false, talk),
                            &mut self.media_actions,
                        );
                        let mut r = msg.response(200, "OK", None);
                        r.push("Contact", contact);
                        with_sdp(&mut r, &answer);
                        self.tx.respond(&key, &r, now);
                    }
                    Some(Err(e)) => {
                        let mut r = msg.response(488, reason_phrase(488), None);
                        r.push("Warning", format!("399 sosdesk \"{e}\""));
                        self.tx.respond(&key, &r, now);
                    }
                    None => {
                        let mut r = msg.response(200, "OK", None);
                        r.push("Contact", contact);
                        self.tx.respond(&key, &r, now);
                    }
                }
            }
            "INFO" | "OPTIONS" => self.respond(&key, &msg, 200, &[]),
            _ => self.respond(&key, &msg, 501, &[("Allow", ALLOW.into())]),
        }
        false
    }

    // ------------------------------------------------------------------ sosdesk calling the desk

    /// The policy's conference URI: called once, when the call is first routed (`attempt` 0).
    pub(super) fn start_auto_conference(&mut self, call: &mut Call, attempt: usize, now: Instant) {
        let Some(uri) = self.policies.by_name(&call.policy).and_then(|p| p.conference_uri.clone()) else { return };
        let Some(m) = call.media.as_mut() else {
            // Not anchored (an offer without G.711, no RTP port): nothing to add a desk to, and
            // the security desk must know it was not called.
            if attempt == 0 && call.kind != RouteKind::Callback {
                let reason = "the call's media is not anchored by sosdesk".to_string();
                Self::emit_into(&mut self.events, call, CallEventKind::ConferenceFailed { target: uri, reason });
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
                Self::emit_into(&mut self.events, call, CallEventKind::ConferenceFailed { target: uri, reason: e });
                return;
            }
        };
        let opened = match self.rtp.as_ref().map(|p| p.open()) {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                let reason = format!("no RTP port free: {e}");
                Self::emit_into(&mut self.events, call, CallEventKind::ConferenceFailed { target: uri, reason });
                return;
            }
            None => return,
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
        self.client_txn.insert(key.clone(), call.call_ref.clone());
        self.by_call_id.insert(call_id.clone(), (call.call_ref.clone(), Side::Desk(id)));
        m.desks.push(DeskLeg {
            media: leg,
            name: uri,
            may_talk: talk,
            dialog: Dialog::outbound(call_id, local, remote, ruri, peer),
            invite: Some((key, inv)),
            answered: false,
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
                            &mut self.media_actions,
                        );
                        let (name, mode) = (desk.name.clone(), if talk { "talk" } else { "listen" });
                        tracing::info!(call = %call_ref, desk = %name, mode, "conference URI answered");
                        Self::emit_into(
                            &mut self.events,
                            call,
                            CallEventKind::DeskJoined { desk: name, mode: mode.into(), auto: true },
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
                            &mut self.events,
                            call,
                            CallEventKind::ConferenceFailed { target: name, reason },
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
        Self::emit_into(&mut self.events, call, CallEventKind::ConferenceFailed { target: name, reason });
    }

    /// Forget a desk leg (its dialog and transaction mappings, its media).
    fn drop_desk(&mut self, call: &mut Call, leg: LegId) {
        let Some(m) = call.media.as_mut() else { return };
        let Some(pos) = m.desks.iter().position(|d| d.media.id == leg) else { return };
        let desk = m.desks.remove(pos);
        self.by_call_id.remove(&desk.dialog.call_id);
        if let Some((k, _)) = &desk.invite {
            self.client_txn.remove(k);
        }
        if desk.media.socket.is_none() {
            self.media_actions
                .push_back(MediaAction::Leg { call_ref: call.call_ref.clone(), cmd: MediaCommand::RemoveLeg { leg } });
        }
    }

    /// The call is ending: hang up every desk still on it (BYE), give up on one still being
    /// called, and audit each leaving.
    pub(super) fn end_desk_legs(&mut self, call: &mut Call) {
        let Some(m) = call.media.as_mut() else { return };
        let desks = std::mem::take(&mut m.desks);
        let now = Instant::now();
        for mut desk in desks {
            self.by_call_id.remove(&desk.dialog.call_id);
            if let Some((k, _)) = &desk.invite {
                self.client_txn.remove(k);
            }
            if desk.answered {
                let mut bye = self.dialog_request(&mut desk.dialog, "BYE", None);
                bye.push("Reason", "SIP;cause=200;text=\"emergency call ended\"");
                self.tx.send_request(&bye, desk.dialog.peer, now);
                Self::emit_into(
                    &mut self.events,
                    call,
                    CallEventKind::DeskLeft { desk: desk.name, reason: "call ended".into() },
                );
            } else if let Some((_, inv)) = desk.invite {
                // Still being called: CANCEL it (§9.1); a 2xx that crosses is ACKed and ended.
                let cancel = cancel_for(&inv);
                self.tx.send_request(&cancel, desk.dialog.peer, now);
                self.abandon_dialog(desk.dialog.call_id, desk.dialog.peer, now);
            }
        }
    }
}
