//! SDP (RFC 4566) as data: a parser that tolerates what real phones send and names the line
//! of anything structurally broken, a printer that writes CRLF lines in RFC order, the helpers
//! a media-anchoring B2BUA needs (codecs, direction, rewriting `c=`/`m=`), and RFC 3264
//! offer/answer in [`negotiate`]. Pure: no sockets, no clocks, no allocation of ports (the
//! caller passes the ports it owns).
//!
//! Round-trip contract: for any input that parses, `parse(print(sdp)) == sdp`. Lines are
//! printed in the canonical RFC 4566 order, so a description whose lines were out of order
//! prints reordered, but every line is kept: unknown type letters verbatim (in `other`),
//! unknown attributes as [`Attribute`]s.

mod media;
pub mod negotiate;

use std::fmt;

pub use media::{static_rtpmap, Direction, Rtcp, RtpMap};
pub use negotiate::{
    answer, build_offer, initial_offer, negotiated, AnswerOutcome, AnswerParams, Capabilities,
    CodecCap, NegotiatedStream,
};

/// Why a description was refused. Parse errors carry the 1-based line number (counting
/// every `\n`-terminated line of the input, blank ones included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    #[error("empty session description")]
    Empty,
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: expected `<letter>=<value>`")]
    MalformedLine { line: usize },
    #[error("line {line}: a session description must start with v=")]
    MissingVersionLine { line: usize },
    #[error("line {line}: unsupported SDP version {value:?} (only v=0 exists)")]
    UnsupportedVersion { line: usize, value: String },
    #[error("line {line}: {letter}= line: {reason}")]
    InvalidLine {
        line: usize,
        letter: char,
        reason: &'static str,
    },
    #[error("line {line}: {letter}= line is not allowed here: {reason}")]
    Misplaced {
        line: usize,
        letter: char,
        reason: &'static str,
    },
    #[error("line {line}: second {letter}= line where only one is allowed")]
    Duplicate { line: usize, letter: char },
    #[error("line {line}: the session has no {letter}= line (required by RFC 4566 §5)")]
    Missing { line: usize, letter: char },
    #[error(
        "line {line}: media stream has no c= line and there is no session-level c= (RFC 4566 §5.7)"
    )]
    MissingConnection { line: usize },
    /// The offer has no stream we can accept: answer the INVITE with 488.
    #[error("no acceptable media stream in the offer (answer 488 Not Acceptable Here)")]
    NotAcceptable,
    /// The caller gave fewer local ports than the offer has `m=` lines.
    #[error("{given} local ports for an offer with {needed} media streams")]
    NotEnoughPorts { needed: usize, given: usize },
}

impl SdpError {
    /// The input line the error is about, if it is a parse error.
    pub fn line(&self) -> Option<usize> {
        match self {
            SdpError::NotUtf8 { line }
            | SdpError::MalformedLine { line }
            | SdpError::MissingVersionLine { line }
            | SdpError::UnsupportedVersion { line, .. }
            | SdpError::InvalidLine { line, .. }
            | SdpError::Misplaced { line, .. }
            | SdpError::Duplicate { line, .. }
            | SdpError::Missing { line, .. }
            | SdpError::MissingConnection { line } => Some(*line),
            _ => None,
        }
    }
}

/// A whole session description (RFC 4566 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `v=`; always 0 (anything else is refused).
    pub version: u32,
    pub origin: Origin,
    /// `s=`, verbatim (RFC 4566 recommends `s= ` or `s=-` when there is no name).
    pub session_name: String,
    /// `i=`
    pub information: Option<String>,
    /// `u=`
    pub uri: Option<String>,
    /// `e=` lines.
    pub emails: Vec<String>,
    /// `p=` lines.
    pub phones: Vec<String>,
    pub connection: Option<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines with their `r=` lines.
    pub times: Vec<Timing>,
    /// `z=`, verbatim.
    pub time_zones: Option<String>,
    /// `k=`, verbatim (obsolete; kept so printing round-trips).
    pub encryption_key: Option<String>,
    pub attributes: Vec<Attribute>,
    /// Session-level lines with a type letter RFC 4566 does not define, verbatim
    /// (`x=...`). Printed after the attributes.
    pub other: Vec<String>,
    pub media: Vec<MediaDescription>,
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Kept as text: real phones send ids wider than 64 bits.
    pub session_id: String,
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

impl Origin {
    /// RFC 3264 §8: each new offer or answer that differs from the previous one in the same
    /// session carries the version plus one. Wraps instead of overflowing (a peer can send
    /// `u64::MAX`).
    pub fn bump_version(&mut self) {
        self.session_version = self.session_version.wrapping_add(1);
    }
}

/// `c=<nettype> <addrtype> <connection-address>`; the address keeps any multicast
/// `/ttl/count` suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IN`
    pub net_type: String,
    /// `IP4` or `IP6`
    pub addr_type: String,
    pub address: String,
}

impl Connection {
    /// `IN IP4 <address>` or `IN IP6 <address>`, chosen by whether `address` has a colon.
    pub fn new(address: &str) -> Connection {
        Connection {
            net_type: "IN".into(),
            addr_type: addr_type_of(address).into(),
            address: address.into(),
        }
    }

    /// `0.0.0.0` or `::`: RFC 3264 §8.4 (and RFC 2543 hold) says send nothing there.
    pub fn is_unspecified(&self) -> bool {
        self.address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
    }
}

/// `IP6` when the address looks like an IPv6 literal, `IP4` otherwise.
pub(crate) fn addr_type_of(address: &str) -> &'static str {
    if address.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}

/// `b=<bwtype>:<bandwidth>` (kilobits per second for CT/AS, bits for TIAS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    pub bwtype: String,
    pub bandwidth: u64,
}

/// `t=<start> <stop>` and its `r=` lines (kept verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub start: u64,
    pub stop: u64,
    pub repeats: Vec<String>,
}

/// `a=<name>` or `a=<name>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    /// A property attribute such as `a=sendrecv`.
    pub fn flag(name: &str) -> Attribute {
        Attribute {
            name: name.into(),
            value: None,
        }
    }

    /// A value attribute such as `a=rtpmap:0 PCMU/8000`.
    pub fn new(name: &str, value: impl Into<String>) -> Attribute {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    fn parse(text: &str) -> Attribute {
        match text.split_once(':') {
            Some((name, value)) => Attribute::new(name, value),
            None => Attribute::flag(text),
        }
    }
}

/// One `m=` section (RFC 4566 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `text`, `application`, `message`, or anything else.
    pub media: String,
    /// 0 means the stream is rejected or disabled (RFC 3264 §5.1, §6).
    pub port: u16,
    /// The `/<number of ports>` suffix, if given.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `RTP/AVPF`, `UDP/TLS/RTP/SAVPF`, `udp`, ...
    pub proto: String,
    /// Payload type numbers for RTP; opaque tokens otherwise.
    pub formats: Vec<String>,
    /// `i=`
    pub information: Option<String>,
    /// The first `c=` of the section.
    pub connection: Option<Connection>,
    /// Further `c=` lines (layered multicast, RFC 4566 §5.7); kept so printing round-trips.
    pub extra_connections: Vec<Connection>,
    pub bandwidths: Vec<Bandwidth>,
    /// `k=`, verbatim.
    pub encryption_key: Option<String>,
    pub attributes: Vec<Attribute>,
    /// Lines with an unknown type letter, verbatim. Printed after the attributes.
    pub other: Vec<String>,
}

impl MediaDescription {
    /// A section with the given media line and nothing else.
    pub fn new(media: &str, port: u16, proto: &str, formats: Vec<String>) -> MediaDescription {
        MediaDescription {
            media: media.into(),
            port,
            port_count: None,
            proto: proto.into(),
            formats,
            information: None,
            connection: None,
            extra_connections: Vec::new(),
            bandwidths: Vec::new(),
            encryption_key: None,
            attributes: Vec::new(),
            other: Vec::new(),
        }
    }

    /// The value of the first `a=<name>:...`, or `Some("")` for a flag `a=<name>`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name)
    }
}

fn find_attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_deref().unwrap_or(""))
}

impl SessionDescription {
    /// A minimal description: `v=0`, the given `o=`, `s=-`, `c=` for `address`, `t=0 0`.
    pub fn new(origin: Origin, address: &str) -> SessionDescription {
        SessionDescription {
            version: 0,
            origin,
            session_name: "-".into(),
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: Some(Connection::new(address)),
            bandwidths: Vec::new(),
            times: vec![Timing {
                start: 0,
                stop: 0,
                repeats: Vec::new(),
            }],
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            other: Vec::new(),
            media: Vec::new(),
        }
    }

    /// The value of the first session-level `a=<name>:...` (`Some("")` for a flag).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        find_attribute(&self.attributes, name)
    }

    /// Parse a description; `input` may be `&str`, `&[u8]`, `&String`, `&Vec<u8>`.
    /// Lines may end in CRLF or bare LF; blank lines are skipped.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<SessionDescription, SdpError> {
        Parser::default().run(input.as_ref())
    }

    /// The description as CRLF-terminated lines (what goes into a SIP body).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl std::str::FromStr for SessionDescription {
    type Err = SdpError;
    fn from_str(s: &str) -> Result<SessionDescription, SdpError> {
        SessionDescription::parse(s)
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

#[derive(Default)]
struct Parser {
    version: Option<u32>,
    origin: Option<Origin>,
    session_name: Option<String>,
    information: Option<String>,
    uri: Option<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    times: Vec<Timing>,
    time_zones: Option<String>,
    encryption_key: Option<String>,
    attributes: Vec<Attribute>,
    other: Vec<String>,
    media: Vec<MediaDescription>,
    /// The line of each `m=`, for errors found after the section ends.
    media_lines: Vec<usize>,
}

fn invalid(line: usize, letter: char, reason: &'static str) -> SdpError {
    SdpError::InvalidLine {
        line,
        letter,
        reason,
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, line: usize, letter: char) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(SdpError::Duplicate { line, letter });
    }
    *slot = Some(value);
    Ok(())
}

impl Parser {
    fn run(mut self, input: &[u8]) -> Result<SessionDescription, SdpError> {
        let mut last_line = 0;
        for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(|b| b.is_ascii_whitespace()) {
                continue; // blank lines, and the trailing CRLF of a SIP body
            }
            last_line = line;
            let text = std::str::from_utf8(raw).map_err(|_| SdpError::NotUtf8 { line })?;
            let bytes = text.as_bytes();
            if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
                return Err(SdpError::MalformedLine { line });
            }
            let letter = bytes[0] as char;
            let value = &text[2..];
            if self.version.is_none() {
                if letter != 'v' {
                    return Err(SdpError::MissingVersionLine { line });
                }
                let trimmed = value.trim_end();
                match trimmed.parse::<u32>() {
                    Ok(0) => self.version = Some(0),
                    _ => {
                        return Err(SdpError::UnsupportedVersion {
                            line,
                            value: trimmed.into(),
                        })
                    }
                }
                continue;
            }
            if self.media.is_empty() && letter != 'm' {
                self.session_line(line, letter, text, value)?;
            } else {
                self.media_line(line, letter, text, value)?;
            }
        }
        if self.version.is_none() {
            return Err(SdpError::Empty);
        }
        let end = last_line;
        let first_media_line = self.media_lines.first().copied().unwrap_or(end);
        let origin = self.origin.ok_or(SdpError::Missing {
            line: first_media_line,
            letter: 'o',
        })?;
        let session_name = self.session_name.ok_or(SdpError::Missing {
            line: first_media_line,
            letter: 's',
        })?;
        if self.connection.is_none() {
            for (m, &line) in self.media.iter().zip(&self.media_lines) {
                if m.connection.is_none() && m.port != 0 {
                    return Err(SdpError::MissingConnection { line });
                }
            }
        }
        Ok(SessionDescription {
            version: 0,
            origin,
            session_name,
            information: self.information,
            uri: self.uri,
            emails: self.emails,
            phones: self.phones,
            connection: self.connection,
            bandwidths: self.bandwidths,
            times: self.times,
            time_zones: self.time_zones,
            encryption_key: self.encryption_key,
            attributes: self.attributes,
            other: self.other,
            media: self.media,
        })
    }

    /// Session-level lines. The RFC fixes their order; phones do not always follow it, so
    /// order is not enforced, only multiplicity (the printer restores the order).
    fn session_line(
        &mut self,
        line: usize,
        letter: char,
        text: &str,
        value: &str,
    ) -> Result<(), SdpError> {
        match letter {
            'v' => return Err(SdpError::Duplicate { line, letter }),
            'o' => {
                let origin = parse_origin(value, line)?;
                set_once(&mut self.origin, origin, line, letter)?;
            }
            's' => set_once(&mut self.session_name, value.to_string(), line, letter)?,
            'i' => set_once(&mut self.information, value.to_string(), line, letter)?,
            'u' => set_once(&mut self.uri, value.to_string(), line, letter)?,
            'e' => self.emails.push(value.to_string()),
            'p' => self.phones.push(value.to_string()),
            'c' => {
                let c = parse_connection(value, line)?;
                set_once(&mut self.connection, c, line, letter)?;
            }
            'b' => self.bandwidths.push(parse_bandwidth(value, line)?),
            't' => self.times.push(parse_timing(value, line)?),
            'r' => match self.times.last_mut() {
                Some(t) => t.repeats.push(value.to_string()),
                None => {
                    return Err(SdpError::Misplaced {
                        line,
                        letter,
                        reason: "r= must follow a t= line",
                    })
                }
            },
            'z' => set_once(&mut self.time_zones, value.to_string(), line, letter)?,
            'k' => set_once(&mut self.encryption_key, value.to_string(), line, letter)?,
            'a' => self.attributes.push(parse_attribute(value, line)?),
            _ => self.other.push(text.to_string()),
        }
        Ok(())
    }

    fn media_line(
        &mut self,
        line: usize,
        letter: char,
        text: &str,
        value: &str,
    ) -> Result<(), SdpError> {
        if letter == 'm' {
            self.media.push(parse_media(value, line)?);
            self.media_lines.push(line);
            return Ok(());
        }
        let m = self
            .media
            .last_mut()
            .expect("media_line is called after an m= line");
        match letter {
            'i' => set_once(&mut m.information, value.to_string(), line, letter)?,
            'c' => {
                let c = parse_connection(value, line)?;
                if m.connection.is_none() {
                    m.connection = Some(c);
                } else {
                    m.extra_connections.push(c);
                }
            }
            'b' => m.bandwidths.push(parse_bandwidth(value, line)?),
            'k' => set_once(&mut m.encryption_key, value.to_string(), line, letter)?,
            'a' => m.attributes.push(parse_attribute(value, line)?),
            'v' | 'o' | 's' | 'u' | 'e' | 'p' | 't' | 'r' | 'z' => {
                return Err(SdpError::Misplaced {
                    line,
                    letter,
                    reason: "session-level line inside a media section",
                })
            }
            _ => m.other.push(text.to_string()),
        }
        Ok(())
    }
}

fn parse_origin(value: &str, line: usize) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, session_id, version, net_type, addr_type, address] = fields[..] else {
        return Err(invalid(
            line,
            'o',
            "expected <username> <sess-id> <sess-version> <nettype> <addrtype> <address>",
        ));
    };
    let session_version = version
        .parse::<u64>()
        .map_err(|_| invalid(line, 'o', "session version is not a number"))?;
    Ok(Origin {
        username: username.into(),
        session_id: session_id.into(),
        session_version,
        net_type: net_type.into(),
        addr_type: addr_type.into(),
        address: address.into(),
    })
}

fn parse_connection(value: &str, line: usize) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net_type, addr_type, address] = fields[..] else {
        return Err(invalid(
            line,
            'c',
            "expected <nettype> <addrtype> <connection-address>",
        ));
    };
    Ok(Connection {
        net_type: net_type.into(),
        addr_type: addr_type.into(),
        address: address.into(),
    })
}

fn parse_bandwidth(value: &str, line: usize) -> Result<Bandwidth, SdpError> {
    let (bwtype, bandwidth) = value.trim_end().split_once(':').ok_or(invalid(
        line,
        'b',
        "expected <bwtype>:<bandwidth>",
    ))?;
    if bwtype.is_empty() || bwtype.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(invalid(line, 'b', "bad bandwidth type"));
    }
    let bandwidth = bandwidth
        .parse::<u64>()
        .map_err(|_| invalid(line, 'b', "bandwidth is not a number"))?;
    Ok(Bandwidth {
        bwtype: bwtype.into(),
        bandwidth,
    })
}

fn parse_timing(value: &str, line: usize) -> Result<Timing, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [start, stop] = fields[..] else {
        return Err(invalid(line, 't', "expected <start-time> <stop-time>"));
    };
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| invalid(line, 't', "time is not a number"))
    };
    Ok(Timing {
        start: number(start)?,
        stop: number(stop)?,
        repeats: Vec::new(),
    })
}

fn parse_attribute(value: &str, line: usize) -> Result<Attribute, SdpError> {
    // Trailing blanks carry no meaning and some phones send them after `a=sendrecv`.
    let value = value.trim_end();
    let attribute = Attribute::parse(value);
    if attribute.name.is_empty() || attribute.name.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(invalid(
            line,
            'a',
            "attribute name is empty or contains blanks",
        ));
    }
    Ok(attribute)
}

fn parse_media(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid(
            line,
            'm',
            "expected <media> <port>[/<count>] <proto> <fmt> ...",
        ));
    };
    let number = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| invalid(line, 'm', "port is not a number from 0 to 65535"))
    };
    let (port, port_count) = match port.split_once('/') {
        Some((port, count)) => (number(port)?, Some(number(count)?)),
        None => (number(port)?, None),
    };
    let mut m = MediaDescription::new(media, port, proto, fields.map(String::from).collect());
    m.port_count = port_count;
    Ok(m)
}

// ---------------------------------------------------------------------------------------
// Printing

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.bwtype, self.bandwidth)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}:{}", self.name, value),
            None => f.write_str(&self.name),
        }
    }
}

/// The `m=` line's value: `<media> <port>[/<count>] <proto> <fmt> ...`.
struct MediaLine<'a>(&'a MediaDescription);

impl fmt::Display for MediaLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{} {}", m.media, m.port)?;
        if let Some(count) = m.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", m.proto)?;
        for format in &m.formats {
            write!(f, " {format}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MediaDescription {
    /// The `m=` section as CRLF-terminated lines, in RFC 4566 order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={}\r\n", MediaLine(self))?;
        if let Some(i) = &self.information {
            write!(f, "i={i}\r\n")?;
        }
        for c in self.connection.iter().chain(&self.extra_connections) {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        if let Some(k) = &self.encryption_key {
            write!(f, "k={k}\r\n")?;
        }
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        for line in &self.other {
            write!(f, "{line}\r\n")?;
        }
        Ok(())
    }
}

impl fmt::Display for SessionDescription {
    /// The whole description as CRLF-terminated lines, in RFC 4566 order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v={}\r\n", self.version)?;
        write!(f, "o={}\r\n", self.origin)?;
        write!(f, "s={}\r\n", self.session_name)?;
        if let Some(i) = &self.information {
            write!(f, "i={i}\r\n")?;
        }
        if let Some(u) = &self.uri {
            write!(f, "u={u}\r\n")?;
        }
        for e in &self.emails {
            write!(f, "e={e}\r\n")?;
        }
        for p in &self.phones {
            write!(f, "p={p}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={c}\r\n")?;
        }
        for b in &self.bandwidths {
            write!(f, "b={b}\r\n")?;
        }
        for t in &self.times {
            write!(f, "t={} {}\r\n", t.start, t.stop)?;
            for r in &t.repeats {
                write!(f, "r={r}\r\n")?;
            }
        }
        if let Some(z) = &self.time_zones {
            write!(f, "z={z}\r\n")?;
        }
        if let Some(k) = &self.encryption_key {
            write!(f, "k={k}\r\n")?;
        }
        for a in &self.attributes {
            write!(f, "a={a}\r\n")?;
        }
        for line in &self.other {
            write!(f, "{line}\r\n")?;
        }
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
