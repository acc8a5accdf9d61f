//! What a routing tells the call engine to do: actions with every variable already
//! substituted. The engine runs them in order; `Dial`, `DialTrunk`, `Menu`, `Conference` and
//! `Retrieve` end the list's execution when the call is connected, and the engine moves on to
//! the next action when a dial fails (no answer, busy, unreachable).
//!
//! Actions that later issues or plugins add (queues, for one) come in as
//! [`Action::Extension`], validated at load time against an [`ExtensionRegistry`].

use std::collections::BTreeMap;
use std::fmt;

use crate::pattern::NumberMatcher;

/// How a list of users is rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// All at once; the first to answer takes the call.
    Simultaneous,
    /// One after the other, each for its own timeout.
    Sequential,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Simultaneous => "simultaneous",
            Strategy::Sequential => "sequential",
        })
    }
}

/// One user to ring (every registered device of theirs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialTarget {
    /// A user name or extension.
    pub user: String,
    /// Seconds to ring this user (sequential: this step; simultaneous: this user's branch).
    pub timeout: Option<u32>,
}

/// Ring one or more users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    pub targets: Vec<DialTarget>,
    pub strategy: Strategy,
    /// Seconds for the whole attempt (simultaneous) or the default step (sequential);
    /// `None`: the server's ring timeout.
    pub timeout: Option<u32>,
    /// Ask the phones to answer by themselves (intercom, paging).
    pub auto_answer: bool,
}

/// Call out through a trunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkDial {
    pub trunk: String,
    /// The number to send, after rewriting.
    pub number: String,
    /// Caller-ID number to present; `None` keeps the caller's.
    pub caller_id: Option<String>,
    /// Caller-ID display name to present.
    pub caller_name: Option<String>,
    pub timeout: Option<u32>,
}

/// Where a goto, call or menu choice leads: a route by context and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub context: String,
    pub route: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.context, self.route)
    }
}

/// One branch of a menu: digits that select it and where it leads.
#[derive(Clone, Debug, PartialEq)]
pub struct MenuChoice {
    pub digits: NumberMatcher,
    pub target: Target,
}

/// Play a prompt and collect digits; the engine picks a branch with [`Menu::choose`] and
/// continues with [`crate::Dialplan::enter`] on its target, passing the digits as `DIGITS`.
#[derive(Clone, Debug, PartialEq)]
pub struct Menu {
    pub name: String,
    pub prompt: String,
    /// Played after a timeout or digits no choice takes, before the prompt is repeated.
    pub invalid_prompt: Option<String>,
    /// Seconds to wait for the first digit.
    pub timeout: u32,
    /// Seconds to wait for each further digit.
    pub digit_timeout: u32,
    /// Collecting stops at this many digits (or at `#`).
    pub max_digits: u32,
    /// Times the prompt is played again after a timeout or an invalid choice.
    pub retries: u32,
    pub choices: Vec<MenuChoice>,
    /// Where the call goes when the retries are used up; `None`: hang up.
    pub on_failure: Option<Target>,
}

impl Menu {
    /// The first choice (in file order) whose digits match.
    pub fn choose(&self, digits: &str) -> Option<&Target> {
        self.choices
            .iter()
            .find(|c| c.digits.matches(digits))
            .map(|c| &c.target)
    }
}

/// Why a call is hung up, with the Q.850 cause and the SIP status for an unanswered call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HangupCause {
    Normal,
    Busy,
    NoAnswer,
    Rejected,
    NotFound,
    Congestion,
    Unavailable,
}

impl HangupCause {
    pub const ALL: [HangupCause; 7] = [
        HangupCause::Normal,
        HangupCause::Busy,
        HangupCause::NoAnswer,
        HangupCause::Rejected,
        HangupCause::NotFound,
        HangupCause::Congestion,
        HangupCause::Unavailable,
    ];

    /// The name used in plan files.
    pub fn name(self) -> &'static str {
        match self {
            HangupCause::Normal => "normal",
            HangupCause::Busy => "busy",
            HangupCause::NoAnswer => "no_answer",
            HangupCause::Rejected => "rejected",
            HangupCause::NotFound => "not_found",
            HangupCause::Congestion => "congestion",
            HangupCause::Unavailable => "unavailable",
        }
    }

    pub fn from_name(name: &str) -> Option<HangupCause> {
        HangupCause::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Q.850 cause value.
    pub fn q850(self) -> u8 {
        match self {
            HangupCause::Normal => 16,
            HangupCause::Busy => 17,
            HangupCause::NoAnswer => 19,
            HangupCause::Rejected => 21,
            HangupCause::NotFound => 1,
            HangupCause::Congestion => 34,
            HangupCause::Unavailable => 20,
        }
    }

    /// The final response for a call not yet answered (RFC 3398 §8.2 where it gives one;
    /// it gives none for cause 16, where we answer 480 as for "no answer").
    pub fn sip_status(self) -> u16 {
        match self {
            HangupCause::Normal | HangupCause::NoAnswer | HangupCause::Unavailable => 480,
            HangupCause::Busy => 486,
            HangupCause::Rejected => 603,
            HangupCause::NotFound => 404,
            HangupCause::Congestion => 503,
        }
    }
}

/// A value given to an extension action, variables substituted.
#[derive(Clone, Debug, PartialEq)]
pub enum ExtensionValue {
    String(String),
    Integer(i64),
    Boolean(bool),
    List(Vec<ExtensionValue>),
}

impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Integer(i) => write!(f, "{i}"),
            ExtensionValue::Boolean(b) => write!(f, "{b}"),
            ExtensionValue::List(l) => {
                let items: Vec<String> = l.iter().map(|v| v.to_string()).collect();
                write!(f, "[{}]", items.join(","))
            }
        }
    }
}

/// An action the plan may use beyond the built-in ones, declared by whoever executes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionAction {
    /// The key that starts the action in a plan (`queue` for `{ queue = "support" }`).
    pub name: String,
    /// The other keys it takes.
    pub options: Vec<String>,
    /// Options that must be given.
    pub required: Vec<String>,
}

/// The extension actions known when a plan is loaded. Built-in names cannot be taken.
#[derive(Clone, Debug, Default)]
pub struct ExtensionRegistry {
    actions: BTreeMap<String, ExtensionAction>,
}

/// Registering an extension action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("\"{0}\" is a built-in action")]
    BuiltIn(String),
    #[error("the extension action \"{0}\" is already registered")]
    Duplicate(String),
}

impl ExtensionRegistry {
    pub fn new() -> ExtensionRegistry {
        ExtensionRegistry::default()
    }

    pub fn register(&mut self, action: ExtensionAction) -> Result<(), RegistryError> {
        if crate::parse::BUILTIN_ACTIONS.contains(&action.name.as_str()) {
            return Err(RegistryError::BuiltIn(action.name));
        }
        if self.actions.contains_key(&action.name) {
            return Err(RegistryError::Duplicate(action.name));
        }
        self.actions.insert(action.name.clone(), action);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&ExtensionAction> {
        self.actions.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }
}

/// One step for the call engine.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Answer the call (200 OK) before playing media.
    Answer,
    /// Play prompts in order (sound names the media layer resolves).
    Playback {
        prompts: Vec<String>,
    },
    /// Read a number out one key at a time (the prompts `digits/0`…`digits/9`,
    /// `digits/star`, `digits/pound`; other characters are skipped), like a playback.
    SayDigits {
        digits: String,
    },
    Dial(Dial),
    DialTrunk(TrunkDial),
    Menu(Menu),
    /// Park the call in `slot`, or in the first free slot.
    Park {
        slot: Option<String>,
    },
    /// Connect the caller to the call parked in `slot`.
    Retrieve {
        slot: String,
    },
    Conference {
        room: String,
    },
    Record {
        on: bool,
    },
    /// A call variable (kept on the call, e.g. for the call log).
    Set {
        name: String,
        value: String,
    },
    /// A SIP header added to the outgoing INVITEs of later dials.
    SetHeader {
        name: String,
        value: String,
    },
    /// Pause (seconds), e.g. after answering.
    Wait {
        seconds: u32,
    },
    Hangup {
        cause: HangupCause,
    },
    /// An action registered in the [`ExtensionRegistry`], for its executor.
    Extension {
        name: String,
        value: Option<ExtensionValue>,
        options: Vec<(String, ExtensionValue)>,
    },
}

fn opt_secs(f: &mut fmt::Formatter<'_>, name: &str, v: Option<u32>) -> fmt::Result {
    match v {
        Some(s) => write!(f, " {name}={s}s"),
        None => Ok(()),
    }
}

/// The one-line form the trace prints and `expect_actions` in test files compare.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Answer => f.write_str("answer"),
            Action::Playback { prompts } => write!(f, "playback {}", prompts.join(", ")),
            Action::Dial(d) => {
                let users: Vec<String> = d
                    .targets
                    .iter()
                    .map(|t| match t.timeout {
                        Some(s) => format!("{}({s}s)", t.user),
                        None => t.user.clone(),
                    })
                    .collect();
                write!(f, "dial {}", users.join(", "))?;
                if d.targets.len() > 1 {
                    write!(f, " {}", d.strategy)?;
                }
                opt_secs(f, "timeout", d.timeout)?;
                if d.auto_answer {
                    f.write_str(" auto_answer")?;
                }
                Ok(())
            }
            Action::DialTrunk(t) => {
                write!(f, "dial_trunk {} number={}", t.trunk, t.number)?;
                if let Some(c) = &t.caller_id {
                    write!(f, " caller_id={c}")?;
                }
                if let Some(c) = &t.caller_name {
                    write!(f, " caller_name={c:?}")?;
                }
                opt_secs(f, "timeout", t.timeout)
            }
            Action::Menu(m) => {
                write!(
                    f,
                    "menu {} prompt={} timeout={}s retries={}",
                    m.name, m.prompt, m.timeout, m.retries
                )?;
                for c in &m.choices {
                    write!(f, " [{} -> {}]", c.digits, c.target)?;
                }
                if let Some(t) = &m.on_failure {
                    write!(f, " [failure -> {t}]")?;
                }
                Ok(())
            }
            Action::Park { slot: Some(s) } => write!(f, "park {s}"),
            Action::Park { slot: None } => f.write_str("park (first free slot)"),
            Action::Retrieve { slot } => write!(f, "retrieve {slot}"),
            Action::SayDigits { digits } => write!(f, "say_digits {digits}"),
            Action::Conference { room } => write!(f, "conference {room}"),
            Action::Record { on } => write!(f, "record {}", if *on { "on" } else { "off" }),
            Action::Set { name, value } => write!(f, "set {name}={value}"),
            Action::SetHeader { name, value } => write!(f, "set_header {name}: {value}"),
            Action::Wait { seconds } => write!(f, "wait {seconds}s"),
            Action::Hangup { cause } => write!(
                f,
                "hangup {} (Q.850 {}, SIP {})",
                cause.name(),
                cause.q850(),
                cause.sip_status()
            ),
            Action::Extension {
                name,
                value,
                options,
            } => {
                f.write_str(name)?;
                if let Some(v) = value {
                    write!(f, " {v}")?;
                }
                for (k, v) in options {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hangup_causes_round_trip_and_map() {
        for c in HangupCause::ALL {
            assert_eq!(HangupCause::from_name(c.name()), Some(c));
        }
        assert_eq!(HangupCause::Busy.sip_status(), 486);
        assert_eq!(HangupCause::NotFound.q850(), 1);
    }

    #[test]
    fn registry_refuses_built_in_and_duplicate_names() {
        let mut r = ExtensionRegistry::new();
        let queue = ExtensionAction {
            name: "queue".into(),
            options: vec!["timeout".into()],
            required: vec![],
        };
        assert_eq!(r.register(queue.clone()), Ok(()));
        assert_eq!(
            r.register(queue),
            Err(RegistryError::Duplicate("queue".into()))
        );
        let dial = ExtensionAction {
            name: "dial".into(),
            options: vec![],
            required: vec![],
        };
        assert_eq!(r.register(dial), Err(RegistryError::BuiltIn("dial".into())));
    }

    #[test]
    fn prints_one_line_per_action() {
        let d = Action::Dial(Dial {
            targets: vec![
                DialTarget {
                    user: "101".into(),
                    timeout: Some(10),
                },
                DialTarget {
                    user: "102".into(),
                    timeout: None,
                },
            ],
            strategy: Strategy::Sequential,
            timeout: Some(20),
            auto_answer: false,
        });
        assert_eq!(d.to_string(), "dial 101(10s), 102 sequential timeout=20s");
        assert_eq!(
            Action::Hangup {
                cause: HangupCause::Busy
            }
            .to_string(),
            "hangup busy (Q.850 17, SIP 486)"
        );
    }
}
