//! The public call events: what the API's WebSocket stream and the call log see of the
//! engine's events, as plain serialisable data. The engine's own types stay free of
//! serde; this module is the one place that maps them.
//!
//! Events are published on a `tokio::sync::broadcast` channel from the engine task: a slow
//! subscriber loses the oldest events (and is told how many), it never holds the engine up.

use serde::Serialize;
use serde_json::{json, Value};
use switchboard_core::{BindingChange, CallHistory, EngineEvent};

/// One event of the stream, serialised as a JSON object with a `type` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallEvent {
    CallStarted {
        call: u64,
        caller: String,
        callee: String,
        sip_call_id: String,
        /// Unix milliseconds, when the server saw it.
        at_ms: i64,
    },
    CallAnswered {
        call: u64,
        at_ms: i64,
    },
    CallEnded {
        call: u64,
        caller: String,
        callee: String,
        /// `answered`, `no_answer`, `busy`, `rejected`, `failed`, `cancelled`.
        outcome: &'static str,
        /// The final SIP status the caller saw.
        status: u16,
        at_ms: i64,
    },
    /// A step of a live call: transfer, park, retrieval, hold, mute, recording.
    History {
        call: u64,
        kind: &'static str,
        detail: Value,
        at_ms: i64,
    },
    Dtmf {
        call: u64,
        /// `caller` or `callee`: who pressed it.
        party: &'static str,
        digit: String,
        duration_ms: u32,
        /// `rfc4733`, `inband` or `info`.
        source: &'static str,
        at_ms: i64,
    },
    /// A conference room's call-out ended: `joined`, or `status` says why not.
    RoomCallOut {
        room: String,
        participant: u64,
        user: String,
        joined: bool,
        status: u16,
        at_ms: i64,
    },
    /// A device registered (or refreshed) or went away.
    Registration {
        user: String,
        contact: String,
        registered: bool,
        at_ms: i64,
    },
}

/// The stream's view of an engine event, or `None` for what it does not show (media
/// plumbing, malformed messages, authentication failures).
pub fn public_event(event: &EngineEvent, at_ms: i64) -> Option<CallEvent> {
    Some(match event {
        EngineEvent::CallStarted {
            call,
            caller,
            callee,
            sip_call_id,
            ..
        } => CallEvent::CallStarted {
            call: *call,
            caller: caller.clone(),
            callee: callee.clone(),
            sip_call_id: sip_call_id.clone(),
            at_ms,
        },
        EngineEvent::CallAnswered { call } => CallEvent::CallAnswered { call: *call, at_ms },
        EngineEvent::CallEnded {
            call,
            caller,
            callee,
            outcome,
            status,
        } => CallEvent::CallEnded {
            call: *call,
            caller: caller.clone(),
            callee: callee.clone(),
            outcome: outcome.as_str(),
            status: *status,
            at_ms,
        },
        EngineEvent::History { call, event } => {
            let (kind, detail) = history_fields(event);
            CallEvent::History {
                call: *call,
                kind,
                detail,
                at_ms,
            }
        }
        EngineEvent::Dtmf {
            call,
            caller,
            digit,
            duration_ms,
            source,
        } => CallEvent::Dtmf {
            call: *call,
            party: if *caller { "caller" } else { "callee" },
            digit: digit.to_string(),
            duration_ms: *duration_ms,
            source,
            at_ms,
        },
        EngineEvent::RoomCallOut(r) => CallEvent::RoomCallOut {
            room: r.room.clone(),
            participant: r.participant,
            user: r.user.clone(),
            joined: r.joined(),
            status: r.status,
            at_ms,
        },
        EngineEvent::Binding(BindingChange::Upserted(b)) => CallEvent::Registration {
            user: b.aor.clone(),
            contact: b.contact.clone(),
            registered: true,
            at_ms,
        },
        EngineEvent::Binding(BindingChange::Removed { aor, contact }) => CallEvent::Registration {
            user: aor.clone(),
            contact: contact.clone(),
            registered: false,
            at_ms,
        },
        _ => return None,
    })
}

/// A history step as a kind and a JSON object of its fields: the stream's `detail` and
/// the call log's `call_history.detail` are the same object.
pub fn history_fields(h: &CallHistory) -> (&'static str, Value) {
    match h {
        CallHistory::Transferred {
            kind,
            party,
            from,
            to,
            by,
        } => (
            "transferred",
            json!({"transfer": kind.as_str(), "party": party.as_str(), "from": from, "to": to, "by": by}),
        ),
        CallHistory::TransferFailed { party, to, status } => (
            "transfer_failed",
            json!({"party": party.as_str(), "to": to, "status": status}),
        ),
        CallHistory::Parked { party, slot, by } => (
            "parked",
            json!({"party": party.as_str(), "slot": slot, "by": by}),
        ),
        CallHistory::Retrieved { slot, by } => ("retrieved", json!({"slot": slot, "by": by})),
        CallHistory::Held { party } => ("held", json!({"party": party.as_str()})),
        CallHistory::Resumed { party } => ("resumed", json!({"party": party.as_str()})),
        CallHistory::Muted { party, muted } => {
            ("muted", json!({"party": party.as_str(), "muted": muted}))
        }
        CallHistory::RecordingStarted => ("recording_started", json!({})),
        CallHistory::RecordingStopped => ("recording_stopped", json!({})),
        CallHistory::MovedToRoom { party, room } => (
            "moved_to_room",
            json!({"party": party.as_str(), "room": room}),
        ),
        // A step added to the engine later still reaches the log, if only as text.
        other => ("other", json!({"debug": format!("{other:?}")})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{CallOutcome, Party, TransferKind};

    #[test]
    fn events_serialise_with_a_type_tag() {
        let ended = EngineEvent::CallEnded {
            call: 3,
            caller: "alice".into(),
            callee: "bob".into(),
            outcome: CallOutcome::Busy,
            status: 486,
        };
        let text = serde_json::to_string(&public_event(&ended, 1_000).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"{"type":"call_ended","call":3,"caller":"alice","callee":"bob","outcome":"busy","status":486,"at_ms":1000}"#
        );
        let moved = EngineEvent::History {
            call: 3,
            event: CallHistory::Transferred {
                kind: TransferKind::Blind,
                party: Party::Caller,
                from: "bob".into(),
                to: "carol".into(),
                by: Some("bob".into()),
            },
        };
        let v = serde_json::to_value(public_event(&moved, 5).unwrap()).unwrap();
        assert_eq!(v["type"], "history");
        assert_eq!(v["kind"], "transferred");
        assert_eq!(
            v["detail"],
            json!({"transfer": "blind", "party": "caller", "from": "bob", "to": "carol", "by": "bob"})
        );
    }

    #[test]
    fn plumbing_is_not_published() {
        let e = EngineEvent::Malformed {
            source: switchboard_core::target::parse_target("udp:127.0.0.1:5060").unwrap(),
            reason: "x".into(),
            answered: false,
        };
        assert_eq!(public_event(&e, 0), None);
    }
}
