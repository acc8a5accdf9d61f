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

use super::media::{pcap_udp_packets, RtpPacket, UdpPacket};
use super::{peer_available, poll_until, read_lossy, stop_child};

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
        let out = File::create(&log).expect("create dumpcap log");
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

/// The RTP packets among `packets` sent to a port in `ports` (inclusive), in capture
/// order, with their capture times.
pub fn rtp_to(packets: &[UdpPacket], ports: (u16, u16)) -> Vec<(f64, RtpPacket)> {
    packets
        .iter()
        .filter(|p| (ports.0..=ports.1).contains(&p.dst_port))
        .filter_map(|p| RtpPacket::parse(&p.payload).map(|r| (p.at, r)))
        .collect()
}
