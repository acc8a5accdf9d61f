//! RFC 3261 §17 transactions: a [`TransactionLayer`] owns every client and server
//! transaction of an endpoint and routes messages to them, as quinn-proto's `Endpoint`
//! routes datagrams to connections. It never does I/O and never reads a clock: the caller
//! passes `now`, and everything to send, report or wake up for comes out of `poll_*`.
//!
//! # Drive contract
//!
//! Inputs (each a single mutation; drain the outputs after it):
//! - [`TransactionLayer::send_request`] / [`TransactionLayer::send_cancel`] /
//!   [`TransactionLayer::send_ack`]: the TU sends. The request carries its own top Via with
//!   a fresh branch from [`new_branch`].
//! - [`TransactionLayer::handle_request`] / [`TransactionLayer::handle_response`]: the
//!   driver parsed a message from `source`. Before calling, the driver does the transport
//!   part of §18.2.1 (add `received`/fill `rport` on the top Via when it applies).
//! - [`TransactionLayer::respond`]: the TU answers a server transaction.
//! - [`TransactionLayer::ack_received`]: the TU saw the ACK for a 2xx it sent (the layer
//!   also does this itself for every ACK that passes through `handle_request`).
//! - [`TransactionLayer::handle_timeout`]: call when [`TransactionLayer::poll_timeout`]'s
//!   instant has passed (calling early or twice is harmless).
//! - [`TransactionLayer::handle_transport_error`]: a TCP connect failed, a connection was
//!   reset, or ICMP said unreachable.
//!
//! Outputs, drained after every input in this order: [`TransactionLayer::poll_transmit`]
//! until `None` (send each datagram or write it on the connection for that target),
//! [`TransactionLayer::poll_event`] until `None` (hand to the TU, which may call inputs
//! again), then [`TransactionLayer::poll_timeout`] to re-arm the single timer.
//!
//! # Choices
//!
//! - RFC 6026 is implemented: a client INVITE transaction that receives a 2xx stays
//!   *Accepted* for 64*T1 and passes every further 2xx (retransmissions, forks) to the TU,
//!   which ACKs each one ([`TransactionLayer::send_ack`]); a server INVITE transaction that
//!   sent a 2xx stays *Accepted* for 64*T1 and absorbs retransmitted INVITEs. A response
//!   matching no transaction is returned as [`ResponseInput::Stray`].
//! - A 2xx to an INVITE is retransmitted by the layer itself (§13.3.1.4) until the ACK,
//!   and [`TxEvent::AckTimeout`] reports giving up after 64*T1 (the TU sends BYE).
//! - Responses go back to the `source` the request came from (RFC 3581 symmetric
//!   response routing; on TCP that target names the connection).
//! - A CANCEL is a server transaction of its own; [`ServerInput::Cancel`] says which
//!   INVITE transaction it stops and what status the CANCEL itself gets.

mod ack_wait;
mod client;
mod server;
mod timer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;

use crate::header::Via;
use crate::message::{Method, Request, Response};
use crate::SipError;

use ack_wait::AckWait;
use client::{build_cancel, CancelState, ClientKey, ClientState, ClientTransaction};
use server::{AckOutcome, ServerKey, ServerState, ServerTransaction};
use timer::{Owner, Schedule};

/// The transport protocol of a [`Target`]. Only reliability matters to transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Reliable transports get no retransmission timers and no linger time (§17).
    pub fn is_reliable(self) -> bool {
        match self {
            Transport::Udp => false,
            Transport::Tcp => true,
        }
    }
}

/// Where a message goes (or came from): a transport and a socket address. For TCP the
/// driver maps it to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// The RFC 3261 timer base values (§17.1.1.1, Table 4); every other timer derives from
/// them here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate.
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// Maximum time a message stays in the network.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// Timers B, F, H, J (on unreliable transports), L and M: 64*T1.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1 * 64
    }

    /// Timer D: at least 32 s on unreliable transports, zero on reliable ones.
    pub fn timer_d(&self, transport: Transport) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            Duration::from_secs(32).max(self.t1 * 64)
        }
    }

    /// Timer I: T4 on unreliable transports, zero on reliable ones.
    pub fn timer_i(&self, transport: Transport) -> Duration {
        self.unreliable_only(transport, self.t4)
    }

    /// Timer J: 64*T1 on unreliable transports, zero on reliable ones.
    pub fn timer_j(&self, transport: Transport) -> Duration {
        self.unreliable_only(transport, self.t1 * 64)
    }

    /// Timer K: T4 on unreliable transports, zero on reliable ones.
    pub fn timer_k(&self, transport: Transport) -> Duration {
        self.unreliable_only(transport, self.t4)
    }

    fn unreliable_only(&self, transport: Transport, d: Duration) -> Duration {
        if transport.is_reliable() {
            Duration::ZERO
        } else {
            d
        }
    }
}

/// A client transaction (a request we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// A server transaction (a request we received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// Bytes to send. Retransmissions share the bytes printed the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub target: Target,
    pub data: Arc<[u8]>,
}

/// What the TU learns from the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TxEvent {
    /// A response for the TU: provisional, final, and for an INVITE every 2xx including
    /// retransmissions (the TU ACKs each). Retransmitted non-2xx finals are absorbed.
    Response { id: ClientTxId, response: Response },
    /// Timer B or F fired (or no final response 64*T1 after our CANCEL): the TU acts as
    /// if it received 408 (§8.1.3.1).
    Timeout { id: ClientTxId },
    /// The transport failed before a final response: the TU acts as if it received 503
    /// (§8.1.3.1).
    TransportError { id: ClientTxId },
    /// Timer H: the ACK for our non-2xx final response never came.
    ServerTimeout { id: ServerTxId },
    /// The 2xx the transaction sent was retransmitted for 64*T1 without an ACK: the
    /// dialog is confirmed but the TU should send BYE (§13.3.1.4).
    AckTimeout { id: ServerTxId },
}

/// What a received request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerInput {
    /// A new server transaction: the TU must answer it with [`TransactionLayer::respond`].
    New(ServerTxId, Request),
    /// A retransmission, absorbed; if a response had been sent its retransmission is queued.
    Retransmission,
    /// An ACK that acknowledges a 2xx (it matched no transaction, or an Accepted one): for
    /// the TU's dialog. The layer has already stopped retransmitting that 2xx.
    Ack2xx(Request),
    /// An ACK for a non-2xx final response, absorbed by its INVITE server transaction.
    AckAbsorbed,
    /// A new CANCEL server transaction (§9.2). The TU answers `cancel_tx` with
    /// `cancel_status` (200 when an INVITE transaction matched, 481 when none did) and,
    /// when `invite_tx` is `Some`, answers that INVITE with 487. `invite_tx` is `None`
    /// when the INVITE was already finally answered (the CANCEL/200 race): the CANCEL
    /// then has no effect beyond its own 200.
    Cancel {
        cancel_tx: ServerTxId,
        invite_tx: Option<ServerTxId>,
        cancel_status: u16,
        request: Request,
    },
}

/// What a received response is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseInput {
    /// Given to that client transaction; whatever the TU must see comes as events.
    Matched(ClientTxId),
    /// No client transaction (§18.1.2): e.g. a 2xx retransmitted after the INVITE
    /// transaction ended. A proxy or B2BUA may still act on it.
    Stray(Response),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The message lacks a header the layer needs or it does not parse.
    #[error(transparent)]
    Malformed(#[from] SipError),
    #[error("the top Via has no RFC 3261 branch (z9hG4bK...)")]
    NoBranch,
    #[error("a client transaction with this branch and method already exists")]
    DuplicateBranch,
    #[error("ACK is not sent through a client transaction (use send_ack)")]
    AckNotATransaction,
    #[error("no such transaction (unknown or terminated)")]
    UnknownTransaction,
    #[error("{0} is not a SIP status code")]
    InvalidStatus(u16),
    #[error("a final response was already sent; cannot send {status}")]
    FinalAlreadySent { status: u16 },
}

impl TransactionError {
    /// For an error about a received request, the status to answer it with statelessly.
    pub fn response_status(&self) -> Option<u16> {
        match self {
            TransactionError::Malformed(e) => Some(e.status()),
            _ => None,
        }
    }
}

/// A fresh RFC 3261 branch: the magic cookie and 16 random alphanumerics (~95 bits).
pub fn new_branch() -> String {
    let mut branch = String::with_capacity(23);
    branch.push_str("z9hG4bK");
    branch.extend(
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(16)
            .map(char::from),
    );
    branch
}

/// Queued outputs.
#[derive(Debug, Default)]
struct Output {
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
}

/// What a machine may touch while handling one input.
struct Ctx<'a> {
    now: Instant,
    timers: &'a Timers,
    schedule: &'a mut Schedule,
    out: &'a mut Output,
}

impl Ctx<'_> {
    fn transmit(&mut self, target: Target, data: Arc<[u8]>) {
        self.out.transmits.push_back(Transmit { target, data });
    }
}

/// Borrows the fields a machine needs, leaving the transaction maps free.
macro_rules! ctx {
    ($layer:ident, $now:expr) => {
        Ctx {
            now: $now,
            timers: &$layer.timers,
            schedule: &mut $layer.schedule,
            out: &mut $layer.out,
        }
    };
}

/// All transactions of one endpoint. See the module documentation for the drive contract.
#[derive(Debug, Default)]
pub struct TransactionLayer {
    timers: Timers,
    next_id: u64,
    clients: HashMap<u64, ClientTransaction>,
    client_index: HashMap<ClientKey, u64>,
    /// Client transactions by target, for transport errors.
    client_targets: HashMap<Target, HashSet<u64>>,
    servers: HashMap<u64, ServerTransaction>,
    server_index: HashMap<ServerKey, u64>,
    /// 2xx responses waiting for their ACK, by server transaction id.
    ack_waits: HashMap<u64, AckWait>,
    ack_index: HashMap<(String, u32), u64>,
    /// INVITE server transactions that sent a non-2xx final, by (Call-ID, CSeq number,
    /// our To tag): the fallback match for an ACK whose branch differs from its INVITE's
    /// (§17.1.1.3 requires the same branch; SIPp scenarios and some phones send a new one,
    /// and Kamailio's tm matches such ACKs the same way). Without it the final response
    /// is retransmitted until Timer H.
    rejected_index: HashMap<(String, u32, String), u64>,
    schedule: Schedule,
    out: Output,
}

impl TransactionLayer {
    pub fn new(timers: Timers) -> TransactionLayer {
        TransactionLayer {
            timers,
            ..TransactionLayer::default()
        }
    }

    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    /// Live transactions, client and server (for metrics).
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Client transactions still waiting for a final response (Calling/Trying or
    /// Proceeding); those in Completed or Accepted only linger for retransmissions.
    pub fn pending_client_count(&self) -> usize {
        self.clients
            .values()
            .filter(|c| matches!(c.state, ClientState::Calling | ClientState::Proceeding))
            .count()
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// 2xx responses being retransmitted until their ACK arrives.
    pub fn awaiting_ack_count(&self) -> usize {
        self.ack_waits.len()
    }

    fn allocate(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- client side -------------------------------------------------------------

    /// Starts a client transaction and sends `request` to `target`. The request must
    /// already carry its own top Via with a fresh RFC 3261 branch ([`new_branch`]).
    pub fn send_request(
        &mut self,
        request: Request,
        target: Target,
        now: Instant,
    ) -> Result<ClientTxId, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckNotATransaction);
        }
        let via = request.top_via()?;
        let branch = match via.branch() {
            Some(b) if via.is_rfc3261() => b.to_string(),
            _ => return Err(TransactionError::NoBranch),
        };
        let cseq = request.cseq()?;
        if cseq.method != request.method {
            return Err(SipError::BadHeader("CSeq").into());
        }
        let key = ClientKey {
            branch,
            method: request.method.clone(),
        };
        if self.client_index.contains_key(&key) {
            return Err(TransactionError::DuplicateBranch);
        }
        let id = ClientTxId(self.allocate());
        self.start_client(id, key, cseq.seq, request, target, now);
        Ok(id)
    }

    fn start_client(
        &mut self,
        id: ClientTxId,
        key: ClientKey,
        cseq: u32,
        request: Request,
        target: Target,
        now: Instant,
    ) {
        let mut ctx = ctx!(self, now);
        let tx = ClientTransaction::start(id, key.clone(), cseq, request, target, &mut ctx);
        self.client_index.insert(key, id.0);
        self.client_targets.entry(target).or_default().insert(id.0);
        self.clients.insert(id.0, tx);
    }

    /// Cancels a pending INVITE (§9.1). The CANCEL goes out now if a provisional response
    /// has arrived; otherwise it is sent when the first one does, and never if a final
    /// response comes first. Returns the CANCEL's transaction id (the same one when
    /// called again), or `None` when there is nothing to cancel: not an INVITE, unknown,
    /// or already finally answered.
    pub fn send_cancel(&mut self, id: ClientTxId, now: Instant) -> Option<ClientTxId> {
        let tx = self.clients.get(&id.0)?;
        if !tx.is_invite() {
            return None;
        }
        match (tx.cancel, tx.state) {
            (CancelState::Deferred(c) | CancelState::Sent(c), _) => Some(c),
            (CancelState::None, ClientState::Calling) => {
                let c = ClientTxId(self.allocate());
                if let Some(tx) = self.clients.get_mut(&id.0) {
                    tx.cancel = CancelState::Deferred(c);
                }
                Some(c)
            }
            (CancelState::None, ClientState::Proceeding) => {
                let c = ClientTxId(self.allocate());
                self.start_cancel(id.0, c, now);
                Some(c)
            }
            _ => None,
        }
    }

    fn start_cancel(&mut self, invite: u64, cancel_id: ClientTxId, now: Instant) {
        let Some(tx) = self.clients.get(&invite) else {
            return;
        };
        let cancel = build_cancel(tx.request(), tx.cseq());
        let key = ClientKey {
            branch: tx.key.branch.clone(),
            method: Method::Cancel,
        };
        let (cseq, target) = (tx.cseq(), tx.target);
        self.start_client(cancel_id, key, cseq, cancel, target, now);
        if let Some(tx) = self.clients.get_mut(&invite) {
            tx.cancel_sent(cancel_id, &mut ctx!(self, now));
        }
    }

    /// Sends an ACK for a 2xx (§13.2.2.4). It belongs to no transaction: the TU builds
    /// it and sends it again for each retransmission of the 2xx it receives.
    pub fn send_ack(&mut self, ack: &Request, target: Target) {
        self.out.transmits.push_back(Transmit {
            target,
            data: ack.to_bytes().into(),
        });
    }

    /// Sends a response outside any transaction, e.g. a 400 for a request that
    /// [`handle_request`](Self::handle_request) rejected.
    pub fn send_stateless(&mut self, response: &Response, target: Target) {
        self.out.transmits.push_back(Transmit {
            target,
            data: response.to_bytes().into(),
        });
    }

    /// A response arrived. Matched by branch and CSeq method (§17.1.3).
    pub fn handle_response(
        &mut self,
        response: Response,
        now: Instant,
    ) -> Result<ResponseInput, TransactionError> {
        let via = response.top_via()?;
        let cseq = response.cseq()?;
        let Some(branch) = via.branch() else {
            return Ok(ResponseInput::Stray(response));
        };
        let key = ClientKey {
            branch: branch.to_string(),
            method: cseq.method,
        };
        let Some(&id) = self.client_index.get(&key) else {
            return Ok(ResponseInput::Stray(response));
        };
        let Some(tx) = self.clients.get_mut(&id) else {
            return Ok(ResponseInput::Stray(response));
        };
        tx.on_response(response, &mut ctx!(self, now));
        self.after_client(id, now);
        Ok(ResponseInput::Matched(ClientTxId(id)))
    }

    /// Housekeeping after a client machine ran: release or send a deferred CANCEL, and
    /// forget a terminated transaction.
    fn after_client(&mut self, id: u64, now: Instant) {
        let Some(tx) = self.clients.get_mut(&id) else {
            return;
        };
        if let CancelState::Deferred(cancel_id) = tx.cancel {
            match tx.state {
                ClientState::Calling => {}
                ClientState::Proceeding => self.start_cancel(id, cancel_id, now),
                // A final response came first: there is nothing left to cancel.
                _ => tx.cancel = CancelState::None,
            }
        }
        if self
            .clients
            .get(&id)
            .is_some_and(|tx| tx.state == ClientState::Terminated)
        {
            self.remove_client(id);
        }
    }

    fn remove_client(&mut self, id: u64) {
        let Some(mut tx) = self.clients.remove(&id) else {
            return;
        };
        tx.timers_mut().stop_all(&mut self.schedule);
        if self.client_index.get(&tx.key) == Some(&id) {
            self.client_index.remove(&tx.key);
        }
        if let Some(set) = self.client_targets.get_mut(&tx.target) {
            set.remove(&id);
            if set.is_empty() {
                self.client_targets.remove(&tx.target);
            }
        }
    }

    /// The transport to `target` failed: every client transaction sending there that has
    /// no final response yet reports [`TxEvent::TransportError`]; all of them end.
    pub fn handle_transport_error(&mut self, target: Target, now: Instant) {
        let Some(ids) = self.client_targets.remove(&target) else {
            return;
        };
        let mut ids: Vec<u64> = ids.into_iter().collect();
        ids.sort_unstable(); // deterministic event order
        for id in ids {
            if let Some(tx) = self.clients.get_mut(&id) {
                tx.on_transport_error(&mut ctx!(self, now));
            }
            self.after_client(id, now);
        }
    }

    // ---- server side -------------------------------------------------------------

    /// A request arrived from `source`. Matched per §17.2.3 (and the RFC 2543 rules when
    /// the branch lacks the magic cookie). An error means the request lacks a usable Via,
    /// CSeq, Call-ID (or, for RFC 2543 peers, From/To): answer it statelessly with
    /// [`TransactionError::response_status`] if it can be answered at all.
    pub fn handle_request(
        &mut self,
        request: Request,
        source: Target,
        now: Instant,
    ) -> Result<ServerInput, TransactionError> {
        let via = request.top_via()?;
        let seq = request.cseq()?.seq;
        request.call_id()?;
        match request.method {
            Method::Ack => self.handle_ack(request, &via, seq, now),
            Method::Cancel => self.handle_cancel(request, &via, seq, source, now),
            _ => {
                let key = server_key(&request, &via, seq, request.method.clone())?;
                if let Some(tx) = self
                    .server_index
                    .get(&key)
                    .and_then(|id| self.servers.get_mut(id))
                {
                    tx.on_retransmission(&mut ctx!(self, now));
                    return Ok(ServerInput::Retransmission);
                }
                let id = self.start_server(key, &request, source, now);
                Ok(ServerInput::New(id, request))
            }
        }
    }

    fn start_server(
        &mut self,
        key: ServerKey,
        request: &Request,
        source: Target,
        now: Instant,
    ) -> ServerTxId {
        let id = ServerTxId(self.allocate());
        let tx = ServerTransaction::start(id, key.clone(), request, source, &mut ctx!(self, now));
        self.server_index.insert(key, id.0);
        self.servers.insert(id.0, tx);
        id
    }

    fn handle_ack(
        &mut self,
        request: Request,
        via: &Via,
        seq: u32,
        now: Instant,
    ) -> Result<ServerInput, TransactionError> {
        let key = server_key(&request, via, seq, Method::Invite)?;
        let mut found = self.server_index.get(&key).copied();
        if let (None, ServerKey::Rfc2543 { to_tag, .. }) = (found, &key) {
            // An ACK to an initial INVITE: the INVITE had no To tag, the ACK carries ours.
            let ack_tag = to_tag.clone();
            let mut untagged = key.clone();
            if let ServerKey::Rfc2543 { to_tag, .. } = &mut untagged {
                *to_tag = None;
            }
            found = self.server_index.get(&untagged).copied().filter(|id| {
                self.servers
                    .get(id)
                    .is_some_and(|tx| tx.response_to_tag == ack_tag)
            });
        }
        if found.is_none() {
            if let Ok(to) = request.to() {
                if let Some(tag) = to.tag() {
                    let key = (request.call_id()?.to_string(), seq, tag.to_string());
                    found = self.rejected_index.get(&key).copied();
                }
            }
        }
        if let Some(id) = found {
            if let Some(tx) = self.servers.get_mut(&id) {
                match tx.on_ack(&mut ctx!(self, now)) {
                    AckOutcome::Absorbed => {
                        self.after_server(id);
                        return Ok(ServerInput::AckAbsorbed);
                    }
                    AckOutcome::ForTu => {}
                }
            }
        }
        self.ack_received(request.call_id()?, seq);
        Ok(ServerInput::Ack2xx(request))
    }

    fn handle_cancel(
        &mut self,
        request: Request,
        via: &Via,
        seq: u32,
        source: Target,
        now: Instant,
    ) -> Result<ServerInput, TransactionError> {
        let own = server_key(&request, via, seq, Method::Cancel)?;
        if let Some(tx) = self
            .server_index
            .get(&own)
            .and_then(|id| self.servers.get_mut(id))
        {
            tx.on_retransmission(&mut ctx!(self, now));
            return Ok(ServerInput::Retransmission);
        }
        // §9.2: the CANCEL matches the INVITE by the same rules, method aside.
        let invite_key = server_key(&request, via, seq, Method::Invite)?;
        let invite = self
            .server_index
            .get(&invite_key)
            .and_then(|id| self.servers.get(id))
            .filter(|tx| tx.is_invite());
        let (invite_tx, cancel_status) = match invite {
            Some(tx) if tx.awaits_final() => (Some(tx.id), 200),
            Some(_) => (None, 200),
            None => (None, 481),
        };
        let cancel_tx = self.start_server(own, &request, source, now);
        Ok(ServerInput::Cancel {
            cancel_tx,
            invite_tx,
            cancel_status,
            request,
        })
    }

    /// Sends the TU's response on a server transaction, to the request's source. A 2xx
    /// to an INVITE is also handed to the 2xx retransmitter until its ACK arrives.
    pub fn respond(
        &mut self,
        id: ServerTxId,
        response: Response,
        now: Instant,
    ) -> Result<(), TransactionError> {
        if !(100..=699).contains(&response.status) {
            return Err(TransactionError::InvalidStatus(response.status));
        }
        let Some(tx) = self.servers.get_mut(&id.0) else {
            return Err(TransactionError::UnknownTransaction);
        };
        // Read what the retransmitter needs before anything is sent.
        let ack_key = if tx.is_invite() && response.is_success() {
            Some((response.call_id()?.to_string(), response.cseq()?.seq))
        } else {
            None
        };
        let rejected_key = if tx.is_invite() && response.status >= 300 {
            match (response.call_id(), response.cseq(), response.to()) {
                (Ok(c), Ok(q), Ok(to)) => to.tag().map(|t| (c.to_string(), q.seq, t.to_string())),
                _ => None,
            }
        } else {
            None
        };
        let source = tx.source;
        let sent = tx.respond(&response, &mut ctx!(self, now))?;
        if let Some(key) = ack_key {
            self.start_ack_wait(id, key, source, sent, now);
        }
        if let Some(key) = rejected_key {
            if let Some(tx) = self.servers.get_mut(&id.0) {
                tx.rejected_key = Some(key.clone());
            }
            self.rejected_index.insert(key, id.0);
        }
        self.after_server(id.0);
        Ok(())
    }

    fn after_server(&mut self, id: u64) {
        if self
            .servers
            .get(&id)
            .is_some_and(|tx| tx.state == ServerState::Terminated)
        {
            if let Some(mut tx) = self.servers.remove(&id) {
                tx.timers_mut().stop_all(&mut self.schedule);
                if self.server_index.get(&tx.key) == Some(&id) {
                    self.server_index.remove(&tx.key);
                }
                if let Some(key) = tx.rejected_key.take() {
                    if self.rejected_index.get(&key) == Some(&id) {
                        self.rejected_index.remove(&key);
                    }
                }
            }
        }
    }

    fn start_ack_wait(
        &mut self,
        id: ServerTxId,
        key: (String, u32),
        target: Target,
        bytes: Arc<[u8]>,
        now: Instant,
    ) {
        // A second 2xx on the same transaction, or the same Call-ID/CSeq on another one,
        // replaces the earlier wait.
        if let Some(old) = self.ack_index.get(&key).copied() {
            self.remove_ack_wait(old);
        }
        self.remove_ack_wait(id.0);
        let wait = AckWait::start(id, key.clone(), target, bytes, &mut ctx!(self, now));
        self.ack_index.insert(key, id.0);
        self.ack_waits.insert(id.0, wait);
    }

    fn remove_ack_wait(&mut self, id: u64) {
        if let Some(mut wait) = self.ack_waits.remove(&id) {
            wait.stop(&mut self.schedule);
            if self.ack_index.get(&wait.key) == Some(&id) {
                self.ack_index.remove(&wait.key);
            }
        }
    }

    /// The ACK for the 2xx answering INVITE `call_id`/`cseq` arrived: stop retransmitting
    /// that 2xx. Returns whether one was being retransmitted.
    pub fn ack_received(&mut self, call_id: &str, cseq: u32) -> bool {
        match self.ack_index.get(&(call_id.to_string(), cseq)).copied() {
            Some(id) => {
                self.remove_ack_wait(id);
                true
            }
            None => false,
        }
    }

    // ---- time and outputs ----------------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, owner, index)) = self.schedule.pop_due(now) {
            match owner {
                Owner::Client(id) => {
                    if let Some(tx) = self.clients.get_mut(&id) {
                        if let Some(timer) = tx.timers_mut().expired(index, at) {
                            tx.on_timer(timer, &mut ctx!(self, now));
                        }
                    }
                    self.after_client(id, now);
                }
                Owner::Server(id) => {
                    if let Some(tx) = self.servers.get_mut(&id) {
                        if let Some(timer) = tx.timers_mut().expired(index, at) {
                            tx.on_timer(timer, &mut ctx!(self, now));
                        }
                    }
                    self.after_server(id);
                }
                Owner::AckWait(id) => {
                    if let Some(wait) = self.ack_waits.get_mut(&id) {
                        if let Some(timer) = wait.timers_mut().expired(index, at) {
                            wait.on_timer(timer, &mut ctx!(self, now));
                        }
                        if wait.done {
                            self.remove_ack_wait(id);
                        }
                    }
                }
            }
        }
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.next()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.out.events.pop_front()
    }
}

/// The §17.2.3 key of `request` as if its method were `method` (ACK and CANCEL look up
/// their INVITE under `Method::Invite`).
fn server_key(
    request: &Request,
    via: &Via,
    seq: u32,
    method: Method,
) -> Result<ServerKey, TransactionError> {
    if let (true, Some(branch)) = (via.is_rfc3261(), via.branch()) {
        let default_port = if via.transport == "TLS" { 5061 } else { 5060 };
        return Ok(ServerKey::Rfc3261 {
            branch: branch.to_string(),
            sent_by: format!(
                "{}:{}",
                via.host.to_ascii_lowercase(),
                via.port.unwrap_or(default_port)
            ),
            method,
        });
    }
    Ok(ServerKey::Rfc2543 {
        uri: request.uri.to_string(),
        to_tag: request.to()?.tag().map(str::to_string),
        from_tag: request.from()?.tag().map(str::to_string),
        call_id: request.call_id()?.to_string(),
        cseq: seq,
        via: via.to_string(),
        method,
    })
}
