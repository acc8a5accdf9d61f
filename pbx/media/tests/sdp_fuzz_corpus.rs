//! Deterministic stand-in for the `sdp` cargo-fuzz target (which needs nightly): the shared
//! body runs over seeded pseudo-random mutations of the example descriptions in
//! `tests/sdp_data/`. A failure prints the seed, file and iteration, so it reproduces.
//! `SDP_FUZZ_ITERS=n` runs n mutations per file (and `SDP_FUZZ_SEED` another seed).

#[allow(dead_code)] // each test file uses some of the bodies
#[path = "common/fuzz_bodies.rs"]
mod fuzz_bodies;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdp_data");
const SEED: u64 = 0x5d9_4566;
/// 14 files, each as LF and CRLF, × 150 = 4,200 inputs per run.
const PER_FILE: usize = 150;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(DIR)
        .expect("corpus dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sdp"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus went missing: {files:?}");
    let mut inputs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        inputs.push(text.clone().into_bytes());
        inputs.push(text.replace('\n', "\r\n").into_bytes());
    }
    inputs
}

/// Bytes that matter to the SDP grammar, so mutations hit delimiters often.
const INTERESTING: &[u8] = b"\r\n =:/ 0123456789vosicbtrzkamIP4P6\x00\xff\xc3";

/// Whole lines worth splicing in: structure the byte mutations rarely produce.
const LINES: &[&str] = &[
    "m=audio 0 RTP/AVP 0\n",
    "m=audio 5000 RTP/SAVP 0 8\n",
    "m=video 5002 RTP/AVP 31\n",
    "m=audio 5004 RTP/AVP 96 101\n",
    "a=rtpmap:96 opus/48000/2\n",
    "a=rtpmap:101 telephone-event/48000\n",
    "a=rtpmap:0 PCMA/8000\n",
    "a=fmtp:96 stereo=1\n",
    "a=sendonly\n",
    "a=inactive\n",
    "a=rtcp:9 IN IP6 ::\n",
    "c=IN IP4 0.0.0.0\n",
    "c=IN IP6 ::1\n",
    "t=0 0\n",
    "r=7d 1h 0 25h\n",
    "b=AS:99999999999999999999\n",
    "x=unknown\n",
    "v=0\n",
];

/// The shared text mutations, plus one of SDP's own: a whole line inserted at a line
/// boundary (duplicate or misplaced `c=`, `m=`, `a=` lines).
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = switchboard_testkit::mutate_text(rng, input, other, INTERESTING);
    if rng.gen_range(0..4) == 0 {
        let line = LINES[rng.gen_range(0..LINES.len())].as_bytes();
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                out.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        let at = starts[rng.gen_range(0..starts.len())];
        out.splice(at..at, line.iter().copied());
    }
    out
}

#[test]
fn sdp_survives_mutations() {
    let corpus = corpus();
    let seed = env_or("SDP_FUZZ_SEED", SEED);
    let per_file = env_or("SDP_FUZZ_ITERS", PER_FILE);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut parsed = 0;
    for (f, file) in corpus.iter().enumerate() {
        fuzz_bodies::sdp(file);
        for n in 0..per_file {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let input = mutate(&mut rng, file, other);
            if switchboard_media::sdp::SessionDescription::parse(&input).is_ok() {
                parsed += 1;
            }
            let result = std::panic::catch_unwind(|| fuzz_bodies::sdp(&input));
            if result.is_err() {
                panic!(
                    "panic on file #{f} mutation #{n} (seed {seed}); input:\n{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
    // The mutations must not all be rejected outright, or the properties past parsing
    // would go untested.
    assert!(
        parsed * 5 >= corpus.len() * per_file,
        "only {parsed} mutated inputs parsed"
    );
}

#[test]
fn examples_satisfy_the_properties() {
    for file in corpus() {
        fuzz_bodies::sdp(&file);
    }
}
