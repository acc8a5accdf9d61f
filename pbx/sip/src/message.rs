//! The SIP message model (RFC 3261 §7): requests, responses, an ordered header list and a
//! body. Header values are kept as text and parsed into typed views on demand
//! (`crate::header`), so a message that passes through us is printed back as received,
//! apart from the headers we deliberately change. This module never does I/O.

use std::fmt;

use crate::header::{CSeq, NameAddr, Via};
use crate::uri::Uri;
use crate::SipError;

/// A SIP method. Unknown extension methods are kept verbatim (RFC 3261 §7.1: tokens).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Other(String),
}

impl Method {
    /// Methods are case-sensitive (RFC 3261 §7.1).
    pub fn from_token(s: &str) -> Method {
        match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header names we act on get a variant; everything else is kept with its original
/// spelling. Compact forms (RFC 3261 §7.3.3) are folded into the long form at parse time.
#[derive(Debug, Clone)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    Expires,
    Route,
    RecordRoute,
    Path,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    AuthenticationInfo,
    Allow,
    Supported,
    Require,
    ProxyRequire,
    Unsupported,
    UserAgent,
    Server,
    MinExpires,
    RetryAfter,
    Date,
    Event,
    Subject,
    ReferTo,
    ReferredBy,
    Reason,
    Accept,
    Other(String),
}

impl HeaderName {
    /// Resolves a header name as written on the wire: case-insensitive, compact forms
    /// included (`i`, `l`, `v`, `f`, `t`, `m`, `c`, `k`, `s`, `e`, `o`, `r`, `b`, `u`).
    pub fn from_wire(name: &str) -> HeaderName {
        use HeaderName::*;
        // Compact forms are single letters; check them first.
        if name.len() == 1 {
            match name.as_bytes()[0].to_ascii_lowercase() {
                b'i' => return CallId,
                b'l' => return ContentLength,
                b'v' => return Via,
                b'f' => return From,
                b't' => return To,
                b'm' => return Contact,
                b'c' => return ContentType,
                b'k' => return Supported,
                b's' => return Subject,
                b'o' => return Event,
                b'r' => return ReferTo,
                b'b' => return ReferredBy,
                // `u` is Allow-Events (RFC 6665), not Allow: it falls through to Other below.
                _ => {}
            }
        }
        let known: &[(&str, HeaderName)] = &[
            ("via", Via),
            ("from", From),
            ("to", To),
            ("call-id", CallId),
            ("cseq", CSeq),
            ("contact", Contact),
            ("max-forwards", MaxForwards),
            ("content-length", ContentLength),
            ("content-type", ContentType),
            ("expires", Expires),
            ("route", Route),
            ("record-route", RecordRoute),
            ("path", Path),
            ("authorization", Authorization),
            ("proxy-authorization", ProxyAuthorization),
            ("www-authenticate", WwwAuthenticate),
            ("proxy-authenticate", ProxyAuthenticate),
            ("authentication-info", AuthenticationInfo),
            ("allow", Allow),
            ("supported", Supported),
            ("require", Require),
            ("proxy-require", ProxyRequire),
            ("unsupported", Unsupported),
            ("user-agent", UserAgent),
            ("server", Server),
            ("min-expires", MinExpires),
            ("retry-after", RetryAfter),
            ("date", Date),
            ("event", Event),
            ("subject", Subject),
            ("refer-to", ReferTo),
            ("referred-by", ReferredBy),
            ("reason", Reason),
            ("accept", Accept),
        ];
        for (n, v) in known {
            if n.eq_ignore_ascii_case(name) {
                return v.clone();
            }
        }
        if name.eq_ignore_ascii_case("u") {
            return Other("Allow-Events".to_string());
        }
        Other(name.to_string())
    }

    /// The canonical long form used when printing.
    pub fn as_str(&self) -> &str {
        use HeaderName::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            Contact => "Contact",
            MaxForwards => "Max-Forwards",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            Expires => "Expires",
            Route => "Route",
            RecordRoute => "Record-Route",
            Path => "Path",
            Authorization => "Authorization",
            ProxyAuthorization => "Proxy-Authorization",
            WwwAuthenticate => "WWW-Authenticate",
            ProxyAuthenticate => "Proxy-Authenticate",
            AuthenticationInfo => "Authentication-Info",
            Allow => "Allow",
            Supported => "Supported",
            Require => "Require",
            ProxyRequire => "Proxy-Require",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Server => "Server",
            MinExpires => "Min-Expires",
            RetryAfter => "Retry-After",
            Date => "Date",
            Event => "Event",
            Subject => "Subject",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            Reason => "Reason",
            Accept => "Accept",
            Other(s) => s,
        }
    }

    /// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): the parser
    /// splits them into one `Header` per value so that typed access sees each value.
    /// The authentication headers are not lists of this kind (their params hold commas).
    pub fn is_list(&self) -> bool {
        use HeaderName::*;
        matches!(
            self,
            Via | Contact
                | Route
                | RecordRoute
                | Path
                | Allow
                | Supported
                | Require
                | ProxyRequire
                | Unsupported
        )
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (HeaderName::Other(_), _) | (_, HeaderName::Other(_)) => false,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}
impl Eq for HeaderName {}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field; `value` is the text after the colon with folding (LWS) collapsed and
/// surrounding whitespace trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub value: String,
}

/// The ordered header list. Order matters for Via, Route and Record-Route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The first value of a header, if present.
    pub fn get(&self, name: &HeaderName) -> Option<&str> {
        self.0
            .iter()
            .find(|h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Every value of a header, in order.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_str())
    }

    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    /// Appends a header after all existing ones.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Inserts a header before the first header of the same name (or at the top for Via,
    /// Record-Route, Route), as a proxy or B2BUA prepending its own entry must.
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<String>) {
        let pos = self.0.iter().position(|h| h.name == name).unwrap_or(0);
        self.0.insert(
            pos,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// Replaces every value of `name` with one value (appending if absent).
    pub fn set(&mut self, name: HeaderName, value: impl Into<String>) {
        let value = value.into();
        if let Some(pos) = self.0.iter().position(|h| h.name == name) {
            self.0[pos].value = value;
            let mut i = pos + 1;
            while i < self.0.len() {
                if self.0[i].name == name {
                    self.0.remove(i);
                } else {
                    i += 1;
                }
            }
        } else {
            self.push(name, value);
        }
    }

    /// Removes every value of `name`; returns how many were removed.
    pub fn remove(&mut self, name: &HeaderName) -> usize {
        let before = self.0.len();
        self.0.retain(|h| &h.name != name);
        before - self.0.len()
    }

    /// Removes and returns the first value of `name`.
    pub fn remove_first(&mut self, name: &HeaderName) -> Option<String> {
        let pos = self.0.iter().position(|h| &h.name == name)?;
        Some(self.0.remove(pos).value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Accessors shared by requests and responses for the headers every message carries.
/// Each returns a typed error naming the header when it is missing or malformed, so a
/// caller can answer 400 with that reason.
macro_rules! common_accessors {
    () => {
        /// The topmost Via, parsed.
        pub fn top_via(&self) -> Result<Via, SipError> {
            let v = self
                .headers
                .get(&HeaderName::Via)
                .ok_or(SipError::MissingHeader("Via"))?;
            Via::parse(v)
        }

        pub fn call_id(&self) -> Result<&str, SipError> {
            self.headers
                .get(&HeaderName::CallId)
                .ok_or(SipError::MissingHeader("Call-ID"))
        }

        pub fn cseq(&self) -> Result<CSeq, SipError> {
            let v = self
                .headers
                .get(&HeaderName::CSeq)
                .ok_or(SipError::MissingHeader("CSeq"))?;
            CSeq::parse(v)
        }

        pub fn from(&self) -> Result<NameAddr, SipError> {
            let v = self
                .headers
                .get(&HeaderName::From)
                .ok_or(SipError::MissingHeader("From"))?;
            NameAddr::parse(v)
        }

        pub fn to(&self) -> Result<NameAddr, SipError> {
            let v = self
                .headers
                .get(&HeaderName::To)
                .ok_or(SipError::MissingHeader("To"))?;
            NameAddr::parse(v)
        }

        /// Sets the body and its Content-Length (and Content-Type when given).
        pub fn set_body(&mut self, body: Vec<u8>, content_type: Option<&str>) {
            match content_type {
                Some(ct) => self.headers.set(HeaderName::ContentType, ct),
                None if body.is_empty() => {
                    self.headers.remove(&HeaderName::ContentType);
                }
                None => {}
            }
            self.body = body;
        }

        /// Prints the message to wire form. Content-Length is always written from the
        /// actual body length (RFC 3261 §18.3 requires it on stream transports), whatever
        /// the header list says.
        pub fn to_bytes(&self) -> Vec<u8> {
            let mut out = Vec::with_capacity(512 + self.body.len());
            self.write_start_line(&mut out);
            for h in self.headers.iter() {
                if h.name == HeaderName::ContentLength {
                    continue;
                }
                out.extend_from_slice(h.name.as_str().as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(self.body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&self.body);
            out
        }
    };
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    common_accessors!();

    fn write_start_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.uri.to_string().as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
    }

    /// Max-Forwards as a number; `None` when absent. A malformed value is an error.
    pub fn max_forwards(&self) -> Result<Option<u32>, SipError> {
        match self.headers.get(&HeaderName::MaxForwards) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| SipError::BadHeader("Max-Forwards")),
        }
    }
}

impl Response {
    pub fn new(status: u16, reason: impl Into<String>) -> Response {
        Response {
            status,
            reason: reason.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    common_accessors!();

    fn write_start_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Builds a response to `req` as RFC 3261 §8.2.6.2 says: Via, From, To, Call-ID and
    /// CSeq copied; a To tag added when `to_tag` is given and the To has none.
    pub fn for_request(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
        let mut resp = Response::new(status, reason);
        for h in req.headers.iter() {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    resp.headers.0.push(h.clone())
                }
                HeaderName::To => {
                    let mut value = h.value.clone();
                    if let Some(tag) = to_tag {
                        let has_tag = NameAddr::parse(&value)
                            .map(|na| na.tag().is_some())
                            .unwrap_or(true);
                        if !has_tag {
                            value.push_str(";tag=");
                            value.push_str(tag);
                        }
                    }
                    resp.headers.push(HeaderName::To, value);
                }
                _ => {}
            }
        }
        resp
    }

    /// 1xx.
    pub fn is_provisional(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// 200–699.
    pub fn is_final(&self) -> bool {
        self.status >= 200
    }
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    pub fn call_id(&self) -> Result<&str, SipError> {
        match self {
            Message::Request(r) => r.call_id(),
            Message::Response(r) => r.call_id(),
        }
    }

    pub fn cseq(&self) -> Result<CSeq, SipError> {
        match self {
            Message::Request(r) => r.cseq(),
            Message::Response(r) => r.cseq(),
        }
    }

    pub fn top_via(&self) -> Result<Via, SipError> {
        match self {
            Message::Request(r) => r.top_via(),
            Message::Response(r) => r.top_via(),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// The reason phrases of RFC 3261 §21 (and the extensions we answer with).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}
