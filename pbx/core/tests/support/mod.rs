//! A simulated network for scenario tests of `switchboard_core::Engine`, in the manner of
//! quinn-proto's `Pair::drive()`: the engine and any number of simulated phones exchange
//! datagrams through an in-memory queue, in simulated time, with optional seeded loss.
//!
//! Each phone is a small UA built on `switchboard_sip`'s own transaction layer (so it
//! retransmits and absorbs like a real one); its TU is scripted by the test, with a few
//! automatic behaviours a real phone has (ACK every 2xx to its INVITE, answer BYE with 200,
//! answer CANCEL with 200 + 487). Nothing here reads a clock, sleeps or opens a socket.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_core::{
    Directory, DirectoryUser, Engine, EngineConfig, EngineEvent, LocalAddress, RegistrarConfig,
};
use switchboard_sip::digest::{self, Algorithm, Credentials, Qop};
use switchboard_sip::transaction::{
    new_branch, ClientTxId, ResponseInput, ServerInput, ServerTxId, Target, Timers,
    TransactionLayer, Transport, TxEvent,
};
use switchboard_sip::{
    parse_datagram, HeaderName, Message, Method, NameAddr, Request, Response, Uri,
};

pub const DOMAIN: &str = "example.test";
pub const ENGINE_PORT: u16 = 5060;
/// Wall-clock seconds at the simulated start.
pub const START_UNIX: u64 = 1_700_000_000;
pub const SDP_OFFER: &str = "v=0\r\no=101 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
pub const SDP_ANSWER: &str = "v=0\r\no=102 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n";

pub fn udp(port: u16) -> Target {
    Target {
        transport: Transport::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

pub fn engine_target() -> Target {
    udp(ENGINE_PORT)
}

/// A directory user whose HA1s are computed from `password` for our realm.
pub fn user(name: &str, extension: Option<&str>, password: &str) -> DirectoryUser {
    DirectoryUser {
        name: name.to_string(),
        extension: extension.map(str::to_string),
        display_name: None,
        realm: DOMAIN.to_string(),
        ha1_md5: digest::ha1(Algorithm::Md5, name, DOMAIN, password),
        ha1_sha256: digest::ha1(Algorithm::Sha256, name, DOMAIN, password),
    }
}

pub fn config(algorithms: Vec<Algorithm>) -> EngineConfig {
    let secret: [u8; 32] = rand::thread_rng().gen();
    EngineConfig {
        domain: DOMAIN.to_string(),
        local: LocalAddress {
            host: "127.0.0.1".to_string(),
            port: ENGINE_PORT,
        },
        ring_timeout: Duration::from_secs(30),
        algorithms,
        registrar: RegistrarConfig::default(),
        nonce_secret: secret.to_vec(),
        nonce_lifetime_secs: 300,
        timers: Timers::default(),
        user_agent: "switchboard-test".to_string(),
        // Signalling scenarios: SDP passes through untouched.
        media: None,
        features: switchboard_core::FeatureConfig::default(),
        trunks: Vec::new(),
        conference: None,
    }
}

/// Everything a phone's TU saw, in order.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A new request (`id` is `None` for an ACK to a 2xx; for CANCEL it is the CANCEL's
    /// own transaction).
    Request {
        id: Option<ServerTxId>,
        req: Request,
    },
    Response {
        tx: ClientTxId,
        resp: Response,
    },
    /// A response that matched no transaction.
    Stray(Response),
    /// An ACK for a non-2xx final response, absorbed by the phone's transaction layer.
    AckAbsorbed,
    Timeout(ClientTxId),
    AckTimeout(ServerTxId),
}

/// One dialog (or would-be dialog) of a phone, keyed by Call-ID.
#[derive(Debug, Clone)]
pub struct Leg {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    pub local_uri: String,
    pub remote_uri: String,
    pub remote_target: Uri,
    pub cseq: u32,
    /// The ACK we sent for the 2xx to our INVITE, re-sent for each retransmission.
    pub ack: Option<(u32, Vec<u8>)>,
}

/// The digest state a phone keeps between challenge and retry.
#[derive(Debug, Clone)]
struct AuthState {
    realm: String,
    nonce: String,
    algorithm: Algorithm,
    nc: u32,
}

pub struct Phone {
    pub user: String,
    pub password: String,
    pub target: Target,
    pub tx: TransactionLayer,
    pub seen: Vec<Seen>,
    pub legs: HashMap<String, Leg>,
    pub sent: HashMap<ClientTxId, Request>,
    /// Which requests came in on which server transaction (to answer them).
    pub received: HashMap<ServerTxId, Request>,
    /// ACK every 2xx to our INVITE (a real UAC does; off to test the ACK timeout).
    pub auto_ack: bool,
    /// Answer an incoming BYE with 200.
    pub auto_bye: bool,
    /// Answer an incoming CANCEL with 200 and the INVITE with 487.
    pub auto_cancel: bool,
    /// The algorithm picked from a challenge offering several.
    pub prefer: Algorithm,
    /// A body for the ACKs this phone sends (late offer/answer, RFC 3261 §13.2.2.4).
    pub ack_body: Option<String>,
    auth: Option<AuthState>,
    next_cseq: u32,
}

impl Phone {
    fn new(user: &str, password: &str, port: u16) -> Phone {
        Phone {
            user: user.to_string(),
            password: password.to_string(),
            target: udp(port),
            tx: TransactionLayer::new(Timers::default()),
            seen: Vec::new(),
            legs: HashMap::new(),
            sent: HashMap::new(),
            received: HashMap::new(),
            auto_ack: true,
            auto_bye: true,
            auto_cancel: true,
            prefer: Algorithm::Md5,
            ack_body: None,
            auth: None,
            next_cseq: 1,
        }
    }

    pub fn aor(&self) -> String {
        format!("<sip:{}@{DOMAIN}>", self.user)
    }

    pub fn contact_uri(&self) -> String {
        format!("sip:{}@127.0.0.1:{}", self.user, self.target.addr.port())
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/UDP 127.0.0.1:{};branch={};rport",
            self.target.addr.port(),
            new_branch()
        )
    }

    /// An out-of-dialog request from this phone with a fresh Call-ID and From tag.
    pub fn request(&mut self, method: Method, ruri: &str, to: &str) -> Request {
        let call_id = format!("{}@127.0.0.1", switchboard_core::new_tag());
        let cseq = self.next_cseq;
        self.next_cseq += 1;
        self.request_in(method, ruri, to, &call_id, cseq)
    }

    /// A request with the given Call-ID and CSeq (for REGISTER refreshes).
    pub fn request_in(
        &mut self,
        method: Method,
        ruri: &str,
        to: &str,
        call_id: &str,
        cseq: u32,
    ) -> Request {
        let mut req = Request::new(method.clone(), Uri::parse(ruri).expect("request URI"));
        let h = &mut req.headers;
        h.push(HeaderName::Via, self.via());
        h.push(HeaderName::MaxForwards, "70");
        h.push(
            HeaderName::From,
            format!("{};tag={}", self.aor(), switchboard_core::new_tag()),
        );
        h.push(HeaderName::To, to.to_string());
        h.push(HeaderName::CallId, call_id.to_string());
        h.push(HeaderName::CSeq, format!("{cseq} {method}"));
        if matches!(method, Method::Invite | Method::Register) {
            h.push(HeaderName::Contact, format!("<{}>", self.contact_uri()));
        }
        req
    }

    /// A REGISTER for this phone's own AOR.
    pub fn register(&mut self, expires: u32) -> Request {
        let aor = self.aor();
        let mut req = self.request(Method::Register, &format!("sip:{DOMAIN}"), &aor);
        req.headers.push(HeaderName::Expires, expires.to_string());
        req
    }

    /// An INVITE with an SDP offer to `dialled` in our domain.
    pub fn invite(&mut self, dialled: &str) -> Request {
        let mut req = self.request(
            Method::Invite,
            &format!("sip:{dialled}@{DOMAIN}"),
            &format!("<sip:{dialled}@{DOMAIN}>"),
        );
        req.set_body(SDP_OFFER.as_bytes().to_vec(), Some("application/sdp"));
        req
    }

    /// A request inside the dialog with Call-ID `call_id`, with the next CSeq.
    pub fn in_dialog(&mut self, call_id: &str, method: Method) -> Request {
        let via = self.via();
        let leg = self.legs.get_mut(call_id).expect("no such dialog");
        leg.cseq += 1;
        let mut req = Request::new(method.clone(), leg.remote_target.clone());
        let h = &mut req.headers;
        h.push(HeaderName::Via, via);
        h.push(HeaderName::MaxForwards, "70");
        h.push(
            HeaderName::From,
            format!("{};tag={}", leg.local_uri, leg.local_tag),
        );
        let to = match &leg.remote_tag {
            Some(t) => format!("{};tag={t}", leg.remote_uri),
            None => leg.remote_uri.clone(),
        };
        h.push(HeaderName::To, to);
        h.push(HeaderName::CallId, leg.call_id.clone());
        h.push(HeaderName::CSeq, format!("{} {method}", leg.cseq));
        if matches!(method, Method::Invite | Method::Update) {
            h.push(HeaderName::Contact, format!("<{}>", self.contact_uri()));
        }
        req
    }

    /// Adds credentials answering the challenge in `challenge` (a 401 or 407) to `req`,
    /// with a new branch and the next CSeq: the retry of RFC 3261 §22.2.
    pub fn authorize(&mut self, req: &Request, challenge: &Response) -> Request {
        let (offer_header, answer_header) = match challenge.status {
            401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            407 => (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            ),
            s => panic!("{s} is not a challenge"),
        };
        let offers: Vec<HashMap<String, String>> = challenge
            .headers
            .get_all(&offer_header)
            .map(parse_challenge)
            .collect();
        let offer = offers
            .iter()
            .find(|o| o.get("algorithm").map(String::as_str) == Some(self.prefer.as_str()))
            .or_else(|| offers.first())
            .expect("a challenge header");
        assert_eq!(offer.get("qop").map(String::as_str), Some("auth"));
        self.auth = Some(AuthState {
            realm: offer["realm"].clone(),
            nonce: offer["nonce"].clone(),
            algorithm: Algorithm::from_token(&offer["algorithm"]).expect("known algorithm"),
            nc: 0,
        });
        let mut out = req.clone();
        out.headers.set(HeaderName::Via, self.via());
        let cseq = req.cseq().expect("CSeq");
        out.headers.set(
            HeaderName::CSeq,
            format!("{} {}", cseq.seq + 1, cseq.method),
        );
        self.next_cseq = self.next_cseq.max(cseq.seq + 2);
        out.headers.remove(&answer_header);
        let value = self.credentials(&out, None);
        out.headers.push(answer_header, value);
        out
    }

    /// The credentials value for `req` from the last challenge, with the next nonce count
    /// (or `password` instead of ours, to test a wrong one).
    pub fn credentials(&mut self, req: &Request, password: Option<&str>) -> String {
        let state = self.auth.as_mut().expect("no challenge seen yet");
        state.nc += 1;
        let cnonce = format!("{:08x}", rand::thread_rng().gen::<u32>());
        let mut creds = Credentials {
            username: self.user.clone(),
            realm: state.realm.clone(),
            nonce: state.nonce.clone(),
            uri: req.uri.to_string(),
            response: String::new(),
            algorithm: state.algorithm,
            cnonce: Some(cnonce),
            opaque: None,
            qop: Some(Qop::Auth),
            nc: Some(format!("{:08x}", state.nc)),
        };
        let ha1 = digest::ha1(
            state.algorithm,
            &self.user,
            &state.realm,
            password.unwrap_or(&self.password),
        );
        creds.response = digest::expected_response(&creds, req.method.as_str(), &ha1);
        format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}, cnonce=\"{}\", qop=auth, nc={}",
            creds.username,
            creds.realm,
            creds.nonce,
            creds.uri,
            creds.response,
            creds.algorithm,
            creds.cnonce.as_deref().unwrap_or(""),
            creds.nc.as_deref().unwrap_or("")
        )
    }

    fn send(&mut self, req: Request, engine: Target, now: Instant) -> ClientTxId {
        if req.method == Method::Invite {
            let call_id = req.call_id().unwrap().to_string();
            let from = req.from().unwrap();
            let to = req.to().unwrap();
            let seq = req.cseq().unwrap().seq;
            self.legs.entry(call_id.clone()).or_insert_with(|| Leg {
                call_id,
                local_tag: from.tag().unwrap().to_string(),
                remote_tag: None,
                local_uri: strip_tag(&from),
                remote_uri: strip_tag(&to),
                remote_target: req.uri.clone(),
                cseq: seq,
                ack: None,
            });
        }
        let id = self
            .tx
            .send_request(req.clone(), engine, now)
            .expect("phone could not send");
        self.sent.insert(id, req);
        id
    }

    /// Answers a request that came in on server transaction `id`. For an INVITE, 1xx
    /// (but 100) and 2xx carry our tag and Contact; `body` is an SDP answer.
    pub fn respond(&mut self, id: ServerTxId, status: u16, body: Option<&str>, now: Instant) {
        self.respond_with(id, status, &[], body, now);
    }

    /// [`Phone::respond`] with extra headers (a challenge, a Contact with expires).
    pub fn respond_with(
        &mut self,
        id: ServerTxId,
        status: u16,
        extra: &[(HeaderName, String)],
        body: Option<&str>,
        now: Instant,
    ) {
        let req = self
            .received
            .get(&id)
            .expect("unknown server transaction")
            .clone();
        let call_id = req.call_id().unwrap().to_string();
        let tag = self.legs.get(&call_id).map(|l| l.local_tag.clone());
        let tag = (status > 100).then(|| tag.unwrap_or_else(switchboard_core::new_tag));
        let mut resp = Response::for_request(
            &req,
            status,
            switchboard_sip::message::reason_phrase(status),
            tag.as_deref(),
        );
        if matches!(req.method, Method::Invite | Method::Update) && status > 100 && status < 300 {
            resp.headers
                .push(HeaderName::Contact, format!("<{}>", self.contact_uri()));
        }
        for (name, value) in extra {
            resp.headers.push(name.clone(), value.clone());
        }
        if let Some(b) = body {
            resp.set_body(b.as_bytes().to_vec(), Some("application/sdp"));
        }
        self.tx
            .respond(id, resp, now)
            .expect("phone could not respond");
    }

    fn handle(&mut self, msg: Message, source: Target, now: Instant) {
        match msg {
            Message::Request(req) => match self.tx.handle_request(req, source, now) {
                Ok(ServerInput::New(id, req)) => self.on_request(id, req, now),
                Ok(ServerInput::Retransmission) => {}
                Ok(ServerInput::AckAbsorbed) => self.seen.push(Seen::AckAbsorbed),
                Ok(ServerInput::Ack2xx(req)) => self.seen.push(Seen::Request { id: None, req }),
                Ok(ServerInput::Cancel {
                    cancel_tx,
                    invite_tx,
                    cancel_status,
                    request,
                }) => {
                    self.received.insert(cancel_tx, request.clone());
                    self.seen.push(Seen::Request {
                        id: Some(cancel_tx),
                        req: request,
                    });
                    if self.auto_cancel {
                        self.respond(cancel_tx, cancel_status, None, now);
                        if let Some(invite) = invite_tx {
                            self.respond(invite, 487, None, now);
                        }
                    }
                }
                Err(e) => panic!("{}: engine sent a bad request: {e}", self.user),
            },
            Message::Response(resp) => match self.tx.handle_response(resp, now) {
                Ok(ResponseInput::Matched(_)) => {}
                Ok(ResponseInput::Stray(resp)) => self.seen.push(Seen::Stray(resp)),
                Err(e) => panic!("{}: engine sent a bad response: {e}", self.user),
            },
        }
        self.drain_events(now);
    }

    fn on_request(&mut self, id: ServerTxId, req: Request, now: Instant) {
        self.received.insert(id, req.clone());
        let call_id = req.call_id().unwrap().to_string();
        if req.method == Method::Invite && !self.legs.contains_key(&call_id) {
            let from = req.from().unwrap();
            let to = req.to().unwrap();
            let contact = req
                .headers
                .get(&HeaderName::Contact)
                .and_then(|c| NameAddr::parse(c).ok())
                .map(|na| na.uri)
                .expect("INVITE without Contact");
            self.legs.insert(
                call_id.clone(),
                Leg {
                    call_id: call_id.clone(),
                    local_tag: switchboard_core::new_tag(),
                    remote_tag: from.tag().map(str::to_string),
                    local_uri: strip_tag(&to),
                    remote_uri: strip_tag(&from),
                    remote_target: contact,
                    cseq: 0,
                    ack: None,
                },
            );
        }
        let is_bye = req.method == Method::Bye;
        // A NOTIFY (transfer progress) is answered at once, as phones do.
        let is_notify = req.method == Method::Notify;
        self.seen.push(Seen::Request { id: Some(id), req });
        if (is_bye && self.auto_bye) || is_notify {
            self.respond(id, 200, None, now);
        }
    }

    fn drain_events(&mut self, now: Instant) {
        let _ = now;
        while let Some(ev) = self.tx.poll_event() {
            match ev {
                TxEvent::Response { id, response } => {
                    let is_invite_2xx = response.is_success()
                        && response.cseq().map(|c| c.method == Method::Invite) == Ok(true);
                    if is_invite_2xx && self.auto_ack {
                        self.ack_2xx(&response);
                    }
                    self.seen.push(Seen::Response {
                        tx: id,
                        resp: response,
                    });
                }
                TxEvent::Timeout { id } | TxEvent::TransportError { id } => {
                    self.seen.push(Seen::Timeout(id))
                }
                TxEvent::AckTimeout { id } => self.seen.push(Seen::AckTimeout(id)),
                TxEvent::ServerTimeout { .. } => {}
                _ => {}
            }
        }
    }

    /// ACKs a 2xx to our INVITE (§13.2.2.4), learning the dialog from it; a retransmitted
    /// 2xx gets the same ACK again.
    pub fn ack_2xx(&mut self, resp: &Response) {
        let call_id = resp.call_id().unwrap().to_string();
        let seq = resp.cseq().unwrap().seq;
        let via = self.via();
        let leg = self
            .legs
            .get_mut(&call_id)
            .expect("2xx for an unknown call");
        if let Some((acked, data)) = &leg.ack {
            if *acked == seq {
                let data = data.clone();
                self.tx.send_ack(&parse_request(&data), udp(ENGINE_PORT));
                return;
            }
        }
        let to = resp.to().unwrap();
        leg.remote_tag = to.tag().map(str::to_string);
        if let Some(c) = resp.headers.get(&HeaderName::Contact) {
            leg.remote_target = NameAddr::parse(c).unwrap().uri;
        }
        let mut ack = Request::new(Method::Ack, leg.remote_target.clone());
        let h = &mut ack.headers;
        h.push(HeaderName::Via, via);
        h.push(HeaderName::MaxForwards, "70");
        h.push(
            HeaderName::From,
            format!("{};tag={}", leg.local_uri, leg.local_tag),
        );
        h.push(HeaderName::To, resp.headers.get(&HeaderName::To).unwrap());
        h.push(HeaderName::CallId, call_id.clone());
        h.push(HeaderName::CSeq, format!("{seq} ACK"));
        if let Some(body) = &self.ack_body {
            ack.set_body(body.as_bytes().to_vec(), Some("application/sdp"));
        }
        leg.ack = Some((seq, ack.to_bytes()));
        self.tx.send_ack(&ack, udp(ENGINE_PORT));
    }

    // ---- what the phone saw --------------------------------------------------------

    /// Requests received with this method, in order.
    pub fn requests(&self, method: Method) -> Vec<(Option<ServerTxId>, Request)> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Request { id, req } if req.method == method => Some((*id, req.clone())),
                _ => None,
            })
            .collect()
    }

    /// The last request received with this method.
    pub fn last_request(&self, method: Method) -> (Option<ServerTxId>, Request) {
        self.requests(method.clone())
            .pop()
            .unwrap_or_else(|| panic!("{} never received {method}", self.user))
    }

    /// Responses received on client transaction `tx` (retransmitted 2xx included).
    pub fn responses(&self, tx: ClientTxId) -> Vec<Response> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Response { tx: t, resp } if *t == tx => Some(resp.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn statuses(&self, tx: ClientTxId) -> Vec<u16> {
        self.responses(tx).iter().map(|r| r.status).collect()
    }

    /// The first final response on `tx`, if one came.
    pub fn final_response(&self, tx: ClientTxId) -> Option<Response> {
        self.responses(tx).into_iter().find(|r| r.is_final())
    }

    pub fn count(&self, method: Method) -> usize {
        self.requests(method).len()
    }
}

fn strip_tag(na: &NameAddr) -> String {
    let mut na = na.clone();
    na.params.retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    na.to_string()
}

fn parse_request(data: &[u8]) -> Request {
    match parse_datagram(data) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

/// Parses `Digest realm="x", nonce="y", algorithm=MD5, qop="auth"` into lowercase names
/// and unquoted values. Our challenges never put commas inside quoted values.
pub fn parse_challenge(value: &str) -> HashMap<String, String> {
    let rest = value
        .trim()
        .strip_prefix("Digest")
        .expect("a Digest challenge");
    rest.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect()
}

/// Index of a phone in the network.
pub type PhoneId = usize;

/// A datagram in flight.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Simulated time since the start when it was put on the wire.
    pub at: Duration,
    pub from: Target,
    pub to: Target,
    pub data: Vec<u8>,
}

impl Datagram {
    pub fn message(&self) -> Option<Message> {
        parse_datagram(&self.data).ok()
    }
}

type DropRule = Box<dyn FnMut(&Datagram) -> bool>;

/// The engine, the phones and the wire between them.
pub struct Net {
    pub engine: Engine,
    pub now: Instant,
    pub start: Instant,
    pub phones: Vec<Phone>,
    pub events: Vec<EngineEvent>,
    /// Datagrams the engine sent to an address no phone owns.
    pub undeliverable: Vec<Datagram>,
    /// Every datagram dropped by loss or by a rule.
    pub dropped: Vec<Datagram>,
    /// Every datagram delivered, in order (a wire log for assertions and failure output).
    pub delivered: Vec<Datagram>,
    in_flight: VecDeque<Datagram>,
    loss: f64,
    rng: StdRng,
    rules: Vec<DropRule>,
    /// While set, actions queue their datagrams without delivering them (to make two
    /// messages cross on the wire).
    pub hold: bool,
}

impl Net {
    pub fn new(config: EngineConfig, users: Vec<DirectoryUser>) -> Net {
        let now = Instant::now();
        Net {
            engine: Engine::new(config, Directory::new(users), now, START_UNIX),
            now,
            start: now,
            phones: Vec::new(),
            events: Vec::new(),
            undeliverable: Vec::new(),
            dropped: Vec::new(),
            delivered: Vec::new(),
            in_flight: VecDeque::new(),
            loss: 0.0,
            rng: StdRng::seed_from_u64(0),
            rules: Vec::new(),
            hold: false,
        }
    }

    /// The engine with users 101/102/103 (password `secret-<name>`), MD5 only.
    pub fn standard() -> Net {
        Net::with_algorithms(vec![Algorithm::Md5])
    }

    pub fn with_algorithms(algorithms: Vec<Algorithm>) -> Net {
        Net::new(
            config(algorithms),
            vec![
                user("101", Some("1101"), "secret-101"),
                user("102", Some("1102"), "secret-102"),
                user("103", None, "secret-103"),
            ],
        )
    }

    /// The standard users with media anchored (ports 30000-30999): the engine rewrites
    /// SDP and emits media commands, which tests read from `events`.
    pub fn anchored() -> Net {
        let mut cfg = config(vec![Algorithm::Md5]);
        cfg.media = Some(
            switchboard_core::media::MediaConfig::new(
                "127.0.0.1".into(),
                30_000,
                30_999,
                Duration::from_secs(60),
            )
            .unwrap(),
        );
        Net::new(
            cfg,
            vec![
                user("101", Some("1101"), "secret-101"),
                user("102", Some("1102"), "secret-102"),
                user("103", None, "secret-103"),
            ],
        )
    }

    /// Feeds a call-control command, then delivers what it caused.
    pub fn command(
        &mut self,
        command: switchboard_core::Command,
    ) -> Result<switchboard_core::CommandReply, switchboard_core::CommandError> {
        let now = self.now;
        let reply = self.engine.handle_command(command, now);
        self.after_action();
        reply
    }

    /// Drops each datagram with probability `p`, from a seeded generator.
    pub fn set_loss(&mut self, p: f64, seed: u64) {
        self.loss = p;
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Drops every datagram for which `rule` returns true (the rule may count, to drop
    /// only the first one).
    pub fn drop_when(&mut self, rule: impl FnMut(&Datagram) -> bool + 'static) {
        self.rules.push(Box::new(rule));
    }

    pub fn add_phone(&mut self, user: &str, password: &str, port: u16) -> PhoneId {
        self.phones.push(Phone::new(user, password, port));
        self.phones.len() - 1
    }

    pub fn phone(&mut self, p: PhoneId) -> &mut Phone {
        &mut self.phones[p]
    }

    // ---- actions ---------------------------------------------------------------------

    /// Sends a request from phone `p` to the engine in a new client transaction.
    pub fn send(&mut self, p: PhoneId, req: Request) -> ClientTxId {
        let now = self.now;
        let id = self.phones[p].send(req, engine_target(), now);
        self.after_action();
        id
    }

    /// Phone `p` answers its server transaction `id`.
    pub fn respond(&mut self, p: PhoneId, id: ServerTxId, status: u16, body: Option<&str>) {
        let now = self.now;
        self.phones[p].respond(id, status, body, now);
        self.after_action();
    }

    pub fn respond_with(
        &mut self,
        p: PhoneId,
        id: ServerTxId,
        status: u16,
        extra: &[(HeaderName, String)],
        body: Option<&str>,
    ) {
        let now = self.now;
        self.phones[p].respond_with(id, status, extra, body, now);
        self.after_action();
    }

    /// Phone `p` cancels its INVITE transaction `tx`.
    pub fn cancel(&mut self, p: PhoneId, tx: ClientTxId) -> ClientTxId {
        let now = self.now;
        let id = self.phones[p]
            .tx
            .send_cancel(tx, now)
            .expect("nothing to cancel");
        self.after_action();
        id
    }

    /// Phone `p` sends raw bytes to the engine (outside its transaction layer).
    pub fn send_raw(&mut self, p: PhoneId, data: &[u8]) {
        self.in_flight.push_back(Datagram {
            at: self.now - self.start,
            from: self.phones[p].target,
            to: engine_target(),
            data: data.to_vec(),
        });
        self.after_action();
    }

    /// Sends `req`; if challenged, retries once with credentials. Returns the
    /// transaction of the last attempt (which, for an INVITE, may still be ringing).
    pub fn send_authenticated(&mut self, p: PhoneId, req: Request) -> ClientTxId {
        let tx = self.send(p, req.clone());
        assert!(
            self.run_until(|n| n.phones[p].final_response(tx).is_some(), secs(40)),
            "no final response to {}\n{}",
            req.method,
            self.wire_log()
        );
        let resp = self.phones[p].final_response(tx).unwrap();
        if !matches!(resp.status, 401 | 407) {
            return tx;
        }
        let retry = self.phones[p].authorize(&req, &resp);
        self.send(p, retry)
    }

    /// Registers phone `p` (answering the challenge) and returns the final response.
    pub fn register(&mut self, p: PhoneId, expires: u32) -> Response {
        let req = self.phones[p].register(expires);
        let tx = self.send_authenticated(p, req);
        assert!(
            self.run_until(|n| n.phones[p].final_response(tx).is_some(), secs(40)),
            "REGISTER got no final response\n{}",
            self.wire_log()
        );
        self.phones[p].final_response(tx).unwrap()
    }

    /// Engine graceful shutdown.
    pub fn shutdown(&mut self) {
        let now = self.now;
        self.engine.shutdown(now);
        self.after_action();
    }

    fn after_action(&mut self) {
        self.collect();
        if !self.hold {
            self.settle();
        }
    }

    /// Ends a `hold`: delivers everything queued.
    pub fn release(&mut self) {
        self.hold = false;
        self.settle();
    }

    // ---- the wire --------------------------------------------------------------------

    /// Moves every queued output of the engine and the phones onto the wire.
    fn collect(&mut self) {
        let at = self.now - self.start;
        while let Some(t) = self.engine.poll_transmit() {
            self.in_flight.push_back(Datagram {
                at,
                from: engine_target(),
                to: t.target,
                data: t.data.to_vec(),
            });
        }
        while let Some(ev) = self.engine.poll_event() {
            self.events.push(ev);
        }
        for phone in &mut self.phones {
            while let Some(t) = phone.tx.poll_transmit() {
                self.in_flight.push_back(Datagram {
                    at,
                    from: phone.target,
                    to: t.target,
                    data: t.data.to_vec(),
                });
            }
        }
    }

    /// Delivers datagrams (and whatever they cause) until nothing is in flight, without
    /// advancing time.
    pub fn settle(&mut self) {
        let mut steps = 0;
        loop {
            self.collect();
            let Some(d) = self.in_flight.pop_front() else {
                break;
            };
            steps += 1;
            assert!(steps < 100_000, "the network never settles");
            let lost = self.loss > 0.0 && self.rng.gen_bool(self.loss);
            let ruled = self.rules.iter_mut().any(|r| r(&d));
            if lost || ruled {
                self.dropped.push(d);
                continue;
            }
            let now = self.now;
            if d.to == engine_target() {
                self.engine.handle_datagram(&d.data, d.from, now);
            } else if let Some(phone) = self.phones.iter_mut().find(|ph| ph.target == d.to) {
                let msg = parse_datagram(&d.data).unwrap_or_else(|e| {
                    panic!(
                        "engine sent an unparsable datagram ({e}):\n{}",
                        String::from_utf8_lossy(&d.data)
                    )
                });
                phone.handle(msg, d.from, now);
            } else {
                self.undeliverable.push(d.clone());
            }
            self.delivered.push(d);
        }
    }

    /// The earliest timer of the engine or any phone.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.phones
            .iter()
            .filter_map(|p| p.tx.poll_timeout())
            .chain(self.engine.poll_timeout())
            .min()
    }

    /// Fires every timer due at `self.now`, then settles.
    fn fire_timers(&mut self) {
        let now = self.now;
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        for phone in &mut self.phones {
            if phone.tx.poll_timeout().is_some_and(|t| t <= now) {
                phone.tx.handle_timeout(now);
                phone.drain_events(now);
            }
        }
        self.collect();
        self.settle();
    }

    /// Advances simulated time to `until`, stepping through every deadline on the way.
    pub fn advance_to(&mut self, until: Instant) {
        self.settle();
        let mut steps = 0;
        while let Some(at) = self.next_deadline().filter(|t| *t <= until) {
            steps += 1;
            assert!(steps < 100_000, "timers keep firing at {at:?}");
            self.now = self.now.max(at);
            self.fire_timers();
        }
        self.now = self.now.max(until);
    }

    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        self.advance_to(until);
    }

    /// Settles, then steps through deadlines until `cond` holds or `limit` of simulated
    /// time has passed. Returns whether `cond` came true.
    pub fn run_until(&mut self, mut cond: impl FnMut(&Net) -> bool, limit: Duration) -> bool {
        self.settle();
        let until = self.now + limit;
        let mut steps = 0;
        loop {
            if cond(self) {
                return true;
            }
            let Some(at) = self.next_deadline().filter(|t| *t <= until) else {
                return false;
            };
            steps += 1;
            assert!(steps < 100_000, "timers keep firing at {at:?}");
            self.now = self.now.max(at);
            self.fire_timers();
        }
    }

    /// Runs until neither the engine nor any phone has a timer left (or `limit`).
    pub fn run_to_quiet(&mut self, limit: Duration) -> bool {
        self.run_until(
            |n| n.engine.is_idle() && n.phones.iter().all(|p| p.tx.poll_timeout().is_none()),
            limit,
        )
    }

    /// Engine events matching `f`.
    pub fn events_where(&self, f: impl Fn(&EngineEvent) -> bool) -> Vec<EngineEvent> {
        self.events.iter().filter(|e| f(e)).cloned().collect()
    }

    /// The wire log, for failure messages.
    pub fn wire_log(&self) -> String {
        let mut out = String::new();
        for d in &self.delivered {
            let text = String::from_utf8_lossy(&d.data);
            let first = text.lines().next().unwrap_or("");
            let cseq = d
                .message()
                .and_then(|m| m.cseq().ok())
                .map(|c| format!("{} {}", c.seq, c.method))
                .unwrap_or_default();
            out.push_str(&format!(
                "{:.3}s {} -> {}: {first} ({cseq})\n",
                d.at.as_secs_f64(),
                d.from.addr.port(),
                d.to.addr.port()
            ));
        }
        out
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
