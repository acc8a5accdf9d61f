//! The latency probe's clocks (RFC 5357 TWAMP style): kernel receive timestamps
//! (`SO_TIMESTAMPNS`, read from `recvmsg` control messages) and the clock they are taken on.
//! The kernel stamps on CLOCK_REALTIME, so the send times T1 and T3 are read from
//! CLOCK_REALTIME too: all four probe times are realtime nanoseconds and only their
//! differences are used. Never mix in std's `Instant` (CLOCK_MONOTONIC) here.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

/// Nanoseconds since the Unix epoch on CLOCK_REALTIME (a vDSO read, no system call).
pub fn realtime_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_REALTIME)
        .map(|t| timespec_ns(&t))
        .unwrap_or(0)
}

fn timespec_ns(t: &TimeSpec) -> u64 {
    (t.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec() as u64)
}

/// Asks the kernel to stamp every datagram this socket receives (`SO_TIMESTAMPNS`).
pub fn enable(sock: &impl AsFd) -> io::Result<()> {
    setsockopt(sock, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// One received datagram.
pub struct Datagram {
    pub len: usize,
    pub source: Option<SockaddrStorage>,
    /// The kernel's receive time (realtime ns); None when the socket does not stamp.
    pub received_ns: Option<u64>,
}

/// Receives with `recvmsg` into a control-message buffer allocated once (nothing here
/// allocates per datagram).
pub struct StampedReceiver {
    cmsg: Vec<u8>,
}

impl StampedReceiver {
    pub fn new() -> StampedReceiver {
        StampedReceiver {
            cmsg: nix::cmsg_space!(TimeSpec),
        }
    }

    /// One datagram from a non-blocking socket (`WouldBlock` when there is none).
    pub fn recv(&mut self, sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Datagram> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrStorage>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        let mut received_ns = None;
        // A truncated control buffer (ENOBUFS) just means no timestamp for this one.
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    received_ns = Some(timespec_ns(&ts));
                }
            }
        }
        Ok(Datagram {
            len: msg.bytes,
            source: msg.address,
            received_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// The kernel's stamp lies between a realtime read before the send and one after the
    /// receive: the stamp and `realtime_ns` are on the same clock.
    #[test]
    fn kernel_stamp_is_on_the_realtime_clock() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&b).unwrap();
        let before = realtime_ns();
        a.send_to(b"probe", b.local_addr().unwrap()).unwrap();
        let mut r = StampedReceiver::new();
        let mut buf = [0u8; 64];
        let d = r.recv(&b, &mut buf).unwrap();
        let after = realtime_ns();
        assert_eq!(&buf[..d.len], b"probe");
        let source = d.source.and_then(|s| s.as_sockaddr_in().map(|a| a.port()));
        assert_eq!(source, Some(a.local_addr().unwrap().port()));
        let t = d.received_ns.expect("a kernel timestamp");
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    }
}
