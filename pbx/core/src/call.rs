//! Calls between registered users, as a B2BUA (RFC 3261 §6 "back-to-back user agent").
//! The caller's leg (A) is a UAS dialog; each registered contact of the callee gets its
//! own UAC leg (a branch, B) with a fresh Call-ID, rung in parallel. The first 2xx wins
//! and the other branches are cancelled; afterwards requests in one dialog are re-issued
//! in the other, and their responses carried back. SDP is passed through untouched.
//!
//! What this module must never do: let one leg's identifiers (Call-ID, tags, CSeq, Via)
//! leak into the other, or keep a call alive once both legs are gone.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use switchboard_sip::header::NameAddr;
use switchboard_sip::message::reason_phrase;
use switchboard_sip::transaction::{new_branch, ClientTxId, ServerTxId, Target};
use switchboard_sip::{HeaderName, Method, Request, Response, Uri};

use crate::auth::{AuthOutcome, Challenge};
use crate::dialog::{without_tag, Dialog};
use crate::engine::{Engine, EngineEvent, ALLOW};

/// How a call ended, for the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Answered,
    NoAnswer,
    Busy,
    Rejected,
    Failed,
    Cancelled,
}

impl CallOutcome {
    pub(crate) fn from_status(status: u16) -> CallOutcome {
        match status {
            200..=299 => CallOutcome::Answered,
            486 | 600 => CallOutcome::Busy,
            408 | 480 => CallOutcome::NoAnswer,
            487 => CallOutcome::Cancelled,
            403 | 603 | 606 => CallOutcome::Rejected,
            _ => CallOutcome::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Failed => "failed",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

/// What a client transaction is for.
#[derive(Debug, Clone)]
pub(crate) enum ClientRole {
    /// The initial INVITE toward one of the callee's contacts.
    Branch(usize),
    /// A request re-issued from the other leg; its response answers `server`.
    Relay {
        server: ServerTxId,
        request: Box<Request>,
        from_a: bool,
        /// The offer/answer this request started, when media is anchored.
        renegotiation: Option<Box<crate::media::Renegotiation>>,
    },
    /// A request of our own (BYE) whose answer changes nothing.
    Own,
    /// An INVITE ringing a device to take one side of the call (see `features`).
    Ring(usize),
    /// A re-INVITE of our own (see `features`).
    OwnReinvite(Box<crate::features::OwnReinvite>),
    /// A re-INVITE moving a party into a conference room (see `conference`).
    ToRoom(Box<crate::conference::ToRoom>),
}

/// What a server transaction is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ServerRole {
    Invite,
    Relay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// Branches ringing; the caller's INVITE is unanswered.
    Ringing,
    /// A 2xx went to the caller; waiting for its ACK.
    Answered,
    Established,
    /// The caller has its final answer; branches are still being cleaned up.
    Ending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchState {
    Calling,
    Early,
    Answered,
    /// A final non-2xx, a timeout, or cancelled and done.
    Done(u16),
}

#[derive(Debug)]
pub(crate) struct Branch {
    /// The INVITE we sent; `None` for a party that called in (retrieve, Replaces) and
    /// took this side.
    pub(crate) tx: Option<ClientTxId>,
    pub(crate) dialog: Dialog,
    pub(crate) invite_cseq: u32,
    pub(crate) state: BranchState,
    pub(crate) cancelled: bool,
    /// Through a trunk: what answering a challenge or failing over needs.
    pub(crate) trunk: Option<Box<crate::trunk::TrunkBranch>>,
}

/// A branch about to be sent: its dialog, its INVITE and, through a trunk, what a retry
/// needs.
type PlannedBranch = (Dialog, Request, Option<Box<crate::trunk::TrunkBranch>>);

/// One INVITE of a dial step: a user's device, or a trunk (number, caller ID and name).
pub(crate) enum Plan {
    Device(String, crate::registrar::Binding),
    Trunk(usize, String, Option<String>, Option<String>),
}

/// An ACK we sent for a 2xx, kept to answer retransmissions of that 2xx.
#[derive(Debug)]
pub(crate) struct SentAck {
    pub(crate) call_id: String,
    pub(crate) cseq: u32,
    pub(crate) data: Vec<u8>,
    pub(crate) target: Target,
}

/// A 2xx to a relayed re-INVITE is ACKed on the far leg when the originator ACKs it.
#[derive(Debug)]
pub(crate) struct PendingAck {
    /// The originator's side and the CSeq of its INVITE.
    from_a: bool,
    origin_cseq: u32,
    /// The far side's INVITE CSeq to ACK.
    far_cseq: u32,
    /// The far side offered in its 2xx: the originator's ACK answers our relayed offer.
    media: Option<crate::media::PendingAckAnswer>,
}

#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) caller: String,
    pub(crate) callee: String,
    pub(crate) state: CallState,
    pub(crate) a: Dialog,
    pub(crate) a_invite: Request,
    pub(crate) a_tx: Option<ServerTxId>,
    /// CSeq of the caller's INVITE, to match its ACK.
    pub(crate) a_invite_cseq: u32,
    pub(crate) branches: Vec<Branch>,
    pub(crate) winner: Option<usize>,
    pub(crate) deadline: Instant,
    pub(crate) final_status: Option<u16>,
    pub(crate) acks: Vec<SentAck>,
    pub(crate) pending_ack: Option<PendingAck>,
    /// A relayed INVITE is outstanding (glare guard, RFC 3261 §14.1).
    pub(crate) reinvite_in_progress: bool,
    /// Server transactions whose 2xx awaits an ACK (see `Engine::ack_waiters`).
    pub(crate) ack_waits: Vec<(ServerTxId, String, u32)>,
    /// Anchored media, when the engine anchors media.
    pub(crate) media: Option<crate::media::CallMedia>,
    pub(crate) started_unix: u64,
    pub(crate) answered_unix: Option<u64>,
    /// Sides (caller, callee) whose audio the server drops.
    pub(crate) muted: [bool; 2],
    /// Sides the API put on hold (music toward them, their audio dropped).
    pub(crate) on_hold: [bool; 2],
    pub(crate) recording: bool,
    /// False once the caller side's occupant is gone (parked away, transferred out)
    /// while the call goes on.
    pub(crate) a_present: bool,
    /// Dialogs we took out of the call (transferors, replaced parties) whose BYE or
    /// NOTIFY answer may still arrive: answered, never relayed.
    pub(crate) released: Vec<Dialog>,
    /// Devices being rung to take one side of the call (transfer, ring-back, originate).
    pub(crate) ring: Option<Box<crate::features::SideRing>>,
    /// The call waits in a park slot.
    pub(crate) parked: Option<crate::features::ParkState>,
    /// A re-INVITE of our own (resume after a transfer, a move between calls) in flight.
    pub(crate) own_reinvite: bool,
    /// Our re-INVITE met 491 (glare): sent again at this time (RFC 3261 §14.1).
    pub(crate) reinvite_retry: Option<(Instant, usize, crate::features::ReinvitePurpose)>,
    /// What is left of the route's actions (a dial that fails goes on with them).
    pub(crate) plan: Option<Box<crate::plan::PlanState>>,
    /// The branches of the current dial step start here (earlier ones were cancelled).
    pub(crate) step_start: usize,
    /// Our offer to the callee side (anchored), reused by every dial step.
    pub(crate) callee_offer: Option<Vec<u8>>,
    pub(crate) max_forwards: u32,
    /// The caller side's party called in through a trunk (its keys are never feature
    /// codes); false once a user takes that side.
    pub(crate) a_from_trunk: bool,
    /// Each side's recent key presses, watched for in-call feature codes.
    pub(crate) code_watch: [crate::feature_code::CodeWatch; 2],
    /// An announcement playing to one side (the park slot), and what follows it.
    pub(crate) announcement: Option<crate::say::Announcement>,
}

impl Call {
    /// A call in its first state, with nothing rung yet and no feature under way.
    #[allow(clippy::too_many_arguments)]
    fn new(
        caller: String,
        callee: String,
        state: CallState,
        a: Dialog,
        a_invite: Request,
        media: Option<crate::media::CallMedia>,
        deadline: Instant,
        unix: u64,
    ) -> Call {
        Call {
            caller,
            callee,
            state,
            a,
            a_invite,
            a_tx: None,
            a_invite_cseq: 0,
            branches: Vec::new(),
            winner: None,
            deadline,
            final_status: None,
            acks: Vec::new(),
            pending_ack: None,
            reinvite_in_progress: false,
            ack_waits: Vec::new(),
            media,
            started_unix: unix,
            answered_unix: None,
            muted: [false, false],
            on_hold: [false, false],
            recording: false,
            a_present: true,
            released: Vec::new(),
            ring: None,
            parked: None,
            own_reinvite: false,
            reinvite_retry: None,
            plan: None,
            step_start: 0,
            callee_offer: None,
            max_forwards: 70,
            a_from_trunk: false,
            code_watch: Default::default(),
            announcement: None,
        }
    }

    /// A call Switchboard places itself (click-to-dial): both sides empty until the
    /// user's device, then the target, answer (see `features`).
    pub(crate) fn originated(
        user: String,
        target: String,
        placeholder: Dialog,
        media: Option<crate::media::CallMedia>,
        now: Instant,
        unix: u64,
    ) -> Call {
        let mut call = Call::new(
            user,
            target,
            CallState::Established,
            placeholder,
            Request::new(Method::Invite, Uri::sip(None, "invalid", None)),
            media,
            now,
            unix,
        );
        call.a_present = false;
        call
    }

    /// Keeps an ACK we sent for a 2xx so that a retransmission of that 2xx is ACKed
    /// again (§13.2.2.4); returns the bytes to send.
    pub(crate) fn remember_ack(
        &mut self,
        call_id: String,
        cseq: u32,
        data: Vec<u8>,
        target: Target,
    ) -> Vec<u8> {
        self.acks.push(SentAck {
            call_id,
            cseq,
            data: data.clone(),
            target,
        });
        data
    }

    pub(crate) fn is_live(&self) -> bool {
        self.state != CallState::Ending
    }
}

/// Headers carried across legs with a relayed request or response body.
const RELAYED_HEADERS: &[&str] = &[
    "Content-Disposition",
    "Info-Package",
    "Event",
    "Reason",
    "Subject",
];

pub(crate) fn copy_relayed_headers(
    from: &switchboard_sip::Headers,
    to: &mut switchboard_sip::Headers,
) {
    if let Some(ct) = from.get(&HeaderName::ContentType) {
        to.set(HeaderName::ContentType, ct);
    }
    for h in from.iter() {
        if RELAYED_HEADERS
            .iter()
            .any(|n| h.name.as_str().eq_ignore_ascii_case(n))
        {
            to.0.push(h.clone());
        }
    }
}

/// Puts a body into a message being relayed. Anchored SDP is always `application/sdp`,
/// and an anchored message without SDP carries no Content-Type.
pub(crate) fn set_body(
    headers: &mut switchboard_sip::Headers,
    slot: &mut Vec<u8>,
    anchored: bool,
    body: Vec<u8>,
) {
    if anchored {
        if body.is_empty() {
            headers.remove(&HeaderName::ContentType);
        } else {
            headers.set(HeaderName::ContentType, "application/sdp");
        }
    }
    *slot = body;
}

/// RFC 3261 §16.7 step 6, applied to the branches of a B2BUA: 6xx wins, then the lowest
/// class; 503 becomes 500 so the caller does not think we are overloaded.
pub(crate) fn best_final(statuses: &[u16]) -> u16 {
    if let Some(s) = statuses.iter().find(|s| **s >= 600) {
        return *s;
    }
    let rank = |s: u16| match s / 100 {
        3 => 0,
        4 => 1,
        _ => 2,
    };
    let best = statuses
        .iter()
        .copied()
        .filter(|s| *s != 487)
        .min_by_key(|s| (rank(*s), if *s == 486 { 0 } else { 1 }))
        .unwrap_or(480);
    if best == 503 {
        500
    } else {
        best
    }
}

impl Engine {
    pub(crate) fn on_invite(&mut self, id: ServerTxId, req: Request, source: Target, now: Instant) {
        if self.shutting_down {
            self.reply(id, &req, 503, now);
            return;
        }
        let max_forwards = match req.max_forwards() {
            Ok(m) => m.unwrap_or(70),
            Err(_) => {
                let resp =
                    Response::for_request(&req, 400, "Bad Max-Forwards", Some(&crate::new_tag()));
                self.respond(id, resp, now);
                return;
            }
        };
        // We re-issue the request, so we are forwarding it: §16.3 step 2.
        if max_forwards == 0 {
            self.reply(id, &req, 483, now);
            return;
        }
        if self.has_looped(&req) {
            self.reply(id, &req, 482, now);
            return;
        }
        let unix = self.unix(now);
        let (Ok(from), Ok(to), Ok(cseq), Ok(call_id)) = (
            req.from(),
            req.to(),
            req.cseq(),
            req.call_id().map(str::to_string),
        ) else {
            self.reply(id, &req, 400, now);
            return;
        };
        // A provider's gateway does not authenticate to us: a trunk's calls are known by
        // their source address. Everyone else proves who they are first.
        let from_trunk = self.trunk_by_source(source, &req);
        let caller_name = if from_trunk.is_some() {
            from.uri
                .user_unescaped()
                .unwrap_or_else(|| "anonymous".to_string())
        } else {
            let caller = match self
                .auth
                .authenticate(&req, Challenge::Proxy, &self.directory, unix)
            {
                AuthOutcome::Authenticated(u) => u,
                AuthOutcome::Reject(resp, why) => {
                    self.note_auth_failure(&req, source, why);
                    self.respond(id, resp, now);
                    return;
                }
            };
            // Caller ID is the authenticated user's: no calling as someone else.
            let from_user = from.uri.user_unescaped();
            if from_user.as_deref() != Some(caller.name.as_str())
                && from_user.as_deref() != caller.extension.as_deref()
            {
                let resp = Response::for_request(
                    &req,
                    403,
                    "From Does Not Match Credentials",
                    Some(&crate::new_tag()),
                );
                self.respond(id, resp, now);
                return;
            }
            caller.name.clone()
        };
        let Some(mut dialled) = req.uri.user_unescaped().filter(|_| req.uri.is_sip()) else {
            self.reply(id, &req, 404, now);
            return;
        };
        if let Some(t) = from_trunk {
            // Sent to our registered contact: the DID is in To (RFC 3261 §10: the
            // Request-URI is then our account, not the number dialled).
            if dialled == self.trunks[t].config.username {
                if let Some(u) = to.uri.user_unescaped() {
                    dialled = u;
                }
            }
        } else {
            if req
                .headers
                .get(&HeaderName::Other("Replaces".into()))
                .is_some()
            {
                self.on_invite_replaces(id, req, &caller_name, source, now);
                return;
            }
            if self.parking.contains_key(&dialled) {
                self.on_retrieve_invite(id, req, &caller_name, source, &dialled, now);
                return;
            }
            if self.is_room_number(&dialled) {
                let user = caller_name.clone();
                return self.conference_invite(id, req, source, user, dialled, now);
            }
            if self.is_conference_factory(&dialled) {
                let user = caller_name.clone();
                return self.conference_factory_invite(id, req, source, user, now);
            }
        }
        let caller_attrs: Vec<(String, String)> = match self.directory.by_name(&caller_name) {
            Some(u) if from_trunk.is_none() => [
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
        let decision = {
            let query = crate::trunk::RouteQuery {
                caller: &caller_name,
                from_trunk: from_trunk.map(|t| self.trunks[t].config.name.as_str()),
                dialled: &dialled,
                headers: &req.headers,
                unix,
                caller_attrs: &caller_attrs,
            };
            match &self.router {
                Some(r) => r.route(&query),
                None => match self.directory.resolve(&dialled) {
                    Some(u) => crate::trunk::RouteDecision::User(u.name.clone()),
                    None => crate::trunk::RouteDecision::NotFound,
                },
            }
        };
        let mut plan_state = crate::plan::PlanState {
            caller: caller_name.clone(),
            dialled: dialled.clone(),
            from_trunk: from_trunk.map(|t| self.trunks[t].config.name.clone()),
            ..Default::default()
        };
        let first = match decision {
            crate::trunk::RouteDecision::User(name) => crate::plan::Step::Devices {
                users: vec![(name, None)],
                timeout: None,
                auto_answer: false,
            },
            crate::trunk::RouteDecision::Trunk {
                trunk,
                number,
                caller_id,
            } => crate::plan::Step::Trunk {
                trunk,
                number,
                caller_id,
                caller_name: None,
                timeout: None,
            },
            crate::trunk::RouteDecision::Actions(actions) => {
                plan_state.actions = actions.into();
                self.plan_next(&mut plan_state)
            }
            crate::trunk::RouteDecision::Reject(status) if (400..700).contains(&status) => {
                self.reply(id, &req, status, now);
                return;
            }
            _ => {
                self.reply(id, &req, 404, now);
                return;
            }
        };
        // Steps that need no call of their own.
        match first {
            crate::plan::Step::Hangup(status) => {
                self.reply(id, &req, status, now);
                return;
            }
            crate::plan::Step::End => {
                self.reply(id, &req, 480, now);
                return;
            }
            crate::plan::Step::Retrieve(slot) => {
                if self.parking.contains_key(&slot) && from_trunk.is_none() {
                    self.on_retrieve_invite(id, req, &caller_name, source, &slot, now);
                } else {
                    self.reply(id, &req, 404, now);
                }
                return;
            }
            crate::plan::Step::Conference(room) => {
                if self.is_room_number(&room) && from_trunk.is_none() {
                    self.conference_invite(id, req, source, caller_name, room, now);
                } else {
                    self.reply(id, &req, 404, now);
                }
                return;
            }
            crate::plan::Step::Trunk { .. } if from_trunk.is_some() => {
                // Never trunk to trunk: that is how toll fraud pays.
                let resp = Response::for_request(
                    &req,
                    403,
                    "No Route From Trunk To Trunk",
                    Some(&crate::new_tag()),
                );
                self.respond(id, resp, now);
                return;
            }
            _ => {}
        }
        let direction = match (&first, from_trunk) {
            (_, Some(_)) => crate::engine::CallDirection::Inbound,
            (crate::plan::Step::Trunk { .. }, None) => crate::engine::CallDirection::Outbound,
            _ => crate::engine::CallDirection::Internal,
        };
        let callee_name = match &first {
            crate::plan::Step::Devices { users, .. } if users.len() == 1 => users[0].0.clone(),
            crate::plan::Step::Trunk { number, .. } => number.clone(),
            _ => dialled.clone(),
        };
        let a_tag = crate::new_tag();
        let trying = Response::for_request(&req, 100, "Trying", None);
        self.respond(id, trying, now);

        let a_contact = req
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|na| na.uri)
            .unwrap_or_else(|| from.uri.clone());
        let a = Dialog {
            call_id: call_id.clone(),
            local_tag: a_tag,
            remote_tag: from.tag().map(str::to_string),
            local_uri: without_tag(to.clone()),
            remote_uri: without_tag(from.clone()),
            remote_target: a_contact,
            route_set: req
                .headers
                .get_all(&HeaderName::RecordRoute)
                .map(str::to_string)
                .collect(),
            local_cseq: 0,
            we_chose_call_id: false,
            target: source,
        };
        let call_key = self.new_call_id();
        // Anchor the media: check the caller's offer, take ports, make the callee offer.
        let (media, callee_offer) = match self.open_media(call_key, &req) {
            Ok(Some((m, body))) => (Some(m), Some(body)),
            Ok(None) => (None, None),
            Err(refusal) => {
                let resp = Response::for_request(
                    &req,
                    refusal.status,
                    refusal.reason,
                    Some(&crate::new_tag()),
                );
                self.respond(id, resp, now);
                return;
            }
        };
        self.dialogs
            .insert((a.call_id.clone(), a.local_tag.clone()), call_key);
        self.server_roles.insert(id, (call_key, ServerRole::Invite));
        let deadline = now + self.config.ring_timeout;
        self.stats.calls_total += 1;
        self.events.push_back(EngineEvent::CallStarted {
            call: call_key,
            caller: caller_name.clone(),
            callee: callee_name.clone(),
            sip_call_id: a.call_id.clone(),
            direction,
        });
        tracing::debug!(call = call_key, caller = %caller_name, callee = %callee_name, "routing");
        let mut call = Call::new(
            caller_name,
            callee_name,
            CallState::Ringing,
            a,
            req,
            media,
            deadline,
            unix,
        );
        call.a_tx = Some(id);
        call.a_invite_cseq = cseq.seq;
        call.plan = Some(Box::new(plan_state));
        call.callee_offer = callee_offer;
        call.max_forwards = max_forwards;
        call.a_from_trunk = from_trunk.is_some();
        self.calls.insert(call_key, call);
        self.run_step(call_key, first, now);
    }

    /// Rings the devices of `users` (all at once) for a call still ringing for its
    /// caller; false when none is registered.
    pub(crate) fn ring_branches(
        &mut self,
        key: u64,
        users: &[(String, Option<Duration>)],
        auto_answer: bool,
        now: Instant,
    ) -> bool {
        let unix = self.unix(now);
        let mut plans = Vec::new();
        for (user, _) in users {
            // A plan names users by name or extension.
            let Some(user) = self.directory.resolve(user).map(|u| u.name.clone()) else {
                tracing::info!(call = key, %user, "a route dials a user that does not exist");
                continue;
            };
            for binding in self.registrar.lookup(&user, unix) {
                plans.push(Plan::Device(user.clone(), binding));
            }
        }
        self.add_branches(key, plans, auto_answer, now) > 0
    }

    /// Sends the INVITEs of one dial step; returns how many went out.
    pub(crate) fn add_branches(
        &mut self,
        key: u64,
        plans: Vec<Plan>,
        auto_answer: bool,
        now: Instant,
    ) -> usize {
        let domain = self.config.domain.clone();
        let Some(call) = self.calls.get(&key) else {
            return 0;
        };
        let req = call.a_invite.clone();
        let callee_offer = call.callee_offer.clone();
        let max_forwards = call.max_forwards;
        let extra: Vec<(String, String)> = call
            .plan
            .as_ref()
            .map(|p| p.headers.clone())
            .unwrap_or_default();
        let caller_name = call.caller.clone();
        let Ok(from) = req.from() else {
            return 0;
        };
        let dialled = req.uri.user_unescaped().unwrap_or_default();
        // Each branch: its dialog, its INVITE and, through a trunk, what a retry needs.
        let mut out: Vec<PlannedBranch> = Vec::new();
        for plan in plans {
            match plan {
                Plan::Device(_user, binding) => {
                    let mut caller =
                        NameAddr::new(Uri::sip(from.uri.user.as_deref(), &domain, None));
                    caller.display_name = from.display_name.clone();
                    let Some((dialog, invite)) =
                        self.device_invite(&binding, caller, &dialled, auto_answer)
                    else {
                        continue;
                    };
                    out.push((dialog, invite, None));
                }
                Plan::Trunk(t, number, caller_id, caller_display) => {
                    let display = caller_display.or_else(|| {
                        self.directory
                            .by_name(&caller_name)
                            .and_then(|u| u.display_name.clone())
                    });
                    let (dialog, invite) =
                        self.trunk_invite(t, &number, caller_id.as_deref(), display);
                    out.push((
                        dialog,
                        invite,
                        Some(Box::new(crate::trunk::TrunkBranch {
                            trunk: t,
                            invite: Request::new(Method::Invite, Uri::sip(None, "x", None)),
                            gateways_tried: 0,
                        })),
                    ));
                }
            }
        }
        let mut sent = 0;
        for (dialog, mut invite, mut trunk) in out {
            invite.headers.set(
                HeaderName::MaxForwards,
                (max_forwards.max(1) - 1).to_string(),
            );
            invite.headers.push(HeaderName::Allow, ALLOW);
            invite
                .headers
                .push(HeaderName::UserAgent, self.config.user_agent.clone());
            copy_relayed_headers(&req.headers, &mut invite.headers);
            for (name, value) in &extra {
                invite
                    .headers
                    .push(HeaderName::from_wire(name), value.clone());
            }
            match &callee_offer {
                Some(body) => {
                    invite
                        .headers
                        .set(HeaderName::ContentType, "application/sdp");
                    invite.body = body.clone();
                }
                None => invite.body = req.body.clone(),
            }
            if let Some(t) = trunk.as_mut() {
                t.invite = invite.clone();
            }
            let invite_cseq = dialog.local_cseq;
            let target = dialog.target;
            self.dialogs
                .insert((dialog.call_id.clone(), dialog.local_tag.clone()), key);
            let Some(tx) = self.send_request(invite, target, now) else {
                continue;
            };
            let Some(call) = self.calls.get_mut(&key) else {
                return sent;
            };
            self.client_roles
                .insert(tx, (key, ClientRole::Branch(call.branches.len())));
            call.branches.push(Branch {
                tx: Some(tx),
                dialog,
                invite_cseq,
                state: BranchState::Calling,
                cancelled: false,
                trunk,
            });
            sent += 1;
        }
        sent
    }

    /// Answers the caller's INVITE with a final response of our own (408, 487, 503).
    pub(crate) fn finish_ringing(&mut self, key: u64, status: u16, now: Instant) {
        self.finish_caller_with(key, status, now);
    }

    /// True when the call's route has more to do after the current step.
    pub(crate) fn plan_has_more(&self, key: u64) -> bool {
        self.calls
            .get(&key)
            .and_then(|c| c.plan.as_ref())
            .is_some_and(|p| !p.actions.is_empty() || !p.sequential.is_empty())
    }

    /// Cancels what still rings in the current dial step.
    pub(crate) fn cancel_step(&mut self, key: u64, now: Instant) {
        let Some(start) = self.calls.get(&key).map(|c| c.step_start) else {
            return;
        };
        self.cancel_branches_from(key, start, now);
    }

    /// CANCELs every branch from `start` on that is still ringing (once each).
    fn cancel_branches_from(&mut self, key: u64, start: usize, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let to_cancel: Vec<ClientTxId> = call.branches[start..]
            .iter_mut()
            .filter(|b| {
                matches!(b.state, BranchState::Calling | BranchState::Early) && !b.cancelled
            })
            .filter_map(|b| {
                b.cancelled = true;
                b.tx
            })
            .collect();
        for tx in to_cancel {
            let _ = self.tx.send_cancel(tx, now);
        }
    }

    /// Answers the caller's INVITE with a final response of our own (408, 487, 503).
    fn finish_caller_with(&mut self, key: u64, status: u16, now: Instant) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let resp = Response::for_request(
            &call.a_invite,
            status,
            reason_phrase(status),
            Some(&call.a.local_tag),
        );
        self.finish_caller(key, resp, now);
    }

    /// Answers the caller's INVITE with a final response and records the outcome.
    fn finish_caller(&mut self, key: u64, resp: Response, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(a_tx) = call.a_tx.take() else {
            return;
        };
        let status = resp.status;
        call.final_status = Some(status);
        let (caller, callee) = (call.caller.clone(), call.callee.clone());
        self.server_roles.remove(&a_tx);
        self.respond(a_tx, resp, now);
        if status >= 300 {
            // Record the outcome before `set_ending`: when no branch is left to clean up
            // (a lone device answered 486) it forgets the call at once, and reading the
            // call afterwards would silently drop the call record.
            self.events.push_back(EngineEvent::CallEnded {
                call: key,
                caller,
                callee,
                outcome: CallOutcome::from_status(status),
                status,
            });
            self.set_ending(key, now);
        }
    }

    /// Marks a call as over for the caller and cancels whatever still rings. The call
    /// object stays until every branch is done, so a late 2xx is ACKed and hung up.
    fn set_ending(&mut self, key: u64, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        call.state = CallState::Ending;
        // Branches get 64*T1 to finish after CANCEL (Timer B's span), then we forget them.
        let cleanup = now + self.config.timers.t1 * 64 + Duration::from_secs(1);
        call.deadline = cleanup;
        self.deadlines.push(Reverse((cleanup, key)));
        self.cancel_branches_from(key, 0, now);
        self.remove_if_done(key);
    }

    fn remove_if_done(&mut self, key: u64) {
        let done = self.calls.get(&key).is_some_and(|c| {
            c.state == CallState::Ending
                && c.a_tx.is_none()
                && c.branches
                    .iter()
                    .all(|b| matches!(b.state, BranchState::Done(_)))
        });
        if done {
            self.forget_call(key);
        }
    }

    pub(crate) fn forget_call(&mut self, key: u64) {
        let Some(call) = self.calls.remove(&key) else {
            return;
        };
        if let Some(media) = &call.media {
            self.close_media(key, media);
        }
        self.unmap_dialog(key, &(call.a.call_id.clone(), call.a.local_tag.clone()));
        // A call that ends stops retransmitting its 2xx: a BYE from the caller proves
        // the 2xx arrived even if its ACK was lost (§15.1.1), and after our own BYE the
        // 2xx has nothing left to confirm.
        for (id, call_id, cseq) in &call.ack_waits {
            self.ack_waiters.remove(id);
            self.tx.ack_received(call_id, *cseq);
        }
        for b in &call.branches {
            self.unmap_dialog(key, &(b.dialog.call_id.clone(), b.dialog.local_tag.clone()));
            if let Some(tx) = b.tx {
                self.client_roles.remove(&tx);
            }
        }
        for d in &call.released {
            self.unmap_dialog(key, &(d.call_id.clone(), d.local_tag.clone()));
        }
        if let Some(ring) = &call.ring {
            for b in &ring.branches {
                self.unmap_dialog(key, &(b.dialog.call_id.clone(), b.dialog.local_tag.clone()));
                if let Some(tx) = b.tx {
                    self.client_roles.remove(&tx);
                }
            }
        }
        if let Some(p) = &call.parked {
            self.parking.remove(&p.slot);
        }
    }

    pub(crate) fn on_call_deadline(&mut self, key: u64, at: Instant, now: Instant) {
        let Some(call) = self.calls.get(&key) else {
            self.conference_deadline(key, at, now);
            return;
        };
        if call.deadline != at {
            return; // superseded
        }
        match call.state {
            CallState::Ringing => {
                tracing::debug!(call = key, "no answer before the ring timeout");
                if self.plan_has_more(key) {
                    // This step rang long enough: cancel it and go on with the route.
                    self.cancel_step(key, now);
                    self.plan_continue(key, 408, now);
                } else {
                    self.finish_caller_with(key, 408, now);
                }
            }
            CallState::Ending => self.forget_call(key),
            CallState::Answered | CallState::Established => self.on_feature_deadline(key, now),
        }
    }

    pub(crate) fn on_cancel(
        &mut self,
        cancel_tx: ServerTxId,
        invite_tx: Option<ServerTxId>,
        cancel_status: u16,
        cancel: &Request,
        now: Instant,
    ) {
        let Some(invite_tx) = invite_tx else {
            // The layer says 200 when the CANCEL matched an INVITE transaction that already
            // sent its final response (the CANCEL/200 race: RFC 3261 §9.2, the CANCEL has
            // no effect but is answered 200) and 481 only when it matched nothing.
            self.reply(cancel_tx, cancel, cancel_status, now);
            return;
        };
        let key = match self.server_roles.get(&invite_tx).copied() {
            Some((key, ServerRole::Invite)) if self.calls.contains_key(&key) => Some(key),
            _ => None,
        };
        // §9.2: the 200 to CANCEL SHOULD carry the To tag of the INVITE's response.
        let tag = key
            .and_then(|k| self.calls.get(&k))
            .map_or_else(crate::new_tag, |c| c.a.local_tag.clone());
        let ok = Response::for_request(cancel, 200, "OK", Some(&tag));
        self.respond(cancel_tx, ok, now);
        let Some(key) = key else {
            return;
        };
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if call.state == CallState::Ringing {
            self.finish_caller_with(key, 487, now);
        }
    }

    pub(crate) fn on_client_response(&mut self, id: ClientTxId, resp: Response, now: Instant) {
        if self.conference_response(id, &resp, now) {
            return;
        }
        if self.trunk_txs.contains_key(&id) {
            self.on_trunk_register_response(id, Some(resp), now);
            return;
        }
        let Some((key, role)) = self.client_roles.get(&id).cloned() else {
            return;
        };
        match role {
            ClientRole::Branch(i) => self.on_branch_response(key, i, resp, now),
            ClientRole::Relay {
                server,
                request,
                from_a,
                renegotiation,
            } => {
                if resp.is_final() {
                    self.client_roles.remove(&id);
                }
                self.on_relay_response(
                    key,
                    server,
                    &request,
                    from_a,
                    renegotiation.as_deref(),
                    resp,
                    now,
                );
            }
            ClientRole::Own => {
                if resp.is_final() {
                    self.client_roles.remove(&id);
                }
            }
            ClientRole::Ring(i) => self.on_ring_response(key, i, resp, now),
            ClientRole::OwnReinvite(r) => {
                if resp.is_final() {
                    self.client_roles.remove(&id);
                }
                self.on_own_reinvite_response(key, *r, resp, now);
            }
            ClientRole::ToRoom(r) => {
                if resp.is_final() {
                    self.client_roles.remove(&id);
                    self.on_to_room_response(key, *r, Some(resp), now);
                }
            }
        }
    }

    pub(crate) fn on_client_failure(&mut self, id: ClientTxId, now: Instant) {
        if self.conference_client_failure(id, now) {
            return;
        }
        if self.trunk_txs.contains_key(&id) {
            self.on_trunk_register_response(id, None, now);
            return;
        }
        let Some((key, role)) = self.client_roles.get(&id).cloned() else {
            return;
        };
        match role {
            ClientRole::Branch(i) => {
                let Some(call) = self.calls.get(&key) else {
                    return;
                };
                let mut resp = Response::new(408, "Request Timeout");
                resp.headers = call.branches[i].dialog_response_headers();
                self.on_branch_response(key, i, resp, now);
            }
            ClientRole::Relay {
                server, request, ..
            } => {
                self.client_roles.remove(&id);
                if let Some(call) = self.calls.get_mut(&key) {
                    if request.method == Method::Invite {
                        call.reinvite_in_progress = false;
                    }
                }
                self.server_roles.remove(&server);
                self.reply_in_dialog(server, &request, 408, now);
            }
            ClientRole::Own => {
                self.client_roles.remove(&id);
            }
            ClientRole::Ring(i) => {
                let Some(ring) = self.calls.get(&key).and_then(|c| c.ring.as_ref()) else {
                    return;
                };
                let Some(b) = ring.branches.get(i) else {
                    return;
                };
                let mut resp = Response::new(408, "Request Timeout");
                resp.headers = b.dialog_response_headers();
                self.on_ring_response(key, i, resp, now);
            }
            ClientRole::OwnReinvite(r) => {
                self.client_roles.remove(&id);
                let mut resp = Response::new(408, "Request Timeout");
                resp.headers = switchboard_sip::Headers::new();
                self.on_own_reinvite_response(key, *r, resp, now);
            }
            ClientRole::ToRoom(r) => {
                self.client_roles.remove(&id);
                self.on_to_room_response(key, *r, None, now);
            }
        }
    }

    pub(crate) fn reply_in_dialog(
        &mut self,
        id: ServerTxId,
        req: &Request,
        status: u16,
        now: Instant,
    ) {
        self.reply_in_dialog_because(id, req, status, reason_phrase(status), now);
    }

    /// As [`Engine::reply_in_dialog`], with a reason phrase that says why (a refusal's
    /// own text).
    pub(crate) fn reply_in_dialog_because(
        &mut self,
        id: ServerTxId,
        req: &Request,
        status: u16,
        reason: &str,
        now: Instant,
    ) {
        let resp = Response::for_request(req, status, reason, None);
        self.respond(id, resp, now);
    }

    fn on_branch_response(&mut self, key: u64, i: usize, mut resp: Response, now: Instant) {
        if self.trunk_branch_retry(key, i, &mut resp, now) {
            return;
        }
        let local = self.config.local.clone();
        // With media anchored the caller only ever sees our SDP: our answer to its offer
        // (or our offer, for a late offer), made from what this device answered.
        let anchored = self.calls.get(&key).is_some_and(|c| c.media.is_some());
        let ringing = self
            .calls
            .get(&key)
            .is_some_and(|c| c.state == CallState::Ringing && c.winner.is_none());
        let caller_sdp = if anchored && ringing && (101..300).contains(&resp.status) {
            self.media_callee_answered(key, &resp)
        } else {
            None
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let status = resp.status;
        match status {
            100 => {}
            101..=199 => {
                if call.branches[i].state == BranchState::Calling {
                    call.branches[i].state = BranchState::Early;
                }
                if call.state == CallState::Ringing {
                    if let Some(a_tx) = call.a_tx {
                        let mut out = Response::for_request(
                            &call.a_invite,
                            status,
                            &resp.reason,
                            Some(&call.a.local_tag),
                        );
                        let body = if anchored {
                            caller_sdp
                        } else {
                            (!resp.body.is_empty()).then(|| resp.body.clone())
                        };
                        if let Some(body) = body {
                            out.headers
                                .push(HeaderName::Contact, local.contact(call.a.target));
                            copy_relayed_headers(&resp.headers, &mut out.headers);
                            set_body(&mut out.headers, &mut out.body, anchored, body);
                        }
                        self.respond(a_tx, out, now);
                    }
                }
            }
            200..=299 => {
                let already_acked = call.acks.iter().find(|a| {
                    a.call_id == call.branches[i].dialog.call_id
                        && a.cseq == call.branches[i].invite_cseq
                });
                if let Some(ack) = already_acked {
                    // Our ACK was lost: the callee retransmits its 2xx (§13.2.2.4).
                    let (data, target) = (ack.data.clone(), ack.target);
                    self.send_direct(data, target);
                    return;
                }
                if call.winner == Some(i) {
                    return; // retransmission before the caller's ACK: ours will follow
                }
                call.branches[i].dialog.confirm_from_response(&resp);
                call.branches[i].state = BranchState::Answered;
                if call.state == CallState::Ringing && call.winner.is_none() {
                    call.winner = Some(i);
                    call.state = CallState::Answered;
                    call.deadline = now; // the ring timer no longer applies
                    let mut out = Response::for_request(
                        &call.a_invite,
                        status,
                        &resp.reason,
                        Some(&call.a.local_tag),
                    );
                    out.headers
                        .push(HeaderName::Contact, local.contact(call.a.target));
                    out.headers.push(HeaderName::Allow, ALLOW);
                    copy_relayed_headers(&resp.headers, &mut out.headers);
                    let body = if anchored {
                        caller_sdp.unwrap_or_default()
                    } else {
                        resp.body.clone()
                    };
                    set_body(&mut out.headers, &mut out.body, anchored, body);
                    let others: Vec<ClientTxId> = call
                        .branches
                        .iter_mut()
                        .enumerate()
                        .filter(|(j, b)| {
                            *j != i
                                && matches!(b.state, BranchState::Calling | BranchState::Early)
                                && !b.cancelled
                        })
                        .filter_map(|(_, b)| {
                            b.cancelled = true;
                            b.tx
                        })
                        .collect();
                    let caller = call.caller.clone();
                    for tx in others {
                        let _ = self.tx.send_cancel(tx, now);
                    }
                    if let Some(a_tx) = self.calls.get_mut(&key).and_then(|c| c.a_tx.take()) {
                        self.server_roles.remove(&a_tx);
                        self.ack_waiters.insert(a_tx, key);
                        if let Some(c) = self.calls.get_mut(&key) {
                            c.ack_waits
                                .push((a_tx, c.a.call_id.clone(), c.a_invite_cseq));
                        }
                        self.respond(a_tx, out, now);
                    }
                    let unix = self.unix(now);
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.final_status = Some(status);
                        c.answered_unix = Some(unix);
                    }
                    self.stats.calls_answered += 1;
                    self.events
                        .push_back(EngineEvent::CallAnswered { call: key });
                    tracing::debug!(call = key, %caller, "answered");
                    if let Some(c) = self.calls.get(&key).filter(|c| c.media.is_some()) {
                        let (call_id, caller, callee) =
                            (c.a.call_id.clone(), c.caller.clone(), c.callee.clone());
                        if self.record_if_policy(key, &call_id, &caller, &callee) {
                            if let Some(c) = self.calls.get_mut(&key) {
                                c.recording = true;
                            }
                        }
                    }
                } else {
                    // Another branch won, or the caller is gone: ACK and hang up this one.
                    let b = &mut call.branches[i];
                    let ack = b.dialog.ack(b.invite_cseq, &local, &new_branch());
                    let target = b.dialog.target;
                    let bye = b.dialog.request(Method::Bye, &local, &new_branch());
                    b.state = BranchState::Done(status);
                    let (call_id, cseq) = (b.dialog.call_id.clone(), b.invite_cseq);
                    let data = call.remember_ack(call_id, cseq, ack.to_bytes(), target);
                    self.send_direct(data, target);
                    if let Some(tx) = self.send_request(bye, target, now) {
                        self.client_roles.insert(tx, (key, ClientRole::Own));
                    }
                    self.remove_if_done(key);
                }
            }
            _ => {
                call.branches[i].state = BranchState::Done(status);
                // Only the current dial step counts: earlier steps were cancelled.
                let current = i >= call.step_start;
                let all_done = call.branches[call.step_start..]
                    .iter()
                    .all(|b| matches!(b.state, BranchState::Done(_)));
                if call.state == CallState::Ringing && all_done && current {
                    let statuses: Vec<u16> = call.branches[call.step_start..]
                        .iter()
                        .filter_map(|b| match b.state {
                            BranchState::Done(s) => Some(s),
                            _ => None,
                        })
                        .collect();
                    let best = best_final(&statuses);
                    let reason = if best == status {
                        resp.reason.clone()
                    } else {
                        reason_phrase(best).to_string()
                    };
                    let mut out = Response::for_request(
                        &call.a_invite,
                        best,
                        &reason,
                        Some(&call.a.local_tag),
                    );
                    if best == status {
                        for name in [HeaderName::RetryAfter, HeaderName::Reason] {
                            if let Some(v) = resp.headers.get(&name) {
                                out.headers.push(name, v);
                            }
                        }
                    }
                    if self.plan_has_more(key) {
                        // The route goes on (the next user, a trunk, a hang-up cause).
                        self.plan_continue(key, best, now);
                    } else {
                        self.finish_caller(key, out, now);
                    }
                }
                self.remove_if_done(key);
            }
        }
    }

    pub(crate) fn on_ack(&mut self, ack: Request, _source: Target, _now: Instant) {
        let local = self.config.local.clone();
        let (Ok(call_id), Ok(to), Ok(cseq)) = (ack.call_id(), ack.to(), ack.cseq()) else {
            return;
        };
        let Some(tag) = to.tag() else {
            return;
        };
        if self.conference_ack(&ack) {
            return;
        }
        let Some(&key) = self.dialogs.get(&(call_id.to_string(), tag.to_string())) else {
            return; // an ACK for nothing we know: drop (§17.2.3, never answered)
        };
        self.tx.ack_received(call_id, cseq.seq);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let anchored = call.media.is_some();
        let from_a = call.a.call_id == call_id && call.a.local_tag == tag;
        if from_a && call.state == CallState::Answered && cseq.seq == call.a_invite_cseq {
            call.state = CallState::Established;
            let Some(w) = call.winner else { return };
            let b = &call.branches[w];
            let mut out = b.dialog.ack(b.invite_cseq, &local, &new_branch());
            copy_relayed_headers(&ack.headers, &mut out.headers);
            // Anchored: the callee answered our offer already; the caller's ACK (a late
            // offer's answer) is ours to read, not to pass on.
            let body = if anchored {
                Vec::new()
            } else {
                ack.body.clone()
            };
            set_body(&mut out.headers, &mut out.body, anchored, body);
            let data = out.to_bytes();
            let target = b.dialog.target;
            let data = call.remember_ack(b.dialog.call_id.clone(), b.invite_cseq, data, target);
            self.send_direct(data, target);
            if anchored {
                self.media_caller_acked(key, &ack);
            }
            return;
        }
        // The ACK of a relayed re-INVITE's 2xx: ACK the far leg's 2xx now.
        let Some(p) = call.pending_ack.as_ref() else {
            return;
        };
        if p.from_a != from_a || p.origin_cseq != cseq.seq {
            return;
        }
        let Some(p) = call.pending_ack.take() else {
            return;
        };
        let body = match &p.media {
            Some(pending) => self.media_relay_ack(key, from_a, pending, &ack),
            None if anchored => Vec::new(),
            None => ack.body.clone(),
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let far_cseq = p.far_cseq;
        let Some(far) = far_dialog(call, from_a) else {
            return;
        };
        let mut out = far.ack(far_cseq, &local, &new_branch());
        copy_relayed_headers(&ack.headers, &mut out.headers);
        set_body(&mut out.headers, &mut out.body, anchored, body);
        let data = out.to_bytes();
        let target = far.target;
        let far_call_id = far.call_id.clone();
        call.acks
            .retain(|a| a.call_id != far_call_id || a.cseq < far_cseq);
        let data = call.remember_ack(far_call_id, far_cseq, data, target);
        self.send_direct(data, target);
    }

    pub(crate) fn on_in_dialog_request(
        &mut self,
        id: ServerTxId,
        req: Request,
        tag: &str,
        _source: Target,
        now: Instant,
    ) {
        let local = self.config.local.clone();
        let Ok(call_id) = req.call_id().map(str::to_string) else {
            self.reply(id, &req, 400, now);
            return;
        };
        if self.conference_in_dialog(id, &req, tag, now) {
            return;
        }
        let Some(&key) = self.dialogs.get(&(call_id.clone(), tag.to_string())) else {
            self.reply_in_dialog(id, &req, 481, now);
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            self.reply_in_dialog(id, &req, 481, now);
            return;
        };
        let from_a = call.a_present && call.a.call_id == call_id && call.a.local_tag == tag;
        let from_winner = call
            .winner
            .is_some_and(|w| call.branches[w].dialog.call_id == call_id);
        if !from_a && !from_winner {
            // A party we released (transferor, replaced or parked-away leg), or a losing
            // branch already hung up by us.
            let released = call
                .released
                .iter()
                .position(|d| d.call_id == call_id && d.local_tag == tag);
            if let Some(i) = released {
                self.on_released_request(key, i, id, &req, now);
            } else {
                self.reply_in_dialog(id, &req, 481, now);
            }
            return;
        }
        if !matches!(call.state, CallState::Answered | CallState::Established) {
            // Early-dialog requests (UPDATE before answer) are not relayed yet.
            let mut resp = Response::for_request(&req, 491, "Request Pending", None);
            resp.headers.push(HeaderName::RetryAfter, "1");
            self.respond(id, resp, now);
            return;
        }
        if matches!(req.method, Method::Invite | Method::Update) {
            let contact = req.headers.get(&HeaderName::Contact).map(str::to_string);
            if let Some(d) = near_dialog(call, from_a) {
                d.refresh_target(contact.as_deref());
            }
        }
        if req.method == Method::Info {
            // DTMF by SIP INFO (application/dtmf-relay, application/dtmf): reported like
            // any other key press, and still relayed so the other party gets it too.
            let content_type = req
                .headers
                .get(&HeaderName::ContentType)
                .unwrap_or_default()
                .to_string();
            if let Ok(d) = switchboard_media::dtmf::parse_info_body(&content_type, &req.body) {
                self.events.push_back(EngineEvent::Dtmf {
                    call: key,
                    caller: from_a,
                    digit: d.digit,
                    duration_ms: d.duration_ms,
                    source: "info",
                });
                if from_a && self.in_menu(key) {
                    // A menu's digit: nobody to relay it to (see `ivr`).
                    self.reply_in_dialog(id, &req, 200, now);
                    self.ivr_digit(key, d.digit, now);
                    return;
                }
                if self.feature_digit(key, usize::from(!from_a), d.digit, now) {
                    // The key completed a feature code: the sender is being parked away
                    // from the other party, so this last key is not relayed.
                    self.reply_in_dialog(id, &req, 200, now);
                    return;
                }
            }
        }
        if req.method == Method::Refer {
            self.on_refer(key, id, req, from_a, now);
            return;
        }
        let far_missing = self
            .calls
            .get_mut(&key)
            .is_some_and(|c| far_dialog(c, from_a).is_none());
        if req.method == Method::Bye && self.on_bye_during_feature(key, id, &req, from_a, now) {
            return;
        }
        if far_missing {
            // Parked, or the other side is being rung: nobody to relay to.
            self.answer_alone(key, id, req, from_a, now);
            return;
        }
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if req.method == Method::Bye {
            // Each leg is ours to end: answer at once, then hang up the other leg.
            let Some(far) = far_dialog(call, from_a) else {
                return;
            };
            let mut bye = far.request(Method::Bye, &local, &new_branch());
            copy_relayed_headers(&req.headers, &mut bye.headers);
            let target = far.target;
            let resp = Response::for_request(&req, 200, "OK", None);
            self.respond(id, resp, now);
            if let Some(tx) = self.send_request(bye, target, now) {
                self.client_roles.insert(tx, (key, ClientRole::Own));
            }
            self.end_established(key, now);
            return;
        }
        if req.method == Method::Invite {
            if call.reinvite_in_progress || call.own_reinvite {
                self.reply_in_dialog(id, &req, 491, now);
                return;
            }
            call.reinvite_in_progress = true;
        }
        let anchored = call.media.is_some();
        let carries_sdp = matches!(req.method, Method::Invite | Method::Update);
        let (body, renegotiation) = if anchored && carries_sdp {
            match self.media_relay_request(key, from_a, &req) {
                Some((body, r)) => (body, Some(Box::new(r))),
                None => (Vec::new(), None),
            }
        } else {
            (req.body.clone(), None)
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(far) = far_dialog(call, from_a) else {
            self.reply_in_dialog(id, &req, 481, now);
            return;
        };
        let mut out = far.request(req.method.clone(), &local, &new_branch());
        copy_relayed_headers(&req.headers, &mut out.headers);
        set_body(
            &mut out.headers,
            &mut out.body,
            anchored && carries_sdp,
            body,
        );
        let target = far.target;
        let Some(tx) = self.send_request(out, target, now) else {
            if let Some(call) = self.calls.get_mut(&key) {
                call.reinvite_in_progress = false;
            }
            self.reply_in_dialog(id, &req, 500, now);
            return;
        };
        self.client_roles.insert(
            tx,
            (
                key,
                ClientRole::Relay {
                    server: id,
                    request: Box::new(req),
                    from_a,
                    renegotiation,
                },
            ),
        );
        self.server_roles.insert(id, (key, ServerRole::Relay));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_relay_response(
        &mut self,
        key: u64,
        server: ServerTxId,
        request: &Request,
        from_a: bool,
        renegotiation: Option<&crate::media::Renegotiation>,
        resp: Response,
        now: Instant,
    ) {
        let local = self.config.local.clone();
        let carries_sdp = matches!(request.method, Method::Invite | Method::Update);
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let anchored = call.media.is_some();
        // A retransmitted 2xx to a relayed INVITE that we already ACKed: ACK it again.
        let far_cseq = resp.cseq().map(|c| c.seq).unwrap_or(0);
        let far_call_id = if from_a {
            call.winner.map(|w| call.branches[w].dialog.call_id.clone())
        } else {
            Some(call.a.call_id.clone())
        };
        if resp.is_success() && request.method == Method::Invite {
            if let Some(a) = call
                .acks
                .iter()
                .find(|a| Some(&a.call_id) == far_call_id.as_ref() && a.cseq == far_cseq)
            {
                let (data, target) = (a.data.clone(), a.target);
                self.send_direct(data, target);
                return;
            }
        }
        let (media_body, media_pending) = match renegotiation {
            Some(r) if anchored && carries_sdp && resp.status > 100 => {
                self.media_relay_response(key, from_a, r, &resp)
            }
            _ => (None, None),
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if resp.status == 100 {
            return; // the server transaction sends its own 100
        }
        let is_invite = request.method == Method::Invite;
        if resp.is_final() {
            self.server_roles.remove(&server);
            if is_invite {
                call.reinvite_in_progress = false;
            }
        }
        if resp.is_success() && matches!(request.method, Method::Invite | Method::Update) {
            let contact = resp.headers.get(&HeaderName::Contact).map(str::to_string);
            if let Some(far) = far_dialog(call, from_a) {
                far.refresh_target(contact.as_deref());
            }
        }
        if resp.is_success() && is_invite {
            call.pending_ack = Some(PendingAck {
                from_a,
                origin_cseq: request.cseq().map(|c| c.seq).unwrap_or(0),
                far_cseq,
                media: media_pending,
            });
        }
        let mut out = Response::for_request(request, resp.status, &resp.reason, None);
        if resp.is_success() && matches!(request.method, Method::Invite | Method::Update) {
            let near_target = near_dialog(call, from_a).map(|d| d.target);
            if let Some(t) = near_target {
                out.headers.push(HeaderName::Contact, local.contact(t));
            }
        }
        for name in [
            HeaderName::RetryAfter,
            HeaderName::Unsupported,
            HeaderName::Allow,
        ] {
            if let Some(v) = resp.headers.get(&name) {
                out.headers.push(name, v);
            }
        }
        copy_relayed_headers(&resp.headers, &mut out.headers);
        if out.is_success() && is_invite {
            self.ack_waiters.insert(server, key);
            call.ack_waits.push((
                server,
                request.call_id().unwrap_or_default().to_string(),
                request.cseq().map(|c| c.seq).unwrap_or(0),
            ));
        }
        if anchored && carries_sdp {
            set_body(
                &mut out.headers,
                &mut out.body,
                true,
                media_body.unwrap_or_default(),
            );
        } else {
            out.body = resp.body;
        }
        self.respond(server, out, now);
    }

    /// The caller (or, for a relayed re-INVITE, either party) never ACKed a 2xx we sent
    /// (§13.3.1.4): end both legs.
    pub(crate) fn on_ack_timeout(&mut self, id: ServerTxId, now: Instant) {
        if self.conference_ack_timeout(id, now) {
            return;
        }
        if let Some(key) = self.ack_waiters.remove(&id) {
            tracing::info!(call = key, "a 2xx was never acknowledged; hanging up");
            self.hang_up_both(key, now);
        }
    }

    /// Sends BYE on every confirmed leg and ends the call.
    pub(crate) fn hang_up_both(&mut self, key: u64, now: Instant) {
        self.cancel_ring(key, now);
        // A parker still hearing its slot is not on a side any more: BYE it too.
        if let Some(a) = self.calls.get_mut(&key).and_then(|c| c.announcement.take()) {
            if let crate::say::AfterAnnouncement::Release { dialog } = a.then {
                self.bye_released(key, &dialog, now);
            }
        }
        let local = self.config.local.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let mut byes = Vec::new();
        if call.a_present {
            let a_bye = call.a.request(Method::Bye, &local, &new_branch());
            byes.push((a_bye, call.a.target));
        }
        if let Some(w) = call.winner {
            // The callee's 2xx is ACKed only when the caller ACKs ours; if that never
            // happened (the caller's ACK timed out, or shutdown came first) ACK it now:
            // a UAC ACKs every 2xx before it sends BYE (RFC 3261 §13.2.2.4), and the
            // callee would otherwise retransmit its 2xx for 64*T1 after the BYE.
            let (call_id, cseq, target) = {
                let b = &call.branches[w];
                (b.dialog.call_id.clone(), b.invite_cseq, b.dialog.target)
            };
            let acked = call
                .acks
                .iter()
                .any(|a| a.call_id == call_id && a.cseq == cseq);
            if !acked {
                let data = call.branches[w]
                    .dialog
                    .ack(cseq, &local, &new_branch())
                    .to_bytes();
                let data = call.remember_ack(call_id, cseq, data, target);
                // Queued before the BYEs: direct sends are drained first.
                self.transmits
                    .push_back(switchboard_sip::transaction::Transmit {
                        target,
                        data: data.into(),
                    });
            }
            let b = &mut call.branches[w];
            let d = &mut b.dialog;
            byes.push((d.request(Method::Bye, &local, &new_branch()), d.target));
        }
        for (bye, target) in byes {
            if let Some(tx) = self.send_request(bye, target, now) {
                self.client_roles.insert(tx, (key, ClientRole::Own));
            }
        }
        self.end_established(key, now);
    }

    pub(crate) fn end_established(&mut self, key: u64, _now: Instant) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        self.events.push_back(EngineEvent::CallEnded {
            call: key,
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            outcome: CallOutcome::Answered,
            status: call.final_status.unwrap_or(200),
        });
        self.forget_call(key);
    }

    pub(crate) fn end_call_for_shutdown(&mut self, key: u64, now: Instant) {
        self.end_call(key, 503, now);
    }

    /// The call's media failed (port unusable, RTP stopped): a ringing call gets 500.
    pub(crate) fn end_call_for_media(&mut self, key: u64, now: Instant) {
        self.end_call(key, 500, now);
    }

    /// Ends a call whatever its state: `ringing_status` to a caller still waiting, BYE on
    /// both legs of an answered call.
    pub(crate) fn end_call(&mut self, key: u64, ringing_status: u16, now: Instant) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        match call.state {
            CallState::Ringing => {
                self.finish_caller_with(key, ringing_status, now);
            }
            CallState::Answered | CallState::Established => self.hang_up_both(key, now),
            CallState::Ending => {}
        }
    }

    /// A response that matches no client transaction: a 2xx retransmitted after the
    /// INVITE transaction ended. Re-send the ACK we sent for it, if any.
    pub(crate) fn on_stray_response(&mut self, resp: Response, _now: Instant) {
        if !resp.is_success() || self.conference_stray_response(&resp) {
            return;
        }
        let (Ok(call_id), Ok(from), Ok(cseq)) = (resp.call_id(), resp.from(), resp.cseq()) else {
            return;
        };
        if cseq.method != Method::Invite {
            return;
        }
        let Some(tag) = from.tag() else { return };
        let Some(key) = self.dialogs.get(&(call_id.to_string(), tag.to_string())) else {
            return;
        };
        let Some(call) = self.calls.get(key) else {
            return;
        };
        if let Some(a) = call
            .acks
            .iter()
            .find(|a| a.call_id == call_id && a.cseq == cseq.seq)
        {
            let (data, target) = (a.data.clone(), a.target);
            self.send_direct(data, target);
        }
    }

    /// Calls that are not over for the caller (for /metrics).
    pub fn live_calls(&self) -> usize {
        self.calls.values().filter(|c| c.is_live()).count()
    }
}

impl Engine {
    pub(crate) fn drain_after_command(&mut self, now: Instant) {
        self.drain_tx_events(now);
    }

    pub(crate) fn list_calls(&self, _now: Instant) -> Vec<crate::command::CallInfo> {
        use crate::command::{CallInfo, Party};
        let mut calls: Vec<CallInfo> = self
            .calls
            .iter()
            .filter(|(_, c)| c.is_live())
            .map(|(key, c)| {
                let sides = [Party::Caller, Party::Callee];
                let held = c.media.as_ref().map_or(Vec::new(), |m| {
                    sides
                        .iter()
                        .copied()
                        .filter(|p| m.is_holding(side_leg(*p)) || c.on_hold[side_index(*p)])
                        .collect()
                });
                CallInfo {
                    call: *key,
                    caller: c.caller.clone(),
                    callee: c.callee.clone(),
                    state: match c.state {
                        CallState::Ringing => "ringing",
                        _ if c.parked.is_some() => "parked",
                        _ if c.ring.is_some() && c.answered_unix.is_none() => "originating",
                        _ if c.ring.is_some() => "transferring",
                        _ => "answered",
                    },
                    started_unix: c.started_unix,
                    answered_unix: c.answered_unix,
                    held,
                    muted: sides
                        .iter()
                        .copied()
                        .filter(|p| c.muted[side_index(*p)])
                        .collect(),
                    recording: c.recording,
                }
            })
            .collect();
        calls.sort_by_key(|c| c.call);
        calls
    }

    fn live_call(&self, key: u64) -> Result<&Call, crate::command::CommandError> {
        self.calls
            .get(&key)
            .filter(|c| c.is_live())
            .ok_or(crate::command::CommandError::NoSuchCall(key))
    }

    fn answered_call(&self, key: u64) -> Result<&Call, crate::command::CommandError> {
        let call = self.live_call(key)?;
        if call.state == CallState::Ringing {
            return Err(crate::command::CommandError::Conflict(format!(
                "call {key} is not answered yet"
            )));
        }
        Ok(call)
    }

    pub(crate) fn command_hangup(
        &mut self,
        key: u64,
        now: Instant,
    ) -> Result<crate::command::CommandReply, crate::command::CommandError> {
        self.live_call(key)?;
        // A ringing call ends for the caller as if the callee declined.
        self.end_call(key, 480, now);
        Ok(crate::command::CommandReply::Accepted)
    }

    pub(crate) fn command_mute(
        &mut self,
        key: u64,
        party: crate::command::Party,
        muted: bool,
    ) -> Result<crate::command::CommandReply, crate::command::CommandError> {
        let call = self.answered_call(key)?;
        if call.media.is_none() {
            return Err(crate::command::CommandError::Unavailable(
                "media is not anchored (--media-anchor off)".into(),
            ));
        }
        let i = side_index(party);
        if let Some(c) = self.calls.get_mut(&key) {
            if c.muted[i] == muted {
                return Ok(crate::command::CommandReply::Accepted);
            }
            c.muted[i] = muted;
        }
        self.events
            .push_back(EngineEvent::Media(crate::media::MediaCommand::Mute {
                call: key,
                leg: side_leg(party),
                muted,
            }));
        self.events.push_back(EngineEvent::History {
            call: key,
            event: crate::engine::CallHistory::Muted { party, muted },
        });
        Ok(crate::command::CommandReply::Accepted)
    }

    /// Server-side hold: `party` hears music and is not heard (the other party hears
    /// silence); no re-INVITE, so it works with any phone.
    pub(crate) fn command_hold(
        &mut self,
        key: u64,
        party: crate::command::Party,
        hold: bool,
    ) -> Result<crate::command::CommandReply, crate::command::CommandError> {
        let call = self.answered_call(key)?;
        if call.media.is_none() {
            return Err(crate::command::CommandError::Unavailable(
                "media is not anchored (--media-anchor off)".into(),
            ));
        }
        let i = side_index(party);
        if call.on_hold[i] == hold {
            return Err(crate::command::CommandError::Conflict(if hold {
                format!("the {} of call {key} is already on hold", party.as_str())
            } else {
                format!("the {} of call {key} is not on hold", party.as_str())
            }));
        }
        let muted = call.muted[i];
        if let Some(c) = self.calls.get_mut(&key) {
            c.on_hold[i] = hold;
        }
        self.media_moh(key, i, hold);
        if !muted {
            self.events
                .push_back(EngineEvent::Media(crate::media::MediaCommand::Mute {
                    call: key,
                    leg: side_leg(party),
                    muted: hold,
                }));
        }
        let event = if hold {
            crate::engine::CallHistory::Held { party }
        } else {
            crate::engine::CallHistory::Resumed { party }
        };
        self.events
            .push_back(EngineEvent::History { call: key, event });
        Ok(crate::command::CommandReply::Accepted)
    }

    pub(crate) fn command_record(
        &mut self,
        key: u64,
        start: bool,
    ) -> Result<crate::command::CommandReply, crate::command::CommandError> {
        let call = self.answered_call(key)?;
        if call.media.is_none() {
            return Err(crate::command::CommandError::Unavailable(
                "media is not anchored (--media-anchor off)".into(),
            ));
        }
        if call.recording == start {
            return Err(crate::command::CommandError::Conflict(if start {
                format!("call {key} is already being recorded")
            } else {
                format!("call {key} is not being recorded")
            }));
        }
        let (call_id, caller, callee) = (
            call.a.call_id.clone(),
            call.caller.clone(),
            call.callee.clone(),
        );
        if let Some(c) = self.calls.get_mut(&key) {
            c.recording = start;
        }
        let (command, event) = if start {
            (
                crate::media::MediaCommand::StartRecording {
                    call: key,
                    call_id,
                    caller,
                    callee,
                },
                crate::engine::CallHistory::RecordingStarted,
            )
        } else {
            (
                crate::media::MediaCommand::StopRecording { call: key },
                crate::engine::CallHistory::RecordingStopped,
            )
        };
        self.events.push_back(EngineEvent::Media(command));
        self.events
            .push_back(EngineEvent::History { call: key, event });
        Ok(crate::command::CommandReply::Accepted)
    }
}

fn side_index(p: crate::command::Party) -> usize {
    match p {
        crate::command::Party::Caller => 0,
        crate::command::Party::Callee => 1,
    }
}

fn side_leg(p: crate::command::Party) -> switchboard_media::relay::Leg {
    match p {
        crate::command::Party::Caller => switchboard_media::relay::Leg::A,
        crate::command::Party::Callee => switchboard_media::relay::Leg::B,
    }
}

/// The dialog on the other side from the originator of a request.
pub(crate) fn far_dialog(call: &mut Call, from_a: bool) -> Option<&mut Dialog> {
    if from_a {
        let w = call.winner?;
        Some(&mut call.branches[w].dialog)
    } else if call.a_present {
        Some(&mut call.a)
    } else {
        None
    }
}

/// The originator's own dialog.
pub(crate) fn near_dialog(call: &mut Call, from_a: bool) -> Option<&mut Dialog> {
    far_dialog(call, !from_a)
}

impl Engine {
    /// A trunk branch's 401/407 is answered with the provider's credentials, and its
    /// timeout or 5xx tries the next gateway; true when the branch was sent again. A
    /// challenge we cannot answer reaches the caller as 403.
    fn trunk_branch_retry(
        &mut self,
        key: u64,
        i: usize,
        resp: &mut Response,
        now: Instant,
    ) -> bool {
        let status = resp.status;
        let retryable = matches!(status, 401 | 407 | 408 | 500..=599);
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        if !retryable || call.state != CallState::Ringing {
            return false;
        }
        let Some(b) = call.branches.get_mut(i) else {
            return false;
        };
        if b.cancelled || !matches!(b.state, BranchState::Calling | BranchState::Early) {
            return false;
        }
        let Some(mut trunk) = b.trunk.take() else {
            return false;
        };
        let mut dialog = b.dialog.clone();
        let old_tx = b.tx;
        let challenge = matches!(status, 401 | 407).then_some(&*resp);
        let retried = self.trunk_retry(&mut trunk, &mut dialog, challenge, now);
        let Some(call) = self.calls.get_mut(&key) else {
            return false;
        };
        let b = &mut call.branches[i];
        b.trunk = Some(trunk);
        match retried {
            Some((tx, cseq)) => {
                b.dialog = dialog;
                b.invite_cseq = cseq;
                b.tx = Some(tx);
                if let Some(old) = old_tx {
                    self.client_roles.remove(&old);
                }
                self.client_roles.insert(tx, (key, ClientRole::Branch(i)));
                true
            }
            None => {
                if matches!(status, 401 | 407) {
                    tracing::warn!(call = key, "the provider refused the trunk's credentials");
                    resp.status = 403;
                    resp.reason = "Trunk Authentication Failed".into();
                }
                false
            }
        }
    }
}

impl Branch {
    /// Headers for a synthesized response on this branch (a local 408).
    pub(crate) fn dialog_response_headers(&self) -> switchboard_sip::Headers {
        let mut h = switchboard_sip::Headers::new();
        h.push(HeaderName::CallId, self.dialog.call_id.clone());
        h.push(HeaderName::CSeq, format!("{} INVITE", self.invite_cseq));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::best_final;

    #[test]
    fn best_final_prefers_6xx_then_lowest_class() {
        assert_eq!(best_final(&[486, 603]), 603);
        assert_eq!(best_final(&[480, 486]), 486);
        assert_eq!(best_final(&[503]), 500);
        assert_eq!(best_final(&[408, 500]), 408);
        assert_eq!(best_final(&[487]), 480);
    }
}
