//! Packet capture on the loopback interface with `dumpcap` (Wireshark's capture engine):
//! what a baresip phone hears after a re-INVITE is judged from the RTP that reached its
//! ports, because baresip 1.0's sndfile dump of decoded audio stops at the first
//! re-INVITE of a call (docs in /work/shared/INTEROP.md). Capturing needs root or
//! CAP_NET_RAW; like a missing peer, a capture that cannot start is a failure under CI
//! and a SKIP elsewhere.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::baresip::Baresip;
use super::media::{pcap_udp_packets, RtpPacket, UdpPacket};
use super::{peer_available, poll_until, read_lossy, stop_child, Server};

/// How long dumpcap may take to open `lo` and write its file header.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A running `dumpcap -i lo` writing a classic pcap file.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    log: PathBuf,
}

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

impl Capture {
    /// Starts capturing on `lo` what the BPF `filter` selects (e.g. `udp and dst
    /// portrange 20000-20009`), into `dir`. `None` (SKIP printed) when dumpcap is missing
    /// or may not capture here, outside CI; under CI that panics.
    pub fn start(dir: &Path, filter: &str) -> Option<Capture> {
        if !peer_available("dumpcap") {
            return None;
        }
        let file = dir.join("capture.pcap");
        let log = dir.join("dumpcap.log");
        let mut out = File::create(&log).expect("create dumpcap log");
        // The filter first, so that a capture that missed something can be judged.
        let _ = std::io::Write::write_all(&mut out, format!("filter: {filter}\n").as_bytes());
        let mut child = Command::new("dumpcap")
            .args(["-i", "lo", "-q", "-P", "-f", filter, "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dumpcap: {e}"));
        // Started once the file holds its 24-byte header; an early exit is a refusal
        // (no permission to capture, a bad filter).
        let started = poll_until(START_DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            let header = std::fs::metadata(&file).is_ok_and(|m| m.len() >= 24);
            header.then_some(Ok(()))
        });
        let why = match started {
            Some(Ok(())) => {
                return Some(Capture {
                    child: Some(child),
                    file,
                    log,
                })
            }
            Some(Err(status)) => format!("dumpcap exited ({status})"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                format!("dumpcap wrote no pcap header within {START_DEADLINE:?}")
            }
        };
        let report = format!("{why}; its output:\n{}", read_lossy(&log));
        if in_ci() {
            panic!("cannot capture on lo under CI=true (run as root): {report}");
        }
        eprintln!("SKIP: cannot capture on lo: {report}");
        None
    }

    /// Stops the capture (dumpcap flushes its file on SIGTERM) and returns what it
    /// caught.
    pub fn stop(mut self) -> Vec<UdpPacket> {
        if let Some(mut child) = self.child.take() {
            let status = stop_child(&mut child, Duration::from_secs(10));
            assert!(
                status.is_some(),
                "dumpcap did not stop on SIGTERM; its output:\n{}",
                read_lossy(&self.log)
            );
        }
        pcap_udp_packets(&self.file)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
    }
}

/// A capture filter for what `server` sends to `phones`: RTP from its RTP ports (to
/// anyone: which port a phone really receives on is read from its own SDP, see
/// `phone_rtp_ports`), and SIP both ways between its SIP port and theirs. Naming the
/// server's ports keeps out the traffic of other tests.
pub fn server_to_phones(server: &Server, phones: &[&Baresip]) -> String {
    let each: Vec<String> = phones
        .iter()
        .map(|p| {
            format!(
                "(src portrange {}-{}) or (src port {} and dst port {}) \
                 or (src port {} and dst port {})",
                server.rtp_ports.0,
                server.rtp_ports.1,
                server.sip.port(),
                p.sip_port,
                p.sip_port,
                server.sip.port()
            )
        })
        .collect();
    format!("udp and ({})", each.join(" or "))
}

/// The ports a phone's RTP arrives at, as its own SDP answers and offers (captured from its
/// SIP port, see `server_to_phones`) said, as a range for `rtp_to`; the configured range when
/// none was captured. The configured `rtp_ports` alone was not enough: baresip makes its
/// RTP port even by clearing the low bit, so from a range starting on an odd port it could
/// receive one port below the range, and a capture filtered on the range missed everything
/// (the harness now starts the range even; the SDP is what the phone really uses).
pub fn phone_rtp_ports(packets: &[UdpPacket], phone: &Baresip) -> (u16, u16) {
    let ports: Vec<u16> = packets
        .iter()
        .filter(|p| p.src_port == phone.sip_port)
        .filter_map(|p| {
            let text = String::from_utf8_lossy(&p.payload);
            text.lines().find_map(|l| {
                l.trim_end()
                    .strip_prefix("m=audio ")?
                    .split_whitespace()
                    .next()?
                    .parse::<u16>()
                    .ok()
                    .filter(|&port| port != 0)
            })
        })
        .collect();
    match (ports.iter().min(), ports.iter().max()) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => phone.rtp_ports,
    }
}

/// The RTP packets among `packets` sent to a port in `ports` (inclusive), in capture
/// order, with their capture times.
pub fn rtp_to(packets: &[UdpPacket], ports: (u16, u16)) -> Vec<(f64, RtpPacket)> {
    packets
        .iter()
        .filter(|p| (ports.0..=ports.1).contains(&p.dst_port))
        .filter_map(|p| RtpPacket::parse(&p.payload).map(|r| (p.at, r)))
        .collect()
}

/// The capture times of the SIP requests `method` sent to `port`, one per transaction
/// (retransmissions, same Call-ID and CSeq, left out), in order: the moments a phone was
/// told something (a hold, a move), on the same clock as its RTP.
pub fn sip_requests_to(packets: &[UdpPacket], port: u16, method: &str) -> Vec<f64> {
    let mut seen = Vec::new();
    let mut times = Vec::new();
    for p in packets.iter().filter(|p| p.dst_port == port) {
        let text = String::from_utf8_lossy(&p.payload);
        if !text.starts_with(&format!("{method} ")) {
            continue;
        }
        let header = |name: &str| {
            text.lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let key = (header("Call-ID"), header("CSeq"));
        if !seen.contains(&key) {
            seen.push(key);
            times.push(p.at);
        }
    }
    times
}

/// A one-line account of a stream's timing for failure reports: packet count, first and
/// last capture times, and every gap over 100 ms.
pub fn timeline(rtp: &[(f64, RtpPacket)]) -> String {
    let (Some(first), Some(last)) = (rtp.first(), rtp.last()) else {
        return "no RTP".into();
    };
    let gaps: Vec<String> = rtp
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 > 0.1)
        .map(|w| format!("{:.3}+{:.3}s", w[0].0, w[1].0 - w[0].0))
        .collect();
    format!(
        "{} packets from {:.3} to {:.3}, gaps {gaps:?}",
        rtp.len(),
        first.0,
        last.0
    )
}
