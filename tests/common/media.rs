//! Media checks for the end-to-end tests: a UDP socket standing in for a
//! phone's RTP port (collects what arrives, with the source address), RTP
//! header parsing, a reader for the classic pcap files SIPp plays, a WAV
//! reader for baresip's `sndfile` dumps with tone measurements (frequency by
//! zero crossings and Goertzel, level in dBFS), and SDP out of SIPp's
//! `-trace_msg` log.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{LOCALHOST, POLL_INTERVAL};

// ---------------------------------------------------------------------------
// RTP

/// The fixed RTP header fields (RFC 3550 5.1) and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPacket {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

impl RtpPacket {
    /// Parses an RTP packet (version 2, CSRCs, extension and padding
    /// skipped); `None` for anything else, RTCP included (PT 72-76 with the
    /// marker bit set reads as 200-204).
    pub fn parse(data: &[u8]) -> Option<RtpPacket> {
        if data.len() < 12 || data[0] >> 6 != 2 {
            return None;
        }
        if (200..=204).contains(&data[1]) {
            return None;
        }
        let csrc_count = usize::from(data[0] & 0x0f);
        let mut start = 12 + 4 * csrc_count;
        if data[0] & 0x10 != 0 {
            let ext = data.get(start..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        let mut end = data.len();
        if data[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*data.last()?))?;
        }
        Some(RtpPacket {
            marker: data[1] & 0x80 != 0,
            payload_type: data[1] & 0x7f,
            sequence: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            payload: data.get(start..end)?.to_vec(),
        })
    }
}

/// One datagram received by an [`RtpSink`].
#[derive(Clone, Debug)]
pub struct Datagram {
    pub from: SocketAddr,
    pub at: Instant,
    pub data: Vec<u8>,
}

/// A UDP socket on 127.0.0.1 (a free port chosen by the kernel) that a test
/// names as the media address of a fake phone; a thread keeps every
/// datagram that arrives until the sink is dropped.
pub struct RtpSink {
    port: u16,
    /// The same socket, for sending from the sink's own address (a fake phone's RTP
    /// comes from the port its SDP names, so the server's latch stays on the sink).
    sender: UdpSocket,
    received: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RtpSink {
    pub fn bind() -> RtpSink {
        let socket = UdpSocket::bind((LOCALHOST, 0)).expect("bind an RTP sink on 127.0.0.1:0");
        let port = socket.local_addr().expect("local_addr").port();
        socket
            .set_read_timeout(Some(POLL_INTERVAL))
            .expect("set_read_timeout");
        let sender = socket.try_clone().expect("clone the sink's socket");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                        received
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Datagram {
                                from,
                                at: Instant::now(),
                                data: buffer[..n].to_vec(),
                            });
                    }
                }
            })
        };
        RtpSink {
            port,
            sender,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one datagram from the sink's port.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) {
        self.sender
            .send_to(data, to)
            .unwrap_or_else(|e| panic!("send from the RTP sink to {to}: {e}"));
    }

    /// Everything received so far.
    pub fn datagrams(&self) -> Vec<Datagram> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The datagrams received so far that parse as RTP, with their source.
    pub fn rtp(&self) -> Vec<(SocketAddr, RtpPacket)> {
        self.datagrams()
            .iter()
            .filter_map(|d| RtpPacket::parse(&d.data).map(|p| (d.from, p)))
            .collect()
    }

    /// Polls until `check` accepts the RTP received so far, or `timeout`;
    /// returns whether it did.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[(SocketAddr, RtpPacket)]) -> bool,
    ) -> bool {
        super::wait_until_or(timeout, || check(&self.rtp()))
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sequence numbers missing between consecutive packets (with 16-bit
/// wrap-around); duplicates and reordering count as 0.
pub fn sequence_gaps(packets: &[&RtpPacket]) -> u32 {
    packets
        .windows(2)
        .map(|w| {
            let step = w[1].sequence.wrapping_sub(w[0].sequence);
            if (1..0x8000).contains(&step) {
                u32::from(step - 1)
            } else {
                0
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------
// pcap (classic libpcap format, as shipped with sip-tester)

/// One UDP datagram of a capture.
#[derive(Clone, Debug)]
pub struct UdpPacket {
    /// Capture time, seconds since the Unix epoch.
    pub at: f64,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// The UDP datagrams (IPv4) of a classic pcap file (Ethernet, which is also what Linux
/// gives for `lo`, or Linux cooked capture), in file order. A record cut short at the
/// end (the capture was stopped while writing) is left out.
pub fn pcap_udp_packets(path: &Path) -> Vec<UdpPacket> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(data.len() >= 24, "{}: too short for a pcap", path.display());
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        _ => panic!("{}: not a classic pcap file", path.display()),
    };
    let u32_at = |at: usize| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link_header = match u32_at(20) {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked
        other => panic!("{}: unsupported link type {other}", path.display()),
    };
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let fraction = f64::from(u32_at(at + 4)) / if nanos { 1e9 } else { 1e6 };
        let time = f64::from(u32_at(at)) + fraction;
        let captured = u32_at(at + 8) as usize;
        if at + 16 + captured > data.len() {
            break;
        }
        let frame = &data[at + 16..at + 16 + captured];
        at += 16 + captured;
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]])).min(udp.len());
        if udp_len >= 8 {
            packets.push(UdpPacket {
                at: time,
                src_port: u16::from_be_bytes([udp[0], udp[1]]),
                dst_port: u16::from_be_bytes([udp[2], udp[3]]),
                payload: udp[8..udp_len].to_vec(),
            });
        }
    }
    packets
}

/// The UDP payloads of a classic pcap file, in file order.
pub fn pcap_udp_payloads(path: &Path) -> Vec<Vec<u8>> {
    pcap_udp_packets(path)
        .into_iter()
        .map(|p| p.payload)
        .collect()
}

/// The RTP packets of a pcap file.
pub fn pcap_rtp(path: &Path) -> Vec<RtpPacket> {
    pcap_udp_payloads(path)
        .iter()
        .filter_map(|p| RtpPacket::parse(p))
        .collect()
}

// ---------------------------------------------------------------------------
// G.711

/// ITU-T G.711 μ-law expansion (written out here, independent of the server's codec,
/// so that a bug there cannot cancel out in the check).
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((i16::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    if u & 0x80 != 0 {
        0x84 - t
    } else {
        t - 0x84
    }
}

/// ITU-T G.711 μ-law compression (the classic biased segment search).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // The segment: the position of the highest set bit of s >> 7 (0 for none).
    let top = ((s >> 7) & 0xff) as u8;
    let exponent = if top == 0 {
        0
    } else {
        7 - top.leading_zeros() as i32
    };
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// A test-owned RTP endpoint standing in for a phone's audio: it sends a PCMU sine tone
/// every 20 ms (paced by a deadline, not by sleeping a guessed time) to the address it
/// is given, from its own socket (so symmetric RTP answers to it), and keeps every RTP
/// packet it receives with its arrival time (seconds since the Unix epoch, the clock of
/// capture files).
pub struct TonePhone {
    port: u16,
    target: Arc<Mutex<Option<SocketAddr>>>,
    received: Arc<Mutex<Vec<(f64, RtpPacket)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl TonePhone {
    /// Binds 127.0.0.1:0; the tone (`hz`, at -10 dBFS) starts once [`TonePhone::send_to`]
    /// names a destination.
    pub fn bind(hz: f64) -> TonePhone {
        let socket = UdpSocket::bind((LOCALHOST, 0)).expect("bind a tone phone on 127.0.0.1:0");
        let port = socket.local_addr().expect("local_addr").port();
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("set_read_timeout");
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (target, received, stop) = (
                Arc::clone(&target),
                Arc::clone(&received),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let ssrc = 0x5eed_0001u32;
                let (mut sequence, mut timestamp, mut phase) = (0u16, 0u32, 0.0f64);
                let step = 2.0 * std::f64::consts::PI * hz / 8000.0;
                let mut next = Instant::now();
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        next += Duration::from_millis(20);
                        let to = *target.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(to) = to {
                            let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                            packet[2..4].copy_from_slice(&sequence.to_be_bytes());
                            packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
                            packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                            for _ in 0..160 {
                                let sample = (0.316 * 32767.0 * phase.sin()) as i16;
                                packet.push(linear_to_ulaw(sample));
                                phase = (phase + step) % (2.0 * std::f64::consts::PI);
                            }
                            let _ = socket.send_to(&packet, to);
                            sequence = sequence.wrapping_add(1);
                            timestamp = timestamp.wrapping_add(160);
                        }
                    }
                    if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                        if let Some(p) = RtpPacket::parse(&buffer[..n]) {
                            received
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((unix_now(), p));
                        }
                    }
                }
            })
        };
        TonePhone {
            port,
            target,
            received,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts (or re-points) the tone.
    pub fn send_to(&self, to: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
    }

    /// Stops the tone (a phone holding the call), until the next `send_to`.
    pub fn stop_sending(&self) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The RTP received so far, with arrival times.
    pub fn received(&self) -> Vec<(f64, RtpPacket)> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TonePhone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The audio of PCMU RTP packets, in the order given, as 8 kHz mono (packets of other
/// payload types are left out; losses are not filled in).
pub fn pcmu_audio<'a>(packets: impl IntoIterator<Item = &'a RtpPacket>) -> Wav {
    Wav {
        sample_rate: 8000,
        channels: 1,
        samples: packets
            .into_iter()
            .filter(|p| p.payload_type == 0)
            .flat_map(|p| p.payload.iter().map(|&b| ulaw_to_linear(b)))
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// WAV and tone measurements

/// 16-bit PCM audio, interleaved channels.
#[derive(Clone, Debug)]
pub struct Wav {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl Wav {
    /// Reads a RIFF/WAVE file of 16-bit PCM (format 1, or extensible).
    pub fn read(path: &Path) -> Wav {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WAVE",
            "{}: not a RIFF/WAVE file",
            path.display()
        );
        let mut format: Option<(u16, u16, u32, u16)> = None;
        let mut samples = None;
        let mut at = 12;
        while at + 8 <= data.len() {
            let id = &data[at..at + 4];
            let size = u32::from_le_bytes([data[at + 4], data[at + 5], data[at + 6], data[at + 7]])
                as usize;
            // A dump cut short (the phone still writing) may claim more
            // than the file holds: take what is there.
            let body = &data[at + 8..(at + 8 + size).min(data.len())];
            match id {
                b"fmt " if body.len() >= 16 => {
                    format = Some((
                        u16::from_le_bytes([body[0], body[1]]),
                        u16::from_le_bytes([body[2], body[3]]),
                        u32::from_le_bytes([body[4], body[5], body[6], body[7]]),
                        u16::from_le_bytes([body[14], body[15]]),
                    ));
                }
                b"data" => {
                    samples = Some(
                        body.chunks_exact(2)
                            .map(|b| i16::from_le_bytes([b[0], b[1]]))
                            .collect::<Vec<i16>>(),
                    );
                }
                _ => {}
            }
            at += 8 + size + (size & 1);
        }
        let (tag, channels, sample_rate, bits) =
            format.unwrap_or_else(|| panic!("{}: no fmt chunk", path.display()));
        assert!(
            (tag == 1 || tag == 0xfffe) && bits == 16 && channels > 0,
            "{}: not 16-bit PCM (format {tag:#x}, {bits} bits, {channels} channels)",
            path.display()
        );
        Wav {
            sample_rate,
            channels,
            samples: samples.unwrap_or_else(|| panic!("{}: no data chunk", path.display())),
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(
            self.samples.len() as f64 / f64::from(self.channels) / f64::from(self.sample_rate),
        )
    }

    /// The first channel, scaled to [-1, 1).
    pub fn mono(&self) -> Vec<f64> {
        self.samples
            .iter()
            .step_by(usize::from(self.channels))
            .map(|&s| f64::from(s) / 32768.0)
            .collect()
    }
}

/// Root mean square level in dBFS (a full-scale sine reads -3 dBFS).
pub fn rms_dbfs(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let mean_square = samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64;
    10.0 * mean_square.max(1e-20).log10()
}

/// The frequency of a steady tone from its rising zero crossings: the time
/// between the first and the last crossing (linearly interpolated) over the
/// number of periods between them.
pub fn zero_crossing_hz(samples: &[f64], sample_rate: u32) -> f64 {
    let mut crossings = Vec::new();
    for (i, w) in samples.windows(2).enumerate() {
        if w[0] < 0.0 && w[1] >= 0.0 {
            crossings.push(i as f64 + (-w[0]) / (w[1] - w[0]));
        }
    }
    if crossings.len() < 2 {
        return 0.0;
    }
    let periods = (crossings.len() - 1) as f64;
    let span = crossings[crossings.len() - 1] - crossings[0];
    periods * f64::from(sample_rate) / span
}

/// Power of `samples` at `hz` (Goertzel), normalised so that a sine of
/// amplitude A reads A²/2, like the mean square of the whole signal.
pub fn goertzel_power(samples: &[f64], sample_rate: u32, hz: f64) -> f64 {
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(sample_rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (n * n)
}

/// What [`measure_tone`] found in a stretch of audio.
#[derive(Clone, Copy, Debug)]
pub struct ToneMeasurement {
    /// Frequency from zero crossings, Hz.
    pub hz: f64,
    /// RMS level, dBFS.
    pub level_dbfs: f64,
    /// Share of the signal's power at the expected frequency (Goertzel over
    /// ±2% of it, best bin): near 1 for a clean tone.
    pub purity: f64,
    /// Length of the stretch measured.
    pub seconds: f64,
}

/// Measures a tone expected at `expected_hz` in the middle of `wav`: leaves
/// out the first and last `trim` of the recording (call set-up, jitter
/// buffer filling, hang-up).
pub fn measure_tone(wav: &Wav, expected_hz: f64, trim: Duration) -> ToneMeasurement {
    let mono = wav.mono();
    let skip = (trim.as_secs_f64() * f64::from(wav.sample_rate)) as usize;
    let middle: &[f64] = if mono.len() > 2 * skip {
        &mono[skip..mono.len() - skip]
    } else {
        &[]
    };
    let total = middle.iter().map(|s| s * s).sum::<f64>() / middle.len().max(1) as f64;
    let best = (-20..=20)
        .map(|k| expected_hz * (1.0 + f64::from(k) * 0.001))
        .map(|hz| goertzel_power(middle, wav.sample_rate, hz))
        .fold(0.0, f64::max);
    ToneMeasurement {
        hz: zero_crossing_hz(middle, wav.sample_rate),
        level_dbfs: rms_dbfs(middle),
        purity: if total > 0.0 { best / total } else { 0.0 },
        seconds: middle.len() as f64 / f64::from(wav.sample_rate),
    }
}

// ---------------------------------------------------------------------------
// SDP in SIPp message traces

/// The SIP messages SIPp logged as received (`-trace_msg`), oldest first.
pub fn sipp_received_messages(trace: &str) -> Vec<String> {
    let mut messages = Vec::new();
    for block in trace.split("\n----------------------------------------------- ") {
        let mut lines = block.lines();
        lines.next(); // the date
        let Some(header) = lines.next() else { continue };
        if !header.contains("message received") {
            continue;
        }
        let message: Vec<&str> = lines.skip_while(|l| l.trim().is_empty()).collect();
        messages.push(message.join("\n"));
    }
    messages
}

/// The audio destination an SDP body gives: the `c=` address (session or
/// media level) and the first `m=audio` port and format list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpAudio {
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub formats: Vec<String>,
    /// The `a=rtpmap:` lines of the audio section, as `(PT, encoding)`.
    pub rtpmaps: Vec<(String, String)>,
}

/// Parses the first audio stream of the SDP in `message` (a whole SIP
/// message: the body follows the blank line).
pub fn sdp_audio(message: &str) -> Option<SdpAudio> {
    let body = message
        .split_once("\n\n")
        .or_else(|| message.split_once("\r\n\r\n"))?
        .1;
    let mut session_address = None;
    let mut audio: Option<SdpAudio> = None;
    let mut in_audio = false;
    for line in body.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("m=") {
            if audio.is_some() {
                break;
            }
            let fields: Vec<&str> = rest.split_whitespace().collect();
            in_audio = fields.first() == Some(&"audio");
            if in_audio && fields.len() >= 3 {
                audio = Some(SdpAudio {
                    address: session_address.clone().unwrap_or_default(),
                    port: fields[1].parse().ok()?,
                    protocol: fields[2].to_string(),
                    formats: fields[3..].iter().map(|f| f.to_string()).collect(),
                    rtpmaps: Vec::new(),
                });
            }
        } else if let Some(rest) = line.strip_prefix("c=") {
            let address = rest.split_whitespace().nth(2)?.to_string();
            match audio.as_mut() {
                Some(a) if in_audio => a.address = address,
                _ => session_address = Some(address),
            }
        } else if let Some(rest) = line.strip_prefix("a=rtpmap:") {
            if let (Some(a), true) = (audio.as_mut(), in_audio) {
                if let Some((pt, encoding)) = rest.split_once(' ') {
                    a.rtpmaps.push((pt.to_string(), encoding.to_string()));
                }
            }
        }
    }
    audio
}

#[test]
fn rtp_headers_parse() {
    let mut packet = vec![0x80, 0x88, 0x01, 0x02, 0, 0, 0, 160, 0xde, 0xad, 0xbe, 0xef];
    packet.extend_from_slice(&[1, 2, 3]);
    let parsed = RtpPacket::parse(&packet).expect("an RTP packet");
    assert!(parsed.marker);
    assert_eq!(parsed.payload_type, 8);
    assert_eq!(parsed.sequence, 0x0102);
    assert_eq!(parsed.timestamp, 160);
    assert_eq!(parsed.ssrc, 0xdead_beef);
    assert_eq!(parsed.payload, vec![1, 2, 3]);
    // RTCP (SR) is not RTP.
    assert!(RtpPacket::parse(&[0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
}

#[test]
fn ulaw_expands_the_g711_table_values() {
    // G.711 Table 2a: 0xFF and 0x7F are the two zeros, 0x80 / 0x00 the extremes.
    assert_eq!(ulaw_to_linear(0xff), 0);
    assert_eq!(ulaw_to_linear(0x7f), 0);
    assert_eq!(ulaw_to_linear(0x80), 32124);
    assert_eq!(ulaw_to_linear(0x00), -32124);
    // The first steps of the finest segment: ±8.
    assert_eq!(ulaw_to_linear(0xfe), 8);
    assert_eq!(ulaw_to_linear(0x7e), -8);
    // Compression gives back every code from its expansion (0x7f, the negative zero,
    // compresses to the positive one).
    for code in 0..=255u8 {
        let again = linear_to_ulaw(ulaw_to_linear(code));
        assert_eq!(again, if code == 0x7f { 0xff } else { code }, "{code:#x}");
    }
    assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
    assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
}

#[test]
fn tone_measurements_find_a_sine() {
    let rate = 8000;
    let samples: Vec<f64> = (0..rate * 2)
        .map(|i| 0.5 * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 8000.0).sin())
        .collect();
    let hz = zero_crossing_hz(&samples, rate);
    assert!((hz - 1000.0).abs() < 1.0, "{hz}");
    let level = rms_dbfs(&samples);
    assert!((level - (-9.03)).abs() < 0.1, "{level}");
    let power = goertzel_power(&samples, rate, 1000.0);
    assert!((power - 0.125).abs() < 0.01, "{power}");
}

#[test]
fn sdp_audio_reads_address_port_and_formats() {
    let message = "SIP/2.0 200 OK\nContent-Type: application/sdp\n\nv=0\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\n";
    let audio = sdp_audio(message).expect("an audio stream");
    assert_eq!(audio.address, "10.0.0.1");
    assert_eq!(audio.port, 4000);
    assert_eq!(audio.formats, vec!["8", "101"]);
    assert_eq!(
        audio.rtpmaps[1],
        ("101".into(), "telephone-event/8000".into())
    );
}
