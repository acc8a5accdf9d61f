//! SIPp runs: builds the command line for one scenario of `tests/sipp/`,
//! runs it on its own free ports (`-p`, `-mp`, `-cp`: SIPp's defaults 6000 and
//! 8888 would clash between parallel tests) and collects its screen, error,
//! message and log files for the failure report.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{
    free_media_port, free_port, read_lossy, stop_child, wait_child, Server, User, LOCALHOST,
};

/// Upper bound on one SIPp run; SIPp's own `-timeout` fires first.
pub const SIPP_DEADLINE: Duration = Duration::from_secs(90);

/// Where the scenarios live in the source tree.
pub fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
}

/// One SIPp process to be started: a scenario plus its options.
pub struct Sipp {
    scenario: String,
    substitutions: Vec<(String, String)>,
    target: Option<SocketAddr>,
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
    label: String,
}

impl Sipp {
    /// A UAC scenario aimed at the server's SIP address.
    pub fn uac(server: &Server, scenario: &str) -> Sipp {
        Sipp::new(server, scenario, Some(server.sip))
    }

    /// A UAS scenario: SIPp waits for requests on its own port.
    pub fn uas(server: &Server, scenario: &str) -> Sipp {
        Sipp::new(server, scenario, None)
    }

    /// Any scenario against any target, files kept in `dir` (harness checks
    /// with a SIPp peer standing in for the server).
    pub fn with_dir(dir: PathBuf, scenario: &str, target: Option<SocketAddr>) -> Sipp {
        let label = scenario.trim_end_matches(".xml").to_string();
        Sipp {
            scenario: scenario.to_string(),
            substitutions: Vec::new(),
            target,
            port: free_port(),
            args: Vec::new(),
            dir,
            label,
        }
    }

    fn new(server: &Server, scenario: &str, target: Option<SocketAddr>) -> Sipp {
        let label = scenario.trim_end_matches(".xml");
        Sipp::with_dir(server.run_dir(label), scenario, target)
    }

    /// The local SIP port (`-p`); free by default. Use the port a previous
    /// REGISTER put in the Contact to receive that user's calls.
    pub fn port(mut self, port: u16) -> Sipp {
        self.port = port;
        self
    }

    pub fn local_port(&self) -> u16 {
        self.port
    }

    pub fn arg(mut self, arg: &str) -> Sipp {
        self.args.push(arg.to_string());
        self
    }

    /// `-s USER`: the `[service]` of the scenarios (callee or registering user).
    pub fn service(self, user: &str) -> Sipp {
        self.arg("-s").arg(user)
    }

    /// `-au/-ap`: the digest credentials SIPp answers challenges with.
    pub fn credentials(self, user: &str, password: &str) -> Sipp {
        self.arg("-au").arg(user).arg("-ap").arg(password)
    }

    /// `-key NAME VALUE`: a `[NAME]` keyword of the scenario.
    pub fn key(self, name: &str, value: &str) -> Sipp {
        self.arg("-key").arg(name).arg(value)
    }

    /// The calling user of the `uac_*` scenarios: `[caller]` and credentials.
    pub fn caller(self, user: &User) -> Sipp {
        self.key("caller", &user.name)
            .credentials(&user.name, &user.password)
    }

    /// `-d MS`: the length of the scenarios' `<pause/>`.
    pub fn pause_ms(self, ms: u64) -> Sipp {
        self.arg("-d").arg(&ms.to_string())
    }

    /// `-t t1`: SIP over one TCP connection instead of UDP.
    pub fn tcp(self) -> Sipp {
        self.arg("-t").arg("t1")
    }

    /// Replaces a `@PLACEHOLDER@` of the scenario file (e.g. `@FINAL@`).
    pub fn substitute(mut self, placeholder: &str, value: &str) -> Sipp {
        self.substitutions
            .push((placeholder.to_string(), value.to_string()));
        self
    }

    pub fn spawn(self) -> RunningSipp {
        let source = scenario_dir().join(&self.scenario);
        let mut text = fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("read scenario {}: {e}", source.display()));
        for (placeholder, value) in &self.substitutions {
            text = text.replace(placeholder, value);
        }
        let scenario = self.dir.join(&self.scenario);
        fs::write(&scenario, text).expect("write scenario copy");

        let files = SippFiles::new(&self.dir);
        let mut command = Command::new("sipp");
        if let Some(target) = self.target {
            command.arg(target.to_string());
        }
        command
            .arg("-sf")
            .arg(&scenario)
            .args(["-i", LOCALHOST, "-p", &self.port.to_string()])
            .args(["-mi", LOCALHOST, "-mp", &free_media_port().to_string()])
            .args(["-cp", &free_port().to_string()])
            .args(["-m", "1", "-nostdin"])
            // A call waiting longer than this for its next message fails
            // (the longest legitimate wait is a ring timeout of a few seconds);
            // the global timeout ends a UAS that never gets its INVITE.
            .args([
                "-recv_timeout",
                "20000",
                "-timeout",
                "60s",
                "-timeout_error",
            ])
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&files.errors)
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(&files.screen)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&files.messages)
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&files.logs)
            .args(&self.args)
            .current_dir(&self.dir);
        let stdout = File::create(&files.stdout).expect("create sipp stdout");
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().expect("clone"))
            .stderr(stdout)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sipp: {e}"));
        RunningSipp {
            child: Some(child),
            label: format!("{} (-p {})", self.label, self.port),
            command: format!("{command:?}"),
            files,
        }
    }

    /// Runs to completion (bounded by `SIPP_DEADLINE`).
    pub fn run(self) -> SippRun {
        self.spawn().wait()
    }
}

struct SippFiles {
    stdout: PathBuf,
    errors: PathBuf,
    screen: PathBuf,
    messages: PathBuf,
    logs: PathBuf,
}

impl SippFiles {
    fn new(dir: &Path) -> SippFiles {
        SippFiles {
            stdout: dir.join("stdout.txt"),
            errors: dir.join("errors.log"),
            screen: dir.join("screen.log"),
            messages: dir.join("messages.log"),
            logs: dir.join("logs.log"),
        }
    }
}

/// A SIPp process in the background.
pub struct RunningSipp {
    child: Option<Child>,
    label: String,
    command: String,
    files: SippFiles,
}

impl RunningSipp {
    /// Waits until the scenario's `<log>` output contains `needle` (e.g.
    /// "established"); panics with the SIPp report after `timeout` or if SIPp
    /// exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let logs = self.files.logs.clone();
        let child = &mut self.child;
        // Some(None): logged; Some(Some(status)): SIPp exited without logging it.
        let outcome = super::poll_until(timeout, || {
            if read_lossy(&logs).contains(needle) {
                return Some(None);
            }
            let exited = child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
            // A last look: SIPp may have logged and exited at once.
            Some((!read_lossy(&logs).contains(needle)).then_some(exited))
        });
        match outcome {
            Some(None) => {}
            Some(Some(status)) => panic!(
                "sipp exited ({status}) before logging {needle:?}\n{}",
                self.report(Some(status))
            ),
            None => panic!(
                "sipp did not log {needle:?} within {timeout:?}\n{}",
                self.report(None)
            ),
        }
    }

    /// What the scenario's `<log>` actions wrote so far.
    pub fn logs(&self) -> String {
        read_lossy(&self.files.logs)
    }

    /// SIPp's message trace so far (`-trace_msg`; see `media::sipp_received_messages`).
    pub fn messages(&self) -> String {
        read_lossy(&self.files.messages)
    }

    pub fn wait(mut self) -> SippRun {
        let mut child = self.child.take().expect("waited twice");
        let status = wait_child(&mut child, SIPP_DEADLINE);
        let status = match status {
            Some(status) => Some(status),
            None => {
                // SIGTERM makes SIPp write its final screen first.
                stop_child(&mut child, Duration::from_secs(5));
                None
            }
        };
        let report = self.report(status);
        SippRun {
            label: self.label.clone(),
            status,
            report,
        }
    }

    fn report(&self, status: Option<ExitStatus>) -> String {
        let status = match status {
            Some(status) => status.to_string(),
            None => format!("still running after {SIPP_DEADLINE:?} (killed)"),
        };
        format!(
            "----- sipp {label}: {status}\ncommand: {command}\n--- stdout:\n{stdout}\n--- errors:\n{errors}\n--- screen:\n{screen}\n--- messages:\n{messages}\n----- end of sipp {label}",
            label = self.label,
            command = self.command,
            stdout = tail(&read_lossy(&self.files.stdout), 4000),
            errors = read_lossy(&self.files.errors),
            screen = tail(&read_lossy(&self.files.screen), 6000),
            messages = tail(&read_lossy(&self.files.messages), 12000),
        )
    }
}

impl Drop for RunningSipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
            if std::thread::panicking() {
                eprintln!("{}", self.report(None));
            }
        }
    }
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A finished SIPp run. SIPp exits 0 when every call passed its scenario.
pub struct SippRun {
    pub label: String,
    pub status: Option<ExitStatus>,
    pub report: String,
}

impl SippRun {
    pub fn passed(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }

    /// Panics with SIPp's errors, screen and SIP message trace unless the
    /// scenario passed. `what` says what the run was meant to show.
    pub fn assert_passed(&self, what: &str) {
        assert!(
            self.passed(),
            "{what}: sipp {} failed\n{}",
            self.label,
            self.report
        );
    }
}

/// Registers `user` from local port `port` (Contact sip:NAME@127.0.0.1:PORT)
/// with digest auth; a UAS started on `port` afterwards receives the calls.
pub fn register(server: &Server, user: &User, port: u16) {
    Sipp::uac(server, "register.xml")
        .port(port)
        .service(&user.name)
        .credentials(&user.name, &user.password)
        .key("expires", "300")
        .run()
        .assert_passed(&format!("REGISTER {} from port {port}", user.name));
}
