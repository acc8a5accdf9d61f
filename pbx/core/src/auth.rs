//! Digest authentication of requests (RFC 3261 §22, RFC 7616, RFC 8760) on behalf of the
//! registrar (401 / WWW-Authenticate) and of the B2BUA (407 / Proxy-Authenticate).
//! Owns the nonce manager; decides, never does I/O.

use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard_sip::digest::{self, Algorithm, Credentials, NonceManager, Verdict};
use switchboard_sip::{HeaderName, Request, Response};

use crate::directory::{Directory, DirectoryUser};

/// Which challenge a request gets: 401 for a registrar (UAS), 407 for a proxy-like B2BUA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Www,
    Proxy,
}

impl Challenge {
    fn status(self) -> u16 {
        match self {
            Challenge::Www => 401,
            Challenge::Proxy => 407,
        }
    }
    fn challenge_header(self) -> HeaderName {
        match self {
            Challenge::Www => HeaderName::WwwAuthenticate,
            Challenge::Proxy => HeaderName::ProxyAuthenticate,
        }
    }
    fn credentials_header(self) -> HeaderName {
        match self {
            Challenge::Www => HeaderName::Authorization,
            Challenge::Proxy => HeaderName::ProxyAuthorization,
        }
    }
}

/// What became of a request's credentials.
#[derive(Debug)]
pub enum AuthOutcome {
    Authenticated(Arc<DirectoryUser>),
    /// Answer with this response (a 401/407 challenge, or 403 for a replay).
    Reject(Response, AuthFailure),
}

/// Why a request was not authenticated, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    NoCredentials,
    Malformed,
    UnknownUser,
    WrongRealm,
    StaleNonce,
    BadNonce,
    Replay,
    WrongPassword,
}

pub struct Authenticator {
    realm: String,
    algorithms: Vec<Algorithm>,
    nonces: NonceManager,
}

impl Authenticator {
    /// `algorithms` is the challenge order: MD5 must come first for SIPp and baresip
    /// (../shared/INTEROP.md), so the default is MD5 alone.
    pub fn new(realm: &str, algorithms: Vec<Algorithm>, nonces: NonceManager) -> Authenticator {
        Authenticator {
            realm: realm.to_string(),
            algorithms,
            nonces,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Checks the request's credentials for our realm. `now_unix` drives nonce expiry.
    pub fn authenticate(
        &mut self,
        req: &Request,
        kind: Challenge,
        directory: &Directory,
        now_unix: u64,
    ) -> AuthOutcome {
        let header = kind.credentials_header();
        // A request may carry credentials for several realms (RFC 3261 §22.3); use ours.
        let mut creds: Option<Credentials> = None;
        let mut malformed = false;
        for value in req.headers.get_all(&header) {
            match Credentials::parse(value) {
                Ok(c) if c.realm == self.realm => {
                    creds = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(_) => malformed = true,
            }
        }
        let Some(creds) = creds else {
            let why = if malformed {
                AuthFailure::Malformed
            } else {
                AuthFailure::NoCredentials
            };
            return AuthOutcome::Reject(self.challenge(req, kind, false, now_unix), why);
        };
        let Some(user) = directory.by_name(&creds.username) else {
            return AuthOutcome::Reject(
                self.challenge(req, kind, false, now_unix),
                AuthFailure::UnknownUser,
            );
        };
        if user.realm != self.realm {
            return AuthOutcome::Reject(
                self.challenge(req, kind, false, now_unix),
                AuthFailure::WrongRealm,
            );
        }
        if !self.algorithms.contains(&creds.algorithm.base()) {
            return AuthOutcome::Reject(
                self.challenge(req, kind, false, now_unix),
                AuthFailure::Malformed,
            );
        }
        let ha1 = match creds.algorithm.base() {
            Algorithm::Sha256 => &user.ha1_sha256,
            _ => &user.ha1_md5,
        };
        // The nonce manager checks the response before touching nonce state, so a
        // guesser cannot burn the legitimate client's nonce counts.
        match self
            .nonces
            .authenticate(&creds, req.method.as_str(), ha1, wall(now_unix))
        {
            Verdict::Authorized => AuthOutcome::Authenticated(user.clone()),
            Verdict::Stale => AuthOutcome::Reject(
                self.challenge(req, kind, true, now_unix),
                AuthFailure::StaleNonce,
            ),
            Verdict::Replayed => AuthOutcome::Reject(
                self.challenge(req, kind, true, now_unix),
                AuthFailure::Replay,
            ),
            Verdict::BadResponse => AuthOutcome::Reject(
                self.challenge(req, kind, false, now_unix),
                AuthFailure::WrongPassword,
            ),
        }
    }

    /// A 401/407 with one challenge per enabled algorithm, in the configured order.
    pub fn challenge(
        &mut self,
        req: &Request,
        kind: Challenge,
        stale: bool,
        now_unix: u64,
    ) -> Response {
        let status = kind.status();
        let mut resp = Response::for_request(
            req,
            status,
            switchboard_sip::message::reason_phrase(status),
            Some(&crate::new_tag()),
        );
        let nonce = self.nonces.issue(wall(now_unix));
        for alg in &self.algorithms {
            resp.headers.push(
                kind.challenge_header(),
                digest::challenge(&self.realm, &nonce, *alg, stale, None),
            );
        }
        resp
    }
}

fn wall(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}
