//! Switchboard's media plane as pure state machines and codecs (no sockets, no clocks;
//! see `../shared/STYLE.md`): SDP offer/answer, RTP/RTCP packets, G.711/Opus codecs with
//! resampling and a jitter buffer, RFC 4733 and in-band DTMF, WAV prompts, tones and
//! music on hold, recording, and the per-call relay that ties them together. The runtime
//! owns the sockets and feeds packets in with `now`.
#![forbid(unsafe_code)]

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod mixer;
pub mod player;
pub mod recorder;
pub mod relay;
pub mod resample;
pub mod rtp;
pub mod sdp;
pub mod tones;
pub mod wav;

/// Mono 16-bit linear PCM at `rate` Hz: what decoders produce, encoders, players and
/// recorders consume. A frame is normally 20 ms (`rate / 50` samples).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AudioFrame {
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl AudioFrame {
    pub fn new(rate: u32, samples: Vec<i16>) -> AudioFrame {
        AudioFrame { rate, samples }
    }

    /// A frame of silence lasting `ms` milliseconds.
    pub fn silence(rate: u32, ms: u32) -> AudioFrame {
        AudioFrame {
            rate,
            samples: vec![0; (rate as usize * ms as usize) / 1000],
        }
    }

    pub fn duration_ms(&self) -> u32 {
        if self.rate == 0 {
            0
        } else {
            (self.samples.len() as u64 * 1000 / u64::from(self.rate)) as u32
        }
    }
}
