//! The per-call media relay: two legs (A toward the caller, B toward the callee), each
//! with its own local ports, and the rules that move media between them. Pure: packets,
//! configuration changes and `now` go in; packets to send, events and the next deadline
//! come out (the runtime owns the sockets).
//!
//! Drive contract: feed [`MediaSession::handle_packet`] / [`MediaSession::configure_leg`] /
//! [`MediaSession::handle_timeout`] (when [`MediaSession::poll_timeout`] passes), then drain
//! [`MediaSession::poll_transmit`] and [`MediaSession::poll_event`].
//!
//! Rules it must keep: a leg only ever receives one continuous outgoing stream from us (our
//! SSRC, sequence and timestamp run on across re-INVITEs and source switches); a source
//! other than the latched one never reaches the other leg; nothing is sent to a leg that
//! said it does not receive (sendonly/inactive).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::{decoder_for, encoder_for, AudioDecoder, AudioEncoder, CodecSpec};
use crate::dtmf::{generate_digit, DtmfEventReceiver, DtmfEventSender, InbandDetector};
#[cfg(test)]
use crate::g711;
use crate::jitter::{JitterBuffer, Playout};
use crate::player::{Player, PlayerEvent, Source};
use crate::recorder::{Channel, Recorder};
use crate::resample::Resampler;
use crate::rtp::rewrite::StreamRewriter;
use crate::rtp::rtcp::{build_rr, build_sr, ReceiverReport, RtcpPacket, SenderReport};
use crate::rtp::stats::ReceiverStats;
use crate::rtp::{is_rtcp, RtpHeader, RtpPacket};
use crate::AudioFrame;

/// Which side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    Rtp,
    Rtcp,
}

/// The audio format negotiated on a leg (from SDP: rtpmap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFormat {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: u8,
    pub fmtp: Option<String>,
}

impl PayloadFormat {
    /// Same codec on both sides: packets can be forwarded without decoding.
    pub fn same_codec(&self, other: &PayloadFormat) -> bool {
        self.encoding.eq_ignore_ascii_case(&other.encoding) && self.clock_rate == other.clock_rate
    }

    fn spec(&self) -> Option<CodecSpec> {
        CodecSpec::from_rtpmap(
            &self.encoding,
            self.clock_rate,
            self.channels,
            self.payload_type,
            self.fmtp.as_deref(),
        )
    }

    fn is_g711(&self) -> Option<bool> {
        match (self.encoding.to_ascii_uppercase().as_str(), self.clock_rate) {
            ("PCMU", 8000) => Some(true),
            ("PCMA", 8000) => Some(false),
            _ => None,
        }
    }
}

/// What the offer/answer on one leg settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegConfig {
    /// Where the peer said it receives RTP (c=/m=); replaced by the latched source.
    pub remote_rtp: Option<SocketAddr>,
    pub remote_rtcp: Option<SocketAddr>,
    pub audio: Option<PayloadFormat>,
    /// RFC 4733 telephone-event payload type on this leg, if negotiated.
    pub telephone_event: Option<u8>,
    /// Its RTP clock rate (the rtpmap's, normally 8000).
    pub telephone_event_rate: u32,
    /// We may send media to this leg (it did not say sendonly/inactive).
    pub send: bool,
    /// The peer sends media to us (it did not say recvonly/inactive): the RTP timeout
    /// applies only then.
    pub recv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A leg that should send but has sent nothing for this long raises `RtpTimeout`.
    pub rtp_timeout: Duration,
    /// Wall-clock time at the session's `now`, as a 64-bit NTP timestamp (RFC 3550 §4),
    /// for the sender reports of streams we generate. The runtime reads the clock; the
    /// session never does.
    pub start_ntp: u64,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            rtp_timeout: Duration::from_secs(60),
            start_ntp: 0,
        }
    }
}

/// RTCP report interval (RFC 3550 §6.2: 5 s minimum, randomised by 0.5–1.5).
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

fn report_delay() -> Duration {
    REPORT_INTERVAL.mul_f64(0.5 + rand::random::<f64>())
}

/// A duration as NTP 32.32 fixed point.
fn ntp_of(d: Duration) -> u64 {
    (d.as_secs() << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTransmit {
    /// The leg whose socket sends it.
    pub leg: Leg,
    pub kind: PacketKind,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// Media from this leg now comes from `addr` (symmetric RTP / comedia).
    Latched { leg: Leg, addr: SocketAddr },
    /// No RTP from a leg that should be sending, for `SessionConfig::rtp_timeout`.
    RtpTimeout { leg: Leg },
    /// What was being played toward a leg ended by itself (a prompt, a play-once tone).
    PlaybackFinished { leg: Leg },
    /// A key press from a leg (RFC 4733 events, or in-band tones).
    Dtmf {
        leg: Leg,
        digit: crate::dtmf::DtmfDigit,
    },
    /// The two legs' codecs differ: audio is decoded and re-encoded from now on.
    Transcoding {
        from: Leg,
        decode: String,
        encode: String,
    },
}

/// Counters for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub packets_in: [u64; 2],
    pub packets_out: [u64; 2],
    pub malformed: u64,
    pub unexpected_source: u64,
    /// Packets that had nowhere to go (other leg unknown, on hold, or unknown payload).
    pub undeliverable: u64,
    /// Frames decoded and re-encoded (transcoding).
    pub transcoded_frames: u64,
    /// Frames concealed (lost or late packets on a transcoding leg).
    pub concealed_frames: u64,
    /// Audio packets (or decoded frames) not relayed because their leg is muted.
    pub muted_dropped: u64,
}

/// The 20 ms packetisation of everything we generate (RFC 3551 §4.2's default ptime).
const FRAME: Duration = Duration::from_millis(20);

/// Audio decoded from a leg whose codec the other leg does not share.
struct Decode {
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    /// Samples in one 20 ms frame at the decoder's PCM rate.
    frame: usize,
}

/// Audio encoded toward a leg from PCM of the other leg.
struct Encode {
    encoder: Box<dyn AudioEncoder>,
    resampler: Resampler,
    payload_type: u8,
    pcm: Vec<i16>,
    /// Our generated stream (before the leg's StreamRewriter keeps it continuous with
    /// anything forwarded earlier).
    ssrc: u32,
    seq: u16,
    ts: u32,
    ts_per_frame: u32,
    /// In-band DTMF to play toward a leg without telephone-event, at the encoder's rate.
    tones: VecDeque<i16>,
}

/// What to do with packets from a leg, worked out when a leg is (re)configured so the
/// per-packet path reads numbers instead of cloning configurations.
#[derive(Debug, Clone, Copy, Default)]
struct Route {
    /// Both legs are configured.
    ready: bool,
    /// Payload types arriving from this leg.
    audio_in: Option<u8>,
    event_in: Option<u8>,
    /// Forwarding: the other leg's payload type and clock for them (`None` when the
    /// codecs differ or the other leg has no such format).
    audio_out: Option<(u8, u32)>,
    event_out: Option<(u8, u32)>,
    /// The leg sends G.711 (`Some(true)` μ-law): decodable for in-band detection.
    g711_ulaw: Option<bool>,
}

/// A telephone-event packet due for a leg.
struct DueEvent {
    due: Instant,
    payload: [u8; 4],
    timestamp: u32,
    marker: bool,
    payload_type: u8,
}

struct LegState {
    config: Option<LegConfig>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// When the timeout clock started (configuration time, or the last packet).
    watch_since: Instant,
    timed_out: bool,
    /// Our stream toward this leg.
    out: StreamRewriter,
    /// RFC 4733 events arriving from this leg.
    events_in: Option<DtmfEventReceiver>,
    /// In-band DTMF detection on audio from a leg without telephone-event.
    inband: Option<InbandDetector>,
    decode: Option<Decode>,
    encode: Option<Encode>,
    events_out: VecDeque<DueEvent>,
    /// Audio we play toward this leg (music on hold, a prompt, a tone): while it plays,
    /// it replaces what the other leg sends.
    player: Option<Player>,
    /// Reception statistics of the stream this leg sends us, when we terminate it.
    rx_stats: Option<ReceiverStats>,
    /// Our generated stream toward this leg: packets, payload octets, last timestamp
    /// and when it was sent (for sender reports).
    sent_packets: u32,
    sent_octets: u32,
    last_sent: Option<(u32, Instant, u32)>,
    next_report: Option<Instant>,
    /// How packets from this leg are handled (see [`Route`]).
    route: Route,
    /// The server drops this leg's audio instead of relaying it (mute without a
    /// re-INVITE); it is still recorded and its key presses still detected.
    muted: bool,
}

impl LegState {
    fn new(now: Instant) -> LegState {
        let _ = now;
        LegState {
            config: None,
            latched_rtp: None,
            latched_rtcp: None,
            watch_since: now,
            timed_out: false,
            out: StreamRewriter::new(rand::random(), rand::random(), rand::random(), 8000),
            events_in: None,
            inband: None,
            decode: None,
            encode: None,
            events_out: VecDeque::new(),
            player: None,
            rx_stats: None,
            sent_packets: 0,
            sent_octets: 0,
            last_sent: None,
            next_report: None,
            route: Route::default(),
            muted: false,
        }
    }

    fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtp
            .or_else(|| self.config.as_ref().and_then(|c| c.remote_rtp))
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtcp
            .or_else(|| self.config.as_ref().and_then(|c| c.remote_rtcp))
            .or_else(|| {
                self.rtp_destination()
                    .map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
            })
    }

    fn may_send(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.send)
    }

    fn audio(&self) -> Option<&PayloadFormat> {
        self.config.as_ref().and_then(|c| c.audio.as_ref())
    }

    /// We terminate this leg's RTP: we decode what it sends or generate what it gets,
    /// so RTCP about those streams is ours to send, not the other leg's to relay.
    fn terminated(&self) -> bool {
        self.decode.is_some() || self.encode.is_some()
    }

    fn telephone_event(&self) -> Option<(u8, u32)> {
        let c = self.config.as_ref()?;
        c.telephone_event
            .map(|pt| (pt, c.telephone_event_rate.max(1)))
    }
}

/// A call being recorded: caller (leg A) on the left channel, callee on the right.
struct Recording {
    recorder: Recorder,
    started: Instant,
    /// Decoders for forwarded legs (a transcoded leg is already decoded for the codec).
    decoders: [Option<Box<dyn AudioDecoder>>; 2],
}

/// Sample rate of recordings: telephony audio, small files.
pub const RECORDING_RATE: u32 = 8000;

/// The end of a recording: the last bytes to append and the WAV header to write at the
/// start of the file.
pub struct FinishedRecording {
    pub tail: Vec<u8>,
    pub header: [u8; 44],
    pub seconds: u64,
}

pub struct MediaSession {
    config: SessionConfig,
    created: Instant,
    legs: [LegState; 2],
    recording: Option<Recording>,
    /// The next 20 ms tick, while some direction transcodes.
    next_tick: Option<Instant>,
    transmits: VecDeque<MediaTransmit>,
    events: VecDeque<MediaEvent>,
    stats: SessionStats,
}

impl MediaSession {
    pub fn new(config: SessionConfig, now: Instant) -> MediaSession {
        MediaSession {
            config,
            created: now,
            legs: [LegState::new(now), LegState::new(now)],
            recording: None,
            next_tick: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
        }
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Starts recording the call (no-op when already recording). The WAV bytes come out
    /// of [`MediaSession::poll_recording`], starting with a placeholder header.
    pub fn start_recording(&mut self, now: Instant) {
        if self.recording.is_none() {
            self.recording = Some(Recording {
                recorder: Recorder::new(RECORDING_RATE),
                started: now,
                decoders: [None, None],
            });
        }
    }

    /// WAV bytes recorded since the last call (empty when there are none).
    pub fn poll_recording(&mut self) -> Vec<u8> {
        match self.recording.as_mut() {
            Some(r) => {
                let mut out = Vec::new();
                loop {
                    let chunk = r.recorder.poll_bytes();
                    if chunk.is_empty() {
                        break;
                    }
                    out.extend(chunk);
                }
                out
            }
            None => Vec::new(),
        }
    }

    /// Stops recording; `None` when nothing was being recorded.
    pub fn stop_recording(&mut self, now: Instant) -> Option<FinishedRecording> {
        let r = self.recording.take()?;
        let seconds = now.saturating_duration_since(r.started).as_secs();
        let (tail, header) = r.recorder.finish();
        Some(FinishedRecording {
            tail,
            header,
            seconds,
        })
    }

    /// Feeds decoded audio of a leg to the recording.
    fn record_pcm(&mut self, leg: Leg, pcm: &[i16], rate: u32, at: Instant) {
        if let Some(r) = self.recording.as_mut() {
            let channel = match leg {
                Leg::A => Channel::Left,
                Leg::B => Channel::Right,
            };
            let ms = at.saturating_duration_since(r.started).as_millis() as u64;
            r.recorder
                .push(channel, &AudioFrame::new(rate, pcm.to_vec()), ms);
        }
    }

    /// Decodes a forwarded audio payload for the recording only.
    fn record_forwarded(&mut self, leg: Leg, payload: &[u8], now: Instant) {
        let Some(r) = self.recording.as_mut() else {
            return;
        };
        if r.decoders[leg.index()].is_none() {
            r.decoders[leg.index()] = self.legs[leg.index()]
                .audio()
                .and_then(PayloadFormat::spec)
                .and_then(|spec| decoder_for(&spec).ok());
        }
        let Some(decoder) = r.decoders[leg.index()].as_mut() else {
            return;
        };
        let rate = decoder.rate();
        if let Ok(pcm) = decoder.decode(payload) {
            self.record_pcm(leg, &pcm, rate, now);
        }
    }

    /// An encoder toward `leg` for audio we generate (forwarded legs have none).
    fn ensure_encoder(&mut self, leg: Leg) {
        let state = &mut self.legs[leg.index()];
        let Some(format) = state.audio().cloned() else {
            return;
        };
        let stale = state
            .encode
            .as_ref()
            .is_some_and(|e| e.payload_type != format.payload_type);
        if state.encode.is_some() && !stale {
            return;
        }
        let Some(encoder) = format.spec().and_then(|spec| encoder_for(&spec).ok()) else {
            return;
        };
        let rate = encoder.rate();
        state.encode = Some(Encode {
            encoder,
            resampler: Resampler::new(rate, rate),
            payload_type: format.payload_type,
            pcm: Vec::new(),
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
            ts_per_frame: format.clock_rate / 50,
            tones: VecDeque::new(),
        });
    }

    /// Plays `source` toward `leg`, replacing what the other party sends it until it ends
    /// or [`MediaSession::stop_playback`]. A looping source (music on hold) plays until
    /// stopped.
    pub fn play(&mut self, leg: Leg, source: Source, now: Instant) {
        self.play_sequence(leg, vec![source], now);
    }

    /// Plays `sources` one after another toward `leg` as one playback (a number read out
    /// digit by digit: "call parked at", "seven", "zero", "one"): without gaps between
    /// them, replacing what plays there now, and reported by one
    /// [`MediaEvent::PlaybackFinished`] after the last. An empty list plays nothing.
    pub fn play_sequence(&mut self, leg: Leg, sources: Vec<Source>, now: Instant) {
        if sources.is_empty() {
            return;
        }
        self.ensure_encoder(leg);
        let Some(rate) = self.legs[leg.index()]
            .encode
            .as_ref()
            .map(|e| e.encoder.rate())
        else {
            return; // no codec negotiated on that leg yet
        };
        let mut player = Player::new(rate);
        for source in sources {
            player.play(source);
        }
        self.legs[leg.index()].player = Some(player);
        if self.next_tick.is_none() {
            self.next_tick = Some(now + FRAME);
        }
    }

    /// Stops what plays toward `leg`; the other party is heard again.
    pub fn stop_playback(&mut self, leg: Leg, now: Instant) {
        if self.legs[leg.index()].player.take().is_some() {
            self.rebuild_pipelines(now);
        }
    }

    /// Stops (or resumes) relaying `leg`'s audio to the other leg.
    pub fn set_muted(&mut self, leg: Leg, muted: bool) {
        self.legs[leg.index()].muted = muted;
    }

    pub fn is_muted(&self, leg: Leg) -> bool {
        self.legs[leg.index()].muted
    }

    pub fn is_playing(&self, leg: Leg) -> bool {
        self.legs[leg.index()].player.is_some()
    }

    /// True while audio from `from` is decoded and re-encoded for the other leg.
    pub fn is_transcoding(&self, from: Leg) -> bool {
        self.legs[from.index()].decode.is_some()
    }

    /// Applies a (re-)negotiated configuration to a leg. A changed remote address drops
    /// the latch, so the peer's new source is learned again.
    pub fn configure_leg(&mut self, leg: Leg, config: LegConfig, now: Instant) {
        let state = &mut self.legs[leg.index()];
        let moved = state
            .config
            .as_ref()
            .is_none_or(|c| c.remote_rtp != config.remote_rtp);
        if moved {
            state.latched_rtp = None;
            state.latched_rtcp = None;
        }
        state.events_in = config
            .telephone_event
            .map(|_| DtmfEventReceiver::new(config.telephone_event_rate.max(1)));
        state.config = Some(config);
        state.watch_since = now;
        state.timed_out = false;
        self.rebuild_pipelines(now);
    }

    /// Decides, per direction, between forwarding and transcoding, and builds the codec
    /// chains and detectors that needs.
    fn rebuild_pipelines(&mut self, now: Instant) {
        for from in [Leg::A, Leg::B] {
            let to = from.other();
            let (src, dst) = (
                self.legs[from.index()].audio().cloned(),
                self.legs[to.index()].audio().cloned(),
            );
            let transcode = match (&src, &dst) {
                (Some(s), Some(d)) => !s.same_codec(d),
                _ => false,
            };
            let has_events = self.legs[from.index()].telephone_event().is_some();
            // In-band detection where the leg sends no telephone-events and we can get at
            // the audio cheaply (G.711) or decode it anyway (transcoding).
            let detect = !has_events
                && src
                    .as_ref()
                    .is_some_and(|s| transcode || s.is_g711().is_some());
            let rate = if transcode { 0 } else { 8000 };
            let state = &mut self.legs[from.index()];
            if !detect {
                state.inband = None;
            } else if state.inband.is_none() && rate != 0 {
                state.inband = Some(InbandDetector::new(rate));
            }
            if !transcode {
                self.legs[from.index()].decode = None;
                if self.legs[to.index()].player.is_none() {
                    self.legs[to.index()].encode = None;
                }
                continue;
            }
            let (Some(s), Some(d)) = (src, dst) else {
                continue;
            };
            let already = self.legs[from.index()].decode.is_some()
                && self.legs[to.index()]
                    .encode
                    .as_ref()
                    .is_some_and(|e| e.payload_type == d.payload_type);
            if already {
                continue;
            }
            let chains = s
                .spec()
                .zip(d.spec())
                .and_then(|(ss, ds)| Some((decoder_for(&ss).ok()?, encoder_for(&ds).ok()?)));
            let Some((decoder, encoder)) = chains else {
                self.legs[from.index()].decode = None;
                self.legs[to.index()].encode = None;
                continue;
            };
            let frame = (decoder.rate() / 50) as usize;
            let ts_per_frame = d.clock_rate / 50;
            self.events.push_back(MediaEvent::Transcoding {
                from,
                decode: s.encoding.clone(),
                encode: d.encoding.clone(),
            });
            let resampler = Resampler::new(decoder.rate(), encoder.rate());
            if detect {
                self.legs[from.index()].inband = Some(InbandDetector::new(decoder.rate()));
            }
            self.legs[from.index()].decode = Some(Decode {
                jitter: JitterBuffer::new(s.clock_rate, 20, 40, 200),
                decoder,
                frame,
            });
            self.legs[to.index()].encode = Some(Encode {
                encoder,
                resampler,
                payload_type: d.payload_type,
                pcm: Vec::new(),
                ssrc: rand::random(),
                seq: rand::random(),
                ts: rand::random(),
                ts_per_frame,
                tones: VecDeque::new(),
            });
        }
        for leg in [Leg::A, Leg::B] {
            if self.legs[leg.index()].player.is_some() {
                self.ensure_encoder(leg);
            }
        }
        for from in [Leg::A, Leg::B] {
            let route = {
                let (src, dst) = (
                    self.legs[from.index()].config.as_ref(),
                    self.legs[from.other().index()].config.as_ref(),
                );
                match (src, dst) {
                    (Some(s), Some(d)) => Route {
                        ready: true,
                        audio_in: s.audio.as_ref().map(|a| a.payload_type),
                        event_in: s.telephone_event,
                        audio_out: match (&s.audio, &d.audio) {
                            (Some(a), Some(b)) if a.same_codec(b) => {
                                Some((b.payload_type, b.clock_rate))
                            }
                            _ => None,
                        },
                        event_out: d
                            .telephone_event
                            .map(|pt| (pt, d.telephone_event_rate.max(1))),
                        g711_ulaw: s.audio.as_ref().and_then(PayloadFormat::is_g711),
                    },
                    // Alone on the call (an IVR answered it, nobody else yet): nothing
                    // to forward to, but its key presses still count.
                    (Some(s), None) => Route {
                        ready: false,
                        audio_in: s.audio.as_ref().map(|a| a.payload_type),
                        event_in: s.telephone_event,
                        g711_ulaw: s.audio.as_ref().and_then(PayloadFormat::is_g711),
                        ..Route::default()
                    },
                    _ => Route::default(),
                }
            };
            self.legs[from.index()].route = route;
        }
        for leg in self.legs.iter_mut() {
            match (leg.terminated(), leg.next_report) {
                (true, None) => leg.next_report = Some(now + report_delay()),
                (false, Some(_)) => leg.next_report = None,
                _ => {}
            }
        }
        let any = self
            .legs
            .iter()
            .any(|l| l.decode.is_some() || l.player.is_some());
        self.next_tick = match (any, self.next_tick) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(now + FRAME),
        };
    }

    pub fn handle_packet(
        &mut self,
        leg: Leg,
        kind: PacketKind,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        match kind {
            PacketKind::Rtp => self.handle_rtp(leg, from, data, now),
            PacketKind::Rtcp => self.handle_rtcp(leg, from, data, now),
        }
    }

    fn accept_source(&mut self, leg: Leg, kind: PacketKind, from: SocketAddr) -> bool {
        let state = &mut self.legs[leg.index()];
        let latch = match kind {
            PacketKind::Rtp => &mut state.latched_rtp,
            PacketKind::Rtcp => &mut state.latched_rtcp,
        };
        // The address the peer's SDP gave: a latch made before it was heard from (the
        // previous party's trailing packets after a transfer reconfigured the leg) yields
        // to it. Looked up only when the latch does not match (not per packet).
        let declared = |config: &Option<LegConfig>| {
            config.as_ref().and_then(|c| match kind {
                PacketKind::Rtp => c.remote_rtp,
                PacketKind::Rtcp => c.remote_rtcp,
            })
        };
        match latch {
            Some(addr) if *addr == from => true,
            Some(_) if declared(&state.config) == Some(from) => {
                *latch = Some(from);
                if kind == PacketKind::Rtp {
                    self.events
                        .push_back(MediaEvent::Latched { leg, addr: from });
                }
                true
            }
            Some(_) => {
                self.stats.unexpected_source += 1;
                false
            }
            None => {
                *latch = Some(from);
                if kind == PacketKind::Rtp {
                    self.events
                        .push_back(MediaEvent::Latched { leg, addr: from });
                }
                true
            }
        }
    }

    fn handle_rtp(&mut self, leg: Leg, from: SocketAddr, data: &[u8], now: Instant) {
        // RTCP multiplexed on the RTP port (RFC 5761) is relayed as RTCP.
        if is_rtcp(data) {
            self.handle_rtcp(leg, from, data, now);
            return;
        }
        let Ok(packet) = RtpPacket::parse(data) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.accept_source(leg, PacketKind::Rtp, from) {
            return;
        }
        self.stats.packets_in[leg.index()] += 1;
        {
            let state = &mut self.legs[leg.index()];
            state.watch_since = now;
            state.timed_out = false;
        }
        let pt = packet.payload_type();
        let route = self.legs[leg.index()].route;
        let is_event = Some(pt) == route.event_in;
        if is_event {
            self.receive_event(leg, &packet, now);
        }
        let is_audio = Some(pt) == route.audio_in;
        let transcoding = self.legs[leg.index()].decode.is_some();
        if is_audio && !transcoding {
            self.detect_inband_forwarded(leg, route.g711_ulaw, packet.payload());
            self.record_forwarded(leg, packet.payload(), now);
        }
        // Key presses are detected above even with nobody to relay to (a menu).
        if !route.ready {
            self.stats.undeliverable += 1;
            return;
        }
        if is_audio && !transcoding && self.legs[leg.index()].muted {
            self.stats.muted_dropped += 1;
            return;
        }
        // Transcoding: audio goes through the jitter buffer and the codecs on ticks, and
        // events are re-created on the other leg when their key press ends.
        if is_audio && transcoding {
            let clock = self.legs[leg.index()]
                .audio()
                .map_or(8000, |a| a.clock_rate);
            let state = &mut self.legs[leg.index()];
            let fresh = state
                .rx_stats
                .as_ref()
                .is_none_or(|r| r.ssrc() != packet.ssrc());
            if fresh {
                state.rx_stats = Some(ReceiverStats::new(packet.ssrc(), clock));
            }
            if let Some(stats) = state.rx_stats.as_mut() {
                stats.handle_packet(now, packet.sequence(), packet.timestamp());
            }
        }
        if let Some(decode) = self.legs[leg.index()].decode.as_mut() {
            if is_audio {
                decode.jitter.push(
                    packet.sequence(),
                    packet.timestamp(),
                    packet.payload().to_vec(),
                    now,
                );
            } else if !is_event {
                self.stats.undeliverable += 1;
            }
            return;
        }
        // Forwarding: map the payload type onto the other leg's numbering.
        let out = if is_event {
            route.event_out
        } else if is_audio {
            route.audio_out
        } else {
            None
        };
        let Some((out_pt, clock_rate)) = out else {
            self.stats.undeliverable += 1;
            return;
        };
        let target = &mut self.legs[leg.other().index()];
        if target.player.is_some() {
            return; // what we play replaces the other party
        }
        let (Some(to), true) = (target.rtp_destination(), target.may_send()) else {
            self.stats.undeliverable += 1;
            return;
        };
        target.out.set_clock_rate(clock_rate);
        let mut buf = data.to_vec();
        if target.out.rewrite_packet(now, &mut buf).is_err()
            || crate::rtp::set_payload_type(&mut buf, out_pt).is_err()
        {
            self.stats.malformed += 1;
            return;
        }
        self.stats.packets_out[leg.other().index()] += 1;
        self.transmits.push_back(MediaTransmit {
            leg: leg.other(),
            kind: PacketKind::Rtp,
            to,
            data: buf,
        });
    }

    /// An RFC 4733 packet from `leg`: report finished digits, and when the other leg is
    /// fed by transcoding, re-create the digit there.
    fn receive_event(&mut self, leg: Leg, packet: &RtpPacket<'_>, now: Instant) {
        let Some(rx) = self.legs[leg.index()].events_in.as_mut() else {
            return;
        };
        if rx
            .handle_packet(
                now,
                packet.timestamp(),
                packet.sequence(),
                packet.marker(),
                packet.payload(),
            )
            .is_err()
        {
            self.stats.malformed += 1;
            return;
        }
        self.drain_digits(leg, now);
    }

    fn drain_digits(&mut self, leg: Leg, now: Instant) {
        while let Some(digit) = self.legs[leg.index()]
            .events_in
            .as_mut()
            .and_then(DtmfEventReceiver::poll_digit)
        {
            self.events.push_back(MediaEvent::Dtmf { leg, digit });
            if self.legs[leg.index()].decode.is_some() {
                self.regenerate_digit(leg.other(), digit.digit, digit.duration_ms, now);
            }
        }
    }

    /// Plays a digit toward `to`: as telephone-events when it negotiated them, else as
    /// tones mixed into the audio we generate for it.
    fn regenerate_digit(&mut self, to: Leg, digit: char, duration_ms: u32, now: Instant) {
        let duration_ms = duration_ms.clamp(40, 2000);
        let state = &mut self.legs[to.index()];
        let Some(encode) = state.encode.as_mut() else {
            return;
        };
        if let Some((pt, rate)) = state.config.as_ref().and_then(|c| {
            c.telephone_event
                .map(|pt| (pt, c.telephone_event_rate.max(1)))
        }) {
            let sender = DtmfEventSender::new(rate).with_interval(FRAME);
            if let Ok(packets) = sender.packets(digit, duration_ms, encode.ts) {
                for p in packets {
                    state.events_out.push_back(DueEvent {
                        due: now + p.send_after,
                        payload: p.payload,
                        timestamp: p.timestamp,
                        marker: p.marker,
                        payload_type: pt,
                    });
                }
            }
        } else {
            let tone = generate_digit(encode.encoder.rate(), digit, duration_ms, -10.0);
            encode.tones.extend(tone.samples);
            // A gap after the digit, so two equal digits stay two.
            encode.tones.extend(std::iter::repeat_n(
                0,
                (encode.encoder.rate() / 20) as usize,
            ));
        }
    }

    /// In-band detection on forwarded G.711 (no decoder runs for it otherwise).
    fn detect_inband_forwarded(&mut self, leg: Leg, g711_ulaw: Option<bool>, payload: &[u8]) {
        let state = &mut self.legs[leg.index()];
        let (Some(det), Some(ulaw)) = (state.inband.as_mut(), g711_ulaw) else {
            return;
        };
        for digit in det.feed_g711(payload, ulaw) {
            self.events.push_back(MediaEvent::Dtmf { leg, digit });
        }
    }

    fn handle_rtcp(&mut self, leg: Leg, from: SocketAddr, data: &[u8], now: Instant) {
        if !is_rtcp(data) {
            self.stats.malformed += 1;
            return;
        }
        if !self.accept_source(leg, PacketKind::Rtcp, from) {
            return;
        }
        if self.legs[leg.index()].terminated() {
            // Reports about streams we terminate are for us: note the peer's sender
            // report (for LSR/DLSR) and relay nothing.
            if let Ok(packets) = RtcpPacket::parse_compound(data) {
                if let Some(stats) = self.legs[leg.index()].rx_stats.as_mut() {
                    for p in packets {
                        if let RtcpPacket::SenderReport(sr) = p {
                            if sr.ssrc == stats.ssrc() {
                                stats.handle_sender_report(now, sr.ntp_timestamp);
                            }
                        }
                    }
                }
            } else {
                self.stats.malformed += 1;
            }
            return;
        }
        if self.legs[leg.other().index()].terminated() {
            return; // the other side sees our stream, not this leg's
        }
        let target = &self.legs[leg.other().index()];
        if let (Some(to), true) = (target.rtcp_destination(), target.may_send()) {
            self.transmits.push_back(MediaTransmit {
                leg: leg.other(),
                kind: PacketKind::Rtcp,
                to,
                data: data.to_vec(),
            });
        }
    }

    /// One 20 ms tick of every transcoding direction.
    fn tick(&mut self, now: Instant) {
        for from in [Leg::A, Leg::B] {
            let to = from.other();
            let Some(decode) = self.legs[from.index()].decode.as_mut() else {
                continue;
            };
            let pcm = match decode.jitter.pop(now) {
                Playout::Frame(payload, _) => match decode.decoder.decode(&payload) {
                    Ok(pcm) => Some(pcm),
                    Err(_) => {
                        self.stats.malformed += 1;
                        Some(decode.decoder.conceal(decode.frame))
                    }
                },
                Playout::Missing { next } => {
                    self.stats.concealed_frames += 1;
                    let frame = decode.frame;
                    next.and_then(|n| decode.decoder.decode_fec(&n, frame))
                        .or_else(|| Some(decode.decoder.conceal(frame)))
                }
                Playout::Empty => None,
            };
            let Some(pcm) = pcm else {
                continue;
            };
            let rate = decode.decoder.rate();
            if let Some(det) = self.legs[from.index()].inband.as_mut() {
                for digit in det.feed(&AudioFrame::new(rate, pcm.clone())) {
                    self.events.push_back(MediaEvent::Dtmf { leg: from, digit });
                }
            }
            self.record_pcm(from, &pcm, rate, now);
            if self.legs[from.index()].muted {
                self.stats.muted_dropped += 1;
            } else if self.legs[to.index()].player.is_none() {
                self.encode_toward(to, &pcm, now, true);
            }
        }
        for leg in [Leg::A, Leg::B] {
            let Some(player) = self.legs[leg.index()].player.as_mut() else {
                continue;
            };
            let frame = player.next_frame();
            let mut finished = false;
            while let Some(ev) = player.poll_event() {
                if let PlayerEvent::Finished(_) = ev {
                    finished = player.is_idle();
                }
            }
            match frame {
                Some(f) => self.encode_toward(leg, &f.samples, now, false),
                None => finished = true,
            }
            if finished {
                self.legs[leg.index()].player = None;
                self.events.push_back(MediaEvent::PlaybackFinished { leg });
                self.rebuild_pipelines(now);
            }
        }
        self.flush_events_out(now);
    }

    /// Encodes PCM toward `to` and sends whole frames: the other leg's decoded audio
    /// (`resample`: at its decoder's rate), or what we play (already at the encoder's).
    fn encode_toward(&mut self, to: Leg, pcm: &[i16], now: Instant, resample: bool) {
        let state = &mut self.legs[to.index()];
        let destination = state.rtp_destination().filter(|_| state.may_send());
        let Some(encode) = state.encode.as_mut() else {
            return;
        };
        if resample {
            let resampled = encode.resampler.process(pcm);
            encode.pcm.extend_from_slice(&resampled);
        } else {
            encode.pcm.extend_from_slice(pcm);
        }
        let frame = encode.encoder.frame_samples().max(1);
        while encode.pcm.len() >= frame {
            let mut chunk: Vec<i16> = encode.pcm.drain(..frame).collect();
            for sample in chunk.iter_mut() {
                match encode.tones.pop_front() {
                    Some(t) => *sample = t,
                    None => break,
                }
            }
            let Ok(payload) = encode.encoder.encode(&chunk) else {
                self.stats.malformed += 1;
                continue;
            };
            encode.seq = encode.seq.wrapping_add(1);
            encode.ts = encode.ts.wrapping_add(encode.ts_per_frame);
            self.stats.transcoded_frames += 1;
            let Some(to_addr) = destination else {
                continue;
            };
            state.out.set_clock_rate(encode.ts_per_frame * 50);
            let w = state.out.rewrite(now, encode.ssrc, encode.seq, encode.ts);
            let data = RtpHeader::new(encode.payload_type, w.sequence, w.timestamp, w.ssrc)
                .with_marker(w.switched)
                .to_bytes(&payload);
            let clock = encode.ts_per_frame * 50;
            state.sent_packets = state.sent_packets.wrapping_add(1);
            state.sent_octets = state.sent_octets.wrapping_add(payload.len() as u32);
            state.last_sent = Some((w.timestamp, now, clock));
            self.stats.packets_out[to.index()] += 1;
            self.transmits.push_back(MediaTransmit {
                leg: to,
                kind: PacketKind::Rtp,
                to: to_addr,
                data,
            });
        }
    }

    /// Sends the telephone-event packets that are due, in our stream toward each leg.
    fn flush_events_out(&mut self, now: Instant) {
        for leg in [Leg::A, Leg::B] {
            let state = &mut self.legs[leg.index()];
            let destination = state.rtp_destination().filter(|_| state.may_send());
            while state.events_out.front().is_some_and(|e| e.due <= now) {
                let Some(e) = state.events_out.pop_front() else {
                    break;
                };
                let (Some(encode), Some(to)) = (state.encode.as_mut(), destination) else {
                    continue;
                };
                encode.seq = encode.seq.wrapping_add(1);
                let w = state.out.rewrite(now, encode.ssrc, encode.seq, e.timestamp);
                let data = RtpHeader::new(e.payload_type, w.sequence, w.timestamp, w.ssrc)
                    .with_marker(e.marker || w.switched)
                    .to_bytes(&e.payload);
                state.sent_packets = state.sent_packets.wrapping_add(1);
                state.sent_octets = state.sent_octets.wrapping_add(e.payload.len() as u32);
                self.stats.packets_out[leg.index()] += 1;
                self.transmits.push_back(MediaTransmit {
                    leg,
                    kind: PacketKind::Rtp,
                    to,
                    data,
                });
            }
        }
    }

    /// Sends our RTCP toward a leg we terminate: a sender report when we have sent it
    /// media (its NTP/RTP timestamps and counts), a receiver report otherwise, with a
    /// report block on what it sends us, and an SDES CNAME (RFC 3550 §6.1: compound).
    fn send_report(&mut self, leg: Leg, now: Instant) {
        let ntp_now = self
            .config
            .start_ntp
            .wrapping_add(ntp_of(now.saturating_duration_since(self.created)));
        let state = &mut self.legs[leg.index()];
        state.next_report = Some(now + report_delay());
        let Some(to) = state.rtcp_destination() else {
            return;
        };
        let reports: Vec<_> = state
            .rx_stats
            .as_mut()
            .filter(|s| s.received() > 0)
            .map(|s| s.report_block(now))
            .into_iter()
            .collect();
        let ssrc = state.out.ssrc();
        let data = match state.last_sent {
            Some((ts, at, clock)) => {
                let elapsed = now.saturating_duration_since(at);
                let rtp_timestamp = ts.wrapping_add(
                    (elapsed.as_micros() as u64 * u64::from(clock) / 1_000_000) as u32,
                );
                build_sr(
                    SenderReport {
                        ssrc,
                        ntp_timestamp: ntp_now,
                        rtp_timestamp,
                        packet_count: state.sent_packets,
                        octet_count: state.sent_octets,
                        reports,
                    },
                    "switchboard",
                )
            }
            None => build_rr(ReceiverReport { ssrc, reports }, "switchboard"),
        };
        self.transmits.push_back(MediaTransmit {
            leg,
            kind: PacketKind::Rtcp,
            to,
            data,
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for leg in [Leg::A, Leg::B] {
            let state = &mut self.legs[leg.index()];
            let watching = state.config.as_ref().is_some_and(|c| c.recv) && !state.timed_out;
            if watching && now >= state.watch_since + self.config.rtp_timeout {
                state.timed_out = true;
                self.events.push_back(MediaEvent::RtpTimeout { leg });
            }
            if let Some(rx) = state.events_in.as_mut() {
                if rx.poll_timeout().is_some_and(|t| t <= now) {
                    rx.handle_timeout(now);
                    self.drain_digits(leg, now);
                }
            }
        }
        for leg in [Leg::A, Leg::B] {
            if self.legs[leg.index()].next_report.is_some_and(|t| t <= now) {
                self.send_report(leg, now);
            }
        }
        // Catch up missed ticks, but never more than 200 ms of them (a stalled runtime
        // must not produce a burst of stale audio).
        let mut ticks = 0;
        while let Some(t) = self.next_tick {
            if t > now {
                break;
            }
            if ticks == 10 {
                self.next_tick = Some(now + FRAME);
                break;
            }
            self.tick(t);
            self.next_tick = Some(t + FRAME);
            ticks += 1;
        }
        self.flush_events_out(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let rtp = self
            .legs
            .iter()
            .filter(|s| s.config.as_ref().is_some_and(|c| c.recv) && !s.timed_out)
            .map(|s| s.watch_since + self.config.rtp_timeout);
        let dtmf = self.legs.iter().filter_map(|s| {
            s.events_in
                .as_ref()
                .and_then(DtmfEventReceiver::poll_timeout)
        });
        let due = self
            .legs
            .iter()
            .filter_map(|s| s.events_out.front().map(|e| e.due));
        let reports = self.legs.iter().filter_map(|s| s.next_report);
        rtp.chain(dtmf)
            .chain(due)
            .chain(reports)
            .chain(self.next_tick)
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<MediaTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pcmu(pt: u8) -> PayloadFormat {
        PayloadFormat {
            payload_type: pt,
            encoding: "PCMU".into(),
            clock_rate: 8000,
            channels: 1,
            fmtp: None,
        }
    }

    fn leg(remote: &str, pt: u8, te: Option<u8>) -> LegConfig {
        LegConfig {
            remote_rtp: Some(addr(remote)),
            remote_rtcp: None,
            audio: Some(pcmu(pt)),
            telephone_event: te,
            telephone_event_rate: 8000,
            send: true,
            recv: true,
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        RtpHeader::new(pt, seq, ts, ssrc).to_bytes(&[0xff; 160])
    }

    struct Hdr {
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        ssrc: u32,
    }

    fn read_rtp_header(data: &[u8]) -> Option<Hdr> {
        let p = RtpPacket::parse(data).ok()?;
        Some(Hdr {
            payload_type: p.payload_type(),
            sequence: p.sequence(),
            timestamp: p.timestamp(),
            ssrc: p.ssrc(),
        })
    }

    fn session(now: Instant) -> MediaSession {
        let mut s = MediaSession::new(SessionConfig::default(), now);
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, Some(101)), now);
        s.configure_leg(Leg::B, leg("10.0.0.2:5000", 0, Some(96)), now);
        s
    }

    #[test]
    fn forwards_with_our_ssrc_and_continuous_numbering_across_a_source_switch() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let a = addr("192.0.2.10:4000"); // NAT: not the SDP address
        let mut out = Vec::new();
        for i in 0..3u16 {
            let at = t0 + Duration::from_millis(20 * u64::from(i));
            s.handle_packet(
                Leg::A,
                PacketKind::Rtp,
                a,
                &rtp(0, 100 + i, 1000 + 160 * u32::from(i), 7),
                at,
            );
            out.push(s.poll_transmit().unwrap());
        }
        assert_eq!(
            s.poll_event(),
            Some(MediaEvent::Latched {
                leg: Leg::A,
                addr: a
            })
        );
        assert!(out
            .iter()
            .all(|t| t.leg == Leg::B && t.to == addr("10.0.0.2:5000")));
        let hdr: Vec<Hdr> = out
            .iter()
            .map(|t| read_rtp_header(&t.data).unwrap())
            .collect();
        assert!(hdr
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence.wrapping_add(1)));
        assert!(hdr
            .windows(2)
            .all(|w| w[1].timestamp == w[0].timestamp.wrapping_add(160)));
        assert!(hdr.iter().all(|h| h.ssrc == hdr[0].ssrc && h.ssrc != 7));
        // The caller's phone restarts its stream (new SSRC, new numbers) 100 ms later.
        let at = t0 + Duration::from_millis(140);
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &rtp(0, 9, 555, 8), at);
        let h = read_rtp_header(&s.poll_transmit().unwrap().data).unwrap();
        assert_eq!(h.ssrc, hdr[0].ssrc);
        assert_eq!(h.sequence, hdr[2].sequence.wrapping_add(1));
        // 140 ms after the last packet was forwarded at 40 ms: 100 ms at 8 kHz.
        assert_eq!(h.timestamp, hdr[2].timestamp.wrapping_add(800));
    }

    #[test]
    fn telephone_events_are_renumbered_and_unknown_payloads_dropped() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let a = addr("10.0.0.1:4000");
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &rtp(101, 1, 0, 1), t0);
        assert_eq!(
            read_rtp_header(&s.poll_transmit().unwrap().data)
                .unwrap()
                .payload_type,
            96
        );
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &rtp(18, 2, 160, 1), t0);
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().undeliverable, 1);
    }

    #[test]
    fn other_sources_after_latching_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.2:5000"),
            &rtp(0, 1, 0, 3),
            t0,
        );
        assert!(s.poll_transmit().is_some());
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("203.0.113.9:6666"),
            &rtp(0, 2, 160, 3),
            t0,
        );
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().unexpected_source, 1);
        // Garbage never panics and is counted.
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.2:5000"),
            &[0x80, 0],
            t0,
        );
        s.handle_packet(
            Leg::B,
            PacketKind::Rtcp,
            addr("10.0.0.2:5001"),
            &[1, 2, 3],
            t0,
        );
        assert_eq!(s.stats().malformed, 2);
    }

    #[test]
    fn a_latch_on_a_stray_source_yields_to_the_address_the_sdp_gave() {
        // After a transfer leg B is reconfigured toward the new party (10.0.0.7), but the
        // old party's last packets (from 10.0.0.2) arrive first and take the latch.
        let t0 = Instant::now();
        let mut s = session(t0);
        s.configure_leg(Leg::B, leg("10.0.0.7:7000", 0, None), t0);
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.2:5000"),
            &rtp(0, 1, 0, 3),
            t0,
        );
        while s.poll_transmit().is_some() {}
        // The new party's own packets win the latch back.
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.7:7000"),
            &rtp(0, 1, 0, 9),
            t0,
        );
        assert!(
            s.poll_transmit().is_some(),
            "the new party's audio is relayed"
        );
        // What A sends now goes to the new party.
        s.handle_packet(
            Leg::A,
            PacketKind::Rtp,
            addr("10.0.0.1:4000"),
            &rtp(0, 5, 800, 1),
            t0,
        );
        let t = s.poll_transmit().expect("relayed to B");
        assert_eq!((t.leg, t.to), (Leg::B, addr("10.0.0.7:7000")));
        // And the stray source is now the one refused.
        s.handle_packet(
            Leg::B,
            PacketKind::Rtp,
            addr("10.0.0.2:5000"),
            &rtp(0, 2, 160, 3),
            t0,
        );
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().unexpected_source, 1);
    }

    #[test]
    fn nothing_is_sent_to_a_leg_on_hold_and_rtcp_follows_rtp() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let mut held = leg("10.0.0.2:5000", 0, None);
        held.send = false;
        s.configure_leg(Leg::B, held, t0);
        s.handle_packet(
            Leg::A,
            PacketKind::Rtp,
            addr("10.0.0.1:4000"),
            &rtp(0, 1, 0, 1),
            t0,
        );
        assert_eq!(s.poll_transmit(), None);
        s.configure_leg(Leg::B, leg("10.0.0.2:5000", 0, None), t0);
        let sr = [0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        s.handle_packet(Leg::A, PacketKind::Rtcp, addr("10.0.0.1:4001"), &sr, t0);
        let t = s.poll_transmit().unwrap();
        assert_eq!((t.kind, t.to), (PacketKind::Rtcp, addr("10.0.0.2:5001")));
    }

    #[test]
    fn silence_from_a_sending_leg_times_out_once() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(
            SessionConfig {
                rtp_timeout: Duration::from_secs(10),
                ..SessionConfig::default()
            },
            t0,
        );
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, None), t0);
        let mut quiet = leg("10.0.0.2:5000", 0, None);
        quiet.recv = false; // B answered recvonly: it sends nothing, so no timeout for B
        s.configure_leg(Leg::B, quiet, t0);
        s.handle_packet(
            Leg::A,
            PacketKind::Rtp,
            addr("10.0.0.1:4000"),
            &rtp(0, 1, 0, 1),
            t0 + Duration::from_secs(5),
        );
        let _ = s.poll_event();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(15)));
        s.handle_timeout(t0 + Duration::from_secs(15));
        assert_eq!(s.poll_event(), Some(MediaEvent::RtpTimeout { leg: Leg::A }));
        assert_eq!(s.poll_timeout(), None);
    }

    fn tone(rate: u32, freq: f64, n: usize, start: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (start + i) as f64 / f64::from(rate);
                (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    /// Zero crossings per second / 2 over the second half of a signal.
    fn frequency(samples: &[i16], rate: u32) -> f64 {
        let s = &samples[samples.len() / 2..];
        let crossings = s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f64 / 2.0 / (s.len() as f64 / f64::from(rate))
    }

    fn opus_leg(remote: &str) -> LegConfig {
        LegConfig {
            remote_rtp: Some(addr(remote)),
            remote_rtcp: None,
            audio: Some(PayloadFormat {
                payload_type: 111,
                encoding: "opus".into(),
                clock_rate: 48000,
                channels: 2,
                fmtp: None,
            }),
            telephone_event: Some(101),
            telephone_event_rate: 8000,
            send: true,
            recv: true,
        }
    }

    #[test]
    fn pcmu_to_opus_is_transcoded_keeping_a_1khz_tone() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(SessionConfig::default(), t0);
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, None), t0);
        s.configure_leg(Leg::B, opus_leg("10.0.0.2:5000"), t0);
        assert!(s.is_transcoding(Leg::A) && s.is_transcoding(Leg::B));
        let a = addr("10.0.0.1:4000");
        let mut decoder = crate::codec::opus::OpusDecoder::new().unwrap();
        let mut heard = Vec::new();
        let mut last_seq = None;
        for i in 0..100u16 {
            let now = t0 + FRAME * u32::from(i);
            let pcm = tone(8000, 1000.0, 160, 160 * usize::from(i));
            let payload = g711::encode_ulaw(&pcm);
            let pkt = RtpHeader::new(0, i, 160 * u32::from(i), 99).to_bytes(&payload);
            s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, now);
            s.handle_timeout(now);
            while let Some(t) = s.poll_transmit() {
                assert_eq!((t.leg, t.to), (Leg::B, addr("10.0.0.2:5000")));
                let p = RtpPacket::parse(&t.data).unwrap();
                assert_eq!(p.payload_type(), 111);
                if let Some(prev) = last_seq {
                    assert_eq!(p.sequence(), u16::wrapping_add(prev, 1));
                }
                last_seq = Some(p.sequence());
                heard
                    .extend(crate::codec::AudioDecoder::decode(&mut decoder, p.payload()).unwrap());
            }
        }
        assert!(heard.len() > 48000, "{} samples", heard.len());
        let f = frequency(&heard, 48000);
        assert!((f - 1000.0).abs() < 20.0, "heard {f} Hz");
        assert!(s.stats().transcoded_frames > 80);
    }

    #[test]
    fn dtmf_events_are_reported_and_recreated_across_transcoding() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(SessionConfig::default(), t0);
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, Some(101)), t0);
        s.configure_leg(Leg::B, opus_leg("10.0.0.2:5000"), t0);
        let a = addr("10.0.0.1:4000");
        // Keep audio flowing so the B stream exists, then key "5" as RFC 4733 events.
        let sender = DtmfEventSender::new(8000).with_interval(FRAME);
        let events = sender.packets('5', 100, 8000).unwrap();
        let mut seen_events = Vec::new();
        let mut reported = Vec::new();
        for i in 0..40u16 {
            let now = t0 + FRAME * u32::from(i);
            let pcm = vec![0i16; 160];
            let pkt =
                RtpHeader::new(0, i, 160 * u32::from(i), 7).to_bytes(&g711::encode_ulaw(&pcm));
            s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, now);
            if i >= 10 {
                if let Some(e) = events.get(usize::from(i - 10)) {
                    let pkt = RtpHeader::new(101, 1000 + i, e.timestamp, 7)
                        .with_marker(e.marker)
                        .to_bytes(&e.payload);
                    s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, now);
                }
            }
            s.handle_timeout(now);
            while let Some(ev) = s.poll_event() {
                if let MediaEvent::Dtmf { leg, digit } = ev {
                    reported.push((leg, digit.digit));
                }
            }
            while let Some(t) = s.poll_transmit() {
                let p = RtpPacket::parse(&t.data).unwrap();
                if p.payload_type() == 101 {
                    seen_events.push(crate::dtmf::TelephoneEvent::parse(p.payload()).unwrap());
                }
            }
        }
        assert_eq!(reported, vec![(Leg::A, '5')]);
        assert!(!seen_events.is_empty(), "no telephone-event reached leg B");
        assert!(seen_events.iter().all(|e| e.event == 5));
        assert!(seen_events.last().unwrap().end);
    }

    #[test]
    fn a_leg_alone_reports_its_digits_and_hears_a_prompt_to_the_end() {
        // An IVR answered the caller: leg B is not configured yet.
        let t0 = Instant::now();
        let mut s = MediaSession::new(SessionConfig::default(), t0);
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, Some(101)), t0);
        let a = addr("10.0.0.1:4000");
        let prompt = crate::wav::Clip::new(8000, vec![1000i16; 1600]); // 200 ms
        s.play(Leg::A, Source::Clip(std::sync::Arc::new(prompt)), t0);
        assert!(s.is_playing(Leg::A));
        let sender = DtmfEventSender::new(8000).with_interval(FRAME);
        let events = sender.packets('1', 100, 8000).unwrap();
        let mut reported = Vec::new();
        let mut finished = false;
        let mut sent_to_a = 0;
        for i in 0..30u16 {
            let now = t0 + FRAME * u32::from(i);
            if let Some(e) = events.get(usize::from(i)) {
                let pkt = RtpHeader::new(101, 1000 + i, e.timestamp, 7)
                    .with_marker(e.marker)
                    .to_bytes(&e.payload);
                s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, now);
            }
            s.handle_timeout(now);
            while let Some(ev) = s.poll_event() {
                match ev {
                    MediaEvent::Dtmf { leg, digit } => reported.push((leg, digit.digit)),
                    MediaEvent::PlaybackFinished { leg: Leg::A } => finished = true,
                    _ => {}
                }
            }
            while let Some(t) = s.poll_transmit() {
                assert_eq!(t.leg, Leg::A, "nothing goes to the absent leg B");
                sent_to_a += 1;
            }
        }
        assert_eq!(reported, vec![(Leg::A, '1')]);
        assert!(finished && !s.is_playing(Leg::A));
        assert!(sent_to_a >= 10, "the prompt's frames: {sent_to_a}");
    }

    #[test]
    fn inband_digits_on_forwarded_g711_are_reported() {
        let t0 = Instant::now();
        let mut s = session(t0);
        // Leg A has no telephone-event: its audio is watched for tones.
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, None), t0);
        let digit = generate_digit(8000, '7', 120, -10.0).samples;
        let mut pcm = vec![0i16; 800];
        pcm.extend(digit);
        pcm.extend(vec![0i16; 1600]);
        let mut reported = Vec::new();
        for (i, chunk) in pcm.chunks(160).enumerate() {
            let now = t0 + FRAME * i as u32;
            let pkt =
                RtpHeader::new(0, i as u16, 160 * i as u32, 3).to_bytes(&g711::encode_ulaw(chunk));
            s.handle_packet(Leg::A, PacketKind::Rtp, addr("10.0.0.1:4000"), &pkt, now);
            while let Some(ev) = s.poll_event() {
                if let MediaEvent::Dtmf { digit, .. } = ev {
                    reported.push(digit.digit);
                }
            }
        }
        assert_eq!(reported, vec!['7']);
    }

    #[test]
    fn a_recording_has_the_caller_left_and_the_callee_right() {
        let t0 = Instant::now();
        let mut s = session(t0);
        s.start_recording(t0);
        let mut wav = Vec::new();
        for i in 0..100u16 {
            let now = t0 + FRAME * u32::from(i);
            let n = usize::from(i) * 160;
            let a = g711::encode_ulaw(&tone(8000, 1000.0, 160, n));
            let b = g711::encode_ulaw(&tone(8000, 440.0, 160, n));
            let ts = 160 * u32::from(i);
            s.handle_packet(
                Leg::A,
                PacketKind::Rtp,
                addr("10.0.0.1:4000"),
                &RtpHeader::new(0, i, ts, 1).to_bytes(&a),
                now,
            );
            s.handle_packet(
                Leg::B,
                PacketKind::Rtp,
                addr("10.0.0.2:5000"),
                &RtpHeader::new(0, i, ts, 2).to_bytes(&b),
                now,
            );
            wav.extend(s.poll_recording());
        }
        let done = s.stop_recording(t0 + Duration::from_secs(2)).unwrap();
        wav.extend(done.tail);
        wav[..44].copy_from_slice(&done.header);
        assert_eq!(done.seconds, 2);
        let clip_l: Vec<i16> = wav[44..]
            .chunks_exact(4)
            .map(|f| i16::from_le_bytes([f[0], f[1]]))
            .collect();
        let clip_r: Vec<i16> = wav[44..]
            .chunks_exact(4)
            .map(|f| i16::from_le_bytes([f[2], f[3]]))
            .collect();
        assert!(clip_l.len() > 12_000, "{} frames", clip_l.len());
        let (fl, fr) = (frequency(&clip_l, 8000), frequency(&clip_r, 8000));
        assert!((fl - 1000.0).abs() < 15.0, "left {fl} Hz");
        assert!((fr - 440.0).abs() < 10.0, "right {fr} Hz");
        assert!(s.stop_recording(t0).is_none());
    }

    #[test]
    fn music_on_hold_replaces_the_other_party_until_stopped() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let (a, b) = (addr("10.0.0.1:4000"), addr("10.0.0.2:5000"));
        s.play(
            Leg::B,
            Source::DefaultMoh {
                start: crate::player::StartAt::Beginning,
            },
            t0,
        );
        assert!(s.is_playing(Leg::B));
        let mut to_b = Vec::new();
        for i in 0..100u16 {
            let now = t0 + FRAME * u32::from(i);
            // The caller keeps talking (silence): none of it reaches B while B is held.
            let pkt = RtpHeader::new(0, i, 160 * u32::from(i), 5).to_bytes(&[0xff; 160]);
            s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, now);
            s.handle_timeout(now);
            while let Some(t) = s.poll_transmit() {
                assert_eq!(t.leg, Leg::B);
                to_b.push(t.data);
            }
        }
        assert!(to_b.len() >= 95, "{} packets of music", to_b.len());
        let pcm: Vec<i16> = to_b
            .iter()
            .flat_map(|d| g711::decode_ulaw(RtpPacket::parse(d).unwrap().payload()))
            .collect();
        let rms =
            (pcm.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        assert!(rms > 300.0, "music on hold is audible (rms {rms})");
        let seqs: Vec<u16> = to_b
            .iter()
            .map(|d| RtpPacket::parse(d).unwrap().sequence())
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
        // Resume: the caller is forwarded again, in the same continuous stream.
        let t1 = t0 + Duration::from_secs(2);
        s.stop_playback(Leg::B, t1);
        let pkt = RtpHeader::new(0, 100, 16000, 5).to_bytes(&[0x55; 160]);
        s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, t1);
        let t = s.poll_transmit().unwrap();
        let p = RtpPacket::parse(&t.data).unwrap();
        assert_eq!((t.to, p.payload()[0]), (b, 0x55));
        assert_eq!(p.sequence(), seqs.last().unwrap().wrapping_add(1));
    }

    #[test]
    fn a_prompt_plays_once_then_reports_finished() {
        let t0 = Instant::now();
        let mut s = session(t0);
        let clip = std::sync::Arc::new(crate::wav::Clip {
            rate: 8000,
            samples: tone(8000, 1000.0, 1600, 0),
        });
        s.play(Leg::A, Source::Clip(clip), t0);
        let mut sent = 0;
        let mut finished = false;
        for i in 1..30u32 {
            s.handle_timeout(t0 + FRAME * i);
            while s.poll_transmit().is_some() {
                sent += 1;
            }
            while let Some(e) = s.poll_event() {
                finished |= e == MediaEvent::PlaybackFinished { leg: Leg::A };
            }
        }
        assert!(finished && !s.is_playing(Leg::A));
        assert!(
            (10..=12).contains(&sent),
            "a 200 ms prompt is 10 packets, sent {sent}"
        );
    }

    #[test]
    fn a_sequence_plays_back_to_back_and_finishes_once_after_the_last() {
        let t0 = Instant::now();
        let mut s = session(t0);
        // 130 ms of 1 kHz, 70 ms of 500 Hz, 110 ms of 1 kHz: 310 ms, not whole frames.
        let clip = |hz: f64, n: usize| {
            Source::Clip(std::sync::Arc::new(crate::wav::Clip {
                rate: 8000,
                samples: tone(8000, hz, n, 0),
            }))
        };
        s.play_sequence(
            Leg::A,
            vec![clip(1000.0, 1040), clip(500.0, 560), clip(1000.0, 880)],
            t0,
        );
        let mut pcm = Vec::new();
        let mut finished_at = Vec::new();
        for i in 1..40u32 {
            s.handle_timeout(t0 + FRAME * i);
            while let Some(t) = s.poll_transmit() {
                pcm.extend(g711::decode_ulaw(
                    RtpPacket::parse(&t.data).unwrap().payload(),
                ));
            }
            while let Some(e) = s.poll_event() {
                if e == (MediaEvent::PlaybackFinished { leg: Leg::A }) {
                    finished_at.push(i);
                }
            }
        }
        // One finish, with the frame that carries the last sample (frame 16 of 20 ms).
        assert_eq!(finished_at, vec![16]);
        assert!(!s.is_playing(Leg::A));
        assert_eq!(pcm.len(), 16 * 160, "whole frames, the last padded");
        // No gap: every 10 ms window up to the end of the third clip carries tone.
        for (w, window) in pcm[..2480].chunks(80).enumerate() {
            let peak = window.iter().map(|x| x.unsigned_abs()).max().unwrap();
            assert!(peak > 1000, "window {w} is silent");
        }
        let (first, second) = (
            frequency(&pcm[80..960], 8000),
            frequency(&pcm[1120..1520], 8000),
        );
        assert!((first - 1000.0).abs() < 20.0, "first clip {first} Hz");
        assert!((second - 500.0).abs() < 20.0, "second clip {second} Hz");
        // Nothing to play: nothing starts, nothing finishes.
        s.play_sequence(Leg::A, Vec::new(), t0);
        assert!(!s.is_playing(Leg::A));
    }

    #[test]
    fn terminated_legs_get_our_sender_reports_not_the_peers() {
        let t0 = Instant::now();
        let mut s = MediaSession::new(
            SessionConfig {
                start_ntp: 0xE000_0000_0000_0000,
                ..SessionConfig::default()
            },
            t0,
        );
        s.configure_leg(Leg::A, leg("10.0.0.1:4000", 0, None), t0);
        s.configure_leg(Leg::B, opus_leg("10.0.0.2:5000"), t0);
        let a = addr("10.0.0.1:4000");
        let mut reports = Vec::new();
        for i in 0..400u16 {
            let now = t0 + FRAME * u32::from(i);
            let pkt = RtpHeader::new(0, i, 160 * u32::from(i), 77).to_bytes(&[0xff; 160]);
            s.handle_packet(Leg::A, PacketKind::Rtp, a, &pkt, now);
            if i == 100 {
                // The caller's own report must not reach the callee: it describes a
                // stream the callee never sees.
                let rr = build_rr(
                    ReceiverReport {
                        ssrc: 77,
                        reports: vec![],
                    },
                    "alice",
                );
                s.handle_packet(Leg::A, PacketKind::Rtcp, addr("10.0.0.1:4001"), &rr, now);
            }
            s.handle_timeout(now);
            while let Some(t) = s.poll_transmit() {
                if t.kind == PacketKind::Rtcp {
                    reports.push((t.leg, t.to, t.data));
                }
            }
        }
        // Eight seconds: at least one report each way, none relayed.
        for leg in [Leg::A, Leg::B] {
            let ours: Vec<_> = reports.iter().filter(|r| r.0 == leg).collect();
            assert!(!ours.is_empty(), "no RTCP toward {leg:?}");
            for (_, _, data) in &ours {
                let packets = RtcpPacket::parse_compound(data).unwrap();
                assert!(packets
                    .iter()
                    .any(|p| matches!(p, RtcpPacket::SourceDescription(_))));
                match leg {
                    // We send the caller nothing (the callee is silent): a receiver
                    // report on what the caller sends us.
                    Leg::A => {
                        let rr = packets
                            .iter()
                            .find_map(|p| match p {
                                RtcpPacket::ReceiverReport(rr) => Some(rr.clone()),
                                _ => None,
                            })
                            .expect("a receiver report toward A");
                        assert_ne!(rr.ssrc, 77);
                        assert_eq!(rr.reports.len(), 1);
                        assert_eq!(rr.reports[0].ssrc, 77);
                    }
                    // The callee gets our transcoded stream: a sender report for it.
                    Leg::B => {
                        let sr = packets
                            .iter()
                            .find_map(|p| match p {
                                RtcpPacket::SenderReport(sr) => Some(sr.clone()),
                                _ => None,
                            })
                            .expect("a sender report toward B");
                        assert_ne!(sr.ssrc, 77);
                        assert!(sr.packet_count > 0);
                        assert!(sr.ntp_timestamp > 0xE000_0000_0000_0000);
                    }
                }
            }
        }
        assert!(reports
            .iter()
            .all(|(_, _, d)| !RtcpPacket::parse_compound(d)
                .unwrap()
                .iter()
                .any(|p| matches!(p, RtcpPacket::ReceiverReport(rr) if rr.ssrc == 77))));
    }
}
