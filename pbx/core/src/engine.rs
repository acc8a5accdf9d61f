//! The engine: one pure state machine that owns the transaction layer, the registrar, the
//! authenticator and every call, in the manner of quinn-proto's `Endpoint`.
//!
//! Drive contract (the runtime is the only caller):
//! 1. Feed one input: [`Engine::handle_datagram`] / [`Engine::handle_message`] (a message
//!    framed off a stream) / [`Engine::handle_timeout`] when [`Engine::poll_timeout`]'s
//!    deadline passes / [`Engine::handle_transport_error`] / [`Engine::shutdown`].
//! 2. Drain, in this order, until each returns `None`: [`Engine::poll_transmit`] (bytes to
//!    send), [`Engine::poll_event`] (bindings to persist, call records, auth failures).
//! 3. Re-arm the timer with [`Engine::poll_timeout`].
//!
//! Every input takes `now`; the engine never reads a clock, so whole calls run in
//! simulated time in tests.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use switchboard_sip::check::check_request;
use switchboard_sip::digest::{Algorithm, NonceManager};
use switchboard_sip::message::reason_phrase;
use switchboard_sip::transaction::{
    ClientTxId, ResponseInput, ServerInput, ServerTxId, Target, Timers, TransactionLayer, Transmit,
    TxEvent,
};
use switchboard_sip::{
    parse_datagram, HeaderName, Message, Method, ParseError, Request, Response, Via,
};

use crate::auth::{AuthFailure, AuthOutcome, Authenticator, Challenge};
use crate::call::{Call, CallOutcome, ClientRole, ServerRole};
use crate::dialog::LocalAddress;
use crate::directory::Directory;
use crate::registrar::{Binding, BindingChange, Registrar, RegistrarConfig};

/// Methods we answer; sent in Allow and used for 405.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, REFER, NOTIFY";
/// Option tags a request may Require of us (RFC 3327 Path for the registrar).
pub const SUPPORTED: &[&str] = &["path", "replaces"];

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The SIP domain and digest realm.
    pub domain: String,
    /// Our address as written in Via and Contact.
    pub local: LocalAddress,
    /// How long callee devices ring before the caller gets 408.
    pub ring_timeout: Duration,
    /// Digest algorithms offered, in challenge order.
    pub algorithms: Vec<Algorithm>,
    pub registrar: RegistrarConfig,
    /// Secret that makes nonces self-validating; random per start by default.
    pub nonce_secret: Vec<u8>,
    pub nonce_lifetime_secs: u64,
    pub timers: Timers,
    pub user_agent: String,
    /// Media anchoring; `None` passes SDP through untouched (signalling only).
    pub media: Option<crate::media::MediaConfig>,
    /// Park slots and auto-answer.
    pub features: crate::features::FeatureConfig,
    /// Provider accounts (registration, outbound and inbound calls).
    pub trunks: Vec<crate::trunk::TrunkConfig>,
    /// Conference rooms; `None`: no number is a room.
    pub conference: Option<crate::conference::ConferenceConfig>,
}

/// What the runtime persists, logs or counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    Binding(BindingChange),
    CallStarted {
        call: u64,
        caller: String,
        callee: String,
        /// The caller leg's SIP Call-ID: recordings are stored against it, and the call
        /// log keeps it to match a call with SIP traces.
        sip_call_id: String,
        direction: CallDirection,
    },
    CallAnswered {
        call: u64,
    },
    CallEnded {
        call: u64,
        caller: String,
        callee: String,
        outcome: CallOutcome,
        /// The final status the caller saw (200 for answered calls).
        status: u16,
    },
    AuthFailed {
        method: String,
        user: Option<String>,
        source: Target,
        reason: AuthFailure,
    },
    /// Something for the runtime's media side (open ports, configure a leg, close).
    Media(crate::media::MediaCommand),
    /// Something for the runtime's conference rooms (see `conference`).
    Room(crate::conference::RoomCommand),
    /// A room's call-out (`Command::RoomAdd`) joined its callee or failed.
    RoomCallOut(crate::conference::CallOutReport),
    /// A key pressed by one party of a call (RFC 4733, in-band, or SIP INFO).
    Dtmf {
        call: u64,
        /// True when the caller pressed it.
        caller: bool,
        digit: char,
        duration_ms: u32,
        source: &'static str,
    },
    /// Something that happened to a live call after it started, for the call log and the
    /// event stream: transfers, parks, holds, mutes, recordings.
    History {
        call: u64,
        event: CallHistory,
    },
    /// A trunk's registration changed.
    Trunk {
        trunk: String,
        status: crate::trunk::TrunkStatus,
    },
    /// A message we could not parse; `answered` when a 400 went back.
    Malformed {
        source: Target,
        reason: String,
        answered: bool,
    },
}

/// A step in a call's life after it started (see [`EngineEvent::History`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallHistory {
    /// `party`'s side is now `to` (a user name or a dialled number); `by` asked for it.
    Transferred {
        kind: TransferKind,
        party: crate::command::Party,
        from: String,
        to: String,
        by: Option<String>,
    },
    /// A transfer whose target did not answer: the call is as it was.
    TransferFailed {
        party: crate::command::Party,
        to: String,
        status: u16,
    },
    /// `party` waits in `slot`; `by` parked them.
    Parked {
        party: crate::command::Party,
        slot: String,
        by: Option<String>,
    },
    /// `by` took the call out of `slot` (dialling it, the API, or the timeout ring-back).
    Retrieved {
        slot: String,
        by: String,
    },
    Held {
        party: crate::command::Party,
    },
    Resumed {
        party: crate::command::Party,
    },
    Muted {
        party: crate::command::Party,
        muted: bool,
    },
    RecordingStarted,
    RecordingStopped,
    /// `party` left the call for a conference room (an ad hoc conference).
    MovedToRoom {
        party: crate::command::Party,
        room: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Blind,
    Attended,
    /// A parked call's timeout rang the parker back.
    ParkTimeout,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Blind => "blind",
            TransferKind::Attended => "attended",
            TransferKind::ParkTimeout => "park_timeout",
        }
    }
}

/// Where a call came from and went, for the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// Between users of this server.
    Internal,
    /// From a trunk.
    Inbound,
    /// To a trunk.
    Outbound,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Internal => "internal",
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }
}

/// Counters for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_in: u64,
    pub messages_out: u64,
    pub parse_errors: u64,
    pub auth_failures: u64,
    pub calls_total: u64,
    pub calls_answered: u64,
    pub registrations: usize,
    pub active_calls: usize,
    pub transactions: usize,
    pub users: usize,
}

pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) tx: TransactionLayer,
    pub(crate) registrar: Registrar,
    pub(crate) auth: Authenticator,
    pub(crate) directory: Directory,
    pub(crate) calls: HashMap<u64, Call>,
    pub(crate) next_call: u64,
    pub(crate) client_roles: HashMap<ClientTxId, (u64, ClientRole)>,
    pub(crate) server_roles: HashMap<ServerTxId, (u64, ServerRole)>,
    /// (Call-ID, our tag) → call: how in-dialog requests and ACKs find their call.
    pub(crate) dialogs: HashMap<(String, String), u64>,
    /// Call deadlines (ring timeout), lazily deleted: stale entries are skipped.
    /// Server transactions whose 2xx to an INVITE awaits the ACK → their call.
    pub(crate) ack_waiters: HashMap<ServerTxId, u64>,
    pub(crate) deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    pub(crate) transmits: VecDeque<Transmit>,
    pub(crate) events: VecDeque<EngineEvent>,
    pub(crate) stats: Stats,
    pub(crate) shutting_down: bool,
    pub(crate) media: Option<crate::media::MediaState>,
    /// Park slot → the call waiting there.
    pub(crate) parking: std::collections::BTreeMap<String, u64>,
    pub(crate) trunks: Vec<crate::trunk::Trunk>,
    /// Our REGISTERs to providers → (trunk, the request).
    pub(crate) trunk_txs: HashMap<ClientTxId, (usize, Request)>,
    /// Routing decisions (the dialplan); without one, a dialled user or extension.
    pub(crate) router: Option<Box<dyn crate::trunk::Router>>,
    pub(crate) conference: Option<crate::conference::ConferenceState>,
    anchor: (Instant, u64),
}

impl Engine {
    /// `now_unix` is the wall-clock time at `now`; the engine derives later wall-clock
    /// times from it, so registrations expire in simulated time too.
    pub fn new(config: EngineConfig, directory: Directory, now: Instant, now_unix: u64) -> Engine {
        let nonces = NonceManager::new(config.nonce_secret.clone())
            .with_lifetime(Duration::from_secs(config.nonce_lifetime_secs));
        let auth = Authenticator::new(&config.domain, config.algorithms.clone(), nonces);
        Engine {
            tx: TransactionLayer::new(config.timers),
            registrar: Registrar::new(config.registrar.clone()),
            auth,
            directory,
            calls: HashMap::new(),
            next_call: 1,
            client_roles: HashMap::new(),
            server_roles: HashMap::new(),
            dialogs: HashMap::new(),
            ack_waiters: HashMap::new(),
            deadlines: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            shutting_down: false,
            media: config.media.as_ref().map(|m| crate::media::MediaState {
                config: m.clone(),
                pool: m.pool(),
                caps: switchboard_media::sdp::negotiate::Capabilities::default(),
            }),
            parking: std::collections::BTreeMap::new(),
            trunks: config
                .trunks
                .iter()
                .filter(|t| !t.gateways.is_empty())
                .map(|t| crate::trunk::Trunk::new(t.clone(), &config.local.host, now))
                .collect(),
            trunk_txs: HashMap::new(),
            router: None,
            conference: config
                .conference
                .clone()
                .map(crate::conference::ConferenceState::new),
            anchor: (now, now_unix),
            config,
        }
    }

    pub(crate) fn unix(&self, now: Instant) -> u64 {
        self.anchor.1 + now.saturating_duration_since(self.anchor.0).as_secs()
    }

    fn instant_at_unix(&self, unix: u64) -> Instant {
        self.anchor.0 + Duration::from_secs(unix.saturating_sub(self.anchor.1))
    }

    /// Installs the routing decisions (the dialplan); calls in progress keep what they
    /// were routed to, new calls use this one.
    pub fn set_router(&mut self, router: Box<dyn crate::trunk::Router>) {
        self.router = Some(router);
    }

    /// Replaces the user directory (the runtime reloads it when the store changes).
    pub fn set_directory(&mut self, directory: Directory) {
        self.directory = directory;
    }

    pub fn restore_bindings(&mut self, bindings: Vec<Binding>) {
        self.registrar.restore(bindings);
    }

    pub fn stats(&self) -> Stats {
        Stats {
            registrations: self.registrar.len(),
            active_calls: self.live_calls(),
            transactions: self.tx.len(),
            users: self.directory.len(),
            ..self.stats
        }
    }

    pub fn handle_datagram(&mut self, data: &[u8], source: Target, now: Instant) {
        match parse_datagram(data) {
            Ok(msg) => self.handle_message(msg, source, now),
            Err(e) => self.handle_parse_error(&e, source, true),
        }
    }

    /// Counts a message that could not be parsed and, when `answer` is set, answers 400
    /// if a response can be formed (a stream closing on a framing error answers itself).
    pub fn handle_parse_error(&mut self, err: &ParseError, source: Target, answer: bool) {
        self.stats.parse_errors += 1;
        let answer = if answer { err.response() } else { None };
        let answered = answer.is_some();
        if let Some(resp) = answer {
            self.send_direct(resp.to_bytes(), source);
        }
        self.events.push_back(EngineEvent::Malformed {
            source,
            reason: err.to_string(),
            answered,
        });
    }

    pub fn handle_message(&mut self, msg: Message, source: Target, now: Instant) {
        self.stats.messages_in += 1;
        match msg {
            Message::Request(req) => self.handle_request(req, source, now),
            Message::Response(resp) => {
                // A response must have our Via on top; anything else is not for us.
                match self.tx.handle_response(resp, now) {
                    Ok(ResponseInput::Matched(_)) => {}
                    Ok(ResponseInput::Stray(resp)) => self.on_stray_response(resp, now),
                    Err(e) => {
                        self.stats.parse_errors += 1;
                        tracing::debug!(source = ?source, error = %e, "unusable response dropped");
                    }
                }
            }
        }
        self.drain_tx_events(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tx.handle_timeout(now);
        self.drain_tx_events(now);
        while let Some(Reverse((at, call))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            self.on_call_deadline(call, at, now);
        }
        self.trunk_timeouts(now);
        let unix = self.unix(now);
        for change in self.registrar.expire(unix) {
            self.events.push_back(EngineEvent::Binding(change));
        }
        self.drain_tx_events(now);
    }

    /// A report from a call's media: a port that could not be bound, or RTP that stopped
    /// (either way the call cannot carry audio any more and is ended), a key press, or
    /// the end of a prompt (the IVR goes on).
    pub fn handle_media_notice(
        &mut self,
        call: u64,
        notice: crate::media::MediaNotice,
        now: Instant,
    ) {
        use crate::media::MediaNotice;
        use switchboard_media::relay::MediaEvent;
        match notice {
            MediaNotice::BindFailed { pair } => {
                tracing::warn!(call, port = pair.rtp, "RTP port unusable; ending the call");
                self.media_port_broken(call, pair);
                self.end_call_for_media(call, now);
            }
            MediaNotice::Session(MediaEvent::RtpTimeout { leg }) => {
                let side = usize::from(leg == switchboard_media::relay::Leg::B);
                if !self.side_present(call, side) {
                    // Nobody on that side (a parker released, a transferor gone, a
                    // ring-back still ringing): its silence says nothing about the
                    // call. The leg is watched again when a party takes the side.
                    tracing::debug!(call, ?leg, "no RTP on a side without a party; ignored");
                } else {
                    tracing::info!(call, ?leg, "no RTP within the timeout; hanging up");
                    self.end_call_for_media(call, now);
                }
            }
            MediaNotice::Session(MediaEvent::Dtmf { leg, digit }) => {
                use switchboard_media::dtmf::DtmfSource;
                self.events.push_back(EngineEvent::Dtmf {
                    call,
                    caller: leg == switchboard_media::relay::Leg::A,
                    digit: digit.digit,
                    duration_ms: digit.duration_ms,
                    source: match digit.source {
                        DtmfSource::Rfc4733 => "rfc4733",
                        DtmfSource::Inband => "inband",
                        DtmfSource::SipInfo => "info",
                    },
                });
                if leg == switchboard_media::relay::Leg::A {
                    self.ivr_digit(call, digit.digit, now);
                }
                let side = usize::from(leg == switchboard_media::relay::Leg::B);
                self.feature_digit(call, side, digit.digit, now);
            }
            MediaNotice::Session(MediaEvent::PlaybackFinished { leg }) => {
                if !self.announcement_finished(call, leg, now) {
                    self.ivr_playback_finished(call, leg, now);
                }
            }
            MediaNotice::Session(other) => {
                tracing::debug!(call, event = ?other, "media");
            }
        }
        self.drain_tx_events(now);
    }

    pub fn handle_transport_error(&mut self, target: Target, now: Instant) {
        self.tx.handle_transport_error(target, now);
        self.drain_tx_events(now);
    }

    /// Graceful shutdown: new calls get 503, ringing calls are cancelled, answered calls
    /// are ended with BYE. Keep driving until [`Engine::is_idle`].
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        self.unregister_trunks(now);
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.end_call_for_shutdown(id, now);
        }
        self.conference_shutdown(now);
        self.drain_tx_events(now);
    }

    /// True when no call is left and none of our own requests (the BYEs and CANCELs of
    /// shutdown) awaits an answer. Server transactions that have answered only absorb
    /// retransmissions, so they do not hold shutdown up.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.tx.pending_client_count() == 0
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self
            .transmits
            .pop_front()
            .or_else(|| self.tx.poll_transmit());
        if t.is_some() {
            self.stats.messages_out += 1;
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.tx.poll_timeout();
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if let Some(Reverse((at, _))) = self.deadlines.peek() {
            consider(*at);
        }
        if let Some(at) = self.next_trunk_timeout() {
            consider(at);
        }
        if let Some(unix) = self.registrar.next_expiry() {
            // Registrations expire on whole seconds: wake just after the second ends.
            consider(self.instant_at_unix(unix) + Duration::from_millis(1));
        }
        next
    }

    /// Sends bytes outside any transaction (ACK for 2xx, stateless answers).
    pub(crate) fn send_direct(&mut self, data: Vec<u8>, target: Target) {
        self.transmits.push_back(Transmit {
            target,
            data: data.into(),
        });
    }

    /// Answers a server transaction, counting errors from the layer as a dead transaction.
    pub(crate) fn respond(&mut self, id: ServerTxId, resp: Response, now: Instant) {
        if let Err(e) = self.tx.respond(id, resp, now) {
            tracing::debug!(?id, error = %e, "response on a finished transaction dropped");
        }
    }

    pub(crate) fn reply(&mut self, id: ServerTxId, req: &Request, status: u16, now: Instant) {
        let resp =
            Response::for_request(req, status, reason_phrase(status), Some(&crate::new_tag()));
        self.respond(id, resp, now);
    }

    fn handle_request(&mut self, mut req: Request, source: Target, now: Instant) {
        stamp_via(&mut req, source);
        // Requests we cannot act on are answered statelessly (RFC 3261 §8.2): creating a
        // transaction for them would only hold memory for a flood of bad requests.
        if let Err(r) = check_request(&req, SUPPORTED) {
            if req.method != Method::Ack {
                let mut resp =
                    Response::for_request(&req, r.status, &r.reason, Some(&crate::new_tag()));
                for (name, value) in r.headers {
                    resp.headers.push(name, value);
                }
                self.tx.send_stateless(&resp, source);
            }
            return;
        }
        match self.tx.handle_request(req, source, now) {
            Ok(ServerInput::New(id, req)) => self.on_new_request(id, req, source, now),
            Ok(ServerInput::Retransmission | ServerInput::AckAbsorbed) => {}
            Ok(ServerInput::Ack2xx(ack)) => self.on_ack(ack, source, now),
            Ok(ServerInput::Cancel {
                cancel_tx,
                invite_tx,
                cancel_status,
                request,
            }) => self.on_cancel(cancel_tx, invite_tx, cancel_status, &request, now),
            Err(e) => {
                self.stats.parse_errors += 1;
                tracing::debug!(source = ?source, error = %e, "request refused by the transaction layer");
            }
        }
    }

    fn on_new_request(&mut self, id: ServerTxId, req: Request, source: Target, now: Instant) {
        let in_dialog = req.to().ok().and_then(|to| to.tag().map(str::to_string));
        if let Some(tag) = in_dialog {
            self.on_in_dialog_request(id, req, &tag, source, now);
            return;
        }
        match req.method {
            Method::Register => self.on_register(id, req, source, now),
            Method::Invite => self.on_invite(id, req, source, now),
            Method::Options => {
                let mut resp = Response::for_request(&req, 200, "OK", Some(&crate::new_tag()));
                resp.headers.push(HeaderName::Allow, ALLOW);
                resp.headers.push(HeaderName::Accept, "application/sdp");
                resp.headers
                    .push(HeaderName::Server, self.config.user_agent.clone());
                self.respond(id, resp, now);
            }
            // Outside a dialog these have nothing to act on (RFC 3261 §15.1.2, §12.2.2).
            Method::Bye | Method::Update | Method::Info | Method::Prack => {
                self.reply(id, &req, 481, now)
            }
            Method::Subscribe
            | Method::Notify
            | Method::Refer
            | Method::Message
            | Method::Publish => {
                let mut resp =
                    Response::for_request(&req, 405, "Method Not Allowed", Some(&crate::new_tag()));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond(id, resp, now);
            }
            // ACK and CANCEL never reach here (the transaction layer routes them).
            Method::Ack | Method::Cancel => {}
            Method::Other(_) => {
                let mut resp =
                    Response::for_request(&req, 501, "Not Implemented", Some(&crate::new_tag()));
                resp.headers.push(HeaderName::Allow, ALLOW);
                self.respond(id, resp, now);
            }
        }
    }

    fn on_register(&mut self, id: ServerTxId, req: Request, source: Target, now: Instant) {
        let unix = self.unix(now);
        let user = match self
            .auth
            .authenticate(&req, Challenge::Www, &self.directory, unix)
        {
            AuthOutcome::Authenticated(u) => u,
            AuthOutcome::Reject(resp, why) => {
                self.note_auth_failure(&req, source, why);
                self.respond(id, resp, now);
                return;
            }
        };
        // The AOR is the To user; it must be the authenticated user (by name or
        // extension): nobody registers someone else's phone (§10.3 step 5).
        let to_user = req.to().ok().and_then(|t| t.uri.user_unescaped());
        let owns = to_user
            .as_deref()
            .is_some_and(|u| u == user.name || user.extension.as_deref() == Some(u));
        if !owns {
            self.reply(id, &req, 403, now);
            return;
        }
        let (resp, changes) =
            self.registrar
                .handle_register(&req, &user.name, source, unix, &crate::new_tag());
        self.respond(id, resp, now);
        for c in changes {
            self.events.push_back(EngineEvent::Binding(c));
        }
    }

    pub(crate) fn note_auth_failure(&mut self, req: &Request, source: Target, reason: AuthFailure) {
        if reason == AuthFailure::NoCredentials {
            // The normal first leg of every digest exchange; not a failure.
            return;
        }
        self.stats.auth_failures += 1;
        let user = req
            .headers
            .get(&HeaderName::Authorization)
            .or_else(|| req.headers.get(&HeaderName::ProxyAuthorization))
            .and_then(|v| switchboard_sip::digest::Credentials::parse(v).ok())
            .map(|c| c.username);
        self.events.push_back(EngineEvent::AuthFailed {
            method: req.method.to_string(),
            user,
            source,
            reason,
        });
    }

    pub(crate) fn drain_tx_events(&mut self, now: Instant) {
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                TxEvent::Response { id, response } => self.on_client_response(id, response, now),
                TxEvent::Timeout { id } | TxEvent::TransportError { id } => {
                    self.on_client_failure(id, now)
                }
                TxEvent::ServerTimeout { id } => {
                    self.server_roles.remove(&id);
                }
                TxEvent::AckTimeout { id } => self.on_ack_timeout(id, now),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }

    pub(crate) fn new_call_id(&mut self) -> u64 {
        let id = self.next_call;
        self.next_call += 1;
        id
    }

    /// True when one of the request's Via entries is ours: it has been through this
    /// server before (§16.3 step 4 / §16.6 for proxies; a B2BUA loops through its own
    /// legs the same way, e.g. a phone registered with our own address as Contact).
    pub(crate) fn has_looped(&self, req: &Request) -> bool {
        let local = &self.config.local;
        req.headers.get_all(&HeaderName::Via).any(|v| {
            Via::parse(v).is_ok_and(|via| {
                via.host.eq_ignore_ascii_case(&local.host)
                    && via.port.unwrap_or(5060) == local.port
                    && via.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
            })
        })
    }

    /// Starts a client transaction. Fails only for a request we built wrongly, which is a
    /// bug worth a log line, not a crash.
    pub(crate) fn send_request(
        &mut self,
        req: Request,
        target: Target,
        now: Instant,
    ) -> Option<ClientTxId> {
        match self.tx.send_request(req, target, now) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!(error = %e, target = ?target, "could not start a client transaction");
                None
            }
        }
    }
}

/// Records where a request really came from in its top Via (RFC 3261 §18.2.1: `received`
/// when the sent-by host is not the source address; RFC 3581: `rport` filled in, and then
/// `received` always). Responses go back to the source either way; this tells the client
/// what its public address is, as phones behind NAT need.
fn stamp_via(req: &mut Request, source: Target) {
    let Some(first) = req.headers.0.iter_mut().find(|h| h.name == HeaderName::Via) else {
        return;
    };
    let Ok(mut via) = Via::parse(&first.value) else {
        return;
    };
    let ip = source.addr.ip().to_string();
    let sent_by = via.host.trim_start_matches('[').trim_end_matches(']');
    if via.rport().is_some() {
        via.set_param("rport", Some(&source.addr.port().to_string()));
        via.set_param("received", Some(&ip));
    } else if sent_by != ip {
        via.set_param("received", Some(&ip));
    } else {
        return;
    }
    first.value = via.to_string();
}

#[cfg(test)]
mod tests {
    use super::stamp_via;
    use switchboard_sip::transaction::{Target, Transport};
    use switchboard_sip::{parse_datagram, HeaderName, Message, Request};

    fn request(via: &str) -> Request {
        let text = format!(
            "OPTIONS sip:pbx.example.com SIP/2.0\r\nVia: {via}\r\nVia: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKx\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:pbx.example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    fn from(addr: &str) -> Target {
        Target {
            transport: Transport::Udp,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn rport_is_filled_with_the_source_port_and_received() {
        // RFC 3581 §4 example: the client behind NAT at 192.0.2.1 appears as 192.0.2.2:9988.
        let mut req = request("SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff");
        stamp_via(&mut req, from("192.0.2.2:9988"));
        assert_eq!(
            req.headers.get(&HeaderName::Via),
            Some("SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKkjshdyff;received=192.0.2.2")
        );
        // Only the top Via is ours to stamp.
        assert_eq!(
            req.headers.get_all(&HeaderName::Via).nth(1),
            Some("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKx")
        );
    }

    #[test]
    fn received_is_added_only_when_the_host_differs() {
        let mut req = request("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa");
        stamp_via(&mut req, from("192.0.2.7:5060"));
        assert_eq!(
            req.headers.get(&HeaderName::Via),
            Some("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa")
        );
        let mut req = request("SIP/2.0/UDP phone.example.com;branch=z9hG4bKa");
        stamp_via(&mut req, from("192.0.2.7:5060"));
        assert_eq!(
            req.headers.get(&HeaderName::Via),
            Some("SIP/2.0/UDP phone.example.com;branch=z9hG4bKa;received=192.0.2.7")
        );
    }
}
