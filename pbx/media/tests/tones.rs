//! Tone cadences timed to the sample and checked for frequency and level (Goertzel), and
//! the generated default music on hold checked for length, level, headroom and variety.

#[path = "signal/mod.rs"]
mod signal;

use signal::{goertzel, peak, rms};
use switchboard_media::tones::{
    default_moh, preset, Cadence, Country, Level, ToneGenerator, ToneKind, DEFAULT_MOH_SECONDS,
};

/// Checks `x` against an on/off pattern to the sample: "off" stretches are exactly zero,
/// "on" stretches have no run of three zero samples and end on a nonzero sample. (Their
/// first sample may be zero: a sine starts at sin(0), and phases carry over.)
fn assert_cadence(x: &[i16], pattern: &[(bool, usize)], what: &str) {
    let mut at = 0;
    for (k, &(on, len)) in pattern.iter().enumerate() {
        let part = &x[at..at + len];
        if on {
            assert!(
                part[len - 1] != 0 && part[1] != 0,
                "{what}: part {k} at {at} not on at its edges"
            );
            assert!(
                part.windows(3).all(|w| w != [0, 0, 0]),
                "{what}: part {k} at {at} has a gap"
            );
        } else {
            assert!(
                part.iter().all(|&s| s == 0),
                "{what}: part {k} at {at} not silent"
            );
        }
        at += len;
    }
    assert_eq!(at, x.len(), "{what}: pattern covers the signal");
}

fn generate(spec: &str, rate: u32, samples: usize) -> Vec<i16> {
    let cadence: Cadence = spec.parse().unwrap();
    let mut g = ToneGenerator::new(&cadence, rate, Level::DEFAULT);
    let mut out = vec![0; samples];
    assert_eq!(g.fill(&mut out), samples);
    out
}

/// Peak of one sine at the default level: -13 dBm0.
fn default_peak() -> f64 {
    Level::DEFAULT.peak()
}

#[test]
fn us_ringback_is_timed_to_the_sample_at_any_rate() {
    for rate in [8000u32, 16000, 44100, 48000] {
        let on = 2 * rate as usize;
        let off = 4 * rate as usize;
        let x = generate("440+480/2000,0/4000", rate, 3 * (on + off));
        let pattern = [(true, on), (false, off)].repeat(3);
        assert_cadence(&x, &pattern, &format!("at {rate} Hz"));
        // Both frequencies at -13 dBm0 each, nothing at 350 Hz; 1 s holds whole cycles.
        let window = &x[..rate as usize];
        for f in [440.0, 480.0] {
            let a = goertzel(window, rate, f);
            assert!(
                (a / default_peak() - 1.0).abs() < 0.01,
                "{f} Hz at {rate}: {a}"
            );
        }
        assert!(goertzel(window, rate, 350.0) < 0.01 * default_peak());
    }
}

#[test]
fn presets_have_their_cadences_and_frequencies() {
    let rate = 8000;
    type Case = (Country, ToneKind, &'static [f64], &'static [(bool, usize)]);
    let cases: [Case; 8] = [
        (
            Country::Us,
            ToneKind::Busy,
            &[480.0, 620.0],
            &[(true, 4000), (false, 4000)],
        ),
        (
            Country::Us,
            ToneKind::Congestion,
            &[480.0, 620.0],
            &[(true, 2000), (false, 2000)],
        ),
        (
            Country::Eu,
            ToneKind::Ringback,
            &[425.0],
            &[(true, 8000), (false, 32000)],
        ),
        (
            Country::De,
            ToneKind::Busy,
            &[425.0],
            &[(true, 3840), (false, 3840)],
        ),
        (
            Country::Fr,
            ToneKind::Ringback,
            &[440.0],
            &[(true, 12000), (false, 28000)],
        ),
        (
            Country::Uk,
            ToneKind::Ringback,
            &[400.0, 450.0],
            &[(true, 3200), (false, 1600), (true, 3200), (false, 16000)],
        ),
        (
            Country::It,
            ToneKind::Dial,
            &[425.0],
            &[(true, 1600), (false, 1600), (true, 4800), (false, 8000)],
        ),
        (
            Country::Uk,
            ToneKind::CallWaiting,
            &[400.0],
            &[(true, 800), (false, 32000)],
        ),
    ];
    for (country, kind, freqs, pattern) in cases {
        let period: usize = pattern.iter().map(|p| p.1).sum();
        let mut g = ToneGenerator::new(&preset(country, kind), rate, Level::DEFAULT);
        let mut x = vec![0; 2 * period];
        assert_eq!(g.fill(&mut x), x.len());
        let twice: Vec<_> = pattern.iter().chain(pattern).copied().collect();
        assert_cadence(&x, &twice, &format!("{country:?} {kind:?}"));
        let first_on = &x[..pattern[0].1];
        for &f in freqs {
            let a = goertzel(first_on, rate, f);
            assert!(
                (a / default_peak() - 1.0).abs() < 0.05,
                "{country:?} {kind:?} {f}: {a}"
            );
        }
    }
}

#[test]
fn dial_tones_are_continuous() {
    for (country, freqs) in [
        (Country::Us, &[350.0, 440.0][..]),
        (Country::Uk, &[350.0, 440.0][..]),
        (Country::Eu, &[425.0][..]),
        (Country::De, &[425.0][..]),
        (Country::Fr, &[440.0][..]),
    ] {
        let mut g = ToneGenerator::new(&preset(country, ToneKind::Dial), 8000, Level::DEFAULT);
        let mut x = vec![0; 80_000];
        g.fill(&mut x);
        assert_cadence(&x, &[(true, 80_000)], &format!("{country:?}"));
        for &f in freqs {
            assert!((goertzel(&x[..8000], 8000, f) / default_peak() - 1.0).abs() < 0.01);
        }
        assert!(!g.is_finished());
    }
}

#[test]
fn play_once_parts_then_the_loop() {
    let x = generate("!950/100,!0/50,425/200,0/300", 8000, 800 + 400 + 2 * 4000);
    assert_cadence(
        &x,
        &[
            (true, 800),
            (false, 400),
            (true, 1600),
            (false, 2400),
            (true, 1600),
            (false, 2400),
        ],
        "play-once then loop",
    );
    assert!(goertzel(&x[..800], 8000, 950.0) > 0.9 * default_peak());
    assert!(goertzel(&x[1200..2800], 8000, 425.0) > 0.95 * default_peak());

    // Only play-once parts: the tone ends, padded to a whole frame, then None.
    let mut beep = ToneGenerator::new(&Cadence::beep(), 8000, Level::DEFAULT);
    let frames: Vec<_> = std::iter::from_fn(|| beep.next_frame()).collect();
    assert_eq!(frames.len(), 13); // 250 ms = 12.5 frames
    assert!(frames
        .iter()
        .all(|f| f.samples.len() == 160 && f.rate == 8000));
    let all: Vec<i16> = frames.iter().flat_map(|f| f.samples.clone()).collect();
    assert_cadence(&all, &[(true, 2000), (false, 80)], "beep");
    assert!((goertzel(&all[..2000], 8000, 1000.0) / default_peak() - 1.0).abs() < 0.01);
    assert!(beep.is_finished());
    assert_eq!(beep.next_frame(), None);

    // German call waiting: bursts, then endless silence (never finished).
    let mut cw = ToneGenerator::new(
        &preset(Country::De, ToneKind::CallWaiting),
        8000,
        Level::DEFAULT,
    );
    let mut x = vec![0; 8000 * 30];
    assert_eq!(cw.fill(&mut x), x.len());
    assert!(!cw.is_finished());
    assert!(x[8000 * 25..].iter().all(|&s| s == 0));
    assert_cadence(&x[..3200], &[(true, 1600), (false, 1600)], "call waiting");
}

#[test]
fn frames_join_with_phase_continuity() {
    // 20 ms frames are sample-identical to one long generation: no phase reset at frame
    // (or part) boundaries, so no clicks.
    for rate in [8000u32, 44100] {
        let cadence: Cadence = "350+440/1010,350+440/990,0/13".parse().unwrap();
        let mut framed = ToneGenerator::new(&cadence, rate, Level::DEFAULT);
        let frames: Vec<i16> = (0..250)
            .flat_map(|_| framed.next_frame().unwrap().samples)
            .collect();
        let mut whole = ToneGenerator::new(&cadence, rate, Level::DEFAULT);
        let mut x = vec![0; frames.len()];
        whole.fill(&mut x);
        assert!(frames == x, "at {rate} Hz");
        // Across the 1010 ms / 990 ms part boundary the waveform is smooth.
        let b = (1010 * rate / 1000) as usize;
        let max_step = x[1..rate as usize * 2]
            .iter()
            .zip(&x[..rate as usize * 2 - 1])
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max()
            .unwrap();
        assert!((i32::from(x[b]) - i32::from(x[b - 1])).abs() <= max_step);
    }
}

#[test]
fn levels_in_dbm0_and_dbfs() {
    let cadence: Cadence = "1000".parse().unwrap();
    for (level, expected) in [
        (Level::Dbm0(0.0), 22_826.0),
        (Level::Dbm0(-13.0), 5_110.0),
        (Level::Dbfs(-6.0), 16_423.0),
        (Level::Dbfs(-20.0), 3_277.0),
    ] {
        let mut g = ToneGenerator::new(&cadence, 8000, level);
        let mut x = vec![0; 8000];
        g.fill(&mut x);
        let a = goertzel(&x, 8000, 1000.0);
        assert!((a - expected).abs() < 2.0, "{level:?}: {a}");
        assert!((f64::from(peak(&x)) - expected).abs() <= 1.0);
    }
    // Two tones at 0 dBFS each would exceed full scale: saturated, not wrapped.
    let mut g = ToneGenerator::new(&"500+1000".parse().unwrap(), 8000, Level::Dbfs(0.0));
    let mut x = vec![0; 800];
    g.fill(&mut x);
    assert!(x.contains(&i16::MAX) && x.contains(&i16::MIN));
}

#[test]
fn modulated_tones_and_nyquist() {
    let x = generate("425*50/1000", 8000, 8000);
    let carrier = goertzel(&x, 8000, 425.0);
    let lower = goertzel(&x, 8000, 375.0);
    let upper = goertzel(&x, 8000, 475.0);
    assert!(carrier > 0.4 * default_peak(), "{carrier}");
    assert!(
        lower > 0.35 * carrier && upper > 0.35 * carrier,
        "{lower} {upper}"
    );
    assert!(goertzel(&x, 8000, 50.0) < 0.01 * carrier);
    // A 5 kHz tone cannot exist at 8 kHz: muted, not aliased to 3 kHz.
    let x = generate("5000/100,1000/100", 8000, 1600);
    assert!(x[..800].iter().all(|&s| s == 0));
    assert!(goertzel(&x[800..], 8000, 1000.0) > 0.99 * default_peak());
}

// ------------------------------------------------------------------------------------
// Default music on hold
// ------------------------------------------------------------------------------------

/// -18 dBFS RMS relative to a full-scale sine.
const TARGET_RMS: f64 = 2917.0;

fn check_moh(rate: u32) -> Vec<i16> {
    let x = default_moh(rate);
    assert_eq!(
        x.len(),
        DEFAULT_MOH_SECONDS as usize * rate as usize,
        "length at {rate}"
    );
    let level_db = 20.0 * (rms(&x) / TARGET_RMS).log10();
    assert!(
        level_db.abs() < 0.5,
        "level {level_db:+.2} dB from -18 dBFS at {rate}"
    );
    assert!(peak(&x) <= 30_000, "headroom at {rate}: peak {}", peak(&x));
    x
}

#[test]
fn default_moh_length_level_and_headroom() {
    for rate in [8000, 16000] {
        let x = check_moh(rate);
        // Never silent: every second carries sound (at most 12 dB under the average).
        for (i, second) in x.chunks(rate as usize).enumerate() {
            let r = rms(second);
            assert!(r > TARGET_RMS / 4.0, "second {i} at {rate}: rms {r}");
        }
        // Loops without a seam: the last sample runs into the first like any other pair.
        let step = (i32::from(x[0]) - i32::from(*x.last().unwrap())).abs();
        let typical = x
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(
            step <= typical,
            "seam step {step}, largest in-piece step {typical}"
        );
    }
    assert!(default_moh(8000) == default_moh(8000), "deterministic");
}

#[test]
fn default_moh_is_music_not_a_tone_nor_a_loop() {
    let rate = 8000;
    let x = default_moh(rate);
    // Not a pure tone: in every second, no single frequency carries half the power.
    for (i, second) in x.chunks(rate as usize).enumerate() {
        let power = rms(second).powi(2);
        let (f, a) = signal::dominant(second, rate, (20..=700).map(|k| f64::from(k) * 5.0));
        let share = a * a / 2.0 / power;
        assert!(
            share < 0.5,
            "second {i}: {f} Hz carries {:.0}% of the power",
            share * 100.0
        );
    }
    // Not a short loop: no 4-second stretch resembles another (normalised correlation).
    let seg = 4 * rate as usize;
    let segments: Vec<&[i16]> = x.chunks(seg).collect();
    for i in 0..segments.len() {
        for j in i + 1..segments.len() {
            let (a, b) = (segments[i], segments[j]);
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            let corr = dot / (rms(a) * rms(b) * seg as f64);
            assert!(
                corr.abs() < 0.5,
                "segments {i} and {j} correlate at {corr:.2}"
            );
        }
    }
    // Several distinct pitches lead over the piece (a melody, chords changing): the
    // strongest equal-tempered note in each half second.
    let notes = || (40..=96).map(|n| 440.0 * 2f64.powf((f64::from(n) - 69.0) / 12.0));
    let leaders: std::collections::BTreeSet<u32> = x
        .chunks(rate as usize / 2)
        .map(|w| signal::dominant(w, rate, notes()).0.round() as u32)
        .collect();
    assert!(
        leaders.len() >= 8,
        "only {} leading pitches: {leaders:?}",
        leaders.len()
    );
}

#[test]
fn default_moh_at_wideband_and_fullband_rates() {
    check_moh(48_000);
}
