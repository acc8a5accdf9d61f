//! In-band DTMF: a Goertzel detector for legs that send tones in the audio instead of
//! telephone-events, and the tone generator used to play digits (and to test).
//!
//! Detection works on blocks of 12.75 ms (102 samples at 8 kHz; the block length scales
//! with the rate and the Goertzel coefficients are computed for the actual rate, so no
//! resampling is needed and the frequency resolution, ~78 Hz, is the same at every
//! rate). A block is a hit for a digit when all of these hold (thresholds after ITU-T
//! Q.24 and spandsp's detector):
//! * each of the strongest row and column tones is above -36 dBFS,
//! * twist: the column tone is at most 8 dB below the row tone (normal twist) and at most
//!   4 dB above it (reverse twist),
//! * each is at least 6 dB above the other tones of its group,
//! * the two tones carry at least 70 % of the block's energy (speech and noise spread
//!   their energy; a DTMF pair does not),
//! * second harmonics are weak: a column tone's harmonic (2.4–3.3 kHz, clear of every DTMF
//!   tone) must be 10 dB down; a row tone's harmonic lies within one bin of a column
//!   tone at this block length, so there we can only require it to be below the row tone,
//! * the tone is steady over the block (its two halves within 3 dB), so blocks the tone
//!   only partly covers do not count.
//!
//! A digit starts after two consecutive hit blocks (a 40 ms tone always covers two full
//! blocks and is accepted; a hit needs >= 75 % of a block, so tones shorter than 19 ms
//! never are) and ends after two consecutive
//! blocks without it (a one-block dropout is bridged; a 40 ms pause always separates two
//! digits). It is reported when it ends, with its measured duration.

use std::f32::consts::PI;

use super::{DtmfDigit, DtmfSource};
use crate::AudioFrame;

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Minimum level of each tone, as a sine amplitude relative to full scale (-36 dBFS).
const MIN_TONE_AMPLITUDE: f32 = 0.015_85;
/// Column tone may be this much weaker than the row tone (8 dB, power ratio).
const NORMAL_TWIST: f32 = 6.31;
/// Row tone may be this much weaker than the column tone (4 dB).
const REVERSE_TWIST: f32 = 2.51;
/// Strongest tone over the others in its group (6 dB).
const RELATIVE_PEAK: f32 = 3.98;
/// Share of the block energy in the two tones.
const MIN_TONE_SHARE: f32 = 0.70;
/// Column second harmonic at least 10 dB down.
const COL_HARMONIC: f32 = 0.1;
/// Weaker half of a block against the stronger (3 dB), see `classify`.
const MIN_HALF_RATIO: f32 = 0.5;
/// Consecutive hit blocks to start, and miss blocks to end, a digit.
const ON_BLOCKS: u32 = 2;
const OFF_BLOCKS: u32 = 2;

/// Frequency and row/column of a digit.
fn tones(digit: char) -> Option<(f32, f32)> {
    let digit = digit.to_ascii_uppercase();
    KEYS.iter().enumerate().find_map(|(r, row)| {
        row.iter()
            .position(|&k| k == digit)
            .map(|c| (ROWS[r], COLS[c]))
    })
}

/// Generates `digit` as the sum of its row and column sines, each at `level_dbfs`
/// (e.g. -10.0), lasting `duration_ms`. An unknown digit produces silence.
pub fn generate_digit(rate: u32, digit: char, duration_ms: u32, level_dbfs: f32) -> AudioFrame {
    let n = (u64::from(rate) * u64::from(duration_ms) / 1000) as usize;
    let Some((row, col)) = tones(digit) else {
        return AudioFrame::new(rate, vec![0; n]);
    };
    let amplitude = 32767.0 * 10f64.powf(f64::from(level_dbfs) / 20.0);
    let w_row = 2.0 * std::f64::consts::PI * f64::from(row) / f64::from(rate.max(1));
    let w_col = 2.0 * std::f64::consts::PI * f64::from(col) / f64::from(rate.max(1));
    let samples = (0..n)
        .map(|i| {
            let t = i as f64;
            let v = amplitude * ((w_row * t).sin() + (w_col * t).sin());
            v.round().clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    AudioFrame::new(rate, samples)
}

#[derive(Debug, Clone, Copy)]
struct Held {
    digit: char,
    start: u64,
    end: u64,
    misses: u32,
}

/// Samples converted per step on the stack (a 20 ms packet at 8 kHz is 160).
const CHUNK: usize = 256;

/// G.711 codes straight to the detector's float samples (linear / 32768).
static ULAW_F32: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| f32::from(crate::g711::ulaw_to_linear(i as u8)) / 32768.0)
});
static ALAW_F32: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| f32::from(crate::g711::alaw_to_linear(i as u8)) / 32768.0)
});

/// Streaming DTMF detector for one leg's decoded audio.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    rate: u32,
    block_len: usize,
    /// 2cos(w) for the 8 fundamentals, then the 8 second harmonics.
    coeffs: [f32; 16],
    block: Vec<f32>,
    /// Running sums over the current block, kept as samples arrive so that most blocks
    /// (speech, silence, music) are rejected without another pass over them: the
    /// energy, the energy of the first half, and the energy of the first difference.
    energy: f32,
    first_half: f32,
    diff: f32,
    /// Samples consumed before the current block.
    position: u64,
    candidate: Option<(char, u64, u32)>,
    held: Option<Held>,
    /// Bounds of the difference-to-signal energy ratio a DTMF block can have (see
    /// `classify`), with a margin.
    min_diff_ratio: f32,
    max_diff_ratio: f32,
}

impl InbandDetector {
    /// A detector for audio at `rate` Hz.
    pub fn new(rate: u32) -> InbandDetector {
        let rate = rate.max(8000);
        let block_len = (rate as usize * 51).div_ceil(4000);
        let mut coeffs = [0.0; 16];
        for (i, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            coeffs[i] = 2.0 * (2.0 * PI * f / rate as f32).cos();
            coeffs[i + 8] = 2.0 * (2.0 * PI * 2.0 * f / rate as f32).cos();
        }
        InbandDetector {
            rate,
            block_len,
            coeffs,
            block: Vec::with_capacity(block_len),
            energy: 0.0,
            first_half: 0.0,
            diff: 0.0,
            position: 0,
            candidate: None,
            held: None,
            min_diff_ratio: diff_ratio_bounds(rate).0,
            max_diff_ratio: diff_ratio_bounds(rate).1,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Feeds decoded audio; returns the digits that ended within it. A frame at another
    /// rate restarts the detector at that rate (a codec change).
    pub fn feed(&mut self, frame: &AudioFrame) -> Vec<DtmfDigit> {
        let mut digits = Vec::new();
        if frame.rate != self.rate && frame.rate >= 8000 {
            digits.extend(self.finish());
            *self = InbandDetector::new(frame.rate);
        }
        let mut buf = [0.0f32; CHUNK];
        for chunk in frame.samples.chunks(CHUNK) {
            for (x, &s) in buf.iter_mut().zip(chunk) {
                *x = f32::from(s) / 32768.0;
            }
            self.push_samples(&buf[..chunk.len()], &mut digits);
        }
        digits
    }

    /// Feeds one forwarded G.711 payload (8 kHz): the relay calls this for every packet
    /// of a leg without telephone-event (8,000 samples a second per leg), so it decodes
    /// through a table straight to floats on the stack and never allocates unless a
    /// digit ends.
    pub fn feed_g711(&mut self, payload: &[u8], ulaw: bool) -> Vec<DtmfDigit> {
        let mut digits = Vec::new();
        if self.rate != 8000 {
            digits.extend(self.finish());
            *self = InbandDetector::new(8000);
        }
        let table: &[f32; 256] = if ulaw { &ULAW_F32 } else { &ALAW_F32 };
        let mut buf = [0.0f32; CHUNK];
        for chunk in payload.chunks(CHUNK) {
            for (x, &b) in buf.iter_mut().zip(chunk) {
                *x = table[usize::from(b)];
            }
            self.push_samples(&buf[..chunk.len()], &mut digits);
        }
        digits
    }

    /// Appends samples to the current block, cut where the block's first half and the
    /// block itself end, and classifies each block that fills.
    fn push_samples(&mut self, mut xs: &[f32], digits: &mut Vec<DtmfDigit>) {
        while !xs.is_empty() {
            let filled = self.block.len();
            let half = self.block_len / 2;
            let room = if filled < half {
                half - filled
            } else {
                self.block_len - filled
            };
            let (now, rest) = xs.split_at(room.min(xs.len()));
            self.accumulate(now);
            xs = rest;
            if self.block.len() == half {
                self.first_half = self.energy;
            }
            if self.block.len() == self.block_len {
                let hit = self.classify();
                let start = self.position;
                self.position += self.block_len as u64;
                self.block.clear();
                self.energy = 0.0;
                self.first_half = 0.0;
                self.diff = 0.0;
                if let Some(d) = self.step(hit, start, self.position) {
                    digits.push(d);
                }
            }
        }
    }

    /// Adds a run of samples to the block's energy and difference energy. Eight partial
    /// sums side by side, so that the loops compile to vector instructions (a float sum
    /// in one accumulator cannot be reordered, and was most of the relay's own CPU on
    /// forwarded G.711 legs).
    fn accumulate(&mut self, xs: &[f32]) {
        let Some((&first, _)) = xs.split_first() else {
            return;
        };
        if let Some(&last) = self.block.last() {
            self.diff += (first - last) * (first - last);
        }
        let mut e = [0.0f32; 8];
        let mut d = [0.0f32; 8];
        let mut chunks = xs.chunks_exact(8);
        for c in &mut chunks {
            for k in 0..8 {
                e[k] += c[k] * c[k];
            }
        }
        for &x in chunks.remainder() {
            e[0] += x * x;
        }
        let n = xs.len() - 1;
        let (from, to) = (&xs[..n], &xs[1..]);
        let (mut fc, mut tc) = (from.chunks_exact(8), to.chunks_exact(8));
        for (f, t) in (&mut fc).zip(&mut tc) {
            for k in 0..8 {
                d[k] += (t[k] - f[k]) * (t[k] - f[k]);
            }
        }
        for (f, t) in fc.remainder().iter().zip(tc.remainder()) {
            d[0] += (t - f) * (t - f);
        }
        self.energy += e.iter().sum::<f32>();
        self.diff += d.iter().sum::<f32>();
        self.block.extend_from_slice(xs);
    }

    /// Ends a digit still held (end of the stream).
    pub fn finish(&mut self) -> Option<DtmfDigit> {
        self.candidate = None;
        self.held.take().map(|h| self.digit(h))
    }

    fn digit(&self, held: Held) -> DtmfDigit {
        DtmfDigit {
            digit: held.digit,
            duration_ms: ((held.end - held.start) * 1000 / u64::from(self.rate)) as u32,
            source: DtmfSource::Inband,
        }
    }

    /// The per-block debounce state machine.
    fn step(&mut self, hit: Option<char>, start: u64, end: u64) -> Option<DtmfDigit> {
        let mut ended = None;
        if let Some(held) = self.held.as_mut() {
            if hit == Some(held.digit) {
                held.misses = 0;
                held.end = end;
                self.candidate = None;
                return None;
            }
            held.misses += 1;
            if held.misses >= OFF_BLOCKS {
                let held = self.held.take().expect("held");
                ended = Some(self.digit(held));
            }
        }
        self.candidate = match (hit, self.candidate) {
            (Some(d), Some((c, s, n))) if c == d => Some((d, s, n + 1)),
            (Some(d), _) => Some((d, start, 1)),
            (None, _) => None,
        };
        if self.held.is_none() {
            if let Some((digit, start, n)) = self.candidate {
                if n >= ON_BLOCKS {
                    self.held = Some(Held {
                        digit,
                        start,
                        end,
                        misses: 0,
                    });
                    self.candidate = None;
                }
            }
        }
        ended
    }

    /// Classifies the current block as a digit or nothing.
    fn classify(&self) -> Option<char> {
        let n = self.block.len() as f32;
        let energy = self.energy;
        // Fundamental power for a sine of amplitude A is (A n / 2)^2.
        let min_power = (MIN_TONE_AMPLITUDE * n / 2.0).powi(2);
        if energy < 2.0 * n * (MIN_TONE_AMPLITUDE * MIN_TONE_AMPLITUDE / 2.0) {
            return None;
        }
        // Steadiness: a block the tone only partly fills (its start or end) has uneven
        // halves. Requiring them within 3 dB makes a hit need >= 75 % fill, which is
        // what bounds the shortest accepted tone (two such blocks: > 19 ms).
        let first = self.first_half;
        let second = energy - first;
        if first.min(second) < MIN_HALF_RATIO * first.max(second) {
            return None;
        }
        // Where the energy sits, from the first difference: for a sine at f, the
        // difference has 4·sin²(πf/rate) times its energy. A block that can pass the
        // checks below has >= 70 % of its energy in a row and a column tone within the
        // twist limits, which puts that ratio between 0.26 and 2.02 at 8 kHz (the rest,
        // <= 30 %, may lie anywhere in 0..4). Speech, whose energy is mostly below
        // 600 Hz, falls under it and skips the Goertzel filters: they were a quarter of
        // the relay's CPU on forwarded G.711 legs. The bounds scale with the rate.
        let ratio = self.diff / energy;
        if ratio < self.min_diff_ratio || ratio > self.max_diff_ratio {
            return None;
        }
        // The eight fundamentals in one pass over the block; the second harmonics are
        // needed only for the winning row and column (checked last, below).
        let mut power = [0.0f32; 8];
        goertzel8(&self.block, &self.coeffs[..8], &mut power);
        let (r, &row) = argmax(&power[0..4]);
        let (c, &col) = argmax(&power[4..8]);
        if row < min_power || col < min_power {
            return None;
        }
        if col * NORMAL_TWIST < row || row * REVERSE_TWIST < col {
            return None;
        }
        let peak_ok = |group: &[f32], best: usize, value: f32| {
            group
                .iter()
                .enumerate()
                .all(|(i, &p)| i == best || p * RELATIVE_PEAK <= value)
        };
        if !peak_ok(&power[0..4], r, row) || !peak_ok(&power[4..8], c, col) {
            return None;
        }
        // Share of energy: a tone's power p corresponds to block energy 2p/n.
        let share = 2.0 * (row + col) / (n * energy);
        if share < MIN_TONE_SHARE {
            return None;
        }
        if goertzel(&self.block, self.coeffs[12 + c]) > col * COL_HARMONIC
            || goertzel(&self.block, self.coeffs[8 + r]) > row
        {
            return None;
        }
        Some(KEYS[r][c])
    }
}

/// The first-difference energy ratio of a sine at `hz` sampled at `rate`.
fn diff_ratio(hz: f32, rate: u32) -> f32 {
    let s = (PI * hz / rate as f32).sin();
    4.0 * s * s
}

/// The band of difference ratios a block that `classify` could accept lies in: at least
/// 70 % of its energy in a row and a column tone whose powers are within the twist limits,
/// the rest anywhere from 0 to the ratio's maximum of 4. Widened by a margin for the
/// cross terms of a finite block.
fn diff_ratio_bounds(rate: u32) -> (f32, f32) {
    let (row_lo, row_hi) = (diff_ratio(ROWS[0], rate), diff_ratio(ROWS[3], rate));
    let (col_lo, col_hi) = (diff_ratio(COLS[0], rate), diff_ratio(COLS[3], rate));
    // Lowest: the lowest row with the weakest allowed column (row 8 dB stronger).
    let tones_lo = (row_lo + col_lo / NORMAL_TWIST) / (1.0 + 1.0 / NORMAL_TWIST);
    // Highest: the highest column 4 dB stronger than the highest row.
    let tones_hi = (row_hi + col_hi * REVERSE_TWIST) / (1.0 + REVERSE_TWIST);
    let lo = MIN_TONE_SHARE * tones_lo;
    let hi = MIN_TONE_SHARE * tones_hi + (1.0 - MIN_TONE_SHARE) * 4.0;
    (lo * 0.6, hi * 1.25)
}

fn argmax(values: &[f32]) -> (usize, &f32) {
    values.iter().enumerate().fold(
        (0, &values[0]),
        |best, (i, v)| if *v > *best.1 { (i, v) } else { best },
    )
}

/// Goertzel power at the frequency whose coefficient is `coeff` = 2cos(w).
/// Goertzel power at eight frequencies at once: one pass over the block, eight
/// independent recurrences the compiler can keep in registers.
fn goertzel8(block: &[f32], coeffs: &[f32], power: &mut [f32; 8]) {
    let mut c = [0.0f32; 8];
    c.copy_from_slice(&coeffs[..8]);
    let (mut s1, mut s2) = ([0.0f32; 8], [0.0f32; 8]);
    for &x in block {
        for k in 0..8 {
            let s0 = x + c[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    for k in 0..8 {
        power[k] = s1[k] * s1[k] + s2[k] * s2[k] - c[k] * s1[k] * s2[k];
    }
}

fn goertzel(block: &[f32], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in block {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_digit_lies_in_the_difference_ratio_band_and_a_low_tone_does_not() {
        for rate in [8000, 16000, 48000] {
            let (lo, hi) = diff_ratio_bounds(rate);
            for d in ['1', '3', 'A', '*', '0', 'D', '7', '9'] {
                let f = generate_digit(rate, d, 40, -10.0);
                let x: Vec<f32> = f.samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
                let e: f32 = x.iter().map(|v| v * v).sum();
                let dd: f32 = x.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum();
                let r = dd / e;
                assert!(lo < r && r < hi, "{d} at {rate}: {r} not in {lo}..{hi}");
            }
            // A 300 Hz voice-like tone is below the band: it skips the filters.
            let n = rate as usize / 10;
            let x: Vec<f32> = (0..n)
                .map(|i| (2.0 * PI * 300.0 * i as f32 / rate as f32).sin())
                .collect();
            let e: f32 = x.iter().map(|v| v * v).sum();
            let dd: f32 = x.windows(2).map(|w| (w[1] - w[0]).powi(2)).sum();
            assert!(dd / e < lo, "300 Hz at {rate}: {} >= {lo}", dd / e);
        }
    }

    #[test]
    fn g711_payloads_give_the_digits_of_the_decoded_audio() {
        // The relay's allocation-free path against the decoded-frame path: digits with
        // silence between them, cut into 20 ms packets, in both G.711 laws.
        let mut pcm = Vec::new();
        for d in ['1', '5', '#', '0', 'D'] {
            pcm.extend(generate_digit(8000, d, 60, -12.0).samples);
            pcm.extend(std::iter::repeat_n(0i16, 480));
        }
        for ulaw in [true, false] {
            let bytes = if ulaw {
                crate::g711::encode_ulaw(&pcm)
            } else {
                crate::g711::encode_alaw(&pcm)
            };
            let (mut a, mut b) = (InbandDetector::new(8000), InbandDetector::new(8000));
            let (mut from_frames, mut from_bytes) = (Vec::new(), Vec::new());
            for chunk in bytes.chunks(160) {
                let decoded = if ulaw {
                    crate::g711::decode_ulaw(chunk)
                } else {
                    crate::g711::decode_alaw(chunk)
                };
                from_frames.extend(a.feed(&AudioFrame::new(8000, decoded)));
                from_bytes.extend(b.feed_g711(chunk, ulaw));
            }
            let keys: String = from_bytes.iter().map(|d| d.digit).collect();
            assert_eq!(keys, "15#0D");
            assert_eq!(from_frames, from_bytes);
        }
    }

    #[test]
    fn generator_levels_and_length() {
        let f = generate_digit(8000, '5', 100, -7.0);
        assert_eq!(f.samples.len(), 800);
        assert_eq!(f.rate, 8000);
        let peak = f.samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
        // Two sines of -7 dBFS (0.447) each: peaks approach 0.89 of full scale.
        assert!((25_000..=29_500).contains(&peak), "peak {peak}");
        assert!(generate_digit(8000, 'x', 20, -6.0)
            .samples
            .iter()
            .all(|&s| s == 0));
    }

    #[test]
    fn single_digit_at_8k() {
        let mut det = InbandDetector::new(8000);
        let mut digits = det.feed(&generate_digit(8000, '7', 100, -10.0));
        digits.extend(det.feed(&AudioFrame::silence(8000, 100)));
        assert_eq!(digits.len(), 1);
        assert_eq!(digits[0].digit, '7');
        assert_eq!(digits[0].source, DtmfSource::Inband);
        assert!(
            (75..=115).contains(&digits[0].duration_ms),
            "{:?}",
            digits[0]
        );
    }

    #[test]
    fn finish_reports_held_digit() {
        let mut det = InbandDetector::new(8000);
        assert!(det.feed(&generate_digit(8000, 'D', 200, -10.0)).is_empty());
        assert_eq!(det.finish().map(|d| d.digit), Some('D'));
        assert_eq!(det.finish(), None);
    }
}
