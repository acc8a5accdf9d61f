//! The dialplan in the running server: loading it (a plan with errors never loads, so the
//! server refuses to start on one), routing each new call through it (the engine's
//! [`Router`]), and reloading it atomically on SIGHUP, on a change of the file, or when
//! the API asks. An invalid plan leaves the running one in place and its errors are
//! logged; calls in progress keep the actions they were routed to.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use switchboard_core::plan::{CallAction, MenuSpec};
use switchboard_core::{RouteDecision, RouteQuery, Router};
use switchboard_dialplan::{Action, Dialplan, Known, RouteRequest, Strategy};
use tokio::sync::{mpsc, oneshot};

/// What the plan is checked against.
#[derive(Debug, Clone, Default)]
pub struct DialplanSource {
    pub path: PathBuf,
    /// Configured trunk names (`[[trunks]]`).
    pub trunks: BTreeSet<String>,
    /// Park slots (`[features] park_slots`).
    pub park_slots: BTreeSet<String>,
    /// Conference room numbers (`[conference] rooms`).
    pub rooms: BTreeSet<String>,
    /// How often the file's modification time is looked at.
    pub poll_interval: Duration,
    /// Routes as if it were always this instant (unix seconds): for end-to-end tests of
    /// time conditions (`SWITCHBOARD_DIALPLAN_TEST_CLOCK`), never for production.
    pub test_clock: Option<i64>,
}

impl DialplanSource {
    /// Loads and checks the plan; `users` are the directory's names and extensions.
    pub fn load(&self, users: BTreeSet<String>) -> Result<Dialplan, String> {
        let known = Known {
            users: Some(users),
            trunks: Some(self.trunks.clone()),
            rooms: Some(self.rooms.clone()),
            park_slots: Some(self.park_slots.clone()),
            time_zones: switchboard_dialplan::jiff::tz::db().clone(),
            ..Known::default()
        };
        Dialplan::load(&self.path, &known).map_err(|d| format!("{}{}", d, d.summary()))
    }
}

/// The engine's view of a plan.
#[derive(Debug)]
pub struct PlanRouter {
    plan: Arc<Dialplan>,
    test_clock: Option<i64>,
}

impl PlanRouter {
    pub fn new(plan: Arc<Dialplan>, test_clock: Option<i64>) -> PlanRouter {
        PlanRouter { plan, test_clock }
    }

    fn request<'a>(
        &self,
        q: &'a RouteQuery<'a>,
        headers: &'a [(String, String)],
    ) -> RouteRequest<'a> {
        RouteRequest {
            context: None,
            trunk: q.from_trunk,
            caller: q.caller,
            caller_name: q
                .caller_attrs
                .iter()
                .find(|(k, _)| k == "display_name")
                .map(|(_, v)| v.as_str()),
            called: q.dialled,
            headers,
            at: switchboard_dialplan::jiff::Timestamp::from_second(
                self.test_clock
                    .unwrap_or_else(|| i64::try_from(q.unix).unwrap_or(0)),
            )
            .unwrap_or(switchboard_dialplan::jiff::Timestamp::UNIX_EPOCH),
            caller_attrs: q.caller_attrs,
        }
    }
}

fn header_list(q: &RouteQuery<'_>) -> Vec<(String, String)> {
    q.headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.clone()))
        .collect()
}

fn secs(s: Option<u32>) -> Option<Duration> {
    s.map(|s| Duration::from_secs(u64::from(s)))
}

/// A plan's actions as the engine carries them out.
pub fn to_call_actions(actions: Vec<Action>) -> Vec<CallAction> {
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        out.push(match a {
            Action::Answer => CallAction::Answer,
            Action::Playback { prompts } => CallAction::Playback(prompts),
            // A playback of one prompt per key, so it answers and plays like one.
            Action::SayDigits { digits } => {
                CallAction::Playback(switchboard_core::say::digits(&digits))
            }
            Action::Dial(d) => CallAction::Dial {
                users: d
                    .targets
                    .into_iter()
                    .map(|t| (t.user, secs(t.timeout)))
                    .collect(),
                sequential: d.strategy == Strategy::Sequential,
                timeout: secs(d.timeout),
                auto_answer: d.auto_answer,
            },
            Action::DialTrunk(t) => CallAction::DialTrunk {
                trunk: t.trunk,
                number: t.number,
                caller_id: t.caller_id,
                caller_name: t.caller_name,
                timeout: secs(t.timeout),
            },
            Action::Menu(m) => CallAction::Menu(Box::new(MenuSpec {
                name: m.name,
                prompt: m.prompt,
                invalid_prompt: m.invalid_prompt,
                timeout: Duration::from_secs(u64::from(m.timeout)),
                digit_timeout: Duration::from_secs(u64::from(m.digit_timeout)),
                max_digits: m.max_digits,
                retries: m.retries,
            })),
            Action::Park { slot } => CallAction::Park { slot },
            Action::Retrieve { slot } => CallAction::Retrieve { slot },
            Action::Conference { room } => CallAction::Conference { room },
            Action::Record { on } => CallAction::Record(on),
            Action::Set { name, value } => CallAction::Set { name, value },
            Action::SetHeader { name, value } => CallAction::SetHeader { name, value },
            Action::Wait { seconds } => CallAction::Wait(Duration::from_secs(u64::from(seconds))),
            Action::Hangup { cause } => CallAction::Hangup {
                status: cause.sip_status(),
            },
            Action::Extension { name, .. } => {
                // Registered by later issues (queues); nothing executes them yet.
                tracing::warn!(action = %name, "no executor for this dialplan action; refusing the call");
                CallAction::Hangup { status: 501 }
            }
            other => {
                tracing::warn!(action = %other, "unknown dialplan action; refusing the call");
                CallAction::Hangup { status: 501 }
            }
        });
    }
    out
}

impl Router for PlanRouter {
    fn route(&self, q: &RouteQuery<'_>) -> RouteDecision {
        let headers = header_list(q);
        let request = self.request(q, &headers);
        match self.plan.route(&request) {
            Ok(routing) => {
                tracing::debug!(route = %routing.route, context = %routing.context, "routed");
                RouteDecision::Actions(to_call_actions(routing.actions))
            }
            Err(e) => {
                tracing::info!(caller = q.caller, dialled = q.dialled, error = %e, "no route");
                RouteDecision::Reject(e.sip_status())
            }
        }
    }

    fn menu_choice(&self, q: &RouteQuery<'_>, menu: &str, digits: Option<&str>) -> RouteDecision {
        let headers = header_list(q);
        let request = self.request(q, &headers);
        // The menu is the one the call's route reached (routing is deterministic for the
        // same request and time).
        let Ok(first) = self.plan.route(&request) else {
            return RouteDecision::Reject(480);
        };
        let Some(m) = first.actions.iter().find_map(|a| match a {
            Action::Menu(m) if m.name == menu => Some(m),
            _ => None,
        }) else {
            return RouteDecision::Reject(480);
        };
        let target = match digits.and_then(|d| m.choose(d)) {
            Some(t) => t.clone(),
            None => match &m.on_failure {
                Some(t) => t.clone(),
                None => return RouteDecision::Reject(480),
            },
        };
        match self.plan.enter(&request, &target, digits) {
            Ok(r) => RouteDecision::Actions(to_call_actions(r.actions)),
            Err(e) => {
                tracing::warn!(error = %e, "menu target");
                RouteDecision::Reject(e.sip_status())
            }
        }
    }
}

/// What the last load or reload said (for the API and logs).
#[derive(Debug, Clone, Default)]
pub struct DialplanStatus {
    pub file: String,
    pub loaded_unix: u64,
    pub reloads: u64,
    pub failures: u64,
    /// The errors of the last failed reload (empty after a success).
    pub last_error: Option<String>,
    pub warnings: Vec<String>,
}

/// A reload request, answered with the outcome.
pub type ReloadReply = Result<DialplanStatus, String>;

/// Handle for the API: ask for a reload, read the status.
#[derive(Clone, Debug)]
pub struct DialplanHandle {
    requests: mpsc::Sender<oneshot::Sender<ReloadReply>>,
    status: Arc<Mutex<DialplanStatus>>,
}

impl DialplanHandle {
    pub async fn reload(&self) -> ReloadReply {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| "the server is stopping".to_string())?;
        rx.await.map_err(|_| "the server is stopping".to_string())?
    }

    pub fn status(&self) -> DialplanStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The receiving end, given to [`crate::run`].
pub struct DialplanInbox {
    pub(crate) source: DialplanSource,
    pub(crate) initial: Arc<Dialplan>,
    pub(crate) requests: mpsc::Receiver<oneshot::Sender<ReloadReply>>,
    pub(crate) status: Arc<Mutex<DialplanStatus>>,
}

/// A loaded plan and the channel pair that reloads it.
pub fn dialplan_channel(source: DialplanSource, plan: Dialplan) -> (DialplanHandle, DialplanInbox) {
    let (tx, rx) = mpsc::channel(8);
    let status = Arc::new(Mutex::new(DialplanStatus {
        file: source.path.display().to_string(),
        loaded_unix: crate::unix_now(),
        warnings: warning_lines(&plan),
        ..DialplanStatus::default()
    }));
    (
        DialplanHandle {
            requests: tx,
            status: status.clone(),
        },
        DialplanInbox {
            source,
            initial: Arc::new(plan),
            requests: rx,
            status,
        },
    )
}

fn warning_lines(plan: &Dialplan) -> Vec<String> {
    plan.warnings()
        .to_string()
        .lines()
        .filter(|l| l.contains(": warning: "))
        .map(str::to_string)
        .collect()
}

pub(crate) fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads the plan again in a blocking task and records the outcome; `Ok` carries the
/// new plan for the engine.
pub(crate) async fn reload(
    source: &DialplanSource,
    users: BTreeSet<String>,
    status: &Arc<Mutex<DialplanStatus>>,
    metrics: &crate::Metrics,
    why: &str,
) -> Result<Dialplan, String> {
    let s = source.clone();
    let result = tokio::task::spawn_blocking(move || s.load(users))
        .await
        .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
    let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
    st.reloads += 1;
    match &result {
        Ok(plan) => {
            st.loaded_unix = crate::unix_now();
            st.last_error = None;
            st.warnings = warning_lines(plan);
            metrics.dialplan_reloaded(true);
            tracing::info!(file = %source.path.display(), why, warnings = st.warnings.len(), "dialplan reloaded");
        }
        Err(e) => {
            st.failures += 1;
            st.last_error = Some(e.clone());
            metrics.dialplan_reloaded(false);
            tracing::error!(file = %source.path.display(), why, "dialplan reload refused; the running plan stays:\n{e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::to_call_actions;
    use switchboard_core::CallAction;
    use switchboard_dialplan::Action;

    #[test]
    fn say_digits_becomes_a_playback_of_one_prompt_per_key() {
        let actions = to_call_actions(vec![
            Action::SayDigits {
                digits: "70*1#".into(),
            },
            Action::SayDigits {
                digits: "abc".into(),
            },
        ]);
        assert_eq!(
            actions,
            vec![
                CallAction::Playback(
                    [
                        "digits/7",
                        "digits/0",
                        "digits/star",
                        "digits/1",
                        "digits/pound"
                    ]
                    .map(String::from)
                    .to_vec()
                ),
                // Nothing to say: an empty playback, the route goes on at once.
                CallAction::Playback(Vec::new()),
            ]
        );
    }
}
