//! Client transactions (RFC 3261 §17.1): the INVITE machine of §17.1.1 with the Accepted
//! state of RFC 6026 §7.2, and the non-INVITE machine of §17.1.2. One machine instance is
//! one request; it sends and retransmits that request, absorbs what the TU must not see,
//! builds the ACK for a non-2xx final response, and reports everything else as events.

use std::sync::Arc;
use std::time::Duration;

use crate::message::{HeaderName, Method, Request, Response};

use super::timer::{Owner, TimerKind, TimerTable};
use super::{ClientTxId, Ctx, Target, TxEvent};

/// How a response is matched to a client transaction (§17.1.3): the branch of the top
/// Via and the CSeq method (which tells a CANCEL from the INVITE it cancels).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ClientKey {
    pub(super) branch: String,
    pub(super) method: Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientState {
    /// INVITE: Calling; non-INVITE: Trying.
    Calling,
    Proceeding,
    Completed,
    /// RFC 6026: a 2xx was received; later 2xx (retransmissions, forks) still go to the TU.
    Accepted,
    Terminated,
}

/// The client timers. One enum serves both machines because their timers pair up:
/// A/E retransmit, B/F time out, D/K linger in Completed, M (RFC 6026) ends Accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientTimer {
    Retransmit,
    Timeout,
    Linger,
    Accepted,
}

impl TimerKind for ClientTimer {
    fn index(self) -> u8 {
        self as u8
    }
    fn from_index(index: u8) -> ClientTimer {
        [
            ClientTimer::Retransmit,
            ClientTimer::Timeout,
            ClientTimer::Linger,
            ClientTimer::Accepted,
        ][index as usize]
    }
}

/// A CANCEL asked for by the TU (§9.1). It may only be sent once a provisional response
/// has arrived, so until then its id is reserved and the request is not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CancelState {
    None,
    Deferred(ClientTxId),
    Sent(ClientTxId),
}

#[derive(Debug)]
pub(super) struct ClientTransaction {
    pub(super) id: ClientTxId,
    pub(super) key: ClientKey,
    pub(super) target: Target,
    pub(super) state: ClientState,
    pub(super) cancel: CancelState,
    invite: bool,
    cseq: u32,
    /// Kept to build the ACK and the CANCEL from.
    request: Request,
    /// The request as printed once; retransmissions resend these bytes.
    bytes: Arc<[u8]>,
    interval: Duration,
    /// The ACK sent for a non-2xx final response, resent for each retransmission of it.
    ack: Option<Arc<[u8]>>,
    timers: TimerTable<ClientTimer, 4>,
}

impl ClientTransaction {
    /// Sends the request and arms the first timers.
    pub(super) fn start(
        id: ClientTxId,
        key: ClientKey,
        cseq: u32,
        request: Request,
        target: Target,
        ctx: &mut Ctx<'_>,
    ) -> ClientTransaction {
        let bytes: Arc<[u8]> = request.to_bytes().into();
        ctx.transmit(target, bytes.clone());
        let mut tx = ClientTransaction {
            id,
            key,
            target,
            state: ClientState::Calling,
            cancel: CancelState::None,
            invite: request.method == Method::Invite,
            cseq,
            request,
            bytes,
            interval: ctx.timers.t1,
            ack: None,
            timers: TimerTable::new(Owner::Client(id.0)),
        };
        // Timers A and E only exist on unreliable transports (§17.1.1.2, §17.1.2.2).
        if !target.transport.is_reliable() {
            tx.timers.set(
                ctx.schedule,
                ClientTimer::Retransmit,
                ctx.now + ctx.timers.t1,
            );
        }
        tx.timers.set(
            ctx.schedule,
            ClientTimer::Timeout,
            ctx.now + ctx.timers.t1 * 64,
        );
        tx
    }

    pub(super) fn is_invite(&self) -> bool {
        self.invite
    }

    pub(super) fn request(&self) -> &Request {
        &self.request
    }

    pub(super) fn cseq(&self) -> u32 {
        self.cseq
    }

    pub(super) fn timers_mut(&mut self) -> &mut TimerTable<ClientTimer, 4> {
        &mut self.timers
    }

    pub(super) fn on_response(&mut self, response: Response, ctx: &mut Ctx<'_>) {
        if self.invite {
            self.invite_response(response, ctx)
        } else {
            self.non_invite_response(response, ctx)
        }
    }

    fn invite_response(&mut self, response: Response, ctx: &mut Ctx<'_>) {
        use ClientState::*;
        match (self.state, response.status) {
            (Calling | Proceeding, 100..=199) => {
                // Proceeding: no more retransmissions, and no Timer B either (§17.1.1.2);
                // how long to ring is the TU's decision (it CANCELs).
                self.state = Proceeding;
                self.timers.stop(ctx.schedule, ClientTimer::Retransmit);
                self.timers.stop(ctx.schedule, ClientTimer::Timeout);
                self.report(response, ctx);
            }
            (Calling | Proceeding, 200..=299) => {
                // RFC 6026 §7.2: Accepted for Timer M so that retransmitted and forked 2xx
                // still reach the TU, which ACKs them itself (§13.2.2.4).
                self.state = Accepted;
                self.timers.stop_all(ctx.schedule);
                self.timers.set(
                    ctx.schedule,
                    ClientTimer::Accepted,
                    ctx.now + ctx.timers.t1 * 64,
                );
                self.report(response, ctx);
            }
            (Calling | Proceeding, _) => {
                let ack: Arc<[u8]> = build_ack(&self.request, &response, self.cseq)
                    .to_bytes()
                    .into();
                ctx.transmit(self.target, ack.clone());
                self.ack = Some(ack);
                self.state = Completed;
                self.timers.stop_all(ctx.schedule);
                self.report(response, ctx);
                let linger = ctx.timers.timer_d(self.target.transport);
                self.linger(linger, ctx);
            }
            (Accepted, 200..=299) => self.report(response, ctx),
            (Completed, 300..) => {
                // A retransmitted final response: our ACK was lost (§17.1.1.2).
                if let Some(ack) = &self.ack {
                    ctx.transmit(self.target, ack.clone());
                }
            }
            // Late provisionals, a 2xx after a non-2xx or the reverse: nothing to do.
            _ => {}
        }
    }

    fn non_invite_response(&mut self, response: Response, ctx: &mut Ctx<'_>) {
        use ClientState::*;
        match (self.state, response.is_final()) {
            (Calling | Proceeding, false) => {
                // Timer E keeps running: in Proceeding it fires every T2 (§17.1.2.2).
                self.state = Proceeding;
                self.report(response, ctx);
            }
            (Calling | Proceeding, true) => {
                self.state = Completed;
                self.timers.stop_all(ctx.schedule);
                self.report(response, ctx);
                let linger = ctx.timers.timer_k(self.target.transport);
                self.linger(linger, ctx);
            }
            // Completed absorbs retransmissions of the final response.
            _ => {}
        }
    }

    pub(super) fn on_timer(&mut self, timer: ClientTimer, ctx: &mut Ctx<'_>) {
        use ClientState::*;
        match timer {
            ClientTimer::Retransmit => {
                let interval = match (self.invite, self.state) {
                    // Timer A doubles without a cap (§17.1.1.2).
                    (true, Calling) => self.interval * 2,
                    (false, Calling) => (self.interval * 2).min(ctx.timers.t2),
                    (false, Proceeding) => ctx.timers.t2,
                    _ => return,
                };
                ctx.transmit(self.target, self.bytes.clone());
                self.interval = interval;
                self.timers
                    .set(ctx.schedule, ClientTimer::Retransmit, ctx.now + interval);
            }
            ClientTimer::Timeout => {
                if matches!(self.state, Calling | Proceeding) {
                    ctx.out.events.push_back(TxEvent::Timeout { id: self.id });
                    self.terminate(ctx);
                }
            }
            ClientTimer::Linger | ClientTimer::Accepted => self.terminate(ctx),
        }
    }

    /// A CANCEL for this INVITE went out: if no final response arrives within 64*T1 the
    /// INVITE transaction is given up (§9.1, last paragraph) and the TU gets `Timeout`.
    pub(super) fn cancel_sent(&mut self, cancel: ClientTxId, ctx: &mut Ctx<'_>) {
        self.cancel = CancelState::Sent(cancel);
        self.timers.set(
            ctx.schedule,
            ClientTimer::Timeout,
            ctx.now + ctx.timers.t1 * 64,
        );
    }

    /// The transport could not deliver to our target (§17.1.1.2, §17.1.2.2).
    pub(super) fn on_transport_error(&mut self, ctx: &mut Ctx<'_>) {
        if matches!(self.state, ClientState::Calling | ClientState::Proceeding) {
            ctx.out
                .events
                .push_back(TxEvent::TransportError { id: self.id });
        }
        self.terminate(ctx);
    }

    fn report(&mut self, response: Response, ctx: &mut Ctx<'_>) {
        ctx.out.events.push_back(TxEvent::Response {
            id: self.id,
            response,
        });
    }

    fn linger(&mut self, linger: Duration, ctx: &mut Ctx<'_>) {
        if linger.is_zero() {
            self.terminate(ctx);
        } else {
            self.timers
                .set(ctx.schedule, ClientTimer::Linger, ctx.now + linger);
        }
    }

    pub(super) fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        self.state = ClientState::Terminated;
        self.timers.stop_all(ctx.schedule);
    }
}

/// The ACK for a non-2xx final response (§17.1.1.3): the original Request-URI, Call-ID,
/// From and Route set, the response's To (with its tag), one Via equal to the original
/// top Via (so the ACK matches the server transaction), and the original CSeq number.
pub(super) fn build_ack(original: &Request, response: &Response, cseq: u32) -> Request {
    let mut ack = Request::new(Method::Ack, original.uri.clone());
    copy_common(original, &mut ack);
    if let Some(to) = response.headers.get(&HeaderName::To) {
        ack.headers.push(HeaderName::To, to);
    }
    ack.headers.push(HeaderName::CSeq, format!("{cseq} ACK"));
    ack
}

/// The CANCEL of §9.1: Request-URI, Call-ID, From, To, Route set and top Via of the
/// request it cancels, with the same CSeq number.
pub(super) fn build_cancel(original: &Request, cseq: u32) -> Request {
    let mut cancel = Request::new(Method::Cancel, original.uri.clone());
    copy_common(original, &mut cancel);
    if let Some(to) = original.headers.get(&HeaderName::To) {
        cancel.headers.push(HeaderName::To, to);
    }
    cancel
        .headers
        .push(HeaderName::CSeq, format!("{cseq} CANCEL"));
    cancel
}

/// Top Via, Route set, Max-Forwards, From and Call-ID, in the order a request prints them.
fn copy_common(original: &Request, into: &mut Request) {
    if let Some(via) = original.headers.get(&HeaderName::Via) {
        into.headers.push(HeaderName::Via, via);
    }
    for route in original.headers.get_all(&HeaderName::Route) {
        into.headers.push(HeaderName::Route, route);
    }
    into.headers.push(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(value) = original.headers.get(&name) {
            into.headers.push(name, value);
        }
    }
}
