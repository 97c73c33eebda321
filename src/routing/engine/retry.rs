//! Continuous retry (issue 19; the UK's "continuous retry over all alternative routes"): when
//! every route of a call's plan has failed, the call is not given up while the retry window
//! (`routing.retry_for_s`, counted from the call's first attempt) lasts. The caller's leg is
//! kept with a `182 Queued` (RFC 3261 §21.1.4: the server queues the call rather than reject
//! it; resent every minute, §13.3.1.1), the round is audited (`retrying`), and the whole plan is
//! tried again from its first route after a backoff of 1, 2, 4, 8, then 10 s — the last wait cut
//! short so that a final round starts when the window closes. Each attempt of a round is audited
//! as `routed` / `route-failed` as usual. A round that fails with the window over gives the
//! caller 503. A CANCEL, or anything else that ends the call, leaves its timers with nothing to
//! do (they find no live call, or one no longer waiting for that round).

use super::*;

/// The longest wait between two rounds: a route that comes back is found within this time.
const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// RFC 3261 §13.3.1.1: a UAS that takes long to answer sends a provisional response at least
/// every minute (a proxy may cancel a transaction silent for three).
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// The wait after the `failed_round`-th round (1-based) failed: 1, 2, 4, 8, then 10 s. Short at
/// first (a provider restarting, a link flapping is back within seconds), doubling so that an
/// overloaded provider is not hammered, capped so that a route that comes back is used soon.
pub(super) fn retry_backoff(failed_round: u32) -> Duration {
    Duration::from_secs(1u64 << failed_round.saturating_sub(1).min(4)).min(RETRY_BACKOFF_CAP)
}

impl Retry {
    /// The caller just got a provisional response: once the call is retrying, the minute before
    /// the next 182 counts from now.
    pub(super) fn provisional_sent(&mut self, now: Instant) {
        if self.last_provisional.is_some() {
            self.last_provisional = Some(now);
        }
    }
}

impl Engine {
    /// Every route of the call's plan failed in this round (the call is out of the table):
    /// schedule the next round while the window lasts, else give the call up.
    pub(super) fn plan_exhausted(&mut self, mut call: Call, now: Instant) {
        let started = call.retry.first_attempt_at.unwrap_or(now);
        let deadline = started + self.retry_for;
        if call.plan.is_empty() || now >= deadline {
            return self.fail_call(call, now);
        }
        let at = (now + retry_backoff(call.retry.round)).min(deadline);
        call.retry.round += 1;
        call.retry.waiting = true;
        let round = call.retry.round;
        self.calls.timers.insert((at, call.call_ref.clone(), CallTimer::Retry(round)));
        if call.retry.last_provisional.is_none() {
            self.send_queued(&mut call, now);
        }
        let next_in_ms = at.saturating_duration_since(now).as_millis() as u64;
        Self::emit_into(&mut self.out, &mut call, CallEventKind::Retrying { round, next_in_ms }, self.now.wall);
        self.calls.live.insert(call.call_ref.clone(), call);
    }

    /// The backoff before `round` is over: the plan starts again from its first route, if the
    /// call is still waiting for exactly this round.
    pub(super) fn on_retry_due(&mut self, call_ref: &str, round: u32, now: Instant) {
        let Some(call) = self.calls.live.get_mut(call_ref) else { return };
        let waiting = call.retry.waiting && call.retry.round == round;
        if !waiting || call.state != CallState::Routing || call.b.is_some() {
            return;
        }
        call.retry.waiting = false;
        call.retry.round_start = call.next_attempt;
        (call.step, call.target) = (0, 0);
        // A route ringing in this round is audited (and shown) even if one rang in an earlier one.
        call.ringing_sent.clear();
        self.start_attempt(call_ref, now);
    }

    /// A minute may have passed since the caller's last provisional response: send 182 again
    /// while the call is still being routed (nothing once it is answered or over).
    pub(super) fn on_progress_due(&mut self, call_ref: &str, now: Instant) {
        let Some(mut call) = self.calls.live.remove(call_ref) else { return };
        if let (Some(last), CallState::Routing) = (call.retry.last_provisional, call.state) {
            let due = last + PROGRESS_EVERY;
            if now >= due {
                self.send_queued(&mut call, now);
            } else {
                // A relayed 180/183 reset the minute since this timer was set.
                self.calls.timers.insert((due, call.call_ref.clone(), CallTimer::Progress));
            }
        }
        self.calls.live.insert(call.call_ref.clone(), call);
    }

    /// 182 Queued to the caller (in the caller's early dialog, so with our tag and Contact,
    /// RFC 3261 §12.1.1), and the timer for the next one.
    fn send_queued(&mut self, call: &mut Call, now: Instant) {
        let mut r = call.a_invite.response(182, "Queued", Some(tag_of(&call.a.local)));
        r.push("Contact", self.local.contact(call.a.peer.transport));
        self.tx.respond(&call.a_invite_key, &r, now);
        call.retry.last_provisional = Some(now);
        self.calls.timers.insert((now + PROGRESS_EVERY, call.call_ref.clone(), CallTimer::Progress));
    }
}
