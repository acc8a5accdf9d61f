//! Media threads: a fixed set of OS threads, each driving its own single-threaded tokio
//! runtime, on which call media tasks and conference rooms live.
//!
//! Why not the main multi-threaded runtime: a relayed call is woken fifty times a second
//! per direction, does a few microseconds of work and sleeps again. On the work-stealing
//! scheduler every such wake-up may unpark an idle sibling worker (a futex wake and a
//! context switch) only for it to find nothing to steal; profiles of the media benchmark
//! showed that scheduler traffic costing more than the relaying itself. A task here stays
//! on the thread it was given, so its sockets, timers and buffers stay on one core's
//! cache, and a thread only sleeps in `epoll_wait` when it truly has nothing to do.
//! Tasks are given to threads in turn (round robin), which spreads calls evenly because
//! every call costs about the same.
//!
//! With no threads (`threads = 0`) tasks are spawned on the caller's runtime, as before:
//! tests that drive the runtime inside `#[tokio::test]` use that.
//!
//! Optionally the media threads run under the real-time round-robin policy (`SCHED_RR`,
//! `[media] realtime_priority`), as Asterisk's `-p` and rtpengine's `--scheduling=rr` do:
//! a packet that arrives for a call then gets its thread at once, instead of waiting for
//! whatever ordinary thread (a database write, a log writer, another program) holds the
//! core, and the thread is not preempted half-way through a burst of packets. It needs
//! `CAP_SYS_NICE` (root, or systemd's `AmbientCapabilities=CAP_SYS_NICE`, or an `RLIMIT_RTPRIO`
//! at least as high); without it the threads run at normal priority and one warning says
//! why. The kernel keeps 5 % of each second for ordinary threads
//! (`kernel.sched_rt_runtime_us`), so an overloaded media thread slows signalling but
//! cannot lock it out.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;

/// Handles of the media threads' runtimes; cloning shares them.
#[derive(Clone, Default)]
pub struct MediaThreads {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    handles: Vec<Handle>,
    /// What asking for real-time priority gave (None: not asked).
    realtime: Option<Result<u8, String>>,
    next: AtomicUsize,
    /// Dropping these ends the threads' runtimes (each `block_on`s its receiver).
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for MediaThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaThreads")
            .field("threads", &self.len())
            .finish()
    }
}

impl MediaThreads {
    /// Starts `threads` media threads (named `media-N`). Zero starts none: tasks then run
    /// on the runtime that spawns them.
    pub fn start(threads: usize) -> std::io::Result<MediaThreads> {
        MediaThreads::start_with(threads, None)
    }

    /// As [`MediaThreads::start`], each thread asking for `SCHED_RR` at `realtime_priority`
    /// (1 to 99) first when one is given. A refusal is not an error: the threads run at
    /// normal priority and [`MediaThreads::realtime`] says why.
    pub fn start_with(
        threads: usize,
        realtime_priority: Option<u8>,
    ) -> std::io::Result<MediaThreads> {
        if threads == 0 {
            return Ok(MediaThreads { inner: None });
        }
        let mut handles = Vec::with_capacity(threads);
        let mut stop = Vec::with_capacity(threads);
        let (granted_tx, granted_rx) = std::sync::mpsc::channel();
        for i in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(tx);
            let granted_tx = granted_tx.clone();
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    if let Some(p) = realtime_priority {
                        let _ = granted_tx.send(set_realtime(p));
                    }
                    drop(granted_tx);
                    // Ends when the sender is dropped; the runtime's tasks are dropped then.
                    let _ = runtime.block_on(rx);
                })?;
        }
        drop(granted_tx);
        // Every thread answers before it runs a task: the first refusal is the answer
        // (they all ask the same of the same kernel).
        let realtime =
            realtime_priority.map(|p| granted_rx.iter().find_map(Result::err).map_or(Ok(p), Err));
        Ok(MediaThreads {
            inner: Some(Arc::new(Inner {
                handles,
                realtime,
                next: AtomicUsize::new(0),
                _stop: stop,
            })),
        })
    }

    /// Whether the threads got the real-time priority asked for: `None` when none was
    /// asked (or there are no threads), `Some(Err(why))` when the kernel refused.
    pub fn realtime(&self) -> Option<Result<u8, String>> {
        self.inner.as_ref().and_then(|i| i.realtime.clone())
    }

    /// How many media threads run (0: tasks run on the spawning runtime).
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.handles.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spawns `task` on the next media thread in turn, or on the current runtime when
    /// there are none.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.inner {
            Some(inner) => {
                let i = inner.next.fetch_add(1, Ordering::Relaxed) % inner.handles.len();
                inner.handles[i].spawn(task);
            }
            None => {
                tokio::spawn(task);
            }
        }
    }
}

/// Puts the calling thread under `SCHED_RR` at `priority`.
fn set_realtime(priority: u8) -> Result<(), String> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityValue};
    let value = ThreadPriorityValue::try_from(priority).map_err(|e| e.to_string())?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin),
    )
    .map_err(|e| match e {
        thread_priority::Error::OS(code) => std::io::Error::from_raw_os_error(code).to_string(),
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_media_threads_in_turn() {
        let threads = MediaThreads::start(2).expect("threads start");
        assert_eq!(threads.len(), 2);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            threads.spawn(async move {
                // A timer and a socket need the thread's own runtime drivers.
                let ready = std::future::ready(());
                tokio::time::timeout(std::time::Duration::from_secs(1), ready)
                    .await
                    .unwrap();
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                drop(socket);
                let name = std::thread::current().name().map(str::to_owned);
                tx.send(name).unwrap();
            });
        }
        let mut names: Vec<_> = (0..4)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(10))
                    .expect("task ran")
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                Some("media-0".to_owned()),
                Some("media-0".to_owned()),
                Some("media-1".to_owned()),
                Some("media-1".to_owned())
            ]
        );
    }

    /// The policy and real-time priority the calling thread runs under.
    fn own_schedule() -> (ThreadSchedulePolicy, i32) {
        let (policy, params) = thread_schedule_policy_param(thread_native_id()).unwrap();
        (policy, params.sched_priority)
    }

    use thread_priority::unix::{
        thread_native_id, thread_schedule_policy_param, NormalThreadSchedulePolicy,
        RealtimeThreadSchedulePolicy, ThreadSchedulePolicy,
    };

    #[test]
    fn media_threads_run_round_robin_at_the_priority_asked_when_allowed() {
        let threads = MediaThreads::start_with(2, Some(7)).expect("threads start");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let tx = tx.clone();
            threads.spawn(async move {
                tx.send(own_schedule()).unwrap();
            });
        }
        let seen: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap())
            .collect();
        // Whether the kernel allows it depends on the privileges the tests run with (root
        // in CI); either way the answer must say what the threads really run under.
        match threads.realtime() {
            Some(Ok(7)) => {
                let rr = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin);
                assert!(seen.iter().all(|s| *s == (rr, 7)), "{seen:?}");
            }
            Some(Err(why)) => {
                assert!(why.contains("not permitted"), "{why}");
                let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
                assert!(seen.iter().all(|s| s.0 == other), "{seen:?}");
            }
            other => panic!("unexpected answer {other:?}"),
        }
        // Asking nothing changes nothing.
        let plain = MediaThreads::start(1).unwrap();
        assert_eq!(plain.realtime(), None);
        plain.spawn(async move {
            tx.send(own_schedule()).unwrap();
        });
        let (policy, _) = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(
            policy,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
    }

    #[tokio::test]
    async fn without_threads_tasks_run_on_the_current_runtime() {
        let threads = MediaThreads::start(0).expect("no threads");
        assert!(threads.is_empty());
        let (tx, rx) = tokio::sync::oneshot::channel();
        threads.spawn(async move {
            let _ = tx.send(());
        });
        rx.await.expect("task ran");
    }
}
