//! Stereo call recording: one leg per channel, both on the timeline the relay gives (media
//! time since the recording started), encoded as a 16-bit PCM WAV stream. It owns the
//! alignment of the two legs and a bounded buffer; it never touches the file (the runtime
//! appends the bytes and rewrites the header at the end) and never looks at a clock.
//!
//! Drive contract: [`Recorder::push`] each leg's frames as they pass (any rate, any size),
//! then [`Recorder::poll_bytes`] until it returns an empty `Vec` and append the bytes
//! (the first call's bytes start with a placeholder header). To close, append the tail of
//! [`Recorder::finish`] and write its header at offset 0.
//!
//! Alignment: a frame goes where its media time says. A leg that is more than the
//! tolerance (20 ms) behind that point gets silence up to it, so a leg that stops for 5 s
//! leaves 5 s of silence; a leg running ahead has the overlap dropped. Within the
//! tolerance frames join contiguously, so timer jitter never inserts clicks, and the error
//! never accumulates because every frame is placed against the absolute time. Memory is
//! bounded: output is flushed as soon as both legs have it, and a leg that has sent
//! nothing for the lag limit (1 s) is padded with silence so the other is not held back.

use std::collections::VecDeque;

use crate::resample::Resampler;
use crate::wav::{Channels, WavWriter, HEADER_LEN};
use crate::AudioFrame;

/// Which leg: the WAV's left or right channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Left,
    Right,
}

/// Default jitter tolerated before a frame is moved to its exact place.
pub const DEFAULT_TOLERANCE_MS: u32 = 20;
/// Default time the recorder waits for a silent leg before padding it.
pub const DEFAULT_MAX_LAG_MS: u32 = 1000;
/// `poll_bytes` hands out at most this many stereo frames per call (4 MiB of WAV data),
/// so a long silent gap is written in pieces rather than built in memory at once.
const MAX_POLL_FRAMES: u64 = 1 << 20;

#[derive(Debug)]
enum Run {
    /// Silence, stored as a count so a long gap costs no memory.
    Silence(u64),
    Samples(Vec<i16>),
}

#[derive(Debug, Default)]
struct Leg {
    resampler: Option<Resampler>,
    /// Samples queued for output, starting at the recorder's `flushed` index.
    runs: VecDeque<Run>,
    /// Read position inside the front run.
    front_pos: u64,
    /// Absolute index (at the output rate) just past the last queued sample.
    end: u64,
}

impl Leg {
    /// Takes `n` samples into `out`, padding with silence when the leg has fewer.
    fn take(&mut self, n: u64, out: &mut Vec<i16>) {
        let mut need = n;
        while need > 0 {
            let Some(run) = self.runs.front_mut() else {
                out.resize(out.len() + need as usize, 0);
                break;
            };
            let (len, samples) = match run {
                Run::Silence(len) => (*len, None),
                Run::Samples(s) => (s.len() as u64, Some(s)),
            };
            let take = (len - self.front_pos).min(need);
            match samples {
                None => out.resize(out.len() + take as usize, 0),
                Some(s) => out.extend_from_slice(
                    &s[self.front_pos as usize..(self.front_pos + take) as usize],
                ),
            }
            self.front_pos += take;
            need -= take;
            if self.front_pos == len {
                self.runs.pop_front();
                self.front_pos = 0;
            }
        }
    }
}

/// Records two legs into a stereo WAV stream at one rate.
#[derive(Debug)]
pub struct Recorder {
    rate: u32,
    writer: WavWriter,
    legs: [Leg; 2],
    /// Stereo frames handed out so far (both legs are drained in step).
    flushed: u64,
    header_sent: bool,
    tolerance: u64,
    max_lag: u64,
}

impl Recorder {
    /// A recorder writing at `rate` Hz (frames of other rates are resampled).
    pub fn new(rate: u32) -> Recorder {
        let rate = rate.max(1);
        let mut r = Recorder {
            rate,
            writer: WavWriter::new(rate, Channels::Stereo),
            legs: [Leg::default(), Leg::default()],
            flushed: 0,
            header_sent: false,
            tolerance: 0,
            max_lag: 0,
        };
        r.tolerance = r.samples(u64::from(DEFAULT_TOLERANCE_MS));
        r.max_lag = r.samples(u64::from(DEFAULT_MAX_LAG_MS));
        r
    }

    /// How long to wait for a silent leg before padding it (memory: about 2 × this ×
    /// rate samples at most).
    pub fn with_max_lag_ms(mut self, ms: u32) -> Recorder {
        self.max_lag = self.samples(u64::from(ms.max(1)));
        self
    }

    /// Timing error tolerated before a frame is moved (inserting silence or dropping).
    pub fn with_tolerance_ms(mut self, ms: u32) -> Recorder {
        self.tolerance = self.samples(u64::from(ms));
        self
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Stereo frames written so far (excluding what is still buffered).
    pub fn frames_written(&self) -> u64 {
        self.flushed
    }

    fn samples(&self, ms: u64) -> u64 {
        (u128::from(ms) * u128::from(self.rate) / 1000).min(u128::from(u64::MAX)) as u64
    }

    /// Adds one leg's frame, which started `media_time_ms` after the recording did.
    pub fn push(&mut self, channel: Channel, frame: &AudioFrame, media_time_ms: u64) {
        if frame.rate == 0 {
            return;
        }
        let pos = self.samples(media_time_ms);
        let (tolerance, rate) = (self.tolerance, self.rate);
        let leg = &mut self.legs[channel as usize];
        let mut samples = if frame.rate == rate {
            frame.samples.clone()
        } else {
            if leg.resampler.as_ref().map(|r| r.from_rate()) != Some(frame.rate) {
                leg.resampler = Some(Resampler::new(frame.rate, rate));
            }
            leg.resampler
                .as_mut()
                .map(|r| r.process(&frame.samples))
                .unwrap_or_default()
        };
        if samples.is_empty() {
            return;
        }
        if pos > leg.end.saturating_add(tolerance) {
            leg.runs.push_back(Run::Silence(pos - leg.end));
            leg.end = pos;
        } else if pos.saturating_add(tolerance) < leg.end {
            let overlap = leg.end - pos;
            if overlap >= samples.len() as u64 {
                return;
            }
            samples.drain(..overlap as usize);
        }
        leg.end += samples.len() as u64;
        leg.runs.push_back(Run::Samples(samples));
    }

    fn header_once(&mut self, out: &mut Vec<u8>) {
        if !self.header_sent {
            self.header_sent = true;
            out.extend_from_slice(&self.writer.header_placeholder());
        }
    }

    /// Interleaves `n` frames from both legs into `out`.
    fn emit(&mut self, n: u64, out: &mut Vec<u8>) {
        if n == 0 {
            return;
        }
        let mut left = Vec::with_capacity(n as usize);
        let mut right = Vec::with_capacity(n as usize);
        self.legs[0].take(n, &mut left);
        self.legs[1].take(n, &mut right);
        let interleaved: Vec<i16> = left
            .iter()
            .zip(&right)
            .flat_map(|(&l, &r)| [l, r])
            .collect();
        out.extend(self.writer.push_frames(&interleaved));
        self.flushed += n;
        for leg in &mut self.legs {
            leg.end = leg.end.max(self.flushed);
        }
    }

    /// WAV bytes ready to append: what both legs have, plus a silent leg's share once the
    /// other is more than the lag limit ahead. Call until it returns an empty `Vec`.
    pub fn poll_bytes(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.header_once(&mut out);
        let (l, r) = (self.legs[0].end, self.legs[1].end);
        let both = l.min(r);
        let lead = l.max(r);
        let ready = both.max(lead.saturating_sub(self.max_lag)) - self.flushed;
        self.emit(ready.min(MAX_POLL_FRAMES), &mut out);
        out
    }

    /// Ends the recording: the remaining bytes to append (the shorter leg padded with
    /// silence) and the final header to write at offset 0.
    pub fn finish(mut self) -> (Vec<u8>, [u8; HEADER_LEN]) {
        let mut out = Vec::new();
        self.header_once(&mut out);
        let lead = self.legs[0].end.max(self.legs[1].end);
        self.emit(lead - self.flushed, &mut out);
        let header = self.writer.finish_header(self.flushed);
        (out, header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_recording_is_a_valid_empty_wav() {
        let mut r = Recorder::new(8000);
        let head = r.poll_bytes();
        assert_eq!(head.len(), HEADER_LEN);
        assert!(r.poll_bytes().is_empty());
        let (tail, header) = r.finish();
        assert!(tail.is_empty());
        let clip = crate::wav::read_wav(&header).unwrap();
        assert!(clip.samples.is_empty());
    }

    #[test]
    fn late_frame_entirely_in_the_past_is_dropped() {
        let mut r = Recorder::new(8000);
        r.push(Channel::Left, &AudioFrame::new(8000, vec![1; 800]), 0);
        r.push(Channel::Left, &AudioFrame::new(8000, vec![2; 160]), 0);
        assert_eq!(r.legs[0].end, 800);
    }
}
