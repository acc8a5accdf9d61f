//! Media sockets: one tokio task per call owns the call's four UDP sockets (RTP and RTCP
//! for each leg) and its pure `MediaSession`, feeds it packets and the time, sends what it
//! asks, and reports its events to the engine task. The engine decides which ports a call
//! uses; this module only binds them and moves bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use switchboard_core::media::{MediaCommand, MediaNotice};
use switchboard_core::ports::PortPair;
use switchboard_media::relay::{Leg, MediaSession, PacketKind};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::{Input, Metrics};

/// Commands for one call's media task.
pub(crate) enum MediaControl {
    Command(MediaCommand),
}

/// Live media tasks by call, owned by the engine task.
#[derive(Default)]
pub(crate) struct MediaTasks {
    tasks: std::collections::HashMap<u64, mpsc::UnboundedSender<MediaControl>>,
}

impl MediaTasks {
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Applies a command from the engine: opening spawns the task, the rest go to it.
    pub(crate) fn apply(
        &mut self,
        command: MediaCommand,
        bind_ip: IpAddr,
        input: &mpsc::Sender<Input>,
        metrics: &Arc<Metrics>,
    ) {
        match command {
            MediaCommand::Open { call, a, b, config } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.tasks.insert(call, tx);
                tokio::spawn(run_call_media(
                    call,
                    [a, b],
                    bind_ip,
                    MediaSession::new(config, Instant::now()),
                    rx,
                    input.clone(),
                    metrics.clone(),
                ));
            }
            MediaCommand::Close { call } => {
                // Dropping the sender ends the task once it has drained its queue.
                self.tasks.remove(&call);
            }
            other => {
                let call = other.call();
                if let Some(tx) = self.tasks.get(&call) {
                    let _ = tx.send(MediaControl::Command(other));
                }
            }
        }
    }
}

async fn bind_pair(ip: IpAddr, pair: PortPair) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let rtp = UdpSocket::bind(SocketAddr::new(ip, pair.rtp)).await?;
    let rtcp = UdpSocket::bind(SocketAddr::new(ip, pair.rtcp)).await?;
    Ok((rtp, rtcp))
}

async fn run_call_media(
    call: u64,
    pairs: [PortPair; 2],
    ip: IpAddr,
    mut session: MediaSession,
    mut control: mpsc::UnboundedReceiver<MediaControl>,
    input: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
) {
    let mut sockets = Vec::with_capacity(4);
    for pair in pairs {
        match bind_pair(ip, pair).await {
            Ok((rtp, rtcp)) => {
                sockets.push(rtp);
                sockets.push(rtcp);
            }
            Err(e) => {
                tracing::warn!(call, port = pair.rtp, error = %e, "cannot bind an RTP port");
                let _ = input
                    .send(Input::Media(call, MediaNotice::BindFailed { pair }))
                    .await;
                return;
            }
        }
    }
    metrics.media_sessions_started();
    // sockets: [A rtp, A rtcp, B rtp, B rtcp]
    let slot = |leg: Leg, kind: PacketKind| -> usize {
        (match leg {
            Leg::A => 0,
            Leg::B => 2,
        }) + (match kind {
            PacketKind::Rtp => 0,
            PacketKind::Rtcp => 1,
        })
    };
    let mut bufs = [[0u8; 2048]; 4];
    let far_future = std::time::Duration::from_secs(3600);
    loop {
        let wake = session
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + far_future);
        let [b0, b1, b2, b3] = &mut bufs;
        tokio::select! {
            r = sockets[0].recv_from(b0) => if let Ok((n, from)) = r {
                session.handle_packet(Leg::A, PacketKind::Rtp, from, &b0[..n], Instant::now());
            },
            r = sockets[1].recv_from(b1) => if let Ok((n, from)) = r {
                session.handle_packet(Leg::A, PacketKind::Rtcp, from, &b1[..n], Instant::now());
            },
            r = sockets[2].recv_from(b2) => if let Ok((n, from)) = r {
                session.handle_packet(Leg::B, PacketKind::Rtp, from, &b2[..n], Instant::now());
            },
            r = sockets[3].recv_from(b3) => if let Ok((n, from)) = r {
                session.handle_packet(Leg::B, PacketKind::Rtcp, from, &b3[..n], Instant::now());
            },
            c = control.recv() => match c {
                Some(MediaControl::Command(cmd)) => {
                    if let Some((leg, cfg)) = cmd.leg_config() {
                        session.configure_leg(leg, cfg, Instant::now());
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => session.handle_timeout(Instant::now()),
        }
        while let Some(t) = session.poll_transmit() {
            let socket = &sockets[slot(t.leg, t.kind)];
            if socket.try_send_to(&t.data, t.to).is_err() {
                metrics.count_media_send_error();
            }
        }
        while let Some(event) = session.poll_event() {
            if input
                .send(Input::Media(call, MediaNotice::Session(event)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    metrics.media_sessions_ended(session.stats());
}
