//! Conference rooms on the engine side: which numbers are rooms, the SIP dialogs of their
//! participants (Switchboard is the UAS: it answers a room number itself), and the
//! [`RoomCommand`]s that tell the runtime's room tasks who is in which room with what
//! codec. The mixing itself is `switchboard_media::mixer`, run by the runtime.
//!
//! Hooks in the engine (kept to one line each in `call.rs`/`engine.rs`): an INVITE whose
//! dialled number is a room ([`Engine::conference_invite`]), in-dialog requests and ACKs
//! of a participant's dialog, the ACK timeout of our 2xx, shutdown, and the room commands.
//! A participant's dialog never reaches the call tables, and a call never reaches ours.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use switchboard_media::codec::CodecSpec;
use switchboard_media::sdp::negotiate::{answer, AnswerParams, Capabilities};
use switchboard_media::sdp::SessionDescription;
use switchboard_sip::header::NameAddr;
use switchboard_sip::transaction::{ServerTxId, Target};
use switchboard_sip::{HeaderName, Method, Request, Response};

use crate::command::{CommandError, CommandReply, ParticipantInfo, RoomInfo};
use crate::dialog::{without_tag, Dialog};
use crate::engine::{Engine, EngineEvent, ALLOW};
use crate::ports::PortPair;

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
}

impl ConferenceState {
    pub(crate) fn new(config: ConferenceConfig) -> ConferenceState {
        ConferenceState {
            config,
            rooms: BTreeMap::new(),
            participants: HashMap::new(),
            dialogs: HashMap::new(),
            ack_waiters: HashMap::new(),
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
        resp.headers
            .push(HeaderName::Contact, self.config.local.contact(source));
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
        let reply = |engine: &mut Engine, status: u16| {
            let resp = Response::for_request(
                req,
                status,
                switchboard_sip::message::reason_phrase(status),
                None,
            );
            engine.respond(id, resp, now);
        };
        match req.method {
            Method::Bye => {
                reply(self, 200);
                self.remove_participant(participant);
            }
            Method::Invite | Method::Update => self.conference_reoffer(id, req, participant, now),
            // Key presses mean nothing in a room yet; keep-alive OPTIONS are answered.
            Method::Info | Method::Options => reply(self, 200),
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
            .push(HeaderName::Contact, local.contact(target));
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

    /// Shutdown: every participant gets BYE.
    pub(crate) fn conference_shutdown(&mut self, now: Instant) {
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
        self.room_participant(&room, participant)?;
        self.hang_up_participant(participant, now);
        Ok(CommandReply::Accepted)
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
