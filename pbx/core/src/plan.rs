//! Carrying out a route's actions (the dialplan's, through [`crate::trunk::Router`]) on a
//! call: dial users at once or one after another with per-step timeouts, dial a trunk,
//! park, retrieve, a conference room, recording, headers for later dials, hang up with a
//! cause. A dial that fails (busy, no answer, rejected) goes on with the next action; a
//! dial that connects ends the list. Answer, playback, menus and waits (the IVR) are the
//! `ivr` module's.
//!
//! Actions arrive already resolved (variables substituted, goto/call followed); the
//! engine only executes them, so a plan reload never changes a call in progress.

use std::collections::VecDeque;
use std::time::Duration;

/// One step of a route, as the engine carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallAction {
    /// Ring users: all at once (each branch may have its own ring time), or one after
    /// another (`sequential`), each step for its timeout.
    Dial {
        users: Vec<(String, Option<Duration>)>,
        sequential: bool,
        timeout: Option<Duration>,
        auto_answer: bool,
    },
    DialTrunk {
        trunk: String,
        number: String,
        caller_id: Option<String>,
        caller_name: Option<String>,
        timeout: Option<Duration>,
    },
    Park {
        slot: Option<String>,
    },
    Retrieve {
        slot: String,
    },
    Conference {
        room: String,
    },
    Record(bool),
    /// Added to the INVITEs of later dials.
    SetHeader {
        name: String,
        value: String,
    },
    /// A call variable, kept for the call log.
    Set {
        name: String,
        value: String,
    },
    /// Unanswered: this final status; answered: BYE.
    Hangup {
        status: u16,
    },
    /// Answer the call ourselves (IVR).
    Answer,
    Playback(Vec<String>),
    Menu(Box<MenuSpec>),
    Wait(Duration),
}

/// A menu as the engine runs it; the choice is resolved by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuSpec {
    pub name: String,
    pub prompt: String,
    pub invalid_prompt: Option<String>,
    pub timeout: Duration,
    pub digit_timeout: Duration,
    pub max_digits: u32,
    pub retries: u32,
}

/// What is left of a call's route.
#[derive(Debug, Default)]
pub(crate) struct PlanState {
    pub(crate) actions: VecDeque<CallAction>,
    /// Headers for the INVITEs of later dials.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) variables: Vec<(String, String)>,
    pub(crate) record: Option<bool>,
    /// Remaining users of a sequential dial, and its defaults.
    pub(crate) sequential: VecDeque<(String, Option<Duration>)>,
    pub(crate) sequential_timeout: Option<Duration>,
    pub(crate) sequential_auto_answer: bool,
    /// The caller and dialled number, for menus' routing queries.
    pub(crate) caller: String,
    pub(crate) dialled: String,
    pub(crate) from_trunk: Option<String>,
    /// A wait step ends at this time.
    pub(crate) wait_until: Option<std::time::Instant>,
    /// A playback or menu step in progress (see `ivr`).
    pub(crate) ivr: Option<crate::ivr::IvrState>,
}

/// The next thing a call does, once the plain settings before it are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Devices {
        users: Vec<(String, Option<Duration>)>,
        timeout: Option<Duration>,
        auto_answer: bool,
    },
    Trunk {
        trunk: String,
        number: String,
        caller_id: Option<String>,
        caller_name: Option<String>,
        timeout: Option<Duration>,
    },
    Retrieve(String),
    Conference(String),
    Park(Option<String>),
    Hangup(u16),
    /// Answer, playback, menu, wait: the caller talks to Switchboard itself.
    Ivr(CallAction),
    /// Nothing left to do.
    End,
}

use std::time::Instant;

use crate::engine::Engine;

impl Engine {
    /// Applies the settings at the head of the plan and returns its next step.
    pub(crate) fn plan_next(&mut self, plan: &mut PlanState) -> Step {
        loop {
            if let Some((user, timeout)) = plan.sequential.pop_front() {
                return Step::Devices {
                    users: vec![(user, None)],
                    timeout: timeout.or(plan.sequential_timeout),
                    auto_answer: plan.sequential_auto_answer,
                };
            }
            let Some(action) = plan.actions.pop_front() else {
                return Step::End;
            };
            match action {
                CallAction::Set { name, value } => plan.variables.push((name, value)),
                CallAction::SetHeader { name, value } => plan.headers.push((name, value)),
                CallAction::Record(on) => plan.record = Some(on),
                CallAction::Dial {
                    users,
                    sequential: true,
                    timeout,
                    auto_answer,
                } => {
                    plan.sequential = users.into();
                    plan.sequential_timeout = timeout;
                    plan.sequential_auto_answer = auto_answer;
                }
                CallAction::Dial {
                    users,
                    timeout,
                    auto_answer,
                    ..
                } => {
                    return Step::Devices {
                        users,
                        timeout,
                        auto_answer,
                    }
                }
                CallAction::DialTrunk {
                    trunk,
                    number,
                    caller_id,
                    caller_name,
                    timeout,
                } => {
                    return Step::Trunk {
                        trunk,
                        number,
                        caller_id,
                        caller_name,
                        timeout,
                    }
                }
                CallAction::Park { slot } => return Step::Park(slot),
                CallAction::Retrieve { slot } => return Step::Retrieve(slot),
                CallAction::Conference { room } => return Step::Conference(room),
                CallAction::Hangup { status } => return Step::Hangup(status),
                // A room, a parked call or a park slot answers the caller itself: an
                // `answer` written before them changes nothing.
                CallAction::Answer
                    if matches!(
                        plan.actions.front(),
                        Some(
                            CallAction::Conference { .. }
                                | CallAction::Retrieve { .. }
                                | CallAction::Park { .. }
                        )
                    ) => {}
                other => return Step::Ivr(other),
            }
        }
    }

    /// Carries out a step for a call that exists; a step that cannot start moves on.
    pub(crate) fn run_step(&mut self, key: u64, step: Step, now: Instant) {
        let answered = self
            .calls
            .get(&key)
            .is_some_and(|c| c.a_tx.is_none() && c.state != crate::call::CallState::Ringing);
        match step {
            Step::Devices {
                users,
                timeout,
                auto_answer,
            } => {
                if answered {
                    // After an IVR answered the caller: ring the callee side.
                    let names: Vec<String> = users.iter().map(|(u, _)| u.clone()).collect();
                    let started = self.start_ring_users(
                        key,
                        1,
                        &names,
                        crate::features::RingPurpose::Plan,
                        auto_answer,
                        timeout,
                        now,
                    );
                    if started.is_err() {
                        self.plan_continue(key, 480, now);
                    }
                    return;
                }
                self.new_step(key);
                let per_user_max = users.iter().filter_map(|(_, t)| *t).max();
                if !self.ring_branches(key, &users, auto_answer, now) {
                    self.plan_continue(key, 480, now);
                    return;
                }
                self.arm_step(key, timeout.or(per_user_max), now);
            }
            Step::Trunk {
                trunk,
                number,
                caller_id,
                caller_name,
                timeout,
            } => {
                let from_trunk = self
                    .calls
                    .get(&key)
                    .and_then(|c| c.plan.as_ref())
                    .is_some_and(|p| p.from_trunk.is_some());
                if from_trunk {
                    tracing::warn!(
                        call = key,
                        "a route sends a trunk call back to a trunk; refused"
                    );
                    self.plan_continue(key, 403, now);
                    return;
                }
                let Some(t) = self.trunk_by_name(&trunk) else {
                    tracing::error!(%trunk, "a route names a trunk that is not configured");
                    self.plan_continue(key, 503, now);
                    return;
                };
                if answered {
                    tracing::info!(
                        call = key,
                        "dialling a trunk after answering is not supported yet"
                    );
                    self.plan_continue(key, 501, now);
                    return;
                }
                self.new_step(key);
                let plans = vec![crate::call::Plan::Trunk(t, number, caller_id, caller_name)];
                if self.add_branches(key, plans, false, now) == 0 {
                    self.plan_continue(key, 503, now);
                    return;
                }
                self.arm_step(key, timeout, now);
            }
            Step::Park(slot) => self.plan_park(key, slot, now),
            Step::Hangup(status) => self.plan_hangup(key, status, now),
            Step::End => self.plan_hangup(key, 480, now),
            Step::Retrieve(_) | Step::Conference(_) => {
                // Only a route's first step can be these (they take the caller's INVITE
                // into another call or a room).
                tracing::info!(
                    call = key,
                    "retrieve/conference after another step is not supported"
                );
                self.plan_hangup(key, 480, now);
            }
            Step::Ivr(action) => self.plan_ivr(key, action, now),
        }
    }

    /// The current step failed with `status`: go on with the plan, or give the caller
    /// the final answer when nothing is left.
    pub(crate) fn plan_continue(&mut self, key: u64, status: u16, now: Instant) {
        let Some(mut plan) = self.calls.get_mut(&key).and_then(|c| c.plan.take()) else {
            self.plan_hangup(key, status, now);
            return;
        };
        let step = self.plan_next(&mut plan);
        if let Some(c) = self.calls.get_mut(&key) {
            c.plan = Some(plan);
        }
        match step {
            Step::End => self.plan_hangup(key, status, now),
            step => self.run_step(key, step, now),
        }
    }

    /// Ends the call: a final response to a caller still waiting, else BYE.
    fn plan_hangup(&mut self, key: u64, status: u16, now: Instant) {
        let ringing = self
            .calls
            .get(&key)
            .is_some_and(|c| c.state == crate::call::CallState::Ringing);
        if ringing {
            self.finish_ringing(key, status, now);
        } else {
            self.hang_up_both(key, now);
        }
    }

    /// Branches from here on belong to a new dial step.
    fn new_step(&mut self, key: u64) {
        if let Some(c) = self.calls.get_mut(&key) {
            c.step_start = c.branches.len();
        }
    }

    fn arm_step(&mut self, key: u64, timeout: Option<Duration>, now: Instant) {
        let at = now + timeout.unwrap_or(self.config.ring_timeout);
        if let Some(c) = self.calls.get_mut(&key) {
            c.deadline = at;
        }
        self.deadlines.push(std::cmp::Reverse((at, key)));
    }
}
