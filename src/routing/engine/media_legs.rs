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
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::time::Instant;

use bytes::Bytes;

use super::desk_legs::DeskLeg;
use super::{Call, Engine, Side};
use crate::config::ConferenceMode;
use crate::events::CallEventKind;
use crate::media::runner::MediaCommand;
use crate::sip::body::sdp_of;

use crate::media::{AudioSdp, Codec, Direction, LegId, LegParams, LocalSdp, Role};
use crate::sip::transaction::ServerKey;
use crate::sip::{reason_phrase, Message};

/// A bound, non-blocking RTP socket and the address written into SDP for it (bound by the I/O
/// shell: the engine never binds a socket).
pub(super) type RtpPort = (StdUdpSocket, SocketAddr);

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

pub(super) const CALLER: LegId = 1;
pub(super) const FAR_END: LegId = 2;

/// One leg of an anchored call as the engine sees it.
pub(super) struct MediaLegState {
    pub(super) id: LegId,
    pub(super) local: LocalSdp,
    /// Until the leg is handed to the media task.
    pub(super) socket: Option<StdUdpSocket>,
    pub(super) params: Option<LegParams>,
}

impl MediaLegState {
    pub(super) fn new(id: LegId, (socket, addr): (StdUdpSocket, SocketAddr)) -> MediaLegState {
        MediaLegState { id, local: LocalSdp::new(addr), socket: Some(socket), params: None }
    }

    /// Tell the media task: the first time with the socket, later as an update.
    pub(super) fn configure(
        &mut self,
        call_ref: &str,
        role: Role,
        params: LegParams,
        actions: &mut VecDeque<MediaAction>,
    ) {
        self.params = Some(params);
        let cmd = match self.socket.take() {
            Some(socket) => MediaCommand::AddLeg { leg: self.id, role, params, socket },
            None => MediaCommand::UpdateLeg { leg: self.id, params },
        };
        actions.push_back(MediaAction::Leg { call_ref: call_ref.to_string(), cmd });
    }

    pub(super) fn codec(&self) -> Option<Codec> {
        self.params.map(|p| p.codec)
    }
}

/// Media state of an anchored call.
pub(super) struct CallMedia {
    pub(super) caller: MediaLegState,
    pub(super) far: MediaLegState,
    pub(super) desks: Vec<DeskLeg>,
    pub(super) next_leg: LegId,
    /// The caller's offer, when its INVITE had one.
    pub(super) caller_offer: Option<AudioSdp>,
    /// What the caller got from sosdesk (the answer, or the offer of a late-offer call): fixed
    /// once sent, so the 18x and the 2xx carry the same description.
    pub(super) caller_sdp: Option<Bytes>,
    /// Late offer: the caller's answer will come in its ACK.
    pub(super) caller_answer_pending: bool,
    /// Legs with a sosdesk offer in a re-INVITE's 2xx, waiting for the answer in the ACK.
    pub(super) reoffer_pending: Vec<Side>,
    pub(super) caller_gone: bool,
    pub(super) mode: ConferenceMode,
    pub(super) auto_started: bool,
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
pub(super) fn params_from(sdp: &AudioSdp, codec: (Codec, u8), telephone_event: bool, talk: bool) -> LegParams {
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

pub(super) fn with_sdp(r: &mut Message, sdp: &Bytes) {
    r.set("Content-Type", "application/sdp");
    r.body = sdp.clone();
}

impl Engine {
    /// Media for a new emergency call, or `None` (SDP then passes through): anchoring off, an
    /// offer sosdesk cannot take part in (no G.711), or no RTP port free. The call is routed
    /// either way.
    pub(super) fn anchor(&mut self, offer: Option<&[u8]>, mode: ConferenceMode) -> Option<CallMedia> {
        if !self.media.anchoring {
            return None;
        }
        let caller_offer = match offer.map(AudioSdp::parse) {
            None => None,
            Some(Ok(o)) => Some(o),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "caller's SDP cannot be anchored; media passes through");
                return None;
            }
        };
        if self.media.reserve.len() < 2 {
            tracing::error!("no RTP port for an emergency call; media passes through");
            return None;
        }
        let (a, b) = (self.media.reserve.swap_remove(0), self.media.reserve.swap_remove(0));
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
                    m.far.configure(&call_ref, Role::FarEnd, params, &mut self.out.media);
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
                m.caller.configure(&call_ref, Role::Caller, params, &mut self.out.media);
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
                leg.configure(&call_ref, role, params, &mut self.out.media);
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
        // A refresh of the session interval (RFC 4028 §9), with or without a new offer.
        for (name, value) in crate::sip::session_timer::answer_headers(&msg) {
            r.push(name, value);
        }
        match sdp_of(&msg).map(|b| AudioSdp::parse(&b)) {
            Some(Ok(offer)) => {
                let codec = offer.pick(leg.codec());
                let answer = leg.local.answer(&offer, codec, offer.direction.answer());
                leg.configure(&call_ref, role, params_from(&offer, codec, true, true), &mut self.out.media);
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
            self.out.media.push_back(MediaAction::Leg {
                call_ref: call.call_ref.clone(),
                cmd: MediaCommand::RemoveLeg { leg: CALLER },
            });
        }
        Self::emit_into(&mut self.out, call, CallEventKind::PartyLeft { party: "caller".into() }, self.now.wall);
    }

    // ------------------------------------------------------------------ desks joining

    // ------------------------------------------------------------------ sosdesk calling the desk
}
