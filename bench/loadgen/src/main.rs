//! `sb-loadgen`: a lean SIP + RTP load generator for Switchboard's benchmarks (see
//! `bench/README.md`). One process, one thread, non-blocking sockets, one epoll set and a
//! 1 ms timerfd; RTP packets are written into one reused buffer (no allocation per packet).
//!
//! - `call`: N calls to the server (digest auth), each streaming a 20 ms G.711 tone and
//!   measuring what comes back (loss by sequence, jitter, late packets, echo round trips).
//! - `answer`: a callee that REGISTERs, answers every INVITE and echoes its RTP (the far
//!   end of the relay benchmark), reporting its turnaround in latency probes.
//!
//! It refuses targets off the loopback network: it is a load generator for this machine.

mod answer;
mod caller;
mod hist;
mod reactor;
mod rtp;
mod sip;
mod timestamps;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use rtp::Codec;

#[derive(Parser)]
#[command(
    name = "sb-loadgen",
    version,
    about = "SIP + RTP load generator for Switchboard's benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Place calls, stream a tone on each, hang up after --hold; print a SUMMARY line.
    Call(CallArgs),
    /// Register as a user, answer every INVITE and echo RTP back to its source.
    Answer(AnswerArgs),
}

#[derive(clap::Args)]
struct CallArgs {
    /// The server's SIP address (loopback only).
    #[arg(long)]
    server: SocketAddr,
    /// Number of calls.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// New calls per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds each call stays up after its 2xx (then BYE).
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// The number (user part) every call dials; with --group-size, the first of a range.
    #[arg(long, default_value = "800")]
    to: String,
    /// Calls per destination: call i dials to + i / group-size (rooms of a conference).
    #[arg(long, default_value_t = 0)]
    group_size: usize,
    /// Authentication user for every call (or --users-file).
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// `user,password` per line; call i authenticates as line i mod the line count.
    #[arg(long)]
    users_file: Option<PathBuf>,
    /// Host of the From/To URIs (default: the server's IP).
    #[arg(long)]
    domain: Option<String>,
    #[arg(long, value_enum, default_value_t = Codec::Pcmu)]
    codec: Codec,
    #[arg(long, default_value_t = 440.0)]
    tone_hz: f64,
    /// Peak amplitude of the tone (16-bit linear).
    #[arg(long, default_value_t = 4000)]
    amplitude: i16,
    /// A received packet is late when it comes more than 20 ms + this after the previous one.
    #[arg(long, default_value_t = 20)]
    late_ms: u64,
    /// Seconds to wait for a final response to an INVITE (Timer B).
    #[arg(long, default_value_t = 32.0)]
    setup_timeout: f64,
    /// Hard limit on the run (default: calls/rate + hold + 60 s); calls still up then, or
    /// at SIGTERM/SIGINT, are hung up.
    #[arg(long)]
    max_time: Option<f64>,
    /// A progress line on stderr every second.
    #[arg(long)]
    progress: bool,
    /// A label for the SUMMARY line.
    #[arg(long, default_value = "")]
    label: String,
    /// Make every n-th packet of each call a latency probe (0: none): its first payload
    /// bytes carry a marker and its sequence number, so an echo through a relay that
    /// rewrites RTP headers gives a round trip. Leave 0 where the payload is mixed.
    #[arg(long, default_value_t = 0)]
    probe_every: u64,
    /// Offer telephone-event/8000 (payload type 101) beside the codec.
    #[arg(long)]
    telephone_event: bool,
}

#[derive(clap::Args)]
struct AnswerArgs {
    /// The server's SIP address (loopback only); REGISTER goes there.
    #[arg(long)]
    server: SocketAddr,
    /// Local SIP address to listen on (port 0: any).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// User to REGISTER as (none: do not register).
    #[arg(long)]
    user: Option<String>,
    #[arg(long, default_value = "")]
    password: String,
    #[arg(long)]
    domain: Option<String>,
    /// RTP sockets bound in advance = the most concurrent calls.
    #[arg(long, default_value_t = 1000)]
    max_calls: usize,
    /// Stop after this many seconds (or at SIGTERM/SIGINT), then print the SUMMARY.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    #[arg(long)]
    progress: bool,
    /// Answer telephone-event when the offer has it.
    #[arg(long)]
    telephone_event: bool,
}

fn loopback(addr: &SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address: sb-loadgen only loads this machine");
    }
    Ok(())
}

fn credentials(a: &CallArgs) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(path) = &a.users_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let list: Vec<(String, String)> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (u, p) = l.split_once(',')?;
                Some((u.trim().to_string(), p.trim().to_string()))
            })
            .collect();
        if list.is_empty() {
            bail!("{}: no `user,password` lines", path.display());
        }
        return Ok(list);
    }
    match (&a.user, &a.password) {
        (Some(u), Some(p)) => Ok(vec![(u.clone(), p.clone())]),
        _ => bail!("give --user and --password, or --users-file"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Call(a) => {
            loopback(&a.server)?;
            if a.calls == 0 || a.rate <= 0.0 {
                bail!("--calls and --rate must be positive");
            }
            let creds = credentials(&a)?;
            let ramp = a.calls as f64 / a.rate;
            caller::run(caller::CallConfig {
                server: a.server,
                local_ip: a.server.ip(),
                domain: a.domain.unwrap_or_else(|| a.server.ip().to_string()),
                calls: a.calls,
                rate: a.rate,
                hold: Duration::from_secs_f64(a.hold),
                to: a.to,
                group_size: a.group_size,
                credentials: creds,
                codec: a.codec,
                tone_hz: a.tone_hz,
                amplitude: a.amplitude,
                late: Duration::from_millis(a.late_ms),
                setup_timeout: Duration::from_secs_f64(a.setup_timeout),
                max_time: Duration::from_secs_f64(a.max_time.unwrap_or(ramp + a.hold + 60.0)),
                progress: a.progress,
                label: a.label,
                probe_every: a.probe_every,
                telephone_event: a.telephone_event,
            })
        }
        Mode::Answer(a) => {
            loopback(&a.server)?;
            loopback(&a.listen)?;
            answer::run(answer::AnswerConfig {
                server: a.server,
                listen: a.listen,
                domain: a.domain.unwrap_or_else(|| a.server.ip().to_string()),
                user: a.user,
                password: a.password,
                max_calls: a.max_calls,
                duration: Duration::from_secs_f64(a.duration),
                progress: a.progress,
                telephone_event: a.telephone_event,
            })
        }
    }
}
