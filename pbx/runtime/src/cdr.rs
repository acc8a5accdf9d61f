//! The call log accumulator: builds each call's record (legs, history, times, outcome)
//! from the engine's events as they are drained, stamping them with the wall clock, and
//! hands the finished record over when `CallEnded` arrives. A store-writer task writes
//! each record in one transaction ([`switchboard_store::Store::write_call_record`]).
//!
//! It never blocks the engine task: the writer's queue is bounded, and a record that does
//! not fit is dropped and counted (`switchboard_call_records_dropped_total`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{CallHistory, EngineEvent, Party};
use switchboard_store::{CallHistoryRecord, CallLegRecord, CallRecord, Store};
use tokio::sync::mpsc;

use crate::events::history_fields;
use crate::Metrics;

/// Finished records waiting for the database.
pub(crate) const CDR_QUEUE: usize = 4096;
/// Attempts at writing one record before it is given up (with a doubling pause between).
const WRITE_ATTEMPTS: u32 = 5;

/// A call being followed.
struct OpenCall {
    engine_call: u64,
    sip_call_id: String,
    direction: &'static str,
    caller: String,
    callee: String,
    started_at_ms: i64,
    answered_at_ms: Option<i64>,
    legs: Vec<CallLegRecord>,
    history: Vec<CallHistoryRecord>,
    /// Who waits in a park slot, so a retrieval joins the other side.
    parked: Option<Party>,
}

impl OpenCall {
    fn open_leg(&mut self, party: Party, name: &str, at_ms: i64) {
        self.legs.push(CallLegRecord {
            party: party.as_str().into(),
            name: name.into(),
            joined_at_ms: at_ms,
            left_at_ms: None,
        });
    }

    /// Closes the newest open leg on `party`'s side.
    fn close_leg(&mut self, party: Party, at_ms: i64) {
        if let Some(leg) = self
            .legs
            .iter_mut()
            .rev()
            .find(|l| l.party == party.as_str() && l.left_at_ms.is_none())
        {
            leg.left_at_ms = Some(at_ms);
        }
    }

    fn apply(&mut self, h: &CallHistory, at_ms: i64) {
        match h {
            CallHistory::Transferred {
                party, from, to, ..
            } => {
                // The side `from` was on (by name: robust to which party the engine
                // names), else `party`'s.
                let side = self
                    .legs
                    .iter()
                    .rev()
                    .find(|l| &l.name == from && l.left_at_ms.is_none())
                    .and_then(|l| Party::parse(&l.party))
                    .unwrap_or(*party);
                self.close_leg(side, at_ms);
                self.open_leg(side, to, at_ms);
            }
            CallHistory::Parked { party, .. } => {
                // The parked party waits; the one who parked is released.
                self.close_leg(party.other(), at_ms);
                self.parked = Some(*party);
            }
            CallHistory::Retrieved { by, .. } => {
                let side = self.parked.take().map_or(Party::Callee, Party::other);
                self.close_leg(side, at_ms);
                self.open_leg(side, by, at_ms);
            }
            _ => {}
        }
        let (kind, detail) = history_fields(h);
        self.history.push(CallHistoryRecord {
            at_ms,
            kind: kind.into(),
            detail: detail.to_string(),
        });
    }
}

/// The records of the calls in progress, by the engine's call number.
#[derive(Default)]
pub(crate) struct CallLog {
    open: HashMap<u64, OpenCall>,
}

impl CallLog {
    pub(crate) fn new() -> CallLog {
        CallLog::default()
    }

    /// Follows one engine event stamped `at_ms` (unix milliseconds); returns the call's
    /// whole record when the event ends it.
    pub(crate) fn handle_event(&mut self, event: &EngineEvent, at_ms: i64) -> Option<CallRecord> {
        match event {
            EngineEvent::CallStarted {
                call,
                caller,
                callee,
                sip_call_id,
                direction,
            } => {
                let mut open = OpenCall {
                    engine_call: *call,
                    sip_call_id: sip_call_id.clone(),
                    direction: direction.as_str(),
                    caller: caller.clone(),
                    callee: callee.clone(),
                    started_at_ms: at_ms,
                    answered_at_ms: None,
                    legs: Vec::new(),
                    history: Vec::new(),
                    parked: None,
                };
                // The callee leg joins when it starts ringing; unanswered, it still shows
                // who was rung and for how long.
                open.open_leg(Party::Caller, caller, at_ms);
                open.open_leg(Party::Callee, callee, at_ms);
                self.open.insert(*call, open);
                None
            }
            EngineEvent::CallAnswered { call } => {
                if let Some(c) = self.open.get_mut(call) {
                    c.answered_at_ms.get_or_insert(at_ms);
                }
                None
            }
            EngineEvent::History { call, event } => {
                if let Some(c) = self.open.get_mut(call) {
                    c.apply(event, at_ms);
                }
                None
            }
            // An originated call starts before its first leg has a Call-ID; a recording
            // names the leg's Call-ID it is stored against.
            EngineEvent::Media(switchboard_core::media::MediaCommand::StartRecording {
                call,
                call_id,
                ..
            }) => {
                if let Some(c) = self.open.get_mut(call) {
                    if c.sip_call_id.is_empty() {
                        c.sip_call_id = call_id.clone();
                    }
                }
                None
            }
            EngineEvent::CallEnded {
                call,
                caller,
                callee,
                outcome,
                status,
            } => {
                let mut c = self.open.remove(call).unwrap_or_else(|| {
                    // Not seen starting (cannot happen with the engine's order, but a call
                    // must never go unlogged): a record with what the end tells.
                    tracing::warn!(call, "call ended without a start event; logging it anyway");
                    let mut c = OpenCall {
                        engine_call: *call,
                        sip_call_id: String::new(),
                        direction: "internal",
                        caller: caller.clone(),
                        callee: callee.clone(),
                        started_at_ms: at_ms,
                        answered_at_ms: None,
                        legs: Vec::new(),
                        history: Vec::new(),
                        parked: None,
                    };
                    c.open_leg(Party::Caller, caller, at_ms);
                    c.open_leg(Party::Callee, callee, at_ms);
                    c
                });
                for leg in &mut c.legs {
                    leg.left_at_ms.get_or_insert(at_ms);
                }
                let duration_seconds = c.answered_at_ms.map_or(0, |a| (at_ms - a).max(0) / 1000);
                Some(CallRecord {
                    id: record_id(at_ms, c.engine_call),
                    engine_call: i64::try_from(c.engine_call).unwrap_or(i64::MAX),
                    sip_call_id: c.sip_call_id,
                    direction: c.direction.into(),
                    caller: c.caller,
                    callee: c.callee,
                    started_at_ms: c.started_at_ms,
                    answered_at_ms: c.answered_at_ms,
                    ended_at_ms: at_ms,
                    outcome: outcome.as_str().into(),
                    final_status: i64::from(*status),
                    duration_seconds,
                    recording_path: None,
                    legs: c.legs,
                    history: c.history,
                })
            }
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn open_calls(&self) -> usize {
        self.open.len()
    }
}

/// Unique across restarts (the engine's numbers start again at 1): the end time, the
/// number and 64 random bits.
fn record_id(at_ms: i64, call: u64) -> String {
    format!("{at_ms:x}-{call}-{:016x}", rand::random::<u64>())
}

/// Writes finished records, each in one transaction. A failed write is retried a few
/// times with a doubling pause (records behind it wait in the bounded queue); failures are
/// counted each time and logged once per outage.
pub(crate) async fn cdr_writer(
    store: Store,
    mut rx: mpsc::Receiver<CallRecord>,
    metrics: Arc<Metrics>,
) {
    let mut failing = false;
    while let Some(record) = rx.recv().await {
        let mut pause = Duration::from_millis(500);
        for attempt in 1..=WRITE_ATTEMPTS {
            match store.write_call_record(&record).await {
                Ok(_) => {
                    metrics.count_call_record_written();
                    if failing {
                        failing = false;
                        tracing::info!("the call log is written again");
                    }
                    break;
                }
                Err(e) => {
                    metrics.count_call_record_error();
                    if !failing {
                        failing = true;
                        tracing::error!(error = %e, call = record.engine_call, "writing the call log fails; retrying (switchboard_call_record_errors_total counts the failures)");
                    }
                    if attempt == WRITE_ATTEMPTS {
                        metrics.count_call_record_dropped();
                        tracing::warn!(call = record.engine_call, sip_call_id = %record.sip_call_id, outcome = %record.outcome, "a call record was given up after {WRITE_ATTEMPTS} failed writes");
                    } else {
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_core::{CallOutcome, TransferKind};

    fn started(call: u64) -> EngineEvent {
        EngineEvent::CallStarted {
            call,
            caller: "alice".into(),
            callee: "bob".into(),
            sip_call_id: format!("sip-{call}"),
            direction: switchboard_core::CallDirection::Internal,
        }
    }

    fn ended(call: u64, outcome: CallOutcome, status: u16) -> EngineEvent {
        EngineEvent::CallEnded {
            call,
            caller: "alice".into(),
            callee: "bob".into(),
            outcome,
            status,
        }
    }

    #[test]
    fn an_answered_call_with_a_transfer_and_a_park() {
        let mut log = CallLog::new();
        assert!(log.handle_event(&started(1), 1_000).is_none());
        log.handle_event(&EngineEvent::CallAnswered { call: 1 }, 3_000);
        log.handle_event(
            &EngineEvent::History {
                call: 1,
                event: CallHistory::Transferred {
                    kind: TransferKind::Blind,
                    party: Party::Callee,
                    from: "bob".into(),
                    to: "carol".into(),
                    by: Some("bob".into()),
                },
            },
            10_000,
        );
        // carol (now on the callee side) parks alice; dave retrieves her.
        log.handle_event(
            &EngineEvent::History {
                call: 1,
                event: CallHistory::Parked {
                    party: Party::Caller,
                    slot: "701".into(),
                    by: Some("carol".into()),
                },
            },
            20_000,
        );
        log.handle_event(
            &EngineEvent::History {
                call: 1,
                event: CallHistory::Retrieved {
                    slot: "701".into(),
                    by: "dave".into(),
                },
            },
            25_000,
        );
        assert_eq!(log.open_calls(), 1);
        let r = log
            .handle_event(&ended(1, CallOutcome::Answered, 200), 65_500)
            .expect("the record");
        assert_eq!(log.open_calls(), 0);
        assert_eq!(
            (r.caller.as_str(), r.callee.as_str(), r.direction.as_str()),
            ("alice", "bob", "internal")
        );
        assert_eq!(r.sip_call_id, "sip-1");
        assert_eq!(
            (r.started_at_ms, r.answered_at_ms, r.ended_at_ms),
            (1_000, Some(3_000), 65_500)
        );
        assert_eq!((r.outcome.as_str(), r.final_status), ("answered", 200));
        assert_eq!(r.duration_seconds, 62);
        let legs: Vec<(&str, &str, i64, Option<i64>)> = r
            .legs
            .iter()
            .map(|l| {
                (
                    l.party.as_str(),
                    l.name.as_str(),
                    l.joined_at_ms,
                    l.left_at_ms,
                )
            })
            .collect();
        // bob's side is carol's after the transfer; carol leaves when she parks alice;
        // dave joins that side when he retrieves her.
        assert_eq!(
            legs,
            [
                ("caller", "alice", 1_000, Some(65_500)),
                ("callee", "bob", 1_000, Some(10_000)),
                ("callee", "carol", 10_000, Some(20_000)),
                ("callee", "dave", 25_000, Some(65_500)),
            ]
        );
        let kinds: Vec<&str> = r.history.iter().map(|h| h.kind.as_str()).collect();
        assert_eq!(kinds, ["transferred", "parked", "retrieved"]);
        let detail: serde_json::Value = serde_json::from_str(&r.history[0].detail).unwrap();
        assert_eq!(detail["to"], "carol");
    }

    #[test]
    fn unanswered_calls_have_no_duration_and_keep_their_outcome() {
        let mut log = CallLog::new();
        for (call, outcome, status) in [
            (2, CallOutcome::Busy, 486),
            (3, CallOutcome::Cancelled, 487),
            (4, CallOutcome::NoAnswer, 408),
        ] {
            log.handle_event(&started(call), 1_000);
            let r = log
                .handle_event(&ended(call, outcome, status), 9_000)
                .unwrap();
            assert_eq!(r.answered_at_ms, None);
            assert_eq!(r.duration_seconds, 0);
            assert_eq!(r.outcome, outcome.as_str());
            assert_eq!(r.final_status, i64::from(status));
            assert!(r.legs.iter().all(|l| l.left_at_ms == Some(9_000)));
        }
    }

    #[test]
    fn an_end_without_a_start_is_still_logged_and_ids_are_unique() {
        let mut log = CallLog::new();
        let a = log
            .handle_event(&ended(5, CallOutcome::Failed, 500), 2_000)
            .unwrap();
        assert_eq!((a.started_at_ms, a.ended_at_ms), (2_000, 2_000));
        let b = log
            .handle_event(&ended(5, CallOutcome::Failed, 500), 2_000)
            .unwrap();
        assert_ne!(a.id, b.id);
    }
}
