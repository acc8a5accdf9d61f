//! ITU-T G.711 μ-law (PCMU) and A-law (PCMA) companding between 16-bit linear PCM and
//! 8-bit codes. Bit-exact with the ITU-T G.191 Software Tool Library (`g711.c`,
//! `ulaw_compress`/`alaw_compress`/`*_expand`), which is the normative reference.
//!
//! Decoding is a 256-entry table built at compile time. Encoding finds the segment with
//! `leading_zeros` instead of a loop over the segment boundaries, so each sample costs a
//! handful of integer operations and no data-dependent branches.
//!
//! One deliberate difference from the widespread Sun Microsystems `g711.c`: for negative
//! input μ-law uses the ones' complement (`!x`, as G.191 does), not the negation (`-x`).
//! The two agree on every sample except negative values whose magnitude sits exactly on a
//! decision boundary, e.g. `-1` is `0x7F` here (G.191) and `0x7E` in the Sun code. A-law
//! and both decoders are identical in the two references.

/// μ-law code of digital silence (positive zero).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code of digital silence (positive zero; decodes to +8).
pub const ALAW_SILENCE: u8 = 0xD5;

/// μ-law bias, in the 14-bit domain (G.711 table 2a: 33).
const ULAW_BIAS: i32 = 33;
/// Largest biased 14-bit μ-law magnitude (G.191 limits `absno` to 0x1FFF).
const ULAW_MAX: i32 = 0x1FFF;

const fn ulaw_expand(u: u8) -> i16 {
    // G.191 `ulaw_expand`: bits are transmitted inverted.
    let inv = !u;
    let exponent = ((inv >> 4) & 0x07) as i32;
    let mantissa = (inv & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + 4 * ULAW_BIAS) << exponent) - 4 * ULAW_BIAS;
    if u & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn alaw_expand(a: u8) -> i16 {
    // G.191 `alaw_expand`: even bits are inverted on the line (xor 0x55).
    let ix = ((a ^ 0x55) & 0x7F) as i32;
    let exponent = ix >> 4;
    let mut mantissa = ix & 0x0F;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 8;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    if a & 0x80 != 0 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

const fn build_ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ulaw_expand(i as u8);
        i += 1;
    }
    table
}

const fn build_alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = alaw_expand(i as u8);
        i += 1;
    }
    table
}

static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_table();
static ALAW_TO_LINEAR: [i16; 256] = build_alaw_table();

/// Number of significant bits of `v` (0 for 0).
#[inline(always)]
fn bit_length(v: u32) -> u32 {
    32 - v.leading_zeros()
}

/// Encodes one 16-bit linear sample to μ-law (G.191 `ulaw_compress`).
#[inline]
pub fn linear_to_ulaw(s: i16) -> u8 {
    // `sign` is 0 for s >= 0 and -1 otherwise; `s ^ sign` is then `s` or `!s` (ones'
    // complement), so the negative half mirrors the positive one around -0.5.
    let sign = s >> 15;
    let magnitude = i32::from(s ^ sign);
    let biased = ((magnitude >> 2) + ULAW_BIAS).min(ULAW_MAX) as u32;
    // Segment = position of the leading one above bit 5 (biased >= 33 always has bit 5).
    let exponent = bit_length(biased >> 6);
    let mantissa = (biased >> (exponent + 1)) & 0x0F;
    let code = ((exponent << 4) | mantissa) as u8;
    // Positive: set the sign bit and invert all (0xFF); negative: invert the 7 others.
    let invert = 0xFFu8 ^ ((sign as u8) & 0x80);
    code ^ invert
}

/// Decodes one μ-law code to 16-bit linear (range ±32124).
#[inline]
pub fn ulaw_to_linear(u: u8) -> i16 {
    ULAW_TO_LINEAR[usize::from(u)]
}

/// Encodes one 16-bit linear sample to A-law (G.191 `alaw_compress`).
#[inline]
pub fn linear_to_alaw(s: i16) -> u8 {
    let sign = s >> 15;
    // 12-bit magnitude, ones' complement for negative input (G.191).
    let magnitude = (i32::from(s ^ sign) >> 4) as u32;
    // Segment 0 and 1 share a step size; above that the exponent is the bit length - 4.
    let exponent = bit_length(magnitude).max(4) - 4;
    let shift = exponent.max(1) - 1;
    let mantissa = (magnitude >> shift) & 0x0F;
    let code = ((exponent << 4) | mantissa) as u8;
    let sign_bit = !(sign as u8) & 0x80;
    (code | sign_bit) ^ 0x55
}

/// Decodes one A-law code to 16-bit linear (range ±32256).
#[inline]
pub fn alaw_to_linear(a: u8) -> i16 {
    ALAW_TO_LINEAR[usize::from(a)]
}

/// Encodes a buffer of linear PCM to μ-law, one byte per sample.
pub fn encode_ulaw(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| linear_to_ulaw(s)).collect()
}

/// Decodes μ-law bytes to linear PCM, one sample per byte.
pub fn decode_ulaw(data: &[u8]) -> Vec<i16> {
    data.iter().map(|&u| ulaw_to_linear(u)).collect()
}

/// Encodes a buffer of linear PCM to A-law, one byte per sample.
pub fn encode_alaw(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| linear_to_alaw(s)).collect()
}

/// Decodes A-law bytes to linear PCM, one sample per byte.
pub fn decode_alaw(data: &[u8]) -> Vec<i16> {
    data.iter().map(|&a| alaw_to_linear(a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal port of G.191 `ulaw_compress` (loop over segments), the oracle.
    fn g191_ulaw_compress(x: i16) -> u8 {
        let x = i32::from(x);
        let mut absno = if x < 0 {
            ((!x) >> 2) + 33
        } else {
            (x >> 2) + 33
        };
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high_nibble = 0x0008 - segno;
        let low_nibble = 0x000F - ((absno >> segno) & 0x000F);
        let mut out = (high_nibble << 4) | low_nibble;
        if x >= 0 {
            out |= 0x0080;
        }
        out as u8
    }

    /// Literal port of G.191 `alaw_compress`, the oracle.
    fn g191_alaw_compress(x: i16) -> u8 {
        let x = i32::from(x);
        let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
        if ix > 15 {
            let mut iexp = 1;
            while ix > 16 + 15 {
                ix >>= 1;
                iexp += 1;
            }
            ix -= 16;
            ix += iexp << 4;
        }
        if x >= 0 {
            ix |= 0x0080;
        }
        (ix ^ 0x0055) as u8
    }

    /// Literal port of the Sun `alaw2linear`/`ulaw2linear`, a second decoder oracle.
    fn sun_ulaw2linear(u: u8) -> i16 {
        let u = !u;
        let mut t = ((i32::from(u) & 0x0F) << 3) + 0x84;
        t <<= (i32::from(u) & 0x70) >> 4;
        (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
    }

    fn sun_alaw2linear(a: u8) -> i16 {
        let a = a ^ 0x55;
        let mut t = (i32::from(a) & 0x0F) << 4;
        let seg = (i32::from(a) & 0x70) >> 4;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => {
                t += 0x108;
                t <<= seg - 1;
            }
        }
        (if a & 0x80 != 0 { t } else { -t }) as i16
    }

    #[test]
    fn encoders_match_g191_for_every_sample() {
        for s in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(s), g191_ulaw_compress(s), "ulaw {s}");
            assert_eq!(linear_to_alaw(s), g191_alaw_compress(s), "alaw {s}");
        }
    }

    #[test]
    fn decoders_match_sun_reference_for_every_code() {
        for c in 0..=255u8 {
            assert_eq!(ulaw_to_linear(c), sun_ulaw2linear(c), "ulaw {c:#04x}");
            assert_eq!(alaw_to_linear(c), sun_alaw2linear(c), "alaw {c:#04x}");
        }
    }

    #[test]
    fn known_reference_pairs() {
        // Decoder values as in the published tables (G.191, Sun, FFmpeg pcm tables).
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x01), -31100);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x80), 5504);
        // Encoder: silence, extremes and the ones'-complement mirror.
        assert_eq!(linear_to_ulaw(0), ULAW_SILENCE);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(linear_to_ulaw(-1000), 0x4E);
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(linear_to_alaw(-1000), 0x7A);
    }

    #[test]
    fn all_codes_round_trip() {
        for c in 0..=255u8 {
            let want = if c == 0x7F { ULAW_SILENCE } else { c }; // μ-law has two zeros
            assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), want, "ulaw {c:#04x}");
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#04x}");
        }
    }

    #[test]
    fn quantisation_is_monotonic_and_close() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for s in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(s));
            let a = alaw_to_linear(linear_to_alaw(s));
            assert!(u >= prev_u && a >= prev_a, "monotonic at {s}");
            prev_u = u;
            prev_a = a;
            // Half the largest step (1024 for A-law segment 7, 1024 for μ-law) + clipping.
            assert!(
                (i32::from(u) - i32::from(s)).abs() <= 1024 + 644,
                "ulaw {s} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(s)).abs() <= 1024,
                "alaw {s} -> {a}"
            );
        }
    }

    #[test]
    fn buffers_and_silence() {
        let pcm = [0i16, 0, 0, 1000, -1000];
        assert_eq!(encode_ulaw(&pcm), [0xFF, 0xFF, 0xFF, 0xCE, 0x4E]);
        assert_eq!(encode_alaw(&pcm), [0xD5, 0xD5, 0xD5, 0xFA, 0x7A]);
        assert_eq!(decode_ulaw(&[0xFF; 4]), [0; 4]);
        assert_eq!(decode_alaw(&[0xD5; 2]), [8, 8]);
        assert!(encode_ulaw(&[]).is_empty());
        let pcm: Vec<i16> = (0..160).map(|i| (i * 400 - 32000) as i16).collect();
        assert_eq!(
            decode_ulaw(&encode_ulaw(&pcm)),
            pcm.iter()
                .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            decode_alaw(&encode_alaw(&pcm)),
            pcm.iter()
                .map(|&s| alaw_to_linear(linear_to_alaw(s)))
                .collect::<Vec<_>>()
        );
    }
}
