//! Media sockets: one tokio task per call (on a media thread, `shards.rs`) owns the call's four UDP sockets (RTP and RTCP
//! for each leg) and its pure `MediaSession`, feeds it packets and the time, sends what it
//! asks, and reports its events to the engine task. The engine decides which ports a call
//! uses; this module only binds them and moves bytes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use switchboard_store::{Recording, Store};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use switchboard_core::media::{MediaCommand, MediaNotice, Playback};
use switchboard_core::ports::PortPair;
use switchboard_media::player::{MohClass, Source, StartAt};
use switchboard_media::relay::{Leg, MediaSession, PacketKind};
use tokio::sync::mpsc;

use crate::udp_batch::BatchSocket;
use crate::{Input, Metrics};

/// Commands for one call's media task.
pub(crate) enum MediaControl {
    Command(MediaCommand),
    Record(RecordingSpec),
    /// Sources played one after another as one playback (one finish, after the last).
    Play(Leg, Vec<Source>),
    /// A prompt that cannot be played: reported as finished at once, so the route goes
    /// on (in order with the commands before it).
    Skip(Leg),
    StopPlayback(Leg),
}

/// Where and as what a call is recorded.
pub(crate) struct RecordingSpec {
    id: String,
    path: PathBuf,
    call_id: String,
    caller: String,
    callee: String,
}

/// Live media tasks by call, owned by the engine task.
pub(crate) struct MediaTasks {
    tasks: std::collections::HashMap<u64, mpsc::UnboundedSender<MediaControl>>,
    store: Store,
    recordings_dir: PathBuf,
    moh: MohLibrary,
    prompts: crate::PromptLibrary,
    /// Prompt names already reported missing (each is logged once).
    missing_prompts: std::collections::HashSet<String>,
    threads: crate::MediaThreads,
}

/// Music-on-hold classes the admin installed (`--moh-dir`), by name.
pub type MohLibrary = std::collections::HashMap<String, Arc<MohClass>>;

/// The wall clock as a 64-bit NTP timestamp (seconds since 1900 in the high half).
fn ntp_now() -> u64 {
    const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ((d.as_secs() + NTP_UNIX_OFFSET) << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// Civil date (proleptic Gregorian) of a unix day number (H. Hinnant's algorithm).
fn civil_date(unix_secs: u64) -> (i64, u32, u32) {
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Keeps names usable as file names whatever a user name holds.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect()
}

impl MediaTasks {
    pub(crate) fn new(
        store: Store,
        recordings_dir: PathBuf,
        moh: MohLibrary,
        prompts: crate::PromptLibrary,
        threads: crate::MediaThreads,
    ) -> MediaTasks {
        MediaTasks {
            tasks: std::collections::HashMap::new(),
            store,
            recordings_dir,
            moh,
            prompts,
            missing_prompts: std::collections::HashSet::new(),
            threads,
        }
    }

    /// What a playback request means here: an installed class, or the generated music; a
    /// recorded or shipped prompt; several prompts in a row. Empty: nothing to play (a
    /// prompt that does not exist is logged once per name and left out).
    fn sources(&mut self, what: &Playback) -> Vec<Source> {
        let start = StartAt::Random {
            seed: rand::random(),
        };
        match what {
            Playback::MusicOnHold { class } => vec![match self.moh.get(class) {
                Some(c) if !c.clips.is_empty() => Source::Moh {
                    class: c.clone(),
                    start,
                },
                _ => Source::DefaultMoh { start },
            }],
            Playback::Prompt { name } => self.prompt(name).into_iter().collect(),
            Playback::Prompts { names } => names.iter().filter_map(|n| self.prompt(n)).collect(),
        }
    }

    fn prompt(&mut self, name: &str) -> Option<Source> {
        let found = crate::prompts::valid_prompt_name(name)
            .then(|| self.prompts.source(name))
            .flatten();
        if found.is_none() && self.missing_prompts.insert(name.to_string()) {
            tracing::warn!(prompt = %name, "prompt not found (no such file in the prompts directory and none shipped); skipped");
        }
        found
    }

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
            MediaCommand::Open {
                call,
                a,
                b,
                mut config,
            } => {
                config.start_ntp = ntp_now();
                let (tx, rx) = mpsc::unbounded_channel();
                self.tasks.insert(call, tx);
                self.threads.spawn(run_call_media(
                    call,
                    [a, b],
                    bind_ip,
                    MediaSession::new(config, Instant::now()),
                    rx,
                    input.clone(),
                    metrics.clone(),
                    self.store.clone(),
                ));
            }
            MediaCommand::Close { call } => {
                // Dropping the sender ends the task once it has drained its queue.
                self.tasks.remove(&call);
            }
            MediaCommand::Play { call, leg, what } => {
                let sources = self.sources(&what);
                let control = if sources.is_empty() {
                    MediaControl::Skip(leg)
                } else {
                    MediaControl::Play(leg, sources)
                };
                if let Some(tx) = self.tasks.get(&call) {
                    let _ = tx.send(control);
                }
            }
            MediaCommand::StopPlayback { call, leg } => {
                if let Some(tx) = self.tasks.get(&call) {
                    let _ = tx.send(MediaControl::StopPlayback(leg));
                }
            }
            MediaCommand::StartRecording {
                call,
                call_id,
                caller,
                callee,
            } => {
                let now = crate::unix_now();
                let (y, m, d) = civil_date(now);
                let id = format!("{now}-{call}-{}-{}", file_safe(&caller), file_safe(&callee));
                let path = self
                    .recordings_dir
                    .join(format!("{y:04}-{m:02}-{d:02}"))
                    .join(format!("{id}.wav"));
                if let Some(tx) = self.tasks.get(&call) {
                    let _ = tx.send(MediaControl::Record(RecordingSpec {
                        id,
                        path,
                        call_id,
                        caller,
                        callee,
                    }));
                }
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

async fn bind_pair(ip: IpAddr, pair: PortPair) -> std::io::Result<(BatchSocket, BatchSocket)> {
    let rtp = BatchSocket::bind(SocketAddr::new(ip, pair.rtp)).await?;
    let rtcp = BatchSocket::bind(SocketAddr::new(ip, pair.rtcp)).await?;
    Ok((rtp, rtcp))
}

/// A recording file being written by a call's media task.
struct OpenRecording {
    id: String,
    path: PathBuf,
    file: tokio::fs::File,
}

async fn open_recording(
    spec: RecordingSpec,
    session: &mut MediaSession,
    store: &Store,
) -> Option<OpenRecording> {
    if let Some(dir) = spec.path.parent() {
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            tracing::error!(dir = %dir.display(), error = %e, "cannot create the recordings directory");
            return None;
        }
    }
    let file = match tokio::fs::File::create(&spec.path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = %spec.path.display(), error = %e, "cannot create a recording file");
            return None;
        }
    };
    let row = Recording {
        id: spec.id.clone(),
        call_id: spec.call_id,
        caller: spec.caller,
        callee: spec.callee,
        path: spec.path.display().to_string(),
        started_at: i64::try_from(crate::unix_now()).unwrap_or(0),
        ended_at: None,
        seconds: None,
    };
    if let Err(e) = store.add_recording(&row).await {
        tracing::error!(error = %e, "cannot store the recording's path");
    }
    session.start_recording(Instant::now());
    tracing::info!(path = %spec.path.display(), "recording the call");
    Some(OpenRecording {
        id: spec.id,
        path: spec.path,
        file,
    })
}

/// Writes the last bytes and the real WAV header, and completes the stored row.
async fn close_recording(rec: OpenRecording, session: &mut MediaSession, store: &Store) {
    let OpenRecording { id, path, mut file } = rec;
    let pending = session.poll_recording();
    let Some(done) = session.stop_recording(Instant::now()) else {
        return;
    };
    let written = async {
        file.write_all(&pending).await?;
        file.write_all(&done.tail).await?;
        file.seek(std::io::SeekFrom::Start(0)).await?;
        file.write_all(&done.header).await?;
        file.sync_data().await
    }
    .await;
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "finishing a recording failed");
    }
    let ended = i64::try_from(crate::unix_now()).unwrap_or(0);
    let seconds = i64::try_from(done.seconds).unwrap_or(0);
    if let Err(e) = store.finish_recording(&id, ended, seconds).await {
        tracing::error!(error = %e, "cannot complete the recording's row");
    }
}

/// The waker a media task gives its control queue: it notes that the queue has news,
/// then wakes the task. The task polls the queue only then, instead of on each of its
/// 100 wake-ups a second for packets (a queue poll registers a waker each time: about
/// 2 % of the relay's CPU in a profile at 500 calls, for a queue that is almost always
/// empty).
#[derive(Default)]
struct ControlWake {
    /// `false` while the queue has news (a message, or its closing) that the task has
    /// not looked at; it starts `false`, so that the first poll registers.
    idle: std::sync::atomic::AtomicBool,
    task: std::sync::Mutex<Option<std::task::Waker>>,
}

impl ControlWake {
    /// Whether the queue needs a look; also keeps the task's current waker (a lock, on
    /// this rare path only).
    fn take(&self, task: &std::task::Waker) -> bool {
        if self.idle.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return false;
        }
        let mut current = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if !current.as_ref().is_some_and(|w| w.will_wake(task)) {
            *current = Some(task.clone());
        }
        true
    }

    /// Look again on the next turn (a message was taken; more may wait).
    fn again(&self) {
        self.idle.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl std::task::Wake for ControlWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.idle.store(false, std::sync::atomic::Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_call_media(
    call: u64,
    pairs: [PortPair; 2],
    ip: IpAddr,
    mut session: MediaSession,
    mut control: mpsc::UnboundedReceiver<MediaControl>,
    input: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    store: Store,
) {
    let mut recording: Option<OpenRecording> = None;
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
    let far_future = std::time::Duration::from_secs(3600);
    // One timer, re-armed only when the session's deadline changes (not per packet).
    let sleep = tokio::time::sleep(far_future);
    tokio::pin!(sleep);
    let mut armed: Option<Option<Instant>> = None;
    // The control queue is looked at only when it woke the task (see ControlWake).
    let control_wake = Arc::new(ControlWake::default());
    let control_waker = std::task::Waker::from(control_wake.clone());
    // A prompt skipped or unplayable: reported as finished after this turn.
    let mut finished_now: Option<Leg> = None;
    const LEGS: [(Leg, PacketKind); 4] = [
        (Leg::A, PacketKind::Rtp),
        (Leg::A, PacketKind::Rtcp),
        (Leg::B, PacketKind::Rtp),
        (Leg::B, PacketKind::Rtcp),
    ];
    loop {
        let wake = session.poll_timeout();
        if armed != Some(wake) {
            let at = wake
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + far_future);
            sleep.as_mut().reset(at);
            armed = Some(wake);
        }
        // One hand-written poll instead of a `select!` over six futures: each wake-up
        // empties every socket (`recvmmsg`, see udp_batch.rs), then looks at the control
        // queue (only if it is what woke the task) and the timer. The poll functions keep one waker per socket, where
        // `select!` built, registered and dropped a readiness future per socket per
        // wake-up (a lock each time).
        let (control_msg, timer_fired) = std::future::poll_fn(|cx| {
            let mut packets = 0usize;
            for (i, socket) in sockets.iter().enumerate() {
                let (leg, kind) = LEGS[i];
                // Bounded, so a flooded socket cannot starve the others or the
                // control queue; past the bound the task asks to run again.
                packets += socket.poll_drain(cx, 64, |from, bytes| {
                    session.handle_packet(leg, kind, from, bytes, Instant::now());
                });
            }
            let control_msg = if control_wake.take(cx.waker()) {
                match control.poll_recv(&mut std::task::Context::from_waker(&control_waker)) {
                    Poll::Ready(c) => {
                        // One message per turn; there may be more behind it.
                        control_wake.again();
                        Some(c)
                    }
                    Poll::Pending => None,
                }
            } else {
                None
            };
            let timer_fired = std::future::Future::poll(sleep.as_mut(), cx).is_ready();
            if packets > 0 || control_msg.is_some() || timer_fired {
                Poll::Ready((control_msg, timer_fired))
            } else {
                Poll::Pending
            }
        })
        .await;
        if timer_fired {
            session.handle_timeout(Instant::now());
            armed = None;
        }
        match control_msg {
            None => {}
            Some(Some(MediaControl::Command(MediaCommand::Mute { leg, muted, .. }))) => {
                session.set_muted(leg, muted);
            }
            Some(Some(MediaControl::Command(MediaCommand::StopRecording { .. }))) => {
                if let Some(rec) = recording.take() {
                    close_recording(rec, &mut session, &store).await;
                }
            }
            Some(Some(MediaControl::Command(cmd))) => {
                if let Some((leg, cfg)) = cmd.leg_config() {
                    session.configure_leg(leg, cfg, Instant::now());
                }
            }
            Some(Some(MediaControl::Play(leg, sources))) => {
                let once = sources
                    .iter()
                    .all(|s| matches!(s, Source::Clip(_) | Source::Tone { .. }));
                session.play_sequence(leg, sources, Instant::now());
                if once && !session.is_playing(leg) {
                    // No codec on the leg yet: nothing will play, nor ever finish.
                    tracing::info!(
                        call,
                        ?leg,
                        "prompt not playable (no codec on the leg); skipped"
                    );
                    finished_now = Some(leg);
                }
            }
            Some(Some(MediaControl::Skip(leg))) => finished_now = Some(leg),
            Some(Some(MediaControl::StopPlayback(leg))) => {
                session.stop_playback(leg, Instant::now())
            }
            Some(Some(MediaControl::Record(spec))) if recording.is_none() => {
                recording = open_recording(spec, &mut session, &store).await;
            }
            // Already recording: the request changes nothing.
            Some(Some(MediaControl::Record(_))) => {}
            Some(None) => break,
        }
        while let Some(t) = session.poll_transmit() {
            let socket = &sockets[slot(t.leg, t.kind)];
            if socket.try_send_to(&t.data, t.to).is_err() {
                metrics.count_media_send_error();
            }
        }
        if let Some(rec) = recording.as_mut() {
            let bytes = session.poll_recording();
            if !bytes.is_empty() {
                if let Err(e) = rec.file.write_all(&bytes).await {
                    tracing::error!(path = %rec.path.display(), error = %e, "recording write failed; stopping it");
                    let _ = session.stop_recording(Instant::now());
                    recording = None;
                }
            }
        }
        if let Some(leg) = finished_now.take() {
            let event = switchboard_media::relay::MediaEvent::PlaybackFinished { leg };
            if input
                .send(Input::Media(call, MediaNotice::Session(event)))
                .await
                .is_err()
            {
                return;
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
    if let Some(rec) = recording.take() {
        close_recording(rec, &mut session, &store).await;
    }
    metrics.media_sessions_ended(session.stats());
}

/// Loads the music-on-hold classes under `dir`: one subdirectory per class, its WAV files
/// played in name order. A file that cannot be read is skipped with a warning (one bad
/// file must not silence the rest); a missing directory is the caller's error to report.
pub fn load_moh_library(dir: &std::path::Path) -> std::io::Result<MohLibrary> {
    let mut library = MohLibrary::new();
    let mut classes: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .collect();
    classes.sort_by_key(|e| e.file_name());
    for class in classes {
        let name = class.file_name().to_string_lossy().into_owned();
        let mut files: Vec<_> = std::fs::read_dir(class.path())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("wav")))
            .collect();
        files.sort();
        let mut clips = Vec::new();
        for file in files {
            let read = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    switchboard_media::wav::read_wav(&bytes).map_err(|e| e.to_string())
                });
            match read {
                Ok(clip) if !clip.samples.is_empty() => clips.push(Arc::new(clip)),
                Ok(_) => tracing::warn!(file = %file.display(), "empty music-on-hold file skipped"),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "unreadable music-on-hold file skipped")
                }
            }
        }
        tracing::info!(class = %name, files = clips.len(), "music on hold class loaded");
        library.insert(name.clone(), Arc::new(MohClass { name, clips }));
    }
    Ok(library)
}

#[cfg(test)]
mod tests {
    use super::{civil_date, file_safe, load_moh_library, ControlWake};
    use std::sync::Arc;

    /// The control queue is looked at on the first turn, then only after its waker fired
    /// or a message was taken (more may wait); the waker wakes the task it was given.
    #[tokio::test]
    async fn the_control_queue_is_polled_only_when_it_has_news() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let wake = Arc::new(ControlWake::default());
        let control_waker = std::task::Waker::from(wake.clone());
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let task = std::task::Waker::from(Arc::new(Count(woken.clone())));
        let mut poll = || {
            let mut cx = std::task::Context::from_waker(&control_waker);
            match rx.poll_recv(&mut cx) {
                std::task::Poll::Ready(m) => {
                    wake.again();
                    Some(m)
                }
                std::task::Poll::Pending => None,
            }
        };
        assert!(wake.take(&task), "the first turn looks");
        assert_eq!(poll(), None);
        assert!(!wake.take(&task), "nothing new: no look");
        tx.send(7).unwrap();
        assert_eq!(
            woken.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the task is woken"
        );
        assert!(wake.take(&task));
        // No waker is registered now (the last one fired): this one is found because a
        // message taken always means another look.
        tx.send(8).unwrap();
        assert_eq!(poll(), Some(Some(7)));
        assert!(wake.take(&task), "a message was taken: look again");
        assert_eq!(poll(), Some(Some(8)));
        assert!(wake.take(&task));
        assert_eq!(poll(), None);
        assert!(!wake.take(&task));
        drop(tx);
        assert!(wake.take(&task), "closing the queue is news too");
        assert_eq!(poll(), Some(None));
    }

    #[test]
    fn moh_classes_load_from_subdirectories_skipping_bad_files() {
        let dir = std::env::temp_dir().join(format!("sb-moh-{}", std::process::id()));
        let jazz = dir.join("jazz");
        std::fs::create_dir_all(&jazz).unwrap();
        let wav = switchboard_media::wav::write_wav(
            8000,
            switchboard_media::wav::Channels::Mono,
            &vec![1000i16; 800],
        );
        std::fs::write(jazz.join("b.wav"), &wav).unwrap();
        std::fs::write(jazz.join("a.wav"), &wav).unwrap();
        std::fs::write(jazz.join("broken.wav"), b"RIFF nonsense").unwrap();
        std::fs::write(jazz.join("notes.txt"), b"not audio").unwrap();
        let lib = load_moh_library(&dir).unwrap();
        assert_eq!(lib["jazz"].clips.len(), 2);
        assert!(load_moh_library(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_of_unix_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(civil_date(1_795_329_463), (2026, 11, 22));
    }

    #[test]
    fn names_become_file_safe() {
        assert_eq!(file_safe("alice"), "alice");
        assert_eq!(file_safe("../etc/p ss"), "___etc_p_ss");
    }
}
