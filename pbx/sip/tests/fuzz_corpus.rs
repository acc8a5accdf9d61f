//! Deterministic stand-in for the cargo-fuzz targets (which need nightly): the three fuzz
//! bodies run over seeded pseudo-random mutations of the RFC 4475 corpus. A failure prints
//! the seed and iteration, so it reproduces exactly.

mod common;

use common::fuzz_bodies;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/rfc4475");
const SEED: u64 = 0x5199_4475;
/// Mutations per corpus file and target: 50 files × 80 = 4,000 inputs per target.
/// `SIP_FUZZ_ITERS=n` runs n per file instead (and `SIP_FUZZ_SEED` another seed), for a
/// longer search on stable Rust.
const PER_FILE: usize = 80;

fn per_file() -> usize {
    std::env::var("SIP_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PER_FILE)
}

fn seed() -> u64 {
    std::env::var("SIP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEED)
}

fn corpus() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(DIR)
        .expect("corpus dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 50);
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Bytes that matter to the SIP grammar, so mutations hit delimiters often.
const INTERESTING: &[u8] = b"\r\n \t:;,=<>\"\\%@?/[]0123456789\x00\x7f\xff\xc3SIP";

fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    switchboard_testkit::mutate_text(rng, input, other, INTERESTING)
}

fn run(target: fn(&[u8]), salt: u64, pieces: impl Fn(&[u8]) -> Vec<Vec<u8>>) {
    let corpus = corpus();
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed ^ salt);
    let mut count = 0;
    for (f, file) in corpus.iter().enumerate() {
        let inputs = pieces(file);
        target(file);
        for n in 0..per_file() {
            let base = &inputs[n % inputs.len()];
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let input = mutate(&mut rng, base, other);
            let result = std::panic::catch_unwind(|| target(&input));
            if result.is_err() {
                panic!(
                    "panic on file #{f} mutation #{n} (seed {seed}^{salt}); input:\n{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            count += 1;
        }
    }
    assert!(count >= 50 * per_file());
}

#[test]
fn datagram_parser_survives_mutations() {
    run(fuzz_bodies::sip_datagram, 1, |f| vec![f.to_vec()]);
}

#[test]
fn stream_parser_survives_mutations() {
    // Two copies back to back, so framing across message boundaries is exercised.
    run(fuzz_bodies::sip_stream, 2, |f| {
        let mut two = f.to_vec();
        two.extend_from_slice(b"\r\n\r\n");
        two.extend_from_slice(f);
        vec![two]
    });
}

#[test]
fn value_parsers_survive_mutations() {
    // Feed header values (the text after the colon) and the Request-URI.
    run(fuzz_bodies::sip_uri, 3, |f| {
        let text = String::from_utf8_lossy(f);
        let mut pieces: Vec<Vec<u8>> = text
            .lines()
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':').map(|(_, v)| v.trim().as_bytes().to_vec()))
            .filter(|v| !v.is_empty())
            .collect();
        if let Some(uri) = text.lines().next().and_then(|l| l.split(' ').nth(1)) {
            pieces.push(uri.as_bytes().to_vec());
        }
        if pieces.is_empty() {
            pieces.push(b"sip:alice@atlanta.com".to_vec());
        }
        pieces
    });
}

#[test]
fn digest_credentials_parser_survives_mutations() {
    // Authorization values as real clients send them (RFC 7616 §3.9.1, SIPp, baresip), and
    // whatever authorization headers the corpus carries.
    run(fuzz_bodies::digest_credentials, 4, |f| {
        let mut pieces: Vec<Vec<u8>> = vec![
            br#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#.to_vec(),
            br#"Digest username="101",realm="switchboard.local",cnonce="6b8b4567",nc=00000001,qop=auth,uri="sip:127.0.0.1:5060",nonce="00000000",response="5472d7e178e5062069fca158049e4f21",algorithm=MD5"#.to_vec(),
        ];
        let text = String::from_utf8_lossy(f);
        for line in text.lines() {
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("authorization")
                    || name.trim().eq_ignore_ascii_case("proxy-authorization")
                {
                    pieces.push(value.trim().as_bytes().to_vec());
                }
            }
        }
        pieces
    });
}
