//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760): HA1 values,
//! parsing `Authorization`/`Proxy-Authorization` values, building challenges, checking
//! responses, and self-validating nonces with replay protection.
//!
//! Like the rest of this crate it owns no clock and no socket: the caller passes `now`.
//! It never sees or keeps a password beyond [`ha1`]; the store keeps HA1 values only.
//!
//! # Drive contract
//!
//! A registrar (or proxy) holds one [`NonceManager`] per realm and, for each request:
//! 1. No credentials, or [`Credentials::parse`] fails (an unknown scheme such as RFC 4475
//!    TC_REGAUT01, an algorithm or qop we do not support): answer 401/407 with fresh
//!    [`challenge`]s from [`NonceManager::issue`].
//! 2. Check `creds.realm` is ours (and, RFC 7616 §3.4, that `creds.uri` names the
//!    Request-URI), look the user up by `creds.username`, take the stored HA1 for
//!    `creds.algorithm.base()` (unknown user: challenge again, exactly as for a wrong
//!    password, so that user names cannot be probed).
//! 3. Call [`NonceManager::authenticate`]; on [`Verdict::Authorized`] go on; otherwise
//!    challenge again with `stale = verdict.stale()`.
//!
//! # Which algorithms to offer (interop)
//!
//! SIPp 3.6.1 and baresip 1.0.0 fail when a server lists a SHA-256 challenge *before* the
//! MD5 one (they take the first header and cannot do SHA-256, or misparse it). So a server
//! offers MD5 only by default, and when SHA-256 is enabled it sends two challenge headers,
//! MD5 first and SHA-256 second: [`offered_algorithms`] gives that order; keep it.
//! `-sess` variants are parsed and verified (RFC 7616 §3.4.2) but never offered.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// A digest hash algorithm (RFC 7616 §3.3, RFC 8760 for SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    /// Parses an `algorithm=` value, case-insensitively. `None` for algorithms we do not
    /// implement (such as `SHA-512-256`).
    pub fn from_token(s: &str) -> Option<Algorithm> {
        let alg = match s.to_ascii_uppercase().as_str() {
            "MD5" => Algorithm::Md5,
            "MD5-SESS" => Algorithm::Md5Sess,
            "SHA-256" => Algorithm::Sha256,
            "SHA-256-SESS" => Algorithm::Sha256Sess,
            _ => return None,
        };
        Some(alg)
    }

    /// The token as written on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// True for the `-sess` variants, whose HA1 also covers nonce and cnonce.
    pub fn is_session(&self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// The same hash without `-sess`: the algorithm whose stored HA1 a `-sess` response
    /// starts from.
    pub fn base(&self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        }
    }

    /// Lowercase hex of the hash of `data`.
    fn hash_hex(&self, data: &str) -> String {
        match self.base() {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            _ => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The algorithms a server offers, in the order to send their challenges: MD5 alone by
/// default; MD5 then SHA-256 when SHA-256 is enabled. Never SHA-256 first (see module
/// docs: SIPp and baresip fail on that).
pub fn offered_algorithms(sha256_enabled: bool) -> &'static [Algorithm] {
    if sha256_enabled {
        &[Algorithm::Md5, Algorithm::Sha256]
    } else {
        &[Algorithm::Md5]
    }
}

/// HA1 = H(username ":" realm ":" password), lowercase hex. For a `-sess` algorithm this
/// is the stored base value; [`verify`] derives the session HA1 from it.
pub fn ha1(alg: Algorithm, user: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(&format!("{user}:{realm}:{password}"))
}

/// Why an `Authorization` value could not be used. Each one means "challenge again"
/// (401/407), except that a malformed value may also be answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    #[error("authorization scheme {0:?} is not Digest")]
    UnsupportedScheme(String),
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("unsupported digest qop {0:?}")]
    UnsupportedQop(String),
    #[error("missing digest parameter {0}")]
    MissingParam(&'static str),
    #[error("digest parameter {0} appears twice")]
    DuplicateParam(&'static str),
    #[error("malformed digest parameter {0}")]
    BadParam(&'static str),
    #[error("malformed digest credentials: {0}")]
    Syntax(&'static str),
}

impl DigestError {
    /// The status a registrar answers with: a new challenge for anything it cannot use.
    /// The caller picks 401 or 407 (proxy); this returns 401.
    pub fn status(&self) -> u16 {
        401
    }
}

/// The quality of protection in use. Only `auth` is supported: `auth-int` needs the body
/// and no SIP client we meet uses it, so it is refused by [`Credentials::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
}

/// Parsed digest credentials (RFC 7616 §3.4, RFC 3261 §25 `digest-response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// Lowercased hex.
    pub response: String,
    /// `MD5` when the header has no `algorithm` parameter (RFC 7616 §3.4).
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    /// `None`: the RFC 2069 form, without cnonce and nc.
    pub qop: Option<Qop>,
    /// The nonce count exactly as sent (8 hex digits); it goes into the hash as text.
    pub nc: Option<String>,
}

impl Credentials {
    /// Parses an `Authorization` or `Proxy-Authorization` header value. Parameter names are
    /// case-insensitive and may come in any order; unknown parameters are ignored; values
    /// may be quoted strings (with `\` escapes) or tokens.
    pub fn parse(value: &str) -> Result<Credentials, DigestError> {
        let value = value.trim_start();
        let scheme_end = value
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(value.len());
        let scheme = &value[..scheme_end];
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::UnsupportedScheme(scheme.to_string()));
        }

        let mut fields = Fields::default();
        let mut cur = Cursor {
            s: &value[scheme_end..],
        };
        loop {
            cur.skip_ws();
            if cur.is_empty() {
                break;
            }
            // Empty list elements (`a=1,,b=2`) are allowed by the #rule.
            if cur.eat(',') {
                continue;
            }
            let name = cur
                .token(false)
                .ok_or(DigestError::Syntax("expected a parameter name"))?;
            cur.skip_ws();
            if !cur.eat('=') {
                return Err(DigestError::Syntax("expected '=' after a parameter name"));
            }
            cur.skip_ws();
            let val = if cur.peek() == Some('"') {
                cur.quoted()?
            } else {
                cur.token(true)
                    .ok_or(DigestError::Syntax("expected a parameter value"))?
                    .to_string()
            };
            fields.set(name, val)?;
            cur.skip_ws();
            if !cur.is_empty() && !cur.eat(',') {
                return Err(DigestError::Syntax("expected ',' between parameters"));
            }
        }
        fields.finish()
    }

    /// The nonce count as a number, when there is one.
    pub fn nonce_count(&self) -> Option<u32> {
        self.nc
            .as_deref()
            .and_then(|nc| u32::from_str_radix(nc, 16).ok())
    }
}

#[derive(Default)]
struct Fields {
    username: Option<String>,
    realm: Option<String>,
    nonce: Option<String>,
    uri: Option<String>,
    response: Option<String>,
    algorithm: Option<String>,
    cnonce: Option<String>,
    opaque: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
}

impl Fields {
    fn set(&mut self, name: &str, value: String) -> Result<(), DigestError> {
        let (slot, label) = match name.to_ascii_lowercase().as_str() {
            "username" => (&mut self.username, "username"),
            "realm" => (&mut self.realm, "realm"),
            "nonce" => (&mut self.nonce, "nonce"),
            "uri" => (&mut self.uri, "uri"),
            "response" => (&mut self.response, "response"),
            "algorithm" => (&mut self.algorithm, "algorithm"),
            "cnonce" => (&mut self.cnonce, "cnonce"),
            "opaque" => (&mut self.opaque, "opaque"),
            "qop" => (&mut self.qop, "qop"),
            "nc" => (&mut self.nc, "nc"),
            _ => return Ok(()),
        };
        if slot.is_some() {
            return Err(DigestError::DuplicateParam(label));
        }
        *slot = Some(value);
        Ok(())
    }

    fn finish(self) -> Result<Credentials, DigestError> {
        let algorithm = match self.algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        let qop = match self.qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
            Some(q) => return Err(DigestError::UnsupportedQop(q)),
        };
        let response = self
            .response
            .ok_or(DigestError::MissingParam("response"))?
            .to_ascii_lowercase();
        if response.is_empty() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DigestError::BadParam("response"));
        }
        if let Some(nc) = &self.nc {
            if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DigestError::BadParam("nc"));
            }
        }
        if qop.is_some() {
            // RFC 7616 §3.4: with qop, cnonce and nc are required.
            if self.cnonce.is_none() {
                return Err(DigestError::MissingParam("cnonce"));
            }
            if self.nc.is_none() {
                return Err(DigestError::MissingParam("nc"));
            }
        } else if algorithm.is_session() && self.cnonce.is_none() {
            return Err(DigestError::MissingParam("cnonce"));
        }
        Ok(Credentials {
            username: self.username.ok_or(DigestError::MissingParam("username"))?,
            realm: self.realm.ok_or(DigestError::MissingParam("realm"))?,
            nonce: self.nonce.ok_or(DigestError::MissingParam("nonce"))?,
            uri: self.uri.ok_or(DigestError::MissingParam("uri"))?,
            response,
            algorithm,
            cnonce: self.cnonce,
            opaque: self.opaque,
            qop,
            nc: self.nc,
        })
    }
}

struct Cursor<'a> {
    s: &'a str,
}

impl<'a> Cursor<'a> {
    fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    fn peek(&self) -> Option<char> {
        self.s.chars().next()
    }

    fn skip_ws(&mut self) {
        // Folded lines (CRLF + WSP) count as whitespace too (RFC 3261 §7.3.1 LWS).
        self.s = self.s.trim_start_matches([' ', '\t', '\r', '\n']);
    }

    fn eat(&mut self, c: char) -> bool {
        match self.s.strip_prefix(c) {
            Some(rest) => {
                self.s = rest;
                true
            }
            None => false,
        }
    }

    /// An RFC 3261 `token`. For values it also takes `/ : @ ? & $ =`, which some clients
    /// leave unquoted in `uri` and in base64 nonces (lenient on input).
    fn token(&mut self, value: bool) -> Option<&'a str> {
        let end = self
            .s
            .find(|c: char| {
                !(c.is_ascii_alphanumeric()
                    || "-.!%*_+`'~".contains(c)
                    || (value && "/:@?&$=".contains(c)))
            })
            .unwrap_or(self.s.len());
        if end == 0 {
            return None;
        }
        let (tok, rest) = self.s.split_at(end);
        self.s = rest;
        Some(tok)
    }

    fn quoted(&mut self) -> Result<String, DigestError> {
        debug_assert_eq!(self.peek(), Some('"'));
        let mut out = String::new();
        let mut chars = self.s[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.s = &self.s[1 + i + 1..];
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                _ => out.push(c),
            }
        }
        Err(DigestError::Syntax("unterminated quoted string"))
    }
}

/// Quotes `s` as an RFC 3261 quoted-string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A challenge as a client reads it (`WWW-Authenticate` / `Proxy-Authenticate`): what
/// Switchboard needs to register with a provider or place calls through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeParams {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    /// The server offers `qop=auth` (then we must use it, RFC 7616 §3.3).
    pub qop_auth: bool,
    pub opaque: Option<String>,
    /// The previous nonce was only stale: retry with the new one.
    pub stale: bool,
}

impl ChallengeParams {
    /// Parses one challenge header value. Unknown parameters are ignored; a challenge
    /// that offers only `auth-int` or an unknown algorithm is refused.
    pub fn parse(value: &str) -> Result<ChallengeParams, DigestError> {
        let value = value.trim_start();
        let scheme_end = value
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(value.len());
        let scheme = &value[..scheme_end];
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::UnsupportedScheme(scheme.to_string()));
        }
        let (mut realm, mut nonce, mut algorithm, mut qop, mut opaque, mut stale) =
            (None, None, None, None, None, false);
        let mut cur = Cursor {
            s: &value[scheme_end..],
        };
        loop {
            cur.skip_ws();
            if cur.is_empty() {
                break;
            }
            if cur.eat(',') {
                continue;
            }
            let name = cur
                .token(false)
                .ok_or(DigestError::Syntax("expected a parameter name"))?
                .to_ascii_lowercase();
            cur.skip_ws();
            if !cur.eat('=') {
                return Err(DigestError::Syntax("expected '=' after a parameter name"));
            }
            cur.skip_ws();
            let val = if cur.peek() == Some('"') {
                cur.quoted()?
            } else {
                cur.token(true)
                    .ok_or(DigestError::Syntax("expected a parameter value"))?
                    .to_string()
            };
            match name.as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "algorithm" => algorithm = Some(val),
                "qop" => qop = Some(val),
                "opaque" => opaque = Some(val),
                "stale" => stale = val.eq_ignore_ascii_case("true"),
                _ => {}
            }
            cur.skip_ws();
            if !cur.is_empty() && !cur.eat(',') {
                return Err(DigestError::Syntax("expected ',' between parameters"));
            }
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_token(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        let qop_auth = match &qop {
            None => false,
            Some(q) => {
                let auth = q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth"));
                if !auth {
                    return Err(DigestError::UnsupportedQop(q.clone()));
                }
                true
            }
        };
        Ok(ChallengeParams {
            realm: realm.ok_or(DigestError::MissingParam("realm"))?,
            nonce: nonce.ok_or(DigestError::MissingParam("nonce"))?,
            algorithm,
            qop_auth,
            opaque,
            stale,
        })
    }

    /// The `Authorization` / `Proxy-Authorization` value answering this challenge for
    /// `method` on `uri`, as nonce use number `nc` with client nonce `cnonce`.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let mut creds = Credentials {
            username: username.to_string(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            uri: uri.to_string(),
            response: String::new(),
            algorithm: self.algorithm,
            cnonce: (self.qop_auth || self.algorithm.is_session()).then(|| cnonce.to_string()),
            opaque: self.opaque.clone(),
            qop: self.qop_auth.then_some(Qop::Auth),
            nc: self.qop_auth.then(|| format!("{nc:08x}")),
        };
        let ha1 = ha1(self.algorithm.base(), username, &self.realm, password);
        creds.response = expected_response(&creds, method, &ha1);
        let mut out = format!(
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            quote(&creds.response),
            self.algorithm.as_str()
        );
        if let Some(c) = &creds.cnonce {
            out.push_str(&format!(", cnonce={}", quote(c)));
        }
        if let (Some(_), Some(nc)) = (creds.qop, &creds.nc) {
            out.push_str(&format!(", qop=auth, nc={nc}"));
        }
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque={}", quote(o)));
        }
        out
    }
}

/// Builds a `WWW-Authenticate` / `Proxy-Authenticate` value offering `qop="auth"`.
/// Send one header per algorithm, in the order of [`offered_algorithms`].
pub fn challenge(
    realm: &str,
    nonce: &str,
    alg: Algorithm,
    stale: bool,
    opaque: Option<&str>,
) -> String {
    let mut out = format!(
        "Digest realm={}, nonce={}, algorithm={}, qop=\"auth\"",
        quote(realm),
        quote(nonce),
        alg.as_str()
    );
    if let Some(opaque) = opaque {
        out.push_str(", opaque=");
        out.push_str(&quote(opaque));
    }
    if stale {
        out.push_str(", stale=true");
    }
    out
}

/// The response the client should have sent, for these credentials and this HA1 (the
/// stored `H(user:realm:password)` of `creds.algorithm.base()`).
pub fn expected_response(creds: &Credentials, method: &str, ha1: &str) -> String {
    let alg = creds.algorithm;
    let cnonce = creds.cnonce.as_deref().unwrap_or("");
    let ha1 = if alg.is_session() {
        // RFC 7616 §3.4.2: H(H(user:realm:password) ":" nonce ":" cnonce).
        alg.hash_hex(&format!("{ha1}:{}:{cnonce}", creds.nonce))
    } else {
        ha1.to_string()
    };
    let ha2 = alg.hash_hex(&format!("{method}:{}", creds.uri));
    match creds.qop {
        Some(Qop::Auth) => alg.hash_hex(&format!(
            "{ha1}:{}:{}:{cnonce}:auth:{ha2}",
            creds.nonce,
            creds.nc.as_deref().unwrap_or("")
        )),
        // RFC 2069 form.
        None => alg.hash_hex(&format!("{ha1}:{}:{ha2}", creds.nonce)),
    }
}

/// True when `creds.response` is right for `method` and the stored `ha1`. Compares in
/// constant time. Does not look at the nonce's age or reuse: see
/// [`NonceManager::authenticate`].
pub fn verify(creds: &Credentials, method: &str, ha1: &str) -> bool {
    constant_time_eq(
        expected_response(creds, method, &ha1.to_ascii_lowercase()).as_bytes(),
        creds.response.as_bytes(),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // The length is not secret (it follows from the algorithm).
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104), written out to keep the dependency list short.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The outcome of [`NonceManager::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right response, fresh nonce, nonce count not seen before.
    Authorized,
    /// Right response but the nonce expired, was not issued by this manager (a restart
    /// with a new secret) or was forgotten under load: challenge again with `stale=true`,
    /// and the client retries without asking its user.
    Stale,
    /// Right response but its nonce count was not above the highest one seen for this
    /// nonce (a replay, or a client reusing a nonce without qop): challenge again with
    /// `stale=true` (harmless: a replayer cannot answer the new nonce).
    Replayed,
    /// Wrong response (wrong password, wrong HA1, tampered parameters): challenge again
    /// without `stale`.
    BadResponse,
}

impl Verdict {
    pub fn is_authorized(&self) -> bool {
        matches!(self, Verdict::Authorized)
    }

    /// Whether the next challenge carries `stale=true`.
    pub fn stale(&self) -> bool {
        matches!(self, Verdict::Stale | Verdict::Replayed)
    }
}

/// Nonce lifetime by default, in seconds.
pub const DEFAULT_NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// How many used nonces are tracked for replay protection by default.
pub const DEFAULT_MAX_TRACKED_NONCES: usize = 65_536;

/// Length of the MAC kept in a nonce, in bytes (128 bits is plenty against forgery).
const MAC_LEN: usize = 16;

/// Issues self-validating nonces and remembers which nonce counts were used.
///
/// A nonce is hex of `timestamp (8 bytes) | sequence (8 bytes) | HMAC-SHA256(secret,
/// timestamp | sequence)[..16]`: checking one needs no state, so unauthenticated floods of
/// challenges cost no memory. State is only kept for nonces used with a *right* response
/// (the highest `nc` per nonce), at most `max_tracked` entries; when that is full the
/// earliest-expiring entry is dropped and every nonce issued at or before its time is
/// treated as stale from then on, so forgetting never reopens a replay.
pub struct NonceManager {
    secret: Vec<u8>,
    lifetime: Duration,
    max_tracked: usize,
    sequence: u64,
    /// Highest nonce count accepted, per nonce.
    tracked: HashMap<String, u32>,
    by_expiry: BTreeSet<(u64, String)>,
    /// Nonces issued at or before this unix time are stale (see struct docs).
    floor: Option<u64>,
}

impl fmt::Debug for NonceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("NonceManager")
            .field("lifetime", &self.lifetime)
            .field("max_tracked", &self.max_tracked)
            .field("tracked", &self.tracked.len())
            .finish_non_exhaustive()
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl NonceManager {
    /// A manager with this secret (keep it across restarts so nonces stay valid, or let
    /// clients see `stale=true` once), a 300 s lifetime and the default tracking cap.
    pub fn new(secret: impl Into<Vec<u8>>) -> NonceManager {
        NonceManager {
            secret: secret.into(),
            lifetime: DEFAULT_NONCE_LIFETIME,
            max_tracked: DEFAULT_MAX_TRACKED_NONCES,
            // A random start keeps nonces distinct across restarts with the same secret.
            sequence: rand::random(),
            tracked: HashMap::new(),
            by_expiry: BTreeSet::new(),
            floor: None,
        }
    }

    /// A manager with a random 32-byte secret.
    pub fn with_random_secret() -> NonceManager {
        NonceManager::new(rand::random::<[u8; 32]>().to_vec())
    }

    /// Sets how long a nonce is accepted after it was issued.
    pub fn with_lifetime(mut self, lifetime: Duration) -> NonceManager {
        self.lifetime = lifetime;
        self
    }

    /// Sets how many used nonces are remembered (at least 1).
    pub fn with_max_tracked(mut self, max: usize) -> NonceManager {
        self.max_tracked = max.max(1);
        self
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How many used nonces are remembered right now.
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// A new nonce, issued at `now`.
    pub fn issue(&mut self, now: SystemTime) -> String {
        self.sequence = self.sequence.wrapping_add(1);
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&unix_seconds(now).to_be_bytes());
        body[8..].copy_from_slice(&self.sequence.to_be_bytes());
        let mac = hmac_sha256(&self.secret, &body);
        let mut nonce = hex::encode(body);
        nonce.push_str(&hex::encode(&mac[..MAC_LEN]));
        nonce
    }

    /// The issue time of a nonce this manager made, or `None` when it is not one (bad
    /// format or MAC, e.g. from before a restart with another secret).
    pub fn issued_at(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != 2 * (16 + MAC_LEN) {
            return None;
        }
        let raw = hex::decode(nonce).ok()?;
        let (body, mac) = raw.split_at(16);
        let expected = hmac_sha256(&self.secret, body);
        if !constant_time_eq(&expected[..MAC_LEN], mac) {
            return None;
        }
        Some(u64::from_be_bytes(body[..8].try_into().ok()?))
    }

    /// True when `nonce` was issued here and has not expired at `now` (no replay check).
    pub fn is_fresh(&self, nonce: &str, now: SystemTime) -> bool {
        let now = unix_seconds(now);
        self.issued_at(nonce)
            .is_some_and(|issued| self.fresh_at(issued, now))
    }

    fn fresh_at(&self, issued: u64, now: u64) -> bool {
        // A nonce from the future (clock stepped back) is refused: it would live too long.
        issued <= now
            && now < issued.saturating_add(self.lifetime.as_secs())
            && !matches!(self.floor, Some(floor) if issued <= floor)
    }

    /// Checks credentials against the stored `ha1` and the nonce state, and records the
    /// nonce count when they are accepted. See [`Verdict`] for what to answer.
    ///
    /// Without qop (RFC 2069) there is no nonce count: each nonce is then good once.
    pub fn authenticate(
        &mut self,
        creds: &Credentials,
        method: &str,
        ha1: &str,
        now: SystemTime,
    ) -> Verdict {
        // The response is checked first: stale=true must only tell a client that knows the
        // password to retry, and only right responses may create state.
        if !verify(creds, method, ha1) {
            return Verdict::BadResponse;
        }
        let now = unix_seconds(now);
        let Some(issued) = self.issued_at(&creds.nonce) else {
            return Verdict::Stale;
        };
        if !self.fresh_at(issued, now) {
            return Verdict::Stale;
        }
        let nc = match creds.qop {
            Some(Qop::Auth) => match creds.nonce_count() {
                Some(nc) => nc,
                None => return Verdict::BadResponse,
            },
            None => 1,
        };
        self.purge_secs(now);
        if let Some(max_nc) = self.tracked.get_mut(&creds.nonce) {
            if nc <= *max_nc {
                return Verdict::Replayed;
            }
            *max_nc = nc;
            return Verdict::Authorized;
        }
        if nc == 0 {
            return Verdict::Replayed;
        }
        if self.tracked.len() >= self.max_tracked {
            self.evict_one();
            // The eviction may have made this very nonce stale.
            if !self.fresh_at(issued, now) {
                return Verdict::Stale;
            }
        }
        let expires = issued.saturating_add(self.lifetime.as_secs());
        self.tracked.insert(creds.nonce.clone(), nc);
        self.by_expiry.insert((expires, creds.nonce.clone()));
        Verdict::Authorized
    }

    /// Forgets nonces that have expired at `now` (they are refused as stale anyway).
    pub fn purge(&mut self, now: SystemTime) {
        self.purge_secs(unix_seconds(now));
    }

    fn purge_secs(&mut self, now: u64) {
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now {
                break;
            }
            if let Some((_, nonce)) = self.by_expiry.pop_first() {
                self.tracked.remove(&nonce);
            }
        }
    }

    fn evict_one(&mut self) {
        if let Some((expires, nonce)) = self.by_expiry.pop_first() {
            self.tracked.remove(&nonce);
            let issued = expires.saturating_sub(self.lifetime.as_secs());
            self.floor = Some(self.floor.map_or(issued, |f| f.max(issued)));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_answers_a_challenge_the_server_accepts() {
        // Our own server side checks what our client side computes, both algorithms.
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let header = challenge("sip.example.net", "abc123", alg, false, Some("xyz"));
            let ch = ChallengeParams::parse(&header).unwrap();
            assert_eq!(ch.realm, "sip.example.net");
            assert!(ch.qop_auth && !ch.stale);
            let value = ch.answer("trunk1", "s3cret", "INVITE", "sip:0039055@x", 1, "0a4f113b");
            let creds = Credentials::parse(&value).unwrap();
            assert_eq!(creds.nc.as_deref(), Some("00000001"));
            assert_eq!(creds.opaque.as_deref(), Some("xyz"));
            let stored = ha1(alg, "trunk1", "sip.example.net", "s3cret");
            assert!(verify(&creds, "INVITE", &stored), "{alg:?}");
            assert!(!verify(&creds, "BYE", &stored));
        }
    }

    #[test]
    fn rfc2617_challenge_without_qop_gets_the_2069_form() {
        // RFC 2617 §3.5's challenge, but without qop: the answer has no cnonce/nc.
        let ch = ChallengeParams::parse(
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", stale=TRUE",
        )
        .unwrap();
        assert!(ch.stale && !ch.qop_auth);
        let v = ch.answer("Mufasa", "Circle Of Life", "GET", "/dir/index.html", 1, "c");
        assert!(!v.contains("cnonce") && !v.contains("nc="), "{v}");
        assert!(ChallengeParams::parse("Basic realm=\"x\"").is_err());
        assert!(
            ChallengeParams::parse("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\"").is_err()
        );
        assert!(ChallengeParams::parse("Digest nonce=\"n\"").is_err());
    }

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc7616_header(alg: &str, response: &str) -> String {
        format!(
            "Digest username=\"Mufasa\",\r\n realm=\"http-auth@example.org\",\r\n \
             uri=\"/dir/index.html\",\r\n algorithm={alg},\r\n nonce=\"{RFC7616_NONCE}\",\r\n \
             nc=00000001,\r\n cnonce=\"{RFC7616_CNONCE}\",\r\n qop=auth,\r\n \
             response=\"{response}\",\r\n opaque=\"{RFC7616_OPAQUE}\""
        )
    }

    #[test]
    fn rfc7616_md5_example() {
        let creds =
            Credentials::parse(&rfc7616_header("MD5", "8ca523f5e9506fed4657c9700eebdbec")).unwrap();
        assert_eq!(creds.username, "Mufasa");
        assert_eq!(creds.realm, "http-auth@example.org");
        assert_eq!(creds.algorithm, Algorithm::Md5);
        assert_eq!(creds.qop, Some(Qop::Auth));
        assert_eq!(creds.nc.as_deref(), Some("00000001"));
        assert_eq!(creds.nonce_count(), Some(1));
        assert_eq!(creds.cnonce.as_deref(), Some(RFC7616_CNONCE));
        assert_eq!(creds.opaque.as_deref(), Some(RFC7616_OPAQUE));
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(verify(&creds, "GET", &h));
        assert!(!verify(&creds, "POST", &h));
        let wrong = ha1(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of life",
        );
        assert!(!verify(&creds, "GET", &wrong));
    }

    #[test]
    fn rfc7616_sha256_example() {
        let creds = Credentials::parse(&rfc7616_header(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ))
        .unwrap();
        assert_eq!(creds.algorithm, Algorithm::Sha256);
        let h = ha1(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(h.len(), 64);
        assert!(verify(&creds, "GET", &h));
        // The MD5 HA1 does not verify a SHA-256 response.
        let md5 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert!(!verify(&creds, "GET", &md5));
    }

    #[test]
    fn rfc2617_example() {
        let value = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
                     nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
                     qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
                     response=\"6629fae49393a05397450978507c4ef1\", \
                     opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let creds = Credentials::parse(value).unwrap();
        assert_eq!(creds.algorithm, Algorithm::Md5, "MD5 when absent");
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(h, "939e7578ed9e3c518a452acee763bce9");
        assert!(verify(&creds, "GET", &h));
        // Uppercase stored HA1 is accepted too.
        assert!(verify(&creds, "GET", &h.to_ascii_uppercase()));
    }

    #[test]
    fn rfc2069_form_without_qop() {
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let nonce = "dcd98b7102dd2f0e8b11d0f600bfb0c093";
        let ha2 = hex::encode(Md5::digest(b"REGISTER:sip:example.com"));
        let response = hex::encode(Md5::digest(format!("{h}:{nonce}:{ha2}").as_bytes()));
        let value = format!(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"{nonce}\", \
             uri=\"sip:example.com\", response=\"{}\"",
            response.to_ascii_uppercase()
        );
        let creds = Credentials::parse(&value).unwrap();
        assert_eq!(creds.qop, None);
        assert_eq!(creds.nc, None);
        assert!(verify(&creds, "REGISTER", &h));
        assert!(!verify(&creds, "INVITE", &h));
    }

    #[test]
    fn sess_variant_verifies() {
        let h = ha1(Algorithm::Md5, "alice", "pbx", "secret");
        let sess_ha1 = hex::encode(Md5::digest(format!("{h}:n1:c1").as_bytes()));
        let ha2 = hex::encode(Md5::digest(b"REGISTER:sip:pbx"));
        let response = hex::encode(Md5::digest(
            format!("{sess_ha1}:n1:00000001:c1:auth:{ha2}").as_bytes(),
        ));
        let value = format!(
            "Digest username=\"alice\", realm=\"pbx\", nonce=\"n1\", uri=\"sip:pbx\", \
             algorithm=MD5-sess, qop=auth, nc=00000001, cnonce=\"c1\", response=\"{response}\""
        );
        let creds = Credentials::parse(&value).unwrap();
        assert_eq!(creds.algorithm, Algorithm::Md5Sess);
        assert_eq!(creds.algorithm.base(), Algorithm::Md5);
        assert!(verify(&creds, "REGISTER", &h));
    }

    #[test]
    fn parse_any_order_case_escapes_and_unknown_params() {
        let value =
            "digest RESPONSE=\"ABCDEF01\",NC=0000000a , Uri=\"sip:bob@b.example;transport=tcp\",\
                     foo=bar, QOP=\"auth\",NONCE=\"n\\\"x\" ,CNonce=\"c\\\\d\", userhash=false,\
                     Realm=\"My \\\"Realm\\\"\",USERNAME=\"bob\",Algorithm=sha-256";
        let creds = Credentials::parse(value).unwrap();
        assert_eq!(creds.username, "bob");
        assert_eq!(creds.realm, "My \"Realm\"");
        assert_eq!(creds.nonce, "n\"x");
        assert_eq!(creds.cnonce.as_deref(), Some("c\\d"));
        assert_eq!(creds.uri, "sip:bob@b.example;transport=tcp");
        assert_eq!(creds.response, "abcdef01");
        assert_eq!(creds.algorithm, Algorithm::Sha256);
        assert_eq!(creds.nonce_count(), Some(10));
        assert_eq!(creds.opaque, None);
    }

    #[test]
    fn parse_errors() {
        // RFC 4475 TC_REGAUT01 style: an unknown scheme.
        assert_eq!(
            Credentials::parse("NoOneKnowsThisScheme opaque-data=here"),
            Err(DigestError::UnsupportedScheme(
                "NoOneKnowsThisScheme".to_string()
            ))
        );
        assert!(matches!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Err(DigestError::UnsupportedScheme(_))
        ));
        let base = "username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"00\"";
        assert!(Credentials::parse(&format!("Digest {base}")).is_ok());
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, algorithm=SHA-512-256")),
            Err(DigestError::UnsupportedAlgorithm("SHA-512-256".into()))
        );
        assert_eq!(
            Credentials::parse(&format!(
                "Digest {base}, qop=auth-int, nc=00000001, cnonce=\"x\""
            )),
            Err(DigestError::UnsupportedQop("auth-int".into()))
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, qop=auth, nc=00000001")),
            Err(DigestError::MissingParam("cnonce"))
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, qop=auth, cnonce=\"x\"")),
            Err(DigestError::MissingParam("nc"))
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, qop=auth, cnonce=\"x\", nc=1")),
            Err(DigestError::BadParam("nc"))
        );
        assert_eq!(
            Credentials::parse(&format!("Digest {base}, realm=\"again\"")),
            Err(DigestError::DuplicateParam("realm"))
        );
        assert_eq!(
            Credentials::parse("Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"0\""),
            Err(DigestError::MissingParam("username"))
        );
        assert_eq!(
            Credentials::parse("Digest username=\"a"),
            Err(DigestError::Syntax("unterminated quoted string"))
        );
        assert!(matches!(
            Credentials::parse("Digest username"),
            Err(DigestError::Syntax(_))
        ));
        assert!(matches!(
            Credentials::parse("Digest username=\"a\" realm=\"r\""),
            Err(DigestError::Syntax(_))
        ));
        assert_eq!(
            Credentials::parse(
                "Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"xyz\""
            ),
            Err(DigestError::BadParam("response"))
        );
        assert!(Credentials::parse("").is_err());
    }

    #[test]
    fn challenge_text() {
        assert_eq!(
            challenge("pbx \"1\"", "abc", Algorithm::Md5, false, None),
            "Digest realm=\"pbx \\\"1\\\"\", nonce=\"abc\", algorithm=MD5, qop=\"auth\""
        );
        assert_eq!(
            challenge("pbx", "abc", Algorithm::Sha256, true, Some("op")),
            "Digest realm=\"pbx\", nonce=\"abc\", algorithm=SHA-256, qop=\"auth\", \
             opaque=\"op\", stale=true"
        );
        assert_eq!(offered_algorithms(false), &[Algorithm::Md5]);
        assert_eq!(
            offered_algorithms(true),
            &[Algorithm::Md5, Algorithm::Sha256],
            "MD5 must come first: SIPp and baresip fail otherwise"
        );
    }

    /// What a client computes from a challenge (RFC 7616 §3.4.1).
    fn answer(alg: Algorithm, nonce: &str, nc: u32, password: &str, qop: bool) -> Credentials {
        let mut creds = Credentials {
            username: "alice".into(),
            realm: "pbx.example".into(),
            nonce: nonce.into(),
            uri: "sip:pbx.example".into(),
            response: String::new(),
            algorithm: alg,
            cnonce: qop.then(|| "0a4f113b".into()),
            opaque: None,
            qop: qop.then_some(Qop::Auth),
            nc: qop.then(|| format!("{nc:08x}")),
        };
        let h = ha1(alg.base(), "alice", "pbx.example", password);
        creds.response = expected_response(&creds, "REGISTER", &h);
        creds
    }

    #[test]
    fn challenge_round_trip_through_parse() {
        let mut nonces = NonceManager::new(b"k".to_vec());
        let nonce = nonces.issue(at(1_000));
        let creds = answer(Algorithm::Sha256, &nonce, 1, "pw", true);
        let header = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", \
             algorithm=SHA-256, cnonce=\"0a4f113b\", qop=auth, nc=00000001",
            creds.username, creds.realm, creds.nonce, creds.uri, creds.response
        );
        assert_eq!(Credentials::parse(&header).unwrap(), creds);
        let h = ha1(Algorithm::Sha256, "alice", "pbx.example", "pw");
        assert_eq!(
            nonces.authenticate(&creds, "REGISTER", &h, at(1_001)),
            Verdict::Authorized
        );
    }

    #[test]
    fn nonce_is_self_validating() {
        let mut nonces = NonceManager::new(b"secret".to_vec());
        let n1 = nonces.issue(at(1_000));
        let n2 = nonces.issue(at(1_000));
        assert_ne!(n1, n2, "two nonces in the same second differ");
        assert_eq!(nonces.issued_at(&n1), Some(1_000));
        assert!(nonces.is_fresh(&n1, at(1_000)));
        assert!(nonces.is_fresh(&n1, at(1_299)));
        assert!(!nonces.is_fresh(&n1, at(1_300)));
        assert!(!nonces.is_fresh(&n1, at(999)), "issued in the future");
        // Tampering with the timestamp breaks the MAC.
        let mut forged = n1.clone().into_bytes();
        forged[15] = if forged[15] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            nonces.issued_at(std::str::from_utf8(&forged).unwrap()),
            None
        );
        // Another secret (a restart) does not accept it.
        let other = NonceManager::new(b"other".to_vec());
        assert_eq!(other.issued_at(&n1), None);
        assert_eq!(nonces.issued_at("not a nonce"), None);
        assert_eq!(nonces.tracked(), 0, "issuing keeps no state");
    }

    #[test]
    fn replay_is_refused_and_nc_must_grow() {
        let mut nonces = NonceManager::new(b"secret".to_vec());
        let h = ha1(Algorithm::Md5, "alice", "pbx.example", "pw");
        let nonce = nonces.issue(at(1_000));
        let first = answer(Algorithm::Md5, &nonce, 1, "pw", true);
        assert_eq!(
            nonces.authenticate(&first, "REGISTER", &h, at(1_001)),
            Verdict::Authorized
        );
        // The same message again: a replay.
        let v = nonces.authenticate(&first, "REGISTER", &h, at(1_002));
        assert_eq!(v, Verdict::Replayed);
        assert!(v.stale() && !v.is_authorized());
        // The next count is fine, an older one is not.
        let third = answer(Algorithm::Md5, &nonce, 3, "pw", true);
        assert_eq!(
            nonces.authenticate(&third, "REGISTER", &h, at(1_003)),
            Verdict::Authorized
        );
        let second = answer(Algorithm::Md5, &nonce, 2, "pw", true);
        assert_eq!(
            nonces.authenticate(&second, "REGISTER", &h, at(1_004)),
            Verdict::Replayed
        );
        // A wrong password never touches the counters.
        let bad = answer(Algorithm::Md5, &nonce, 9, "wrong", true);
        assert_eq!(
            nonces.authenticate(&bad, "REGISTER", &h, at(1_005)),
            Verdict::BadResponse
        );
        let fourth = answer(Algorithm::Md5, &nonce, 4, "pw", true);
        assert_eq!(
            nonces.authenticate(&fourth, "REGISTER", &h, at(1_006)),
            Verdict::Authorized
        );
        // nc=0 is never valid.
        let other = nonces.issue(at(1_000));
        let zero = answer(Algorithm::Md5, &other, 0, "pw", true);
        assert_eq!(
            nonces.authenticate(&zero, "REGISTER", &h, at(1_001)),
            Verdict::Replayed
        );
    }

    #[test]
    fn rfc2069_nonce_is_single_use() {
        let mut nonces = NonceManager::new(b"secret".to_vec());
        let h = ha1(Algorithm::Md5, "alice", "pbx.example", "pw");
        let nonce = nonces.issue(at(1_000));
        let creds = answer(Algorithm::Md5, &nonce, 0, "pw", false);
        assert_eq!(
            nonces.authenticate(&creds, "REGISTER", &h, at(1_000)),
            Verdict::Authorized
        );
        assert_eq!(
            nonces.authenticate(&creds, "REGISTER", &h, at(1_000)),
            Verdict::Replayed
        );
    }

    #[test]
    fn expiry_gives_stale_only_for_right_responses() {
        let mut nonces =
            NonceManager::new(b"secret".to_vec()).with_lifetime(Duration::from_secs(60));
        let h = ha1(Algorithm::Sha256, "alice", "pbx.example", "pw");
        let nonce = nonces.issue(at(1_000));
        let good = answer(Algorithm::Sha256, &nonce, 1, "pw", true);
        let bad = answer(Algorithm::Sha256, &nonce, 1, "nope", true);
        assert_eq!(
            nonces.authenticate(&bad, "REGISTER", &h, at(1_060)),
            Verdict::BadResponse
        );
        let v = nonces.authenticate(&good, "REGISTER", &h, at(1_060));
        assert_eq!(v, Verdict::Stale);
        assert!(v.stale());
        assert_eq!(
            nonces.authenticate(&good, "REGISTER", &h, at(1_059)),
            Verdict::Authorized
        );
        // A nonce from another secret (before a restart) with a right response: stale.
        let old = NonceManager::new(b"before restart".to_vec()).issue(at(1_000));
        let creds = answer(Algorithm::Sha256, &old, 1, "pw", true);
        assert_eq!(
            nonces.authenticate(&creds, "REGISTER", &h, at(1_001)),
            Verdict::Stale
        );
    }

    #[test]
    fn tracking_is_bounded_and_never_reopens_replay() {
        let mut nonces = NonceManager::new(b"secret".to_vec()).with_max_tracked(4);
        let h = ha1(Algorithm::Md5, "alice", "pbx.example", "pw");
        let mut used = Vec::new();
        for i in 0..10u64 {
            let nonce = nonces.issue(at(1_000 + i));
            let creds = answer(Algorithm::Md5, &nonce, 1, "pw", true);
            assert_eq!(
                nonces.authenticate(&creds, "REGISTER", &h, at(1_000 + i)),
                Verdict::Authorized
            );
            assert!(nonces.tracked() <= 4);
            used.push(creds);
        }
        // Every earlier nonce is either still tracked (replay) or forgotten (stale).
        for creds in &used {
            let v = nonces.authenticate(creds, "REGISTER", &h, at(1_010));
            assert!(matches!(v, Verdict::Replayed | Verdict::Stale), "{v:?}");
        }
        // Expired entries are purged.
        nonces.purge(at(1_000 + 10 + 300));
        assert_eq!(nonces.tracked(), 0);
    }
}
