//! WAV (RIFF) prompts in, WAV recordings out, as bytes: the runtime reads and writes the
//! files. The reader accepts what admins are likely to upload (PCM 8/16/24/32-bit, IEEE
//! float 32/64, G.711 μ-law and A-law, WAVE_FORMAT_EXTENSIBLE, any channel count mixed to
//! mono, any sane rate) and names what is wrong otherwise; it must never panic and never
//! allocate more than the input justifies. The writer is 16-bit PCM, streamed in pieces.
//!
//! Why not `hound` (well kept, and it would work in memory through `io::Cursor`): it reads
//! neither G.711 WAVs (format 6/7), which is how many telephony prompts ship, nor 64-bit
//! float; its writer needs `io::Seek` to patch the header itself, whereas the recorder hands
//! the runtime byte chunks to append and a header to rewrite, and its errors are its own
//! catch-alls. The format is small enough that owning it (about 300 lines, fuzzed) costs
//! less than adapting around those gaps.

use crate::g711::{alaw_to_linear, ulaw_to_linear};

/// A decoded prompt or music clip: mono 16-bit PCM at `rate` Hz.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Clip {
    pub rate: u32,
    pub samples: Vec<i16>,
}

impl Clip {
    pub fn new(rate: u32, samples: Vec<i16>) -> Clip {
        Clip { rate, samples }
    }

    /// Length in milliseconds (rounded down).
    pub fn duration_ms(&self) -> u64 {
        if self.rate == 0 {
            0
        } else {
            self.samples.len() as u64 * 1000 / u64::from(self.rate)
        }
    }
}

/// Why a WAV file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    #[error("not a RIFF file (no \"RIFF\" tag at offset 0)")]
    NotRiff,
    #[error("RIFF file is not WAVE (form type {0:?})")]
    NotWave(String),
    #[error("no \"fmt \" chunk before the \"data\" chunk")]
    MissingFormat,
    #[error("no \"data\" chunk")]
    MissingData,
    #[error("\"fmt \" chunk is {0} bytes, shorter than the 16 a WAV format needs")]
    FormatTooShort(u32),
    #[error("truncated {chunk:?} chunk: declares {declared} bytes, {available} present")]
    TruncatedChunk {
        chunk: String,
        declared: u32,
        available: usize,
    },
    #[error("truncated data chunk: declares {declared} bytes, {available} present")]
    TruncatedData { declared: u32, available: usize },
    #[error("unsupported format code {0:#06x} (PCM 1, float 3, A-law 6, μ-law 7, extensible 0xfffe are)")]
    UnsupportedFormat(u16),
    #[error("extensible format with an unknown sub-format GUID")]
    UnknownSubFormat,
    #[error("unsupported {bits} bits per sample for {format}")]
    UnsupportedBits { format: &'static str, bits: u16 },
    #[error("unsupported channel count {0} (1 to {MAX_CHANNELS})")]
    UnsupportedChannels(u16),
    #[error("unsupported sample rate {0} Hz (1 to {MAX_RATE})")]
    UnsupportedRate(u32),
    #[error("block align {declared} does not match {channels} channels of {bits} bits")]
    BadBlockAlign {
        declared: u16,
        channels: u16,
        bits: u16,
    },
}

/// More channels than this is not a prompt; refuse rather than guess a layout.
pub const MAX_CHANNELS: u16 = 8;
/// Highest sample rate accepted (DXD); anything above is a corrupt header.
pub const MAX_RATE: u32 = 768_000;

const FORMAT_PCM: u16 = 1;
const FORMAT_FLOAT: u16 = 3;
const FORMAT_ALAW: u16 = 6;
const FORMAT_ULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The tail shared by every KSDATAFORMAT_SUBTYPE_* GUID; the first two bytes are the format code.
const SUBFORMAT_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];
/// Data size written by streaming writers that could not seek back (and by our own
/// placeholder header): read as "up to the end of the file".
const STREAMING_SIZE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    UnsignedPcm8,
    Pcm16,
    Pcm24,
    Pcm32,
    Float32,
    Float64,
    Alaw,
    Ulaw,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::UnsignedPcm8 | Encoding::Alaw | Encoding::Ulaw => 1,
            Encoding::Pcm16 => 2,
            Encoding::Pcm24 => 3,
            Encoding::Pcm32 | Encoding::Float32 => 4,
            Encoding::Float64 => 8,
        }
    }

    /// One sample, little-endian, `b.len() == self.bytes()`, as 16-bit linear. Wider
    /// integer formats keep their top 16 bits (truncation is below the G.711 noise floor).
    fn decode(self, b: &[u8]) -> i16 {
        match self {
            Encoding::UnsignedPcm8 => (i16::from(b[0]) - 128) << 8,
            Encoding::Pcm16 => i16::from_le_bytes([b[0], b[1]]),
            Encoding::Pcm24 => i16::from_le_bytes([b[1], b[2]]),
            Encoding::Pcm32 => i16::from_le_bytes([b[2], b[3]]),
            Encoding::Float32 => {
                float_to_i16(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Encoding::Float64 => float_to_i16(f64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ])),
            Encoding::Alaw => alaw_to_linear(b[0]),
            Encoding::Ulaw => ulaw_to_linear(b[0]),
        }
    }
}

fn float_to_i16(x: f64) -> i16 {
    if x.is_nan() {
        0
    } else {
        // `as` saturates; ±1.0 maps to ±32767 so that positive full scale does not wrap.
        (x * 32767.0).round().clamp(-32768.0, 32767.0) as i16
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

struct Format {
    encoding: Encoding,
    channels: u16,
    rate: u32,
}

fn parse_format(fmt: &[u8]) -> Result<Format, WavError> {
    if fmt.len() < 16 {
        return Err(WavError::FormatTooShort(fmt.len() as u32));
    }
    let mut code = le_u16(fmt, 0);
    let channels = le_u16(fmt, 2);
    let rate = le_u32(fmt, 4);
    let block_align = le_u16(fmt, 12);
    let bits = le_u16(fmt, 14);
    if code == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) subFormat GUID(16) after the 18-byte base.
        if fmt.len() < 40 {
            return Err(WavError::FormatTooShort(fmt.len() as u32));
        }
        if fmt[26..40] != SUBFORMAT_TAIL {
            return Err(WavError::UnknownSubFormat);
        }
        code = le_u16(fmt, 24);
        if code == FORMAT_EXTENSIBLE {
            return Err(WavError::UnsupportedFormat(code));
        }
    }
    // For extensible files `bits` is the container size (24 valid bits in 32 is common):
    // decoding by container keeps the most significant bits, which is what we want.
    let encoding = match (code, bits) {
        (FORMAT_PCM, 8) => Encoding::UnsignedPcm8,
        (FORMAT_PCM, 16) => Encoding::Pcm16,
        (FORMAT_PCM, 24) => Encoding::Pcm24,
        (FORMAT_PCM, 32) => Encoding::Pcm32,
        (FORMAT_PCM, bits) => {
            return Err(WavError::UnsupportedBits {
                format: "PCM",
                bits,
            })
        }
        (FORMAT_FLOAT, 32) => Encoding::Float32,
        (FORMAT_FLOAT, 64) => Encoding::Float64,
        (FORMAT_FLOAT, bits) => {
            return Err(WavError::UnsupportedBits {
                format: "IEEE float",
                bits,
            })
        }
        (FORMAT_ALAW, 8) => Encoding::Alaw,
        (FORMAT_ULAW, 8) => Encoding::Ulaw,
        (FORMAT_ALAW | FORMAT_ULAW, bits) => {
            return Err(WavError::UnsupportedBits {
                format: "G.711",
                bits,
            })
        }
        (code, _) => return Err(WavError::UnsupportedFormat(code)),
    };
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(WavError::UnsupportedChannels(channels));
    }
    if rate == 0 || rate > MAX_RATE {
        return Err(WavError::UnsupportedRate(rate));
    }
    if usize::from(block_align) != usize::from(channels) * encoding.bytes() {
        return Err(WavError::BadBlockAlign {
            declared: block_align,
            channels,
            bits,
        });
    }
    Ok(Format {
        encoding,
        channels,
        rate,
    })
}

/// Decodes a whole WAV file to a mono clip (channels averaged).
///
/// Chunks other than `fmt ` and `data` (LIST, fact, cue, bext...) are skipped; the RIFF
/// size field is ignored because many tools get it wrong. A data chunk that declares more
/// bytes than the file holds is [`WavError::TruncatedData`], except the streaming size
/// `0xFFFFFFFF` (a recording whose header was never finalised), read to the end. A
/// trailing partial sample frame is dropped.
pub fn read_wav(bytes: &[u8]) -> Result<Clip, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave(
            String::from_utf8_lossy(&bytes[8..12]).into_owned(),
        ));
    }
    let mut format = None;
    let mut pos = 12;
    while bytes.len() - pos >= 8 {
        let id = &bytes[pos..pos + 4];
        let size = le_u32(bytes, pos + 4);
        let body_start = pos + 8;
        let available = bytes.len() - body_start;
        if id == b"data" {
            let fmt: Format = format.ok_or(WavError::MissingFormat)?;
            let body = if size == STREAMING_SIZE {
                &bytes[body_start..]
            } else if size as usize > available {
                return Err(WavError::TruncatedData {
                    declared: size,
                    available,
                });
            } else {
                &bytes[body_start..body_start + size as usize]
            };
            return Ok(decode(&fmt, body));
        }
        if size as usize > available {
            return Err(WavError::TruncatedChunk {
                chunk: String::from_utf8_lossy(id).into_owned(),
                declared: size,
                available,
            });
        }
        if id == b"fmt " {
            format = Some(parse_format(
                &bytes[body_start..body_start + size as usize],
            )?);
        }
        // Chunks are padded to an even length; a missing final pad byte is harmless.
        pos = (body_start + size as usize + (size as usize & 1)).min(bytes.len());
    }
    if format.is_none() {
        Err(WavError::MissingFormat)
    } else {
        Err(WavError::MissingData)
    }
}

fn decode(fmt: &Format, body: &[u8]) -> Clip {
    let width = fmt.encoding.bytes();
    let channels = usize::from(fmt.channels);
    let frame = width * channels;
    // Bounded by the input: one i16 per input frame, never by a header field.
    let mut samples = Vec::with_capacity(body.len() / frame);
    for block in body.chunks_exact(frame) {
        if channels == 1 {
            samples.push(fmt.encoding.decode(block));
        } else {
            let sum: i32 = block
                .chunks_exact(width)
                .map(|s| i32::from(fmt.encoding.decode(s)))
                .sum();
            samples.push((sum / channels as i32) as i16);
        }
    }
    Clip {
        rate: fmt.rate,
        samples,
    }
}

/// Channel layout of a written WAV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Mono,
    Stereo,
}

impl Channels {
    pub fn count(self) -> u16 {
        match self {
            Channels::Mono => 1,
            Channels::Stereo => 2,
        }
    }
}

/// Length of the canonical header [`WavWriter`] writes.
pub const HEADER_LEN: usize = 44;

/// Streaming 16-bit PCM WAV writer that owns no file.
///
/// Drive contract: write [`WavWriter::header_placeholder`] at offset 0, append every
/// `Vec<u8>` that [`WavWriter::push_frames`] returns, and when closing rewrite the first
/// 44 bytes with [`WavWriter::finish_header`]. The placeholder declares the streaming size
/// `0xFFFFFFFF`, so a file whose writer died is still readable to its end.
#[derive(Debug, Clone)]
pub struct WavWriter {
    rate: u32,
    channels: Channels,
    frames: u64,
}

impl WavWriter {
    pub fn new(rate: u32, channels: Channels) -> WavWriter {
        WavWriter {
            rate,
            channels,
            frames: 0,
        }
    }

    pub fn header_placeholder(&self) -> [u8; HEADER_LEN] {
        self.header(STREAMING_SIZE)
    }

    /// Interleaved samples (L R L R... for stereo) as little-endian bytes to append.
    /// A stereo push with an odd count counts its half frame towards the next push.
    pub fn push_frames(&mut self, interleaved: &[i16]) -> Vec<u8> {
        let mut out = Vec::with_capacity(interleaved.len() * 2);
        for s in interleaved {
            out.extend_from_slice(&s.to_le_bytes());
        }
        self.frames += interleaved.len() as u64;
        out
    }

    /// Sample frames pushed so far (a stereo frame is two samples).
    pub fn frames_written(&self) -> u64 {
        self.frames / u64::from(self.channels.count())
    }

    /// The final header for `total_frames` sample frames. Sizes beyond what the 32-bit
    /// RIFF fields hold are clamped (readers then read to the end, which is right).
    pub fn finish_header(&self, total_frames: u64) -> [u8; HEADER_LEN] {
        let bytes = total_frames.saturating_mul(u64::from(self.channels.count()) * 2);
        let max = u64::from(u32::MAX) - 36;
        self.header(bytes.min(max) as u32)
    }

    fn header(&self, data_size: u32) -> [u8; HEADER_LEN] {
        let channels = self.channels.count();
        let block_align = channels * 2;
        let riff_size = data_size.saturating_add(36);
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(b"RIFF");
        h[4..8].copy_from_slice(&riff_size.to_le_bytes());
        h[8..12].copy_from_slice(b"WAVE");
        h[12..16].copy_from_slice(b"fmt ");
        h[16..20].copy_from_slice(&16u32.to_le_bytes());
        h[20..22].copy_from_slice(&FORMAT_PCM.to_le_bytes());
        h[22..24].copy_from_slice(&channels.to_le_bytes());
        h[24..28].copy_from_slice(&self.rate.to_le_bytes());
        h[28..32].copy_from_slice(&(self.rate.wrapping_mul(u32::from(block_align))).to_le_bytes());
        h[32..34].copy_from_slice(&block_align.to_le_bytes());
        h[34..36].copy_from_slice(&16u16.to_le_bytes());
        h[36..40].copy_from_slice(b"data");
        h[40..44].copy_from_slice(&data_size.to_le_bytes());
        h
    }
}

/// A complete 16-bit PCM WAV file in memory (tools, tests, admin uploads).
pub fn write_wav(rate: u32, channels: Channels, interleaved: &[i16]) -> Vec<u8> {
    let mut writer = WavWriter::new(rate, channels);
    let body = writer.push_frames(interleaved);
    let mut out = writer.finish_header(writer.frames_written()).to_vec();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_header_fields() {
        let h = WavWriter::new(8000, Channels::Stereo).finish_header(100);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(le_u32(&h, 4), 36 + 400);
        assert_eq!(le_u32(&h, 28), 32000);
        assert_eq!(le_u16(&h, 32), 4);
        assert_eq!(le_u32(&h, 40), 400);
    }

    #[test]
    fn placeholder_reads_to_end() {
        let mut w = WavWriter::new(16000, Channels::Mono);
        let mut file = w.header_placeholder().to_vec();
        file.extend(w.push_frames(&[1, 2, 3]));
        file.extend(w.push_frames(&[4]));
        let clip = read_wav(&file).unwrap();
        assert_eq!(clip, Clip::new(16000, vec![1, 2, 3, 4]));
    }

    #[test]
    fn float_conversion_saturates() {
        assert_eq!(float_to_i16(2.0), 32767);
        assert_eq!(float_to_i16(-2.0), -32768);
        assert_eq!(float_to_i16(f64::NAN), 0);
        assert_eq!(float_to_i16(0.5), 16384);
    }
}
