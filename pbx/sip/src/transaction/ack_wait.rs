//! A 2xx to an INVITE waiting for its ACK (RFC 3261 §13.3.1.4). The INVITE server
//! transaction does not retransmit a 2xx; the UAS core must, at T1, 2*T1, … capped at T2,
//! until the ACK arrives, and give up after 64*T1 (the TU then sends BYE). This lives in
//! the layer so that every TU gets it right, keyed by Call-ID and CSeq number because that
//! is what an ACK for a 2xx shares with its INVITE (it has a branch of its own).
//!
//! The 2xx is retransmitted on reliable transports too: §13.3.1.4 says this "is
//! independent of whatever transport protocols are used", because a hop between a proxy
//! and the UAC may be UDP and nothing else retransmits a 2xx end to end.

use std::sync::Arc;
use std::time::Duration;

use super::timer::{Owner, Schedule, TimerKind, TimerTable};
use super::{Ctx, ServerTxId, Target, TxEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckWaitTimer {
    Retransmit,
    GiveUp,
}

impl TimerKind for AckWaitTimer {
    fn index(self) -> u8 {
        self as u8
    }
    fn from_index(index: u8) -> AckWaitTimer {
        [AckWaitTimer::Retransmit, AckWaitTimer::GiveUp][index as usize]
    }
}

#[derive(Debug)]
pub(super) struct AckWait {
    pub(super) id: ServerTxId,
    /// Call-ID and CSeq number of the INVITE.
    pub(super) key: (String, u32),
    target: Target,
    bytes: Arc<[u8]>,
    interval: Duration,
    pub(super) done: bool,
    timers: TimerTable<AckWaitTimer, 2>,
}

impl AckWait {
    /// Starts waiting; the caller has just sent `bytes` once.
    pub(super) fn start(
        id: ServerTxId,
        key: (String, u32),
        target: Target,
        bytes: Arc<[u8]>,
        ctx: &mut Ctx<'_>,
    ) -> AckWait {
        let mut wait = AckWait {
            id,
            key,
            target,
            bytes,
            interval: ctx.timers.t1,
            done: false,
            timers: TimerTable::new(Owner::AckWait(id.0)),
        };
        wait.timers.set(
            ctx.schedule,
            AckWaitTimer::Retransmit,
            ctx.now + ctx.timers.t1,
        );
        wait.timers.set(
            ctx.schedule,
            AckWaitTimer::GiveUp,
            ctx.now + ctx.timers.t1 * 64,
        );
        wait
    }

    pub(super) fn timers_mut(&mut self) -> &mut TimerTable<AckWaitTimer, 2> {
        &mut self.timers
    }

    pub(super) fn on_timer(&mut self, timer: AckWaitTimer, ctx: &mut Ctx<'_>) {
        match timer {
            AckWaitTimer::Retransmit => {
                ctx.transmit(self.target, self.bytes.clone());
                self.interval = (self.interval * 2).min(ctx.timers.t2);
                self.timers.set(
                    ctx.schedule,
                    AckWaitTimer::Retransmit,
                    ctx.now + self.interval,
                );
            }
            AckWaitTimer::GiveUp => {
                ctx.out
                    .events
                    .push_back(TxEvent::AckTimeout { id: self.id });
                self.stop(ctx.schedule);
            }
        }
    }

    pub(super) fn stop(&mut self, schedule: &mut Schedule) {
        self.done = true;
        self.timers.stop_all(schedule);
    }
}
