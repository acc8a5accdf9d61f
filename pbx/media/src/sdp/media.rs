//! Reading and rewriting what a media-anchoring B2BUA cares about in a description: codecs
//! (RFC 3551 static payload types and `a=rtpmap`/`a=fmtp`), direction (RFC 3264 §5.1),
//! `a=ptime`, `a=rtcp` (RFC 3605), SRTP detection, and the anchoring rewrite.
//!
//! Anchoring: Switchboard terminates the media transport towards each leg, so whatever in
//! a description describes the *other* peer's transport must not reach this leg. Like
//! rtpengine (`replace-origin`, `replace-session-connection`, `ICE=remove`, `rtcp-mux-demux`)
//! and Asterisk with `direct_media=no` (which writes a fresh SDP from its own state), the
//! rewrite replaces `o=`/`c=` addresses and `m=` ports, points `a=rtcp` at our port + 1, and
//! drops ICE (`a=candidate`, `a=remote-candidates`, `a=end-of-candidates`, `a=ice-*`),
//! `a=rtcp-mux` (we relay RTCP on a separate port), and the SRTP/DTLS keying we cannot
//! honour (`a=crypto`, `a=fingerprint`, `a=setup`, `a=tls-id`), plus session-level
//! `a=group:BUNDLE` (each stream gets its own port from us). `a=ssrc`/`a=ssrc-group` and
//! `a=msid` go too: the relay may rewrite SSRCs (issue 3), so they would be stale.

use std::fmt;

use super::{addr_type_of, Attribute, Connection, MediaDescription, SessionDescription};

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]`, or the RFC 3551
/// static default for a payload type without one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RtpMap {
    pub payload_type: u8,
    /// As written by the peer; compare with `eq_ignore_ascii_case` (RFC 4855 §3).
    pub encoding: String,
    pub clock_rate: u32,
    /// 1 when the rtpmap does not say.
    pub channels: u8,
}

impl RtpMap {
    pub fn new(payload_type: u8, encoding: &str, clock_rate: u32, channels: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding: encoding.into(),
            clock_rate,
            channels,
        }
    }

    /// Parse the value of an `a=rtpmap:` attribute (`0 PCMU/8000`, `111 opus/48000/2`).
    pub fn parse(value: &str) -> Option<RtpMap> {
        let (pt, rest) = value.trim().split_once(' ')?;
        let payload_type = pt.parse::<u8>().ok().filter(|pt| *pt <= 127)?;
        let mut parts = rest.trim().split('/');
        let encoding = parts.next().filter(|e| !e.is_empty())?;
        let clock_rate = parts.next()?.trim().parse::<u32>().ok()?;
        let channels = match parts.next() {
            Some(c) => c.trim().parse::<u8>().ok()?,
            None => 1,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(RtpMap::new(payload_type, encoding, clock_rate, channels))
    }

    /// Same codec (encoding name case-insensitively, clock rate, channels), any PT.
    pub fn same_codec(&self, encoding: &str, clock_rate: u32, channels: u8) -> bool {
        self.encoding.eq_ignore_ascii_case(encoding)
            && self.clock_rate == clock_rate
            && self.channels == channels
    }

    /// `telephone-event` (RFC 4733) at any clock rate.
    pub fn is_telephone_event(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("telephone-event")
    }

    /// The attribute value, `<pt> <encoding>/<rate>[/<channels>]` (channels only when not 1).
    pub fn to_attribute(&self) -> Attribute {
        Attribute::new("rtpmap", self.to_string())
    }
}

impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        if self.channels != 1 {
            write!(f, "/{}", self.channels)?;
        }
        Ok(())
    }
}

/// RFC 3551 §6 tables 4 and 5: the payload types with a fixed meaning.
pub fn static_rtpmap(payload_type: u8) -> Option<RtpMap> {
    let (encoding, clock_rate, channels) = match payload_type {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        25 => ("CelB", 90000, 1),
        26 => ("JPEG", 90000, 1),
        28 => ("nv", 90000, 1),
        31 => ("H261", 90000, 1),
        32 => ("MPV", 90000, 1),
        33 => ("MP2T", 90000, 1),
        34 => ("H263", 90000, 1),
        _ => return None,
    };
    Some(RtpMap::new(payload_type, encoding, clock_rate, channels))
}

/// Media direction from the point of view of the description's author (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn from_flags(send: bool, receive: bool) -> Direction {
        match (send, receive) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction an answerer mirrors (RFC 3264 §6.1): sendonly ↔ recvonly.
    pub fn reverse(self) -> Direction {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// Both constraints at once: sends only if both send, receives only if both receive.
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    /// The attribute name: `sendrecv`, `sendonly`, `recvonly`, `inactive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// From an attribute name (case-sensitive, as RFC 4566 attribute names are).
    pub fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3605 `a=rtcp:<port> [<nettype> <addrtype> <address>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtcp {
    pub port: u16,
    pub connection: Option<Connection>,
}

impl Rtcp {
    pub fn parse(value: &str) -> Option<Rtcp> {
        let mut fields = value.split_ascii_whitespace();
        let port = fields.next()?.parse::<u16>().ok()?;
        let rest: Vec<&str> = fields.collect();
        let connection = match rest[..] {
            [] => None,
            [net_type, addr_type, address] => Some(Connection {
                net_type: net_type.into(),
                addr_type: addr_type.into(),
                address: address.into(),
            }),
            _ => return None,
        };
        Some(Rtcp { port, connection })
    }
}

impl fmt::Display for Rtcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.port)?;
        if let Some(c) = &self.connection {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_attribute(&a.name))
}

/// Replace the direction attributes with one `a=<direction>`, where the first one was
/// (or at the end).
fn set_direction_in(attributes: &mut Vec<Attribute>, direction: Direction) {
    let first = attributes
        .iter()
        .position(|a| Direction::from_attribute(&a.name).is_some());
    attributes.retain(|a| Direction::from_attribute(&a.name).is_none());
    let at = first.unwrap_or(attributes.len()).min(attributes.len());
    attributes.insert(at, Attribute::flag(direction.as_str()));
}

/// Media-level attributes an anchoring B2BUA must not pass from one leg to the other
/// (see the module documentation for why each goes).
const TRANSPORT_ATTRIBUTES: &[&str] = &[
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "rtcp-mux",
    "rtcp-mux-only",
    "crypto",
    "fingerprint",
    "setup",
    "tls-id",
    "ssrc",
    "ssrc-group",
    "msid",
];

fn is_transport_attribute(name: &str) -> bool {
    TRANSPORT_ATTRIBUTES.contains(&name)
}

fn parse_pt(format: &str) -> Option<u8> {
    format.parse::<u8>().ok().filter(|pt| *pt <= 127)
}

impl MediaDescription {
    /// The codec of each payload type in `m=` order: from `a=rtpmap`, else the RFC 3551
    /// static default. Dynamic payload types without an rtpmap, and non-numeric formats,
    /// are left out.
    pub fn rtpmaps(&self) -> Vec<RtpMap> {
        self.formats
            .iter()
            .filter_map(|f| parse_pt(f))
            .filter_map(|pt| self.rtpmap(pt))
            .collect()
    }

    /// The codec for one payload type (its `a=rtpmap`, else the static default).
    pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
        self.attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| a.value.as_deref().and_then(RtpMap::parse))
            .find(|r| r.payload_type == payload_type)
            .or_else(|| static_rtpmap(payload_type))
    }

    /// The parameters of `a=fmtp:<pt> <parameters>` (e.g. `0-16` for telephone-event).
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
                (parse_pt(pt) == Some(payload_type)).then(|| params.trim())
            })
    }

    /// The media-level direction attribute, if any (see [`MediaDescription::direction`]).
    pub fn own_direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// The direction this stream has, given the session it is in: media level overrides
    /// session level; neither means sendrecv (RFC 3264 §5.1).
    pub fn direction(&self, session: &SessionDescription) -> Direction {
        self.own_direction()
            .or_else(|| session.direction())
            .unwrap_or_default()
    }

    /// Set the media-level direction (replacing any there).
    pub fn set_direction(&mut self, direction: Direction) {
        set_direction_in(&mut self.attributes, direction);
    }

    /// `a=ptime` in milliseconds (RFC 4566 §6; decimal values are rounded down).
    pub fn ptime(&self) -> Option<u32> {
        let value = self.attribute("ptime")?.trim();
        let whole = value.split('.').next()?;
        whole.parse::<u32>().ok().filter(|p| *p > 0)
    }

    /// RFC 3605 `a=rtcp`, if present and well formed.
    pub fn rtcp(&self) -> Option<Rtcp> {
        self.attribute("rtcp").and_then(Rtcp::parse)
    }

    /// Port 0: rejected in an answer, disabled in an offer (RFC 3264 §5.1, §6).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// Secure RTP profile (`RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP(F)`).
    pub fn is_srtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("SAVP")
    }

    /// An RTP profile at all (AVP, AVPF, SAVP, SAVPF, over UDP or UDP/TLS).
    pub fn is_rtp(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("RTP/")
    }

    pub fn is_audio(&self) -> bool {
        self.media.eq_ignore_ascii_case("audio")
    }

    /// The `c=` that applies: this section's, else the session's.
    pub fn effective_connection<'a>(
        &'a self,
        session: &'a SessionDescription,
    ) -> Option<&'a Connection> {
        self.connection.as_ref().or(session.connection.as_ref())
    }

    /// Where to send RTP for this stream, unless it is rejected or on `0.0.0.0` hold.
    pub fn remote_rtp(&self, session: &SessionDescription) -> Option<(String, u16)> {
        let c = self.effective_connection(session)?;
        (self.port != 0 && !c.is_unspecified()).then(|| (c.address.clone(), self.port))
    }

    /// Set the `m=` port and keep an `a=rtcp` line pointing at port + 1 (RFC 3550 §11).
    /// Port 0 (rejecting the stream) leaves `a=rtcp` alone: nothing is sent anyway.
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
        if port == 0 {
            return;
        }
        for a in self.attributes.iter_mut().filter(|a| a.name == "rtcp") {
            let connection = a
                .value
                .as_deref()
                .and_then(Rtcp::parse)
                .and_then(|r| r.connection);
            let rtcp = Rtcp {
                port: port.wrapping_add(1),
                connection,
            };
            a.value = Some(rtcp.to_string());
        }
    }

    /// Point this section at `address`: its `c=` (if it has one) and any address in
    /// `a=rtcp`. Extra multicast `c=` lines are dropped.
    pub fn set_connection_address(&mut self, address: &str) {
        if self.connection.is_some() {
            self.connection = Some(Connection::new(address));
        }
        self.extra_connections.clear();
        for a in self.attributes.iter_mut().filter(|a| a.name == "rtcp") {
            if let Some(mut rtcp) = a.value.as_deref().and_then(Rtcp::parse) {
                if rtcp.connection.is_some() {
                    rtcp.connection = Some(Connection::new(address));
                    a.value = Some(rtcp.to_string());
                }
            }
        }
    }

    /// Drop the attributes that describe the peer's transport (ICE, rtcp-mux, SRTP/DTLS
    /// keying, SSRCs): see the module documentation.
    pub fn strip_transport_attributes(&mut self) {
        self.attributes.retain(|a| !is_transport_attribute(&a.name));
    }
}

impl SessionDescription {
    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }

    /// Set the direction of every stream at media level and remove the session-level one,
    /// so there is one place to read it.
    pub fn set_direction(&mut self, direction: Direction) {
        self.attributes
            .retain(|a| Direction::from_attribute(&a.name).is_none());
        for m in &mut self.media {
            m.set_direction(direction);
        }
    }

    /// Whether this offer can only be taken with SRTP: it has RTP streams that are not
    /// disabled, and all of them use a secure profile. Such an offer is refused with 488
    /// while Switchboard has no SRTP (issue 3).
    pub fn offers_only_srtp(&self) -> bool {
        let mut active = self.media.iter().filter(|m| !m.is_rejected() && m.is_rtp());
        let mut any = false;
        let all = active.all(|m| {
            any = true;
            m.is_srtp()
        });
        any && all
    }

    /// Point the whole description at `address`: `o=` (topology hiding, rtpengine's
    /// `replace-origin`), the session `c=` (added if there was none), every media-level
    /// `c=` and `a=rtcp` address.
    pub fn set_connection_address(&mut self, address: &str) {
        self.origin.addr_type = addr_type_of(address).into();
        self.origin.address = address.into();
        self.connection = Some(Connection::new(address));
        for m in &mut self.media {
            m.set_connection_address(address);
        }
    }

    /// The whole anchoring rewrite for one leg: addresses as in
    /// [`SessionDescription::set_connection_address`], stream `i` moved to `ports[i]`
    /// (streams already at port 0, or without a port in `ports`, are left at / set to 0),
    /// and the peer's transport attributes stripped at both levels. The caller keeps `o=`
    /// continuity per leg (RFC 3264 §8): set `origin` to the leg's and `bump_version()`.
    pub fn anchor(&mut self, address: &str, ports: &[u16]) {
        self.set_connection_address(address);
        self.strip_transport_attributes();
        for (i, m) in self.media.iter_mut().enumerate() {
            let port = if m.port == 0 {
                0
            } else {
                ports.get(i).copied().unwrap_or(0)
            };
            m.set_port(port);
            m.strip_transport_attributes();
        }
    }

    /// Drop session-level ICE, DTLS and bundling attributes (see the module documentation).
    pub fn strip_transport_attributes(&mut self) {
        let bundle = |a: &Attribute| {
            a.name == "group"
                && a.value
                    .as_deref()
                    .is_some_and(|v| v.trim_start().starts_with("BUNDLE"))
        };
        self.attributes.retain(|a| {
            !is_transport_attribute(&a.name) && !bundle(a) && a.name != "msid-semantic"
        });
    }
}
