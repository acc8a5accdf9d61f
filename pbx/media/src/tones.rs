//! Comfort tones and the generated default music on hold. Tones are cadences in the
//! Asterisk `indications.conf` syntax (so admins can paste their country's lines), with
//! presets for common countries; [`ToneGenerator`] turns one into 20 ms frames at any rate.
//! Everything here is synthesised and deterministic: the project ships no binary audio.
//!
//! Drive contract of [`ToneGenerator`]: call [`ToneGenerator::next_frame`] once per 20 ms
//! (or [`ToneGenerator::fill`] for any length); `None` means a play-once cadence is over.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use crate::AudioFrame;

/// A tone level. Two-frequency tones put this level on *each* frequency, as telephony
/// specifications state them (US dial tone: 350 Hz and 440 Hz at -13 dBm0 each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Relative to the G.711 digital milliwatt: a full-scale sine is +3.14 dBm0 (G.711).
    Dbm0(f32),
    /// A sine's peak relative to full scale (so also its RMS relative to a full-scale
    /// sine's, as AES17 defines dBFS).
    Dbfs(f32),
}

/// A full-scale sine's level in dBm0 (G.711's maximum load capacity, A-law; μ-law's is
/// 3.17: the 0.03 dB between them is far below any tone tolerance).
#[allow(clippy::approx_constant)] // a level in dB that happens to start like π
const FULL_SCALE_DBM0: f64 = 3.14;

impl Level {
    /// The level of tones when none is configured: -13 dBm0 per frequency, within ITU-T
    /// E.180's recommended -10 ± 5 dBm0 range and the US/ETSI customary values.
    pub const DEFAULT: Level = Level::Dbm0(-13.0);

    /// Peak amplitude of one sine at this level, on the 16-bit scale.
    pub fn peak(self) -> f64 {
        let dbfs = match self {
            Level::Dbm0(db) => f64::from(db) - FULL_SCALE_DBM0,
            Level::Dbfs(db) => f64::from(db),
        };
        32767.0 * 10f64.powf(dbfs / 20.0)
    }
}

impl Default for Level {
    fn default() -> Level {
        Level::DEFAULT
    }
}

/// What one cadence part sounds like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sound {
    Silence,
    Sine(f32),
    /// Two sines added, each at the level (`350+440`).
    Dual(f32, f32),
    /// `425*50`: the carrier amplitude-modulated by the second frequency at 90 % depth,
    /// peaking at the level (Asterisk's `*` syntax, used by a few countries' ringback).
    Modulated {
        carrier: f32,
        by: f32,
    },
}

/// One comma-separated element of a cadence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TonePart {
    pub sound: Sound,
    /// `None`: plays forever (`350+440`, a dial tone).
    pub duration_ms: Option<u32>,
    /// `!`: played once, not repeated.
    pub once: bool,
}

/// A parsed `indications.conf` tone: `[!]f1[+f2|*f2][/ms],...`. As in Asterisk, the
/// cadence repeats from its first part without `!`; one made only of `!` parts ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Cadence {
    parts: Vec<TonePart>,
}

/// Why a cadence does not parse; `part` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CadenceError {
    #[error("empty tone cadence")]
    Empty,
    #[error("part {part}: bad frequency {text:?} (0 to 20000 Hz)")]
    BadFrequency { part: usize, text: String },
    #[error("part {part}: bad duration {text:?} (milliseconds)")]
    BadDuration { part: usize, text: String },
    #[error("part {part}: MIDI note syntax (M...) is not supported")]
    MidiNotes { part: usize },
}

/// The highest frequency accepted in a cadence; tones above the output's Nyquist
/// frequency are muted at generation time rather than aliased.
const MAX_FREQUENCY: f32 = 20_000.0;

fn parse_frequency(part: usize, text: &str) -> Result<f32, CadenceError> {
    let text = text.trim();
    match text.parse::<f32>() {
        Ok(f) if (0.0..=MAX_FREQUENCY).contains(&f) => Ok(f),
        _ => Err(CadenceError::BadFrequency {
            part,
            text: text.to_owned(),
        }),
    }
}

impl FromStr for Cadence {
    type Err = CadenceError;

    fn from_str(spec: &str) -> Result<Cadence, CadenceError> {
        if spec.trim().is_empty() {
            return Err(CadenceError::Empty);
        }
        let mut parts = Vec::new();
        for (i, raw) in spec.split(',').enumerate() {
            let part = i + 1;
            let mut text = raw.trim();
            let once = text.starts_with('!');
            if once {
                text = text[1..].trim_start();
            }
            if text.starts_with(['M', 'm']) {
                return Err(CadenceError::MidiNotes { part });
            }
            let (freqs, duration) = match text.split_once('/') {
                Some((f, d)) => (f, Some(d.trim())),
                None => (text, None),
            };
            let duration_ms = match duration {
                None => None,
                Some(d) => Some(d.parse::<u32>().map_err(|_| CadenceError::BadDuration {
                    part,
                    text: d.to_owned(),
                })?),
            };
            let sound = if let Some((a, b)) = freqs.split_once('+') {
                Sound::Dual(parse_frequency(part, a)?, parse_frequency(part, b)?)
            } else if let Some((a, b)) = freqs.split_once('*') {
                Sound::Modulated {
                    carrier: parse_frequency(part, a)?,
                    by: parse_frequency(part, b)?,
                }
            } else {
                Sound::Sine(parse_frequency(part, freqs)?)
            };
            let sound = match sound {
                Sound::Sine(0.0) | Sound::Dual(0.0, 0.0) => Sound::Silence,
                Sound::Dual(a, 0.0) | Sound::Dual(0.0, a) => Sound::Sine(a),
                Sound::Modulated { carrier: 0.0, .. } => Sound::Silence,
                other => other,
            };
            parts.push(TonePart {
                sound,
                duration_ms,
                once,
            });
        }
        Ok(Cadence { parts })
    }
}

fn fmt_freq(f: f32) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as u32)
    } else {
        format!("{f}")
    }
}

impl fmt::Display for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if p.once {
                f.write_str("!")?;
            }
            match p.sound {
                Sound::Silence => f.write_str("0")?,
                Sound::Sine(a) => f.write_str(&fmt_freq(a))?,
                Sound::Dual(a, b) => write!(f, "{}+{}", fmt_freq(a), fmt_freq(b))?,
                Sound::Modulated { carrier, by } => {
                    write!(f, "{}*{}", fmt_freq(carrier), fmt_freq(by))?
                }
            }
            if let Some(ms) = p.duration_ms {
                write!(f, "/{ms}")?;
            }
        }
        Ok(())
    }
}

impl Cadence {
    pub fn parts(&self) -> &[TonePart] {
        &self.parts
    }

    /// Index of the part the cadence loops back to, `None` when it plays once.
    pub fn repeat_from(&self) -> Option<usize> {
        self.parts.iter().position(|p| !p.once)
    }

    /// The short beep played before recording or on a feature code: 1 kHz, 250 ms, once.
    pub fn beep() -> Cadence {
        Cadence {
            parts: vec![TonePart {
                sound: Sound::Sine(1000.0),
                duration_ms: Some(250),
                once: true,
            }],
        }
    }
}

/// Countries with built-in tone presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Country {
    Us,
    /// CEPT recommendation T/SF 20 (425 Hz), which most European networks follow.
    Eu,
    Uk,
    De,
    Fr,
    It,
}

impl Country {
    pub const ALL: [Country; 6] = [
        Country::Us,
        Country::Eu,
        Country::Uk,
        Country::De,
        Country::Fr,
        Country::It,
    ];

    /// From an `indications.conf`-style code: `us`, `eu` (or `cept`), `uk` (or `gb`),
    /// `de`, `fr`, `it`; case-insensitive.
    pub fn from_code(code: &str) -> Option<Country> {
        match code.to_ascii_lowercase().as_str() {
            "us" => Some(Country::Us),
            "eu" | "cept" => Some(Country::Eu),
            "uk" | "gb" => Some(Country::Uk),
            "de" => Some(Country::De),
            "fr" => Some(Country::Fr),
            "it" => Some(Country::It),
            _ => None,
        }
    }
}

/// The tones later features need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToneKind {
    Dial,
    Ringback,
    Busy,
    Congestion,
    CallWaiting,
    Beep,
}

impl ToneKind {
    pub const ALL: [ToneKind; 6] = [
        ToneKind::Dial,
        ToneKind::Ringback,
        ToneKind::Busy,
        ToneKind::Congestion,
        ToneKind::CallWaiting,
        ToneKind::Beep,
    ];
}

/// The cadence text of a preset (Asterisk's `indications.conf.sample` values; EU from CEPT
/// T/SF 20). Admins override these with their own strings.
pub fn preset_spec(country: Country, kind: ToneKind) -> &'static str {
    use Country::*;
    use ToneKind::*;
    match (country, kind) {
        (_, Beep) => "!1000/250",
        (Us, Dial) => "350+440",
        (Us, Ringback) => "440+480/2000,0/4000",
        (Us, Busy) => "480+620/500,0/500",
        (Us, Congestion) => "480+620/250,0/250",
        (Us, CallWaiting) => "440/300,0/10000",
        (Eu, Dial) => "425",
        (Eu, Ringback) => "425/1000,0/4000",
        (Eu, Busy) => "425/500,0/500",
        (Eu, Congestion) => "425/250,0/250",
        (Eu, CallWaiting) => "425/200,0/200,425/200,0/5000",
        (Uk, Dial) => "350+440",
        (Uk, Ringback) => "400+450/400,0/200,400+450/400,0/2000",
        (Uk, Busy) => "400/375,0/375",
        (Uk, Congestion) => "400/400,0/350,400/225,0/525",
        (Uk, CallWaiting) => "400/100,0/4000",
        (De, Dial) => "425",
        (De, Ringback) => "425/1000,0/4000",
        (De, Busy) => "425/480,0/480",
        (De, Congestion) => "425/240,0/240",
        (De, CallWaiting) => {
            "!425/200,!0/200,!425/200,!0/5000,!425/200,!0/200,!425/200,!0/5000,\
             !425/200,!0/200,!425/200,!0/5000,!425/200,!0/200,!425/200,!0/5000,\
             !425/200,!0/200,!425/200,0"
        }
        (Fr, Dial) => "440",
        (Fr, Ringback) => "440/1500,0/3500",
        (Fr, Busy) => "440/500,0/500",
        (Fr, Congestion) => "440/250,0/250",
        (Fr, CallWaiting) => "440/300,0/10000",
        (It, Dial) => "425/200,0/200,425/600,0/1000",
        (It, Ringback) => "425/1000,0/4000",
        (It, Busy) => "425/500,0/500",
        (It, Congestion) => "425/200,0/200",
        (It, CallWaiting) => "425/400,0/100,425/250,0/100,425/150,0/14000",
    }
}

/// A preset, parsed.
pub fn preset(country: Country, kind: ToneKind) -> Cadence {
    preset_spec(country, kind)
        .parse()
        .expect("built-in presets parse (tested)")
}

/// Plays a [`Cadence`] at one sample rate. Part lengths are exact in samples
/// (`round(ms × rate / 1000)`), and oscillator phases carry across frames and parts, so
/// frame boundaries are inaudible.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    parts: Vec<TonePart>,
    repeat_from: Option<usize>,
    rate: u32,
    peak: f64,
    index: usize,
    /// Samples left in the current part; `None` for an endless part.
    remaining: Option<u64>,
    /// Oscillator phases in cycles, in [0, 1).
    phase: [f64; 2],
    finished: bool,
}

impl ToneGenerator {
    pub fn new(cadence: &Cadence, rate: u32, level: Level) -> ToneGenerator {
        let mut g = ToneGenerator {
            parts: cadence.parts.clone(),
            repeat_from: cadence.repeat_from(),
            rate: rate.max(1),
            peak: level.peak(),
            index: 0,
            remaining: None,
            phase: [0.0; 2],
            finished: cadence.parts.is_empty(),
        };
        if !g.finished {
            g.enter(0);
        }
        g
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn part_samples(&self, part: &TonePart) -> Option<u64> {
        part.duration_ms
            .map(|ms| (u64::from(ms) * u64::from(self.rate) + 500) / 1000)
    }

    fn enter(&mut self, index: usize) {
        self.index = index;
        self.remaining = self.part_samples(&self.parts[index]);
    }

    /// Moves past finished (or empty) parts. A loop whose parts are all zero-length would
    /// never produce a sample, so after one fruitless lap the cadence counts as finished.
    fn settle(&mut self) {
        let mut steps = 0;
        while !self.finished && self.remaining == Some(0) {
            steps += 1;
            let next = self.index + 1;
            if next < self.parts.len() {
                self.enter(next);
            } else if let Some(r) = self.repeat_from {
                self.enter(r);
            } else {
                self.finished = true;
            }
            if steps > self.parts.len() + 1 {
                self.finished = true;
            }
        }
    }

    /// Writes samples into `out` and returns how many: all of them unless a play-once
    /// cadence ends first (the rest of `out` is left untouched).
    pub fn fill(&mut self, out: &mut [i16]) -> usize {
        let mut written = 0;
        while written < out.len() {
            self.settle();
            if self.finished {
                break;
            }
            let want = out.len() - written;
            let n = match self.remaining {
                Some(left) => (left.min(want as u64)) as usize,
                None => want,
            };
            let sound = self.parts[self.index].sound;
            self.synthesise(sound, &mut out[written..written + n]);
            written += n;
            if let Some(left) = &mut self.remaining {
                *left -= n as u64;
            }
        }
        // So that `is_finished` is true as soon as the last sample is out.
        self.settle();
        written
    }

    fn synthesise(&mut self, sound: Sound, out: &mut [i16]) {
        let nyquist = f64::from(self.rate) / 2.0;
        let step = |f: f32| {
            let f = f64::from(f);
            if f >= nyquist {
                None
            } else {
                Some(f / f64::from(self.rate))
            }
        };
        let (a, b, modulate) = match sound {
            Sound::Silence => (None, None, false),
            Sound::Sine(f) => (step(f), None, false),
            Sound::Dual(f, g) => (step(f), step(g), false),
            Sound::Modulated { carrier, by } => (step(carrier), step(by), true),
        };
        let peak = self.peak;
        for s in out.iter_mut() {
            let mut v = 0.0;
            let osc1 = a.map(|inc| {
                let x = (2.0 * PI * self.phase[0]).sin();
                self.phase[0] = (self.phase[0] + inc).fract();
                x
            });
            let osc2 = b.map(|inc| {
                let x = (2.0 * PI * self.phase[1]).sin();
                self.phase[1] = (self.phase[1] + inc).fract();
                x
            });
            if modulate {
                if let Some(c) = osc1 {
                    v = c * (1.0 + 0.9 * osc2.unwrap_or(0.0)) / 1.9;
                }
            } else {
                v = osc1.unwrap_or(0.0) + osc2.unwrap_or(0.0);
            }
            *s = (v * peak).round().clamp(-32768.0, 32767.0) as i16;
        }
    }

    /// The next 20 ms (`rate / 50` samples); a cadence that ends mid-frame is padded with
    /// silence, and after that `None`.
    pub fn next_frame(&mut self) -> Option<AudioFrame> {
        self.settle();
        if self.finished {
            return None;
        }
        let mut samples = vec![0; (self.rate / 50) as usize];
        self.fill(&mut samples);
        Some(AudioFrame::new(self.rate, samples))
    }
}

// ---------------------------------------------------------------------------------------
// Default music on hold
// ---------------------------------------------------------------------------------------

/// Length of [`default_moh`]: ten chords of four seconds.
pub const DEFAULT_MOH_SECONDS: u32 = 40;
const CHORD_SECONDS: f64 = 4.0;
/// RMS target: -18 dBFS relative to a full-scale sine (AES17).
const MOH_RMS: f64 = 32767.0 / std::f64::consts::SQRT_2 * 0.125_892_541; // 10^(-18/20)

/// (bass, pad voices) as MIDI note numbers; a slow progression in F major:
/// Fmaj7 Dm7 Bbmaj7 Csus4 Am7 Dm9 Gm7 C7 Bbmaj7 Csus4.
const CHORDS: [(u8, [u8; 4]); 10] = [
    (41, [57, 60, 64, 65]),
    (38, [57, 60, 62, 65]),
    (46, [58, 62, 65, 69]),
    (48, [60, 65, 67, 72]),
    (45, [60, 64, 67, 69]),
    (50, [62, 64, 65, 69]),
    (43, [58, 62, 65, 67]),
    (48, [58, 60, 64, 67]),
    (46, [57, 62, 65, 70]),
    (48, [60, 65, 67, 70]),
];
/// F major pentatonic over about an octave and a half, for the melody (C5 to F6).
const MELODY_SCALE: [u8; 9] = [72, 74, 77, 79, 81, 84, 86, 89, 91];

fn midi_hz(note: u8) -> f64 {
    440.0 * 2f64.powf((f64::from(note) - 69.0) / 12.0)
}

/// Deterministic xorshift64*: the piece must be identical on every build and platform.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 11) % n
    }
}

enum Envelope {
    /// Smoothstep attack over `attack`, hold, smoothstep release over `release` (seconds).
    Pad { attack: f64, release: f64 },
    /// Fast attack, exponential decay with time constant `decay` (plucked or bell-like).
    Pluck { attack: f64, decay: f64 },
}

struct Note {
    start: f64,
    /// Sounding time before the release (pads) or total length (plucks), seconds.
    length: f64,
    freq: f64,
    gain: f64,
    /// (frequency multiple, relative amplitude).
    partials: &'static [(f64, f64)],
    envelope: Envelope,
    /// Random bits for the partials' starting phases: identical notes in two chords then
    /// do not sound (or correlate) like a copy-paste.
    phases: u64,
}

fn smoothstep(t: f64) -> f64 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Adds `note` into `buf`, wrapping past the end so the loop seam is a crossfade.
fn render(buf: &mut [f32], rate: u32, note: &Note) {
    let sr = f64::from(rate);
    let total = buf.len();
    let (len_s, release) = match note.envelope {
        Envelope::Pad { release, .. } => (note.length + release, release),
        Envelope::Pluck { .. } => (note.length, 0.0),
    };
    let n = (len_s * sr) as usize;
    let start = (note.start * sr) as usize;
    // Each partial is a rotating phasor: one complex multiply per sample, no sin() calls.
    let mut osc: Vec<(f64, f64, f64, f64, f64)> = note
        .partials
        .iter()
        .enumerate()
        .filter(|(_, (mult, _))| note.freq * mult < 0.45 * sr)
        .map(|(j, &(mult, amp))| {
            let w = 2.0 * PI * note.freq * mult / sr;
            let p = 2.0 * PI * ((note.phases >> (8 * j)) & 0xFF) as f64 / 256.0;
            (p.sin(), p.cos(), w.cos(), w.sin(), amp)
        })
        .collect();
    let hold_end = note.length * sr;
    let mut decay_gain = 1.0;
    let decay_factor = match note.envelope {
        Envelope::Pluck { decay, .. } => (-1.0 / (decay * sr)).exp(),
        Envelope::Pad { .. } => 1.0,
    };
    for i in 0..n {
        let t = i as f64;
        let env = match note.envelope {
            Envelope::Pad { attack, .. } => {
                let a = smoothstep(t / (attack * sr));
                let r = if t > hold_end {
                    1.0 - smoothstep((t - hold_end) / (release * sr))
                } else {
                    1.0
                };
                a * r
            }
            Envelope::Pluck { attack, .. } => {
                decay_gain *= decay_factor;
                // A 30 ms fade at the very end avoids a click when a note is cut.
                let tail = ((n - i) as f64 / (0.03 * sr)).min(1.0);
                smoothstep(t / (attack * sr)) * decay_gain * tail
            }
        };
        let mut v = 0.0;
        for (s, c, cw, sw, amp) in osc.iter_mut() {
            v += *s * *amp;
            let ns = *s * *cw + *c * *sw;
            let nc = *c * *cw - *s * *sw;
            *s = ns;
            *c = nc;
        }
        buf[(start + i) % total] += (v * env * note.gain) as f32;
    }
}

const PAD_PARTIALS: &[(f64, f64)] = &[(1.0, 1.0), (1.003, 0.6), (2.0, 0.35), (3.0, 0.12)];
const BASS_PARTIALS: &[(f64, f64)] = &[(1.0, 1.0), (2.0, 0.7), (3.0, 0.35), (4.0, 0.15)];
const BELL_PARTIALS: &[(f64, f64)] = &[(1.0, 1.0), (2.0, 0.3), (3.0, 0.1), (4.02, 0.05)];

/// The generated default music on hold at `rate` Hz: 40 s of a slow chord progression
/// (soft pad and bass with smooth envelopes) under a sparse, bell-like pentatonic melody,
/// additive sine partials throughout, RMS-normalised to -18 dBFS. Deterministic, and the
/// end wraps into the start, so it loops without a seam. Costs a fraction of a second of
/// CPU at 48 kHz: callers generate it once per rate and share it.
pub fn default_moh(rate: u32) -> Vec<i16> {
    let rate = rate.max(1000);
    let len = (DEFAULT_MOH_SECONDS as usize) * rate as usize;
    let mut buf = vec![0f32; len];
    let mut rng = Xorshift(0x5717_C4B0_A2D1_0E05);
    let mut melody_pos = 2usize; // index into MELODY_SCALE
    for (c, (bass, voices)) in CHORDS.iter().enumerate() {
        let start = c as f64 * CHORD_SECONDS;
        for &v in voices {
            render(
                &mut buf,
                rate,
                &Note {
                    start,
                    length: CHORD_SECONDS,
                    freq: midi_hz(v),
                    gain: 0.22,
                    partials: PAD_PARTIALS,
                    envelope: Envelope::Pad {
                        attack: 1.2,
                        release: 1.6,
                    },
                    phases: rng.next(),
                },
            );
        }
        render(
            &mut buf,
            rate,
            &Note {
                start,
                length: CHORD_SECONDS - 0.4,
                freq: midi_hz(*bass + 12),
                gain: 0.3,
                partials: BASS_PARTIALS,
                envelope: Envelope::Pad {
                    attack: 0.4,
                    release: 0.8,
                },
                phases: rng.next(),
            },
        );
        // Melody: two to four notes on a half-second grid, a random walk over the scale
        // that leans towards chord tones, with rests, so no two bars sound the same.
        let count = 2 + rng.below(3) as usize;
        let mut slots: Vec<u64> = Vec::new();
        while slots.len() < count {
            let s = rng.below(8);
            if !slots.contains(&s) {
                slots.push(s);
            }
        }
        slots.sort_unstable();
        for (k, &slot) in slots.iter().enumerate() {
            let step = rng.below(5) as isize - 2;
            melody_pos =
                (melody_pos as isize + step).clamp(0, MELODY_SCALE.len() as isize - 1) as usize;
            let mut note = MELODY_SCALE[melody_pos];
            // Nudge onto a chord tone (in any octave) when one is a semitone or two away.
            for &v in voices {
                let pc = |n: u8| i16::from(n % 12);
                let d = (pc(v) - pc(note)).rem_euclid(12);
                if d == 1 || d == 2 {
                    note += d as u8;
                    break;
                }
            }
            let next = slots.get(k + 1).copied().unwrap_or(8);
            let length = ((next - slot) as f64 * 0.5 + 0.6).min(2.5);
            render(
                &mut buf,
                rate,
                &Note {
                    start: start + slot as f64 * 0.5,
                    length,
                    freq: midi_hz(note),
                    gain: 0.55,
                    partials: BELL_PARTIALS,
                    envelope: Envelope::Pluck {
                        attack: 0.015,
                        decay: 0.7,
                    },
                    phases: rng.next(),
                },
            );
        }
    }
    let energy: f64 = buf.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let rms = (energy / len as f64).sqrt();
    let peak = buf.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let mut gain = if rms > 0.0 { MOH_RMS / rms } else { 0.0 };
    // Never clip: a quieter piece is better than a distorted one.
    if f64::from(peak) * gain > 30_000.0 {
        gain = 30_000.0 / f64::from(peak);
    }
    buf.iter()
        .map(|&x| (f64::from(x) * gain).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_print_back() {
        for c in Country::ALL {
            for k in ToneKind::ALL {
                let spec = preset_spec(c, k);
                let cadence: Cadence = spec.parse().unwrap();
                let printed = cadence.to_string();
                assert_eq!(printed.parse::<Cadence>().unwrap(), cadence, "{c:?} {k:?}");
            }
        }
    }

    #[test]
    fn parse_errors_name_the_part() {
        assert_eq!("".parse::<Cadence>(), Err(CadenceError::Empty));
        assert!(matches!(
            "440/100,x/100".parse::<Cadence>(),
            Err(CadenceError::BadFrequency { part: 2, .. })
        ));
        assert!(matches!(
            "440/-1".parse::<Cadence>(),
            Err(CadenceError::BadDuration { part: 1, .. })
        ));
        assert!(matches!(
            "!M60/100".parse::<Cadence>(),
            Err(CadenceError::MidiNotes { part: 1 })
        ));
        assert!("99999".parse::<Cadence>().is_err());
    }

    #[test]
    fn zero_length_loop_finishes_instead_of_spinning() {
        let c: Cadence = "440/0,0/0".parse().unwrap();
        let mut g = ToneGenerator::new(&c, 8000, Level::DEFAULT);
        assert_eq!(g.next_frame(), None);
    }

    #[test]
    fn levels() {
        assert!((Level::Dbfs(0.0).peak() - 32767.0).abs() < 1e-6);
        // 0 dBm0 is 3.14 dB below a full-scale sine.
        assert!((Level::Dbm0(0.0).peak() - 22_826.0).abs() < 2.0);
    }
}
