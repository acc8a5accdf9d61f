//! SIP trunks: Switchboard as a client of a provider. It registers (digest auth, refresh
//! before expiry, failover through the provider's registrars), places outbound calls
//! through the provider's gateways with the provider's credentials (answering 401/407,
//! trying the next gateway on timeout or 5xx), and recognises inbound calls from a trunk by
//! their source address.
//!
//! Toll fraud is the risk here, so the rules are strict and live in one place: only a
//! route (the dialplan, through [`Router`]) sends a call to a trunk; an unauthenticated
//! caller is challenged before any route is looked at; a call that came in from a trunk is
//! never routed out to a trunk.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchboard_sip::digest::ChallengeParams;
use switchboard_sip::header::NameAddr;
use switchboard_sip::transaction::{new_branch, ClientTxId, Target, Transport};
use switchboard_sip::{HeaderName, Headers, Method, Request, Response, Uri};

use crate::engine::{Engine, EngineEvent};

/// One provider account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkConfig {
    /// How routes name it.
    pub name: String,
    /// The provider's domain: the host of Request-URIs, From and To.
    pub domain: String,
    /// Registrars / gateways, in failover order (resolved by the caller of the engine).
    pub gateways: Vec<SocketAddr>,
    pub transport: Transport,
    /// Account user (From/To of REGISTER, default caller ID).
    pub username: String,
    /// Digest user when it differs from `username`.
    pub auth_username: Option<String>,
    pub password: Option<String>,
    /// Register with the provider (else calls go out and come in by address alone).
    pub register: bool,
    /// Registration lifetime asked for, seconds.
    pub expires: u32,
    /// Caller ID shown on outbound calls unless the route sets one.
    pub caller_id: Option<String>,
    /// Accept calls from the gateways' addresses (providers do not authenticate to us).
    pub inbound: bool,
    /// Recognise inbound calls by the gateways' IP alone (providers that send from many
    /// ports); by default the whole address, IP and port, must match.
    pub match_ip_only: bool,
}

/// What a trunk's registration is doing (for logs, metrics and the API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrunkStatus {
    Registered {
        gateway: SocketAddr,
        expires: u32,
    },
    /// The provider refused us or did not answer; retried at `retry_in`.
    Failed {
        gateway: SocketAddr,
        reason: String,
        retry_in: Duration,
    },
}

/// The state of one trunk's registration client.
#[derive(Debug)]
pub(crate) struct Trunk {
    pub(crate) config: TrunkConfig,
    /// The gateway in use (registrations and new calls go there first).
    pub(crate) gateway: usize,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The last challenge and how many requests answered it (the nonce count).
    challenge: Option<(ChallengeParams, bool, u32)>,
    /// Challenges answered in a row without success (a wrong password stops at 2).
    auth_attempts: u32,
    /// Gateways tried in this round of failures.
    failures: usize,
    pub(crate) registered: bool,
    /// When to send the next REGISTER (refresh or retry).
    pub(crate) next_at: Option<Instant>,
}

impl Trunk {
    pub(crate) fn new(config: TrunkConfig, host: &str, now: Instant) -> Trunk {
        let next_at = config.register.then_some(now);
        Trunk {
            config,
            gateway: 0,
            call_id: crate::new_sip_call_id(host),
            from_tag: crate::new_tag(),
            cseq: 0,
            challenge: None,
            auth_attempts: 0,
            failures: 0,
            registered: false,
            next_at,
        }
    }

    pub(crate) fn target(&self) -> Target {
        Target {
            transport: self.config.transport,
            addr: self.config.gateways[self.gateway % self.config.gateways.len()],
        }
    }

    pub(crate) fn auth_user(&self) -> &str {
        self.config
            .auth_username
            .as_deref()
            .unwrap_or(&self.config.username)
    }

    /// Answers a 401/407 to `req` (a REGISTER or an INVITE): the header to add, or `None`
    /// when we have no password or already failed with these credentials.
    pub(crate) fn authorize(
        &mut self,
        req: &Request,
        resp: &Response,
    ) -> Option<(HeaderName, String)> {
        let password = self.config.password.clone()?;
        let (offer, answer) = if resp.status == 407 {
            (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            )
        } else {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        };
        // Several challenges (one per algorithm): the first we can answer.
        let ch = resp
            .headers
            .get_all(&offer)
            .find_map(|v| ChallengeParams::parse(v).ok())?;
        if self.auth_attempts >= 2 && !ch.stale {
            return None;
        }
        self.auth_attempts += 1;
        let nc = match &self.challenge {
            Some((old, _, n)) if old.nonce == ch.nonce => n + 1,
            _ => 1,
        };
        let cnonce = format!("{:08x}", rand::random::<u32>());
        let value = ch.answer(
            self.auth_user(),
            &password,
            req.method.as_str(),
            &req.uri.to_string(),
            nc,
            &cnonce,
        );
        self.challenge = Some((ch, resp.status == 407, nc));
        Some((answer, value))
    }
}

/// What a route decided for a call (see [`Router`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteDecision {
    /// Ring a user's devices.
    User(String),
    /// Out through a trunk: `number` as the provider should see it.
    Trunk {
        trunk: String,
        number: String,
        caller_id: Option<String>,
    },
    /// Refuse with this status.
    Reject(u16),
    /// No route: 404.
    NotFound,
    /// A dialplan route: the actions in order (see [`crate::plan`]).
    Actions(Vec<crate::plan::CallAction>),
}

/// A call to route.
#[derive(Debug)]
pub struct RouteQuery<'a> {
    /// The authenticated user, or for a call from a trunk its caller's number.
    pub caller: &'a str,
    /// The trunk the call came in on.
    pub from_trunk: Option<&'a str>,
    /// The dialled number (Request-URI user; for a trunk, the DID).
    pub dialled: &'a str,
    pub headers: &'a Headers,
    /// Wall-clock time for time-of-day conditions.
    pub unix: u64,
    /// The calling user's attributes from the directory (`extension`, `display_name`).
    pub caller_attrs: &'a [(String, String)],
}

/// Routing decisions from outside the engine (the dialplan). Pure: no I/O, the time is
/// in the query.
pub trait Router: Send + std::fmt::Debug {
    fn route(&self, query: &RouteQuery<'_>) -> RouteDecision;

    /// Where a menu leads once the caller chose (`digits`), or failed to (`None`: the
    /// retries ran out): the next actions. The default: hang up.
    fn menu_choice(
        &self,
        query: &RouteQuery<'_>,
        menu: &str,
        digits: Option<&str>,
    ) -> RouteDecision {
        let _ = (query, menu, digits);
        RouteDecision::Reject(480)
    }
}

/// A trunk branch of a call: what it needs to retry with credentials or another gateway.
#[derive(Debug, Clone)]
pub(crate) struct TrunkBranch {
    pub(crate) trunk: usize,
    /// The INVITE as first sent (its body and headers are re-sent).
    pub(crate) invite: Request,
    pub(crate) gateways_tried: usize,
}

impl Engine {
    /// The trunk a request came from: by source address (a gateway's IP and port, or its
    /// IP alone with `match_ip_only`), or by registration (sent to the account we
    /// registered, from a gateway's IP: providers often send calls from other ports than
    /// their registrar's).
    pub(crate) fn trunk_by_source(&self, source: Target, req: &Request) -> Option<usize> {
        let ruri_user = req.uri.user_unescaped();
        self.trunks.iter().position(|t| {
            let c = &t.config;
            c.inbound
                && c.gateways.iter().any(|g| {
                    g.ip() == source.addr.ip()
                        && (c.match_ip_only
                            || g.port() == source.addr.port()
                            || (t.registered && ruri_user.as_deref() == Some(c.username.as_str())))
                })
        })
    }

    pub(crate) fn trunk_by_name(&self, name: &str) -> Option<usize> {
        self.trunks.iter().position(|t| t.config.name == name)
    }

    /// Registration state of every trunk, for the API and /metrics.
    pub fn trunk_registered(&self) -> Vec<(String, bool)> {
        self.trunks
            .iter()
            .map(|t| (t.config.name.clone(), t.registered))
            .collect()
    }

    pub(crate) fn trunk_timeouts(&mut self, now: Instant) {
        for i in 0..self.trunks.len() {
            if self.trunks[i].next_at.is_some_and(|t| t <= now) {
                self.trunks[i].next_at = None;
                self.send_trunk_register(i, None, now);
            }
        }
    }

    pub(crate) fn next_trunk_timeout(&self) -> Option<Instant> {
        self.trunks.iter().filter_map(|t| t.next_at).min()
    }

    /// Shutdown: every registered trunk removes its binding (Expires: 0) and stops
    /// refreshing.
    pub(crate) fn unregister_trunks(&mut self, now: Instant) {
        for i in 0..self.trunks.len() {
            self.trunks[i].next_at = None;
            if self.trunks[i].registered {
                self.trunks[i].registered = false;
                self.trunks[i].config.expires = 0;
                self.send_trunk_register(i, None, now);
            }
        }
    }

    fn send_trunk_register(&mut self, i: usize, auth: Option<(HeaderName, String)>, now: Instant) {
        let local = self.config.local.clone();
        let t = &mut self.trunks[i];
        t.cseq += 1;
        let target = t.target();
        let domain = t.config.domain.clone();
        let user = t.config.username.clone();
        let mut req = Request::new(Method::Register, Uri::sip(None, &domain, None));
        let h = &mut req.headers;
        h.push(HeaderName::Via, local.via(target, &new_branch()));
        h.push(HeaderName::MaxForwards, "70");
        h.push(
            HeaderName::From,
            format!("<sip:{user}@{domain}>;tag={}", t.from_tag),
        );
        h.push(HeaderName::To, format!("<sip:{user}@{domain}>"));
        h.push(HeaderName::CallId, t.call_id.clone());
        h.push(HeaderName::CSeq, format!("{} REGISTER", t.cseq));
        let mut contact = Uri::sip(Some(&user), &local.host, Some(local.port));
        if target.transport == Transport::Tcp {
            contact
                .params
                .push(switchboard_sip::Param::new("transport", Some("tcp")));
        }
        h.push(HeaderName::Contact, format!("<{contact}>"));
        h.push(HeaderName::Expires, t.config.expires.to_string());
        h.push(HeaderName::UserAgent, self.config.user_agent.clone());
        if let Some((name, value)) = auth {
            h.push(name, value);
        }
        if let Some(tx) = self.send_request(req.clone(), target, now) {
            self.trunk_txs.insert(tx, (i, req));
        }
    }

    /// A response to one of our REGISTERs (`None`: the transaction timed out or the
    /// transport failed).
    pub(crate) fn on_trunk_register_response(
        &mut self,
        id: ClientTxId,
        resp: Option<Response>,
        now: Instant,
    ) {
        if resp.as_ref().is_some_and(|r| r.status < 200) {
            return;
        }
        let Some((i, req)) = self.trunk_txs.remove(&id) else {
            return;
        };
        let status = resp.as_ref().map_or(408, |r| r.status);
        match (status, resp) {
            (200..=299, _) if self.trunks[i].config.expires == 0 => {
                tracing::info!(trunk = %self.trunks[i].config.name, "trunk unregistered");
            }
            (401 | 407, Some(resp)) if self.trunks[i].config.expires == 0 => {
                if let Some(auth) = self.trunks[i].authorize(&req, &resp) {
                    self.send_trunk_register(i, Some(auth), now);
                }
            }
            (_, _) if self.trunks[i].config.expires == 0 => {}
            (200..=299, Some(resp)) => {
                let asked = self.trunks[i].config.expires;
                let granted = granted_expires(&resp, &self.config.local).unwrap_or(asked);
                let t = &mut self.trunks[i];
                t.registered = granted > 0;
                t.auth_attempts = 0;
                t.failures = 0;
                // Refresh at half the lifetime (never sooner than 5 s): a lost refresh
                // still leaves time for a retry before the binding lapses.
                let refresh = Duration::from_secs(u64::from(granted / 2).max(5));
                t.next_at = Some(now + refresh);
                let gateway = t.target().addr;
                tracing::info!(trunk = %t.config.name, %gateway, expires = granted, "trunk registered");
                self.events.push_back(EngineEvent::Trunk {
                    trunk: self.trunks[i].config.name.clone(),
                    status: TrunkStatus::Registered {
                        gateway,
                        expires: granted,
                    },
                });
            }
            (401 | 407, Some(resp)) => match self.trunks[i].authorize(&req, &resp) {
                Some(auth) => self.send_trunk_register(i, Some(auth), now),
                None => self.trunk_failed(i, "credentials refused (401/407)".into(), false, now),
            },
            (423, Some(resp)) => {
                let min = resp
                    .headers
                    .get(&HeaderName::MinExpires)
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(3600);
                self.trunks[i].config.expires = min;
                self.send_trunk_register(i, None, now);
            }
            (s, _) => {
                // Timeout, transport error, 5xx, 6xx, another 4xx: try the next gateway.
                self.trunk_failed(i, format!("status {s}"), true, now);
            }
        }
    }

    fn trunk_failed(&mut self, i: usize, reason: String, failover: bool, now: Instant) {
        let t = &mut self.trunks[i];
        t.registered = false;
        t.auth_attempts = 0;
        let gateway = t.target().addr;
        let n = t.config.gateways.len();
        t.failures += 1;
        let retry_in = if failover && t.failures < n {
            // Another gateway of this round: at once.
            t.gateway = (t.gateway + 1) % n;
            Duration::ZERO
        } else {
            t.failures = 0;
            t.gateway = (t.gateway + 1) % n;
            Duration::from_secs(30)
        };
        t.next_at = Some(now + retry_in);
        tracing::warn!(trunk = %t.config.name, %gateway, %reason, ?retry_in, "trunk registration failed");
        self.events.push_back(EngineEvent::Trunk {
            trunk: t.config.name.clone(),
            status: TrunkStatus::Failed {
                gateway,
                reason,
                retry_in,
            },
        });
    }

    /// The INVITE of a call going out through trunk `i` to `number`: its dialog and the
    /// request (without credentials; a 401/407 is answered by [`Engine::trunk_retry`]).
    pub(crate) fn trunk_invite(
        &mut self,
        i: usize,
        number: &str,
        caller_id: Option<&str>,
        display: Option<String>,
    ) -> (crate::dialog::Dialog, Request) {
        let local = self.config.local.clone();
        let t = &self.trunks[i];
        let domain = t.config.domain.clone();
        let from_user = caller_id
            .map(str::to_string)
            .or_else(|| t.config.caller_id.clone())
            .unwrap_or_else(|| t.config.username.clone());
        let mut local_uri = NameAddr::new(Uri::sip(Some(&from_user), &domain, None));
        local_uri.display_name = display;
        let mut dialog = crate::dialog::Dialog {
            call_id: crate::new_sip_call_id(&local.host),
            local_tag: crate::new_tag(),
            remote_tag: None,
            local_uri,
            remote_uri: NameAddr::new(Uri::sip(Some(number), &domain, None)),
            remote_target: Uri::sip(Some(number), &domain, None),
            route_set: Vec::new(),
            local_cseq: 0,
            we_chose_call_id: true,
            target: t.target(),
        };
        let invite = dialog.request(Method::Invite, &local, &new_branch());
        (dialog, invite)
    }

    /// Sends a trunk INVITE again, with credentials answering `challenge` or to the next
    /// gateway; returns the new transaction and the CSeq used.
    pub(crate) fn trunk_retry(
        &mut self,
        branch: &mut TrunkBranch,
        dialog: &mut crate::dialog::Dialog,
        challenge: Option<&Response>,
        now: Instant,
    ) -> Option<(ClientTxId, u32)> {
        let local = self.config.local.clone();
        let t = &mut self.trunks[branch.trunk];
        let auth = match challenge {
            Some(resp) => Some(t.authorize(&branch.invite, resp)?),
            None => {
                branch.gateways_tried += 1;
                if branch.gateways_tried >= t.config.gateways.len() {
                    return None;
                }
                t.gateway = (t.gateway + 1) % t.config.gateways.len();
                dialog.target = t.target();
                None
            }
        };
        let mut req = dialog.request(Method::Invite, &local, &new_branch());
        for h in branch.invite.headers.iter() {
            let own = matches!(
                h.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
                    | HeaderName::MaxForwards
                    | HeaderName::Contact
                    | HeaderName::Authorization
                    | HeaderName::ProxyAuthorization
            );
            if !own {
                req.headers.0.push(h.clone());
            }
        }
        if let Some((name, value)) = auth {
            req.headers.push(name, value);
        }
        req.body = branch.invite.body.clone();
        let cseq = dialog.local_cseq;
        let target = dialog.target;
        let tx = self.send_request(req, target, now)?;
        Some((tx, cseq))
    }
}

/// The lifetime the registrar granted us: the `expires` of our Contact in the 200, else
/// its Expires header (RFC 3261 §10.2.4).
fn granted_expires(resp: &Response, local: &crate::dialog::LocalAddress) -> Option<u32> {
    let ours = resp
        .headers
        .get_all(&HeaderName::Contact)
        .filter_map(|c| NameAddr::parse(c).ok())
        .find(|na| na.uri.host == local.host && na.uri.port.unwrap_or(5060) == local.port);
    ours.and_then(|na| na.expires()).or_else(|| {
        resp.headers
            .get(&HeaderName::Expires)
            .and_then(|v| v.trim().parse().ok())
    })
}
