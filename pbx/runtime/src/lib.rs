//! The tokio driver around the pure [`Engine`]: it owns the UDP socket, the TCP listener
//! and connections, real time, and the store. It is deliberately thin: every SIP decision
//! is the engine's. One task runs the engine (and reads UDP itself, so a datagram costs no
//! channel hop); one task per TCP connection frames messages; one task writes bindings to
//! the store; one polls the store for user changes.
//!
//! It must never block the engine task on the database or on a slow peer: bounded queues
//! everywhere, and what does not fit is dropped and counted.

mod cdr;
mod conference;
mod control;
pub mod dialplan;
pub mod events;
mod media;
mod metrics;
pub mod prompts;
mod shards;
mod tcp;
mod udp_batch;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchboard_core::target::{format_target, parse_target};
use switchboard_core::{
    Binding, BindingChange, Directory, DirectoryUser, Engine, EngineConfig, EngineEvent,
};
use switchboard_sip::transaction::{Target, Transport};
use switchboard_sip::{Message, ParseError};
use switchboard_store::Store;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

pub use control::{CallControl, ControlError, ControlInbox};
pub use events::CallEvent;
pub use media::{load_moh_library, MohLibrary};
pub use metrics::Metrics;
pub use prompts::PromptLibrary;
pub use shards::MediaThreads;

/// Limits and timings of the driver itself (the protocol's live in `EngineConfig`).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Largest SIP message accepted on UDP or TCP; larger ones are refused and counted.
    pub max_message_size: usize,
    /// A TCP peer that leaves a message half-sent for this long is disconnected.
    pub tcp_partial_timeout: Duration,
    /// A TCP connection with no traffic at all for this long is closed.
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connections: usize,
    /// How long shutdown waits for calls to be hung up and transactions to finish.
    pub shutdown_grace: Duration,
    /// How often the store is asked whether users changed.
    pub user_poll_interval: Duration,
    /// Where call recordings go (one folder per day).
    pub recordings_dir: std::path::PathBuf,
    /// Installed music-on-hold classes (empty: the generated default only).
    pub moh: MohLibrary,
    /// Recorded prompts (empty: the shipped prompts only).
    pub prompts: PromptLibrary,
    /// Threads that call media and conference rooms run on (none: the driver's runtime).
    pub media_threads: MediaThreads,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            max_message_size: 65_535,
            tcp_partial_timeout: Duration::from_secs(32),
            tcp_idle_timeout: Duration::from_secs(3600),
            max_tcp_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            user_poll_interval: Duration::from_secs(1),
            recordings_dir: std::path::PathBuf::from("switchboard-data/recordings"),
            moh: MohLibrary::new(),
            prompts: PromptLibrary::default(),
            media_threads: MediaThreads::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("cannot listen for SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] switchboard_store::StoreError),
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

/// The bound SIP sockets: UDP and TCP on the same address and port.
pub struct SipSockets {
    udp: UdpSocket,
    tcp: TcpListener,
    local: SocketAddr,
}

impl SipSockets {
    /// Binds UDP and TCP on `addr`. With port 0, one free port that both can use is chosen.
    pub async fn bind(addr: SocketAddr) -> Result<SipSockets, RuntimeError> {
        let attempts = if addr.port() == 0 { 20 } else { 1 };
        let mut last_err = None;
        for _ in 0..attempts {
            let udp = match UdpSocket::bind(addr).await {
                Ok(u) => u,
                Err(source) => return Err(RuntimeError::Bind { addr, source }),
            };
            let local = udp.local_addr()?;
            tune_udp_buffers(&udp);
            match TcpListener::bind(local).await {
                Ok(tcp) => return Ok(SipSockets { udp, tcp, local }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(RuntimeError::Bind {
            addr,
            source: last_err.unwrap_or_else(|| std::io::Error::other("no free port")),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Socket buffer sizes asked for the SIP UDP socket: a few seconds of a busy server's
/// traffic, so a short stall of the engine thread queues datagrams instead of dropping
/// them (the kernel default of ~208 KB dropped SIP replies at 2,000 calls/s here).
const UDP_RECV_BUFFER: usize = 8 << 20;
const UDP_SEND_BUFFER: usize = 4 << 20;

/// Enlarges the UDP buffers: the privileged option first (it may exceed
/// `net.core.rmem_max`), else the ordinary one (capped by it). Logs what it got.
fn tune_udp_buffers(udp: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(udp, sockopt::RcvBufForce, &UDP_RECV_BUFFER).is_err() {
        let _ = setsockopt(udp, sockopt::RcvBuf, &UDP_RECV_BUFFER);
    }
    if setsockopt(udp, sockopt::SndBufForce, &UDP_SEND_BUFFER).is_err() {
        let _ = setsockopt(udp, sockopt::SndBuf, &UDP_SEND_BUFFER);
    }
    // Linux reports twice the size set (the kernel's bookkeeping share).
    let got = getsockopt(udp, sockopt::RcvBuf).unwrap_or(0) / 2;
    if got < UDP_RECV_BUFFER {
        tracing::warn!(
            receive_buffer = got,
            wanted = UDP_RECV_BUFFER,
            "the SIP UDP receive buffer is small; under load datagrams may be dropped (raise net.core.rmem_max or run with CAP_NET_ADMIN)"
        );
    } else {
        tracing::debug!(receive_buffer = got, "SIP UDP buffers set");
    }
}

/// The address to write in Via and Contact when listening on `listen`: the listen address
/// itself, or for a wildcard the address the OS would route outward from (found with a
/// connected UDP socket, which sends nothing).
pub fn advertised_host(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        let probe = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|_| s))
            .and_then(|s| s.local_addr());
        match probe {
            Ok(a) if !a.ip().is_unspecified() => a.ip(),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    } else {
        listen.ip()
    };
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// What the other tasks tell the engine task.
enum Input {
    Message(Message, Target),
    /// A message that could not be parsed; `true` when the engine should answer it.
    ParseError(ParseError, Target, bool),
    TcpOpened(SocketAddr, mpsc::Sender<Arc<[u8]>>),
    TcpClosed(SocketAddr),
    TcpConnectFailed(SocketAddr),
    Directory(Directory),
    Media(u64, switchboard_core::media::MediaNotice),
    /// A conference room task's report about a participant.
    Room(u64, switchboard_core::conference::RoomNotice),
    /// A reloaded dialplan for new calls.
    Router(Box<dyn switchboard_core::Router>),
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wall clock in unix milliseconds (event and call log stamps).
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn to_directory(users: Vec<switchboard_store::User>) -> Directory {
    Directory::new(users.into_iter().map(|u| DirectoryUser {
        name: u.name,
        extension: u.extension,
        display_name: u.display_name,
        realm: u.realm,
        ha1_md5: u.ha1_md5,
        ha1_sha256: u.ha1_sha256,
    }))
}

fn binding_from_store(b: switchboard_store::Binding) -> Option<Binding> {
    let Some(source) = parse_target(&b.received) else {
        tracing::warn!(aor = %b.aor, received = %b.received, "stored binding with an unreadable source skipped");
        return None;
    };
    Some(Binding {
        aor: b.aor,
        contact: b.contact,
        instance: b.instance,
        call_id: b.call_id,
        cseq: u32::try_from(b.cseq).unwrap_or(0),
        expires_at: u64::try_from(b.expires_at).unwrap_or(0),
        source,
        path: b
            .path
            .map(|p| p.lines().map(str::to_string).collect())
            .unwrap_or_default(),
        user_agent: b.user_agent,
    })
}

fn binding_to_store(b: &Binding) -> switchboard_store::Binding {
    switchboard_store::Binding {
        aor: b.aor.clone(),
        contact: b.contact.clone(),
        instance: b.instance.clone(),
        call_id: b.call_id.clone(),
        cseq: i64::from(b.cseq),
        expires_at: i64::try_from(b.expires_at).unwrap_or(i64::MAX),
        received: format_target(b.source),
        // One Path value per line: values never contain a line break once parsed.
        path: (!b.path.is_empty()).then(|| b.path.join("\n")),
        user_agent: b.user_agent.clone(),
    }
}

/// Runs the SIP service until `shutdown` turns true, then shuts down gracefully: new calls
/// are refused, live calls get BYE, and the loop ends when the engine is idle or the grace
/// period is over. Binding and call log writes are flushed before returning. `control` is
/// the engine's end of a [`CallControl`] (commands in, public events out).
// Every piece main wires together comes in here once; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    sockets: SipSockets,
    engine_config: EngineConfig,
    driver: DriverConfig,
    store: Store,
    metrics: Arc<Metrics>,
    control: ControlInbox,
    dialplan: Option<dialplan::DialplanInbox>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RuntimeError> {
    let ControlInbox {
        commands: mut command_rx,
        events: public_events,
    } = control;
    let mut commands_open = true;
    let users = store.list_users().await?;
    let mut revision = store.users_revision().await?;
    let directory = to_directory(users);
    let now_unix = unix_now();
    let mut engine = Engine::new(engine_config, directory, Instant::now(), now_unix);
    let restored: Vec<Binding> = store
        .load_bindings(i64::try_from(now_unix).unwrap_or(i64::MAX))
        .await?
        .into_iter()
        .filter_map(binding_from_store)
        .collect();
    tracing::info!(
        registrations = restored.len(),
        users = engine.stats().users,
        "state loaded"
    );
    engine.restore_bindings(restored);
    // Publish the restored state now, not after the first message.
    metrics.update(&engine.stats());

    let (input_tx, mut input_rx) = mpsc::channel::<Input>(4096);

    // Store writer: bindings are persisted off the engine task, coalesced per contact.
    let (store_tx, store_rx) = mpsc::channel::<BindingChange>(65_536);
    let writer = tokio::spawn(store_writer(store.clone(), store_rx, metrics.clone()));
    // Call log writer: one record per finished call, one transaction each.
    let (cdr_tx, cdr_rx) = mpsc::channel(cdr::CDR_QUEUE);
    let cdr_writer = tokio::spawn(cdr::cdr_writer(store.clone(), cdr_rx, metrics.clone()));
    let mut call_log = cdr::CallLog::new();

    // User directory poller.
    let reloader = dialplan.map(|inbox| {
        engine.set_router(Box::new(dialplan::PlanRouter::new(
            inbox.initial.clone(),
            inbox.source.test_clock,
        )));
        tokio::spawn(dialplan_reloader(
            inbox,
            store.clone(),
            input_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    let poller = {
        let store = store.clone();
        let input_tx = input_tx.clone();
        let mut shutdown = shutdown.clone();
        let interval = driver.user_poll_interval;
        tokio::spawn(async move {
            // An unreachable database is logged when it fails and when it recovers, not
            // once a second in between.
            let mut failing = false;
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let polled = match store.users_revision().await {
                    Ok(r) if r != revision => store.list_users().await.map(|u| (r, Some(u))),
                    Ok(r) => Ok((r, None)),
                    Err(e) => Err(e),
                };
                match polled {
                    Ok((r, users)) => {
                        if failing {
                            tracing::info!("the database answers again");
                            failing = false;
                        }
                        if let Some(users) = users {
                            revision = r;
                            tracing::info!(users = users.len(), "user directory reloaded");
                            if input_tx
                                .send(Input::Directory(to_directory(users)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "cannot read users from the database; serving the last known directory");
                    }
                    Err(_) => {}
                }
            }
        })
    };

    let SipSockets { udp, tcp, local } = sockets;
    let acceptor = tokio::spawn(tcp::accept_loop(
        tcp,
        input_tx.clone(),
        driver.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    tracing::info!(%local, "SIP listening on UDP and TCP");
    metrics.set_ready(true);

    let mut tcp_conns: HashMap<SocketAddr, mpsc::Sender<Arc<[u8]>>> = HashMap::new();
    let mut media_tasks = media::MediaTasks::new(
        store.clone(),
        driver.recordings_dir.clone(),
        driver.moh.clone(),
        driver.prompts.clone(),
        driver.media_threads.clone(),
    );
    // RTP sockets bind the SIP listen address (all interfaces when SIP listens on all).
    let media_ip = local.ip();
    let mut rooms = conference::Rooms::new(driver.media_threads.clone());
    let mut connecting: HashMap<SocketAddr, Vec<Arc<[u8]>>> = HashMap::new();
    let mut buf = vec![0u8; driver.max_message_size + 1];
    let mut shutting_down = false;
    let mut grace_deadline = None;
    let far_future = Duration::from_secs(86_400);

    loop {
        let next = match (engine.poll_timeout(), grace_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wake = next
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + far_future);
        tokio::select! {
            biased;
            changed = shutdown.changed(), if !shutting_down => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!(calls = engine.stats().active_calls, "shutting down: hanging up calls");
                    shutting_down = true;
                    metrics.set_ready(false);
                    engine.shutdown(Instant::now());
                    grace_deadline = Some(Instant::now() + driver.shutdown_grace);
                }
            }
            r = udp.recv_from(&mut buf) => {
                let now = Instant::now();
                match r {
                    Ok((n, src)) => handle_udp(&mut engine, &buf, n, src, &driver, &metrics, now),
                    Err(e) => tracing::debug!(error = %e, "UDP receive error"),
                }
                // Drain what else is queued without going back to the scheduler.
                for _ in 0..64 {
                    match udp.try_recv_from(&mut buf) {
                        Ok((n, src)) => handle_udp(&mut engine, &buf, n, src, &driver, &metrics, now),
                        Err(_) => break,
                    }
                }
            }
            input = input_rx.recv() => {
                let now = Instant::now();
                match input {
                    Some(Input::Message(msg, source)) => engine.handle_message(msg, source, now),
                    Some(Input::ParseError(err, source, answer)) => engine.handle_parse_error(&err, source, answer),
                    Some(Input::TcpOpened(addr, tx)) => {
                        if let Some(queued) = connecting.remove(&addr) {
                            for data in queued {
                                let _ = tx.try_send(data);
                            }
                        }
                        tcp_conns.insert(addr, tx);
                        metrics.set_tcp_connections(tcp_conns.len());
                    }
                    Some(Input::TcpClosed(addr)) => {
                        tcp_conns.remove(&addr);
                        metrics.set_tcp_connections(tcp_conns.len());
                    }
                    Some(Input::TcpConnectFailed(addr)) => {
                        connecting.remove(&addr);
                        engine.handle_transport_error(Target { transport: Transport::Tcp, addr }, now);
                    }
                    Some(Input::Directory(d)) => engine.set_directory(d),
                    Some(Input::Router(r)) => engine.set_router(r),
                    Some(Input::Media(call, notice)) => engine.handle_media_notice(call, notice, now),
                    Some(Input::Room(participant, notice)) => engine.handle_room_notice(participant, notice, now),
                    None => {}
                }
            }
            request = command_rx.recv(), if commands_open => match request {
                Some(request) => {
                    let reply = engine.handle_command(request.command, Instant::now());
                    // The asker may have gone (a closed HTTP connection): nothing to do.
                    let _ = request.reply.send(reply);
                }
                None => commands_open = false,
            },
            _ = tokio::time::sleep_until(wake) => {
                engine.handle_timeout(Instant::now());
            }
        }

        // Drain: transmits first, then events (the engine's contract).
        while let Some(t) = engine.poll_transmit() {
            match t.target.transport {
                Transport::Udp => {
                    if let Err(e) = udp.try_send_to(&t.data, t.target.addr) {
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            // The socket buffer is full: wait for room rather than drop.
                            if let Err(e) = udp.send_to(&t.data, t.target.addr).await {
                                tracing::debug!(error = %e, to = %t.target.addr, "UDP send failed");
                            }
                        } else {
                            tracing::debug!(error = %e, to = %t.target.addr, "UDP send failed");
                        }
                    }
                }
                Transport::Tcp => {
                    let addr = t.target.addr;
                    if let Some(conn) = tcp_conns.get(&addr) {
                        if conn.try_send(t.data).is_err() {
                            metrics.count_dropped_send();
                        }
                    } else if let Some(q) = connecting.get_mut(&addr) {
                        if q.len() < 64 {
                            q.push(t.data);
                        }
                    } else if !shutting_down || engine.stats().active_calls > 0 {
                        connecting.insert(addr, vec![t.data]);
                        tokio::spawn(tcp::connect(
                            addr,
                            input_tx.clone(),
                            driver.clone(),
                            metrics.clone(),
                            shutdown.clone(),
                        ));
                    }
                }
            }
        }
        let at_ms = unix_ms_now();
        while let Some(ev) = engine.poll_event() {
            if public_events.receiver_count() > 0 {
                if let Some(public) = events::public_event(&ev, at_ms) {
                    // Fails only without subscribers; a lagging one loses the oldest.
                    let _ = public_events.send(public);
                }
            }
            if let Some(record) = call_log.handle_event(&ev, at_ms) {
                if cdr_tx.try_send(record).is_err() {
                    metrics.count_call_record_dropped();
                    tracing::warn!("call log queue full; a call record was not written");
                }
            }
            match ev {
                EngineEvent::Binding(change) => {
                    if store_tx.try_send(change).is_err() {
                        tracing::warn!(
                            "binding write queue full; a registration change was not persisted"
                        );
                    }
                }
                EngineEvent::CallStarted {
                    call,
                    caller,
                    callee,
                    ..
                } => {
                    tracing::info!(call, %caller, %callee, "call started");
                }
                EngineEvent::CallAnswered { call } => tracing::info!(call, "call answered"),
                EngineEvent::CallEnded {
                    call,
                    caller,
                    callee,
                    outcome,
                    status,
                } => {
                    tracing::info!(call, %caller, %callee, outcome = outcome.as_str(), status, "call ended");
                }
                EngineEvent::AuthFailed {
                    method,
                    user,
                    source,
                    reason,
                } => {
                    tracing::warn!(%method, user = user.as_deref().unwrap_or("-"), source = %format_target(source), ?reason, "authentication failed");
                }
                EngineEvent::Dtmf {
                    call,
                    caller,
                    digit,
                    duration_ms,
                    source,
                } => {
                    metrics.count_dtmf();
                    tracing::info!(call, party = if caller { "caller" } else { "callee" }, %digit, duration_ms, source, "dtmf");
                }
                EngineEvent::Trunk { trunk, status } => {
                    tracing::debug!(%trunk, ?status, "trunk");
                    metrics.set_trunks_registered(
                        engine.trunk_registered().iter().filter(|(_, r)| *r).count(),
                    );
                }
                EngineEvent::History { call, event } => {
                    tracing::info!(call, ?event, "call history");
                }
                EngineEvent::Media(command) => {
                    media_tasks.apply(command, media_ip, &input_tx, &metrics);
                    metrics.set_media_sessions(media_tasks.len());
                }
                EngineEvent::Room(command) => rooms.apply(command, media_ip, &input_tx, &metrics),
                // Logged by the engine; published on the event stream above.
                EngineEvent::RoomCallOut(_) => {}
                EngineEvent::Malformed {
                    source,
                    reason,
                    answered,
                } => {
                    tracing::debug!(source = %format_target(source), %reason, answered, "malformed message");
                }
            }
        }
        metrics.update(&engine.stats());

        if shutting_down {
            // Checked after every wake-up, and the grace deadline is one of them.
            let over = grace_deadline.is_some_and(|d| Instant::now() >= d);
            if engine.is_idle() || over {
                if !engine.is_idle() {
                    tracing::warn!(
                        calls = engine.stats().active_calls,
                        transactions = engine.stats().transactions,
                        "grace period over; stopping with work left"
                    );
                }
                break;
            }
        }
    }

    drop(store_tx);
    drop(cdr_tx);
    drop(input_tx);
    acceptor.abort();
    poller.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "binding writer failed");
    }
    if let Err(e) = cdr_writer.await {
        tracing::error!(error = %e, "call log writer failed");
    }
    tracing::info!("SIP service stopped");
    Ok(())
}

fn handle_udp(
    engine: &mut Engine,
    buf: &[u8],
    n: usize,
    src: SocketAddr,
    driver: &DriverConfig,
    metrics: &Metrics,
    now: Instant,
) {
    if n > driver.max_message_size {
        metrics.count_oversize();
        tracing::debug!(%src, bytes = n, "oversize datagram dropped");
        return;
    }
    // Keep-alive datagrams (CRLF, RFC 5626 §3.5.1) are not messages.
    if buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return;
    }
    engine.handle_datagram(
        &buf[..n],
        Target {
            transport: Transport::Udp,
            addr: src,
        },
        now,
    );
}

async fn store_writer(store: Store, mut rx: mpsc::Receiver<BindingChange>, metrics: Arc<Metrics>) {
    let mut batch: Vec<BindingChange> = Vec::with_capacity(1024);
    // Failures are counted each time but logged once per outage.
    let mut failing = false;
    while rx.recv_many(&mut batch, 1024).await > 0 {
        // Only the last change of each contact in a batch matters.
        let mut latest: HashMap<(String, String), BindingChange> = HashMap::new();
        for change in batch.drain(..) {
            let key = match &change {
                BindingChange::Upserted(b) => (b.aor.clone(), b.contact.clone()),
                BindingChange::Removed { aor, contact } => (aor.clone(), contact.clone()),
            };
            latest.insert(key, change);
        }
        for change in latest.into_values() {
            let r = match &change {
                BindingChange::Upserted(b) => store.save_binding(&binding_to_store(b)).await,
                BindingChange::Removed { aor, contact } => store.delete_binding(aor, contact).await,
            };
            match r {
                Err(e) => {
                    metrics.count_store_error();
                    if !failing {
                        failing = true;
                        tracing::error!(error = %e, "persisting registrations fails; they live in memory until the database answers (switchboard_store_errors_total counts them)");
                    }
                }
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("registrations are persisted again");
                }
                Ok(()) => {}
            }
        }
    }
}

/// Reloads the dialplan on SIGHUP, when its file changes, or when the API asks; a plan
/// that loads goes to the engine for new calls, one that does not is logged and counted.
async fn dialplan_reloader(
    mut inbox: dialplan::DialplanInbox,
    store: Store,
    input: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with the API or by editing the file");
            None
        }
    };
    let mut last_modified = dialplan::modified(&inbox.source.path);
    let interval = inbox.source.poll_interval.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut reply = None;
        let why = tokio::select! {
            _ = shutdown.changed() => return,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            r = inbox.requests.recv() => match r {
                Some(tx) => {
                    reply = Some(tx);
                    "API"
                }
                None => return,
            },
            _ = ticks.tick() => {
                let now = dialplan::modified(&inbox.source.path);
                if now == last_modified {
                    continue;
                }
                "file changed"
            }
        };
        last_modified = dialplan::modified(&inbox.source.path);
        let users = match store.list_users().await {
            Ok(users) => users
                .into_iter()
                .flat_map(|u| std::iter::once(u.name).chain(u.extension))
                .collect(),
            Err(e) => {
                let msg = format!("cannot read users to check the plan: {e}");
                tracing::error!("{msg}");
                if let Some(tx) = reply {
                    let _ = tx.send(Err(msg));
                }
                continue;
            }
        };
        let result = dialplan::reload(&inbox.source, users, &inbox.status, &metrics, why).await;
        let answer = match result {
            Ok(plan) => {
                let router = dialplan::PlanRouter::new(Arc::new(plan), inbox.source.test_clock);
                if input.send(Input::Router(Box::new(router))).await.is_err() {
                    return;
                }
                Ok(inbox.status.lock().map(|s| s.clone()).unwrap_or_default())
            }
            Err(e) => Err(e),
        };
        if let Some(tx) = reply {
            let _ = tx.send(answer);
        }
    }
}
