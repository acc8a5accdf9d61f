//! Server transactions (RFC 3261 §17.2): the INVITE machine of §17.2.1 with the Accepted
//! state of RFC 6026 §7.1, and the non-INVITE machine of §17.2.2. A machine absorbs
//! retransmitted requests (resending the last response), retransmits a non-2xx final
//! response to an INVITE until the ACK, and sends 100 Trying when the TU is slow.

use std::sync::Arc;
use std::time::Duration;

use crate::message::{reason_phrase, Method, Request, Response};

use super::timer::{Owner, TimerKind, TimerTable};
use super::{Ctx, ServerTxId, Target, TransactionError, TxEvent};

/// How long the INVITE server transaction waits for the TU before it answers 100 Trying
/// itself (§17.2.1: "if the TU will not generate a provisional response within 200 ms").
pub(super) const TRYING_DELAY: Duration = Duration::from_millis(200);

/// How a request is matched to a server transaction (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ServerKey {
    /// A branch with the `z9hG4bK` magic cookie: branch, sent-by and method, ACK and
    /// CANCEL looked up under INVITE.
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: Method,
    },
    /// RFC 2543 peers (no magic cookie): Request-URI, To tag, From tag, Call-ID, CSeq
    /// number and top Via. ACK and CANCEL are looked up under INVITE; an ACK to an
    /// initial INVITE carries the To tag of our response, which the INVITE did not, so it
    /// is looked up without a To tag and checked against the tag we answered with.
    Rfc2543 {
        uri: String,
        to_tag: Option<String>,
        from_tag: Option<String>,
        call_id: String,
        cseq: u32,
        via: String,
        method: Method,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerState {
    /// Non-INVITE only: nothing sent yet.
    Trying,
    Proceeding,
    Completed,
    /// INVITE only: the ACK for our non-2xx final arrived.
    Confirmed,
    /// INVITE only (RFC 6026): a 2xx was sent; retransmitted INVITEs are absorbed.
    Accepted,
    Terminated,
}

/// Server timers: 100 Trying; G retransmits; H gives up waiting for the ACK; I (INVITE)
/// or J (non-INVITE) linger; L (RFC 6026) ends Accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerTimer {
    Trying,
    Retransmit,
    Timeout,
    Linger,
    Accepted,
}

impl TimerKind for ServerTimer {
    fn index(self) -> u8 {
        self as u8
    }
    fn from_index(index: u8) -> ServerTimer {
        [
            ServerTimer::Trying,
            ServerTimer::Retransmit,
            ServerTimer::Timeout,
            ServerTimer::Linger,
            ServerTimer::Accepted,
        ][index as usize]
    }
}

/// What an ACK matching a server transaction means for the TU.
pub(super) enum AckOutcome {
    Absorbed,
    /// RFC 6026: an ACK matching an Accepted transaction acknowledges the 2xx.
    ForTu,
}

#[derive(Debug)]
pub(super) struct ServerTransaction {
    pub(super) id: ServerTxId,
    pub(super) key: ServerKey,
    pub(super) source: Target,
    pub(super) state: ServerState,
    invite: bool,
    /// INVITE only: kept to build 100 Trying from.
    request: Option<Request>,
    /// The last response sent, printed once, resent for retransmitted requests.
    last: Option<Arc<[u8]>>,
    /// The To tag of our final response (RFC 2543 ACK matching).
    pub(super) response_to_tag: Option<String>,
    /// This transaction's entry in the layer's `rejected_index`, removed with it.
    pub(super) rejected_key: Option<(String, u32, String)>,
    interval: Duration,
    timers: TimerTable<ServerTimer, 5>,
}

impl ServerTransaction {
    pub(super) fn start(
        id: ServerTxId,
        key: ServerKey,
        request: &Request,
        source: Target,
        ctx: &mut Ctx<'_>,
    ) -> ServerTransaction {
        let invite = request.method == Method::Invite;
        let mut tx = ServerTransaction {
            id,
            key,
            source,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            invite,
            request: invite.then(|| request.clone()),
            last: None,
            response_to_tag: None,
            rejected_key: None,
            interval: ctx.timers.t1,
            timers: TimerTable::new(Owner::Server(id.0)),
        };
        if invite {
            tx.timers
                .set(ctx.schedule, ServerTimer::Trying, ctx.now + TRYING_DELAY);
        }
        tx
    }

    pub(super) fn is_invite(&self) -> bool {
        self.invite
    }

    /// True until a final response has been sent: a CANCEL can still stop the INVITE.
    pub(super) fn awaits_final(&self) -> bool {
        matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    pub(super) fn timers_mut(&mut self) -> &mut TimerTable<ServerTimer, 5> {
        &mut self.timers
    }

    /// A retransmission of the request: resend the last response, if any (§17.2.1,
    /// §17.2.2). Confirmed and Accepted absorb silently (2xx retransmission is the
    /// 2xx retransmitter's job, RFC 6026 §7.1).
    pub(super) fn on_retransmission(&mut self, ctx: &mut Ctx<'_>) {
        if matches!(self.state, ServerState::Confirmed | ServerState::Accepted) {
            return;
        }
        if let Some(last) = &self.last {
            ctx.transmit(self.source, last.clone());
        }
    }

    pub(super) fn on_ack(&mut self, ctx: &mut Ctx<'_>) -> AckOutcome {
        match self.state {
            ServerState::Completed => {
                // §17.2.1: Confirmed; Timer I absorbs ACK retransmissions.
                self.state = ServerState::Confirmed;
                self.timers.stop_all(ctx.schedule);
                let linger = ctx.timers.timer_i(self.source.transport);
                self.linger(linger, ctx);
                AckOutcome::Absorbed
            }
            ServerState::Accepted => AckOutcome::ForTu,
            _ => AckOutcome::Absorbed,
        }
    }

    /// Sends a response from the TU; returns the bytes sent.
    pub(super) fn respond(
        &mut self,
        response: &Response,
        ctx: &mut Ctx<'_>,
    ) -> Result<Arc<[u8]>, TransactionError> {
        let status = response.status;
        match self.state {
            ServerState::Trying | ServerState::Proceeding => {}
            ServerState::Accepted if (200..300).contains(&status) => {}
            ServerState::Terminated => return Err(TransactionError::UnknownTransaction),
            _ => return Err(TransactionError::FinalAlreadySent { status }),
        }
        let bytes: Arc<[u8]> = response.to_bytes().into();
        ctx.transmit(self.source, bytes.clone());
        self.timers.stop(ctx.schedule, ServerTimer::Trying);
        if response.is_provisional() {
            self.state = ServerState::Proceeding;
            self.last = Some(bytes.clone());
            return Ok(bytes);
        }
        self.response_to_tag = response
            .to()
            .ok()
            .and_then(|to| to.tag().map(str::to_string));
        if self.invite && response.is_success() {
            // RFC 6026 §7.1: Accepted for Timer L. The 2xx itself is retransmitted by
            // the layer's 2xx retransmitter (§13.3.1.4), not by this machine.
            self.state = ServerState::Accepted;
            self.last = None;
            self.timers.stop_all(ctx.schedule);
            self.timers.set(
                ctx.schedule,
                ServerTimer::Accepted,
                ctx.now + ctx.timers.t1 * 64,
            );
        } else if self.invite {
            self.state = ServerState::Completed;
            self.last = Some(bytes.clone());
            self.interval = ctx.timers.t1;
            if !self.source.transport.is_reliable() {
                self.timers.set(
                    ctx.schedule,
                    ServerTimer::Retransmit,
                    ctx.now + ctx.timers.t1,
                );
            }
            self.timers.set(
                ctx.schedule,
                ServerTimer::Timeout,
                ctx.now + ctx.timers.t1 * 64,
            );
        } else {
            self.state = ServerState::Completed;
            self.last = Some(bytes.clone());
            let linger = ctx.timers.timer_j(self.source.transport);
            self.linger(linger, ctx);
        }
        Ok(bytes)
    }

    pub(super) fn on_timer(&mut self, timer: ServerTimer, ctx: &mut Ctx<'_>) {
        match timer {
            ServerTimer::Trying => {
                if self.state == ServerState::Proceeding && self.last.is_none() {
                    if let Some(request) = &self.request {
                        let trying = Response::for_request(request, 100, reason_phrase(100), None);
                        let bytes: Arc<[u8]> = trying.to_bytes().into();
                        ctx.transmit(self.source, bytes.clone());
                        self.last = Some(bytes);
                    }
                }
            }
            ServerTimer::Retransmit => {
                if self.state == ServerState::Completed {
                    if let Some(last) = &self.last {
                        ctx.transmit(self.source, last.clone());
                    }
                    // Timer G doubles up to T2 (§17.2.1).
                    self.interval = (self.interval * 2).min(ctx.timers.t2);
                    self.timers.set(
                        ctx.schedule,
                        ServerTimer::Retransmit,
                        ctx.now + self.interval,
                    );
                }
            }
            ServerTimer::Timeout => {
                if self.state == ServerState::Completed {
                    ctx.out
                        .events
                        .push_back(TxEvent::ServerTimeout { id: self.id });
                    self.terminate(ctx);
                }
            }
            ServerTimer::Linger | ServerTimer::Accepted => self.terminate(ctx),
        }
    }

    fn linger(&mut self, linger: Duration, ctx: &mut Ctx<'_>) {
        if linger.is_zero() {
            self.terminate(ctx);
        } else {
            self.timers
                .set(ctx.schedule, ServerTimer::Linger, ctx.now + linger);
        }
    }

    pub(super) fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        self.state = ServerState::Terminated;
        self.timers.stop_all(ctx.schedule);
    }
}
