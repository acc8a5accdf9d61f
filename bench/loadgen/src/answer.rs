//! The answering side (the far end of the relay benchmark): REGISTERs once, then answers
//! every INVITE with 200 and an SDP answer on a socket of its own (from a pool bound at
//! start), retransmits the 200 until the ACK (RFC 3261 §13.3.1.4), answers BYE, and sends
//! every RTP datagram back to where it came from. Same single-threaded driver as `call`.
//!
//! It is the probe's reflector (RFC 5357 style): its RTP sockets have kernel receive
//! timestamps, and into a probe (see `rtp`) it writes the time from the kernel's receipt to
//! its own echo, so the caller can subtract this process's scheduling from the round trip.
//! Every other datagram is echoed untouched; the only extra per packet is `recvmsg` with a
//! control message instead of `recvfrom`.
//!
//! Without `--user` it registers nowhere, and a caller can send its INVITEs straight to
//! `--listen` (no relay: the benchmark's direct-path baseline).

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_sip::{Message, Method, Request};

use crate::caller::{T1, T2};
use crate::reactor::{cpu_time, raise_fd_limit, Reactor, STOP, TIMER};
use crate::rtp::{self, Codec};
use crate::sip::{self, Dialog};
use crate::timestamps::{self, StampedReceiver};
use nix::sys::socket::{sendto, MsgFlags};

const SIP_TOKEN: u64 = u64::MAX - 1;

pub struct AnswerConfig {
    pub server: SocketAddr,
    pub listen: SocketAddr,
    pub domain: String,
    pub user: Option<String>,
    pub password: String,
    pub max_calls: usize,
    pub duration: Duration,
    pub progress: bool,
    /// Answer RFC 4733 telephone-event when the offer has it (a relay then needs no
    /// in-band DTMF detection on this leg).
    pub telephone_event: bool,
}

struct Session {
    socket: usize,
    response: Vec<u8>,
    peer: SocketAddr,
    acked: bool,
    ended: bool,
    retransmit_at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

#[derive(Default)]
struct Counters {
    invites: u64,
    answered: u64,
    rejected: u64,
    acks_missing: u64,
    byes: u64,
    retransmissions: u64,
    echoed: u64,
    echo_errors: u64,
    /// Probes echoed with a turnaround written in (a kernel receive time was there).
    probes_stamped: u64,
    /// Probes echoed without one (turnaround left 0).
    probes_unstamped: u64,
}

struct Registration {
    dialog: Dialog,
    pending: Vec<u8>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    authenticated: bool,
    done: bool,
}

pub fn run(cfg: AnswerConfig) -> anyhow::Result<()> {
    raise_fd_limit();
    let sip_sock = UdpSocket::bind(cfg.listen).context("binding the SIP socket")?;
    sip_sock.set_nonblocking(true)?;
    let _ = nix::sys::socket::setsockopt(
        &sip_sock,
        nix::sys::socket::sockopt::RcvBufForce,
        &(4 << 20),
    );
    let local = sip_sock.local_addr()?;
    let mut reactor = Reactor::new()?;
    reactor.start_timer(Duration::from_millis(10))?;
    reactor.add(&sip_sock, SIP_TOKEN)?;
    let mut pool = Vec::with_capacity(cfg.max_calls);
    for i in 0..cfg.max_calls {
        let s = UdpSocket::bind((local.ip(), 0)).context("binding an RTP socket")?;
        s.set_nonblocking(true)?;
        // Room for bursts: an echo that is not read in time is loss we would blame on the relay.
        let _ =
            nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(1 << 20));
        timestamps::enable(&s).context("SO_TIMESTAMPNS on an RTP socket")?;
        reactor.add(&s, i as u64)?;
        pool.push(s);
    }
    let mut free: Vec<usize> = (0..cfg.max_calls).rev().collect();
    let mut sessions: HashMap<String, Session> = HashMap::new();
    let mut counters = Counters::default();
    let mut buf = vec![0u8; 65536];
    let mut stamped = StampedReceiver::new();
    let start = Instant::now();
    let cpu0 = cpu_time();
    let mut next_progress = start + Duration::from_secs(1);

    let mut reg = cfg.user.as_ref().map(|user| {
        let d = Dialog {
            call_id: format!("reg-{:08x}@{}", rand::random::<u32>(), local.ip()),
            local_uri: format!("sip:{user}@{}", cfg.domain),
            local_tag: sip::new_tag(),
            remote_uri: format!("sip:{user}@{}", cfg.domain),
            remote_tag: None,
            remote_target: String::new(),
            route_set: Vec::new(),
            contact: format!("<sip:{user}@{local}>"),
            sent_by: local.to_string(),
            cseq: 1,
        };
        let pending = d.request(
            "REGISTER",
            &format!("sip:{}", cfg.domain),
            &sip::new_branch(),
            1,
            false,
            "Expires: 3600\r\n",
            None,
        );
        Registration {
            dialog: d,
            pending,
            retransmit_at: Some(start + T1),
            interval: T1,
            authenticated: false,
            done: false,
        }
    });
    if let Some(r) = &reg {
        let _ = sip_sock.send_to(&r.pending, cfg.server);
    } else {
        println!("READY sip={local}");
        let _ = std::io::stdout().flush();
    }

    let mut stop = false;
    while !stop {
        let n = reactor.wait()?;
        for e in 0..n {
            let token = reactor.events[e].data();
            if token == TIMER {
                reactor.ack_timer();
            } else if token == STOP {
                reactor.ack_stop();
                stop = true;
            } else if token == SIP_TOKEN {
                loop {
                    match sip_sock.recv_from(&mut buf) {
                        Ok((len, src)) => {
                            let Ok(msg) = switchboard_sip::parse_datagram(&buf[..len]) else {
                                continue;
                            };
                            match msg {
                                Message::Request(req) => handle_request(
                                    req,
                                    src,
                                    &cfg,
                                    local,
                                    &sip_sock,
                                    &mut sessions,
                                    &mut free,
                                    &pool,
                                    &mut counters,
                                ),
                                Message::Response(r) => {
                                    if let Some(reg) = reg.as_mut() {
                                        handle_register_response(reg, r, &cfg, local, &sip_sock);
                                    }
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
            } else {
                let s = &pool[token as usize];
                match stamped.recv(s, &mut buf) {
                    Ok(d) => {
                        let Some(src) = d.source else {
                            counters.echo_errors += 1;
                            continue;
                        };
                        let packet = &mut buf[..d.len];
                        if rtp::is_probe(packet) {
                            match d.received_ns {
                                Some(t2) => {
                                    // T3: right before the echo's send_to.
                                    let t3 = timestamps::realtime_ns();
                                    rtp::write_turnaround(packet, t3.saturating_sub(t2));
                                    counters.probes_stamped += 1;
                                }
                                None => counters.probes_unstamped += 1,
                            }
                        }
                        match sendto(s.as_raw_fd(), packet, &src, MsgFlags::empty()) {
                            Ok(_) => counters.echoed += 1,
                            Err(_) => counters.echo_errors += 1,
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => counters.echo_errors += 1,
                }
            }
        }
        let now = Instant::now();
        if let Some(r) = reg.as_mut() {
            if r.retransmit_at.is_some_and(|t| now >= t) {
                let _ = sip_sock.send_to(&r.pending, cfg.server);
                r.interval = (r.interval * 2).min(T2);
                r.retransmit_at = Some(now + r.interval);
            }
        }
        // 200 retransmissions until the ACK; sessions whose ACK never came are dropped.
        sessions.retain(|_, s| {
            if s.ended {
                return false;
            }
            if !s.acked && now >= s.retransmit_at {
                if now >= s.give_up_at {
                    counters.acks_missing += 1;
                    free.push(s.socket);
                    return false;
                }
                let _ = sip_sock.send_to(&s.response, s.peer);
                counters.retransmissions += 1;
                s.interval = (s.interval * 2).min(T2);
                s.retransmit_at = now + s.interval;
            }
            true
        });
        if cfg.progress && now >= next_progress {
            next_progress += Duration::from_secs(1);
            eprintln!(
                "t={:.0}s sessions={} echoed={} cpu_s={:.2}",
                now.saturating_duration_since(start).as_secs_f64(),
                sessions.len(),
                counters.echoed,
                (cpu_time() - cpu0).as_secs_f64()
            );
        }
        if now.saturating_duration_since(start) >= cfg.duration {
            break;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64();
    println!(
        "SUMMARY loadgen_answer invites={} answered={} rejected={} acks_missing={} byes={} \
         retransmissions={} rtp_echoed={} echo_errors={} probes_stamped={} probes_unstamped={} \
         loadgen_cpu_s={cpu:.2} wall_s={wall:.1} loadgen_cpu={:.1}%",
        counters.invites,
        counters.answered,
        counters.rejected,
        counters.acks_missing,
        counters.byes,
        counters.retransmissions,
        counters.echoed,
        counters.echo_errors,
        counters.probes_stamped,
        counters.probes_unstamped,
        100.0 * cpu / wall.max(1e-9)
    );
    Ok(())
}

fn handle_register_response(
    reg: &mut Registration,
    r: switchboard_sip::Response,
    cfg: &AnswerConfig,
    local: SocketAddr,
    sip_sock: &UdpSocket,
) {
    if reg.done || r.status < 200 {
        return;
    }
    if (r.status == 401 || r.status == 407) && !reg.authenticated {
        let Some((challenge, header)) = sip::challenge(&r) else {
            eprintln!("REGISTER: {} without a challenge", r.status);
            return;
        };
        let Ok(params) = switchboard_sip::digest::ChallengeParams::parse(challenge) else {
            eprintln!("REGISTER: unreadable challenge");
            return;
        };
        let user = cfg.user.clone().unwrap_or_default();
        let uri = format!("sip:{}", cfg.domain);
        let answer = params.answer(&user, &cfg.password, "REGISTER", &uri, 1, "0a4f113b");
        reg.authenticated = true;
        reg.dialog.cseq += 1;
        reg.pending = reg.dialog.request(
            "REGISTER",
            &uri,
            &sip::new_branch(),
            reg.dialog.cseq,
            false,
            &format!("Expires: 3600\r\n{header}: {answer}\r\n"),
            None,
        );
        let _ = sip_sock.send_to(&reg.pending, cfg.server);
        reg.interval = T1;
        reg.retransmit_at = Some(Instant::now() + T1);
        return;
    }
    reg.done = true;
    reg.retransmit_at = None;
    if (200..300).contains(&r.status) {
        println!(
            "READY sip={local} registered={}",
            cfg.user.as_deref().unwrap_or("")
        );
    } else {
        println!("REGISTER_FAILED status={}", r.status);
    }
    let _ = std::io::stdout().flush();
}

#[allow(clippy::too_many_arguments)]
fn handle_request(
    req: Request,
    src: SocketAddr,
    cfg: &AnswerConfig,
    local: SocketAddr,
    sip_sock: &UdpSocket,
    sessions: &mut HashMap<String, Session>,
    free: &mut Vec<usize>,
    pool: &[UdpSocket],
    counters: &mut Counters,
) {
    let call_id = req.call_id().unwrap_or("").to_string();
    let tag = format!("{:08x}", fxhash(&call_id));
    let reply = match req.method {
        Method::Invite => {
            if let Some(s) = sessions.get(&call_id) {
                // A retransmitted INVITE (or a re-INVITE): the same answer again.
                let _ = sip_sock.send_to(&s.response, src);
                return;
            }
            counters.invites += 1;
            let offered = sip::offered_payload_types(&req.body);
            let codec = offered.iter().find_map(|&pt| match pt {
                0 => Some(Codec::Pcmu),
                8 => Some(Codec::Pcma),
                _ => None,
            });
            let (Some(codec), Some(socket)) = (codec, free.pop()) else {
                counters.rejected += 1;
                let status = if codec.is_none() { 488 } else { 503 };
                let reply = sip::response(&req, status, "Rejected", &tag, "", None);
                let _ = sip_sock.send_to(&reply, src);
                return;
            };
            let port = pool[socket].local_addr().map(|a| a.port()).unwrap_or(0);
            let event = cfg
                .telephone_event
                .then(|| sip::telephone_event_pt(&req.body))
                .flatten();
            let body = sip::sdp(local.ip(), port, codec, u64::from(fxhash(&call_id)), event);
            let contact = format!(
                "Contact: <sip:{}@{local}>\r\n",
                cfg.user.as_deref().unwrap_or("lg")
            );
            let response = sip::response(&req, 200, "OK", &tag, &contact, Some(&body));
            let _ = sip_sock.send_to(&response, src);
            counters.answered += 1;
            let now = Instant::now();
            sessions.insert(
                call_id,
                Session {
                    socket,
                    response,
                    peer: src,
                    acked: false,
                    ended: false,
                    retransmit_at: now + T1,
                    interval: T1,
                    give_up_at: now + T1 * 64,
                },
            );
            return;
        }
        Method::Ack => {
            if let Some(s) = sessions.get_mut(&call_id) {
                s.acked = true;
            }
            return;
        }
        Method::Bye => {
            counters.byes += 1;
            if let Some(s) = sessions.get_mut(&call_id) {
                if !s.ended {
                    s.ended = true;
                    free.push(s.socket);
                }
            }
            sip::response(&req, 200, "OK", &tag, "", None)
        }
        _ => sip::response(&req, 200, "OK", &tag, "", None),
    };
    let _ = sip_sock.send_to(&reply, src);
}

/// A stable tag per Call-ID, so retransmitted requests get the same To tag.
fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}
