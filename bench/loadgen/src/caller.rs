//! The calling side: N calls, each INVITEs (answering a 401/407 challenge once), ACKs the
//! 2xx, streams a 20 ms G.711 tone to the address of the answer's SDP, counts what comes
//! back, and after `hold` says BYE. One thread drives everything:
//!
//! - one SIP socket for all calls (responses find their call by Call-ID);
//! - one RTP socket per call (the server sees one media source per participant, as with
//!   real phones; symmetric RTP sends the audio back to it);
//! - a 1 ms timerfd; the RTP timer wheel has 20 slots of 1 ms and call i sends in slot
//!   i mod 20, so a 20 ms period carries 1/20 of the packets in each millisecond instead of
//!   all at once. Due times are absolute (epoch + k ms): a late wake-up sends late, never
//!   drifts and never skips; the send lag is measured and reported.
//!
//! With `probe_every` > 0 the RTP sockets have kernel receive timestamps (`SO_TIMESTAMPNS`)
//! and are read with `recvmsg`: a probe's echo then also gives the network round trip
//! without either end's scheduling (see `rtp`'s module docs and `timestamps`).
//!
//! Retransmissions follow RFC 3261 §17.1: INVITE every T1, 2·T1, … until a provisional
//! or final response or Timer B (64·T1); BYE likewise capped at T2 until Timer F.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_sip::{Message, Method, Request, Response};

use crate::hist::Histogram;
use crate::reactor::{cpu_time, raise_fd_limit, Reactor, STOP, TIMER};
use crate::rtp::{self, Codec, ProbeStats, Receiver, Sender, Tone, PACKET_LEN};
use crate::sip::{self, Dialog};
use crate::timestamps::{self, StampedReceiver};

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
const SLOT: Duration = Duration::from_millis(1);
const SLOTS: usize = 20;
const SIP_TOKEN: u64 = u64::MAX - 1;
const SIP_SCAN: Duration = Duration::from_millis(10);

pub struct CallConfig {
    pub server: SocketAddr,
    pub local_ip: IpAddr,
    pub domain: String,
    pub calls: usize,
    pub rate: f64,
    pub hold: Duration,
    pub to: String,
    pub group_size: usize,
    pub credentials: Vec<(String, String)>,
    pub codec: Codec,
    pub tone_hz: f64,
    pub amplitude: i16,
    pub late: Duration,
    pub setup_timeout: Duration,
    pub max_time: Duration,
    pub progress: bool,
    pub label: String,
    /// Every n-th packet of a call is a probe (0: none); see [`rtp::Sender::next_packet`].
    pub probe_every: u64,
    /// Offer RFC 4733 telephone-event (payload type 101) beside the codec.
    pub telephone_event: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// A final response other than 2xx (status).
    Rejected(u16),
    /// No final response within the setup timeout (Timer B).
    Timeout,
    /// A second challenge after we answered one.
    AuthRejected,
    /// The 2xx had no usable SDP.
    NoSdp,
    /// The run ended (max time) before the call was set up.
    Unfinished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    Inviting,
    Established,
    /// BYE sent, waiting for its response.
    Ending,
    Done,
    Failed(Fail),
}

struct Call {
    phase: Phase,
    dialog: Dialog,
    ruri: String,
    credential: usize,
    offer: String,
    branch: String,
    invite_cseq: u32,
    bye_cseq: u32,
    authenticated: bool,
    /// The last request sent, for retransmission, and when/how often.
    pending: Vec<u8>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    give_up_at: Instant,
    ack: Vec<u8>,
    started_at: Option<Instant>,
    hangup_at: Option<Instant>,
    rtp: UdpSocket,
    sender: Sender,
    receiver: Receiver,
    bye_status: Option<u16>,
    remote_bye: bool,
}

#[derive(Default)]
struct Counters {
    invites_sent: u64,
    retransmissions: u64,
    rtp_sent: u64,
    rtp_send_errors: u64,
    rtp_recv_errors: u64,
    rtp_received: u64,
    rtp_bad: u64,
    sip_unmatched: u64,
}

struct Stats {
    setup: Histogram,
    interarrival: Histogram,
    probes: ProbeStats,
    send_lag: Histogram,
}

/// A snapshot for the steady window (every call resolved, none hung up yet).
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    cpu: Duration,
    sent: u64,
    received: u64,
}

pub fn run(cfg: CallConfig) -> anyhow::Result<()> {
    raise_fd_limit();
    let run_id = rand::random::<u32>();
    let sip_sock = UdpSocket::bind((cfg.local_ip, 0)).context("binding the SIP socket")?;
    sip_sock.set_nonblocking(true)?;
    let _ = nix::sys::socket::setsockopt(
        &sip_sock,
        nix::sys::socket::sockopt::RcvBufForce,
        &(4 << 20),
    );
    let sip_local = sip_sock.local_addr()?;
    let mut reactor = Reactor::new()?;
    reactor.add(&sip_sock, SIP_TOKEN)?;
    let tone = Tone::new(cfg.codec, cfg.tone_hz, cfg.amplitude);
    let pt = cfg.codec.payload_type();

    // Every socket is bound before the first call starts: nothing on the run path opens one.
    let mut calls = Vec::with_capacity(cfg.calls);
    for i in 0..cfg.calls {
        let rtp = UdpSocket::bind((cfg.local_ip, 0)).context("binding an RTP socket")?;
        rtp.set_nonblocking(true)?;
        if cfg.probe_every > 0 {
            timestamps::enable(&rtp).context("SO_TIMESTAMPNS on an RTP socket")?;
        }
        let rtp_port = rtp.local_addr()?.port();
        reactor.add(&rtp, i as u64)?;
        let credential = i % cfg.credentials.len();
        let user = &cfg.credentials[credential].0;
        let to = match i.checked_div(cfg.group_size) {
            Some(group) => {
                let base: u64 = cfg
                    .to
                    .parse()
                    .context("--to must be a number with --group-size")?;
                (base + group as u64).to_string()
            }
            None => cfg.to.clone(),
        };
        let dialog = Dialog {
            call_id: format!("lg{i}-{run_id:08x}@{}", cfg.local_ip),
            local_uri: format!("sip:{user}@{}", cfg.domain),
            local_tag: sip::new_tag(),
            remote_uri: format!("sip:{to}@{}", cfg.domain),
            remote_tag: None,
            remote_target: String::new(),
            route_set: Vec::new(),
            contact: format!("<sip:{user}@{sip_local}>"),
            sent_by: sip_local.to_string(),
            cseq: 0,
        };
        calls.push(Call {
            phase: Phase::NotStarted,
            ruri: format!("sip:{to}@{}", cfg.server),
            dialog,
            credential,
            offer: sip::sdp(
                cfg.local_ip,
                rtp_port,
                cfg.codec,
                u64::from(run_id) + i as u64,
                cfg.telephone_event.then_some(101),
            ),
            branch: String::new(),
            invite_cseq: 0,
            bye_cseq: 0,
            authenticated: false,
            pending: Vec::new(),
            retransmit_at: None,
            interval: T1,
            give_up_at: Instant::now(),
            ack: Vec::new(),
            started_at: None,
            hangup_at: None,
            rtp,
            sender: Sender::new(
                rand::random(),
                rand::random(),
                rand::random(),
                (i % 5) as u64,
            ),
            receiver: Receiver::default(),
            bye_status: None,
            remote_bye: false,
        });
    }

    let mut counters = Counters::default();
    let mut stats = Stats {
        setup: Histogram::default(),
        interarrival: Histogram::default(),
        probes: ProbeStats::default(),
        send_lag: Histogram::default(),
    };
    let mut stamped = StampedReceiver::new();
    let mut slots: Vec<Vec<usize>> = (0..SLOTS)
        .map(|_| Vec::with_capacity(cfg.calls / SLOTS + 1))
        .collect();
    let mut sip_buf = vec![0u8; 65536];
    let mut rtp_buf = [0u8; 2048];
    let mut packet = [0u8; PACKET_LEN];

    let epoch = Instant::now();
    reactor.start_timer(SLOT)?;
    let cpu0 = cpu_time();
    let mut next_tick: u64 = 1;
    let mut next_start = 0usize;
    let mut next_scan = epoch;
    let mut next_progress = epoch + Duration::from_secs(1);
    let mut resolved_at: Option<Snapshot> = None;
    let mut first_hangup: Option<Snapshot> = None;
    let mut stopping = false;
    let mut stop_requested = false;
    let mut lag_max_second = Duration::ZERO;
    let late_bound = rtp::PTIME + cfg.late;
    let start_interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));

    loop {
        let n = reactor.wait()?;
        for e in 0..n {
            let token = reactor.events[e].data();
            if token == TIMER {
                reactor.ack_timer();
            } else if token == STOP {
                reactor.ack_stop();
                stop_requested = true;
            } else if token == SIP_TOKEN {
                loop {
                    match sip_sock.recv_from(&mut sip_buf) {
                        Ok((len, _src)) => {
                            let now = Instant::now();
                            handle_sip(
                                &sip_buf[..len],
                                now,
                                run_id,
                                &cfg,
                                &mut calls,
                                &mut slots,
                                &sip_sock,
                                &mut counters,
                                &mut stats,
                            );
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
            } else {
                let idx = token as usize;
                let c = &mut calls[idx];
                // Level-triggered: one datagram per readiness (no EAGAIN round trip).
                let got = if cfg.probe_every > 0 {
                    stamped
                        .recv(&c.rtp, &mut rtp_buf)
                        .map(|d| (d.len, d.received_ns))
                } else {
                    c.rtp.recv(&mut rtp_buf).map(|len| (len, None))
                };
                match got {
                    Ok((len, received_ns)) if rtp::parse_header(&rtp_buf[..len]).is_some() => {
                        counters.rtp_received += 1;
                        let mut shared = rtp::Shared {
                            epoch,
                            late_bound,
                            interarrival: &mut stats.interarrival,
                            probes: &mut stats.probes,
                        };
                        c.receiver.handle_packet(
                            &rtp_buf[..len],
                            Instant::now(),
                            received_ns,
                            &mut shared,
                        );
                    }
                    Ok(_) => counters.rtp_bad += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // ICMP port unreachable on the connected socket, and the like.
                    Err(_) => counters.rtp_recv_errors += 1,
                }
            }
        }

        // RTP: every slot whose time has come, in order (late slots are sent late, not
        // skipped, so each stream keeps exactly 50 packets per second on average).
        let now = Instant::now();
        loop {
            let due = epoch + SLOT * next_tick as u32;
            if due > now {
                break;
            }
            let slot = (next_tick % SLOTS as u64) as usize;
            for &idx in &slots[slot] {
                let c = &mut calls[idx];
                let probe = cfg.probe_every > 0 && c.sender.sent % cfg.probe_every == 0;
                let seq = c.sender.next_packet(&tone, pt, probe, &mut packet);
                let t = Instant::now();
                // T1: the realtime clock right before the send (the kernel stamps T4 on it).
                let t1 = if probe { timestamps::realtime_ns() } else { 0 };
                match c.rtp.send(&packet) {
                    Ok(_) => counters.rtp_sent += 1,
                    Err(_) => counters.rtp_send_errors += 1,
                }
                if probe {
                    c.receiver.note_sent(seq, t, t1);
                }
                let lag = t.saturating_duration_since(due);
                stats.send_lag.record(lag);
                lag_max_second = lag_max_second.max(lag);
            }
            next_tick += 1;
        }

        // New calls at the configured rate.
        while !stopping
            && next_start < calls.len()
            && epoch + start_interval.mul_f64(next_start as f64) <= now
        {
            start_call(&mut calls[next_start], now, &cfg, &sip_sock, &mut counters);
            next_start += 1;
        }

        if now >= next_scan {
            next_scan = now + SIP_SCAN;
            if !stopping && (stop_requested || now.saturating_duration_since(epoch) >= cfg.max_time)
            {
                stopping = true;
                for c in calls.iter_mut() {
                    match c.phase {
                        Phase::NotStarted | Phase::Inviting => {
                            c.phase = Phase::Failed(Fail::Unfinished);
                            c.retransmit_at = None;
                        }
                        Phase::Established => c.hangup_at = Some(now),
                        _ => {}
                    }
                }
            }
            for (idx, c) in calls.iter_mut().enumerate() {
                match c.phase {
                    Phase::Inviting | Phase::Ending => {
                        if now >= c.give_up_at {
                            if c.phase == Phase::Inviting {
                                c.phase = Phase::Failed(Fail::Timeout);
                            } else {
                                c.bye_status = Some(408);
                                c.phase = Phase::Done;
                            }
                            c.retransmit_at = None;
                        } else if c.retransmit_at.is_some_and(|t| now >= t) {
                            let _ = sip_sock.send_to(&c.pending, cfg.server);
                            counters.retransmissions += 1;
                            c.interval = if c.phase == Phase::Ending {
                                (c.interval * 2).min(T2)
                            } else {
                                c.interval * 2
                            };
                            c.retransmit_at = Some(now + c.interval);
                        }
                    }
                    Phase::Established if c.hangup_at.is_some_and(|t| now >= t) => {
                        if first_hangup.is_none() {
                            first_hangup = Some(Snapshot {
                                at: now,
                                cpu: cpu_time(),
                                sent: counters.rtp_sent,
                                received: counters.rtp_received,
                            });
                        }
                        remove_from_slot(&mut slots, idx);
                        c.dialog.cseq += 1;
                        c.bye_cseq = c.dialog.cseq;
                        c.branch = sip::new_branch();
                        c.pending = c.dialog.request(
                            "BYE",
                            &c.dialog.remote_target.clone(),
                            &c.branch,
                            c.bye_cseq,
                            true,
                            "",
                            None,
                        );
                        let _ = sip_sock.send_to(&c.pending, cfg.server);
                        c.phase = Phase::Ending;
                        c.interval = T1;
                        c.retransmit_at = Some(now + T1);
                        c.give_up_at = now + T1 * 64;
                    }
                    _ => {}
                }
            }
            if resolved_at.is_none()
                && (next_start == calls.len() || stopping)
                && calls
                    .iter()
                    .all(|c| !matches!(c.phase, Phase::NotStarted | Phase::Inviting))
            {
                resolved_at = Some(Snapshot {
                    at: now,
                    cpu: cpu_time(),
                    sent: counters.rtp_sent,
                    received: counters.rtp_received,
                });
            }
            if calls
                .iter()
                .all(|c| matches!(c.phase, Phase::Done | Phase::Failed(_)))
                && (next_start == calls.len() || stopping)
            {
                break;
            }
        }

        if cfg.progress && now >= next_progress {
            next_progress += Duration::from_secs(1);
            let up = calls
                .iter()
                .filter(|c| c.phase == Phase::Established)
                .count();
            let failed = calls
                .iter()
                .filter(|c| matches!(c.phase, Phase::Failed(_)))
                .count();
            eprintln!(
                "t={:.0}s established_now={up} failed={failed} rtp_sent={} rtp_received={} cpu_s={:.2} send_lag_max_ms={:.1}",
                now.saturating_duration_since(epoch).as_secs_f64(),
                counters.rtp_sent,
                counters.rtp_received,
                (cpu_time() - cpu0).as_secs_f64(),
                lag_max_second.as_secs_f64() * 1000.0
            );
            lag_max_second = Duration::ZERO;
        }
    }

    let end = Instant::now();
    let cpu_total = cpu_time() - cpu0;
    print_summary(
        &cfg,
        &calls,
        &counters,
        &stats,
        end.saturating_duration_since(epoch),
        cpu_total,
        resolved_at.zip(first_hangup),
    );
    Ok(())
}

fn start_call(
    c: &mut Call,
    now: Instant,
    cfg: &CallConfig,
    sip_sock: &UdpSocket,
    counters: &mut Counters,
) {
    c.dialog.cseq = 1;
    c.invite_cseq = 1;
    c.branch = sip::new_branch();
    c.pending = c
        .dialog
        .request("INVITE", &c.ruri, &c.branch, 1, false, "", Some(&c.offer));
    let _ = sip_sock.send_to(&c.pending, cfg.server);
    counters.invites_sent += 1;
    c.phase = Phase::Inviting;
    c.started_at = Some(now);
    c.interval = T1;
    c.retransmit_at = Some(now + T1);
    c.give_up_at = now + cfg.setup_timeout;
}

fn call_index(call_id: &str, run_id: u32) -> Option<usize> {
    let rest = call_id.strip_prefix("lg")?;
    let (idx, rest) = rest.split_once('-')?;
    let (run, _) = rest.split_once('@')?;
    (u32::from_str_radix(run, 16).ok()? == run_id).then_some(())?;
    idx.parse().ok()
}

fn remove_from_slot(slots: &mut [Vec<usize>], idx: usize) {
    let s = &mut slots[idx % SLOTS];
    if let Some(p) = s.iter().position(|&i| i == idx) {
        s.swap_remove(p);
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_sip(
    bytes: &[u8],
    now: Instant,
    run_id: u32,
    cfg: &CallConfig,
    calls: &mut [Call],
    slots: &mut [Vec<usize>],
    sip_sock: &UdpSocket,
    counters: &mut Counters,
    stats: &mut Stats,
) {
    let Ok(msg) = switchboard_sip::parse_datagram(bytes) else {
        counters.sip_unmatched += 1;
        return;
    };
    let idx = msg.call_id().ok().and_then(|id| call_index(id, run_id));
    let Some(idx) = idx.filter(|&i| i < calls.len()) else {
        counters.sip_unmatched += 1;
        return;
    };
    match msg {
        Message::Response(r) => {
            handle_response(idx, r, now, cfg, calls, slots, sip_sock, stats, counters)
        }
        Message::Request(r) => handle_request(idx, r, cfg, calls, slots, sip_sock),
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_response(
    idx: usize,
    r: Response,
    now: Instant,
    cfg: &CallConfig,
    calls: &mut [Call],
    slots: &mut [Vec<usize>],
    sip_sock: &UdpSocket,
    stats: &mut Stats,
    counters: &mut Counters,
) {
    let Ok(cseq) = r.cseq() else { return };
    let c = &mut calls[idx];
    match cseq.method {
        Method::Invite => {
            if r.status >= 200 && c.phase == Phase::Established && r.status < 300 {
                // A retransmitted 2xx: our ACK was lost.
                let _ = sip_sock.send_to(&c.ack, cfg.server);
                return;
            }
            if c.phase != Phase::Inviting || cseq.seq != c.invite_cseq {
                if r.status >= 300 && cseq.seq == c.invite_cseq {
                    // A retransmitted final error: ACK it again.
                    let _ = sip_sock.send_to(&c.ack, cfg.server);
                }
                return;
            }
            if r.status < 200 {
                c.retransmit_at = None; // Proceeding: the server has it (Timer A stops).
                return;
            }
            // Every final response to an INVITE is ACKed; for non-2xx in the same
            // transaction (same branch, To with the response's tag).
            if r.status >= 300 {
                let mut d = c.dialog.clone();
                d.learn(&Message::Response(r.clone()), true);
                c.ack = d.request("ACK", &c.ruri, &c.branch, c.invite_cseq, false, "", None);
                let _ = sip_sock.send_to(&c.ack, cfg.server);
                c.retransmit_at = None;
                if (r.status == 401 || r.status == 407) && !c.authenticated {
                    let Some((challenge, header)) = sip::challenge(&r) else {
                        c.phase = Phase::Failed(Fail::Rejected(r.status));
                        return;
                    };
                    let Ok(params) = switchboard_sip::digest::ChallengeParams::parse(challenge)
                    else {
                        c.phase = Phase::Failed(Fail::AuthRejected);
                        return;
                    };
                    let (user, password) = &cfg.credentials[c.credential];
                    let cnonce = format!("{:08x}", rand::random::<u32>());
                    let answer = params.answer(user, password, "INVITE", &c.ruri, 1, &cnonce);
                    c.authenticated = true;
                    c.dialog.cseq += 1;
                    c.invite_cseq = c.dialog.cseq;
                    c.branch = sip::new_branch();
                    c.pending = c.dialog.request(
                        "INVITE",
                        &c.ruri,
                        &c.branch,
                        c.invite_cseq,
                        false,
                        &format!("{header}: {answer}\r\n"),
                        Some(&c.offer),
                    );
                    let _ = sip_sock.send_to(&c.pending, cfg.server);
                    counters.invites_sent += 1;
                    c.interval = T1;
                    c.retransmit_at = Some(now + T1);
                    return;
                }
                c.phase = Phase::Failed(if r.status == 401 || r.status == 407 {
                    Fail::AuthRejected
                } else {
                    Fail::Rejected(r.status)
                });
                return;
            }
            // 2xx: the dialog is confirmed.
            c.retransmit_at = None;
            let remote_rtp = sip::sdp_audio(&r.body);
            let msg = Message::Response(r);
            c.dialog.learn(&msg, true);
            if c.dialog.remote_target.is_empty() {
                c.dialog.remote_target = c.ruri.clone();
            }
            let target = c.dialog.remote_target.clone();
            c.ack = c.dialog.request(
                "ACK",
                &target,
                &sip::new_branch(),
                c.invite_cseq,
                true,
                "",
                None,
            );
            let _ = sip_sock.send_to(&c.ack, cfg.server);
            let Some((addr, _pt)) = remote_rtp else {
                // Hang up at once: a call without media is no participant.
                c.phase = Phase::Failed(Fail::NoSdp);
                return;
            };
            // Connected: the kernel then delivers only the server's packets to this
            // socket and skips the route lookup on every send.
            if c.rtp.connect(addr).is_err() {
                c.phase = Phase::Failed(Fail::NoSdp);
                return;
            }
            if let Some(t) = c.started_at {
                stats.setup.record(now.saturating_duration_since(t));
            }
            c.phase = Phase::Established;
            c.hangup_at = Some(now + cfg.hold);
            slots[idx % SLOTS].push(idx);
        }
        Method::Bye => {
            if c.phase == Phase::Ending && cseq.seq == c.bye_cseq && r.status >= 200 {
                c.bye_status = Some(r.status);
                c.phase = Phase::Done;
                c.retransmit_at = None;
            } else if c.phase == Phase::Ending && r.status < 200 {
                c.retransmit_at = Some(now + T2);
            }
        }
        _ => {}
    }
}

fn handle_request(
    idx: usize,
    r: Request,
    cfg: &CallConfig,
    calls: &mut [Call],
    slots: &mut [Vec<usize>],
    sip_sock: &UdpSocket,
) {
    let c = &mut calls[idx];
    let tag = c.dialog.local_tag.clone();
    let reply = match r.method {
        Method::Ack => return,
        Method::Bye => {
            if c.phase == Phase::Established {
                remove_from_slot(slots, idx);
                c.remote_bye = true;
                c.phase = Phase::Done;
            }
            sip::response(&r, 200, "OK", &tag, "", None)
        }
        Method::Invite => {
            // A re-INVITE: follow a new media address, answer with our unchanged offer.
            if let Some((addr, _)) = sip::sdp_audio(&r.body) {
                let _ = c.rtp.connect(addr);
            }
            let contact = format!("Contact: {}\r\n", c.dialog.contact);
            sip::response(&r, 200, "OK", &tag, &contact, Some(&c.offer))
        }
        _ => sip::response(&r, 200, "OK", &tag, "", None),
    };
    let _ = sip_sock.send_to(&reply, cfg.server);
}

fn print_summary(
    cfg: &CallConfig,
    calls: &[Call],
    counters: &Counters,
    stats: &Stats,
    wall: Duration,
    cpu: Duration,
    steady: Option<(Snapshot, Snapshot)>,
) {
    // hangup_at is set when the 2xx arrives, and only then.
    let established = calls.iter().filter(|c| c.hangup_at.is_some()).count();
    let mut fails: std::collections::BTreeMap<String, usize> = Default::default();
    for c in calls {
        if let Phase::Failed(f) = c.phase {
            let k = match f {
                Fail::Rejected(s) => format!("status_{s}"),
                Fail::Timeout => "timeout".into(),
                Fail::AuthRejected => "auth".into(),
                Fail::NoSdp => "no_sdp".into(),
                Fail::Unfinished => "unfinished".into(),
            };
            *fails.entry(k).or_default() += 1;
        }
    }
    let failed: usize = fails.values().sum();
    let fail_detail = if fails.is_empty() {
        "none".to_string()
    } else {
        fails
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let bye_ok = calls
        .iter()
        .filter(|c| c.bye_status.is_some_and(|s| (200..300).contains(&s)))
        .count();
    let bye_failed = calls
        .iter()
        .filter(|c| c.bye_status.is_some_and(|s| s >= 300))
        .count();
    let remote_bye = calls.iter().filter(|c| c.remote_bye).count();
    let (mut expected, mut lost, mut late, mut ssrc_changes) = (0u64, 0u64, 0u64, 0u64);
    let mut jitter_sum = 0.0;
    let mut jitter_max: f64 = 0.0;
    let mut receiving = 0usize;
    let mut silent_calls = 0usize;
    for c in calls {
        if c.sender.sent > 0 && c.receiver.received == 0 {
            silent_calls += 1;
        }
        if c.receiver.received == 0 {
            continue;
        }
        receiving += 1;
        expected += c.receiver.expected();
        lost += c.receiver.lost();
        late += c.receiver.late;
        ssrc_changes += c.receiver.ssrc_changes;
        jitter_sum += c.receiver.jitter_ms();
        jitter_max = jitter_max.max(c.receiver.jitter_ms());
    }
    let loss_pct = if expected > 0 {
        100.0 * lost as f64 / expected as f64
    } else {
        0.0
    };
    let steady_txt = match steady {
        Some((a, b)) if b.at > a.at => {
            let secs = b.at.saturating_duration_since(a.at).as_secs_f64();
            format!(
                "steady_s={secs:.1} steady_cpu={:.1}% steady_pps_sent={:.0} steady_pps_received={:.0} \
                 steady_received_per_call_pps={:.2}",
                100.0 * (b.cpu - a.cpu).as_secs_f64() / secs,
                (b.sent - a.sent) as f64 / secs,
                (b.received - a.received) as f64 / secs,
                (b.received - a.received) as f64 / secs / established.max(1) as f64
            )
        }
        _ => "steady_s=0".to_string(),
    };
    let p = &stats.probes;
    let mut rtt = String::new();
    if p.rtt.count() > 0 {
        rtt = format!(" echo_rtt_ms {} (n={})", p.rtt.summary_ms(), p.rtt.count());
    }
    // The kernel-stamped round trip minus the reflector's turnaround (RFC 5357 style).
    if p.net_rtt.count() > 0 || p.net_negative > 0 || p.unstamped > 0 {
        rtt += &format!(
            " net_rtt_us {} (n={}) reflector_turnaround_us p50={} p99={} net_rtt_negative={} probes_unstamped={}",
            p.net_rtt.summary_us(),
            p.net_rtt.count(),
            p.turnaround.quantile_us(0.5),
            p.turnaround.quantile_us(0.99),
            p.net_negative,
            p.unstamped
        );
    }
    println!(
        "SUMMARY loadgen{} calls={} established={established} failed={failed} fail_reasons={fail_detail} \
         bye_ok={bye_ok} bye_failed={bye_failed} remote_bye={remote_bye} invites={} sip_retransmissions={} \
         setup_ms p50={:.1} p99={:.1} max={:.1} \
         rtp_sent={} rtp_send_errors={} rtp_recv_errors={} rtp_received={} calls_receiving={receiving} calls_sent_but_nothing_back={silent_calls} \
         expected={expected} lost={lost} loss_pct={loss_pct:.4} late_{}ms={late} ssrc_changes={ssrc_changes} \
         jitter_ms mean={:.2} max={:.2} interarrival_ms {} send_lag_ms {}{rtt} \
         loadgen_cpu_s={:.2} wall_s={:.1} loadgen_cpu={:.1}% {steady_txt}",
        if cfg.label.is_empty() { String::new() } else { format!(" label={}", cfg.label) },
        calls.len(),
        counters.invites_sent,
        counters.retransmissions,
        stats.setup.quantile_us(0.5) as f64 / 1000.0,
        stats.setup.quantile_us(0.99) as f64 / 1000.0,
        stats.setup.max_us() as f64 / 1000.0,
        counters.rtp_sent,
        counters.rtp_send_errors,
        counters.rtp_recv_errors,
        counters.rtp_received,
        cfg.late.as_millis(),
        if receiving > 0 { jitter_sum / receiving as f64 } else { 0.0 },
        jitter_max,
        stats.interarrival.summary_ms(),
        stats.send_lag.summary_ms(),
        cpu.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
    );
    if counters.sip_unmatched > 0 || counters.rtp_bad > 0 {
        println!(
            "# sip_unmatched={} rtp_not_rtp={}",
            counters.sip_unmatched, counters.rtp_bad
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_index_checks_the_run() {
        assert_eq!(call_index("lg17-0000abcd@127.0.0.1", 0xabcd), Some(17));
        assert_eq!(call_index("lg17-0000abce@127.0.0.1", 0xabcd), None);
        assert_eq!(call_index("other", 1), None);
    }
}
