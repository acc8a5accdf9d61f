//! The single-threaded driver's readiness source: one level-triggered epoll set over every
//! socket, plus a timerfd that fires every millisecond (the RTP timer wheel's slot width).
//! Level-triggered, so a socket with one datagram costs one `recv` and no EAGAIN.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// Token of the timer in events.
pub const TIMER: u64 = u64::MAX;
/// Token of SIGTERM/SIGINT (a signalfd: the workspace forbids the unsafe of a handler).
pub const STOP: u64 = u64::MAX - 2;

pub struct Reactor {
    epoll: Epoll,
    timer: TimerFd,
    signals: SignalFd,
    pub events: Vec<EpollEvent>,
}

impl Reactor {
    /// The timer is armed by [`Reactor::start_timer`], so that its expiries line up with
    /// the caller's epoch.
    pub fn new() -> anyhow::Result<Reactor> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // CLOCK_MONOTONIC: the clock std's Instant reads on Linux.
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
        // SIGTERM/SIGINT become readable events: the run ends cleanly (BYEs, SUMMARY).
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        epoll.add(&signals, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        Ok(Reactor {
            epoll,
            timer,
            signals,
            events: vec![EpollEvent::empty(); 1024],
        })
    }

    /// Fires every `tick` from now on.
    pub fn start_timer(&self, tick: Duration) -> anyhow::Result<()> {
        self.timer.set(
            Expiration::Interval(TimeSpec::from_duration(tick)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(())
    }

    pub fn add(&self, fd: impl AsFd, token: u64) -> anyhow::Result<()> {
        self.epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        Ok(())
    }

    /// Waits for readiness (or the next timer expiry); returns how many events are in
    /// `self.events`.
    pub fn wait(&mut self) -> anyhow::Result<usize> {
        loop {
            match self
                .epoll
                .wait(&mut self.events, EpollTimeout::from(100u16))
            {
                Ok(n) => return Ok(n),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Consumes a pending stop signal (call when the STOP token was ready).
    pub fn ack_stop(&self) {
        let _ = self.signals.read_signal();
    }

    /// Consumes the timer's expirations (call when the TIMER token was ready).
    pub fn ack_timer(&self) {
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(&self.timer, &mut b);
    }
}

/// Process CPU time so far (user + system), from getrusage.
pub fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// Raises the open-file limit to the hard limit (one socket per call).
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
