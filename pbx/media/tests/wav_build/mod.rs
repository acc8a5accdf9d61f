//! Builds WAV files of every format the reader accepts, in memory, for the reader tests
//! and the seed corpus of the WAV fuzz test.
#![allow(dead_code)] // each test binary uses some of these

/// Tail of every KSDATAFORMAT_SUBTYPE GUID after its two-byte format code.
pub const SUBFORMAT_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

pub struct Fmt {
    pub code: u16,
    pub channels: u16,
    pub rate: u32,
    pub bits: u16,
    /// `Some((valid_bits, sub_format_code))` writes WAVE_FORMAT_EXTENSIBLE.
    pub extensible: Option<(u16, u16)>,
}

impl Fmt {
    pub fn new(code: u16, channels: u16, rate: u32, bits: u16) -> Fmt {
        Fmt {
            code,
            channels,
            rate,
            bits,
            extensible: None,
        }
    }

    pub fn chunk_body(&self) -> Vec<u8> {
        let block_align = self.channels * self.bits.div_ceil(8);
        let mut b = Vec::new();
        let code = if self.extensible.is_some() {
            0xFFFE
        } else {
            self.code
        };
        b.extend(code.to_le_bytes());
        b.extend(self.channels.to_le_bytes());
        b.extend(self.rate.to_le_bytes());
        b.extend(self.rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
        b.extend(block_align.to_le_bytes());
        b.extend(self.bits.to_le_bytes());
        if let Some((valid, sub)) = self.extensible {
            b.extend(22u16.to_le_bytes());
            b.extend(valid.to_le_bytes());
            b.extend(0x3u32.to_le_bytes());
            b.extend(sub.to_le_bytes());
            b.extend(SUBFORMAT_TAIL);
        }
        b
    }
}

pub fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut c = id.to_vec();
    c.extend((body.len() as u32).to_le_bytes());
    c.extend(body);
    if body.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// A RIFF/WAVE file made of these chunks (RIFF size computed).
pub fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut f = b"RIFF".to_vec();
    f.extend((body.len() as u32 + 4).to_le_bytes());
    f.extend(b"WAVE");
    f.extend(body);
    f
}

pub fn wav(fmt: &Fmt, data: &[u8]) -> Vec<u8> {
    riff(&[chunk(b"fmt ", &fmt.chunk_body()), chunk(b"data", data)])
}

/// A test signal covering the 16-bit range: a ramp through both extremes.
pub fn signal(len: usize) -> Vec<i16> {
    (0..len)
        .map(|i| match i % 7 {
            0 => i16::MIN,
            1 => i16::MAX,
            2 => 0,
            _ => ((i as i64 * 7919) % 65536 - 32768) as i16,
        })
        .collect()
}

/// Every supported format, encoding `signal`; the second value is what the reader must
/// return for it.
pub fn all_formats(rate: u32, samples: &[i16]) -> Vec<(&'static str, Vec<u8>, Vec<i16>)> {
    use switchboard_media::g711::{alaw_to_linear, linear_to_alaw, linear_to_ulaw, ulaw_to_linear};
    let mut out = Vec::new();
    let bytes =
        |f: &dyn Fn(i16) -> Vec<u8>| samples.iter().flat_map(|&s| f(s)).collect::<Vec<u8>>();
    out.push((
        "pcm16",
        wav(
            &Fmt::new(1, 1, rate, 16),
            &bytes(&|s| s.to_le_bytes().to_vec()),
        ),
        samples.to_vec(),
    ));
    out.push((
        "pcm8",
        wav(
            &Fmt::new(1, 1, rate, 8),
            &bytes(&|s| vec![((s >> 8) + 128) as u8]),
        ),
        samples.iter().map(|&s| s & !0xFF).collect(),
    ));
    out.push((
        "pcm24",
        wav(
            &Fmt::new(1, 1, rate, 24),
            &bytes(&|s| {
                let v = (i32::from(s) << 8) | 0x5A;
                v.to_le_bytes()[..3].to_vec()
            }),
        ),
        samples.to_vec(),
    ));
    out.push((
        "pcm32",
        wav(
            &Fmt::new(1, 1, rate, 32),
            &bytes(&|s| ((i32::from(s) << 16) | 0x1234).to_le_bytes().to_vec()),
        ),
        samples.to_vec(),
    ));
    out.push((
        "float32",
        wav(
            &Fmt::new(3, 1, rate, 32),
            &bytes(&|s| (f32::from(s) / 32767.0).to_le_bytes().to_vec()),
        ),
        samples.to_vec(),
    ));
    out.push((
        "float64",
        wav(
            &Fmt::new(3, 1, rate, 64),
            &bytes(&|s| (f64::from(s) / 32767.0).to_le_bytes().to_vec()),
        ),
        samples.to_vec(),
    ));
    out.push((
        "ulaw",
        wav(
            &Fmt::new(7, 1, rate, 8),
            &bytes(&|s| vec![linear_to_ulaw(s)]),
        ),
        samples
            .iter()
            .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
            .collect(),
    ));
    out.push((
        "alaw",
        wav(
            &Fmt::new(6, 1, rate, 8),
            &bytes(&|s| vec![linear_to_alaw(s)]),
        ),
        samples
            .iter()
            .map(|&s| alaw_to_linear(linear_to_alaw(s)))
            .collect(),
    ));
    let mut ext = Fmt::new(1, 1, rate, 32);
    ext.extensible = Some((24, 1));
    out.push((
        "extensible pcm 24-in-32",
        wav(
            &ext,
            &bytes(&|s| ((i32::from(s) << 16) | 0x7700).to_le_bytes().to_vec()),
        ),
        samples.to_vec(),
    ));
    let mut ext = Fmt::new(3, 1, rate, 32);
    ext.extensible = Some((32, 3));
    out.push((
        "extensible float32",
        wav(
            &ext,
            &bytes(&|s| (f32::from(s) / 32767.0).to_le_bytes().to_vec()),
        ),
        samples.to_vec(),
    ));
    let mut ext = Fmt::new(7, 1, rate, 8);
    ext.extensible = Some((8, 7));
    out.push((
        "extensible ulaw",
        wav(&ext, &bytes(&|s| vec![linear_to_ulaw(s)])),
        samples
            .iter()
            .map(|&s| ulaw_to_linear(linear_to_ulaw(s)))
            .collect(),
    ));
    out.push((
        "stereo pcm16 (same on both channels)",
        wav(
            &Fmt::new(1, 2, rate, 16),
            &bytes(&|s| [s.to_le_bytes(), s.to_le_bytes()].concat()),
        ),
        samples.to_vec(),
    ));
    out
}
