//! Audio codecs of a transcoding leg: what an SDP `rtpmap` names ([`CodecSpec`]), and
//! encoders and decoders behind two small traits, so the relay can turn any negotiated
//! codec into 16-bit mono PCM and back. G.711 (PCMU/PCMA) is done here over
//! [`crate::g711`], with packet-loss concealment in the spirit of ITU-T G.711
//! Appendix I; Opus lives in [`opus`]. Codecs are pure: bytes and samples in, bytes and
//! samples out, no clock and no I/O.
//!
//! Drive contract of a decoder, once per 20 ms playout tick (see [`crate::jitter`]):
//! a frame arrived → [`AudioDecoder::decode`]; a frame is missing but the next one is
//! here → [`AudioDecoder::decode_fec`], falling back to [`AudioDecoder::conceal`] when it
//! returns `None`; nothing at all → [`AudioDecoder::conceal`]. `telephone-event` is not
//! audio: it has a [`CodecSpec`] but no encoder or decoder (the DTMF module handles it).

pub mod opus;

use crate::g711;

/// Codecs Switchboard negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    Pcmu,
    Pcma,
    Opus,
    /// RFC 4733 named telephone events (DTMF).
    TelephoneEvent,
}

impl CodecKind {
    /// The encoding name as written in `a=rtpmap` (RFC 3551, RFC 7587, RFC 4733).
    pub fn encoding_name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::Opus => "opus",
            CodecKind::TelephoneEvent => "telephone-event",
        }
    }
}

/// One negotiated payload format: an `a=rtpmap` line and its `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecSpec {
    pub kind: CodecKind,
    pub payload_type: u8,
    /// The RTP clock rate; always 48000 for Opus whatever its internal rate (RFC 7587 §4.1).
    pub clock_rate: u32,
    pub channels: u8,
    pub fmtp: Option<String>,
}

impl CodecSpec {
    /// Recognises an `a=rtpmap:<pt> <encoding>/<clock_rate>[/<channels>]` entry
    /// (`channels` is 1 when the line has none). Encoding names are case-insensitive
    /// (RFC 4855 §3). Returns `None` for codecs Switchboard does not implement and for
    /// clock rates or channel counts those codecs do not allow.
    pub fn from_rtpmap(
        encoding: &str,
        clock_rate: u32,
        channels: u8,
        payload_type: u8,
        fmtp: Option<&str>,
    ) -> Option<CodecSpec> {
        let kind = if encoding.eq_ignore_ascii_case("PCMU") {
            CodecKind::Pcmu
        } else if encoding.eq_ignore_ascii_case("PCMA") {
            CodecKind::Pcma
        } else if encoding.eq_ignore_ascii_case("opus") {
            CodecKind::Opus
        } else if encoding.eq_ignore_ascii_case("telephone-event") {
            CodecKind::TelephoneEvent
        } else {
            return None;
        };
        let valid = match kind {
            CodecKind::Pcmu | CodecKind::Pcma => clock_rate == 8000 && channels == 1,
            // RFC 7587 §7 mandates "opus/48000/2"; a few endpoints write "opus/48000".
            CodecKind::Opus => clock_rate == 48000 && (channels == 1 || channels == 2),
            CodecKind::TelephoneEvent => clock_rate > 0 && channels == 1,
        };
        if !valid || payload_type > 127 {
            return None;
        }
        Some(CodecSpec {
            kind,
            payload_type,
            clock_rate,
            channels,
            fmtp: fmtp.map(str::to_owned),
        })
    }

    /// The static payload types that need no `rtpmap` (RFC 3551 table 4): 0 and 8.
    pub fn from_static_payload_type(payload_type: u8) -> Option<CodecSpec> {
        let kind = match payload_type {
            0 => CodecKind::Pcmu,
            8 => CodecKind::Pcma,
            _ => return None,
        };
        Some(CodecSpec {
            kind,
            payload_type,
            clock_rate: 8000,
            channels: 1,
            fmtp: None,
        })
    }

    /// The value of one `name=value` parameter of the fmtp line (RFC 7587 §6.1 style,
    /// `;`-separated, names case-insensitive).
    pub fn fmtp_parameter(&self, name: &str) -> Option<&str> {
        self.fmtp.as_deref()?.split(';').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Why a codec could not be built or could not code a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// `telephone-event` carries events, not audio.
    #[error("{0:?} is not an audio codec")]
    NotAudio(CodecKind),
    /// The encoder takes whole frames of one of the sizes the codec allows.
    #[error("{kind:?} cannot encode {got} samples (frame size {expected})")]
    FrameSize {
        kind: CodecKind,
        expected: usize,
        got: usize,
    },
    /// The payload is not a valid packet of this codec (empty, truncated or corrupt).
    #[error("{kind:?} payload rejected: {reason}")]
    InvalidPayload {
        kind: CodecKind,
        reason: &'static str,
    },
    /// The codec library refused a setting or a call.
    #[error("{kind:?} codec library error: {reason}")]
    Library {
        kind: CodecKind,
        reason: &'static str,
    },
}

/// Turns PCM at [`AudioEncoder::rate`] into payloads of one codec.
pub trait AudioEncoder: Send {
    /// The PCM sample rate this encoder takes.
    fn rate(&self) -> u32;
    /// Samples in one frame (20 ms at [`AudioEncoder::rate`]).
    fn frame_samples(&self) -> usize;
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, CodecError>;
}

/// Turns payloads of one codec into PCM at [`AudioDecoder::rate`], and hides losses.
pub trait AudioDecoder: Send {
    /// The PCM sample rate this decoder produces.
    fn rate(&self) -> u32;
    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError>;
    /// Packet-loss concealment: `samples` of plausible audio for a lost frame.
    fn conceal(&mut self, samples: usize) -> Vec<i16>;
    /// Opus in-band FEC: rebuilds the lost frame (`samples` long) from the redundancy
    /// carried in the packet that follows it. `None` when the codec has no FEC.
    fn decode_fec(&mut self, next_payload: &[u8], samples: usize) -> Option<Vec<i16>>;
}

/// An encoder for `spec`, with the default settings (see [`opus::OpusEncoderConfig`]).
pub fn encoder_for(spec: &CodecSpec) -> Result<Box<dyn AudioEncoder>, CodecError> {
    match spec.kind {
        CodecKind::Pcmu | CodecKind::Pcma => Ok(Box::new(G711Encoder::new(spec.kind)?)),
        CodecKind::Opus => Ok(Box::new(opus::OpusEncoder::new(
            spec,
            opus::OpusEncoderConfig::default(),
        )?)),
        CodecKind::TelephoneEvent => Err(CodecError::NotAudio(spec.kind)),
    }
}

pub fn decoder_for(spec: &CodecSpec) -> Result<Box<dyn AudioDecoder>, CodecError> {
    match spec.kind {
        CodecKind::Pcmu | CodecKind::Pcma => Ok(Box::new(G711Decoder::new(spec.kind)?)),
        CodecKind::Opus => Ok(Box::new(opus::OpusDecoder::new()?)),
        CodecKind::TelephoneEvent => Err(CodecError::NotAudio(spec.kind)),
    }
}

/// G.711 runs at 8 kHz; a 20 ms frame is 160 samples (RFC 3551 §4.5.14 default ptime).
const G711_RATE: u32 = 8000;
const G711_FRAME: usize = 160;

/// PCMU or PCMA encoder. G.711 is sample by sample, so any length is accepted;
/// `frame_samples` is the 20 ms the relay should feed.
#[derive(Debug)]
pub struct G711Encoder {
    kind: CodecKind,
}

impl G711Encoder {
    pub fn new(kind: CodecKind) -> Result<G711Encoder, CodecError> {
        match kind {
            CodecKind::Pcmu | CodecKind::Pcma => Ok(G711Encoder { kind }),
            other => Err(CodecError::NotAudio(other)),
        }
    }
}

impl AudioEncoder for G711Encoder {
    fn rate(&self) -> u32 {
        G711_RATE
    }

    fn frame_samples(&self) -> usize {
        G711_FRAME
    }

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, CodecError> {
        Ok(match self.kind {
            CodecKind::Pcma => g711::encode_alaw(pcm),
            _ => g711::encode_ulaw(pcm),
        })
    }
}

/// PCMU or PCMA decoder with loss concealment.
#[derive(Debug)]
pub struct G711Decoder {
    kind: CodecKind,
    plc: G711Concealment,
}

impl G711Decoder {
    pub fn new(kind: CodecKind) -> Result<G711Decoder, CodecError> {
        match kind {
            CodecKind::Pcmu | CodecKind::Pcma => Ok(G711Decoder {
                kind,
                plc: G711Concealment::new(),
            }),
            other => Err(CodecError::NotAudio(other)),
        }
    }
}

impl AudioDecoder for G711Decoder {
    fn rate(&self) -> u32 {
        G711_RATE
    }

    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        if payload.is_empty() {
            return Err(CodecError::InvalidPayload {
                kind: self.kind,
                reason: "empty payload",
            });
        }
        let mut pcm = match self.kind {
            CodecKind::Pcma => g711::decode_alaw(payload),
            _ => g711::decode_ulaw(payload),
        };
        self.plc.good_frame(&mut pcm);
        Ok(pcm)
    }

    fn conceal(&mut self, samples: usize) -> Vec<i16> {
        self.plc.conceal(samples)
    }

    fn decode_fec(&mut self, _next_payload: &[u8], _samples: usize) -> Option<Vec<i16>> {
        None
    }
}

/// Pitch-period repetition with fading, after ITU-T G.711 Appendix I: on a loss the last
/// pitch period of the good signal is repeated (a longer stretch of history is used as
/// the loss goes on, so the repetition does not buzz), the level stays for the first
/// 10 ms then drops 20% per 10 ms and is muted after 60 ms; the first good frame after a
/// loss is cross-faded from the synthetic signal so the splice does not click.
/// Unlike Appendix I this adds no 3.75 ms output delay, so it has no real signal to
/// overlap with at the start of a loss; a pitch-synchronous start keeps that joint smooth
/// for voiced speech and tones.
#[derive(Debug, Clone)]
struct G711Concealment {
    /// The last `HISTORY` samples of output (good or concealed), oldest first.
    history: Vec<i16>,
    /// Concealment state while a loss lasts.
    loss: Option<Loss>,
}

#[derive(Debug, Clone)]
struct Loss {
    pitch: usize,
    /// The periods being repeated (copied from history when the loss started).
    pattern: Vec<i16>,
    /// How many periods of `pattern` are in use (1, then 2, then 3 as the loss grows).
    periods: usize,
    /// Samples concealed so far in this loss.
    elapsed: usize,
    /// Read position inside the active part of `pattern`.
    offset: usize,
}

/// Pitch search range at 8 kHz: 66 Hz to 200 Hz (G.711 Appendix I §I.2.1) and below,
/// so tones up to 400 Hz period-match exactly too.
const PITCH_MIN: usize = 20;
const PITCH_MAX: usize = 120;
/// Correlation window for the pitch search (20 ms).
const PITCH_WINDOW: usize = 160;
const HISTORY: usize = 3 * PITCH_MAX + PITCH_WINDOW;
/// 10 ms at 8 kHz.
const TEN_MS: usize = 80;

impl G711Concealment {
    fn new() -> G711Concealment {
        G711Concealment {
            history: vec![0; HISTORY],
            loss: None,
        }
    }

    fn remember(&mut self, samples: &[i16]) {
        if samples.len() >= HISTORY {
            self.history.clear();
            self.history
                .extend_from_slice(&samples[samples.len() - HISTORY..]);
        } else {
            self.history.drain(..samples.len());
            self.history.extend_from_slice(samples);
        }
    }

    /// A decoded frame: if a loss just ended, fade from the synthetic signal into it.
    fn good_frame(&mut self, pcm: &mut [i16]) {
        if let Some(loss) = &self.loss {
            // Appendix I: 4 ms of overlap, plus 4 ms per further 10 ms of loss, up to 10 ms.
            let lost_tens = loss.elapsed.div_ceil(TEN_MS).max(1);
            let overlap = (32 + 32 * (lost_tens - 1)).min(TEN_MS).min(pcm.len());
            let tail = self.synthesize(overlap);
            for (i, (sample, synthetic)) in pcm.iter_mut().zip(tail).enumerate() {
                let w = (i + 1) as f32 / (overlap + 1) as f32;
                *sample =
                    (f32::from(*sample) * w + f32::from(synthetic) * (1.0 - w)).round() as i16;
            }
            self.loss = None;
        }
        self.remember(pcm);
    }

    fn conceal(&mut self, samples: usize) -> Vec<i16> {
        let out = self.synthesize(samples);
        self.remember(&out);
        out
    }

    /// The next `samples` of the repeated, fading pitch pattern; starts a loss if none.
    fn synthesize(&mut self, samples: usize) -> Vec<i16> {
        let loss = self.loss.get_or_insert_with(|| {
            let pitch = estimate_pitch(&self.history);
            Loss {
                pitch,
                pattern: self.history[HISTORY - 3 * pitch..].to_vec(),
                periods: 1,
                elapsed: 0,
                offset: 0,
            }
        });
        let mut out = Vec::with_capacity(samples);
        for _ in 0..samples {
            // After the first 10 ms, and again after 20 ms, repeat one more period
            // (Appendix I §I.2.3) — the added period is older history.
            let wanted = if loss.elapsed < TEN_MS {
                1
            } else if loss.elapsed < 2 * TEN_MS {
                2
            } else {
                3
            };
            if wanted != loss.periods {
                loss.periods = wanted;
                loss.offset %= loss.pitch;
            }
            let active = loss.periods * loss.pitch;
            let start = loss.pattern.len() - active;
            let value = f32::from(loss.pattern[start + loss.offset]);
            loss.offset = (loss.offset + 1) % active;
            out.push((value * fade_gain(loss.elapsed)).round() as i16);
            loss.elapsed += 1;
        }
        out
    }
}

/// 1.0 for the first 10 ms of a loss, then 20% less per 10 ms (linearly), 0 from 60 ms.
fn fade_gain(elapsed: usize) -> f32 {
    if elapsed < TEN_MS {
        1.0
    } else {
        (1.0 - 0.2 * (elapsed - TEN_MS) as f32 / TEN_MS as f32).max(0.0)
    }
}

/// The lag in `PITCH_MIN..=PITCH_MAX` whose normalised autocorrelation over the last
/// 20 ms is highest; the smallest good lag wins ties between multiples of the period.
fn estimate_pitch(history: &[i16]) -> usize {
    let end = history.len();
    let window = &history[end - PITCH_WINDOW..];
    let mut best = (PITCH_MAX, f64::MIN);
    let mut scores = Vec::with_capacity(PITCH_MAX + 1);
    for lag in PITCH_MIN..=PITCH_MAX {
        let past = &history[end - PITCH_WINDOW - lag..end - lag];
        let (mut cross, mut energy) = (0.0f64, 0.0f64);
        for (&a, &b) in window.iter().zip(past) {
            cross += f64::from(a) * f64::from(b);
            energy += f64::from(b) * f64::from(b);
        }
        let score = if energy > 0.0 {
            cross / energy.sqrt()
        } else {
            0.0
        };
        scores.push((lag, score));
        if score > best.1 {
            best = (lag, score);
        }
    }
    // Prefer the first local maximum nearly as good as the best: the fundamental, not a
    // multiple of it (neighbours of the peak also score high, hence "local maximum").
    if best.1 <= 0.0 {
        return best.0;
    }
    (1..scores.len() - 1)
        .find(|&i| {
            let score = scores[i].1;
            score >= 0.9 * best.1 && score >= scores[i - 1].1 && score >= scores[i + 1].1
        })
        .map_or(best.0, |i| scores[i].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_recognises_the_codecs() {
        let pcmu = CodecSpec::from_rtpmap("PCMU", 8000, 1, 0, None).unwrap();
        assert_eq!(pcmu.kind, CodecKind::Pcmu);
        let opus =
            CodecSpec::from_rtpmap("OPUS", 48000, 2, 111, Some("minptime=10;useinbandfec=1"))
                .unwrap();
        assert_eq!(opus.kind, CodecKind::Opus);
        assert_eq!(opus.fmtp_parameter("useinbandfec"), Some("1"));
        assert_eq!(opus.fmtp_parameter("maxplaybackrate"), None);
        let dtmf = CodecSpec::from_rtpmap("telephone-event", 48000, 1, 101, Some("0-16"));
        assert_eq!(dtmf.unwrap().clock_rate, 48000);
        assert!(CodecSpec::from_rtpmap("PCMU", 16000, 1, 0, None).is_none());
        assert!(CodecSpec::from_rtpmap("opus", 8000, 2, 111, None).is_none());
        assert!(CodecSpec::from_rtpmap("G729", 8000, 1, 18, None).is_none());
        assert_eq!(
            CodecSpec::from_static_payload_type(8).unwrap().kind,
            CodecKind::Pcma
        );
    }

    #[test]
    fn telephone_event_has_no_codec() {
        let spec = CodecSpec::from_rtpmap("telephone-event", 8000, 1, 101, None).unwrap();
        assert!(matches!(encoder_for(&spec), Err(CodecError::NotAudio(_))));
        assert!(matches!(decoder_for(&spec), Err(CodecError::NotAudio(_))));
    }

    #[test]
    fn pitch_of_a_tone_is_found() {
        // 200 Hz at 8 kHz: period 40 samples.
        let history: Vec<i16> = (0..HISTORY)
            .map(|n| (8000.0 * (2.0 * std::f64::consts::PI * n as f64 / 40.0).sin()) as i16)
            .collect();
        assert_eq!(estimate_pitch(&history), 40);
    }
}
