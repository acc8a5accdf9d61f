//! Deterministic stand-in for the `wav` cargo-fuzz target (which needs nightly): the shared
//! body runs over seeded pseudo-random mutations of WAV files of every supported format,
//! built in memory. Mutations favour header fields (sizes, codes, counts set to 0, 1,
//! odd and huge values), which is where WAV readers go wrong. A failure prints the seed,
//! file and iteration, so it reproduces. `WAV_FUZZ_ITERS=n` runs n mutations per file (and
//! `WAV_FUZZ_SEED` another seed).

#[allow(dead_code)] // each test file uses some of the bodies
#[path = "common/fuzz_bodies.rs"]
mod fuzz_bodies;
#[path = "wav_build/mod.rs"]
mod wav_build;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wav_build::{all_formats, chunk, riff, signal, Fmt};

const SEED: u64 = 0x3a7e_0fe5;
/// About 30 files × 200 = 6,000 inputs per run.
const PER_FILE: usize = 200;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus() -> Vec<Vec<u8>> {
    let mut files: Vec<Vec<u8>> = Vec::new();
    for (rate, len) in [(8000, 7), (44_100, 40), (16_000, 0)] {
        files.extend(
            all_formats(rate, &signal(len))
                .into_iter()
                .map(|(_, f, _)| f),
        );
    }
    let fmt = Fmt::new(1, 2, 22_050, 16);
    files.push(riff(&[
        chunk(b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"),
        chunk(b"fmt ", &fmt.chunk_body()),
        chunk(b"data", &[1, 2, 3, 4, 5, 6, 7, 8]),
        chunk(b"id3 ", b"x"),
    ]));
    files
}

const FIELDS: [u32; 10] = [
    0,
    1,
    2,
    3,
    0xFFFE,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
    44_100,
];

fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..=3) {
        let len = out.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len >= 4 => {
                // A 32-bit header field (sizes, rates) set to an edge value.
                let i = rng.gen_range(0..len.min(80) - 3);
                let v = FIELDS[rng.gen_range(0..FIELDS.len())];
                out[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            2 if len >= 2 => {
                // A 16-bit field (format code, channels, block align, bits).
                let i = rng.gen_range(0..len.min(80) - 1);
                let v = FIELDS[rng.gen_range(0..FIELDS.len())] as u16;
                out[i..i + 2].copy_from_slice(&v.to_le_bytes());
            }
            3 if len > 0 => out.truncate(rng.gen_range(0..len)),
            4 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                out.drain(i..i + n);
            }
            5 if !other.is_empty() => {
                let i = rng.gen_range(0..other.len());
                let n = rng.gen_range(1..=(other.len() - i).min(64));
                let at = rng.gen_range(0..=out.len());
                out.splice(at..at, other[i..i + n].iter().copied());
            }
            _ => {
                let at = rng.gen_range(0..=out.len());
                let b: u8 = rng.gen();
                out.insert(at, b);
            }
        }
    }
    out
}

#[test]
fn wav_reader_survives_mutations() {
    let corpus = corpus();
    let seed = env_or("WAV_FUZZ_SEED", SEED);
    let per_file = env_or("WAV_FUZZ_ITERS", PER_FILE);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut count = 0;
    for (f, file) in corpus.iter().enumerate() {
        fuzz_bodies::wav(file);
        for n in 0..per_file {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let input = mutate(&mut rng, file, other);
            if std::panic::catch_unwind(|| fuzz_bodies::wav(&input)).is_err() {
                panic!("panic on file #{f} mutation #{n} (seed {seed}); input: {input:?}");
            }
            count += 1;
        }
    }
    assert!(count >= 30 * per_file);
}

#[test]
fn corpus_files_all_read() {
    for file in corpus() {
        switchboard_media::wav::read_wav(&file).unwrap();
    }
}
