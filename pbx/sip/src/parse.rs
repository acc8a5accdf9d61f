//! The SIP wire parser (RFC 3261 §7 and §25, hardened against RFC 4475): datagram and
//! stream framing, the start line, header lines with folding and compact forms, and the
//! grammar of the header values we act on. It owns syntax only: semantic refusals (missing
//! headers, duplicates, unknown schemes) belong to [`crate::check`]. It never does I/O,
//! never panics on input, and never buffers without a bound (`parse_stream`'s `max_size`).
//!
//! Performance: one pass to find the end of the header section, one pass over header lines,
//! and per-header grammar checks that walk bytes; no regexes, and allocation only for the
//! values we keep (plus a `String` when a header line was folded).

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use crate::header::{CSeq, NameAddr, Via};
use crate::message::{Header, HeaderName, Headers, Message, Method, Request, Response};
use crate::uri::{Param, Scheme, Uri};
use crate::SipError;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// What was wrong with a message that could not be parsed. Each kind maps to the status a
/// request carrying it is answered with ([`ParseErrorKind::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Nothing but CRLFs (a keep-alive sent as a datagram) or no bytes at all.
    #[error("empty message")]
    Empty,
    #[error("malformed start line")]
    BadStartLine,
    /// A well-formed SIP-Version other than SIP/2.0 (answered 505, RFC 3261 §21.5.6).
    #[error("unsupported SIP version")]
    BadVersion,
    #[error("malformed status code")]
    BadStatusCode,
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A header line without a colon, with a bad name, or with a bare CR or LF in it.
    #[error("malformed header line")]
    BadHeaderLine,
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// A datagram whose header section does not end with an empty line.
    #[error("header section not terminated")]
    UnterminatedHeaders,
    /// A known header whose value does not follow its grammar; names the header.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5, RFC 4475 §3.1.2.17).
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// Content-Length that is not a number (negative included, RFC 4475 §3.1.2.3).
    #[error("malformed Content-Length")]
    BadContentLength,
    /// Content-Length larger than the bytes that follow the headers in a datagram.
    #[error("Content-Length larger than the message body")]
    BodyTruncated,
    /// Several Content-Length headers that disagree, on a stream: framing is impossible.
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    /// No Content-Length on a stream transport (required by RFC 3261 §18.3).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// The header section or the whole message is larger than the stream's limit.
    #[error("message larger than the limit")]
    TooLarge,
}

impl ParseErrorKind {
    /// The status a request with this defect is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ParseErrorKind::BadVersion => 505,
            ParseErrorKind::TooLarge => 513,
            _ => 400,
        }
    }

    /// A reason phrase naming the defect (RFC 3261 §21.4.1 suggests saying which header).
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            ParseErrorKind::BadVersion => Cow::Borrowed("Version Not Supported"),
            ParseErrorKind::TooLarge => Cow::Borrowed("Message Too Large"),
            ParseErrorKind::BadStartLine | ParseErrorKind::BadStatusCode => {
                Cow::Borrowed("Bad Request-Line")
            }
            ParseErrorKind::BadRequestUri => Cow::Borrowed("Bad Request-URI"),
            ParseErrorKind::BadHeader(name) => Cow::Owned(format!("Bad {name}")),
            ParseErrorKind::CSeqMethodMismatch => Cow::Borrowed("CSeq Method Mismatch"),
            ParseErrorKind::BadContentLength
            | ParseErrorKind::BodyTruncated
            | ParseErrorKind::ConflictingContentLength => Cow::Borrowed("Bad Content-Length"),
            ParseErrorKind::MissingContentLength => Cow::Borrowed("Missing Content-Length"),
            ParseErrorKind::BadHeaderLine
            | ParseErrorKind::NotUtf8
            | ParseErrorKind::UnterminatedHeaders
            | ParseErrorKind::Empty => Cow::Borrowed("Bad Request"),
        }
    }
}

/// A message that could not be parsed. Carries what is needed to answer it when the start
/// line was a request (not ACK) and Via, From, To, Call-ID and CSeq could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ParseErrorKind,
    /// The headers to copy into the answer (RFC 3261 §8.2.6.2), in received order.
    reply: Option<Vec<Header>>,
    /// On a stream, the length of the bad message when its framing was still known.
    frame_len: Option<usize>,
}

impl ParseError {
    fn new(kind: ParseErrorKind) -> ParseError {
        ParseError {
            kind,
            reply: None,
            frame_len: None,
        }
    }

    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// On a stream: the bytes the bad message occupies when the framing could still be
    /// read (its Content-Length was sound), so the driver may answer and carry on. `None`
    /// means the byte stream has lost sync and the connection must be closed.
    pub fn frame_len(&self) -> Option<usize> {
        self.frame_len
    }

    /// The response to send back, or `None` when the message must be dropped (it was a
    /// response or an ACK, or the headers a response needs could not be read).
    ///
    /// Via, From, To, Call-ID and CSeq are copied verbatim, even when one of them is the
    /// malformed header: the client matches the answer on them. The top Via may therefore
    /// not parse; send the answer back to the source address / connection of the request.
    /// A To tag is added when the To parses and has none; it is derived from the request so
    /// that a retransmission gets the same answer (stateless UAS, RFC 3261 §8.2.7).
    pub fn response(&self) -> Option<Response> {
        let headers = self.reply.as_ref()?;
        let mut resp = Response::new(self.kind.status(), self.kind.reason());
        let mut hasher = std::hash::DefaultHasher::new();
        for h in headers.iter() {
            if h.name != HeaderName::To {
                h.value.hash(&mut hasher);
            }
        }
        for h in headers.iter() {
            if h.name == HeaderName::To {
                let mut value = h.value.clone();
                if parse_name_addr(&value).is_ok_and(|na| na.tag().is_none()) {
                    value.push_str(&format!(";tag={:016x}", hasher.finish()));
                }
                resp.headers.push(HeaderName::To, value);
            } else {
                resp.headers.0.push(h.clone());
            }
        }
        Some(resp)
    }
}

/// The outcome of reading a stream (TCP, TLS, WebSocket framing aside).
// The size difference is the point: a message is returned by value once per message, and
// boxing it would add an allocation on the hot path.
#[allow(clippy::large_enum_variant)]
pub enum StreamItem {
    /// A whole message and the number of bytes it took (leading CRLFs excluded: those are
    /// reported as `KeepAlive` first).
    Message(Message, usize),
    /// `n` bytes of CRLF before any message: RFC 5626 §4.4.1 keep-alives (a double CRLF
    /// "ping", to be answered with a single CRLF "pong" when `n >= 4`), or the CRLFs RFC
    /// 3261 §7.5 says to ignore. Consume `n` bytes and call again.
    KeepAlive(usize),
    /// More bytes are needed; nothing is consumed.
    Incomplete,
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

/// Parses one whole UDP datagram (RFC 3261 §18.3: without Content-Length the body is the
/// rest of the datagram; with it, extra octets are discarded and a shortfall is an error).
pub fn parse_datagram(buf: &[u8]) -> Result<Message, ParseError> {
    let skip = leading_crlfs(buf);
    let msg = &buf[skip..];
    if msg.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Err(ParseError::new(ParseErrorKind::Empty));
    }
    let (head_len, body_start, terminated) = match find_head_end(msg, msg.len()) {
        Some(end) => (end - 4, end, true),
        // Tolerated: a datagram ending right after the last header line's CRLF. Anything
        // else without the empty line is reported, with an answer when the headers allow.
        None if msg.ends_with(b"\r\n") => (msg.len() - 2, msg.len(), true),
        None => (msg.len(), msg.len(), false),
    };
    let text = std::str::from_utf8(&msg[..head_len])
        .map_err(|_| ParseError::new(ParseErrorKind::NotUtf8))?;
    let head = parse_head(text)?;
    if !terminated {
        return Err(head.error(ParseErrorKind::UnterminatedHeaders));
    }
    let rest = &msg[body_start..];
    let body = match head.content_length {
        ContentLength::Absent | ContentLength::Conflicting => rest,
        ContentLength::Value(n) if n > rest.len() as u64 => {
            return Err(head.error(ParseErrorKind::BodyTruncated));
        }
        ContentLength::Value(n) => &rest[..n as usize],
    };
    Ok(head.into_message(body.to_vec()))
}

/// Parses the next message from a stream buffer. Content-Length is required (RFC 3261
/// §18.3). Any error means the connection must be closed unless
/// [`ParseError::frame_len`] says how to skip the bad message.
///
/// Cost: the header section is searched from the start of `buf` on each call, so a driver
/// should call again only after a read; with `max_size` bounding the search this stays
/// linear in practice.
pub fn parse_stream(buf: &[u8], max_size: usize) -> Result<StreamItem, ParseError> {
    let skip = leading_crlfs(buf);
    if skip > 0 {
        return Ok(StreamItem::KeepAlive(skip));
    }
    if buf.is_empty() || buf == b"\r" {
        return Ok(StreamItem::Incomplete);
    }
    let Some(head_end) = find_head_end(buf, max_size) else {
        if buf.len() >= max_size {
            return Err(ParseError::new(ParseErrorKind::TooLarge));
        }
        // Refuse garbage as soon as its first line is complete rather than waiting for
        // `max_size` bytes of it.
        if let Some(eol) = find_crlf(buf) {
            let line = std::str::from_utf8(&buf[..eol])
                .map_err(|_| ParseError::new(ParseErrorKind::NotUtf8))?;
            parse_start_line(line).map_err(ParseError::new)?;
        }
        return Ok(StreamItem::Incomplete);
    };
    let text = std::str::from_utf8(&buf[..head_end - 4])
        .map_err(|_| ParseError::new(ParseErrorKind::NotUtf8))?;
    // Frame with a light scan first, so a body trickling in does not cost a full parse per
    // read.
    let length = scan_content_length(text);
    let body_len = match length {
        ContentLength::Value(n) => n,
        ContentLength::Absent => {
            return Err(match parse_head(text) {
                Ok(head) => head.error(ParseErrorKind::MissingContentLength),
                Err(e) => e,
            });
        }
        ContentLength::Conflicting => {
            return Err(match parse_head(text) {
                Ok(head) => head.error(ParseErrorKind::ConflictingContentLength),
                Err(e) => e,
            });
        }
    };
    let total = (head_end as u64).saturating_add(body_len);
    if total > max_size as u64 {
        return Err(ParseError::new(ParseErrorKind::TooLarge));
    }
    let total = total as usize;
    if buf.len() < total {
        return Ok(StreamItem::Incomplete);
    }
    let head = parse_head(text).map_err(|mut e| {
        e.frame_len = Some(total);
        e
    })?;
    Ok(StreamItem::Message(
        head.into_message(buf[head_end..total].to_vec()),
        total,
    ))
}

/// Bytes of leading CRLF pairs.
fn leading_crlfs(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf.len() >= i + 2 && buf[i] == b'\r' && buf[i + 1] == b'\n' {
        i += 2;
    }
    i
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + p;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}

/// The index just past the first CRLFCRLF within `buf[..limit]`.
fn find_head_end(buf: &[u8], limit: usize) -> Option<usize> {
    let buf = &buf[..buf.len().min(limit)];
    let mut from = 0;
    while let Some(p) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + p;
        if at >= 3 && &buf[at - 3..=at] == b"\r\n\r\n" {
            return Some(at + 1);
        }
        from = at + 1;
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentLength {
    Absent,
    Value(u64),
    /// Several values that disagree (RFC 4475 §3.3.9).
    Conflicting,
}

fn is_content_length(name: &str) -> bool {
    name.eq_ignore_ascii_case("l") || name.eq_ignore_ascii_case("content-length")
}

/// Content-Length for framing, without validating anything else. A malformed value is
/// reported as absent here and as an error by the full parse.
fn scan_content_length(text: &str) -> ContentLength {
    let rest = match text.find("\r\n") {
        Some(i) => &text[i + 2..],
        None => "",
    };
    let mut found = ContentLength::Absent;
    for (name, value) in HeaderLines::new(rest).flatten() {
        if is_content_length(name) {
            let Some(n) = parse_digits_u64(&value) else {
                return ContentLength::Absent;
            };
            found = merge_length(found, n);
        }
    }
    found
}

fn merge_length(found: ContentLength, n: u64) -> ContentLength {
    match found {
        ContentLength::Absent => ContentLength::Value(n),
        ContentLength::Value(m) if m == n => found,
        _ => ContentLength::Conflicting,
    }
}

// ---------------------------------------------------------------------------------------
// Start line and header section
// ---------------------------------------------------------------------------------------

enum StartLine {
    Request(Method, Uri),
    Response(u16, String),
}

/// A parsed start line and header section, before the body is attached.
struct Head {
    start: StartLine,
    headers: Headers,
    content_length: ContentLength,
}

impl Head {
    fn error(&self, kind: ParseErrorKind) -> ParseError {
        let method = match &self.start {
            StartLine::Request(m, _) => Some(m),
            StartLine::Response(..) => None,
        };
        ParseError {
            kind,
            reply: reply_headers(method, &self.headers),
            frame_len: None,
        }
    }

    fn into_message(self, body: Vec<u8>) -> Message {
        match self.start {
            StartLine::Request(method, uri) => Message::Request(Request {
                method,
                uri,
                headers: self.headers,
                body,
            }),
            StartLine::Response(status, reason) => Message::Response(Response {
                status,
                reason,
                headers: self.headers,
                body,
            }),
        }
    }
}

/// The headers a response copies, when the message is a request other than ACK and all
/// five are present (RFC 3261 §8.2.6.2; an ACK is never answered, RFC 3261 §17.2.3).
fn reply_headers(method: Option<&Method>, headers: &Headers) -> Option<Vec<Header>> {
    match method {
        None | Some(Method::Ack) => return None,
        Some(_) => {}
    }
    let needed = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ];
    if !needed
        .iter()
        .all(|n| headers.get(n).is_some_and(|v| !v.is_empty()))
    {
        return None;
    }
    let mut copied = Vec::with_capacity(6);
    for h in headers.iter() {
        let single = matches!(
            h.name,
            HeaderName::From | HeaderName::To | HeaderName::CallId | HeaderName::CSeq
        );
        // Only the first of a duplicated single-value header: the answer must be sound.
        if h.name == HeaderName::Via
            || (single && !copied.iter().any(|c: &Header| c.name == h.name))
        {
            copied.push(h.clone());
        }
    }
    Some(copied)
}

/// Parses the start line and the header lines (`text` ends before the empty line).
fn parse_head(text: &str) -> Result<Head, ParseError> {
    let (line, rest) = match text.find("\r\n") {
        Some(i) => (&text[..i], &text[i + 2..]),
        None => (text, ""),
    };
    let start = parse_start_line(line);
    // A request line too broken to parse may still name its method; that is enough to
    // answer it 400 (RFC 4475 §3.1.2.7–10) when the headers are readable.
    let method_hint = match &start {
        Ok(StartLine::Request(m, _)) => Some(m.clone()),
        Ok(StartLine::Response(..)) => None,
        Err(_) => line
            .split(' ')
            .next()
            .filter(|t| !t.is_empty() && is_token(t) && !t.contains('/'))
            .map(Method::from_token),
    };

    let mut headers = Headers(Vec::with_capacity(16));
    let mut list_error: Option<ParseErrorKind> = None;
    for item in HeaderLines::new(rest) {
        let (name, value) = item.map_err(ParseError::new)?;
        let name = HeaderName::from_wire(name);
        if name.is_list() && !value.is_empty() {
            let ok = split_list(&value, |item| {
                headers.0.push(Header {
                    name: name.clone(),
                    value: item.to_string(),
                })
            });
            if !ok {
                list_error.get_or_insert(ParseErrorKind::BadHeader(static_name(&name)));
                headers.0.push(Header {
                    name,
                    value: value.into_owned(),
                });
            }
        } else {
            headers.0.push(Header {
                name,
                value: value.into_owned(),
            });
        }
    }

    let fail = |kind: ParseErrorKind| ParseError {
        kind,
        reply: reply_headers(method_hint.as_ref(), &headers),
        frame_len: None,
    };
    let start = start.map_err(fail)?;
    if let Some(kind) = list_error {
        return Err(fail(kind));
    }
    let mut content_length = ContentLength::Absent;
    let mut cseq_method: Option<Method> = None;
    for h in headers.iter() {
        validate_header(h, &mut content_length, &mut cseq_method).map_err(fail)?;
    }
    if let (StartLine::Request(method, _), Some(cseq)) = (&start, &cseq_method) {
        if method != cseq {
            return Err(fail(ParseErrorKind::CSeqMethodMismatch));
        }
    }
    Ok(Head {
        start,
        headers,
        content_length,
    })
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseErrorKind> {
    if starts_with_sip_slash(line) {
        return parse_status_line(line);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces, so
    // RFC 4475 §3.1.2.8–10 (LWS inside, doubled, trailing) all fail here.
    let first = line.find(' ').ok_or(ParseErrorKind::BadStartLine)?;
    let last = line.rfind(' ').ok_or(ParseErrorKind::BadStartLine)?;
    if first == last {
        return Err(ParseErrorKind::BadStartLine);
    }
    let method = &line[..first];
    let uri = &line[first + 1..last];
    let version = &line[last + 1..];
    if !is_token(method) {
        return Err(ParseErrorKind::BadStartLine);
    }
    check_version(version)?;
    if uri.is_empty() || uri.bytes().any(|b| b == b' ' || b == b'\t') {
        return Err(ParseErrorKind::BadRequestUri);
    }
    let uri = parse_uri(uri).map_err(|_| ParseErrorKind::BadRequestUri)?;
    // Headers in a Request-URI are meaningless and forbidden (RFC 3261 §19.1.5, RFC 4475
    // §3.1.2.11); we refuse rather than silently strip them.
    if uri.headers.is_some() {
        return Err(ParseErrorKind::BadRequestUri);
    }
    Ok(StartLine::Request(Method::from_token(method), uri))
}

/// Case-insensitive `SIP/` prefix, compared as bytes so that no UTF-8 boundary is cut.
fn starts_with_sip_slash(s: &str) -> bool {
    s.as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

fn check_version(v: &str) -> Result<(), ParseErrorKind> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    // Well-formed but another version → 505; anything else is a malformed line.
    if starts_with_sip_slash(v) {
        if let Some((major, minor)) = v[4..].split_once('.') {
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
            if digits(major) && digits(minor) {
                return Err(ParseErrorKind::BadVersion);
            }
        }
    }
    Err(ParseErrorKind::BadStartLine)
}

fn parse_status_line(line: &str) -> Result<StartLine, ParseErrorKind> {
    let (version, rest) = line.split_once(' ').ok_or(ParseErrorKind::BadStartLine)?;
    check_version(version)?;
    // Status-Code = 3DIGIT, 100–699 (RFC 4475 §3.1.2.19). An absent reason with its SP
    // missing too is tolerated: refusing it would only make the transaction time out.
    let (code, reason) = match rest.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (rest, ""),
    };
    let b = code.as_bytes();
    if b.len() != 3 || !b.iter().all(u8::is_ascii_digit) {
        return Err(ParseErrorKind::BadStatusCode);
    }
    let status = (b[0] - b'0') as u16 * 100 + (b[1] - b'0') as u16 * 10 + (b[2] - b'0') as u16;
    if !(100..=699).contains(&status) {
        return Err(ParseErrorKind::BadStatusCode);
    }
    // Reason-Phrase is UTF-8 text with SP and HTAB, never control characters.
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseErrorKind::BadStartLine);
    }
    Ok(StartLine::Response(status, reason.to_string()))
}

/// Iterates logical header lines of a header section: `(name, value)` with the name as
/// written and the value unfolded (CRLF + whitespace → one SP, RFC 3261 §7.3.1) and
/// trimmed. Values are borrowed unless a fold had to be rewritten.
struct HeaderLines<'a> {
    rest: &'a str,
}

impl<'a> HeaderLines<'a> {
    fn new(rest: &'a str) -> HeaderLines<'a> {
        HeaderLines { rest }
    }

    fn take_line(&mut self) -> &'a str {
        match self.rest.find("\r\n") {
            Some(i) => {
                let line = &self.rest[..i];
                self.rest = &self.rest[i + 2..];
                line
            }
            None => std::mem::take(&mut self.rest),
        }
    }
}

fn has_bare_cr_lf(line: &str) -> bool {
    line.bytes().any(|b| b == b'\r' || b == b'\n')
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = Result<(&'a str, Cow<'a, str>), ParseErrorKind>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let line = self.take_line();
        if has_bare_cr_lf(line) || line.starts_with([' ', '\t']) {
            self.rest = "";
            return Some(Err(ParseErrorKind::BadHeaderLine));
        }
        let Some(colon) = line.find(':') else {
            self.rest = "";
            return Some(Err(ParseErrorKind::BadHeaderLine));
        };
        // HCOLON = *( SP / HTAB ) ":" SWS
        let name = line[..colon].trim_end_matches([' ', '\t']);
        if name.is_empty() || !is_token(name) {
            self.rest = "";
            return Some(Err(ParseErrorKind::BadHeaderLine));
        }
        let first = line[colon + 1..].trim_matches([' ', '\t']);
        if !self.rest.starts_with([' ', '\t']) {
            return Some(Ok((name, Cow::Borrowed(first))));
        }
        let mut value = String::with_capacity(first.len() + 64);
        value.push_str(first);
        while self.rest.starts_with([' ', '\t']) {
            let cont = self.take_line();
            if has_bare_cr_lf(cont) {
                self.rest = "";
                return Some(Err(ParseErrorKind::BadHeaderLine));
            }
            let cont = cont.trim_matches([' ', '\t']);
            if !cont.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(cont);
            }
        }
        Some(Ok((name, Cow::Owned(value))))
    }
}

/// Splits a list header value on commas outside quoted strings and `<...>`, calling `each`
/// with every trimmed element. Returns false on an empty element or an unbalanced quote.
fn split_list(value: &str, mut each: impl FnMut(&str)) -> bool {
    let b = value.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while i < b.len() {
        match b[i] {
            b'"' if !in_angle => match scan_quoted(b, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return false,
            },
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                let item = value[start..i].trim_matches([' ', '\t']);
                if item.is_empty() {
                    return false;
                }
                each(item);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let item = value[start..].trim_matches([' ', '\t']);
    if item.is_empty() {
        return false;
    }
    each(item);
    true
}

/// The static name a `BadHeader` error carries.
fn static_name(name: &HeaderName) -> &'static str {
    match name {
        HeaderName::Via => "Via",
        HeaderName::From => "From",
        HeaderName::To => "To",
        HeaderName::CallId => "Call-ID",
        HeaderName::CSeq => "CSeq",
        HeaderName::Contact => "Contact",
        HeaderName::MaxForwards => "Max-Forwards",
        HeaderName::ContentLength => "Content-Length",
        HeaderName::Expires => "Expires",
        HeaderName::Date => "Date",
        HeaderName::Route => "Route",
        HeaderName::RecordRoute => "Record-Route",
        HeaderName::Path => "Path",
        HeaderName::Allow => "Allow",
        HeaderName::Supported => "Supported",
        HeaderName::Require => "Require",
        HeaderName::ProxyRequire => "Proxy-Require",
        HeaderName::Unsupported => "Unsupported",
        _ => "header",
    }
}

/// Checks the grammar of one known header value; records Content-Length and the CSeq
/// method on the way. Unknown headers are opaque text and always pass.
fn validate_header(
    h: &Header,
    content_length: &mut ContentLength,
    cseq_method: &mut Option<Method>,
) -> Result<(), ParseErrorKind> {
    let v = h.value.as_str();
    let ok = match h.name {
        HeaderName::Via => parse_via(v).is_ok(),
        HeaderName::From | HeaderName::To => parse_name_addr(v).is_ok(),
        // `*` is only meaningful in REGISTER; its misuse is semantic, not syntax.
        HeaderName::Contact => v == "*" || parse_name_addr(v).is_ok(),
        // route-param = name-addr *( SEMI rr-param ): the brackets are mandatory.
        HeaderName::Route | HeaderName::RecordRoute | HeaderName::Path => {
            matches!(name_addr(v), Ok((_, true)))
        }
        HeaderName::CSeq => match parse_cseq(v) {
            Ok(cseq) => {
                cseq_method.get_or_insert(cseq.method);
                true
            }
            Err(_) => false,
        },
        HeaderName::CallId => is_call_id(v),
        // RFC 3261 §20.22: 0–255. RFC 4475 §3.1.2.4 lets us refuse an overlarge value.
        HeaderName::MaxForwards => parse_digits_u64(v).is_some_and(|n| n <= 255),
        // delta-seconds; an overlarge value is clamped by the registrar (RFC 4475
        // §3.1.2.4), so only the digits are checked here.
        HeaderName::Expires => !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
        HeaderName::ContentLength => {
            let n = parse_digits_u64(v).ok_or(ParseErrorKind::BadContentLength)?;
            *content_length = merge_length(*content_length, n);
            true
        }
        HeaderName::Date => is_rfc1123_gmt(v),
        // Option tags and methods are tokens; an empty list is allowed (RFC 3261 §20.37).
        HeaderName::Allow
        | HeaderName::Supported
        | HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Unsupported => v.is_empty() || is_token(v),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(ParseErrorKind::BadHeader(static_name(&h.name)))
    }
}

/// 1*DIGIT as a number; `None` when empty, not digits, or beyond u64.
fn parse_digits_u64(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// Call-ID = word [ "@" word ] (RFC 3261 §25.1).
fn is_call_id(s: &str) -> bool {
    let (a, b) = match s.split_once('@') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let word = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
    word(a) && b.is_none_or(word)
}

/// rfc1123-date = wkday "," SP date1 SP time SP "GMT" (RFC 3261 §20.17: GMT only).
fn is_rfc1123_gmt(s: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    // "Sat, 13 Nov 2010 23:29:00 GMT"
    if b.len() != 29 || !s.is_ascii() {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    DAYS.contains(&&s[0..3])
        && &s[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&s[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &s[25..] == " GMT"
}

// ---------------------------------------------------------------------------------------
// Character classes (RFC 3261 §25.1)
// ---------------------------------------------------------------------------------------

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Every byte passes `allowed` or starts a valid `%HH` escape.
fn all_escaped_or(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// With `b[start] == b'"'`, the index just past the closing quote of a quoted-string
/// (quoted-pair escapes any octet but CR and LF), or `None` if it is unterminated or
/// carries an unescaped control character.
fn scan_quoted(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let next = *b.get(i + 1)?;
                if next == b'\r' || next == b'\n' {
                    return None;
                }
                i += 2;
            }
            b'"' => return Some(i + 1),
            c if (c < 0x20 && c != b'\t') || c == 0x7f => return None,
            _ => i += 1,
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// URIs
// ---------------------------------------------------------------------------------------

/// Parses a URI: `sip:`/`sips:` fully (RFC 3261 §19.1.1), any other scheme opaque. No
/// surrounding whitespace or angle brackets are accepted.
pub fn parse_uri(s: &str) -> Result<Uri, SipError> {
    let colon = s.find(':').ok_or(SipError::BadUri("missing scheme"))?;
    let scheme = &s[..colon];
    let sb = scheme.as_bytes();
    if sb.is_empty()
        || !sb[0].is_ascii_alphabetic()
        || !sb
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return Err(SipError::BadUri("bad scheme"));
    }
    let rest = &s[colon + 1..];
    if scheme.eq_ignore_ascii_case("sip") {
        parse_sip_uri(Scheme::Sip, rest)
    } else if scheme.eq_ignore_ascii_case("sips") {
        parse_sip_uri(Scheme::Sips, rest)
    } else if scheme.eq_ignore_ascii_case("tel") {
        opaque_uri(Scheme::Tel, rest)
    } else {
        opaque_uri(Scheme::Other(scheme.to_string()), rest)
    }
}

fn opaque_uri(scheme: Scheme, rest: &str) -> Result<Uri, SipError> {
    // Visible ASCII minus the characters that delimit a URI inside a header.
    if rest.is_empty()
        || !rest
            .bytes()
            .all(|b| b > 0x20 && b < 0x7f && !matches!(b, b'<' | b'>' | b'"'))
    {
        return Err(SipError::BadUri("bad opaque URI"));
    }
    Ok(Uri {
        scheme,
        user: None,
        password: None,
        host: rest.to_string(),
        port: None,
        params: Vec::new(),
        headers: None,
    })
}

fn is_user_char(b: u8) -> bool {
    // `#` is not allowed unescaped (RFC 3261 §25.1) but phones send dial strings like
    // `*97#` in the user part; accepting it costs nothing and avoids refusing real calls.
    is_unreserved(b)
        || matches!(
            b,
            b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/' | b'#'
        )
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_header_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

fn is_hostname_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// `host` = hostname / IPv4address / IPv6reference; returns the host and the rest.
fn split_host(s: &str) -> Result<(&str, &str), SipError> {
    let b = s.as_bytes();
    if b.first() == Some(&b'[') {
        let close = s
            .find(']')
            .ok_or(SipError::BadUri("unterminated IPv6 reference"))?;
        let inner = &b[1..close];
        if inner.is_empty()
            || !inner.contains(&b':')
            || !inner
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return Err(SipError::BadUri("bad IPv6 reference"));
        }
        return Ok((&s[..=close], &s[close + 1..]));
    }
    let end = b
        .iter()
        .position(|&c| !is_hostname_char(c))
        .unwrap_or(b.len());
    if end == 0 {
        return Err(SipError::BadUri("missing host"));
    }
    Ok((&s[..end], &s[end..]))
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_sip_uri(scheme: Scheme, rest: &str) -> Result<Uri, SipError> {
    // No delimiter of the userinfo may appear unescaped in host, params or headers, so the
    // first `@` ends it — even when the user part holds `?`, `;` or `/` (RFC 4475 §3.1.1.2).
    let (userinfo, hostpart) = match rest.find('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = match ui.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if u.is_empty() || !all_escaped_or(u, is_user_char) {
                return Err(SipError::BadUri("bad user"));
            }
            if let Some(p) = p {
                if !all_escaped_or(p, is_password_char) {
                    return Err(SipError::BadUri("bad password"));
                }
            }
            (Some(u.to_string()), p.map(str::to_string))
        }
    };
    let (host, mut after) = split_host(hostpart)?;
    let mut port = None;
    if let Some(p) = after.strip_prefix(':') {
        let end = p.find([';', '?']).unwrap_or(p.len());
        port = Some(parse_port(&p[..end]).ok_or(SipError::BadUri("bad port"))?);
        after = &p[end..];
    }
    let (param_text, headers) = match after.find('?') {
        Some(i) => (&after[..i], Some(&after[i + 1..])),
        None => (after, None),
    };
    let mut params = Vec::new();
    if !param_text.is_empty() {
        let Some(list) = param_text.strip_prefix(';') else {
            return Err(SipError::BadUri("junk after host"));
        };
        for p in list.split(';') {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            if name.is_empty() || !all_escaped_or(name, is_param_char) {
                return Err(SipError::BadUri("bad parameter"));
            }
            if let Some(v) = value {
                if v.is_empty() || !all_escaped_or(v, is_param_char) {
                    return Err(SipError::BadUri("bad parameter value"));
                }
            }
            params.push(Param::new(name, value));
        }
    }
    if let Some(h) = headers {
        let ok = !h.is_empty()
            && h.split('&').all(|hv| match hv.split_once('=') {
                Some((n, v)) => {
                    !n.is_empty()
                        && all_escaped_or(n, is_header_char)
                        && all_escaped_or(v, is_header_char)
                }
                None => false,
            });
        if !ok {
            return Err(SipError::BadUri("bad headers"));
        }
    }
    Ok(Uri {
        scheme,
        user,
        password,
        host: host.to_string(),
        port,
        params,
        headers: headers.map(str::to_string),
    })
}

/// Decodes `%HH` escapes (RFC 3261 §19.1.4); invalid escapes are kept literally and
/// invalid UTF-8 is replaced.
pub fn unescape(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Header values
// ---------------------------------------------------------------------------------------

/// Header parameters `*( SEMI generic-param )` with SWS around `;` and `=` (RFC 3261
/// §25.1); values keep their quotes so that printing gives back what was read.
fn parse_header_params(s: &str) -> Result<Vec<Param>, ()> {
    let b = s.as_bytes();
    let mut params = Vec::new();
    let mut i = skip_ws(b, 0);
    while i < b.len() {
        if b[i] != b';' {
            return Err(());
        }
        i = skip_ws(b, i + 1);
        let start = i;
        while i < b.len() && is_token_char(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(());
        }
        let name = &s[start..i];
        i = skip_ws(b, i);
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i = skip_ws(b, i + 1);
            let vstart = i;
            if i < b.len() && b[i] == b'"' {
                i = scan_quoted(b, i).ok_or(())?;
            } else {
                // gen-value = token / host / quoted-string
                while i < b.len() && (is_token_char(b[i]) || matches!(b[i], b'[' | b']' | b':')) {
                    i += 1;
                }
                if i == vstart {
                    return Err(());
                }
            }
            value = Some(&s[vstart..i]);
            i = skip_ws(b, i);
        }
        params.push(Param::new(name, value));
    }
    Ok(params)
}

/// Parses one Via value (RFC 3261 §20.42): `SIP / 2.0 / transport LWS sent-by *(; param)`,
/// with LWS allowed around `/`, `:`, `;` and `=`. Unknown transports are kept (RFC 4475
/// §3.1.1.10).
pub fn parse_via(s: &str) -> Result<Via, SipError> {
    let bad = || SipError::BadHeader("Via");
    let s = s.trim_matches([' ', '\t']);
    let b = s.as_bytes();
    let token_at = |i: usize| -> (usize, usize) {
        let mut j = i;
        while j < b.len() && is_token_char(b[j]) {
            j += 1;
        }
        (i, j)
    };
    let (a, e) = token_at(0);
    if !s[a..e].eq_ignore_ascii_case("SIP") {
        return Err(bad());
    }
    let mut i = skip_ws(b, e);
    if b.get(i) != Some(&b'/') {
        return Err(bad());
    }
    let (a, e) = token_at(skip_ws(b, i + 1));
    if &s[a..e] != "2.0" {
        return Err(bad());
    }
    i = skip_ws(b, e);
    if b.get(i) != Some(&b'/') {
        return Err(bad());
    }
    let (a, e) = token_at(skip_ws(b, i + 1));
    if a == e {
        return Err(bad());
    }
    let transport = s[a..e].to_ascii_uppercase();
    i = skip_ws(b, e);
    if i == e {
        return Err(bad()); // LWS between sent-protocol and sent-by is mandatory
    }
    let (host, rest) = split_host(&s[i..]).map_err(|_| bad())?;
    let rb = rest.as_bytes();
    let mut j = skip_ws(rb, 0);
    let mut port = None;
    if rb.get(j) == Some(&b':') {
        let ps = skip_ws(rb, j + 1);
        let mut pe = ps;
        while pe < rb.len() && rb[pe].is_ascii_digit() {
            pe += 1;
        }
        port = Some(parse_port(&rest[ps..pe]).ok_or_else(bad)?);
        j = pe;
    }
    let params = parse_header_params(&rest[j..]).map_err(|_| bad())?;
    Ok(Via {
        transport,
        host: host.to_string(),
        port,
        params,
    })
}

/// Parses a name-addr or addr-spec with header parameters (From, To, Contact, Route…).
/// In the bare addr-spec form every `;` parameter is a header parameter, and a URI holding
/// `,` or `?` is refused (RFC 3261 §20.10, RFC 4475 §3.1.2.13).
pub fn parse_name_addr(s: &str) -> Result<NameAddr, SipError> {
    name_addr(s).map(|(na, _)| na)
}

/// `parse_name_addr`, also telling whether the URI was in angle brackets.
fn name_addr(s: &str) -> Result<(NameAddr, bool), SipError> {
    let bad = |what: &'static str| SipError::BadUri(what);
    let s = s.trim_matches([' ', '\t']);
    let b = s.as_bytes();
    let mut display = None;
    let mut i = 0;
    if b.first() == Some(&b'"') {
        let end = scan_quoted(b, 0).ok_or(bad("unterminated display name"))?;
        display = Some(&s[..end]);
        i = skip_ws(b, end);
        if b.get(i) != Some(&b'<') {
            return Err(bad("display name without <URI>"));
        }
    } else if b.first() != Some(&b'<') {
        // A display name as a token list, when the tokens are followed by `<`; otherwise
        // this is a bare addr-spec (whose scheme is followed by `:`, not a token char).
        let mut j = 0;
        loop {
            let start = j;
            while j < b.len() && is_token_char(b[j]) {
                j += 1;
            }
            if j == start {
                break;
            }
            let after = skip_ws(b, j);
            if b.get(after) == Some(&b'<') {
                display = Some(s[..j].trim_end_matches([' ', '\t']));
                i = after;
                break;
            }
            if after == j {
                break; // a non-token, non-space character: not a display name
            }
            j = after;
        }
    }
    if b.get(i) == Some(&b'<') {
        let close = s[i..].find('>').ok_or(bad("unterminated <URI>"))? + i;
        let uri = parse_uri(&s[i + 1..close])?;
        let params =
            parse_header_params(&s[close + 1..]).map_err(|_| bad("bad header parameters"))?;
        let display = display.map(str::to_string);
        return Ok((
            NameAddr {
                display_name: display,
                uri,
                params,
            },
            true,
        ));
    }
    // Bare addr-spec: it ends at the first `;` or whitespace (after the userinfo, which
    // may not be told apart from parameters and is therefore refused if it holds `;`).
    let end = b
        .iter()
        .position(|&c| c == b';' || is_ws(c))
        .unwrap_or(b.len());
    let spec = &s[..end];
    if spec
        .bytes()
        .any(|c| matches!(c, b',' | b'?' | b'<' | b'>' | b'"'))
    {
        return Err(bad("addr-spec with , or ? must be in <>"));
    }
    let uri = parse_uri(spec)?;
    let params = parse_header_params(&s[end..]).map_err(|_| bad("bad header parameters"))?;
    Ok((
        NameAddr {
            display_name: None,
            uri,
            params,
        },
        false,
    ))
}

/// Parses CSeq (RFC 3261 §20.16): `1*DIGIT LWS Method`. The number must be below 2^31
/// (RFC 3261 §8.1.1.5; RFC 4475 §3.1.2.4 wants anything beyond 32 bits refused, and no
/// valid sequence reaches 2^31 from a start below it).
pub fn parse_cseq(s: &str) -> Result<CSeq, SipError> {
    let bad = || SipError::BadHeader("CSeq");
    let s = s.trim_matches([' ', '\t']);
    let b = s.as_bytes();
    let digits_end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    let seq = parse_digits_u64(&s[..digits_end]).ok_or_else(bad)?;
    if seq >= 1 << 31 {
        return Err(bad());
    }
    let m = skip_ws(b, digits_end);
    if m == digits_end {
        return Err(bad());
    }
    let method = &s[m..];
    if !is_token(method) {
        return Err(bad());
    }
    Ok(CSeq {
        seq: seq as u32,
        method: Method::from_token(method),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3261 §24.2 F1, Alice's INVITE (with its SDP replaced by a short body).
    const INVITE: &str = "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn request(text: &str) -> Request {
        match parse_datagram(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc3261_invite_parses_and_prints() {
        let req = request(INVITE);
        assert_eq!(req.method, Method::Invite);
        assert_eq!(req.uri.to_string(), "sip:bob@biloxi.com");
        assert_eq!(req.headers.0.len(), 9);
        assert_eq!(req.call_id(), Ok("a84b4c76e66710"));
        assert_eq!(req.cseq().unwrap().seq, 314159);
        assert_eq!(req.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(req.top_via().unwrap().branch(), Some("z9hG4bKnashds8"));
        assert_eq!(req.body, b"v=0\n");
        // Printing gives the same bytes back: every header was in canonical form.
        assert_eq!(String::from_utf8(req.to_bytes()).unwrap(), INVITE);
    }

    #[test]
    fn rfc3261_response_parses_and_prints() {
        // RFC 3261 §24.2 F2, with an empty body.
        let text = "SIP/2.0 180 Ringing\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n\
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
CSeq: 314159 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        let Ok(Message::Response(resp)) = parse_datagram(text.as_bytes()) else {
            panic!("a response");
        };
        assert_eq!((resp.status, resp.reason.as_str()), (180, "Ringing"));
        assert_eq!(resp.to().unwrap().tag(), Some("a6c85cf"));
        assert_eq!(String::from_utf8(resp.to_bytes()).unwrap(), text);
    }

    #[test]
    fn folding_compact_forms_and_lists() {
        let text = "\r\n\r\nOPTIONS sip:carol@chicago.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n SIP/2.0/TCP b.example.com;branch=z9hG4bK2\r\n\
f: \"Smith, J\" <sip:j@example.com>;tag=1\r\n\
t:\r\n\t<sip:carol@chicago.com>\r\n\
i: 1@host\r\n\
CSEQ  :  1 OPTIONS\r\n\
m: \"a,b\" <sip:x@y>, <sip:p@q;lr>\r\n\
Subject: first\r\n  second\r\n\
k: path,  outbound\r\n\
l: 0\r\n\r\n";
        let req = request(text);
        let vias: Vec<&str> = req.headers.get_all(&HeaderName::Via).collect();
        assert_eq!(
            vias,
            [
                "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
                "SIP/2.0/TCP b.example.com;branch=z9hG4bK2"
            ]
        );
        assert_eq!(
            req.from().unwrap().display_name.as_deref(),
            Some("\"Smith, J\"")
        );
        assert_eq!(
            req.headers.get(&HeaderName::To),
            Some("<sip:carol@chicago.com>")
        );
        let contacts: Vec<&str> = req.headers.get_all(&HeaderName::Contact).collect();
        assert_eq!(contacts, ["\"a,b\" <sip:x@y>", "<sip:p@q;lr>"]);
        assert_eq!(req.headers.get(&HeaderName::Subject), Some("first second"));
        let supported: Vec<&str> = req.headers.get_all(&HeaderName::Supported).collect();
        assert_eq!(supported, ["path", "outbound"]);
    }

    #[test]
    fn content_length_on_datagrams() {
        let base = INVITE.replace("Content-Length: 4\r\n", "");
        // Absent: the body is the rest.
        assert_eq!(request(&base).body, b"v=0\n");
        // Smaller: truncated (RFC 4475 §3.1.1.8).
        let short = INVITE.replace("Content-Length: 4", "Content-Length: 2");
        assert_eq!(request(&short).body, b"v=");
        // Larger, negative, not a number: refused with a 400.
        for (cl, kind) in [
            ("5", ParseErrorKind::BodyTruncated),
            ("-1", ParseErrorKind::BadContentLength),
            ("4x", ParseErrorKind::BadContentLength),
            ("99999999999999999999999", ParseErrorKind::BadContentLength),
        ] {
            let text = INVITE.replace("Content-Length: 4", &format!("Content-Length: {cl}"));
            let err = parse_datagram(text.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), kind, "{cl}");
            let resp = err.response().unwrap();
            assert_eq!(
                (resp.status, resp.reason.as_str()),
                (400, "Bad Content-Length")
            );
        }
    }

    #[test]
    fn error_response_copies_headers_and_adds_a_stable_to_tag() {
        let text = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 7O");
        let err = parse_datagram(text.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ParseErrorKind::BadHeader("Max-Forwards"));
        let resp = err.response().unwrap();
        assert_eq!(
            (resp.status, resp.reason.as_str()),
            (400, "Bad Max-Forwards")
        );
        assert_eq!(resp.call_id(), Ok("a84b4c76e66710"));
        assert_eq!(resp.cseq().unwrap().seq, 314159);
        let tag = resp.to().unwrap().tag().map(str::to_string);
        assert!(tag.is_some());
        // A retransmission gets the same tag.
        let again = parse_datagram(text.as_bytes())
            .unwrap_err()
            .response()
            .unwrap();
        assert_eq!(again.to().unwrap().tag().map(str::to_string), tag);

        // Never an answer to an ACK or a response.
        let ack = text.replace("INVITE", "ACK");
        assert!(parse_datagram(ack.as_bytes())
            .unwrap_err()
            .response()
            .is_none());
        let resp_text = "SIP/2.0 200 OK\r\nCSeq: x INVITE\r\n\r\n";
        assert!(parse_datagram(resp_text.as_bytes())
            .unwrap_err()
            .response()
            .is_none());
        // Nor when a header the answer needs is missing.
        let no_call_id = text.replace("Call-ID: a84b4c76e66710\r\n", "");
        assert!(parse_datagram(no_call_id.as_bytes())
            .unwrap_err()
            .response()
            .is_none());
    }

    #[test]
    fn versions_and_start_lines() {
        let v3 = INVITE.replacen("SIP/2.0\r\n", "SIP/3.0\r\n", 1);
        let err = parse_datagram(v3.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ParseErrorKind::BadVersion);
        assert_eq!(err.response().unwrap().status, 505);
        // SIP-Version is case-insensitive (RFC 3261 §7.1).
        assert!(
            parse_datagram(INVITE.replacen("SIP/2.0\r\n", "sip/2.0\r\n", 1).as_bytes()).is_ok()
        );
        for line in [
            "INVITE sip:bob@biloxi.com",
            "INVITE  sip:bob@biloxi.com SIP/2.0",
            "INVITE sip:bob@biloxi.com SIP/2.0 ",
            "INVITE <sip:bob@biloxi.com> SIP/2.0",
            "INVITE sip:bob@biloxi.com?Route=x SIP/2.0",
            "IN(VITE sip:bob@biloxi.com SIP/2.0",
            "INVITE sip:bob@biloxi.com HTTP/1.1",
        ] {
            let text = INVITE.replacen("INVITE sip:bob@biloxi.com SIP/2.0", line, 1);
            assert!(parse_datagram(text.as_bytes()).is_err(), "{line:?}");
        }
        // Found by cargo-fuzz: a multi-byte character inside the first four bytes.
        assert!(parse_datagram("SIPо сто\r\n\r\n".as_bytes()).is_err());
        assert!(parse_datagram("INVITE sip:a@b SIPо\r\n\r\n".as_bytes()).is_err());
        for (line, ok) in [
            ("SIP/2.0 100 ", true),
            ("SIP/2.0 100", true),
            ("SIP/2.0 699 Whatever", true),
            ("SIP/2.0 099 Low", false),
            ("SIP/2.0 700 High", false),
            ("SIP/2.0 2000 Long", false),
            ("SIP/2.0  200 OK", false),
            ("SIP/2.0 20a OK", false),
        ] {
            let text = format!("{line}\r\nCall-ID: x\r\n\r\n");
            assert_eq!(parse_datagram(text.as_bytes()).is_ok(), ok, "{line:?}");
        }
    }

    #[test]
    fn header_lines_and_values() {
        let ok = |h: &str| {
            let text = INVITE.replacen("Content-Type", &format!("{h}\r\nContent-Type"), 1);
            parse_datagram(text.as_bytes()).is_ok()
        };
        assert!(ok("Date: Sat, 13 Nov 2010 23:29:00 GMT"));
        assert!(!ok("Date: Sat, 13 Nov 2010 23:29:00 EST"));
        assert!(!ok("Date: 13 Nov 2010 23:29:00 GMT"));
        assert!(ok("Expires: 3600"));
        assert!(!ok("Expires: soon"));
        assert!(ok(
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>"
        ));
        assert!(!ok("Route: sip:p1.example.com;lr"));
        assert!(ok("Contact: *"));
        assert!(ok("Require: 100rel, timer"));
        assert!(!ok("Require: 100rel timer"));
        assert!(!ok("Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,"));
        assert!(ok("X-Anything: ;;,,;;,;"));
        assert!(!ok("Bad Name: x"));
        assert!(!ok("NoColon"));
        assert!(!ok("X-Bare: a\rb"));
        assert!(ok("Allow:"));
        let call_id = |v: &str| {
            parse_datagram(
                INVITE
                    .replace("Call-ID: a84b4c76e66710", &format!("Call-ID: {v}"))
                    .as_bytes(),
            )
            .is_ok()
        };
        assert!(call_id("f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com"));
        assert!(!call_id("two words"));
        assert!(!call_id("a@b@c"));
        assert!(!call_id(""));
        // A continuation right after the start line has nothing to continue.
        let text = INVITE.replacen("\r\nVia", "\r\n Via", 1);
        assert!(parse_datagram(text.as_bytes()).is_err());
        // Not UTF-8 in the header section.
        let text = INVITE
            .replacen("Bob", "B\u{fffd}b", 1)
            .replace('\u{fffd}', "\u{0}");
        let mut bytes = text.into_bytes();
        let at = bytes.iter().position(|&b| b == 0).unwrap();
        bytes[at] = 0xff;
        assert_eq!(
            parse_datagram(&bytes).unwrap_err().kind(),
            ParseErrorKind::NotUtf8
        );
    }

    #[test]
    fn empty_and_unterminated_datagrams() {
        assert_eq!(
            parse_datagram(b"").unwrap_err().kind(),
            ParseErrorKind::Empty
        );
        assert_eq!(
            parse_datagram(b"\r\n\r\n").unwrap_err().kind(),
            ParseErrorKind::Empty
        );
        // Headers ending at the end of the datagram without the empty line: tolerated.
        let head = &INVITE[..INVITE.find("\r\n\r\n").unwrap() + 2];
        let head = head.replace("Content-Length: 4", "Content-Length: 0");
        assert!(parse_datagram(head.as_bytes()).is_ok());
        // Cut in the middle of a line: refused, but still answerable.
        let cut = &head[..head.len() - 2];
        let err = parse_datagram(cut.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ParseErrorKind::UnterminatedHeaders);
        assert_eq!(err.response().unwrap().status, 400);
    }

    #[test]
    fn stream_keep_alive_then_message() {
        let mut wire = b"\r\n\r\n".to_vec();
        wire.extend_from_slice(INVITE.as_bytes());
        let Ok(StreamItem::KeepAlive(4)) = parse_stream(&wire, 4096) else {
            panic!("keep-alive first");
        };
        let Ok(StreamItem::Message(Message::Request(r), n)) = parse_stream(&wire[4..], 4096) else {
            panic!("then the message");
        };
        assert_eq!(n, INVITE.len());
        assert_eq!(r.body, b"v=0\n");
        assert!(matches!(
            parse_stream(&wire[4..wire.len() - 1], 4096),
            Ok(StreamItem::Incomplete)
        ));
        assert_eq!(
            parse_stream(INVITE.as_bytes(), 100).err().map(|e| e.kind()),
            Some(ParseErrorKind::TooLarge)
        );
    }

    #[test]
    fn unescape_decodes_valid_escapes_only() {
        assert_eq!(
            unescape("sips%3Auser%40example.com"),
            "sips:user@example.com"
        );
        assert_eq!(unescape("%Z%45"), "%ZE");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("null-%00-null"), "null-\0-null");
        assert_eq!(unescape("plain"), "plain");
    }
}
