//! baresip as a test phone: one process per phone with its own config
//! directory and ports, driven through the `ctrl_tcp` module (netstring-framed
//! JSON commands; events arrive on the same connection).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port_block, read_lossy, stop_child, Server, User, LOCALHOST};

// ---------------------------------------------------------------------------
// ctrl_tcp

/// A `ctrl_tcp` connection. Responses are matched to commands by token;
/// events read meanwhile are queued for `wait_event`.
pub struct CtrlClient {
    stream: TcpStream,
    buffer: Vec<u8>,
    events: VecDeque<Value>,
    /// Every event seen, for failure reports.
    pub seen: Vec<String>,
    next_token: u64,
}

/// What one netstring parse of the buffer found.
enum Frame {
    Complete(Value, usize),
    Incomplete,
}

fn parse_netstring(buffer: &[u8]) -> Result<Frame, String> {
    let Some(colon) = buffer.iter().position(|&b| b == b':') else {
        if buffer.len() > 10 || !buffer.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "bad netstring length prefix {:?}",
                String::from_utf8_lossy(buffer)
            ));
        }
        return Ok(Frame::Incomplete);
    };
    let len: usize = std::str::from_utf8(&buffer[..colon])
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| {
            format!(
                "bad netstring length {:?}",
                String::from_utf8_lossy(&buffer[..colon])
            )
        })?;
    let end = colon + 1 + len;
    if buffer.len() < end + 1 {
        return Ok(Frame::Incomplete);
    }
    if buffer[end] != b',' {
        return Err("netstring not terminated by ','".into());
    }
    let value = serde_json::from_slice(&buffer[colon + 1..end]).map_err(|e| {
        format!(
            "bad JSON in netstring: {e}: {}",
            String::from_utf8_lossy(&buffer[colon + 1..end])
        )
    })?;
    Ok(Frame::Complete(value, end + 1))
}

impl CtrlClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<CtrlClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        Ok(CtrlClient {
            stream,
            buffer: Vec::new(),
            events: VecDeque::new(),
            seen: Vec::new(),
            next_token: 1,
        })
    }

    /// The next message, or `None` at the deadline.
    fn read_message(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            match parse_netstring(&self.buffer) {
                Ok(Frame::Complete(value, used)) => {
                    self.buffer.drain(..used);
                    return Some(value);
                }
                Ok(Frame::Incomplete) => {}
                Err(e) => panic!("ctrl_tcp: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("ctrl_tcp: baresip closed the connection"),
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("ctrl_tcp read: {e}"),
            }
        }
    }

    fn note_event(&mut self, event: Value) {
        self.seen.push(event.to_string());
        self.events.push_back(event);
    }

    /// Sends a command and returns its response (`{"response":true,"ok":..,"data":..}`).
    pub fn command(&mut self, command: &str, params: &str, timeout: Duration) -> Value {
        let token = self.next_token.to_string();
        self.next_token += 1;
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.stream
            .write_all(frame.as_bytes())
            .expect("ctrl_tcp write");
        let deadline = Instant::now() + timeout;
        loop {
            let Some(message) = self.read_message(deadline) else {
                panic!("ctrl_tcp: no response to {body} within {timeout:?}");
            };
            if message.get("response").and_then(Value::as_bool) == Some(true) {
                if message.get("token").and_then(Value::as_str) == Some(token.as_str()) {
                    return message;
                }
            } else {
                self.note_event(message);
            }
        }
    }

    /// Waits for an event of `kind` (e.g. "CALL_ESTABLISHED"), consuming the
    /// queue up to it. Events of other kinds stay queued.
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Value {
        if let Some(i) = self.events.iter().position(|e| event_type(e) == Some(kind)) {
            return self.events.remove(i).expect("index in range");
        }
        let deadline = Instant::now() + timeout;
        loop {
            let Some(message) = self.read_message(deadline) else {
                panic!(
                    "ctrl_tcp: no {kind} event within {timeout:?}; events so far:\n{}",
                    self.seen.join("\n")
                );
            };
            if message.get("event").and_then(Value::as_bool) == Some(true) {
                self.seen.push(message.to_string());
                if event_type(&message) == Some(kind) {
                    return message;
                }
                self.events.push_back(message);
            }
        }
    }
}

fn event_type(event: &Value) -> Option<&str> {
    event.get("type").and_then(Value::as_str)
}

// ---------------------------------------------------------------------------
// The phone

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerMode {
    Manual,
    Auto,
}

/// Per-phone media settings ([`Baresip::start_with`]); the default is what
/// [`Baresip::start`] uses: PCMU only, a 440 Hz `ausine` tone, no dumps.
#[derive(Clone, Debug)]
pub struct PhoneOptions {
    /// The account's `audio_codecs` (e.g. `pcmu`, `opus/48000/2`); the opus
    /// module is loaded when it names opus.
    pub audio_codecs: String,
    /// The `ausine` test tone the phone sends, in Hz.
    pub tone_hz: u32,
    /// `snd_path`: loads the sndfile module, which writes each call's
    /// encoded and decoded audio there as WAV files.
    pub snd_path: Option<PathBuf>,
}

impl Default for PhoneOptions {
    fn default() -> PhoneOptions {
        PhoneOptions {
            audio_codecs: "pcmu".into(),
            tone_hz: 440,
            snd_path: None,
        }
    }
}

impl PhoneOptions {
    /// Config lines for the opus and sndfile modules when wanted.
    fn extra_config(&self) -> String {
        let mut lines = String::new();
        if self.audio_codecs.contains("opus") {
            lines.push_str("module\t\t\topus.so\n");
        }
        if let Some(path) = &self.snd_path {
            lines.push_str("module\t\t\tsndfile.so\n");
            lines.push_str(&format!("snd_path\t\t{}\n", path.display()));
        }
        lines
    }
}

/// How long a phone may take to start and register.
pub const PHONE_DEADLINE: Duration = Duration::from_secs(15);

pub struct Baresip {
    child: Option<Child>,
    pub ctrl: CtrlClient,
    pub user: User,
    pub sip_port: u16,
    /// The phone's RTP port range (`rtp_ports`), inclusive: where what it hears arrives.
    pub rtp_ports: (u16, u16),
    dir: PathBuf,
    log: PathBuf,
}

impl Baresip {
    /// Starts a phone for `user` that registers through `server` (digest auth
    /// with the user's password, outbound proxy = the server).
    pub fn start(server: &Server, user: &User, answer: AnswerMode) -> Baresip {
        Baresip::start_with(server, user, answer, &PhoneOptions::default())
    }

    /// [`Baresip::start`] with the codecs, test tone and audio dumps of `options`.
    pub fn start_with(
        server: &Server,
        user: &User,
        answer: AnswerMode,
        options: &PhoneOptions,
    ) -> Baresip {
        let dir = server.run_dir(&format!("baresip-{}", user.name));
        // sip_listen binds UDP+TCP on the port and TLS on the port + 1.
        let sip_port = free_port_block(2);
        let ctrl_port = free_port_block(1);
        // baresip (libre) makes the RTP port even by clearing its low bit, so a range that
        // starts odd can give the port below it: start the range on an even port inside a
        // claimed block of 11.
        let block = free_port_block(11);
        let rtp_first = block + block % 2;
        let config = format!(
            "# written by tests/common/baresip.rs\n\
             poll_method\t\tepoll\n\
             sip_listen\t\t{LOCALHOST}:{sip_port}\n\
             net_interface\t\t{LOCALHOST}\n\
             call_local_timeout\t120\n\
             call_max_calls\t\t4\n\
             audio_source\t\tausine,{tone_hz}\n\
             ausrc_srate\t\t48000\n\
             ausrc_channels\t\t2\n\
             audio_player\t\taubridge,{name}\n\
             audio_alert\t\taubridge,{name}\n\
             rtp_ports\t\t{rtp_first}-{rtp_last}\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tg711.so\n\
             {extra_modules}\
             module\t\t\tausine.so\n\
             module\t\t\taubridge.so\n\
             module_tmp\t\tuuid.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t{LOCALHOST}:{ctrl_port}\n",
            name = user.name,
            rtp_last = rtp_first + 9,
            tone_hz = options.tone_hz,
            extra_modules = options.extra_config(),
        );
        fs::write(dir.join("config"), config).expect("write baresip config");
        let answermode = match answer {
            AnswerMode::Auto => "auto",
            AnswerMode::Manual => "manual",
        };
        let account = format!(
            "<sip:{name}@{LOCALHOST}>;auth_pass={password};outbound=\"sip:{server}\";regint=60;answermode={answermode};audio_codecs={codecs}\n",
            codecs = options.audio_codecs,
            name = user.name,
            password = user.password,
            server = server.sip,
        );
        fs::write(dir.join("accounts"), account).expect("write baresip accounts");
        fs::write(dir.join("contacts"), "").expect("write baresip contacts");

        let log = dir.join("baresip.log");
        let out = File::create(&log).expect("create baresip log");
        let mut child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn baresip: {e}"));

        let ctrl_addr: SocketAddr = format!("{LOCALHOST}:{ctrl_port}").parse().unwrap();
        let ctrl = super::poll_until(PHONE_DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "baresip for {} exited at startup ({status}); log:\n{}",
                    user.name,
                    read_lossy(&log)
                );
            }
            CtrlClient::connect(ctrl_addr).ok()
        });
        let Some(ctrl) = ctrl else {
            let _ = child.kill();
            panic!(
                "baresip ctrl_tcp {ctrl_addr} not up within {PHONE_DEADLINE:?}; log:\n{}",
                read_lossy(&log)
            );
        };
        Baresip {
            child: Some(child),
            ctrl,
            user: user.clone(),
            sip_port,
            rtp_ports: (rtp_first, rtp_first + 9),
            dir,
            log,
        }
    }

    /// Waits until the account is registered. The first REGISTER may finish
    /// before ctrl_tcp accepts us (its REGISTER_OK event is then lost), so
    /// this polls `reginfo`, whose line for the account says OK once the
    /// registrar accepted it.
    pub fn wait_registered(&mut self) {
        let aor = format!("sip:{}@{LOCALHOST}", self.user.name);
        let mut last = String::new();
        let ctrl = &mut self.ctrl;
        let registered = super::poll_until(PHONE_DEADLINE, || {
            let response = ctrl.command("reginfo", "", Duration::from_secs(5));
            last = strip_ansi(response.get("data").and_then(Value::as_str).unwrap_or(""));
            last.lines()
                .any(|line| line.contains(&aor) && line.split_whitespace().any(|word| word == "OK"))
                .then_some(())
        });
        if registered.is_none() {
            panic!(
                "baresip {} not registered within {PHONE_DEADLINE:?}; reginfo:\n{last}\nlog:\n{}",
                self.user.name,
                read_lossy(&self.log)
            );
        }
    }

    pub fn dial(&mut self, uri: &str) {
        let response = self.ctrl.command("dial", uri, Duration::from_secs(5));
        assert_eq!(
            response.get("ok").and_then(Value::as_bool),
            Some(true),
            "dial {uri}: {response}"
        );
    }

    pub fn hangup(&mut self) {
        let response = self.ctrl.command("hangup", "", Duration::from_secs(5));
        assert_eq!(
            response.get("ok").and_then(Value::as_bool),
            Some(true),
            "hangup: {response}"
        );
    }

    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Value {
        self.ctrl.wait_event(kind, timeout)
    }

    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // baresip un-registers on SIGTERM and may wait for the answer;
            // it gets a short grace period, then SIGKILL.
            stop_child(&mut child, Duration::from_secs(3));
        }
        if std::thread::panicking() {
            eprintln!(
                "===== baresip {} log =====\n{}\n===== events =====\n{}\n===== end of baresip {} =====",
                self.user.name,
                read_lossy(&self.log),
                self.ctrl.seen.join("\n"),
                self.user.name
            );
        }
    }
}

/// Removes the terminal colour codes baresip puts in `reginfo`.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter)
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn netstrings_parse_whole_and_partial_frames() {
    let Ok(Frame::Complete(value, used)) = parse_netstring(b"14:{\"event\":true},5:") else {
        panic!("a complete frame");
    };
    assert_eq!(value, json!({"event": true}));
    assert_eq!(used, 18);
    assert!(matches!(
        parse_netstring(b"14:{\"ev"),
        Ok(Frame::Incomplete)
    ));
    assert!(matches!(parse_netstring(b"12"), Ok(Frame::Incomplete)));
    assert!(parse_netstring(b"x:").is_err());
    assert_eq!(strip_ansi("a \u{1b}[32mOK \u{1b}[;m b"), "a OK  b");
}
