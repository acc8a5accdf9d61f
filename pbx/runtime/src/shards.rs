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
        if threads == 0 {
            return Ok(MediaThreads { inner: None });
        }
        let mut handles = Vec::with_capacity(threads);
        let mut stop = Vec::with_capacity(threads);
        for i in 0..threads {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stop.push(tx);
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || {
                    // Ends when the sender is dropped; the runtime's tasks are dropped then.
                    let _ = runtime.block_on(rx);
                })?;
        }
        Ok(MediaThreads {
            inner: Some(Arc::new(Inner {
                handles,
                next: AtomicUsize::new(0),
                _stop: stop,
            })),
        })
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
