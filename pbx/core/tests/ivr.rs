//! IVR steps in simulated time, media anchored: playback (prompts in order, then the
//! route goes on), menus (digits choose through the router, first-digit and inter-digit
//! timeouts, `#` and `max_digits`, invalid choices and retries, the failure route,
//! barge-in, SIP INFO digits), and the caller hanging up mid-menu. Media notices (prompt
//! finished, key pressed) are fed the way the runtime feeds them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_core::media::{MediaCommand, MediaNotice, Playback};
use switchboard_core::plan::{CallAction, MenuSpec};
use switchboard_core::{EngineEvent, RouteDecision, RouteQuery, Router};
use switchboard_media::dtmf::{DtmfDigit, DtmfSource};
use switchboard_media::relay::{Leg, MediaEvent};
use switchboard_sip::Method;

use support::{secs, Net, PhoneId, SDP_ANSWER};

/// A menu choice the router was asked for: (caller, dialled, menu, digits).
type Asked = (String, String, String, Option<String>);

/// The plan under test: 500 plays two prompts then dials 102; 600 answers and runs the
/// menu "main" (1 → 102, 23 → 103, anything else leads nowhere; failure → busy), with a
/// dial of 103 after it that a menu's outcome must replace.
#[derive(Debug, Clone, Default)]
struct TestPlan {
    asked: Arc<Mutex<Vec<Asked>>>,
}

fn dial(user: &str) -> CallAction {
    CallAction::Dial {
        users: vec![(user.to_string(), None)],
        sequential: false,
        timeout: Some(secs(20)),
        auto_answer: false,
    }
}

fn menu() -> MenuSpec {
    MenuSpec {
        name: "main".into(),
        prompt: "ivr/main-menu".into(),
        invalid_prompt: Some("ivr/invalid".into()),
        timeout: secs(5),
        digit_timeout: secs(2),
        max_digits: 2,
        retries: 2,
    }
}

impl Router for TestPlan {
    fn route(&self, q: &RouteQuery<'_>) -> RouteDecision {
        match q.dialled {
            "500" => RouteDecision::Actions(vec![
                CallAction::Answer,
                CallAction::Playback(vec!["hello".into(), "world".into()]),
                dial("102"),
            ]),
            "600" => RouteDecision::Actions(vec![
                CallAction::Answer,
                CallAction::Menu(Box::new(menu())),
                // Never reached: a menu's outcome replaces the rest of the route.
                dial("103"),
            ]),
            _ => RouteDecision::NotFound,
        }
    }

    fn menu_choice(&self, q: &RouteQuery<'_>, menu: &str, digits: Option<&str>) -> RouteDecision {
        self.asked.lock().unwrap().push((
            q.caller.to_string(),
            q.dialled.to_string(),
            menu.to_string(),
            digits.map(str::to_string),
        ));
        match digits {
            Some("1") => RouteDecision::Actions(vec![dial("102")]),
            Some("23") => RouteDecision::Actions(vec![dial("103")]),
            Some(_) => RouteDecision::Reject(480),
            None => RouteDecision::Actions(vec![CallAction::Hangup { status: 486 }]),
        }
    }
}

struct Pbx {
    net: Net,
    plan: TestPlan,
    p101: PhoneId,
    p102: PhoneId,
    p103: PhoneId,
}

fn pbx() -> Pbx {
    let mut net = Net::anchored();
    let plan = TestPlan::default();
    net.engine.set_router(Box::new(plan.clone()));
    let p101 = net.add_phone("101", "secret-101", 5061);
    let p102 = net.add_phone("102", "secret-102", 5071);
    let p103 = net.add_phone("103", "secret-103", 5081);
    for p in [p101, p102, p103] {
        assert_eq!(net.register(p, 3600).status, 200);
    }
    Pbx {
        net,
        plan,
        p101,
        p102,
        p103,
    }
}

impl Pbx {
    /// 101 dials `number`; the engine answers it. Returns the call's key and Call-ID.
    fn call_in(&mut self, number: &str) -> (u64, String) {
        let invite = self.net.phone(self.p101).invite(number);
        let call_id = invite.call_id().unwrap().to_string();
        let tx = self.net.send_authenticated(self.p101, invite);
        let ok = self.net.phone(self.p101).final_response(tx);
        assert_eq!(
            ok.as_ref().map(|r| r.status),
            Some(200),
            "{}",
            self.net.wire_log()
        );
        assert!(
            String::from_utf8_lossy(&ok.unwrap().body).contains("m=audio"),
            "answered with our SDP"
        );
        let key = self
            .net
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                EngineEvent::CallStarted { call, .. } => Some(*call),
                _ => None,
            })
            .expect("a call started");
        (key, call_id)
    }

    fn notice(&mut self, key: u64, event: MediaEvent) {
        let now = self.net.now;
        self.net
            .engine
            .handle_media_notice(key, MediaNotice::Session(event), now);
        self.net.settle();
    }

    fn finished(&mut self, key: u64) {
        self.notice(key, MediaEvent::PlaybackFinished { leg: Leg::A });
    }

    fn press(&mut self, key: u64, digit: char) {
        self.notice(
            key,
            MediaEvent::Dtmf {
                leg: Leg::A,
                digit: DtmfDigit {
                    digit,
                    duration_ms: 100,
                    source: DtmfSource::Rfc4733,
                },
            },
        );
    }

    /// Media commands for the call so far, in order.
    fn media(&self, key: u64) -> Vec<MediaCommand> {
        self.net
            .events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Media(m) if m.call() == key => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// The prompts the engine asked to play to the caller, in order.
    fn prompts(&self, key: u64) -> Vec<String> {
        self.media(key)
            .into_iter()
            .filter_map(|m| match m {
                MediaCommand::Play {
                    leg: Leg::A,
                    what: Playback::Prompt { name },
                    ..
                } => Some(name),
                _ => None,
            })
            .collect()
    }

    fn stops(&self, key: u64) -> usize {
        self.media(key)
            .iter()
            .filter(|m| matches!(m, MediaCommand::StopPlayback { leg: Leg::A, .. }))
            .count()
    }

    fn invites(&mut self, p: PhoneId) -> usize {
        self.net.phone(p).count(Method::Invite)
    }

    fn asked(&self) -> Vec<Asked> {
        self.plan.asked.lock().unwrap().clone()
    }

    /// Phone `p` answers its last INVITE; the call is then bridged.
    fn answer(&mut self, p: PhoneId) {
        let (id, _) = self.net.phone(p).last_request(Method::Invite);
        self.net.respond(p, id.unwrap(), 200, Some(SDP_ANSWER));
        assert_eq!(
            self.net.phone(p).count(Method::Ack),
            1,
            "{}",
            self.net.wire_log()
        );
    }

    /// The caller hangs up; the callee phone `p` (if any) gets the BYE.
    fn caller_hangs_up(&mut self, call_id: &str) -> Vec<u16> {
        let bye = self.net.phone(self.p101).in_dialog(call_id, Method::Bye);
        let tx = self.net.send(self.p101, bye);
        self.net.phone(self.p101).statuses(tx)
    }
}

fn asked(digits: Option<&str>) -> Asked {
    (
        "101".into(),
        "600".into(),
        "main".into(),
        digits.map(str::to_string),
    )
}

#[test]
fn playback_plays_prompts_in_order_then_the_route_goes_on() {
    let mut p = pbx();
    let (key, call_id) = p.call_in("500");
    assert_eq!(p.prompts(key), vec!["hello"]);
    // Nothing else happens while the prompt plays, however long it is.
    p.net.advance(secs(30));
    assert_eq!(p.prompts(key), vec!["hello"]);
    assert_eq!(p.invites(p.p102), 0);
    // A key press or the callee leg's playback ending changes nothing.
    p.press(key, '5');
    p.notice(key, MediaEvent::PlaybackFinished { leg: Leg::B });
    assert_eq!(p.prompts(key), vec!["hello"]);
    p.finished(key);
    assert_eq!(p.prompts(key), vec!["hello", "world"]);
    assert_eq!(p.invites(p.p102), 0);
    p.finished(key);
    // The last prompt ended: the route dials 102, which answers and talks to 101.
    assert_eq!(p.invites(p.p102), 1, "{}", p.net.wire_log());
    p.answer(p.p102);
    assert_eq!(
        p.net.phone(p.p101).count(Method::Invite),
        0,
        "the caller is not re-INVITEd"
    );
    assert_eq!(p.caller_hangs_up(&call_id), vec![200]);
    assert_eq!(p.net.phone(p.p102).count(Method::Bye), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.asked().is_empty());
}

#[test]
fn a_menu_choice_by_digits_dials_the_chosen_user() {
    let mut p = pbx();
    let (key, call_id) = p.call_in("600");
    assert_eq!(p.prompts(key), vec!["ivr/main-menu"]);
    p.finished(key);
    // One digit of two: the choice waits for the inter-digit timeout (2 s).
    p.net.advance(secs(1));
    p.press(key, '1');
    p.net.advance(Duration::from_millis(1900));
    assert!(p.asked().is_empty(), "chose before the digit timeout");
    assert_eq!(p.invites(p.p102), 0);
    p.net.advance(Duration::from_millis(200));
    assert_eq!(p.asked(), vec![asked(Some("1"))]);
    assert_eq!(p.invites(p.p102), 1, "{}", p.net.wire_log());
    assert_eq!(p.invites(p.p103), 0);
    p.answer(p.p102);
    assert_eq!(p.net.phone(p.p101).count(Method::Invite), 0);
    assert_eq!(p.net.engine.stats().active_calls, 1);
    // A key pressed once connected is no menu digit any more.
    p.press(key, '2');
    assert_eq!(p.asked().len(), 1);
    assert_eq!(p.caller_hangs_up(&call_id), vec![200]);
    assert_eq!(p.net.phone(p.p102).count(Method::Bye), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn max_digits_and_hash_end_the_collection_at_once() {
    let mut p = pbx();
    let (key, _) = p.call_in("600");
    p.finished(key);
    p.press(key, '2');
    p.press(key, '3');
    // max_digits is 2: no timeout awaited.
    assert_eq!(p.asked(), vec![asked(Some("23"))]);
    assert_eq!(p.invites(p.p103), 1);

    let mut p = pbx();
    let (key, _) = p.call_in("600");
    p.finished(key);
    p.press(key, '1');
    p.press(key, '#');
    assert_eq!(p.asked(), vec![asked(Some("1"))]);
    assert_eq!(p.invites(p.p102), 1);
}

#[test]
fn invalid_digits_play_the_invalid_prompt_and_the_menu_again() {
    let mut p = pbx();
    let (key, _) = p.call_in("600");
    p.finished(key);
    p.press(key, '9');
    p.press(key, '9');
    assert_eq!(p.asked(), vec![asked(Some("99"))]);
    assert_eq!(
        p.prompts(key),
        vec!["ivr/main-menu", "ivr/invalid"],
        "a choice leading nowhere"
    );
    // After the invalid prompt, the menu's again; then `#` with no digit is no choice.
    p.finished(key);
    assert_eq!(
        p.prompts(key),
        vec!["ivr/main-menu", "ivr/invalid", "ivr/main-menu"]
    );
    p.finished(key);
    p.press(key, '#');
    assert_eq!(p.asked().len(), 1, "# alone asks the router nothing");
    assert_eq!(
        p.prompts(key),
        vec![
            "ivr/main-menu",
            "ivr/invalid",
            "ivr/main-menu",
            "ivr/invalid"
        ]
    );
    p.finished(key);
    p.finished(key);
    // The third and last attempt chooses well.
    p.press(key, '1');
    p.net.advance(secs(2));
    assert_eq!(p.asked().last(), Some(&asked(Some("1"))));
    assert_eq!(p.invites(p.p102), 1);
}

#[test]
fn timeouts_repeat_the_menu_then_the_failure_route_runs() {
    let mut p = pbx();
    let (key, call_id) = p.call_in("600");
    let menu_and_invalid = |n: usize| {
        let mut v = vec!["ivr/main-menu".to_string()];
        for _ in 1..n {
            v.push("ivr/invalid".into());
            v.push("ivr/main-menu".into());
        }
        v
    };
    for attempt in 1..=3 {
        if attempt > 1 {
            // The invalid prompt ends; the menu's follows.
            p.finished(key);
        }
        assert_eq!(p.prompts(key), menu_and_invalid(attempt));
        p.finished(key);
        // No digit: nothing before the first-digit timeout (5 s)…
        p.net.advance(Duration::from_millis(4900));
        assert_eq!(p.prompts(key).len(), 2 * attempt - 1);
        assert_eq!(p.net.phone(p.p101).count(Method::Bye), 0);
        p.net.advance(Duration::from_millis(100));
    }
    // Three attempts (retries = 2) failed: the router's failure route hangs up.
    assert_eq!(p.prompts(key).len(), 5);
    assert_eq!(p.asked(), vec![asked(None)]);
    let byes: Vec<_> = p
        .net
        .phone(p.p101)
        .requests(Method::Bye)
        .into_iter()
        .filter(|(_, r)| r.call_id().unwrap() == call_id)
        .collect();
    assert_eq!(byes.len(), 1, "{}", p.net.wire_log());
    assert_eq!(p.invites(p.p102) + p.invites(p.p103), 0);
    assert!(p.net.run_to_quiet(secs(120)));
    assert_eq!(p.net.engine.stats().active_calls, 0);
}

#[test]
fn a_digit_during_the_prompt_stops_it() {
    let mut p = pbx();
    let (key, _) = p.call_in("600");
    assert_eq!(p.stops(key), 0);
    p.press(key, '2');
    assert_eq!(p.stops(key), 1, "barge-in stops the prompt");
    // The stopped prompt's late end changes nothing (no replay, no choice).
    p.finished(key);
    assert_eq!(p.prompts(key), vec!["ivr/main-menu"]);
    assert!(p.asked().is_empty());
    p.press(key, '3');
    assert_eq!(p.asked(), vec![asked(Some("23"))]);
    assert_eq!(p.invites(p.p103), 1);
    // Barge-in during a retry's invalid prompt skips the menu prompt too.
    let mut p = pbx();
    let (key, _) = p.call_in("600");
    p.finished(key);
    p.net.advance(secs(5));
    assert_eq!(p.prompts(key), vec!["ivr/main-menu", "ivr/invalid"]);
    p.press(key, '1');
    p.finished(key);
    p.net.advance(secs(2));
    assert_eq!(p.prompts(key), vec!["ivr/main-menu", "ivr/invalid"]);
    assert_eq!(p.asked(), vec![asked(Some("1"))]);
    assert_eq!(p.invites(p.p102), 1);
}

#[test]
fn sip_info_digits_work_the_menu_too() {
    let mut p = pbx();
    let (key, call_id) = p.call_in("600");
    p.finished(key);
    for signal in ["2", "3"] {
        let mut info = p.net.phone(p.p101).in_dialog(&call_id, Method::Info);
        info.set_body(
            format!("Signal={signal}\r\nDuration=160\r\n").into_bytes(),
            Some("application/dtmf-relay"),
        );
        let tx = p.net.send(p.p101, info);
        assert_eq!(p.net.phone(p.p101).statuses(tx), vec![200]);
    }
    assert_eq!(p.asked(), vec![asked(Some("23"))]);
    assert_eq!(p.invites(p.p103), 1);
}

#[test]
fn the_caller_hanging_up_mid_menu_ends_everything() {
    let mut p = pbx();
    let (key, call_id) = p.call_in("600");
    p.finished(key);
    p.press(key, '1');
    assert_eq!(p.caller_hangs_up(&call_id), vec![200]);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    // Its timers and late media notices find no call: nothing is chosen or dialled.
    p.net.advance(secs(30));
    p.press(key, '3');
    p.finished(key);
    assert!(p.asked().is_empty());
    assert_eq!(p.invites(p.p102) + p.invites(p.p103), 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn a_choice_whose_callee_does_not_answer_goes_on_with_the_new_route() {
    // The menu's actions replaced the route: after 102's ring timeout the choice's list
    // has ended, so the caller is hung up; the menu route's later dial of 103 never runs.
    let mut p = pbx();
    let (key, call_id) = p.call_in("600");
    p.finished(key);
    p.press(key, '1');
    p.net.advance(secs(2));
    assert_eq!(p.invites(p.p102), 1);
    p.net.advance(secs(21));
    let byes = p
        .net
        .phone(p.p101)
        .requests(Method::Bye)
        .into_iter()
        .filter(|(_, r)| r.call_id().unwrap() == call_id)
        .count();
    assert_eq!(byes, 1, "{}", p.net.wire_log());
    assert_eq!(p.invites(p.p103), 0);
    assert_eq!(p.prompts(key), vec!["ivr/main-menu"]);
    assert!(p.net.run_to_quiet(secs(120)));
}
