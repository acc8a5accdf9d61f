//! Configuration: defaults, then the TOML file (`--config`), then `SWITCHBOARD_*`
//! environment variables, then command-line flags, each overriding the one before.
//! Validated once at start-up; an error names the file, line, column and field, and
//! start-up stops.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchboard_core::conference::RoomRange;
use toml::Spanned;

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub domain: String,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub sip_listen: SocketAddr,
    pub sip_advertise: Option<String>,
    pub ring_timeout: Duration,
    pub sha256: bool,
    pub http_listen: SocketAddr,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub max_contacts: usize,
    pub max_message_size: usize,
    pub tcp_partial_timeout: Duration,
    pub max_tcp_connections: usize,
    pub shutdown_grace: Duration,
    /// Anchor media (rewrite SDP, relay RTP through our ports); off = SDP passes through.
    pub media_anchor: bool,
    pub rtp_ports: (u16, u16),
    /// Address written in SDP c= lines; the SIP advertised address when unset.
    pub media_advertise: Option<String>,
    pub rtp_timeout: Duration,
    /// Record every answered call to DATA_DIR/recordings.
    pub record_calls: bool,
    /// Music-on-hold classes: one subdirectory of WAV files per class.
    pub moh_dir: Option<PathBuf>,
    /// Recorded prompts for IVR steps (`name.wav`, subdirectories allowed); without
    /// one, only the shipped placeholder tones play.
    pub prompts_dir: Option<PathBuf>,
    /// Threads relaying call media and mixing rooms; `None`: one per CPU core; 0: none,
    /// media runs on the SIP runtime's threads.
    pub media_threads: Option<usize>,
    /// Real-time (`SCHED_RR`) priority of the media threads, 1 to 99; `None`: normal
    /// scheduling.
    pub media_realtime_priority: Option<u8>,
    /// Park extension, slots, timeout; auto-answer default profile.
    pub features: switchboard_core::FeatureConfig,
    /// Provider accounts (`[[trunks]]`), gateways resolved at start.
    pub trunks: Vec<switchboard_core::TrunkConfig>,
    /// The dialplan that routes calls (`[dialplan] file`, `--dialplan`); without one, a
    /// dialled user name or extension is rung and nothing else is reachable.
    pub dialplan: Option<PathBuf>,
    /// Conference room numbers (`[conference] rooms`); empty: no rooms.
    pub conference_rooms: Vec<RoomRange>,
    /// Rooms where participants wait with music until a speaker joins.
    pub conference_moderated: Vec<RoomRange>,
    /// Users who are speakers in moderated rooms.
    pub conference_speakers: Vec<String>,
    /// Join and leave tones in rooms.
    pub conference_tones: bool,
    /// The conference factory (`[conference] factory`): dialled, it opens a free room
    /// (a phone's network-conference URI). `None`: no factory.
    pub conference_factory: Option<String>,
    /// The call-control API's admin token; the API is disabled without one.
    pub api_token: Option<Secret>,
}

/// A value never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Shortest admin token accepted: a guessable token would open call control to anyone
/// who reaches the HTTP port.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// An admin token: long enough, printable, no spaces (it travels in a header).
pub fn validate_api_token(t: &str) -> Result<(), String> {
    if t.len() < MIN_API_TOKEN_LEN {
        return Err(format!(
            "the admin token must be at least {MIN_API_TOKEN_LEN} characters long"
        ));
    }
    if !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err("the admin token may only contain printable ASCII without spaces".into());
    }
    Ok(())
}

impl Default for Config {
    fn default() -> Config {
        Config {
            domain: "switchboard.local".into(),
            data_dir: PathBuf::from("switchboard-data"),
            database_url: None,
            sip_listen: "0.0.0.0:5060".parse().expect("literal address"),
            sip_advertise: None,
            ring_timeout: Duration::from_secs(60),
            sha256: false,
            http_listen: "127.0.0.1:8080".parse().expect("literal address"),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
            max_message_size: 65_535,
            tcp_partial_timeout: Duration::from_secs(32),
            max_tcp_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            media_anchor: true,
            rtp_ports: (20_000, 30_000),
            media_advertise: None,
            rtp_timeout: Duration::from_secs(60),
            record_calls: false,
            moh_dir: None,
            prompts_dir: None,
            media_threads: None,
            media_realtime_priority: None,
            features: switchboard_core::FeatureConfig::default(),
            trunks: Vec::new(),
            dialplan: None,
            api_token: None,
            conference_rooms: Vec::new(),
            conference_moderated: Vec::new(),
            conference_speakers: Vec::new(),
            conference_tones: true,
            conference_factory: None,
        }
    }
}

impl Config {
    /// The database URL in effect: the explicit one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| switchboard_store::Store::sqlite_url_for_data_dir(&self.data_dir))
    }
}

/// A configuration error with where it was found.
#[derive(Debug)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.position) {
            (Some(file), Some((l, c))) => write!(f, "{}:{l}:{c}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            _ => {}
        }
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    domain: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
    database_url: Option<Spanned<String>>,
    #[serde(default)]
    sip: SipSection,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    registrar: RegistrarSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    media: MediaSection,
    #[serde(default)]
    features: FeaturesSection,
    #[serde(default)]
    api: ApiSection,
    #[serde(default)]
    trunks: Vec<Spanned<TrunkSection>>,
    #[serde(default)]
    conference: ConferenceSection,
    #[serde(default)]
    dialplan: DialplanSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DialplanSection {
    file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrunkSection {
    name: Spanned<String>,
    domain: Spanned<String>,
    gateways: Spanned<Vec<String>>,
    transport: Option<Spanned<String>>,
    username: Spanned<String>,
    auth_username: Option<String>,
    password: Option<String>,
    register: Option<bool>,
    expires: Option<Spanned<i64>>,
    caller_id: Option<String>,
    inbound: Option<bool>,
    inbound_match: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConferenceSection {
    rooms: Option<Spanned<String>>,
    moderated: Option<Spanned<String>>,
    speakers: Option<Vec<String>>,
    tones: Option<bool>,
    factory: Option<Spanned<String>>,
}

/// A comma-separated list of room numbers and ranges: `800-849, 900, 950-959`.
pub fn parse_room_ranges(s: &str) -> Result<Vec<RoomRange>, String> {
    s.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| part.trim().parse::<RoomRange>().map_err(|e| e.to_string()))
        .collect()
}

/// A conference factory name: what a phone puts in the user part of its conference
/// URI (`conf`, `8000`, `*3`).
pub fn validate_conference_factory(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 32
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "*#+-_.".contains(c))
    {
        return Err(format!(
            "{s:?} is not a factory number or name (1 to 32 letters, digits or * # + - _ .)"
        ));
    }
    Ok(())
}

/// Checks the conference settings against each other and media anchoring.
fn check_conference(cfg: &Config) -> Result<(), String> {
    if !cfg.conference_rooms.is_empty() && !cfg.media_anchor {
        return Err("conference rooms need media anchoring (media.anchor = true)".into());
    }
    if let Some(f) = &cfg.conference_factory {
        if cfg.conference_rooms.is_empty() {
            return Err("a conference factory needs conference rooms (conference.rooms)".into());
        }
        if cfg.conference_rooms.iter().any(|r| {
            f.parse::<u64>()
                .is_ok_and(|n| (r.first..=r.last).contains(&n) && !f.starts_with('0'))
        }) {
            return Err(format!("the conference factory {f} is also a room number"));
        }
        if f.eq_ignore_ascii_case(&cfg.features.park_extension) {
            return Err(format!("the conference factory {f} is the park extension"));
        }
    }
    let within = |n: u64| {
        cfg.conference_rooms
            .iter()
            .any(|r| (r.first..=r.last).contains(&n))
    };
    for m in &cfg.conference_moderated {
        if !within(m.first) || !within(m.last) {
            return Err(format!(
                "moderated rooms {}-{} are not all conference rooms",
                m.first, m.last
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesSection {
    park_extension: Option<Spanned<String>>,
    park_slots: Option<Spanned<String>>,
    park_timeout: Option<Spanned<i64>>,
    park_code: Option<Spanned<String>>,
    feature_digit_timeout_ms: Option<Spanned<i64>>,
    auto_answer: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    admin_token: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MediaSection {
    anchor: Option<bool>,
    rtp_ports: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    rtp_timeout: Option<Spanned<i64>>,
    record_calls: Option<bool>,
    moh_dir: Option<Spanned<String>>,
    prompts_dir: Option<Spanned<String>>,
    threads: Option<Spanned<i64>>,
    realtime_priority: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipSection {
    listen: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    ring_timeout: Option<Spanned<i64>>,
    sha256: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrarSection {
    min_expires: Option<Spanned<i64>>,
    max_expires: Option<Spanned<i64>>,
    default_expires: Option<Spanned<i64>>,
    max_contacts: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    max_message_size: Option<Spanned<i64>>,
    tcp_partial_timeout: Option<Spanned<i64>>,
    max_tcp_connections: Option<Spanned<i64>>,
    shutdown_grace: Option<Spanned<i64>>,
}

/// Values from flags and environment (clap merges those two); `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub domain: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub sip_listen: Option<SocketAddr>,
    pub sip_advertise: Option<String>,
    pub http_listen: Option<SocketAddr>,
    pub ring_timeout: Option<u64>,
    pub sha256: Option<bool>,
    pub rtp_ports: Option<String>,
    pub media_advertise: Option<String>,
    pub rtp_timeout: Option<u64>,
    pub media_anchor: Option<bool>,
    pub record_calls: Option<bool>,
    pub moh_dir: Option<PathBuf>,
    pub prompts_dir: Option<PathBuf>,
    pub media_threads: Option<u64>,
    pub media_realtime_priority: Option<u64>,
    pub park_slots: Option<String>,
    pub park_timeout: Option<u64>,
    pub dialplan: Option<PathBuf>,
    pub api_token: Option<String>,
    pub conference_rooms: Option<String>,
    pub conference_moderated: Option<String>,
    /// Comma-separated user names.
    pub conference_speakers: Option<String>,
    pub conference_factory: Option<String>,
}

/// Park slots `FIRST-LAST` (e.g. `701-720`): numbers, first ≤ last, at most 1000 slots.
pub fn parse_park_slots(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("{s:?} is not a slot range such as 701-720");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (Ok(first), Ok(last)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) else {
        return Err(bad());
    };
    if first > last || last - first >= 1000 {
        return Err(format!(
            "{s:?}: the first slot must not exceed the last, and at most 1000 slots"
        ));
    }
    Ok((first, last))
}

/// `FIRST-LAST`, e.g. `20000-30000`: at least one even/odd pair, ports above 1023 not
/// required (a root-run server may use any) but never 0.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range such as 20000-30000"))?;
    let (Ok(first), Ok(last)) = (a.trim().parse::<u16>(), b.trim().parse::<u16>()) else {
        return Err(format!("{s:?} is not a port range such as 20000-30000"));
    };
    switchboard_core::ports::PortPool::new(first, last).map_err(|e| e.to_string())?;
    Ok((first, last))
}

fn line_col(text: &str, span: Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: Some(self.file.to_path_buf()),
            position: Some(line_col(self.text, span)),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn addr(&self, v: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
        v.get_ref().parse().map_err(|_| {
            self.err(
                v.span(),
                field,
                format!(
                    "{:?} is not an address and port such as 0.0.0.0:5060",
                    v.get_ref()
                ),
            )
        })
    }

    fn ranged(
        &self,
        v: &Spanned<i64>,
        field: &str,
        min: i64,
        max: i64,
    ) -> Result<u64, ConfigError> {
        let n = *v.get_ref();
        if n < min || n > max {
            return Err(self.err(
                v.span(),
                field,
                format!("{n} is out of range ({min} to {max})"),
            ));
        }
        Ok(n as u64)
    }
}

/// Reads and validates the configuration.
pub fn load(file: Option<&Path>, over: &Overrides) -> Result<Config, ConfigError> {
    let mut cfg = Config::default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            position: None,
            field: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        apply_file(&mut cfg, path, &text)?;
    }
    if let Some(v) = &over.domain {
        cfg.domain = v.clone();
    }
    if let Some(v) = &over.data_dir {
        cfg.data_dir = v.clone();
    }
    if let Some(v) = &over.database_url {
        cfg.database_url = Some(v.clone());
    }
    if let Some(v) = over.sip_listen {
        cfg.sip_listen = v;
    }
    if let Some(v) = &over.sip_advertise {
        cfg.sip_advertise = Some(v.clone());
    }
    if let Some(v) = over.http_listen {
        cfg.http_listen = v;
    }
    if let Some(v) = over.ring_timeout {
        if v == 0 || v > 3600 {
            return Err(ConfigError {
                file: None,
                position: None,
                field: "--ring-timeout".into(),
                message: format!("{v} is out of range (1 to 3600 seconds)"),
            });
        }
        cfg.ring_timeout = Duration::from_secs(v);
    }
    if let Some(v) = over.sha256 {
        cfg.sha256 = v;
    }
    let flag_err = |field: &str, message: String| ConfigError {
        file: None,
        position: None,
        field: field.into(),
        message,
    };
    if let Some(v) = &over.rtp_ports {
        cfg.rtp_ports = parse_port_range(v).map_err(|m| flag_err("--rtp-ports", m))?;
    }
    if let Some(v) = &over.media_advertise {
        validate_domain(v).map_err(|m| flag_err("--media-advertise", m))?;
        cfg.media_advertise = Some(v.clone());
    }
    if let Some(v) = over.rtp_timeout {
        if v == 0 || v > 86_400 {
            return Err(flag_err(
                "--rtp-timeout",
                format!("{v} is out of range (1 to 86400 seconds)"),
            ));
        }
        cfg.rtp_timeout = Duration::from_secs(v);
    }
    if let Some(v) = over.media_anchor {
        cfg.media_anchor = v;
    }
    if let Some(v) = over.record_calls {
        cfg.record_calls = v;
    }
    if let Some(v) = &over.dialplan {
        if !v.is_file() {
            return Err(flag_err(
                "--dialplan",
                format!("{} is not a file", v.display()),
            ));
        }
        cfg.dialplan = Some(v.clone());
    }
    if let Some(v) = &over.park_slots {
        cfg.features.park_slots = parse_park_slots(v).map_err(|m| flag_err("--park-slots", m))?;
    }
    if let Some(v) = over.park_timeout {
        if v == 0 || v > 86_400 {
            return Err(flag_err(
                "--park-timeout",
                format!("{v} is out of range (1 to 86400 seconds)"),
            ));
        }
        cfg.features.park_timeout = Duration::from_secs(v);
    }
    if let Some(v) = &over.moh_dir {
        if !v.is_dir() {
            return Err(flag_err(
                "--moh-dir",
                format!("{} is not a directory", v.display()),
            ));
        }
        cfg.moh_dir = Some(v.clone());
    }
    if let Some(v) = &over.prompts_dir {
        if !v.is_dir() {
            return Err(flag_err(
                "--prompts-dir",
                format!("{} is not a directory", v.display()),
            ));
        }
        cfg.prompts_dir = Some(v.clone());
    }
    if let Some(v) = over.media_threads {
        if v > 256 {
            return Err(flag_err(
                "--media-threads",
                format!("{v} is out of range (0 to 256)"),
            ));
        }
        cfg.media_threads = Some(v as usize);
    }
    if let Some(v) = over.media_realtime_priority {
        if v > 99 {
            return Err(flag_err(
                "--media-realtime-priority",
                format!("{v} is out of range (0 to 99)"),
            ));
        }
        cfg.media_realtime_priority = (v > 0).then_some(v as u8);
    }
    if let Some(v) = &over.api_token {
        validate_api_token(v).map_err(|m| flag_err("--api-token", m))?;
        cfg.api_token = Some(Secret(v.clone()));
    }
    if let Some(v) = &over.conference_rooms {
        cfg.conference_rooms =
            parse_room_ranges(v).map_err(|m| flag_err("--conference-rooms", m))?;
    }
    if let Some(v) = &over.conference_moderated {
        cfg.conference_moderated =
            parse_room_ranges(v).map_err(|m| flag_err("--conference-moderated", m))?;
    }
    if let Some(v) = &over.conference_factory {
        validate_conference_factory(v).map_err(|m| flag_err("--conference-factory", m))?;
        cfg.conference_factory = Some(v.clone());
    }
    if let Some(v) = &over.conference_speakers {
        cfg.conference_speakers = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    check_conference(&cfg).map_err(|m| flag_err("conference", m))?;
    validate_domain(&cfg.domain).map_err(|m| ConfigError {
        file: None,
        position: None,
        field: "domain".into(),
        message: m,
    })?;
    Ok(cfg)
}

/// The domain is the digest realm and the host of the URIs we write: a host name or an
/// IP address, nothing that needs quoting.
fn validate_domain(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("must not be empty".into());
    }
    if !d
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
    {
        return Err(format!("{d:?} is not a host name or IP address"));
    }
    Ok(())
}

fn apply_file(cfg: &mut Config, path: &Path, text: &str) -> Result<(), ConfigError> {
    let parsed: FileConfig = toml::from_str(text).map_err(|e| {
        let position = e.span().map(|s| line_col(text, s));
        ConfigError {
            file: Some(path.to_path_buf()),
            position,
            field: String::new(),
            message: e.message().trim().to_string(),
        }
    })?;
    let ctx = Ctx { file: path, text };
    if let Some(v) = &parsed.domain {
        validate_domain(v.get_ref()).map_err(|m| ctx.err(v.span(), "domain", m))?;
        cfg.domain = v.get_ref().clone();
    }
    if let Some(v) = &parsed.data_dir {
        cfg.data_dir = PathBuf::from(v.get_ref());
    }
    if let Some(v) = &parsed.database_url {
        let u = v.get_ref();
        if !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            return Err(ctx.err(
                v.span(),
                "database_url",
                "must start with sqlite: or postgres://",
            ));
        }
        cfg.database_url = Some(u.clone());
    }
    if let Some(v) = &parsed.sip.listen {
        cfg.sip_listen = ctx.addr(v, "sip.listen")?;
    }
    if let Some(v) = &parsed.sip.advertise {
        validate_domain(v.get_ref()).map_err(|m| ctx.err(v.span(), "sip.advertise", m))?;
        cfg.sip_advertise = Some(v.get_ref().clone());
    }
    if let Some(v) = &parsed.sip.ring_timeout {
        cfg.ring_timeout = Duration::from_secs(ctx.ranged(v, "sip.ring_timeout", 1, 3600)?);
    }
    if let Some(v) = parsed.sip.sha256 {
        cfg.sha256 = v;
    }
    if let Some(v) = &parsed.http.listen {
        cfg.http_listen = ctx.addr(v, "http.listen")?;
    }
    let r = &parsed.registrar;
    if let Some(v) = &r.min_expires {
        cfg.min_expires = ctx.ranged(v, "registrar.min_expires", 1, 86_400)? as u32;
    }
    if let Some(v) = &r.max_expires {
        cfg.max_expires = ctx.ranged(v, "registrar.max_expires", 1, 604_800)? as u32;
    }
    if let Some(v) = &r.default_expires {
        cfg.default_expires = ctx.ranged(v, "registrar.default_expires", 1, 604_800)? as u32;
    }
    if let Some(v) = &r.max_contacts {
        cfg.max_contacts = ctx.ranged(v, "registrar.max_contacts", 1, 1000)? as usize;
    }
    if cfg.min_expires > cfg.max_expires {
        let span = r
            .min_expires
            .as_ref()
            .or(r.max_expires.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(ctx.err(
            span,
            "registrar.min_expires",
            "must not exceed registrar.max_expires",
        ));
    }
    let l = &parsed.limits;
    if let Some(v) = &l.max_message_size {
        cfg.max_message_size = ctx.ranged(v, "limits.max_message_size", 1500, 1 << 20)? as usize;
    }
    if let Some(v) = &l.tcp_partial_timeout {
        cfg.tcp_partial_timeout =
            Duration::from_secs(ctx.ranged(v, "limits.tcp_partial_timeout", 1, 3600)?);
    }
    if let Some(v) = &l.max_tcp_connections {
        cfg.max_tcp_connections =
            ctx.ranged(v, "limits.max_tcp_connections", 1, 1_000_000)? as usize;
    }
    if let Some(v) = &l.shutdown_grace {
        cfg.shutdown_grace =
            Duration::from_secs(ctx.ranged(v, "limits.shutdown_grace", 0, 3600)?);
    }
    let m = &parsed.media;
    if let Some(v) = m.anchor {
        cfg.media_anchor = v;
    }
    if let Some(v) = m.record_calls {
        cfg.record_calls = v;
    }
    if let Some(v) = &m.moh_dir {
        let dir = PathBuf::from(v.get_ref());
        if !dir.is_dir() {
            return Err(ctx.err(
                v.span(),
                "media.moh_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        cfg.moh_dir = Some(dir);
    }
    if let Some(v) = &m.prompts_dir {
        let dir = PathBuf::from(v.get_ref());
        if !dir.is_dir() {
            return Err(ctx.err(
                v.span(),
                "media.prompts_dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        cfg.prompts_dir = Some(dir);
    }
    if let Some(v) = &m.threads {
        cfg.media_threads = Some(ctx.ranged(v, "media.threads", 0, 256)? as usize);
    }
    if let Some(v) = &m.realtime_priority {
        let p = ctx.ranged(v, "media.realtime_priority", 0, 99)?;
        cfg.media_realtime_priority = (p > 0).then_some(p as u8);
    }
    if let Some(v) = &m.rtp_ports {
        cfg.rtp_ports =
            parse_port_range(v.get_ref()).map_err(|e| ctx.err(v.span(), "media.rtp_ports", e))?;
    }
    if let Some(v) = &m.advertise {
        validate_domain(v.get_ref()).map_err(|e| ctx.err(v.span(), "media.advertise", e))?;
        cfg.media_advertise = Some(v.get_ref().clone());
    }
    if let Some(v) = &m.rtp_timeout {
        cfg.rtp_timeout = Duration::from_secs(ctx.ranged(v, "media.rtp_timeout", 1, 86_400)?);
    }
    let f = &parsed.features;
    if let Some(v) = &f.park_extension {
        let ext = v.get_ref();
        if ext.is_empty()
            || !ext
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "*#+".contains(c))
        {
            return Err(ctx.err(
                v.span(),
                "features.park_extension",
                "must be digits (or * # +)",
            ));
        }
        cfg.features.park_extension = ext.clone();
    }
    if let Some(v) = &f.park_slots {
        cfg.features.park_slots = parse_park_slots(v.get_ref())
            .map_err(|e| ctx.err(v.span(), "features.park_slots", e))?;
    }
    if let Some(v) = &f.park_timeout {
        cfg.features.park_timeout =
            Duration::from_secs(ctx.ranged(v, "features.park_timeout", 1, 86_400)?);
    }
    if let Some(v) = &f.park_code {
        if !switchboard_core::feature_code::valid_feature_code(v.get_ref()) {
            return Err(ctx.err(
                v.span(),
                "features.park_code",
                "must be up to 8 keypad keys (0-9 * # A-D), or empty to disable it",
            ));
        }
        cfg.features.park_code = v.get_ref().clone();
    }
    if let Some(v) = &f.feature_digit_timeout_ms {
        cfg.features.feature_digit_timeout = Duration::from_millis(ctx.ranged(
            v,
            "features.feature_digit_timeout_ms",
            100,
            10_000,
        )?);
    }
    if let Some(v) = &f.auto_answer {
        cfg.features.auto_answer = switchboard_core::AutoAnswerProfile::parse(v.get_ref())
            .ok_or_else(|| {
                ctx.err(
                    v.span(),
                    "features.auto_answer",
                    "must be standard, polycom or intercom",
                )
            })?;
    }
    if let Some(v) = &parsed.dialplan.file {
        let file = PathBuf::from(v.get_ref());
        // Relative to the configuration file, like every path an admin writes there.
        let file = if file.is_relative() {
            path.parent().map_or(file.clone(), |d| d.join(&file))
        } else {
            file
        };
        if !file.is_file() {
            return Err(ctx.err(
                v.span(),
                "dialplan.file",
                format!("{} is not a file", file.display()),
            ));
        }
        cfg.dialplan = Some(file);
    }
    for t in &parsed.trunks {
        let span = t.span();
        let t = t.get_ref();
        let name = t.name.get_ref().trim().to_string();
        if name.is_empty() || cfg.trunks.iter().any(|o| o.name == name) {
            return Err(ctx.err(t.name.span(), "trunks.name", "must be set and unique"));
        }
        validate_domain(t.domain.get_ref())
            .map_err(|m| ctx.err(t.domain.span(), "trunks.domain", m))?;
        if t.gateways.get_ref().is_empty() {
            return Err(ctx.err(
                t.gateways.span(),
                "trunks.gateways",
                "needs at least one host[:port]",
            ));
        }
        let mut gateways = Vec::new();
        for g in t.gateways.get_ref() {
            let with_port = if g
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                && !g.ends_with(']')
            {
                g.clone()
            } else {
                format!("{g}:5060")
            };
            use std::net::ToSocketAddrs;
            let addr = with_port
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    ctx.err(
                        t.gateways.span(),
                        "trunks.gateways",
                        format!("{g:?} does not resolve to an address"),
                    )
                })?;
            gateways.push(addr);
        }
        let transport = match t
            .transport
            .as_ref()
            .map(|v| v.get_ref().to_ascii_lowercase())
        {
            None => switchboard_sip::transaction::Transport::Udp,
            Some(v) if v == "udp" => switchboard_sip::transaction::Transport::Udp,
            Some(v) if v == "tcp" => switchboard_sip::transaction::Transport::Tcp,
            Some(_) => {
                let span = t.transport.as_ref().map_or(span.clone(), Spanned::span);
                return Err(ctx.err(span, "trunks.transport", "must be udp or tcp"));
            }
        };
        let expires = match &t.expires {
            Some(v) => ctx.ranged(v, "trunks.expires", 60, 86_400)? as u32,
            None => 3600,
        };
        let match_ip_only = match t.inbound_match.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("address") => false,
            Some("ip") => true,
            Some(_) => {
                let span = t.inbound_match.as_ref().map_or(span.clone(), Spanned::span);
                return Err(ctx.err(span, "trunks.inbound_match", "must be address or ip"));
            }
        };
        let register = t.register.unwrap_or(true);
        if register && t.password.is_none() {
            return Err(ctx.err(
                span,
                "trunks.password",
                "a registering trunk needs a password",
            ));
        }
        cfg.trunks.push(switchboard_core::TrunkConfig {
            name,
            domain: t.domain.get_ref().clone(),
            gateways,
            transport,
            username: t.username.get_ref().clone(),
            auth_username: t.auth_username.clone(),
            password: t.password.clone(),
            register,
            expires,
            caller_id: t.caller_id.clone(),
            inbound: t.inbound.unwrap_or(true),
            match_ip_only,
        });
    }
    let (first, last) = cfg.features.park_slots;
    if let Ok(n) = cfg.features.park_extension.parse::<u32>() {
        if (first..=last).contains(&n) {
            let span = f.park_extension.as_ref().map_or(0..0, Spanned::span);
            return Err(ctx.err(
                span,
                "features.park_extension",
                "must not be one of the park slots",
            ));
        }
    }
    if let Some(v) = &parsed.api.admin_token {
        validate_api_token(v.get_ref()).map_err(|e| ctx.err(v.span(), "api.admin_token", e))?;
        cfg.api_token = Some(Secret(v.get_ref().clone()));
    }
    let k = &parsed.conference;
    if let Some(v) = &k.rooms {
        cfg.conference_rooms =
            parse_room_ranges(v.get_ref()).map_err(|e| ctx.err(v.span(), "conference.rooms", e))?;
    }
    if let Some(v) = &k.moderated {
        cfg.conference_moderated = parse_room_ranges(v.get_ref())
            .map_err(|e| ctx.err(v.span(), "conference.moderated", e))?;
    }
    if let Some(v) = &k.speakers {
        cfg.conference_speakers = v.clone();
    }
    if let Some(v) = k.tones {
        cfg.conference_tones = v;
    }
    if let Some(v) = &k.factory {
        validate_conference_factory(v.get_ref())
            .map_err(|e| ctx.err(v.span(), "conference.factory", e))?;
        cfg.conference_factory = Some(v.get_ref().clone());
    }
    if let Err(e) = check_conference(cfg) {
        let span = k
            .factory
            .as_ref()
            .or(k.moderated.as_ref())
            .or(k.rooms.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(ctx.err(span, "conference", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        apply_file(&mut cfg, Path::new("sb.toml"), text).map(|()| cfg)
    }

    #[test]
    fn conference_section_and_its_errors() {
        let cfg = load_text(
            "[conference]\nrooms = \"800-849, 900\"\nmoderated = \"840-849\"\nspeakers = [\"alice\"]\ntones = false\n",
        )
        .unwrap();
        assert_eq!(cfg.conference_rooms.len(), 2);
        assert_eq!(cfg.conference_moderated[0].first, 840);
        assert_eq!(cfg.conference_speakers, vec!["alice".to_string()]);
        assert!(!cfg.conference_tones);
        let e = load_text("[conference]\nrooms = \"800-7\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("sb.toml:2:9: conference.rooms: "),
            "{e}"
        );
        let e = load_text("[conference]\nrooms = \"800-849\"\nmoderated = \"850\"\n").unwrap_err();
        assert!(e.to_string().contains("not all conference rooms"), "{e}");
        let e = load_text("[media]\nanchor = false\n[conference]\nrooms = \"800\"\n").unwrap_err();
        assert!(e.to_string().contains("media anchoring"), "{e}");
    }

    #[test]
    fn park_code_and_its_digit_timeout() {
        let cfg = load_text("").unwrap();
        assert_eq!(cfg.features.park_code, "#72");
        assert_eq!(cfg.features.feature_digit_timeout, Duration::from_secs(1));
        let cfg = load_text("[features]\npark_code = \"*88\"\nfeature_digit_timeout_ms = 2500\n")
            .unwrap();
        assert_eq!(cfg.features.park_code, "*88");
        assert_eq!(
            cfg.features.feature_digit_timeout,
            Duration::from_millis(2500)
        );
        let cfg = load_text("[features]\npark_code = \"\"\n").unwrap();
        assert_eq!(cfg.features.park_code, "", "empty disables it");
        let e = load_text("[features]\npark_code = \"park\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sb.toml:2:13: features.park_code: "),
            "{e}"
        );
        let e = load_text("[features]\nfeature_digit_timeout_ms = 0\n").unwrap_err();
        assert!(e.to_string().contains("out of range (100 to 10000)"), "{e}");
    }

    #[test]
    fn conference_factory_and_its_errors() {
        let cfg = load_text("[conference]\nrooms = \"800-849\"\nfactory = \"conf\"\n").unwrap();
        assert_eq!(cfg.conference_factory.as_deref(), Some("conf"));
        let e = load_text("[conference]\nrooms = \"800-849\"\nfactory = \"810\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("sb.toml:3:11: conference: ")
                && e.to_string().contains("also a room number"),
            "{e}"
        );
        let e = load_text("[conference]\nfactory = \"conf\"\n").unwrap_err();
        assert!(e.to_string().contains("needs conference rooms"), "{e}");
        let e = load_text("[conference]\nrooms = \"800\"\nfactory = \"a b\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sb.toml:3:11: conference.factory: "),
            "{e}"
        );
        let e = load_text("[conference]\nrooms = \"800\"\nfactory = \"700\"\n").unwrap_err();
        assert!(e.to_string().contains("park extension"), "{e}");
        // A flag sets it too.
        let over = Overrides {
            conference_rooms: Some("800-809".into()),
            conference_factory: Some("conf".into()),
            ..Overrides::default()
        };
        assert_eq!(
            load(None, &over).unwrap().conference_factory.as_deref(),
            Some("conf")
        );
    }

    #[test]
    fn reads_every_section() {
        let cfg = load_text(
            "domain = \"pbx.example.com\"\n[sip]\nlisten = \"127.0.0.1:5070\"\nring_timeout = 20\n\
             [http]\nlisten = \"127.0.0.1:9000\"\n[registrar]\nmin_expires = 30\n",
        )
        .unwrap();
        assert_eq!(cfg.domain, "pbx.example.com");
        assert_eq!(cfg.sip_listen.port(), 5070);
        assert_eq!(cfg.ring_timeout, Duration::from_secs(20));
        assert_eq!(cfg.http_listen.port(), 9000);
        assert_eq!(cfg.min_expires, 30);
    }

    #[test]
    fn bad_value_names_file_line_column_and_field() {
        let e = load_text("domain = \"a.b\"\n\n[sip]\nlisten = \"nonsense\"\n").unwrap_err();
        assert_eq!(e.to_string(), "sb.toml:4:10: sip.listen: \"nonsense\" is not an address and port such as 0.0.0.0:5060");
        let e = load_text("[sip]\nring_timeout = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sb.toml:2:16: sip.ring_timeout: 0 is out of range (1 to 3600)"
        );
    }

    #[test]
    fn unknown_field_and_syntax_errors_have_positions() {
        let e = load_text("[sip]\nlisen = \"1.2.3.4:5\"\n").unwrap_err();
        assert_eq!(e.position, Some((2, 1)));
        assert!(e.to_string().contains("unknown field `lisen`"), "{e}");
        let e = load_text("domain = \n").unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(1));
    }

    #[test]
    fn media_section_and_port_ranges() {
        let cfg = load_text("[media]\nrtp_ports = \"40000-40100\"\nadvertise = \"203.0.113.5\"\n")
            .unwrap();
        assert_eq!(cfg.rtp_ports, (40000, 40100));
        assert_eq!(cfg.media_advertise.as_deref(), Some("203.0.113.5"));
        let e = load_text("[media]\nrtp_ports = \"30000-20000\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("sb.toml:2:13: media.rtp_ports: "),
            "{e}"
        );
        let cfg = load_text("[media]\nthreads = 3\n").unwrap();
        assert_eq!(cfg.media_threads, Some(3));
        assert_eq!(load_text("").unwrap().media_threads, None);
        let cfg = load_text("[media]\nrealtime_priority = 10\n").unwrap();
        assert_eq!(cfg.media_realtime_priority, Some(10));
        let cfg = load_text("[media]\nrealtime_priority = 0\n").unwrap();
        assert_eq!(cfg.media_realtime_priority, None);
        let e = load_text("[media]\nrealtime_priority = 100\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sb.toml:2:21: media.realtime_priority: 100 is out of range (0 to 99)"
        );
        let e = load_text("[media]\nthreads = 999\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "sb.toml:2:11: media.threads: 999 is out of range (0 to 256)"
        );
        assert!(parse_port_range("abc").is_err());
        assert!(parse_port_range("5000-5000").is_err());
        assert_eq!(parse_port_range("10000-10001"), Ok((10000, 10001)));
    }

    #[test]
    fn api_token_from_file_and_flag_is_validated_and_never_printed() {
        let cfg = load_text("[api]\nadmin_token = \"0123456789abcdef-xyz\"\n").unwrap();
        assert_eq!(cfg.api_token, Some(Secret("0123456789abcdef-xyz".into())));
        assert!(!format!("{cfg:?}").contains("0123456789abcdef"));
        let e = load_text("[api]\nadmin_token = \"short\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("sb.toml:2:15: api.admin_token: "),
            "{e}"
        );
        let over = Overrides {
            api_token: Some("has a space in it!!".into()),
            ..Overrides::default()
        };
        assert!(load(None, &over)
            .unwrap_err()
            .to_string()
            .contains("--api-token"));
        assert_eq!(load(None, &Overrides::default()).unwrap().api_token, None);
    }

    #[test]
    fn min_above_max_expires_is_refused() {
        let e = load_text("[registrar]\nmin_expires = 600\nmax_expires = 300\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sb.toml:2:15: registrar.min_expires"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_file_and_are_validated() {
        let over = Overrides {
            ring_timeout: Some(0),
            ..Overrides::default()
        };
        assert!(load(None, &over)
            .unwrap_err()
            .to_string()
            .contains("--ring-timeout"));
        let over = Overrides {
            domain: Some("bad domain".into()),
            ..Overrides::default()
        };
        assert!(load(None, &over).is_err());
    }
}
