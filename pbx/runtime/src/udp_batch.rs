//! A UDP socket for the media tasks that reads with `recvmmsg(2)` and knows when it has
//! emptied the socket without asking the kernel once more.
//!
//! Why: tokio's `poll_recv_from` only forgets a socket's readiness when a read fails
//! with `EAGAIN`, so every packet of a relayed call cost two `recvfrom` calls: the one
//! that got it and the one that found the queue empty (a call's socket holds one packet
//! per wake-up almost always: 50 a second). Here one `recvmmsg` asks for up to
//! [`BATCH`] datagrams; when fewer come back the queue was empty at that moment, and the
//! read reports `WouldBlock` to tokio's `try_io` after handing the datagrams over, which
//! clears the readiness without another system call. A datagram that lands after that
//! call raises a fresh edge in epoll, and `try_io` clears only the readiness event it
//! saw before the read (tokio's readiness tick), so nothing is left waiting in the
//! queue. One system call per received packet instead of two.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::task::Context;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams asked for per `recvmmsg` call.
pub(crate) const BATCH: usize = 4;
/// Largest datagram kept whole; longer ones arrive truncated (as with a 2 KB buffer
/// before): RTP over UDP on an Ethernet path is at most 1,500 bytes.
const DATAGRAM: usize = 2048;

/// The receive buffers and message headers of one thread: a task borrows them only
/// inside one poll, and a thread runs one poll at a time.
struct Scratch {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        headers: MultiHeaders::preallocate(BATCH, None),
        bufs: Box::new([[0u8; DATAGRAM]; BATCH]),
    });
}

pub(crate) struct BatchSocket {
    socket: UdpSocket,
}

impl BatchSocket {
    /// Binds a UDP socket registered with the current runtime.
    pub(crate) async fn bind(addr: SocketAddr) -> io::Result<BatchSocket> {
        Ok(BatchSocket {
            socket: UdpSocket::bind(addr).await?,
        })
    }

    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends now or not at all (a full send buffer drops the datagram, as the network
    /// would).
    pub(crate) fn try_send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.try_send_to(data, to)
    }

    /// Hands every datagram waiting in the socket, up to `max` (rounded up to a whole
    /// batch), to `each` (source, bytes), and registers `cx` to be woken when more arrive
    /// once the queue is empty. Returns how many reads it made progress with; 0 means
    /// nothing was waiting.
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> usize {
        let mut got = 0;
        // Pending registers `cx`: the queue is empty and the task sleeps on it.
        while got < max && self.socket.poll_recv_ready(cx).is_ready() {
            got += self.read_once(&mut each).unwrap_or(0);
        }
        got
    }

    /// As [`BatchSocket::poll_drain`] for a task that reads on its own clock (a room's
    /// mixer tick) and is not woken by the socket: no system call at all when tokio saw
    /// nothing arrive since the socket was last emptied.
    pub(crate) fn try_drain(&self, max: usize, mut each: impl FnMut(SocketAddr, &[u8])) -> usize {
        let mut got = 0;
        while got < max {
            match self.read_once(&mut each) {
                Some(n) => got += n,
                None => break,
            }
        }
        got
    }

    /// One read if tokio has seen the socket readable: `Some(progress)`, or `None` when
    /// the socket is known to be empty (no system call then).
    fn read_once(&self, each: &mut impl FnMut(SocketAddr, &[u8])) -> Option<usize> {
        let fd = self.socket.as_raw_fd();
        let mut got = 0;
        let read = self.socket.try_io(Interest::READABLE, || {
            let n = SCRATCH.with_borrow_mut(|s| read_batch(fd, s, each))?;
            got = n;
            if n < BATCH {
                // Emptied: `WouldBlock` makes tokio forget the readiness it saw.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match read {
            Ok(()) => Some(got),
            // Emptied now (got > 0), or already known empty.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => (got > 0).then_some(got),
            // An ICMP error queued by an earlier send (ECONNREFUSED): the read consumed
            // it; what is behind it is read on the next turn.
            Err(_) => Some(1),
        }
    }
}

/// One `recvmmsg`: hands each datagram to `each`; returns how many came.
fn read_batch(
    fd: std::os::fd::RawFd,
    scratch: &mut Scratch,
    each: &mut impl FnMut(SocketAddr, &[u8]),
) -> io::Result<usize> {
    let Scratch { headers, bufs } = scratch;
    let mut meta = [(None::<SocketAddr>, 0usize); BATCH];
    let n = {
        let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
        match recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(results) => {
                let mut n = 0;
                for (slot, msg) in meta.iter_mut().zip(results) {
                    *slot = (msg.address.as_ref().and_then(to_std), msg.bytes);
                    n += 1;
                }
                n
            }
            Err(Errno::EAGAIN) => 0,
            Err(e) => return Err(e.into()),
        }
    };
    for (i, (from, len)) in meta.iter().take(n).enumerate() {
        if let Some(from) = from {
            each(*from, &bufs[i][..(*len).min(DATAGRAM)]);
        }
    }
    Ok(n)
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// Waits (with a deadline) until `poll_drain` hands over `want` datagrams in total.
    async fn drain_until(
        sock: &BatchSocket,
        want: usize,
        max: usize,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut seen = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while seen.len() < want {
                std::future::poll_fn(|cx| {
                    let n =
                        sock.poll_drain(cx, max, |from, bytes| seen.push((from, bytes.to_vec())));
                    if n > 0 {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            }
        })
        .await
        .expect("datagrams arrive");
        seen
    }

    #[tokio::test]
    async fn every_datagram_arrives_in_order_whatever_the_batching() {
        let sock = BatchSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let to = sock.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = sender.local_addr().unwrap();
        // 11 queued before the first read: batches of 4, 4, 3 (the last one empties it).
        for i in 0..11u8 {
            sender.send_to(&[i; 3], to).unwrap();
        }
        let seen = drain_until(&sock, 11, 64).await;
        assert!(seen.iter().all(|(f, _)| *f == from));
        let payloads: Vec<u8> = seen.iter().map(|(_, b)| b[0]).collect();
        assert_eq!(payloads, (0..11).collect::<Vec<_>>());
        // A read bound below what is queued leaves the rest for the next wake-up,
        // which comes without a new datagram (the readiness was not cleared).
        for i in 0..6u8 {
            sender.send_to(&[i; 2], to).unwrap();
        }
        let first = drain_until(&sock, 1, 2).await;
        assert_eq!(first.len(), 4, "one batch of 4 reaches the bound of 2");
        let rest = drain_until(&sock, 2, 64).await;
        assert_eq!(rest.len(), 2);
        // One datagram after the socket was emptied wakes the task again.
        let later = tokio::spawn(async move {
            sender.send_to(b"late", to).unwrap();
        });
        let late = drain_until(&sock, 1, 64).await;
        assert_eq!(late[0].1, b"late");
        later.await.unwrap();
    }

    /// A room's mixer reads on its own tick: `try_drain` gets what tokio saw arrive and
    /// nothing before it has seen anything.
    #[tokio::test]
    async fn try_drain_reads_what_arrived_between_ticks() {
        let sock = BatchSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let to = sock.local_addr().unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(sock.try_drain(64, |_, _| panic!("nothing was sent")), 0);
        for i in 0..6u8 {
            sender.send_to(&[i], to).unwrap();
        }
        let mut seen = Vec::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while seen.len() < 6 {
                tick.tick().await; // lets the runtime's reactor see the socket
                sock.try_drain(64, |_, b| seen.push(b[0]));
            }
        })
        .await
        .expect("all six read");
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(sock.try_drain(64, |_, _| panic!("already read")), 0);
    }

    #[tokio::test]
    async fn ipv6_sources_are_reported() {
        let Ok(sock) = BatchSocket::bind("[::1]:0".parse().unwrap()).await else {
            return; // no IPv6 loopback on this machine
        };
        let sender = std::net::UdpSocket::bind("[::1]:0").unwrap();
        sender.send_to(b"v6", sock.local_addr().unwrap()).unwrap();
        let seen = drain_until(&sock, 1, 64).await;
        assert_eq!(seen[0].0, sender.local_addr().unwrap());
    }
}
