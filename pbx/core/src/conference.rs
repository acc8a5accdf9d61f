//! Conference rooms on the engine side: which numbers are rooms, the SIP dialogs of their
//! participants (Switchboard is the UAS: it answers a room number itself), and the
//! [`RoomCommand`]s that tell the runtime's room tasks who is in which room with what
//! codec. The mixing itself is `switchboard_media::mixer`, run by the runtime.
//!
//! Hooks in the engine (kept to one line each in `call.rs`/`engine.rs`): an INVITE whose
//! dialled number is a room ([`Engine::conference_invite`]), in-dialog requests and ACKs
//! of a participant's dialog, the ACK timeout of our 2xx, shutdown, and the room commands.
//! A participant's dialog never reaches the call tables, and a call never reaches ours.
//!
//! Call-outs ([`crate::Command::RoomAdd`]): the room rings a user's registered devices in
//! parallel (Switchboard is the UAC), with an offer from the participant's own port pair;
//! the first 2xx joins the room, the other devices are CANCELled, a late 2xx is ACKed and
//! hung up. Their client transactions, ring deadline, ACKs and stray 2xx reach us through
//! one-line hooks in `call.rs` (responses, transaction failures, strays, deadlines: the
//! ring deadline shares the engine's deadline heap, keyed by the participant id, which is
//! drawn from the same counter as call ids). A call-out never touches a room until it is
//! answered: a device that is busy or does not answer leaves the room as it was.
//!
//! Ad hoc conferences (a phone's conference button, RFC 4579): the conference factory
//! opens the first free room and answers as its focus (`Contact: <sip:ROOM@..>;isfocus`,
//! as every room answer does); a REFER naming a room, in a call's dialog
//! ([`Engine::refer_into_room`], hooked in `features.rs`) or to the focus, moves a call's
//! party into the room by a re-INVITE toward a new room port pair ([`ToRoom`]), the same
//! move as the API's `RoomFromCall`. The referrer hears how it went by NOTIFY.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use switchboard_media::codec::CodecSpec;
use switchboard_media::sdp::negotiate::{
    answer, initial_offer, negotiated, AnswerParams, Capabilities,
};
use switchboard_media::sdp::{Origin, SessionDescription};
use switchboard_sip::header::NameAddr;
use switchboard_sip::transaction::{new_branch, ClientTxId, ServerTxId, Target};
use switchboard_sip::{HeaderName, Method, Request, Response, Uri};

use crate::command::{CommandError, CommandReply, ParticipantInfo, RoomInfo};
use crate::dialog::{without_tag, Dialog};
use crate::engine::{Engine, EngineEvent, ALLOW};
use crate::ports::PortPair;
use crate::registrar::Binding;

/// Which numbers are conference rooms, and who speaks in moderated ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceConfig {
    /// Room numbers (inclusive ranges of decimal numbers, e.g. 800-899).
    pub rooms: Vec<RoomRange>,
    /// Rooms (a subset of `rooms`) where participants wait with music on hold until a
    /// speaker joins.
    pub moderated: Vec<RoomRange>,
    /// Users (by name) who are speakers in moderated rooms.
    pub speakers: Vec<String>,
    /// Join and leave tones.
    pub tones: bool,
    /// The conference factory (RFC 4579 §3.2): a number or name that, when dialled,
    /// opens the first free room for the caller and answers with the room as the focus
    /// (`Contact: <sip:ROOM@...>;isfocus`). Phones doing a "network conference" call it,
    /// then REFER their other calls to the room.
    pub factory: Option<String>,
}

/// An inclusive range of room numbers; a single number is `n-n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomRange {
    pub first: u64,
    pub last: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoomRangeError {
    #[error("room range {0:?}: expected a number or FIRST-LAST (decimal digits)")]
    Syntax(String),
    #[error("room range {0:?} is reversed")]
    Reversed(String),
}

impl std::str::FromStr for RoomRange {
    type Err = RoomRangeError;

    fn from_str(s: &str) -> Result<RoomRange, RoomRangeError> {
        let number = |t: &str| {
            let t = t.trim();
            if t.is_empty() || t.len() > 18 || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(RoomRangeError::Syntax(s.to_owned()));
            }
            t.parse::<u64>()
                .map_err(|_| RoomRangeError::Syntax(s.to_owned()))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(s)?;
                (n, n)
            }
        };
        if first > last {
            return Err(RoomRangeError::Reversed(s.to_owned()));
        }
        Ok(RoomRange { first, last })
    }
}

impl RoomRange {
    fn contains(&self, number: &str) -> bool {
        // Only plain decimal numbers are rooms ("0800" is not room 800).
        if number.is_empty()
            || number.len() > 18
            || !number.bytes().all(|b| b.is_ascii_digit())
            || (number.len() > 1 && number.starts_with('0'))
        {
            return false;
        }
        number
            .parse::<u64>()
            .is_ok_and(|n| (self.first..=self.last).contains(&n))
    }
}

impl ConferenceConfig {
    pub fn is_room(&self, number: &str) -> bool {
        self.rooms.iter().any(|r| r.contains(number))
    }

    pub fn is_moderated(&self, room: &str) -> bool {
        self.moderated.iter().any(|r| r.contains(room))
    }

    /// True when `dialled` is the conference factory (user parts compared without case:
    /// phones send what the admin typed).
    pub fn is_factory(&self, dialled: &str) -> bool {
        self.factory
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case(dialled))
    }
}

/// A participant's media as the runtime's room task needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantMedia {
    /// Where to send their RTP (from their SDP; the runtime latches onto the source of
    /// what they send). `None` when they gave no address (c=0.0.0.0).
    pub remote: Option<SocketAddr>,
    /// The one codec negotiated with them.
    pub codec: CodecSpec,
    pub speaker: bool,
    pub muted: bool,
    /// False while they do not want our audio (sendonly/inactive: on hold).
    pub send: bool,
}

/// What the runtime's room tasks are told (carried by [`EngineEvent::Room`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomCommand {
    /// A room gets its first participant: start its mixer.
    Open {
        room: String,
        moderated: bool,
        tones: bool,
        /// A participant whose RTP stops for this long is hung up.
        rtp_timeout: std::time::Duration,
    },
    /// Bind `pair` for the participant and add them to the room's mix.
    Join {
        room: String,
        participant: u64,
        pair: PortPair,
        media: ParticipantMedia,
    },
    /// New media settings after a re-INVITE or UPDATE.
    Update {
        room: String,
        participant: u64,
        media: ParticipantMedia,
    },
    Mute {
        room: String,
        participant: u64,
        muted: bool,
    },
    /// Remove the participant and close their sockets.
    Leave { room: String, participant: u64 },
    /// The room is empty: stop its mixer.
    Close { room: String },
}

/// What a room task reports about one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomNotice {
    /// Their port pair could not be bound.
    BindFailed { pair: PortPair },
    /// Their RTP stopped.
    RtpTimeout,
}

/// How a call-out ([`crate::Command::RoomAdd`]) ended, carried by
/// [`EngineEvent::RoomCallOut`] (the room itself is unchanged unless `status` is 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutReport {
    pub room: String,
    /// The participant id the command answered with.
    pub participant: u64,
    /// The user called.
    pub user: String,
    /// 200: a device answered and joined the room. Otherwise why not: the best final
    /// status of the devices (486 busy, 480/603 declined…), 408 at the ring timeout, 487
    /// cancelled by a kick, 488 an answer without usable audio, 503 shutdown.
    pub status: u16,
}

impl CallOutReport {
    pub fn joined(&self) -> bool {
        self.status == 200
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RingState {
    Calling,
    Early,
    Done(u16),
}

/// One device rung by a call-out.
#[derive(Debug)]
struct CallOutBranch {
    tx: ClientTxId,
    dialog: Dialog,
    invite_cseq: u32,
    state: RingState,
}

/// A room calling a user's devices; keyed by the participant id it will become.
#[derive(Debug)]
struct CallOut {
    room: String,
    user: String,
    /// The participant's port pair, taken at the start (our offer names it).
    pair: PortPair,
    offer: SessionDescription,
    origin: (String, u64),
    branches: Vec<CallOutBranch>,
    deadline: Instant,
    /// The participant whose REFER to the focus asked for this call-out, told the
    /// outcome by NOTIFY.
    referred_by: Option<u64>,
}

/// A device whose call-out ended without it (CANCELled): its INVITE may still be
/// answered 2xx, which is then ACKed and hung up.
#[derive(Debug)]
struct LateBranch {
    dialog: Dialog,
    invite_cseq: u32,
    /// Forgotten after this even if no final response came (a device that never answers
    /// a CANCELled INVITE must not hold memory forever).
    until: Instant,
}

/// An ACK we sent for a 2xx, re-sent for each retransmission of that 2xx (§13.2.2.4).
#[derive(Debug)]
struct SentAck {
    data: Vec<u8>,
    target: Target,
    until: Instant,
}

#[derive(Debug)]
struct Participant {
    room: String,
    user: String,
    dialog: Dialog,
    pair: PortPair,
    media: ParticipantMedia,
    /// Our `o=` toward them: session id and version (RFC 3264 §8: bumped per change).
    origin: (String, u64),
    /// The CSeq of the INVITE whose 2xx awaits its ACK.
    awaiting_ack: Option<u32>,
}

/// The engine's conference bookkeeping.
#[derive(Debug)]
pub(crate) struct ConferenceState {
    config: ConferenceConfig,
    /// Room → participants in the order they joined.
    rooms: BTreeMap<String, Vec<u64>>,
    participants: HashMap<u64, Participant>,
    /// (Call-ID, our tag) → participant.
    dialogs: HashMap<(String, String), u64>,
    /// INVITE server transactions whose 2xx awaits its ACK.
    ack_waiters: HashMap<ServerTxId, u64>,
    /// Call-outs ringing, by the participant id they will become.
    callouts: HashMap<u64, CallOut>,
    /// INVITE client transactions of ringing call-outs → (participant id, branch).
    callout_txs: HashMap<ClientTxId, (u64, usize)>,
    /// Cancelled call-out INVITEs that may still be answered.
    late: HashMap<ClientTxId, LateBranch>,
    /// (Call-ID, CSeq) → the ACK we sent for that 2xx.
    acks: HashMap<(String, u32), SentAck>,
}

impl ConferenceState {
    pub(crate) fn new(config: ConferenceConfig) -> ConferenceState {
        ConferenceState {
            config,
            rooms: BTreeMap::new(),
            participants: HashMap::new(),
            dialogs: HashMap::new(),
            ack_waiters: HashMap::new(),
            callouts: HashMap::new(),
            callout_txs: HashMap::new(),
            late: HashMap::new(),
            acks: HashMap::new(),
        }
    }

    pub(crate) fn participant_count(&self) -> usize {
        self.participants.len()
    }
}

fn first_audio(sdp: &SessionDescription) -> Option<usize> {
    sdp.media
        .iter()
        .position(|m| m.is_audio() && !m.is_rejected() && m.is_rtp() && !m.is_srtp())
}

fn to_socket(addr: &Option<(String, u16)>) -> Option<SocketAddr> {
    let (host, port) = addr.as_ref()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, *port))
}

/// Why an offer cannot join a room: the status to answer with.
struct Refusal(u16, &'static str);

/// Our answer to a participant's offer, restricted to one codec: a room decodes and
/// encodes each participant in exactly one codec, so nothing else is left for them to
/// switch to. `keep` prefers the codec already in use (re-INVITE).
fn answer_one_codec(
    offer: &SessionDescription,
    caps: &Capabilities,
    address: &str,
    port: u16,
    origin: &(String, u64),
    keep: Option<&CodecSpec>,
) -> Result<(Vec<u8>, ParticipantMedia), Refusal> {
    let Some(index) = first_audio(offer) else {
        return Err(Refusal(488, "No Usable Audio Stream"));
    };
    let ports: Vec<u16> = (0..offer.media.len())
        .map(|i| if i == index { port } else { 0 })
        .collect();
    let params = AnswerParams {
        address: address.to_owned(),
        ports,
        username: "switchboard".into(),
        session_id: origin.0.clone(),
        session_version: origin.1,
    };
    let offered = offer.media[index].rtpmaps();
    let kept = keep.and_then(|k| {
        offered.iter().find(|r| {
            r.same_codec(k.kind.encoding_name(), k.clock_rate, k.channels)
                || (r.same_codec(k.kind.encoding_name(), k.clock_rate, 2) && k.clock_rate == 48000)
        })
    });
    let chosen = kept.cloned().or_else(|| {
        offered
            .iter()
            .find(|r| !r.is_telephone_event() && caps.find(r).is_some())
            .cloned()
    });
    let Some(chosen) = chosen else {
        return Err(Refusal(488, "No Common Codec"));
    };
    let Some(cap) = caps.find(&chosen).cloned() else {
        return Err(Refusal(488, "No Common Codec"));
    };
    let one = Capabilities {
        codecs: vec![cap],
        telephone_event: false,
    };
    let outcome = answer(offer, &one, &params).map_err(|_| Refusal(488, "No Common Codec"))?;
    let stream = &outcome.streams[index];
    let codec = stream
        .codec
        .as_ref()
        .and_then(|c| {
            CodecSpec::from_rtpmap(&c.encoding, c.clock_rate, c.channels, c.payload_type, None)
        })
        .ok_or(Refusal(488, "No Common Codec"))?;
    let media = ParticipantMedia {
        remote: to_socket(&stream.remote_addr),
        codec,
        speaker: false,
        muted: false,
        send: stream.direction.sends(),
    };
    Ok((outcome.answer.to_bytes(), media))
}

impl Engine {
    /// True when `dialled` is a conference room number.
    pub(crate) fn is_room_number(&self, dialled: &str) -> bool {
        self.conference
            .as_ref()
            .is_some_and(|c| c.config.is_room(dialled))
    }

    /// True when `dialled` is the conference factory.
    pub(crate) fn is_conference_factory(&self, dialled: &str) -> bool {
        self.conference
            .as_ref()
            .is_some_and(|c| c.config.is_factory(dialled))
    }

    /// Whether anyone is in `room`, being called into it, or being moved into it by a
    /// re-INVITE still in flight: an ad hoc conference must not land in such a room.
    fn room_in_use(&self, room: &str) -> bool {
        let Some(c) = self.conference.as_ref() else {
            return false;
        };
        c.rooms.contains_key(room)
            || c.callouts.values().any(|o| o.room == room)
            || self.client_roles.values().any(
                |(_, role)| matches!(role, crate::call::ClientRole::ToRoom(t) if t.room == room),
            )
    }

    /// The first configured room number that is not in use (ad hoc conferences).
    fn first_free_room(&self) -> Option<String> {
        let c = self.conference.as_ref()?;
        c.config
            .rooms
            .iter()
            .flat_map(|r| r.first..=r.last)
            .map(|n| n.to_string())
            .find(|n| !self.room_in_use(n))
    }

    /// An authenticated user's INVITE to the conference factory: a new ad hoc room, the
    /// first free one, which the caller joins as its first participant. The 200's
    /// Contact names the room (`isfocus`), the URI the phone then REFERs others to.
    pub(crate) fn conference_factory_invite(
        &mut self,
        id: ServerTxId,
        req: Request,
        source: Target,
        user: String,
        now: Instant,
    ) {
        let Some(room) = self.first_free_room() else {
            let mut resp = Response::for_request(
                &req,
                503,
                "No Free Conference Room",
                Some(&crate::new_tag()),
            );
            resp.headers.push(HeaderName::RetryAfter, "30");
            self.respond(id, resp, now);
            return;
        };
        tracing::info!(%room, %user, "the conference factory opens an ad hoc room");
        self.conference_invite(id, req, source, user, room, now);
    }

    /// An authenticated user's INVITE to room `room`: answer it ourselves and join them.
    pub(crate) fn conference_invite(
        &mut self,
        id: ServerTxId,
        req: Request,
        source: Target,
        user: String,
        room: String,
        now: Instant,
    ) {
        let refuse = |engine: &mut Engine, status: u16, reason: &str| {
            let resp = Response::for_request(&req, status, reason, Some(&crate::new_tag()));
            engine.respond(id, resp, now);
        };
        let (Some(conference), Some(media)) = (self.conference.as_ref(), self.media.as_ref())
        else {
            // Without anchored media there is no mixer to send anyone's audio to.
            refuse(self, 488, "Conference Needs Media Anchoring");
            return;
        };
        let rtp_timeout = media.config.rtp_timeout;
        let (speaker, moderated, tones) = (
            conference.config.is_moderated(&room) && conference.config.speakers.contains(&user),
            conference.config.is_moderated(&room),
            conference.config.tones,
        );
        let offer = match crate::media::sdp_body(&req.headers, &req.body) {
            Some(Ok(sdp)) => sdp,
            Some(Err(())) => return refuse(self, 400, "Malformed SDP"),
            // A late offer (no SDP in the INVITE) is not supported for rooms.
            None => return refuse(self, 488, "Offer Required"),
        };
        let caps = media.caps.clone();
        let address = media.config.advertise.clone();
        let Some(pair) = self.media.as_mut().and_then(|m| m.pool.allocate()) else {
            return refuse(self, 503, "No Media Ports Available");
        };
        let origin = (
            rand::random::<u32>().to_string(),
            u64::from(rand::random::<u16>()),
        );
        let (body, mut participant_media) =
            match answer_one_codec(&offer, &caps, &address, pair.rtp, &origin, None) {
                Ok(x) => x,
                Err(Refusal(status, reason)) => {
                    if let Some(m) = self.media.as_mut() {
                        m.pool.release(pair);
                    }
                    return refuse(self, status, reason);
                }
            };
        participant_media.speaker = speaker;
        let (Ok(from), Ok(to), Ok(cseq), Ok(call_id)) = (
            req.from(),
            req.to(),
            req.cseq(),
            req.call_id().map(str::to_string),
        ) else {
            if let Some(m) = self.media.as_mut() {
                m.pool.release(pair);
            }
            return refuse(self, 400, "Bad Request");
        };
        let remote_target = req
            .headers
            .get(&HeaderName::Contact)
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|na| na.uri)
            .unwrap_or_else(|| from.uri.clone());
        let dialog = Dialog {
            call_id: call_id.clone(),
            local_tag: crate::new_tag(),
            remote_tag: from.tag().map(str::to_string),
            local_uri: without_tag(to.clone()),
            remote_uri: without_tag(from.clone()),
            remote_target,
            route_set: req
                .headers
                .get_all(&HeaderName::RecordRoute)
                .map(str::to_string)
                .collect(),
            local_cseq: 0,
            we_chose_call_id: false,
            target: source,
        };
        let participant = self.new_call_id();
        let mut resp = Response::for_request(&req, 200, "OK", Some(&dialog.local_tag));
        resp.headers.push(
            HeaderName::Contact,
            self.config.local.focus_contact(&room, source),
        );
        resp.headers.push(HeaderName::Allow, ALLOW);
        resp.headers
            .push(HeaderName::ContentType, "application/sdp");
        resp.body = body;
        self.respond(id, resp, now);

        let Some(conference) = self.conference.as_mut() else {
            return;
        };
        let new_room = !conference.rooms.contains_key(&room);
        conference
            .rooms
            .entry(room.clone())
            .or_default()
            .push(participant);
        conference
            .dialogs
            .insert((call_id, dialog.local_tag.clone()), participant);
        conference.ack_waiters.insert(id, participant);
        conference.participants.insert(
            participant,
            Participant {
                room: room.clone(),
                user: user.clone(),
                dialog,
                pair,
                media: participant_media.clone(),
                origin,
                awaiting_ack: Some(cseq.seq),
            },
        );
        tracing::info!(%room, participant, %user, codec = participant_media.codec.kind.encoding_name(), speaker, "joined the conference room");
        if new_room {
            self.events.push_back(EngineEvent::Room(RoomCommand::Open {
                room: room.clone(),
                moderated,
                tones,
                rtp_timeout,
            }));
        }
        self.events.push_back(EngineEvent::Room(RoomCommand::Join {
            room,
            participant,
            pair,
            media: participant_media,
        }));
    }

    fn conference_dialog(&self, call_id: &str, tag: &str) -> Option<u64> {
        self.conference
            .as_ref()?
            .dialogs
            .get(&(call_id.to_string(), tag.to_string()))
            .copied()
    }

    /// The ACK of a 2xx we sent a participant. `true` when it was theirs.
    pub(crate) fn conference_ack(&mut self, ack: &Request) -> bool {
        let (Ok(call_id), Ok(to), Ok(cseq)) = (ack.call_id(), ack.to(), ack.cseq()) else {
            return false;
        };
        let Some(tag) = to.tag() else {
            return false;
        };
        let Some(participant) = self.conference_dialog(call_id, tag) else {
            return false;
        };
        self.tx.ack_received(call_id, cseq.seq);
        if let Some(conference) = self.conference.as_mut() {
            if let Some(p) = conference.participants.get_mut(&participant) {
                if p.awaiting_ack == Some(cseq.seq) {
                    p.awaiting_ack = None;
                    conference.ack_waiters.retain(|_, v| *v != participant);
                }
            }
        }
        true
    }

    /// A 2xx to a participant's INVITE was never acknowledged: they are gone.
    pub(crate) fn conference_ack_timeout(&mut self, id: ServerTxId, now: Instant) -> bool {
        let Some(participant) = self
            .conference
            .as_mut()
            .and_then(|c| c.ack_waiters.remove(&id))
        else {
            return false;
        };
        tracing::info!(participant, "a participant never acknowledged our 2xx");
        self.hang_up_participant(participant, now);
        true
    }

    /// A request inside a participant's dialog. `true` when it was one of ours.
    pub(crate) fn conference_in_dialog(
        &mut self,
        id: ServerTxId,
        req: &Request,
        tag: &str,
        now: Instant,
    ) -> bool {
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        let Some(participant) = self.conference_dialog(call_id, tag) else {
            return false;
        };
        match req.method {
            Method::Bye => {
                self.reply_in_dialog(id, req, 200, now);
                self.remove_participant(participant);
            }
            Method::Invite | Method::Update => self.conference_reoffer(id, req, participant, now),
            Method::Refer => self.conference_refer(id, req, participant, now),
            // The answer to a NOTIFY of ours crossing one of theirs; nothing to do.
            Method::Notify => self.reply_in_dialog(id, req, 200, now),
            // Key presses mean nothing in a room yet; keep-alive OPTIONS are answered.
            Method::Info | Method::Options => self.reply_in_dialog(id, req, 200, now),
            _ => {
                let mut resp = Response::for_request(req, 405, "Method Not Allowed", None);
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond(id, resp, now);
            }
        }
        true
    }

    /// A re-INVITE or UPDATE from a participant: answer its offer on the same port.
    fn conference_reoffer(
        &mut self,
        id: ServerTxId,
        req: &Request,
        participant: u64,
        now: Instant,
    ) {
        let reply = |engine: &mut Engine, status: u16, reason: &str| {
            let resp = Response::for_request(req, status, reason, None);
            engine.respond(id, resp, now);
        };
        let offer = match crate::media::sdp_body(&req.headers, &req.body) {
            Some(Ok(sdp)) => sdp,
            Some(Err(())) => return reply(self, 400, "Malformed SDP"),
            // Offerless re-INVITE (RFC 3261 §14.1): not supported in rooms.
            None => return reply(self, 488, "Offer Required"),
        };
        let Some(media) = self.media.as_ref() else {
            return reply(self, 488, "Not Acceptable Here");
        };
        let (caps, address) = (media.caps.clone(), media.config.advertise.clone());
        let local = self.config.local.clone();
        let Some(p) = self
            .conference
            .as_mut()
            .and_then(|c| c.participants.get_mut(&participant))
        else {
            return reply(self, 481, "Call/Transaction Does Not Exist");
        };
        let contact = req.headers.get(&HeaderName::Contact).map(str::to_string);
        p.dialog.refresh_target(contact.as_deref());
        let origin = (p.origin.0.clone(), p.origin.1 + 1);
        let keep = p.media.codec.clone();
        let (body, mut new_media) =
            match answer_one_codec(&offer, &caps, &address, p.pair.rtp, &origin, Some(&keep)) {
                Ok(x) => x,
                Err(Refusal(status, reason)) => return reply(self, status, reason),
            };
        new_media.speaker = p.media.speaker;
        new_media.muted = p.media.muted;
        p.origin = origin;
        p.media = new_media.clone();
        let room = p.room.clone();
        let target = p.dialog.target;
        if req.method == Method::Invite {
            if let Ok(cseq) = req.cseq() {
                p.awaiting_ack = Some(cseq.seq);
            }
        }
        let mut resp = Response::for_request(req, 200, "OK", None);
        resp.headers
            .push(HeaderName::Contact, local.focus_contact(&room, target));
        resp.headers
            .push(HeaderName::ContentType, "application/sdp");
        resp.body = body;
        self.respond(id, resp, now);
        if req.method == Method::Invite {
            if let Some(c) = self.conference.as_mut() {
                c.ack_waiters.insert(id, participant);
            }
        }
        self.events
            .push_back(EngineEvent::Room(RoomCommand::Update {
                room,
                participant,
                media: new_media,
            }));
    }

    /// Takes a participant out of their room (their dialog is over or being ended).
    fn remove_participant(&mut self, participant: u64) -> Option<Participant> {
        let conference = self.conference.as_mut()?;
        let p = conference.participants.remove(&participant)?;
        conference
            .dialogs
            .remove(&(p.dialog.call_id.clone(), p.dialog.local_tag.clone()));
        conference.ack_waiters.retain(|_, v| *v != participant);
        let mut empty = false;
        if let Some(members) = conference.rooms.get_mut(&p.room) {
            members.retain(|m| *m != participant);
            empty = members.is_empty();
        }
        if empty {
            conference.rooms.remove(&p.room);
        }
        if let Some(m) = self.media.as_mut() {
            m.pool.release(p.pair);
        }
        tracing::info!(room = %p.room, participant, user = %p.user, "left the conference room");
        self.events.push_back(EngineEvent::Room(RoomCommand::Leave {
            room: p.room.clone(),
            participant,
        }));
        if empty {
            self.events.push_back(EngineEvent::Room(RoomCommand::Close {
                room: p.room.clone(),
            }));
        }
        Some(p)
    }

    /// Ends a participant's dialog with BYE and takes them out of the room.
    fn hang_up_participant(&mut self, participant: u64, now: Instant) -> bool {
        let local = self.config.local.clone();
        let Some(mut p) = self.remove_participant(participant) else {
            return false;
        };
        let bye = p.dialog.request(
            Method::Bye,
            &local,
            &switchboard_sip::transaction::new_branch(),
        );
        // The BYE's answer needs no handling: the participant is gone either way.
        self.send_request(bye, p.dialog.target, now);
        true
    }

    /// A room task's report about one participant.
    pub fn handle_room_notice(&mut self, participant: u64, notice: RoomNotice, now: Instant) {
        match notice {
            RoomNotice::BindFailed { pair } => {
                tracing::warn!(
                    participant,
                    port = pair.rtp,
                    "RTP port unusable; hanging up the participant"
                );
                self.hang_up_participant(participant, now);
                if let Some(m) = self.media.as_mut() {
                    m.pool.mark_broken(pair);
                }
            }
            RoomNotice::RtpTimeout => {
                tracing::info!(participant, "no RTP from a participant; hanging up");
                self.hang_up_participant(participant, now);
            }
        }
        self.drain_tx_events(now);
    }

    /// Shutdown: every participant gets BYE, every call-out is cancelled.
    pub(crate) fn conference_shutdown(&mut self, now: Instant) {
        self.call_outs_shutdown(now);
        let ids: Vec<u64> = self
            .conference
            .as_ref()
            .map(|c| c.participants.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.hang_up_participant(id, now);
        }
    }

    /// Participants in rooms (for /metrics).
    pub fn conference_participants(&self) -> usize {
        self.conference
            .as_ref()
            .map_or(0, ConferenceState::participant_count)
    }

    pub(crate) fn command_list_rooms(&self) -> Result<CommandReply, CommandError> {
        let Some(conference) = self.conference.as_ref() else {
            return Ok(CommandReply::Rooms(Vec::new()));
        };
        let rooms = conference
            .rooms
            .iter()
            .map(|(room, members)| RoomInfo {
                room: room.clone(),
                participants: members
                    .iter()
                    .filter_map(|id| {
                        let p = conference.participants.get(id)?;
                        Some(ParticipantInfo {
                            participant: *id,
                            user: p.user.clone(),
                            muted: p.media.muted,
                            speaker: p.media.speaker,
                        })
                    })
                    .collect(),
            })
            .collect();
        Ok(CommandReply::Rooms(rooms))
    }

    fn room_participant(&self, room: &str, participant: u64) -> Result<(), CommandError> {
        let conference = self
            .conference
            .as_ref()
            .ok_or_else(|| CommandError::NoSuchRoom(room.to_owned()))?;
        let members = conference
            .rooms
            .get(room)
            .ok_or_else(|| CommandError::NoSuchRoom(room.to_owned()))?;
        if !members.contains(&participant) {
            return Err(CommandError::NoSuchParticipant(participant));
        }
        Ok(())
    }

    pub(crate) fn command_room_mute(
        &mut self,
        room: String,
        participant: u64,
        muted: bool,
    ) -> Result<CommandReply, CommandError> {
        self.room_participant(&room, participant)?;
        if let Some(p) = self
            .conference
            .as_mut()
            .and_then(|c| c.participants.get_mut(&participant))
        {
            p.media.muted = muted;
        }
        self.events.push_back(EngineEvent::Room(RoomCommand::Mute {
            room,
            participant,
            muted,
        }));
        Ok(CommandReply::Accepted)
    }

    pub(crate) fn command_room_kick(
        &mut self,
        room: String,
        participant: u64,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        if self.cancel_call_out(&room, participant, now) {
            return Ok(CommandReply::Accepted);
        }
        self.room_participant(&room, participant)?;
        self.hang_up_participant(participant, now);
        Ok(CommandReply::Accepted)
    }
}

/// The participant media of a call-out from the device's answer to our `offer`, or the
/// status that says why it cannot join (488).
///
/// The room decodes one codec per participant, and the answer may list several. RFC 3264
/// §6.1 says the answerer SHOULD send the most preferred codec of the offer that its
/// answer lists, so that is the one the room expects; we send it too (§7: anything the
/// answer lists may be sent). baresip, for one, orders its answer by its own preference
/// but sends by the offer's.
fn call_out_media(offer: &SessionDescription, resp: &Response) -> Result<ParticipantMedia, u16> {
    let Some(Ok(answer_sdp)) = crate::media::sdp_body(&resp.headers, &resp.body) else {
        return Err(488);
    };
    let stream = negotiated(offer, &answer_sdp)
        .into_iter()
        .next()
        .filter(|s| s.accepted)
        .ok_or(488u16)?;
    let (Some(offered), Some(answered)) = (offer.media.first(), answer_sdp.media.first()) else {
        return Err(488);
    };
    // An answer may omit the rtpmap of a dynamic payload type it took from the offer.
    let listed: Vec<_> = answered
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| answered.rtpmap(pt).or_else(|| offered.rtpmap(pt)))
        .collect();
    let codec = offered
        .rtpmaps()
        .iter()
        .filter(|ours| !ours.is_telephone_event())
        .find_map(|ours| {
            listed
                .iter()
                .find(|a| a.same_codec(&ours.encoding, ours.clock_rate, ours.channels))
        })
        .and_then(|a| {
            CodecSpec::from_rtpmap(&a.encoding, a.clock_rate, a.channels, a.payload_type, None)
        })
        .ok_or(488u16)?;
    Ok(ParticipantMedia {
        remote: to_socket(&stream.remote_addr),
        codec,
        speaker: false,
        muted: false,
        send: stream.direction.sends(),
    })
}

/// Calling out from rooms (see the module documentation).
impl Engine {
    /// `RoomAdd`: ring `target`'s devices; the first to answer joins `room`.
    pub(crate) fn command_room_add(
        &mut self,
        room: String,
        target: &str,
        auto_answer: bool,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let Some(conference) = self.conference.as_ref() else {
            return Err(CommandError::NoSuchRoom(room));
        };
        if !conference.config.is_room(&room) {
            return Err(CommandError::NoSuchRoom(room));
        }
        let Some(user) = self.directory.resolve(target).map(|u| u.name.clone()) else {
            return Err(CommandError::NoSuchUser(target.to_owned()));
        };
        if conference
            .callouts
            .values()
            .any(|c| c.room == room && c.user == user)
        {
            return Err(CommandError::Conflict(format!(
                "{user} is already being called into room {room}"
            )));
        }
        let present = conference.rooms.get(&room).is_some_and(|members| {
            members.iter().any(|id| {
                conference
                    .participants
                    .get(id)
                    .is_some_and(|p| p.user == user)
            })
        });
        if present {
            return Err(CommandError::Conflict(format!(
                "{user} is already in room {room}"
            )));
        }
        let speaker =
            conference.config.is_moderated(&room) && conference.config.speakers.contains(&user);
        let unix = self.unix(now);
        let bindings: Vec<Binding> = self.registrar.lookup(&user, unix);
        if bindings.is_empty() {
            return Err(CommandError::NotRegistered(user));
        }
        let Some(media) = self.media.as_ref() else {
            return Err(CommandError::Unavailable(
                "conference rooms need media anchoring".into(),
            ));
        };
        // DTMF means nothing in a room (yet): no telephone-event.
        let caps = Capabilities {
            telephone_event: false,
            ..media.caps.clone()
        };
        let address = media.config.advertise.clone();
        let Some(pair) = self.media.as_mut().and_then(|m| m.pool.allocate()) else {
            return Err(CommandError::Unavailable("no media ports available".into()));
        };
        let origin = (
            rand::random::<u32>().to_string(),
            u64::from(rand::random::<u16>()),
        );
        let offer = initial_offer(
            &caps,
            Origin {
                username: "switchboard".into(),
                session_id: origin.0.clone(),
                session_version: origin.1,
                net_type: "IN".into(),
                addr_type: if address.contains(':') { "IP6" } else { "IP4" }.into(),
                address: address.clone(),
            },
            &address,
            pair.rtp,
        );
        let participant = self.new_call_id();
        let mut branches = Vec::new();
        for binding in &bindings {
            if let Some(b) = self.call_out_invite(&room, &user, binding, &offer, auto_answer, now) {
                branches.push(b);
            }
        }
        if branches.is_empty() {
            if let Some(m) = self.media.as_mut() {
                m.pool.release(pair);
            }
            return Err(CommandError::NotRegistered(user));
        }
        let deadline = now + self.config.ring_timeout;
        // The deadline heap is keyed by call id; participant ids come from the same
        // counter, so `on_call_deadline` finds no call and hands the key to us.
        self.deadlines.push(Reverse((deadline, participant)));
        tracing::info!(%room, participant, %user, devices = branches.len(), speaker, "calling out from the conference room");
        let Some(conference) = self.conference.as_mut() else {
            return Err(CommandError::NoSuchRoom(room));
        };
        for (i, b) in branches.iter().enumerate() {
            conference.callout_txs.insert(b.tx, (participant, i));
        }
        conference.callouts.insert(
            participant,
            CallOut {
                room: room.clone(),
                user,
                pair,
                offer,
                origin,
                branches,
                deadline,
                referred_by: None,
            },
        );
        Ok(CommandReply::Room {
            room,
            participant: Some(participant),
        })
    }

    /// One INVITE of a call-out, to one registered device.
    fn call_out_invite(
        &mut self,
        room: &str,
        user: &str,
        binding: &Binding,
        offer: &SessionDescription,
        auto_answer: bool,
        now: Instant,
    ) -> Option<CallOutBranch> {
        // The device shows the room as the caller.
        let mut caller = NameAddr::new(Uri::sip(Some(room), &self.config.domain, None));
        caller.display_name = Some(format!("\"Conference {room}\""));
        let (dialog, mut invite) = self.device_invite(binding, caller, user, auto_answer)?;
        invite.set_body(offer.to_bytes(), Some("application/sdp"));
        let invite_cseq = dialog.local_cseq;
        let tx = self.send_request(invite, binding.source, now)?;
        Some(CallOutBranch {
            tx,
            dialog,
            invite_cseq,
            state: RingState::Calling,
        })
    }

    /// A response on one of our client transactions. `true` when it was a call-out's.
    pub(crate) fn conference_response(
        &mut self,
        id: ClientTxId,
        resp: &Response,
        now: Instant,
    ) -> bool {
        if self.conference.is_none() {
            return false;
        }
        if self.resend_call_out_ack(resp) {
            return true;
        }
        let conference = self.conference.as_mut().expect("checked above");
        if conference.late.contains_key(&id) {
            if resp.is_success() {
                if let Some(late) = conference.late.remove(&id) {
                    self.ack_and_bye_late(late, resp, now);
                }
            } else if resp.is_final() {
                conference.late.remove(&id);
            }
            return true;
        }
        let Some(&(participant, i)) = conference.callout_txs.get(&id) else {
            return false;
        };
        match resp.status {
            100 => {}
            101..=199 => {
                if let Some(b) = conference
                    .callouts
                    .get_mut(&participant)
                    .and_then(|c| c.branches.get_mut(i))
                {
                    if b.state == RingState::Calling {
                        b.state = RingState::Early;
                    }
                }
            }
            200..=299 => self.call_out_answered(participant, i, resp, now),
            status => self.call_out_branch_done(id, participant, i, status, now),
        }
        true
    }

    /// A call-out INVITE timed out or its transport failed. `true` when it was ours.
    pub(crate) fn conference_client_failure(&mut self, id: ClientTxId, now: Instant) -> bool {
        let Some(conference) = self.conference.as_mut() else {
            return false;
        };
        if conference.late.remove(&id).is_some() {
            return true;
        }
        let Some(&(participant, i)) = conference.callout_txs.get(&id) else {
            return false;
        };
        self.call_out_branch_done(id, participant, i, 408, now);
        true
    }

    /// A 2xx that matched no transaction (retransmitted after the INVITE transaction
    /// ended): ACKed again if it is one we ACKed. `true` when it was ours.
    pub(crate) fn conference_stray_response(&mut self, resp: &Response) -> bool {
        self.resend_call_out_ack(resp)
    }

    /// A ring deadline from the engine's heap whose key is no call. `true` when it was a
    /// call-out's.
    pub(crate) fn conference_deadline(&mut self, key: u64, at: Instant, now: Instant) -> bool {
        let due = self
            .conference
            .as_ref()
            .and_then(|c| c.callouts.get(&key))
            .is_some_and(|c| c.deadline == at);
        if due {
            tracing::debug!(
                participant = key,
                "call-out not answered before the ring timeout"
            );
            self.call_out_failed(key, 408, now);
        }
        due
    }

    fn resend_call_out_ack(&mut self, resp: &Response) -> bool {
        if !resp.is_success() {
            return false;
        }
        let (Ok(call_id), Ok(cseq)) = (resp.call_id(), resp.cseq()) else {
            return false;
        };
        if cseq.method != Method::Invite {
            return false;
        }
        let Some(sent) = self
            .conference
            .as_ref()
            .and_then(|c| c.acks.get(&(call_id.to_owned(), cseq.seq)))
        else {
            return false;
        };
        let (data, target) = (sent.data.clone(), sent.target);
        self.send_direct(data, target);
        true
    }

    /// Sends the ACK for a 2xx and keeps it for the 2xx's retransmissions (for as long as
    /// a client transaction would pass them on: 64*T1).
    fn send_call_out_ack(&mut self, dialog: &Dialog, invite_cseq: u32, now: Instant) {
        let local = self.config.local.clone();
        let ack = dialog.ack(invite_cseq, &local, &new_branch()).to_bytes();
        let until = now + self.config.timers.transaction_timeout();
        if let Some(c) = self.conference.as_mut() {
            c.acks.retain(|_, a| a.until > now);
            c.acks.insert(
                (dialog.call_id.clone(), invite_cseq),
                SentAck {
                    data: ack.clone(),
                    target: dialog.target,
                    until,
                },
            );
        }
        self.send_direct(ack, dialog.target);
    }

    /// A device answered after its call-out was over (another device won, the ring
    /// timed out, or the call-out was cancelled): ACK, then BYE.
    fn ack_and_bye_late(&mut self, late: LateBranch, resp: &Response, now: Instant) {
        let mut dialog = late.dialog;
        dialog.confirm_from_response(resp);
        self.send_call_out_ack(&dialog, late.invite_cseq, now);
        let bye = dialog.request(Method::Bye, &self.config.local.clone(), &new_branch());
        // Its answer needs no handling: the device is not in any room.
        self.send_request(bye, dialog.target, now);
        tracing::info!(call_id = %dialog.call_id, "late answer to a call-out hung up");
    }

    /// CANCELs the devices of a finished call-out that may still ring, keeping their
    /// dialogs for a late 2xx.
    fn cancel_call_out_branches(&mut self, branches: Vec<CallOutBranch>, now: Instant) {
        let until = now + self.config.timers.transaction_timeout() * 2;
        for b in branches {
            if let Some(c) = self.conference.as_mut() {
                c.callout_txs.remove(&b.tx);
            }
            if !matches!(b.state, RingState::Calling | RingState::Early) {
                continue;
            }
            // Deferred by the layer until a provisional arrives (§9.1), never sent if a
            // final response comes first.
            let _ = self.tx.send_cancel(b.tx, now);
            if let Some(c) = self.conference.as_mut() {
                c.late.retain(|_, l| l.until > now);
                c.late.insert(
                    b.tx,
                    LateBranch {
                        dialog: b.dialog,
                        invite_cseq: b.invite_cseq,
                        until,
                    },
                );
            }
        }
    }

    /// A device of a ringing call-out gave a final non-2xx (or timed out).
    fn call_out_branch_done(
        &mut self,
        id: ClientTxId,
        participant: u64,
        i: usize,
        status: u16,
        now: Instant,
    ) {
        let Some(conference) = self.conference.as_mut() else {
            return;
        };
        conference.callout_txs.remove(&id);
        let Some(callout) = conference.callouts.get_mut(&participant) else {
            return;
        };
        if let Some(b) = callout.branches.get_mut(i) {
            b.state = RingState::Done(status);
        }
        let statuses: Option<Vec<u16>> = callout
            .branches
            .iter()
            .map(|b| match b.state {
                RingState::Done(s) => Some(s),
                _ => None,
            })
            .collect();
        if let Some(statuses) = statuses {
            let best = crate::call::best_final(&statuses);
            self.call_out_failed(participant, best, now);
        }
    }

    /// A call-out ends without anyone joining: the devices still ringing are CANCELled,
    /// the port pair goes back to the pool, the room is as it was.
    fn call_out_failed(&mut self, participant: u64, status: u16, now: Instant) {
        let Some(callout) = self
            .conference
            .as_mut()
            .and_then(|c| c.callouts.remove(&participant))
        else {
            return;
        };
        self.cancel_call_out_branches(callout.branches, now);
        if let Some(m) = self.media.as_mut() {
            m.pool.release(callout.pair);
        }
        tracing::info!(room = %callout.room, participant, user = %callout.user, status, "call-out from the conference room not answered");
        if let Some(referrer) = callout.referred_by {
            self.notify_participant(referrer, status, now);
        }
        self.events
            .push_back(EngineEvent::RoomCallOut(CallOutReport {
                room: callout.room,
                participant,
                user: callout.user,
                status,
            }));
    }

    /// The first 2xx of a call-out: ACK it, CANCEL the other devices, and join the
    /// device to the room (or hang it up if its answer has no audio we can mix).
    fn call_out_answered(&mut self, participant: u64, i: usize, resp: &Response, now: Instant) {
        let Some(mut callout) = self
            .conference
            .as_mut()
            .and_then(|c| c.callouts.remove(&participant))
        else {
            return;
        };
        if i >= callout.branches.len() {
            return;
        }
        let mut branch = callout.branches.remove(i);
        if let Some(c) = self.conference.as_mut() {
            c.callout_txs.remove(&branch.tx);
        }
        branch.dialog.confirm_from_response(resp);
        self.send_call_out_ack(&branch.dialog, branch.invite_cseq, now);
        self.cancel_call_out_branches(std::mem::take(&mut callout.branches), now);
        let CallOut {
            room,
            user,
            pair,
            offer,
            origin,
            referred_by,
            ..
        } = callout;
        let media = match call_out_media(&offer, resp) {
            Ok(m) => m,
            Err(status) => {
                tracing::info!(%room, participant, %user, "a call-out was answered without usable audio; hanging up");
                let bye =
                    branch
                        .dialog
                        .request(Method::Bye, &self.config.local.clone(), &new_branch());
                self.send_request(bye, branch.dialog.target, now);
                if let Some(m) = self.media.as_mut() {
                    m.pool.release(pair);
                }
                if let Some(referrer) = referred_by {
                    self.notify_participant(referrer, status, now);
                }
                self.events
                    .push_back(EngineEvent::RoomCallOut(CallOutReport {
                        room,
                        participant,
                        user,
                        status,
                    }));
                return;
            }
        };
        self.join_room(
            participant,
            &room,
            user.clone(),
            branch.dialog,
            pair,
            media,
            origin,
        );
        if let Some(referrer) = referred_by {
            self.notify_participant(referrer, 200, now);
        }
        self.events
            .push_back(EngineEvent::RoomCallOut(CallOutReport {
                room,
                participant,
                user,
                status: 200,
            }));
    }

    /// A kick naming a call-out that still rings: it is cancelled. `true` when it was one.
    fn cancel_call_out(&mut self, room: &str, participant: u64, now: Instant) -> bool {
        let ringing = self
            .conference
            .as_ref()
            .and_then(|c| c.callouts.get(&participant))
            .is_some_and(|c| c.room == room);
        if ringing {
            self.call_out_failed(participant, 487, now);
        }
        ringing
    }

    /// Shutdown: every call-out is cancelled.
    fn call_outs_shutdown(&mut self, now: Instant) {
        let ids: Vec<u64> = self
            .conference
            .as_ref()
            .map(|c| c.callouts.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.call_out_failed(id, 503, now);
        }
    }
}

/// A party of a two-party call being moved into a room by a re-INVITE (ad hoc
/// conference from a live call, or a REFER naming a room).
#[derive(Debug, Clone)]
pub(crate) struct ToRoom {
    pub(crate) room: String,
    pub(crate) side: usize,
    pub(crate) pair: PortPair,
    pub(crate) offer: SessionDescription,
    pub(crate) origin: (String, u64),
    pub(crate) cseq: u32,
    /// Who asked by REFER, told the outcome by NOTIFY; `None` for the API's
    /// `RoomFromCall`.
    pub(crate) referrer: Option<RoomReferrer>,
}

/// Who REFERred a party into a room. Either way it is the party's other side in the
/// call (a phone building a network conference out of its calls, RFC 4579 §5): once the
/// party is in, that side is released with BYE and the call ends; if the party refuses,
/// the call stays as it was.
#[derive(Debug, Clone)]
pub(crate) enum RoomReferrer {
    /// The other party, by REFER in its dialog of the call whose Refer-To names the room
    /// (its number, or the focus URI the factory answered with); `notify` is that dialog
    /// (Call-ID, our tag).
    Call { notify: (String, String) },
    /// A room participant, by REFER in its dialog with the focus whose Refer-To carries a
    /// Replaces naming its own dialog in the call (what a focus would carry out with an
    /// INVITE with Replaces to the other party; we are that party's B2BUA).
    Focus { participant: u64 },
}

/// The SIP status that refuses a REFER for a command error.
fn refer_refusal(e: &CommandError) -> u16 {
    match e {
        CommandError::NoSuchCall(_) => 481,
        CommandError::NoSuchUser(_)
        | CommandError::NoSuchRoom(_)
        | CommandError::NoSuchSlot(_)
        | CommandError::NoSuchParticipant(_) => 404,
        CommandError::NotRegistered(_) => 480,
        // Busy with another change (a re-INVITE in flight, a transfer ringing): try later.
        CommandError::Conflict(_) => 491,
        CommandError::BadRequest(_) => 400,
        CommandError::Unavailable(_) => 503,
        CommandError::NotImplemented(_) => 501,
    }
}

/// Ad hoc conferences: both parties of a live call re-INVITEd into a room.
impl Engine {
    /// `RoomFromCall`: move both parties of `call` into `room` (or the first empty room).
    pub(crate) fn command_room_from_call(
        &mut self,
        call: u64,
        room: Option<String>,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let Some(conference) = self.conference.as_ref() else {
            return Err(CommandError::Unavailable(
                "no conference rooms are configured ([conference] rooms)".into(),
            ));
        };
        let room = match room {
            Some(r) if conference.config.is_room(&r) => r,
            Some(r) => return Err(CommandError::NoSuchRoom(r)),
            None => self.first_free_room().ok_or_else(|| {
                CommandError::Unavailable("every conference room is in use".into())
            })?,
        };
        self.check_movable(call)?;
        let mut moving = Vec::new();
        for side in 0..2 {
            match self.reinvite_into_room(call, side, &room, None, now) {
                Ok(()) => moving.push(side),
                Err(e) => {
                    tracing::warn!(call, side, error = %e, "cannot move a party into the room");
                    if moving.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        tracing::info!(call, %room, "moving the call into a conference room");
        Ok(CommandReply::Room {
            room,
            participant: None,
        })
    }

    /// REFER in a call's dialog whose Refer-To names a room (its number, or the focus
    /// URI the factory answered with): the party on `side` asks for the other party to
    /// join the room, a blind transfer into a room. The other party is re-INVITEd toward
    /// a new room port pair; once it is in, the referrer gets NOTIFY 200 and BYE and the
    /// call ends. If the party refuses, the referrer gets the failure and the call stays
    /// as it was.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn refer_into_room(
        &mut self,
        call: u64,
        side: usize,
        id: ServerTxId,
        req: &Request,
        notify: (String, String),
        room: String,
        now: Instant,
    ) {
        let referrer = RoomReferrer::Call {
            notify: notify.clone(),
        };
        let moved = self
            .check_movable(call)
            .and_then(|()| self.reinvite_into_room(call, 1 - side, &room, Some(referrer), now));
        match moved {
            Ok(()) => {
                tracing::info!(call, %room, "REFER: the other party is moving into the room");
                self.reply_in_dialog(id, req, 202, now);
                self.notify_refer(call, &notify, 100, now);
            }
            Err(e) => self.reply_in_dialog_because(id, req, refer_refusal(&e), &e.to_string(), now),
        }
    }

    /// The side of `call` being moved into a room at someone's REFER, if one is.
    pub(crate) fn referred_room_move(&self, call: u64) -> Option<usize> {
        self.client_roles.values().find_map(|(k, role)| match role {
            crate::call::ClientRole::ToRoom(t) if *k == call && t.referrer.is_some() => {
                Some(t.side)
            }
            _ => None,
        })
    }

    /// The API's blind transfer to a room number: the party on `side` is moved into the
    /// room; the other one is released once it is in. Nobody is told by NOTIFY.
    pub(crate) fn move_into_room(
        &mut self,
        call: u64,
        side: usize,
        room: &str,
        now: Instant,
    ) -> Result<(), CommandError> {
        self.check_movable(call)?;
        self.reinvite_into_room(call, side, room, None, now)
    }

    /// REFER from a participant to the focus. With a Replaces naming the participant's
    /// own dialog in a two-party call, the other party of that call joins the room (the
    /// participant's leg in the call is released, as the replaced dialog would be).
    /// Without Replaces, the Refer-To user is called out into the room (`RoomAdd`), and
    /// the outcome is reported by NOTIFY when the call-out ends.
    fn conference_refer(&mut self, id: ServerTxId, req: &Request, participant: u64, now: Instant) {
        let answer = |engine: &mut Engine, status: u16, reason: &str| {
            engine.reply_in_dialog_because(id, req, status, reason, now);
        };
        let Some(refer_to) = req
            .headers
            .get(&HeaderName::ReferTo)
            .and_then(|v| NameAddr::parse(v).ok())
        else {
            return answer(self, 400, "Missing or Bad Refer-To");
        };
        let Some((room, user)) = self
            .conference
            .as_ref()
            .and_then(|c| c.participants.get(&participant))
            .map(|p| (p.room.clone(), p.user.clone()))
        else {
            return answer(self, 481, "Call/Transaction Does Not Exist");
        };
        if refer_to
            .uri
            .param("method")
            .flatten()
            .is_some_and(|m| !m.eq_ignore_ascii_case("INVITE"))
        {
            // method=BYE (take someone out of the room) is left to RoomKick.
            return answer(self, 501, "Only INVITE Referrals");
        }
        let replaces = refer_to
            .uri
            .headers
            .as_deref()
            .and_then(crate::features::replaces_from_uri_headers);
        let Some(replaces) = replaces else {
            let Some(target) = refer_to
                .uri
                .user_unescaped()
                .filter(|_| refer_to.uri.is_sip())
            else {
                return answer(self, 404, "Not Found");
            };
            return self.refer_call_out(id, req, participant, room, &target, now);
        };
        let Some((call, side)) = self.find_dialog(&replaces) else {
            return answer(self, 481, "Replaced Dialog Does Not Exist");
        };
        // A participant may bring in the other party of its own calls only.
        if self.side_name(call, side) != user {
            return answer(self, 403, "Replaces Names Another User's Call");
        }
        let referrer = RoomReferrer::Focus { participant };
        let moved = self
            .check_movable(call)
            .and_then(|()| self.reinvite_into_room(call, 1 - side, &room, Some(referrer), now));
        match moved {
            Ok(()) => {
                tracing::info!(call, %room, participant, "REFER to the focus: the other party of the call is moving into the room");
                answer(self, 202, "Accepted");
                self.notify_participant(participant, 100, now);
            }
            Err(e) => answer(self, refer_refusal(&e), &e.to_string()),
        }
    }

    /// REFER to the focus without Replaces: a call-out from the room to the Refer-To user.
    fn refer_call_out(
        &mut self,
        id: ServerTxId,
        req: &Request,
        participant: u64,
        room: String,
        target: &str,
        now: Instant,
    ) {
        match self.command_room_add(room, target, false, now) {
            Ok(CommandReply::Room {
                participant: Some(callee),
                ..
            }) => {
                if let Some(o) = self
                    .conference
                    .as_mut()
                    .and_then(|c| c.callouts.get_mut(&callee))
                {
                    o.referred_by = Some(participant);
                }
                self.reply_in_dialog(id, req, 202, now);
                self.notify_participant(participant, 100, now);
            }
            Ok(_) => self.reply_in_dialog(id, req, 500, now),
            Err(e) => {
                let status = match e {
                    // Already in the room, or already being called into it.
                    CommandError::Conflict(_) => 486,
                    ref other => refer_refusal(other),
                };
                self.reply_in_dialog_because(id, req, status, &e.to_string(), now);
            }
        }
    }

    /// A NOTIFY for a REFER in a participant's dialog with the focus.
    pub(crate) fn notify_participant(&mut self, participant: u64, status: u16, now: Instant) {
        let local = self.config.local.clone();
        let Some(p) = self
            .conference
            .as_mut()
            .and_then(|c| c.participants.get_mut(&participant))
        else {
            return;
        };
        let notify = crate::features::refer_notify(&mut p.dialog, &local, status);
        let target = p.dialog.target;
        // Its answer needs no handling.
        self.send_request(notify, target, now);
    }

    fn check_movable(&self, call: u64) -> Result<(), CommandError> {
        let c = self
            .calls
            .get(&call)
            .filter(|c| c.is_live())
            .ok_or(CommandError::NoSuchCall(call))?;
        if c.state == crate::call::CallState::Ringing {
            return Err(CommandError::Conflict(format!(
                "call {call} is not answered yet"
            )));
        }
        if c.media.is_none() {
            return Err(CommandError::Unavailable(
                "conference rooms need media anchoring".into(),
            ));
        }
        if c.ring.is_some() || c.parked.is_some() || c.own_reinvite || c.reinvite_in_progress {
            return Err(CommandError::Conflict(format!(
                "call {call} is busy with another change"
            )));
        }
        if !(c.a_present && c.winner.is_some()) {
            return Err(CommandError::Conflict(format!(
                "call {call} does not have two parties"
            )));
        }
        Ok(())
    }

    /// Sends the re-INVITE that points one party's audio at a new room port pair.
    fn reinvite_into_room(
        &mut self,
        call: u64,
        side: usize,
        room: &str,
        referrer: Option<RoomReferrer>,
        now: Instant,
    ) -> Result<(), CommandError> {
        let Some(media) = self.media.as_ref() else {
            return Err(CommandError::Unavailable("no media".into()));
        };
        let caps = Capabilities {
            telephone_event: false,
            ..media.caps.clone()
        };
        let address = media.config.advertise.clone();
        let origin = self
            .media_next_origin(call, side)
            .ok_or(CommandError::NoSuchCall(call))?;
        let Some(pair) = self.media.as_mut().and_then(|m| m.pool.allocate()) else {
            return Err(CommandError::Unavailable("no media ports available".into()));
        };
        let offer = initial_offer(
            &caps,
            Origin {
                username: "switchboard".into(),
                session_id: origin.0.clone(),
                session_version: origin.1,
                net_type: "IN".into(),
                addr_type: if address.contains(':') { "IP6" } else { "IP4" }.into(),
                address: address.clone(),
            },
            &address,
            pair.rtp,
        );
        let local = self.config.local.clone();
        let Some(d) = self.side_dialog(call, side) else {
            if let Some(m) = self.media.as_mut() {
                m.pool.release(pair);
            }
            return Err(CommandError::Conflict("a party is gone".into()));
        };
        let mut invite = d.request(Method::Invite, &local, &new_branch());
        let cseq = d.local_cseq;
        let target = d.target;
        invite.headers.push(HeaderName::Allow, ALLOW);
        invite.set_body(offer.to_bytes(), Some("application/sdp"));
        if let Some(c) = self.calls.get_mut(&call) {
            c.own_reinvite = true;
        }
        let Some(tx) = self.send_request(invite, target, now) else {
            if let Some(m) = self.media.as_mut() {
                m.pool.release(pair);
            }
            return Err(CommandError::Unavailable(
                "cannot send the re-INVITE".into(),
            ));
        };
        self.client_roles.insert(
            tx,
            (
                call,
                crate::call::ClientRole::ToRoom(Box::new(ToRoom {
                    room: room.to_string(),
                    side,
                    pair,
                    offer,
                    origin,
                    cseq,
                    referrer,
                })),
            ),
        );
        Ok(())
    }

    /// The answer to a re-INVITE into a room (`None`: it timed out).
    pub(crate) fn on_to_room_response(
        &mut self,
        call: u64,
        to: ToRoom,
        resp: Option<Response>,
        now: Instant,
    ) {
        if resp.as_ref().is_some_and(|r| r.status < 200) {
            return;
        }
        let local = self.config.local.clone();
        let release = |engine: &mut Engine| {
            if let Some(m) = engine.media.as_mut() {
                m.pool.release(to.pair);
            }
        };
        // The party's final status (408: it never answered).
        let status = resp.as_ref().map_or(408, |r| r.status);
        let Some(resp) = resp.filter(|r| r.is_success()) else {
            // The party refused (or never answered): it stays in the call.
            tracing::info!(
                call,
                side = to.side,
                status,
                "a party refused the move into the room"
            );
            release(self);
            self.tell_referrer(call, to.referrer.as_ref(), status, now);
            self.finish_move_step(call, now);
            return;
        };
        let Some(d) = self.side_dialog(call, to.side) else {
            release(self);
            return;
        };
        d.refresh_target(resp.headers.get(&HeaderName::Contact));
        let ack = d.ack(to.cseq, &local, &new_branch());
        let target = d.target;
        self.send_direct(ack.to_bytes(), target);
        let media = match call_out_media(&to.offer, &resp) {
            Ok(m) => m,
            Err(_) => {
                tracing::info!(
                    call,
                    side = to.side,
                    "no usable audio in the room answer; the party stays"
                );
                release(self);
                self.tell_referrer(call, to.referrer.as_ref(), 488, now);
                self.finish_move_step(call, now);
                return;
            }
        };
        let user = if to.side == 0 {
            self.calls.get(&call).map(|c| c.caller.clone())
        } else {
            self.calls.get(&call).map(|c| c.callee.clone())
        }
        .unwrap_or_default();
        let Some(dialog) = self.side_dialog(call, to.side).cloned() else {
            release(self);
            return;
        };
        // Out of the call: its dialog now belongs to the room.
        self.detach_side(call, to.side);
        let participant = self.new_call_id();
        self.join_room(
            participant,
            &to.room,
            user,
            dialog,
            to.pair,
            media,
            to.origin,
        );
        self.events.push_back(EngineEvent::History {
            call,
            event: crate::engine::CallHistory::MovedToRoom {
                party: crate::features::party_of(to.side),
                room: to.room.clone(),
            },
        });
        // Told before the referrer's leg is released by `finish_move_step`.
        self.tell_referrer(call, to.referrer.as_ref(), 200, now);
        self.finish_move_step(call, now);
    }

    /// The NOTIFY (RFC 3515) that tells whoever REFERred a party into a room how it went.
    fn tell_referrer(
        &mut self,
        call: u64,
        referrer: Option<&RoomReferrer>,
        status: u16,
        now: Instant,
    ) {
        match referrer {
            None => {}
            Some(RoomReferrer::Call { notify, .. }) => self.notify_refer(call, notify, status, now),
            Some(RoomReferrer::Focus { participant, .. }) => {
                self.notify_participant(*participant, status, now)
            }
        }
    }

    /// After each party's answer: when nobody is left in the call, it ends (both are in
    /// the room); when one party refused, it stays alone with its call until it hangs up.
    fn finish_move_step(&mut self, call: u64, now: Instant) {
        let pending = self
            .client_roles
            .values()
            .any(|(k, r)| *k == call && matches!(r, crate::call::ClientRole::ToRoom(_)));
        if pending {
            return;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.own_reinvite = false;
        }
        let empty = self
            .calls
            .get(&call)
            .is_some_and(|c| !c.a_present && c.winner.is_none());
        if empty {
            self.end_established(call, now);
        } else {
            // A party that stayed behind has nobody to talk to: hang it up.
            let alone = self
                .calls
                .get(&call)
                .is_some_and(|c| !(c.a_present && c.winner.is_some()));
            if alone {
                self.hang_up_both(call, now);
            }
        }
    }

    /// Adds a participant whose dialog already exists (a call-out that answered, a party
    /// moved from a call) to a room, opening the room's mixer for its first participant.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join_room(
        &mut self,
        participant: u64,
        room: &str,
        user: String,
        dialog: Dialog,
        pair: PortPair,
        mut media: ParticipantMedia,
        origin: (String, u64),
    ) {
        let Some(conference) = self.conference.as_mut() else {
            return;
        };
        let (moderated, tones) = (
            conference.config.is_moderated(room),
            conference.config.tones,
        );
        media.speaker = moderated && conference.config.speakers.contains(&user);
        let new_room = !conference.rooms.contains_key(room);
        conference
            .rooms
            .entry(room.to_string())
            .or_default()
            .push(participant);
        conference.dialogs.insert(
            (dialog.call_id.clone(), dialog.local_tag.clone()),
            participant,
        );
        conference.participants.insert(
            participant,
            Participant {
                room: room.to_string(),
                user: user.clone(),
                dialog,
                pair,
                media: media.clone(),
                origin,
                awaiting_ack: None,
            },
        );
        tracing::info!(%room, participant, %user, codec = media.codec.kind.encoding_name(), speaker = media.speaker, "joined the conference room");
        if new_room {
            let rtp_timeout = self
                .media
                .as_ref()
                .map_or(std::time::Duration::from_secs(60), |m| m.config.rtp_timeout);
            self.events.push_back(EngineEvent::Room(RoomCommand::Open {
                room: room.to_string(),
                moderated,
                tones,
                rtp_timeout,
            }));
        }
        self.events.push_back(EngineEvent::Room(RoomCommand::Join {
            room: room.to_string(),
            participant,
            pair,
            media,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ranges_parse_and_match_plain_numbers_only() {
        let r: RoomRange = "800-899".parse().unwrap();
        assert_eq!(
            r,
            RoomRange {
                first: 800,
                last: 899
            }
        );
        assert!(r.contains("800") && r.contains("899") && !r.contains("900"));
        assert!(!r.contains("0800") && !r.contains("8a0") && !r.contains(""));
        assert!(!r.contains("99999999999999999999999"));
        let one: RoomRange = " 7 ".parse().unwrap();
        assert_eq!(one, RoomRange { first: 7, last: 7 });
        assert_eq!(
            "899-800".parse::<RoomRange>(),
            Err(RoomRangeError::Reversed("899-800".into()))
        );
        for bad in ["", "-", "8x-9", "1-2-3", "+5"] {
            assert!(bad.parse::<RoomRange>().is_err(), "{bad}");
        }
    }
}
