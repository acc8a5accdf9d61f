//! In-band DTMF through generator → detector at 8 and 48 kHz, in noise, and the negative
//! cases a contact center meets (hold tones, speech, silence). Deterministic: the noise
//! comes from a seeded generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_media::dtmf::{generate_digit, DtmfDigit, InbandDetector};
use switchboard_media::AudioFrame;

const ALL: &str = "0123456789*#ABCD";

/// Plays `digits` (`on` ms each, `off` ms apart) in 20 ms frames, optional white noise
/// of `noise_dbfs`, and returns what the detector reports.
fn run(
    rate: u32,
    digits: &str,
    on: u32,
    off: u32,
    level: f32,
    noise_dbfs: Option<f32>,
) -> Vec<DtmfDigit> {
    let mut audio = Vec::new();
    for d in digits.chars() {
        audio.extend(generate_digit(rate, d, on, level).samples);
        audio.extend(AudioFrame::silence(rate, off).samples);
    }
    audio.extend(AudioFrame::silence(rate, 100).samples);
    if let Some(db) = noise_dbfs {
        add_noise(&mut audio, db, 4733);
    }
    detect(rate, &audio)
}

fn add_noise(audio: &mut [i16], dbfs: f32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Uniform noise with RMS = 10^(dbfs/20) full scale (uniform RMS = peak / sqrt 3).
    let peak = 32767.0 * 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
    for s in audio.iter_mut() {
        let n = rng.gen_range(-peak..=peak);
        *s = (f32::from(*s) + n).clamp(-32768.0, 32767.0) as i16;
    }
}

fn detect(rate: u32, audio: &[i16]) -> Vec<DtmfDigit> {
    let mut det = InbandDetector::new(rate);
    let mut out = Vec::new();
    for chunk in audio.chunks(rate as usize / 50) {
        out.extend(det.feed(&AudioFrame::new(rate, chunk.to_vec())));
    }
    out.extend(det.finish());
    out
}

fn digits(found: &[DtmfDigit]) -> String {
    found.iter().map(|d| d.digit).collect()
}

#[test]
fn all_digits_at_8k() {
    let found = run(8000, ALL, 100, 100, -10.0, None);
    assert_eq!(digits(&found), ALL);
    for d in &found {
        assert!((75..=125).contains(&d.duration_ms), "{d:?}");
    }
}

#[test]
fn all_digits_at_48k_and_16k() {
    assert_eq!(digits(&run(48_000, ALL, 100, 100, -10.0, None)), ALL);
    assert_eq!(digits(&run(16_000, ALL, 80, 60, -10.0, None)), ALL);
}

#[test]
fn minimum_timing_40_on_40_off() {
    assert_eq!(
        digits(&run(8000, "1234567890", 40, 40, -10.0, None)),
        "1234567890"
    );
    assert_eq!(digits(&run(48_000, "#*0", 40, 40, -10.0, None)), "#*0");
}

#[test]
fn too_short_tones_are_rejected() {
    assert_eq!(digits(&run(8000, "5555", 15, 100, -10.0, None)), "");
    assert_eq!(digits(&run(48_000, "5555", 15, 100, -10.0, None)), "");
}

#[test]
fn repeated_digit_with_pauses_counts_each_press() {
    assert_eq!(digits(&run(8000, "0000", 60, 60, -10.0, None)), "0000");
}

#[test]
fn digits_in_noise() {
    // 20 dB SNR per tone.
    assert_eq!(digits(&run(8000, ALL, 80, 80, -12.0, Some(-32.0))), ALL);
    assert_eq!(digits(&run(48_000, ALL, 80, 80, -12.0, Some(-32.0))), ALL);
}

#[test]
fn twist_within_limits_is_accepted_and_beyond_rejected() {
    let rate = 8000;
    let tone = |f: f32, dbfs: f32| -> Vec<f32> {
        let a = 32767.0 * 10f32.powf(dbfs / 20.0);
        (0..800)
            .map(|i| a * (2.0 * std::f32::consts::PI * f * i as f32 / rate as f32).sin())
            .collect()
    };
    let mix = |row_db: f32, col_db: f32| -> Vec<i16> {
        let mut v: Vec<i16> = tone(770.0, row_db)
            .iter()
            .zip(tone(1336.0, col_db))
            .map(|(a, b)| (a + b) as i16)
            .collect();
        v.extend(vec![0; 800]);
        v
    };
    assert_eq!(digits(&detect(rate, &mix(-10.0, -16.0))), "5"); // 6 dB normal twist
    assert_eq!(digits(&detect(rate, &mix(-13.0, -10.0))), "5"); // 3 dB reverse twist
    assert_eq!(digits(&detect(rate, &mix(-10.0, -20.0))), ""); // 10 dB
    assert_eq!(digits(&detect(rate, &mix(-16.0, -10.0))), ""); // 6 dB reverse
}

#[test]
fn one_kilohertz_tone_is_not_a_digit() {
    for rate in [8000u32, 48_000] {
        let audio: Vec<i16> = (0..rate * 3)
            .map(|i| {
                (16_000.0 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / rate as f32).sin())
                    as i16
            })
            .collect();
        assert_eq!(detect(rate, &audio), []);
    }
}

#[test]
fn silence_and_low_level_digits_are_not_digits() {
    assert_eq!(detect(8000, &AudioFrame::silence(8000, 2000).samples), []);
    assert_eq!(digits(&run(8000, "123", 100, 100, -50.0, None)), "");
}

#[test]
fn speech_like_signal_gives_no_digits() {
    // Voiced speech stand-in: a gliding fundamental (90-260 Hz) with harmonics shaped by
    // two moving formants, syllable-rate envelope, and breath noise; 20 seconds.
    let rate = 8000u32;
    let mut rng = StdRng::seed_from_u64(0x5EEC);
    let mut audio = Vec::new();
    let mut phase = 0f32;
    let (mut f1, mut f2) = (600f32, 1500f32);
    for syllable in 0..100 {
        let f0_start = rng.gen_range(90.0..260.0);
        let f0_end = rng.gen_range(90.0..260.0);
        let (t1, t2) = (rng.gen_range(300.0..900.0), rng.gen_range(900.0..2500.0));
        let len = rate as usize / 5;
        for i in 0..len {
            let x = i as f32 / len as f32;
            let f0: f32 = f0_start + (f0_end - f0_start) * x;
            f1 += (t1 - f1) * 0.001;
            f2 += (t2 - f2) * 0.001;
            phase += 2.0 * std::f32::consts::PI * f0 / rate as f32;
            let mut v = 0.0;
            let mut h = 1;
            while (h as f32) * f0 < 3400.0 {
                let fh = h as f32 * f0;
                let gain = 1.0 / (1.0 + ((fh - f1) / 150.0).powi(2))
                    + 0.7 / (1.0 + ((fh - f2) / 200.0).powi(2))
                    + 0.02;
                v += gain * (phase * h as f32).sin();
                h += 1;
            }
            let envelope = (std::f32::consts::PI * x).sin();
            let noise = rng.gen_range(-0.05..0.05);
            audio.push(((v * envelope * 0.25 + noise) * 8000.0).clamp(-32768.0, 32767.0) as i16);
        }
        if syllable % 7 == 6 {
            audio.extend(AudioFrame::silence(rate, 150).samples);
        }
    }
    let found = detect(rate, &audio);
    assert_eq!(found, [], "false digits in speech");
    // And the same at 48 kHz via sample repetition is irrelevant; noise alone:
    let mut noise = vec![0i16; 48_000 * 2];
    add_noise(&mut noise, -20.0, 1);
    assert_eq!(detect(48_000, &noise), []);
}
