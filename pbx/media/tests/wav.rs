//! The WAV reader against files of every format built in memory, the streaming writer by
//! round trip, and malformed files (each rejected with an error naming the problem).

#[path = "wav_build/mod.rs"]
mod wav_build;

use switchboard_media::wav::{read_wav, write_wav, Channels, Clip, WavError, WavWriter};
use wav_build::{all_formats, chunk, riff, signal, wav, Fmt};

#[test]
fn every_format_round_trips() {
    let samples = signal(1001);
    for rate in [8000, 11025, 16000, 22050, 44100, 48000, 96000] {
        for (name, file, expected) in all_formats(rate, &samples) {
            let clip = read_wav(&file).unwrap_or_else(|e| panic!("{name} at {rate}: {e}"));
            assert_eq!(clip.rate, rate, "{name}");
            assert_eq!(clip.samples, expected, "{name} at {rate}");
        }
    }
}

#[test]
fn stereo_is_mixed_to_mono() {
    let interleaved = [1000, 3000, -20000, -20000, 32767, 32767, -32768, 0, 5, -6];
    let clip = read_wav(&write_wav(8000, Channels::Stereo, &interleaved)).unwrap();
    assert_eq!(clip.samples, vec![2000, -20000, 32767, -16384, 0]);
    // One channel silent: the other at half level (a mix, not a channel pick).
    let f = wav(
        &Fmt::new(3, 2, 16000, 32),
        &[0.5f32.to_le_bytes(), 0f32.to_le_bytes()].concat(),
    );
    assert_eq!(read_wav(&f).unwrap().samples, vec![8192]);
}

#[test]
fn streaming_writer_matches_one_shot_writer() {
    let samples = signal(999);
    for channels in [Channels::Mono, Channels::Stereo] {
        let mut w = WavWriter::new(22050, channels);
        let mut file = w.header_placeholder().to_vec();
        for piece in samples.chunks(100) {
            file.extend(w.push_frames(piece));
        }
        let frames = samples.len() as u64 / u64::from(channels.count());
        assert_eq!(w.frames_written(), frames);
        // Readable before the header is finalised (a recording whose writer died)...
        let early = read_wav(&file).unwrap();
        // ...and identical to the one-shot file once it is.
        file[..44].copy_from_slice(&w.finish_header(frames));
        let data_len = frames as usize * 2 * usize::from(channels.count());
        let one_shot = write_wav(22050, channels, &samples);
        assert!(
            file[..44 + data_len] == one_shot[..44 + data_len],
            "{channels:?}"
        );
        let clip = read_wav(&file).unwrap();
        assert_eq!(clip.rate, 22050);
        assert_eq!(clip.samples.len() as u64, frames);
        assert_eq!(early.samples, clip.samples);
    }
}

#[test]
fn mono_writer_round_trip_is_exact() {
    let samples = signal(4000);
    let clip = read_wav(&write_wav(44100, Channels::Mono, &samples)).unwrap();
    assert_eq!(clip, Clip::new(44100, samples));
}

#[test]
fn unknown_chunks_and_padding_are_skipped() {
    let fmt = Fmt::new(1, 1, 8000, 16);
    let data: Vec<u8> = [1i16, -2, 3].iter().flat_map(|s| s.to_le_bytes()).collect();
    let file = riff(&[
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00"), // odd size, padded
        chunk(b"fmt ", &fmt.chunk_body()),
        chunk(b"fact", &3u32.to_le_bytes()),
        chunk(b"data", &data),
        chunk(b"cue ", &[0; 4]),
    ]);
    assert_eq!(read_wav(&file).unwrap().samples, vec![1, -2, 3]);
}

#[test]
fn trailing_partial_frame_is_dropped() {
    let file = wav(&Fmt::new(1, 2, 8000, 16), &[1, 0, 1, 0, 9, 9, 9]);
    assert_eq!(read_wav(&file).unwrap().samples, vec![1]);
}

#[test]
fn wrong_riff_size_is_tolerated() {
    let mut file = write_wav(8000, Channels::Mono, &[7, 8]);
    file[4..8].copy_from_slice(&12345678u32.to_le_bytes());
    assert_eq!(read_wav(&file).unwrap().samples, vec![7, 8]);
}

fn error_of(file: &[u8]) -> WavError {
    read_wav(file).expect_err("must be rejected")
}

#[test]
fn malformed_files_are_named() {
    let good = write_wav(8000, Channels::Mono, &signal(100));
    assert_eq!(error_of(b""), WavError::NotRiff);
    assert_eq!(error_of(b"RIFF"), WavError::NotRiff);
    assert_eq!(error_of(b"OggS\0\0\0\0WAVEfmt "), WavError::NotRiff);
    let mut avi = good.clone();
    avi[8..12].copy_from_slice(b"AVI ");
    assert_eq!(error_of(&avi), WavError::NotWave("AVI ".into()));

    // Truncated anywhere: a named error, never a panic.
    for len in 0..good.len() {
        let e = error_of(&good[..len]);
        let expected_kind = match len {
            0..=11 => matches!(e, WavError::NotRiff),
            12..=35 => matches!(e, WavError::MissingFormat | WavError::TruncatedChunk { .. }),
            36..=43 => matches!(e, WavError::MissingData),
            _ => matches!(e, WavError::TruncatedData { declared: 200, .. }),
        };
        assert!(expected_kind, "length {len}: {e:?}");
    }

    let data_only = riff(&[chunk(b"data", &[0; 4])]);
    assert_eq!(error_of(&data_only), WavError::MissingFormat);
    let fmt_only = riff(&[chunk(b"fmt ", &Fmt::new(1, 1, 8000, 16).chunk_body())]);
    assert_eq!(error_of(&fmt_only), WavError::MissingData);
    let short_fmt = riff(&[chunk(b"fmt ", &[1, 0, 1, 0]), chunk(b"data", &[])]);
    assert_eq!(error_of(&short_fmt), WavError::FormatTooShort(4));
}

#[test]
fn unsupported_formats_are_named() {
    let adpcm = wav(&Fmt::new(2, 1, 8000, 4), &[0; 8]);
    let e = error_of(&adpcm);
    assert_eq!(e, WavError::UnsupportedFormat(2));
    assert!(
        e.to_string().contains("unsupported format code 0x0002"),
        "{e}"
    );
    assert_eq!(
        error_of(&wav(&Fmt::new(0x55, 1, 8000, 0), &[])),
        WavError::UnsupportedFormat(0x55)
    );
    assert!(matches!(
        error_of(&wav(&Fmt::new(1, 1, 8000, 12), &[0; 4])),
        WavError::UnsupportedBits { bits: 12, .. }
    ));
    assert!(matches!(
        error_of(&wav(&Fmt::new(3, 1, 8000, 16), &[0; 4])),
        WavError::UnsupportedBits { bits: 16, .. }
    ));
    assert!(matches!(
        error_of(&wav(&Fmt::new(7, 1, 8000, 16), &[0; 4])),
        WavError::UnsupportedBits { bits: 16, .. }
    ));
    assert_eq!(
        error_of(&wav(&Fmt::new(1, 0, 8000, 16), &[])),
        WavError::UnsupportedChannels(0)
    );
    assert_eq!(
        error_of(&wav(&Fmt::new(1, 9, 8000, 16), &[])),
        WavError::UnsupportedChannels(9)
    );
    assert_eq!(
        error_of(&wav(&Fmt::new(1, 1, 0, 16), &[])),
        WavError::UnsupportedRate(0)
    );
    assert_eq!(
        error_of(&wav(&Fmt::new(1, 1, u32::MAX, 16), &[])),
        WavError::UnsupportedRate(u32::MAX)
    );
    let mut ext = Fmt::new(1, 1, 8000, 16);
    ext.extensible = Some((16, 1));
    let mut file = wav(&ext, &[0; 4]);
    // Corrupt the GUID tail (fmt body starts at 20; the tail at 20 + 26).
    file[20 + 30] ^= 0xFF;
    assert_eq!(error_of(&file), WavError::UnknownSubFormat);
}

#[test]
fn wrong_sizes_are_rejected_without_huge_allocations() {
    let good = write_wav(8000, Channels::Mono, &signal(10));
    // Data chunk claiming 4 GiB - 2 in a 64-byte file.
    let mut huge = good.clone();
    huge[40..44].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    assert_eq!(
        error_of(&huge),
        WavError::TruncatedData {
            declared: 0xFFFF_FFFE,
            available: 20
        }
    );
    // fmt chunk claiming more than the file.
    let mut fmt = good.clone();
    fmt[16..20].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    assert!(
        matches!(error_of(&fmt), WavError::TruncatedChunk { ref chunk, .. } if chunk == "fmt ")
    );
    // Block align that does not match channels × width.
    let mut align = good.clone();
    align[32..34].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(
        error_of(&align),
        WavError::BadBlockAlign {
            declared: 3,
            channels: 1,
            bits: 16
        }
    );
    // The streaming size reads to the end, bounded by the bytes present.
    let mut streaming = good.clone();
    streaming[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(read_wav(&streaming).unwrap().samples.len(), 10);
}
