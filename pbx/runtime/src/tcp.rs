//! SIP over TCP: one task per connection (mini-redis style) that frames messages with
//! `parse_stream` and writes what the engine queues for that peer. A connection is
//! closed when the framing breaks (a stream cannot resynchronise), when a peer leaves a
//! message half-sent past `tcp_partial_timeout`, or when it is idle too long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_sip::transaction::{Target, Transport};
use switchboard_sip::{parse_stream, StreamItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::{DriverConfig, Input, Metrics};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    input: mpsc::Sender<Input>,
    driver: DriverConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(driver.max_tcp_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.count_refused_connection();
            tracing::warn!(%peer, "TCP connection refused: connection limit reached");
            continue;
        };
        let input = input.clone();
        let driver = driver.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve(stream, peer, input, driver, metrics, shutdown).await;
            drop(permit);
        });
    }
}

/// Opens a connection for a request the engine sends to a TCP target we are not
/// connected to.
pub(crate) async fn connect(
    addr: SocketAddr,
    input: mpsc::Sender<Input>,
    driver: DriverConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => serve(stream, addr, input, driver, metrics, shutdown).await,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "TCP connect failed");
            let _ = input.send(Input::TcpConnectFailed(addr)).await;
        }
        Err(_) => {
            tracing::debug!(%addr, "TCP connect timed out");
            let _ = input.send(Input::TcpConnectFailed(addr)).await;
        }
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    input: mpsc::Sender<Input>,
    driver: DriverConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Arc<[u8]>>(256);
    if input.send(Input::TcpOpened(peer, out_tx)).await.is_err() {
        return;
    }
    let source = Target {
        transport: Transport::Tcp,
        addr: peer,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // A half-received message gets the short deadline; an idle connection the long one.
        let limit = if buf.is_empty() {
            driver.tcp_idle_timeout
        } else {
            driver.tcp_partial_timeout
        };
        tokio::select! {
            r = tokio::time::timeout(limit, reader.read(&mut chunk)) => {
                let n = match r {
                    Err(_) => {
                        if !buf.is_empty() {
                            metrics.count_stalled();
                            tracing::info!(%peer, pending = buf.len(), "TCP peer stalled mid-message; closing");
                        }
                        break;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                if !drain_frames(&mut buf, source, &input, &driver, &metrics, &mut writer).await {
                    break;
                }
            }
            out = out_rx.recv() => {
                let Some(data) = out else { break };
                if writer.write_all(&data).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                // Keep serving during the grace period: BYEs go out on this connection.
                if *shutdown.borrow() {
                    continue;
                }
            }
        }
    }
    let _ = input.send(Input::TcpClosed(peer)).await;
}

/// Hands every complete message in `buf` to the engine. Returns false when the
/// connection must close (framing error or the engine is gone).
async fn drain_frames(
    buf: &mut Vec<u8>,
    source: Target,
    input: &mpsc::Sender<Input>,
    driver: &DriverConfig,
    metrics: &Metrics,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
) -> bool {
    loop {
        match parse_stream(buf, driver.max_message_size) {
            Ok(StreamItem::Message(msg, used)) => {
                buf.drain(..used);
                if input.send(Input::Message(msg, source)).await.is_err() {
                    return false;
                }
            }
            Ok(StreamItem::KeepAlive(used)) => {
                // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                let ping = buf[..used].windows(4).any(|w| w == b"\r\n\r\n");
                buf.drain(..used);
                if ping && writer.write_all(b"\r\n").await.is_err() {
                    return false;
                }
            }
            Ok(StreamItem::Incomplete) => return true,
            Err(e) => {
                if let Some(len) = e.frame_len() {
                    // The message is bad but its length was sound: skip it, let the
                    // engine answer it (400) on this connection, and read on.
                    buf.drain(..len.min(buf.len()));
                    if input
                        .send(Input::ParseError(e, source, true))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                    continue;
                }
                if buf.len() > driver.max_message_size {
                    metrics.count_oversize();
                }
                tracing::info!(peer = %source.addr, error = %e, "unframeable data on TCP; closing");
                // The connection closes now, so answer here rather than through the engine.
                if let Some(resp) = e.response() {
                    let _ = writer.write_all(&resp.to_bytes()).await;
                }
                let _ = input.send(Input::ParseError(e, source, false)).await;
                return false;
            }
        }
    }
}
