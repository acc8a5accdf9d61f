//! SIP messages the load generator prints and the few fields it reads from what it gets
//! back. Parsing is `switchboard_sip`'s; printing is plain text so that every header is
//! visible here. SIP costs a few messages per call, so allocating there is fine (the RTP
//! path does not).

use std::net::{IpAddr, SocketAddr};

use switchboard_sip::{HeaderName, Message, NameAddr, Request, Response};

use crate::rtp::Codec;

/// What a UA keeps of one dialog (RFC 3261 §12), from the caller's or callee's side.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub call_id: String,
    /// Our URI and tag (From in our requests).
    pub local_uri: String,
    pub local_tag: String,
    /// The peer's URI and tag (To in our requests); the tag once a response carried one.
    pub remote_uri: String,
    pub remote_tag: Option<String>,
    /// Request-URI of in-dialog requests: the peer's Contact.
    pub remote_target: String,
    /// Route headers of in-dialog requests, in order.
    pub route_set: Vec<String>,
    /// `<sip:user@ip:port>`
    pub contact: String,
    /// Sent-by of our Via: `ip:port`.
    pub sent_by: String,
    pub cseq: u32,
}

pub fn new_branch() -> String {
    format!("z9hG4bK{:016x}", rand::random::<u64>())
}

pub fn new_tag() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Dialog {
    fn to_header(&self) -> String {
        match &self.remote_tag {
            Some(t) => format!("<{}>;tag={t}", self.remote_uri),
            None => format!("<{}>", self.remote_uri),
        }
    }

    /// A request in this dialog (or opening it): `ruri` is the Request-URI.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        method: &str,
        ruri: &str,
        branch: &str,
        cseq: u32,
        routes: bool,
        extra: &str,
        body: Option<&str>,
    ) -> Vec<u8> {
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{}>;tag={}\r\n\
             To: {}\r\n\
             Call-ID: {}\r\n\
             CSeq: {cseq} {method}\r\n",
            self.sent_by,
            self.local_uri,
            self.local_tag,
            self.to_header(),
            self.call_id
        );
        if routes {
            for r in &self.route_set {
                m.push_str("Route: ");
                m.push_str(r);
                m.push_str("\r\n");
            }
        }
        if method != "ACK" && method != "BYE" {
            m.push_str(&format!("Contact: {}\r\n", self.contact));
        }
        m.push_str(extra);
        m.push_str("User-Agent: sb-loadgen\r\n");
        match body {
            Some(b) => m.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m.into_bytes()
    }

    /// Learns the remote tag, target and route set from a 2xx to our INVITE (or takes them
    /// from the INVITE we answer, with `reverse_routes = false`).
    pub fn learn(&mut self, msg: &Message, reverse_routes: bool) {
        let h = msg.headers();
        let remote = if reverse_routes {
            h.get(&HeaderName::To)
        } else {
            h.get(&HeaderName::From)
        };
        if let Some(tag) = remote
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|n| n.tag().map(str::to_string))
        {
            self.remote_tag = Some(tag);
        }
        if let Some(c) = h
            .get(&HeaderName::Contact)
            .and_then(|v| NameAddr::parse(v).ok())
        {
            self.remote_target = c.uri.to_string();
        }
        let mut routes: Vec<String> = h
            .get_all(&HeaderName::RecordRoute)
            .map(str::to_string)
            .collect();
        if reverse_routes {
            routes.reverse();
        }
        self.route_set = routes;
    }
}

/// A response to `req` with our tag added to To when it has none; `extra` ends in CRLF.
pub fn response(
    req: &Request,
    status: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    body: Option<&str>,
) -> Vec<u8> {
    let mut m = format!("SIP/2.0 {status} {reason}\r\n");
    for v in req.headers.get_all(&HeaderName::Via) {
        m.push_str(&format!("Via: {v}\r\n"));
    }
    for name in [HeaderName::From, HeaderName::CallId, HeaderName::CSeq] {
        if let Some(v) = req.headers.get(&name) {
            m.push_str(&format!("{}: {v}\r\n", name.as_str()));
        }
    }
    for v in req.headers.get_all(&HeaderName::RecordRoute) {
        m.push_str(&format!("Record-Route: {v}\r\n"));
    }
    let to = req.headers.get(&HeaderName::To).unwrap_or("");
    let has_tag = NameAddr::parse(to)
        .map(|n| n.tag().is_some())
        .unwrap_or(true);
    if has_tag || status == 100 {
        m.push_str(&format!("To: {to}\r\n"));
    } else {
        m.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    m.push_str(extra);
    match body {
        Some(b) => m.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => m.push_str("Content-Length: 0\r\n\r\n"),
    }
    m.into_bytes()
}

/// An SDP body with one audio stream in `codec`, plus RFC 4733 telephone-event under
/// payload type `event` when given (the caller's 101, or the number an offer used).
pub fn sdp(ip: IpAddr, port: u16, codec: Codec, session_id: u64, event: Option<u8>) -> String {
    let pt = codec.payload_type();
    let (event_pt, event_lines) = match event {
        Some(e) => (
            format!(" {e}"),
            format!("a=rtpmap:{e} telephone-event/8000\r\na=fmtp:{e} 0-15\r\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "v=0\r\no=loadgen {session_id} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pt}{event_pt}\r\na=rtpmap:{pt} {}\r\n{event_lines}a=ptime:20\r\na=sendrecv\r\n",
        codec.rtpmap()
    )
}

/// The payload type an SDP body maps to telephone-event/8000, if any.
pub fn telephone_event_pt(body: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines().find_map(|l| {
        let (pt, name) = l.trim_end().strip_prefix("a=rtpmap:")?.split_once(' ')?;
        name.eq_ignore_ascii_case("telephone-event/8000")
            .then(|| pt.trim().parse().ok())
            .flatten()
    })
}

/// The audio address and first payload type of an SDP body (session- or media-level c=).
pub fn sdp_audio(body: &[u8]) -> Option<(SocketAddr, Option<u8>)> {
    let text = std::str::from_utf8(body).ok()?;
    let (mut ip, mut port, mut pt) = (None, None, None);
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            ip = c.split('/').next()?.trim().parse::<IpAddr>().ok().or(ip);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut f = m.split_whitespace();
            port = f.next()?.parse::<u16>().ok();
            pt = f.nth(1).and_then(|p| p.parse::<u8>().ok());
        }
    }
    Some((SocketAddr::new(ip?, port?), pt))
}

/// The payload types an SDP offer lists on its audio line.
pub fn offered_payload_types(body: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(body).unwrap_or("");
    text.lines()
        .find_map(|l| l.trim_end().strip_prefix("m=audio "))
        .map(|m| {
            m.split_whitespace()
                .skip(2)
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The challenge of a 401/407 (`WWW-Authenticate` or `Proxy-Authenticate`), and the header
/// name the answer goes in.
pub fn challenge(resp: &Response) -> Option<(&str, &'static str)> {
    if let Some(v) = resp.headers.get(&HeaderName::ProxyAuthenticate) {
        return Some((v, "Proxy-Authorization"));
    }
    resp.headers
        .get(&HeaderName::WwwAuthenticate)
        .map(|v| (v, "Authorization"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog() -> Dialog {
        Dialog {
            call_id: "c1@lg".into(),
            local_uri: "sip:1000@127.0.0.1".into(),
            local_tag: "abc".into(),
            remote_uri: "sip:800@127.0.0.1".into(),
            remote_tag: None,
            remote_target: "sip:800@127.0.0.1:5060".into(),
            route_set: vec![],
            contact: "<sip:1000@127.0.0.1:4000>".into(),
            sent_by: "127.0.0.1:4000".into(),
            cseq: 1,
        }
    }

    #[test]
    fn telephone_event_offered_and_found() {
        let ip = "127.0.0.1".parse().unwrap();
        let offer = sdp(ip, 30000, Codec::Pcma, 1, Some(101));
        assert!(offer.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{offer}");
        assert_eq!(telephone_event_pt(offer.as_bytes()), Some(101));
        assert_eq!(sdp_audio(offer.as_bytes()).unwrap().1, Some(8));
        let plain = sdp(ip, 30000, Codec::Pcma, 1, None);
        assert_eq!(telephone_event_pt(plain.as_bytes()), None);
        let theirs = b"v=0\r\nm=audio 4000 RTP/AVP 8 96\r\na=rtpmap:96 TELEPHONE-EVENT/8000\r\n";
        assert_eq!(telephone_event_pt(theirs), Some(96));
    }

    #[test]
    fn invite_parses_and_carries_the_offer() {
        let d = dialog();
        let offer = sdp("127.0.0.1".parse().unwrap(), 30000, Codec::Pcmu, 1, None);
        let bytes = d.request(
            "INVITE",
            "sip:800@127.0.0.1:5060",
            "z9hG4bK1",
            1,
            false,
            "",
            Some(&offer),
        );
        let Message::Request(r) = switchboard_sip::parse_datagram(&bytes).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(r.cseq().unwrap().seq, 1);
        assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK1"));
        let (addr, pt) = sdp_audio(&r.body).unwrap();
        assert_eq!(addr, "127.0.0.1:30000".parse().unwrap());
        assert_eq!(pt, Some(0));
    }

    #[test]
    fn learns_tag_target_and_reversed_routes_from_a_2xx() {
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bK1\r\n\
            From: <sip:1000@127.0.0.1>;tag=abc\r\nTo: <sip:800@127.0.0.1>;tag=srv\r\n\
            Call-ID: c1@lg\r\nCSeq: 1 INVITE\r\nContact: <sip:800@127.0.0.1:5070>\r\n\
            Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n\
            Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n";
        let msg = switchboard_sip::parse_datagram(text.as_bytes()).unwrap();
        let mut d = dialog();
        d.learn(&msg, true);
        assert_eq!(d.remote_tag.as_deref(), Some("srv"));
        assert_eq!(d.remote_target, "sip:800@127.0.0.1:5070");
        assert_eq!(d.route_set, vec!["<sip:p2;lr>", "<sip:p1;lr>"]);
        let bye = d.request("BYE", &d.remote_target, "z9hG4bK2", 2, true, "", None);
        let bye = String::from_utf8(bye).unwrap();
        assert!(bye.contains("To: <sip:800@127.0.0.1>;tag=srv\r\n"));
        assert!(bye.find("Route: <sip:p2;lr>").unwrap() < bye.find("Route: <sip:p1;lr>").unwrap());
    }

    #[test]
    fn response_adds_our_tag_and_keeps_vias() {
        let text = "INVITE sip:uas@127.0.0.1:4000 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\n\
            From: <sip:x@h>;tag=f\r\nTo: <sip:uas@h>\r\nCall-ID: k\r\nCSeq: 5 INVITE\r\n\
            Content-Type: application/sdp\r\nContent-Length: 0\r\n\r\n";
        let Message::Request(req) = switchboard_sip::parse_datagram(text.as_bytes()).unwrap()
        else {
            panic!()
        };
        let out = response(&req, 200, "OK", "mytag", "", None);
        let Message::Response(r) = switchboard_sip::parse_datagram(&out).unwrap() else {
            panic!()
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.to().unwrap().tag(), Some("mytag"));
        assert_eq!(r.headers.get_all(&HeaderName::Via).count(), 2);
        assert_eq!(r.cseq().unwrap().seq, 5);
    }

    #[test]
    fn offered_types() {
        let b = b"v=0\r\nm=audio 4000 RTP/AVP 8 0 101\r\n";
        assert_eq!(offered_payload_types(b), vec![8, 0, 101]);
    }
}
