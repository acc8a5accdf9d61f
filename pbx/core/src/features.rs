//! Call features on top of the two-party B2BUA (`call`): blind transfer (REFER, RFC 3515,
//! progress reported by NOTIFY with `message/sipfrag`), attended transfer (REFER whose
//! Refer-To carries `Replaces`, and INVITE with `Replaces`, RFC 3891), park and retrieve,
//! and calls Switchboard places itself (originate, with auto-answer headers).
//!
//! Everything here is one of four moves on a call's two sides (0: caller side, 1: callee
//! side): ring a user's devices to take a side ([`SideRing`]), let a party that called in
//! take a side (retrieve, Replaces), release a side's party (BYE, kept in `released` to
//! absorb its own BYE), or move a party from one call into another with a re-INVITE
//! pointing its media at the other call's ports ([`OwnReinvite`]). Media stays anchored on
//! the call's own port pairs throughout, so a side's new party only reconfigures a leg.
//!
//! Must never: drop the remaining party when a transfer target fails (the call goes on as
//! it was), or let a released party's late requests reach anyone.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use switchboard_media::sdp::SessionDescription;
use switchboard_sip::header::NameAddr;
use switchboard_sip::message::reason_phrase;
use switchboard_sip::transaction::{new_branch, ServerTxId, Target};
use switchboard_sip::{HeaderName, Method, Request, Response, Uri};

use crate::call::{Branch, BranchState, CallState, ClientRole};
use crate::command::{CommandError, CommandReply, ParkedInfo, Party};
use crate::dialog::{without_tag, Dialog};
use crate::engine::{CallHistory, Engine, EngineEvent, TransferKind, ALLOW};
use crate::registrar::Binding;

/// Park and auto-answer settings.
#[derive(Debug, Clone)]
pub struct FeatureConfig {
    /// Dialled, or transferred to, to park in the first free slot.
    pub park_extension: String,
    /// Pressed during a bridged call, parks the other party (see `feature_code`); empty
    /// disables it.
    pub park_code: String,
    /// The longest pause between two keys of an in-call feature code.
    pub feature_digit_timeout: Duration,
    /// Park slots, inclusive; a parked call is retrieved by dialling its slot.
    pub park_slots: (u32, u32),
    /// How long a call stays parked before the parker's devices are rung back.
    pub park_timeout: Duration,
    /// Auto-answer headers for devices no profile matches.
    pub auto_answer: AutoAnswerProfile,
}

impl Default for FeatureConfig {
    fn default() -> FeatureConfig {
        FeatureConfig {
            park_extension: "700".into(),
            // Asterisk's conventional parkcall code (features.conf); its digit timeout.
            park_code: "#72".into(),
            feature_digit_timeout: Duration::from_millis(1000),
            park_slots: (701, 720),
            park_timeout: Duration::from_secs(45),
            auto_answer: AutoAnswerProfile::Standard,
        }
    }
}

/// Which auto-answer headers a device honours. Phones disagree, so the profile is chosen
/// per device from its User-Agent (see [`AutoAnswerProfile::for_user_agent`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoAnswerProfile {
    /// `Call-Info: <sip:domain>;answer-after=0` (RFC 5373's model as phones implement it)
    /// and `Alert-Info: <sip:domain>;info=alert-autoanswer;delay=0`: together they cover
    /// Grandstream, Cisco SPA, Yealink, Fanvil, Zoiper and most softphones.
    Standard,
    /// Polycom: `Alert-Info: Ring-Answer` (an alert class the phone maps to auto-answer).
    Polycom,
    /// Snom and Yealink intercom: `Call-Info: <sip:domain>;answer-after=0` plus
    /// `Alert-Info: <sip:domain>;info=alert-autoanswer` and the `intercom=true` parameter.
    Intercom,
}

impl AutoAnswerProfile {
    pub fn parse(s: &str) -> Option<AutoAnswerProfile> {
        match s.to_ascii_lowercase().as_str() {
            "standard" => Some(AutoAnswerProfile::Standard),
            "polycom" => Some(AutoAnswerProfile::Polycom),
            "intercom" => Some(AutoAnswerProfile::Intercom),
            _ => None,
        }
    }

    /// The profile for a device by its User-Agent, else `default`.
    pub fn for_user_agent(user_agent: Option<&str>, default: AutoAnswerProfile) -> Self {
        let ua = user_agent.unwrap_or_default().to_ascii_lowercase();
        if ua.contains("polycom") {
            AutoAnswerProfile::Polycom
        } else if ua.contains("snom") || ua.contains("yealink") {
            AutoAnswerProfile::Intercom
        } else {
            default
        }
    }

    /// The headers to add to an INVITE toward such a device.
    pub fn headers(self, domain: &str) -> Vec<(HeaderName, String)> {
        let call_info = (
            HeaderName::Other("Call-Info".into()),
            format!("<sip:{domain}>;answer-after=0"),
        );
        let alert = |extra: &str| {
            (
                HeaderName::Other("Alert-Info".into()),
                format!("<sip:{domain}>;info=alert-autoanswer{extra}"),
            )
        };
        match self {
            AutoAnswerProfile::Standard => vec![call_info, alert(";delay=0")],
            AutoAnswerProfile::Polycom => vec![(
                HeaderName::Other("Alert-Info".into()),
                "Ring-Answer".to_string(),
            )],
            AutoAnswerProfile::Intercom => vec![
                (
                    HeaderName::Other("Call-Info".into()),
                    format!("<sip:{domain}>;answer-after=0;intercom=true"),
                ),
                alert(""),
            ],
        }
    }
}

/// Why devices are being rung to take a side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RingPurpose {
    /// A blind transfer (REFER or the API) to a user.
    Transfer,
    /// A parked call timed out: ring the parker back.
    ParkRingBack { slot: String },
    /// The API retrieves a parked call onto a user's phone.
    Retrieve { slot: String },
    /// Click-to-dial, first step: the user's own phone (auto-answer); then `target`.
    OriginateUser { target: String },
    /// Click-to-dial, second step: the number the user wants.
    OriginateTarget,
    /// A dial step of the call's route, after the caller was answered by us (IVR).
    Plan,
}

/// Devices being rung to take one side of a call.
#[derive(Debug)]
pub(crate) struct SideRing {
    pub(crate) side: usize,
    pub(crate) purpose: RingPurpose,
    /// The user being rung (the first, when several are).
    pub(crate) target: String,
    /// The user of each branch.
    pub(crate) users: Vec<String>,
    pub(crate) branches: Vec<Branch>,
    /// Our offer (media anchored).
    pub(crate) offer: Option<SessionDescription>,
    /// Who asked (the transferor, the API's user).
    pub(crate) by: Option<String>,
    /// The REFER's dialog (Call-ID, our tag), told the progress by NOTIFY.
    pub(crate) notify: Option<(String, String)>,
    pub(crate) deadline: Instant,
    pub(crate) won: Option<usize>,
}

/// A call waiting in a park slot.
#[derive(Debug, Clone)]
pub(crate) struct ParkState {
    pub(crate) slot: String,
    /// The side the parked party is on.
    pub(crate) side: usize,
    pub(crate) parker: Option<String>,
    pub(crate) since_unix: u64,
    pub(crate) timeout_unix: u64,
    pub(crate) deadline: Instant,
}

/// A re-INVITE of our own, in the dialog of the party on `side` of the call it is sent
/// from.
#[derive(Debug, Clone)]
pub(crate) struct OwnReinvite {
    pub(crate) side: usize,
    pub(crate) offer: Option<SessionDescription>,
    pub(crate) cseq: u32,
    pub(crate) purpose: ReinvitePurpose,
}

#[derive(Debug, Clone)]
pub(crate) enum ReinvitePurpose {
    /// Two-way audio again after the party's holder left (transfer, retrieve).
    Resume,
    /// Attended transfer: the party moves into `to_call`'s `to_side`, replacing the
    /// transferor there; `notify` is the REFER dialog in the original call.
    MoveTo {
        to_call: u64,
        to_side: usize,
        origin: (String, u64),
        notify: Option<(String, String)>,
        by: Option<String>,
    },
}

/// A parsed `Replaces` value (RFC 3891 §6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replaces {
    pub(crate) call_id: String,
    pub(crate) to_tag: String,
    pub(crate) from_tag: String,
}

impl Replaces {
    pub(crate) fn parse(value: &str) -> Option<Replaces> {
        let mut parts = value.split(';');
        let call_id = parts.next()?.trim().to_string();
        let (mut to_tag, mut from_tag) = (None, None);
        for p in parts {
            let (name, v) = p.split_once('=').unwrap_or((p, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to_tag = Some(v.trim().to_string()),
                "from-tag" => from_tag = Some(v.trim().to_string()),
                _ => {}
            }
        }
        if call_id.is_empty() {
            return None;
        }
        Some(Replaces {
            call_id,
            to_tag: to_tag?,
            from_tag: from_tag?,
        })
    }
}

pub(crate) fn party_of(side: usize) -> Party {
    if side == 0 {
        Party::Caller
    } else {
        Party::Callee
    }
}

pub(crate) fn side_of(party: Party) -> usize {
    match party {
        Party::Caller => 0,
        Party::Callee => 1,
    }
}

/// The sipfrag body of a NOTIFY for a REFER (RFC 3515 §2.4.5).
fn sipfrag(status: u16) -> Vec<u8> {
    format!("SIP/2.0 {status} {}\r\n", reason_phrase(status)).into_bytes()
}

/// A NOTIFY in `dialog` reporting a REFER's progress (RFC 3515 §2.4.4): `status` in a
/// sipfrag body; the implicit subscription ends with a final status.
pub(crate) fn refer_notify(
    dialog: &mut Dialog,
    local: &crate::dialog::LocalAddress,
    status: u16,
) -> Request {
    let mut notify = dialog.request(Method::Notify, local, &new_branch());
    notify.headers.push(HeaderName::Event, "refer");
    let state = if status >= 200 {
        "terminated;reason=noresource"
    } else {
        "active;expires=60"
    };
    notify
        .headers
        .push(HeaderName::Other("Subscription-State".into()), state);
    notify
        .headers
        .push(HeaderName::Contact, local.contact(dialog.target));
    notify.set_body(sipfrag(status), Some("message/sipfrag;version=2.0"));
    notify
}

impl Engine {
    /// A new dialog toward one registered device of `callee`, and its INVITE (Allow,
    /// User-Agent and, when asked, the device profile's auto-answer headers; no body).
    /// `caller` is who the device is shown as calling. `None`: the binding's Contact does
    /// not parse.
    pub(crate) fn device_invite(
        &self,
        binding: &Binding,
        caller: NameAddr,
        callee: &str,
        auto_answer: bool,
    ) -> Option<(Dialog, Request)> {
        let contact_uri = Uri::parse(&binding.contact).ok()?;
        let domain = &self.config.domain;
        let mut dialog = Dialog {
            call_id: crate::new_sip_call_id(&self.config.local.host),
            local_tag: crate::new_tag(),
            remote_tag: None,
            local_uri: caller,
            remote_uri: NameAddr::new(Uri::sip(Some(callee), domain, None)),
            remote_target: contact_uri,
            route_set: binding.path.clone(),
            local_cseq: 0,
            we_chose_call_id: true,
            target: binding.source,
        };
        let mut invite = dialog.request(Method::Invite, &self.config.local, &new_branch());
        invite.headers.push(HeaderName::Allow, ALLOW);
        invite
            .headers
            .push(HeaderName::UserAgent, self.config.user_agent.clone());
        if auto_answer {
            let profile = AutoAnswerProfile::for_user_agent(
                binding.user_agent.as_deref(),
                self.config.features.auto_answer,
            );
            for (name, value) in profile.headers(domain) {
                invite.headers.push(name, value);
            }
        }
        Some((dialog, invite))
    }

    // ----- sides -------------------------------------------------------------------

    pub(crate) fn side_present(&self, key: u64, side: usize) -> bool {
        self.calls.get(&key).is_some_and(|c| {
            if side == 0 {
                c.a_present
            } else {
                c.winner.is_some()
            }
        })
    }

    pub(crate) fn side_dialog(&mut self, key: u64, side: usize) -> Option<&mut Dialog> {
        let call = self.calls.get_mut(&key)?;
        if side == 0 {
            call.a_present.then_some(&mut call.a)
        } else {
            let w = call.winner?;
            Some(&mut call.branches[w].dialog)
        }
    }

    /// Takes the party off `side` for good (it moved elsewhere): its dialog is no longer
    /// this call's.
    pub(crate) fn detach_side(&mut self, key: u64, side: usize) {
        if let Some(d) = self.take_side(key, side) {
            self.unmap_dialog(key, &(d.call_id, d.local_tag));
        }
    }

    /// Takes the party off `side`: its dialog is returned (still mapped to the call so
    /// its late requests are answered, see `released`).
    fn take_side(&mut self, key: u64, side: usize) -> Option<Dialog> {
        let call = self.calls.get_mut(&key)?;
        if side == 0 {
            if !call.a_present {
                return None;
            }
            call.a_present = false;
            Some(call.a.clone())
        } else {
            let w = call.winner.take()?;
            call.branches[w].state = BranchState::Done(200);
            Some(call.branches[w].dialog.clone())
        }
    }

    /// Puts a dialog on an empty side.
    fn put_side(&mut self, key: u64, side: usize, dialog: Dialog, branch: Option<Branch>) {
        self.dialogs
            .insert((dialog.call_id.clone(), dialog.local_tag.clone()), key);
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if side == 0 {
            call.a = dialog;
            call.a_present = true;
            // Parties put on a side are users' devices (retrieve, Replaces, a ring).
            call.a_from_trunk = false;
        } else {
            let b = branch.unwrap_or(Branch {
                tx: None,
                dialog,
                invite_cseq: 0,
                state: BranchState::Answered,
                cancelled: false,
                trunk: None,
            });
            call.branches.push(b);
            call.winner = Some(call.branches.len() - 1);
        }
    }

    fn set_side_name(&mut self, key: u64, side: usize, name: &str) -> String {
        let Some(call) = self.calls.get_mut(&key) else {
            return String::new();
        };
        let slot = if side == 0 {
            &mut call.caller
        } else {
            &mut call.callee
        };
        std::mem::replace(slot, name.to_string())
    }

    pub(crate) fn side_name(&self, key: u64, side: usize) -> String {
        self.calls
            .get(&key)
            .map(|c| {
                if side == 0 {
                    c.caller.clone()
                } else {
                    c.callee.clone()
                }
            })
            .unwrap_or_default()
    }

    /// Sends BYE to a party taken off its side and keeps its dialog to answer its own
    /// BYE crossing ours.
    fn release(&mut self, key: u64, dialog: Dialog, now: Instant) {
        let local = self.config.local.clone();
        let mut d = dialog;
        let bye = d.request(Method::Bye, &local, &new_branch());
        let target = d.target;
        if let Some(tx) = self.send_request(bye, target, now) {
            self.client_roles.insert(tx, (key, ClientRole::Own));
        }
        self.dialogs
            .insert((d.call_id.clone(), d.local_tag.clone()), key);
        if let Some(call) = self.calls.get_mut(&key) {
            call.released.push(d);
        }
    }

    /// Takes the parker off `side` but keeps its dialog (still mapped to the call) in
    /// `released`, where its requests are answered and a BYE can end it later. Returns
    /// the dialog's (Call-ID, our tag).
    pub(crate) fn take_parker(&mut self, key: u64, side: usize) -> Option<(String, String)> {
        let d = self.take_side(key, side)?;
        let id = (d.call_id.clone(), d.local_tag.clone());
        self.calls.get_mut(&key)?.released.push(d);
        Some(id)
    }

    /// Sends BYE in a dialog kept in `released` (a parker that heard its slot); nothing
    /// when that party already hung up.
    pub(crate) fn bye_released(&mut self, key: u64, dialog: &(String, String), now: Instant) {
        let local = self.config.local.clone();
        let Some(d) = self.calls.get_mut(&key).and_then(|c| {
            c.released
                .iter_mut()
                .find(|d| d.call_id == dialog.0 && d.local_tag == dialog.1)
        }) else {
            return;
        };
        let bye = d.request(Method::Bye, &local, &new_branch());
        let target = d.target;
        if let Some(tx) = self.send_request(bye, target, now) {
            self.client_roles.insert(tx, (key, ClientRole::Own));
        }
    }

    /// Sends a NOTIFY for a REFER in the dialog (Call-ID, our tag) of this call, if that
    /// dialog is still a side or released.
    pub(crate) fn notify_refer(
        &mut self,
        key: u64,
        dialog: &(String, String),
        status: u16,
        now: Instant,
    ) {
        let local = self.config.local.clone();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let matches = |d: &Dialog| d.call_id == dialog.0 && d.local_tag == dialog.1;
        let d = if call.a_present && matches(&call.a) {
            Some(&mut call.a)
        } else if let Some(w) = call.winner.filter(|w| matches(&call.branches[*w].dialog)) {
            Some(&mut call.branches[w].dialog)
        } else {
            call.released.iter_mut().find(|d| matches(d))
        };
        let Some(d) = d else {
            return;
        };
        let notify = refer_notify(d, &local, status);
        let target = d.target;
        if let Some(tx) = self.send_request(notify, target, now) {
            self.client_roles.insert(tx, (key, ClientRole::Own));
        }
    }

    fn history(&mut self, call: u64, event: CallHistory) {
        self.events.push_back(EngineEvent::History { call, event });
    }

    // ----- requests in a call's dialogs ---------------------------------------------

    /// A request in a dialog we released: its BYE (crossing ours) is answered 200 and the
    /// dialog forgotten; anything else is refused.
    pub(crate) fn on_released_request(
        &mut self,
        key: u64,
        index: usize,
        id: ServerTxId,
        req: &Request,
        now: Instant,
    ) {
        match req.method {
            Method::Bye => {
                self.reply_in_dialog(id, req, 200, now);
                if let Some(call) = self.calls.get_mut(&key) {
                    let d = call.released.remove(index);
                    let dialog = (d.call_id, d.local_tag);
                    // A parker that hangs up before its announcement ends.
                    self.forget_announcement_of(key, &dialog);
                    self.unmap_dialog(key, &dialog);
                }
            }
            Method::Notify | Method::Info => self.reply_in_dialog(id, req, 200, now),
            _ => self.reply_in_dialog(id, req, 481, now),
        }
    }

    /// Removes a dialog → call mapping if it still points at `key` (a party that moved
    /// to another call keeps its mapping there).
    pub(crate) fn unmap_dialog(&mut self, key: u64, dialog: &(String, String)) {
        if self.dialogs.get(dialog) == Some(&key) {
            self.dialogs.remove(dialog);
        }
    }

    /// BYE while a feature is under way; true when handled here.
    pub(crate) fn on_bye_during_feature(
        &mut self,
        key: u64,
        id: ServerTxId,
        req: &Request,
        from_a: bool,
        now: Instant,
    ) -> bool {
        let side = usize::from(!from_a);
        let Some(call) = self.calls.get(&key) else {
            return false;
        };
        let ring_side = call.ring.as_ref().map(|r| r.side);
        let parked = call.parked.is_some();
        let alone = !self.side_present(key, 1 - side);
        // The transferor of an attended transfer, or the referrer of a move into a room,
        // hanging up before the move is done. Both moves are our re-INVITE (in flight or
        // to be retried): only then are the client transactions searched, not on every
        // ordinary hang-up.
        let moving = call.own_reinvite || call.reinvite_retry.is_some();
        let referrer_left = moving
            && self
                .referred_room_move(key)
                .or_else(|| self.attended_move(key))
                .is_some_and(|moving| moving != side);
        if ring_side.is_none() && !parked && !alone && !referrer_left {
            return false;
        }
        self.reply_in_dialog(id, req, 200, now);
        if let Some(d) = self.take_side(key, side) {
            self.unmap_dialog(key, &(d.call_id, d.local_tag));
        }
        if ring_side == Some(side) {
            // The transferor hung up after REFER (RFC 5589 §6 allows it): the transfer
            // goes on; if it fails now, the transferee has nobody to go back to.
            tracing::debug!(call = key, "transferor left; the transfer continues");
            return true;
        }
        if referrer_left {
            // As for a blind transfer: the move goes on; if it fails, the party that was
            // to move is alone in the call and is hung up.
            tracing::debug!(call = key, "referrer left; the move continues");
            return true;
        }
        // The party that stays (transferee, parked party) or a lone party hung up.
        self.hang_up_both(key, now);
        true
    }

    /// An in-dialog request while nobody is on the other side (parked, ringing a
    /// transfer target): answered by us.
    pub(crate) fn answer_alone(
        &mut self,
        key: u64,
        id: ServerTxId,
        req: Request,
        from_a: bool,
        now: Instant,
    ) {
        let side = usize::from(!from_a);
        match req.method {
            Method::Invite | Method::Update => {
                let anchored = self.calls.get(&key).is_some_and(|c| c.media.is_some());
                if !anchored {
                    self.reply_in_dialog(id, &req, 491, now);
                    return;
                }
                let Some(body) = self.media_side_answer(key, side, &req.headers, &req.body) else {
                    self.reply_in_dialog(id, &req, 488, now);
                    return;
                };
                let local = self.config.local.clone();
                let mut resp = Response::for_request(&req, 200, "OK", None);
                if let Some(d) = self.side_dialog(key, side) {
                    d.refresh_target(req.headers.get(&HeaderName::Contact));
                    resp.headers
                        .push(HeaderName::Contact, local.contact(d.target));
                }
                resp.set_body(body, Some("application/sdp"));
                if req.method == Method::Invite {
                    self.ack_waiters.insert(id, key);
                    if let Some(c) = self.calls.get_mut(&key) {
                        c.ack_waits.push((
                            id,
                            req.call_id().unwrap_or_default().to_string(),
                            req.cseq().map(|c| c.seq).unwrap_or(0),
                        ));
                    }
                }
                self.respond(id, resp, now);
            }
            Method::Info | Method::Notify | Method::Options => {
                self.reply_in_dialog(id, &req, 200, now)
            }
            Method::Bye => {
                self.reply_in_dialog(id, &req, 200, now);
                self.hang_up_both(key, now);
            }
            _ => self.reply_in_dialog(id, &req, 403, now),
        }
    }

    /// REFER in a call's dialog (RFC 3515): we carry the transfer out ourselves.
    pub(crate) fn on_refer(
        &mut self,
        key: u64,
        id: ServerTxId,
        req: Request,
        from_a: bool,
        now: Instant,
    ) {
        let side = usize::from(!from_a);
        let Some(refer_to) = req
            .headers
            .get(&HeaderName::ReferTo)
            .and_then(|v| NameAddr::parse(v).ok())
        else {
            let resp = Response::for_request(&req, 400, "Missing or Bad Refer-To", None);
            self.respond(id, resp, now);
            return;
        };
        if self.calls.get(&key).is_some_and(|c| c.media.is_none()) {
            // Without anchored media we cannot re-point anyone's audio.
            let resp = Response::for_request(&req, 501, "Transfer Needs Anchored Media", None);
            self.respond(id, resp, now);
            return;
        }
        let busy = self
            .calls
            .get(&key)
            .is_none_or(|c| c.ring.is_some() || c.parked.is_some() || c.own_reinvite);
        if busy {
            self.reply_in_dialog(id, &req, 491, now);
            return;
        }
        let by = Some(self.side_name(key, side));
        let dialog_id = (
            req.call_id().unwrap_or_default().to_string(),
            req.to()
                .ok()
                .and_then(|t| t.tag().map(str::to_string))
                .unwrap_or_default(),
        );
        if let Some(replaces) = refer_to
            .uri
            .headers
            .as_deref()
            .and_then(replaces_from_uri_headers)
        {
            self.attended_by_refer(key, side, id, &req, &replaces, dialog_id, by, now);
            return;
        }
        let Some(target) = refer_to
            .uri
            .user_unescaped()
            .filter(|_| refer_to.uri.is_sip())
        else {
            self.reply_in_dialog(id, &req, 404, now);
            return;
        };
        if self.is_room_number(&target) {
            // A phone building a network conference (RFC 4579 §5): the transferee joins
            // the room instead of ringing anyone.
            self.refer_into_room(key, side, id, &req, dialog_id, target, now);
            return;
        }
        if self.is_park_target(&target) {
            let slot = (target != self.config.features.park_extension).then_some(target);
            match self.park(key, 1 - side, slot, by, now) {
                Ok(slot) => {
                    let mut resp = Response::for_request(&req, 202, "Accepted", None);
                    resp.headers
                        .push(HeaderName::Other("X-Park-Slot".into()), slot.clone());
                    self.respond(id, resp, now);
                    self.notify_refer(key, &dialog_id, 200, now);
                    // The parker's leg is ours to release once told (RFC 5589 §6 leaves
                    // the BYE to the transferor; not every phone sends it).
                    if let Some(d) = self.take_side(key, side) {
                        self.release(key, d, now);
                    }
                }
                Err(e) => {
                    let status = if matches!(e, CommandError::Conflict(_)) {
                        486
                    } else {
                        503
                    };
                    let resp = Response::for_request(&req, status, &e.to_string(), None);
                    self.respond(id, resp, now);
                }
            }
            return;
        }
        let resp = Response::for_request(&req, 202, "Accepted", None);
        self.respond(id, resp, now);
        self.notify_refer(key, &dialog_id, 100, now);
        let user = self.directory.resolve(&target).map(|u| u.name.clone());
        let started = match user {
            Some(user) => self.start_ring(
                key,
                side,
                &user,
                RingPurpose::Transfer,
                by,
                Some(dialog_id.clone()),
                false,
                now,
            ),
            None => Err(CommandError::NoSuchUser(target.clone())),
        };
        if let Err(e) = started {
            let status = match e {
                CommandError::NoSuchUser(_) => 404,
                CommandError::NotRegistered(_) => 480,
                _ => 503,
            };
            self.notify_refer(key, &dialog_id, status, now);
            self.history(
                key,
                CallHistory::TransferFailed {
                    party: party_of(1 - side),
                    to: target,
                    status,
                },
            );
        }
    }

    /// The side of `key` being moved into another call by an attended transfer (our
    /// re-INVITE in flight, or waiting to be sent again after a 491), if one is.
    fn attended_move(&self, key: u64) -> Option<usize> {
        let in_flight = self.client_roles.values().find_map(|(k, role)| match role {
            ClientRole::OwnReinvite(r)
                if *k == key && matches!(r.purpose, ReinvitePurpose::MoveTo { .. }) =>
            {
                Some(r.side)
            }
            _ => None,
        });
        in_flight.or_else(|| {
            self.calls
                .get(&key)?
                .reinvite_retry
                .as_ref()
                .filter(|(_, _, p)| matches!(p, ReinvitePurpose::MoveTo { .. }))
                .map(|(_, side, _)| *side)
        })
    }

    fn is_park_target(&self, dialled: &str) -> bool {
        let f = &self.config.features;
        dialled == f.park_extension
            || dialled
                .parse::<u32>()
                .is_ok_and(|n| (f.park_slots.0..=f.park_slots.1).contains(&n))
                && !dialled.starts_with('0')
    }

    // ----- ringing a side ------------------------------------------------------------

    /// Rings `user`'s devices to take `side` of the call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_ring(
        &mut self,
        key: u64,
        side: usize,
        user: &str,
        purpose: RingPurpose,
        by: Option<String>,
        notify: Option<(String, String)>,
        auto_answer: bool,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.start_ring_many(
            key,
            side,
            &[user.to_string()],
            purpose,
            by,
            notify,
            auto_answer,
            None,
            now,
        )
    }

    /// Rings several users' devices at once for a side (a dial step of a route after
    /// the caller was answered by us).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_ring_users(
        &mut self,
        key: u64,
        side: usize,
        users: &[String],
        purpose: RingPurpose,
        auto_answer: bool,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.start_ring_many(
            key,
            side,
            users,
            purpose,
            None,
            None,
            auto_answer,
            timeout,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_ring_many(
        &mut self,
        key: u64,
        side: usize,
        users: &[String],
        purpose: RingPurpose,
        by: Option<String>,
        notify: Option<(String, String)>,
        auto_answer: bool,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<(), CommandError> {
        let unix = self.unix(now);
        let bindings: Vec<(String, Binding)> = users
            .iter()
            .flat_map(|u| {
                self.registrar
                    .lookup(u, unix)
                    .into_iter()
                    .map(move |b| (u.clone(), b))
            })
            .collect();
        let user = users.first().map(String::as_str).unwrap_or_default();
        if bindings.is_empty() {
            return Err(CommandError::NotRegistered(users.join(", ")));
        }
        let offer = if self.calls.get(&key).is_some_and(|c| c.media.is_some()) {
            Some(
                self.media_side_offer(key, side, true)
                    .ok_or_else(|| CommandError::Unavailable("no media for the call".into()))?,
            )
        } else {
            None
        };
        // The device sees the party it will talk to as the caller.
        let shown = self.side_name(key, 1 - side);
        let shown_display = self
            .directory
            .by_name(&shown)
            .and_then(|u| u.display_name.clone());
        let domain = self.config.domain.clone();
        let mut branches = Vec::new();
        let mut branch_users = Vec::new();
        for (user, binding) in &bindings {
            let user = user.as_str();
            let mut caller = NameAddr::new(Uri::sip(Some(&shown), &domain, None));
            caller.display_name = shown_display.clone();
            let Some((dialog, mut invite)) = self.device_invite(binding, caller, user, auto_answer)
            else {
                continue;
            };
            if let Some(by) = &by {
                invite
                    .headers
                    .push(HeaderName::ReferredBy, format!("<sip:{by}@{domain}>"));
            }
            if let Some(o) = &offer {
                invite.set_body(o.to_bytes(), Some("application/sdp"));
            }
            let invite_cseq = dialog.local_cseq;
            let Some(tx) = self.send_request(invite, binding.source, now) else {
                continue;
            };
            self.dialogs
                .insert((dialog.call_id.clone(), dialog.local_tag.clone()), key);
            self.client_roles
                .insert(tx, (key, ClientRole::Ring(branches.len())));
            branch_users.push(user.to_string());
            branches.push(Branch {
                tx: Some(tx),
                dialog,
                invite_cseq,
                state: BranchState::Calling,
                cancelled: false,
                trunk: None,
            });
        }
        if branches.is_empty() {
            return Err(CommandError::NotRegistered(user.to_string()));
        }
        let deadline = now + timeout.unwrap_or(self.config.ring_timeout);
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(CommandError::NoSuchCall(key));
        };
        call.ring = Some(Box::new(SideRing {
            side,
            purpose,
            target: user.to_string(),
            users: branch_users,
            branches,
            offer,
            by,
            notify,
            deadline,
            won: None,
        }));
        call.deadline = deadline;
        self.deadlines.push(Reverse((deadline, key)));
        Ok(())
    }

    /// Cancels whatever still rings for a side (the call is ending).
    pub(crate) fn cancel_ring(&mut self, key: u64, now: Instant) {
        let Some(ring) = self.calls.get_mut(&key).and_then(|c| c.ring.take()) else {
            return;
        };
        self.cancel_ring_branches(key, &ring, None, now);
    }

    fn cancel_ring_branches(
        &mut self,
        key: u64,
        ring: &SideRing,
        except: Option<usize>,
        now: Instant,
    ) {
        for (i, b) in ring.branches.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            if matches!(b.state, BranchState::Calling | BranchState::Early) {
                if let Some(tx) = b.tx {
                    let _ = self.tx.send_cancel(tx, now);
                }
            }
            self.unmap_dialog(key, &(b.dialog.call_id.clone(), b.dialog.local_tag.clone()));
        }
    }

    pub(crate) fn on_ring_response(&mut self, key: u64, i: usize, resp: Response, now: Instant) {
        let local = self.config.local.clone();
        let status = resp.status;
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(ring) = call.ring.as_mut() else {
            // The ring is over; a late 2xx from a device is ACKed and hung up.
            if resp.is_success() {
                self.ack_and_bye_stray(key, &resp, now);
            }
            return;
        };
        let Some(b) = ring.branches.get_mut(i) else {
            return;
        };
        match status {
            100 => {}
            101..=199 => {
                if b.state == BranchState::Calling {
                    b.state = BranchState::Early;
                    if status == 180 {
                        if let Some(n) = ring.notify.clone() {
                            self.notify_refer(key, &n, 180, now);
                        }
                    }
                }
            }
            200..=299 => {
                if ring.won.is_some() || b.state == BranchState::Answered {
                    if ring.won != Some(i) {
                        self.ack_and_bye_stray(key, &resp, now);
                    }
                    return;
                }
                b.dialog.confirm_from_response(&resp);
                b.state = BranchState::Answered;
                ring.won = Some(i);
                let ack = b.dialog.ack(b.invite_cseq, &local, &new_branch());
                let (call_id, cseq, target) =
                    (b.dialog.call_id.clone(), b.invite_cseq, b.dialog.target);
                let data = call.remember_ack(call_id, cseq, ack.to_bytes(), target);
                self.send_direct(data, target);
                self.ring_answered(key, i, &resp, now);
            }
            _ => {
                b.state = BranchState::Done(status);
                let all_done = ring
                    .branches
                    .iter()
                    .all(|b| matches!(b.state, BranchState::Done(_)));
                if all_done && ring.won.is_none() {
                    let statuses: Vec<u16> = ring
                        .branches
                        .iter()
                        .filter_map(|b| match b.state {
                            BranchState::Done(s) => Some(s),
                            _ => None,
                        })
                        .collect();
                    let best = crate::call::best_final(&statuses);
                    self.ring_failed(key, best, now);
                }
            }
        }
    }

    /// ACKs and hangs up a device whose 2xx came after another device (or nobody) won.
    fn ack_and_bye_stray(&mut self, key: u64, resp: &Response, now: Instant) {
        let local = self.config.local.clone();
        let (Ok(call_id), Ok(from), Ok(to), Ok(cseq)) =
            (resp.call_id(), resp.from(), resp.to(), resp.cseq())
        else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        if let Some(a) = call
            .acks
            .iter()
            .find(|a| a.call_id == call_id && a.cseq == cseq.seq)
        {
            let (data, target) = (a.data.clone(), a.target);
            self.send_direct(data, target);
            return;
        }
        let Some(branch) = call.ring.as_ref().and_then(|r| {
            r.branches
                .iter()
                .find(|b| b.dialog.call_id == call_id)
                .map(|b| (b.dialog.clone(), b.invite_cseq))
        }) else {
            return;
        };
        let (mut dialog, invite_cseq) = branch;
        let _ = (from, to);
        dialog.confirm_from_response(resp);
        let ack = dialog.ack(invite_cseq, &local, &new_branch());
        let target = dialog.target;
        let data = call.remember_ack(dialog.call_id.clone(), invite_cseq, ack.to_bytes(), target);
        self.send_direct(data, target);
        let bye = dialog.request(Method::Bye, &local, &new_branch());
        if let Some(tx) = self.send_request(bye, target, now) {
            self.client_roles.insert(tx, (key, ClientRole::Own));
        }
    }

    /// A rung device answered: it takes the side.
    fn ring_answered(&mut self, key: u64, i: usize, resp: &Response, now: Instant) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let Some(mut ring) = call.ring.take() else {
            return;
        };
        let side = ring.side;
        self.cancel_ring_branches(key, &ring, Some(i), now);
        if let Some(offer) = &ring.offer {
            if !self.media_side_answered(key, side, offer, &resp.headers, &resp.body) {
                tracing::info!(call = key, "a transfer target answered without usable SDP");
            }
        }
        let branch = ring.branches.swap_remove(i);
        if i < ring.users.len() {
            ring.target = ring.users.swap_remove(i);
        }
        let dialog = branch.dialog.clone();
        // Told first, while its dialog is still a side of the call; released next.
        if let Some(n) = &ring.notify {
            self.notify_refer(key, n, 200, now);
        }
        let old = self.take_side(key, side);
        self.put_side(key, side, dialog, Some(branch));
        if let Some(old) = old {
            self.release(key, old, now);
        }
        let previous = self.set_side_name(key, side, &ring.target);
        let party = party_of(side);
        match ring.purpose {
            RingPurpose::Transfer => {
                self.history(
                    key,
                    CallHistory::Transferred {
                        kind: TransferKind::Blind,
                        party,
                        from: previous,
                        to: ring.target.clone(),
                        by: ring.by.clone(),
                    },
                );
                self.reconnect(key, 1 - side, now);
            }
            RingPurpose::ParkRingBack { slot } | RingPurpose::Retrieve { slot } => {
                self.unpark(key, now);
                self.history(
                    key,
                    CallHistory::Retrieved {
                        slot,
                        by: ring.target.clone(),
                    },
                );
                self.reconnect(key, 1 - side, now);
            }
            RingPurpose::OriginateUser { target } => {
                // The user's phone is up: now dial what they asked for, as if they had.
                let by = Some(ring.target.clone());
                let started = match self.directory.resolve(&target).map(|u| u.name.clone()) {
                    Some(user) => {
                        self.set_side_name(key, 1, &user);
                        self.start_ring(
                            key,
                            1,
                            &user,
                            RingPurpose::OriginateTarget,
                            by,
                            None,
                            false,
                            now,
                        )
                    }
                    None => Err(CommandError::NoSuchUser(target.clone())),
                };
                if let Err(e) = started {
                    tracing::info!(call = key, error = %e, "click-to-dial target unreachable");
                    let status = match e {
                        CommandError::NoSuchUser(_) => 404,
                        _ => 480,
                    };
                    self.end_originated(key, status, now);
                }
            }
            RingPurpose::Plan => {
                self.media_moh(key, 1 - side, false);
                self.reconnect(key, 1 - side, now);
            }
            RingPurpose::OriginateTarget => {
                let unix = self.unix(now);
                if let Some(c) = self.calls.get_mut(&key) {
                    c.answered_unix = Some(unix);
                    c.final_status = Some(200);
                }
                self.stats.calls_answered += 1;
                self.events
                    .push_back(EngineEvent::CallAnswered { call: key });
                self.reconnect(key, 0, now);
            }
        }
        if let Some(c) = self.calls.get_mut(&key) {
            // No ring or park deadline applies any more.
            if c.ring.is_none() && c.parked.is_none() {
                c.deadline = now;
            }
        }
    }

    /// A ring ended without an answer (`status`: the best final, or 408 at the timeout).
    fn ring_failed(&mut self, key: u64, status: u16, now: Instant) {
        let Some(ring) = self.calls.get_mut(&key).and_then(|c| c.ring.take()) else {
            return;
        };
        self.cancel_ring_branches(key, &ring, None, now);
        let side = ring.side;
        tracing::debug!(call = key, status, target = %ring.target, "ring failed");
        match ring.purpose {
            RingPurpose::Transfer => {
                if let Some(n) = &ring.notify {
                    self.notify_refer(key, n, status, now);
                }
                self.history(
                    key,
                    CallHistory::TransferFailed {
                        party: party_of(1 - side),
                        to: ring.target.clone(),
                        status,
                    },
                );
                if !self.side_present(key, side) {
                    // The transferor already left: nobody to go back to.
                    self.hang_up_both(key, now);
                }
            }
            RingPurpose::ParkRingBack { .. } => {
                // Fallback after the ring-back: the parked party is hung up.
                tracing::info!(
                    call = key,
                    "parked call not picked up after ring-back; hanging up"
                );
                self.hang_up_both(key, now);
            }
            RingPurpose::Retrieve { .. } => {
                // Stays parked; its timeout still applies.
                if let Some(c) = self.calls.get_mut(&key) {
                    if let Some(p) = &c.parked {
                        c.deadline = p.deadline;
                        self.deadlines.push(Reverse((p.deadline, key)));
                    }
                }
            }
            RingPurpose::OriginateUser { .. } => self.end_originated(key, status, now),
            RingPurpose::OriginateTarget => self.end_originated(key, status, now),
            RingPurpose::Plan => self.plan_continue(key, status, now),
        }
    }

    /// Ends a click-to-dial call that never connected its two parties.
    fn end_originated(&mut self, key: u64, status: u16, now: Instant) {
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        let (caller, callee) = (call.caller.clone(), call.callee.clone());
        self.events.push_back(EngineEvent::CallEnded {
            call: key,
            caller,
            callee,
            outcome: crate::call::CallOutcome::from_status(status),
            status,
        });
        if let Some(d) = self.take_side(key, 0) {
            self.release(key, d, now);
        }
        if let Some(c) = self.calls.get_mut(&key) {
            c.state = CallState::Ending;
            c.a_tx = None;
        }
        self.forget_call(key);
    }

    /// The party on `side` gets two-way audio again: its music stops and, if its holder
    /// left it with a one-way description, a re-INVITE restores sendrecv.
    fn reconnect(&mut self, key: u64, side: usize, now: Instant) {
        let held = self
            .calls
            .get_mut(&key)
            .and_then(|c| c.media.as_mut())
            .is_some_and(|m| m.take_holding(side));
        self.media_moh(key, side, false);
        if held {
            self.send_own_reinvite(key, side, ReinvitePurpose::Resume, now);
        }
    }

    fn send_own_reinvite(
        &mut self,
        key: u64,
        side: usize,
        mut purpose: ReinvitePurpose,
        now: Instant,
    ) {
        let offer = match &mut purpose {
            ReinvitePurpose::Resume => self.media_side_offer(key, side, false),
            ReinvitePurpose::MoveTo {
                to_call,
                to_side,
                origin,
                ..
            } => self
                .media_move_offer(key, side, *to_call, *to_side)
                .map(|(o, used)| {
                    *origin = used;
                    o
                }),
        };
        let local = self.config.local.clone();
        let Some(d) = self.side_dialog(key, side) else {
            return;
        };
        let mut invite = d.request(Method::Invite, &local, &new_branch());
        let cseq = d.local_cseq;
        let target = d.target;
        invite.headers.push(HeaderName::Allow, ALLOW);
        if let Some(o) = &offer {
            invite.set_body(o.to_bytes(), Some("application/sdp"));
        }
        if let Some(c) = self.calls.get_mut(&key) {
            c.own_reinvite = true;
        }
        if let Some(tx) = self.send_request(invite, target, now) {
            self.client_roles.insert(
                tx,
                (
                    key,
                    ClientRole::OwnReinvite(Box::new(OwnReinvite {
                        side,
                        offer,
                        cseq,
                        purpose,
                    })),
                ),
            );
        }
    }

    pub(crate) fn on_own_reinvite_response(
        &mut self,
        key: u64,
        r: OwnReinvite,
        resp: Response,
        now: Instant,
    ) {
        if resp.status < 200 {
            return;
        }
        let local = self.config.local.clone();
        if let Some(c) = self.calls.get_mut(&key) {
            c.own_reinvite = false;
        }
        if resp.status == 491 {
            // Glare (RFC 3261 §14.1): try again after 2.1-4 s when we chose the dialog's
            // Call-ID (we sent its INVITE), else after 0-2 s.
            let ours = self
                .side_dialog(key, r.side)
                .is_some_and(|d| d.we_chose_call_id);
            let ms = if ours {
                rand::random::<u64>() % 1900 + 2100
            } else {
                rand::random::<u64>() % 2000
            };
            let at = now + Duration::from_millis(ms);
            tracing::debug!(call = key, ms, "our re-INVITE met 491; retrying");
            if let Some(c) = self.calls.get_mut(&key) {
                c.reinvite_retry = Some((at, r.side, r.purpose));
                c.deadline = at;
            }
            self.deadlines.push(Reverse((at, key)));
            return;
        }
        if !resp.is_success() {
            tracing::info!(
                call = key,
                status = resp.status,
                "our re-INVITE was refused"
            );
            if let ReinvitePurpose::MoveTo { notify, .. } = &r.purpose {
                if let Some(n) = notify {
                    self.notify_refer(key, n, resp.status, now);
                }
                if !self.side_present(key, 1 - r.side) {
                    // The transferor already left: nobody to go back to.
                    self.hang_up_both(key, now);
                }
            }
            return;
        }
        // ACK the 2xx in the party's dialog (it may move to another call below).
        let Some(d) = self.side_dialog(key, r.side) else {
            return;
        };
        d.refresh_target(resp.headers.get(&HeaderName::Contact));
        let ack = d.ack(r.cseq, &local, &new_branch());
        let (call_id, target) = (d.call_id.clone(), d.target);
        match r.purpose {
            ReinvitePurpose::Resume => {
                if let Some(c) = self.calls.get_mut(&key) {
                    let data = c.remember_ack(call_id, r.cseq, ack.to_bytes(), target);
                    self.send_direct(data, target);
                }
                if let Some(o) = &r.offer {
                    self.media_side_answered(key, r.side, o, &resp.headers, &resp.body);
                }
            }
            ReinvitePurpose::MoveTo {
                to_call,
                to_side,
                origin,
                notify,
                by,
            } => {
                self.send_direct(ack.to_bytes(), target);
                self.finish_move(
                    key,
                    r.side,
                    to_call,
                    to_side,
                    origin,
                    r.offer.as_ref(),
                    &resp,
                    notify,
                    by,
                    now,
                );
            }
        }
    }

    // ----- park and retrieve ------------------------------------------------------------

    fn free_slot(&self) -> Option<String> {
        let (first, last) = self.config.features.park_slots;
        (first..=last)
            .map(|n| n.to_string())
            .find(|s| !self.parking.contains_key(s))
    }

    /// Parks the party on `side` (it hears music); the other side is the caller's to
    /// release. Returns the slot.
    pub(crate) fn park(
        &mut self,
        key: u64,
        side: usize,
        slot: Option<String>,
        by: Option<String>,
        now: Instant,
    ) -> Result<String, CommandError> {
        let slot = match slot {
            Some(s) => {
                let (first, last) = self.config.features.park_slots;
                if !s.parse::<u32>().is_ok_and(|n| (first..=last).contains(&n)) {
                    return Err(CommandError::BadRequest(format!(
                        "{s} is not a park slot ({first}-{last})"
                    )));
                }
                if self.parking.contains_key(&s) {
                    return Err(CommandError::Conflict(format!("park slot {s} is taken")));
                }
                s
            }
            None => self
                .free_slot()
                .ok_or_else(|| CommandError::Unavailable("every park slot is taken".into()))?,
        };
        if !self.side_present(key, side) {
            return Err(CommandError::Conflict("nobody to park on that side".into()));
        }
        let unix = self.unix(now);
        let timeout = self.config.features.park_timeout;
        let deadline = now + timeout;
        let Some(call) = self.calls.get_mut(&key) else {
            return Err(CommandError::NoSuchCall(key));
        };
        call.parked = Some(ParkState {
            slot: slot.clone(),
            side,
            parker: by.clone(),
            since_unix: unix,
            timeout_unix: unix + timeout.as_secs(),
            deadline,
        });
        call.deadline = deadline;
        self.deadlines.push(Reverse((deadline, key)));
        self.parking.insert(slot.clone(), key);
        self.media_moh(key, side, true);
        self.history(
            key,
            CallHistory::Parked {
                party: party_of(side),
                slot: slot.clone(),
                by,
            },
        );
        tracing::info!(call = key, %slot, "parked");
        Ok(slot)
    }

    /// After one deadline fired, re-arms whichever ring or park deadline still applies.
    fn restore_deadline(&mut self, key: u64) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        let next = c
            .ring
            .as_ref()
            .map(|r| r.deadline)
            .or(c.parked.as_ref().map(|p| p.deadline));
        if let Some(at) = next {
            c.deadline = at;
            self.deadlines.push(Reverse((at, key)));
        }
    }

    fn unpark(&mut self, key: u64, now: Instant) {
        if let Some(p) = self.calls.get_mut(&key).and_then(|c| c.parked.take()) {
            self.parking.remove(&p.slot);
        }
        // A parker still hearing the slot is released now: its side has a new party.
        self.end_announcement(key, now);
    }

    /// A ring or park deadline of an established call.
    pub(crate) fn on_feature_deadline(&mut self, key: u64, now: Instant) {
        if self.plan_deadline(key, now) {
            return;
        }
        let due = self
            .calls
            .get(&key)
            .and_then(|c| c.reinvite_retry.as_ref())
            .is_some_and(|(at, _, _)| *at <= now);
        if due {
            if let Some((_, side, purpose)) = self
                .calls
                .get_mut(&key)
                .and_then(|c| c.reinvite_retry.take())
            {
                self.send_own_reinvite(key, side, purpose, now);
            }
            self.restore_deadline(key);
            return;
        }
        let Some(call) = self.calls.get(&key) else {
            return;
        };
        if let Some(ring) = &call.ring {
            if ring.deadline <= now {
                tracing::debug!(call = key, "ring timeout");
                self.ring_failed(key, 408, now);
            }
            return;
        }
        let Some(p) = call.parked.clone() else {
            return;
        };
        if p.deadline > now {
            return;
        }
        // A parker still hearing its slot (a park timeout shorter than the announcement)
        // is released before its devices are rung back.
        self.end_announcement(key, now);
        let parker = p.parker.clone();
        let rung = parker.as_deref().map(|parker| {
            self.start_ring(
                key,
                1 - p.side,
                parker,
                RingPurpose::ParkRingBack {
                    slot: p.slot.clone(),
                },
                None,
                None,
                false,
                now,
            )
        });
        if !matches!(rung, Some(Ok(()))) {
            tracing::info!(call = key, slot = %p.slot, "park timeout with nobody to ring back; hanging up");
            self.hang_up_both(key, now);
        }
    }

    /// An INVITE to a park slot: the caller takes the parked call.
    pub(crate) fn on_retrieve_invite(
        &mut self,
        id: ServerTxId,
        req: Request,
        caller: &str,
        source: Target,
        slot: &str,
        now: Instant,
    ) {
        let Some(&key) = self.parking.get(slot) else {
            self.reply(id, &req, 404, now);
            return;
        };
        let Some(p) = self.calls.get(&key).and_then(|c| c.parked.clone()) else {
            self.reply(id, &req, 404, now);
            return;
        };
        if self.calls.get(&key).is_some_and(|c| c.ring.is_some()) {
            // Already being rung back to the parker.
            self.reply(id, &req, 486, now);
            return;
        }
        let side = 1 - p.side;
        self.take_over_side(key, side, id, req, caller, source, now);
        self.unpark(key, now);
        self.history(
            key,
            CallHistory::Retrieved {
                slot: slot.to_string(),
                by: caller.to_string(),
            },
        );
        self.reconnect(key, p.side, now);
    }

    /// Answers an INVITE whose caller takes `side` of an existing call (retrieve,
    /// INVITE with Replaces). The side must be empty.
    #[allow(clippy::too_many_arguments)]
    fn take_over_side(
        &mut self,
        key: u64,
        side: usize,
        id: ServerTxId,
        req: Request,
        caller: &str,
        source: Target,
        now: Instant,
    ) -> bool {
        let anchored = self.calls.get(&key).is_some_and(|c| c.media.is_some());
        let body = if anchored {
            match self.media_side_answer(key, side, &req.headers, &req.body) {
                Some(b) => Some(b),
                None => {
                    // A late offer cannot be taken into an anchored call yet.
                    let resp = Response::for_request(
                        &req,
                        488,
                        "SDP Offer Required",
                        Some(&crate::new_tag()),
                    );
                    self.respond(id, resp, now);
                    return false;
                }
            }
        } else {
            None
        };
        let Some(dialog) = uas_dialog(&req, source) else {
            self.reply(id, &req, 400, now);
            return false;
        };
        let local = self.config.local.clone();
        let mut resp = Response::for_request(&req, 200, "OK", Some(&dialog.local_tag));
        resp.headers
            .push(HeaderName::Contact, local.contact(source));
        resp.headers.push(HeaderName::Allow, ALLOW);
        if let Some(b) = body {
            resp.set_body(b, Some("application/sdp"));
        }
        let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let call_id = dialog.call_id.clone();
        self.put_side(key, side, dialog, None);
        self.set_side_name(key, side, caller);
        self.ack_waiters.insert(id, key);
        if let Some(c) = self.calls.get_mut(&key) {
            c.ack_waits.push((id, call_id, cseq));
        }
        self.respond(id, resp, now);
        true
    }

    /// INVITE with Replaces (RFC 3891): the caller takes the place of the party in the
    /// named dialog, which is released.
    pub(crate) fn on_invite_replaces(
        &mut self,
        id: ServerTxId,
        req: Request,
        caller: &str,
        source: Target,
        now: Instant,
    ) {
        let Some(replaces) = req
            .headers
            .get(&HeaderName::Other("Replaces".into()))
            .and_then(Replaces::parse)
        else {
            self.reply(id, &req, 400, now);
            return;
        };
        let Some((key, side)) = self.find_dialog(&replaces) else {
            self.reply(id, &req, 481, now);
            return;
        };
        let busy = self.calls.get(&key).is_none_or(|c| {
            c.ring.is_some() || c.own_reinvite || c.state != CallState::Established
        });
        if busy {
            self.reply(id, &req, 486, now);
            return;
        }
        let Some(old) = self.take_side(key, side) else {
            self.reply(id, &req, 481, now);
            return;
        };
        let previous = self.side_name(key, side);
        if !self.take_over_side(key, side, id, req, caller, source, now) {
            // Put the old party back: nothing changed for it.
            self.put_side(key, side, old, None);
            return;
        }
        self.release(key, old, now);
        self.history(
            key,
            CallHistory::Transferred {
                kind: TransferKind::Attended,
                party: party_of(side),
                from: previous,
                to: caller.to_string(),
                by: Some(caller.to_string()),
            },
        );
        self.unpark(key, now);
        self.reconnect(key, 1 - side, now);
    }

    /// The call and side of the dialog a Replaces names. Either tag may be ours: the
    /// sender names the dialog as its peer saw it (RFC 3891 §3), and phones differ.
    pub(crate) fn find_dialog(&self, r: &Replaces) -> Option<(u64, usize)> {
        for tag in [&r.to_tag, &r.from_tag] {
            let Some(&key) = self.dialogs.get(&(r.call_id.clone(), tag.clone())) else {
                continue;
            };
            let call = self.calls.get(&key)?;
            if call.a_present && call.a.call_id == r.call_id && &call.a.local_tag == tag {
                return Some((key, 0));
            }
            if let Some(w) = call.winner {
                let d = &call.branches[w].dialog;
                if d.call_id == r.call_id && &d.local_tag == tag {
                    return Some((key, 1));
                }
            }
        }
        None
    }

    // ----- attended transfer ------------------------------------------------------------

    /// REFER with Replaces from the party on `side` of `key`: connect the other party of
    /// `key` with the other party of the call whose dialog the Replaces names (the
    /// consultation call); the transferor's two legs are released.
    #[allow(clippy::too_many_arguments)]
    fn attended_by_refer(
        &mut self,
        key: u64,
        side: usize,
        id: ServerTxId,
        req: &Request,
        replaces: &Replaces,
        dialog_id: (String, String),
        by: Option<String>,
        now: Instant,
    ) {
        let Some((consult, consult_side)) = self.find_dialog(replaces) else {
            self.reply_in_dialog(id, req, 481, now);
            return;
        };
        if consult == key {
            self.reply_in_dialog(id, req, 400, now);
            return;
        }
        match self.begin_attended(
            key,
            1 - side,
            consult,
            1 - consult_side,
            Some(dialog_id.clone()),
            by,
            now,
        ) {
            Ok(()) => {
                let resp = Response::for_request(req, 202, "Accepted", None);
                self.respond(id, resp, now);
                self.notify_refer(key, &dialog_id, 100, now);
            }
            Err(e) => {
                let resp =
                    Response::for_request(req, e.http_status().max(400), &e.to_string(), None);
                self.respond(id, resp, now);
            }
        }
    }

    /// Starts moving the party on `side` of `key` into `consult`, where it replaces the
    /// party opposite `consult_party_side` (the transferor's consultation leg).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin_attended(
        &mut self,
        key: u64,
        side: usize,
        consult: u64,
        consult_party_side: usize,
        notify: Option<(String, String)>,
        by: Option<String>,
        now: Instant,
    ) -> Result<(), CommandError> {
        for k in [key, consult] {
            let c = self
                .calls
                .get(&k)
                .filter(|c| c.is_live())
                .ok_or(CommandError::NoSuchCall(k))?;
            if c.state == CallState::Ringing {
                return Err(CommandError::Conflict(format!(
                    "call {k} is not answered yet"
                )));
            }
            if c.ring.is_some() || c.own_reinvite || c.reinvite_in_progress {
                return Err(CommandError::Conflict(format!(
                    "call {k} is busy with another change"
                )));
            }
        }
        let to_side = 1 - consult_party_side;
        // The consultation call may be the transferor parked in a slot (it dialled the
        // park extension and heard the slot): the moving party takes its place there.
        let into_park = self
            .calls
            .get(&consult)
            .and_then(|c| c.parked.as_ref())
            .is_some_and(|p| p.side == to_side);
        if !self.side_present(key, side)
            || !(self.side_present(consult, consult_party_side) || into_park)
        {
            return Err(CommandError::Conflict(
                "a party of the transfer is gone".into(),
            ));
        }
        let anchored = [key, consult]
            .iter()
            .all(|k| self.calls.get(k).is_some_and(|c| c.media.is_some()));
        if !anchored {
            return Err(CommandError::Unavailable(
                "attended transfer needs anchored media (--media-anchor)".into(),
            ));
        }
        self.send_own_reinvite(
            key,
            side,
            ReinvitePurpose::MoveTo {
                to_call: consult,
                to_side,
                // Filled in with the offer's origin when the re-INVITE is built.
                origin: (String::new(), 0),
                notify,
                by,
            },
            now,
        );
        Ok(())
    }

    /// The moving party accepted our re-INVITE: it now talks to the consultation call's
    /// other party; the transferor's legs are released and the original call ends.
    #[allow(clippy::too_many_arguments)]
    fn finish_move(
        &mut self,
        from: u64,
        side: usize,
        to: u64,
        to_side: usize,
        origin: (String, u64),
        offer: Option<&SessionDescription>,
        resp: &Response,
        notify: Option<(String, String)>,
        by: Option<String>,
        now: Instant,
    ) {
        if !self.calls.contains_key(&to) {
            // The consultation call ended meanwhile: the party stays where it was.
            if let Some(n) = &notify {
                self.notify_refer(from, n, 487, now);
            }
            return;
        }
        let Some(moving) = self.take_side(from, side) else {
            return;
        };
        let moving_name = self.side_name(from, side);
        // The transferor's leg in the consultation call goes, the mover takes its place.
        let replaced = self.take_side(to, to_side);
        let previous = self.side_name(to, to_side);
        self.put_side(to, to_side, moving, None);
        self.set_side_name(to, to_side, &moving_name);
        self.media_set_origin(to, to_side, origin);
        if let Some(o) = offer {
            self.media_side_answered(to, to_side, o, &resp.headers, &resp.body);
        }
        if let Some(r) = replaced {
            self.release(to, r, now);
        }
        if let Some(n) = &notify {
            self.notify_refer(from, n, 200, now);
        }
        self.history(
            to,
            CallHistory::Transferred {
                kind: TransferKind::Attended,
                party: party_of(to_side),
                from: previous,
                to: moving_name.clone(),
                by: by.clone(),
            },
        );
        self.history(
            from,
            CallHistory::Transferred {
                kind: TransferKind::Attended,
                party: party_of(side),
                from: moving_name,
                to: self.side_name(to, 1 - to_side),
                by,
            },
        );
        self.reconnect(to, 1 - to_side, now);
        // Into a parked call (the transferor had dialled the park extension and heard the
        // slot): the rest of the announcement is not for the newcomer, music is.
        self.end_announcement(to, now);
        // The original call: the transferor is released (its late BYE is answered by the
        // consultation call, which takes over its dialog), then the call ends.
        if let Some(t) = self.take_side(from, 1 - side) {
            let mut t = t;
            let local = self.config.local.clone();
            let bye = t.request(Method::Bye, &local, &new_branch());
            let target = t.target;
            if let Some(tx) = self.send_request(bye, target, now) {
                self.client_roles.insert(tx, (to, ClientRole::Own));
            }
            self.dialogs
                .insert((t.call_id.clone(), t.local_tag.clone()), to);
            if let Some(c) = self.calls.get_mut(&to) {
                c.released.push(t);
            }
        }
        let released: Vec<Dialog> = self
            .calls
            .get_mut(&from)
            .map(|c| std::mem::take(&mut c.released))
            .unwrap_or_default();
        for d in released {
            self.dialogs
                .insert((d.call_id.clone(), d.local_tag.clone()), to);
            if let Some(c) = self.calls.get_mut(&to) {
                c.released.push(d);
            }
        }
        self.end_established(from, now);
    }

    // ----- commands ---------------------------------------------------------------------

    pub(crate) fn command_blind_transfer(
        &mut self,
        key: u64,
        party: Party,
        target: &str,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let call = self
            .calls
            .get(&key)
            .filter(|c| c.is_live())
            .ok_or(CommandError::NoSuchCall(key))?;
        if call.state == CallState::Ringing {
            return Err(CommandError::Conflict(format!(
                "call {key} is not answered yet"
            )));
        }
        if call.ring.is_some() || call.own_reinvite {
            return Err(CommandError::Conflict(format!(
                "call {key} is busy with another change"
            )));
        }
        let stays = side_of(party);
        let by = Some(self.side_name(key, 1 - stays));
        if self.is_room_number(target) {
            // Into a conference room: the party that stays is moved there, the other
            // released once it is in (as for a REFER naming a room).
            self.move_into_room(key, stays, target, now)?;
            return Ok(CommandReply::Accepted);
        }
        if self.is_park_target(target) {
            let slot = (target != self.config.features.park_extension).then(|| target.to_string());
            return self.command_park_side(key, stays, slot, by, now);
        }
        let user = self
            .directory
            .resolve(target)
            .map(|u| u.name.clone())
            .ok_or_else(|| CommandError::NoSuchUser(target.to_string()))?;
        self.start_ring(
            key,
            1 - stays,
            &user,
            RingPurpose::Transfer,
            by,
            None,
            false,
            now,
        )?;
        Ok(CommandReply::Accepted)
    }

    pub(crate) fn command_attended_transfer(
        &mut self,
        key: u64,
        party: Party,
        consult: u64,
        consult_party: Party,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        if key == consult {
            return Err(CommandError::BadRequest("the two calls must differ".into()));
        }
        self.begin_attended(
            key,
            side_of(party),
            consult,
            side_of(consult_party),
            None,
            None,
            now,
        )?;
        Ok(CommandReply::Accepted)
    }

    fn command_park_side(
        &mut self,
        key: u64,
        side: usize,
        slot: Option<String>,
        by: Option<String>,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let slot = self.park(key, side, slot, by, now)?;
        if let Some(d) = self.take_side(key, 1 - side) {
            self.release(key, d, now);
        }
        Ok(CommandReply::Slot { slot })
    }

    pub(crate) fn command_park(
        &mut self,
        key: u64,
        party: Party,
        slot: Option<String>,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let call = self
            .calls
            .get(&key)
            .filter(|c| c.is_live())
            .ok_or(CommandError::NoSuchCall(key))?;
        if call.state == CallState::Ringing {
            return Err(CommandError::Conflict(format!(
                "call {key} is not answered yet"
            )));
        }
        if call.parked.is_some() || call.ring.is_some() || call.own_reinvite {
            return Err(CommandError::Conflict(format!(
                "call {key} is busy with another change"
            )));
        }
        let side = side_of(party);
        let by = Some(self.side_name(key, 1 - side));
        self.command_park_side(key, side, slot, by, now)
    }

    pub(crate) fn command_retrieve(
        &mut self,
        slot: &str,
        user: &str,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let key = *self
            .parking
            .get(slot)
            .ok_or_else(|| CommandError::NoSuchSlot(slot.to_string()))?;
        let user = self
            .directory
            .resolve(user)
            .map(|u| u.name.clone())
            .ok_or_else(|| CommandError::NoSuchUser(user.to_string()))?;
        let p = self
            .calls
            .get(&key)
            .and_then(|c| c.parked.clone())
            .ok_or_else(|| CommandError::NoSuchSlot(slot.to_string()))?;
        if self.calls.get(&key).is_some_and(|c| c.ring.is_some()) {
            return Err(CommandError::Conflict(format!(
                "slot {slot} is already being retrieved"
            )));
        }
        self.start_ring(
            key,
            1 - p.side,
            &user,
            RingPurpose::Retrieve {
                slot: slot.to_string(),
            },
            None,
            None,
            true,
            now,
        )?;
        Ok(CommandReply::Call { call: key })
    }

    pub(crate) fn list_parked(&self) -> Vec<ParkedInfo> {
        self.parking
            .iter()
            .filter_map(|(slot, key)| {
                let c = self.calls.get(key)?;
                let p = c.parked.as_ref()?;
                Some(ParkedInfo {
                    slot: slot.clone(),
                    call: *key,
                    parked: if p.side == 0 {
                        c.caller.clone()
                    } else {
                        c.callee.clone()
                    },
                    parker: p.parker.clone(),
                    since_unix: p.since_unix,
                    timeout_unix: p.timeout_unix,
                })
            })
            .collect()
    }

    /// Click-to-dial: ring the user's devices (auto-answer on request), then the target.
    pub(crate) fn command_originate(
        &mut self,
        user: &str,
        target: &str,
        auto_answer: bool,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let user = self
            .directory
            .resolve(user)
            .map(|u| u.name.clone())
            .ok_or_else(|| CommandError::NoSuchUser(user.to_string()))?;
        // The target as the call log and the API name it: the user, not the extension.
        let target = self
            .directory
            .resolve(target)
            .map(|u| u.name.clone())
            .ok_or_else(|| CommandError::NoSuchUser(target.to_string()))?;
        let target = target.as_str();
        let unix = self.unix(now);
        if self.registrar.lookup(&user, unix).is_empty() {
            return Err(CommandError::NotRegistered(user));
        }
        let key = self.new_call_id();
        let media = self.open_media_bare(key)?;
        let placeholder = Dialog {
            call_id: String::new(),
            local_tag: String::new(),
            remote_tag: None,
            local_uri: NameAddr::new(Uri::sip(None, &self.config.domain, None)),
            remote_uri: NameAddr::new(Uri::sip(None, &self.config.domain, None)),
            remote_target: Uri::sip(None, &self.config.domain, None),
            route_set: Vec::new(),
            local_cseq: 0,
            we_chose_call_id: false,
            target: Target {
                transport: switchboard_sip::transaction::Transport::Udp,
                addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            },
        };
        let call = crate::call::Call::originated(
            user.clone(),
            target.to_string(),
            placeholder,
            media,
            now,
            unix,
        );
        self.calls.insert(key, call);
        self.stats.calls_total += 1;
        self.events.push_back(EngineEvent::CallStarted {
            call: key,
            caller: user.clone(),
            callee: target.to_string(),
            // The user's leg gets its Call-ID when it is rung, after this event.
            sip_call_id: String::new(),
            direction: crate::engine::CallDirection::Internal,
        });
        if let Err(e) = self.start_ring(
            key,
            0,
            &user,
            RingPurpose::OriginateUser {
                target: target.to_string(),
            },
            None,
            None,
            auto_answer,
            now,
        ) {
            self.end_originated(key, 480, now);
            return Err(e);
        }
        Ok(CommandReply::Call { call: key })
    }
}

/// The dialog of a party that sent us an INVITE (we are its UAS).
pub(crate) fn uas_dialog(req: &Request, source: Target) -> Option<Dialog> {
    let (Ok(from), Ok(to), Ok(call_id)) = (req.from(), req.to(), req.call_id()) else {
        return None;
    };
    let contact = req
        .headers
        .get(&HeaderName::Contact)
        .and_then(|c| NameAddr::parse(c).ok())
        .map(|na| na.uri)
        .unwrap_or_else(|| from.uri.clone());
    Some(Dialog {
        call_id: call_id.to_string(),
        local_tag: crate::new_tag(),
        remote_tag: from.tag().map(str::to_string),
        local_uri: without_tag(to.clone()),
        remote_uri: without_tag(from.clone()),
        remote_target: contact,
        route_set: req
            .headers
            .get_all(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect(),
        local_cseq: 0,
        we_chose_call_id: false,
        target: source,
    })
}

/// The Replaces of a Refer-To URI's headers (`?Replaces=<escaped value>&...`).
pub(crate) fn replaces_from_uri_headers(headers: &str) -> Option<Replaces> {
    headers.split('&').find_map(|h| {
        let (name, value) = h.split_once('=')?;
        name.eq_ignore_ascii_case("replaces")
            .then(|| Replaces::parse(&switchboard_sip::parse::unescape(value)))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_parses_rfc3891_example() {
        let r = Replaces::parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff").unwrap();
        assert_eq!(r.call_id, "98732@sip.example.com");
        assert_eq!(r.from_tag, "r33th4x0r");
        assert_eq!(r.to_tag, "ff87ff");
        assert!(Replaces::parse("abc;to-tag=1").is_none());
        assert!(Replaces::parse(";to-tag=1;from-tag=2").is_none());
    }

    #[test]
    fn replaces_in_a_refer_to_uri_is_unescaped() {
        let r = replaces_from_uri_headers(
            "Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994",
        )
        .unwrap();
        assert_eq!(r.call_id, "12345@192.168.118.3");
        assert_eq!(r.to_tag, "12345");
        assert_eq!(r.from_tag, "5FFE-3994");
    }

    #[test]
    fn auto_answer_profiles_by_user_agent() {
        use AutoAnswerProfile::*;
        assert_eq!(
            AutoAnswerProfile::for_user_agent(Some("PolycomVVX-VVX_400-UA/6.3"), Standard),
            Polycom
        );
        assert_eq!(
            AutoAnswerProfile::for_user_agent(Some("snomD785/10.1"), Standard),
            Intercom
        );
        assert_eq!(AutoAnswerProfile::for_user_agent(None, Standard), Standard);
        let h = Standard.headers("pbx.test");
        assert!(h.iter().any(|(_, v)| v == "<sip:pbx.test>;answer-after=0"));
        assert_eq!(Polycom.headers("x")[0].1, "Ring-Answer");
    }
}
