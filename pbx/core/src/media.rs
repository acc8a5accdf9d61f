//! What the engine tells the runtime about a call's media, and what it hears back. The
//! engine decides ports and codecs (from SDP offer/answer); the runtime binds the ports and
//! runs the call's `MediaSession`.

use std::time::Duration;

use std::net::{IpAddr, SocketAddr};

use switchboard_media::relay::{Leg, LegConfig, MediaEvent, PayloadFormat, SessionConfig};
use switchboard_media::sdp::negotiate::{
    answer, build_offer, negotiated, AnswerParams, Capabilities, CodecCap, NegotiatedStream,
};
use switchboard_media::sdp::RtpMap;
use switchboard_media::sdp::SessionDescription;
use switchboard_sip::{Request, Response};

use crate::engine::{Engine, EngineEvent};
use crate::ports::{PortPair, PortPool, PortRangeError};

/// Media anchoring settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The address written in SDP `c=` lines (the public one behind NAT).
    pub advertise: String,
    /// First and last RTP port (inclusive), validated by [`MediaConfig::new`].
    port_range: (u16, u16),
    /// A call whose RTP stops for this long is hung up.
    pub rtp_timeout: Duration,
    /// Record every answered call (stereo WAV in the data directory).
    pub record_calls: bool,
}

impl MediaConfig {
    pub fn new(
        advertise: String,
        first_port: u16,
        last_port: u16,
        rtp_timeout: Duration,
    ) -> Result<MediaConfig, PortRangeError> {
        PortPool::new(first_port, last_port)?;
        Ok(MediaConfig {
            advertise,
            port_range: (first_port, last_port),
            rtp_timeout,
            record_calls: false,
        })
    }

    pub fn port_range(&self) -> (u16, u16) {
        self.port_range
    }

    pub(crate) fn pool(&self) -> PortPool {
        PortPool::new(self.port_range.0, self.port_range.1)
            .expect("the range was validated by MediaConfig::new")
    }
}

/// A command for the runtime's media side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Bind the two port pairs (toward the caller, toward the callee) and start relaying.
    Open {
        call: u64,
        a: PortPair,
        b: PortPair,
        config: SessionConfig,
    },
    /// The offer/answer on one leg settled (or changed: re-INVITE, UPDATE).
    Configure {
        call: u64,
        leg: Leg,
        config: LegConfig,
    },
    /// Play something toward one leg, replacing the other party's audio until stopped.
    Play { call: u64, leg: Leg, what: Playback },
    /// Stop what plays toward a leg: the other party is heard again.
    StopPlayback { call: u64, leg: Leg },
    /// Start recording the call (the runtime picks the file and stores its path).
    StartRecording {
        call: u64,
        /// The caller leg's Call-ID, which the recording is stored against.
        call_id: String,
        caller: String,
        callee: String,
    },
    /// Stop recording (the file is finished and its row completed).
    StopRecording { call: u64 },
    /// Stop (or resume) relaying `leg`'s audio to the other leg; what it sends is still
    /// recorded and its key presses still reported.
    Mute { call: u64, leg: Leg, muted: bool },
    /// The call is over: close its sockets (and finish any recording).
    Close { call: u64 },
}

impl MediaCommand {
    pub fn call(&self) -> u64 {
        match self {
            MediaCommand::Open { call, .. }
            | MediaCommand::Configure { call, .. }
            | MediaCommand::StartRecording { call, .. }
            | MediaCommand::Play { call, .. }
            | MediaCommand::StopPlayback { call, .. }
            | MediaCommand::StopRecording { call }
            | MediaCommand::Mute { call, .. }
            | MediaCommand::Close { call } => *call,
        }
    }

    pub fn leg_config(self) -> Option<(Leg, LegConfig)> {
        match self {
            MediaCommand::Configure { leg, config, .. } => Some((leg, config)),
            _ => None,
        }
    }
}

/// What to play into a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playback {
    /// A music-on-hold class by name (`default` is always there: the generated piece).
    MusicOnHold { class: String },
    /// A prompt by name (`closed`, `ivr/main-menu`), played once: the runtime finds it in
    /// its prompts directory or among the prompts shipped with Switchboard. When it ends
    /// (or cannot be played) the runtime reports `MediaEvent::PlaybackFinished` for the
    /// leg.
    Prompt { name: String },
    /// Prompts played one after another as one playback, without gaps (a number read out
    /// digit by digit, see [`crate::say`]): one `PlaybackFinished` after the last. Names
    /// that do not exist are left out; when none exists it finishes at once.
    Prompts { names: Vec<String> },
}

/// What the runtime's media side reports to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaNotice {
    /// A port of the pair could not be bound (another program holds it).
    BindFailed {
        pair: PortPair,
    },
    Session(MediaEvent),
}

/// The engine's media bookkeeping: settings, the port pool, what we can encode.
#[derive(Debug)]
pub(crate) struct MediaState {
    pub(crate) config: MediaConfig,
    pub(crate) pool: PortPool,
    pub(crate) caps: Capabilities,
}

/// One call's anchored media: its ports and the offer/answer state of both legs.
#[derive(Debug)]
pub(crate) struct CallMedia {
    pub(crate) a: PortPair,
    pub(crate) b: PortPair,
    /// The `m=` line we anchor (the first audio stream); others are refused (port 0).
    audio_index: usize,
    /// Our `o=` toward each leg: one session id, a version bumped per new description
    /// (RFC 3264 §8).
    a_origin: (String, u64),
    b_origin: (String, u64),
    /// The caller's offer (INVITE body), or `None` for a late offer.
    a_offer: Option<SessionDescription>,
    /// Our offer to the callee's devices.
    b_offer: SessionDescription,
    /// Our answer to the caller, sent identically in every 18x/2xx (RFC 3264 §4).
    a_answer: Option<Vec<u8>>,
    /// Late offer: the offer we put in the 2xx to the caller, answered in its ACK.
    a_late_offer: Option<SessionDescription>,
    /// Legs we play music on hold to (A, B), because the other party put them on hold.
    holding: [bool; 2],
    /// The configuration last given to each leg (its codec is what a new party on the
    /// other side is offered first, so the legs keep forwarding without transcoding).
    configs: [Option<LegConfig>; 2],
}

/// An offer/answer in flight inside a dialog (re-INVITE, UPDATE), from the side `from_a`.
#[derive(Debug, Clone)]
pub(crate) enum Renegotiation {
    /// The request carried an offer; we sent `far_offer` on the other leg.
    Offer {
        near_offer: Box<SessionDescription>,
        far_offer: Box<SessionDescription>,
    },
    /// The request carried no offer: the far side's 2xx will, and the near side's ACK
    /// answers it.
    Empty,
}

/// A late offer inside a dialog: the far side offered in its 2xx, we offered `near_offer`
/// to the near side, whose ACK answers it.
#[derive(Debug, Clone)]
pub(crate) struct PendingAckAnswer {
    pub(crate) far_offer: SessionDescription,
    pub(crate) near_offer: SessionDescription,
}

/// The body, when it is SDP we must look at.
pub(crate) fn sdp_body(
    headers: &switchboard_sip::Headers,
    body: &[u8],
) -> Option<Result<SessionDescription, ()>> {
    if body.is_empty() {
        return None;
    }
    let is_sdp = headers
        .get(&switchboard_sip::HeaderName::ContentType)
        .is_none_or(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
        });
    if !is_sdp {
        return None;
    }
    Some(SessionDescription::parse(body).map_err(|e| {
        tracing::info!(error = %e, "unusable SDP");
    }))
}

fn first_audio(sdp: &SessionDescription) -> Option<usize> {
    sdp.media
        .iter()
        .position(|m| m.is_audio() && !m.is_rejected() && m.is_rtp() && !m.is_srtp())
}

fn ports_for(len: usize, index: usize, port: u16) -> Vec<u16> {
    (0..len)
        .map(|i| if i == index { port } else { 0 })
        .collect()
}

fn to_socket(addr: &Option<(String, u16)>) -> Option<SocketAddr> {
    let (host, port) = addr.as_ref()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, *port))
}

/// The clock rate of a stream's telephone-event payload type, from whichever of the
/// descriptions maps it (an answer may omit the rtpmap of a PT taken from the offer).
fn event_rate(sdps: &[&SessionDescription], index: usize, pt: Option<u8>) -> u32 {
    pt.and_then(|pt| {
        sdps.iter()
            .find_map(|sdp| sdp.media.get(index).and_then(|m| m.rtpmap(pt)))
    })
    .map_or(8000, |r| r.clock_rate)
}

/// The relay's view of one negotiated stream. `rtcp` is the peer's `a=rtcp` when given;
/// `sdps` are the offer and answer it came from.
fn leg_config(
    s: &NegotiatedStream,
    rtcp: Option<SocketAddr>,
    sdps: &[&SessionDescription],
) -> LegConfig {
    LegConfig {
        remote_rtp: to_socket(&s.remote_addr),
        remote_rtcp: rtcp,
        audio: s.codec.as_ref().map(|c| PayloadFormat {
            payload_type: c.payload_type,
            encoding: c.encoding.clone(),
            clock_rate: c.clock_rate,
            channels: c.channels,
            fmtp: None,
        }),
        telephone_event: s.telephone_event_pt,
        telephone_event_rate: event_rate(sdps, s.index, s.telephone_event_pt),
        send: s.accepted && s.direction.sends(),
        recv: s.accepted && s.direction.receives(),
    }
}

fn rtcp_of(sdp: &SessionDescription, index: usize) -> Option<SocketAddr> {
    let m = sdp.media.get(index)?;
    let r = m.rtcp()?;
    let host = r
        .connection
        .as_ref()
        .map(|c| c.address.clone())
        .or_else(|| m.effective_connection(sdp).map(|c| c.address.clone()))?;
    to_socket(&Some((host, r.port)))
}

/// Our capabilities with `preferred` (the codec the other leg settled on) alone, so that
/// when this leg offers it too the two legs share it and packets are forwarded untouched.
fn only(caps: &Capabilities, preferred: &Option<RtpMap>) -> Option<Capabilities> {
    let p = preferred.as_ref()?;
    let cap = caps.find(p)?.clone();
    Some(Capabilities {
        codecs: vec![cap],
        telephone_event: caps.telephone_event,
    })
}

/// An offer of our own (late offer): every codec we handle, `preferred` first.
fn own_offer(
    caps: &Capabilities,
    preferred: &Option<RtpMap>,
    address: &str,
    port: u16,
    origin: &(String, u64),
) -> SessionDescription {
    let ip = if address.contains(':') { "IP6" } else { "IP4" };
    let mut codecs: Vec<&CodecCap> = caps.codecs.iter().collect();
    if let Some(p) = preferred {
        if let Some(pos) = codecs
            .iter()
            .position(|c| p.same_codec(&c.encoding, c.clock_rate, c.channels))
        {
            let c = codecs.remove(pos);
            codecs.insert(0, c);
        }
    }
    let mut formats = Vec::new();
    let mut lines = String::new();
    let mut dynamic = 96u8;
    for c in codecs {
        let pt = match (c.encoding.to_ascii_uppercase().as_str(), c.clock_rate) {
            ("PCMU", 8000) => 0,
            ("PCMA", 8000) => 8,
            _ => {
                let pt = dynamic;
                dynamic += 1;
                pt
            }
        };
        formats.push(pt.to_string());
        if pt >= 96 {
            let channels = if c.channels > 1 {
                format!("/{}", c.channels)
            } else {
                String::new()
            };
            lines.push_str(&format!(
                "a=rtpmap:{pt} {}/{}{channels}\r\n",
                c.encoding, c.clock_rate
            ));
        }
    }
    if caps.telephone_event {
        formats.push("101".into());
        lines.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n");
    }
    let text = format!(
        "v=0\r\no=switchboard {id} {ver} IN {ip} {address}\r\ns=-\r\nc=IN {ip} {address}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {formats}\r\n{lines}a=ptime:20\r\na=sendrecv\r\n",
        id = origin.0,
        ver = origin.1,
        formats = formats.join(" "),
    );
    SessionDescription::parse(&text).expect("our own offer is valid SDP")
}

fn set_origin(sdp: &mut SessionDescription, origin: &mut (String, u64), address: &str) {
    origin.1 += 1;
    sdp.origin.username = "switchboard".into();
    sdp.origin.session_id = origin.0.clone();
    sdp.origin.session_version = origin.1;
    sdp.origin.addr_type = if address.contains(':') { "IP6" } else { "IP4" }.into();
    sdp.origin.address = address.into();
}

fn new_origin() -> (String, u64) {
    let id: u32 = rand::random();
    (id.to_string(), u64::from(rand::random::<u16>()))
}

/// Why an INVITE's media cannot be set up: the status to answer with.
pub(crate) struct MediaRefusal {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
}

impl CallMedia {
    /// True while `leg` hears music on hold because the other party held it.
    pub(crate) fn is_holding(&self, leg: Leg) -> bool {
        self.holding[usize::from(leg == Leg::B)]
    }

    /// Clears the hold of `side` (its holder is gone); true when it was held, which
    /// means our last description to it was not sendrecv and a re-INVITE must fix that.
    pub(crate) fn take_holding(&mut self, side: usize) -> bool {
        std::mem::take(&mut self.holding[side])
    }

    pub(crate) fn port(&self, side: usize) -> u16 {
        if side == 0 {
            self.a.rtp
        } else {
            self.b.rtp
        }
    }

    fn origin_mut(&mut self, side: usize) -> &mut (String, u64) {
        if side == 0 {
            &mut self.a_origin
        } else {
            &mut self.b_origin
        }
    }

    /// The codec the party on `side` settled on.
    fn codec(&self, side: usize) -> Option<RtpMap> {
        let a = self.configs[side].as_ref()?.audio.as_ref()?;
        Some(RtpMap::new(
            a.payload_type,
            &a.encoding,
            a.clock_rate,
            a.channels,
        ))
    }
}

/// The leg of the relay that carries `side` (0: caller side, 1: callee side).
pub(crate) fn side_leg(side: usize) -> Leg {
    if side == 0 {
        Leg::A
    } else {
        Leg::B
    }
}

/// Our offer toward a party taking a side (features): audio only, so the stream is m=0.
const OWN_OFFER_INDEX: usize = 0;

impl Engine {
    /// Our offer to whoever takes (or stays on) `side`: every codec we handle, the other
    /// party's first. `fresh` for a new dialog (new origin); otherwise the dialog's next
    /// version (RFC 3264 §8).
    pub(crate) fn media_side_offer(
        &mut self,
        call: u64,
        side: usize,
        fresh: bool,
    ) -> Option<SessionDescription> {
        let state = self.media.as_ref()?;
        let (caps, address) = (state.caps.clone(), state.config.advertise.clone());
        let media = self.calls.get_mut(&call)?.media.as_mut()?;
        let preferred = media.codec(1 - side);
        let port = media.port(side);
        let origin = media.origin_mut(side);
        if fresh {
            *origin = new_origin();
        }
        origin.1 += 1;
        Some(own_offer(&caps, &preferred, &address, port, origin))
    }

    /// An offer to a party of `from_call` that moves into `to_call`'s `to_side` (attended
    /// transfer): the destination's port, the party's own dialog origin, next version.
    pub(crate) fn media_move_offer(
        &mut self,
        from_call: u64,
        from_side: usize,
        to_call: u64,
        to_side: usize,
    ) -> Option<(SessionDescription, (String, u64))> {
        let state = self.media.as_ref()?;
        let (caps, address) = (state.caps.clone(), state.config.advertise.clone());
        let to = self.calls.get(&to_call)?.media.as_ref()?;
        let (preferred, port) = (to.codec(1 - to_side), to.port(to_side));
        let from = self.calls.get_mut(&from_call)?.media.as_mut()?;
        let origin = from.origin_mut(from_side);
        origin.1 += 1;
        let origin = origin.clone();
        Some((
            own_offer(&caps, &preferred, &address, port, &origin),
            origin,
        ))
    }

    /// The origin of the next description toward `side` (its version bumped, RFC 3264
    /// §8): a re-INVITE in that party's dialog.
    pub(crate) fn media_next_origin(&mut self, call: u64, side: usize) -> Option<(String, u64)> {
        let m = self.calls.get_mut(&call)?.media.as_mut()?;
        let o = m.origin_mut(side);
        o.1 += 1;
        Some(o.clone())
    }

    /// Adopts `origin` as the description origin toward `side` (the dialog that moved in).
    pub(crate) fn media_set_origin(&mut self, call: u64, side: usize, origin: (String, u64)) {
        if let Some(m) = self.calls.get_mut(&call).and_then(|c| c.media.as_mut()) {
            *m.origin_mut(side) = origin;
        }
    }

    /// The answer (in a 2xx) to an offer we made toward `side`: configures that leg.
    /// False when it carried no usable answer.
    pub(crate) fn media_side_answered(
        &mut self,
        call: u64,
        side: usize,
        offer: &SessionDescription,
        headers: &switchboard_sip::Headers,
        body: &[u8],
    ) -> bool {
        let Some(Ok(answer_sdp)) = sdp_body(headers, body) else {
            return false;
        };
        let streams = negotiated(offer, &answer_sdp);
        let Some(stream) = streams.get(OWN_OFFER_INDEX) else {
            return false;
        };
        let config = leg_config(
            stream,
            rtcp_of(&answer_sdp, OWN_OFFER_INDEX),
            &[&answer_sdp, offer],
        );
        self.configure_leg(call, side_leg(side), config);
        true
    }

    /// Our answer to the offer of a party joining `side` with an INVITE (retrieve,
    /// INVITE with Replaces); configures that leg. `None`: no usable offer.
    pub(crate) fn media_side_answer(
        &mut self,
        call: u64,
        side: usize,
        headers: &switchboard_sip::Headers,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let state = self.media.as_ref()?;
        let (caps, address) = (state.caps.clone(), state.config.advertise.clone());
        let Some(Ok(offer)) = sdp_body(headers, body) else {
            return None;
        };
        let index = first_audio(&offer)?;
        let media = self.calls.get_mut(&call)?.media.as_mut()?;
        let preferred = media.codec(1 - side);
        let port = media.port(side);
        let origin = media.origin_mut(side);
        *origin = new_origin();
        origin.1 += 1;
        let params = AnswerParams {
            address,
            ports: ports_for(offer.media.len(), index, port),
            username: "switchboard".into(),
            session_id: origin.0.clone(),
            session_version: origin.1,
        };
        let outcome = only(&caps, &preferred)
            .and_then(|c| answer(&offer, &c, &params).ok())
            .or_else(|| answer(&offer, &caps, &params).ok())?;
        let stream = outcome.streams.get(index)?;
        let config = leg_config(stream, rtcp_of(&offer, index), &[&offer]);
        self.configure_leg(call, side_leg(side), config);
        Some(outcome.answer.to_bytes())
    }

    /// Music on hold toward `side` on (parked, waiting) or off.
    pub(crate) fn media_moh(&mut self, call: u64, side: usize, on: bool) {
        if self.calls.get(&call).is_none_or(|c| c.media.is_none()) {
            return;
        }
        let leg = side_leg(side);
        let command = if on {
            MediaCommand::Play {
                call,
                leg,
                what: Playback::MusicOnHold {
                    class: "default".into(),
                },
            }
        } else {
            MediaCommand::StopPlayback { call, leg }
        };
        self.events.push_back(EngineEvent::Media(command));
    }
}

impl Engine {
    /// Sets up a new call's media from the caller's INVITE: checks its offer, allocates
    /// ports, opens them, and returns the offer for the callee's devices. `Ok(None)` when
    /// media is not anchored (SDP passes through).
    pub(crate) fn open_media(
        &mut self,
        call: u64,
        invite: &Request,
    ) -> Result<Option<(CallMedia, Vec<u8>)>, MediaRefusal> {
        let Some(state) = self.media.as_mut() else {
            return Ok(None);
        };
        let a_offer = match sdp_body(&invite.headers, &invite.body) {
            None => None,
            Some(Ok(sdp)) => Some(sdp),
            Some(Err(())) => {
                return Err(MediaRefusal {
                    status: 400,
                    reason: "Malformed SDP",
                })
            }
        };
        let audio_index = match &a_offer {
            Some(offer) => match first_audio(offer) {
                Some(i) => i,
                None if offer.offers_only_srtp() => {
                    return Err(MediaRefusal {
                        status: 488,
                        reason: "SRTP Not Supported",
                    })
                }
                None => {
                    return Err(MediaRefusal {
                        status: 488,
                        reason: "No Usable Audio Stream",
                    })
                }
            },
            None => 0,
        };
        if let Some(offer) = &a_offer {
            // Refuse early what we could never answer (no codec in common).
            let probe = answer(
                offer,
                &state.caps,
                &AnswerParams {
                    address: state.config.advertise.clone(),
                    ports: vec![1; offer.media.len()],
                    username: "-".into(),
                    session_id: "0".into(),
                    session_version: 0,
                },
            );
            if probe.is_err() {
                return Err(MediaRefusal {
                    status: 488,
                    reason: "No Common Codec",
                });
            }
        }
        let (Some(a), Some(b)) = (state.pool.allocate(), state.pool.allocate()) else {
            tracing::warn!(call, "no free RTP ports");
            return Err(MediaRefusal {
                status: 503,
                reason: "No Media Ports Available",
            });
        };
        let address = state.config.advertise.clone();
        let mut b_origin = new_origin();
        let b_offer = match &a_offer {
            Some(offer) => {
                let mut o = build_offer(
                    offer,
                    &state.caps,
                    &address,
                    &ports_for(offer.media.len(), audio_index, b.rtp),
                );
                set_origin(&mut o, &mut b_origin, &address);
                o
            }
            None => own_offer(&state.caps, &None, &address, b.rtp, &b_origin),
        };
        let config = SessionConfig {
            rtp_timeout: state.config.rtp_timeout,
            // The runtime stamps the wall clock when it opens the session.
            start_ntp: 0,
        };
        self.events
            .push_back(EngineEvent::Media(MediaCommand::Open {
                call,
                a,
                b,
                config,
            }));
        let body = b_offer.to_bytes();
        Ok(Some((
            CallMedia {
                a,
                b,
                audio_index,
                a_origin: new_origin(),
                b_origin,
                a_offer,
                b_offer,
                a_answer: None,
                a_late_offer: None,
                holding: [false, false],
                configs: [None, None],
            },
            body,
        )))
    }

    /// Takes ports and opens the media of a call Switchboard places itself (no offer
    /// yet: each side gets our offer when it is rung).
    pub(crate) fn open_media_bare(
        &mut self,
        call: u64,
    ) -> Result<Option<CallMedia>, crate::command::CommandError> {
        let Some(state) = self.media.as_mut() else {
            return Ok(None);
        };
        let (Some(a), Some(b)) = (state.pool.allocate(), state.pool.allocate()) else {
            return Err(crate::command::CommandError::Unavailable(
                "no free RTP ports".into(),
            ));
        };
        let config = SessionConfig {
            rtp_timeout: state.config.rtp_timeout,
            start_ntp: 0,
        };
        let address = state.config.advertise.clone();
        let b_origin = new_origin();
        let b_offer = own_offer(&state.caps, &None, &address, b.rtp, &b_origin);
        self.events
            .push_back(EngineEvent::Media(MediaCommand::Open {
                call,
                a,
                b,
                config,
            }));
        Ok(Some(CallMedia {
            a,
            b,
            audio_index: 0,
            a_origin: new_origin(),
            b_origin,
            a_offer: None,
            b_offer,
            a_answer: None,
            a_late_offer: None,
            holding: [false, false],
            configs: [None, None],
        }))
    }

    /// A callee device's response carried SDP (its answer to our offer): configure leg B,
    /// and return what the caller gets in the relayed response — our answer to its offer,
    /// or (late offer, on a 2xx) our offer. `None`: nothing to send (no SDP, not anchored,
    /// or a provisional in a late-offer call).
    pub(crate) fn media_callee_answered(&mut self, call: u64, resp: &Response) -> Option<Vec<u8>> {
        let state = self.media.as_ref()?;
        let caps = state.caps.clone();
        let address = state.config.advertise.clone();
        let media = self.calls.get_mut(&call)?.media.as_mut()?;
        let b_answer = match sdp_body(&resp.headers, &resp.body)? {
            Ok(sdp) => sdp,
            Err(()) => return None,
        };
        let streams = negotiated(&media.b_offer, &b_answer);
        let b_stream = streams.get(media.audio_index)?.clone();
        let b_rtcp = rtcp_of(&b_answer, media.audio_index);
        let b_config = leg_config(&b_stream, b_rtcp, &[&b_answer, &media.b_offer]);
        let mut a_config = None;
        let body = match &media.a_offer {
            Some(offer) => {
                if media.a_answer.is_none() {
                    let params = AnswerParams {
                        address: address.clone(),
                        ports: ports_for(offer.media.len(), media.audio_index, media.a.rtp),
                        username: "switchboard".into(),
                        session_id: media.a_origin.0.clone(),
                        session_version: media.a_origin.1 + 1,
                    };
                    // Prefer the callee's codec so both legs share it (no transcoding).
                    let outcome = only(&caps, &b_stream.codec)
                        .and_then(|c| answer(offer, &c, &params).ok())
                        .or_else(|| answer(offer, &caps, &params).ok())?;
                    media.a_origin.1 += 1;
                    let s = outcome.streams.get(media.audio_index)?;
                    a_config = Some(leg_config(s, rtcp_of(offer, media.audio_index), &[offer]));
                    media.a_answer = Some(outcome.answer.to_bytes());
                }
                media.a_answer.clone()
            }
            None if resp.is_success() => {
                let offer = own_offer(&caps, &b_stream.codec, &address, media.a.rtp, &{
                    media.a_origin.1 += 1;
                    media.a_origin.clone()
                });
                let body = offer.to_bytes();
                media.a_late_offer = Some(offer);
                Some(body)
            }
            None => None,
        };
        self.configure_leg(call, Leg::B, b_config);
        if let Some(c) = a_config {
            self.configure_leg(call, Leg::A, c);
        }
        body
    }

    /// The caller's ACK answered our late offer: configure leg A.
    pub(crate) fn media_caller_acked(&mut self, call: u64, ack: &Request) {
        let Some(media) = self.calls.get_mut(&call).and_then(|c| c.media.as_mut()) else {
            return;
        };
        let Some(offer) = media.a_late_offer.take() else {
            return;
        };
        let Some(Ok(answer_sdp)) = sdp_body(&ack.headers, &ack.body) else {
            tracing::info!(
                call,
                "the caller's ACK did not answer our offer; no media from it"
            );
            return;
        };
        let index = media.audio_index;
        if let Some(s) = negotiated(&offer, &answer_sdp).get(index) {
            let config = leg_config(s, rtcp_of(&answer_sdp, index), &[&answer_sdp, &offer]);
            self.configure_leg(call, Leg::A, config);
        }
    }

    /// A re-INVITE or UPDATE from one leg: rewrite its SDP for the other leg. Returns the
    /// body to send on and what to remember until the answer comes back.
    pub(crate) fn media_relay_request(
        &mut self,
        call: u64,
        from_a: bool,
        req: &Request,
    ) -> Option<(Vec<u8>, Renegotiation)> {
        let state = self.media.as_ref()?;
        let caps = state.caps.clone();
        let address = state.config.advertise.clone();
        let media = self.calls.get_mut(&call)?.media.as_mut()?;
        let Some(Ok(near_offer)) = sdp_body(&req.headers, &req.body) else {
            return Some((Vec::new(), Renegotiation::Empty));
        };
        let (far_port, far_origin) = if from_a {
            (media.b.rtp, &mut media.b_origin)
        } else {
            (media.a.rtp, &mut media.a_origin)
        };
        let index = media
            .audio_index
            .min(near_offer.media.len().saturating_sub(1));
        let mut far_offer = build_offer(
            &near_offer,
            &caps,
            &address,
            &ports_for(near_offer.media.len(), index, far_port),
        );
        set_origin(&mut far_offer, far_origin, &address);
        let body = far_offer.to_bytes();
        Some((
            body,
            Renegotiation::Offer {
                near_offer: Box::new(near_offer),
                far_offer: Box::new(far_offer),
            },
        ))
    }

    /// The far leg's response to a relayed re-INVITE/UPDATE: configure both legs and
    /// return the body for the near side (our answer, or our offer when the request had
    /// none). `pending` is set when the near side's ACK must answer our offer.
    pub(crate) fn media_relay_response(
        &mut self,
        call: u64,
        from_a: bool,
        renegotiation: &Renegotiation,
        resp: &Response,
    ) -> (Option<Vec<u8>>, Option<PendingAckAnswer>) {
        let Some(state) = self.media.as_ref() else {
            return (None, None);
        };
        let caps = state.caps.clone();
        let address = state.config.advertise.clone();
        let Some(media) = self.calls.get_mut(&call).and_then(|c| c.media.as_mut()) else {
            return (None, None);
        };
        let Some(Ok(far_sdp)) = sdp_body(&resp.headers, &resp.body) else {
            return (None, None);
        };
        let index = media.audio_index;
        let (near_leg, far_leg) = if from_a {
            (Leg::A, Leg::B)
        } else {
            (Leg::B, Leg::A)
        };
        let (near_port, near_origin) = if from_a {
            (media.a.rtp, &mut media.a_origin)
        } else {
            (media.b.rtp, &mut media.b_origin)
        };
        match renegotiation {
            Renegotiation::Offer {
                near_offer,
                far_offer,
            } => {
                let streams = negotiated(far_offer, &far_sdp);
                let Some(far_stream) = streams.get(index).cloned() else {
                    return (None, None);
                };
                let params = AnswerParams {
                    address: address.clone(),
                    ports: ports_for(near_offer.media.len(), index, near_port),
                    username: "switchboard".into(),
                    session_id: near_origin.0.clone(),
                    session_version: near_origin.1 + 1,
                };
                let Some(outcome) = only(&caps, &far_stream.codec)
                    .and_then(|c| answer(near_offer, &c, &params).ok())
                    .or_else(|| answer(near_offer, &caps, &params).ok())
                else {
                    return (None, None);
                };
                near_origin.1 += 1;
                // A re-offer of sendonly/inactive (or RFC 2543's c=0.0.0.0) puts the far
                // party on hold: it hears our music until the near side offers sendrecv.
                let held = near_offer.media.get(index).is_some_and(|m| {
                    !m.is_rejected()
                        && (!m.direction(near_offer).receives()
                            || m.remote_rtp(near_offer).is_none())
                });
                let far_slot = usize::from(far_leg == Leg::B);
                let was_held = media.holding[far_slot];
                media.holding[far_slot] = held;
                let near_config = outcome
                    .streams
                    .get(index)
                    .map(|s| leg_config(s, rtcp_of(near_offer, index), &[near_offer]));
                self.configure_leg(
                    call,
                    far_leg,
                    leg_config(
                        &far_stream,
                        rtcp_of(&far_sdp, index),
                        &[&far_sdp, far_offer],
                    ),
                );
                if let Some(c) = near_config {
                    self.configure_leg(call, near_leg, c);
                }
                if held && !was_held {
                    tracing::debug!(call, ?far_leg, "on hold: music on hold");
                    self.events
                        .push_back(EngineEvent::Media(MediaCommand::Play {
                            call,
                            leg: far_leg,
                            what: Playback::MusicOnHold {
                                class: "default".into(),
                            },
                        }));
                } else if was_held && !held {
                    tracing::debug!(call, ?far_leg, "resumed");
                    self.events
                        .push_back(EngineEvent::Media(MediaCommand::StopPlayback {
                            call,
                            leg: far_leg,
                        }));
                }
                (Some(outcome.answer.to_bytes()), None)
            }
            Renegotiation::Empty => {
                // The far side offered in its 2xx: offer on to the near side; its ACK answers.
                let mut near_offer = build_offer(
                    &far_sdp,
                    &caps,
                    &address,
                    &ports_for(far_sdp.media.len(), index, near_port),
                );
                set_origin(&mut near_offer, near_origin, &address);
                let body = near_offer.to_bytes();
                (
                    Some(body),
                    Some(PendingAckAnswer {
                        far_offer: far_sdp,
                        near_offer,
                    }),
                )
            }
        }
    }

    /// The near side's ACK answered the offer we relayed from the far side's 2xx: our
    /// answer goes into the far side's ACK.
    pub(crate) fn media_relay_ack(
        &mut self,
        call: u64,
        from_a: bool,
        pending: &PendingAckAnswer,
        ack: &Request,
    ) -> Vec<u8> {
        let Some(state) = self.media.as_ref() else {
            return Vec::new();
        };
        let caps = state.caps.clone();
        let address = state.config.advertise.clone();
        let Some(media) = self.calls.get_mut(&call).and_then(|c| c.media.as_mut()) else {
            return Vec::new();
        };
        let index = media.audio_index;
        let (near_leg, far_leg) = if from_a {
            (Leg::A, Leg::B)
        } else {
            (Leg::B, Leg::A)
        };
        let (far_port, far_origin) = if from_a {
            (media.b.rtp, &mut media.b_origin)
        } else {
            (media.a.rtp, &mut media.a_origin)
        };
        let Some(Ok(near_answer)) = sdp_body(&ack.headers, &ack.body) else {
            return Vec::new();
        };
        let near = negotiated(&pending.near_offer, &near_answer);
        let Some(near_stream) = near.get(index).cloned() else {
            return Vec::new();
        };
        let params = AnswerParams {
            address,
            ports: ports_for(pending.far_offer.media.len(), index, far_port),
            username: "switchboard".into(),
            session_id: far_origin.0.clone(),
            session_version: far_origin.1 + 1,
        };
        let Some(outcome) = only(&caps, &near_stream.codec)
            .and_then(|c| answer(&pending.far_offer, &c, &params).ok())
            .or_else(|| answer(&pending.far_offer, &caps, &params).ok())
        else {
            return Vec::new();
        };
        far_origin.1 += 1;
        self.configure_leg(
            call,
            near_leg,
            leg_config(
                &near_stream,
                rtcp_of(&near_answer, index),
                &[&near_answer, &pending.near_offer],
            ),
        );
        if let Some(s) = outcome.streams.get(index) {
            let c = leg_config(s, rtcp_of(&pending.far_offer, index), &[&pending.far_offer]);
            self.configure_leg(call, far_leg, c);
        }
        outcome.answer.to_bytes()
    }

    /// Returns a call's ports to the pool and closes its sockets.
    pub(crate) fn close_media(&mut self, call: u64, media: &CallMedia) {
        if let Some(state) = self.media.as_mut() {
            state.pool.release(media.a);
            state.pool.release(media.b);
        }
        self.events
            .push_back(EngineEvent::Media(MediaCommand::Close { call }));
    }

    /// Starts the recording of an answered call when the policy says so; true when it did.
    pub(crate) fn record_if_policy(
        &mut self,
        call: u64,
        call_id: &str,
        caller: &str,
        callee: &str,
    ) -> bool {
        let record = self.media.as_ref().is_some_and(|m| m.config.record_calls);
        if record {
            self.events
                .push_back(EngineEvent::Media(MediaCommand::StartRecording {
                    call,
                    call_id: call_id.to_string(),
                    caller: caller.to_string(),
                    callee: callee.to_string(),
                }));
        }
        record
    }

    pub(crate) fn media_port_broken(&mut self, _call: u64, pair: PortPair) {
        if let Some(state) = self.media.as_mut() {
            state.pool.mark_broken(pair);
        }
    }

    pub(crate) fn configure_leg(&mut self, call: u64, leg: Leg, config: LegConfig) {
        if let Some(m) = self.calls.get_mut(&call).and_then(|c| c.media.as_mut()) {
            m.configs[usize::from(leg == Leg::B)] = Some(config.clone());
        }
        self.events
            .push_back(EngineEvent::Media(MediaCommand::Configure {
                call,
                leg,
                config,
            }));
    }
}
