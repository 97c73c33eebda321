//! One call as the engine holds it: the caller's leg (A, a UAS dialog), the outbound leg (B, a
//! UAC dialog towards a route), in-dialog requests being relayed, and the call's timers.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    A,
    B,
    /// A security desk's conference leg (its media leg id).
    Desk(crate::media::LegId),
}

impl Side {
    /// The leg a request on this one is relayed to (desk legs are never relayed).
    pub(super) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B | Side::Desk(_) => Side::A,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallState {
    /// Outbound INVITE sent, no answer yet.
    Routing,
    Answered,
}

pub(super) struct BLeg {
    pub(super) attempt: usize,
    pub(super) dialog: Dialog,
    pub(super) invite: Message,
    pub(super) client_key: ClientKey,
    /// Any response (even 100) arrived: the route is alive, no failover by timer.
    pub(super) responded: bool,
    /// A provisional arrived: a CANCEL may be sent (RFC 3261 §9.1).
    pub(super) provisional: bool,
    /// The ACK for the 2xx, re-sent when the 2xx is retransmitted.
    pub(super) ack: Option<Message>,
    /// The route of the plan this leg goes to (`None`: a callback target).
    pub(super) route: Option<usize>,
    /// The provider challenged this attempt once and sosdesk answered (a second challenge
    /// fails the route: the credentials are wrong).
    pub(super) challenged: bool,
    /// A second challenge that only said the nonce was stale was answered too.
    pub(super) stale_answered: bool,
}

/// An in-dialog request relayed from one leg to the other, waiting for its response.
pub(super) struct Relay {
    pub(super) origin: Side,
    pub(super) server_key: ServerKey,
    pub(super) request: Message,
}

pub(super) struct Call {
    pub(super) call_ref: String,
    pub(super) seq: u32,
    pub(super) caller: Caller,
    pub(super) dialed: String,
    pub(super) normalized: String,
    pub(super) test: bool,
    pub(super) policy: String,
    pub(super) site: Option<String>,
    pub(super) location: LocationSnapshot,
    /// The PIDF-LO sent on every attempt (the caller's own bytes, or built from the ERL).
    pub(super) pidf: Option<Bytes>,
    pub(super) location_refs: Vec<String>,
    /// What goes to the route as the Geolocation cid.
    pub(super) cid: String,
    pub(super) route_info: Option<RouteInfo>,
    /// Route indexes, in order.
    pub(super) plan: Vec<usize>,
    /// The plan step of the next attempt, and which of its route's targets (a route whose name
    /// resolved to several: RFC 3263 §4.3, each before the next route).
    pub(super) step: usize,
    pub(super) target: usize,
    /// How many targets the current attempt's route had.
    pub(super) targets_here: usize,
    /// The number of the next attempt, counted across retry rounds (each attempt has its own,
    /// so a stale route timer of an earlier round never matches a later attempt).
    pub(super) next_attempt: usize,
    /// Where the call stands in retrying its whole plan (`retry.rs`).
    pub(super) retry: Retry,
    pub(super) kind: RouteKind,
    /// Callback calls go to exactly this target instead of the plan.
    pub(super) callback_target: Option<(Peer, String)>,
    pub(super) callback_number: String,
    /// The ELIN this call presents through ELIN gateways, when it is claimed in the store.
    pub(super) elin: ElinHold,
    pub(super) a: Dialog,
    pub(super) a_invite: Message,
    pub(super) a_invite_key: ServerKey,
    pub(super) a_offer: Option<Bytes>,
    pub(super) b: Option<BLeg>,
    pub(super) state: CallState,
    /// Waiting for the caller's ACK to carry the SDP answer to the far end (late offer).
    pub(super) await_a_ack: bool,
    pub(super) ringing_sent: HashSet<u16>,
    pub(super) relays: HashMap<ClientKey, Relay>,
    /// A relayed re-INVITE's 2xx whose ACK must be relayed (the re-INVITE had no offer).
    pub(super) pending_reinvite_ack: Option<(Side, u32)>,
    /// ACKs sent for relayed re-INVITEs' 2xx, by client transaction, re-sent on retransmission.
    pub(super) relay_acks: HashMap<ClientKey, (Message, Peer)>,
    /// sosdesk is in the media path (issue 5): SDP is answered by sosdesk on each leg, desks can
    /// join, the call is recorded. `None`: SDP passes through untouched.
    pub(super) media: Option<CallMedia>,
}

/// Where a call stands in getting an ELIN (`Output::ClaimElin`); without claims in the store it
/// stays `Unasked` and each attempt picks from this node's mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ElinHold {
    Unasked,
    /// The store is asked; the attempt waits for `Engine::on_elin_claimed`.
    Claiming,
    /// The store gave it, with the call's mapping written: every attempt presents it.
    Claimed(String),
    /// The store did not answer: picked here, the mapping written afterwards (as on one node).
    Local,
}

/// How long an abandoned outbound INVITE is remembered: twice Timer B (64·T1) at the default T1.
pub(super) const ABANDON_FOR: Duration = Duration::from_secs(64);

/// A leg sosdesk gave up on (route timeout, cancel before any provisional): a 2xx that still
/// arrives for it is ACKed and ended with a BYE, so no one is left connected to nothing.
pub(super) struct Abandoned {
    pub(super) peer: Peer,
    pub(super) expires: Instant,
}

/// A call's rounds through its plan: every route failed once is not the end of an emergency
/// call while the retry window (`routing.retry_for_s`) lasts (`retry.rs`).
#[derive(Debug, Default)]
pub(super) struct Retry {
    /// The round under way, or about to start: 1 for the first pass through the plan.
    pub(super) round: u32,
    /// The attempt number of the round's first route.
    pub(super) round_start: usize,
    /// When the call's first attempt was made: the retry window counts from it.
    pub(super) first_attempt_at: Option<Instant>,
    /// The next round is waiting for its backoff to end (its timer is `CallTimer::Retry`).
    pub(super) waiting: bool,
    /// When the caller last got a provisional response other than 100 (sosdesk's 182 or a
    /// relayed 180/183); `None` until the plan first failed as a whole. While it is `Some`, the
    /// caller gets a 182 at least every minute (RFC 3261 §13.3.1.1).
    pub(super) last_provisional: Option<Instant>,
}

/// Call timers are deleted lazily (see `on_route_timeout`: a timer for an attempt that already
/// responded, moved on or ended does nothing), so no O(n) search runs per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum CallTimer {
    /// No response from the attempt in `route_timeout`.
    RouteResponse(usize),
    /// The backoff before this retry round is over: the plan starts again.
    Retry(u32),
    /// A minute since the caller's last provisional response while the call is retrying.
    Progress,
}

/// Every live call, and the indexes that find a call from what arrives: a dialog's Call-ID, a
/// server or client transaction; the calls' timers; and the outbound legs given up on.
#[derive(Default)]
pub(super) struct CallTable {
    pub(super) live: HashMap<String, Call>,
    pub(super) by_call_id: HashMap<String, (String, Side)>,
    pub(super) server_txn: HashMap<ServerKey, String>,
    pub(super) client_txn: HashMap<ClientKey, String>,
    pub(super) timers: BTreeSet<(Instant, String, CallTimer)>,
    pub(super) abandoned: HashMap<String, Abandoned>,
    pub(super) abandoned_order: VecDeque<String>,
    /// Calls that ended lately: their picture and last seq, so that what comes after the end
    /// (the recording, a notification outcome, an acknowledgement) is numbered here, in order,
    /// without reading the audit log back. Kept [`RECENT_FOR`], at most [`RECENT_MAX`].
    pub(super) recent: HashMap<String, CallEvent>,
    pub(super) recent_order: VecDeque<(Instant, String)>,
    /// INVITEs to desks called in for a call that has ended before they sent any provisional
    /// response: a CANCEL may only follow one (RFC 3261 §9.1), so it is sent when it comes.
    /// (client transaction → the INVITE, where to, until when kept, CANCEL sent).
    pub(super) cancel_on_provisional: HashMap<String, (Message, Peer, Instant, bool)>,
}

/// How long an ended call's picture is kept for its late events.
pub(super) const RECENT_FOR: Duration = Duration::from_secs(300);
/// Most ended calls kept (~1.5 KB each): beyond, the oldest go first, and their late events are
/// numbered from the audit log instead (slower, never wrong).
pub(super) const RECENT_MAX: usize = 20_000;

impl CallTable {
    /// Remember an outbound INVITE sosdesk gave up on for [`ABANDON_FOR`]: a 2xx that still
    /// arrives for it is ACKed and hung up (`Engine::on_stray_response`).
    pub(super) fn abandon(&mut self, call_id: String, peer: Peer, now: Instant) {
        self.abandoned.insert(call_id.clone(), Abandoned { peer, expires: now + ABANDON_FOR });
        self.abandoned_order.push_back(call_id);
    }

    /// Forget the abandoned legs whose time is up (they expire in the order they were added).
    /// Keep an ended call's picture (`last`: its last event, whose seq is the call's last).
    pub(super) fn remember_ended(&mut self, last: CallEvent, now: Instant) {
        self.recent_order.push_back((now + RECENT_FOR, last.call_id.clone()));
        self.recent.insert(last.call_id.clone(), last);
        while self.recent.len() > RECENT_MAX {
            let Some((_, id)) = self.recent_order.pop_front() else { break };
            self.recent.remove(&id);
        }
    }

    /// The next event of a call that ended lately, numbered after its last; `None` when the
    /// call is not (or no longer) kept.
    pub(super) fn ended_event(&mut self, call_ref: &str, kind: CallEventKind, at: DateTime<Utc>) -> Option<CallEvent> {
        let last = self.recent.get_mut(call_ref)?;
        last.seq += 1;
        let mut ev = last.clone();
        ev.kind = kind;
        ev.at = at;
        Some(ev)
    }

    pub(super) fn expire_abandoned(&mut self, now: Instant) {
        self.cancel_on_provisional.retain(|_, (_, _, until, _)| *until > now);
        while let Some((expires, _)) = self.recent_order.front() {
            if *expires > now {
                break;
            }
            if let Some((_, id)) = self.recent_order.pop_front() {
                self.recent.remove(&id);
            }
        }
        while let Some(id) = self.abandoned_order.front() {
            match self.abandoned.get(id) {
                Some(a) if a.expires > now => break,
                _ => {
                    let id = self.abandoned_order.pop_front().unwrap_or_default();
                    self.abandoned.remove(&id);
                }
            }
        }
    }
}
