//! What a leg hears when Switchboard, not the far party, is talking: prompts, playlists of
//! music on hold, comfort tones and silence, resampled to the leg's rate and cut into
//! 20 ms frames. It owns a queue of sources and their playback state; it never reads files
//! (the runtime decodes them with [`crate::wav::read_wav`]) and never looks at a clock.
//!
//! Drive contract: queue sources with [`Player::play`] / [`Player::play_now`], then every
//! 20 ms pull [`Player::next_frame`] (`None`: nothing to play, the relay sends nothing or
//! its own audio) and drain [`Player::poll_event`] until `None`. Sources follow each other
//! gaplessly inside a frame; a frame whose last source ends early is padded with silence.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::resample::Resampler;
use crate::tones::{default_moh, Cadence, Level, ToneGenerator};
use crate::wav::Clip;
use crate::AudioFrame;

/// Names one queued source in [`PlayerEvent`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlaybackId(pub u64);

/// A music-on-hold class: a named playlist that loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MohClass {
    pub name: String,
    pub clips: Vec<Arc<Clip>>,
}

impl MohClass {
    /// The class every installation has: the generated piece of [`default_moh`].
    pub fn default_class(rate: u32) -> MohClass {
        MohClass {
            name: "default".to_owned(),
            clips: vec![default_moh_clip(rate)],
        }
    }

    /// Length of one pass through the playlist, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.clips.iter().map(|c| c.duration_ms()).sum()
    }
}

/// Where a looping playlist starts, so that callers put on hold together do not all hear
/// the same bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Beginning,
    /// Milliseconds into the playlist (wrapping past its end).
    OffsetMs(u64),
    /// An offset drawn from this seed (the runtime passes a random one; tests a fixed one).
    Random {
        seed: u64,
    },
}

/// Something to play.
#[derive(Debug, Clone)]
pub enum Source {
    /// A prompt, played once.
    Clip(Arc<Clip>),
    /// A playlist looping until stopped.
    Moh {
        class: Arc<MohClass>,
        start: StartAt,
    },
    /// The generated default music on hold, looping until stopped.
    DefaultMoh { start: StartAt },
    /// A tone cadence; ends by itself only if it is play-once (`!` parts only).
    Tone { cadence: Cadence, level: Level },
    /// Silence for `ms`, or until stopped when `None` (a pause between prompts, a hold
    /// without music).
    Silence { ms: Option<u32> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerEvent {
    /// The source produced its first sample.
    Started(PlaybackId),
    /// The source played to its end.
    Finished(PlaybackId),
    /// The source was stopped or skipped before its end (or never started).
    Stopped(PlaybackId),
}

/// Default MOH per rate, generated once per process: it costs a fraction of a second of
/// CPU, and every held caller at that rate shares the samples.
pub fn default_moh_clip(rate: u32) -> Arc<Clip> {
    type PerRate = Mutex<Vec<(u32, Arc<Clip>)>>;
    static CACHE: OnceLock<PerRate> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    // A panic while generating cannot leave a half-built entry, so poison is harmless.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, clip)) = cache.iter().find(|(r, _)| *r == rate) {
        return clip.clone();
    }
    let clip = Arc::new(Clip::new(rate, default_moh(rate)));
    cache.push((rate, clip.clone()));
    clip
}

/// Plays clips in order (once or looping) through a resampler when their rate differs
/// from the target.
#[derive(Debug)]
struct ClipStream {
    clips: Vec<Arc<Clip>>,
    looping: bool,
    target: u32,
    clip: usize,
    pos: usize,
    resampler: Option<Resampler>,
    /// Resampled samples not yet handed out, from `pending_pos`.
    pending: Vec<i16>,
    pending_pos: usize,
    ended: bool,
}

impl ClipStream {
    fn new(clips: Vec<Arc<Clip>>, looping: bool, target: u32, start_ms: u64) -> ClipStream {
        let mut s = ClipStream {
            clips,
            looping,
            target,
            clip: 0,
            pos: 0,
            resampler: None,
            pending: Vec::new(),
            pending_pos: 0,
            ended: false,
        };
        let total: u64 = s.clips.iter().map(|c| c.samples.len() as u64).sum();
        if total == 0 {
            // Nothing to play; a looping empty playlist must not spin.
            s.ended = true;
            return s;
        }
        // Microseconds, so that clips of fractional milliseconds add up exactly.
        let micros = |c: &Clip| match c.rate {
            0 => 0,
            rate => c.samples.len() as u64 * 1_000_000 / u64::from(rate),
        };
        let pass_us: u64 = s.clips.iter().map(|c| micros(c)).sum();
        let mut offset = if pass_us == 0 {
            0
        } else {
            start_ms.saturating_mul(1000) % pass_us
        };
        for (i, c) in s.clips.iter().enumerate() {
            let us = micros(c);
            if offset < us {
                s.clip = i;
                s.pos = (offset * u64::from(c.rate) / 1_000_000) as usize;
                break;
            }
            offset -= us;
        }
        s
    }

    /// The resampler's output lags by its filter's half-length; this much silence pushed
    /// after the last sample brings the whole clip out (at the cost of a few ms of silence).
    fn flush_tail(&mut self) {
        if let Some(mut r) = self.resampler.take() {
            let pad = vec![0i16; (r.from_rate() / 200) as usize + 1];
            let tail = r.process(&pad);
            self.pending.extend_from_slice(&tail);
        }
    }

    /// Moves to the next clip after the current one is exhausted.
    fn advance(&mut self) {
        self.pos = 0;
        self.clip += 1;
        if self.clip >= self.clips.len() {
            if self.looping {
                self.clip = 0;
            } else {
                self.flush_tail();
                self.ended = true;
                return;
            }
        }
        let rate = self.clips[self.clip].rate;
        if self
            .resampler
            .as_ref()
            .is_some_and(|r| r.from_rate() != rate)
        {
            self.flush_tail();
        }
    }

    fn fill(&mut self, out: &mut [i16]) -> (usize, bool) {
        let mut n = 0;
        while n < out.len() {
            if self.pending_pos < self.pending.len() {
                let take = (self.pending.len() - self.pending_pos).min(out.len() - n);
                out[n..n + take]
                    .copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + take]);
                self.pending_pos += take;
                n += take;
                continue;
            }
            self.pending.clear();
            self.pending_pos = 0;
            if self.ended {
                return (n, true);
            }
            let clip = self.clips[self.clip].clone();
            if self.pos >= clip.samples.len() {
                self.advance();
                continue;
            }
            let want = out.len() - n;
            if clip.rate == self.target || clip.rate == 0 {
                let take = (clip.samples.len() - self.pos).min(want);
                out[n..n + take].copy_from_slice(&clip.samples[self.pos..self.pos + take]);
                self.pos += take;
                n += take;
            } else {
                let input =
                    ((want as u64 * u64::from(clip.rate)) / u64::from(self.target)) as usize + 1;
                let end = (self.pos + input).min(clip.samples.len());
                let resampler = self
                    .resampler
                    .get_or_insert_with(|| Resampler::new(clip.rate, self.target));
                self.pending = resampler.process(&clip.samples[self.pos..end]);
                self.pos = end;
            }
        }
        // Report the end with the frame that carries the last sample, not one frame later.
        if self.pending_pos >= self.pending.len() {
            if self.ended {
                return (n, true);
            }
            if !self.looping
                && self.clip + 1 >= self.clips.len()
                && self.pos >= self.clips[self.clip].samples.len()
            {
                // Ends the stream; a resampler's tail (appended to `pending`) still plays.
                self.advance();
                return (n, self.pending_pos >= self.pending.len());
            }
        }
        (n, false)
    }
}

#[derive(Debug)]
enum Playing {
    Clips(ClipStream),
    Tone(ToneGenerator),
    Silence { remaining: Option<u64> },
}

impl Playing {
    /// Fills from the start of `out`; returns (samples written, source ended).
    fn fill(&mut self, out: &mut [i16]) -> (usize, bool) {
        match self {
            Playing::Clips(c) => c.fill(out),
            Playing::Tone(g) => {
                let n = g.fill(out);
                (n, g.is_finished())
            }
            Playing::Silence { remaining } => match remaining {
                None => {
                    out.fill(0);
                    (out.len(), false)
                }
                Some(left) => {
                    let n = (*left).min(out.len() as u64) as usize;
                    out[..n].fill(0);
                    *left -= n as u64;
                    (n, *left == 0)
                }
            },
        }
    }
}

/// Pull-based player for one leg at one rate. See the module documentation for the order
/// of calls.
#[derive(Debug)]
pub struct Player {
    rate: u32,
    next_id: u64,
    queue: VecDeque<(PlaybackId, Source)>,
    current: Option<(PlaybackId, Playing)>,
    events: VecDeque<PlayerEvent>,
    gain: f32,
}

impl Player {
    /// A player producing frames at `rate` Hz.
    pub fn new(rate: u32) -> Player {
        Player {
            rate: rate.max(50),
            next_id: 1,
            queue: VecDeque::new(),
            current: None,
            events: VecDeque::new(),
            gain: 1.0,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Samples per 20 ms frame.
    pub fn frame_len(&self) -> usize {
        (self.rate / 50) as usize
    }

    /// Queues `source` after everything already queued (prompt A, then B).
    pub fn play(&mut self, source: Source) -> PlaybackId {
        let id = PlaybackId(self.next_id);
        self.next_id += 1;
        self.queue.push_back((id, source));
        id
    }

    /// Stops everything and plays `source` from the next frame.
    pub fn play_now(&mut self, source: Source) -> PlaybackId {
        self.stop();
        self.play(source)
    }

    /// Stops the current source and drops the queue; each gets [`PlayerEvent::Stopped`].
    pub fn stop(&mut self) {
        self.skip();
        while let Some((id, _)) = self.queue.pop_front() {
            self.events.push_back(PlayerEvent::Stopped(id));
        }
    }

    /// Stops the current source only; the queue goes on with the next frame.
    pub fn skip(&mut self) {
        if let Some((id, _)) = self.current.take() {
            self.events.push_back(PlayerEvent::Stopped(id));
        }
    }

    /// Output gain in dB applied to every source (0 = as recorded; clamped to -96..=+24;
    /// saturating, so boosting a loud clip clips rather than wraps).
    pub fn set_volume_db(&mut self, db: f32) {
        let db = if db.is_nan() {
            0.0
        } else {
            db.clamp(-96.0, 24.0)
        };
        self.gain = 10f32.powf(db / 20.0);
    }

    /// Nothing playing and nothing queued.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.events.pop_front()
    }

    fn start(&self, source: Source) -> Playing {
        match source {
            Source::Clip(clip) => Playing::Clips(ClipStream::new(vec![clip], false, self.rate, 0)),
            Source::Moh { class, start } => {
                let offset = start_offset(start, class.duration_ms());
                Playing::Clips(ClipStream::new(
                    class.clips.clone(),
                    true,
                    self.rate,
                    offset,
                ))
            }
            Source::DefaultMoh { start } => {
                let clip = default_moh_clip(self.rate);
                let offset = start_offset(start, clip.duration_ms());
                Playing::Clips(ClipStream::new(vec![clip], true, self.rate, offset))
            }
            Source::Tone { cadence, level } => {
                Playing::Tone(ToneGenerator::new(&cadence, self.rate, level))
            }
            Source::Silence { ms } => Playing::Silence {
                remaining: ms.map(|ms| u64::from(ms) * u64::from(self.rate) / 1000),
            },
        }
    }

    /// The next 20 ms of audio, or `None` when there is nothing to play.
    pub fn next_frame(&mut self) -> Option<AudioFrame> {
        let mut out = vec![0i16; self.frame_len()];
        let mut filled = 0;
        let mut started_any = false;
        while filled < out.len() {
            if self.current.is_none() {
                let Some((id, source)) = self.queue.pop_front() else {
                    break;
                };
                let playing = self.start(source);
                self.current = Some((id, playing));
                self.events.push_back(PlayerEvent::Started(id));
            }
            let Some((id, playing)) = &mut self.current else {
                break;
            };
            let (n, ended) = playing.fill(&mut out[filled..]);
            filled += n;
            started_any |= n > 0;
            if ended {
                self.events.push_back(PlayerEvent::Finished(*id));
                self.current = None;
            }
        }
        if !started_any {
            return None;
        }
        if self.gain != 1.0 {
            for s in &mut out {
                *s = (f32::from(*s) * self.gain).round().clamp(-32768.0, 32767.0) as i16;
            }
        }
        Some(AudioFrame::new(self.rate, out))
    }
}

fn start_offset(start: StartAt, pass_ms: u64) -> u64 {
    match start {
        StartAt::Beginning => 0,
        StartAt::OffsetMs(ms) => ms,
        StartAt::Random { seed } => {
            if pass_ms == 0 {
                0
            } else {
                StdRng::seed_from_u64(seed).gen_range(0..pass_ms)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_player_gives_nothing() {
        let mut p = Player::new(8000);
        assert!(p.is_idle());
        assert_eq!(p.next_frame(), None);
        assert_eq!(p.poll_event(), None);
    }

    #[test]
    fn empty_playlist_finishes_at_once() {
        let mut p = Player::new(8000);
        let class = Arc::new(MohClass {
            name: "empty".into(),
            clips: vec![Arc::new(Clip::new(8000, vec![]))],
        });
        let id = p.play(Source::Moh {
            class,
            start: StartAt::Beginning,
        });
        assert_eq!(p.next_frame(), None);
        assert_eq!(p.poll_event(), Some(PlayerEvent::Started(id)));
        assert_eq!(p.poll_event(), Some(PlayerEvent::Finished(id)));
    }
}
