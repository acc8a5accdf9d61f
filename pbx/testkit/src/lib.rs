//! Helpers that several crates' tests share. Only `[dev-dependencies]` may name this crate.
#![forbid(unsafe_code)]

use rand::rngs::StdRng;
use rand::Rng;

/// One to four random edits of a text protocol message (SIP, SDP): bit flips, inserted or
/// replaced `interesting` bytes (the grammar's delimiters), deletions, duplicated chunks
/// (repeated lines, doubled separators), truncation, a splice from `other`, and an
/// overlong number. The deterministic stand-in for a coverage-guided fuzzer on stable Rust.
pub fn mutate_text(rng: &mut StdRng, input: &[u8], other: &[u8], interesting: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let pick = |rng: &mut StdRng| interesting[rng.gen_range(0..interesting.len())];
    for _ in 0..rng.gen_range(1..=4) {
        let len = out.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let i = rng.gen_range(0..=len);
                let b = pick(rng);
                out.insert(i, b);
            }
            2 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                out.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] = pick(rng);
            }
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(64));
                let chunk = out[i..i + n].to_vec();
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, chunk);
            }
            5 if len > 0 => out.truncate(rng.gen_range(0..len)),
            6 if !other.is_empty() => {
                let i = rng.gen_range(0..other.len());
                let n = rng.gen_range(1..=(other.len() - i).min(128));
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, other[i..i + n].iter().copied());
            }
            _ => {
                if let Some(i) = out.iter().position(|b| b.is_ascii_digit()) {
                    out.splice(i..i, b"99999999999999999999".iter().copied());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mutations_are_deterministic_per_seed_and_change_the_input() {
        let input = b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n";
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| mutate_text(&mut rng, input, b"other", b":;\r\n"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert!(run(7).iter().any(|m| m.as_slice() != input.as_slice()));
    }
}
