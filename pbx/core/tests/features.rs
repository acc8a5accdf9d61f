//! Call features in simulated time, media anchored: blind transfer (REFER), park and
//! retrieve, park timeout ring-back, attended transfer (REFER with Replaces, INVITE with
//! Replaces), the park feature code during a call (#72: the other party parked, the
//! parker told the slot then released), and the call-control commands (originate with
//! auto-answer, hold, mute, park, retrieve, hang up, and their refusals).

mod support;

use switchboard_core::media::{MediaCommand, MediaNotice, Playback};
use switchboard_core::{
    CallHistory, Command, CommandError, CommandReply, EngineEvent, Party, TransferKind,
};
use switchboard_media::dtmf::{DtmfDigit, DtmfSource};
use switchboard_media::relay::{Leg, MediaEvent};
use switchboard_sip::{HeaderName, Method, Request};

use support::{secs, Net, PhoneId, SDP_ANSWER};

struct Pbx {
    net: Net,
    p101: PhoneId,
    p102: PhoneId,
    p103: PhoneId,
}

fn pbx() -> Pbx {
    let mut net = Net::anchored();
    let p101 = net.add_phone("101", "secret-101", 5061);
    let p102 = net.add_phone("102", "secret-102", 5071);
    let p103 = net.add_phone("103", "secret-103", 5081);
    for p in [p101, p102, p103] {
        assert_eq!(net.register(p, 3600).status, 200);
    }
    Pbx {
        net,
        p101,
        p102,
        p103,
    }
}

fn body(req: &Request) -> String {
    String::from_utf8_lossy(&req.body).into_owned()
}

/// `from` dials `to` (user of phone `callee`), the callee answers with SDP; returns the
/// Call-IDs on the caller's and the callee's side.
fn call(p: &mut Pbx, from: PhoneId, to: &str, callee: PhoneId) -> (String, String) {
    let before = p.net.phone(callee).count(Method::Invite);
    let invite = p.net.phone(from).invite(to);
    let a_id = invite.call_id().unwrap().to_string();
    let tx = p.net.send_authenticated(from, invite);
    assert_eq!(
        p.net.phone(callee).count(Method::Invite),
        before + 1,
        "{}",
        p.net.wire_log()
    );
    let (id, inv) = p.net.phone(callee).last_request(Method::Invite);
    assert!(body(&inv).contains("m=audio"), "the callee gets our offer");
    let b_id = inv.call_id().unwrap().to_string();
    p.net.respond(callee, id.unwrap(), 200, Some(SDP_ANSWER));
    let ok = p.net.phone(from).final_response(tx).unwrap();
    assert_eq!(ok.status, 200, "{}", p.net.wire_log());
    (a_id, b_id)
}

/// Requests of `method` phone `p` received in the dialog `call_id`.
fn got(p: &mut Pbx, phone: PhoneId, method: Method, call_id: &str) -> Vec<Request> {
    p.net
        .phone(phone)
        .requests(method)
        .into_iter()
        .filter(|(_, r)| r.call_id().unwrap() == call_id)
        .map(|(_, r)| r)
        .collect()
}

/// The bodies of the NOTIFYs (transfer progress) phone `phone` got, checking each is a
/// `refer` event with a sipfrag body (the simulated phone answers them 200).
fn answer_notifies(p: &mut Pbx, phone: PhoneId) -> Vec<String> {
    p.net
        .phone(phone)
        .requests(Method::Notify)
        .into_iter()
        .map(|(_, req)| {
            assert_eq!(req.headers.get(&HeaderName::Event), Some("refer"));
            assert!(req
                .headers
                .get(&HeaderName::ContentType)
                .unwrap()
                .starts_with("message/sipfrag"));
            body(&req)
        })
        .collect()
}

fn refer(p: &mut Pbx, phone: PhoneId, call_id: &str, refer_to: &str) -> Vec<u16> {
    let mut req = p.net.phone(phone).in_dialog(call_id, Method::Refer);
    req.headers.push(HeaderName::ReferTo, refer_to.to_string());
    let tx = p.net.send(phone, req);
    p.net.phone(phone).statuses(tx)
}

fn history(p: &Pbx) -> Vec<CallHistory> {
    p.net
        .events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::History { event, .. } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

fn media_commands(p: &Pbx) -> Vec<MediaCommand> {
    p.net
        .events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Media(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn blind_transfer_by_refer_connects_the_caller_to_the_target() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);

    let statuses = refer(&mut p, p102, &b_id, "<sip:103@example.test>");
    assert_eq!(statuses, vec![202], "{}", p.net.wire_log());
    assert_eq!(
        answer_notifies(&mut p, p102),
        vec!["SIP/2.0 100 Trying\r\n"]
    );
    // The target rings with our offer and sees the transferee as the caller.
    let (id, inv) = p.net.phone(p103).last_request(Method::Invite);
    assert!(body(&inv).contains("m=audio"));
    assert!(inv.from().unwrap().uri.to_string().contains("101@"));
    p.net.respond(p103, id.unwrap(), 180, None);
    p.net.respond(p103, id.unwrap(), 200, Some(SDP_ANSWER));
    assert_eq!(
        p.net.phone(p103).count(Method::Ack),
        1,
        "{}",
        p.net.wire_log()
    );
    let bodies = answer_notifies(&mut p, p102);
    assert!(
        bodies.contains(&"SIP/2.0 200 OK\r\n".to_string()),
        "{bodies:?}"
    );
    let last = p.net.phone(p102).last_request(Method::Notify).1;
    assert!(last
        .headers
        .get(&HeaderName::Other("Subscription-State".into()))
        .unwrap()
        .starts_with("terminated"));
    // The transferor is released; the caller stays untouched.
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    assert_eq!(p.net.engine.stats().active_calls, 1);
    assert!(history(&p).contains(&CallHistory::Transferred {
        kind: TransferKind::Blind,
        party: Party::Callee,
        from: "102".into(),
        to: "103".into(),
        by: Some("102".into()),
    }));
    // The callee leg was reconfigured toward the target's answer.
    assert!(
        media_commands(&p)
            .iter()
            .filter(|m| matches!(m, MediaCommand::Configure { leg: Leg::B, .. }))
            .count()
            >= 2
    );
    let calls = match p.net.command(Command::ListCalls).unwrap() {
        CommandReply::Calls(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].caller.as_str(), calls[0].callee.as_str()),
        ("101", "103")
    );

    // The target hangs up: the caller gets the BYE in its own dialog.
    let c_id = inv.call_id().unwrap().to_string();
    let bye = p.net.phone(p103).in_dialog(&c_id, Method::Bye);
    let tx = p.net.send(p103, bye);
    assert_eq!(p.net.phone(p103).statuses(tx), vec![200]);
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn a_failed_blind_transfer_leaves_the_call_as_it_was() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b_id, "<sip:103@example.test>"),
        vec![202]
    );
    let (id, _) = p.net.phone(p103).last_request(Method::Invite);
    p.net.respond(p103, id.unwrap(), 486, None);
    let bodies = answer_notifies(&mut p, p102);
    assert!(
        bodies.contains(&"SIP/2.0 486 Busy Here\r\n".to_string()),
        "{bodies:?}"
    );
    assert!(got(&mut p, p102, Method::Bye, &b_id).is_empty());
    assert!(history(&p).contains(&CallHistory::TransferFailed {
        party: Party::Caller,
        to: "103".into(),
        status: 486,
    }));
    // Still one call between 101 and 102: the caller's BYE reaches 102.
    let bye = p.net.phone(p101).in_dialog(&a_id, Method::Bye);
    p.net.send(p101, bye);
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    // An unknown target is refused through the NOTIFY as well.
    let (a2, b2) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b2, "<sip:999@example.test>"),
        vec![202]
    );
    let bodies = answer_notifies(&mut p, p102);
    assert!(
        bodies.contains(&"SIP/2.0 404 Not Found\r\n".to_string()),
        "{bodies:?}"
    );
    assert!(got(&mut p, p101, Method::Bye, &a2).is_empty());
    let bye = p.net.phone(p101).in_dialog(&a2, Method::Bye);
    p.net.send(p101, bye);
    assert_eq!(got(&mut p, p102, Method::Bye, &b2).len(), 1);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn the_transferor_may_hang_up_right_after_the_refer() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b_id, "<sip:103@example.test>"),
        vec![202]
    );
    answer_notifies(&mut p, p102);
    let bye = p.net.phone(p102).in_dialog(&b_id, Method::Bye);
    let tx = p.net.send(p102, bye);
    assert_eq!(p.net.phone(p102).statuses(tx), vec![200]);
    assert!(
        got(&mut p, p101, Method::Bye, &a_id).is_empty(),
        "the caller stays"
    );
    let (id, _) = p.net.phone(p103).last_request(Method::Invite);
    p.net.respond(p103, id.unwrap(), 200, Some(SDP_ANSWER));
    assert_eq!(p.net.phone(p103).count(Method::Ack), 1);
    assert_eq!(p.net.engine.stats().active_calls, 1);
    let bye = p.net.phone(p101).in_dialog(&a_id, Method::Bye);
    p.net.send(p101, bye);
    assert_eq!(p.net.phone(p103).count(Method::Bye), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
}

#[test]
fn park_by_transfer_to_the_park_extension_and_retrieve_by_dialling_the_slot() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let mut req = p.net.phone(p102).in_dialog(&b_id, Method::Refer);
    req.headers
        .push(HeaderName::ReferTo, "<sip:700@example.test>".to_string());
    let tx = p.net.send(p102, req);
    let resp = p.net.phone(p102).final_response(tx).unwrap();
    assert_eq!(resp.status, 202);
    assert_eq!(
        resp.headers.get(&HeaderName::Other("X-Park-Slot".into())),
        Some("701"),
        "the parker is told the slot"
    );
    let bodies = answer_notifies(&mut p, p102);
    assert_eq!(bodies, vec!["SIP/2.0 200 OK\r\n"]);
    assert_eq!(
        got(&mut p, p102, Method::Bye, &b_id).len(),
        1,
        "parker released"
    );
    assert!(media_commands(&p).contains(&MediaCommand::Play {
        call: 1,
        leg: Leg::A,
        what: Playback::MusicOnHold {
            class: "default".into()
        },
    }));
    let parked = match p.net.command(Command::ListParked).unwrap() {
        CommandReply::Parked(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].slot, "701");
    assert_eq!(parked[0].parked, "101");
    assert_eq!(parked[0].parker.as_deref(), Some("102"));
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());

    // 103 dials the slot and gets the parked caller.
    let invite = p.net.phone(p103).invite("701");
    let r_id = invite.call_id().unwrap().to_string();
    let tx = p.net.send_authenticated(p103, invite);
    let ok = p.net.phone(p103).final_response(tx).unwrap();
    assert_eq!(ok.status, 200, "{}", p.net.wire_log());
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio"));
    assert!(media_commands(&p).contains(&MediaCommand::StopPlayback {
        call: 1,
        leg: Leg::A
    }));
    assert!(history(&p).contains(&CallHistory::Retrieved {
        slot: "701".into(),
        by: "103".into()
    }));
    match p.net.command(Command::ListParked).unwrap() {
        CommandReply::Parked(v) => assert!(v.is_empty()),
        other => panic!("{other:?}"),
    }
    // Dialling an empty slot is 404.
    let invite = p.net.phone(p102).invite("702");
    let tx = p.net.send_authenticated(p102, invite);
    assert_eq!(p.net.phone(p102).final_response(tx).unwrap().status, 404);
    // The retriever hangs up: the parked caller gets BYE.
    let bye = p.net.phone(p103).in_dialog(&r_id, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn silence_on_the_side_a_parker_left_does_not_end_the_parked_call() {
    let mut p = pbx();
    let (p101, p102) = (p.p101, p.p102);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let mut req = p.net.phone(p102).in_dialog(&b_id, Method::Refer);
    req.headers
        .push(HeaderName::ReferTo, "<sip:700@example.test>".to_string());
    let tx = p.net.send(p102, req);
    assert_eq!(p.net.phone(p102).final_response(tx).unwrap().status, 202);
    answer_notifies(&mut p, p102);
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    let key = last_call(&p);
    // The relay reports the parker's leg silent (it left): the call stays parked.
    let now = p.net.now;
    p.net.engine.handle_media_notice(
        key,
        MediaNotice::Session(MediaEvent::RtpTimeout { leg: Leg::B }),
        now,
    );
    p.net.settle();
    assert_eq!(parked(&mut p).len(), 1, "{}", p.net.wire_log());
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    // The parked caller's own silence still ends it (a phone that vanished).
    let now = p.net.now;
    p.net.engine.handle_media_notice(
        key,
        MediaNotice::Session(MediaEvent::RtpTimeout { leg: Leg::A }),
        now,
    );
    p.net.settle();
    assert!(parked(&mut p).is_empty());
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
}

#[test]
fn a_parked_call_that_times_out_rings_the_parker_back() {
    let mut p = pbx();
    let (p101, p102) = (p.p101, p.p102);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b_id, "<sip:700@example.test>"),
        vec![202]
    );
    answer_notifies(&mut p, p102);
    let invites_before = p.net.phone(p102).count(Method::Invite);
    p.net.advance(secs(46));
    assert_eq!(
        p.net.phone(p102).count(Method::Invite),
        invites_before + 1,
        "ring-back: {}",
        p.net.wire_log()
    );
    let (id, inv) = p.net.phone(p102).last_request(Method::Invite);
    assert!(inv.from().unwrap().uri.to_string().contains("101@"));
    p.net.respond(p102, id.unwrap(), 200, Some(SDP_ANSWER));
    assert!(history(&p).contains(&CallHistory::Retrieved {
        slot: "701".into(),
        by: "102".into()
    }));
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    // If nobody answers the ring-back, the parked party is hung up (the fallback).
    let p103 = p.p103;
    let (a2, b2) = call(&mut p, p101, "103", p103);
    assert_eq!(
        refer(&mut p, p103, &b2, "<sip:700@example.test>"),
        vec![202]
    );
    answer_notifies(&mut p, p103);
    p.net.advance(secs(46 + 61));
    assert_eq!(
        got(&mut p, p101, Method::Bye, &a2).len(),
        1,
        "{}",
        p.net.wire_log()
    );
}

#[test]
fn attended_transfer_by_refer_with_replaces_joins_the_two_other_parties() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    // 101 called 102; 102 consults 103 in a second call.
    let (a1, b1) = call(&mut p, p101, "102", p102);
    let (a2, b2) = call(&mut p, p102, "103", p103);
    let leg = p.net.phone(p102).legs[&a2].clone();
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        a2.replace('@', "%40"),
        leg.remote_tag.clone().unwrap(),
        leg.local_tag
    );
    let statuses = refer(
        &mut p,
        p102,
        &b1,
        &format!("<sip:103@example.test?Replaces={replaces}>"),
    );
    assert_eq!(statuses, vec![202], "{}", p.net.wire_log());
    // The transferee is re-INVITEd toward the consultation call's ports.
    let reinvites = got(&mut p, p101, Method::Invite, &a1);
    assert_eq!(reinvites.len(), 1, "{}", p.net.wire_log());
    assert!(body(&reinvites[0]).contains("a=sendrecv"));
    let (id, _) = p.net.phone(p101).last_request(Method::Invite);
    p.net.respond(p101, id.unwrap(), 200, Some(SDP_ANSWER));
    assert_eq!(
        got(&mut p, p101, Method::Ack, &a1).len(),
        1,
        "{}",
        p.net.wire_log()
    );
    let bodies = answer_notifies(&mut p, p102);
    assert!(
        bodies.contains(&"SIP/2.0 200 OK\r\n".to_string()),
        "{bodies:?}"
    );
    // The transferor's two legs are released; the two others are untouched.
    assert_eq!(got(&mut p, p102, Method::Bye, &b1).len(), 1);
    assert_eq!(got(&mut p, p102, Method::Bye, &a2).len(), 1);
    assert!(got(&mut p, p101, Method::Bye, &a1).is_empty());
    assert!(got(&mut p, p103, Method::Bye, &b2).is_empty());
    assert_eq!(p.net.engine.stats().active_calls, 1);
    assert!(history(&p).iter().any(|h| matches!(
        h,
        CallHistory::Transferred {
            kind: TransferKind::Attended,
            ..
        }
    )));
    // 103 hangs up: 101 gets the BYE in its original dialog.
    let bye = p.net.phone(p103).in_dialog(&b2, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(
        got(&mut p, p101, Method::Bye, &a1).len(),
        1,
        "{}",
        p.net.wire_log()
    );
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn invite_with_replaces_takes_over_a_party() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let leg = p.net.phone(p102).legs[&b_id].clone();
    // Named as 102 sees it: its own tag is the to-tag from the engine's view? Either works.
    let mut invite = p.net.phone(p103).invite("102");
    invite.headers.push(
        HeaderName::Other("Replaces".into()),
        format!(
            "{b_id};to-tag={};from-tag={}",
            leg.local_tag,
            leg.remote_tag.clone().unwrap()
        ),
    );
    let r_id = invite.call_id().unwrap().to_string();
    let tx = p.net.send_authenticated(p103, invite);
    assert_eq!(
        p.net.phone(p103).final_response(tx).unwrap().status,
        200,
        "{}",
        p.net.wire_log()
    );
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    let bye = p.net.phone(p103).in_dialog(&r_id, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
    // A Replaces naming no dialog is 481.
    let mut invite = p.net.phone(p103).invite("102");
    invite.headers.push(
        HeaderName::Other("Replaces".into()),
        "nope@x;to-tag=1;from-tag=2".to_string(),
    );
    let tx = p.net.send_authenticated(p103, invite);
    assert_eq!(p.net.phone(p103).final_response(tx).unwrap().status, 481);
}

#[test]
fn originate_rings_the_user_with_auto_answer_then_dials_the_target() {
    let mut p = pbx();
    let (p101, p103) = (p.p101, p.p103);
    let reply = p
        .net
        .command(Command::Originate {
            user: "101".into(),
            target: "103".into(),
            auto_answer: true,
        })
        .unwrap();
    let CommandReply::Call { call } = reply else {
        panic!("{reply:?}")
    };
    let (id, inv) = p.net.phone(p101).last_request(Method::Invite);
    assert_eq!(
        inv.headers.get(&HeaderName::Other("Call-Info".into())),
        Some("<sip:example.test>;answer-after=0")
    );
    assert!(inv
        .headers
        .get(&HeaderName::Other("Alert-Info".into()))
        .unwrap()
        .contains("info=alert-autoanswer"));
    assert_eq!(
        p.net.phone(p103).count(Method::Invite),
        0,
        "target waits for the user"
    );
    p.net.respond(p101, id.unwrap(), 200, Some(SDP_ANSWER));
    let (id3, inv3) = p.net.phone(p103).last_request(Method::Invite);
    assert!(inv3.from().unwrap().uri.to_string().contains("101@"));
    assert!(inv3
        .headers
        .get(&HeaderName::Other("Call-Info".into()))
        .is_none());
    p.net.respond(p103, id3.unwrap(), 200, Some(SDP_ANSWER));
    assert!(p.net.events.contains(&EngineEvent::CallAnswered { call }));

    // Hold, mute and their refusals.
    p.net
        .command(Command::Hold {
            call,
            party: Party::Callee,
        })
        .unwrap();
    assert!(media_commands(&p).contains(&MediaCommand::Mute {
        call,
        leg: Leg::B,
        muted: true
    }));
    assert!(matches!(
        p.net.command(Command::Hold {
            call,
            party: Party::Callee
        }),
        Err(CommandError::Conflict(_))
    ));
    p.net
        .command(Command::Resume {
            call,
            party: Party::Callee,
        })
        .unwrap();
    p.net
        .command(Command::Mute {
            call,
            party: Party::Caller,
            muted: true,
        })
        .unwrap();
    assert!(media_commands(&p).contains(&MediaCommand::Mute {
        call,
        leg: Leg::A,
        muted: true
    }));
    // Hang up through the command: both phones get BYE.
    p.net.command(Command::Hangup { call }).unwrap();
    assert_eq!(p.net.phone(p101).count(Method::Bye), 1);
    assert_eq!(p.net.phone(p103).count(Method::Bye), 1);
    assert_eq!(
        p.net.command(Command::Hangup { call }),
        Err(CommandError::NoSuchCall(call))
    );
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn park_and_retrieve_by_command_and_the_refusals() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let CommandReply::Calls(calls) = p.net.command(Command::ListCalls).unwrap() else {
        panic!()
    };
    let call = calls[0].call;
    assert_eq!(
        p.net.command(Command::Park {
            call,
            party: Party::Caller,
            slot: Some("5".into())
        }),
        Err(CommandError::BadRequest(
            "5 is not a park slot (701-720)".into()
        ))
    );
    let reply = p
        .net
        .command(Command::Park {
            call,
            party: Party::Caller,
            slot: Some("705".into()),
        })
        .unwrap();
    assert_eq!(reply, CommandReply::Slot { slot: "705".into() });
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    assert!(matches!(
        p.net.command(Command::Retrieve {
            slot: "706".into(),
            user: "103".into()
        }),
        Err(CommandError::NoSuchSlot(_))
    ));
    assert!(matches!(
        p.net.command(Command::Retrieve {
            slot: "705".into(),
            user: "nobody".into()
        }),
        Err(CommandError::NoSuchUser(_))
    ));
    p.net
        .command(Command::Retrieve {
            slot: "705".into(),
            user: "103".into(),
        })
        .unwrap();
    let (id, inv) = p.net.phone(p103).last_request(Method::Invite);
    assert!(inv
        .headers
        .get(&HeaderName::Other("Call-Info".into()))
        .is_some());
    p.net.respond(p103, id.unwrap(), 200, Some(SDP_ANSWER));
    assert!(history(&p).contains(&CallHistory::Retrieved {
        slot: "705".into(),
        by: "103".into()
    }));
    let b3 = inv.call_id().unwrap().to_string();
    let bye = p.net.phone(p103).in_dialog(&b3, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
    assert!(matches!(
        p.net.command(Command::Originate {
            user: "nobody".into(),
            target: "103".into(),
            auto_answer: true
        }),
        Err(CommandError::NoSuchUser(_))
    ));
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn our_reinvite_meeting_glare_is_sent_again() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a1, b1) = call(&mut p, p101, "102", p102);
    let (a2, _b2) = call(&mut p, p102, "103", p103);
    let leg = p.net.phone(p102).legs[&a2].clone();
    let refer_to = format!(
        "<sip:103@example.test?Replaces={}%3Bto-tag%3D{}%3Bfrom-tag%3D{}>",
        a2.replace('@', "%40"),
        leg.remote_tag.clone().unwrap(),
        leg.local_tag
    );
    assert_eq!(refer(&mut p, p102, &b1, &refer_to), vec![202]);
    // The transferee's phone is re-INVITing at the same moment: 491 (RFC 3261 §14.1).
    let (id, _) = p.net.phone(p101).last_request(Method::Invite);
    p.net.respond(p101, id.unwrap(), 491, None);
    assert_eq!(got(&mut p, p101, Method::Invite, &a1).len(), 1);
    // We did not choose the caller's Call-ID: the retry comes within 0-2 s.
    p.net.advance(secs(3));
    let reinvites = got(&mut p, p101, Method::Invite, &a1);
    assert_eq!(reinvites.len(), 2, "{}", p.net.wire_log());
    assert!(
        reinvites[1].cseq().unwrap().seq > reinvites[0].cseq().unwrap().seq,
        "a new transaction"
    );
    let (id, _) = p.net.phone(p101).last_request(Method::Invite);
    p.net.respond(p101, id.unwrap(), 200, Some(SDP_ANSWER));
    assert_eq!(
        got(&mut p, p102, Method::Bye, &b1).len(),
        1,
        "{}",
        p.net.wire_log()
    );
    assert_eq!(p.net.engine.stats().active_calls, 1);
}

#[test]
fn a_transfer_completing_before_the_callers_ack_keeps_the_new_party() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    // The caller's first ACK is lost: our 200 is retransmitted and ACKed later.
    let mut dropped = false;
    p.net.drop_when(move |d| {
        let first = !dropped && d.data.starts_with(b"ACK ") && d.from.addr.port() == 5061;
        dropped |= first;
        first
    });
    let (_a_id, b_id) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b_id, "<sip:103@example.test>"),
        vec![202]
    );
    let (id, inv) = p.net.phone(p103).last_request(Method::Invite);
    p.net.respond(p103, id.unwrap(), 200, Some(SDP_ANSWER));
    let before = media_commands(&p).len();
    p.net.advance(secs(2));
    let after: Vec<MediaCommand> = media_commands(&p)[before..].to_vec();
    assert!(
        !after.iter().any(|m| matches!(
            m,
            MediaCommand::Configure { .. } | MediaCommand::Close { .. }
        )),
        "the late ACK changed the media: {after:?}\n{}",
        p.net.wire_log()
    );
    // The new party's dialog is untouched: no BYE to 103, and the call lives.
    let c_id = inv.call_id().unwrap().to_string();
    assert!(
        got(&mut p, p103, Method::Bye, &c_id).is_empty(),
        "{}",
        p.net.wire_log()
    );
    assert_eq!(p.net.engine.stats().active_calls, 1);
}

// ----- park by in-call feature code (#72) ------------------------------------------------

/// The call's key (the engine's id) of the last call started.
fn last_call(p: &Pbx) -> u64 {
    p.net
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            EngineEvent::CallStarted { call, .. } => Some(*call),
            _ => None,
        })
        .expect("a call started")
}

/// A key pressed by the party on `leg`, reported by the media as the runtime does.
fn press(p: &mut Pbx, key: u64, leg: Leg, digit: char) {
    let now = p.net.now;
    p.net.engine.handle_media_notice(
        key,
        MediaNotice::Session(MediaEvent::Dtmf {
            leg,
            digit: DtmfDigit {
                digit,
                duration_ms: 100,
                source: DtmfSource::Rfc4733,
            },
        }),
        now,
    );
    p.net.settle();
}

/// Keys pressed `gap_ms` apart (simulated time).
fn type_keys(p: &mut Pbx, key: u64, leg: Leg, keys: &str, gap_ms: u64) {
    for k in keys.chars() {
        press(p, key, leg, k);
        p.net.advance(std::time::Duration::from_millis(gap_ms));
    }
}

/// What the runtime reports when what played toward `leg` ended.
fn finished(p: &mut Pbx, key: u64, leg: Leg) {
    let now = p.net.now;
    p.net.engine.handle_media_notice(
        key,
        MediaNotice::Session(MediaEvent::PlaybackFinished { leg }),
        now,
    );
    p.net.settle();
}

fn parked(p: &mut Pbx) -> Vec<switchboard_core::command::ParkedInfo> {
    match p.net.command(Command::ListParked).unwrap() {
        CommandReply::Parked(v) => v,
        other => panic!("{other:?}"),
    }
}

fn announcement(slot: &[&str]) -> Playback {
    let mut names = vec!["call-parked-at".to_string(), "slot".to_string()];
    names.extend(slot.iter().map(|d| format!("digits/{d}")));
    Playback::Prompts { names }
}

/// 103 dials `slot`; returns its Call-ID after the 200.
fn retrieve(p: &mut Pbx, slot: &str) -> String {
    let p103 = p.p103;
    let invite = p.net.phone(p103).invite(slot);
    let id = invite.call_id().unwrap().to_string();
    let tx = p.net.send_authenticated(p103, invite);
    let ok = p.net.phone(p103).final_response(tx).unwrap();
    assert_eq!(ok.status, 200, "{}", p.net.wire_log());
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio"));
    id
}

#[test]
fn the_park_code_parks_the_other_party_tells_the_slot_then_releases_the_parker() {
    let mut p = pbx();
    let (p101, p102) = (p.p101, p.p102);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let key = last_call(&p);
    // 102 (the agent) presses #72 during the call.
    type_keys(&mut p, key, Leg::B, "#7", 300);
    assert!(history(&p).is_empty(), "nothing before the last key");
    press(&mut p, key, Leg::B, '2');
    assert_eq!(
        history(&p),
        vec![CallHistory::Parked {
            party: Party::Caller,
            slot: "701".into(),
            by: Some("102".into()),
        }]
    );
    let media = media_commands(&p);
    // The parked caller hears music; the parker hears its slot read out.
    assert!(media.contains(&MediaCommand::Play {
        call: key,
        leg: Leg::A,
        what: Playback::MusicOnHold {
            class: "default".into()
        },
    }));
    assert_eq!(
        media.last(),
        Some(&MediaCommand::Play {
            call: key,
            leg: Leg::B,
            what: announcement(&["7", "0", "1"]),
        })
    );
    let list = parked(&mut p);
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].slot.as_str(), list[0].parked.as_str()),
        ("701", "101")
    );
    assert_eq!(list[0].parker.as_deref(), Some("102"));
    // Nobody is hung up while the announcement plays, however long it is.
    p.net.advance(secs(10));
    assert!(got(&mut p, p102, Method::Bye, &b_id).is_empty());
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    // The caller's leg ending its music changes nothing; the parker's announcement
    // ending releases the parker.
    finished(&mut p, key, Leg::A);
    assert!(got(&mut p, p102, Method::Bye, &b_id).is_empty());
    finished(&mut p, key, Leg::B);
    assert_eq!(
        got(&mut p, p102, Method::Bye, &b_id).len(),
        1,
        "{}",
        p.net.wire_log()
    );
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    assert_eq!(p.net.engine.stats().active_calls, 1);
    // A late finish, or more keys from the caller, do nothing more.
    finished(&mut p, key, Leg::B);
    type_keys(&mut p, key, Leg::A, "#72", 100);
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    assert_eq!(parked(&mut p).len(), 1);

    // 103 dials the slot and takes the parked caller.
    let r_id = retrieve(&mut p, "701");
    assert!(media_commands(&p).contains(&MediaCommand::StopPlayback {
        call: key,
        leg: Leg::A
    }));
    assert!(history(&p).contains(&CallHistory::Retrieved {
        slot: "701".into(),
        by: "103".into()
    }));
    assert!(parked(&mut p).is_empty());
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    // 103 hangs up: the caller gets BYE, the call is over.
    let p103 = p.p103;
    let bye = p.net.phone(p103).in_dialog(&r_id, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn the_park_code_needs_its_keys_in_time_and_works_from_either_side() {
    let mut p = pbx();
    let (p101, p102) = (p.p101, p.p102);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let key = last_call(&p);
    // Too slow (1.5 s between keys), or another code: the call goes on untouched.
    type_keys(&mut p, key, Leg::B, "#72", 1500);
    type_keys(&mut p, key, Leg::B, "#73", 200);
    // Half the code from each party is no code.
    type_keys(&mut p, key, Leg::B, "#7", 200);
    type_keys(&mut p, key, Leg::A, "2", 200);
    assert!(history(&p).is_empty());
    assert!(parked(&mut p).is_empty());
    // The caller presses it (after other keys): the callee is parked.
    type_keys(&mut p, key, Leg::A, "55#72", 200);
    assert_eq!(
        history(&p),
        vec![CallHistory::Parked {
            party: Party::Callee,
            slot: "701".into(),
            by: Some("101".into()),
        }]
    );
    assert!(media_commands(&p).contains(&MediaCommand::Play {
        call: key,
        leg: Leg::A,
        what: announcement(&["7", "0", "1"]),
    }));
    finished(&mut p, key, Leg::A);
    assert_eq!(got(&mut p, p101, Method::Bye, &a_id).len(), 1);
    assert!(got(&mut p, p102, Method::Bye, &b_id).is_empty());
    assert_eq!(parked(&mut p)[0].parked, "102");
}

#[test]
fn the_park_code_by_sip_info_and_the_next_free_slot() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    // A first call is parked in 701 by transfer; the code then uses 702.
    let (_, b1) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b1, "<sip:700@example.test>"),
        vec![202]
    );
    let (a2, b2) = call(&mut p, p102, "103", p103);
    let mut statuses = Vec::new();
    for k in ["#", "7", "2"] {
        let mut info = p.net.phone(p103).in_dialog(&b2, Method::Info);
        info.set_body(
            format!("Signal={k}\r\nDuration=160\r\n").into_bytes(),
            Some("application/dtmf-relay"),
        );
        let relayed = got(&mut p, p102, Method::Info, &a2).len();
        let tx = p.net.send(p103, info);
        // 102's phone answers what was relayed to it; that answer goes back to 103.
        if got(&mut p, p102, Method::Info, &a2).len() > relayed {
            let (id, _) = p.net.phone(p102).last_request(Method::Info);
            p.net.respond(p102, id.unwrap(), 200, None);
        }
        statuses.extend(p.net.phone(p103).statuses(tx));
        p.net.advance(std::time::Duration::from_millis(200));
    }
    assert_eq!(statuses, vec![200, 200, 200]);
    // The first two keys were relayed to 102; the one completing the code was not.
    assert_eq!(got(&mut p, p102, Method::Info, &a2).len(), 2);
    assert!(history(&p).contains(&CallHistory::Parked {
        party: Party::Caller,
        slot: "702".into(),
        by: Some("103".into()),
    }));
    let key = last_call(&p);
    assert!(media_commands(&p).contains(&MediaCommand::Play {
        call: key,
        leg: Leg::B,
        what: announcement(&["7", "0", "2"]),
    }));
    finished(&mut p, key, Leg::B);
    assert_eq!(got(&mut p, p103, Method::Bye, &b2).len(), 1);
    assert!(got(&mut p, p102, Method::Bye, &a2).is_empty());
    let slots: Vec<String> = parked(&mut p).into_iter().map(|i| i.slot).collect();
    assert_eq!(slots, ["701", "702"]);
}

#[test]
fn a_parker_may_hang_up_during_the_announcement_or_be_cut_short_by_a_retrieve() {
    let mut p = pbx();
    let (p101, p102) = (p.p101, p.p102);
    // The parker hangs up while its slot is read out: the caller stays parked.
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let key = last_call(&p);
    type_keys(&mut p, key, Leg::B, "#72", 100);
    let bye = p.net.phone(p102).in_dialog(&b_id, Method::Bye);
    let tx = p.net.send(p102, bye);
    assert_eq!(p.net.phone(p102).statuses(tx), vec![200]);
    assert!(media_commands(&p).contains(&MediaCommand::StopPlayback {
        call: key,
        leg: Leg::B
    }));
    finished(&mut p, key, Leg::B);
    assert!(
        got(&mut p, p102, Method::Bye, &b_id).is_empty(),
        "no BYE of ours"
    );
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    assert_eq!(parked(&mut p).len(), 1);
    // 103 retrieves it.
    let r1 = retrieve(&mut p, "701");

    // Retrieved before the announcement ends: the parker is released at once.
    let (a2, b2) = call(&mut p, p101, "102", p102);
    let key2 = last_call(&p);
    type_keys(&mut p, key2, Leg::B, "#72", 100);
    assert!(got(&mut p, p102, Method::Bye, &b2).is_empty());
    let p103 = p.p103;
    // 701 is free again: the second call was parked there.
    let r2 = retrieve(&mut p, "701");
    assert_eq!(got(&mut p, p102, Method::Bye, &b2).len(), 1);
    assert!(media_commands(&p).contains(&MediaCommand::StopPlayback {
        call: key2,
        leg: Leg::B
    }));
    // A finish reported after that is stale: nothing more happens.
    finished(&mut p, key2, Leg::B);
    assert_eq!(got(&mut p, p102, Method::Bye, &b2).len(), 1);
    assert!(got(&mut p, p101, Method::Bye, &a2).is_empty());
    for r in [r1, r2] {
        let bye = p.net.phone(p103).in_dialog(&r, Method::Bye);
        p.net.send(p103, bye);
    }
    assert_eq!(p.net.engine.stats().active_calls, 0);

    // The parked party hangs up during the announcement: the parker gets BYE too.
    let (a3, b3) = call(&mut p, p101, "102", p102);
    let key3 = last_call(&p);
    type_keys(&mut p, key3, Leg::B, "#72", 100);
    let bye = p.net.phone(p101).in_dialog(&a3, Method::Bye);
    p.net.send(p101, bye);
    assert_eq!(got(&mut p, p102, Method::Bye, &b3).len(), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn a_call_parked_by_code_rings_the_parker_back_at_the_timeout() {
    let mut p = pbx();
    let (p101, p102) = (p.p101, p.p102);
    let (a_id, b_id) = call(&mut p, p101, "102", p102);
    let key = last_call(&p);
    type_keys(&mut p, key, Leg::B, "#72", 100);
    finished(&mut p, key, Leg::B);
    assert_eq!(got(&mut p, p102, Method::Bye, &b_id).len(), 1);
    let invites = p.net.phone(p102).count(Method::Invite);
    p.net.advance(secs(46));
    assert_eq!(p.net.phone(p102).count(Method::Invite), invites + 1);
    let (id, inv) = p.net.phone(p102).last_request(Method::Invite);
    assert!(inv.from().unwrap().uri.to_string().contains("101@"));
    p.net.respond(p102, id.unwrap(), 200, Some(SDP_ANSWER));
    assert!(history(&p).contains(&CallHistory::Retrieved {
        slot: "701".into(),
        by: "102".into()
    }));
    assert!(got(&mut p, p101, Method::Bye, &a_id).is_empty());
    assert!(parked(&mut p).is_empty());
}

#[test]
fn no_park_code_when_disabled_or_without_a_free_slot() {
    // Disabled: the keys are only relayed.
    let mut cfg = support::config(vec![switchboard_sip::digest::Algorithm::Md5]);
    cfg.media = Some(
        switchboard_core::media::MediaConfig::new("127.0.0.1".into(), 30_000, 30_999, secs(60))
            .unwrap(),
    );
    cfg.features.park_code = String::new();
    cfg.features.park_slots = (701, 701);
    let mut net = support::Net::new(
        cfg.clone(),
        vec![
            support::user("101", None, "secret-101"),
            support::user("102", None, "secret-102"),
            support::user("103", None, "secret-103"),
        ],
    );
    let p101 = net.add_phone("101", "secret-101", 5061);
    let p102 = net.add_phone("102", "secret-102", 5071);
    let p103 = net.add_phone("103", "secret-103", 5081);
    for ph in [p101, p102, p103] {
        assert_eq!(net.register(ph, 3600).status, 200);
    }
    let mut p = Pbx {
        net,
        p101,
        p102,
        p103,
    };
    call(&mut p, p101, "102", p102);
    let key = last_call(&p);
    type_keys(&mut p, key, Leg::B, "#72", 100);
    assert!(history(&p).is_empty());

    // Enabled, one slot, taken: the call goes on as it was.
    p.net.engine = switchboard_core::Engine::new(
        {
            let mut c = cfg;
            c.features.park_code = "#72".into();
            c
        },
        switchboard_core::Directory::new(vec![
            support::user("101", None, "secret-101"),
            support::user("102", None, "secret-102"),
            support::user("103", None, "secret-103"),
        ]),
        p.net.now,
        support::START_UNIX,
    );
    p.net.events.clear();
    for ph in [p101, p102, p103] {
        assert_eq!(p.net.register(ph, 3600).status, 200);
    }
    let (_, b1) = call(&mut p, p101, "102", p102);
    assert_eq!(
        refer(&mut p, p102, &b1, "<sip:700@example.test>"),
        vec![202]
    );
    let (a2, b2) = call(&mut p, p101, "103", p103);
    let key = last_call(&p);
    type_keys(&mut p, key, Leg::B, "#72", 100);
    assert_eq!(parked(&mut p).len(), 1);
    assert!(!media_commands(&p)
        .iter()
        .any(|m| matches!(m, MediaCommand::Play { call, .. } if *call == key)));
    assert!(got(&mut p, p103, Method::Bye, &b2).is_empty());
    assert!(got(&mut p, p101, Method::Bye, &a2).is_empty());
}

/// The park extension routed the way the shipped dialplan does (`700` parks the caller);
/// everyone else by name.
#[derive(Debug)]
struct ParkPlan;

impl switchboard_core::Router for ParkPlan {
    fn route(&self, q: &switchboard_core::RouteQuery<'_>) -> switchboard_core::RouteDecision {
        match q.dialled {
            "700" => {
                switchboard_core::RouteDecision::Actions(vec![switchboard_core::CallAction::Park {
                    slot: None,
                }])
            }
            user => switchboard_core::RouteDecision::User(user.to_string()),
        }
    }
}

#[test]
fn attended_transfer_to_the_park_extension_tells_the_slot_first() {
    let mut p = pbx();
    p.net.engine.set_router(Box::new(ParkPlan));
    let (p101, p102) = (p.p101, p.p102);
    // 101 (a customer) called 102 (the agent); the agent calls 700 to learn a slot.
    let (a1, b1) = call(&mut p, p101, "102", p102);
    let invite = p.net.phone(p102).invite("700");
    let a2 = invite.call_id().unwrap().to_string();
    let tx = p.net.send_authenticated(p102, invite);
    assert_eq!(
        p.net.phone(p102).final_response(tx).unwrap().status,
        200,
        "{}",
        p.net.wire_log()
    );
    let park_call = last_call(&p);
    assert!(history(&p).contains(&CallHistory::Parked {
        party: Party::Caller,
        slot: "701".into(),
        by: Some("102".into()),
    }));
    // It hears the slot (music follows when the announcement ends).
    assert_eq!(
        media_commands(&p).last(),
        Some(&MediaCommand::Play {
            call: park_call,
            leg: Leg::A,
            what: announcement(&["7", "0", "1"]),
        })
    );
    // Then it completes the transfer: REFER in the customer's call, Replaces naming
    // its own dialog with the park extension.
    let leg = p.net.phone(p102).legs[&a2].clone();
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        a2.replace('@', "%40"),
        leg.remote_tag.clone().unwrap(),
        leg.local_tag
    );
    let statuses = refer(
        &mut p,
        p102,
        &b1,
        &format!("<sip:700@example.test?Replaces={replaces}>"),
    );
    assert_eq!(statuses, vec![202], "{}", p.net.wire_log());
    // The customer is re-INVITEd toward the parked call's ports and accepts.
    let (id, _) = p.net.phone(p101).last_request(Method::Invite);
    p.net.respond(p101, id.unwrap(), 200, Some(SDP_ANSWER));
    // The agent's two legs are released; the customer waits in 701, hearing music at
    // once (the rest of the announcement was the agent's).
    assert_eq!(got(&mut p, p102, Method::Bye, &b1).len(), 1);
    assert_eq!(got(&mut p, p102, Method::Bye, &a2).len(), 1);
    assert!(got(&mut p, p101, Method::Bye, &a1).is_empty());
    assert_eq!(
        media_commands(&p)
            .into_iter()
            .rev()
            .find(|m| m.call() == park_call),
        Some(MediaCommand::Play {
            call: park_call,
            leg: Leg::A,
            what: Playback::MusicOnHold {
                class: "default".into()
            },
        })
    );
    let list = parked(&mut p);
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].slot.as_str(), list[0].parked.as_str()),
        ("701", "101")
    );
    // A stale finish of the cut announcement changes nothing; 103 retrieves the customer.
    finished(&mut p, park_call, Leg::A);
    let r = retrieve(&mut p, "701");
    assert!(history(&p).contains(&CallHistory::Retrieved {
        slot: "701".into(),
        by: "103".into()
    }));
    let p103 = p.p103;
    let bye = p.net.phone(p103).in_dialog(&r, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(got(&mut p, p101, Method::Bye, &a1).len(), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)));
}

#[test]
fn dialling_the_park_extension_tells_the_slot_then_plays_music() {
    let mut p = pbx();
    p.net.engine.set_router(Box::new(ParkPlan));
    let p103 = p.p103;
    let invite = p.net.phone(p103).invite("700");
    let tx = p.net.send_authenticated(p103, invite);
    assert_eq!(p.net.phone(p103).final_response(tx).unwrap().status, 200);
    let key = last_call(&p);
    assert_eq!(
        media_commands(&p).last(),
        Some(&MediaCommand::Play {
            call: key,
            leg: Leg::A,
            what: announcement(&["7", "0", "1"]),
        })
    );
    finished(&mut p, key, Leg::A);
    assert_eq!(
        media_commands(&p).last(),
        Some(&MediaCommand::Play {
            call: key,
            leg: Leg::A,
            what: Playback::MusicOnHold {
                class: "default".into()
            },
        })
    );
    // The music loops: a finish now is not the announcement's, nothing changes.
    let before = media_commands(&p).len();
    finished(&mut p, key, Leg::A);
    assert_eq!(media_commands(&p).len(), before);
    assert_eq!(parked(&mut p).len(), 1);
}

/// The transferor of an attended transfer hangs up right after the 202, before the
/// transferee accepted its re-INVITE (RFC 5589 §6 lets it): the transfer goes on, the
/// transferee ends up with the consulted party and is not hung up.
#[test]
fn the_transferor_may_hang_up_before_an_attended_transfer_is_done() {
    let mut p = pbx();
    let (p101, p102, p103) = (p.p101, p.p102, p.p103);
    let (a1, b1) = call(&mut p, p101, "102", p102);
    let (a2, b2) = call(&mut p, p102, "103", p103);
    let leg = p.net.phone(p102).legs[&a2].clone();
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        a2.replace('@', "%40"),
        leg.remote_tag.clone().unwrap(),
        leg.local_tag
    );
    let statuses = refer(
        &mut p,
        p102,
        &b1,
        &format!("<sip:103@example.test?Replaces={replaces}>"),
    );
    assert_eq!(statuses, vec![202], "{}", p.net.wire_log());
    // 102 hangs up its original call at once.
    let bye = p.net.phone(p102).in_dialog(&b1, Method::Bye);
    let tx = p.net.send(p102, bye);
    assert_eq!(p.net.phone(p102).statuses(tx), vec![200]);
    assert!(
        got(&mut p, p101, Method::Bye, &a1).is_empty(),
        "the transferee must not be hung up\n{}",
        p.net.wire_log()
    );
    let (id, _) = p.net.phone(p101).last_request(Method::Invite);
    p.net.respond(p101, id.unwrap(), 200, Some(SDP_ANSWER));
    // 101 now talks to 103; 102's consultation leg is released.
    assert_eq!(
        got(&mut p, p102, Method::Bye, &a2).len(),
        1,
        "{}",
        p.net.wire_log()
    );
    assert!(got(&mut p, p101, Method::Bye, &a1).is_empty());
    assert!(got(&mut p, p103, Method::Bye, &b2).is_empty());
    assert_eq!(p.net.engine.stats().active_calls, 1);
    let bye = p.net.phone(p103).in_dialog(&b2, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(got(&mut p, p101, Method::Bye, &a1).len(), 1);
    assert_eq!(p.net.engine.stats().active_calls, 0);

    // The same, but the transferee refuses: it is alone, so it is hung up.
    let (a1, b1) = call(&mut p, p101, "102", p102);
    let (a2, b2) = call(&mut p, p102, "103", p103);
    let leg = p.net.phone(p102).legs[&a2].clone();
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3D{}",
        a2.replace('@', "%40"),
        leg.remote_tag.clone().unwrap(),
        leg.local_tag
    );
    let statuses = refer(
        &mut p,
        p102,
        &b1,
        &format!("<sip:103@example.test?Replaces={replaces}>"),
    );
    assert_eq!(statuses, vec![202]);
    let bye = p.net.phone(p102).in_dialog(&b1, Method::Bye);
    p.net.send(p102, bye);
    let (id, _) = p.net.phone(p101).last_request(Method::Invite);
    p.net.respond(p101, id.unwrap(), 488, None);
    assert_eq!(
        got(&mut p, p101, Method::Bye, &a1).len(),
        1,
        "{}",
        p.net.wire_log()
    );
    assert_eq!(
        p.net.engine.stats().active_calls,
        1,
        "the consultation call is left"
    );
    let bye = p.net.phone(p103).in_dialog(&b2, Method::Bye);
    p.net.send(p103, bye);
    assert_eq!(p.net.engine.stats().active_calls, 0);
    assert!(p.net.run_to_quiet(secs(120)), "{}", p.net.wire_log());
}
