//! The conference mixer of one room: every participant's RTP in (each in its own codec),
//! one mix-minus stream per participant out (each hears everyone but themselves). It owns
//! the participants' jitter buffers, decoders, resamplers and encoders, the join/leave
//! tones and the music on hold of a moderated room; it never touches a socket or a clock.
//!
//! Drive contract: feed [`Mixer::handle_packet`] with each participant's RTP as it arrives
//! and call [`Mixer::tick`] every 20 ms (the runtime's timer); after either, drain
//! [`Mixer::poll_transmit`] (RTP to send to a participant) and [`Mixer::poll_event`].
//! Membership changes ([`Mixer::add_participant`], [`Mixer::remove_participant`],
//! [`Mixer::set_muted`], [`Mixer::reconfigure`]) take effect at the next tick.
//!
//! Cost model (the benchmark target is 1,000 G.711 participants on two cores): the room
//! mixes at 8 kHz while every participant is narrowband, so G.711 needs no resampling; the
//! sum of all talkers is built once per tick and each talker's output is that sum minus its
//! own frame; participants who are not talking this tick (silent, muted, waiting) all hear
//! the same signal, so with a stateless codec (G.711) it is encoded once per codec and only
//! the RTP header differs. A room with a wideband participant (Opus) mixes at 16 kHz.
//! Packets are expected every 20 ms (the `ptime` Switchboard answers with).

use std::time::{Duration, Instant};

use crate::codec::CodecSpec;
use crate::codec::{decoder_for, encoder_for, AudioDecoder, AudioEncoder, CodecError, CodecKind};
use crate::jitter::{JitterBuffer, Playout};
use crate::player::{Player, Source, StartAt};
use crate::resample::Resampler;
use crate::rtp::{is_rtcp, RtpHeader, RtpPacket};
use crate::tones::{Cadence, Level, ToneGenerator};

/// The mixing rate while every participant is narrowband (G.711).
pub const NARROWBAND_RATE: u32 = 8000;
/// The mixing rate once a wideband participant is in the room: wideband speech without
/// the cost of mixing everyone at 48 kHz (a 48 kHz room would resample every G.711 leg
/// both ways at about 60,000 multiply-adds per leg and frame).
pub const WIDEBAND_RATE: u32 = 16000;
/// One tick of mixing.
pub const TICK: Duration = Duration::from_millis(20);

/// Names a participant (the engine's id for them).
pub type ParticipantId = u64;

/// Room-wide settings.
#[derive(Debug, Clone)]
pub struct MixerConfig {
    /// Participants who are not speakers hear music on hold, and are not heard, until a
    /// speaker is in the room.
    pub moderated: bool,
    /// Played to the whole room when someone joins / leaves; `None` for none.
    pub join_tone: Option<Cadence>,
    pub leave_tone: Option<Cadence>,
    pub tone_level: Level,
    /// Jitter buffer bounds per participant.
    pub jitter_min_ms: u32,
    pub jitter_max_ms: u32,
    /// A participant whose RTP stops for this long is reported ([`MixerEvent::RtpTimeout`]).
    pub rtp_timeout: Option<Duration>,
    /// Frames whose mean absolute sample is below this are not mixed (a noise gate: a
    /// silent line adds no hiss, and its owner can share the common encode).
    pub silence_threshold: u16,
    /// Seed of where the music on hold starts.
    pub moh_seed: u64,
}

impl Default for MixerConfig {
    fn default() -> MixerConfig {
        MixerConfig {
            moderated: false,
            join_tone: Some("!600/80,!0/40,!900/120".parse().expect("valid cadence")),
            leave_tone: Some("!900/80,!0/40,!600/120".parse().expect("valid cadence")),
            tone_level: Level::Dbm0(-16.0),
            jitter_min_ms: 40,
            jitter_max_ms: 200,
            rtp_timeout: None,
            // About -60 dBFS: line noise, not speech.
            silence_threshold: 32,
            moh_seed: 0,
        }
    }
}

/// One participant's media settings (from their SDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantConfig {
    /// The one codec negotiated with them (sent and expected).
    pub codec: CodecSpec,
    /// The SSRC of the stream we send them.
    pub ssrc: u32,
    pub speaker: bool,
    pub muted: bool,
    /// False while they asked not to receive (sendonly/inactive: on hold).
    pub send: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MixerError {
    #[error("participant {0} is already in the room")]
    Duplicate(ParticipantId),
    #[error("no participant {0} in the room")]
    NoSuchParticipant(ParticipantId),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// An RTP packet for one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixerTransmit {
    pub participant: ParticipantId,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixerEvent {
    /// No RTP from this participant for the configured timeout.
    RtpTimeout { participant: ParticipantId },
}

/// Counters since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    pub ticks: u64,
    pub packets_in: u64,
    /// Packets dropped before the jitter buffer: unparsable, RTCP, or another payload type.
    pub packets_ignored: u64,
    pub packets_out: u64,
    /// Frames encoded for one participant.
    pub encodes: u64,
    /// Frames encoded once and sent to several participants.
    pub shared_encodes: u64,
}

struct Participant {
    id: ParticipantId,
    config: ParticipantConfig,
    decoder: Box<dyn AudioDecoder>,
    encoder: Box<dyn AudioEncoder>,
    jitter: JitterBuffer,
    /// Codec PCM rate → room rate, and back; `None` when they are equal.
    to_room: Option<Resampler>,
    from_room: Option<Resampler>,
    /// This tick's decoded frame at the room rate, and whether it is in the sum.
    frame: Vec<i16>,
    talking: bool,
    sequence: u16,
    timestamp: u32,
    sent_any: bool,
    last_packet: Instant,
    timed_out: bool,
}

impl Participant {
    fn pcm_rate(&self) -> u32 {
        self.decoder.rate()
    }

    /// G.711 has no state between frames: one encode serves every listener of a signal.
    fn shareable(&self, room_rate: u32) -> bool {
        matches!(self.config.codec.kind, CodecKind::Pcmu | CodecKind::Pcma)
            && self.encoder.rate() == room_rate
    }

    fn rebuild_resamplers(&mut self, room_rate: u32) {
        let rate = self.pcm_rate();
        let pair = |from, to| (from != to).then(|| Resampler::new(from, to));
        self.to_room = pair(rate, room_rate);
        self.from_room = pair(room_rate, self.encoder.rate());
    }
}

/// The signal a non-talking listener hears this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    Mix,
    Music,
}

/// One room's mixer (see the module's drive contract).
pub struct Mixer {
    config: MixerConfig,
    participants: Vec<Participant>,
    rate: u32,
    /// Sum of this tick's talkers (and tones), before saturation.
    total: Vec<i32>,
    scratch: Vec<i16>,
    tone: Option<ToneGenerator>,
    music: Option<Player>,
    music_frame: Vec<i16>,
    /// Shared G.711 payloads of this tick, by (signal, codec).
    shared: Vec<((Shared, CodecKind), Vec<u8>)>,
    transmits: std::collections::VecDeque<MixerTransmit>,
    events: std::collections::VecDeque<MixerEvent>,
    stats: MixerStats,
}

impl std::fmt::Debug for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mixer")
            .field("participants", &self.participants.len())
            .field("rate", &self.rate)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Mixer {
    pub fn new(config: MixerConfig) -> Mixer {
        Mixer {
            config,
            participants: Vec::new(),
            rate: NARROWBAND_RATE,
            total: Vec::new(),
            scratch: Vec::new(),
            tone: None,
            music: None,
            music_frame: Vec::new(),
            shared: Vec::new(),
            transmits: Default::default(),
            events: Default::default(),
            stats: MixerStats::default(),
        }
    }

    /// The current mixing rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn stats(&self) -> MixerStats {
        self.stats
    }

    pub fn contains(&self, id: ParticipantId) -> bool {
        self.participants.iter().any(|p| p.id == id)
    }

    /// True when a moderated room has no speaker: non-speakers wait with music.
    pub fn is_waiting_for_speaker(&self) -> bool {
        self.config.moderated && !self.participants.iter().any(|p| p.config.speaker)
    }

    fn index(&self, id: ParticipantId) -> Result<usize, MixerError> {
        self.participants
            .iter()
            .position(|p| p.id == id)
            .ok_or(MixerError::NoSuchParticipant(id))
    }

    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        config: ParticipantConfig,
        now: Instant,
    ) -> Result<(), MixerError> {
        if self.contains(id) {
            return Err(MixerError::Duplicate(id));
        }
        let decoder = decoder_for(&config.codec)?;
        let encoder = encoder_for(&config.codec)?;
        let jitter = JitterBuffer::new(
            config.codec.clock_rate,
            TICK.as_millis() as u32,
            self.config.jitter_min_ms,
            self.config.jitter_max_ms,
        );
        let mut p = Participant {
            id,
            config,
            decoder,
            encoder,
            jitter,
            to_room: None,
            from_room: None,
            frame: Vec::new(),
            talking: false,
            sequence: rand_like(id) as u16,
            timestamp: rand_like(id.wrapping_add(1)),
            sent_any: false,
            last_packet: now,
            timed_out: false,
        };
        p.rebuild_resamplers(self.rate);
        self.participants.push(p);
        self.rate_changed();
        if let Some(tone) = self.config.join_tone.clone() {
            self.start_tone(&tone);
        }
        Ok(())
    }

    pub fn remove_participant(&mut self, id: ParticipantId) -> Result<(), MixerError> {
        let i = self.index(id)?;
        self.participants.remove(i);
        self.rate_changed();
        if !self.participants.is_empty() {
            if let Some(tone) = self.config.leave_tone.clone() {
                self.start_tone(&tone);
            }
        }
        Ok(())
    }

    pub fn set_muted(&mut self, id: ParticipantId, muted: bool) -> Result<(), MixerError> {
        let i = self.index(id)?;
        self.participants[i].config.muted = muted;
        Ok(())
    }

    pub fn is_muted(&self, id: ParticipantId) -> Option<bool> {
        self.participants
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.config.muted)
    }

    /// New media settings after a re-INVITE. A codec change restarts the participant's
    /// decoding and encoding; our RTP stream (SSRC, sequence, timestamp) runs on.
    pub fn reconfigure(
        &mut self,
        id: ParticipantId,
        config: ParticipantConfig,
    ) -> Result<(), MixerError> {
        let i = self.index(id)?;
        let p = &mut self.participants[i];
        if p.config.codec.kind != config.codec.kind
            || p.config.codec.payload_type != config.codec.payload_type
        {
            p.decoder = decoder_for(&config.codec)?;
            p.encoder = encoder_for(&config.codec)?;
            p.jitter = JitterBuffer::new(
                config.codec.clock_rate,
                TICK.as_millis() as u32,
                self.config.jitter_min_ms,
                self.config.jitter_max_ms,
            );
        }
        let ssrc = p.config.ssrc;
        p.config = ParticipantConfig { ssrc, ..config };
        self.rate_changed();
        self.participants[i].rebuild_resamplers(self.rate);
        Ok(())
    }

    fn rate_changed(&mut self) {
        let rate = if self
            .participants
            .iter()
            .any(|p| p.pcm_rate() > NARROWBAND_RATE)
        {
            WIDEBAND_RATE
        } else {
            NARROWBAND_RATE
        };
        if rate != self.rate {
            self.rate = rate;
            for p in &mut self.participants {
                p.rebuild_resamplers(rate);
            }
            // Tones and music restart at the new rate.
            self.tone = None;
            self.music = None;
        }
    }

    fn start_tone(&mut self, cadence: &Cadence) {
        self.tone = Some(ToneGenerator::new(
            cadence,
            self.rate,
            self.config.tone_level,
        ));
    }

    /// One RTP (or RTCP, ignored) packet from a participant.
    pub fn handle_packet(&mut self, id: ParticipantId, data: &[u8], now: Instant) {
        let Some(p) = self.participants.iter_mut().find(|p| p.id == id) else {
            return;
        };
        self.stats.packets_in += 1;
        if is_rtcp(data) {
            self.stats.packets_ignored += 1;
            return;
        }
        let Ok(packet) = RtpPacket::parse(data) else {
            self.stats.packets_ignored += 1;
            return;
        };
        // telephone-event and anything not negotiated is not audio for the mix.
        if packet.payload_type() != p.config.codec.payload_type || packet.payload().is_empty() {
            self.stats.packets_ignored += 1;
            return;
        }
        p.last_packet = now;
        p.timed_out = false;
        p.jitter.push(
            packet.sequence(),
            packet.timestamp(),
            packet.payload().to_vec(),
            now,
        );
    }

    /// One 20 ms step: play out, mix, encode and queue a packet for every participant.
    pub fn tick(&mut self, now: Instant) {
        self.stats.ticks += 1;
        let n = (self.rate / 50) as usize;
        let waiting = self.is_waiting_for_speaker();
        self.total.clear();
        self.total.resize(n, 0);
        let threshold = u64::from(self.config.silence_threshold) * n as u64;

        for p in &mut self.participants {
            p.talking = false;
            let samples = (p.pcm_rate() / 50) as usize;
            let pcm = match p.jitter.pop(now) {
                Playout::Frame(data, _) => match p.decoder.decode(&data) {
                    Ok(pcm) => pcm,
                    Err(_) => p.decoder.conceal(samples),
                },
                Playout::Missing { next } => next
                    .and_then(|next| p.decoder.decode_fec(&next, samples))
                    .unwrap_or_else(|| p.decoder.conceal(samples)),
                Playout::Empty => continue,
            };
            let mut frame = match &mut p.to_room {
                Some(r) => r.process(&pcm),
                None => pcm,
            };
            // Another ptime, or a resampler's first frames: keep the room's frame size.
            frame.resize(n, 0);
            let heard = !p.config.muted && (!waiting || p.config.speaker);
            let energy: u64 = frame.iter().map(|s| u64::from(s.unsigned_abs())).sum();
            if heard && energy >= threshold.max(1) {
                p.talking = true;
                for (t, s) in self.total.iter_mut().zip(&frame) {
                    *t += i32::from(*s);
                }
            }
            p.frame = frame;
        }

        if let Some(tone) = &mut self.tone {
            self.scratch.clear();
            self.scratch.resize(n, 0);
            tone.fill(&mut self.scratch);
            for (t, s) in self.total.iter_mut().zip(&self.scratch) {
                *t += i32::from(*s);
            }
            if tone.is_finished() {
                self.tone = None;
            }
        }

        self.music_frame.clear();
        if waiting {
            let rate = self.rate;
            let seed = self.config.moh_seed;
            let player = self.music.get_or_insert_with(|| {
                let mut player = Player::new(rate);
                player.play(Source::DefaultMoh {
                    start: StartAt::Random { seed },
                });
                player
            });
            if let Some(frame) = player.next_frame() {
                self.music_frame = frame.samples;
            }
            while player.poll_event().is_some() {}
            self.music_frame.resize(n, 0);
        } else {
            self.music = None;
        }

        self.shared.clear();
        let mut out = std::mem::take(&mut self.scratch);
        for i in 0..self.participants.len() {
            let rate = self.rate;
            let p = &mut self.participants[i];
            let step = p.config.codec.clock_rate / 50;
            if !p.config.send {
                p.timestamp = p.timestamp.wrapping_add(step);
                continue;
            }
            let signal = if waiting && !p.config.speaker {
                Some(Shared::Music)
            } else if p.talking {
                None
            } else {
                Some(Shared::Mix)
            };
            let payload = match signal {
                Some(signal) if p.shareable(rate) => {
                    let key = (signal, p.config.codec.kind);
                    match self.shared.iter().position(|(k, _)| *k == key) {
                        Some(j) => Some(self.shared[j].1.clone()),
                        None => {
                            let source = match signal {
                                Shared::Mix => saturate(&self.total, None, &mut out),
                                Shared::Music => &self.music_frame,
                            };
                            let encoded = p.encoder.encode(source).ok();
                            if let Some(e) = &encoded {
                                self.stats.shared_encodes += 1;
                                self.shared.push((key, e.clone()));
                            }
                            encoded
                        }
                    }
                }
                signal => {
                    let own = (signal.is_none()).then_some(p.frame.as_slice());
                    let source: &[i16] = match signal {
                        Some(Shared::Music) => &self.music_frame,
                        _ => saturate(&self.total, own, &mut out),
                    };
                    self.stats.encodes += 1;
                    match &mut p.from_room {
                        Some(r) => {
                            let mut pcm = r.process(source);
                            pcm.resize(p.encoder.frame_samples(), 0);
                            p.encoder.encode(&pcm).ok()
                        }
                        None => p.encoder.encode(source).ok(),
                    }
                }
            };
            if let Some(payload) = payload {
                let header = RtpHeader::new(
                    p.config.codec.payload_type,
                    p.sequence,
                    p.timestamp,
                    p.config.ssrc,
                )
                .with_marker(!p.sent_any);
                p.sent_any = true;
                p.sequence = p.sequence.wrapping_add(1);
                self.stats.packets_out += 1;
                self.transmits.push_back(MixerTransmit {
                    participant: p.id,
                    data: header.to_bytes(&payload),
                });
            }
            p.timestamp = p.timestamp.wrapping_add(step);
        }
        self.scratch = out;

        if let Some(timeout) = self.config.rtp_timeout {
            for p in &mut self.participants {
                if !p.timed_out && now.saturating_duration_since(p.last_packet) >= timeout {
                    p.timed_out = true;
                    self.events
                        .push_back(MixerEvent::RtpTimeout { participant: p.id });
                }
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<MixerTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MixerEvent> {
        self.events.pop_front()
    }
}

/// `total - own`, saturated to 16 bits, written into `out`.
fn saturate<'a>(total: &[i32], own: Option<&[i16]>, out: &'a mut Vec<i16>) -> &'a [i16] {
    out.clear();
    match own {
        Some(own) => out.extend(
            total
                .iter()
                .zip(own)
                .map(|(t, o)| (t - i32::from(*o)).clamp(-32768, 32767) as i16),
        ),
        None => out.extend(total.iter().map(|t| (*t).clamp(-32768, 32767) as i16)),
    }
    out
}

/// A start value for sequence and timestamp that differs per participant (RFC 3550 wants
/// random ones; this module has no random source, and predictability does not matter for
/// unencrypted RTP on a PBX).
fn rand_like(x: u64) -> u32 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

#[cfg(test)]
mod tests;
