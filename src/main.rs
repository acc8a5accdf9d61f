//! `switchboard`: the one binary. `serve` runs the PBX; `user` manages SIP users in the
//! same database the server uses (it may run while the server does).

mod config;
mod dialplan_cli;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use switchboard_core::conference::ConferenceConfig;
use switchboard_core::media::MediaConfig;
use switchboard_core::{EngineConfig, LocalAddress, RegistrarConfig};
use switchboard_runtime::{advertised_host, DriverConfig, Metrics, SipSockets};
use switchboard_sip::digest::offered_algorithms;
use switchboard_sip::transaction::Timers;
use switchboard_store::{NewUser, Store, StoreError};
use tokio::sync::watch;

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard: an open-source contact-center PBX"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct GlobalArgs {
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for the embedded SQLite database and other state.
    #[arg(long, global = true, env = "SWITCHBOARD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database instead of SQLite in the data directory: sqlite:PATH or postgres://…
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_DATABASE_URL",
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// SIP domain, also the digest realm (default switchboard.local).
    #[arg(long, global = true, env = "SWITCHBOARD_DOMAIN", value_name = "NAME")]
    domain: Option<String>,
}

#[derive(Subcommand)]
// Parsed once at start-up: the size of the serve flags does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run the PBX: SIP on UDP and TCP, and the HTTP endpoints.
    Serve(ServeArgs),
    /// Manage SIP users.
    #[command(subcommand)]
    User(UserCommand),
    /// Check, trace and test dialplan files (see docs/dialplan.md).
    #[command(subcommand)]
    Dialplan(dialplan_cli::DialplanCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Where SIP listens, on UDP and TCP (default 0.0.0.0:5060).
    #[arg(long, env = "SWITCHBOARD_SIP_LISTEN", value_name = "ADDR:PORT")]
    sip_listen: Option<SocketAddr>,
    /// Host written in Via and Contact when it differs from the listen address (NAT).
    #[arg(long, env = "SWITCHBOARD_SIP_ADVERTISE", value_name = "HOST")]
    sip_advertise: Option<String>,
    /// Where HTTP (/healthz, /metrics) listens (default 127.0.0.1:8080).
    #[arg(long, env = "SWITCHBOARD_HTTP_LISTEN", value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// Seconds callee devices ring before the caller gets 408 (default 60).
    #[arg(long, env = "SWITCHBOARD_RING_TIMEOUT", value_name = "SECONDS")]
    ring_timeout: Option<u64>,
    /// RTP port range for anchored media (default 20000-30000).
    #[arg(long, env = "SWITCHBOARD_RTP_PORTS", value_name = "FIRST-LAST")]
    rtp_ports: Option<String>,
    /// Address written in SDP c= lines (the public address behind NAT).
    #[arg(long, env = "SWITCHBOARD_MEDIA_ADVERTISE", value_name = "HOST")]
    media_advertise: Option<String>,
    /// Seconds without RTP from a sending party before the call is hung up (default 60).
    #[arg(long, env = "SWITCHBOARD_RTP_TIMEOUT", value_name = "SECONDS")]
    rtp_timeout: Option<u64>,
    /// Record every answered call as a stereo WAV in DATA_DIR/recordings.
    #[arg(long, env = "SWITCHBOARD_RECORD_CALLS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    record_calls: Option<bool>,
    /// Music-on-hold classes: a directory with one subdirectory of WAV files per class
    /// (`default` replaces the generated music).
    #[arg(long, env = "SWITCHBOARD_MOH_DIR", value_name = "DIR")]
    moh_dir: Option<PathBuf>,
    /// Recorded prompts for the dialplan's playback and menus: `NAME.wav` files
    /// (`ivr/main-menu.wav` is the prompt `ivr/main-menu`); names without a file play
    /// the prompts shipped in the binary (speech made by prompts/generate.sh).
    #[arg(long, env = "SWITCHBOARD_PROMPTS_DIR", value_name = "DIR")]
    prompts_dir: Option<PathBuf>,
    /// Threads relaying call media and mixing conference rooms (default: one per CPU
    /// core; 0 runs media on the SIP runtime's worker threads instead).
    #[arg(long, env = "SWITCHBOARD_MEDIA_THREADS", value_name = "N")]
    media_threads: Option<u64>,
    /// Run the media threads under real-time round-robin scheduling (SCHED_RR) at this
    /// priority, 1 to 99 (0: normal scheduling, the default). Needs root or CAP_SYS_NICE.
    #[arg(long, env = "SWITCHBOARD_MEDIA_REALTIME_PRIORITY", value_name = "N")]
    media_realtime_priority: Option<u64>,
    /// The dialplan routing calls (e.g. dialplans/default.toml); without one, only user
    /// names and extensions are reachable. Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "SWITCHBOARD_DIALPLAN", value_name = "FILE")]
    dialplan: Option<PathBuf>,
    /// Park slots, dialled to retrieve a parked call (default 701-720).
    #[arg(long, env = "SWITCHBOARD_PARK_SLOTS", value_name = "FIRST-LAST")]
    park_slots: Option<String>,
    /// Seconds a call stays parked before the parker is rung back (default 45).
    #[arg(long, env = "SWITCHBOARD_PARK_TIMEOUT", value_name = "SECONDS")]
    park_timeout: Option<u64>,
    /// Admin token of the call-control API (/api/v1); the API is disabled without one.
    /// Prefer the environment or the configuration file: flags show in `ps`.
    #[arg(
        long,
        env = "SWITCHBOARD_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    api_token: Option<String>,
    /// Conference room numbers, e.g. `800-899` or `800-849,900` (none by default).
    #[arg(long, env = "SWITCHBOARD_CONFERENCE_ROOMS", value_name = "RANGES")]
    conference_rooms: Option<String>,
    /// Rooms where participants hear music until a speaker joins.
    #[arg(long, env = "SWITCHBOARD_CONFERENCE_MODERATED", value_name = "RANGES")]
    conference_moderated: Option<String>,
    /// Users who are speakers in moderated rooms (comma-separated names).
    #[arg(long, env = "SWITCHBOARD_CONFERENCE_SPEAKERS", value_name = "USERS")]
    conference_speakers: Option<String>,
    /// The conference factory: dialled (a phone's conference URI), it opens a free room.
    #[arg(long, env = "SWITCHBOARD_CONFERENCE_FACTORY", value_name = "NAME")]
    conference_factory: Option<String>,
    /// Anchor media through Switchboard (default true); false passes SDP through.
    #[arg(long, env = "SWITCHBOARD_MEDIA_ANCHOR", value_name = "BOOL")]
    media_anchor: Option<bool>,
    /// Also offer SHA-256 digest challenges (after MD5).
    #[arg(long, env = "SWITCHBOARD_SHA256", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    sha256: Option<bool>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. Without --password, the password is read from standard input.
    Add {
        name: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        extension: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List users.
    List,
    /// Remove a user and their registrations.
    Remove { name: String },
    /// Set a user's password. Without --password, it is read from standard input.
    Passwd {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Add users from a CSV file: name,password[,extension[,display name]] per line.
    Import { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut over = Overrides {
        domain: cli.global.domain.clone(),
        data_dir: cli.global.data_dir.clone(),
        database_url: cli.global.database_url.clone(),
        ..Overrides::default()
    };
    if let Command::Serve(s) = &cli.command {
        over.sip_listen = s.sip_listen;
        over.sip_advertise = s.sip_advertise.clone();
        over.http_listen = s.http_listen;
        over.ring_timeout = s.ring_timeout;
        over.sha256 = s.sha256;
        over.rtp_ports = s.rtp_ports.clone();
        over.media_advertise = s.media_advertise.clone();
        over.rtp_timeout = s.rtp_timeout;
        over.media_anchor = s.media_anchor;
        over.record_calls = s.record_calls;
        over.moh_dir = s.moh_dir.clone();
        over.prompts_dir = s.prompts_dir.clone();
        over.media_threads = s.media_threads;
        over.media_realtime_priority = s.media_realtime_priority;
        over.park_slots = s.park_slots.clone();
        over.dialplan = s.dialplan.clone();
        over.park_timeout = s.park_timeout;
        over.api_token = s.api_token.clone();
        over.conference_rooms = s.conference_rooms.clone();
        over.conference_moderated = s.conference_moderated.clone();
        over.conference_speakers = s.conference_speakers.clone();
        over.conference_factory = s.conference_factory.clone();
    }
    let cfg = config::load(cli.global.config.as_deref(), &over)?;
    match cli.command {
        Command::Serve(_) => serve(cfg).await,
        Command::User(cmd) => user(cfg, cmd).await,
        Command::Dialplan(cmd) => dialplan_cli::run(&cfg, cmd).await,
    }
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    if cfg.database_url.is_none() {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                cfg.data_dir.display()
            )
        })?;
    }
    let url = cfg.database_url();
    Store::open(&url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(&url)))
}

/// Hides a password in a database URL for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let stale_realm = store
        .list_users()
        .await?
        .iter()
        .filter(|u| u.realm != cfg.domain)
        .count();
    if stale_realm > 0 {
        tracing::warn!(users = stale_realm, domain = %cfg.domain, "users were created for another domain and cannot authenticate until their password is set again");
    }
    let sockets = SipSockets::bind(cfg.sip_listen).await?;
    let local = sockets.local_addr();
    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", cfg.http_listen))?;
    let sip_host = cfg
        .sip_advertise
        .clone()
        .unwrap_or_else(|| advertised_host(local));
    let media = if cfg.media_anchor {
        let advertise = cfg.media_advertise.clone().unwrap_or_else(|| {
            sip_host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        });
        let mut media =
            MediaConfig::new(advertise, cfg.rtp_ports.0, cfg.rtp_ports.1, cfg.rtp_timeout)?;
        media.record_calls = cfg.record_calls;
        Some(media)
    } else {
        None
    };
    let engine_config = EngineConfig {
        domain: cfg.domain.clone(),
        local: LocalAddress {
            host: sip_host,
            port: local.port(),
        },
        ring_timeout: cfg.ring_timeout,
        algorithms: offered_algorithms(cfg.sha256).to_vec(),
        registrar: RegistrarConfig {
            min_expires: cfg.min_expires,
            max_expires: cfg.max_expires,
            default_expires: cfg.default_expires,
            max_contacts: cfg.max_contacts,
        },
        nonce_secret: rand_secret(),
        nonce_lifetime_secs: 300,
        timers: Timers::default(),
        user_agent: format!("Switchboard/{}", env!("CARGO_PKG_VERSION")),
        media,
        features: cfg.features.clone(),
        trunks: cfg.trunks.clone(),
        conference: (!cfg.conference_rooms.is_empty()).then(|| ConferenceConfig {
            rooms: cfg.conference_rooms.clone(),
            moderated: cfg.conference_moderated.clone(),
            speakers: cfg.conference_speakers.clone(),
            tones: cfg.conference_tones,
            factory: cfg.conference_factory.clone(),
        }),
    };
    let driver = DriverConfig {
        max_message_size: cfg.max_message_size,
        tcp_partial_timeout: cfg.tcp_partial_timeout,
        max_tcp_connections: cfg.max_tcp_connections,
        shutdown_grace: cfg.shutdown_grace,
        recordings_dir: cfg.data_dir.join("recordings"),
        moh: match &cfg.moh_dir {
            Some(dir) => switchboard_runtime::load_moh_library(dir)
                .with_context(|| format!("cannot read music on hold from {}", dir.display()))?,
            None => Default::default(),
        },
        prompts: match &cfg.prompts_dir {
            Some(dir) => switchboard_runtime::PromptLibrary::load(dir)
                .with_context(|| format!("cannot read prompts from {}", dir.display()))?,
            None => Default::default(),
        },
        media_threads: {
            let n = cfg.media_threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let threads =
                switchboard_runtime::MediaThreads::start_with(n, cfg.media_realtime_priority)
                    .context("cannot start the media threads")?;
            match (threads.realtime(), cfg.media_realtime_priority) {
                (Some(Ok(p)), _) => {
                    tracing::info!(threads = n, priority = p, "media threads run under SCHED_RR")
                }
                (Some(Err(why)), Some(p)) => tracing::warn!(
                    priority = p,
                    error = %why,
                    "media threads run at normal priority: real-time priority refused (needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of at least the priority)"
                ),
                (_, Some(p)) => tracing::warn!(
                    priority = p,
                    "media.realtime_priority has no effect without media threads (media.threads = 0)"
                ),
                _ => {}
            }
            threads
        },
        ..DriverConfig::default()
    };
    let metrics = Arc::new(Metrics::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (control, control_inbox) = switchboard_runtime::CallControl::new();
    // The dialplan: a plan with errors stops the start (its errors say where).
    let dialplan = match &cfg.dialplan {
        Some(path) => {
            let source = switchboard_runtime::dialplan::DialplanSource {
                path: path.clone(),
                trunks: cfg.trunks.iter().map(|t| t.name.clone()).collect(),
                park_slots: (cfg.features.park_slots.0..=cfg.features.park_slots.1)
                    .map(|n| n.to_string())
                    .collect(),
                rooms: cfg
                    .conference_rooms
                    .iter()
                    .flat_map(|r| r.first..=r.last)
                    .take(100_000)
                    .map(|n| n.to_string())
                    .collect(),
                poll_interval: std::time::Duration::from_secs(1),
                test_clock: match std::env::var("SWITCHBOARD_DIALPLAN_TEST_CLOCK") {
                    Ok(v) => {
                        let ts: switchboard_dialplan::jiff::Timestamp = v.parse().map_err(|e| {
                            anyhow::anyhow!("SWITCHBOARD_DIALPLAN_TEST_CLOCK {v:?}: {e}")
                        })?;
                        tracing::warn!(clock = %ts, "the dialplan routes with a fixed test clock (SWITCHBOARD_DIALPLAN_TEST_CLOCK); never set it in production");
                        Some(ts.as_second())
                    }
                    Err(_) => None,
                },
            };
            let users = store
                .list_users()
                .await?
                .into_iter()
                .flat_map(|u| std::iter::once(u.name).chain(u.extension))
                .collect();
            let plan = source
                .load(users)
                .map_err(|e| anyhow::anyhow!("the dialplan has errors; not starting:\n{e}"))?;
            tracing::info!(file = %path.display(), warnings = plan.warnings().warnings().count(), "dialplan loaded");
            for line in plan
                .warnings()
                .to_string()
                .lines()
                .filter(|l| l.contains(": warning: "))
            {
                tracing::warn!("{line}");
            }
            Some(switchboard_runtime::dialplan::dialplan_channel(
                source, plan,
            ))
        }
        None => {
            tracing::info!(
                "no dialplan (--dialplan): user names and extensions are reachable, nothing else"
            );
            None
        }
    };
    let (dialplan_handle, dialplan_inbox) = match dialplan {
        Some((h, i)) => (Some(h), Some(i)),
        None => (None, None),
    };

    let api = match &cfg.api_token {
        Some(token) => Some(
            switchboard_web::api::ApiState::new(
                control,
                store.clone(),
                &token.0,
                shutdown_rx.clone(),
            )
            .with_dialplan(dialplan_handle.clone()),
        ),
        None => {
            tracing::warn!("the call-control API (/api/v1) is disabled: set [api] admin_token in the configuration file, --api-token or SWITCHBOARD_API_TOKEN to enable it");
            None
        }
    };
    let app = switchboard_web::router(switchboard_web::AppState {
        metrics: metrics.clone(),
        api,
    });
    let http_addr = http.local_addr()?;
    let mut http_shutdown = shutdown_rx.clone();
    let http_task = tokio::spawn(async move {
        let _ = axum::serve(http, app)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|v| *v).await;
            })
            .await;
    });
    tracing::info!(sip = %local, http = %http_addr, domain = %cfg.domain, database = %redact(&cfg.database_url()), "Switchboard starting");

    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: graceful shutdown");
        let _ = shutdown_tx.send(true);
        // A second signal stops at once.
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });

    let result = switchboard_runtime::run(
        sockets,
        engine_config,
        driver,
        store.clone(),
        metrics,
        control_inbox,
        dialplan_inbox,
        shutdown_rx,
    )
    .await;
    let _ = http_task.await;
    store.close().await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only Ctrl-C via tokio's portable path is left.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn rand_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut s = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut s);
    s
}

fn read_password(given: Option<String>) -> anyhow::Result<String> {
    let pw = match given {
        Some(p) => p,
        None => {
            eprintln!("password (read from standard input):");
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if pw.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(pw)
}

async fn user(cfg: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let result = user_command(&cfg, &store, cmd).await;
    store.close().await;
    result
}

async fn user_command(cfg: &Config, store: &Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            password,
            extension,
            display_name,
        } => {
            let password = read_password(password)?;
            store
                .add_user(&NewUser {
                    name: name.clone(),
                    password,
                    extension,
                    display_name,
                    realm: cfg.domain.clone(),
                })
                .await?;
            println!("added user {name} (realm {})", cfg.domain);
        }
        UserCommand::List => {
            let users = store.list_users().await?;
            println!(
                "{:<24} {:<10} {:<24} REALM",
                "NAME", "EXTENSION", "DISPLAY NAME"
            );
            for u in users {
                println!(
                    "{:<24} {:<10} {:<24} {}",
                    u.name,
                    u.extension.as_deref().unwrap_or("-"),
                    u.display_name.as_deref().unwrap_or("-"),
                    u.realm
                );
            }
        }
        UserCommand::Remove { name } => {
            store.remove_user(&name).await?;
            println!("removed user {name}");
        }
        UserCommand::Passwd { name, password } => {
            let password = read_password(password)?;
            store.set_password(&name, &password, &cfg.domain).await?;
            println!("password of {name} changed (realm {})", cfg.domain);
        }
        UserCommand::Import { file } => {
            let n = import(cfg, store, &file).await?;
            println!("imported {n} users from {}", file.display());
        }
    }
    Ok(())
}

async fn import(cfg: &Config, store: &Store, file: &Path) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.splitn(4, ',').map(str::trim);
        let (Some(name), Some(password)) = (f.next(), f.next()) else {
            bail!(
                "{}:{}: expected name,password[,extension[,display name]]",
                file.display(),
                i + 1
            );
        };
        if password.is_empty() {
            bail!("{}:{}: empty password", file.display(), i + 1);
        }
        let extension = f.next().filter(|s| !s.is_empty()).map(str::to_string);
        let display_name = f.next().filter(|s| !s.is_empty()).map(str::to_string);
        users.push((
            i + 1,
            NewUser {
                name: name.to_string(),
                password: password.to_string(),
                extension,
                display_name,
                realm: cfg.domain.clone(),
            },
        ));
    }
    for (line, u) in &users {
        match store.add_user(u).await {
            Ok(()) => {}
            Err(
                e @ (StoreError::Conflict(_)
                | StoreError::InvalidName { .. }
                | StoreError::InvalidExtension { .. }
                | StoreError::InvalidField { .. }),
            ) => {
                bail!("{}:{line}: {e}", file.display())
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(users.len())
}
