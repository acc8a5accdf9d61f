//! The caller talks to Switchboard itself: a route answers the call, waits, plays
//! prompts, runs menus (the IVR), or parks the caller. The answered call keeps its callee
//! side empty until a later dial step rings someone (`features::start_ring_users`).

use std::time::{Duration, Instant};

use switchboard_sip::{HeaderName, Response};

use crate::call::CallState;
use crate::engine::ALLOW;
use crate::engine::{Engine, EngineEvent};
use crate::plan::CallAction;

impl Engine {
    /// Answers the caller's pending INVITE ourselves (200 with our SDP answer on the
    /// caller's port pair). False, after a final refusal to the caller, when its offer
    /// cannot be answered (no SDP: a late offer is not taken here).
    pub(crate) fn answer_caller(&mut self, key: u64, now: Instant) -> bool {
        let Some(call) = self.calls.get(&key) else {
            return false;
        };
        if call.state != CallState::Ringing || call.a_tx.is_none() {
            return call.state != CallState::Ending;
        }
        let invite = call.a_invite.clone();
        let local_tag = call.a.local_tag.clone();
        let target = call.a.target;
        let anchored = call.media.is_some();
        let body = if anchored {
            match self.media_side_answer(key, 0, &invite.headers, &invite.body) {
                Some(b) => Some(b),
                None => {
                    self.finish_ringing(key, 488, now);
                    return false;
                }
            }
        } else {
            None
        };
        let local = self.config.local.clone();
        let mut resp = Response::for_request(&invite, 200, "OK", Some(&local_tag));
        resp.headers
            .push(HeaderName::Contact, local.contact(target));
        resp.headers.push(HeaderName::Allow, ALLOW);
        if let Some(b) = body {
            resp.set_body(b, Some("application/sdp"));
        }
        let unix = self.unix(now);
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let Some(a_tx) = call.a_tx.take() else {
            return false;
        };
        call.state = CallState::Answered;
        call.final_status = Some(200);
        call.answered_unix = Some(unix);
        call.deadline = now;
        let cseq = call.a_invite_cseq;
        let call_id = call.a.call_id.clone();
        call.ack_waits.push((a_tx, call_id, cseq));
        self.server_roles.remove(&a_tx);
        self.ack_waiters.insert(a_tx, key);
        self.respond(a_tx, resp, now);
        self.stats.calls_answered += 1;
        self.events
            .push_back(EngineEvent::CallAnswered { call: key });
        true
    }

    /// A route parks its caller (someone dialled the park extension): answered by us,
    /// then waiting in a slot with music.
    pub(crate) fn plan_park(&mut self, key: u64, slot: Option<String>, now: Instant) {
        if !self.answer_caller(key, now) {
            return;
        }
        let by = self.calls.get(&key).map(|c| c.caller.clone());
        match self.park(key, 0, slot, by, now) {
            Ok(slot) => tracing::info!(call = key, %slot, "caller parked itself"),
            Err(e) => {
                tracing::info!(call = key, error = %e, "cannot park");
                self.hang_up_both(key, now);
            }
        }
    }

    /// Answer, wait, playback and menu steps of a route.
    pub(crate) fn plan_ivr(&mut self, key: u64, action: CallAction, now: Instant) {
        match action {
            CallAction::Answer => {
                if self.answer_caller(key, now) {
                    self.plan_continue(key, 480, now);
                }
            }
            CallAction::Wait(d) => {
                if !self.answer_caller(key, now) {
                    return;
                }
                self.plan_wait(key, d, now);
            }
            CallAction::Playback(_) | CallAction::Menu(_) => {
                tracing::warn!(
                    call = key,
                    "prompts and menus are not carried out yet; the call is refused"
                );
                let ringing = self
                    .calls
                    .get(&key)
                    .is_some_and(|c| c.state == CallState::Ringing);
                if ringing {
                    self.finish_ringing(key, 501, now);
                } else {
                    self.hang_up_both(key, now);
                }
            }
            other => {
                tracing::error!(call = key, action = ?other, "not an IVR action");
                self.plan_continue(key, 500, now);
            }
        }
    }

    /// Pauses the route for `d` (the caller hears silence or what plays).
    pub(crate) fn plan_wait(&mut self, key: u64, d: Duration, now: Instant) {
        let at = now + d;
        if let Some(c) = self.calls.get_mut(&key) {
            if let Some(p) = c.plan.as_mut() {
                p.wait_until = Some(at);
            }
            c.deadline = at;
        }
        self.deadlines.push(std::cmp::Reverse((at, key)));
    }

    /// A route's wait ended: go on.
    pub(crate) fn plan_deadline(&mut self, key: u64, now: Instant) -> bool {
        let due = self
            .calls
            .get(&key)
            .and_then(|c| c.plan.as_ref())
            .and_then(|p| p.wait_until)
            .is_some_and(|t| t <= now);
        if !due {
            return false;
        }
        if let Some(p) = self.calls.get_mut(&key).and_then(|c| c.plan.as_mut()) {
            p.wait_until = None;
        }
        self.plan_continue(key, 480, now);
        true
    }
}
