//! The caller talks to Switchboard itself: a route answers the call, waits, plays
//! prompts, runs menus (the IVR), or parks the caller (who hears its slot, see `say`). The answered call keeps its callee
//! side empty until a later dial step rings someone (`features::start_ring_users`).
//!
//! Prompts play through the runtime (`MediaCommand::Play` with [`Playback::Prompt`]), one
//! at a time; each ends with `MediaEvent::PlaybackFinished` for the caller's leg (the
//! runtime reports it too for a prompt it cannot find, so a missing file never stalls a
//! route). A menu collects the caller's key presses, whatever carried them (RFC 4733,
//! in-band tones, SIP INFO), with its timeouts as call deadlines: nothing here reads a
//! clock. The choice is the router's ([`crate::trunk::Router::menu_choice`]); its actions
//! replace what was left of the route.
//!
//! Known limit: `PlaybackFinished` names only the leg, not the prompt. A finish already in
//! flight when a barge-in stops a prompt is ignored (the menu is collecting by then), but
//! if the same key press also ends the menu with an invalid choice, that stale finish could
//! cut the invalid prompt short. Tagging playbacks with an id would close this window of a
//! few milliseconds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switchboard_media::relay::Leg;
use switchboard_sip::{HeaderName, Response};

use crate::call::CallState;
use crate::engine::ALLOW;
use crate::engine::{Engine, EngineEvent};
use crate::media::{MediaCommand, Playback};
use crate::plan::{CallAction, MenuSpec};
use crate::trunk::{RouteDecision, RouteQuery};

/// What an IVR step of a call is doing (kept in the call's plan).
#[derive(Debug)]
pub(crate) enum IvrState {
    /// A `playback` action: one prompt plays; these follow it.
    Playing {
        rest: VecDeque<String>,
    },
    Menu(Box<MenuRun>),
}

/// A menu in progress.
#[derive(Debug)]
pub(crate) struct MenuRun {
    spec: Box<MenuSpec>,
    /// Prompts still to play before digits are awaited (the invalid prompt, then the
    /// menu's prompt, on a retry).
    prompts: VecDeque<String>,
    /// A prompt plays toward the caller now; a key press stops it (barge-in).
    playing: bool,
    digits: String,
    /// Attempts that failed so far (no digit in time, or a choice that leads nowhere).
    failures: u32,
    /// The next digit is due by then (the first-digit or the inter-digit timeout).
    until: Option<Instant>,
}

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
            Ok(slot) => {
                tracing::info!(call = key, %slot, "caller parked itself");
                // It hears its slot, then music. A phone making an attended transfer to
                // the park extension learns the slot this way before it completes the
                // transfer (the transferee then takes its place in the slot).
                self.announce_park(key, 0, &slot, crate::say::AfterAnnouncement::Music, now);
            }
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
            CallAction::Playback(prompts) => {
                // Like Asterisk's Playback: a caller not yet answered is answered first
                // (early media is not offered).
                if !self.answer_caller(key, now) {
                    return;
                }
                self.set_ivr(
                    key,
                    Some(IvrState::Playing {
                        rest: prompts.into(),
                    }),
                );
                self.playback_next(key, now);
            }
            CallAction::Menu(spec) => {
                if !self.answer_caller(key, now) {
                    return;
                }
                let prompts = VecDeque::from([spec.prompt.clone()]);
                self.set_ivr(
                    key,
                    Some(IvrState::Menu(Box::new(MenuRun {
                        spec,
                        prompts,
                        playing: false,
                        digits: String::new(),
                        failures: 0,
                        until: None,
                    }))),
                );
                self.menu_advance(key, now);
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

    /// A route's wait, or a menu's digit timeout, ended: go on.
    pub(crate) fn plan_deadline(&mut self, key: u64, now: Instant) -> bool {
        if self.menu_deadline(key, now) {
            return true;
        }
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

    fn set_ivr(&mut self, key: u64, ivr: Option<IvrState>) {
        if let Some(p) = self.calls.get_mut(&key).and_then(|c| c.plan.as_mut()) {
            p.ivr = ivr;
        }
    }

    fn menu_mut(&mut self, key: u64) -> Option<&mut MenuRun> {
        match self
            .calls
            .get_mut(&key)
            .and_then(|c| c.plan.as_mut())
            .and_then(|p| p.ivr.as_mut())
        {
            Some(IvrState::Menu(m)) => Some(m),
            _ => None,
        }
    }

    /// True while the call runs a menu (its key presses are the menu's).
    pub(crate) fn in_menu(&self, key: u64) -> bool {
        self.calls
            .get(&key)
            .and_then(|c| c.plan.as_ref())
            .is_some_and(|p| matches!(p.ivr, Some(IvrState::Menu(_))))
    }

    /// Asks the runtime to play a prompt to the caller; false when the call's media is
    /// not anchored (nothing can be played: the prompt is skipped).
    fn play_prompt(&mut self, key: u64, name: &str) -> bool {
        if self.calls.get(&key).is_none_or(|c| c.media.is_none()) {
            tracing::info!(
                call = key,
                prompt = name,
                "media not anchored; prompt skipped"
            );
            return false;
        }
        tracing::debug!(call = key, prompt = name, "playing a prompt");
        self.events
            .push_back(EngineEvent::Media(MediaCommand::Play {
                call: key,
                leg: Leg::A,
                what: Playback::Prompt {
                    name: name.to_string(),
                },
            }));
        true
    }

    /// The next prompt of a `playback` action, or the rest of the route after the last.
    fn playback_next(&mut self, key: u64, now: Instant) {
        loop {
            let next = match self
                .calls
                .get_mut(&key)
                .and_then(|c| c.plan.as_mut())
                .and_then(|p| p.ivr.as_mut())
            {
                Some(IvrState::Playing { rest }) => rest.pop_front(),
                _ => return,
            };
            match next {
                Some(name) if self.play_prompt(key, &name) => return,
                Some(_) => {}
                None => {
                    self.set_ivr(key, None);
                    self.plan_continue(key, 480, now);
                    return;
                }
            }
        }
    }

    /// The menu's next prompt, or, when none is left, the wait for the first digit.
    fn menu_advance(&mut self, key: u64, now: Instant) {
        loop {
            let Some(m) = self.menu_mut(key) else {
                return;
            };
            match m.prompts.pop_front() {
                Some(name) => {
                    if self.play_prompt(key, &name) {
                        if let Some(m) = self.menu_mut(key) {
                            m.playing = true;
                        }
                        return;
                    }
                }
                None => {
                    m.playing = false;
                    let timeout = m.spec.timeout;
                    self.menu_arm(key, timeout, now);
                    return;
                }
            }
        }
    }

    fn menu_arm(&mut self, key: u64, after: Duration, now: Instant) {
        let at = now + after;
        if let Some(m) = self.menu_mut(key) {
            m.until = Some(at);
        }
        if let Some(c) = self.calls.get_mut(&key) {
            c.deadline = at;
        }
        self.deadlines.push(std::cmp::Reverse((at, key)));
    }

    /// What played toward `leg` ended by itself (or could not be played).
    pub(crate) fn ivr_playback_finished(&mut self, key: u64, leg: Leg, now: Instant) {
        tracing::debug!(call = key, ?leg, "playback finished");
        if leg != Leg::A {
            return;
        }
        let ivr = self
            .calls
            .get(&key)
            .and_then(|c| c.plan.as_ref())
            .and_then(|p| p.ivr.as_ref());
        match ivr {
            Some(IvrState::Playing { .. }) => self.playback_next(key, now),
            // A finish reported after a barge-in stopped the prompt is stale: ignored.
            Some(IvrState::Menu(m)) if m.playing => self.menu_advance(key, now),
            _ => {}
        }
    }

    /// A key the caller pressed: a menu's digit (it stops the prompt), else nothing.
    pub(crate) fn ivr_digit(&mut self, key: u64, digit: char, now: Instant) {
        let Some(m) = self.menu_mut(key) else {
            return;
        };
        let barge_in = m.playing;
        if barge_in {
            m.playing = false;
            m.prompts.clear();
        }
        let done = if digit == '#' {
            true
        } else {
            m.digits.push(digit);
            m.digits.chars().count() >= m.spec.max_digits.max(1) as usize
        };
        let empty = m.digits.is_empty();
        let digit_timeout = m.spec.digit_timeout;
        if barge_in {
            self.events
                .push_back(EngineEvent::Media(MediaCommand::StopPlayback {
                    call: key,
                    leg: Leg::A,
                }));
        }
        tracing::debug!(call = key, %digit, barge_in, "menu digit");
        match (done, empty) {
            // `#` alone chooses nothing.
            (true, true) => self.menu_failed(key, now),
            (true, false) => self.menu_choose(key, now),
            (false, _) => self.menu_arm(key, digit_timeout, now),
        }
    }

    /// A menu's digit timeout: the digits so far are the choice, or nothing came.
    fn menu_deadline(&mut self, key: u64, now: Instant) -> bool {
        let Some(m) = self.menu_mut(key) else {
            return false;
        };
        if m.until.is_none_or(|t| t > now) {
            return false;
        }
        m.until = None;
        if m.digits.is_empty() {
            tracing::debug!(call = key, menu = %m.spec.name, "no digit before the timeout");
            self.menu_failed(key, now);
        } else {
            self.menu_choose(key, now);
        }
        true
    }

    fn menu_choose(&mut self, key: u64, now: Instant) {
        let Some(m) = self.menu_mut(key) else {
            return;
        };
        m.until = None;
        let digits = std::mem::take(&mut m.digits);
        let name = m.spec.name.clone();
        let decision = self.menu_decision(key, &name, Some(&digits), now);
        tracing::info!(call = key, menu = %name, %digits, ?decision, "menu choice");
        match decision_actions(decision) {
            Ok(actions) => self.menu_go(key, actions, now),
            Err(_) => self.menu_failed(key, now),
        }
    }

    /// No digit in time, or a choice that leads nowhere: the invalid prompt and the menu
    /// again, until the retries run out; then where the menu's failure leads.
    fn menu_failed(&mut self, key: u64, now: Instant) {
        let Some(m) = self.menu_mut(key) else {
            return;
        };
        m.failures += 1;
        m.digits.clear();
        m.until = None;
        if m.failures > m.spec.retries {
            let name = m.spec.name.clone();
            let decision = self.menu_decision(key, &name, None, now);
            tracing::info!(call = key, menu = %name, ?decision, "menu retries exhausted");
            let actions = match decision_actions(decision) {
                Ok(actions) => actions,
                Err(status) => vec![CallAction::Hangup { status }],
            };
            self.menu_go(key, actions, now);
            return;
        }
        m.prompts = m
            .spec
            .invalid_prompt
            .iter()
            .chain(std::iter::once(&m.spec.prompt))
            .cloned()
            .collect();
        self.menu_advance(key, now);
    }

    /// The menu is over: `actions` replace the rest of the route and run.
    fn menu_go(&mut self, key: u64, actions: Vec<CallAction>, now: Instant) {
        if let Some(p) = self.calls.get_mut(&key).and_then(|c| c.plan.as_mut()) {
            p.ivr = None;
            p.actions = actions.into();
            p.sequential.clear();
            p.wait_until = None;
        }
        self.plan_continue(key, 480, now);
    }

    /// Asks the router where the menu leads, with the call's original routing query.
    fn menu_decision(
        &self,
        key: u64,
        menu: &str,
        digits: Option<&str>,
        now: Instant,
    ) -> RouteDecision {
        let (Some(call), Some(router)) = (self.calls.get(&key), self.router.as_ref()) else {
            return RouteDecision::Reject(480);
        };
        let Some(plan) = call.plan.as_ref() else {
            return RouteDecision::Reject(480);
        };
        let caller_attrs: Vec<(String, String)> = match self.directory.by_name(&plan.caller) {
            Some(u) if plan.from_trunk.is_none() => [
                u.extension.clone().map(|e| ("extension".to_string(), e)),
                u.display_name
                    .clone()
                    .map(|d| ("display_name".to_string(), d)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            _ => Vec::new(),
        };
        let query = RouteQuery {
            caller: &plan.caller,
            from_trunk: plan.from_trunk.as_deref(),
            dialled: &plan.dialled,
            headers: &call.a_invite.headers,
            unix: self.unix(now),
            caller_attrs: &caller_attrs,
        };
        router.menu_choice(&query, menu, digits)
    }
}

/// A routing decision as actions to run, or the status of a refusal.
fn decision_actions(decision: RouteDecision) -> Result<Vec<CallAction>, u16> {
    match decision {
        RouteDecision::Actions(actions) => Ok(actions),
        RouteDecision::User(user) => Ok(vec![CallAction::Dial {
            users: vec![(user, None)],
            sequential: false,
            timeout: None,
            auto_answer: false,
        }]),
        RouteDecision::Trunk {
            trunk,
            number,
            caller_id,
        } => Ok(vec![CallAction::DialTrunk {
            trunk,
            number,
            caller_id,
            caller_name: None,
            timeout: None,
        }]),
        RouteDecision::Reject(status) if (400..700).contains(&status) => Err(status),
        RouteDecision::Reject(_) => Err(480),
        RouteDecision::NotFound => Err(404),
    }
}
