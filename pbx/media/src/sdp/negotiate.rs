//! RFC 3264 offer/answer for a media-anchoring B2BUA: answer a leg's offer from what we can
//! handle ([`answer`]), read what a peer chose in its answer to our offer ([`negotiated`]),
//! build the offer for the other leg from the first leg's ([`build_offer`]), or one of our
//! own when there is none ([`initial_offer`]).
//!
//! Policy (the things RFC 3264 leaves to the answerer):
//! - every audio stream over `RTP/AVP` or `RTP/AVPF` with at least one codec we handle is
//!   accepted; everything else (video, SRTP profiles, unknown codecs, streams the offer
//!   disabled) is rejected with port 0 and the offered formats (§6);
//! - the answer lists all supported offered codecs in the offerer's order with the
//!   offerer's payload type numbers (§6.1), so either side may switch codec mid-call; the
//!   first is the one we send;
//! - one `telephone-event` is kept, preferably at the first codec's clock rate (RFC 4733
//!   §2.5.1.1 ties events to the audio clock).

use super::media::{static_rtpmap, Direction, RtpMap};
use super::{addr_type_of, Attribute, MediaDescription, Origin, SdpError, SessionDescription};

/// One codec we can decode and encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecCap {
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: u8,
    /// The `a=fmtp` parameters we ask for when receiving it; `None` echoes the offerer's.
    pub fmtp: Option<String>,
}

impl CodecCap {
    pub fn new(encoding: &str, clock_rate: u32, channels: u8) -> CodecCap {
        CodecCap {
            encoding: encoding.into(),
            clock_rate,
            channels,
            fmtp: None,
        }
    }

    fn matches(&self, rtpmap: &RtpMap) -> bool {
        rtpmap.same_codec(&self.encoding, self.clock_rate, self.channels)
    }
}

/// What Switchboard can handle, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub codecs: Vec<CodecCap>,
    /// RFC 4733 events at the clock rate of any codec in `codecs`.
    pub telephone_event: bool,
}

impl Default for Capabilities {
    /// PCMU, PCMA, opus/48000/2 (RFC 7587 always signals 2 channels), telephone-event.
    fn default() -> Capabilities {
        Capabilities {
            codecs: vec![
                CodecCap::new("PCMU", 8000, 1),
                CodecCap::new("PCMA", 8000, 1),
                CodecCap::new("opus", 48000, 2),
            ],
            telephone_event: true,
        }
    }
}

impl Capabilities {
    /// The capability for this codec, if we handle it.
    pub fn find(&self, rtpmap: &RtpMap) -> Option<&CodecCap> {
        self.codecs.iter().find(|c| c.matches(rtpmap))
    }

    fn telephone_event_rate(&self, clock_rate: u32) -> bool {
        self.telephone_event && self.codecs.iter().any(|c| c.clock_rate == clock_rate)
    }
}

/// Our side of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerParams {
    /// The address media should be sent to (IPv4 or IPv6 literal).
    pub address: String,
    /// One local RTP port per offered `m=` line; used for the streams we accept.
    pub ports: Vec<u16>,
    /// `o=` of the answer; keep it per leg and bump the version when the answer changes
    /// (RFC 3264 §8).
    pub username: String,
    pub session_id: String,
    pub session_version: u64,
}

/// The outcome of negotiating one `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedStream {
    /// Position of the `m=` line.
    pub index: usize,
    pub accepted: bool,
    /// The codec we send (the first listed in the answer); `None` when rejected. The peer
    /// may send any codec of the answer, so decode by payload type.
    pub codec: Option<RtpMap>,
    pub telephone_event_pt: Option<u8>,
    /// Our direction (what we may send and should expect).
    pub direction: Direction,
    /// Where to send RTP: `None` when rejected or held with `c=0.0.0.0`.
    pub remote_addr: Option<(String, u16)>,
}

/// An answer and what it means for each stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOutcome {
    pub answer: SessionDescription,
    pub streams: Vec<NegotiatedStream>,
}

/// What we accept of one offered stream.
struct Choice {
    codecs: Vec<RtpMap>,
    telephone_event: Option<RtpMap>,
}

fn is_plain_rtp(m: &MediaDescription) -> bool {
    let proto = m.proto.to_ascii_uppercase();
    proto == "RTP/AVP" || proto == "RTP/AVPF"
}

fn choose(m: &MediaDescription, caps: &Capabilities) -> Option<Choice> {
    if !m.is_audio() || m.is_rejected() || !is_plain_rtp(m) {
        return None;
    }
    let offered = m.rtpmaps();
    let mut codecs: Vec<RtpMap> = Vec::new();
    for r in &offered {
        if caps.find(r).is_some() && !codecs.iter().any(|c| c.payload_type == r.payload_type) {
            codecs.push(r.clone());
        }
    }
    let first = codecs.first()?;
    let events = || offered.iter().filter(|r| r.is_telephone_event());
    let telephone_event = events()
        .find(|r| r.clock_rate == first.clock_rate)
        .or_else(|| events().find(|r| codecs.iter().any(|c| c.clock_rate == r.clock_rate)))
        .filter(|r| caps.telephone_event_rate(r.clock_rate))
        .filter(|r| codecs.iter().all(|c| c.payload_type != r.payload_type))
        .cloned();
    Some(Choice {
        codecs,
        telephone_event,
    })
}

/// Answer `offer` (RFC 3264 §6) with what `caps` can handle, media at `local.address` and
/// `local.ports[i]` for stream `i`. `Err(NotAcceptable)` when no stream can be accepted
/// (answer the request with 488), `Err(NotEnoughPorts)` when `local.ports` is short.
pub fn answer(
    offer: &SessionDescription,
    caps: &Capabilities,
    local: &AnswerParams,
) -> Result<AnswerOutcome, SdpError> {
    if local.ports.len() < offer.media.len() {
        return Err(SdpError::NotEnoughPorts {
            needed: offer.media.len(),
            given: local.ports.len(),
        });
    }
    let origin = Origin {
        username: local.username.clone(),
        session_id: local.session_id.clone(),
        session_version: local.session_version,
        net_type: "IN".into(),
        addr_type: addr_type_of(&local.address).into(),
        address: local.address.clone(),
    };
    let mut answer = SessionDescription::new(origin, &local.address);
    let mut streams = Vec::with_capacity(offer.media.len());
    for (index, offered) in offer.media.iter().enumerate() {
        let port = local.ports[index];
        let choice = choose(offered, caps).filter(|_| port != 0);
        let Some(choice) = choice else {
            answer.media.push(MediaDescription::new(
                &offered.media,
                0,
                &offered.proto,
                offered.formats.clone(),
            ));
            streams.push(NegotiatedStream {
                index,
                accepted: false,
                codec: None,
                telephone_event_pt: None,
                direction: Direction::Inactive,
                remote_addr: None,
            });
            continue;
        };
        let remote_addr = offered.remote_rtp(offer);
        let mut direction = offered.direction(offer).reverse();
        if remote_addr.is_none() {
            // c=0.0.0.0: RFC 3264 §8.4, send neither RTP nor RTCP there.
            direction = direction.intersect(Direction::RecvOnly);
        }
        let mut m = MediaDescription::new(&offered.media, port, &offered.proto, Vec::new());
        for codec in &choice.codecs {
            m.formats.push(codec.payload_type.to_string());
            m.attributes.push(codec.to_attribute());
            let ours = caps.find(codec).and_then(|c| c.fmtp.as_deref());
            let fmtp = ours.or_else(|| offered.fmtp(codec.payload_type));
            m.attributes
                .extend(fmtp_attribute(codec.payload_type, fmtp));
        }
        if let Some(te) = &choice.telephone_event {
            m.formats.push(te.payload_type.to_string());
            m.attributes.push(te.to_attribute());
            let events = offered.fmtp(te.payload_type).filter(|f| !f.is_empty());
            let events = Some(events.unwrap_or("0-16"));
            m.attributes.extend(fmtp_attribute(te.payload_type, events));
        }
        if let Some(ptime) = offered.ptime() {
            // What the offerer wants to receive; we packetize the same way both directions.
            m.attributes
                .push(Attribute::new("ptime", ptime.to_string()));
        }
        m.set_direction(direction);
        answer.media.push(m);
        streams.push(NegotiatedStream {
            index,
            accepted: true,
            codec: choice.codecs.first().cloned(),
            telephone_event_pt: choice.telephone_event.map(|t| t.payload_type),
            direction,
            remote_addr,
        });
    }
    if !streams.iter().any(|s| s.accepted) {
        return Err(SdpError::NotAcceptable);
    }
    Ok(AnswerOutcome { answer, streams })
}

/// What a peer's `answer` to our `offer` chose, stream by stream, from our (the
/// offerer's) side. Streams the answer lacks (a broken answer) count as rejected.
pub fn negotiated(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Vec<NegotiatedStream> {
    offer
        .media
        .iter()
        .enumerate()
        .map(|(index, offered)| {
            let answered = answer
                .media
                .get(index)
                .filter(|a| !a.is_rejected() && !offered.is_rejected());
            let Some(answered) = answered else {
                return NegotiatedStream {
                    index,
                    accepted: false,
                    codec: None,
                    telephone_event_pt: None,
                    direction: Direction::Inactive,
                    remote_addr: None,
                };
            };
            // An answer may omit rtpmap for a dynamic PT it took from the offer.
            let rtpmaps: Vec<RtpMap> = answered
                .formats
                .iter()
                .filter_map(|f| f.parse::<u8>().ok())
                .filter_map(|pt| answered.rtpmap(pt).or_else(|| offered.rtpmap(pt)))
                .collect();
            let codec = rtpmaps
                .iter()
                .find(|r| !r.is_telephone_event() && !r.encoding.eq_ignore_ascii_case("CN"))
                .cloned();
            let telephone_event_pt = rtpmaps
                .iter()
                .find(|r| r.is_telephone_event())
                .map(|r| r.payload_type);
            let remote_addr = answered.remote_rtp(answer);
            let mut direction = offered
                .direction(offer)
                .intersect(answered.direction(answer).reverse());
            if remote_addr.is_none() {
                direction = direction.intersect(Direction::RecvOnly);
            }
            NegotiatedStream {
                index,
                accepted: true,
                codec,
                telephone_event_pt,
                direction,
                remote_addr,
            }
        })
        .collect()
}

/// The offer for the other leg, made from the first leg's offer (`template`): the same
/// streams in the same order, anchored at `address` and `ports[i]` (see
/// [`SessionDescription::anchor`]; the `o=` is the template's with our address, so set the
/// leg's own origin for re-offers). Audio lists the template's codecs we handle (with its
/// payload types), then our other codecs, so the far side can pick one we can transcode
/// to; `telephone-event` is kept or added at each audio clock rate. SRTP streams are
/// disabled (port 0): their keys cannot be relayed.
pub fn build_offer(
    template: &SessionDescription,
    caps: &Capabilities,
    address: &str,
    ports: &[u16],
) -> SessionDescription {
    let mut offer = template.clone();
    offer.anchor(address, ports);
    for (m, original) in offer.media.iter_mut().zip(&template.media) {
        if m.is_rejected() {
            continue;
        }
        if m.is_rtp() && m.is_srtp() {
            m.set_port(0);
            continue;
        }
        if m.is_audio() && is_plain_rtp(m) {
            offer_codecs(m, original, caps);
        }
    }
    offer
}

/// An offer of our own with no first-leg offer to start from (a late-offer INVITE, or a
/// call Switchboard originates): one sendrecv audio stream at `address`:`port` with every
/// codec in `caps` and telephone-event at their clock rates. `origin` is the leg's `o=`.
pub fn initial_offer(
    caps: &Capabilities,
    origin: Origin,
    address: &str,
    port: u16,
) -> SessionDescription {
    let mut offer = SessionDescription::new(origin, address);
    let mut audio = MediaDescription::new("audio", port, "RTP/AVP", Vec::new());
    let empty = audio.clone();
    offer_codecs(&mut audio, &empty, caps);
    audio.set_direction(Direction::SendRecv);
    offer.media.push(audio);
    offer
}

/// Rewrite an audio section's formats and rtpmap/fmtp lines for [`build_offer`].
fn offer_codecs(m: &mut MediaDescription, original: &MediaDescription, caps: &Capabilities) {
    let offered = original.rtpmaps();
    let mut used: Vec<u8> = original
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .collect();
    let mut codecs: Vec<(RtpMap, Option<String>)> = Vec::new();
    for r in offered.iter().filter(|r| caps.find(r).is_some()) {
        if !codecs.iter().any(|(c, _)| c.payload_type == r.payload_type) {
            let fmtp = original.fmtp(r.payload_type).map(String::from);
            codecs.push((r.clone(), fmtp));
        }
    }
    for cap in &caps.codecs {
        if codecs.iter().any(|(c, _)| cap.matches(c)) {
            continue;
        }
        let static_pt = (0..=34u8)
            .filter_map(static_rtpmap)
            .find(|r| cap.matches(r))
            .map(|r| r.payload_type)
            .filter(|pt| !used.contains(pt));
        let Some(pt) = static_pt.or_else(|| free_dynamic_pt(&used)) else {
            continue;
        };
        used.push(pt);
        let rtpmap = RtpMap::new(pt, &cap.encoding, cap.clock_rate, cap.channels);
        codecs.push((rtpmap, cap.fmtp.clone()));
    }
    if caps.telephone_event {
        let mut rates: Vec<u32> = Vec::new();
        for (c, _) in &codecs {
            if !rates.contains(&c.clock_rate) {
                rates.push(c.clock_rate);
            }
        }
        // The template's events at those rates first (its numbers), then the missing ones.
        let kept: Vec<(RtpMap, Option<String>)> = offered
            .iter()
            .filter(|r| r.is_telephone_event() && rates.contains(&r.clock_rate))
            .filter(|r| !codecs.iter().any(|(c, _)| c.payload_type == r.payload_type))
            .map(|r| (r.clone(), original.fmtp(r.payload_type).map(String::from)))
            .collect();
        rates.retain(|rate| !kept.iter().any(|(r, _)| r.clock_rate == *rate));
        let mut events = kept;
        for rate in rates {
            let Some(pt) = free_dynamic_pt(&used) else {
                break;
            };
            used.push(pt);
            events.push((
                RtpMap::new(pt, "telephone-event", rate, 1),
                Some("0-16".to_string()),
            ));
        }
        codecs.extend(events);
    }
    m.formats = codecs
        .iter()
        .map(|(c, _)| c.payload_type.to_string())
        .collect();
    m.attributes
        .retain(|a| !matches!(a.name.as_str(), "rtpmap" | "fmtp" | "rtcp-fb"));
    let mut lines = Vec::new();
    for (c, fmtp) in &codecs {
        lines.push(c.to_attribute());
        lines.extend(fmtp_attribute(c.payload_type, fmtp.as_deref()));
    }
    m.attributes.splice(0..0, lines);
}

/// `a=fmtp:<pt> <parameters>`, or nothing for absent or blank parameters (which would not
/// survive printing: trailing blanks are not part of an attribute).
fn fmtp_attribute(payload_type: u8, parameters: Option<&str>) -> Option<Attribute> {
    let parameters = parameters.map(str::trim).filter(|p| !p.is_empty())?;
    Some(Attribute::new(
        "fmtp",
        format!("{payload_type} {parameters}"),
    ))
}

/// The first dynamic payload type (RFC 3551 §3: 96–127) not in `used`.
fn free_dynamic_pt(used: &[u8]) -> Option<u8> {
    (96..=127u8).find(|pt| !used.contains(pt))
}

#[cfg(test)]
mod tests;
