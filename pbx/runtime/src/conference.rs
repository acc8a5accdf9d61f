//! Conference rooms on the runtime side: one tokio task per room owns its participants'
//! UDP sockets and the pure `Mixer`, and runs the 20 ms mixing clock. The engine decides
//! who is in which room with which codec and ports; this module binds, moves bytes and
//! keeps time.
//!
//! Why sockets are read once per tick and not per packet: the mixer only consumes audio
//! at ticks, so draining every socket right before mixing gives it exactly what a
//! per-packet wake-up would, at one wake-up per room and tick instead of one per packet
//! (50 per second per participant). The price is that arrival times are known to the
//! tick, which the jitter buffer sees as up to 20 ms of jitter (its delay settles a frame
//! or two higher than with exact times).
//!
//! Deadlines: the tick is a `tokio::time::interval` with `MissedTickBehavior::Skip` — a
//! late mixer drops the frames it cannot make rather than bursting them out late (a burst
//! would arrive at every phone as jitter). A tick counts as a missed deadline when its work
//! ends after the next tick is due, and every tick skipped counts as one too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::udp_batch::BatchSocket;
use switchboard_core::conference::{ParticipantMedia, RoomCommand, RoomNotice};
use switchboard_core::ports::PortPair;
use switchboard_media::mixer::{Mixer, MixerConfig, MixerEvent, ParticipantConfig, TICK};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::{Input, Metrics};

/// What a room task is told by the engine task.
enum RoomControl {
    Join {
        participant: u64,
        pair: PortPair,
        media: ParticipantMedia,
    },
    Update {
        participant: u64,
        media: ParticipantMedia,
    },
    Mute {
        participant: u64,
        muted: bool,
    },
    Leave {
        participant: u64,
    },
}

/// Live room tasks by room number, owned by the engine task.
pub(crate) struct Rooms {
    tasks: HashMap<String, mpsc::UnboundedSender<RoomControl>>,
    threads: crate::MediaThreads,
}

impl Rooms {
    pub(crate) fn new(threads: crate::MediaThreads) -> Rooms {
        Rooms {
            tasks: HashMap::new(),
            threads,
        }
    }

    pub(crate) fn apply(
        &mut self,
        command: RoomCommand,
        bind_ip: IpAddr,
        input: &mpsc::Sender<Input>,
        metrics: &Arc<Metrics>,
    ) {
        let (room, control) = match command {
            RoomCommand::Open {
                room,
                moderated,
                tones,
                rtp_timeout,
            } => {
                let mut config = MixerConfig {
                    moderated,
                    rtp_timeout: Some(rtp_timeout),
                    moh_seed: rand::random(),
                    ..MixerConfig::default()
                };
                if !tones {
                    config.join_tone = None;
                    config.leave_tone = None;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                self.tasks.insert(room.clone(), tx);
                metrics
                    .conference_rooms
                    .store(self.tasks.len() as u64, Relaxed);
                self.threads.spawn(run_room(
                    room,
                    Mixer::new(config),
                    bind_ip,
                    rx,
                    input.clone(),
                    metrics.clone(),
                ));
                return;
            }
            RoomCommand::Close { room } => {
                // Dropping the sender ends the task once it has drained its queue.
                self.tasks.remove(&room);
                metrics
                    .conference_rooms
                    .store(self.tasks.len() as u64, Relaxed);
                return;
            }
            RoomCommand::Join {
                room,
                participant,
                pair,
                media,
            } => (
                room,
                RoomControl::Join {
                    participant,
                    pair,
                    media,
                },
            ),
            RoomCommand::Update {
                room,
                participant,
                media,
            } => (room, RoomControl::Update { participant, media }),
            RoomCommand::Mute {
                room,
                participant,
                muted,
            } => (room, RoomControl::Mute { participant, muted }),
            RoomCommand::Leave { room, participant } => (room, RoomControl::Leave { participant }),
        };
        if let Some(tx) = self.tasks.get(&room) {
            let _ = tx.send(control);
        }
    }
}

/// One participant's sockets and where their RTP goes.
struct Endpoint {
    rtp: BatchSocket,
    rtcp: BatchSocket,
    /// From their SDP until their first packet, then the address it came from
    /// (symmetric RTP: phones behind NAT are reached where they really are).
    remote: Option<SocketAddr>,
    latched: bool,
}

fn participant_config(media: &ParticipantMedia) -> ParticipantConfig {
    ParticipantConfig {
        codec: media.codec.clone(),
        ssrc: rand::random(),
        speaker: media.speaker,
        muted: media.muted,
        send: media.send,
    }
}

async fn bind_pair(ip: IpAddr, pair: PortPair) -> std::io::Result<(BatchSocket, BatchSocket)> {
    let rtp = BatchSocket::bind(SocketAddr::new(ip, pair.rtp)).await?;
    let rtcp = BatchSocket::bind(SocketAddr::new(ip, pair.rtcp)).await?;
    Ok((rtp, rtcp))
}

async fn run_room(
    room: String,
    mut mixer: Mixer,
    ip: IpAddr,
    mut control: mpsc::UnboundedReceiver<RoomControl>,
    input: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
) {
    tracing::debug!(%room, "room mixer started");
    let mut endpoints: HashMap<u64, Endpoint> = HashMap::new();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_due: Option<tokio::time::Instant> = None;
    let mut notices: Vec<(u64, RoomNotice)> = Vec::new();
    loop {
        tokio::select! {
            c = control.recv() => match c {
                Some(RoomControl::Join { participant, pair, media }) => {
                    match bind_pair(ip, pair).await {
                        Ok((rtp, rtcp)) => {
                            let now = Instant::now();
                            match mixer.add_participant(participant, participant_config(&media), now) {
                                Ok(()) => {
                                    endpoints.insert(participant, Endpoint { rtp, rtcp, remote: media.remote, latched: false });
                                    metrics.conference_participants.fetch_add(1, Relaxed);
                                }
                                Err(e) => {
                                    tracing::warn!(%room, participant, error = %e, "participant cannot be mixed");
                                    notices.push((participant, RoomNotice::RtpTimeout));
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%room, participant, port = pair.rtp, error = %e, "cannot bind a conference RTP port");
                            notices.push((participant, RoomNotice::BindFailed { pair }));
                        }
                    }
                }
                Some(RoomControl::Update { participant, media }) => {
                    if let Some(e) = endpoints.get_mut(&participant) {
                        if !e.latched {
                            e.remote = media.remote;
                        }
                    }
                    if let Err(e) = mixer.reconfigure(participant, participant_config(&media)) {
                        tracing::debug!(%room, participant, error = %e, "update for a participant not mixed");
                    }
                }
                Some(RoomControl::Mute { participant, muted }) => {
                    let _ = mixer.set_muted(participant, muted);
                }
                Some(RoomControl::Leave { participant }) => {
                    if endpoints.remove(&participant).is_some() {
                        metrics.conference_participants.fetch_sub(1, Relaxed);
                    }
                    let _ = mixer.remove_participant(participant);
                }
                None => break,
            },
            due = interval.tick() => {
                if let Some(last) = last_due {
                    // Skip mode: ticks we could not make are simply not delivered.
                    let skipped = (due - last).as_micros() / TICK.as_micros();
                    if skipped > 1 {
                        metrics.conference_deadline_misses.fetch_add(skipped as u64 - 1, Relaxed);
                    }
                }
                last_due = Some(due);
                let now = Instant::now();
                for (id, e) in endpoints.iter_mut() {
                    let Endpoint { rtp, rtcp, remote, latched } = e;
                    rtp.try_drain(64, |from, bytes| {
                        if !*latched {
                            *latched = true;
                            *remote = Some(from);
                        } else if *remote != Some(from) {
                            metrics.rtp_unexpected_source.fetch_add(1, Relaxed);
                            return;
                        }
                        mixer.handle_packet(*id, bytes, now);
                    });
                    // RTCP is read only so that it does not pile up in the socket.
                    rtcp.try_drain(64, |_, _| {});
                }
                mixer.tick(now);
                while let Some(t) = mixer.poll_transmit() {
                    let Some(e) = endpoints.get(&t.participant) else { continue };
                    let Some(to) = e.remote else { continue };
                    if e.rtp.try_send_to(&t.data, to).is_err() {
                        metrics.count_media_send_error();
                    }
                }
                while let Some(event) = mixer.poll_event() {
                    match event {
                        MixerEvent::RtpTimeout { participant } => notices.push((participant, RoomNotice::RtpTimeout)),
                    }
                }
                metrics.conference_ticks.fetch_add(1, Relaxed);
                if tokio::time::Instant::now() > due + TICK {
                    metrics.conference_deadline_misses.fetch_add(1, Relaxed);
                }
            }
        }
        for (participant, notice) in notices.drain(..) {
            if input.send(Input::Room(participant, notice)).await.is_err() {
                break;
            }
        }
    }
    metrics
        .conference_participants
        .fetch_sub(endpoints.len() as u64, Relaxed);
    let stats = mixer.stats();
    metrics.rtp_packets_in.fetch_add(stats.packets_in, Relaxed);
    metrics
        .rtp_packets_out
        .fetch_add(stats.packets_out, Relaxed);
    tracing::debug!(%room, ?stats, "room mixer stopped");
}
