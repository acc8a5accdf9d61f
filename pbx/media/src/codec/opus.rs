//! Opus (RFC 6716, RTP payload RFC 7587) for transcoding legs: a 48 kHz mono VoIP encoder
//! with in-band FEC and a 48 kHz mono decoder with PLC and FEC recovery. The RTP clock is
//! 48000 whatever bandwidth the encoder picks (RFC 7587 §4.1).
//!
//! # Which binding, and why
//! `opus2` (the maintained successor of the `opus`/`audiopus` bindings) with its libopus
//! backend, statically linked against the system libopus found by pkg-config. Hence one
//! Debian package must be installed to build Switchboard: **`libopus-dev`** (pkg-config is
//! on the base image; the binary then needs no libopus at run time). The alternatives,
//! each tried in a real build on this machine:
//! - `audiopus`/`audiopus_sys` (and `opus`, `magnum-opus` on top of them): unmaintained;
//!   same needs (libopus-dev, or cmake for the bundled copy), so nothing to gain.
//! - `opus2` with `bundled` (or its default when pkg-config finds nothing): compiles the
//!   vendored libopus through the `cmake` crate, which needs the `cmake` program — not on
//!   a fresh machine either, so it swaps one apt package for a bigger one and a slower build.
//! - `opus-head-sys`: vendored libopus 1.5, also built with cmake.
//! - `opus2` with `backend-mousiki` (`mousiki`, a pure-Rust port of libopus): builds with
//!   no system package at all, which is what we wanted, but it is not ready for calls to
//!   real phones. Packets its encoder produced decoded in libopus 1.3.1 to noise about 15 dB
//!   louder than the input (mono and stereo), and its decoder's output for libopus packets
//!   differed from libopus's own by as much as the signal (SNR ≈ −3 dB). A codec that does
//!   not interoperate with libopus (every phone and baresip) cannot carry a call; revisit
//!   it when it matures, the `opus2` API is the same.
//!
//! Settings (RFC 7587 §3.1.3, §6.1): FEC always on (costs a few kbit/s, lets a
//! libopus peer recover a lost frame from the next packet, whether it advertised
//! `useinbandfec` or not), DTX off (a transcoded stream is continuous), 20 ms frames.
//! `maxaveragebitrate` and `maxplaybackrate` from the peer's fmtp are honoured.

use opus2::{Application, Bandwidth, Bitrate, Channels};

use super::{AudioDecoder, AudioEncoder, CodecError, CodecKind, CodecSpec};

/// Opus always runs at 48 kHz here: the RTP clock, and what the resampler feeds.
pub const OPUS_RATE: u32 = 48_000;
/// 20 ms at 48 kHz.
pub const OPUS_FRAME: usize = 960;
/// The longest Opus packet is 120 ms (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES: usize = 5760;
/// Decoding (PLC, FEC) works in multiples of 2.5 ms.
const QUANTUM: usize = 120;
/// Large enough for any 20 ms frame at the highest bitrate (510 kbit/s ≈ 1275 bytes).
const MAX_PAYLOAD: usize = 1500;

/// Encoder tuning. Defaults suit a server transcoding many calls on a small machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// 0 (cheapest) to 10 (best). 5 costs about half of 10 with little audible loss
    /// for speech.
    pub complexity: u8,
    /// The loss rate FEC is sized for, in percent. libopus adds redundancy only when
    /// this is above zero.
    pub expected_loss_percent: u8,
    /// A fixed bitrate in bit/s, or `None` to let libopus choose (about 24–32 kbit/s for
    /// wideband speech). The peer's `maxaveragebitrate` caps either.
    pub bitrate: Option<u32>,
}

impl Default for OpusEncoderConfig {
    fn default() -> OpusEncoderConfig {
        OpusEncoderConfig {
            complexity: 5,
            expected_loss_percent: 10,
            bitrate: None,
        }
    }
}

fn library(reason: &'static str) -> impl FnOnce(opus2::Error) -> CodecError {
    move |_| CodecError::Library {
        kind: CodecKind::Opus,
        reason,
    }
}

/// 48 kHz mono Opus encoder, `Application::Voip`, 20 ms frames.
pub struct OpusEncoder {
    encoder: opus2::Encoder,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder").finish_non_exhaustive()
    }
}

impl OpusEncoder {
    pub fn new(spec: &CodecSpec, config: OpusEncoderConfig) -> Result<OpusEncoder, CodecError> {
        let mut encoder = opus2::Encoder::new(OPUS_RATE, Channels::Mono, Application::Voip)
            .map_err(library("encoder creation failed"))?;
        encoder
            .set_complexity(i32::from(config.complexity.min(10)))
            .map_err(library("complexity refused"))?;
        encoder
            .set_inband_fec(true)
            .map_err(library("in-band FEC refused"))?;
        encoder
            .set_packet_loss_perc(i32::from(config.expected_loss_percent.min(100)))
            .map_err(library("expected loss refused"))?;
        encoder.set_dtx(false).map_err(library("DTX refused"))?;

        let peer_cap = spec
            .fmtp_parameter("maxaveragebitrate")
            .and_then(|v| v.parse::<u32>().ok())
            .map(|v| v.clamp(6_000, 510_000));
        let bitrate = match (config.bitrate, peer_cap) {
            (Some(ours), Some(cap)) => Some(ours.min(cap)),
            (ours, cap) => ours.or(cap),
        };
        if let Some(bits) = bitrate {
            encoder
                .set_bitrate(Bitrate::Bits(bits.clamp(6_000, 510_000) as i32))
                .map_err(library("bitrate refused"))?;
        }
        if let Some(rate) = spec
            .fmtp_parameter("maxplaybackrate")
            .and_then(|v| v.parse::<u32>().ok())
        {
            // RFC 7587 §3.1.1: the receiver will not use content above this rate.
            let bandwidth = match rate {
                0..=8_000 => Bandwidth::Narrowband,
                8_001..=12_000 => Bandwidth::Mediumband,
                12_001..=16_000 => Bandwidth::Wideband,
                16_001..=24_000 => Bandwidth::Superwideband,
                _ => Bandwidth::Fullband,
            };
            encoder
                .set_max_bandwidth(bandwidth)
                .map_err(library("bandwidth refused"))?;
        }
        Ok(OpusEncoder { encoder })
    }
}

impl AudioEncoder for OpusEncoder {
    fn rate(&self) -> u32 {
        OPUS_RATE
    }

    fn frame_samples(&self) -> usize {
        OPUS_FRAME
    }

    /// Takes 2.5, 5, 10, 20, 40 or 60 ms of PCM (20 ms is what the relay sends).
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, CodecError> {
        if !matches!(pcm.len(), 120 | 240 | 480 | 960 | 1920 | 2880) {
            return Err(CodecError::FrameSize {
                kind: CodecKind::Opus,
                expected: OPUS_FRAME,
                got: pcm.len(),
            });
        }
        self.encoder
            .encode_vec(pcm, MAX_PAYLOAD)
            .map_err(library("encoding failed"))
    }
}

/// 48 kHz mono Opus decoder; a stereo stream is downmixed by libopus.
pub struct OpusDecoder {
    decoder: opus2::Decoder,
    buffer: Vec<i16>,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish_non_exhaustive()
    }
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, CodecError> {
        let decoder = opus2::Decoder::new(OPUS_RATE, Channels::Mono)
            .map_err(library("decoder creation failed"))?;
        Ok(OpusDecoder {
            decoder,
            buffer: vec![0; MAX_PACKET_SAMPLES],
        })
    }

    /// Runs libopus over `input` (empty = PLC) for exactly `samples` of output, in
    /// 2.5 ms multiples of at most 120 ms; a remainder below 2.5 ms is cut from the last
    /// quantum.
    fn decode_exact(&mut self, input: &[u8], samples: usize, fec: bool) -> Option<Vec<i16>> {
        let mut out = Vec::with_capacity(samples);
        while out.len() < samples {
            let wanted = (samples - out.len()).div_ceil(QUANTUM) * QUANTUM;
            let size = wanted.min(MAX_PACKET_SAMPLES);
            let got = self
                .decoder
                .decode(input, &mut self.buffer[..size], fec)
                .ok()?;
            if got == 0 {
                return None;
            }
            let keep = got.min(samples - out.len());
            out.extend_from_slice(&self.buffer[..keep]);
        }
        Some(out)
    }
}

impl AudioDecoder for OpusDecoder {
    fn rate(&self) -> u32 {
        OPUS_RATE
    }

    fn decode(&mut self, payload: &[u8]) -> Result<Vec<i16>, CodecError> {
        if payload.is_empty() {
            // libopus would treat this as a loss; the caller means conceal().
            return Err(CodecError::InvalidPayload {
                kind: CodecKind::Opus,
                reason: "empty payload",
            });
        }
        let got = self
            .decoder
            .decode(payload, &mut self.buffer, false)
            .map_err(|_| CodecError::InvalidPayload {
                kind: CodecKind::Opus,
                reason: "libopus could not decode the packet",
            })?;
        Ok(self.buffer[..got].to_vec())
    }

    fn conceal(&mut self, samples: usize) -> Vec<i16> {
        self.decode_exact(&[], samples, false)
            .unwrap_or_else(|| vec![0; samples])
    }

    /// libopus falls back to PLC by itself when the next packet carries no FEC data
    /// (the peer's encoder had it off, or the mode switched), so this answers `None`
    /// only when that packet is not Opus at all.
    fn decode_fec(&mut self, next_payload: &[u8], samples: usize) -> Option<Vec<i16>> {
        if next_payload.is_empty() || samples == 0 {
            return None;
        }
        self.decode_exact(next_payload, samples, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(fmtp: Option<&str>) -> CodecSpec {
        CodecSpec::from_rtpmap("opus", 48000, 2, 111, fmtp).unwrap()
    }

    fn tone(len: usize) -> Vec<i16> {
        (0..len)
            .map(|n| {
                (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n as f64 / 48000.0).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn encodes_20ms_frames_and_refuses_others() {
        let mut encoder = OpusEncoder::new(&spec(None), OpusEncoderConfig::default()).unwrap();
        assert!(!encoder.encode(&tone(960)).unwrap().is_empty());
        assert!(matches!(
            encoder.encode(&tone(1000)),
            Err(CodecError::FrameSize { got: 1000, .. })
        ));
    }

    #[test]
    fn peer_bitrate_cap_is_honoured() {
        let mut capped = OpusEncoder::new(
            &spec(Some("maxaveragebitrate=8000")),
            OpusEncoderConfig {
                bitrate: Some(64_000),
                ..OpusEncoderConfig::default()
            },
        )
        .unwrap();
        let bytes: usize = tone(48_000)
            .chunks(960)
            .map(|f| capped.encode(f).unwrap().len())
            .sum();
        // One second at 8 kbit/s is 1000 bytes; allow VBR slack.
        assert!(bytes < 1500, "{bytes} bytes in one second");
    }

    #[test]
    fn decoder_conceals_and_rejects_garbage() {
        let mut encoder = OpusEncoder::new(&spec(None), OpusEncoderConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let packet = encoder.encode(&tone(960)).unwrap();
        assert_eq!(decoder.decode(&packet).unwrap().len(), 960);
        assert_eq!(decoder.conceal(960).len(), 960);
        assert_eq!(decoder.conceal(100).len(), 100);
        assert!(decoder.decode(&[]).is_err());
        assert_eq!(decoder.decode_fec(&packet, 960).map(|v| v.len()), Some(960));
    }

    #[test]
    fn stereo_stream_is_downmixed() {
        let mut stereo =
            opus2::Encoder::new(OPUS_RATE, Channels::Stereo, Application::Voip).unwrap();
        let mut decoder = OpusDecoder::new().unwrap();
        let pcm: Vec<i16> = tone(960).iter().flat_map(|&s| [s, s]).collect();
        let mut total = 0;
        for _ in 0..5 {
            let packet = stereo.encode_vec(&pcm, MAX_PAYLOAD).unwrap();
            let out = decoder.decode(&packet).unwrap();
            assert_eq!(out.len(), 960);
            total += out.iter().map(|&s| i64::from(s).abs()).sum::<i64>();
        }
        assert!(total > 0);
    }
}
