//! Measurements shared by the prompt, tone, player and recorder tests (included with
//! `#[path]` so that each test binary compiles only this file).
#![allow(dead_code)] // each test binary uses some of these

/// Amplitude of `freq` in `x` by the Goertzel algorithm, scaled so that a sine of peak
/// amplitude A at `freq` measures A (for windows holding a whole number of cycles).
pub fn goertzel(x: &[i16], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / x.len() as f64
}

pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

pub fn peak(x: &[i16]) -> i32 {
    x.iter().map(|&v| i32::from(v).abs()).max().unwrap_or(0)
}

/// A sine of peak amplitude `amp`.
pub fn sine(rate: u32, freq: f64, amp: f64, len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            (amp * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
        })
        .collect()
}

/// The frequency in `candidates` with the most energy in `x`, and its amplitude.
pub fn dominant(x: &[i16], rate: u32, candidates: impl Iterator<Item = f64>) -> (f64, f64) {
    candidates
        .map(|f| (f, goertzel(x, rate, f)))
        .fold((0.0, -1.0), |best, c| if c.1 > best.1 { c } else { best })
}

/// Runs of nonzero ("on") and zero ("off") samples: (is_on, length).
pub fn runs(x: &[i16]) -> Vec<(bool, usize)> {
    let mut out: Vec<(bool, usize)> = Vec::new();
    for &v in x {
        let on = v != 0;
        match out.last_mut() {
            Some((o, n)) if *o == on => *n += 1,
            _ => out.push((on, 1)),
        }
    }
    out
}
