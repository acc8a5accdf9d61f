//! Adaptive jitter buffer for the decoding side of a transcoding leg. It owns the RTP
//! payloads that arrived but are not yet due, puts them back in sequence order, and
//! decides each 20 ms tick whether to play a frame, conceal a lost one, or stay quiet.
//! It never decodes, never reads a clock and never sleeps: arrival and tick instants
//! are given.
//!
//! Drive contract: call [`JitterBuffer::push`] for every RTP packet of the stream as it
//! arrives (any order), and [`JitterBuffer::pop`] once per frame duration from the
//! relay's timer. On [`Playout::Frame`] decode the payload; on [`Playout::Missing`] try
//! the decoder's FEC with `next` (the packet after the lost one, which the following
//! `pop` will return as a `Frame` as usual) and otherwise conceal; on
//! [`Playout::Empty`] the stream is not flowing (not started, or stopped for longer than
//! the maximum delay): send nothing, or comfort noise.
//!
//! Playout follows sequence numbers (one frame of `frame_duration_ms` per number), so
//! timestamp jumps after silence suppression need no special case. The playout delay is
//! the span of sequence numbers between the next frame to play and the newest one held.
//! It grows when the buffer runs dry (playout pauses, the decoder conceals, and resumes
//! when the target delay is buffered again) and shrinks by dropping one frame a second
//! while the delay stays above target. The target is three times the RFC 3550 §6.4.1
//! interarrival jitter plus one frame, within `[min_delay_ms, max_delay_ms]`.

use std::collections::BTreeMap;
use std::time::Instant;

/// What to play for this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The next frame: its payload and RTP timestamp.
    Frame(Vec<u8>, u32),
    /// The next frame is lost (or the buffer is refilling after running dry): conceal
    /// one frame. `next` is the payload of the following packet when it is already
    /// here, for Opus in-band FEC.
    Missing { next: Option<Vec<u8>> },
    /// Nothing to play: the stream has not started or has stopped.
    Empty,
}

/// Counters since creation (RFC 3611-style).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted into the buffer.
    pub received: u64,
    /// Frames returned as [`Playout::Frame`].
    pub played: u64,
    /// Packets that arrived after their turn had passed (dropped).
    pub late: u64,
    /// Frames never received by their turn ([`Playout::Missing`] for a real gap).
    pub lost: u64,
    /// Packets received twice (dropped).
    pub duplicates: u64,
    /// Frames dropped to bring the delay back down to target.
    pub discarded: u64,
    /// Ticks concealed because the buffer ran dry.
    pub underruns: u64,
    /// Restarts on a new stream (sequence number discontinuity, e.g. a new SSRC).
    pub resyncs: u64,
    /// RFC 3550 interarrival jitter, in milliseconds.
    pub jitter_ms: u32,
    /// Delay the buffer aims for.
    pub target_delay_ms: u32,
    /// Delay it holds now (the span from the next frame to the newest one held).
    pub current_delay_ms: u32,
}

/// RFC 3550 A.1: sequence numbers further ahead than this, or further behind than
/// `MAX_MISORDER`, belong to another stream unless two in a row confirm it.
const MAX_DROPOUT: i32 = 3000;
const MAX_MISORDER: i32 = 100;
/// A transit-time change larger than this is a timestamp jump (new stream, or a sender
/// that restarted its clock), not jitter: the estimator restarts instead of absorbing it.
const TIMESTAMP_JUMP_MS: u64 = 3000;
/// The delay is lowered at most once per this many ticks (one second at 20 ms).
const ADAPT_WINDOW: u32 = 50;

pub struct JitterBuffer {
    clock_rate: u32,
    frame_ms: u32,
    min_delay_ms: u32,
    max_delay_ms: u32,
    target_ms: u32,

    /// Held packets by extended sequence number: (timestamp, payload).
    packets: BTreeMap<u64, (u32, Vec<u8>)>,
    /// Highest extended sequence number accepted, the reference for unwrapping.
    highest: Option<u64>,
    /// Next extended sequence number to play; `None` before the first playout.
    next: Option<u64>,
    /// Bit `i` set: sequence `next - 1 - i` was played (tells duplicates from late).
    played_mask: u128,
    /// Waiting until `target_ms` is buffered before (re)starting playout.
    buffering: bool,
    /// Consecutive ticks concealed while buffering after a dry run.
    dry_ticks: u32,
    /// A packet outside the sequence window, kept until the next one confirms a new stream.
    suspect: Option<(u16, u32, Vec<u8>, Instant)>,

    epoch: Option<Instant>,
    /// Previous transit time (arrival in timestamp units minus RTP timestamp), wrapping.
    last_transit: Option<u32>,
    /// Interarrival jitter in timestamp units, ×16 for integer precision as in A.8.
    jitter_q4: u64,

    ticks_in_window: u32,
    window_min_ms: u32,
    stats: JitterStats,
}

impl std::fmt::Debug for JitterBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("held", &self.packets.len())
            .field("next", &self.next)
            .field("buffering", &self.buffering)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl JitterBuffer {
    /// `clock_rate` is the RTP clock (48000 for Opus); frames are `frame_duration_ms`
    /// long (the `ptime`, normally 20). Delays are clamped so that
    /// `frame ≤ min ≤ max`.
    pub fn new(
        clock_rate: u32,
        frame_duration_ms: u32,
        min_delay_ms: u32,
        max_delay_ms: u32,
    ) -> JitterBuffer {
        let frame_ms = frame_duration_ms.max(1);
        let min_delay_ms = min_delay_ms.max(frame_ms);
        let max_delay_ms = max_delay_ms.max(min_delay_ms);
        JitterBuffer {
            clock_rate: clock_rate.max(1),
            frame_ms,
            min_delay_ms,
            max_delay_ms,
            target_ms: min_delay_ms,
            packets: BTreeMap::new(),
            highest: None,
            next: None,
            played_mask: 0,
            buffering: true,
            dry_ticks: 0,
            suspect: None,
            epoch: None,
            last_transit: None,
            jitter_q4: 0,
            ticks_in_window: 0,
            window_min_ms: u32::MAX,
            stats: JitterStats {
                target_delay_ms: min_delay_ms,
                ..JitterStats::default()
            },
        }
    }

    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        stats.jitter_ms = self.jitter_ms();
        stats.target_delay_ms = self.target_ms;
        stats.current_delay_ms = self.level_ms();
        stats
    }

    /// Forgets the stream (keeps the counters): for a known source change, such as a
    /// new SSRC or a re-INVITE to another codec.
    pub fn reset(&mut self) {
        self.packets.clear();
        self.highest = None;
        self.next = None;
        self.played_mask = 0;
        self.buffering = true;
        self.dry_ticks = 0;
        self.suspect = None;
        self.last_transit = None;
    }

    pub fn push(&mut self, seq: u16, timestamp: u32, payload: Vec<u8>, now: Instant) {
        let Some(highest) = self.highest else {
            self.accept(u64::from(seq) + (1 << 32), timestamp, payload, now);
            return;
        };
        let delta = i32::from(seq.wrapping_sub(highest as u16) as i16);
        // i16 covers ±32767; beyond the RFC window it is another stream, or garbage.
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&delta) {
            match self.suspect.take() {
                Some((previous, ts, data, at)) if previous.wrapping_add(1) == seq => {
                    self.stats.resyncs += 1;
                    self.reset();
                    self.accept(u64::from(previous) + (1 << 32), ts, data, at);
                    let ext = self.highest.unwrap_or(0) + 1;
                    self.accept(ext, timestamp, payload, now);
                }
                _ => self.suspect = Some((seq, timestamp, payload, now)),
            }
            return;
        }
        self.suspect = None;
        let ext = (highest as i64 + i64::from(delta)) as u64;
        if let Some(next) = self.next {
            if ext < next {
                let back = next - 1 - ext;
                if back < 128 && self.played_mask & (1 << back) != 0 {
                    self.stats.duplicates += 1;
                } else {
                    self.stats.late += 1;
                }
                return;
            }
        }
        if self.packets.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.accept(ext, timestamp, payload, now);
    }

    fn accept(&mut self, ext: u64, timestamp: u32, payload: Vec<u8>, now: Instant) {
        self.update_jitter(timestamp, now);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.packets.insert(ext, (timestamp, payload));
        self.stats.received += 1;
        // A sender far ahead of playout (a flood, or a stalled relay timer) must not
        // grow memory without bound: keep twice the maximum delay.
        let cap = (2 * self.max_delay_ms / self.frame_ms) as usize + 2;
        while self.packets.len() > cap {
            if let Some((ext, _)) = self.packets.pop_first() {
                self.stats.discarded += 1;
                if let Some(next) = self.next.as_mut() {
                    if *next <= ext {
                        *next = ext + 1;
                        self.played_mask = 0;
                    }
                }
            }
        }
    }

    /// RFC 3550 A.8, with a restart on timestamp jumps.
    fn update_jitter(&mut self, timestamp: u32, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        let arrival =
            (elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u64 as u32;
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(last) = self.last_transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            if d * 1000 <= TIMESTAMP_JUMP_MS * u64::from(self.clock_rate) {
                // J += (|D| - J) / 16, kept ×16.
                self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
                self.retarget();
            }
        }
        self.last_transit = Some(transit);
    }

    fn jitter_ms(&self) -> u32 {
        ((self.jitter_q4 >> 4) * 1000 / u64::from(self.clock_rate)) as u32
    }

    fn retarget(&mut self) {
        let wanted = 3 * self.jitter_ms() + self.frame_ms;
        // Whole frames: the buffer moves in frames.
        let frames = wanted.div_ceil(self.frame_ms);
        self.target_ms = (frames * self.frame_ms).clamp(self.min_delay_ms, self.max_delay_ms);
    }

    /// Span held, from the next frame to play (or the oldest held) to the newest.
    fn level_ms(&self) -> u32 {
        let (Some(highest), Some(first)) = (self.highest, self.packets.keys().next()) else {
            return 0;
        };
        let from = self.next.map_or(*first, |n| n.min(*first));
        if highest < from {
            return 0;
        }
        ((highest - from + 1) * u64::from(self.frame_ms)).min(u64::from(u32::MAX)) as u32
    }

    /// One tick of playout. Ticks drive playout, so `now` is not needed today; it is part
    /// of the contract so that time-based policies need no API change.
    pub fn pop(&mut self, _now: Instant) -> Playout {
        if self.buffering {
            if let Some(waiting) = self.try_start() {
                return waiting;
            }
        }
        let Some(next) = self.next else {
            return Playout::Empty;
        };
        let Some((&first, _)) = self.packets.first_key_value() else {
            // Ran dry: pause playout (the delay grows by what we wait) and conceal.
            self.buffering = true;
            self.dry_ticks = 0;
            return self.try_start().unwrap_or(Playout::Empty);
        };
        self.adapt_down();
        let next = self.next.unwrap_or(next);
        let first = self.packets.keys().next().copied().unwrap_or(first);
        if self.restart_after_hole() {
            return self.try_start().unwrap_or_else(|| self.play(first));
        }
        if first == next {
            return self.play(next);
        }
        self.stats.lost += 1;
        self.advance_to(next + 1);
        Playout::Missing {
            next: self.packets.get(&(next + 1)).map(|(_, data)| data.clone()),
        }
    }

    /// While buffering: what to play this tick, or `None` once enough is buffered and
    /// playout (re)starts (with `next` set).
    fn try_start(&mut self) -> Option<Playout> {
        self.restart_after_hole();
        let ready = !self.packets.is_empty() && self.level_ms() >= self.target_ms;
        if !ready {
            if self.next.is_none() {
                return Some(Playout::Empty);
            }
            self.dry_ticks += 1;
            if self.dry_ticks * self.frame_ms > self.max_delay_ms {
                // Stopped, not jittering (hold, silence suppression, end of call).
                return Some(Playout::Empty);
            }
            self.stats.underruns += 1;
            return Some(Playout::Missing { next: None });
        }
        self.buffering = false;
        self.dry_ticks = 0;
        self.ticks_in_window = 0;
        self.window_min_ms = u32::MAX;
        if self.next.is_none() {
            self.next = self.packets.keys().next().copied();
        }
        None
    }

    /// A hole longer than the buffer could ever bridge (an outage, or a sender that
    /// jumped its sequence numbers within the RFC 3550 window): playout restarts from the
    /// oldest packet held, after buffering the target delay again, instead of
    /// concealing frame by frame across the hole.
    fn restart_after_hole(&mut self) -> bool {
        let max_gap = u64::from(self.max_delay_ms / self.frame_ms);
        match (self.next, self.packets.keys().next()) {
            (Some(next), Some(&first)) if first > next + max_gap => {
                self.stats.resyncs += 1;
                self.next = None;
                self.played_mask = 0;
                self.buffering = true;
                self.dry_ticks = 0;
                true
            }
            _ => false,
        }
    }

    /// Once per window, if the delay never fell below target plus one frame, drop the
    /// oldest frame: the cheapest way to shed delay that is no longer needed.
    fn adapt_down(&mut self) {
        let level = self.level_ms();
        self.window_min_ms = self.window_min_ms.min(level);
        self.ticks_in_window += 1;
        if self.ticks_in_window < ADAPT_WINDOW {
            return;
        }
        let excess = self.window_min_ms > self.target_ms + self.frame_ms;
        self.ticks_in_window = 0;
        self.window_min_ms = u32::MAX;
        if excess {
            if let (Some(next), Some((&first, _))) = (self.next, self.packets.first_key_value()) {
                if first == next && self.packets.len() > 1 {
                    self.packets.remove(&first);
                    self.stats.discarded += 1;
                    self.advance_to(next + 1);
                }
            }
        }
    }

    fn advance_to(&mut self, to: u64) {
        if let Some(next) = self.next {
            let by = to.saturating_sub(next);
            self.played_mask = if by >= 128 { 0 } else { self.played_mask << by };
        }
        self.next = Some(to);
    }

    fn play(&mut self, seq: u64) -> Playout {
        match self.packets.remove(&seq) {
            Some((timestamp, data)) => {
                self.advance_to(seq + 1);
                self.played_mask |= 1;
                self.stats.played += 1;
                Playout::Frame(data, timestamp)
            }
            None => Playout::Empty,
        }
    }
}
