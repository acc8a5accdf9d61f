//! End-to-end harness: starts the real `switchboard` binary on free loopback
//! ports with its own temporary data directory, and drives real SIP peers
//! (SIPp, baresip) against it. Every wait is an event or a poll with a
//! deadline; nothing sleeps for a guessed time, and nothing uses a fixed port,
//! so the suites run in parallel.
//!
//! Each `tests/e2e_*.rs` file compiles this module on its own and uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod api;
pub mod baresip;
pub mod capture;
pub mod media;
pub mod sipp;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test, built by cargo for the integration tests.
pub const SWITCHBOARD: &str = env!("CARGO_BIN_EXE_switchboard");

/// How often the harness re-checks a condition while waiting on a deadline.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The harness's loopback address; servers and peers all live there.
pub const LOCALHOST: &str = "127.0.0.1";

// ---------------------------------------------------------------------------
// Peers on PATH

/// Whether the external program `name` can run here. When it cannot: under
/// CI (`CI=true`) that is a broken runner, so panic; on a developer machine,
/// print a SKIP line and let the test return early.
pub fn peer_available(name: &str) -> bool {
    if find_on_path(name).is_some() {
        return true;
    }
    if std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
    {
        panic!(
            "{name} is not installed but CI=true: install it (.ci/run does: \
             apt-get install --no-install-recommends sip-tester baresip-core wireshark-common)"
        );
    }
    eprintln!("SKIP: {name} not installed");
    false
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A fresh, empty PostgreSQL database on the server named by
/// `SWITCHBOARD_TEST_POSTGRES_URL` (`.ci/run` starts one with
/// `.ci/postgres.sh`), as a URL. Without the variable: panic under CI, else
/// print SKIP and return `None`. Created with `psql` (postgresql-client).
pub fn postgres_database(label: &str) -> Option<String> {
    let Ok(base) = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") else {
        if std::env::var("CI")
            .map(|v| v == "true" || v == "1")
            .unwrap_or(false)
        {
            panic!("SWITCHBOARD_TEST_POSTGRES_URL is unset but CI=true (.ci/run sets it via .ci/postgres.sh)");
        }
        eprintln!("SKIP: SWITCHBOARD_TEST_POSTGRES_URL not set (start one with .ci/postgres.sh)");
        return None;
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "e2e_{label}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let (server, _database) = base
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("SWITCHBOARD_TEST_POSTGRES_URL has no database part: {base}"));
    let output = Command::new("psql")
        .arg(&base)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            &format!("CREATE DATABASE \"{name}\""),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run psql (postgresql-client) to create a test database: {e}"));
    assert!(
        output.status.success(),
        "CREATE DATABASE {name} on {base} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(format!("{server}/{name}"))
}

// ---------------------------------------------------------------------------
// Ports

/// Ports handed out by this test process. The kernel may give a just-released
/// port to the next `bind(0)`, and tests in one binary run in parallel
/// threads, so a port is never handed out twice by the same process.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn claim(ports: &[u16]) -> bool {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let set = guard.get_or_insert_with(HashSet::new);
    if ports.iter().any(|p| set.contains(p)) {
        return false;
    }
    set.extend(ports.iter().copied());
    true
}

fn udp_and_tcp_free(port: u16) -> bool {
    UdpSocket::bind((LOCALHOST, port)).is_ok() && TcpListener::bind((LOCALHOST, port)).is_ok()
}

/// A loopback port that is free for both UDP and TCP right now (SIP listens on
/// both with one number). The sockets are released before returning: the
/// process under test binds it next.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let udp = UdpSocket::bind((LOCALHOST, 0)).expect("bind 127.0.0.1:0/udp");
        let port = udp.local_addr().expect("local_addr").port();
        let tcp_ok = TcpListener::bind((LOCALHOST, port)).is_ok();
        drop(udp);
        if tcp_ok && claim(&[port]) {
            return port;
        }
    }
    panic!("no free UDP+TCP port on 127.0.0.1 after 1000 tries");
}

/// The first of `len` consecutive ports that are all free for UDP and TCP:
/// SIPp binds its media port and media port + 2, baresip binds TLS on its SIP
/// port + 1 and picks RTP ports from a range.
pub fn free_port_block(len: u16) -> u16 {
    for _ in 0..1000 {
        let udp = UdpSocket::bind((LOCALHOST, 0)).expect("bind 127.0.0.1:0/udp");
        let first = udp.local_addr().expect("local_addr").port();
        drop(udp);
        let Some(last) = first.checked_add(len - 1) else {
            continue;
        };
        let ports: Vec<u16> = (first..=last).collect();
        if ports.iter().all(|&p| udp_and_tcp_free(p)) && claim(&ports) {
            return first;
        }
    }
    panic!("no {len} consecutive free ports on 127.0.0.1 after 1000 tries");
}

/// A SIPp media port: SIPp binds it and the port + 2 (video) even when the
/// scenario carries no media.
pub fn free_media_port() -> u16 {
    free_port_block(3)
}

// ---------------------------------------------------------------------------
// Waiting

/// The one polling loop of the harness: calls `check` every `POLL_INTERVAL` until it
/// yields a value, or `None` once `timeout` has passed. Every wait in the tests is this
/// poll with a deadline (or a blocking read with a timeout), never a guessed sleep.
pub fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `check` until it yields a value or `timeout` passes; then panics naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `check` until it returns true or `timeout` passes; returns whether
/// it did. For conditions the caller reports on itself.
pub fn wait_until_or(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    poll_until(timeout, || check().then_some(())).is_some()
}

/// Waits for `child` to exit, up to `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    poll_until(timeout, || child.try_wait().expect("try_wait"))
}

/// Sends SIGTERM through the `kill` program (the tests stay free of libc and
/// unsafe code).
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, a grace period, then SIGKILL. Returns the exit status if the
/// process ended within the grace period.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    sigterm(child);
    let status = wait_child(child, grace);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

// ---------------------------------------------------------------------------
// Temporary directories

/// A unique directory under the system temp dir, removed on drop unless the
/// test is failing (then it is kept and its path printed, for the logs).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-e2e-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SWITCHBOARD_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept test directory {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Reads a file for a report; a missing file reads as a note, not a panic.
pub fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<{}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------
// HTTP (a minimal HTTP/1.0 GET: enough for /healthz and /metrics)

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no HTTP status line in {text:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok(HttpResponse { status, body })
}

/// Sum of all samples of the Prometheus metric `name` (any labels), or `None`
/// when the exposition has no sample of that name.
pub fn metric_sum(exposition: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample_name = line
            .split(|c: char| c == '{' || c.is_whitespace())
            .next()
            .unwrap_or("");
        if sample_name != name {
            continue;
        }
        // The value follows the labels; an optional timestamp may follow it.
        let after_labels = match line.rfind('}') {
            Some(i) => &line[i + 1..],
            None => &line[sample_name.len()..],
        };
        if let Some(value) = after_labels
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

// ---------------------------------------------------------------------------
// The server under test

/// A user created with `switchboard user add` before the server starts.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    pub extension: Option<String>,
    pub display_name: Option<String>,
}

impl User {
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.to_string(),
            password: password.to_string(),
            extension: None,
            display_name: None,
        }
    }

    pub fn extension(mut self, extension: &str) -> User {
        self.extension = Some(extension.to_string());
        self
    }

    pub fn display_name(mut self, display_name: &str) -> User {
        self.display_name = Some(display_name.to_string());
        self
    }
}

#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub users: Vec<User>,
    /// `--ring-timeout SECONDS`; the server's default (60) when `None`.
    pub ring_timeout: Option<u64>,
    /// `--domain`; the server's default (`switchboard.local`) when `None`.
    pub domain: Option<String>,
    /// `--database-url`; SQLite in the temporary data dir when `None`.
    pub database_url: Option<String>,
    /// Further `serve` flags (e.g. `--sha256`).
    pub serve_args: Vec<String>,
    /// Extra environment for `serve` (e.g. `SWITCHBOARD_LOG`).
    pub env: Vec<(String, String)>,
}

impl ServerOptions {
    pub fn user(mut self, user: User) -> ServerOptions {
        self.users.push(user);
        self
    }

    /// Adds a flag to `switchboard serve`.
    pub fn serve_arg(mut self, arg: &str) -> ServerOptions {
        self.serve_args.push(arg.to_string());
        self
    }

    /// Sets an environment variable for `switchboard serve`.
    pub fn env(mut self, name: &str, value: &str) -> ServerOptions {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn ring_timeout(mut self, seconds: u64) -> ServerOptions {
        self.ring_timeout = Some(seconds);
        self
    }
}

/// RTP ports each test server gets (20 calls' worth: a call takes two pairs).
pub const RTP_PORTS_PER_SERVER: u16 = 80;

/// How long a fresh server may take to answer /healthz (first start runs the
/// migrations; CI machines are slow).
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// `switchboard serve` on free ports with a private data directory. Stopped
/// (SIGTERM, then SIGKILL) on drop; its log is printed when the test fails.
pub struct Server {
    child: Option<Child>,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    /// This server's own RTP port range (tests run servers in parallel).
    pub rtp_ports: (u16, u16),
    pub options: ServerOptions,
    log: PathBuf,
    runs: AtomicU64,
    // Last: removed after the child is gone.
    dir: TempDir,
}

impl Server {
    pub fn start(options: ServerOptions) -> Server {
        let dir = TempDir::new("server");
        let sip_port = free_port();
        let http_port = free_port();
        let sip: SocketAddr = format!("{LOCALHOST}:{sip_port}").parse().unwrap();
        let http: SocketAddr = format!("{LOCALHOST}:{http_port}").parse().unwrap();
        let log = dir.path().join("server.log");
        let rtp_first = free_port_block(RTP_PORTS_PER_SERVER);
        let mut server = Server {
            child: None,
            sip,
            http,
            rtp_ports: (rtp_first, rtp_first + RTP_PORTS_PER_SERVER - 1),
            options,
            log,
            runs: AtomicU64::new(0),
            dir,
        };
        for user in server.options.users.clone() {
            server.add_user(&user);
        }
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = File::create(&self.log).expect("create server log");
        let mut command = self.command();
        command.arg("serve").args([
            "--sip-listen",
            &self.sip.to_string(),
            "--http-listen",
            &self.http.to_string(),
            "--rtp-ports",
            &format!("{}-{}", self.rtp_ports.0, self.rtp_ports.1),
        ]);
        if let Some(seconds) = self.options.ring_timeout {
            command.args(["--ring-timeout", &seconds.to_string()]);
        }
        command.args(&self.options.serve_args);
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {SWITCHBOARD} serve: {e}"));
        self.child = Some(child);
        self.wait_healthy();
    }

    /// `switchboard` with this server's global options, ready for a subcommand.
    pub fn command(&self) -> Command {
        let mut command = Command::new(SWITCHBOARD);
        // Only what the test says: a developer's own SWITCHBOARD_* settings must not
        // change the server under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(name);
            }
        }
        command.arg("--data-dir").arg(self.dir.path());
        if let Some(domain) = &self.options.domain {
            command.args(["--domain", domain]);
        }
        if let Some(url) = &self.options.database_url {
            command.args(["--database-url", url]);
        }
        command
    }

    /// Runs a CLI subcommand (`user add ...`) against this server's data and
    /// panics with its output unless it succeeds. Returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run switchboard {args:?}: {e}"));
        if !output.status.success() {
            panic!(
                "switchboard {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn add_user(&self, user: &User) {
        let mut args = vec!["user", "add", &user.name, "--password", &user.password];
        if let Some(extension) = &user.extension {
            args.extend(["--extension", extension]);
        }
        if let Some(display_name) = &user.display_name {
            args.extend(["--display-name", display_name]);
        }
        self.cli(&args);
    }

    fn wait_healthy(&mut self) {
        let (http, log) = (self.http, self.log.clone());
        let child = &mut self.child;
        let healthy = poll_until(STARTUP_DEADLINE, || {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "switchboard serve exited during startup ({status}); log:\n{}",
                    read_lossy(&log)
                );
            }
            matches!(http_get(http, "/healthz"), Ok(r) if r.status == 200).then_some(())
        });
        if healthy.is_none() {
            panic!(
                "switchboard serve not healthy on http://{http}/healthz after {STARTUP_DEADLINE:?}; log:\n{}",
                read_lossy(&log)
            );
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh directory for one peer's files (SIPp traces, baresip config).
    pub fn run_dir(&self, label: &str) -> PathBuf {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("{n:02}-{label}"));
        fs::create_dir_all(&path).expect("mkdir run dir");
        path
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http, path).unwrap_or_else(|e| panic!("GET http://{}{path}: {e}", self.http))
    }

    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        response.body
    }

    /// Polls /metrics until `metric` sums to `value`; panics with the last
    /// exposition after `timeout`.
    pub fn wait_metric(&self, metric: &str, value: f64, timeout: Duration) {
        let mut last = (None, String::new());
        let reached = poll_until(timeout, || {
            let exposition = self.metrics();
            let seen = metric_sum(&exposition, metric);
            last = (seen, exposition);
            (seen == Some(value)).then_some(())
        });
        if reached.is_none() {
            let (seen, exposition) = last;
            panic!("metric {metric}: wanted {value}, last seen {seen:?} after {timeout:?}; /metrics:\n{exposition}");
        }
    }

    /// SIGTERM and wait (up to `grace`) for the exit; panics if it hangs.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        match stop_child(&mut child, grace) {
            Some(status) => status,
            None => panic!(
                "switchboard serve ignored SIGTERM for {grace:?} (killed); log:\n{}",
                read_lossy(&self.log)
            ),
        }
    }

    /// Starts `serve` again on the same ports and data after [`Server::terminate`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server is still running");
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server stopped").id()
    }

    /// SIGHUP (reload the dialplan), through the `kill` program.
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!(
                "===== switchboard log ({}) =====\n{}\n===== end of switchboard log =====",
                self.log.display(),
                read_lossy(&self.log)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The two-user PBX most call tests start from

pub fn alice() -> User {
    User::new("alice", "alice-secret").extension("101")
}

pub fn bob() -> User {
    User::new("bob", "bob-secret").extension("102")
}

/// A server with alice (101) and bob (102), alice registered from the port her UAC will
/// call from (suites add their own helpers in `impl Pbx` blocks).
pub struct Pbx {
    pub server: Server,
    pub alice: User,
    pub bob: User,
    pub alice_port: u16,
}

pub fn pbx(options: ServerOptions) -> Pbx {
    let (alice, bob) = (alice(), bob());
    let server = Server::start(options.user(alice.clone()).user(bob.clone()));
    let alice_port = free_port();
    sipp::register(&server, &alice, alice_port);
    Pbx {
        server,
        alice,
        bob,
        alice_port,
    }
}
