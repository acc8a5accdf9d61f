//! Resampler quality: a tone keeps its frequency and level through 8k→48k→8k, the
//! downsampler does not alias what lies above the new Nyquist frequency, and streaming in
//! 20 ms frames gives the same samples as one big call (no clicks at frame joins).

use switchboard_media::resample::Resampler;

fn sine(rate: u32, freq: f64, amplitude: f64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|n| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / rate as f64).sin()).round()
                as i16
        })
        .collect()
}

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

fn db(ratio: f64) -> f64 {
    20.0 * ratio.log10()
}

/// Amplitude of the `freq` component (Goertzel), in sample units.
fn goertzel(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.sqrt() / samples.len() as f64
}

/// Frequency by counting rising zero crossings, interpolated between samples.
fn zero_crossing_frequency(samples: &[i16], rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for n in 1..samples.len() {
        let (a, b) = (f64::from(samples[n - 1]), f64::from(samples[n]));
        if a < 0.0 && b >= 0.0 {
            crossings.push(n as f64 - 1.0 + a / (a - b));
        }
    }
    let periods = (crossings.len() - 1) as f64;
    periods * rate as f64 / (crossings[crossings.len() - 1] - crossings[0])
}

fn in_frames(resampler: &mut Resampler, input: &[i16], frame: usize) -> Vec<i16> {
    input
        .chunks(frame)
        .flat_map(|chunk| resampler.process(chunk))
        .collect()
}

#[test]
fn round_trip_8k_48k_8k_keeps_a_1khz_tone() {
    let input = sine(8000, 1000.0, 10000.0, 8000);
    let mut up = Resampler::new(8000, 48000);
    let mut down = Resampler::new(48000, 8000);
    let wide = in_frames(&mut up, &input, 160);
    assert_eq!(wide.len(), 48000);
    let output = in_frames(&mut down, &wide, 960);
    assert_eq!(output.len(), 8000);

    // Skip the start-up (filter delay and step response).
    let steady = &output[800..];
    let frequency = zero_crossing_frequency(steady, 8000);
    assert!((frequency - 1000.0).abs() < 1.0, "frequency {frequency}");
    let level = db(rms(steady) / rms(&input[800..]));
    assert!(level.abs() < 0.5, "level change {level:.2} dB");
    let wide_level = db(rms(&wide[4800..]) / rms(&input[800..]));
    assert!(
        wide_level.abs() < 0.5,
        "48 kHz level change {wide_level:.2} dB"
    );
}

#[test]
fn passband_is_flat_across_the_telephone_band() {
    for freq in [300.0, 1000.0, 2000.0, 3000.0, 3400.0] {
        let input = sine(48000, freq, 10000.0, 48000);
        let mut down = Resampler::new(48000, 8000);
        let output = in_frames(&mut down, &input, 960);
        let gain = db(goertzel(&output[800..], 8000, freq) / 10000.0);
        assert!(gain.abs() < 0.5, "{freq} Hz: {gain:.2} dB");
    }
}

#[test]
fn downsampling_48k_to_8k_does_not_alias_6khz() {
    // 6 kHz would fold to 2 kHz at 8 kHz.
    let input = sine(48000, 6000.0, 20000.0, 48000);
    let mut down = Resampler::new(48000, 8000);
    let output = in_frames(&mut down, &input, 960);
    let steady = &output[800..];
    let alias = db(goertzel(steady, 8000, 2000.0) / 20000.0);
    assert!(alias < -40.0, "alias at 2 kHz: {alias:.1} dB");
    let total = db(rms(steady) / rms(&input));
    assert!(total < -40.0, "residual {total:.1} dB");
}

#[test]
fn downsampling_attenuates_just_above_nyquist() {
    for (freq, alias) in [(4500.0, 3500.0), (5000.0, 3000.0)] {
        let input = sine(48000, freq, 20000.0, 48000);
        let mut down = Resampler::new(48000, 8000);
        let output = in_frames(&mut down, &input, 960);
        let level = db(goertzel(&output[800..], 8000, alias) / 20000.0);
        assert!(
            level < -40.0,
            "{freq} Hz folds to {alias} Hz at {level:.1} dB"
        );
    }
}

#[test]
fn upsampling_leaves_no_images() {
    // A 1 kHz tone at 8 kHz has images at 7, 9, 15, 17 kHz... after naive upsampling.
    let input = sine(8000, 1000.0, 20000.0, 8000);
    let mut up = Resampler::new(8000, 48000);
    let output = in_frames(&mut up, &input, 160);
    for image in [7000.0, 9000.0, 15000.0, 17000.0] {
        let level = db(goertzel(&output[4800..], 48000, image) / 20000.0);
        assert!(level < -60.0, "image at {image} Hz: {level:.1} dB");
    }
}

#[test]
fn frame_boundaries_do_not_matter() {
    for (from, to, frame) in [
        (8000, 48000, 160),
        (48000, 8000, 960),
        (44100, 8000, 882),
        (11025, 16000, 220),
    ] {
        let input = sine(from, 440.0, 12000.0, from as usize / 2);
        let whole = Resampler::new(from, to).process(&input);
        let mut framed = Resampler::new(from, to);
        let mut pieces = in_frames(&mut framed, &input, frame);
        // Odd chunk sizes as well.
        let mut odd = Resampler::new(from, to);
        let mut odd_out = Vec::new();
        let mut rest = &input[..];
        let mut size = 1;
        while !rest.is_empty() {
            let n = size.min(rest.len());
            odd_out.extend(odd.process(&rest[..n]));
            rest = &rest[n..];
            size = size * 7 % 193 + 1;
        }
        pieces.truncate(whole.len());
        assert_eq!(pieces, whole, "{from}→{to}");
        assert_eq!(odd_out, whole, "{from}→{to} odd chunks");
    }
}

#[test]
fn wav_prompt_rates_convert_with_the_tone_intact() {
    for from in [11025, 22050, 44100] {
        for to in [8000, 16000, 48000] {
            let input = sine(from, 1000.0, 10000.0, from as usize);
            let mut r = Resampler::new(from, to);
            let output = in_frames(&mut r, &input, from as usize / 50);
            // One second in, one second out, less at most a sample of carried phase.
            assert!(
                (output.len() as i64 - to as i64).abs() <= 1,
                "{}",
                output.len()
            );
            let steady = &output[to as usize / 10..];
            let frequency = zero_crossing_frequency(steady, to);
            assert!((frequency - 1000.0).abs() < 1.0, "{from}→{to}: {frequency}");
            let level = db(rms(steady) / rms(&input[from as usize / 10..]));
            assert!(level.abs() < 0.5, "{from}→{to}: {level:.2} dB");
        }
    }
}
