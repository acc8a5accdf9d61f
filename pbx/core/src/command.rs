//! Call control from outside SIP: what the HTTP API (and later the panel and the
//! contact-center router) asks the engine to do. Commands are inputs like datagrams: the
//! runtime feeds one with [`Engine::handle_command`], gets the reply at once, then drains
//! transmits and events as after any other input. A command never blocks on the network:
//! "transfer started" is the reply, and how it went arrives later as [`crate::EngineEvent`]s.
//!
//! A command naming a call, slot, room or user that does not exist is a
//! [`CommandError`], never a panic; the API maps each error to an HTTP status.

use std::time::Instant;

use crate::engine::Engine;

/// One side of a two-party call. The caller side is the party that placed the call (or,
/// for a call Switchboard originated, the device rung first); the names stay with the
/// side when a transfer puts someone else there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Caller,
    Callee,
}

impl Party {
    pub fn other(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Callee => "callee",
        }
    }

    pub fn parse(s: &str) -> Option<Party> {
        match s {
            "caller" => Some(Party::Caller),
            "callee" => Some(Party::Callee),
            _ => None,
        }
    }
}

/// What can be asked of the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Every live call.
    ListCalls,
    /// End a call (both parties).
    Hangup {
        call: u64,
    },
    /// `party` hears music on hold and is not heard; the other party hears silence.
    Hold {
        call: u64,
        party: Party,
    },
    Resume {
        call: u64,
        party: Party,
    },
    /// `party`'s audio stops reaching the other side (no re-INVITE: the server drops it).
    Mute {
        call: u64,
        party: Party,
        muted: bool,
    },
    /// Connect `party` to `target` (dialled as if by the other party, who is released
    /// once the target answers; if the target fails, the call stays as it was).
    BlindTransfer {
        call: u64,
        party: Party,
        target: String,
    },
    /// Connect `party` of `call` with `consult_party` of `consult`; the two other parties
    /// (normally the same agent's two legs) are released.
    AttendedTransfer {
        call: u64,
        party: Party,
        consult: u64,
        consult_party: Party,
    },
    /// Park `party` in `slot` (or the first free slot); the other party is released.
    Park {
        call: u64,
        party: Party,
        slot: Option<String>,
    },
    /// Ring `user`'s devices (with auto-answer) and connect them to the call parked in
    /// `slot`.
    Retrieve {
        slot: String,
        user: String,
    },
    ListParked,
    /// Ring `user`'s devices (with auto-answer when asked), and when one answers, dial
    /// `target` as if the user had dialled it (click-to-dial).
    Originate {
        user: String,
        target: String,
        auto_answer: bool,
    },
    StartRecording {
        call: u64,
    },
    StopRecording {
        call: u64,
    },
    /// Conference rooms with their participants.
    ListRooms,
    /// Call `target` (a user) out from `room` and join them when they answer; with
    /// `auto_answer`, their devices are asked to answer by themselves.
    RoomAdd {
        room: String,
        target: String,
        auto_answer: bool,
    },
    RoomMute {
        room: String,
        participant: u64,
        muted: bool,
    },
    RoomKick {
        room: String,
        participant: u64,
    },
    /// Move both parties of a live call into `room` (created if needed): an ad hoc
    /// conference from an active call.
    RoomFromCall {
        call: u64,
        room: Option<String>,
    },
}

/// A successful command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandReply {
    /// Done, or started (its progress arrives as events).
    Accepted,
    Calls(Vec<CallInfo>),
    Parked(Vec<ParkedInfo>),
    /// The call Switchboard placed (originate) or the slot a call went to (park).
    Call {
        call: u64,
    },
    Slot {
        slot: String,
    },
    Rooms(Vec<RoomInfo>),
    /// The room a call was moved into, or the participant a call-out will become.
    Room {
        room: String,
        participant: Option<u64>,
    },
}

/// A live call as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub call: u64,
    pub caller: String,
    pub callee: String,
    /// "ringing", "answered", "parked", "transferring".
    pub state: &'static str,
    pub started_unix: u64,
    pub answered_unix: Option<u64>,
    pub held: Vec<Party>,
    pub muted: Vec<Party>,
    pub recording: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedInfo {
    pub slot: String,
    pub call: u64,
    /// Who waits in the slot.
    pub parked: String,
    /// Who parked them (rung back at the timeout).
    pub parker: Option<String>,
    pub since_unix: u64,
    pub timeout_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub room: String,
    pub participants: Vec<ParticipantInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub participant: u64,
    pub user: String,
    pub muted: bool,
    pub speaker: bool,
}

/// Why a command was refused. Each maps to one HTTP status (in brackets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// [404] The call is not (or no longer) live.
    #[error("no such call: {0}")]
    NoSuchCall(u64),
    /// [404]
    #[error("no call parked in slot {0}")]
    NoSuchSlot(String),
    /// [404]
    #[error("no such user: {0}")]
    NoSuchUser(String),
    /// [404]
    #[error("no such conference room: {0}")]
    NoSuchRoom(String),
    /// [404]
    #[error("no such participant: {0}")]
    NoSuchParticipant(u64),
    /// [409] The user has no registered device to ring.
    #[error("{0} has no registered device")]
    NotRegistered(String),
    /// [409] The call exists but is not in a state that allows this (ringing, already
    /// transferring, slot taken, …).
    #[error("{0}")]
    Conflict(String),
    /// [400]
    #[error("{0}")]
    BadRequest(String),
    /// [503] Shutting down, or out of media ports.
    #[error("{0}")]
    Unavailable(String),
    /// [501] Not built yet.
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

impl CommandError {
    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            CommandError::NoSuchCall(_)
            | CommandError::NoSuchSlot(_)
            | CommandError::NoSuchUser(_)
            | CommandError::NoSuchRoom(_)
            | CommandError::NoSuchParticipant(_) => 404,
            CommandError::NotRegistered(_) | CommandError::Conflict(_) => 409,
            CommandError::BadRequest(_) => 400,
            CommandError::Unavailable(_) => 503,
            CommandError::NotImplemented(_) => 501,
        }
    }
}

impl Engine {
    /// Carries out one command (see the module's drive contract).
    pub fn handle_command(
        &mut self,
        command: Command,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        let reply = self.dispatch_command(command, now);
        self.drain_after_command(now);
        reply
    }

    fn dispatch_command(
        &mut self,
        command: Command,
        now: Instant,
    ) -> Result<CommandReply, CommandError> {
        if self.shutting_down
            && !matches!(
                command,
                Command::ListCalls | Command::ListParked | Command::ListRooms
            )
        {
            return Err(CommandError::Unavailable("shutting down".into()));
        }
        match command {
            Command::ListCalls => Ok(CommandReply::Calls(self.list_calls(now))),
            Command::Hangup { call } => self.command_hangup(call, now),
            Command::Mute { call, party, muted } => self.command_mute(call, party, muted),
            Command::StartRecording { call } => self.command_record(call, true),
            Command::StopRecording { call } => self.command_record(call, false),
            Command::Hold { call, party } => self.command_hold(call, party, true),
            Command::Resume { call, party } => self.command_hold(call, party, false),
            Command::BlindTransfer {
                call,
                party,
                target,
            } => self.command_blind_transfer(call, party, &target, now),
            Command::AttendedTransfer {
                call,
                party,
                consult,
                consult_party,
            } => self.command_attended_transfer(call, party, consult, consult_party, now),
            Command::Park { call, party, slot } => self.command_park(call, party, slot, now),
            Command::Retrieve { slot, user } => self.command_retrieve(&slot, &user, now),
            Command::ListParked => Ok(CommandReply::Parked(self.list_parked())),
            Command::Originate {
                user,
                target,
                auto_answer,
            } => self.command_originate(&user, &target, auto_answer, now),
            Command::ListRooms => self.command_list_rooms(),
            Command::RoomMute {
                room,
                participant,
                muted,
            } => self.command_room_mute(room, participant, muted),
            Command::RoomKick { room, participant } => {
                self.command_room_kick(room, participant, now)
            }
            Command::RoomAdd {
                room,
                target,
                auto_answer,
            } => self.command_room_add(room, &target, auto_answer, now),
            Command::RoomFromCall { call, room } => self.command_room_from_call(call, room, now),
        }
    }
}
